//! The bully algorithm (Garcia-Molina, 1982): the highest live id leads.
//!
//! A member that notices the leader is gone (membership `Down`), that starts
//! up, or that sees a member above the current leader come `Up`, holds an
//! election: it sends `Election` to every live member with a higher id. Any
//! of them answers `Alive` and holds its own election; if nobody answers
//! within `election_timeout` the member declares itself leader and sends
//! `Coordinator` to all. A member that got an `Alive` but no `Coordinator`
//! within `coordinator_timeout` starts over. Worst case (the lowest id
//! notices first) costs O(N²) messages; the best case (the next-highest
//! notices) N-1.
//!
//! Terms: see the [`election`](super) module — a new leader claims the next
//! term of its stripe above every term it has seen (all messages carry the
//! sender's largest term), so there is at most one leader per term. A member
//! rejects a `Coordinator`/`Heartbeat` of an older term and answers `Reject`
//! with its term and leader; the stale leader adopts them (and, being higher,
//! bullies with a fresh election). A leader re-announces itself every
//! `heartbeat` so lost announcements are repaired.
//!
//! Partitions: each side elects its own highest member (two leaders, different
//! terms); after healing the `Up` reports trigger an election that the highest
//! id wins with a term above both.

use crate::MemberId;
use std::collections::BTreeSet;
use std::fmt::Debug;
use std::time::Duration;

use serde::{Deserialize, Serialize};
use troupe_framework::membership::{MemberEvent, MemberStatus};
use troupe_framework::sansio::{Outputs, Protocol, Snapshot, SnapshotCore};

use super::{next_term, ElectionConfig, ElectionCore, ElectionDurable, ElectionEvent};
use crate::testkit::SimProtocol;

/// Bully wire messages. Every message carries the sender's largest term seen.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum BullyMsg<Id> {
    /// "I am holding an election; are you alive?" (to higher ids).
    Election {
        /// Sender's largest term seen.
        max_term: u64,
    },
    /// "I am alive and will take over" (answer to `Election`).
    Alive {
        /// Sender's largest term seen.
        max_term: u64,
    },
    /// "I am the leader of `term`."
    Coordinator {
        /// The new term.
        term: u64,
    },
    /// Periodic re-announcement of the leader of `term`.
    Heartbeat {
        /// The leader's term.
        term: u64,
    },
    /// "Your term is old: `term` is led by `leader`."
    Reject {
        /// The newer term.
        term: u64,
        /// Its leader, if known.
        leader: Option<Id>,
    },
}

/// Bully timers.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum BullyTimer {
    /// No `Alive` arrived for election `round`.
    AliveTimeout {
        /// Which election.
        round: u64,
    },
    /// No `Coordinator` arrived after an `Alive` in election `round`.
    CoordinatorTimeout {
        /// Which election.
        round: u64,
    },
    /// Time for the leader to re-announce (leadership `round`).
    Heartbeat {
        /// Which leadership.
        round: u64,
    },
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Phase {
    Idle,
    AwaitAlive,
    AwaitCoordinator,
}

/// A bully-election core for one member.
#[derive(Debug, Clone)]
pub struct Bully<Id> {
    me: Id,
    members: Vec<Id>,
    down: BTreeSet<Id>,
    config: ElectionConfig,
    saved: Snapshot<ElectionDurable<Id>>,
    term: u64,
    max_term: u64,
    leader: Option<Id>,
    phase: Phase,
    round: u64,
    hb_round: u64,
}

type Out<Id> = Outputs<Id, BullyMsg<Id>, BullyTimer, ElectionEvent<Id>>;

impl<Id: MemberId> Bully<Id> {
    /// A core for `me` among `members`, restarted from `durable` if given.
    pub fn new(
        me: Id,
        members: impl IntoIterator<Item = Id>,
        config: ElectionConfig,
        durable: Option<ElectionDurable<Id>>,
    ) -> Self {
        let members = crate::mutex::group(&me, members);
        let saved = Snapshot::resumed(durable.clone());
        let d = durable.unwrap_or_default();
        Self {
            me,
            members,
            down: BTreeSet::new(),
            config,
            saved,
            term: d.term,
            max_term: d.max_term.max(d.term),
            leader: None,
            phase: Phase::Idle,
            round: 0,
            hb_round: 0,
        }
    }

