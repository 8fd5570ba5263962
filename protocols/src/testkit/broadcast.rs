//! The broadcast scenario: broadcasts from random members under seeded
//! chaos, the family's properties checked on every delivery at every step,
//! then healing. Members are `1..=n` (`u32`); a payload is a broadcast's
//! number (8 bytes, little-endian), unique in the run.
//!
//! ## What is checked
//! On every [`BroadcastEvent::Delivered`] (reported once durable), in every
//! phase:
//! * **no creation**: the payload was broadcast, by the member the event
//!   names as sender and origin;
//! * **no duplication**: a member delivers a payload at most once, across
//!   its restarts (the family's members keep their identity, see
//!   [`crate::broadcast`]);
//! * **FIFO** (when asked): a member delivers one sender's messages in the
//!   order they were broadcast;
//! * **causal** (when asked): when a member delivers `m`, it has delivered
//!   every message in `m`'s causal past. The checker computes that past
//!   itself, independently of the core's vector stamps: the messages the
//!   sender had delivered (its own included) when it was asked to broadcast
//!   `m`, which is closed under the relation as long as no causal error was
//!   reported before. It also checks the core's vector stamp, when it has
//!   one (a Lamport total order has none), against it: the stamp of `m`
//!   must count, for every origin, at least the messages of the past;
//! * **index**: a member numbers its deliveries 1, 2, 3, ... across its
//!   restarts, without gap or repeat (a delivery whose report a crash lost
//!   still takes its number: the checker reads it from the durable state);
//! * **total** (when asked): the members' delivery sequences are consistent
//!   with one global order. When `node` delivers `p`, for every other member
//!   `k` that delivered `p`: no message `k` delivered after `p` may be
//!   delivered by `node` already, and every message `k` delivered before
//!   `p` must be (by agreement `node` delivers it some day, so delivering it
//!   after `p` would break the order: caught at once). Every such pair
//!   counts in [`BroadcastObserver::total_checked`]. Deliveries whose report
//!   a crash lost are counted as delivered but have no position (a weaker
//!   check, never a false alarm).
//!
//! A delivery is the core's durable record; its event is reported once that
//! record is synced, and a crash between the sync and the report loses the
//! report, not the delivery (the restarted core does not deliver again). The
//! checker learns such deliveries from the durable state a restarted core
//! was rebuilt from, and counts them as delivered (before everything the
//! member reports later).
//!
//! After the faults stop (every member restarted, partitions healed, a
//! reliable network), within a bound: **agreement** (every message
//! delivered by a member is delivered by every member; uniform for the
//! members that crashed and recovered, which count as survivors; a member
//! that crashed for good mid-send ([`BroadcastScenario::crash_stop`]) is
//! not waited for, and its own deliveries are not required of the others), **validity** (every broadcast made after healing is
//! delivered by every member) and the hold-back queues drain (but for
//! messages of the member crashed for good: under FIFO, one of its
//! messages that reached no survivor holds back its later ones for good).

use std::collections::{BTreeMap, BTreeSet};
use std::time::Duration;

use rand::seq::SliceRandom;
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use troupe_framework::sansio::SnapshotCore;

use super::{Chaos, DiskModel, NetFaults, Observer, OracleConfig, Sim, SimProtocol};
use crate::broadcast::{
    clock_key, BroadcastCore, BroadcastDurable, BroadcastEvent, MsgId, SeqSet, Stamps,
};

/// Which ordering properties to check besides integrity and agreement.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct OrderChecks {
    /// One sender's messages in broadcast order.
    pub fifo: bool,
    /// Causal order (implies FIFO).
    pub causal: bool,
    /// Total order: every member delivers in one global order.
    pub total: bool,
}

/// A broadcast the checker knows of.
#[derive(Debug, Clone)]
struct Sent {
    sender: u32,
    /// Its causal past: the payloads its sender had delivered when asked.
    past: BTreeSet<u64>,
}

