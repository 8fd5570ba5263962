//! Costs of one transaction for two-phase commit (presumed abort and
//! presumed nothing) and three-phase commit, counted on the deterministic
//! simulated network next to the textbook figures. Run with
//! `cargo bench -p troupe-protocols --bench commit_costs`.
//!
//! Network: reliable, fixed one-way delay `D` (no loss, no reordering),
//! instant disks; retry and decision timers far beyond the run, so only the
//! protocol's own messages are counted. `n` participants plus the
//! coordinator. Latency is from `begin` to the coordinator's decision and to
//! the last participant's, in `D`. Forced writes are the log records whose
//! input also sent a message depending on them (the cores count them).
//!
//! The bench exits non-zero when a measured figure differs from the
//! expected one printed beside it.

use std::collections::BTreeMap;
use std::time::Duration;

use troupe_framework::sansio::SnapshotCore;
use troupe_protocols::commit::{
    CommitConfig, CommitCore, CommitEvent, Decision, Phase, ThreePhase, TwoPhase,
};
use troupe_protocols::testkit::{
    recover_state, NetFaults, Observer, OracleConfig, Sim, SimProtocol,
};

const D: Duration = Duration::from_millis(10);
const SIZES: [u32; 4] = [2, 3, 5, 9];

#[derive(Default)]
struct Times {
    prepares: Vec<(u32, u64)>,
    decided: BTreeMap<u32, Duration>,
}

impl<P: SimProtocol<Id = u32, Event = CommitEvent>> Observer<P> for Times {
    fn on_event(&mut self, now: Duration, node: &u32, e: &CommitEvent) -> Result<(), String> {
        match e {
            CommitEvent::Prepare { tx } => self.prepares.push((*node, *tx)),
            CommitEvent::Decided { .. } => {
                self.decided.entry(*node).or_insert(now);
            }
        }
        Ok(())
    }
}

/// Expected messages, forced writes, coordinator and participant latency (D).
type Expected = (u64, u64, f64, f64);

struct Cost {
    msgs: u64,
    forced: u64,
    coordinator: f64,
    participants: f64,
    decision: Decision,
}

fn quiet(presumed_abort: bool) -> CommitConfig {
    CommitConfig {
        retry: Duration::from_secs(3600),
        vote_timeout: Duration::from_secs(3600),
        decision_timeout: Duration::from_secs(3600),
        presumed_abort,
        ..CommitConfig::default()
    }
}

/// One transaction from node 1 over participants `2..=n+1`; `no` votes no.
fn cost<P>(
    n: u32,
    no: Option<u32>,
    make: impl Fn(u32, Vec<u32>, Option<P::State>) -> P + 'static,
) -> Cost
where
    P: SimProtocol<Id = u32, Event = CommitEvent> + CommitCore + SnapshotCore + 'static,
{
    let members: Vec<u32> = (1..=n + 1).collect();
    let m2 = members.clone();
    let mut sim: Sim<P> = Sim::new(
        1,
        members.clone(),
        Box::new(move |id, r| make(*id, m2.clone(), recover_state::<P>(r))),
        NetFaults::reliable(D),
        OracleConfig::default(),
    );
    let mut obs = Times::default();
    sim.start(&mut obs).expect("start");
    let participants: Vec<u32> = (2..=n + 1).collect();
    let t0 = sim.now();
    sim.command(&1, &mut obs, |c, now, o| {
        c.begin(1, participants.clone(), now, o)
    })
    .expect("begin");
    let deadline = t0 + D * 100;
    while sim.now() < deadline {
        sim.run_for(Duration::from_millis(1), &mut obs)
            .expect("run");
        for (node, tx) in std::mem::take(&mut obs.prepares) {
            let yes = Some(node) != no;
            sim.command(&node, &mut obs, |c, now, o| c.vote(tx, yes, now, o))
                .expect("vote");
        }
    }
    let in_d = |t: Duration| (t - t0).as_secs_f64() / D.as_secs_f64();
    let last = participants
        .iter()
        .map(|p| *obs.decided.get(p).expect("every participant decides"))
        .max()
        .expect("participants");
    Cost {
        msgs: sim.total_sent(),
        forced: sim.cores().map(|(_, c)| c.log_stats().forced).sum(),
        coordinator: in_d(obs.decided[&1]),
        participants: in_d(last),
        decision: sim.core(&1).and_then(|c| c.decision(1)).expect("decided"),
    }
}

