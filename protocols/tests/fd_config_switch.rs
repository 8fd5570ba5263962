//! The same cluster scenario run with each detector kind, chosen only by the
//! `[failure_detector]` table of a node's TOML config: protocols (here, the
//! test's assertions) see the same membership behaviour whichever runs.

use std::time::Duration;

use troupe_framework::membership::{FailureDetector, MemberStatus};
use troupe_protocols::fd::sim::{NetConfig, Sim};
use troupe_protocols::fd::{AnyDetector, FailureDetectorConfig, SimId};

const NODE_TOMLS: [&str; 3] = [
    r#"
[node]
name = "n"
listen = "127.0.0.1:7000"

[failure_detector]
kind = "heartbeat"
interval_ms = 500
acceptable_pause_ms = 2000
grace_ms = 3000
"#,
    r#"
[node]
name = "n"

[failure_detector]
kind = "phi-accrual"
threshold = 8.0
heartbeat_interval_ms = 500
acceptable_heartbeat_pause_ms = 2000
grace_ms = 3000
"#,
    r#"
[failure_detector]
kind = "swim"
probe_interval_ms = 500
probe_timeout_ms = 200
indirect_checks = 2
"#,
];

fn run_scenario(toml: &str, seed: u64) -> (String, Vec<Duration>) {
    let cfg = FailureDetectorConfig::from_toml_str(toml).unwrap_or_else(|e| panic!("{e}"));
    cfg.validate_for_cluster(7)
        .unwrap_or_else(|e| panic!("{e}"));
    let ids: Vec<SimId> = (0..7).map(SimId::new).collect();
    let mut sim = Sim::new(
        seed,
        NetConfig {
            loss: 0.02,
            ..NetConfig::default()
        },
    );
    for id in &ids {
        let d = AnyDetector::from_config(*id, &cfg, vec![], seed + u64::from(id.node))
            .unwrap_or_else(|e| panic!("{e}"));
        sim.add_node(*id, d, &ids);
    }
    sim.run_until(Duration::from_secs(15));
    sim.crash(2);
    sim.run_until(Duration::from_secs(75));
    let kind = sim.node(0).map(|d| d.kind()).unwrap_or("none").to_string();
    for o in (0..7).filter(|o| *o != 2) {
        assert_eq!(
            sim.status(o, SimId::new(2)),
            Some(MemberStatus::Down),
            "kind={kind} seed={seed}: node {o} did not declare node 2 down"
        );
        for m in (0..7).filter(|m| *m != 2 && *m != o) {
            assert_eq!(
                sim.status(o, SimId::new(m)),
                Some(MemberStatus::Up),
                "kind={kind} seed={seed}: node {o} sees live node {m} not up"
            );
        }
    }
    let false_downs = sim
        .events()
        .iter()
        .filter(|e| e.event.status == MemberStatus::Down && e.event.member != SimId::new(2))
        .count();
    assert_eq!(false_downs, 0, "kind={kind} seed={seed}: false positives");
    let times = sim
        .first_reports(SimId::new(2), MemberStatus::Down, Duration::from_secs(15))
        .into_iter()
        .map(|(_, t)| t - Duration::from_secs(15))
        .collect();
    (kind, times)
}

#[test]
fn same_scenario_with_each_kind_from_toml() {
    let mut kinds = Vec::new();
    for toml in NODE_TOMLS {
        for seed in [11, 12, 13] {
            let (kind, times) = run_scenario(toml, seed);
            assert_eq!(times.len(), 6, "kind={kind} seed={seed}");
            assert!(
                times.iter().all(|t| *t < Duration::from_secs(60)),
                "kind={kind} seed={seed}: {times:?}"
            );
            kinds.push(kind);
        }
    }
    kinds.dedup();
    assert_eq!(kinds, vec!["heartbeat", "phi-accrual", "swim"]);
}

#[test]
fn phi_is_observable_through_any_detector() {
    let cfg = FailureDetectorConfig::from_toml_str(NODE_TOMLS[1]).unwrap_or_else(|e| panic!("{e}"));
    let ids: Vec<SimId> = (0..3).map(SimId::new).collect();
    let mut sim = Sim::new(5, NetConfig::default());
    for id in &ids {
        let d = AnyDetector::from_config(*id, &cfg, vec![], 5).unwrap_or_else(|e| panic!("{e}"));
        sim.add_node(*id, d, &ids);
    }
    sim.run_until(Duration::from_secs(10));
    sim.crash(1);
    sim.run_until(Duration::from_secs(14));
    let phis = sim.node(0).map(|d| d.phis()).unwrap_or_default();
    assert_eq!(phis.len(), 2);
    let phi_of = |n: u32| phis.iter().find(|(id, _)| id.node == n).map(|(_, p)| *p);
    let (alive, dead) = (phi_of(2).unwrap_or(f64::NAN), phi_of(1).unwrap_or(f64::NAN));
    assert!(alive < 1.0, "phi of a live peer {alive}");
    assert!(dead > alive && dead > 3.0, "phi of a crashed peer {dead}");
}
