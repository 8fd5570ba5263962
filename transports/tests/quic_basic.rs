//! QUIC transport: frames both ways, per-sender order, PeerUp/PeerDown,
//! reconnection after a node is dropped and re-bound, and the send-side errors.

mod quic_support;

use std::time::Duration;

use quic_support::*;
use troupe_framework::transport::{Transport, TransportError, TransportEvent};
use troupe_transports::certs::ClusterCa;

const WAIT: Duration = Duration::from_secs(10);

fn is_up(peer: &str) -> impl Fn(&TransportEvent) -> bool + '_ {
    move |e| matches!(e, TransportEvent::PeerUp { peer: p } if p == peer)
}

fn is_down(peer: &str) -> impl Fn(&TransportEvent) -> bool + '_ {
    move |e| matches!(e, TransportEvent::PeerDown { peer: p, .. } if p == peer)
}

#[actix_rt::test]
async fn two_nodes_exchange_frames_both_ways_in_order() {
    init_logs();
    let ca = ClusterCa::generate().expect("ca");
    let (a_addr, b_addr) = (reserve_addr(), reserve_addr());
    let (a, mut a_rx) = bind_node(&ca, "node-a", a_addr, &[("node-b", b_addr)], 64).await;
    let (b, mut b_rx) = bind_node(&ca, "node-b", b_addr, &[("node-a", a_addr)], 64).await;
    assert_eq!(a.local_addr(), a_addr);
    assert_eq!(a.local_name(), "node-a");

    // Both send at once (simultaneous dial), more frames than the inbound channel holds.
    const N: usize = 2000;
    for i in 0..N {
        a.send("node-b", frame("ab", i)).expect("queue a->b");
        b.send("node-a", frame("ba", i)).expect("queue b->a");
    }
    let mut at_a = Vec::new();
    let mut at_b = Vec::new();
    let got_b = collect_frames(&mut b_rx, "node-a", "ab", N, WAIT, &mut at_b).await;
    let got_a = collect_frames(&mut a_rx, "node-b", "ba", N, WAIT, &mut at_a).await;
    assert_eq!(got_b, (0..N).collect::<Vec<_>>(), "a->b in order, complete");
    assert_eq!(got_a, (0..N).collect::<Vec<_>>(), "b->a in order, complete");
    // PeerUp came before the first frame, exactly once.
    for (events, peer) in [(&at_a, "node-b"), (&at_b, "node-a")] {
        let ups: Vec<_> = events
            .iter()
            .enumerate()
            .filter(|(_, e)| is_up(peer)(e))
            .collect();
        assert_eq!(ups.len(), 1, "one PeerUp for {peer}: {events:?}");
        let first_frame = events
            .iter()
            .position(|e| e.frames().next().is_some())
            .expect("frames");
        assert!(ups[0].0 < first_frame, "PeerUp before frames");
        assert!(!events.iter().any(is_down(peer)), "no PeerDown");
    }
    assert_eq!(a.connected_peers(), vec!["node-b".to_string()]);
    // Control frames travel on their own stream.
    b.send_control("node-a", frame("ctl", 0)).expect("control");
    let got = collect_frames(&mut a_rx, "node-b", "ctl", 1, WAIT, &mut at_a).await;
    assert_eq!(got, vec![0]);
}

#[actix_rt::test]
async fn three_nodes_all_to_all_keep_per_sender_order() {
    init_logs();
    let ca = ClusterCa::generate().expect("ca");
    let names = ["node-a", "node-b", "node-c"];
    let addrs: Vec<_> = names.iter().map(|_| reserve_addr()).collect();
    let mut nodes = Vec::new();
    for (i, name) in names.iter().enumerate() {
        let peers: Vec<_> = names.iter().zip(&addrs).map(|(n, a)| (*n, *a)).collect(); // includes itself: must be ignored
        nodes.push(
            bind(
                config(name, addrs[i], ca.issue(name).expect("cert"), &peers),
                256,
            )
            .await,
        );
    }
    const N: usize = 500;
    for i in 0..N {
        for (s, (t, _)) in nodes.iter().enumerate() {
            for (r, to) in names.iter().enumerate() {
                if r != s {
                    t.send(to, frame(names[s], i)).expect("queue");
                }
            }
        }
    }
    for (r, (_, rx)) in nodes.iter_mut().enumerate() {
        let mut all = Vec::new();
        for (s, from) in names.iter().enumerate() {
            if s == r {
                continue;
            }
            let got = collect_frames(rx, from, from, N, WAIT, &mut all).await;
            assert_eq!(got, (0..N).collect::<Vec<_>>(), "{from} -> {}", names[r]);
        }
        let ups = all
            .iter()
            .filter(|e| matches!(e, TransportEvent::PeerUp { .. }))
            .count();
        assert_eq!(ups, 2, "{} saw two PeerUps", names[r]);
    }
}

