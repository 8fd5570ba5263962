//! Reliable delivery over QUIC (issue 22): a `ReliableSender` -> consumer
//! stream against plain `RemoteRef::tell_wait` to the same consumer, in the
//! same run, over loopback with mutual TLS.
//!
//! 1. Throughput and latency: two nodes, each on its own actix `Arbiter`;
//!    one producer task sends `REL_BENCH_N` ~100-byte messages as fast as
//!    it may (`tx.send(m).await` vs `r.tell_wait(m).await`, one at a time)
//!    to a sink actor, which records each message's latency (send call to
//!    handler, `Instant`s of the same process). Rounds alternate which side
//!    goes first; the median of `REL_BENCH_ROUNDS` (default 5) per-round
//!    ratios reliable / plain is reported, with p50 / p99 latency per side.
//!    Throughput counts a message when the sink handled it.
//! 2. A connection cut: a second node pair talks through UDP relays
//!    (`tests/quic_support/cut_proxy.rs`) that drop every datagram for 2 s
//!    (longer than the 0.8 s QUIC idle timeout configured here, so the
//!    connection dies and the transport reconnects) a quarter into a
//!    stream of `REL_BENCH_CUT_N` messages; the sink counts duplicates and
//!    losses, for the reliable channel and, for contrast, for plain
//!    `tell_wait` under the same cut.
//!
//! Run with `cargo bench -p troupe-transports --bench reliable_quic`.
//! Knobs (env): `REL_BENCH_N` (default 200000), `REL_BENCH_ROUNDS`
//! (default 5), `REL_BENCH_CUT_N` (default 200000), `REL_BENCH_ONLY=cut`
//! (section 2 only) or `REL_BENCH_ONLY=throughput` (section 1 only).

#[path = "../tests/quic_support/cut_proxy.rs"]
mod cut_proxy;
mod support;

#[cfg(not(feature = "bench-system-alloc"))]
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

use std::sync::{Arc, Mutex, OnceLock};
use std::time::{Duration, Instant};

use actix::prelude::*;
use actix_rt::Arbiter;
use cut_proxy::CutProxy;
use serde::{Deserialize, Serialize};
use support::quic_support::{config, reserve_addr};
use support::{on, percentile};
use troupe_framework::reliable::{ReliableReceiver, ReliableSender};
use troupe_framework::{ActorSpec, Node, NodeConfig};
use troupe_transports::certs::ClusterCa;
use troupe_transports::quic::{QuicConfig, QuicTransport};

/// ~100 bytes of msgpack, like the remote_node benchmark's `Blob`.
#[derive(Debug, Clone, Serialize, Deserialize)]
struct Msg {
    seq: u64,
    /// When the producer called send, ns since [`epoch`].
    sent_ns: u64,
    #[serde(with = "serde_bytes")]
    data: Vec<u8>,
}
troupe_framework::remote_message!(Msg, "bench.reliable.msg", ());

fn epoch() -> Instant {
    static E: OnceLock<Instant> = OnceLock::new();
    *E.get_or_init(Instant::now)
}

fn now_ns() -> u64 {
    epoch().elapsed().as_nanos() as u64
}

/// What the sink saw in one measurement.
#[derive(Default)]
struct Tally {
    /// The highest `seq` handled so far (seqs start at 1).
    last: u64,
    handled: u64,
    duplicates: u64,
    /// `seq`s skipped over (messages lost, as seen in order).
    skipped: u64,
    /// Latency of each handled message (send call to handler).
    latencies: Vec<Duration>,
    target: u64,
    reached: Option<Instant>,
}

impl Tally {
    fn reset(&mut self, target: u64) {
        *self = Tally {
            target,
            latencies: Vec::with_capacity(target as usize),
            ..Tally::default()
        };
    }
}

struct Sink(Arc<Mutex<Tally>>);
impl Actor for Sink {
    type Context = Context<Self>;
}
impl Handler<Msg> for Sink {
    type Result = ();
    fn handle(&mut self, m: Msg, _: &mut Context<Self>) {
        let now = now_ns();
        let mut t = self.0.lock().unwrap();
        t.handled += 1;
        t.latencies
            .push(Duration::from_nanos(now.saturating_sub(m.sent_ns)));
        if m.seq <= t.last {
            t.duplicates += 1;
        } else {
            t.skipped += m.seq - t.last - 1;
            t.last = m.seq;
        }
        if t.handled == t.target {
            t.reached = Some(Instant::now());
        }
    }
}

