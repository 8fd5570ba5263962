//! Asks across a simulated network with 30 % loss and 10 % duplication:
//! every ask resolves (to its reply or a timeout, nothing else), and a
//! handler with side effects runs at most once per ask.

mod common;

use std::future::IntoFuture;
use std::time::Duration;

use common::{ledger, Apply, Effects};
use troupe::prelude::*;

fn scenario(seed: u64) -> (usize, usize) {
    run_virtual(move || async move {
        let mut cluster = SimCluster::new(seed, FaultPlan::uniform(LinkFaults::lossy(0.30, 0.10)));
        let a = cluster.add_node("a").await.unwrap();
        let b = cluster.add_node("b").await.unwrap();
        let effects = Effects::default();
        b.spawn(ledger("ledger", &effects)).await.unwrap();
        let target = a.lookup::<Apply>("b/ledger").unwrap();

        let asks = (0..200u64).map(|op| {
            let t = target.clone();
            async move {
                (
                    op,
                    t.ask(Apply { op, amount: 1 })
                        .timeout(Duration::from_secs(10))
                        .await,
                )
            }
        });
        let results = futures::future::join_all(asks).await;
        let (mut ok, mut timeouts) = (0, 0);
        for (op, r) in results {
            let runs = effects.executions_of(op);
            match r {
                Ok(_) => {
                    ok += 1;
                    assert_eq!(
                        runs, 1,
                        "seed {seed}: op {op} answered but executed {runs} times"
                    );
                }
                Err(AskError::Timeout(_)) => {
                    timeouts += 1;
                    assert!(runs <= 1, "seed {seed}: op {op} executed {runs} times");
                }
                Err(other) => panic!("seed {seed}: op {op}: unexpected error {other}"),
            }
        }
        let stats = b.stats();
        assert!(
            stats.deduplicated > 0,
            "seed {seed}: no retry was ever deduplicated; the test exercised nothing"
        );
        (ok, timeouts)
    })
}

#[test]
fn asks_resolve_and_execute_at_most_once_under_loss_and_duplication() {
    let mut total_ok = 0;
    for seed in 1..=5 {
        let (ok, timeouts) = scenario(seed);
        assert_eq!(ok + timeouts, 200, "seed {seed}");
        total_ok += ok;
    }
    // 8 attempts in 10 s: a round trip survives with p = 0.49, so an ask
    // fails with p = 0.51^8 ~ 0.5 %.
    assert!(total_ok >= 980, "only {total_ok}/1000 asks succeeded");
}

#[test]
fn unknown_actor_and_unknown_message_are_remote_errors() {
    run_virtual(|| async {
        let mut cluster = SimCluster::new(3, FaultPlan::reliable());
        let a = cluster.add_node("a").await.unwrap();
        let b = cluster.add_node("b").await.unwrap();
        let effects = Effects::default();
        b.spawn(ledger("ledger", &effects)).await.unwrap();

        let nobody = a.lookup::<Apply>("b/nobody").unwrap();
        let err = nobody.ask(Apply { op: 1, amount: 1 }).await.unwrap_err();
        assert!(
            matches!(
                err,
                AskError::Remote(troupe::framework::codec::RemoteError::UnknownActor(_))
            ),
            "{err}"
        );

        let unknown_peer = a.lookup::<Apply>("zed/ledger").unwrap();
        let err = unknown_peer
            .ask(Apply { op: 1, amount: 1 })
            .await
            .unwrap_err();
        assert!(matches!(err, AskError::Unreachable(_)), "{err}");

        // Local and remote calls through the same kind of handle.
        let local = b.lookup::<Apply>("b/ledger").unwrap();
        assert_eq!(local.ask(Apply { op: 2, amount: 5 }).await.unwrap(), 5);
        let remote = a.lookup::<Apply>("b/ledger").unwrap();
        assert_eq!(remote.ask(Apply { op: 3, amount: 5 }).await.unwrap(), 10);
        assert_eq!(b.stats().undeliverable, 1);
    });
}

#[test]
fn asks_end_with_node_stopped_when_their_node_stops() {
    run_virtual(|| async {
        let mut cluster = SimCluster::new(4, FaultPlan::reliable());
        let a = cluster.add_node("a").await.unwrap();
        let _b = cluster.add_node("b").await.unwrap();
        // `b` cannot answer (partitioned): the ask waits until `a` stops.
        cluster.net().partition(&["a"], &["b"]);
        let r = a.lookup::<Apply>("b/ledger").unwrap();
        let pending = actix_rt::spawn(
            r.ask(Apply { op: 1, amount: 1 })
                .timeout(Duration::from_secs(3600))
                .into_future(),
        );
        tokio::time::sleep(Duration::from_secs(1)).await;
        a.shutdown();
        let outcome = tokio::time::timeout(Duration::from_secs(10), pending)
            .await
            .expect("the ask ended instead of hanging")
            .expect("task");
        assert_eq!(outcome, Err(AskError::NodeStopped));
        // And a new ask on the stopped node fails at once.
        tokio::time::sleep(Duration::from_millis(100)).await;
        let err = r.ask(Apply { op: 2, amount: 1 }).await.unwrap_err();
        assert_eq!(err, AskError::NodeStopped);
    });
}

#[test]
fn tells_are_delivered_in_order_on_a_fifo_network() {
    run_virtual(|| async {
        let mut cluster = SimCluster::new(5, FaultPlan::reliable());
        let a = cluster.add_node("a").await.unwrap();
        let b = cluster.add_node("b").await.unwrap();
        let effects = Effects::default();
        b.spawn(ledger("ledger", &effects)).await.unwrap();
        let r = a.lookup::<common::Note>("b/ledger").unwrap();
        for i in 0..500 {
            r.tell(common::Note(i)).unwrap();
        }
        tokio::time::sleep(Duration::from_secs(1)).await;
        let notes = effects.notes.lock().unwrap().clone();
        assert_eq!(notes, (0..500).collect::<Vec<_>>());
    });
}
