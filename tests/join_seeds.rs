//! Joining through seed nodes over real QUIC with real certificates (files
//! from `certs::init` / `certs::issue`), nodes started as `troupe node`
//! starts them (`start_node`):
//! - a (`seeds = []`), b and c (`seeds = [a]` only) see each other `Up`;
//! - c shuts down: a and b see it `Left`; c restarts (a new incarnation, on
//!   another port): everyone sees it `Up` again, and it sees them `Up`;
//! - c dies without a word: a and b see it `Down`; it restarts: `Up` again;
//! - d, whose certificate is from another CA, never becomes a member;
//! - malformed announcements are refused entry by entry, the node runs on;
//! - the same join / leave / crash / rejoin story on the simulated network
//!   under virtual time ([`troupe::join::SimPeers`]).
//!
//! Run: `cargo test -p troupe --test join_seeds`.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::time::Duration;

use troupe::config::Config;
use troupe::prelude::*;
use troupe::runtime::RunningNode;
use troupe::transports::certs;

const WAIT: Duration = Duration::from_secs(20);

/// Logs to the test's output (shown for a failing test) at `RUST_LOG`,
/// default warnings.
fn init_logs() {
    let _ = tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("warn")),
        )
        .with_test_writer()
        .try_init();
}

/// A temporary directory with the cluster CA (`certs/`: a, b, c) and
/// another CA (`other/`: d).
struct Certs {
    dir: PathBuf,
}

impl Certs {
    fn new(tag: &str) -> Self {
        let dir = std::env::temp_dir().join(format!(
            "troupe-join-{tag}-{}-{}",
            std::process::id(),
            std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map(|d| d.as_nanos())
                .unwrap_or_default()
        ));
        for (sub, names) in [("certs", &["a", "b", "c"][..]), ("other", &["d"][..])] {
            let d = dir.join(sub);
            certs::init(&d).expect("CA");
            for n in names {
                certs::issue(&d, n).expect("issue");
            }
        }
        Self { dir }
    }

    /// Node `name`'s config: certificates from `sub`, `seeds` as given,
    /// failure detector `fd` (a `[failure_detector]` body).
    fn config(&self, name: &str, sub: &str, listen: &str, seeds: &[String], fd: &str) -> Config {
        let seeds: Vec<String> = seeds.iter().map(|s| format!("{s:?}")).collect();
        Config::from_toml(
            &format!(
                "name = \"{name}\"\nlisten = \"{listen}\"\nseeds = [{}]\n[tls]\n\
                 ca = \"{sub}/ca.pem\"\ncert = \"{sub}/{name}.pem\"\nkey = \"{sub}/{name}.key\"\n\
                 [failure_detector]\n{fd}\n",
                seeds.join(", ")
            ),
            &self.dir,
        )
        .expect("config")
    }
}

