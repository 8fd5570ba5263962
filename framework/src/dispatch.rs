//! The inbound dispatcher: from received frames to local actors' inboxes.
//!
//! One dispatcher task runs per node, on the node actor's arbiter. It takes
//! the transport's events (and reads the streams a transport hands over,
//! see [`crate::transport::InboundEvents`]), decodes each frame, checks that the claimed sender
//! is the authenticated peer, and hands the message to the target actor
//! through its remote inbox (see [`crate::inbox`], bounded by the actor's
//! `mailbox` setting): tells, and asks with a reply future whose answer
//! goes back to the asker (deduplicated, see [`crate::rpc`]); replies go
//! straight to the waiting ask.
//!
//! Guarantees:
//! - **Order.** Messages reach each actor in the order their frames arrived,
//!   so two actors keep the per-sender FIFO order the transport gives. When
//!   a tell finds its actor's inbox full, it waits for room, and everything
//!   that arrives for that actor meanwhile is parked behind it, in order,
//!   while other actors keep receiving.
//! - **Bounded.** Deliveries waiting for inbox room or a reply, plus parked
//!   messages, are checked against `runtime.max_inflight_deliveries` before
//!   each received event (so they exceed it by at most one event's frames);
//!   past that the dispatcher stops taking frames: it no longer polls the
//!   streams it reads itself, the transport's bounded channel fills, the
//!   transport stops reading, and flow control slows the remote senders.
//!   The price is head-of-line blocking at that limit: one persistently slow
//!   actor eventually slows all inbound traffic of its node.
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

use crate::codec::{self, EnvelopeRef, EnvelopeView, Kind, NodeIdView, RemoteError};
use crate::error::AskError;
use crate::ids::{ActorPath, NodeId};
use crate::node::{NodeActor, NodeShared, Peer, PeerEvent};
use crate::remote::{Dispatched, ErasedHandler, LocalFut};
use crate::rpc::{DedupTable, Verdict};
use crate::transport::{InboundEvents, InboundReceiver, TransportEvent};

/// Where the answer to a delivered ask goes.
#[derive(Clone)]
struct AskOrigin {
    /// The asking node (authenticated name).
    to: String,
    /// Its incarnation, for the deduplication table.
    asker: u128,
    /// The ask's correlation id.
    id: u64,
}

/// What a finished in-flight future asks the dispatcher to do.
enum Finished {
    /// An ask was answered (or failed): send the reply.
    Reply(AskOrigin, Result<Vec<u8>, RemoteError>),
    /// A tell that waited for room in this actor's inbox is in: deliver
    /// what was parked behind it.
    Unblocked(String),
    /// Nothing left to do.
    Nothing,
}

/// A delivery the dispatcher waits on: its future, and what to do when it
/// is done. Not boxed again: the future is the one the handler returned.
enum InFlight {
    /// An ask's reply (or a tell's completion, when `origin` is `None`).
    Reply {
        origin: Option<AskOrigin>,
        fut: LocalFut<Result<Vec<u8>, RemoteError>>,
    },
    /// A tell waiting for room in `actor`'s inbox.
    Unblock {
        actor: Option<String>,
        fut: LocalFut<()>,
    },
}

