//! Shared by the multi-process tests: a three-node cluster of `troupe node`
//! processes on loopback, plus a controller identity for the test itself.

use std::net::{IpAddr, Ipv4Addr};
use std::path::PathBuf;

use troupe_apps::local_cluster::{fast_detector_toml, LocalCluster};

/// The node processes' names.
pub const NODES: [&str; 3] = ["node-1", "node-2", "node-3"];

/// Certificates and configs for [`NODES`] and a controller `ctl` on
/// 127.0.0.1, in a fresh temporary directory named after `tag`, with
/// failure detector `detector` and `extra` appended to every config.
pub fn loopback_cluster(tag: &str, detector: &str, extra: &str) -> LocalCluster {
    let dir = std::env::temp_dir().join(format!("troupe-test-{tag}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    let localhost = IpAddr::V4(Ipv4Addr::LOCALHOST);
    LocalCluster::create(
        &dir,
        PathBuf::from(env!("CARGO_BIN_EXE_troupe")),
        &NODES.map(|n| (n, localhost)),
        Some(("ctl", localhost)),
        &fast_detector_toml(detector),
        extra,
    )
    .expect("cluster files")
}
