//! Failure detectors on the deterministic simulator: completeness after a
//! crash, no false `Down` for a slow-but-tolerated node, SWIM refutation,
//! partition healing, restarts with a new incarnation, joins and leaves —
//! for each detector kind, built from TOML the way a node builds it.

use std::time::Duration;

use troupe_framework::membership::{FailureDetector, MemberStatus};
use troupe_protocols::fd::sim::{DelayModel, NetConfig, Sim};
use troupe_protocols::fd::{AnyDetector, FailureDetectorConfig, SimId};

const KINDS: [&str; 3] = ["heartbeat", "phi-accrual", "swim"];
const SEEDS: [u64; 3] = [1, 2, 3];

fn secs(s: u64) -> Duration {
    Duration::from_secs(s)
}

fn config(kind: &str) -> FailureDetectorConfig {
    FailureDetectorConfig::from_toml_str(&format!("[failure_detector]\nkind = \"{kind}\"\n"))
        .unwrap_or_else(|e| panic!("config for {kind}: {e}"))
}

fn detector(
    id: SimId,
    cfg: &FailureDetectorConfig,
    seeds: Vec<SimId>,
    seed: u64,
) -> AnyDetector<SimId> {
    AnyDetector::from_config(
        id,
        cfg,
        seeds,
        seed ^ (u64::from(id.node) << 32) ^ u64::from(id.incarnation),
    )
    .unwrap_or_else(|e| panic!("detector: {e}"))
}

/// `n` nodes that all know each other from the start.
fn cluster(kind: &str, n: u32, seed: u64, net: NetConfig) -> Sim<AnyDetector<SimId>> {
    let cfg = config(kind);
    let ids: Vec<SimId> = (0..n).map(SimId::new).collect();
    let mut sim = Sim::new(seed, net);
    for id in &ids {
        sim.add_node(*id, detector(*id, &cfg, vec![], seed), &ids);
    }
    sim
}

fn all_ids(n: u32) -> Vec<SimId> {
    (0..n).map(SimId::new).collect()
}

/// Every running node other than `member`'s node sees `member` as `want`.
fn assert_all_see(sim: &Sim<AnyDetector<SimId>>, member: SimId, want: MemberStatus, ctx: &str) {
    for o in 0..sim.len() as u32 {
        if o == member.node || !sim.is_running(o) {
            continue;
        }
        assert_eq!(
            sim.status(o, member),
            Some(want),
            "{ctx}: node {o} sees {member:?} as {:?} at {:?}, want {want:?}",
            sim.status(o, member),
            sim.now()
        );
    }
}

fn downs_of(sim: &Sim<AnyDetector<SimId>>, member: SimId) -> usize {
    sim.events()
        .iter()
        .filter(|o| o.event.member == member && o.event.status == MemberStatus::Down)
        .count()
}

#[test]
fn crashed_node_is_declared_down_by_every_live_member() {
    for kind in KINDS {
        for seed in SEEDS {
            let ctx = format!("kind={kind} seed={seed}");
            let net = NetConfig {
                loss: 0.01,
                ..NetConfig::default()
            };
            let mut sim = cluster(kind, 10, seed, net);
            sim.run_until(secs(20));
            sim.crash(4);
            sim.run_until(secs(80));
            assert_all_see(&sim, SimId::new(4), MemberStatus::Down, &ctx);
            let reports = sim.first_reports(SimId::new(4), MemberStatus::Down, secs(20));
            assert_eq!(reports.len(), 9, "{ctx}: {reports:?}");
            for other in (0..10).filter(|n| *n != 4) {
                assert_all_see(&sim, SimId::new(other), MemberStatus::Up, &ctx);
            }
        }
    }
}

#[test]
fn slow_but_alive_node_under_tolerance_is_not_declared_down() {
    for kind in KINDS {
        for seed in SEEDS {
            let ctx = format!("kind={kind} seed={seed}");
            // Jittery network (exponential tail) and 2 s stalls of node 3
            // every 30 s: within every detector's default tolerance.
            let net = NetConfig {
                loss: 0.0,
                delay: DelayModel::Exponential {
                    min: Duration::from_millis(1),
                    mean_extra: Duration::from_millis(30),
                },
            };
            let mut sim = cluster(kind, 8, seed, net);
            for round in 0..6 {
                sim.run_until(secs(10 + 30 * round));
                sim.pause(3, secs(2));
            }
            sim.run_until(secs(200));
            let downs: usize = (0..8).map(|n| downs_of(&sim, SimId::new(n))).sum();
            assert_eq!(downs, 0, "{ctx}: false Down events");
            for n in 0..8 {
                assert_all_see(&sim, SimId::new(n), MemberStatus::Up, &ctx);
            }
        }
    }
}

