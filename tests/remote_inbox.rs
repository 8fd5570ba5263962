//! Remote messages through an actor's inbox, at the edges: a handler that
//! panics with asks queued behind it (every one of them fails at once with
//! `ActorStopped`, none runs, and none stays counted against the node's
//! in-flight limit), and an ask whose
//! handler makes the actor wait (`AtomicResponse`): the tells behind it
//! wait too, as they would in the actix mailbox.

mod common;

use std::future::IntoFuture;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use common::{ledger, Apply, Effects, Hold, Panic};
use serde::{Deserialize, Serialize};
use troupe::framework::codec::RemoteError;
use troupe::prelude::*;

#[test]
fn asks_queued_behind_a_panic_fail_with_actor_stopped_and_free_their_slots() {
    run_virtual(|| async {
        let mut cluster = SimCluster::new(5, FaultPlan::reliable());
        let a = cluster.add_node("a").await.unwrap();
        // A small limit: asks that stayed counted after the panic would
        // soon stop `b` from taking frames at all.
        let mut config = NodeConfig::named("b");
        config.runtime.max_inflight_deliveries = 8;
        let b = cluster.add_node_with(config).await.unwrap();
        let effects = Effects::default();
        b.spawn(ledger("ledger", &effects)).await.unwrap();
        let hold = a.lookup::<Hold>("b/ledger").unwrap();
        let panic = a.lookup::<Panic>("b/ledger").unwrap();
        let apply = a.lookup::<Apply>("b/ledger").unwrap();
        for round in 0..4u64 {
            let asked = tokio::time::Instant::now();
            // The actor waits 100 ms first, so that the panicking ask and
            // the six behind it are all in its inbox when it panics (one
            // sender: they arrive in the order they were sent).
            let held = hold
                .ask(Hold(100))
                .timeout(Duration::from_secs(30))
                .into_future();
            let boom = panic
                .ask(Panic)
                .timeout(Duration::from_secs(30))
                .into_future();
            let behind: Vec<_> = (0..6)
                .map(|i| {
                    apply
                        .ask(Apply {
                            op: round * 10 + i,
                            amount: 1,
                        })
                        .timeout(Duration::from_secs(30))
                        .into_future()
                })
                .collect();
            let (held, boom, behind) =
                futures::join!(held, boom, futures::future::join_all(behind));
            assert_eq!(held, Ok(()), "round {round}: the hold");
            assert!(
                matches!(boom, Err(AskError::Remote(RemoteError::ActorStopped))),
                "round {round}: the panicking ask got {boom:?}"
            );
            // What the README promises: an ask still waiting in the inbox
            // of an actor whose handler panics fails with `ActorStopped`.
            for (i, r) in behind.iter().enumerate() {
                assert!(
                    matches!(r, Err(AskError::Remote(RemoteError::ActorStopped))),
                    "round {round}: ask {i} behind the panic got {r:?}"
                );
            }
            assert!(
                asked.elapsed() < Duration::from_secs(1),
                "round {round}: the asks waited {:?} (not answered, retried or timed out)",
                asked.elapsed()
            );
            tokio::time::sleep(Duration::from_secs(2)).await;
            // None of them ran, then or later (no re-send ran them on the
            // restarted instance).
            for i in 0..6 {
                assert_eq!(effects.executions_of(round * 10 + i), 0, "round {round}");
            }
        }
        assert_eq!(effects.starts(), 5, "one restart per panic");
        // Nothing stayed counted: the node still takes frames.
        let r = apply
            .ask(Apply { op: 999, amount: 1 })
            .timeout(Duration::from_secs(5))
            .await;
        assert_eq!(r.unwrap(), 1);
    });
}

/// Answered by an actor future the actor waits on (`AtomicResponse`).
#[derive(Debug, Serialize, Deserialize)]
struct Atomic;
remote_message!(Atomic, "review.atomic", u64);

/// A tell the actor logs.
#[derive(Debug, Serialize, Deserialize)]
struct Mark(u64);
remote_message!(Mark, "review.mark", ());

