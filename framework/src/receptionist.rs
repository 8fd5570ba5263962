//! Cluster-wide service discovery: the receptionist (like Akka's
//! `Receptionist` or Erlang's `pg`).
//!
//! An actor is registered under a typed [`ServiceKey<M>`] on its own node
//! ([`Receptionist::register`]); any node finds every actor registered under
//! that key anywhere in the cluster ([`Receptionist::find`]) or follows the
//! set as it changes ([`Receptionist::subscribe`]). The key's type is part of
//! the key: `ServiceKey::<Deposit>::new("bank")` and
//! `ServiceKey::<Withdraw>::new("bank")` are two keys, so `find` only ever
//! hands out [`RemoteRef<M>`]s to actors registered as accepting `M`.
//!
//! # How it works
//!
//! One receptionist actor per node (named [`RECEPTIONIST_ACTOR`], supervised
//! under the node, started with [`Receptionist::start`]) owns that node's
//! local registrations. Each change of the local set bumps its *version* and
//! the whole versioned set is pushed (a tell) to every live member of the
//! membership view; it is also pushed to a peer when the peer comes `Up`
//! (with a pull of the peer's set), and sent to anyone who pulls. Every
//! `gossip_interval` the receptionist sends a digest (node, incarnation,
//! version of each set it holds) to `gossip_fanout` random live peers,
//! which pull whatever they hold older and answer with their own digest:
//! lost pushes are repaired by this anti-entropy.
//!
//! A registration is removed when its actor ends for good
//! ([`Registry::ended_events`](crate::registry::Registry::ended_events): the
//! actor was removed, a transient child exited normally, its supervisor
//! gave up with `stop`); an actor being restarted by its supervisor stays
//! registered. A node's entries are dropped everywhere when the node is
//! `Down` or `Left` in the reader's membership view, and replaced when a
//! new incarnation of it (a restarted process) sends its set; sets from an
//! incarnation seen replaced are ignored.
//!
//! # What is guaranteed
//!
//! - **Local registrations are immediate**: after `register` returns, this
//!   node's `find` lists the actor.
//! - **Eventual consistency**: once the network delivers messages between
//!   two live nodes again and no registration changes, each one's `find`
//!   lists exactly the other's registrations within about one push (a
//!   round trip), or at worst a few `gossip_interval`s after lost messages.
//!   Sets are versioned per node incarnation, so a late or duplicated push
//!   never brings back an older set of the same incarnation.
//! - **During a partition** a reader sees its own side's registrations,
//!   plus the other side's *as they were* until its failure detector
//!   declares those nodes `Down`; from then on it sees only its side. A
//!   node the detector only suspects keeps its entries. After the partition
//!   heals, both sides see each other `Up` again and exchange sets.
//! - `find` can return an actor that has just stopped (its node has not
//!   pushed yet, or the node crashed and is not `Down` yet): tells to it
//!   are lost, asks fail. Pair it with death-watch
//!   ([`crate::death_watch`]) when that matters.
//! - **Bad input is refused, the node keeps running**: a set from a peer
//!   with a malformed key, type or actor name, or too many entries, is
//!   refused whole (logged, counted in [`Receptionist::refused`]); a key
//!   registered elsewhere with another message type is simply another key.
//!
//! Not guaranteed: any order between changes of different nodes' sets, nor
//! that a subscriber sees every intermediate set (a subscription coalesces
//! changes to the latest set).

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::marker::PhantomData;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, Weak};
use std::time::Duration;

use actix::prelude::*;
use futures::Stream;
use rand::seq::SliceRandom;
use rand::SeedableRng;
use serde::{Deserialize, Serialize};
use tokio::sync::{broadcast, watch};
use uuid::Uuid;

use crate::error::NodeError;
use crate::ids::{validate_name, ActorPath, NameError};
use crate::membership::MemberStatus;
use crate::remote::{RemoteMessage, Sender};
use crate::remote_ref::RemoteRef;
use crate::supervision::ActorSpec;
use crate::{Node, NodeId};

/// The receptionist's actor name on every node.
pub const RECEPTIONIST_ACTOR: &str = "receptionist";

/// Most registrations one node holds (a node's whole set travels in one
/// frame of at most 1 MiB).
pub const MAX_LOCAL_ENTRIES: usize = 2048;

