//! Every failure detector publishes the same initial view (issue 17, item
//! 5): each configured peer is `Joining` ("configured, not heard from yet")
//! from the start, `Up` on first contact, and `Down` if it is never heard
//! from within the detector's first-contact deadline — never `Up` before
//! contact, and never absent.
//!
//! On the simulated network through the node's real failure-detector actor
//! (`start_failure_detector`), with each detector's defaults (the `lan`
//! preset), checking the deadlines; and over real QUIC with `start_node`
//! and the `lan-fast` preset, for each detector kind.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use troupe::config::Config;
use troupe::failure_detector::start_failure_detector;
use troupe::prelude::*;
use troupe::protocols::fd::FailureDetectorConfig;

const KINDS: [&str; 3] = ["heartbeat", "phi-accrual", "swim"];

/// Node `me`'s view of the others: name -> status.
fn view_of(node: &Node) -> BTreeMap<String, MemberStatus> {
    node.membership()
        .iter()
        .map(|(name, status)| (name.clone(), status))
        .collect()
}

fn joining(names: &[&str]) -> BTreeMap<String, MemberStatus> {
    names
        .iter()
        .map(|n| (n.to_string(), MemberStatus::Joining))
        .collect()
}

/// The statuses `events` gave `member`, in order.
fn statuses(events: &[MemberEvent<String>], member: &str) -> Vec<MemberStatus> {
    events
        .iter()
        .filter(|e| e.member == member)
        .map(|e| e.status)
        .collect()
}

/// Each detector's first-contact deadline with its defaults, for a node
/// with two configured peers (three nodes): heartbeat `interval +
/// acceptable_pause + grace` = 8 s (decided at the first check after it);
/// phi-accrual: phi on the seeded window (mean 1 s + 3 s pause, sd 250 ms)
/// passes 8 at about 5.3 s (the 5.4 s check), then 4 s of grace; SWIM: a
/// round of 2 probe periods plus the minimum suspicion timeout of 4
/// periods = 6 s.
fn deadline(kind: &str) -> (Duration, Duration) {
    let ms = Duration::from_millis;
    match kind {
        "heartbeat" => (ms(8000), ms(8200)),
        "phi-accrual" => (ms(9000), ms(9500)),
        _ => (ms(6000), ms(6100)),
    }
}

/// Node `a` starts alone with peers `b` (started 1 s later) and `c` (never
/// started): `a` sees both `Joining` at once, `b` `Up` once it runs, and
/// `c` `Down` at the deadline, with nothing in between.
fn simulated(kind: &'static str, seed: u64) {
    run_virtual(move || async move {
        let text = format!("[failure_detector]\nkind = \"{kind}\"\n");
        let config = FailureDetectorConfig::from_toml_str(&text).expect("config");
        let events: Arc<Mutex<Vec<MemberEvent<String>>>> = Arc::default();
        let mut cluster = SimCluster::new(seed, FaultPlan::reliable());
        let (cfg, seen) = (config.clone(), events.clone());
        cluster.on_start(move |node: Node| {
            let (cfg, seen) = (cfg.clone(), seen.clone());
            async move {
                if node.name() == "a" {
                    let mut rx = node.subscribe_membership();
                    actix_rt::spawn(async move {
                        while let Ok(ev) = rx.recv().await {
                            seen.lock().unwrap().push(ev);
                        }
                    });
                }
                let peers: Vec<String> = ["a", "b", "c"]
                    .iter()
                    .filter(|n| **n != node.name())
                    .map(|n| n.to_string())
                    .collect();
                start_failure_detector(&node, &cfg, &peers).await.unwrap();
            }
        });
        let start = tokio::time::Instant::now();
        let a = cluster.add_node("a").await.unwrap();
        tokio::time::sleep(Duration::from_millis(10)).await;
        assert_eq!(view_of(&a), joining(&["b", "c"]), "{kind}: initial view");

        tokio::time::sleep(Duration::from_millis(990)).await;
        assert_eq!(view_of(&a), joining(&["b", "c"]), "{kind}: before b starts");
        let b = cluster.add_node("b").await.unwrap();
        tokio::time::sleep(Duration::from_secs(3)).await;
        assert_eq!(
            view_of(&a).get("b"),
            Some(&MemberStatus::Up),
            "{kind}: a hears b"
        );
        assert_eq!(
            view_of(&b).get("a"),
            Some(&MemberStatus::Up),
            "{kind}: b hears a"
        );
        assert_eq!(
            view_of(&b).get("c"),
            Some(&MemberStatus::Joining),
            "{kind}: b has not heard from c"
        );

        let (earliest, latest) = deadline(kind);
        tokio::time::sleep_until(start + earliest - Duration::from_millis(50)).await;
        assert_eq!(
            view_of(&a).get("c"),
            Some(&MemberStatus::Joining),
            "{kind}: c given up on before its deadline {earliest:?}"
        );
        tokio::time::sleep_until(start + latest).await;
        assert_eq!(
            view_of(&a).get("c"),
            Some(&MemberStatus::Down),
            "{kind}: c not Down by {latest:?}"
        );
        tokio::time::sleep(Duration::from_secs(20)).await;
        let events = events.lock().unwrap().clone();
        use MemberStatus::*;
        assert_eq!(
            statuses(&events, "b"),
            vec![Joining, Up],
            "{kind}: {events:?}"
        );
        assert_eq!(
            statuses(&events, "c"),
            vec![Joining, Down],
            "{kind}: {events:?}"
        );
        assert_eq!(view_of(&a).get("b"), Some(&Up), "{kind}");
    });
}

