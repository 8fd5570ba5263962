//! `sim`: a deterministic in-process network with seeded faults.
//!
//! Many nodes run in one process, on one thread, under *virtual time*: run
//! the actix system on a current-thread tokio runtime with a paused clock
//! ([`runtime`] builds one), and time jumps straight to the next timer or
//! delivery whenever every actor is idle. A ten-minute scenario takes
//! seconds, and timeouts cost nothing.
//!
//! What the network does to each frame is decided by a seeded RNG from a
//! [`FaultPlan`]: loss, duplication, delay (a [`Delay`] distribution),
//! reordering (or per-link FIFO), one-way and symmetric partitions that can
//! be healed, and per-link overrides. [`SimCluster`] adds node crashes
//! (volatile state lost) and restarts (a new incarnation that keeps only
//! its [`MemoryStore`]).
//!
//! Guarantees:
//! - **Determinism.** Everything that decides an outcome is ordered: the RNG
//!   is seeded, the pending-delivery queue is ordered by (time, sequence
//!   number), maps are B-trees, and the driver's `select!` is biased. The
//!   same seed and scenario give byte-identical traces ([`TraceRecorder`]);
//!   the tests check it.
//! - **Every frame is accounted for** in the trace: `send`, then `deliver`
//!   or `drop` with a reason.
//! - **A slow node slows only itself.** A delivered frame goes into its
//!   node's bounded inbound channel; when that is full, it and the node's
//!   later frames wait in order in a backlog of that node, while the others
//!   keep receiving (the network holds them, as it holds frames in flight,
//!   and drops them, traced so, if the node is detached or crashes).
//! - **Control frames travel apart**, as on QUIC: what
//!   [`Transport::send_control`] sends reaches the node through a source of
//!   its own ([`TransportEvent::ControlSource`], handed over first thing),
//!   which the node keeps reading when its in-flight limit holds the rest
//!   back.

use std::cmp::Reverse;
use std::collections::{BTreeMap, BTreeSet, BinaryHeap, VecDeque};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use tokio::sync::Notify;
use tokio::time::Instant;
use troupe_framework::codec::{self, Kind};
use troupe_framework::storage::MemoryStore;
use troupe_framework::trace::{TraceEvent, TraceRecorder, TraceSink};
use troupe_framework::transport::{
    InboundReceiver, InboundSender, Transport, TransportError, TransportEvent,
};
use troupe_framework::{Node, NodeConfig, NodeError};

/// A current-thread tokio runtime with a paused clock, for running an actix
/// `System` under virtual time:
/// `actix_rt::System::with_tokio_rt(troupe_transports::sim::runtime)`.
pub fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .start_paused(true)
        .build()
        .expect("building a current-thread tokio runtime cannot fail with these settings")
}

/// Run `f` to completion in a fresh actix system under virtual time.
pub fn run_virtual<F, Fut, T>(f: F) -> T
where
    F: FnOnce() -> Fut,
    Fut: std::future::Future<Output = T>,
{
    let system = actix_rt::System::with_tokio_rt(runtime);
    system.block_on(f())
}

/// How long a frame spends in flight.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Delay {
    /// Always the same.
    Fixed(Duration),
    /// Uniform in `[min, max]`.
    Uniform {
        /// Lower bound.
        min: Duration,
        /// Upper bound.
        max: Duration,
    },
    /// `min` plus an exponential tail with the given mean (long tails).
    Exponential {
        /// Lower bound.
        min: Duration,
        /// Mean of the tail above `min`.
        mean: Duration,
    },
}

impl Delay {
    fn sample(&self, rng: &mut ChaCha8Rng) -> Duration {
        match *self {
            Delay::Fixed(d) => d,
            Delay::Uniform { min, max } => {
                if max <= min {
                    min
                } else {
                    min + (max - min).mul_f64(rng.gen::<f64>())
                }
            }
            Delay::Exponential { min, mean } => {
                let u: f64 = rng.gen_range(f64::EPSILON..1.0);
                min + mean.mul_f64(-u.ln()).min(mean * 50)
            }
        }
    }
}

/// Faults applied to frames on one link (or all links).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct LinkFaults {
    /// Probability that a frame is lost.
    pub loss: f64,
    /// Probability that a frame is delivered twice.
    pub duplicate: f64,
    /// Time in flight.
    pub delay: Delay,
    /// If false, frames on a link arrive in send order (FIFO); if true,
    /// each frame's delay is independent, so frames overtake each other.
    pub reorder: bool,
}