#[test]
fn swim_refutes_a_false_suspicion() {
    for seed in SEEDS {
        let ctx = format!("seed={seed}");
        let mut sim = cluster("swim", 6, seed, NetConfig::default());
        sim.run_until(secs(10));
        // Node 2 stalls long enough to be suspected but shorter than the
        // suspicion timeout; when it resumes it hears of the suspicion and
        // refutes it with a higher incarnation.
        sim.pause(2, Duration::from_millis(3500));
        sim.run_until(secs(40));
        let suspects = sim.first_reports(SimId::new(2), MemberStatus::Suspect, secs(10));
        assert!(
            !suspects.is_empty(),
            "{ctx}: nobody suspected the paused node"
        );
        assert_eq!(
            downs_of(&sim, SimId::new(2)),
            0,
            "{ctx}: suspicion not refuted in time"
        );
        let AnyDetector::Swim(s) = sim.node(2).expect("running") else {
            panic!("not swim")
        };
        assert!(s.incarnation() >= 1, "{ctx}: node 2 never refuted");
        assert_all_see(&sim, SimId::new(2), MemberStatus::Up, &ctx);
    }
}

#[test]
fn partition_heals_and_members_come_back_up() {
    for kind in KINDS {
        for seed in SEEDS {
            let ctx = format!("kind={kind} seed={seed}");
            let mut sim = cluster(kind, 8, seed, NetConfig::default());
            sim.run_until(secs(10));
            sim.partition(&[vec![0, 1, 2, 3], vec![4, 5, 6, 7]]);
            sim.run_until(secs(100));
            // Each side sees the other side Down and its own side Up.
            assert_eq!(
                sim.status(5, SimId::new(1)),
                Some(MemberStatus::Down),
                "{ctx}"
            );
            assert_eq!(
                sim.status(1, SimId::new(2)),
                Some(MemberStatus::Up),
                "{ctx}"
            );
            sim.heal();
            sim.run_until(secs(160));
            for n in 0..8 {
                assert_all_see(
                    &sim,
                    SimId::new(n),
                    MemberStatus::Up,
                    &format!("{ctx} (healed)"),
                );
            }
        }
    }
}

#[test]
fn restarted_node_with_new_incarnation_is_accepted() {
    for kind in KINDS {
        for seed in SEEDS {
            let ctx = format!("kind={kind} seed={seed}");
            let cfg = config(kind);
            let mut sim = cluster(kind, 6, seed, NetConfig::default());
            sim.run_until(secs(10));
            sim.crash(5);
            sim.run_until(secs(60));
            assert_all_see(&sim, SimId::new(5), MemberStatus::Down, &ctx);
            let new = SimId {
                node: 5,
                incarnation: 1,
            };
            // SWIM rejoins through a seed; the heartbeat detectors are
            // configured with the member list.
            let (seeds, members) = if kind == "swim" {
                (vec![SimId::new(0)], vec![])
            } else {
                (vec![], all_ids(6))
            };
            sim.restart(new, detector(new, &cfg, seeds, seed), &members);
            sim.run_until(secs(90));
            assert_all_see(&sim, new, MemberStatus::Up, &ctx);
            for o in 0..5 {
                assert_eq!(
                    sim.status(o, SimId::new(5)),
                    None,
                    "{ctx}: old life still in view of {o}"
                );
            }
            let view = sim.node(5).expect("running").view();
            assert_eq!(view.len(), 5, "{ctx}: restarted node's view {view:?}");
            assert!(
                view.iter().all(|(_, s)| *s == MemberStatus::Up),
                "{ctx}: {view:?}"
            );
        }
    }
}

