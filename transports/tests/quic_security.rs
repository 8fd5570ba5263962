//! QUIC transport security: foreign CA, missing client certificate, wrong node
//! name, unconfigured peer and wrong ALPN are all refused, logged, and leave the
//! node serving its legitimate peers. Plus insecure dev mode.

mod quic_support;

use std::time::Duration;

use quic_support::*;
use troupe_framework::transport::{Transport, TransportEvent};
use troupe_transports::certs::ClusterCa;
use troupe_transports::quic::{QuicConfig, TlsSource};

const QUIET: Duration = Duration::from_millis(1500);
const WAIT: Duration = Duration::from_secs(10);

fn no_peer_up_or_frames(events: &[TransportEvent]) -> bool {
    !events.iter().any(|e| {
        matches!(
            e,
            TransportEvent::PeerUp { .. }
                | TransportEvent::Frame { .. }
                | TransportEvent::Frames { .. }
        )
    })
}

#[actix_rt::test]
async fn node_with_certificate_from_another_ca_cannot_join() {
    init_logs();
    let ca = ClusterCa::generate().expect("ca");
    let rogue_ca = ClusterCa::generate().expect("rogue ca");
    let (a_addr, b_addr) = (reserve_addr(), reserve_addr());
    let (a, mut a_rx) = bind_node(&ca, "node-a", a_addr, &[("node-b", b_addr)], 64).await;
    // node-b has the right name but a certificate from another CA (and trusts that CA).
    let (b, mut b_rx) = bind_node(&rogue_ca, "node-b", b_addr, &[("node-a", a_addr)], 64).await;
    for i in 0..5 {
        b.send("node-a", frame("evil", i)).expect("queue");
        a.send("node-b", frame("hi", i)).expect("queue");
    }
    let at_a = drain(&mut a_rx, QUIET).await;
    let at_b = drain(&mut b_rx, Duration::from_millis(10)).await;
    assert!(no_peer_up_or_frames(&at_a), "{at_a:?}");
    assert!(no_peer_up_or_frames(&at_b), "{at_b:?}");
    // a refused b's connection, and a's own dial to b failed certificate checks.
    let (a_s, b_s) = (a_addr.to_string(), b_addr.to_string());
    assert!(logged(&[
        "refused incoming connection",
        &b_s,
        "UnknownIssuer"
    ]));
    assert!(logged(&[
        "connecting to peer failed",
        &b_s,
        "UnknownIssuer"
    ]));
    assert!(logged(&["node=node-b", "connecting to peer failed", &a_s]));
    assert!(a.connected_peers().is_empty());
}

/// The refusal must come from the TLS handshake itself (client certificates
/// are *required* by the server's verifier), not only from the
/// application-level identity check after it, which would refuse a
/// certificate-less client as well: the client sees a QUIC CONNECTION_CLOSE
/// carrying the TLS `certificate_required` alert (not the transport's
/// application close), and the node logs that the handshake failed because no
/// certificate was sent.
#[actix_rt::test]
async fn client_without_certificate_is_refused() {
    init_logs();
    let ca = ClusterCa::generate().expect("ca");
    let a_addr = reserve_addr();
    let (_a, mut a_rx) = bind_node(&ca, "node-a", a_addr, &[("node-b", reserve_addr())], 64).await;
    let ep = raw_client(&ca, None, TROUPE_ALPN);
    let remote = ep.local_addr().expect("addr").to_string();
    let attempt = async {
        // TLS 1.3: connect() may complete before the server has looked at the
        // (missing) client certificate; the refusal then shows on the first read.
        let conn = ep.connect(a_addr, "node-a").expect("connect").await?;
        let _ = raw_hello_on(&conn, "node-b").await;
        Err::<(), _>(conn.closed().await)
    };
    let reason = tokio::time::timeout(WAIT, attempt)
        .await
        .expect("the node must close the connection")
        .expect_err("a client without a certificate must be refused");
    let certificate_required =
        quinn::TransportErrorCode::crypto(u8::from(rustls::AlertDescription::CertificateRequired));
    match &reason {
        quinn::ConnectionError::ConnectionClosed(close) => assert_eq!(
            close.error_code, certificate_required,
            "refused by the TLS handshake with certificate_required: {reason}"
        ),
        other => panic!(
            "expected the TLS handshake to refuse the connection (a QUIC \
             CONNECTION_CLOSE with the certificate_required alert), got: {other}"
        ),
    }
    let at_a = drain(&mut a_rx, Duration::from_millis(300)).await;
    assert!(no_peer_up_or_frames(&at_a), "{at_a:?}");
    assert!(
        logged(&[
            "refused incoming connection",
            &remote,
            "TLS handshake failed",
            "peer sent no certificates"
        ]),
        "the node logs the handshake refusal"
    );
}

