//! Reliable point-to-point delivery: an opt-in channel from one producer to
//! one consumer actor (after Akka's Reliable Delivery, point-to-point).
//!
//! A plain [`RemoteRef::tell`](crate::RemoteRef::tell) is *at most once*: a
//! frame lost with a connection is gone. A reliable channel adds, on top of
//! ordinary remote messages:
//!
//! - **sequence numbers** per session — one session per producer
//!   incarnation ([`ReliableSender`] instance) and channel;
//! - **cumulative acknowledgements** from the consumer side, sent once the
//!   consumer actor's *handler has returned* for a message (confirmation);
//! - **resends** of everything unacknowledged when no acknowledgement made
//!   progress for `resend_after`, doubling up to `max_resend_after`
//!   ([`SenderSettings`]); a closed window with nothing in flight is probed;
//! - **flow control**: the consumer grants a window
//!   ([`ReceiverSettings::window`] messages past the last confirmed one);
//!   [`ReliableSender::send`]`(m).await` waits while it is full;
//! - **duplicates discarded** and **reordering repaired** at the receiver
//!   (a reorder buffer bounded by the window).
//!
//! ## The guarantee
//!
//! While the producer's [`ReliableSender`] and the consumer's
//! [`ReliableReceiver`] both live, the messages sent through the sender
//! reach the consumer actor's handler **exactly once and in send order**,
//! across connection loss, dropped, duplicated and reordered frames, the
//! sender's own resends and partitions that heal (effectively-once: resent
//! at least once, deduplicated to once). "Live" means the same instances:
//! nothing here is written to disk.
//!
//! What happens across a crash:
//!
//! - **The receiver restarts** (its node crashes and restarts, or its actor
//!   is restarted): what it delivered is volatile, so the new incarnation
//!   knows nothing of the session. It gets a fresh incarnation id; every
//!   data frame carries the producer's oldest unacknowledged sequence
//!   number, and the new incarnation starts there. The producer sees the
//!   new id in the next acknowledgement and sends everything
//!   unacknowledged again at once. Messages the old incarnation handled
//!   but had not acknowledged yet are therefore **delivered again**
//!   (at-least-once across a receiver crash, never a gap); the producer
//!   reports exactly which ones may be duplicates
//!   ([`SenderEvent::ConsumerRestarted`]) and counts it in
//!   [`SenderStats::consumer_restarts`]. At most a window's worth.
//! - **The consumer actor restarts** (its supervisor restarts it) while the
//!   receiver lives: messages handed to the old instance whose handler had
//!   not returned are delivered to the new instance, in order. The message
//!   whose handler panicked is among them (at-least-once for it).
//! - **The producer crashes**: the unacknowledged messages in its buffer are
//!   **lost** — the buffer is in memory; there is no durable buffer yet. A
//!   new `ReliableSender` is a new session whose numbers start at 1; the
//!   receiver keeps the old session until it idles out
//!   ([`ReceiverSettings::idle_after`]).
//!
//! A message whose payload the consumer cannot decode (a producer built
//! with an incompatible version of the type) can never be delivered: it is
//! skipped, confirmed, and logged as an error, so the stream goes on.
//!
//! ## Using it
//!
//! ```no_run
//! # use actix::prelude::*;
//! # use serde::{Deserialize, Serialize};
//! # use troupe_framework::{remote_message, ActorSpec, Node};
//! # use troupe_framework::reliable::{ReliableReceiver, ReliableSender};
//! #[derive(Debug, Serialize, Deserialize)]
//! struct Order(u64);
//! remote_message!(Order, "shop.order", ());
//!
//! # struct Shop;
//! # impl Actor for Shop { type Context = Context<Self>; }
//! # impl Handler<Order> for Shop { type Result = (); fn handle(&mut self, _: Order, _: &mut Context<Self>) {} }
//! # async fn demo(node_a: Node, node_b: Node) -> Result<(), Box<dyn std::error::Error>> {
//! // On node b: the consumer, an ordinary actor that handles `Order`, and
//! // the channel "orders" that feeds it.
//! node_b.spawn(ActorSpec::new("shop", || Shop).handles::<Order>()).await?;
//! let _rx = ReliableReceiver::start::<Order>(&node_b, "orders", "shop").await?;
//!
//! // On node a: the producer. `send` waits while the window is full.
//! let tx = ReliableSender::<Order>::connect(&node_a, "b/orders").await?;
//! for i in 0..1000 {
//!     tx.send(Order(i)).await?;
//! }
//! tx.flush().await?; // every one of them handled by `shop`
//! # Ok(()) }
//! ```
//!
//! The wire messages ([`wire`]) are ordinary remote messages between two
//! endpoint actors: the receiver `reliable.<channel>` on the consumer's
//! node, and one `reliable.<channel>.p<session>` per sender on the
//! producer's. The protocol logic is two sans-IO state machines,
//! [`SenderCore`] and [`ReceiverCore`], tested deterministically; the actors
//! only carry their outputs out. Invalid input (an acknowledgement of a
//! sequence number never sent, a malformed one, a frame of a closed
//! session, an acknowledgement from another node, a channel that does not
//! exist) is refused with a logged, counted error; nothing panics.

