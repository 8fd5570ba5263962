//! Supervision: a failing or panicking actor is restarted per strategy,
//! one-for-all restarts siblings, and hitting the restart limit escalates.

mod common;

use std::time::Duration;

use common::{ledger, Apply, Effects, Fail, Panic};
use troupe::prelude::*;

async fn settle() {
    tokio::time::sleep(Duration::from_secs(2)).await;
}

#[test]
fn a_failing_actor_is_restarted_with_fresh_state() {
    run_virtual(|| async {
        let mut cluster = SimCluster::new(1, FaultPlan::reliable());
        let a = cluster.add_node("a").await.unwrap();
        let effects = Effects::default();
        a.spawn(ledger("ledger", &effects)).await.unwrap();
        let apply = a.lookup::<Apply>("a/ledger").unwrap();
        assert_eq!(apply.ask(Apply { op: 1, amount: 10 }).await.unwrap(), 10);
        assert_eq!(effects.starts(), 1);

        // A tell caches the live recipient in the handle...
        let note = a.lookup::<common::Note>("a/ledger").unwrap();
        note.tell(common::Note(1)).unwrap();
        let fail = a.lookup::<Fail>("a/ledger").unwrap();
        assert_eq!(
            fail.ask(Fail).await.unwrap(),
            Err("asked to fail".to_string())
        );
        settle().await;
        assert_eq!(effects.starts(), 2, "not restarted");
        // Fresh state after the restart, same handle.
        assert_eq!(apply.ask(Apply { op: 2, amount: 1 }).await.unwrap(), 1);
        // ...and after the restart the same handle finds the new instance.
        note.tell(common::Note(2)).unwrap();
        settle().await;
        assert_eq!(*effects.notes.lock().unwrap(), vec![1, 2]);
    });
}

#[test]
fn remote_tells_reach_the_restarted_instance() {
    // The receiving node remembers where the last tell of a stream went;
    // after a restart the stream must reach the new instance, not vanish.
    run_virtual(|| async {
        let mut cluster = SimCluster::new(3, FaultPlan::reliable());
        let a = cluster.add_node("a").await.unwrap();
        let b = cluster.add_node("b").await.unwrap();
        let effects = Effects::default();
        b.spawn(ledger("ledger", &effects)).await.unwrap();
        let note = a.lookup::<common::Note>("b/ledger").unwrap();
        for i in 0..5 {
            note.tell(common::Note(i)).unwrap();
        }
        settle().await;
        let fail = a.lookup::<Fail>("b/ledger").unwrap();
        assert_eq!(
            fail.ask(Fail).await.unwrap(),
            Err("asked to fail".to_string())
        );
        settle().await;
        assert_eq!(effects.starts(), 2, "not restarted");
        for i in 5..10 {
            note.tell(common::Note(i)).unwrap();
        }
        settle().await;
        assert_eq!(*effects.notes.lock().unwrap(), (0..10).collect::<Vec<_>>());
        assert_eq!(b.stats().undeliverable, 0);
    });
}

#[test]
fn a_panicking_actor_is_restarted_and_its_neighbours_keep_running() {
    run_virtual(|| async {
        let mut cluster = SimCluster::new(2, FaultPlan::reliable());
        let a = cluster.add_node("a").await.unwrap();
        let (e1, e2) = (Effects::default(), Effects::default());
        a.spawn(ledger("one", &e1)).await.unwrap();
        a.spawn(ledger("two", &e2)).await.unwrap();
        let panic = a.lookup::<Panic>("a/one").unwrap();
        let err = panic.ask(Panic).await.unwrap_err();
        assert!(matches!(err, AskError::Remote(_)), "{err}");
        settle().await;
        assert_eq!(e1.starts(), 2, "panicked actor not restarted");
        assert_eq!(e2.starts(), 1, "one-for-one restarted a sibling");
        let two = a.lookup::<Apply>("a/two").unwrap();
        assert_eq!(two.ask(Apply { op: 1, amount: 3 }).await.unwrap(), 3);
        let one = a.lookup::<Apply>("a/one").unwrap();
        assert_eq!(one.ask(Apply { op: 1, amount: 4 }).await.unwrap(), 4);
    });
}

