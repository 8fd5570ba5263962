//! The failure detector's traffic travels apart from ordinary traffic (on
//! the control stream), so a slow actor does not make its node suspect its
//! peers: with each detector kind, a node held at its in-flight limit by an
//! actor that answers nothing stops reading ordinary frames, and still no
//! peer is suspected, on the simulated network and over real QUIC.
//!
//! Both tests run the real failure-detector actor as a node starts it
//! (`start_failure_detector`, `start_node`), not a hand-built control
//! reference. Proving mutations: deleting `.control()` from the
//! detector's `DriverSpec` in `src/failure_detector.rs`, or the driver's
//! `r = r.control()` in `protocols/src/driver.rs`, makes both fail (the
//! held node stops hearing its peer and suspects it).

use std::future::IntoFuture;
use std::net::UdpSocket;
use std::path::Path;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use serde::{Deserialize, Serialize};
use tokio::sync::watch;
use troupe::config::Config;
use troupe::failure_detector::start_failure_detector;
use troupe::prelude::*;
use troupe::protocols::fd::FailureDetectorConfig;
use troupe::runtime::start_node;

/// Answered once the test opens the gate: each one holds a delivery slot.
#[derive(Debug, Serialize, Deserialize)]
struct Held(u64);
remote_message!(Held, "test.control.held", u64);

/// An ordinary tell sent after the held asks: it must wait while the node
/// is at its limit (shows the limit really held).
#[derive(Debug, Serialize, Deserialize)]
struct Ping;
remote_message!(Ping, "test.control.ping", ());

struct Slow {
    gate: watch::Receiver<bool>,
    pings: Arc<Mutex<u32>>,
}

impl Actor for Slow {
    type Context = Context<Self>;
}

impl Handler<Held> for Slow {
    type Result = ResponseFuture<u64>;
    fn handle(&mut self, m: Held, _: &mut Context<Self>) -> Self::Result {
        let mut gate = self.gate.clone();
        Box::pin(async move {
            let _ = gate.wait_for(|open| *open).await;
            m.0
        })
    }
}

impl Handler<Ping> for Slow {
    type Result = ();
    fn handle(&mut self, _: Ping, _: &mut Context<Self>) {
        *self.pings.lock().unwrap() += 1;
    }
}

fn slow_spec(gate: watch::Receiver<bool>, pings: Arc<Mutex<u32>>) -> ActorSpec<Slow> {
    ActorSpec::new("slow", move || Slow {
        gate: gate.clone(),
        pings: pings.clone(),
    })
    .handles::<Held>()
    .handles::<Ping>()
}

/// Every suspicion or death `node` reports, recorded from now on.
fn record_suspicions(node: &Node) -> Arc<Mutex<Vec<MemberEvent<String>>>> {
    let seen = Arc::new(Mutex::new(Vec::new()));
    let mut rx = node.subscribe_membership();
    let s = seen.clone();
    actix_rt::spawn(async move {
        while let Ok(ev) = rx.recv().await {
            if matches!(ev.status, MemberStatus::Suspect | MemberStatus::Down) {
                s.lock().unwrap().push(ev);
            }
        }
    });
    seen
}

