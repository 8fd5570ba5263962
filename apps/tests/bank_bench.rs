//! Throughput and latency of the bank app over QUIC, three `troupe node`
//! processes (`troupe cluster up --apps bank`), against its own baseline in
//! the same run: a transfer between two accounts of the coordinator (one
//! durable write, no commit protocol). Measured, in interleaved rounds of
//! 2 s with 8 concurrent HTTP clients:
//! - `local`: both accounts on the coordinator (the baseline);
//! - `own part`: the coordinator owns the debited account, one other node
//!   the credited one (one participant plus the coordinator's own prepare);
//! - `remote`: the coordinator owns neither (two participants);
//! - `read`: `GET /v1/bank/accounts` (a read-only transaction over all).
//!
//! Under two-phase and three-phase commit (one cluster each). Prints
//! per-mode rates, p50 latencies and the ratio to `local`.
//!
//! `cargo test -p troupe-apps --release --test bank_bench -- --ignored --nocapture`
//! (`BANK_BENCH_CLIENTS=n`: other than 8 clients; `BANK_BENCH_ALGORITHMS=two-phase`: one algorithm)

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use serde_json::json;
use troupe_apps::cluster::{read_file, ClusterFile};
use troupe_apps::http_client::NodeClient;

#[path = "troupe_run/mod.rs"]
mod troupe_run;

const NODES: [&str; 3] = ["node-1", "node-2", "node-3"];
const ROUND: Duration = Duration::from_secs(2);
const ROUNDS: usize = 3;

