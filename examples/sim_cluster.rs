//! A five-node bank on a hostile simulated network, in virtual time.
//!
//! Every node runs an `account` actor. Clients on every node send transfers
//! (asks, retried and deduplicated) to random accounts over a network that
//! loses 20 % of frames, duplicates 5 % and reorders the rest. Midway one node
//! crashes and comes back as a new incarnation, and a partition cuts the
//! cluster in two and heals. At the end the example checks, and fails if
//! one does not hold (the suite runs the same check, `tests/examples.rs`):
//!
//! - no transfer was applied twice (asks are executed at most once);
//! - every transfer that was answered was applied, exactly once;
//! - the network did what it claims: frames were lost, duplicated, cut by
//!   the partition and sent to the crashed node, and retries were answered
//!   from the deduplication table;
//!
//! and prints what the network did.
//!
//! ```text
//! cargo run --example sim_cluster                  # seed 1
//! cargo run --example sim_cluster -- 42            # another seed: another run, replayable
//! cargo run --example sim_cluster -- 1 --rounds 200  # a longer run (default 6 rounds)
//! cargo run --example sim_cluster -- --trace t.jsonl # the trace somewhere else
//! ```
//!
//! The full trace (every send, delivery, drop, crash and restart) is written
//! to `target/sim_cluster-trace.jsonl` (or the `--trace` file); draw it with
//! `troupe trace view target/sim_cluster-trace.jsonl -o sim_cluster.html`.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use rand::{Rng, SeedableRng};
use serde::{Deserialize, Serialize};
use troupe::prelude::*;

#[path = "common/trace_arg.rs"]
mod trace_arg;

/// Add `cents` to the account; `id` names the transfer.
#[derive(Debug, Serialize, Deserialize)]
struct Credit {
    id: u64,
    cents: i64,
}
remote_message!(Credit, "bank.credit", i64);

type Applied = Arc<Mutex<BTreeMap<u64, u32>>>;

struct Account {
    balance: i64,
    applied: Applied,
}

impl Actor for Account {
    type Context = Context<Self>;
}

impl Handler<Credit> for Account {
    type Result = i64;
    fn handle(&mut self, m: Credit, _: &mut Context<Self>) -> i64 {
        *self
            .applied
            .lock()
            .expect("not poisoned")
            .entry(m.id)
            .or_default() += 1;
        self.balance += m.cents;
        self.balance
    }
}

/// What a run measured (see the module docs for what it must satisfy).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Report {
    /// Transfers answered, timed out (unknown outcome), refused.
    pub answered: u32,
    /// Transfers whose ask timed out: applied once or not at all.
    pub timed_out: u32,
    /// Transfers refused (a node known to be down).
    pub refused: u32,
    /// Distinct transfers applied.
    pub applied: usize,
    /// Retries answered from the deduplication table.
    pub deduplicated: u64,
    /// Frames lost, duplicated, cut by the partition, sent to a crashed node.
    pub lost: u64,
    /// See `lost`.
    pub duplicated: u64,
    /// See `lost`.
    pub partitioned: u64,
    /// See `lost`.
    pub to_crashed: u64,
}

/// Run the example on the simulated network seeded by `seed`, printing what
/// happens when `verbose`; `Err` says which check failed.
pub fn run(seed: u64, verbose: bool) -> Result<Report, String> {
    let trace = verbose.then(|| "target/sim_cluster-trace.jsonl".into());
    run_with(seed, 6, verbose, trace)
}

