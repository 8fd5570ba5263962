//! Ring election (Chang–Roberts style, collecting ids).
//!
//! Members form a logical ring in id order. An initiator (a member that
//! notices the leader is gone, starts up, or sees a member above the leader
//! come `Up`) sends `Election` to its next *live* successor (members reported
//! down are skipped); each member appends its id and forwards it. When the
//! message is back at the initiator it holds every live id; the initiator
//! picks the largest as leader, with a fresh term of the leader's stripe
//! above every term the message saw, and circulates `Coordinator` once around
//! the ring. About 2N messages per election (N for the election, N for the
//! announcement); concurrent initiators each pay that.
//!
//! Terms, rejection of older terms, step-down and re-announcement are as in
//! the [`election`](super) module. A message whose initiator has died is
//! dropped by the first member that sees it a second time (its id is already
//! in it) or after N hops. A lost message (lost in the network or sent to a
//! successor that died before it was reported down) is repaired by the
//! initiator's timeout (`election_timeout × N`), which starts over.
//!
//! Partitions: each side elects its own highest member (two leaders,
//! different terms). After healing, a leader that sees a higher member come
//! `Up`, or that is rejected by a member of a newer term, starts an election
//! that the highest live id wins with a term above both.

use crate::MemberId;
use std::collections::BTreeSet;
use std::fmt::Debug;
use std::time::Duration;

use serde::{Deserialize, Serialize};
use troupe_framework::membership::{MemberEvent, MemberStatus};
use troupe_framework::sansio::{Outputs, Protocol, Snapshot, SnapshotCore};

use super::{next_term, ElectionConfig, ElectionCore, ElectionDurable, ElectionEvent};
use crate::mutex::rank;
use crate::testkit::SimProtocol;

/// Ring-election wire messages.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum RingElectionMsg<Id> {
    /// Collects live ids around the ring.
    Election {
        /// Who started it.
        origin: Id,
        /// Ids collected so far, in ring order.
        ids: Vec<Id>,
        /// Largest term seen on the way.
        max_term: u64,
    },
    /// Announces `leader` for `term` around the ring.
    Coordinator {
        /// Who started the election.
        origin: Id,
        /// The elected leader.
        leader: Id,
        /// Its term.
        term: u64,
        /// Hops so far (dropped after N).
        hops: u32,
    },
    /// Periodic re-announcement, sent by the leader to each member directly.
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

/// Ring-election timers.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RingElectionTimer {
    /// The election (or its announcement) of `round` did not come back.
    Timeout {
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
    Electing,
    Announcing,
}

/// A ring-election core for one member.
#[derive(Debug, Clone)]
pub struct RingElection<Id> {
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
    /// The leader of the current term has shown that it knows it leads.
    confirmed: bool,
}

type Out<Id> = Outputs<Id, RingElectionMsg<Id>, RingElectionTimer, ElectionEvent<Id>>;

impl<Id: MemberId> RingElection<Id> {
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
            confirmed: false,
        }
    }

    fn successor(&self) -> Option<Id> {
        let live = |m: &&Id| **m != self.me && !self.down.contains(*m);
        let i = rank(&self.members, &self.me);
        self.members[i + 1..]
            .iter()
            .find(live)
            .or_else(|| self.members[..i].iter().find(live))
            .cloned()
    }

    fn timeout(&self) -> Duration {
        self.config.election_timeout * self.members.len().max(1) as u32
    }

    fn start_election(&mut self, out: &mut Out<Id>) {
        self.round += 1;
        self.phase = Phase::Electing;
        out.set_timer(
            self.timeout(),
            RingElectionTimer::Timeout { round: self.round },
        );
        match self.successor() {
            Some(next) => out.send(
                next,
                RingElectionMsg::Election {
                    origin: self.me.clone(),
                    ids: vec![self.me.clone()],
                    max_term: self.max_term,
                },
            ),
            None => self.conclude(vec![self.me.clone()], out),
        }
    }

    fn conclude(&mut self, ids: Vec<Id>, out: &mut Out<Id>) {
        let Some(leader) = ids.into_iter().max() else {
            return;
        };
        let term = next_term(
            self.max_term,
            rank(&self.members, &leader),
            self.members.len(),
        );
        self.phase = Phase::Announcing;
        self.accept(term, leader.clone(), out);
        self.phase = Phase::Announcing;
        match self.successor() {
            Some(next) => out.send(
                next,
                RingElectionMsg::Coordinator {
                    origin: self.me.clone(),
                    leader,
                    term,
                    hops: 1,
                },
            ),
            None => self.phase = Phase::Idle,
        }
    }

    fn set_leader(&mut self, term: u64, leader: Option<Id>, out: &mut Out<Id>) {
        self.max_term = self.max_term.max(term);
        if self.term != term || self.leader != leader {
            self.term = term;
            self.confirmed = leader.as_ref() == Some(&self.me);
            self.leader = leader.clone();
            out.emit(ElectionEvent::LeaderChanged { term, leader });
        }
    }

    fn acceptable(&self, term: u64, leader: &Id) -> bool {
        term > self.term || (term == self.term && self.leader.as_ref().is_none_or(|l| l == leader))
    }

    fn accept(&mut self, term: u64, leader: Id, out: &mut Out<Id>) {
        let was_leader = self.leader.as_ref() == Some(&self.me) && self.term == term;
        self.set_leader(term, Some(leader.clone()), out);
        self.phase = Phase::Idle;
        if leader == self.me && !was_leader {
            self.hb_round += 1;
            out.set_timer(
                self.config.heartbeat,
                RingElectionTimer::Heartbeat {
                    round: self.hb_round,
                },
            );
        }
    }

    fn live_others(&self) -> Vec<Id> {
        self.members
            .iter()
            .filter(|m| **m != self.me && !self.down.contains(*m))
            .cloned()
            .collect()
    }
}