/// Checks integrity and the order of every delivery (see the module docs).
///
/// Its `Debug` form, which the model checker fingerprints states by
/// ([`super::model`]), leaves out the three counters of checks made
/// (`checked`, `causal_checked`, `total_checked`): statistics for the
/// reports that no check reads, so they cannot change what follows or
/// any verdict; `total_checked` depends on the order in which members
/// deliver (how many deliveries elsewhere a delivery is compared with),
/// so with them in, states that differ only in that order would be
/// distinct.
#[derive(Clone, Default)]
pub struct BroadcastObserver {
    checks: OrderChecks,
    sent: BTreeMap<u64, Sent>,
    /// Per member, what it delivered (across restarts).
    delivered: BTreeMap<u32, BTreeSet<u64>>,
    /// Per (member, sender), the last payload delivered.
    last: BTreeMap<(u32, u32), u64>,
    /// The identity of every payload delivered somewhere.
    ids: BTreeMap<u64, MsgId<u32>>,
    /// Per member: its life, and what its core was rebuilt with as
    /// delivered (reports a crash may have lost).
    recovered: BTreeMap<u32, (u64, BTreeMap<u32, SeqSet>)>,
    /// Deliveries checked.
    pub checked: u64,
    /// Causal-past members checked as delivered before a delivery.
    pub causal_checked: u64,
    /// Per member, the payloads it reported delivering, in order.
    sequence: BTreeMap<u32, Vec<u64>>,
    /// Position of `(member, payload)` in the member's `sequence`.
    position: BTreeMap<(u32, u64), usize>,
    /// Pairs of messages checked for one global order.
    pub total_checked: u64,
    /// Per member, the index of its last delivery (reported, or rebuilt
    /// from its durable state after a restart).
    index: BTreeMap<u32, u64>,
}

impl std::fmt::Debug for BroadcastObserver {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // Everything but the counters of checks made (see the type's docs).
        let Self {
            checks,
            sent,
            delivered,
            last,
            ids,
            recovered,
            checked: _,
            causal_checked: _,
            sequence,
            position,
            total_checked: _,
            index,
        } = self;
        f.debug_struct("BroadcastObserver")
            .field("checks", checks)
            .field("sent", sent)
            .field("delivered", delivered)
            .field("last", last)
            .field("ids", ids)
            .field("recovered", recovered)
            .field("sequence", sequence)
            .field("position", position)
            .field("index", index)
            .finish()
    }
}

impl BroadcastObserver {
    /// A checker of `checks`.
    pub fn new(checks: OrderChecks) -> Self {
        Self {
            checks,
            ..Self::default()
        }
    }

    /// The checker as it is with every member `m` called `r.to(m)` and
    /// every payload `p` called `pid(p)` (a model whose payloads name
    /// their senders renames them with the senders), for the model
    /// checker's symmetry reduction.
    pub fn renamed(&self, r: &super::model::Renaming<'_, u32>, pid: &dyn Fn(u64) -> u64) -> Self {
        let m = |id: &u32| r.id(id);
        let pids = |s: &BTreeSet<u64>| s.iter().map(|p| pid(*p)).collect::<BTreeSet<u64>>();
        Self {
            checks: self.checks,
            sent: self
                .sent
                .iter()
                .map(|(p, s)| {
                    let s = Sent {
                        sender: m(&s.sender),
                        past: pids(&s.past),
                    };
                    (pid(*p), s)
                })
                .collect(),
            delivered: self
                .delivered
                .iter()
                .map(|(n, s)| (m(n), pids(s)))
                .collect(),
            last: self
                .last
                .iter()
                .map(|((a, b), p)| ((m(a), m(b)), pid(*p)))
                .collect(),
            ids: self
                .ids
                .iter()
                .map(|(p, id)| (pid(*p), id.renamed(r)))
                .collect(),
            recovered: self
                .recovered
                .iter()
                .map(|(n, (life, d))| {
                    let d = d.iter().map(|(o, s)| (m(o), s.clone())).collect();
                    (m(n), (*life, d))
                })
                .collect(),
            checked: self.checked,
            causal_checked: self.causal_checked,
            sequence: self
                .sequence
                .iter()
                .map(|(n, seq)| (m(n), seq.iter().map(|p| pid(*p)).collect()))
                .collect(),
            position: self
                .position
                .iter()
                .map(|((n, p), i)| ((m(n), pid(*p)), *i))
                .collect(),
            total_checked: self.total_checked,
            index: self.index.iter().map(|(n, i)| (m(n), *i)).collect(),
        }
    }

