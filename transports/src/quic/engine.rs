//! The QUIC transport's moving parts: endpoint, per-peer queues and writer tasks,
//! the connector (dial with jittered exponential back-off), the accept loop, the
//! hello exchange, connection registration (duplicate rule) and stream readers.
//!
//! Per peer there are three long-lived tasks: a data writer, a control writer and
//! a connector. Per confirmed connection there are a close monitor and a stream
//! acceptor. Every task runs on the runtime that called `bind`. Incoming
//! streams are not read by tasks of their own: each is handed to the node as
//! a `TransportEvent::Source`, which the node's dispatcher polls.
//!
//! Sending: frames go into the peer's bounded queue in wire format (see
//! `queue`); a writer takes them in batches. While a writer is idle its stream
//! waits in the queue, and a frame sent to the empty queue is written at once
//! by the sender (a request or reply does not wait for the writer task).
//! Receiving: a stream's reader hands the node every complete frame of the
//! chunks received so far in one `TransportEvent::Frames`.
//!
//! Ordering argument: a writer writes its batches in queue order on one stream per
//! connection, and drops (never re-sends) a batch whose write failed. A reader
//! delivers a frame only while its connection is the peer's *current* one
//! (`Peer::current_id`, checked when the node polls the reader; the node
//! delivers that whole batch before it takes any other event, though it may
//! yield to its actors in between), and once a connection stops being current
//! it never becomes current again. So the receiver sees, per class, a subsequence of the sender's order.

use std::collections::HashMap;
use std::hash::{BuildHasherDefault, Hasher};
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;

use bytes::Bytes;
use futures::FutureExt;
use quinn::{Connection, Endpoint, RecvStream, SendStream, VarInt};
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use tokio::sync::{watch, Mutex, Notify};
use tracing::{debug, error, info, warn};
use troupe_framework::transport::{InboundSender, TransportError, TransportEvent};

use super::queue::{FrameQueue, PushError, Sink, WireSink};
use super::tls::{self, PeerNameChecker};
use super::wire::{self, FrameDecoder, Hello};
use super::{QuicConfig, QuicError, TlsSource, ALPN};

impl WireSink for SendStream {
    fn try_write(&mut self, chunks: &mut [Bytes]) -> Result<usize, ()> {
        // `write_chunks` does its work in its first poll: it returns what the
        // stream's flow control admits now, or `Pending` having written
        // nothing. Its waker is replaced when the writer next waits.
        let mut cx = std::task::Context::from_waker(futures::task::noop_waker_ref());
        let write = self.write_chunks(chunks);
        tokio::pin!(write);
        match std::future::Future::poll(write.as_mut(), &mut cx) {
            std::task::Poll::Ready(Ok(written)) => Ok(written.chunks),
            std::task::Poll::Ready(Err(_)) => Err(()),
            std::task::Poll::Pending => Ok(0),
        }
    }
}

/// Most frames a stream reader hands to the node in one event.
const GATHER_FRAMES: usize = 256;

/// Why a dial did not produce the peer's current connection.
enum DialError {
    /// The duplicate rule kept another connection (expected, not an error).
    Duplicate,
    /// Anything else, described.
    Failed(String),
}

impl From<String> for DialError {
    fn from(e: String) -> Self {
        DialError::Failed(e)
    }
}

/// Why `register` did not install a connection.
enum Registration {
    /// The duplicate rule keeps the existing connection.
    Duplicate,
    /// The transport is shutting down.
    ShuttingDown,
}

/// A confirmed connection and its registry id (never 0).
#[derive(Clone)]
pub(crate) struct Link {
    id: u64,
    conn: Connection,
}

struct Current {
    link: Link,
    dialed_by_me: bool,
    incarnation: String,
}

#[derive(Default)]
struct PeerState {
    current: Option<Current>,
    /// PeerUp emitted and no PeerDown since.
    up: bool,
    /// The incarnation that a live connection of a new incarnation last
    /// replaced. Incarnations are never reused, so seeing it come back means
    /// two running processes claim this peer's name.
    replaced: Option<String>,
    /// How often such a comeback was seen (the warning is rate-limited).
    impostor_comebacks: u32,
}

pub(crate) struct Peer {
    name: String,
    addr: SocketAddr,
    data_q: FrameQueue<SendStream>,
    ctrl_q: FrameQueue<SendStream>,
    /// Held across the PeerUp / PeerDown sends, so events for one peer are ordered.
    state: Mutex<PeerState>,
    /// Id of the current link, 0 if none; readers deliver only while it is theirs.
    current_id: AtomicU64,
    /// The current link, for the writers.
    link: watch::Sender<Option<Link>>,
    /// Writers ask the connector for a connection.
    want_connect: Notify,
    /// A dial to this peer is in progress.
    dialing: AtomicBool,
}

