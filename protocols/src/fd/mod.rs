//! Pluggable failure detectors as sans-IO cores.
//!
//! Three detectors, chosen by `[failure_detector] kind = ...` in a node's
//! config ([`config::FailureDetectorConfig`]), each with named sets of
//! parameters, `preset = "lan-fast" | "lan" | "wan"` ([`config::Preset`]:
//! a crash is `Down` in about 2, 8 or 20 s; the defaults are `lan`):
//!
//! - [`heartbeat::Heartbeat`] — fixed deadline: every member heartbeats every
//!   member; a silent peer is `Suspect` after `interval + acceptable_pause`
//!   and `Down` after a further `grace`.
//! - [`phi::PhiAccrual`] — Hayashibara et al.'s phi-accrual detector with
//!   Akka's logistic approximation; `Suspect` above a phi threshold, `Down`
//!   after a further grace period.
//!
//!   Both are [`Heartbeats`] detectors (every member heartbeats every
//!   member); they differ only in their [`HeartbeatRule`].
//! - [`swim::Swim`] — SWIM (Das, Gupta, Motivala 2002) with the Lifeguard
//!   extensions (local health, dynamic suspicion timeouts): randomized probing,
//!   indirect probes, incarnation-numbered suspicion with refutation and
//!   infection-style dissemination. Per-member load is constant in N.
//!
//! All three implement [`troupe_framework::sansio::Protocol`] with
//! `Event = MemberEvent<Id>` and [`troupe_framework::membership::FailureDetector`],
//! share one wire type [`FdMessage`] and one timer type [`FdTimer`], and are
//! wrapped by [`AnyDetector`], so a node drives whichever one the config
//! names through a single type. Protocols never see which detector runs.
//!
//! Guarantees common to all: completeness — a crashed member is eventually
//! declared `Down` by every live member that can reach the others; accuracy
//! is only eventual (a member silent for longer than the tolerance is
//! suspected even if it is merely slow; it comes back `Up` when heard from
//! again). A restarted node (same name, new incarnation, see
//! [`MemberIdentity`]) replaces its old life: the old id is reported `Down`
//! (if it was still live) and retired — later messages or gossip about it are
//! ignored — and the new id is reported `Up` (an old id never heard from,
//! still `Joining`, is retired without a report).
//!
//! Initial view, the same for all three: every configured peer is
//! `Joining` from the start ("configured, not heard from yet"; live, but not
//! `Up`), `Up` on first contact, and `Down` if it is not heard from within
//! the detector's *first-contact deadline*:
//! - heartbeat: `interval + acceptable_pause + grace` (8 s with the
//!   defaults), the detection time of a peer that heartbeated at start;
//! - phi-accrual: the instant phi, computed on the window seeded from
//!   `first_heartbeat_estimate` as if the peer had heartbeated at start,
//!   has stayed above `threshold` for `grace` (about 9.4 s with the
//!   defaults): again the detection time of a peer silent since start;
//! - SWIM: a seed is `Down` after [`Swim::first_contact_deadline`] (a round
//!   of probes of a cluster of the configured size plus the minimum
//!   suspicion timeout: 6 s for three nodes with the defaults); a member
//!   added with its identity is probed from the start and declared dead by
//!   SWIM itself if it never answers. See [`swim`].
//!
//! The deadlines scale with the parameters: with the `lan-fast` preset
//! they are 1.8 s, about 2 s and 1.5 s.
//!
//! A `Joining` peer never reported `Up` goes straight to `Down` (there is
//! no `Suspect` of a peer that was never up), and never back to `Joining`.
//!
//! [`sim`] is a deterministic discrete-event simulator for detectors, used by
//! the tests and the `fd_quality` benchmark.

pub mod chaos;
pub mod config;
pub mod heartbeat;
pub mod phi;
pub mod sim;
pub mod swim;

use std::collections::{BTreeMap, BTreeSet};
use std::fmt::Debug;
use std::hash::Hash;
use std::time::Duration;