    /// `node` is asked to broadcast `payload`.
    pub fn broadcast(&mut self, node: u32, payload: u64) {
        let past = self.delivered.get(&node).cloned().unwrap_or_default();
        // Reports lost to a crash are not in the past the checker knows:
        // a weaker check, never a false alarm.
        self.sent.insert(payload, Sent { sender: node, past });
    }

    /// Every payload delivered by some member.
    pub fn delivered_anywhere(&self) -> BTreeSet<u64> {
        self.ids.keys().copied().collect()
    }

    /// True if `node` delivered `pid`: reported it, or was rebuilt with it
    /// delivered.
    pub fn has_delivered(&self, node: u32, pid: u64) -> bool {
        self.delivered.get(&node).is_some_and(|d| d.contains(&pid))
            || self.ids.get(&pid).is_some_and(|id| {
                self.recovered
                    .get(&node)
                    .and_then(|(_, r)| r.get(&id.origin))
                    .is_some_and(|s| s.contains(id.seq))
            })
    }

    /// Total order: `node` delivering `pid` now (see the module docs).
    fn check_total(&mut self, node: u32, pid: u64) -> Result<(), String> {
        let mut pairs = 0;
        for (&k, seq) in &self.sequence {
            let Some(&at) = self.position.get(&(k, pid)).filter(|_| k != node) else {
                continue;
            };
            for (i, q) in seq.iter().enumerate().filter(|(i, _)| *i != at) {
                pairs += 1;
                let before = self.has_delivered(node, *q);
                if i > at && before {
                    return Err(format!(
                        "total order: node {node} delivered {q} before {pid}, node {k} {pid} before {q}"
                    ));
                }
                if i < at && !before {
                    return Err(format!(
                        "total order: node {node} delivers {pid} before {q}, node {k} {q} before {pid}"
                    ));
                }
            }
        }
        self.total_checked += pairs;
        let seq = self.sequence.entry(node).or_default();
        self.position.insert((node, pid), seq.len());
        seq.push(pid);
        Ok(())
    }

    fn saw(
        &mut self,
        node: u32,
        sender: u32,
        id: &MsgId<u32>,
        payload: &[u8],
        stamps: &Stamps,
    ) -> Result<(), String> {
        self.checked += 1;
        let pid = payload.try_into().map(u64::from_le_bytes).map_err(|_| {
            format!("creation: node {node} delivered a payload never sent: {payload:?}")
        })?;
        let Some(sent) = self.sent.get(&pid) else {
            return Err(format!(
                "creation: node {node} delivered {pid}, never broadcast"
            ));
        };
        if sent.sender != sender || id.origin != sender {
            return Err(format!(
                "creation: node {node} delivered {pid} as from {sender} ({id:?}); {} broadcast it",
                sent.sender
            ));
        }
        if self.has_delivered(node, pid) {
            return Err(format!("duplication: node {node} delivered {pid} twice"));
        }
        self.delivered.entry(node).or_default().insert(pid);
        self.ids.insert(pid, id.clone());
        if self.checks.fifo || self.checks.causal {
            if let Some(prev) = self.last.insert((node, sender), pid) {
                if prev > pid {
                    return Err(format!(
                        "FIFO: node {node} delivered {pid} of sender {sender} after {prev}, broadcast later"
                    ));
                }
            }
        }
        if self.checks.causal {
            if let Some(missing) = sent.past.iter().find(|p| !self.has_delivered(node, **p)) {
                return Err(format!(
                    "causal: node {node} delivered {pid} (from {sender}) before {missing}, in its causal past"
                ));
            }
            self.causal_checked += sent.past.len() as u64;
            // The core's vector stamp, if any, counts at least the past,
            // per origin.
            let vector = stamps.vector.clone().unwrap_or_default();
            let vector_stamped = stamps.vector.is_some();
            let mut per_origin: BTreeMap<u32, u64> = BTreeMap::new();
            for p in &sent.past {
                *per_origin.entry(self.sent[p].sender).or_default() += 1;
            }
            for (origin, n) in per_origin {
                if vector_stamped && vector.get(&clock_key(&origin)) < n {
                    return Err(format!(
                        "causal stamp: {pid} from {sender} stamped {vector:?}, but its past holds {n} messages of {origin}"
                    ));
                }
            }
        }
        if self.checks.total {
            self.check_total(node, pid)?;
        }
        Ok(())
    }
}

