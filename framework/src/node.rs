//! The node: the root of a process's actors and its door to the network.
//!
//! A [`Node`] is a cheap, cloneable handle to a running node. Behind it:
//!
//! - the **node actor** ([`NodeActor`]), root of the supervision tree: its
//!   root [`Supervisor`] (named after the node) holds every actor spawned with
//!   [`Node::spawn`] outside a [`SupervisorRef::scope`]; if the root
//!   supervisor gives up (restart limit) and escalates, or a subtree gives up
//!   with [`GiveUp::StopNode`](crate::supervision::GiveUp::StopNode), the
//!   node logs it and stops. Supervision events and tree snapshots are read
//!   with [`Node::supervision_events`] and [`Node::supervision_tree`];
//! - the **registry** of named local actors ([`Registry`]), read without locks
//!   by handles;
//! - the **RPC stub** ([`RpcStub`]) owning this node's outstanding remote asks;
//! - the **inbound dispatcher** ([`crate::dispatch`]), a task on the node
//!   actor's arbiter that takes frames from the transport and hands messages
//!   to local actors, in arrival order per actor, with bounded memory and
//!   back-pressure to the remote senders. Bad input never stops a node;
//! - the node's **metrics** ([`NodeMetrics`], [`Node::metrics`],
//!   [`Node::gather_metrics`]): its own Prometheus registry, per-message
//!   counters kept as traffic flows, the rest read when scraped.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use actix::prelude::*;
use tokio::sync::broadcast;

use crate::config::{NodeConfig, NodeOptions};
use crate::error::NodeError;
use crate::ids::{ActorPath, NameError, NodeId};
use crate::membership::{MemberEvent, MemberStatus, MembershipView};
use crate::metrics::{Families, NodeMetrics};
use crate::registry::Registry;
use crate::remote::RemoteMessage;
use crate::remote_ref::{ActorHandle, RemoteRef};
use crate::reply::Answering;
use crate::rpc::{DedupTable, Outstanding, RpcStub};
use crate::storage::{DurableStore, MemoryStore};
use crate::supervision::{
    start_root, ChildExited, ChildFactory, GetTree, Hub, RunningChild, StopNode, SupervisionEvent,
    Supervisor, SupervisorRef, SupervisorSpec, TreeNode,
};
use crate::trace::{TraceEvent, TraceSink};
use crate::transport::{InboundReceiver, Transport, TransportError};

/// Counters of what the node has seen; read with [`Node::stats`].
#[derive(Debug, Default)]
pub struct NodeStats {
    /// Frames received from the transport.
    pub frames_in: AtomicU64,
    /// Frames that did not decode.
    pub bad_frames: AtomicU64,
    /// Frames whose claimed sender differed from the authenticated peer.
    pub spoofed_frames: AtomicU64,
    /// Messages for an unknown actor or with an unknown type.
    pub undeliverable: AtomicU64,
    /// Copies of asks not executed again: running, already answered (the
    /// remembered reply is sent again) or finished at their sender.
    pub deduplicated: AtomicU64,
    /// Times a remote message found its actor's inbox full (its `mailbox`
    /// capacity of messages from the network), so that the
    /// dispatcher waited for room (parking what came meanwhile for that
    /// actor): a sign that an actor is slower than its remote senders.
    pub mailbox_full: AtomicU64,
    /// Tells not sent because their target node was `Down` or `Left` in
    /// this node's membership view (see [`TransportError::PeerDown`]).
    pub dropped_tells: AtomicU64,
}

/// A snapshot of [`NodeStats`] (serialized as is in the HTTP endpoint's
/// `/v1/status`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, serde::Serialize, serde::Deserialize)]
pub struct NodeStatsSnapshot {
    /// Frames received from the transport.
    pub frames_in: u64,
    /// Frames that did not decode.
    pub bad_frames: u64,
    /// Frames whose claimed sender differed from the authenticated peer.
    pub spoofed_frames: u64,
    /// Messages for an unknown actor or with an unknown type.
    pub undeliverable: u64,
    /// Copies of asks not executed again (see [`NodeStats::deduplicated`]).
    pub deduplicated: u64,
    /// Times a remote message found its actor's inbox full.
    pub mailbox_full: u64,
    /// Tells not sent because their target node was `Down` or `Left` in
    /// this node's membership view.
    #[serde(default)]
    pub dropped_tells: u64,
}

