//! Framework nodes over real QUIC under bad *frames* from an authenticated
//! peer: frames that are correctly length-prefixed but do not decode as an
//! envelope, envelopes claiming another sender than the peer's certificate,
//! and messages for an unknown actor, an unknown message type or with a
//! payload that does not decode.
//!
//! The attacker is a raw quinn client holding node-b's valid certificate: it
//! does the hello, writes frames on one data stream, and reads the node's
//! replies from the streams the node opens. Each test checks the node's
//! counters ([`NodeStats`](troupe_framework::node::NodeStats)), that the same
//! connection (and the same stream) keeps being served afterwards, that a
//! legitimate framework node (node-c) is served throughout, and that an ask
//! the node cannot deliver is answered with an error reply, not left to time
//! out. Counters are read after the node answered a valid ask written *behind*
//! the bad frames on the same stream: the dispatcher handles one stream's
//! frames in order, so by then every bad frame has been handled.

mod quic_support;

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use actix::prelude::*;
use quic_support::{init_logs, logged, node_config, prefixed, raw_client, raw_data_stream};
use quic_support::{raw_hello, reserve_addr, TROUPE_ALPN};
use serde::{Deserialize, Serialize};
use tokio::sync::mpsc;
use troupe_framework::codec::{self, Envelope, Kind, RemoteError, DEFAULT_MAX_FRAME_LEN};
use troupe_framework::node::NodeStatsSnapshot;
use troupe_framework::{
    remote_message, ActorPath, ActorSpec, AskError, Node, NodeConfig, NodeId, RemoteMessage, Sender,
};
use troupe_transports::certs::ClusterCa;
use troupe_transports::quic::{QuicConfig, QuicTransport};

const WAIT: Duration = Duration::from_secs(10);

/// A tell the probe records together with its (authenticated) sender.
#[derive(Debug, Serialize, Deserialize)]
struct Tally(u64);
remote_message!(Tally, "bad-frames.tally", ());

/// Ask: answered with `n + 1`.
#[derive(Debug, Serialize, Deserialize)]
struct Echo(u64);
remote_message!(Echo, "bad-frames.echo", u64);

/// Ask: answered with the sender's node name as the node saw it.
#[derive(Debug, Serialize, Deserialize)]
struct Who;
remote_message!(Who, "bad-frames.who", String);

/// Ask: answered with every tally received so far, `(sender, n)`.
#[derive(Debug, Serialize, Deserialize)]
struct Tallies;
remote_message!(Tallies, "bad-frames.tallies", Vec<(String, u64)>);

/// A message type the probe never registers.
#[derive(Debug, Serialize, Deserialize)]
struct Unregistered;
remote_message!(Unregistered, "bad-frames.unregistered", ());

/// The actor under attack, `node-a/probe`.
struct Probe {
    tallies: Arc<Mutex<Vec<(String, u64)>>>,
}
impl Actor for Probe {
    type Context = Context<Self>;
}
impl Handler<Sender<Tally>> for Probe {
    type Result = ();
    fn handle(&mut self, m: Sender<Tally>, _: &mut Context<Self>) {
        if let Ok(mut t) = self.tallies.lock() {
            t.push((m.from.name, m.msg.0));
        }
    }
}
impl Handler<Echo> for Probe {
    type Result = u64;
    fn handle(&mut self, m: Echo, _: &mut Context<Self>) -> u64 {
        m.0 + 1
    }
}
impl Handler<Sender<Who>> for Probe {
    type Result = String;
    fn handle(&mut self, m: Sender<Who>, _: &mut Context<Self>) -> String {
        m.from.name
    }
}
impl Handler<Tallies> for Probe {
    type Result = MessageResult<Tallies>;
    fn handle(&mut self, _: Tallies, _: &mut Context<Self>) -> Self::Result {
        MessageResult(self.tallies.lock().map(|t| t.clone()).unwrap_or_default())
    }
}

async fn start_node(cfg: QuicConfig) -> Node {
    let name = cfg.node_name.clone();
    let (tx, rx) = tokio::sync::mpsc::channel(1024);
    let t = QuicTransport::bind(cfg, tx).await.expect("bind");
    Node::builder(NodeConfig::named(name))
        .start(Arc::new(t), rx)
        .expect("node")
}

/// node-a (serving `probe`), node-c (a legitimate framework node), and the
/// address of node-a; node-b is left to the raw client.
struct Cluster {
    a: Node,
    c: Node,
    a_addr: SocketAddr,
    ca: ClusterCa,
}