impl<P> Observer<P> for BroadcastObserver
where
    P: SimProtocol<Id = u32, Event = BroadcastEvent<u32>>
        + SnapshotCore<State = BroadcastDurable<u32>>,
{
    fn check(&mut self, sim: &Sim<P>) -> Result<(), String> {
        for (id, _) in sim.cores() {
            let life = sim.life(id);
            if life > 0 && self.recovered.get(id).is_none_or(|(l, _)| *l != life) {
                // Just restarted: its disk holds what it recovered (what it
                // delivered since is on the disk only once reported).
                let state = sim.disk(id).and_then(super::recover_state::<P>);
                let state = state.unwrap_or_default();
                self.index.insert(*id, state.delivered_count);
                let delivered = state.delivered.into_iter().collect();
                self.recovered.insert(*id, (life, delivered));
            }
        }
        Ok(())
    }

    fn on_event(
        &mut self,
        _now: Duration,
        node: &u32,
        event: &BroadcastEvent<u32>,
    ) -> Result<(), String> {
        match event {
            BroadcastEvent::Delivered {
                sender,
                id,
                payload,
                stamps,
                index,
                held_back: _,
            } => {
                let last = self.index.entry(*node).or_default();
                if *index != *last + 1 {
                    return Err(format!(
                        "index: node {node} reported delivery #{index} after #{last}"
                    ));
                }
                *last = *index;
                self.saw(*node, *sender, id, payload, stamps)
            }
        }
    }
}

/// How the broadcast scenario is run.
#[derive(Debug, Clone)]
pub struct BroadcastScenario {
    /// Group size (members are `1..=nodes`).
    pub nodes: u32,
    /// Ordering properties to check.
    pub checks: OrderChecks,
    /// Length of the chaos phase.
    pub chaos_time: Duration,
    /// Network faults during the chaos phase.
    pub faults: NetFaults,
    /// Crash probability per 10 ms tick.
    pub crash_prob: f64,
    /// Partition probability per tick.
    pub partition_prob: f64,
    /// Probability per tick that a random live member broadcasts.
    pub broadcast_prob: f64,
    /// Broadcasts per member after healing (validity).
    pub calm_broadcasts: u32,
    /// Failure-detector delays.
    pub oracle: OracleConfig,
    /// Disk sync delays (a crash loses what is not synced).
    pub disk: DiskModel,
    /// Halfway through the chaos phase, a member broadcasts and crashes
    /// for good a few milliseconds later (mid-send: some copies out, some
    /// lost). Agreement is then required of the survivors only.
    pub crash_stop: bool,
    /// Which member [`BroadcastScenario::crash_stop`] crashes for good
    /// (if it is up then); `None`: a random live one.
    pub stop_victim: Option<u32>,
    /// Time allowed for agreement and validity after the faults stop.
    pub liveness_bound: Duration,
}

