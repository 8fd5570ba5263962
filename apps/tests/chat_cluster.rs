//! The chat app over QUIC: three `troupe node` processes started with
//! `troupe cluster up --apps chat`; six clients hold a conversation (each
//! post answers a random message its node has shown, or starts a thread)
//! while `node-2` is SIGKILLed mid-conversation and restarted. Afterwards,
//! at every node:
//! - **no reply is ever shown before the message it answers** (causal
//!   order, checked over the node's whole history: its delivery log
//!   survives the kill);
//! - every message acknowledged by any node is shown, once (agreement and
//!   no duplication), numbered 1, 2, 3, ... without gap;
//! - the restarted node still shows what it had before the kill.
//!
//! The nodes' own trace files (`[trace] file`) pass `troupe trace check
//! --causal`. Then the terminal client: `troupe chat --once` prints the room, and an
//! interactive `troupe chat` posts a typed line and a `/reply`, which the
//! other nodes show.

use std::collections::{BTreeMap, BTreeSet};
use std::io::Write;
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use serde_json::{json, Value};
use troupe_apps::cluster::{read_file, ClusterFile};
use troupe_apps::http_client::NodeClient;

#[path = "troupe_run/mod.rs"]
mod troupe_run;

const NODES: [&str; 3] = ["node-1", "node-2", "node-3"];
const ROOM: &str = "lobby";

fn url<'a>(file: &'a ClusterFile, name: &str) -> &'a str {
    &file.nodes.iter().find(|n| n.name == name).expect(name).http
}

fn client(file: &ClusterFile, name: &str) -> NodeClient {
    NodeClient::new(url(file, name), None, Duration::from_secs(20)).expect("url")
}

/// The room as `node` shows it, or `None` if it does not answer.
fn room(c: &NodeClient) -> Option<Vec<Value>> {
    match c.get(&format!("/v1/chat/{ROOM}?after=0")) {
        Ok(a) if a.status == 200 => a.body["messages"].as_array().cloned(),
        _ => None,
    }
}

/// Every acknowledged post: id -> (text, the id it answers).
type Acked = Arc<Mutex<BTreeMap<String, (String, Option<String>)>>>;

/// Checks a node's view of the room (see the module docs); returns its ids.
fn check_node(node: &str, messages: &[Value]) -> BTreeSet<String> {
    let mut shown: BTreeMap<String, u64> = BTreeMap::new();
    for (i, m) in messages.iter().enumerate() {
        let n = m["n"].as_u64().expect("n");
        assert_eq!(
            n,
            i as u64 + 1,
            "{node}: numbering has a gap or repeat at {m}"
        );
        let id = m["id"].as_str().expect("id").to_string();
        if let Some(r) = m["reply_to"].as_str() {
            assert!(
                shown.contains_key(r),
                "{node}: reply {id} (#{n}) shown before the message it answers, {r}"
            );
        }
        assert!(
            shown.insert(id.clone(), n).is_none(),
            "{node}: {id} shown twice"
        );
    }
    shown.into_keys().collect()
}

