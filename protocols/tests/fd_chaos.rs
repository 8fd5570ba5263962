//! The failure detectors under seeded chaos (crashes, restarts, pauses,
//! partitions, loss), their properties checked at every step
//! (`troupe_protocols::fd::chaos`): completeness within each detector's
//! bound, no false `Down` after a calm window, everyone `Up` (and the dead
//! `Down`) once healed. 100 seeds per kind; a failure prints its seed and
//! replays with `TROUPE_SEED=<seed>`.
//!
//! And the claim of BENCHMARKS.md and the README, "no false positives at
//! 5 % loss", for all three detectors.

use std::time::Duration;

use troupe_framework::membership::MemberStatus;
use troupe_protocols::fd::chaos::{self, Options, Report};
use troupe_protocols::fd::sim::{NetConfig, Sim};
use troupe_protocols::fd::{AnyDetector, FailureDetectorConfig, SimId};
use troupe_protocols::testkit::{check_seeds, seeds};

fn config(kind: &str) -> FailureDetectorConfig {
    FailureDetectorConfig::from_toml_str(&format!("[failure_detector]\nkind = \"{kind}\"\n"))
        .unwrap_or_else(|e| panic!("config for {kind}: {e}"))
}

/// Runs the chaos over the suite's seeds and checks, over all of them,
/// that each property was exercised.
fn chaos_for(kind: &str, name: &str) {
    let cfg = config(kind);
    let mut total = Report::default();
    check_seeds(name, 100, |seed| {
        let r = chaos::run(&cfg, seed, &Options::default())?;
        total.crashes += r.crashes;
        total.detections_checked += r.detections_checked;
        total.downs_checked += r.downs_checked;
        total.calm_steps += r.calm_steps;
        total.tolerated_false_downs += r.tolerated_false_downs;
        Ok(())
    });
    eprintln!("{kind}: {total:?}");
    // Not vacuous (unless one seed was asked for).
    if seeds(100).len() >= 100 {
        assert!(total.crashes >= 100, "{kind}: too few crashes: {total:?}");
        assert!(
            total.detections_checked >= 100,
            "{kind}: too few detections checked against the bound: {total:?}"
        );
        assert!(
            total.calm_steps >= 100_000,
            "{kind}: too few steps with a calm accuracy window: {total:?}"
        );
        assert!(
            total.tolerated_false_downs > 0,
            "{kind}: the faults never caused a false Down: they are too weak to test accuracy: {total:?}"
        );
    }
}

#[test]
fn heartbeat_under_chaos() {
    chaos_for("heartbeat", "heartbeat_under_chaos");
}

#[test]
fn phi_accrual_under_chaos() {
    chaos_for("phi-accrual", "phi_accrual_under_chaos");
}

#[test]
fn swim_under_chaos() {
    chaos_for("swim", "swim_under_chaos");
}

/// 32 nodes, 10 virtual minutes at 5 % loss: not one `Down`.
fn no_false_positives_at_five_percent_loss(kind: &str) {
    let cfg = config(kind);
    for seed in [1u64, 2, 3] {
        let ids: Vec<SimId> = (0..32).map(SimId::new).collect();
        let net = NetConfig {
            loss: 0.05,
            ..NetConfig::default()
        };
        let mut sim: Sim<AnyDetector<SimId>> = Sim::new(seed, net);
        sim.set_count_bytes(false);
        sim.record_only(&[MemberStatus::Down]);
        for id in &ids {
            let d = AnyDetector::from_config(*id, &cfg, vec![], seed ^ u64::from(id.node) << 32)
                .unwrap();
            sim.add_node(*id, d, &ids);
        }
        sim.run_until(Duration::from_secs(600));
        assert_eq!(
            sim.events().len(),
            0,
            "{kind} seed {seed}: false Down events at 5 % loss: {:?}",
            &sim.events()[..sim.events().len().min(5)]
        );
    }
}

#[test]
fn heartbeat_has_no_false_positives_at_five_percent_loss() {
    no_false_positives_at_five_percent_loss("heartbeat");
}

#[test]
fn phi_accrual_has_no_false_positives_at_five_percent_loss() {
    no_false_positives_at_five_percent_loss("phi-accrual");
}

#[test]
fn swim_has_no_false_positives_at_five_percent_loss() {
    no_false_positives_at_five_percent_loss("swim");
}
