//! Raft under seeded chaos: loss, duplication, reordering, partitions that
//! heal, crashes and restarts that lose unsynced writes. Safety is checked
//! after every step (`testkit::raft`), liveness after healing.
//! Replay a failing seed with `TROUPE_SEED=<seed>`.

use troupe_protocols::testkit::check_seeds;
use troupe_protocols::testkit::raft::{run_kv_raft, OpEnd, RaftScenario};

#[test]
fn raft_kv_is_safe_under_chaos_and_live_after_healing() {
    let mut applied = 0;
    let mut installs = 0;
    let mut returned = 0;
    check_seeds("raft_kv_is_safe_under_chaos", 100, |seed| {
        let out = run_kv_raft(seed, &RaftScenario::for_seed(seed))?;
        applied += out.observer.applied_events;
        installs += out.observer.installs;
        returned += out.returned;
        let _ = out
            .history
            .iter()
            .filter(|o| o.end == OpEnd::Unknown)
            .count();
        Ok(())
    });
    eprintln!("applied {applied}, snapshot installs {installs}, client ops returned {returned}");
    assert!(
        applied > 1000,
        "too few entries applied to mean anything: {applied}"
    );
}

#[test]
fn raft_membership_changes_and_transfers_are_safe_under_chaos() {
    let mut changes = 0;
    check_seeds("raft_membership_changes_and_transfers", 60, |seed| {
        let mut s = RaftScenario::for_seed(seed);
        s.nodes = 5;
        s.reconfigure = Some(std::time::Duration::from_millis(700));
        s.transfer = seed
            .is_multiple_of(2)
            .then_some(std::time::Duration::from_millis(900));
        let out = run_kv_raft(seed, &s)?;
        changes += out.observer.changes;
        Ok(())
    });
    eprintln!("configuration changes and transfers accepted: {changes}");
    assert!(
        changes > 100,
        "too few changes accepted to mean anything: {changes}"
    );
}