use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};
use troupe_framework::membership::{FailureDetector, MemberEvent, MemberStatus};
use troupe_framework::sansio::{Outputs, Protocol};
use troupe_framework::NodeId;

pub use config::{ConfigError, FailureDetectorConfig};
pub use heartbeat::Heartbeat;
pub use phi::PhiAccrual;
pub use swim::Swim;

use crate::family::protocol_types;

/// Identity of a member that may restart: "same node, maybe another life".
pub trait MemberIdentity {
    /// True if `other` names the same node (same name), possibly another
    /// incarnation of it. Equal ids are always the same node.
    fn same_node(&self, other: &Self) -> bool;
}

impl MemberIdentity for NodeId {
    fn same_node(&self, other: &Self) -> bool {
        NodeId::same_node(self, other)
    }
}

/// A small member id for simulations and tests: node number plus incarnation.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
pub struct SimId {
    /// The node's stable number (its "name").
    pub node: u32,
    /// Which life of the node this is (bumped on restart).
    pub incarnation: u32,
}

impl SimId {
    /// Node `node`, first life.
    pub fn new(node: u32) -> Self {
        Self {
            node,
            incarnation: 0,
        }
    }
}

impl MemberIdentity for SimId {
    fn same_node(&self, other: &Self) -> bool {
        self.node == other.node
    }
}

/// Everything a failure detector needs from a member id.
pub trait FdId:
    Clone + Ord + Hash + Debug + Serialize + DeserializeOwned + Send + 'static + MemberIdentity
{
}

impl<T> FdId for T where
    T: Clone + Ord + Hash + Debug + Serialize + DeserializeOwned + Send + 'static + MemberIdentity
{
}

/// Wire messages of every detector (msgpack-serializable with rmp-serde).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub enum FdMessage<Id> {
    /// A heartbeat (heartbeat and phi-accrual detectors), numbered per sender.
    Heartbeat {
        /// Sender-local sequence number.
        seq: u64,
    },
    /// The sender leaves the group gracefully (heartbeat and phi-accrual).
    Leave,
    /// A SWIM protocol message.
    Swim(swim::SwimMessage<Id>),
}

/// Timers of every detector.
#[derive(Debug, Clone, PartialEq)]
pub enum FdTimer<Id> {
    /// Send heartbeats (heartbeat and phi-accrual).
    Tick,
    /// Re-evaluate every peer's status (heartbeat and phi-accrual).
    Check,
    /// A SWIM timer.
    Swim(swim::SwimTimer<Id>),
}

/// The output buffer type every detector uses.
pub type FdOutputs<Id> = Outputs<Id, FdMessage<Id>, FdTimer<Id>, MemberEvent<Id>>;

/// Peer bookkeeping shared by the heartbeat and phi-accrual detectors:
/// known peers with their status, incarnation replacement, retired ids.
#[derive(Debug, Clone)]
pub(crate) struct Roster<Id: Ord, S> {
    pub(crate) me: Id,
    pub(crate) peers: BTreeMap<Id, (MemberStatus, S)>,
    retired: BTreeSet<Id>,
}

impl<Id: FdId> crate::driver::WireMessage for FdMessage<Id> {
    const WIRE_NAME: &'static str = "troupe.fd";
}

impl<Id: FdId, S> Roster<Id, S> {
    pub(crate) fn new(me: Id) -> Self {
        Self {
            me,
            peers: BTreeMap::new(),
            retired: BTreeSet::new(),
        }
    }

