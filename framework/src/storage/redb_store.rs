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
        Self::open_with_fold_bytes(path, DEFAULT_FOLD_BYTES)
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

impl DurableStore for RedbStore {
    fn load(&self, ns: &str) -> Result<Recovered, DurableError> {
        self.barrier()?;
        let e = |e: &dyn std::fmt::Display| store_err(&self.path, e);
        // The journal first, then the tables: an entry deleted from the
        // journal before this read was folded before the tables' read below.
        let journal = self.journal.begin_read().map_err(|x| e(&x))?;
        let journal = journal.open_table(JOURNAL).map_err(|x| e(&x))?;
        let txn = self.tables.begin_read().map_err(|x| e(&x))?;
        let folded = txn
            .open_table(META)
            .map_err(|x| e(&x))?
            .get(FOLDED)
            .map_err(|x| e(&x))?
            .map_or(0, |v| v.value());
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

fn journal_err(entry: u64, e: impl std::fmt::Display) -> String {
    format!("journal entry {entry} does not decode: {e}")
}

/// At open: create the tables, fold into them what the journal holds beyond
/// what they say they hold, and empty the journal. Returns the last entry
/// folded.
fn recover(tables: &Database, journal: &Database) -> Result<u64, String> {
    let txn = tables.begin_write().map_err(|e| e.to_string())?;
    let folded = {
        let meta = txn.open_table(META).map_err(|e| e.to_string())?;
        let folded = meta
            .get(FOLDED)
            .map_err(|e| e.to_string())?
            .map_or(0, |v| v.value());
        folded
    };
    let mut groups = Vec::new();
    {
        let read = journal.begin_write().map_err(|e| e.to_string())?;
        {
            let j = read.open_table(JOURNAL).map_err(|e| e.to_string())?;
            for item in j.range(folded + 1..).map_err(|e| e.to_string())? {
                let (k, v) = item.map_err(|e| e.to_string())?;
                let group = decode_group(v.value()).map_err(|e| journal_err(k.value(), e))?;
                groups.push((k.value(), group));
            }
        }
        // Creates the journal table on a first start.
        read.commit().map_err(|e| e.to_string())?;
    }
    let last = fold_into(&txn, groups)?.unwrap_or(folded);
    txn.commit().map_err(|e| e.to_string())?;
    // Everything is in the tables now: empty the journal.
    let txn = journal.begin_write().map_err(|e| e.to_string())?;
    txn.open_table(JOURNAL)
        .map_err(|e| e.to_string())?
        .retain(|_, _| false)
        .map_err(|e| e.to_string())?;
    txn.commit().map_err(|e| e.to_string())?;
    Ok(last)
}

/// One committed group: its journal entry and its submissions.
type Group = (u64, Vec<(String, Vec<Write>)>);

/// Apply `groups` (in entry order) to the tables in `txn` (creating them
/// when they do not exist) and record the last entry as folded. Returns
/// that entry (`None`: no group).
///
/// Namespaces never share a key, so each one's writes are applied together
/// (in their order), one namespace after the other: the B-trees are then
/// written in key order, a leaf at a time.
fn fold_into(txn: &WriteTransaction, groups: Vec<Group>) -> Result<Option<u64>, String> {
    let mut kv = txn.open_table(KV).map_err(|e| e.to_string())?;
    let mut log = txn.open_table(LOG).map_err(|e| e.to_string())?;
    let mut meta = txn.open_table(META).map_err(|e| e.to_string())?;
    let last = groups.last().map(|(entry, _)| *entry);
    let mut spaces: BTreeMap<String, Vec<Vec<Write>>> = BTreeMap::new();
    for (_, group) in groups {
        for (ns, writes) in group {
            spaces.entry(ns).or_default().push(writes);
        }
    }
    for (ns, submissions) in spaces {
        for writes in submissions {
            apply(&mut kv, &mut log, &ns, &writes).map_err(|e| e.to_string())?;
        }
    }
    if let Some(last) = last {
        meta.insert(FOLDED, last).map_err(|e| e.to_string())?;
    }
    Ok(last)
}

/// What the writer and the folder share.
struct Folding {
    /// The last journal entry the tables hold (committed there).
    folded: AtomicU64,
    /// Journal bytes handed to the folder and not folded yet.
    backlog: Mutex<usize>,
    /// Signalled when the backlog shrinks or folding breaks.
    drained: Condvar,
    /// Why folding stopped: then the store takes no more writes.
    broken: Mutex<Option<DurableError>>,
}

impl Folding {
    fn broken(&self) -> Option<DurableError> {
        self.broken
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
    }
    fn backlog(&self) -> std::sync::MutexGuard<'_, usize> {
        self.backlog.lock().unwrap_or_else(|p| p.into_inner())
    }
}

/// A committed group on its way to the folder.
struct ToFold {
    entry: u64,
    bytes: usize,
    group: Vec<(String, Vec<Write>)>,
}

/// The folder thread (see the module docs).
struct Folder {
    tables: Arc<Database>,
    counters: Arc<Counters>,
    path: PathBuf,
    folding: Arc<Folding>,
    fold_bytes: usize,
}

impl Folder {
    fn run(self, rx: mpsc::Receiver<ToFold>) {
        let mut pending: Vec<Group> = Vec::new();
        let mut bytes = 0;
        while let Ok(first) = rx.recv() {
            let mut next = Some(first);
            while let Some(g) = next {
                bytes += g.bytes;
                pending.push((g.entry, g.group));
                next = rx.try_recv().ok();
            }
            if bytes < self.fold_bytes || self.folding.broken().is_some() {
                continue;
            }
            let groups = std::mem::take(&mut pending);
            let r = self
                .tables
                .begin_write()
                .map_err(|e| e.to_string())
                .and_then(|txn| {
                    let last = fold_into(&txn, groups)?;
                    txn.commit().map_err(|e| e.to_string())?;
                    Ok(last)
                });
            match r {
                Ok(last) => {
                    if let Some(last) = last {
                        self.folding.folded.store(last, Ordering::Release);
                    }
                    self.counters.folded();
                    let mut backlog = self.folding.backlog();
                    *backlog = backlog.saturating_sub(bytes);
                    bytes = 0;
                }
                Err(e) => {
                    // Nothing acknowledged is lost (the journal keeps it, and
                    // opening the store folds it), but the store takes no
                    // more writes.
                    let e = store_err(&self.path, format!("folding the journal failed: {e}"));
                    tracing::error!(store = %self.path.display(), error = %e, "durable store fold failed");
                    *self
                        .folding
                        .broken
                        .lock()
                        .unwrap_or_else(|p| p.into_inner()) = Some(e);
                }
            }
            self.folding.drained.notify_all();
        }
    }
}

type Submission = (String, Vec<Write>, Answer);

/// The `log` table, read.
type LogTable = redb::ReadOnlyTable<(&'static str, &'static str, u64), &'static [u8]>;

/// What the writer knows of a log since the last time it asked the tables.
#[derive(Clone, Copy)]
struct Known {
    bounds: LogBounds,
    /// The last journal entry that wrote the log.
    entry: u64,
}

/// The writer thread (see the module docs).
struct Writer {
    journal: Arc<Database>,
    tables: Arc<Database>,
    counters: Arc<Counters>,
    /// The journal's file.
    path: PathBuf,
    folding: Arc<Folding>,
    to_folder: Option<mpsc::Sender<ToFold>>,
    folder: Option<JoinHandle<()>>,
    /// Wait while the folder has more than this to fold.
    backlog_limit: usize,
    /// The bounds of logs, by namespace then log, as the journal leaves
    /// them. A log missing here has all its writes folded, so the tables
    /// have its bounds.
    bounds: HashMap<String, HashMap<String, Known>>,
    /// Logs in `bounds`.
    kept: usize,
    /// Forget folded logs once `kept` exceeds this.
    forget_at: usize,
    /// Key of the next journal entry.
    next_entry: u64,
    /// Journal entries up to this one are deleted.
    deleted: u64,
    /// Where answers go out, in order.
    answers: Answers,
    /// The last group's encoding buffer, for the next one.
    buffer: Vec<u8>,
    /// Why the store takes no more writes: a journal commit failed, after
    /// which redb refuses write transactions until the file is reopened.
    broken: Option<DurableError>,
}

impl Writer {
    fn run(mut self, rx: mpsc::Receiver<Job>) {
        while let Ok(first) = rx.recv() {
            self.wait_for_folder();
            let mut jobs = vec![first];
            while jobs.len() < MAX_GROUP {
                match rx.try_recv() {
                    Ok(j) => jobs.push(j),
                    Err(_) => break,
                }
            }
            self.group(jobs);
        }
        self.to_folder = None;
        if let Some(f) = self.folder.take() {
            let _ = f.join();
        }
    }

