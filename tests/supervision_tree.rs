//! Supervision trees under virtual time: what each strategy restarts, the
//! back-off and intensity as applied (seen through the supervision events
//! and the tree snapshot), exit reasons, what each give-up policy does, and
//! where the escalation stops.

mod common;

use std::time::Duration;

use common::{ledger, Effects, Fail, Halt, Panic};
use tokio::sync::broadcast;
use troupe::framework::{
    ChildState, ExitReason, GiveUp, SupervisionEvent, SupervisionEventKind, TreeNode,
};
use troupe::prelude::*;

async fn settle() {
    tokio::time::sleep(Duration::from_secs(3)).await;
}

/// Every event received so far.
fn drain(rx: &mut broadcast::Receiver<SupervisionEvent>) -> Vec<SupervisionEvent> {
    let mut events = Vec::new();
    while let Ok(e) = rx.try_recv() {
        events.push(e);
    }
    events
}

fn at<'a>(tree: &'a TreeNode, path: &str) -> &'a TreeNode {
    tree.find(path)
        .unwrap_or_else(|| panic!("no {path} in {tree:#?}"))
}

/// Restart counts of `paths`, in order.
fn restarts(tree: &TreeNode, paths: &[&str]) -> Vec<u64> {
    paths.iter().map(|p| at(tree, p).restarts).collect()
}

/// The paths of the `Restarted` events, in order.
fn restarted(events: &[SupervisionEvent]) -> Vec<&str> {
    events
        .iter()
        .filter(|e| matches!(e.kind, SupervisionEventKind::Restarted { .. }))
        .map(|e| e.path.as_str())
        .collect()
}

/// A node `a` whose supervisor `s` (with `policy`) has one ledger, `x`.
async fn one_leaf(
    seed: u64,
    policy: SupervisorPolicy,
    restart: Restart,
) -> (SimCluster, Node, Effects) {
    let mut cluster = SimCluster::new(seed, FaultPlan::reliable());
    let a = cluster.add_node("a").await.unwrap();
    let e = Effects::default();
    a.spawn(SupervisorSpec::new("s", policy).child(ledger("x", &e).restart(restart)))
        .await
        .unwrap();
    settle().await;
    (cluster, a, e)
}

fn crew(policy: SupervisorPolicy, e: &[Effects; 3]) -> SupervisorSpec {
    SupervisorSpec::new("crew", policy)
        .child(ledger("a", &e[0]))
        .child(ledger("b", &e[1]))
        .child(ledger("c", &e[2]))
}

#[test]
fn each_strategy_restarts_what_it_should_in_start_order() {
    for (strategy, want, order) in [
        (Strategy::OneForOne, vec![0, 1, 0], vec!["crew/b"]),
        (
            Strategy::OneForAll,
            vec![1, 1, 1],
            vec!["crew/a", "crew/b", "crew/c"],
        ),
        (
            Strategy::RestForOne,
            vec![0, 1, 1],
            vec!["crew/b", "crew/c"],
        ),
    ] {
        run_virtual(|| async {
            let mut cluster = SimCluster::new(11, FaultPlan::reliable());
            let a = cluster.add_node("a").await.unwrap();
            let e = [Effects::default(), Effects::default(), Effects::default()];
            let policy = SupervisorPolicy {
                strategy,
                ..Default::default()
            };
            a.spawn(crew(policy, &e)).await.unwrap();
            settle().await;
            let mut events = a.supervision_events();
            a.lookup::<Panic>("a/b").unwrap().tell(Panic).unwrap();
            settle().await;
            let events = drain(&mut events);
            let tree = a.supervision_tree().await.unwrap();
            assert_eq!(
                restarts(&tree, &["crew/a", "crew/b", "crew/c"]),
                want,
                "{strategy:?}: {tree:#?}"
            );
            let starts: Vec<u32> = e.iter().map(|e| e.starts()).collect();
            let want_starts: Vec<u32> = want.iter().map(|r| 1 + *r as u32).collect();
            assert_eq!(starts, want_starts, "{strategy:?}");
            assert_eq!(restarted(&events), order, "{strategy:?}: {events:#?}");
            // The siblings were stopped by the supervisor, not failed.
            for e in &events {
                if let SupervisionEventKind::Exited { reason } = &e.kind {
                    if e.path == "crew/b" {
                        assert!(matches!(reason, ExitReason::Panicked { .. }), "{e}");
                    } else {
                        assert_eq!(reason, &ExitReason::Shutdown, "{e}");
                    }
                }
            }
            assert_eq!(at(&tree, "crew").strategy, Some(strategy));
            assert_eq!(at(&tree, "crew").state, ChildState::Running);
        });
    }
}

