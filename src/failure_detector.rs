//! The node's failure detector: whichever one the config names, feeding the
//! node's membership view.
//!
//! The detector core ([`AnyDetector`]) runs in a [`Driver`](troupe_protocols::driver::Driver) actor named
//! `"fd"`, supervised under the node like every other actor; its messages
//! travel to the `"fd"` actor of the peers as *control* traffic (QUIC's
//! control stream), so heartbeats never wait behind application payloads. Members are tracked by
//! [`NodeId`] (name + incarnation) so a restarted node is told apart from its
//! previous life; the node's membership view, which protocols consume, is by
//! node *name*: a new incarnation replacing an old one shows as the name
//! staying (or coming back) `Up`, not as a spurious `Down`.
//!
//! Configured peers are known before we have heard from them, by name only:
//! they start as ids with a nil incarnation and are replaced by the real id
//! on first contact (heartbeat detectors), or serve as join seeds (SWIM).
//! Every detector reports each of them `Joining` from the start ("configured,
//! not heard from yet"), `Up` on first contact, and `Down` if none comes
//! within its first-contact deadline (see `troupe_protocols::fd`), so the
//! node's view starts the same whichever detector runs.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use troupe_framework::membership::{FailureDetector as _, MemberEvent};
use troupe_framework::sansio::Protocol;
use troupe_framework::{Node, NodeId};
use troupe_protocols::driver::{spawn_driver, DriverHandle, DriverSpec, EventHook, OutputsOf};
use troupe_protocols::fd::{AnyDetector, FailureDetectorConfig, FdMessage, FdTimer};

use crate::Error;

/// The actor name of the failure detector on every node.
pub const FD_ACTOR: &str = "fd";

/// [`AnyDetector`] plus the configured peers, so that a restarted detector
/// actor starts watching them again by itself.
pub struct NodeDetector {
    inner: AnyDetector<NodeId>,
    peers: Vec<NodeId>,
}

impl NodeDetector {
    /// Build the configured detector for `me`, watching `peers` (names).
    pub fn new(
        me: NodeId,
        config: &FailureDetectorConfig,
        peers: &[String],
    ) -> Result<Self, Error> {
        let peers: Vec<NodeId> = peers
            .iter()
            .map(|p| NodeId::with_incarnation(p.clone(), 0))
            .collect();
        let seed = me.incarnation.as_u128() as u64;
        let seeds = match config {
            FailureDetectorConfig::Swim(_) => peers.clone(),
            _ => Vec::new(),
        };
        let inner = AnyDetector::from_config(me, config, seeds, seed)
            .map_err(|e| Error::Config(e.to_string()))?;
        let peers = match config {
            FailureDetectorConfig::Swim(_) => Vec::new(),
            _ => peers,
        };
        Ok(Self { inner, peers })
    }

    /// The wrapped detector.
    pub fn inner(&self) -> &AnyDetector<NodeId> {
        &self.inner
    }
}

type Out = OutputsOf<NodeDetector>;

impl Protocol for NodeDetector {
    type Id = NodeId;
    type Msg = FdMessage<NodeId>;
    type Timer = FdTimer<NodeId>;
    type Event = MemberEvent<NodeId>;

    fn on_start(&mut self, now: Duration, out: &mut Out) {
        self.inner.on_start(now, out);
        for p in self.peers.clone() {
            self.inner.add_member(now, p, out);
        }
    }
    fn on_message(&mut self, now: Duration, from: NodeId, msg: Self::Msg, out: &mut Out) {
        self.inner.on_message(now, from, msg, out);
    }
    fn on_timer(&mut self, now: Duration, timer: Self::Timer, out: &mut Out) {
        self.inner.on_timer(now, timer, out);
    }
}

/// Turns detector events about node ids into membership events about node
/// names, collapsing "old incarnation down, new one up" into "up".
#[derive(Default)]
struct NameView {
    current: BTreeMap<String, NodeId>,
}

impl NameView {
    fn apply(&mut self, node: &Node, events: &[MemberEvent<NodeId>]) {
        let mut latest: BTreeMap<String, MemberEvent<String>> = BTreeMap::new();
        for ev in events {
            let name = &ev.member.name;
            let current = self.current.get(name);
            let is_current = current.is_none_or(|c| *c == ev.member);
            if ev.status.is_live() {
                self.current.insert(name.clone(), ev.member.clone());
            } else if !is_current {
                continue; // an older life of a node that is back: not news
            }
            latest.insert(
                name.clone(),
                MemberEvent {
                    member: name.clone(),
                    status: ev.status,
                    at: ev.at,
                },
            );
        }
        for (_, ev) in latest {
            node.publish_membership(ev);
        }
    }
}

/// One member as the detector sees it ([`FailureDetectorHandle::members`]).
#[derive(Debug, Clone, PartialEq)]
pub struct DetectorMember {
    /// Name and incarnation (nil before first contact).
    pub id: NodeId,
    /// Its status.
    pub status: troupe_framework::membership::MemberStatus,
    /// Its phi (phi-accrual only).
    pub phi: Option<f64>,
}

/// Per member name, the life the detector counts as current among
/// `members` (a restarted node has one entry per incarnation heard from):
/// a live one if any, else the last one heard from (a nil incarnation: not
/// heard from yet).
pub fn current_lives(members: Vec<DetectorMember>) -> BTreeMap<String, DetectorMember> {
    let rank = |m: &DetectorMember| (m.status.is_live(), !m.id.incarnation.is_nil());
    let mut lives: BTreeMap<String, DetectorMember> = BTreeMap::new();
    for m in members {
        let keep = lives
            .get(&m.id.name)
            .is_some_and(|kept| rank(kept) > rank(&m));
        if !keep {
            lives.insert(m.id.name.clone(), m);
        }
    }
    lives
}

