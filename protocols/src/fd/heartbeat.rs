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
//! clusters. A peer added with [`FailureDetector::add_member`] is assumed to
//! have just heartbeated (so a peer that never starts is also detected).

use std::time::Duration;

use troupe_framework::membership::{FailureDetector, MemberEvent, MemberStatus};
use troupe_framework::sansio::Protocol;

use super::{FdId, FdMessage, FdOutputs, FdTimer, Roster};

/// Parameters of [`Heartbeat`] (see [`super::config::HeartbeatConfig`]).
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

#[derive(Debug, Clone)]
struct Peer {
    last_heard: Duration,
}

/// The fixed-deadline heartbeat detector core.
#[derive(Debug)]
pub struct Heartbeat<Id: FdId> {
    params: HeartbeatParams,
    roster: Roster<Id, Peer>,
    seq: u64,
    left: bool,
}

impl<Id: FdId> Heartbeat<Id> {
    /// A detector for node `me`; add peers with [`FailureDetector::add_member`].
    pub fn new(me: Id, params: HeartbeatParams) -> Self {
        Self {
            params,
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
        for (id, (status, _)) in &self.roster.peers {
            if *status != MemberStatus::Left {
                out.send(id.clone(), FdMessage::Leave);
            }
        }
    }

    fn suspect_after(&self) -> Duration {
        self.params.interval + self.params.acceptable_pause
    }
}

impl<Id: FdId> Protocol for Heartbeat<Id> {
    type Id = Id;
    type Msg = FdMessage<Id>;
    type Timer = FdTimer<Id>;
    type Event = MemberEvent<Id>;

    fn on_start(&mut self, now: Duration, out: &mut FdOutputs<Id>) {
        self.on_timer(now, FdTimer::Tick, out);
        out.set_timer(self.params.check_interval, FdTimer::Check);
    }

    fn on_message(&mut self, now: Duration, from: Id, msg: FdMessage<Id>, out: &mut FdOutputs<Id>) {
        if self.left {
            return;
        }
        match msg {
            FdMessage::Heartbeat { .. } => {
                if let Some((MemberStatus::Left, _)) = self.roster.peers.get(&from) {
                    return;
                }
                if !self
                    .roster
                    .admit(now, &from, || Peer { last_heard: now }, out)
                {
                    return;
                }
                if let Some((_, p)) = self.roster.peers.get_mut(&from) {
                    p.last_heard = now;
                }
                self.roster.set_status(now, &from, MemberStatus::Up, out);
            }
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
                for (id, (status, _)) in &self.roster.peers {
                    if *status != MemberStatus::Left {
                        out.send(id.clone(), FdMessage::Heartbeat { seq: self.seq });
                    }
                }
                out.set_timer(self.params.interval, FdTimer::Tick);
            }
            FdTimer::Check => {
                let suspect_after = self.suspect_after();
                let down_after = suspect_after + self.params.grace;
                let changes: Vec<(Id, MemberStatus)> = self
                    .roster
                    .peers
                    .iter()
                    .filter_map(|(id, (status, p))| {
                        let silent = now.saturating_sub(p.last_heard);
                        let want = match status {
                            MemberStatus::Up | MemberStatus::Suspect if silent > down_after => {
                                MemberStatus::Down
                            }
                            MemberStatus::Up if silent > suspect_after => MemberStatus::Suspect,
                            _ => return None,
                        };
                        Some((id.clone(), want))
                    })
                    .collect();
                for (id, s) in changes {
                    if s == MemberStatus::Down {
                        // Report the suspicion first if both deadlines passed
                        // within one check, so every Down follows a Suspect.
                        self.roster.set_status(now, &id, MemberStatus::Suspect, out);
                    }
                    self.roster.set_status(now, &id, s, out);
                }
                out.set_timer(self.params.check_interval, FdTimer::Check);
            }
            FdTimer::Swim(_) => {}
        }
    }
}

impl<Id: FdId> FailureDetector for Heartbeat<Id> {
    fn kind(&self) -> &'static str {
        "heartbeat"
    }

    fn view(&self) -> Vec<(Id, MemberStatus)> {
        self.roster.view()
    }

    fn add_member(&mut self, now: Duration, id: Id, out: &mut FdOutputs<Id>) {
        self.roster
            .admit(now, &id, || Peer { last_heard: now }, out);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::fd::SimId;

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

    #[test]
    fn silent_peer_goes_suspect_then_down_and_recovers() {
        let mut d = Heartbeat::new(SimId::new(0), params());
        let mut out = FdOutputs::new();
        d.add_member(Duration::ZERO, SimId::new(1), &mut out);
        d.on_start(Duration::ZERO, &mut out);
        assert_eq!(out.sends.len(), 1);
        for ms in (100..=9000).step_by(100) {
            d.on_timer(Duration::from_millis(ms), FdTimer::Check, &mut out);
        }
        assert_eq!(
            statuses(&out),
            vec![
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
            vec![(1, MemberStatus::Up, 0), (1, MemberStatus::Left, 1000)]
        );
    }
}
