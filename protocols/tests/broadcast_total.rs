//! Reliable total-order broadcast (a sequencer chosen by an embedded bully
//! election, with failover) under seeded chaos: loss, duplication,
//! reordering, partitions that heal, crash and restart with unsynced
//! writes lost (the sequencer included), and false suspicions from the
//! failure-detector oracle. Integrity and total order are checked on every
//! delivery at every step, uniform agreement, validity and drained
//! hold-back queues after healing (see
//! `troupe_protocols::testkit::broadcast`). Failing seeds replay with
//! `TROUPE_SEED=<seed>`.
//!
//! The failover suite crashes the highest member (bully's leader, the
//! sequencer when the group is whole) for good halfway through the chaos:
//! total order must hold at every step across the change of sequencer, and
//! after healing every message broadcast then must be delivered by every
//! survivor, which only a new sequencer can order.

use troupe_protocols::broadcast::{Engine, Total};
use troupe_protocols::testkit::broadcast::{run_broadcast, BroadcastScenario, OrderChecks};

mod broadcast_common;

const CHECKS: OrderChecks = OrderChecks {
    fifo: false,
    causal: false,
    total: true,
};

#[test]
fn total_order_broadcast_is_ordered_and_agrees_under_chaos() {
    broadcast_common::run_suite(
        "total_order_broadcast_is_ordered_and_agrees_under_chaos",
        CHECKS,
        |seed, sc| {
            let sc = BroadcastScenario {
                crash_stop: false,
                ..sc.clone()
            };
            run_broadcast(seed, &sc, |id, m, s| {
                Total::new(id, m, Default::default(), s)
            })
        },
    );
}

#[test]
fn total_order_fails_over_when_the_sequencer_crashes_for_good() {
    broadcast_common::run_suite(
        "total_order_fails_over_when_the_sequencer_crashes_for_good",
        CHECKS,
        |seed, sc| {
            let sc = BroadcastScenario {
                crash_stop: true,
                stop_victim: Some(sc.nodes),
                ..sc.clone()
            };
            run_broadcast(seed, &sc, |id, m, s| {
                Total::new(id, m, Default::default(), s)
            })
        },
    );
}
