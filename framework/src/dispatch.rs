//! The inbound dispatcher: from received frames to local actors' inboxes.
//!
//! One dispatcher task runs per node, on the node actor's arbiter. It takes
//! the transport's events (and reads the streams a transport hands over,
//! see [`crate::transport::InboundEvents`]), decodes each frame, checks that the claimed sender
//! is the authenticated peer, and hands the message to the target actor
//! through its remote inbox (see [`crate::inbox`], bounded by the actor's
//! `mailbox` setting): tells, and asks together with the handle that
//! answers them from wherever the answer is known (deduplicated, see
//! `ReplyTo` in the `reply` module and [`crate::rpc`]); replies to this
//! node's own asks go straight to the waiting ask.
//!
//! Guarantees:
//! - **Order.** Messages reach each actor in the order their frames arrived,
//!   so two actors keep the per-sender FIFO order the transport gives. When
//!   a message finds its actor's inbox full, it waits for room, and everything
//!   that arrives for that actor meanwhile is parked behind it, in order,
//!   while other actors keep receiving.
//! - **Bounded.** Deliveries waiting for inbox room, parked messages, and
//!   asks handed over but not answered yet are checked against
//!   `runtime.max_inflight_deliveries` before each received event (so they
//!   exceed it by at most one event's frames);
//!   past that the dispatcher stops taking frames: it no longer polls the
//!   streams it reads itself, the transport's bounded channel fills, the
//!   transport stops reading, and flow control slows the remote senders.
//!   Control frames (heartbeats and probes, sent with `send_control`: their
//!   own stream on QUIC) are still read past the limit, until they have
//!   added a quarter of it (at least 16) to where the count stood when it
//!   was reached, so a node with a slow actor keeps hearing its peers and
//!   its failure detector does not suspect them for it (where the transport
//!   hands control frames over as a control source, as QUIC and the
//!   simulated network do).
//!   The price is head-of-line blocking at that limit: one persistently slow
//!   actor eventually slows all other inbound traffic of its node; and an ask
//!   handler that waits for *further* frames (a vote arriving as a tell,
//!   say) counts while it waits, so with that many such handlers waiting
//!   the node stops reading the frames they wait for, until their asks time
//!   out. Protocols here never wait inside a handler (they are sans-IO
//!   state machines fed one message at a time); an application that must
//!   wait for other nodes' messages before it answers should exchange tells
//!   (answering with a tell of its own) rather than hold an ask open.
//! - **Fair to local actors.** Every 256 delivered frames the dispatcher
//!   yields, so the actors on its thread drain their inboxes while a
//!   stream keeps delivering (a stream read in place has no channel budget
//!   to make it yield).
//! - **Bad input never stops it**: a frame that does not decode, claims
//!   another sender than the authenticated one, targets an unknown actor or
//!   carries an unknown message type is counted and logged (and answered
//!   with an error reply when it was an ask); everything else keeps flowing.
//!
//! A stream of tells from one handle repeats the same envelope header
//! (sender, target, type), so the dispatcher remembers the last tell's
//! header bytes and handler: the next matching frame is delivered without
//! decoding the envelope or looking the actor up (see [`crate::codec::tell_header_len`]).

use std::collections::{HashMap, VecDeque};
use std::sync::atomic::Ordering;
use std::sync::Arc;

use actix::Addr;
use bytes::Bytes;
use futures::stream::{FuturesUnordered, StreamExt};

use crate::codec::{self, EnvelopeView, Kind, NodeIdView, RemoteError};
use crate::error::AskError;
use crate::ids::NodeId;
use crate::metrics::{Direction, MessageKind, Traffic, TrafficCache};
use crate::node::{NodeActor, NodeShared, Peer, PeerEvent};
use crate::remote::{Dispatched, ErasedHandler, LocalFut, Undelivered};
use crate::reply::ReplyTo;
use crate::rpc::Verdict;
use crate::transport::{InboundEvents, InboundReceiver, TransportEvent};

