//! Every example's own check, in the suite: each example is compiled here
//! as a module (the same source file `cargo run --example` builds) and its
//! `run` is called, so an example that stops proving what it claims fails
//! the suite. `embedded_node`, which serves over QUIC until a signal, runs
//! as a process in `tests/embedded_node.rs`.

// Each example brings its own copy of examples/common/trace_arg.rs.
#![allow(clippy::duplicate_mod)]

#[allow(dead_code)]
#[path = "../examples/app_tree.rs"]
mod app_tree;
#[allow(dead_code)]
#[path = "../examples/commit_orders.rs"]
mod commit_orders;
#[allow(dead_code)]
#[path = "../examples/discovery.rs"]
mod discovery;
#[allow(dead_code)]
#[path = "../examples/locked_counter.rs"]
mod locked_counter;
#[allow(dead_code)]
#[path = "../examples/sim_cluster.rs"]
mod sim_cluster;

use troupe::prelude::{CommitAlgorithm, ElectionAlgorithm, MutexAlgorithm};

/// `locked_counter` with `lock` and every election, on the example's own
/// seed: no update lost or doubled, one holder at a time (enforced: the
/// run must have no false suspicion, or the exclusion check would have
/// been excused), the lock working after the crash, one surviving leader.
fn locked_counter_with(lock: MutexAlgorithm) {
    for election in ElectionAlgorithm::ALL {
        let report = locked_counter::run(lock, election, 7, false)
            .unwrap_or_else(|e| panic!("locked_counter {lock} {election}: {e}"));
        assert!(
            report.false_suspicions.is_empty(),
            "locked_counter {lock} {election}: mutual exclusion went unchecked: false suspicions {:?}",
            report.false_suspicions
        );
        assert!(
            report.applied >= 50,
            "locked_counter {lock} {election}: only {} writes",
            report.applied
        );
    }
}

#[test]
fn locked_counter_centralized_with_every_election() {
    locked_counter_with(MutexAlgorithm::Centralized);
}

#[test]
fn locked_counter_ricart_agrawala_with_every_election() {
    locked_counter_with(MutexAlgorithm::RicartAgrawala);
}

#[test]
fn locked_counter_token_ring_with_every_election() {
    locked_counter_with(MutexAlgorithm::TokenRing);
}

#[test]
fn locked_counter_lamport_with_every_election() {
    locked_counter_with(MutexAlgorithm::Lamport);
}

#[test]
fn sim_cluster_applies_every_transfer_at_most_once() {
    for seed in [1, 2, 3] {
        let report = sim_cluster::run(seed, false)
            .unwrap_or_else(|e| panic!("sim_cluster seed {seed}: {e}"));
        assert!(report.answered > 0 && report.applied > 0, "{report:?}");
    }
}

#[test]
fn app_tree_restarts_both_workers_and_nothing_else() {
    app_tree::run(false).unwrap_or_else(|e| panic!("app_tree: {e}"));
}

#[test]
fn commit_orders_commits_then_aborts_on_a_no_vote_and_puts_the_stock_back() {
    for algorithm in CommitAlgorithm::ALL {
        commit_orders::run(algorithm, false)
            .unwrap_or_else(|e| panic!("commit_orders {algorithm}: {e}"));
    }
}

/// `discovery`: every printer found, one publish printed by all three,
/// the watch told the stop's reason, the stopped printer no longer found.
#[test]
fn discovery_finds_publishes_and_watches() {
    let r = discovery::run().unwrap_or_else(|e| panic!("discovery: {e}"));
    assert_eq!(r.found, ["a/printer", "b/printer", "c/printer"]);
    assert_eq!(r.printed, 3);
    assert_eq!(
        r.reason,
        troupe::framework::death_watch::DeathReason::Stopped(
            troupe::framework::ExitReason::Shutdown
        )
    );
    assert_eq!(r.found_after, ["a/printer", "b/printer"]);
}
