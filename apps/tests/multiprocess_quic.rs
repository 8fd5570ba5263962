//! Multi-process tests over real QUIC on loopback: three `troupe node`
//! processes and an in-process controller node.

mod common;

use std::time::Duration;

use common::{loopback_cluster, NODES};
use troupe::config::Config;
use troupe::framework::membership::MemberStatus;
use troupe::framework::Node;
use troupe::runtime::start_node;
use troupe_apps::local_cluster::{wait_seen, wait_up, LocalCluster};
use troupe_apps::sample::{
    start_status, Add, AddInOrder, Forward, Get, GetOrder, StreamOrder, COUNTER,
};

fn cluster(test: &str, detector: &str) -> LocalCluster {
    loopback_cluster(test, detector, "")
}

async fn controller(c: &LocalCluster) -> troupe::runtime::RunningNode {
    let ctl = start_node(Config::from_file(c.config_path("ctl")).unwrap())
        .await
        .unwrap();
    start_status(&ctl.node, Some(ctl.failure_detector.clone()))
        .await
        .unwrap();
    for n in NODES {
        wait_up(&ctl.node, n, Duration::from_secs(30))
            .await
            .unwrap_or_else(|e| panic!("{e}; logs in {}", c.dir().display()));
    }
    ctl
}

async fn add(ctl: &Node, on: &str, amount: i64) -> i64 {
    ctl.lookup::<Add>(&format!("{on}/{COUNTER}"))
        .unwrap()
        .ask(Add(amount))
        .timeout(Duration::from_secs(5))
        .await
        .unwrap()
}

#[test]
fn asks_and_tells_across_processes_survive_a_sigkill_and_restart() {
    let mut c = cluster("traffic", "phi-accrual");
    for n in NODES {
        c.spawn(n).unwrap();
    }
    let sys = actix_rt::System::new();
    sys.block_on(async {
        let ctl = controller(&c).await;
        let node = ctl.node.clone();
        assert_eq!(add(&node, "node-1", 5).await, 5);
        // node-1's actor asks node-2's actor.
        let fwd = node
            .lookup::<Forward>(&format!("node-1/{COUNTER}"))
            .unwrap();
        assert_eq!(
            fwd.ask(Forward {
                node: "node-2".into(),
                amount: 7
            })
            .await
            .unwrap(),
            Ok(7)
        );
        // 2,000 tells arrive, in order, none lost: numbered 0..2000, and
        // the counter checks each number is the one after the last.
        let t = node
            .lookup::<AddInOrder>(&format!("node-3/{COUNTER}"))
            .unwrap();
        for seq in 0..2000 {
            t.tell(AddInOrder {
                stream: "ctl".into(),
                seq,
                amount: 1,
            })
            .unwrap();
        }
        let get3 = node.lookup::<Get>(&format!("node-3/{COUNTER}")).unwrap();
        assert_eq!(
            get3.ask(Get).timeout(Duration::from_secs(5)).await.unwrap(),
            2000
        );
        let order = node
            .lookup::<GetOrder>(&format!("node-3/{COUNTER}"))
            .unwrap()
            .ask(GetOrder("ctl".into()))
            .timeout(Duration::from_secs(5))
            .await
            .unwrap();
        assert_eq!(
            order,
            StreamOrder {
                received: 2000,
                next: 2000,
                out_of_order: 0,
                first_out_of_order: None,
            },
            "the tells arrived out of order"
        );

        c.kill("node-3");
        wait_seen(
            &node,
            "node-1",
            "node-3",
            MemberStatus::Down,
            Duration::from_secs(30),
        )
        .await
        .unwrap();
        // Asks to the dead node time out (unknown outcome), nothing else breaks.
        let r = get3.ask(Get).timeout(Duration::from_millis(500)).await;
        assert!(r.is_err(), "a killed node answered: {r:?}");
        assert_eq!(add(&node, "node-2", 1).await, 8);

        c.spawn("node-3").unwrap();
        wait_up(&node, "node-3", Duration::from_secs(30))
            .await
            .unwrap();
        // The new incarnation starts from scratch; traffic resumes both ways.
        assert_eq!(add(&node, "node-3", 3).await, 3);
        // node-1 forwards only once its own view has node-3 back.
        wait_seen(
            &node,
            "node-1",
            "node-3",
            MemberStatus::Up,
            Duration::from_secs(30),
        )
        .await
        .unwrap();
        assert_eq!(
            fwd.ask(Forward {
                node: "node-3".into(),
                amount: 4
            })
            .await
            .unwrap(),
            Ok(7)
        );
        ctl.shutdown().await;
    });
    c.shutdown();
    let _ = std::fs::remove_dir_all(c.dir());
}

fn detector_notices_kill_and_rejoin(detector: &str) {
    let mut c = cluster(detector, detector);
    for n in NODES {
        c.spawn(n).unwrap();
    }
    let sys = actix_rt::System::new();
    sys.block_on(async {
        let ctl = controller(&c).await;
        let node = ctl.node.clone();
        for a in NODES {
            for b in NODES.iter().filter(|b| **b != a) {
                wait_seen(&node, a, b, MemberStatus::Up, Duration::from_secs(30))
                    .await
                    .unwrap();
            }
        }
        c.kill("node-2");
        for a in ["node-1", "node-3"] {
            wait_seen(
                &node,
                a,
                "node-2",
                MemberStatus::Down,
                Duration::from_secs(30),
            )
            .await
            .unwrap();
        }
        c.spawn("node-2").unwrap();
        for a in ["node-1", "node-3"] {
            wait_seen(
                &node,
                a,
                "node-2",
                MemberStatus::Up,
                Duration::from_secs(30),
            )
            .await
            .unwrap();
        }
        // A graceful stop is reported as Left, not Down.
        c.terminate("node-1");
        wait_seen(
            &node,
            "node-3",
            "node-1",
            MemberStatus::Left,
            Duration::from_secs(30),
        )
        .await
        .unwrap();
        ctl.shutdown().await;
    });
    c.shutdown();
    let _ = std::fs::remove_dir_all(c.dir());
}

#[test]
fn swim_over_quic_notices_a_kill_and_accepts_the_restart() {
    detector_notices_kill_and_rejoin("swim");
}

#[test]
fn phi_accrual_over_quic_notices_a_kill_and_accepts_the_restart() {
    detector_notices_kill_and_rejoin("phi-accrual");
}
