//! End-to-end benchmark of the framework over QUIC, against raw quinn in the same
//! run, over loopback with mutual TLS.
//!
//! Two Troupe `Node`s (each on its own actix `Arbiter`, with its `QuicTransport`
//! bound on the same arbiter) talk through `RemoteRef`s to a named actor `sink`:
//!
//! 1. one-way remote `tell` throughput, many in flight (on `QueueFull` the
//!    sender waits for room with `tell_wait`); only messages the sink actually handled count,
//!    checked at the end with an ask;
//! 2. remote `ask` round trip, one in flight, p50/p99;
//! 3. pipelined `ask` throughput, `W` outstanding (`FuturesUnordered`), in
//!    rounds where raw quinn and the framework take turns at going first;
//!    asks that fail are reported and not counted in the rate;
//! 4. connect + authenticate a new peer: a fresh node's first ask until its reply.
//!
//! Each is compared with raw quinn in the same run (same TLS, same flow-control
//! windows, `u32` big-endian length-prefixed frames of the *same length as the
//! framework's encoded envelope* on one long-lived stream). For 1 and 2 the
//! bare `QuicTransport` (no framework) is measured too, with the same frames, so
//! the framework's own share is visible. Framework and baseline rounds alternate
//! so machine load hits both; medians are reported. Sections 1 and 2 go further:
//! within each round the framework's, the transport's and raw quinn's work is
//! interleaved in blocks (100,000 tells, or 20 round trips), over long-lived
//! connections, in a rotating order, because this VM's speed changes within a
//! round by more than the framework adds.
//!
//! Run with `cargo bench -p troupe-transports --bench remote_node`. Knobs (env):
//! `REMOTE_BENCH_N` tells per round (default 500000) in blocks of
//! `REMOTE_BENCH_BLOCK` (default 100000), `REMOTE_BENCH_ROUNDS`
//! (default 5), `REMOTE_BENCH_ASKS` pipelined asks per round (default 100000),
//! `REMOTE_BENCH_WINDOW` asks in flight (default 1024), `REMOTE_BENCH_RTT`
//! round-trip samples per round (default 2000), `REMOTE_BENCH_ONLY=tell` or
//! `REMOTE_BENCH_ONLY=ask` (only the framework tell, or pipelined-ask, rounds,
//! for profiling), `REMOTE_BENCH_ONLY=tell-vs-raw` or `ask-vs-raw` (only
//! section 1, or only section 2, each with its baselines), `REMOTE_BENCH_ONLY=rtt`
//! or `raw-rtt` (only the framework's, or raw quinn's, one-in-flight round
//! trips, e.g. to count system calls), `REMOTE_BENCH_ONLY=metrics` (tell
//! throughput with the per-message metrics on, nodes a -> b, against a
//! second pair c -> d with `message_metrics = false`, interleaved in blocks:
//! the cost of the metrics on the hot path), `REMOTE_BENCH_ONLY=timers` (plain actix, no framework: the
//! cost of spawning and cancelling two `run_later` timers per request on one
//! context, as the RPC stub does per ask, for W = 16..4096 outstanding),
//! `REMOTE_BENCH_ONLY=trace` (framework tells with `[trace] file` on vs off:
//! two more node pairs record every frame to trace files under the system
//! temp folder, default rotation, one as JSON lines and one in the binary
//! format (`REMOTE_BENCH_TRACE=binary` or `jsonl`: that one only); per
//! round the off pair and the traced pairs run in turn, the order rotating;
//! the medians and the median per-round ratios are printed).

mod support;

/// Both sides of every comparison run on mimalloc, as Troupe's own binaries
/// do (glibc malloc's slow path, taken when bursts of small allocations
/// overflow its per-thread cache, cost a quarter of the receiving thread's
/// time); `--features bench-system-alloc`
/// measures on the system allocator instead.
#[cfg(not(feature = "bench-system-alloc"))]
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

use std::future::IntoFuture;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use actix::prelude::*;
use actix_rt::Arbiter;
use bytes::{BufMut, BytesMut};
use futures::stream::{FuturesUnordered, StreamExt};
use serde::{Deserialize, Serialize};
use support::quic_support::{config, reserve_addr};
use support::{
    cpu_ns, next_raw_frame, on, percentile, raw_client_on, raw_rtt, raw_server, transport_pair,
    transport_throughput, HeldAddr, RawOneWay,
};
use troupe_framework::codec::{self, Envelope, Kind};
use troupe_framework::trace::{FileTraceSink, Rotation, TraceFormat, TraceSink};
use troupe_framework::transport::TransportError;
use troupe_framework::{ActorPath, ActorSpec, Node, NodeConfig, NodeId, TellError};
use troupe_transports::certs::ClusterCa;
use troupe_transports::quic::{QuicConfig, QuicTransport};

/// User payload filler: bytes below 0x80 so a plain `Vec<u8>` reply encodes
/// one byte per element in msgpack.
const FILL: u8 = 0x2a;
/// Filler length: with the sequence number the encoded message is ~100 bytes.
const DATA: usize = 88;

/// A one-way message (~100 bytes of msgpack).
#[derive(Debug, Clone, Serialize, Deserialize)]
struct Blob {
    seq: u64,
    #[serde(with = "serde_bytes")]
    data: Vec<u8>,
}
troupe_framework::remote_message!(Blob, "bench.blob", ());