    /// Back-pressure: the folder keeps what it has not folded in memory.
    fn wait_for_folder(&mut self) {
        let mut backlog = self.folding.backlog();
        while *backlog > self.backlog_limit && self.folding.broken().is_none() {
            if self.folder.as_ref().is_none_or(|f| f.is_finished()) {
                // It panicked: nothing will drain the backlog.
                drop(backlog);
                self.broken = Some(store_err(&self.path, "the folder thread has stopped"));
                return;
            }
            backlog = self
                .folding
                .drained
                .wait_timeout(backlog, std::time::Duration::from_millis(100))
                .unwrap_or_else(|p| p.into_inner())
                .0;
        }
    }

    /// Make one group of jobs durable with one commit, then answer them.
    fn group(&mut self, jobs: Vec<Job>) {
        let mut submits = Vec::new();
        let mut barriers = Vec::new();
        for j in jobs {
            match j {
                Job::Submit { ns, writes, done } => submits.push((ns, writes, done)),
                Job::Barrier(b) => barriers.push(b),
            }
        }
        let answers = match self.broken.clone().or_else(|| self.folding.broken()) {
            Some(e) => {
                self.counters.failed(submits.len());
                submits
                    .into_iter()
                    .map(|(_, _, done)| (done, Err(e.clone())))
                    .collect()
            }
            None if submits.is_empty() => Vec::new(),
            None => self.commit(submits),
        };
        self.answers.answer(answers, barriers);
    }

