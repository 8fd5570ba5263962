//! The atomic-commit scenario: transactions under seeded chaos with the
//! properties checked at every step, crashes aimed at every protocol step,
//! then healing. Members are `1..=n` (`u32`).
//!
//! ## What is checked
//! On every `Decided` event (a decision is reported once durable), and after
//! every step (every delivered message, timer, membership report, command,
//! crash and restart) on every running core's status of every open
//! transaction (which must agree with every reported decision):
//! * **AC1** every decision on a transaction equals the first one made;
//! * **AC2** a node's decision never changes, across restarts too;
//! * **AC3** a commit only when every participant's resource manager voted
//!   yes;
//! * **forgetting** ([`CommitCore::forgot`]): a node that forgot a
//!   committed transaction does so only once no running node of it is
//!   still undecided (a forgotten transaction is not a reversal: its node
//!   reports no decision, and one it reports later must be the same).
//!
//! After the faults stop (crashed nodes restarted, partitions healed, a
//! reliable network): **AC5** every node that knows a transaction decides it
//! within the bound (a coordinator left with no record of it, presumed
//! abort, counts as deciding abort, which must then be the decision); then
//! **AC4** a batch of transactions with every vote yes and no failure all
//! commit.
//!
//! ## Crashes at protocol steps
//! Besides the random crashes of [`Chaos`], each transaction may get a
//! *target*: one of its nodes and a phase ([`Phase`]); the node is crashed
//! right after the step that took it to that phase (with a sync delay, the
//! writes of that step are then often lost), and restarted later. The
//! outcome counts them per role and phase so that tests can require that
//! every step was hit.

use std::collections::{BTreeMap, BTreeSet};
use std::time::Duration;

use rand::seq::SliceRandom;
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use troupe_framework::sansio::SnapshotCore;

use super::{Chaos, DiskModel, NetFaults, Observer, OracleConfig, Sim, SimProtocol};
use crate::commit::{CommitCore, CommitEvent, Decision, Phase, TxId};

/// What the checker knows of a transaction.
#[derive(Debug, Clone, Default)]
struct TxInfo {
    coordinator: u32,
    participants: Vec<u32>,
    /// Votes the resource managers gave.
    votes: BTreeMap<u32, bool>,
    /// The first decision made, by whom.
    decided: Option<(Decision, u32)>,
}

/// Checks AC1–AC3 at every step (see the module docs).
#[derive(Debug, Clone, Default)]
pub struct CommitObserver {
    txs: BTreeMap<TxId, TxInfo>,
    /// Per (node, tx): its decision.
    by_node: BTreeMap<(u32, TxId), Decision>,
    /// Transactions whose status is still checked at every step.
    open: BTreeSet<TxId>,
    /// `Prepare` events not yet answered: (node, tx).
    prepares: Vec<(u32, TxId)>,
    /// Decisions checked (events and core states).
    pub checked: u64,
}

impl CommitObserver {
    /// The checker as it is with every member `m` called `r.to(m)` (the
    /// participant lists kept sorted), for the model checker's symmetry
    /// reduction.
    pub fn renamed(&self, r: &super::model::Renaming<'_, u32>) -> Self {
        let m = |id: &u32| r.id(id);
        let txs = self
            .txs
            .iter()
            .map(|(tx, t)| {
                let mut participants: Vec<u32> = t.participants.iter().map(m).collect();
                participants.sort();
                let t = TxInfo {
                    coordinator: m(&t.coordinator),
                    participants,
                    votes: t.votes.iter().map(|(p, v)| (m(p), *v)).collect(),
                    decided: t.decided.map(|(d, by)| (d, m(&by))),
                };
                (*tx, t)
            })
            .collect();
        Self {
            txs,
            by_node: self
                .by_node
                .iter()
                .map(|((n, tx), d)| ((m(n), *tx), *d))
                .collect(),
            open: self.open.clone(),
            prepares: self.prepares.iter().map(|(n, tx)| (m(n), *tx)).collect(),
            checked: self.checked,
        }
    }