pub(crate) struct Inner {
    pub(crate) name: String,
    pub(crate) incarnation: String,
    pub(crate) local_addr: SocketAddr,
    pub(crate) endpoint: Endpoint,
    cfg: QuicConfig,
    client_config: quinn::ClientConfig,
    checker: Option<PeerNameChecker>,
    inbound: InboundSender,
    peers: HashMap<String, Arc<Peer>, BuildHasherDefault<Fnv1a>>,
    shutdown_tx: watch::Sender<bool>,
    /// Mirrors `shutdown_tx` for the per-send check (no lock).
    closed: AtomicBool,
    next_link_id: AtomicU64,
}

/// `addr` with an IPv4-mapped IPv6 address (as seen by a dual-stack socket)
/// written as IPv4, so that addresses compare equal across the two forms.
fn canonical(addr: SocketAddr) -> SocketAddr {
    SocketAddr::new(addr.ip().to_canonical(), addr.port())
}

/// Flow-control credit per stream, in bytes (see `transport_config`).
const STREAM_WINDOW: u32 = 2 * 1024 * 1024;

fn transport_config(cfg: &QuicConfig) -> Result<Arc<quinn::TransportConfig>, QuicError> {
    let mut tc = quinn::TransportConfig::default();
    let idle = quinn::IdleTimeout::try_from(cfg.idle_timeout)
        .map_err(|e| QuicError::InvalidConfig(format!("idle_timeout: {e}")))?;
    tc.max_idle_timeout(Some(idle));
    tc.keep_alive_interval(Some(cfg.keep_alive));
    // One bidirectional stream (the hello), two unidirectional per side (data,
    // control) plus slack for a replaced stream.
    tc.max_concurrent_bidi_streams(VarInt::from_u32(1));
    tc.max_concurrent_uni_streams(VarInt::from_u32(4));
    tc.datagram_receive_buffer_size(None);
    // 2 MiB per stream: a receiver that falls behind buffers at most ~1,800
    // full packets of a stream, under quinn's reassembly compaction threshold
    // (2,048 chunks). With 4 MiB an overloaded receiver's backlog crossed it
    // and quinn copied the backlog into fresh multi-megabyte buffers, over
    // and over (up to 10 % of a receiving node's CPU in page clearing in the
    // remote_node tell benchmark), making the slow side slower still.
    tc.stream_receive_window(VarInt::from_u32(STREAM_WINDOW));
    tc.receive_window(VarInt::from_u32(8 * 1024 * 1024));
    tc.send_window(8 * 1024 * 1024);
    Ok(Arc::new(tc))
}

/// FNV-1a: a fast hasher for the small, trusted set of configured peer names
/// (looked up on every send). Iteration order of the map never decides anything.
#[derive(Default)]
struct Fnv1a(u64);

impl Hasher for Fnv1a {
    fn finish(&self) -> u64 {
        self.0
    }
    fn write(&mut self, bytes: &[u8]) {
        let mut h = if self.0 == 0 {
            0xcbf2_9ce4_8422_2325
        } else {
            self.0
        };
        for b in bytes {
            h ^= u64::from(*b);
            h = h.wrapping_mul(0x0100_0000_01b3);
        }
        self.0 = h;
    }
}

fn seed_for(a: &str, b: &str) -> u64 {
    // FNV-1a: a stable per-(node, peer) seed for the back-off jitter.
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for byte in a.bytes().chain([0u8]).chain(b.bytes()) {
        h ^= u64::from(byte);
        h = h.wrapping_mul(0x0100_0000_01b3);
    }
    h
}

fn close(conn: &Connection, code: u32, reason: &str) {
    conn.close(VarInt::from_u32(code), reason.as_bytes());
}