/// A transport-level connection change, as seen by this node.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PeerEvent {
    /// Connected to and confirmed the peer.
    Up(String),
    /// Lost the connection to the peer.
    Down(String),
}

pub(crate) struct NodeShared {
    pub(crate) id: NodeId,
    pub(crate) options: NodeOptions,
    pub(crate) registry: Registry,
    pub(crate) transport: Arc<dyn Transport>,
    pub(crate) rpc: Addr<RpcStub>,
    /// Remote asks waiting for their reply.
    pub(crate) asks: Arc<Outstanding>,
    pub(crate) root: Addr<Supervisor>,
    /// Where the supervisors publish their events.
    hub: Arc<Hub>,
    /// The root supervisor's policy (`[supervision]`).
    root_policy: crate::supervision::SupervisorPolicy,
    pub(crate) store: Arc<dyn DurableStore>,
    pub(crate) trace: Option<Arc<dyn TraceSink>>,
    /// Where frame events go: the trace, unless the transport records
    /// frames itself ([`Transport::traces_frames`]).
    pub(crate) frame_trace: Option<Arc<dyn TraceSink>>,
    /// The live tap on the node's frames (see [`crate::live`]).
    pub(crate) live: Arc<crate::live::LiveTraffic>,
    pub(crate) epoch: tokio::time::Instant,
    members: broadcast::Sender<MemberEvent<String>>,
    peers: broadcast::Sender<PeerEvent>,
    view: Mutex<MembershipView<String>>,
    /// The members the view says are `Down` or `Left`, read without a lock
    /// on every remote send.
    unreachable: arc_swap::ArcSwap<BTreeMap<String, MemberStatus>>,
    stopped: AtomicBool,
    /// Turns true when the node stops (for [`Node::stopped`]).
    stopped_watch: tokio::sync::watch::Sender<bool>,
    pub(crate) stats: NodeStats,
    /// The node's Lamport clock: ticked for every envelope sent, merged with
    /// every envelope received; stamped on every envelope, so traces can be
    /// drawn as space-time diagrams.
    lamport: Arc<AtomicU64>,
    /// Asks this node executes: what each answered, for retried copies
    /// (see [`crate::rpc`]). Checked by the dispatcher, filled in by
    /// whoever answers ([`crate::reply::ReplyTo`]).
    dedup: Mutex<DedupTable>,
    /// Asks handed to actors and not answered yet.
    pub(crate) answering: Answering,
    /// The node's metrics (see [`crate::metrics`]).
    pub(crate) metrics: Arc<NodeMetrics>,
    /// What the inbound dispatcher counts against
    /// `runtime.max_inflight_deliveries`, as of its last event.
    pub(crate) inbound_busy: AtomicUsize,
}

impl NodeShared {
    /// The error for a message to `node` when the membership view says it
    /// is `Down` or `Left` (one lock-free load when nobody is).
    pub(crate) fn unreachable(&self, node: &str) -> Option<TransportError> {
        let down = self.unreachable.load();
        if down.is_empty() {
            return None;
        }
        down.get(node).map(|status| TransportError::PeerDown {
            peer: node.to_string(),
            status: *status,
        })
    }

    /// The deduplication table of asks this node executes.
    pub(crate) fn dedup(&self) -> std::sync::MutexGuard<'_, DedupTable> {
        // No invariant spans a panic point: a poisoned table is usable.
        self.dedup.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// True once the node has stopped.
    pub(crate) fn is_stopped(&self) -> bool {
        self.stopped.load(Ordering::SeqCst)
    }

    /// Record a frame this node sent (`seq`: its Lamport stamp) and, when
    /// the transport refused it, its drop. Nothing when tracing is off.
    /// `cause`: the frame that caused it, if the caller knows (else the
    /// [current cause](crate::remote::current_cause)). `hint`: the sending
    /// handle's [`SlotHint`](crate::trace::SlotHint), if it keeps one (its
    /// sends always carry the same strings).
    #[allow(clippy::too_many_arguments)]
    #[inline]
    pub(crate) fn trace_send(
        &self,
        to: &str,
        seq: u64,
        bytes: usize,
        kind: &str,
        tag: &str,
        cause: Option<(&str, u64)>,
        sent: &Result<(), TransportError>,
        hint: Option<&crate::trace::SlotHint>,
    ) {
        if self.frame_trace.is_none() && !self.live.watching() {
            return;
        }
        let me = self.id.name.as_str();
        crate::remote::with_current_cause(|current| {
            let cause = cause.or(current);
            let event = crate::trace::FrameEvent::Send {
                to,
                seq,
                bytes,
                kind,
                tag,
                lamport: Some(seq),
                cause,
            };
            self.live.record(me, &event);
            if let Some(t) = &self.frame_trace {
                match hint {
                    // A hint names the strings of a send without a cause.
                    Some(hint) if cause.is_none() => t.record_send_hinted(me, &event, hint),
                    _ => t.record_frame(me, event),
                }
            }
        });
        if let Err(e) = sent {
            self.trace_refused(to, seq, e);
        }
    }