/// A message waiting for room in an actor's inbox: its future, and the actor,
/// whose parked messages go next once it is in. Not boxed again: the future
/// is the one the handler returned.
struct InFlight {
    /// `None` once finished.
    actor: Option<String>,
    /// The message is an ask (whose `ReplyTo` is counted as answering).
    ask: bool,
    fut: LocalFut<()>,
}

/// What a finished [`InFlight`] hands back.
struct Landed {
    /// The actor whose parked messages go next.
    actor: Option<String>,
    ask: bool,
}

impl std::future::Future for InFlight {
    type Output = Landed;
    fn poll(
        self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Landed> {
        // Every field is `Unpin` (the future is boxed).
        let this = self.get_mut();
        this.fut.as_mut().poll(cx).map(|()| Landed {
            actor: this.actor.take(),
            ask: this.ask,
        })
    }
}

/// A message that arrived for an actor while a message to it was waiting for
/// room in its inbox.
struct Parked {
    handler: Arc<dyn ErasedHandler>,
    payload: Bytes,
    /// The sender: the authenticated peer's name (shared, not copied) and
    /// the incarnation its envelope named.
    from_name: Arc<str>,
    from_incarnation: uuid::Uuid,
    /// How to answer it, when it is an ask.
    reply: Option<ReplyTo>,
    /// See [`Incoming::cause`].
    cause: Option<u64>,
}

/// A received message on its way to an actor.
struct Incoming<'a> {
    /// The frame it came in.
    frame: &'a Bytes,
    /// Its payload, inside `frame`.
    payload: &'a [u8],
    /// The authenticated peer it came from.
    peer: PeerName<'a>,
    /// The sender its envelope names (`from.name` is `peer`).
    from: &'a NodeIdView<'a>,
    /// The frame's `seq` (its Lamport stamp) while frames are traced: the
    /// cause of what the actor sends while it handles the message (see
    /// [`crate::remote::current_cause`]); `None` otherwise.
    cause: Option<u64>,
}

impl<'a> Incoming<'a> {
    /// The message of a decoded envelope `env` that came in `frame` from
    /// `peer` (whose name the envelope's sender was checked against).
    fn of(frame: &'a Bytes, env: &'a EnvelopeView<'a>, peer: PeerName<'a>, tracing: bool) -> Self {
        Incoming {
            frame,
            payload: env.payload,
            peer,
            from: &env.from,
            cause: cause_of(tracing, &env.stamp),
        }
    }
}

/// The `seq` a traced frame with `stamp` is known by (see [`Incoming::cause`]).
fn cause_of(tracing: bool, stamp: &Option<codec::ClockStamp>) -> Option<u64> {
    tracing.then(|| stamp.as_ref().and_then(|s| s.lamport).unwrap_or(0))
}

/// The authenticated peer's name as the transport gave it: shared for a
/// batch of frames, borrowed for a single one (copied only if parked).
#[derive(Clone, Copy)]
enum PeerName<'a> {
    Shared(&'a Arc<str>),
    Borrowed(&'a str),
}

impl PeerName<'_> {
    fn as_str(&self) -> &str {
        match self {
            PeerName::Shared(s) => s,
            PeerName::Borrowed(s) => s,
        }
    }

    fn to_shared(self) -> Arc<str> {
        match self {
            PeerName::Shared(s) => s.clone(),
            PeerName::Borrowed(s) => Arc::from(s),
        }
    }
}

/// The header of the last tell delivered and the handler it went to.
struct TellCache {
    /// The authenticated peer the header came from.
    peer: String,
    /// The frame bytes before the payload (see [`codec::tell_header_len`]).
    header: Vec<u8>,
    /// The sender named in the header.
    from: NodeId,
    /// The target actor's name.
    actor: String,
    handler: Arc<dyn ErasedHandler>,
    /// The counters of these tells (see [`crate::metrics`]).
    traffic: Option<Traffic>,
}