    /// Make sure `id` is a known peer (adding it with `status`, `Joining`
    /// for a configured peer or `Up` for one heard from, and replacing an
    /// older incarnation of the same node, if needed). Returns false if
    /// `id` is this node or a retired incarnation, which must be ignored.
    ///
    /// A replaced older incarnation that was live is reported `Down`,
    /// unless it was still `Joining`: a placeholder never heard from (a
    /// configured peer known by name only) is not a life that ended.
    pub(crate) fn admit(
        &mut self,
        now: Duration,
        id: &Id,
        status: MemberStatus,
        make: impl FnOnce() -> S,
        out: &mut FdOutputs<Id>,
    ) -> bool {
        if *id == self.me || self.me.same_node(id) || self.retired.contains(id) {
            return false;
        }
        if self.peers.contains_key(id) {
            return true;
        }
        let old: Vec<Id> = self
            .peers
            .keys()
            .filter(|k| k.same_node(id))
            .cloned()
            .collect();
        for o in old {
            if let Some((old, _)) = self.peers.remove(&o) {
                if old.is_live() && old != MemberStatus::Joining {
                    out.emit(MemberEvent {
                        member: o.clone(),
                        status: MemberStatus::Down,
                        at: now,
                    });
                }
            }
            self.retired.insert(o);
        }
        self.peers.insert(id.clone(), (status, make()));
        out.emit(MemberEvent {
            member: id.clone(),
            status,
            at: now,
        });
        true
    }

    /// Set the status of a known peer, reporting a change.
    pub(crate) fn set_status(
        &mut self,
        now: Duration,
        id: &Id,
        status: MemberStatus,
        out: &mut FdOutputs<Id>,
    ) {
        if let Some((s, _)) = self.peers.get_mut(id) {
            if *s != status {
                *s = status;
                out.emit(MemberEvent {
                    member: id.clone(),
                    status,
                    at: now,
                });
            }
        }
    }

    pub(crate) fn view(&self) -> Vec<(Id, MemberStatus)> {
        self.peers
            .iter()
            .map(|(k, (s, _))| (k.clone(), *s))
            .collect()
    }
}

/// How a heartbeat detector judges its peers: what it keeps per peer, how a
/// heartbeat is taken in, and how statuses are decided. The parameters of
/// [`Heartbeat`] ([`heartbeat::HeartbeatParams`]) and of [`PhiAccrual`]
/// ([`phi::PhiParams`]) are such rules.
pub trait HeartbeatRule: Debug {
    /// The detector's name, as the config writes it.
    const KIND: &'static str;
    /// What is kept per peer.
    type Peer: Debug;
    /// A peer first heard from (or added) at `now`: an added peer is
    /// judged as if it had heartbeated when it was added.
    fn fresh(&self, now: Duration) -> Self::Peer;
    /// A heartbeat at `now` from a known peer whose status is `status` (it
    /// is `Up` right after).
    fn heard(&self, now: Duration, status: MemberStatus, peer: &mut Self::Peer);
    /// The status a peer whose status is `status` moves to at a check at
    /// `now`, if any. A `Joining` peer (added, never heard from) may only
    /// move to `Down`, and must do so at the check at which it would have
    /// gone `Down` had it been `Up` (heard from when it was added): the
    /// first-contact deadline is the detection time of a peer that fell
    /// silent right at its admission.
    fn decide(
        &self,
        now: Duration,
        status: MemberStatus,
        peer: &mut Self::Peer,
    ) -> Option<MemberStatus>;
    /// A check at `now` moved the peer to `status`. Default: nothing to note.
    fn changed(&self, now: Duration, status: MemberStatus, peer: &mut Self::Peer) {
        let _ = (now, status, peer);
    }
    /// The heartbeat period, and how often statuses are decided.
    fn periods(&self) -> (Duration, Duration);
}

/// A heartbeat detector: every `interval` each node heartbeats every member
/// it knows that has not left (including ones it thinks are `Down`, so a
/// healed partition is noticed); every `check_interval` it decides each
/// peer's status by its rule `R` (a `Down` always follows a `Suspect`,
/// except for a peer never heard from: `Joining -> Down`); any heartbeat
/// brings a peer back `Up`. A peer added with
/// [`FailureDetector::add_member`] is `Joining` until its first heartbeat.
/// [`Heartbeat`] and [`PhiAccrual`] are heartbeat detectors.
#[derive(Debug)]
pub struct Heartbeats<Id: FdId, R: HeartbeatRule> {
    rule: R,
    roster: Roster<Id, R::Peer>,
    seq: u64,
    left: bool,
}