impl BroadcastScenario {
    /// Defaults for an `n`-member group checking `checks`.
    pub fn chaotic(nodes: u32, checks: OrderChecks) -> Self {
        Self {
            nodes,
            checks,
            chaos_time: Duration::from_secs(4),
            faults: NetFaults::chaotic(),
            crash_prob: 0.01,
            partition_prob: 0.004,
            broadcast_prob: 0.15,
            calm_broadcasts: 2,
            oracle: OracleConfig::default(),
            disk: DiskModel::syncing(Duration::from_micros(500), Duration::from_millis(5)),
            crash_stop: true,
            stop_victim: None,
            liveness_bound: Duration::from_secs(20),
        }
    }
}

/// What a broadcast scenario saw.
#[derive(Debug, Clone, Default)]
pub struct BroadcastOutcome {
    /// Broadcasts asked for (some may be lost with a crash before they
    /// were durable: never delivered anywhere).
    pub broadcasts: u64,
    /// Distinct messages delivered somewhere.
    pub delivered_messages: u64,
    /// Deliveries checked.
    pub checked: u64,
    /// Causal-past entries checked.
    pub causal_checked: u64,
    /// Message pairs checked for one global order.
    pub total_checked: u64,
    /// Crashes (random).
    pub crashes: u64,
    /// Messages sent, all kinds.
    pub sent: u64,
    /// Messages collected from history buffers once stable.
    pub collected: u64,
}

const TICK: Duration = Duration::from_millis(10);

/// Run the broadcast scenario for one seed (see the module docs).
pub fn run_broadcast<P>(
    seed: u64,
    sc: &BroadcastScenario,
    make: impl Fn(u32, Vec<u32>, Option<P::State>) -> P + 'static,
) -> Result<BroadcastOutcome, String>
where
    P: SimProtocol<Id = u32, Event = BroadcastEvent<u32>>
        + BroadcastCore
        + SnapshotCore<State = BroadcastDurable<u32>>,
{
    let members: Vec<u32> = (1..=sc.nodes).collect();
    let mut sim: Sim<P> = super::snapshot_sim(seed, sc.nodes, sc.faults, sc.oracle, make);
    sim.set_disk(sc.disk);
    let mut chaos = Chaos::new(seed);
    chaos.crash_prob = sc.crash_prob;
    chaos.partition_prob = sc.partition_prob;
    let mut rng = ChaCha8Rng::seed_from_u64(seed.wrapping_mul(6151).wrapping_add(11));
    let mut obs = BroadcastObserver::new(sc.checks);
    let mut out = BroadcastOutcome::default();
    let mut next_pid: u64 = 1;
    let mut calm_pids: Vec<u64> = Vec::new();
    sim.start(&mut obs)?;

    let mut calm_at = None;
    let mut dead: Option<u32> = None;
    loop {
        let now = sim.now();
        let next_tick = now + TICK;
        sim.run_until(next_tick, &mut obs)?;
        let now = sim.now();
        match calm_at {
            None if now < sc.chaos_time => {
                if sc.crash_stop && dead.is_none() && now >= sc.chaos_time / 2 {
                    let alive = sim.alive();
                    let pick = match sc.stop_victim {
                        Some(v) => alive.iter().find(|m| **m == v),
                        None => alive.choose(&mut rng),
                    };
                    if let Some(&victim) = pick {
                        broadcast(&mut sim, &mut obs, victim, next_pid)?;
                        next_pid += 1;
                        out.broadcasts += 1;
                        let gap = Duration::from_micros(rng.gen_range(500..8000));
                        sim.run_for(gap, &mut obs)?;
                        sim.crash(&victim, &mut obs)?;
                        dead = Some(victim);
                    }
                }
                let before = sim.alive().len();
                chaos.tick(&mut sim, &mut obs)?;
                if sim.alive().len() < before {
                    out.crashes += 1;
                }
                if rng.gen_bool(sc.broadcast_prob) {
                    if let Some(&node) = sim.alive().choose(&mut rng) {
                        broadcast(&mut sim, &mut obs, node, next_pid)?;
                        next_pid += 1;
                        out.broadcasts += 1;
                    }
                }
            }
            None => {
                chaos.calm(&mut sim, &mut obs)?;
                if let Some(d) = dead {
                    // `calm` restarts the members chaos crashed; it may have
                    // picked the dead one too.
                    sim.crash(&d, &mut obs)?;
                }
                sim.set_faults(NetFaults::reliable(sc.faults.max_delay / 2));
                calm_at = Some(now);
                for _ in 0..sc.calm_broadcasts {
                    for &node in members.iter().filter(|m| Some(**m) != dead) {
                        broadcast(&mut sim, &mut obs, node, next_pid)?;
                        calm_pids.push(next_pid);
                        next_pid += 1;
                        out.broadcasts += 1;
                    }
                }
            }
            Some(t) => {
                let live: Vec<u32> = members
                    .iter()
                    .copied()
                    .filter(|m| Some(*m) != dead)
                    .collect();
                let pending = pending(&sim, &obs, &live, &calm_pids, dead);
                if pending.is_empty() {
                    break;
                }
                if now > t + sc.liveness_bound {
                    return Err(format!("after healing, not done: {pending:?}"));
                }
            }
        }
    }
    out.delivered_messages = obs.delivered_anywhere().len() as u64;
    out.checked = obs.checked;
    out.causal_checked = obs.causal_checked;
    out.total_checked = obs.total_checked;
    out.sent = sim.total_sent();
    out.collected = sim.cores().map(|(_, c)| c.stats().collected).sum();
    Ok(out)
}

