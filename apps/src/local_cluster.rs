//! A cluster of real `troupe node` processes on one machine, for the demo
//! and the multi-process tests.
//!
//! [`LocalCluster::create`] makes a cluster CA, a certificate per node and a
//! config file per node (every node lists every other as a peer, listening on
//! a free UDP port of `bind_ip`), in a directory. Nodes are then started,
//! killed (SIGKILL) and stopped (SIGTERM, a graceful leave) one by one. One
//! name can be a *controller*: it gets a certificate and a config but no
//! process, so a test or the demo can run it in-process with
//! [`troupe::runtime::start_node`] and talk to the others like any node.
//!
//! Dropping the cluster kills every process it started.

use std::collections::BTreeMap;
use std::net::{IpAddr, SocketAddr};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use troupe::framework::membership::MemberStatus;
use troupe::framework::{Node, RemoteMessage, RetryPolicy, TreeNode};

use crate::cli::CliError;
use crate::sample::{GetStatus, GetTree, NodeStatus, STATUS};

fn other(e: impl std::fmt::Display) -> CliError {
    CliError::Other(e.to_string())
}

/// Fast failure-detector settings, the `lan-fast` preset (a dead node is
/// `Down` about 2 s after the kill; the defaults, `lan`, take about 8 s),
/// as the body of a `[failure_detector]` table.
pub fn fast_detector_toml(kind: &str) -> String {
    format!("kind = \"{kind}\"\npreset = \"lan-fast\"\n")
}

/// Node processes, their configs and certificates in one directory.
pub struct LocalCluster {
    dir: PathBuf,
    exe: PathBuf,
    ports: BTreeMap<String, u16>,
    children: BTreeMap<String, Child>,
}

impl LocalCluster {
    /// Create certificates and configs in `dir` for `nodes` and `controller`,
    /// each listening on its own address, with `detector` (`[failure_detector]`
    /// body) and `extra` appended to every config. `exe` is the `troupe`
    /// binary that runs the nodes. A node whose address is local here gets a
    /// free UDP port; one on another host (a network namespace) gets 7400.
    pub fn create(
        dir: &Path,
        exe: PathBuf,
        nodes: &[(&str, IpAddr)],
        controller: Option<(&str, IpAddr)>,
        detector: &str,
        extra: &str,
    ) -> Result<Self, CliError> {
        Self::create_with(dir, exe, nodes, controller, detector, &|_| {
            (String::new(), extra.to_string())
        })
    }

    /// [`Self::create`] with per-node additions: `extras(name)` gives the
    /// lines to add at the top level of `name`'s config (such as
    /// `data_dir = "..."`) and the tables to append (such as `[http]`).
    pub fn create_with(
        dir: &Path,
        exe: PathBuf,
        nodes: &[(&str, IpAddr)],
        controller: Option<(&str, IpAddr)>,
        detector: &str,
        extras: &dyn Fn(&str) -> (String, String),
    ) -> Result<Self, CliError> {
        std::fs::create_dir_all(dir).map_err(other)?;
        troupe::transports::certs::init(dir).map_err(|e| CliError::Certs(e.to_string()))?;
        let all: Vec<(&str, IpAddr)> = nodes.iter().copied().chain(controller).collect();
        let mut ports = BTreeMap::new();
        let mut addrs = BTreeMap::new();
        for (name, ip) in &all {
            troupe::transports::certs::issue(dir, name)
                .map_err(|e| CliError::Certs(e.to_string()))?;
            let port = troupe::transports::ports::unused_udp_port(*ip).unwrap_or(7400);
            ports.insert(name.to_string(), port);
            addrs.insert(name.to_string(), SocketAddr::new(*ip, port));
        }
        let cluster = Self {
            dir: dir.to_path_buf(),
            exe,
            ports,
            children: BTreeMap::new(),
        };
        for (name, _) in &all {
            let (top_level, tables) = extras(name);
            let mut text = format!(
                "name = \"{name}\"\nlisten = \"{}\"\n{top_level}\n[tls]\nca = \"ca.pem\"\ncert = \"{name}.pem\"\nkey = \"{name}.key\"\n\n",
                addrs[*name]
            );
            for (peer, _) in &all {
                if peer != name {
                    text.push_str(&format!(
                        "[[peers]]\nname = \"{peer}\"\naddr = \"{}\"\n\n",
                        addrs[*peer]
                    ));
                }
            }
            text.push_str("[failure_detector]\n");
            text.push_str(detector);
            text.push('\n');
            text.push_str(&tables);
            std::fs::write(cluster.config_path(name), text).map_err(other)?;
        }
        Ok(cluster)
    }

    /// The working directory.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// The UDP port of `name`.
    pub fn port(&self, name: &str) -> Option<u16> {
        self.ports.get(name).copied()
    }

    /// The config file of `name`.
    pub fn config_path(&self, name: &str) -> PathBuf {
        self.dir.join(format!("{name}.toml"))
    }

    /// The log file of `name`'s process.
    pub fn log_path(&self, name: &str) -> PathBuf {
        self.dir.join(format!("{name}.log"))
    }

    /// Start `name`'s process (`troupe node --config ...`); returns its pid.
    pub fn spawn(&mut self, name: &str) -> Result<u32, CliError> {
        self.spawn_wrapped(name, &[])
    }

