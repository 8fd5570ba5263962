//! Request/response over an unreliable network: the RPC stub and deduplication.
//!
//! **Client side.** An ask takes a correlation id (unique within this node
//! incarnation), registers in the node's table of outstanding asks together
//! with its timers, and sends its request itself; the node's inbound
//! dispatcher completes it straight from that table when the reply arrives
//! (dropping its timers), so neither direction waits in an actor's mailbox
//! and no actor message is sent per ask. Every node runs one [`RpcStub`]
//! actor that carries the timers out: while asks are outstanding it wakes
//! every [`RPC_TICK`] (10 ms), re-sends the *same* request (same id) on a
//! back-off schedule ([`RetryPolicy`]) until the reply arrives or the
//! per-call deadline passes, and then fails the ask with
//! [`AskError::Timeout`]. Re-sends and deadlines therefore fire up to one
//! tick late. An idle stub stops ticking after a second and the next ask
//! wakes it. A reply is accepted only from the node the request was sent to.
//!
//! Every request also carries its node's *watermark* (`done_below`): the
//! smallest correlation id still waiting, so every smaller one is finished
//! (answered or given up) and will never be sent again. Ids are taken and
//! entered in the table in one step under its lock, which keeps that true
//! when several threads ask at once.
//!
//! **Server side.** The node remembers, per `(sender node incarnation,
//! correlation id)`, whether a request is running or what it answered
//! (its deduplication table). A retried request that is still running is ignored; one
//! that already ran gets the remembered reply again; one below its
//! sender's watermark is a late copy nobody waits for, and is dropped. The
//! watermark also tells the table what to forget: in steady state it holds
//! only the asks in flight, so the memory an ask touches stays small and
//! warm (before, every answered ask stayed for `dedup_ttl`, up to 100,000
//! entries, and each new one evicted a cold one). So:
//!
//! > A retried ask is executed **at most once** by its target, provided the
//! > retries arrive within `dedup_ttl` of the first copy (or of the
//! > sender's last ask) and the target node does not restart in between (the table lives in memory: a restarted
//! > target is a new incarnation that does not know what its previous life
//! > executed). Handlers whose effects must not repeat across a crash of the
//! > target should persist what they did (see [`crate::storage`]) or be
//! > idempotent. An ask that times out may or may not have run: treat it as
//! > unknown, never as failed.

use std::collections::{BTreeMap, HashMap, VecDeque};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use actix::prelude::*;
use bytes::Bytes;
use rand::{Rng, SeedableRng};
use tokio::sync::oneshot;
use tokio::time::Instant;

use crate::config::RetryPolicy;
use crate::error::AskError;
use crate::ids::{ActorPath, NodeId};
use crate::metrics::AskMeters;
use crate::transport::{Transport, TransportError};

/// How often the [`RpcStub`] looks for due re-sends and deadlines while asks
/// are outstanding: they fire up to this much late.
pub const RPC_TICK: Duration = Duration::from_millis(10);

/// Ticks with no ask outstanding after which the stub stops ticking (an
/// idle node does not wake up; the next ask wakes the stub again).
const IDLE_TICKS: u32 = 100;

/// The remote asks of one node that are waiting for a reply, by
/// correlation id, with their re-send and deadline timers.
///
/// Shared by the three parties of an ask so that nothing waits in an
/// actor's mailbox, and no actor message is sent per ask: the ask future
/// registers itself (with its timers) and sends the request; the inbound
/// dispatcher completes it when the reply arrives (dropping its timers);
/// the [`RpcStub`] wakes up every [`RPC_TICK`] while asks are outstanding,
/// re-sends what is due and fails what has timed out.
pub(crate) struct Outstanding {
    table: Mutex<Table>,
}

struct Table {
    /// The next correlation id. Ids are taken under the table's lock, in
    /// the same step that enters the ask in `waiting`, so the smallest key
    /// of `waiting` is always the smallest id not yet finished.
    next_id: u64,
    /// By correlation id, ascending.
    waiting: BTreeMap<u64, Waiting>,
    /// Every deadline and re-send of every waiting ask, by due time (ties
    /// broken by a sequence number).
    due: BTreeMap<(Instant, u64), Due>,
    due_seq: u64,
    /// Re-send jitter (seeded from the node's incarnation).
    rng: rand::rngs::StdRng,
    /// The stub is ticking (or has been asked to start).
    ticking: bool,
    /// Set once the node stops: no more asks.
    closed: bool,
}

