//! Asks are deduplicated per sender, and a sender is the incarnation its
//! envelope names *and* the node its connection is authenticated as: another
//! peer can neither poison nor read a node's entries, whether it claims that
//! node's whole identity (refused, never recorded) or only its incarnation
//! (a table of its own).
//!
//! Under virtual time: a pause here ends only once everything the frames
//! set off has run (the clock moves when nothing else can), so what the
//! node sent is exact, however busy the machine is.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;
use serde::{Deserialize, Serialize};
use tokio::sync::{mpsc, watch};
use troupe_framework::actix::{Actor, Context, Handler, ResponseFuture};
use troupe_framework::codec::{self, Envelope, Kind};
use troupe_framework::transport::{Transport, TransportError, TransportEvent};
use troupe_framework::{remote_message, ActorPath, ActorSpec, Node, NodeConfig, NodeId};

#[derive(Debug, Serialize, Deserialize)]
struct Held(u64);
remote_message!(Held, "test.held", u64);

/// Answers `Held(n)` with `n` once the gate opens.
struct Gated(watch::Receiver<bool>);
impl Actor for Gated {
    type Context = Context<Self>;
}
impl Handler<Held> for Gated {
    type Result = ResponseFuture<u64>;
    fn handle(&mut self, m: Held, _: &mut Context<Self>) -> Self::Result {
        let mut gate = self.0.clone();
        Box::pin(async move {
            let _ = gate.wait_for(|open| *open).await;
            m.0
        })
    }
}

/// Records every frame the node sends, with its destination.
#[derive(Default)]
struct Recorded(Mutex<Vec<(String, Bytes)>>);
struct Recording(Arc<Recorded>);
impl Transport for Recording {
    fn local_name(&self) -> &str {
        "b"
    }
    fn send(&self, to: &str, frame: Bytes) -> Result<(), TransportError> {
        self.0 .0.lock().unwrap().push((to.to_string(), frame));
        Ok(())
    }
    fn shutdown(&self) {}
}

impl Recorded {
    /// What was sent to `to`: each envelope's kind and payload.
    fn to(&self, to: &str) -> Vec<(Kind, Vec<u8>)> {
        let sent = self.0.lock().unwrap();
        sent.iter()
            .filter(|(t, _)| t == to)
            .map(|(_, f)| {
                let env = codec::decode(f, 1 << 20).unwrap();
                (env.kind, env.payload)
            })
            .collect()
    }
}

/// Ask `id` claiming to come from `from`, asking `Held(n)` of `b/w`.
fn ask(from: &NodeId, id: u64, n: u64) -> Bytes {
    let env = Envelope {
        from: from.clone(),
        from_actor: None,
        to: "b/w".parse::<ActorPath>().unwrap(),
        kind: Kind::Ask { id, done_below: 0 },
        type_tag: "test.held".into(),
        payload: codec::encode_payload(&Held(n)).unwrap(),
        stamp: None,
    };
    Bytes::from(codec::encode(&env, 1 << 20).unwrap())
}

/// Node `b` with the gated actor `w`: the channel to inject frames, what it
/// sent, and the gate.
async fn node_b() -> (
    Node,
    mpsc::Sender<TransportEvent>,
    Arc<Recorded>,
    watch::Sender<bool>,
) {
    let sent = Arc::new(Recorded::default());
    let (tx, rx) = mpsc::channel(64);
    let b = Node::builder(NodeConfig::named("b"))
        .start(Arc::new(Recording(sent.clone())), rx)
        .unwrap();
    let (open, gate) = watch::channel(false);
    b.spawn(ActorSpec::new("w", move || Gated(gate.clone())).handles::<Held>())
        .await
        .unwrap();
    (b, tx, sent, open)
}

/// Run `f` to completion in an actix system on a current-thread runtime
/// with a paused clock (virtual time).
fn run_virtual<F: std::future::Future>(f: F) -> F::Output {
    actix_rt::System::with_tokio_rt(|| {
        tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .start_paused(true)
            .build()
            .expect("a current-thread runtime")
    })
    .block_on(f)
}

/// Delivers `frame` as if from the authenticated peer `peer`, and lets it settle.
async fn inject(tx: &mpsc::Sender<TransportEvent>, peer: &str, frame: Bytes) {
    tx.send(TransportEvent::Frame {
        from: peer.into(),
        bytes: frame,
    })
    .await
    .unwrap();
    tokio::time::sleep(Duration::from_millis(50)).await;
}

fn answer(payload: &[u8]) -> u64 {
    codec::decode_payload(payload).unwrap()
}

#[test]
fn a_spoofed_ask_does_not_poison_the_real_senders_entry() {
    run_virtual(async {
        let (_b, tx, sent, open) = node_b().await;
        let a = NodeId::with_incarnation("a", 0xa);
        // a's ask 1 runs, held by the gate.
        inject(&tx, "a", ask(&a, 1, 7)).await;
        // m, authenticated as "m", sends an ask claiming to be a, same id:
        // refused at once, to m.
        inject(&tx, "m", ask(&a, 1, 99)).await;
        assert!(matches!(
            sent.to("m").as_slice(),
            [(Kind::ErrorReply { id: 1, .. }, _)]
        ));
        // a retries: still running, so nothing is sent to a yet.
        inject(&tx, "a", ask(&a, 1, 7)).await;
        assert!(
            sent.to("a").is_empty(),
            "a's running ask answered: {:?}",
            sent.to("a")
        );
        open.send(true).unwrap();
        tokio::time::sleep(Duration::from_millis(50)).await;
        // Another spoof, then a's retry: it replays a's real answer.
        inject(&tx, "m", ask(&a, 1, 99)).await;
        inject(&tx, "a", ask(&a, 1, 7)).await;
        let to_a = sent.to("a");
        assert_eq!(to_a.len(), 2, "{to_a:?}");
        for (kind, payload) in &to_a {
            assert_eq!(*kind, Kind::Reply { id: 1 });
            assert_eq!(answer(payload), 7);
        }
    });
}

#[test]
fn a_peer_naming_another_nodes_incarnation_gets_a_table_of_its_own() {
    run_virtual(async {
        let (_b, tx, sent, open) = node_b().await;
        let a = NodeId::with_incarnation("a", 0xa);
        // m uses its own name (so it passes the sender check) with a's
        // incarnation and a's correlation id.
        let m = NodeId::with_incarnation("m", 0xa);
        inject(&tx, "a", ask(&a, 1, 7)).await;
        inject(&tx, "m", ask(&m, 1, 99)).await;
        open.send(true).unwrap();
        tokio::time::sleep(Duration::from_millis(50)).await;
        // Both ran, each answered its own; a's retry replays a's answer.
        inject(&tx, "a", ask(&a, 1, 7)).await;
        let to_a: Vec<u64> = sent.to("a").iter().map(|(_, p)| answer(p)).collect();
        let to_m: Vec<u64> = sent.to("m").iter().map(|(_, p)| answer(p)).collect();
        assert_eq!(to_a, [7, 7]);
        assert_eq!(to_m, [99]);
    });
}