/// Why a discovery, pub/sub or death-watch call was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum DiscoveryError {
    /// A service key or topic name is malformed.
    #[error(
        "service key {0:?} must be 1-128 characters of A-Z, a-z, 0-9, '.', '_', '-', ':' or '/'"
    )]
    BadKey(String),
    /// An actor name is malformed.
    #[error(transparent)]
    Name(#[from] NameError),
    /// No actor of this name exists on this node.
    #[error("no actor named {0:?} exists on this node")]
    NoSuchActor(String),
    /// The actor does not accept the key's message type (see
    /// [`ActorSpec::handles`]).
    #[error("actor {actor:?} does not accept {message:?} messages")]
    DoesNotHandle {
        /// The actor.
        actor: String,
        /// The key's message type (its wire name).
        message: String,
    },
    /// Only actors of this node can be registered here.
    #[error("{0} is not on this node: register an actor on its own node")]
    NotLocal(ActorPath),
    /// This node already holds [`MAX_LOCAL_ENTRIES`] registrations.
    #[error("this node already holds {MAX_LOCAL_ENTRIES} registrations")]
    TooMany,
    /// A peer's message was malformed and was refused.
    #[error("refused a message from {from}: {reason}")]
    Malformed {
        /// The authenticated peer.
        from: String,
        /// What was wrong.
        reason: String,
    },
    /// The service could not be started.
    #[error("could not start: {0}")]
    Start(#[from] NodeError),
}

/// Check a service key id: 1-128 characters of `[A-Za-z0-9._:/-]`.
pub fn validate_key(id: &str) -> Result<(), DiscoveryError> {
    let ok = !id.is_empty()
        && id.len() <= 128
        && id
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b'-' | b':' | b'/'));
    if ok {
        Ok(())
    } else {
        Err(DiscoveryError::BadKey(id.to_string()))
    }
}

/// A message type's wire name as a key carries it: 1-128 printable
/// characters.
fn validate_type(name: &str) -> Result<(), String> {
    if name.is_empty() || name.len() > 128 || name.chars().any(|c| c.is_control()) {
        Err(format!("bad message type name {name:?}"))
    } else {
        Ok(())
    }
}

/// A key under which actors accepting `M` are registered.
pub struct ServiceKey<M> {
    id: Arc<str>,
    _m: PhantomData<fn() -> M>,
}

impl<M> Clone for ServiceKey<M> {
    fn clone(&self) -> Self {
        Self {
            id: self.id.clone(),
            _m: PhantomData,
        }
    }
}

impl<M: RemoteMessage> std::fmt::Debug for ServiceKey<M> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "ServiceKey({:?}: {})", self.id, M::NAME)
    }
}

impl<M: RemoteMessage> ServiceKey<M> {
    /// The key `id` (1-128 characters of `[A-Za-z0-9._:/-]`) for actors
    /// accepting `M`.
    pub fn new(id: impl Into<String>) -> Result<Self, DiscoveryError> {
        let id = id.into();
        validate_key(&id)?;
        Ok(Self {
            id: id.into(),
            _m: PhantomData,
        })
    }
    /// The key's id.
    pub fn id(&self) -> &str {
        &self.id
    }
    /// The key as it travels: its id and `M`'s wire name.
    pub fn wire(&self) -> WireKey {
        WireKey {
            id: self.id.to_string(),
            msg: M::NAME.to_string(),
        }
    }
}

/// A service key without its type: the id and the message type's wire name.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct WireKey {
    /// The key's id.
    pub id: String,
    /// The wire name of the message type ([`RemoteMessage::NAME`]).
    pub msg: String,
}

/// One node's registrations, as pushed to its peers.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Snapshot {
    /// Bumped on every change of the sender's set (per incarnation).
    pub version: u64,
    /// Every key the sender holds and the actors registered under it.
    pub entries: Vec<(WireKey, Vec<String>)>,
}
crate::remote_message!(Snapshot, "troupe.receptionist.snapshot", ());

/// "Send me your set."
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Pull;
crate::remote_message!(Pull, "troupe.receptionist.pull", ());

/// Anti-entropy: the versions of every set the sender holds.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Digest {
    /// (node name, incarnation, version) of each set, the sender's own
    /// included.
    pub sets: Vec<(String, Uuid, u64)>,
    /// True for the answer to a digest (not answered again).
    pub reply: bool,
}
crate::remote_message!(Digest, "troupe.receptionist.digest", ());

/// A peer's set as this node holds it.
#[derive(Debug, Clone)]
struct RemoteSet {
    incarnation: Uuid,
    version: u64,
    entries: BTreeMap<WireKey, BTreeSet<String>>,
}

/// The receptionist's state, without any I/O: this node's registrations and
/// the sets of its peers. Every method is deterministic.
#[derive(Debug, Clone)]
pub struct Directory {
    me: String,
    incarnation: Uuid,
    version: u64,
    local: BTreeMap<WireKey, BTreeSet<String>>,
    remote: BTreeMap<String, RemoteSet>,
    /// Incarnations seen replaced by a newer one: their sets are ignored.
    retired: BTreeSet<(String, Uuid)>,
}

impl Directory {
    /// An empty directory of node `me`.
    pub fn new(me: &NodeId) -> Self {
        Self {
            me: me.name.clone(),
            incarnation: me.incarnation,
            version: 0,
            local: BTreeMap::new(),
            remote: BTreeMap::new(),
            retired: BTreeSet::new(),
        }
    }