impl Inner {
    pub(crate) fn start(cfg: QuicConfig, inbound: InboundSender) -> Result<Arc<Self>, QuicError> {
        cfg.validate()?;
        if tokio::runtime::Handle::try_current().is_err() {
            return Err(QuicError::NoRuntime);
        }
        let setup = if cfg.insecure_dev_mode {
            warn!(
                node = %cfg.node_name,
                "INSECURE DEV MODE: QUIC peers are NOT authenticated (certificates are not \
                 verified; names come from the hello). Never use this outside development."
            );
            let material = match &cfg.tls {
                TlsSource::SelfSigned => None,
                TlsSource::InMemory(t) => Some(t.clone()),
                TlsSource::Files { ca, cert, key } => {
                    Some(crate::certs::load_node_tls(ca, cert, key)?)
                }
            };
            tls::insecure(&cfg.node_name, material.as_ref(), ALPN)?
        } else {
            let material = match &cfg.tls {
                TlsSource::InMemory(t) => t.clone(),
                TlsSource::Files { ca, cert, key } => crate::certs::load_node_tls(ca, cert, key)?,
                TlsSource::SelfSigned => {
                    return Err(QuicError::InvalidConfig(
                        "TlsSource::SelfSigned requires insecure_dev_mode = true".into(),
                    ))
                }
            };
            tls::secure(&material, ALPN)?
        };
        let tc = transport_config(&cfg)?;
        let mut server_config = quinn::ServerConfig::with_crypto(setup.server);
        server_config.transport_config(tc.clone());
        let mut client_config = quinn::ClientConfig::new(setup.client);
        client_config.transport_config(tc);

        let endpoint =
            Endpoint::server(server_config, cfg.listen).map_err(|source| QuicError::Bind {
                addr: cfg.listen,
                source,
            })?;
        let local_addr = endpoint.local_addr().map_err(|source| QuicError::Bind {
            addr: cfg.listen,
            source,
        })?;

        let (shutdown_tx, _) = watch::channel(false);
        let mut peers = HashMap::default();
        let mut started = Vec::new();
        for (name, addr) in &cfg.peers {
            if *name == cfg.node_name {
                debug!(node = %cfg.node_name, "ignoring peer entry naming this node");
                continue;
            }
            let peer = Arc::new(Peer {
                name: name.clone(),
                addr: *addr,
                data_q: FrameQueue::new(cfg.send_queue_capacity, cfg.max_batch),
                ctrl_q: FrameQueue::new(cfg.control_queue_capacity, cfg.max_batch),
                state: Mutex::new(PeerState::default()),
                current_id: AtomicU64::new(0),
                link: watch::channel(None).0,
                want_connect: Notify::new(),
                dialing: AtomicBool::new(false),
            });
            started.push(peer.clone());
            peers.insert(name.clone(), peer);
        }
        let inner = Arc::new(Inner {
            name: cfg.node_name.clone(),
            incarnation: cfg.incarnation.clone(),
            local_addr,
            endpoint,
            client_config,
            checker: setup.checker,
            inbound,
            peers,
            shutdown_tx,
            closed: AtomicBool::new(false),
            next_link_id: AtomicU64::new(1),
            cfg,
        });
        for peer in started {
            tokio::spawn(inner.clone().writer(peer.clone(), wire::STREAM_DATA));
            tokio::spawn(inner.clone().writer(peer.clone(), wire::STREAM_CONTROL));
            tokio::spawn(inner.clone().connector(peer));
        }
        tokio::spawn(inner.clone().accept_loop());
        info!(node = %inner.name, addr = %local_addr, peers = inner.peers.len(), "QUIC transport bound");
        Ok(inner)
    }

    fn is_shut_down(&self) -> bool {
        self.closed.load(Ordering::Acquire)
    }

    pub(crate) fn shutdown(&self) {
        if self.closed.swap(true, Ordering::AcqRel) {
            return;
        }
        self.shutdown_tx.send_replace(true);
        debug!(node = %self.name, "QUIC transport shutting down");
        for peer in self.peers.values() {
            peer.data_q.close();
            peer.ctrl_q.close();
        }
        self.endpoint
            .close(VarInt::from_u32(wire::CLOSE_SHUTDOWN), b"shutdown");
    }

    pub(crate) fn enqueue(
        &self,
        to: &str,
        frame: Bytes,
        control: bool,
    ) -> Result<(), TransportError> {
        let (queue, capacity, link) = self.queue_for(to, frame.len(), control)?;
        queue
            .try_push(frame, link)
            .map_err(|e| Self::push_error(e, to, capacity))
    }

    /// Like [`Inner::enqueue`] with a borrowed frame, copied into the queue.
    pub(crate) fn enqueue_slice(
        &self,
        to: &str,
        frame: &[u8],
        control: bool,
    ) -> Result<(), TransportError> {
        let (queue, capacity, link) = self.queue_for(to, frame.len(), control)?;
        queue
            .try_push_slice(frame, link)
            .map_err(|e| Self::push_error(e, to, capacity))
    }

    /// The queue a frame of `len` bytes for `to` goes to, its capacity, and
    /// the peer's current connection (0 if none), on whose stream the frame
    /// may be written at once when the queue's writer is idle.
    fn queue_for(
        &self,
        to: &str,
        len: usize,
        control: bool,
    ) -> Result<(&FrameQueue<SendStream>, usize, u64), TransportError> {
        if self.is_shut_down() {
            return Err(TransportError::Closed);
        }
        if len > self.cfg.max_frame_size {
            return Err(TransportError::FrameTooLarge {
                len,
                max: self.cfg.max_frame_size,
            });
        }
        let peer = self
            .peers
            .get(to)
            .ok_or_else(|| TransportError::UnknownPeer(to.to_string()))?;
        let link = peer.current_id.load(Ordering::Acquire);
        Ok(if control {
            (&peer.ctrl_q, self.cfg.control_queue_capacity, link)
        } else {
            (&peer.data_q, self.cfg.send_queue_capacity, link)
        })
    }