/// What both tests do once the nodes run and see each other: hold `held`
/// at its limit with asks from `asker` to its `slow` actor for `hold`,
/// check the limit held and nobody was suspected, then release.
async fn hold_and_check(
    kind: &str,
    asker: &Node,
    held: &Node,
    open: watch::Sender<bool>,
    pings: Arc<Mutex<u32>>,
    hold: Duration,
) {
    let by_asker = record_suspicions(asker);
    let by_held = record_suspicions(held);
    let path = format!("{}/slow", held.name());
    let slow = asker.lookup::<Held>(&path).unwrap();
    let ping = asker.lookup::<Ping>(&path).unwrap();
    let asks: Vec<_> = (0..64)
        .map(|i| {
            slow.ask(Held(i))
                .timeout(hold + Duration::from_secs(60))
                .into_future()
        })
        .collect();
    let asks = tokio::spawn(futures::future::join_all(asks));
    tokio::time::sleep(Duration::from_millis(300)).await;
    ping.tell(Ping).unwrap();
    tokio::time::sleep(hold).await;

    assert_eq!(
        *pings.lock().unwrap(),
        0,
        "{kind}: the ordinary tell was read: the node was not held at its limit, the test proves nothing"
    );
    assert_eq!(
        *by_held.lock().unwrap(),
        vec![],
        "{kind}: the node held at its in-flight limit suspected its peer (detector traffic waited behind ordinary frames)"
    );
    assert_eq!(
        *by_asker.lock().unwrap(),
        vec![],
        "{kind}: the peer of the held node suspected it"
    );
    assert_eq!(
        held.membership().status(&asker.name().to_string()),
        Some(MemberStatus::Up),
        "{kind}: the held node does not see its peer up"
    );

    open.send(true).unwrap();
    let replies: Vec<u64> = asks
        .await
        .unwrap()
        .into_iter()
        .map(|r| r.unwrap())
        .collect();
    assert_eq!(replies, (0..64).collect::<Vec<_>>(), "{kind}: replies");
    let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
    while *pings.lock().unwrap() == 0 {
        assert!(
            tokio::time::Instant::now() < deadline,
            "{kind}: the ordinary tell never arrived after the release"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// Waits until `a` sees `b` up.
async fn wait_up(kind: &str, a: &Node, b: &str) {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
    while a.membership().status(&b.to_string()) != Some(MemberStatus::Up) {
        assert!(
            tokio::time::Instant::now() < deadline,
            "{kind}: {} never saw {b} up",
            a.name()
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// Simulated network, virtual time, each detector with its default
/// settings: held for 60 s, several times any detector's detection time.
fn on_the_simulated_network(kind: &'static str) {
    {
        run_virtual(move || async move {
            let config = FailureDetectorConfig::from_toml_str(&format!(
                "[failure_detector]\nkind = \"{kind}\"\n"
            ))
            .unwrap();
            let mut cluster = SimCluster::new(11, FaultPlan::reliable());
            cluster.on_start(move |node: Node| {
                let config = config.clone();
                async move {
                    let peer = if node.name() == "a" { "b" } else { "a" };
                    start_failure_detector(&node, &config, &[peer.to_string()])
                        .await
                        .unwrap();
                }
            });
            let a = cluster.add_node("a").await.unwrap();
            let mut b_config = NodeConfig::named("b");
            b_config.runtime.max_inflight_deliveries = 8;
            let b = cluster.add_node_with(b_config).await.unwrap();
            let (open, gate) = watch::channel(false);
            let pings = Arc::new(Mutex::new(0));
            b.spawn(slow_spec(gate, pings.clone())).await.unwrap();
            wait_up(kind, &a, "b").await;
            wait_up(kind, &b, "a").await;
            hold_and_check(kind, &a, &b, open, pings, Duration::from_secs(60)).await;
        });
    }
}

fn free_port() -> u16 {
    UdpSocket::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// The detector settings of the QUIC test: detection within about a
/// second and a half, so holding for six seconds would show a suspicion.
fn tuned(kind: &str) -> &'static str {
    match kind {
        "heartbeat" => "interval_ms = 100\nacceptable_pause_ms = 1000\ncheck_interval_ms = 50\n",
        "phi-accrual" => {
            "heartbeat_interval_ms = 100\nacceptable_heartbeat_pause_ms = 1000\n\
             first_heartbeat_estimate_ms = 100\ncheck_interval_ms = 50\n"
        }
        _ => "probe_interval_ms = 300\nprobe_timeout_ms = 150\n",
    }
}

fn quic_config(
    kind: &str,
    name: &str,
    port: u16,
    peer: &str,
    peer_port: u16,
    limit: usize,
) -> Config {
    Config::from_toml(
        &format!(
            "name = \"{name}\"\nlisten = \"127.0.0.1:{port}\"\n[tls]\ninsecure_dev_mode = true\n\
             [runtime]\nmax_inflight_deliveries = {limit}\n\
             [[peers]]\nname = \"{peer}\"\naddr = \"127.0.0.1:{peer_port}\"\n\
             [failure_detector]\nkind = \"{kind}\"\n{}",
            tuned(kind)
        ),
        Path::new("."),
    )
    .unwrap_or_else(|e| panic!("{kind}: config: {e}"))
}

/// Two nodes over QUIC on loopback, started as `troupe node` starts them
/// (the configured detector included), `b` held at its limit for 6 s.
async fn over_quic(kind: &str) {
    {
        let (pa, pb) = (free_port(), free_port());
        let a = start_node(quic_config(kind, "a", pa, "b", pb, 4096))
            .await
            .unwrap_or_else(|e| panic!("{kind}: a: {e}"));
        let b = start_node(quic_config(kind, "b", pb, "a", pa, 8))
            .await
            .unwrap_or_else(|e| panic!("{kind}: b: {e}"));
        let (open, gate) = watch::channel(false);
        let pings = Arc::new(Mutex::new(0));
        b.node.spawn(slow_spec(gate, pings.clone())).await.unwrap();
        wait_up(kind, &a.node, "b").await;
        wait_up(kind, &b.node, "a").await;
        hold_and_check(kind, &a.node, &b.node, open, pings, Duration::from_secs(6)).await;
        a.shutdown().await;
        b.shutdown().await;
    }
}

#[test]
fn heartbeat_held_node_suspects_no_peer_on_the_simulated_network() {
    on_the_simulated_network("heartbeat");
}

#[test]
fn phi_accrual_held_node_suspects_no_peer_on_the_simulated_network() {
    on_the_simulated_network("phi-accrual");
}

#[test]
fn swim_held_node_suspects_no_peer_on_the_simulated_network() {
    on_the_simulated_network("swim");
}

#[actix_rt::test]
async fn heartbeat_held_node_suspects_no_peer_over_quic() {
    over_quic("heartbeat").await;
}

#[actix_rt::test]
async fn phi_accrual_held_node_suspects_no_peer_over_quic() {
    over_quic("phi-accrual").await;
}

#[actix_rt::test]
async fn swim_held_node_suspects_no_peer_over_quic() {
    over_quic("swim").await;
}