    /// The version of this node's own set.
    pub fn version(&self) -> u64 {
        self.version
    }

    /// Number of local registrations.
    pub fn local_len(&self) -> usize {
        self.local.values().map(|s| s.len()).sum()
    }

    /// Register local `actor` under `key`; true if that is new.
    pub fn register(&mut self, key: WireKey, actor: &str) -> Result<bool, DiscoveryError> {
        validate_key(&key.id)?;
        validate_name(actor)?;
        if self.local.get(&key).is_some_and(|s| s.contains(actor)) {
            return Ok(false);
        }
        if self.local_len() >= MAX_LOCAL_ENTRIES {
            return Err(DiscoveryError::TooMany);
        }
        self.local.entry(key).or_default().insert(actor.to_string());
        self.version += 1;
        Ok(true)
    }

    /// Remove local `actor` from `key`; true if it was registered.
    pub fn unregister(&mut self, key: &WireKey, actor: &str) -> bool {
        let Some(set) = self.local.get_mut(key) else {
            return false;
        };
        let removed = set.remove(actor);
        if set.is_empty() {
            self.local.remove(key);
        }
        if removed {
            self.version += 1;
        }
        removed
    }

    /// Remove local `actor` from every key; the keys that changed.
    pub fn remove_actor(&mut self, actor: &str) -> Vec<WireKey> {
        let keys: Vec<WireKey> = self
            .local
            .iter()
            .filter(|(_, s)| s.contains(actor))
            .map(|(k, _)| k.clone())
            .collect();
        for k in &keys {
            self.unregister(k, actor);
        }
        keys
    }

    /// This node's set, to push.
    pub fn snapshot(&self) -> Snapshot {
        Snapshot {
            version: self.version,
            entries: self
                .local
                .iter()
                .map(|(k, s)| (k.clone(), s.iter().cloned().collect()))
                .collect(),
        }
    }

    /// Take `from`'s set; the keys whose listing changed. Stale sets (an
    /// older or equal version of the same incarnation, or a replaced
    /// incarnation) change nothing; malformed ones are refused whole.
    pub fn apply(&mut self, from: &NodeId, snap: Snapshot) -> Result<Vec<WireKey>, DiscoveryError> {
        let bad = |reason: String| DiscoveryError::Malformed {
            from: from.name.clone(),
            reason,
        };
        if from.name == self.me {
            return Err(bad("a set claiming to be this node's own".into()));
        }
        if self
            .retired
            .contains(&(from.name.clone(), from.incarnation))
        {
            return Ok(Vec::new());
        }
        let count: usize = snap.entries.iter().map(|(_, a)| a.len()).sum();
        if count > MAX_LOCAL_ENTRIES || snap.entries.len() > MAX_LOCAL_ENTRIES {
            return Err(bad(format!(
                "{count} registrations, more than {MAX_LOCAL_ENTRIES}"
            )));
        }
        let mut entries: BTreeMap<WireKey, BTreeSet<String>> = BTreeMap::new();
        for (key, actors) in snap.entries {
            validate_key(&key.id).map_err(|e| bad(e.to_string()))?;
            validate_type(&key.msg).map_err(bad)?;
            for a in &actors {
                validate_name(a).map_err(|e| bad(e.to_string()))?;
            }
            if !actors.is_empty() {
                entries.entry(key).or_default().extend(actors);
            }
        }
        match self.remote.get(&from.name) {
            Some(old) if old.incarnation == from.incarnation && old.version >= snap.version => {
                return Ok(Vec::new());
            }
            Some(old) if old.incarnation != from.incarnation => {
                self.retired.insert((from.name.clone(), old.incarnation));
            }
            _ => {}
        }
        let old = self.remote.insert(
            from.name.clone(),
            RemoteSet {
                incarnation: from.incarnation,
                version: snap.version,
                entries,
            },
        );
        let new = &self.remote[&from.name].entries;
        Ok(changed_keys(old.as_ref().map(|o| &o.entries), Some(new)))
    }

    /// Forget `node`'s set (it is `Down` or `Left`); the keys that changed.
    pub fn drop_node(&mut self, node: &str) -> Vec<WireKey> {
        match self.remote.remove(node) {
            Some(old) => changed_keys(Some(&old.entries), None),
            None => Vec::new(),
        }
    }

    /// Nodes whose set this directory holds.
    pub fn nodes(&self) -> Vec<String> {
        self.remote.keys().cloned().collect()
    }

    /// Every actor registered under `key` on any node known, as paths.
    pub fn find(&self, key: &WireKey) -> BTreeSet<ActorPath> {
        let mut out = BTreeSet::new();
        let local = self.local.get(key).into_iter().map(|s| (&self.me, s));
        let remote = self
            .remote
            .iter()
            .filter_map(|(n, r)| r.entries.get(key).map(|s| (n, s)));
        for (node, actors) in local.chain(remote) {
            for a in actors {
                out.insert(ActorPath {
                    node: node.clone(),
                    actor: a.clone(),
                });
            }
        }
        out
    }

