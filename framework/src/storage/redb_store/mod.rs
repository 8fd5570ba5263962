//! [`RedbStore`]: the durable store on disk, with group commit through a
//! journal, in two redb files of a node's data directory.
//!
//! - `troupe.redb`, the *tables*: table `kv` maps `(namespace, key)` to a
//!   value; table `log` maps `(namespace, log, index)` to a record, so a log
//!   is a contiguous key range and its bounds are its first and last keys;
//!   table `meta` says up to which journal entry the tables are up to date
//!   (`folded`).
//! - `troupe.journal.redb`, the *journal*: table `journal` maps a sequence
//!   number to one *group*, the submissions one commit made durable, in
//!   order, in a compact binary form.
//!
//! The writer thread owns the journal's write transactions. It takes the
//! submissions waiting in its queue (up to [`MAX_GROUP`]), checks each one
//! (an append must follow its log) against the bounds of the logs it keeps in
//! memory, writes the valid ones to the journal as one entry, commits once —
//! one fsync, redb's checksummed one-phase commit — and only then answers
//! them (in submission order). Submissions that arrive during a commit wait
//! for the next one: that is the group commit, and its size is reported per
//! submission ([`SyncReport::group`]) and in the stats. A refused submission
//! is answered with its error and nothing of it is applied; a failed commit
//! fails every submission of its group and every later one (redb refuses
//! further write transactions until the database is reopened). A large
//! group's answers go out from a thread of their own (see [`Answers`]), in
//! order, while the writer starts the next commit.
//!
//! The folder thread owns the tables' write transactions. It receives every
//! committed group and, once it holds [`DEFAULT_FOLD_BYTES`] of them, *folds*
//! them: one transaction applies them to `kv` and `log`, in order, and
//! records the last entry folded; the writer then deletes the folded entries
//! from the journal with its next commit. Opening the store folds what the
//! journal holds beyond `folded` (a crash's leftovers), and
//! [`DurableStore::load`] reads the journal, then the tables, and applies the
//! journal's entries beyond `folded` to what the tables hold.
//!
//! Why a journal: the submissions of one group come from many protocol
//! instances (namespaces), and in the tables each namespace's latest records
//! live in a B-tree leaf of their own. Writing them there at every commit
//! made each commit copy, checksum, write and sync one 4 KiB page per
//! namespace in the group (~4 KiB per 100-byte record with 256 writers), and
//! the writer thread spent its time on that instead of on syncing. A journal
//! entry is written where the last one ended, so a commit writes about its
//! own bytes; each namespace's leaf is rewritten once per fold instead of
//! once per commit, and on the other thread, while the writer goes on
//! syncing. Why a second file: redb has one write transaction at a time per
//! database, so folds in the same file would stop the group commits.
//!
//! Files: [`writer`] (journal commits and their answers), [`folder`] (folds),
//! [`tables`] (recovery, folding and reading the tables), [`journal`] (a
//! group's binary encoding).

mod folder;
mod journal;
mod tables;
#[cfg(test)]
mod tests;
mod writer;

use std::collections::{BTreeMap, HashMap};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{mpsc, Arc, Condvar, Mutex};
use std::thread::JoinHandle;

use redb::{Database, ReadableDatabase, ReadableTable, TableDefinition, WriteTransaction};
use tokio::sync::oneshot;

use super::{
    Completion, Counters, DurableError, DurableStore, Recovered, StoreStats, SyncReport, Write,
};
use crate::sansio::{bounds_after, LogBounds};

use folder::*;
use journal::*;
use tables::*;
use writer::*;

const KV: TableDefinition<(&str, &str), &[u8]> = TableDefinition::new("kv");
const LOG: TableDefinition<(&str, &str, u64), &[u8]> = TableDefinition::new("log");
const META: TableDefinition<&str, u64> = TableDefinition::new("meta");
/// Key in `meta`: the last journal entry the tables hold.
const FOLDED: &str = "folded";
const JOURNAL: TableDefinition<u64, &[u8]> = TableDefinition::new("journal");

/// Most submissions made durable by one commit.
pub const MAX_GROUP: usize = 4096;

/// Journal bytes (encoded groups) the folder gathers before it folds them
/// into the tables.
pub const DEFAULT_FOLD_BYTES: usize = 4 << 20;

/// How a [`RedbStore`] commits.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct StoreOptions {
    /// Journal bytes gathered before a fold (default 4 MiB).
    pub fold_bytes: usize,
    /// Group commit (the default): submissions that wait while a commit is
    /// in flight share the next one (up to 4096). Off, every
    /// submission is a commit (one fsync) of its own, and protocol drivers
    /// submit each input's writes on their own instead of a turn's
    /// together ([`DurableStore::groups_commits`]): one fsync per forced
    /// record, the baseline the benchmarks compare against, and a choice
    /// for a disk whose syncs are free.
    pub group_commit: bool,
}

