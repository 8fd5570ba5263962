//! Remote spawn and the cluster singleton on a simulated three-node cluster,
//! in virtual time (`cargo run --example cluster_features`).
//!
//! Node a spawns a `worker` on node b and messages it; every node runs the
//! manager of singleton `ledger`, which runs on the bully election's leader
//! (c); a proxy on a reaches it; c crashes, and the proxy reaches the new
//! instance on b. `tests/singleton.rs` runs [`run`] and checks its report;
//! the README's "Remote spawn and cluster singleton" section is the part
//! between the `README:` markers, word for word (`tests/readme_example.rs`).

use std::time::Duration;

use troupe::prelude::*;
use troupe::protocols::fd::FailureDetectorConfig;

// README: cluster features (begin)
use serde::{Deserialize, Serialize};

#[derive(Clone, Serialize, Deserialize)]
pub struct WorkerArgs {
    pub start: i64,
}

#[derive(Clone, Serialize, Deserialize)]
pub struct Add(pub i64);
remote_message!(Add, "example.add", i64);

pub struct Counter(i64);
impl Actor for Counter {
    type Context = Context<Self>;
}
impl Handler<Add> for Counter {
    type Result = i64;
    fn handle(&mut self, m: Add, _: &mut Context<Self>) -> i64 {
        self.0 += m.0;
        self.0
    }
}

/// What every node runs: a spawner offering kind `worker`, an election,
/// and the manager of singleton `ledger` (on the leader, built with its term).
pub async fn setup(node: &Node, members: &[String]) -> Result<Singleton, troupe::Error> {
    let kinds = SpawnKinds::new().kind("worker", |name: &str, args: WorkerArgs| {
        ActorSpec::new(name, move || Counter(args.start)).handles::<Add>()
    });
    start_spawner(node, kinds).await?; // start_node: StartOptions::spawn_kinds
    let election = start_election(node, ElectionAlgorithm::Bully, members).await?;
    start_singleton(node, &election, "ledger", |_term| {
        ActorSpec::new("ledger", || Counter(0)).handles::<Add>()
    })
    .await
}

/// From any node: spawn a worker on node b, and use the singleton.
pub async fn use_them(node: &Node, ledger: &Singleton) -> Result<(i64, i64), String> {
    let path = node
        .spawn_remote("b", "worker", "worker-7", WorkerArgs { start: 100 })
        .await
        .map_err(|e| e.to_string())?; // UnknownKind, NameTaken, BadArgs, NodeDown...
    let worker: RemoteRef<Add> = node.actor_ref(path);
    let w = worker.ask(Add(1)).await.map_err(|e| e.to_string())?;
    let proxy: SingletonProxy<Add> = ledger.proxy();
    let l = proxy
        .ask(Add(5), Duration::from_secs(10)) // waits (within 10 s) while no leader is known
        .await
        .map_err(|e| e.to_string())?;
    Ok((w, l))
}
// README: cluster features (end)

/// What [`run`] saw.
#[derive(Debug)]
pub struct Report {
    /// The worker's and the ledger's first answers.
    pub first: (i64, i64),
    /// Where the ledger ran before the crash, and after.
    pub ledger_on: (String, String),
    /// What the first ask after the crash got: `LeaderChanged` (it went to
    /// the crashed node, which the proxy's node still believed leads).
    pub first_after_crash: Result<i64, SingletonError>,
    /// The ledger's answer after the crash (a fresh instance: state is not moved).
    pub after_crash: i64,
}

/// Run the scenario with `seed`.
pub fn run(seed: u64) -> Result<Report, String> {
    run_virtual(|| async move {
        let names = ["a", "b", "c"];
        let members: Vec<String> = names.iter().map(|n| n.to_string()).collect();
        let singletons = std::rc::Rc::new(std::cell::RefCell::new(Vec::new()));
        let mut sim = SimCluster::new(seed, FaultPlan::reliable());
        let (m, s) = (members.clone(), singletons.clone());
        sim.on_start(move |node: Node| {
            let (members, singletons) = (m.clone(), s.clone());
            async move {
                let peers: Vec<String> = members
                    .iter()
                    .filter(|p| *p != node.name())
                    .cloned()
                    .collect();
                let fd = FailureDetectorConfig::default();
                troupe::failure_detector::start_failure_detector(&node, &fd, &peers)
                    .await
                    .expect("failure detector");
                let ledger = setup(&node, &members).await.expect("setup");
                singletons
                    .borrow_mut()
                    .push((node.name().to_string(), ledger));
            }
        });
        for n in names {
            sim.add_node(n).await.map_err(|e| e.to_string())?;
        }
        tokio::time::sleep(Duration::from_secs(3)).await;
        let ledger_of = |n: &str| {
            singletons
                .borrow()
                .iter()
                .rev()
                .find(|(name, _)| name == n)
                .map(|(_, s)| s.clone())
                .expect("a singleton handle per node")
        };
        let a = sim.node("a").cloned().ok_or("no node a")?;
        let first = use_them(&a, &ledger_of("a")).await?;
        let running_on = |sim: &SimCluster| {
            sim.running()
                .into_iter()
                .find(|n| {
                    sim.node(n)
                        .is_some_and(|node| node.registry().is_running("ledger"))
                })
                .unwrap_or_default()
        };
        let before = running_on(&sim);
        sim.crash(&before);
        let proxy = ledger_of("a").proxy::<Add>();
        let first_after_crash = proxy.ask(Add(1), Duration::from_secs(20)).await;
        // The first went to the crashed node: it may or may not have run
        // there (with its instance). Asking again reaches the new one.
        let after_crash = proxy
            .ask(Add(1), Duration::from_secs(20))
            .await
            .map_err(|e| e.to_string())?;
        let after = running_on(&sim);
        Ok(Report {
            first,
            ledger_on: (before, after),
            first_after_crash,
            after_crash,
        })
    })
}

#[allow(dead_code)]
fn main() {
    match run(1) {
        Ok(r) => println!(
            "worker on b answered {}, ledger answered {}; ledger ran on {}, after its crash on {} (answered {})",
            r.first.0, r.first.1, r.ledger_on.0, r.ledger_on.1, r.after_crash
        ),
        Err(e) => {
            eprintln!("cluster_features: {e}");
            std::process::exit(1);
        }
    }
}
