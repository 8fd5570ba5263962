//! The typed broadcast API (`troupe::broadcast`) on a simulated three-node
//! cluster (a, b, c; SWIM failure detector): typed payloads delivered
//! everywhere in causal order with their stamps (that a reply overtaking
//! its question waits and is marked held back is shown on the core, in
//! `troupe_protocols::broadcast::causal`'s tests); a node crashed
//! and restarted keeps numbering its deliveries, its delivery log holds
//! every delivery exactly once, and a reader resumes from any index.

use std::cell::RefCell;
use std::collections::BTreeMap;
use std::rc::Rc;
use std::time::Duration;

use serde::{Deserialize, Serialize};
use troupe::broadcast::Delivery;
use troupe::prelude::*;

mod common;

const NODES: [&str; 3] = ["a", "b", "c"];

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
struct Line {
    text: String,
    reply_to: Option<String>,
}

type Groups = Rc<RefCell<BTreeMap<String, BroadcastGroup<Line>>>>;

struct Cluster {
    sim: SimCluster,
    groups: Groups,
}

impl Cluster {
    async fn start(seed: u64) -> Self {
        let groups: Groups = Rc::default();
        let g = groups.clone();
        let sim = common::detecting_cluster(seed, &NODES, move |node, members| {
            let groups = g.clone();
            async move {
                let group = start_broadcast(&node, "talk", BroadcastAlgorithm::Causal, &members)
                    .await
                    .unwrap();
                groups.borrow_mut().insert(node.name().to_string(), group);
            }
        })
        .await;
        Self { sim, groups }
    }

    fn group(&self, n: &str) -> BroadcastGroup<Line> {
        self.groups.borrow()[n].clone()
    }

    /// Every delivery node `n` has logged, from the first.
    async fn all(&self, n: &str, expect: u64) -> Vec<Delivery<Line>> {
        let g = self.group(n);
        g.wait_delivered(expect, Duration::from_secs(10))
            .await
            .unwrap_or_else(|e| panic!("{n}: {expect} deliveries: {e}"));
        let mut d = g.deliveries(0).await.unwrap();
        let mut out = Vec::new();
        while out.len() < expect as usize {
            out.push(d.next().await.unwrap().expect("open"));
        }
        out
    }
}

fn line(text: &str, reply_to: Option<&MessageIdText>) -> Line {
    Line {
        text: text.into(),
        reply_to: reply_to.cloned(),
    }
}
type MessageIdText = String;

fn key(id: &troupe::broadcast::MessageId) -> String {
    format!("{}#{}", id.origin, id.seq)
}

#[test]
fn typed_messages_reach_everyone_in_causal_order_with_their_stamps() {
    run_virtual(|| async {
        let c = Cluster::start(1).await;
        let q = c
            .group("a")
            .broadcast(&line("question", None))
            .await
            .unwrap();
        assert_eq!((q.origin.as_str(), q.seq), ("a", 1));
        c.group("b")
            .wait_delivered(1, Duration::from_secs(5))
            .await
            .unwrap();
        let r = c
            .group("b")
            .broadcast(&line("answer", Some(&key(&q))))
            .await
            .unwrap();
        for n in NODES {
            let got = c.all(n, 2).await;
            let texts: Vec<&str> = got.iter().map(|d| d.payload.text.as_str()).collect();
            assert_eq!(texts, ["question", "answer"], "{n}");
            assert_eq!(got[0].index, 1);
            assert_eq!(got[1].index, 2);
            assert_eq!(got[1].id, r);
            assert_eq!(got[1].sender, "b");
            let v = got[1].stamps.vector.clone().expect("a causal stamp");
            assert_eq!(
                v.get("\"a\""),
                1,
                "{n}: the answer's stamp counts the question"
            );
            assert_eq!(v.get("\"b\""), 1);
        }
    });
}