    /// Record that the transport refused the frame `seq` to `to`.
    #[cold]
    fn trace_refused(&self, to: &str, seq: u64, e: &TransportError) {
        let reason = e.to_string();
        self.record_frame(crate::trace::FrameEvent::Drop {
            from: self.id.name.as_str(),
            to: Some(to),
            seq,
            reason: &reason,
        });
    }

    /// Hand a frame event to the trace and the live tap (each when on).
    #[inline]
    pub(crate) fn record_frame(&self, event: crate::trace::FrameEvent<'_>) {
        self.live.record(&self.id.name, &event);
        if let Some(t) = &self.frame_trace {
            t.record_frame(&self.id.name, event);
        }
    }

    /// Record a frame received from `from` with `stamp`: delivered, or
    /// dropped for `reason`. Nothing when tracing is off.
    #[inline]
    pub(crate) fn trace_received(
        &self,
        from: &str,
        stamp: &Option<crate::codec::ClockStamp>,
        dropped: Option<&str>,
    ) {
        if !self.tracing() {
            return;
        }
        let seq = stamp.as_ref().and_then(|s| s.lamport).unwrap_or(0);
        let event = match dropped {
            None => crate::trace::FrameEvent::Deliver { from, seq },
            Some(reason) => crate::trace::FrameEvent::Drop {
                from,
                to: None,
                seq,
                reason,
            },
        };
        self.record_frame(event);
    }

    /// Record the frames stamped `seqs` from `from` as delivered together
    /// (one batch the dispatcher read): the trace takes them at once.
    pub(crate) fn trace_delivered(&self, from: &str, seqs: &[u64]) {
        if self.live.watching() {
            for &seq in seqs {
                self.live.record(
                    &self.id.name,
                    &crate::trace::FrameEvent::Deliver { from, seq },
                );
            }
        }
        if let Some(t) = &self.frame_trace {
            t.record_delivered(&self.id.name, from, seqs);
        }
    }

    /// True while frames are traced (to a trace, or to the live tap while
    /// someone watches it).
    #[inline]
    pub(crate) fn tracing(&self) -> bool {
        self.frame_trace.is_some() || self.live.watching()
    }

    /// Tick the node's Lamport clock for a send and return the stamp to carry.
    pub(crate) fn stamp(&self) -> Option<crate::codec::ClockStamp> {
        let t = self.lamport.fetch_add(1, Ordering::Relaxed) + 1;
        Some(crate::codec::ClockStamp {
            lamport: Some(t),
            vector: None,
        })
    }
    /// Merge a received stamp: `max(local, received) + 1`.
    pub(crate) fn observe(&self, stamp: &Option<crate::codec::ClockStamp>) {
        let received = stamp.as_ref().and_then(|s| s.lamport).unwrap_or(0);
        let _ = self
            .lamport
            .fetch_update(Ordering::Relaxed, Ordering::Relaxed, |l| {
                Some(l.max(received).saturating_add(1))
            });
    }
}

/// A handle to a running node. Clone it freely.
#[derive(Clone)]
pub struct Node {
    pub(crate) shared: Arc<NodeShared>,
    actor: Addr<NodeActor>,
}

/// Builds and starts a [`Node`].
pub struct NodeBuilder {
    config: NodeConfig,
    incarnation: Option<u128>,
    store: Option<Arc<dyn DurableStore>>,
    trace: Option<Arc<dyn TraceSink>>,
}