#[test]
fn no_node_shows_a_reply_before_its_question_across_a_kill() {
    let dir = std::env::temp_dir().join(format!("troupe-chat-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    let d = dir.to_str().expect("utf-8 path");
    let _cleanup = troupe_run::KillNodesOnDrop(dir.clone());
    troupe_run::troupe_ok(&[
        "cluster", "up", "--nodes", "3", "--apps", "chat", "--dir", d,
    ]);
    // Every node writes a trace (`[trace] file`): stop them before any
    // message, add the table, start them again.
    for n in NODES {
        troupe_run::troupe_ok(&["cluster", "stop", "--dir", d, n]);
        let path = dir.join(format!("{n}.toml"));
        let text = std::fs::read_to_string(&path).expect("config");
        let traced = format!("{text}\n[trace]\nfile = \"{n}.trace.jsonl\"\n");
        std::fs::write(&path, traced).expect("config");
    }
    for n in NODES {
        troupe_run::troupe_ok(&["cluster", "start", "--dir", d, n]);
    }
    let file = read_file(&dir).expect("cluster.json");
    for n in NODES {
        let c = client(&file, n);
        let start = Instant::now();
        while room(&c).is_none() {
            assert!(start.elapsed() < Duration::from_secs(60), "{n}: no chat");
            std::thread::sleep(Duration::from_millis(200));
        }
    }

    let acked: Acked = Arc::default();
    let stop = Arc::new(AtomicBool::new(false));
    let mut threads = Vec::new();
    for t in 0..6u64 {
        let (acked, stop, file) = (acked.clone(), stop.clone(), file.clone());
        threads.push(std::thread::spawn(move || {
            let node = NODES[t as usize % 3];
            let c = client(&file, node);
            let mut rng = troupe_run::Rng::for_client(t);
            let mut k = 0;
            while !stop.load(Ordering::Relaxed) {
                let Some(shown) = room(&c) else {
                    std::thread::sleep(Duration::from_millis(100));
                    continue;
                };
                k += 1;
                // Mostly answers to recent messages: long reply chains.
                let reply_to = match shown.len() as u64 {
                    0 => None,
                    n if rng.below(4) > 0 => {
                        let back = rng.below(n.min(5));
                        shown[(n - 1 - back) as usize]["id"]
                            .as_str()
                            .map(String::from)
                    }
                    _ => None,
                };
                let text = format!("{node} client {t} line {k}");
                let body = json!({"text": text, "reply_to": reply_to});
                match c.post_json(&format!("/v1/chat/{ROOM}"), &body) {
                    Ok(a) if a.status == 200 => {
                        let id = a.body["id"].as_str().expect("id").to_string();
                        acked.lock().unwrap().insert(id, (text, reply_to));
                    }
                    Ok(a) => assert!(
                        a.status >= 500 || a.status == 400,
                        "{node}: unexpected answer {} {}",
                        a.status,
                        a.body
                    ),
                    Err(_) => std::thread::sleep(Duration::from_millis(100)),
                }
                std::thread::sleep(Duration::from_millis(20 + rng.below(60)));
            }
        }));
    }

    std::thread::sleep(Duration::from_secs(3));
    let before_kill: BTreeSet<String> = {
        let c = client(&file, "node-2");
        room(&c)
            .expect("node-2 answers")
            .iter()
            .map(|m| m["id"].as_str().expect("id").to_string())
            .collect()
    };
    troupe_run::troupe_ok(&["cluster", "kill", "--dir", d, "node-2"]);
    std::thread::sleep(Duration::from_secs(2));
    troupe_run::troupe_ok(&["cluster", "start", "--dir", d, "node-2"]);
    std::thread::sleep(Duration::from_secs(4));
    stop.store(true, Ordering::Relaxed);
    for t in threads {
        t.join().expect("client thread");
    }
    let acked = acked.lock().unwrap().clone();
    let replies = acked.values().filter(|(_, r)| r.is_some()).count();
    println!(
        "{} messages acknowledged ({replies} replies); node-2 had shown {} before its kill",
        acked.len(),
        before_kill.len()
    );
    assert!(acked.len() >= 30, "too little traffic: {}", acked.len());
    assert!(replies >= 15, "too few replies: {replies}");
    assert!(!before_kill.is_empty());
    assert!(
        acked.keys().any(|id| id.starts_with("node-2:")),
        "node-2 posted nothing"
    );

    // Every node shows every acknowledged message, in a causal order.
    let mut held_back = 0;
    for n in NODES {
        let c = client(&file, n);
        let start = Instant::now();
        let messages = loop {
            let messages = room(&c).unwrap_or_default();
            let ids = check_node(n, &messages);
            if acked.keys().all(|id| ids.contains(id)) {
                break messages;
            }
            assert!(
                start.elapsed() < Duration::from_secs(60),
                "{n}: acknowledged messages missing after 60 s: {:?}",
                acked
                    .keys()
                    .filter(|id| !ids.contains(*id))
                    .collect::<Vec<_>>()
            );
            std::thread::sleep(Duration::from_millis(300));
        };
        for m in &messages {
            let id = m["id"].as_str().unwrap();
            if let Some((text, reply_to)) = acked.get(id) {
                assert_eq!(m["text"], json!(text), "{n}: {id}");
                assert_eq!(m["reply_to"], json!(reply_to), "{n}: {id}");
            }
            if m["held_back"] == json!(true) {
                held_back += 1;
            }
        }
        if n == "node-2" {
            let ids: BTreeSet<String> = messages
                .iter()
                .map(|m| m["id"].as_str().unwrap().to_string())
                .collect();
            assert!(
                before_kill.is_subset(&ids),
                "node-2 lost history across its kill"
            );
        }
        println!("{n}: {} messages, checked", messages.len());
    }
    println!("{held_back} deliveries waited in a hold-back queue");

    // The nodes' own traces: every delivery with its vector stamp, in
    // causal order (`troupe trace check`). node-2's is left out: a kill
    // between a delivery becoming durable and its trace line loses the
    // line (not the delivery), and the checker would then miss a cause.
    let traces: Vec<String> = ["node-1", "node-3"]
        .iter()
        .map(|n| dir.join(format!("{n}.trace.jsonl")).display().to_string())
        .collect();
    let mut args = vec!["trace", "check", "--causal"];
    args.extend(traces.iter().map(String::as_str));
    let out = troupe_run::troupe_ok(&args);
    let said = String::from_utf8_lossy(&out.stdout);
    println!("{said}");
    let text = std::fs::read_to_string(&traces[0]).expect("node-1's trace");
    let delivered = text
        .lines()
        .filter(|l| l.contains("\"ev\":\"delivered\""))
        .count();
    assert!(
        delivered >= acked.len(),
        "node-1's trace holds {delivered} deliveries, fewer than the {} acknowledged messages",
        acked.len()
    );

    // The terminal client.
    let out = troupe_run::troupe_ok(&[
        "chat",
        "--node",
        url(&file, "node-1"),
        "--room",
        ROOM,
        "--once",
    ]);
    let printed = String::from_utf8_lossy(&out.stdout);
    let (first_id, (first_text, _)) = acked.iter().next().expect("a message");
    assert!(
        printed.contains(&format!("{first_id} ")) && printed.contains(first_text.as_str()),
        "troupe chat --once does not show {first_id}: {printed}"
    );
    let mut child = Command::new(env!("CARGO_BIN_EXE_troupe"))
        .args(["chat", "--node", url(&file, "node-3"), "--room", ROOM])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("troupe chat");
    {
        let stdin = child.stdin.as_mut().expect("stdin");
        writeln!(stdin, "typed at the terminal").unwrap();
        writeln!(stdin, "/reply {first_id} a typed reply").unwrap();
    }
    let c1 = client(&file, "node-1");
    let start = Instant::now();
    loop {
        let messages = room(&c1).unwrap_or_default();
        check_node("node-1", &messages);
        let typed = messages
            .iter()
            .find(|m| m["text"] == "typed at the terminal");
        let reply = messages.iter().find(|m| m["text"] == "a typed reply");
        if let (Some(typed), Some(reply)) = (typed, reply) {
            assert!(typed["id"].as_str().unwrap().starts_with("node-3:"));
            assert_eq!(reply["reply_to"], json!(first_id));
            break;
        }
        assert!(
            start.elapsed() < Duration::from_secs(30),
            "node-1 does not show what was typed at node-3's terminal"
        );
        std::thread::sleep(Duration::from_millis(200));
    }
    writeln!(child.stdin.as_mut().unwrap(), "/quit").unwrap();
    let start = Instant::now();
    while child.try_wait().expect("wait").is_none() {
        assert!(
            start.elapsed() < Duration::from_secs(10),
            "/quit did not exit"
        );
        std::thread::sleep(Duration::from_millis(100));
    }
    let out = child.wait_with_output().expect("output");
    assert!(out.status.success());
    let shown = String::from_utf8_lossy(&out.stdout);
    assert!(
        shown.contains("node-3: a typed reply  (reply to"),
        "the terminal does not show the reply: {shown}"
    );
    troupe_run::troupe_ok(&["cluster", "down", "--dir", d]);
}
