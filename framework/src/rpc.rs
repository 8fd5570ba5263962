//! Request/response over an unreliable network: the RPC stub and deduplication.
//!
//! **Client side.** An ask takes a correlation id (unique within this node
//! incarnation), registers in the node's table of outstanding asks and sends
//! its request itself; the node's inbound dispatcher completes it straight
//! from that table when the reply arrives, so neither direction waits in an
//! actor's mailbox. Every node runs one [`RpcStub`] actor that keeps the
//! asks' timers: it re-sends the *same* request (same id) on a back-off
//! schedule ([`RetryPolicy`]) until the reply arrives or the per-call
//! deadline passes, and then fails the ask with [`AskError::Timeout`]
//! (re-sends and deadlines fire up to 10 ms late: one timer serves them all,
//! and it is not replaced for an entry due only a little earlier). A
//! reply is accepted only from the node the request was sent to.
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
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use actix::prelude::*;
use bytes::Bytes;
use rand::{Rng, SeedableRng};
use tokio::sync::oneshot;
use tokio::time::Instant;

use crate::config::RetryPolicy;
use crate::error::AskError;
use crate::ids::NodeId;
use crate::transport::{Transport, TransportError};

/// The remote asks of one node that are waiting for a reply, by
/// correlation id.
///
/// Shared by the three parties of an ask so that neither the request nor
/// the reply waits in an actor's mailbox: the ask future registers itself
/// and sends the request; the inbound dispatcher completes it when the reply
/// arrives; the [`RpcStub`] re-sends it and times it out.
pub(crate) struct Outstanding {
    next_id: AtomicU64,
    waiting: Mutex<HashMap<u64, Waiting>>,
    /// Set (under the `waiting` lock) once the node stops: no more asks.
    closed: std::sync::atomic::AtomicBool,
}

struct Waiting {
    to_node: String,
    reply: oneshot::Sender<Result<Vec<u8>, AskError>>,
}

