//! `examples/embedded_node.rs` runs as the README says: with certificates
//! from `troupe certs` and a node config, it serves its `greeter` to another
//! node over QUIC, and on SIGTERM it leaves the group (the other node sees
//! it `Left`, not `Down`) and exits 0.

use std::io::{BufRead, BufReader};
use std::net::{IpAddr, Ipv4Addr};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use serde::{Deserialize, Serialize};
use troupe::config::Config;
use troupe::framework::membership::MemberStatus;
use troupe::framework::remote_message;
use troupe::runtime::start_node;
use troupe::transports::{certs, ports};

/// The example's message, declared again as a client would (same wire name).
#[derive(Debug, Clone, Serialize, Deserialize)]
struct Greet {
    name: String,
}
remote_message!(Greet, "embedded.greet", String);

/// The example binary, built by `cargo test` next to the test binaries.
fn example() -> PathBuf {
    let exe = std::env::current_exe().expect("test binary");
    let dir = exe.parent().and_then(Path::parent).expect("target dir");
    let path = dir.join("examples").join("embedded_node");
    assert!(
        path.exists(),
        "{} is missing: `cargo test` builds the examples; run the suite with cargo test",
        path.display()
    );
    path
}

fn config(dir: &Path, me: &str, port: u16, peer: &str, peer_port: u16) -> PathBuf {
    let text = format!(
        "name = \"{me}\"\nlisten = \"127.0.0.1:{port}\"\n\n[tls]\nca = \"certs/ca.pem\"\ncert = \"certs/{me}.pem\"\nkey = \"certs/{me}.key\"\n\n[[peers]]\nname = \"{peer}\"\naddr = \"127.0.0.1:{peer_port}\"\n\n[failure_detector]\nkind = \"swim\"\nprobe_interval_ms = 300\nprobe_timeout_ms = 150\n"
    );
    let path = dir.join(format!("{me}.toml"));
    std::fs::write(&path, text).expect("config");
    path
}

#[test]
fn the_embedding_example_serves_its_actor_and_leaves_on_sigterm() {
    let dir = std::env::temp_dir().join(format!("troupe-embedded-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    let cert_dir = dir.join("certs");
    certs::init(&cert_dir).expect("CA");
    for n in ["app", "peer"] {
        certs::issue(&cert_dir, n).expect("node certificate");
    }
    let localhost = IpAddr::V4(Ipv4Addr::LOCALHOST);
    let (app_port, peer_port) = (
        ports::unused_udp_port(localhost).expect("port"),
        ports::unused_udp_port(localhost).expect("port"),
    );
    let app_config = config(&dir, "app", app_port, "peer", peer_port);
    let peer_config = config(&dir, "peer", peer_port, "app", app_port);

    let mut app = Command::new(example())
        .arg(&app_config)
        .env("RUST_LOG", "warn")
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .expect("run the example");
    let mut lines = BufReader::new(app.stdout.take().expect("stdout")).lines();
    let ready = lines.next().expect("a line").expect("utf-8");
    assert!(ready.starts_with("ready: app#"), "{ready}");
    assert!(ready.contains("greeter at app/greeter"), "{ready}");

    let system = actix_rt::System::new();
    system.block_on(async {
        let peer = start_node(Config::from_file(&peer_config).expect("peer config"))
            .await
            .expect("peer node");
        let greeter = peer.node.actor("app/greeter").expect("path");
        let start = Instant::now();
        let answer = loop {
            match greeter
                .ask(Greet {
                    name: "peer".into(),
                })
                .timeout(Duration::from_secs(2))
                .await
            {
                Ok(a) => break a,
                Err(e) if start.elapsed() < Duration::from_secs(20) => {
                    let _ = e;
                    tokio::time::sleep(Duration::from_millis(100)).await;
                }
                Err(e) => panic!("the example's greeter does not answer: {e}"),
            }
        };
        assert!(
            answer.starts_with("hello peer, this is app/greeter"),
            "{answer}"
        );

        // SIGTERM: the example leaves, and the peer sees it Left.
        let status = Command::new("kill")
            .args(["-TERM", &app.id().to_string()])
            .status()
            .expect("kill");
        assert!(status.success());
        let start = Instant::now();
        loop {
            let seen = peer.node.membership().status(&"app".to_string());
            if seen == Some(MemberStatus::Left) {
                break;
            }
            assert!(
                seen != Some(MemberStatus::Down) && start.elapsed() < Duration::from_secs(15),
                "the peer sees the example {seen:?}, not Left"
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        peer.shutdown().await;
    });
    let code = app.wait().expect("exit status");
    assert_eq!(
        code.code(),
        Some(0),
        "the example exits 0 after a graceful leave"
    );
    let _ = std::fs::remove_dir_all(&dir);
}
