//! The thin actor around a sans-IO protocol core.
//!
//! [`Driver`] is the one actor every protocol runs in. It owns a core (any
//! [`Protocol`]) and carries out what the core returns:
//!
//! - **durable writes** go to the node's store
//!   ([`troupe_framework::storage`]), in the protocol's own namespace (its
//!   actor name), one submission per input; the store group-commits them;
//! - **sends** become [`Wire`] tells to the actor of the same name on the
//!   destination node (location-transparent: a send to this node goes
//!   straight into its own mailbox);
//! - **timers** become actix `run_later` timers (virtual time in
//!   simulations), keyed: setting a timer equal to a pending one replaces
//!   it, cancelling removes it ([`troupe_framework::sansio::TimerTable`]);
//! - **events** go to an optional hook (the failure detector's hook
//!   publishes membership) and then to every subscriber
//!   ([`DriverHandle::subscribe`]).
//!
//! Inputs come from peers' `Wire` messages (with the authenticated sender),
//! from fired timers, from the node's membership events (when the protocol
//! asks for them), and from local commands ([`Invoke`]: a closure run against
//! the core, which is how typed APIs like `lock.acquire()` are built).
//!
//! A command whose answer comes later (a Raft proposal answered once its
//! entry is applied) is an [`Await`] ([`DriverHandle::settle`]), for a core
//! that [`Settles`]: the command's closure takes the request and returns
//! the core's token for it; the driver keeps a waiter per token and, when
//! it carries out a turn's outputs, takes the core's settled tokens and
//! answers their waiters with those outputs. One message and one wake-up
//! per request.
//!
//! Guarantees:
//! - the core sees inputs one at a time, in the order the actor handles them,
//!   with the node's clock; after each input the driver calls the core's
//!   [`Protocol::persist`], then carries the outputs out in the order produced;
//! - **one turn, one flush**: the outputs of the inputs handled in one turn
//!   of the actor (everything its mailbox and inbox held when it woke up)
//!   are carried out together once the turn's messages are handled — one
//!   store submission (the turn's writes, in order, atomically), then the
//!   sends, the view as it is after the turn, events and replies, in order.
//!   Under load many proposals share one submission. A store that does not
//!   group commits ([`troupe_framework::storage::DurableStore::groups_commits`],
//!   `[storage] group_commit = false`) gets every input's writes as a
//!   submission of their own, flushed as the input is handled;
//! - **durability first**: no message, event or command reply of an input
//!   leaves before that input's writes, and every earlier input's writes,
//!   are durable. Outputs that wait for a sync are held in order while the
//!   core keeps taking inputs (so the writes of many inputs share a sync);
//!   timers are armed when their turn is flushed (they only produce new
//!   inputs, whose outputs wait their turn);
//! - a failed write (store error, a value that does not encode, an append
//!   that does not follow its log) stops the actor; nothing held is sent.
//!   Its supervisor restarts it, and the core is rebuilt from what the store
//!   holds — the writes that were acknowledged, nothing else;
//! - a message the network refuses (unknown or down peer, a frame too large)
//!   is dropped with a debug log — protocols are written for lossy
//!   networks; one that finds the peer's queue full is kept and sent in
//!   order once there is room, and the replies to commands wait while many
//!   are kept (back-pressure, see `Backlog`), up to a bound per peer and
//!   500 ms, past which it is dropped too;
//! - timers of an old life never fire after a restart;
//! - a waiter whose token the core never settles in this life (the actor
//!   stopped or restarted) is answered [`Awaited::Dropped`], never left
//!   hanging; one whose command never ran, [`Awaited::NotRunning`].

use std::any::Any;
use std::cell::RefCell;
use std::collections::{BTreeMap, HashMap, VecDeque};
use std::fmt::Debug;
use std::hash::{BuildHasherDefault, Hasher};
use std::rc::Rc;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use actix::prelude::*;
use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};
use tokio::sync::{broadcast, oneshot, watch};
use troupe_framework::membership::MemberEvent;
use troupe_framework::remote::Sender;
use troupe_framework::sansio::{
    DurableError, Outputs, Protocol, Recovered, Settles, TimerOp, TimerTable,
};
use troupe_framework::storage::{Completion, SyncReport};
use troupe_framework::supervision::ActorSpec;
use troupe_framework::trace::TraceEvent;
use troupe_framework::{ActorPath, Node, NodeId, RemoteMessage, RemoteRef};

/// How a protocol names its peers, and how that maps to nodes.
pub trait PeerId: Clone + Ord + Debug + Send + 'static {
    /// The node this peer lives on.
    fn node_name(&self) -> &str;
    /// The peer id of an authenticated sender node.
    fn from_node(id: &NodeId) -> Self;
    /// The peer id for a membership event's member name, if this id type can
    /// be built from a bare name (node names can; full node ids cannot).
    fn from_member_name(name: &str) -> Option<Self>;
}

impl PeerId for String {
    fn node_name(&self) -> &str {
        self
    }
    fn from_node(id: &NodeId) -> Self {
        id.name.clone()
    }
    fn from_member_name(name: &str) -> Option<Self> {
        Some(name.to_string())
    }
}

impl PeerId for NodeId {
    fn node_name(&self) -> &str {
        &self.name
    }
    fn from_node(id: &NodeId) -> Self {
        id.clone()
    }
    fn from_member_name(_name: &str) -> Option<Self> {
        None
    }
}

/// A protocol message type that can travel between drivers. A family
/// implements it next to its message type (one stable wire name per
/// family); the driver needs nothing else to carry it.
pub trait WireMessage: Serialize + DeserializeOwned + Clone + Debug + Send + 'static {
    /// Its stable wire name, e.g. `"troupe.mutex"`.
    const WIRE_NAME: &'static str;
}

/// A protocol message on its way to the same protocol instance on a peer.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(transparent)]
pub struct Wire<M>(pub M);

impl<M: WireMessage> actix::Message for Wire<M> {
    type Result = ();
}

impl<M: WireMessage> RemoteMessage for Wire<M> {
    type Reply = ();
    const NAME: &'static str = M::WIRE_NAME;
}

