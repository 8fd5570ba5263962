//! Ready-made property scenarios for mutex and election cores: a safety phase
//! under chaos with invariants checked after every step, then a liveness
//! phase with the faults removed. Used by the integration tests and the cost
//! benchmark; members are `1..=n` (`u32`).
//!
//! ## What the mutex scenario checks
//! * After every step: at most one holder among grants that were made with an
//!   accurate failure detector — no false suspicion (a running member reported
//!   down, by a partition or a restart the others had not noticed) between the
//!   request and the grant, nor, for token generations, since the generation
//!   was created. Grants made on false suspicions may overlap (that is what a
//!   partition does to every one of these algorithms); for them the fenced
//!   resource is the defence: it accepts a token only if it is larger than
//!   every token it accepted before, and counts refusals.
//! * Always, even under partitions: never two holders of tokens of the same
//!   generation (token ring).
//! * Liveness, after the faults stop (crashed members restarted, partitions
//!   healed, fixed-delay reliable network): every pending request is granted
//!   within the bound; then under constant contention every member is served,
//!   no member waits for more than N-1 grants to others, grants follow
//!   `(Lamport time, id)` order where the algorithm defines one, and the
//!   resource refuses no token.
//!
//! ## What the election scenario checks
//! * After every step: at most one leader per term (over every report ever
//!   made), every member that knows a leader for a term agrees, and no
//!   member's term ever decreases, across restarts too.
//! * After healing: exactly one leader, known to every running member and
//!   knowing it leads, the highest running id for bully and ring, unchanged
//!   three seconds later.

use std::collections::BTreeMap;
use std::time::Duration;

use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;

use troupe_framework::sansio::SnapshotCore;

use super::{Chaos, DiskModel, NetFaults, Observer, OracleConfig, Sim, SimProtocol};
use crate::election::{ElectionCore, ElectionDurable, ElectionEvent};
use crate::mutex::{MutexCore, MutexEvent};

/// How a mutex or election scenario is run.
#[derive(Debug, Clone)]
pub struct Scenario {
    /// Group size (members are `1..=nodes`).
    pub nodes: u32,
    /// Length of the safety (chaos) phase.
    pub chaos_time: Duration,
    /// Network faults during the chaos phase.
    pub faults: NetFaults,
    /// Crash / partition rates during the chaos phase.
    pub crash_prob: f64,
    /// Probability per tick that a partition starts.
    pub partition_prob: f64,
    /// Most members crashed at once.
    pub max_crashed: usize,
    /// Failure-detector delays.
    pub oracle: OracleConfig,
    /// Mutex: how long a holder keeps the lock.
    pub hold: Duration,
    /// Mutex: probability per tick that an idle node requests.
    pub request_prob: f64,
    /// Time allowed for the liveness phase to converge.
    pub liveness_bound: Duration,
    /// How long the members' syncs take: their messages wait for them, and
    /// a crash loses what was not synced yet.
    pub disk: DiskModel,
}

impl Scenario {
    /// Defaults for an `n`-member group under moderate chaos.
    pub fn chaotic(nodes: u32) -> Self {
        Self {
            nodes,
            chaos_time: Duration::from_secs(20),
            faults: NetFaults::chaotic(),
            crash_prob: 0.01,
            partition_prob: 0.004,
            max_crashed: 1,
            oracle: OracleConfig::default(),
            hold: Duration::from_millis(30),
            request_prob: 0.05,
            liveness_bound: Duration::from_secs(30),
            disk: DiskModel::syncing(Duration::from_micros(500), Duration::from_millis(5)),
        }
    }
}

impl Scenario {
    /// The fault schedule of this scenario for `seed`, with `sim`'s disk
    /// set to the scenario's.
    fn chaos<P: SimProtocol>(&self, seed: u64, sim: &mut Sim<P>) -> Chaos<P::Id> {
        let mut chaos = Chaos::new(seed);
        chaos.crash_prob = self.crash_prob;
        chaos.partition_prob = self.partition_prob;
        chaos.max_crashed = self.max_crashed;
        sim.set_disk(self.disk);
        chaos
    }
}

const TICK: Duration = Duration::from_millis(10);

