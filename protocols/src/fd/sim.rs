//! Deterministic discrete-event simulator for failure detectors.
//!
//! Many detector cores (any [`FailureDetector`] over [`SimId`]) run in one
//! process under virtual time. Events (message deliveries and timers) are
//! processed in `(time, insertion number)` order (a binary heap for the
//! next 100 ms, unsorted per-window lists beyond), so a run is a pure
//! function of the seed (ChaCha8) and the scripted faults: the same seed
//! replays exactly.
//!
//! The network drops each message with probability `loss` and delays it by a
//! [`DelayModel`] sample. Faults, injected between [`Sim::run_until`] calls:
//! - [`Sim::crash`]: the node stops; messages to it and its timers vanish.
//! - [`Sim::pause`]: the node stalls for a while (a GC pause, a frozen VM):
//!   its timers and inbound messages wait and are processed, in order, when
//!   it resumes.
//! - [`Sim::partition`] / [`Sim::heal`]: messages between groups are dropped
//!   at send time.
//! - [`Sim::restart`]: a crashed node comes back as a new incarnation.
//!
//! Every membership event of every node is recorded with its time
//! ([`Sim::events`]); messages and bytes sent are counted per node (bytes =
//! the message's msgpack size, see [`WireSize`]).

use std::cmp::Ordering;
use std::collections::BinaryHeap;
use std::io;
use std::time::Duration;

use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use serde::Serialize;
use troupe_framework::membership::{FailureDetector, MemberEvent, MemberStatus};
use troupe_framework::sansio::{Outputs, TimerOp, TimerTable};

use super::{FdMessage, SimId};

/// Encoded size of a wire message, for byte accounting.
pub trait WireSize {
    /// Bytes this message takes on the wire.
    fn wire_size(&self) -> usize;
    /// Whether the message is sent only to spread membership updates (SWIM's
    /// periodic gossip), as opposed to probing (pings, acks, ping-reqs,
    /// nacks, heartbeats). Counted apart in [`NodeStats::gossip_msgs`].
    fn is_gossip(&self) -> bool {
        false
    }
}

struct CountingWriter(usize);

impl io::Write for CountingWriter {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        self.0 += buf.len();
        Ok(buf.len())
    }
    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

/// Compact msgpack size (rmp-serde, structs as arrays) without allocating.
pub fn msgpack_size<T: Serialize>(value: &T) -> usize {
    let mut w = CountingWriter(0);
    match rmp_serde::encode::write(&mut w, value) {
        Ok(()) => w.0,
        Err(_) => 0,
    }
}

impl<Id: Serialize> WireSize for FdMessage<Id> {
    fn wire_size(&self) -> usize {
        msgpack_size(self)
    }
    fn is_gossip(&self) -> bool {
        matches!(
            self,
            FdMessage::Swim(super::swim::SwimMessage::Gossip { .. })
        )
    }
}

/// Message delay distribution.
#[derive(Debug, Clone, PartialEq)]
pub enum DelayModel {
    /// Always this delay.
    Fixed(Duration),
    /// Uniform in `[min, max]`.
    Uniform {
        /// Shortest delay.
        min: Duration,
        /// Longest delay.
        max: Duration,
    },
    /// `min` plus an exponential tail with mean `mean_extra`.
    Exponential {
        /// Shortest delay.
        min: Duration,
        /// Mean of the exponential part.
        mean_extra: Duration,
    },
}

impl DelayModel {
    fn sample(&self, rng: &mut ChaCha8Rng) -> Duration {
        match self {
            DelayModel::Fixed(d) => *d,
            DelayModel::Uniform { min, max } => {
                if max <= min {
                    *min
                } else {
                    let us = rng.gen_range(min.as_micros() as u64..=max.as_micros() as u64);
                    Duration::from_micros(us)
                }
            }
            DelayModel::Exponential { min, mean_extra } => {
                let u: f64 = rng.gen_range(f64::MIN_POSITIVE..1.0);
                *min + mean_extra.mul_f64(-u.ln())
            }
        }
    }
}

/// The simulated network.
#[derive(Debug, Clone, PartialEq)]
pub struct NetConfig {
    /// Probability that a message is lost.
    pub loss: f64,
    /// Delay of delivered messages.
    pub delay: DelayModel,
}

