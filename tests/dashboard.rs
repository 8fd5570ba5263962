//! The dashboard's JSON (`troupe::dashboard`) from two real nodes over QUIC
//! (insecure dev mode, loopback): one node's snapshot carries the other's,
//! asked over QUIC; a lock, an election and an app's panel show; a tell
//! from a to b appears as a send on a and the matching delivery on b; the
//! event stream pushes snapshots whose traffic events are each sent once;
//! bad requests get clear 4xx answers, the token guards every route, and
//! `[http] dashboard = false` turns the page off but not the JSON; a node
//! that is gone is listed with the reason, without holding up the answer.
//! The page itself is checked in a real browser by
//! `apps/tests/dashboard_browser.rs`.

use std::collections::BTreeMap;
use std::net::{SocketAddr, UdpSocket};
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use serde::{Deserialize, Serialize};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use troupe::config::Config;
use troupe::dashboard::{AppPanelRegistry, ClusterSnapshot, Panel};
use troupe::prelude::*;

const TOKEN: &str = "dashboard-token-0123456789";

#[derive(Debug, Serialize, Deserialize)]
struct Ping(u64);
remote_message!(Ping, "dashboard_test.ping", ());

#[derive(Default)]
struct Sink;
impl Actor for Sink {
    type Context = Context<Self>;
}
impl Handler<Ping> for Sink {
    type Result = ();
    fn handle(&mut self, _: Ping, _: &mut Context<Self>) {}
}

