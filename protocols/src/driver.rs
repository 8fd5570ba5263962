//! The thin actor around a sans-IO protocol core.
//!
//! [`Driver`] is the one actor every protocol runs in. It owns a core (any
//! [`Protocol`]) and carries out what the core returns:
//!
//! - **sends** become [`Wire`] tells to the actor of the same name on the
//!   destination node (location-transparent: a send to this node goes
//!   straight into its own mailbox);
//! - **timers** become actix `run_later` timers (virtual time in simulations);
//! - **events** go to every subscriber ([`DriverHandle::subscribe`]) and to an
//!   optional hook (the failure detector's hook publishes membership).
//!
//! Inputs come from peers' `Wire` messages (with the authenticated sender),
//! from fired timers, from the node's membership events (when the protocol
//! asks for them), and from local commands ([`Invoke`]: a closure run against
//! the core, which is how typed APIs like `lock.acquire()` are built).
//!
//! Guarantees: the core sees inputs one at a time, in the order the actor
//! handles them, with the node's clock; outputs are carried out in the order
//! produced. A message the network refuses (unknown peer, full queue) is
//! dropped with a debug log — protocols are written for lossy networks. If
//! the driver is restarted by its supervisor, the core is rebuilt from its
//! factory (and whatever it persisted in the node's storage); timers of the
//! old life never fire.

use std::collections::BTreeMap;
use std::fmt::Debug;
use std::time::Duration;

use actix::prelude::*;
use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};
use tokio::sync::broadcast;
use troupe_framework::membership::MemberEvent;
use troupe_framework::remote::Sender;
use troupe_framework::sansio::{Outputs, Protocol};
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

/// A protocol message type that can travel between drivers.
pub trait WireMessage: Serialize + DeserializeOwned + Clone + Debug + Send + 'static {
    /// Its stable wire name, e.g. `"mutex.ricart-agrawala"`.
    const WIRE_NAME: &'static str;
}

impl<Id: crate::fd::FdId> WireMessage for crate::fd::FdMessage<Id> {
    const WIRE_NAME: &'static str = "troupe.fd";
}

impl WireMessage for crate::mutex::AnyMutexMsg {
    const WIRE_NAME: &'static str = "troupe.mutex";
}

impl<Id> WireMessage for crate::election::AnyElectionMsg<Id>
where
    Id: Serialize + DeserializeOwned + Clone + Debug + Send + 'static,
{
    const WIRE_NAME: &'static str = "troupe.election";
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
/// and the output buffer), then carry out what it produced.
pub struct Invoke<P: Protocol, R>(pub Command<P, R>);

/// The closure inside an [`Invoke`].
pub type Command<P, R> = Box<dyn FnOnce(&mut P, Duration, &mut OutputsOf<P>) -> R + Send>;

impl<P: Protocol, R: Send + 'static> actix::Message for Invoke<P, R> {
    type Result = R;
}

/// A hook called with the events of each input.
pub type EventHook<P> = Box<dyn FnMut(&Node, &[<P as Protocol>::Event])>;

/// The actor that drives core `P`. Build it with [`Driver::new`] inside an
/// `ActorSpec` factory (so a restart builds a fresh one).
pub struct Driver<P: Drivable> {
    // Boxed so the actor is `Unpin` whatever the core's types are.
    core: Box<P>,
    node: Node,
    name: String,
    out: Box<OutputsOf<P>>,
    events: broadcast::Sender<P::Event>,
    hook: Option<EventHook<P>>,
    membership: bool,
    control: bool,
    peers: BTreeMap<String, RemoteRef<Wire<P::Msg>>>,
    persist: Option<Persist<P>>,
}

type SnapshotFn<P> = Box<dyn Fn(&P) -> Vec<u8>>;

/// What the driver writes to the node's storage after each input.
pub struct Persist<P> {
    key: String,
    snapshot: SnapshotFn<P>,
    last: Option<Vec<u8>>,
}