/// A protocol core the [`Driver`] can run: peers named by a [`PeerId`],
/// messages that are [`WireMessage`]s. Implemented for every such core.
pub trait Drivable:
    Protocol<Id: PeerId, Msg: WireMessage, Timer: 'static, Event: Send + 'static> + 'static
{
}

impl<P> Drivable for P where
    P: Protocol<Id: PeerId, Msg: WireMessage, Timer: 'static, Event: Send + 'static> + 'static
{
}

/// The output buffer of core `P`.
pub type OutputsOf<P> = Outputs<
    <P as Protocol>::Id,
    <P as Protocol>::Msg,
    <P as Protocol>::Timer,
    <P as Protocol>::Event,
>;

/// A local command: run a closure against the core (with the current time
/// and the output buffer), then carry out what it produced. The answer
/// comes once everything the core has written so far is durable.
pub struct Invoke<P: Protocol, R>(pub Command<P, R>);

/// The closure inside an [`Invoke`].
pub type Command<P, R> = Box<dyn FnOnce(&mut P, Duration, &mut OutputsOf<P>) -> R + Send>;

impl<P: Protocol, R: Send + 'static> actix::Message for Invoke<P, R> {
    type Result = Result<R, DriverError>;
}

/// A hook called with the events of each input.
pub type EventHook<P> = Box<dyn FnMut(&Node, &[<P as Protocol>::Event])>;

/// Builds a core from what its protocol made durable (on every start and
/// restart). A stored state that does not decode is an error, never a
/// silent fresh start.
pub type MakeCore<P> = Arc<dyn Fn(&Node, &Recovered) -> Result<P, DurableError> + Send + Sync>;

/// Computes a core's view after an input; returns what publishes it when
/// the input's outputs are carried out (nothing when it did not change).
pub type ViewHook<P> = Box<dyn FnMut(&P) -> Option<Box<dyn FnOnce()>>>;

/// A command whose answer comes when the core settles the request it took
/// (see [`Settles`] and [`DriverHandle::settle`]).
pub struct Await<P: Settles>(pub Box<dyn AwaitJob<P>>);

/// An answer, sent when the outputs of the input that produced it are
/// carried out.
pub trait Reply {
    /// Send it.
    fn send(self: Box<Self>);
}

impl<F: FnOnce()> Reply for F {
    fn send(self: Box<Self>) {
        (*self)()
    }
}

/// What an [`Await`] carries through its life: it takes the request, is
/// kept by the driver under the request's token, computes its answer when
/// the token settles, and is itself the [`Reply`] that sends the answer
/// (one allocation per request).
pub trait AwaitJob<P: Settles>: Reply + Send {
    /// Take the request (with the current time and the output buffer):
    /// the core's token for it, or `None` when it is answered at once
    /// (refused), without waiting.
    fn start(&mut self, core: &mut P, now: Duration, out: &mut OutputsOf<P>) -> Option<P::Token>;
    /// Its token settled: compute the answer from the core (as it is after
    /// the input that settled it) and the settlement.
    fn settle(&mut self, core: &mut P, token: P::Token, settled: P::Settled);
}

impl<P: Settles + 'static> actix::Message for Await<P> {
    type Result = ();
}

/// The driver's waiters, type-erased (the driver runs any core; only
/// cores that [`Settles`] have them).
trait Waiting<P>: 'static {
    /// Take what the core settled and answer the waiters of those tokens
    /// (their answers join `replies`).
    fn settle(&mut self, core: &mut P, replies: &mut Vec<Box<dyn Reply>>);
    fn as_any(&mut self) -> &mut dyn Any;
}

/// The waiters of a core that settles, by token.
struct Waiters<P: Settles> {
    waiting: HashMap<P::Token, Box<dyn AwaitJob<P>>, BuildHasherDefault<TokenHasher>>,
    taken: Vec<(P::Token, P::Settled)>,
}

/// A multiply-rotate hasher (FxHash's) for waiter tokens: small keys the
/// core makes, not chosen by a peer, so no defence against collisions is
/// needed (SipHash cost more than the rest of the lookup).
#[derive(Default, Clone, Copy)]
struct TokenHasher(u64);

impl TokenHasher {
    fn add(&mut self, n: u64) {
        self.0 = (self.0.rotate_left(5) ^ n).wrapping_mul(0x51_7c_c1_b7_27_22_0a_95);
    }
}

impl Hasher for TokenHasher {
    fn finish(&self) -> u64 {
        self.0
    }
    fn write(&mut self, bytes: &[u8]) {
        for b in bytes {
            self.add(u64::from(*b));
        }
    }
    fn write_u64(&mut self, n: u64) {
        self.add(n);
    }
    fn write_usize(&mut self, n: usize) {
        self.add(n as u64);
    }
}

impl<P: Settles + 'static> Waiting<P> for Waiters<P> {
    fn settle(&mut self, core: &mut P, replies: &mut Vec<Box<dyn Reply>>) {
        core.take_settled(&mut self.taken);
        for (token, settled) in self.taken.drain(..) {
            // A token no one waits for (a waiter of a stopped life, a
            // request taken by another command) is dropped.
            if let Some((token, mut job)) = self.waiting.remove_entry(&token) {
                job.settle(core, token, settled);
                replies.push(job);
            }
        }
    }
    fn as_any(&mut self) -> &mut dyn Any {
        self
    }
}

/// Outputs of earlier inputs waiting for their writes to become durable.
struct Held<P: Protocol> {
    /// The submission that must be durable first.
    ticket: u64,
    sends: Vec<(P::Id, P::Msg)>,
    /// What caused the sends while frames are traced: from each index of
    /// `sends`, the frame whose input produced them (see [`Cause`]).
    causes: Vec<(usize, Option<Cause>)>,
    view: Option<Box<dyn FnOnce()>>,
    events: Vec<P::Event>,
    replies: Vec<Box<dyn Reply>>,
}

/// A remote frame, `(sender, seq)`: see `troupe_framework::remote::current_cause`.
type Cause = (std::sync::Arc<str>, u64);

