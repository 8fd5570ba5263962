//! Reliable causal broadcast under seeded chaos: loss, duplication,
//! reordering, partitions that heal, crash and restart with unsynced writes
//! lost. Integrity and causal order (checked against a causal past computed by the checker) are checked on every delivery at every
//! step, uniform agreement, validity and drained hold-back queues after
//! healing (see `troupe_protocols::testkit::broadcast`). Failing seeds
//! replay with `TROUPE_SEED=<seed>`.

use troupe_protocols::broadcast::{Causal, Engine};
use troupe_protocols::testkit::broadcast::{run_broadcast, OrderChecks};

mod broadcast_common;

#[test]
fn causal_broadcast_is_ordered_and_agrees_under_chaos() {
    let checks = OrderChecks {
        fifo: true,
        causal: true,
        total: false,
    };
    broadcast_common::run_suite(
        "causal_broadcast_is_ordered_and_agrees_under_chaos",
        checks,
        |seed, sc| {
            run_broadcast(seed, sc, |id, m, s| {
                Causal::new(id, m, Default::default(), s)
            })
        },
    );
}
