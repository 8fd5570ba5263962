//! Helpers shared by the transport benchmarks (`quic_throughput`, `remote_node`):
//! running futures on actix arbiters, CPU-time accounting from schedstat,
//! percentiles, and the raw-quinn baseline (mutual TLS with the same cluster CA and
//! ALPN as the transport, the same flow-control windows, `u32` big-endian length
//! prefixed frames on one long-lived stream).
//!
//! Nothing here is part of the library; benchmark code may `expect` freely.
#![allow(dead_code)]

/// The QUIC integration tests' helpers (configs, reserved ports, ALPN).
#[path = "../../tests/quic_support/mod.rs"]
pub mod quic_support;

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use actix_rt::Arbiter;
use bytes::{Buf, BufMut, Bytes, BytesMut};
use quic_support::{config, reserve_addr, TROUPE_ALPN};
use tokio::sync::oneshot;
use troupe_framework::transport::{InboundEvents, Transport, TransportError, TransportEvent};
use troupe_transports::certs::{ClusterCa, NodeTls};
use troupe_transports::quic::{QuicConfig, QuicTransport};

/// A `len`-byte frame: the sequence number `i` (8 bytes, big endian) plus filler.
pub fn payload(i: u64, len: usize) -> Bytes {
    let mut b = BytesMut::with_capacity(len.max(8));
    b.put_u64(i);
    b.resize(len.max(8), 0xab);
    b.freeze()
}

/// A free loopback UDP port, held by an open socket until [`HeldAddr::release`].
/// For an address that must be known long before its node binds it:
/// `reserve_addr` releases the port at once, and in a long benchmark run an
/// endpoint bound to port 0 in between sometimes took it (`AddrInUse`).
pub struct HeldAddr {
    addr: SocketAddr,
    socket: std::net::UdpSocket,
}

impl HeldAddr {
    /// Binds a fresh loopback port and keeps it.
    pub fn new() -> Self {
        let socket = std::net::UdpSocket::bind("127.0.0.1:0").expect("bind");
        HeldAddr {
            addr: socket.local_addr().expect("addr"),
            socket,
        }
    }

    /// The held address.
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// Frees the port for its node, which should bind it right away.
    pub fn release(self) -> SocketAddr {
        drop(self.socket);
        self.addr
    }
}

/// Starts `fut` on `arbiter` now; its output arrives on the returned channel.
pub fn start<T: Send + 'static>(
    arbiter: &Arbiter,
    fut: impl std::future::Future<Output = T> + Send + 'static,
) -> oneshot::Receiver<T> {
    let (tx, rx) = oneshot::channel();
    arbiter.spawn(async move {
        let _ = tx.send(fut.await);
    });
    rx
}

/// Runs `fut` on `arbiter` and returns its output.
pub async fn on<T: Send + 'static>(
    arbiter: &Arbiter,
    fut: impl std::future::Future<Output = T> + Send + 'static,
) -> T {
    let (tx, rx) = oneshot::channel();
    arbiter.spawn(async move {
        let _ = tx.send(fut.await);
    });
    rx.await.expect("arbiter task finished")
}

/// Binds a `QuicTransport` on `arbiter` with an inbound channel of `cap` events.
pub async fn bind_on(
    arbiter: &Arbiter,
    cfg: QuicConfig,
    cap: usize,
) -> (Arc<QuicTransport>, InboundEvents) {
    on(arbiter, async move {
        let (tx, rx) = tokio::sync::mpsc::channel(cap);
        let t = QuicTransport::bind(cfg, tx).await.expect("bind");
        (Arc::new(t), InboundEvents::new(rx))
    })
    .await
}

/// Resident set size of this process, KiB (0 if unreadable).
pub fn rss_kib() -> u64 {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("VmRSS:"))
                .and_then(|l| l.split_whitespace().nth(1).and_then(|v| v.parse().ok()))
        })
        .unwrap_or(0)
}

#[path = "cpu.rs"]
mod cpu;
pub use cpu::cpu_ns;

/// The `p` quantile (0..=1) of an ascending-sorted, non-empty slice.
pub fn percentile(sorted: &[Duration], p: f64) -> Duration {
    let idx = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    sorted[idx.min(sorted.len() - 1)]
}

// ----- (b) and (c) raw quinn ------------------------------------------------------

