//! Raft log replication and the commit rule.
//!
//! - **Followers** accept an append only when their log holds the entry
//!   before it with the same term (the consistency check), drop a
//!   conflicting tail (never a committed entry), store the new entries
//!   durably before acknowledging them, and advance their commit index to
//!   the leader's, capped by what the append proved matches.
//! - **The leader** tracks each follower's progress as raft-rs does: in
//!   *probe* one append at a time until the match point is found, then in
//!   *replicate* up to `max_inflight` appends of up to `max_batch` entries
//!   in flight (pipelining; entries proposed meanwhile wait for a free slot
//!   and leave together: batching). A rejection carries the follower's
//!   conflicting term and where it starts, so the leader skips a whole term
//!   per round trip (fast back-up). An append lost on the way is resent
//!   from the match point after three heartbeats without progress.
//! - **Commit**: the leader commits the largest index stored by a quorum of
//!   the configuration in effect, *only if that entry is of its own term*;
//!   earlier entries commit with it (Figure 8).
//! - **Heartbeats** carry the commit index and a round number; a follower
//!   echoes the round, which serves ReadIndex, leases and check-quorum.

use std::time::Duration;

use super::log::Entry;
use super::machine::StateMachine;
use super::message::{RaftMsg, RaftTimer};
use super::server::{Flow, Raft};
use super::Role;
use crate::driver::OutputsOf;
use crate::MemberId;

/// Heartbeat ticks without progress before in-flight appends are presumed lost.
const STALL_TICKS: u32 = 3;

impl<Id: MemberId, S: StateMachine> Raft<Id, S> {
    // ---- follower -----------------------------------------------------

    /// Common handling of a message from the leader of `term`: Err(reply
    /// term) when it is stale, else this server follows `from`.
    pub(super) fn hear_leader(
        &mut self,
        now: Duration,
        from: &Id,
        term: u64,
        out: &mut OutputsOf<Self>,
    ) -> Result<(), u64> {
        if term < self.term {
            return Err(self.term);
        }
        if term > self.term || self.role != Role::Follower || self.leader.as_ref() != Some(from) {
            self.become_follower(term, Some(from.clone()), out);
        } else {
            self.reset_election_timer(out);
        }
        self.heard_leader_at = Some(now);
        Ok(())
    }

    #[allow(clippy::too_many_arguments)]
    pub(super) fn on_append(
        &mut self,
        now: Duration,
        from: Id,
        term: u64,
        (mut prev_index, mut prev_term): (u64, u64),
        mut entries: Vec<Entry<Id>>,
        leader_commit: u64,
        round: u64,
        out: &mut OutputsOf<Self>,
    ) {
        let reply = |term, ok, index, last, conflict| RaftMsg::AppendReply {
            term,
            ok,
            index,
            last,
            conflict,
            round,
        };
        if let Err(t) = self.hear_leader(now, &from, term, out) {
            let last = self.log.last_index();
            return out.send(from, reply(t, false, prev_index, last, None));
        }
        // Entries the snapshot covers are committed, hence match.
        let snap = self.log.snapshot_index();
        if prev_index < snap {
            let skip = (snap - prev_index) as usize;
            if skip >= entries.len() {
                let matched = prev_index + entries.len() as u64;
                return out.send(
                    from,
                    reply(self.term, true, matched, self.log.last_index(), None),
                );
            }
            entries.drain(..skip);
            prev_index = snap;
            prev_term = self.log.snapshot_term();
        }
        match self.log.term_at(prev_index) {
            Some(t) if t == prev_term => {}
            found => {
                let last = self.log.last_index();
                let conflict = found.map(|t| (t, self.log.first_index_of_term_at(prev_index)));
                return out.send(from, reply(self.term, false, prev_index, last, conflict));
            }
        }
        let matched = prev_index + entries.len() as u64;
        let mut index = prev_index;
        let mut new = Vec::new();
        for e in entries {
            index += 1;
            if !new.is_empty() {
                new.push(e);
                continue;
            }
            match self.log.term_at(index) {
                Some(t) if t == e.term => {}
                Some(_) => {
                    self.truncate_log(index, out);
                    new.push(e);
                }
                None => new.push(e),
            }
        }
        self.append_entries(new, out);
        let commit = leader_commit.min(matched);
        if commit > self.commit {
            self.commit = commit;
            self.apply_committed(out);
        }
        out.send(
            from,
            reply(self.term, true, matched, self.log.last_index(), None),
        );
    }

    // ---- leader -------------------------------------------------------

