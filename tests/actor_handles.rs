//! What a new user reaches for first: one handle per actor that tells and
//! asks every message type the actor accepts, and actor factories that get
//! the node and their own path on every (re)start.

mod common;

use std::sync::{Arc, Mutex};
use std::time::Duration;

use actix::prelude::*;
use common::{Apply, Effects, Ledger, Note, Panic};
use serde::{Deserialize, Serialize};
use troupe::framework::supervision::ActorSetup;
use troupe::framework::{remote_message, ActorSpec, Node};
use troupe::transports::sim::{run_virtual, FaultPlan, SimCluster};

#[test]
fn one_handle_tells_and_asks_every_message_type_locally_and_remotely() {
    run_virtual(|| async {
        let mut cluster = SimCluster::new(21, FaultPlan::reliable());
        let a = cluster.add_node("a").await.unwrap();
        let b = cluster.add_node("b").await.unwrap();
        let effects = Effects::default();
        let e = effects.clone();
        b.spawn(
            ActorSpec::new("ledger", move || Ledger::new(e.clone()))
                .handles::<Apply>()
                .handles::<Note>(),
        )
        .await
        .unwrap();
        for (from, tag) in [(&a, 100u64), (&b, 200u64)] {
            let ledger = from.actor("b/ledger").unwrap();
            ledger.tell(Note(tag)).unwrap();
            ledger.tell_wait(Note(tag + 1)).await.unwrap();
            let balance = ledger
                .ask(Apply { op: tag, amount: 5 })
                .timeout(Duration::from_secs(1))
                .await
                .unwrap();
            assert!(balance == 5 || balance == 10, "{balance}");
            // The typed handle it hands out is the same kind of handle.
            assert_eq!(ledger.of::<Note>().path().to_string(), "b/ledger");
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
        assert_eq!(*effects.notes.lock().unwrap(), vec![100, 101, 200, 201]);
        assert_eq!(effects.executions_of(100), 1);
        assert_eq!(effects.executions_of(200), 1);
        assert!(a.actor("not a path").is_err());
    });
}

/// Who am I? Answers the node and path its factory was given.
#[derive(Debug, Clone, Serialize, Deserialize)]
struct WhoAmI;
remote_message!(WhoAmI, "test.whoami", (String, String, String));

struct Introspective {
    node: Node,
    path: String,
    tree: String,
}

impl Actor for Introspective {
    type Context = Context<Self>;
}

impl Handler<WhoAmI> for Introspective {
    type Result = MessageResult<WhoAmI>;
    fn handle(&mut self, _: WhoAmI, _: &mut Context<Self>) -> Self::Result {
        MessageResult((
            self.node.id().to_string(),
            self.path.clone(),
            self.tree.clone(),
        ))
    }
}

impl Handler<Panic> for Introspective {
    type Result = ();
    fn handle(&mut self, _: Panic, _: &mut Context<Self>) {
        panic!("asked to panic (this panic is expected by the test)");
    }
}

#[test]
fn an_actor_factory_gets_its_node_and_path_on_every_start() {
    run_virtual(|| async {
        let mut cluster = SimCluster::new(22, FaultPlan::reliable());
        let a = cluster.add_node("a").await.unwrap();
        let starts = Arc::new(Mutex::new(0u32));
        let s = starts.clone();
        a.spawn(
            ActorSpec::with_context("me", move |cx: &ActorSetup| {
                *s.lock().unwrap() += 1;
                Introspective {
                    node: cx.node().clone(),
                    path: cx.path().to_string(),
                    tree: cx.tree_path().to_string(),
                }
            })
            .handles::<WhoAmI>()
            .handles::<Panic>(),
        )
        .await
        .unwrap();
        let me = a.actor("a/me").unwrap();
        let ask = || me.ask(WhoAmI).timeout(Duration::from_secs(1));
        let (node, path, tree) = ask().await.unwrap();
        assert_eq!(node, a.id().to_string());
        assert_eq!(path, "a/me");
        assert_eq!(tree, "me");
        me.tell(Panic).unwrap();
        tokio::time::sleep(Duration::from_millis(500)).await;
        assert_eq!(*starts.lock().unwrap(), 2, "restarted by its supervisor");
        let (node, path, _) = ask().await.unwrap();
        assert_eq!((node, path), (a.id().to_string(), "a/me".to_string()));
    });
}

#[test]
fn a_membership_view_prints_as_its_map() {
    use troupe::framework::membership::{MemberEvent, MemberStatus};
    run_virtual(|| async {
        let mut cluster = SimCluster::new(23, FaultPlan::reliable());
        let a = cluster.add_node("a").await.unwrap();
        for (m, status) in [("b", MemberStatus::Up), ("c", MemberStatus::Down)] {
            a.publish_membership(MemberEvent {
                member: m.into(),
                status,
                at: Duration::ZERO,
            });
        }
        assert_eq!(format!("{:?}", a.membership()), r#"{"b": Up, "c": Down}"#);
    });
}

/// The detector settings an embedding program writes are reachable from
/// `troupe::config`, next to the `Config` that holds them.
#[test]
fn detector_config_types_are_exported_from_troupe_config() {
    let fd = troupe::config::FailureDetectorConfig::PhiAccrual(
        troupe::config::PhiAccrualConfig::default(),
    );
    let _: (troupe::config::HeartbeatConfig, troupe::config::SwimConfig) =
        (Default::default(), Default::default());
    assert!(format!("{fd:?}").contains("PhiAccrual"));
}

/// Messages to a node the failure detector reports `Down` say so at once:
/// an ask fails with `Unreachable` instead of waiting for its deadline, a
/// tell is refused and counted; control traffic still goes out (so a node
/// that comes back is noticed), and everything works again once it is `Up`.
#[test]
fn messages_to_a_node_known_down_fail_fast_and_dropped_tells_are_counted() {
    use troupe::framework::membership::{MemberEvent, MemberStatus};
    use troupe::framework::transport::TransportError;
    use troupe::framework::{AskError, TellError};
    run_virtual(|| async {
        let mut cluster = SimCluster::new(24, FaultPlan::reliable());
        let a = cluster.add_node("a").await.unwrap();
        let b = cluster.add_node("b").await.unwrap();
        let effects = Effects::default();
        let e = effects.clone();
        b.spawn(
            ActorSpec::new("ledger", move || Ledger::new(e.clone()))
                .handles::<Apply>()
                .handles::<Note>(),
        )
        .await
        .unwrap();
        let set = |status| {
            a.publish_membership(MemberEvent {
                member: "b".into(),
                status,
                at: a.now(),
            })
        };
        set(MemberStatus::Down);
        let ledger = a.actor("b/ledger").unwrap();
        let before = a.now();
        let asked = ledger
            .ask(Apply { op: 1, amount: 1 })
            .timeout(Duration::from_secs(10))
            .await;
        assert_eq!(a.now(), before, "failed at once, not after the deadline");
        assert!(
            matches!(
                asked,
                Err(AskError::Unreachable(TransportError::PeerDown { ref peer, status: MemberStatus::Down })) if peer == "b"
            ),
            "{asked:?}"
        );
        let told = ledger.tell(Note(1));
        assert!(
            matches!(
                told,
                Err(TellError::Transport(TransportError::PeerDown { .. }))
            ),
            "{told:?}"
        );
        assert_eq!(a.stats().dropped_tells, 1);
        // Control traffic is still sent.
        let control = a.actor_ref::<Note>("b/ledger".parse().unwrap()).control();
        control.tell(Note(2)).unwrap();
        set(MemberStatus::Left);
        assert!(ledger.tell(Note(3)).is_err(), "Left is unreachable too");
        set(MemberStatus::Up);
        ledger.tell(Note(4)).unwrap();
        let balance = ledger
            .ask(Apply { op: 5, amount: 7 })
            .timeout(Duration::from_secs(1))
            .await
            .unwrap();
        assert_eq!(balance, 7);
        tokio::time::sleep(Duration::from_millis(50)).await;
        assert_eq!(*effects.notes.lock().unwrap(), vec![2, 4]);
        assert_eq!(effects.executions_of(1), 0, "the refused ask never ran");
        assert_eq!(a.stats().dropped_tells, 2);
    });
}

/// A node reported `Joining` (configured, not heard from yet) is not known
/// to be down: messages to it are sent as usual, and an ask to it waits for
/// its reply (or its deadline) instead of failing fast like `Down`/`Left`.
#[test]
fn messages_to_a_joining_node_are_sent_not_refused() {
    use troupe::framework::membership::{MemberEvent, MemberStatus};
    run_virtual(|| async {
        let mut cluster = SimCluster::new(25, FaultPlan::reliable());
        let a = cluster.add_node("a").await.unwrap();
        let b = cluster.add_node("b").await.unwrap();
        let effects = Effects::default();
        let e = effects.clone();
        b.spawn(
            ActorSpec::new("ledger", move || Ledger::new(e.clone()))
                .handles::<Apply>()
                .handles::<Note>(),
        )
        .await
        .unwrap();
        a.publish_membership(MemberEvent {
            member: "b".into(),
            status: MemberStatus::Joining,
            at: a.now(),
        });
        assert_eq!(
            a.membership().status(&"b".to_string()),
            Some(MemberStatus::Joining)
        );
        let ledger = a.actor("b/ledger").unwrap();
        ledger.tell(Note(1)).unwrap();
        let balance = ledger
            .ask(Apply { op: 2, amount: 3 })
            .timeout(Duration::from_secs(1))
            .await
            .unwrap();
        assert_eq!(balance, 3);
        tokio::time::sleep(Duration::from_millis(50)).await;
        assert_eq!(*effects.notes.lock().unwrap(), vec![1]);
        assert_eq!(a.stats().dropped_tells, 0);
    });
}
