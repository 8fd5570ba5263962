//! Traces from real nodes: two nodes over QUIC on loopback (started as
//! `troupe node` starts them, insecure dev mode), each with a `[trace]
//! file`. After tells, an ask and a lock taken and given back, the two
//! files together hold a send for every delivery (matched by `(from,
//! seq)`), the reply's send names its ask as `cause`, the lock's protocol
//! messages name the message whose handling sent them, the lock shows up as
//! note lines, and `troupe trace view` draws the messages as arrows
//! between the two lanes.

use std::collections::{BTreeMap, BTreeSet};
use std::net::UdpSocket;
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::{Deserialize, Serialize};
use serde_json::Value;
use troupe::config::Config;
use troupe::prelude::*;

#[path = "troupe_run/mod.rs"]
mod troupe_run;

const NODES: [&str; 2] = ["a", "b"];

#[derive(Debug, Serialize, Deserialize)]
struct Ping(u32);
remote_message!(Ping, "trace_test.ping", ());

#[derive(Debug, Serialize, Deserialize)]
struct Double(u64);
remote_message!(Double, "trace_test.double", u64);

struct Worker;

impl Actor for Worker {
    type Context = Context<Self>;
}

impl Handler<Ping> for Worker {
    type Result = ();
    fn handle(&mut self, _: Ping, _: &mut Context<Self>) {}
}

impl Handler<Double> for Worker {
    type Result = u64;
    fn handle(&mut self, m: Double, _: &mut Context<Self>) -> u64 {
        m.0 * 2
    }
}