    fn push_error(e: PushError, to: &str, capacity: usize) -> TransportError {
        match e {
            PushError::Full => TransportError::QueueFull {
                peer: to.to_string(),
                capacity,
            },
            PushError::Closed => TransportError::Closed,
        }
    }

    pub(crate) async fn enqueue_wait(&self, to: &str, frame: Bytes) -> Result<(), TransportError> {
        if self.is_shut_down() {
            return Err(TransportError::Closed);
        }
        if frame.len() > self.cfg.max_frame_size {
            return Err(TransportError::FrameTooLarge {
                len: frame.len(),
                max: self.cfg.max_frame_size,
            });
        }
        let peer = self
            .peers
            .get(to)
            .ok_or_else(|| TransportError::UnknownPeer(to.to_string()))?;
        peer.data_q
            .push(frame)
            .await
            .map_err(|_| TransportError::Closed)
    }

    pub(crate) fn connected_peers(&self) -> Vec<String> {
        let mut names: Vec<String> = self
            .peers
            .values()
            .filter(|p| p.current_id.load(Ordering::Acquire) != 0)
            .map(|p| p.name.clone())
            .collect();
        names.sort();
        names
    }

    /// Resolves when shutdown starts.
    async fn shut_down(mut rx: watch::Receiver<bool>) {
        // An error means the sender is gone, which also means shutdown.
        let _ = rx.wait_for(|s| *s).await;
    }

    // ----- writing -------------------------------------------------------------

    /// Drains one queue of one peer, writing batches on a stream of the
    /// current link. Between batches the stream waits in the queue, where a
    /// frame sent to an empty queue is written directly (see `queue`).
    async fn writer(self: Arc<Self>, peer: Arc<Peer>, kind: u8) {
        let queue = if kind == wire::STREAM_CONTROL {
            &peer.ctrl_q
        } else {
            &peer.data_q
        };
        let shutdown = self.shutdown_tx.subscribe();
        let stop = Self::shut_down(shutdown);
        tokio::pin!(stop);
        let mut link_rx = peer.link.subscribe();
        // Wire-format chunks (the queue stores frames already encoded).
        let mut chunks: Vec<Bytes> = Vec::new();
        loop {
            chunks.clear();
            let popped = tokio::select! {
                popped = queue.pop_batch(&mut chunks, self.cfg.max_batch) => popped,
                _ = &mut stop => return,
            };
            let Some((n, sink)) = popped else {
                return; // closed and drained
            };
            // Wait for a confirmed connection.
            let link = loop {
                let current = link_rx.borrow_and_update().clone();
                if let Some(link) = current {
                    break link;
                }
                peer.want_connect.notify_one();
                tokio::select! {
                    changed = link_rx.changed() => if changed.is_err() { return },
                    _ = &mut stop => return,
                }
            };
            // The rest of a frame a direct write started goes first, on the
            // same stream; if that stream's connection is gone, so is the
            // frame (like a batch whose write failed).
            let (mut stream, mut rest) = match sink {
                Some(s) if s.link == link.id => (Some(s.stream), s.rest),
                Some(s) => {
                    if !s.rest.is_empty() {
                        debug!(node = %self.name, peer = %peer.name, "connection replaced: a partly written frame dropped");
                    }
                    (None, Vec::new())
                }
                None => (None, Vec::new()),
            };
            if stream.is_none() {
                match Self::open_stream(&link.conn, kind).await {
                    Ok(s) => stream = Some(s),
                    Err(e) => {
                        debug!(node = %self.name, peer = %peer.name, "opening stream failed, {n} frames dropped: {e}");
                        queue.put_sink(None);
                        continue;
                    }
                }
            }
            if let Some(s) = stream.as_mut() {
                let written = match s.write_all_chunks(&mut rest).await {
                    Ok(()) => s.write_all_chunks(&mut chunks).await,
                    Err(e) => Err(e),
                };
                if let Err(e) = written {
                    debug!(node = %self.name, peer = %peer.name, "write failed, {n} frames dropped: {e}");
                    stream = None;
                }
            }
            queue.put_sink(stream.map(|stream| Sink {
                link: link.id,
                stream,
                rest: Vec::new(),
            }));
        }
    }

