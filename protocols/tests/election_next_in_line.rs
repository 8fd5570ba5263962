//! Next-in-line failover under seeded chaos: one leader per term, agreement,
//! growing terms; after healing exactly one leader known by all. Plus a
//! scripted failover: the first live successor takes over without an election.

use std::time::Duration;

use troupe_protocols::election::{ElectionConfig, ElectionCore, ElectionDurable, NextInLine};
use troupe_protocols::testkit::scenarios::{one_leader, run_election, ElectionObserver, Scenario};
use troupe_protocols::testkit::{check_seeds, ms, recover_state, NetFaults, OracleConfig, Sim};

fn make(id: u32, members: Vec<u32>, d: Option<ElectionDurable<u32>>) -> NextInLine<u32> {
    NextInLine::new(id, members, ElectionConfig::default(), d)
}

#[test]
fn next_in_line_safe_under_chaos_and_one_leader_after() {
    check_seeds(
        "next_in_line_safe_under_chaos_and_one_leader_after",
        300,
        |seed| {
            let n = 3 + (seed % 5) as u32;
            run_election(seed, &Scenario::chaotic(n), false, make).map(|_| ())
        },
    );
}

#[test]
fn the_first_live_successor_takes_over_without_an_election() {
    let members: Vec<u32> = (1..=5).collect();
    let m2 = members.clone();
    let mut sim: Sim<NextInLine<u32>> = Sim::new(
        1,
        members,
        Box::new(move |id, r| make(*id, m2.clone(), recover_state::<NextInLine<u32>>(r))),
        NetFaults::reliable(ms(5)),
        OracleConfig::default(),
    );
    let mut obs = ElectionObserver::default();
    sim.start(&mut obs).unwrap();
    sim.run_for(Duration::from_secs(2), &mut obs).unwrap();
    assert_eq!(one_leader(&sim, true).unwrap().1, 5);
    assert_eq!(sim.core(&1).unwrap().successors(), &[4, 3, 2, 1]);
    // 5 and its first successor 4 die together: 3 is next in line.
    sim.crash(&5, &mut obs).unwrap();
    sim.crash(&4, &mut obs).unwrap();
    sim.reset_counts();
    sim.run_for(Duration::from_secs(2), &mut obs).unwrap();
    let (term, leader) = one_leader(&sim, true).unwrap();
    assert_eq!(leader, 3);
    assert!(term > 0);
    // No election messages: the new leader's announcements (and heartbeats).
    let kinds = sim.sent_counts();
    assert!(
        kinds
            .keys()
            .all(|k| *k == "coordinator" || *k == "heartbeat"),
        "{kinds:?}"
    );
    assert_eq!(sim.core(&1).unwrap().successors(), &[2, 1]);
    assert_eq!(sim.core(&1).unwrap().leader(), Some(&3));
}