    /// The bounds of log `name` of `ns` before this group, from memory or
    /// from the tables (`read` is opened on the first need).
    fn bounds_of(
        bounds: &HashMap<String, HashMap<String, Known>>,
        tables: &Database,
        read: &mut Option<LogTable>,
        ns: &str,
        name: &str,
    ) -> Result<LogBounds, String> {
        if let Some(k) = bounds.get(ns).and_then(|m| m.get(name)) {
            return Ok(k.bounds);
        }
        if read.is_none() {
            let txn = tables.begin_read().map_err(|e| e.to_string())?;
            *read = Some(txn.open_table(LOG).map_err(|e| e.to_string())?);
        }
        match read.as_ref() {
            Some(log) => table_bounds(log, ns, name).map_err(|e| e.to_string()),
            None => Ok(None),
        }
    }

    /// Journal every valid submission of a group as one entry and commit
    /// it. Returns every submission's answer, in order: refused ones with
    /// their error, accepted ones with the commit's outcome.
    fn commit(&mut self, all: Vec<Submission>) -> Vec<(Answer, Result<SyncReport, DurableError>)> {
        let path = self.path.clone();
        let e = |x: &dyn std::fmt::Display| store_err(&path, x);
        let txn = match self.journal.begin_write() {
            Ok(t) => t,
            Err(x) => {
                let all = all.into_iter().map(|(ns, w, d)| (d, Ok((ns, w))));
                return self.failed(e(&x), all);
            }
        };
        let entry = self.next_entry;
        // Each submission's writes (accepted) or error (refused), in order.
        let mut checked = Vec::with_capacity(all.len());
        let mut encoded = GroupEncoder::with_buffer(std::mem::take(&mut self.buffer));
        let mut read = None;
        for (ns, writes, done) in all {
            let after = bounds_after(&writes, |name| {
                Self::bounds_of(&self.bounds, &self.tables, &mut read, &ns, name).map_err(|x| e(&x))
            });
            match after {
                Err(x) => {
                    self.counters.failed(1);
                    checked.push((done, Err(x)));
                }
                Ok(after) => {
                    if !self.bounds.contains_key(ns.as_str()) {
                        self.bounds.insert(ns.clone(), HashMap::new());
                    }
                    if let Some(space) = self.bounds.get_mut(ns.as_str()) {
                        for (name, bounds) in after {
                            let known = Known { bounds, entry };
                            if space.insert(name.to_string(), known).is_none() {
                                self.kept += 1;
                            }
                        }
                    }
                    encoded.push(&ns, &writes);
                    checked.push((done, Ok((ns, writes))));
                }
            }
        }
        drop(read);
        let n = encoded.submissions as usize;
        if n == 0 {
            // Every submission was refused: nothing to commit.
            self.buffer = encoded.finish();
            let _ = txn.abort();
            return checked
                .into_iter()
                .filter_map(|(d, r)| r.err().map(|x| (d, Err(x))))
                .collect();
        }
        let bytes = encoded.finish();
        let size = bytes.len();
        let folded = self.folding.folded.load(Ordering::Acquire);
        let written = match txn.open_table(JOURNAL) {
            Ok(mut j) => j
                .insert(entry, bytes.as_slice())
                .map(|_| ())
                .and_then(|()| {
                    // What the tables now hold leaves the journal.
                    if folded > self.deleted {
                        j.retain_in(self.deleted + 1..=folded, |_, _| false)
                    } else {
                        Ok(())
                    }
                })
                .map_err(|x| e(&x)),
            Err(x) => Err(e(&x)),
        };
        if let Err(x) = written {
            return self.failed(x, checked);
        }
        if let Err(x) = txn.commit() {
            return self.failed(e(&x), checked);
        }
        self.next_entry += 1;
        self.deleted = self.deleted.max(folded);
        if bytes.capacity() <= 1 << 20 {
            self.buffer = bytes;
        }
        let accepted = || checked.iter().filter_map(|(_, r)| r.as_ref().ok());
        let writes: usize = accepted().map(|(_, w)| w.len()).sum();
        let sync = self
            .counters
            .synced(n, accepted().flat_map(|(_, w)| w.iter()));
        let report = SyncReport {
            sync,
            group: n,
            writes,
        };
        let mut group = Vec::with_capacity(n);
        let answers = checked
            .into_iter()
            .map(|(d, r)| match r {
                Ok(submission) => {
                    group.push(submission);
                    (d, Ok(report))
                }
                Err(x) => (d, Err(x)),
            })
            .collect();
        *self.folding.backlog() += size;
        if let Some(f) = &self.to_folder {
            let _ = f.send(ToFold {
                entry,
                bytes: size,
                group,
            });
        }
        self.forget(folded);
        answers
    }

