//! Request/response over an unreliable network: the RPC stub and deduplication.
//!
//! **Client side.** Every node runs one [`RpcStub`] actor that owns its
//! outstanding remote asks: it gives each a correlation id (unique within this
//! node incarnation), sends the request, re-sends the *same* request (same id)
//! on a back-off schedule ([`RetryPolicy`]) until the reply arrives or the
//! per-call deadline passes, and then completes the caller's future with the
//! reply or [`AskError::Timeout`]. A reply is accepted only from the node the
//! request was sent to.
//!
//! **Server side.** The node remembers, per `(sender node incarnation,
//! correlation id)`, whether a request is running or what it answered
//! (its deduplication table). A retried request that is still running is ignored; one
//! that already ran gets the remembered reply again. So:
//!
//! > A retried ask is executed **at most once** by its target, provided the
//! > retries arrive within `dedup_ttl` of the first copy and the target node
//! > does not restart in between (the table lives in memory: a restarted
//! > target is a new incarnation that does not know what its previous life
//! > executed). Handlers whose effects must not repeat across a crash of the
//! > target should persist what they did (see [`crate::storage`]) or be
//! > idempotent. An ask that times out may or may not have run: treat it as
//! > unknown, never as failed.

use std::collections::{BTreeMap, HashMap, VecDeque};
use std::sync::Arc;
use std::time::Duration;

use actix::prelude::*;
use bytes::Bytes;
use rand::{Rng, SeedableRng};
use tokio::sync::oneshot;
use tokio::time::Instant;

use crate::codec::{encode, Envelope, Kind, RemoteError};
use crate::config::RetryPolicy;
use crate::error::AskError;
use crate::ids::{ActorPath, NodeId};
use crate::transport::{Transport, TransportError};

/// Start a remote ask (sent by [`crate::RemoteRef`]).
#[derive(Message)]
#[rtype(result = "()")]
pub(crate) struct StartAsk {
    pub(crate) to: ActorPath,
    pub(crate) from_actor: Option<String>,
    pub(crate) tag: &'static str,
    pub(crate) payload: Vec<u8>,
    pub(crate) timeout: Duration,
    pub(crate) retry: RetryPolicy,
    pub(crate) reply: oneshot::Sender<Result<Vec<u8>, AskError>>,
}

/// A reply (or error reply) arrived from `from`.
#[derive(Message)]
#[rtype(result = "()")]
pub(crate) struct ReplyArrived {
    pub(crate) from: String,
    pub(crate) id: u64,
    pub(crate) result: Result<Vec<u8>, RemoteError>,
}

struct Pending {
    to_node: String,
    frame: Bytes,
    attempts: u32,
    retry: RetryPolicy,
    reply: oneshot::Sender<Result<Vec<u8>, AskError>>,
    timeout: Duration,
    /// This ask's entries in the timer queue (deadline, next re-send).
    deadline: (Instant, u64),
    next_resend: Option<(Instant, u64)>,
}

/// What a timer-queue entry does when it comes due.
#[derive(Debug, Clone, Copy)]
enum Due {
    Deadline(u64),
    Resend(u64),
}

/// The client half of remote asks for one node. See the module docs.
pub struct RpcStub {
    node: NodeId,
    transport: Arc<dyn Transport>,
    max_frame: usize,
    next_id: u64,
    pending: HashMap<u64, Pending>,
    rng: rand::rngs::StdRng,
    lamport: Arc<std::sync::atomic::AtomicU64>,
    /// Every deadline and re-send of every outstanding ask, by due time
    /// (ties broken by a sequence number). One actix timer is armed for the
    /// earliest entry: per-ask actix timers would make each cancellation
    /// scan all of them (actix keeps timers in a list), which the benchmark
    /// showed costing O(asks in flight) per ask.
    due: BTreeMap<(Instant, u64), Due>,
    due_seq: u64,
    armed: Option<Instant>,
}

impl RpcStub {
    pub(crate) fn new(
        node: NodeId,
        transport: Arc<dyn Transport>,
        max_frame: usize,
        lamport: Arc<std::sync::atomic::AtomicU64>,
    ) -> Self {
        let seed = node.incarnation.as_u128() as u64 ^ (node.incarnation.as_u128() >> 64) as u64;
        Self {
            node,
            transport,
            max_frame,
            next_id: 1,
            pending: HashMap::new(),
            rng: rand::rngs::StdRng::seed_from_u64(seed),
            lamport,
            due: BTreeMap::new(),
            due_seq: 0,
            armed: None,
        }
    }

