//! The node's durable store: where protocol cores' writes become durable.
//!
//! One [`DurableStore`] per node, shared by every protocol on it; each
//! protocol instance writes in its own *namespace* (its actor name), so two
//! protocols never see each other's keys or logs. Protocol cores emit
//! [`Write`]s as outputs (see [`crate::sansio::durable`]); their driver hands
//! each input's writes to [`DurableStore::submit`] and holds that input's
//! messages and events back until the store says they are durable.
//!
//! Two stores:
//! - [`RedbStore`]: two [redb](https://docs.rs/redb) database files under
//!   the node's data directory (`<data_dir>/troupe.redb`, the tables, and
//!   `<data_dir>/troupe.journal.redb`, the journal). A writer thread
//!   journals submissions in order and **group-commits**: every submission
//!   that arrives while a commit (one fsync) is in flight joins the next one,
//!   so many writers share each fsync. A submission is applied atomically
//!   (all of its writes or none survive a crash), and is acknowledged only
//!   after the commit that holds it returned. Another thread folds the
//!   journal into the tables in large batches.
//! - [`MemoryStore`]: in memory, acknowledged at once. For nodes without a
//!   data directory and for simulations, where a clone kept across a node's
//!   crash plays its disk.
//!
//! The earlier one-file-per-key `FileStorage` is gone: its state (a term, a
//! fencing token) now lives in the same store as the logs.
//!
//! Guarantees of every store: submissions are made durable in submission
//! order; an acknowledged submission survives a crash of the process; a
//! failed submission (an append that does not follow its log, an I/O error)
//! is reported to its submitter and nothing of it is applied;
//! [`DurableStore::load`] returns what was acknowledged, after waiting for
//! submissions still in flight.

mod memory;
mod redb_store;

pub use memory::MemoryStore;
pub use redb_store::{RedbStore, StoreOptions};

use std::sync::atomic::{AtomicU64, Ordering};

use serde::Serialize;
use tokio::sync::oneshot;

pub use crate::sansio::{DurableError, Recovered, Write};

/// What a store says about one acknowledged submission.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub struct SyncReport {
    /// Number of the sync (commit) that made the submission durable.
    pub sync: u64,
    /// Submissions made durable by that same sync (the group).
    pub group: usize,
    /// Writes in that sync, from every submission of the group.
    pub writes: usize,
}

/// The answer to a submission: known at once, or later.
pub enum Completion {
    /// Already durable (or already failed).
    Done(Result<SyncReport, DurableError>),
    /// Will be answered when the sync that holds it returns.
    Waiting(oneshot::Receiver<Result<SyncReport, DurableError>>),
}

impl Completion {
    /// Wait for the answer (a store that went away is a store failure).
    pub async fn wait(self) -> Result<SyncReport, DurableError> {
        match self {
            Completion::Done(r) => r,
            Completion::Waiting(rx) => rx.await.unwrap_or_else(|_| {
                Err(DurableError::Store(
                    "the store stopped before answering".into(),
                ))
            }),
        }
    }
}

/// Counters of a store, read with [`DurableStore::stats`].
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, serde::Deserialize)]
pub struct StoreStats {
    /// Submissions acknowledged.
    pub submissions: u64,
    /// Writes acknowledged.
    pub writes: u64,
    /// Records (values and log records) acknowledged.
    pub records: u64,
    /// Payload bytes acknowledged.
    pub bytes: u64,
    /// Syncs (journal commits, each one fsync for [`RedbStore`]).
    pub syncs: u64,
    /// Largest group of submissions made durable by one sync.
    pub max_group: u64,
    /// Journal folds: commits that moved journaled submissions into the
    /// store's tables ([`RedbStore`]; not counted in `syncs`).
    #[serde(default)]
    pub folds: u64,
    /// Submissions refused or failed.
    pub failed: u64,
}

impl StoreStats {
    /// Submissions per sync on average: the group-commit factor.
    pub fn mean_group(&self) -> f64 {
        if self.syncs == 0 {
            0.0
        } else {
            self.submissions as f64 / self.syncs as f64
        }
    }
}