    /// The versions of every set held, this node's own first.
    pub fn digest(&self) -> Vec<(String, Uuid, u64)> {
        std::iter::once((self.me.clone(), self.incarnation, self.version))
            .chain(
                self.remote
                    .iter()
                    .map(|(n, r)| (n.clone(), r.incarnation, r.version)),
            )
            .collect()
    }

    /// From a peer's digest: the nodes this directory should pull from
    /// (it holds an older set, another live incarnation, or none of them),
    /// and whether the peer holds an older set of this node's own.
    pub fn behind(&self, digest: &[(String, Uuid, u64)]) -> (Vec<String>, bool) {
        let mut pull = Vec::new();
        let mut peer_behind_on_me = true;
        for (node, inc, version) in digest {
            if *node == self.me {
                peer_behind_on_me = *inc != self.incarnation || *version < self.version;
                continue;
            }
            if self.retired.contains(&(node.clone(), *inc)) {
                continue;
            }
            let stale = match self.remote.get(node) {
                None => true,
                Some(r) => r.incarnation != *inc || r.version < *version,
            };
            if stale {
                pull.push(node.clone());
            }
        }
        (pull, peer_behind_on_me)
    }
}

/// Keys whose actor set differs between `old` and `new`.
fn changed_keys(
    old: Option<&BTreeMap<WireKey, BTreeSet<String>>>,
    new: Option<&BTreeMap<WireKey, BTreeSet<String>>>,
) -> Vec<WireKey> {
    let empty = BTreeMap::new();
    let (old, new) = (old.unwrap_or(&empty), new.unwrap_or(&empty));
    let keys: BTreeSet<&WireKey> = old.keys().chain(new.keys()).collect();
    keys.into_iter()
        .filter(|k| old.get(*k) != new.get(*k))
        .cloned()
        .collect()
}

/// Receptionist settings.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ReceptionistConfig {
    /// How often a digest goes to random peers (anti-entropy). Default 1 s.
    pub gossip_interval: Duration,
    /// How many random live peers get each round's digest. Default 2.
    pub gossip_fanout: usize,
}

impl Default for ReceptionistConfig {
    fn default() -> Self {
        Self {
            gossip_interval: Duration::from_secs(1),
            gossip_fanout: 2,
        }
    }
}

type Listing = Arc<BTreeSet<ActorPath>>;

struct Shared {
    node: Node,
    config: ReceptionistConfig,
    dir: Mutex<Directory>,
    subscribers: Mutex<HashMap<WireKey, watch::Sender<Listing>>>,
    refused: AtomicU64,
    rng: Mutex<rand::rngs::StdRng>,
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

impl Shared {
    fn peer_ref<M: RemoteMessage>(&self, node: &str) -> Option<RemoteRef<M>> {
        let path = ActorPath::new(node, RECEPTIONIST_ACTOR).ok()?;
        Some(self.node.actor_ref::<M>(path))
    }

    fn tell<M: RemoteMessage>(&self, node: &str, msg: M) {
        if let Some(r) = self.peer_ref::<M>(node) {
            if let Err(e) = r.tell(msg) {
                tracing::debug!(node = %self.node.name(), peer = node, error = %e, "receptionist: send failed");
            }
        }
    }

    /// Live members other than this node.
    fn live_peers(&self) -> Vec<String> {
        self.node
            .membership()
            .live()
            .into_iter()
            .filter(|m| m != self.node.name())
            .collect()
    }

    fn is_unreachable(&self, node: &str) -> bool {
        self.node
            .membership()
            .status(&node.to_string())
            .is_some_and(|s| !s.is_live())
    }

    /// Tell subscribers of `keys` their new listing.
    fn notify(&self, keys: &[WireKey]) {
        if keys.is_empty() {
            return;
        }
        let dir = lock(&self.dir);
        let mut subs = lock(&self.subscribers);
        subs.retain(|_, tx| tx.receiver_count() > 0);
        for k in keys {
            if let Some(tx) = subs.get(k) {
                tx.send_replace(Arc::new(dir.find(k)));
            }
        }
    }

    fn push_to(&self, node: &str) {
        let snap = lock(&self.dir).snapshot();
        self.tell(node, snap);
    }

    fn push_all(&self) {
        let snap = lock(&self.dir).snapshot();
        for p in self.live_peers() {
            self.tell(&p, snap.clone());
        }
    }

    fn local_changed(&self, keys: Vec<WireKey>) {
        if !keys.is_empty() {
            self.notify(&keys);
            self.push_all();
        }
    }