async fn cluster() -> Cluster {
    init_logs();
    let ca = ClusterCa::generate().expect("ca");
    let (a_addr, c_addr) = (reserve_addr(), reserve_addr());
    let a_cfg = node_config(
        &ca,
        "node-a",
        a_addr,
        &[("node-b", reserve_addr()), ("node-c", c_addr)],
    );
    let c_cfg = node_config(&ca, "node-c", c_addr, &[("node-a", a_addr)]);
    let a = start_node(a_cfg).await;
    let c = start_node(c_cfg).await;
    a.spawn(
        ActorSpec::new("probe", || Probe {
            tallies: Arc::new(Mutex::new(Vec::new())),
        })
        .handles_from::<Tally>()
        .handles::<Echo>()
        .handles_from::<Who>()
        .handles::<Tallies>(),
    )
    .await
    .expect("spawn probe");
    // node-c reaches node-a's probe and is seen under its own name.
    let who = c.lookup::<Who>("node-a/probe").expect("path");
    assert_eq!(
        who.ask(Who)
            .timeout(WAIT)
            .await
            .expect("node-c's first ask"),
        "node-c"
    );
    Cluster { a, c, a_addr, ca }
}

/// node-c is still served: its asks are answered, under its own name.
async fn node_c_is_served(c: &Node, n: u64) {
    let echo = c.lookup::<Echo>("node-a/probe").expect("path");
    assert_eq!(
        echo.ask(Echo(n))
            .timeout(WAIT)
            .await
            .expect("node-c's echo"),
        n + 1
    );
    let who = c.lookup::<Who>("node-a/probe").expect("path");
    assert_eq!(
        who.ask(Who).timeout(WAIT).await.expect("node-c's who"),
        "node-c"
    );
}

/// A raw, authenticated node-b: one data stream for its frames, and every
/// envelope the node sends it (read from the streams the node opens).
struct RawPeer {
    conn: quinn::Connection,
    stream: quinn::SendStream,
    inbox: mpsc::UnboundedReceiver<Envelope>,
    /// Replies and error replies received, by ask id, not yet taken.
    replies: BTreeMap<u64, Envelope>,
    me: NodeId,
    next_id: u64,
}

/// Reads length-prefixed envelopes from one stream the node opened, until it
/// ends or something does not parse.
async fn read_envelopes(mut recv: quinn::RecvStream, tx: mpsc::UnboundedSender<Envelope>) {
    let mut kind = [0u8; 1];
    if recv.read_exact(&mut kind).await.is_err() {
        return;
    }
    loop {
        let mut len = [0u8; 4];
        if recv.read_exact(&mut len).await.is_err() {
            return;
        }
        let len = u32::from_be_bytes(len) as usize;
        if len > DEFAULT_MAX_FRAME_LEN {
            return;
        }
        let mut body = vec![0u8; len];
        if recv.read_exact(&mut body).await.is_err() {
            return;
        }
        match codec::decode(&body, DEFAULT_MAX_FRAME_LEN) {
            Ok(env) => {
                if tx.send(env).is_err() {
                    return;
                }
            }
            Err(_) => return,
        }
    }
}

impl RawPeer {
    async fn connect(ca: &ClusterCa, a_addr: SocketAddr) -> RawPeer {
        let ep = raw_client(ca, Some(&ca.issue("node-b").expect("b")), TROUPE_ALPN);
        let conn = raw_hello(&ep, a_addr, "node-a", "node-b")
            .await
            .unwrap_or_else(|e| panic!("the raw node-b must get in: {e}"));
        let (tx, inbox) = mpsc::unbounded_channel();
        let accepting = conn.clone();
        tokio::spawn(async move {
            // Keeps the endpoint alive as long as the connection.
            let _ep = ep;
            while let Ok(recv) = accepting.accept_uni().await {
                tokio::spawn(read_envelopes(recv, tx.clone()));
            }
        });
        let stream = raw_data_stream(&conn).await;
        RawPeer {
            conn,
            stream,
            inbox,
            replies: BTreeMap::new(),
            me: NodeId::with_incarnation("node-b", 0xb),
            next_id: 1,
        }
    }

    /// Writes one length-prefixed frame on the data stream.
    async fn write(&mut self, frame: &[u8]) {
        self.stream
            .write_all(&prefixed(frame))
            .await
            .expect("write a frame on the raw data stream");
    }