    /// Start `name`'s process under a wrapper command, e.g.
    /// `["ip", "netns", "exec", "host1"]` to run it on another test host.
    pub fn spawn_wrapped(&mut self, name: &str, wrapper: &[&str]) -> Result<u32, CliError> {
        let mut cmd = match wrapper.split_first() {
            Some((first, rest)) => {
                let mut c = Command::new(first);
                c.args(rest);
                c
            }
            None => Command::new(&self.exe),
        };
        if !wrapper.is_empty() {
            cmd.arg(&self.exe);
        }
        let child = node_command(cmd, &self.config_path(name), &self.log_path(name))?
            .spawn()
            .map_err(|e| {
                other(format!(
                    "cannot start {name} with {}: {e}",
                    self.exe.display()
                ))
            })?;
        let pid = child.id();
        self.children.insert(name.to_string(), child);
        Ok(pid)
    }

    /// SIGKILL `name`'s process and reap it.
    pub fn kill(&mut self, name: &str) {
        if let Some(mut c) = self.children.remove(name) {
            let _ = c.kill();
            let _ = c.wait();
        }
    }

    /// SIGTERM `name`'s process (it leaves the group), wait up to 3 s, then SIGKILL.
    pub fn terminate(&mut self, name: &str) {
        if let Some(mut c) = self.children.remove(name) {
            #[cfg(unix)]
            {
                let _ = Command::new("kill")
                    .arg("-TERM")
                    .arg(c.id().to_string())
                    .status();
                for _ in 0..30 {
                    if let Ok(Some(_)) = c.try_wait() {
                        return;
                    }
                    std::thread::sleep(Duration::from_millis(100));
                }
            }
            let _ = c.kill();
            let _ = c.wait();
        }
    }

    /// How `name`'s process ended, once it has (reaping it); `None` while it
    /// runs or if it was never started.
    pub fn exit_status(&mut self, name: &str) -> Option<std::process::ExitStatus> {
        let status = self.children.get_mut(name)?.try_wait().ok().flatten()?;
        self.children.remove(name);
        Some(status)
    }

    /// True while `name`'s process runs.
    pub fn is_running(&mut self, name: &str) -> bool {
        self.children
            .get_mut(name)
            .is_some_and(|c| matches!(c.try_wait(), Ok(None)))
    }

    /// Stop every process (SIGTERM, then SIGKILL).
    pub fn shutdown(&mut self) {
        let names: Vec<String> = self.children.keys().cloned().collect();
        for n in names {
            self.terminate(&n);
        }
    }
}

impl Drop for LocalCluster {
    fn drop(&mut self) {
        let names: Vec<String> = self.children.keys().cloned().collect();
        for n in names {
            self.kill(&n);
        }
    }
}

/// `cmd` (the `troupe` binary, or a wrapper naming it last) completed to
/// run `troupe node --config CONFIG` with its output appended to `log`,
/// stdin closed, and `RUST_LOG` as set here (default `info`).
pub fn node_command(mut cmd: Command, config: &Path, log: &Path) -> Result<Command, CliError> {
    let out = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(log)
        .map_err(|e| other(format!("cannot open {}: {e}", log.display())))?;
    let err = out.try_clone().map_err(other)?;
    cmd.arg("node")
        .arg("--config")
        .arg(config)
        .env(
            "RUST_LOG",
            std::env::var("RUST_LOG").unwrap_or_else(|_| "info".into()),
        )
        .stdin(Stdio::null())
        .stdout(out)
        .stderr(err);
    Ok(cmd)
}

/// Ask `of`'s status app `msg`, once, within `timeout`.
async fn ask_status_app<M: RemoteMessage>(
    ctl: &Node,
    of: &str,
    msg: M,
    timeout: Duration,
) -> Option<M::Reply> {
    let r = ctl.lookup::<M>(&format!("{of}/{STATUS}")).ok()?;
    r.ask(msg)
        .timeout(timeout)
        .retry(RetryPolicy::none())
        .await
        .ok()
}

/// Ask `of`'s status app, once, within `timeout`.
pub async fn status(ctl: &Node, of: &str, timeout: Duration) -> Option<NodeStatus> {
    ask_status_app(ctl, of, GetStatus, timeout).await
}

/// Ask `of`'s status app for its node's supervision tree, once, within
/// `timeout`.
pub async fn tree(ctl: &Node, of: &str, timeout: Duration) -> Option<TreeNode> {
    ask_status_app(ctl, of, GetTree, timeout).await?.ok()
}

/// Wait until `of`'s status app answers.
pub async fn wait_up(ctl: &Node, of: &str, deadline: Duration) -> Result<NodeStatus, CliError> {
    let start = Instant::now();
    while start.elapsed() < deadline {
        if let Some(s) = status(ctl, of, Duration::from_millis(500)).await {
            return Ok(s);
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    Err(other(format!("{of} did not answer within {deadline:?}")))
}

/// How `s` sees member `of`: its status and (phi-accrual) phi.
pub fn seen(s: &NodeStatus, of: &str) -> (Option<MemberStatus>, Option<f64>) {
    let st = s.members.iter().find(|(n, _)| n == of).map(|(_, v)| *v);
    let phi = s.phis.iter().find(|(n, _)| n == of).map(|(_, v)| *v);
    (st, phi)
}

/// Wait until `observer` reports `of` with status `want`.
pub async fn wait_seen(
    ctl: &Node,
    observer: &str,
    of: &str,
    want: MemberStatus,
    deadline: Duration,
) -> Result<Duration, CliError> {
    let start = Instant::now();
    loop {
        if let Some(s) = status(ctl, observer, Duration::from_millis(500)).await {
            if seen(&s, of).0 == Some(want) {
                return Ok(start.elapsed());
            }
        }
        if start.elapsed() > deadline {
            return Err(other(format!(
                "{observer} did not see {of} {want:?} within {deadline:?}"
            )));
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}
