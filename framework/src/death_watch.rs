//! Remote death-watch: be told when an actor, anywhere in the cluster,
//! stops for good — or when its node goes `Down`, `Left` or restarts.
//!
//! [`DeathWatch::watch`] takes a [`RemoteRef`] (or [`DeathWatch::watch_path`]
//! an [`ActorPath`]) and returns a [`Watch`]: a future that resolves to a
//! [`Terminated`] with the [`DeathReason`]. An actor can instead be told a
//! `Terminated` message ([`DeathWatch::watch_notify`]). Dropping the `Watch`
//! (or [`DeathWatch::unwatch`]) cancels the watch.
//!
//! # How it works
//!
//! One death-watch actor per node ([`DEATH_WATCH_ACTOR`], started with
//! [`DeathWatch::start`] on every node). The *watched* node keeps the
//! watchers of each of its actors and tells them when the actor ends: the
//! reason is the actor's last exit reason from supervision
//! ([`crate::registry::Registry::ended_events`]: removed by its supervisor, a
//! transient child that exited normally, a supervisor that gave up with
//! `stop`). An actor that is restarted by its supervisor has not ended: the
//! watch stays. The *watcher's* node turns membership changes into
//! notifications: every watch on a node this node sees `Down` or `Left`
//! fires with [`DeathReason::NodeDown`] / [`DeathReason::NodeLeft`]. The
//! watched node's incarnation is learnt from its first answer; an answer
//! from another incarnation fires [`DeathReason::NodeRestarted`]. The
//! watcher re-sends its pending watches every `resync_interval` (and when
//! the node comes `Up` again), which repairs lost messages and finds
//! restarted nodes.
//!
//! # What is guaranteed
//!
//! - **Exactly one notification per watch**, unless it is cancelled first.
//! - **No such actor**: watching an actor that does not exist (never
//!   spawned, or ended before) answers [`DeathReason::NoSuchActor`] at
//!   once for a local actor, after one round trip for a remote one (or
//!   [`DeathReason::Stopped`] with the reason, when the watched node still
//!   remembers that actor's end: the last 1024 ends).
//! - **Liveness**: if the watched actor ends, or its node crashes,
//!   leaves or restarts, the watcher is told, provided the watcher's node
//!   keeps running: an end is told within a round trip when the network
//!   delivers it, else within `resync_interval` plus a round trip after the
//!   network delivers again; a crash as soon as the failure detector
//!   declares the node `Down`; a restart (a new incarnation) within
//!   `resync_interval` plus a round trip.
//! - **No false stops from the watched node**: [`DeathReason::Stopped`] and
//!   [`DeathReason::NoSuchActor`] come only from the watched node itself
//!   (authenticated sender, checked incarnation). `NodeDown` is only as
//!   accurate as the failure detector: after a partition the actor may in
//!   fact still run (as with Akka's death-watch, a `Down` is final for the
//!   watch).
//! - Bad input (a malformed actor name, an answer for a watch of another
//!   node) is refused, logged and counted; the node keeps running. An
//!   answer for a watch already fired or cancelled is ignored.
//!
//! Not guaranteed: a watch of a node this node does not know yet (not in
//! its membership view, unknown to the transport) waits, resent every
//! `resync_interval`, until the node is reachable; nothing says "no such
//! node". The cost: every `resync_interval`, one message per watched node
//! listing this node's pending watches on it, and one answer.

use std::collections::{BTreeMap, BTreeSet, HashMap, VecDeque};
use std::future::Future;
use std::pin::Pin;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, Weak};
use std::task::{Context as TaskContext, Poll};
use std::time::Duration;

use actix::prelude::*;
use serde::{Deserialize, Serialize};
use tokio::sync::oneshot;
use uuid::Uuid;