/// Checks mutual exclusion: at most one holder among grants made while the
/// failure detector was accurate, and a fenced resource that accepts only
/// strictly growing tokens.
#[derive(Debug, Default)]
pub struct MutexObserver {
    requested_at: BTreeMap<u32, Duration>,
    granted: Vec<(u32, u64)>,
    /// Per node: (token, granted while the detector was accurate since the request).
    clean: BTreeMap<u32, (u64, bool)>,
    /// Largest token the resource accepted.
    pub resource_token: u64,
    /// Grants the resource accepted.
    pub accepted: u64,
    /// Grants the resource refused (stale tokens).
    pub refused: u64,
    /// When true, a refused token is an error (no faults left to excuse it).
    pub strict: bool,
    /// Number of grants to others since each waiting node's request.
    overtaken: BTreeMap<u32, u64>,
    /// Largest `overtaken` observed at a grant (starvation bound).
    pub max_overtaken: u64,
    /// Check the starvation bound and grant order (constant contention phase).
    pub fairness: bool,
    last_stamp: Option<(u64, u32)>,
    /// Total grants seen.
    pub grants: u64,
    /// When each token generation was first known to any node (≈ when its
    /// regeneration started).
    epoch_born: BTreeMap<u64, Duration>,
}

impl MutexObserver {
    fn note_request(&mut self, node: u32, now: Duration) {
        self.requested_at.insert(node, now);
        self.overtaken.insert(node, 0);
    }
}

impl<P: SimProtocol<Id = u32, Event = MutexEvent> + MutexCore> Observer<P> for MutexObserver {
    fn on_event(&mut self, _now: Duration, node: &u32, event: &MutexEvent) -> Result<(), String> {
        if let MutexEvent::Granted { fencing_token, .. } = event {
            self.granted.push((*node, *fencing_token));
        }
        Ok(())
    }

    fn check(&mut self, sim: &Sim<P>) -> Result<(), String> {
        let n = sim.members().len() as u64;
        for (_, c) in sim.cores() {
            if let Some(e) = c.epoch() {
                self.epoch_born.entry(e).or_insert(sim.now());
            }
        }
        for (node, token) in std::mem::take(&mut self.granted) {
            self.grants += 1;
            let req = self
                .requested_at
                .get(&node)
                .copied()
                .unwrap_or(Duration::ZERO);
            // A grant counts for mutual exclusion when no false suspicion
            // happened since the request (and, for token generations, since
            // the generation was created: a token regenerated behind a
            // partition is a second token until the newer one meets it).
            let since = match sim.core(&node).and_then(|c| c.held_epoch()) {
                Some(e) => req.min(self.epoch_born.get(&e).copied().unwrap_or(req)),
                None => req,
            };
            let clean = sim.fd_clean_since().is_some_and(|t| t <= since);
            self.clean.insert(node, (token, clean));
            if token > self.resource_token {
                self.resource_token = token;
                self.accepted += 1;
            } else {
                self.refused += 1;
                if self.strict {
                    return Err(format!(
                        "node {node} granted token {token}, not above the resource's {}",
                        self.resource_token
                    ));
                }
            }
            if self.fairness {
                let mine = self.overtaken.remove(&node).unwrap_or(0);
                self.max_overtaken = self.max_overtaken.max(mine);
                if mine > n - 1 {
                    return Err(format!(
                        "node {node} waited for {mine} grants to others (bound {})",
                        n - 1
                    ));
                }
                for (other, c) in self.overtaken.iter_mut() {
                    if *other != node {
                        *c += 1;
                    }
                }
                if let Some(stamp) = sim.core(&node).and_then(|c| c.request_stamp()) {
                    let key = (stamp, node);
                    if self.last_stamp.is_some_and(|l| l >= key) {
                        return Err(format!(
                            "grant order: ({stamp}, {node}) granted after {:?}",
                            self.last_stamp
                        ));
                    }
                    self.last_stamp = Some(key);
                }
            }
        }
        let holders: Vec<(u32, u64)> = sim
            .cores()
            .filter_map(|(id, c)| c.holding().map(|t| (*id, t)))
            .filter(|(id, t)| self.clean.get(id).is_some_and(|(ct, ok)| ct == t && *ok))
            .collect();
        if holders.len() > 1 {
            return Err(format!("two holders at once: {holders:?}"));
        }
        // Never two holders with tokens of the same generation, whatever the
        // network and the detector do.
        let mut by_epoch: BTreeMap<u64, u32> = BTreeMap::new();
        for (id, c) in sim.cores() {
            if let (Some(e), Some(_)) = (c.held_epoch(), c.holding()) {
                if let Some(other) = by_epoch.insert(e, *id) {
                    return Err(format!(
                        "nodes {other} and {id} both hold a token of generation {e}"
                    ));
                }
            }
        }
        Ok(())
    }
}

