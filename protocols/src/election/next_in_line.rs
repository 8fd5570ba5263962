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
use troupe_framework::membership::MemberEvent;
use troupe_framework::sansio::{Outputs, Protocol};

use super::{Election, ElectionDurable, ElectionEvent, ElectionState};
use crate::family::protocol_types;
use crate::group::{Change, Group};

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

/// Next-in-line timers. Each is its own key: at most one of each is
/// pending.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum NextInLineTimer {
    /// The expected successor did not announce itself (or, after a start,
    /// no leader was heard).
    Takeover,
    /// Time for the leader to re-announce (a member that no longer leads
    /// lets it lapse).
    Heartbeat,
}

/// A next-in-line core for one member.
pub type NextInLine<Id> = Election<Id, NextInLineState<Id>>;

/// Next-in-line's own state (see [`NextInLine`]).
#[derive(Debug, Clone)]
pub struct NextInLineState<Id> {
    /// The successor list last received (or published); kept durably.
    successors: Vec<Id>,
    /// Successors that stayed silent when their turn came.
    skipped: BTreeSet<Id>,
    /// Listening for a running leader after a (re)start.
    listening: bool,
    /// The successor expected to announce itself.
    awaiting: Option<Id>,
}

impl<Id> Default for NextInLineState<Id> {
    fn default() -> Self {
        Self {
            successors: Vec::new(),
            skipped: BTreeSet::new(),
            listening: false,
            awaiting: None,
        }
    }
}

impl<Id: MemberId> ElectionState<Id> for NextInLineState<Id> {
    fn resume(&mut self, group: &Group<Id>, durable: &ElectionDurable<Id>) {
        // Before any list was published: the members, highest first.
        self.successors = if durable.successors.is_empty() {
            group.members().iter().rev().cloned().collect()
        } else {
            durable.successors.clone()
        };
    }

    fn successors(&self) -> Vec<Id> {
        self.successors.clone()
    }
}

type Out<Id> = Outputs<Id, NextInLineMsg<Id>, NextInLineTimer, ElectionEvent<Id>>;

impl<Id: MemberId> NextInLine<Id> {
    /// The successor list this member last received (or published).
    pub fn successors(&self) -> &[Id] {
        &self.alg.successors
    }

    fn live_others_desc(&self) -> Vec<Id> {
        self.group.live_peers().rev().cloned().collect()
    }

    /// The leader is gone: promote ourselves if we are next, else wait.
    fn take_over(&mut self, out: &mut Out<Id>) {
        if self.terms.leader().is_some() {
            return;
        }
        let candidate = self
            .alg
            .successors
            .iter()
            .find(|m| self.group.is_live(m) && !self.alg.skipped.contains(*m))
            .cloned();
        match candidate {
            Some(c) if c != *self.group.me() => {
                if self.alg.awaiting.as_ref() == Some(&c) {
                    return; // already waiting for it
                }
                self.alg.awaiting = Some(c);
                out.set_timer(self.config.election_timeout, NextInLineTimer::Takeover);
            }
            // Next in line, or nobody left on the list: lead.
            _ => self.become_leader(out),
        }
    }

    fn become_leader(&mut self, out: &mut Out<Id>) {
        out.cancel_timer(NextInLineTimer::Takeover);
        self.alg.successors = self.live_others_desc();
        self.alg.skipped.clear();
        self.terms.claim(out);
        self.alg.awaiting = None;
        self.publish(false, out);
        out.set_timer(self.config.heartbeat, NextInLineTimer::Heartbeat);
    }

    fn publish(&mut self, heartbeat: bool, out: &mut Out<Id>) {
        self.alg.successors = self.live_others_desc();
        let term = self.terms.term();
        for m in self.live_others_desc() {
            let successors = self.alg.successors.clone();
            let msg = if heartbeat {
                NextInLineMsg::Heartbeat { term, successors }
            } else {
                NextInLineMsg::Coordinator { term, successors }
            };
            out.send(m, msg);
        }
    }

    fn on_claim(&mut self, from: Id, term: u64, successors: Vec<Id>, out: &mut Out<Id>) {
        if self.terms.accept(term, from.clone(), out) {
            out.cancel_timer(NextInLineTimer::Takeover);
            // A leader heard: the start-up listening is over.
            self.alg.listening = false;
            self.alg.skipped.clear();
            self.alg.successors = successors;
            self.alg.awaiting = None;
        } else {
            let (term, leader) = self.terms.rejection();
            out.send(from, NextInLineMsg::Reject { term, leader });
        }
    }
}

impl<Id: MemberId> Protocol for NextInLine<Id> {
    protocol_types!(NextInLineMsg<Id>, NextInLineTimer, ElectionEvent<Id>);

    fn on_start(&mut self, _now: Duration, out: &mut Out<Id>) {
        // Listen first: a leader may already be running.
        self.alg.listening = true;
        out.set_timer(self.config.heartbeat * 2, NextInLineTimer::Takeover);
    }

    fn on_message(&mut self, _now: Duration, from: Id, msg: NextInLineMsg<Id>, out: &mut Out<Id>) {
        match msg {
            NextInLineMsg::Coordinator { term, successors }
            | NextInLineMsg::Heartbeat { term, successors } => {
                self.on_claim(from, term, successors, out);
            }
            NextInLineMsg::Reject { term, leader } => {
                if self.terms.step_down(term, leader, out) {
                    // Stepped down to follow the newer term: with its
                    // leader known, stop waiting; without one, keep (or
                    // start) waiting for the next in line, its takeover
                    // timer armed.
                    if self.terms.leader().is_some() {
                        out.cancel_timer(NextInLineTimer::Takeover);
                        self.alg.awaiting = None;
                    }
                    self.take_over(out);
                }
            }
        }
    }

    fn on_timer(&mut self, _now: Duration, timer: NextInLineTimer, out: &mut Out<Id>) {
        match timer {
            NextInLineTimer::Takeover => {
                if self.terms.leader().is_some() {
                    return;
                }
                let listened = std::mem::replace(&mut self.alg.listening, false);
                // The expected successor stayed silent: skip it.
                if let Some(c) = self.alg.awaiting.take() {
                    if !listened {
                        self.alg.skipped.insert(c);
                    }
                }
                self.take_over(out);
            }
            NextInLineTimer::Heartbeat => {
                if self.terms.is_leading() {
                    self.publish(true, out);
                    out.set_timer(self.config.heartbeat, NextInLineTimer::Heartbeat);
                }
            }
        }
    }

    fn on_membership(&mut self, _now: Duration, change: MemberEvent<Id>, out: &mut Out<Id>) {
        match self.group.apply(change) {
            Some(Change::Back(m)) => {
                self.alg.skipped.remove(&m);
                if self.terms.is_leading() {
                    self.publish(false, out);
                }
            }
            Some(Change::Gone(m)) => {
                if self.terms.is_led_by(&m) {
                    self.terms.leader_gone(out);
                    self.take_over(out);
                } else if self.terms.leader().is_none() {
                    // Perhaps the one we were waiting for: look again.
                    if self.alg.awaiting.as_ref() == Some(&m) {
                        self.alg.awaiting = None;
                    }
                    self.take_over(out);
                } else if self.terms.is_leading() {
                    self.publish(false, out);
                }
            }
            Some(Change::Live(_)) | None => {}
        }
    }

    fn persist(&mut self, out: &mut Out<Id>) {
        self.save(out);
    }
}