impl<Id: FdId, R: HeartbeatRule> Heartbeats<Id, R> {
    /// A detector for node `me`; add peers with [`FailureDetector::add_member`].
    pub fn new(me: Id, rule: R) -> Self {
        Self {
            rule,
            roster: Roster::new(me),
            seq: 0,
            left: false,
        }
    }

    /// This node's id.
    pub fn me(&self) -> &Id {
        &self.roster.me
    }

    /// Leave gracefully: tell every peer (they report this node `Left`) and
    /// stop heartbeating.
    pub fn leave(&mut self, _now: Duration, out: &mut FdOutputs<Id>) {
        if self.left {
            return;
        }
        self.left = true;
        self.send_to_peers(FdMessage::Leave, out);
    }

    /// Send `msg` to every peer that has not left.
    fn send_to_peers(&self, msg: FdMessage<Id>, out: &mut FdOutputs<Id>) {
        for (id, (status, _)) in &self.roster.peers {
            if *status != MemberStatus::Left {
                out.send(id.clone(), msg.clone());
            }
        }
    }

    fn heartbeat_from(&mut self, now: Duration, from: Id, out: &mut FdOutputs<Id>) {
        if let Some((MemberStatus::Left, _)) = self.roster.peers.get(&from) {
            return;
        }
        let fresh = || self.rule.fresh(now);
        if !self.roster.admit(now, &from, MemberStatus::Up, fresh, out) {
            return;
        }
        if let Some((status, p)) = self.roster.peers.get_mut(&from) {
            self.rule.heard(now, *status, p);
        }
        self.roster.set_status(now, &from, MemberStatus::Up, out);
    }

    /// Decide every peer's status.
    fn check(&mut self, now: Duration, out: &mut FdOutputs<Id>) {
        let changes: Vec<(Id, MemberStatus, MemberStatus)> = self
            .roster
            .peers
            .iter_mut()
            .filter_map(|(id, (status, p))| {
                let to = self.rule.decide(now, *status, p)?;
                Some((id.clone(), *status, to))
            })
            .collect();
        for (id, from, s) in changes {
            if let Some((_, p)) = self.roster.peers.get_mut(&id) {
                self.rule.changed(now, s, p);
            }
            if s == MemberStatus::Down && from == MemberStatus::Up {
                // Report the suspicion first if both deadlines passed
                // within one check, so every Down of a peer heard from
                // follows a Suspect.
                self.roster.set_status(now, &id, MemberStatus::Suspect, out);
            }
            self.roster.set_status(now, &id, s, out);
        }
    }
}

impl<Id: FdId, R: HeartbeatRule> Protocol for Heartbeats<Id, R> {
    protocol_types!(FdMessage<Id>, FdTimer<Id>, MemberEvent<Id>);

    fn on_start(&mut self, now: Duration, out: &mut FdOutputs<Id>) {
        self.on_timer(now, FdTimer::Tick, out);
        out.set_timer(self.rule.periods().1, FdTimer::Check);
    }

    fn on_message(&mut self, now: Duration, from: Id, msg: FdMessage<Id>, out: &mut FdOutputs<Id>) {
        if self.left {
            return;
        }
        match msg {
            FdMessage::Heartbeat { .. } => self.heartbeat_from(now, from, out),
            FdMessage::Leave => self.roster.set_status(now, &from, MemberStatus::Left, out),
            FdMessage::Swim(_) => {}
        }
    }

    fn on_timer(&mut self, now: Duration, timer: FdTimer<Id>, out: &mut FdOutputs<Id>) {
        if self.left {
            return;
        }
        match timer {
            FdTimer::Tick => {
                self.seq += 1;
                self.send_to_peers(FdMessage::Heartbeat { seq: self.seq }, out);
                out.set_timer(self.rule.periods().0, FdTimer::Tick);
            }
            FdTimer::Check => {
                self.check(now, out);
                out.set_timer(self.rule.periods().1, FdTimer::Check);
            }
            FdTimer::Swim(_) => {}
        }
    }
}

