//! Atomic commit deployed: committed transactions per second and their
//! latency with three nodes over real QUIC (loopback, in one process) and
//! durable logs on disk, with group commit and with one fsync per record
//! (`[storage] group_commit = false`), beside the disk's raw fsync rate,
//! all measured in the same run.
//!
//! Node `a` coordinates every transaction; `b` and `c` are its
//! participants, with resource managers that vote yes at once. `C` clients
//! (default 64) on `a`'s arbiter each run transactions back to back
//! (`begin(["b", "c"])`, `commit().await`). Per transaction two-phase
//! commit forces three log records: `Ready` at `b` and at `c` before they
//! vote, the decision at `a` before it is sent. Each round measures both
//! store modes (the order alternates between rounds) and a raw fsync loop
//! (append 100 bytes + `sync_data`) in the same directory; the table gives
//! medians over rounds, the ratio the median of per-round ratios.
//!
//! Run with `cargo bench --bench commit_deploy`. Knobs (env):
//! `COMMIT_BENCH_ROUNDS` (5), `COMMIT_BENCH_SECS` measured seconds per
//! configuration and round (3, after 0.5 s of warm-up),
//! `COMMIT_BENCH_CLIENTS` (64), `COMMIT_BENCH_ALGORITHM` (`two-phase` or
//! `three-phase`). Without `--bench` (as `cargo test --benches` runs it)
//! one short round checks that it works.

use std::path::{Path, PathBuf};
use std::rc::Rc;
use std::time::{Duration, Instant};

use troupe::commit::start_commit_with;
use troupe::prelude::*;
use troupe::protocols::commit::CommitConfig;
use troupe::runtime::RunningNode;

#[path = "support/mod.rs"]
mod support;

use support::{env, median, median_d, percentile, raw_fsync, three_nodes, wait_up, NAMES};

/// Votes yes at once and keeps nothing.
struct Yes;

impl ResourceManager for Yes {
    async fn prepare(&self, _tx: TxId) -> Result<(), String> {
        Ok(())
    }
    async fn commit(&self, _tx: TxId) {}
    async fn abort(&self, _tx: TxId) {}
}

/// One configuration's measurement.
#[derive(Debug, Clone, Default)]
struct Run {
    per_sec: f64,
    p50: Duration,
    p99: Duration,
    aborted: u64,
    syncs_per_sec: f64,
}

/// Three nodes with `group_commit`, `clients` clients on `a` for `len`
/// after `warmup`.
async fn measure(
    dir: &Path,
    algorithm: CommitAlgorithm,
    group_commit: bool,
    clients: usize,
    warmup: Duration,
    len: Duration,
) -> Run {
    let storage = format!("[storage]\ngroup_commit = {group_commit}\n");
    let nodes = three_nodes(dir, &storage).await;
    let members: Vec<String> = NAMES.iter().map(|n| n.to_string()).collect();
    let mut handles = Vec::new();
    for node in &nodes {
        // Timeouts far above the latencies measured, so that a slow
        // configuration is measured, not aborted.
        let timing = CommitConfig {
            vote_timeout: Duration::from_secs(30),
            decision_timeout: Duration::from_secs(10),
            ..CommitConfig::default()
        };
        let h = start_commit_with(&node.node, "bench", algorithm, &members, timing, Yes)
            .await
            .expect("commit starts");
        handles.push(h);
    }
    wait_up(&nodes).await;
    let store_syncs =
        |nodes: &[RunningNode]| -> u64 { nodes.iter().map(|n| n.node.store().stats().syncs).sum() };
    let coordinator = handles[0].clone();
    let participants = ["b".to_string(), "c".to_string()];
    let start = Instant::now() + warmup;
    let end = start + len;
    let syncs_at_start = Rc::new(std::cell::Cell::new(None::<u64>));
    let mut tasks = Vec::new();
    for _ in 0..clients {
        let h = coordinator.clone();
        let ps = participants.clone();
        tasks.push(actix_rt::spawn(async move {
            let mut lat = Vec::new();
            let mut aborted = 0u64;
            loop {
                let t0 = Instant::now();
                if t0 >= end {
                    break;
                }
                let tx = h.begin(&ps).expect("begin");
                let outcome = tx.commit().await.expect("commit");
                if t0 >= start {
                    match outcome {
                        Outcome::Committed => lat.push(t0.elapsed()),
                        Outcome::Aborted(_) => aborted += 1,
                    }
                }
            }
            (lat, aborted)
        }));
    }
    tokio::time::sleep_until(start.into()).await;
    syncs_at_start.set(Some(store_syncs(&nodes)));
    let mut lat = Vec::new();
    let mut aborted = 0;
    for t in tasks {
        let (l, a) = t.await.expect("client");
        lat.extend(l);
        aborted += a;
    }
    let syncs = store_syncs(&nodes) - syncs_at_start.get().unwrap_or(0);
    for n in &nodes {
        n.shutdown().await;
    }
    lat.sort();
    let secs = len.as_secs_f64();
    Run {
        per_sec: lat.len() as f64 / secs,
        p50: percentile(&lat, 0.5),
        p99: percentile(&lat, 0.99),
        aborted,
        syncs_per_sec: syncs as f64 / secs,
    }
}