#[actix_rt::test]
async fn dropped_node_rebound_on_same_port_reconnects() {
    init_logs();
    let ca = ClusterCa::generate().expect("ca");
    let names = ["node-a", "node-b", "node-c"];
    let addrs: Vec<_> = names.iter().map(|_| reserve_addr()).collect();
    let peers: Vec<_> = names.iter().zip(&addrs).map(|(n, a)| (*n, *a)).collect();
    let b_cfg = config("node-b", addrs[1], ca.issue("node-b").expect("b"), &peers);
    let (a, mut a_rx) = bind(
        config("node-a", addrs[0], ca.issue("node-a").expect("a"), &peers),
        256,
    )
    .await;
    let (b, mut b_rx) = bind(b_cfg.clone(), 256).await;
    let (c, mut c_rx) = bind(
        config("node-c", addrs[2], ca.issue("node-c").expect("c"), &peers),
        256,
    )
    .await;

    for i in 0..10 {
        a.send("node-b", frame("a1", i)).expect("a->b");
        c.send("node-b", frame("c1", i)).expect("c->b");
    }
    let mut at_b = Vec::new();
    assert_eq!(
        collect_frames(&mut b_rx, "node-a", "a1", 10, WAIT, &mut at_b)
            .await
            .len(),
        10
    );
    assert_eq!(
        collect_frames(&mut b_rx, "node-c", "c1", 10, WAIT, &mut at_b)
            .await
            .len(),
        10
    );
    let mut skipped = Vec::new();
    assert!(wait_for(&mut a_rx, WAIT, &mut skipped, is_up("node-b"))
        .await
        .is_some());
    assert!(wait_for(&mut c_rx, WAIT, &mut skipped, is_up("node-b"))
        .await
        .is_some());

    // node-b goes away; a and c notice.
    let old_incarnation = b.incarnation().to_string();
    drop(b);
    drop(b_rx);
    assert!(
        wait_for(&mut a_rx, WAIT, &mut skipped, is_down("node-b"))
            .await
            .is_some(),
        "a: PeerDown"
    );
    assert!(
        wait_for(&mut c_rx, WAIT, &mut skipped, is_down("node-b"))
            .await
            .is_some(),
        "c: PeerDown"
    );

    // A new incarnation of node-b on the same port.
    let mut b2_cfg = b_cfg;
    b2_cfg.incarnation = uuid::Uuid::new_v4().to_string();
    let (b2, mut b2_rx) = bind_retry(b2_cfg, 256).await;
    assert_ne!(b2.incarnation(), old_incarnation);
    for i in 0..10 {
        a.send("node-b", frame("a2", i)).expect("a->b2");
        c.send("node-b", frame("c2", i)).expect("c->b2");
        b2.send("node-a", frame("b2", i)).expect("b2->a");
    }
    let mut at_b2 = Vec::new();
    assert_eq!(
        collect_frames(&mut b2_rx, "node-a", "a2", 10, WAIT, &mut at_b2).await,
        (0..10).collect::<Vec<_>>()
    );
    assert_eq!(
        collect_frames(&mut b2_rx, "node-c", "c2", 10, WAIT, &mut at_b2).await,
        (0..10).collect::<Vec<_>>()
    );
    let mut at_a = Vec::new();
    assert_eq!(
        collect_frames(&mut a_rx, "node-b", "b2", 10, WAIT, &mut at_a).await,
        (0..10).collect::<Vec<_>>()
    );
    assert!(
        at_a.iter().any(is_up("node-b")),
        "a: PeerUp after PeerDown: {at_a:?}"
    );
    let mut at_c = Vec::new();
    assert!(
        wait_for(&mut c_rx, WAIT, &mut at_c, is_up("node-b"))
            .await
            .is_some(),
        "c: PeerUp again"
    );
}