use crate::error::NodeError;
use crate::ids::{validate_name, ActorPath};
use crate::membership::MemberStatus;
use crate::receptionist::{follow, DiscoveryError};
use crate::remote::{RemoteMessage, Sender};
use crate::remote_ref::RemoteRef;
use crate::supervision::{ActorSpec, ExitReason};
use crate::{Node, NodeId};

/// The death-watch actor's name on every node.
pub const DEATH_WATCH_ACTOR: &str = "death-watch";

/// Ends remembered per node, to answer a late watch with the real reason.
const RECENT_ENDS: usize = 1024;

/// Why a watch fired.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum DeathReason {
    /// The actor stopped for good; its last exit reason from supervision.
    Stopped(ExitReason),
    /// No actor of that name exists on its node.
    NoSuchActor,
    /// Its node is `Down` in this node's membership view (crashed, or
    /// unreachable for longer than the failure detector tolerates).
    NodeDown,
    /// Its node left the group.
    NodeLeft,
    /// Its node restarted (a new incarnation answered): the actor watched
    /// is gone with the old process, even if one of that name runs again.
    NodeRestarted,
    /// This node's death-watch stopped before the watch fired.
    WatcherStopped,
}

impl std::fmt::Display for DeathReason {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            DeathReason::Stopped(r) => write!(f, "stopped: {r}"),
            DeathReason::NoSuchActor => f.write_str("no such actor"),
            DeathReason::NodeDown => f.write_str("its node is down"),
            DeathReason::NodeLeft => f.write_str("its node left"),
            DeathReason::NodeRestarted => f.write_str("its node restarted"),
            DeathReason::WatcherStopped => f.write_str("the watcher's death-watch stopped"),
        }
    }
}

/// A watched actor is gone. An actix message, for [`DeathWatch::watch_notify`].
#[derive(Debug, Clone, PartialEq, Eq, Message)]
#[rtype(result = "()")]
pub struct Terminated {
    /// The watch that fired.
    pub id: WatchId,
    /// The actor watched.
    pub actor: ActorPath,
    /// Why.
    pub reason: DeathReason,
}

/// Identifies a watch of this node.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct WatchId(pub u64);

/// How an end travels (a closed set, independent of serde's enum tagging).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum WireEnd {
    /// No such actor.
    NoSuchActor,
    /// Stopped by itself.
    Stopped,
    /// Failed with this error.
    Failed(String),
    /// Panicked with this message.
    Panicked(String),
    /// A supervisor gave up.
    GaveUp,
    /// Stopped by its supervisor.
    Shutdown,
}

impl WireEnd {
    fn of(reason: &ExitReason) -> Self {
        match reason {
            ExitReason::Stopped => WireEnd::Stopped,
            ExitReason::Failed { error } => WireEnd::Failed(error.clone()),
            ExitReason::Panicked { message } => WireEnd::Panicked(message.clone()),
            ExitReason::GaveUp => WireEnd::GaveUp,
            ExitReason::Shutdown => WireEnd::Shutdown,
        }
    }
    fn reason(self) -> DeathReason {
        let exit = match self {
            WireEnd::NoSuchActor => return DeathReason::NoSuchActor,
            WireEnd::Stopped => ExitReason::Stopped,
            WireEnd::Failed(error) => ExitReason::Failed { error },
            WireEnd::Panicked(message) => ExitReason::Panicked { message },
            WireEnd::GaveUp => ExitReason::GaveUp,
            WireEnd::Shutdown => ExitReason::Shutdown,
        };
        DeathReason::Stopped(exit)
    }
}

/// Watcher -> watched node: watch these actors (id, actor name). Idempotent.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct WatchActors(pub Vec<(u64, String)>);
crate::remote_message!(WatchActors, "troupe.deathwatch.watch", ());

/// Watcher -> watched node: cancel these watches.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct UnwatchActors(pub Vec<u64>);
crate::remote_message!(UnwatchActors, "troupe.deathwatch.unwatch", ());

