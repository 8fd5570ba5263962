//! [`MemoryStore`]: the durable store kept in memory.
//!
//! Submissions are applied and acknowledged at once, in submission order.
//! Clones share the data: a simulation keeps one clone per node across the
//! node's crashes, so a restarted node finds what it wrote (its "disk").

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};

use super::{
    Completion, Counters, DurableError, DurableStore, Recovered, StoreStats, SyncReport, Write,
};

/// In-memory durable store (see the module docs). Cheap to clone.
#[derive(Clone, Default)]
pub struct MemoryStore {
    inner: Arc<Inner>,
}

#[derive(Default)]
struct Inner {
    spaces: Mutex<BTreeMap<String, Recovered>>,
    counters: Counters,
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
    fn spaces(&self) -> std::sync::MutexGuard<'_, BTreeMap<String, Recovered>> {
        // Applying is all-or-nothing before anything is mutated, so a
        // poisoned lock still guards a consistent map.
        self.inner.spaces.lock().unwrap_or_else(|p| p.into_inner())
    }
}

impl DurableStore for MemoryStore {
    fn load(&self, ns: &str) -> Result<Recovered, DurableError> {
        Ok(self.spaces().get(ns).cloned().unwrap_or_default())
    }
    fn submit(&self, ns: &str, writes: Vec<Write>) -> Completion {
        let mut spaces = self.spaces();
        let space = match spaces.get_mut(ns) {
            Some(s) => s,
            None => spaces.entry(ns.to_string()).or_default(),
        };
        // Counted before the records move into the store.
        let (n, records, bytes) = Counters::measure(writes.iter());
        match space.apply_owned(writes) {
            Ok(()) => {
                let sync = self.inner.counters.synced_measured(1, n, records, bytes);
                Completion::Done(Ok(SyncReport {
                    sync,
                    group: 1,
                    writes: n as usize,
                }))
            }
            Err(e) => {
                self.inner.counters.failed(1);
                Completion::Done(Err(e))
            }
        }
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
        let t = s.clone();
        let _ = s.submit("x", vec![super::super::contract::put("k", b"v")]);
        assert_eq!(t.load("x").unwrap().get("k"), Some(&b"v"[..]));
    }
}
