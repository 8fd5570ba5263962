//! Soak: a three-process cluster over QUIC under steady traffic while one
//! node is killed (SIGKILL) and restarted again and again. It checks what a
//! long-running deployment depends on:
//!
//! - every ask between live nodes is answered, and every answered `Add` is
//!   counted exactly once, on the node that never restarts and on the one
//!   that does. Traffic: the test asks node-1 and node-3 directly, node-2
//!   asks node-3 (`Forward`), node-3 asks node-1 (`Forward` sent to node-3:
//!   traffic *from* the restarting node, whose asks restart their
//!   correlation ids in every life), and the test tells node-3. Node-1's
//!   counter ends at the sum of the adds acknowledged to it (directly and
//!   via node-3); node-3's counter (in memory: it starts at 0 in every life)
//!   is read before each kill and must hold exactly the asks acknowledged to
//!   that life, plus at most the tells sent to it (a tell is delivered at
//!   most once: tells add [`TELL`], asks add 1, so the two parts are read
//!   apart);
//! - the surviving nodes do not grow: the slope of their resident memory
//!   over the second half of the run (after warm-up) stays under 32 KiB per
//!   restart, less than one idle connection costs (~50 KiB), so no
//!   connection, its tasks or buffers are kept per dead incarnation. (Smaller
//!   per-incarnation state, such as a deduplication window, is bounded by its
//!   own expiry instead and covered by unit tests.)
//!
//! It takes minutes, so it is `#[ignore]`d in the normal suite. Run it with
//! `cargo test -p troupe-apps --release --test soak -- --ignored --nocapture`
//! (`SOAK_CYCLES`, default 40, sets the number of kill/restart cycles). The
//! suite runs the traffic and the exactly-once checks over two cycles
//! (`every_ask_is_counted_once_across_two_restarts`, about 10 s).

mod common;

use std::time::{Duration, Instant};

use common::{loopback_cluster, NODES};
use troupe::config::Config;
use troupe::framework::membership::MemberStatus;
use troupe::runtime::start_node;
use troupe_apps::local_cluster::{wait_seen, wait_up};
use troupe_apps::sample::{start_status, Add, Forward, Get, COUNTER};

/// Resident set size of process `pid` in KiB.
fn rss_kib(pid: u32) -> Option<u64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    status
        .lines()
        .find(|l| l.starts_with("VmRSS:"))?
        .split_whitespace()
        .nth(1)?
        .parse()
        .ok()
}

/// What a tell adds to node-3's counter: the asks' part (adds of 1) stays
/// below it, so `value % TELL` counts asks and `value / TELL` tells.
const TELL: i64 = 1 << 32;

/// Least-squares slope of `ys` against their index.
fn slope(ys: &[f64]) -> f64 {
    let n = ys.len() as f64;
    let mx = (n - 1.0) / 2.0;
    let my = ys.iter().sum::<f64>() / n;
    let (mut num, mut den) = (0.0, 0.0);
    for (i, y) in ys.iter().enumerate() {
        let dx = i as f64 - mx;
        num += dx * (y - my);
        den += dx * dx;
    }
    if den == 0.0 {
        0.0
    } else {
        num / den
    }
}

#[test]
#[ignore = "minutes long; run with --ignored (see the module doc)"]
fn a_cluster_under_traffic_survives_many_restarts_without_growing() {
    let cycles: usize = std::env::var("SOAK_CYCLES")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(40)
        .max(4);
    soak("soak", cycles, true);
}

/// The same traffic and exactly-once checks over two kill/restart cycles,
/// in the normal suite (memory growth needs the long run).
#[test]
fn every_ask_is_counted_once_across_two_restarts() {
    soak("soak-short", 2, false);
}