pub mod receiver;
pub mod sender;
pub mod wire;

pub use receiver::{Delivery, ReceiveError, ReceiverCore, ReceiverSettings, ReceiverStats};
pub use sender::{AckError, AckOutcome, Frame, SenderCore, SenderSettings, SenderStats};

use std::collections::{HashMap, VecDeque};
use std::marker::PhantomData;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use actix::prelude::*;
use bytes::Bytes;

use crate::codec::{NodeIdView, RemoteError};
use crate::error::{AskError, NodeError};
use crate::ids::{validate_name, ActorPath, NodeId};
use crate::remote::{Dispatched, ErasedHandler, RemoteMessage, Sender, Undelivered};
use crate::supervision::{ActorSpec, Restart};
use crate::{Node, RemoteRef};
use wire::{Ack, Close, Data, Grant, Open, Payload};

/// Longest channel name (the sender's endpoint name must fit in 64 bytes).
pub const MAX_CHANNEL_LEN: usize = 37;

/// Why a reliable channel operation failed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ReliableError {
    /// The channel name is not a valid actor-name fragment.
    #[error("bad channel name {0:?}: 1-37 characters of [A-Za-z0-9._-]")]
    BadChannel(String),
    /// The target is not of the form `node/channel`.
    #[error("bad channel path {0:?}: expected \"node/channel\"")]
    BadPath(String),
    /// No receiver for this channel runs on that node.
    #[error("no reliable channel {channel:?} on node {node:?}")]
    UnknownChannel {
        /// The node asked.
        node: String,
        /// The channel asked for.
        channel: String,
    },
    /// The receiver refused the session (for example: it carries another
    /// message type).
    #[error("the receiver refused the session: {0}")]
    Refused(String),
    /// The opening handshake failed (timeout, unreachable node...).
    #[error("could not open the channel: {0}")]
    Open(AskError),
    /// The consumer actor is not running or does not handle the message.
    #[error("consumer actor {actor:?} is not running or does not handle {message}")]
    NoConsumer {
        /// The consumer's name.
        actor: String,
        /// The message type's wire name.
        message: &'static str,
    },
    /// The message did not encode.
    #[error("message did not encode: {0}")]
    Encode(String),
    /// The sender was closed.
    #[error("the reliable channel is closed")]
    Closed,
    /// The local node is stopped.
    #[error("the local node is stopped")]
    NodeStopped,
    /// Spawning an endpoint actor failed.
    #[error(transparent)]
    Node(#[from] NodeError),
}

/// Something the producer should know about its session.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SenderEvent {
    /// The consumer side restarted (new incarnation): these sequence
    /// numbers are being delivered again and may have been handled by the
    /// old incarnation already (see the module docs).
    ConsumerRestarted {
        /// The sequence numbers that may be handled twice.
        maybe_redelivered: std::ops::RangeInclusive<u64>,
    },
    /// An acknowledgement was refused as invalid (logged as well).
    RejectedAck {
        /// Why.
        error: String,
    },
}

/// A fresh, practically unique 64-bit id (sessions, receiver
/// incarnations): the node's incarnation mixed with a process counter.
fn fresh_id(node: &NodeId) -> u64 {
    static COUNTER: AtomicU64 = AtomicU64::new(0);
    let n = COUNTER.fetch_add(1, Ordering::Relaxed);
    let inc = node.incarnation.as_u128();
    let mut z =
        (inc as u64) ^ ((inc >> 64) as u64).rotate_left(17) ^ n.wrapping_mul(0x9E37_79B9_7F4A_7C15);
    // splitmix64 finalizer
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    (z ^ (z >> 31)).max(1)
}