/// Watched -> watcher node: these watches are in place.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct WatchAcks {
    /// The watcher incarnation they are for.
    pub watcher: Uuid,
    /// The watch ids.
    pub ids: Vec<u64>,
}
crate::remote_message!(WatchAcks, "troupe.deathwatch.ack", ());

/// Watched -> watcher node: these actors ended (or never existed).
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct WatchEnds {
    /// The watcher incarnation they are for.
    pub watcher: Uuid,
    /// (watch id, how the actor ended).
    pub ends: Vec<(u64, WireEnd)>,
}
crate::remote_message!(WatchEnds, "troupe.deathwatch.ended", ());

/// Death-watch settings.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct DeathWatchConfig {
    /// How often pending remote watches are sent again. Default 1 s.
    pub resync_interval: Duration,
}

impl Default for DeathWatchConfig {
    fn default() -> Self {
        Self {
            resync_interval: Duration::from_secs(1),
        }
    }
}

enum Notify {
    Once(oneshot::Sender<Terminated>),
    Tell(Recipient<Terminated>),
}

struct Watching {
    target: ActorPath,
    /// The watched node's incarnation, once known.
    incarnation: Option<Uuid>,
    notify: Notify,
}

/// A watcher of a local actor: (node, incarnation, watch id).
type Watcher = (String, Uuid, u64);

#[derive(Default)]
struct State {
    /// Watcher side: this node's watches.
    watching: HashMap<u64, Watching>,
    /// Watched side: who watches each local actor.
    watched: BTreeMap<String, BTreeSet<Watcher>>,
    /// The last ends of local actors.
    recent: VecDeque<(String, ExitReason)>,
}

struct Shared {
    node: Node,
    config: DeathWatchConfig,
    next_id: AtomicU64,
    state: Mutex<State>,
    refused: AtomicU64,
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

impl Shared {
    fn me(&self) -> &NodeId {
        self.node.id()
    }

    fn tell<M: RemoteMessage>(&self, node: &str, msg: M) {
        let Ok(path) = ActorPath::new(node, DEATH_WATCH_ACTOR) else {
            return;
        };
        if let Err(e) = self.node.actor_ref::<M>(path).tell(msg) {
            tracing::debug!(node = %self.node.name(), peer = node, error = %e, "death-watch: send failed");
        }
    }

    fn fire(&self, id: u64, reason: DeathReason) {
        let Some(w) = lock(&self.state).watching.remove(&id) else {
            return;
        };
        let t = Terminated {
            id: WatchId(id),
            actor: w.target,
            reason,
        };
        match w.notify {
            Notify::Once(tx) => {
                let _ = tx.send(t);
            }
            Notify::Tell(r) => r.do_send(t),
        }
    }

    fn watch(&self, target: ActorPath, notify: Notify) -> u64 {
        let id = self.next_id.fetch_add(1, Ordering::Relaxed);
        let me = self.me().clone();
        let local = target.node == me.name;
        let actor = target.actor.clone();
        let node = target.node.clone();
        lock(&self.state).watching.insert(
            id,
            Watching {
                target,
                incarnation: local.then_some(me.incarnation),
                notify,
            },
        );
        if local {
            if !self.node.registry().exists(&actor) {
                self.fire(id, DeathReason::NoSuchActor);
                return id;
            }
            lock(&self.state)
                .watched
                .entry(actor.clone())
                .or_default()
                .insert((me.name.clone(), me.incarnation, id));
            // It may have ended between the check and the insert.
            if !self.node.registry().exists(&actor) {
                let reason = self
                    .node
                    .registry()
                    .end_reason(&actor)
                    .map(DeathReason::Stopped)
                    .unwrap_or(DeathReason::NoSuchActor);
                self.fire(id, reason);
            }
            return id;
        }
        match self.node.membership().status(&node) {
            Some(MemberStatus::Down) => self.fire(id, DeathReason::NodeDown),
            Some(MemberStatus::Left) => self.fire(id, DeathReason::NodeLeft),
            _ => self.tell(&node, WatchActors(vec![(id, actor)])),
        }
        id
    }

