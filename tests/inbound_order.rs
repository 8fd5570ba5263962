//! Per-actor arrival order through the inbound dispatcher when mailboxes are
//! full: a burst of tells with asks between them, handed to a node in one
//! stream of batches (as QUIC hands over received chunks), must reach the actor exactly
//! in arrival order, and each ask must see exactly the tells sent before it.

use std::sync::{Arc, Mutex};

use bytes::Bytes;
use serde::{Deserialize, Serialize};
use troupe::framework::codec::{self, ClockStamp, EnvelopeRef, Kind};
use troupe::framework::transport::TransportEvent;
use troupe::framework::{remote_message, ActorPath, ActorSpec, Node, NodeConfig, NodeId};
use troupe::prelude::*;
use troupe::transports::sim::{run_virtual, FaultPlan, SimNetwork};

#[derive(Debug, Serialize, Deserialize)]
struct Seq(u64);
remote_message!(Seq, "test.seq", ());

#[derive(Debug, Serialize, Deserialize)]
struct Seen;
remote_message!(Seen, "test.seen", u64);

struct Recorder {
    log: Arc<Mutex<Vec<u64>>>,
}
impl Actor for Recorder {
    type Context = Context<Self>;
}
impl Handler<Seq> for Recorder {
    type Result = ();
    fn handle(&mut self, m: Seq, _: &mut Context<Self>) {
        self.log.lock().unwrap().push(m.0);
    }
}
impl Handler<Seen> for Recorder {
    type Result = u64;
    fn handle(&mut self, _: Seen, _: &mut Context<Self>) -> u64 {
        self.log.lock().unwrap().len() as u64
    }
}

fn frame(from: &NodeId, to: &ActorPath, kind: Kind, tag: &str, payload: &[u8], t: u64) -> Bytes {
    let stamp = ClockStamp {
        lamport: Some(t),
        vector: None,
    };
    let env = EnvelopeRef {
        from,
        from_actor: None,
        to,
        kind: &kind,
        type_tag: tag,
        payload,
        stamp: Some(&stamp),
    };
    Bytes::from(codec::encode_ref(&env, codec::DEFAULT_MAX_FRAME_LEN).unwrap())
}

/// Node `b` on `net`, reading the frames sent into the returned channel as
/// if they came from a transport, with a `Recorder` named `rec` (mailbox of
/// `mailbox` messages, or the default) whose log is returned, and the
/// receiver `net` delivers to for `b` (unused; kept open by the caller).
async fn recorder_node(
    net: &SimNetwork,
    mailbox: Option<usize>,
) -> (
    Node,
    tokio::sync::mpsc::Sender<TransportEvent>,
    Arc<Mutex<Vec<u64>>>,
    troupe::framework::transport::InboundReceiver,
) {
    let (transport, net_rx) = net.attach("b", 16);
    let (inject, inbound) = tokio::sync::mpsc::channel(16);
    let b = Node::builder(NodeConfig::named("b"))
        .start(transport, inbound)
        .unwrap();
    let log = Arc::new(Mutex::new(Vec::new()));
    let l = log.clone();
    let mut spec = ActorSpec::new("rec", move || Recorder { log: l.clone() })
        .handles::<Seq>()
        .handles::<Seen>();
    if let Some(capacity) = mailbox {
        spec = spec.mailbox(capacity);
    }
    b.spawn(spec).await.unwrap();
    (b, inject, log, net_rx)
}

#[test]
fn a_burst_reaches_a_full_mailbox_in_arrival_order() {
    run_virtual(|| burst(false));
}

#[test]
fn a_paced_stream_reaches_a_full_mailbox_in_arrival_order_in_real_time() {
    // Real time, with the actor draining its mailbox between batches.
    actix_rt::System::new().block_on(burst(true));
}