impl std::future::Future for InFlight {
    type Output = Finished;
    fn poll(
        self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Finished> {
        use std::task::Poll;
        // Every field is `Unpin` (the futures are boxed).
        match self.get_mut() {
            InFlight::Reply { origin, fut } => match fut.as_mut().poll(cx) {
                Poll::Ready(result) => Poll::Ready(match origin.take() {
                    Some(origin) => Finished::Reply(origin, result),
                    None => Finished::Nothing,
                }),
                Poll::Pending => Poll::Pending,
            },
            InFlight::Unblock { actor, fut } => match fut.as_mut().poll(cx) {
                Poll::Ready(()) => Poll::Ready(match actor.take() {
                    Some(actor) => Finished::Unblocked(actor),
                    None => Finished::Nothing,
                }),
                Poll::Pending => Poll::Pending,
            },
        }
    }
}

/// A message that arrived for an actor while a tell to it was waiting for
/// room in its inbox.
struct Parked {
    handler: Arc<dyn ErasedHandler>,
    payload: Bytes,
    /// The sender: the authenticated peer's name (shared, not copied) and
    /// the incarnation its envelope named.
    from_name: Arc<str>,
    from_incarnation: uuid::Uuid,
    ask: Option<AskOrigin>,
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
}

/// Runs the dispatcher until the transport's channel closes.
pub(crate) async fn run(shared: Arc<NodeShared>, rx: InboundReceiver, node: Addr<NodeActor>) {
    // The transport's channel, and the streams it hands over to be read
    // right here (QUIC): no reader task between the network and the actor.
    let mut events = InboundEvents::new(rx);
    let limit = shared.options.max_inflight_deliveries;
    let mut d = Dispatcher {
        dedup: DedupTable::new(shared.options.dedup_ttl, shared.options.dedup_capacity),
        shared,
        inflight: FuturesUnordered::new(),
        cache: None,
        blocked: HashMap::new(),
        parked: 0,
        spare: VecDeque::new(),
    };
    let mut since_yield = 0usize;
    loop {
        tokio::select! {
            biased;
            Some(done) = d.inflight.next(), if !d.inflight.is_empty() => d.finished(done),
            ev = events.recv(), if d.busy() < limit => {
                let Some(ev) = ev else { break };
                match ev {
                    TransportEvent::Frame { from, bytes } => {
                        d.count_frames(1);
                        d.on_frame(PeerName::Borrowed(&from), &bytes);
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
                                tokio::task::yield_now().await;
                            }
                        }
                    }
                    TransportEvent::PeerUp { peer } => node.do_send(Peer(PeerEvent::Up(peer))),
                    TransportEvent::PeerDown { peer, reason } => {
                        tracing::debug!(%peer, %reason, "connection lost");
                        node.do_send(Peer(PeerEvent::Down(peer)));
                    }
                    // `InboundEvents` reads sources itself and never yields one.
                    TransportEvent::Source(_) => {}
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
    dedup: DedupTable,
    inflight: FuturesUnordered<InFlight>,
    /// Boxed, so taking it out and putting it back moves a pointer.
    cache: Option<Box<TellCache>>,
    /// Actors with a tell waiting for inbox room, and what arrived for
    /// them since, in arrival order.
    blocked: HashMap<String, VecDeque<Parked>>,
    /// Messages in `blocked`, counted against the in-flight limit.
    parked: usize,
    /// An emptied park queue, kept with its capacity for the next actor
    /// that blocks. A fresh queue grown to a few thousand entries on every
    /// full inbox cost the receiving thread ~10 % of its CPU in page
    /// faults (the allocator returned the big buffer to the OS in between).
    /// Bounded by the in-flight limit, like the queues themselves.
    spare: VecDeque<Parked>,
}

impl Dispatcher {
    fn busy(&self) -> usize {
        self.inflight.len() + self.parked
    }

    /// Count received frames (once per event, not per frame).
    fn count_frames(&self, n: usize) {
        self.shared
            .stats
            .frames_in
            .fetch_add(n as u64, Ordering::Relaxed);
    }

    fn on_frame(&mut self, peer: PeerName<'_>, bytes: &Bytes) {
        let from: &str = peer.as_str();
        if self.on_cached_tell(peer, bytes) {
            return;
        }
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
            return;
        }
        self.shared.observe(&env.stamp);
        match env.kind {
            // The view borrows its payload from the frame (both decoders do), as
            // `Parked` relies on too: a slice of it, not a copy.
            Kind::Reply { id } => self.reply_arrived(from, id, Ok(bytes.slice_ref(env.payload))),
            Kind::ErrorReply { id, ref error } => {
                self.reply_arrived(from, id, Err(AskError::Remote(error.clone())))
            }
            Kind::Tell => match resolve(&self.shared, &env) {
                Ok(handler) => {
                    let msg = Incoming {
                        frame: bytes,
                        payload: env.payload,
                        peer,
                        from: &env.from,
                    };
                    let delivered = self.deliver(env.to.actor, &handler, msg, None);
                    match delivered {
                        Ok(()) => {
                            if let Some(h) = codec::tell_header_len(bytes, &env) {
                                self.cache = Some(Box::new(TellCache {
                                    peer: from.to_string(),
                                    header: bytes[..h].to_vec(),
                                    from: env.from.to_node_id(),
                                    actor: env.to.actor.to_string(),
                                    handler,
                                }));
                            }
                        }
                        Err(e) => self.undeliverable(from, &env, &e),
                    }
                }
                Err(e) => self.undeliverable(from, &env, &e),
            },
            Kind::Ask { id, done_below } => {
                let asker = env.from.incarnation.as_u128();
                match self
                    .dedup
                    .check(asker, id, done_below, tokio::time::Instant::now())
                {
                    // A copy of an ask that is running, or that its sender
                    // has finished with: nobody needs it.
                    Verdict::Running | Verdict::Finished => {
                        self.shared
                            .stats
                            .deduplicated
                            .fetch_add(1, Ordering::Relaxed);
                    }
                    Verdict::Answered(frame) => {
                        self.shared
                            .stats
                            .deduplicated
                            .fetch_add(1, Ordering::Relaxed);
                        let _ = self.shared.transport.send(from, frame);
                    }
                    Verdict::Execute => {
                        let origin = || AskOrigin {
                            to: from.to_string(),
                            asker,
                            id,
                        };
                        let delivered = resolve(&self.shared, &env).and_then(|handler| {
                            let msg = Incoming {
                                frame: bytes,
                                payload: env.payload,
                                peer,
                                from: &env.from,
                            };
                            self.deliver(env.to.actor, &handler, msg, Some(origin()))
                        });
                        if let Err(e) = delivered {
                            self.undeliverable(from, &env, &e);
                            // Not handed over: the origin above went unused.
                            self.send_reply(origin(), Err(e));
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
        self.cache = Some(c);
        self.shared.observe(&stamp);
        true
    }

    /// Hand a message to `actor` through `handler`, or park it behind a tell
    /// that is waiting for room in that actor's inbox.
    fn deliver(
        &mut self,
        actor: &str,
        handler: &Arc<dyn ErasedHandler>,
        msg: Incoming<'_>,
        ask: Option<AskOrigin>,
    ) -> Result<(), RemoteError> {
        let Incoming {
            frame,
            payload,
            peer,
            from,
        } = msg;
        // Usually nothing is blocked: then the name is not even hashed.
        let parked_behind = if self.blocked.is_empty() {
            None
        } else {
            self.blocked.get_mut(actor)
        };
        if let Some(queue) = parked_behind {
            queue.push_back(Parked {
                handler: handler.clone(),
                payload: frame.slice_ref(payload),
                // The envelope's sender is the authenticated peer (checked).
                from_name: peer.to_shared(),
                from_incarnation: from.incarnation,
                ask,
            });
            self.parked += 1;
            return Ok(());
        }
        if let Some(full) = self.hand_over(handler.as_ref(), payload, from, ask)? {
            let queue = std::mem::take(&mut self.spare);
            self.block(actor.to_string(), full, queue);
        }
        Ok(())
    }

    /// Put a message in its actor's inbox now. `Some(fut)` when a tell
    /// found the inbox full: `fut` delivers it, and the actor stays
    /// blocked until then.
    fn hand_over(
        &mut self,
        handler: &dyn ErasedHandler,
        payload: &[u8],
        from: &NodeIdView<'_>,
        ask: Option<AskOrigin>,
    ) -> Result<Option<LocalFut<()>>, RemoteError> {
        match handler.dispatch(payload, from, ask.is_some())? {
            Dispatched::Queued => {
                if let Some(origin) = ask {
                    self.send_reply(origin, Ok(Vec::new()));
                }
            }
            Dispatched::Pending(fut) => self.await_reply(ask, fut),
            Dispatched::Full(fut) => return Ok(Some(fut)),
        }
        Ok(None)
    }

    /// Drive an ask's reply future; its answer goes back to the asker.
    fn await_reply(&mut self, ask: Option<AskOrigin>, fut: LocalFut<Result<Vec<u8>, RemoteError>>) {
        self.inflight.push(InFlight::Reply { origin: ask, fut });
    }

    /// `actor`'s inbox is full: `fut` delivers the tell that found it
    /// full; `queue` (parked messages) waits behind it.
    fn block(&mut self, actor: String, fut: LocalFut<()>, queue: VecDeque<Parked>) {
        self.shared
            .stats
            .mailbox_full
            .fetch_add(1, Ordering::Relaxed);
        self.blocked.insert(actor.clone(), queue);
        self.inflight.push(InFlight::Unblock {
            actor: Some(actor),
            fut,
        });
    }

    fn finished(&mut self, done: Finished) {
        match done {
            Finished::Reply(origin, result) => self.send_reply(origin, result),
            Finished::Unblocked(actor) => self.unblock(actor),
            Finished::Nothing => {}
        }
    }

    /// Deliver, in order, what was parked for `actor` until its inbox is
    /// full again.
    fn unblock(&mut self, actor: String) {
        let Some(mut queue) = self.blocked.remove(&actor) else {
            return;
        };
        while let Some(p) = queue.pop_front() {
            self.parked -= 1;
            let from = NodeIdView {
                name: &p.from_name,
                incarnation: p.from_incarnation,
            };
            // Kept to answer an ask that cannot be handed over.
            let reply_to = p.ask.clone();
            match self.hand_over(p.handler.as_ref(), &p.payload, &from, p.ask) {
                Ok(None) => {}
                Ok(Some(full)) => {
                    self.block(actor, full, queue);
                    return;
                }
                Err(e) => {
                    // Like a message still in the inbox of an actor that
                    // stopped: it is not delivered.
                    self.shared
                        .stats
                        .undeliverable
                        .fetch_add(1, Ordering::Relaxed);
                    tracing::warn!(node = %self.shared.id.name, %actor, error = %e, "parked message not delivered");
                    if let Some(origin) = reply_to {
                        self.send_reply(origin, Err(e));
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
    }

    /// A reply to one of this node's asks: complete the waiting ask directly.
    fn reply_arrived(&self, from: &str, id: u64, result: Result<Bytes, AskError>) {
        self.shared.asks.complete(id, from, result);
    }

    fn send_reply(&mut self, origin: AskOrigin, result: Result<Vec<u8>, RemoteError>) {
        let AskOrigin { to, asker, id } = origin;
        let shared = &self.shared;
        let (kind, payload) = match result {
            Ok(p) => (Kind::Reply { id }, p),
            Err(error) => (Kind::ErrorReply { id, error }, Vec::new()),
        };
        let reply_to = ActorPath {
            node: to,
            actor: String::new(),
        };
        let stamp = shared.stamp();
        let env = EnvelopeRef {
            from: &shared.id,
            from_actor: None,
            to: &reply_to,
            kind: &kind,
            type_tag: "",
            payload: &payload,
            stamp: stamp.as_ref(),
        };
        let frame = match codec::encode_ref(&env, shared.options.max_frame_bytes) {
            Ok(f) => Bytes::from(f),
            Err(e) => {
                // The reply itself is too big: tell the asker instead of going silent.
                tracing::warn!(ask = id, error = %e, "reply could not be encoded");
                let kind = Kind::ErrorReply {
                    id,
                    error: RemoteError::BadPayload(format!("reply could not be encoded: {e}")),
                };
                let env = EnvelopeRef {
                    kind: &kind,
                    payload: &[],
                    ..env
                };
                match codec::encode_ref(&env, shared.options.max_frame_bytes) {
                    Ok(f) => Bytes::from(f),
                    Err(_) => return,
                }
            }
        };
        self.dedup.answered(asker, id, frame.clone());
        if let Err(e) = shared.transport.send(&reply_to.node, frame) {
            tracing::debug!(ask = id, to = %reply_to.node, error = %e, "reply not sent (the asker will retry or time out)");
        }
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