fn check_channel(channel: &str) -> Result<(), ReliableError> {
    if channel.len() > MAX_CHANNEL_LEN || validate_name(channel).is_err() {
        return Err(ReliableError::BadChannel(channel.to_string()));
    }
    Ok(())
}

/// The receiver endpoint's actor name for `channel`.
pub fn receiver_name(channel: &str) -> String {
    format!("reliable.{channel}")
}

/// The sender endpoint's actor name for session `producer` of `channel`.
pub fn sender_name(channel: &str, producer: u64) -> String {
    format!("reliable.{channel}.p{producer:016x}")
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

// ---------------------------------------------------------------------------
// Producer side
// ---------------------------------------------------------------------------

/// The producer's end of a reliable channel, sending `M`s to one consumer
/// actor. Cheap to clone: clones share one session (one sequence), and the
/// session closes when the last clone is dropped or [`close`](Self::close)d.
pub struct ReliableSender<M: RemoteMessage> {
    inner: Arc<SenderInner>,
    _guard: Arc<CloseOnDrop>,
    _m: PhantomData<fn(M)>,
}

impl<M: RemoteMessage> Clone for ReliableSender<M> {
    fn clone(&self) -> Self {
        Self {
            inner: self.inner.clone(),
            _guard: self._guard.clone(),
            _m: PhantomData,
        }
    }
}

impl<M: RemoteMessage> std::fmt::Debug for ReliableSender<M> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "ReliableSender<{}>({}, session {:016x})",
            M::NAME,
            self.inner.data.path(),
            self.inner.producer
        )
    }
}

struct SenderInner {
    core: Mutex<SenderCore>,
    /// Woken when an acknowledgement was accepted (room, progress).
    room: tokio::sync::Notify,
    /// Woken when messages were queued and not transmitted: the flusher
    /// sends them (when the producer yields).
    dirty: tokio::sync::Notify,
    max_batch: u64,
    data: RemoteRef<Data>,
    node: Node,
    producer: u64,
    channel: String,
    closed: AtomicBool,
    events: tokio::sync::broadcast::Sender<SenderEvent>,
}

impl SenderInner {
    fn now(&self) -> Duration {
        self.node.now()
    }

    fn data(&self, f: Frame) -> Data {
        Data {
            producer: self.producer,
            base: f.base,
            first: f.first,
            items: f.items.into_iter().map(Payload).collect(),
        }
    }

    /// Hand frames to the transport without waiting: a refused frame is as
    /// good as lost (the resend timer covers it).
    fn transmit(&self, frames: Vec<Frame>) {
        for f in frames {
            if let Err(e) = self.data.tell(self.data(f)) {
                tracing::trace!(channel = %self.channel, error = %e, "reliable frame not sent; will resend");
            }
        }
    }

    /// Hand frames to the transport, waiting for room in its queue
    /// (back-pressure, like `tell_wait`).
    async fn transmit_wait(&self, frames: Vec<Frame>) {
        for f in frames {
            if let Err(e) = self.data.tell_wait(self.data(f)).await {
                tracing::trace!(channel = %self.channel, error = %e, "reliable frame not sent; will resend");
            }
        }
    }

    fn on_ack(&self, grant: Grant) {
        let mut frames = Vec::new();
        let outcome = lock(&self.core).on_ack(self.now(), grant, &mut frames);
        match outcome {
            Ok(AckOutcome::ConsumerRestarted { maybe_redelivered }) => {
                tracing::warn!(
                    channel = %self.channel,
                    session = format_args!("{:016x}", self.producer),
                    from = maybe_redelivered.start(),
                    to = maybe_redelivered.end(),
                    "reliable channel: the consumer side restarted; unacknowledged messages are sent again and may be handled twice"
                );
                let _ = self
                    .events
                    .send(SenderEvent::ConsumerRestarted { maybe_redelivered });
            }
            Ok(_) => {}
            Err(e) => {
                tracing::warn!(channel = %self.channel, error = %e, "reliable channel: acknowledgement refused");
                let _ = self.events.send(SenderEvent::RejectedAck {
                    error: e.to_string(),
                });
            }
        }
        self.room.notify_waiters();
        self.transmit(frames);
    }

    fn tick(&self) {
        let mut frames = Vec::new();
        lock(&self.core).on_tick(self.now(), &mut frames);
        self.transmit(frames);
    }

    /// Transmit what was queued and not sent yet.
    async fn flush_queued(&self) {
        let mut frames = Vec::new();
        lock(&self.core).flush(&mut frames);
        self.transmit_wait(frames).await;
    }

