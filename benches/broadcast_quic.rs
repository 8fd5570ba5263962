//! Group communication deployed: FIFO and causal broadcast between three
//! nodes over real QUIC (loopback, mutual TLS off) with their durable state
//! on disk (group commit), against plain tells from one sender to the two
//! others in the same run. Each node runs on its own thread and actix
//! system, as three processes would (one process, so that one binary
//! measures both sides; the nodes share nothing but the allocator).
//!
//! Node `a` sends, `b` and `c` receive. For each configuration, `a` keeps
//! `W` messages in flight (default 64) for the measured time, 100-byte
//! payloads:
//! - **tells**: `W` tasks, each telling the message to `b` and to `c` and
//!   then asking both for an empty acknowledgement every `W` messages
//!   (so the sender cannot run ahead of what the receivers take in);
//!   a delivery is a tell handled at `b` or `c`;
//! - **broadcast** (FIFO, causal): `W` tasks each calling
//!   `BroadcastGroup::broadcast(..).await` back to back (returns once the
//!   message is durable at `a`); a delivery is one at `b` or `c` (read from
//!   the group's delivery stream).
//!
//! Reported per configuration: deliveries per second per receiving member
//! (the mean of `b` and `c`), and the p50 / p99 latency from the send to
//! the delivery at a receiver. The ratio is broadcast deliveries/s over
//! tells deliveries/s, the median of per-round ratios (configurations
//! interleaved, order alternating between rounds). Goal (issue 21): FIFO
//! and causal reach at least 0.5 of the plain tells' throughput.
//!
//! Run with `cargo bench --bench broadcast_quic`. Knobs (env):
//! `BCAST_BENCH_ROUNDS` (5), `BCAST_BENCH_SECS` per configuration (3, after
//! 0.5 s of warm-up), `BCAST_BENCH_WINDOW` (64), `BCAST_BENCH_ALGOS` (the
//! broadcast algorithms, comma-separated configuration names; default
//! `fifo,causal`; `relay-tells` adds plain tells in the eager engine's
//! pattern, each receiver relaying a copy to the other and acknowledging
//! to the sender: what the six messages per broadcast cost without the
//! engine), `BCAST_BENCH_STORE=memory` (no `data_dir`: the nodes'
//! durable state in memory; default on disk), `BCAST_BENCH_FLOW` (the
//! groups' flow-control window, `BroadcastConfig::window`; 0 for none). Without `--bench` (as
//! `cargo test --benches` runs it) one short round checks that it works.

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use serde::{Deserialize, Serialize};
use troupe::broadcast::start_broadcast_with;
use troupe::prelude::*;
use troupe_protocols::broadcast::BroadcastConfig;

#[path = "support/mod.rs"]
mod support;

/// The allocator the `troupe` binary runs with (both sides of the
/// comparison use it).
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

use support::{env, median, median_d, percentile, start_one, three_ports, wait_up, NAMES};

/// What is sent: when (nanoseconds since the run's origin) and padding to
/// 100 bytes.
#[derive(Debug, Clone, Serialize, Deserialize)]
struct Payload {
    sent_ns: u64,
    pad: Vec<u8>,
}

impl Payload {
    fn new(origin: Instant) -> Self {
        Self {
            sent_ns: origin.elapsed().as_nanos() as u64,
            pad: vec![0x2a; 88],
        }
    }
}

/// A plain tell.
#[derive(Debug, Clone, Serialize, Deserialize)]
struct Ping(Payload);
remote_message!(Ping, "bench.bcast.ping", ());

/// An empty ask, answered once the tells before it are handled.
#[derive(Debug, Clone, Serialize, Deserialize)]
struct Flush;
remote_message!(Flush, "bench.bcast.flush", ());

/// A receiver's copy of a ping to the other receiver (the relay pattern).
#[derive(Debug, Clone, Serialize, Deserialize)]
struct Relayed(Payload);
remote_message!(Relayed, "bench.bcast.relayed", ());

/// A receiver's acknowledgement of a ping to the sender (the relay
/// pattern).
#[derive(Debug, Clone, Serialize, Deserialize)]
struct Acked(u64);
remote_message!(Acked, "bench.bcast.acked", ());

/// Latencies seen at a receiver.
type Seen = Arc<Mutex<Vec<Duration>>>;

/// Where a receiver of the relay pattern sends its copy and its
/// acknowledgement.
struct Echoes {
    relay: RemoteRef<Relayed>,
    ack: RemoteRef<Acked>,
    /// Copies and acknowledgements the transport refused (queue full).
    refused: Arc<AtomicUsize>,
}

