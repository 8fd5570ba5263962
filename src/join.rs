//! Dynamic membership through seed nodes (config key `seeds`).
//!
//! # What happens
//! - **Transport**: a node with `seeds` (even `seeds = []`) runs its QUIC
//!   transport with [`QuicConfig::accept_joins`](troupe_transports::quic::QuicConfig::accept_joins):
//!   it dials every seed address (the seed's certificate must chain to the
//!   cluster CA and name the node its hello claims), and accepts a node it
//!   does not know when that node's certificate chains to the cluster CA and
//!   names it -- the CA decides who may join. Its hello (version 2) says
//!   where it listens, so the accepting node can dial it back. Without
//!   `seeds`, only `[[peers]]` are accepted, as before.
//! - **Announcements**: every such node runs the actor [`JOIN_ACTOR`]. When
//!   its peer table grows (a seed answered, a joiner was accepted, a member
//!   was announced), it sends the members it knows (name and address, itself
//!   included) to every peer in one [`Announce`], as control traffic. A node
//!   receiving an announcement adds the members it did not know to its
//!   transport ([`QuicTransport::add_peer`]) and to its failure detector
//!   ([`FailureDetectorHandle::add_member`]), which then sees them `Up` on
//!   first contact; if the sender's list lacks members it knows, it answers
//!   with its own list (so a restarted node that knows only its seed learns
//!   everyone). Every two seconds each node also sends its list to one peer
//!   in turn, which repairs a lost announcement. So a joiner that dials one
//!   seed is seen `Up` by every member, and sees every member `Up`.
//! - **Leaving and rejoining**: a node that shuts down announces `Left`
//!   through its failure detector ([`crate::runtime::RunningNode::shutdown`]);
//!   one that dies is detected `Down`. When it comes back (a new
//!   incarnation) through its seeds, everyone admits the new life on first
//!   contact and shows it `Up` again. Peers are never removed from the
//!   transport: a name that left may come back.
//!
//! # Limits of this first version
//! - Only the failure detector and the transport learn new members.
//!   Protocol families (locks, elections, broadcast, commit, Raft) keep the
//!   member lists they were started with.
//! - An announcement is trusted for names and addresses (it comes from an
//!   authenticated member), but a connection to an announced node is only
//!   made if that node's certificate chains to the cluster CA and names it.
//! - An address that another member announced does not replace one this
//!   node already has for that name; a node's own hello does.
//! - Every node of a cluster that uses seeds should have `seeds` (an empty
//!   list will do): a node without it runs no [`JOIN_ACTOR`], so the
//!   announcements its peers send it are counted and logged as
//!   undeliverable, and it refuses joiners.
//! - In insecure dev mode there are no certificates: any node that reaches
//!   a seed may join, under any name.
//! - Nodes started from a config ([`crate::runtime`]) run it on QUIC; on
//!   the simulated network, start it yourself with a [`SimPeers`] table
//!   (see `tests/join_seeds.rs`).
//!
//! # Example config lines
//! ```toml
//! # node-a.toml, the first node
//! seeds = []
//! # node-c.toml, joining through node-a
//! seeds = ["10.0.0.1:7400"]
//! ```

use std::collections::BTreeSet;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use serde::{Deserialize, Serialize};
use tracing::{debug, info, warn};
use troupe_framework::actix::{Actor, AsyncContext, Context, Handler};
use troupe_framework::supervision::ActorSpec;
use troupe_framework::{remote_message, Node, Sender};
use troupe_transports::quic::QuicTransport;

use crate::failure_detector::FailureDetectorHandle;
use crate::Error;

/// The actor name of the join protocol on every node configured with seeds.
pub const JOIN_ACTOR: &str = "troupe.join";

/// How often a node checks whether its peer table grew.
const CHECK_EVERY: Duration = Duration::from_millis(100);
/// How often a node sends its member list to one peer (in turn) anyway.
const RESYNC_EVERY: Duration = Duration::from_secs(2);
/// Most members accepted from one announcement.
pub const MAX_ANNOUNCED: usize = 4096;

