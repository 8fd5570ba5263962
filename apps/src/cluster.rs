//! `troupe cluster`: a local cluster of `troupe node` processes for
//! development, tests and the README, driven from the shell.
//!
//! ```text
//! troupe cluster up --nodes 3 --apps counter --dir DIR [--detector swim]
//! troupe cluster kill  --dir DIR NODE     SIGKILL
//! troupe cluster stop  --dir DIR NODE     SIGTERM (the node leaves its group), SIGKILL after 10 s
//! troupe cluster start --dir DIR NODE     again, as a new incarnation, same data directory
//! troupe cluster down  --dir DIR [--clean]
//! ```
//!
//! `up` makes a cluster CA and node certificates, one config per node
//! (`node-1` ... `node-N`, QUIC and HTTP on free ports of 127.0.0.1, the
//! `lan-fast` failure-detector preset ([`fast_detector_toml`]), `data_dir` under
//! `DIR/data/`), starts the nodes in the background (their own process
//! group, so they outlive the command and a Ctrl-C of the terminal; output
//! to `DIR/NODE.log`), and waits until every node's `/v1/status` shows
//! every other node `Up`. It writes `DIR/cluster.json` as soon as the
//! processes exist, so that `down` finds them even if the wait fails (the
//! nodes are then stopped and the error names the node that was not
//! ready):
//!
//! ```json
//! {"nodes":[{"name":"node-1","pid":4242,"quic":"127.0.0.1:21000",
//!            "http":"http://127.0.0.1:21001","config":"DIR/node-1.toml","log":"DIR/node-1.log"}]}
//! ```
//!
//! A process counts as running while its pid is alive, not a zombie, and
//! still runs its node's config (so a reused pid is never signalled).
//! `down` stops every node (SIGTERM, then SIGKILL after 10 s) and keeps
//! DIR (configs, certificates, logs, data) unless `--clean`.

use std::net::{IpAddr, Ipv4Addr};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use clap::Subcommand;
use serde::{Deserialize, Serialize};
use troupe::framework::membership::MemberStatus;

use crate::cli::CliError;
use crate::http_client::NodeClient;
use crate::local_cluster::{fast_detector_toml, node_command, LocalCluster};

/// The file `up` writes and the other commands read.
pub const CLUSTER_FILE: &str = "cluster.json";

/// How long `stop` and `down` wait after SIGTERM before SIGKILL.
const GRACE: Duration = Duration::from_secs(10);

/// `troupe cluster ...`
#[derive(Debug, Subcommand)]
pub enum ClusterAction {
    /// Create and start a cluster in DIR; wait until every node sees every
    /// other Up; write DIR/cluster.json.
    Up {
        /// How many nodes (node-1 ... node-N).
        #[arg(long, default_value_t = 3, value_parser = clap::value_parser!(u16).range(1..=32))]
        nodes: u16,
        /// Apps every node runs, comma-separated: status, counter, election,
        /// lock, crashtest, bank, chat.
        #[arg(long, value_delimiter = ',', default_value = "counter")]
        apps: Vec<String>,
        /// Directory for certificates, configs, logs, data and cluster.json
        /// (created; must not hold a cluster already).
        #[arg(long)]
        dir: PathBuf,
        /// Failure detector of the nodes (with `preset = "lan-fast"`: a
        /// dead node is Down about 2 s after the kill).
        #[arg(long, default_value = "phi-accrual", value_parser = ["heartbeat", "phi-accrual", "swim"])]
        detector: String,
        /// Seconds to wait for every node to see every other Up.
        #[arg(long, default_value_t = 60)]
        timeout: u64,
    },
    /// SIGKILL one node.
    Kill {
        /// The cluster's directory.
        #[arg(long)]
        dir: PathBuf,
        /// The node's name, e.g. node-2.
        node: String,
    },
    /// Stop one node gracefully (SIGTERM: it leaves its group), SIGKILL
    /// after 10 s.
    Stop {
        /// The cluster's directory.
        #[arg(long)]
        dir: PathBuf,
        /// The node's name, e.g. node-2.
        node: String,
    },
    /// Start a node that is not running, as a new incarnation with the same
    /// config and data directory; wait until its endpoint answers.
    Start {
        /// The cluster's directory.
        #[arg(long)]
        dir: PathBuf,
        /// The node's name, e.g. node-2.
        node: String,
        /// Seconds to wait for its endpoint.
        #[arg(long, default_value_t = 30)]
        timeout: u64,
    },
    /// Stop every node (SIGTERM, then SIGKILL after 10 s). DIR stays unless
    /// --clean.
    Down {
        /// The cluster's directory.
        #[arg(long)]
        dir: PathBuf,
        /// Remove DIR afterwards.
        #[arg(long)]
        clean: bool,
    },
}