/// `cycles` rounds of traffic then kill and restart of node-3, checking
/// exactly-once as the module docs say, and memory growth when
/// `check_memory`.
fn soak(tag: &str, cycles: usize, check_memory: bool) {
    let mut c = loopback_cluster(tag, "phi-accrual", "");
    let dir = c.dir().to_path_buf();
    let mut pids = Vec::new();
    for n in NODES {
        pids.push(c.spawn(n).expect("spawn"));
    }
    let sys = actix_rt::System::new();
    sys.block_on(async {
        let ctl = start_node(Config::from_file(c.config_path("ctl")).expect("config"))
            .await
            .expect("controller");
        start_status(&ctl.node, Some(ctl.failure_detector.clone()))
            .await
            .expect("apps");
        for n in NODES {
            wait_up(&ctl.node, n, Duration::from_secs(30))
                .await
                .unwrap_or_else(|e| panic!("{e}; logs in {}", dir.display()));
        }
        let node = ctl.node.clone();
        let counter = |n: &str| format!("{n}/{COUNTER}");
        let add1 = node.lookup::<Add>(&counter("node-1")).expect("path");
        let fwd2 = node.lookup::<Forward>(&counter("node-2")).expect("path");
        let add3 = node.lookup::<Add>(&counter("node-3")).expect("path");
        let fwd3 = node.lookup::<Forward>(&counter("node-3")).expect("path");
        let get3 = node.lookup::<Get>(&counter("node-3")).expect("path");
        let mut acknowledged_on_1 = 0i64;
        let mut rss: Vec<(u64, u64)> = Vec::new();
        let started = Instant::now();
        for cycle in 0..cycles {
            // The askers see the (new) node-3, and node-3 sees node-1.
            for (observer, of) in [("node-2", "node-3"), ("node-3", "node-1")] {
                wait_seen(&node, observer, of, MemberStatus::Up, Duration::from_secs(30))
                    .await
                    .unwrap_or_else(|e| panic!("cycle {cycle}: {e}"));
            }
            // Two seconds of traffic, every ask answered or the test fails:
            // to node-1; to node-3 from here and from node-2 (an
            // actor-to-actor ask across processes); from node-3 to node-1;
            // tells to node-3.
            let until = Instant::now() + Duration::from_secs(2);
            let (mut asks, mut acknowledged_on_3, mut tells_to_3) = (0u64, 0i64, 0i64);
            let mut via_3 = 0i64;
            while Instant::now() < until {
                let r = add1.ask(Add(1)).timeout(Duration::from_secs(5)).await;
                match r {
                    Ok(_) => acknowledged_on_1 += 1,
                    Err(e) => panic!("cycle {cycle}: node-1 did not answer: {e}"),
                }
                asks += 1;
                match add3.ask(Add(1)).timeout(Duration::from_secs(5)).await {
                    Ok(_) => acknowledged_on_3 += 1,
                    Err(e) => panic!("cycle {cycle}: node-3 did not answer: {e}"),
                }
                let to_3 = Forward {
                    node: "node-3".into(),
                    amount: 1,
                };
                match fwd2.ask(to_3).timeout(Duration::from_secs(5)).await {
                    Ok(Ok(_)) => acknowledged_on_3 += 1,
                    other => panic!("cycle {cycle}: node-2's ask to node-3: {other:?}"),
                }
                let to_1 = Forward {
                    node: "node-1".into(),
                    amount: 1,
                };
                match fwd3.ask(to_1).timeout(Duration::from_secs(5)).await {
                    Ok(Ok(_)) => via_3 += 1,
                    other => panic!("cycle {cycle}: node-3's ask to node-1: {other:?}"),
                }
                if add3.tell(Add(TELL)).is_ok() {
                    tells_to_3 += 1;
                }
            }
            acknowledged_on_1 += via_3;
            // This life of node-3 counted every acknowledged ask once, and
            // no tell twice. (The asks above were answered, and a Get from
            // here comes after this sender's tells.)
            let value = get3
                .ask(Get)
                .timeout(Duration::from_secs(5))
                .await
                .unwrap_or_else(|e| panic!("cycle {cycle}: node-3's counter: {e}"));
            let (counted_asks, counted_tells) = (value % TELL, value / TELL);
            assert_eq!(
                counted_asks, acknowledged_on_3,
                "cycle {cycle}: node-3 counted {counted_asks} adds, {acknowledged_on_3} were acknowledged"
            );
            assert!(
                counted_tells <= tells_to_3,
                "cycle {cycle}: node-3 counted {counted_tells} tells of {tells_to_3} sent"
            );
            c.kill("node-3");
            for observer in ["node-1", "node-2"] {
                wait_seen(&node, observer, "node-3", MemberStatus::Down, Duration::from_secs(30))
                    .await
                    .unwrap_or_else(|e| panic!("cycle {cycle}: {e}"));
            }
            c.spawn("node-3").expect("respawn");
            wait_up(&node, "node-3", Duration::from_secs(30))
                .await
                .unwrap_or_else(|e| panic!("cycle {cycle}: {e}"));
            let r1 = rss_kib(pids[0]).expect("node-1 alive");
            let r2 = rss_kib(pids[1]).expect("node-2 alive");
            rss.push((r1, r2));
            println!(
                "cycle {cycle:3} at {:6.1} s: {asks} rounds: node-3 counted {acknowledged_on_3} acknowledged adds once and {counted_tells} of {tells_to_3} tells, node-3 asked node-1 {via_3} times; RSS node-1 {r1} KiB, node-2 {r2} KiB",
                started.elapsed().as_secs_f64()
            );
        }
        // Nothing acknowledged to node-1 (directly or from node-3's lives)
        // was lost or counted twice.
        let total = node
            .lookup::<Get>(&format!("node-1/{COUNTER}"))
            .expect("path")
            .ask(Get)
            .timeout(Duration::from_secs(5))
            .await
            .expect("get");
        assert_eq!(
            total, acknowledged_on_1,
            "node-1's counter differs from the acknowledged adds"
        );
        // No growth per restart over the second half.
        let half = &rss[rss.len() / 2..];
        let memory: &[(usize, &str)] = if check_memory {
            &[(0, "node-1"), (1, "node-2")]
        } else {
            &[]
        };
        for &(k, name) in memory {
            let ys: Vec<f64> = half
                .iter()
                .map(|r| if k == 0 { r.0 } else { r.1 } as f64)
                .collect();
            let per_cycle = slope(&ys);
            println!("{name}: RSS slope over the second half {per_cycle:+.1} KiB per restart");
            assert!(
                per_cycle < 32.0,
                "{name} grows by {per_cycle:.0} KiB per restart of a peer"
            );
        }
        ctl.shutdown().await;
    });
    c.shutdown();
    let _ = std::fs::remove_dir_all(&dir);
}
