//! Discovery, pub/sub and death-watch over real QUIC: three nodes in this
//! process, each on its own quinn endpoint on loopback (insecure dev mode,
//! heartbeat detector), started as `troupe node` starts them. Every node
//! finds the three registered workers, a publish reaches all three
//! subscribers once and in order, and a watch on another node's actor is
//! told its exit reason when it stops.
//!
//! The ignored test at the end is the QUIC half of the receptionist
//! benchmark (see BENCHMARKS.md, "Receptionist: time to visibility").

use std::collections::BTreeSet;
use std::net::UdpSocket;
use std::path::Path;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use serde::{Deserialize, Serialize};
use troupe::config::Config;
use troupe::framework::death_watch::{DeathReason, DeathWatch};
use troupe::framework::pubsub::{PubSub, Topic};
use troupe::framework::receptionist::{Receptionist, ServiceKey};
use troupe::framework::reliable_pubsub::{subscribe_reliable, ReliablePublisher};
use troupe::framework::ExitReason;
use troupe::prelude::*;

const NODES: [&str; 3] = ["a", "b", "c"];

#[derive(Debug, Clone, Serialize, Deserialize)]
struct Job(u32);
remote_message!(Job, "test.discovery-quic.job", u32);

struct Worker {
    me: String,
    got: Arc<Mutex<Vec<(String, u32)>>>,
}

impl Actor for Worker {
    type Context = Context<Self>;
}

impl Handler<Job> for Worker {
    type Result = u32;
    fn handle(&mut self, m: Job, _: &mut Context<Self>) -> u32 {
        self.got.lock().unwrap().push((self.me.clone(), m.0));
        m.0
    }
}