impl Outstanding {
    pub(crate) fn new() -> Self {
        Self {
            next_id: AtomicU64::new(1),
            waiting: Mutex::new(HashMap::new()),
            closed: std::sync::atomic::AtomicBool::new(false),
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<u64, Waiting>> {
        // No invariant spans more than one statement: a poisoned map is usable.
        self.waiting.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// A fresh correlation id, unique within this node incarnation.
    pub(crate) fn next_id(&self) -> u64 {
        self.next_id.fetch_add(1, Ordering::Relaxed)
    }

    /// Wait for the reply to ask `id`, sent to `to_node`. False when the
    /// node has stopped (the ask must not be sent).
    pub(crate) fn register(
        &self,
        id: u64,
        to_node: String,
        reply: oneshot::Sender<Result<Vec<u8>, AskError>>,
    ) -> bool {
        let mut waiting = self.lock();
        if self.closed.load(Ordering::Relaxed) {
            return false;
        }
        waiting.insert(id, Waiting { to_node, reply });
        true
    }

    /// Complete ask `id` with a reply from `from`. False (and nothing
    /// changes) when the ask is not waiting — late, duplicate or already
    /// timed out — or was sent to another node.
    pub(crate) fn complete(&self, id: u64, from: &str, result: Result<Vec<u8>, AskError>) -> bool {
        let mut waiting = self.lock();
        match waiting.get(&id) {
            Some(w) if w.to_node == from => {
                if let Some(w) = waiting.remove(&id) {
                    drop(waiting);
                    let _ = w.reply.send(result);
                }
                true
            }
            Some(w) => {
                tracing::warn!(ask = id, expected = %w.to_node, %from, "reply from a node the ask was not sent to; ignored");
                false
            }
            None => {
                tracing::trace!(ask = id, %from, "late or duplicate reply ignored");
                false
            }
        }
    }

    /// End ask `id` with `error` (its deadline passed, or it could not be sent).
    pub(crate) fn fail(&self, id: u64, error: AskError) {
        let w = self.lock().remove(&id);
        if let Some(w) = w {
            let _ = w.reply.send(Err(error));
        }
    }

    /// End every waiting ask with `error` (the node is stopping: nothing
    /// would re-send them or time them out any more).
    pub(crate) fn fail_all(&self, error: &AskError) {
        let waiting: Vec<Waiting> = {
            let mut waiting = self.lock();
            self.closed.store(true, Ordering::Relaxed);
            waiting.drain().map(|(_, w)| w).collect()
        };
        for w in waiting {
            let _ = w.reply.send(Err(error.clone()));
        }
    }

    fn is_waiting(&self, id: u64) -> bool {
        self.lock().contains_key(&id)
    }

    fn len(&self) -> usize {
        self.lock().len()
    }
}

/// Re-send ask `id` on `retry`'s schedule and fail it after `timeout`
/// (sent by [`crate::RemoteRef`] after the first copy went out).
#[derive(Message)]
#[rtype(result = "()")]
pub(crate) struct Track {
    pub(crate) id: u64,
    pub(crate) to_node: String,
    pub(crate) frame: Bytes,
    pub(crate) timeout: Duration,
    pub(crate) retry: RetryPolicy,
}

/// Ask `id` was answered: forget its timers (sent by the inbound dispatcher).
#[derive(Message)]
#[rtype(result = "()")]
pub(crate) struct Done {
    pub(crate) id: u64,
}

struct Tracked {
    to_node: String,
    frame: Bytes,
    attempts: u32,
    retry: RetryPolicy,
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

/// How late a re-send or deadline may fire, at most, so that the stub need
/// not replace its armed timer for an entry due only a little earlier.
const TIMER_SLACK: Duration = Duration::from_millis(10);

/// The timers of one node's remote asks: re-sends and deadlines. See the
/// module docs. Replies do not pass through it: the inbound dispatcher
/// completes the waiting ask directly.
pub struct RpcStub {
    transport: Arc<dyn Transport>,
    asks: Arc<Outstanding>,
    tracked: HashMap<u64, Tracked>,
    rng: rand::rngs::StdRng,
    /// Every deadline and re-send of every outstanding ask, by due time
    /// (ties broken by a sequence number). One actix timer is armed for the
    /// earliest entry: per-ask actix timers would make each cancellation
    /// scan all of them (actix keeps timers in a list), which the benchmark
    /// showed costing O(asks in flight) per ask.
    due: BTreeMap<(Instant, u64), Due>,
    due_seq: u64,
    /// The one armed actix timer: when it fires, and its handle (an earlier
    /// entry cancels it and arms another, so there is never more than one).
    armed: Option<(Instant, SpawnHandle)>,
    /// Actix timers spawned and neither fired nor cancelled (at most one).
    live_timers: usize,
}

impl RpcStub {
    pub(crate) fn new(
        node: &NodeId,
        transport: Arc<dyn Transport>,
        asks: Arc<Outstanding>,
    ) -> Self {
        let seed = node.incarnation.as_u128() as u64 ^ (node.incarnation.as_u128() >> 64) as u64;
        Self {
            transport,
            asks,
            tracked: HashMap::new(),
            rng: rand::rngs::StdRng::seed_from_u64(seed),
            due: BTreeMap::new(),
            due_seq: 0,
            armed: None,
            live_timers: 0,
        }
    }

    /// Asks waiting for a reply.
    pub fn outstanding(&self) -> usize {
        self.asks.len()
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
        if let Some((at, handle)) = self.armed {
            if at <= next + TIMER_SLACK {
                // The armed timer fires early enough. (The slack keeps
                // steady traffic from re-arming per ask: with jittered
                // re-sends, every other ask's first re-send is due a few
                // milliseconds before the armed one.)
                return;
            }
            // Replace it: a timer left behind would fire, find nothing due
            // and arm yet another, so timers would pile up without bound
            // (and actix polls every one of them on each wake-up).
            ctx.cancel_future(handle);
            self.live_timers -= 1;
        }
        let handle = ctx.run_later(
            next.saturating_duration_since(Instant::now()),
            |act, ctx| {
                act.armed = None;
                act.live_timers -= 1;
                act.fire_due(ctx);
            },
        );
        self.live_timers += 1;
        self.armed = Some((next, handle));
    }

    fn fire_due(&mut self, ctx: &mut Context<Self>) {
        let now = Instant::now();
        while let Some(entry) = self.due.first_entry() {
            if entry.key().0 > now {
                break;
            }
            match entry.remove() {
                Due::Deadline(id) => {
                    if let Some(t) = self.forget(id) {
                        self.asks.fail(id, AskError::Timeout(t.timeout));
                    }
                }
                Due::Resend(id) => self.resend(id, now),
            }
        }
        self.arm(ctx);
    }

    fn resend(&mut self, id: u64, now: Instant) {
        if !self.asks.is_waiting(id) {
            self.forget(id);
            return;
        }
        let Some(t) = self.tracked.get_mut(&id) else {
            return;
        };
        t.next_resend = None;
        t.attempts += 1;
        match self.transport.send(&t.to_node, t.frame.clone()) {
            Ok(()) | Err(TransportError::QueueFull { .. }) => {}
            Err(e) => tracing::debug!(ask = id, error = %e, "retry could not be sent"),
        }
        self.schedule_resend(id, now);
    }

    fn schedule_resend(&mut self, id: u64, now: Instant) {
        let Some(t) = self.tracked.get(&id) else {
            return;
        };
        if t.attempts >= t.retry.max_attempts {
            return;
        }
        let base = t.retry.backoff(t.attempts);
        let at = now + base + base.mul_f64(t.retry.jitter * self.rng.gen::<f64>());
        if at >= t.deadline.0 {
            return; // the deadline comes first
        }
        let key = self.enqueue(at, Due::Resend(id));
        if let Some(t) = self.tracked.get_mut(&id) {
            t.next_resend = Some(key);
        }
    }

    /// Drop ask `id`'s timers; its record, if it had one.
    fn forget(&mut self, id: u64) -> Option<Tracked> {
        let t = self.tracked.remove(&id)?;
        self.due.remove(&t.deadline);
        if let Some(k) = t.next_resend {
            self.due.remove(&k);
        }
        Some(t)
    }
}

impl Actor for RpcStub {
    type Context = Context<Self>;
}

impl Handler<Track> for RpcStub {
    type Result = ();
    fn handle(&mut self, m: Track, ctx: &mut Context<Self>) {
        if !self.asks.is_waiting(m.id) {
            return; // answered (or failed) before its timers were set
        }
        let now = Instant::now();
        let deadline = self.enqueue(now + m.timeout, Due::Deadline(m.id));
        self.tracked.insert(
            m.id,
            Tracked {
                to_node: m.to_node,
                frame: m.frame,
                attempts: 1,
                retry: m.retry,
                timeout: m.timeout,
                deadline,
                next_resend: None,
            },
        );
        self.schedule_resend(m.id, now);
        self.arm(ctx);
    }
}

impl Handler<Done> for RpcStub {
    type Result = ();
    fn handle(&mut self, m: Done, _ctx: &mut Context<Self>) {
        self.forget(m.id);
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

/// Test probe: how many actix timers the stub has live.
#[cfg(test)]
#[derive(Message)]
#[rtype(result = "usize")]
struct LiveTimers;

#[cfg(test)]
impl Handler<LiveTimers> for RpcStub {
    type Result = usize;
    fn handle(&mut self, _: LiveTimers, _: &mut Context<Self>) -> usize {
        self.live_timers
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    struct NullTransport;

    impl Transport for NullTransport {
        fn local_name(&self) -> &str {
            "a"
        }
        fn send(&self, _: &str, _: Bytes) -> Result<(), TransportError> {
            Ok(())
        }
        fn shutdown(&self) {}
    }

    /// Sequential asks with jittered re-sends: an ask's first re-send is
    /// often due before the one the armed timer was set for. The stub must
    /// then replace that timer, not leave it behind (left-behind timers
    /// fired, found nothing due and armed another: they piled up, and the
    /// ask round trip in the benchmark slowed from 80 to 200 us in a minute).
    #[actix_rt::test]
    async fn the_stub_keeps_at_most_one_timer_armed() {
        let asks = Arc::new(Outstanding::new());
        let stub = RpcStub::new(
            &NodeId::with_incarnation("a", 1),
            Arc::new(NullTransport),
            asks.clone(),
        )
        .start();
        let retry = RetryPolicy {
            // Well above the timer slack, so earlier entries do replace
            // the armed timer.
            initial_backoff: Duration::from_millis(40),
            jitter: 1.0,
            ..RetryPolicy::default()
        };
        let mut most = 0;
        for _ in 0..300 {
            let id = asks.next_id();
            let (tx, _rx) = oneshot::channel();
            assert!(asks.register(id, "b".into(), tx));
            stub.send(Track {
                id,
                to_node: "b".into(),
                frame: Bytes::new(),
                timeout: Duration::from_secs(5),
                retry,
            })
            .await
            .expect("stub alive");
            assert!(asks.complete(id, "b", Ok(Vec::new())));
            stub.send(Done { id }).await.expect("stub alive");
            // Let some armed timers come due between asks.
            tokio::time::sleep(Duration::from_micros(500)).await;
            most = most.max(stub.send(LiveTimers).await.expect("stub alive"));
        }
        assert!(most <= 1, "up to {most} timers were armed at once");
    }

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