    fn live_others(&self) -> impl Iterator<Item = &Id> + '_ {
        self.members
            .iter()
            .filter(move |m| **m != self.me && !self.down.contains(*m))
    }

    fn rank(&self) -> usize {
        super::super::mutex::rank(&self.members, &self.me)
    }

    fn start_election(&mut self, out: &mut Out<Id>) {
        self.round += 1;
        let higher: Vec<Id> = self
            .live_others()
            .filter(|m| **m > self.me)
            .cloned()
            .collect();
        if higher.is_empty() {
            self.become_leader(out);
            return;
        }
        for h in higher {
            out.send(
                h,
                BullyMsg::Election {
                    max_term: self.max_term,
                },
            );
        }
        self.phase = Phase::AwaitAlive;
        out.set_timer(
            self.config.election_timeout,
            BullyTimer::AliveTimeout { round: self.round },
        );
    }

    fn become_leader(&mut self, out: &mut Out<Id>) {
        self.round += 1;
        let term = next_term(self.max_term, self.rank(), self.members.len());
        self.max_term = term;
        self.term = term;
        self.leader = Some(self.me.clone());
        self.phase = Phase::Idle;
        let others: Vec<Id> = self.live_others().cloned().collect();
        for m in others {
            out.send(m, BullyMsg::Coordinator { term });
        }
        out.emit(ElectionEvent::LeaderChanged {
            term,
            leader: Some(self.me.clone()),
        });
        self.hb_round += 1;
        out.set_timer(
            self.config.heartbeat,
            BullyTimer::Heartbeat {
                round: self.hb_round,
            },
        );
    }

    fn set_leader(&mut self, term: u64, leader: Option<Id>, out: &mut Out<Id>) {
        if self.term != term || self.leader != leader {
            self.term = term;
            self.max_term = self.max_term.max(term);
            self.leader = leader.clone();
            out.emit(ElectionEvent::LeaderChanged { term, leader });
        }
    }

    /// A leader claim for `term` from `from`: accept it or reject it.
    fn on_claim(&mut self, from: Id, term: u64, out: &mut Out<Id>) {
        self.max_term = self.max_term.max(term);
        let acceptable = term > self.term
            || (term == self.term
                && (self.leader.is_none() || self.leader.as_ref() == Some(&from)));
        if acceptable {
            self.round += 1; // cancels pending election timers
            self.phase = Phase::Idle;
            self.set_leader(term, Some(from.clone()), out);
            if from < self.me {
                // The bully rule: a lower member must not lead while I live.
                self.start_election(out);
            }
        } else {
            out.send(
                from,
                BullyMsg::Reject {
                    term: self.term,
                    leader: self.leader.clone(),
                },
            );
        }
    }
}

impl<Id: MemberId> ElectionCore for Bully<Id> {
    fn term(&self) -> u64 {
        self.term
    }
    fn leader(&self) -> Option<&Id> {
        self.leader.as_ref()
    }
    fn id(&self) -> &Id {
        &self.me
    }
}

impl<Id: MemberId> Protocol for Bully<Id> {
    type Id = Id;
    type Msg = BullyMsg<Id>;
    type Timer = BullyTimer;
    type Event = ElectionEvent<Id>;

    fn persist(&mut self, out: &mut Out<Id>) {
        let state = self.state();
        self.saved.save(state, out);
    }

    fn on_start(&mut self, _now: Duration, out: &mut Out<Id>) {
        self.start_election(out);
    }

