//! The typed Raft API (`troupe::raft`) on a simulated three-node cluster
//! (a, b, c): proposals through the leader, linearizable and local reads,
//! a retried command under a client session applied once, the leader
//! crashed (a new leader serves, nothing acknowledged is lost) and
//! restarted from its durable log, and a leadership transfer.

use std::cell::RefCell;
use std::collections::BTreeMap;
use std::rc::Rc;
use std::time::Duration;

use troupe::prelude::*;
use troupe::protocols::raft::kv::{KvCommand, KvReply, KvStore};
use troupe::protocols::raft::{RaftConfig, Session};

mod common;

const NODES: [&str; 3] = ["a", "b", "c"];

type Replicas = Rc<RefCell<BTreeMap<String, Replica<KvStore>>>>;

async fn cluster(seed: u64) -> (SimCluster, Replicas) {
    let replicas: Replicas = Rc::default();
    let r = replicas.clone();
    let sim = common::detecting_cluster(seed, &NODES, move |node, members| {
        let r = r.clone();
        async move {
            let replica = start_raft::<KvStore>(&node, "kv", &members, RaftConfig::default())
                .await
                .unwrap();
            r.borrow_mut().insert(node.name().to_string(), replica);
        }
    })
    .await;
    (sim, replicas)
}

async fn leader(replicas: &Replicas, except: Option<&str>) -> Replica<KvStore> {
    let start = tokio::time::Instant::now();
    loop {
        let found = replicas
            .borrow()
            .iter()
            .find(|(n, r)| Some(n.as_str()) != except && r.is_leader())
            .map(|(_, r)| r.clone());
        if let Some(r) = found {
            return r;
        }
        assert!(start.elapsed() < Duration::from_secs(10), "no leader");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

fn put(key: &str, value: &str) -> KvCommand {
    KvCommand::Put {
        key: key.into(),
        value: value.into(),
    }
}

#[test]
fn proposals_reads_sessions_failover_and_transfer() {
    run_virtual(|| async {
        let (mut sim, replicas) = cluster(1).await;
        let l = leader(&replicas, None).await;
        let reply = l.propose(put("a", "1"), None).await.unwrap();
        assert!(matches!(reply, KvReply::Done { .. }));
        let got = l
            .read(|s| s.get("a").map(|v| v.value.clone()))
            .await
            .unwrap();
        assert_eq!(got.as_deref(), Some("1"));
        // A follower refuses, naming the leader.
        let follower = replicas
            .borrow()
            .values()
            .find(|r| !r.is_leader())
            .cloned()
            .unwrap();
        match follower.propose(put("a", "2"), None).await {
            Err(ProposeError::NotLeader { leader }) => {
                assert_eq!(leader.as_deref(), Some(l.node().name()))
            }
            other => panic!("a follower proposed: {other:?}"),
        }
        assert!(matches!(
            follower.read(|s| s.len()).await,
            Err(ReadError::NotLeader { .. })
        ));
        // A retried command under one session applies once.
        let s = Session {
            client: "client-1".into(),
            seq: 1,
        };
        let cas = KvCommand::Cas {
            key: "n".into(),
            expected: None,
            value: "first".into(),
        };
        let first = l.propose(cas.clone(), Some(s.clone())).await.unwrap();
        let again = l.propose(cas, Some(s)).await.unwrap();
        assert_eq!(first, again, "the retry got the first reply");
        assert!(matches!(first, KvReply::Done { .. }));
        // Crash the leader: another is elected and has every write.
        let old = l.node().name().to_string();
        sim.crash(&old);
        let l2 = leader(&replicas, Some(&old)).await;
        let got = l2
            .read(|s| s.get("n").map(|v| v.value.clone()))
            .await
            .unwrap();
        assert_eq!(got.as_deref(), Some("first"));
        l2.propose(put("b", "2"), None).await.unwrap();
        // The old leader restarts from its durable log and catches up.
        sim.restart(&old).await.unwrap();
        tokio::time::sleep(Duration::from_secs(2)).await;
        let back = replicas.borrow()[&old].clone();
        let local = back
            .read_local(|s| s.get("b").map(|v| v.value.clone()))
            .await
            .unwrap();
        assert_eq!(local.as_deref(), Some("2"));
        // Hand leadership to the restarted node.
        l2.transfer_leadership(&old).await.unwrap();
        let l3 = leader(&replicas, Some(l2.node().name())).await;
        assert_eq!(l3.node().name(), old);
        let status = l3.status().await.unwrap();
        assert_eq!(status.matched.len(), 3);
    });
}