struct Log(Arc<Mutex<Vec<u64>>>);

impl Actor for Log {
    type Context = Context<Self>;
}

impl Handler<Atomic> for Log {
    type Result = AtomicResponse<Self, u64>;
    fn handle(&mut self, _: Atomic, _: &mut Context<Self>) -> Self::Result {
        AtomicResponse::new(Box::pin(
            actix::fut::wrap_future::<_, Self>(tokio::time::sleep(Duration::from_millis(100))).map(
                |(), act, _| {
                    act.0.lock().unwrap().push(1000);
                    7
                },
            ),
        ))
    }
}

impl Handler<Mark> for Log {
    type Result = ();
    fn handle(&mut self, m: Mark, _: &mut Context<Self>) {
        self.0.lock().unwrap().push(m.0);
    }
}

#[test]
fn tells_behind_an_atomic_ask_wait_for_it() {
    run_virtual(|| async {
        let mut cluster = SimCluster::new(6, FaultPlan::reliable());
        let a = cluster.add_node("a").await.unwrap();
        let b = cluster.add_node("b").await.unwrap();
        let log = Arc::new(Mutex::new(Vec::new()));
        let l = log.clone();
        b.spawn(
            ActorSpec::new("log", move || Log(l.clone()))
                .handles::<Atomic>()
                .handles::<Mark>(),
        )
        .await
        .unwrap();
        let atomic = a.lookup::<Atomic>("b/log").unwrap();
        let mark = a.lookup::<Mark>("b/log").unwrap();
        let ask = atomic.ask(Atomic).into_future();
        let (reply, ()) = futures::join!(ask, async {
            for i in 1..=3 {
                mark.tell(Mark(i)).unwrap();
            }
        });
        assert_eq!(reply.unwrap(), 7);
        tokio::time::sleep(Duration::from_millis(500)).await;
        assert_eq!(*log.lock().unwrap(), vec![1000, 1, 2, 3]);
    });
}

/// Answered by a future, a while after the handler returns.
#[derive(Debug, Serialize, Deserialize)]
struct Slow;
remote_message!(Slow, "review.slow", u64);

struct Sleeper;

impl Actor for Sleeper {
    type Context = Context<Self>;
}

impl Handler<Slow> for Sleeper {
    type Result = ResponseFuture<u64>;
    fn handle(&mut self, _: Slow, _: &mut Context<Self>) -> Self::Result {
        Box::pin(async {
            tokio::time::sleep(Duration::from_millis(200)).await;
            1
        })
    }
}

#[test]
fn a_crashed_node_sends_no_reply() {
    run_virtual(|| async {
        let mut cluster = SimCluster::new(8, FaultPlan::reliable());
        let a = cluster.add_node("a").await.unwrap();
        let b = cluster.add_node("b").await.unwrap();
        b.spawn(ActorSpec::new("sleeper", || Sleeper).handles::<Slow>())
            .await
            .unwrap();
        let slow = a.lookup::<Slow>("b/sleeper").unwrap();
        let ask = tokio::spawn(
            slow.ask(Slow)
                .timeout(Duration::from_secs(1))
                .retry(RetryPolicy::none())
                .into_future(),
        );
        // The ask is running at `b` (its future sleeps) when `b` crashes.
        tokio::time::sleep(Duration::from_millis(50)).await;
        cluster.crash("b");
        let r = ask.await.unwrap();
        assert!(matches!(r, Err(AskError::Timeout(_))), "got {r:?}");
        let trace = cluster.net().trace().to_jsonl();
        let after_crash: Vec<&str> = trace
            .lines()
            .skip_while(|l| !(l.contains(r#""node":"b""#) && l.contains(r#""ev":"crash""#)))
            .filter(|l| l.contains(r#""node":"b""#) && l.contains(r#""ev":"send""#))
            .collect();
        assert!(
            after_crash.is_empty(),
            "the crashed node sent: {after_crash:?}"
        );
    });
}
