//! Three-phase commit under seeded chaos without partitions: coordinator and
//! participant crashes aimed at every protocol step (losing unsynced
//! writes), random crashes, loss, duplication and reordering. AC1–AC3 are
//! checked at every step, AC5 after healing, AC4 on a failure-free batch
//! (see `troupe_protocols::testkit::commit`). Failing seeds replay with
//! `TROUPE_SEED=<seed>`.

use std::collections::BTreeMap;

use troupe_protocols::commit::{CommitConfig, ThreePhase};
use troupe_protocols::testkit::check_seeds;
use troupe_protocols::testkit::commit::{run_commit, CommitOutcome, CommitScenario};

#[test]
fn three_phase_is_atomic_under_crashes_and_a_lossy_network() {
    let name = "three_phase_is_atomic_under_crashes_and_a_lossy_network";
    let mut total = CommitOutcome::default();
    let mut crashes: BTreeMap<String, u64> = BTreeMap::new();
    let mut sent: BTreeMap<&'static str, u64> = BTreeMap::new();
    check_seeds(name, 100, |seed| {
        let n = 3 + (seed % 4) as u32;
        // Compact often, so that forgetting is checked under chaos too.
        let config = CommitConfig {
            compact_every: 1 + (seed % 3) as u32,
            ..CommitConfig::default()
        };
        let o = run_commit(seed, &CommitScenario::three_phase(n), move |id, m, d| {
            ThreePhase::new(id, m, config.clone(), d)
        })?;
        // A floor per run, so that no seed passes vacuously.
        if o.begun < 10 || o.checked < 100 || o.ac4_commits < 3 {
            return Err(format!("too little checked in this run: {o:?}"));
        }
        total.begun += o.begun;
        total.commits += o.commits;
        total.aborts += o.aborts;
        total.checked += o.checked;
        total.ac4_commits += o.ac4_commits;
        total.forgotten += o.forgotten;
        total.compactions += o.compactions;
        for (k, v) in o.step_crashes {
            *crashes.entry(k).or_insert(0) += v;
        }
        for (k, v) in o.sent {
            *sent.entry(k).or_insert(0) += v;
        }
        Ok(())
    });
    eprintln!("{name}: {total:?} step crashes {crashes:?} messages {sent:?}");
    if troupe_protocols::testkit::seeds(100).len() < 100 {
        return; // a replay of one seed: no coverage to require
    }
    assert!(
        total.checked > 10_000,
        "decisions checked: {}",
        total.checked
    );
    assert!(total.commits > 500 && total.aborts > 500, "{total:?}");
    assert!(total.ac4_commits >= 300, "{total:?}");
    // The termination paths ran: requests to the elected leader, the
    // election itself, and aborts decided for a non-participant leader.
    for (kind, floor) in [("terminate", 100), ("election", 1000), ("round-abort", 20)] {
        let n = sent.get(kind).copied().unwrap_or(0);
        assert!(n >= floor, "{kind} messages: {n}");
    }
    assert!(
        total.forgotten > 1000 && total.compactions > 100,
        "{total:?}"
    );
    for step in [
        "coordinator Collecting",
        "coordinator PreCommitting",
        "coordinator Decided",
        "participant Ready",
        "participant PreCommitted",
        "participant Decided",
    ] {
        let n = crashes.get(step).copied().unwrap_or(0);
        assert!(n >= 30, "crashes at {step}: {n}");
    }
}