    /// Forget the bounds of logs whose writes are all folded, when memory
    /// holds many: the tables have them.
    fn forget(&mut self, folded: u64) {
        if self.kept <= self.forget_at {
            return;
        }
        for space in self.bounds.values_mut() {
            space.retain(|_, k| k.entry > folded);
        }
        self.bounds.retain(|_, space| !space.is_empty());
        self.kept = self.bounds.values().map(HashMap::len).sum();
        self.forget_at = BOUNDS_KEPT.max(2 * self.kept);
    }

    /// A commit failed: every accepted submission of the group fails with
    /// `e`, refused ones keep their own error, and the store takes no more
    /// writes.
    fn failed(
        &mut self,
        e: DurableError,
        checked: impl IntoIterator<Item = (Answer, Result<(String, Vec<Write>), DurableError>)>,
    ) -> Vec<(Answer, Result<SyncReport, DurableError>)> {
        tracing::error!(store = %self.path.display(), error = %e, "durable store commit failed");
        self.broken = Some(e.clone());
        checked
            .into_iter()
            .map(|(d, r)| match r {
                Ok(_) => {
                    self.counters.failed(1);
                    (d, Err(e.clone()))
                }
                Err(x) => (d, Err(x)),
            })
            .collect()
    }
}

/// Delivers the store's answers, in order. Waking a task on another thread
/// (a tokio or actix runtime parked in its event loop) costs a system call
/// per answer: with hundreds of answers per commit that was a fifth of the
/// writer thread's time, so large groups are answered from a thread of
/// their own while the writer starts the next commit. Small groups, when
/// nothing is waiting there, are answered at once (no thread hand-off on the
/// latency of a lone writer).
struct Answers {
    queue: Option<mpsc::Sender<Batch>>,
    /// Batches handed to the answering thread and not yet delivered.
    pending: Arc<std::sync::atomic::AtomicUsize>,
    thread: Option<JoinHandle<()>>,
}

type Batch = (
    Vec<(Answer, Result<SyncReport, DurableError>)>,
    Vec<mpsc::SyncSender<()>>,
);

/// Groups up to this size are answered by the writer itself when the
/// answering thread is idle.
const ANSWER_INLINE: usize = 8;

impl Answers {
    fn start() -> std::io::Result<Self> {
        let (tx, rx) = mpsc::channel::<Batch>();
        let pending = Arc::new(std::sync::atomic::AtomicUsize::new(0));
        let left = pending.clone();
        let thread = std::thread::Builder::new()
            .name("troupe-store-ack".into())
            .spawn(move || {
                for (answers, barriers) in rx {
                    deliver(answers, barriers);
                    left.fetch_sub(1, std::sync::atomic::Ordering::Release);
                }
            })?;
        Ok(Self {
            queue: Some(tx),
            pending,
            thread: Some(thread),
        })
    }

