//! The QUIC transport: one quinn endpoint per node, mutual TLS, framed streams.
//!
//! [`QuicTransport`] implements [`Transport`]: it moves opaque frames between nodes
//! named by node name and reports [`TransportEvent`](troupe_framework::transport::TransportEvent)s into the node's bounded
//! inbound channel. Each incoming stream is handed over as a
//! [`TransportEvent::Source`](troupe_framework::transport::TransportEvent::Source)
//! that the receiver reads in its own task (the node's dispatcher does;
//! [`InboundEvents`](troupe_framework::transport::InboundEvents) does it for
//! anyone else), so no reader task stands between the network and the node.
//!
//! # Wire and streams
//! One QUIC connection per pair of nodes. The dialer opens one bidirectional stream
//! and both sides exchange a *hello* (node name + incarnation) on it; only then is
//! the peer confirmed and [`PeerUp`](troupe_framework::transport::TransportEvent::PeerUp) emitted. (With TLS 1.3 a
//! client's handshake completes before the server has checked the client
//! certificate, so the hello is what proves both sides accepted each other.)
//! Afterwards each side opens two long-lived unidirectional streams towards the
//! other: a *data* stream for [`Transport::send`] and a higher-priority *control*
//! stream for [`QuicTransport::send_control`], so heartbeats never queue behind
//! large payloads. Frames are `u32` big-endian length-prefixed (see [`wire`]).
//!
//! # Guarantees
//! - Per sender, per class (data / control) frames arrive in send order or not at
//!   all: a frame is never duplicated or reordered. Frames in flight when a
//!   connection breaks or is replaced may be lost. There is no order between the
//!   data and the control class.
//! - `from` is the authenticated peer name: the node name proven by the peer's
//!   certificate (SAN DNS name, checked against the cluster CA), never anything
//!   inside a frame.
//! - `send` / `send_control` never block: each peer has two bounded queues
//!   ([`QuicConfig::send_queue_capacity`], [`QuicConfig::control_queue_capacity`]);
//!   a full queue (peer slow or unreachable) gives [`TransportError::QueueFull`].
//!   A writer task per peer and class drains its queue and writes everything queued
//!   so far as one batch (small frames coalesced into one buffer).
//! - Inbound back-pressure: a stream is read only when the node polls its
//!   source, so a node that stops taking events stops reading, and QUIC flow
//!   control slows the remote sender down. A stream's
//!   receive window (2 MiB) is a quarter of the connection's (8 MiB), so a stalled data
//!   stream cannot starve the control stream of connection credit.
//! - [`QuicTransport::send_wait`] is the waiting variant of `send` for bulk
//!   producers that prefer to be slowed down rather than refused.
//!
//! # Connections
//! - Connect on first send; on failure retry with jittered exponential back-off
//!   ([`QuicConfig::reconnect_min`] .. [`QuicConfig::reconnect_max`]) while frames
//!   are waiting. Keep-alives ([`QuicConfig::keep_alive`]) keep an idle connection
//!   open below [`QuicConfig::idle_timeout`]; a silent peer is declared gone after
//!   the idle timeout ([`PeerDown`](troupe_framework::transport::TransportEvent::PeerDown)).
//! - Duplicates: when both nodes dial each other, the connection dialed by the
//!   node with the lexicographically lower name is kept and the other one is closed
//!   (code [`wire::CLOSE_DUPLICATE`]) by both sides, deterministically. The
//!   lower-named node refuses the other's dial while its own is in flight, before
//!   either connection carried frames, so the usual simultaneous start loses
//!   nothing; it does so only while its own dial goes to the address the
//!   other's comes from (a dial to a wrong configured address must not keep the
//!   two apart: the other's dial is then taken, with a warning). A connection
//!   from a new incarnation of a peer replaces the old one (PeerDown with
//!   reason "restarted", then PeerUp). A peer that re-dials while
//!   this side still holds a dead-but-not-yet-timed-out connection it dialed
//!   itself is refused until the idle timeout notices (bounded by
//!   [`QuicConfig::idle_timeout`]).
//!
//! # Security policy
//! - Mutual TLS 1.3 with the cluster CA as the only root (or the CAs of a
//!   `ca.pem` holding several, while the cluster changes CA), client certificates
//!   required, ALPN [`ALPN`], no 0-RTT.
//! - **Only known peers are accepted** (configured in [`QuicConfig::peers`] or
//!   added with [`QuicTransport::add_peer`]): an incoming connection whose hello
//!   names another node is refused, even with a valid cluster certificate --
//!   unless [`QuicConfig::accept_joins`] is set (a node configured with seeds):
//!   then the cluster CA decides, and a node whose certificate chains to it and
//!   names the node its hello claims is accepted and added to the peer table.
//!   Seeds ([`QuicConfig::seeds`]) are dialed by address; the certificate must
//!   chain to the cluster CA and name the node the seed's hello claims. A peer whose certificate does not name the node it claims
//!   (or, when dialing, the node we dialed) is refused. Every refusal is logged with
//!   `tracing::warn!` and closes only that connection.
//! - Bad input on an authenticated connection (length prefix over
//!   [`QuicConfig::max_frame_size`], unknown stream kind) is logged with
//!   `tracing::error!` and closes that connection (code [`wire::CLOSE_PROTOCOL`]);
//!   the node keeps serving its other peers.
//! - [`QuicConfig::insecure_dev_mode`] (opt-in by name, logged loudly): TLS with a
//!   self-signed certificate, no certificate verification, names from the hello.
//!
//! # Example
//! ```no_run
//! use troupe_framework::transport::{InboundEvents, Transport, TransportEvent};
//! use troupe_transports::certs::ClusterCa;
//! use troupe_transports::quic::{QuicConfig, QuicTransport, TlsSource};
//!
//! # async fn demo() -> Result<(), Box<dyn std::error::Error>> {
//! let ca = ClusterCa::generate()?; // or certs::init(dir) / certs::issue(dir, name) + TlsSource::Files
//! let config = QuicConfig::new("node-a", "127.0.0.1:7000".parse()?, TlsSource::InMemory(ca.issue("node-a")?))
//!     .with_peer("node-b", "127.0.0.1:7001".parse()?);
//! let (tx, rx) = tokio::sync::mpsc::channel(1024);
//! let transport = QuicTransport::bind(config, tx).await?;
//! // Incoming streams arrive as sources to read in place; this reads them all.
//! let mut rx = InboundEvents::new(rx);
//! transport.send("node-b", bytes::Bytes::from_static(b"hello"))?; // connects on first send
//! transport.send_control("node-b", bytes::Bytes::from_static(b"heartbeat"))?;
//! while let Some(event) = rx.recv().await {
//!     match event {
//!         TransportEvent::PeerUp { peer } => println!("{peer} is up"),
//!         TransportEvent::Frames { from, frames } => println!("{} frames from {from}", frames.len()),
//!         TransportEvent::Frame { from, bytes } => println!("{} bytes from {from}", bytes.len()),
//!         TransportEvent::PeerDown { peer, reason } => println!("{peer} down: {reason}"),
//!         // InboundEvents reads sources itself
//!         TransportEvent::Source(_) | TransportEvent::ControlSource(_) => {}
//!     }
//! }
//! # Ok(())
//! # }
//! ```
//!
//! # Runtime
//! [`QuicTransport::bind`] must be awaited inside a tokio runtime (an actix
//! `System` or `Arbiter` is one); the endpoint and every task of the transport run
//! on that runtime, which must outlive the transport. `send` may be called from
//! any thread.