struct Sink {
    origin: Instant,
    from: Instant,
    seen: Seen,
    /// The relay pattern: on each ping, a copy to the other receiver and
    /// an acknowledgement to the sender.
    echoes: Option<Echoes>,
}

impl Actor for Sink {
    type Context = Context<Self>;
}

impl Handler<Ping> for Sink {
    type Result = ();
    fn handle(&mut self, Ping(p): Ping, _: &mut Context<Self>) {
        let now = self.origin.elapsed();
        if Instant::now() >= self.from {
            let sent = Duration::from_nanos(p.sent_ns);
            self.seen.lock().unwrap().push(now.saturating_sub(sent));
        }
        if let Some(e) = &self.echoes {
            let sent = p.sent_ns;
            if e.relay.tell(Relayed(p)).is_err() {
                e.refused.fetch_add(1, Ordering::Relaxed);
            }
            if e.ack.tell(Acked(sent)).is_err() {
                e.refused.fetch_add(1, Ordering::Relaxed);
            }
        }
    }
}

impl Handler<Relayed> for Sink {
    type Result = ();
    fn handle(&mut self, _: Relayed, _: &mut Context<Self>) {}
}

impl Handler<Acked> for Sink {
    type Result = ();
    fn handle(&mut self, _: Acked, _: &mut Context<Self>) {}
}