impl Default for StoreOptions {
    fn default() -> Self {
        Self {
            fold_bytes: DEFAULT_FOLD_BYTES,
            group_commit: true,
        }
    }
}

/// The writer waits while more than this many times the fold size waits to
/// be folded (the folder keeps those groups in memory).
const BACKLOG_FOLDS: usize = 4;

/// redb's page cache of the tables. Its default, 1 GiB, keeps every page a
/// commit wrote until the cache is full: a node's store grew towards 1 GiB
/// of memory, and every commit's new pages were fresh memory for the
/// allocator to fault in (a sixth of the writer thread's time under 256
/// writers). The store reads little besides the B-trees' upper levels and
/// their last leaves.
const CACHE_BYTES: usize = 64 << 20;
/// The journal's page cache: it is written, and read only by `load`.
const JOURNAL_CACHE_BYTES: usize = 16 << 20;

/// The writer keeps the bounds of at least this many logs in memory; past
/// that, it forgets those whose writes are all folded.
const BOUNDS_KEPT: usize = 4096;

type Answer = oneshot::Sender<Result<SyncReport, DurableError>>;

enum Job {
    Submit {
        ns: String,
        writes: Vec<Write>,
        done: Answer,
    },
    /// Answered once every job before it is answered.
    Barrier(mpsc::SyncSender<()>),
}

/// The durable store in a data directory's redb files (see the module docs).
pub struct RedbStore {
    path: PathBuf,
    tables: Arc<Database>,
    journal: Arc<Database>,
    #[cfg_attr(not(test), allow(dead_code))] // tests wait for folds
    folding: Arc<Folding>,
    jobs: Option<mpsc::Sender<Job>>,
    writer: Option<JoinHandle<()>>,
    counters: Arc<Counters>,
    /// [`StoreOptions::group_commit`].
    group_commit: bool,
}

impl std::fmt::Debug for RedbStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RedbStore")
            .field("path", &self.path)
            .finish()
    }
}

fn store_err(path: &Path, e: impl std::fmt::Display) -> DurableError {
    DurableError::Store(format!("{}: {e}", path.display()))
}

fn open_db(path: &Path, cache: usize) -> Result<Database, DurableError> {
    redb::Builder::new()
        .set_cache_size(cache)
        .create(path)
        .map_err(|e| match e {
            redb::DatabaseError::DatabaseAlreadyOpen => store_err(
                path,
                "already open (is another node using this data directory?)",
            ),
            e => store_err(path, e),
        })
}

impl RedbStore {
    /// The file name of the store's tables inside a node's data directory.
    pub const FILE_NAME: &'static str = "troupe.redb";

    /// Open (or create) the store of data directory `dir`
    /// (`dir/troupe.redb` and `dir/troupe.journal.redb`), creating the
    /// directory if needed.
    pub fn open_dir(dir: impl AsRef<Path>) -> Result<Self, DurableError> {
        let dir = dir.as_ref();
        std::fs::create_dir_all(dir).map_err(|e| store_err(dir, e))?;
        Self::open(dir.join(Self::FILE_NAME))
    }

    /// Open (or create) the store whose tables are in file `path` (its
    /// journal is beside it: `troupe.redb` -> `troupe.journal.redb`).
    pub fn open(path: impl Into<PathBuf>) -> Result<Self, DurableError> {
        Self::open_with(path, StoreOptions::default())
    }

    /// [`RedbStore::open_dir`] with `options`.
    pub fn open_dir_with(
        dir: impl AsRef<Path>,
        options: StoreOptions,
    ) -> Result<Self, DurableError> {
        let dir = dir.as_ref();
        std::fs::create_dir_all(dir).map_err(|e| store_err(dir, e))?;
        Self::open_with(dir.join(Self::FILE_NAME), options)
    }

    /// The journal's file for tables in `path`.
    pub fn journal_path(path: &Path) -> PathBuf {
        path.with_extension("journal.redb")
    }

    /// [`RedbStore::open`], folding the journal into the tables whenever
    /// `fold_bytes` of it are waiting (for tests and benchmarks; the default
    /// is 4 MiB).
    pub fn open_with_fold_bytes(
        path: impl Into<PathBuf>,
        fold_bytes: usize,
    ) -> Result<Self, DurableError> {
        Self::open_with(
            path,
            StoreOptions {
                fold_bytes,
                ..StoreOptions::default()
            },
        )
    }