/// Runs the dispatcher until the transport's channel closes.
pub(crate) async fn run(shared: Arc<NodeShared>, rx: InboundReceiver, node: Addr<NodeActor>) {
    // The transport's channel, and the streams it hands over to be read
    // right here (QUIC): no reader task between the network and the actor.
    let mut events = InboundEvents::new(rx);
    let limit = shared.options.max_inflight_deliveries;
    // Past the limit, control frames may add this many more (see the
    // module docs), counted from where the limit was first reached.
    let control_reserve = (limit / 4).max(16);
    let mut control_ceiling: Option<usize> = None;
    let mut d = Dispatcher {
        shared,
        inflight: FuturesUnordered::new(),
        cache: None,
        blocked: HashMap::new(),
        parked: 0,
        held_asks: 0,
        spare: VecDeque::new(),
        traffic: TrafficCache::default(),
        delivered: Vec::new(),
    };
    let mut since_yield = 0usize;
    loop {
        let busy = d.busy();
        d.shared.inbound_busy.store(busy, Ordering::Relaxed);
        let readable = if busy < limit {
            control_ceiling = None;
            true
        } else {
            busy < *control_ceiling.get_or_insert(busy + control_reserve)
        };
        tokio::select! {
            biased;
            Some(done) = d.inflight.next(), if !d.inflight.is_empty() => {
                if done.ask {
                    d.held_asks -= 1;
                }
                if let Some(actor) = done.actor {
                    d.unblock(actor);
                }
            }
            // Held back only by asks its actors have not answered yet:
            // look again after the next answer.
            () = d.shared.answering.one_answered(), if busy >= limit => {}
            // At the limit only control frames are read, up to a reserve.
            ev = events.recv_filtered(busy < limit), if readable => {
                let Some(ev) = ev else { break };
                match ev {
                    TransportEvent::Frame { from, bytes } => {
                        d.count_frames(1);
                        d.on_frame(PeerName::Borrowed(&from), &bytes);
                        d.flush_delivered(&from);
                        since_yield += 1;
                    }
                    TransportEvent::Frames { from, frames } => {
                        d.count_frames(frames.len());
                        for bytes in &frames {
                            d.on_frame(PeerName::Shared(&from), bytes);
                            since_yield += 1;
                            // One chunk can hold more frames than an inbox:
                            // let the actors catch up in the middle of it.
                            if since_yield >= YIELD_EVERY_FRAMES {
                                since_yield = 0;
                                d.flush_delivered(&from);
                                tokio::task::yield_now().await;
                            }
                        }
                        d.flush_delivered(&from);
                    }
                    TransportEvent::PeerUp { peer } => node.do_send(Peer(PeerEvent::Up(peer))),
                    TransportEvent::PeerDown { peer, reason } => {
                        tracing::debug!(%peer, %reason, "connection lost");
                        node.do_send(Peer(PeerEvent::Down(peer)));
                    }
                    // `InboundEvents` reads sources itself and never yields one.
                    TransportEvent::Source(_) | TransportEvent::ControlSource(_) => {}
                }
            }
        }
        // A stream read here is not a tokio channel: nothing makes this
        // task yield while data keeps arriving. Let the actors (on this
        // thread) drain their inboxes before they fill up.
        if since_yield >= YIELD_EVERY_FRAMES {
            since_yield = 0;
            tokio::task::yield_now().await;
        }
    }
}

/// Frames delivered between two voluntary yields of the dispatcher: well
/// under an actor's default inbox (1024).
const YIELD_EVERY_FRAMES: usize = 256;

