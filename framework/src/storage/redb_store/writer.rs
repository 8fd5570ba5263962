//! The writer thread: one journal commit per group, then the answers, in
//! order.

use super::*;

pub(super) type Submission = (String, Vec<Write>, Answer);

/// The `log` table, read.
pub(super) type LogTable = redb::ReadOnlyTable<(&'static str, &'static str, u64), &'static [u8]>;

/// What the writer knows of a log since the last time it asked the tables.
#[derive(Clone, Copy)]
pub(super) struct Known {
    pub(super) bounds: LogBounds,
    /// The last journal entry that wrote the log.
    pub(super) entry: u64,
}

/// The writer thread (see the module docs).
pub(super) struct Writer {
    pub(super) journal: Arc<Database>,
    pub(super) tables: Arc<Database>,
    pub(super) counters: Arc<Counters>,
    /// The journal's file.
    pub(super) path: PathBuf,
    pub(super) folding: Arc<Folding>,
    pub(super) to_folder: Option<mpsc::Sender<ToFold>>,
    pub(super) folder: Option<JoinHandle<()>>,
    /// Wait while the folder has more than this to fold.
    pub(super) backlog_limit: usize,
    /// The bounds of logs, by namespace then log, as the journal leaves
    /// them. A log missing here has all its writes folded, so the tables
    /// have its bounds.
    pub(super) bounds: HashMap<String, HashMap<String, Known>>,
    /// Logs in `bounds`.
    pub(super) kept: usize,
    /// Forget folded logs once `kept` exceeds this.
    pub(super) forget_at: usize,
    /// Key of the next journal entry.
    pub(super) next_entry: u64,
    /// Journal entries up to this one are deleted.
    pub(super) deleted: u64,
    /// Where answers go out, in order.
    pub(super) answers: Answers,
    /// The last group's encoding buffer, for the next one.
    pub(super) buffer: Vec<u8>,
    /// Why the store takes no more writes: a journal commit failed, after
    /// which redb refuses write transactions until the file is reopened.
    pub(super) broken: Option<DurableError>,
    /// Most submissions per commit: [`MAX_GROUP`], or 1 without group
    /// commit.
    pub(super) max_group: usize,
}

impl Writer {
    pub(super) fn run(mut self, rx: mpsc::Receiver<Job>) {
        while let Ok(first) = rx.recv() {
            self.wait_for_folder();
            let mut jobs = vec![first];
            while jobs.len() < self.max_group {
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
    pub(super) fn wait_for_folder(&mut self) {
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
    pub(super) fn group(&mut self, jobs: Vec<Job>) {
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
    pub(super) fn bounds_of(
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
    pub(super) fn commit(
        &mut self,
        all: Vec<Submission>,
    ) -> Vec<(Answer, Result<SyncReport, DurableError>)> {
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
    pub(super) fn forget(&mut self, folded: u64) {
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
    pub(super) fn failed(
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
pub(super) struct Answers {
    pub(super) queue: Option<mpsc::Sender<Batch>>,
    /// Batches handed to the answering thread and not yet delivered.
    pub(super) pending: Arc<std::sync::atomic::AtomicUsize>,
    pub(super) thread: Option<JoinHandle<()>>,
}

pub(super) type Batch = (
    Vec<(Answer, Result<SyncReport, DurableError>)>,
    Vec<mpsc::SyncSender<()>>,
);

/// Groups up to this size are answered by the writer itself when the
/// answering thread is idle.
pub(super) const ANSWER_INLINE: usize = 8;

impl Answers {
    pub(super) fn start() -> std::io::Result<Self> {
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

    pub(super) fn answer(
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

pub(super) fn deliver(
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