struct Waiting {
    /// Where the ask went (shared with the handle that asked): replies
    /// count only from its node.
    to: Arc<ActorPath>,
    reply: oneshot::Sender<Result<Bytes, AskError>>,
    /// The request, for re-sends (the same id each time); empty until
    /// [`Outstanding::arm`].
    frame: Bytes,
    attempts: u32,
    retry: RetryPolicy,
    timeout: Duration,
    /// This ask's entries in `due`.
    deadline: (Instant, u64),
    next_resend: Option<(Instant, u64)>,
    /// Its handle's counters (re-sends, the answer), when they are on.
    meters: Option<Arc<AskMeters>>,
}

/// What a timer entry does when it comes due.
#[derive(Debug, Clone, Copy)]
enum Due {
    Deadline(u64),
    Resend(u64),
}

/// What [`Outstanding::begin`] asks of its caller.
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum Registered {
    /// Send the request; the stub is ticking.
    Ok,
    /// Send the request and wake the stub ([`Wake`]): it was idle.
    WakeStub,
    /// The node has stopped: do not send.
    Closed,
}

/// An ask's target and timer settings, for [`Outstanding::begin`].
pub(crate) struct Request {
    pub(crate) to: Arc<ActorPath>,
    pub(crate) timeout: Duration,
    pub(crate) retry: RetryPolicy,
    /// Counters of re-sends and of the answer (`None`: not counted).
    pub(crate) meters: Option<Arc<AskMeters>>,
}

/// An ask entered by [`Outstanding::begin`]: its correlation id, and the
/// watermark to send with it ([`crate::codec::Kind::Ask::done_below`]).
#[derive(Debug)]
pub(crate) struct Begun {
    pub(crate) id: u64,
    pub(crate) done_below: u64,
    pub(crate) registered: Registered,
}

impl Table {
    fn enqueue(&mut self, at: Instant, what: Due) -> (Instant, u64) {
        self.due_seq += 1;
        let key = (at, self.due_seq);
        self.due.insert(key, what);
        key
    }

    /// Schedule ask `id`'s next re-send, unless it has none left or its
    /// deadline comes first.
    fn schedule_resend(&mut self, id: u64, now: Instant) {
        let Some(w) = self.waiting.get(&id) else {
            return;
        };
        if w.attempts >= w.retry.max_attempts {
            return;
        }
        let base = w.retry.backoff(w.attempts);
        let (jitter, deadline) = (w.retry.jitter, w.deadline.0);
        let at = now + base + base.mul_f64(jitter * self.rng.gen::<f64>());
        if at >= deadline {
            return;
        }
        let key = self.enqueue(at, Due::Resend(id));
        if let Some(w) = self.waiting.get_mut(&id) {
            w.next_resend = Some(key);
        }
    }

    /// Remove ask `id` and its timers.
    fn remove(&mut self, id: u64) -> Option<Waiting> {
        let w = self.waiting.remove(&id)?;
        self.due.remove(&w.deadline);
        if let Some(k) = w.next_resend {
            self.due.remove(&k);
        }
        Some(w)
    }
}