/// Raw quinn server config: TLS 1.3, client certificates required (cluster CA),
/// the transport's ALPN, the same flow-control windows as the transport.
pub fn raw_server_config(ca: &ClusterCa, tls: &NodeTls) -> quinn::ServerConfig {
    let provider = troupe_transports::quic::crypto_provider();
    let mut roots = rustls::RootCertStore::empty();
    roots.add(ca.cert_der()).expect("root");
    let verifier = rustls::server::WebPkiClientVerifier::builder_with_provider(
        Arc::new(roots),
        provider.clone(),
    )
    .build()
    .expect("verifier");
    let mut cfg = rustls::ServerConfig::builder_with_provider(provider)
        .with_protocol_versions(&[&rustls::version::TLS13])
        .expect("tls13")
        .with_client_cert_verifier(verifier)
        .with_single_cert(tls.chain.clone(), tls.key.clone_key())
        .expect("cert");
    cfg.alpn_protocols = vec![TROUPE_ALPN.to_vec()];
    let crypto = quinn::crypto::rustls::QuicServerConfig::try_from(cfg).expect("quic");
    let mut server = quinn::ServerConfig::with_crypto(Arc::new(crypto));
    let mut tc = quinn::TransportConfig::default();
    tc.stream_receive_window(quinn::VarInt::from_u32(2 * 1024 * 1024));
    tc.receive_window(quinn::VarInt::from_u32(8 * 1024 * 1024));
    tc.send_window(8 * 1024 * 1024);
    server.transport_config(Arc::new(tc));
    server
}

/// A raw quinn server endpoint on `arbiter`, on an ephemeral loopback port.
pub async fn raw_server(arbiter: &Arbiter, ca: &ClusterCa) -> (quinn::Endpoint, SocketAddr) {
    let cfg = raw_server_config(ca, &ca.issue("raw-server").expect("cert"));
    on(arbiter, async move {
        let ep =
            quinn::Endpoint::server(cfg, "127.0.0.1:0".parse().expect("addr")).expect("server");
        let addr = ep.local_addr().expect("addr");
        (ep, addr)
    })
    .await
}

/// A raw mTLS client endpoint on `arbiter`, connected to `addr`.
pub async fn raw_connect(
    arbiter: &Arbiter,
    ca: &ClusterCa,
    addr: SocketAddr,
) -> (quinn::Endpoint, quinn::Connection) {
    let ep = raw_client_on(arbiter, ca).await;
    let ep2 = ep.clone();
    let conn = on(arbiter, async move {
        ep2.connect(addr, "raw-server")
            .expect("connect")
            .await
            .expect("handshake")
    })
    .await;
    (ep, conn)
}

/// A raw mTLS client endpoint created on `arbiter` (so its driver runs there).
pub async fn raw_client_on(arbiter: &Arbiter, ca: &ClusterCa) -> quinn::Endpoint {
    let provider = troupe_transports::quic::crypto_provider();
    let mut roots = rustls::RootCertStore::empty();
    roots.add(ca.cert_der()).expect("root");
    let id = ca.issue("raw-client").expect("cert");
    let mut tls = rustls::ClientConfig::builder_with_provider(provider)
        .with_protocol_versions(&[&rustls::version::TLS13])
        .expect("tls13")
        .with_root_certificates(roots)
        .with_client_auth_cert(id.chain.clone(), id.key.clone_key())
        .expect("client cert");
    tls.alpn_protocols = vec![TROUPE_ALPN.to_vec()];
    let crypto = quinn::crypto::rustls::QuicClientConfig::try_from(tls).expect("quic");
    let mut client = quinn::ClientConfig::new(Arc::new(crypto));
    let mut tc = quinn::TransportConfig::default();
    tc.stream_receive_window(quinn::VarInt::from_u32(2 * 1024 * 1024));
    tc.receive_window(quinn::VarInt::from_u32(8 * 1024 * 1024));
    tc.send_window(8 * 1024 * 1024);
    client.transport_config(Arc::new(tc));
    on(arbiter, async move {
        let mut ep = quinn::Endpoint::client("127.0.0.1:0".parse().expect("addr")).expect("client");
        ep.set_default_client_config(client);
        ep
    })
    .await
}