#[actix_rt::test]
async fn send_errors_unknown_peer_too_large_queue_full_closed() {
    init_logs();
    let ca = ClusterCa::generate().expect("ca");
    // Nobody listens at node-z's address.
    let nowhere = reserve_addr();
    let mut cfg = node_config(&ca, "node-a", reserve_addr(), &[("node-z", nowhere)]);
    cfg.send_queue_capacity = 8;
    cfg.max_batch = 4;
    cfg.max_frame_size = 100;
    cfg.handshake_timeout = Duration::from_millis(150);
    let (a, _rx) = bind(cfg, 16).await;

    assert_eq!(
        a.send("node-q", frame("x", 0)),
        Err(TransportError::UnknownPeer("node-q".into()))
    );
    assert_eq!(
        a.send("node-z", bytes::Bytes::from(vec![0u8; 101])),
        Err(TransportError::FrameTooLarge { len: 101, max: 100 })
    );
    let mut full = None;
    for i in 0..100 {
        match a.send("node-z", frame("x", i)) {
            Ok(()) => tokio::task::yield_now().await,
            Err(e) => {
                full = Some((i, e));
                break;
            }
        }
    }
    let (i, e) = full.expect("queue must fill up");
    assert_eq!(
        e,
        TransportError::QueueFull {
            peer: "node-z".into(),
            capacity: 8
        }
    );
    assert!(
        i <= 8 + 4,
        "refused after {i} frames: capacity + one batch at most"
    );
    // The unreachable peer is retried (and logged) in the background: the
    // first failed dial comes after the 150 ms handshake timeout, later on
    // a loaded machine, so wait for the line rather than a fixed time.
    assert!(
        logged_within(&["connecting to peer failed", "node-z"], WAIT).await,
        "no failed dial of node-z logged"
    );
    a.shutdown();
    assert_eq!(a.send("node-z", frame("x", 0)), Err(TransportError::Closed));
}

#[actix_rt::test]
async fn silent_peer_is_declared_down_after_idle_timeout() {
    init_logs();
    let ca = ClusterCa::generate().expect("ca");
    let (a_addr, b_addr) = (reserve_addr(), reserve_addr());
    const IDLE: Duration = Duration::from_millis(800);
    let quick = |mut c: troupe_transports::quic::QuicConfig| {
        c.keep_alive = Duration::from_millis(200);
        c.idle_timeout = IDLE;
        c
    };
    let (a, mut a_rx) = bind(
        quick(node_config(&ca, "node-a", a_addr, &[("node-b", b_addr)])),
        64,
    )
    .await;
    // node-b lives on its own arbiter (thread + runtime), which is then stopped:
    // its tasks vanish without closing anything, like a killed process.
    let arbiter = actix_rt::Arbiter::new();
    let b_cfg = quick(node_config(&ca, "node-b", b_addr, &[("node-a", a_addr)]));
    let (tx, rx) = tokio::sync::oneshot::channel();
    arbiter.spawn(async move {
        let (b, b_rx) = bind(b_cfg, 64).await;
        let _ = tx.send((b, b_rx));
        std::future::pending::<()>().await;
    });
    let (b, _b_rx) = rx.await.expect("node-b bound");
    // Keep-alives hold the idle connection open well past the idle timeout.
    a.send("node-b", frame("x", 0)).expect("send");
    let mut seen = Vec::new();
    assert!(wait_for(&mut a_rx, WAIT, &mut seen, is_up("node-b"))
        .await
        .is_some());
    let quiet = drain(&mut a_rx, Duration::from_millis(1500)).await;
    assert!(
        !quiet.iter().any(is_down("node-b")),
        "keep-alive failed: {quiet:?}"
    );

    // Something node-a hears from node-b shortly before it goes silent: a
    // frame, sent (the clock starts before the send) and received here
    // before the stop.
    let heard_after = std::time::Instant::now();
    b.send("node-a", frame("last", 0)).expect("send");
    let last = collect_frames(&mut a_rx, "node-b", "last", 1, WAIT, &mut seen).await;
    assert_eq!(last, vec![0]);
    arbiter.stop();
    arbiter.join().expect("arbiter thread");
    let down = wait_for(&mut a_rx, WAIT, &mut seen, is_down("node-b")).await;
    assert!(
        down.is_some(),
        "no PeerDown after the peer went silent: {seen:?}"
    );
    // QUIC's idle timer restarts with every packet node-a receives from
    // node-b: the frame's, which left after `heard_after`, or a later one.
    // So PeerDown comes at least IDLE after `heard_after`, however slow the
    // machine (a late read, a slow stop or join only add to the wait).
    let waited = heard_after.elapsed();
    assert!(
        waited >= IDLE,
        "down {waited:?} after node-b was last heard from: sooner than the idle timeout"
    );
    drop(b);
}

