//! Next-in-line failover: the leader names its successors.
//!
//! The leader publishes an ordered successor list (the other live members,
//! highest id first) with every announcement and heartbeat, and again
//! whenever the membership changes. When the leader is reported down, every
//! member looks at the last list it received: the first live member on it
//! promotes itself at once (a new term of its stripe) and announces itself —
//! no election round. The others wait `election_timeout` for that
//! announcement; if it does not come, they skip that successor and try the
//! next one. A member that starts (or restarts) first listens for two
//! heartbeat periods before acting, so it does not depose a working leader.
//! Before any list exists the configured member list, highest first, is used.
//! Cost: N-1 messages per failover (the new leader's announcement).
//!
//! Terms, rejection of older terms and step-down are as in the
//! [`election`](super) module; the successor list is kept on stable storage
//! with the term. Partitions: the side without the leader promotes its first
//! live successor (two leaders, different terms); after healing the leaders
//! hear of each other and the newer term wins. Unlike bully and ring, the
//! survivor is not necessarily the highest id.

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

/// Next-in-line wire messages.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum NextInLineMsg<Id> {
    /// "I lead `term`; after me come `successors`, in this order."
    Coordinator {
        /// The leader's term.
        term: u64,
        /// Ordered successor list.
        successors: Vec<Id>,
    },
    /// Periodic re-announcement (same content).
    Heartbeat {
        /// The leader's term.
        term: u64,
        /// Ordered successor list.
        successors: Vec<Id>,
    },
    /// "Your term is old: `term` is led by `leader`."
    Reject {
        /// The newer term.
        term: u64,
        /// Its leader, if known.
        leader: Option<Id>,
    },
}

/// Next-in-line timers.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum NextInLineTimer {
    /// The expected successor did not announce itself (takeover `round`).
    Takeover {
        /// Which wait.
        round: u64,
    },
    /// Time for the leader to re-announce (leadership `round`).
    Heartbeat {
        /// Which leadership.
        round: u64,
    },
}

/// A next-in-line core for one member.
#[derive(Debug, Clone)]
pub struct NextInLine<Id> {
    me: Id,
    members: Vec<Id>,
    down: BTreeSet<Id>,
    config: ElectionConfig,
    saved: Snapshot<ElectionDurable<Id>>,
    term: u64,
    max_term: u64,
    leader: Option<Id>,
    successors: Vec<Id>,
    skipped: BTreeSet<Id>,
    round: u64,
    hb_round: u64,
    listening: bool,
    awaiting: Option<Id>,
}

type Out<Id> = Outputs<Id, NextInLineMsg<Id>, NextInLineTimer, ElectionEvent<Id>>;

impl<Id: MemberId> NextInLine<Id> {
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
        let successors = if d.successors.is_empty() {
            members.iter().rev().cloned().collect()
        } else {
            d.successors
        };
        Self {
            me,
            members,
            down: BTreeSet::new(),
            config,
            saved,
            term: d.term,
            max_term: d.max_term.max(d.term),
            leader: None,
            successors,
            skipped: BTreeSet::new(),
            round: 0,
            hb_round: 0,
            listening: false,
            awaiting: None,
        }
    }

    /// The successor list this member last received (or published).
    pub fn successors(&self) -> &[Id] {
        &self.successors
    }

    fn is_live(&self, m: &Id) -> bool {
        *m == self.me || !self.down.contains(m)
    }

    fn live_others_desc(&self) -> Vec<Id> {
        self.members
            .iter()
            .rev()
            .filter(|m| **m != self.me && !self.down.contains(*m))
            .cloned()
            .collect()
    }

    /// The leader is gone: promote ourselves if we are next, else wait.
    fn take_over(&mut self, out: &mut Out<Id>) {
        if self.leader.is_some() {
            return;
        }
        let candidate = self
            .successors
            .iter()
            .find(|m| self.is_live(m) && !self.skipped.contains(*m))
            .cloned();
        match candidate {
            Some(c) if c != self.me => {
                if self.awaiting.as_ref() == Some(&c) {
                    return; // already waiting for it
                }
                self.awaiting = Some(c);
                self.round += 1;
                out.set_timer(
                    self.config.election_timeout,
                    NextInLineTimer::Takeover { round: self.round },
                );
            }
            // Next in line, or nobody left on the list: lead.
            _ => self.become_leader(out),
        }
    }

    fn become_leader(&mut self, out: &mut Out<Id>) {
        self.round += 1;
        let term = next_term(
            self.max_term,
            rank(&self.members, &self.me),
            self.members.len(),
        );
        self.successors = self.live_others_desc();
        self.skipped.clear();
        self.set_leader(term, Some(self.me.clone()), out);
        self.publish(false, out);
        self.hb_round += 1;
        out.set_timer(
            self.config.heartbeat,
            NextInLineTimer::Heartbeat {
                round: self.hb_round,
            },
        );
    }

    fn publish(&mut self, heartbeat: bool, out: &mut Out<Id>) {
        self.successors = self.live_others_desc();
        for m in self.live_others_desc() {
            let successors = self.successors.clone();
            let msg = if heartbeat {
                NextInLineMsg::Heartbeat {
                    term: self.term,
                    successors,
                }
            } else {
                NextInLineMsg::Coordinator {
                    term: self.term,
                    successors,
                }
            };
            out.send(m, msg);
        }
    }

    fn set_leader(&mut self, term: u64, leader: Option<Id>, out: &mut Out<Id>) {
        self.max_term = self.max_term.max(term);
        if leader.is_some() {
            self.awaiting = None;
        }
        if self.term != term || self.leader != leader {
            self.term = term;
            self.leader = leader.clone();
            out.emit(ElectionEvent::LeaderChanged { term, leader });
        }
    }

    fn on_claim(&mut self, from: Id, term: u64, successors: Vec<Id>, out: &mut Out<Id>) {
        self.max_term = self.max_term.max(term);
        let acceptable = term > self.term
            || (term == self.term && self.leader.as_ref().is_none_or(|l| *l == from));
        if acceptable {
            self.round += 1; // cancels a pending takeover wait
            self.skipped.clear();
            self.successors = successors;
            self.set_leader(term, Some(from), out);
        } else {
            out.send(
                from,
                NextInLineMsg::Reject {
                    term: self.term,
                    leader: self.leader.clone(),
                },
            );
        }
    }

    fn is_leading(&self) -> bool {
        self.leader.as_ref() == Some(&self.me)
    }
}