/// The next whole `u32`-length-prefixed frame at the front of `buf`, if
/// it has arrived (the raw baselines' receive side).
pub fn next_raw_frame(buf: &mut BytesMut) -> Option<Bytes> {
    let len = u32::from_be_bytes(buf.get(..4)?.try_into().ok()?) as usize;
    if buf.len() < 4 + len {
        return None;
    }
    buf.advance(4);
    Some(buf.split_to(len).freeze())
}

/// A raw quinn one-way sender: `u32` big-endian length-prefixed frames on one
/// long-lived uni stream to a receiver on another arbiter that parses every
/// frame. Long-lived, so blocks of it can be interleaved with the
/// framework's (no handshake or slow start inside a block).
pub struct RawOneWay {
    _endpoint: quinn::Endpoint,
    /// The stream, moved to the sending arbiter for each block.
    send: Option<quinn::SendStream>,
    progress: Arc<OneWayProgress>,
    frame: usize,
    /// Frames sent so far (the receiver's target for the current block).
    sent: u64,
}

/// What the receiver has parsed, shared with the sender.
#[derive(Default)]
struct OneWayProgress {
    target: std::sync::atomic::AtomicU64,
    reached: std::sync::Mutex<Option<Instant>>,
}

impl RawOneWay {
    /// Starts the receiver on `xb` and connects to it from `xa`.
    pub async fn connect(xa: &Arbiter, xb: &Arbiter, ca: &ClusterCa, frame: usize) -> Self {
        use std::sync::atomic::Ordering;
        let (server, addr) = raw_server(xb, ca).await;
        let progress = Arc::new(OneWayProgress::default());
        let shared = progress.clone();
        xb.spawn(async move {
            let incoming = server.accept().await.expect("incoming");
            let conn = incoming.await.expect("accept");
            let mut recv = conn.accept_uni().await.expect("uni");
            let mut buf = BytesMut::new();
            let mut got = 0u64;
            while let Ok(Some(chunk)) = recv.read_chunk(256 * 1024, true).await {
                buf.extend_from_slice(&chunk.bytes);
                while let Some(frame) = next_raw_frame(&mut buf) {
                    std::hint::black_box(frame);
                    got += 1;
                }
                if got == shared.target.load(Ordering::Acquire) {
                    *shared.reached.lock().expect("lock") = Some(Instant::now());
                }
            }
            drop((conn, server));
        });
        let (endpoint, conn) = raw_connect(xa, ca, addr).await;
        let send = on(xa, async move { conn.open_uni().await.expect("uni") }).await;
        RawOneWay {
            _endpoint: endpoint,
            send: Some(send),
            progress,
            frame,
            sent: 0,
        }
    }

    /// Sends `n` frames from `xa`, 1024 per `write_all`, and waits until the
    /// receiver has parsed the last one: (msg/s, CPU-ns per message).
    pub async fn block(&mut self, xa: &Arbiter, n: u64) -> (f64, f64) {
        use std::sync::atomic::Ordering;
        let first = self.sent;
        self.sent += n;
        *self.progress.reached.lock().expect("lock") = None;
        self.progress.target.store(self.sent, Ordering::Release);
        let mut s = self.send.take().expect("stream");
        let frame = self.frame;
        let started = Instant::now();
        let cpu0 = cpu_ns();
        let s = on(xa, async move {
            let batch = 1024u64;
            let mut out = BytesMut::with_capacity(batch as usize * (frame + 4));
            let mut i = 0u64;
            while i < n {
                let k = (n - i).min(batch);
                for j in 0..k {
                    let f = payload(first + i + j, frame);
                    out.put_u32(f.len() as u32);
                    out.extend_from_slice(&f);
                }
                i += k;
                s.write_all(&out).await.expect("write");
                out.clear();
            }
            s
        })
        .await;
        self.send = Some(s);
        let deadline = Instant::now() + Duration::from_secs(120);
        let end = loop {
            if let Some(t) = *self.progress.reached.lock().expect("lock") {
                break t;
            }
            assert!(Instant::now() < deadline, "raw receiver stalled");
            tokio::time::sleep(Duration::from_micros(200)).await;
        };
        let cpu = cpu_ns() - cpu0;
        (
            n as f64 / (end - started).as_secs_f64(),
            cpu as f64 / n as f64,
        )
    }
}