mod engine;
mod queue;
mod tls;
/// The server-certificate verifier of seeds and HTTPS clients.
pub use tls::{CaServerVerifier, ServerNameRule};
pub mod wire;

pub use tls::provider as crypto_provider;

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use troupe_framework::transport::{InboundSender, Transport, TransportError};

use crate::certs::{CertError, NodeTls};

/// The ALPN protocol id of Troupe's wire protocol, version 1.
pub const ALPN: &[u8] = b"troupe/1";

/// Where a node's TLS identity comes from.
#[derive(Debug, Clone)]
pub enum TlsSource {
    /// PEM files: the cluster CA certificate, the node certificate, the node key.
    Files {
        /// Cluster CA certificate (`ca.pem`).
        ca: PathBuf,
        /// Node certificate chain (`NODE.pem`).
        cert: PathBuf,
        /// Node private key (`NODE.key`).
        key: PathBuf,
    },
    /// Material already in memory (tests, demos: see [`crate::certs::ClusterCa`]).
    InMemory(NodeTls),
    /// A throwaway self-signed certificate. Only valid with
    /// [`QuicConfig::insecure_dev_mode`].
    SelfSigned,
}

/// Configuration of one node's QUIC transport. [`QuicConfig::new`] fills in the
/// documented defaults.
#[derive(Debug, Clone)]
pub struct QuicConfig {
    /// This node's name; must be a DNS name and match its certificate's SAN.
    pub node_name: String,
    /// This node's incarnation, sent in the hello (default: a fresh UUID v4).
    pub incarnation: String,
    /// UDP address to listen on (port 0 picks a free port).
    pub listen: SocketAddr,
    /// The peers this node talks to and accepts: node name -> address. An entry
    /// naming this node itself is ignored.
    pub peers: BTreeMap<String, SocketAddr>,
    /// Addresses of seed nodes to join the cluster through (default none):
    /// dialed at bind without knowing their names (the certificate must
    /// chain to the cluster CA; the hello says who answered), retried with
    /// back-off until each answered once. An address of this node itself is
    /// skipped. Needs [`QuicConfig::accept_joins`].
    pub seeds: Vec<SocketAddr>,
    /// Accept nodes that are not in [`QuicConfig::peers`] (default false):
    /// an incoming hello from an unknown name is accepted when the
    /// certificate chains to the cluster CA and names that node, and the
    /// hello (version 2) says where it listens; the node is then added to the
    /// peer table ([`QuicTransport::add_peer`]). The cluster CA decides who
    /// may join. Also makes this node send version-2 hellos (with its listen
    /// address). Without it only configured (or added) peers are accepted.
    pub accept_joins: bool,
    /// TLS identity.
    pub tls: TlsSource,
    /// Largest frame sent or accepted, in bytes (default 16 MiB).
    pub max_frame_size: usize,
    /// Data frames queued per peer before `send` fails with `QueueFull` (default 8192).
    pub send_queue_capacity: usize,
    /// Control frames queued per peer (default 1024).
    pub control_queue_capacity: usize,
    /// Most frames written in one batch (default 1024).
    pub max_batch: usize,
    /// Keep-alive interval; must be below `idle_timeout` (default 2 s).
    pub keep_alive: Duration,
    /// Idle timeout after which a silent connection is closed (default 10 s).
    pub idle_timeout: Duration,
    /// Limit for the TLS handshake plus hello exchange (default 5 s).
    pub handshake_timeout: Duration,
    /// First reconnect delay (default 50 ms); doubles per failure, with jitter.
    pub reconnect_min: Duration,
    /// Largest reconnect delay (default 5 s).
    pub reconnect_max: Duration,
    /// Skip certificate verification (self-signed TLS, names from the hello only).
    /// Never use in production; a loud warning is logged at bind.
    pub insecure_dev_mode: bool,
}