#[test]
fn quick_restart_replaces_the_old_life_before_detection() {
    for kind in KINDS {
        let seed = 9;
        let ctx = format!("kind={kind} seed={seed}");
        let cfg = config(kind);
        let mut sim = cluster(kind, 5, seed, NetConfig::default());
        sim.run_until(secs(10));
        let new = SimId {
            node: 1,
            incarnation: 1,
        };
        let (seeds, members) = if kind == "swim" {
            (vec![SimId::new(0)], vec![])
        } else {
            (vec![], all_ids(5))
        };
        sim.restart(new, detector(new, &cfg, seeds, seed), &members);
        sim.run_until(secs(20));
        assert_all_see(&sim, new, MemberStatus::Up, &ctx);
        // The old life was reported Down (replaced) by everyone.
        assert_eq!(
            sim.first_reports(SimId::new(1), MemberStatus::Down, secs(10))
                .len(),
            4,
            "{ctx}"
        );
    }
}

#[test]
fn swim_nodes_join_through_a_seed() {
    for seed in SEEDS {
        let ctx = format!("seed={seed}");
        let cfg = config("swim");
        let mut sim = Sim::new(seed, NetConfig::default());
        for n in 0..20 {
            let id = SimId::new(n);
            let seeds = if n == 0 { vec![] } else { vec![SimId::new(0)] };
            sim.add_node(id, detector(id, &cfg, seeds, seed), &[]);
            sim.run_for(Duration::from_millis(300));
        }
        sim.run_until(secs(40));
        for n in 0..20 {
            assert_all_see(&sim, SimId::new(n), MemberStatus::Up, &ctx);
            assert_eq!(sim.node(n).expect("running").view().len(), 19, "{ctx}");
        }
        // And detection works on the joined cluster.
        sim.crash(7);
        sim.run_until(secs(100));
        assert_all_see(&sim, SimId::new(7), MemberStatus::Down, &ctx);
    }
}

#[test]
fn graceful_leave_is_reported_left() {
    for kind in KINDS {
        for seed in SEEDS {
            let ctx = format!("kind={kind} seed={seed}");
            let mut sim = cluster(kind, 12, seed, NetConfig::default());
            sim.run_until(secs(10));
            sim.command(6, |d, now, out| d.leave(now, out));
            sim.run_until(Duration::from_millis(10_200));
            sim.crash(6);
            sim.run_until(secs(60));
            assert_all_see(&sim, SimId::new(6), MemberStatus::Left, &ctx);
            assert_eq!(downs_of(&sim, SimId::new(6)), 0, "{ctx}");
        }
    }
}

/// Periods (1 s each) between the first and the last live member's `Down`
/// report of a crashed node, in a cluster of `n` SWIM nodes built from
/// `toml_extra`, averaged over crashes of 4 different nodes.
fn swim_dissemination_periods(n: u32, seed: u64, toml_extra: &str) -> f64 {
    let cfg = FailureDetectorConfig::from_toml_str(&format!(
        "[failure_detector]\nkind = \"swim\"\n{toml_extra}\n"
    ))
    .unwrap_or_else(|e| panic!("config: {e}"));
    let ids = all_ids(n);
    let mut sim = Sim::new(seed, NetConfig::default());
    for id in &ids {
        sim.add_node(*id, detector(*id, &cfg, vec![], seed), &ids);
    }
    let mut total = 0.0;
    let victims = [3, 17, 29, 41];
    for (i, v) in victims.iter().enumerate() {
        let at = secs(20 + 60 * i as u64);
        sim.run_until(at);
        sim.crash(*v);
        sim.run_until(at + secs(60));
        let reports = sim.first_reports(SimId::new(*v), MemberStatus::Down, at);
        let live = (0..n).filter(|o| sim.is_running(*o)).count();
        assert_eq!(reports.len(), live, "seed {seed} victim {v}: {reports:?}");
        let first = reports.iter().map(|r| r.1).min().unwrap_or(at);
        let last = reports.iter().map(|r| r.1).max().unwrap_or(at);
        total += (last - first).as_secs_f64();
    }
    total / victims.len() as f64
}

#[test]
fn swim_gossip_spreads_a_death_in_fewer_periods_than_piggybacking_alone() {
    for seed in SEEDS {
        let with = swim_dissemination_periods(64, seed, "gossip_nodes = 3");
        let without = swim_dissemination_periods(64, seed, "gossip_nodes = 0");
        assert!(
            with < without * 0.7,
            "seed {seed}: {with:.2} periods with gossip vs {without:.2} without"
        );
    }
}
