//! The simulated network is deterministic: one seed, one trace, byte for byte.

mod common;

use std::time::Duration;

use common::{ledger, Apply, Effects, Note};
use troupe::prelude::*;

fn run(seed: u64) -> String {
    run_virtual(move || async move {
        let mut cluster = SimCluster::new(seed, FaultPlan::uniform(LinkFaults::lossy(0.2, 0.05)));
        let names = ["n1", "n2", "n3", "n4", "n5"];
        let effects = Effects::default();
        let mut nodes = Vec::new();
        for n in names {
            let node = cluster.add_node(n).await.unwrap();
            node.spawn(ledger("ledger", &effects)).await.unwrap();
            nodes.push(node);
        }
        let mut calls = Vec::new();
        for (i, node) in nodes.iter().enumerate() {
            for round in 0..20u64 {
                let target = names[(i + 1 + round as usize) % names.len()];
                let r = node.lookup::<Apply>(&format!("{target}/ledger")).unwrap();
                let t = node.lookup::<Note>(&format!("{target}/ledger")).unwrap();
                let _ = t.tell(Note(round));
                let op = i as u64 * 1000 + round;
                calls.push(async move {
                    tokio::time::sleep(Duration::from_millis(37 * round)).await;
                    let _ = r
                        .ask(Apply { op, amount: 1 })
                        .timeout(Duration::from_secs(5))
                        .await;
                });
            }
        }
        futures::future::join_all(calls).await;
        cluster.crash("n3");
        tokio::time::sleep(Duration::from_secs(1)).await;
        cluster.restart("n3").await.unwrap();
        tokio::time::sleep(Duration::from_secs(1)).await;
        cluster.net().trace().to_jsonl()
    })
}

#[test]
fn same_seed_same_trace_different_seed_different_trace() {
    let a = run(42);
    let b = run(42);
    assert!(
        a.lines().count() > 500,
        "trace too small to mean anything: {} lines",
        a.lines().count()
    );
    assert!(
        a.contains("\"ev\":\"drop\"")
            && a.contains("\"ev\":\"crash\"")
            && a.contains("\"ev\":\"restart\"")
    );
    if a != b {
        let first = a.lines().zip(b.lines()).position(|(x, y)| x != y);
        panic!("seed 42 gave two different traces; first difference at line {first:?}");
    }
    let c = run(43);
    assert_ne!(a, c, "different seeds gave the same trace");
}

/// Every envelope carries the sender node's Lamport time, and the trace
/// respects it: a node's sends have strictly growing stamps, and anything a
/// node sends after a delivery is stamped above the delivered message.
/// (A retried ask, and a remembered reply sent again to a retry, are the
/// same envelope sent again, with their original stamp.)
#[test]
fn traces_carry_lamport_stamps_consistent_with_happens_before() {
    let trace = run(7);
    let mut stamp_of_seq = std::collections::BTreeMap::new();
    let mut floor: std::collections::BTreeMap<String, u64> = std::collections::BTreeMap::new();
    let mut last_send: std::collections::BTreeMap<String, u64> = std::collections::BTreeMap::new();
    let mut sent: std::collections::BTreeSet<(String, u64)> = std::collections::BTreeSet::new();
    let mut checked = 0;
    for line in trace.lines() {
        let v: serde_json::Value = serde_json::from_str(line).unwrap();
        let node = v["node"].as_str().unwrap().to_string();
        match v["ev"].as_str().unwrap() {
            "send" => {
                let Some(l) = v["lamport"].as_u64() else {
                    continue;
                };
                stamp_of_seq.insert(v["seq"].as_u64().unwrap(), l);
                if !sent.insert((node.clone(), l)) {
                    assert_ne!(v["kind"], "tell", "{node} reused stamp {l} for a tell");
                    continue; // a retransmission
                }
                if let Some(prev) = last_send.insert(node.clone(), l) {
                    assert!(l > prev, "{node} sent stamp {l} after {prev}");
                }
                if let Some(f) = floor.get(&node) {
                    assert!(l > *f, "{node} sent stamp {l} after receiving stamp {f}");
                    checked += 1;
                }
            }
            "deliver" => {
                if let Some(l) = stamp_of_seq.get(&v["seq"].as_u64().unwrap()) {
                    let f = floor.entry(node).or_default();
                    *f = (*f).max(*l);
                }
            }
            "crash" => {
                // A restarted node starts a new clock; its causal past is gone.
                floor.remove(&node);
                last_send.remove(&node);
                sent.retain(|(n, _)| *n != node);
            }
            _ => {}
        }
    }
    assert!(
        checked > 100,
        "only {checked} sends were checked against a delivery"
    );
}
