//! `GET /metrics`: two real nodes over QUIC (insecure dev mode, loopback,
//! each with its HTTP endpoint) exchange tells and asks, run an election
//! and a lock, and their scrapes are checked with a strict parser of the
//! Prometheus text format (written here, and tested to refuse what the
//! format forbids), against the naming conventions (`troupe_` prefix,
//! `_total` on counters and only there, base units) and against the
//! traffic sent (exact counts where nothing can retry). Also: `promtool
//! check metrics` on a real scrape when promtool is installed (SKIPPED
//! otherwise, said on stderr), the token and 404/405 on `/metrics`,
//! `[runtime] message_metrics = false`, nodes of one process (the
//! simulator) keeping separate numbers, Raft, broadcast and commit
//! reporting their views and events (simulated), and every metric served
//! being listed in `troupe::metrics`' docs.

use std::collections::BTreeMap;
use std::io::Write;
use std::net::{SocketAddr, UdpSocket};
use std::path::Path;
use std::time::Duration;

use serde::{Deserialize, Serialize};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use troupe::config::Config;
use troupe::framework::AskError;
use troupe::prelude::*;

mod common;

const TOKEN: &str = "metrics-token-0123456789";
const TELLS: u64 = 25;

#[derive(Debug, Serialize, Deserialize)]
struct Bump;
remote_message!(Bump, "metrics_test.bump", ());

#[derive(Debug, Serialize, Deserialize)]
struct Read;
remote_message!(Read, "metrics_test.read", u64);

#[derive(Default)]
struct Counter(u64);
impl Actor for Counter {
    type Context = Context<Self>;
}
impl Handler<Bump> for Counter {
    type Result = ();
    fn handle(&mut self, _: Bump, _: &mut Context<Self>) {
        self.0 += 1;
    }
}
impl Handler<Read> for Counter {
    type Result = u64;
    fn handle(&mut self, _: Read, _: &mut Context<Self>) -> u64 {
        self.0
    }
}

