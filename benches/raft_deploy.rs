//! Raft deployed: committed writes per second and their latency with three
//! nodes over real QUIC (loopback, in one process) and durable logs on
//! disk (`RedbStore`, group commit), beside the disk's raw fsync rate
//! measured in the same run; then the time to fail over after the leader
//! is stopped.
//!
//! The in-process variant: no HTTP, no kv app, no separate processes.
//! Issue 19's own setup (three `troupe node` processes running the kv
//! app, driven over HTTP, the leader SIGKILLed) is
//! `apps/tests/kv_bench.rs`; this bench is what is left without the
//! processes and the HTTP layer: a `KvStore` replica group (`start_raft`,
//! default `RaftConfig`) on three nodes started by the bench
//! (`troupe::runtime::start_node`, the same start-up `troupe node` runs,
//! each with its own data directory, the SWIM detector at `lan-fast`),
//! `C` clients on the leader's arbiter each proposing `Put { key:
//! "k<client>", value: 16 bytes }` back to back through
//! `Replica::propose`.
//!
//! Per round: 1, 16 and 256 clients, each on a fresh cluster (the order
//! rotates between rounds), then a raw fsync loop (append 100 bytes +
//! `sync_data`) in the same directory. Tables give medians over rounds.
//!
//! Failover: on a fresh cluster, after a few writes, the leader node is
//! shut down at once (`Node::shutdown`: its actors stop and its QUIC
//! endpoint closes; in one process this stands in for SIGKILL, and Raft
//! does not look at connections: followers notice only through their
//! election timers, default 300-600 ms, pre-vote first). Measured from
//! the shutdown until a survivor leads and has committed a write; p50 and
//! max over `RAFT_DEPLOY_KILLS` clusters.
//!
//! `cargo bench --bench raft_deploy`. Knobs (env): `RAFT_DEPLOY_ROUNDS`
//! (5), `RAFT_DEPLOY_SECS` (2, after 0.5 s of warm-up),
//! `RAFT_DEPLOY_CLIENTS` (`1,16,256`), `RAFT_DEPLOY_KILLS` (20). Without
//! `--bench` one short round at 16 clients and one kill check that it
//! works.

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use troupe::prelude::*;
use troupe::protocols::raft::kv::{KvCommand, KvStore};
use troupe::protocols::raft::RaftConfig;
use troupe::runtime::RunningNode;

#[path = "support/mod.rs"]
mod support;

use support::{env, median, median_d, percentile, raw_fsync, three_nodes, wait_up, NAMES};

#[derive(Debug, Clone, Default)]
struct Run {
    per_sec: f64,
    p50: Duration,
    p99: Duration,
    syncs_per_sec: f64,
}

fn put(client: usize) -> KvCommand {
    KvCommand::Put {
        key: format!("k{client}"),
        value: "0123456789abcdef".into(),
    }
}

/// Three nodes under `dir` running replica group "kv", every node seeing
/// the others up; the leader's index among them once its no-op committed.
async fn cluster(dir: &Path) -> (Vec<RunningNode>, Vec<Replica<KvStore>>, usize) {
    let nodes = three_nodes(dir, "").await;
    let members: Vec<String> = NAMES.iter().map(|n| n.to_string()).collect();
    let mut replicas = Vec::new();
    for n in &nodes {
        let r = start_raft::<KvStore>(&n.node, "kv", &members, RaftConfig::default())
            .await
            .expect("raft starts");
        replicas.push(r);
    }
    wait_up(&nodes).await;
    let leader = leader_among(&replicas, None, Duration::from_secs(20)).await;
    (nodes, replicas, leader)
}

/// Wait until a replica other than `except` leads and commits a write;
/// its index.
async fn leader_among(
    replicas: &[Replica<KvStore>],
    except: Option<usize>,
    at_most: Duration,
) -> usize {
    let t0 = Instant::now();
    loop {
        assert!(t0.elapsed() < at_most, "no leader within {at_most:?}");
        let found = (0..replicas.len()).find(|i| Some(*i) != except && replicas[*i].is_leader());
        if let Some(i) = found {
            if replicas[i]
                .propose_within(put(usize::MAX), None, Duration::from_secs(2))
                .await
                .is_ok()
            {
                return i;
            }
        }
        tokio::time::sleep(Duration::from_millis(1)).await;
    }
}

async fn measure(dir: &Path, clients: usize, warmup: Duration, len: Duration) -> Run {
    let (nodes, replicas, l) = cluster(dir).await;
    let leader = replicas[l].clone();
    let syncs =
        |nodes: &[RunningNode]| -> u64 { nodes.iter().map(|n| n.node.store().stats().syncs).sum() };
    let start = Instant::now() + warmup;
    let end = start + len;
    let mut tasks = Vec::new();
    for c in 0..clients {
        let r = leader.clone();
        tasks.push(actix_rt::spawn(async move {
            let mut lat = Vec::new();
            loop {
                let t0 = Instant::now();
                if t0 >= end {
                    break;
                }
                r.propose(put(c), None).await.expect("write");
                if t0 >= start {
                    lat.push(t0.elapsed());
                }
            }
            lat
        }));
    }
    tokio::time::sleep_until(start.into()).await;
    let s0 = syncs(&nodes);
    tokio::time::sleep_until(end.into()).await;
    let synced = syncs(&nodes) - s0;
    let mut lat = Vec::new();
    for t in tasks {
        lat.extend(t.await.expect("client"));
    }
    for n in &nodes {
        n.node.shutdown();
    }
    lat.sort();
    Run {
        per_sec: lat.len() as f64 / len.as_secs_f64(),
        p50: percentile(&lat, 0.5),
        p99: percentile(&lat, 0.99),
        syncs_per_sec: synced as f64 / len.as_secs_f64(),
    }
}

