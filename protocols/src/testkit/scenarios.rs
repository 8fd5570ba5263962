//! Ready-made property scenarios for mutex and election cores: a safety phase
//! under chaos with invariants checked after every step, then a liveness
//! phase with the faults removed. Used by the integration tests and the cost
//! benchmark; members are `1..=n` (`u32`).
//!
//! ## What the mutex scenario checks
//! The guarantees as the [`crate::mutex`] module states them, per
//! algorithm's [`Exposure`], after every step of every phase (none is
//! switched off during chaos), by [`MutexObserver`]:
//! * mutual exclusion: two simultaneous holders must expose each other —
//!   one falsely suspected the other between its request and its grant
//!   (Ricart–Agrawala, Lamport), a false suspicion anywhere between one's
//!   request and its grant (centralized) or while one's token generation
//!   was created (token ring);
//! * fencing: a grant's token is larger than every earlier grant's, except
//!   an earlier grant whose holder crashed since or that exposes it as
//!   above; the fenced resource (accepts a token only if larger than every
//!   token it accepted) counts its refusals, each one such an exception;
//! * a node's own tokens grow, across restarts;
//! * token ring: never two holders of tokens of the same generation.
//!
//! Coverage: grants not exposed themselves are counted (for Ricart–Agrawala
//! and Lamport that is: their node suspected nobody between request and
//! grant, so only a grant whose node falsely suspected theirs can excuse
//! them); a run fails unless the chaos phase made at least
//! [`Scenario::min_checked`] of them.
//!
//! Liveness, after the faults stop (crashed members restarted, partitions
//! healed, fixed-delay reliable network): every pending request is granted
//! within the bound; then under constant contention every member is served,
//! no member waits for more than N-1 grants to others, and grants follow
//! `(Lamport time, id)` order where the algorithm defines one, and the
//! resource refuses no token.
//!
//! ## What the election scenario checks
//! * After every step: at most one leader per term (over every report ever
//!   made), every member that knows a leader for a term agrees, and no
//!   member's term ever decreases, across restarts too.
//! * After healing: exactly one leader, known to every running member and
//!   knowing it leads, the highest running id for bully and ring, unchanged
//!   three seconds later.

use std::collections::{BTreeMap, BTreeSet};
use std::time::Duration;

use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;

use troupe_framework::sansio::SnapshotCore;

use super::{Chaos, DiskModel, NetFaults, Observer, OracleConfig, Sim, SimProtocol};
use crate::election::{ElectionCore, ElectionDurable, ElectionEvent};
use crate::mutex::{Exposure, MutexCore, MutexEvent};

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
    /// Mutex: the fewest grants of the chaos phase that must have been made
    /// without exposure to a false suspicion (checked with no exception),
    /// or the run fails for lack of coverage.
    pub min_checked: u64,
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
            min_checked: 1,
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

/// One grant, as the observer saw it.
#[derive(Debug, Clone)]
struct Grant {
    node: u32,
    life: u64,
    token: u64,
    at: Duration,
    /// Its request (as noted by [`MutexObserver::note_request`]).
    since: Duration,
    /// [`Exposure::Group`]: some member falsely suspected another between
    /// the request and the grant; [`Exposure::Generation`]: while its
    /// token's generation was created.
    unclean: bool,
    /// [`Exposure::Holders`]: the members this node falsely suspected in
    /// the window.
    suspected: BTreeSet<u32>,
    /// Its holder has crashed since.
    crashed: bool,
}

impl Grant {
    /// Exposed to some false suspicion: the guarantees may make exceptions
    /// for it.
    fn exposed(&self, scope: Exposure) -> bool {
        match scope {
            Exposure::Holders => !self.suspected.is_empty(),
            Exposure::Group | Exposure::Generation => self.unclean,
        }
    }

    /// `self` and `other` expose each other (see [`crate::mutex`]).
    fn excuses(&self, other: &Grant, scope: Exposure) -> bool {
        match scope {
            Exposure::Holders => {
                self.suspected.contains(&other.node) || other.suspected.contains(&self.node)
            }
            Exposure::Group | Exposure::Generation => self.unclean || other.unclean,
        }
    }

    fn describe(&self, scope: Exposure) -> String {
        let exposure = match scope {
            Exposure::Holders if self.suspected.is_empty() => "suspected nobody".to_string(),
            Exposure::Holders => format!("falsely suspected {:?}", self.suspected),
            Exposure::Group | Exposure::Generation if self.unclean => "exposed".to_string(),
            Exposure::Group | Exposure::Generation => "accurate detector".to_string(),
        };
        format!(
            "node {} token {} (requested {:?}, granted {:?}, {exposure}{})",
            self.node,
            self.token,
            self.since,
            self.at,
            if self.crashed { ", crashed since" } else { "" }
        )
    }
}