impl Default for LinkFaults {
    fn default() -> Self {
        Self::reliable()
    }
}

impl LinkFaults {
    /// No loss, no duplication, 1 ms, FIFO.
    pub fn reliable() -> Self {
        Self {
            loss: 0.0,
            duplicate: 0.0,
            delay: Delay::Fixed(Duration::from_millis(1)),
            reorder: false,
        }
    }
    /// A rough network: the given loss and duplication, 1-20 ms, reordering.
    pub fn lossy(loss: f64, duplicate: f64) -> Self {
        Self {
            loss,
            duplicate,
            delay: Delay::Uniform {
                min: Duration::from_millis(1),
                max: Duration::from_millis(20),
            },
            reorder: true,
        }
    }
}

/// What the network does to frames: defaults for every link plus overrides.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct FaultPlan {
    /// Faults on every link without an override.
    pub default: LinkFaults,
    /// Per-link `(from, to)` overrides.
    pub links: BTreeMap<(String, String), LinkFaults>,
}

impl FaultPlan {
    /// A perfect network (1 ms, FIFO).
    pub fn reliable() -> Self {
        Self::default()
    }
    /// Every link with `faults`.
    pub fn uniform(faults: LinkFaults) -> Self {
        Self {
            default: faults,
            links: BTreeMap::new(),
        }
    }
    /// Override the link `from -> to`.
    pub fn link(mut self, from: &str, to: &str, faults: LinkFaults) -> Self {
        self.links
            .insert((from.to_string(), to.to_string()), faults);
        self
    }
    fn for_link(&self, from: &str, to: &str) -> LinkFaults {
        self.links
            .get(&(from.to_string(), to.to_string()))
            .copied()
            .unwrap_or(self.default)
    }
}

/// Counters of what the network did.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct NetStats {
    /// Frames handed to the network.
    pub sent: u64,
    /// Frames delivered (duplicates count twice).
    pub delivered: u64,
    /// Frames lost to the loss probability.
    pub lost: u64,
    /// Extra copies made by duplication.
    pub duplicated: u64,
    /// Frames cut by a partition.
    pub partitioned: u64,
    /// Frames to or from a crashed node.
    pub to_crashed: u64,
    /// Bytes handed to the network.
    pub bytes: u64,
}

struct InFlight {
    at: Duration,
    seq: u64,
    from: String,
    to: String,
    frame: Bytes,
    /// Sent with `send_control`.
    control: bool,
}

/// Where a node's frames of one class go: its bounded channel, and, while
/// that has been found full, the backlog a forwarding task moves into it.
struct Outlet {
    tx: InboundSender,
    /// Frames that found the channel full, and every later one, in order.
    /// Held here, under the network's lock, they are dropped with the
    /// attachment when the node is detached, like frames in flight.
    backlog: VecDeque<Pending>,
    /// A task is moving `backlog` into the channel.
    forwarding: bool,
}

impl Outlet {
    fn new(tx: InboundSender) -> Self {
        Outlet {
            tx,
            backlog: VecDeque::new(),
            forwarding: false,
        }
    }
}

/// A frame waiting in a backlog, with what the trace says of it.
struct Pending {
    ev: TransportEvent,
    from: String,
    seq: u64,
}

/// What became of a frame handed to an [`Outlet`]: for the first two, the
/// frame's sender and sequence number, for the trace.
enum Put {
    /// In the node's channel.
    Delivered(String, u64),
    /// The node's channel is closed (the node stopped): dropped.
    Closed(String, u64),
    /// Behind others in the backlog; `true` if a forwarding task must start.
    Queued(bool),
}

/// A node attached to the network.
struct Attached {
    data: Outlet,
    control: Outlet,
}

impl Attached {
    fn outlet(&mut self, class: Class) -> &mut Outlet {
        match class {
            Class::Data => &mut self.data,
            Class::Control => &mut self.control,
        }
    }

    fn channel(&self, class: Class) -> &InboundSender {
        match class {
            Class::Data => &self.data.tx,
            Class::Control => &self.control.tx,
        }
    }