/// What a mutex scenario measured.
#[derive(Debug, Clone, Default)]
pub struct MutexOutcome {
    /// Grants during the whole run.
    pub grants: u64,
    /// Grants the resource refused (only possible during chaos).
    pub refused: u64,
    /// Largest number of grants to others a waiting node saw (contention phase).
    pub max_overtaken: u64,
}

/// Run the mutex scenario for one seed: chaos with a random workload, then
/// every pending request must be granted, then constant contention must be
/// served fairly (at most N-1 grants to others while a node waits).
pub fn run_mutex<P>(
    seed: u64,
    sc: &Scenario,
    make: impl Fn(u32, Vec<u32>, Option<P::State>) -> P + 'static,
) -> Result<MutexOutcome, String>
where
    P: SimProtocol<Id = u32, Event = MutexEvent> + MutexCore + SnapshotCore,
{
    let members: Vec<u32> = (1..=sc.nodes).collect();
    let m2 = members.clone();
    let mut sim: Sim<P> = Sim::new(
        seed,
        members.clone(),
        Box::new(move |id, r| make(*id, m2.clone(), super::recover_state::<P>(r))),
        sc.faults,
        sc.oracle,
    );
    let mut obs = MutexObserver::default();
    let mut rng = ChaCha8Rng::seed_from_u64(seed.wrapping_mul(31).wrapping_add(7));
    let mut chaos = sc.chaos(seed, &mut sim);
    sim.start(&mut obs)?;
    let mut held_since: BTreeMap<u32, Duration> = BTreeMap::new();

    // Safety phase.
    let end = sc.chaos_time;
    while sim.now() < end {
        chaos.tick(&mut sim, &mut obs)?;
        workload(&mut sim, &mut obs, &mut rng, &mut held_since, sc, true)?;
        sim.run_for(TICK, &mut obs)?;
    }

    // Liveness phase: no more faults. Pending requests must all be granted.
    chaos.calm(&mut sim, &mut obs)?;
    // No loss, no duplicates, no reordering: a fixed delay.
    sim.set_faults(NetFaults::reliable(sc.faults.max_delay / 2));
    let settle = sim.now() + sc.oracle.down_after.max(sc.oracle.up_after) * 2;
    let deadline = sim.now() + sc.liveness_bound;
    loop {
        workload(&mut sim, &mut obs, &mut rng, &mut held_since, sc, false)?;
        sim.run_for(TICK, &mut obs)?;
        let busy = sim
            .cores()
            .any(|(_, c)| c.is_waiting() || c.holding().is_some());
        if !busy && sim.now() > settle {
            break;
        }
        if sim.now() > deadline {
            let stuck: Vec<u32> = sim
                .cores()
                .filter(|(_, c)| c.is_waiting())
                .map(|(id, _)| *id)
                .collect();
            return Err(format!(
                "liveness: requests of {stuck:?} not granted after the faults stopped"
            ));
        }
    }

    // Constant contention: everyone requests again as soon as it released.
    obs.strict = true;
    obs.fairness = true;
    let target = obs.grants + 3 * u64::from(sc.nodes);
    let deadline = sim.now() + sc.liveness_bound;
    let mut per_node: BTreeMap<u32, u64> = BTreeMap::new();
    let start_grants = obs.grants;
    while obs.grants < target {
        for id in sim.members() {
            let core = sim.core(&id);
            let idle = core.is_some_and(|c| !c.is_waiting() && c.holding().is_none());
            let holding = core.is_some_and(|c| c.holding().is_some());
            if idle {
                obs.note_request(id, sim.now());
                sim.command(&id, &mut obs, |c, now, out| c.request(now, out))?;
            } else if holding {
                let since = *held_since.entry(id).or_insert(sim.now());
                if sim.now() >= since + sc.hold {
                    held_since.remove(&id);
                    *per_node.entry(id).or_insert(0) += 1;
                    sim.command(&id, &mut obs, |c, now, out| c.release(now, out))?;
                }
            }
        }
        sim.run_for(TICK, &mut obs)?;
        if sim.now() > deadline {
            return Err(format!(
                "liveness: only {} grants under contention in {:?}",
                obs.grants - start_grants,
                sc.liveness_bound
            ));
        }
    }
    for id in sim.members() {
        if per_node.get(&id).copied().unwrap_or(0) == 0 {
            return Err(format!(
                "starvation: node {id} never served under contention"
            ));
        }
    }
    Ok(MutexOutcome {
        grants: obs.grants,
        refused: obs.refused,
        max_overtaken: obs.max_overtaken,
    })
}

