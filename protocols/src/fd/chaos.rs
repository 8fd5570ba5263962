//! Seeded chaos for the failure detectors, with their properties checked at
//! every simulated step.
//!
//! [`run`] builds a cluster of one detector kind on the detector simulator
//! ([`super::sim::Sim`]) and drives it through a seeded schedule that
//! alternates *calm* episodes (loss 0 % or 5 %, nothing else) with *fault*
//! episodes (one to three of: a crash, the restart of a crashed node as a
//! new incarnation, a pause of up to 20 s, a partition, 10-30 % loss), then
//! heals everything (loss 0, no partition, every node running but at most
//! one that stays crashed) and lets the cluster settle. After every event
//! the simulator processes it checks:
//!
//! - **Completeness** (every kind): a node that crashed and was not
//!   restarted is `Down` at every running observer once [`Bounds::detect`]
//!   has passed since the later of the crash, the observer's start and the
//!   end of the observer's last pause (a paused detector decides nothing).
//!   The bound comes from the detector's parameters: heartbeat's module
//!   states `interval + acceptable_pause + grace + check_interval` from the
//!   last heartbeat, checked from the crash plus the largest network delay
//!   (the last message arrives by then); SWIM's is derived from its
//!   parameters (every member probes the dead one within `2 (N-1)` periods
//!   of at most `awareness_max_multiplier` probe intervals, then the
//!   longest suspicion timeout), checked with 5 s of slack; phi-accrual
//!   states no bound (its threshold depends on the learned distribution),
//!   and is checked against 60 s.
//! - **Accuracy**: no `Down` is reported of a node that is running with
//!   that identity when the network was calm for the [`Bounds::accuracy`]
//!   window before (loss at most 5 %, no pause, no partition): for the
//!   heartbeat detectors *calm* concerns the observer and the member only
//!   (the decision is the observer's own); for SWIM the whole cluster (a
//!   death declared by one member is believed by all).
//! - **Liveness after healing** (at the end): every running node sees every
//!   other running node `Up`, and the node left crashed `Down`.
//!
//! A run also counts what it checked ([`Report`]), so a test can assert the
//! checks were not vacuous.

use std::time::Duration;

use rand::seq::SliceRandom;
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use troupe_framework::membership::MemberStatus;

use super::config::FailureDetectorConfig;
use super::sim::{NetConfig, Sim};
use super::{AnyDetector, SimId};

/// Loss at or below which a period counts as calm.
pub const CALM_LOSS: f64 = 0.05;

/// The bounds the checks use, from the detector's parameters.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Bounds {
    /// A crashed node is `Down` at every observer within this.
    pub detect: Duration,
    /// A `Down` of a running node after this long calm is a false positive.
    pub accuracy: Duration,
    /// Whether accuracy concerns the observer and member only (heartbeat
    /// detectors) or the whole cluster (SWIM).
    pub pairwise: bool,
}

/// Longest one-way delay of [`NetConfig::default`] (1-10 ms).
const MAX_DELAY: Duration = Duration::from_millis(10);

impl Bounds {
    /// The bounds for `config` in a cluster of `n` nodes.
    pub fn of(config: &FailureDetectorConfig, n: u32) -> Self {
        match config {
            FailureDetectorConfig::Heartbeat(c) => {
                let p = c.params();
                // The module's bound, from the last message's arrival;
                // whatever the crashed node sent last arrives at most one
                // network delay after the crash, so from the crash the
                // bound is that plus the largest delay, and no more (a
                // detector one check late fails it).
                let silence = p.interval + p.acceptable_pause + p.grace + p.check_interval;
                Self {
                    detect: silence + MAX_DELAY,
                    accuracy: silence + Duration::from_secs(1),
                    pairwise: true,
                }
            }
            FailureDetectorConfig::PhiAccrual(c) => {
                let p = c.params();
                Self {
                    detect: Duration::from_secs(60),
                    // Down needs phi over the threshold for `grace`; with
                    // the smallest deviation that takes the expected
                    // interval plus the acceptable pause plus a few
                    // deviations of silence; 4 s covers 40 of the default.
                    accuracy: p.heartbeat_interval
                        + p.acceptable_heartbeat_pause
                        + p.grace
                        + Duration::from_secs(4),
                    pairwise: true,
                }
            }
            FailureDetectorConfig::Swim(c) => {
                let p = c.params();
                let log_n = f64::from(n).log10().max(1.0);
                let suspicion_max = p
                    .probe_interval
                    .mul_f64(f64::from(p.suspicion_mult * p.suspicion_max_timeout_mult) * log_n);
                let longest_period = p.probe_interval * p.awareness_max_multiplier;
                Self {
                    detect: longest_period * (2 * n.saturating_sub(1))
                        + suspicion_max
                        + Duration::from_secs(5),
                    accuracy: suspicion_max + longest_period + Duration::from_secs(5),
                    pairwise: false,
                }
            }
        }
    }
}