impl<Id: FdId, R: HeartbeatRule> FailureDetector for Heartbeats<Id, R> {
    fn kind(&self) -> &'static str {
        R::KIND
    }

    fn view(&self) -> Vec<(Id, MemberStatus)> {
        self.roster.view()
    }

    /// A configured peer: `Joining` until its first heartbeat.
    fn add_member(&mut self, now: Duration, id: Id, out: &mut FdOutputs<Id>) {
        let fresh = || self.rule.fresh(now);
        self.roster
            .admit(now, &id, MemberStatus::Joining, fresh, out);
    }
}

/// Whichever detector the config names, driven through one type.
#[derive(Debug)]
pub enum AnyDetector<Id: FdId> {
    /// Fixed-deadline heartbeats.
    Heartbeat(Heartbeat<Id>),
    /// Phi-accrual.
    PhiAccrual(PhiAccrual<Id>),
    /// SWIM + Lifeguard (boxed: it is much larger than the others).
    Swim(Box<Swim<Id>>),
}

impl<Id: FdId> AnyDetector<Id> {
    /// Build the configured detector for node `me`. `seeds` are the peers to
    /// join through (SWIM) — the heartbeat detectors instead watch every
    /// member added with [`FailureDetector::add_member`]. `rng_seed` seeds
    /// SWIM's randomness. The config is validated first.
    pub fn from_config(
        me: Id,
        config: &FailureDetectorConfig,
        seeds: Vec<Id>,
        rng_seed: u64,
    ) -> Result<Self, ConfigError> {
        config.validate()?;
        Ok(match config {
            FailureDetectorConfig::Heartbeat(c) => {
                AnyDetector::Heartbeat(Heartbeat::new(me, c.params()))
            }
            FailureDetectorConfig::PhiAccrual(c) => {
                AnyDetector::PhiAccrual(PhiAccrual::new(me, c.params()))
            }
            FailureDetectorConfig::Swim(c) => {
                AnyDetector::Swim(Box::new(Swim::new(me, c.params(), seeds, rng_seed)))
            }
        })
    }

    /// Leave the group gracefully (peers report this node `Left`).
    pub fn leave(&mut self, now: Duration, out: &mut FdOutputs<Id>) {
        match self {
            AnyDetector::Heartbeat(d) => d.leave(now, out),
            AnyDetector::PhiAccrual(d) => d.leave(now, out),
            AnyDetector::Swim(d) => d.leave(now, out),
        }
    }

    /// Phi of every peer when its status was last decided (phi-accrual
    /// only; empty otherwise): see [`PhiAccrual::phis`].
    pub fn phis(&self) -> Vec<(Id, f64)> {
        match self {
            AnyDetector::PhiAccrual(d) => d.phis(),
            _ => Vec::new(),
        }
    }
}

impl<Id: FdId> Protocol for AnyDetector<Id> {
    protocol_types!(FdMessage<Id>, FdTimer<Id>, MemberEvent<Id>);

    fn on_start(&mut self, now: Duration, out: &mut FdOutputs<Id>) {
        match self {
            AnyDetector::Heartbeat(d) => d.on_start(now, out),
            AnyDetector::PhiAccrual(d) => d.on_start(now, out),
            AnyDetector::Swim(d) => d.on_start(now, out),
        }
    }

    fn on_message(&mut self, now: Duration, from: Id, msg: FdMessage<Id>, out: &mut FdOutputs<Id>) {
        match self {
            AnyDetector::Heartbeat(d) => d.on_message(now, from, msg, out),
            AnyDetector::PhiAccrual(d) => d.on_message(now, from, msg, out),
            AnyDetector::Swim(d) => d.on_message(now, from, msg, out),
        }
    }

    fn on_timer(&mut self, now: Duration, timer: FdTimer<Id>, out: &mut FdOutputs<Id>) {
        match self {
            AnyDetector::Heartbeat(d) => d.on_timer(now, timer, out),
            AnyDetector::PhiAccrual(d) => d.on_timer(now, timer, out),
            AnyDetector::Swim(d) => d.on_timer(now, timer, out),
        }
    }
}