fn main() {
    let mut wrong = Vec::new();
    println!("One transaction, n participants + coordinator, one-way delay D, no loss.");
    println!(
        "Measured (expected); latency in D: coordinator decides / last participant decides.\n"
    );
    println!(
        "| protocol | case | n | messages | forced writes | latency coordinator / participants |"
    );
    println!("|---|---|---:|---:|---:|---:|");
    for case in ["commit", "abort (one no)"] {
        for n in SIZES {
            let no = (case != "commit").then_some(n + 1);
            let rows: [(&str, Cost, Expected); 3] = [
                (
                    "2PC presumed abort",
                    cost(n, no, |id, m, d| TwoPhase::new(id, m, quiet(true), d)),
                    if no.is_none() {
                        (4 * u64::from(n), 2 * u64::from(n) + 1, 2.0, 3.0)
                    } else {
                        // Prepare, vote, abort to all; only the n-1 Ready records forced.
                        (3 * u64::from(n), u64::from(n) - 1, 2.0, 3.0)
                    },
                ),
                (
                    "2PC presumed nothing",
                    cost(n, no, |id, m, d| TwoPhase::new(id, m, quiet(false), d)),
                    if no.is_none() {
                        (4 * u64::from(n), 2 * u64::from(n) + 2, 2.0, 3.0)
                    } else {
                        // Acknowledged aborts; Begin, coordinator abort, n-1 Ready, n aborts.
                        (4 * u64::from(n), 2 * u64::from(n) + 1, 2.0, 3.0)
                    },
                ),
                (
                    "3PC",
                    cost(n, no, |id, m, d| ThreePhase::new(id, m, quiet(true), d)),
                    if no.is_none() {
                        (6 * u64::from(n), 3 * u64::from(n) + 2, 4.0, 5.0)
                    } else {
                        (3 * u64::from(n), u64::from(n) - 1, 2.0, 3.0)
                    },
                ),
            ];
            for (name, c, (em, ef, ec, ep)) in rows {
                let expected_decision = if no.is_none() {
                    Decision::Commit
                } else {
                    Decision::Abort
                };
                println!(
                    "| {name} | {case} | {n} | {} ({em}) | {} ({ef}) | {:.0} / {:.0} ({ec:.0} / {ep:.0}) |",
                    c.msgs, c.forced, c.coordinator, c.participants
                );
                let ok = c.msgs == em
                    && c.forced == ef
                    && (c.coordinator - ec).abs() < 1e-6
                    && (c.participants - ep).abs() < 1e-6
                    && c.decision == expected_decision;
                if !ok {
                    wrong.push(format!("{name} {case} n={n}"));
                }
            }
        }
    }
    println!(
        "\nTextbook (commit case): 2PC 4n messages, 2n+1 forced writes (presumed abort; \
         presumed nothing with a Begin record 2n+2), decision at 2D, participants know at 3D; \
         3PC 6n messages (with the final acknowledgements), 3n+2 forced writes, 4D / 5D."
    );
    termination_table(&mut wrong);
    if !wrong.is_empty() {
        eprintln!("figures differ from the expected ones: {wrong:?}");
        std::process::exit(1);
    }
}

/// What 3PC's termination cost after the coordinator crashed.
struct Termination {
    /// Messages by kind, from the crash until every participant decided.
    sent: BTreeMap<&'static str, u64>,
    /// Crash to the last participant's decision.
    decided_after: Duration,
    decision: Decision,
    /// The leader every participant names (the termination coordinator).
    leaders: Vec<Option<u32>>,
}

