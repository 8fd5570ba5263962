//! Framework nodes over QUIC: `RemoteRef::tell_wait` waits for room in a
//! full send queue (where `tell` is refused with `QueueFull`), and every
//! waited tell arrives, in order; a node held at its in-flight limit by a
//! slow actor still reads control tells (heartbeats), and nothing is lost
//! once the actor catches up.

mod quic_support;

use std::sync::{Arc, Mutex};
use std::time::Duration;

use actix::prelude::*;
use quic_support::{init_logs, node_config, reserve_addr};
use serde::{Deserialize, Serialize};
use troupe_framework::transport::TransportError;
use troupe_framework::{remote_message, ActorSpec, Node, NodeConfig, TellError};
use troupe_transports::certs::ClusterCa;
use troupe_transports::quic::QuicTransport;

#[derive(Debug, Serialize, Deserialize)]
struct Item(u64);
remote_message!(Item, "test.item", ());

#[derive(Debug, Serialize, Deserialize)]
struct Count;
remote_message!(Count, "test.count", u64);

struct Sink {
    seen: Arc<Mutex<Vec<u64>>>,
}
impl Actor for Sink {
    type Context = Context<Self>;
}
impl Handler<Item> for Sink {
    type Result = ();
    fn handle(&mut self, m: Item, _: &mut Context<Self>) {
        self.seen.lock().unwrap().push(m.0);
    }
}
impl Handler<Count> for Sink {
    type Result = u64;
    fn handle(&mut self, _: Count, _: &mut Context<Self>) -> u64 {
        self.seen.lock().unwrap().len() as u64
    }
}

async fn node(cfg: troupe_transports::quic::QuicConfig) -> Node {
    let config = NodeConfig::named(cfg.node_name.clone());
    node_with(cfg, config).await
}

async fn node_with(cfg: troupe_transports::quic::QuicConfig, config: NodeConfig) -> Node {
    let (tx, rx) = tokio::sync::mpsc::channel(1024);
    let t = QuicTransport::bind(cfg, tx).await.expect("bind");
    Node::builder(config).start(Arc::new(t), rx).expect("node")
}

/// Handles its first `Item` only once `release` turns true (waiting in
/// `ctx.wait`, so nothing else reaches it meanwhile), the rest at once.
struct Held {
    seen: Arc<Mutex<Vec<u64>>>,
    release: tokio::sync::watch::Receiver<bool>,
}
impl Actor for Held {
    type Context = Context<Self>;
}
impl Handler<Item> for Held {
    type Result = ();
    fn handle(&mut self, m: Item, ctx: &mut Context<Self>) {
        let first = self.seen.lock().unwrap().is_empty();
        self.seen.lock().unwrap().push(m.0);
        if first {
            let mut release = self.release.clone();
            ctx.wait(
                async move {
                    let _ = release.wait_for(|r| *r).await;
                }
                .into_actor(self),
            );
        }
    }
}