    /// Register a transaction begun at `coordinator`.
    pub fn begun(&mut self, tx: TxId, coordinator: u32, participants: Vec<u32>) {
        self.txs.insert(
            tx,
            TxInfo {
                coordinator,
                participants,
                ..TxInfo::default()
            },
        );
        self.open.insert(tx);
    }

    /// `node`'s resource manager voted `yes` on `tx`.
    pub fn voted(&mut self, node: u32, tx: TxId, yes: bool) {
        if let Some(t) = self.txs.get_mut(&tx) {
            t.votes.insert(node, yes);
        }
    }

    /// The `Prepare` requests not yet answered.
    pub fn take_prepares(&mut self) -> Vec<(u32, TxId)> {
        std::mem::take(&mut self.prepares)
    }

    /// The decision of `tx`, if made.
    pub fn decision(&self, tx: TxId) -> Option<Decision> {
        self.txs.get(&tx).and_then(|t| t.decided.map(|d| d.0))
    }

    fn saw(&mut self, node: u32, tx: TxId, d: Decision) -> Result<(), String> {
        self.checked += 1;
        let t = self.txs.entry(tx).or_default();
        match t.decided {
            Some((first, by)) if first != d => {
                return Err(format!(
                    "AC1: node {node} decided {d:?} on tx {tx}, node {by} decided {first:?}"
                ))
            }
            Some(_) => {}
            None => t.decided = Some((d, node)),
        }
        if d == Decision::Commit {
            if let Some(p) = t
                .participants
                .iter()
                .find(|p| t.votes.get(p) != Some(&true))
            {
                return Err(format!(
                    "AC3: tx {tx} committed (at node {node}) but participant {p} voted {:?}",
                    t.votes.get(p)
                ));
            }
        }
        if let Some(prev) = self.by_node.insert((node, tx), d) {
            if prev != d {
                return Err(format!(
                    "AC2: node {node} reversed its decision on tx {tx}: {prev:?} then {d:?}"
                ));
            }
        }
        Ok(())
    }

    /// Stop checking the status of transactions every node decided (or
    /// decided and forgot).
    pub fn close_decided<P: CommitCore<Id = u32> + SimProtocol>(&mut self, sim: &Sim<P>) {
        let txs = &self.txs;
        self.open.retain(|tx| {
            let Some(t) = txs.get(tx) else { return false };
            let all = std::iter::once(&t.coordinator).chain(&t.participants);
            !all.clone().all(|n| {
                sim.core(n)
                    .is_some_and(|c| c.decision(*tx).is_some() || c.forgot(&t.coordinator, *tx))
            })
        });
    }
}

impl<P> Observer<P> for CommitObserver
where
    P: SimProtocol<Id = u32, Event = CommitEvent> + CommitCore,
{
    fn on_event(&mut self, _now: Duration, node: &u32, event: &CommitEvent) -> Result<(), String> {
        match event {
            CommitEvent::Prepare { tx } => self.prepares.push((*node, *tx)),
            CommitEvent::Decided { tx, decision } => self.saw(*node, *tx, *decision)?,
        }
        Ok(())
    }

    fn check(&mut self, sim: &Sim<P>) -> Result<(), String> {
        // The cheap pending set the family view is built from is exactly
        // the undecided transactions.
        for (id, c) in sim.cores() {
            let undecided: std::collections::BTreeSet<TxId> = c
                .transactions()
                .into_iter()
                .filter(|(_, s)| !matches!(s.phase, crate::commit::Phase::Decided(_)))
                .map(|(tx, _)| tx)
                .collect();
            if c.pending() != undecided {
                return Err(format!(
                    "node {id}: pending() {:?} is not its undecided transactions {undecided:?}",
                    c.pending()
                ));
            }
        }
        // A core's state may hold a decision not yet durable (its event
        // waits for the sync, and a crash may still lose it): it must agree
        // with every reported decision, but only reported ones count.
        for tx in &self.open {
            self.check_forgotten(sim, *tx)?;
            for (id, c) in sim.cores() {
                let Some(d) = c.decision(*tx) else { continue };
                self.checked += 1;
                if let Some((first, by)) = self.txs.get(tx).and_then(|t| t.decided) {
                    if first != d {
                        return Err(format!(
                            "AC1: node {id} holds {d:?} on tx {tx}, node {by} decided {first:?}"
                        ));
                    }
                }
                if let Some(prev) = self.by_node.get(&(*id, *tx)) {
                    if *prev != d {
                        return Err(format!(
                            "AC2: node {id} reversed its decision on tx {tx}: {prev:?} then {d:?}"
                        ));
                    }
                }
            }
        }
        Ok(())
    }
}

