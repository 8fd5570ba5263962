//! Every mutex algorithm under heavier chaos: more crashes (two members down
//! at once), more and longer partitions, more loss and duplication.

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

#[test]
fn every_mutex_survives_heavy_chaos() {
    for alg in MutexAlgorithm::ALL {
        check_seeds("every_mutex_survives_heavy_chaos", 60, |seed| {
            let n = 4 + (seed % 4) as u32;
            run_mutex(seed, &heavy(n), move |id, m, d| {
                AnyMutex::new(alg, id, m, MutexConfig::new("r"), d)
            })
            .map(|_| ())
            .map_err(|e| format!("{alg}: {e}"))
        });
    }
}