    /// Asks waiting for a reply.
    pub fn outstanding(&self) -> usize {
        self.pending.len()
    }

    fn enqueue(&mut self, at: Instant, what: Due) -> (Instant, u64) {
        self.due_seq += 1;
        let key = (at, self.due_seq);
        self.due.insert(key, what);
        key
    }

    /// Make sure one actix timer fires at the earliest due entry.
    fn arm(&mut self, ctx: &mut Context<Self>) {
        let Some(&(next, _)) = self.due.keys().next() else {
            return;
        };
        if self.armed.is_some_and(|a| a <= next) {
            return; // an armed timer fires no later than needed
        }
        self.armed = Some(next);
        ctx.run_later(
            next.saturating_duration_since(Instant::now()),
            |act, ctx| {
                act.armed = None;
                act.fire_due(ctx);
            },
        );
    }

    fn fire_due(&mut self, ctx: &mut Context<Self>) {
        let now = Instant::now();
        while let Some(entry) = self.due.first_entry() {
            if entry.key().0 > now {
                break;
            }
            match entry.remove() {
                Due::Deadline(id) => {
                    let timeout = self.pending.get(&id).map(|p| p.timeout).unwrap_or_default();
                    self.finish(id, Err(AskError::Timeout(timeout)));
                }
                Due::Resend(id) => self.resend(id, now),
            }
        }
        self.arm(ctx);
    }

    fn resend(&mut self, id: u64, now: Instant) {
        let Some(p) = self.pending.get_mut(&id) else {
            return;
        };
        p.next_resend = None;
        p.attempts += 1;
        match self.transport.send(&p.to_node, p.frame.clone()) {
            Ok(()) | Err(TransportError::QueueFull { .. }) => {}
            Err(e) => tracing::debug!(ask = id, error = %e, "retry could not be sent"),
        }
        self.schedule_resend(id, now);
    }

    fn schedule_resend(&mut self, id: u64, now: Instant) {
        let Some(p) = self.pending.get(&id) else {
            return;
        };
        if p.attempts >= p.retry.max_attempts {
            return;
        }
        let base = p.retry.backoff(p.attempts);
        let at = now + base + base.mul_f64(p.retry.jitter * self.rng.gen::<f64>());
        if at >= p.deadline.0 {
            return; // the deadline comes first
        }
        let key = self.enqueue(at, Due::Resend(id));
        if let Some(p) = self.pending.get_mut(&id) {
            p.next_resend = Some(key);
        }
    }

    fn finish(&mut self, id: u64, result: Result<Vec<u8>, AskError>) {
        if let Some(p) = self.pending.remove(&id) {
            self.due.remove(&p.deadline);
            if let Some(k) = p.next_resend {
                self.due.remove(&k);
            }
            let _ = p.reply.send(result);
        }
    }
}

impl Actor for RpcStub {
    type Context = Context<Self>;
}

impl Handler<StartAsk> for RpcStub {
    type Result = ();
    fn handle(&mut self, m: StartAsk, ctx: &mut Context<Self>) {
        let id = self.next_id;
        self.next_id += 1;
        let env = Envelope {
            from: self.node.clone(),
            from_actor: m.from_actor,
            to: m.to.clone(),
            kind: Kind::Ask { id },
            type_tag: m.tag.to_string(),
            payload: m.payload,
            stamp: Some(crate::codec::ClockStamp {
                lamport: Some(
                    self.lamport
                        .fetch_add(1, std::sync::atomic::Ordering::Relaxed)
                        + 1,
                ),
                vector: None,
            }),
        };
        let frame = match encode(&env, self.max_frame) {
            Ok(f) => Bytes::from(f),
            Err(e) => {
                let _ = m.reply.send(Err(AskError::Codec(e)));
                return;
            }
        };
        match self.transport.send(&m.to.node, frame.clone()) {
            Ok(()) | Err(TransportError::QueueFull { .. }) => {}
            Err(e) => {
                let _ = m.reply.send(Err(AskError::Unreachable(e)));
                return;
            }
        }
        let now = Instant::now();
        let deadline = self.enqueue(now + m.timeout, Due::Deadline(id));
        self.pending.insert(
            id,
            Pending {
                to_node: m.to.node,
                frame,
                attempts: 1,
                retry: m.retry,
                reply: m.reply,
                timeout: m.timeout,
                deadline,
                next_resend: None,
            },
        );
        self.schedule_resend(id, now);
        self.arm(ctx);
    }
}

