//! A reliable channel (`troupe_framework::reliable`) between two nodes over
//! real QUIC, with the connection cut mid-stream: every datagram between
//! the nodes is dropped for longer than the QUIC idle timeout, so the
//! connection dies, frames queued on it are lost and the transport
//! reconnects. The consumer must see 1, 2, 3, ... N: 0 duplicates, 0
//! losses.

#[path = "quic_support/cut_proxy.rs"]
mod cut_proxy;
mod quic_support;

use std::sync::{Arc, Mutex};
use std::time::Duration;

use actix::prelude::*;
use cut_proxy::CutProxy;
use quic_support::{init_logs, logged, node_config, reserve_addr};
use serde::{Deserialize, Serialize};
use troupe_framework::reliable::{ReliableReceiver, ReliableSender, SenderSettings};
use troupe_framework::{remote_message, ActorSpec, Node, NodeConfig};
use troupe_transports::certs::ClusterCa;
use troupe_transports::quic::{QuicConfig, QuicTransport};

#[derive(Debug, Serialize, Deserialize)]
struct Item(u64);
remote_message!(Item, "test.reliable.item", ());

/// Checks order at every delivery: counts duplicates (a number already
/// seen) and gaps (a number skipped).
#[derive(Default)]
struct Tally {
    last: u64,
    duplicates: u64,
    gaps: u64,
    handled: u64,
}

struct Sink(Arc<Mutex<Tally>>);
impl Actor for Sink {
    type Context = Context<Self>;
}
impl Handler<Item> for Sink {
    type Result = ();
    fn handle(&mut self, m: Item, _: &mut Context<Self>) {
        let mut t = self.0.lock().unwrap();
        t.handled += 1;
        if m.0 <= t.last {
            t.duplicates += 1;
        } else {
            if m.0 != t.last + 1 {
                t.gaps += 1;
            }
            t.last = m.0;
        }
    }
}

async fn node(mut cfg: QuicConfig) -> Node {
    // Die quickly when the link is cut, reconnect quickly when it is back.
    cfg.keep_alive = Duration::from_millis(200);
    cfg.idle_timeout = Duration::from_millis(800);
    cfg.handshake_timeout = Duration::from_millis(800);
    let config = NodeConfig::named(cfg.node_name.clone());
    let (tx, rx) = tokio::sync::mpsc::channel(1024);
    let t = QuicTransport::bind(cfg, tx).await.expect("bind");
    Node::builder(config).start(Arc::new(t), rx).expect("node")
}

#[actix_rt::test]
async fn no_duplicate_and_no_loss_across_a_connection_cut() {
    init_logs();
    let ca = ClusterCa::generate().expect("ca");
    let (a_addr, b_addr) = (reserve_addr(), reserve_addr());
    // Each node reaches the other only through a relay that can cut.
    let to_b = CutProxy::start(b_addr).await;
    let to_a = CutProxy::start(a_addr).await;
    let a = node(node_config(&ca, "node-a", a_addr, &[("node-b", to_b.addr)])).await;
    let b = node(node_config(&ca, "node-b", b_addr, &[("node-a", to_a.addr)])).await;
    let tally = Arc::new(Mutex::new(Tally::default()));
    let t = tally.clone();
    b.spawn(ActorSpec::new("sink", move || Sink(t.clone())).handles::<Item>())
        .await
        .expect("spawn");
    let _rx = ReliableReceiver::start::<Item>(&b, "items", "sink")
        .await
        .expect("receiver");
    let tx = ReliableSender::<Item>::connect_with(
        &a,
        "node-b/items",
        SenderSettings {
            resend_after: Duration::from_millis(200),
            max_resend_after: Duration::from_secs(1),
            ..SenderSettings::default()
        },
    )
    .await
    .expect("connect");

    const N: u64 = 30_000;
    let producer = {
        let tx = tx.clone();
        actix_rt::spawn(async move {
            for i in 1..=N {
                tx.send(Item(i)).await.expect("send");
            }
        })
    };
    // Cut once the stream is well under way, for 2 s (> idle timeout).
    let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
    while tally.lock().unwrap().handled < N / 4 {
        assert!(
            tokio::time::Instant::now() < deadline,
            "stream never got going"
        );
        tokio::time::sleep(Duration::from_millis(2)).await;
    }
    let at_cut = tally.lock().unwrap().handled;
    to_b.set_cut(true);
    to_a.set_cut(true);
    tokio::time::sleep(Duration::from_secs(2)).await;
    let during = tally.lock().unwrap().handled;
    to_b.set_cut(false);
    to_a.set_cut(false);

    tokio::time::timeout(Duration::from_secs(60), producer)
        .await
        .expect("producer finished after the cut")
        .expect("producer task");
    tokio::time::timeout(Duration::from_secs(60), tx.flush())
        .await
        .expect("all acknowledged after the cut")
        .expect("flush");
    let t = tally.lock().unwrap();
    let stats = tx.stats();
    eprintln!(
        "cut at {at_cut}, {during} handled when it ended; dropped datagrams {} + {}; sender {stats:?}",
        to_b.dropped(),
        to_a.dropped()
    );
    assert!(
        to_b.dropped() + to_a.dropped() > 0,
        "the cut dropped nothing"
    );
    assert!(during < N, "the cut did not interrupt the stream");
    assert!(
        logged(&["peer down"]),
        "the connection survived the cut (no \"peer down\" logged)"
    );
    assert!(stats.timeouts > 0, "no resend was needed: {stats:?}");
    assert_eq!((t.duplicates, t.gaps), (0, 0), "duplicates, gaps");
    assert_eq!((t.handled, t.last), (N, N), "all delivered exactly once");
}