impl NodeBuilder {
    /// Use a chosen incarnation (simulations derive it from their seed);
    /// by default a random one.
    pub fn incarnation(mut self, incarnation: u128) -> Self {
        self.incarnation = Some(incarnation);
        self
    }
    /// Where the node's protocols keep durable state and logs (default: a
    /// [`MemoryStore`]).
    pub fn store(mut self, store: Arc<dyn DurableStore>) -> Self {
        self.store = Some(store);
        self
    }
    /// Where trace events go (default: nowhere).
    pub fn trace(mut self, sink: Arc<dyn TraceSink>) -> Self {
        self.trace = Some(sink);
        self
    }
    /// Start the node on `transport`, reading inbound events from `inbound`.
    /// Must be called inside a running actix system.
    pub fn start(
        self,
        transport: Arc<dyn Transport>,
        inbound: InboundReceiver,
    ) -> Result<Node, NodeError> {
        self.config.validate()?;
        if transport.local_name() != self.config.name {
            return Err(NodeError::Config(format!(
                "name {:?} differs from the transport's local name {:?}",
                self.config.name,
                transport.local_name()
            )));
        }
        let id = match self.incarnation {
            Some(i) => NodeId::with_incarnation(&self.config.name, i),
            None => NodeId::new(&self.config.name),
        };
        let options = self.config.runtime.clone();
        let metrics = Arc::new(NodeMetrics::new(options.message_metrics));
        let (dedup_ttl, dedup_capacity) = (options.dedup_ttl, options.dedup_capacity);
        let registry = Registry::new();
        let lamport = Arc::new(AtomicU64::new(0));
        let asks = Arc::new(Outstanding::new(&id));
        let rpc = RpcStub::new(transport.clone(), asks.clone()).start();
        let store = self.store.unwrap_or_else(|| Arc::new(MemoryStore::new()));
        let trace = self.trace;
        let frame_trace = trace.clone().filter(|_| !transport.traces_frames());
        let policy = self.config.supervision;
        let mut shared_out = None;
        let actor = NodeActor::create(|ctx| {
            let epoch = tokio::time::Instant::now();
            let hub = Arc::new(Hub::new(
                &id.name,
                epoch,
                trace.clone(),
                Some(ctx.address().recipient()),
            ));
            let spec = SupervisorSpec::new(id.name.clone(), policy);
            let (root, running, generation) = start_root(
                &spec,
                ctx.address().recipient(),
                registry.clone(),
                hub.clone(),
            );
            let (members, _) = broadcast::channel(1024);
            let (peers, _) = broadcast::channel(256);
            let shared = Arc::new(NodeShared {
                id,
                options,
                registry,
                transport,
                rpc,
                asks,
                root,
                hub,
                root_policy: policy,
                store,
                frame_trace,
                live: Arc::new(crate::live::LiveTraffic::default()),
                trace,
                epoch,
                members,
                peers,
                view: Mutex::new(MembershipView::new()),
                unreachable: arc_swap::ArcSwap::from_pointee(BTreeMap::new()),
                stopped: AtomicBool::new(false),
                stopped_watch: tokio::sync::watch::channel(false).0,
                stats: NodeStats::default(),
                lamport: lamport.clone(),
                dedup: Mutex::new(DedupTable::new(dedup_ttl, dedup_capacity)),
                answering: Answering::default(),
                metrics,
                inbound_busy: AtomicUsize::new(0),
            });
            shared_out = Some(shared.clone());
            NodeActor {
                shared,
                root: Some(running),
                root_generation: generation,
                inbound: Some(inbound),
                dispatcher: None,
            }
        });
        let shared = shared_out.ok_or(NodeError::Stopped)?;
        // Actor factories reach the node through the supervision hub; weak
        // links, as the node's state holds the hub.
        let (weak_shared, weak_actor) = (Arc::downgrade(&shared), actor.downgrade());
        shared.hub.link_node(Box::new(move || {
            Some(Node {
                shared: weak_shared.upgrade()?,
                actor: weak_actor.upgrade()?,
            })
        }));
        tracing::info!(node = %shared.id, "node started");
        Ok(Node { shared, actor })
    }
}

impl Node {
    /// Start building a node from its framework config.
    pub fn builder(config: NodeConfig) -> NodeBuilder {
        NodeBuilder {
            config,
            incarnation: None,
            store: None,
            trace: None,
        }
    }

