//! Applications as supervised trees (`troupe::app`), under virtual time:
//! an app's tree as declared, protocols started inside it, where a failure
//! stops for each give-up policy, and starting and stopping apps.

mod common;

use std::time::Duration;

use common::{ledger, Effects, Panic};
use troupe::app::{list_apps, stop_app, AppInfo};
use troupe::framework::{ChildState, TreeKind, TreeNode};
use troupe::prelude::*;

async fn settle() {
    tokio::time::sleep(Duration::from_secs(3)).await;
}

fn at<'a>(tree: &'a TreeNode, path: &str) -> &'a TreeNode {
    tree.find(path)
        .unwrap_or_else(|| panic!("no {path} in {tree:#?}"))
}

/// An app whose nested supervisor escalates at the first failure of its
/// leaf, and whose own root allows one restart:
///
/// ```text
/// apps/<name>           (app root: `policy`, max 1 restart)
/// ├── <name>.first
/// ├── inner             (escalates at once)
/// │   └── <name>.leaf
/// └── <name>.last
/// ```
fn crashy(name: &str, on_give_up: GiveUp, effects: &[Effects; 3]) -> AppSpec {
    let inner = SupervisorPolicy {
        max_restarts: 0,
        ..Default::default()
    };
    AppSpec::new(name)
        .policy(SupervisorPolicy {
            strategy: Strategy::RestForOne,
            max_restarts: 1,
            within: Duration::from_secs(60),
            backoff_max: Duration::from_millis(200),
            on_give_up,
            ..AppSpec::default_policy()
        })
        .child(ledger(&format!("{name}.first"), &effects[0]))
        .supervisor(
            SupervisorSpec::new("inner", inner).child(ledger(&format!("{name}.leaf"), &effects[1])),
        )
        .child(ledger(&format!("{name}.last"), &effects[2]))
}

fn effects() -> [Effects; 3] {
    [Effects::default(), Effects::default(), Effects::default()]
}

fn starts(e: &[Effects; 3]) -> Vec<u32> {
    e.iter().map(|e| e.starts()).collect()
}

async fn panic_leaf(node: &Node, app: &str) {
    node.lookup::<Panic>(&format!("{}/{app}.leaf", node.name()))
        .unwrap()
        .tell(Panic)
        .unwrap();
    settle().await;
}

async fn node_with_root_restarts(seed: u64, max_restarts: u32) -> (SimCluster, Node) {
    let mut cluster = SimCluster::new(seed, FaultPlan::reliable());
    let mut config = NodeConfig::named("a");
    config.supervision.max_restarts = max_restarts;
    let a = cluster.add_node_with(config).await.unwrap();
    (cluster, a)
}

#[test]
fn an_app_is_a_subtree_under_apps_as_declared() {
    run_virtual(|| async {
        let (_cluster, a) = node_with_root_restarts(31, 5).await;
        let e = effects();
        let app = start_app(&a, crashy("crash", GiveUp::Restart, &e))
            .await
            .unwrap();
        settle().await;
        assert_eq!(app.supervisor().path(), "apps/crash");
        let tree = a.supervision_tree().await.unwrap();
        let apps = at(&tree, "apps");
        assert_eq!(apps.kind, TreeKind::Supervisor);
        let crash = at(apps, "crash");
        assert_eq!(crash.strategy, Some(Strategy::RestForOne));
        let names: Vec<&str> = crash.children.iter().map(|c| c.name.as_str()).collect();
        assert_eq!(names, vec!["crash.first", "inner", "crash.last"]);
        assert_eq!(at(crash, "inner/crash.leaf").kind, TreeKind::Actor);
        assert_eq!(app.tree().await.unwrap(), *crash);
        assert_eq!(starts(&e), vec![1, 1, 1]);
        assert_eq!(
            list_apps(&a).await.unwrap(),
            vec![AppInfo {
                name: "crash".into(),
                state: ChildState::Running,
                restarts: 0
            }]
        );
    });
}

#[test]
fn rest_for_one_at_the_app_root_restarts_the_escalating_supervisor_and_what_follows() {
    run_virtual(|| async {
        let (_cluster, a) = node_with_root_restarts(32, 5).await;
        let e = effects();
        start_app(&a, crashy("crash", GiveUp::Restart, &e))
            .await
            .unwrap();
        settle().await;
        panic_leaf(&a, "crash").await;
        let tree = a.supervision_tree().await.unwrap();
        let r: Vec<u64> = ["first", "inner", "last"]
            .iter()
            .map(|c| {
                let path = if *c == "inner" {
                    "apps/crash/inner".to_string()
                } else {
                    format!("apps/crash/crash.{c}")
                };
                at(&tree, &path).restarts
            })
            .collect();
        assert_eq!(r, vec![0, 1, 1], "{tree:#?}");
        assert_eq!(starts(&e), vec![1, 2, 2]);
    });
}

/// Start `crash` (giving up with `on_give_up`) and `other` (restarting)
/// on `a`, then make `crash`'s leaf panic twice: the first time the app
/// restarts its inner supervisor (1 restart allowed), the second it gives up.
async fn crash_twice_beside_another(a: &Node, on_give_up: GiveUp) -> ([Effects; 3], [Effects; 3]) {
    let (e, other) = (effects(), effects());
    start_app(a, crashy("crash", on_give_up, &e)).await.unwrap();
    start_app(a, crashy("other", GiveUp::Restart, &other))
        .await
        .unwrap();
    settle().await;
    panic_leaf(a, "crash").await;
    panic_leaf(a, "crash").await;
    (e, other)
}

