//! Model checking every family (`testkit::model`, `testkit::models`):
//! each model at 3 members explored within its bounds with its properties
//! holding, and each kept mutation caught with a counterexample that
//! replays. Bounds and the numbers they give are in BENCHMARKS.md.

use troupe_protocols::broadcast::BroadcastAlgorithm;
use troupe_protocols::commit::CommitAlgorithm;
use troupe_protocols::election::ElectionAlgorithm;
use troupe_protocols::mutex::MutexAlgorithm;
use troupe_protocols::testkit::model::{replay, Bounds, Counterexample, Report, Search, Verdict};
use troupe_protocols::testkit::models::{self, order_checks, Mutation};
use troupe_protocols::testkit::{Observer, SimProtocol};

/// `max_depth` steps, at most six timer firings per path (retries and
/// heartbeats would otherwise make every path endless), 400 000 states.
fn bounds(max_depth: usize) -> Bounds {
    Bounds {
        max_depth,
        max_states: 400_000,
        timer_fires: Some(6),
        ..Bounds::default()
    }
}

fn holds<P, O>(s: &Search<P, O>) -> Report
where
    P: SimProtocol + Clone + std::fmt::Debug,
    O: Observer<P> + Clone + std::fmt::Debug,
{
    let r = s.bfs().unwrap();
    if let Verdict::Violated(cx) = &r.verdict {
        panic!("{cx}");
    }
    assert_ne!(r.verdict, Verdict::Undecided, "{r}");
    r
}

fn caught<P, O>(s: &Search<P, O>, what: &str) -> Counterexample
where
    P: SimProtocol + Clone + std::fmt::Debug,
    O: Observer<P> + Clone + std::fmt::Debug,
{
    caught_by(s, what, true)
}

fn caught_by<P, O>(s: &Search<P, O>, what: &str, breadth_first: bool) -> Counterexample
where
    P: SimProtocol + Clone + std::fmt::Debug,
    O: Observer<P> + Clone + std::fmt::Debug,
{
    let r = if breadth_first { s.bfs() } else { s.dfs() }.unwrap();
    let Verdict::Violated(cx) = r.verdict.clone() else {
        panic!("{what}: the search did not catch it: {r}");
    };
    eprintln!("{what}: {r}\n{cx}");
    // The trace replays to the same violation.
    let again = replay(s, &cx).unwrap_or_else(|e| panic!("{what}: {e}"));
    assert!(!again.is_empty());
    assert!(cx.to_json_lines().lines().count() == cx.steps.len() + 1);
    *cx
}

#[test]
fn every_mutex_holds_with_three_members() {
    for alg in MutexAlgorithm::ALL {
        let r = holds(&Search::new(
            models::mutex(alg, 3, 2, Mutation::None),
            bounds(60),
        ));
        eprintln!("mutex {alg}: {r}");
    }
}

#[test]
fn ricart_agrawala_without_the_tie_break_is_caught() {
    let s = Search::new(
        models::mutex(
            MutexAlgorithm::RicartAgrawala,
            3,
            2,
            Mutation::MutexNoTieBreak,
        ),
        bounds(60),
    );
    let cx = caught(&s, "Ricart-Agrawala without tie-break");
    assert!(
        cx.violation.contains("hold") || cx.violation.contains("token"),
        "{}",
        cx.violation
    );
}

#[test]
fn every_election_holds_with_three_members() {
    for alg in ElectionAlgorithm::ALL {
        let r = holds(&Search::new(
            models::election(alg, 3),
            Bounds {
                crashes: 1,
                ..bounds(16)
            },
        ));
        eprintln!("election {alg}: {r}");
    }
}

#[test]
fn two_phase_commit_holds_and_blocks_without_its_coordinator() {
    let r = holds(&Search::new(
        models::commit(CommitAlgorithm::TwoPhase, 3, Mutation::None),
        bounds(40),
    ));
    eprintln!("2PC: {r}");
    // With a crash, the search reaches the blocking state: every
    // participant ready, the coordinator down, nobody able to decide.
    let mut m = models::commit(CommitAlgorithm::TwoPhase, 3, Mutation::None);
    m.at_rest = Some(models::everyone_alive_decided());
    let s = Search::new(
        m,
        Bounds {
            crashes: 1,
            ..bounds(40)
        },
    );
    let cx = caught(&s, "2PC blocking");
    assert!(
        cx.steps.iter().any(|s| s.what.starts_with("CRASH 1")),
        "{cx}"
    );
}