    /// This node's id (name + incarnation).
    pub fn id(&self) -> &NodeId {
        &self.shared.id
    }
    /// This node's name.
    pub fn name(&self) -> &str {
        &self.shared.id.name
    }
    /// The node's runtime options.
    pub fn options(&self) -> &NodeOptions {
        &self.shared.options
    }
    /// The registry of named local actors.
    pub fn registry(&self) -> &Registry {
        &self.shared.registry
    }
    /// The node's durable store, shared by its protocols (each in its own
    /// namespace; see [`crate::storage`]).
    pub fn store(&self) -> &Arc<dyn DurableStore> {
        &self.shared.store
    }
    /// Time since the node started (virtual time in simulations): the `now`
    /// that protocol drivers feed to their sans-IO cores.
    pub fn now(&self) -> Duration {
        self.shared.epoch.elapsed()
    }
    /// Record a trace event for this node, if tracing is on.
    pub fn trace(&self, event: TraceEvent) {
        if let Some(t) = &self.shared.trace {
            t.record(&self.shared.id.name, event);
        }
    }
    /// Write out the trace lines recorded so far (see
    /// [`TraceSink::flush`]); nothing when tracing is off.
    pub fn flush_trace(&self) {
        if let Some(t) = &self.shared.trace {
            t.flush();
        }
    }
    /// True while tracing is on (to skip building events otherwise).
    pub fn tracing(&self) -> bool {
        self.shared.trace.is_some()
    }

    /// The live tap on this node's frames (see [`crate::live`]): hold a
    /// [`LiveTraffic::watch`](crate::live::LiveTraffic::watch) to fill it.
    pub fn live_traffic(&self) -> &Arc<crate::live::LiveTraffic> {
        &self.shared.live
    }

    /// Spawn a named actor (or a nested supervisor) under the node's root
    /// supervisor — or, inside [`SupervisorRef::scope`], under that
    /// supervisor. Returns its path.
    pub async fn spawn(&self, child: impl ChildFactory) -> Result<ActorPath, NodeError> {
        let path = ActorPath::new(self.name(), child.name())?;
        let parent = SupervisorRef::current().unwrap_or_else(|| self.root_supervisor());
        parent.spawn(child).await?;
        Ok(path)
    }

    /// Stop and remove the named child of the root supervisor; false if none.
    pub async fn stop_actor(&self, name: &str) -> Result<bool, NodeError> {
        self.root_supervisor().stop_child(name).await
    }

    /// A handle to the node's root supervisor, to reach the supervisors
    /// below it by path ([`SupervisorRef::child`]).
    pub fn root_supervisor(&self) -> SupervisorRef {
        SupervisorRef::root(self.shared.root.clone())
    }

    /// The policy of the node's root supervisor (`[supervision]` in its config).
    pub fn root_policy(&self) -> crate::supervision::SupervisorPolicy {
        self.shared.root_policy
    }

    /// Subscribe to what happens in the node's supervision tree from now on:
    /// children started, exited (with the reason), restarted (with the
    /// back-off waited) and supervisors giving up. A receiver more than 1024
    /// events behind loses the oldest (`RecvError::Lagged`).
    pub fn supervision_events(&self) -> broadcast::Receiver<SupervisionEvent> {
        self.shared.hub.subscribe()
    }

    /// A snapshot of the node's whole supervision tree: each supervisor and
    /// actor with its strategy, restart count and state. The root is named
    /// after the node.
    pub fn supervision_tree(
        &self,
    ) -> impl std::future::Future<Output = Result<TreeNode, NodeError>> {
        let root = self.shared.root.clone();
        async move { root.send(GetTree).await.map_err(|_| NodeError::Stopped) }
    }

    /// Resolves once the node has stopped (shut down, or its root supervisor
    /// gave up).
    pub async fn stopped(&self) {
        let mut rx = self.shared.stopped_watch.subscribe();
        let _ = rx.wait_for(|stopped| *stopped).await;
    }

    /// A typed handle to `path` (`"node/actor"`), local or remote.
    pub fn lookup<M: RemoteMessage>(&self, path: &str) -> Result<RemoteRef<M>, NameError> {
        Ok(RemoteRef::new(path.parse()?, self.shared.clone()))
    }

    /// A handle to the actor at `path` (`"node-b/ledger"`) that tells and
    /// asks it any message type it accepts (see [`ActorHandle`]).
    pub fn actor(&self, path: &str) -> Result<ActorHandle, NameError> {
        Ok(ActorHandle::new(path.parse()?, self.shared.clone()))
    }

    /// A typed handle to an [`ActorPath`].
    pub fn actor_ref<M: RemoteMessage>(&self, path: ActorPath) -> RemoteRef<M> {
        RemoteRef::new(path, self.shared.clone())
    }

