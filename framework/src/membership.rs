//! Group membership: who is in the group and how alive each member looks.
//!
//! A failure detector (see [`FailureDetector`]) produces [`MemberEvent`]s;
//! the node keeps the resulting [`MembershipView`] and fans the events out to
//! every subscriber. Protocols only ever see these events, never which
//! detector produced them, so switching detectors is a config edit.
//!
//! # The state machine
//!
//! Every detector publishes the same initial view: each configured peer is
//! `Joining` ("configured, not heard from yet") from the start, before any
//! contact. From there:
//!
//! ```text
//! Joining -> Up        first contact (a heartbeat, a SWIM message, or SWIM
//!                      gossip that it is alive)
//! Joining -> Down      not heard from within the detector's first-contact
//!                      deadline (see `troupe_protocols::fd`)
//! Joining -> Left      it left before this node heard it alive
//! Joining -> Suspect   SWIM only: first contact while a suspicion of it,
//!                      raised by its silence, is still pending
//! Up -> Suspect -> Down, Suspect -> Up (a refuted or cleared suspicion)
//! Up/Suspect -> Left   graceful leave
//! Down/Left -> Up      a new incarnation (a restarted node), or a healed
//!                      partition that lets the detector hear it again
//! ```
//!
//! `Joining` does not come back: a member is `Joining` only until it is
//! first heard from or given up on. (A detector that restarts — its actor
//! restarted by its supervisor — starts over from the configured peers and
//! reports them `Joining` again: it has not heard from them yet.) It counts as live ([`MemberStatus::is_live`]):
//! protocols keep waiting for a member that has not started yet instead of
//! acting as if it had failed, and asks to it wait for their deadline
//! instead of failing at once. What tells "not yet known" from "up" is the
//! status itself ([`MembershipView::up`] lists only members heard from).

use std::collections::BTreeMap;
use std::fmt::Debug;
use std::time::Duration;

use serde::{Deserialize, Serialize};

/// How alive a member looks to this node.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
pub enum MemberStatus {
    /// Configured but not heard from yet: the start of every member's life
    /// in the view. Live (see [`MemberStatus::is_live`]), but not `Up`.
    Joining,
    /// Heard from recently; considered alive.
    Up,
    /// Not heard from for longer than the detector tolerates; may be dead.
    Suspect,
    /// Declared failed.
    Down,
    /// Left the group gracefully.
    Left,
}

impl MemberStatus {
    /// Every status, in the order of the state machine above.
    pub const ALL: [MemberStatus; 5] = [
        MemberStatus::Joining,
        MemberStatus::Up,
        MemberStatus::Suspect,
        MemberStatus::Down,
        MemberStatus::Left,
    ];

    /// Its name, as serde and the node's endpoints write it (`"Up"`).
    pub fn name(self) -> &'static str {
        match self {
            MemberStatus::Joining => "Joining",
            MemberStatus::Up => "Up",
            MemberStatus::Suspect => "Suspect",
            MemberStatus::Down => "Down",
            MemberStatus::Left => "Left",
        }
    }

    /// `Joining`, `Up` or `Suspect`: still counted as a member by protocols
    /// that must not act on suspicion alone (nor on a member not started
    /// yet).
    pub fn is_live(self) -> bool {
        matches!(
            self,
            MemberStatus::Joining | MemberStatus::Up | MemberStatus::Suspect
        )
    }
}

/// One change in the membership view, with the (driver) time it happened.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct MemberEvent<Id> {
    /// The member whose status changed.
    pub member: Id,
    /// Its new status.
    pub status: MemberStatus,
    /// When this node decided it (time since the driver's epoch).
    pub at: Duration,
}

/// The current view: each known member and its status, in a stable order.
/// Its `Debug` form is the map itself: `{"node-b": Up, "node-c": Down}`.
#[derive(Clone, PartialEq, Eq)]
pub struct MembershipView<Id: Ord> {
    members: BTreeMap<Id, MemberStatus>,
}

impl<Id: Ord + std::fmt::Debug> std::fmt::Debug for MembershipView<Id> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_map().entries(self.members.iter()).finish()
    }
}

impl<Id: Ord> Default for MembershipView<Id> {
    fn default() -> Self {
        Self {
            members: BTreeMap::new(),
        }
    }
}

impl<Id: Ord + Clone + Debug> MembershipView<Id> {
    /// An empty view.
    pub fn new() -> Self {
        Self::default()
    }
    /// Apply an event; returns true if it changed the view.
    pub fn apply(&mut self, ev: &MemberEvent<Id>) -> bool {
        self.members.insert(ev.member.clone(), ev.status) != Some(ev.status)
    }
    /// Status of `id`, if known.
    pub fn status(&self, id: &Id) -> Option<MemberStatus> {
        self.members.get(id).copied()
    }
    /// All members and their status, ordered by id.
    pub fn iter(&self) -> impl Iterator<Item = (&Id, MemberStatus)> {
        self.members.iter().map(|(k, v)| (k, *v))
    }
    /// Members currently `Joining`, `Up` or `Suspect`, ordered by id.
    pub fn live(&self) -> Vec<Id> {
        self.members
            .iter()
            .filter(|(_, s)| s.is_live())
            .map(|(k, _)| k.clone())
            .collect()
    }
    /// Members currently `Up`, ordered by id.
    pub fn up(&self) -> Vec<Id> {
        self.members
            .iter()
            .filter(|(_, s)| **s == MemberStatus::Up)
            .map(|(k, _)| k.clone())
            .collect()
    }
    /// Number of known members.
    pub fn len(&self) -> usize {
        self.members.len()
    }
    /// True when no member is known.
    pub fn is_empty(&self) -> bool {
        self.members.is_empty()
    }
}

