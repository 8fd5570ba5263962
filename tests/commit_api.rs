//! The typed atomic-commit API (`troupe::commit`) on a simulated
//! three-node cluster (a, b, c; SWIM failure detector), each node with a
//! resource manager that records its calls: a transaction committed
//! everywhere; a no vote aborting it with the participant's reason; a
//! coordinator crash leaving the participants in doubt — blocked under
//! two-phase commit until the coordinator restarts from its log, resolved
//! among the participants under three-phase commit.

use std::cell::RefCell;
use std::collections::BTreeMap;
use std::rc::Rc;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::sync::watch;
use troupe::commit::{in_doubt_on, start_commit_with, CommitConfig, Decision, InDoubt, Phase};
use troupe::prelude::*;

mod common;

const NODES: [&str; 3] = ["a", "b", "c"];

/// What a resource manager was asked.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Call {
    Prepare(TxId),
    Commit(TxId),
    Abort(TxId),
}

/// A node's manager: its calls survive the node's restarts; it votes no
/// with `no`'s reason if set, and answers `prepare` only once `gate` is
/// open.
#[derive(Clone)]
struct Recorder {
    calls: Arc<Mutex<Vec<Call>>>,
    no: Rc<RefCell<Option<String>>>,
    gate: watch::Receiver<bool>,
}

impl Recorder {
    fn calls(&self) -> Vec<Call> {
        self.calls.lock().unwrap().clone()
    }
}

impl ResourceManager for Recorder {
    async fn prepare(&self, tx: TxId) -> Result<(), String> {
        self.calls.lock().unwrap().push(Call::Prepare(tx));
        let mut gate = self.gate.clone();
        let _ = gate.wait_for(|open| *open).await;
        match self.no.borrow().clone() {
            Some(reason) => Err(reason),
            None => Ok(()),
        }
    }
    async fn commit(&self, tx: TxId) {
        self.calls.lock().unwrap().push(Call::Commit(tx));
    }
    async fn abort(&self, tx: TxId) {
        self.calls.lock().unwrap().push(Call::Abort(tx));
    }
}

struct Cluster {
    sim: SimCluster,
    rms: BTreeMap<String, Recorder>,
    gates: BTreeMap<String, watch::Sender<bool>>,
    handles: Rc<RefCell<BTreeMap<String, CommitHandle>>>,
}

impl Cluster {
    /// Three nodes running commit instance `orders` with `algorithm`.
    async fn start(seed: u64, algorithm: CommitAlgorithm) -> Self {
        Self::start_with(seed, algorithm, CommitConfig::default()).await
    }

    /// [`Cluster::start`] with `config`.
    async fn start_with(seed: u64, algorithm: CommitAlgorithm, config: CommitConfig) -> Self {
        let mut rms = BTreeMap::new();
        let mut gates = BTreeMap::new();
        for n in NODES {
            let (tx, rx) = watch::channel(true);
            gates.insert(n.to_string(), tx);
            rms.insert(
                n.to_string(),
                Recorder {
                    calls: Arc::default(),
                    no: Rc::default(),
                    gate: rx,
                },
            );
        }
        let handles: Rc<RefCell<BTreeMap<String, CommitHandle>>> = Rc::default();
        let (h, r) = (handles.clone(), rms.clone());
        let sim = common::detecting_cluster(seed, &NODES, move |node, members| {
            let (handles, rm) = (h.clone(), r[node.name()].clone());
            let config = config.clone();
            async move {
                let handle = start_commit_with(&node, "orders", algorithm, &members, config, rm)
                    .await
                    .unwrap();
                handles.borrow_mut().insert(node.name().to_string(), handle);
            }
        })
        .await;
        Self {
            sim,
            rms,
            gates,
            handles,
        }
    }

    fn handle(&self, n: &str) -> CommitHandle {
        self.handles.borrow()[n].clone()
    }

    fn calls(&self, n: &str) -> Vec<Call> {
        self.rms[n].calls()
    }

    async fn in_doubt(&self, n: &str) -> Vec<TxId> {
        let listed = self.handle(n).in_doubt().await.unwrap();
        // The node-wide listing (the HTTP endpoint's) agrees.
        let node = self.sim.node(n).unwrap();
        assert_eq!(in_doubt_on(node).await, listed, "{n}: in_doubt_on");
        listed.iter().map(|d| d.tx).collect()
    }