#[actix_rt::test]
async fn send_is_callable_from_other_threads() {
    init_logs();
    let ca = ClusterCa::generate().expect("ca");
    let (a_addr, b_addr) = (reserve_addr(), reserve_addr());
    let (a, _a_rx) = bind_node(&ca, "node-a", a_addr, &[("node-b", b_addr)], 64).await;
    let (_b, mut b_rx) = bind_node(&ca, "node-b", b_addr, &[("node-a", a_addr)], 64).await;
    let a = std::sync::Arc::new(a);
    let threads: Vec<_> = (0..2)
        .map(|t| {
            let a = a.clone();
            std::thread::spawn(move || {
                for i in 0..200 {
                    a.send("node-b", frame(&format!("t{t}"), i))
                        .expect("send from thread");
                }
            })
        })
        .collect();
    for t in threads {
        t.join().expect("thread");
    }
    let mut all = Vec::new();
    for t in 0..2 {
        let tag = format!("t{t}");
        let got = collect_frames(&mut b_rx, "node-a", &tag, 200, WAIT, &mut all).await;
        assert_eq!(got, (0..200).collect::<Vec<_>>(), "thread {t}: in order");
    }
}

#[actix_rt::test]
async fn simultaneous_dials_resolve_to_one_connection_without_loss() {
    init_logs();
    let ca = ClusterCa::generate().expect("ca");
    for round in 0..5 {
        let (a_addr, b_addr) = (reserve_addr(), reserve_addr());
        let (a, mut a_rx) = bind_node(&ca, "node-a", a_addr, &[("node-b", b_addr)], 512).await;
        let (b, mut b_rx) = bind_node(&ca, "node-b", b_addr, &[("node-a", a_addr)], 512).await;
        // Both dial at the same moment.
        for i in 0..100 {
            a.send("node-b", frame("ab", i)).expect("a");
            b.send("node-a", frame("ba", i)).expect("b");
        }
        let mut at_a = Vec::new();
        let mut at_b = Vec::new();
        let want: Vec<usize> = (0..100).collect();
        assert_eq!(
            collect_frames(&mut b_rx, "node-a", "ab", 100, WAIT, &mut at_b).await,
            want,
            "round {round}"
        );
        assert_eq!(
            collect_frames(&mut a_rx, "node-b", "ba", 100, WAIT, &mut at_a).await,
            want,
            "round {round}"
        );
        // Settled: traffic keeps flowing on the surviving connection, no flapping.
        for i in 100..200 {
            a.send("node-b", frame("ab", i)).expect("a");
        }
        let want: Vec<usize> = (0..200).collect();
        assert_eq!(
            collect_frames(&mut b_rx, "node-a", "ab", 200, WAIT, &mut at_b).await,
            want,
            "round {round}"
        );
        at_a.extend(drain(&mut a_rx, Duration::from_millis(100)).await);
        for (events, peer) in [(&at_a, "node-b"), (&at_b, "node-a")] {
            assert_eq!(
                events.iter().filter(|e| is_up(peer)(e)).count(),
                1,
                "round {round}: {events:?}"
            );
            assert!(
                !events.iter().any(is_down(peer)),
                "round {round}: {events:?}"
            );
        }
    }
}

