//! Eager reliable broadcast under seeded chaos: loss, duplication,
//! reordering, partitions that heal, crash and restart with unsynced writes
//! lost. Integrity (no creation, no duplication) is checked on every
//! delivery at every step, uniform agreement and validity after healing
//! (see `troupe_protocols::testkit::broadcast`). Failing seeds replay with
//! `TROUPE_SEED=<seed>`.

use troupe_protocols::broadcast::{EagerReliable, Engine};
use troupe_protocols::testkit::broadcast::{run_broadcast, OrderChecks};

mod broadcast_common;

#[test]
fn eager_reliable_broadcast_agrees_under_chaos() {
    broadcast_common::run_suite(
        "eager_reliable_broadcast_agrees_under_chaos",
        OrderChecks::default(),
        |seed, sc| {
            run_broadcast(seed, sc, |id, m, s| {
                EagerReliable::new(id, m, Default::default(), s)
            })
        },
    );
}