/// A request answered with its own bytes (as msgpack `bin`, like `Blob`).
#[derive(Debug, Clone, Serialize, Deserialize)]
struct Echo(#[serde(with = "serde_bytes")] Vec<u8>);
troupe_framework::remote_message!(Echo, "bench.echo", serde_bytes::ByteBuf);

/// How many `Blob`s the sink has handled.
#[derive(Debug, Clone, Serialize, Deserialize)]
struct Count;
troupe_framework::remote_message!(Count, "bench.count", u64);

/// Shared with the benchmark driver: when the sink reached `target`.
#[derive(Default)]
struct Progress {
    target: AtomicU64,
    reached: Mutex<Option<Instant>>,
}

struct Sink {
    handled: u64,
    progress: Arc<Progress>,
}

impl Actor for Sink {
    type Context = Context<Self>;
}

impl Handler<Blob> for Sink {
    type Result = ();
    fn handle(&mut self, m: Blob, _: &mut Context<Self>) {
        std::hint::black_box(&m);
        self.handled += 1;
        if self.handled == self.progress.target.load(Ordering::Relaxed) {
            if let Ok(mut r) = self.progress.reached.lock() {
                *r = Some(Instant::now());
            }
        }
    }
}

impl Handler<Echo> for Sink {
    type Result = MessageResult<Echo>;
    fn handle(&mut self, m: Echo, _: &mut Context<Self>) -> MessageResult<Echo> {
        MessageResult(serde_bytes::ByteBuf::from(m.0))
    }
}

impl Handler<Count> for Sink {
    type Result = u64;
    fn handle(&mut self, _: Count, _: &mut Context<Self>) -> u64 {
        self.handled
    }
}

fn sink(progress: &Arc<Progress>) -> ActorSpec<Sink> {
    let p = progress.clone();
    ActorSpec::new("sink", move || Sink {
        handled: 0,
        progress: p.clone(),
    })
    .handles::<Blob>()
    .handles::<Echo>()
    .handles::<Count>()
}

/// Binds a QUIC transport and starts a node on it, both on `arbiter`.
async fn start_node(arbiter: &Arbiter, cfg: QuicConfig, incarnation: u128) -> Node {
    start_node_with(arbiter, cfg, incarnation, true, None).await
}

/// [`start_node`] with the per-message metrics on or off
/// (`[runtime] message_metrics`), recording a trace to `trace` when given.
async fn start_node_with(
    arbiter: &Arbiter,
    cfg: QuicConfig,
    incarnation: u128,
    message_metrics: bool,
    trace: Option<Arc<FileTraceSink>>,
) -> Node {
    on(arbiter, async move {
        let name = cfg.node_name.clone();
        let (tx, rx) = tokio::sync::mpsc::channel(NodeConfig::named("x").runtime.inbound_queue);
        let t = QuicTransport::bind(cfg, tx).await.expect("bind");
        let mut config = NodeConfig::named(name);
        config.runtime.message_metrics = message_metrics;
        let mut b = Node::builder(config).incarnation(incarnation);
        if let Some(sink) = trace {
            b = b.trace(sink);
        }
        b.start(Arc::new(t), rx).expect("node")
    })
    .await
}

/// The length of the framework frame carrying one `Blob` tell.
fn framework_frame_len() -> usize {
    let env = Envelope {
        from: NodeId::with_incarnation("a", 1),
        from_actor: None,
        to: ActorPath {
            node: "b".into(),
            actor: "sink".into(),
        },
        kind: Kind::Tell,
        type_tag: "bench.blob".into(),
        payload: codec::encode_payload(&Blob {
            seq: u64::MAX / 3,
            data: vec![FILL; DATA],
        })
        .expect("encode"),
        stamp: None,
    };
    codec::encode(&env, 1 << 20).expect("encode").len()
}

/// CPU cost (ns per message, one thread) of the framework codec alone for one
/// `Blob` tell: (payload + envelope encode, envelope + payload decode).
fn codec_cost(iters: u64) -> (f64, f64) {
    let from = NodeId::with_incarnation("a", 1);
    let to = ActorPath {
        node: "b".into(),
        actor: "sink".into(),
    };
    let data = vec![FILL; DATA];
    let t0 = Instant::now();
    let mut frames = Vec::with_capacity(1024);
    for seq in 0..iters {
        let env = Envelope {
            from: from.clone(),
            from_actor: None,
            to: to.clone(),
            kind: Kind::Tell,
            type_tag: "bench.blob".to_string(),
            payload: codec::encode_payload(&Blob {
                seq,
                data: data.clone(),
            })
            .expect("encode"),
            stamp: None,
        };
        let f = codec::encode(&env, 1 << 20).expect("encode");
        if frames.len() < 1024 {
            frames.push(f);
        } else {
            std::hint::black_box(f);
        }
    }
    let enc = t0.elapsed().as_nanos() as f64 / iters as f64;
    let t0 = Instant::now();
    for i in 0..iters {
        let env = codec::decode(&frames[i as usize % frames.len()], 1 << 20).expect("decode");
        let m: Blob = codec::decode_payload(&env.payload).expect("decode");
        std::hint::black_box(m);
    }
    let dec = t0.elapsed().as_nanos() as f64 / iters as f64;
    (enc, dec)
}

async fn count_at(a: &Node, xa: &Arbiter, path: &str) -> u64 {
    let r = a.lookup::<Count>(path).expect("path");
    on(xa, async move { r.ask(Count).await.expect("count") }).await
}

/// Framework tell throughput: (msg/s, CPU-ns per message, QueueFull waits).
async fn framework_tell(a: &Node, xa: &Arbiter, progress: &Progress, n: u64) -> (f64, f64, u64) {
    framework_tell_to(a, xa, progress, n, "b/sink").await
}

/// [`framework_tell`] to the sink at `path`.
async fn framework_tell_to(
    a: &Node,
    xa: &Arbiter,
    progress: &Progress,
    n: u64,
    path: &str,
) -> (f64, f64, u64) {
    let before = count_at(a, xa, path).await;
    progress.target.store(before + n, Ordering::Relaxed);
    *progress.reached.lock().expect("lock") = None;
    let r = a.lookup::<Blob>(path).expect("path");
    let started = Instant::now();
    let cpu0 = cpu_ns();
    let full = on(xa, async move {
        let data = vec![FILL; DATA];
        let mut full = 0u64;
        for seq in 0..n {
            match r.tell(Blob {
                seq,
                data: data.clone(),
            }) {
                Ok(()) => {}
                Err(TellError::Transport(TransportError::QueueFull { .. })) => {
                    // The queue to `b` is full: wait for room (back-pressure).
                    full += 1;
                    r.tell_wait(Blob {
                        seq,
                        data: data.clone(),
                    })
                    .await
                    .expect("tell_wait");
                }
                Err(e) => panic!("tell failed: {e}"),
            }
        }
        full
    })
    .await;
    let deadline = Instant::now() + Duration::from_secs(120);
    let end = loop {
        if let Some(t) = *progress.reached.lock().expect("lock") {
            break t;
        }
        assert!(
            Instant::now() < deadline,
            "the sink never handled {n} tells"
        );
        tokio::time::sleep(Duration::from_micros(200)).await;
    };
    let cpu = cpu_ns() - cpu0;
    let after = count_at(a, xa, path).await;
    assert_eq!(
        after - before,
        n,
        "sink handled a different number of tells"
    );
    (
        n as f64 / (end - started).as_secs_f64(),
        cpu as f64 / n as f64,
        full,
    )
}

async fn framework_rtt(a: &Node, xa: &Arbiter, iters: usize) -> Vec<Duration> {
    let r = a.lookup::<Echo>("b/sink").expect("path");
    on(xa, async move {
        let mut samples = Vec::with_capacity(iters);
        for i in 0..iters + 200 {
            let t0 = Instant::now();
            let reply = r.ask(Echo(vec![FILL; DATA])).await.expect("ask");
            if i >= 200 {
                samples.push(t0.elapsed());
            }
            std::hint::black_box(reply);
        }
        samples
    })
    .await
}

/// One round of section 2: framework asks, transport-alone echoes and raw
/// quinn echoes, one in flight, interleaved in blocks of [`RTT_BLOCK`] round
/// trips (the order rotating every block), so that all three see the same
/// machine: on this VM the cost of a wake-up changes from one millisecond to
/// the next, far more than the framework's own share does. Returns the
/// samples of each, and the process CPU (both ends) per round trip of each.
async fn interleaved_rtt(
    a: &Node,
    xa: &Arbiter,
    xb: &Arbiter,
    ca: &ClusterCa,
    pair: &mut support::Pair,
    iters: usize,
    frame: usize,
) -> [(Vec<Duration>, f64); 3] {
    let r = a.lookup::<Echo>("b/sink").expect("path");
    let mut raw = support::RawEcho::connect(xa, xb, ca, frame).await;
    let mut transport = support::TransportEcho::start(pair, xb, frame);
    on(xa, async move {
        let mut out: [(Vec<Duration>, u64, usize); 3] = Default::default();
        let warm_blocks = 200 / RTT_BLOCK;
        let mut i = 0u64;
        for block in 0..iters.div_ceil(RTT_BLOCK) + warm_blocks {
            let warm = block < warm_blocks;
            for k in 0..3 {
                let which = (block + k) % 3;
                let c0 = cpu_ns();
                for _ in 0..RTT_BLOCK {
                    let t = match which {
                        0 => {
                            let t0 = Instant::now();
                            let reply = r.ask(Echo(vec![FILL; DATA])).await.expect("ask");
                            std::hint::black_box(reply);
                            t0.elapsed()
                        }
                        1 => transport.round_trip(i).await,
                        _ => raw.round_trip(i).await,
                    };
                    i += 1;
                    if !warm {
                        out[which].0.push(t);
                    }
                }
                if !warm {
                    out[which].1 += cpu_ns() - c0;
                    out[which].2 += RTT_BLOCK;
                }
            }
        }
        out.map(|(samples, cpu, n)| (samples, cpu as f64 / n as f64 / 1000.0))
    })
    .await
}

/// Round trips per block of the interleaved comparison (section 2).
const RTT_BLOCK: usize = 20;

/// What one run of pipelined asks did.
struct Pipelined {
    /// Answered asks per second: asks that ended in an error are not
    /// counted (an error can come back faster than a reply).
    rate: f64,
    /// Process CPU (both ends) per answered ask, in ns (infinite if none
    /// was answered).
    cpu_ns: f64,
    /// Asks that ended in an error instead of a reply.
    failed: u64,
}

/// Pipelined asks to the actor at `path`, `window` outstanding.
async fn framework_pipelined(
    a: &Node,
    xa: &Arbiter,
    path: &str,
    total: u64,
    window: usize,
) -> Pipelined {
    let r = a.lookup::<Echo>(path).expect("path");
    let cpu0 = cpu_ns();
    let (elapsed, failed) = on(xa, async move {
        let started = Instant::now();
        let mut pending = FuturesUnordered::new();
        let (mut sent, mut done, mut failed) = (0u64, 0u64, 0u64);
        while done < total {
            while sent < total && pending.len() < window {
                pending.push(r.ask(Echo(vec![FILL; DATA])).into_future());
                sent += 1;
            }
            if let Some(res) = pending.next().await {
                done += 1;
                if res.is_err() {
                    failed += 1;
                }
            }
        }
        (started.elapsed(), failed)
    })
    .await;
    let cpu = cpu_ns() - cpu0;
    let answered = total - failed;
    Pipelined {
        rate: answered as f64 / elapsed.as_secs_f64(),
        cpu_ns: if answered == 0 {
            f64::INFINITY
        } else {
            cpu as f64 / answered as f64
        },
        failed,
    }
}

/// The bench's own check of its pipelined-ask accounting (it exits non-zero
/// when it fails): asks to an actor `b` does not have all fail, and they
/// are reported as failed, not as a rate.
async fn check_failed_asks_are_not_counted(a: &Node, xa: &Arbiter, window: usize) {
    let total = 256;
    let p = framework_pipelined(a, xa, "b/nobody", total, window).await;
    println!(
        "   (check: {total} pipelined asks to a missing actor: {} failed, {:.0} answered/s; b counts them undeliverable)",
        p.failed, p.rate
    );
    assert_eq!(p.failed, total, "asks to a missing actor were answered");
    assert_eq!(p.rate, 0.0, "failed asks counted toward the ask rate");
}

/// Whether raw quinn runs first in round `round` of section 3: the two
/// take turns, as the interleaved sections rotate theirs.
fn raw_first_in_round(round: usize) -> bool {
    round.is_multiple_of(2)
}

/// Raw quinn request/response with `window` requests outstanding on one bidi
/// stream; the server echoes what it reads. Returns (requests/s, CPU-ns each).
async fn raw_pipelined(
    xa: &Arbiter,
    xb: &Arbiter,
    ca: &ClusterCa,
    total: u64,
    window: usize,
    frame: usize,
) -> (f64, f64) {
    let (server, addr) = raw_server(xb, ca).await;
    xb.spawn(async move {
        let incoming = server.accept().await.expect("incoming");
        let conn = incoming.await.expect("accept");
        let (mut send, mut recv) = conn.accept_bi().await.expect("bi");
        while let Ok(Some(chunk)) = recv.read_chunk(256 * 1024, true).await {
            if send.write_all(&chunk.bytes).await.is_err() {
                break;
            }
        }
        drop(server);
    });
    let ep = raw_client_on(xa, ca).await;
    let cpu0 = cpu_ns();
    let elapsed = on(xa, async move {
        let conn = ep
            .connect(addr, "raw-server")
            .expect("connect")
            .await
            .expect("handshake");
        let (mut send, mut recv) = conn.open_bi().await.expect("bi");
        let credit = Arc::new(tokio::sync::Semaphore::new(window));
        let started = Instant::now();
        let c2 = credit.clone();
        let reader = actix_rt::spawn(async move {
            let mut buf = BytesMut::new();
            let mut got = 0u64;
            while got < total {
                match recv.read_chunk(256 * 1024, true).await {
                    Ok(Some(chunk)) => {
                        buf.extend_from_slice(&chunk.bytes);
                        while let Some(frame) = next_raw_frame(&mut buf) {
                            std::hint::black_box(frame);
                            got += 1;
                            c2.add_permits(1);
                        }
                    }
                    _ => break,
                }
            }
            got
        });
        let mut out = BytesMut::new();
        let mut i = 0u64;
        while i < total {
            credit.acquire().await.expect("sem").forget();
            let mut k = 1u64;
            while i + k < total {
                match credit.try_acquire() {
                    Ok(p) => {
                        p.forget();
                        k += 1;
                    }
                    Err(_) => break,
                }
            }
            for j in 0..k {
                let f = support::payload(i + j, frame);
                out.put_u32(f.len() as u32);
                out.extend_from_slice(&f);
            }
            i += k;
            send.write_all(&out).await.expect("write");
            out.clear();
        }
        let got = reader.await.expect("reader");
        assert_eq!(got, total);
        let e = started.elapsed();
        conn.close(0u32.into(), b"");
        e
    })
    .await;
    let cpu = cpu_ns() - cpu0;
    (
        total as f64 / elapsed.as_secs_f64(),
        cpu as f64 / total as f64,
    )
}

/// Connect + authenticate through the framework: `k` fresh nodes each ask the
/// hub's sink once; time from the ask to its reply (handshake, hello, ask).
async fn framework_connect(
    xa: &Arbiter,
    hub_addr: SocketAddr,
    ca: &ClusterCa,
    names: Vec<(String, HeldAddr)>,
    first: usize,
) -> Vec<Duration> {
    let mut out = Vec::new();
    for (i, (name, held)) in names.into_iter().enumerate() {
        let cfg = config(
            &name,
            held.release(),
            ca.issue(&name).expect("cert"),
            &[("hub", hub_addr)],
        );
        let node = start_node(xa, cfg, 1000 + (first + i) as u128).await;
        let r = node.lookup::<Count>("hub/sink").expect("path");
        let t = on(xa, async move {
            let t0 = Instant::now();
            r.ask(Count).await.expect("first ask");
            t0.elapsed()
        })
        .await;
        out.push(t);
        node.shutdown();
    }
    out
}

/// Raw quinn: (mTLS handshake, handshake + one echo round trip on a new stream).
async fn raw_connect_times(
    xa: &Arbiter,
    xb: &Arbiter,
    ca: &ClusterCa,
    k: usize,
    frame: usize,
) -> (Vec<Duration>, Vec<Duration>) {
    let (server, addr) = raw_server(xb, ca).await;
    xb.spawn(async move {
        while let Some(incoming) = server.accept().await {
            actix_rt::spawn(async move {
                if let Ok(conn) = incoming.await {
                    while let Ok((mut send, mut recv)) = conn.accept_bi().await {
                        let mut len = [0u8; 4];
                        if recv.read_exact(&mut len).await.is_err() {
                            break;
                        }
                        let mut body = vec![0u8; u32::from_be_bytes(len) as usize];
                        if recv.read_exact(&mut body).await.is_err() {
                            break;
                        }
                        let _ = send.write_all(&len).await;
                        let _ = send.write_all(&body).await;
                    }
                }
            });
        }
    });
    let ep = raw_client_on(xa, ca).await;
    on(xa, async move {
        let (mut hs, mut full) = (Vec::new(), Vec::new());
        for i in 0..k {
            let t0 = Instant::now();
            let conn = ep
                .connect(addr, "raw-server")
                .expect("connect")
                .await
                .expect("hs");
            hs.push(t0.elapsed());
            let (mut send, mut recv) = conn.open_bi().await.expect("bi");
            let f = support::payload(i as u64, frame);
            let mut out = (f.len() as u32).to_be_bytes().to_vec();
            out.extend_from_slice(&f);
            send.write_all(&out).await.expect("write");
            let mut len = [0u8; 4];
            recv.read_exact(&mut len).await.expect("read");
            let mut body = vec![0u8; u32::from_be_bytes(len) as usize];
            recv.read_exact(&mut body).await.expect("read");
            full.push(t0.elapsed());
            conn.close(0u32.into(), b"");
        }
        (hs, full)
    })
    .await
}

/// An actor that keeps `window` actix timers (`run_later`) outstanding, adding
/// two per request and cancelling the oldest two, as the RPC stub does per ask.
struct Timers {
    handles: std::collections::VecDeque<SpawnHandle>,
    window: usize,
}

impl Actor for Timers {
    type Context = Context<Self>;
}

struct Tick;
impl Message for Tick {
    type Result = ();
}

impl Handler<Tick> for Timers {
    type Result = ();
    fn handle(&mut self, _: Tick, ctx: &mut Context<Self>) {
        for _ in 0..2 {
            self.handles
                .push_back(ctx.run_later(Duration::from_secs(600), |_, _| {}));
        }
        while self.handles.len() > 2 * self.window {
            if let Some(h) = self.handles.pop_front() {
                ctx.cancel_future(h);
            }
        }
    }
}

/// Plain actix, no framework: ns per "ask-like" timer pair (spawn two
/// `run_later`s, cancel two) with `window` pairs outstanding.
async fn actix_timer_cost(window: usize, ticks: u64) -> f64 {
    let addr = Timers {
        handles: Default::default(),
        window,
    }
    .start();
    for _ in 0..2 * window {
        addr.do_send(Tick);
    }
    addr.send(Tick).await.expect("warm");
    let t0 = Instant::now();
    for _ in 0..ticks {
        addr.do_send(Tick);
    }
    addr.send(Tick).await.expect("timers");
    t0.elapsed().as_nanos() as f64 / ticks as f64
}

/// Framework and raw-quinn results of the same rounds: rates, CPU-ns per
/// operation, and each round's rate ratio.
#[derive(Default)]
struct Paired {
    fw: Vec<f64>,
    fw_cpu: Vec<f64>,
    raw: Vec<f64>,
    raw_cpu: Vec<f64>,
    ratio: Vec<f64>,
}

impl Paired {
    fn push(&mut self, fw: f64, fw_cpu: f64, raw: f64, raw_cpu: f64) {
        self.fw.push(fw);
        self.fw_cpu.push(fw_cpu);
        self.raw.push(raw);
        self.raw_cpu.push(raw_cpu);
        self.ratio.push(fw / raw);
    }

    /// Medians: framework rate, raw rate, per-round ratio, framework CPU,
    /// raw CPU.
    fn medians(&self) -> (f64, f64, f64, f64, f64) {
        (
            median(&self.fw),
            median(&self.raw),
            median(&self.ratio),
            median(&self.fw_cpu),
            median(&self.raw_cpu),
        )
    }
}

/// Remote tell throughput with the per-message metrics on (nodes a -> b,
/// the default) and off (c -> d, `message_metrics = false`), same arbiters,
/// same frame length, interleaved in blocks whose order alternates, and
/// the ratio on/off (the cost of the metrics on the hot path) per round;
/// then pipelined asks (`window` in flight), on and off first in turn.
async fn metrics_on_off(
    a: &Node,
    xa: &Arbiter,
    xb: &Arbiter,
    ca: &ClusterCa,
    progress: &Arc<Progress>,
    (n, asks, window): (u64, u64, usize),
    rounds: usize,
) {
    let (c_addr, d_addr) = (reserve_addr(), reserve_addr());
    let c_cfg = config("c", c_addr, ca.issue("c").expect("c"), &[("d", d_addr)]);
    let d_cfg = config("d", d_addr, ca.issue("d").expect("d"), &[("c", c_addr)]);
    let c = start_node_with(xa, c_cfg, 5, false, None).await;
    let d = start_node_with(xb, d_cfg, 6, false, None).await;
    let off_progress = Arc::new(Progress::default());
    let spec = sink(&off_progress);
    let d2 = d.clone();
    on(
        xb,
        async move { d2.spawn(spec).await.expect("spawn sink on d") },
    )
    .await;
    assert!(a.metrics().message_metrics() && !c.metrics().message_metrics());
    framework_tell_to(&c, xa, &off_progress, 20_000, "d/sink").await;
    let block: u64 = env_or("REMOTE_BENCH_BLOCK", 100_000u64).clamp(1, n);
    let blocks = n.div_ceil(block);
    let (mut ratios, mut on_rates, mut off_rates, mut on_cpu, mut off_cpu) =
        (vec![], vec![], vec![], vec![], vec![]);
    let mut on_first = 0usize;
    for round in 0..rounds {
        // Per side (on, off): seconds, CPU-ns, messages.
        let mut acc = [(0f64, 0f64, 0u64); 2];
        for k in 0..blocks {
            let m = block.min(n - k * block);
            let first = (round + k as usize) % 2;
            on_first += usize::from(first == 0);
            for turn in 0..2 {
                let side = (first + turn) % 2;
                let (rate, cpu, _) = if side == 0 {
                    framework_tell_to(a, xa, progress, m, "b/sink").await
                } else {
                    framework_tell_to(&c, xa, &off_progress, m, "d/sink").await
                };
                acc[side].0 += m as f64 / rate;
                acc[side].1 += cpu * m as f64;
                acc[side].2 += m;
            }
        }
        let [(on_r, on_c), (off_r, off_c)] =
            acc.map(|(secs, cpu, msgs)| (msgs as f64 / secs, cpu / msgs as f64));
        println!(
            "    round {round}: metrics on {on_r:>9.0} msg/s ({on_c:>5.0} CPU-ns/msg)   metrics off {off_r:>9.0} msg/s ({off_c:>5.0} CPU-ns/msg)   on/off throughput {:.3}   CPU on/off {:.3}",
            on_r / off_r,
            on_c / off_c
        );
        ratios.push(on_r / off_r);
        on_rates.push(on_r);
        off_rates.push(off_r);
        on_cpu.push(on_c);
        off_cpu.push(off_c);
    }
    let total_blocks = rounds * blocks as usize;
    assert!(
        on_first.abs_diff(total_blocks - on_first) <= 1,
        "the blocks did not alternate: metrics on first in {on_first} of {total_blocks}"
    );
    // The counters counted what was sent (and nothing on the side where
    // they are off).
    let text = a.gather_metrics().encode_text();
    let sent = text
        .lines()
        .find(|l| {
            l.starts_with("troupe_messages_sent_total{")
                && l.contains("peer=\"b\"")
                && l.contains("type=\"bench.blob\"")
        })
        .and_then(|l| l.rsplit(' ').next())
        .and_then(|v| v.parse::<f64>().ok())
        .expect("a's counter of Blob tells to b");
    assert!(
        sent >= (rounds as u64 * n) as f64,
        "a counted {sent} Blob tells, sent at least {}",
        rounds as u64 * n
    );
    assert!(
        !c.gather_metrics()
            .encode_text()
            .contains("troupe_messages_sent_total"),
        "c counts messages with message_metrics = false"
    );
    println!(
        "metrics on the hot path, {n} tells per round and side in blocks of {block}, {rounds} rounds: \
         metrics on median {:.0} msg/s ({:.0} CPU-ns/msg), off median {:.0} msg/s ({:.0} CPU-ns/msg); \
         median per-round on/off throughput ratio {:.3}; CPU-per-message ratio on/off {:.3}",
        median(&on_rates),
        median(&on_cpu),
        median(&off_rates),
        median(&off_cpu),
        median(&ratios),
        median(&on_cpu) / median(&off_cpu)
    );

    // Pipelined asks: a clock read and a histogram observation more per
    // ask with the metrics on.
    let (mut ask_ratios, mut ask_cpu_ratios) = (vec![], vec![]);
    for round in 0..rounds {
        let on_first = round % 2 == 0;
        let run = |on: bool| {
            let (node, sink) = if on { (a, "b/sink") } else { (&c, "d/sink") };
            framework_pipelined(node, xa, sink, asks, window)
        };
        let (on, off) = if on_first {
            let on = run(true).await;
            (on, run(false).await)
        } else {
            let off = run(false).await;
            (run(true).await, off)
        };
        println!(
            "    round {round} ({} first): asks metrics on {:>8.0}/s ({:>5.0} CPU-ns/ask, {} failed)   off {:>8.0}/s ({:>5.0} CPU-ns/ask, {} failed)   on/off throughput {:.3}   CPU on/off {:.3}",
            if on_first { "on" } else { "off" },
            on.rate, on.cpu_ns, on.failed, off.rate, off.cpu_ns, off.failed,
            on.rate / off.rate,
            on.cpu_ns / off.cpu_ns
        );
        ask_ratios.push(on.rate / off.rate);
        ask_cpu_ratios.push(on.cpu_ns / off.cpu_ns);
    }
    println!(
        "metrics on the ask path, {asks} pipelined asks ({window} in flight) per round and side, {rounds} rounds: \
         median per-round on/off throughput ratio {:.3}; median CPU-per-ask ratio on/off {:.3}",
        median(&ask_ratios),
        median(&ask_cpu_ratios)
    );
    c.shutdown();
    d.shutdown();
}

fn env_or<T: std::str::FromStr>(key: &str, default: T) -> T {
    std::env::var(key)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

fn median(v: &[f64]) -> f64 {
    let mut s = v.to_vec();
    s.sort_by(|a, b| a.partial_cmp(b).expect("no NaN"));
    s[s.len() / 2]
}

fn main() {
    let n: u64 = env_or("REMOTE_BENCH_N", 500_000);
    let rounds: usize = env_or("REMOTE_BENCH_ROUNDS", 5).max(1);
    let asks: u64 = env_or("REMOTE_BENCH_ASKS", 100_000);
    let window: usize = env_or("REMOTE_BENCH_WINDOW", 1024).max(1);
    let rtt_iters: usize = env_or("REMOTE_BENCH_RTT", 2000).max(1);
    let only = std::env::var("REMOTE_BENCH_ONLY").unwrap_or_default();
    let frame = framework_frame_len();
    let (enc_ns, dec_ns) = codec_cost(300_000);
    let wall = Instant::now();
    let system = actix_rt::System::new();
    system.block_on(async move {
        let xa = Arbiter::new();
        let xb = Arbiter::new();
        let ca = ClusterCa::generate().expect("ca");
        let (a_addr, b_addr) = (reserve_addr(), reserve_addr());
        // Bound by section 4 only, at the end of the run: held until then.
        let hub_held = HeldAddr::new();
        let hub_addr = hub_held.addr();
        let a = start_node(
            &xa,
            config("a", a_addr, ca.issue("a").expect("a"), &[("b", b_addr)]),
            1,
        )
        .await;
        let b = start_node(
            &xb,
            config("b", b_addr, ca.issue("b").expect("b"), &[("a", a_addr)]),
            2,
        )
        .await;
        let progress = Arc::new(Progress::default());
        let spec = sink(&progress);
        let b2 = b.clone();
        on(&xb, async move { b2.spawn(spec).await.expect("spawn sink") }).await;
        println!(
            "Troupe remote-node benchmark over QUIC (loopback, mutual TLS): user message {} bytes msgpack, \
             framework frame {frame} bytes; raw quinn frames are {frame} bytes too",
            codec::encode_payload(&Blob { seq: u64::MAX / 3, data: vec![FILL; DATA] }).expect("enc").len()
        );
        println!(
            "0. codec alone (one thread, no I/O): tell envelope encode {enc_ns:.0} ns/msg (payload + envelope), decode {dec_ns:.0} ns/msg (envelope + payload)"
        );
        // Warm up: connect and run a short burst.
        framework_tell(&a, &xa, &progress, 20_000).await;

        if only == "timers" {
            let ticks: u64 = env_or("REMOTE_BENCH_TIMER_TICKS", 20_000);
            for w in [16usize, 256, 1024, 4096] {
                println!(
                    "    W={w}: {:.0} ns per request ({ticks} requests queued at once)",
                    actix_timer_cost(w, ticks).await
                );
            }
            return;
        }
        if only == "ask" {
            check_failed_asks_are_not_counted(&a, &xa, window).await;
            for round in 0..rounds {
                let p = framework_pipelined(&a, &xa, "b/sink", asks, window).await;
                println!(
                    "    round {round}: framework asks {:>9.0}/s ({:>5.0} CPU-ns/ask, {} failed, not counted)",
                    p.rate, p.cpu_ns, p.failed
                );
            }
            return;
        }
        if only == "rtt" || only == "raw-rtt" {
            for round in 0..rounds {
                let mut s = if only == "rtt" {
                    framework_rtt(&a, &xa, rtt_iters).await
                } else {
                    raw_rtt(&xa, &xb, &ca, rtt_iters, frame).await
                };
                s.sort();
                println!(
                    "    round {round}: {only} p50 {:?} p99 {:?}",
                    s[s.len() / 2],
                    s[s.len() * 99 / 100]
                );
            }
            return;
        }
        if only == "metrics" {
            metrics_on_off(&a, &xa, &xb, &ca, &progress, (n, asks, window), rounds).await;
            return;
        }
        if only == "trace" {
            let dir = std::env::temp_dir().join(format!("troupe-bench-trace-{}", std::process::id()));
            std::fs::create_dir_all(&dir).expect("trace dir");
            // One traced pair per format: JSON lines (at -> bt), binary (ct -> dt).
            // `REMOTE_BENCH_TRACE=binary` (or `jsonl`): that format only.
            let formats: Vec<TraceFormat> = match std::env::var("REMOTE_BENCH_TRACE").as_deref() {
                Ok("binary") => vec![TraceFormat::Binary],
                Ok("jsonl") => vec![TraceFormat::Jsonl],
                _ => vec![TraceFormat::Jsonl, TraceFormat::Binary],
            };
            let mut pairs = Vec::new();
            for (i, &format) in formats.iter().enumerate() {
                let names = [format!("t{i}a"), format!("t{i}b")];
                let sinks: Vec<Arc<FileTraceSink>> = names
                    .iter()
                    .map(|n| {
                        Arc::new(
                            FileTraceSink::open(&dir.join(format!("{n}.trace")), Rotation::default(), format)
                                .expect("trace file"),
                        )
                    })
                    .collect();
                let (x_addr, y_addr) = (reserve_addr(), reserve_addr());
                let x = start_node_with(
                    &xa,
                    config(&names[0], x_addr, ca.issue(&names[0]).expect("cert"), &[(&names[1], y_addr)]),
                    10 + 2 * i as u128, true, Some(sinks[0].clone()))
                .await;
                let y = start_node_with(
                    &xb,
                    config(&names[1], y_addr, ca.issue(&names[1]).expect("cert"), &[(&names[0], x_addr)]),
                    11 + 2 * i as u128, true, Some(sinks[1].clone()))
                .await;
                let progress_t = Arc::new(Progress::default());
                let spec = sink(&progress_t);
                let y2 = y.clone();
                on(&xb, async move { y2.spawn(spec).await.expect("spawn sink") }).await;
                let to = format!("{}/sink", names[1]);
                framework_tell_to(&x, &xa, &progress_t, 20_000, &to).await;
                pairs.push((x, progress_t, to, sinks));
            }
            // Per round: off, JSON lines, binary, in an order that turns.
            let kinds = pairs.len() + 1;
            let mut runs: Vec<Vec<f64>> = vec![Vec::new(); kinds];
            let mut ratios: Vec<Vec<f64>> = vec![Vec::new(); kinds - 1];
            for round in 0..rounds {
                let mut run = vec![(0f64, 0f64); kinds];
                for k in 0..kinds {
                    let which = (k + round) % kinds;
                    run[which] = if which == 0 {
                        let (t, tc, _) = framework_tell(&a, &xa, &progress, n).await;
                        (t, tc)
                    } else {
                        let (x, p, to, _) = &pairs[which - 1];
                        let (t, tc, _) = framework_tell_to(x, &xa, p, n, to).await;
                        (t, tc)
                    };
                }
                let mut line = format!(
                    "    round {round}: tell trace off {:>9.0} msg/s ({:>5.0} CPU-ns/msg)",
                    run[0].0, run[0].1
                );
                for (i, f) in formats.iter().enumerate() {
                    let r = run[i + 1];
                    line += &format!(
                        ", {f:?} {:>9.0} msg/s ({:>5.0} CPU-ns/msg) ratio {:.3}",
                        r.0,
                        r.1,
                        r.0 / run[0].0
                    );
                    ratios[i].push(r.0 / run[0].0);
                }
                println!("{line}");
                for (i, r) in run.iter().enumerate() {
                    runs[i].push(r.0);
                }
            }
            let mut dropped = 0;
            for (_, _, _, sinks) in &pairs {
                for s in sinks {
                    s.flush();
                    dropped += s.dropped();
                }
            }
            let size = |prefix: &str| -> u64 {
                std::fs::read_dir(&dir)
                    .map(|d| {
                        d.flatten()
                            .filter(|e| e.file_name().to_string_lossy().starts_with(prefix))
                            .filter_map(|e| e.metadata().ok())
                            .map(|m| m.len())
                            .sum()
                    })
                    .unwrap_or(0)
            };
            for (i, name) in formats.iter().enumerate() {
                println!(
                    "trace {name:?} on/off: median {:.0} vs {:.0} msg/s, ratio of medians {:.3}, median of per-round ratios {:.3} (target >= 0.90); {} MiB of trace files left (capped by rotation)",
                    median(&runs[i + 1]),
                    median(&runs[0]),
                    median(&runs[i + 1]) / median(&runs[0]),
                    median(&ratios[i]),
                    size(&format!("t{i}")) >> 20
                );
            }
            println!("trace lines dropped (writer behind): {dropped}");
            let _ = std::fs::remove_dir_all(&dir);
            return;
        }
        if only == "tell" {
            for round in 0..rounds {
                let before = b.stats().mailbox_full;
                let (t, tc, full) = framework_tell(&a, &xa, &progress, n).await;
                println!(
                    "    round {round}: framework tell {t:>9.0} msg/s ({tc:>5.0} CPU-ns/msg, {full} QueueFull waits, sink mailbox full {} times), RSS {} KiB",
                    b.stats().mailbox_full - before,
                    support::rss_kib()
                );
            }
            return;
        }

        // The transport alone (no framework), same frame length, for the breakdown.
        let mut pair = transport_pair(&ca, &xa, &xb).await;
        // 1. tell throughput vs raw quinn one-way (skipped with `ask-vs-raw`),
        // interleaved: each round sends its N messages of each kind in blocks,
        // the three kinds taking turns in a rotating order, so a change in the
        // machine's load hits all three alike.
        if only != "ask-vs-raw" {
            let block: u64 = env_or("REMOTE_BENCH_BLOCK", 100_000u64).clamp(1, n);
            let blocks = n.div_ceil(block);
            let mut raw_link = RawOneWay::connect(&xa, &xb, &ca, frame).await;
            let mut paired = Paired::default();
            let (mut tr, mut tr_cpu) = (vec![], vec![]);
            transport_throughput(&mut pair, &xa, &xb, 20_000, frame).await;
            raw_link.block(&xa, 20_000).await;
            for round in 0..rounds {
                // Per kind (framework, transport alone, raw): seconds, CPU-ns,
                // messages; and the framework's QueueFull waits.
                let mut acc = [(0f64, 0f64, 0u64); 3];
                let mut full = 0u64;
                for k in 0..blocks {
                    let m = block.min(n - k * block);
                    for turn in 0..3 {
                        let kind = (turn + round + k as usize) % 3;
                        let (rate, cpu) = match kind {
                            0 => {
                                let (t, tc, f) = framework_tell(&a, &xa, &progress, m).await;
                                full += f;
                                (t, tc)
                            }
                            1 => transport_throughput(&mut pair, &xa, &xb, m, frame).await,
                            _ => raw_link.block(&xa, m).await,
                        };
                        acc[kind].0 += m as f64 / rate;
                        acc[kind].1 += cpu * m as f64;
                        acc[kind].2 += m;
                    }
                }
                let [(t, tc), (q, qc), (r, rc)] =
                    acc.map(|(secs, cpu, msgs)| (msgs as f64 / secs, cpu / msgs as f64));
                println!(
                    "    round {round}: framework tell {t:>9.0} msg/s ({tc:>5.0} CPU-ns/msg, {full} QueueFull waits)   transport alone {q:>9.0} msg/s ({qc:>4.0} CPU-ns/msg)   raw quinn {r:>9.0} msg/s ({rc:>4.0} CPU-ns/msg)   ratio {:.2}",
                    t / r
                );
                tr.push(q);
                tr_cpu.push(qc);
                paired.push(t, tc, r, rc);
            }
            let (fw, raw, ratio, fc, rc) = paired.medians();
            println!(
                "1. tell throughput, {n} per round in blocks of {block} interleaved with the baselines, {rounds} rounds: framework median {:.0} msg/s ({fc:.0} CPU-ns/msg); raw quinn median {:.0} msg/s ({rc:.0} CPU-ns/msg); median per-round ratio {:.3}; CPU-efficiency ratio {:.3}",
                fw, raw, ratio, rc / fc
            );
            println!(
                "   (transport alone, QuicTransport::send + InboundEvents, same frames: median {:.0} msg/s, {:.0} CPU-ns/msg)",
                median(&tr), median(&tr_cpu)
            );
        }
        if only == "tell-vs-raw" {
            return;
        }

        // 2. ask round trip, one in flight, interleaved with its baselines.
        let (mut pooled, mut cpu): ([Vec<Duration>; 3], [Vec<f64>; 3]) = Default::default();
        let (mut p50r, mut p99r) = (vec![], vec![]);
        for round in 0..rounds {
            let [f, q, r] = interleaved_rtt(&a, &xa, &xb, &ca, &mut pair, rtt_iters, frame)
                .await
                .map(|(mut s, c)| {
                    s.sort();
                    (s, c)
                });
            pair = transport_pair(&ca, &xa, &xb).await;
            let p = |s: &[Duration]| (percentile(s, 0.5), percentile(s, 0.99));
            let ((f50, f99), (q50, q99), (r50, r99)) = (p(&f.0), p(&q.0), p(&r.0));
            println!(
                "    round {round}: framework ask p50 {f50:?} p99 {f99:?}   transport alone p50 {q50:?} p99 {q99:?}   raw quinn p50 {r50:?} p99 {r99:?}   p50 ratio {:.2}",
                f50.as_secs_f64() / r50.as_secs_f64()
            );
            p50r.push(f50.as_secs_f64() / r50.as_secs_f64());
            p99r.push(f99.as_secs_f64() / r99.as_secs_f64());
            for (k, (s, c)) in [f, q, r].into_iter().enumerate() {
                pooled[k].extend(s);
                cpu[k].push(c);
            }
        }
        for s in &mut pooled {
            s.sort();
        }
        let [fp, qp, rp] = &pooled;
        println!(
            "2. ask round trip, one in flight, {rtt_iters} samples per round each, interleaved in blocks of {RTT_BLOCK}: framework p50 {:?} p99 {:?}; raw quinn p50 {:?} p99 {:?}; pooled p50 ratio {:.2}, p99 ratio {:.2}; median per-round p50 ratio {:.2}, p99 ratio {:.2}",
            percentile(fp, 0.5), percentile(fp, 0.99), percentile(rp, 0.5), percentile(rp, 0.99),
            percentile(fp, 0.5).as_secs_f64() / percentile(rp, 0.5).as_secs_f64(),
            percentile(fp, 0.99).as_secs_f64() / percentile(rp, 0.99).as_secs_f64(),
            median(&p50r), median(&p99r)
        );
        println!(
            "   (transport alone, echo through two QuicTransports: p50 {:?} p99 {:?})",
            percentile(qp, 0.5),
            percentile(qp, 0.99)
        );
        println!(
            "   (CPU per round trip, both ends: framework {:.1} us, transport alone {:.1} us, raw quinn {:.1} us, medians)",
            median(&cpu[0]),
            median(&cpu[1]),
            median(&cpu[2])
        );
        if only == "ask-vs-raw" {
            return;
        }

        // 3. pipelined asks, raw quinn and the framework taking turns at
        // going first. Asks that fail are reported, not counted in the rate.
        check_failed_asks_are_not_counted(&a, &xa, window).await;
        let mut paired = Paired::default();
        let mut failed_total = 0;
        let mut raw_first_rounds = 0usize;
        for round in 0..rounds {
            let raw_first = raw_first_in_round(round);
            let ((r, rc), p) = if raw_first {
                raw_first_rounds += 1;
                let raw = raw_pipelined(&xa, &xb, &ca, asks, window, frame).await;
                (raw, framework_pipelined(&a, &xa, "b/sink", asks, window).await)
            } else {
                let fw = framework_pipelined(&a, &xa, "b/sink", asks, window).await;
                (raw_pipelined(&xa, &xb, &ca, asks, window, frame).await, fw)
            };
            failed_total += p.failed;
            println!(
                "    round {round} ({} first): framework asks {:>9.0}/s ({:>5.0} CPU-ns/ask, {} failed, not counted)   raw quinn req/resp {r:>9.0}/s ({rc:>4.0} CPU-ns/req)   ratio {:.2}",
                if raw_first { "raw quinn" } else { "framework" },
                p.rate,
                p.cpu_ns,
                p.failed,
                p.rate / r
            );
            paired.push(p.rate, p.cpu_ns, r, rc);
        }
        assert!(
            raw_first_rounds.abs_diff(rounds - raw_first_rounds) <= 1,
            "section 3 did not rotate: raw quinn first in {raw_first_rounds} of {rounds} rounds"
        );
        let (fw, raw, ratio, fc, rc) = paired.medians();
        println!(
            "3. pipelined asks, {window} in flight, {asks} per round, raw quinn and the framework first in turn: framework median {:.0} answered asks/s ({fc:.0} CPU-ns/ask; {failed_total} failed in all, not counted); raw quinn median {:.0} req/s ({rc:.0} CPU-ns/req); median per-round ratio {:.3}; CPU-efficiency ratio {:.3}",
            fw, raw, ratio, rc / fc
        );

        // 4. connect + authenticate a new peer.
        let per_round = 10usize;
        let mut names: Vec<(String, HeldAddr)> = (0..rounds * per_round)
            .map(|i| (format!("fresh-{i}"), HeldAddr::new()))
            .collect();
        let peers: Vec<(&str, SocketAddr)> =
            names.iter().map(|(n, a)| (n.as_str(), a.addr())).collect();
        let hub_cfg = config("hub", hub_held.release(), ca.issue("hub").expect("hub"), &peers);
        let hub = start_node(&xb, hub_cfg, 3).await;
        let hub_progress = Arc::new(Progress::default());
        let spec = sink(&hub_progress);
        let h2 = hub.clone();
        on(&xb, async move { h2.spawn(spec).await.expect("spawn hub sink") }).await;
        let (mut fw, mut hs, mut hs_echo) = (vec![], vec![], vec![]);
        for round in 0..rounds {
            let (h, he) = raw_connect_times(&xa, &xb, &ca, per_round, frame).await;
            let batch: Vec<_> = names.drain(..per_round).collect();
            let f = framework_connect(&xa, hub_addr, &ca, batch, round * per_round).await;
            fw.extend(f);
            hs.extend(h);
            hs_echo.extend(he);
        }
        fw.sort();
        hs.sort();
        hs_echo.sort();
        println!(
            "4. connect + authenticate, {} fresh peers: framework first ask -> reply p50 {:?} p99 {:?}; raw quinn mTLS handshake p50 {:?} p99 {:?}; raw handshake + first echo p50 {:?} p99 {:?}; p50 ratio vs handshake {:.2}, vs handshake+echo {:.2}",
            fw.len(),
            percentile(&fw, 0.5), percentile(&fw, 0.99),
            percentile(&hs, 0.5), percentile(&hs, 0.99),
            percentile(&hs_echo, 0.5), percentile(&hs_echo, 0.99),
            percentile(&fw, 0.5).as_secs_f64() / percentile(&hs, 0.5).as_secs_f64(),
            percentile(&fw, 0.5).as_secs_f64() / percentile(&hs_echo, 0.5).as_secs_f64(),
        );
        let stats = b.stats();
        println!(
            "node b stats: frames_in {} bad {} undeliverable {} deduplicated {} mailbox full {}",
            stats.frames_in,
            stats.bad_frames,
            stats.undeliverable,
            stats.deduplicated,
            stats.mailbox_full
        );
        hub.shutdown();
        a.shutdown();
        b.shutdown();
        xa.stop();
        xb.stop();
    });
    println!("wall time {:.1} s", wall.elapsed().as_secs_f64());
}
