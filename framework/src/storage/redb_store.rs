//! [`RedbStore`]: the durable store on disk, one redb file per node, with
//! group commit.
//!
//! Layout: table `kv` maps `(namespace, key)` to a value; table `log` maps
//! `(namespace, log, index)` to a record, so a log is a contiguous key range
//! and its bounds are its first and last keys.
//!
//! A single writer thread owns every write transaction. It takes the
//! submissions waiting in its queue (up to [`MAX_GROUP`]), checks each one
//! against the state the transaction sees (an append must follow its log),
//! applies the valid ones, commits once — one fsync, redb's checksummed
//! one-phase commit — and only then answers them. Submissions that arrive
//! during a commit wait for the next one: that is the group commit, and its
//! size is reported per submission ([`SyncReport::group`]) and in the stats.
//! A refused submission is answered with its error and nothing of it is
//! applied; a failed commit fails every submission of its group.

use std::path::{Path, PathBuf};
use std::sync::mpsc;
use std::sync::Arc;
use std::thread::JoinHandle;

use redb::{Database, ReadableDatabase, ReadableTable, TableDefinition};
use tokio::sync::oneshot;

use super::{
    Completion, Counters, DurableError, DurableStore, Recovered, StoreStats, SyncReport, Write,
};
use crate::sansio::check_writes;

const KV: TableDefinition<(&str, &str), &[u8]> = TableDefinition::new("kv");
const LOG: TableDefinition<(&str, &str, u64), &[u8]> = TableDefinition::new("log");

/// Most submissions made durable by one commit.
pub const MAX_GROUP: usize = 4096;

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

/// The durable store in a redb file (see the module docs).
pub struct RedbStore {
    path: PathBuf,
    db: Arc<Database>,
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

impl RedbStore {
    /// The file name of the store inside a node's data directory.
    pub const FILE_NAME: &'static str = "troupe.redb";

    /// Open (or create) the store of data directory `dir`
    /// (`dir/troupe.redb`), creating the directory if needed.
    pub fn open_dir(dir: impl AsRef<Path>) -> Result<Self, DurableError> {
        let dir = dir.as_ref();
        std::fs::create_dir_all(dir).map_err(|e| store_err(dir, e))?;
        Self::open(dir.join(Self::FILE_NAME))
    }

    /// Open (or create) the store in file `path`.
    pub fn open(path: impl Into<PathBuf>) -> Result<Self, DurableError> {
        let path = path.into();
        let db = Database::create(&path).map_err(|e| match e {
            redb::DatabaseError::DatabaseAlreadyOpen => store_err(
                &path,
                "already open (is another node using this data directory?)",
            ),
            e => store_err(&path, e),
        })?;
        let txn = db.begin_write().map_err(|e| store_err(&path, e))?;
        {
            txn.open_table(KV).map_err(|e| store_err(&path, e))?;
            txn.open_table(LOG).map_err(|e| store_err(&path, e))?;
        }
        txn.commit().map_err(|e| store_err(&path, e))?;
        let db = Arc::new(db);
        let counters = Arc::new(Counters::default());
        let (tx, rx) = mpsc::channel();
        let writer = {
            let writer = Writer {
                db: db.clone(),
                counters: counters.clone(),
                path: path.clone(),
            };
            std::thread::Builder::new()
                .name("troupe-store".into())
                .spawn(move || writer.run(rx))
                .map_err(|e| store_err(&path, e))?
        };
        Ok(Self {
            path,
            db,
            jobs: Some(tx),
            writer: Some(writer),
            counters,
        })
    }

    /// The database file.
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
        let txn = self.db.begin_read().map_err(|x| e(&x))?;
        let kv = txn.open_table(KV).map_err(|x| e(&x))?;
        let mut keys = std::collections::BTreeMap::new();
        for item in kv.range((ns, "")..).map_err(|x| e(&x))? {
            let (k, v) = item.map_err(|x| e(&x))?;
            let (space, key) = k.value();
            if space != ns {
                break;
            }
            keys.insert(key.to_string(), v.value().to_vec());
        }
        let log = txn.open_table(LOG).map_err(|x| e(&x))?;
        let mut logs: std::collections::BTreeMap<String, std::collections::BTreeMap<u64, Vec<u8>>> =
            std::collections::BTreeMap::new();
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
        Ok(Recovered::from_parts(keys, logs))
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

struct Writer {
    db: Arc<Database>,
    counters: Arc<Counters>,
    path: PathBuf,
}

impl Writer {
    fn run(self, rx: mpsc::Receiver<Job>) {
        while let Ok(first) = rx.recv() {
            let mut jobs = vec![first];
            while jobs.len() < MAX_GROUP {
                match rx.try_recv() {
                    Ok(j) => jobs.push(j),
                    Err(_) => break,
                }
            }
            self.group(jobs);
        }
    }