#[test]
fn an_app_that_gives_up_restarts_alone_and_the_node_and_other_apps_run_on() {
    run_virtual(|| async {
        // The node's root allows no restart: anything reaching it stops the node.
        let (_cluster, a) = node_with_root_restarts(33, 0).await;
        let (e, other) = crash_twice_beside_another(&a, GiveUp::Restart).await;
        assert!(!a.is_stopped());
        let apps = list_apps(&a).await.unwrap();
        assert_eq!(apps[0].name, "crash");
        assert_eq!((apps[0].state, apps[0].restarts), (ChildState::Running, 1));
        assert_eq!((apps[1].state, apps[1].restarts), (ChildState::Running, 0));
        assert_eq!(starts(&e), vec![2, 3, 3]);
        assert_eq!(starts(&other), vec![1, 1, 1], "another app was touched");
    });
}

#[test]
fn an_app_that_stops_stays_stopped_until_restarted() {
    run_virtual(|| async {
        let (_cluster, a) = node_with_root_restarts(34, 0).await;
        let e = effects();
        let app = start_app(&a, crashy("crash", GiveUp::Stop, &e))
            .await
            .unwrap();
        settle().await;
        panic_leaf(&a, "crash").await;
        panic_leaf(&a, "crash").await;
        assert!(!a.is_stopped());
        let apps = list_apps(&a).await.unwrap();
        assert_eq!(apps[0].state, ChildState::GaveUp);
        assert!(!a.registry().is_running("crash.first"));
        app.restart().await.unwrap();
        settle().await;
        assert_eq!(list_apps(&a).await.unwrap()[0].state, ChildState::Running);
        assert!(a.registry().is_running("crash.leaf"));
    });
}

#[test]
fn an_app_that_escalates_is_restarted_by_the_node_s_policy_and_past_it_stops_the_node() {
    run_virtual(|| async {
        // Lenient root: the node's policy restarts the escalating app alone.
        let (_cluster, a) = node_with_root_restarts(35, 5).await;
        let (_e, other) = crash_twice_beside_another(&a, GiveUp::Escalate).await;
        assert!(!a.is_stopped());
        let apps = list_apps(&a).await.unwrap();
        assert_eq!((apps[0].state, apps[0].restarts), (ChildState::Running, 1));
        assert_eq!(starts(&other), vec![1, 1, 1]);

        // Strict root: the same failure stops the node.
        let (_cluster, b) = node_with_root_restarts(36, 0).await;
        let e = effects();
        start_app(&b, crashy("crash", GiveUp::Escalate, &e))
            .await
            .unwrap();
        settle().await;
        panic_leaf(&b, "crash").await;
        assert!(!b.is_stopped());
        panic_leaf(&b, "crash").await;
        assert!(b.is_stopped(), "the escalation did not reach the node");
    });
}

#[test]
fn a_protocol_started_by_an_app_runs_inside_the_app() {
    run_virtual(|| async {
        let (_cluster, a) = node_with_root_restarts(37, 5).await;
        let members = vec!["a".to_string()];
        let spec = AppSpec::new("ledger")
            .strategy(Strategy::RestForOne)
            .start(move |app| async move {
                start_lock(
                    app.node(),
                    "ledger",
                    MutexAlgorithm::RicartAgrawala,
                    &members,
                )
                .await?;
                Ok(())
            })
            .child(ledger("ledger.worker", &Effects::default()));
        start_app(&a, spec).await.unwrap();
        settle().await;
        let tree = a.supervision_tree().await.unwrap();
        let names: Vec<&str> = at(&tree, "apps/ledger")
            .children
            .iter()
            .map(|c| c.name.as_str())
            .collect();
        assert_eq!(names, vec!["mutex.ledger", "ledger.worker"]);
        assert!(tree.find("mutex.ledger").is_none(), "also under the root");
    });
}

#[test]
fn apps_are_started_once_stopped_for_good_and_a_failed_start_leaves_nothing() {
    run_virtual(|| async {
        let (_cluster, a) = node_with_root_restarts(38, 5).await;
        let e = effects();
        start_app(&a, crashy("crash", GiveUp::Restart, &e))
            .await
            .unwrap();
        let again = start_app(&a, crashy("crash", GiveUp::Restart, &e)).await;
        let err = again.unwrap_err().to_string();
        assert!(
            err.contains("apps.crash") && err.contains("already runs"),
            "{err}"
        );
        assert!(stop_app(&a, "crash").await.unwrap());
        assert!(!stop_app(&a, "crash").await.unwrap());
        settle().await;
        assert!(!a.registry().is_running("crash.leaf"));
        assert!(list_apps(&a).await.unwrap().is_empty());
        // Its names are free again.
        start_app(&a, crashy("crash", GiveUp::Restart, &e))
            .await
            .unwrap();

        let failing = AppSpec::new("half")
            .child(ledger("half.one", &e[0]))
            .start(|_app| async { Err(troupe::Error::Protocol("cannot start".into())) })
            .child(ledger("half.two", &e[0]));
        let err = start_app(&a, failing).await.unwrap_err();
        assert!(err.to_string().contains("cannot start"), "{err}");
        settle().await;
        let names: Vec<String> = list_apps(&a)
            .await
            .unwrap()
            .into_iter()
            .map(|a| a.name)
            .collect();
        assert_eq!(names, vec!["crash".to_string()]);
        assert!(!a.registry().is_running("half.one"));
    });
}
