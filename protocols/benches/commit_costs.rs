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
    CommitConfig, CommitCore, CommitEvent, Decision, ThreePhase, TwoPhase,
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
    if !wrong.is_empty() {
        eprintln!("figures differ from the expected ones: {wrong:?}");
        std::process::exit(1);
    }
}
