//! Growing the peer table at run time, and dialing seeds.
//!
//! A peer is added by [`Inner::add_peer`] (a member announced by someone
//! else), by an accepted joiner (see `inbound`), or by a seed answering
//! ([`Inner::seed_dialer`]). The table is an [`ArcSwap`](arc_swap::ArcSwap)
//! of the whole map: the send path loads it without a lock; additions copy the
//! map under `peers_insert` (rare, a few per membership change). Peers are
//! never removed: a node that left may come back under its name.
//!
//! A seed is an address whose node name is not known: the dial uses the seed
//! client config (the certificate must chain to the cluster CA), the hello
//! says who answered, the [`PeerNameChecker`](super::super::tls) then checks
//! that the certificate names exactly that node, and the connection becomes
//! that peer's current one. Each seed is dialed until it answered once, or
//! until a peer at its address is known (a member announced it); the peer's
//! own connector takes over from there.

use std::net::SocketAddr;
use std::sync::atomic::Ordering;
use std::sync::Arc;

use rand::SeedableRng;
use rand_chacha::ChaCha8Rng;
use tracing::{debug, info, warn};

use super::super::wire;
use super::links::Registration;
use super::outbound::{seed_for, DialError};
use super::{close, Inner, Peer, PeerMap};
use crate::quic::QuicError;

/// The TLS server name used when dialing a seed (its real name is unknown;
/// the seed verifier ignores it).
const SEED_SERVER_NAME: &str = "troupe-seed";

/// `addr` with an IPv4-mapped IPv6 address written as IPv4.
pub(super) fn canonical(addr: SocketAddr) -> SocketAddr {
    SocketAddr::new(addr.ip().to_canonical(), addr.port())
}

impl Inner {
    /// See [`QuicTransport::add_peer`](crate::quic::QuicTransport::add_peer).
    pub(crate) fn add_peer(
        self: &Arc<Self>,
        name: &str,
        addr: SocketAddr,
    ) -> Result<bool, QuicError> {
        self.get_or_add(name, addr).map(|(_, new)| new)
    }

    /// The peer named `name`, added at `addr` if unknown (`true`: added).
    /// A known peer keeps its address: only the node itself (its hello)
    /// moves it, never a third party's announcement.
    pub(super) fn get_or_add(
        self: &Arc<Self>,
        name: &str,
        addr: SocketAddr,
    ) -> Result<(Arc<Peer>, bool), QuicError> {
        let refuse = |reason: String| QuicError::AddPeer {
            name: name.to_string(),
            reason,
        };
        if let Some(peer) = self.peers.load().get(name) {
            return Ok((peer.clone(), false));
        }
        crate::certs::validate_node_name(name).map_err(|e| refuse(e.to_string()))?;
        if name == self.name {
            return Err(refuse("that is this node".into()));
        }
        let v6_only = self.local_addr.is_ipv6() && !self.local_addr.ip().is_unspecified();
        if (self.local_addr.is_ipv4() && addr.is_ipv6()) || (v6_only && addr.is_ipv4()) {
            return Err(refuse(format!(
                "{addr} cannot be reached from this node's address {} (another IP family)",
                self.local_addr
            )));
        }
        let peer = {
            let _adding = self.peers_insert.lock().unwrap_or_else(|e| e.into_inner());
            if self.is_shut_down() {
                return Err(refuse("the transport is shut down".into()));
            }
            let current = self.peers.load();
            if let Some(peer) = current.get(name) {
                return Ok((peer.clone(), false)); // added meanwhile
            }
            let peer = Arc::new(Peer::new(name, addr, &self.cfg));
            let mut next: PeerMap = (**current).clone();
            next.insert(name.to_string(), peer.clone());
            self.peers.store(Arc::new(next));
            self.peer_generation.fetch_add(1, Ordering::AcqRel);
            peer
        };
        tokio::spawn(self.clone().writer(peer.clone(), wire::STREAM_DATA));
        tokio::spawn(self.clone().writer(peer.clone(), wire::STREAM_CONTROL));
        tokio::spawn(self.clone().connector(peer.clone()));
        info!(node = %self.name, peer = %name, %addr, "peer added");
        Ok((peer, true))
    }

    /// Every known peer and its address, sorted by name.
    pub(crate) fn peer_list(&self) -> Vec<(String, SocketAddr)> {
        let mut v: Vec<(String, SocketAddr)> = self
            .peers
            .load()
            .values()
            .map(|p| (p.name.clone(), p.addr()))
            .collect();
        v.sort();
        v
    }