/// [`run`] with `rounds` rounds of transfers (at least 5: the crash, the
/// restart with the partition and the heal happen in rounds 2, 3 and 4),
/// writing the trace to `trace` when given.
pub fn run_with(
    seed: u64,
    rounds: u32,
    verbose: bool,
    trace: Option<std::path::PathBuf>,
) -> Result<Report, String> {
    let say = move |line: String| {
        if verbose {
            println!("{line}");
        }
    };
    let phase =
        move |t: Duration, what: &str| say(format!("[{:>7.2}s virtual] {what}", t.as_secs_f64()));
    say(format!(
        "Troupe simulated cluster, seed {seed}: 5 nodes, 20% loss, 5% duplication, reordering\n"
    ));
    run_virtual(move || async move {
        let applied: Applied = Arc::default();
        let mut cluster = SimCluster::new(seed, FaultPlan::uniform(LinkFaults::lossy(0.20, 0.05)));
        let a = applied.clone();
        cluster.on_start(move |node: Node| {
            let a = a.clone();
            async move {
                let spec = ActorSpec::new("account", move || Account {
                    balance: 0,
                    applied: a.clone(),
                })
                .handles::<Credit>();
                node.spawn(spec).await.expect("spawn account");
            }
        });
        let names = ["n1", "n2", "n3", "n4", "n5"];
        for n in names {
            cluster
                .add_node(n)
                .await
                .map_err(|e| format!("start {n}: {e}"))?;
        }
        phase(
            cluster.net().now(),
            "5 nodes up, each with an `account` actor",
        );

        let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(seed);
        let mut report = Report::default();
        let mut answered_ids = Vec::new();
        let mut next_id = 0u64;
        for round in 0..rounds.max(5) {
            match round {
                2 => {
                    phase(
                        cluster.net().now(),
                        "n3 crashes (loses its actors and their state)",
                    );
                    cluster.crash("n3");
                }
                3 => {
                    cluster
                        .restart("n3")
                        .await
                        .map_err(|e| format!("restart: {e}"))?;
                    phase(cluster.net().now(), "n3 restarts as a new incarnation");
                    phase(cluster.net().now(), "partition: {n1,n2} | {n3,n4,n5}");
                    cluster.net().partition(&["n1", "n2"], &["n3", "n4", "n5"]);
                }
                4 => {
                    cluster.net().heal();
                    phase(cluster.net().now(), "partition healed");
                }
                _ => {}
            }
            let mut asks = Vec::new();
            for from in cluster.running() {
                let Some(node) = cluster.node(&from).cloned() else {
                    continue;
                };
                for _ in 0..20 {
                    let to = names[rng.gen_range(0..names.len())];
                    let target = node
                        .lookup::<Credit>(&format!("{to}/account"))
                        .map_err(|e| e.to_string())?;
                    next_id += 1;
                    let id = next_id;
                    asks.push(async move {
                        let r = target
                            .ask(Credit { id, cents: 100 })
                            .timeout(Duration::from_secs(4))
                            .await;
                        (id, r)
                    });
                }
            }
            let results = futures::future::join_all(asks).await;
            let (mut ok, mut timeout, mut other) = (0, 0, 0);
            for (id, r) in &results {
                match r {
                    Ok(_) => {
                        ok += 1;
                        answered_ids.push(*id);
                    }
                    Err(AskError::Timeout(_)) => timeout += 1,
                    Err(_) => other += 1,
                }
            }
            report.answered += ok;
            report.timed_out += timeout;
            report.refused += other;
            phase(
                cluster.net().now(),
                &format!("round {round}: {} transfers: {ok} answered, {timeout} timed out, {other} refused", results.len()),
            );
        }

        let applied = applied.lock().expect("not poisoned");
        let twice: Vec<_> = applied.iter().filter(|(_, n)| **n > 1).collect();
        let s = cluster.net().stats();
        say(format!("\nNetwork: {} frames sent, {} delivered, {} lost, {} duplicated, {} cut by the partition, {} to a crashed node",
            s.sent, s.delivered, s.lost, s.duplicated, s.partitioned, s.to_crashed));
        report.deduplicated = cluster
            .running()
            .iter()
            .filter_map(|n| cluster.node(n))
            .map(|n| n.stats().deduplicated)
            .sum();
        (
            report.lost,
            report.duplicated,
            report.partitioned,
            report.to_crashed,
        ) = (s.lost, s.duplicated, s.partitioned, s.to_crashed);
        report.applied = applied.len();
        say(format!(
            "Retries answered from the dedup table instead of re-executed: {}",
            report.deduplicated
        ));
        say(format!(
            "Transfers answered: {}; timed out (unknown outcome): {}; refused (node down): {}",
            report.answered, report.timed_out, report.refused
        ));
        say(format!(
            "Transfers applied: {} distinct, applied twice: {}",
            applied.len(),
            twice.len()
        ));
        if let Some(path) = &trace {
            trace_arg::write(path, &cluster.net().trace());
        }
        if !twice.is_empty() {
            return Err(format!("transfers applied twice: {twice:?}"));
        }
        if let Some(id) = answered_ids.iter().find(|id| applied.get(id) != Some(&1)) {
            return Err(format!("transfer {id} was answered but not applied"));
        }
        let r = &report;
        if r.lost == 0
            || r.duplicated == 0
            || r.partitioned == 0
            || r.to_crashed == 0
            || r.deduplicated == 0
        {
            return Err(format!(
                "the run did not exercise every fault it claims: {r:?}"
            ));
        }
        say("\nOK: no transfer applied twice, every answered one applied once (at-most-once held under loss, duplication, crash and partition).".into());
        Ok(report)
    })
}

fn main() {
    let mut args: Vec<String> = std::env::args().skip(1).collect();
    let trace =
        trace_arg::take(&mut args).unwrap_or_else(|| "target/sim_cluster-trace.jsonl".into());
    let mut rounds = 6;
    if let Some(i) = args.iter().position(|a| a == "--rounds") {
        args.remove(i);
        rounds = match args.get(i).map(|r| r.parse::<u32>()) {
            Some(Ok(r)) => r,
            _ => {
                eprintln!("--rounds needs a number");
                std::process::exit(2);
            }
        };
        args.remove(i);
    }
    let seed: u64 = args.first().and_then(|s| s.parse().ok()).unwrap_or(1);
    let wall = std::time::Instant::now();
    if let Err(e) = run_with(seed, rounds, true, Some(trace)) {
        eprintln!("FAILED: {e}");
        std::process::exit(1);
    }
    println!("({:.2} s of wall time)", wall.elapsed().as_secs_f64());
}
