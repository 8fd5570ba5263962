//! The kv app over QUIC, three `troupe node` processes started with
//! `troupe cluster up --apps kv`, checked for linearizability under
//! crashes: six concurrent HTTP clients get, put, compare-and-set and
//! delete four keys against random live nodes (so most requests are
//! forwarded to the leader) while the leader, then a follower, then the
//! new leader are SIGKILLed (`troupe cluster kill`) and restarted from
//! their data directories (`troupe cluster start`). Every operation is
//! recorded in a history with its invocation and response times:
//! - 200, 404 (absent) and 409 (mismatch) return a value;
//! - 503 is certainly not applied (left out of the check);
//! - anything else (504, a timeout, a connection cut by the kill) is of
//!   unknown outcome: it may have taken effect at any time after its
//!   invocation, or never.
//!
//! Half of the clients send their writes with an `Idempotency-Key` and,
//! after an unknown outcome, send the same write again with the same key
//! (up to three times): the write is then one operation, from its first
//! invocation to the answer of the copy that answered, which is only
//! linearizable if the copies together applied it at most once.
//!
//! The history must be linearizable (`troupe_protocols::testkit::
//! linearizability::check_kv`, per key); on a violation it is written as
//! JSON next to the cluster's directory and the test fails naming the
//! file. The check must not be vacuous: hundreds of operations returned
//! on every key, writes and reads among them, and after the kills every
//! node serves a linearizable read of every key.
//!
//! Run with `--test kv_cluster -- --nocapture` to see the counts.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use serde_json::json;
use troupe::protocols::testkit::linearizability::{check_kv, History, KvOp, KvRet, OpId};
use troupe_apps::cluster::{read_file, ClusterFile};
use troupe_apps::http_client::{Answer, NodeClient};

#[path = "troupe_run/mod.rs"]
mod troupe_run;

const NODES: [&str; 3] = ["node-1", "node-2", "node-3"];
const KEYS: [&str; 4] = ["k0", "k1", "k2", "k3"];
const CLIENTS: u64 = 6;

fn client(file: &ClusterFile, name: &str) -> NodeClient {
    let n = file.nodes.iter().find(|n| n.name == name).expect(name);
    // Above the app's request timeout (5 s) and its forwarding margin.
    NodeClient::new(&n.http, None, Duration::from_secs(10)).expect("url")
}