fn free_port() -> u16 {
    UdpSocket::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// Node `name` of {a, b} on `ports`, phi-accrual, `[http]` on a free
/// port with `http_extra`, and `runtime` in `[runtime]`.
fn config(name: &str, ports: [u16; 2], http_extra: &str, runtime: &str) -> Config {
    let names = ["a", "b"];
    let me = names.iter().position(|n| *n == name).unwrap();
    let (peer, peer_port) = (names[1 - me], ports[1 - me]);
    let text = format!(
        "name = \"{name}\"\nlisten = \"127.0.0.1:{}\"\n[tls]\ninsecure_dev_mode = true\n\
         [[peers]]\nname = \"{peer}\"\naddr = \"127.0.0.1:{peer_port}\"\n\
         [failure_detector]\nkind = \"phi-accrual\"\n\
         [runtime]\n{runtime}\n\
         [http]\nlisten = \"127.0.0.1:0\"\n{http_extra}",
        ports[me]
    );
    Config::from_toml(&text, Path::new(".")).unwrap_or_else(|e| panic!("{name}: config: {e}"))
}

/// A raw HTTP/1.1 exchange: (status, headers lower-cased, body).
async fn http(
    addr: SocketAddr,
    method: &str,
    path: &str,
    headers: &[(&str, &str)],
) -> (u16, BTreeMap<String, String>, String) {
    let mut s = tokio::net::TcpStream::connect(addr).await.expect("connect");
    let mut head = format!(
        "{method} {path} HTTP/1.1\r\nHost: test\r\nConnection: close\r\nContent-Length: 0\r\n"
    );
    for (k, v) in headers {
        head.push_str(&format!("{k}: {v}\r\n"));
    }
    head.push_str("\r\n");
    s.write_all(head.as_bytes()).await.expect("write");
    let mut raw = Vec::new();
    tokio::time::timeout(Duration::from_secs(20), s.read_to_end(&mut raw))
        .await
        .expect("an answer within 20 s")
        .expect("read");
    let text = String::from_utf8(raw).expect("UTF-8");
    let (head, body) = text.split_once("\r\n\r\n").expect("a head");
    let mut lines = head.lines();
    let code = lines
        .next()
        .and_then(|l| l.split_whitespace().nth(1))
        .and_then(|c| c.parse().ok())
        .expect("a status line");
    let headers = lines
        .filter_map(|l| l.split_once(':'))
        .map(|(k, v)| (k.trim().to_ascii_lowercase(), v.trim().to_string()))
        .collect();
    (code, headers, body.to_string())
}

/// `GET /metrics`, checked: 200, the text format's content type, a body
/// that parses strictly and follows the conventions.
async fn scrape(addr: SocketAddr, token: Option<&str>) -> (String, Exposition) {
    let auth = token.map(|t| format!("Bearer {t}"));
    let headers: Vec<(&str, &str)> = auth.iter().map(|a| ("Authorization", a.as_str())).collect();
    let (code, head, body) = http(addr, "GET", "/metrics", &headers).await;
    assert_eq!(code, 200, "{body}");
    let ct = head.get("content-type").map(String::as_str).unwrap_or("");
    assert!(
        ct.starts_with("text/plain; version=0.0.4"),
        "content type {ct:?}"
    );
    let exp = parse(&body).unwrap_or_else(|e| panic!("{e}\n{body}"));
    if let Err(e) = check_conventions(&exp) {
        panic!("{e}\n{body}");
    }
    (body, exp)
}

async fn wait_up(nodes: &[&RunningNode]) {
    let start = tokio::time::Instant::now();
    for r in nodes {
        while r
            .node
            .membership()
            .iter()
            .any(|(_, s)| s != MemberStatus::Up)
        {
            assert!(
                start.elapsed() < Duration::from_secs(15),
                "not all up: {:?}",
                r.node.membership()
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }
}

/// What [`cluster`] did.
struct Cluster {
    a: RunningNode,
    b: RunningNode,
    /// Asks of `Read` answered by the counter (the failed one not included).
    asks: u64,
    /// a's scrape before any test traffic.
    before: Exposition,
    /// b's app.
    app: App,
}

/// a and b up, b running app `shop` with actor `counter`; a sends it
/// [`TELLS`] tells and asks until it has seen them all, plus one ask to a
/// missing actor; both run an election and a lock that a takes and
/// releases once. a's endpoint wants [`TOKEN`].
async fn cluster(a_runtime: &str) -> Cluster {
    let ports = [free_port(), free_port()];
    let a = start_node(config(
        "a",
        ports,
        &format!("token = \"{TOKEN}\"\n"),
        a_runtime,
    ))
    .await
    .expect("a starts");
    let b = start_node(config("b", ports, "", ""))
        .await
        .expect("b starts");
    wait_up(&[&a, &b]).await;
    let app = start_app(
        &b.node,
        AppSpec::new("shop").child(
            ActorSpec::new("counter", Counter::default)
                .handles::<Bump>()
                .handles::<Read>(),
        ),
    )
    .await
    .expect("app");
    let before = scrape(a.http_addr().unwrap(), Some(TOKEN)).await.1;

    let bump = a.node.lookup::<Bump>("b/counter").unwrap();
    for _ in 0..TELLS {
        bump.tell(Bump).expect("tell");
    }
    let read = a.node.lookup::<Read>("b/counter").unwrap();
    let mut asks = 0;
    loop {
        let seen = read
            .ask(Read)
            .timeout(Duration::from_secs(10))
            .await
            .expect("ask");
        asks += 1;
        if seen == TELLS {
            break;
        }
        assert!(asks < 500, "the counter saw only {seen} tells");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    let missing = a.node.lookup::<Read>("b/nobody").unwrap();
    let err = missing
        .ask(Read)
        .timeout(Duration::from_secs(10))
        .await
        .unwrap_err();
    assert!(matches!(err, AskError::Remote(_)), "{err}");

    let members = vec!["a".to_string(), "b".to_string()];
    let mut elections = Vec::new();
    let mut locks = Vec::new();
    for n in [&a, &b] {
        elections.push(
            start_election(&n.node, ElectionAlgorithm::Bully, &members)
                .await
                .expect("election"),
        );
        locks.push(
            start_lock(&n.node, "ledger", MutexAlgorithm::RicartAgrawala, &members)
                .await
                .expect("lock"),
        );
    }
    for e in &elections {
        e.wait_for_leader(Duration::from_secs(15))
            .await
            .expect("a leader");
    }
    let guard = tokio::time::timeout(Duration::from_secs(15), locks[0].acquire())
        .await
        .expect("granted within 15 s")
        .expect("granted");
    guard.release().await;
    Cluster {
        a,
        b,
        asks,
        before,
        app,
    }
}

#[actix_rt::test]
async fn metrics_follow_the_traffic_the_protocols_and_the_conventions() {
    let c = cluster("").await;
    let (a_http, b_http) = (c.a.http_addr().unwrap(), c.b.http_addr().unwrap());
    let (_, a) = scrape(a_http, Some(TOKEN)).await;
    let (_, b) = scrape(b_http, None).await;
    let tell = [
        ("peer", "b"),
        ("type", "metrics_test.bump"),
        ("kind", "tell"),
    ];
    let told = |peer| {
        [
            ("peer", peer),
            ("type", "metrics_test.bump"),
            ("kind", "tell"),
        ]
    };
    let asked = |peer, kind| {
        [
            ("peer", peer),
            ("type", "metrics_test.read"),
            ("kind", kind),
        ]
    };

    // Tells are never retried: exact, and the same bytes on both sides.
    assert_eq!(c.before.get("troupe_messages_sent_total", &tell), None);
    assert_eq!(
        a.get("troupe_messages_sent_total", &tell),
        Some(TELLS as f64)
    );
    assert_eq!(
        b.get("troupe_messages_received_total", &told("a")),
        Some(TELLS as f64)
    );
    let bytes = a.get("troupe_sent_bytes_total", &tell).unwrap();
    assert!(
        bytes >= (TELLS * 20) as f64,
        "{bytes} bytes for {TELLS} tells"
    );
    assert_eq!(
        b.get("troupe_received_bytes_total", &told("a")),
        Some(bytes),
        "the receiver counts the frames the sender counted"
    );

    // Asks: copies may be re-sent on a slow machine, answers count once.
    let asks = c.asks as f64;
    let sent = a
        .get("troupe_messages_sent_total", &asked("b", "ask"))
        .unwrap();
    assert!(sent >= asks + 1.0, "{sent} asks sent, {asks} + 1 made");
    assert_eq!(
        a.get("troupe_messages_received_total", &asked("b", "reply")),
        Some(asks + 1.0),
        "every answer, the error one included"
    );
    let received = b
        .get("troupe_messages_received_total", &asked("a", "ask"))
        .unwrap();
    assert!(
        received >= asks,
        "{received} asks received, {asks} executed"
    );
    let replied = b
        .get("troupe_messages_sent_total", &asked("a", "reply"))
        .unwrap();
    assert!(replied >= asks, "{replied} replies sent, {asks} asks");
    let read = [("peer", "b"), ("type", "metrics_test.read")];
    assert_eq!(
        a.get("troupe_ask_duration_seconds_count", &read),
        Some(asks + 1.0)
    );
    let sum = a.get("troupe_ask_duration_seconds_sum", &read).unwrap();
    assert!(sum > 0.0 && sum < 10.0 * (asks + 1.0), "{sum}");
    assert_eq!(
        a.get(
            "troupe_asks_failed_total",
            &[
                ("peer", "b"),
                ("type", "metrics_test.read"),
                ("reason", "refused")
            ]
        ),
        Some(1.0)
    );
    // The ask to a missing actor (and perhaps protocol messages that
    // arrived before their instance started on b).
    assert!(b.get("troupe_undeliverable_messages_total", &[]).unwrap() >= 1.0);
    assert!(b.get("troupe_frames_received_total", &[]).unwrap() >= TELLS as f64 + asks);
    assert_eq!(a.get("troupe_asks_in_flight", &[]), Some(0.0));
    assert!(a.get("troupe_inbound_in_flight_limit", &[]).unwrap() > 0.0);

    // Membership and the failure detector.
    let member = |m, s| [("member", m), ("status", s)];
    assert_eq!(a.get("troupe_member_status", &member("b", "Up")), Some(1.0));
    assert_eq!(
        a.get("troupe_member_status", &member("b", "Down")),
        Some(0.0)
    );
    assert!(
        a.get("troupe_member_transitions_total", &member("b", "Up"))
            .unwrap()
            >= 1.0
    );
    let phi = a.get("troupe_member_phi", &[("member", "b")]).unwrap();
    assert!(phi.is_finite() && phi >= 0.0, "phi {phi}");
    assert_eq!(
        a.get(
            "troupe_node_info",
            &[("node", "a"), ("detector", "phi-accrual")]
        ),
        Some(1.0)
    );

    // Protocols.
    let election = [("protocol", "election")];
    for exp in [&a, &b] {
        assert!(exp.get("troupe_election_term", &election).unwrap() >= 1.0);
        assert_eq!(
            exp.get("troupe_election_leader_known", &election),
            Some(1.0)
        );
        assert!(exp.get("troupe_elections_total", &election).unwrap() >= 1.0);
    }
    let lock = [("protocol", "mutex.ledger")];
    assert_eq!(a.get("troupe_lock_grants_total", &lock), Some(1.0));
    assert_eq!(a.get("troupe_lock_releases_total", &lock), Some(1.0));
    assert_eq!(a.get("troupe_lock_held", &lock), Some(0.0));
    assert_eq!(
        b.get("troupe_lock_grants_total", &lock),
        None,
        "b never held it"
    );
    assert_eq!(b.get("troupe_lock_held", &lock), Some(0.0));

    // Apps and restarts.
    let shop = |s| [("app", "shop"), ("state", s)];
    assert_eq!(b.get("troupe_app_state", &shop("running")), Some(1.0));
    assert_eq!(b.get("troupe_app_state", &shop("stopped")), Some(0.0));
    assert_eq!(
        b.get("troupe_app_restarts_total", &[("app", "shop")]),
        Some(0.0)
    );
    // The restart is carried out by the apps' supervisor after `restart`
    // returns: the count moves within a few scrapes.
    c.app.restart().await.expect("restart");
    let start = tokio::time::Instant::now();
    let b2 = loop {
        let (_, b2) = scrape(b_http, None).await;
        match b2.get("troupe_app_restarts_total", &[("app", "shop")]) {
            Some(1.0) => break b2,
            n => assert!(
                start.elapsed() < Duration::from_secs(10),
                "shop restarted once, counted {n:?}"
            ),
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    };
    assert_eq!(
        b2.get("troupe_restarts_total", &[("child", "election")]),
        Some(0.0)
    );

    // The endpoint counts its own requests.
    assert!(b2.get("troupe_http_requests_total", &[]).unwrap() >= 2.0);

    // Every metric served is listed, with its type, in `troupe::metrics`.
    let listed = documented();
    for exp in [&a, &b, &b2] {
        for (name, (kind, _)) in &exp.families {
            assert_eq!(
                listed.get(name),
                Some(kind),
                "{name} ({kind}) is not listed with that type in src/metrics.rs"
            );
        }
    }
    c.a.shutdown().await;
    c.b.shutdown().await;
}

/// The metrics listed in `troupe::metrics`' docs: name -> type.
fn documented() -> BTreeMap<String, String> {
    let path = concat!(env!("CARGO_MANIFEST_DIR"), "/src/metrics.rs");
    let text = std::fs::read_to_string(path).expect("src/metrics.rs");
    let listed: BTreeMap<String, String> = text
        .lines()
        .filter_map(|l| l.strip_prefix("//! | `troupe_"))
        .filter_map(|row| {
            let (name, rest) = row.split_once('`')?;
            let kind = rest.split('|').nth(1)?.trim();
            Some((format!("troupe_{name}"), kind.to_string()))
        })
        .collect();
    assert!(listed.len() > 40, "the list in src/metrics.rs: {listed:?}");
    listed
}

/// Runs `promtool check metrics` on a real scrape; says SKIPPED (on
/// stderr, which a plain `cargo test` shows) when promtool is missing.
#[actix_rt::test]
async fn promtool_accepts_a_real_scrape() {
    let Ok(version) = std::process::Command::new("promtool")
        .arg("--version")
        .output()
    else {
        let _ = writeln!(
            std::io::stderr(),
            "SKIPPED promtool_accepts_a_real_scrape: promtool is not installed \
             (Debian: apt-get install prometheus; scripts/test.sh installs it as root)"
        );
        return;
    };
    assert!(version.status.success(), "promtool --version failed");
    let c = cluster("").await;
    for (addr, token) in [
        (c.a.http_addr().unwrap(), Some(TOKEN)),
        (c.b.http_addr().unwrap(), None),
    ] {
        let (text, _) = scrape(addr, token).await;
        let (ok, out) = promtool_check(&text);
        assert!(
            ok,
            "promtool check metrics refused the scrape:\n{out}\n{text}"
        );
    }
    // And it is a real check: it refuses a counter without `_total`.
    let (ok, _) = promtool_check("# HELP troupe_x X.\n# TYPE troupe_x counter\ntroupe_x 1\n");
    assert!(!ok, "promtool accepted a counter without _total");
    c.a.shutdown().await;
    c.b.shutdown().await;
}

/// `promtool check metrics` on `text`: (success, what it said).
fn promtool_check(text: &str) -> (bool, String) {
    use std::process::{Command, Stdio};
    let mut child = Command::new("promtool")
        .args(["check", "metrics"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("promtool runs");
    child
        .stdin
        .take()
        .unwrap()
        .write_all(text.as_bytes())
        .expect("write to promtool");
    let out = child.wait_with_output().expect("promtool ends");
    (
        out.status.success(),
        format!(
            "{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        ),
    )
}

#[actix_rt::test]
async fn metrics_obey_the_token_and_answer_404_and_405_in_json() {
    let ports = [free_port(), free_port()];
    let a = start_node(config("a", ports, &format!("token = \"{TOKEN}\"\n"), ""))
        .await
        .expect("a starts");
    let addr = a.http_addr().unwrap();
    let bearer = format!("Bearer {TOKEN}");
    let auth = [("Authorization", bearer.as_str())];
    let json = |body: &str| -> serde_json::Value {
        serde_json::from_str(body).unwrap_or_else(|e| panic!("not JSON ({e}): {body}"))
    };
    for headers in [&[][..], &[("Authorization", "Bearer wrong")][..]] {
        let (code, head, body) = http(addr, "GET", "/metrics", headers).await;
        assert_eq!(code, 401, "{body}");
        assert!(head["content-type"].starts_with("application/json"));
        assert_eq!(json(&body)["status"], 401);
    }
    let (code, _, body) = http(addr, "POST", "/metrics", &auth).await;
    assert_eq!(code, 405, "{body}");
    assert_eq!(json(&body)["status"], 405);
    for path in ["/metrics/extra", "/v1/metrics"] {
        let (code, _, body) = http(addr, "GET", path, &auth).await;
        assert_eq!(code, 404, "{path}: {body}");
        assert_eq!(json(&body)["status"], 404);
    }
    let (_, exp) = scrape(addr, Some(TOKEN)).await;
    let code = |c| [("code", c)];
    assert_eq!(
        exp.get("troupe_http_rejected_total", &code("401")),
        Some(2.0)
    );
    assert_eq!(
        exp.get("troupe_http_rejected_total", &code("405")),
        Some(1.0)
    );
    assert_eq!(
        exp.get("troupe_http_rejected_total", &code("404")),
        Some(2.0)
    );
    assert_eq!(exp.get("troupe_http_requests_total", &[]), Some(6.0));
    a.shutdown().await;
}

#[actix_rt::test]
async fn message_metrics_off_leaves_the_per_message_counters_out() {
    let c = cluster("message_metrics = false").await;
    let (text, a) = scrape(c.a.http_addr().unwrap(), Some(TOKEN)).await;
    for name in [
        "troupe_messages_sent_total",
        "troupe_messages_received_total",
        "troupe_sent_bytes_total",
        "troupe_received_bytes_total",
        "troupe_ask_duration_seconds",
        "troupe_asks_failed_total",
    ] {
        assert!(!a.families.contains_key(name), "{name} is there:\n{text}");
    }
    // The rest is read from the node's state: still there.
    assert!(a.get("troupe_frames_received_total", &[]).unwrap() > 0.0);
    assert_eq!(
        a.get("troupe_lock_grants_total", &[("protocol", "mutex.ledger")]),
        Some(1.0)
    );
    // b counts as usual what a sent it.
    let (_, b) = scrape(c.b.http_addr().unwrap(), None).await;
    assert_eq!(
        b.get(
            "troupe_messages_received_total",
            &[
                ("peer", "a"),
                ("type", "metrics_test.bump"),
                ("kind", "tell")
            ]
        ),
        Some(TELLS as f64)
    );
    c.a.shutdown().await;
    c.b.shutdown().await;
}

/// Nodes in one process (the simulator) keep their own numbers.
#[test]
fn nodes_of_one_process_keep_separate_metrics() {
    run_virtual(|| async {
        let mut cluster = SimCluster::new(7, FaultPlan::reliable());
        cluster.on_start(|n: Node| async move {
            n.spawn(
                ActorSpec::new("counter", Counter::default)
                    .handles::<Bump>()
                    .handles::<Read>(),
            )
            .await
            .expect("counter");
        });
        let mut nodes = Vec::new();
        for name in ["a", "b", "c"] {
            nodes.push(cluster.add_node(name).await.expect("node"));
        }
        let bump = nodes[0].lookup::<Bump>("b/counter").unwrap();
        for _ in 0..10 {
            bump.tell(Bump).unwrap();
        }
        let read = nodes[0].lookup::<Read>("b/counter").unwrap();
        assert_eq!(read.ask(Read).await.unwrap(), 10);
        let scrape = |n: &Node| parse(&n.gather_metrics().encode_text()).expect("parses");
        let (a, b, c) = (scrape(&nodes[0]), scrape(&nodes[1]), scrape(&nodes[2]));
        let sent = [
            ("peer", "b"),
            ("type", "metrics_test.bump"),
            ("kind", "tell"),
        ];
        let got = [
            ("peer", "a"),
            ("type", "metrics_test.bump"),
            ("kind", "tell"),
        ];
        assert_eq!(a.get("troupe_messages_sent_total", &sent), Some(10.0));
        assert_eq!(b.get("troupe_messages_received_total", &got), Some(10.0));
        for (who, exp) in [("b", &b), ("c", &c)] {
            assert_eq!(exp.get("troupe_messages_sent_total", &sent), None, "{who}");
        }
        for (who, exp) in [("a", &a), ("c", &c)] {
            assert_eq!(
                exp.get("troupe_messages_received_total", &got),
                None,
                "{who}"
            );
        }
        for exp in [&a, &b, &c] {
            check_conventions(exp).unwrap();
        }
    });
}

/// A resource manager that votes yes to everything.
#[derive(Clone)]
struct Yes;

impl ResourceManager for Yes {
    async fn prepare(&self, _: TxId) -> Result<(), String> {
        Ok(())
    }
    async fn commit(&self, _: TxId) {}
    async fn abort(&self, _: TxId) {}
}

/// The instances one node of [`families_report_their_views_and_events`] runs.
struct Instances {
    raft: Replica<troupe::protocols::raft::kv::KvStore>,
    talk: BroadcastGroup<String>,
    orders: CommitHandle,
}

/// Raft, broadcast and commit (three simulated nodes) report to each
/// node's metrics: the Raft term, commit and applied index and leader,
/// broadcasts delivered, commit decisions and pending transactions.
#[test]
fn families_report_their_views_and_events() {
    use std::cell::RefCell;
    use std::rc::Rc;
    use troupe::protocols::raft::kv::{KvCommand, KvStore};
    use troupe::protocols::raft::RaftConfig;

    run_virtual(|| async {
        let nodes = ["a", "b", "c"];
        let all: Rc<RefCell<BTreeMap<String, Instances>>> = Rc::default();
        let all2 = all.clone();
        let sim = common::detecting_cluster(9, &nodes, move |node, members| {
            let all = all2.clone();
            async move {
                let raft = start_raft::<KvStore>(&node, "kv", &members, RaftConfig::default())
                    .await
                    .unwrap();
                let talk = start_broadcast(&node, "talk", BroadcastAlgorithm::Fifo, &members)
                    .await
                    .unwrap();
                let orders =
                    start_commit(&node, "orders", CommitAlgorithm::TwoPhase, &members, Yes)
                        .await
                        .unwrap();
                all.borrow_mut()
                    .insert(node.name().to_string(), Instances { raft, talk, orders });
            }
        })
        .await;
        let get = |n: &str| {
            let i = &all.borrow()[n];
            (i.raft.clone(), i.talk.clone(), i.orders.clone())
        };
        // Raft: three writes through the leader.
        let start = tokio::time::Instant::now();
        let leader = loop {
            if let Some(n) = nodes.iter().find(|n| get(n).0.is_leader()) {
                break n.to_string();
            }
            assert!(start.elapsed() < Duration::from_secs(10), "no Raft leader");
            tokio::time::sleep(Duration::from_millis(20)).await;
        };
        for i in 0..3 {
            let put = KvCommand::Put {
                key: format!("k{i}"),
                value: "v".into(),
            };
            get(&leader).0.propose(put, None).await.expect("a write");
        }
        // Broadcast: two from a. Commit: one transaction from a.
        for text in ["hello", "world"] {
            get("a").1.broadcast(&text.to_string()).await.unwrap();
        }
        let members: Vec<String> = nodes.iter().map(|n| n.to_string()).collect();
        let tx = get("a").2.begin(&members).unwrap();
        assert_eq!(tx.commit().await.unwrap(), Outcome::Committed);
        for n in nodes {
            get(n)
                .1
                .wait_delivered(2, Duration::from_secs(10))
                .await
                .unwrap();
        }
        tokio::time::sleep(Duration::from_secs(1)).await;

        let scrape = |n: &str| {
            let node = sim.node(n).unwrap();
            let exp = parse(&node.gather_metrics().encode_text()).expect("parses");
            check_conventions(&exp).unwrap();
            let listed = documented();
            for (name, (kind, _)) in &exp.families {
                assert_eq!(listed.get(name), Some(kind), "{name} ({kind}) not listed");
            }
            exp
        };
        let raft = [("protocol", "raft.kv")];
        let mut leaders = 0.0;
        for n in nodes {
            let exp = scrape(n);
            assert!(exp.get("troupe_raft_term", &raft).unwrap() >= 1.0, "{n}");
            // The leader's no-op of its term, then the three writes.
            assert!(
                exp.get("troupe_raft_commit_index", &raft).unwrap() >= 4.0,
                "{n}"
            );
            assert!(
                exp.get("troupe_raft_applied_index", &raft).unwrap() >= 4.0,
                "{n}"
            );
            leaders += exp.get("troupe_raft_leader", &raft).unwrap();
            assert_eq!(
                exp.get(
                    "troupe_broadcast_delivered_total",
                    &[("protocol", "broadcast.talk")]
                ),
                Some(2.0),
                "{n}"
            );
            assert_eq!(
                exp.get(
                    "troupe_broadcast_held_back",
                    &[("protocol", "broadcast.talk")]
                ),
                Some(0.0),
                "{n}"
            );
            let orders = |d| [("protocol", "commit.orders"), ("decision", d)];
            assert_eq!(
                exp.get("troupe_commit_decisions_total", &orders("commit")),
                Some(1.0),
                "{n}"
            );
            assert_eq!(
                exp.get("troupe_commit_decisions_total", &orders("abort")),
                None,
                "{n}"
            );
            assert_eq!(
                exp.get("troupe_commit_pending", &[("protocol", "commit.orders")]),
                Some(0.0),
                "{n}"
            );
        }
        assert_eq!(leaders, 1.0, "one Raft leader");
    });
}

// ---- A strict parser of the text exposition format (version 0.0.4) ----

/// A parsed scrape.
#[derive(Debug, Default)]
struct Exposition {
    /// Family name -> (type, help).
    families: BTreeMap<String, (String, String)>,
    samples: Vec<Sample>,
}

#[derive(Debug, Clone)]
struct Sample {
    name: String,
    family: String,
    labels: BTreeMap<String, String>,
    value: f64,
}

impl Exposition {
    /// The value of the one sample `name` whose labels include `labels`;
    /// `None` if there is none (panics if several match).
    fn get(&self, name: &str, labels: &[(&str, &str)]) -> Option<f64> {
        let hits: Vec<&Sample> = self
            .samples
            .iter()
            .filter(|s| {
                s.name == name
                    && labels
                        .iter()
                        .all(|(k, v)| s.labels.get(*k).map(String::as_str) == Some(*v))
            })
            .collect();
        assert!(hits.len() <= 1, "{name} {labels:?} matches {hits:?}");
        hits.first().map(|s| s.value)
    }
}

fn valid_name(n: &str, colon: bool) -> bool {
    let mut c = n.chars();
    c.next()
        .is_some_and(|f| f.is_ascii_alphabetic() || f == '_' || (colon && f == ':'))
        && c.all(|x| x.is_ascii_alphanumeric() || x == '_' || (colon && x == ':'))
}

fn parse_value(v: &str) -> Result<f64, String> {
    match v {
        "+Inf" => Ok(f64::INFINITY),
        "-Inf" => Ok(f64::NEG_INFINITY),
        "NaN" => Ok(f64::NAN),
        _ => v.parse().map_err(|_| format!("bad value {v:?}")),
    }
}

/// Unescape a HELP text (`\\` and `\n` only) or a label value (also `\"`).
fn unescape(s: &str, quotes: bool) -> Result<String, String> {
    let mut out = String::new();
    let mut chars = s.chars();
    while let Some(c) = chars.next() {
        match c {
            '\\' => match chars.next() {
                Some('\\') => out.push('\\'),
                Some('n') => out.push('\n'),
                Some('"') if quotes => out.push('"'),
                other => return Err(format!("bad escape \\{other:?} in {s:?}")),
            },
            '"' if quotes => return Err(format!("unescaped quote in {s:?}")),
            '\n' => return Err(format!("raw newline in {s:?}")),
            c => out.push(c),
        }
    }
    Ok(out)
}

/// `{a="1",b="2"}` (the braces included) -> labels; and the rest.
fn parse_labels(s: &str) -> Result<(BTreeMap<String, String>, &str), String> {
    let mut labels = BTreeMap::new();
    let mut rest = s.strip_prefix('{').ok_or("labels without {")?;
    loop {
        if let Some(r) = rest.strip_prefix('}') {
            return Ok((labels, r));
        }
        let (name, r) = rest
            .split_once("=\"")
            .ok_or(format!("bad label in {s:?}"))?;
        if !valid_name(name, false) || name.starts_with("__") {
            return Err(format!("bad label name {name:?}"));
        }
        // The value ends at the first quote not escaped.
        let mut end = None;
        let mut escaped = false;
        for (i, c) in r.char_indices() {
            match c {
                '\\' if !escaped => escaped = true,
                '"' if !escaped => {
                    end = Some(i);
                    break;
                }
                _ => escaped = false,
            }
        }
        let end = end.ok_or(format!("unterminated label value in {s:?}"))?;
        let value = unescape(&r[..end], true)?;
        if labels.insert(name.to_string(), value).is_some() {
            return Err(format!("label {name} twice in {s:?}"));
        }
        rest = &r[end + 1..];
        rest = match rest.strip_prefix(',') {
            Some(r) => r,
            None if rest.starts_with('}') => rest,
            None => return Err(format!("expected , or }} in {s:?}")),
        };
    }
}

/// The family a sample named `name` belongs to, given the declared ones.
fn family_of(name: &str, families: &BTreeMap<String, (String, String)>) -> Option<String> {
    if let Some((kind, _)) = families.get(name) {
        if kind != "histogram" && kind != "summary" {
            return Some(name.to_string());
        }
    }
    for suffix in ["_bucket", "_sum", "_count"] {
        if let Some(base) = name.strip_suffix(suffix) {
            if let Some((kind, _)) = families.get(base) {
                if kind == "histogram" || (kind == "summary" && suffix != "_bucket") {
                    return Some(base.to_string());
                }
            }
        }
    }
    None
}

fn parse(text: &str) -> Result<Exposition, String> {
    if !text.ends_with('\n') {
        return Err("the exposition does not end with a newline".into());
    }
    let mut exp = Exposition::default();
    let mut helps: BTreeMap<String, String> = BTreeMap::new();
    let mut current: Option<String> = None;
    let mut finished: std::collections::BTreeSet<String> = Default::default();
    let mut series: std::collections::BTreeSet<(String, Vec<(String, String)>)> =
        Default::default();
    // Moving on to family `f`: the previous one is finished; `f` must not be.
    let mut enter = |f: &str, current: &mut Option<String>| -> Result<(), String> {
        if current.as_deref() != Some(f) {
            if let Some(prev) = current.take() {
                finished.insert(prev);
            }
            if finished.contains(f) {
                return Err(format!("family {f} is split in two places"));
            }
            *current = Some(f.to_string());
        }
        Ok(())
    };
    for (i, line) in text.lines().enumerate() {
        let at = |e: String| format!("line {}: {e}: {line:?}", i + 1);
        if line.is_empty() {
            continue;
        }
        if let Some(rest) = line.strip_prefix("# HELP ") {
            let (name, help) = rest.split_once(' ').unwrap_or((rest, ""));
            if !valid_name(name, true) {
                return Err(at(format!("bad metric name {name:?}")));
            }
            enter(name, &mut current).map_err(at)?;
            if helps
                .insert(name.to_string(), unescape(help, false).map_err(at)?)
                .is_some()
            {
                return Err(at(format!("second HELP for {name}")));
            }
            continue;
        }
        if let Some(rest) = line.strip_prefix("# TYPE ") {
            let (name, kind) = rest.split_once(' ').ok_or_else(|| at("no type".into()))?;
            if !valid_name(name, true) {
                return Err(at(format!("bad metric name {name:?}")));
            }
            if !["counter", "gauge", "histogram", "summary", "untyped"].contains(&kind) {
                return Err(at(format!("unknown type {kind:?}")));
            }
            enter(name, &mut current).map_err(at)?;
            if exp.samples.iter().any(|s| s.family == name) {
                return Err(at(format!("TYPE of {name} after its samples")));
            }
            if exp.families.contains_key(name) {
                return Err(at(format!("second TYPE for {name}")));
            }
            let help = helps.get(name).cloned().unwrap_or_default();
            exp.families
                .insert(name.to_string(), (kind.to_string(), help));
            continue;
        }
        if line.starts_with('#') {
            continue;
        }
        let name_end = line.find(['{', ' ']).ok_or_else(|| at("no value".into()))?;
        let name = &line[..name_end];
        if !valid_name(name, true) {
            return Err(at(format!("bad metric name {name:?}")));
        }
        let (labels, rest) = if line[name_end..].starts_with('{') {
            parse_labels(&line[name_end..]).map_err(at)?
        } else {
            (BTreeMap::new(), &line[name_end..])
        };
        let rest = rest
            .strip_prefix(' ')
            .ok_or_else(|| at("no space before the value".into()))?;
        let mut parts = rest.split(' ');
        let value = parse_value(parts.next().unwrap_or("")).map_err(at)?;
        if let Some(ts) = parts.next() {
            ts.parse::<i64>()
                .map_err(|_| at(format!("bad timestamp {ts:?}")))?;
        }
        if parts.next().is_some() {
            return Err(at("trailing fields".into()));
        }
        let family = family_of(name, &exp.families)
            .ok_or_else(|| at(format!("sample {name} without a TYPE")))?;
        enter(&family, &mut current).map_err(at)?;
        if exp.families[&family].0 == "counter" && (value.is_nan() || value < 0.0) {
            return Err(at("a negative or NaN counter".into()));
        }
        if name.ends_with("_bucket") && !labels.contains_key("le") {
            return Err(at("a bucket without le".into()));
        }
        let key = (
            name.to_string(),
            labels.clone().into_iter().collect::<Vec<_>>(),
        );
        if !series.insert(key) {
            return Err(at("the same series twice".into()));
        }
        exp.samples.push(Sample {
            name: name.to_string(),
            family,
            labels,
            value,
        });
    }
    for (name, (kind, help)) in exp.families.iter_mut() {
        if help.is_empty() {
            *help = helps.get(name).cloned().unwrap_or_default();
        }
        if !exp.samples.iter().any(|s| &s.family == name) {
            return Err(format!("family {name} has no samples"));
        }
        if kind == "histogram" {
            check_histogram(name, &exp.samples)?;
        }
    }
    Ok(exp)
}

/// Per label set: buckets cumulative, a `+Inf` bucket equal to `_count`,
/// and a `_sum`.
fn check_histogram(name: &str, samples: &[Sample]) -> Result<(), String> {
    // Per label set (without `le`): its buckets (le, cumulative count).
    type LabelSet = Vec<(String, String)>;
    let mut sets: BTreeMap<LabelSet, Vec<(f64, f64)>> = BTreeMap::new();
    let mut counts = BTreeMap::new();
    let mut sums = BTreeMap::new();
    for s in samples.iter().filter(|s| s.family == name) {
        let mut labels = s.labels.clone();
        let le = labels.remove("le");
        let key: Vec<(String, String)> = labels.into_iter().collect();
        if s.name.ends_with("_bucket") {
            let le = parse_value(le.as_deref().unwrap_or(""))?;
            sets.entry(key).or_default().push((le, s.value));
        } else if s.name.ends_with("_count") {
            counts.insert(key, s.value);
        } else {
            sums.insert(key, s.value);
        }
    }
    for (key, mut buckets) in sets {
        buckets.sort_by(|x, y| x.0.total_cmp(&y.0));
        if buckets.windows(2).any(|w| w[1].1 < w[0].1) {
            return Err(format!("{name} {key:?}: buckets are not cumulative"));
        }
        let last = buckets.last().copied().unwrap_or((0.0, 0.0));
        if last.0 != f64::INFINITY || counts.get(&key) != Some(&last.1) {
            return Err(format!("{name} {key:?}: no +Inf bucket equal to _count"));
        }
        if !sums.contains_key(&key) {
            return Err(format!("{name} {key:?}: no _sum"));
        }
    }
    Ok(())
}

/// Prometheus' naming conventions, as the issue asks for them.
fn check_conventions(exp: &Exposition) -> Result<(), String> {
    if exp.families.is_empty() {
        return Err("no metrics at all".into());
    }
    for (name, (kind, help)) in &exp.families {
        let fail = |why: &str| Err(format!("{name} ({kind}): {why}"));
        if !name.starts_with("troupe_") {
            return fail("no troupe_ prefix");
        }
        if help.is_empty() {
            return fail("no HELP");
        }
        if (kind == "counter") != name.ends_with("_total") {
            return fail("_total is for counters, and only for them");
        }
        let base = name.strip_suffix("_total").unwrap_or(name);
        if kind == "histogram" && !(base.ends_with("_seconds") || base.ends_with("_bytes")) {
            return fail("a histogram without a base unit");
        }
        if base.contains("bytes") && !base.ends_with("_bytes") {
            return fail("bytes not as the unit suffix");
        }
        for word in ["duration", "latency", "time_"] {
            if base.contains(word) && !base.ends_with("_seconds") {
                return fail("a time not in seconds");
            }
        }
        for bad in ["_ms", "millis", "_kb", "_mb", "micro", "nano"] {
            if base.contains(bad) {
                return fail("not a base unit");
            }
        }
    }
    Ok(())
}

#[test]
fn the_parser_refuses_what_the_format_forbids() {
    let good = "# HELP troupe_x_total X.\n# TYPE troupe_x_total counter\ntroupe_x_total{a=\"q\\\"\\\\\\n\"} 1\n";
    let exp = parse(good).expect("good");
    assert_eq!(exp.samples[0].labels["a"], "q\"\\\n");
    for (bad, says) in [
        ("troupe_x 1\n", "without a TYPE"),
        ("# TYPE troupe_x gauge\ntroupe_x 1", "newline"),
        ("# TYPE troupe_x gauge\ntroupe_x{a=\"1\"} 1\ntroupe_x{a=\"1\"} 2\n", "twice"),
        (
            "# TYPE troupe_x gauge\ntroupe_x 1\n# TYPE troupe_y gauge\ntroupe_y 1\ntroupe_x{a=\"2\"} 1\n",
            "split",
        ),
        ("# TYPE troupe_x gauge\ntroupe_x{a=\"1} 1\n", "unterminated"),
        ("# TYPE troupe_x gauge\ntroupe_x{a=\"\\q\"} 1\n", "escape"),
        ("# TYPE troupe_x gauge\ntroupe_x{1a=\"1\"} 1\n", "label name"),
        ("# TYPE troupe_x gauge\ntroupe_x one\n", "bad value"),
        ("# TYPE troupe_x gauge\ntroupe_x 1 2 3\n", "trailing"),
        ("# TYPE troupe_x counter\ntroupe_x -1\n", "negative"),
        ("# TYPE troupe_x gauge\n", "no samples"),
        ("# TYPE troupe_x gauge\n# TYPE troupe_x gauge\ntroupe_x 1\n", "second TYPE"),
        ("# TYPE troupe_x wobbly\ntroupe_x 1\n", "unknown type"),
        (
            "# TYPE troupe_h_seconds histogram\ntroupe_h_seconds_bucket{le=\"1\"} 2\ntroupe_h_seconds_bucket{le=\"+Inf\"} 1\ntroupe_h_seconds_sum 1\ntroupe_h_seconds_count 1\n",
            "cumulative",
        ),
        (
            "# TYPE troupe_h_seconds histogram\ntroupe_h_seconds_bucket{le=\"1\"} 1\ntroupe_h_seconds_sum 1\ntroupe_h_seconds_count 1\n",
            "+Inf",
        ),
    ] {
        let err = parse(bad).expect_err(bad);
        assert!(err.contains(says), "{bad:?}: {err}");
    }
    // And the conventions.
    for (text, says) in [
        (
            "# HELP x_total X.\n# TYPE x_total counter\nx_total 1\n",
            "prefix",
        ),
        (
            "# HELP troupe_x X.\n# TYPE troupe_x counter\ntroupe_x 1\n",
            "_total",
        ),
        (
            "# HELP troupe_x_total X.\n# TYPE troupe_x_total gauge\ntroupe_x_total 1\n",
            "_total",
        ),
        (
            "# HELP troupe_wait_ms X.\n# TYPE troupe_wait_ms gauge\ntroupe_wait_ms 1\n",
            "base unit",
        ),
        (
            "# HELP troupe_bytes_in X.\n# TYPE troupe_bytes_in gauge\ntroupe_bytes_in 1\n",
            "bytes",
        ),
        ("# TYPE troupe_x gauge\ntroupe_x 1\n", "HELP"),
    ] {
        let err = check_conventions(&parse(text).expect(text)).expect_err(text);
        assert!(err.contains(says), "{text:?}: {err}");
    }
}