fn broadcast<P>(
    sim: &mut Sim<P>,
    obs: &mut BroadcastObserver,
    node: u32,
    pid: u64,
) -> Result<(), String>
where
    P: SimProtocol<Id = u32, Event = BroadcastEvent<u32>>
        + BroadcastCore
        + SnapshotCore<State = BroadcastDurable<u32>>,
{
    obs.broadcast(node, pid);
    sim.command(&node, obs, |c, now, o| {
        c.broadcast(pid.to_le_bytes().to_vec(), now, o)
    })?;
    Ok(())
}

/// What is missing after healing: per member of `members` (the
/// survivors), the messages delivered by one of them (or broadcast after
/// healing) it has not delivered, and its hold-back queue if not empty.
/// Messages of `dead` (the member crashed for good) may stay held back: a
/// FIFO layer cannot deliver them when an earlier one of theirs reached no
/// survivor (agreement is still checked: none of them is delivered by a
/// survivor, or every survivor must deliver it).
fn pending<P>(
    sim: &Sim<P>,
    obs: &BroadcastObserver,
    members: &[u32],
    calm: &[u64],
    dead: Option<u32>,
) -> Vec<String>
where
    P: SimProtocol<Id = u32, Event = BroadcastEvent<u32>>
        + BroadcastCore
        + SnapshotCore<State = BroadcastDurable<u32>>,
{
    let mut want: BTreeSet<u64> = obs
        .delivered_anywhere()
        .into_iter()
        .filter(|p| members.iter().any(|m| obs.has_delivered(*m, *p)))
        .collect();
    want.extend(calm.iter().copied());
    let mut missing = Vec::new();
    for &m in members {
        let lack: Vec<u64> = want
            .iter()
            .copied()
            .filter(|p| !obs.has_delivered(m, *p))
            .collect();
        let held = sim.core(&m).map_or(0, |c| {
            let state = c.state();
            let delivered: BTreeMap<u32, SeqSet> = state.delivered.into_iter().collect();
            let is_delivered = |id: &MsgId<u32>| {
                delivered
                    .get(&id.origin)
                    .is_some_and(|s| s.contains(id.seq))
            };
            state
                .buffer
                .iter()
                .filter(|(id, _)| Some(id.origin) != dead && !is_delivered(id))
                .count()
        });
        if !lack.is_empty() || held > 0 {
            missing.push(format!("node {m} lacks {lack:?}, holds back {held}"));
        }
    }
    missing
}