#[test]
fn exit_reasons_tell_a_panic_from_an_error_from_a_stop() {
    run_virtual(|| async {
        let (_cluster, a, e) = one_leaf(12, SupervisorPolicy::default(), Restart::Permanent).await;
        let mut events = a.supervision_events();
        a.lookup::<Panic>("a/x").unwrap().tell(Panic).unwrap();
        settle().await;
        a.lookup::<Fail>("a/x").unwrap().tell(Fail).unwrap();
        settle().await;
        a.lookup::<Halt>("a/x").unwrap().tell(Halt).unwrap();
        settle().await;
        let reasons: Vec<ExitReason> = drain(&mut events)
            .into_iter()
            .filter_map(|e| match e.kind {
                SupervisionEventKind::Exited { reason } => Some(reason),
                _ => None,
            })
            .collect();
        assert_eq!(reasons.len(), 3, "{reasons:?}");
        match &reasons[0] {
            ExitReason::Panicked { message } => assert!(
                message.contains("asked to panic") && message.contains("common/mod.rs"),
                "{message}"
            ),
            other => panic!("not a panic: {other:?}"),
        }
        assert_eq!(
            reasons[1],
            ExitReason::Failed {
                error: "asked to fail".into()
            }
        );
        assert_eq!(reasons[2], ExitReason::Stopped);
        assert_eq!(e.starts(), 4, "a permanent child is restarted after each");
    });
}

#[test]
fn a_transient_child_is_restarted_after_a_failure_but_not_after_a_stop() {
    run_virtual(|| async {
        let (_cluster, a, e) = one_leaf(13, SupervisorPolicy::default(), Restart::Transient).await;
        a.lookup::<Fail>("a/x").unwrap().tell(Fail).unwrap();
        settle().await;
        assert_eq!(e.starts(), 2, "not restarted after a failure");
        a.lookup::<Halt>("a/x").unwrap().tell(Halt).unwrap();
        settle().await;
        assert_eq!(e.starts(), 2, "restarted after a plain stop");
        let tree = a.supervision_tree().await.unwrap();
        assert_eq!(at(&tree, "s/x").state, ChildState::Stopped);
        assert_eq!(at(&tree, "s/x").restarts, 1);
    });
}

#[test]
fn back_off_doubles_and_the_limit_gives_up_as_applied() {
    run_virtual(|| async {
        let policy = SupervisorPolicy {
            max_restarts: 3,
            within: Duration::from_secs(60),
            backoff_base: Duration::from_millis(100),
            backoff_max: Duration::from_millis(300),
            on_give_up: GiveUp::Stop,
            ..Default::default()
        };
        let (_cluster, a, e) = one_leaf(14, policy, Restart::Permanent).await;
        let mut events = a.supervision_events();
        let panic = a.lookup::<Panic>("a/x").unwrap();
        for _ in 0..4 {
            panic.tell(Panic).unwrap();
            settle().await;
        }
        let events = drain(&mut events);
        let mut exited_at = None;
        let mut applied = Vec::new();
        for e in &events {
            match &e.kind {
                SupervisionEventKind::Exited { .. } if e.path == "s/x" => exited_at = Some(e.at),
                SupervisionEventKind::Restarted { attempt, delay } => {
                    let waited = e.at - exited_at.expect("an exit before each restart");
                    assert_eq!(waited, *delay, "the back-off said is the back-off waited");
                    applied.push((*attempt, delay.as_millis()));
                }
                _ => {}
            }
        }
        assert_eq!(applied, vec![(1, 100), (2, 200), (3, 300)], "{events:#?}");
        let last = events.last().expect("events");
        assert_eq!(last.path, "s");
        assert_eq!(
            last.kind,
            SupervisionEventKind::GaveUp { then: GiveUp::Stop }
        );
        assert_eq!(e.starts(), 4, "restarted after the limit");
        let tree = a.supervision_tree().await.unwrap();
        assert_eq!(at(&tree, "s").state, ChildState::GaveUp);
        assert_eq!(at(&tree, "s/x").state, ChildState::Stopped);
        assert_eq!(at(&tree, "s/x").restarts, 3);
        assert!(
            !a.is_stopped(),
            "a supervisor that stops does not stop the node"
        );

        // Brought back by hand, with a fresh window.
        a.root_supervisor().child("s").restart().await.unwrap();
        settle().await;
        assert_eq!(e.starts(), 5);
        let tree = a.supervision_tree().await.unwrap();
        assert_eq!(at(&tree, "s").state, ChildState::Running);
        assert_eq!(at(&tree, "s").restarts, 1);
        panic.tell(Panic).unwrap();
        settle().await;
        assert_eq!(e.starts(), 6, "the window was not reset");
    });
}