    /// Wait (virtual time) until every node in `nodes` satisfies `ok`.
    async fn eventually(&self, what: &str, limit: Duration, ok: impl Fn(&str) -> bool) {
        let start = tokio::time::Instant::now();
        while !NODES.iter().all(|n| ok(n)) {
            assert!(start.elapsed() < limit, "not within {limit:?}: {what}");
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    }
}

fn bc() -> Vec<String> {
    vec!["b".to_string(), "c".to_string()]
}

#[test]
fn a_transaction_commits_at_every_participant() {
    run_virtual(|| async {
        for algorithm in CommitAlgorithm::ALL {
            let c = Cluster::start(1, algorithm).await;
            let tx = c.handle("a").begin(&bc()).unwrap();
            let id = tx.id();
            assert_eq!(c.handle("b").coordinator_of(id), Some("a"));
            assert_eq!(
                tx.commit().await.unwrap(),
                Outcome::Committed,
                "{algorithm}"
            );
            c.eventually("commit applied", Duration::from_secs(1), |n| {
                n == "a" || c.calls(n) == vec![Call::Prepare(id), Call::Commit(id)]
            })
            .await;
            assert_eq!(
                c.calls("a"),
                vec![],
                "{algorithm}: the coordinator is no participant"
            );
            for n in NODES {
                assert_eq!(c.in_doubt(n).await, Vec::<TxId>::new(), "{algorithm} {n}");
            }
            // A second transaction gets another id.
            let next = c.handle("a").begin(&bc()).unwrap();
            assert_ne!(next.id(), id);
            let other = c.handle("b").begin(&["a".into(), "c".into()]).unwrap();
            assert_ne!(other.id(), next.id());
            assert_eq!(c.handle("a").coordinator_of(other.id()), Some("b"));
        }
    });
}

#[test]
fn a_long_run_forgets_what_every_manager_applied() {
    run_virtual(|| async {
        for algorithm in CommitAlgorithm::ALL {
            let config = CommitConfig {
                compact_every: 4,
                ..CommitConfig::default()
            };
            let c = Cluster::start_with(5, algorithm, config).await;
            let mut ids = Vec::new();
            for _ in 0..60 {
                let tx = c.handle("a").begin(&bc()).unwrap();
                ids.push(tx.id());
                assert_eq!(tx.commit().await.unwrap(), Outcome::Committed);
            }
            // Every manager applied every decision (once: nothing was
            // forgotten before it was applied) ...
            let expect: Vec<Call> = ids
                .iter()
                .flat_map(|id| [Call::Prepare(*id), Call::Commit(*id)])
                .collect();
            c.eventually("commits applied", Duration::from_secs(2), |n| {
                n == "a" || c.calls(n) == expect
            })
            .await;
            // ... and each node keeps only the last few transactions.
            for n in NODES {
                let kept = c
                    .handle(n)
                    .instance()
                    .invoke(|core, _, _| {
                        troupe::protocols::commit::CommitCore::transactions(core).len()
                    })
                    .await
                    .unwrap();
                assert!(kept < 20, "{algorithm} {n}: {kept} transactions kept");
            }
        }
    });
}

#[test]
fn a_no_vote_aborts_with_the_participants_reason_and_every_manager_aborts() {
    run_virtual(|| async {
        for algorithm in CommitAlgorithm::ALL {
            let c = Cluster::start(2, algorithm).await;
            *c.rms["c"].no.borrow_mut() = Some("out of stock".into());
            let tx = c.handle("a").begin(&bc()).unwrap();
            let id = tx.id();
            let outcome = tx.commit().await.unwrap();
            assert_eq!(
                outcome,
                Outcome::Aborted(AbortReason::VotedNo {
                    participant: "c".into(),
                    reason: "out of stock".into()
                }),
                "{algorithm}"
            );
            c.eventually("abort applied", Duration::from_secs(2), |n| {
                n == "a" || c.calls(n) == vec![Call::Prepare(id), Call::Abort(id)]
            })
            .await;
            for n in NODES {
                assert_eq!(c.in_doubt(n).await, Vec::<TxId>::new(), "{algorithm} {n}");
            }
        }
    });
}

#[test]
fn silent_participants_abort_the_transaction_on_the_vote_timeout() {
    run_virtual(|| async {
        for algorithm in CommitAlgorithm::ALL {
            let c = Cluster::start(3, algorithm).await;
            // Both managers silent (with one ready, it would ask the other,
            // which would abort on its own: `Unexplained`).
            c.gates["b"].send_replace(false);
            c.gates["c"].send_replace(false);
            let tx = c.handle("a").begin(&bc()).unwrap();
            let id = tx.id();
            let outcome = tx.commit().await.unwrap();
            assert_eq!(
                outcome,
                Outcome::Aborted(AbortReason::Timeout {
                    after: CommitConfig::default().vote_timeout
                }),
                "{algorithm}"
            );
            // The abort reaches the managers while they still prepare; their
            // late yes changes nothing.
            c.eventually("abort applied", Duration::from_secs(2), |n| {
                n == "a" || c.calls(n) == vec![Call::Prepare(id), Call::Abort(id)]
            })
            .await;
            c.gates["b"].send_replace(true);
            c.gates["c"].send_replace(true);
            tokio::time::sleep(Duration::from_secs(1)).await;
            for n in ["b", "c"] {
                assert_eq!(
                    c.calls(n),
                    vec![Call::Prepare(id), Call::Abort(id)],
                    "{algorithm} {n}"
                );
                assert_eq!(
                    c.handle(n).decision(id).await.unwrap(),
                    Some(Decision::Abort)
                );
            }
        }
    });
}

/// `a` coordinates a transaction over b and c, and crashes once b is
/// ready and c's manager is still deciding; then c votes yes. Returns the
/// transaction's id once both participants list it in doubt.
async fn coordinator_crashes_with_participants_ready(c: &mut Cluster) -> TxId {
    c.gates["c"].send_replace(false);
    let tx = c.handle("a").begin(&bc()).unwrap();
    let id = tx.id();
    actix_rt::spawn(async move {
        // Fails when a crashes.
        let _ = tx.commit().await;
    });
    let b = c.handle("b");
    let start = tokio::time::Instant::now();
    while b.in_doubt().await.unwrap().is_empty() {
        assert!(
            start.elapsed() < Duration::from_secs(1),
            "b never got ready"
        );
        tokio::time::sleep(Duration::from_millis(1)).await;
    }
    c.sim.crash("a");
    c.gates["c"].send_replace(true);
    tokio::time::sleep(Duration::from_millis(50)).await;
    for n in ["b", "c"] {
        let listed: Vec<InDoubt> = c.handle(n).in_doubt().await.unwrap();
        assert_eq!(listed.len(), 1, "{n}: {listed:?}");
        assert_eq!(listed[0].tx, id);
        assert_eq!(listed[0].instance, "commit.orders");
        assert!(!listed[0].coordinator);
        assert_eq!(listed[0].phase, Phase::Ready, "{n}");
    }
    id
}

#[test]
fn two_phase_participants_stay_in_doubt_until_the_coordinator_restarts() {
    run_virtual(|| async {
        let mut c = Cluster::start(4, CommitAlgorithm::TwoPhase).await;
        let id = coordinator_crashes_with_participants_ready(&mut c).await;
        // Blocked: every reachable participant is ready, the coordinator down.
        tokio::time::sleep(Duration::from_secs(20)).await;
        for n in ["b", "c"] {
            assert_eq!(c.in_doubt(n).await, vec![id], "{n} still in doubt");
            assert_eq!(c.calls(n), vec![Call::Prepare(id)], "{n}");
        }
        // The coordinator comes back with its store: presumed abort (it
        // logged no decision) resolves the transaction.
        c.sim.restart("a").await.unwrap();
        c.eventually("resolved after the restart", Duration::from_secs(5), |n| {
            n == "a" || c.calls(n) == vec![Call::Prepare(id), Call::Abort(id)]
        })
        .await;
        for n in NODES {
            assert_eq!(c.in_doubt(n).await, Vec::<TxId>::new(), "{n}");
        }
        for n in ["b", "c"] {
            assert_eq!(
                c.handle(n).decision(id).await.unwrap(),
                Some(Decision::Abort)
            );
        }
    });
}

#[test]
fn three_phase_participants_resolve_without_the_coordinator() {
    run_virtual(|| async {
        let mut c = Cluster::start(5, CommitAlgorithm::ThreePhase).await;
        let id = coordinator_crashes_with_participants_ready(&mut c).await;
        // Once the failure detector reports `a` down, b and c terminate
        // the transaction among themselves (nobody pre-committed: abort).
        c.eventually("resolved without a", Duration::from_secs(30), |n| {
            n == "a" || c.calls(n) == vec![Call::Prepare(id), Call::Abort(id)]
        })
        .await;
        assert!(c.sim.node("a").is_none(), "a stayed down");
        for n in ["b", "c"] {
            assert_eq!(c.in_doubt(n).await, Vec::<TxId>::new(), "{n}");
            assert_eq!(
                c.handle(n).decision(id).await.unwrap(),
                Some(Decision::Abort)
            );
        }
    });
}
