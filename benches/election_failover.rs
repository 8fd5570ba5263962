//! Time to elect a new leader after the leader crashes, with each failure
//! detector, on the simulated network with the real actors (detector driver,
//! election driver) — virtual time, so the numbers are the protocols', not
//! the machine's.
//!
//! For N = 3, 5, 9, 17 nodes and each detector at its default settings
//! (heartbeat; phi-accrual with Akka's defaults; SWIM with memberlist's LAN
//! defaults), start a bully election, wait for the leader (the highest
//! node), crash it, and measure until every survivor knows the same new
//! leader (the next highest). 1-5 ms network delay, no loss. Median over
//! seeds, plus messages sent per survivor during the failover.
//!
//! `cargo bench --bench election_failover` (`TROUPE_SEEDS=n` for more seeds).

use std::time::Duration;

use troupe::failure_detector::start_failure_detector;
use troupe::prelude::*;
use troupe::protocols::fd::FailureDetectorConfig;
use troupe::transports::sim::Delay;

fn detector(kind: &str) -> FailureDetectorConfig {
    FailureDetectorConfig::from_toml_str(&format!(
        "[failure_detector]\nkind = \"{kind}\"\n{}",
        if kind == "swim" {
            "indirect_checks = 1\n"
        } else {
            ""
        }
    ))
    .expect("default detector config")
}

/// Virtual seconds from the crash until all survivors agree on the new leader.
fn failover(n: usize, kind: &str, seed: u64) -> (f64, f64) {
    run_virtual(move || async move {
        let plan = FaultPlan::uniform(LinkFaults {
            loss: 0.0,
            duplicate: 0.0,
            delay: Delay::Uniform {
                min: Duration::from_millis(1),
                max: Duration::from_millis(5),
            },
            reorder: false,
        });
        let mut cluster = SimCluster::new(seed, plan);
        let names: Vec<String> = (0..n).map(|i| format!("n{i:02}")).collect();
        let fd = detector(kind);
        let mut elections = Vec::new();
        for name in &names {
            let node = cluster.add_node(name).await.expect("node");
            let peers: Vec<String> = names.iter().filter(|p| *p != name).cloned().collect();
            start_failure_detector(&node, &fd, &peers)
                .await
                .expect("detector");
            elections.push((
                name.clone(),
                start_election(&node, ElectionAlgorithm::Bully, &names)
                    .await
                    .expect("election"),
            ));
        }
        let leader = names.last().expect("n > 0").clone();
        let next = names[n - 2].clone();
        // Let membership and the first election settle.
        tokio::time::sleep(Duration::from_secs(20)).await;
        for (who, e) in &elections {
            assert_eq!(
                e.current().leader.as_deref(),
                Some(leader.as_str()),
                "{kind} n={n} seed={seed}: {who} has no leader before the crash"
            );
        }
        let sent_before = cluster.net().stats().sent;
        let t0 = cluster.net().now();
        cluster.crash(&leader);
        elections.retain(|(w, _)| *w != leader);
        loop {
            tokio::time::sleep(Duration::from_millis(10)).await;
            if elections
                .iter()
                .all(|(_, e)| e.current().leader.as_deref() == Some(next.as_str()))
            {
                break;
            }
            assert!(
                cluster.net().now() - t0 < Duration::from_secs(120),
                "{kind} n={n} seed={seed}: no new leader in 120 s"
            );
        }
        let secs = (cluster.net().now() - t0).as_secs_f64();
        let msgs = (cluster.net().stats().sent - sent_before) as f64 / (n - 1) as f64;
        (secs, msgs)
    })
}

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(|a, b| a.total_cmp(b));
    v[v.len() / 2]
}

fn main() {
    let seeds: u64 = std::env::var("TROUPE_SEEDS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(5);
    println!(
        "Time to elect after the leader crashes (bully, virtual time, median of {seeds} seeds)\n"
    );
    println!("| detector | N | time to new leader (s) | messages per survivor during failover |");
    println!("|---|---|---|---|");
    for kind in ["heartbeat", "phi-accrual", "swim"] {
        for n in [3usize, 5, 9, 17] {
            let runs: Vec<(f64, f64)> = (0..seeds).map(|s| failover(n, kind, 100 + s)).collect();
            let t = median(runs.iter().map(|r| r.0).collect());
            let m = median(runs.iter().map(|r| r.1).collect());
            println!("| {kind} | {n} | {t:.2} | {m:.0} |");
        }
    }
}