/// The shape of a run.
#[derive(Debug, Clone)]
pub struct Options {
    /// Nodes in the cluster.
    pub nodes: u32,
    /// How long the fault schedule runs.
    pub chaos: Duration,
    /// How long the healed cluster settles before the final check.
    pub settle: Duration,
    /// Most nodes crashed at once.
    pub max_crashed: usize,
}

impl Default for Options {
    fn default() -> Self {
        Self {
            nodes: 5,
            chaos: Duration::from_secs(300),
            settle: Duration::from_secs(90),
            max_crashed: 2,
        }
    }
}

/// What a run checked and saw.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Report {
    /// Crashes injected.
    pub crashes: u32,
    /// (observer, crashed node) pairs whose detection deadline passed and
    /// were checked `Down`.
    pub detections_checked: u32,
    /// `Down` reports of running nodes checked against a calm window
    /// (none may be found: they would be errors).
    pub downs_checked: u32,
    /// Steps at which some pair (or the cluster, for SWIM) had been calm
    /// for the whole accuracy window: when a `Down` there would have
    /// been an error.
    pub calm_steps: u64,
    /// `Down` reports of running nodes outside calm windows (allowed:
    /// pauses, partitions and heavy loss cause them).
    pub tolerated_false_downs: u32,
}

/// What the schedule did, for the checks.
#[derive(Debug, Default)]
struct Timeline {
    /// `(from, loss)`: the loss from `from` on.
    loss: Vec<(Duration, f64)>,
    /// `(node, from, until)` pauses.
    pauses: Vec<(u32, Duration, Duration)>,
    /// `(from, until, group of each node)` partitions.
    partitions: Vec<(Duration, Duration, Vec<u32>)>,
    /// Per node: when its current life started.
    started: Vec<Duration>,
    /// Per node: when it crashed, while it is down.
    crashed_at: Vec<Option<Duration>>,
}

impl Timeline {
    fn lossy_during(&self, from: Duration, to: Duration) -> bool {
        // The loss in force at `from`, and every change up to `to`.
        let mut before = 0.0;
        for (at, loss) in &self.loss {
            if *at <= from {
                before = *loss;
            } else if *at <= to && *loss > CALM_LOSS {
                return true;
            }
        }
        before > CALM_LOSS
    }

    fn paused_during(&self, node: Option<u32>, from: Duration, to: Duration) -> bool {
        self.pauses
            .iter()
            .any(|(n, a, b)| node.is_none_or(|x| x == *n) && *a <= to && *b >= from)
    }

    fn cut_during(&self, pair: Option<(u32, u32)>, from: Duration, to: Duration) -> bool {
        self.partitions.iter().any(|(a, b, groups)| {
            *a <= to
                && *b >= from
                && pair.is_none_or(|(x, y)| groups[x as usize] != groups[y as usize])
        })
    }

    /// Whether the window `[from, to]` was calm for `pair` (or everyone).
    fn calm(&self, pair: Option<(u32, u32)>, from: Duration, to: Duration) -> bool {
        !self.lossy_during(from, to)
            && !self.cut_during(pair, from, to)
            && match pair {
                Some((a, b)) => {
                    !self.paused_during(Some(a), from, to) && !self.paused_during(Some(b), from, to)
                }
                None => !self.paused_during(None, from, to),
            }
    }

    /// When `node`'s detector last started deciding: its start or the end
    /// of its last pause (`None` while it is paused).
    fn deciding_since(&self, node: u32, now: Duration) -> Option<Duration> {
        let mut since = self.started[node as usize];
        for (n, a, b) in &self.pauses {
            if *n == node && *a <= now {
                if *b > now {
                    return None;
                }
                since = since.max(*b);
            }
        }
        Some(since)
    }
}

