//! The server side of a remote ask: the handle that answers it, once.
//!
//! When the inbound dispatcher hands an ask to its actor, a [`ReplyTo`]
//! travels with it into the actor's inbox. Whoever finishes the ask sends
//! the reply through it, right where the answer is known: the actor's
//! handler as soon as it returns (no hop back through the dispatcher), or
//! the task awaiting a handler's future. Sending records the reply frame in
//! the node's deduplication table (so a retried copy of the ask gets the
//! same answer, see [`crate::rpc`]) and puts it on the transport.
//!
//! Guarantees:
//! - **Every ask handed over is answered exactly once.** A `ReplyTo` that
//!   is dropped without an answer (its actor stopped or panicked before
//!   answering, the inbox closed, the handler's future was cancelled)
//!   answers [`RemoteError::ActorStopped`]; a reply too big to encode
//!   answers [`RemoteError::BadPayload`] instead of going silent. Once the
//!   node has stopped nothing is sent any more (a crashed node stays
//!   silent); the ask still counts as answered.
//! - **Bounded.** Asks handed over and not yet answered are counted
//!   ([`Answering`]); the dispatcher counts them against
//!   `runtime.max_inflight_deliveries` and stops taking frames past it, as
//!   it did when it awaited every reply itself. (An ask waiting for room in
//!   a full inbox, or parked behind one, counts once: the dispatcher takes
//!   it out of this count while it counts it as a delivery.)

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;

use bytes::Bytes;
use tokio::sync::Notify;

use crate::codec::{self, EnvelopeRef, Kind, RemoteError};
use crate::ids::ActorPath;
use crate::metrics::ServedAsks;
use crate::node::NodeShared;

/// The node's count of asks handed to actors and not answered yet, and the
/// signal the dispatcher waits on when that count holds it back.
#[derive(Default)]
pub(crate) struct Answering {
    running: AtomicUsize,
    answered: Notify,
}

impl Answering {
    /// Asks handed over and not answered yet.
    pub(crate) fn running(&self) -> usize {
        self.running.load(Ordering::Relaxed)
    }

    /// Resolves after the next answer (or at once if one came since the
    /// last call): for a dispatcher that stopped taking frames.
    pub(crate) async fn one_answered(&self) {
        self.answered.notified().await
    }
}

/// Where the answer to one ask goes: the asking node, its incarnation and
/// the ask's correlation id. Answer with [`ReplyTo::answer`] or
/// [`ReplyTo::fail`]; dropping it unanswered answers `ActorStopped`.
pub(crate) struct ReplyTo {
    shared: Arc<NodeShared>,
    /// The asking node (authenticated name).
    to: Arc<str>,
    /// Its incarnation, for the deduplication table.
    asker: u128,
    /// The ask's correlation id.
    id: u64,
    /// The ask frame's Lamport stamp (its `seq` in traces): the reply's
    /// `cause`.
    ask_seq: u64,
    /// The answer is remembered in the deduplication table.
    record: bool,
    answered: bool,
    /// Counts the answer sent (see [`crate::metrics`]).
    meter: Option<Arc<ServedAsks>>,
}

impl ReplyTo {
    /// A handle for ask `id` from node `to` (incarnation `asker`), counted
    /// as running until it is answered.
    pub(crate) fn new(shared: &Arc<NodeShared>, to: Arc<str>, asker: u128, id: u64) -> Self {
        shared.answering.running.fetch_add(1, Ordering::Relaxed);
        Self {
            shared: shared.clone(),
            to,
            asker,
            id,
            ask_seq: 0,
            record: true,
            answered: false,
            meter: None,
        }
    }

    /// Count the answer, once sent, on `meter` (asks of one type from one
    /// peer).
    pub(crate) fn metered(mut self, meter: Option<Arc<ServedAsks>>) -> Self {
        self.meter = meter;
        self
    }

    /// A handle for ask `id` from node `to` that is refused unexecuted (it
    /// was never entered in the deduplication table): its answer is sent
    /// but not remembered, so it cannot stand in for the answer to the
    /// ask whose correlation id it repeats.
    pub(crate) fn unrecorded(shared: &Arc<NodeShared>, to: Arc<str>, id: u64) -> Self {
        let mut reply = Self::new(shared, to, 0, id);
        reply.record = false;
        reply
    }

    /// Name the ask frame's Lamport stamp, recorded as the `cause` of the
    /// reply's send in traces.
    pub(crate) fn caused_by(mut self, ask_seq: u64) -> Self {
        self.ask_seq = ask_seq;
        self
    }

    /// Answer with the encoded reply `payload`.
    pub(crate) fn answer(mut self, payload: &[u8]) {
        self.send(Kind::Reply { id: self.id }, payload);
    }

    /// Answer with an error.
    pub(crate) fn fail(mut self, error: RemoteError) {
        self.send(Kind::ErrorReply { id: self.id, error }, &[]);
    }

    fn send(&mut self, kind: Kind, payload: &[u8]) {
        self.answered = true;
        // A stopped node sends nothing more: its dispatcher (which used to
        // send every reply) is gone, and a crashed node must stay silent
        // even when a handler's future outlives it.
        if !self.shared.is_stopped() {
            self.put(kind, payload);
        }
        self.shared
            .answering
            .running
            .fetch_sub(1, Ordering::Relaxed);
        self.shared.answering.answered.notify_one();
    }

    /// Encode the reply, remember it for retried copies, and send it.
    fn put(&self, kind: Kind, payload: &[u8]) {
        let shared = &self.shared;
        let id = self.id;
        let reply_to = ActorPath {
            node: self.to.to_string(),
            actor: String::new(),
        };
        let stamp = shared.stamp();
        let seq = stamp.as_ref().and_then(|s| s.lamport).unwrap_or(0);
        let env = EnvelopeRef {
            from: &shared.id,
            from_actor: None,
            to: &reply_to,
            kind: &kind,
            type_tag: "",
            payload,
            stamp: stamp.as_ref(),
        };
        let mut kind_name = match kind {
            Kind::Reply { .. } => "reply",
            _ => "error",
        };
        let frame = match codec::encode_ref(&env, shared.options.max_frame_bytes) {
            Ok(f) => Some(Bytes::from(f)),
            Err(e) => {
                kind_name = "error";
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
                codec::encode_ref(&env, shared.options.max_frame_bytes)
                    .ok()
                    .map(Bytes::from)
            }
        };
        if let Some(frame) = frame {
            if self.record {
                let sender = (self.asker, self.to.clone());
                shared.dedup().answered(&sender, id, frame.clone());
            }
            let len = frame.len();
            let sent = shared.transport.send(&self.to, frame);
            shared.trace_send(
                &self.to,
                seq,
                len,
                kind_name,
                "",
                Some((&self.to, self.ask_seq)),
                &sent,
                None,
            );
            match sent {
                Ok(()) => {
                    if let Some(m) = &self.meter {
                        m.replies.record(len);
                    }
                }
                Err(e) => {
                    tracing::debug!(ask = id, to = %self.to, error = %e, "reply not sent (the asker will retry or time out)")
                }
            }
        }
    }
}

impl Drop for ReplyTo {
    fn drop(&mut self) {
        if !self.answered {
            self.send(
                Kind::ErrorReply {
                    id: self.id,
                    error: RemoteError::ActorStopped,
                },
                &[],
            );
        }
    }
}
