//! A five-node bank on a hostile simulated network, in virtual time.
//!
//! Every node runs an `account` actor. Clients on every node send transfers
//! (asks, retried and deduplicated) to random accounts over a network that
//! loses 20 % of frames, duplicates 5 % and reorders the rest. Midway one node
//! crashes and comes back as a new incarnation, and a partition cuts the
//! cluster in two and heals. At the end the example checks that no transfer
//! was applied twice, and prints what the network did.
//!
//! ```text
//! cargo run --example sim_cluster            # seed 1
//! cargo run --example sim_cluster -- 42      # another seed: another run, replayable
//! ```
//!
//! The full trace (every send, delivery, drop, crash and restart) is written
//! to `target/sim_cluster-trace.jsonl`.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use rand::{Rng, SeedableRng};
use serde::{Deserialize, Serialize};
use troupe::prelude::*;

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

fn phase(t: Duration, what: &str) {
    println!("[{:>7.2}s virtual] {what}", t.as_secs_f64());
}

fn main() {
    let seed: u64 = std::env::args()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or(1);
    println!(
        "Troupe simulated cluster, seed {seed}: 5 nodes, 20% loss, 5% duplication, reordering\n"
    );
    let wall = std::time::Instant::now();
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
            cluster.add_node(n).await.expect("start node");
        }
        phase(
            cluster.net().now(),
            "5 nodes up, each with an `account` actor",
        );

        let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(seed);
        let mut outcomes: BTreeMap<&str, u32> = BTreeMap::new();
        let mut next_id = 0u64;
        for round in 0..6 {
            match round {
                2 => {
                    phase(
                        cluster.net().now(),
                        "n3 crashes (loses its actors and their state)",
                    );
                    cluster.crash("n3");
                }
                3 => {
                    cluster.restart("n3").await.expect("restart");
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
                let node = cluster.node(&from).expect("running").clone();
                for _ in 0..20 {
                    let to = names[rng.gen_range(0..names.len())];
                    let target = node
                        .lookup::<Credit>(&format!("{to}/account"))
                        .expect("valid path");
                    next_id += 1;
                    let id = next_id;
                    asks.push(async move {
                        target
                            .ask(Credit { id, cents: 100 })
                            .timeout(Duration::from_secs(4))
                            .await
                    });
                }
            }
            let results = futures::future::join_all(asks).await;
            let (mut ok, mut timeout, mut other) = (0, 0, 0);
            for r in &results {
                match r {
                    Ok(_) => ok += 1,
                    Err(AskError::Timeout(_)) => timeout += 1,
                    Err(_) => other += 1,
                }
            }
            *outcomes.entry("answered").or_default() += ok;
            *outcomes.entry("timed out (unknown outcome)").or_default() += timeout;
            *outcomes.entry("refused (node down)").or_default() += other;
            phase(
                cluster.net().now(),
                &format!("round {round}: {} transfers: {ok} answered, {timeout} timed out, {other} refused", results.len()),
            );
        }

        let applied = applied.lock().expect("not poisoned");
        let twice: Vec<_> = applied.iter().filter(|(_, n)| **n > 1).collect();
        let s = cluster.net().stats();
        println!("\nNetwork: {} frames sent, {} delivered, {} lost, {} duplicated, {} cut by the partition, {} to a crashed node",
            s.sent, s.delivered, s.lost, s.duplicated, s.partitioned, s.to_crashed);
        let dedup: u64 = cluster
            .running()
            .iter()
            .filter_map(|n| cluster.node(n))
            .map(|n| n.stats().deduplicated)
            .sum();
        println!("Retries answered from the dedup table instead of re-executed: {dedup}");
        for (k, v) in &outcomes {
            println!("Transfers {k}: {v}");
        }
        println!(
            "Transfers applied: {} distinct, applied twice: {}",
            applied.len(),
            twice.len()
        );
        let path = std::path::Path::new("target/sim_cluster-trace.jsonl");
        let trace = cluster.net().trace();
        match trace.write_to(path) {
            Ok(()) => println!("Trace: {} events in {}", trace.len(), path.display()),
            Err(e) => println!("Trace not written: {e}"),
        }
        assert!(twice.is_empty(), "a transfer was applied twice: {twice:?}");
        println!("\nOK: no transfer applied twice (at-most-once held under loss, duplication, crash and partition).");
    });
    println!("({:.2} s of wall time)", wall.elapsed().as_secs_f64());
}
