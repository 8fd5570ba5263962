//! QUIC transport under bad input from an *authenticated* peer (a raw quinn client
//! holding a valid certificate): garbage length prefixes, oversize frames, unknown
//! stream kinds and a garbage hello close that connection with an error, while the
//! node keeps delivering frames from its other peers. Also inbound back-pressure.

mod quic_support;

use std::time::Duration;

use quic_support::*;
use troupe_framework::transport::{InboundEvents, Transport, TransportError, TransportEvent};
use troupe_transports::certs::ClusterCa;
use troupe_transports::quic::wire::CLOSE_PROTOCOL;

const WAIT: Duration = Duration::from_secs(10);

/// Waits for the node to close `conn` for a protocol violation, reading the
/// node's events meanwhile into `seen` (the node reads a stream only while
/// its events are taken, as its dispatcher does).
async fn expect_protocol_close(
    conn: &quinn::Connection,
    rx: &mut InboundEvents,
    seen: &mut Vec<TransportEvent>,
) {
    let closed = tokio::time::timeout(WAIT, conn.closed());
    tokio::pin!(closed);
    let reason = loop {
        tokio::select! {
            reason = &mut closed => break reason.expect("node must close the connection"),
            Some(ev) = rx.recv() => seen.push(ev),
        }
    };
    match reason {
        quinn::ConnectionError::ApplicationClosed(close) => {
            assert_eq!(
                close.error_code,
                quinn::VarInt::from_u32(CLOSE_PROTOCOL),
                "{close:?}"
            )
        }
        other => panic!("expected an application close, got {other}"),
    }
}

#[actix_rt::test]
async fn garbage_and_oversize_frames_close_only_that_connection() {
    init_logs();
    let ca = ClusterCa::generate().expect("ca");
    let (a_addr, c_addr) = (reserve_addr(), reserve_addr());
    let mut a_cfg = node_config(
        &ca,
        "node-a",
        a_addr,
        &[("node-b", reserve_addr()), ("node-c", c_addr)],
    );
    a_cfg.max_frame_size = 1024;
    let (_a, mut a_rx) = bind(a_cfg, 256).await;
    let (c, _c_rx) = bind_node(&ca, "node-c", c_addr, &[("node-a", a_addr)], 256).await;
    let raw = raw_client(&ca, Some(&ca.issue("node-b").expect("b")), TROUPE_ALPN);
    let mut seen = Vec::new();
    let mut c_seq = 0usize;

    let attacks: [(&str, Vec<u8>); 3] = [
        (
            "garbage length prefix",
            vec![0xde, 0xad, 0xbe, 0xef, 1, 2, 3],
        ),
        ("oversize frame", prefixed(&[7u8; 2000])),
        ("unknown stream kind", vec![]),
    ];
    for (round, (what, bytes)) in attacks.iter().enumerate() {
        // A legitimate peer keeps talking throughout.
        for _ in 0..20 {
            c.send("node-a", frame("c", c_seq)).expect("c->a");
            c_seq += 1;
        }
        let conn = raw_hello(&raw, a_addr, "node-a", "node-b")
            .await
            .unwrap_or_else(|e| panic!("round {round}: valid raw peer must get in: {e}"));
        let mut s = if *what == "unknown stream kind" {
            let mut s = conn.open_uni().await.expect("open");
            s.write_all(&[0x7f]).await.expect("kind");
            s
        } else {
            raw_data_stream(&conn).await
        };
        // One good frame first: it is delivered, attributed to the certificate name.
        let good = format!("raw:{round}");
        if !what.contains("kind") {
            s.write_all(&prefixed(good.as_bytes()))
                .await
                .expect("good frame");
        }
        let _ = s.write_all(bytes).await;
        let _ = s.finish();
        expect_protocol_close(&conn, &mut a_rx, &mut seen).await;
        if !what.contains("kind") {
            let got = collect_frames(&mut a_rx, "node-b", "raw", round + 1, WAIT, &mut seen).await;
            assert!(
                got.contains(&round),
                "{what}: good frame delivered: {got:?}"
            );
        }
        // node-c's frames keep arriving, complete and in order.
        let got = collect_frames(&mut a_rx, "node-c", "c", c_seq, WAIT, &mut seen).await;
        assert_eq!(got, (0..c_seq).collect::<Vec<_>>(), "after {what}");
    }
    assert!(logged(&[
        "node=node-a",
        "bad input from peer",
        "exceeds the 1024-byte limit"
    ]));
    assert!(logged(&["node=node-a", "unknown stream kind"]));
    // node-b went up and down with each connection; node-c never went down.
    assert!(!seen
        .iter()
        .any(|e| matches!(e, TransportEvent::PeerDown { peer, .. } if peer == "node-c")));
    assert!(seen
        .iter()
        .any(|e| matches!(e, TransportEvent::PeerDown { peer, .. } if peer == "node-b")));
}