#[test]
fn one_for_all_restarts_the_siblings() {
    run_virtual(|| async {
        let mut cluster = SimCluster::new(3, FaultPlan::reliable());
        let a = cluster.add_node("a").await.unwrap();
        let (e1, e2) = (Effects::default(), Effects::default());
        let policy = SupervisorPolicy {
            strategy: Strategy::OneForAll,
            ..Default::default()
        };
        a.spawn(
            SupervisorSpec::new("pair", policy)
                .child(ledger("left", &e1))
                .child(ledger("right", &e2)),
        )
        .await
        .unwrap();
        settle().await;
        assert_eq!((e1.starts(), e2.starts()), (1, 1));
        let right = a.lookup::<Apply>("a/right").unwrap();
        assert_eq!(right.ask(Apply { op: 1, amount: 7 }).await.unwrap(), 7);
        a.lookup::<Fail>("a/left")
            .unwrap()
            .ask(Fail)
            .await
            .unwrap()
            .unwrap_err();
        settle().await;
        assert_eq!(
            (e1.starts(), e2.starts()),
            (2, 2),
            "one-for-all did not restart both"
        );
        assert_eq!(
            right.ask(Apply { op: 2, amount: 1 }).await.unwrap(),
            1,
            "sibling kept its state"
        );
    });
}

#[test]
fn hitting_the_limit_escalates_to_the_parent() {
    run_virtual(|| async {
        let mut cluster = SimCluster::new(4, FaultPlan::reliable());
        let a = cluster.add_node("a").await.unwrap();
        let inner = Effects::default();
        let strict = SupervisorPolicy {
            max_restarts: 1,
            within: Duration::from_secs(60),
            ..Default::default()
        };
        a.spawn(SupervisorSpec::new("sub", strict).child(ledger("worker", &inner)))
            .await
            .unwrap();
        settle().await;
        let fail = a.lookup::<Fail>("a/worker").unwrap();
        // First failure: restarted by "sub" (1 restart allowed).
        let _ = fail.ask(Fail).await;
        settle().await;
        assert_eq!(inner.starts(), 2);
        // Second failure: "sub" gives up and escalates; the root restarts the
        // whole "sub" subtree, which starts a fresh worker.
        let _ = fail.ask(Fail).await;
        settle().await;
        assert_eq!(inner.starts(), 3, "escalation did not restart the subtree");
        assert!(!a.is_stopped());
        assert_eq!(
            a.lookup::<Apply>("a/worker")
                .unwrap()
                .ask(Apply { op: 1, amount: 2 })
                .await
                .unwrap(),
            2
        );
    });
}

#[test]
fn the_root_giving_up_stops_the_node() {
    run_virtual(|| async {
        let mut cluster = SimCluster::new(5, FaultPlan::reliable());
        let mut config = NodeConfig::named("a");
        config.supervision.max_restarts = 1;
        let a = cluster.add_node_with(config).await.unwrap();
        let effects = Effects::default();
        a.spawn(ledger("worker", &effects)).await.unwrap();
        let fail = a.lookup::<Fail>("a/worker").unwrap();
        let _ = fail.ask(Fail).await;
        settle().await;
        assert!(!a.is_stopped());
        let _ = fail.ask(Fail).await;
        settle().await;
        assert!(a.is_stopped(), "root escalation did not stop the node");
    });
}

#[test]
fn names_are_unique_and_removal_frees_them() {
    run_virtual(|| async {
        let mut cluster = SimCluster::new(6, FaultPlan::reliable());
        let a = cluster.add_node("a").await.unwrap();
        let effects = Effects::default();
        a.spawn(ledger("x", &effects)).await.unwrap();
        let again = a.spawn(ledger("x", &effects)).await;
        assert!(
            matches!(again, Err(troupe::framework::NodeError::NameTaken(_))),
            "{again:?}"
        );
        assert!(a.spawn(ledger("bad name", &effects)).await.is_err());
        assert!(a.stop_actor("x").await.unwrap());
        settle().await;
        assert!(!a.registry().is_running("x"));
        a.spawn(ledger("x", &effects)).await.unwrap();
    });
}
