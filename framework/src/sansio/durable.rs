//! Durable state as outputs: what a core writes, and what it is rebuilt from.
//!
//! A core never touches a disk. It emits [`Write`]s with its other outputs —
//! put or delete a key, append records to a named log, truncate a log's tail
//! (a conflicting suffix) or head (compaction) — and its driver makes them
//! durable. The contract every driver keeps (the actor driver with the
//! node's store, the simulators with a simulated disk):
//!
//! 1. writes are applied in the order they were emitted, each input's writes
//!    atomically (all or none survive a crash);
//! 2. no message and no event of an input leaves before that input's writes,
//!    and every earlier input's writes, are durable;
//! 3. a failed write (a full disk, a value that does not encode, an append
//!    that does not follow its log) stops the protocol: nothing of that
//!    input, or of any later one, is sent;
//! 4. after a crash, the core is rebuilt from [`Recovered`], which holds
//!    exactly the writes that were made durable — a prefix of the emitted
//!    ones (writes that were emitted but not yet synced may be lost).
//!
//! [`Snapshot`] is the convenience for cores whose durable state is one small
//! value (a term, a vote, a fencing token): it emits a `Put` only when the
//! value changed.

use std::collections::BTreeMap;
use std::fmt::Debug;

use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};

use super::Outputs;

/// One durable write emitted by a core. Keys and log names are the core's
/// own: the driver keeps each protocol instance in its own namespace.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum Write {
    /// Store `value` under `key` (replacing what was there).
    Put {
        /// The key.
        key: String,
        /// The value's bytes.
        value: Vec<u8>,
    },
    /// Remove `key`.
    Delete {
        /// The key.
        key: String,
    },
    /// Append `records` to `log`, the first at index `first`. `first` must
    /// be the log's last index + 1, or anything when the log is empty.
    Append {
        /// The log's name.
        log: String,
        /// Index of the first record.
        first: u64,
        /// The records' bytes.
        records: Vec<Vec<u8>>,
    },
    /// Remove the records of `log` at `index` and after.
    TruncateFrom {
        /// The log's name.
        log: String,
        /// First index removed.
        index: u64,
    },
    /// Remove the records of `log` before `index`.
    TruncateBefore {
        /// The log's name.
        log: String,
        /// First index kept.
        index: u64,
    },
}

impl Write {
    /// Records (or values) this write carries: 1 for a put or delete, the
    /// record count for an append, 0 for a truncation.
    pub fn records(&self) -> usize {
        match self {
            Write::Put { .. } | Write::Delete { .. } => 1,
            Write::Append { records, .. } => records.len(),
            Write::TruncateFrom { .. } | Write::TruncateBefore { .. } => 0,
        }
    }
    /// Bytes of payload this write carries.
    pub fn bytes(&self) -> usize {
        match self {
            Write::Put { value, .. } => value.len(),
            Write::Append { records, .. } => records.iter().map(Vec::len).sum(),
            _ => 0,
        }
    }
}

/// Why a durable write or a recovery failed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum DurableError {
    /// A value the core asked to store does not encode.
    #[error("durable value {key:?} does not encode: {message}")]
    Encode {
        /// The key (or `log[index]`).
        key: String,
        /// The encoder's message.
        message: String,
    },
    /// A stored value does not decode as the type asked for.
    #[error("stored value {key:?} does not decode: {message}")]
    Decode {
        /// The key (or `log[index]`).
        key: String,
        /// The decoder's message.
        message: String,
    },
    /// An append does not follow the log's last record.
    #[error("append to log {log:?} at index {first} does not follow its last index {last}")]
    NotContiguous {
        /// The log.
        log: String,
        /// Index the append started at.
        first: u64,
        /// The log's last index.
        last: u64,
    },
    /// The store could not make the writes durable (I/O error, full disk...).
    #[error("the durable store failed: {0}")]
    Store(String),
}

/// Everything a protocol instance made durable, as it is rebuilt after a
/// restart: its keys and its logs. Also the in-memory model of a store that
/// drivers and simulators apply writes to.
#[derive(Debug, Clone, Default, PartialEq, Eq, Hash)]
pub struct Recovered {
    kv: BTreeMap<String, Vec<u8>>,
    logs: BTreeMap<String, BTreeMap<u64, Vec<u8>>>,
}