    /// Make one group of jobs durable with one commit, then answer them.
    fn group(&self, jobs: Vec<Job>) {
        let mut submits = Vec::new();
        let mut barriers = Vec::new();
        for j in jobs {
            match j {
                Job::Submit { ns, writes, done } => submits.push((ns, writes, done)),
                Job::Barrier(b) => barriers.push(b),
            }
        }
        if !submits.is_empty() {
            match self.commit(&mut submits) {
                Ok(accepted) => {
                    let n = accepted.len();
                    let writes: usize = accepted.iter().map(|(_, w, _)| w.len()).sum();
                    if n > 0 {
                        let sync = self
                            .counters
                            .synced(n, accepted.iter().flat_map(|(_, w, _)| w.iter()));
                        for (_, _, done) in accepted {
                            let _ = done.send(Ok(SyncReport {
                                sync,
                                group: n,
                                writes,
                            }));
                        }
                    }
                }
                Err((e, accepted)) => {
                    tracing::error!(store = %self.path.display(), error = %e, "durable store commit failed");
                    self.counters.failed(accepted.len());
                    for (_, _, done) in accepted {
                        let _ = done.send(Err(e.clone()));
                    }
                }
            }
        }
        for b in barriers {
            let _ = b.send(());
        }
    }

    /// Apply every valid submission in one transaction and commit it.
    /// Refused submissions are answered here; the accepted ones are returned
    /// for the caller to answer once the commit's outcome is known.
    #[allow(clippy::type_complexity)]
    fn commit(
        &self,
        submits: &mut Vec<(String, Vec<Write>, Answer)>,
    ) -> Result<Vec<(String, Vec<Write>, Answer)>, (DurableError, Vec<(String, Vec<Write>, Answer)>)>
    {
        let all = std::mem::take(submits);
        let e = |x: &dyn std::fmt::Display| store_err(&self.path, x);
        let txn = match self.db.begin_write() {
            Ok(t) => t,
            Err(x) => return Err((e(&x), all)),
        };
        let mut accepted = Vec::with_capacity(all.len());
        {
            let (mut kv, mut log) = match (txn.open_table(KV), txn.open_table(LOG)) {
                (Ok(k), Ok(l)) => (k, l),
                (Err(x), _) | (_, Err(x)) => return Err((e(&x), all)),
            };
            for (ns, writes, done) in all {
                let checked = check_writes(&writes, |name| {
                    let mut r = log
                        .range((ns.as_str(), name, 0u64)..=(ns.as_str(), name, u64::MAX))
                        .map_err(|x| e(&x))?;
                    let first = r.next().transpose().map_err(|x| e(&x))?;
                    let last = r.next_back().transpose().map_err(|x| e(&x))?;
                    Ok(first.map(|(f, _)| {
                        let f = f.value().2;
                        (f, last.map_or(f, |(l, _)| l.value().2))
                    }))
                });
                if let Err(x) = checked {
                    self.counters.failed(1);
                    let _ = done.send(Err(x));
                    continue;
                }
                if let Err(x) = apply(&mut kv, &mut log, &ns, &writes) {
                    // A storage error mid-transaction: the transaction is
                    // abandoned and the whole group fails.
                    accepted.push((ns, writes, done));
                    return Err((e(&x), accepted));
                }
                accepted.push((ns, writes, done));
            }
        }
        if accepted.is_empty() {
            let _ = txn.abort();
            return Ok(accepted);
        }
        match txn.commit() {
            Ok(()) => Ok(accepted),
            Err(x) => Err((e(&x), accepted)),
        }
    }
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
}