/// The actor that drives core `P`. Build it with [`Driver::new`] inside an
/// `ActorSpec` factory (so a restart builds a fresh one), or let
/// [`DriverSpec`] do it.
pub struct Driver<P: Drivable> {
    // Boxed so the actor is `Unpin` whatever the core's types are; `None`
    // when the core could not be rebuilt (the actor stops at once).
    core: Option<Box<P>>,
    failed: Option<DurableError>,
    node: Node,
    name: String,
    out: Box<OutputsOf<P>>,
    events: broadcast::Sender<P::Event>,
    hook: Option<EventHook<P>>,
    view: Option<ViewHook<P>>,
    membership: bool,
    control: bool,
    peers: BTreeMap<String, RemoteRef<Wire<P::Msg>>>,
    // Boxed for `Unpin`, as `core`.
    timers: Box<TimerTable<P::Timer>>,
    timer_handles: HashMap<u64, SpawnHandle>,
    /// Submissions made / acknowledged (in order: the store answers in order).
    submitted: u64,
    durable: u64,
    #[allow(clippy::box_collection)] // boxed for `Unpin`, as `core`
    held: Box<VecDeque<Held<P>>>,
    /// Waiters of [`Await`] commands (cores that [`Settles`] only).
    waiters: Option<Box<dyn Waiting<P>>>,
    /// Replies of the inputs since the last flush.
    replies: Vec<Box<dyn Reply>>,
    /// A flush of the inputs of this turn is scheduled.
    flush_pending: bool,
    /// The node's store groups commits (read once: see
    /// [`troupe_framework::storage::DurableStore::groups_commits`]); if not,
    /// every input is flushed on its own.
    groups_commits: bool,
    /// The causes of this turn's sends so far (see [`Held::causes`]):
    /// empty unless an input came from a traced remote frame.
    causes: Vec<(usize, Option<Cause>)>,
    /// Sends that found a peer's transport queue full, kept in order and
    /// drained with `tell_wait` (see [`Backlog`]).
    backlog: Rc<RefCell<Backlog<P::Msg>>>,
}

/// Most sends kept for one peer whose transport queue is full; past it
/// they are dropped, as a lost message (the cores' timers recover it).
const BACKLOG_CAP: usize = 4096;
/// Kept sends, over all peers, above which the replies to commands wait.
const BACKLOG_HIGH: usize = 1024;
/// How long one kept send may wait for room before the peer's backlog is
/// dropped (a slow or partitioned peer must not hold the protocol up).
const BACKLOG_WAIT: Duration = Duration::from_millis(500);

/// The driver's back-pressure. A protocol message that finds the
/// transport's queue to its peer full is kept, and the messages after it
/// to the same peer queue behind it; a task per peer sends them in order
/// with `tell_wait`. While more than [`BACKLOG_HIGH`] are kept, the replies
/// to commands (a broadcast's answer, a proposal's) wait too, so callers
/// that produce faster than the peers take in are slowed down instead of
/// having their messages dropped and re-sent by timers. A peer whose
/// queue stays full [`BACKLOG_WAIT`] loses its backlog (a lost message, as
/// before this existed: the cores recover it), and the replies go.
struct Backlog<M> {
    peers: BTreeMap<String, PeerBacklog<M>>,
    kept: usize,
    replies: Vec<Box<dyn Reply>>,
}

struct PeerBacklog<M> {
    queue: VecDeque<Wire<M>>,
    draining: bool,
}

impl<M> Default for Backlog<M> {
    fn default() -> Self {
        Self {
            peers: BTreeMap::new(),
            kept: 0,
            replies: Vec::new(),
        }
    }
}

impl<M> Backlog<M> {
    fn has(&self, peer: &str) -> bool {
        // Nothing kept (the usual case): no lookup per send.
        self.kept > 0 && self.peers.get(peer).is_some_and(|p| !p.queue.is_empty())
    }

    /// The replies held back, once the backlog is low enough.
    fn release(&mut self) -> Vec<Box<dyn Reply>> {
        if self.kept < BACKLOG_HIGH / 2 || self.replies.is_empty() {
            std::mem::take(&mut self.replies)
        } else {
            Vec::new()
        }
    }
}