/// One member in an [`Announce`]: its node name and where it listens.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct AnnouncedMember {
    /// Node name (the SAN of its certificate).
    pub name: String,
    /// `ip:port` of its QUIC listener. An unspecified IP (`0.0.0.0`) is
    /// allowed for the sender's own entry: the receiver then uses the IP it
    /// knows the sender at.
    pub addr: String,
}

/// The members a node knows, itself included: sent to the [`JOIN_ACTOR`]
/// of its peers when its peer table grows, in answer to a list lacking
/// members, and periodically to one peer.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Announce {
    /// The members, the sender first.
    pub members: Vec<AnnouncedMember>,
}
remote_message!(Announce, "troupe.join.announce", ());

/// Why an announced member was not taken.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum AnnounceError {
    /// The address is not `ip:port`.
    #[error("member {name:?} has address {addr:?}, which is not ip:port")]
    BadAddress {
        /// The member's name as announced.
        name: String,
        /// The address as announced.
        addr: String,
    },
    /// An unspecified IP (`0.0.0.0`) for a member other than the sender.
    #[error(
        "member {name:?} has address {addr:?}: an unspecified IP is only allowed for the \
         sender's own entry"
    )]
    Unspecified {
        /// The member's name as announced.
        name: String,
        /// The address as announced.
        addr: String,
    },
    /// The transport refused the member (a bad name, this node, another IP family).
    #[error("{0}")]
    Refused(String),
}

/// The peer table the join protocol reads and grows: the QUIC transport's
/// ([`QuicTransport`]), or [`SimPeers`] on the simulated network.
pub trait PeerTable: Send + Sync + 'static {
    /// Adds `name` at `addr`; `Ok(true)` if it is new, `Ok(false)` if known
    /// (which keeps its address). `Err` says why not.
    fn add_peer(&self, name: &str, addr: SocketAddr) -> Result<bool, String>;
    /// Every known peer and its address, sorted by name.
    fn peers(&self) -> Vec<(String, SocketAddr)>;
    /// Grows by one whenever a peer is added, by anyone.
    fn peer_generation(&self) -> u64;
    /// The address this node tells others to dial.
    fn advertised_addr(&self) -> SocketAddr;
}

impl PeerTable for QuicTransport {
    fn add_peer(&self, name: &str, addr: SocketAddr) -> Result<bool, String> {
        QuicTransport::add_peer(self, name, addr).map_err(|e| e.to_string())
    }
    fn peers(&self) -> Vec<(String, SocketAddr)> {
        QuicTransport::peers(self)
    }
    fn peer_generation(&self) -> u64 {
        QuicTransport::peer_generation(self)
    }
    fn advertised_addr(&self) -> SocketAddr {
        QuicTransport::advertised_addr(self)
    }
}

/// A [`PeerTable`] for a node on the simulated network, where every node
/// reaches every other by name: it holds names (addresses are the
/// placeholder [`SimPeers::ADDR`]), starting from the seed *names*. On the
/// simulated network a seed learns a joiner from the joiner's first
/// [`Announce`] (on QUIC, from its hello).
#[derive(Debug)]
pub struct SimPeers {
    me: String,
    peers: std::sync::Mutex<std::collections::BTreeMap<String, SocketAddr>>,
    generation: std::sync::atomic::AtomicU64,
}

impl SimPeers {
    /// The placeholder address of every simulated node.
    pub const ADDR: SocketAddr = SocketAddr::new(
        std::net::IpAddr::V4(std::net::Ipv4Addr::new(192, 0, 2, 1)),
        7400,
    );

    /// The table of node `me`, knowing `seeds` (node names).
    pub fn new(me: &str, seeds: &[&str]) -> Arc<Self> {
        Arc::new(SimPeers {
            me: me.to_string(),
            peers: std::sync::Mutex::new(
                seeds
                    .iter()
                    .filter(|s| **s != me)
                    .map(|s| (s.to_string(), Self::ADDR))
                    .collect(),
            ),
            generation: std::sync::atomic::AtomicU64::new(0),
        })
    }
}