impl CommitObserver {
    /// A running node of committed `tx` that forgot it does so only once
    /// no running node of `tx` is undecided (a coordinator with no record
    /// would answer *abort*; a participant, nothing).
    fn check_forgotten<P>(&self, sim: &Sim<P>, tx: TxId) -> Result<(), String>
    where
        P: SimProtocol<Id = u32, Event = CommitEvent> + CommitCore,
    {
        let Some(t) = self.txs.get(&tx) else {
            return Ok(());
        };
        if t.decided.map(|d| d.0) != Some(Decision::Commit) {
            return Ok(());
        }
        let all = || std::iter::once(&t.coordinator).chain(&t.participants);
        let forgetter = all().find(|n| {
            sim.core(n)
                .is_some_and(|c| c.status(tx).is_none() && c.forgot(&t.coordinator, tx))
        });
        let Some(f) = forgetter else {
            return Ok(());
        };
        for n in all() {
            let phase = sim.core(n).and_then(|c| c.status(tx)).map(|s| s.phase);
            if phase.is_some_and(|p| !matches!(p, Phase::Decided(_))) {
                return Err(format!(
                    "node {f} forgot committed tx {tx} while node {n} is still {phase:?}"
                ));
            }
        }
        Ok(())
    }
}

/// How the commit scenario is run.
#[derive(Debug, Clone)]
pub struct CommitScenario {
    /// Group size (members are `1..=nodes`).
    pub nodes: u32,
    /// Length of the chaos phase.
    pub chaos_time: Duration,
    /// Network faults during the chaos phase.
    pub faults: NetFaults,
    /// Random crash probability per 10 ms tick.
    pub crash_prob: f64,
    /// Partition probability per tick (0: none).
    pub partition_prob: f64,
    /// Probability per tick that a new transaction begins.
    pub begin_prob: f64,
    /// Probability that a resource manager votes yes.
    pub yes_prob: f64,
    /// Probability that a transaction gets a crash target.
    pub target_prob: f64,
    /// Phases a target may be aimed at (coordinator: `Collecting`,
    /// `PreCommitting`, `Decided`; participant: `Ready`, `PreCommitted`,
    /// `Decided`).
    pub coordinator_targets: Vec<Phase>,
    /// See `coordinator_targets`.
    pub participant_targets: Vec<Phase>,
    /// Failure-detector delays.
    pub oracle: OracleConfig,
    /// Disk sync delays (a crash loses what is not synced).
    pub disk: DiskModel,
    /// Time allowed for deciding everything after the faults stop.
    pub liveness_bound: Duration,
}

impl CommitScenario {
    /// Defaults for an `n`-member group, 2PC targets.
    pub fn chaotic(nodes: u32) -> Self {
        Self {
            nodes,
            chaos_time: Duration::from_secs(6),
            faults: NetFaults::chaotic(),
            crash_prob: 0.01,
            partition_prob: 0.004,
            begin_prob: 0.05,
            yes_prob: 0.85,
            target_prob: 0.5,
            coordinator_targets: vec![Phase::Collecting, Phase::Decided(Decision::Commit)],
            participant_targets: vec![Phase::Ready, Phase::Decided(Decision::Commit)],
            oracle: OracleConfig::default(),
            disk: DiskModel::syncing(Duration::from_micros(500), Duration::from_millis(5)),
            liveness_bound: Duration::from_secs(30),
        }
    }
    /// The same with the 3PC phases among the targets, and no partitions.
    pub fn three_phase(nodes: u32) -> Self {
        let mut sc = Self::chaotic(nodes);
        sc.partition_prob = 0.0;
        sc.coordinator_targets.push(Phase::PreCommitting);
        sc.participant_targets.push(Phase::PreCommitted);
        sc
    }
}