impl Handler<ReplyArrived> for RpcStub {
    type Result = ();
    fn handle(&mut self, m: ReplyArrived, _ctx: &mut Context<Self>) {
        match self.pending.get(&m.id) {
            Some(p) if p.to_node == m.from => {
                self.finish(m.id, m.result.map_err(AskError::Remote));
            }
            Some(p) => {
                tracing::warn!(ask = m.id, expected = %p.to_node, from = %m.from, "reply from a node the ask was not sent to; ignored");
            }
            None => {
                tracing::trace!(ask = m.id, from = %m.from, "late or duplicate reply ignored");
            }
        }
    }
}

/// What the server should do with an incoming ask.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Verdict {
    /// First time seen: execute it.
    Execute,
    /// A copy is being executed now: drop this one.
    Running,
    /// Already answered: send this reply frame again.
    Answered(Bytes),
}

enum DedupState {
    Running,
    Answered(Bytes),
}

/// Server-side memory of asks, for at-most-once execution of retries.
///
/// Bounded three ways: entries older than `ttl` are forgotten, at most
/// `capacity` entries are kept, and remembered replies take at most
/// `max_bytes` (the oldest go first).
pub(crate) struct DedupTable {
    /// Keyed by (sender incarnation, correlation id): an incarnation is a
    /// random 128-bit id unique to one life of one node, so it needs no name.
    entries: HashMap<(u128, u64), DedupState>,
    order: VecDeque<(Instant, u128, u64)>,
    ttl: Duration,
    capacity: usize,
    bytes: usize,
    max_bytes: usize,
}

impl DedupTable {
    pub(crate) fn new(ttl: Duration, capacity: usize) -> Self {
        Self {
            entries: HashMap::new(),
            order: VecDeque::new(),
            ttl,
            capacity,
            bytes: 0,
            max_bytes: 64 << 20,
        }
    }

    fn evict(&mut self, now: Instant) {
        while let Some((t, _, _)) = self.order.front() {
            let expired = now.saturating_duration_since(*t) > self.ttl;
            if !(expired || self.order.len() > self.capacity || self.bytes > self.max_bytes) {
                break;
            }
            if let Some((_, inc, id)) = self.order.pop_front() {
                if let Some(DedupState::Answered(b)) = self.entries.remove(&(inc, id)) {
                    self.bytes -= b.len();
                }
            }
        }
    }

    /// Look at an incoming ask; registers it as running when new.
    pub(crate) fn check(&mut self, inc: u128, id: u64, now: Instant) -> Verdict {
        self.evict(now);
        match self.entries.get(&(inc, id)) {
            Some(DedupState::Running) => Verdict::Running,
            Some(DedupState::Answered(b)) => Verdict::Answered(b.clone()),
            None => {
                self.entries.insert((inc, id), DedupState::Running);
                self.order.push_back((now, inc, id));
                Verdict::Execute
            }
        }
    }

    /// Remember the reply frame sent for an ask.
    pub(crate) fn answered(&mut self, inc: u128, id: u64, frame: Bytes) {
        if let Some(state) = self.entries.get_mut(&(inc, id)) {
            self.bytes += frame.len();
            *state = DedupState::Answered(frame);
        }
    }

    #[cfg(test)]
    fn len(&self) -> usize {
        self.entries.len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn dedup_executes_once_and_replays_the_answer() {
        let mut t = DedupTable::new(Duration::from_secs(10), 100);
        let a = NodeId::with_incarnation("a", 1).incarnation.as_u128();
        let now = Instant::now();
        assert_eq!(t.check(a, 1, now), Verdict::Execute);
        assert_eq!(t.check(a, 1, now), Verdict::Running);
        t.answered(a, 1, Bytes::from_static(b"r"));
        assert_eq!(
            t.check(a, 1, now),
            Verdict::Answered(Bytes::from_static(b"r"))
        );
        // Another incarnation of the same node is a different sender.
        let a2 = NodeId::with_incarnation("a", 2).incarnation.as_u128();
        assert_eq!(t.check(a2, 1, now), Verdict::Execute);
    }

    #[test]
    fn dedup_forgets_after_ttl_and_capacity() {
        let mut t = DedupTable::new(Duration::from_secs(1), 3);
        let a = 7u128;
        let now = Instant::now();
        for id in 0..5 {
            assert_eq!(t.check(a, id, now), Verdict::Execute);
        }
        assert!(t.len() <= 4);
        let later = now + Duration::from_secs(5);
        assert_eq!(t.check(a, 100, later), Verdict::Execute);
        assert_eq!(t.len(), 1);
    }
}