impl QuicConfig {
    /// A config with the documented defaults and no peers.
    pub fn new(node_name: impl Into<String>, listen: SocketAddr, tls: TlsSource) -> Self {
        Self {
            node_name: node_name.into(),
            incarnation: uuid::Uuid::new_v4().to_string(),
            listen,
            peers: BTreeMap::new(),
            seeds: Vec::new(),
            accept_joins: false,
            tls,
            max_frame_size: 16 * 1024 * 1024,
            send_queue_capacity: 8192,
            control_queue_capacity: 1024,
            max_batch: 1024,
            keep_alive: Duration::from_secs(2),
            idle_timeout: Duration::from_secs(10),
            handshake_timeout: Duration::from_secs(5),
            reconnect_min: Duration::from_millis(50),
            reconnect_max: Duration::from_secs(5),
            insecure_dev_mode: false,
        }
    }

    /// Adds (or replaces) a peer.
    pub fn with_peer(mut self, name: impl Into<String>, addr: SocketAddr) -> Self {
        self.peers.insert(name.into(), addr);
        self
    }

    fn validate(&self) -> Result<(), QuicError> {
        crate::certs::validate_node_name(&self.node_name)?;
        for (name, addr) in &self.peers {
            crate::certs::validate_node_name(name)?;
            // An IPv4 socket cannot send to an IPv6 address, nor a socket bound
            // to a specific IPv6 address to an IPv4 one (only `[::]` is dual-stack).
            let v6_only = self.listen.is_ipv6() && !self.listen.ip().is_unspecified();
            if (self.listen.is_ipv4() && addr.is_ipv6()) || (v6_only && addr.is_ipv4()) {
                return Err(QuicError::InvalidConfig(format!(
                    "peer {name:?} is at {addr}, which this node cannot reach from its listen \
                     address {}: give the peer an address of the same IP family, or listen on [::]",
                    self.listen
                )));
            }
        }
        let bad = |m: &str| Err(QuicError::InvalidConfig(m.to_string()));
        if !self.seeds.is_empty() && !self.accept_joins {
            return bad("seeds need accept_joins = true (joining is a two-way exchange)");
        }
        if self.max_frame_size == 0 || self.max_frame_size > u32::MAX as usize {
            return bad("max_frame_size must be between 1 and u32::MAX");
        }
        if self.send_queue_capacity == 0 || self.control_queue_capacity == 0 || self.max_batch == 0
        {
            return bad("queue capacities and max_batch must be positive");
        }
        if self.keep_alive.is_zero() || self.keep_alive >= self.idle_timeout {
            return bad("keep_alive must be positive and below idle_timeout");
        }
        if self.handshake_timeout.is_zero() {
            return bad("handshake_timeout must be positive");
        }
        if self.reconnect_min.is_zero() || self.reconnect_min > self.reconnect_max {
            return bad("reconnect_min must be positive and at most reconnect_max");
        }
        if self.incarnation.is_empty() || self.incarnation.len() > 255 {
            return bad("incarnation must be 1..=255 bytes");
        }
        if matches!(self.tls, TlsSource::SelfSigned) && !self.insecure_dev_mode {
            return bad("TlsSource::SelfSigned requires insecure_dev_mode = true");
        }
        Ok(())
    }
}

/// Why a QUIC transport could not be created.
#[derive(Debug, thiserror::Error)]
pub enum QuicError {
    /// A configuration value is out of range.
    #[error("invalid QUIC transport config: {0}")]
    InvalidConfig(String),
    /// Certificates could not be loaded or a name is invalid.
    #[error(transparent)]
    Cert(#[from] CertError),
    /// rustls / quinn refused the TLS setup.
    #[error("TLS setup failed: {0}")]
    Tls(String),
    /// The private key is not the key of the certificate.
    #[error(
        "the private key {key} does not belong to the certificate {cert}: give the key issued \
         with that certificate (`troupe certs issue` writes NODE.pem and NODE.key as a pair)"
    )]
    KeyMismatch {
        /// The certificate file.
        cert: PathBuf,
        /// The key file.
        key: PathBuf,
    },
    /// A private key file can be read by other users than its owner.
    #[error(
        "{path} has mode {mode:04o}: a private key must be readable by its owner only \
         (run: chmod 600 {path})"
    )]
    KeyPermissions {
        /// The key file.
        path: PathBuf,
        /// Its permission bits.
        mode: u32,
    },
    /// The UDP socket could not be bound.
    #[error("cannot bind QUIC endpoint on {addr}: {source}")]
    Bind {
        /// The listen address.
        addr: SocketAddr,
        /// The OS error.
        #[source]
        source: std::io::Error,
    },
    /// `bind` was not called inside a tokio runtime.
    #[error("QuicTransport::bind must run inside a tokio runtime (actix System or Arbiter)")]
    NoRuntime,
    /// A peer could not be added at run time ([`QuicTransport::add_peer`]).
    #[error("cannot add peer {name:?}: {reason}")]
    AddPeer {
        /// The peer's name as given.
        name: String,
        /// Why not.
        reason: String,
    },
}

/// Checks a node's TLS files before it starts, so that a mistake stops the
/// node with an error naming the file instead of showing up only as refused
/// connections in its peers' logs:
/// - on unix, the private key `key` has no group or other permission bits
///   (like ssh, a key others can read is refused: [`QuicError::KeyPermissions`]);
/// - the three files parse, and the key belongs to the certificate `cert`;
/// - neither `cert` nor the CA has expired, and `cert` is valid already
///   (a host whose clock is far behind shows up here);
/// - `cert` chains to the CA in `ca` and names `node`.
///
/// [`QuicTransport::bind`] runs only the key check (tests and tools may
/// bind with any other identity); `troupe::runtime::start_node`, and so
/// `troupe node`, runs them all at start-up, and `troupe node` warns through
/// [`CertificateExpiry`] at start-up and then twice a day.
pub fn check_tls_files(node: &str, ca: &Path, cert: &Path, key: &Path) -> Result<(), QuicError> {
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        let meta = std::fs::metadata(key).map_err(|source| CertError::Io {
            action: "reading",
            path: key.to_path_buf(),
            source,
        })?;
        let mode = meta.permissions().mode() & 0o7777;
        if mode & 0o077 != 0 {
            return Err(QuicError::KeyPermissions {
                path: key.to_path_buf(),
                mode,
            });
        }
    }
    let tls = load_tls_files(ca, cert, key)?;
    check_dates(&tls, node, ca, cert, std::time::SystemTime::now())?;
    tls::check_identity(&tls, node).map_err(|e| {
        QuicError::Tls(format!(
            "{} (key {}) cannot be node {node:?}'s identity under the CA {}: {e}",
            cert.display(),
            key.display(),
            ca.display()
        ))
    })
}