fn free_port() -> u16 {
    UdpSocket::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

fn config(name: &str, ports: [u16; 2], http_extra: &str) -> Config {
    let names = ["a", "b"];
    let me = names.iter().position(|n| *n == name).unwrap();
    let (peer, peer_port) = (names[1 - me], ports[1 - me]);
    let text = format!(
        "name = \"{name}\"\nlisten = \"127.0.0.1:{}\"\n[tls]\ninsecure_dev_mode = true\n\
         [[peers]]\nname = \"{peer}\"\naddr = \"127.0.0.1:{peer_port}\"\n\
         [failure_detector]\nkind = \"phi-accrual\"\n\
         [http]\nlisten = \"127.0.0.1:0\"\n{http_extra}",
        ports[me]
    );
    Config::from_toml(&text, Path::new(".")).unwrap_or_else(|e| panic!("{name}: config: {e}"))
}

/// A panel that says which node built it.
fn panels() -> AppPanelRegistry {
    let mut p = AppPanelRegistry::new();
    p.add(
        "shop",
        Arc::new(|node: Node| {
            Box::pin(async move { Ok(Panel::new("shop").field("built on", node.name())) })
        }),
    );
    p
}

/// a (whose endpoint has `a_http`) and b, both up, each with the panel of
/// app `shop`, a lock and an election; b runs actor `sink`.
async fn pair(a_http: &str) -> (RunningNode, RunningNode) {
    let ports = [free_port(), free_port()];
    let options = StartOptions {
        app_panels: panels(),
        ..StartOptions::default()
    };
    let a = start_node_with(config("a", ports, a_http), options.clone())
        .await
        .expect("a starts");
    let b = start_node_with(config("b", ports, ""), options)
        .await
        .expect("b starts");
    let start = tokio::time::Instant::now();
    for r in [&a, &b] {
        while r
            .node
            .membership()
            .iter()
            .any(|(_, s)| s != MemberStatus::Up)
        {
            assert!(start.elapsed() < Duration::from_secs(15), "not up");
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }
    let members = vec!["a".to_string(), "b".to_string()];
    for r in [&a, &b] {
        start_lock(&r.node, "ledger", MutexAlgorithm::RicartAgrawala, &members)
            .await
            .expect("lock");
        start_election(&r.node, ElectionAlgorithm::Bully, &members)
            .await
            .expect("election");
    }
    b.node
        .spawn(ActorSpec::new("sink", Sink::default).handles::<Ping>())
        .await
        .expect("sink");
    (a, b)
}

/// A raw HTTP/1.1 GET: (status, body).
async fn get(addr: SocketAddr, path: &str, token: Option<&str>) -> (u16, String) {
    let mut s = tokio::net::TcpStream::connect(addr).await.expect("connect");
    let auth = token.map_or(String::new(), |t| format!("Authorization: Bearer {t}\r\n"));
    let head = format!("GET {path} HTTP/1.1\r\nHost: test\r\nConnection: close\r\n{auth}\r\n");
    s.write_all(head.as_bytes()).await.expect("write");
    let mut raw = Vec::new();
    tokio::time::timeout(Duration::from_secs(20), s.read_to_end(&mut raw))
        .await
        .expect("an answer within 20 s")
        .expect("read");
    let text = String::from_utf8(raw).expect("UTF-8");
    let (head, body) = text.split_once("\r\n\r\n").expect("a head");
    let code = head
        .split_whitespace()
        .nth(1)
        .and_then(|c| c.parse().ok())
        .expect("a status line");
    (code, body.to_string())
}

async fn snapshot(addr: SocketAddr, token: Option<&str>) -> ClusterSnapshot {
    let (code, body) = get(addr, "/v1/dashboard/snapshot", token).await;
    assert_eq!(code, 200, "{body}");
    serde_json::from_str(&body).unwrap_or_else(|e| panic!("{e}: {body}"))
}

#[actix_rt::test]
async fn one_node_shows_every_node_and_the_traffic_between_them() {
    let (a, b) = pair("").await;
    let addr = a.http_addr().unwrap();
    let s = snapshot(addr, None).await;
    assert_eq!(s.gathered_by, "a");
    let names: Vec<&str> = s.nodes.iter().map(|n| n.name.as_str()).collect();
    assert_eq!(names, ["a", "b"]);
    for v in &s.nodes {
        let snap = v
            .snapshot
            .as_ref()
            .unwrap_or_else(|| panic!("{}: {:?}", v.name, v.error));
        assert_eq!(snap.node, v.name);
        let other = if v.name == "a" { "b" } else { "a" };
        let m = snap
            .members
            .iter()
            .find(|m| m.name == other)
            .expect("member");
        assert_eq!(m.status, MemberStatus::Up, "{} sees {other}", v.name);
        assert!(m.phi.is_some(), "phi-accrual shows phi");
        assert_eq!(snap.locks.len(), 1, "{}: {:?}", v.name, snap.locks);
        assert_eq!(snap.locks[0].resource, "ledger");
        assert_eq!(snap.leaders.len(), 1);
        let tree = snap.tree.as_ref().expect("tree");
        assert_eq!(tree.name, v.name);
        let panel = snap.panels.iter().find(|p| p.app == "shop").expect("panel");
        let fields = &panel.panel.as_ref().expect("built").fields;
        assert_eq!(fields, &[("built on".to_string(), v.name.clone())]);
        assert!(
            snap.traffic
                .iter()
                .any(|t| t.peer == other && t.msgs_out > 0 && t.msgs_in > 0),
            "{}: traffic {:?}",
            v.name,
            snap.traffic
        );
    }

    // The taps are on now (the snapshot asked): a tell from a to b shows
    // as a's send and b's delivery of the same frame.
    let sink = a.node.lookup::<Ping>("b/sink").unwrap();
    for i in 0..5 {
        sink.tell(Ping(i)).unwrap();
    }
    let start = tokio::time::Instant::now();
    loop {
        let s = snapshot(addr, None).await;
        let events = |name: &str| {
            s.nodes
                .iter()
                .find(|n| n.name == name)
                .and_then(|n| n.snapshot.as_ref())
                .map(|n| n.events.clone())
                .unwrap_or_default()
        };
        let sends: Vec<u64> = events("a")
            .iter()
            .filter(|e| e.ev == "send" && e.tag.as_deref() == Some("dashboard_test.ping"))
            .map(|e| e.seq)
            .collect();
        let delivered: Vec<u64> = events("b")
            .iter()
            .filter(|e| e.ev == "deliver" && e.peer == "a" && sends.contains(&e.seq))
            .map(|e| e.seq)
            .collect();
        if sends.len() == 5 && delivered.len() == 5 {
            break;
        }
        assert!(
            start.elapsed() < Duration::from_secs(10),
            "sends {sends:?}, their deliveries on b {delivered:?}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }

    // b gone: listed with the reason, and the answer does not wait long.
    b.node.shutdown();
    let t = tokio::time::Instant::now();
    let start = t;
    loop {
        let s = snapshot(addr, None).await;
        assert!(t.elapsed() < Duration::from_secs(3), "a slow answer");
        let bv = &s.nodes[1];
        if bv.snapshot.is_none() {
            assert!(bv.error.as_deref().is_some_and(|e| !e.is_empty()));
            break;
        }
        assert!(start.elapsed() < Duration::from_secs(20), "b still answers");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    a.node.shutdown();
}

#[actix_rt::test]
async fn the_stream_pushes_each_traffic_event_once() {
    let (a, b) = pair("").await;
    let addr = a.http_addr().unwrap();
    let mut s = tokio::net::TcpStream::connect(addr).await.expect("connect");
    s.write_all(
        b"GET /v1/dashboard/events?every_ms=100 HTTP/1.1\r\nHost: test\r\nConnection: close\r\n\r\n",
    )
    .await
    .unwrap();
    let sink = a.node.lookup::<Ping>("b/sink").unwrap();
    let mut raw = String::new();
    let mut pushes = Vec::new();
    let start = tokio::time::Instant::now();
    while pushes.len() < 8 {
        assert!(start.elapsed() < Duration::from_secs(20), "{raw}");
        sink.tell(Ping(0)).unwrap();
        let mut buf = [0u8; 65536];
        let n = tokio::time::timeout(Duration::from_secs(5), s.read(&mut buf))
            .await
            .expect("a push within 5 s")
            .expect("read");
        assert!(n > 0, "the stream ended: {raw}");
        raw.push_str(&String::from_utf8_lossy(&buf[..n]));
        if pushes.is_empty() {
            assert!(raw.contains("text/event-stream"), "{raw}");
        }
        // Chunked transfer: the JSON of each event is on one `data:` line.
        while let Some(i) = raw.find("data: ") {
            let rest = &raw[i + 6..];
            let Some(end) = rest.find("\n\n") else { break };
            let s: ClusterSnapshot = serde_json::from_str(rest[..end].trim()).expect("JSON");
            pushes.push(s);
            raw = rest[end + 2..].to_string();
        }
    }
    let mut seen: BTreeMap<(String, u64), usize> = BTreeMap::new();
    for p in &pushes {
        for v in &p.nodes {
            for e in v.snapshot.iter().flat_map(|s| &s.events) {
                *seen.entry((v.name.clone(), e.id)).or_default() += 1;
            }
        }
    }
    assert!(
        seen.keys().any(|(n, _)| n == "b"),
        "b's events are pushed too"
    );
    let twice: Vec<_> = seen.iter().filter(|(_, &n)| n > 1).collect();
    assert!(twice.is_empty(), "pushed more than once: {twice:?}");
    a.node.shutdown();
    b.node.shutdown();
}

#[actix_rt::test]
async fn bad_requests_and_the_token_and_the_page_switch() {
    let (a, b) = pair(&format!("token = \"{TOKEN}\"\ndashboard = false\n")).await;
    let addr = a.http_addr().unwrap();
    for path in ["/", "/v1/dashboard/snapshot", "/v1/dashboard/events"] {
        let (code, body) = get(addr, path, None).await;
        assert_eq!(code, 401, "{path}: {body}");
    }
    let (code, body) = get(addr, "/", Some(TOKEN)).await;
    assert_eq!(code, 404, "{body}");
    assert!(body.contains("troupe dashboard --node"), "{body}");
    assert_eq!(snapshot(addr, Some(TOKEN)).await.nodes.len(), 2);
    for (path, says) in [
        ("/v1/dashboard/events?every_ms=10", "every_ms"),
        ("/v1/dashboard/events?every_ms=soon", "every_ms"),
        ("/v1/dashboard/events?colour=red", "colour"),
    ] {
        let (code, body) = get(addr, path, Some(TOKEN)).await;
        assert_eq!(code, 400, "{path}: {body}");
        assert!(body.contains(says), "{path}: {body}");
    }
    // b serves the page (the default).
    let (code, body) = get(b.http_addr().unwrap(), "/", None).await;
    assert_eq!(code, 200);
    assert!(body.starts_with("<!DOCTYPE html>"), "{body}");
    a.node.shutdown();
    b.node.shutdown();
}