/// The per-step checks (see the module docs).
struct Checker {
    bounds: Bounds,
    seen_events: usize,
    report: Report,
    detected: std::collections::BTreeSet<(u32, SimId)>,
}

impl Checker {
    fn check(&mut self, sim: &Sim<AnyDetector<SimId>>, tl: &Timeline) -> Result<(), String> {
        let now = sim.now();
        let n = sim.len() as u32;
        // Accuracy: every new Down of a running node.
        let events = sim.events();
        for o in &events[self.seen_events..] {
            if o.event.status != MemberStatus::Down {
                continue;
            }
            let m = o.event.member;
            if !(sim.is_running(m.node) && sim.id_of(m.node) == m) {
                continue;
            }
            let at = o.event.at;
            let from = at.saturating_sub(self.bounds.accuracy);
            let pair = self.bounds.pairwise.then_some((o.observer.node, m.node));
            self.report.downs_checked += 1;
            if from > Duration::ZERO && tl.calm(pair, from, at) {
                return Err(format!(
                    "accuracy: {:?} reported {m:?} Down at {at:?}, running, after a calm {:?} \
                     (loss <= {CALM_LOSS}, no pause, no partition)",
                    o.observer, self.bounds.accuracy
                ));
            }
            self.report.tolerated_false_downs += 1;
        }
        self.seen_events = events.len();
        // How often the accuracy check had teeth.
        let from = now.saturating_sub(self.bounds.accuracy);
        if from > Duration::ZERO {
            let calm = if self.bounds.pairwise {
                (0..n).any(|a| (0..n).any(|b| a != b && tl.calm(Some((a, b)), from, now)))
            } else {
                tl.calm(None, from, now)
            };
            if calm {
                self.report.calm_steps += 1;
            }
        }
        // Completeness: every node down and not restarted.
        for m in 0..n {
            let Some(crashed) = tl.crashed_at[m as usize] else {
                continue;
            };
            let dead = sim.id_of(m);
            for o in (0..n).filter(|o| *o != m && sim.is_running(*o)) {
                let Some(since) = tl.deciding_since(o, now) else {
                    continue;
                };
                if now < since.max(crashed) + self.bounds.detect {
                    continue;
                }
                let status = sim.status(o, dead);
                if status != Some(MemberStatus::Down) {
                    return Err(format!(
                        "completeness: node {o} sees {dead:?} (crashed at {crashed:?}) as \
                         {status:?} at {now:?}, past the bound {:?}",
                        self.bounds.detect
                    ));
                }
                if self.detected.insert((o, dead)) {
                    self.report.detections_checked += 1;
                }
            }
        }
        Ok(())
    }
}

fn detector(id: SimId, config: &FailureDetectorConfig, seed: u64) -> AnyDetector<SimId> {
    let rng = seed ^ (u64::from(id.node) << 32) ^ u64::from(id.incarnation);
    AnyDetector::from_config(id, config, vec![], rng)
        .unwrap_or_else(|e| panic!("detector config: {e}"))
}

fn pick(rng: &mut ChaCha8Rng, lo_ms: u64, hi_ms: u64) -> Duration {
    Duration::from_millis(rng.gen_range(lo_ms..=hi_ms))
}