/// `DIR/cluster.json`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ClusterFile {
    /// The nodes, in name order.
    pub nodes: Vec<ClusterNode>,
}

/// One node of `cluster.json`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ClusterNode {
    /// Its name.
    pub name: String,
    /// The pid of its process (the last one started).
    pub pid: u32,
    /// Its QUIC (UDP) address.
    pub quic: String,
    /// Its HTTP endpoint, `http://127.0.0.1:PORT`.
    pub http: String,
    /// Its config file.
    pub config: PathBuf,
    /// Its log file (appended to by every start).
    pub log: PathBuf,
}

fn other(msg: impl Into<String>) -> CliError {
    CliError::Other(msg.into())
}

/// Run a `troupe cluster` command.
pub fn run(action: ClusterAction) -> Result<(), CliError> {
    match action {
        ClusterAction::Up {
            nodes,
            apps,
            dir,
            detector,
            timeout,
        } => up(&dir, nodes, &apps, &detector, Duration::from_secs(timeout)),
        ClusterAction::Kill { dir, node } => {
            let n = find_running(&dir, &node)?;
            signal(n.pid, libc::SIGKILL);
            if !wait_gone(&n, Duration::from_secs(10)) {
                return Err(other(format!(
                    "{node} (pid {}) survived SIGKILL for 10 s",
                    n.pid
                )));
            }
            println!("{node} killed (SIGKILL, pid {})", n.pid);
            Ok(())
        }
        ClusterAction::Stop { dir, node } => {
            let n = find_running(&dir, &node)?;
            println!("{}", stop_all(&[n])?);
            Ok(())
        }
        ClusterAction::Start { dir, node, timeout } => {
            start(&dir, &node, Duration::from_secs(timeout))
        }
        ClusterAction::Down { dir, clean } => {
            let file = read_file(&dir)?;
            let live: Vec<ClusterNode> = file.nodes.into_iter().filter(running).collect();
            if live.is_empty() {
                println!("no node of {} is running", dir.display());
            } else {
                println!("{}", stop_all(&live)?);
            }
            if clean {
                std::fs::remove_dir_all(&dir)
                    .map_err(|e| other(format!("cannot remove {}: {e}", dir.display())))?;
                println!("removed {}", dir.display());
            } else {
                println!("kept {} (configs, certificates, logs, data)", dir.display());
            }
            Ok(())
        }
    }
}

/// The apps part of every generated node config: one `[apps.NAME]` table
/// per app of `--apps` (with sample settings where the kind needs some),
/// and `enabled = false` for the apps a node starts by default but
/// `--apps` leaves out. Names are the sample kinds (`crate::sample::registry`).
fn apps_toml(apps: &[String]) -> Result<String, CliError> {
    let registry = crate::sample::registry();
    let known = registry.kinds();
    if let Some(bad) = apps.iter().find(|a| !known.contains(&a.as_str())) {
        return Err(other(format!(
            "--apps: unknown app {bad:?} (known: {})",
            known.join(", ")
        )));
    }
    let mut toml = String::new();
    for kind in registry.defaults() {
        if !apps.iter().any(|a| a == kind) {
            toml.push_str(&format!("[apps.{kind}]\nenabled = false\n\n"));
        }
    }
    for app in apps {
        toml.push_str(&format!("[apps.{app}]\n"));
        match app.as_str() {
            "election" => toml.push_str("algorithm = \"bully\"\n"),
            "lock" => toml.push_str("resource = \"ledger\"\nalgorithm = \"ricart-agrawala\"\n"),
            _ => {}
        }
        toml.push('\n');
    }
    Ok(toml)
}

