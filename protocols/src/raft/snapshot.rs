//! Raft snapshots: log compaction, and `InstallSnapshot` in chunks.
//!
//! - A server snapshots its replicated state (the application's machine
//!   and the client sessions) once `snapshot_after` entries were applied
//!   since its last snapshot: the snapshot is written durably under
//!   [`super::SNAPSHOT_KEY`], with the configuration in effect at its index,
//!   and the log's head up to that index is truncated in the same input.
//! - A leader whose follower needs entries it has compacted away sends its
//!   latest snapshot in chunks of `snapshot_chunk` bytes, one chunk in
//!   flight at a time, resent after three heartbeats without an answer.
//! - A follower collects the chunks in order (a chunk out of order is
//!   answered with the offset it wants) and installs the snapshot only
//!   when it is complete: durably (snapshot record, log truncation) in one
//!   input, keeping the log's entries after the snapshot when they match.
//!   A snapshot that covers no more than the follower's commit index is
//!   acknowledged and ignored.

use std::time::Duration;

use super::machine::{Replicated, StateMachine};
use super::membership::Membership;
use super::message::RaftMsg;
use super::server::{Flow, Incoming, Raft, SnapshotRecord};
use super::{Outcome, RaftEvent, SNAPSHOT_KEY};
use crate::driver::OutputsOf;
use crate::MemberId;

impl<Id: MemberId, S: StateMachine> Raft<Id, S> {
    /// Take a snapshot at the applied index if enough was applied since
    /// the last one.
    pub(super) fn maybe_snapshot(&mut self, out: &mut OutputsOf<Self>) {
        if self.applied < self.log.snapshot_index() + self.config.snapshot_after.max(1) {
            return;
        }
        self.take_snapshot(out);
    }

    /// Snapshot the state at the applied index now (when it is past the
    /// last snapshot).
    pub fn take_snapshot(&mut self, out: &mut OutputsOf<Self>) {
        let index = self.applied;
        let Some(term) = self.log.term_at(index) else {
            return;
        };
        if index <= self.log.snapshot_index() {
            return;
        }
        let record = SnapshotRecord {
            index,
            term,
            membership: self.membership_at(index),
            data: self.machine.snapshot(),
        };
        out.put(SNAPSHOT_KEY, &record);
        self.log.compact(index, out);
        self.base_membership = record.membership.clone();
        self.snapshot = Some(record);
        self.stats.snapshots_taken += 1;
        self.refresh_membership();
    }

    /// Leader: `to` needs the snapshot.
    pub(super) fn start_snapshot_flow(&mut self, to: &Id, out: &mut OutputsOf<Self>) {
        let index = self.snapshot.as_ref().map_or(0, |s| s.index);
        if let Some(p) = self.progress.get_mut(to) {
            p.flow = Flow::Snapshot { index, offset: 0 };
            p.probing = false;
            p.inflight.clear();
        }
        self.send_snapshot_chunk(to, out);
    }

    /// Leader: send `to` the next chunk of the snapshot.
    pub(super) fn send_snapshot_chunk(&mut self, to: &Id, out: &mut OutputsOf<Self>) {
        let Some(snap) = &self.snapshot else {
            return;
        };
        let Some(p) = self.progress.get_mut(to) else {
            return;
        };
        let offset = match p.flow {
            // A newer snapshot replaces the one being sent.
            Flow::Snapshot { index, offset } if index == snap.index => offset,
            _ => 0,
        };
        p.flow = Flow::Snapshot {
            index: snap.index,
            offset,
        };
        p.probing = true;
        let start = (offset as usize).min(snap.data.len());
        let end = (start + self.config.snapshot_chunk.max(1)).min(snap.data.len());
        out.send(
            to.clone(),
            RaftMsg::Snapshot {
                term: self.term,
                index: snap.index,
                snap_term: snap.term,
                membership: snap.membership.clone(),
                offset,
                data: snap.data[start..end].to_vec(),
                done: end == snap.data.len(),
                round: self.round,
            },
        );
    }