    async fn open_stream(conn: &Connection, kind: u8) -> Result<SendStream, String> {
        let mut s = conn.open_uni().await.map_err(|e| e.to_string())?;
        if kind == wire::STREAM_CONTROL {
            s.set_priority(10).map_err(|e| e.to_string())?;
        }
        s.write_all(&[kind]).await.map_err(|e| e.to_string())?;
        Ok(s)
    }

    // ----- dialing -------------------------------------------------------------

    /// Dials `peer` whenever a writer waits for a connection, with jittered
    /// exponential back-off between failed attempts.
    async fn connector(self: Arc<Self>, peer: Arc<Peer>) {
        let stop = Self::shut_down(self.shutdown_tx.subscribe());
        tokio::pin!(stop);
        let mut rng = ChaCha8Rng::seed_from_u64(seed_for(&self.incarnation, &peer.name));
        loop {
            tokio::select! {
                _ = peer.want_connect.notified() => {}
                _ = &mut stop => return,
            }
            let mut attempt: u32 = 0;
            while peer.link.borrow().is_none() && !self.is_shut_down() {
                peer.dialing.store(true, Ordering::Release);
                let result = self.dial(&peer).await;
                peer.dialing.store(false, Ordering::Release);
                match result {
                    Ok(()) => break,
                    // Expected when both nodes dial at once; the peer's dial wins.
                    Err(DialError::Duplicate) => debug!(
                        node = %self.name, peer = %peer.name,
                        "peer kept its own connection (simultaneous dial)"
                    ),
                    // Loud for the first attempts, then every tenth.
                    Err(DialError::Failed(e)) if attempt < 3 || attempt % 10 == 0 => warn!(
                        node = %self.name, peer = %peer.name, addr = %peer.addr, attempt,
                        "connecting to peer failed: {e}"
                    ),
                    Err(DialError::Failed(e)) => debug!(
                        node = %self.name, peer = %peer.name, addr = %peer.addr, attempt,
                        "connecting to peer failed: {e}"
                    ),
                }
                let base = self
                    .cfg
                    .reconnect_min
                    .saturating_mul(1u32 << attempt.min(16))
                    .min(self.cfg.reconnect_max);
                let delay = base.mul_f64(rng.gen_range(0.5..1.5));
                attempt = attempt.saturating_add(1);
                tokio::select! {
                    _ = tokio::time::sleep(delay) => {}
                    _ = &mut stop => return,
                }
            }
        }
    }

    async fn dial(self: &Arc<Self>, peer: &Arc<Peer>) -> Result<(), DialError> {
        let connecting = self
            .endpoint
            .connect_with(self.client_config.clone(), peer.addr, &peer.name)
            .map_err(|e| format!("cannot start connection: {e}"))?;
        let deadline = self.cfg.handshake_timeout;
        let handshake = async {
            let conn = connecting
                .await
                .map_err(|e| format!("TLS handshake failed: {e}"))?;
            if let Some(checker) = &self.checker {
                if let Err(e) = checker.check(&conn, &peer.name) {
                    close(&conn, wire::CLOSE_REFUSED, "identity mismatch");
                    return Err(e.into());
                }
            }
            let (mut send, mut recv) = conn
                .open_bi()
                .await
                .map_err(|e| format!("opening hello stream: {e}"))?;
            let hello = self.hello().encode().map_err(|e| e.to_string())?;
            send.write_all(&hello)
                .await
                .map_err(|e| format!("sending hello: {e}"))?;
            let theirs = match read_hello(&mut recv).await {
                Ok(h) => h,
                Err(e) => {
                    return Err(match conn.close_reason() {
                        Some(quinn::ConnectionError::ApplicationClosed(c))
                            if c.error_code == VarInt::from_u32(wire::CLOSE_DUPLICATE) =>
                        {
                            DialError::Duplicate
                        }
                        Some(reason) => format!("peer refused us: {reason}").into(),
                        None => format!("peer sent no valid hello: {e}").into(),
                    });
                }
            };
            if theirs.name != peer.name {
                close(&conn, wire::CLOSE_REFUSED, "unexpected node name in hello");
                return Err(format!(
                    "peer at {} says it is {:?}, expected {:?}",
                    peer.addr, theirs.name, peer.name
                )
                .into());
            }
            // The hello stream has served its purpose.
            let _ = send.finish();
            Ok((conn, theirs))
        };
        let (conn, theirs) = tokio::time::timeout(deadline, handshake)
            .await
            .map_err(|_| format!("handshake and hello took longer than {deadline:?}"))??;
        match self.register(peer, conn, true, theirs.incarnation).await {
            Ok(()) => Ok(()),
            Err(Registration::Duplicate) => Err(DialError::Duplicate),
            Err(Registration::ShuttingDown) => Err("transport is shutting down".to_string().into()),
        }
    }