impl Recovered {
    /// Nothing durable (a first start).
    pub fn empty() -> Self {
        Self::default()
    }
    /// True when nothing was stored.
    pub fn is_empty(&self) -> bool {
        self.kv.is_empty() && self.logs.values().all(BTreeMap::is_empty)
    }
    /// The bytes stored under `key`.
    pub fn get(&self, key: &str) -> Option<&[u8]> {
        self.kv.get(key).map(Vec::as_slice)
    }
    /// The value stored under `key`, decoded; `Ok(None)` when absent and an
    /// error (never a silent default) when it does not decode.
    pub fn get_as<T: DeserializeOwned>(&self, key: &str) -> Result<Option<T>, DurableError> {
        self.get(key).map(|b| decode(key, b)).transpose()
    }
    /// Every key, in order.
    pub fn keys(&self) -> impl Iterator<Item = &str> {
        self.kv.keys().map(String::as_str)
    }
    /// The records of `log`, in index order.
    pub fn log(&self, log: &str) -> impl Iterator<Item = (u64, &[u8])> {
        self.logs
            .get(log)
            .into_iter()
            .flat_map(|l| l.iter().map(|(i, r)| (*i, r.as_slice())))
    }
    /// The record of `log` at `index`.
    pub fn record(&self, log: &str, index: u64) -> Option<&[u8]> {
        self.logs.get(log)?.get(&index).map(Vec::as_slice)
    }
    /// The records of `log`, decoded.
    pub fn log_as<T: DeserializeOwned>(&self, log: &str) -> Result<Vec<(u64, T)>, DurableError> {
        self.log(log)
            .map(|(i, b)| decode(&format!("{log}[{i}]"), b).map(|v| (i, v)))
            .collect()
    }
    /// The first and last index of `log`, when it has records.
    pub fn log_bounds(&self, log: &str) -> Option<(u64, u64)> {
        let l = self.logs.get(log)?;
        Some((*l.keys().next()?, *l.keys().next_back()?))
    }
    /// Names of the logs that have records.
    pub fn log_names(&self) -> impl Iterator<Item = &str> {
        self.logs
            .iter()
            .filter(|(_, l)| !l.is_empty())
            .map(|(n, _)| n.as_str())
    }

    /// Check that `writes`, applied in order to this state, are all valid
    /// (appends follow their logs), without applying them.
    pub fn check(&self, writes: &[Write]) -> Result<(), DurableError> {
        check_writes(writes, |log| Ok(self.log_bounds(log)))
    }

    /// Apply `writes` in order, all or nothing: on an invalid write nothing
    /// is applied and the error says which.
    pub fn apply(&mut self, writes: &[Write]) -> Result<(), DurableError> {
        self.check(writes)?;
        for w in writes {
            self.apply_one(w.clone());
        }
        Ok(())
    }

    /// [`Recovered::apply`] taking the writes, whose keys and records
    /// move in (not copied).
    pub fn apply_owned(&mut self, writes: Vec<Write>) -> Result<(), DurableError> {
        self.check(&writes)?;
        for w in writes {
            self.apply_one(w);
        }
        Ok(())
    }

    fn apply_one(&mut self, w: Write) {
        match w {
            Write::Put { key, value } => {
                self.kv.insert(key, value);
            }
            Write::Delete { key } => {
                self.kv.remove(&key);
            }
            Write::Append {
                log,
                first,
                records,
            } => {
                let l = match self.logs.get_mut(&log) {
                    Some(l) => l,
                    None => self.logs.entry(log).or_default(),
                };
                for (i, r) in records.into_iter().enumerate() {
                    l.insert(first + i as u64, r);
                }
            }
            Write::TruncateFrom { log, index } => {
                if let Some(l) = self.logs.get_mut(&log) {
                    l.split_off(&index);
                }
            }
            Write::TruncateBefore { log, index } => {
                if let Some(l) = self.logs.get_mut(&log) {
                    *l = l.split_off(&index);
                }
            }
        }
    }

    /// Build from stored keys and log records (what a store loaded).
    pub fn from_parts(
        kv: BTreeMap<String, Vec<u8>>,
        logs: BTreeMap<String, BTreeMap<u64, Vec<u8>>>,
    ) -> Self {
        Self { kv, logs }
    }
}

/// A log's `(first, last)` index, `None` when it has no record.
pub type LogBounds = Option<(u64, u64)>;