impl Default for NetConfig {
    /// No loss, 1-10 ms uniform delay (a LAN).
    fn default() -> Self {
        Self {
            loss: 0.0,
            delay: DelayModel::Uniform {
                min: Duration::from_millis(1),
                max: Duration::from_millis(10),
            },
        }
    }
}

/// A membership event seen by one node.
#[derive(Debug, Clone, PartialEq)]
pub struct Observed {
    /// The node that reported it.
    pub observer: SimId,
    /// The event.
    pub event: MemberEvent<SimId>,
}

/// Traffic sent by one node (all its incarnations).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct NodeStats {
    /// Messages sent (including ones the network then lost).
    pub msgs: u64,
    /// Of those, messages sent only to spread updates ([`WireSize::is_gossip`]).
    pub gossip_msgs: u64,
    /// Their msgpack bytes.
    pub bytes: u64,
}

enum Kind<M, T> {
    Deliver {
        to: SimId,
        from: SimId,
        msg: M,
    },
    Timer {
        node: u32,
        life: u32,
        token: u64,
        timer: T,
    },
}

struct Entry<M, T> {
    at: Duration,
    seq: u64,
    kind: Kind<M, T>,
}

impl<M, T> PartialEq for Entry<M, T> {
    fn eq(&self, other: &Self) -> bool {
        self.at == other.at && self.seq == other.seq
    }
}
impl<M, T> Eq for Entry<M, T> {}
impl<M, T> PartialOrd for Entry<M, T> {
    fn partial_cmp(&self, other: &Self) -> Option<Ordering> {
        Some(self.cmp(other))
    }
}
impl<M, T> Ord for Entry<M, T> {
    // Reversed: BinaryHeap is a max-heap, we want the earliest first.
    fn cmp(&self, other: &Self) -> Ordering {
        other.at.cmp(&self.at).then(other.seq.cmp(&self.seq))
    }
}

/// The pending events, popped in `(time, insertion number)` order.
///
/// Two levels, for speed (a large cluster under loss keeps hundreds of
/// thousands of far-off timers pending, and a single binary heap over all
/// of them made every pop walk ~19 levels of cold memory): events before
/// `horizon` sit in a small binary heap; later ones are appended, unsorted,
/// to the list of their `WINDOW`-wide time window, and a window's events
/// move into the heap when the heap runs dry and time reaches it. Every
/// event in the heap is earlier than every event in a window list, so the
/// pop order is exactly that of one heap.
struct EventQueue<M, T> {
    near: BinaryHeap<Entry<M, T>>,
    /// Window index (time / `WINDOW`) -> its events.
    far: std::collections::BTreeMap<u64, Vec<Entry<M, T>>>,
    /// Start of the first window still in `far`; `near` holds only events
    /// before it.
    horizon: Duration,
}

impl<M, T> EventQueue<M, T> {
    const WINDOW: Duration = Duration::from_millis(100);

    fn new() -> Self {
        Self {
            near: BinaryHeap::new(),
            far: std::collections::BTreeMap::new(),
            horizon: Self::WINDOW,
        }
    }

    fn window(at: Duration) -> u64 {
        (at.as_nanos() / Self::WINDOW.as_nanos()) as u64
    }

    fn push(&mut self, e: Entry<M, T>) {
        if e.at < self.horizon {
            self.near.push(e);
        } else {
            self.far.entry(Self::window(e.at)).or_default().push(e);
        }
    }

    /// Make sure the earliest event is in `near` (if there is any).
    fn refill(&mut self) {
        while self.near.is_empty() {
            let Some((w, events)) = self.far.pop_first() else {
                return;
            };
            let end = (w + 1).saturating_mul(Self::WINDOW.as_nanos() as u64);
            self.horizon = Duration::from_nanos(end);
            self.near.extend(events);
        }
    }

    fn peek_at(&mut self) -> Option<Duration> {
        self.refill();
        self.near.peek().map(|e| e.at)
    }

    fn pop(&mut self) -> Option<Entry<M, T>> {
        self.refill();
        self.near.pop()
    }
}