#[test]
fn failures_further_apart_than_the_window_never_add_up() {
    run_virtual(|| async {
        let policy = SupervisorPolicy {
            max_restarts: 1,
            within: Duration::from_secs(2),
            on_give_up: GiveUp::Stop,
            ..Default::default()
        };
        let (_cluster, a, e) = one_leaf(15, policy, Restart::Permanent).await;
        let fail = a.lookup::<Fail>("a/x").unwrap();
        for _ in 0..4 {
            fail.tell(Fail).unwrap();
            settle().await; // 3 s: the previous failure has left the window
        }
        assert_eq!(e.starts(), 5);
        // Two within the window: the second is one too many.
        fail.tell(Fail).unwrap();
        tokio::time::sleep(Duration::from_millis(500)).await;
        fail.tell(Fail).unwrap();
        settle().await;
        let tree = a.supervision_tree().await.unwrap();
        assert_eq!(at(&tree, "s").state, ChildState::GaveUp);
    });
}

/// The back-off and the intensity window as the actor lives them, in
/// virtual time: each delay is measured from the panic (recorded by the
/// handler) to the next instance's `started`, not read from the
/// supervisor's own events. The back-off counts the restarts inside the
/// sliding window only, so it falls back to its base once old failures
/// have left the window, and only failures inside the window add up to
/// the limit.
#[test]
fn back_off_and_the_sliding_window_as_the_restarted_actor_sees_them() {
    run_virtual(|| async {
        let policy = SupervisorPolicy {
            max_restarts: 2,
            within: Duration::from_secs(1),
            backoff_base: Duration::from_millis(100),
            backoff_max: Duration::from_millis(150),
            on_give_up: GiveUp::Stop,
            ..Default::default()
        };
        let (_cluster, a, e) = one_leaf(16, policy, Restart::Permanent).await;
        let panic = a.lookup::<Panic>("a/x").unwrap();
        let t0 = tokio::time::Instant::now();
        // Failure times (ms after t0), with what the window holds at each:
        //    0: [0]                   1st in the window: 100 ms
        //  300: [0, 300]              2nd: 200 ms, capped at 150
        // 1500: [1500]                0 and 300 left the window: 100 ms again
        // 2100: [1500, 2100]          150
        // 2600: [2100, 2600]          1500 slid out (a window that only
        //                             emptied when it expired as a whole
        //                             would hold three): 150
        // 2900: [2100, 2600, 2900]    3 > max_restarts: gives up
        let fail_at = [0u64, 300, 1500, 2100, 2600, 2900];
        for ms in fail_at {
            tokio::time::sleep_until(t0 + Duration::from_millis(ms)).await;
            panic.tell(Panic).unwrap();
        }
        tokio::time::sleep_until(t0 + Duration::from_secs(10)).await;
        let panicked = e.panicked_at.lock().unwrap().clone();
        let started = e.started_at.lock().unwrap().clone();
        let handled: Vec<u128> = panicked.iter().map(|p| (*p - t0).as_millis()).collect();
        assert_eq!(
            handled,
            fail_at.iter().map(|ms| u128::from(*ms)).collect::<Vec<_>>(),
            "each panic was handled when it was told"
        );
        assert_eq!(started.len(), 6, "five restarts, then none: {started:?}");
        let waited: Vec<u128> = panicked
            .iter()
            .zip(&started[1..])
            .map(|(p, s)| (*s - *p).as_millis())
            .collect();
        assert_eq!(waited, vec![100, 150, 100, 150, 150]);
        let tree = a.supervision_tree().await.unwrap();
        assert_eq!(at(&tree, "s").state, ChildState::GaveUp);
        assert_eq!(at(&tree, "s/x").restarts, 5);
    });
}