#[actix_rt::test]
async fn certificate_for_another_node_name_is_refused() {
    init_logs();
    let ca = ClusterCa::generate().expect("ca");
    let (a_addr, b_addr) = (reserve_addr(), reserve_addr());
    let (a, mut a_rx) = bind_node(&ca, "node-a", a_addr, &[("node-b", b_addr)], 64).await;

    // 1. A raw client holding node-c's (valid) certificate claims to be node-b.
    let ep = raw_client(&ca, Some(&ca.issue("node-c").expect("c")), TROUPE_ALPN);
    let err = raw_hello(&ep, a_addr, "node-a", "node-b")
        .await
        .expect_err("impersonation must be refused");
    assert!(err.contains("read hello"), "{err}");
    let remote = ep.local_addr().expect("addr").to_string();
    assert!(logged(&[
        "refused incoming connection",
        &remote,
        "node-b",
        "certificate"
    ]));

    // 2. A transport configured as node-b but holding node-c's certificate: a's dial
    //    to node-b fails (server name mismatch), and b's dial to a is refused.
    let (b, mut b_rx) = bind(
        config(
            "node-b",
            b_addr,
            ca.issue("node-c").expect("c"),
            &[("node-a", a_addr)],
        ),
        64,
    )
    .await;
    for i in 0..3 {
        b.send("node-a", frame("evil", i)).expect("queue");
        a.send("node-b", frame("hi", i)).expect("queue");
    }
    let at_a = drain(&mut a_rx, QUIET).await;
    let at_b = drain(&mut b_rx, Duration::from_millis(10)).await;
    assert!(no_peer_up_or_frames(&at_a), "{at_a:?}");
    assert!(no_peer_up_or_frames(&at_b), "{at_b:?}");
    assert!(logged(&[
        "node=node-a",
        "connecting to peer failed",
        &b_addr.to_string()
    ]));
}

#[actix_rt::test]
async fn unconfigured_peer_with_valid_certificate_is_refused() {
    init_logs();
    let ca = ClusterCa::generate().expect("ca");
    let a_addr = reserve_addr();
    let (_a, mut a_rx) = bind_node(&ca, "node-a", a_addr, &[("node-b", reserve_addr())], 64).await;
    let ep = raw_client(&ca, Some(&ca.issue("node-x").expect("x")), TROUPE_ALPN);
    let err = raw_hello(&ep, a_addr, "node-a", "node-x")
        .await
        .expect_err("unconfigured peer refused");
    assert!(err.contains("read hello"), "{err}");
    let at_a = drain(&mut a_rx, Duration::from_millis(300)).await;
    assert!(no_peer_up_or_frames(&at_a), "{at_a:?}");
    let remote = ep.local_addr().expect("addr").to_string();
    assert!(logged(&[&remote, "node-x", "not a configured peer"]));
}

#[actix_rt::test]
async fn wrong_alpn_is_refused() {
    init_logs();
    let ca = ClusterCa::generate().expect("ca");
    let a_addr = reserve_addr();
    let (_a, mut a_rx) = bind_node(&ca, "node-a", a_addr, &[("node-b", reserve_addr())], 64).await;
    let ep = raw_client(&ca, Some(&ca.issue("node-b").expect("b")), b"h3");
    let err = raw_hello(&ep, a_addr, "node-a", "node-b")
        .await
        .expect_err("wrong ALPN refused");
    assert!(err.contains("handshake"), "{err}");
    let at_a = drain(&mut a_rx, Duration::from_millis(300)).await;
    assert!(no_peer_up_or_frames(&at_a), "{at_a:?}");
    // Sanity: the same client with the right ALPN gets in.
    let ep = raw_client(&ca, Some(&ca.issue("node-b").expect("b")), TROUPE_ALPN);
    raw_hello(&ep, a_addr, "node-a", "node-b")
        .await
        .expect("right ALPN accepted");
}

#[actix_rt::test]
async fn insecure_dev_mode_works_only_when_asked_and_warns() {
    init_logs();
    let (a_addr, b_addr) = (reserve_addr(), reserve_addr());
    let (tx, _rx) = tokio::sync::mpsc::channel(8);
    let refused = troupe_transports::quic::QuicTransport::bind(
        QuicConfig::new("node-a", a_addr, TlsSource::SelfSigned),
        tx,
    )
    .await;
    assert!(refused.is_err(), "self-signed needs insecure_dev_mode");

    let insecure = |name: &str, addr, peer: &str, peer_addr| {
        let mut c = QuicConfig::new(name, addr, TlsSource::SelfSigned).with_peer(peer, peer_addr);
        c.insecure_dev_mode = true;
        c
    };
    let (a, _a_rx) = bind(insecure("node-a", a_addr, "node-b", b_addr), 64).await;
    let (_b, mut b_rx) = bind(insecure("node-b", b_addr, "node-a", a_addr), 64).await;
    assert!(logged(&["INSECURE DEV MODE", "node-a"]));
    for i in 0..5 {
        a.send("node-b", frame("dev", i)).expect("queue");
    }
    let mut all = Vec::new();
    let got = collect_frames(&mut b_rx, "node-a", "dev", 5, WAIT, &mut all).await;
    assert_eq!(got, vec![0, 1, 2, 3, 4]);
}