    fn close(&self) {
        if self.closed.swap(true, Ordering::SeqCst) {
            return;
        }
        self.room.notify_waiters();
        self.dirty.notify_one();
        let close = self.node.lookup::<Close>(&self.data.path().to_string());
        if let Ok(r) = close {
            let _ = r.tell(Close {
                producer: self.producer,
            });
        }
        if let Some(addr) = self
            .node
            .registry()
            .typed_addr::<SenderActor>(&sender_name(&self.channel, self.producer))
        {
            addr.do_send(StopEndpoint);
        }
    }
}

/// Closes the session when the last [`ReliableSender`] clone goes.
struct CloseOnDrop(Arc<SenderInner>);

impl Drop for CloseOnDrop {
    fn drop(&mut self) {
        self.0.close();
    }
}

impl<M: RemoteMessage> ReliableSender<M> {
    /// Open a session to the reliable channel at `target`
    /// (`"node/channel"`), with the default [`SenderSettings`].
    pub async fn connect(node: &Node, target: &str) -> Result<Self, ReliableError> {
        Self::connect_with(node, target, SenderSettings::default()).await
    }

    /// [`connect`](Self::connect) with explicit settings. Spawns this
    /// session's endpoint actor on `node`, then asks the receiver for its
    /// grant (with the node's ask retries, within `10 s`): fails with
    /// [`ReliableError::UnknownChannel`] when no receiver for the channel
    /// runs there.
    pub async fn connect_with(
        node: &Node,
        target: &str,
        settings: SenderSettings,
    ) -> Result<Self, ReliableError> {
        let (peer, channel) = target
            .split_once('/')
            .ok_or_else(|| ReliableError::BadPath(target.to_string()))?;
        check_channel(channel)?;
        let path = ActorPath::new(peer, receiver_name(channel))
            .map_err(|_| ReliableError::BadPath(target.to_string()))?;
        let producer = fresh_id(node.id());
        let inner = Arc::new(SenderInner {
            core: Mutex::new(SenderCore::new(settings)),
            room: tokio::sync::Notify::new(),
            dirty: tokio::sync::Notify::new(),
            max_batch: settings.max_batch.max(1) as u64,
            data: node.actor_ref::<Data>(path.clone()),
            node: node.clone(),
            producer,
            channel: channel.to_string(),
            closed: AtomicBool::new(false),
            events: tokio::sync::broadcast::channel(64).0,
        });
        let tick = (settings.resend_after / 4).max(Duration::from_millis(1));
        let name = sender_name(channel, producer);
        let for_actor = inner.clone();
        node.spawn(
            ActorSpec::new(name.clone(), move || SenderActor {
                inner: for_actor.clone(),
                tick,
                expected_node: for_actor.data.path().node.clone(),
            })
            .handles_from::<Ack>()
            .restart(Restart::Transient),
        )
        .await?;
        let guard = Arc::new(CloseOnDrop(inner.clone()));
        let open = node
            .actor_ref::<Open>(path)
            .ask(Open {
                producer,
                message: M::NAME.to_string(),
            })
            .timeout(Duration::from_secs(10))
            .await;
        let grant = match open {
            Ok(Ok(g)) => g,
            Ok(Err(refusal)) => return Err(ReliableError::Refused(refusal)),
            Err(AskError::Remote(RemoteError::UnknownActor(_))) => {
                return Err(ReliableError::UnknownChannel {
                    node: peer.to_string(),
                    channel: channel.to_string(),
                })
            }
            Err(AskError::NodeStopped) => return Err(ReliableError::NodeStopped),
            Err(e) => return Err(ReliableError::Open(e)),
        };
        inner.on_ack(grant);
        // The flusher: sends what `send` queued once the producer yields
        // (a producer that sends in a loop fills whole batches itself).
        let flusher = inner.clone();
        tokio::spawn(async move {
            loop {
                flusher.dirty.notified().await;
                if flusher.closed.load(Ordering::SeqCst) {
                    return;
                }
                flusher.flush_queued().await;
            }
        });
        Ok(Self {
            inner,
            _guard: guard,
            _m: PhantomData,
        })
    }