    fn answer(
        &mut self,
        answers: Vec<(Answer, Result<SyncReport, DurableError>)>,
        barriers: Vec<mpsc::SyncSender<()>>,
    ) {
        let idle = self.pending.load(std::sync::atomic::Ordering::Acquire) == 0;
        if idle && answers.len() <= ANSWER_INLINE {
            return deliver(answers, barriers);
        }
        let Some(q) = &self.queue else {
            return deliver(answers, barriers);
        };
        self.pending
            .fetch_add(1, std::sync::atomic::Ordering::AcqRel);
        if let Err(mpsc::SendError((answers, barriers))) = q.send((answers, barriers)) {
            // The answering thread is gone (it panicked): answer here.
            self.pending
                .fetch_sub(1, std::sync::atomic::Ordering::AcqRel);
            deliver(answers, barriers);
        }
    }
}

impl Drop for Answers {
    fn drop(&mut self) {
        self.queue = None;
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

fn deliver(
    answers: Vec<(Answer, Result<SyncReport, DurableError>)>,
    barriers: Vec<mpsc::SyncSender<()>>,
) {
    for (done, r) in answers {
        let _ = done.send(r);
    }
    for b in barriers {
        let _ = b.send(());
    }
}

/// `(first, last)` of log `name` of `ns` in the `log` table.
fn table_bounds(
    log: &impl ReadableTable<(&'static str, &'static str, u64), &'static [u8]>,
    ns: &str,
    name: &str,
) -> Result<LogBounds, redb::StorageError> {
    let mut r = log.range((ns, name, 0u64)..=(ns, name, u64::MAX))?;
    let first = r.next().transpose()?;
    let last = r.next_back().transpose()?;
    Ok(first.map(|(f, _)| {
        let f = f.value().2;
        (f, last.map_or(f, |(l, _)| l.value().2))
    }))
}

fn apply(
    kv: &mut redb::Table<(&str, &str), &[u8]>,
    log: &mut redb::Table<(&str, &str, u64), &[u8]>,
    ns: &str,
    writes: &[Write],
) -> Result<(), redb::StorageError> {
    for w in writes {
        match w {
            Write::Put { key, value } => {
                kv.insert((ns, key.as_str()), value.as_slice())?;
            }
            Write::Delete { key } => {
                kv.remove((ns, key.as_str()))?;
            }
            Write::Append {
                log: name,
                first,
                records,
            } => {
                for (i, r) in records.iter().enumerate() {
                    log.insert((ns, name.as_str(), first + i as u64), r.as_slice())?;
                }
            }
            Write::TruncateFrom { log: name, index } => {
                log.retain_in(
                    (ns, name.as_str(), *index)..=(ns, name.as_str(), u64::MAX),
                    |_, _| false,
                )?;
            }
            Write::TruncateBefore { log: name, index } => {
                log.retain_in(
                    (ns, name.as_str(), 0u64)..(ns, name.as_str(), *index),
                    |_, _| false,
                )?;
            }
        }
    }
    Ok(())
}

// The journal's encoding of a group: a format byte, then per submission its
// namespace and its writes. Integers are little-endian; a string or a byte
// string is its u32 length, then its bytes.
//
//   group      = 0x01, u32 submissions, submission*
//   submission = str namespace, u32 writes, write*
//   write      = 0 str key, bytes value         (Put)
//              | 1 str key                       (Delete)
//              | 2 str log, u64 first, u32 n, bytes*n   (Append)
//              | 3 str log, u64 index            (TruncateFrom)
//              | 4 str log, u64 index            (TruncateBefore)

const GROUP_FORMAT: u8 = 1;

struct GroupEncoder {
    buf: Vec<u8>,
    submissions: u32,
}

impl GroupEncoder {
    #[cfg(test)]
    fn new() -> Self {
        Self::with_buffer(Vec::new())
    }

    /// Encode into `buf` (cleared first), reusing its memory.
    fn with_buffer(mut buf: Vec<u8>) -> Self {
        buf.clear();
        buf.push(GROUP_FORMAT);
        buf.extend_from_slice(&0u32.to_le_bytes());
        Self {
            buf,
            submissions: 0,
        }
    }

    fn bytes(&mut self, b: &[u8]) {
        self.buf.extend_from_slice(&(b.len() as u32).to_le_bytes());
        self.buf.extend_from_slice(b);
    }

    fn u64(&mut self, v: u64) {
        self.buf.extend_from_slice(&v.to_le_bytes());
    }

    fn push(&mut self, ns: &str, writes: &[Write]) {
        self.submissions += 1;
        self.bytes(ns.as_bytes());
        self.buf
            .extend_from_slice(&(writes.len() as u32).to_le_bytes());
        for w in writes {
            match w {
                Write::Put { key, value } => {
                    self.buf.push(0);
                    self.bytes(key.as_bytes());
                    self.bytes(value);
                }
                Write::Delete { key } => {
                    self.buf.push(1);
                    self.bytes(key.as_bytes());
                }
                Write::Append {
                    log,
                    first,
                    records,
                } => {
                    self.buf.push(2);
                    self.bytes(log.as_bytes());
                    self.u64(*first);
                    self.buf
                        .extend_from_slice(&(records.len() as u32).to_le_bytes());
                    for r in records {
                        self.bytes(r);
                    }
                }
                Write::TruncateFrom { log, index } => {
                    self.buf.push(3);
                    self.bytes(log.as_bytes());
                    self.u64(*index);
                }
                Write::TruncateBefore { log, index } => {
                    self.buf.push(4);
                    self.bytes(log.as_bytes());
                    self.u64(*index);
                }
            }
        }
    }

    fn finish(mut self) -> Vec<u8> {
        self.buf[1..5].copy_from_slice(&self.submissions.to_le_bytes());
        self.buf
    }
}

struct Decoder<'a> {
    buf: &'a [u8],
}

impl<'a> Decoder<'a> {
    fn take(&mut self, n: usize) -> Result<&'a [u8], String> {
        if self.buf.len() < n {
            return Err(format!(
                "truncated: {n} bytes wanted, {} left",
                self.buf.len()
            ));
        }
        let (a, b) = self.buf.split_at(n);
        self.buf = b;
        Ok(a)
    }
    fn u8(&mut self) -> Result<u8, String> {
        Ok(self.take(1)?[0])
    }
    fn u32(&mut self) -> Result<u32, String> {
        let b = self.take(4)?;
        Ok(u32::from_le_bytes([b[0], b[1], b[2], b[3]]))
    }
    fn u64(&mut self) -> Result<u64, String> {
        let mut a = [0u8; 8];
        a.copy_from_slice(self.take(8)?);
        Ok(u64::from_le_bytes(a))
    }
    fn bytes(&mut self) -> Result<Vec<u8>, String> {
        let n = self.u32()? as usize;
        Ok(self.take(n)?.to_vec())
    }
    fn string(&mut self) -> Result<String, String> {
        String::from_utf8(self.bytes()?).map_err(|e| e.to_string())
    }
    /// A count of items each at least `min` bytes long, checked against
    /// what is left (a corrupt count must not reserve gigabytes).
    fn count(&mut self, min: usize) -> Result<usize, String> {
        let n = self.u32()? as usize;
        if n.saturating_mul(min) > self.buf.len() {
            return Err(format!(
                "count {n} exceeds the {} bytes left",
                self.buf.len()
            ));
        }
        Ok(n)
    }
}

/// The submissions of one journal entry, in order.
fn decode_group(buf: &[u8]) -> Result<Vec<(String, Vec<Write>)>, String> {
    let mut d = Decoder { buf };
    let format = d.u8()?;
    if format != GROUP_FORMAT {
        return Err(format!("unknown format {format}"));
    }
    let n = d.count(8)?;
    let mut group = Vec::with_capacity(n);
    for _ in 0..n {
        let ns = d.string()?;
        let m = d.count(5)?;
        let mut writes = Vec::with_capacity(m);
        for _ in 0..m {
            let w = match d.u8()? {
                0 => Write::Put {
                    key: d.string()?,
                    value: d.bytes()?,
                },
                1 => Write::Delete { key: d.string()? },
                2 => {
                    let log = d.string()?;
                    let first = d.u64()?;
                    let r = d.count(4)?;
                    let mut records = Vec::with_capacity(r);
                    for _ in 0..r {
                        records.push(d.bytes()?);
                    }
                    Write::Append {
                        log,
                        first,
                        records,
                    }
                }
                3 => Write::TruncateFrom {
                    log: d.string()?,
                    index: d.u64()?,
                },
                4 => Write::TruncateBefore {
                    log: d.string()?,
                    index: d.u64()?,
                },
                t => return Err(format!("unknown write tag {t}")),
            };
            writes.push(w);
        }
        group.push((ns, writes));
    }
    if !d.buf.is_empty() {
        return Err(format!("{} bytes after the last submission", d.buf.len()));
    }
    Ok(group)
}

#[cfg(test)]
mod tests {
    use super::super::contract;
    use super::*;