impl<P> Driver<P>
where
    P: Drivable,
{
    /// A driver for `core`, running as actor `name` on `node`, publishing
    /// events on `events` (share the sender with the typed API's handle).
    pub fn new(
        core: P,
        node: Node,
        name: impl Into<String>,
        events: broadcast::Sender<P::Event>,
    ) -> Self {
        Self::build(Ok(core), node, name.into(), events)
    }

    fn build(
        core: Result<P, DurableError>,
        node: Node,
        name: String,
        events: broadcast::Sender<P::Event>,
    ) -> Self {
        let (core, failed) = match core {
            Ok(c) => (Some(Box::new(c)), None),
            Err(e) => (None, Some(e)),
        };
        let groups_commits = node.store().groups_commits();
        Self {
            core,
            failed,
            node,
            name,
            out: Box::new(Outputs::new()),
            events,
            hook: None,
            view: None,
            membership: false,
            control: false,
            peers: BTreeMap::new(),
            timers: Box::new(TimerTable::new()),
            timer_handles: HashMap::new(),
            submitted: 0,
            durable: 0,
            held: Box::new(VecDeque::new()),
            waiters: None,
            replies: Vec::new(),
            flush_pending: false,
            groups_commits,
            causes: Vec::new(),
            backlog: Rc::default(),
        }
    }

    /// Send this protocol's messages as control traffic (see
    /// [`RemoteRef::control`]): for failure detectors, whose heartbeats must
    /// not wait behind application payloads.
    pub fn with_control(mut self) -> Self {
        self.control = true;
        self
    }

    /// Feed the node's membership events to the core's `on_membership`
    /// (starting with the current view).
    pub fn with_membership(mut self) -> Self {
        self.membership = true;
        self
    }

    /// Call `hook` with the events of each input (in order) before they are
    /// broadcast. One call sees everything a single input produced.
    pub fn with_hook(mut self, hook: impl FnMut(&Node, &[P::Event]) + 'static) -> Self {
        self.hook = Some(Box::new(hook));
        self
    }

    fn now(&self) -> Duration {
        self.node.now()
    }

    /// An input starts: the sends it produces were caused by the remote
    /// frame being handled, if any (traced only).
    fn mark_cause(&mut self) {
        let cause = troupe_framework::remote::current_cause();
        if cause.is_some() || !self.causes.is_empty() {
            self.causes.push((self.out.sends.len(), cause));
        }
    }

    /// Feed one input to the core (if it runs), then carry out its outputs.
    fn input(
        &mut self,
        ctx: &mut Context<Self>,
        f: impl FnOnce(&mut P, Duration, &mut OutputsOf<P>),
    ) {
        let now = self.now();
        self.mark_cause();
        let Some(core) = self.core.as_mut() else {
            return;
        };
        f(core, now, &mut self.out);
        self.after_input(ctx, None);
    }

    /// After an input: the core's `persist`; `reply` answers the command
    /// that was the input. The outputs are carried out by the next
    /// [`Driver::flush_inputs`], which runs once the actor has handled
    /// every message already queued: the inputs of one turn share one
    /// store submission and one release.
    fn after_input(&mut self, ctx: &mut Context<Self>, reply: Option<Box<dyn Reply>>) {
        let Some(core) = self.core.as_mut() else {
            return;
        };
        core.persist(&mut self.out);
        if let Some(r) = reply {
            self.replies.push(r);
        }
        if !self.groups_commits {
            // No group commit: this input's writes are a submission (one
            // sync) of their own.
            self.flush_inputs(ctx);
            return;
        }
        if !self.flush_pending {
            self.flush_pending = true;
            // Spawned futures run after the mailbox is drained.
            ctx.spawn(actix::fut::ready(()).map(|(), act: &mut Self, ctx| act.flush_inputs(ctx)));
        }
    }

    /// Carry out (or hold) what the inputs since the last flush produced,
    /// in order, as one: the core's view after them, the waiters of what
    /// they settled, their replies.
    fn flush_inputs(&mut self, ctx: &mut Context<Self>) {
        self.flush_pending = false;
        let mut replies = std::mem::take(&mut self.replies);
        let Some(core) = self.core.as_mut() else {
            return;
        };
        let view = self.view.as_mut().and_then(|v| v(core));
        if let Some(w) = self.waiters.as_mut() {
            w.settle(core, &mut replies);
        }
        self.flush(ctx, view, replies);
    }

    fn fail(&mut self, ctx: &mut Context<Self>, e: &DurableError) {
        tracing::error!(protocol = %self.name, error = %e, "durable write failed; stopping the protocol (nothing of it is sent)");
        self.held.clear();
        self.core = None;
        ctx.stop();
    }

    /// Carry out the outputs of the input just fed; `view` publishes the
    /// core's new view and `replies` answer commands, once they are released.
    fn flush(
        &mut self,
        ctx: &mut Context<Self>,
        view: Option<Box<dyn FnOnce()>>,
        replies: Vec<Box<dyn Reply>>,
    ) {
        let out = self.out.take();
        if let Some(e) = out.write_error {
            self.fail(ctx, &e);
            return;
        }
        for op in out.timers {
            self.timer(ctx, op);
        }
        if !out.writes.is_empty() {
            self.submitted += 1;
            let ticket = self.submitted;
            match self.node.store().submit(&self.name, out.writes) {
                Completion::Done(Ok(r)) => self.synced(ticket, r),
                Completion::Done(Err(e)) => return self.fail(ctx, &e),
                Completion::Waiting(rx) => {
                    ctx.spawn(actix::fut::wrap_future::<_, Self>(rx).map(
                        move |answer, act, ctx| match answer {
                            Ok(Ok(r)) => {
                                act.synced(ticket, r);
                                act.release(ctx);
                            }
                            Ok(Err(e)) => act.fail(ctx, &e),
                            Err(_) => act.fail(
                                ctx,
                                &DurableError::Store("the store stopped before answering".into()),
                            ),
                        },
                    ));
                }
            }
        }
        let held = Held {
            ticket: self.submitted,
            sends: out.sends,
            causes: std::mem::take(&mut self.causes),
            view,
            events: out.events,
            replies,
        };
        if self.held.is_empty() && held.ticket <= self.durable {
            self.carry_out(ctx, held);
        } else {
            self.held.push_back(held);
        }
    }

    fn synced(&mut self, ticket: u64, r: SyncReport) {
        self.durable = self.durable.max(ticket);
        if self.node.tracing() {
            self.node.trace(TraceEvent::Sync {
                protocol: self.name.clone(),
                sync: r.sync,
                group: r.group,
                writes: r.writes,
            });
        }
    }

    /// Carry out every held batch whose writes are now durable, in order.
    fn release(&mut self, ctx: &mut Context<Self>) {
        while self.held.front().is_some_and(|h| h.ticket <= self.durable) {
            if let Some(h) = self.held.pop_front() {
                self.carry_out(ctx, h);
            }
        }
    }

    fn timer(&mut self, ctx: &mut Context<Self>, op: TimerOp<P::Timer>) {
        match op {
            TimerOp::Set { after, timer } => {
                let (token, old) = self.timers.set(timer.clone());
                if let Some(h) = old.and_then(|o| self.timer_handles.remove(&o)) {
                    ctx.cancel_future(h);
                }
                let h = ctx.run_later(after, move |act, ctx| {
                    act.timer_handles.remove(&token);
                    if !act.timers.fire(token) {
                        return;
                    }
                    if act.node.tracing() {
                        act.node.trace(TraceEvent::Timer {
                            name: format!("{}:{:?}", act.name, timer),
                        });
                    }
                    act.input(ctx, |core, now, out| core.on_timer(now, timer, out));
                });
                self.timer_handles.insert(token, h);
            }
            TimerOp::Cancel(timer) => {
                if let Some(h) = self
                    .timers
                    .cancel(&timer)
                    .and_then(|t| self.timer_handles.remove(&t))
                {
                    ctx.cancel_future(h);
                }
            }
        }
    }

    fn carry_out(&mut self, ctx: &mut Context<Self>, held: Held<P>) {
        let mut causes = held.causes.into_iter().peekable();
        let mut cause: Option<Cause> = None;
        for (i, (to, msg)) in held.sends.into_iter().enumerate() {
            while causes.peek().is_some_and(|(from, _)| *from <= i) {
                cause = causes.next().and_then(|(_, c)| c);
            }
            let node = to.node_name();
            // Looked up by the borrowed name: no allocation per send.
            let peer = match self.peers.get(node) {
                Some(r) => r,
                None => match ActorPath::new(node.to_string(), self.name.clone()) {
                    Ok(path) => {
                        let mut r = self
                            .node
                            .actor_ref::<Wire<P::Msg>>(path)
                            .from_actor(self.name.clone());
                        if self.control {
                            r = r.control();
                        }
                        self.peers.entry(node.to_string()).or_insert(r)
                    }
                    Err(e) => {
                        tracing::warn!(protocol = %self.name, peer = %node, error = %e, "bad peer name; message dropped");
                        continue;
                    }
                },
            };
            if self.backlog.borrow().has(node) {
                // Behind what is kept for this peer: in order.
                let peer = peer.clone();
                self.keep(ctx, node, peer, Wire(msg));
                continue;
            }
            let sent = if cause.is_some() {
                troupe_framework::remote::with_cause(cause.clone(), || {
                    peer.tell_or_return(Wire(msg))
                })
            } else {
                peer.tell_or_return(Wire(msg))
            };
            match sent {
                Ok(()) => {}
                Err((_, Some(msg))) => {
                    let peer = peer.clone();
                    self.keep(ctx, node, peer, msg);
                }
                Err((e, None)) => {
                    tracing::debug!(protocol = %self.name, peer = %node, error = %e, "protocol message not sent");
                }
            }
        }
        if let Some(publish) = held.view {
            publish();
        }
        if !held.events.is_empty() {
            if let Some(h) = self.hook.as_mut() {
                h(&self.node, &held.events);
            }
            // One look at the subscribers per batch rather than a locked
            // send per event that no one would receive (Raft emits one per
            // applied entry).
            if self.events.receiver_count() > 0 {
                for ev in held.events {
                    let _ = self.events.send(ev);
                }
            }
        }
        let mut backlog = self.backlog.borrow_mut();
        if backlog.kept > BACKLOG_HIGH || !backlog.replies.is_empty() {
            // Back-pressure: the commands' callers wait for the backlog.
            backlog.replies.extend(held.replies);
            return;
        }
        drop(backlog);
        for r in held.replies {
            r.send();
        }
    }

    /// Keep `msg` for `node`, whose transport queue is full (see
    /// [`Backlog`]), and start sending that peer's backlog if no task does.
    fn keep(
        &mut self,
        ctx: &mut Context<Self>,
        node: &str,
        peer: RemoteRef<Wire<P::Msg>>,
        msg: Wire<P::Msg>,
    ) {
        let mut backlog = self.backlog.borrow_mut();
        let b = &mut *backlog;
        let p = b
            .peers
            .entry(node.to_string())
            .or_insert_with(|| PeerBacklog {
                queue: VecDeque::new(),
                draining: false,
            });
        if p.queue.len() >= BACKLOG_CAP {
            tracing::debug!(protocol = %self.name, peer = %node, "protocol message not sent: the peer's backlog is full");
            return;
        }
        p.queue.push_back(msg);
        b.kept += 1;
        if p.draining {
            return;
        }
        p.draining = true;
        drop(backlog);
        let (shared, node, name) = (self.backlog.clone(), node.to_string(), self.name.clone());
        ctx.spawn(actix::fut::wrap_future::<_, Self>(async move {
            loop {
                let next = {
                    let mut b = shared.borrow_mut();
                    let b = &mut *b;
                    let Some(p) = b.peers.get_mut(&node) else {
                        break;
                    };
                    match p.queue.pop_front() {
                        Some(m) => {
                            b.kept -= 1;
                            m
                        }
                        None => {
                            p.draining = false;
                            break;
                        }
                    }
                };
                let sent = tokio::time::timeout(BACKLOG_WAIT, peer.tell_wait(next)).await;
                let failed = match sent {
                    Ok(Ok(())) => None,
                    Ok(Err(e)) => Some(e.to_string()),
                    Err(_) => Some(format!("no room in its queue for {BACKLOG_WAIT:?}")),
                };
                let mut b = shared.borrow_mut();
                if let Some(why) = failed {
                    // Lost, as a dropped message is: the cores recover it.
                    let dropped = b.peers.get_mut(&node).map_or(0, |p| {
                        p.draining = false;
                        std::mem::take(&mut p.queue).len()
                    });
                    b.kept -= dropped;
                    tracing::debug!(protocol = %name, peer = %node, error = %why, dropped, "protocol messages not sent");
                }
                let replies = b.release();
                let stop = !b.peers.get(&node).is_some_and(|p| p.draining);
                drop(b);
                for r in replies {
                    r.send();
                }
                if stop {
                    break;
                }
            }
            // Whatever the backlog still holds back goes once it is low.
            let replies = shared.borrow_mut().release();
            for r in replies {
                r.send();
            }
        }));
    }
}