impl<P> Persist<P> {
    /// Store `snapshot(core)` under `key` whenever it changes.
    pub fn new(key: impl Into<String>, snapshot: impl Fn(&P) -> Vec<u8> + 'static) -> Self {
        Self {
            key: key.into(),
            snapshot: Box::new(snapshot),
            last: None,
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
        Self {
            core: Box::new(core),
            node,
            name: name.into(),
            out: Box::new(Outputs::new()),
            events,
            hook: None,
            membership: false,
            control: false,
            peers: BTreeMap::new(),
            persist: None,
        }
    }

    /// Send this protocol's messages as control traffic (see
    /// [`RemoteRef::control`]): for failure detectors, whose heartbeats must
    /// not wait behind application payloads.
    pub fn with_control(mut self) -> Self {
        self.control = true;
        self
    }

    /// After every input, and before any of its messages are sent, write the
    /// core's durable state to the node's storage (when it changed). If the
    /// write fails, the outputs are dropped and the actor stops (its
    /// supervisor restarts it from what *was* persisted), so nothing is ever
    /// sent on the strength of state that is not on disk.
    pub fn with_persist(mut self, persist: Persist<P>) -> Self {
        self.persist = Some(persist);
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

    fn flush(&mut self, ctx: &mut Context<Self>) {
        let out = self.out.take();
        if let Some(p) = self.persist.as_mut() {
            let bytes = (p.snapshot)(&self.core);
            if p.last.as_ref() != Some(&bytes) {
                if let Err(e) = self.node.storage().put(&p.key, &bytes) {
                    tracing::error!(protocol = %self.name, error = %e, "cannot persist protocol state; stopping");
                    ctx.stop();
                    return;
                }
                p.last = Some(bytes);
            }
        }
        for (to, msg) in out.sends {
            let node = to.node_name().to_string();
            let peer = match self.peers.get(&node) {
                Some(r) => r,
                None => match ActorPath::new(node.clone(), self.name.clone()) {
                    Ok(path) => {
                        let mut r = self
                            .node
                            .actor_ref::<Wire<P::Msg>>(path)
                            .from_actor(self.name.clone());
                        if self.control {
                            r = r.control();
                        }
                        self.peers.entry(node.clone()).or_insert(r)
                    }
                    Err(e) => {
                        tracing::warn!(protocol = %self.name, peer = %node, error = %e, "bad peer name; message dropped");
                        continue;
                    }
                },
            };
            if let Err(e) = peer.tell(Wire(msg)) {
                tracing::debug!(protocol = %self.name, peer = %node, error = %e, "protocol message not sent");
            }
        }
        for (delay, timer) in out.timers {
            ctx.run_later(delay, move |act, ctx| {
                if act.node.tracing() {
                    act.node.trace(TraceEvent::Timer {
                        name: format!("{}:{:?}", act.name, timer),
                    });
                }
                let now = act.now();
                act.core.on_timer(now, timer, &mut act.out);
                act.flush(ctx);
            });
        }
        if !out.events.is_empty() {
            if let Some(h) = self.hook.as_mut() {
                h(&self.node, &out.events);
            }
            for ev in out.events {
                let _ = self.events.send(ev);
            }
        }
    }
}

impl<P> Actor for Driver<P>
where
    P: Drivable,
{
    type Context = Context<Self>;

    fn started(&mut self, ctx: &mut Context<Self>) {
        let now = self.now();
        self.core.on_start(now, &mut self.out);
        if self.membership {
            let view = self.node.membership();
            for (member, status) in view.iter() {
                if let Some(id) = P::Id::from_member_name(member) {
                    let ev = MemberEvent {
                        member: id,
                        status,
                        at: now,
                    };
                    self.core.on_membership(now, ev, &mut self.out);
                }
            }
            ctx.add_stream(membership_stream(self.node.clone()));
        }
        self.flush(ctx);
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
            let now = self.now();
            let ev = MemberEvent {
                member,
                status: ev.status,
                at: ev.at,
            };
            self.core.on_membership(now, ev, &mut self.out);
            self.flush(ctx);
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
        let now = self.now();
        self.core
            .on_message(now, P::Id::from_node(&m.from), m.msg.0, &mut self.out);
        self.flush(ctx);
    }
}

impl<P, R> Handler<Invoke<P, R>> for Driver<P>
where
    P: Drivable,
    R: Send + 'static,
{
    type Result = MessageResult<Invoke<P, R>>;
    fn handle(&mut self, m: Invoke<P, R>, ctx: &mut Context<Self>) -> Self::Result {
        let now = self.now();
        let r = (m.0)(&mut self.core, now, &mut self.out);
        self.flush(ctx);
        MessageResult(r)
    }
}

/// Makes a fresh event hook for each (re)start of a driver.
pub type HookFactory<P> = std::sync::Arc<dyn Fn() -> EventHook<P> + Send + Sync>;

type Snapshot<P> = std::sync::Arc<dyn Fn(&P) -> Vec<u8> + Send + Sync>;

/// How to run a protocol core as a supervised actor: build with
/// [`DriverSpec::new`], then [`spawn_driver`].
pub struct DriverSpec<P: Protocol> {
    name: String,
    make: std::sync::Arc<dyn Fn(&Node) -> P + Send + Sync>,
    membership: bool,
    control: bool,
    hook: Option<HookFactory<P>>,
    persist: Option<(String, Snapshot<P>)>,
}

impl<P: Protocol> DriverSpec<P> {
    /// Actor `name`, whose core `make` builds on every (re)start (reading
    /// the node's storage if it persists state).
    pub fn new(name: impl Into<String>, make: impl Fn(&Node) -> P + Send + Sync + 'static) -> Self {
        Self {
            name: name.into(),
            make: std::sync::Arc::new(make),
            membership: false,
            control: false,
            hook: None,
            persist: None,
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
    /// Persist `snapshot(core)` under storage `key` after every input,
    /// before its messages go out (see [`Driver::with_persist`]).
    pub fn persist(
        mut self,
        key: impl Into<String>,
        snapshot: impl Fn(&P) -> Vec<u8> + Send + Sync + 'static,
    ) -> Self {
        self.persist = Some((key.into(), std::sync::Arc::new(snapshot)));
        self
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
    let (events, _) = broadcast::channel(1024);
    let ev = events.clone();
    let n = node.clone();
    let DriverSpec {
        name,
        make,
        membership,
        control,
        hook,
        persist,
    } = spec;
    let actor_name = name.clone();
    let actor = troupe_framework::ActorSpec::new(name.clone(), move || {
        let mut d = Driver::new(make(&n), n.clone(), actor_name.clone(), ev.clone());
        if membership {
            d = d.with_membership();
        }
        if control {
            d = d.with_control();
        }
        if let Some(h) = &hook {
            d.hook = Some(h());
        }
        if let Some((key, snap)) = &persist {
            let snap = snap.clone();
            d = d.with_persist(Persist::new(key.clone(), move |p: &P| snap(p)));
        }
        d
    })
    .handles_from::<Wire<P::Msg>>();
    node.spawn(actor).await?;
    Ok(DriverHandle {
        node: node.clone(),
        name,
        events,
    })
}

/// Local access to a running driver: commands and events.
pub struct DriverHandle<P: Protocol> {
    node: Node,
    name: String,
    events: broadcast::Sender<P::Event>,
}

impl<P: Protocol> Clone for DriverHandle<P> {
    fn clone(&self) -> Self {
        Self {
            node: self.node.clone(),
            name: self.name.clone(),
            events: self.events.clone(),
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

    /// Run `f` against the core without waiting (for use in `Drop`).
    pub fn invoke_detached(
        &self,
        f: impl FnOnce(&mut P, Duration, &mut OutputsOf<P>) + Send + 'static,
    ) -> Result<(), DriverError> {
        let addr = self
            .node
            .registry()
            .typed_addr::<Driver<P>>(&self.name)
            .ok_or_else(|| DriverError::NotRunning(self.name.clone()))?;
        addr.do_send(Invoke::<P, ()>(Box::new(f)));
        Ok(())
    }

    /// The driver's actor name.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// Run `f` against the core and return its result.
    pub async fn invoke<R: Send + 'static>(
        &self,
        f: impl FnOnce(&mut P, Duration, &mut OutputsOf<P>) -> R + Send + 'static,
    ) -> Result<R, DriverError> {
        let addr = self
            .node
            .registry()
            .typed_addr::<Driver<P>>(&self.name)
            .ok_or_else(|| DriverError::NotRunning(self.name.clone()))?;
        addr.send(Invoke(Box::new(f)))
            .await
            .map_err(|_| DriverError::NotRunning(self.name.clone()))
    }
}