/// Check that `writes`, applied in order, are valid: every append follows
/// its log. `bounds_of(log)` gives a log's `(first, last)` index before the
/// writes (`None` when it has no record); it is asked once per log.
pub fn check_writes(
    writes: &[Write],
    bounds_of: impl FnMut(&str) -> Result<Option<(u64, u64)>, DurableError>,
) -> Result<(), DurableError> {
    fold_bounds(writes, bounds_of).map(|_| ())
}

/// [`check_writes`], returning the `(first, last)` index every log the
/// writes touch has once they are applied (`None`: no record left). For a
/// store that keeps the bounds of its logs in memory.
pub fn bounds_after(
    writes: &[Write],
    bounds_of: impl FnMut(&str) -> Result<Option<(u64, u64)>, DurableError>,
) -> Result<BTreeMap<&str, LogBounds>, DurableError> {
    Ok(fold_bounds(writes, bounds_of)?.into_iter().collect())
}

/// The bounds each log `writes` touch has after them, in the order the logs
/// were first touched (a short list: a submission touches one log or two).
fn fold_bounds(
    writes: &[Write],
    mut bounds_of: impl FnMut(&str) -> Result<Option<(u64, u64)>, DurableError>,
) -> Result<Vec<(&str, LogBounds)>, DurableError> {
    // The bounds each touched log would have, write after write.
    let mut bounds: Vec<(&str, LogBounds)> = Vec::new();
    for w in writes {
        let (log, b) = match w {
            Write::Put { .. } | Write::Delete { .. } => continue,
            Write::Append { log, .. }
            | Write::TruncateFrom { log, .. }
            | Write::TruncateBefore { log, .. } => {
                let b = match bounds.iter().find(|(l, _)| *l == log.as_str()) {
                    Some((_, b)) => *b,
                    None => bounds_of(log)?,
                };
                (log.as_str(), b)
            }
        };
        let next = match (w, b) {
            (Write::Append { records, .. }, b) if records.is_empty() => b,
            (Write::Append { first, records, .. }, Some((f, l))) => {
                if *first != l + 1 {
                    return Err(DurableError::NotContiguous {
                        log: log.to_string(),
                        first: *first,
                        last: l,
                    });
                }
                Some((f, l + records.len() as u64))
            }
            (Write::Append { first, records, .. }, None) => {
                Some((*first, first + records.len() as u64 - 1))
            }
            (Write::TruncateFrom { index, .. }, Some((f, l))) => {
                if *index <= f {
                    None
                } else {
                    Some((f, l.min(index - 1)))
                }
            }
            (Write::TruncateBefore { index, .. }, Some((f, l))) => {
                if *index > l {
                    None
                } else {
                    Some((f.max(*index), l))
                }
            }
            (_, b) => b,
        };
        match bounds.iter_mut().find(|(l, _)| *l == log) {
            Some((_, b)) => *b = next,
            None => bounds.push((log, next)),
        }
    }
    Ok(bounds)
}

fn decode<T: DeserializeOwned>(key: &str, bytes: &[u8]) -> Result<T, DurableError> {
    rmp_serde::from_slice(bytes).map_err(|e| DurableError::Decode {
        key: key.to_string(),
        message: e.to_string(),
    })
}

/// The key under which [`SnapshotCore`]s keep their state.
pub const STATE_KEY: &str = "state";

/// A core whose whole durable state is one small value (a term and a vote, a
/// clock and a fencing token), saved under [`STATE_KEY`] by a [`Snapshot`]
/// whenever it changes.
pub trait SnapshotCore: super::Protocol {
    /// The durable state.
    type State: Serialize + DeserializeOwned + Clone + PartialEq + Debug;
    /// The durable state as it is now.
    fn state(&self) -> Self::State;
    /// The state a previous life made durable (`None` on a first start).
    fn recover(recovered: &Recovered) -> Result<Option<Self::State>, DurableError> {
        recovered.get_as(STATE_KEY)
    }
}

/// A core's small durable state, saved whole under one key whenever it
/// changes. Keep one in the core, [`Snapshot::recover`] it at construction,
/// and call [`Snapshot::save`] from [`super::Protocol::persist`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Snapshot<S> {
    key: &'static str,
    last: Option<S>,
}