impl Outstanding {
    pub(crate) fn new(node: &NodeId) -> Self {
        let seed = node.incarnation.as_u128() as u64 ^ (node.incarnation.as_u128() >> 64) as u64;
        Self {
            table: Mutex::new(Table {
                next_id: 1,
                waiting: BTreeMap::new(),
                due: BTreeMap::new(),
                due_seq: 0,
                rng: rand::rngs::StdRng::seed_from_u64(seed),
                ticking: false,
                closed: false,
            }),
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Table> {
        // No invariant spans a panic point: a poisoned table is usable.
        self.table.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Enter a new ask, waiting for its reply (with its deadline), under a
    /// fresh correlation id (unique within this node incarnation). The
    /// caller encodes the request with the returned id and watermark, hands
    /// it over with [`Outstanding::arm`], then sends the first copy.
    ///
    /// The watermark (`done_below`) is the smallest id still waiting: every
    /// smaller id has finished and will never be sent again. Taking the id
    /// and entering the ask in one step under the lock keeps that true
    /// when several threads ask at once.
    pub(crate) fn begin(
        &self,
        req: Request,
        reply: oneshot::Sender<Result<Bytes, AskError>>,
    ) -> Begun {
        let now = Instant::now();
        let mut t = self.lock();
        let id = t.next_id;
        if t.closed {
            return Begun {
                id,
                done_below: id,
                registered: Registered::Closed,
            };
        }
        t.next_id += 1;
        let deadline = t.enqueue(now + req.timeout, Due::Deadline(id));
        t.waiting.insert(
            id,
            Waiting {
                to: req.to,
                reply,
                frame: Bytes::new(),
                attempts: 1,
                retry: req.retry,
                timeout: req.timeout,
                deadline,
                next_resend: None,
                meters: req.meters,
            },
        );
        let done_below = t.waiting.keys().next().copied().unwrap_or(id);
        let registered = if t.ticking {
            Registered::Ok
        } else {
            t.ticking = true;
            Registered::WakeStub
        };
        Begun {
            id,
            done_below,
            registered,
        }
    }

    /// Hand over ask `id`'s encoded request, for re-sends (which start
    /// now). False when the ask has already ended (the node stopped, or its
    /// deadline passed): then it must not be sent.
    pub(crate) fn arm(&self, id: u64, frame: Bytes) -> bool {
        let now = Instant::now();
        let mut t = self.lock();
        match t.waiting.get_mut(&id) {
            Some(w) => {
                w.frame = frame;
                t.schedule_resend(id, now);
                true
            }
            None => false,
        }
    }

    /// Complete ask `id` with a reply from `from` that came in a frame of
    /// `frame_len` bytes. False (and nothing changes) when the ask is not
    /// waiting — late, duplicate or already timed out — or was sent to
    /// another node.
    pub(crate) fn complete(
        &self,
        id: u64,
        from: &str,
        result: Result<Bytes, AskError>,
        frame_len: usize,
    ) -> bool {
        let mut t = self.lock();
        match t.waiting.get(&id) {
            Some(w) if w.to.node == from => {
                if let Some(w) = t.remove(id) {
                    drop(t);
                    if let Some(m) = &w.meters {
                        m.answers.record(frame_len);
                    }
                    let _ = w.reply.send(result);
                }
                true
            }
            Some(w) => {
                tracing::warn!(ask = id, expected = %w.to.node, %from, "reply from a node the ask was not sent to; ignored");
                false
            }
            None => {
                tracing::trace!(ask = id, %from, "late or duplicate reply ignored");
                false
            }
        }
    }

    /// End ask `id` with `error` (it could not be sent).
    pub(crate) fn fail(&self, id: u64, error: AskError) {
        let w = self.lock().remove(id);
        if let Some(w) = w {
            let _ = w.reply.send(Err(error));
        }
    }

    /// End every waiting ask with `error` (the node is stopping: nothing
    /// would re-send them or time them out any more).
    pub(crate) fn fail_all(&self, error: &AskError) {
        let waiting: Vec<Waiting> = {
            let mut t = self.lock();
            t.closed = true;
            t.due.clear();
            std::mem::take(&mut t.waiting).into_values().collect()
        };
        for w in waiting {
            let _ = w.reply.send(Err(error.clone()));
        }
    }

    /// Carry out every re-send and deadline due at `now`: re-send through
    /// `transport`, fail timed-out asks with [`AskError::Timeout`].
    fn fire_due(&self, now: Instant, transport: &dyn Transport) {
        type Resend = (u64, Arc<ActorPath>, Bytes, Option<Arc<AskMeters>>);
        let mut resend: Vec<Resend> = Vec::new();
        let mut expired: Vec<Waiting> = Vec::new();
        {
            let mut t = self.lock();
            while let Some(entry) = t.due.first_entry() {
                if entry.key().0 > now {
                    break;
                }
                match entry.remove() {
                    Due::Deadline(id) => expired.extend(t.remove(id)),
                    Due::Resend(id) => {
                        let Some(w) = t.waiting.get_mut(&id) else {
                            continue;
                        };
                        w.next_resend = None;
                        w.attempts += 1;
                        resend.push((id, w.to.clone(), w.frame.clone(), w.meters.clone()));
                        t.schedule_resend(id, now);
                    }
                }
            }
        }
        for (id, to, frame, meters) in resend {
            let len = frame.len();
            match transport.send(&to.node, frame) {
                Ok(()) => {
                    if let Some(m) = meters {
                        m.sent.record(len);
                    }
                }
                Err(TransportError::QueueFull { .. }) => {}
                Err(e) => tracing::debug!(ask = id, error = %e, "retry could not be sent"),
            }
        }
        for w in expired {
            let _ = w.reply.send(Err(AskError::Timeout(w.timeout)));
        }
    }

    /// Called by the stub when it found nothing outstanding for a while:
    /// stop ticking, unless an ask registered meanwhile (checked under the
    /// lock, so a registering ask either sees the stub ticking or wakes it).
    fn stop_ticking_if_idle(&self) -> bool {
        let mut t = self.lock();
        if t.waiting.is_empty() {
            t.ticking = false;
            true
        } else {
            false
        }
    }

    fn is_empty(&self) -> bool {
        self.lock().waiting.is_empty()
    }

    pub(crate) fn len(&self) -> usize {
        self.lock().waiting.len()
    }

    #[cfg(test)]
    fn timers(&self) -> usize {
        self.lock().due.len()
    }
}

/// Start ticking: an ask registered while the stub was idle.
#[derive(Message)]
#[rtype(result = "()")]
pub(crate) struct Wake;

/// The timer side of one node's remote asks: while any are outstanding it
/// wakes every [`RPC_TICK`], re-sends what is due and fails what timed out
/// (the timers live in the node's table of outstanding asks); after a
/// second with none it sleeps until an ask wakes it. Replies do not pass
/// through it.
pub struct RpcStub {
    transport: Arc<dyn Transport>,
    asks: Arc<Outstanding>,
    tick: Option<SpawnHandle>,
    idle_ticks: u32,
}

impl RpcStub {
    pub(crate) fn new(transport: Arc<dyn Transport>, asks: Arc<Outstanding>) -> Self {
        Self {
            transport,
            asks,
            tick: None,
            idle_ticks: 0,
        }
    }

    /// Asks waiting for a reply.
    pub fn outstanding(&self) -> usize {
        self.asks.len()
    }

    fn on_tick(&mut self, ctx: &mut Context<Self>) {
        self.asks.fire_due(Instant::now(), self.transport.as_ref());
        if !self.asks.is_empty() {
            self.idle_ticks = 0;
            return;
        }
        self.idle_ticks += 1;
        if self.idle_ticks >= IDLE_TICKS && self.asks.stop_ticking_if_idle() {
            if let Some(h) = self.tick.take() {
                ctx.cancel_future(h);
            }
        }
    }
}

impl Actor for RpcStub {
    type Context = Context<Self>;
}

impl Handler<Wake> for RpcStub {
    type Result = ();
    fn handle(&mut self, _: Wake, ctx: &mut Context<Self>) {
        self.idle_ticks = 0;
        if self.tick.is_none() {
            self.tick = Some(ctx.run_interval(RPC_TICK, |act, ctx| act.on_tick(ctx)));
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
    /// A late copy of an ask its sender has finished with (its id is below
    /// the sender's watermark): nobody waits for it, drop it.
    Finished,
}

enum DedupState {
    Running,
    Answered(Bytes),
}

/// One remembered ask.
struct Slot {
    id: u64,
    at: Instant,
    state: DedupState,
}

/// What is remembered of one sender node incarnation.
struct Window {
    /// The sender's watermark: every ask below it is finished there.
    floor: u64,
    /// Asks at or above `floor`, by id, ascending. Ids arrive mostly in
    /// increasing order, so this is appended to and drained from the
    /// front: the memory an ask touches stays small and warm.
    slots: VecDeque<Slot>,
    last_seen: Instant,
}

impl Window {
    /// Where `id` is, or would go.
    fn find(&self, id: u64) -> Result<usize, usize> {
        match self.slots.back() {
            None => Err(0),
            Some(last) if last.id < id => Err(self.slots.len()),
            Some(last) if last.id == id => Ok(self.slots.len() - 1),
            Some(_) => self.slots.binary_search_by_key(&id, |s| s.id),
        }
    }
}

/// Hashes a sender incarnation (a random 128-bit id) by folding it: no
/// need for SipHash on keys that are random already.
#[derive(Default)]
struct FoldHasher(u64);

impl std::hash::Hasher for FoldHasher {
    fn finish(&self) -> u64 {
        self.0
    }
    fn write(&mut self, bytes: &[u8]) {
        // Not used by `u128` keys; FNV-1a keeps it correct for anything.
        for b in bytes {
            self.0 = (self.0 ^ u64::from(*b)).wrapping_mul(0x100_0000_01b3);
        }
    }
    fn write_u128(&mut self, n: u128) {
        self.0 ^= (n as u64) ^ ((n >> 64) as u64);
    }
}

/// Server-side memory of asks, for at-most-once execution of retries.
///
/// Per sender node incarnation it keeps a window of asks by id. Each ask
/// carries its sender's watermark ([`crate::codec::Kind::Ask::done_below`]):
/// asks below it are finished at the sender, so their entries (and the
/// remembered replies) are dropped as soon as the watermark passes them,
/// and a copy of one that arrives later is [`Verdict::Finished`]. So in
/// steady state a window holds only the asks in flight.
///
/// Bounded besides, for senders that stop sending: entries older than `ttl`
/// are forgotten, at most `capacity` entries are kept, remembered replies
/// take at most `max_bytes` (the oldest go first), and a sender unheard of
/// for `ttl` is forgotten with its watermark.
/// Who sent an ask, as the deduplication table tells senders apart: the
/// incarnation its envelope names, and the node the connection is
/// authenticated as. Keyed by both, a peer that names another node's
/// incarnation in its own envelopes gets a table of its own, and can
/// neither read nor overwrite that node's answers.
pub(crate) type Sender = (u128, Arc<str>);

pub(crate) struct DedupTable {
    senders: HashMap<Sender, Window, std::hash::BuildHasherDefault<FoldHasher>>,
    ttl: Duration,
    capacity: usize,
    entries: usize,
    bytes: usize,
    max_bytes: usize,
    /// Checks since the last sweep of every window.
    since_sweep: u32,
}

/// Checks between two sweeps of every sender's window for expired entries.
const SWEEP_EVERY: u32 = 1024;

impl DedupTable {
    pub(crate) fn new(ttl: Duration, capacity: usize) -> Self {
        Self {
            senders: HashMap::default(),
            ttl,
            capacity,
            entries: 0,
            bytes: 0,
            max_bytes: 64 << 20,
            since_sweep: 0,
        }
    }

    fn forget(&mut self, slot: Slot) {
        self.entries -= 1;
        if let DedupState::Answered(b) = slot.state {
            self.bytes -= b.len();
        }
    }

    /// Forget expired entries everywhere, then the oldest while over the
    /// bounds, and senders unheard of for `ttl`.
    fn sweep(&mut self, now: Instant) {
        self.since_sweep = 0;
        let ttl = self.ttl;
        let mut forgotten = Vec::new();
        for w in self.senders.values_mut() {
            while w
                .slots
                .front()
                .is_some_and(|s| now.saturating_duration_since(s.at) > ttl)
            {
                forgotten.extend(w.slots.pop_front());
            }
        }
        for slot in forgotten {
            self.forget(slot);
        }
        while self.entries > self.capacity || self.bytes > self.max_bytes {
            let oldest = self
                .senders
                .iter()
                .filter_map(|(k, w)| w.slots.front().map(|s| (s.at, k)))
                .min()
                .map(|(at, k)| (at, k.clone()));
            let Some((_, k)) = oldest else { break };
            let slot = self.senders.get_mut(&k).and_then(|w| w.slots.pop_front());
            match slot {
                Some(slot) => self.forget(slot),
                None => break,
            }
        }
        self.senders.retain(|_, w| {
            !w.slots.is_empty() || now.saturating_duration_since(w.last_seen) <= ttl
        });
    }

    /// Look at an incoming ask `id` from `sender`, whose watermark is
    /// `done_below`; registers it as running when new.
    pub(crate) fn check(
        &mut self,
        sender: &Sender,
        id: u64,
        done_below: u64,
        now: Instant,
    ) -> Verdict {
        self.since_sweep += 1;
        if self.since_sweep >= SWEEP_EVERY
            || self.entries > self.capacity
            || self.bytes > self.max_bytes
        {
            self.sweep(now);
        }
        let w = self
            .senders
            .entry(sender.clone())
            .or_insert_with(|| Window {
                floor: 0,
                slots: VecDeque::new(),
                last_seen: now,
            });
        w.last_seen = now;
        let mut dropped = (0usize, 0usize);
        let ttl = self.ttl;
        while w
            .slots
            .front()
            .is_some_and(|s| s.id < done_below || now.saturating_duration_since(s.at) > ttl)
        {
            if let Some(slot) = w.slots.pop_front() {
                dropped.0 += 1;
                if let DedupState::Answered(b) = slot.state {
                    dropped.1 += b.len();
                }
            }
        }
        w.floor = w.floor.max(done_below);
        let verdict = if id < w.floor {
            Verdict::Finished
        } else {
            match w.find(id) {
                Ok(i) => match &w.slots[i].state {
                    DedupState::Running => Verdict::Running,
                    DedupState::Answered(b) => Verdict::Answered(b.clone()),
                },
                Err(i) => {
                    w.slots.insert(
                        i,
                        Slot {
                            id,
                            at: now,
                            state: DedupState::Running,
                        },
                    );
                    self.entries += 1;
                    Verdict::Execute
                }
            }
        };
        self.entries -= dropped.0;
        self.bytes -= dropped.1;
        verdict
    }

    /// Remember the reply frame sent for an ask (unless it was forgotten
    /// meanwhile).
    pub(crate) fn answered(&mut self, sender: &Sender, id: u64, frame: Bytes) {
        let Some(w) = self.senders.get_mut(sender) else {
            return;
        };
        if let Ok(i) = w.find(id) {
            self.bytes += frame.len();
            if let DedupState::Answered(old) =
                std::mem::replace(&mut w.slots[i].state, DedupState::Answered(frame))
            {
                self.bytes -= old.len();
            }
        }
    }

    #[cfg(test)]
    fn len(&self) -> usize {
        self.entries
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::Ordering;

    /// Counts the frames sent through it, and notes when each was sent.
    #[derive(Default)]
    struct CountingTransport {
        sent: std::sync::atomic::AtomicUsize,
        at: Mutex<Vec<Instant>>,
    }

    impl Transport for CountingTransport {
        fn local_name(&self) -> &str {
            "a"
        }
        fn send(&self, _: &str, _: Bytes) -> Result<(), TransportError> {
            self.sent.fetch_add(1, Ordering::Relaxed);
            self.at.lock().unwrap().push(Instant::now());
            Ok(())
        }
        fn shutdown(&self) {}
    }

    fn request(timeout_ms: u64, retry: RetryPolicy) -> Request {
        Request {
            to: Arc::new(ActorPath {
                node: "b".into(),
                actor: "x".into(),
            }),
            timeout: Duration::from_millis(timeout_ms),
            retry,
            meters: None,
        }
    }

    /// Begins and arms an ask, as `RemoteRef::ask` does: its id and whether
    /// the stub must be woken.
    fn ask(
        asks: &Outstanding,
        req: Request,
        tx: oneshot::Sender<Result<Bytes, AskError>>,
    ) -> (u64, Registered) {
        let begun = asks.begin(req, tx);
        assert!(asks.arm(begun.id, Bytes::from_static(b"req")));
        (begun.id, begun.registered)
    }

    /// Waits (at most 5 s) for an ask's answer and checks it is a timeout.
    async fn ends_in_timeout(rx: oneshot::Receiver<Result<Bytes, AskError>>) {
        let got = tokio::time::timeout(Duration::from_secs(5), rx)
            .await
            .expect("ends")
            .expect("answered");
        assert!(matches!(got, Err(AskError::Timeout(_))), "{got:?}");
    }

    fn started() -> (Arc<Outstanding>, Arc<CountingTransport>, Addr<RpcStub>) {
        let asks = Arc::new(Outstanding::new(&NodeId::with_incarnation("a", 1)));
        let transport = Arc::new(CountingTransport::default());
        let stub = RpcStub::new(transport.clone(), asks.clone()).start();
        (asks, transport, stub)
    }

    /// An unanswered ask is re-sent on its back-off schedule and then fails
    /// with `Timeout`; the first registration wakes the idle stub. Under
    /// virtual time (as every test here: the counts and times are exact,
    /// whatever else the machine is doing).
    #[actix_rt::test]
    async fn unanswered_asks_are_resent_then_time_out() {
        tokio::time::pause();
        let (asks, transport, stub) = started();
        let t0 = Instant::now();
        let retry = RetryPolicy {
            initial_backoff: Duration::from_millis(30),
            multiplier: 1.0,
            jitter: 0.0,
            max_attempts: 3,
            ..RetryPolicy::default()
        };
        let (tx, rx) = oneshot::channel();
        assert_eq!(ask(&asks, request(300, retry), tx).1, Registered::WakeStub);
        stub.do_send(Wake);
        // Re-sent twice (3 sends in all, the first by the caller), then failed.
        ends_in_timeout(rx).await;
        let failed = t0.elapsed();
        assert_eq!(transport.sent.load(Ordering::Relaxed), 2);
        assert_eq!(asks.timers(), 0, "no timer left behind");
        // Each when due (30 ms after the previous send), at most one tick
        // late; the deadline likewise.
        let at: Vec<Duration> = transport
            .at
            .lock()
            .unwrap()
            .iter()
            .map(|t| *t - t0)
            .collect();
        let ms = Duration::from_millis;
        assert!(at[0] >= ms(30) && at[0] <= ms(30) + RPC_TICK, "{at:?}");
        assert!(
            at[1] >= at[0] + ms(30) && at[1] <= at[0] + ms(30) + RPC_TICK,
            "{at:?}"
        );
        assert!(
            failed >= ms(300) && failed <= ms(300) + RPC_TICK,
            "{failed:?}"
        );
        // A second ask finds the stub ticking: no wake needed.
        let (tx, _rx) = oneshot::channel();
        assert_eq!(ask(&asks, request(300, retry), tx).1, Registered::Ok);
    }

    /// Answered asks take their timers with them, sends nothing more, and
    /// an idle stub stops ticking; the next ask wakes it and still times out.
    #[actix_rt::test]
    async fn answered_asks_leave_no_timers_and_an_idle_stub_sleeps() {
        tokio::time::pause();
        let (asks, transport, stub) = started();
        let retry = RetryPolicy {
            initial_backoff: Duration::from_millis(20),
            jitter: 1.0,
            ..RetryPolicy::default()
        };
        let mut woken = 0;
        for _ in 0..200 {
            let (tx, rx) = oneshot::channel();
            let (id, registered) = ask(&asks, request(5_000, retry), tx);
            if registered == Registered::WakeStub {
                woken += 1;
                stub.do_send(Wake);
            }
            assert!(asks.complete(id, "b", Ok(Bytes::from_static(&[7])), 0));
            assert_eq!(rx.await.expect("reply"), Ok(Bytes::from_static(&[7])));
        }
        assert_eq!(woken, 1, "one wake-up for a stream of asks");
        assert_eq!(asks.timers(), 0);
        tokio::time::sleep(RPC_TICK * (IDLE_TICKS + 20)).await;
        assert_eq!(transport.sent.load(Ordering::Relaxed), 0, "no re-sends");
        // Asleep now: the next ask must wake it, and its deadline still fires.
        let (tx, rx) = oneshot::channel();
        assert_eq!(
            ask(&asks, request(50, RetryPolicy::none()), tx).1,
            Registered::WakeStub
        );
        stub.do_send(Wake);
        ends_in_timeout(rx).await;
    }

    /// A reply from another node than the one asked does not complete it.
    #[actix_rt::test]
    async fn replies_count_only_from_the_node_asked() {
        tokio::time::pause();
        let (asks, _transport, _stub) = started();
        let (tx, mut rx) = oneshot::channel();
        let (id, _) = ask(&asks, request(5_000, RetryPolicy::none()), tx);
        assert!(!asks.complete(id, "c", Ok(Bytes::from_static(&[1])), 0));
        assert!(rx.try_recv().is_err());
        assert!(asks.complete(id, "b", Ok(Bytes::from_static(&[2])), 0));
        assert_eq!(rx.await.expect("reply"), Ok(Bytes::from_static(&[2])));
    }

    #[test]
    fn dedup_executes_once_and_replays_the_answer() {
        let mut t = DedupTable::new(Duration::from_secs(10), 100);
        let a = (
            NodeId::with_incarnation("a", 1).incarnation.as_u128(),
            Arc::from("a"),
        );
        let now = Instant::now();
        assert_eq!(t.check(&a, 1, 0, now), Verdict::Execute);
        assert_eq!(t.check(&a, 1, 0, now), Verdict::Running);
        t.answered(&a, 1, Bytes::from_static(b"r"));
        assert_eq!(
            t.check(&a, 1, 0, now),
            Verdict::Answered(Bytes::from_static(b"r"))
        );
        // Another incarnation of the same node is a different sender.
        let a2 = (
            NodeId::with_incarnation("a", 2).incarnation.as_u128(),
            Arc::from("a"),
        );
        assert_eq!(t.check(&a2, 1, 0, now), Verdict::Execute);
        // So is a peer naming a's incarnation in its own envelopes: it
        // neither sees a's answer nor overwrites it.
        let m = (a.0, Arc::from("m"));
        assert_eq!(t.check(&m, 1, 0, now), Verdict::Execute);
        t.answered(&m, 1, Bytes::from_static(b"forged"));
        assert_eq!(
            t.check(&a, 1, 0, now),
            Verdict::Answered(Bytes::from_static(b"r"))
        );
    }

    /// The sender's watermark drops what is below it at once, and a late
    /// copy of a finished ask is not executed again.
    #[test]
    fn dedup_forgets_below_the_watermark_and_drops_late_copies() {
        let mut t = DedupTable::new(Duration::from_secs(10), 100);
        let a = (7u128, Arc::from("a"));
        let now = Instant::now();
        assert_eq!(t.check(&a, 1, 1, now), Verdict::Execute);
        t.answered(&a, 1, Bytes::from_static(b"r1"));
        assert_eq!(t.check(&a, 2, 1, now), Verdict::Execute);
        assert_eq!(t.len(), 2);
        // Ask 1 finished at the sender: forgotten, and its late copy dropped.
        assert_eq!(t.check(&a, 3, 2, now), Verdict::Execute);
        assert_eq!(t.len(), 2);
        assert_eq!(t.check(&a, 1, 2, now), Verdict::Finished);
        // A copy carrying an older watermark does not lower it.
        assert_eq!(t.check(&a, 1, 0, now), Verdict::Finished);
        assert_eq!(t.check(&a, 2, 0, now), Verdict::Running);
        // Out of order arrivals are remembered in id order.
        assert_eq!(t.check(&a, 6, 2, now), Verdict::Execute);
        assert_eq!(t.check(&a, 4, 2, now), Verdict::Execute);
        assert_eq!(t.check(&a, 5, 2, now), Verdict::Execute);
        t.answered(&a, 5, Bytes::from_static(b"r5"));
        assert_eq!(t.check(&a, 4, 2, now), Verdict::Running);
        assert_eq!(
            t.check(&a, 5, 2, now),
            Verdict::Answered(Bytes::from_static(b"r5"))
        );
        assert_eq!(t.len(), 5);
        // Everything finished: only the newest ask is remembered.
        assert_eq!(t.check(&a, 7, 7, now), Verdict::Execute);
        assert_eq!(t.len(), 1);
        assert_eq!(t.bytes, 0);
    }

    /// The watermark sent with an ask is the smallest id still waiting.
    #[actix_rt::test]
    async fn the_watermark_is_the_oldest_unfinished_ask() {
        tokio::time::pause();
        let (asks, _transport, _stub) = started();
        let begin = || {
            let (tx, rx) = oneshot::channel();
            let b = asks.begin(request(5_000, RetryPolicy::none()), tx);
            assert!(asks.arm(b.id, Bytes::from_static(b"req")));
            (b.id, b.done_below, rx)
        };
        let (a, a_below, _ra) = begin();
        assert_eq!(a_below, a, "nothing older is waiting");
        let (b, b_below, _rb) = begin();
        let (c, c_below, _rc) = begin();
        assert_eq!((b_below, c_below), (a, a));
        assert!(asks.complete(b, "b", Ok(Bytes::from_static(&[])), 0));
        let (_, d_below, _rd) = begin();
        assert_eq!(d_below, a, "a is still waiting");
        assert!(asks.complete(a, "b", Ok(Bytes::from_static(&[])), 0));
        let (_, e_below, _re) = begin();
        assert_eq!(e_below, c);
    }

    #[test]
    fn dedup_forgets_after_ttl_and_capacity() {
        let mut t = DedupTable::new(Duration::from_secs(1), 3);
        let a = (7u128, Arc::from("a"));
        let now = Instant::now();
        for id in 0..5 {
            assert_eq!(t.check(&a, id, 0, now), Verdict::Execute);
        }
        assert!(t.len() <= 4);
        let later = now + Duration::from_secs(5);
        assert_eq!(t.check(&a, 100, 0, later), Verdict::Execute);
        assert_eq!(t.len(), 1);
    }
}