/// Run the seeded chaos schedule on `config`'s detector and check it at
/// every step. `Err` names the property, the nodes and the time.
pub fn run(config: &FailureDetectorConfig, seed: u64, opts: &Options) -> Result<Report, String> {
    let n = opts.nodes;
    let bounds = Bounds::of(config, n);
    let mut sim = Sim::new(seed, NetConfig::default());
    let mut rng = ChaCha8Rng::seed_from_u64(seed ^ 0x00fd_c4a0);
    let ids: Vec<SimId> = (0..n).map(SimId::new).collect();
    for id in &ids {
        sim.add_node(*id, detector(*id, config, seed), &ids);
    }
    let mut tl = Timeline {
        loss: vec![(Duration::ZERO, 0.0)],
        started: vec![Duration::ZERO; n as usize],
        crashed_at: vec![None; n as usize],
        ..Timeline::default()
    };
    let mut checker = Checker {
        bounds,
        seen_events: 0,
        report: Report::default(),
        detected: Default::default(),
    };
    let current =
        |sim: &Sim<AnyDetector<SimId>>| -> Vec<SimId> { (0..n).map(|i| sim.id_of(i)).collect() };

    while sim.now() < opts.chaos {
        // A calm episode.
        let loss = if rng.gen_bool(0.5) { 0.0 } else { CALM_LOSS };
        sim.set_loss(loss);
        tl.loss.push((sim.now(), loss));
        let until = sim.now() + pick(&mut rng, 20_000, 70_000);
        sim.run_until_checked(until, |s| checker.check(s, &tl))?;
        // A fault episode: one to three faults, over its length.
        let len = pick(&mut rng, 5_000, 40_000);
        let start = sim.now();
        for _ in 0..rng.gen_range(1..=3) {
            let crashed: Vec<u32> = (0..n).filter(|i| !sim.is_running(*i)).collect();
            match rng.gen_range(0..5) {
                0 if crashed.len() < opts.max_crashed => {
                    let victim = *(0..n)
                        .filter(|i| sim.is_running(*i))
                        .collect::<Vec<_>>()
                        .choose(&mut rng)
                        .expect("a running node");
                    sim.crash(victim);
                    tl.crashed_at[victim as usize] = Some(sim.now());
                    checker.report.crashes += 1;
                }
                0 | 1 if !crashed.is_empty() => {
                    let back = *crashed.choose(&mut rng).expect("a crashed node");
                    let old = sim.id_of(back);
                    let id = SimId {
                        node: back,
                        incarnation: old.incarnation + 1,
                    };
                    let mut members = current(&sim);
                    members[back as usize] = id;
                    sim.restart(id, detector(id, config, seed), &members);
                    tl.crashed_at[back as usize] = None;
                    tl.started[back as usize] = sim.now();
                }
                2 => {
                    let node = rng.gen_range(0..n);
                    let d = pick(&mut rng, 500, 20_000);
                    sim.pause(node, d);
                    tl.pauses.push((node, sim.now(), sim.now() + d));
                }
                3 => {
                    let groups: Vec<u32> = (0..n).map(|_| rng.gen_range(0..2)).collect();
                    let sides: Vec<Vec<u32>> =
                        vec![(0..n).filter(|i| groups[*i as usize] == 1).collect()];
                    sim.partition(&sides);
                    tl.partitions.push((sim.now(), start + len, groups));
                }
                _ => {
                    let heavy = rng.gen_range(0.10..0.30);
                    sim.set_loss(heavy);
                    tl.loss.push((sim.now(), heavy));
                }
            }
            let step = len / 3;
            let until = sim.now() + step;
            sim.run_until_checked(until, |s| checker.check(s, &tl))?;
        }
        let until = (start + len).max(sim.now());
        sim.run_until_checked(until, |s| checker.check(s, &tl))?;
        sim.heal();
    }

    // Heal: loss 0, no partition, every crashed node back but one.
    sim.heal();
    sim.set_loss(0.0);
    tl.loss.push((sim.now(), 0.0));
    let crashed: Vec<u32> = (0..n).filter(|i| !sim.is_running(*i)).collect();
    for back in crashed.iter().skip(1) {
        let old = sim.id_of(*back);
        let id = SimId {
            node: *back,
            incarnation: old.incarnation + 1,
        };
        let mut members = current(&sim);
        members[*back as usize] = id;
        sim.restart(id, detector(id, config, seed), &members);
        tl.crashed_at[*back as usize] = None;
        tl.started[*back as usize] = sim.now();
    }
    let until = sim.now() + opts.settle;
    sim.run_until_checked(until, |s| checker.check(s, &tl))?;

    // Liveness after healing.
    for o in (0..n).filter(|o| sim.is_running(*o)) {
        for m in (0..n).filter(|m| *m != o) {
            let id = sim.id_of(m);
            let want = if sim.is_running(m) {
                MemberStatus::Up
            } else {
                MemberStatus::Down
            };
            let got = sim.status(o, id);
            if got != Some(want) {
                return Err(format!(
                    "after healing: node {o} sees {id:?} as {got:?} at {:?}, want {want:?}",
                    sim.now()
                ));
            }
        }
    }
    Ok(checker.report)
}