/// What a commit scenario saw.
#[derive(Debug, Clone, Default)]
pub struct CommitOutcome {
    /// Transactions begun.
    pub begun: u64,
    /// Transactions committed / aborted.
    pub commits: u64,
    /// See `commits`.
    pub aborts: u64,
    /// Decisions checked against AC1–AC3.
    pub checked: u64,
    /// Targeted crashes, per "role phase".
    pub step_crashes: BTreeMap<String, u64>,
    /// Random crashes and partitions are not counted here.
    pub ac4_commits: u64,
    /// Messages sent, by kind ([`SimProtocol::msg_kind`]).
    pub sent: BTreeMap<&'static str, u64>,
    /// Transactions forgotten and log compactions, summed over the
    /// running nodes' current lives at the end.
    pub forgotten: u64,
    /// See `forgotten`.
    pub compactions: u64,
}

const TICK: Duration = Duration::from_millis(10);

struct Target {
    tx: TxId,
    node: u32,
    phase: Phase,
    coordinator: bool,
}

/// Match a target phase: `Decided(_)` targets any decision.
fn phase_hits(target: Phase, now: Phase) -> bool {
    match (target, now) {
        (Phase::Decided(_), Phase::Decided(_)) => true,
        (a, b) => a == b,
    }
}

fn label(coordinator: bool, phase: Phase) -> String {
    let role = if coordinator {
        "coordinator"
    } else {
        "participant"
    };
    let p = match phase {
        Phase::Decided(_) => "Decided".to_string(),
        p => format!("{p:?}"),
    };
    format!("{role} {p}")
}