fn workload<P>(
    sim: &mut Sim<P>,
    obs: &mut MutexObserver,
    rng: &mut ChaCha8Rng,
    held_since: &mut BTreeMap<u32, Duration>,
    sc: &Scenario,
    new_requests: bool,
) -> Result<(), String>
where
    P: SimProtocol<Id = u32, Event = MutexEvent> + MutexCore,
{
    for id in sim.members() {
        let Some(core) = sim.core(&id) else {
            held_since.remove(&id);
            continue;
        };
        if core.holding().is_some() {
            let since = *held_since.entry(id).or_insert(sim.now());
            if sim.now() >= since + sc.hold {
                held_since.remove(&id);
                sim.command(&id, obs, |c, now, out| c.release(now, out))?;
            }
        } else {
            held_since.remove(&id);
            if new_requests && !core.is_waiting() && rng.gen_bool(sc.request_prob) {
                obs.note_request(id, sim.now());
                sim.command(&id, obs, |c, now, out| c.request(now, out))?;
            }
        }
    }
    Ok(())
}

/// Checks leader election: at most one leader per term, everyone who knows a
/// leader for a term agrees, and each node's term never goes back (across
/// restarts too).
#[derive(Debug, Default)]
pub struct ElectionObserver {
    leaders: BTreeMap<u64, u32>,
    /// Per (node, life): the term its running core was last seen in.
    last_term: BTreeMap<(u32, u64), u64>,
    /// Per node: the term on its disk when last seen.
    durable_term: BTreeMap<u32, u64>,
    /// Leader changes reported.
    pub changes: u64,
}

impl ElectionObserver {
    /// Every (term, leader) pair seen so far.
    pub fn leaders(&self) -> &BTreeMap<u64, u32> {
        &self.leaders
    }
}

impl<P> Observer<P> for ElectionObserver
where
    P: SimProtocol<Id = u32, Event = ElectionEvent<u32>>
        + ElectionCore
        + SnapshotCore<State = ElectionDurable<u32>>,
{
    fn on_event(
        &mut self,
        _now: Duration,
        node: &u32,
        event: &ElectionEvent<u32>,
    ) -> Result<(), String> {
        let ElectionEvent::LeaderChanged { term, leader } = event;
        self.changes += 1;
        if let Some(l) = leader {
            if let Some(prev) = self.leaders.insert(*term, *l) {
                if prev != *l {
                    return Err(format!(
                        "node {node} reports leader {l} for term {term}, already led by {prev}"
                    ));
                }
            }
        }
        Ok(())
    }

    fn check(&mut self, sim: &Sim<P>) -> Result<(), String> {
        // Terms only grow: on each node's disk, in a running core during one
        // life, and a restarted core starts at least at its disk's term. (A
        // term adopted but lost in a crash before it was synced was never
        // seen outside the node: its messages and events wait for the sync.)
        for id in sim.members() {
            let disk = sim
                .disk(&id)
                .map(super::recover_state::<P>)
                .unwrap_or_default()
                .map_or(0, |d| d.term);
            let last = self.durable_term.entry(id).or_insert(0);
            if disk < *last {
                return Err(format!(
                    "node {id}: durable term went back from {last} to {disk}"
                ));
            }
            *last = disk;
        }
        for (id, c) in sim.cores() {
            let term = c.term();
            let durable = self.durable_term.get(id).copied().unwrap_or(0);
            if term < durable {
                return Err(format!(
                    "node {id}: term {term} behind the term {durable} on its disk"
                ));
            }
            let last = self.last_term.entry((*id, sim.life(id))).or_insert(0);
            if term < *last {
                return Err(format!("node {id}: term went back from {last} to {term}"));
            }
            *last = term;
            if let Some(l) = c.leader() {
                match self.leaders.get(&term) {
                    Some(known) if known != l => {
                        return Err(format!(
                            "node {id} follows {l} in term {term}, led by {known}"
                        ))
                    }
                    Some(_) => {}
                    None => {
                        self.leaders.insert(term, *l);
                    }
                }
            }
        }
        Ok(())
    }
}