    fn unwatch(&self, id: u64) {
        let w = lock(&self.state).watching.remove(&id);
        let Some(w) = w else { return };
        if w.target.node == self.me().name {
            if let Some(set) = lock(&self.state).watched.get_mut(&w.target.actor) {
                set.retain(|(_, _, i)| *i != id);
            }
        } else {
            self.tell(&w.target.node, UnwatchActors(vec![id]));
        }
    }

    /// Watched side: a local actor ended.
    fn on_ended(&self, name: &str, reason: ExitReason) {
        let watchers = {
            let mut st = lock(&self.state);
            st.recent.push_back((name.to_string(), reason.clone()));
            while st.recent.len() > RECENT_ENDS {
                st.recent.pop_front();
            }
            st.watched.remove(name).unwrap_or_default()
        };
        let mut by_node: BTreeMap<(String, Uuid), Vec<(u64, WireEnd)>> = BTreeMap::new();
        for (node, inc, id) in watchers {
            if node == self.me().name {
                self.fire(id, DeathReason::Stopped(reason.clone()));
            } else {
                by_node
                    .entry((node, inc))
                    .or_default()
                    .push((id, WireEnd::of(&reason)));
            }
        }
        for ((node, watcher), ends) in by_node {
            self.tell(&node, WatchEnds { watcher, ends });
        }
    }

    /// Watched side, after missing ended events: end the watches of actors
    /// that exist no more.
    fn sweep(&self) {
        let names: Vec<String> = lock(&self.state).watched.keys().cloned().collect();
        for n in names {
            if !self.node.registry().exists(&n) {
                let reason = self
                    .node
                    .registry()
                    .end_reason(&n)
                    .unwrap_or(ExitReason::Shutdown);
                self.on_ended(&n, reason);
            }
        }
    }

    fn recent_end(&self, name: &str) -> Option<ExitReason> {
        lock(&self.state)
            .recent
            .iter()
            .rev()
            .find(|(n, _)| n == name)
            .map(|(_, r)| r.clone())
    }

    /// Watched side: a peer watches some of our actors.
    fn on_watch(&self, from: &NodeId, watches: Vec<(u64, String)>) {
        if from.name == self.me().name {
            return;
        }
        let (mut acks, mut ends) = (Vec::new(), Vec::new());
        {
            let mut st = lock(&self.state);
            // A new incarnation of the watcher: its old watches are void.
            for set in st.watched.values_mut() {
                set.retain(|(n, inc, _)| *n != from.name || *inc == from.incarnation);
            }
        }
        for (id, actor) in watches {
            if validate_name(&actor).is_err() {
                self.refused.fetch_add(1, Ordering::Relaxed);
                tracing::warn!(node = %self.node.name(), peer = %from, actor = %actor.escape_debug(), "death-watch: refused a watch of a malformed actor name");
                ends.push((id, WireEnd::NoSuchActor));
                continue;
            }
            if self.node.registry().exists(&actor) {
                lock(&self.state).watched.entry(actor).or_default().insert((
                    from.name.clone(),
                    from.incarnation,
                    id,
                ));
                acks.push(id);
            } else {
                let end = self
                    .recent_end(&actor)
                    .map(|r| WireEnd::of(&r))
                    .unwrap_or(WireEnd::NoSuchActor);
                ends.push((id, end));
            }
        }
        if !acks.is_empty() {
            self.tell(
                &from.name,
                WatchAcks {
                    watcher: from.incarnation,
                    ids: acks,
                },
            );
        }
        if !ends.is_empty() {
            self.tell(
                &from.name,
                WatchEnds {
                    watcher: from.incarnation,
                    ends,
                },
            );
        }
    }

