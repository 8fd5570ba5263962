//! Ring election under seeded chaos: one leader per term, agreement, growing
//! terms; after healing, the highest live id leads, known by all.

use troupe_protocols::election::{ElectionConfig, ElectionDurable, RingElection};
use troupe_protocols::testkit::check_seeds;
use troupe_protocols::testkit::scenarios::{run_election, Scenario};

fn make(id: u32, members: Vec<u32>, d: Option<ElectionDurable<u32>>) -> RingElection<u32> {
    RingElection::new(id, members, ElectionConfig::default(), d)
}

#[test]
fn ring_election_safe_under_chaos_and_highest_leads_after() {
    check_seeds(
        "ring_election_safe_under_chaos_and_highest_leads_after",
        300,
        |seed| {
            let n = 3 + (seed % 5) as u32;
            run_election(seed, &Scenario::chaotic(n), true, make).map(|_| ())
        },
    );
}