impl<P> Actor for Driver<P>
where
    P: Drivable,
{
    type Context = Context<Self>;

    fn started(&mut self, ctx: &mut Context<Self>) {
        if let Some(e) = self.failed.take() {
            tracing::error!(protocol = %self.name, error = %e, "cannot rebuild the protocol from its durable state; stopping");
            ctx.stop();
            return;
        }
        self.input(ctx, |core, now, out| core.on_start(now, out));
        if self.membership {
            let now = self.now();
            let view = self.node.membership();
            for (member, status) in view.iter() {
                if let Some(id) = P::Id::from_member_name(member) {
                    let ev = MemberEvent {
                        member: id,
                        status,
                        at: now,
                    };
                    self.input(ctx, |core, now, out| core.on_membership(now, ev, out));
                }
            }
            ctx.add_stream(membership_stream(self.node.clone()));
        }
    }
}

fn membership_stream(node: Node) -> impl futures::Stream<Item = MemberEvent<String>> {
    let rx = node.subscribe_membership();
    futures::stream::unfold((rx, node), |(mut rx, node)| async move {
        loop {
            match rx.recv().await {
                Ok(ev) => return Some((ev, (rx, node))),
                Err(broadcast::error::RecvError::Lagged(n)) => {
                    tracing::warn!(node = %node.name(), missed = n, "protocol lagged behind membership events");
                }
                Err(broadcast::error::RecvError::Closed) => return None,
            }
        }
    })
}

