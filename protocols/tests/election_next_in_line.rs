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

/// A member waiting for its successor to take over that hears of a newer
/// term without a leader keeps its takeover timer: if the successor stays
/// silent, it still skips it and moves on (it used to wait until some other
/// input came).
#[test]
fn a_leaderless_rejection_does_not_stop_the_wait_for_the_successor() {
    use troupe_framework::membership::{MemberEvent, MemberStatus};
    use troupe_framework::sansio::{Outputs, Protocol, TimerOp};
    use troupe_protocols::election::next_in_line::{NextInLineMsg, NextInLineTimer};

    let mut c = make(1, vec![1, 2, 3], None);
    let mut out = Outputs::new();
    let t = Duration::from_secs(1);
    c.on_start(t, &mut out);
    // 3 leads (term 3) with successors [2, 1]; then 3 is reported down.
    c.on_message(
        t,
        3,
        NextInLineMsg::Coordinator {
            term: 3,
            successors: vec![2, 1],
        },
        &mut out,
    );
    assert_eq!(c.leader(), Some(&3));
    out = Outputs::new();
    c.on_membership(
        t,
        MemberEvent {
            member: 3,
            status: MemberStatus::Down,
            at: t,
        },
        &mut out,
    );
    let armed = |out: &Outputs<u32, _, NextInLineTimer, _>| {
        out.timers.iter().rev().find_map(|op| match op {
            TimerOp::Set {
                timer: NextInLineTimer::Takeover,
                ..
            } => Some(true),
            TimerOp::Cancel(NextInLineTimer::Takeover) => Some(false),
            _ => None,
        })
    };
    assert_eq!(armed(&out), Some(true), "waiting for 2, takeover armed");
    // A newer term, leader unknown (2 is busy taking over, say).
    out = Outputs::new();
    c.on_message(
        t,
        2,
        NextInLineMsg::Reject {
            term: 5,
            leader: None,
        },
        &mut out,
    );
    assert_ne!(
        armed(&out),
        Some(false),
        "the takeover timer must stay armed: {:?}",
        out.timers
    );
    // 2 stays silent: the takeover fires, 1 skips 2 and leads.
    out = Outputs::new();
    c.on_timer(
        t + Duration::from_secs(1),
        NextInLineTimer::Takeover,
        &mut out,
    );
    assert_eq!(
        c.leader(),
        Some(&1),
        "1 took over from the silent successor"
    );
    assert!(c.term() > 5);
}