struct Slot<P: troupe_framework::sansio::Protocol> {
    id: SimId,
    proto: Option<P>,
    life: u32,
    paused_until: Duration,
    group: u32,
    /// Pending timers (keyed: a new arming of an equal timer replaces it).
    timers: TimerTable<P::Timer>,
}

type SimOutputs<P> = Outputs<
    SimId,
    <P as troupe_framework::sansio::Protocol>::Msg,
    <P as troupe_framework::sansio::Protocol>::Timer,
    MemberEvent<SimId>,
>;

/// The simulator. Nodes are numbered `0..n` (their [`SimId::node`]).
pub struct Sim<P>
where
    P: FailureDetector<Id = SimId>,
{
    now: Duration,
    seq: u64,
    queue: EventQueue<P::Msg, P::Timer>,
    nodes: Vec<Slot<P>>,
    stats: Vec<NodeStats>,
    net: NetConfig,
    rng: ChaCha8Rng,
    events: Vec<Observed>,
    out: SimOutputs<P>,
    count_bytes: bool,
    record: Option<Vec<MemberStatus>>,
    processed: u64,
}

impl<P> Sim<P>
where
    P: FailureDetector<Id = SimId>,
    P::Msg: WireSize,
{
    /// An empty simulation at time zero.
    pub fn new(seed: u64, net: NetConfig) -> Self {
        Self {
            now: Duration::ZERO,
            seq: 0,
            queue: EventQueue::new(),
            nodes: Vec::new(),
            stats: Vec::new(),
            net,
            rng: ChaCha8Rng::seed_from_u64(seed),
            events: Vec::new(),
            out: Outputs::new(),
            count_bytes: true,
            record: None,
            processed: 0,
        }
    }

    /// Turn byte accounting off (saves encoding every message).
    pub fn set_count_bytes(&mut self, on: bool) {
        self.count_bytes = on;
    }

    /// Record only events with one of these statuses in [`Sim::events`]
    /// (all by default): a long run of a large cluster under loss reports
    /// millions of `Suspect`/`Up` events a benchmark may not need.
    pub fn record_only(&mut self, statuses: &[MemberStatus]) {
        self.record = Some(statuses.to_vec());
    }

    /// Change the loss probability from now on.
    pub fn set_loss(&mut self, loss: f64) {
        self.net.loss = loss;
    }

    /// Current virtual time.
    pub fn now(&self) -> Duration {
        self.now
    }

    /// Number of node slots (live or not).
    pub fn len(&self) -> usize {
        self.nodes.len()
    }

    /// True when no node was added.
    pub fn is_empty(&self) -> bool {
        self.nodes.is_empty()
    }

    /// Events processed so far (deliveries and timers).
    pub fn processed(&self) -> u64 {
        self.processed
    }

    /// Add node `proto` whose id must be `SimId { node: len(), .. }`; it is
    /// told about `members` (with `add_member`) and started now.
    pub fn add_node(&mut self, id: SimId, mut proto: P, members: &[SimId]) {
        assert_eq!(
            id.node as usize,
            self.nodes.len(),
            "nodes are added in order"
        );
        self.stats.push(NodeStats::default());
        self.nodes.push(Slot {
            id,
            proto: None,
            life: 0,
            paused_until: Duration::ZERO,
            group: 0,
            timers: TimerTable::new(),
        });
        self.start(id.node, &mut proto, members);
        self.nodes[id.node as usize].proto = Some(proto);
    }

    fn start(&mut self, node: u32, proto: &mut P, members: &[SimId]) {
        let now = self.now;
        for m in members {
            if m.node != node {
                proto.add_member(now, *m, &mut self.out);
            }
        }
        proto.on_start(now, &mut self.out);
        self.flush(node);
    }

    /// Crash `node`: it stops for good (until [`restart`](Self::restart)).
    pub fn crash(&mut self, node: u32) {
        if let Some(s) = self.nodes.get_mut(node as usize) {
            s.proto = None;
            s.life += 1;
            s.timers.clear();
        }
    }

    /// Restart `node` (crashing it first if needed) as `proto`, whose id must
    /// be a new incarnation of the node.
    pub fn restart(&mut self, id: SimId, mut proto: P, members: &[SimId]) {
        self.crash(id.node);
        let slot = &mut self.nodes[id.node as usize];
        slot.id = id;
        slot.paused_until = Duration::ZERO;
        self.start(id.node, &mut proto, members);
        self.nodes[id.node as usize].proto = Some(proto);
    }

    /// Stall `node` for `d` from now: no timer or message is processed
    /// until then; they are processed, in order, when it resumes.
    pub fn pause(&mut self, node: u32, d: Duration) {
        if let Some(s) = self.nodes.get_mut(node as usize) {
            s.paused_until = s.paused_until.max(self.now + d);
        }
    }

    /// Split the network: nodes in `groups[i]` form group `i+1`, every other
    /// node group 0. Messages across groups are dropped.
    pub fn partition(&mut self, groups: &[Vec<u32>]) {
        for s in &mut self.nodes {
            s.group = 0;
        }
        for (i, g) in groups.iter().enumerate() {
            for n in g {
                if let Some(s) = self.nodes.get_mut(*n as usize) {
                    s.group = i as u32 + 1;
                }
            }
        }
    }

    /// Remove every partition.
    pub fn heal(&mut self) {
        for s in &mut self.nodes {
            s.group = 0;
        }
    }

    /// The current id of `node`.
    pub fn id_of(&self, node: u32) -> SimId {
        self.nodes[node as usize].id
    }

    /// True if `node` is running (not crashed).
    pub fn is_running(&self, node: u32) -> bool {
        self.nodes
            .get(node as usize)
            .is_some_and(|s| s.proto.is_some())
    }

    /// The core of `node`, if running.
    pub fn node(&self, node: u32) -> Option<&P> {
        self.nodes.get(node as usize).and_then(|s| s.proto.as_ref())
    }

    /// Run a user command on `node` now (e.g. a graceful leave), carrying
    /// out what it produced. Ignored if the node is not running.
    pub fn command(&mut self, node: u32, f: impl FnOnce(&mut P, Duration, &mut SimOutputs<P>)) {
        let now = self.now;
        if let Some(p) = self
            .nodes
            .get_mut(node as usize)
            .and_then(|s| s.proto.as_mut())
        {
            f(p, now, &mut self.out);
            self.flush(node);
        }
    }

    /// `observer`'s current status of `member` (from its detector's view).
    pub fn status(&self, observer: u32, member: SimId) -> Option<MemberStatus> {
        self.node(observer)?
            .view()
            .into_iter()
            .find(|(id, _)| *id == member)
            .map(|(_, s)| s)
    }

    /// Every membership event so far, in time order.
    pub fn events(&self) -> &[Observed] {
        &self.events
    }

    /// Traffic sent by `node`.
    pub fn stats(&self, node: u32) -> NodeStats {
        self.stats[node as usize]
    }

    /// Traffic sent by all nodes.
    pub fn total_stats(&self) -> NodeStats {
        self.stats
            .iter()
            .fold(NodeStats::default(), |a, s| NodeStats {
                msgs: a.msgs + s.msgs,
                gossip_msgs: a.gossip_msgs + s.gossip_msgs,
                bytes: a.bytes + s.bytes,
            })
    }

    /// For each observer, the first time at or after `since` it reported
    /// `member` with `status`.
    pub fn first_reports(
        &self,
        member: SimId,
        status: MemberStatus,
        since: Duration,
    ) -> Vec<(SimId, Duration)> {
        let mut seen = std::collections::BTreeSet::new();
        let mut first = Vec::new();
        for o in &self.events {
            if o.event.member == member
                && o.event.status == status
                && o.event.at >= since
                && seen.insert(o.observer)
            {
                first.push((o.observer, o.event.at));
            }
        }
        first
    }

    fn push(&mut self, at: Duration, kind: Kind<P::Msg, P::Timer>) {
        self.seq += 1;
        self.queue.push(Entry {
            at,
            seq: self.seq,
            kind,
        });
    }

    fn flush(&mut self, node: u32) {
        let idx = node as usize;
        let (me, life, group) = {
            let s = &self.nodes[idx];
            (s.id, s.life, s.group)
        };
        let now = self.now;
        for ev in self.out.events.drain(..) {
            if self
                .record
                .as_ref()
                .is_some_and(|r| !r.contains(&ev.status))
            {
                continue;
            }
            self.events.push(Observed {
                observer: me,
                event: ev,
            });
        }
        // Taken out and put back empty, keeping their capacity.
        let mut timers = std::mem::take(&mut self.out.timers);
        for op in timers.drain(..) {
            let slot = &mut self.nodes[idx];
            match op {
                TimerOp::Set { after, timer } => {
                    let (token, _replaced) = slot.timers.set(timer.clone());
                    self.push(
                        now + after,
                        Kind::Timer {
                            node,
                            life,
                            token,
                            timer,
                        },
                    );
                }
                TimerOp::Cancel(timer) => {
                    slot.timers.cancel(&timer);
                }
            }
        }
        self.out.timers = timers;
        let mut sends = std::mem::take(&mut self.out.sends);
        for (to, msg) in sends.drain(..) {
            let st = &mut self.stats[idx];
            st.msgs += 1;
            if msg.is_gossip() {
                st.gossip_msgs += 1;
            }
            if self.count_bytes {
                st.bytes += msg.wire_size() as u64;
            }
            let cut = self
                .nodes
                .get(to.node as usize)
                .is_none_or(|d| d.group != group);
            let lost = self.net.loss > 0.0 && self.rng.gen_bool(self.net.loss.min(1.0));
            if cut || lost {
                continue;
            }
            let at = now + self.net.delay.sample(&mut self.rng);
            self.push(at, Kind::Deliver { to, from: me, msg });
        }
        self.out.sends = sends;
    }

    /// Process every event up to and including time `t`; then `now() == t`.
    pub fn run_until(&mut self, t: Duration) {
        while self.step_until(t) {}
        if t > self.now {
            self.now = t;
        }
    }

    /// [`Sim::run_until`], calling `check` after every event processed (a
    /// delivery or a timer): the first error it returns stops the run and
    /// is returned.
    pub fn run_until_checked(
        &mut self,
        t: Duration,
        mut check: impl FnMut(&Self) -> Result<(), String>,
    ) -> Result<(), String> {
        while self.step_until(t) {
            check(self)?;
        }
        if t > self.now {
            self.now = t;
        }
        Ok(())
    }

    /// Process the next event if it is due at or before `t`; false when
    /// there is none.
    fn step_until(&mut self, t: Duration) -> bool {
        match self.queue.peek_at() {
            Some(at) if at <= t => {}
            _ => return false,
        }
        let Some(e) = self.queue.pop() else {
            return false;
        };
        self.now = e.at;
        self.processed += 1;
        match e.kind {
            Kind::Deliver { to, from, msg } => {
                let Some(slot) = self.nodes.get_mut(to.node as usize) else {
                    return true;
                };
                if slot.id != to || slot.proto.is_none() {
                    return true;
                }
                if slot.paused_until > self.now {
                    let at = slot.paused_until;
                    self.push(at, Kind::Deliver { to, from, msg });
                    return true;
                }
                if let Some(p) = slot.proto.as_mut() {
                    p.on_message(self.now, from, msg, &mut self.out);
                }
                self.flush(to.node);
            }
            Kind::Timer {
                node,
                life,
                token,
                timer,
            } => {
                let slot = &mut self.nodes[node as usize];
                if slot.life != life || slot.proto.is_none() {
                    return true;
                }
                if slot.paused_until > self.now {
                    let at = slot.paused_until;
                    self.push(
                        at,
                        Kind::Timer {
                            node,
                            life,
                            token,
                            timer,
                        },
                    );
                    return true;
                }
                if !slot.timers.fire(token) {
                    // Replaced or cancelled since it was armed.
                    return true;
                }
                if let Some(p) = slot.proto.as_mut() {
                    p.on_timer(self.now, timer, &mut self.out);
                }
                self.flush(node);
            }
        }
        true
    }

    /// Run for `d` more virtual time.
    pub fn run_for(&mut self, d: Duration) {
        let t = self.now + d;
        self.run_until(t);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::fd::config::HeartbeatConfig;
    use crate::fd::Heartbeat;

    fn cluster(n: u32, seed: u64) -> Sim<Heartbeat<SimId>> {
        let mut sim = Sim::new(seed, NetConfig::default());
        let ids: Vec<SimId> = (0..n).map(SimId::new).collect();
        for id in &ids {
            sim.add_node(
                *id,
                Heartbeat::new(*id, HeartbeatConfig::default().params()),
                &ids,
            );
        }
        sim
    }

    /// Gossip-only messages are counted apart, and only SWIM's `Gossip`:
    /// none for heartbeats, none for SWIM with gossip turned off, some (but
    /// not all) of SWIM's traffic once a crash gives it news to spread.
    #[test]
    fn gossip_messages_are_counted_apart() {
        let mut hb = cluster(4, 1);
        hb.run_until(Duration::from_secs(30));
        assert!(hb.total_stats().msgs > 0);
        assert_eq!(hb.total_stats().gossip_msgs, 0);

        let swim = |gossip_nodes: usize| {
            let mut sim = Sim::new(3, NetConfig::default());
            let ids: Vec<SimId> = (0..8).map(SimId::new).collect();
            let params = crate::fd::swim::SwimParams {
                gossip_nodes,
                ..crate::fd::swim::SwimParams::default()
            };
            for id in &ids {
                let core = crate::fd::Swim::new(*id, params.clone(), vec![], u64::from(id.node));
                sim.add_node(*id, core, &ids);
            }
            sim.run_until(Duration::from_secs(20));
            sim.crash(5);
            sim.run_until(Duration::from_secs(60));
            sim.total_stats()
        };
        let off = swim(0);
        assert_eq!(off.gossip_msgs, 0);
        let on = swim(3);
        assert!(on.gossip_msgs > 0, "{on:?}");
        assert!(on.gossip_msgs < on.msgs, "{on:?}");
    }

    #[test]
    fn same_seed_same_run() {
        let run = |seed| {
            let mut sim = cluster(4, seed);
            sim.set_loss(0.3);
            sim.run_until(Duration::from_secs(60));
            (sim.events().to_vec(), sim.total_stats())
        };
        assert_eq!(run(7), run(7));
        assert_ne!(run(7).0, run(8).0);
    }

    #[test]
    fn counts_messages_and_bytes() {
        let mut sim = cluster(3, 1);
        sim.run_until(Duration::from_millis(10_500));
        // 11 heartbeat rounds (t = 0..=10 s) to 2 peers each.
        assert_eq!(sim.stats(0).msgs, 22);
        let one = FdMessage::<SimId>::Heartbeat { seq: 1 }.wire_size() as u64;
        assert_eq!(sim.stats(0).bytes, 22 * one);
        assert!(one > 0);
    }

    #[test]
    fn pause_delays_processing_until_resume() {
        let mut sim = cluster(2, 3);
        sim.run_until(Duration::from_secs(2));
        sim.pause(1, Duration::from_secs(10));
        sim.run_until(Duration::from_secs(20));
        // Node 1 was silent for ~10 s: node 0 suspected and downed it, then
        // it came back; node 1 itself saw nothing wrong with node 0 until it
        // resumed with a backlog of heartbeats.
        let down0 = sim.first_reports(SimId::new(1), MemberStatus::Down, Duration::ZERO);
        assert_eq!(down0.len(), 1);
        assert_eq!(down0[0].0, SimId::new(0));
        assert_eq!(sim.status(0, SimId::new(1)), Some(MemberStatus::Up));
    }

    #[test]
    fn crash_and_partition_drop_messages() {
        let mut sim = cluster(3, 4);
        sim.run_until(Duration::from_secs(1));
        sim.crash(2);
        sim.partition(&[vec![0], vec![1]]);
        sim.run_until(Duration::from_secs(30));
        for o in [0, 1] {
            for m in [0u32, 1, 2].into_iter().filter(|m| *m != o) {
                assert_eq!(sim.status(o, SimId::new(m)), Some(MemberStatus::Down));
            }
        }
        sim.heal();
        sim.run_until(Duration::from_secs(35));
        assert_eq!(sim.status(0, SimId::new(1)), Some(MemberStatus::Up));
        assert_eq!(sim.status(0, SimId::new(2)), Some(MemberStatus::Down));
        assert!(!sim.is_running(2));
    }
}