impl<P> StreamHandler<MemberEvent<String>> for Driver<P>
where
    P: Drivable,
{
    fn handle(&mut self, ev: MemberEvent<String>, ctx: &mut Context<Self>) {
        if let Some(member) = P::Id::from_member_name(&ev.member) {
            let ev = MemberEvent {
                member,
                status: ev.status,
                at: ev.at,
            };
            self.input(ctx, |core, now, out| core.on_membership(now, ev, out));
        }
    }
    fn finished(&mut self, _ctx: &mut Context<Self>) {}
}

impl<P> Handler<Sender<Wire<P::Msg>>> for Driver<P>
where
    P: Drivable,
{
    type Result = ();
    fn handle(&mut self, m: Sender<Wire<P::Msg>>, ctx: &mut Context<Self>) {
        let from = P::Id::from_node(&m.from);
        self.input(ctx, |core, now, out| {
            core.on_message(now, from, m.msg.0, out)
        });
    }
}

impl<P, R> Handler<Invoke<P, R>> for Driver<P>
where
    P: Drivable,
    R: Send + 'static,
{
    type Result = ResponseFuture<Result<R, DriverError>>;
    fn handle(&mut self, m: Invoke<P, R>, ctx: &mut Context<Self>) -> Self::Result {
        let now = self.now();
        let name = self.name.clone();
        let Some(core) = self.core.as_mut() else {
            return Box::pin(async move { Err(DriverError::NotRunning(name)) });
        };
        if !self.causes.is_empty() {
            self.causes.push((self.out.sends.len(), None));
        }
        let r = (m.0)(core, now, &mut self.out);
        let (tx, rx) = oneshot::channel();
        self.after_input(ctx, Some(Box::new(move || drop(tx.send(r)))));
        Box::pin(async move { rx.await.map_err(|_| DriverError::NotRunning(name)) })
    }
}

impl<P> Handler<Await<P>> for Driver<P>
where
    P: Drivable + Settles,
{
    type Result = ();
    fn handle(&mut self, m: Await<P>, ctx: &mut Context<Self>) {
        let now = self.now();
        // Not running: dropping the command answers `NotRunning`.
        let Some(core) = self.core.as_mut() else {
            return;
        };
        let mut job = m.0;
        let reply = match job.start(core, now, &mut self.out) {
            None => Some(job as Box<dyn Reply>),
            Some(token) => {
                let w = self.waiters.get_or_insert_with(|| {
                    Box::new(Waiters::<P> {
                        waiting: HashMap::default(),
                        taken: Vec::new(),
                    })
                });
                if let Some(w) = w.as_any().downcast_mut::<Waiters<P>>() {
                    w.waiting.insert(token, job);
                }
                None
            }
        };
        self.after_input(ctx, reply);
    }
}

/// Makes a fresh event hook for each (re)start of a driver.
pub type HookFactory<P> = Arc<dyn Fn() -> EventHook<P> + Send + Sync>;

/// Makes a fresh view hook for each (re)start of a driver.
type ViewFactory<P> = Arc<dyn Fn() -> ViewHook<P> + Send + Sync>;

/// How to run a protocol core as a supervised actor: build with
/// [`DriverSpec::new`] (a core without durable state) or
/// [`DriverSpec::recovering`], then [`spawn_driver`] (under the node's root
/// supervisor) or [`DriverSpec::into_actor`] (to place it in an app's tree).
pub struct DriverSpec<P: Protocol> {
    name: String,
    make: MakeCore<P>,
    membership: bool,
    control: bool,
    hook: Option<HookFactory<P>>,
    view: Option<ViewFactory<P>>,
}

impl<P: Protocol> DriverSpec<P> {
    /// Actor `name`, whose core `make` builds on every (re)start; for cores
    /// that keep nothing durable.
    pub fn new(name: impl Into<String>, make: impl Fn(&Node) -> P + Send + Sync + 'static) -> Self {
        Self::recovering(name, move |n, _| Ok(make(n)))
    }
    /// Actor `name`, whose core `make` rebuilds on every (re)start from what
    /// the protocol made durable in the node's store (its namespace is
    /// `name`). If `make` fails, the actor stops (and its supervisor decides).
    pub fn recovering(
        name: impl Into<String>,
        make: impl Fn(&Node, &Recovered) -> Result<P, DurableError> + Send + Sync + 'static,
    ) -> Self {
        Self {
            name: name.into(),
            make: Arc::new(make),
            membership: false,
            control: false,
            hook: None,
            view: None,
        }
    }
    /// Feed the node's membership events to the core.
    pub fn membership(mut self) -> Self {
        self.membership = true;
        self
    }
    /// Send the protocol's messages as control traffic.
    pub fn control(mut self) -> Self {
        self.control = true;
        self
    }
    /// Call a hook (made fresh on each start) with each input's events.
    pub fn hook(mut self, hook: HookFactory<P>) -> Self {
        self.hook = Some(hook);
        self
    }
    /// The actor's name (and store namespace).
    pub fn name(&self) -> &str {
        &self.name
    }
    /// Publish `view(core)` on a watch channel after every turn of inputs
    /// that changes it, when those inputs' outputs are carried out (so a
    /// view never shows state that is not durable yet), across restarts
    /// too.
    /// Returns the spec and a receiver of the views.
    pub fn view<V>(
        self,
        view: impl Fn(&P) -> V + Send + Sync + 'static,
    ) -> (Self, watch::Receiver<V>)
    where
        V: Clone + PartialEq + Default + Send + Sync + 'static,
        P: 'static,
    {
        self.view_unless(view, |_, _| false)
    }
    /// [`DriverSpec::view`], skipping the view after an input when
    /// `unchanged(core, last)` says it would equal the last one (a cheap
    /// check instead of building the view after every turn).
    pub fn view_unless<V>(
        mut self,
        view: impl Fn(&P) -> V + Send + Sync + 'static,
        unchanged: impl Fn(&P, &V) -> bool + Send + Sync + 'static,
    ) -> (Self, watch::Receiver<V>)
    where
        V: Clone + PartialEq + Default + Send + Sync + 'static,
        P: 'static,
    {
        let (tx, rx) = watch::channel(V::default());
        let tx = Arc::new(tx);
        let view = Arc::new(view);
        let unchanged = Arc::new(unchanged);
        self.view = Some(Arc::new(move || {
            let (tx, view, unchanged) = (tx.clone(), view.clone(), unchanged.clone());
            let mut last: Option<V> = None;
            Box::new(move |core: &P| {
                if last.as_ref().is_some_and(|l| unchanged(core, l)) {
                    return None;
                }
                let v = view(core);
                if last.as_ref() == Some(&v) {
                    return None;
                }
                last = Some(v.clone());
                let tx = tx.clone();
                Some(Box::new(move || {
                    tx.send_if_modified(|cur| {
                        let changed = *cur != v;
                        *cur = v;
                        changed
                    });
                }) as Box<dyn FnOnce()>)
            }) as ViewHook<P>
        }));
        (self, rx)
    }
}