#[actix_rt::test]
async fn large_frames_arrive_intact_and_control_overtakes_them() {
    init_logs();
    let ca = ClusterCa::generate().expect("ca");
    let (a_addr, b_addr) = (reserve_addr(), reserve_addr());
    let (a, _a_rx) = bind_node(&ca, "node-a", a_addr, &[("node-b", b_addr)], 64).await;
    let (_b, mut b_rx) = bind_node(&ca, "node-b", b_addr, &[("node-a", a_addr)], 64).await;
    // Connect first, so the burst below is not delayed by the handshake.
    a.send("node-b", frame("warm", 0)).expect("warm");
    let mut all = Vec::new();
    collect_frames(&mut b_rx, "node-a", "warm", 1, WAIT, &mut all).await;

    const BIG: usize = 1 << 20;
    const COUNT: usize = 24;
    for i in 0..COUNT {
        let mut f = format!("big:{i}:").into_bytes();
        f.resize(BIG, (i % 251) as u8);
        a.send("node-b", bytes::Bytes::from(f)).expect("big");
    }
    a.send_control("node-b", frame("hb", 0)).expect("control");
    let mut order = Vec::new();
    let mut bigs = 0;
    while bigs < COUNT {
        match tokio::time::timeout(WAIT, b_rx.recv()).await {
            Ok(Some(ev)) => {
                for (_, bytes) in ev.frames() {
                    if bytes.starts_with(b"big:") {
                        let prefix = format!("big:{bigs}:");
                        assert!(bytes.starts_with(prefix.as_bytes()), "big frames in order");
                        assert_eq!(bytes.len(), BIG);
                        assert!(bytes[BIG - 1] == (bigs % 251) as u8, "content intact");
                        order.push("big");
                        bigs += 1;
                    } else if bytes.as_ref() == b"hb:0" {
                        order.push("hb");
                    }
                }
            }
            _ => panic!("only {bigs} big frames arrived"),
        }
    }
    let hb = order
        .iter()
        .position(|x| *x == "hb")
        .expect("control frame arrived");
    // It is sent after 24 MiB of queued data; it must not wait behind most of it.
    assert!(
        hb < COUNT / 2,
        "control frame waited behind data: after {hb} big frames"
    );
}

#[actix_rt::test]
async fn restarted_peer_replaces_its_silent_old_connection() {
    init_logs();
    let ca = ClusterCa::generate().expect("ca");
    let (a_addr, b_addr) = (reserve_addr(), reserve_addr());
    // Long idle timeout: the old connection is still "alive" when node-b returns.
    let (a, mut a_rx) = bind_node(&ca, "node-a", a_addr, &[("node-b", b_addr)], 64).await;
    let b_cfg = node_config(&ca, "node-b", b_addr, &[("node-a", a_addr)]);
    let arbiter = actix_rt::Arbiter::new();
    let (tx, rx) = tokio::sync::oneshot::channel();
    let first_cfg = b_cfg.clone();
    arbiter.spawn(async move {
        let (b, b_rx) = bind(first_cfg, 64).await;
        let _ = tx.send((b, b_rx));
        std::future::pending::<()>().await;
    });
    let (old_b, old_rx) = rx.await.expect("node-b bound");
    a.send("node-b", frame("x", 0)).expect("send");
    let mut seen = Vec::new();
    assert!(wait_for(&mut a_rx, WAIT, &mut seen, is_up("node-b"))
        .await
        .is_some());
    // node-b dies silently (its runtime stops without closing anything)...
    arbiter.stop();
    arbiter.join().expect("arbiter thread");
    // (Releases the old socket; its runtime is gone, so nothing is sent.)
    drop(old_b);
    drop(old_rx);
    // ...and a new incarnation comes back on the same port and talks first.
    let mut new_cfg = b_cfg;
    new_cfg.incarnation = uuid::Uuid::new_v4().to_string();
    let (b2, _b2_rx) = bind_retry(new_cfg, 64).await;
    for i in 0..10 {
        b2.send("node-a", frame("again", i)).expect("send");
    }
    let mut after = Vec::new();
    let got = collect_frames(&mut a_rx, "node-b", "again", 10, WAIT, &mut after).await;
    assert_eq!(got, (0..10).collect::<Vec<_>>());
    let down = after
        .iter()
        .position(is_down("node-b"))
        .expect("PeerDown for the old incarnation");
    let up = after
        .iter()
        .position(is_up("node-b"))
        .expect("PeerUp for the new incarnation");
    assert!(down < up, "{after:?}");
    match &after[down] {
        TransportEvent::PeerDown { reason, .. } => {
            assert!(reason.contains("restarted"), "{reason}")
        }
        other => panic!("{other:?}"),
    }
}