impl<Id: MemberId> ElectionCore for RingElection<Id> {
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

impl<Id: MemberId> Protocol for RingElection<Id> {
    type Id = Id;
    type Msg = RingElectionMsg<Id>;
    type Timer = RingElectionTimer;
    type Event = ElectionEvent<Id>;

    fn persist(&mut self, out: &mut Out<Id>) {
        let state = self.state();
        self.saved.save(state, out);
    }

    fn on_start(&mut self, _now: Duration, out: &mut Out<Id>) {
        self.start_election(out);
    }

    fn on_message(
        &mut self,
        _now: Duration,
        from: Id,
        msg: RingElectionMsg<Id>,
        out: &mut Out<Id>,
    ) {
        match msg {
            RingElectionMsg::Election {
                origin,
                mut ids,
                max_term,
            } => {
                self.max_term = self.max_term.max(max_term);
                if origin == self.me {
                    if self.phase == Phase::Electing {
                        self.conclude(ids, out);
                    }
                } else if self.phase == Phase::Electing && origin < self.me {
                    // Chang–Roberts suppression: our own election, started by
                    // a higher id, covers this one.
                } else if !ids.contains(&self.me) {
                    ids.push(self.me.clone());
                    if let Some(next) = self.successor() {
                        out.send(
                            next,
                            RingElectionMsg::Election {
                                origin,
                                ids,
                                max_term: self.max_term,
                            },
                        );
                    }
                }
            }
            RingElectionMsg::Coordinator {
                origin,
                leader,
                term,
                hops,
            } => {
                self.max_term = self.max_term.max(term);
                if origin == self.me {
                    if self.phase == Phase::Announcing {
                        self.phase = Phase::Idle;
                    }
                    return;
                }
                if hops as usize > self.members.len() {
                    return;
                }
                if self.acceptable(term, &leader) {
                    self.accept(term, leader.clone(), out);
                    if leader < self.me {
                        // Our id was missed (a lost message, or we restarted
                        // meanwhile): the highest live id must lead.
                        self.start_election(out);
                    }
                } else if leader != self.me {
                    out.send(
                        leader.clone(),
                        RingElectionMsg::Reject {
                            term: self.term,
                            leader: self.leader.clone(),
                        },
                    );
                }
                if let Some(next) = self.successor() {
                    out.send(
                        next,
                        RingElectionMsg::Coordinator {
                            origin,
                            leader,
                            term,
                            hops: hops + 1,
                        },
                    );
                }
            }
            RingElectionMsg::Heartbeat { term } => {
                self.max_term = self.max_term.max(term);
                if self.acceptable(term, &from) {
                    let lower = from < self.me;
                    self.accept(term, from, out);
                    self.confirmed = true;
                    if lower && self.phase == Phase::Idle {
                        self.start_election(out);
                    }
                } else {
                    out.send(
                        from,
                        RingElectionMsg::Reject {
                            term: self.term,
                            leader: self.leader.clone(),
                        },
                    );
                }
            }
            RingElectionMsg::Reject { term, leader } => {
                self.max_term = self.max_term.max(term);
                if term > self.term {
                    self.round += 1;
                    self.phase = Phase::Idle;
                    self.set_leader(term, leader.clone(), out);
                    if leader.as_ref().is_none_or(|l| *l < self.me) {
                        self.start_election(out);
                    }
                }
            }
        }
    }

    fn on_timer(&mut self, _now: Duration, timer: RingElectionTimer, out: &mut Out<Id>) {
        match timer {
            RingElectionTimer::Timeout { round } => {
                if round != self.round {
                    return;
                }
                match self.phase {
                    Phase::Idle => {}
                    // Our announcement did not come back, but a leader that
                    // knows it leads repairs that with its heartbeats.
                    Phase::Announcing if self.confirmed => self.phase = Phase::Idle,
                    _ => self.start_election(out),
                }
            }
            RingElectionTimer::Heartbeat { round } => {
                if round == self.hb_round && self.leader.as_ref() == Some(&self.me) {
                    for m in self.live_others() {
                        out.send(m, RingElectionMsg::Heartbeat { term: self.term });
                    }
                    out.set_timer(
                        self.config.heartbeat,
                        RingElectionTimer::Heartbeat { round },
                    );
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
            let leading = self.leader.as_ref() == Some(&self.me);
            if leading {
                out.send(m.clone(), RingElectionMsg::Heartbeat { term: self.term });
            }
            // Only the leader (or a member without one) starts the election a
            // higher newcomer calls for, to avoid N concurrent elections.
            let higher = self.leader.as_ref().is_none_or(|l| m > *l);
            if higher && (leading || self.leader.is_none()) && self.phase == Phase::Idle {
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

impl<Id: MemberId> SnapshotCore for RingElection<Id> {
    type State = ElectionDurable<Id>;
    fn state(&self) -> ElectionDurable<Id> {
        ElectionDurable {
            term: self.term,
            max_term: self.max_term,
            successors: Vec::new(),
        }
    }
}

impl<Id: MemberId> SimProtocol for RingElection<Id> {
    fn msg_kind(msg: &RingElectionMsg<Id>) -> &'static str {
        match msg {
            RingElectionMsg::Election { .. } => "election",
            RingElectionMsg::Coordinator { .. } => "coordinator",
            RingElectionMsg::Heartbeat { .. } => "heartbeat",
            RingElectionMsg::Reject { .. } => "reject",
        }
    }
}