/// Checks the mutex guarantees as [`crate::mutex`] states them, after
/// every step and with no phase switched off: two simultaneous holders
/// must expose each other, a grant's token must be larger than every
/// earlier grant's unless that grant's holder crashed since or the two
/// expose each other, a node's own tokens grow, and (token ring) no two
/// holders share a generation. It counts the grants made without any
/// exposure — those for which no exception applied — so that a run can
/// require a minimum ([`Scenario::min_checked`]).
#[derive(Debug, Clone, Default)]
pub struct MutexObserver {
    requested_at: BTreeMap<u32, Duration>,
    pending: Vec<(u32, u64)>,
    scope: Option<Exposure>,
    grants_seen: Vec<Grant>,
    /// Grant indices by token.
    by_token: BTreeMap<u64, Vec<usize>>,
    /// Per node: the index of its latest grant.
    current: BTreeMap<u32, usize>,
    /// Per node: its grants whose holder has not crashed since.
    uncrashed: BTreeMap<u32, Vec<usize>>,
    /// Per node: its life when last seen running (`None`: crashed).
    running: BTreeMap<u32, Option<u64>>,
    members: Vec<u32>,
    /// Largest token the resource accepted.
    pub resource_token: u64,
    /// Grants the resource accepted.
    pub accepted: u64,
    /// Grants the resource refused (each one an allowed exception).
    pub refused: u64,
    /// When true, a refused token is an error even when an exception allows
    /// it (no faults left, every member heard from: the contention phase).
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
    /// Grants made without any exposure to a false suspicion.
    pub checked: u64,
    /// True during a chaos phase: grants are counted in `chaos_grants` and
    /// `chaos_checked` too.
    pub chaos: bool,
    /// Grants seen during the chaos phase.
    pub chaos_grants: u64,
    /// Grants without exposure during the chaos phase.
    pub chaos_checked: u64,
    /// Steps at which two or more nodes held the lock (all excused).
    pub overlaps: u64,
    /// When each token generation was first known to any node (when its
    /// regeneration started).
    epoch_born: BTreeMap<u64, Duration>,
    /// Per token generation: whether a false suspicion happened between its
    /// birth and its first grant.
    epoch_exposed: BTreeMap<u64, bool>,
}

impl MutexObserver {
    /// Note that `node` requested the lock at `now` (the start of its grant's
    /// window; without it the window starts at time zero).
    pub fn note_request(&mut self, node: u32, now: Duration) {
        self.requested_at.insert(node, now);
        self.overtaken.insert(node, 0);
    }