struct Dispatcher {
    shared: Arc<NodeShared>,
    inflight: FuturesUnordered<InFlight>,
    /// Boxed, so taking it out and putting it back moves a pointer.
    cache: Option<Box<TellCache>>,
    /// Actors with a message waiting for inbox room, and what arrived for
    /// them since, in arrival order.
    blocked: HashMap<String, VecDeque<Parked>>,
    /// Messages in `blocked`, counted against the in-flight limit.
    parked: usize,
    /// Asks in `inflight` or `blocked`: already counted as answering (their
    /// `ReplyTo` exists), so not counted again.
    held_asks: usize,
    /// An emptied park queue, kept with its capacity for the next actor
    /// that blocks. A fresh queue grown to a few thousand entries on every
    /// full inbox cost the receiving thread ~10 % of its CPU in page
    /// faults (the allocator returned the big buffer to the OS in between).
    /// Bounded by the in-flight limit, like the queues themselves.
    spare: VecDeque<Parked>,
    /// Message counters by (kind, peer, type), for the node's metrics.
    traffic: TrafficCache,
    /// While frames are traced: the stamps of the tells the fast path
    /// delivered from the peer whose frames are being read, recorded
    /// together (one clock reading and trace lock for a batch) before
    /// anything else is recorded or the dispatcher yields.
    delivered: Vec<u64>,
}

impl Dispatcher {
    /// Deliveries waiting for inbox room, parked messages, and asks handed
    /// over and not answered yet: checked against the in-flight limit.
    fn busy(&self) -> usize {
        // An ask waiting for room or parked counts once: as a delivery.
        let answering = self.shared.answering.running();
        self.inflight.len() + self.parked + answering.saturating_sub(self.held_asks)
    }

    /// Count received frames (once per event, not per frame).
    fn count_frames(&self, n: usize) {
        self.shared
            .stats
            .frames_in
            .fetch_add(n as u64, Ordering::Relaxed);
    }

    /// Record the deliveries the fast path kept (see `delivered`), from
    /// `from`.
    fn flush_delivered(&mut self, from: &str) {
        if !self.delivered.is_empty() {
            self.shared.trace_delivered(from, &self.delivered);
            self.delivered.clear();
        }
    }

