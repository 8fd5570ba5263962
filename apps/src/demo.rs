//! `troupe demo`: a real three-node cluster over QUIC on 127.0.0.1.
//!
//! What it does, narrating each step:
//!
//! 1. makes a throwaway cluster CA and node certificates (rcgen) and one
//!    config file per node, in a temporary directory;
//! 2. starts three `troupe node` processes, plus an in-process controller
//!    node (`demo`) that talks to them like any other node;
//! 3. exchanges tells and asks between named actors on different nodes
//!    (controller -> node, node -> node, a burst of tells, one-at-a-time asks);
//! 4. kills one node with SIGKILL and shows, live, the others' failure
//!    detectors noticing (phi rising, Suspect, Down);
//! 5. restarts it and shows the others accepting the new incarnation;
//! 6. stops everything and exits 0 (non-zero if any step did not happen).

use std::collections::BTreeMap;
use std::io::{IsTerminal, Write};
use std::net::{IpAddr, Ipv4Addr};
use std::path::Path;
use std::time::{Duration, Instant};

use troupe::config::Config;
use troupe::framework::membership::MemberStatus;
use troupe::framework::transport::TransportError;
use troupe::framework::{Node, TellError};
use troupe::runtime::start_node;

use crate::cli::CliError;
use crate::local_cluster::{fast_detector_toml, seen, status, wait_up, LocalCluster};
use crate::sample::{start_status, Add, Forward, Get, COUNTER};

const NODES: [&str; 3] = ["node-1", "node-2", "node-3"];
const CONTROLLER: &str = "demo";

fn other(e: impl std::fmt::Display) -> CliError {
    CliError::Other(e.to_string())
}

fn step(n: u32, text: &str) {
    if std::io::stdout().is_terminal() {
        println!("\n\x1b[1m[{n}] {text}\x1b[0m");
    } else {
        println!("\n[{n}] {text}");
    }
}

fn fmt_seen(st: Option<MemberStatus>, phi: Option<f64>) -> String {
    let st = st.map(|s| format!("{s:?}")).unwrap_or_else(|| "?".into());
    match phi {
        Some(p) if p.is_infinite() => format!("{st:<7} phi=inf"),
        // `+ 0.0` turns a -0.0 (which `max` may keep) into 0.0: no "phi=-0.00".
        Some(p) => format!("{st:<7} phi={:5.2}", p.max(0.0) + 0.0),
        None => st,
    }
}

/// Run the demo; see the module docs.
pub fn run(keep: bool, detector: &str) -> Result<(), CliError> {
    let dir = std::env::temp_dir().join(format!("troupe-demo-{}", std::process::id()));
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
    println!("Troupe demo: a 3-node cluster over QUIC (mutual TLS) on 127.0.0.1, failure detector: {detector}, preset lan-fast");
    println!("(preset = \"lan-fast\": a killed node is Down in about 2 s; the default, \"lan\", takes about 8 s)");
    step(1, "Throwaway cluster CA, node certificates and configs");
    let exe = std::env::current_exe().map_err(other)?;
    let localhost = IpAddr::V4(Ipv4Addr::LOCALHOST);
    let mut cluster = LocalCluster::create(
        dir,
        exe,
        &NODES.map(|n| (n, localhost)),
        Some((CONTROLLER, localhost)),
        &fast_detector_toml(detector),
        "",
    )?;
    for name in NODES.iter().chain(std::iter::once(&CONTROLLER)) {
        println!(
            "    {name:<7} 127.0.0.1:{:<5}  cert {name}.pem (SAN {name}), config {name}.toml",
            cluster.port(name).unwrap_or_default()
        );
    }

    step(
        2,
        "Start three `troupe node` processes and an in-process controller node",
    );
    for name in NODES {
        let pid = cluster.spawn(name)?;
        println!("    {name} started (pid {pid})");
    }
    let system = actix_rt::System::new();
    let outcome = system.block_on(drive(&mut cluster));
    cluster.shutdown();
    outcome
}

async fn drive(cluster: &mut LocalCluster) -> Result<(), CliError> {
    let ctl = start_node(Config::from_file(cluster.config_path(CONTROLLER))?).await?;
    let node = ctl.node.clone();
    start_status(&node, Some(ctl.failure_detector.clone())).await?;
    for name in NODES {
        let s = wait_up(&node, name, Duration::from_secs(20)).await?;
        println!(
            "    {name} answers: incarnation {}, detector {}, actors {:?}",
            s.incarnation, s.detector, s.actors
        );
    }

    step(3, "Tells and asks between named actors on different nodes");
    tells_and_asks(&node).await?;

    step(4, "Membership as each node sees it");
    wait_all_up(&node).await?;

    step(
        5,
        "Kill node-3 with SIGKILL; watch node-1 and node-2 notice",
    );
    cluster.kill("node-3");
    watch_detection(&node).await?;

    step(
        6,
        "Restart node-3 (a new incarnation); the others accept it",
    );
    let pid = cluster.spawn("node-3")?;
    println!("    node-3 started again (pid {pid})");
    let s = wait_up(&node, "node-3", Duration::from_secs(20)).await?;
    println!("    node-3 answers: incarnation {}", s.incarnation);
    wait_all_up(&node).await?;

    step(7, "Stop everything");
    ctl.shutdown().await;
    println!("    done: tells, asks, failure detection and rejoin all worked over QUIC.");
    Ok(())
}

