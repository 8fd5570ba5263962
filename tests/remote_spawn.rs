//! Remote spawn (`troupe::remote_spawn`) on a simulated cluster (a, b, c
//! with failure detectors): a spawns a worker on b and messages it; the
//! worker is supervised on b (restarted there with its arguments); a name
//! clash, an unknown kind, arguments that do not decode, a bad or reserved
//! name and a node without a spawner each answer a clear error and leave
//! the target running; a target that crashed answers `Timeout` before the
//! detector sees it and `NodeDown` after; over a network that loses and
//! duplicates frames, every request is executed exactly once.

use std::time::Duration;

use serde::{Deserialize, Serialize};
use troupe::prelude::*;
use troupe::remote_spawn::{spawn_remote_within, SPAWNED_SUPERVISOR};

mod common;

#[derive(Debug, Clone, Serialize, Deserialize)]
struct WorkerArgs {
    start: i64,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
struct Add(i64);
remote_message!(Add, "remote_spawn_test.add", i64);

#[derive(Debug, Clone, Serialize, Deserialize)]
struct Crash;
remote_message!(Crash, "remote_spawn_test.crash", ());

struct Worker {
    total: i64,
}
impl Actor for Worker {
    type Context = Context<Self>;
}
impl Handler<Add> for Worker {
    type Result = i64;
    fn handle(&mut self, m: Add, _: &mut Context<Self>) -> i64 {
        self.total += m.0;
        self.total
    }
}
impl Handler<Crash> for Worker {
    type Result = ();
    fn handle(&mut self, _: Crash, ctx: &mut Context<Self>) {
        ctx.stop();
    }
}

fn kinds() -> SpawnKinds {
    SpawnKinds::new().kind("worker", |name: &str, args: WorkerArgs| {
        ActorSpec::new(name, move || Worker { total: args.start })
            .handles::<Add>()
            .handles::<Crash>()
    })
}

async fn cluster(seed: u64) -> SimCluster {
    common::detecting_cluster(seed, &["a", "b", "c"], |node, _| async move {
        // c offers no kinds at all; a and b offer "worker".
        let kinds = if node.name() == "c" {
            SpawnKinds::new()
        } else {
            kinds()
        };
        start_spawner(&node, kinds).await.unwrap();
    })
    .await
}

#[test]
fn spawn_on_another_node_and_message_it() {
    run_virtual(|| async {
        let sim = cluster(7).await;
        let a = sim.node("a").unwrap().clone();
        let path = a
            .spawn_remote("b", "worker", "worker-7", WorkerArgs { start: 100 })
            .await
            .expect("spawned on b");
        assert_eq!(path.to_string(), "b/worker-7");
        let worker: RemoteRef<Add> = a.actor_ref(path.clone());
        assert_eq!(worker.ask(Add(1)).await.unwrap(), 101);
        assert_eq!(worker.ask(Add(2)).await.unwrap(), 103);
        // Supervised on b, under `spawned`.
        let b = sim.node("b").unwrap().clone();
        let tree = b.supervision_tree().await.unwrap();
        assert!(
            tree.find(&format!("{SPAWNED_SUPERVISOR}/worker-7"))
                .is_some(),
            "{tree:#?}"
        );
        // A failure restarts it on b, from its arguments.
        a.actor_ref::<Crash>(path.clone()).tell(Crash).unwrap();
        tokio::time::sleep(Duration::from_millis(200)).await;
        assert_eq!(worker.ask(Add(5)).await.unwrap(), 105);
        // A local spawn goes through the same door.
        let here = a
            .spawn_remote("a", "worker", "w-local", WorkerArgs { start: 0 })
            .await
            .unwrap();
        assert_eq!(here.to_string(), "a/w-local");
    });
}

#[test]
fn clear_errors_and_the_target_keeps_running() {
    run_virtual(|| async {
        let mut sim = cluster(8).await;
        let a = sim.node("a").unwrap().clone();
        a.spawn_remote("b", "worker", "w", WorkerArgs { start: 0 })
            .await
            .unwrap();

        // Name clash: told it is taken, and that the spawner made it (so a
        // retry after a timeout knows its first request worked).
        let err = a
            .spawn_remote("b", "worker", "w", WorkerArgs { start: 0 })
            .await
            .unwrap_err();
        assert_eq!(
            err,
            SpawnError::NameTaken {
                node: "b".into(),
                name: "w".into(),
                spawned_kind: Some("worker".into())
            }
        );
        // A clash with one of the node's own actors (its failure detector).
        let err = a
            .spawn_remote("b", "worker", "fd", WorkerArgs { start: 0 })
            .await
            .unwrap_err();
        assert!(
            matches!(
                &err,
                SpawnError::NameTaken {
                    spawned_kind: None,
                    ..
                }
            ),
            "{err}"
        );
        // The node's reserved namespace.
        let err = a
            .spawn_remote("b", "worker", "troupe.worker", WorkerArgs { start: 0 })
            .await
            .unwrap_err();
        assert!(matches!(err, SpawnError::BadName { .. }), "{err}");

        // Unknown kind, with the kinds it does know.
        let err = a
            .spawn_remote("b", "nope", "w2", WorkerArgs { start: 0 })
            .await
            .unwrap_err();
        assert_eq!(
            err,
            SpawnError::UnknownKind {
                node: "b".into(),
                kind: "nope".into(),
                known: vec!["worker".into()]
            }
        );
        assert!(
            err.to_string().contains("no spawnable kind \"nope\""),
            "{err}"
        );

        // Arguments of the wrong type.
        let err = a
            .spawn_remote("b", "worker", "w3", ("not", "args", 1))
            .await
            .unwrap_err();
        assert!(
            matches!(&err, SpawnError::BadArgs { kind, .. } if kind == "worker"),
            "{err}"
        );

        // Malformed name.
        let err = a
            .spawn_remote("b", "worker", "a/b", WorkerArgs { start: 0 })
            .await
            .unwrap_err();
        assert!(matches!(err, SpawnError::BadName { .. }), "{err}");

        // A node without kinds answers UnknownKind with none known.
        let err = a
            .spawn_remote("c", "worker", "w", WorkerArgs { start: 0 })
            .await
            .unwrap_err();
        assert!(
            matches!(&err, SpawnError::UnknownKind { known, .. } if known.is_empty()),
            "{err}"
        );

        // b still works after all that.
        let path = a
            .spawn_remote("b", "worker", "w4", WorkerArgs { start: 40 })
            .await
            .unwrap();
        assert_eq!(a.actor_ref::<Add>(path).ask(Add(2)).await.unwrap(), 42);
        assert!(!sim.node("b").unwrap().is_stopped());

        // A node that runs no spawner: stop c's.
        let c = sim.node("c").unwrap().clone();
        assert!(c
            .stop_actor(troupe::remote_spawn::SPAWNER_ACTOR)
            .await
            .unwrap());
        let err = a
            .spawn_remote("c", "worker", "w", WorkerArgs { start: 0 })
            .await
            .unwrap_err();
        assert_eq!(err, SpawnError::NoSpawner { node: "c".into() });

        // Target down: crash b. Before the detector sees it, the request
        // is lost with b: a timeout (the actor may or may not exist).
        sim.crash("b");
        let err = spawn_remote_within(
            &a,
            "b",
            "worker",
            "w5",
            &WorkerArgs { start: 0 },
            Duration::from_millis(300),
        )
        .await
        .unwrap_err();
        assert!(matches!(&err, SpawnError::Timeout { .. }), "{err}");
        // Once a's membership says b is down, the answer is at once.
        let start = tokio::time::Instant::now();
        while a
            .membership()
            .status(&"b".to_string())
            .is_some_and(|s| s.is_live())
        {
            assert!(
                start.elapsed() < Duration::from_secs(60),
                "b never seen down"
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        let err = a
            .spawn_remote("b", "worker", "w5", WorkerArgs { start: 0 })
            .await
            .unwrap_err();
        assert!(
            matches!(&err, SpawnError::NodeDown { node, .. } if node == "b"),
            "{err}"
        );
        // A node nobody knows: the transport refuses at once.
        let err = spawn_remote_within(
            &a,
            "zz",
            "worker",
            "w",
            &WorkerArgs { start: 0 },
            Duration::from_secs(1),
        )
        .await
        .unwrap_err();
        assert!(
            matches!(
                err,
                SpawnError::NodeDown { .. } | SpawnError::Timeout { .. }
            ),
            "{err}"
        );
    });
}

/// At most once over a network that loses and duplicates frames: every
/// request is executed exactly once by b's spawner (the RPC layer's
/// re-sends and the network's duplicates are deduplicated), so none of
/// them is answered `NameTaken` by a copy of itself.
#[test]
fn retried_and_duplicated_requests_spawn_once() {
    use std::sync::atomic::{AtomicUsize, Ordering};
    use std::sync::Arc;
    use troupe::transports::sim::LinkFaults;
    run_virtual(|| async {
        let built = Arc::new(AtomicUsize::new(0));
        let b2 = built.clone();
        let sim = common::detecting_cluster(21, &["a", "b"], move |node, _| {
            let built = b2.clone();
            async move {
                let kinds =
                    SpawnKinds::new().kind("worker", move |name: &str, args: WorkerArgs| {
                        built.fetch_add(1, Ordering::SeqCst);
                        ActorSpec::new(name, move || Worker { total: args.start }).handles::<Add>()
                    });
                start_spawner(&node, kinds).await.unwrap();
            }
        })
        .await;
        sim.net()
            .set_plan(FaultPlan::uniform(LinkFaults::lossy(0.2, 0.3)));
        let a = sim.node("a").unwrap().clone();
        const N: usize = 30;
        let mut spawned = 0;
        for i in 0..N {
            match spawn_remote_within(
                &a,
                "b",
                "worker",
                &format!("w{i}"),
                &WorkerArgs { start: i as i64 },
                Duration::from_secs(10),
            )
            .await
            {
                Ok(path) => {
                    assert_eq!(path.to_string(), format!("b/w{i}"));
                    spawned += 1;
                }
                Err(e) => panic!("request {i}: {e}"),
            }
        }
        assert_eq!(spawned, N);
        assert_eq!(built.load(Ordering::SeqCst), N, "each request built once");
        let stats = sim.net().stats();
        assert!(stats.duplicated > 0 && stats.lost > 0, "{stats:?}");
        let dedup = sim.node("b").unwrap().stats().deduplicated;
        assert!(
            dedup > 0,
            "copies of requests reached b and were not run again"
        );
    });
}