async fn burst(paced: bool) {
    {
        let net = SimNetwork::new(9, FaultPlan::reliable());
        // The node reads from our channel; its replies go out through the net.
        let (b, inject, log, _net_rx) = recorder_node(&net, Some(8)).await;
        let (_peer, mut replies) = net.attach("peer", 4096);

        let peer = NodeId::with_incarnation("peer", 5);
        let to = ActorPath::new("b", "rec").unwrap();
        // 1,000 tells (far past the mailbox capacity of 8) with an
        // ask after every 100th.
        let mut frames = Vec::new();
        let mut asks = Vec::new();
        for i in 0..1000u64 {
            let p = codec::encode_payload(&Seq(i)).unwrap();
            frames.push(frame(&peer, &to, Kind::Tell, "test.seq", &p, i + 1));
            if i % 100 == 99 {
                let id = 1 + asks.len() as u64;
                let p = codec::encode_payload(&Seen).unwrap();
                frames.push(frame(
                    &peer,
                    &to,
                    Kind::Ask { id, done_below: 0 },
                    "test.seen",
                    &p,
                    i + 1,
                ));
                asks.push((id, i + 1));
            }
        }
        // In batches of varied sizes, as received chunks are.
        let mut rest = &frames[..];
        let mut k = 1;
        while !rest.is_empty() {
            let n = (k * 37 % 150 + 1).min(rest.len());
            inject
                .send(TransportEvent::Frames {
                    from: Arc::from("peer"),
                    frames: rest[..n].to_vec(),
                })
                .await
                .unwrap();
            rest = &rest[n..];
            k += 1;
            if paced {
                tokio::task::yield_now().await;
            }
        }

        // Every ask is answered with the number of tells sent before it.
        let mut answered = Vec::new();
        while answered.len() < asks.len() {
            let ev = tokio::time::timeout(std::time::Duration::from_secs(30), replies.recv())
                .await
                .expect("replies arrive")
                .expect("channel open");
            for (_, bytes) in ev.frames() {
                let env = codec::decode(bytes, codec::DEFAULT_MAX_FRAME_LEN).unwrap();
                match env.kind {
                    Kind::Reply { id } => {
                        let seen: u64 = codec::decode_payload(&env.payload).unwrap();
                        answered.push((id, seen));
                    }
                    other => panic!("unexpected reply {other:?}"),
                }
            }
        }
        answered.sort();
        assert_eq!(answered, asks, "an ask overtook tells or was overtaken");
        let log = log.lock().unwrap().clone();
        assert_eq!(log, (0..1000).collect::<Vec<_>>(), "tells reordered");
        assert_eq!(b.stats().undeliverable, 0);
        // The mailbox (8) really was full along the way, and it was counted.
        assert!(b.stats().mailbox_full > 0, "{:?}", b.stats());
    }
}

/// A stream the node reads in place (`TransportEvent::Source`, as QUIC
/// hands over) that always has data ready does not starve the actors on
/// the dispatcher's thread: the dispatcher yields every 256 frames, so an
/// actor with the default mailbox (1024) drains it in between and 4,096
/// tells arriving at once never find it full.
#[test]
fn a_stream_read_in_place_lets_actors_drain_their_mailboxes() {
    // Sixteen batches of 256, every one ready at once.
    run_virtual(|| tells_arriving_at_once(256));
}

/// The same when a single received chunk holds more frames than the
/// mailbox: the dispatcher yields in the middle of the batch.
#[test]
fn one_batch_larger_than_a_mailbox_lets_the_actor_drain_it() {
    run_virtual(|| tells_arriving_at_once(4096));
}

/// 4,096 tells handed over in batches of `batch`, all ready at once: they
/// arrive in order and never find the (default) mailbox full.
async fn tells_arriving_at_once(batch: usize) {
    let net = SimNetwork::new(3, FaultPlan::reliable());
    let (b, inject, log, _net_rx) = recorder_node(&net, None).await;
    let peer = NodeId::with_incarnation("peer", 5);
    let to = ActorPath::new("b", "rec").unwrap();
    let frames: Vec<Bytes> = (0..4096u64)
        .map(|i| {
            let p = codec::encode_payload(&Seq(i)).unwrap();
            frame(&peer, &to, Kind::Tell, "test.seq", &p, i + 1)
        })
        .collect();
    let batches: Vec<TransportEvent> = frames
        .chunks(batch)
        .map(|c| TransportEvent::Frames {
            from: Arc::from("peer"),
            frames: c.to_vec(),
        })
        .collect();
    inject
        .send(TransportEvent::Source(Box::pin(futures::stream::iter(
            batches,
        ))))
        .await
        .unwrap();
    while log.lock().unwrap().len() < 4096 {
        tokio::time::sleep(std::time::Duration::from_millis(10)).await;
    }
    assert_eq!(
        *log.lock().unwrap(),
        (0..4096).collect::<Vec<_>>(),
        "tells reordered"
    );
    assert_eq!(b.stats().mailbox_full, 0, "{:?}", b.stats());
}
