//! Broadcast deliveries in a node's trace, checked from the trace alone: a
//! simulated three-node cluster (a, b, c; SWIM failure detector) runs a
//! causal group and a total-order group; every delivery is recorded as a
//! `"ev":"delivered"` line (with its vector stamp for the causal group) and
//! `troupe::protocols::testkit::trace_check` finds causal and total order
//! respected.

use std::cell::RefCell;
use std::collections::BTreeMap;
use std::rc::Rc;
use std::time::Duration;

use troupe::prelude::*;

use troupe::protocols::testkit::trace_check::check_broadcast_trace;

mod common;

const NODES: [&str; 3] = ["a", "b", "c"];

type Groups = Rc<RefCell<BTreeMap<(String, &'static str), BroadcastGroup<String>>>>;

#[test]
fn deliveries_are_traced_and_the_trace_shows_causal_and_total_order() {
    run_virtual(|| async {
        let groups: Groups = Rc::default();
        let g = groups.clone();
        let sim = common::detecting_cluster(7, &NODES, move |node, members| {
            let groups = g.clone();
            async move {
                for (instance, algorithm) in [
                    ("talk", BroadcastAlgorithm::Causal),
                    ("order", BroadcastAlgorithm::Total),
                ] {
                    let group = start_broadcast(&node, instance, algorithm, &members)
                        .await
                        .unwrap();
                    groups
                        .borrow_mut()
                        .insert((node.name().to_string(), instance), group);
                }
            }
        })
        .await;
        let group = |n: &str, i: &'static str| groups.borrow()[&(n.to_string(), i)].clone();

        // Rounds of concurrent broadcasts from every node, each round after
        // the previous one is delivered at its sender (so later messages
        // depend on earlier ones).
        let rounds = 4u64;
        for r in 0..rounds {
            for n in NODES {
                for i in ["talk", "order"] {
                    group(n, i).broadcast(&format!("{n} {r}")).await.unwrap();
                }
            }
            for n in NODES {
                for i in ["talk", "order"] {
                    group(n, i)
                        .wait_delivered(3 * (r + 1), Duration::from_secs(10))
                        .await
                        .unwrap_or_else(|e| panic!("{n} {i} round {r}: {e}"));
                }
            }
        }

        let jsonl = sim.net().trace().to_jsonl();
        let causal = jsonl
            .lines()
            .filter(|l| l.contains("\"ev\":\"delivered\"") && l.contains("broadcast.talk"));
        let lines: Vec<&str> = causal.collect();
        assert_eq!(
            lines.len() as u64,
            3 * 3 * rounds,
            "every causal delivery traced"
        );
        assert!(
            lines
                .iter()
                .all(|l| l.contains("\"vector\":[[\"") && !l.contains("\\\"")),
            "causal deliveries carry their vector, by node name: {}",
            lines[0]
        );
        let total: Vec<&str> = jsonl
            .lines()
            .filter(|l| l.contains("\"ev\":\"delivered\"") && l.contains("broadcast.order"))
            .collect();
        assert_eq!(
            total.len() as u64,
            3 * 3 * rounds,
            "every total delivery traced"
        );

        // Causal order over the causal group; the total group has no vectors.
        let causal_only: String = lines.iter().map(|l| format!("{l}\n")).collect();
        let s = check_broadcast_trace(&causal_only, true, false).unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(s.deliveries() as u64, 3 * 3 * rounds);
        assert_eq!(s.protocols[0].with_vector as u64, 3 * 3 * rounds);
        // Total order over the total-order group.
        let total_only: String = total.iter().map(|l| format!("{l}\n")).collect();
        let s = check_broadcast_trace(&total_only, false, true).unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(
            (s.protocols[0].nodes, s.protocols[0].messages),
            (3, 3 * rounds as usize)
        );
        // On the whole trace (other lines skipped, each instance checked
        // apart) the causal group's concurrent messages are not in one
        // order: the total check names that group.
        let e = check_broadcast_trace(&jsonl, false, true).unwrap_err();
        assert!(e.starts_with("broadcast.talk: total order violated"), "{e}");
        check_broadcast_trace(&jsonl, false, false).unwrap();
        // A tampered trace fails: a node delivering twice.
        let doubled = format!("{causal_only}{}\n", lines[lines.len() - 1]);
        let e = check_broadcast_trace(&doubled, true, false).unwrap_err();
        assert!(e.contains("twice"), "{e}");
    });
}