    /// The current membership view (node name -> status).
    pub fn membership(&self) -> MembershipView<String> {
        self.shared
            .view
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
    }
    /// Subscribe to membership changes (Up / Suspect / Down / Left).
    pub fn subscribe_membership(&self) -> broadcast::Receiver<MemberEvent<String>> {
        self.shared.members.subscribe()
    }
    /// Publish a membership change (called by the failure-detector driver).
    pub fn publish_membership(&self, event: MemberEvent<String>) {
        let changed = {
            let mut view = self.shared.view.lock().unwrap_or_else(|p| p.into_inner());
            let changed = view.apply(&event);
            if changed {
                let down: BTreeMap<String, MemberStatus> = view
                    .iter()
                    .filter(|(_, s)| !s.is_live())
                    .map(|(m, s)| (m.clone(), s))
                    .collect();
                self.shared.unreachable.store(Arc::new(down));
            }
            changed
        };
        if changed {
            self.shared.metrics.transition(&event.member, event.status);
            tracing::info!(node = %self.shared.id.name, member = %event.member, status = ?event.status, "membership change");
            if self.tracing() {
                self.trace(TraceEvent::Note {
                    text: format!("membership: {} is {:?}", event.member, event.status),
                });
            }
            let _ = self.shared.members.send(event);
        }
    }
    /// Subscribe to transport connection changes.
    pub fn subscribe_peers(&self) -> broadcast::Receiver<PeerEvent> {
        self.shared.peers.subscribe()
    }

    /// The node's Lamport clock now (every envelope it sends carries a tick).
    pub fn lamport_time(&self) -> u64 {
        self.shared.lamport.load(Ordering::Relaxed)
    }

    /// Counters of inbound traffic and errors.
    pub fn stats(&self) -> NodeStatsSnapshot {
        let s = &self.shared.stats;
        NodeStatsSnapshot {
            frames_in: s.frames_in.load(Ordering::Relaxed),
            bad_frames: s.bad_frames.load(Ordering::Relaxed),
            spoofed_frames: s.spoofed_frames.load(Ordering::Relaxed),
            undeliverable: s.undeliverable.load(Ordering::Relaxed),
            deduplicated: s.deduplicated.load(Ordering::Relaxed),
            mailbox_full: s.mailbox_full.load(Ordering::Relaxed),
            dropped_tells: s.dropped_tells.load(Ordering::Relaxed),
        }
    }

    /// The node's metrics: its registry (for an application's own
    /// metrics), event counters and scrape-time sources (see
    /// [`crate::metrics`]).
    pub fn metrics(&self) -> &Arc<NodeMetrics> {
        &self.shared.metrics
    }

    /// Every metric the framework knows for this node, now: the counters
    /// kept as traffic flows, the sources' samples, and the node's state
    /// read at this moment (its counters, asks and deliveries in flight,
    /// the membership view). See [`crate::metrics`] for the list.
    pub fn gather_metrics(&self) -> Families {
        let mut f = self.shared.metrics.gather();
        let s = self.stats();
        for (name, help, value) in [
            (
                "troupe_frames_received_total",
                "Frames received from the transport.",
                s.frames_in,
            ),
            (
                "troupe_bad_frames_total",
                "Frames that did not decode.",
                s.bad_frames,
            ),
            (
                "troupe_spoofed_frames_total",
                "Frames whose claimed sender was not the authenticated peer.",
                s.spoofed_frames,
            ),
            (
                "troupe_undeliverable_messages_total",
                "Messages for an unknown actor or with an unknown type.",
                s.undeliverable,
            ),
            (
                "troupe_asks_deduplicated_total",
                "Retried copies of asks not executed again (running, answered, or finished at their sender).",
                s.deduplicated,
            ),
            (
                "troupe_mailbox_full_total",
                "Times a remote message found its actor's inbox full.",
                s.mailbox_full,
            ),
            (
                "troupe_dropped_tells_total",
                "Tells not sent because the target node was Down or Left.",
                s.dropped_tells,
            ),
        ] {
            f.counter(name, help, &[], value as f64);
        }
        for (name, help, value) in [
            (
                "troupe_asks_in_flight",
                "Remote asks of this node waiting for their answer.",
                self.shared.asks.len(),
            ),
            (
                "troupe_asks_executing",
                "Asks from other nodes handed to this node's actors and not answered yet.",
                self.shared.answering.running(),
            ),
            (
                "troupe_inbound_in_flight",
                "Deliveries waiting for inbox room, parked messages and unanswered asks (counted against the in-flight limit).",
                self.shared.inbound_busy.load(Ordering::Relaxed),
            ),
            (
                "troupe_inbound_in_flight_limit",
                "The node's runtime.max_inflight_deliveries.",
                self.shared.options.max_inflight_deliveries,
            ),
        ] {
            f.gauge(name, help, &[], value as f64);
        }
        for (member, status) in self.membership().iter() {
            for s in MemberStatus::ALL {
                f.gauge(
                    "troupe_member_status",
                    "1 for the member's status in this node's membership view, 0 for the others.",
                    &[("member", member.as_str()), ("status", s.name())],
                    if s == status { 1.0 } else { 0.0 },
                );
            }
        }
        f
    }

