//! Every mutex algorithm under heavier chaos: more crashes (two members down
//! at once), more and longer partitions, more loss and duplication; and with
//! holds long enough to span partitions, crashes and restarts.

use std::time::Duration;

use troupe_protocols::mutex::{AnyMutex, MutexAlgorithm, MutexConfig};
use troupe_protocols::testkit::scenarios::{run_mutex, Scenario};
use troupe_protocols::testkit::{check_seeds, ms, NetFaults};

fn heavy(n: u32) -> Scenario {
    let mut sc = Scenario::chaotic(n);
    sc.chaos_time = Duration::from_secs(15);
    sc.crash_prob = 0.03;
    sc.max_crashed = 2;
    sc.partition_prob = 0.01;
    sc.faults = NetFaults {
        loss: 0.15,
        duplicate: 0.15,
        min_delay: ms(1),
        max_delay: ms(80),
    };
    sc.request_prob = 0.1;
    sc
}

/// Runs `sc(seed)` for every algorithm over `seeds` seeds and requires, per
/// algorithm, at least `floor` chaos-phase grants made without exposure to
/// a false suspicion in all (single runs of this heavy a chaos may have
/// none: a false suspicion is nearly always in force).
fn every_algorithm(
    name: &str,
    seeds: u64,
    floor: u64,
    sc: impl Fn(u64) -> (Scenario, MutexConfig),
) {
    for alg in MutexAlgorithm::ALL {
        let (mut grants, mut checked) = (0, 0);
        check_seeds(name, seeds, |seed| {
            let (sc, config) = sc(seed);
            let o = run_mutex(seed, &sc, move |id, m, d| {
                AnyMutex::new(alg, id, m, config.clone(), d)
            })
            .map_err(|e| format!("{alg}: {e}"))?;
            grants += o.chaos_grants;
            checked += o.chaos_checked;
            Ok(())
        });
        assert!(
            checked >= floor,
            "{name}: {alg}: only {checked} of {grants} chaos-phase grants were made without exposure (at least {floor} required)"
        );
    }
}

#[test]
fn every_mutex_survives_heavy_chaos() {
    // 567 to 1209 checked grants per algorithm when the floor was set.
    every_algorithm("every_mutex_survives_heavy_chaos", 60, 300, |seed| {
        let mut sc = heavy(4 + (seed % 4) as u32);
        sc.min_checked = 0;
        (sc, MutexConfig::new("r"))
    });
}

/// Holders keep the lock for 700 ms, across partitions, crashes and
/// restarts of the others (found: a Lamport holder acknowledged a restarted
/// member's earlier-stamped request and let it in; a centralized
/// coordinator forgot a holder from across a healed partition).
#[test]
fn every_mutex_is_safe_with_holds_across_faults() {
    // 162 to 287 checked grants per algorithm when the floor was set.
    every_algorithm(
        "every_mutex_is_safe_with_holds_across_faults",
        40,
        60,
        |seed| {
            let mut sc = Scenario::chaotic(3 + (seed % 5) as u32);
            sc.hold = ms(700);
            sc.min_checked = 0;
            let mut config = MutexConfig::new("r");
            // A ring round of long holds must not look like a lost token.
            config.token_timeout = Duration::from_secs(10);
            (sc, config)
        },
    );
}
