//! `troupe demo`: a real three-node cluster over QUIC on 127.0.0.1.
//!
//! What it does, narrating each step:
//!
//! 1. makes a throwaway cluster CA and node certificates (rcgen) and one
//!    config file per node, in a temporary directory;
//! 2. starts three `troupe node` processes, plus an in-process controller
//!    node (`demo`) that talks to them like any other node;
//! 3. exchanges tells and asks between named actors on different nodes
//!    (controller -> node, node -> node, a burst of tells, pipelined asks);
//! 4. kills one node with SIGKILL and shows, live, the others' failure
//!    detectors noticing (phi rising, Suspect, Down);
//! 5. restarts it and shows the others accepting the new incarnation;
//! 6. stops everything and exits 0 (non-zero if any step did not happen).

use std::collections::BTreeMap;
use std::io::Write;
use std::net::UdpSocket;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use troupe::config::Config;
use troupe::framework::membership::MemberStatus;
use troupe::framework::Node;
use troupe::runtime::start_node;

use crate::cli::CliError;
use crate::sample::{
    start_apps, Add, AppsConfig, Forward, Get, GetStatus, NodeStatus, COUNTER, STATUS,
};

const NODES: [&str; 3] = ["node-1", "node-2", "node-3"];
const CONTROLLER: &str = "demo";

fn free_port() -> Result<u16, CliError> {
    let s = UdpSocket::bind("127.0.0.1:0")
        .map_err(|e| CliError::Other(format!("no free UDP port: {e}")))?;
    s.local_addr()
        .map(|a| a.port())
        .map_err(|e| CliError::Other(e.to_string()))
}

fn detector_toml(kind: &str) -> String {
    // Fast settings so the demo notices a dead node within seconds.
    match kind {
        "heartbeat" => "kind = \"heartbeat\"\ninterval_ms = 200\nacceptable_pause_ms = 600\ngrace_ms = 1000\ncheck_interval_ms = 100\n".into(),
        "swim" => "kind = \"swim\"\nprobe_interval_ms = 300\nprobe_timeout_ms = 150\nindirect_checks = 2\nsuspicion_mult = 3\n".into(),
        _ => "kind = \"phi-accrual\"\nheartbeat_interval_ms = 200\nacceptable_heartbeat_pause_ms = 600\nmin_std_deviation_ms = 50\nfirst_heartbeat_estimate_ms = 200\nthreshold = 8.0\ngrace_ms = 1000\ncheck_interval_ms = 100\n".into(),
    }
}

struct Layout {
    dir: PathBuf,
    ports: BTreeMap<String, u16>,
}

impl Layout {
    fn config_path(&self, name: &str) -> PathBuf {
        self.dir.join(format!("{name}.toml"))
    }

    fn write_config(&self, name: &str, detector: &str) -> Result<PathBuf, CliError> {
        let mut text = format!(
            "name = \"{name}\"\nlisten = \"127.0.0.1:{}\"\n\n[tls]\nca = \"ca.pem\"\ncert = \"{name}.pem\"\nkey = \"{name}.key\"\n\n",
            self.ports[name]
        );
        for (peer, port) in &self.ports {
            if peer != name {
                text.push_str(&format!(
                    "[[peers]]\nname = \"{peer}\"\naddr = \"127.0.0.1:{port}\"\n\n"
                ));
            }
        }
        text.push_str("[failure_detector]\n");
        text.push_str(&detector_toml(detector));
        let path = self.config_path(name);
        std::fs::write(&path, text)
            .map_err(|e| CliError::Other(format!("{}: {e}", path.display())))?;
        Ok(path)
    }
}

fn spawn_node(layout: &Layout, name: &str) -> Result<Child, CliError> {
    let exe = std::env::current_exe().map_err(|e| CliError::Other(e.to_string()))?;
    let log = std::fs::File::create(layout.dir.join(format!("{name}.log")))
        .map_err(|e| CliError::Other(e.to_string()))?;
    let err = log
        .try_clone()
        .map_err(|e| CliError::Other(e.to_string()))?;
    Command::new(exe)
        .arg("node")
        .arg("--config")
        .arg(layout.config_path(name))
        .env(
            "RUST_LOG",
            std::env::var("RUST_LOG").unwrap_or_else(|_| "info".into()),
        )
        .stdin(Stdio::null())
        .stdout(log)
        .stderr(err)
        .spawn()
        .map_err(|e| CliError::Other(format!("cannot start {name}: {e}")))
}

