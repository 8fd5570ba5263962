//! The node's registry of named local actors.
//!
//! Maps an actor name to the handlers of its *current* instance (a restart
//! replaces them). Lookups are lock-free reads of a [`dashmap::DashMap`], so
//! handles resolve names without a round trip through the node actor.
//! Names are claimed when an actor is first spawned and released only when it
//! is removed for good, so a restarting actor keeps its name.

use std::collections::BTreeMap;
use std::sync::Arc;

use dashmap::DashMap;

use crate::remote::ErasedHandler;

/// The handlers of one running actor instance.
pub(crate) struct ActorEntry {
    pub(crate) handlers: BTreeMap<&'static str, Arc<dyn ErasedHandler>>,
    pub(crate) generation: u64,
    /// The typed `Addr<A>` of the running instance.
    pub(crate) addr: Arc<dyn std::any::Any + Send + Sync>,
}

/// Named local actors of one node. Cheap to clone (shared).
#[derive(Clone, Default)]
pub struct Registry {
    live: Arc<DashMap<String, Arc<ActorEntry>>>,
    claimed: Arc<DashMap<String, ()>>,
}

impl Registry {
    /// An empty registry.
    pub fn new() -> Self {
        Self::default()
    }
    /// Claim `name`; false if another actor holds it.
    pub(crate) fn claim(&self, name: &str) -> bool {
        use dashmap::mapref::entry::Entry;
        match self.claimed.entry(name.to_string()) {
            Entry::Occupied(_) => false,
            Entry::Vacant(v) => {
                v.insert(());
                true
            }
        }
    }
    /// Release a claimed name (the actor is gone for good).
    pub(crate) fn release(&self, name: &str) {
        self.claimed.remove(name);
        self.live.remove(name);
    }
    pub(crate) fn insert(&self, name: &str, entry: Arc<ActorEntry>) {
        self.live.insert(name.to_string(), entry);
    }
    pub(crate) fn remove_if_generation(&self, name: &str, generation: u64) {
        self.live.remove_if(name, |_, e| e.generation == generation);
    }
    pub(crate) fn get(&self, name: &str) -> Option<Arc<ActorEntry>> {
        self.live.get(name).map(|e| e.value().clone())
    }
    /// The typed address of the running instance of `name`, if it is an `A`.
    pub fn typed_addr<A: actix::Actor>(&self, name: &str) -> Option<actix::Addr<A>> {
        self.get(name)
            .and_then(|e| e.addr.downcast_ref::<actix::Addr<A>>().cloned())
    }
    /// True if an instance of `name` is running now.
    pub fn is_running(&self, name: &str) -> bool {
        self.live.contains_key(name)
    }
    /// Names of the running actors, sorted.
    pub fn names(&self) -> Vec<String> {
        let mut v: Vec<String> = self.live.iter().map(|e| e.key().clone()).collect();
        v.sort();
        v
    }
}
