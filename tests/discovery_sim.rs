//! The receptionist, pub/sub and death-watch on the simulated network
//! (SWIM membership, virtual time): convergence of every node's `find`
//! through a partition that heals, a crash and a restart, on a lossy
//! network; subscriptions; publish to local and remote subscribers;
//! watches that fire for a stopped actor (with its exit reason), an actor
//! that does not exist, a crashed node and a restarted node; and peers'
//! malformed messages refused while the node keeps running.

use std::cell::RefCell;
use std::collections::{BTreeMap, BTreeSet};
use std::rc::Rc;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use serde::{Deserialize, Serialize};
use troupe::failure_detector::start_failure_detector;
use troupe::framework::death_watch::{DeathReason, DeathWatch, WatchActors};
use troupe::framework::pubsub::{PubSub, Topic};
use troupe::framework::receptionist::{Receptionist, ServiceKey, Snapshot, WireKey};
use troupe::framework::reliable_pubsub::{subscribe_reliable, ReliablePublisher};
use troupe::framework::ExitReason;
use troupe::prelude::*;
use troupe::protocols::fd::config::{HeartbeatConfig, Preset};
use troupe::protocols::fd::FailureDetectorConfig;
use troupe::transports::sim::LinkFaults;

#[derive(Debug, Clone, Serialize, Deserialize)]
struct Work(u32);
remote_message!(Work, "test.discovery.work", ());

#[derive(Debug, Clone, Serialize, Deserialize)]
struct Boom;
remote_message!(Boom, "test.discovery.boom", ());

#[derive(Debug, Clone, Serialize, Deserialize)]
struct Halt;
remote_message!(Halt, "test.discovery.halt", ());

/// Records the `Work` it gets under its path.
struct Worker {
    me: String,
    got: Arc<Mutex<Vec<(String, u32)>>>,
}

impl Actor for Worker {
    type Context = Context<Self>;
}

impl Handler<Work> for Worker {
    type Result = ();
    fn handle(&mut self, m: Work, _: &mut Context<Self>) {
        self.got.lock().unwrap().push((self.me.clone(), m.0));
    }
}

impl Handler<Boom> for Worker {
    type Result = ();
    fn handle(&mut self, _: Boom, _: &mut Context<Self>) {
        panic!("boom (this panic is expected by the test)");
    }
}

impl Handler<Halt> for Worker {
    type Result = ();
    fn handle(&mut self, _: Halt, ctx: &mut Context<Self>) {
        ctx.stop();
    }
}

fn worker(name: &str, got: &Arc<Mutex<Vec<(String, u32)>>>) -> ActorSpec<Worker> {
    let got = got.clone();
    ActorSpec::with_context(name, move |cx| Worker {
        me: cx.path().to_string(),
        got: got.clone(),
    })
    .handles::<Work>()
    .handles::<Boom>()
    .handles::<Halt>()
}

fn key() -> ServiceKey<Work> {
    ServiceKey::new("workers").unwrap()
}

#[derive(Clone)]
struct Services {
    receptionist: Receptionist,
    watch: DeathWatch,
}

type Handles = Rc<RefCell<BTreeMap<String, Services>>>;

/// `nodes` on the simulator with SWIM, each with a receptionist, a
/// death-watch and a worker `w` registered under `workers` (again on every
/// restart).
async fn cluster(
    seed: u64,
    nodes: &[&str],
) -> (SimCluster, Handles, Arc<Mutex<Vec<(String, u32)>>>) {
    cluster_with(seed, nodes, FailureDetectorConfig::default()).await
}