    /// Send `msg` as the session's next message; returns its sequence
    /// number. Waits while the consumer's window is full; `Ok` means
    /// *accepted for delivery* (it will reach the consumer exactly once
    /// while both ends live), not yet *delivered* — see
    /// [`flush`](Self::flush).
    pub async fn send(&self, msg: M) -> Result<u64, ReliableError> {
        let mut payload =
            Bytes::from(rmp_serde::to_vec(&msg).map_err(|e| ReliableError::Encode(e.to_string()))?);
        loop {
            self.check_open()?;
            let notified = self.inner.room.notified();
            tokio::pin!(notified);
            notified.as_mut().enable();
            // Queued; transmitted in batches: here when a batch is full or
            // the window is (before waiting), else by the flusher.
            let mut frames = Vec::new();
            let pushed = {
                let mut core = lock(&self.inner.core);
                let pushed = core.push_queued(self.inner.now(), payload);
                if pushed.is_err() || core.unsent() >= self.inner.max_batch {
                    core.flush(&mut frames);
                }
                pushed
            };
            self.inner.transmit_wait(frames).await;
            match pushed {
                Ok(seq) => {
                    self.inner.dirty.notify_one();
                    return Ok(seq);
                }
                Err(p) => {
                    payload = p;
                    let _ = tokio::time::timeout(Duration::from_millis(200), notified).await;
                }
            }
        }
    }

    /// Send `msg` if the window has room now; [`ReliableError::Closed`]
    /// aside, a full window gives the message back as `Err(Ok(msg))`.
    pub fn try_send(&self, msg: M) -> Result<u64, Result<M, ReliableError>> {
        self.check_open().map_err(Err)?;
        if !lock(&self.inner.core).has_room() {
            return Err(Ok(msg));
        }
        let payload = Bytes::from(
            rmp_serde::to_vec(&msg).map_err(|e| Err(ReliableError::Encode(e.to_string())))?,
        );
        let mut frames = Vec::new();
        let pushed = {
            let mut core = lock(&self.inner.core);
            let pushed = core.push_queued(self.inner.now(), payload);
            core.flush(&mut frames);
            pushed
        };
        self.inner.transmit(frames);
        match pushed {
            Ok(seq) => Ok(seq),
            // Another clone took the last slot meanwhile.
            Err(_) => Err(Ok(msg)),
        }
    }

    /// Wait until every message sent so far is confirmed by the consumer.
    pub async fn flush(&self) -> Result<(), ReliableError> {
        loop {
            self.check_open()?;
            let notified = self.inner.room.notified();
            tokio::pin!(notified);
            notified.as_mut().enable();
            if lock(&self.inner.core).all_acked() {
                return Ok(());
            }
            let _ = tokio::time::timeout(Duration::from_millis(200), notified).await;
        }
    }

    fn check_open(&self) -> Result<(), ReliableError> {
        if self.inner.closed.load(Ordering::SeqCst) {
            return Err(ReliableError::Closed);
        }
        if self.inner.node.is_stopped() {
            return Err(ReliableError::NodeStopped);
        }
        Ok(())
    }

    /// The session's counters.
    pub fn stats(&self) -> SenderStats {
        lock(&self.inner.core).stats()
    }

    /// Messages sent and not yet acknowledged.
    pub fn unacked(&self) -> u64 {
        lock(&self.inner.core).unacked()
    }

    /// This session's id (its producer incarnation).
    pub fn session(&self) -> u64 {
        self.inner.producer
    }

    /// Events of this session (a consumer restart, a refused ack).
    pub fn events(&self) -> tokio::sync::broadcast::Receiver<SenderEvent> {
        self.inner.events.subscribe()
    }

    /// End the session: unacknowledged messages are abandoned, the
    /// receiver is told to forget the session, and this handle's clones
    /// fail with [`ReliableError::Closed`]. Dropping the last clone does
    /// the same.
    pub fn close(&self) {
        self.inner.close();
    }
}

/// The producer session's endpoint: takes acknowledgements, runs the
/// resend timer.
struct SenderActor {
    inner: Arc<SenderInner>,
    tick: Duration,
    expected_node: String,
}

impl Actor for SenderActor {
    type Context = Context<Self>;
    fn started(&mut self, ctx: &mut Context<Self>) {
        ctx.run_interval(self.tick, |act, _| act.inner.tick());
    }
}