#[actix_rt::test]
async fn garbage_hello_is_refused() {
    init_logs();
    let ca = ClusterCa::generate().expect("ca");
    let a_addr = reserve_addr();
    let (_a, mut a_rx) = bind_node(&ca, "node-a", a_addr, &[("node-b", reserve_addr())], 64).await;
    let raw = raw_client(&ca, Some(&ca.issue("node-b").expect("b")), TROUPE_ALPN);
    let conn = raw
        .connect(a_addr, "node-a")
        .expect("connect")
        .await
        .expect("handshake");
    let (mut send, _recv) = conn.open_bi().await.expect("bi");
    send.write_all(&prefixed(b"definitely not a hello"))
        .await
        .expect("write");
    let reason = tokio::time::timeout(WAIT, conn.closed())
        .await
        .expect("closed");
    assert!(
        matches!(reason, quinn::ConnectionError::ApplicationClosed(_)),
        "{reason}"
    );
    let events = drain(&mut a_rx, Duration::from_millis(200)).await;
    assert!(events.is_empty(), "{events:?}");
    let remote = raw.local_addr().expect("addr").to_string();
    assert!(logged(&[
        "refused incoming connection",
        "bad hello",
        &remote
    ]));
}

#[actix_rt::test]
async fn slow_receiver_pushes_back_to_sender_queue() {
    init_logs();
    let ca = ClusterCa::generate().expect("ca");
    let (a_addr, b_addr) = (reserve_addr(), reserve_addr());
    let mut a_cfg = node_config(&ca, "node-a", a_addr, &[("node-b", b_addr)]);
    a_cfg.send_queue_capacity = 256;
    let (a, _a_rx) = bind(a_cfg, 16).await;
    // node-b's inbound channel holds 4 events and nobody reads it for a while.
    let (_b, mut b_rx) = bind_node(&ca, "node-b", b_addr, &[("node-a", a_addr)], 4).await;
    let payload = vec![0u8; 1000];
    let mut accepted = 0usize;
    let mut full = false;
    // Flow-control windows hold some MiB; after that the queue must fill up.
    for i in 0..100_000usize {
        let mut f = format!("p:{i}:").into_bytes();
        f.extend_from_slice(&payload);
        match a.send("node-b", bytes::Bytes::from(f)) {
            Ok(()) => accepted += 1,
            Err(TransportError::QueueFull { .. }) => {
                full = true;
                break;
            }
            Err(e) => panic!("unexpected {e}"),
        }
        if i % 64 == 0 {
            tokio::time::sleep(Duration::from_millis(1)).await;
        }
    }
    assert!(
        full,
        "queue never filled: no back-pressure ({accepted} accepted)"
    );
    assert!(accepted < 100_000);
    // Now the receiver reads: everything accepted arrives, in order.
    let mut n = 0usize;
    while n < accepted {
        match tokio::time::timeout(WAIT, b_rx.recv()).await {
            Ok(Some(ev)) => {
                for (_, bytes) in ev.frames() {
                    let prefix = format!("p:{n}:");
                    assert!(
                        bytes.starts_with(prefix.as_bytes()),
                        "frame {n} out of order"
                    );
                    n += 1;
                }
            }
            _ => panic!("only {n} of {accepted} frames arrived"),
        }
    }
}
