//! The bank app over QUIC, three `troupe node` processes started with
//! `troupe cluster up --apps bank`: concurrent random transfers against
//! every node while a node is SIGKILLed mid-traffic and restarted, twice
//! (each node coordinates transfers and takes part in others', so each
//! kill hits coordinators and participants mid-transaction), with
//! consistent reads running all along. Afterwards:
//! - nothing is in doubt or prepared on any node;
//! - every consistent read during the run, and the final one, totals
//!   `accounts * initial_balance`;
//! - every transfer is atomic: the operations applied for one id on all
//!   shards together are a debit and its credit, or nothing;
//! - every balance is the initial one plus the operations applied to it
//!   (nothing applied twice: a balance and its applied record change in
//!   one atomic write);
//! - every transfer acknowledged as committed is applied, on both of its
//!   shards, and none acknowledged as aborted is. Transfers whose request
//!   failed (their node was killed) are unknown: they are checked by the
//!   atomicity and balance rules only.
//!
//! Before the traffic, `troupe tree` must draw the bank's orphan resolver
//! as an actor of the app's tree on every node.
//!
//! Run with `--test bank_cluster -- --nocapture` to see the counts.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use serde_json::{json, Value};
use troupe_apps::cluster::{read_file, ClusterFile};
use troupe_apps::http_client::NodeClient;
use troupe_apps::sample::{owner, Op};

#[path = "troupe_run/mod.rs"]
mod troupe_run;

const ACCOUNTS: usize = 100;
const INITIAL: u64 = 1000;
const NODES: [&str; 3] = ["node-1", "node-2", "node-3"];

fn client(file: &ClusterFile, name: &str, timeout: Duration) -> NodeClient {
    let n = file.nodes.iter().find(|n| n.name == name).expect(name);
    NodeClient::new(&n.http, None, timeout).expect("url")
}

#[derive(Debug, Clone)]
struct Sent {
    from: String,
    to: String,
    amount: u64,
    node: &'static str,
}

#[derive(Default)]
struct Log {
    committed: Vec<(String, Sent)>,
    aborted: Vec<(String, Sent, String)>,
    unknown: Vec<(Sent, String)>,
    reads: Vec<(u64, usize)>,
    read_failures: usize,
}

/// Notes how a transfer request ended; false if its outcome is unknown.
fn record(
    log: &Mutex<Log>,
    sent: Sent,
    answer: Result<troupe_apps::http_client::Answer, troupe_apps::cli::CliError>,
) -> bool {
    let mut log = log.lock().unwrap();
    match answer {
        Ok(a) if a.status == 200 && a.body["outcome"] == "committed" => {
            let tx = a.body["tx"].as_str().expect("tx").to_string();
            log.committed.push((tx, sent));
            true
        }
        Ok(a) if a.status == 409 && a.body["outcome"] == "aborted" => {
            let tx = a.body["tx"].as_str().expect("tx").to_string();
            let reason = a.body["reason"].as_str().unwrap_or("").to_string();
            log.aborted.push((tx, sent, reason));
            true
        }
        Ok(a) => {
            assert!(a.status >= 500, "unexpected answer {} {}", a.status, a.body);
            log.unknown.push((sent, format!("{} {}", a.status, a.body)));
            false
        }
        Err(e) => {
            log.unknown.push((sent, e.to_string()));
            false
        }
    }
}

/// Polls `GET /v1/bank/accounts` on `node` until it answers 200 (within 60 s).
fn accounts(file: &ClusterFile, node: &str) -> (BTreeMap<String, u64>, u64) {
    let c = client(file, node, Duration::from_secs(30));
    let start = Instant::now();
    let mut last = String::new();
    while start.elapsed() < Duration::from_secs(60) {
        match c.get("/v1/bank/accounts") {
            Ok(a) if a.status == 200 => {
                let accounts: BTreeMap<String, u64> =
                    serde_json::from_value(a.body["accounts"].clone()).expect("accounts");
                let total = a.body["total"].as_u64().expect("total");
                return (accounts, total);
            }
            Ok(a) => last = format!("{} {}", a.status, a.body),
            Err(e) => last = e.to_string(),
        }
        std::thread::sleep(Duration::from_millis(200));
    }
    panic!("{node}: no consistent read within 60 s: {last}");
}

#[test]
fn two_phase_transfers_survive_killed_coordinators_and_participants() {
    run(None);
}

#[test]
fn three_phase_transfers_survive_killed_coordinators_and_participants() {
    run(Some("three-phase"));
}