/// A failure detector: a sans-IO [`Protocol`](crate::sansio::Protocol) whose
/// events are membership changes.
///
/// Implementations live in `troupe-protocols::fd` (heartbeat, phi-accrual,
/// SWIM). The node drives whichever one its config names and publishes the
/// events; nothing else depends on which one runs.
pub trait FailureDetector:
    crate::sansio::Protocol<Event = MemberEvent<<Self as crate::sansio::Protocol>::Id>>
{
    /// The detector's name as written in the config (`"heartbeat"`, `"phi-accrual"`, `"swim"`...).
    fn kind(&self) -> &'static str;
    /// This detector's current view of every member it knows.
    fn view(&self) -> Vec<(Self::Id, MemberStatus)>;
    /// A peer this node should watch (from the config's seed peers or a join).
    fn add_member(
        &mut self,
        now: Duration,
        id: Self::Id,
        out: &mut crate::sansio::Outputs<Self::Id, Self::Msg, Self::Timer, Self::Event>,
    );
}

/// The trivial detector: every configured peer is `Up`, forever.
///
/// Use it only where failures are injected by hand (examples, some tests):
/// it never suspects anyone, so it is useless in production.
#[derive(Debug, Clone, Default)]
pub struct AlwaysAlive<Id: Ord> {
    view: MembershipView<Id>,
}

impl<Id: Ord + Clone + Debug> AlwaysAlive<Id> {
    /// A detector that will report each added member `Up` and nothing else.
    pub fn new() -> Self {
        Self {
            view: MembershipView::new(),
        }
    }
}

impl<Id: Ord + Clone + Debug> crate::sansio::Protocol for AlwaysAlive<Id> {
    type Id = Id;
    type Msg = ();
    type Timer = ();
    type Event = MemberEvent<Id>;
    fn on_start(
        &mut self,
        _now: Duration,
        _out: &mut crate::sansio::Outputs<Id, (), (), MemberEvent<Id>>,
    ) {
    }
    fn on_message(
        &mut self,
        _now: Duration,
        _from: Id,
        _msg: (),
        _out: &mut crate::sansio::Outputs<Id, (), (), MemberEvent<Id>>,
    ) {
    }
    fn on_timer(
        &mut self,
        _now: Duration,
        _timer: (),
        _out: &mut crate::sansio::Outputs<Id, (), (), MemberEvent<Id>>,
    ) {
    }
}

impl<Id: Ord + Clone + Debug> FailureDetector for AlwaysAlive<Id> {
    fn kind(&self) -> &'static str {
        "always-alive"
    }
    fn view(&self) -> Vec<(Id, MemberStatus)> {
        self.view.iter().map(|(k, v)| (k.clone(), v)).collect()
    }
    fn add_member(
        &mut self,
        now: Duration,
        id: Id,
        out: &mut crate::sansio::Outputs<Id, (), (), MemberEvent<Id>>,
    ) {
        let ev = MemberEvent {
            member: id,
            status: MemberStatus::Up,
            at: now,
        };
        if self.view.apply(&ev) {
            out.emit(ev);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::sansio::Outputs;

    #[test]
    fn always_alive_reports_each_member_up_once() {
        let mut d = AlwaysAlive::<String>::new();
        let mut out = Outputs::new();
        d.add_member(Duration::ZERO, "a".into(), &mut out);
        d.add_member(Duration::ZERO, "a".into(), &mut out);
        d.add_member(Duration::from_secs(1), "b".into(), &mut out);
        assert_eq!(out.events.len(), 2);
        assert_eq!(d.view().len(), 2);
        assert!(d.view().iter().all(|(_, s)| *s == MemberStatus::Up));
    }

    #[test]
    fn view_tracks_live_members() {
        let mut v = MembershipView::new();
        for (m, s) in [
            ("a", MemberStatus::Up),
            ("b", MemberStatus::Suspect),
            ("c", MemberStatus::Down),
        ] {
            v.apply(&MemberEvent {
                member: m.to_string(),
                status: s,
                at: Duration::ZERO,
            });
        }
        assert_eq!(v.live(), vec!["a".to_string(), "b".to_string()]);
        assert_eq!(v.up(), vec!["a".to_string()]);
        assert!(!v.apply(&MemberEvent {
            member: "a".to_string(),
            status: MemberStatus::Up,
            at: Duration::ZERO
        }));
    }
}