    fn on_member(&self, status: MemberStatus, member: &str) {
        if member == self.node.name() {
            return;
        }
        match status {
            MemberStatus::Up => {
                self.push_to(member);
                self.tell(member, Pull);
            }
            MemberStatus::Down | MemberStatus::Left => {
                let keys = lock(&self.dir).drop_node(member);
                self.notify(&keys);
            }
            MemberStatus::Joining | MemberStatus::Suspect => {}
        }
    }

    /// Bring everything in line with the membership view (at start, and
    /// after missing membership events).
    fn resync(&self) {
        let view = self.node.membership();
        let held = lock(&self.dir).nodes();
        let mut keys = Vec::new();
        for n in held {
            if view.status(&n).is_some_and(|s| !s.is_live()) {
                keys.extend(lock(&self.dir).drop_node(&n));
            }
        }
        self.notify(&keys);
        for p in self.live_peers() {
            self.push_to(&p);
            self.tell(&p, Pull);
        }
    }

    fn on_ended(&self, actor: &str) {
        let keys = lock(&self.dir).remove_actor(actor);
        self.local_changed(keys);
    }

    /// After missing ended events: drop registrations of actors gone.
    fn sweep(&self) {
        let registry = self.node.registry();
        let local: Vec<String> = {
            let dir = lock(&self.dir);
            dir.local.values().flatten().cloned().collect()
        };
        let mut keys = Vec::new();
        for a in local {
            if !registry.exists(&a) {
                keys.extend(lock(&self.dir).remove_actor(&a));
            }
        }
        self.local_changed(keys);
    }

    fn gossip(&self) {
        let mut peers = self.live_peers();
        if peers.is_empty() {
            return;
        }
        peers.shuffle(&mut *lock(&self.rng));
        let digest = Digest {
            sets: lock(&self.dir).digest(),
            reply: false,
        };
        for p in peers.iter().take(self.config.gossip_fanout) {
            self.tell(p, digest.clone());
        }
    }

    fn on_snapshot(&self, from: &NodeId, snap: Snapshot) {
        if self.is_unreachable(&from.name) {
            // Taken again when it is Up (it is pulled then).
            return;
        }
        let applied = lock(&self.dir).apply(from, snap);
        match applied {
            Ok(keys) => self.notify(&keys),
            Err(e) => {
                self.refused.fetch_add(1, Ordering::Relaxed);
                tracing::warn!(node = %self.node.name(), error = %e, "receptionist: refused a set");
            }
        }
    }

    fn on_digest(&self, from: &NodeId, digest: Digest) {
        if digest.sets.len() > 100_000 {
            self.refused.fetch_add(1, Ordering::Relaxed);
            tracing::warn!(node = %self.node.name(), peer = %from, "receptionist: refused an oversized digest");
            return;
        }
        let (pull, peer_behind) = lock(&self.dir).behind(&digest.sets);
        for n in pull {
            if !self.is_unreachable(&n) {
                self.tell(&n, Pull);
            }
        }
        if peer_behind {
            self.push_to(&from.name);
        }
        if !digest.reply {
            let sets = lock(&self.dir).digest();
            self.tell(&from.name, Digest { sets, reply: true });
        }
    }
}

/// The receptionist actor of a node (see the module docs). It keeps no
/// state of its own: a restart keeps the registrations.
pub struct ReceptionistActor {
    shared: Arc<Shared>,
    tasks: Vec<actix_rt::task::JoinHandle<()>>,
}

impl Actor for ReceptionistActor {
    type Context = Context<Self>;

    fn started(&mut self, ctx: &mut Context<Self>) {
        let weak = Arc::downgrade(&self.shared);
        let members = self.shared.node.subscribe_membership();
        self.tasks.push(actix_rt::spawn(follow(
            weak.clone(),
            members,
            |s, ev| s.on_member(ev.status, &ev.member),
            |s| s.resync(),
        )));
        let ended = self.shared.node.registry().ended_events();
        self.tasks.push(actix_rt::spawn(follow(
            weak,
            ended,
            |s, ev| s.on_ended(&ev.name),
            |s| s.sweep(),
        )));
        // Anything that ended or changed before this instance started.
        self.shared.sweep();
        self.shared.resync();
        ctx.run_interval(self.shared.config.gossip_interval, |act, _| {
            act.shared.gossip()
        });
    }