/// [`cluster`] with the failure detector `fd`; returns once every node
/// sees every other `Up`.
async fn cluster_with(
    seed: u64,
    nodes: &[&str],
    fd: FailureDetectorConfig,
) -> (SimCluster, Handles, Arc<Mutex<Vec<(String, u32)>>>) {
    let handles: Handles = Rc::default();
    let got = Arc::new(Mutex::new(Vec::new()));
    let members: Vec<String> = nodes.iter().map(|n| n.to_string()).collect();
    let mut sim = SimCluster::new(seed, FaultPlan::reliable());
    let (h, g, all) = (handles.clone(), got.clone(), members.clone());
    sim.on_start(move |node: Node| {
        let (h, g, fd) = (h.clone(), g.clone(), fd.clone());
        let peers: Vec<String> = all.iter().filter(|m| *m != node.name()).cloned().collect();
        async move {
            start_failure_detector(&node, &fd, &peers).await.unwrap();
            let receptionist = Receptionist::start(&node).await.unwrap();
            let watch = DeathWatch::start(&node).await.unwrap();
            node.spawn(worker("w", &g)).await.unwrap();
            receptionist.register(&key(), "w").unwrap();
            h.borrow_mut().insert(
                node.name().to_string(),
                Services {
                    receptionist,
                    watch,
                },
            );
        }
    });
    for n in &members {
        sim.add_node(n).await.unwrap();
    }
    let start = tokio::time::Instant::now();
    while !sim
        .running()
        .iter()
        .all(|n| sim.node(n).unwrap().membership().up().len() == members.len() - 1)
    {
        assert!(start.elapsed() < Duration::from_secs(30), "not all Up");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    (sim, handles, got)
}

fn found(h: &Handles, node: &str) -> BTreeSet<String> {
    h.borrow()[node]
        .receptionist
        .find_paths(&key())
        .iter()
        .map(|p| p.to_string())
        .collect()
}

fn paths(list: &[&str]) -> BTreeSet<String> {
    list.iter().map(|s| s.to_string()).collect()
}

/// Wait (virtual time, up to `limit`) until every node in `readers` finds
/// exactly `truth`; panics with what each finds otherwise. Returns the
/// time it took.
async fn converge(
    h: &Handles,
    readers: &[&str],
    truth: &BTreeSet<String>,
    limit: Duration,
) -> Duration {
    let start = tokio::time::Instant::now();
    loop {
        if readers.iter().all(|r| found(h, r) == *truth) {
            return start.elapsed();
        }
        if start.elapsed() > limit {
            let seen: Vec<_> = readers
                .iter()
                .map(|r| {
                    let s = &h.borrow()[*r];
                    (
                        r.to_string(),
                        found(h, r),
                        s.receptionist.node().membership(),
                        s.receptionist.versions(),
                    )
                })
                .collect();
            panic!("no convergence to {truth:?} within {limit:?}: {seen:#?}");
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

#[test]
fn find_converges_through_a_healed_partition_a_crash_and_a_restart() {
    for seed in 1u64..=5 {
        run_virtual(|| async move {
            let nodes = ["a", "b", "c", "d", "e"];
            // Heartbeats: a partitioned node is Down after a bounded time
            // (SWIM may keep one Suspect for long, and a Suspect node's
            // entries stay, as the receptionist's docs say).
            let fd = FailureDetectorConfig::Heartbeat(HeartbeatConfig::preset(Preset::LanFast));
            let (mut sim, h, _) = cluster_with(seed, &nodes, fd).await;
            // A lossy network from now on: pushes get lost, anti-entropy
            // repairs them.
            sim.net()
                .set_plan(FaultPlan::uniform(LinkFaults::lossy(0.05, 0.02)));
            let all = paths(&["a/w", "b/w", "c/w", "d/w", "e/w"]);
            converge(&h, &nodes, &all, Duration::from_secs(10)).await;

            // Partition {a, b} | {c, d, e}; c registers another actor
            // meanwhile.
            sim.net().partition(&["a", "b"], &["c", "d", "e"]);
            let got = Arc::new(Mutex::new(Vec::new()));
            sim.node("c")
                .unwrap()
                .spawn(worker("x", &got))
                .await
                .unwrap();
            let c = h.borrow()["c"].receptionist.clone();
            c.register(&key(), "x").unwrap();
            assert!(
                found(&h, "c").contains("c/x"),
                "local registration not immediate"
            );
            // Each side ends up seeing only itself once the other is Down.
            converge(
                &h,
                &["a", "b"],
                &paths(&["a/w", "b/w"]),
                Duration::from_secs(30),
            )
            .await;
            converge(
                &h,
                &["c", "d", "e"],
                &paths(&["c/w", "c/x", "d/w", "e/w"]),
                Duration::from_secs(30),
            )
            .await;

            // Heal: everyone converges to the truth.
            sim.net().heal();
            let mut truth = all.clone();
            truth.insert("c/x".into());
            converge(&h, &nodes, &truth, Duration::from_secs(30)).await;

            // Crash e: its worker disappears everywhere once e is Down.
            sim.crash("e");
            let mut without_e = truth.clone();
            without_e.remove("e/w");
            converge(
                &h,
                &["a", "b", "c", "d"],
                &without_e,
                Duration::from_secs(30),
            )
            .await;

            // Restart e (a new incarnation re-registers its worker).
            sim.restart("e").await.unwrap();
            converge(&h, &nodes, &truth, Duration::from_secs(30)).await;
            for n in nodes {
                assert_eq!(h.borrow()[n].receptionist.refused(), 0, "{n} refused a set");
            }
        });
    }
}

#[test]
fn a_restart_without_a_down_replaces_the_old_incarnation_set() {
    run_virtual(|| async {
        let nodes = ["a", "b", "c"];
        let (mut sim, h, got) = cluster(11, &nodes).await;
        converge(
            &h,
            &nodes,
            &paths(&["a/w", "b/w", "c/w"]),
            Duration::from_secs(5),
        )
        .await;
        // c also runs `y` in its first life only.
        sim.node("c")
            .unwrap()
            .spawn(worker("y", &got))
            .await
            .unwrap();
        h.borrow()["c"].receptionist.register(&key(), "y").unwrap();
        converge(
            &h,
            &nodes,
            &paths(&["a/w", "b/w", "c/w", "c/y"]),
            Duration::from_secs(5),
        )
        .await;
        // Restarted at once: the detectors may never see it Down.
        sim.restart("c").await.unwrap();
        converge(
            &h,
            &nodes,
            &paths(&["a/w", "b/w", "c/w"]),
            Duration::from_secs(10),
        )
        .await;
    });
}

#[test]
fn a_subscription_follows_registrations_and_ends_of_actors() {
    run_virtual(|| async {
        let (sim, h, got) = cluster(5, &["a", "b"]).await;
        let mut sub = h.borrow()["a"].receptionist.subscribe(&key());
        let first = sub.next_paths().await.unwrap();
        let first: BTreeSet<String> = first.iter().map(|p| p.to_string()).collect();
        assert_eq!(first, paths(&["a/w", "b/w"]));

        let b = sim.node("b").unwrap().clone();
        b.spawn(worker("z", &got).restart(Restart::Temporary))
            .await
            .unwrap();
        h.borrow()["b"].receptionist.register(&key(), "z").unwrap();
        let next = tokio::time::timeout(Duration::from_secs(2), sub.next_paths())
            .await
            .expect("a change within 2 s")
            .unwrap();
        assert!(next.iter().any(|p| p.to_string() == "b/z"), "{next:?}");

        // z panics: Temporary, so it ends for good and is unregistered.
        b.lookup::<Boom>("b/z").unwrap().tell(Boom).unwrap();
        let next = tokio::time::timeout(Duration::from_secs(2), sub.next_paths())
            .await
            .expect("a change within 2 s")
            .unwrap();
        let next: BTreeSet<String> = next.iter().map(|p| p.to_string()).collect();
        assert_eq!(next, paths(&["a/w", "b/w"]));

        // The typed refs work: a tell through the one found on b.
        let refs = h.borrow()["a"].receptionist.find(&key());
        for r in &refs {
            r.tell(Work(7)).unwrap();
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
        let mut seen: Vec<String> = got.lock().unwrap().iter().map(|(p, _)| p.clone()).collect();
        seen.sort();
        assert_eq!(seen, ["a/w", "b/w"]);
    });
}

#[test]
fn register_refuses_bad_input_with_clear_errors() {
    run_virtual(|| async {
        let (_sim, h, _) = cluster(6, &["a", "b"]).await;
        let r = h.borrow()["a"].receptionist.clone();
        let e = r.register(&key(), "nobody").unwrap_err();
        assert_eq!(
            e.to_string(),
            "no actor named \"nobody\" exists on this node"
        );
        let e = r.register(&key(), "b/w").unwrap_err();
        assert!(e.to_string().contains("not on this node"), "{e}");
        let other: ServiceKey<Pong> = ServiceKey::new("workers").unwrap();
        let e = r.register(&other, "w").unwrap_err();
        assert!(e.to_string().contains("does not accept"), "{e}");
        // A key of another type is another key.
        assert!(r.find(&other).is_empty());
    });
}

#[derive(Debug, Clone, Serialize, Deserialize)]
struct Pong;
remote_message!(Pong, "test.discovery.pong", ());

#[test]
fn malformed_messages_from_a_peer_are_refused_and_the_node_keeps_running() {
    run_virtual(|| async {
        let (sim, h, _) = cluster(7, &["a", "b"]).await;
        let b = sim.node("b").unwrap().clone();
        let to_a = b.lookup::<Snapshot>("a/receptionist").unwrap();
        to_a.tell(Snapshot {
            version: 99,
            entries: vec![(
                WireKey {
                    id: "workers".into(),
                    msg: "test.discovery.work".into(),
                },
                vec!["not a name!".into()],
            )],
        })
        .unwrap();
        let to_a = b.lookup::<WatchActors>("a/death-watch").unwrap();
        to_a.tell(WatchActors(vec![(1, "../etc".into())])).unwrap();
        tokio::time::sleep(Duration::from_millis(200)).await;
        assert_eq!(h.borrow()["a"].receptionist.refused(), 1);
        assert_eq!(h.borrow()["a"].watch.refused(), 1);
        // a still runs and still knows b's real set.
        assert!(!sim.node("a").unwrap().is_stopped());
        assert_eq!(found(&h, "a"), paths(&["a/w", "b/w"]));
    });
}

#[test]
fn publish_reaches_local_and_remote_subscribers_at_most_once() {
    run_virtual(|| async {
        let (sim, h, got) = cluster(8, &["a", "b", "c"]).await;
        let topic = Topic::<Work>::new("news").unwrap();
        for n in ["a", "b", "c"] {
            let node = sim.node(n).unwrap().clone();
            node.spawn(worker("s", &got)).await.unwrap();
            PubSub::new(h.borrow()[n].receptionist.clone())
                .subscribe(&topic, "s")
                .unwrap();
        }
        let ps = PubSub::new(h.borrow()["a"].receptionist.clone());
        let start = tokio::time::Instant::now();
        while ps.subscribers(&topic).len() < 3 {
            assert!(
                start.elapsed() < Duration::from_secs(5),
                "subscriptions not seen"
            );
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        got.lock().unwrap().clear();
        for i in 0..10 {
            let p = ps.publish(&topic, Work(i));
            assert_eq!((p.sent, p.failed), (3, 0));
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
        let got = got.lock().unwrap().clone();
        for s in ["a/s", "b/s", "c/s"] {
            let seq: Vec<u32> = got
                .iter()
                .filter(|(p, _)| p == s)
                .map(|(_, i)| *i)
                .collect();
            // Reliable FIFO links here: each once, in publish order.
            assert_eq!(seq, (0..10).collect::<Vec<_>>(), "{s}");
        }
    });
}

/// Reliable topics on a network that loses, duplicates and reorders, with
/// a partition that heals: each subscriber gets every message of the
/// publisher exactly once and in publish order. Seeds 1-3
/// (`DISCOVERY_RELIABLE_SEED=n` replays one; the failing seed is printed).
#[test]
fn reliable_topics_deliver_each_message_once_in_order_through_faults() {
    let seeds: Vec<u64> = match std::env::var("DISCOVERY_RELIABLE_SEED") {
        Ok(s) => vec![s.parse().expect("a seed")],
        Err(_) => (1..=3).collect(),
    };
    for seed in seeds {
        eprintln!("reliable topics: seed {seed} (replay: DISCOVERY_RELIABLE_SEED={seed})");
        run_virtual(|| async move {
            let fd = FailureDetectorConfig::Heartbeat(HeartbeatConfig::preset(Preset::LanFast));
            let (sim, h, got) = cluster_with(seed, &["a", "b", "c"], fd).await;
            let topic = Topic::<Work>::new("orders").unwrap();
            let mut receivers = Vec::new();
            for n in ["b", "c"] {
                let node = sim.node(n).unwrap().clone();
                node.spawn(worker("s", &got)).await.unwrap();
                let r = h.borrow()[n].receptionist.clone();
                receivers.push(subscribe_reliable(&r, &topic, "s").await.unwrap());
            }
            // The bad input is refused with the reason.
            let r = h.borrow()["b"].receptionist.clone();
            let err = subscribe_reliable(&r, &topic, "nobody").await.unwrap_err();
            assert!(err.to_string().contains("nobody"), "{err}");
            let publisher =
                ReliablePublisher::new(h.borrow()["a"].receptionist.clone(), topic.clone())
                    .unwrap();
            let start = tokio::time::Instant::now();
            while publisher.subscribers().len() < 2 {
                assert!(start.elapsed() < Duration::from_secs(5), "not seen");
                tokio::time::sleep(Duration::from_millis(10)).await;
            }
            got.lock().unwrap().clear();
            sim.net().set_plan(FaultPlan::uniform(LinkFaults {
                reorder: true,
                ..LinkFaults::lossy(0.1, 0.05)
            }));
            const N: u32 = 300;
            for i in 0..N {
                if i == 100 {
                    // Short enough that nobody is declared Down.
                    sim.net().partition(&["a"], &["b", "c"]);
                }
                if i == 150 {
                    sim.net().heal();
                }
                let p = publisher.publish(Work(i)).await;
                assert_eq!(p.failed, 0, "publish {i}: {p:?}");
            }
            tokio::time::timeout(Duration::from_secs(60), publisher.flush())
                .await
                .expect("all acknowledged within 60 s after healing")
                .unwrap();
            let got = got.lock().unwrap().clone();
            for s in ["b/s", "c/s"] {
                let seq: Vec<u32> = got
                    .iter()
                    .filter(|(p, _)| p == s)
                    .map(|(_, i)| *i)
                    .collect();
                assert_eq!(seq, (0..N).collect::<Vec<_>>(), "seed {seed}: {s}");
            }
            drop(receivers);
        });
    }
}

#[test]
fn watches_fire_with_the_exit_reason_or_no_such_actor() {
    run_virtual(|| async {
        let (sim, h, got) = cluster(9, &["a", "b"]).await;
        let b = sim.node("b").unwrap().clone();
        b.spawn(worker("t", &got).restart(Restart::Temporary))
            .await
            .unwrap();
        let dw = h.borrow()["a"].watch.clone();
        let watch = dw.watch_path("b/t".parse().unwrap());
        // Not yet: give the watch time to be placed.
        tokio::time::sleep(Duration::from_millis(50)).await;
        assert_eq!(h.borrow()["b"].watch.watchers(), 1);
        b.lookup::<Boom>("b/t").unwrap().tell(Boom).unwrap();
        let t = tokio::time::timeout(Duration::from_secs(2), watch)
            .await
            .expect("told within 2 s");
        assert_eq!(t.actor.to_string(), "b/t");
        assert!(
            matches!(&t.reason, DeathReason::Stopped(ExitReason::Panicked { message }) if message.contains("boom")),
            "{t:?}"
        );

        // Remote and local actors that do not exist.
        for path in ["b/ghost", "a/ghost"] {
            let asked = tokio::time::Instant::now();
            let t =
                tokio::time::timeout(Duration::from_secs(1), dw.watch_path(path.parse().unwrap()))
                    .await
                    .expect("answered at once");
            assert_eq!(t.reason, DeathReason::NoSuchActor, "{path}");
            assert!(
                asked.elapsed() < Duration::from_millis(100),
                "{path}: {:?}",
                asked.elapsed()
            );
        }
        // A restarted (Permanent) actor has not ended: the watch stays.
        let w = dw.watch(&b.lookup::<Work>("b/w").unwrap());
        b.lookup::<Boom>("b/w").unwrap().tell(Boom).unwrap();
        let r = tokio::time::timeout(Duration::from_secs(2), w).await;
        assert!(r.is_err(), "fired for a restart: {r:?}");
        // Dropping the watch cancelled it at b.
        tokio::time::sleep(Duration::from_millis(50)).await;
        assert_eq!(h.borrow()["b"].watch.watchers(), 0);
        assert_eq!(dw.pending(), 0);
    });
}

/// A transient actor that stops by itself is not restarted: it has ended,
/// although its name stays claimed. Watches fire, its registration goes.
#[test]
fn a_transient_actor_that_stops_normally_has_ended() {
    run_virtual(|| async {
        let (sim, h, got) = cluster(13, &["a", "b"]).await;
        let b = sim.node("b").unwrap().clone();
        b.spawn(worker("tr", &got).restart(Restart::Transient))
            .await
            .unwrap();
        h.borrow()["b"].receptionist.register(&key(), "tr").unwrap();
        let watch = h.borrow()["a"].watch.watch_path("b/tr".parse().unwrap());
        tokio::time::sleep(Duration::from_millis(50)).await;
        assert!(found(&h, "a").contains("b/tr"));
        b.lookup::<Halt>("b/tr").unwrap().tell(Halt).unwrap();
        let t = tokio::time::timeout(Duration::from_secs(2), watch)
            .await
            .expect("told within 2 s");
        assert_eq!(t.reason, DeathReason::Stopped(ExitReason::Stopped));
        tokio::time::sleep(Duration::from_millis(50)).await;
        assert_eq!(found(&h, "a"), paths(&["a/w", "b/w"]));
        assert!(!b.registry().exists("tr"));
        // A late watch gets the remembered reason.
        let late = h.borrow()["a"].watch.watch_path("b/tr".parse().unwrap());
        let t = late.await;
        assert_eq!(t.reason, DeathReason::Stopped(ExitReason::Stopped));
    });
}

#[test]
fn watches_fire_when_the_node_crashes_or_restarts() {
    run_virtual(|| async {
        let (mut sim, h, _) = cluster(10, &["a", "b", "c"]).await;
        let dw = h.borrow()["a"].watch.clone();
        let on_b = dw.watch_path("b/w".parse().unwrap());
        let on_c = dw.watch_path("c/w".parse().unwrap());
        tokio::time::sleep(Duration::from_millis(50)).await;

        sim.crash("b");
        let t = tokio::time::timeout(Duration::from_secs(30), on_b)
            .await
            .expect("told once b is Down");
        assert_eq!(t.reason, DeathReason::NodeDown);

        // c restarts at once: a new incarnation answers the resent watch.
        sim.restart("c").await.unwrap();
        let t = tokio::time::timeout(Duration::from_secs(5), on_c)
            .await
            .expect("told within resync + round trip");
        assert_eq!(t.reason, DeathReason::NodeRestarted);
        // A watch of a node already Down fires at once.
        let t = tokio::time::timeout(
            Duration::from_millis(1),
            dw.watch_path("b/w".parse().unwrap()),
        )
        .await
        .expect("at once");
        assert_eq!(t.reason, DeathReason::NodeDown);
    });
}

#[test]
fn an_actor_is_told_terminated() {
    struct Watcher(Arc<Mutex<Vec<DeathReason>>>);
    impl Actor for Watcher {
        type Context = Context<Self>;
    }
    impl Handler<troupe::framework::death_watch::Terminated> for Watcher {
        type Result = ();
        fn handle(&mut self, m: troupe::framework::death_watch::Terminated, _: &mut Context<Self>) {
            self.0.lock().unwrap().push(m.reason);
        }
    }
    run_virtual(|| async {
        let (sim, h, _) = cluster(12, &["a", "b"]).await;
        let seen = Arc::new(Mutex::new(Vec::new()));
        let watcher = Watcher(seen.clone()).start();
        let dw = h.borrow()["a"].watch.clone();
        dw.watch_notify("b/w".parse().unwrap(), watcher.recipient());
        tokio::time::sleep(Duration::from_millis(50)).await;
        sim.node("b").unwrap().stop_actor("w").await.unwrap();
        tokio::time::sleep(Duration::from_millis(100)).await;
        assert_eq!(
            *seen.lock().unwrap(),
            vec![DeathReason::Stopped(ExitReason::Shutdown)]
        );
    });
}

/// The simulator half of the receptionist benchmark (BENCHMARKS.md,
/// "Receptionist: time to visibility"): at 64 and 256 nodes (SWIM), the
/// virtual time from `register` on one node until every node's `find`
/// lists it, against the same run's baseline: a plain tell from that node
/// to every other node, until all have it. Links: 10-100 ms uniform, FIFO,
/// no loss; both are polled every 1 ms of virtual time (tokio's timer
/// resolution), so both read up to 1 ms late.
/// `cargo test --release --test discovery_sim -- --ignored --nocapture bench_`
#[test]
#[ignore = "benchmark: run with --ignored --nocapture"]
fn bench_receptionist_visibility_sim() {
    use std::io::Write;
    for n in [64usize, 256] {
        run_virtual(|| async move {
            let names: Vec<String> = (0..n).map(|i| format!("n{i:03}")).collect();
            let refs: Vec<&str> = names.iter().map(|s| s.as_str()).collect();
            let wall = std::time::Instant::now();
            let (sim, h, got) = cluster(42, &refs).await;
            let setup = wall.elapsed();
            sim.net().set_plan(FaultPlan::uniform(LinkFaults {
                delay: troupe::transports::sim::Delay::Uniform {
                    min: Duration::from_millis(10),
                    max: Duration::from_millis(100),
                },
                ..LinkFaults::reliable()
            }));
            // Let the start-up registrations settle.
            tokio::time::sleep(Duration::from_secs(3)).await;
            let rounds = 20;
            let (mut visible, mut fanout, mut frames) = (Vec::new(), Vec::new(), Vec::new());
            let wall = std::time::Instant::now();
            for i in 0..rounds {
                let from = &names[(i * 7) % n];
                let node = sim.node(from).unwrap().clone();
                // Baseline: a tell to every other node's `w`.
                got.lock().unwrap().clear();
                let t = tokio::time::Instant::now();
                for other in names.iter().filter(|o| *o != from) {
                    node.lookup::<Work>(&format!("{other}/w"))
                        .unwrap()
                        .tell(Work(i as u32))
                        .unwrap();
                }
                while got.lock().unwrap().len() < n - 1 {
                    tokio::time::sleep(Duration::from_millis(1)).await;
                }
                fanout.push(t.elapsed());
                // A registration until every node finds it.
                let name = format!("b{i}");
                node.spawn(worker(&name, &got)).await.unwrap();
                let key: ServiceKey<Work> = ServiceKey::new(format!("bench-{i}")).unwrap();
                let before = sim.net().stats().sent;
                let t = tokio::time::Instant::now();
                h.borrow()[from.as_str()]
                    .receptionist
                    .register(&key, &name)
                    .unwrap();
                while !names.iter().all(|r| {
                    !h.borrow()[r.as_str()]
                        .receptionist
                        .find_paths(&key)
                        .is_empty()
                }) {
                    tokio::time::sleep(Duration::from_millis(1)).await;
                }
                visible.push(t.elapsed());
                frames.push(sim.net().stats().sent - before);
            }
            let wall = wall.elapsed();
            // Background traffic (SWIM, receptionist digests) when idle.
            let before = sim.net().stats().sent;
            tokio::time::sleep(Duration::from_secs(10)).await;
            let idle_per_s = (sim.net().stats().sent - before) as f64 / 10.0;
            visible.sort();
            fanout.sort();
            let p = |v: &[Duration], q: f64| v[((v.len() - 1) as f64 * q) as usize];
            let mean_frames = frames.iter().sum::<u64>() as f64 / frames.len() as f64;
            let _ = writeln!(
                std::io::stderr(),
                "receptionist visibility, simulator, {n} nodes (SWIM, 10-100 ms links), {rounds} registrations: \
                 p50 {:?} max {:?}; baseline tell to all others p50 {:?} max {:?}; ratio p50 {:.2}; \
                 frames during a registration {mean_frames:.0} (idle background {idle_per_s:.0}/s); \
                 wall: cluster start {setup:?}, rounds {wall:?}",
                p(&visible, 0.5),
                p(&visible, 1.0),
                p(&fanout, 0.5),
                p(&fanout, 1.0),
                p(&visible, 0.5).as_secs_f64() / p(&fanout, 0.5).as_secs_f64(),
            );
        });
    }
}