    fn on_frame(&mut self, peer: PeerName<'_>, bytes: &Bytes) {
        let from: &str = peer.as_str();
        if self.on_cached_tell(peer, bytes) {
            return;
        }
        // What the full path records comes after the deliveries kept.
        self.flush_delivered(from);
        let env = match codec::decode_view(bytes, self.shared.options.max_frame_bytes) {
            Ok(env) => env,
            Err(e) => {
                self.shared.stats.bad_frames.fetch_add(1, Ordering::Relaxed);
                tracing::warn!(node = %self.shared.id.name, peer = %from, error = %e, "dropping a frame that does not decode");
                return;
            }
        };
        if env.from.name != from {
            self.shared
                .stats
                .spoofed_frames
                .fetch_add(1, Ordering::Relaxed);
            tracing::warn!(node = %self.shared.id.name, peer = %from, claimed = %env.from.name, "dropping a frame whose sender is not the authenticated peer");
            self.shared.trace_received(
                from,
                &env.stamp,
                Some("sender is not the authenticated peer"),
            );
            if let Kind::Ask { id, .. } = env.kind {
                // Answered, to the authenticated peer, so its asker does
                // not wait for a deadline; never executed.
                ReplyTo::unrecorded(&self.shared, peer.to_shared(), id).fail(RemoteError::Refused(
                    format!(
                        "the envelope names {:?} as its sender, but the connection is authenticated as {from:?}",
                        env.from.name
                    ),
                ));
            }
            return;
        }
        self.shared.observe(&env.stamp);
        match env.kind {
            // The view borrows its payload from the frame (both decoders do), as
            // `Parked` relies on too: a slice of it, not a copy.
            Kind::Reply { id } => {
                self.shared.trace_received(from, &env.stamp, None);
                self.reply_arrived(from, id, Ok(bytes.slice_ref(env.payload)), bytes.len())
            }
            Kind::ErrorReply { id, ref error } => {
                self.shared.trace_received(from, &env.stamp, None);
                self.reply_arrived(from, id, Err(AskError::Remote(error.clone())), bytes.len())
            }
            Kind::Tell => match resolve(&self.shared, &env) {
                Ok(handler) => {
                    let msg = Incoming::of(bytes, &env, peer, self.shared.tracing());
                    let delivered = self.deliver(env.to.actor, &handler, msg, None);
                    match delivered {
                        Ok(()) => {
                            let traffic = self.traffic.get(
                                &self.shared.metrics,
                                Direction::Received,
                                MessageKind::Tell,
                                from,
                                env.type_tag,
                            );
                            if let Some(t) = &traffic {
                                t.record(bytes.len());
                            }
                            self.shared.trace_received(from, &env.stamp, None);
                            if let Some(h) = codec::tell_header_len(bytes, &env) {
                                self.cache = Some(Box::new(TellCache {
                                    peer: from.to_string(),
                                    header: bytes[..h].to_vec(),
                                    from: env.from.to_node_id(),
                                    actor: env.to.actor.to_string(),
                                    handler,
                                    traffic,
                                }));
                            }
                        }
                        Err(u) => self.undeliverable(from, &env, &u.error),
                    }
                }
                Err(e) => self.undeliverable(from, &env, &e),
            },
            Kind::Ask { id, done_below } => {
                // Told apart by incarnation *and* authenticated name (see
                // `rpc::Sender`).
                let sender = (env.from.incarnation.as_u128(), peer.to_shared());
                let verdict =
                    self.shared
                        .dedup()
                        .check(&sender, id, done_below, tokio::time::Instant::now());
                match verdict {
                    // A copy of an ask that is running, or that its sender
                    // has finished with: nobody needs it.
                    Verdict::Running | Verdict::Finished => {
                        self.shared
                            .stats
                            .deduplicated
                            .fetch_add(1, Ordering::Relaxed);
                        self.count_copy(from, &env, bytes.len());
                        self.shared.trace_received(
                            from,
                            &env.stamp,
                            Some("duplicate ask (running or finished)"),
                        );
                    }
                    Verdict::Answered(frame) => {
                        self.shared
                            .stats
                            .deduplicated
                            .fetch_add(1, Ordering::Relaxed);
                        self.shared.trace_received(
                            from,
                            &env.stamp,
                            Some("duplicate ask (its reply sent again)"),
                        );
                        self.count_copy(from, &env, bytes.len());
                        let len = frame.len();
                        if self.shared.transport.send(from, frame).is_ok()
                            && resolve(&self.shared, &env).is_ok()
                        {
                            self.traffic.record(
                                &self.shared.metrics,
                                Direction::Sent,
                                MessageKind::Reply,
                                from,
                                env.type_tag,
                                len,
                            );
                        }
                    }
                    Verdict::Execute => {
                        let (asker, name) = sender;
                        let ask_seq = env.stamp.as_ref().and_then(|s| s.lamport).unwrap_or(0);
                        let reply = ReplyTo::new(&self.shared, name, asker, id).caused_by(ask_seq);
                        let delivered = match resolve(&self.shared, &env) {
                            Ok(handler) => {
                                let served =
                                    self.traffic
                                        .served(&self.shared.metrics, from, env.type_tag);
                                if let Some(s) = &served {
                                    s.asks.record(bytes.len());
                                }
                                let reply = reply.metered(served);
                                let msg = Incoming::of(bytes, &env, peer, self.shared.tracing());
                                self.deliver(env.to.actor, &handler, msg, Some(reply))
                            }
                            Err(error) => Err(Undelivered {
                                error,
                                reply: Some(reply),
                            }),
                        };
                        if delivered.is_ok() {
                            self.shared.trace_received(from, &env.stamp, None);
                        }
                        if let Err(Undelivered { error, reply }) = delivered {
                            self.undeliverable(from, &env, &error);
                            // Not handed over: answer the error. (Dropped
                            // inside, the reply has answered already.)
                            if let Some(reply) = reply {
                                reply.fail(error);
                            }
                        }
                    }
                }
            }
        }
    }