impl Drop for Certs {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

fn view_of(node: &RunningNode) -> BTreeMap<String, MemberStatus> {
    node.node
        .membership()
        .iter()
        .map(|(name, status)| (name.clone(), status))
        .collect()
}

/// Waits until `node`'s view gives each of `want` its status.
async fn until(node: &RunningNode, want: &[(&str, &[MemberStatus])], what: &str) {
    let start = std::time::Instant::now();
    loop {
        let view = view_of(node);
        if want
            .iter()
            .all(|(n, ok)| view.get(*n).is_some_and(|s| ok.contains(s)))
        {
            return;
        }
        assert!(
            start.elapsed() < WAIT,
            "{what}: {} sees {view:?} after {WAIT:?}",
            node.node.name()
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

const UP: &[MemberStatus] = &[MemberStatus::Up];
const GONE: &[MemberStatus] = &[MemberStatus::Left, MemberStatus::Down];

async fn scenario(tag: &str, fd: &str) {
    init_logs();
    let certs = Certs::new(tag);
    let a = start_node(certs.config("a", "certs", "127.0.0.1:0", &[], fd))
        .await
        .expect("a starts");
    let seed = vec![a.local_addr().to_string()];
    let b = start_node(certs.config("b", "certs", "127.0.0.1:0", &seed, fd))
        .await
        .expect("b starts");
    let c = start_node(certs.config("c", "certs", "127.0.0.1:0", &seed, fd))
        .await
        .expect("c starts");
    until(&a, &[("b", UP), ("c", UP)], "a sees the joiners").await;
    until(&b, &[("a", UP), ("c", UP)], "b sees a and c").await;
    until(&c, &[("a", UP), ("b", UP)], "c sees a and b").await;

    // c leaves: a and b see it gone.
    let c_port = c.local_addr().port();
    c.shutdown().await;
    until(&a, &[("c", GONE), ("b", UP)], "a sees c leave").await;
    until(&b, &[("c", GONE), ("a", UP)], "b sees c leave").await;
    assert_eq!(view_of(&a)["c"], MemberStatus::Left, "a graceful leave");
    drop(c);

    // c comes back as a new incarnation on another port, knowing only a.
    let c2 = start_node(certs.config("c", "certs", "127.0.0.1:0", &seed, fd))
        .await
        .expect("c restarts");
    assert_ne!(c2.local_addr().port(), c_port);
    until(&a, &[("b", UP), ("c", UP)], "a sees c again").await;
    until(&b, &[("a", UP), ("c", UP)], "b sees c again").await;
    until(&c2, &[("a", UP), ("b", UP)], "the new c sees a and b").await;

    // c dies (no leave announcement): a and b see it Down; it comes back Up.
    c2.node.shutdown();
    c2.transport.close().await;
    drop(c2);
    until(&a, &[("c", GONE), ("b", UP)], "a sees c die").await;
    until(&b, &[("c", GONE), ("a", UP)], "b sees c die").await;
    let c2 = start_node(certs.config("c", "certs", "127.0.0.1:0", &seed, fd))
        .await
        .expect("c restarts after a crash");
    until(&a, &[("b", UP), ("c", UP)], "a sees c after its crash").await;
    until(&b, &[("a", UP), ("c", UP)], "b sees c after its crash").await;
    until(
        &c2,
        &[("a", UP), ("b", UP)],
        "c sees a and b after its crash",
    )
    .await;

    // d's certificate is from another CA: never a member anywhere.
    let d = start_node(certs.config("d", "other", "127.0.0.1:0", &seed, fd))
        .await
        .expect("d starts (its files are consistent)");
    tokio::time::sleep(Duration::from_secs(2)).await;
    for n in [&a, &b, &c2] {
        assert!(!view_of(n).contains_key("d"), "{:?}", view_of(n));
    }
    assert!(d.transport.connected_peers().is_empty());
    assert!(view_of(&d).is_empty(), "{:?}", view_of(&d));
    for n in [&d, &c2, &b, &a] {
        n.shutdown().await;
    }
}

#[actix_rt::test]
async fn join_leave_rejoin_with_heartbeat() {
    scenario("heartbeat", "kind = \"heartbeat\"\npreset = \"lan-fast\"").await;
}

#[actix_rt::test]
async fn join_leave_rejoin_with_swim() {
    scenario("swim", "kind = \"swim\"\npreset = \"lan-fast\"").await;
}

#[actix_rt::test]
async fn join_leave_rejoin_with_phi_accrual() {
    scenario("phi", "kind = \"phi-accrual\"\npreset = \"lan-fast\"").await;
}

/// A member that announces garbage (bad addresses, this node's own name,
/// a name that is no node name, too many members) gets each entry refused
/// with a warning; the receiving node keeps running and keeps its view.
#[actix_rt::test]
async fn malformed_announcements_are_ignored() {
    use troupe::join::{Announce, AnnouncedMember, JOIN_ACTOR, MAX_ANNOUNCED};
    init_logs();
    let certs = Certs::new("malformed");
    let fd = "kind = \"heartbeat\"\npreset = \"lan-fast\"";
    let a = start_node(certs.config("a", "certs", "127.0.0.1:0", &[], fd))
        .await
        .expect("a starts");
    let seed = vec![a.local_addr().to_string()];
    let b = start_node(certs.config("b", "certs", "127.0.0.1:0", &seed, fd))
        .await
        .expect("b starts");
    until(&a, &[("b", UP)], "a sees b").await;
    let member = |name: &str, addr: &str| AnnouncedMember {
        name: name.into(),
        addr: addr.into(),
    };
    let to_a = b
        .node
        .lookup::<Announce>(&format!("a/{JOIN_ACTOR}"))
        .expect("path")
        .control();
    for members in [
        vec![member("x", "not an address")],
        vec![member("y", "0.0.0.0:7000")], // unspecified IP, not the sender's entry
        vec![member("not a name", "127.0.0.1:9")],
        vec![member("v6", "[::1]:9")], // a listens on IPv4
        vec![member("a", "127.0.0.1:9")],
        (0..=MAX_ANNOUNCED)
            .map(|i| member(&format!("n{i}"), "127.0.0.1:9"))
            .collect(),
    ] {
        to_a.tell(Announce { members }).expect("sent");
    }
    tokio::time::sleep(Duration::from_millis(500)).await;
    let known: Vec<String> = a.transport.peers().into_iter().map(|(n, _)| n).collect();
    assert_eq!(known, vec!["b".to_string()], "nothing malformed was added");
    assert_eq!(view_of(&a).get("b"), Some(&MemberStatus::Up));
    // a still answers: a third node joins through it.
    let c = start_node(certs.config("c", "certs", "127.0.0.1:0", &seed, fd))
        .await
        .expect("c starts");
    until(&a, &[("b", UP), ("c", UP)], "a after the garbage").await;
    until(&b, &[("a", UP), ("c", UP)], "b sees c").await;
    for n in [&c, &b, &a] {
        n.shutdown().await;
    }
}

/// The same story on the simulated network under virtual time: a
/// (seeds: none), b and c (seed: a) see each other `Up`; c leaves (`Left`
/// everywhere), restarts (`Up` again), crashes (`Down`), restarts (`Up`).
#[test]
fn join_leave_rejoin_simulated() {
    use std::cell::RefCell;
    use std::rc::Rc;
    use troupe::failure_detector::{start_failure_detector_with, FailureDetectorHandle};
    use troupe::join::{start_join, SimPeers};
    use troupe::protocols::fd::FailureDetectorConfig;

    fn sim_view(node: &Node) -> BTreeMap<String, MemberStatus> {
        node.membership()
            .iter()
            .map(|(name, status)| (name.clone(), status))
            .collect()
    }
    async fn sim_until(node: &Node, want: &[(&str, &[MemberStatus])], what: &str) {
        let start = tokio::time::Instant::now();
        loop {
            let view = sim_view(node);
            if want
                .iter()
                .all(|(n, ok)| view.get(*n).is_some_and(|s| ok.contains(s)))
            {
                return;
            }
            assert!(
                start.elapsed() < Duration::from_secs(60),
                "{what}: {} sees {view:?}",
                node.name()
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    for kind in ["heartbeat", "phi-accrual", "swim"] {
        run_virtual(move || async move {
            let text = format!("[failure_detector]\nkind = \"{kind}\"\npreset = \"lan-fast\"\n");
            let config = FailureDetectorConfig::from_toml_str(&text).expect("config");
            let handles: Rc<RefCell<BTreeMap<String, FailureDetectorHandle>>> = Rc::default();
            let mut cluster = SimCluster::new(7, FaultPlan::reliable());
            let hs = handles.clone();
            cluster.on_start(move |node: Node| {
                let (cfg, hs) = (config.clone(), hs.clone());
                async move {
                    let seeds: &[&str] = if node.name() == "a" { &[] } else { &["a"] };
                    let peers = SimPeers::new(node.name(), seeds);
                    let fd = start_failure_detector_with(&node, &cfg, &[], true)
                        .await
                        .expect("fd");
                    start_join(&node, peers, fd.clone()).await.expect("join");
                    hs.borrow_mut().insert(node.name().to_string(), fd);
                }
            });
            let a = cluster.add_node("a").await.expect("a");
            let b = cluster.add_node("b").await.expect("b");
            let c = cluster.add_node("c").await.expect("c");
            sim_until(&a, &[("b", UP), ("c", UP)], kind).await;
            sim_until(&b, &[("a", UP), ("c", UP)], kind).await;
            sim_until(&c, &[("a", UP), ("b", UP)], kind).await;

            let fd_c = handles.borrow().get("c").cloned().expect("c's detector");
            fd_c.leave().await.expect("leave");
            tokio::time::sleep(Duration::from_millis(200)).await;
            cluster.crash("c");
            sim_until(&a, &[("c", &[MemberStatus::Left]), ("b", UP)], kind).await;
            sim_until(&b, &[("c", &[MemberStatus::Left]), ("a", UP)], kind).await;

            let c = cluster.restart("c").await.expect("c again");
            sim_until(&a, &[("b", UP), ("c", UP)], kind).await;
            sim_until(&b, &[("a", UP), ("c", UP)], kind).await;
            sim_until(&c, &[("a", UP), ("b", UP)], kind).await;

            cluster.crash("c");
            sim_until(&a, &[("c", &[MemberStatus::Down]), ("b", UP)], kind).await;
            sim_until(&b, &[("c", &[MemberStatus::Down]), ("a", UP)], kind).await;
            let c = cluster.restart("c").await.expect("c after its crash");
            sim_until(&a, &[("b", UP), ("c", UP)], kind).await;
            sim_until(&b, &[("a", UP), ("c", UP)], kind).await;
            sim_until(&c, &[("a", UP), ("b", UP)], kind).await;
        });
    }
}