impl<P: Drivable> DriverSpec<P> {
    /// The supervised actor spec of this driver on `node`, and the handle to
    /// reach it once it runs: add the spec to any supervisor (an app's tree)
    /// or let [`spawn_driver`] put it under the node's root.
    pub fn into_actor(self, node: &Node) -> (ActorSpec<Driver<P>>, DriverHandle<P>) {
        let (events, _) = broadcast::channel(1024);
        let ev = events.clone();
        let n = node.clone();
        let DriverSpec {
            name,
            make,
            membership,
            control,
            hook,
            view,
        } = self;
        let actor_name = name.clone();
        let actor = ActorSpec::new(name.clone(), move || {
            let core = n.store().load(&actor_name).and_then(|r| make(&n, &r));
            let mut d = Driver::build(core, n.clone(), actor_name.clone(), ev.clone());
            d.membership = membership;
            d.control = control;
            d.hook = hook.as_ref().map(|h| h());
            d.view = view.as_ref().map(|v| v());
            d
        })
        .handles_from::<Wire<P::Msg>>();
        let handle = DriverHandle {
            node: node.clone(),
            name,
            events,
            addr: Arc::new(Mutex::new(None)),
        };
        (actor, handle)
    }
}

/// Spawn a driver as a named actor supervised under the node's root.
/// Returns a handle to send commands and subscribe to events.
pub async fn spawn_driver<P>(
    node: &Node,
    spec: DriverSpec<P>,
) -> Result<DriverHandle<P>, troupe_framework::NodeError>
where
    P: Drivable,
{
    let (actor, handle) = spec.into_actor(node);
    node.spawn(actor).await?;
    Ok(handle)
}

/// Local access to a running driver: commands and events.
pub struct DriverHandle<P: Drivable> {
    node: Node,
    name: String,
    events: broadcast::Sender<P::Event>,
    /// The running driver's address, looked up in the node's registry
    /// again only once it is gone (a restart).
    addr: Arc<Mutex<Option<Addr<Driver<P>>>>>,
}

impl<P: Drivable> Clone for DriverHandle<P> {
    fn clone(&self) -> Self {
        Self {
            node: self.node.clone(),
            name: self.name.clone(),
            events: self.events.clone(),
            addr: self.addr.clone(),
        }
    }
}

/// The answer to an [`Await`] command ([`DriverHandle::settle`]).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Awaited<T> {
    /// What the command answered: at once, or once its request settled.
    Done(T),
    /// The command never ran (the protocol is not running): the core did
    /// not see it.
    NotRunning,
    /// The core took the request, but this life of the protocol stopped
    /// before settling it: it may or may not have taken effect.
    Dropped,
}

/// The [`AwaitJob`] of [`DriverHandle::settle`]: its two closures, the
/// answer once known, and where to send it.
struct Job<S, F, T> {
    start: Option<S>,
    finish: Option<F>,
    value: Option<T>,
    answer: Answer<T>,
}

impl<P, S, F, T> AwaitJob<P> for Job<S, F, T>
where
    P: Settles,
    S: FnOnce(&mut P, Duration, &mut OutputsOf<P>) -> Result<P::Token, T> + Send,
    F: FnOnce(&mut P, P::Token, P::Settled) -> T + Send,
    T: Send,
{
    fn start(&mut self, core: &mut P, now: Duration, out: &mut OutputsOf<P>) -> Option<P::Token> {
        match (self.start.take()?)(core, now, out) {
            Ok(token) => {
                self.answer.taken = true;
                Some(token)
            }
            Err(v) => {
                self.value = Some(v);
                None
            }
        }
    }
    fn settle(&mut self, core: &mut P, token: P::Token, settled: P::Settled) {
        if let Some(finish) = self.finish.take() {
            self.value = Some(finish(core, token, settled));
        }
    }
}

impl<S, F, T> Reply for Job<S, F, T> {
    fn send(self: Box<Self>) {
        let Job { value, answer, .. } = *self;
        // Without a value (never settled) the answer's drop says why.
        if let Some(v) = value {
            answer.send(v);
        }
    }
}

/// Sends an [`Awaited`] answer exactly once: what it was given, or, when
/// dropped unanswered, `NotRunning` before the core took the request and
/// `Dropped` after.
struct Answer<T> {
    tx: Option<oneshot::Sender<Awaited<T>>>,
    taken: bool,
}

impl<T> Answer<T> {
    fn send(mut self, v: T) {
        if let Some(tx) = self.tx.take() {
            let _ = tx.send(Awaited::Done(v));
        }
    }
}

impl<T> Drop for Answer<T> {
    fn drop(&mut self) {
        if let Some(tx) = self.tx.take() {
            let _ = tx.send(if self.taken {
                Awaited::Dropped
            } else {
                Awaited::NotRunning
            });
        }
    }
}

/// Why a command to a driver failed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum DriverError {
    /// The protocol actor is not running (stopped, or restarting).
    #[error("protocol actor {0:?} is not running")]
    NotRunning(String),
}

