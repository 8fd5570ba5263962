//! `troupe cluster up/kill/start/stop/down` end to end, as a user runs
//! them: the cluster outlives each command, `cluster.json` says where every
//! node is, each node's `/v1/status` shows the membership (a killed node
//! Down, a restarted one Up as a new incarnation, a stopped one Left), the
//! counter routes work, `troupe status` prints the table, and `down` leaves
//! no process behind.

use std::path::Path;
use std::process::Output;
use std::time::{Duration, Instant};

use serde_json::json;
use troupe::framework::membership::MemberStatus;
use troupe_apps::cluster::{read_file, running, ClusterFile};
use troupe_apps::http_client::NodeClient;

#[path = "troupe_run/mod.rs"]
mod troupe_run;

/// Runs `troupe ARGS`; one still running after 120 s is killed and fails the test.
fn troupe(args: &[&str]) -> Output {
    troupe_run::troupe_within(args, Duration::from_secs(120))
}

fn text(out: &Output) -> String {
    format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    )
}

fn ok(args: &[&str]) -> String {
    let out = troupe(args);
    assert!(
        out.status.success(),
        "troupe {args:?} failed: {}",
        text(&out)
    );
    text(&out)
}

fn fails(args: &[&str], says: &str) {
    let out = troupe(args);
    assert!(
        !out.status.success(),
        "troupe {args:?} succeeded: {}",
        text(&out)
    );
    assert!(
        text(&out).contains(says),
        "troupe {args:?} does not say {says:?}: {}",
        text(&out)
    );
}

fn client(file: &ClusterFile, name: &str) -> NodeClient {
    let n = file.nodes.iter().find(|n| n.name == name).expect(name);
    NodeClient::new(&n.http, None, Duration::from_secs(5)).expect("url")
}