/// Run the commit scenario for one seed (see the module docs).
pub fn run_commit<P>(
    seed: u64,
    sc: &CommitScenario,
    make: impl Fn(u32, Vec<u32>, Option<P::State>) -> P + 'static,
) -> Result<CommitOutcome, String>
where
    P: SimProtocol<Id = u32, Event = CommitEvent> + CommitCore + SnapshotCore,
{
    let members: Vec<u32> = (1..=sc.nodes).collect();
    let mut sim: Sim<P> = super::snapshot_sim(seed, sc.nodes, sc.faults, sc.oracle, make);
    sim.set_disk(sc.disk);
    let mut chaos = Chaos::new(seed);
    chaos.crash_prob = sc.crash_prob;
    chaos.partition_prob = sc.partition_prob;
    chaos.max_crashed = 1;
    let mut rng = ChaCha8Rng::seed_from_u64(seed.wrapping_mul(7919).wrapping_add(3));
    let mut obs = CommitObserver::default();
    let mut out = CommitOutcome::default();
    let mut targets: Vec<Target> = Vec::new();
    let mut down: BTreeMap<u32, Duration> = BTreeMap::new();
    let mut next_tx: TxId = 1;
    let mut all_yes = false;
    let mut applied = BTreeSet::new();
    sim.start(&mut obs)?;

    let mut next_tick = Duration::ZERO;
    let chaos_end = sc.chaos_time;
    let mut calm = false;
    let mut deadline = Duration::MAX;
    let mut settle = Duration::MAX;
    let mut ac4: Vec<TxId> = Vec::new();
    loop {
        // One event at a time, but never past the next tick.
        if sim.next_event_at().is_some_and(|t| t <= next_tick) {
            sim.step(&mut obs)?;
        } else {
            sim.run_until(next_tick, &mut obs)?;
        }
        // Crash targets hit by that step.
        let mut hit = None;
        for (i, t) in targets.iter().enumerate() {
            let phase = sim
                .core(&t.node)
                .and_then(|c| c.status(t.tx))
                .map(|s| s.phase);
            if phase.is_some_and(|p| phase_hits(t.phase, p)) {
                hit = Some(i);
                break;
            }
        }
        if let Some(i) = hit {
            let t = targets.swap_remove(i);
            if down.is_empty() && !calm {
                *out.step_crashes
                    .entry(label(t.coordinator, t.phase))
                    .or_insert(0) += 1;
                let back = sim.now() + Duration::from_millis(rng.gen_range(50..1200));
                down.insert(t.node, back);
                sim.crash(&t.node, &mut obs)?;
            }
        }
        // The resource managers answer.
        for (node, tx) in obs.take_prepares() {
            let waiting = sim
                .core(&node)
                .and_then(|c| c.status(tx))
                .is_some_and(|s| s.phase == Phase::Voting);
            if !waiting {
                continue;
            }
            // One vote per (tx, node), whatever the node's life.
            let mut vr = ChaCha8Rng::seed_from_u64(seed ^ (tx << 8) ^ u64::from(node));
            let yes = all_yes || ac4.contains(&tx) || vr.gen_bool(sc.yes_prob);
            obs.voted(node, tx, yes);
            sim.command(&node, &mut obs, |c, now, o| c.vote(tx, yes, now, o))?;
        }
        if sim.now() < next_tick {
            continue;
        }
        next_tick = sim.now() + TICK;
        let now = sim.now();
        let due: Vec<u32> = down
            .iter()
            .filter(|(_, t)| **t <= now)
            .map(|(n, _)| *n)
            .collect();
        for n in due {
            down.remove(&n);
            sim.restart(&n, &mut obs)?;
        }
        apply_decisions(&mut sim, &mut obs, &mut applied)?;
        obs.close_decided(&sim);
        if !calm {
            chaos.tick(&mut sim, &mut obs)?;
            if rng.gen_bool(sc.begin_prob) {
                let alive = sim.alive();
                if let Some(&c) = alive.choose(&mut rng) {
                    let mut others: Vec<u32> =
                        members.iter().copied().filter(|m| *m != c).collect();
                    others.shuffle(&mut rng);
                    let k = rng.gen_range(1..=others.len());
                    others.truncate(k);
                    others.sort();
                    let tx = next_tx;
                    next_tx += 1;
                    obs.begun(tx, c, others.clone());
                    out.begun += 1;
                    if rng.gen_bool(sc.target_prob) {
                        let coordinator = rng.gen_bool(0.4);
                        let (node, list) = if coordinator {
                            (c, &sc.coordinator_targets)
                        } else {
                            (
                                others[rng.gen_range(0..others.len())],
                                &sc.participant_targets,
                            )
                        };
                        if let Some(&phase) = list.choose(&mut rng) {
                            targets.push(Target {
                                tx,
                                node,
                                phase,
                                coordinator,
                            });
                        }
                    }
                    sim.command(&c, &mut obs, |core, now, o| core.begin(tx, others, now, o))?;
                }
            }
            if now >= chaos_end {
                // Healing: every fault stops.
                calm = true;
                targets.clear();
                chaos.calm(&mut sim, &mut obs)?;
                for n in std::mem::take(&mut down).into_keys() {
                    sim.restart(&n, &mut obs)?;
                }
                sim.set_faults(NetFaults::reliable(sc.faults.max_delay / 2));
                deadline = now + sc.liveness_bound;
                settle = now + sc.oracle.down_after.max(sc.oracle.up_after) * 2;
            }
            continue;
        }
        // AC5: every node that knows a transaction decides it.
        let undecided = undecided(&sim, &obs)?;
        if ac4.is_empty() {
            // "No failures" includes a settled failure detector: no report
            // of a restart or a healed partition is still on its way.
            let settled = now >= settle && sim.fd_clean_since().is_some();
            if undecided.is_empty() && settled {
                // AC4: all yes, no failures: commit.
                all_yes = true;
                let alive = sim.alive();
                for c in alive.iter().take(3) {
                    let others: Vec<u32> = alive.iter().copied().filter(|m| m != c).collect();
                    let tx = next_tx;
                    next_tx += 1;
                    obs.begun(tx, *c, others.clone());
                    ac4.push(tx);
                    sim.command(c, &mut obs, |core, now, o| core.begin(tx, others, now, o))?;
                }
                deadline = now + sc.liveness_bound;
            } else if now > deadline {
                return Err(format!("AC5: undecided after healing: {undecided:?}"));
            }
            continue;
        }
        if undecided.is_empty() {
            for tx in &ac4 {
                if obs.decision(*tx) != Some(Decision::Commit) {
                    return Err(format!(
                        "AC4: tx {tx} (all yes, no failure) decided {:?}",
                        obs.decision(*tx)
                    ));
                }
                out.ac4_commits += 1;
            }
            break;
        }
        if now > deadline {
            return Err(format!(
                "AC4/AC5: undecided without failures: {undecided:?}"
            ));
        }
    }
    for t in obs.txs.values() {
        match t.decided {
            Some((Decision::Commit, _)) => out.commits += 1,
            Some((Decision::Abort, _)) => out.aborts += 1,
            None => {}
        }
    }
    out.checked = obs.checked;
    out.sent = sim.sent_counts().clone();
    for (_, c) in sim.cores() {
        out.forgotten += c.log_stats().forgotten;
        out.compactions += c.log_stats().compactions;
    }
    Ok(out)
}