/// Stop the leader of a fresh cluster; the time until another node leads
/// and has committed a write.
async fn failover(dir: &Path) -> Duration {
    let (nodes, replicas, l) = cluster(dir).await;
    for c in 0..10 {
        replicas[l].propose(put(c), None).await.expect("write");
    }
    let t0 = Instant::now();
    nodes[l].node.shutdown();
    leader_among(&replicas, Some(l), Duration::from_secs(30)).await;
    let took = t0.elapsed();
    for (i, n) in nodes.iter().enumerate() {
        if i != l {
            n.node.shutdown();
        }
    }
    took
}

fn fresh(base: &Path) -> PathBuf {
    let dir = base.join(uuid::Uuid::new_v4().to_string());
    std::fs::create_dir_all(&dir).expect("bench dir");
    dir
}

fn main() {
    let quick = !std::env::args().any(|a| a == "--bench");
    let rounds: usize = if quick {
        1
    } else {
        env("RAFT_DEPLOY_ROUNDS", 5usize).max(1)
    };
    let len = if quick {
        Duration::from_secs(1)
    } else {
        Duration::from_secs_f64(env("RAFT_DEPLOY_SECS", 2.0f64))
    };
    let warmup = Duration::from_millis(if quick { 100 } else { 500 });
    let clients: Vec<usize> = std::env::var("RAFT_DEPLOY_CLIENTS")
        .unwrap_or_else(|_| if quick { "16" } else { "1,16,256" }.into())
        .split(',')
        .map(|c| c.trim().parse().expect("RAFT_DEPLOY_CLIENTS: numbers"))
        .collect();
    let kills: usize = if quick {
        1
    } else {
        env("RAFT_DEPLOY_KILLS", 20usize)
    };
    let base: PathBuf = Path::new(env!("CARGO_TARGET_TMPDIR")).join("raft-deploy");
    println!(
        "Raft (KvStore, default RaftConfig) on 3 nodes over QUIC in one process, durable logs \
         (RedbStore, group commit); {rounds} round(s) of {len:?} after {warmup:?} warm-up"
    );
    let mut runs: Vec<Vec<Run>> = vec![Vec::new(); clients.len()];
    let mut raw = Vec::new();
    for round in 0..rounds {
        for k in 0..clients.len() {
            let i = (k + round) % clients.len();
            let c = clients[i];
            let dir = fresh(&base);
            let r = actix_rt::System::new().block_on(measure(&dir, c, warmup, len));
            let _ = std::fs::remove_dir_all(&dir);
            println!(
                "  round {}: {c:>4} clients {:>8.0} writes/s  p50 {:>7.2} ms  p99 {:>7.2} ms  {:>6.0} syncs/s",
                round + 1,
                r.per_sec,
                r.p50.as_secs_f64() * 1e3,
                r.p99.as_secs_f64() * 1e3,
                r.syncs_per_sec
            );
            assert!(r.per_sec > 0.0, "nothing committed");
            runs[i].push(r);
        }
        std::fs::create_dir_all(&base).expect("bench dir");
        let f = raw_fsync(&base, len);
        println!("  round {}: raw fsync {f:>8.0} syncs/s", round + 1);
        raw.push(f);
    }
    println!("\nmedian of {rounds} round(s):\n");
    println!("| clients | writes/s | p50 | p99 | syncs/s (3 nodes) |");
    println!("|---:|---:|---:|---:|---:|");
    for (c, rs) in clients.iter().zip(&runs) {
        println!(
            "| {c} | {:.0} | {:.2} ms | {:.2} ms | {:.0} |",
            median(rs.iter().map(|r| r.per_sec).collect()),
            median_d(rs.iter().map(|r| r.p50).collect()).as_secs_f64() * 1e3,
            median_d(rs.iter().map(|r| r.p99).collect()).as_secs_f64() * 1e3,
            median(rs.iter().map(|r| r.syncs_per_sec).collect()),
        );
    }
    println!(
        "| (disk: raw fsync, 1 writer) | {:.0} syncs/s | | | |",
        median(raw)
    );
    let mut took = Vec::new();
    for k in 0..kills {
        let dir = fresh(&base);
        let t = actix_rt::System::new().block_on(failover(&dir));
        let _ = std::fs::remove_dir_all(&dir);
        println!(
            "  kill {}: new leader serving after {:.0} ms",
            k + 1,
            t.as_secs_f64() * 1e3
        );
        took.push(t);
    }
    took.sort();
    println!(
        "\nfailover after the leader stopped, {kills} kill(s): p50 {:.0} ms, max {:.0} ms",
        percentile(&took, 0.5).as_secs_f64() * 1e3,
        took.last().copied().unwrap_or_default().as_secs_f64() * 1e3
    );
}