#[test]
fn a_restarted_node_keeps_its_numbering_and_its_log() {
    run_virtual(|| async {
        let mut c = Cluster::start(3).await;
        for i in 0..3 {
            c.group("a")
                .broadcast(&line(&format!("before {i}"), None))
                .await
                .unwrap();
        }
        c.all("c", 3).await;
        c.sim.crash("c");
        for i in 0..2 {
            c.group("b")
                .broadcast(&line(&format!("while down {i}"), None))
                .await
                .unwrap();
        }
        c.sim.restart("c").await.unwrap();
        // The restarted c catches up on what it missed, then speaks.
        c.group("c")
            .wait_delivered(5, Duration::from_secs(10))
            .await
            .unwrap();
        assert_eq!(
            c.group("c").delivered_count().await.unwrap(),
            5,
            "the count spans the restart (the ledger's, not this life's)"
        );
        c.group("c").broadcast(&line("after", None)).await.unwrap();
        let got = c.all("c", 6).await;
        let indexes: Vec<u64> = got.iter().map(|d| d.index).collect();
        assert_eq!(
            indexes,
            [1, 2, 3, 4, 5, 6],
            "no gap, no repeat across the restart"
        );
        let mut texts: Vec<&str> = got.iter().map(|d| d.payload.text.as_str()).collect();
        texts[3..5].sort();
        assert_eq!(
            texts,
            [
                "before 0",
                "before 1",
                "before 2",
                "while down 0",
                "while down 1",
                "after"
            ]
        );
        // c numbers its own broadcasts after what it sent before: none.
        assert_eq!(got[5].id.seq, 1);
        // A reader resumes from any index.
        let mut d = c.group("c").deliveries(4).await.unwrap();
        assert_eq!(d.next().await.unwrap().unwrap().index, 5);
        assert_eq!(d.next().await.unwrap().unwrap().index, 6);
        // And sees new deliveries live, after the logged ones.
        c.group("a").broadcast(&line("live", None)).await.unwrap();
        let live = d.next().await.unwrap().unwrap();
        assert_eq!((live.index, live.payload.text.as_str()), (7, "live"));
        assert!(!live.held_back);
    });
}

/// Flow control: with a window of 4, a sender's fifth broadcast waits while
/// its first four are in flight (member c runs no instance of the group, so
/// it holds none of them, and it is live: the failure detector reports it
/// up), and goes out once c starts the group and the re-sends reach it.
/// The waiting call sent nothing: c delivers five messages, not six.
#[test]
fn a_broadcast_waits_while_its_window_is_in_flight() {
    use troupe::broadcast::start_broadcast_with;
    use troupe_protocols::broadcast::BroadcastConfig;
    run_virtual(|| async {
        let c = Cluster::start(5).await;
        let members: Vec<String> = NODES.iter().map(|n| n.to_string()).collect();
        let config = BroadcastConfig {
            window: 4,
            keep_log: true,
            ..BroadcastConfig::default()
        };
        let start = |n: &str| {
            let node = c.sim.node(n).expect("node").clone();
            let (members, config) = (members.clone(), config.clone());
            async move {
                start_broadcast_with::<Line>(&node, "w", BroadcastAlgorithm::Fifo, &members, config)
                    .await
                    .unwrap()
            }
        };
        let a = start("a").await;
        let _b = start("b").await;
        for i in 0..4 {
            a.broadcast(&line(&format!("in window {i}"), None))
                .await
                .unwrap();
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
        assert_eq!(a.instance().view().in_flight, 4, "c holds none of them");
        let fifth =
            tokio::time::timeout(Duration::from_secs(2), a.broadcast(&line("waited", None))).await;
        assert!(
            fifth.is_err(),
            "the fifth broadcast did not wait: {fifth:?}"
        );
        let late = start("c").await;
        let id = tokio::time::timeout(Duration::from_secs(10), a.broadcast(&line("fifth", None)))
            .await
            .expect("the window frees once c holds the messages")
            .unwrap();
        assert_eq!(id.seq, 5, "the call that waited sent nothing");
        late.wait_delivered(5, Duration::from_secs(10))
            .await
            .unwrap();
        let mut d = late.deliveries(0).await.unwrap();
        let mut texts = Vec::new();
        for _ in 0..5 {
            texts.push(d.next().await.unwrap().unwrap().payload.text);
        }
        assert_eq!(texts.last().map(String::as_str), Some("fifth"));
    });
}

/// A reader of a log longer than a page (1024 deliveries) reads it page by
/// page, with no live delivery to wake it between pages: every delivery
/// once, in order, from the first or from any index.
#[test]
fn a_reader_pages_through_a_long_delivery_log() {
    run_virtual(|| async {
        let c = Cluster::start(7).await;
        const N: u64 = 2100;
        for i in 0..N {
            c.group("a")
                .broadcast(&line(&format!("m{i}"), None))
                .await
                .unwrap();
        }
        c.group("c")
            .wait_delivered(N, Duration::from_secs(60))
            .await
            .unwrap();
        for after in [0, 1023, 1024, 2000] {
            let mut d = c.group("c").deliveries(after).await.unwrap();
            for want in after + 1..=N {
                let x = tokio::time::timeout(Duration::from_secs(10), d.next())
                    .await
                    .unwrap_or_else(|_| panic!("from {after}: delivery {want} never came"))
                    .unwrap()
                    .expect("open");
                assert_eq!(x.index, want);
                assert_eq!(x.payload.text, format!("m{}", want - 1));
            }
        }
    });
}
