//! Linearizable reads without writing to the log: ReadIndex, and leases.
//!
//! **ReadIndex** (section 6.4 of the Raft dissertation): a read asked of the
//! leader waits for a heartbeat round *sent after it was asked* to be
//! acknowledged by a quorum of the configuration in effect — proof that no
//! other leader had been elected when the round left — and for the leader
//! to have committed an entry of its own term. Its read index is then the
//! leader's commit index, which covers every write acknowledged before the
//! read was asked; the caller reads the state machine once it has applied
//! that index. Reads asked meanwhile share the next round (one heartbeat
//! round per batch of reads). A leader that steps down fails the reads it
//! has not confirmed.
//!
//! **Lease** ([`super::ReadMode::Lease`]): once a quorum acknowledged a
//! round sent at `t`, the leader holds a lease until `t + election_min ×
//! (1 − clock_drift)` (see the module docs of [`super`] for the
//! assumption), and reads asked within it are confirmed at once. A
//! leadership transfer ends the lease.

use std::time::Duration;

use super::machine::StateMachine;
use super::server::{PendingRead, Raft};
use super::{RaftError, RaftSettled, RaftToken, ReadMode, Role};
use crate::driver::OutputsOf;
use crate::MemberId;

impl<Id: MemberId, S: StateMachine> Raft<Id, S> {
    /// Ask for a linearizable read (leader only). Returns the read's id;
    /// its outcome comes from [`Raft::take_read`] once the view's
    /// `read_epoch` moves.
    pub fn read_index(
        &mut self,
        now: Duration,
        out: &mut OutputsOf<Self>,
    ) -> Result<u64, RaftError<Id>> {
        if self.role != Role::Leader {
            return Err(RaftError::NotLeader {
                leader: self.leader.clone(),
            });
        }
        self.next_read += 1;
        let id = self.next_read;
        let lease_ok = self.config.read_mode == ReadMode::Lease
            && self.transfer.is_none()
            && now < self.lease_until
            && self.log.term_at(self.commit) == Some(self.term);
        if lease_ok {
            self.settle_read(id, Some(self.commit), false);
            return Ok(id);
        }
        self.reads.push_back(PendingRead {
            id,
            round: self.round + 1,
            awaited: false,
        });
        let me = self.me.clone();
        let outstanding = self.quorum_round(&me) < self.round;
        if outstanding {
            // The round in flight was sent before this read: the next one
            // leaves when it is confirmed.
            self.want_round = true;
        } else {
            self.broadcast_round(now, out);
        }
        Ok(id)
    }

    /// The outcome of read `id`: `Some(Some(index))` confirmed (read the
    /// state machine once it has applied `index`), `Some(None)` failed
    /// (leadership lost: retry elsewhere), `None` still waiting. Forgotten
    /// once returned settled. Also returns the current read epoch.
    pub fn take_read(&mut self, id: u64) -> (Option<Option<u64>>, u64) {
        (self.read_outcomes.remove(&id), self.read_epoch)
    }

    /// Await read `id` through [`troupe_framework::sansio::Settles`]
    /// instead of [`Raft::take_read`]: `(RaftToken::Read(id),
    /// RaftSettled::Read(true))` is queued once the read is confirmed
    /// **and** this server has applied its read index (read the state
    /// machine then), `RaftSettled::Read(false)` when it failed (leadership
    /// lost: retry elsewhere; also for an id this server does not know).
    /// At once if that is already so. Returns its token.
    pub fn await_read(&mut self, id: u64) -> RaftToken {
        let token = RaftToken::Read(id);
        // Pending reads are in id order (the one just asked is last).
        if let Ok(i) = self.reads.binary_search_by_key(&id, |r| r.id) {
            self.reads[i].awaited = true;
            return token;
        }
        match self.read_outcomes.remove(&id) {
            Some(Some(index)) => self.wait_to_apply(id, index),
            Some(None) | None => self.settled.push((token, RaftSettled::Read(false))),
        }
        token
    }

    /// An awaited read confirmed at `index`: settled once it is applied.
    fn wait_to_apply(&mut self, id: u64, index: u64) {
        if index <= self.applied {
            self.settled
                .push((RaftToken::Read(id), RaftSettled::Read(true)));
        } else {
            self.read_waits.insert((index, id));
        }
    }

    /// The largest round a quorum has acknowledged.
    fn quorum_round(&self, me: &Id) -> u64 {
        let q = self.membership.quorum_value(|id| {
            if id == me {
                self.round
            } else {
                self.progress.get(id).map_or(0, |p| p.acked_round)
            }
        });
        if q == u64::MAX {
            0
        } else {
            q
        }
    }

    /// Confirm the reads whose round a quorum acknowledged; renew the lease.
    pub(super) fn confirm_reads(&mut self, now: Duration, out: &mut OutputsOf<Self>) {
        if self.role != Role::Leader {
            return;
        }
        let me = self.me.clone();
        let q = self.quorum_round(&me);
        if let Some(&(_, sent)) = self.round_sent.iter().rev().find(|(r, _)| *r <= q) {
            let lease = self
                .config
                .election_min
                .mul_f64((1.0 - self.config.clock_drift).clamp(0.0, 1.0));
            if self.transfer.is_none() {
                self.lease_until = self.lease_until.max(sent + lease);
            }
        }
        while self.round_sent.front().is_some_and(|(r, _)| *r < q) {
            self.round_sent.pop_front();
        }
        let committed_in_term = self.log.term_at(self.commit) == Some(self.term);
        if committed_in_term {
            while self.reads.front().is_some_and(|r| r.round <= q) {
                if let Some(r) = self.reads.pop_front() {
                    self.settle_read(r.id, Some(self.commit), r.awaited);
                }
            }
        }
        if self.want_round && q >= self.round {
            self.broadcast_round(now, out);
        }
    }

    /// Fail every read not confirmed yet (this server stops leading).
    pub(super) fn fail_reads(&mut self) {
        while let Some(r) = self.reads.pop_front() {
            self.settle_read(r.id, None, r.awaited);
        }
    }

    /// Record read `id`'s outcome: for [`Raft::take_read`] (and a new read
    /// epoch), or, when `awaited`, queued once it can be read.
    fn settle_read(&mut self, id: u64, outcome: Option<u64>, awaited: bool) {
        if outcome.is_some() {
            self.stats.reads += 1;
        }
        if awaited {
            match outcome {
                Some(index) => self.wait_to_apply(id, index),
                None => self
                    .settled
                    .push((RaftToken::Read(id), RaftSettled::Read(false))),
            }
            return;
        }
        self.read_outcomes.insert(id, outcome);
        while self.read_outcomes.len() > 1 << 16 {
            self.read_outcomes.pop_first();
        }
        self.read_epoch += 1;
    }
}