    #[allow(clippy::too_many_arguments)]
    pub(super) fn on_snapshot(
        &mut self,
        now: Duration,
        from: Id,
        term: u64,
        (index, snap_term, membership): (u64, u64, Membership<Id>),
        offset: u64,
        data: Vec<u8>,
        done: bool,
        round: u64,
        out: &mut OutputsOf<Self>,
    ) {
        let reply = |term, next, done| RaftMsg::SnapshotReply {
            term,
            index,
            next,
            done,
            round,
        };
        if let Err(t) = self.hear_leader(now, &from, term, out) {
            return out.send(from, reply(t, 0, false));
        }
        if index <= self.commit {
            self.incoming = None;
            return out.send(from, reply(self.term, 0, true));
        }
        let incoming = match self.incoming.take() {
            Some(inc) if inc.index == index && inc.data.len() as u64 == offset => Some(inc),
            _ if offset == 0 => Some(Incoming {
                index,
                term: snap_term,
                membership,
                data: Vec::new(),
            }),
            other => {
                let want = other
                    .as_ref()
                    .filter(|inc| inc.index == index)
                    .map_or(0, |inc| inc.data.len() as u64);
                self.incoming = other;
                return out.send(from, reply(self.term, want, false));
            }
        };
        let Some(mut inc) = incoming else {
            return;
        };
        inc.data.extend_from_slice(&data);
        if !done {
            let next = inc.data.len() as u64;
            self.incoming = Some(inc);
            return out.send(from, reply(self.term, next, false));
        }
        match Replicated::restore(&inc.data) {
            Ok(machine) => {
                self.install_snapshot(inc, machine, out);
                out.send(from, reply(self.term, 0, true));
            }
            // A snapshot that does not decode: ask for it again.
            Err(_) => out.send(from, reply(self.term, 0, false)),
        }
    }

    fn install_snapshot(
        &mut self,
        inc: Incoming<Id>,
        machine: Replicated<S>,
        out: &mut OutputsOf<Self>,
    ) {
        let record = SnapshotRecord {
            index: inc.index,
            term: inc.term,
            membership: inc.membership,
            data: inc.data,
        };
        out.put(SNAPSHOT_KEY, &record);
        self.log.install(record.index, record.term, out);
        self.base_membership = record.membership.clone();
        self.machine = machine;
        self.commit = self.commit.max(record.index);
        self.applied = record.index;
        let kept = self.proposals.split_off(&(record.index + 1));
        let covered = std::mem::replace(&mut self.proposals, kept);
        for (i, p) in covered {
            self.settle_result(i, p, Outcome::Unknown);
        }
        out.emit(RaftEvent::SnapshotInstalled {
            index: record.index,
            term: record.term,
        });
        self.snapshot = Some(record);
        self.stats.snapshots_installed += 1;
        self.refresh_membership();
        self.apply_committed(out);
    }

    #[allow(clippy::too_many_arguments)]
    pub(super) fn on_snapshot_reply(
        &mut self,
        now: Duration,
        from: Id,
        term: u64,
        index: u64,
        next: u64,
        done: bool,
        round: u64,
        out: &mut OutputsOf<Self>,
    ) {
        if !self.heard_follower(&from, term, round, out) {
            return;
        }
        let Some(p) = self.progress.get_mut(&from) else {
            return;
        };
        let Flow::Snapshot { index: sending, .. } = p.flow else {
            return self.confirm_reads(now, out);
        };
        if index != sending {
            return self.confirm_reads(now, out);
        }
        p.probing = false;
        p.stalled = 0;
        if done {
            p.matched = p.matched.max(index);
            p.next = p.matched + 1;
            p.flow = Flow::Probe;
        } else {
            p.flow = Flow::Snapshot {
                index,
                offset: next,
            };
        }
        self.advance_commit(now, out);
        self.confirm_reads(now, out);
        self.replicate(&from, out);
    }
}