    fn on_message(&mut self, _now: Duration, from: Id, msg: BullyMsg<Id>, out: &mut Out<Id>) {
        match msg {
            BullyMsg::Election { max_term } => {
                self.max_term = self.max_term.max(max_term);
                out.send(
                    from.clone(),
                    BullyMsg::Alive {
                        max_term: self.max_term,
                    },
                );
                if self.leader.as_ref() == Some(&self.me) && self.max_term == self.term {
                    // Already leading with the newest term: just tell it again.
                    out.send(from, BullyMsg::Coordinator { term: self.term });
                } else if self.phase == Phase::Idle {
                    self.start_election(out);
                }
            }
            BullyMsg::Alive { max_term } => {
                self.max_term = self.max_term.max(max_term);
                if self.phase == Phase::AwaitAlive && from > self.me {
                    self.phase = Phase::AwaitCoordinator;
                    out.set_timer(
                        self.config.coordinator_timeout,
                        BullyTimer::CoordinatorTimeout { round: self.round },
                    );
                }
            }
            BullyMsg::Coordinator { term } | BullyMsg::Heartbeat { term } => {
                self.on_claim(from, term, out);
            }
            BullyMsg::Reject { term, leader } => {
                self.max_term = self.max_term.max(term);
                if term > self.term {
                    self.round += 1;
                    self.phase = Phase::Idle;
                    self.set_leader(term, leader.clone(), out);
                    let below_me = leader.as_ref().is_none_or(|l| *l < self.me);
                    if below_me {
                        self.start_election(out);
                    }
                }
            }
        }
    }

    fn on_timer(&mut self, _now: Duration, timer: BullyTimer, out: &mut Out<Id>) {
        match timer {
            BullyTimer::AliveTimeout { round } => {
                if round == self.round && self.phase == Phase::AwaitAlive {
                    self.become_leader(out);
                }
            }
            BullyTimer::CoordinatorTimeout { round } => {
                if round == self.round && self.phase == Phase::AwaitCoordinator {
                    self.start_election(out);
                }
            }
            BullyTimer::Heartbeat { round } => {
                if round == self.hb_round && self.leader.as_ref() == Some(&self.me) {
                    let others: Vec<Id> = self.live_others().cloned().collect();
                    for m in others {
                        out.send(m, BullyMsg::Heartbeat { term: self.term });
                    }
                    out.set_timer(self.config.heartbeat, BullyTimer::Heartbeat { round });
                }
            }
        }
    }

    fn on_membership(&mut self, _now: Duration, change: MemberEvent<Id>, out: &mut Out<Id>) {
        let m = change.member;
        if m == self.me || !self.members.contains(&m) {
            return;
        }
        if change.status.is_live() {
            if !self.down.remove(&m) {
                return;
            }
            if self.leader.as_ref() == Some(&self.me) {
                out.send(m.clone(), BullyMsg::Coordinator { term: self.term });
            }
            let above_leader = self.leader.as_ref().is_none_or(|l| m > *l);
            if above_leader && self.phase == Phase::Idle && m > self.me {
                self.start_election(out);
            }
        } else if matches!(change.status, MemberStatus::Down | MemberStatus::Left) {
            self.down.insert(m.clone());
            if self.leader.as_ref() == Some(&m) {
                self.set_leader(self.term, None, out);
                if self.phase == Phase::Idle {
                    self.start_election(out);
                }
            }
        }
    }
}

impl<Id: MemberId> SnapshotCore for Bully<Id> {
    type State = ElectionDurable<Id>;
    fn state(&self) -> ElectionDurable<Id> {
        ElectionDurable {
            term: self.term,
            max_term: self.max_term,
            successors: Vec::new(),
        }
    }
}

impl<Id: MemberId> SimProtocol for Bully<Id> {
    fn msg_kind(msg: &BullyMsg<Id>) -> &'static str {
        match msg {
            BullyMsg::Election { .. } => "election",
            BullyMsg::Alive { .. } => "alive",
            BullyMsg::Coordinator { .. } => "coordinator",
            BullyMsg::Heartbeat { .. } => "heartbeat",
            BullyMsg::Reject { .. } => "reject",
        }
    }
}