    /// Everything still in the backlogs (the attachment is going away).
    fn into_backlog(self) -> impl Iterator<Item = Pending> {
        self.data.backlog.into_iter().chain(self.control.backlog)
    }
}

/// Which of a node's outlets.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Class {
    Data,
    Control,
}

impl PartialEq for InFlight {
    fn eq(&self, other: &Self) -> bool {
        (self.at, self.seq) == (other.at, other.seq)
    }
}
impl Eq for InFlight {}
impl PartialOrd for InFlight {
    fn partial_cmp(&self, other: &Self) -> Option<std::cmp::Ordering> {
        Some(self.cmp(other))
    }
}
impl Ord for InFlight {
    fn cmp(&self, other: &Self) -> std::cmp::Ordering {
        (self.at, self.seq).cmp(&(other.at, other.seq))
    }
}

struct NetState {
    rng: ChaCha8Rng,
    plan: FaultPlan,
    start: Instant,
    next_seq: u64,
    nodes: BTreeMap<String, Option<Attached>>,
    blocked: BTreeSet<(String, String)>,
    fifo_last: BTreeMap<(String, String), Duration>,
    queue: BinaryHeap<Reverse<InFlight>>,
    stats: NetStats,
    shut: bool,
}

/// The simulated network. Cheap to clone (shared).
#[derive(Clone)]
pub struct SimNetwork {
    state: Arc<Mutex<NetState>>,
    wake: Arc<Notify>,
    trace: Arc<TraceRecorder>,
}