/// Raw quinn request/response round trips, one in flight, on one bidi stream
/// (the server echoes each `frame`-byte frame); 200 warm-up samples dropped.
pub async fn raw_rtt(
    xa: &Arbiter,
    xb: &Arbiter,
    ca: &ClusterCa,
    iters: usize,
    frame: usize,
) -> Vec<Duration> {
    let mut echo = RawEcho::connect(xa, xb, ca, frame).await;
    on(xa, async move {
        let mut samples = Vec::with_capacity(iters);
        for i in 0..(iters + 200) as u64 {
            let t = echo.round_trip(i).await;
            if i >= 200 {
                samples.push(t);
            }
        }
        samples
    })
    .await
}

/// A raw quinn request/response client: `u32` big-endian length-prefixed
/// frames on one bidirectional stream to a server on another arbiter that
/// writes every frame back. Dropping it ends the server's task.
pub struct RawEcho {
    _endpoint: quinn::Endpoint,
    send: quinn::SendStream,
    recv: quinn::RecvStream,
    frame: usize,
    body: Vec<u8>,
}

impl RawEcho {
    /// Starts the echo server on `xb` and connects to it from `xa`.
    pub async fn connect(xa: &Arbiter, xb: &Arbiter, ca: &ClusterCa, frame: usize) -> Self {
        let (server, addr) = raw_server(xb, ca).await;
        xb.spawn(async move {
            let incoming = server.accept().await.expect("incoming");
            let conn = incoming.await.expect("accept");
            let (mut send, mut recv) = conn.accept_bi().await.expect("bi");
            let mut len = [0u8; 4];
            let mut body = vec![0u8; frame];
            while recv.read_exact(&mut len).await.is_ok() {
                let l = u32::from_be_bytes(len) as usize;
                body.resize(l, 0);
                if recv.read_exact(&mut body).await.is_err() {
                    break;
                }
                let mut out = len.to_vec();
                out.extend_from_slice(&body);
                if send.write_all(&out).await.is_err() {
                    break;
                }
            }
            drop(server);
        });
        let (endpoint, conn) = raw_connect(xa, ca, addr).await;
        let (send, recv) = on(xa, async move { conn.open_bi().await.expect("bi") }).await;
        RawEcho {
            _endpoint: endpoint,
            send,
            recv,
            frame,
            body: vec![0u8; frame],
        }
    }

    /// One request (frame number `i`) and its echo; the time it took.
    pub async fn round_trip(&mut self, i: u64) -> Duration {
        let t0 = Instant::now();
        let f = payload(i, self.frame);
        let mut out = (f.len() as u32).to_be_bytes().to_vec();
        out.extend_from_slice(&f);
        self.send.write_all(&out).await.expect("write");
        let mut len = [0u8; 4];
        self.recv.read_exact(&mut len).await.expect("read");
        self.recv.read_exact(&mut self.body).await.expect("read");
        t0.elapsed()
    }
}

// ----- through two `QuicTransport`s (no framework) -----------------------------

/// Two connected transports, `node-a` on one arbiter and `node-b` on the other.
pub struct Pair {
    /// Part of the pair.
    pub a: Arc<QuicTransport>,
    /// Part of the pair.
    pub b: Arc<QuicTransport>,
    /// Part of the pair.
    pub a_rx: Option<InboundEvents>,
    /// Part of the pair.
    pub b_rx: Option<InboundEvents>,
}

/// Binds `node-a` on `xa` and `node-b` on `xb`, each knowing the other.
pub async fn transport_pair(ca: &ClusterCa, xa: &Arbiter, xb: &Arbiter) -> Pair {
    let (a_addr, b_addr) = (reserve_addr(), reserve_addr());
    let (a, a_rx) = bind_on(
        xa,
        config(
            "node-a",
            a_addr,
            ca.issue("node-a").expect("a"),
            &[("node-b", b_addr)],
        ),
        4096,
    )
    .await;
    let (b, b_rx) = bind_on(
        xb,
        config(
            "node-b",
            b_addr,
            ca.issue("node-b").expect("b"),
            &[("node-a", a_addr)],
        ),
        4096,
    )
    .await;
    Pair {
        a,
        b,
        a_rx: Some(a_rx),
        b_rx: Some(b_rx),
    }
}

