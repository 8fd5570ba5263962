//! What the broadcast chaos suites share: 100 seeds, group sizes 3 to 6,
//! floors per run and over the suite so that no run passes vacuously.

use troupe_protocols::testkit::broadcast::{BroadcastOutcome, BroadcastScenario, OrderChecks};
use troupe_protocols::testkit::{check_seeds, seeds};

/// Run `run` over 100 seeds (group sizes 3 to 6) with `checks`, requiring
/// coverage per run and over the suite.
pub fn run_suite(
    name: &str,
    checks: OrderChecks,
    run: impl Fn(u64, &BroadcastScenario) -> Result<BroadcastOutcome, String>,
) {
    let mut total = BroadcastOutcome::default();
    check_seeds(name, 100, |seed| {
        let n = 3 + (seed % 4) as u32;
        let o = run(seed, &BroadcastScenario::chaotic(n, checks))?;
        // A floor per run, so that no seed passes vacuously.
        if o.delivered_messages < 40 || o.checked < 40 * u64::from(n - 1) {
            return Err(format!("too little checked in this run: {o:?}"));
        }
        if checks.causal && o.causal_checked < 1000 {
            return Err(format!("too few causal constraints checked: {o:?}"));
        }
        if checks.total && o.total_checked < 1000 {
            return Err(format!(
                "too few message pairs checked for total order: {o:?}"
            ));
        }
        total.broadcasts += o.broadcasts;
        total.delivered_messages += o.delivered_messages;
        total.checked += o.checked;
        total.causal_checked += o.causal_checked;
        total.total_checked += o.total_checked;
        total.crashes += o.crashes;
        total.sent += o.sent;
        total.collected += o.collected;
        Ok(())
    });
    eprintln!("{name}: {total:?}");
    if seeds(100).len() < 100 {
        return; // a replay of one seed: no coverage to require
    }
    assert!(total.crashes >= 100, "crashes: {total:?}");
    assert!(total.checked > 20_000, "deliveries checked: {total:?}");
}
