//! The kv app's routes on three nodes in one process (real QUIC on
//! loopback, insecure dev mode; each node started as `troupe node` starts
//! it: its config's `[apps.kv]` planned by the sample registry, its routes
//! mounted on its HTTP endpoint), spoken to over HTTP by the CLI's client
//! and by `troupe kv`:
//! - every route and status code, from the leader and from followers
//!   (which forward to the leader): 200, 404, 409 `mismatch` with the
//!   current value, 400 naming the field or the header, 405, 415, 422;
//! - `Idempotency-Key`: a write sent again with the same key is applied
//!   once and answers what the first did;
//! - without a quorum: a write the leader accepted but cannot commit is
//!   504 "outcome unknown" (never 503), and once no leader is known every
//!   write and linearizable read is 503 with `Retry-After`, while a stale
//!   read still answers.

use std::collections::BTreeMap;
use std::net::UdpSocket;
use std::path::Path;
use std::process::Output;
use std::time::{Duration, Instant};

use serde_json::{json, Value};
use troupe::app::ClusterInfo;
use troupe::config::Config;
use troupe::prelude::{start_node_with, StartOptions};
use troupe_apps::http_client::NodeClient;

#[path = "troupe_run/mod.rs"]
mod troupe_run;

const NODES: [&str; 3] = ["a", "b", "c"];

/// What the test tells the nodes' thread: stop this node, say when done.
type Stop = (String, std::sync::mpsc::Sender<()>);

