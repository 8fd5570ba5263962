//! Raft elections: randomized timeouts, pre-vote, the vote with the
//! up-to-date check, check-quorum with leader stickiness, and leadership
//! transfer.
//!
//! - A voter that hears from no leader for a random timeout in
//!   `[election_min, election_max)` campaigns: with pre-vote it first asks
//!   whether it *could* win in the next term (nobody changes a term or a
//!   vote for a pre-vote), and starts the real election only with a quorum
//!   of pre-votes.
//! - A server grants at most one vote per term (the vote is durable before
//!   the answer leaves), and only to a candidate whose log is at least as up
//!   to date as its own (section 5.4.1), which gives leader completeness.
//! - With check-quorum, a voter that heard from a leader within
//!   `election_min` ignores vote requests (and refuses pre-votes): a server
//!   that was cut off cannot depose a leader the others still follow. The
//!   exception is an election the leader asked for (`TimeoutNow`).
//! - A candidate wins with a quorum of the configuration in effect (both
//!   majorities in a joint configuration) and appends a no-op of its term.
//!
//! Servers that are not voters (learners, servers removed from the
//! configuration, a server still joining) never campaign.

use std::time::Duration;

use super::log::{Entry, Payload};
use super::machine::StateMachine;
use super::message::{RaftMsg, RaftTimer};
use super::server::{Progress, Raft};
use super::Role;
use crate::driver::OutputsOf;
use crate::MemberId;

impl<Id: MemberId, S: StateMachine> Raft<Id, S> {
    /// True while a leader of this server's term was heard from within
    /// `election_min` (or this server leads): votes are not given away then.
    fn leader_is_fresh(&self, now: Duration) -> bool {
        self.config.check_quorum
            && (self.role == Role::Leader
                || self
                    .heard_leader_at
                    .is_some_and(|t| now.saturating_sub(t) < self.config.election_min))
    }

    pub(super) fn on_election_timeout(&mut self, now: Duration, out: &mut OutputsOf<Self>) {
        if self.role == Role::Leader {
            return;
        }
        if !self.membership.is_voter(&self.me) {
            self.reset_election_timer(out);
            return;
        }
        if self.config.pre_vote {
            self.start_pre_vote(now, out);
        } else {
            self.start_election(now, false, out);
        }
    }

    fn start_pre_vote(&mut self, now: Duration, out: &mut OutputsOf<Self>) {
        self.role = Role::PreCandidate;
        self.leader = None;
        self.votes.clear();
        self.votes.insert(self.me.clone());
        self.emit_role(out);
        self.reset_election_timer(out);
        if self.membership.is_quorum(|id| self.votes.contains(id)) {
            return self.start_election(now, false, out);
        }
        self.ask_votes(self.term + 1, true, false, out);
    }

    pub(super) fn start_election(
        &mut self,
        now: Duration,
        transfer: bool,
        out: &mut OutputsOf<Self>,
    ) {
        self.term += 1;
        self.vote = Some(self.me.clone());
        self.role = Role::Candidate;
        self.leader = None;
        self.votes.clear();
        self.votes.insert(self.me.clone());
        self.stats.elections += 1;
        self.emit_role(out);
        self.reset_election_timer(out);
        if self.membership.is_quorum(|id| self.votes.contains(id)) {
            return self.become_leader(now, out);
        }
        self.ask_votes(self.term, false, transfer, out);
    }

    fn ask_votes(&self, term: u64, pre: bool, transfer: bool, out: &mut OutputsOf<Self>) {
        let msg = RaftMsg::RequestVote {
            term,
            last_index: self.log.last_index(),
            last_term: self.log.last_term(),
            pre,
            transfer,
        };
        for id in self.membership.members() {
            if id != self.me && self.membership.is_voter(&id) {
                out.send(id, msg.clone());
            }
        }
    }

    #[allow(clippy::too_many_arguments)]
    pub(super) fn on_request_vote(
        &mut self,
        now: Duration,
        from: Id,
        term: u64,
        (last_index, last_term): (u64, u64),
        pre: bool,
        transfer: bool,
        out: &mut OutputsOf<Self>,
    ) {
        let sticky = !transfer && self.leader_is_fresh(now);
        if pre {
            let granted =
                term > self.term && !sticky && self.log.is_up_to_date(last_index, last_term);
            let answer = if granted { term } else { self.term };
            out.send(
                from,
                RaftMsg::Vote {
                    term: answer,
                    granted,
                    pre: true,
                },
            );
            return;
        }
        if term > self.term {
            if sticky {
                // A disruptive server: ignore it entirely (its term too).
                return;
            }
            self.become_follower(term, None, out);
        }
        let granted = term == self.term
            && self.vote.as_ref().is_none_or(|v| *v == from)
            && self.log.is_up_to_date(last_index, last_term);
        if granted {
            self.vote = Some(from.clone());
            self.reset_election_timer(out);
        }
        out.send(
            from,
            RaftMsg::Vote {
                term: self.term,
                granted,
                pre: false,
            },
        );
    }

    pub(super) fn on_vote(
        &mut self,
        now: Duration,
        from: Id,
        term: u64,
        granted: bool,
        pre: bool,
        out: &mut OutputsOf<Self>,
    ) {
        if term > self.term && !(pre && granted) {
            return self.become_follower(term, None, out);
        }
        if !granted {
            return;
        }
        let counts = if pre {
            self.role == Role::PreCandidate && term == self.term + 1
        } else {
            self.role == Role::Candidate && term == self.term
        };
        if !counts || !self.membership.is_voter(&from) {
            return;
        }
        self.votes.insert(from);
        if self.membership.is_quorum(|id| self.votes.contains(id)) {
            if pre {
                self.start_election(now, false, out);
            } else {
                self.become_leader(now, out);
            }
        }
    }

    fn become_leader(&mut self, now: Duration, out: &mut OutputsOf<Self>) {
        self.role = Role::Leader;
        self.leader = Some(self.me.clone());
        self.votes.clear();
        self.heard_leader_at = None;
        self.last_quorum_check = now;
        self.round = 0;
        self.round_sent.clear();
        out.cancel_timer(RaftTimer::Election);
        let last = self.log.last_index();
        self.progress.clear();
        for id in self.membership.members() {
            if id != self.me {
                self.progress.insert(id, Progress::new(last));
            }
        }
        self.emit_role(out);
        self.append_entries(
            [Entry {
                term: self.term,
                payload: Payload::Noop,
            }],
            out,
        );
        self.after_leader_append(now, out);
        out.set_timer(self.config.heartbeat, RaftTimer::Heartbeat);
    }

    pub(super) fn on_timeout_now(
        &mut self,
        now: Duration,
        from: Id,
        term: u64,
        out: &mut OutputsOf<Self>,
    ) {
        if term != self.term
            || self.leader.as_ref() != Some(&from)
            || !self.membership.is_voter(&self.me)
            || self.role == Role::Leader
        {
            return;
        }
        self.start_election(now, true, out);
    }

    /// Leader: tell the transfer's target to campaign once its log is ours.
    pub(super) fn send_timeout_now_if_ready(&mut self, to: &Id, out: &mut OutputsOf<Self>) {
        let last = self.log.last_index();
        match self.progress.get(to) {
            Some(p) if p.matched == last => {
                out.send(to.clone(), RaftMsg::TimeoutNow { term: self.term });
                // The lease may not survive the target's election.
                self.lease_until = Duration::ZERO;
            }
            _ => self.replicate(to, out),
        }
    }
}
