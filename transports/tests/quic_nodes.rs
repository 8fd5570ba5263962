//! Framework nodes over QUIC: `RemoteRef::tell_wait` waits for room in a
//! full send queue (where `tell` is refused with `QueueFull`), and every
//! waited tell arrives, in order.

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
    let name = cfg.node_name.clone();
    let (tx, rx) = tokio::sync::mpsc::channel(1024);
    let t = QuicTransport::bind(cfg, tx).await.expect("bind");
    Node::builder(NodeConfig::named(name))
        .start(Arc::new(t), rx)
        .expect("node")
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
