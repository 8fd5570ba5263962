//! The same cluster scenario with each failure detector, chosen by config
//! text only: a crashed node is declared Down (by name) on every live node,
//! and comes back Up when it restarts as a new incarnation.

use std::time::Duration;

use troupe::failure_detector::start_failure_detector;
use troupe::prelude::*;
use troupe::protocols::fd::FailureDetectorConfig;

const NAMES: [&str; 4] = ["n1", "n2", "n3", "n4"];

fn peers_of(me: &str) -> Vec<String> {
    NAMES
        .iter()
        .filter(|n| **n != me)
        .map(|n| n.to_string())
        .collect()
}

fn status(cluster: &SimCluster, at: &str, of: &str) -> Option<MemberStatus> {
    cluster
        .node(at)
        .and_then(|n| n.membership().status(&of.to_string()))
}

fn scenario(toml: &'static str, seed: u64) {
    run_virtual(move || async move {
        let config = FailureDetectorConfig::from_toml_str(toml).unwrap();
        let mut cluster = SimCluster::new(seed, FaultPlan::reliable());
        let cfg = config.clone();
        cluster.on_start(move |node: Node| {
            let cfg = cfg.clone();
            async move {
                let peers = peers_of(node.name());
                start_failure_detector(&node, &cfg, &peers).await.unwrap();
            }
        });
        for n in NAMES {
            cluster.add_node(n).await.unwrap();
        }
        tokio::time::sleep(Duration::from_secs(10)).await;
        for a in NAMES {
            for b in NAMES.iter().filter(|b| **b != a) {
                assert_eq!(
                    status(&cluster, a, b),
                    Some(MemberStatus::Up),
                    "{toml} seed {seed}: {a} does not see {b} up"
                );
            }
        }
        cluster.crash("n3");
        tokio::time::sleep(Duration::from_secs(60)).await;
        for a in ["n1", "n2", "n4"] {
            assert_eq!(
                status(&cluster, a, "n3"),
                Some(MemberStatus::Down),
                "{toml} seed {seed}: {a} did not declare n3 down"
            );
            for b in ["n1", "n2", "n4"].iter().filter(|b| **b != a) {
                assert_eq!(
                    status(&cluster, a, b),
                    Some(MemberStatus::Up),
                    "{toml} seed {seed}: false positive on {a} about {b}"
                );
            }
        }
        cluster.restart("n3").await.unwrap();
        tokio::time::sleep(Duration::from_secs(30)).await;
        for a in NAMES {
            for b in NAMES.iter().filter(|b| **b != a) {
                assert_eq!(
                    status(&cluster, a, b),
                    Some(MemberStatus::Up),
                    "{toml} seed {seed}: after restart {a} does not see {b} up"
                );
            }
        }
    });
}

#[test]
fn heartbeat_from_config() {
    scenario("[failure_detector]\nkind = \"heartbeat\"\n", 1);
}

#[test]
fn phi_accrual_from_config() {
    scenario("[failure_detector]\nkind = \"phi-accrual\"\n", 2);
}

#[test]
fn swim_from_config() {
    scenario(
        "[failure_detector]\nkind = \"swim\"\nindirect_checks = 2\n",
        3,
    );
}