    /// Bumped on every added peer.
    pub(crate) fn peer_generation(&self) -> u64 {
        self.peer_generation.load(Ordering::Acquire)
    }

    /// True if `seed` is (almost certainly) this node's own address.
    fn is_own_address(&self, seed: SocketAddr) -> bool {
        let (seed, me) = (canonical(seed), canonical(self.local_addr));
        seed == me
            || (seed.port() == me.port()
                && me.ip().is_unspecified()
                && (seed.ip().is_loopback() || seed.ip().is_unspecified()))
    }

    /// Dials `seed` until it answered once (or shutdown).
    pub(super) async fn seed_dialer(self: Arc<Self>, seed: SocketAddr) {
        if self.is_own_address(seed) {
            debug!(node = %self.name, %seed, "skipping seed: it is this node's own address");
            return;
        }
        let stop = Self::shut_down(self.shutdown_tx.subscribe());
        tokio::pin!(stop);
        let mut rng = ChaCha8Rng::seed_from_u64(seed_for(&self.incarnation, &seed.to_string()));
        let mut attempt: u32 = 0;
        loop {
            // Known by now under its name (announced by a member): the peer's
            // own connector reaches it from here on.
            let seed_c = canonical(seed);
            if let Some((name, _)) = self
                .peer_list()
                .into_iter()
                .find(|(_, a)| canonical(*a) == seed_c)
            {
                debug!(node = %self.name, %seed, peer = %name, "seed is a known peer; not dialing it as a seed");
                return;
            }
            let result = tokio::select! {
                r = self.dial_seed(seed) => r,
                _ = &mut stop => return,
            };
            if self.is_shut_down() {
                return;
            }
            match result {
                Ok(name) => {
                    info!(node = %self.name, %seed, peer = %name, "joined through seed");
                    return;
                }
                // The seed already holds a connection with us (it dialed us).
                Err(DialError::Duplicate) => {
                    debug!(node = %self.name, %seed, "seed kept its own connection");
                    return;
                }
                Err(DialError::Failed(e)) if attempt < 3 || attempt.is_multiple_of(10) => {
                    warn!(node = %self.name, %seed, attempt, "joining through seed failed: {e}")
                }
                Err(DialError::Failed(e)) => {
                    debug!(node = %self.name, %seed, attempt, "joining through seed failed: {e}")
                }
            }
            let delay = super::outbound::reconnect_delay(&self.cfg, attempt, &mut rng);
            attempt = attempt.saturating_add(1);
            tokio::select! {
                _ = tokio::time::sleep(delay) => {}
                _ = &mut stop => return,
            }
        }
    }

    /// One dial of a seed: TLS (chain to the cluster CA), hello exchange,
    /// exact name check, then the connection becomes the named peer's.
    async fn dial_seed(self: &Arc<Self>, seed: SocketAddr) -> Result<String, DialError> {
        let connecting = self
            .endpoint
            .connect_with(self.seed_client_config.clone(), seed, SEED_SERVER_NAME)
            .map_err(|e| format!("cannot start connection: {e}"))?;
        let deadline = self.cfg.handshake_timeout;
        let handshake = async {
            let conn = connecting
                .await
                .map_err(|e| format!("TLS handshake failed: {e}"))?;
            let (mut send, theirs) = self.exchange_hello(&conn, "seed").await?;
            if theirs.name == self.name {
                close(&conn, wire::CLOSE_REFUSED, "dialed myself");
                return Err(format!("seed {seed} is this node itself").into());
            }
            if let Some(checker) = &self.checker {
                if let Err(e) = checker.check(&conn, &theirs.name) {
                    close(&conn, wire::CLOSE_REFUSED, "identity mismatch");
                    return Err(format!("seed says it is {:?}: {e}", theirs.name).into());
                }
            }
            let _ = send.finish();
            Ok::<_, DialError>((conn, theirs))
        };
        let (conn, theirs) = tokio::time::timeout(deadline, handshake)
            .await
            .map_err(|_| format!("handshake and hello took longer than {deadline:?}"))??;
        let (peer, _) = match self.get_or_add(&theirs.name, seed) {
            Ok(p) => p,
            Err(e) => {
                close(&conn, wire::CLOSE_REFUSED, "cannot add peer");
                return Err(e.to_string().into());
            }
        };
        match self.register(&peer, conn, true, theirs.incarnation).await {
            Ok(()) => Ok(theirs.name),
            Err(Registration::Duplicate) => Err(DialError::Duplicate),
            Err(Registration::ShuttingDown) => Err("transport is shutting down".to_string().into()),
        }
    }
}