impl PeerTable for SimPeers {
    fn add_peer(&self, name: &str, addr: SocketAddr) -> Result<bool, String> {
        troupe_framework::ids::validate_name(name).map_err(|e| e.to_string())?;
        if name == self.me {
            return Err(format!("cannot add peer {name:?}: that is this node"));
        }
        let mut peers = self.peers.lock().unwrap_or_else(|e| e.into_inner());
        if peers.contains_key(name) {
            return Ok(false);
        }
        peers.insert(name.to_string(), addr);
        self.generation
            .fetch_add(1, std::sync::atomic::Ordering::AcqRel);
        Ok(true)
    }
    fn peers(&self) -> Vec<(String, SocketAddr)> {
        let peers = self.peers.lock().unwrap_or_else(|e| e.into_inner());
        peers.iter().map(|(n, a)| (n.clone(), *a)).collect()
    }
    fn peer_generation(&self) -> u64 {
        self.generation.load(std::sync::atomic::Ordering::Acquire)
    }
    fn advertised_addr(&self) -> SocketAddr {
        Self::ADDR
    }
}

/// Start the join protocol on `node` (a node configured with `seeds`):
/// spawns the [`JOIN_ACTOR`], supervised under the node, growing `peers`
/// (the node's QUIC transport, or a [`SimPeers`]) and `failure_detector`.
pub async fn start_join(
    node: &Node,
    peers: Arc<dyn PeerTable>,
    failure_detector: FailureDetectorHandle,
) -> Result<(), Error> {
    let n = node.clone();
    let spec = ActorSpec::new(JOIN_ACTOR, move || {
        Join::new(n.clone(), peers.clone(), failure_detector.clone())
    })
    .handles_from::<Announce>();
    node.spawn(spec).await?;
    Ok(())
}

/// The join actor: see the module docs.
struct Join {
    node: Node,
    transport: Arc<dyn PeerTable>,
    fd: FailureDetectorHandle,
    /// The transport's peer generation last acted on (`None`: not yet).
    seen: Option<u64>,
    /// Names handed to the failure detector.
    in_fd: BTreeSet<String>,
    /// Round-robin position of the periodic resync.
    next_resync: usize,
    /// Announced entries already refused with a warning (said again at
    /// debug level only: the same list comes back with every resync).
    refused: BTreeSet<(String, String)>,
}

impl Join {
    fn new(node: Node, transport: Arc<dyn PeerTable>, fd: FailureDetectorHandle) -> Self {
        Join {
            node,
            transport,
            fd,
            seen: None,
            in_fd: BTreeSet::new(),
            next_resync: 0,
            refused: BTreeSet::new(),
        }
    }

    fn me(&self) -> &str {
        self.node.name()
    }

    /// The members this node knows, itself first.
    fn members(&self) -> Vec<AnnouncedMember> {
        let me = AnnouncedMember {
            name: self.me().to_string(),
            addr: self.transport.advertised_addr().to_string(),
        };
        std::iter::once(me)
            .chain(
                self.transport
                    .peers()
                    .into_iter()
                    .map(|(name, addr)| AnnouncedMember {
                        name,
                        addr: addr.to_string(),
                    }),
            )
            .collect()
    }

    fn send(&self, to: &str, members: Vec<AnnouncedMember>) {
        let path = format!("{to}/{JOIN_ACTOR}");
        match self.node.lookup::<Announce>(&path) {
            Ok(r) => {
                if let Err(e) = r.control().tell(Announce { members }) {
                    debug!(node = %self.me(), peer = %to, "member announcement not sent: {e}");
                }
            }
            Err(e) => warn!(node = %self.me(), peer = %to, "cannot address {path:?}: {e}"),
        }
    }

    /// Hands peers the failure detector does not watch yet to it.
    fn sync_detector(&mut self) {
        for (name, _) in self.transport.peers() {
            if self.in_fd.insert(name.clone()) {
                let fd = self.fd.clone();
                let me = self.me().to_string();
                troupe_framework::actix::spawn(async move {
                    match fd.add_member(&name).await {
                        Ok(true) => info!(node = %me, member = %name, "watching new member"),
                        Ok(false) => {}
                        Err(e) => {
                            warn!(node = %me, member = %name, "failure detector did not take new member: {e}")
                        }
                    }
                });
            }
        }
    }