/// Check that every running node knows the same leader, that leader runs and
/// knows it leads, and (when `highest`) that it is the highest running id.
pub fn one_leader<P>(sim: &Sim<P>, highest: bool) -> Result<(u64, u32), String>
where
    P: SimProtocol<Id = u32> + ElectionCore,
{
    let views: Vec<(u32, u64, Option<u32>)> = sim
        .cores()
        .map(|(id, c)| (*id, c.term(), c.leader().copied()))
        .collect();
    let Some(&(_, term, Some(leader))) = views.first() else {
        return Err(format!("no leader known: {views:?}"));
    };
    if views.iter().any(|v| v.1 != term || v.2 != Some(leader)) {
        return Err(format!("nodes disagree on the leader: {views:?}"));
    }
    if !sim.core(&leader).is_some_and(|c| c.is_leader()) {
        return Err(format!(
            "leader {leader} is not running or does not know it leads"
        ));
    }
    if highest {
        let top = sim.alive().into_iter().max();
        if top != Some(leader) {
            return Err(format!(
                "leader {leader} is not the highest live id {top:?}"
            ));
        }
    }
    Ok((term, leader))
}

/// Run the election scenario for one seed: chaos, then after healing exactly
/// one stable leader known by all (the highest live id when `highest`).
pub fn run_election<P>(
    seed: u64,
    sc: &Scenario,
    highest: bool,
    make: impl Fn(u32, Vec<u32>, Option<P::State>) -> P + 'static,
) -> Result<(u64, u32), String>
where
    P: SimProtocol<Id = u32, Event = ElectionEvent<u32>>
        + ElectionCore
        + SnapshotCore<State = ElectionDurable<u32>>,
{
    let members: Vec<u32> = (1..=sc.nodes).collect();
    let m2 = members.clone();
    let mut sim: Sim<P> = Sim::new(
        seed,
        members,
        Box::new(move |id, r| make(*id, m2.clone(), super::recover_state::<P>(r))),
        sc.faults,
        sc.oracle,
    );
    let mut obs = ElectionObserver::default();
    let mut chaos = sc.chaos(seed, &mut sim);
    sim.start(&mut obs)?;
    while sim.now() < sc.chaos_time {
        chaos.tick(&mut sim, &mut obs)?;
        sim.run_for(TICK, &mut obs)?;
    }
    chaos.calm(&mut sim, &mut obs)?;
    sim.set_faults(NetFaults {
        loss: 0.0,
        duplicate: 0.0,
        ..sc.faults
    });
    let deadline = sim.now() + sc.liveness_bound;
    let settle = sim.now() + sc.oracle.down_after.max(sc.oracle.up_after) * 2;
    let result = loop {
        sim.run_for(TICK * 10, &mut obs)?;
        if sim.now() >= settle {
            if let Ok(r) = one_leader(&sim, highest) {
                break r;
            }
        }
        if sim.now() > deadline {
            one_leader(&sim, highest).map_err(|e| format!("liveness after healing: {e}"))?;
        }
    };
    // Stable: nothing changes once converged.
    sim.run_for(Duration::from_secs(3), &mut obs)?;
    let again = one_leader(&sim, highest).map_err(|e| format!("after convergence: {e}"))?;
    if again != result {
        return Err(format!("leadership not stable: {result:?} then {again:?}"));
    }
    Ok(result)
}
