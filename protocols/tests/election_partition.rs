//! Partitions: bully and ring election elect one leader per side — two
//! leaders at once, necessarily in different terms — and after healing the
//! highest id leads in a term above both. Members reject an older term.

use std::time::Duration;

use troupe_framework::sansio::SnapshotCore;
use troupe_framework::sansio::{Outputs, Protocol};
use troupe_protocols::election::bully::BullyMsg;
use troupe_protocols::election::{
    Bully, ElectionConfig, ElectionCore, ElectionDurable, ElectionEvent, NextInLine, RingElection,
};
use troupe_protocols::testkit::scenarios::{one_leader, ElectionObserver};
use troupe_protocols::testkit::{ms, recover_state, NetFaults, OracleConfig, Sim, SimProtocol};

fn two_leaders_then_one<P>(
    make: impl Fn(u32, Vec<u32>, Option<ElectionDurable<u32>>) -> P + 'static,
    highest: bool,
) where
    P: SimProtocol<Id = u32, Event = ElectionEvent<u32>>
        + ElectionCore
        + SnapshotCore<State = ElectionDurable<u32>>,
{
    let members: Vec<u32> = (1..=5).collect();
    let m2 = members.clone();
    let mut sim: Sim<P> = Sim::new(
        7,
        members,
        Box::new(move |id, r| make(*id, m2.clone(), recover_state::<P>(r))),
        NetFaults::reliable(ms(5)),
        OracleConfig::default(),
    );
    let mut obs = ElectionObserver::default();
    sim.start(&mut obs).unwrap();
    sim.run_for(Duration::from_secs(3), &mut obs).unwrap();
    let (t0, l0) = one_leader(&sim, true).unwrap();
    assert_eq!(l0, 5);

    sim.partition(&[vec![1, 2, 3]], &mut obs).unwrap();
    sim.run_for(Duration::from_secs(4), &mut obs).unwrap();
    let side_a: Vec<(u64, Option<u32>)> = [1, 2, 3]
        .iter()
        .map(|id| {
            let c = sim.core(id).unwrap();
            (c.term(), c.leader().copied())
        })
        .collect();
    let side_b: Vec<(u64, Option<u32>)> = [4, 5]
        .iter()
        .map(|id| {
            let c = sim.core(id).unwrap();
            (c.term(), c.leader().copied())
        })
        .collect();
    let (ta, la) = side_a[0];
    let (tb, lb) = side_b[0];
    assert!(
        side_a.iter().all(|v| *v == (ta, la)),
        "side A agrees: {side_a:?}"
    );
    assert!(
        side_b.iter().all(|v| *v == (tb, lb)),
        "side B agrees: {side_b:?}"
    );
    assert_eq!(lb, Some(5));
    if highest {
        assert_eq!(la, Some(3));
    }
    let la = la.expect("side A has a leader");
    assert!(sim.core(&la).unwrap().is_leader() && sim.core(&5).unwrap().is_leader());
    assert_ne!(ta, tb, "two leaders at once, never in the same term");
    assert!(ta > t0);

    sim.heal(&mut obs).unwrap();
    sim.run_for(Duration::from_secs(4), &mut obs).unwrap();
    let (tf, lf) = one_leader(&sim, highest).unwrap();
    assert!(tf >= ta.max(tb), "the newer term wins: {tf} vs {ta}/{tb}");
    if highest {
        assert_eq!(lf, 5);
        assert!(tf > ta.max(tb), "a fresh election above both terms");
    }
    // Every term had at most one leader throughout (checked on every step).
    assert!(obs.leaders().len() >= 2, "{:?}", obs.leaders());
}

#[test]
fn bully_partition_elects_one_leader_per_side_then_the_highest() {
    two_leaders_then_one(
        |id, m, d| Bully::new(id, m, ElectionConfig::default(), d),
        true,
    );
}

#[test]
fn ring_partition_elects_one_leader_per_side_then_the_highest() {
    two_leaders_then_one(
        |id, m, d| RingElection::new(id, m, ElectionConfig::default(), d),
        true,
    );
}

#[test]
fn next_in_line_partition_promotes_a_successor_then_the_newer_term_wins() {
    two_leaders_then_one(
        |id, m, d| NextInLine::new(id, m, ElectionConfig::default(), d),
        false,
    );
}

#[test]
fn a_follower_rejects_a_leader_of_an_older_term() {
    let durable = ElectionDurable {
        term: 10,
        max_term: 10,
        successors: vec![],
    };
    let mut b = Bully::new(
        4,
        vec![1, 2, 3, 4],
        ElectionConfig::default(),
        Some(durable),
    );
    let mut out = Outputs::new();
    b.on_message(ms(1), 2, BullyMsg::Coordinator { term: 3 }, &mut out);
    assert_eq!(b.term(), 10);
    assert_ne!(b.leader(), Some(&2));
    assert!(out
        .sends
        .iter()
        .any(|(to, m)| *to == 2 && matches!(m, BullyMsg::Reject { term: 10, .. })));
}
