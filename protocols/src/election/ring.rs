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
use std::fmt::Debug;
use std::time::Duration;

use serde::{Deserialize, Serialize};
use troupe_framework::membership::MemberEvent;
use troupe_framework::sansio::{Outputs, Protocol};

use super::{Election, ElectionEvent, ElectionState};
use crate::family::protocol_types;
use crate::group::Change;

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

/// Ring-election timers. Each is its own key: at most one of each is
/// pending.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RingElectionTimer {
    /// This member's election (or its announcement) did not come back.
    Timeout,
    /// Time for the leader to re-announce (a member that no longer leads
    /// lets it lapse).
    Heartbeat,
}

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
enum Phase {
    #[default]
    Idle,
    Electing,
    Announcing,
}

/// A ring-election core for one member.
pub type RingElection<Id> = Election<Id, RingState>;

/// Ring election's own state (see [`RingElection`]).
#[derive(Debug, Clone, Default)]
pub struct RingState {
    /// The phase of this member's election.
    phase: Phase,
    /// The leader of the current term has shown that it knows it leads.
    confirmed: bool,
}

impl<Id> ElectionState<Id> for RingState {}

type Out<Id> = Outputs<Id, RingElectionMsg<Id>, RingElectionTimer, ElectionEvent<Id>>;

impl<Id: MemberId> RingElection<Id> {
    fn me(&self) -> &Id {
        self.group.me()
    }

    fn successor(&self) -> Option<Id> {
        self.group.successor().cloned()
    }

    fn timeout(&self) -> Duration {
        self.config.election_timeout * self.group.size() as u32
    }

    fn start_election(&mut self, out: &mut Out<Id>) {
        self.alg.phase = Phase::Electing;
        out.set_timer(self.timeout(), RingElectionTimer::Timeout);
        match self.successor() {
            Some(next) => out.send(
                next,
                RingElectionMsg::Election {
                    origin: self.me().clone(),
                    ids: vec![self.me().clone()],
                    max_term: self.terms.max_term(),
                },
            ),
            None => self.conclude(vec![self.me().clone()], out),
        }
    }

    /// This member's election and its announcement are over: the timeout is
    /// void.
    fn end_election(&mut self, out: &mut Out<Id>) {
        self.alg.phase = Phase::Idle;
        out.cancel_timer(RingElectionTimer::Timeout);
    }

    fn conclude(&mut self, ids: Vec<Id>, out: &mut Out<Id>) {
        let Some(leader) = ids.into_iter().max() else {
            return;
        };
        let term = self.group.next_term_of(&leader, self.terms.max_term());
        self.accept(term, leader.clone(), out);
        match self.successor() {
            Some(next) => {
                self.alg.phase = Phase::Announcing;
                out.send(
                    next,
                    RingElectionMsg::Coordinator {
                        origin: self.me().clone(),
                        leader,
                        term,
                        hops: 1,
                    },
                );
            }
            None => self.end_election(out),
        }
    }

    fn follow(&mut self, term: u64, leader: Option<Id>, out: &mut Out<Id>) {
        if self.terms.follow(term, leader, out) {
            self.alg.confirmed = self.terms.is_leading();
        }
    }

    /// Follow `leader` in `term`; start heartbeats if that is this member.
    fn accept(&mut self, term: u64, leader: Id, out: &mut Out<Id>) {
        let was_leader = self.terms.is_leading() && self.terms.term() == term;
        let leads = leader == *self.me();
        self.follow(term, Some(leader), out);
        if leads && !was_leader {
            out.set_timer(self.config.heartbeat, RingElectionTimer::Heartbeat);
        }
    }

    fn reject(&self, to: Id, out: &mut Out<Id>) {
        let (term, leader) = self.terms.rejection();
        out.send(to, RingElectionMsg::Reject { term, leader });
    }
}