impl<S: Serialize + DeserializeOwned + Clone + PartialEq> Snapshot<S> {
    /// The state stored under `key` in `recovered` (`None` on a first start)
    /// and the snapshot that will save later changes of it.
    pub fn recover(
        key: &'static str,
        recovered: &Recovered,
    ) -> Result<(Self, Option<S>), DurableError> {
        let last: Option<S> = recovered.get_as(key)?;
        Ok((
            Self {
                key,
                last: last.clone(),
            },
            last,
        ))
    }
    /// A snapshot that has saved nothing yet.
    pub fn new(key: &'static str) -> Self {
        Self { key, last: None }
    }
    /// A snapshot under [`STATE_KEY`] whose last saved value is `last` (what
    /// a restarted core was rebuilt from).
    pub fn resumed(last: Option<S>) -> Self {
        Self {
            key: STATE_KEY,
            last,
        }
    }
    /// Emit a `Put` of `state` if it differs from what was saved last.
    pub fn save<Id, M, T, E>(&mut self, state: S, out: &mut Outputs<Id, M, T, E>) {
        if self.last.as_ref() != Some(&state) {
            out.put(self.key, &state);
            self.last = Some(state);
        }
    }
    /// What was saved last.
    pub fn last(&self) -> Option<&S> {
        self.last.as_ref()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn app(log: &str, first: u64, n: u64) -> Write {
        Write::Append {
            log: log.into(),
            first,
            records: (first..first + n).map(|i| vec![i as u8]).collect(),
        }
    }

    #[test]
    fn appends_must_follow_the_log_and_failures_apply_nothing() {
        let mut r = Recovered::empty();
        r.apply(&[app("l", 5, 3)]).unwrap();
        assert_eq!(r.log_bounds("l"), Some((5, 7)));
        let e = r
            .apply(&[
                Write::Put {
                    key: "k".into(),
                    value: vec![1],
                },
                app("l", 9, 1),
            ])
            .unwrap_err();
        assert_eq!(
            e,
            DurableError::NotContiguous {
                log: "l".into(),
                first: 9,
                last: 7
            }
        );
        assert_eq!(r.get("k"), None, "all or nothing");
        r.apply(&[app("l", 8, 1), app("l", 9, 2)]).unwrap();
        assert_eq!(r.log_bounds("l"), Some((5, 10)));
    }

    #[test]
    fn truncations_cut_the_tail_or_the_head() {
        let mut r = Recovered::empty();
        r.apply(&[app("l", 1, 10)]).unwrap();
        // A conflicting tail replaced in one input.
        r.apply(&[
            Write::TruncateFrom {
                log: "l".into(),
                index: 6,
            },
            app("l", 6, 2),
        ])
        .unwrap();
        assert_eq!(r.log_bounds("l"), Some((1, 7)));
        // Appending after the old last index now fails.
        assert!(r.apply(&[app("l", 11, 1)]).is_err());
        r.apply(&[Write::TruncateBefore {
            log: "l".into(),
            index: 4,
        }])
        .unwrap();
        assert_eq!(r.log_bounds("l"), Some((4, 7)));
        assert_eq!(
            r.log("l").map(|(i, _)| i).collect::<Vec<_>>(),
            vec![4, 5, 6, 7]
        );
        // Compacting past the end empties the log; the next append starts anywhere.
        r.apply(&[
            Write::TruncateBefore {
                log: "l".into(),
                index: 100,
            },
            app("l", 100, 1),
        ])
        .unwrap();
        assert_eq!(r.log_bounds("l"), Some((100, 100)));
        // Truncating everything from the first index empties it too.
        r.apply(&[
            Write::TruncateFrom {
                log: "l".into(),
                index: 100,
            },
            app("l", 3, 1),
        ])
        .unwrap();
        assert_eq!(r.log_bounds("l"), Some((3, 3)));
    }

    #[test]
    fn snapshots_write_only_changes_and_decode_errors_are_errors() {
        type O = Outputs<u8, u8, u8, u8>;
        let (mut s, last) = Snapshot::<u64>::recover("term", &Recovered::empty()).unwrap();
        assert_eq!(last, None);
        let mut out = O::new();
        s.save(3, &mut out);
        s.save(3, &mut out);
        assert_eq!(out.writes.len(), 1);
        let mut r = Recovered::empty();
        r.apply(&out.writes).unwrap();
        let (_, last) = Snapshot::<u64>::recover("term", &r).unwrap();
        assert_eq!(last, Some(3));
        let e = Snapshot::<String>::recover("term", &r).unwrap_err();
        assert!(matches!(e, DurableError::Decode { .. }), "{e}");
    }
}