impl<Id: FdId> FailureDetector for AnyDetector<Id> {
    fn kind(&self) -> &'static str {
        match self {
            AnyDetector::Heartbeat(d) => d.kind(),
            AnyDetector::PhiAccrual(d) => d.kind(),
            AnyDetector::Swim(d) => d.kind(),
        }
    }

    fn view(&self) -> Vec<(Id, MemberStatus)> {
        match self {
            AnyDetector::Heartbeat(d) => d.view(),
            AnyDetector::PhiAccrual(d) => d.view(),
            AnyDetector::Swim(d) => d.view(),
        }
    }

    fn add_member(&mut self, now: Duration, id: Id, out: &mut FdOutputs<Id>) {
        match self {
            AnyDetector::Heartbeat(d) => d.add_member(now, id, out),
            AnyDetector::PhiAccrual(d) => d.add_member(now, id, out),
            AnyDetector::Swim(d) => d.add_member(now, id, out),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn identities_know_their_node() {
        let a = NodeId::with_incarnation("a", 1);
        assert!(MemberIdentity::same_node(
            &a,
            &NodeId::with_incarnation("a", 2)
        ));
        assert!(!MemberIdentity::same_node(
            &a,
            &NodeId::with_incarnation("b", 1)
        ));
        let s = SimId::new(3);
        assert!(s.same_node(&SimId {
            node: 3,
            incarnation: 7
        }));
        assert!(!s.same_node(&SimId::new(4)));
    }

    #[test]
    fn roster_replaces_old_incarnation() {
        let mut r: Roster<SimId, ()> = Roster::new(SimId::new(0));
        let mut out = FdOutputs::new();
        let up = MemberStatus::Up;
        assert!(r.admit(Duration::ZERO, &SimId::new(1), up, || (), &mut out));
        let new = SimId {
            node: 1,
            incarnation: 1,
        };
        assert!(r.admit(Duration::from_secs(1), &new, up, || (), &mut out));
        let t = Duration::from_secs(2);
        assert!(!r.admit(t, &SimId::new(1), up, || (), &mut out));
        assert!(!r.admit(t, &SimId::new(0), up, || (), &mut out));
        let st: Vec<_> = out.events.iter().map(|e| (e.member, e.status)).collect();
        assert_eq!(
            st,
            vec![
                (SimId::new(1), MemberStatus::Up),
                (SimId::new(1), MemberStatus::Down),
                (new, MemberStatus::Up)
            ]
        );
        assert_eq!(r.view(), vec![(new, MemberStatus::Up)]);
    }

    /// A configured peer known by name only (a placeholder id) is
    /// `Joining`; its first heartbeat, from its real id, replaces it with
    /// no `Down` in between: the placeholder was never a life.
    #[test]
    fn roster_replaces_a_joining_placeholder_silently() {
        let mut r: Roster<SimId, ()> = Roster::new(SimId::new(0));
        let mut out = FdOutputs::new();
        let placeholder = SimId::new(1);
        let real = SimId {
            node: 1,
            incarnation: 7,
        };
        let t = Duration::from_secs(1);
        assert!(r.admit(
            Duration::ZERO,
            &placeholder,
            MemberStatus::Joining,
            || (),
            &mut out
        ));
        assert_eq!(r.view(), vec![(placeholder, MemberStatus::Joining)]);
        assert!(r.admit(t, &real, MemberStatus::Up, || (), &mut out));
        let st: Vec<_> = out.events.iter().map(|e| (e.member, e.status)).collect();
        assert_eq!(
            st,
            vec![
                (placeholder, MemberStatus::Joining),
                (real, MemberStatus::Up)
            ]
        );
        assert_eq!(r.view(), vec![(real, MemberStatus::Up)]);
    }

    #[test]
    fn messages_roundtrip_msgpack() {
        let m: FdMessage<NodeId> = FdMessage::Heartbeat { seq: 7 };
        let bytes = rmp_serde::to_vec(&m).expect("encode");
        let back: FdMessage<NodeId> = rmp_serde::from_slice(&bytes).expect("decode");
        assert_eq!(m, back);
    }
}