fn up(
    dir: &Path,
    nodes: u16,
    apps: &[String],
    detector: &str,
    timeout: Duration,
) -> Result<(), CliError> {
    let apps = apps_toml(apps)?;
    for file in [CLUSTER_FILE, "ca.key"] {
        if dir.join(file).exists() {
            return Err(other(format!(
                "{} already holds a cluster ({file}): `troupe cluster start --dir {dir} NODE` \
                 restarts its nodes, `troupe cluster down --dir {dir} --clean` removes it, or \
                 pick another --dir",
                dir.display(),
                dir = dir.display()
            )));
        }
    }
    let localhost = IpAddr::V4(Ipv4Addr::LOCALHOST);
    let names: Vec<String> = (1..=nodes).map(|i| format!("node-{i}")).collect();
    let mut http = std::collections::BTreeMap::new();
    for name in &names {
        let port = troupe::transports::ports::unused_tcp_port(localhost)
            .ok_or_else(|| other("no free TCP port on 127.0.0.1"))?;
        http.insert(name.clone(), format!("127.0.0.1:{port}"));
    }
    let exe = std::env::current_exe().map_err(|e| other(format!("cannot find troupe: {e}")))?;
    let layout: Vec<(&str, IpAddr)> = names.iter().map(|n| (n.as_str(), localhost)).collect();
    let cluster = LocalCluster::create_with(
        dir,
        exe,
        &layout,
        None,
        &fast_detector_toml(detector),
        &|name| {
            (
                format!("data_dir = \"data/{name}\"\n"),
                format!("\n{apps}\n[http]\nlisten = \"{}\"\n", http[name]),
            )
        },
    )?;
    // Absolute paths in cluster.json: scripts run from anywhere.
    let dir = dir
        .canonicalize()
        .map_err(|e| other(format!("{}: {e}", dir.display())))?;
    let mut file = ClusterFile { nodes: Vec::new() };
    for name in &names {
        let node = ClusterNode {
            name: name.clone(),
            pid: 0,
            quic: format!("127.0.0.1:{}", cluster.port(name).unwrap_or_default()),
            http: format!("http://{}", http[name]),
            config: dir.join(format!("{name}.toml")),
            log: dir.join(format!("{name}.log")),
        };
        let pid = spawn_detached(&node)?;
        file.nodes.push(ClusterNode { pid, ..node });
        write_file(&dir, &file)?;
    }
    if let Err(e) = wait_ready(&file, timeout) {
        let _ = stop_all(&file.nodes);
        return Err(other(format!(
            "{e}; the nodes were stopped, their logs are in {}",
            dir.display()
        )));
    }
    println!(
        "cluster up in {} ({} nodes, detector {detector}):",
        dir.display(),
        names.len()
    );
    for n in &file.nodes {
        println!(
            "  {:<8} pid {:<7} quic {:<16} http {}",
            n.name, n.pid, n.quic, n.http
        );
    }
    if let Some(n) = file.nodes.first() {
        println!(
            "try: troupe status --node {url}   curl {url}/v1/status\n\
             then: troupe cluster kill --dir {d} {name}   troupe cluster down --dir {d}",
            url = n.http,
            d = dir.display(),
            name = file.nodes.last().map_or("node-1", |l| l.name.as_str())
        );
    }
    Ok(())
}