fn troupe(args: &[&str]) {
    let out = troupe_run::troupe_within(args, Duration::from_secs(120));
    assert!(
        out.status.success(),
        "troupe {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

#[derive(Clone, Copy, Debug, PartialEq)]
enum Mode {
    Local,
    OwnPart,
    Remote,
    Read,
}

const MODES: [Mode; 4] = [Mode::Local, Mode::OwnPart, Mode::Remote, Mode::Read];

/// One request of `mode` by client `c` (request number `i`); its latency
/// if it succeeded (committed, or a read).
fn clients() -> usize {
    std::env::var("BANK_BENCH_CLIENTS")
        .ok()
        .and_then(|c| c.parse().ok())
        .unwrap_or(8)
}

fn one(clients: &[NodeClient], mode: Mode, c: usize, i: usize) -> Option<Duration> {
    // Accounts on node-1: 0, 3, 6...; node-2: 1, 4...; node-3: 2, 5...
    let a = 3 * ((c * 7 + i) % 30);
    let b = 3 * ((c * 7 + i + 1) % 30);
    let (node, from, to) = match mode {
        Mode::Local => (0, a, b),
        Mode::OwnPart => (0, a, b + 1),
        Mode::Remote => (2, a, b + 1),
        Mode::Read => (c % 3, 0, 0),
    };
    let start = Instant::now();
    let ok = if mode == Mode::Read {
        clients[node]
            .get("/v1/bank/accounts")
            .is_ok_and(|r| r.status == 200)
    } else {
        // Back and forth: balances stay near their start.
        let (from, to) = if i.is_multiple_of(2) {
            (from, to)
        } else {
            (to, from)
        };
        let body = json!({"from": format!("acct-{from}"), "to": format!("acct-{to}"), "amount": 1});
        clients[node]
            .post_json("/v1/bank/transfer", &body)
            .is_ok_and(|r| r.status == 200)
    };
    ok.then(|| start.elapsed())
}

/// Runs `mode` for one round; (successes per second, p50 latency, failures).
fn round(file: &ClusterFile, mode: Mode) -> (f64, Duration, usize) {
    let stop = Arc::new(AtomicBool::new(false));
    let lat = Arc::new(Mutex::new(Vec::new()));
    let failed = Arc::new(Mutex::new(0usize));
    let threads: Vec<_> = (0..clients())
        .map(|c| {
            let (stop, lat, failed, file) =
                (stop.clone(), lat.clone(), failed.clone(), file.clone());
            std::thread::spawn(move || {
                let clients: Vec<NodeClient> = file
                    .nodes
                    .iter()
                    .map(|n| NodeClient::new(&n.http, None, Duration::from_secs(30)).expect("url"))
                    .collect();
                let mut i = 0;
                while !stop.load(Ordering::Relaxed) {
                    match one(&clients, mode, c, i) {
                        Some(d) => lat.lock().unwrap().push(d),
                        None => *failed.lock().unwrap() += 1,
                    }
                    i += 1;
                }
            })
        })
        .collect();
    let start = Instant::now();
    std::thread::sleep(ROUND);
    stop.store(true, Ordering::Relaxed);
    for t in threads {
        t.join().expect("client");
    }
    let elapsed = start.elapsed().as_secs_f64();
    let mut lat = lat.lock().unwrap().clone();
    lat.sort();
    let p50 = lat.get(lat.len() / 2).copied().unwrap_or_default();
    let failed = *failed.lock().unwrap();
    (lat.len() as f64 / elapsed, p50, failed)
}

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(|a, b| a.total_cmp(b));
    v[v.len() / 2]
}

fn bench(algorithm: &str) {
    let dir = std::env::temp_dir().join(format!(
        "troupe-bank-bench-{algorithm}-{}",
        std::process::id()
    ));
    let _ = std::fs::remove_dir_all(&dir);
    let d = dir.to_str().expect("utf-8 path");
    let _cleanup = troupe_run::KillNodesOnDrop(dir.clone());
    troupe(&[
        "cluster", "up", "--nodes", "3", "--apps", "bank", "--dir", d,
    ]);
    for n in NODES {
        troupe(&["cluster", "stop", "--dir", d, n]);
        let path = dir.join(format!("{n}.toml"));
        let text = std::fs::read_to_string(&path).expect("config");
        let text = text.replace(
            "[apps.bank]\n",
            &format!("[apps.bank]\nalgorithm = \"{algorithm}\"\n"),
        );
        std::fs::write(&path, text).expect("config");
    }
    for n in NODES {
        troupe(&["cluster", "start", "--dir", d, n]);
    }
    let file = read_file(&dir).expect("cluster.json");
    // Warm up every path once.
    for mode in MODES {
        let _ = round(&file, mode);
    }
    let mut rates: Vec<Vec<f64>> = vec![Vec::new(); MODES.len()];
    let mut p50s: Vec<Vec<f64>> = vec![Vec::new(); MODES.len()];
    let mut ratios: Vec<Vec<f64>> = vec![Vec::new(); MODES.len()];
    let mut failures = vec![0usize; MODES.len()];
    for _ in 0..ROUNDS {
        let mut local = 0.0;
        for (k, mode) in MODES.into_iter().enumerate() {
            let (rate, p50, failed) = round(&file, mode);
            if mode == Mode::Local {
                local = rate;
            }
            rates[k].push(rate);
            p50s[k].push(p50.as_secs_f64() * 1e3);
            ratios[k].push(rate / local.max(f64::MIN_POSITIVE));
            failures[k] += failed;
        }
    }
    println!("bank over QUIC, {algorithm}, {} clients, {ROUNDS} interleaved rounds of {ROUND:?} (medians):", clients());
    println!(
        "  {:<10} {:>10} {:>10} {:>12} {:>9}",
        "mode", "ops/s", "p50 ms", "vs local", "failed"
    );
    for (k, mode) in MODES.into_iter().enumerate() {
        println!(
            "  {:<10} {:>10.0} {:>10.1} {:>12.2} {:>9}",
            format!("{mode:?}"),
            median(rates[k].clone()),
            median(p50s[k].clone()),
            median(ratios[k].clone()),
            failures[k]
        );
    }
    troupe(&["cluster", "down", "--dir", d]);
}

#[test]
#[ignore = "a benchmark: run with --ignored --nocapture"]
fn bank_throughput_against_local_transfers() {
    let algorithms =
        std::env::var("BANK_BENCH_ALGORITHMS").unwrap_or_else(|_| "two-phase,three-phase".into());
    for algorithm in algorithms.split(',') {
        bench(algorithm);
    }
}