    fn on_unwatch(&self, from: &NodeId, ids: Vec<u64>) {
        let ids: BTreeSet<u64> = ids.into_iter().collect();
        let mut st = lock(&self.state);
        for set in st.watched.values_mut() {
            set.retain(|(n, inc, i)| {
                !(*n == from.name && *inc == from.incarnation && ids.contains(i))
            });
        }
        st.watched.retain(|_, s| !s.is_empty());
    }

    /// Watcher side: check an answer's sender against the watch; fire
    /// `NodeRestarted` on another incarnation. True if the answer counts.
    fn check_answer(&self, from: &NodeId, id: u64) -> bool {
        let verdict = {
            let mut st = lock(&self.state);
            match st.watching.get_mut(&id) {
                None => return false,
                Some(w) if w.target.node != from.name => None,
                Some(w) => match w.incarnation {
                    None => {
                        w.incarnation = Some(from.incarnation);
                        Some(true)
                    }
                    Some(inc) => Some(inc == from.incarnation),
                },
            }
        };
        match verdict {
            None => {
                self.refused.fetch_add(1, Ordering::Relaxed);
                tracing::warn!(node = %self.node.name(), peer = %from, id, "death-watch: refused an answer for a watch of another node");
                false
            }
            Some(true) => true,
            Some(false) => {
                self.fire(id, DeathReason::NodeRestarted);
                // The new incarnation may hold it, if it acked.
                self.tell(&from.name, UnwatchActors(vec![id]));
                false
            }
        }
    }

    fn on_acks(&self, from: &NodeId, m: WatchAcks) {
        if m.watcher != self.me().incarnation {
            return; // for an earlier life of this node
        }
        for id in m.ids {
            self.check_answer(from, id);
        }
    }

    fn on_ends(&self, from: &NodeId, m: WatchEnds) {
        if m.watcher != self.me().incarnation {
            return;
        }
        for (id, end) in m.ends {
            if self.check_answer(from, id) {
                self.fire(id, end.reason());
            }
        }
    }

    fn on_member(&self, status: MemberStatus, member: &str) {
        if member == self.me().name {
            return;
        }
        match status {
            MemberStatus::Down | MemberStatus::Left => {
                let reason = if status == MemberStatus::Down {
                    DeathReason::NodeDown
                } else {
                    DeathReason::NodeLeft
                };
                let ids: Vec<u64> = {
                    let mut st = lock(&self.state);
                    for set in st.watched.values_mut() {
                        set.retain(|(n, _, _)| n != member);
                    }
                    st.watched.retain(|_, s| !s.is_empty());
                    st.watching
                        .iter()
                        .filter(|(_, w)| w.target.node == member)
                        .map(|(id, _)| *id)
                        .collect()
                };
                for id in ids {
                    self.fire(id, reason.clone());
                }
            }
            MemberStatus::Up => self.resync_node(Some(member)),
            MemberStatus::Joining | MemberStatus::Suspect => {}
        }
    }

    /// Send the pending remote watches again (to `only`, or to every node).
    fn resync_node(&self, only: Option<&str>) {
        let me = self.me().name.clone();
        let mut by_node: BTreeMap<String, Vec<(u64, String)>> = BTreeMap::new();
        for (id, w) in lock(&self.state).watching.iter() {
            if w.target.node != me && only.is_none_or(|n| n == w.target.node) {
                by_node
                    .entry(w.target.node.clone())
                    .or_default()
                    .push((*id, w.target.actor.clone()));
            }
        }
        for (node, watches) in by_node {
            self.tell(&node, WatchActors(watches));
        }
    }

    /// After missing membership events: fire the watches on nodes that are
    /// not live, resend the others.
    fn membership_resync(&self) {
        let view = self.node.membership();
        for (member, status) in view.iter() {
            if !status.is_live() {
                self.on_member(status, member);
            }
        }
        self.resync_node(None);
    }