#[test]
fn three_phase_commit_violates_agreement_under_a_partition() {
    let r = holds(&Search::new(
        models::commit(CommitAlgorithm::ThreePhase, 3, Mutation::None),
        bounds(40),
    ));
    eprintln!("3PC: {r}");
    // The coordinator may crash (once, for good), the group may be cut in
    // two anywhere at any time.
    let mut m = models::commit(CommitAlgorithm::ThreePhase, 3, Mutation::None);
    m.crashable = Some(vec![1]);
    let s = Search::new(
        m,
        Bounds {
            crashes: 1,
            restarts: false,
            partitions: 1,
            ..bounds(40)
        },
    );
    let cx = caught(&s, "3PC partition");
    assert!(cx.violation.contains("AC1"), "{}", cx.violation);
    assert!(
        cx.steps.iter().any(|s| s.what.starts_with("PARTITION")),
        "{cx}"
    );
    // Its trace, for `troupe trace view` (apps/tests/trace_view_browser.rs
    // draws it): every message delivered or lost was sent, and the story's
    // turns are in it.
    let trace = s.trace(&cx).unwrap();
    check_trace(&trace, cx.steps.len());
    assert!(trace.contains("PARTITION"), "{trace}");
    assert!(
        trace.contains("\"ev\":\"crash\"") || !cx.steps.iter().any(|s| s.what.starts_with("CRASH"))
    );
    assert!(trace.contains("VIOLATED: "), "{trace}");
    let path = std::path::Path::new(env!("CARGO_TARGET_TMPDIR")).join("3pc-counterexample.jsonl");
    std::fs::write(&path, &trace).unwrap();
    eprintln!("3PC counterexample trace: {}", path.display());
}

/// A counterexample's trace: JSON lines of the framework's format, each
/// delivery or drop matching an earlier send from its sender to its node
/// (by sender and `seq`), and at least one delivery per step that was one.
fn check_trace(trace: &str, steps: usize) {
    use std::collections::HashMap;
    let mut sends: HashMap<(String, u64), String> = HashMap::new();
    let (mut delivered, mut lines) = (0, 0);
    for line in trace.lines() {
        lines += 1;
        let v: serde_json::Value = serde_json::from_str(line).unwrap();
        let node = v["node"].as_str().unwrap().to_string();
        match v["ev"].as_str().unwrap() {
            "send" => {
                let seq = v["seq"].as_u64().unwrap();
                let to = v["to"].as_str().unwrap().to_string();
                assert!(v["msg"].is_string(), "{line}");
                assert!(
                    sends.insert((node, seq), to).is_none(),
                    "seq reused: {line}"
                );
            }
            "deliver" | "drop" => {
                let key = (
                    v["from"].as_str().unwrap().to_string(),
                    v["seq"].as_u64().unwrap(),
                );
                assert_eq!(sends.get(&key), Some(&node), "no send for {line}");
                delivered += usize::from(v["ev"] == "deliver");
            }
            _ => {}
        }
    }
    assert!(lines > steps && delivered > 0, "{trace}");
}

#[test]
fn a_coordinator_that_forgets_its_decision_is_caught() {
    let s = Search::new(
        models::commit(
            CommitAlgorithm::TwoPhase,
            3,
            Mutation::CommitForgetsDecision,
        ),
        Bounds {
            crashes: 1,
            drops: 1,
            ..bounds(40)
        },
    );
    caught(&s, "2PC decision not durable");
}

#[test]
fn every_broadcast_order_holds_with_three_members() {
    // The total orders are not here: total-sequencer passes 400 000 states
    // before depth 8 (its embedded election and acknowledgements), too
    // many for the suite.
    for alg in [
        BroadcastAlgorithm::EagerReliable,
        BroadcastAlgorithm::Fifo,
        BroadcastAlgorithm::Causal,
    ] {
        assert!(!order_checks(alg).total);
        let r = holds(&Search::new(
            models::broadcast(alg, 3, Mutation::None),
            bounds(40),
        ));
        eprintln!("broadcast {alg}: {r}");
    }
}

#[test]
fn a_broadcast_that_forgets_its_deliveries_is_caught() {
    let s = Search::new(
        models::broadcast(
            BroadcastAlgorithm::Causal,
            3,
            Mutation::BroadcastForgetsDeliveries,
        ),
        Bounds {
            crashes: 1,
            ..bounds(40)
        },
    );
    caught(&s, "broadcast deliveries not durable");
}

#[test]
fn raft_holds_with_three_servers() {
    let r = holds(&Search::new(models::raft(3, Mutation::None), bounds(22)));
    eprintln!("raft: {r}");
}

#[test]
fn raft_forgetting_its_vote_is_caught() {
    let s = Search::new(
        models::raft(3, Mutation::RaftForgetsVote),
        Bounds {
            crashes: 1,
            ..bounds(30)
        },
    );
    let cx = caught(&s, "raft vote not durable");
    assert!(
        cx.violation.contains("election safety") || cx.violation.contains("leader completeness"),
        "{}",
        cx.violation
    );
    assert!(
        cx.steps.iter().any(|s| s.what.starts_with("RESTART")),
        "{cx}"
    );
}
