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
//! This module holds the shared state ([`Inner`], [`Peer`], the per-peer
//! connection state), start-up and shutdown, the transport parameters, and
//! the sending entry points (`enqueue*`), which put a frame into the peer's
//! bounded queue or write it at once. The tasks live in submodules, each
//! adding an `impl Inner` block:
//! - [`outbound`]: the writer tasks (how queued frames reach the wire) and
//!   the connector, which dials with jittered exponential back-off and
//!   exchanges the hello as the dialer.
//! - [`inbound`]: the accept loop and the accepting side of the hello
//!   exchange (who is accepted, the simultaneous-dial rule).
//! - [`links`]: making a confirmed connection a peer's current one (the
//!   duplicate rule, PeerUp / PeerDown) and watching it until it closes.
//! - [`seeds`]: dialing seed addresses (names unknown until the hello) and
//!   adding peers at run time.
//! - [`reader`]: incoming streams, handed to the node as sources, and the
//!   ordering argument (per sender and class, a subsequence of the sender's
//!   order).

mod inbound;
mod links;
mod outbound;
mod reader;
mod seeds;

use std::collections::HashMap;
use std::hash::{BuildHasherDefault, Hasher};
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, RwLock};

use arc_swap::ArcSwap;
use bytes::Bytes;
use quinn::{Connection, Endpoint, SendStream, VarInt};
use tokio::sync::{watch, Mutex, Notify};
use tracing::{debug, info, warn};
use troupe_framework::transport::{InboundSender, TransportError};

use super::queue::{FrameQueue, PushError};
use super::tls::{self, PeerNameChecker};
use super::wire;
use super::{QuicConfig, QuicError, TlsSource, ALPN};

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
    /// Where to dial it: configured, or learned (a seed's address, a
    /// joiner's hello, an announcement); a joiner's newer hello updates it.
    addr: RwLock<SocketAddr>,
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

impl Peer {
    fn new(name: &str, addr: SocketAddr, cfg: &QuicConfig) -> Self {
        Peer {
            name: name.to_string(),
            addr: RwLock::new(addr),
            data_q: FrameQueue::new(cfg.send_queue_capacity, cfg.max_batch),
            ctrl_q: FrameQueue::new(cfg.control_queue_capacity, cfg.max_batch),
            state: Mutex::new(PeerState::default()),
            current_id: AtomicU64::new(0),
            link: watch::channel(None).0,
            want_connect: Notify::new(),
            dialing: AtomicBool::new(false),
        }
    }

    /// Where to dial the peer now.
    fn addr(&self) -> SocketAddr {
        // A poisoned lock still holds a valid address.
        *self.addr.read().unwrap_or_else(|e| e.into_inner())
    }

    fn set_addr(&self, addr: SocketAddr) {
        *self.addr.write().unwrap_or_else(|e| e.into_inner()) = addr;
    }
}

/// The peer table: read on every send without a lock, replaced whole (under
/// [`Inner::peers_insert`]) when a peer is added.
type PeerMap = HashMap<String, Arc<Peer>, BuildHasherDefault<Fnv1a>>;

pub(crate) struct Inner {
    pub(crate) name: String,
    pub(crate) incarnation: String,
    pub(crate) local_addr: SocketAddr,
    pub(crate) endpoint: Endpoint,
    cfg: QuicConfig,
    client_config: quinn::ClientConfig,
    /// For dialing a seed, whose name is unknown until its hello: the
    /// certificate must chain to the cluster CA, the name is checked after
    /// the hello.
    seed_client_config: quinn::ClientConfig,
    checker: Option<PeerNameChecker>,
    inbound: InboundSender,
    peers: ArcSwap<PeerMap>,
    /// Serializes additions to `peers` (and orders them with shutdown).
    peers_insert: std::sync::Mutex<()>,
    /// Bumped on every added peer.
    peer_generation: AtomicU64,
    shutdown_tx: watch::Sender<bool>,
    /// Mirrors `shutdown_tx` for the per-send check (no lock).
    closed: AtomicBool,
    next_link_id: AtomicU64,
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
                TlsSource::Files { ca, cert, key } => Some(super::load_tls_files(ca, cert, key)?),
            };
            tls::insecure(&cfg.node_name, material.as_ref(), ALPN)?
        } else {
            let material = match &cfg.tls {
                TlsSource::InMemory(t) => t.clone(),
                TlsSource::Files { ca, cert, key } => super::load_tls_files(ca, cert, key)?,
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
        client_config.transport_config(tc.clone());
        let mut seed_client_config = quinn::ClientConfig::new(setup.seed_client);
        seed_client_config.transport_config(tc);

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
        let mut peers = PeerMap::default();
        let mut started = Vec::new();
        for (name, addr) in &cfg.peers {
            if *name == cfg.node_name {
                debug!(node = %cfg.node_name, "ignoring peer entry naming this node");
                continue;
            }
            let peer = Arc::new(Peer::new(name, *addr, &cfg));
            started.push(peer.clone());
            peers.insert(name.clone(), peer);
        }
        let n_peers = peers.len();
        let inner = Arc::new(Inner {
            name: cfg.node_name.clone(),
            incarnation: cfg.incarnation.clone(),
            local_addr,
            endpoint,
            client_config,
            seed_client_config,
            checker: setup.checker,
            inbound,
            peers: ArcSwap::from_pointee(peers),
            peers_insert: std::sync::Mutex::new(()),
            peer_generation: AtomicU64::new(0),
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
        for seed in inner.cfg.seeds.clone() {
            tokio::spawn(inner.clone().seed_dialer(seed));
        }
        info!(
            node = %inner.name, addr = %local_addr, peers = n_peers,
            seeds = inner.cfg.seeds.len(), accept_joins = inner.cfg.accept_joins,
            "QUIC transport bound"
        );
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
        // After `closed` is set no peer is added (checked under this lock).
        let _adding = self.peers_insert.lock().unwrap_or_else(|e| e.into_inner());
        for peer in self.peers.load().values() {
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
        let peers = self.peers.load();
        let (queue, capacity, link) = self.queue_for(&peers, to, frame.len(), control)?;
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
        let peers = self.peers.load();
        let (queue, capacity, link) = self.queue_for(&peers, to, frame.len(), control)?;
        queue
            .try_push_slice(frame, link)
            .map_err(|e| Self::push_error(e, to, capacity))
    }

    /// The queue a frame of `len` bytes for `to` goes to, its capacity, and
    /// the peer's current connection (0 if none), on whose stream the frame
    /// may be written at once when the queue's writer is idle.
    fn queue_for<'p>(
        &self,
        peers: &'p PeerMap,
        to: &str,
        len: usize,
        control: bool,
    ) -> Result<(&'p FrameQueue<SendStream>, usize, u64), TransportError> {
        if self.is_shut_down() {
            return Err(TransportError::Closed);
        }
        if len > self.cfg.max_frame_size {
            return Err(TransportError::FrameTooLarge {
                len,
                max: self.cfg.max_frame_size,
            });
        }
        let peer = peers
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
            .load()
            .get(to)
            .cloned()
            .ok_or_else(|| TransportError::UnknownPeer(to.to_string()))?;
        peer.data_q
            .push(frame)
            .await
            .map_err(|_| TransportError::Closed)
    }

    pub(crate) fn connected_peers(&self) -> Vec<String> {
        let mut names: Vec<String> = self
            .peers
            .load()
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
}
