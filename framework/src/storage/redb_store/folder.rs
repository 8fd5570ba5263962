//! The folder thread: folds committed groups into the tables, off the
//! writer's path.

use super::*;

/// What the writer and the folder share.
pub(super) struct Folding {
    /// The last journal entry the tables hold (committed there).
    pub(super) folded: AtomicU64,
    /// Journal bytes handed to the folder and not folded yet.
    pub(super) backlog: Mutex<usize>,
    /// Signalled when the backlog shrinks or folding breaks.
    pub(super) drained: Condvar,
    /// Why folding stopped: then the store takes no more writes.
    pub(super) broken: Mutex<Option<DurableError>>,
}

impl Folding {
    pub(super) fn broken(&self) -> Option<DurableError> {
        self.broken
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
    }
    pub(super) fn backlog(&self) -> std::sync::MutexGuard<'_, usize> {
        self.backlog.lock().unwrap_or_else(|p| p.into_inner())
    }
}

/// A committed group on its way to the folder.
pub(super) struct ToFold {
    pub(super) entry: u64,
    pub(super) bytes: usize,
    pub(super) group: Vec<(String, Vec<Write>)>,
}

/// The folder thread (see the module docs).
pub(super) struct Folder {
    pub(super) tables: Arc<Database>,
    pub(super) counters: Arc<Counters>,
    pub(super) path: PathBuf,
    pub(super) folding: Arc<Folding>,
    pub(super) fold_bytes: usize,
}

impl Folder {
    pub(super) fn run(self, rx: mpsc::Receiver<ToFold>) {
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
