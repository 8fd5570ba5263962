//! Simulated-network throughput: how many messages per second of wall time
//! 100 nodes exchange under virtual time.
//!
//! Each node tells a random peer every 10 ms of virtual time for 60 s of
//! virtual time, over a network with 1-20 ms delays, 1 % loss and reordering.
//! Reports delivered messages per wall second and the virtual/wall speed-up.
//!
//! Then a whole-framework scenario: 100 nodes, each running the SWIM failure
//! detector actor, for 10 minutes of virtual time with one node crashed at
//! minute 1; reports the wall time and checks every survivor saw it Down
//! (the bench panics, exiting non-zero, if one did not).
//!
//! `cargo bench --bench sim_throughput`. Knobs (env), for a quick run of a
//! debug build (`cargo test --bench sim_throughput`): `TROUPE_SIM_NODES`
//! (default 100) and `TROUPE_SIM_SECS` (default 60) for the first part,
//! `TROUPE_SIM_FD_NODES` (default 100) and `TROUPE_SIM_FD_SECS` (default
//! 600, at least 61: the crash comes at 60 s) for the second.

use std::time::{Duration, Instant};

use actix::prelude::*;
use rand::{Rng, SeedableRng};
use serde::{Deserialize, Serialize};
use troupe::framework::{remote_message, ActorSpec};
use troupe::transports::sim::{run_virtual, FaultPlan, LinkFaults, SimCluster};

#[derive(Debug, Serialize, Deserialize)]
struct Ping(u64);
remote_message!(Ping, "bench.ping", ());

#[derive(Default)]
struct Sink(u64);
impl Actor for Sink {
    type Context = Context<Self>;
}
impl Handler<Ping> for Sink {
    type Result = ();
    fn handle(&mut self, m: Ping, _: &mut Context<Self>) {
        self.0 += m.0;
    }
}

fn env_or(key: &str, default: u64) -> u64 {
    std::env::var(key)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

fn main() {
    let nodes = env_or("TROUPE_SIM_NODES", 100).max(1) as usize;
    let virtual_secs = env_or("TROUPE_SIM_SECS", 60).max(1);
    let fd_nodes = env_or("TROUPE_SIM_FD_NODES", 100).max(4) as usize;
    let fd_secs = env_or("TROUPE_SIM_FD_SECS", 600).max(61);
    let wall = Instant::now();
    let (delivered, sent) = run_virtual(move || async move {
        let mut cluster = SimCluster::new(9, FaultPlan::uniform(LinkFaults::lossy(0.01, 0.0)));
        let names: Vec<String> = (0..nodes).map(|i| format!("n{i:03}")).collect();
        let mut handles = Vec::new();
        for n in &names {
            let node = cluster.add_node(n).await.expect("node");
            node.spawn(ActorSpec::new("sink", Sink::default).handles::<Ping>())
                .await
                .expect("spawn");
            handles.push(node);
        }
        let mut tasks = Vec::new();
        for (i, node) in handles.iter().enumerate() {
            let refs: Vec<_> = names
                .iter()
                .map(|n| node.lookup::<Ping>(&format!("{n}/sink")).expect("path"))
                .collect();
            tasks.push(async move {
                let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(i as u64);
                let mut tick = tokio::time::interval(Duration::from_millis(10));
                for k in 0..(virtual_secs * 100) {
                    tick.tick().await;
                    let _ = refs[rng.gen_range(0..refs.len())].tell(Ping(k));
                }
            });
        }
        futures::future::join_all(tasks).await;
        tokio::time::sleep(Duration::from_secs(1)).await;
        let s = cluster.net().stats();
        (s.delivered, s.sent)
    });
    let secs = wall.elapsed().as_secs_f64();
    println!("simulated network: {nodes} nodes, {virtual_secs} s virtual time");
    println!("  frames sent {sent}, delivered {delivered}");
    println!(
        "  wall time {:.2} s -> {:.0} delivered msg/s of wall time",
        secs,
        delivered as f64 / secs
    );
    println!("  virtual/wall speed-up {:.1}x", virtual_secs as f64 / secs);

    let wall = Instant::now();
    let crashed = format!("n{:03}", fd_nodes / 2);
    let victim = crashed.clone();
    let (sent, down, survivors) = run_virtual(|| async move {
        let mut cluster = SimCluster::new(10, FaultPlan::uniform(LinkFaults::lossy(0.01, 0.0)));
        let names: Vec<String> = (0..fd_nodes).map(|i| format!("n{i:03}")).collect();
        let fd = troupe::protocols::fd::FailureDetectorConfig::default();
        for n in &names {
            let node = cluster.add_node(n).await.expect("node");
            // Join through three seeds, as a real deployment would.
            let seeds: Vec<String> = names.iter().take(3).filter(|s| *s != n).cloned().collect();
            troupe::failure_detector::start_failure_detector(&node, &fd, &seeds)
                .await
                .expect("detector");
        }
        tokio::time::sleep(Duration::from_secs(60)).await;
        cluster.crash(&victim);
        tokio::time::sleep(Duration::from_secs(fd_secs - 60)).await;
        let survivors = cluster.running();
        let down = survivors
            .iter()
            .filter(|n| {
                cluster.node(n).and_then(|x| x.membership().status(&victim))
                    == Some(troupe::framework::membership::MemberStatus::Down)
            })
            .count();
        (cluster.net().stats().sent, down, survivors.len())
    });
    let secs = wall.elapsed().as_secs_f64();
    println!("framework scenario: {fd_nodes} nodes running SWIM actors, {fd_secs} s virtual time, one crash");
    println!(
        "  {sent} frames, {down}/{survivors} survivors saw the crash Down, wall time {secs:.2} s ({:.0}x faster than real time)",
        fd_secs as f64 / secs
    );
    assert_eq!(
        survivors,
        fd_nodes - 1,
        "every node but {crashed} should still be running"
    );
    assert_eq!(
        down, survivors,
        "only {down} of {survivors} survivors saw {crashed} Down"
    );
}