    /// After the leader appended to its own log: commit what a quorum has
    /// (a single voter commits at once) and send to whoever has room.
    pub(super) fn after_leader_append(&mut self, now: Duration, out: &mut OutputsOf<Self>) {
        // Followers never match past the leader's log, so its own last
        // index is the largest value of every voter set it is in: raising
        // it moves the quorum value only of a set where it votes alone (or
        // when the entry changed the sets themselves).
        if self.membership.sole_voter(&self.me) || self.config_index == self.log.last_index() {
            self.advance_commit(now, out);
        }
        // Only the followers with room for an append (under load every
        // slot is usually taken: then nothing is cloned or allocated).
        let last = self.log.last_index();
        let max = self.config.max_inflight;
        let peers: Vec<Id> = self
            .progress
            .iter()
            .filter(|(_, p)| match p.flow {
                Flow::Snapshot { .. } | Flow::Probe => !p.probing,
                Flow::Replicate => p.inflight.len() < max && p.next <= last,
            })
            .map(|(id, _)| id.clone())
            .collect();
        for id in peers {
            self.replicate(&id, out);
        }
    }

    /// Send `to` what it lacks, as far as its flow allows.
    pub(super) fn replicate(&mut self, to: &Id, out: &mut OutputsOf<Self>) {
        let last = self.log.last_index();
        loop {
            let Some(p) = self.progress.get(to) else {
                return;
            };
            match p.flow {
                Flow::Snapshot { .. } => {
                    if !p.probing {
                        self.send_snapshot_chunk(to, out);
                    }
                    return;
                }
                Flow::Probe if p.probing => return,
                Flow::Replicate if p.inflight.len() >= self.config.max_inflight => return,
                Flow::Replicate if p.next > last => return,
                _ => {}
            }
            let next = p.next;
            let probe = p.flow == Flow::Probe;
            let prev_index = next - 1;
            let Some(prev_term) = self.log.term_at(prev_index) else {
                // Compacted away: the follower needs the snapshot.
                self.start_snapshot_flow(to, out);
                continue;
            };
            let entries = self.log.slice(next, self.config.max_batch);
            let sent_last = prev_index + entries.len() as u64;
            self.stats.appends += u64::from(!entries.is_empty());
            self.stats.entries_sent += entries.len() as u64;
            out.send(
                to.clone(),
                RaftMsg::Append {
                    term: self.term,
                    prev_index,
                    prev_term,
                    entries,
                    commit: self.commit,
                    round: self.round,
                },
            );
            let Some(p) = self.progress.get_mut(to) else {
                return;
            };
            if probe {
                p.probing = true;
                return;
            }
            p.inflight.push_back(sent_last);
            p.next = sent_last + 1;
        }
    }

    /// Common handling of a follower's answer of `term` to the round
    /// `round`: a newer term deposes this leader; a stale answer, or one
    /// to a server that no longer leads, is ignored (`false`); otherwise
    /// the follower counts as heard from (check-quorum, reads).
    pub(super) fn heard_follower(
        &mut self,
        from: &Id,
        term: u64,
        round: u64,
        out: &mut OutputsOf<Self>,
    ) -> bool {
        if term > self.term {
            self.become_follower(term, None, out);
            return false;
        }
        if self.role != Role::Leader || term < self.term {
            return false;
        }
        let Some(p) = self.progress.get_mut(from) else {
            return false;
        };
        p.active = true;
        p.acked_round = p.acked_round.max(round);
        true
    }

    #[allow(clippy::too_many_arguments)]
    pub(super) fn on_append_reply(
        &mut self,
        now: Duration,
        from: Id,
        term: u64,
        ok: bool,
        index: u64,
        last: u64,
        conflict: Option<(u64, u64)>,
        round: u64,
        out: &mut OutputsOf<Self>,
    ) {
        if !self.heard_follower(&from, term, round, out) {
            return;
        }
        let last_term_of = |t: u64| self.log.last_index_of_term(t);
        let Some(p) = self.progress.get_mut(&from) else {
            return;
        };
        if ok {
            if index > p.matched {
                p.matched = index;
                p.stalled = 0;
                p.next = p.next.max(index + 1);
                while p.inflight.front().is_some_and(|&i| i <= index) {
                    p.inflight.pop_front();
                }
            }
            if p.flow == Flow::Probe {
                p.flow = Flow::Replicate;
                p.probing = false;
                p.inflight.clear();
                p.next = p.matched + 1;
            }
        } else {
            if index <= p.matched || matches!(p.flow, Flow::Snapshot { .. }) {
                // A stale rejection (entries up to `matched` match).
                return self.confirm_reads(now, out);
            }
            let hint = match conflict {
                Some((t, first)) => last_term_of(t).map_or(first, |i| i + 1),
                None => last + 1,
            };
            let Some(p) = self.progress.get_mut(&from) else {
                return;
            };
            p.next = hint.min(index).max(p.matched + 1);
            p.flow = Flow::Probe;
            p.probing = false;
            p.inflight.clear();
        }
        self.advance_commit(now, out);
        self.confirm_reads(now, out);
        if self.transfer.as_ref() == Some(&from) {
            self.send_timeout_now_if_ready(&from, out);
        } else {
            self.replicate(&from, out);
        }
    }