    fn hello(&self) -> Hello {
        Hello {
            name: self.name.clone(),
            incarnation: self.incarnation.clone(),
        }
    }

    // ----- accepting -----------------------------------------------------------

    async fn accept_loop(self: Arc<Self>) {
        while let Some(incoming) = self.endpoint.accept().await {
            if self.is_shut_down() {
                incoming.refuse();
                continue;
            }
            tokio::spawn(self.clone().accept_one(incoming));
        }
    }

    async fn accept_one(self: Arc<Self>, incoming: quinn::Incoming) {
        let remote = incoming.remote_address();
        let deadline = self.cfg.handshake_timeout;
        match tokio::time::timeout(deadline, self.clone().accept_handshake(incoming)).await {
            Ok(Ok(())) => {}
            Ok(Err(e)) => warn!(node = %self.name, %remote, "refused incoming connection: {e}"),
            Err(_) => warn!(
                node = %self.name, %remote,
                "refused incoming connection: handshake and hello took longer than {deadline:?}"
            ),
        }
    }

    async fn accept_handshake(self: Arc<Self>, incoming: quinn::Incoming) -> Result<(), String> {
        let conn = incoming
            .await
            .map_err(|e| format!("TLS handshake failed: {e}"))?;
        let (mut send, mut recv) = conn
            .accept_bi()
            .await
            .map_err(|e| format!("no hello stream: {e}"))?;
        let theirs = match read_hello(&mut recv).await {
            Ok(h) => h,
            Err(e) => {
                close(&conn, wire::CLOSE_REFUSED, "bad hello");
                return Err(format!("bad hello: {e}"));
            }
        };
        let refuse = |why: String| {
            close(&conn, wire::CLOSE_REFUSED, &why);
            Err(why)
        };
        if theirs.name == self.name {
            return refuse(format!("peer claims to be this node ({:?})", theirs.name));
        }
        let Some(peer) = self.peers.get(&theirs.name).cloned() else {
            return refuse(format!(
                "node {:?} is not a configured peer (only configured peers are accepted)",
                theirs.name
            ));
        };
        if let Some(checker) = &self.checker {
            if let Err(e) = checker.check(&conn, &theirs.name) {
                return refuse(format!("peer claiming {:?}: {e}", theirs.name));
            }
        }
        // Simultaneous dials: the connection dialed by the lower name wins, so the
        // lower-named node refuses the peer's dial while its own is in flight
        // (nothing has been written on either yet, so nothing is lost) -- if its
        // own dial goes where the peer's connection comes from. A dial to another
        // address (a wrong `addr` for the peer here) may never complete; refusing
        // would then keep the two nodes apart, so the peer's dial is taken and
        // the duplicate rule of `register` settles any race.
        if self.name < peer.name && peer.dialing.load(Ordering::Acquire) {
            let from = conn.remote_address();
            if canonical(from) == canonical(peer.addr) {
                close(
                    &conn,
                    wire::CLOSE_DUPLICATE,
                    "simultaneous dial; keeping mine",
                );
                debug!(node = %self.name, peer = %peer.name, "refused simultaneous dial from higher-named peer");
                return Ok(());
            }
            warn!(
                node = %self.name, peer = %peer.name, remote = %from, addr = %peer.addr,
                "accepting the peer's connection while dialing it at another address: \
                 is the configured addr of {:?} in [[peers]] right?", peer.name
            );
        }
        // Decide on duplicates before answering, so a losing dialer hears why.
        match self
            .register(&peer, conn.clone(), false, theirs.incarnation)
            .await
        {
            Ok(()) => {}
            Err(Registration::Duplicate) => {
                debug!(node = %self.name, peer = %peer.name, "refused duplicate connection; keeping the existing one");
                return Ok(());
            }
            Err(Registration::ShuttingDown) => return Err("transport is shutting down".into()),
        }
        let hello = self.hello().encode().map_err(|e| e.to_string())?;
        send.write_all(&hello)
            .await
            .map_err(|e| format!("sending hello to {:?}: {e}", theirs.name))?;
        let _ = send.finish();
        Ok(())
    }

    // ----- registration --------------------------------------------------------