/// root (no restart allowed: any escalation to it stops the node)
/// ├── app (on_give_up: restart; 1 restart allowed)
/// │   └── inner (escalates at the first failure)
/// │       └── leaf
/// └── other
///     └── bystander
async fn three_levels(seed: u64, app_give_up: GiveUp) -> (SimCluster, Node, Effects, Effects) {
    let mut cluster = SimCluster::new(seed, FaultPlan::reliable());
    let mut config = NodeConfig::named("a");
    config.supervision.max_restarts = 0;
    let a = cluster.add_node_with(config).await.unwrap();
    let (leaf, bystander) = (Effects::default(), Effects::default());
    let app = SupervisorPolicy {
        max_restarts: 1,
        within: Duration::from_secs(60),
        backoff_max: Duration::from_millis(500),
        on_give_up: app_give_up,
        ..Default::default()
    };
    let inner = SupervisorPolicy {
        max_restarts: 0,
        ..Default::default()
    };
    a.spawn(
        SupervisorSpec::new("app", app)
            .child(SupervisorSpec::new("inner", inner).child(ledger("leaf", &leaf))),
    )
    .await
    .unwrap();
    a.spawn(
        SupervisorSpec::new("other", SupervisorPolicy::default())
            .child(ledger("bystander", &bystander)),
    )
    .await
    .unwrap();
    settle().await;
    (cluster, a, leaf, bystander)
}

#[test]
fn an_app_root_that_restarts_in_place_keeps_the_escalation_from_the_node() {
    run_virtual(|| async {
        let (_cluster, a, leaf, bystander) = three_levels(16, GiveUp::Restart).await;
        let mut events = a.supervision_events();
        let panic = a.lookup::<Panic>("a/leaf").unwrap();
        // 1: inner gives up at once and escalates; app restarts inner.
        panic.tell(Panic).unwrap();
        settle().await;
        let tree = a.supervision_tree().await.unwrap();
        assert_eq!(
            restarts(&tree, &["app", "app/inner", "app/inner/leaf"]),
            vec![0, 1, 0]
        );
        // 2: inner escalates again; app is past its limit and restarts its
        // whole subtree in place; the node's root never hears of it.
        panic.tell(Panic).unwrap();
        settle().await;
        let events = drain(&mut events);
        assert!(
            !a.is_stopped(),
            "the escalation went past the app: {events:#?}"
        );
        let tree = a.supervision_tree().await.unwrap();
        assert_eq!(at(&tree, "app").restarts, 1, "{tree:#?}");
        assert_eq!(at(&tree, "app").state, ChildState::Running);
        assert_eq!(at(&tree, "app/inner/leaf").state, ChildState::Running);
        assert_eq!(leaf.starts(), 3);
        assert_eq!(restarts(&tree, &["other", "other/bystander"]), vec![0, 0]);
        assert_eq!(bystander.starts(), 1, "another app was touched");
        let gave_up: Vec<&str> = events
            .iter()
            .filter(|e| matches!(e.kind, SupervisionEventKind::GaveUp { .. }))
            .map(|e| e.path.as_str())
            .collect();
        assert_eq!(gave_up, vec!["app/inner", "app/inner", "app"]);
        let app_exits: Vec<&SupervisionEvent> = events
            .iter()
            .filter(|e| e.path == "app/inner")
            .filter(|e| matches!(e.kind, SupervisionEventKind::Exited { .. }))
            .collect();
        assert!(
            matches!(
                &app_exits[0].kind,
                SupervisionEventKind::Exited {
                    reason: ExitReason::GaveUp
                }
            ),
            "{app_exits:#?}"
        );
        // The whole restart waited backoff_max.
        let whole = events
            .iter()
            .find(|e| e.path == "app" && matches!(e.kind, SupervisionEventKind::Restarted { .. }))
            .expect("the app restarted");
        assert_eq!(
            whole.kind,
            SupervisionEventKind::Restarted {
                attempt: 1,
                delay: Duration::from_millis(500)
            }
        );
    });
}