    /// Commit the largest index a quorum stored, if it is of this term.
    pub(super) fn advance_commit(&mut self, now: Duration, out: &mut OutputsOf<Self>) {
        if self.role != Role::Leader {
            return;
        }
        let last = self.log.last_index();
        let me = self.me.clone();
        let n = self.membership.quorum_value(|id| {
            if *id == me {
                last
            } else {
                self.progress.get(id).map_or(0, |p| p.matched)
            }
        });
        let own_term =
            self.log.term_at(n) == Some(self.term) || self.config.unsafe_commit_old_terms;
        if n <= self.commit || n == u64::MAX || !own_term {
            return;
        }
        self.commit = n;
        self.apply_committed(out);
        self.after_commit(now, out);
    }

    /// A leader's duties once its commit index moved: leave a committed
    /// joint configuration, step down once removed, serve waiting reads.
    fn after_commit(&mut self, now: Duration, out: &mut OutputsOf<Self>) {
        if self.role != Role::Leader || self.config_index > self.commit {
            return self.confirm_reads(now, out);
        }
        if self.membership.is_joint() {
            let finished = self.membership.finished();
            self.append_entries(
                [Entry {
                    term: self.term,
                    payload: super::log::Payload::Config(finished),
                }],
                out,
            );
            return self.after_leader_append(now, out);
        }
        if !self.membership.is_voter(&self.me) {
            let term = self.term;
            return self.become_follower(term, None, out);
        }
        self.confirm_reads(now, out);
    }

    pub(super) fn on_heartbeat(&mut self, now: Duration, out: &mut OutputsOf<Self>) {
        if self.role != Role::Leader {
            return;
        }
        out.set_timer(self.config.heartbeat, RaftTimer::Heartbeat);
        if self.config.check_quorum
            && now.saturating_sub(self.last_quorum_check) >= self.config.election_min
        {
            let me = self.me.clone();
            let quorum = self
                .membership
                .is_quorum(|id| *id == me || self.progress.get(id).is_some_and(|p| p.active));
            if !quorum {
                let term = self.term;
                return self.become_follower(term, None, out);
            }
            for p in self.progress.values_mut() {
                p.active = false;
            }
            self.last_quorum_check = now;
        }
        // Appends presumed lost are resent from the match point.
        for p in self.progress.values_mut() {
            let waiting = p.probing || !p.inflight.is_empty();
            if waiting {
                p.stalled += 1;
            }
            if waiting && p.stalled >= STALL_TICKS {
                p.stalled = 0;
                p.probing = false;
                p.inflight.clear();
                if let Flow::Replicate = p.flow {
                    p.flow = Flow::Probe;
                    p.next = p.matched + 1;
                }
            }
        }
        self.broadcast_round(now, out);
        let peers: Vec<Id> = self.progress.keys().cloned().collect();
        for id in peers {
            self.replicate(&id, out);
        }
    }

    /// Start a new heartbeat round: an empty append to every follower at
    /// its match point.
    pub(super) fn broadcast_round(&mut self, now: Duration, out: &mut OutputsOf<Self>) {
        self.round += 1;
        self.want_round = false;
        self.round_sent.push_back((self.round, now));
        while self.round_sent.len() > 64 {
            self.round_sent.pop_front();
        }
        for (id, p) in &self.progress {
            if matches!(p.flow, Flow::Snapshot { .. }) {
                continue;
            }
            let Some(prev_term) = self.log.term_at(p.matched) else {
                continue;
            };
            self.stats.heartbeats += 1;
            out.send(
                id.clone(),
                RaftMsg::Append {
                    term: self.term,
                    prev_index: p.matched,
                    prev_term,
                    entries: Vec::new(),
                    commit: self.commit.min(p.matched),
                    round: self.round,
                },
            );
        }
        // A single voter confirms its own rounds.
        self.confirm_reads(now, out);
    }
}