impl<P> DriverHandle<P>
where
    P: Drivable,
{
    /// Subscribe to the protocol's events.
    pub fn subscribe(&self) -> broadcast::Receiver<P::Event> {
        self.events.subscribe()
    }

    /// The node this protocol runs on.
    pub fn node(&self) -> &Node {
        &self.node
    }

    /// Run `f` with the running driver's address: the cached one while it
    /// is connected, else looked up again.
    fn with_addr<T>(&self, f: impl FnOnce(&Addr<Driver<P>>) -> T) -> Result<T, DriverError> {
        let mut cached = self.addr.lock().unwrap_or_else(|p| p.into_inner());
        match cached.as_ref() {
            Some(a) if a.connected() => Ok(f(a)),
            _ => {
                let a = self
                    .node
                    .registry()
                    .typed_addr::<Driver<P>>(&self.name)
                    .ok_or_else(|| DriverError::NotRunning(self.name.clone()))?;
                let r = f(&a);
                *cached = Some(a);
                Ok(r)
            }
        }
    }

    /// Run `f` against the core without waiting (for use in `Drop`).
    pub fn invoke_detached(
        &self,
        f: impl FnOnce(&mut P, Duration, &mut OutputsOf<P>) + Send + 'static,
    ) -> Result<(), DriverError> {
        self.with_addr(|a| a.do_send(Invoke::<P, ()>(Box::new(f))))
    }

    /// The driver's actor name.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// Run `f` against the core and return its result, once everything the
    /// core has written up to and including this command is durable.
    pub async fn invoke<R: Send + 'static>(
        &self,
        f: impl FnOnce(&mut P, Duration, &mut OutputsOf<P>) -> R + Send + 'static,
    ) -> Result<R, DriverError> {
        self.with_addr(|a| a.send(Invoke(Box::new(f))))?
            .await
            .map_err(|_| DriverError::NotRunning(self.name.clone()))?
    }
}

impl<P> DriverHandle<P>
where
    P: Drivable + Settles,
    P::Token: Send + 'static,
    P::Settled: 'static,
{
    /// A request answered once the core settles it, in one message to the
    /// driver: `start` runs against the core (with the current time and
    /// the output buffer) and either takes the request, returning the
    /// core's token for it, or answers at once (`Err`: a refusal). Once
    /// the core settles the token, `finish` runs against the core (as it
    /// is after the input that settled it) with the token and the
    /// settlement, and its value is the answer. Every answer leaves once everything the core
    /// wrote up to the input that produced it is durable.
    ///
    /// [`Awaited::NotRunning`]: `start` never ran; [`Awaited::Dropped`]:
    /// the request was taken, then the protocol stopped (or restarted)
    /// before settling it. A caller that stops waiting (a timeout) leaves
    /// the waiter to be dropped when the token settles.
    pub async fn settle<T: Send + 'static>(
        &self,
        start: impl FnOnce(&mut P, Duration, &mut OutputsOf<P>) -> Result<P::Token, T> + Send + 'static,
        finish: impl FnOnce(&mut P, P::Token, P::Settled) -> T + Send + 'static,
    ) -> Awaited<T> {
        let (tx, rx) = oneshot::channel();
        let job = Job {
            start: Some(start),
            finish: Some(finish),
            value: None,
            answer: Answer {
                tx: Some(tx),
                taken: false,
            },
        };
        let command: Box<dyn AwaitJob<P>> = Box::new(job);
        // A mailbox that is closed drops the command: `NotRunning`.
        if self.with_addr(|a| a.do_send(Await(command))).is_err() {
            return Awaited::NotRunning;
        }
        // Every path answers before dropping the sender; a lost one can
        // only be a command taken and then lost with its actor.
        rx.await.unwrap_or(Awaited::Dropped)
    }
}

/// Run `f` against the core of the driver actor `name` on `node` (a core of
/// type `P`), without its handle: how a status page reads every election a
/// node runs. Answered as [`DriverHandle::invoke`] is.
pub async fn invoke_named<P: Drivable, R: Send + 'static>(
    node: &Node,
    name: &str,
    f: impl FnOnce(&mut P, Duration, &mut OutputsOf<P>) -> R + Send + 'static,
) -> Result<R, DriverError> {
    let addr = node
        .registry()
        .typed_addr::<Driver<P>>(name)
        .ok_or_else(|| DriverError::NotRunning(name.to_string()))?;
    addr.send(Invoke(Box::new(f)))
        .await
        .map_err(|_| DriverError::NotRunning(name.to_string()))?
}

#[cfg(test)]
mod tests {
    use super::*;

    fn kept(b: &mut Backlog<u8>, peer: &str, n: usize) {
        let p = b
            .peers
            .entry(peer.to_string())
            .or_insert_with(|| PeerBacklog {
                queue: VecDeque::new(),
                draining: true,
            });
        for i in 0..n {
            p.queue.push_back(Wire(i as u8));
        }
        b.kept += n;
    }

    #[test]
    fn a_peer_has_a_backlog_only_while_sends_are_kept_for_it() {
        let mut b = Backlog::<u8>::default();
        assert!(!b.has("b"));
        kept(&mut b, "b", 2);
        assert!(b.has("b"));
        assert!(!b.has("c"), "another peer's sends go straight out");
        b.peers.get_mut("b").unwrap().queue.clear();
        b.kept = 0;
        assert!(!b.has("b"));
    }

    #[test]
    fn replies_wait_until_the_backlog_is_below_half_its_high_mark() {
        let sent = Rc::new(RefCell::new(0));
        let mut b = Backlog::<u8>::default();
        kept(&mut b, "b", BACKLOG_HIGH + 1);
        for _ in 0..3 {
            let s = sent.clone();
            b.replies.push(Box::new(move || *s.borrow_mut() += 1));
        }
        assert!(b.release().is_empty(), "above the high mark");
        b.kept = BACKLOG_HIGH / 2;
        assert!(b.release().is_empty(), "at half the high mark");
        b.kept = BACKLOG_HIGH / 2 - 1;
        let replies = b.release();
        assert_eq!(replies.len(), 3, "below half: every reply, in order");
        for r in replies {
            r.send();
        }
        assert_eq!(*sent.borrow(), 3);
        assert!(b.replies.is_empty());
        assert!(b.release().is_empty());
    }
}