#[test]
fn heartbeat_starts_joining_simulated() {
    simulated("heartbeat", 11);
}

#[test]
fn phi_accrual_starts_joining_simulated() {
    simulated("phi-accrual", 12);
}

#[test]
fn swim_starts_joining_simulated() {
    simulated("swim", 13);
}

/// The three detectors' views of the same situation agree, at every step.
#[test]
fn every_detector_publishes_the_same_initial_view() {
    let at = |kind: &'static str, secs: u64| {
        run_virtual(move || async move {
            let text = format!("[failure_detector]\nkind = \"{kind}\"\n");
            let config = FailureDetectorConfig::from_toml_str(&text).expect("config");
            let mut cluster = SimCluster::new(5, FaultPlan::reliable());
            cluster.on_start(move |node: Node| {
                let cfg = config.clone();
                async move {
                    let peers = vec!["b".to_string(), "c".to_string()];
                    start_failure_detector(&node, &cfg, &peers).await.unwrap();
                }
            });
            let a = cluster.add_node("a").await.unwrap();
            tokio::time::sleep(Duration::from_secs(secs)).await;
            view_of(&a)
        })
    };
    for secs in [0, 1, 5, 20] {
        let views: Vec<_> = KINDS.iter().map(|k| (k, at(k, secs))).collect();
        let want = if secs < 6 {
            joining(&["b", "c"])
        } else {
            [("b", MemberStatus::Down), ("c", MemberStatus::Down)]
                .iter()
                .map(|(n, s)| (n.to_string(), *s))
                .collect()
        };
        for (kind, view) in views {
            assert_eq!(view, want, "{kind} after {secs} s");
        }
    }
}

/// A loopback config for node `me` of `a`, `b`, `c` on `ports`, with the
/// `lan-fast` preset of `kind`.
fn quic_config(me: &str, ports: &BTreeMap<&str, u16>, kind: &str) -> Config {
    let mut text = format!(
        "name = \"{me}\"\nlisten = \"127.0.0.1:{}\"\n[tls]\ninsecure_dev_mode = true\n",
        ports[me]
    );
    for (peer, port) in ports.iter().filter(|(p, _)| **p != me) {
        text.push_str(&format!(
            "[[peers]]\nname = \"{peer}\"\naddr = \"127.0.0.1:{port}\"\n"
        ));
    }
    text.push_str(&format!(
        "[failure_detector]\nkind = \"{kind}\"\npreset = \"lan-fast\"\n"
    ));
    Config::from_toml(&text, std::path::Path::new(".")).expect("config")
}

/// Wait (polling `node`'s view) until `f` holds, for at most `limit`.
async fn wait_for(
    node: &Node,
    limit: Duration,
    what: &str,
    f: impl Fn(&BTreeMap<String, MemberStatus>) -> bool,
) {
    let start = std::time::Instant::now();
    loop {
        let view = view_of(node);
        if f(&view) {
            return;
        }
        assert!(start.elapsed() < limit, "{what} within {limit:?}: {view:?}");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

/// Over QUIC: `a` runs, `b` starts a little later, `c` never runs.
async fn over_quic(kind: &str) {
    let ip = "127.0.0.1".parse().expect("ip");
    let ports: BTreeMap<&str, u16> = ["a", "b", "c"]
        .into_iter()
        .map(|n| {
            (
                n,
                troupe::transports::ports::unused_udp_port(ip).expect("port"),
            )
        })
        .collect();
    let a = start_node(quic_config("a", &ports, kind))
        .await
        .expect("a starts");
    let mut rx = a.node.subscribe_membership();
    wait_for(&a.node, Duration::from_secs(2), "a's initial view", |v| {
        !v.is_empty()
    })
    .await;
    assert_eq!(
        view_of(&a.node),
        joining(&["b", "c"]),
        "{kind}: initial view"
    );

    let b = start_node(quic_config("b", &ports, kind))
        .await
        .expect("b starts");
    let up = |v: &BTreeMap<String, MemberStatus>| v.get("b") == Some(&MemberStatus::Up);
    wait_for(&a.node, Duration::from_secs(10), "a sees b Up", up).await;
    let down = |v: &BTreeMap<String, MemberStatus>| v.get("c") == Some(&MemberStatus::Down);
    wait_for(&a.node, Duration::from_secs(10), "a sees c Down", down).await;
    wait_for(&b.node, Duration::from_secs(10), "b sees c Down", down).await;
    let mut events = Vec::new();
    while let Ok(ev) = rx.try_recv() {
        events.push(ev);
    }
    use MemberStatus::*;
    assert!(
        !statuses(&events, "c").contains(&Up),
        "{kind}: c reported Up without contact: {events:?}"
    );
    assert_eq!(view_of(&a.node).get("b"), Some(&Up), "{kind}");
    b.node.shutdown();
    a.node.shutdown();
}

#[actix_rt::test]
async fn heartbeat_starts_joining_over_quic() {
    over_quic("heartbeat").await;
}

#[actix_rt::test]
async fn phi_accrual_starts_joining_over_quic() {
    over_quic("phi-accrual").await;
}

#[actix_rt::test]
async fn swim_starts_joining_over_quic() {
    over_quic("swim").await;
}
