//! Every algorithm through [`AnyMutex`] (selected by its configuration name)
//! passes the same chaos scenario; foreign messages are dropped.

use std::time::Duration;

use troupe_framework::sansio::{Outputs, Protocol};
use troupe_protocols::mutex::ricart_agrawala::RaMsg;
use troupe_protocols::mutex::{AnyMutex, AnyMutexMsg, MutexAlgorithm, MutexConfig, MutexCore};
use troupe_protocols::testkit::check_seeds;
use troupe_protocols::testkit::scenarios::{run_mutex, Scenario};

#[test]
fn every_algorithm_by_name_is_safe_and_live() {
    for name in ["centralized", "ricart-agrawala", "token-ring", "lamport"] {
        let alg: MutexAlgorithm = name.parse().expect("known name");
        check_seeds("every_algorithm_by_name_is_safe_and_live", 10, |seed| {
            let mut sc = Scenario::chaotic(4);
            sc.chaos_time = Duration::from_secs(10);
            // At least 9 per run when this floor was set.
            sc.min_checked = 5;
            run_mutex(seed, &sc, move |id, m, d| {
                AnyMutex::new(alg, id, m, MutexConfig::new("r"), d)
            })
            .map(|_| ())
            .map_err(|e| format!("{name}: {e}"))
        });
    }
}

#[test]
fn a_message_of_another_algorithm_is_dropped() {
    let mut m = AnyMutex::new(
        MutexAlgorithm::Lamport,
        1u32,
        vec![1, 2],
        MutexConfig::new("r"),
        None,
    );
    let mut out = Outputs::new();
    m.on_message(
        Duration::ZERO,
        2,
        AnyMutexMsg::RicartAgrawala(RaMsg::Request { ts: 1, token: 0 }),
        &mut out,
    );
    assert!(out.is_empty());
    assert_eq!(m.foreign_messages(), 1);
    assert_eq!(m.algorithm(), MutexAlgorithm::Lamport);
    assert!(!m.is_waiting());
}

#[test]
fn wire_messages_round_trip_through_msgpack() {
    use troupe_protocols::mutex::centralized::CentralMsg;
    use troupe_protocols::mutex::lamport::LamportMsg;
    use troupe_protocols::mutex::token_ring::RingMsg;
    let msgs = vec![
        AnyMutexMsg::Centralized(CentralMsg::State {
            round: 3,
            holding: Some((1, 9)),
            waiting: None,
            token: 9,
        }),
        AnyMutexMsg::RicartAgrawala(RaMsg::Reply {
            req_ts: 4,
            token: 2,
        }),
        AnyMutexMsg::TokenRing(RingMsg::Token {
            gen: 5,
            hop: 7,
            counter: 11,
        }),
        AnyMutexMsg::Lamport(LamportMsg::Ack {
            req_ts: 1,
            ts: 2,
            pending: Some(1),
            token: 0,
        }),
    ];
    for m in msgs {
        let bytes = rmp_serde::to_vec(&m).expect("encode");
        let back: AnyMutexMsg = rmp_serde::from_slice(&bytes).expect("decode");
        assert_eq!(back, m);
    }
    let alg: MutexAlgorithm =
        rmp_serde::from_slice(&rmp_serde::to_vec(&MutexAlgorithm::TokenRing).expect("encode"))
            .expect("decode");
    assert_eq!(alg, MutexAlgorithm::TokenRing);
}