    /// Makes `conn` the current connection of `peer`, unless the duplicate rule
    /// keeps the existing one. Emits PeerUp / PeerDown as needed.
    async fn register(
        self: &Arc<Self>,
        peer: &Arc<Peer>,
        conn: Connection,
        dialed_by_me: bool,
        incarnation: String,
    ) -> Result<(), Registration> {
        let mut st = peer.state.lock().await;
        if self.is_shut_down() {
            close(&conn, wire::CLOSE_SHUTDOWN, "shutdown");
            return Err(Registration::ShuttingDown);
        }
        if let Some(old) = st.current.take() {
            if old.link.conn.close_reason().is_some() {
                // Dead already; its monitor will find it is no longer current.
            } else if old.incarnation != incarnation {
                if st.replaced.as_ref() == Some(&incarnation) {
                    if st.impostor_comebacks % 30 == 0 {
                        warn!(
                            node = %self.name, peer = %peer.name,
                            "two running processes claim to be {:?} (incarnation {} at {}, \
                             incarnation {} at {}) and keep replacing each other's connection: \
                             stop one of them; each node name must run once",
                            peer.name, old.incarnation, old.link.conn.remote_address(),
                            incarnation, conn.remote_address()
                        );
                    }
                    st.impostor_comebacks = st.impostor_comebacks.wrapping_add(1);
                }
                st.replaced = Some(old.incarnation.clone());
                close(&old.link.conn, wire::CLOSE_REPLACED, "peer restarted");
                if st.up {
                    st.up = false;
                    peer.current_id.store(0, Ordering::Release);
                    peer.link.send_replace(None);
                    let _ = self
                        .inbound
                        .send(TransportEvent::PeerDown {
                            peer: peer.name.clone(),
                            reason: format!(
                                "restarted: incarnation {} replaced {}",
                                incarnation, old.incarnation
                            ),
                        })
                        .await;
                }
            } else {
                let dialer = |by_me: bool| if by_me { &self.name } else { &peer.name };
                let (old_dialer, new_dialer) = (dialer(old.dialed_by_me), dialer(dialed_by_me));
                // Same dialer twice: it re-dialed because it saw the old one die.
                let new_wins = old_dialer == new_dialer || new_dialer < old_dialer;
                if !new_wins {
                    debug!(node = %self.name, peer = %peer.name, "duplicate connection: keeping the one dialed by {old_dialer}");
                    st.current = Some(old);
                    close(&conn, wire::CLOSE_DUPLICATE, "duplicate connection");
                    return Err(Registration::Duplicate);
                }
                debug!(node = %self.name, peer = %peer.name, "duplicate connection: keeping the one dialed by {new_dialer}");
                close(
                    &old.link.conn,
                    wire::CLOSE_DUPLICATE,
                    "duplicate connection",
                );
            }
        }
        let id = self.next_link_id.fetch_add(1, Ordering::Relaxed);
        let link = Link {
            id,
            conn: conn.clone(),
        };
        if !st.up {
            info!(node = %self.name, peer = %peer.name, remote = %conn.remote_address(), %incarnation, "peer up");
            if self
                .inbound
                .send(TransportEvent::PeerUp {
                    peer: peer.name.clone(),
                })
                .await
                .is_err()
            {
                debug!(node = %self.name, "node's inbound channel is closed");
            }
            st.up = true;
        }
        peer.current_id.store(id, Ordering::Release);
        peer.link.send_replace(Some(link.clone()));
        st.current = Some(Current {
            link: link.clone(),
            dialed_by_me,
            incarnation,
        });
        drop(st);
        tokio::spawn(self.clone().monitor(peer.clone(), link.clone()));
        tokio::spawn(self.clone().accept_streams(peer.clone(), link));
        Ok(())
    }

    /// Waits for the link to close; if it was current, clears it and emits PeerDown.
    async fn monitor(self: Arc<Self>, peer: Arc<Peer>, link: Link) {
        let reason = link.conn.closed().await;
        let mut st = peer.state.lock().await;
        if st.current.as_ref().map(|c| c.link.id) != Some(link.id) {
            return;
        }
        st.current = None;
        peer.current_id.store(0, Ordering::Release);
        peer.link.send_replace(None);
        if st.up && !self.is_shut_down() {
            st.up = false;
            info!(node = %self.name, peer = %peer.name, "peer down: {reason}");
            let _ = self
                .inbound
                .send(TransportEvent::PeerDown {
                    peer: peer.name.clone(),
                    reason: reason.to_string(),
                })
                .await;
        }
    }

    // ----- reading -------------------------------------------------------------

    async fn accept_streams(self: Arc<Self>, peer: Arc<Peer>, link: Link) {
        while let Ok(recv) = link.conn.accept_uni().await {
            tokio::spawn(self.clone().read_stream(peer.clone(), link.clone(), recv));
        }
    }