fn env_or<T: std::str::FromStr>(key: &str, default: T) -> T {
    std::env::var(key)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

fn median(v: &[f64]) -> f64 {
    let mut s = v.to_vec();
    s.sort_by(|a, b| a.total_cmp(b));
    s[s.len() / 2]
}

async fn start_node(arbiter: &Arbiter, cfg: QuicConfig) -> Node {
    on(arbiter, async move {
        let name = cfg.node_name.clone();
        let (tx, rx) = tokio::sync::mpsc::channel(NodeConfig::named("x").runtime.inbound_queue);
        let t = QuicTransport::bind(cfg, tx).await.expect("bind");
        Node::builder(NodeConfig::named(name))
            .start(Arc::new(t), rx)
            .expect("node")
    })
    .await
}

/// A node pair with a sink on the second and a reliable channel to it.
struct Setup {
    a: Node,
    tally: Arc<Mutex<Tally>>,
    tx: ReliableSender<Msg>,
    plain: troupe_framework::RemoteRef<Msg>,
}

async fn setup(xa: &Arbiter, xb: &Arbiter, a: Node, b: Node) -> Setup {
    let tally = Arc::new(Mutex::new(Tally::default()));
    let t = tally.clone();
    let b2 = b.clone();
    on(xb, async move {
        b2.spawn(ActorSpec::new("sink", move || Sink(t.clone())).handles::<Msg>())
            .await
            .expect("sink");
        ReliableReceiver::start::<Msg>(&b2, "bench", "sink")
            .await
            .expect("receiver");
    })
    .await;
    let target = format!("{}/bench", b.name());
    let a2 = a.clone();
    let tx = on(xa, async move {
        ReliableSender::<Msg>::connect(&a2, &target)
            .await
            .expect("connect")
    })
    .await;
    let plain = a
        .lookup::<Msg>(&format!("{}/sink", b.name()))
        .expect("path");
    Setup {
        a,
        tally,
        tx,
        plain,
    }
}

#[derive(Clone, Copy, PartialEq)]
enum Side {
    Plain,
    Reliable,
}

/// One measurement: (msg/s, p50, p99), or panics if messages are missing.
async fn measure(xa: &Arbiter, s: &Setup, side: Side, n: u64) -> (f64, Duration, Duration) {
    s.tally.lock().unwrap().reset(n);
    let (tx, plain) = (s.tx.clone(), s.plain.clone());
    let started = Instant::now();
    on(xa, async move {
        let data = vec![b'x'; 80];
        for seq in 1..=n {
            let m = Msg {
                seq,
                sent_ns: now_ns(),
                data: data.clone(),
            };
            match side {
                Side::Plain => plain.tell_wait(m).await.expect("tell_wait"),
                Side::Reliable => {
                    tx.send(m).await.expect("send");
                }
            }
        }
    })
    .await;
    let deadline = Instant::now() + Duration::from_secs(120);
    let end = loop {
        if let Some(t) = s.tally.lock().unwrap().reached {
            break t;
        }
        assert!(Instant::now() < deadline, "the sink never handled {n}");
        tokio::time::sleep(Duration::from_micros(500)).await;
    };
    let mut t = s.tally.lock().unwrap();
    assert_eq!((t.duplicates, t.skipped), (0, 0), "no faults here");
    t.latencies.sort_unstable();
    let (p50, p99) = (
        percentile(&t.latencies, 0.5),
        percentile(&t.latencies, 0.99),
    );
    (n as f64 / (end - started).as_secs_f64(), p50, p99)
}

/// Section 2 for one side: (handled, duplicates, lost, dropped datagrams).
async fn cut_run(
    xa: &Arbiter,
    s: &Setup,
    proxies: &[Arc<CutProxy>],
    side: Side,
    n: u64,
) -> (u64, u64, u64, u64) {
    s.tally.lock().unwrap().reset(n);
    let dropped0: u64 = proxies.iter().map(|p| p.dropped()).sum();
    let (tx, plain) = (s.tx.clone(), s.plain.clone());
    let producer = support::start(xa, async move {
        let data = vec![b'x'; 80];
        for seq in 1..=n {
            let m = Msg {
                seq,
                sent_ns: now_ns(),
                data: data.clone(),
            };
            match side {
                // A refused tell (peer down) counts as lost, as it is.
                Side::Plain => {
                    let _ = plain.tell_wait(m).await;
                }
                Side::Reliable => {
                    tx.send(m).await.expect("send");
                }
            }
        }
    });
    while s.tally.lock().unwrap().handled < n / 4 {
        tokio::time::sleep(Duration::from_millis(1)).await;
    }
    for p in proxies {
        p.set_cut(true);
    }
    tokio::time::sleep(Duration::from_secs(2)).await;
    for p in proxies {
        p.set_cut(false);
    }
    producer.await.expect("producer");
    if side == Side::Reliable {
        let tx = s.tx.clone();
        on(xa, async move { tx.flush().await.expect("flush") }).await;
    }
    // Quiet for a second: nothing more is coming.
    let mut last = u64::MAX;
    loop {
        let h = s.tally.lock().unwrap().handled;
        if h == last {
            break;
        }
        last = h;
        tokio::time::sleep(Duration::from_secs(1)).await;
    }
    let t = s.tally.lock().unwrap();
    let dropped: u64 = proxies.iter().map(|p| p.dropped()).sum::<u64>() - dropped0;
    // Lost: skipped in order, plus the tail never seen.
    let lost = t.skipped + (n - t.last);
    (t.handled, t.duplicates, lost, dropped)
}

fn main() {
    let n: u64 = env_or("REL_BENCH_N", 200_000);
    let rounds: usize = env_or("REL_BENCH_ROUNDS", 5).max(1);
    let cut_n: u64 = env_or("REL_BENCH_CUT_N", 200_000);
    let only = std::env::var("REL_BENCH_ONLY").unwrap_or_default();
    epoch();
    let system = actix_rt::System::new();
    system.block_on(async move {
        let xa = Arbiter::new();
        let xb = Arbiter::new();
        let ca = ClusterCa::generate().expect("ca");
        println!(
            "Reliable delivery over QUIC (loopback, mutual TLS), ~100-byte messages, one producer task sending one at a time"
        );
        if only != "cut" {
            let (a_addr, b_addr) = (reserve_addr(), reserve_addr());
            let a = start_node(&xa, config("a", a_addr, ca.issue("a").expect("a"), &[("b", b_addr)])).await;
            let b = start_node(&xb, config("b", b_addr, ca.issue("b").expect("b"), &[("a", a_addr)])).await;
            let s = setup(&xa, &xb, a, b).await;
            // Warm up both paths.
            measure(&xa, &s, Side::Plain, 20_000).await;
            measure(&xa, &s, Side::Reliable, 20_000).await;
            let mut ratios = Vec::new();
            let (mut plain_r, mut rel_r) = (Vec::new(), Vec::new());
            for round in 0..rounds {
                let order = if round % 2 == 0 {
                    [Side::Plain, Side::Reliable]
                } else {
                    [Side::Reliable, Side::Plain]
                };
                let mut res = [(0.0, Duration::ZERO, Duration::ZERO); 2];
                for side in order {
                    let r = measure(&xa, &s, side, n).await;
                    res[(side == Side::Reliable) as usize] = r;
                }
                let [p, r] = res;
                println!(
                    "    round {round}: plain tell_wait {:>8.0} msg/s (p50 {:>8.1?}, p99 {:>8.1?})   reliable {:>8.0} msg/s (p50 {:>8.1?}, p99 {:>8.1?})   ratio {:.2}",
                    p.0, p.1, p.2, r.0, r.1, r.2, r.0 / p.0
                );
                ratios.push(r.0 / p.0);
                plain_r.push(p);
                rel_r.push(r);
            }
            let med = |v: &[(f64, Duration, Duration)], f: fn(&(f64, Duration, Duration)) -> f64| {
                median(&v.iter().map(f).collect::<Vec<_>>())
            };
            println!(
                "1. throughput, {n} per round, {rounds} rounds: plain tell_wait median {:.0} msg/s (p50 {:.1} us, p99 {:.1} us); reliable median {:.0} msg/s (p50 {:.1} us, p99 {:.1} us); median per-round ratio reliable/plain {:.2} (goal >= 0.7)",
                med(&plain_r, |r| r.0),
                med(&plain_r, |r| r.1.as_secs_f64() * 1e6),
                med(&plain_r, |r| r.2.as_secs_f64() * 1e6),
                med(&rel_r, |r| r.0),
                med(&rel_r, |r| r.1.as_secs_f64() * 1e6),
                med(&rel_r, |r| r.2.as_secs_f64() * 1e6),
                median(&ratios)
            );
            let st = s.tx.stats();
            println!("   reliable sender: {st:?}");
            s.a.shutdown();
        }
        if only != "throughput" {
            let (c_addr, d_addr) = (reserve_addr(), reserve_addr());
            let to_d = CutProxy::start(d_addr).await;
            let to_c = CutProxy::start(c_addr).await;
            let short = |mut q: QuicConfig| {
                q.keep_alive = Duration::from_millis(200);
                q.idle_timeout = Duration::from_millis(800);
                q.handshake_timeout = Duration::from_millis(800);
                q.reconnect_min = Duration::from_millis(20);
                q.reconnect_max = Duration::from_millis(300);
                q
            };
            let c = start_node(&xa, short(config("c", c_addr, ca.issue("c").expect("c"), &[("d", to_d.addr)]))).await;
            let d = start_node(&xb, short(config("d", d_addr, ca.issue("d").expect("d"), &[("c", to_c.addr)]))).await;
            let s = setup(&xa, &xb, c, d).await;
            let proxies = [to_d.clone(), to_c.clone()];
            for side in [Side::Reliable, Side::Plain] {
                let (handled, dups, lost, dropped) = cut_run(&xa, &s, &proxies, side, cut_n).await;
                println!(
                    "2. connection cut (2 s, {dropped} datagrams dropped) a quarter into {cut_n} messages, {}: handled {handled}, duplicates {dups}, lost {lost}",
                    match side {
                        Side::Reliable => "reliable channel",
                        Side::Plain => "plain tell_wait",
                    }
                );
            }
            println!("   reliable sender: {:?}", s.tx.stats());
        }
    });
}
