//! Every election algorithm under heavier chaos: up to two members down at
//! once, more and longer partitions, more loss and duplication.

use std::time::Duration;

use troupe_protocols::election::{AnyElection, ElectionAlgorithm, ElectionConfig};
use troupe_protocols::testkit::scenarios::{run_election, Scenario};
use troupe_protocols::testkit::{check_seeds, ms, NetFaults};

#[test]
fn every_election_survives_heavy_chaos() {
    for alg in ElectionAlgorithm::ALL {
        let highest = alg != ElectionAlgorithm::NextInLine;
        check_seeds("every_election_survives_heavy_chaos", 100, |seed| {
            let mut sc = Scenario::chaotic(4 + (seed % 5) as u32);
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
            run_election(seed, &sc, highest, move |id, m, d| {
                AnyElection::new(alg, id, m, ElectionConfig::default(), d)
            })
            .map(|_| ())
            .map_err(|e| format!("{alg}: {e}"))
        });
    }
}