impl Handler<Sender<Ack>> for SenderActor {
    type Result = ();
    fn handle(&mut self, m: Sender<Ack>, _: &mut Context<Self>) {
        if m.from.name != self.expected_node || m.msg.producer != self.inner.producer {
            tracing::warn!(
                channel = %self.inner.channel,
                from = %m.from,
                session = format_args!("{:016x}", m.msg.producer),
                "reliable channel: acknowledgement from an unexpected node or for another session ignored"
            );
            let _ = self.inner.events.send(SenderEvent::RejectedAck {
                error: format!(
                    "acknowledgement from {} for session {:016x}",
                    m.from.name, m.msg.producer
                ),
            });
            return;
        }
        self.inner.on_ack(m.msg.grant);
    }
}

#[derive(Message)]
#[rtype(result = "()")]
struct StopEndpoint;

impl Handler<StopEndpoint> for SenderActor {
    type Result = ();
    fn handle(&mut self, _: StopEndpoint, ctx: &mut Context<Self>) {
        ctx.stop();
    }
}

// ---------------------------------------------------------------------------
// Consumer side
// ---------------------------------------------------------------------------

/// The consumer's end of a reliable channel: the endpoint actor
/// `reliable.<channel>` on the consumer's node, delivering to a local
/// consumer actor. Dropping the handle leaves the endpoint running;
/// [`stop`](Self::stop) ends it.
#[derive(Clone)]
pub struct ReliableReceiver {
    node: Node,
    channel: String,
    stats: Arc<Mutex<ReceiverStats>>,
}

impl std::fmt::Debug for ReliableReceiver {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "ReliableReceiver({}/{})", self.node.name(), self.channel)
    }
}

impl ReliableReceiver {
    /// Start channel `channel` on `node`, delivering `M`s to the local
    /// actor named `consumer` (which must be running and handle `M`, with
    /// [`ActorSpec::handles`] or `handles_from`, where `from` is the
    /// producer's node), with the default [`ReceiverSettings`].
    pub async fn start<M: RemoteMessage>(
        node: &Node,
        channel: &str,
        consumer: &str,
    ) -> Result<Self, ReliableError> {
        Self::start_with::<M>(node, channel, consumer, ReceiverSettings::default()).await
    }

    /// [`start`](Self::start) with explicit settings.
    pub async fn start_with<M: RemoteMessage>(
        node: &Node,
        channel: &str,
        consumer: &str,
        settings: ReceiverSettings,
    ) -> Result<Self, ReliableError> {
        check_channel(channel)?;
        let has_handler = node
            .registry()
            .get(consumer)
            .is_some_and(|e| e.handlers.contains_key(M::NAME));
        if !has_handler {
            return Err(ReliableError::NoConsumer {
                actor: consumer.to_string(),
                message: M::NAME,
            });
        }
        let stats = Arc::new(Mutex::new(ReceiverStats::default()));
        let (n, c, s) = (node.clone(), consumer.to_string(), stats.clone());
        let ch = channel.to_string();
        node.spawn(
            ActorSpec::new(receiver_name(channel), move || {
                ReceiverActor::new(n.clone(), &ch, c.clone(), M::NAME, settings, s.clone())
            })
            .handles_from::<Open>()
            .handles_from::<Data>()
            .handles_from::<Close>(),
        )
        .await?;
        Ok(Self {
            node: node.clone(),
            channel: channel.to_string(),
            stats,
        })
    }

    /// The receiver's counters (as of its last tick, every `ack_delay`).
    pub fn stats(&self) -> ReceiverStats {
        *lock(&self.stats)
    }

    /// The channel's name.
    pub fn channel(&self) -> &str {
        &self.channel
    }

    /// Stop the endpoint (sessions are forgotten; producers see the
    /// channel as unknown from then on).
    pub async fn stop(&self) -> Result<bool, ReliableError> {
        Ok(self.node.stop_actor(&receiver_name(&self.channel)).await?)
    }
}

/// What a session's consumer confirmations are collected in.
struct SessionLink {
    /// The highest sequence number whose handler returned.
    confirmed: Arc<AtomicU64>,
    /// Called by the consumer after each handler.
    after: Arc<dyn Fn(u64) + Send + Sync>,
    /// Where acknowledgements go.
    ack: RemoteRef<Ack>,
    /// The producer's node (what a `handles_from` consumer sees).
    from: NodeId,
}

/// The receiver endpoint actor: drives a [`ReceiverCore`].
struct ReceiverActor {
    core: ReceiverCore,
    node: Node,
    channel: String,
    consumer: String,
    message: &'static str,
    ack_delay: Duration,
    /// The consumer instance's generation and handler.
    handler: Option<(u64, Arc<dyn ErasedHandler>)>,
    links: HashMap<u64, SessionLink>,
    /// Deliveries not yet handed to the consumer, in order.
    stalled: VecDeque<Delivery>,
    /// Waiting for room in the consumer's inbox.
    waiting: bool,
    /// Payloads the consumer could not decode (skipped).
    undecodable: u64,
    shown: Arc<Mutex<ReceiverStats>>,
}

