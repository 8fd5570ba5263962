//! Shared helpers for the QUIC transport integration tests: clusters with
//! in-memory certificates, reserved loopback ports, event waiting, and raw quinn
//! clients for attacking a node.
#![allow(dead_code)]

use std::net::SocketAddr;
use std::sync::{Arc, Mutex, Once};
use std::time::Duration;

use bytes::Bytes;
use quinn::crypto::rustls::QuicClientConfig;
use rustls::RootCertStore;
use troupe_framework::transport::{InboundEvents, TransportEvent};
use troupe_transports::certs::{ClusterCa, NodeTls};
use troupe_transports::ports::unused_udp_port;
use troupe_transports::quic::wire::{Hello, STREAM_DATA};
use troupe_transports::quic::{QuicConfig, QuicTransport, TlsSource, ALPN};

/// Log lines captured from every test in this binary (tracing at debug level).
pub static LOGS: Mutex<Vec<String>> = Mutex::new(Vec::new());
static INIT: Once = Once::new();

struct Capture;
impl std::io::Write for Capture {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        if std::env::var_os("TROUPE_TEST_LOG").is_some() {
            eprint!("{}", String::from_utf8_lossy(buf));
        }
        if let Ok(mut logs) = LOGS.lock() {
            logs.push(String::from_utf8_lossy(buf).into_owned());
        }
        Ok(buf.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

/// Installs a tracing subscriber that captures log lines into [`LOGS`]
/// (the transport at debug level, the framework's warnings).
pub fn init_logs() {
    INIT.call_once(|| {
        let _ = tracing_subscriber::fmt()
            .with_env_filter("troupe_transports=debug,troupe_framework=warn")
            .with_ansi(false)
            .with_writer(|| Capture)
            .try_init();
    });
}

/// True if some captured log line contains every needle.
pub fn logged(needles: &[&str]) -> bool {
    LOGS.lock()
        .map(|logs| logs.iter().any(|l| needles.iter().all(|n| l.contains(n))))
        .unwrap_or(false)
}

/// Waits (polling, at most `limit`) until some captured log line contains
/// every needle; true if one did.
pub async fn logged_within(needles: &[&str], limit: Duration) -> bool {
    let deadline = tokio::time::Instant::now() + limit;
    loop {
        if logged(needles) {
            return true;
        }
        if tokio::time::Instant::now() >= deadline {
            return false;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// A free loopback UDP port, below the range port-0 binds draw from (see
/// `troupe_transports::ports`), so no endpoint bound meanwhile takes it.
pub fn reserve_addr() -> SocketAddr {
    let ip = std::net::IpAddr::from([127, 0, 0, 1]);
    SocketAddr::new(ip, unused_udp_port(ip).expect("loopback binds"))
}

/// Config for `name` listening on `addr` with `tls`, knowing `peers`.
pub fn config(
    name: &str,
    addr: SocketAddr,
    tls: NodeTls,
    peers: &[(&str, SocketAddr)],
) -> QuicConfig {
    let mut c = QuicConfig::new(name, addr, TlsSource::InMemory(tls));
    for (p, a) in peers {
        c = c.with_peer(*p, *a);
    }
    c.reconnect_min = Duration::from_millis(20);
    c.reconnect_max = Duration::from_millis(300);
    c
}

/// Binds a transport with a fresh inbound channel of `cap` events.
pub async fn bind(config: QuicConfig, cap: usize) -> (QuicTransport, InboundEvents) {
    let (tx, rx) = tokio::sync::mpsc::channel(cap);
    let t = QuicTransport::bind(config, tx)
        .await
        .expect("bind transport");
    (t, InboundEvents::new(rx))
}

/// Config for node `name` on `addr` with a certificate for `name` from
/// `ca`, knowing `peers`.
pub fn node_config(
    ca: &ClusterCa,
    name: &str,
    addr: SocketAddr,
    peers: &[(&str, SocketAddr)],
) -> QuicConfig {
    config(name, addr, ca.issue(name).expect("node certificate"), peers)
}

/// Binds [`node_config`] with an inbound channel of `cap` events.
pub async fn bind_node(
    ca: &ClusterCa,
    name: &str,
    addr: SocketAddr,
    peers: &[(&str, SocketAddr)],
    cap: usize,
) -> (QuicTransport, InboundEvents) {
    bind(node_config(ca, name, addr, peers), cap).await
}

/// Binds, retrying while the port is still held by a previous endpoint.
pub async fn bind_retry(config: QuicConfig, cap: usize) -> (QuicTransport, InboundEvents) {
    for _ in 0..100 {
        let (tx, rx) = tokio::sync::mpsc::channel(cap);
        match QuicTransport::bind(config.clone(), tx).await {
            Ok(t) => return (t, InboundEvents::new(rx)),
            Err(_) => tokio::time::sleep(Duration::from_millis(50)).await,
        }
    }
    panic!("could not re-bind {}", config.listen);
}

/// Waits (at most `limit`) for an event matching `pred`, returning it; other
/// events are collected into `skipped`.
pub async fn wait_for(
    rx: &mut InboundEvents,
    limit: Duration,
    skipped: &mut Vec<TransportEvent>,
    mut pred: impl FnMut(&TransportEvent) -> bool,
) -> Option<TransportEvent> {
    let deadline = tokio::time::Instant::now() + limit;
    loop {
        match tokio::time::timeout_at(deadline, rx.recv()).await {
            Ok(Some(ev)) if pred(&ev) => return Some(ev),
            Ok(Some(ev)) => skipped.push(ev),
            Ok(None) | Err(_) => return None,
        }
    }
}

/// Everything that arrives within `limit`.
pub async fn drain(rx: &mut InboundEvents, limit: Duration) -> Vec<TransportEvent> {
    let mut out = Vec::new();
    wait_for(rx, limit, &mut out, |_| false).await;
    out
}

/// Frame payload `"{tag}:{i}"`.
pub fn frame(tag: &str, i: usize) -> Bytes {
    Bytes::from(format!("{tag}:{i}"))
}

/// Parses frames made by [`frame`] from `from` with tag `tag`, in arrival order.
pub fn seqs(events: &[TransportEvent], from: &str, tag: &str) -> Vec<usize> {
    events
        .iter()
        .flat_map(|e| e.frames())
        .filter_map(|(f, bytes)| {
            if f != from {
                return None;
            }
            let s = std::str::from_utf8(bytes).ok()?;
            let (t, n) = s.split_once(':')?;
            (t == tag).then(|| n.parse().ok()).flatten()
        })
        .collect()
}

/// Receives until `n` frames from `from` with `tag` arrived (or `limit` passes).
pub async fn collect_frames(
    rx: &mut InboundEvents,
    from: &str,
    tag: &str,
    n: usize,
    limit: Duration,
    all: &mut Vec<TransportEvent>,
) -> Vec<usize> {
    let deadline = tokio::time::Instant::now() + limit;
    while seqs(all, from, tag).len() < n {
        match tokio::time::timeout_at(deadline, rx.recv()).await {
            Ok(Some(ev)) => all.push(ev),
            _ => break,
        }
    }
    seqs(all, from, tag)
}

/// A raw quinn client endpoint trusting `ca`, presenting `identity` (if any),
/// offering `alpn`.
pub fn raw_client(ca: &ClusterCa, identity: Option<&NodeTls>, alpn: &[u8]) -> quinn::Endpoint {
    let provider = troupe_transports::quic::crypto_provider();
    let mut roots = RootCertStore::empty();
    roots.add(ca.cert_der()).expect("root");
    let builder = rustls::ClientConfig::builder_with_provider(provider)
        .with_protocol_versions(&[&rustls::version::TLS13])
        .expect("tls13")
        .with_root_certificates(roots);
    let mut tls = match identity {
        Some(id) => builder
            .with_client_auth_cert(id.chain.clone(), id.key.clone_key())
            .expect("client cert"),
        None => builder.with_no_client_auth(),
    };
    tls.alpn_protocols = vec![alpn.to_vec()];
    let crypto = QuicClientConfig::try_from(tls).expect("quic client config");
    let mut ep = quinn::Endpoint::client("127.0.0.1:0".parse().expect("addr")).expect("client ep");
    ep.set_default_client_config(quinn::ClientConfig::new(Arc::new(crypto)));
    ep
}

/// Connects a raw client to `server` (TLS name `server_name`) and does the hello
/// as `claimed`; returns the connection once the server's hello arrived.
pub async fn raw_hello(
    ep: &quinn::Endpoint,
    server: SocketAddr,
    server_name: &str,
    claimed: &str,
) -> Result<quinn::Connection, String> {
    let conn = ep
        .connect(server, server_name)
        .map_err(|e| e.to_string())?
        .await
        .map_err(|e| format!("handshake: {e}"))?;
    raw_hello_on(&conn, claimed).await?;
    Ok(conn)
}

/// Does the hello as `claimed` on an established raw connection; returns
/// once the server's hello arrived.
pub async fn raw_hello_on(conn: &quinn::Connection, claimed: &str) -> Result<(), String> {
    let (mut send, mut recv) = conn.open_bi().await.map_err(|e| format!("open_bi: {e}"))?;
    let hello = Hello {
        name: claimed.to_string(),
        incarnation: "raw".to_string(),
        listen: None,
    };
    send.write_all(&hello.encode().map_err(|e| e.to_string())?)
        .await
        .map_err(|e| format!("write hello: {e}"))?;
    let mut len = [0u8; 4];
    recv.read_exact(&mut len)
        .await
        .map_err(|e| format!("read hello: {e}"))?;
    let mut body = vec![0u8; u32::from_be_bytes(len) as usize];
    recv.read_exact(&mut body)
        .await
        .map_err(|e| format!("read hello body: {e}"))?;
    Hello::decode(&body).map_err(|e| e.to_string())?;
    Ok(())
}

/// Opens a data stream on a raw connection (kind byte written).
pub async fn raw_data_stream(conn: &quinn::Connection) -> quinn::SendStream {
    let mut s = conn.open_uni().await.expect("open_uni");
    s.write_all(&[STREAM_DATA]).await.expect("kind");
    s
}

/// One length-prefixed frame.
pub fn prefixed(payload: &[u8]) -> Vec<u8> {
    let mut v = (payload.len() as u32).to_be_bytes().to_vec();
    v.extend_from_slice(payload);
    v
}

/// Convenience: the ALPN the transport speaks.
pub const TROUPE_ALPN: &[u8] = ALPN;