    fn stopped(&mut self, _: &mut Context<Self>) {
        for t in self.tasks.drain(..) {
            t.abort();
        }
    }
}

/// Run `on` for every event of a broadcast channel while `shared` lives;
/// `lagged` after missing some.
pub(crate) async fn follow<S, T: Clone>(
    shared: Weak<S>,
    mut rx: broadcast::Receiver<T>,
    on: impl Fn(&S, T),
    lagged: impl Fn(&S),
) {
    loop {
        let ev = rx.recv().await;
        let Some(s) = shared.upgrade() else { return };
        match ev {
            Ok(ev) => on(&s, ev),
            Err(broadcast::error::RecvError::Lagged(_)) => lagged(&s),
            Err(broadcast::error::RecvError::Closed) => return,
        }
    }
}

impl Handler<Sender<Snapshot>> for ReceptionistActor {
    type Result = ();
    fn handle(&mut self, m: Sender<Snapshot>, _: &mut Context<Self>) {
        self.shared.on_snapshot(&m.from, m.msg);
    }
}

impl Handler<Sender<Pull>> for ReceptionistActor {
    type Result = ();
    fn handle(&mut self, m: Sender<Pull>, _: &mut Context<Self>) {
        if m.from.name != self.shared.node.name() {
            self.shared.push_to(&m.from.name);
        }
    }
}

impl Handler<Sender<Digest>> for ReceptionistActor {
    type Result = ();
    fn handle(&mut self, m: Sender<Digest>, _: &mut Context<Self>) {
        if m.from.name != self.shared.node.name() {
            self.shared.on_digest(&m.from, m.msg);
        }
    }
}

/// A handle to a node's receptionist. Cheap to clone.
#[derive(Clone)]
pub struct Receptionist {
    shared: Arc<Shared>,
}

impl Receptionist {
    /// Start the receptionist on `node` (an actor named
    /// [`RECEPTIONIST_ACTOR`] under the node's root supervisor), with the
    /// default settings. Start it on every node of the cluster (`troupe::runtime::start_node`
    /// does, for the nodes it starts).
    pub async fn start(node: &Node) -> Result<Self, DiscoveryError> {
        Self::start_with(node, ReceptionistConfig::default()).await
    }

    /// [`Receptionist::start`] with chosen settings.
    pub async fn start_with(
        node: &Node,
        config: ReceptionistConfig,
    ) -> Result<Self, DiscoveryError> {
        if config.gossip_interval.is_zero() {
            return Err(DiscoveryError::Start(NodeError::Config(
                "receptionist gossip_interval must be positive".into(),
            )));
        }
        let seed = node.id().incarnation.as_u128() as u64;
        let shared = Arc::new(Shared {
            node: node.clone(),
            config,
            dir: Mutex::new(Directory::new(node.id())),
            subscribers: Mutex::new(HashMap::new()),
            refused: AtomicU64::new(0),
            rng: Mutex::new(rand::rngs::StdRng::seed_from_u64(seed)),
        });
        let s = shared.clone();
        let spec = ActorSpec::new(RECEPTIONIST_ACTOR, move || ReceptionistActor {
            shared: s.clone(),
            tasks: Vec::new(),
        })
        .handles_from::<Snapshot>()
        .handles_from::<Pull>()
        .handles_from::<Digest>();
        node.spawn(spec).await?;
        Ok(Self { shared })
    }

    /// The node this receptionist runs on.
    pub fn node(&self) -> &Node {
        &self.shared.node
    }

    /// Register the local actor `actor` (a name, or a path on this node)
    /// under `key`. It must exist and accept `M`. Registering twice is a
    /// no-op. Visible here at once, on the other nodes after a push.
    pub fn register<M: RemoteMessage>(
        &self,
        key: &ServiceKey<M>,
        actor: &str,
    ) -> Result<(), DiscoveryError> {
        let name = self.local_name(actor)?;
        let registry = self.shared.node.registry();
        if !registry.exists(&name) {
            return Err(DiscoveryError::NoSuchActor(name));
        }
        if let Some(entry) = registry.get(&name) {
            if !entry.handlers.contains_key(M::NAME) {
                return Err(DiscoveryError::DoesNotHandle {
                    actor: name,
                    message: M::NAME.to_string(),
                });
            }
        }
        let changed = lock(&self.shared.dir).register(key.wire(), &name)?;
        if changed {
            self.shared.local_changed(vec![key.wire()]);
        }
        Ok(())
    }

    /// Remove the local actor's registration under `key`; false if there
    /// was none.
    pub fn unregister<M: RemoteMessage>(
        &self,
        key: &ServiceKey<M>,
        actor: &str,
    ) -> Result<bool, DiscoveryError> {
        let name = self.local_name(actor)?;
        let removed = lock(&self.shared.dir).unregister(&key.wire(), &name);
        if removed {
            self.shared.local_changed(vec![key.wire()]);
        }
        Ok(removed)
    }

    fn local_name(&self, actor: &str) -> Result<String, DiscoveryError> {
        match actor.parse::<ActorPath>() {
            Ok(p) if p.node == self.shared.node.name() => Ok(p.actor),
            Ok(p) => Err(DiscoveryError::NotLocal(p)),
            Err(_) => {
                validate_name(actor)?;
                Ok(actor.to_string())
            }
        }
    }