/// A consumer confirmed a multiple of `ack_every`: look and acknowledge.
#[derive(Message)]
#[rtype(result = "()")]
struct Confirmed(u64);

impl ReceiverActor {
    fn new(
        node: Node,
        channel: &str,
        consumer: String,
        message: &'static str,
        settings: ReceiverSettings,
        shown: Arc<Mutex<ReceiverStats>>,
    ) -> Self {
        let id = fresh_id(node.id());
        Self {
            core: ReceiverCore::new(id, settings),
            node,
            channel: channel.to_string(),
            consumer,
            message,
            ack_delay: settings.ack_delay.max(Duration::from_millis(1)),
            handler: None,
            links: HashMap::new(),
            stalled: VecDeque::new(),
            waiting: false,
            undecodable: 0,
            shown,
        }
    }

    /// The link of session `producer`, made on first sight.
    fn link(&mut self, producer: u64, from: &NodeId, ctx: &mut Context<Self>) {
        if self.links.contains_key(&producer) {
            return;
        }
        let confirmed = Arc::new(AtomicU64::new(0));
        let addr = ctx.address();
        let every = self.core.settings().ack_every;
        let cell = confirmed.clone();
        let after: Arc<dyn Fn(u64) + Send + Sync> = Arc::new(move |seq| {
            cell.fetch_max(seq, Ordering::AcqRel);
            if seq % every == 0 {
                addr.do_send(Confirmed(producer));
            }
        });
        let ack = self.node.actor_ref::<Ack>(ActorPath {
            node: from.name.clone(),
            actor: sender_name(&self.channel, producer),
        });
        self.links.insert(
            producer,
            SessionLink {
                confirmed,
                after,
                ack,
                from: from.clone(),
            },
        );
    }

    /// The consumer's current handler; a new instance (restart) gets what
    /// the old one had not confirmed again.
    fn consumer_handler(&mut self) -> Option<Arc<dyn ErasedHandler>> {
        let entry = self.node.registry().get(&self.consumer)?;
        let handler = entry.handlers.get(self.message)?.clone();
        match &self.handler {
            Some((g, h)) if *g == entry.generation => return Some(h.clone()),
            Some(_) => {
                // A new instance: its predecessor's inbox is closed, so
                // the confirmations are final. Hand out again, in order,
                // all that is unconfirmed (what was stalled is among it).
                self.sync_confirmations();
                let mut again = Vec::new();
                self.core.redeliver(&mut again);
                tracing::info!(
                    channel = %self.channel,
                    consumer = %self.consumer,
                    messages = again.len(),
                    "reliable channel: consumer restarted; delivering unconfirmed messages again"
                );
                self.stalled = again.into();
            }
            None => {}
        }
        self.handler = Some((entry.generation, handler.clone()));
        Some(handler)
    }

    /// Hand stalled deliveries to the consumer, in order, until its inbox
    /// is full (then wait for room, taking no other message meanwhile).
    fn pump(&mut self, ctx: &mut Context<Self>) {
        if self.waiting || self.stalled.is_empty() {
            return;
        }
        let Some(handler) = self.consumer_handler() else {
            return; // not running (restarting): the tick tries again
        };
        while let Some(d) = self.stalled.pop_front() {
            let Some(link) = self.links.get(&d.producer) else {
                continue; // the session was closed
            };
            let from = NodeIdView::from(&link.from);
            match handler.dispatch_then(&d.payload, &from, (link.after.clone(), d.seq)) {
                Ok(Dispatched::Queued) => {}
                Ok(Dispatched::Full(room)) => {
                    self.waiting = true;
                    ctx.wait(actix::fut::wrap_future::<_, Self>(room).map(|_, act, ctx| {
                        act.waiting = false;
                        act.pump(ctx);
                    }));
                    return;
                }
                Err(Undelivered {
                    error: RemoteError::BadPayload(e),
                    ..
                }) => {
                    tracing::error!(
                        channel = %self.channel,
                        seq = d.seq,
                        error = %e,
                        "reliable channel: the consumer cannot decode this message; skipped"
                    );
                    self.undecodable += 1;
                    (link.after)(d.seq);
                }
                Err(_) => {
                    // The consumer stopped: keep it for its next instance.
                    self.stalled.push_front(d);
                    return;
                }
            }
        }
    }