/// The local users: every running node applies the decisions it holds
/// (participants' resource managers, coordinators' applications), once per
/// life (`done` remembers (node, life, tx)).
pub fn apply_decisions<P>(
    sim: &mut Sim<P>,
    obs: &mut impl Observer<P>,
    done: &mut BTreeSet<(u32, u64, TxId)>,
) -> Result<(), String>
where
    P: SimProtocol<Id = u32, Event = CommitEvent> + CommitCore,
{
    for n in sim.alive() {
        let life = sim.life(&n);
        let Some(c) = sim.core(&n) else { continue };
        let decided: Vec<TxId> = c
            .transactions()
            .into_iter()
            .filter(|(tx, s)| {
                matches!(s.phase, Phase::Decided(_)) && !done.contains(&(n, life, *tx))
            })
            .map(|(tx, _)| tx)
            .collect();
        for tx in decided {
            done.insert((n, life, tx));
            sim.command(&n, obs, |c, now, o| c.applied(tx, now, o))?;
        }
    }
    Ok(())
}

/// The (node, tx) pairs where a node knows `tx` and has not decided it; a
/// coordinator that has no record of its transaction (presumed abort)
/// counts as deciding abort, and must agree with the decision (else an AC1
/// error).
fn undecided<P>(sim: &Sim<P>, obs: &CommitObserver) -> Result<Vec<(u32, TxId)>, String>
where
    P: SimProtocol<Id = u32, Event = CommitEvent> + CommitCore,
{
    let mut stuck = Vec::new();
    for (tx, t) in &obs.txs {
        for n in std::iter::once(&t.coordinator).chain(&t.participants) {
            let Some(c) = sim.core(n) else {
                stuck.push((*n, *tx));
                continue;
            };
            match c.status(*tx) {
                Some(s) if !matches!(s.phase, Phase::Decided(_)) => stuck.push((*n, *tx)),
                None if *n == t.coordinator
                    && t.decided.is_some_and(|d| d.0 == Decision::Commit) =>
                {
                    // It may forget the commit once every participant
                    // holds it (acknowledged, or forgot it in turn).
                    for p in &t.participants {
                        match sim.core(p) {
                            None => stuck.push((*p, *tx)),
                            Some(pc)
                                if pc.decision(*tx) == Some(Decision::Commit)
                                    || pc.forgot(n, *tx) => {}
                            Some(_) => {
                                return Err(format!(
                                    "AC1: coordinator {n} has no record of committed tx {tx} (it would answer abort) while participant {p} does not hold the commit"
                                ));
                            }
                        }
                    }
                }
                _ => {}
            }
        }
    }
    Ok(stuck)
}