/// Runs `troupe bank ...` against `node`; `Ok` with stdout if it exited 0.
fn bank_cli(file: &ClusterFile, node: &str, args: &[&str]) -> Result<String, String> {
    let url = &file.nodes.iter().find(|n| n.name == node).expect(node).http;
    let mut all = vec!["bank", args[0], "--node", url];
    all.extend(&args[1..]);
    let out = troupe_run::troupe_within(&all, Duration::from_secs(60));
    let stdout = String::from_utf8_lossy(&out.stdout).to_string();
    let stderr = String::from_utf8_lossy(&out.stderr).to_string();
    if out.status.success() {
        Ok(stdout)
    } else {
        Err(format!("{stdout}{stderr}"))
    }
}

fn run(algorithm: Option<&str>) {
    let tag = algorithm.unwrap_or("default");
    let dir = std::env::temp_dir().join(format!("troupe-bank-{tag}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    let d = dir.to_str().expect("utf-8 path");
    let _cleanup = troupe_run::KillNodesOnDrop(dir.clone());
    troupe_run::troupe_ok(&[
        "cluster", "up", "--nodes", "3", "--apps", "bank", "--dir", d,
    ]);
    // `cluster up` writes `[apps.bank]` with the defaults: stop the nodes
    // before any transaction, set the algorithm and a prepare delay (so
    // that a kill finds transfers prepared and undecided), start them again.
    for n in NODES {
        troupe_run::troupe_ok(&["cluster", "stop", "--dir", d, n]);
    }
    let mut settings = "[apps.bank]\nprepare_delay_ms = 150\n".to_string();
    if let Some(algorithm) = algorithm {
        settings.push_str(&format!("algorithm = \"{algorithm}\"\n"));
    }
    for n in NODES {
        let path = dir.join(format!("{n}.toml"));
        let text = std::fs::read_to_string(&path).expect("config");
        assert!(text.contains("[apps.bank]\n"), "{text}");
        std::fs::write(&path, text.replace("[apps.bank]\n", &settings)).expect("config");
    }
    for n in NODES {
        troupe_run::troupe_ok(&["cluster", "start", "--dir", d, n]);
    }
    let file = read_file(&dir).expect("cluster.json");
    let members: Vec<String> = NODES.map(String::from).to_vec();

    for n in NODES {
        let (acc, total) = accounts(&file, n);
        assert_eq!(acc.len(), ACCOUNTS, "{n}: {acc:?}");
        assert_eq!(total, ACCOUNTS as u64 * INITIAL, "{n}");
    }
    // The orphan resolver is an actor in the bank app's tree (it stops and
    // restarts with the app), not a task spawned beside it.
    for n in &file.nodes {
        let out = troupe_run::troupe_ok(&["tree", "--node", &n.http]);
        let drawn = String::from_utf8_lossy(&out.stdout);
        assert!(
            drawn.contains("bank.orphans (actor, running)"),
            "{}: no orphan resolver in the bank app's tree:\n{drawn}",
            n.name
        );
    }
    // The CLI: acct-0 is on node-1, acct-1 on node-2, coordinated by node-3.
    let said =
        bank_cli(&file, "node-3", &["transfer", "acct-0", "acct-1", "50"]).expect("transfer");
    assert!(
        said.contains("committed: 50 from acct-0 to acct-1"),
        "{said}"
    );
    let said = bank_cli(&file, "node-3", &["transfer", "acct-0", "acct-1", "5000"])
        .expect_err("more than the balance");
    assert!(
        said.contains("aborted: node-1 voted no: insufficient funds in acct-0"),
        "{said}"
    );
    let said = bank_cli(&file, "node-1", &["accounts"]).expect("accounts");
    let line = |a: &str, b: u64| format!("{a:<7}  {b:>12}\n");
    assert!(
        said.starts_with(&(line("acct-0", 950) + &line("acct-1", 1050))),
        "{said}"
    );
    assert!(
        said.ends_with(&line("total", ACCOUNTS as u64 * INITIAL)),
        "{said}"
    );

    let log = Arc::new(Mutex::new(Log::default()));
    let stop = Arc::new(AtomicBool::new(false));
    let mut threads = Vec::new();
    for t in 0..8u64 {
        let (log, stop, file) = (log.clone(), stop.clone(), file.clone());
        threads.push(std::thread::spawn(move || {
            let mut rng = troupe_run::Rng::for_client(t);
            let clients: Vec<NodeClient> = NODES
                .iter()
                .map(|n| client(&file, n, Duration::from_secs(40)))
                .collect();
            while !stop.load(Ordering::Relaxed) {
                let i = rng.below(3) as usize;
                let from = rng.below(ACCOUNTS as u64);
                let mut to = rng.below(ACCOUNTS as u64);
                if to == from {
                    to = (to + 1) % ACCOUNTS as u64;
                }
                // Sometimes more than the balance: some transfers must abort.
                let cap = if rng.below(10) == 0 { 3000 } else { 300 };
                let amount = 1 + rng.below(cap);
                let sent = Sent {
                    from: format!("acct-{from}"),
                    to: format!("acct-{to}"),
                    amount,
                    node: NODES[i],
                };
                let body = json!({"from": sent.from, "to": sent.to, "amount": amount});
                let answer = clients[i].post_json("/v1/bank/transfer", &body);
                if !record(&log, sent, answer) {
                    std::thread::sleep(Duration::from_millis(50));
                }
            }
        }));
    }
    // A reader: consistent reads all along, from every node in turn.
    {
        let (log, stop, file) = (log.clone(), stop.clone(), file.clone());
        threads.push(std::thread::spawn(move || {
            let clients: Vec<NodeClient> = NODES
                .iter()
                .map(|n| client(&file, n, Duration::from_secs(40)))
                .collect();
            let mut i = 0;
            while !stop.load(Ordering::Relaxed) {
                i += 1;
                match clients[i % 3].get("/v1/bank/accounts") {
                    Ok(a) if a.status == 200 => {
                        let total = a.body["total"].as_u64().expect("total");
                        let n = a.body["accounts"].as_object().map_or(0, |m| m.len());
                        log.lock().unwrap().reads.push((total, n));
                    }
                    _ => log.lock().unwrap().read_failures += 1,
                }
                std::thread::sleep(Duration::from_millis(700));
            }
        }));
    }

    let settle = |d: u64| std::thread::sleep(Duration::from_millis(d));
    settle(2500);
    for (v, victim) in [(0, "node-1"), (1, "node-2")] {
        // A burst that the kill finds mid-transaction: transfers the victim
        // coordinates with its own account in them, and transfers another
        // node coordinates with the victim as a participant. The prepare
        // delay holds each for 150 ms between its prepares and its decision.
        let mut burst = Vec::new();
        for k in 0..6usize {
            let other = (v + 1 + k % 2) % 3;
            let (coordinator, from, to) = if k % 2 == 0 {
                (v, 3 * (k + 10) + v, 3 * (k + 10) + other)
            } else {
                (other, 3 * (k + 10) + other, 3 * (k + 10) + v)
            };
            let sent = Sent {
                from: format!("acct-{from}"),
                to: format!("acct-{to}"),
                amount: 1 + k as u64,
                node: NODES[coordinator],
            };
            let (log, file) = (log.clone(), file.clone());
            burst.push(std::thread::spawn(move || {
                let body = json!({"from": sent.from, "to": sent.to, "amount": sent.amount});
                let answer = client(&file, sent.node, Duration::from_secs(40))
                    .post_json("/v1/bank/transfer", &body);
                record(&log, sent, answer);
            }));
        }
        settle(120);
        troupe_run::troupe_ok(&["cluster", "kill", "--dir", d, victim]);
        for b in burst {
            b.join().expect("burst");
        }
        settle(1500);
        troupe_run::troupe_ok(&["cluster", "start", "--dir", d, victim]);
        settle(3000);
    }
    stop.store(true, Ordering::Relaxed);
    for t in threads {
        t.join().expect("client thread");
    }
    let file = read_file(&dir).expect("cluster.json");

    // Nothing left in doubt or prepared anywhere.
    let start = Instant::now();
    let mut stuck: Vec<(String, Value)>;
    loop {
        stuck = Vec::new();
        for n in NODES {
            match client(&file, n, Duration::from_secs(10)).get("/v1/bank/in-doubt") {
                Ok(a)
                    if a.status == 200
                        && a.body["in_doubt"].as_array().is_some_and(Vec::is_empty)
                        && a.body["prepared"].as_array().is_some_and(Vec::is_empty) => {}
                Ok(a) => stuck.push((n.to_string(), a.body)),
                Err(e) => stuck.push((n.to_string(), json!(e.to_string()))),
            }
        }
        if stuck.is_empty() || start.elapsed() > Duration::from_secs(60) {
            break;
        }
        settle(250);
    }
    assert!(stuck.is_empty(), "still unresolved after 60 s: {stuck:?}");

    // The final consistent read, from every node.
    let (balances, total) = accounts(&file, "node-3");
    assert_eq!(total, ACCOUNTS as u64 * INITIAL);
    for n in ["node-1", "node-2"] {
        assert_eq!(accounts(&file, n), (balances.clone(), total), "{n}");
    }

    // What every shard applied.
    let mut applied: BTreeMap<String, Vec<Op>> = BTreeMap::new();
    let mut per_shard: BTreeMap<&str, BTreeMap<String, Vec<Op>>> = BTreeMap::new();
    for n in NODES {
        let a = client(&file, n, Duration::from_secs(10))
            .get("/v1/bank/applied")
            .expect("applied");
        assert_eq!(a.status, 200, "{}", a.body);
        let mine: BTreeMap<String, Vec<Op>> =
            serde_json::from_value(a.body["applied"].clone()).expect("applied");
        for (tx, ops) in &mine {
            for op in ops {
                assert_eq!(
                    owner(&op.account, ACCOUNTS, &members),
                    Some(n),
                    "{tx}: {op:?}"
                );
            }
            applied
                .entry(tx.clone())
                .or_default()
                .extend(ops.iter().cloned());
        }
        per_shard.insert(n, mine);
    }
    // Atomicity: a debit and its credit, on all shards together.
    for (tx, ops) in &applied {
        assert_eq!(ops.len(), 2, "transfer {tx} applied in part: {ops:?}");
        assert_eq!(ops.iter().map(|o| o.delta).sum::<i64>(), 0, "{tx}: {ops:?}");
    }
    // Every balance: the initial one plus what was applied to it, once.
    let mut expected: BTreeMap<String, i64> = (0..ACCOUNTS)
        .map(|i| (format!("acct-{i}"), INITIAL as i64))
        .collect();
    for op in applied.values().flatten() {
        *expected.get_mut(&op.account).expect("known account") += op.delta;
    }
    for (a, b) in &balances {
        assert_eq!(*b as i64, expected[a], "{a}");
    }

    let log = log.lock().unwrap();
    for (tx, s) in &log.committed {
        let ops = applied
            .get(tx)
            .unwrap_or_else(|| panic!("committed transfer {tx} {s:?} is not applied"));
        let want = [
            Op {
                account: s.from.clone(),
                delta: -(s.amount as i64),
            },
            Op {
                account: s.to.clone(),
                delta: s.amount as i64,
            },
        ];
        for w in &want {
            assert!(ops.contains(w), "{tx} {s:?}: {ops:?}");
            let shard = owner(&w.account, ACCOUNTS, &members).expect("owner");
            assert!(per_shard[shard].contains_key(tx), "{tx} not on {shard}");
        }
    }
    for (tx, s, reason) in &log.aborted {
        assert!(
            !applied.contains_key(tx),
            "aborted {tx} {s:?} ({reason}) is applied"
        );
    }
    let insufficient = log
        .aborted
        .iter()
        .filter(|(_, _, r)| r.contains("insufficient funds"))
        .count();
    for (total, n) in &log.reads {
        assert_eq!(*total, ACCOUNTS as u64 * INITIAL, "a read during the run");
        assert_eq!(*n, ACCOUNTS);
    }
    // Why transfers aborted, by the reason's first words.
    let mut reasons: BTreeMap<String, usize> = BTreeMap::new();
    for (_, _, r) in &log.aborted {
        let words: Vec<&str> = r
            .split_whitespace()
            .take(4)
            .filter(|w| !w.starts_with("acct-"))
            .collect();
        *reasons.entry(words.join(" ")).or_default() += 1;
    }
    eprintln!("bank: aborted because {reasons:?}");
    let unknown_killed = log
        .unknown
        .iter()
        .filter(|(s, _)| s.node == "node-1" || s.node == "node-2")
        .count();
    eprintln!(
        "bank: {} committed, {} aborted ({insufficient} for funds), {} unknown ({unknown_killed} sent to a killed node), {} applied, {} consistent reads ({} failed)",
        log.committed.len(),
        log.aborted.len(),
        log.unknown.len(),
        applied.len(),
        log.reads.len(),
        log.read_failures
    );
    assert!(log.committed.len() >= 50, "too few transfers committed");
    assert!(insufficient > 0, "no transfer hit insufficient funds");
    assert!(!log.unknown.is_empty(), "no transfer was cut by a kill");
    assert!(log.reads.len() >= 2, "too few consistent reads");

    troupe_run::troupe_ok(&["cluster", "down", "--dir", d]);
}