    /// Every actor registered under `key` anywhere in the cluster, as far
    /// as this node knows now (see the module docs for how stale that can
    /// be), ordered by path.
    pub fn find<M: RemoteMessage>(&self, key: &ServiceKey<M>) -> Vec<RemoteRef<M>> {
        let paths = lock(&self.shared.dir).find(&key.wire());
        self.refs(&paths)
    }

    /// The paths of every actor registered under `key` (as [`Self::find`]).
    pub fn find_paths<M: RemoteMessage>(&self, key: &ServiceKey<M>) -> BTreeSet<ActorPath> {
        lock(&self.shared.dir).find(&key.wire())
    }

    fn refs<M: RemoteMessage>(&self, paths: &BTreeSet<ActorPath>) -> Vec<RemoteRef<M>> {
        paths
            .iter()
            .map(|p| self.shared.node.actor_ref::<M>(p.clone()))
            .collect()
    }

    /// Follow the set registered under `key`: the set now, then each change.
    pub fn subscribe<M: RemoteMessage>(&self, key: &ServiceKey<M>) -> Subscription<M> {
        let wire = key.wire();
        let rx = {
            let dir = lock(&self.shared.dir);
            let mut subs = lock(&self.shared.subscribers);
            subs.entry(wire.clone())
                .or_insert_with(|| watch::channel(Arc::new(dir.find(&wire))).0)
                .subscribe()
        };
        Subscription {
            rx,
            node: self.shared.node.clone(),
            first: true,
            _m: PhantomData,
        }
    }

    /// Sets from peers refused as malformed so far.
    pub fn refused(&self) -> u64 {
        self.shared.refused.load(Ordering::Relaxed)
    }

    /// The (node, incarnation, version) of every set this node holds, its
    /// own first.
    pub fn versions(&self) -> Vec<(String, Uuid, u64)> {
        lock(&self.shared.dir).digest()
    }
}

/// The changing set of actors under one key ([`Receptionist::subscribe`]).
/// Changes are coalesced: a slow reader sees the latest set, not every
/// intermediate one.
pub struct Subscription<M> {
    rx: watch::Receiver<Listing>,
    node: Node,
    first: bool,
    _m: PhantomData<fn() -> M>,
}

impl<M: RemoteMessage> Subscription<M> {
    /// The set now.
    pub fn current(&self) -> Vec<RemoteRef<M>> {
        let paths = self.rx.borrow().clone();
        self.to_refs(&paths)
    }

    /// The set now, as paths.
    pub fn current_paths(&self) -> BTreeSet<ActorPath> {
        self.rx.borrow().as_ref().clone()
    }

    fn to_refs(&self, paths: &BTreeSet<ActorPath>) -> Vec<RemoteRef<M>> {
        paths
            .iter()
            .map(|p| self.node.actor_ref::<M>(p.clone()))
            .collect()
    }

    /// The set: at once the first time, then when it next changes. `None`
    /// once the receptionist is gone.
    pub async fn next(&mut self) -> Option<Vec<RemoteRef<M>>> {
        let paths = self.next_paths().await?;
        Some(self.to_refs(&paths))
    }

    /// [`Self::next`], as paths.
    pub async fn next_paths(&mut self) -> Option<BTreeSet<ActorPath>> {
        if self.first {
            self.first = false;
            self.rx.mark_unchanged();
            return Some(self.current_paths());
        }
        self.rx.changed().await.ok()?;
        Some(self.current_paths())
    }

