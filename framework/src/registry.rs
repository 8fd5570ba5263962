//! The node's registry of named local actors.
//!
//! Maps an actor name to the handlers of its *current* instance (a restart
//! replaces them). Lookups are lock-free reads of a [`dashmap::DashMap`], so
//! handles resolve names without a round trip through the node actor.
//! Names are claimed when an actor is first spawned and released only when it
//! is removed for good, so a restarting actor keeps its name.
//!
//! The registry also tells when an actor *ends* — stops for good, with no
//! restart to come ([`Registry::ended_events`]): its name is released (a
//! `Temporary` child exited, `stop_actor`, its subtree was removed), a
//! `Transient` child exited normally, or its supervisor gave up with
//! `on_give_up = "stop"`. The reason is the last exit reason its supervisor
//! saw ([`ExitReason::Shutdown`] when it was stopped on purpose). The
//! receptionist and death-watch build on this.

use std::collections::BTreeMap;
use std::sync::Arc;

use dashmap::DashMap;
use tokio::sync::broadcast;

use crate::remote::ErasedHandler;
use crate::supervision::ExitReason;

/// An actor of this node stopped for good (see the module docs).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ActorEnded {
    /// The actor's name.
    pub name: String,
    /// Its last exit reason as its supervisor saw it.
    pub reason: ExitReason,
}

/// The handlers of one running actor instance.
pub(crate) struct ActorEntry {
    pub(crate) handlers: BTreeMap<&'static str, Arc<dyn ErasedHandler>>,
    pub(crate) generation: u64,
    /// The typed `Addr<A>` of the running instance.
    pub(crate) addr: Arc<dyn std::any::Any + Send + Sync>,
}

/// Named local actors of one node. Cheap to clone (shared).
#[derive(Clone)]
pub struct Registry {
    live: Arc<DashMap<String, Arc<ActorEntry>>>,
    claimed: Arc<DashMap<String, ()>>,
    /// The last exit reason of each actor that exited and was not started
    /// again since.
    last_exit: Arc<DashMap<String, ExitReason>>,
    /// Claimed names whose actor ended without being released.
    ended: Arc<DashMap<String, ExitReason>>,
    ends: broadcast::Sender<ActorEnded>,
}

impl Default for Registry {
    fn default() -> Self {
        Self {
            live: Arc::default(),
            claimed: Arc::default(),
            last_exit: Arc::default(),
            ended: Arc::default(),
            ends: broadcast::channel(1024).0,
        }
    }
}

impl Registry {
    /// An empty registry.
    pub fn new() -> Self {
        Self::default()
    }
    /// Subscribe to actors ending for good (see the module docs). A
    /// receiver more than 1024 events behind loses the oldest
    /// (`RecvError::Lagged`): check [`Registry::exists`] then.
    pub fn ended_events(&self) -> broadcast::Receiver<ActorEnded> {
        self.ends.subscribe()
    }
    /// True if an actor of this name exists: running, or restarting (its
    /// name is claimed and it has not ended).
    pub fn exists(&self, name: &str) -> bool {
        self.claimed.contains_key(name) && !self.ended.contains_key(name)
    }
    /// Why the actor `name` ended, if it exists no more and its reason is
    /// still remembered.
    pub fn end_reason(&self, name: &str) -> Option<ExitReason> {
        self.ended
            .get(name)
            .map(|r| r.value().clone())
            .or_else(|| self.last_exit.get(name).map(|r| r.value().clone()))
    }
    /// Note why `name` exited (called by its supervisor before it decides
    /// whether to restart it).
    pub(crate) fn note_exit(&self, name: &str, reason: &ExitReason) {
        self.last_exit.insert(name.to_string(), reason.clone());
    }
    /// The actor `name` ended without its name being released.
    pub(crate) fn end(&self, name: &str) {
        if !self.claimed.contains_key(name) || self.ended.contains_key(name) {
            return;
        }
        let reason = self
            .last_exit
            .get(name)
            .map(|r| r.value().clone())
            .unwrap_or(ExitReason::Shutdown);
        self.ended.insert(name.to_string(), reason.clone());
        let _ = self.ends.send(ActorEnded {
            name: name.to_string(),
            reason,
        });
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
        let was_claimed = self.claimed.remove(name).is_some();
        self.live.remove(name);
        let ended = self.ended.remove(name).map(|(_, r)| r);
        let last = self.last_exit.remove(name).map(|(_, r)| r);
        if was_claimed && ended.is_none() {
            let _ = self.ends.send(ActorEnded {
                name: name.to_string(),
                reason: last.unwrap_or(ExitReason::Shutdown),
            });
        }
    }
    pub(crate) fn insert(&self, name: &str, entry: Arc<ActorEntry>) {
        self.last_exit.remove(name);
        self.ended.remove(name);
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