    fn dir() -> PathBuf {
        std::env::temp_dir().join(format!("troupe-redb-{}", uuid::Uuid::new_v4()))
    }

    #[test]
    fn redb_store_keeps_the_contract_and_survives_reopening() {
        let d = dir();
        {
            let s = RedbStore::open_dir(&d).unwrap();
            futures::executor::block_on(contract::exercise(&s));
            futures::executor::block_on(s.submit("z", vec![contract::append("log", 10, 5)]).wait())
                .unwrap();
        }
        let s = RedbStore::open_dir(&d).unwrap();
        let z = s.load("z").unwrap();
        assert_eq!(z.log_bounds("log"), Some((10, 14)));
        let recs: Vec<u64> = z
            .log("log")
            .map(|(_, r)| u64::from_le_bytes(r.try_into().unwrap()))
            .collect();
        assert_eq!(recs, vec![10, 11, 12, 13, 14]);
        // The namespace "a" is not a prefix match of "ab" and the reverse.
        assert_eq!(s.load("a").unwrap().log_bounds("log"), Some((2, 4)));
        drop(s);
        let _ = std::fs::remove_dir_all(&d);
    }

    #[test]
    fn a_second_store_on_the_same_directory_is_refused_with_the_path() {
        let d = dir();
        let _s = RedbStore::open_dir(&d).unwrap();
        let e = RedbStore::open_dir(&d).unwrap_err().to_string();
        assert!(
            e.contains("troupe.redb") && e.contains("already open"),
            "{e}"
        );
        let _ = std::fs::remove_dir_all(&d);
    }

