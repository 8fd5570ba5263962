//! Fixed-deadline heartbeat failure detector.
//!
//! Algorithm: every `interval` each node sends a heartbeat to every member it
//! knows (including ones it thinks are `Down`, so a healed partition is
//! noticed). A peer not heard from for `interval + acceptable_pause` becomes
//! `Suspect`; after a further `grace` of silence it becomes `Down`. Any
//! heartbeat from a `Suspect` or `Down` peer brings it back `Up`. Deadlines
//! are checked every `check_interval` (the detection resolution).
//!
//! Guarantees: a crashed peer is reported `Down` by every live node within
//! `interval + acceptable_pause + grace + check_interval` of its last
//! heartbeat arriving (strong completeness). Accuracy holds only while
//! message delay plus pauses stay under `acceptable_pause`; a slower peer is
//! falsely suspected and recovers `Up` on its next heartbeat. Cost: N-1
//! messages per node per interval (O(N^2) in total) — use SWIM for large
//! clusters.
//!
//! A peer added with [`FailureDetector::add_member`] (a configured peer) is
//! `Joining` until its first heartbeat makes it `Up`. Its first-contact
//! deadline is that of a peer that heartbeated when it was added: never
//! heard from for `interval + acceptable_pause + grace`, it goes straight
//! to `Down` (no `Suspect`: it was never up), so a peer that never starts
//! is detected as fast as one that crashed right after starting.
//!
//! The heartbeating itself is [`Heartbeats`]'s, shared with the
//! phi-accrual detector; this module is the fixed-deadline rule.
//!
//! [`FailureDetector::add_member`]: troupe_framework::membership::FailureDetector::add_member

use std::time::Duration;

use troupe_framework::membership::MemberStatus;

use super::{HeartbeatRule, Heartbeats};

/// Parameters of [`Heartbeat`] (see [`super::config::HeartbeatConfig`]):
/// its rule.
#[derive(Debug, Clone, PartialEq)]
pub struct HeartbeatParams {
    /// Heartbeat period.
    pub interval: Duration,
    /// Silence tolerated beyond one interval before `Suspect`.
    pub acceptable_pause: Duration,
    /// Further silence before `Down`.
    pub grace: Duration,
    /// How often deadlines are checked.
    pub check_interval: Duration,
}

/// What the fixed-deadline detector keeps per peer.
#[derive(Debug, Clone)]
pub struct Peer {
    last_heard: Duration,
}

/// The fixed-deadline heartbeat detector core.
pub type Heartbeat<Id> = Heartbeats<Id, HeartbeatParams>;

impl HeartbeatParams {
    fn suspect_after(&self) -> Duration {
        self.interval + self.acceptable_pause
    }
}

impl HeartbeatRule for HeartbeatParams {
    const KIND: &'static str = "heartbeat";
    type Peer = Peer;

    fn fresh(&self, now: Duration) -> Peer {
        Peer { last_heard: now }
    }

    fn heard(&self, now: Duration, _status: MemberStatus, peer: &mut Peer) {
        peer.last_heard = now;
    }

    fn decide(&self, now: Duration, status: MemberStatus, peer: &mut Peer) -> Option<MemberStatus> {
        let suspect_after = self.suspect_after();
        let down_after = suspect_after + self.grace;
        let silent = now.saturating_sub(peer.last_heard);
        match status {
            MemberStatus::Joining | MemberStatus::Up | MemberStatus::Suspect
                if silent > down_after =>
            {
                Some(MemberStatus::Down)
            }
            MemberStatus::Up if silent > suspect_after => Some(MemberStatus::Suspect),
            _ => None,
        }
    }

    fn periods(&self) -> (Duration, Duration) {
        (self.interval, self.check_interval)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::fd::{FdMessage, FdOutputs, FdTimer, SimId};
    use troupe_framework::membership::FailureDetector;
    use troupe_framework::sansio::Protocol;

    fn params() -> HeartbeatParams {
        HeartbeatParams {
            interval: Duration::from_secs(1),
            acceptable_pause: Duration::from_secs(3),
            grace: Duration::from_secs(4),
            check_interval: Duration::from_millis(100),
        }
    }

    fn statuses(out: &FdOutputs<SimId>) -> Vec<(u32, MemberStatus, u64)> {
        out.events
            .iter()
            .map(|e| (e.member.node, e.status, e.at.as_millis() as u64))
            .collect()
    }

    /// A started detector of member 0 watching member 1.
    fn started() -> (Heartbeat<SimId>, FdOutputs<SimId>) {
        let mut d = Heartbeat::new(SimId::new(0), params());
        let mut out = FdOutputs::new();
        d.add_member(Duration::ZERO, SimId::new(1), &mut out);
        d.on_start(Duration::ZERO, &mut out);
        (d, out)
    }

    #[test]
    fn silent_peer_goes_suspect_then_down_and_recovers() {
        let (mut d, mut out) = started();
        assert_eq!(out.sends.len(), 1);
        let hb = FdMessage::Heartbeat { seq: 1 };
        d.on_message(Duration::ZERO, SimId::new(1), hb, &mut out);
        for ms in (100..=9000).step_by(100) {
            d.on_timer(Duration::from_millis(ms), FdTimer::Check, &mut out);
        }
        assert_eq!(
            statuses(&out),
            vec![
                (1, MemberStatus::Joining, 0),
                (1, MemberStatus::Up, 0),
                (1, MemberStatus::Suspect, 4100),
                (1, MemberStatus::Down, 8100)
            ]
        );
        out.events.clear();
        d.on_message(
            Duration::from_secs(10),
            SimId::new(1),
            FdMessage::Heartbeat { seq: 9 },
            &mut out,
        );
        assert_eq!(statuses(&out), vec![(1, MemberStatus::Up, 10_000)]);
    }

    #[test]
    fn leave_is_reported_left() {
        let mut d = Heartbeat::new(SimId::new(0), params());
        let mut out = FdOutputs::new();
        d.add_member(Duration::ZERO, SimId::new(1), &mut out);
        d.on_message(
            Duration::from_secs(1),
            SimId::new(1),
            FdMessage::Leave,
            &mut out,
        );
        d.on_timer(Duration::from_secs(20), FdTimer::Check, &mut out);
        assert_eq!(
            statuses(&out),
            vec![(1, MemberStatus::Joining, 0), (1, MemberStatus::Left, 1000)]
        );
    }

    /// A peer never heard from is `Joining`, then `Down` at the check at
    /// which a peer that heartbeated when it was added goes `Down` (8.1 s),
    /// with no `Suspect`; its first heartbeat brings it `Up`.
    #[test]
    fn a_peer_never_heard_from_goes_joining_to_down_at_the_same_deadline() {
        let (mut d, mut out) = started();
        for ms in (100..=9000).step_by(100) {
            d.on_timer(Duration::from_millis(ms), FdTimer::Check, &mut out);
        }
        assert_eq!(
            statuses(&out),
            vec![(1, MemberStatus::Joining, 0), (1, MemberStatus::Down, 8100)]
        );
        out.events.clear();
        let hb = FdMessage::Heartbeat { seq: 1 };
        d.on_message(Duration::from_secs(10), SimId::new(1), hb, &mut out);
        assert_eq!(statuses(&out), vec![(1, MemberStatus::Up, 10_000)]);
    }
}