/// Waits until `observer` shows `of` with `status` (and, if given, with
/// `incarnation`); panics with what it saw after 60 s.
fn wait_seen(
    file: &ClusterFile,
    observer: &str,
    of: &str,
    status: MemberStatus,
    incarnation: Option<&str>,
) {
    let c = client(file, observer);
    let start = Instant::now();
    let mut last = String::from("no answer");
    while start.elapsed() < Duration::from_secs(60) {
        match c.status() {
            Ok(s) => {
                let m = s.members.iter().find(|m| m.name == of);
                if let Some(m) = m {
                    if m.status == status
                        && (incarnation.is_none() || m.incarnation.as_deref() == incarnation)
                    {
                        return;
                    }
                }
                last = format!("{m:?}");
            }
            Err(e) => last = e.to_string(),
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    panic!("{observer} did not see {of} {status:?} {incarnation:?} within 60 s; last: {last}");
}

#[test]
fn cluster_up_kill_start_stop_down_end_to_end() {
    let dir = std::env::temp_dir().join(format!("troupe-cluster-cli-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    let d = dir.to_str().expect("utf-8 path");
    let _cleanup = troupe_run::KillNodesOnDrop(dir.clone());

    fails(&["cluster", "kill", "--dir", d, "node-1"], "no cluster in");
    ok(&[
        "cluster", "up", "--nodes", "3", "--apps", "counter", "--dir", d,
    ]);
    fails(
        &["cluster", "up", "--nodes", "3", "--dir", d],
        "already holds a cluster",
    );

    let file = read_file(&dir).expect("cluster.json");
    let names: Vec<&str> = file.nodes.iter().map(|n| n.name.as_str()).collect();
    assert_eq!(names, ["node-1", "node-2", "node-3"]);
    for n in &file.nodes {
        assert!(running(n), "{} runs after `up` returned", n.name);
        assert!(
            n.quic.starts_with("127.0.0.1:") && n.http.starts_with("http://127.0.0.1:"),
            "{n:?}"
        );
        assert!(
            Path::new(&n.config).is_file() && Path::new(&n.log).is_file(),
            "{n:?}"
        );
        // `up` waited: every node already sees the others Up, heard from.
        let s = client(&file, &n.name).status().expect("status");
        assert_eq!(s.node, n.name);
        for other in names.iter().filter(|o| **o != n.name) {
            let m = s.members.iter().find(|m| m.name == *other).expect("member");
            assert_eq!(m.status, MemberStatus::Up, "{} sees {other}: {m:?}", n.name);
            assert!(
                m.incarnation.is_some(),
                "{} has heard from {other}: {m:?}",
                n.name
            );
        }
        assert!(
            s.store.location.ends_with("troupe.redb"),
            "the node keeps its state in its data directory: {:?}",
            s.store
        );
        assert_eq!(s.apps.len(), 1, "{:?}", s.apps);
        assert_eq!(
            (s.apps[0].name.as_str(), s.apps[0].state),
            ("counter", troupe::framework::ChildState::Running)
        );
    }

    // The status table, from the binary.
    let table = ok(&["status", "--node", &file.nodes[0].http]);
    assert!(table.starts_with("node-1  incarnation "), "{table}");
    for row in ["node-2  Up", "node-3  Up", "apps     counter running"] {
        assert!(table.contains(row), "{row:?} missing from:\n{table}");
    }

    // The counter's routes: each node its own counter.
    let c1 = client(&file, "node-1");
    let add = |c: &NodeClient, body: serde_json::Value| {
        c.post_json("/v1/counter/add", &body).expect("post")
    };
    assert_eq!(add(&c1, json!({"amount": 5})).body, json!({"value": 5}));
    assert_eq!(add(&c1, json!({"amount": -2})).body, json!({"value": 3}));
    assert_eq!(
        c1.get("/v1/counter").expect("get").body,
        json!({"value": 3})
    );
    assert_eq!(
        client(&file, "node-2")
            .get("/v1/counter")
            .expect("get")
            .body,
        json!({"value": 0})
    );
    let bad = add(&c1, json!({"amount": "five"}));
    assert_eq!(
        (bad.status, &bad.body["field"]),
        (400, &json!("amount")),
        "{:?}",
        bad.body
    );

    // SIGKILL node-3: the others see it Down.
    let old = client(&file, "node-3")
        .status()
        .expect("status")
        .incarnation;
    ok(&["cluster", "kill", "--dir", d, "node-3"]);
    assert!(!running(&file.nodes[2]), "killed");
    fails(
        &["cluster", "kill", "--dir", d, "node-3"],
        "node-3 is not running",
    );
    fails(
        &["cluster", "kill", "--dir", d, "node-9"],
        "its nodes are node-1, node-2, node-3",
    );
    for observer in ["node-1", "node-2"] {
        wait_seen(&file, observer, "node-3", MemberStatus::Down, None);
    }

    // Started again: a new incarnation, same data directory, seen Up.
    let said = ok(&["cluster", "start", "--dir", d, "node-3"]);
    assert!(said.contains("node-3 started"), "{said}");
    fails(
        &["cluster", "start", "--dir", d, "node-3"],
        "running already",
    );
    let file = read_file(&dir).expect("cluster.json");
    assert_ne!(file.nodes[2].pid, 0);
    let new = client(&file, "node-3")
        .status()
        .expect("status")
        .incarnation;
    assert_ne!(new, old, "a new incarnation");
    for observer in ["node-1", "node-2"] {
        wait_seen(&file, observer, "node-3", MemberStatus::Up, Some(&new));
    }

    // A graceful stop: the others see node-2 leave.
    ok(&["cluster", "stop", "--dir", d, "node-2"]);
    wait_seen(&file, "node-1", "node-2", MemberStatus::Left, None);

    let said = ok(&["cluster", "down", "--dir", d]);
    assert!(
        said.contains("node-1 stopped") && said.contains("node-3 stopped"),
        "{said}"
    );
    for n in &file.nodes {
        assert!(
            !running(n),
            "{} (pid {}) still runs after down",
            n.name,
            n.pid
        );
    }
    assert!(
        dir.join("cluster.json").is_file(),
        "down keeps DIR without --clean"
    );
    ok(&["cluster", "down", "--dir", d, "--clean"]);
    assert!(!dir.exists(), "--clean removes DIR");
}
