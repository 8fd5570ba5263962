//! The typed atomic-commit API over real QUIC: three nodes started as
//! `troupe node` starts them (`start_node`, insecure dev mode, loopback,
//! each with its HTTP endpoint), a transaction held while c's manager
//! prepares — listed in doubt by `GET /v1/commit/in-doubt` at the
//! coordinator and at b, which voted yes — then committed at b and c.

use std::net::{SocketAddr, UdpSocket};
use std::path::Path;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use serde_json::Value;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::sync::watch;
use troupe::commit::{start_commit_with, CommitConfig};
use troupe::config::Config;
use troupe::http::InDoubtReport;
use troupe::prelude::*;

const NODES: [&str; 3] = ["a", "b", "c"];

#[derive(Clone)]
struct Recorder {
    calls: Arc<Mutex<Vec<String>>>,
    gate: watch::Receiver<bool>,
}

impl ResourceManager for Recorder {
    async fn prepare(&self, tx: TxId) -> Result<(), String> {
        self.calls.lock().unwrap().push(format!("prepare {tx}"));
        let _ = self.gate.clone().wait_for(|open| *open).await;
        Ok(())
    }
    async fn commit(&self, tx: TxId) {
        self.calls.lock().unwrap().push(format!("commit {tx}"));
    }
    async fn abort(&self, tx: TxId) {
        self.calls.lock().unwrap().push(format!("abort {tx}"));
    }
}

fn free_port() -> u16 {
    UdpSocket::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

fn config(name: &str, ports: &[u16; 3]) -> Config {
    let mut text = format!(
        "name = \"{name}\"\nlisten = \"127.0.0.1:{}\"\n[tls]\ninsecure_dev_mode = true\n\
         [http]\nlisten = \"127.0.0.1:0\"\n\
         [failure_detector]\nkind = \"heartbeat\"\ninterval_ms = 100\nacceptable_pause_ms = 1000\n",
        ports[NODES.iter().position(|n| *n == name).unwrap()]
    );
    for (peer, port) in NODES.iter().zip(ports) {
        if *peer != name {
            text.push_str(&format!(
                "[[peers]]\nname = \"{peer}\"\naddr = \"127.0.0.1:{port}\"\n"
            ));
        }
    }
    Config::from_toml(&text, Path::new(".")).unwrap_or_else(|e| panic!("{name}: config: {e}"))
}

/// `GET path` on a node's HTTP endpoint: (status, JSON body).
async fn get(addr: SocketAddr, path: &str) -> (u16, Value) {
    let mut s = tokio::net::TcpStream::connect(addr).await.expect("connect");
    let head = format!("GET {path} HTTP/1.1\r\nHost: test\r\nConnection: close\r\n\r\n");
    s.write_all(head.as_bytes()).await.expect("write");
    let mut raw = Vec::new();
    tokio::time::timeout(Duration::from_secs(20), s.read_to_end(&mut raw))
        .await
        .expect("an answer within 20 s")
        .expect("read");
    let text = String::from_utf8_lossy(&raw);
    let (head, body) = text.split_once("\r\n\r\n").unwrap_or((&text, ""));
    let code = head
        .split_whitespace()
        .nth(1)
        .and_then(|c| c.parse().ok())
        .unwrap_or(0);
    (code, serde_json::from_str(body).unwrap_or(Value::Null))
}

async fn in_doubt(addr: SocketAddr) -> InDoubtReport {
    let (code, body) = get(addr, "/v1/commit/in-doubt").await;
    assert_eq!(code, 200, "{body}");
    serde_json::from_value(body).expect("an InDoubtReport")
}

#[actix_rt::test]
async fn a_transaction_commits_over_quic_and_is_listed_in_doubt_over_http_meanwhile() {
    let ports = [free_port(), free_port(), free_port()];
    let members: Vec<String> = NODES.iter().map(|n| n.to_string()).collect();
    let (open, gate) = watch::channel(true);
    let mut running = Vec::new();
    let mut handles = Vec::new();
    let mut calls = Vec::new();
    for n in NODES {
        let node = start_node(config(n, &ports))
            .await
            .unwrap_or_else(|e| panic!("{n}: {e}"));
        // Only c's manager waits for the gate.
        let rm = Recorder {
            calls: Arc::default(),
            gate: if n == "c" {
                gate.clone()
            } else {
                watch::channel(true).1
            },
        };
        calls.push(rm.calls.clone());
        // Votes may take long here: c's is held on purpose.
        let config = CommitConfig {
            vote_timeout: Duration::from_secs(30),
            ..CommitConfig::default()
        };
        let h = start_commit_with(
            &node.node,
            "orders",
            CommitAlgorithm::TwoPhase,
            &members,
            config,
            rm,
        )
        .await
        .unwrap();
        handles.push(h);
        running.push(node);
    }
    for r in &running {
        let start = tokio::time::Instant::now();
        while r
            .node
            .membership()
            .iter()
            .any(|(_, s)| s != MemberStatus::Up)
        {
            assert!(start.elapsed() < Duration::from_secs(10), "not all up");
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }
    let http: Vec<SocketAddr> = running.iter().map(|r| r.http_addr().unwrap()).collect();

    // One transaction straight through.
    let tx = handles[0].begin(&members).unwrap();
    let first = tx.id();
    assert_eq!(tx.commit().await.unwrap(), Outcome::Committed);

    // Another, held while c's manager prepares (b votes at once).
    open.send_replace(false);
    let tx = handles[0]
        .begin(&["b".to_string(), "c".to_string()])
        .unwrap();
    let held = tx.id();
    let commit = actix_rt::spawn(tx.commit());
    let start = tokio::time::Instant::now();
    loop {
        let (a, b) = (in_doubt(http[0]).await, in_doubt(http[1]).await);
        let listed = |r: &InDoubtReport| r.transactions.iter().map(|t| t.tx).collect::<Vec<_>>();
        if listed(&a) == vec![held] && listed(&b) == vec![held] {
            assert_eq!(a.node, "a");
            assert!(a.transactions[0].coordinator);
            assert!(!b.transactions[0].coordinator);
            assert_eq!(b.transactions[0].phase, troupe::commit::Phase::Ready);
            break;
        }
        assert!(
            start.elapsed() < Duration::from_secs(5),
            "not listed in doubt: a {a:?}, b {b:?}"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    open.send_replace(true);
    assert_eq!(commit.await.unwrap().unwrap(), Outcome::Committed);

    // Each manager saw each transaction prepared, then committed (the
    // two transactions' calls may interleave: a decision reaches the
    // participants after the coordinator's `commit()` returned).
    let per_tx = |i: usize, tx: TxId| -> Vec<String> {
        let suffix = format!(" {tx}");
        calls[i]
            .lock()
            .unwrap()
            .iter()
            .filter(|c| c.ends_with(&suffix))
            .cloned()
            .collect()
    };
    let start = tokio::time::Instant::now();
    for i in [1, 2] {
        for tx in [first, held] {
            let want = vec![format!("prepare {tx}"), format!("commit {tx}")];
            while per_tx(i, tx) != want {
                assert!(
                    start.elapsed() < Duration::from_secs(5),
                    "{}: {:?}",
                    NODES[i],
                    calls[i].lock().unwrap()
                );
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
        }
        assert_eq!(calls[i].lock().unwrap().len(), 4, "{}", NODES[i]);
    }
    assert!(calls[0].lock().unwrap().is_empty(), "a is no participant");
    for (n, addr) in NODES.iter().zip(&http) {
        assert_eq!(in_doubt(*addr).await.transactions, vec![], "{n}");
    }
    for r in running {
        r.shutdown().await;
    }
}
