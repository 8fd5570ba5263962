//! The kv app deployed as issue 19 asks: three `troupe node` processes
//! (`troupe cluster up --nodes 3 --apps kv`, release binary) over QUIC on
//! loopback, each with its data directory on disk (the durable store,
//! group commit), driven over HTTP by the test as a user would.
//!
//! **Throughput.** `C` concurrent HTTP clients (one blocking
//! [`NodeClient`] per thread, each its own keep-alive connection), each
//! sending `PUT /v1/kv/k<client>` with a 16-byte value back to back to
//! the leader (found through `GET /v1/kv/_cluster` before every run).
//! After 0.5 s of warm-up, `KV_BENCH_SECS` of measurement: committed
//! writes per second (200 answers only, for requests sent in the window),
//! p50 and p99 latency, the syncs of the three stores (`/v1/status`), and
//! the CPU the node processes and the clients used. One extra row sends
//! the same load to a follower, which forwards every write to the leader
//! (one more remote ask per write). Each round runs every configuration
//! once (the order rotates between rounds), then the disk's raw fsync
//! rate (append 100 bytes + `sync_data`, `benches/support`'s
//! `raw_fsync`) in the cluster's data directory; tables give medians.
//!
//! **Failover.** On the same running cluster, `KV_BENCH_KILLS` times: find
//! the leader, SIGKILL it (`troupe cluster kill`; the clock starts when
//! `/proc` shows the process gone), then every `KV_BENCH_PROBE_MS` send a
//! `PUT` to each survivor (a thread per probe, so a probe stuck on the
//! dead leader does not hold the next back); the failover time is when
//! the first probe is answered 200. Then `troupe cluster start` the killed
//! node (same data directory, new incarnation) and wait until every node
//! sees every other `Up` in its new incarnation and the leader's view has
//! every member's log matched up to the commit index, before the next
//! kill. The default `[apps.kv]` settings: election timeout drawn in
//! 300-600 ms, heartbeat 50 ms, pre-vote (the `RaftConfig` defaults).
//!
//! **The failure detector** (`KV_BENCH_DETECTOR`, default `swim`, as in
//! `benches/raft_deploy.rs`; `troupe cluster up` uses the `lan-fast`
//! preset: a dead node is `Down` about 2 s after the kill). Raft does not
//! listen to it (the Raft core ignores membership events): followers
//! notice a dead leader only through their election timers, so failover
//! does not wait for the detector, and a failover measured here is over
//! long before the detector says `Down`. What the detector does change is
//! forwarding: a survivor that still names the dead leader forwards a
//! write to it, and until the detector says `Down` that ask waits for its
//! deadline, so the request answers 504 (outcome unknown) after
//! `request_timeout_ms` (5 s), even if a new leader serves meanwhile;
//! once `Down`, an ask to it fails at once and the gateway tries again
//! every 20 ms until its replica knows the new leader. Probes sent after
//! a survivor learned the new leader go there, which is what the failover
//! time measures; each kill's line counts the probes' answers. After the
//! restart the detector must see the new incarnation `Up` everywhere
//! before the next kill (otherwise forwarding to it would fail).
//!
//! Client threads, the three nodes and whatever else runs on the machine
//! share its cores: the CPU columns say how close to full they were.
//!
//! `cargo test -p troupe-apps --release --test kv_bench -- --ignored --nocapture`
//! Knobs (env): `KV_BENCH_ROUNDS` (5), `KV_BENCH_SECS` (2),
//! `KV_BENCH_CLIENTS` (`1,16,256`), `KV_BENCH_FORWARDED` (clients of the
//! row through a follower, 16; 0: no such row), `KV_BENCH_KILLS` (20),
//! `KV_BENCH_PROBE_MS` (10), `KV_BENCH_DETECTOR` (`swim`).

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use serde_json::json;
use troupe::framework::membership::MemberStatus;
use troupe_apps::cluster::{read_file, running, ClusterFile, ClusterNode};
use troupe_apps::http_client::NodeClient;

#[path = "troupe_run/mod.rs"]
mod troupe_run;

#[path = "../../benches/support/mod.rs"]
mod support;

use support::{env, median, median_d, percentile, raw_fsync};

const NODES: [&str; 3] = ["node-1", "node-2", "node-3"];

/// The value every write sets: 16 bytes.
const VALUE: &str = "0123456789abcdef";