impl<Id: MemberId> Protocol for RingElection<Id> {
    protocol_types!(RingElectionMsg<Id>, RingElectionTimer, ElectionEvent<Id>);

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
                self.terms.observe(max_term);
                if origin == *self.me() {
                    if self.alg.phase == Phase::Electing {
                        self.conclude(ids, out);
                    }
                } else if self.alg.phase == Phase::Electing && origin < *self.me() {
                    // Chang–Roberts suppression: our own election, started by
                    // a higher id, covers this one.
                } else if !ids.contains(self.me()) {
                    ids.push(self.me().clone());
                    if let Some(next) = self.successor() {
                        out.send(
                            next,
                            RingElectionMsg::Election {
                                origin,
                                ids,
                                max_term: self.terms.max_term(),
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
                self.terms.observe(term);
                if origin == *self.me() {
                    if self.alg.phase == Phase::Announcing {
                        self.end_election(out);
                    }
                    return;
                }
                if hops as usize > self.group.size() {
                    return;
                }
                if self.terms.acceptable(term, &leader) {
                    self.accept(term, leader.clone(), out);
                    self.end_election(out);
                    if leader < *self.me() {
                        // Our id was missed (a lost message, or we restarted
                        // meanwhile): the highest live id must lead.
                        self.start_election(out);
                    }
                } else if leader != *self.me() {
                    self.reject(leader.clone(), out);
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
                self.terms.observe(term);
                if self.terms.acceptable(term, &from) {
                    let lower = from < *self.me();
                    self.accept(term, from, out);
                    self.end_election(out);
                    self.alg.confirmed = true;
                    if lower {
                        self.start_election(out);
                    }
                } else {
                    self.reject(from, out);
                }
            }
            RingElectionMsg::Reject { term, leader } => {
                if self.terms.step_down(term, leader, out) {
                    self.alg.confirmed = self.terms.is_leading();
                    self.end_election(out);
                    let me = self.me();
                    if self.terms.leader().is_none_or(|l| l < me) {
                        self.start_election(out);
                    }
                }
            }
        }
    }

    fn on_timer(&mut self, _now: Duration, timer: RingElectionTimer, out: &mut Out<Id>) {
        match timer {
            RingElectionTimer::Timeout => match self.alg.phase {
                Phase::Idle => {}
                // Our announcement did not come back, but a leader that
                // knows it leads repairs that with its heartbeats.
                Phase::Announcing if self.alg.confirmed => self.alg.phase = Phase::Idle,
                _ => self.start_election(out),
            },
            RingElectionTimer::Heartbeat => {
                if self.terms.is_leading() {
                    let term = self.terms.term();
                    for m in self.group.live_peers() {
                        out.send(m.clone(), RingElectionMsg::Heartbeat { term });
                    }
                    out.set_timer(self.config.heartbeat, RingElectionTimer::Heartbeat);
                }
            }
        }
    }

    fn on_membership(&mut self, _now: Duration, change: MemberEvent<Id>, out: &mut Out<Id>) {
        match self.group.apply(change) {
            Some(Change::Back(m)) => {
                let leading = self.terms.is_leading();
                if leading {
                    let term = self.terms.term();
                    out.send(m.clone(), RingElectionMsg::Heartbeat { term });
                }
                // Only the leader (or a member without one) starts the
                // election a higher newcomer calls for, to avoid N concurrent
                // elections.
                let leader = self.terms.leader();
                let higher = leader.is_none_or(|l| m > *l);
                if higher && (leading || leader.is_none()) && self.alg.phase == Phase::Idle {
                    self.start_election(out);
                }
            }
            Some(Change::Gone(m)) => {
                if self.terms.is_led_by(&m) {
                    self.follow(self.terms.term(), None, out);
                    if self.alg.phase == Phase::Idle {
                        self.start_election(out);
                    }
                }
            }
            Some(Change::Live(_)) | None => {}
        }
    }

    fn persist(&mut self, out: &mut Out<Id>) {
        self.save(out);
    }
}
