//! Group communication deployed: FIFO and causal broadcast between three
//! nodes over real QUIC (loopback, one process, mutual TLS off) with their
//! durable state on disk (group commit), against plain tells from one
//! sender to the two others in the same run.
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
//! `fifo,causal`), `BCAST_BENCH_STORE=memory` (no `data_dir`: the nodes'
//! durable state in memory; default on disk). Without `--bench` (as
//! `cargo test --benches` runs it) one short round checks that it works.

use std::cell::RefCell;
use std::path::{Path, PathBuf};
use std::rc::Rc;
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

use support::{env, median, median_d, percentile, three_nodes_stored, wait_up, NAMES};

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

/// Latencies seen at a receiver.
type Seen = Arc<Mutex<Vec<Duration>>>;

struct Sink {
    origin: Instant,
    from: Instant,
    seen: Seen,
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
    }
}

impl Handler<Flush> for Sink {
    type Result = ();
    fn handle(&mut self, _: Flush, _: &mut Context<Self>) {}
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Mode {
    Tells,
    Broadcast(BroadcastAlgorithm),
}

impl Mode {
    fn name(self) -> String {
        match self {
            Mode::Tells => "plain tells".into(),
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

async fn measure(
    dir: Option<&Path>,
    mode: Mode,
    window: usize,
    warmup: Duration,
    len: Duration,
) -> Run {
    let members: Vec<String> = NAMES.iter().map(|n| n.to_string()).collect();
    let origin = Instant::now();
    let nodes = three_nodes_stored(dir, "").await;
    wait_up(&nodes).await;
    let start = Instant::now() + warmup;
    let end = start + len;
    let seen: Vec<Seen> = vec![Seen::default(), Seen::default()];
    let mut tasks = Vec::new();
    match mode {
        Mode::Tells => {
            for (i, n) in nodes[1..].iter().enumerate() {
                let s = seen[i].clone();
                n.node
                    .spawn(
                        ActorSpec::new("sink", move || Sink {
                            origin,
                            from: start,
                            seen: s.clone(),
                        })
                        .handles::<Ping>()
                        .handles::<Flush>(),
                    )
                    .await
                    .expect("sink");
            }
            let a = &nodes[0].node;
            let pings: Vec<RemoteRef<Ping>> = ["b/sink", "c/sink"]
                .iter()
                .map(|p| a.lookup::<Ping>(p).expect("lookup"))
                .collect();
            let flushes: Vec<RemoteRef<Flush>> = ["b/sink", "c/sink"]
                .iter()
                .map(|p| a.lookup::<Flush>(p).expect("lookup"))
                .collect();
            for _ in 0..window {
                let (pings, flushes) = (pings.clone(), flushes.clone());
                tasks.push(actix_rt::spawn(async move {
                    let mut k = 0usize;
                    while Instant::now() < end {
                        for p in &pings {
                            p.tell_wait(Ping(Payload::new(origin))).await.expect("tell");
                        }
                        k += 1;
                        if k.is_multiple_of(window) {
                            for f in &flushes {
                                f.ask(Flush).await.expect("flush");
                            }
                        }
                    }
                }));
            }
        }
        Mode::Broadcast(algorithm) => {
            let groups: Rc<RefCell<Vec<BroadcastGroup<Payload>>>> = Rc::default();
            for n in &nodes {
                let config = BroadcastConfig {
                    keep_log: std::env::var("BCAST_BENCH_NOLOG").is_err(),
                    ..BroadcastConfig::default()
                };
                let g =
                    start_broadcast_with::<Payload>(&n.node, "bench", algorithm, &members, config)
                        .await
                        .expect("group");
                groups.borrow_mut().push(g);
            }
            for (i, g) in groups.borrow()[1..].iter().enumerate() {
                let (g, s) = (g.clone(), seen[i].clone());
                actix_rt::spawn(async move {
                    let mut d = g.deliveries(0).await.expect("deliveries");
                    while let Ok(Some(x)) = d.next().await {
                        if Instant::now() >= start {
                            let sent = Duration::from_nanos(x.payload.sent_ns);
                            s.lock()
                                .unwrap()
                                .push(origin.elapsed().saturating_sub(sent));
                        }
                    }
                });
            }
            let a = groups.borrow()[0].clone();
            for _ in 0..window {
                let a = a.clone();
                tasks.push(actix_rt::spawn(async move {
                    while Instant::now() < end {
                        a.broadcast(&Payload::new(origin)).await.expect("broadcast");
                    }
                }));
            }
        }
    }
    tokio::time::sleep_until(end.into()).await;
    // Deliveries counted until `end` only.
    let counted: Vec<usize> = seen.iter().map(|s| s.lock().unwrap().len()).collect();
    for t in tasks {
        let _ = t.await;
    }
    let mut lat: Vec<Duration> = seen
        .iter()
        .flat_map(|s| s.lock().unwrap().clone())
        .collect();
    for n in &nodes {
        n.shutdown().await;
    }
    lat.sort();
    Run {
        per_member: counted.iter().sum::<usize>() as f64 / 2.0 / len.as_secs_f64(),
        p50: percentile(&lat, 0.5),
        p99: percentile(&lat, 0.99),
    }
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
            let run = actix_rt::System::new().block_on(measure(
                (!memory).then_some(dir.as_path()),
                modes[i],
                window,
                warmup,
                len,
            ));
            let _ = std::fs::remove_dir_all(&dir);
            println!(
                "  round {}: {:<28} {:>9.0} deliveries/s per member  p50 {:>7.2} ms  p99 {:>7.2} ms",
                round + 1,
                modes[i].name(),
                run.per_member,
                run.p50.as_secs_f64() * 1e3,
                run.p99.as_secs_f64() * 1e3,
            );
            assert!(
                run.per_member > 0.0,
                "{}: nothing delivered",
                modes[i].name()
            );
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
