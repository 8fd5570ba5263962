//! [`MemoryStore`]: the durable store kept in memory.
//!
//! Submissions are applied and acknowledged at once, in submission order.
//! Clones share the data: a simulation keeps one clone per node across the
//! node's crashes, so a restarted node finds what it wrote (its "disk").

use std::collections::{BTreeMap, VecDeque};
use std::sync::{Arc, Mutex};

use super::{
    Completion, Counters, DurableError, DurableStore, Recovered, StoreStats, SyncReport, Write,
};
use crate::sansio::check_writes;

/// In-memory durable store (see the module docs). Cheap to clone.
#[derive(Clone, Default)]
pub struct MemoryStore {
    inner: Arc<Inner>,
}

#[derive(Default)]
struct Inner {
    spaces: Mutex<BTreeMap<String, Space>>,
    counters: Counters,
}

/// One namespace: its keys, and its logs. A log's records are always
/// contiguous (an append follows the last record, truncations cut the
/// head or the tail), so each is a deque from its first index: appending
/// and truncating cost no search.
#[derive(Default)]
struct Space {
    kv: BTreeMap<String, Vec<u8>>,
    logs: BTreeMap<String, Log>,
}

#[derive(Default)]
struct Log {
    /// Index of `records[0]` (meaningless while empty).
    first: u64,
    records: VecDeque<Vec<u8>>,
}

impl Log {
    fn bounds(&self) -> Option<(u64, u64)> {
        (!self.records.is_empty()).then(|| (self.first, self.first + self.records.len() as u64 - 1))
    }
}

impl Space {
    fn bounds(&self, log: &str) -> Option<(u64, u64)> {
        self.logs.get(log).and_then(Log::bounds)
    }

    /// Apply writes already checked ([`check_writes`]).
    fn apply(&mut self, w: Write) {
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
                if l.records.is_empty() {
                    l.first = first;
                }
                l.records.extend(records);
            }
            Write::TruncateFrom { log, index } => {
                if let Some(l) = self.logs.get_mut(&log) {
                    let keep = index.saturating_sub(l.first);
                    l.records.truncate(keep.try_into().unwrap_or(usize::MAX));
                }
            }
            Write::TruncateBefore { log, index } => {
                if let Some(l) = self.logs.get_mut(&log) {
                    let drop = index.saturating_sub(l.first).min(l.records.len() as u64);
                    l.records.drain(..drop as usize);
                    l.first = l.first.max(index);
                }
            }
        }
    }

    fn recovered(&self) -> Recovered {
        let logs = self
            .logs
            .iter()
            .filter(|(_, l)| !l.records.is_empty())
            .map(|(name, l)| {
                let records = (l.first..).zip(l.records.iter().cloned()).collect();
                (name.clone(), records)
            })
            .collect();
        Recovered::from_parts(self.kv.clone(), logs)
    }
}

impl std::fmt::Debug for MemoryStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("MemoryStore")
            .field("stats", &self.inner.counters.snapshot())
            .finish()
    }
}

impl MemoryStore {
    /// An empty store.
    pub fn new() -> Self {
        Self::default()
    }
    fn spaces(&self) -> std::sync::MutexGuard<'_, BTreeMap<String, Space>> {
        // Applying is all-or-nothing before anything is mutated, so a
        // poisoned lock still guards a consistent map.
        self.inner.spaces.lock().unwrap_or_else(|p| p.into_inner())
    }
}

impl DurableStore for MemoryStore {
    fn load(&self, ns: &str) -> Result<Recovered, DurableError> {
        Ok(self
            .spaces()
            .get(ns)
            .map(Space::recovered)
            .unwrap_or_default())
    }
    fn load_log(
        &self,
        ns: &str,
        log: &str,
        after: u64,
        max: usize,
    ) -> Result<Vec<(u64, Vec<u8>)>, DurableError> {
        let spaces = self.spaces();
        let Some(l) = spaces.get(ns).and_then(|s| s.logs.get(log)) else {
            return Ok(Vec::new());
        };
        let skip = (after + 1).saturating_sub(l.first);
        let skip = usize::try_from(skip).unwrap_or(usize::MAX);
        Ok(l.records
            .iter()
            .enumerate()
            .skip(skip)
            .take(max)
            .map(|(k, r)| (l.first + k as u64, r.clone()))
            .collect())
    }
    fn submit(&self, ns: &str, writes: Vec<Write>) -> Completion {
        let mut spaces = self.spaces();
        let space = match spaces.get_mut(ns) {
            Some(s) => s,
            None => spaces.entry(ns.to_string()).or_default(),
        };
        if let Err(e) = check_writes(&writes, |log| Ok(space.bounds(log))) {
            self.inner.counters.failed(1);
            return Completion::Done(Err(e));
        }
        // Counted before the records move into the store.
        let (n, records, bytes) = Counters::measure(writes.iter());
        for w in writes {
            space.apply(w);
        }
        let sync = self.inner.counters.synced_measured(1, n, records, bytes);
        Completion::Done(Ok(SyncReport {
            sync,
            group: 1,
            writes: n as usize,
        }))
    }
    fn stats(&self) -> StoreStats {
        self.inner.counters.snapshot()
    }
    fn location(&self) -> String {
        "memory".into()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn memory_store_keeps_the_contract_and_clones_share() {
        let s = MemoryStore::new();
        futures::executor::block_on(super::super::contract::exercise(&s));
        futures::executor::block_on(super::super::contract::exercise_log_pages(&s));
        let t = s.clone();
        let _ = s.submit("x", vec![super::super::contract::put("k", b"v")]);
        assert_eq!(t.load("x").unwrap().get("k"), Some(&b"v"[..]));
    }

    /// The store's contiguous logs load as `Recovered` applying the same
    /// writes gives, through appends, both truncations and emptied logs.
    #[test]
    fn contiguous_logs_load_as_recovered_applies_them() {
        use super::super::contract::append;
        let trunc_from = |index| Write::TruncateFrom {
            log: "l".into(),
            index,
        };
        let trunc_before = |index| Write::TruncateBefore {
            log: "l".into(),
            index,
        };
        let steps: Vec<Vec<Write>> = vec![
            vec![append("l", 1, 10)],
            vec![trunc_from(6), append("l", 6, 2)],
            vec![trunc_before(4)],
            vec![trunc_before(2)],
            vec![trunc_from(50)],
            vec![trunc_before(100), append("l", 100, 1)],
            vec![trunc_from(100), append("l", 3, 2)],
            vec![trunc_from(4), trunc_before(3), append("l", 4, 3)],
        ];
        let s = MemoryStore::new();
        let mut model = Recovered::empty();
        for writes in steps {
            model.apply(&writes).unwrap();
            let Completion::Done(r) = s.submit("ns", writes) else {
                panic!("the memory store answers at once");
            };
            r.unwrap();
            assert_eq!(s.load("ns").unwrap(), model);
        }
        assert_eq!(model.log_bounds("l"), Some((3, 6)));
        // A gap is refused, and nothing of its submission applied.
        let Completion::Done(r) = s.submit("ns", vec![trunc_before(5), append("l", 9, 1)]) else {
            panic!("the memory store answers at once");
        };
        assert!(matches!(r, Err(DurableError::NotContiguous { .. })));
        assert_eq!(s.load("ns").unwrap(), model);
    }
}