fn worker(name: &str, got: &Arc<Mutex<Vec<(String, u32)>>>) -> ActorSpec<Worker> {
    let got = got.clone();
    ActorSpec::with_context(name, move |cx| Worker {
        me: cx.path().to_string(),
        got: got.clone(),
    })
    .handles::<Job>()
    .restart(Restart::Temporary)
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

struct Member {
    running: RunningNode,
    receptionist: Receptionist,
    watch: DeathWatch,
}

async fn start_cluster() -> Vec<Member> {
    let ports = [free_port(), free_port(), free_port()];
    let mut out = Vec::new();
    for n in NODES {
        let running = start_node(config(n, &ports))
            .await
            .unwrap_or_else(|e| panic!("{n}: {e}"));
        // `start_node` starts both services on every node.
        let receptionist = running.receptionist.clone();
        let watch = running.death_watch.clone();
        out.push(Member {
            running,
            receptionist,
            watch,
        });
    }
    // Everyone Up everywhere.
    let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
    while !out
        .iter()
        .all(|m| m.running.node.membership().up().len() == NODES.len() - 1)
    {
        assert!(
            tokio::time::Instant::now() < deadline,
            "not all Up within 20 s"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    out
}

async fn wait_all_find(members: &[Member], key: &ServiceKey<Job>, truth: &BTreeSet<String>) {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
    loop {
        let seen: Vec<BTreeSet<String>> = members
            .iter()
            .map(|m| {
                m.receptionist
                    .find_paths(key)
                    .iter()
                    .map(|p| p.to_string())
                    .collect()
            })
            .collect();
        if seen.iter().all(|s| s == truth) {
            return;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "no convergence to {truth:?}: {seen:?}"
        );
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
}

#[actix_rt::test]
async fn discovery_pubsub_and_death_watch_over_quic() {
    let members = start_cluster().await;
    let got = Arc::new(Mutex::new(Vec::new()));
    let key: ServiceKey<Job> = ServiceKey::new("jobs").unwrap();
    let topic: Topic<Job> = Topic::new("jobs-feed").unwrap();
    for m in &members {
        m.running.node.spawn(worker("w", &got)).await.unwrap();
        m.receptionist.register(&key, "w").unwrap();
        PubSub::new(m.receptionist.clone())
            .subscribe(&topic, "w")
            .unwrap();
    }
    let truth: BTreeSet<String> = ["a/w", "b/w", "c/w"]
        .iter()
        .map(|s| s.to_string())
        .collect();
    wait_all_find(&members, &key, &truth).await;

    // The refs found are usable: ask each.
    for r in members[0].receptionist.find(&key) {
        let answer = r.ask(Job(5)).timeout(Duration::from_secs(5)).await.unwrap();
        assert_eq!(answer, 5);
    }

    // Publish from b: each subscriber once, in publish order.
    let ps = PubSub::new(members[1].receptionist.clone());
    got.lock().unwrap().clear();
    for i in 0..50 {
        assert_eq!(ps.publish(&topic, Job(i)).sent, 3);
    }
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    while got.lock().unwrap().len() < 150 {
        assert!(
            tokio::time::Instant::now() < deadline,
            "publish not delivered"
        );
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    tokio::time::sleep(Duration::from_millis(100)).await;
    let got_now = got.lock().unwrap().clone();
    assert_eq!(got_now.len(), 150, "a duplicate");
    for s in &truth {
        let seq: Vec<u32> = got_now
            .iter()
            .filter(|(p, _)| p == s)
            .map(|(_, i)| *i)
            .collect();
        assert_eq!(seq, (0..50).collect::<Vec<_>>(), "{s}");
    }

    // A reliable topic: every node's worker subscribes; a publishes;
    // each gets each message exactly once, in order.
    let reliable: Topic<Job> = Topic::new("jobs-reliable").unwrap();
    let mut receivers = Vec::new();
    for m in &members {
        receivers.push(
            subscribe_reliable(&m.receptionist, &reliable, "w")
                .await
                .unwrap(),
        );
    }
    let publisher = ReliablePublisher::new(members[0].receptionist.clone(), reliable).unwrap();
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    while publisher.subscribers().len() < 3 {
        assert!(
            tokio::time::Instant::now() < deadline,
            "reliable subscribers not seen"
        );
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    got.lock().unwrap().clear();
    for i in 0..200 {
        let p = publisher.publish(Job(i)).await;
        assert_eq!((p.sent, p.failed), (3, 0), "publish {i}");
    }
    tokio::time::timeout(Duration::from_secs(10), publisher.flush())
        .await
        .expect("acknowledged")
        .unwrap();
    let got_now = got.lock().unwrap().clone();
    for s in &truth {
        let seq: Vec<u32> = got_now
            .iter()
            .filter(|(p, _)| p == s)
            .map(|(_, i)| *i)
            .collect();
        assert_eq!(seq, (0..200).collect::<Vec<_>>(), "reliable {s}");
    }
    drop(receivers);

    // a watches c/w; c stops it; a is told, and c/w leaves every find.
    let watch = members[0]
        .watch
        .watch(&members[0].running.node.lookup::<Job>("c/w").unwrap());
    let ghost = members[0].watch.watch_path("c/ghost".parse().unwrap());
    let t = tokio::time::timeout(Duration::from_secs(5), ghost)
        .await
        .expect("no-such-actor answer");
    assert_eq!(t.reason, DeathReason::NoSuchActor);
    let deadline = tokio::time::Instant::now() + Duration::from_secs(5);
    while members[2].watch.watchers() == 0 {
        assert!(tokio::time::Instant::now() < deadline, "watch not placed");
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    members[2].running.node.stop_actor("w").await.unwrap();
    let t = tokio::time::timeout(Duration::from_secs(5), watch)
        .await
        .expect("told within 5 s");
    assert_eq!(t.reason, DeathReason::Stopped(ExitReason::Shutdown));
    let truth: BTreeSet<String> = ["a/w", "b/w"].iter().map(|s| s.to_string()).collect();
    wait_all_find(&members, &key, &truth).await;
    for m in &members {
        m.running.node.shutdown();
    }
}

/// Time from `register` on one node until every node's `find` lists it,
/// over QUIC on loopback, 3 nodes in this process; against the same run's
/// ask round trip. `cargo test --release --test discovery_quic -- --ignored --nocapture`.
#[actix_rt::test]
#[ignore = "benchmark: run with --ignored --nocapture"]
async fn bench_receptionist_visibility_quic() {
    use std::io::Write;
    let members = start_cluster().await;
    let got = Arc::new(Mutex::new(Vec::new()));
    let rounds = 200;
    let mut visible = Vec::new();
    let mut rtt = Vec::new();
    let probe = members[0].running.node.lookup::<Job>("b/w").unwrap();
    members[1]
        .running
        .node
        .spawn(worker("w", &got))
        .await
        .unwrap();
    for i in 0..rounds {
        // Interleaved: one ask round trip a -> b, then one registration.
        let t = std::time::Instant::now();
        probe
            .ask(Job(i))
            .timeout(Duration::from_secs(5))
            .await
            .unwrap();
        rtt.push(t.elapsed());
        let key: ServiceKey<Job> = ServiceKey::new(format!("bench-{i}")).unwrap();
        let from = &members[(i as usize) % 3];
        let name = format!("w{i}");
        from.running.node.spawn(worker(&name, &got)).await.unwrap();
        let t = std::time::Instant::now();
        from.receptionist.register(&key, &name).unwrap();
        while !members
            .iter()
            .all(|m| !m.receptionist.find_paths(&key).is_empty())
        {
            tokio::task::yield_now().await;
        }
        visible.push(t.elapsed());
    }
    visible.sort();
    rtt.sort();
    let p = |v: &[Duration], q: f64| v[((v.len() - 1) as f64 * q) as usize];
    let _ = writeln!(
        std::io::stderr(),
        "receptionist visibility, QUIC loopback, 3 nodes in one process, {rounds} registrations: \
         p50 {:?} p99 {:?}; ask round trip a->b p50 {:?} p99 {:?}; ratio p50 {:.2}",
        p(&visible, 0.5),
        p(&visible, 0.99),
        p(&rtt, 0.5),
        p(&rtt, 0.99),
        p(&visible, 0.5).as_secs_f64() / p(&rtt, 0.5).as_secs_f64()
    );
    for m in &members {
        m.running.node.shutdown();
    }
}

/// Nanoseconds of the host's wall clock (shared by the processes of the
/// three-process benchmark).
fn unix_ns() -> u128 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_nanos()
}

const CHILD_ENV: &str = "TROUPE_DISCOVERY_BENCH_CHILD";
const ROUNDS: u32 = 100;

/// One node of the three-process benchmark; does nothing unless started by
/// `bench_receptionist_visibility_3_processes` (which sets `CHILD_ENV` to
/// `name:port-a,port-b,port-c`). Talks on stdin/stdout, lines prefixed
/// `DISC `: prints `ready`, `reg <i> <ns>` when it registers key i (on
/// `reg <i>` from stdin, after one ask round trip to the next node, printed
/// as `rtt <i> <ns>`), `seen <i> <ns>` when its subscription to key i
/// first lists an actor.
#[actix_rt::test]
#[ignore = "a child process of bench_receptionist_visibility_3_processes"]
async fn discovery_bench_child_process() {
    use std::io::{BufRead, Write};
    let Ok(spec) = std::env::var(CHILD_ENV) else {
        return;
    };
    let (name, ports) = spec.split_once(':').unwrap();
    let ports: Vec<u16> = ports.split(',').map(|p| p.parse().unwrap()).collect();
    let ports = [ports[0], ports[1], ports[2]];
    let name = NODES.iter().find(|n| **n == name).unwrap();
    let running = start_node(config(name, &ports)).await.unwrap();
    let node = running.node.clone();
    let receptionist = running.receptionist.clone();
    let got = Arc::new(Mutex::new(Vec::new()));
    node.spawn(worker("w", &got)).await.unwrap();
    for i in 0..ROUNDS {
        node.spawn(worker(&format!("w{i}"), &got)).await.unwrap();
    }
    let say = |line: String| {
        let mut out = std::io::stdout().lock();
        let _ = writeln!(out, "DISC {line}");
        let _ = out.flush();
    };
    while node.membership().up().len() < 2 {
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    // Every node serves `w`: wait until the others' are reachable.
    let next = NODES[(NODES.iter().position(|n| n == name).unwrap() + 1) % 3];
    let probe = node.lookup::<Job>(&format!("{next}/w")).unwrap();
    while probe
        .ask(Job(0))
        .timeout(Duration::from_secs(1))
        .await
        .is_err()
    {}
    say("ready".into());
    // Follow every key: told when the key's set changes (no polling).
    for i in 0..ROUNDS {
        let key: ServiceKey<Job> = ServiceKey::new(format!("bench-{i}")).unwrap();
        let mut sub = receptionist.subscribe(&key);
        actix_rt::spawn(async move {
            while let Some(set) = sub.next_paths().await {
                if !set.is_empty() {
                    say(format!("seen {i} {}", unix_ns()));
                    return;
                }
            }
        });
    }
    let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel::<String>();
    std::thread::spawn(move || {
        for line in std::io::stdin().lock().lines() {
            let Ok(line) = line else { break };
            if tx.send(line).is_err() {
                break;
            }
        }
    });
    while let Some(line) = rx.recv().await {
        let mut words = line.split_whitespace();
        match (words.next(), words.next()) {
            (Some("reg"), Some(i)) => {
                let i: u32 = i.parse().unwrap();
                let t = std::time::Instant::now();
                probe
                    .ask(Job(i))
                    .timeout(Duration::from_secs(5))
                    .await
                    .unwrap();
                say(format!("rtt {i} {}", t.elapsed().as_nanos()));
                let key: ServiceKey<Job> = ServiceKey::new(format!("bench-{i}")).unwrap();
                let t0 = unix_ns();
                receptionist.register(&key, &format!("w{i}")).unwrap();
                say(format!("reg {i} {t0}"));
            }
            _ => break,
        }
    }
    node.shutdown();
}

/// The receptionist benchmark on a three-process QUIC cluster (loopback,
/// insecure dev mode, heartbeat detector): this test binary started three
/// times as `discovery_bench_child_process`. For each of 100 keys, one
/// process (in turn) registers an actor; the time until all three
/// processes' subscription to the key lists it (wall clock of the host),
/// and,
/// as the baseline in the same run, the registering process's ask round
/// trip to the next one just before.
/// `cargo test --release --test discovery_quic -- --ignored --nocapture bench_receptionist_visibility_3_processes`
#[test]
#[ignore = "benchmark: run with --ignored --nocapture"]
fn bench_receptionist_visibility_3_processes() {
    use std::io::{BufRead, BufReader, Write};
    use std::process::{Command, Stdio};
    let ports = [free_port(), free_port(), free_port()];
    let spec = format!("{},{},{}", ports[0], ports[1], ports[2]);
    let exe = std::env::current_exe().unwrap();
    let (lines_tx, lines_rx) = std::sync::mpsc::channel::<(usize, String)>();
    let mut children = Vec::new();
    let mut stdins = Vec::new();
    for (k, name) in NODES.iter().enumerate() {
        let mut child = Command::new(&exe)
            .args([
                "--exact",
                "discovery_bench_child_process",
                "--ignored",
                "--nocapture",
            ])
            .env(CHILD_ENV, format!("{name}:{spec}"))
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        stdins.push(child.stdin.take().unwrap());
        let out = child.stdout.take().unwrap();
        let tx = lines_tx.clone();
        std::thread::spawn(move || {
            for line in BufReader::new(out).lines().map_while(Result::ok) {
                if let Some(l) = line.strip_prefix("DISC ") {
                    let _ = tx.send((k, l.to_string()));
                }
            }
        });
        children.push(child);
    }
    let next = |what: &str| -> (usize, Vec<String>) {
        let (k, l) = lines_rx
            .recv_timeout(Duration::from_secs(60))
            .unwrap_or_else(|_| panic!("no {what} from the children within 60 s"));
        (k, l.split_whitespace().map(str::to_string).collect())
    };
    let mut ready = 0;
    while ready < 3 {
        if next("ready").1[0] == "ready" {
            ready += 1;
        }
    }
    let (mut visible, mut rtt) = (Vec::new(), Vec::new());
    for i in 0..ROUNDS {
        let k = i as usize % 3;
        writeln!(stdins[k], "reg {i}").unwrap();
        let (mut t0, mut seen) = (None, Vec::new());
        while t0.is_none() || seen.len() < 3 {
            let (_, w) = next("progress");
            let n: u32 = w[1].parse().unwrap();
            let v: u128 = w[2].parse().unwrap();
            match w[0].as_str() {
                "rtt" if n == i => rtt.push(Duration::from_nanos(v as u64)),
                "reg" if n == i => t0 = Some(v),
                "seen" if n == i => seen.push(v),
                _ => {}
            }
        }
        let last = seen.into_iter().max().unwrap();
        visible.push(Duration::from_nanos((last - t0.unwrap()) as u64));
    }
    for (mut s, mut c) in stdins.into_iter().zip(children) {
        let _ = writeln!(s, "quit");
        drop(s);
        let _ = c.wait();
    }
    visible.sort();
    rtt.sort();
    let p = |v: &[Duration], q: f64| v[((v.len() - 1) as f64 * q) as usize];
    let _ = writeln!(
        std::io::stderr(),
        "receptionist visibility, QUIC loopback, 3 processes, {ROUNDS} registrations: \
         p50 {:?} p90 {:?} p99 {:?}; ask round trip p50 {:?} p99 {:?}; ratio p50 {:.2}",
        p(&visible, 0.5),
        p(&visible, 0.9),
        p(&visible, 0.99),
        p(&rtt, 0.5),
        p(&rtt, 0.99),
        p(&visible, 0.5).as_secs_f64() / p(&rtt, 0.5).as_secs_f64()
    );
}