    /// As a [`Stream`] of sets: the set now, then each change.
    pub fn into_stream(self) -> impl Stream<Item = Vec<RemoteRef<M>>> {
        futures::stream::unfold(self, |mut s| async move {
            let set = s.next().await?;
            Some((set, s))
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn key(id: &str) -> WireKey {
        WireKey {
            id: id.into(),
            msg: "t.m".into(),
        }
    }

    fn snap(version: u64, entries: &[(&str, &[&str])]) -> Snapshot {
        Snapshot {
            version,
            entries: entries
                .iter()
                .map(|(k, a)| (key(k), a.iter().map(|s| s.to_string()).collect()))
                .collect(),
        }
    }

    fn paths(d: &Directory, k: &str) -> Vec<String> {
        d.find(&key(k)).iter().map(|p| p.to_string()).collect()
    }

    #[test]
    fn local_registrations_bump_the_version_once() {
        let mut d = Directory::new(&NodeId::with_incarnation("a", 1));
        assert!(d.register(key("k"), "w1").unwrap());
        assert!(!d.register(key("k"), "w1").unwrap());
        assert!(d.register(key("k"), "w2").unwrap());
        assert_eq!(d.version(), 2);
        assert_eq!(paths(&d, "k"), ["a/w1", "a/w2"]);
        assert_eq!(d.remove_actor("w1"), vec![key("k")]);
        assert_eq!(d.version(), 3);
        assert!(d.remove_actor("w1").is_empty());
        assert!(d.unregister(&key("k"), "w2"));
        assert!(d.snapshot().entries.is_empty());
    }

    #[test]
    fn sets_are_versioned_per_incarnation() {
        let mut d = Directory::new(&NodeId::with_incarnation("a", 1));
        let b1 = NodeId::with_incarnation("b", 1);
        assert_eq!(
            d.apply(&b1, snap(2, &[("k", &["x"])])).unwrap(),
            vec![key("k")]
        );
        // Older and duplicate versions change nothing.
        assert!(d.apply(&b1, snap(1, &[("k", &["y"])])).unwrap().is_empty());
        assert!(d.apply(&b1, snap(2, &[("k", &["y"])])).unwrap().is_empty());
        assert_eq!(paths(&d, "k"), ["b/x"]);
        // A new incarnation replaces the set, whatever its version.
        let b2 = NodeId::with_incarnation("b", 2);
        assert_eq!(d.apply(&b2, snap(0, &[])).unwrap(), vec![key("k")]);
        assert!(paths(&d, "k").is_empty());
        // The replaced incarnation is ignored from now on.
        assert!(d.apply(&b1, snap(9, &[("k", &["x"])])).unwrap().is_empty());
        assert!(paths(&d, "k").is_empty());
    }

    #[test]
    fn a_node_down_is_dropped_and_taken_again_after() {
        let mut d = Directory::new(&NodeId::with_incarnation("a", 1));
        let b = NodeId::with_incarnation("b", 1);
        d.apply(&b, snap(3, &[("k", &["x"]), ("j", &["y"])]))
            .unwrap();
        assert_eq!(d.drop_node("b"), vec![key("j"), key("k")]);
        assert!(d.drop_node("b").is_empty());
        // The same incarnation, same version, after a healed partition.
        assert_eq!(
            d.apply(&b, snap(3, &[("k", &["x"])])).unwrap(),
            vec![key("k")]
        );
    }

    #[test]
    fn malformed_sets_are_refused_whole() {
        let mut d = Directory::new(&NodeId::with_incarnation("a", 1));
        let b = NodeId::with_incarnation("b", 1);
        for bad in [
            snap(1, &[("k", &["bad name"])]),
            snap(1, &[("", &["x"])]),
            Snapshot {
                version: 1,
                entries: vec![(
                    WireKey {
                        id: "k".into(),
                        msg: "".into(),
                    },
                    vec!["x".into()],
                )],
            },
        ] {
            let e = d.apply(&b, bad).unwrap_err();
            assert!(matches!(e, DiscoveryError::Malformed { .. }), "{e}");
        }
        let too_many = Snapshot {
            version: 1,
            entries: vec![(
                key("k"),
                (0..=MAX_LOCAL_ENTRIES).map(|i| format!("w{i}")).collect(),
            )],
        };
        assert!(d.apply(&b, too_many).is_err());
        assert!(d
            .apply(&NodeId::with_incarnation("a", 1), snap(1, &[]))
            .is_err());
        assert!(d.nodes().is_empty());
    }

    #[test]
    fn digests_say_who_is_behind() {
        let mut a = Directory::new(&NodeId::with_incarnation("a", 1));
        let mut b = Directory::new(&NodeId::with_incarnation("b", 1));
        b.register(key("k"), "x").unwrap();
        let c = NodeId::with_incarnation("c", 1);
        b.apply(&c, snap(4, &[("k", &["z"])])).unwrap();
        let (pull, behind_on_me) = a.behind(&b.digest());
        assert_eq!(pull, ["b", "c"]);
        assert!(behind_on_me, "b has never seen a's set");
        a.apply(&NodeId::with_incarnation("b", 1), b.snapshot())
            .unwrap();
        a.apply(&c, snap(4, &[("k", &["z"])])).unwrap();
        b.apply(&NodeId::with_incarnation("a", 1), a.snapshot())
            .unwrap();
        assert_eq!(a.behind(&b.digest()), (vec![], false));
        assert_eq!(paths(&a, "k"), paths(&b, "k"));
    }

    #[test]
    fn keys_are_typed() {
        #[derive(Debug, Serialize, Deserialize)]
        struct A;
        crate::remote_message!(A, "t.a", ());
        #[derive(Debug, Serialize, Deserialize)]
        struct B;
        crate::remote_message!(B, "t.b", ());
        let (ka, kb) = (
            ServiceKey::<A>::new("svc").unwrap(),
            ServiceKey::<B>::new("svc").unwrap(),
        );
        assert_ne!(ka.wire(), kb.wire());
        assert!(ServiceKey::<A>::new("no spaces").is_err());
        assert!(ServiceKey::<A>::new("").is_err());
        assert!(ServiceKey::<A>::new("a/b:c.d-e_f").is_ok());
    }
}