fn start(dir: &Path, name: &str, timeout: Duration) -> Result<(), CliError> {
    let (mut file, n) = find(dir, name)?;
    if running(&n) {
        return Err(other(format!("{name} is running already (pid {})", n.pid)));
    }
    let pid = spawn_detached(&n)?;
    for m in file.nodes.iter_mut().filter(|m| m.name == name) {
        m.pid = pid;
    }
    write_file(dir, &file)?;
    let client = client(&n)?;
    let started = Instant::now();
    loop {
        if let Ok(s) = client.status() {
            println!(
                "{name} started (pid {pid}), incarnation {}, http {}",
                s.incarnation, n.http
            );
            return Ok(());
        }
        let n = ClusterNode { pid, ..n.clone() };
        if !running(&n) {
            return Err(other(format!(
                "{name} (pid {pid}) exited during start-up ({}): see {}",
                gone(pid),
                n.log.display()
            )));
        }
        if started.elapsed() > timeout {
            return Err(other(format!(
                "{name} (pid {pid}) runs but its endpoint {} did not answer within {timeout:?}: see {}",
                n.http,
                n.log.display()
            )));
        }
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// Start `n`'s process in its own process group, not waited for.
fn spawn_detached(n: &ClusterNode) -> Result<u32, CliError> {
    use std::os::unix::process::CommandExt;
    let exe = std::env::current_exe().map_err(|e| other(format!("cannot find troupe: {e}")))?;
    let mut cmd = node_command(Command::new(exe), &n.config, &n.log)?;
    cmd.process_group(0);
    let child = cmd
        .spawn()
        .map_err(|e| other(format!("cannot start {}: {e}", n.name)))?;
    // Not waited for: it outlives this command (init reaps it later).
    Ok(child.id())
}

fn client(n: &ClusterNode) -> Result<NodeClient, CliError> {
    NodeClient::new(&n.http, None, Duration::from_secs(2))
}

/// Why `n` is not ready (it does not see every other node Up, heard
/// from), or `None`.
fn not_ready(n: &ClusterNode, all: &[ClusterNode]) -> Option<String> {
    if !running(n) {
        return Some(format!(
            "{} (pid {}) exited ({}): see {}",
            n.name,
            n.pid,
            gone(n.pid),
            n.log.display()
        ));
    }
    let s = match client(n).and_then(|c| c.status()) {
        Ok(s) => s,
        Err(e) => return Some(format!("{}: {e}", n.name)),
    };
    // Up: heard from (a configured peer is Joining until then), with the
    // incarnation it was heard from.
    let behind: Vec<String> = all
        .iter()
        .filter(|o| o.name != n.name)
        .filter_map(|o| match s.members.iter().find(|m| m.name == o.name) {
            Some(m) if m.status == MemberStatus::Up && m.incarnation.is_some() => None,
            Some(m) if matches!(m.status, MemberStatus::Up | MemberStatus::Joining) => {
                Some(format!("{} not yet heard from", o.name))
            }
            Some(m) => Some(format!("{} {:?}", o.name, m.status)),
            None => Some(format!("{} unknown", o.name)),
        })
        .collect();
    (!behind.is_empty()).then(|| format!("{} sees {}", n.name, behind.join(", ")))
}

fn wait_ready(file: &ClusterFile, timeout: Duration) -> Result<(), CliError> {
    let started = Instant::now();
    loop {
        let reasons: Vec<String> = file
            .nodes
            .iter()
            .filter_map(|n| not_ready(n, &file.nodes))
            .collect();
        if reasons.is_empty() {
            return Ok(());
        }
        if let Some(dead) = reasons.iter().find(|r| r.contains(" exited: ")) {
            return Err(other(dead.clone()));
        }
        if started.elapsed() > timeout {
            return Err(other(format!(
                "the cluster is not ready after {timeout:?}: {}",
                reasons.join("; ")
            )));
        }
        std::thread::sleep(Duration::from_millis(200));
    }
}

/// SIGTERM every node of `nodes`, SIGKILL those still running after
/// [`GRACE`]; says what happened to each.
fn stop_all(nodes: &[ClusterNode]) -> Result<String, CliError> {
    for n in nodes {
        signal(n.pid, libc::SIGTERM);
    }
    let deadline = Instant::now() + GRACE;
    let mut said = Vec::new();
    for n in nodes {
        let left = deadline.saturating_duration_since(Instant::now());
        if wait_gone(n, left) {
            said.push(format!("{} stopped (pid {})", n.name, n.pid));
            continue;
        }
        signal(n.pid, libc::SIGKILL);
        if !wait_gone(n, Duration::from_secs(10)) {
            return Err(other(format!(
                "{} (pid {}) survived SIGKILL for 10 s",
                n.name, n.pid
            )));
        }
        said.push(format!(
            "{} killed (pid {}): still running {GRACE:?} after SIGTERM",
            n.name, n.pid
        ));
    }
    Ok(said.join("\n"))
}

fn signal(pid: u32, sig: libc::c_int) {
    if let Ok(pid) = libc::pid_t::try_from(pid) {
        if pid > 0 {
            // SAFETY: kill(2) takes plain integers and touches no memory of ours.
            unsafe {
                libc::kill(pid, sig);
            }
        }
    }
}

fn wait_gone(n: &ClusterNode, within: Duration) -> bool {
    let started = Instant::now();
    while running(n) {
        if started.elapsed() >= within {
            return false;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    true
}

/// What `/proc` says of a process [`running`] found gone: no such process,
/// a zombie (with its exit status unknown to us), or another command line
/// (the pid was reused). For error messages.
fn gone(pid: u32) -> String {
    let proc_dir = PathBuf::from(format!("/proc/{pid}"));
    let Ok(stat) = std::fs::read_to_string(proc_dir.join("stat")) else {
        return "no such process".into();
    };
    let state = stat
        .rsplit_once(')')
        .and_then(|(_, rest)| rest.trim_start().chars().next())
        .unwrap_or('?');
    let cmdline = std::fs::read(proc_dir.join("cmdline"))
        .map(|c| String::from_utf8_lossy(&c).replace('\0', " "))
        .unwrap_or_default();
    format!("state {state}, command line {:?}", cmdline.trim())
}

/// True while `n.pid` is alive, not a zombie, and runs `n`'s config.
pub fn running(n: &ClusterNode) -> bool {
    let proc_dir = PathBuf::from(format!("/proc/{}", n.pid));
    let Ok(stat) = std::fs::read_to_string(proc_dir.join("stat")) else {
        return false;
    };
    // The state follows the command name, which is in parentheses.
    let state = stat
        .rsplit_once(')')
        .and_then(|(_, rest)| rest.trim_start().chars().next());
    if matches!(state, Some('Z') | Some('X') | None) {
        return false;
    }
    let Ok(cmdline) = std::fs::read(proc_dir.join("cmdline")) else {
        return false;
    };
    let config = n.config.as_os_str().as_encoded_bytes();
    cmdline.split(|b| *b == 0).any(|arg| arg == config)
}

/// Read `DIR/cluster.json`.
pub fn read_file(dir: &Path) -> Result<ClusterFile, CliError> {
    let path = dir.join(CLUSTER_FILE);
    let text = std::fs::read_to_string(&path).map_err(|e| {
        other(format!(
            "no cluster in {} ({}: {e}): start one with `troupe cluster up --dir {}`",
            dir.display(),
            path.display(),
            dir.display()
        ))
    })?;
    serde_json::from_str(&text).map_err(|e| other(format!("{}: {e}", path.display())))
}

fn write_file(dir: &Path, file: &ClusterFile) -> Result<(), CliError> {
    let path = dir.join(CLUSTER_FILE);
    let tmp = dir.join(format!("{CLUSTER_FILE}.tmp"));
    let text = serde_json::to_string_pretty(file).map_err(|e| other(e.to_string()))?;
    std::fs::write(&tmp, text + "\n")
        .and_then(|()| std::fs::rename(&tmp, &path))
        .map_err(|e| other(format!("cannot write {}: {e}", path.display())))
}

/// Node `name` of the cluster in `dir`, if its process runs.
fn find_running(dir: &Path, name: &str) -> Result<ClusterNode, CliError> {
    let (_, n) = find(dir, name)?;
    if !running(&n) {
        return Err(other(format!(
            "{name} is not running (pid {} is gone)",
            n.pid
        )));
    }
    Ok(n)
}

/// The cluster file and its node `name`, or an error listing the names.
fn find(dir: &Path, name: &str) -> Result<(ClusterFile, ClusterNode), CliError> {
    let file = read_file(dir)?;
    match file.nodes.iter().find(|n| n.name == name) {
        Some(n) => {
            let n = n.clone();
            Ok((file, n))
        }
        None => Err(other(format!(
            "no node {name:?} in {}: its nodes are {}",
            dir.join(CLUSTER_FILE).display(),
            file.nodes
                .iter()
                .map(|n| n.name.as_str())
                .collect::<Vec<_>>()
                .join(", ")
        ))),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn apps_become_app_tables_and_unknown_ones_are_refused() {
        let apps = |a: &[&str]| apps_toml(&a.iter().map(|s| s.to_string()).collect::<Vec<_>>());
        let planned = |t: &str| {
            let parsed: toml::Table = t.parse().expect("toml");
            let empty = toml::Table::new();
            let table = parsed
                .get("apps")
                .and_then(|a| a.as_table())
                .unwrap_or(&empty);
            let cluster = troupe::app::ClusterInfo {
                node: "node-1".into(),
                peers: vec!["node-2".into()],
            };
            crate::sample::registry()
                .plan(table, &cluster)
                .expect("a valid [apps] table")
                .names()
                .into_iter()
                .map(String::from)
                .collect::<Vec<_>>()
        };
        let t = apps(&["counter"]).expect("known");
        assert_eq!(planned(&t), vec!["counter"], "{t}");
        let t = apps(&["status", "election", "lock"]).expect("known");
        // Tables start in the order of their names.
        assert_eq!(planned(&t), vec!["election", "lock", "status"], "{t}");
        let err = apps(&["counter", "ledger"]).unwrap_err().to_string();
        assert!(
            err.contains("\"ledger\"") && err.contains("counter"),
            "{err}"
        );
    }

    #[test]
    fn a_pid_that_runs_something_else_is_not_the_node() {
        let me = ClusterNode {
            name: "node-1".into(),
            pid: std::process::id(),
            quic: String::new(),
            http: String::new(),
            config: PathBuf::from("/nonexistent/node-1.toml"),
            log: PathBuf::new(),
        };
        assert!(!running(&me), "this test process does not run node-1.toml");
        let exe = std::env::args().next().expect("argv[0]");
        assert!(running(&ClusterNode {
            config: PathBuf::from(exe),
            ..me
        }));
    }
}
