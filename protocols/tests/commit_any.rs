//! The commit family through its run-time choice: algorithms started by
//! their configuration names, wire messages that round-trip, and each
//! algorithm's chaos scenario run through [`AnyCommit`] (fewer seeds than
//! the per-algorithm tests).

use troupe_protocols::commit::{AnyCommit, AnyCommitMsg, CommitAlgorithm, CommitConfig};
use troupe_protocols::driver::WireMessage;
use troupe_protocols::testkit::check_seeds;
use troupe_protocols::testkit::commit::{run_commit, CommitScenario};

#[test]
fn algorithms_are_started_by_name_and_keep_their_guarantees() {
    for name in ["two-phase", "three-phase"] {
        let alg: CommitAlgorithm = name.parse().expect("a known name");
        let sc = match alg {
            CommitAlgorithm::TwoPhase => CommitScenario::chaotic(4),
            CommitAlgorithm::ThreePhase => CommitScenario::three_phase(4),
        };
        check_seeds(
            "algorithms_are_started_by_name_and_keep_their_guarantees",
            20,
            |seed| {
                let o = run_commit(seed, &sc, move |id, m, d| {
                    let core = AnyCommit::new(alg, id, m, CommitConfig::default(), d);
                    assert_eq!(core.algorithm(), alg);
                    core
                })
                .map_err(|e| format!("{name}: {e}"))?;
                if o.ac4_commits == 0 {
                    return Err(format!("{name}: no failure-free commit"));
                }
                Ok(())
            },
        );
    }
    assert_eq!(AnyCommitMsg::<String>::WIRE_NAME, "troupe.commit");
}

#[test]
fn wire_messages_round_trip() {
    use troupe_protocols::commit::two_phase::TwoPhaseMsg;
    let m: AnyCommitMsg<String> = AnyCommitMsg::TwoPhase(TwoPhaseMsg::Inquire {
        tx: 7,
        coordinator: "a".into(),
        participants: vec!["b".into(), "c".into()],
    });
    let bytes = rmp_serde::to_vec_named(&m).unwrap();
    let back: AnyCommitMsg<String> = rmp_serde::from_slice(&bytes).unwrap();
    assert_eq!(back, m);
    // 3PC's termination and election messages, in the compact encoding the
    // framework's codec uses (structs as arrays) and the named one.
    use troupe_protocols::commit::three_phase::ThreePhaseMsg;
    use troupe_protocols::election::bully::BullyMsg;
    let three = [
        ThreePhaseMsg::Terminate {
            tx: 7,
            round: 12,
            coordinator: "a".to_string(),
            participants: vec!["b".into(), "c".into()],
        },
        ThreePhaseMsg::RoundAbort { tx: 7, round: 12 },
        ThreePhaseMsg::Election(BullyMsg::Reject {
            term: 9,
            leader: Some("c".into()),
        }),
        ThreePhaseMsg::Election(BullyMsg::Reject {
            term: 9,
            leader: None,
        }),
    ];
    for m in three.map(AnyCommitMsg::ThreePhase) {
        for bytes in [
            rmp_serde::to_vec(&m).unwrap(),
            rmp_serde::to_vec_named(&m).unwrap(),
        ] {
            let back: AnyCommitMsg<String> = rmp_serde::from_slice(&bytes).unwrap();
            assert_eq!(back, m);
        }
    }
}