/// Durable storage for protocol state and logs (see the module docs).
pub trait DurableStore: Send + Sync + 'static {
    /// Everything namespace `ns` has made durable, once submissions in
    /// flight are answered.
    fn load(&self, ns: &str) -> Result<Recovered, DurableError>;
    /// The records of log `log` of namespace `ns` after index `after`, at
    /// most `max` of them, in index order, once submissions in flight are
    /// answered: a contiguous run from the first index past `after` the
    /// log holds (fewer than `max` when the log ends). For readers that
    /// page through a long log (a broadcast group's delivery log) without
    /// loading the whole namespace. The default loads it ([`Self::load`]);
    /// the stores read the range only.
    fn load_log(
        &self,
        ns: &str,
        log: &str,
        after: u64,
        max: usize,
    ) -> Result<Vec<(u64, Vec<u8>)>, DurableError> {
        Ok(self
            .load(ns)?
            .log(log)
            .filter(|(i, _)| *i > after)
            .take(max)
            .map(|(i, r)| (i, r.to_vec()))
            .collect())
    }
    /// Make `writes` of namespace `ns` durable, atomically and after every
    /// earlier submission.
    fn submit(&self, ns: &str, writes: Vec<Write>) -> Completion;
    /// The store's counters.
    fn stats(&self) -> StoreStats;
    /// Where the store keeps its data, for messages (`"memory"` for [`MemoryStore`]).
    fn location(&self) -> String;
    /// False when durable writes are not to be grouped at all (`[storage]
    /// group_commit = false`): the store syncs every submission on its own,
    /// and protocol drivers submit every input's writes as it is handled
    /// rather than a turn's inputs' together. True by default.
    fn groups_commits(&self) -> bool {
        true
    }
}

/// Shared counters behind [`StoreStats`].
#[derive(Debug, Default)]
pub(crate) struct Counters {
    submissions: AtomicU64,
    writes: AtomicU64,
    records: AtomicU64,
    bytes: AtomicU64,
    syncs: AtomicU64,
    max_group: AtomicU64,
    folds: AtomicU64,
    failed: AtomicU64,
}

impl Counters {
    /// Count a sync that acknowledged `group` submissions holding `writes`.
    pub(crate) fn synced<'a>(&self, group: usize, writes: impl Iterator<Item = &'a Write>) -> u64 {
        let (n, records, bytes) = Self::measure(writes);
        self.synced_measured(group, n, records, bytes)
    }
    /// Writes, records and bytes of `writes`.
    pub(crate) fn measure<'a>(writes: impl Iterator<Item = &'a Write>) -> (u64, u64, u64) {
        let (mut n, mut records, mut bytes) = (0u64, 0u64, 0u64);
        for w in writes {
            n += 1;
            records += w.records() as u64;
            bytes += w.bytes() as u64;
        }
        (n, records, bytes)
    }
    /// Count a sync that acknowledged `group` submissions holding `n`
    /// writes of `records` records and `bytes` bytes.
    pub(crate) fn synced_measured(&self, group: usize, n: u64, records: u64, bytes: u64) -> u64 {
        self.submissions.fetch_add(group as u64, Ordering::Relaxed);
        self.writes.fetch_add(n, Ordering::Relaxed);
        self.records.fetch_add(records, Ordering::Relaxed);
        self.bytes.fetch_add(bytes, Ordering::Relaxed);
        self.max_group.fetch_max(group as u64, Ordering::Relaxed);
        self.syncs.fetch_add(1, Ordering::Relaxed) + 1
    }
    pub(crate) fn folded(&self) {
        self.folds.fetch_add(1, Ordering::Relaxed);
    }
    pub(crate) fn failed(&self, n: usize) {
        self.failed.fetch_add(n as u64, Ordering::Relaxed);
    }
    pub(crate) fn snapshot(&self) -> StoreStats {
        StoreStats {
            submissions: self.submissions.load(Ordering::Relaxed),
            writes: self.writes.load(Ordering::Relaxed),
            records: self.records.load(Ordering::Relaxed),
            bytes: self.bytes.load(Ordering::Relaxed),
            syncs: self.syncs.load(Ordering::Relaxed),
            max_group: self.max_group.load(Ordering::Relaxed),
            folds: self.folds.load(Ordering::Relaxed),
            failed: self.failed.load(Ordering::Relaxed),
        }
    }
}