    fn grant<P>(
        &mut self,
        sim: &Sim<P>,
        scope: Exposure,
        node: u32,
        token: u64,
    ) -> Result<(), String>
    where
        P: SimProtocol<Id = u32, Event = MutexEvent> + MutexCore,
    {
        let n = sim.members().len() as u64;
        self.grants += 1;
        let req = self
            .requested_at
            .get(&node)
            .copied()
            .unwrap_or(Duration::ZERO);
        let since = req;
        let clean_since = |t: Duration| sim.fd_clean_since().is_some_and(|c| c <= t);
        let unclean = match (scope, sim.core(&node).and_then(|c| c.held_epoch())) {
            // A generation regenerated without some member it believed down
            // may coexist with an older token until the two meet: exposed
            // when a false suspicion happened while it was created.
            (Exposure::Generation, Some(e)) => {
                let born = self.epoch_born.get(&e).copied().unwrap_or(Duration::ZERO);
                *self
                    .epoch_exposed
                    .entry(e)
                    .or_insert_with(|| !clean_since(born))
            }
            _ => !clean_since(since),
        };
        let g = Grant {
            node,
            life: sim.life(&node),
            token,
            at: sim.now(),
            since,
            unclean,
            suspected: sim
                .members()
                .into_iter()
                .filter(|m| {
                    *m != node
                        && sim
                            .last_false_suspicion(&node, m)
                            .is_some_and(|t| t >= since)
                })
                .collect(),
            crashed: false,
        };
        // 3. A node's own tokens grow, across restarts too.
        if let Some(&i) = self.current.get(&node) {
            let prev = &self.grants_seen[i];
            if token <= prev.token {
                return Err(format!(
                    "node {node} granted token {token} after its own earlier grant {}",
                    prev.describe(scope)
                ));
            }
        }
        // 2. Larger than every earlier grant's token, but for the exceptions.
        for i in self.by_token.range(token..).flat_map(|(_, v)| v) {
            let e = &self.grants_seen[*i];
            if !e.crashed && !e.excuses(&g, scope) {
                return Err(format!(
                    "fencing: {} is not above the earlier {}, whose holder has not crashed since and which does not expose it",
                    g.describe(scope),
                    e.describe(scope)
                ));
            }
        }
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
        let exposed = g.exposed(scope);
        if !exposed {
            self.checked += 1;
        }
        if self.chaos {
            self.chaos_grants += 1;
            if !exposed {
                self.chaos_checked += 1;
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
        let idx = self.grants_seen.len();
        self.grants_seen.push(g);
        self.by_token.entry(token).or_default().push(idx);
        self.current.insert(node, idx);
        self.uncrashed.entry(node).or_default().push(idx);
        Ok(())
    }
}

impl<P: SimProtocol<Id = u32, Event = MutexEvent> + MutexCore> Observer<P> for MutexObserver {
    fn on_event(&mut self, _now: Duration, node: &u32, event: &MutexEvent) -> Result<(), String> {
        if let MutexEvent::Granted { fencing_token, .. } = event {
            self.pending.push((*node, *fencing_token));
        }
        Ok(())
    }

    fn check(&mut self, sim: &Sim<P>) -> Result<(), String> {
        let scope = match self.scope {
            Some(s) => s,
            None => match sim.cores().next() {
                Some((_, c)) => {
                    self.members = sim.members();
                    *self.scope.insert(c.exposure())
                }
                None => return Ok(()),
            },
        };
        let generations = scope == Exposure::Generation;
        if generations {
            for (_, c) in sim.cores() {
                if let Some(e) = c.epoch() {
                    self.epoch_born.entry(e).or_insert(sim.now());
                }
            }
        }
        for (node, token) in std::mem::take(&mut self.pending) {
            self.grant(sim, scope, node, token)?;
        }
        // Crashes: the tokens of a crashed holder's grants may die with it.
        for &id in &self.members {
            let now = sim.is_alive(&id).then(|| sim.life(&id));
            let before = self.running.insert(id, now);
            if before.is_some_and(|b| b.is_some() && b != now) {
                for i in self.uncrashed.remove(&id).unwrap_or_default() {
                    self.grants_seen[i].crashed = true;
                }
            }
        }
        // 1. Simultaneous holders expose each other. A holder is a node
        // whose grant was reported and that has not released it.
        if sim.cores().filter(|(_, c)| c.holding().is_some()).count() < 2 {
            return Ok(());
        }
        let holders: Vec<&Grant> = sim
            .cores()
            .filter_map(|(id, c)| {
                let t = c.holding()?;
                let g = &self.grants_seen[*self.current.get(id)?];
                (g.token == t && g.life == sim.life(id)).then_some(g)
            })
            .collect();
        if holders.len() > 1 {
            self.overlaps += 1;
        }
        for (i, a) in holders.iter().enumerate() {
            for b in &holders[i + 1..] {
                if !a.excuses(b, scope) {
                    return Err(format!(
                        "two holders at once: {} and {}",
                        a.describe(scope),
                        b.describe(scope)
                    ));
                }
            }
        }
        // 4. Never two holders with tokens of the same generation, whatever
        // the network and the detector do.
        if !generations {
            return Ok(());
        }
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
    /// Grants during the chaos phase.
    pub chaos_grants: u64,
    /// Grants during the chaos phase made without exposure to a false
    /// suspicion: checked with no exception allowed.
    pub chaos_checked: u64,
    /// Grants the resource refused (allowed exceptions: exposed grants, or
    /// tokens that died with a crashed holder).
    pub refused: u64,
    /// Steps at which two nodes held the lock (allowed exceptions: grants
    /// that expose each other).
    pub overlaps: u64,
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
    let mut sim: Sim<P> = super::snapshot_sim(seed, sc.nodes, sc.faults, sc.oracle, make);
    let mut obs = MutexObserver::default();
    let mut rng = ChaCha8Rng::seed_from_u64(seed.wrapping_mul(31).wrapping_add(7));
    let mut chaos = sc.chaos(seed, &mut sim);
    sim.start(&mut obs)?;
    let mut held_since: BTreeMap<u32, Duration> = BTreeMap::new();

    // Safety phase.
    obs.chaos = true;
    let end = sc.chaos_time;
    while sim.now() < end {
        chaos.tick(&mut sim, &mut obs)?;
        workload(&mut sim, &mut obs, &mut rng, &mut held_since, sc, true)?;
        sim.run_for(TICK, &mut obs)?;
    }
    obs.chaos = false;
    if obs.chaos_checked < sc.min_checked {
        return Err(format!(
            "coverage: only {} of the {} grants under chaos were made without exposure to a false suspicion (at least {} required)",
            obs.chaos_checked, obs.chaos_grants, sc.min_checked
        ));
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
        chaos_grants: obs.chaos_grants,
        chaos_checked: obs.chaos_checked,
        refused: obs.refused,
        overlaps: obs.overlaps,
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
#[derive(Debug, Clone, Default)]
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
    let mut sim: Sim<P> = super::snapshot_sim(seed, sc.nodes, sc.faults, sc.oracle, make);
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