    fn stop_all(&self) {
        let ids: Vec<u64> = lock(&self.state).watching.keys().copied().collect();
        for id in ids {
            self.fire(id, DeathReason::WatcherStopped);
        }
    }
}

/// The death-watch actor of a node. Its state lives in the shared handle,
/// so a restart keeps the watches.
pub struct DeathWatchActor {
    shared: Arc<Shared>,
    tasks: Vec<actix_rt::task::JoinHandle<()>>,
}

impl Actor for DeathWatchActor {
    type Context = Context<Self>;

    fn started(&mut self, ctx: &mut Context<Self>) {
        let weak = Arc::downgrade(&self.shared);
        self.tasks.push(actix_rt::spawn(follow(
            weak.clone(),
            self.shared.node.subscribe_membership(),
            |s: &Shared, ev| s.on_member(ev.status, &ev.member),
            |s: &Shared| s.membership_resync(),
        )));
        self.tasks.push(actix_rt::spawn(follow(
            weak,
            self.shared.node.registry().ended_events(),
            |s: &Shared, ev| s.on_ended(&ev.name, ev.reason),
            |s: &Shared| s.sweep(),
        )));
        self.shared.sweep();
        self.shared.membership_resync();
        ctx.run_interval(self.shared.config.resync_interval, |act, _| {
            act.shared.resync_node(None)
        });
    }

    fn stopped(&mut self, _: &mut Context<Self>) {
        for t in self.tasks.drain(..) {
            t.abort();
        }
        if self.shared.node.is_stopped() {
            self.shared.stop_all();
        }
    }
}

impl Handler<Sender<WatchActors>> for DeathWatchActor {
    type Result = ();
    fn handle(&mut self, m: Sender<WatchActors>, _: &mut Context<Self>) {
        self.shared.on_watch(&m.from, m.msg.0);
    }
}

impl Handler<Sender<UnwatchActors>> for DeathWatchActor {
    type Result = ();
    fn handle(&mut self, m: Sender<UnwatchActors>, _: &mut Context<Self>) {
        self.shared.on_unwatch(&m.from, m.msg.0);
    }
}

impl Handler<Sender<WatchAcks>> for DeathWatchActor {
    type Result = ();
    fn handle(&mut self, m: Sender<WatchAcks>, _: &mut Context<Self>) {
        self.shared.on_acks(&m.from, m.msg);
    }
}

impl Handler<Sender<WatchEnds>> for DeathWatchActor {
    type Result = ();
    fn handle(&mut self, m: Sender<WatchEnds>, _: &mut Context<Self>) {
        self.shared.on_ends(&m.from, m.msg);
    }
}

/// A handle to a node's death-watch. Cheap to clone.
#[derive(Clone)]
pub struct DeathWatch {
    shared: Arc<Shared>,
}

impl DeathWatch {
    /// Start death-watch on `node` (an actor named [`DEATH_WATCH_ACTOR`]),
    /// with the default settings. Start it on every node of the cluster (`troupe::runtime::start_node`
    /// does, for the nodes it starts).
    pub async fn start(node: &Node) -> Result<Self, DiscoveryError> {
        Self::start_with(node, DeathWatchConfig::default()).await
    }

    /// [`DeathWatch::start`] with chosen settings.
    pub async fn start_with(node: &Node, config: DeathWatchConfig) -> Result<Self, DiscoveryError> {
        if config.resync_interval.is_zero() {
            return Err(DiscoveryError::Start(NodeError::Config(
                "death-watch resync_interval must be positive".into(),
            )));
        }
        let shared = Arc::new(Shared {
            node: node.clone(),
            config,
            next_id: AtomicU64::new(1),
            state: Mutex::new(State::default()),
            refused: AtomicU64::new(0),
        });
        let s = shared.clone();
        let spec = ActorSpec::new(DEATH_WATCH_ACTOR, move || DeathWatchActor {
            shared: s.clone(),
            tasks: Vec::new(),
        })
        .handles_from::<WatchActors>()
        .handles_from::<UnwatchActors>()
        .handles_from::<WatchAcks>()
        .handles_from::<WatchEnds>();
        node.spawn(spec).await?;
        Ok(Self { shared })
    }