    /// True once the node has stopped.
    pub fn is_stopped(&self) -> bool {
        self.shared.stopped.load(Ordering::SeqCst)
    }

    /// Stop the node: its actors, its dispatcher and its transport.
    pub fn shutdown(&self) {
        self.actor.do_send(Shutdown);
    }

    /// The node actor's address.
    pub fn node_actor(&self) -> &Addr<NodeActor> {
        &self.actor
    }
}

/// The node actor. See the module docs.
pub struct NodeActor {
    shared: Arc<NodeShared>,
    root: Option<RunningChild>,
    root_generation: u64,
    inbound: Option<InboundReceiver>,
    /// The inbound dispatcher's task, stopped with the node.
    dispatcher: Option<actix_rt::task::JoinHandle<()>>,
}

impl Actor for NodeActor {
    type Context = Context<Self>;

    fn started(&mut self, ctx: &mut Context<Self>) {
        if let Some(rx) = self.inbound.take() {
            let shared = self.shared.clone();
            let me = ctx.address();
            // Its own task on this arbiter, not a future inside the node
            // actor's context: a frame then wakes just the dispatcher.
            self.dispatcher = Some(actix_rt::spawn(crate::dispatch::run(shared, rx, me)));
        }
    }

    fn stopped(&mut self, _ctx: &mut Context<Self>) {
        self.shared.stopped.store(true, Ordering::SeqCst);
        if let Some(t) = &self.shared.trace {
            t.flush();
        }
        self.shared.stopped_watch.send_replace(true);
        self.shared
            .asks
            .fail_all(&crate::error::AskError::NodeStopped);
        if let Some(d) = self.dispatcher.take() {
            d.abort();
        }
        if let Some(r) = self.root.take() {
            r.stop();
        }
        self.shared.transport.shutdown();
        tracing::info!(node = %self.shared.id, "node stopped");
    }
}

/// Stop the node.
#[derive(Message)]
#[rtype(result = "()")]
struct Shutdown;

impl Handler<Shutdown> for NodeActor {
    type Result = ();
    fn handle(&mut self, _: Shutdown, ctx: &mut Context<Self>) {
        ctx.stop();
    }
}

impl Handler<ChildExited> for NodeActor {
    type Result = ();
    fn handle(&mut self, m: ChildExited, ctx: &mut Context<Self>) {
        if m.generation == self.root_generation && !self.shared.stopped.load(Ordering::SeqCst) {
            tracing::error!(node = %self.shared.id, reason = %m.reason, "root supervisor exited; stopping the node");
            ctx.stop();
        }
    }
}

impl Handler<StopNode> for NodeActor {
    type Result = ();
    fn handle(&mut self, m: StopNode, ctx: &mut Context<Self>) {
        if !self.shared.stopped.load(Ordering::SeqCst) {
            tracing::error!(node = %self.shared.id, subtree = %m.path, "a subtree gave up with on_give_up = stop-node; stopping the node");
            ctx.stop();
        }
    }
}

/// A connection change reported by the transport (sent by the dispatcher).
#[derive(Message)]
#[rtype(result = "()")]
pub(crate) struct Peer(pub(crate) PeerEvent);

impl Handler<Peer> for NodeActor {
    type Result = ();
    fn handle(&mut self, m: Peer, _ctx: &mut Context<Self>) {
        match &m.0 {
            PeerEvent::Up(p) => {
                tracing::info!(node = %self.shared.id.name, peer = %p, "peer connected")
            }
            PeerEvent::Down(p) => {
                tracing::info!(node = %self.shared.id.name, peer = %p, "peer disconnected")
            }
        }
        let _ = self.shared.peers.send(m.0);
    }
}
