//! Joining through seeds at the transport level: a node that knows only a
//! seed's address is accepted by it (the certificate chains to the cluster
//! CA and names the node), both add each other to their peer tables, and
//! frames flow both ways; a node without `accept_joins` keeps refusing
//! unknown names; a certificate from another CA is refused; `add_peer`
//! refuses bad input and grows the table.

mod quic_support;

use std::time::Duration;

use quic_support::*;
use troupe_framework::transport::{Transport, TransportEvent};
use troupe_transports::certs::ClusterCa;
use troupe_transports::quic::QuicError;

const WAIT: Duration = Duration::from_secs(10);
const QUIET: Duration = Duration::from_millis(1500);

fn is_frame_from(e: &TransportEvent, who: &str) -> bool {
    match e {
        TransportEvent::Frame { from, .. } => from == who,
        TransportEvent::Frames { from, .. } => &**from == who,
        _ => false,
    }
}

async fn until_connected(t: &troupe_transports::quic::QuicTransport, peer: &str) -> bool {
    let deadline = tokio::time::Instant::now() + WAIT;
    while tokio::time::Instant::now() < deadline {
        if t.connected_peers().iter().any(|p| p == peer) {
            return true;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    false
}

#[actix_rt::test]
async fn a_node_joins_through_a_seed_address_alone() {
    init_logs();
    let ca = ClusterCa::generate().expect("ca");
    let (a_addr, c_addr) = (reserve_addr(), reserve_addr());
    let mut a = node_config(&ca, "node-a", a_addr, &[]);
    a.accept_joins = true;
    let (a, mut a_rx) = bind(a, 256).await;
    let mut c = node_config(&ca, "node-c", c_addr, &[]);
    c.accept_joins = true;
    c.seeds = vec![a_addr, c_addr]; // its own address is skipped
    let gen_before = a.peer_generation();
    let (c, mut c_rx) = bind(c, 256).await;
    assert!(until_connected(&c, "node-a").await, "c joined through a");
    assert!(until_connected(&a, "node-c").await, "a accepted c");
    // a learned where c listens from c's hello, c learned a's name from a's.
    assert_eq!(a.peers(), vec![("node-c".to_string(), c_addr)]);
    assert_eq!(c.peers(), vec![("node-a".to_string(), a_addr)]);
    assert!(a.peer_generation() > gen_before);
    // Frames both ways, over the one connection.
    a.send("node-c", frame("from-a", 0)).expect("a sends to c");
    c.send("node-a", frame("from-c", 0)).expect("c sends to a");
    let mut skipped = Vec::new();
    assert!(
        wait_for(&mut c_rx, WAIT, &mut skipped, |e| is_frame_from(
            e, "node-a"
        ))
        .await
        .is_some(),
        "c got a's frame: {skipped:?}"
    );
    assert!(
        wait_for(&mut a_rx, WAIT, &mut skipped, |e| is_frame_from(
            e, "node-c"
        ))
        .await
        .is_some(),
        "a got c's frame: {skipped:?}"
    );
    assert!(logged(&["node=node-a", "accepted joining node", "node-c"]));
    assert!(logged(&["node=node-c", "joined through seed", "node-a"]));
}

#[actix_rt::test]
async fn without_accept_joins_an_unknown_name_is_refused() {
    init_logs();
    let ca = ClusterCa::generate().expect("ca");
    let (a_addr, e_addr) = (reserve_addr(), reserve_addr());
    let (a, mut a_rx) = bind_node(&ca, "node-a", a_addr, &[], 64).await;
    let mut e = node_config(&ca, "node-e", e_addr, &[]);
    e.accept_joins = true;
    e.seeds = vec![a_addr];
    let (e, _e_rx) = bind(e, 64).await;
    assert!(
        logged_within(
            &[
                "node=node-a",
                "refused incoming connection",
                "\"node-e\" is not a configured peer",
                "set `seeds`"
            ],
            WAIT
        )
        .await
    );
    let at_a = drain(&mut a_rx, Duration::from_millis(200)).await;
    assert!(
        !at_a
            .iter()
            .any(|e| matches!(e, TransportEvent::PeerUp { .. })),
        "{at_a:?}"
    );
    assert!(a.peers().is_empty());
    assert!(e.connected_peers().is_empty());
    // a keeps serving: a legitimate joiner's failure leaves it usable.
    assert!(a.add_peer("node-b", reserve_addr()).expect("add"));
}

#[actix_rt::test]
async fn a_certificate_from_another_ca_cannot_join_through_a_seed() {
    init_logs();
    let ca = ClusterCa::generate().expect("ca");
    let rogue = ClusterCa::generate().expect("rogue ca");
    let (a_addr, d_addr) = (reserve_addr(), reserve_addr());
    let mut a = node_config(&ca, "node-a", a_addr, &[]);
    a.accept_joins = true;
    let (a, mut a_rx) = bind(a, 64).await;
    let mut d = node_config(&rogue, "node-d", d_addr, &[]);
    d.accept_joins = true;
    d.seeds = vec![a_addr];
    let (d, _d_rx) = bind(d, 64).await;
    let d_s = d_addr.to_string();
    assert!(
        logged_within(&["node=node-a", "refused incoming connection", &d_s], WAIT).await,
        "a logs the refusal of d's connection"
    );
    assert!(logged_within(&["node=node-d", "joining through seed failed", "TLS"], WAIT).await);
    let at_a = drain(&mut a_rx, QUIET).await;
    assert!(
        !at_a
            .iter()
            .any(|e| matches!(e, TransportEvent::PeerUp { .. })),
        "{at_a:?}"
    );
    assert!(a.peers().is_empty(), "nothing added for a refused node");
    assert!(d.peers().is_empty());
}

#[actix_rt::test]
async fn add_peer_refuses_bad_input_and_grows_the_table() {
    init_logs();
    let ca = ClusterCa::generate().expect("ca");
    let (a, _rx) = bind_node(&ca, "node-a", reserve_addr(), &[], 64).await;
    let somewhere = reserve_addr();
    for bad in ["", "node a", "10.0.0.1", "node-a"] {
        match a.add_peer(bad, somewhere) {
            Err(e @ QuicError::AddPeer { .. }) => {
                assert!(e.to_string().contains(&format!("{bad:?}")), "{e}")
            }
            other => panic!("add_peer({bad:?}) gave {other:?}"),
        }
    }
    let v6: std::net::SocketAddr = "[::1]:7000".parse().expect("addr");
    assert!(a.add_peer("node-v6", v6).is_err(), "another IP family");
    let g = a.peer_generation();
    assert!(a.add_peer("node-b", somewhere).expect("new"));
    assert!(!a.add_peer("node-b", reserve_addr()).expect("known"));
    assert_eq!(a.peer_generation(), g + 1);
    assert_eq!(a.peers(), vec![("node-b".to_string(), somewhere)]);
    // Sends to the new peer are queued (it is dialed on first send).
    a.send("node-b", frame("x", 0)).expect("queued");
    assert!(matches!(
        a.send("node-z", frame("x", 0)),
        Err(troupe_framework::transport::TransportError::UnknownPeer(_))
    ));
}