#[test]
fn an_app_root_that_stops_stays_stopped_and_the_node_runs_on() {
    run_virtual(|| async {
        let (_cluster, a, leaf, bystander) = three_levels(17, GiveUp::Stop).await;
        let panic = a.lookup::<Panic>("a/leaf").unwrap();
        panic.tell(Panic).unwrap();
        settle().await;
        panic.tell(Panic).unwrap();
        settle().await;
        assert!(!a.is_stopped());
        let tree = a.supervision_tree().await.unwrap();
        assert_eq!(at(&tree, "app").state, ChildState::GaveUp);
        assert_eq!(at(&tree, "app/inner").state, ChildState::Stopped);
        assert!(!a.registry().is_running("leaf"));
        assert_eq!(leaf.starts(), 2);
        assert_eq!(at(&tree, "other/bystander").state, ChildState::Running);
        assert_eq!(bystander.starts(), 1);
    });
}

#[test]
fn an_app_root_that_escalates_hands_the_failure_to_the_node() {
    run_virtual(|| async {
        let (_cluster, a, _leaf, _bystander) = three_levels(18, GiveUp::Escalate).await;
        let panic = a.lookup::<Panic>("a/leaf").unwrap();
        panic.tell(Panic).unwrap();
        settle().await;
        assert!(!a.is_stopped());
        panic.tell(Panic).unwrap();
        settle().await;
        assert!(a.is_stopped(), "the root allows no restart: the node stops");
    });
}

#[test]
fn a_subtree_that_gives_up_with_stop_node_stops_the_node_even_under_a_lenient_root() {
    run_virtual(|| async {
        let vital = SupervisorPolicy {
            max_restarts: 0,
            on_give_up: GiveUp::StopNode,
            ..Default::default()
        };
        let (_cluster, a, _e) = one_leaf(19, vital, Restart::Permanent).await;
        let stopped = a.stopped();
        a.lookup::<Fail>("a/x").unwrap().tell(Fail).unwrap();
        tokio::time::timeout(Duration::from_secs(5), stopped)
            .await
            .expect("the node did not stop");
        assert!(a.is_stopped());
    });
}

#[test]
fn spawns_inside_a_scope_land_under_that_supervisor() {
    run_virtual(|| async {
        let mut cluster = SimCluster::new(20, FaultPlan::reliable());
        let a = cluster.add_node("a").await.unwrap();
        let e = Effects::default();
        let app = a
            .root_supervisor()
            .ensure_supervisor(SupervisorSpec::new("app", SupervisorPolicy::default()))
            .await
            .unwrap();
        // Asking again keeps the running one.
        a.root_supervisor()
            .ensure_supervisor(SupervisorSpec::new("app", SupervisorPolicy::default()))
            .await
            .unwrap();
        let path = app
            .scope(async { a.spawn(ledger("worker", &e)).await })
            .await
            .unwrap();
        assert_eq!(path.to_string(), "a/worker");
        a.spawn(ledger("outside", &e)).await.unwrap();
        let tree = a.supervision_tree().await.unwrap();
        assert_eq!(tree.name, "a");
        assert_eq!(at(&tree, "app/worker").state, ChildState::Running);
        assert!(tree.find("worker").is_none(), "{tree:#?}");
        assert!(tree.find("outside").is_some());
        // Actor names stay unique on the node, wherever the actor is.
        let again = a.spawn(ledger("worker", &e)).await;
        assert!(
            matches!(again, Err(troupe::framework::NodeError::NameTaken(_))),
            "{again:?}"
        );
        // Removing the app frees the names below it.
        assert!(a.stop_actor("app").await.unwrap());
        settle().await;
        a.spawn(ledger("worker", &e)).await.unwrap();
    });
}