#[actix_rt::test]
async fn tell_wait_waits_for_room_where_tell_is_refused() {
    init_logs();
    let ca = ClusterCa::generate().expect("ca");
    let (a_addr, b_addr) = (reserve_addr(), reserve_addr());
    let mut a_cfg = node_config(&ca, "node-a", a_addr, &[("node-b", b_addr)]);
    a_cfg.send_queue_capacity = 4;
    let b_cfg = node_config(&ca, "node-b", b_addr, &[("node-a", a_addr)]);
    let a = node(a_cfg).await;
    let b = node(b_cfg).await;
    let seen = Arc::new(Mutex::new(Vec::new()));
    let s = seen.clone();
    b.spawn(
        ActorSpec::new("sink", move || Sink { seen: s.clone() })
            .handles::<Item>()
            .handles::<Count>(),
    )
    .await
    .expect("spawn");
    let item = a.lookup::<Item>("node-b/sink").expect("path");

    // A queue of 4 frames overflows at once with plain tells.
    let refused = (0..1000u64)
        .map(|_| item.tell(Item(u64::MAX)))
        .filter(|r| {
            matches!(
                r,
                Err(TellError::Transport(TransportError::QueueFull { .. }))
            )
        })
        .count();
    assert!(refused > 0, "a 4-frame queue never filled");
    let accepted = 1000 - refused as u64;

    // tell_wait never refuses: it waits until the writer drains the queue.
    for i in 0..5000u64 {
        item.tell_wait(Item(i)).await.expect("tell_wait");
    }
    let count = a.lookup::<Count>("node-b/sink").expect("path");
    let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
    while count.ask(Count).await.expect("count") < accepted + 5000 {
        assert!(tokio::time::Instant::now() < deadline, "tells lost");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let seen = seen.lock().unwrap().clone();
    let waited: Vec<u64> = seen.into_iter().filter(|v| *v != u64::MAX).collect();
    assert_eq!(
        waited,
        (0..5000).collect::<Vec<_>>(),
        "waited tells out of order"
    );
}

/// The failure detector must not go deaf when an actor is slow: at its
/// in-flight limit a node stops reading ordinary frames (back-pressure), but
/// it keeps reading control frames (heartbeats travel as control tells), up
/// to a reserve. Without that, the ordinary frame to `fast` and the control
/// ones would wait alike until `slow` is released.
#[actix_rt::test]
async fn a_node_at_its_in_flight_limit_still_reads_control_tells() {
    init_logs();
    let ca = ClusterCa::generate().expect("ca");
    let (a_addr, b_addr) = (reserve_addr(), reserve_addr());
    let a = node(node_config(&ca, "node-a", a_addr, &[("node-b", b_addr)])).await;
    let mut b_node = NodeConfig::named("node-b");
    b_node.runtime.max_inflight_deliveries = 32;
    let b = node_with(
        node_config(&ca, "node-b", b_addr, &[("node-a", a_addr)]),
        b_node,
    )
    .await;
    let (release_tx, release) = tokio::sync::watch::channel(false);
    let slow_seen = Arc::new(Mutex::new(Vec::new()));
    let s = slow_seen.clone();
    b.spawn(
        ActorSpec::new("slow", move || Held {
            seen: s.clone(),
            release: release.clone(),
        })
        .handles::<Item>()
        .mailbox(1),
    )
    .await
    .expect("spawn slow");
    let fast_seen = Arc::new(Mutex::new(Vec::new()));
    let f = fast_seen.clone();
    b.spawn(ActorSpec::new("fast", move || Sink { seen: f.clone() }).handles::<Item>())
        .await
        .expect("spawn fast");

    // 200 tells to the held actor: one is handled (and holds it), one
    // fills its inbox, one waits for room, 32 more are parked and the node
    // stops reading ordinary frames.
    let slow = a.lookup::<Item>("node-b/slow").expect("path");
    for i in 0..200u64 {
        slow.tell_wait(Item(i)).await.expect("tell");
    }
    let fast = a.lookup::<Item>("node-b/fast").expect("path");
    fast.tell_wait(Item(1_000)).await.expect("ordinary tell");
    let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
    while b.stats().frames_in < 30 {
        assert!(
            tokio::time::Instant::now() < deadline,
            "node-b reads nothing"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }

    // Control tells still get through, while `slow` is held.
    let heartbeat = fast.clone().control();
    for i in 0..5u64 {
        heartbeat.tell(Item(i)).expect("control tell");
    }
    let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
    while fast_seen.lock().unwrap().iter().filter(|v| **v < 5).count() < 5 {
        assert!(
            tokio::time::Instant::now() < deadline,
            "control tells not read at the in-flight limit: fast saw {:?}",
            fast_seen.lock().unwrap()
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert_eq!(slow_seen.lock().unwrap().len(), 1, "slow is not held");
    assert!(
        !fast_seen.lock().unwrap().contains(&1_000),
        "the ordinary tell behind the held ones was read: the limit did not hold"
    );

    // Released, the held actor gets all 200 in order, and the ordinary
    // tell to `fast` arrives too.
    release_tx.send(true).expect("release");
    let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
    while slow_seen.lock().unwrap().len() < 200 || !fast_seen.lock().unwrap().contains(&1_000) {
        assert!(
            tokio::time::Instant::now() < deadline,
            "lost after release: slow saw {}, fast saw {:?}",
            slow_seen.lock().unwrap().len(),
            fast_seen.lock().unwrap()
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert_eq!(*slow_seen.lock().unwrap(), (0..200).collect::<Vec<_>>());
}