    /// Watch the actor `target` points to (see the module docs).
    pub fn watch<M: RemoteMessage>(&self, target: &RemoteRef<M>) -> Watch {
        self.watch_path(target.path().clone())
    }

    /// Watch the actor at `path`.
    pub fn watch_path(&self, path: ActorPath) -> Watch {
        let (tx, rx) = oneshot::channel();
        let id = self.shared.watch(path.clone(), Notify::Once(tx));
        Watch {
            id: WatchId(id),
            path,
            rx,
            shared: Arc::downgrade(&self.shared),
            done: false,
        }
    }

    /// Watch the actor at `path` and tell `to` a [`Terminated`] when it is
    /// gone (unless [`Self::unwatch`]ed first).
    pub fn watch_notify(&self, path: ActorPath, to: Recipient<Terminated>) -> WatchId {
        WatchId(self.shared.watch(path, Notify::Tell(to)))
    }

    /// Cancel a watch (nothing if it fired already).
    pub fn unwatch(&self, id: WatchId) {
        self.shared.unwatch(id.0);
    }

    /// Watches of this node not fired yet.
    pub fn pending(&self) -> usize {
        lock(&self.shared.state).watching.len()
    }

    /// Watchers (of any node) of this node's actors.
    pub fn watchers(&self) -> usize {
        lock(&self.shared.state)
            .watched
            .values()
            .map(|s| s.len())
            .sum()
    }

    /// Malformed or misaddressed death-watch messages refused so far.
    pub fn refused(&self) -> u64 {
        self.shared.refused.load(Ordering::Relaxed)
    }
}

/// A pending watch: resolves to the [`Terminated`] notice. Dropping it
/// before then cancels the watch.
pub struct Watch {
    id: WatchId,
    path: ActorPath,
    rx: oneshot::Receiver<Terminated>,
    shared: Weak<Shared>,
    done: bool,
}

impl Watch {
    /// This watch's id.
    pub fn id(&self) -> WatchId {
        self.id
    }
}

impl Future for Watch {
    type Output = Terminated;
    fn poll(mut self: Pin<&mut Self>, cx: &mut TaskContext<'_>) -> Poll<Terminated> {
        match Pin::new(&mut self.rx).poll(cx) {
            Poll::Pending => Poll::Pending,
            Poll::Ready(r) => {
                self.done = true;
                Poll::Ready(r.unwrap_or_else(|_| Terminated {
                    id: self.id,
                    actor: self.path.clone(),
                    reason: DeathReason::WatcherStopped,
                }))
            }
        }
    }
}

impl Drop for Watch {
    fn drop(&mut self) {
        if !self.done {
            if let Some(s) = self.shared.upgrade() {
                s.unwatch(self.id.0);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ends_round_trip_through_the_wire_form() {
        for r in [
            ExitReason::Stopped,
            ExitReason::Failed { error: "e".into() },
            ExitReason::Panicked {
                message: "p".into(),
            },
            ExitReason::GaveUp,
            ExitReason::Shutdown,
        ] {
            let wire = WireEnd::of(&r);
            let bytes = rmp_serde::to_vec(&WatchEnds {
                watcher: Uuid::nil(),
                ends: vec![(1, wire)],
            })
            .unwrap();
            let back: WatchEnds = rmp_serde::from_slice(&bytes).unwrap();
            let (_, end) = back.ends.into_iter().next().unwrap();
            assert_eq!(end.reason(), DeathReason::Stopped(r));
        }
        assert_eq!(WireEnd::NoSuchActor.reason(), DeathReason::NoSuchActor);
    }
}