    /// [`RedbStore::open`] with `options`.
    pub fn open_with(
        path: impl Into<PathBuf>,
        options: StoreOptions,
    ) -> Result<Self, DurableError> {
        let StoreOptions {
            fold_bytes,
            group_commit,
        } = options;
        let path = path.into();
        let journal_path = Self::journal_path(&path);
        let tables = Arc::new(open_db(&path, CACHE_BYTES)?);
        let journal = Arc::new(open_db(&journal_path, JOURNAL_CACHE_BYTES)?);
        let folded = recover(&tables, &journal).map_err(|e| store_err(&path, e))?;
        let counters = Arc::new(Counters::default());
        let folding = Arc::new(Folding {
            folded: AtomicU64::new(folded),
            backlog: Mutex::new(0),
            drained: Condvar::new(),
            broken: Mutex::new(None),
        });
        let (to_folder, folder_jobs) = mpsc::channel();
        let folder = {
            let folder = Folder {
                tables: tables.clone(),
                counters: counters.clone(),
                path: path.clone(),
                folding: folding.clone(),
                fold_bytes,
            };
            std::thread::Builder::new()
                .name("troupe-store-fold".into())
                .spawn(move || folder.run(folder_jobs))
                .map_err(|e| store_err(&path, e))?
        };
        let (tx, rx) = mpsc::channel();
        let writer = {
            let writer = Writer {
                journal: journal.clone(),
                tables: tables.clone(),
                counters: counters.clone(),
                path: journal_path,
                folding: folding.clone(),
                to_folder: Some(to_folder),
                folder: Some(folder),
                backlog_limit: fold_bytes.saturating_mul(BACKLOG_FOLDS),
                bounds: HashMap::new(),
                kept: 0,
                forget_at: BOUNDS_KEPT,
                next_entry: folded + 1,
                deleted: folded,
                answers: Answers::start().map_err(|e| store_err(&path, e))?,
                buffer: Vec::new(),
                broken: None,
                max_group: if group_commit { MAX_GROUP } else { 1 },
            };
            std::thread::Builder::new()
                .name("troupe-store".into())
                .spawn(move || writer.run(rx))
                .map_err(|e| store_err(&path, e))?
        };
        Ok(Self {
            path,
            tables,
            journal,
            folding,
            jobs: Some(tx),
            writer: Some(writer),
            counters,
            group_commit,
        })
    }

    /// The tables' database file.
    pub fn path(&self) -> &Path {
        &self.path
    }

    fn send(&self, job: Job) -> Result<(), DurableError> {
        self.jobs
            .as_ref()
            .and_then(|j| j.send(job).ok())
            .ok_or_else(|| store_err(&self.path, "the writer thread has stopped"))
    }

    /// Wait until every submission made so far is answered.
    pub fn barrier(&self) -> Result<(), DurableError> {
        let (tx, rx) = mpsc::sync_channel(1);
        self.send(Job::Barrier(tx))?;
        rx.recv()
            .map_err(|_| store_err(&self.path, "the writer thread has stopped"))
    }

    /// Wait until every group handed to the folder so far is folded (or
    /// folding failed). For tests (folds happen on their own thread) with a
    /// fold size small enough for the folder to fold what it has.
    #[cfg(test)]
    fn wait_folded(&self) {
        self.barrier().unwrap();
        let mut backlog = self.folding.backlog.lock().unwrap();
        while *backlog > 0 && self.folding.broken.lock().unwrap().is_none() {
            backlog = self.folding.drained.wait(backlog).unwrap();
        }
    }
}

impl Drop for RedbStore {
    fn drop(&mut self) {
        self.jobs = None;
        if let Some(w) = self.writer.take() {
            let _ = w.join();
        }
    }
}

/// What [`RedbStore::begin_read`] opens: the journal's table, the tables'
/// read transaction, and the last journal entry the tables hold.
type DurableRead = (
    redb::ReadOnlyTable<u64, &'static [u8]>,
    redb::ReadTransaction,
    u64,
);

impl RedbStore {
    /// A consistent read of what is durable, once submissions in flight
    /// are answered: the journal's table, then a read of the tables and
    /// the last journal entry they hold. The journal first: an entry
    /// deleted from it before this read was folded before the tables'
    /// read.
    fn begin_read(&self) -> Result<DurableRead, DurableError> {
        self.barrier()?;
        let e = |e: &dyn std::fmt::Display| store_err(&self.path, e);
        let journal = self.journal.begin_read().map_err(|x| e(&x))?;
        let journal = journal.open_table(JOURNAL).map_err(|x| e(&x))?;
        let txn = self.tables.begin_read().map_err(|x| e(&x))?;
        let folded = txn
            .open_table(META)
            .map_err(|x| e(&x))?
            .get(FOLDED)
            .map_err(|x| e(&x))?
            .map_or(0, |v| v.value());
        Ok((journal, txn, folded))
    }
}