/// Loads a node's TLS files ([`crate::certs::load_node_tls`]) and checks
/// that the key belongs to the certificate: [`QuicError::KeyMismatch`], naming
/// both files, rather than rustls' bare "KeyMismatch" from the TLS setup.
pub(crate) fn load_tls_files(ca: &Path, cert: &Path, key: &Path) -> Result<NodeTls, QuicError> {
    let tls = crate::certs::load_node_tls(ca, cert, key)?;
    match tls::keys_match(&tls) {
        Ok(()) => Ok(tls),
        Err(rustls::Error::InconsistentKeys(rustls::InconsistentKeys::KeyMismatch)) => {
            Err(QuicError::KeyMismatch {
                cert: cert.to_path_buf(),
                key: key.to_path_buf(),
            })
        }
        Err(e) => Err(QuicError::Tls(format!(
            "{} (key {}) cannot be used: {e}",
            cert.display(),
            key.display()
        ))),
    }
}

/// How long before its certificate (or the CA) expires a node starts to warn.
pub const RENEW_WARNING: Duration = Duration::from_secs(30 * 86_400);

/// Refuses an expired certificate or CA, and a certificate not valid yet,
/// with what to do about it.
fn check_dates(
    tls: &NodeTls,
    node: &str,
    ca: &Path,
    cert: &Path,
    now: std::time::SystemTime,
) -> Result<(), QuicError> {
    use crate::certs::{format_utc, Validity};
    // With several CAs in the file (a CA change under way), while one of
    // them is valid.
    if let Some(end) = latest_end(std::iter::once(&tls.ca).chain(&tls.also_trusted)) {
        if now > end {
            return Err(QuicError::Tls(format!(
                "the cluster CA {} expired on {}: make a new CA (`troupe certs init`) and issue \
                 every node a certificate from it",
                ca.display(),
                format_utc(end)
            )));
        }
    }
    if let Some(v) = tls.chain.first().and_then(|c| Validity::of_der(c.as_ref())) {
        if now > v.not_after {
            return Err(QuicError::Tls(format!(
                "{} expired on {}: peers refuse it. Renew it where the CA key is \
                 (`troupe certs issue --dir DIR --node {node} --renew`), copy both new files \
                 here ({node}.pem and {node}.key: a renewal makes a new key too) and restart",
                cert.display(),
                format_utc(v.not_after)
            )));
        }
        if now < v.not_before {
            return Err(QuicError::Tls(format!(
                "{} is not valid until {} and this host's clock says {}: is the clock right?",
                cert.display(),
                format_utc(v.not_before),
                format_utc(now)
            )));
        }
    }
    Ok(())
}

/// The latest end of validity among `certs` (`None` if none can be read).
fn latest_end<'a>(
    certs: impl IntoIterator<Item = &'a rustls::pki_types::CertificateDer<'static>>,
) -> Option<std::time::SystemTime> {
    certs
        .into_iter()
        .filter_map(|c| crate::certs::Validity::of_der(c.as_ref()))
        .map(|v| v.not_after)
        .max()
}

/// When the certificates a node *runs with* expire: its own and the
/// cluster CA's, read once, when it loads them. A running node keeps the
/// certificate it started with; a renewed file copied over it counts only
/// from the next start, so a node warned from the file on disk would fall
/// silent while it still presents the old certificate.
#[derive(Debug, Clone)]
pub struct CertificateExpiry {
    node: String,
    ca: PathBuf,
    ca_end: Option<std::time::SystemTime>,
    cert: PathBuf,
    cert_end: Option<std::time::SystemTime>,
}

impl CertificateExpiry {
    /// Reads the expiry of node `node`'s certificate `cert` and of the
    /// cluster CA `ca` (the latest, if the file trusts several during a CA
    /// change; unknown for a file that cannot be read or parsed).
    pub fn read(node: &str, ca: &Path, cert: &Path) -> Self {
        let certs = |path: &Path| crate::certs::load_cert_chain(path).unwrap_or_default();
        Self {
            node: node.to_string(),
            ca: ca.to_path_buf(),
            ca_end: latest_end(&certs(ca)),
            cert: cert.to_path_buf(),
            // The leaf: the first certificate of the chain.
            cert_end: latest_end(certs(cert).first()),
        }
    }

    /// A warning for the operator when the node's certificate or the cluster
    /// CA expires within [`RENEW_WARNING`] of `now` (or has expired): after
    /// that, peers refuse new connections from this node. `None` when both
    /// are good for longer, or their dates are unknown (start-up reports
    /// unreadable files).
    pub fn warning(&self, now: std::time::SystemTime) -> Option<String> {
        use crate::certs::format_utc;
        let node = &self.node;
        let soon = |t: std::time::SystemTime| match t.duration_since(now) {
            Ok(left) if left <= RENEW_WARNING => Some(format!(
                "expires on {} ({})",
                format_utc(t),
                match left.as_secs() / 86_400 {
                    0 => "within a day".to_string(),
                    1 => "in 1 day".to_string(),
                    n => format!("in {n} days"),
                }
            )),
            Ok(_) => None,
            Err(_) => Some(format!("expired on {}", format_utc(t))),
        };
        if let Some(when) = self.ca_end.and_then(soon) {
            return Some(format!(
                "the cluster CA {} {when}: make a new CA and issue every node a certificate from \
                 it before then, or peers will refuse new connections",
                self.ca.display()
            ));
        }
        self.cert_end.and_then(soon).map(|when| {
            format!(
                "certificate {} of node {node:?} {when}: renew it (`troupe certs issue --dir DIR \
                 --node {node} --renew` where the CA key is), copy both new files here \
                 ({node}.pem and {node}.key: a renewal makes a new key too) and restart the \
                 node, or peers will refuse new connections",
                self.cert.display()
            )
        })
    }
}