    /// An encoded envelope `from` → `to` of kind `kind` carrying `M`'s tag and
    /// `payload`.
    fn envelope<M: RemoteMessage>(from: &NodeId, to: &str, kind: Kind, payload: &[u8]) -> Vec<u8> {
        let env = Envelope {
            from: from.clone(),
            from_actor: None,
            to: to.parse::<ActorPath>().expect("path"),
            kind,
            type_tag: M::NAME.to_string(),
            payload: payload.to_vec(),
            stamp: None,
        };
        codec::encode(&env, DEFAULT_MAX_FRAME_LEN).expect("encode envelope")
    }

    /// Tells `msg` to `to`, claiming to be `from`.
    async fn tell_as<M: RemoteMessage>(&mut self, from: &NodeId, to: &str, msg: &M) {
        let payload = codec::encode_payload(msg).expect("payload");
        let frame = Self::envelope::<M>(from, to, Kind::Tell, &payload);
        self.write(&frame).await;
    }

    /// Asks `M` with the raw `payload` of `to`, claiming to be `from`; returns
    /// the ask id.
    async fn ask_raw<M: RemoteMessage>(&mut self, from: &NodeId, to: &str, payload: &[u8]) -> u64 {
        let id = self.next_id;
        self.next_id += 1;
        let kind = Kind::Ask { id, done_below: 0 };
        let frame = Self::envelope::<M>(from, to, kind, payload);
        self.write(&frame).await;
        id
    }

    /// Asks `msg` of `to` as node-b; returns the ask id.
    async fn ask<M: RemoteMessage>(&mut self, to: &str, msg: &M) -> u64 {
        let payload = codec::encode_payload(msg).expect("payload");
        let me = self.me.clone();
        self.ask_raw::<M>(&me, to, &payload).await
    }

    /// Waits (at most `limit`) for the reply or error reply to ask `id`.
    async fn answer_within(&mut self, id: u64, limit: Duration) -> Option<Envelope> {
        let deadline = tokio::time::Instant::now() + limit;
        loop {
            if let Some(env) = self.replies.remove(&id) {
                return Some(env);
            }
            let env = match tokio::time::timeout_at(deadline, self.inbox.recv()).await {
                Ok(Some(env)) => env,
                Ok(None) | Err(_) => return None,
            };
            match env.kind {
                Kind::Reply { id } | Kind::ErrorReply { id, .. } => {
                    self.replies.insert(id, env);
                }
                _ => {}
            }
        }
    }

    /// The successful reply to ask `id`, decoded.
    async fn reply<R: serde::de::DeserializeOwned>(&mut self, id: u64) -> R {
        let env = self
            .answer_within(id, WAIT)
            .await
            .unwrap_or_else(|| panic!("no answer to ask {id} within {WAIT:?}"));
        match env.kind {
            Kind::Reply { .. } => codec::decode_payload(&env.payload).expect("reply payload"),
            other => panic!("ask {id}: expected a reply, got {other:?}"),
        }
    }

    /// The error reply to ask `id`.
    async fn error_reply(&mut self, id: u64) -> RemoteError {
        let env = self
            .answer_within(id, WAIT)
            .await
            .unwrap_or_else(|| panic!("no answer to ask {id} within {WAIT:?}: timed out"));
        match env.kind {
            Kind::ErrorReply { error, .. } => error,
            other => panic!("ask {id}: expected an error reply, got {other:?}"),
        }
    }

    /// The connection is still open (the node did not close it).
    fn assert_open(&self) {
        assert!(
            self.conn.close_reason().is_none(),
            "the node closed the raw peer's connection: {:?}",
            self.conn.close_reason()
        );
    }
}

fn delta(before: NodeStatsSnapshot, after: NodeStatsSnapshot) -> NodeStatsSnapshot {
    NodeStatsSnapshot {
        frames_in: after.frames_in - before.frames_in,
        bad_frames: after.bad_frames - before.bad_frames,
        spoofed_frames: after.spoofed_frames - before.spoofed_frames,
        undeliverable: after.undeliverable - before.undeliverable,
        deduplicated: after.deduplicated - before.deduplicated,
        mailbox_full: after.mailbox_full - before.mailbox_full,
        dropped_tells: after.dropped_tells - before.dropped_tells,
    }
}