/// The three nodes, run by an actix system on a thread of their own (the
/// test's blocking HTTP calls must not hold up the nodes).
struct Nodes {
    urls: BTreeMap<String, String>,
    stop: tokio::sync::mpsc::UnboundedSender<Stop>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl Nodes {
    /// Start [`NODES`], each with `[apps.kv]` and `kv` (the app's settings).
    fn start(kv: &str) -> Nodes {
        let ports: Vec<u16> = NODES
            .iter()
            .map(|_| {
                UdpSocket::bind("127.0.0.1:0")
                    .and_then(|s| s.local_addr())
                    .expect("a free port")
                    .port()
            })
            .collect();
        let configs: Vec<Config> = NODES
            .iter()
            .enumerate()
            .map(|(i, name)| {
                let mut text = format!(
                    "name = \"{name}\"\nlisten = \"127.0.0.1:{}\"\n[tls]\ninsecure_dev_mode = true\n\
                     [http]\nlisten = \"127.0.0.1:0\"\n\
                     [failure_detector]\nkind = \"heartbeat\"\ninterval_ms = 100\nacceptable_pause_ms = 1000\n\
                     [apps.status]\nenabled = false\n[apps.counter]\nenabled = false\n[apps.kv]\n{kv}\n",
                    ports[i]
                );
                for (peer, port) in NODES.iter().zip(&ports) {
                    if peer != name {
                        text.push_str(&format!(
                            "[[peers]]\nname = \"{peer}\"\naddr = \"127.0.0.1:{port}\"\n"
                        ));
                    }
                }
                Config::from_toml(&text, Path::new(".")).expect("config")
            })
            .collect();
        let (urls_tx, urls_rx) = std::sync::mpsc::channel();
        let (stop, mut stops) = tokio::sync::mpsc::unbounded_channel::<Stop>();
        let thread = std::thread::spawn(move || {
            actix_rt::System::new().block_on(async move {
                let mut running = BTreeMap::new();
                let mut urls = BTreeMap::new();
                for config in configs {
                    let plan = troupe_apps::sample::registry()
                        .plan(&config.apps, &ClusterInfo::of(&config))
                        .expect("a valid [apps] table");
                    let options = StartOptions {
                        app_routes: plan.routes().expect("routes"),
                        app_panels: plan.panels(),
                        ..StartOptions::default()
                    };
                    let r = start_node_with(config, options).await.expect("node starts");
                    let peers = r.config.peer_names();
                    let fd = Some(r.failure_detector.clone());
                    plan.start(&r.node, &peers, fd).await.expect("apps start");
                    let name = r.node.name().to_string();
                    urls.insert(name.clone(), r.http_url().expect("http"));
                    running.insert(name, r);
                }
                urls_tx.send(urls).expect("urls");
                while let Some((name, done)) = stops.recv().await {
                    if let Some(r) = running.remove(&name) {
                        r.shutdown().await;
                    }
                    let _ = done.send(());
                }
                for r in running.values() {
                    r.node.shutdown();
                }
            })
        });
        let urls = urls_rx
            .recv_timeout(Duration::from_secs(30))
            .expect("nodes up");
        Nodes {
            urls,
            stop,
            thread: Some(thread),
        }
    }

    fn client(&self, name: &str) -> NodeClient {
        NodeClient::new(&self.urls[name], None, Duration::from_secs(15)).expect("url")
    }

    /// Stop `name` (it leaves the group, its endpoint closes).
    fn shutdown(&self, name: &str) {
        let (done, wait) = std::sync::mpsc::channel();
        self.stop.send((name.to_string(), done)).expect("nodes run");
        wait.recv_timeout(Duration::from_secs(10)).expect("stopped");
    }

    /// The leader, once every node's `_cluster` names the same one.
    fn leader(&self) -> String {
        let start = Instant::now();
        loop {
            let seen: Vec<Option<String>> = NODES
                .iter()
                .map(|n| {
                    let a = self.client(n).get("/v1/kv/_cluster").ok()?;
                    a.body["leader"].as_str().map(String::from)
                })
                .collect();
            if let Some(Some(l)) = seen.first() {
                if seen.iter().all(|s| s.as_deref() == Some(l)) {
                    return l.clone();
                }
            }
            assert!(
                start.elapsed() < Duration::from_secs(30),
                "no leader: {seen:?}"
            );
            std::thread::sleep(Duration::from_millis(100));
        }
    }
}

impl Drop for Nodes {
    fn drop(&mut self) {
        let (stop, _) = tokio::sync::mpsc::unbounded_channel::<Stop>();
        drop(std::mem::replace(&mut self.stop, stop));
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

/// `METHOD path` with a raw body and headers: status, body, Retry-After.
fn call(
    c: &NodeClient,
    method: &str,
    path: &str,
    body: Option<&str>,
    headers: &[(&str, &str)],
) -> (u16, Value, Option<u64>) {
    let a = c
        .request(method, path, body, headers)
        .unwrap_or_else(|e| panic!("{method} {path}: {e}"));
    (a.status, a.body, a.retry_after)
}

fn put(c: &NodeClient, key: &str, value: &str, headers: &[(&str, &str)]) -> (u16, Value) {
    let body = json!({ "value": value }).to_string();
    let (code, body, _) = call(c, "PUT", &format!("/v1/kv/{key}"), Some(&body), headers);
    (code, body)
}

fn cas(c: &NodeClient, key: &str, expected: Option<&str>, value: &str) -> (u16, Value) {
    let body = json!({ "expected": expected, "value": value }).to_string();
    let (code, body, _) = call(c, "POST", &format!("/v1/kv/{key}/cas"), Some(&body), &[]);
    (code, body)
}

fn get(c: &NodeClient, path: &str) -> (u16, Value) {
    let (code, body, _) = call(c, "GET", path, None, &[]);
    (code, body)
}

fn revision(code: u16, body: &Value) -> u64 {
    assert_eq!(code, 200, "{body}");
    body["revision"].as_u64().expect("a revision")
}

/// A 400 naming `field` (the body's field, or the header).
fn bad(code: u16, body: &Value, field: &str) {
    assert_eq!(code, 400, "{body}");
    let named = body["field"] == field || body["header"] == field;
    assert!(named, "{body} does not name {field}");
}

#[test]
fn every_route_answers_with_its_status_code_on_the_leader_and_through_followers() {
    let nodes = Nodes::start("");
    let leader = nodes.leader();
    let followers: Vec<&str> = NODES.into_iter().filter(|n| *n != leader).collect();
    let (l, f, g) = (
        nodes.client(&leader),
        nodes.client(followers[0]),
        nodes.client(followers[1]),
    );

    // Writes through a follower are forwarded; reads anywhere see them.
    let r1 = {
        let (code, body) = put(&f, "color", "blue", &[]);
        revision(code, &body)
    };
    let (code, body) = get(&g, "/v1/kv/color");
    assert_eq!((code, &body["value"]), (200, &json!("blue")), "{body}");
    assert_eq!(body["revision"], r1);
    let (code, body) = get(&l, "/v1/kv/shape");
    assert_eq!((code, &body["key"]), (404, &json!("shape")), "{body}");
    // A stale read answers from the follower's replica, once it has applied.
    let start = Instant::now();
    while get(&g, "/v1/kv/color?consistency=stale").0 != 200 {
        assert!(start.elapsed() < Duration::from_secs(5), "never applied");
        std::thread::sleep(Duration::from_millis(20));
    }
    let (code, body) = get(&g, "/v1/kv/color?consistency=stale");
    assert_eq!((code, &body["value"]), (200, &json!("blue")), "{body}");
    assert_eq!(get(&g, "/v1/kv/shape?consistency=stale").0, 404);
    let (code, body) = get(&g, "/v1/kv/color?consistency=linearizable");
    assert_eq!((code, &body["value"]), (200, &json!("blue")), "{body}");

    // Compare-and-set: 409 names the current value (null when absent).
    let (code, body) = cas(&g, "color", None, "red");
    assert_eq!((code, &body["error"]), (409, &json!("mismatch")), "{body}");
    assert_eq!(body["value"], "blue");
    let (code, body) = cas(&g, "color", Some("green"), "red");
    assert_eq!((code, &body["value"]), (409, &json!("blue")), "{body}");
    let (code, body) = cas(&f, "color", Some("blue"), "red");
    let r2 = revision(code, &body);
    assert!(r2 > r1, "{r2} after {r1}");
    let (code, body) = cas(&l, "shape", None, "round");
    revision(code, &body);
    assert_eq!(get(&f, "/v1/kv/shape").1["value"], "round");

    // Delete: 200, then absent; a CAS then finds null.
    let (code, body, _) = call(&f, "DELETE", "/v1/kv/color", None, &[]);
    assert!(revision(code, &body) > r2);
    assert_eq!(get(&g, "/v1/kv/color").0, 404);
    let (code, body) = cas(&g, "color", Some("red"), "x");
    assert_eq!(code, 409, "{body}");
    assert!(body.get("value").is_some_and(Value::is_null), "{body}");
    let (code, body, _) = call(&l, "DELETE", "/v1/kv/never-set", None, &[]);
    revision(code, &body);

    // Keys are path segments, percent-decoded.
    let (code, body) = put(&f, "a%20b%2Fc%3F", "odd", &[]);
    revision(code, &body);
    let (code, body) = get(&l, "/v1/kv/a%20b%2Fc%3F");
    assert_eq!((code, &body["value"]), (200, &json!("odd")), "{body}");

    // Idempotency-Key: the retry is not applied again and gets the first answer.
    let key = [("Idempotency-Key", "client-7:1")];
    let (code, body) = put(&f, "n", "one", &key);
    let first = revision(code, &body);
    let (code, body) = put(&g, "n", "two", &[]);
    revision(code, &body);
    let (code, body) = put(&l, "n", "one", &key);
    assert_eq!(revision(code, &body), first, "the retry answers the first");
    assert_eq!(get(&f, "/v1/kv/n").1["value"], "two", "applied once");
    let (code, body) = put(&f, "n", "three", &[("Idempotency-Key", "client-7:2")]);
    revision(code, &body);
    let (code, body) = put(&f, "n", "old", &[("Idempotency-Key", "client-7:1")]);
    assert_eq!(code, 422, "an older sequence number: {body}");
    assert_eq!(body["header"], "Idempotency-Key");
    assert_eq!(get(&f, "/v1/kv/n").1["value"], "three");
    for k in ["nocolon", "client:", "client:x", ":3", "a b:1"] {
        let (code, body) = put(&g, "n", "v", &[("Idempotency-Key", k)]);
        bad(code, &body, "Idempotency-Key");
    }
    let (code, body, _) = call(&f, "DELETE", "/v1/kv/n", None, &[("Idempotency-Key", "x")]);
    bad(code, &body, "Idempotency-Key");

    // Malformed requests: 400 naming the field, 405, 415; never a panic.
    let path = "/v1/kv/k";
    let (code, body, _) = call(&f, "PUT", path, Some("{"), &[]);
    assert_eq!(code, 400, "{body}");
    assert!(body["error"].as_str().unwrap().contains("not valid JSON"));
    for (body, field) in [
        ("{}", "value"),
        (r#"{"value": 3}"#, "value"),
        (r#"{"value": "x", "extra": 1}"#, "extra"),
    ] {
        let (code, answer, _) = call(&f, "PUT", path, Some(body), &[]);
        bad(code, &answer, field);
    }
    for (body, field) in [
        (r#"{"value": "x"}"#, "expected"),
        (r#"{"expected": null}"#, "value"),
        (r#"{"expected": 1, "value": "x"}"#, "expected"),
    ] {
        let (code, answer, _) = call(&f, "POST", "/v1/kv/k/cas", Some(body), &[]);
        bad(code, &answer, field);
    }
    let text = [("Content-Type", "text/plain")];
    assert_eq!(call(&f, "PUT", path, Some("{}"), &text).0, 415);
    assert_eq!(get(&f, "/v1/kv/k?consistency=sometimes").0, 400);
    assert_eq!(get(&f, "/v1/kv/k?stale=1").0, 400);
    let long = "k".repeat(troupe_apps::sample::MAX_KEY_BYTES + 1);
    assert_eq!(get(&f, &format!("/v1/kv/{long}")).0, 400);
    assert_eq!(call(&f, "PUT", "/v1/kv/_cluster", Some("{}"), &[]).0, 405);
    assert_eq!(call(&f, "GET", "/v1/kv/k/cas", None, &[]).0, 405);
    assert_eq!(get(&f, "/v1/kv/a/b").0, 404);

    // The group as the leader sees it, from every node.
    for c in [&l, &f, &g] {
        let (code, body) = get(c, "/v1/kv/_cluster");
        assert_eq!(code, 200, "{body}");
        assert_eq!(body["leader"], leader.as_str(), "{body}");
        assert_eq!(body["answered_by"], leader.as_str(), "{body}");
        assert!(body["term"].as_u64() >= Some(1), "{body}");
        let commit = body["commit"].as_u64().expect("commit");
        assert!(commit >= r2, "{body}");
        let members = body["members"].as_array().expect("members");
        let names: Vec<&str> = members
            .iter()
            .map(|m| m["name"].as_str().unwrap())
            .collect();
        assert_eq!(names, NODES, "{body}");
        for m in members {
            assert_eq!(m["role"], "voter", "{body}");
            assert!(m["match"].as_u64().is_some(), "{body}");
        }
    }

    // The CLI, against a follower.
    let url = nodes.urls[followers[0]].clone();
    let kv = |args: &[&str]| -> Output {
        let mut all = vec!["kv", args[0], "--node", &url];
        all.extend(&args[1..]);
        troupe_run::troupe_within(&all, Duration::from_secs(30))
    };
    let ok = |args: &[&str]| -> String {
        let out = kv(args);
        assert!(out.status.success(), "{args:?}: {out:?}");
        String::from_utf8(out.stdout).unwrap()
    };
    let fails = |args: &[&str]| -> String {
        let out = kv(args);
        assert!(!out.status.success(), "{args:?} succeeded: {out:?}");
        String::from_utf8(out.stderr).unwrap()
    };
    let said = ok(&["put", "city", "Lyon", "--idempotency-key", "cli:1"]);
    assert!(said.starts_with("revision "), "{said}");
    assert_eq!(
        ok(&["put", "city", "Lyon", "--idempotency-key", "cli:1"]),
        said
    );
    assert_eq!(ok(&["get", "city"]), "Lyon\n");
    let start = Instant::now();
    while ok(&["get", "city", "--stale"]) != "Lyon\n" {
        assert!(start.elapsed() < Duration::from_secs(5), "never applied");
    }
    let said = fails(&["cas", "city", "Paris", "--absent"]);
    assert!(said.contains("mismatch: the value is \"Lyon\""), "{said}");
    let said = ok(&["cas", "city", "Paris", "--expected", "Lyon"]);
    assert!(said.starts_with("revision "), "{said}");
    assert!(ok(&["del", "city"]).starts_with("revision "));
    let said = fails(&["get", "city"]);
    assert!(said.contains("\"city\" is absent"), "{said}");
    let said = fails(&["cas", "city", "Rome", "--expected", "Paris"]);
    assert!(said.contains("mismatch: the key is absent"), "{said}");
    let said = fails(&["put", "city", "Rome", "--idempotency-key", "nope"]);
    assert!(said.contains("--idempotency-key \"nope\""), "{said}");
    assert!(
        !kv(&["cas", "city", "Rome"]).status.success(),
        "needs --expected or --absent"
    );
    let said = ok(&["cluster"]);
    assert!(
        said.starts_with(&format!("leader {leader}  term ")),
        "{said}"
    );
    for n in NODES {
        assert!(said.contains(&format!("\n{n:<10}  voter  ")), "{said}");
    }
}

#[test]
fn without_a_quorum_a_write_is_unknown_or_not_applied_never_guessed() {
    // Long election timeouts: the leader keeps leading (check-quorum) for
    // at least 3 s after losing its followers; requests give up after 1.5 s.
    let nodes = Nodes::start(
        "election_min_ms = 3000\nelection_max_ms = 4000\nheartbeat_ms = 100\nrequest_timeout_ms = 1500",
    );
    let leader = nodes.leader();
    let l = nodes.client(&leader);
    let (code, body) = put(&l, "k", "before", &[]);
    revision(code, &body);
    for n in NODES.into_iter().filter(|n| *n != leader) {
        nodes.shutdown(n);
    }
    // Accepted by the leader, never committed: its outcome is unknown.
    let (code, body, retry) = call(&l, "PUT", "/v1/kv/k", Some(r#"{"value":"lost"}"#), &[]);
    assert_eq!((code, retry), (504, None), "{body}");
    assert!(
        body["error"]
            .as_str()
            .unwrap()
            .starts_with("outcome unknown"),
        "{body}"
    );
    assert_eq!(body["outcome"], "unknown");
    // Once it steps down, nobody leads: certainly not applied, retry later.
    let start = Instant::now();
    loop {
        let (code, body, retry) = call(&l, "DELETE", "/v1/kv/k", None, &[]);
        if code == 503 {
            assert_eq!(retry, Some(1), "{body}");
            assert!(body["error"].as_str().unwrap().starts_with("not applied"));
            break;
        }
        assert_eq!(code, 504, "{body}");
        assert!(start.elapsed() < Duration::from_secs(15), "still leading");
    }
    let (code, body, retry) = call(&l, "GET", "/v1/kv/k", None, &[]);
    assert_eq!((code, retry), (503, Some(1)), "{body}");
    let (code, body) = cas(&l, "k", Some("before"), "after");
    assert_eq!(code, 503, "{body}");
    // Its own replica still answers a stale read.
    let (code, body) = get(&l, "/v1/kv/k?consistency=stale");
    assert_eq!((code, &body["value"]), (200, &json!("before")), "{body}");
}