impl DurableStore for RedbStore {
    fn load(&self, ns: &str) -> Result<Recovered, DurableError> {
        let e = |e: &dyn std::fmt::Display| store_err(&self.path, e);
        let (journal, txn, folded) = self.begin_read()?;
        let kv = txn.open_table(KV).map_err(|x| e(&x))?;
        let mut keys = BTreeMap::new();
        for item in kv.range((ns, "")..).map_err(|x| e(&x))? {
            let (k, v) = item.map_err(|x| e(&x))?;
            let (space, key) = k.value();
            if space != ns {
                break;
            }
            keys.insert(key.to_string(), v.value().to_vec());
        }
        let log = txn.open_table(LOG).map_err(|x| e(&x))?;
        let mut logs: BTreeMap<String, BTreeMap<u64, Vec<u8>>> = BTreeMap::new();
        for item in log.range((ns, "", 0u64)..).map_err(|x| e(&x))? {
            let (k, v) = item.map_err(|x| e(&x))?;
            let (space, name, index) = k.value();
            if space != ns {
                break;
            }
            logs.entry(name.to_string())
                .or_default()
                .insert(index, v.value().to_vec());
        }
        let mut recovered = Recovered::from_parts(keys, logs);
        for item in journal.range(folded + 1..).map_err(|x| e(&x))? {
            let (k, v) = item.map_err(|x| e(&x))?;
            let group = decode_group(v.value()).map_err(|x| e(&journal_err(k.value(), x)))?;
            for (space, writes) in group {
                if space == ns {
                    recovered.apply(&writes)?;
                }
            }
        }
        Ok(recovered)
    }

    fn groups_commits(&self) -> bool {
        self.group_commit
    }

    fn load_log(
        &self,
        ns: &str,
        name: &str,
        after: u64,
        max: usize,
    ) -> Result<Vec<(u64, Vec<u8>)>, DurableError> {
        let e = |e: &dyn std::fmt::Display| store_err(&self.path, e);
        let (journal, txn, folded) = self.begin_read()?;
        // The journal's writes to this log, in order.
        let mut writes = Vec::new();
        for item in journal.range(folded + 1..).map_err(|x| e(&x))? {
            let (k, v) = item.map_err(|x| e(&x))?;
            let group = decode_group(v.value()).map_err(|x| e(&journal_err(k.value(), x)))?;
            for (space, ws) in group {
                if space == ns {
                    writes.extend(ws.into_iter().filter(|w| match w {
                        Write::Append { log, .. }
                        | Write::TruncateFrom { log, .. }
                        | Write::TruncateBefore { log, .. } => log == name,
                        _ => false,
                    }));
                }
            }
        }
        // Appends only: they land past the tables' last record, so the
        // tables' first `max` after `after` are the log's. A truncation
        // may cut those: then the tables' whole rest is read.
        let appends_only = writes.iter().all(|w| matches!(w, Write::Append { .. }));
        let from = after.saturating_add(1);
        let log = txn.open_table(LOG).map_err(|x| e(&x))?;
        let mut records = BTreeMap::new();
        for item in log
            .range((ns, name, from)..=(ns, name, u64::MAX))
            .map_err(|x| e(&x))?
            .take(if appends_only { max } else { usize::MAX })
        {
            let (k, v) = item.map_err(|x| e(&x))?;
            records.insert(k.value().2, v.value().to_vec());
        }
        for w in writes {
            match w {
                Write::Append {
                    first, records: rs, ..
                } => {
                    for (i, r) in (first..).zip(rs) {
                        if i >= from {
                            records.insert(i, r);
                        }
                    }
                }
                Write::TruncateFrom { index, .. } => records.retain(|i, _| *i < index),
                Write::TruncateBefore { index, .. } => records.retain(|i, _| *i >= index),
                _ => {}
            }
        }
        Ok(records.into_iter().take(max).collect())
    }

    fn submit(&self, ns: &str, writes: Vec<Write>) -> Completion {
        let (done, rx) = oneshot::channel();
        match self.send(Job::Submit {
            ns: ns.to_string(),
            writes,
            done,
        }) {
            Ok(()) => Completion::Waiting(rx),
            Err(e) => {
                self.counters.failed(1);
                Completion::Done(Err(e))
            }
        }
    }

    fn stats(&self) -> StoreStats {
        self.counters.snapshot()
    }

    fn location(&self) -> String {
        self.path.display().to_string()
    }
}