    /// The fast path for a tell whose header matches the cache. `false`
    /// means "not handled here": take the full path (which refreshes the
    /// cache and reports errors).
    fn on_cached_tell(&mut self, peer: PeerName<'_>, bytes: &Bytes) -> bool {
        let from: &str = peer.as_str();
        // Taken out while delivering (and put back) so nothing is cloned.
        let Some(c) = self.cache.take() else {
            return false;
        };
        let matches = c.peer == from
            && bytes.len() > c.header.len()
            && bytes.len() <= self.shared.options.max_frame_bytes
            && bytes.starts_with(&c.header);
        let tail = if matches {
            codec::split_tell_tail(&bytes[c.header.len()..]).ok()
        } else {
            None
        };
        let Some((payload, stamp)) = tail else {
            self.cache = Some(c);
            return false;
        };
        let view = NodeIdView::from(&c.from);
        if self
            .deliver(
                &c.actor,
                &c.handler,
                Incoming {
                    frame: bytes,
                    payload,
                    peer,
                    from: &view,
                    cause: cause_of(self.shared.tracing(), &stamp),
                },
                None,
            )
            .is_err()
        {
            // The actor stopped (perhaps restarted) or the payload is bad:
            // the cache stays empty; the full path resolves the name again
            // and reports errors.
            return false;
        }
        if let Some(t) = &c.traffic {
            t.record(bytes.len());
        }
        self.cache = Some(c);
        self.shared.observe(&stamp);
        if self.shared.tracing() {
            // Recorded with the rest of the batch (`flush_delivered`).
            self.delivered
                .push(stamp.as_ref().and_then(|s| s.lamport).unwrap_or(0));
        }
        true
    }

    /// Count a retried copy of an ask (not executed again) as received,
    /// when its type is one the target actor handles.
    fn count_copy(&mut self, from: &str, env: &EnvelopeView<'_>, bytes: usize) {
        if self.shared.metrics.message_metrics() && resolve(&self.shared, env).is_ok() {
            self.traffic.record(
                &self.shared.metrics,
                Direction::Received,
                MessageKind::Ask,
                from,
                env.type_tag,
                bytes,
            );
        }
    }

    /// Hand a message to `actor` through `handler`, or park it behind a tell
    /// that is waiting for room in that actor's inbox.
    fn deliver(
        &mut self,
        actor: &str,
        handler: &Arc<dyn ErasedHandler>,
        msg: Incoming<'_>,
        reply: Option<ReplyTo>,
    ) -> Result<(), Undelivered> {
        let Incoming {
            frame,
            payload,
            peer,
            from,
            cause,
        } = msg;
        // Usually nothing is blocked: then the name is not even hashed.
        let parked_behind = if self.blocked.is_empty() {
            None
        } else {
            self.blocked.get_mut(actor)
        };
        if let Some(queue) = parked_behind {
            self.held_asks += usize::from(reply.is_some());
            queue.push_back(Parked {
                handler: handler.clone(),
                payload: frame.slice_ref(payload),
                // The envelope's sender is the authenticated peer (checked).
                from_name: peer.to_shared(),
                from_incarnation: from.incarnation,
                reply,
                cause,
            });
            self.parked += 1;
            return Ok(());
        }
        let ask = reply.is_some();
        // The sender's shared name: no copy when the transport shares it.
        let cause = cause.map(|seq| (peer.to_shared(), seq));
        if let Some(full) = self.hand_over(handler.as_ref(), payload, from, reply, cause)? {
            let queue = std::mem::take(&mut self.spare);
            self.block(actor.to_string(), full, ask, queue);
        }
        Ok(())
    }