fn main() {
    let quick = !std::env::args().any(|a| a == "--bench");
    let rounds: usize = if quick {
        1
    } else {
        env("COMMIT_BENCH_ROUNDS", 5usize).max(1)
    };
    let len = if quick {
        Duration::from_secs(2)
    } else {
        Duration::from_secs_f64(env("COMMIT_BENCH_SECS", 3.0f64))
    };
    let warmup = Duration::from_millis(if quick { 100 } else { 500 });
    let clients: usize = env("COMMIT_BENCH_CLIENTS", 64usize).max(1);
    let algorithm: CommitAlgorithm = std::env::var("COMMIT_BENCH_ALGORITHM")
        .ok()
        .map(|a| {
            a.parse()
                .expect("COMMIT_BENCH_ALGORITHM: two-phase or three-phase")
        })
        .unwrap_or(CommitAlgorithm::TwoPhase);
    let base: PathBuf = Path::new(env!("CARGO_TARGET_TMPDIR")).join("commit-deploy");

    println!(
        "atomic commit ({algorithm}) over QUIC, 3 nodes, {clients} clients on the coordinator, \
         {rounds} round(s) of {len:?}"
    );
    let mut group = Vec::new();
    let mut single = Vec::new();
    let mut raw = Vec::new();
    let mut ratios = Vec::new();
    for round in 0..rounds {
        let order = if round % 2 == 0 {
            [true, false]
        } else {
            [false, true]
        };
        let mut got = [Run::default(), Run::default()];
        for group_commit in order {
            let dir = base.join(uuid::Uuid::new_v4().to_string());
            std::fs::create_dir_all(&dir).expect("bench dir");
            let run = actix_rt::System::new().block_on(measure(
                &dir,
                algorithm,
                group_commit,
                clients,
                warmup,
                len,
            ));
            let _ = std::fs::remove_dir_all(&dir);
            println!(
                "  round {}: {:<28} {:>8.0} tx/s  p50 {:>7.2} ms  p99 {:>7.2} ms  {:>6.0} syncs/s  aborted {}",
                round + 1,
                if group_commit {
                    "group commit"
                } else {
                    "one fsync per record"
                },
                run.per_sec,
                run.p50.as_secs_f64() * 1e3,
                run.p99.as_secs_f64() * 1e3,
                run.syncs_per_sec,
                run.aborted
            );
            assert_eq!(run.aborted, 0, "a transaction aborted without a failure");
            assert!(run.per_sec > 0.0, "no transaction committed");
            got[usize::from(!group_commit)] = run;
        }
        std::fs::create_dir_all(&base).expect("bench dir");
        let r = raw_fsync(&base, len);
        println!("  round {}: raw fsync {r:>8.0} syncs/s", round + 1);
        ratios.push(got[0].per_sec / got[1].per_sec);
        group.push(got[0].clone());
        single.push(got[1].clone());
        raw.push(r);
    }
    let row = |name: &str, runs: &[Run]| {
        println!(
            "| {name} | {:.0} | {:.2} ms | {:.2} ms | {:.0} |",
            median(runs.iter().map(|r| r.per_sec).collect()),
            median_d(runs.iter().map(|r| r.p50).collect()).as_secs_f64() * 1e3,
            median_d(runs.iter().map(|r| r.p99).collect()).as_secs_f64() * 1e3,
            median(runs.iter().map(|r| r.syncs_per_sec).collect()),
        )
    };
    println!("\nmedian of {rounds} round(s):\n");
    println!("| store | committed tx/s | p50 | p99 | syncs/s (3 nodes) |");
    println!("|---|---|---|---|---|");
    row("group commit", &group);
    row("one fsync per record", &single);
    println!(
        "| (disk: raw fsync, 1 writer) | {:.0} syncs/s | | | |",
        median(raw.clone())
    );
    let ratio = median(ratios.clone());
    println!(
        "\ngroup commit / one fsync per record at {clients} clients: median of per-round ratios \
         {ratio:.1} (rounds: {}); target >= 10: {}",
        ratios
            .iter()
            .map(|r| format!("{r:.1}"))
            .collect::<Vec<_>>()
            .join(" "),
        if ratio >= 10.0 { "holds" } else { "not met" }
    );
}