impl<Id: MemberId> ElectionCore for NextInLine<Id> {
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

impl<Id: MemberId> Protocol for NextInLine<Id> {
    type Id = Id;
    type Msg = NextInLineMsg<Id>;
    type Timer = NextInLineTimer;
    type Event = ElectionEvent<Id>;

    fn persist(&mut self, out: &mut Out<Id>) {
        let state = self.state();
        self.saved.save(state, out);
    }

    fn on_start(&mut self, _now: Duration, out: &mut Out<Id>) {
        // Listen first: a leader may already be running.
        self.round += 1;
        self.listening = true;
        out.set_timer(
            self.config.heartbeat * 2,
            NextInLineTimer::Takeover { round: self.round },
        );
    }

    fn on_message(&mut self, _now: Duration, from: Id, msg: NextInLineMsg<Id>, out: &mut Out<Id>) {
        match msg {
            NextInLineMsg::Coordinator { term, successors }
            | NextInLineMsg::Heartbeat { term, successors } => {
                self.on_claim(from, term, successors, out);
            }
            NextInLineMsg::Reject { term, leader } => {
                self.max_term = self.max_term.max(term);
                if term > self.term {
                    // Step down and follow the newer term.
                    self.round += 1;
                    self.set_leader(term, leader, out);
                    self.take_over(out);
                }
            }
        }
    }

    fn on_timer(&mut self, _now: Duration, timer: NextInLineTimer, out: &mut Out<Id>) {
        match timer {
            NextInLineTimer::Takeover { round } => {
                if round != self.round || self.leader.is_some() {
                    return;
                }
                let listened = std::mem::replace(&mut self.listening, false);
                // The expected successor stayed silent: skip it.
                if let Some(c) = self.awaiting.take() {
                    if !listened {
                        self.skipped.insert(c);
                    }
                }
                self.take_over(out);
            }
            NextInLineTimer::Heartbeat { round } => {
                if round == self.hb_round && self.is_leading() {
                    self.publish(true, out);
                    out.set_timer(self.config.heartbeat, NextInLineTimer::Heartbeat { round });
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
            if self.down.remove(&m) {
                self.skipped.remove(&m);
                if self.is_leading() {
                    self.publish(false, out);
                }
            }
        } else if matches!(change.status, MemberStatus::Down | MemberStatus::Left) {
            self.down.insert(m.clone());
            if self.leader.as_ref() == Some(&m) {
                self.set_leader(self.term, None, out);
                self.take_over(out);
            } else if self.leader.is_none() {
                // Perhaps the one we were waiting for: look again.
                if self.awaiting.as_ref() == Some(&m) {
                    self.awaiting = None;
                }
                self.take_over(out);
            } else if self.is_leading() {
                self.publish(false, out);
            }
        }
    }
}

impl<Id: MemberId> SnapshotCore for NextInLine<Id> {
    type State = ElectionDurable<Id>;
    fn state(&self) -> ElectionDurable<Id> {
        ElectionDurable {
            term: self.term,
            max_term: self.max_term,
            successors: self.successors.clone(),
        }
    }
}

impl<Id: MemberId> SimProtocol for NextInLine<Id> {
    fn msg_kind(msg: &NextInLineMsg<Id>) -> &'static str {
        match msg {
            NextInLineMsg::Coordinator { .. } => "coordinator",
            NextInLineMsg::Heartbeat { .. } => "heartbeat",
            NextInLineMsg::Reject { .. } => "reject",
        }
    }
}