impl Handler<Flush> for Sink {
    type Result = ();
    fn handle(&mut self, _: Flush, _: &mut Context<Self>) {}
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Mode {
    Tells,
    /// Plain tells in the eager engine's pattern: each receiver relays a
    /// copy to the other receiver and acknowledges to the sender (6
    /// messages per broadcast at 3 members, as the engine sends), with no
    /// engine behind them: what the message pattern alone costs.
    RelayTells,
    Broadcast(BroadcastAlgorithm),
}

impl Mode {
    fn name(self) -> String {
        match self {
            Mode::Tells => "plain tells".into(),
            Mode::RelayTells => "tells in the relay pattern".into(),
            Mode::Broadcast(a) => format!("{a} broadcast"),
        }
    }
}

/// One configuration's measurement.
#[derive(Debug, Clone, Default)]
struct Run {
    per_member: f64,
    p50: Duration,
    p99: Duration,
}

/// What the three node threads of one measurement share.
struct Shared {
    ports: [u16; 3],
    dir: Option<PathBuf>,
    mode: Mode,
    window: usize,
    origin: Instant,
    start: Instant,
    end: Instant,
    /// Latencies seen at `b` and `c`.
    seen: [Seen; 2],
    /// Nodes that see the others up.
    up: AtomicUsize,
    /// Nodes whose receiving side (sink or group and reader) is ready.
    ready: AtomicUsize,
    /// Nodes done with the measured time (none shuts down before all are).
    done: AtomicUsize,
    /// Relay-pattern messages the transport refused.
    refused: Arc<AtomicUsize>,
}

/// Wait (on the node's own actix system) until `n` nodes have counted in
/// `at`.
async fn all(at: &AtomicUsize, n: usize) {
    let deadline = Instant::now() + Duration::from_secs(60);
    while at.load(Ordering::Acquire) < n {
        assert!(Instant::now() < deadline, "the bench cluster stalled");
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
}

/// Node `me` (0: the sender `a`; 1, 2: `b`, `c`) of one measurement, on
/// its own thread and actix system.
async fn node_main(me: usize, sh: Arc<Shared>) {
    let name = NAMES[me];
    let members: Vec<String> = NAMES.iter().map(|n| n.to_string()).collect();
    let running = start_one(sh.dir.as_deref(), name, &sh.ports, "").await;
    wait_up(std::slice::from_ref(&running)).await;
    sh.up.fetch_add(1, Ordering::AcqRel);
    all(&sh.up, 3).await;
    let node = running.node.clone();
    let mut tasks = Vec::new();
    match sh.mode {
        Mode::Tells | Mode::RelayTells => {
            let relay = sh.mode == Mode::RelayTells;
            if me > 0 || relay {
                let (origin, from) = (sh.origin, sh.start);
                let seen = sh.seen[me.max(1) - 1].clone();
                let (n, refused) = (node.clone(), sh.refused.clone());
                let other = if me == 1 { "c/sink" } else { "b/sink" };
                node.spawn(
                    ActorSpec::new("sink", move || Sink {
                        origin,
                        from,
                        seen: seen.clone(),
                        echoes: (relay && me > 0).then(|| Echoes {
                            relay: n.lookup::<Relayed>(other).expect("lookup"),
                            ack: n.lookup::<Acked>("a/sink").expect("lookup"),
                            refused: refused.clone(),
                        }),
                    })
                    .handles::<Ping>()
                    .handles::<Relayed>()
                    .handles::<Acked>()
                    .handles::<Flush>(),
                )
                .await
                .expect("sink");
            }
            sh.ready.fetch_add(1, Ordering::AcqRel);
            all(&sh.ready, 3).await;
            if me == 0 {
                let pings: Vec<RemoteRef<Ping>> = ["b/sink", "c/sink"]
                    .iter()
                    .map(|p| node.lookup::<Ping>(p).expect("lookup"))
                    .collect();
                let flushes: Vec<RemoteRef<Flush>> = ["b/sink", "c/sink"]
                    .iter()
                    .map(|p| node.lookup::<Flush>(p).expect("lookup"))
                    .collect();
                for _ in 0..sh.window {
                    let (pings, flushes, sh) = (pings.clone(), flushes.clone(), sh.clone());
                    tasks.push(actix_rt::spawn(async move {
                        let mut k = 0usize;
                        while Instant::now() < sh.end {
                            for p in &pings {
                                p.tell_wait(Ping(Payload::new(sh.origin)))
                                    .await
                                    .expect("tell");
                            }
                            k += 1;
                            if k.is_multiple_of(sh.window) {
                                for f in &flushes {
                                    f.ask(Flush).await.expect("flush");
                                }
                            }
                        }
                    }));
                }
            }
        }
        Mode::Broadcast(algorithm) => {
            let config = BroadcastConfig {
                keep_log: std::env::var("BCAST_BENCH_NOLOG").is_err(),
                window: env("BCAST_BENCH_FLOW", BroadcastConfig::default().window),
                ..BroadcastConfig::default()
            };
            let g = start_broadcast_with::<Payload>(&node, "bench", algorithm, &members, config)
                .await
                .expect("group");
            if me > 0 {
                let (g, s, sh) = (g.clone(), sh.seen[me - 1].clone(), sh.clone());
                actix_rt::spawn(async move {
                    let mut d = g.deliveries(0).await.expect("deliveries");
                    while let Ok(Some(x)) = d.next().await {
                        if Instant::now() >= sh.start {
                            let sent = Duration::from_nanos(x.payload.sent_ns);
                            s.lock()
                                .unwrap()
                                .push(sh.origin.elapsed().saturating_sub(sent));
                        }
                    }
                });
            }
            sh.ready.fetch_add(1, Ordering::AcqRel);
            all(&sh.ready, 3).await;
            if me == 0 {
                for _ in 0..sh.window {
                    let (g, sh) = (g.clone(), sh.clone());
                    tasks.push(actix_rt::spawn(async move {
                        while Instant::now() < sh.end {
                            g.broadcast(&Payload::new(sh.origin))
                                .await
                                .expect("broadcast");
                        }
                    }));
                }
            }
        }
    }
    assert!(
        Instant::now() < sh.start,
        "the nodes took longer than the 5 s set aside to come up"
    );
    tokio::time::sleep_until(sh.end.into()).await;
    for t in tasks {
        let _ = t.await;
    }
    sh.done.fetch_add(1, Ordering::AcqRel);
    all(&sh.done, 3).await;
    running.shutdown().await;
}

/// One configuration: three nodes, each on its own thread (as three
/// processes would run them), for `warmup` then `len`.
/// Also returns how many relay-pattern messages the transport refused.
fn measure(
    dir: Option<&Path>,
    mode: Mode,
    window: usize,
    warmup: Duration,
    len: Duration,
) -> (Run, usize) {
    let origin = Instant::now();
    // The nodes need a few seconds to come up: the measured time starts
    // once all are up and ready (see `node_main`), so it is set far ahead
    // and moved when they are.
    let sh = Arc::new(Shared {
        ports: three_ports(),
        dir: dir.map(Path::to_path_buf),
        mode,
        window,
        origin,
        start: Instant::now() + Duration::from_secs(5) + warmup,
        end: Instant::now() + Duration::from_secs(5) + warmup + len,
        seen: [Seen::default(), Seen::default()],
        up: AtomicUsize::new(0),
        ready: AtomicUsize::new(0),
        done: AtomicUsize::new(0),
        refused: Arc::default(),
    });
    let threads: Vec<_> = (0..3)
        .map(|me| {
            let sh = sh.clone();
            std::thread::Builder::new()
                .name(format!("node-{}", NAMES[me]))
                .spawn(move || actix_rt::System::new().block_on(node_main(me, sh)))
                .expect("a node thread")
        })
        .collect();
    // Deliveries counted until `end` only.
    let until_end = sh.end.saturating_duration_since(Instant::now());
    std::thread::sleep(until_end);
    let counted: Vec<usize> = sh.seen.iter().map(|s| s.lock().unwrap().len()).collect();
    for t in threads {
        t.join().expect("a node thread ends");
    }
    let mut lat: Vec<Duration> = sh
        .seen
        .iter()
        .flat_map(|s| s.lock().unwrap().clone())
        .collect();
    lat.sort();
    let run = Run {
        per_member: counted.iter().sum::<usize>() as f64 / 2.0 / len.as_secs_f64(),
        p50: percentile(&lat, 0.5),
        p99: percentile(&lat, 0.99),
    };
    (run, sh.refused.load(Ordering::Relaxed))
}

fn main() {
    let quick = !std::env::args().any(|a| a == "--bench");
    let rounds: usize = if quick {
        1
    } else {
        env("BCAST_BENCH_ROUNDS", 5usize).max(1)
    };
    let len = if quick {
        Duration::from_millis(300)
    } else {
        Duration::from_secs_f64(env("BCAST_BENCH_SECS", 3.0f64))
    };
    let warmup = Duration::from_millis(if quick { 100 } else { 500 });
    let window: usize = env("BCAST_BENCH_WINDOW", 64usize).max(1);
    let base: PathBuf = Path::new(env!("CARGO_TARGET_TMPDIR")).join("broadcast-quic");
    let algos = std::env::var("BCAST_BENCH_ALGOS").unwrap_or_else(|_| "fifo,causal".into());
    let mut modes = vec![Mode::Tells];
    for a in algos.split(',').filter(|a| !a.is_empty()) {
        if a.trim() == "relay-tells" {
            modes.push(Mode::RelayTells);
            continue;
        }
        let algo: BroadcastAlgorithm = a
            .trim()
            .parse()
            .expect("BCAST_BENCH_ALGOS: broadcast algorithm names");
        modes.push(Mode::Broadcast(algo));
    }
    let memory = std::env::var("BCAST_BENCH_STORE").is_ok_and(|s| s == "memory");
    println!(
        "broadcast over QUIC, 3 nodes, a sends to b and c, {window} in flight, \
         {rounds} round(s) of {len:?}, durable state {}",
        if memory { "in memory" } else { "on disk" }
    );
    let mut runs: Vec<Vec<Run>> = vec![Vec::new(); modes.len()];
    let mut ratios: Vec<Vec<f64>> = vec![Vec::new(); modes.len()];
    for round in 0..rounds {
        let mut order: Vec<usize> = (0..modes.len()).collect();
        if round % 2 == 1 {
            order.reverse();
        }
        let mut got = vec![Run::default(); modes.len()];
        for i in order {
            let dir = base.join(uuid::Uuid::new_v4().to_string());
            std::fs::create_dir_all(&dir).expect("bench dir");
            let (run, refused) = measure(
                (!memory).then_some(dir.as_path()),
                modes[i],
                window,
                warmup,
                len,
            );
            if refused > 0 {
                println!(
                    "  round {}: {}: {refused} relay-pattern messages refused (queue full)",
                    round + 1,
                    modes[i].name()
                );
            }
            let _ = std::fs::remove_dir_all(&dir);
            println!(
                "  round {}: {:<28} {:>9.0} deliveries/s per member  p50 {:>7.2} ms  p99 {:>7.2} ms",
                round + 1,
                modes[i].name(),
                run.per_member,
                run.p50.as_secs_f64() * 1e3,
                run.p99.as_secs_f64() * 1e3,
            );
            if run.per_member == 0.0 {
                // Reported, not a panic: a broadcast that stalls under the
                // sender's load is a result (see BENCHMARKS.md).
                println!(
                    "  round {}: {}: NOTHING DELIVERED in the measured time",
                    round + 1,
                    modes[i].name()
                );
            }
            got[i] = run;
        }
        for i in 0..modes.len() {
            ratios[i].push(got[i].per_member / got[0].per_member);
            runs[i].push(got[i].clone());
        }
    }
    println!("\nmedian of {rounds} round(s):\n");
    println!("| configuration | deliveries/s per member | p50 | p99 | / plain tells |");
    println!("|---|---|---|---|---|");
    for (i, m) in modes.iter().enumerate() {
        println!(
            "| {} | {:.0} | {:.2} ms | {:.2} ms | {:.2} |",
            m.name(),
            median(runs[i].iter().map(|r| r.per_member).collect()),
            median_d(runs[i].iter().map(|r| r.p50).collect()).as_secs_f64() * 1e3,
            median_d(runs[i].iter().map(|r| r.p99).collect()).as_secs_f64() * 1e3,
            median(ratios[i].clone()),
        );
    }
}