    #[test]
    fn submissions_waiting_during_a_commit_share_the_next_one() {
        let d = dir();
        let s = RedbStore::open_dir(&d).unwrap();
        let waits: Vec<Completion> = (0..200u64)
            .map(|i| {
                s.submit(
                    &format!("w{}", i % 8),
                    vec![contract::put("k", &i.to_le_bytes())],
                )
            })
            .collect();
        let reports: Vec<SyncReport> = futures::executor::block_on(async {
            let mut v = Vec::new();
            for w in waits {
                v.push(w.wait().await.unwrap());
            }
            v
        });
        let st = s.stats();
        assert_eq!(st.submissions, 200);
        assert!(
            st.syncs < 200 && st.max_group > 1,
            "200 submissions queued at once must be grouped: {st:?}"
        );
        assert!(
            reports.windows(2).all(|w| w[0].sync <= w[1].sync),
            "answered in order"
        );
        drop(s);
        let _ = std::fs::remove_dir_all(&d);
    }

    fn wait(c: Completion) -> Result<SyncReport, DurableError> {
        futures::executor::block_on(c.wait())
    }

    fn journal_entries(s: &RedbStore) -> Vec<u64> {
        let txn = s.journal.begin_read().unwrap();
        let j = txn.open_table(JOURNAL).unwrap();
        j.iter().unwrap().map(|x| x.unwrap().0.value()).collect()
    }

    #[test]
    fn the_contract_holds_whether_the_journal_folds_after_every_group_or_never() {
        for fold_bytes in [1, usize::MAX] {
            let d = dir();
            std::fs::create_dir_all(&d).unwrap();
            let path = d.join(RedbStore::FILE_NAME);
            {
                let s = RedbStore::open_with_fold_bytes(&path, fold_bytes).unwrap();
                futures::executor::block_on(contract::exercise(&s));
                if fold_bytes == 1 {
                    s.wait_folded();
                }
                let folds = s.stats().folds;
                if fold_bytes == 1 {
                    assert!(folds >= 1, "folds on every group that arrives");
                } else {
                    assert_eq!(folds, 0);
                }
                // Appends after the folds (or on the journal alone) follow the
                // log as it is now: (2, 4).
                let e = wait(s.submit("a", vec![contract::append("log", 4, 1)])).unwrap_err();
                assert!(
                    matches!(e, DurableError::NotContiguous { last: 4, .. }),
                    "{e}"
                );
                wait(s.submit("a", vec![contract::append("log", 5, 2)])).unwrap();
                assert_eq!(s.load("a").unwrap().log_bounds("log"), Some((2, 6)));
                if fold_bytes == 1 {
                    s.wait_folded();
                }
                let left = journal_entries(&s);
                if fold_bytes == 1 {
                    // The commit after a fold deletes what it folded.
                    wait(s.submit("c", vec![contract::put("k", b"x")])).unwrap();
                    let now = journal_entries(&s);
                    assert!(
                        now.len() <= 2 && now.iter().all(|e| *e > 5),
                        "{left:?} {now:?}"
                    );
                } else {
                    assert_eq!(left, vec![1, 2, 3, 4, 5]);
                }
            }
            // Reopening folds whatever the journal still holds.
            let s = RedbStore::open_with_fold_bytes(&path, fold_bytes).unwrap();
            assert!(journal_entries(&s).is_empty());
            let a = s.load("a").unwrap();
            assert_eq!(a.log_bounds("log"), Some((2, 6)));
            assert_eq!(a.get("term"), None);
            assert_eq!(s.load("b").unwrap().get("term"), Some(&b"9"[..]));
            wait(s.submit("a", vec![contract::append("log", 7, 1)])).unwrap();
            assert_eq!(s.load("a").unwrap().log_bounds("log"), Some((2, 7)));
            drop(s);
            let _ = std::fs::remove_dir_all(&d);
        }
    }

    #[test]
    fn a_load_sees_the_tables_and_the_journal_in_order() {
        let d = dir();
        let path = d.join(RedbStore::FILE_NAME);
        std::fs::create_dir_all(&d).unwrap();
        {
            // The tables get 1..=10 and k = 1.
            let s = RedbStore::open_with_fold_bytes(&path, 1).unwrap();
            wait(s.submit(
                "p",
                vec![contract::append("log", 1, 10), contract::put("k", b"1")],
            ))
            .unwrap();
            s.wait_folded();
            assert_eq!(s.stats().folds, 1);
        }
        // Never folds: the rest stays in the journal, and the writer learns
        // the log's bounds from the tables.
        let s = RedbStore::open_with_fold_bytes(&path, usize::MAX).unwrap();
        wait(s.submit(
            "p",
            vec![
                Write::TruncateFrom {
                    log: "log".into(),
                    index: 8,
                },
                contract::append("log", 8, 5),
                Write::TruncateBefore {
                    log: "log".into(),
                    index: 3,
                },
                contract::put("k", b"2"),
            ],
        ))
        .unwrap();
        wait(s.submit("q", vec![contract::put("k", b"other")])).unwrap();
        let e = wait(s.submit("p", vec![contract::append("log", 14, 1)])).unwrap_err();
        assert!(
            matches!(e, DurableError::NotContiguous { last: 12, .. }),
            "{e}"
        );
        assert_eq!(journal_entries(&s).len(), 2);
        let p = s.load("p").unwrap();
        assert_eq!(p.log_bounds("log"), Some((3, 12)));
        assert_eq!(p.get("k"), Some(&b"2"[..]));
        let recs: Vec<u64> = p
            .log("log")
            .map(|(_, r)| u64::from_le_bytes(r.try_into().unwrap()))
            .collect();
        assert_eq!(recs, vec![3, 4, 5, 6, 7, 8, 9, 10, 11, 12]);
        assert_eq!(s.load("q").unwrap().get("k"), Some(&b"other"[..]));
        drop(s);
        let _ = std::fs::remove_dir_all(&d);
    }