/// A node's QUIC transport. Dropping it shuts it down (see [`Transport::shutdown`]).
pub struct QuicTransport {
    inner: Arc<engine::Inner>,
}

impl std::fmt::Debug for QuicTransport {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("QuicTransport")
            .field("node", &self.inner.name)
            .field("local_addr", &self.local_addr())
            .finish_non_exhaustive()
    }
}

impl QuicTransport {
    /// Creates the endpoint on `config.listen` and starts accepting; events go to
    /// `inbound`. Must be awaited inside the (long-lived) runtime that will run the
    /// transport.
    pub async fn bind(config: QuicConfig, inbound: InboundSender) -> Result<Self, QuicError> {
        let inner = engine::Inner::start(config, inbound)?;
        Ok(Self { inner })
    }

    /// The bound UDP address (useful with port 0).
    pub fn local_addr(&self) -> SocketAddr {
        self.inner.local_addr
    }

    /// This node's incarnation string.
    pub fn incarnation(&self) -> &str {
        &self.inner.incarnation
    }

    /// Queues a control frame (heartbeats, protocol control) for `to`. Control
    /// frames use their own queue and their own higher-priority stream, so they do
    /// not wait behind data frames; they are ordered among themselves only.
    pub fn send_control(&self, to: &str, frame: Bytes) -> Result<(), TransportError> {
        self.inner.enqueue(to, frame, true)
    }

    /// Like [`Transport::send`], but waits for room in the peer's data queue
    /// instead of failing with `QueueFull` (for bulk producers that prefer to be
    /// slowed down). Waits indefinitely while the peer is unreachable.
    pub async fn send_wait(&self, to: &str, frame: Bytes) -> Result<(), TransportError> {
        self.inner.enqueue_wait(to, frame).await
    }

    /// Names of the peers with a confirmed connection right now, sorted.
    pub fn connected_peers(&self) -> Vec<String> {
        self.inner.connected_peers()
    }

    /// Adds a peer at run time (a member learned from a seed or another
    /// member): frames to `name` can be sent from now on, and a connection
    /// from it is accepted. The connection is made on first send, and its
    /// certificate must name `name` as for a configured peer. Returns
    /// `Ok(true)` if the peer is new, `Ok(false)` if it was known (it keeps
    /// its address: only the node itself moves it, by its hello). Sends to other peers never wait
    /// for this (the peer table is swapped, not locked, on the send path).
    ///
    /// # Errors
    /// [`QuicError::AddPeer`] saying why if `name` is not a valid node
    /// name, is this node, `addr` is of an IP family this node cannot reach,
    /// or the transport is shut down.
    pub fn add_peer(&self, name: &str, addr: SocketAddr) -> Result<bool, QuicError> {
        self.inner.add_peer(name, addr)
    }

    /// Every peer this transport knows (configured, added, or accepted as a
    /// joiner) with the address it dials, sorted by name.
    pub fn peers(&self) -> Vec<(String, SocketAddr)> {
        self.inner.peer_list()
    }

    /// Grows by one whenever a peer is added (see [`QuicTransport::add_peer`];
    /// joiners accepted through [`QuicConfig::accept_joins`] count too):
    /// cheap to poll for "did the peer table change".
    pub fn peer_generation(&self) -> u64 {
        self.inner.peer_generation()
    }

    /// The address this node tells others to dial: its bound address
    /// ([`QuicTransport::local_addr`]); an unspecified IP (`0.0.0.0`) is
    /// replaced by the receiver with the IP the node's connection came from.
    pub fn advertised_addr(&self) -> SocketAddr {
        self.inner.local_addr
    }

    /// Shuts down and waits until the endpoint has closed its connections (the
    /// UDP port can then be bound again).
    pub async fn close(&self) {
        self.inner.shutdown();
        self.inner.endpoint.wait_idle().await;
    }
}

impl Transport for QuicTransport {
    fn local_name(&self) -> &str {
        &self.inner.name
    }

    fn send(&self, to: &str, frame: Bytes) -> Result<(), TransportError> {
        self.inner.enqueue(to, frame, false)
    }

    fn send_control(&self, to: &str, frame: Bytes) -> Result<(), TransportError> {
        self.inner.enqueue(to, frame, true)
    }

    fn send_slice(&self, to: &str, frame: &[u8]) -> Result<(), TransportError> {
        self.inner.enqueue_slice(to, frame, false)
    }

    fn send_control_slice(&self, to: &str, frame: &[u8]) -> Result<(), TransportError> {
        self.inner.enqueue_slice(to, frame, true)
    }

    fn send_wait<'a>(
        &'a self,
        to: &'a str,
        frame: Bytes,
    ) -> std::pin::Pin<Box<dyn std::future::Future<Output = Result<(), TransportError>> + Send + 'a>>
    {
        Box::pin(self.inner.enqueue_wait(to, frame))
    }

    fn shutdown(&self) {
        self.inner.shutdown();
    }
}