/// The leader every node's `_cluster` names, once they agree.
fn leader(file: &ClusterFile, within: Duration) -> String {
    let start = Instant::now();
    loop {
        let seen: Vec<Option<String>> = NODES
            .iter()
            .map(|n| {
                let a = client(file, n).get("/v1/kv/_cluster").ok()?;
                a.body["leader"].as_str().map(String::from)
            })
            .collect();
        if let Some(Some(l)) = seen.first() {
            if seen.iter().all(|s| s.as_deref() == Some(l)) {
                return l.clone();
            }
        }
        assert!(start.elapsed() < within, "no agreed leader: {seen:?}");
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// How one HTTP exchange ended, for the history.
enum Ended {
    Returned(KvRet),
    /// 503: certainly not applied.
    NotApplied,
    /// Anything else: it may or may not have been applied.
    Unknown(String),
}

/// The request for `op` on `key`: method, path, body.
fn request(op: &KvOp, key: &str) -> (&'static str, String, Option<String>) {
    let path = format!("/v1/kv/{key}");
    match op {
        KvOp::Get => ("GET", path, None),
        KvOp::Put { value } => ("PUT", path, Some(json!({ "value": value }).to_string())),
        KvOp::Cas { expected, value } => (
            "POST",
            format!("{path}/cas"),
            Some(json!({ "expected": expected, "value": value }).to_string()),
        ),
        KvOp::Delete => ("DELETE", path, None),
    }
}

/// What an answer to `op` says.
fn ended(op: &KvOp, answer: Result<Answer, troupe_apps::cli::CliError>) -> Ended {
    let a = match answer {
        Ok(a) => a,
        Err(e) => return Ended::Unknown(e.to_string()),
    };
    let body = &a.body;
    match (op, a.status) {
        (KvOp::Get, 200) => {
            let v = body["value"].as_str().expect("a value");
            Ended::Returned(KvRet::Value(Some(v.to_string())))
        }
        (KvOp::Get, 404) if body["key"].is_string() => Ended::Returned(KvRet::Value(None)),
        (KvOp::Put { .. } | KvOp::Cas { .. } | KvOp::Delete, 200) => {
            assert!(body["revision"].is_u64(), "{body}");
            Ended::Returned(KvRet::Ok)
        }
        (KvOp::Cas { .. }, 409) if body["error"] == "mismatch" => {
            Ended::Returned(KvRet::Mismatch {
                current: body["value"].as_str().map(String::from),
            })
        }
        (_, 503) => {
            assert_eq!(a.retry_after, Some(1), "a 503 without Retry-After: {body}");
            Ended::NotApplied
        }
        (_, 504) => {
            let e = body["error"].as_str().unwrap_or_default();
            assert!(e.starts_with("outcome unknown"), "{body}");
            Ended::Unknown(e.to_string())
        }
        (_, code) => panic!("{op:?}: unexpected answer {code} {body}"),
    }
}

#[derive(Default)]
struct Counts {
    returned: BTreeMap<&'static str, u64>,
    not_applied: u64,
    /// Unknown outcomes, by what ended them.
    unknown: BTreeMap<String, u64>,
    retried: u64,
    retried_and_returned: u64,
}

/// What the clients share.
struct Run {
    file: ClusterFile,
    history: History,
    /// The clock of the history.
    start: Instant,
    /// Set when the clients are to stop.
    stop: AtomicBool,
    /// The node killed now, which the clients leave alone.
    down: Mutex<Option<String>>,
    counts: Mutex<Counts>,
}

/// One client: random operations until `run.stop`, each recorded in
/// `run.history`.
fn run_client(id: u64, run: &Run) {
    let Run {
        file,
        history,
        start,
        stop,
        down,
        counts,
    } = run;
    let mut rng = troupe_run::Rng::for_client(id);
    let clients: BTreeMap<&str, NodeClient> = NODES.iter().map(|n| (*n, client(file, n))).collect();
    let sessions = id.is_multiple_of(2);
    let (mut n, mut seq) = (0u64, 0u64);
    // The last value this client saw per key: what its CAS expects.
    let mut seen: BTreeMap<&str, Option<String>> = BTreeMap::new();
    let pick = |rng: &mut troupe_run::Rng| -> &NodeClient {
        let down = down.lock().unwrap().clone();
        let live: Vec<&str> = NODES
            .into_iter()
            .filter(|n| Some(*n) != down.as_deref())
            .collect();
        &clients[live[rng.below(live.len() as u64) as usize]]
    };
    while !stop.load(Ordering::Relaxed) {
        n += 1;
        let key = KEYS[rng.below(KEYS.len() as u64) as usize];
        let value = format!("c{id}-{n}");
        let op = match rng.below(20) {
            0..=7 => KvOp::Get,
            8..=12 => KvOp::Put { value },
            13..=16 => KvOp::Cas {
                expected: if rng.below(3) == 0 {
                    None
                } else {
                    seen.get(key).cloned().flatten()
                },
                value,
            },
            _ => KvOp::Delete,
        };
        let (method, path, body) = request(&op, key);
        let write = !matches!(op, KvOp::Get);
        let idempotency = (sessions && write).then(|| {
            seq += 1;
            format!("client-{id}:{seq}")
        });
        let headers: Vec<(&str, &str)> = idempotency
            .as_deref()
            .map(|k| ("Idempotency-Key", k))
            .into_iter()
            .collect();
        let op_id: OpId = history.record_invoke(id, key, op.clone(), start.elapsed());
        let send = |rng: &mut troupe_run::Rng| {
            ended(
                &op,
                pick(rng).request(method, &path, body.as_deref(), &headers),
            )
        };
        let mut outcome = send(&mut rng);
        // With a session, an unknown outcome is settled by sending the
        // same write again (applied at most once); a 503 to a copy says
        // nothing of the earlier ones.
        let mut unknown_before = false;
        let mut tries = 0;
        while idempotency.is_some() && tries < 3 {
            match outcome {
                Ended::Unknown(_) => unknown_before = true,
                Ended::NotApplied if unknown_before => {}
                _ => break,
            }
            tries += 1;
            counts.lock().unwrap().retried += 1;
            std::thread::sleep(Duration::from_millis(300));
            outcome = send(&mut rng);
        }
        let mut c = counts.lock().unwrap();
        match outcome {
            Ended::Returned(ret) => {
                history.record_return(op_id, start.elapsed(), ret.clone());
                if tries > 0 {
                    c.retried_and_returned += 1;
                }
                let kind = match (&op, &ret) {
                    (KvOp::Get, KvRet::Value(Some(_))) => "get (value)",
                    (KvOp::Get, _) => "get (absent)",
                    (KvOp::Put { .. }, _) => "put",
                    (KvOp::Cas { .. }, KvRet::Ok) => "cas (set)",
                    (KvOp::Cas { .. }, _) => "cas (mismatch)",
                    (KvOp::Delete, _) => "delete",
                };
                *c.returned.entry(kind).or_default() += 1;
                // What this client now knows of the key.
                match (&op, ret) {
                    (KvOp::Get, KvRet::Value(v)) => {
                        seen.insert(key, v);
                    }
                    (KvOp::Put { value } | KvOp::Cas { value, .. }, KvRet::Ok) => {
                        seen.insert(key, Some(value.clone()));
                    }
                    (KvOp::Cas { .. }, KvRet::Mismatch { current }) => {
                        seen.insert(key, current);
                    }
                    (KvOp::Delete, _) => {
                        seen.insert(key, None);
                    }
                    _ => {}
                }
            }
            Ended::NotApplied if !unknown_before => {
                history.record_failed(op_id);
                c.not_applied += 1;
            }
            Ended::NotApplied => {
                history.record_unknown(op_id);
                *c.unknown.entry("503 after an unknown".into()).or_default() += 1;
            }
            Ended::Unknown(why) => {
                history.record_unknown(op_id);
                let what = if why.contains("was replaced in term") {
                    "504 (the leader it was forwarded to was replaced)"
                } else if why.contains("forwarded to the leader") {
                    FORWARD_WAITED_OUT
                } else if why.starts_with("outcome unknown") {
                    "504"
                } else {
                    "no answer (a node killed)"
                };
                *c.unknown.entry(what.into()).or_default() += 1;
            }
        }
    }
}

/// An unknown outcome because a request forwarded to a leader that had
/// been killed waited out its timeout: the gateway ends that wait once its
/// replica learns of a newer term with another leader (an election after
/// the kill takes about a second), so the tests expect none.
const FORWARD_WAITED_OUT: &str = "504 (a forwarded request waited out its timeout)";

/// `DIR-history.json`, next to the cluster's directory.
fn history_file(dir: &Path) -> PathBuf {
    let name = dir.file_name().expect("a name").to_string_lossy();
    dir.with_file_name(format!("{name}-history.json"))
}

#[test]
fn the_kv_service_is_linearizable_while_nodes_are_killed_and_restarted() {
    let dir = std::env::temp_dir().join(format!("troupe-kv-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    let d = dir.to_str().expect("utf-8 path");
    let _cleanup = troupe_run::KillNodesOnDrop(dir.clone());
    troupe_run::troupe_ok(&["cluster", "up", "--nodes", "3", "--apps", "kv", "--dir", d]);
    let file = read_file(&dir).expect("cluster.json");
    leader(&file, Duration::from_secs(30));

    let run = Arc::new(Run {
        file: file.clone(),
        history: History::new(),
        start: Instant::now(),
        stop: AtomicBool::new(false),
        down: Mutex::new(None),
        counts: Mutex::default(),
    });
    let threads: Vec<_> = (0..CLIENTS)
        .map(|id| {
            let run = run.clone();
            std::thread::spawn(move || run_client(id, &run))
        })
        .collect();
    let (history, start) = (&run.history, run.start);

    // The nemesis: the leader, a follower, the new leader.
    std::thread::sleep(Duration::from_secs(3));
    let mut killed = Vec::new();
    for round in 0..3 {
        let l = leader(&file, Duration::from_secs(30));
        let victim = if round == 1 {
            // A follower, not the node killed last.
            let last = killed.last().map(String::as_str);
            let follower = NODES.into_iter().find(|n| *n != l && Some(*n) != last);
            follower.expect("a follower").to_string()
        } else {
            l
        };
        troupe_run::troupe_ok(&["cluster", "kill", "--dir", d, &victim]);
        *run.down.lock().unwrap() = Some(victim.clone());
        std::thread::sleep(Duration::from_secs(2));
        troupe_run::troupe_ok(&["cluster", "start", "--dir", d, &victim]);
        *run.down.lock().unwrap() = None;
        killed.push(victim);
        std::thread::sleep(Duration::from_secs(3));
    }
    run.stop.store(true, Ordering::Relaxed);
    for t in threads {
        t.join().expect("client thread");
    }

    // After the kills every node serves a linearizable read of every key
    // (recorded too: client 99).
    let l = leader(&file, Duration::from_secs(30));
    for n in NODES {
        let c = client(&file, n);
        for key in KEYS {
            let id = history.record_invoke(99, key, KvOp::Get, start.elapsed());
            match ended(&KvOp::Get, c.get(&format!("/v1/kv/{key}"))) {
                Ended::Returned(ret) => history.record_return(id, start.elapsed(), ret),
                _ => panic!("{n}: no linearizable read of {key} after the kills"),
            }
        }
    }

    let checked = Instant::now();
    let report = match check_kv(history) {
        Ok(report) => report,
        Err(e) => {
            let path = history_file(&dir);
            history.write_json(&path).expect("write the history");
            panic!("the history is not linearizable ({}): {e}", path.display());
        }
    };
    let counts = run.counts.lock().unwrap();
    eprintln!(
        "kv: killed {killed:?} (leader at the end {l}); {report} in {:?}; returned {:?}; \
         {} not applied (503), unknown: {:?}; {} copies sent again under a session, {} of those writes then answered",
        checked.elapsed(),
        counts.returned,
        counts.not_applied,
        counts.unknown,
        counts.retried,
        counts.retried_and_returned,
    );
    // Not vacuous: many operations returned, on every key, of every kind.
    assert_eq!(report.keys, KEYS.len(), "{report}");
    assert!(
        report.returned >= 300,
        "too few operations returned: {report}"
    );
    for kind in [
        "get (value)",
        "put",
        "cas (set)",
        "cas (mismatch)",
        "delete",
    ] {
        assert!(
            counts.returned.get(kind).copied().unwrap_or(0) >= 5,
            "too few {kind}: {:?}",
            counts.returned
        );
    }
    assert_eq!(killed.len(), 3);
    assert_eq!(
        counts.unknown.get(FORWARD_WAITED_OUT),
        None,
        "{:?}",
        counts.unknown
    );

    troupe_run::troupe_ok(&["cluster", "down", "--dir", d, "--clean"]);
}