/// Frames with a valid length prefix that no decoder may accept as an
/// envelope, built from `valid` (an encoded envelope) where it helps.
fn undecodable_frames(valid: &[u8]) -> Vec<(&'static str, Vec<u8>)> {
    let mut wrong_version = valid.to_vec();
    wrong_version[0] = codec::WIRE_VERSION.wrapping_add(1);
    vec![
        ("empty frame", Vec::new()),
        ("0xdeadbeef as a body", vec![0xde, 0xad, 0xbe, 0xef]),
        ("wrong wire version", wrong_version),
        (
            "not msgpack",
            [&[codec::WIRE_VERSION][..], b"\xc1\xc1\xc1 not msgpack"].concat(),
        ),
        (
            "msgpack of another shape",
            [&[codec::WIRE_VERSION][..], &[0x93, 1, 2, 3][..]].concat(),
        ),
        ("truncated envelope", valid[..valid.len() / 2].to_vec()),
        ("version byte only", vec![codec::WIRE_VERSION]),
    ]
}

#[actix_rt::test]
async fn undecodable_and_spoofed_frames_are_counted_dropped_and_the_node_keeps_serving() {
    let Cluster { a, c, a_addr, ca } = cluster().await;
    let mut b = RawPeer::connect(&ca, a_addr).await;

    // A legitimate start: node-b's asks and tells are served and attributed.
    let id = b.ask("node-a/probe", &Who).await;
    assert_eq!(b.reply::<String>(id).await, "node-b");
    let me = b.me.clone();
    b.tell_as(&me, "node-a/probe", &Tally(1)).await;
    let before = a.stats();

    // Correctly framed, undecodable frames.
    let payload = codec::encode_payload(&Echo(5)).expect("payload");
    let valid = RawPeer::envelope::<Echo>(
        &me,
        "node-a/probe",
        Kind::Ask {
            id: 999,
            done_below: 0,
        },
        &payload,
    );
    let bad = undecodable_frames(&valid);
    for (_, frame) in &bad {
        b.write(frame).await;
    }
    // Envelopes claiming to come from node-c (its real identity), on
    // node-b's authenticated connection: a tell and an ask.
    let spoofed_as = c.id().clone();
    b.tell_as(&spoofed_as, "node-a/probe", &Tally(666)).await;
    let payload = codec::encode_payload(&Echo(665)).expect("payload");
    b.ask_raw::<Echo>(&spoofed_as, "node-a/probe", &payload)
        .await;
    // Same stream, right behind them: still served.
    let id = b.ask("node-a/probe", &Echo(41)).await;
    assert_eq!(b.reply::<u64>(id).await, 42, "ask behind the bad frames");
    b.tell_as(&me, "node-a/probe", &Tally(2)).await;
    let id = b.ask("node-a/probe", &Tallies).await;
    let tallies: Vec<(String, u64)> = b.reply(id).await;

    let d = delta(before, a.stats());
    assert_eq!(
        d.bad_frames,
        bad.len() as u64,
        "every undecodable frame counted once: {bad:?} -> {d:?}",
        bad = bad.iter().map(|(what, _)| *what).collect::<Vec<_>>()
    );
    assert_eq!(d.spoofed_frames, 2, "spoofed tell and ask counted: {d:?}");
    assert_eq!(d.undeliverable, 0, "{d:?}");
    // The spoofed tell never reached the actor; node-b's tells did, as node-b.
    assert_eq!(
        tallies,
        vec![("node-b".to_string(), 1), ("node-b".to_string(), 2)],
        "only authenticated tells delivered"
    );
    b.assert_open();
    // The same connection on a new stream is served too.
    b.stream = raw_data_stream(&b.conn).await;
    let id = b.ask("node-a/probe", &Echo(100)).await;
    assert_eq!(b.reply::<u64>(id).await, 101, "ask on a new stream");
    // Another peer is served, under its own name.
    node_c_is_served(&c, 7).await;
    assert!(!a.is_stopped());
    b.assert_open();
    assert!(logged(&[
        "node=node-a",
        "peer=node-b",
        "dropping a frame that does not decode"
    ]));
    assert!(logged(&[
        "node=node-a",
        "peer=node-b",
        "claimed=node-c",
        "sender is not the authenticated peer"
    ]));
}