async fn tells_and_asks(node: &Node) -> Result<(), CliError> {
    let add1 = node
        .lookup::<Add>(&format!("node-1/{COUNTER}"))
        .map_err(other)?;
    let t = Instant::now();
    let v = add1.ask(Add(5)).await.map_err(other)?;
    println!(
        "    demo -> node-1/counter  ask Add(5)                 = {v}   ({:.2} ms)",
        t.elapsed().as_secs_f64() * 1e3
    );

    let fwd = node
        .lookup::<Forward>(&format!("node-1/{COUNTER}"))
        .map_err(other)?;
    let t = Instant::now();
    let v = fwd
        .ask(Forward {
            node: "node-2".into(),
            amount: 7,
        })
        .await
        .map_err(other)?
        .map_err(CliError::Other)?;
    println!(
        "    demo -> node-1/counter -> node-2/counter  Add(7)   = {v}   ({:.2} ms, actor to actor across nodes)",
        t.elapsed().as_secs_f64() * 1e3
    );

    let add3 = node
        .lookup::<Add>(&format!("node-3/{COUNTER}"))
        .map_err(other)?;
    let get3 = node
        .lookup::<Get>(&format!("node-3/{COUNTER}"))
        .map_err(other)?;
    let n = 20_000;
    let t = Instant::now();
    for _ in 0..n {
        loop {
            match add3.tell(Add(1)) {
                Ok(()) => break,
                // A full send queue is back-pressure: let the writer drain, then retry.
                Err(TellError::Transport(TransportError::QueueFull { .. })) => {
                    tokio::task::yield_now().await
                }
                Err(e) => return Err(other(e)),
            }
        }
    }
    let total = get3.ask(Get).await.map_err(other)?;
    println!(
        "    demo -> node-3/counter  {n} tells Add(1), then ask Get = {total}   ({:.0} msg/s, none lost)",
        n as f64 / t.elapsed().as_secs_f64()
    );
    if total != n {
        return Err(other(format!("node-3 counted {total} of {n} tells")));
    }

    let add2 = node
        .lookup::<Add>(&format!("node-2/{COUNTER}"))
        .map_err(other)?;
    let mut lat = Vec::new();
    for _ in 0..200 {
        let t = Instant::now();
        add2.ask(Add(1)).await.map_err(other)?;
        lat.push(t.elapsed().as_secs_f64() * 1e3);
    }
    lat.sort_by(|a, b| a.total_cmp(b));
    println!(
        "    demo -> node-2/counter  200 asks one at a time: p50 {:.2} ms, p99 {:.2} ms",
        lat[100], lat[198]
    );
    Ok(())
}

async fn watch_detection(node: &Node) -> Result<(), CliError> {
    let start = Instant::now();
    let tty = std::io::stdout().is_terminal();
    let mut last_states = String::new();
    let mut down_at: BTreeMap<&str, f64> = BTreeMap::new();
    while down_at.len() < 2 {
        if start.elapsed() > Duration::from_secs(60) {
            return Err(other("node-3 was not declared down within 60 s"));
        }
        let mut line = format!("    t={:5.1}s", start.elapsed().as_secs_f64());
        let mut states = String::new();
        for observer in ["node-1", "node-2"] {
            if let Some(s) = status(node, observer, Duration::from_millis(400)).await {
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
                    all &= st == Some(MemberStatus::Up);
                    format!(
                        "{n}: {}",
                        st.map(|s| format!("{s:?}")).unwrap_or_else(|| "?".into())
                    )
                })
                .collect();
            rows.push(format!("    {observer} sees {}", view.join(", ")));
        }
        let timed_out = start.elapsed() > Duration::from_secs(30);
        if all || timed_out {
            for r in rows {
                println!("{r}");
            }
        }
        if all {
            return Ok(());
        }
        if timed_out {
            return Err(other("the nodes did not all see each other Up within 30 s"));
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn phi_of_a_fresh_peer_prints_as_zero_not_minus_zero() {
        for p in [-0.0, -1e-12, -3.0, 0.0] {
            let s = fmt_seen(Some(MemberStatus::Up), Some(p));
            assert_eq!(s, "Up      phi= 0.00", "{p}");
        }
        assert_eq!(
            fmt_seen(Some(MemberStatus::Down), Some(f64::INFINITY)),
            "Down    phi=inf"
        );
    }
}
