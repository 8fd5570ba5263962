//! Reliable total-order broadcast by Lamport timestamps ("total-lamport")
//! under seeded chaos: loss, duplication, reordering, partitions that heal,
//! crash and restart with unsynced writes lost, and false suspicions from
//! the failure-detector oracle. Integrity, **total order**, FIFO and
//! **causal** order are checked on every delivery at every step (the
//! checker computes each message's causal past itself; the core carries no
//! vector stamp), uniform agreement, validity and drained hold-back queues
//! after healing (see `troupe_protocols::testkit::broadcast`). Failing
//! seeds replay with `TROUPE_SEED=<seed>`.
//!
//! The rule waits for every member, live or not (see
//! `troupe_protocols::broadcast::lamport_total`): the chaos suite has no
//! member crashing for good, and a second test shows that one that does
//! blocks delivery for good without any order being broken meanwhile.

use troupe_protocols::broadcast::{Engine, LamportTotal};
use troupe_protocols::testkit::broadcast::{run_broadcast, BroadcastScenario, OrderChecks};
use troupe_protocols::testkit::check_seeds;

mod broadcast_common;

const CHECKS: OrderChecks = OrderChecks {
    fifo: true,
    causal: true,
    total: true,
};

#[test]
fn lamport_total_order_is_total_causal_and_agrees_under_chaos() {
    broadcast_common::run_suite(
        "lamport_total_order_is_total_causal_and_agrees_under_chaos",
        CHECKS,
        |seed, sc| {
            let sc = BroadcastScenario {
                crash_stop: false,
                ..sc.clone()
            };
            run_broadcast(seed, &sc, |id, m, s| {
                LamportTotal::new(id, m, Default::default(), s)
            })
        },
    );
}

/// A member crashed for good (mid-send, halfway through the chaos) is
/// waited for: after healing, the survivors never deliver the messages
/// stamped after its last one, and every run ends in that liveness
/// failure, never in a safety one (integrity, FIFO, causal or total order,
/// checked on every delivery until then).
#[test]
fn a_member_crashed_for_good_blocks_delivery_but_breaks_no_order() {
    check_seeds(
        "a_member_crashed_for_good_blocks_delivery_but_breaks_no_order",
        20,
        |seed| {
            let n = 3 + (seed % 4) as u32;
            let sc = BroadcastScenario {
                crash_stop: true,
                liveness_bound: std::time::Duration::from_secs(5),
                ..BroadcastScenario::chaotic(n, CHECKS)
            };
            match run_broadcast(seed, &sc, |id, m, s| {
                LamportTotal::new(id, m, Default::default(), s)
            }) {
                Ok(o) => Err(format!("a dead member did not block: {o:?}")),
                Err(e) if e.starts_with("after healing, not done") && !e.contains("lacks []") => {
                    Ok(())
                }
                Err(e) => Err(format!("not (only) blocked: {e}")),
            }
        },
    );
}
