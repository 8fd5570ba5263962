//! The framework's own cost per remote ask, without a network.
//!
//! Two Troupe nodes on one thread (one actix system) are joined by an
//! in-memory transport that puts each frame straight into the other node's
//! inbound channel. One ask at a time goes from node `a` to an actor on
//! node `b` and back: everything an ask costs *except* the network (encode,
//! the table of outstanding asks, the dispatcher, deduplication, the actor's
//! mailbox, the reply) on a warm cache. The baseline, in the same run, is a
//! plain actix `send` to a local actor with the same handler. It prints CPU
//! per ask (both nodes: they share the thread), the ratio, and the heap
//! allocations per ask of each (the in-memory transport adds one per frame,
//! for the sender's name, that QUIC does not).
//!
//! `cargo bench -p troupe-transports --bench ask_path`; `ASK_PATH_N` asks per
//! round (default 200000), `ASK_PATH_ROUNDS` (default 5).

mod support;

/// mimalloc, counting allocations (one relaxed atomic add each, on both
/// sides of the comparison), so the bench can print allocations per ask.
struct Counting;

static ALLOCATIONS: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);

// SAFETY: every call is forwarded unchanged to mimalloc, a correct allocator;
// the counter has no effect on the memory handed out.
unsafe impl std::alloc::GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: std::alloc::Layout) -> *mut u8 {
        ALLOCATIONS.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        // SAFETY: forwarded with the caller's guarantees.
        unsafe { mimalloc::MiMalloc.alloc(layout) }
    }
    unsafe fn dealloc(&self, ptr: *mut u8, layout: std::alloc::Layout) {
        // SAFETY: forwarded with the caller's guarantees.
        unsafe { mimalloc::MiMalloc.dealloc(ptr, layout) }
    }
    unsafe fn alloc_zeroed(&self, layout: std::alloc::Layout) -> *mut u8 {
        ALLOCATIONS.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        // SAFETY: forwarded with the caller's guarantees.
        unsafe { mimalloc::MiMalloc.alloc_zeroed(layout) }
    }
    unsafe fn realloc(&self, ptr: *mut u8, layout: std::alloc::Layout, new: usize) -> *mut u8 {
        ALLOCATIONS.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        // SAFETY: forwarded with the caller's guarantees.
        unsafe { mimalloc::MiMalloc.realloc(ptr, layout, new) }
    }
}

#[global_allocator]
static GLOBAL: Counting = Counting;

fn allocations() -> u64 {
    ALLOCATIONS.load(std::sync::atomic::Ordering::Relaxed)
}

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use actix::prelude::*;
use bytes::Bytes;
use serde::{Deserialize, Serialize};
use support::cpu_ns;
use troupe_framework::transport::{InboundSender, Transport, TransportError, TransportEvent};
use troupe_framework::{ActorSpec, Node, NodeConfig};

/// The request: ~100 bytes of msgpack, answered with its own bytes.
#[derive(Debug, Clone, Serialize, Deserialize)]
struct Echo(#[serde(with = "serde_bytes")] Vec<u8>);
troupe_framework::remote_message!(Echo, "bench.echo", serde_bytes::ByteBuf);

struct Echoer;

impl Actor for Echoer {
    type Context = Context<Self>;
}

impl Handler<Echo> for Echoer {
    type Result = MessageResult<Echo>;
    fn handle(&mut self, m: Echo, _: &mut Context<Self>) -> MessageResult<Echo> {
        MessageResult(serde_bytes::ByteBuf::from(m.0))
    }
}

/// Frames go straight into the peer node's inbound channel.
struct InMemory {
    name: String,
    peers: Mutex<HashMap<String, InboundSender>>,
}

impl Transport for InMemory {
    fn local_name(&self) -> &str {
        &self.name
    }
    fn send(&self, to: &str, frame: Bytes) -> Result<(), TransportError> {
        let peers = self.peers.lock().map_err(|_| TransportError::Closed)?;
        let tx = peers
            .get(to)
            .ok_or_else(|| TransportError::UnknownPeer(to.into()))?;
        tx.try_send(TransportEvent::Frame {
            from: self.name.clone(),
            bytes: frame,
        })
        .map_err(|_| TransportError::QueueFull {
            peer: to.into(),
            capacity: 1024,
        })
    }
    fn shutdown(&self) {}
}

fn env_or(key: &str, default: usize) -> usize {
    std::env::var(key)
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(default)
}

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(f64::total_cmp);
    v[v.len() / 2]
}

fn main() {
    let n = env_or("ASK_PATH_N", 200_000).max(1);
    let rounds = env_or("ASK_PATH_ROUNDS", 5).max(1);
    let system = actix_rt::System::new();
    system.block_on(async move {
        let (a_tx, a_rx) = tokio::sync::mpsc::channel(1024);
        let (b_tx, b_rx) = tokio::sync::mpsc::channel(1024);
        let transport = |name: &str, peer: &str, tx: InboundSender| {
            let peers = HashMap::from([(peer.to_string(), tx)]);
            Arc::new(InMemory {
                name: name.into(),
                peers: Mutex::new(peers),
            })
        };
        let a = Node::builder(NodeConfig::named("a"))
            .start(transport("a", "b", b_tx), a_rx)
            .expect("node a");
        let b = Node::builder(NodeConfig::named("b"))
            .start(transport("b", "a", a_tx), b_rx)
            .expect("node b");
        b.spawn(ActorSpec::new("echo", || Echoer).handles::<Echo>())
            .await
            .expect("spawn");
        let remote = a.lookup::<Echo>("b/echo").expect("path");
        let local = Echoer.start();
        println!("Framework ask without a network: two nodes on one thread, an in-memory transport, one ask in flight, {n} per round");
        let (mut fw, mut plain) = (Vec::new(), Vec::new());
        for round in 0..rounds {
            let (c0, a0) = (cpu_ns(), allocations());
            for _ in 0..n {
                let reply = remote.ask(Echo(vec![0x2a; 88])).await.expect("ask");
                std::hint::black_box(reply);
            }
            let (c1, a1) = (cpu_ns(), allocations());
            for _ in 0..n {
                let reply = local.send(Echo(vec![0x2a; 88])).await.expect("send");
                std::hint::black_box(reply);
            }
            let (c2, a2) = (cpu_ns(), allocations());
            let (f, p) = ((c1 - c0) as f64 / n as f64, (c2 - c1) as f64 / n as f64);
            let (fa, pa) = ((a1 - a0) as f64 / n as f64, (a2 - a1) as f64 / n as f64);
            println!("    round {round}: framework ask {f:6.0} CPU-ns, {fa:4.1} allocations   plain actix send {p:5.0} CPU-ns, {pa:3.1} allocations   ratio {:.1}", f / p);
            fw.push(f);
            plain.push(p);
        }
        let (f, p) = (median(fw), median(plain));
        println!("median: framework ask {f:.0} CPU-ns per round trip (both nodes), plain actix send {p:.0}, ratio {:.1}", f / p);
        System::current().stop();
    });
}
