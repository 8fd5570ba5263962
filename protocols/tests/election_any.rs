//! Every election algorithm through [`AnyElection`] (selected by its
//! configuration name) passes the chaos scenario.

use troupe_protocols::election::{AnyElection, ElectionAlgorithm, ElectionConfig};
use troupe_protocols::testkit::check_seeds;
use troupe_protocols::testkit::scenarios::{run_election, Scenario};

#[test]
fn every_election_by_name_is_safe_and_live() {
    for name in ["bully", "ring", "next-in-line"] {
        let alg: ElectionAlgorithm = name.parse().expect("known name");
        let highest = alg != ElectionAlgorithm::NextInLine;
        check_seeds("every_election_by_name_is_safe_and_live", 20, |seed| {
            run_election(seed, &Scenario::chaotic(5), highest, move |id, m, d| {
                AnyElection::new(alg, id, m, ElectionConfig::default(), d)
            })
            .map(|_| ())
            .map_err(|e| format!("{name}: {e}"))
        });
    }
}

#[test]
fn wire_messages_round_trip_through_msgpack() {
    use troupe_protocols::election::bully::BullyMsg;
    use troupe_protocols::election::next_in_line::NextInLineMsg;
    use troupe_protocols::election::ring::RingElectionMsg;
    use troupe_protocols::election::AnyElectionMsg;
    let msgs: Vec<AnyElectionMsg<String>> = vec![
        AnyElectionMsg::Bully(BullyMsg::Reject {
            term: 4,
            leader: Some("node-b".into()),
        }),
        AnyElectionMsg::Ring(RingElectionMsg::Election {
            origin: "node-a".into(),
            ids: vec!["node-a".into(), "node-c".into()],
            max_term: 7,
        }),
        AnyElectionMsg::NextInLine(NextInLineMsg::Heartbeat {
            term: 9,
            successors: vec!["node-c".into()],
        }),
    ];
    for m in msgs {
        let bytes = rmp_serde::to_vec(&m).expect("encode");
        let back: AnyElectionMsg<String> = rmp_serde::from_slice(&bytes).expect("decode");
        assert_eq!(back, m);
    }
}