    #[test]
    fn the_writer_forgets_folded_logs_and_asks_the_tables_again() {
        let d = dir();
        let s = RedbStore::open_with_fold_bytes(
            {
                std::fs::create_dir_all(&d).unwrap();
                d.join(RedbStore::FILE_NAME)
            },
            1,
        )
        .unwrap();
        let n = BOUNDS_KEPT as u64 + 100;
        let waits: Vec<Completion> = (0..n)
            .map(|i| s.submit(&format!("p{i}"), vec![contract::append("log", 1, 1)]))
            .collect();
        for w in waits {
            wait(w).unwrap();
        }
        s.wait_folded();
        // This commit forgets every folded log.
        wait(s.submit("other", vec![contract::put("k", b"v")])).unwrap();
        for i in [0, n / 2, n - 1] {
            let ns = format!("p{i}");
            let e = wait(s.submit(&ns, vec![contract::append("log", 3, 1)])).unwrap_err();
            assert!(
                matches!(e, DurableError::NotContiguous { last: 1, .. }),
                "{e}"
            );
            wait(s.submit(&ns, vec![contract::append("log", 2, 1)])).unwrap();
            assert_eq!(s.load(&ns).unwrap().log_bounds("log"), Some((1, 2)));
        }
        drop(s);
        let _ = std::fs::remove_dir_all(&d);
    }

    #[test]
    fn a_journal_entry_that_does_not_decode_stops_the_open_and_says_which() {
        let d = dir();
        std::fs::create_dir_all(&d).unwrap();
        let path = d.join(RedbStore::FILE_NAME);
        {
            let s = RedbStore::open_with_fold_bytes(&path, usize::MAX).unwrap();
            wait(s.submit("p", vec![contract::put("k", b"1")])).unwrap();
        }
        {
            let db = Database::create(RedbStore::journal_path(&path)).unwrap();
            let txn = db.begin_write().unwrap();
            txn.open_table(JOURNAL)
                .unwrap()
                .insert(7, &[GROUP_FORMAT, 9, 0, 0, 0][..])
                .unwrap();
            txn.commit().unwrap();
        }
        let e = RedbStore::open(&path).unwrap_err().to_string();
        assert!(
            e.contains("journal entry 7") && e.contains("troupe.redb"),
            "{e}"
        );
        let _ = std::fs::remove_dir_all(&d);
    }

    #[test]
    fn groups_encode_and_decode_every_write_and_refuse_garbage() {
        let writes = vec![
            contract::put("k", b"v"),
            Write::Delete { key: "gone".into() },
            Write::Append {
                log: "l".into(),
                first: u64::MAX - 3,
                records: vec![vec![], vec![0xff; 300]],
            },
            Write::Append {
                log: "empty".into(),
                first: 9,
                records: vec![],
            },
            Write::TruncateFrom {
                log: "l".into(),
                index: 4,
            },
            Write::TruncateBefore {
                log: "l".into(),
                index: 2,
            },
        ];
        let mut g = GroupEncoder::new();
        g.push("ns-1", &writes);
        g.push("", &[]);
        g.push("ns-ü", &writes[..1]);
        let bytes = g.finish();
        let back = decode_group(&bytes).unwrap();
        assert_eq!(
            back,
            vec![
                ("ns-1".to_string(), writes.clone()),
                (String::new(), vec![]),
                ("ns-ü".to_string(), writes[..1].to_vec()),
            ]
        );
        for cut in 0..bytes.len() {
            assert!(decode_group(&bytes[..cut]).is_err(), "cut at {cut}");
        }
        let mut extra = bytes.clone();
        extra.push(0);
        assert!(decode_group(&extra).is_err());
        let mut huge = bytes;
        huge[1..5].copy_from_slice(&u32::MAX.to_le_bytes());
        assert!(decode_group(&huge).unwrap_err().contains("exceeds"));
    }
}