impl SimNetwork {
    /// A network with `seed` and `plan`. Call inside the (virtual-time)
    /// runtime: it spawns the delivery driver on the current arbiter.
    pub fn new(seed: u64, plan: FaultPlan) -> Self {
        let net = Self {
            state: Arc::new(Mutex::new(NetState {
                rng: ChaCha8Rng::seed_from_u64(seed),
                plan,
                start: Instant::now(),
                next_seq: 0,
                nodes: BTreeMap::new(),
                blocked: BTreeSet::new(),
                fifo_last: BTreeMap::new(),
                queue: BinaryHeap::new(),
                stats: NetStats::default(),
                shut: false,
            })),
            wake: Arc::new(Notify::new()),
            trace: Arc::new(TraceRecorder::new()),
        };
        actix_rt::spawn(net.clone().drive());
        net
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, NetState> {
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// The trace of everything the network (and nodes using it as their
    /// trace sink) did.
    pub fn trace(&self) -> Arc<TraceRecorder> {
        self.trace.clone()
    }

    /// Time since the network was created.
    pub fn now(&self) -> Duration {
        self.lock().start.elapsed()
    }

    /// Counters so far.
    pub fn stats(&self) -> NetStats {
        self.lock().stats
    }

    /// Attach node `name`: its transport, and the receiver its node reads.
    /// Re-attaching a name (a restart) replaces the old attachment. The
    /// receiver's first event hands over the source of the node's control
    /// frames ([`TransportEvent::ControlSource`]); read it through
    /// [`InboundEvents`](troupe_framework::transport::InboundEvents), as a
    /// node does, which reads that source too.
    pub fn attach(
        &self,
        name: &str,
        inbound_capacity: usize,
    ) -> (Arc<SimTransport>, InboundReceiver) {
        let capacity = inbound_capacity.max(1);
        let (tx, rx) = tokio::sync::mpsc::channel(capacity);
        let (control_tx, control_rx) = tokio::sync::mpsc::channel(capacity);
        // First in the channel, so a node that holds its ordinary traffic
        // back has the control source already.
        let source = futures::stream::unfold(control_rx, |mut rx| async move {
            rx.recv().await.map(|ev| (ev, rx))
        });
        let handover = tx.try_send(TransportEvent::ControlSource(Box::pin(source)));
        debug_assert!(handover.is_ok(), "a new channel has room");
        let attached = Attached {
            data: Outlet::new(tx),
            control: Outlet::new(control_tx),
        };
        self.replace(name, Some(attached));
        (
            Arc::new(SimTransport {
                name: name.to_string(),
                net: self.clone(),
            }),
            rx,
        )
    }

    /// Cut `name` off: frames to and from it are dropped until it is
    /// re-attached. Frames already in flight to it are dropped too.
    pub fn detach(&self, name: &str) {
        self.replace(name, None);
    }

    /// Puts `attached` in place of `name`'s attachment; frames still in the
    /// old one's backlogs are dropped (and traced so).
    fn replace(&self, name: &str, attached: Option<Attached>) {
        let old = {
            let mut s = self.lock();
            let old = s.nodes.insert(name.to_string(), attached).flatten();
            let old: Vec<Pending> = old.into_iter().flat_map(Attached::into_backlog).collect();
            s.stats.to_crashed += old.len() as u64;
            old
        };
        self.record_crashed(name, old.into_iter().map(|p| (p.from, p.seq)));
    }

    /// Traces the frames `(sender, sequence number)` to `to` as dropped
    /// because the node is gone (already counted in `to_crashed`).
    fn record_crashed(&self, to: &str, frames: impl IntoIterator<Item = (String, u64)>) {
        for (from, seq) in frames {
            let reason = "crashed".into();
            self.record(
                to,
                TraceEvent::Drop {
                    from,
                    to: None,
                    seq,
                    reason,
                },
            );
        }
    }

    /// Replace the fault plan (e.g. remove all faults for a liveness phase).
    pub fn set_plan(&self, plan: FaultPlan) {
        self.lock().plan = plan;
    }

    /// Drop frames from `from` to `to` (one way) until healed.
    pub fn block(&self, from: &str, to: &str) {
        self.lock()
            .blocked
            .insert((from.to_string(), to.to_string()));
    }

    /// Partition the nodes into two sides: no frame crosses, either way.
    pub fn partition(&self, side_a: &[&str], side_b: &[&str]) {
        let mut s = self.lock();
        for a in side_a {
            for b in side_b {
                s.blocked.insert((a.to_string(), b.to_string()));
                s.blocked.insert((b.to_string(), a.to_string()));
            }
        }
    }

    /// Remove every partition and blocked link.
    pub fn heal(&self) {
        self.lock().blocked.clear();
    }

    /// Stop delivering anything.
    pub fn shutdown(&self) {
        self.lock().shut = true;
        self.wake.notify_one();
    }

    fn record(&self, node: &str, ev: TraceEvent) {
        self.trace.record(node, ev);
    }

    fn send(
        &self,
        from: &str,
        to: &str,
        frame: Bytes,
        control: bool,
    ) -> Result<(), TransportError> {
        let mut s = self.lock();
        if s.shut {
            return Err(TransportError::Closed);
        }
        if !s.nodes.contains_key(to) {
            return Err(TransportError::UnknownPeer(to.to_string()));
        }
        let seq = s.next_seq;
        s.next_seq += 1;
        s.stats.sent += 1;
        s.stats.bytes += frame.len() as u64;
        let now = s.start.elapsed();
        let (kind, tag, lamport, vector) = peek(&frame);
        self.record(
            from,
            TraceEvent::Send {
                to: to.to_string(),
                seq,
                bytes: frame.len(),
                kind,
                tag,
                lamport,
                vector,
                cause: None,
            },
        );
        let drop_reason = if !matches!(s.nodes.get(from), Some(Some(_)))
            || !matches!(s.nodes.get(to), Some(Some(_)))
        {
            s.stats.to_crashed += 1;
            Some("crashed")
        } else if s.blocked.contains(&(from.to_string(), to.to_string())) {
            s.stats.partitioned += 1;
            Some("partition")
        } else {
            None
        };
        if let Some(reason) = drop_reason {
            self.record(
                to,
                TraceEvent::Drop {
                    from: from.to_string(),
                    to: None,
                    seq,
                    reason: reason.into(),
                },
            );
            return Ok(());
        }
        let faults = s.plan.for_link(from, to);
        if faults.loss > 0.0 && s.rng.gen_bool(faults.loss.min(1.0)) {
            s.stats.lost += 1;
            self.record(
                to,
                TraceEvent::Drop {
                    from: from.to_string(),
                    to: None,
                    seq,
                    reason: "loss".into(),
                },
            );
            return Ok(());
        }
        let copies = if faults.duplicate > 0.0 && s.rng.gen_bool(faults.duplicate.min(1.0)) {
            s.stats.duplicated += 1;
            2
        } else {
            1
        };
        let link = (from.to_string(), to.to_string());
        for _ in 0..copies {
            let mut at = now + faults.delay.sample(&mut s.rng);
            if !faults.reorder {
                let last = s.fifo_last.get(&link).copied().unwrap_or_default();
                at = at.max(last);
                s.fifo_last.insert(link.clone(), at);
            }
            s.queue.push(Reverse(InFlight {
                at,
                seq,
                from: from.to_string(),
                to: to.to_string(),
                frame: frame.clone(),
                control,
            }));
        }
        drop(s);
        self.wake.notify_one();
        Ok(())
    }

    async fn drive(self) {
        loop {
            let (next, start, shut) = {
                let s = self.lock();
                (s.queue.peek().map(|r| r.0.at), s.start, s.shut)
            };
            if shut {
                return;
            }
            match next {
                None => self.wake.notified().await,
                Some(at) => {
                    tokio::select! {
                        biased;
                        _ = tokio::time::sleep_until(start + at) => self.deliver_due(),
                        _ = self.wake.notified() => {}
                    }
                }
            }
        }
    }

    /// Delivers every frame that is due, in (time, sequence) order. Never
    /// waits: a node whose channel is full gets the frame through its
    /// backlog (see [`SimNetwork::put`]).
    fn deliver_due(&self) {
        loop {
            let mut s = self.lock();
            let now = s.start.elapsed();
            match s.queue.peek() {
                Some(Reverse(f)) if f.at <= now => {}
                _ => return,
            }
            let Some(Reverse(item)) = s.queue.pop() else {
                return;
            };
            let class = if item.control {
                Class::Control
            } else {
                Class::Data
            };
            let pending = Pending {
                ev: TransportEvent::Frame {
                    from: item.from.clone(),
                    bytes: item.frame,
                },
                from: item.from,
                seq: item.seq,
            };
            let put = match s.nodes.get_mut(&item.to) {
                Some(Some(node)) => Self::put(node.outlet(class), pending),
                _ => Put::Closed(pending.from, pending.seq),
            };
            match put {
                Put::Delivered(from, seq) => {
                    s.stats.delivered += 1;
                    drop(s);
                    self.record(&item.to, TraceEvent::Deliver { from, seq });
                }
                Put::Closed(from, seq) => {
                    s.stats.to_crashed += 1;
                    drop(s);
                    self.record_crashed(&item.to, [(from, seq)]);
                }
                Put::Queued(start) => {
                    let tx = match s.nodes.get_mut(&item.to) {
                        Some(Some(node)) => node.outlet(class).tx.clone(),
                        _ => continue,
                    };
                    drop(s);
                    if start {
                        actix_rt::spawn(self.clone().forward(item.to, class, tx));
                    }
                }
            }
        }
    }

    /// Hands `p` to `outlet` without waiting: into the channel if it has
    /// room and nothing waits before it, else to the back of the backlog.
    /// Called with the network's lock held.
    fn put(outlet: &mut Outlet, p: Pending) -> Put {
        if outlet.forwarding {
            outlet.backlog.push_back(p);
            return Put::Queued(false);
        }
        let Pending { ev, from, seq } = p;
        match outlet.tx.try_send(ev) {
            Ok(()) => Put::Delivered(from, seq),
            Err(tokio::sync::mpsc::error::TrySendError::Closed(_)) => Put::Closed(from, seq),
            Err(tokio::sync::mpsc::error::TrySendError::Full(ev)) => {
                outlet.backlog.push_back(Pending { ev, from, seq });
                outlet.forwarding = true;
                Put::Queued(true)
            }
        }
    }

    /// Moves node `to`'s `class` backlog into its channel `tx`, one frame
    /// per free slot, while that channel is still the node's (a detached
    /// node's backlog went, traced as dropped, with its attachment); ends
    /// when the backlog is empty.
    async fn forward(self, to: String, class: Class, tx: InboundSender) {
        loop {
            let permit = tx.reserve().await;
            let mut s = self.lock();
            let outlet = match s.nodes.get_mut(&to) {
                Some(Some(node)) if node.channel(class).same_channel(&tx) => node.outlet(class),
                _ => return,
            };
            let Ok(permit) = permit else {
                // The node stopped: what waits for it is dropped.
                outlet.forwarding = false;
                let gone: Vec<Pending> = outlet.backlog.drain(..).collect();
                s.stats.to_crashed += gone.len() as u64;
                drop(s);
                self.record_crashed(&to, gone.into_iter().map(|p| (p.from, p.seq)));
                return;
            };
            let Some(p) = outlet.backlog.pop_front() else {
                outlet.forwarding = false;
                return;
            };
            s.stats.delivered += 1;
            drop(s);
            permit.send(p.ev);
            self.record(
                &to,
                TraceEvent::Deliver {
                    from: p.from,
                    seq: p.seq,
                },
            );
        }
    }
}

/// What the trace shows of a frame: kind, type tag, Lamport and vector stamps.
type Peeked = (String, String, Option<u64>, Option<Vec<(String, u64)>>);

fn peek(frame: &[u8]) -> Peeked {
    match codec::decode(frame, usize::MAX) {
        Ok(env) => {
            let kind = match env.kind {
                Kind::Tell => "tell",
                Kind::Ask { .. } => "ask",
                Kind::Reply { .. } => "reply",
                Kind::ErrorReply { .. } => "error",
            };
            let (lamport, vector) = env
                .stamp
                .map(|s| (s.lamport, s.vector))
                .unwrap_or((None, None));
            (kind.to_string(), env.type_tag, lamport, vector)
        }
        Err(_) => ("garbage".to_string(), String::new(), None, None),
    }
}

/// One node's attachment to a [`SimNetwork`].
pub struct SimTransport {
    name: String,
    net: SimNetwork,
}

impl Transport for SimTransport {
    fn traces_frames(&self) -> bool {
        true
    }
    fn local_name(&self) -> &str {
        &self.name
    }
    fn send(&self, to: &str, frame: Bytes) -> Result<(), TransportError> {
        self.net.send(&self.name, to, frame, false)
    }
    fn send_control(&self, to: &str, frame: Bytes) -> Result<(), TransportError> {
        self.net.send(&self.name, to, frame, true)
    }
    fn shutdown(&self) {}
}

impl TraceSink for SimNetwork {
    fn record(&self, node: &str, event: TraceEvent) {
        self.trace.record(node, event);
    }
}

/// Called on every (re)start of a node, to spawn its actors.
pub type OnStart = Arc<dyn Fn(Node) -> futures::future::LocalBoxFuture<'static, ()>>;

/// Many nodes on one [`SimNetwork`], with crash and restart.
///
/// Each node's [`MemoryStore`] survives its crashes (it is the node's
/// "disk"); everything else — its actors, their state, its RPC table — is
/// lost. A restarted node gets a new incarnation derived from the seed.
pub struct SimCluster {
    net: SimNetwork,
    configs: BTreeMap<String, NodeConfig>,
    nodes: BTreeMap<String, Node>,
    disks: BTreeMap<String, MemoryStore>,
    rng: ChaCha8Rng,
    on_start: Option<OnStart>,
}

impl SimCluster {
    /// A network with `seed` and `plan`, and no nodes yet. Call inside a
    /// virtual-time runtime ([`run_virtual`]).
    pub fn new(seed: u64, plan: FaultPlan) -> Self {
        Self {
            net: SimNetwork::new(seed, plan),
            configs: BTreeMap::new(),
            nodes: BTreeMap::new(),
            disks: BTreeMap::new(),
            rng: ChaCha8Rng::seed_from_u64(seed ^ 0x7472_6f75_7065),
            on_start: None,
        }
    }

    /// Run `f` on every node start and restart (spawn the node's actors there).
    pub fn on_start<F, Fut>(&mut self, f: F)
    where
        F: Fn(Node) -> Fut + 'static,
        Fut: std::future::Future<Output = ()> + 'static,
    {
        self.on_start = Some(Arc::new(move |n| Box::pin(f(n))));
    }

    /// The network.
    pub fn net(&self) -> &SimNetwork {
        &self.net
    }

    /// Add and start a node with default settings.
    pub async fn add_node(&mut self, name: &str) -> Result<Node, NodeError> {
        self.add_node_with(NodeConfig::named(name)).await
    }

    /// Add and start a node with `config`.
    pub async fn add_node_with(&mut self, config: NodeConfig) -> Result<Node, NodeError> {
        let name = config.name.clone();
        self.configs.insert(name.clone(), config);
        self.disks.entry(name.clone()).or_default();
        self.boot(&name).await
    }

    async fn boot(&mut self, name: &str) -> Result<Node, NodeError> {
        let config =
            self.configs.get(name).cloned().ok_or_else(|| {
                NodeError::Config(format!("no node named {name:?} in this cluster"))
            })?;
        let (transport, rx) = self.net.attach(name, config.runtime.inbound_queue);
        let disk = self.disks.entry(name.to_string()).or_default().clone();
        let node = Node::builder(config)
            .incarnation(self.rng.gen())
            .store(Arc::new(disk))
            .trace(Arc::new(self.net.clone()))
            .start(transport, rx)?;
        self.nodes.insert(name.to_string(), node.clone());
        if let Some(f) = &self.on_start {
            f(node.clone()).await;
        }
        Ok(node)
    }

    /// The running node called `name`.
    pub fn node(&self, name: &str) -> Option<&Node> {
        self.nodes.get(name)
    }

    /// Names of all nodes (running or crashed), sorted.
    pub fn names(&self) -> Vec<String> {
        self.configs.keys().cloned().collect()
    }

    /// Names of the running nodes, sorted.
    pub fn running(&self) -> Vec<String> {
        self.nodes.keys().cloned().collect()
    }

    /// Crash `name`: it stops at once, loses its volatile state, and every
    /// frame to or from it is dropped.
    pub fn crash(&mut self, name: &str) {
        self.net.detach(name);
        if let Some(node) = self.nodes.remove(name) {
            self.net.record(name, TraceEvent::Crash);
            node.shutdown();
        }
    }

    /// Restart a crashed `name` as a new incarnation with its old disk.
    pub async fn restart(&mut self, name: &str) -> Result<Node, NodeError> {
        self.crash(name);
        let node = self.boot(name).await?;
        self.net.record(
            name,
            TraceEvent::Restart {
                incarnation: node.id().incarnation.simple().to_string(),
            },
        );
        Ok(node)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use troupe_framework::transport::InboundEvents;

    /// `name`'s events, read as a node reads them.
    fn attach(net: &SimNetwork, name: &str, cap: usize) -> (Arc<SimTransport>, InboundEvents) {
        let (t, rx) = net.attach(name, cap);
        (t, InboundEvents::new(rx))
    }

    #[test]
    fn delays_stay_in_range() {
        let mut rng = ChaCha8Rng::seed_from_u64(1);
        let d = Delay::Uniform {
            min: Duration::from_millis(5),
            max: Duration::from_millis(10),
        };
        for _ in 0..1000 {
            let x = d.sample(&mut rng);
            assert!(x >= Duration::from_millis(5) && x <= Duration::from_millis(10));
        }
        let e = Delay::Exponential {
            min: Duration::from_millis(1),
            mean: Duration::from_millis(4),
        };
        let mean: f64 = (0..10_000)
            .map(|_| e.sample(&mut rng).as_secs_f64())
            .sum::<f64>()
            / 10_000.0;
        assert!((0.004..0.006).contains(&mean), "mean {mean}");
    }

    /// A node that does not read its channel holds up nobody else: its
    /// frames wait in its backlog, in order, and all arrive once it reads.
    #[test]
    fn a_node_that_does_not_read_slows_only_itself() {
        run_virtual(|| async {
            let net = SimNetwork::new(3, FaultPlan::reliable());
            let (a, _rx_a) = attach(&net, "a", 4);
            let (_slow, mut rx_slow) = attach(&net, "slow", 2);
            let (_b, mut rx_b) = attach(&net, "b", 4);
            for i in 0..20u8 {
                a.send("slow", Bytes::from(vec![i])).unwrap();
            }
            a.send("b", Bytes::from_static(b"ok")).unwrap();
            let got = tokio::time::timeout(Duration::from_secs(5), rx_b.recv()).await;
            match got {
                Ok(Some(TransportEvent::Frame { bytes, .. })) => assert_eq!(&bytes[..], b"ok"),
                other => panic!("b got nothing while slow was not reading: {other:?}"),
            }
            for i in 0..20u8 {
                match rx_slow.recv().await {
                    Some(TransportEvent::Frame { bytes, .. }) => assert_eq!(bytes[0], i),
                    other => panic!("expected frame {i}, got {other:?}"),
                }
            }
            assert_eq!(net.stats().delivered, 21);
        });
    }

    /// A detached (crashed) node gets nothing of its backlog: those frames
    /// are dropped, and traced so, like frames in flight to it.
    #[test]
    fn a_detached_node_gets_nothing_of_its_backlog() {
        run_virtual(|| async {
            let net = SimNetwork::new(4, FaultPlan::reliable());
            let (a, _rx_a) = attach(&net, "a", 4);
            let (_slow, mut rx_slow) = attach(&net, "slow", 2);
            for i in 0..20u8 {
                a.send("slow", Bytes::from(vec![i])).unwrap();
            }
            tokio::time::sleep(Duration::from_secs(1)).await;
            net.detach("slow");
            let mut after = 0;
            while let Ok(Some(ev)) =
                tokio::time::timeout(Duration::from_secs(1), rx_slow.recv()).await
            {
                after += ev.frames().count();
            }
            // What was in the channel already (its capacity) at most.
            assert!(after <= 2, "{after} frames reached the node after detach");
            let stats = net.stats();
            assert_eq!(stats.delivered + stats.to_crashed, 20, "{stats:?}");
            let dropped = net.trace().to_jsonl().matches("crashed").count();
            assert_eq!(dropped as u64, stats.to_crashed);
        });
    }

    /// Control frames reach the node through a source of their own, handed
    /// over first, and the node can read them while frames in its channel
    /// wait.
    #[test]
    fn control_frames_come_through_their_own_source() {
        run_virtual(|| async {
            let net = SimNetwork::new(5, FaultPlan::reliable());
            let (a, _rx_a) = attach(&net, "a", 4);
            let (_b, rx_b) = attach(&net, "b", 4);
            a.send("b", Bytes::from_static(b"data")).unwrap();
            a.send_control("b", Bytes::from_static(b"heartbeat"))
                .unwrap();
            tokio::time::sleep(Duration::from_secs(1)).await;
            let mut events = rx_b;
            // Ordinary traffic held back: only the control frame comes out.
            let control = events.recv_filtered(false);
            match tokio::time::timeout(Duration::from_secs(5), control).await {
                Ok(Some(TransportEvent::Frame { bytes, .. })) => {
                    assert_eq!(&bytes[..], b"heartbeat")
                }
                other => panic!("expected the control frame, got {other:?}"),
            }
            match events.recv().await {
                Some(TransportEvent::Frame { bytes, .. }) => assert_eq!(&bytes[..], b"data"),
                other => panic!("expected the data frame, got {other:?}"),
            }
        });
    }

    #[test]
    fn fifo_links_keep_order_and_lossy_links_lose() {
        run_virtual(|| async {
            let net = SimNetwork::new(
                7,
                FaultPlan::uniform(LinkFaults {
                    reorder: false,
                    ..LinkFaults::lossy(0.0, 0.0)
                }),
            );
            let (a, _rx_a) = attach(&net, "a", 100);
            let (_b, mut rx_b) = attach(&net, "b", 100);
            for i in 0..50u8 {
                a.send("b", Bytes::from(vec![i])).unwrap();
            }
            for i in 0..50u8 {
                match rx_b.recv().await {
                    Some(TransportEvent::Frame { from, bytes }) => {
                        assert_eq!(from, "a");
                        assert_eq!(bytes[0], i);
                    }
                    other => panic!("unexpected {other:?}"),
                }
            }
            net.set_plan(FaultPlan::uniform(LinkFaults::lossy(1.0, 0.0)));
            a.send("b", Bytes::from_static(b"x")).unwrap();
            assert_eq!(net.stats().lost, 1);
            assert!(matches!(
                a.send("nobody", Bytes::new()),
                Err(TransportError::UnknownPeer(_))
            ));
        });
    }

    #[test]
    fn partitions_cut_and_heal() {
        run_virtual(|| async {
            let net = SimNetwork::new(1, FaultPlan::reliable());
            let (a, _ra) = attach(&net, "a", 10);
            let (_b, mut rb) = attach(&net, "b", 10);
            net.partition(&["a"], &["b"]);
            a.send("b", Bytes::from_static(b"cut")).unwrap();
            net.heal();
            a.send("b", Bytes::from_static(b"ok")).unwrap();
            match rb.recv().await {
                Some(TransportEvent::Frame { bytes, .. }) => assert_eq!(&bytes[..], b"ok"),
                other => panic!("unexpected {other:?}"),
            }
            assert_eq!(net.stats().partitioned, 1);
        });
    }
}