#[actix_rt::test]
async fn nodes_start_from_pem_files_and_bad_files_give_clear_errors() {
    init_logs();
    let dir = std::env::temp_dir().join(format!("troupe-quic-files-{}", uuid::Uuid::new_v4()));
    troupe_transports::certs::init(&dir).expect("init CA");
    let (a_cert, a_key) = troupe_transports::certs::issue(&dir, "node-a").expect("issue a");
    let (b_cert, b_key) = troupe_transports::certs::issue(&dir, "node-b").expect("issue b");
    let ca = dir.join("ca.pem");
    let (a_addr, b_addr) = (reserve_addr(), reserve_addr());
    let files = |cert: &std::path::Path, key: &std::path::Path| TlsSource::Files {
        ca: ca.clone(),
        cert: cert.to_path_buf(),
        key: key.to_path_buf(),
    };
    let (a, _a_rx) = bind(
        QuicConfig::new("node-a", a_addr, files(&a_cert, &a_key)).with_peer("node-b", b_addr),
        64,
    )
    .await;
    let (_b, mut b_rx) = bind(
        QuicConfig::new("node-b", b_addr, files(&b_cert, &b_key)).with_peer("node-a", a_addr),
        64,
    )
    .await;
    a.send("node-b", frame("f", 0)).expect("send");
    let mut all = Vec::new();
    assert_eq!(
        collect_frames(&mut b_rx, "node-a", "f", 1, WAIT, &mut all).await,
        vec![0]
    );

    // A missing key file and a swapped cert/key are refused at bind with the path.
    let (tx, _rx) = tokio::sync::mpsc::channel(8);
    let missing = dir.join("node-z.key");
    let err = troupe_transports::quic::QuicTransport::bind(
        QuicConfig::new("node-c", reserve_addr(), files(&a_cert, &missing)),
        tx.clone(),
    )
    .await
    .expect_err("missing key");
    assert!(err.to_string().contains("node-z.key"), "{err}");
    let err = troupe_transports::quic::QuicTransport::bind(
        QuicConfig::new("node-c", reserve_addr(), files(&a_key, &a_cert)),
        tx,
    )
    .await
    .expect_err("swapped files");
    assert!(err.to_string().contains("node-a.key"), "{err}");
    std::fs::remove_dir_all(&dir).ok();
}

/// A cluster moving to a new CA node by node: nodes whose `ca.pem` holds
/// both CAs accept certificates from either, so a node already on the new
/// CA and one still on the old one talk; a node that trusts only the new
/// CA still refuses the old one's certificates.
#[actix_rt::test]
async fn nodes_trusting_two_cas_accept_certificates_from_either() {
    init_logs();
    let (old, new) = (
        ClusterCa::generate().expect("old ca"),
        ClusterCa::generate().expect("new ca"),
    );
    let (a_addr, b_addr, c_addr) = (reserve_addr(), reserve_addr(), reserve_addr());
    // node-a still has its certificate from the old CA, node-b already one
    // from the new CA; both trust both.
    let mut a_tls = old.issue("node-a").expect("a");
    a_tls.also_trusted = vec![new.cert_der()];
    let mut b_tls = new.issue("node-b").expect("b");
    b_tls.also_trusted = vec![old.cert_der()];
    let peers_of = |me: &str| -> Vec<(&'static str, std::net::SocketAddr)> {
        [("node-a", a_addr), ("node-b", b_addr), ("node-c", c_addr)]
            .into_iter()
            .filter(|(n, _)| *n != me)
            .collect()
    };
    let (a, mut a_rx) = bind(config("node-a", a_addr, a_tls, &peers_of("node-a")), 64).await;
    let (b, mut b_rx) = bind(config("node-b", b_addr, b_tls, &peers_of("node-b")), 64).await;
    a.send("node-b", frame("a", 1)).expect("queue");
    b.send("node-a", frame("b", 1)).expect("queue");
    let mut skipped = Vec::new();
    let got_a = wait_for(&mut b_rx, WAIT, &mut skipped, |e| {
        e.frames().any(|(from, _)| from == "node-a")
    });
    assert!(
        got_a.await.is_some(),
        "node-b never heard node-a: {skipped:?}"
    );
    let got_b = wait_for(&mut a_rx, WAIT, &mut skipped, |e| {
        e.frames().any(|(from, _)| from == "node-b")
    });
    assert!(
        got_b.await.is_some(),
        "node-a never heard node-b: {skipped:?}"
    );
    // node-c trusts only the new CA (the change is finished there): it
    // talks to node-b but refuses node-a's old-CA certificate.
    let (c, mut c_rx) = bind_node(&new, "node-c", c_addr, &peers_of("node-c"), 64).await;
    a.send("node-c", frame("a", 2)).expect("queue");
    c.send("node-b", frame("c", 1)).expect("queue");
    let got_c = wait_for(&mut b_rx, WAIT, &mut skipped, |e| {
        e.frames().any(|(from, _)| from == "node-c")
    });
    assert!(got_c.await.is_some(), "node-b never heard node-c");
    let at_c = drain(&mut c_rx, QUIET).await;
    assert!(
        !at_c
            .iter()
            .flat_map(|e| e.frames())
            .any(|(from, _)| from == "node-a"),
        "node-c accepted an old-CA certificate: {at_c:?}"
    );
    assert!(logged(&["node=node-c", "UnknownIssuer"]));
}