/// 3PC with the default timing (retry 50 ms, decision timeout 200 ms, the
/// election's defaults; failure detector reports a crash after 300 ms):
/// node 1 coordinates over `2..=n+1`, all vote yes; the coordinator
/// crashes once every participant is `Ready` (`precommit`: once every
/// participant pre-committed, before its commit), and the termination runs
/// to the end.
fn termination(n: u32, precommit: bool) -> Termination {
    let members: Vec<u32> = (1..=n + 1).collect();
    let m2 = members.clone();
    let mut sim: Sim<ThreePhase<u32>> = Sim::new(
        1,
        members,
        Box::new(move |id, r| {
            ThreePhase::new(
                *id,
                m2.clone(),
                CommitConfig::default(),
                recover_state::<ThreePhase<u32>>(r),
            )
        }),
        NetFaults::reliable(D),
        OracleConfig::default(),
    );
    let mut obs = Times::default();
    sim.start(&mut obs).expect("start");
    let participants: Vec<u32> = (2..=n + 1).collect();
    sim.command(&1, &mut obs, |c, now, o| {
        c.begin(1, participants.clone(), now, o)
    })
    .expect("begin");
    let phase = |sim: &Sim<ThreePhase<u32>>, p: &u32| {
        sim.core(p).and_then(|c| c.status(1)).map(|s| s.phase)
    };
    loop {
        let wanted = if precommit {
            Phase::PreCommitted
        } else {
            Phase::Ready
        };
        let crash = participants.iter().all(|p| phase(&sim, p) == Some(wanted));
        if crash {
            break;
        }
        sim.step(&mut obs).expect("step");
        for (node, tx) in std::mem::take(&mut obs.prepares) {
            sim.command(&node, &mut obs, |c, now, o| c.vote(tx, true, now, o))
                .expect("vote");
        }
    }
    sim.reset_counts();
    obs.decided.clear();
    let t0 = sim.now();
    sim.crash(&1, &mut obs).expect("crash");
    let deadline = t0 + Duration::from_secs(10);
    while sim.now() < deadline && participants.iter().any(|p| !obs.decided.contains_key(p)) {
        sim.step(&mut obs).expect("step");
    }
    let last = participants
        .iter()
        .map(|p| *obs.decided.get(p).expect("every participant decides"))
        .max()
        .expect("participants");
    Termination {
        sent: sim.sent_counts().clone(),
        decided_after: last - t0,
        decision: sim.core(&2).and_then(|c| c.decision(1)).expect("decided"),
        leaders: participants
            .iter()
            .map(|p| sim.core(p).and_then(|c| c.termination_leader().1.copied()))
            .collect(),
    }
}

/// 3PC's termination after a coordinator crash: the election's messages
/// apart from the termination round's.
fn termination_table(wrong: &mut Vec<String>) {
    println!(
        "\n3PC termination after the coordinator crashes, default timing (retry 50 ms, \
         decision timeout 200 ms, crash reported after 300 ms, bully election defaults), \
         D = 10 ms. Messages from the crash until the last participant decided, by kind; \
         the termination round is run by the elected leader, node n+1. Measured (expected); \
         textbook (Skeen's termination, the new coordinator a participant): 2(n-1) \
         state requests and reports, n-1 decisions, plus the election.\n"
    );
    println!(
        "| crash point | n | election | termination round (terminate, state-req/report, pre-commit/ack, round-abort) | decisions (to the participants and the coordinator) | commit acks | inquiries | crash to last decision |"
    );
    println!("|---|---:|---:|---:|---:|---:|---:|---:|");
    let kinds = |t: &Termination, ks: &[&str]| -> u64 {
        ks.iter().map(|k| t.sent.get(k).copied().unwrap_or(0)).sum()
    };
    for precommit in [false, true] {
        for n in SIZES {
            let t = termination(n, precommit);
            let point = if precommit {
                "every participant pre-committed"
            } else {
                "every participant ready"
            };
            let round = kinds(
                &t,
                &[
                    "terminate",
                    "state-req",
                    "state-report",
                    "pre-commit",
                    "pre-ack",
                    "round-abort",
                ],
            );
            // The round asks and hears every other participant; the
            // decision goes to them and to the coordinator, a commit is
            // acknowledged to the coordinator by the n-1 that learn it.
            let n64 = u64::from(n);
            let (er, ed, ea) = (2 * (n64 - 1), n64, if precommit { n64 - 1 } else { 0 });
            let (decisions, acks) = (kinds(&t, &["decision"]), kinds(&t, &["ack"]));
            println!(
                "| {point} | {n} | {} | {round} ({er}) | {decisions} ({ed}) | {acks} ({ea}) | {} | {} ms |",
                kinds(&t, &["election"]),
                kinds(&t, &["inquire"]),
                t.decided_after.as_millis(),
            );
            if (round, decisions, acks) != (er, ed, ea) {
                wrong.push(format!(
                    "3PC termination messages n={n} precommit={precommit}"
                ));
            }
            let expected = if precommit {
                Decision::Commit
            } else {
                Decision::Abort
            };
            let leader = vec![Some(n + 1); n as usize];
            let counted: u64 = t.sent.values().sum();
            let other = counted
                - kinds(
                    &t,
                    &[
                        "election",
                        "terminate",
                        "state-req",
                        "state-report",
                        "pre-commit",
                        "pre-ack",
                        "round-abort",
                        "decision",
                        "ack",
                        "inquire",
                    ],
                );
            if t.decision != expected || t.leaders != leader || other != 0 {
                wrong.push(format!("3PC termination n={n} precommit={precommit}"));
            }
        }
    }
}
