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
use std::fmt::Debug;
use std::time::Duration;

use serde::{Deserialize, Serialize};
use troupe_framework::membership::MemberEvent;
use troupe_framework::sansio::{Outputs, Protocol};

use super::{Election, ElectionEvent, ElectionState};
use crate::family::protocol_types;
use crate::group::Change;

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

/// A bully-election core for one member.
pub type Bully<Id> = Election<Id, BullyState>;

/// Bully's own state (see [`Bully`]): the phase of this member's election.
#[derive(Debug, Clone, Default)]
pub struct BullyState {
    phase: Phase,
}

impl<Id> ElectionState<Id> for BullyState {}

/// Where this member's election is.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
enum Phase {
    /// No election of its own running.
    #[default]
    Idle,
    /// Waiting for an `Alive` from a higher member.
    AwaitAlive,
    /// Got an `Alive`; waiting for the `Coordinator`.
    AwaitCoordinator,
}

/// Bully timers. Each is its own key: at most one of each is pending, the
/// timeout of the election phase this member is in (none when idle) and the
/// heartbeat while it leads.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum BullyTimer {
    /// No `Alive` arrived for this member's election.
    AliveTimeout,
    /// No `Coordinator` arrived after an `Alive`.
    CoordinatorTimeout,
    /// Time for the leader to re-announce (a member that no longer leads
    /// lets it lapse).
    Heartbeat,
}

type Out<Id> = Outputs<Id, BullyMsg<Id>, BullyTimer, ElectionEvent<Id>>;

impl<Id: MemberId> Bully<Id> {
    fn live_others(&self) -> Vec<Id> {
        self.group.live_peers().cloned().collect()
    }

    /// Leave the current election phase: its timeout is void.
    fn end_phase(&mut self, out: &mut Out<Id>) {
        match self.alg.phase {
            Phase::Idle => {}
            Phase::AwaitAlive => out.cancel_timer(BullyTimer::AliveTimeout),
            Phase::AwaitCoordinator => out.cancel_timer(BullyTimer::CoordinatorTimeout),
        }
        self.alg.phase = Phase::Idle;
    }

    fn start_election(&mut self, out: &mut Out<Id>) {
        self.end_phase(out);
        let me = self.group.me();
        let higher: Vec<Id> = self
            .group
            .live_peers()
            .filter(|m| *m > me)
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
                    max_term: self.terms.max_term(),
                },
            );
        }
        self.alg.phase = Phase::AwaitAlive;
        out.set_timer(self.config.election_timeout, BullyTimer::AliveTimeout);
    }

    fn become_leader(&mut self, out: &mut Out<Id>) {
        self.end_phase(out);
        let term = self.terms.claim(out);
        for m in self.live_others() {
            out.send(m, BullyMsg::Coordinator { term });
        }
        out.set_timer(self.config.heartbeat, BullyTimer::Heartbeat);
    }

    /// A leader claim for `term` from `from`: accept it or reject it.
    fn on_claim(&mut self, from: Id, term: u64, out: &mut Out<Id>) {
        if !self.terms.accept(term, from.clone(), out) {
            let (term, leader) = self.terms.rejection();
            return out.send(from, BullyMsg::Reject { term, leader });
        }
        self.end_phase(out);
        if from < *self.group.me() {
            // The bully rule: a lower member must not lead while I live.
            self.start_election(out);
        } else if !self.group.is_live(&from) {
            // A late claim of a leader already reported down: no `Down`
            // will come again to end its leadership, so elect now (if it
            // is in fact back, its `Up` brings another election).
            self.start_election(out);
        }
    }
}

impl<Id: MemberId> Protocol for Bully<Id> {
    protocol_types!(BullyMsg<Id>, BullyTimer, ElectionEvent<Id>);

    fn on_start(&mut self, _now: Duration, out: &mut Out<Id>) {
        self.start_election(out);
    }

    fn on_message(&mut self, _now: Duration, from: Id, msg: BullyMsg<Id>, out: &mut Out<Id>) {
        match msg {
            BullyMsg::Election { max_term } => {
                self.terms.observe(max_term);
                out.send(
                    from.clone(),
                    BullyMsg::Alive {
                        max_term: self.terms.max_term(),
                    },
                );
                if self.terms.is_leading() && self.terms.max_term() == self.terms.term() {
                    // Already leading with the newest term: just tell it again.
                    let term = self.terms.term();
                    out.send(from, BullyMsg::Coordinator { term });
                } else if self.alg.phase == Phase::Idle {
                    self.start_election(out);
                }
            }
            BullyMsg::Alive { max_term } => {
                self.terms.observe(max_term);
                if self.alg.phase == Phase::AwaitAlive && from > *self.group.me() {
                    self.end_phase(out);
                    self.alg.phase = Phase::AwaitCoordinator;
                    out.set_timer(
                        self.config.coordinator_timeout,
                        BullyTimer::CoordinatorTimeout,
                    );
                }
            }
            BullyMsg::Coordinator { term } | BullyMsg::Heartbeat { term } => {
                self.on_claim(from, term, out);
            }
            BullyMsg::Reject { term, leader } => {
                if self.terms.step_down(term, leader, out) {
                    self.end_phase(out);
                    let me = self.group.me();
                    if self.terms.leader().is_none_or(|l| l < me) {
                        self.start_election(out);
                    }
                }
            }
        }
    }

    fn on_timer(&mut self, _now: Duration, timer: BullyTimer, out: &mut Out<Id>) {
        match timer {
            BullyTimer::AliveTimeout => {
                if self.alg.phase == Phase::AwaitAlive {
                    self.become_leader(out);
                }
            }
            BullyTimer::CoordinatorTimeout => {
                if self.alg.phase == Phase::AwaitCoordinator {
                    self.start_election(out);
                }
            }
            BullyTimer::Heartbeat => {
                if self.terms.is_leading() {
                    let term = self.terms.term();
                    for m in self.live_others() {
                        out.send(m, BullyMsg::Heartbeat { term });
                    }
                    out.set_timer(self.config.heartbeat, BullyTimer::Heartbeat);
                }
            }
        }
    }

    fn on_membership(&mut self, _now: Duration, change: MemberEvent<Id>, out: &mut Out<Id>) {
        match self.group.apply(change) {
            Some(Change::Back(m)) => {
                if self.terms.is_leading() {
                    let term = self.terms.term();
                    out.send(m.clone(), BullyMsg::Coordinator { term });
                }
                let above_leader = self.terms.leader().is_none_or(|l| m > *l);
                if above_leader && self.alg.phase == Phase::Idle && m > *self.group.me() {
                    self.start_election(out);
                }
            }
            Some(Change::Gone(m)) => {
                if self.terms.is_led_by(&m) {
                    self.terms.leader_gone(out);
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