/// Above the app's request timeout (5 s) and its forwarding margin.
const CLIENT_TIMEOUT: Duration = Duration::from_secs(8);

const WARMUP: Duration = Duration::from_millis(500);

fn node<'a>(file: &'a ClusterFile, name: &str) -> &'a ClusterNode {
    file.nodes.iter().find(|n| n.name == name).expect(name)
}

fn client(file: &ClusterFile, name: &str) -> NodeClient {
    NodeClient::new(&node(file, name).http, None, CLIENT_TIMEOUT).expect("url")
}

/// `PUT /v1/kv/{key}` of [`VALUE`]: the status code, or `None` when no
/// answer came (a cut connection, a timeout).
fn put(c: &NodeClient, key: &str) -> Option<u16> {
    let body = json!({ "value": VALUE }).to_string();
    let path = format!("/v1/kv/{key}");
    c.request("PUT", &path, Some(&body), &[])
        .ok()
        .map(|a| a.status)
}

/// The leader all of `names` name in `_cluster`, once they agree, and its
/// term.
fn leader(file: &ClusterFile, names: &[&str], within: Duration) -> (String, u64) {
    let start = Instant::now();
    loop {
        let seen: Vec<Option<(String, u64)>> = names
            .iter()
            .map(|n| {
                let a = client(file, n).get("/v1/kv/_cluster").ok()?;
                let l = a.body["leader"].as_str()?.to_string();
                Some((l, a.body["term"].as_u64()?))
            })
            .collect();
        if let Some(Some(first)) = seen.first() {
            if seen
                .iter()
                .all(|s| s.as_ref().map(|s| &s.0) == Some(&first.0))
            {
                return first.clone();
            }
        }
        assert!(start.elapsed() < within, "no agreed leader: {seen:?}");
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// CPU time (user + system) of process `pid` so far, all its threads.
fn process_cpu(pid: u32) -> Duration {
    let Ok(stat) = std::fs::read_to_string(format!("/proc/{pid}/stat")) else {
        return Duration::ZERO;
    };
    // Fields after the command name (in parentheses): state is field 3,
    // utime and stime fields 14 and 15, in clock ticks.
    let rest = stat.rsplit_once(')').map_or("", |(_, r)| r);
    let f: Vec<u64> = rest
        .split_whitespace()
        .skip(11)
        .take(2)
        .filter_map(|v| v.parse().ok())
        .collect();
    Duration::from_secs_f64(f.iter().sum::<u64>() as f64 / clock_ticks())
}

/// Busy CPU time of the whole machine so far (`/proc/stat`: user, nice,
/// system, irq, softirq, steal), every process.
fn machine_cpu() -> Duration {
    let stat = std::fs::read_to_string("/proc/stat").unwrap_or_default();
    let f: Vec<u64> = stat
        .lines()
        .next()
        .unwrap_or_default()
        .split_whitespace()
        .skip(1)
        .filter_map(|v| v.parse().ok())
        .collect();
    let busy: u64 = [0, 1, 2, 5, 6, 7].iter().filter_map(|i| f.get(*i)).sum();
    Duration::from_secs_f64(busy as f64 / clock_ticks())
}

fn clock_ticks() -> f64 {
    // SAFETY: sysconf takes an integer and touches no memory of ours.
    unsafe { libc::sysconf(libc::_SC_CLK_TCK) }.max(1) as f64
}

/// What the run measures at the edges of the window: the stores' syncs,
/// the nodes' CPU, this process's CPU (the clients), the machine's.
#[derive(Clone, Copy)]
struct Sample {
    at: Instant,
    syncs: u64,
    node_cpu: Duration,
    client_cpu: Duration,
    machine_cpu: Duration,
}

fn sample(file: &ClusterFile) -> Sample {
    let at = Instant::now();
    let syncs = NODES
        .iter()
        .map(|n| client(file, n).status().expect("status").store.stats.syncs)
        .sum();
    Sample {
        at,
        syncs,
        node_cpu: file.nodes.iter().map(|n| process_cpu(n.pid)).sum(),
        client_cpu: process_cpu(std::process::id()),
        machine_cpu: machine_cpu(),
    }
}

/// One configuration of the throughput table.
#[derive(Clone, Copy, Debug, PartialEq)]
struct Setup {
    clients: usize,
    /// Sent to a follower (forwarded to the leader) instead of the leader.
    forwarded: bool,
}

impl Setup {
    fn label(&self) -> String {
        if self.forwarded {
            format!("{} (to a follower)", self.clients)
        } else {
            self.clients.to_string()
        }
    }
}

#[derive(Clone, Debug, Default)]
struct Run {
    per_sec: f64,
    p50: Duration,
    p99: Duration,
    /// Answers other than 200 (or none) in the window.
    failed: usize,
    syncs_per_sec: f64,
    /// Cores busy: the three nodes, the clients, everything else on the
    /// machine (other builds and tests).
    node_cores: f64,
    client_cores: f64,
    other_cores: f64,
}

/// Runs `setup` for `len` after the warm-up.
fn measure(file: &ClusterFile, setup: Setup, len: Duration) -> Run {
    let (l, _) = leader(file, &NODES, Duration::from_secs(30));
    let target = if setup.forwarded {
        NODES.into_iter().find(|n| *n != l).expect("a follower")
    } else {
        l.as_str()
    };
    let start = Instant::now() + WARMUP;
    let end = start + len;
    let threads: Vec<_> = (0..setup.clients)
        .map(|c| {
            let client = client(file, target);
            std::thread::spawn(move || {
                let key = format!("k{c}");
                let (mut lat, mut failed) = (Vec::new(), 0usize);
                loop {
                    let t0 = Instant::now();
                    if t0 >= end {
                        break;
                    }
                    let ok = put(&client, &key) == Some(200);
                    match (t0 >= start, ok) {
                        (true, true) => lat.push(t0.elapsed()),
                        (true, false) => failed += 1,
                        _ => {}
                    }
                }
                (lat, failed)
            })
        })
        .collect();
    std::thread::sleep(start.saturating_duration_since(Instant::now()));
    let s0 = sample(file);
    std::thread::sleep(end.saturating_duration_since(Instant::now()));
    let s1 = sample(file);
    let (mut lat, mut failed) = (Vec::new(), 0);
    for t in threads {
        let (l, f) = t.join().expect("client");
        lat.extend(l);
        failed += f;
    }
    lat.sort();
    let secs = (s1.at - s0.at).as_secs_f64();
    Run {
        per_sec: lat.len() as f64 / len.as_secs_f64(),
        p50: percentile(&lat, 0.5),
        p99: percentile(&lat, 0.99),
        failed,
        syncs_per_sec: (s1.syncs - s0.syncs) as f64 / secs,
        node_cores: (s1.node_cpu - s0.node_cpu).as_secs_f64() / secs,
        client_cores: (s1.client_cpu - s0.client_cpu).as_secs_f64() / secs,
        other_cores: (s1.machine_cpu - s0.machine_cpu)
            .saturating_sub(s1.node_cpu - s0.node_cpu)
            .saturating_sub(s1.client_cpu - s0.client_cpu)
            .as_secs_f64()
            / secs,
    }
}

/// Waits until every node sees every other `Up` in its current
/// incarnation, all name the same leader, and the leader's view has every
/// member matched up to the commit index. How long it took.
fn wait_ready(file: &ClusterFile, within: Duration) -> Duration {
    let start = Instant::now();
    loop {
        let statuses: Vec<_> = NODES.iter().map(|n| client(file, n).status()).collect();
        let incarnations: BTreeMap<&str, String> = NODES
            .iter()
            .zip(&statuses)
            .filter_map(|(n, s)| Some((*n, s.as_ref().ok()?.incarnation.clone())))
            .collect();
        let seen_up = statuses.iter().all(|s| {
            s.as_ref().is_ok_and(|s| {
                s.members.iter().all(|m| {
                    m.status == MemberStatus::Up
                        && m.incarnation.as_ref() == incarnations.get(m.name.as_str())
                })
            })
        });
        let caught_up = seen_up
            && client(file, NODES[0])
                .get("/v1/kv/_cluster")
                .is_ok_and(|a| {
                    let commit = a.body["commit"].as_u64().unwrap_or(u64::MAX);
                    let members = a.body["members"].as_array().cloned().unwrap_or_default();
                    members.len() == NODES.len()
                        && members
                            .iter()
                            .all(|m| m["match"].as_u64().is_some_and(|m| m >= commit))
                });
        if caught_up {
            leader(file, &NODES, within);
            return start.elapsed();
        }
        assert!(
            start.elapsed() < within,
            "the cluster is not ready after {within:?}: {statuses:?}"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// What the probes of one kill got back.
#[derive(Default)]
struct Probes {
    /// When the first 200 came.
    first_ok: Option<Instant>,
    /// Who answered it.
    answered_by: Option<String>,
    /// Answers by status (`none`: no answer).
    answers: BTreeMap<String, usize>,
}

/// One failover: kill the leader, probe the survivors until a write
/// succeeds, restart the killed node and wait until the cluster is ready.
fn failover(k: usize, dir: &Path, probe_every: Duration) -> Duration {
    let d = dir.to_str().expect("utf-8 path");
    let file = read_file(dir).expect("cluster.json");
    let (l, term) = leader(&file, &NODES, Duration::from_secs(30));
    let victim = node(&file, &l).clone();
    let survivors: Vec<(&str, NodeClient)> = NODES
        .into_iter()
        .filter(|n| *n != l)
        .map(|n| (n, client(&file, n)))
        .collect();
    let kill = troupe_run::spawn_troupe(&["cluster", "kill", "--dir", d, &l]);
    let asked = Instant::now();
    while running(&victim) {
        assert!(asked.elapsed() < Duration::from_secs(10), "{l} survives");
        std::thread::sleep(Duration::from_millis(1));
    }
    let dead = Instant::now();
    let probes = Arc::new(Mutex::new(Probes::default()));
    let done = Arc::new(AtomicBool::new(false));
    let mut threads = Vec::new();
    while !done.load(Ordering::Relaxed) {
        assert!(
            dead.elapsed() < Duration::from_secs(30),
            "no write succeeded within 30 s of killing {l}"
        );
        for (name, c) in &survivors {
            let (c, name) = (c.clone(), name.to_string());
            let (probes, done) = (probes.clone(), done.clone());
            threads.push(std::thread::spawn(move || {
                let status = put(&c, "failover");
                let at = Instant::now();
                let mut p = probes.lock().unwrap();
                let what = status.map_or("none".to_string(), |s| s.to_string());
                *p.answers.entry(what).or_default() += 1;
                if status == Some(200) && p.first_ok.is_none_or(|f| at < f) {
                    p.first_ok = Some(at);
                    p.answered_by = Some(name);
                    done.store(true, Ordering::Relaxed);
                }
            }));
        }
        std::thread::sleep(probe_every);
    }
    let killed = kill.wait_with_output().expect("troupe cluster kill");
    assert!(
        killed.status.success(),
        "troupe cluster kill: {}",
        String::from_utf8_lossy(&killed.stderr)
    );
    let took = probes.lock().unwrap().first_ok.expect("a 200") - dead;
    troupe_run::troupe_ok(&["cluster", "start", "--dir", d, &l]);
    let file = read_file(dir).expect("cluster.json");
    let ready = wait_ready(&file, Duration::from_secs(60));
    let (new_leader, new_term) = leader(&file, &NODES, Duration::from_secs(30));
    // The probes still out (sent to a survivor that forwarded them to the
    // dead leader) end within the request timeout.
    for t in threads {
        t.join().expect("probe");
    }
    let p = probes.lock().unwrap();
    println!(
        "  kill {k}: {l} (leader, term {term}) gone {:.0} ms after asking; first write \
         through {} after {:.0} ms; {new_leader} leads (term {new_term}); probes answered \
         {:?}; restarted and caught up in {:.1} s",
        (dead - asked).as_secs_f64() * 1e3,
        p.answered_by.as_deref().unwrap_or("?"),
        took.as_secs_f64() * 1e3,
        p.answers,
        ready.as_secs_f64()
    );
    took
}

fn setups() -> Vec<Setup> {
    let clients = std::env::var("KV_BENCH_CLIENTS").unwrap_or_else(|_| "1,16,256".into());
    let mut setups: Vec<Setup> = clients
        .split(',')
        .map(|c| Setup {
            clients: c.trim().parse().expect("KV_BENCH_CLIENTS: numbers"),
            forwarded: false,
        })
        .collect();
    let forwarded: usize = env("KV_BENCH_FORWARDED", 16);
    if forwarded > 0 {
        setups.push(Setup {
            clients: forwarded,
            forwarded: true,
        });
    }
    setups
}

#[test]
#[ignore = "a benchmark: run with --release -- --ignored --nocapture"]
fn kv_writes_and_failover_on_three_node_processes() {
    let rounds: usize = env("KV_BENCH_ROUNDS", 5usize).max(1);
    let len = Duration::from_secs_f64(env("KV_BENCH_SECS", 2.0f64));
    let kills: usize = env("KV_BENCH_KILLS", 20);
    let probe_every = Duration::from_millis(env("KV_BENCH_PROBE_MS", 10));
    let detector = std::env::var("KV_BENCH_DETECTOR").unwrap_or_else(|_| "swim".into());
    let setups = setups();

    let dir: PathBuf = Path::new(env!("CARGO_TARGET_TMPDIR"))
        .join(format!("troupe-kv-bench-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    let d = dir.to_str().expect("utf-8 path");
    let _cleanup = troupe_run::KillNodesOnDrop(dir.clone());
    troupe_run::troupe_ok(&[
        "cluster",
        "up",
        "--nodes",
        "3",
        "--apps",
        "kv",
        "--dir",
        d,
        "--detector",
        &detector,
    ]);
    let file = read_file(&dir).expect("cluster.json");
    wait_ready(&file, Duration::from_secs(30));
    println!(
        "kv app on 3 `troupe node` processes over QUIC (loopback), durable stores in {}, \
         detector {detector} (lan-fast); {rounds} round(s) of {len:?} after {WARMUP:?} warm-up",
        dir.join("data").display()
    );

    let mut runs: Vec<Vec<Run>> = vec![Vec::new(); setups.len()];
    let mut raw = Vec::new();
    for round in 0..rounds {
        for k in 0..setups.len() {
            let i = (k + round) % setups.len();
            let r = measure(&file, setups[i], len);
            println!(
                "  round {}: {:>18} clients {:>7.0} writes/s  p50 {:>6.2} ms  p99 {:>7.2} ms  \
                 {:>5.0} syncs/s  {} failed  cores: nodes {:.2}, clients {:.2}, other {:.2}",
                round + 1,
                setups[i].label(),
                r.per_sec,
                r.p50.as_secs_f64() * 1e3,
                r.p99.as_secs_f64() * 1e3,
                r.syncs_per_sec,
                r.failed,
                r.node_cores,
                r.client_cores,
                r.other_cores,
            );
            assert!(r.per_sec > 0.0, "nothing committed");
            runs[i].push(r);
        }
        let f = raw_fsync(&dir.join("data"), len);
        println!("  round {}: raw fsync {f:>7.0} syncs/s", round + 1);
        raw.push(f);
    }
    println!("\nmedian of {rounds} round(s):\n");
    println!(
        "| clients | writes/s | p50 | p99 | syncs/s (3 stores) | cores: nodes | clients | other |"
    );
    println!("|---:|---:|---:|---:|---:|---:|---:|---:|");
    for (s, rs) in setups.iter().zip(&runs) {
        let m = |f: fn(&Run) -> f64| median(rs.iter().map(f).collect());
        println!(
            "| {} | {:.0} | {:.2} ms | {:.2} ms | {:.0} | {:.2} | {:.2} | {:.2} |",
            s.label(),
            m(|r| r.per_sec),
            median_d(rs.iter().map(|r| r.p50).collect()).as_secs_f64() * 1e3,
            median_d(rs.iter().map(|r| r.p99).collect()).as_secs_f64() * 1e3,
            m(|r| r.syncs_per_sec),
            m(|r| r.node_cores),
            m(|r| r.client_cores),
            m(|r| r.other_cores),
        );
    }
    println!(
        "| (disk: raw fsync, 1 writer, same run) | {:.0} syncs/s | | | | | | |",
        median(raw)
    );
    let failed: usize = runs.iter().flatten().map(|r| r.failed).sum();
    println!("(answers other than 200 in the windows: {failed})");

    if kills > 0 {
        println!("\nfailover: SIGKILL of the leader, {kills} times, probes every {probe_every:?}:");
        let mut took = Vec::new();
        for k in 0..kills {
            took.push(failover(k + 1, &dir, probe_every));
        }
        took.sort();
        println!(
            "\nfailover over {kills} kill(s): p50 {:.0} ms, max {:.0} ms (min {:.0} ms)",
            percentile(&took, 0.5).as_secs_f64() * 1e3,
            took.last().copied().unwrap_or_default().as_secs_f64() * 1e3,
            took.first().copied().unwrap_or_default().as_secs_f64() * 1e3,
        );
    }
    troupe_run::troupe_ok(&["cluster", "down", "--dir", d, "--clean"]);
}
