//! What the deployment benchmarks share (`#[path]`-included): knobs from
//! the environment, statistics, and a three-node cluster over QUIC on
//! loopback with durable stores, in one process.

#![allow(dead_code)] // each benchmark uses its own subset

use std::fs::OpenOptions;
use std::io::Write as _;
use std::net::UdpSocket;
use std::path::Path;
use std::time::{Duration, Instant};

use troupe::config::Config;
use troupe::prelude::*;
use troupe::runtime::{start_node, RunningNode};

/// The nodes of a bench cluster.
pub const NAMES: [&str; 3] = ["a", "b", "c"];

#[path = "../../transports/benches/support/cpu.rs"]
mod cpu;
#[allow(unused_imports)] // not every bench measures CPU
pub use cpu::cpu_ns;

/// `key` from the environment, parsed, or `default`.
pub fn env<T: std::str::FromStr>(key: &str, default: T) -> T {
    std::env::var(key)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

fn free_port() -> u16 {
    UdpSocket::bind("127.0.0.1:0")
        .and_then(|s| s.local_addr())
        .map(|a| a.port())
        .expect("a free port")
}

/// The `p`-quantile of `sorted` (zero if empty).
pub fn percentile(sorted: &[Duration], p: f64) -> Duration {
    if sorted.is_empty() {
        return Duration::ZERO;
    }
    sorted[((sorted.len() - 1) as f64 * p).round() as usize]
}

/// The median of `v`.
pub fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(|a, b| a.total_cmp(b));
    v[v.len() / 2]
}

/// The median of `v`.
pub fn median_d(mut v: Vec<Duration>) -> Duration {
    v.sort();
    v[v.len() / 2]
}

fn config(dir: Option<&Path>, name: &str, ports: &[u16; 3], extra: &str) -> Config {
    let me = NAMES.iter().position(|n| *n == name).expect("a name");
    let peers: String = NAMES
        .iter()
        .enumerate()
        .filter(|(i, _)| *i != me)
        .map(|(i, n)| {
            format!(
                "[[peers]]\nname = \"{n}\"\naddr = \"127.0.0.1:{}\"\n",
                ports[i]
            )
        })
        .collect();
    Config::from_toml(
        &format!(
            "name = \"{name}\"\nlisten = \"127.0.0.1:{}\"\n{}{extra}\
             [tls]\ninsecure_dev_mode = true\n{peers}\
             [failure_detector]\nkind = \"swim\"\npreset = \"lan-fast\"\n",
            ports[me],
            dir.map_or(String::new(), |d| format!(
                "data_dir = {:?}\n",
                d.join(name).display().to_string()
            ))
        ),
        Path::new("."),
    )
    .expect("bench config")
}

/// Nodes `a`, `b`, `c` over QUIC on loopback, their stores under `dir`
/// (`extra`: TOML tables added to each config, e.g. `[storage]`), started
/// (see [`wait_up`]).
pub async fn three_nodes(dir: &Path, extra: &str) -> Vec<RunningNode> {
    let ports = three_ports();
    let mut nodes = Vec::new();
    for n in NAMES {
        nodes.push(start_one(Some(dir), n, &ports, extra).await);
    }
    nodes
}

/// Three free loopback ports, for [`start_one`].
pub fn three_ports() -> [u16; 3] {
    [free_port(), free_port(), free_port()]
}

/// Node `name` (one of [`NAMES`]) of a three-node cluster on `ports`,
/// started on the current actix system (a node per thread: one thread per
/// node, as three processes would have), its store under `dir` (`None`:
/// in memory).
pub async fn start_one(
    dir: Option<&Path>,
    name: &str,
    ports: &[u16; 3],
    extra: &str,
) -> RunningNode {
    start_node(config(dir, name, ports, extra))
        .await
        .expect("node starts")
}

/// Wait until every node of `nodes` sees the others `Up` (30 s at most).
pub async fn wait_up(nodes: &[RunningNode]) {
    let deadline = Instant::now() + Duration::from_secs(30);
    while !nodes.iter().all(|n: &RunningNode| {
        NAMES
            .iter()
            .filter(|m| **m != n.node.name())
            .all(|m| n.node.membership().status(&m.to_string()) == Some(MemberStatus::Up))
    }) {
        assert!(Instant::now() < deadline, "the bench cluster never came up");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// Appends of 100 bytes, each `sync_data`ed, for `len`: syncs per second.
pub fn raw_fsync(dir: &Path, len: Duration) -> f64 {
    let path = dir.join("raw-fsync");
    let mut f = OpenOptions::new()
        .create(true)
        .truncate(true)
        .write(true)
        .open(&path)
        .expect("raw file");
    let record = [0x2au8; 100];
    let start = Instant::now();
    let mut n = 0u64;
    while start.elapsed() < len {
        f.write_all(&record).expect("write");
        f.sync_data().expect("sync");
        n += 1;
    }
    let _ = std::fs::remove_file(&path);
    n as f64 / start.elapsed().as_secs_f64()
}