    fn sync_confirmations(&mut self) {
        for (p, link) in &self.links {
            let upto = link.confirmed.load(Ordering::Acquire);
            self.core.confirm(*p, upto);
        }
    }

    fn send_ack(&mut self, producer: u64, force: bool, any: bool) {
        if let (Some(grant), Some(link)) = (
            self.core.ack(producer, force, any),
            self.links.get(&producer),
        ) {
            if let Err(e) = link.ack.tell(Ack { producer, grant }) {
                tracing::trace!(channel = %self.channel, error = %e, "reliable ack not sent");
            }
        }
    }

    fn tick(&mut self, ctx: &mut Context<Self>) {
        if !self.waiting {
            // Notices a restarted consumer even when nothing new arrives.
            self.consumer_handler();
        }
        self.pump(ctx);
        self.sync_confirmations();
        for p in self.core.producers() {
            self.send_ack(p, false, true);
        }
        if self.core.expire_idle(self.node.now()) > 0 {
            let live: std::collections::HashSet<u64> = self.core.producers().into_iter().collect();
            self.links.retain(|p, _| live.contains(p));
        }
        let mut shown = self.core.stats();
        shown.refused_frames += self.undecodable;
        *lock(&self.shown) = shown;
    }
}

impl Actor for ReceiverActor {
    type Context = Context<Self>;
    fn started(&mut self, ctx: &mut Context<Self>) {
        ctx.run_interval(self.ack_delay, |act, ctx| act.tick(ctx));
    }
    fn stopped(&mut self, _: &mut Context<Self>) {
        *lock(&self.shown) = self.core.stats();
    }
}

impl Handler<Sender<Open>> for ReceiverActor {
    type Result = Result<Grant, String>;
    fn handle(&mut self, m: Sender<Open>, ctx: &mut Context<Self>) -> Result<Grant, String> {
        if m.msg.message != self.message {
            tracing::warn!(channel = %self.channel, from = %m.from, offered = %m.msg.message, "reliable channel: session refused (message type)");
            return Err(format!(
                "channel {:?} carries {}, not {}",
                self.channel, self.message, m.msg.message
            ));
        }
        self.sync_confirmations();
        let grant = self
            .core
            .open(self.node.now(), &m.from.name, m.msg.producer)
            .map_err(|e| e.to_string())?;
        self.link(m.msg.producer, &m.from, ctx);
        Ok(grant)
    }
}

impl Handler<Sender<Data>> for ReceiverActor {
    type Result = ();
    fn handle(&mut self, m: Sender<Data>, ctx: &mut Context<Self>) {
        let Sender { from, msg } = m;
        let producer = msg.producer;
        let frame = Frame {
            base: msg.base,
            first: msg.first,
            items: msg.items.into_iter().map(|p| p.0).collect(),
        };
        let mut out = Vec::new();
        let now = self.node.now();
        match self
            .core
            .on_data(now, &from.name, producer, frame, &mut out)
        {
            Err(e) => {
                tracing::debug!(channel = %self.channel, error = %e, "reliable frame refused");
            }
            Ok(o) => {
                self.link(producer, &from, ctx);
                if o.delivered > 0 {
                    self.stalled.extend(out);
                    self.pump(ctx);
                }
                if o.ack_now {
                    self.sync_confirmations();
                    self.send_ack(producer, true, false);
                }
            }
        }
    }
}

impl Handler<Sender<Close>> for ReceiverActor {
    type Result = ();
    fn handle(&mut self, m: Sender<Close>, _: &mut Context<Self>) {
        let p = m.msg.producer;
        if self.core.node_of(p).is_some_and(|n| n != m.from.name) {
            tracing::warn!(channel = %self.channel, from = %m.from, "reliable channel: close of another node's session ignored");
            return;
        }
        self.core.close(p);
        self.links.remove(&p);
        self.stalled.retain(|d| d.producer != p);
    }
}

impl Handler<Confirmed> for ReceiverActor {
    type Result = ();
    fn handle(&mut self, m: Confirmed, _: &mut Context<Self>) {
        if let Some(link) = self.links.get(&m.0) {
            let upto = link.confirmed.load(Ordering::Acquire);
            self.core.confirm(m.0, upto);
            self.send_ack(m.0, false, false);
        }
    }
}