#[actix_rt::test]
async fn undeliverable_asks_get_error_replies_not_timeouts() {
    let Cluster { a, c, a_addr, ca } = cluster().await;
    let mut b = RawPeer::connect(&ca, a_addr).await;
    let id = b.ask("node-a/probe", &Echo(0)).await;
    assert_eq!(b.reply::<u64>(id).await, 1);
    let before = a.stats();

    // From the raw node-b: an unknown actor, an actor on another node, an
    // unknown message type, and a payload that is not the message type.
    let unknown_actor = b.ask("node-a/nobody", &Echo(1)).await;
    let other_node = b.ask("node-z/probe", &Echo(1)).await;
    let unknown_type = b.ask("node-a/probe", &Unregistered).await;
    let bad_payload = {
        let payload = codec::encode_payload(&"not a u64").expect("payload");
        let me = b.me.clone();
        b.ask_raw::<Echo>(&me, "node-a/probe", &payload).await
    };
    // And a tell to an unknown actor: counted, nothing to answer.
    let me = b.me.clone();
    b.tell_as(&me, "node-a/nobody", &Tally(3)).await;

    assert_eq!(
        b.error_reply(unknown_actor).await,
        RemoteError::UnknownActor("nobody".into())
    );
    assert_eq!(
        b.error_reply(other_node).await,
        RemoteError::UnknownActor("node-z/probe".into())
    );
    assert_eq!(
        b.error_reply(unknown_type).await,
        RemoteError::UnknownMessage(Unregistered::NAME.into())
    );
    match b.error_reply(bad_payload).await {
        RemoteError::BadPayload(_) => {}
        other => panic!("expected BadPayload, got {other:?}"),
    }
    // The same stream is still served, and counted everything before it.
    let id = b.ask("node-a/probe", &Echo(9)).await;
    assert_eq!(b.reply::<u64>(id).await, 10);
    let d = delta(before, a.stats());
    assert_eq!(d.undeliverable, 5, "four asks and a tell: {d:?}");
    assert_eq!((d.bad_frames, d.spoofed_frames), (0, 0), "{d:?}");
    b.assert_open();

    // From node-c, through the framework's own ask: the error comes back as
    // the right `AskError` (a lost error reply would be `AskError::Timeout`).
    let long = Duration::from_secs(30);
    let nobody = c.lookup::<Echo>("node-a/nobody").expect("path");
    match nobody.ask(Echo(1)).timeout(long).await {
        Err(AskError::Remote(RemoteError::UnknownActor(actor))) => assert_eq!(actor, "nobody"),
        other => panic!("unknown actor: expected AskError::Remote(UnknownActor), got {other:?}"),
    }
    let unregistered = c.lookup::<Unregistered>("node-a/probe").expect("path");
    match unregistered.ask(Unregistered).timeout(long).await {
        Err(AskError::Remote(RemoteError::UnknownMessage(tag))) => {
            assert_eq!(tag, Unregistered::NAME)
        }
        other => panic!("unknown type: expected AskError::Remote(UnknownMessage), got {other:?}"),
    }
    node_c_is_served(&c, 11).await;
    let d = delta(before, a.stats());
    assert_eq!(d.undeliverable, 7, "plus node-c's two asks: {d:?}");
    b.assert_open();
}

/// An ask whose envelope claims another sender is not executed, and is
/// answered at once with `RemoteError::Refused`, to the authenticated peer
/// (README: bad input is "answered with an error where it was an ask"), so
/// the asker does not wait for its deadline.
#[actix_rt::test]
async fn spoofed_ask_gets_an_error_reply() {
    let Cluster { a, c, a_addr, ca } = cluster().await;
    let mut b = RawPeer::connect(&ca, a_addr).await;
    let before = a.stats();
    let payload = codec::encode_payload(&Echo(1)).expect("payload");
    let spoofed = b
        .ask_raw::<Echo>(&c.id().clone(), "node-a/probe", &payload)
        .await;
    // A valid ask behind it: once answered, the spoofed one has been handled.
    let id = b.ask("node-a/probe", &Echo(2)).await;
    assert_eq!(b.reply::<u64>(id).await, 3);
    assert_eq!(delta(before, a.stats()).spoofed_frames, 1);
    let answer = b.answer_within(spoofed, Duration::from_secs(2)).await;
    match answer.map(|env| env.kind) {
        Some(Kind::ErrorReply {
            error: RemoteError::Refused(why),
            ..
        }) => assert!(why.contains("authenticated as \"node-b\""), "{why}"),
        other => panic!("spoofed ask: expected a Refused error reply, got {other:?}"),
    }
}