impl Drop for QuicTransport {
    fn drop(&mut self) {
        self.inner.shutdown();
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::{Mutex, Once};

    /// Warnings logged by this test binary (some tests check what an
    /// operator would read).
    static LOGS: Mutex<Vec<u8>> = Mutex::new(Vec::new());

    struct Capture;

    impl std::io::Write for Capture {
        fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
            if let Ok(mut logs) = LOGS.lock() {
                logs.extend_from_slice(buf);
            }
            Ok(buf.len())
        }
        fn flush(&mut self) -> std::io::Result<()> {
            Ok(())
        }
    }

    fn capture_warnings() {
        static INIT: Once = Once::new();
        INIT.call_once(|| {
            let _ = tracing_subscriber::fmt()
                .with_max_level(tracing::Level::WARN)
                .with_ansi(false)
                .with_writer(|| Capture)
                .try_init();
        });
    }

    /// A UDP address on loopback that nothing listens at (now).
    fn free_port() -> SocketAddr {
        std::net::UdpSocket::bind("127.0.0.1:0")
            .and_then(|s| s.local_addr())
            .expect("free port")
    }

    /// True if a captured line contains every needle.
    fn logged(needles: &[&str]) -> bool {
        LOGS.lock()
            .map(|logs| {
                String::from_utf8_lossy(&logs)
                    .lines()
                    .any(|l| needles.iter().all(|n| l.contains(n)))
            })
            .unwrap_or(false)
    }