    /// If the peer table grew: watch the new peers and tell everyone.
    fn check(&mut self) {
        let generation = self.transport.peer_generation();
        if self.seen == Some(generation) {
            return;
        }
        self.seen = Some(generation);
        self.sync_detector();
        let members = self.members();
        for (peer, _) in self.transport.peers() {
            self.send(&peer, members.clone());
        }
    }

    fn resync(&mut self) {
        let peers = self.transport.peers();
        if peers.is_empty() {
            return;
        }
        let (peer, _) = &peers[self.next_resync % peers.len()];
        self.next_resync = self.next_resync.wrapping_add(1);
        self.send(peer, self.members());
    }

    /// Takes one announced member; `Ok(true)` if it was new.
    fn take(
        &self,
        from: &str,
        m: &AnnouncedMember,
        sender_at: Option<SocketAddr>,
    ) -> Result<bool, AnnounceError> {
        let bad = || AnnounceError::BadAddress {
            name: m.name.clone(),
            addr: m.addr.clone(),
        };
        let mut addr: SocketAddr = m.addr.parse().map_err(|_| bad())?;
        if addr.ip().is_unspecified() {
            // Only the sender may say "where you reach me" this way.
            match sender_at.filter(|_| m.name == from) {
                Some(at) => addr = SocketAddr::new(at.ip(), addr.port()),
                None => {
                    return Err(AnnounceError::Unspecified {
                        name: m.name.clone(),
                        addr: m.addr.clone(),
                    })
                }
            }
        }
        self.transport
            .add_peer(&m.name, addr)
            .map_err(AnnounceError::Refused)
    }
}

impl Actor for Join {
    type Context = Context<Self>;

    fn started(&mut self, ctx: &mut Context<Self>) {
        self.check();
        ctx.run_interval(CHECK_EVERY, |me, _| me.check());
        ctx.run_interval(RESYNC_EVERY, |me, _| me.resync());
    }
}

impl Handler<Sender<Announce>> for Join {
    type Result = ();

    fn handle(&mut self, msg: Sender<Announce>, _: &mut Context<Self>) {
        let from = msg.from.name.clone();
        let members = msg.msg.members;
        if members.len() > MAX_ANNOUNCED {
            warn!(
                node = %self.me(), %from,
                "malformed member announcement: {} members (at most {MAX_ANNOUNCED}); ignored",
                members.len()
            );
            return;
        }
        let sender_at = self
            .transport
            .peers()
            .into_iter()
            .find(|(n, _)| *n == from)
            .map(|(_, a)| a);
        let mut heard = BTreeSet::new();
        for m in &members {
            heard.insert(m.name.clone());
            if m.name == self.me() {
                continue;
            }
            match self.take(&from, m, sender_at) {
                Ok(true) => {
                    info!(node = %self.me(), %from, member = %m.name, addr = %m.addr, "learned member")
                }
                Ok(false) => {}
                Err(e) => {
                    if self.refused.len() < MAX_ANNOUNCED
                        && self.refused.insert((m.name.clone(), m.addr.clone()))
                    {
                        warn!(node = %self.me(), %from, "member announcement: {e}; member ignored");
                    } else {
                        debug!(node = %self.me(), %from, "member announcement: {e}; member ignored");
                    }
                }
            }
        }
        // Added peers are watched and announced by the next check; a sender
        // that lacks members we know hears our list now.
        self.check();
        let lacking = std::iter::once(self.me().to_string())
            .chain(self.transport.peers().into_iter().map(|(n, _)| n))
            .any(|n| !heard.contains(&n));
        if lacking {
            self.send(&from, self.members());
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn announce_round_trips_through_msgpack() {
        let a = Announce {
            members: vec![AnnouncedMember {
                name: "node-a".into(),
                addr: "127.0.0.1:7000".into(),
            }],
        };
        let bytes = rmp_serde::to_vec(&a).expect("encode");
        let back: Announce = rmp_serde::from_slice(&bytes).expect("decode");
        assert_eq!(back, a);
    }
}
