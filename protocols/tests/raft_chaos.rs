//! Raft under seeded chaos: loss, duplication, reordering, partitions that
//! heal, crashes and restarts that lose unsynced writes. Safety is checked
//! after every step (`testkit::raft`), the clients' history for
//! linearizability (`testkit::linearizability`), liveness after healing.
//! Replay a failing seed with `TROUPE_SEED=<seed>`; run more seeds with
//! `TROUPE_SEEDS=<n>` (the ignored `raft_thousand_seeds` runs 1000).

use std::time::Duration;

use troupe_protocols::testkit::check_seeds;
use troupe_protocols::testkit::linearizability::{check_kv, CheckReport};
use troupe_protocols::testkit::raft::{run_kv_raft, RaftScenario};

#[derive(Default)]
struct Totals {
    applied: u64,
    installs: u64,
    changes: u64,
    returned: usize,
    /// Of them, by the clients that await their outcomes (even ids).
    awaited: usize,
    checked: usize,
}

/// Run `scenario(seed)` and check its history; add to `t`.
fn run(seed: u64, s: &RaftScenario, t: &mut Totals) -> Result<(), String> {
    let out = run_kv_raft(seed, s)?;
    let report: CheckReport = check_kv(&out.history).map_err(|e| {
        let path = std::env::temp_dir().join(format!("raft-history-seed-{seed}.json"));
        let _ = out.history.write_json(&path);
        format!(
            "history not linearizable (written to {}): {e}",
            path.display()
        )
    })?;
    t.applied += out.observer.applied_events;
    t.installs += out.observer.installs;
    t.changes += out.observer.changes;
    t.returned += out.returned;
    t.awaited += out
        .history
        .operations()
        .iter()
        .filter(|o| o.client.is_multiple_of(2))
        .filter(|o| {
            matches!(
                o.outcome,
                troupe_protocols::testkit::linearizability::Outcome::Returned { .. }
            )
        })
        .count();
    t.checked += report.operations;
    Ok(())
}

fn safe_under_chaos(seeds: u64) {
    let mut t = Totals::default();
    check_seeds("raft_kv_is_safe_under_chaos", seeds, |seed| {
        run(seed, &RaftScenario::for_seed(seed), &mut t)
    });
    eprintln!(
        "applied {}, snapshot installs {}, client ops returned {} ({} awaited), ops checked {}",
        t.applied, t.installs, t.returned, t.awaited, t.checked
    );
    let n = troupe_protocols::testkit::seeds(seeds).len();
    assert!(
        t.applied > 100 * n as u64,
        "too few entries applied: {}",
        t.applied
    );
    assert!(
        t.returned > 50 * n,
        "too few client operations returned: {}",
        t.returned
    );
    // Both ways of collecting outcomes (polling, and the awaited
    // settlements the driver uses) return their share.
    assert!(
        t.awaited > 20 * n && t.returned - t.awaited > 20 * n,
        "too few returned by one kind of client: {} of {} awaited",
        t.awaited,
        t.returned
    );
    assert!(n < 20 || t.installs > 0, "no snapshot was ever installed");
}

#[test]
fn raft_kv_is_safe_linearizable_and_live_under_chaos() {
    safe_under_chaos(100);
}

/// 1000 seeds (about 2 minutes in a debug build): `cargo test -p
/// troupe-protocols --test raft_chaos -- --ignored`.
#[test]
#[ignore]
fn raft_thousand_seeds() {
    safe_under_chaos(1000);
}

#[test]
fn raft_membership_changes_and_transfers_are_safe_under_chaos() {
    let mut t = Totals::default();
    check_seeds("raft_membership_changes_and_transfers", 60, |seed| {
        let mut s = RaftScenario::for_seed(seed);
        s.nodes = 5;
        s.reconfigure = Some(Duration::from_millis(700));
        s.transfer = seed.is_multiple_of(2).then_some(Duration::from_millis(900));
        run(seed, &s, &mut t)
    });
    eprintln!(
        "configuration changes and transfers accepted: {}",
        t.changes
    );
    let n = troupe_protocols::testkit::seeds(60).len() as u64;
    assert!(
        t.changes > n,
        "too few changes accepted to mean anything: {}",
        t.changes
    );
}