    #[actix_rt::test]
    async fn a_wrong_address_on_the_lower_named_node_does_not_keep_the_pair_apart() {
        capture_warnings();
        let ca = crate::certs::ClusterCa::generate().expect("ca");
        let (a_addr, nowhere) = (free_port(), free_port());
        // node-a has a wrong address for node-b; its dial there stays in flight
        // for the whole test. The lower name refuses a simultaneous dial, but
        // must not refuse node-b's dial from an address it is not dialing.
        let mut a = QuicConfig::new(
            "node-a",
            a_addr,
            TlsSource::InMemory(ca.issue("node-a").expect("a")),
        )
        .with_peer("node-b", nowhere);
        a.idle_timeout = Duration::from_secs(60);
        a.handshake_timeout = Duration::from_secs(60);
        let (a_tx, _a_rx) = tokio::sync::mpsc::channel(1024);
        let a = QuicTransport::bind(a, a_tx).await.expect("bind a");
        a.send("node-b", Bytes::from_static(b"x")).expect("queue");
        let mut b = QuicConfig::new(
            "node-b",
            free_port(),
            TlsSource::InMemory(ca.issue("node-b").expect("b")),
        )
        .with_peer("node-a", a_addr);
        b.reconnect_min = Duration::from_millis(10);
        b.reconnect_max = Duration::from_millis(50);
        let (b_tx, _b_rx) = tokio::sync::mpsc::channel(1024);
        let b = QuicTransport::bind(b, b_tx).await.expect("bind b");
        for i in 0..100u32 {
            let _ = b.send("node-a", Bytes::from(i.to_be_bytes().to_vec()));
            if !b.connected_peers().is_empty() && !a.connected_peers().is_empty() {
                break;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        assert_eq!(b.connected_peers(), vec!["node-a".to_string()]);
        assert_eq!(a.connected_peers(), vec!["node-b".to_string()]);
        assert!(logged(&[
            "while dialing it at another address",
            "node=node-a",
            "peer=node-b",
        ]));
        drop((a, b));
    }

    /// A node that shuts down while dialing a peer that is gone (its
    /// last frames, say a leave announcement, went to a dead peer) must not
    /// report that dial afterwards as a failure: "handshake and hello took
    /// longer than ..." about a peer it no longer talks to is noise that
    /// sends an operator looking for a network problem.
    #[actix_rt::test]
    async fn shutting_down_abandons_a_dial_to_a_dead_peer_without_a_warning() {
        capture_warnings();
        let ca = crate::certs::ClusterCa::generate().expect("ca");
        // Nothing listens at the peer's address: a dial there can only time out.
        let dead = free_port();
        let mut c = QuicConfig::new(
            "node-quitting",
            "127.0.0.1:0".parse().expect("addr"),
            TlsSource::InMemory(ca.issue("node-quitting").expect("cert")),
        )
        .with_peer("node-dead", dead);
        c.handshake_timeout = Duration::from_millis(400);
        let (tx, _rx) = tokio::sync::mpsc::channel(64);
        let t = QuicTransport::bind(c, tx).await.expect("bind");
        t.send("node-dead", Bytes::from_static(b"leaving"))
            .expect("queue");
        tokio::time::sleep(Duration::from_millis(100)).await; // the dial is under way
        t.shutdown();
        // Well past the handshake timeout.
        tokio::time::sleep(Duration::from_millis(1200)).await;
        assert!(
            !logged(&["node=node-quitting"]),
            "a shut-down transport logged about its abandoned dial: {}",
            String::from_utf8_lossy(&LOGS.lock().map(|l| l.clone()).unwrap_or_default())
        );
        drop(t);
    }

    #[actix_rt::test]
    async fn two_processes_with_one_name_are_reported_by_their_peer() {
        capture_warnings();
        let ca = crate::certs::ClusterCa::generate().expect("ca");
        let b_addr = free_port();
        // b knows node-g at some address; incoming connections are accepted
        // by name (certificate + configured peer), from anywhere.
        let (b_tx, _b_rx) = tokio::sync::mpsc::channel(1024);
        let b = QuicTransport::bind(
            QuicConfig::new(
                "node-b",
                b_addr,
                TlsSource::InMemory(ca.issue("node-b").expect("b")),
            )
            .with_peer("node-g", "127.0.0.1:9".parse().expect("addr")),
            b_tx,
        )
        .await
        .expect("bind b");
        // Two running transports both named node-g (each its own incarnation).
        let mut twins = Vec::new();
        for _ in 0..2 {
            let (tx, rx) = tokio::sync::mpsc::channel(1024);
            let mut c = QuicConfig::new(
                "node-g",
                "127.0.0.1:0".parse().expect("addr"),
                TlsSource::InMemory(ca.issue("node-g").expect("g")),
            )
            .with_peer("node-b", b_addr);
            c.reconnect_min = Duration::from_millis(10);
            c.reconnect_max = Duration::from_millis(50);
            twins.push((QuicTransport::bind(c, tx).await.expect("bind twin"), rx));
        }
        let needles = [
            "two running processes claim to be \"node-g\"",
            "node=node-b",
        ];
        for i in 0..200u32 {
            for (t, _) in &twins {
                let _ = t.send("node-b", Bytes::from(i.to_be_bytes().to_vec()));
            }
            if logged(&needles) {
                break;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        assert!(
            logged(&needles),
            "b never reported the two node-g processes"
        );
        b.close().await;
    }

    /// A fresh directory with a cluster CA and certificates for `nodes`.
    fn cert_dir(tag: &str, nodes: &[&str]) -> PathBuf {
        let dir =
            std::env::temp_dir().join(format!("troupe-quic-check-{tag}-{}", uuid::Uuid::new_v4()));
        crate::certs::init(&dir).expect("init");
        for n in nodes {
            crate::certs::issue(&dir, n).expect("issue");
        }
        dir
    }

    fn check(node: &str, ca: &Path, dir: &Path, file: &str) -> Result<(), QuicError> {
        check_tls_files(
            node,
            ca,
            &dir.join(format!("{file}.pem")),
            &dir.join(format!("{file}.key")),
        )
    }

    /// `check` must refuse, saying every one of `words`.
    fn refused(node: &str, ca: &Path, dir: &Path, file: &str, words: &[&str]) {
        let err = check(node, ca, dir, file)
            .expect_err("the start-up check must refuse")
            .to_string();
        for w in words {
            assert!(err.contains(w), "the error does not say {w:?}: {err}");
        }
    }

    #[test]
    fn peer_of_another_ip_family_is_refused_at_start_up() {
        let tls = TlsSource::SelfSigned;
        let v4 = |s: &str| QuicConfig::new("node-a", s.parse().expect("addr"), tls.clone());
        let err = v4("127.0.0.1:7401")
            .with_peer("node-b", "[::1]:7402".parse().expect("addr"))
            .validate()
            .expect_err("IPv6 peer from an IPv4 socket")
            .to_string();
        assert!(
            err.contains("\"node-b\"") && err.contains("[::1]:7402"),
            "{err}"
        );
        let err = v4("[::1]:7401")
            .with_peer("node-b", "127.0.0.1:7402".parse().expect("addr"))
            .validate()
            .expect_err("IPv4 peer from an IPv6-only socket");
        assert!(err.to_string().contains("node-b"), "{err}");
        for (listen, peer) in [
            ("127.0.0.1:7401", "127.0.0.1:7402"),
            ("[::]:7401", "127.0.0.1:7402"),
            ("[::]:7401", "[::1]:7402"),
        ] {
            let mut c = v4(listen).with_peer("node-b", peer.parse().expect("addr"));
            c.insecure_dev_mode = true;
            c.validate().expect(listen);
        }
    }

    /// Writes `node`'s certificate and key into `dir` (made by `cert_dir`),
    /// valid from `from` to `to` seconds relative to now.
    #[cfg(unix)]
    fn write_dated(dir: &Path, node: &str, from: i64, to: i64) {
        use std::io::Write;
        use std::os::unix::fs::OpenOptionsExt;
        let ca = crate::certs::ClusterCa::load(dir).expect("ca");
        let now = time::OffsetDateTime::now_utc()
            .replace_nanosecond(0)
            .expect("ns");
        let (cert, key) = ca
            .issue_pem_between(
                node,
                now + time::Duration::seconds(from),
                now + time::Duration::seconds(to),
            )
            .expect("issue");
        std::fs::write(dir.join(format!("{node}.pem")), cert).expect("cert");
        let mut f = std::fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(0o600)
            .open(dir.join(format!("{node}.key")))
            .expect("key");
        f.write_all(key.as_bytes()).expect("key");
    }

    const DAY: i64 = 86_400;

    #[cfg(unix)]
    #[test]
    fn an_expired_certificate_is_refused_at_start_up_saying_how_to_renew() {
        let dir = cert_dir("expired", &[]);
        write_dated(&dir, "node-a", -30 * DAY, -DAY);
        let words = ["node-a.pem", "expired on", "--renew", "node-a.key"];
        refused("node-a", &dir.join("ca.pem"), &dir, "node-a", &words);
        std::fs::remove_dir_all(&dir).ok();
    }

    #[cfg(unix)]
    #[test]
    fn a_certificate_from_the_future_points_at_the_clock() {
        let dir = cert_dir("future", &[]);
        write_dated(&dir, "node-a", DAY, 30 * DAY);
        let words = ["not valid until", "clock"];
        refused("node-a", &dir.join("ca.pem"), &dir, "node-a", &words);
        std::fs::remove_dir_all(&dir).ok();
    }

    #[cfg(unix)]
    #[test]
    fn expiry_is_warned_about_from_thirty_days_before() {
        let dir = cert_dir("warn", &["node-a"]);
        write_dated(&dir, "node-b", -DAY, 10 * DAY);
        write_dated(&dir, "node-c", -30 * DAY, -DAY);
        let (ca, now) = (dir.join("ca.pem"), std::time::SystemTime::now());
        let warn =
            |n: &str| CertificateExpiry::read(n, &ca, &dir.join(format!("{n}.pem"))).warning(now);
        assert_eq!(warn("node-a"), None, "a year left");
        let soon = warn("node-b").expect("10 days left");
        assert!(
            soon.contains("node-b.pem")
                && soon.contains("in 9 days")
                && soon.contains("--renew")
                && soon.contains("node-b.key"),
            "{soon}"
        );
        let gone = warn("node-c").expect("expired");
        assert!(gone.contains("expired on"), "{gone}");
        // A running node is warned about the certificate it loaded, even
        // once a renewed one is on disk (it uses that from its next start).
        let running = CertificateExpiry::read("node-b", &ca, &dir.join("node-b.pem"));
        std::fs::remove_file(dir.join("node-b.pem")).expect("rm");
        std::fs::remove_file(dir.join("node-b.key")).expect("rm");
        write_dated(&dir, "node-b", -DAY, 365 * DAY);
        assert_eq!(warn("node-b"), None, "renewed on disk");
        let still = running.warning(now).expect("the loaded one still expires");
        assert!(still.contains("in 9 days"), "{still}");
        // And 30 days before a year-long certificate ends, it is due.
        let later = now + Duration::from_secs(340 * DAY as u64);
        assert!(
            CertificateExpiry::read("node-a", &ca, &dir.join("node-a.pem"))
                .warning(later)
                .is_some()
        );
        std::fs::remove_dir_all(&dir).ok();
    }

    #[test]
    fn a_ca_file_with_two_cas_accepts_a_certificate_from_either() {
        let (old, new) = (
            cert_dir("old-ca", &["node-a"]),
            cert_dir("new-ca", &["node-b"]),
        );
        let bundle = new.join("both.pem");
        let text = |d: &Path| std::fs::read_to_string(d.join("ca.pem")).expect("ca.pem");
        std::fs::write(&bundle, text(&new) + &text(&old)).expect("bundle");
        check("node-a", &bundle, &old, "node-a").expect("old-CA certificate, both trusted");
        check("node-b", &bundle, &new, "node-b").expect("new-CA certificate, both trusted");
        assert!(check("node-a", &new.join("ca.pem"), &old, "node-a").is_err());
        let tls =
            crate::certs::load_node_tls(&bundle, &old.join("node-a.pem"), &old.join("node-a.key"))
                .expect("load");
        assert_eq!(tls.also_trusted.len(), 1);
        std::fs::remove_dir_all(&old).ok();
        std::fs::remove_dir_all(&new).ok();
    }

    #[test]
    fn issued_files_pass_the_start_up_check() {
        let dir = cert_dir("ok", &["node-a"]);
        check("node-a", &dir.join("ca.pem"), &dir, "node-a").expect("good files");
        std::fs::remove_dir_all(&dir).ok();
    }

    #[test]
    fn certificate_for_another_name_is_refused_at_start_up() {
        let dir = cert_dir("name", &["node-c"]);
        let words = ["node-c.pem", "\"node-b\"", "node-c"];
        refused("node-b", &dir.join("ca.pem"), &dir, "node-c", &words);
        std::fs::remove_dir_all(&dir).ok();
    }

    #[test]
    fn node_names_in_certificates_are_case_sensitive() {
        let dir = cert_dir("case", &["node-a", "Node-B"]);
        let ca = dir.join("ca.pem");
        // TLS alone would accept node-a's certificate for NODE-A.
        refused("NODE-A", &ca, &dir, "node-a", &["case-sensitive"]);
        check("Node-B", &ca, &dir, "Node-B").expect("exact name, mixed case");
        assert!(check("node-b", &ca, &dir, "Node-B").is_err());
        std::fs::remove_dir_all(&dir).ok();
    }

    #[test]
    fn certificate_from_another_ca_is_refused_at_start_up() {
        let dir = cert_dir("ca", &["node-a"]);
        let other = cert_dir("other-ca", &[]);
        let words = ["UnknownIssuer", "node-a.pem"];
        refused("node-a", &other.join("ca.pem"), &dir, "node-a", &words);
        std::fs::remove_dir_all(&dir).ok();
        std::fs::remove_dir_all(&other).ok();
    }

    #[test]
    fn key_of_another_certificate_is_refused_naming_both_files() {
        let dir = cert_dir("pair", &["node-a", "node-b"]);
        let err = check_tls_files(
            "node-a",
            &dir.join("ca.pem"),
            &dir.join("node-a.pem"),
            &dir.join("node-b.key"),
        )
        .expect_err("mismatched key")
        .to_string();
        let says = |err: &str| {
            err.contains("the private key")
                && err.contains("node-b.key does not belong to the certificate")
                && err.contains("node-a.pem")
        };
        assert!(says(&err), "{err}");
        // Binding with those files says the same, not rustls' bare "KeyMismatch".
        let config = QuicConfig::new(
            "node-a",
            "127.0.0.1:0".parse().expect("addr"),
            TlsSource::Files {
                ca: dir.join("ca.pem"),
                cert: dir.join("node-a.pem"),
                key: dir.join("node-b.key"),
            },
        );
        let (tx, _rx) = tokio::sync::mpsc::channel(1);
        let bound = actix_rt::System::new().block_on(QuicTransport::bind(config, tx));
        let err = bound.expect_err("mismatched key").to_string();
        assert!(says(&err), "{err}");
        std::fs::remove_dir_all(&dir).ok();
    }

    #[cfg(unix)]
    #[test]
    fn key_readable_by_others_is_refused() {
        use std::os::unix::fs::PermissionsExt;
        let dir = cert_dir("mode", &["node-a"]);
        let key = dir.join("node-a.key");
        for mode in [0o644, 0o640, 0o604] {
            std::fs::set_permissions(&key, std::fs::Permissions::from_mode(mode)).expect("chmod");
            let words = ["node-a.key", "chmod 600"];
            refused("node-a", &dir.join("ca.pem"), &dir, "node-a", &words);
        }
        std::fs::set_permissions(&key, std::fs::Permissions::from_mode(0o400)).expect("chmod");
        check("node-a", &dir.join("ca.pem"), &dir, "node-a").expect("0400 is owner-only");
        std::fs::remove_dir_all(&dir).ok();
    }
}