fn free_port() -> u16 {
    UdpSocket::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

fn config(name: &str, ports: &[u16; 2], trace: &Path) -> Config {
    let mut text = format!(
        "name = \"{name}\"\nlisten = \"127.0.0.1:{}\"\n[tls]\ninsecure_dev_mode = true\n\
         [failure_detector]\nkind = \"heartbeat\"\ninterval_ms = 100\nacceptable_pause_ms = 2000\n\
         [trace]\nfile = {:?}\nformat = \"{}\"\n",
        ports[NODES.iter().position(|n| *n == name).unwrap()],
        trace.to_str().unwrap(),
        // Node a records the binary format, b JSON lines: read alike.
        if name == "a" { "binary" } else { "jsonl" },
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

fn read_lines(path: &Path) -> Vec<Value> {
    let d = troupe::framework::trace::read_jsonl(path).unwrap();
    assert!(d.damaged.is_empty(), "{:?}", d.damaged);
    d.jsonl
        .lines()
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("{l}: {e}")))
        .collect()
}

#[actix_rt::test]
async fn two_quic_nodes_trace_matching_sends_and_deliveries_and_replies_name_their_ask() {
    let dir = std::env::temp_dir().join(format!("troupe-trace-quic-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    let files: Vec<PathBuf> = NODES
        .iter()
        .map(|n| dir.join(format!("{n}.trace")))
        .collect();
    let ports = [free_port(), free_port()];
    let members: Vec<String> = NODES.iter().map(|n| n.to_string()).collect();
    let mut running = Vec::new();
    let mut locks = Vec::new();
    for (n, file) in NODES.iter().zip(&files) {
        let node = start_node(config(n, &ports, file))
            .await
            .unwrap_or_else(|e| panic!("{n}: {e}"));
        locks.push(
            start_lock(&node.node, "door", MutexAlgorithm::RicartAgrawala, &members)
                .await
                .unwrap(),
        );
        running.push(node);
    }
    let (a, b) = (&running[0].node, &running[1].node);
    b.spawn(
        ActorSpec::new("w", || Worker)
            .handles::<Ping>()
            .handles::<Double>(),
    )
    .await
    .unwrap();
    let start = tokio::time::Instant::now();
    for r in &running {
        while r
            .node
            .membership()
            .iter()
            .any(|(_, s)| s != MemberStatus::Up)
            || r.node.membership().iter().count() < 1
        {
            assert!(start.elapsed() < Duration::from_secs(10), "not all up");
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    let ping = a.lookup::<Ping>("b/w").unwrap();
    let double = a.lookup::<Double>("b/w").unwrap();
    for i in 0..20 {
        ping.tell(Ping(i)).unwrap();
    }
    let answer = double
        .ask(Double(21))
        .timeout(Duration::from_secs(10))
        .await
        .unwrap();
    assert_eq!(answer, 42);
    let guard = locks[0]
        .acquire_within(Duration::from_secs(10))
        .await
        .unwrap();
    guard.release().await;
    // Let the last frames arrive, then write the traces out.
    tokio::time::sleep(Duration::from_millis(300)).await;
    for r in &running {
        r.node.flush_trace();
    }

    let lines: Vec<Value> = files.iter().flat_map(|f| read_lines(f)).collect();
    let of = |node: &str, ev: &str| -> Vec<&Value> {
        lines
            .iter()
            .filter(|l| l["node"] == node && l["ev"] == ev)
            .collect()
    };
    // Every send, by (sender, seq); seqs are unique per sender.
    let mut sends: BTreeMap<(String, u64), &Value> = BTreeMap::new();
    for l in lines.iter().filter(|l| l["ev"] == "send") {
        let key = (
            l["node"].as_str().unwrap().to_string(),
            l["seq"].as_u64().unwrap(),
        );
        assert_eq!(l["lamport"], l["seq"], "{l}");
        assert!(sends.insert(key, l).is_none(), "seq used twice: {l}");
    }
    let mut delivered = 0;
    for l in lines.iter().filter(|l| l["ev"] == "deliver") {
        let key = (
            l["from"].as_str().unwrap().to_string(),
            l["seq"].as_u64().unwrap(),
        );
        let send = sends
            .get(&key)
            .unwrap_or_else(|| panic!("no send for delivery {l}"));
        assert_eq!(send["to"], l["node"], "{l} vs {send}");
        delivered += 1;
    }
    // The 20 tells, the ask and its reply at least (plus heartbeats and
    // the lock's messages).
    let tells: Vec<_> = of("a", "send")
        .into_iter()
        .filter(|l| l["tag"] == "trace_test.ping")
        .collect();
    assert_eq!(tells.len(), 20);
    assert!(tells.iter().all(|l| l["kind"] == "tell" && l["to"] == "b"));
    assert!(delivered >= 22, "{delivered} deliveries");
    let delivered_at_b: BTreeSet<u64> = of("b", "deliver")
        .iter()
        .filter(|l| l["from"] == "a")
        .map(|l| l["seq"].as_u64().unwrap())
        .collect();
    for t in &tells {
        assert!(delivered_at_b.contains(&t["seq"].as_u64().unwrap()), "{t}");
    }
    let asks: Vec<_> = of("a", "send")
        .into_iter()
        .filter(|l| l["kind"] == "ask" && l["tag"] == "trace_test.double")
        .collect();
    assert_eq!(asks.len(), 1);
    let ask_seq = asks[0]["seq"].as_u64().unwrap();
    let replies: Vec<_> = of("b", "send")
        .into_iter()
        .filter(|l| l["kind"] == "reply" && l["cause"] == serde_json::json!(["a", ask_seq]))
        .collect();
    assert_eq!(replies.len(), 1, "the reply names its ask as its cause");
    assert!(of("a", "deliver")
        .iter()
        .any(|l| l["from"] == "b" && l["seq"] == replies[0]["seq"]));
    // Beyond replies: a protocol message sent while its driver handled a
    // remote one names that one as its cause (Ricart-Agrawala: the reply
    // to a request), and every cause is a frame its node had received.
    let mut caused = 0;
    for node in NODES {
        let mut received = BTreeSet::new();
        for l in lines.iter().filter(|l| l["node"] == node) {
            if l["ev"] == "deliver" {
                received.insert((
                    l["from"].as_str().unwrap().to_string(),
                    l["seq"].as_u64().unwrap(),
                ));
            }
            if l["ev"] != "send" || l["kind"] == "reply" || l["cause"].is_null() {
                continue;
            }
            let cause = (
                l["cause"][0].as_str().unwrap().to_string(),
                l["cause"][1].as_u64().unwrap(),
            );
            assert!(
                received.contains(&cause),
                "{l}: a cause {node} had not received"
            );
            caused += 1;
        }
    }
    assert!(caused >= 1, "no protocol message names its cause");
    let notes: Vec<&str> = of("a", "note")
        .iter()
        .filter_map(|l| l["text"].as_str())
        .collect();
    assert!(
        notes.iter().any(|t| t.contains("mutex.door: lock granted")),
        "{notes:?}"
    );
    assert!(
        notes
            .iter()
            .any(|t| t.contains("mutex.door: lock released")),
        "{notes:?}"
    );

    // Node a's file is binary; `troupe trace jsonl` gives its lines.
    assert_eq!(std::fs::read(&files[0]).unwrap().first(), Some(&0));
    let out = troupe_run::troupe_ok(&["trace", "jsonl", files[0].to_str().unwrap()]);
    let converted = String::from_utf8(out.stdout).unwrap();
    assert_eq!(
        converted.lines().count(),
        read_lines(&files[0]).len(),
        "troupe trace jsonl"
    );

    // The viewer pairs them too (one file binary, one JSON lines): one
    // arrow per delivery, on two lanes.
    let html = dir.join("view.html");
    let out = troupe_run::troupe_ok(&[
        "trace",
        "view",
        "-o",
        html.to_str().unwrap(),
        files[0].to_str().unwrap(),
        files[1].to_str().unwrap(),
    ]);
    let summary =
        String::from_utf8_lossy(&out.stdout).into_owned() + &String::from_utf8_lossy(&out.stderr);
    let arrows = summary
        .split(" message arrows")
        .next()
        .and_then(|s| s.rsplit(' ').next())
        .and_then(|n| n.parse::<usize>().ok())
        .unwrap_or_else(|| panic!("no arrow count in {summary:?}"));
    assert!(summary.contains("on 2 lanes"), "{summary}");
    assert!(
        arrows >= delivered,
        "{arrows} arrows for {delivered} deliveries: {summary}"
    );

    for r in &running {
        r.shutdown().await;
    }
    let _ = std::fs::remove_dir_all(&dir);
}