    /// Reads an incoming stream's kind byte, then hands the stream to the
    /// node as a [`TransportEvent::Source`] that its dispatcher reads itself.
    async fn read_stream(self: Arc<Self>, peer: Arc<Peer>, link: Link, mut recv: RecvStream) {
        let mut kind = [0u8; 1];
        if recv.read_exact(&mut kind).await.is_err() {
            return;
        }
        if kind[0] != wire::STREAM_DATA && kind[0] != wire::STREAM_CONTROL {
            error!(node = %self.name, peer = %peer.name, kind = kind[0], "unknown stream kind; closing connection");
            close(&link.conn, wire::CLOSE_PROTOCOL, "unknown stream kind");
            return;
        }
        let reader = StreamReader {
            decoder: FrameDecoder::new(self.cfg.max_frame_size),
            from: Arc::from(peer.name.as_str()),
            inner: self.clone(),
            peer,
            link,
            recv,
            done: false,
        };
        let source = futures::stream::unfold(reader, |mut reader| async move {
            let frames = reader.next_batch().await?;
            let from = reader.from.clone();
            Some((TransportEvent::Frames { from, frames }, reader))
        });
        if self
            .inbound
            .send(TransportEvent::Source(Box::pin(source)))
            .await
            .is_err()
        {
            debug!(node = %self.name, "node's inbound channel is closed");
        }
    }
}

/// One incoming stream, read by whoever polls it (the node's dispatcher):
/// chunks become frames, handed over in batches.
struct StreamReader {
    inner: Arc<Inner>,
    peer: Arc<Peer>,
    link: Link,
    recv: RecvStream,
    decoder: FrameDecoder,
    from: Arc<str>,
    /// Set once the stream has ended, broken, sent bad input or been
    /// replaced: nothing more is read.
    done: bool,
}

impl StreamReader {
    /// Every complete frame of the chunks received so far (at least one, at
    /// most about [`GATHER_FRAMES`]), in order; `None` once the stream is
    /// over. Frames are handed over only while this stream's connection is
    /// the peer's current one, checked just before they are returned (the
    /// caller delivers the whole batch before it takes any other event).
    async fn next_batch(&mut self) -> Option<Vec<Bytes>> {
        let mut frames = Vec::new();
        while !self.done {
            let chunk = match self.recv.read_chunk(256 * 1024, true).await {
                Ok(Some(chunk)) => chunk.bytes,
                Ok(None) => return None,
                Err(e) => {
                    debug!(node = %self.inner.name, peer = %self.peer.name, "stream ended: {e}");
                    return None;
                }
            };
            let mut bad = take_frames(&mut self.decoder, chunk, &mut frames);
            // Every complete frame of the chunks already received goes to the
            // node at once: more chunks are taken while they are ready now.
            while bad.is_none() && frames.len() < GATHER_FRAMES {
                match self.recv.read_chunk(256 * 1024, true).now_or_never() {
                    Some(Ok(Some(chunk))) => {
                        bad = take_frames(&mut self.decoder, chunk.bytes, &mut frames);
                    }
                    Some(Ok(None)) => {
                        self.done = true;
                        break;
                    }
                    Some(Err(e)) => {
                        debug!(node = %self.inner.name, peer = %self.peer.name, "stream ended: {e}");
                        self.done = true;
                        break;
                    }
                    None => break,
                }
            }
            if let Some(e) = bad {
                // The frames before the bad one are still delivered.
                error!(node = %self.inner.name, peer = %self.peer.name, "bad input from peer: {e}; closing connection");
                close(&self.link.conn, wire::CLOSE_PROTOCOL, &e.to_string());
                self.done = true;
            }
            if self.peer.current_id.load(Ordering::Acquire) != self.link.id {
                // Replaced or closed: stop; frames from here on are dropped.
                let _ = self.recv.stop(VarInt::from_u32(wire::CLOSE_DUPLICATE));
                self.done = true;
                return None;
            }
            if !frames.is_empty() {
                return Some(frames);
            }
        }
        None
    }
}

/// Adds `chunk` to the decoder and moves every complete frame into
/// `frames`; the wire error, if a frame is malformed (the frames before it
/// are kept).
fn take_frames(
    decoder: &mut FrameDecoder,
    chunk: Bytes,
    frames: &mut Vec<Bytes>,
) -> Option<wire::WireError> {
    decoder.push(chunk);
    loop {
        match decoder.next_frame() {
            Ok(Some(frame)) => frames.push(frame),
            Ok(None) => return None,
            Err(e) => return Some(e),
        }
    }
}

/// Reads one length-prefixed hello from the hello stream.
async fn read_hello(recv: &mut RecvStream) -> Result<Hello, String> {
    let mut len = [0u8; 4];
    recv.read_exact(&mut len).await.map_err(|e| e.to_string())?;
    let len = u32::from_be_bytes(len) as usize;
    if len > wire::MAX_HELLO {
        return Err(format!("hello of {len} bytes exceeds {}", wire::MAX_HELLO));
    }
    let mut body = vec![0u8; len];
    recv.read_exact(&mut body)
        .await
        .map_err(|e| e.to_string())?;
    Hello::decode(&body).map_err(|e| e.to_string())
}