fn step(n: u32, text: &str) {
    use std::io::IsTerminal;
    if std::io::stdout().is_terminal() {
        println!("\n\x1b[1m[{n}] {text}\x1b[0m");
    } else {
        println!("\n[{n}] {text}");
    }
}

async fn status(ctl: &Node, of: &str, timeout: Duration) -> Option<NodeStatus> {
    let r = ctl.lookup::<GetStatus>(&format!("{of}/{STATUS}")).ok()?;
    r.ask(GetStatus)
        .timeout(timeout)
        .retry(troupe::framework::RetryPolicy::none())
        .await
        .ok()
}

async fn wait_up(ctl: &Node, name: &str, deadline: Duration) -> Result<NodeStatus, CliError> {
    let start = Instant::now();
    while start.elapsed() < deadline {
        if let Some(s) = status(ctl, name, Duration::from_millis(500)).await {
            return Ok(s);
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    Err(CliError::Other(format!(
        "{name} did not come up within {deadline:?}"
    )))
}

fn seen(s: &NodeStatus, of: &str) -> (Option<MemberStatus>, Option<f64>) {
    let st = s.members.iter().find(|(n, _)| n == of).map(|(_, v)| *v);
    let phi = s.phis.iter().find(|(n, _)| n == of).map(|(_, v)| *v);
    (st, phi)
}

fn fmt_seen(st: Option<MemberStatus>, phi: Option<f64>) -> String {
    let st = st.map(|s| format!("{s:?}")).unwrap_or_else(|| "?".into());
    match phi {
        Some(p) if p.is_infinite() => format!("{st:<7} phi=inf"),
        Some(p) => format!("{st:<7} phi={:5.2}", p.max(0.0)),
        None => st,
    }
}

/// Run the demo; see the module docs.
pub fn run(keep: bool, detector: &str) -> Result<(), CliError> {
    let dir = std::env::temp_dir().join(format!("troupe-demo-{}", std::process::id()));
    std::fs::create_dir_all(&dir).map_err(|e| CliError::Other(e.to_string()))?;
    let result = run_in(&dir, detector);
    if keep || result.is_err() {
        println!(
            "\nworking directory kept: {} (configs, certificates, node logs)",
            dir.display()
        );
    } else {
        let _ = std::fs::remove_dir_all(&dir);
    }
    result
}

fn run_in(dir: &Path, detector: &str) -> Result<(), CliError> {
    println!("Troupe demo: a 3-node cluster over QUIC (mutual TLS) on 127.0.0.1, failure detector: {detector}");
    step(1, "Throwaway cluster CA, node certificates and configs");
    troupe::transports::certs::init(dir).map_err(|e| CliError::Certs(e.to_string()))?;
    let mut ports = BTreeMap::new();
    for name in NODES.iter().chain(std::iter::once(&CONTROLLER)) {
        troupe::transports::certs::issue(dir, name).map_err(|e| CliError::Certs(e.to_string()))?;
        ports.insert(name.to_string(), free_port()?);
    }
    let layout = Layout {
        dir: dir.to_path_buf(),
        ports,
    };
    for name in NODES.iter().chain(std::iter::once(&CONTROLLER)) {
        layout.write_config(name, detector)?;
        println!(
            "    {name:<7} 127.0.0.1:{:<5}  cert {name}.pem (SAN {name}), config {name}.toml",
            layout.ports[*name]
        );
    }

    step(
        2,
        "Start three `troupe node` processes and an in-process controller node",
    );
    let mut children: BTreeMap<&str, Child> = BTreeMap::new();
    for name in NODES {
        let child = spawn_node(&layout, name)?;
        println!("    {name} started (pid {})", child.id());
        children.insert(name, child);
    }
    let system = actix_rt::System::new();
    let outcome = system.block_on(async { drive(&layout, &mut children).await });
    for (name, mut child) in children {
        terminate(&mut child);
        let _ = child.wait();
        tracing::debug!(%name, "stopped");
    }
    outcome
}

fn terminate(child: &mut Child) {
    #[cfg(unix)]
    {
        // SIGTERM: the node leaves the group gracefully.
        let _ = Command::new("kill")
            .arg("-TERM")
            .arg(child.id().to_string())
            .status();
        for _ in 0..30 {
            if let Ok(Some(_)) = child.try_wait() {
                return;
            }
            std::thread::sleep(Duration::from_millis(100));
        }
    }
    let _ = child.kill();
}

async fn drive(layout: &Layout, children: &mut BTreeMap<&str, Child>) -> Result<(), CliError> {
    let config = Config::from_file(layout.config_path(CONTROLLER))?;
    let ctl = start_node(config).await?;
    let node = ctl.node.clone();
    start_apps(
        &node,
        Some(ctl.failure_detector.clone()),
        &AppsConfig {
            status: true,
            counter: false,
        },
    )
    .await?;
    for name in NODES {
        let s = wait_up(&node, name, Duration::from_secs(20)).await?;
        println!(
            "    {name} answers: incarnation {}, detector {}, actors {:?}",
            s.incarnation, s.detector, s.actors
        );
    }

    step(3, "Tells and asks between named actors on different nodes");
    let t = Instant::now();
    let add1 = node
        .lookup::<Add>(&format!("node-1/{COUNTER}"))
        .map_err(|e| CliError::Other(e.to_string()))?;
    let v = add1
        .ask(Add(5))
        .await
        .map_err(|e| CliError::Other(e.to_string()))?;
    println!(
        "    demo -> node-1/counter  ask Add(5)                 = {v}   ({:.2} ms)",
        t.elapsed().as_secs_f64() * 1e3
    );
    let fwd = node
        .lookup::<Forward>(&format!("node-1/{COUNTER}"))
        .map_err(|e| CliError::Other(e.to_string()))?;
    let t = Instant::now();
    let v = fwd
        .ask(Forward {
            node: "node-2".into(),
            amount: 7,
        })
        .await
        .map_err(|e| CliError::Other(e.to_string()))?
        .map_err(CliError::Other)?;
    println!("    demo -> node-1/counter -> node-2/counter  Add(7)   = {v}   ({:.2} ms, actor to actor across nodes)", t.elapsed().as_secs_f64() * 1e3);
    let add3 = node
        .lookup::<Add>(&format!("node-3/{COUNTER}"))
        .map_err(|e| CliError::Other(e.to_string()))?;
    let get3 = node
        .lookup::<Get>(&format!("node-3/{COUNTER}"))
        .map_err(|e| CliError::Other(e.to_string()))?;
    let n = 20_000;
    let t = Instant::now();
    for _ in 0..n {
        // A full send queue is back-pressure: let the writer drain, then retry.
        loop {
            match add3.tell(Add(1)) {
                Ok(()) => break,
                Err(troupe::framework::TellError::Transport(
                    troupe::framework::transport::TransportError::QueueFull { .. },
                )) => {
                    tokio::time::sleep(Duration::from_millis(1)).await;
                }
                Err(e) => return Err(CliError::Other(e.to_string())),
            }
        }
    }
    let total = get3
        .ask(Get)
        .await
        .map_err(|e| CliError::Other(e.to_string()))?;
    let secs = t.elapsed().as_secs_f64();
    println!(
        "    demo -> node-3/counter  {n} tells Add(1), then ask Get = {total}   ({:.0} msg/s, per-sender order kept)",
        n as f64 / secs
    );
    if total != n {
        return Err(CliError::Other(format!(
            "node-3 counted {total} of {n} tells"
        )));
    }
    let add2 = node
        .lookup::<Add>(&format!("node-2/{COUNTER}"))
        .map_err(|e| CliError::Other(e.to_string()))?;
    let mut lat = Vec::new();
    for _ in 0..200 {
        let t = Instant::now();
        add2.ask(Add(1))
            .await
            .map_err(|e| CliError::Other(e.to_string()))?;
        lat.push(t.elapsed().as_secs_f64() * 1e3);
    }
    lat.sort_by(|a, b| a.total_cmp(b));
    println!(
        "    demo -> node-2/counter  200 asks one at a time: p50 {:.2} ms, p99 {:.2} ms",
        lat[100], lat[198]
    );

    step(4, "Membership as each node sees it");
    wait_all_up(&node).await?;

    step(
        5,
        "Kill node-3 with SIGKILL; watch node-1 and node-2 notice",
    );
    if let Some(child) = children.get_mut("node-3") {
        child.kill().map_err(|e| CliError::Other(e.to_string()))?;
        let _ = child.wait();
    }
    let start = Instant::now();
    let tty = {
        use std::io::IsTerminal;
        std::io::stdout().is_terminal()
    };
    let mut last_states = String::new();
    let mut down_at: BTreeMap<&str, f64> = BTreeMap::new();
    while down_at.len() < 2 {
        if start.elapsed() > Duration::from_secs(60) {
            return Err(CliError::Other(
                "node-3 was not declared down within 60 s".into(),
            ));
        }
        let mut line = format!("    t={:5.1}s", start.elapsed().as_secs_f64());
        let mut states = String::new();
        for observer in ["node-1", "node-2"] {
            if let Some(s) = status(&node, observer, Duration::from_millis(400)).await {
                let (st, phi) = seen(&s, "node-3");
                line.push_str(&format!(
                    "   {observer} sees node-3: {:<20}",
                    fmt_seen(st, phi)
                ));
                states.push_str(&format!("{st:?}"));
                if st == Some(MemberStatus::Down) {
                    down_at
                        .entry(observer)
                        .or_insert(start.elapsed().as_secs_f64());
                }
            }
        }
        if tty {
            // A live line, redrawn in place.
            print!("\r{line}");
            let _ = std::io::stdout().flush();
        } else if states != last_states {
            // Not a terminal: one line per change of status.
            println!("{line}");
        }
        last_states = states;
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    if tty {
        println!();
    }
    for (o, t) in &down_at {
        println!("    {o} declared node-3 Down {t:.1} s after the kill");
    }

    step(
        6,
        "Restart node-3 (a new incarnation); the others accept it",
    );
    let child = spawn_node(layout, "node-3")?;
    println!("    node-3 started again (pid {})", child.id());
    children.insert("node-3", child);
    let s = wait_up(&node, "node-3", Duration::from_secs(20)).await?;
    println!("    node-3 answers: incarnation {}", s.incarnation);
    wait_all_up(&node).await?;

    step(7, "Stop everything");
    ctl.shutdown().await;
    println!("    done: tells, asks, failure detection and rejoin all worked over QUIC.");
    Ok(())
}

async fn wait_all_up(node: &Node) -> Result<(), CliError> {
    let start = Instant::now();
    loop {
        let mut all = true;
        let mut rows = Vec::new();
        for observer in NODES {
            let Some(s) = status(node, observer, Duration::from_millis(500)).await else {
                all = false;
                continue;
            };
            let view: Vec<String> = NODES
                .iter()
                .filter(|n| **n != observer)
                .map(|n| {
                    let (st, _) = seen(&s, n);
                    if st != Some(MemberStatus::Up) {
                        all = false;
                    }
                    format!(
                        "{n}: {}",
                        st.map(|s| format!("{s:?}")).unwrap_or_else(|| "?".into())
                    )
                })
                .collect();
            rows.push(format!("    {observer} sees {}", view.join(", ")));
        }
        if all {
            for r in rows {
                println!("{r}");
            }
            return Ok(());
        }
        if start.elapsed() > Duration::from_secs(30) {
            for r in rows {
                println!("{r}");
            }
            return Err(CliError::Other(
                "the nodes did not all see each other Up within 30 s".into(),
            ));
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}