#[cfg(test)]
pub(crate) mod contract {
    //! The contract every store must keep, run against each of them.
    use super::*;

    pub(crate) fn put(key: &str, v: &[u8]) -> Write {
        Write::Put {
            key: key.into(),
            value: v.to_vec(),
        }
    }

    pub(crate) fn append(log: &str, first: u64, n: u64) -> Write {
        Write::Append {
            log: log.into(),
            first,
            records: (first..first + n)
                .map(|i| i.to_le_bytes().to_vec())
                .collect(),
        }
    }

    /// `load_log` pages through a log as `load` reads it: after appends
    /// and truncations at both ends, for every start and page size.
    pub(crate) async fn exercise_log_pages(store: &dyn DurableStore) {
        let trunc_before = Write::TruncateBefore {
            log: "log".into(),
            index: 6,
        };
        let trunc_from = Write::TruncateFrom {
            log: "log".into(),
            index: 15,
        };
        for writes in [
            vec![append("log", 1, 20), append("other", 1, 3)],
            vec![trunc_before, put("k", b"v")],
            vec![trunc_from, append("log", 15, 10)],
        ] {
            store.submit("paged", writes).wait().await.unwrap();
        }
        let whole = store.load("paged").unwrap();
        assert_eq!(whole.log_bounds("log"), Some((6, 24)));
        for after in [0, 5, 6, 10, 14, 23, 24, 30] {
            for max in [0, 1, 3, 100] {
                let want: Vec<(u64, Vec<u8>)> = whole
                    .log("log")
                    .filter(|(i, _)| *i > after)
                    .take(max)
                    .map(|(i, r)| (i, r.to_vec()))
                    .collect();
                let got = store.load_log("paged", "log", after, max).unwrap();
                assert_eq!(got, want, "after {after}, at most {max}");
            }
        }
        assert!(store.load_log("paged", "none", 0, 10).unwrap().is_empty());
        assert!(store.load_log("nobody", "log", 0, 10).unwrap().is_empty());
    }

    pub(crate) async fn exercise(store: &dyn DurableStore) {
        let r = store
            .submit("a", vec![put("term", b"7"), append("log", 1, 3)])
            .wait()
            .await
            .unwrap();
        assert!(r.group >= 1 && r.writes >= 2, "{r:?}");
        store
            .submit("b", vec![put("term", b"9")])
            .wait()
            .await
            .unwrap();
        // A bad append fails alone and applies nothing of its submission.
        let e = store
            .submit("a", vec![put("term", b"8"), append("log", 7, 1)])
            .wait()
            .await
            .unwrap_err();
        assert!(matches!(e, DurableError::NotContiguous { .. }), "{e}");
        store
            .submit(
                "a",
                vec![
                    Write::TruncateFrom {
                        log: "log".into(),
                        index: 3,
                    },
                    append("log", 3, 2),
                    Write::TruncateBefore {
                        log: "log".into(),
                        index: 2,
                    },
                ],
            )
            .wait()
            .await
            .unwrap();
        let a = store.load("a").unwrap();
        assert_eq!(
            a.get("term"),
            Some(&b"7"[..]),
            "namespaces apart; failed put not applied"
        );
        assert_eq!(a.log_bounds("log"), Some((2, 4)));
        let b = store.load("b").unwrap();
        assert_eq!(b.get("term"), Some(&b"9"[..]));
        assert_eq!(b.log_bounds("log"), None);
        assert!(store.load("nobody").unwrap().is_empty());
        store
            .submit("a", vec![Write::Delete { key: "term".into() }])
            .wait()
            .await
            .unwrap();
        assert_eq!(store.load("a").unwrap().get("term"), None);
        let st = store.stats();
        assert_eq!(st.failed, 1);
        assert_eq!(st.submissions, 4);
        assert!(st.syncs >= 1 && st.syncs <= 4);
    }
}