    /// Put a message in its actor's inbox now. `Some(fut)` when the inbox
    /// is full: `fut` puts it in, and the actor stays blocked until then.
    fn hand_over(
        &mut self,
        handler: &dyn ErasedHandler,
        payload: &[u8],
        from: &NodeIdView<'_>,
        reply: Option<ReplyTo>,
        cause: Option<(Arc<str>, u64)>,
    ) -> Result<Option<LocalFut<()>>, Undelivered> {
        Ok(match handler.dispatch(payload, from, reply, cause)? {
            Dispatched::Queued => None,
            Dispatched::Full(fut) => Some(fut),
        })
    }

    /// `actor`'s inbox is full: `fut` puts in the message that found it
    /// full (an ask if `ask`); `queue` (parked messages) waits behind it.
    fn block(&mut self, actor: String, fut: LocalFut<()>, ask: bool, queue: VecDeque<Parked>) {
        self.shared
            .stats
            .mailbox_full
            .fetch_add(1, Ordering::Relaxed);
        self.blocked.insert(actor.clone(), queue);
        self.held_asks += usize::from(ask);
        self.inflight.push(InFlight {
            actor: Some(actor),
            ask,
            fut,
        });
    }

    /// Deliver, in order, what was parked for `actor` until its inbox is
    /// full again.
    fn unblock(&mut self, actor: String) {
        let Some(mut queue) = self.blocked.remove(&actor) else {
            return;
        };
        while let Some(p) = queue.pop_front() {
            self.parked -= 1;
            let ask = p.reply.is_some();
            self.held_asks -= usize::from(ask);
            let from = NodeIdView {
                name: &p.from_name,
                incarnation: p.from_incarnation,
            };
            let cause = p.cause.map(|seq| (p.from_name.clone(), seq));
            match self.hand_over(p.handler.as_ref(), &p.payload, &from, p.reply, cause) {
                Ok(None) => {}
                Ok(Some(full)) => {
                    self.block(actor, full, ask, queue);
                    return;
                }
                Err(Undelivered { error, reply }) => {
                    // Like a message still in the inbox of an actor that
                    // stopped: it is not delivered.
                    self.shared
                        .stats
                        .undeliverable
                        .fetch_add(1, Ordering::Relaxed);
                    tracing::warn!(node = %self.shared.id.name, %actor, %error, "parked message not delivered");
                    if let Some(reply) = reply {
                        reply.fail(error);
                    }
                }
            }
        }
        if queue.capacity() > self.spare.capacity() {
            self.spare = queue;
        }
    }

    fn undeliverable(&self, from: &str, env: &EnvelopeView<'_>, e: &RemoteError) {
        self.shared
            .stats
            .undeliverable
            .fetch_add(1, Ordering::Relaxed);
        tracing::warn!(node = %self.shared.id.name, peer = %from, to = %format_args!("{}/{}", env.to.node, env.to.actor), tag = %env.type_tag, error = %e, "message not delivered");
        if self.shared.tracing() {
            self.shared
                .trace_received(from, &env.stamp, Some(&format!("undeliverable: {e}")));
        }
    }

    /// A reply to one of this node's asks, in a frame of `frame_len`
    /// bytes: complete the waiting ask directly.
    fn reply_arrived(
        &self,
        from: &str,
        id: u64,
        result: Result<Bytes, AskError>,
        frame_len: usize,
    ) {
        self.shared.asks.complete(id, from, result, frame_len);
    }
}

/// The handler of the actor and message type `env` is addressed to.
fn resolve(
    shared: &NodeShared,
    env: &EnvelopeView<'_>,
) -> Result<Arc<dyn ErasedHandler>, RemoteError> {
    if env.to.node != shared.id.name {
        return Err(RemoteError::UnknownActor(format!(
            "{}/{}",
            env.to.node, env.to.actor
        )));
    }
    let entry = shared
        .registry
        .get(env.to.actor)
        .ok_or_else(|| RemoteError::UnknownActor(env.to.actor.to_string()))?;
    entry
        .handlers
        .get(env.type_tag)
        .cloned()
        .ok_or_else(|| RemoteError::UnknownMessage(env.type_tag.to_string()))
}