/// A handle to the node's running failure detector.
#[derive(Clone)]
pub struct FailureDetectorHandle {
    driver: DriverHandle<NodeDetector>,
    kind: &'static str,
    /// Members added at run time ([`Self::add_member`]), watched again by a
    /// restarted detector actor.
    joined: Arc<std::sync::Mutex<Vec<String>>>,
}

impl FailureDetectorHandle {
    /// Which detector runs (`"heartbeat"`, `"phi-accrual"`, `"swim"`).
    pub fn kind(&self) -> &'static str {
        self.kind
    }

    /// Phi per peer when its status was last decided (phi-accrual only;
    /// empty for the others): the value that belongs next to the status the
    /// membership table shows. This is what a dashboard plots.
    pub async fn phis(&self) -> Result<Vec<(String, f64)>, Error> {
        Ok(self
            .driver
            .invoke(|core, _, _| core.inner.phis())
            .await?
            .into_iter()
            .map(|(id, phi)| (id.name, phi))
            .collect())
    }

    /// The detector's own view, by node id.
    pub async fn view(
        &self,
    ) -> Result<Vec<(NodeId, troupe_framework::membership::MemberStatus)>, Error> {
        Ok(self.driver.invoke(|core, _, _| core.inner.view()).await?)
    }

    /// Every member the detector tracks, read in one go: its id (the
    /// incarnation is nil until first contact), its status and, with
    /// phi-accrual, its phi (see [`Self::phis`]).
    pub async fn members(&self) -> Result<Vec<DetectorMember>, Error> {
        Ok(self
            .driver
            .invoke(|core, _, _| {
                let phis: BTreeMap<NodeId, f64> = core.inner.phis().into_iter().collect();
                core.inner
                    .view()
                    .into_iter()
                    .map(|(id, status)| DetectorMember {
                        phi: phis.get(&id).copied(),
                        id,
                        status,
                    })
                    .collect()
            })
            .await?)
    }

    /// Start watching the node `name`, learned at run time (a member that
    /// joined through a seed, see [`crate::join`]): like a configured peer,
    /// it shows `Joining` until first contact, then `Up`. Nothing happens if
    /// the detector already tracks a life of that node (whatever its status:
    /// a new incarnation is admitted on first contact by itself). Returns
    /// whether the node was added.
    pub async fn add_member(&self, name: &str) -> Result<bool, Error> {
        let id = NodeId::with_incarnation(name.to_string(), 0);
        let added = self
            .driver
            .invoke(move |core, now, out| {
                if core.inner.view().iter().any(|(m, _)| m.name == id.name) {
                    return false;
                }
                core.inner.add_member(now, id, out);
                true
            })
            .await?;
        if added {
            let mut joined = self.joined.lock().unwrap_or_else(|e| e.into_inner());
            if !joined.iter().any(|n| n == name) {
                joined.push(name.to_string());
            }
        }
        Ok(added)
    }

    /// Leave the group gracefully: peers will report this node `Left`.
    pub async fn leave(&self) -> Result<(), Error> {
        self.driver
            .invoke(|core, now, out| core.inner.leave(now, out))
            .await?;
        Ok(())
    }
}

/// Start the configured failure detector on `node`, watching `peers`.
pub async fn start_failure_detector(
    node: &Node,
    config: &FailureDetectorConfig,
    peers: &[String],
) -> Result<FailureDetectorHandle, Error> {
    start_failure_detector_with(node, config, peers, false).await
}

/// [`start_failure_detector`]; with `dynamic` (a node configured with
/// seeds) the cluster may grow, so the config is not checked against the
/// size of `peers`, and members are added later with
/// [`FailureDetectorHandle::add_member`].
pub async fn start_failure_detector_with(
    node: &Node,
    config: &FailureDetectorConfig,
    peers: &[String],
    dynamic: bool,
) -> Result<FailureDetectorHandle, Error> {
    if dynamic {
        config.validate()
    } else {
        config.validate_for_cluster(peers.len() + 1)
    }
    .map_err(|e| Error::Config(e.to_string()))?;
    // Fail now, not in the actor factory, if the config cannot build a detector.
    NodeDetector::new(node.id().clone(), config, peers)?;
    let joined: Arc<std::sync::Mutex<Vec<String>>> = Arc::default();
    let (cfg, peer_list, later) = (config.clone(), peers.to_vec(), joined.clone());
    let make = move |n: &Node| {
        let mut all = peer_list.clone();
        let later = later.lock().unwrap_or_else(|e| e.into_inner()).clone();
        all.extend(later.into_iter().filter(|j| !peer_list.contains(j)));
        NodeDetector::new(n.id().clone(), &cfg, &all)
            .unwrap_or_else(|e| unreachable!("validated above: {e}"))
    };
    let hook: Arc<dyn Fn() -> EventHook<NodeDetector> + Send + Sync> = Arc::new(|| {
        let mut view = NameView::default();
        Box::new(move |node: &Node, evs: &[MemberEvent<NodeId>]| view.apply(node, evs))
    });
    let driver = spawn_driver(node, DriverSpec::new(FD_ACTOR, make).control().hook(hook)).await?;
    Ok(FailureDetectorHandle {
        driver,
        kind: config.kind(),
        joined,
    })
}