/// One-way throughput a -> b of `n` frames of `frame` bytes: (msg/s, CPU-ns/msg).
pub async fn transport_throughput(
    p: &mut Pair,
    xa: &Arbiter,
    xb: &Arbiter,
    n: u64,
    frame: usize,
) -> (f64, f64) {
    let mut b_rx = p.b_rx.take().expect("rx");
    let receiver = on(xb, async move {
        let mut got = 0u64;
        let mut last = 0u64;
        // Counts a frame, checking it follows the previous one.
        fn check(bytes: &Bytes, got: &mut u64, last: &mut u64) {
            let seq = (&bytes[..8]).get_u64();
            assert!(
                *got == 0 || seq == *last + 1,
                "order broken: {last} then {seq}"
            );
            *last = seq;
            *got += 1;
        }
        while got < n {
            match b_rx.recv().await {
                Some(TransportEvent::Frames { frames, .. }) => {
                    for bytes in &frames {
                        check(bytes, &mut got, &mut last);
                    }
                }
                Some(TransportEvent::Frame { bytes, .. }) => check(&bytes, &mut got, &mut last),
                Some(_) => {}
                None => break,
            }
        }
        (Instant::now(), got, b_rx)
    });
    let a = p.a.clone();
    let start = Instant::now();
    let cpu0 = cpu_ns();
    let sender = on(xa, async move {
        // Non-blocking send while there is room; wait for room when the queue is
        // full (the queue keeps up to `send_queue_capacity` frames in flight).
        let mut full = 0u64;
        for i in 0..n {
            match a.send("node-b", payload(i, frame)) {
                Ok(()) => {}
                Err(TransportError::QueueFull { .. }) => {
                    full += 1;
                    a.send_wait("node-b", payload(i, frame))
                        .await
                        .expect("send_wait");
                }
                Err(e) => panic!("send: {e}"),
            }
        }
        full
    });
    let (_, (end, got, b_rx)) = tokio::join!(sender, receiver);
    let cpu = cpu_ns() - cpu0;
    p.b_rx = Some(b_rx);
    assert_eq!(got, n);
    (
        n as f64 / (end - start).as_secs_f64(),
        cpu as f64 / n as f64,
    )
}

/// Round trips a -> b -> a, one in flight (b echoes); consumes the pair's receivers.
pub async fn transport_rtt(
    p: &mut Pair,
    xa: &Arbiter,
    xb: &Arbiter,
    iters: usize,
    frame: usize,
) -> Vec<Duration> {
    let mut echo = TransportEcho::start(p, xb, frame);
    on(xa, async move {
        let mut samples = Vec::with_capacity(iters);
        for i in 0..(iters + 200) as u64 {
            let t = echo.round_trip(i).await;
            if i >= 200 {
                samples.push(t);
            }
        }
        samples
    })
    .await
}

/// Request/response through two `QuicTransport`s and no framework: node-b
/// writes every frame back to node-a. Takes the pair's receivers; dropping
/// it ends node-b's echo task.
pub struct TransportEcho {
    a: Arc<QuicTransport>,
    a_rx: InboundEvents,
    frame: usize,
}

impl TransportEcho {
    /// Starts node-b's echo task on `xb`.
    pub fn start(p: &mut Pair, xb: &Arbiter, frame: usize) -> Self {
        let mut b_rx = p.b_rx.take().expect("rx");
        let b = p.b.clone();
        xb.spawn(async move {
            while let Some(ev) = b_rx.recv().await {
                for (_, bytes) in ev.frames() {
                    if bytes.as_ref() == b"stop" {
                        return;
                    }
                    let _ = b.send("node-a", bytes.clone());
                }
            }
        });
        TransportEcho {
            a: p.a.clone(),
            a_rx: p.a_rx.take().expect("rx"),
            frame,
        }
    }

    /// One request (frame number `i`) and its echo; the time it took.
    pub async fn round_trip(&mut self, i: u64) -> Duration {
        let t0 = Instant::now();
        self.a.send("node-b", payload(i, self.frame)).expect("send");
        loop {
            match self.a_rx.recv().await {
                Some(ev) if ev.frames().next().is_some() => break,
                Some(_) => {}
                None => panic!("closed"),
            }
        }
        t0.elapsed()
    }
}

impl Drop for TransportEcho {
    fn drop(&mut self) {
        let _ = self.a.send("node-b", Bytes::from_static(b"stop"));
    }
}
