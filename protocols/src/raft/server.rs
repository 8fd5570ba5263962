//! One Raft server's state and its [`Protocol`] implementation.
//!
//! The concerns live in their own modules as `impl` blocks of [`Raft`]:
//! elections ([`super::election`]), log replication and the commit rule
//! ([`super::replication`]), snapshots ([`super::snapshot`]) and reads
//! ([`super::read`]). This module holds the state, recovery from the
//! durable store, the role changes every concern uses, applying committed
//! entries, and the commands of the local user.

use std::collections::{BTreeMap, BTreeSet, VecDeque};
use std::time::Duration;

use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use serde::{Deserialize, Serialize};
use troupe_framework::sansio::{DurableError, Protocol, Recovered, Settles, SnapshotCore};

use super::log::{Entry, Payload, RaftLog, Session, LOG};
use super::machine::{Applied, Replicated, StateMachine};
use super::membership::Membership;
use super::message::{RaftMsg, RaftTimer};
use super::{
    Outcome, RaftConfig, RaftError, RaftEvent, RaftSettled, RaftStats, RaftStatus, RaftToken, Role,
};
use crate::driver::OutputsOf;
use crate::testkit::SimProtocol;
use crate::MemberId;

/// The durable key of the term and the vote.
pub const HARD_KEY: &str = "hard";
/// The durable key of the latest snapshot.
pub const SNAPSHOT_KEY: &str = "snapshot";

/// The term and the vote: durable before any vote or append reply that
/// depends on them leaves.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct HardState<Id> {
    /// The current term.
    pub term: u64,
    /// Who this server voted for in `term`.
    pub vote: Option<Id>,
}

/// A snapshot: the replicated state after applying the entries up to
/// `index`, and the configuration in effect there.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(bound = "Id: MemberId")]
pub struct SnapshotRecord<Id: Ord> {
    /// The last index it covers.
    pub index: u64,
    /// Its term.
    pub term: u64,
    /// The configuration at `index`.
    pub membership: Membership<Id>,
    /// The encoded [`Replicated`] state.
    #[serde(with = "serde_bytes")]
    pub data: Vec<u8>,
}

/// How replication to one follower flows (as in raft-rs).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Flow {
    /// Where the follower's log matches is not known: one append at a time.
    Probe,
    /// The follower keeps up: appends are pipelined.
    Replicate,
    /// The follower needs the snapshot; `offset` is the next chunk's.
    Snapshot {
        /// The snapshot being sent.
        index: u64,
        /// Its next chunk's offset.
        offset: u64,
    },
}

/// The leader's view of one follower.
#[derive(Debug, Clone)]
pub(super) struct Progress {
    pub(super) next: u64,
    pub(super) matched: u64,
    pub(super) flow: Flow,
    /// Last index of each append in flight (Replicate).
    pub(super) inflight: VecDeque<u64>,
    /// A probe (or snapshot chunk) is in flight.
    pub(super) probing: bool,
    /// Heard from since the last check-quorum.
    pub(super) active: bool,
    /// The last heartbeat round it acknowledged in this term.
    pub(super) acked_round: u64,
    /// Heartbeat ticks since its match index last moved while something
    /// was in flight.
    pub(super) stalled: u32,
}

impl Progress {
    pub(super) fn new(last: u64) -> Self {
        Self {
            next: last + 1,
            matched: 0,
            flow: Flow::Probe,
            inflight: VecDeque::new(),
            probing: false,
            active: true,
            acked_round: 0,
            stalled: 0,
        }
    }
}

/// A read waiting for its heartbeat round (leader).
#[derive(Debug, Clone)]
pub(super) struct PendingRead {
    pub(super) id: u64,
    pub(super) round: u64,
    /// Settled through [`Settles`] (see [`Raft::await_read`]) rather than
    /// kept for [`Raft::take_read`].
    pub(super) awaited: bool,
}

/// An entry proposed here, until it is applied or known lost.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) struct Proposal {
    /// The term it was proposed in.
    pub(super) term: u64,
    /// Settled through [`Settles`] (see [`Raft::await_result`]) rather
    /// than kept for [`Raft::take_result`].
    pub(super) awaited: bool,
}

/// The entries proposed here, by index: a deque in index order, since a
/// leader proposes at the end of its log and applies from the front (a
/// B-tree insert and remove per proposal cost more than the rest of it).
#[derive(Debug, Clone, Default)]
pub(super) struct Proposals(VecDeque<(u64, Proposal)>);

impl Proposals {
    fn position(&self, index: u64) -> Result<usize, usize> {
        self.0.binary_search_by_key(&index, |(i, _)| *i)
    }
    pub(super) fn insert(&mut self, index: u64, p: Proposal) {
        if self.0.back().is_none_or(|(i, _)| *i < index) {
            return self.0.push_back((index, p));
        }
        match self.position(index) {
            Ok(at) => self.0[at].1 = p,
            Err(at) => self.0.insert(at, (index, p)),
        }
    }
    pub(super) fn get(&self, index: &u64) -> Option<&Proposal> {
        self.position(*index).ok().map(|at| &self.0[at].1)
    }
    pub(super) fn get_mut(&mut self, index: &u64) -> Option<&mut Proposal> {
        let at = self.position(*index).ok()?;
        Some(&mut self.0[at].1)
    }
    pub(super) fn remove(&mut self, index: &u64) -> Option<Proposal> {
        if self.0.front().is_some_and(|(i, _)| i == index) {
            return self.0.pop_front().map(|(_, p)| p);
        }
        let at = self.position(*index).ok()?;
        self.0.remove(at).map(|(_, p)| p)
    }
    /// Take out the proposals at `index` and after.
    pub(super) fn split_off(&mut self, index: &u64) -> Proposals {
        let at = self.0.partition_point(|(i, _)| i < index);
        Proposals(self.0.split_off(at))
    }
}

impl IntoIterator for Proposals {
    type Item = (u64, Proposal);
    type IntoIter = std::collections::vec_deque::IntoIter<(u64, Proposal)>;
    fn into_iter(self) -> Self::IntoIter {
        self.0.into_iter()
    }
}

/// A snapshot being received, chunk by chunk.
#[derive(Debug, Clone)]
pub(super) struct Incoming<Id: Ord> {
    pub(super) index: u64,
    pub(super) term: u64,
    pub(super) membership: Membership<Id>,
    pub(super) data: Vec<u8>,
}

/// One Raft server (see the module docs of [`super`]).
#[derive(Debug, Clone)]
pub struct Raft<Id: MemberId, S: StateMachine> {
    pub(super) me: Id,
    pub(super) config: RaftConfig,
    pub(super) term: u64,
    pub(super) vote: Option<Id>,
    saved: Option<HardState<Id>>,
    pub(super) log: RaftLog<Id>,
    /// The configuration in effect (the latest in the log).
    pub(super) membership: Membership<Id>,
    /// Index of its entry (the snapshot's index, or 0, when it is not in
    /// the log).
    pub(super) config_index: u64,
    /// The configuration at the snapshot's index (or the initial one).
    pub(super) base_membership: Membership<Id>,
    pub(super) role: Role,
    pub(super) leader: Option<Id>,
    pub(super) votes: BTreeSet<Id>,
    pub(super) commit: u64,
    pub(super) applied: u64,
    pub(super) machine: Replicated<S>,
    pub(super) snapshot: Option<SnapshotRecord<Id>>,
    pub(super) incoming: Option<Incoming<Id>>,
    pub(super) progress: BTreeMap<Id, Progress>,
    /// When a leader of the current term was last heard from (stickiness).
    pub(super) heard_leader_at: Option<Duration>,
    pub(super) rng: ChaCha8Rng,
    /// The leader's heartbeat round and when each recent one was sent.
    pub(super) round: u64,
    pub(super) round_sent: VecDeque<(u64, Duration)>,
    /// A read waits for a round not sent yet.
    pub(super) want_round: bool,
    pub(super) reads: VecDeque<PendingRead>,
    pub(super) read_outcomes: BTreeMap<u64, Option<u64>>,
    pub(super) next_read: u64,
    pub(super) read_epoch: u64,
    pub(super) lease_until: Duration,
    pub(super) transfer: Option<Id>,
    pub(super) last_quorum_check: Duration,
    /// Entries proposed here by index, until applied or lost.
    pub(super) proposals: Proposals,
    /// Outcomes of proposals not awaited, for [`Raft::take_result`].
    pub(super) results: BTreeMap<u64, ProposalOutcome<S::Reply>>,
    /// Awaited requests settled and not taken yet ([`Settles`]).
    pub(super) settled: Vec<(RaftToken, RaftSettled<S::Reply>)>,
    /// Awaited reads confirmed at `(index, id)`, waiting for this server
    /// to apply `index`.
    pub(super) read_waits: BTreeSet<(u64, u64)>,
    pub(super) stats: RaftStats,
}

/// How many settled proposal results and read outcomes are kept for a
/// caller that has not collected them.
const KEPT_RESULTS: usize = 1 << 16;

impl<Id: MemberId, S: StateMachine> Raft<Id, S> {
    /// A server `me` whose initial configuration is `initial` (the same on
    /// every initial member; empty for a server that joins later and
    /// learns the configuration from the leader), rebuilt from what a
    /// previous life made durable.
    pub fn recover(
        me: Id,
        initial: Membership<Id>,
        config: RaftConfig,
        recovered: &Recovered,
    ) -> Result<Self, DurableError> {
        let hard: Option<HardState<Id>> = recovered.get_as(HARD_KEY)?;
        let snapshot: Option<SnapshotRecord<Id>> = recovered.get_as(SNAPSHOT_KEY)?;
        let entries: Vec<(u64, Entry<Id>)> = recovered.log_as(LOG)?;
        let (snap_index, snap_term) = snapshot.as_ref().map_or((0, 0), |s| (s.index, s.term));
        let mut expected = snap_index + 1;
        let mut kept = Vec::with_capacity(entries.len());
        for (i, e) in entries {
            if i <= snap_index {
                continue;
            }
            if i != expected {
                return Err(DurableError::Decode {
                    key: format!("{LOG}[{i}]"),
                    message: format!("expected index {expected} after snapshot {snap_index}"),
                });
            }
            expected += 1;
            kept.push(e);
        }
        let machine = match &snapshot {
            Some(s) => Replicated::restore(&s.data).map_err(|message| DurableError::Decode {
                key: SNAPSHOT_KEY.to_string(),
                message,
            })?,
            None => Replicated::new(config.max_sessions),
        };
        let base = snapshot
            .as_ref()
            .map_or_else(|| initial.clone(), |s| s.membership.clone());
        let mut seed = config.seed ^ 0x9e37_79b9_7f4a_7c15;
        for b in format!("{me:?}").bytes() {
            seed = (seed ^ u64::from(b)).wrapping_mul(0x0100_0000_01b3);
        }
        let mut core = Self {
            me,
            term: hard.as_ref().map_or(0, |h| h.term),
            vote: hard.as_ref().and_then(|h| h.vote.clone()),
            saved: hard,
            log: RaftLog::new(snap_index, snap_term, kept),
            membership: base.clone(),
            config_index: snap_index,
            base_membership: base,
            role: Role::Follower,
            leader: None,
            votes: BTreeSet::new(),
            commit: snap_index,
            applied: snap_index,
            machine,
            snapshot,
            incoming: None,
            progress: BTreeMap::new(),
            heard_leader_at: None,
            rng: ChaCha8Rng::seed_from_u64(seed),
            round: 0,
            round_sent: VecDeque::new(),
            want_round: false,
            reads: VecDeque::new(),
            read_outcomes: BTreeMap::new(),
            next_read: 0,
            read_epoch: 0,
            lease_until: Duration::ZERO,
            transfer: None,
            last_quorum_check: Duration::ZERO,
            proposals: Proposals::default(),
            results: BTreeMap::new(),
            settled: Vec::new(),
            read_waits: BTreeSet::new(),
            stats: RaftStats::default(),
            config,
        };
        core.refresh_membership();
        Ok(core)
    }

    /// This server's id.
    pub fn id(&self) -> &Id {
        &self.me
    }

    /// The current term.
    pub fn term(&self) -> u64 {
        self.term
    }

    /// The role this server plays now.
    pub fn role(&self) -> Role {
        self.role
    }

    /// The leader of the current term, if known.
    pub fn leader(&self) -> Option<&Id> {
        self.leader.as_ref()
    }

    /// The commit index (as far as this server knows).
    pub fn commit_index(&self) -> u64 {
        self.commit
    }

    /// The index of the last entry applied to the state machine.
    pub fn applied_index(&self) -> u64 {
        self.applied
    }

    /// The log.
    pub fn log(&self) -> &RaftLog<Id> {
        &self.log
    }

    /// The configuration in effect.
    pub fn membership(&self) -> &Membership<Id> {
        &self.membership
    }

    /// The application's state machine, as applied up to
    /// [`Raft::applied_index`].
    pub fn machine(&self) -> &S {
        self.machine.machine()
    }

    /// The replicated state (machine and sessions).
    pub fn replicated(&self) -> &Replicated<S> {
        &self.machine
    }

    /// Counters.
    pub fn stats(&self) -> &RaftStats {
        &self.stats
    }

    /// The status every handle can read (see [`RaftStatus`]).
    pub fn status(&self) -> RaftStatus<Id> {
        let mut matched = BTreeMap::new();
        if self.role == Role::Leader {
            matched.insert(self.me.clone(), self.log.last_index());
            for (id, p) in &self.progress {
                matched.insert(id.clone(), p.matched);
            }
        }
        RaftStatus {
            id: self.me.clone(),
            term: self.term,
            role: self.role,
            leader: self.leader.clone(),
            commit: self.commit,
            applied: self.applied,
            last_index: self.log.last_index(),
            snapshot_index: self.log.snapshot_index(),
            membership: self.membership.clone(),
            matched,
            stats: self.stats.clone(),
        }
    }

    // ---- configuration ------------------------------------------------

    /// Recompute the configuration in effect from the snapshot's and the
    /// log's latest configuration entry.
    pub(super) fn refresh_membership(&mut self) {
        let latest = self.log.iter().rev().find_map(|(i, e)| match &e.payload {
            Payload::Config(m) => Some((i, m.clone())),
            _ => None,
        });
        let (index, m) =
            latest.unwrap_or_else(|| (self.log.snapshot_index(), self.base_membership.clone()));
        self.config_index = index;
        self.membership = m;
        if self.role == Role::Leader {
            let last = self.log.last_index();
            let members = self.membership.members();
            self.progress.retain(|id, _| members.contains(id));
            for id in members {
                if id != self.me {
                    self.progress
                        .entry(id)
                        .or_insert_with(|| Progress::new(last));
                }
            }
        }
    }

    /// The configuration in effect at `index` (for a snapshot there).
    pub(super) fn membership_at(&self, index: u64) -> Membership<Id> {
        self.log
            .iter()
            .rev()
            .filter(|(i, _)| *i <= index)
            .find_map(|(_, e)| match &e.payload {
                Payload::Config(m) => Some(m.clone()),
                _ => None,
            })
            .unwrap_or_else(|| self.base_membership.clone())
    }

    /// Append entries to the log, durably, and take in the configurations
    /// they carry.
    pub(super) fn append_entries(
        &mut self,
        entries: impl IntoIterator<Item = Entry<Id>>,
        out: &mut OutputsOf<Self>,
    ) {
        let mut has_config = false;
        let entries = entries
            .into_iter()
            .inspect(|e| has_config |= matches!(e.payload, Payload::Config(_)));
        self.log.append(entries, out);
        if has_config {
            self.refresh_membership();
        }
    }

    /// Remove the log's tail from `index` on (a conflict with the leader).
    pub(super) fn truncate_log(&mut self, index: u64, out: &mut OutputsOf<Self>) {
        debug_assert!(index > self.commit, "a committed entry is never truncated");
        self.log.truncate_from(index, out);
        let lost = self.proposals.split_off(&index);
        for (i, p) in lost {
            self.settle_result(i, p, Outcome::NotApplied);
        }
        if self.config_index >= index {
            self.refresh_membership();
        }
    }

    // ---- roles --------------------------------------------------------

    /// A random election timeout in `[election_min, election_max)`.
    pub(super) fn election_timeout(&mut self) -> Duration {
        let (lo, hi) = (self.config.election_min, self.config.election_max);
        if hi <= lo {
            return lo;
        }
        let span = (hi - lo).as_micros() as u64;
        lo + Duration::from_micros(self.rng.gen_range(0..span))
    }

    /// Arm the election timer (a voter only: others never campaign).
    pub(super) fn reset_election_timer(&mut self, out: &mut OutputsOf<Self>) {
        let after = self.election_timeout();
        out.set_timer(after, RaftTimer::Election);
    }

    /// Follow `term` (a newer one resets the vote), led by `leader` if known.
    pub(super) fn become_follower(
        &mut self,
        term: u64,
        leader: Option<Id>,
        out: &mut OutputsOf<Self>,
    ) {
        if term > self.term {
            self.term = term;
            self.vote = None;
        }
        let was_leader = self.role == Role::Leader;
        let changed = self.role != Role::Follower || self.leader != leader;
        if was_leader {
            self.stop_leading(out);
        }
        self.role = Role::Follower;
        self.leader = leader;
        self.votes.clear();
        if changed {
            self.emit_role(out);
        }
        self.reset_election_timer(out);
    }

    /// What a leader drops when it stops leading.
    fn stop_leading(&mut self, out: &mut OutputsOf<Self>) {
        self.progress.clear();
        self.transfer = None;
        self.lease_until = Duration::ZERO;
        self.round_sent.clear();
        self.want_round = false;
        self.fail_reads();
        out.cancel_timer(RaftTimer::Heartbeat);
        out.cancel_timer(RaftTimer::Transfer);
    }

    pub(super) fn emit_role(&self, out: &mut OutputsOf<Self>) {
        out.emit(RaftEvent::Role {
            term: self.term,
            role: self.role,
            leader: self.leader.clone(),
        });
    }

    // ---- applying -----------------------------------------------------

    /// Apply the committed entries not applied yet, then take a snapshot
    /// if enough have been applied since the last one.
    pub(super) fn apply_committed(&mut self, out: &mut OutputsOf<Self>) {
        while self.applied < self.commit {
            let index = self.applied + 1;
            // Borrowed, not cloned: the log, the proposals and the machine
            // are disjoint fields.
            let Some(entry) = self.log.entry(index) else {
                break;
            };
            let term = entry.term;
            let mine = self.proposals.remove(&index);
            let (digest, outcome) = match &entry.payload {
                Payload::Noop | Payload::Config(_) => {
                    let d = u64::from(matches!(entry.payload, Payload::Config(_)));
                    let outcome = mine.and_then(|p| {
                        if p.term != term {
                            Some(Outcome::NotApplied)
                        } else if p.awaited {
                            // Not a command: no reply to give (the typed
                            // API awaits only commands).
                            Some(Outcome::Unknown)
                        } else {
                            None
                        }
                    });
                    (d, outcome)
                }
                Payload::Command { session, bytes } => {
                    let reply = self.machine.apply(index, session.as_ref(), bytes);
                    let outcome = mine.map(|p| {
                        if p.term == term {
                            Outcome::Applied(reply)
                        } else {
                            Outcome::NotApplied
                        }
                    });
                    (digest(bytes), outcome)
                }
            };
            if let (Some(p), Some(o)) = (mine, outcome) {
                self.settle_result(index, p, o);
            }
            self.applied = index;
            self.stats.applied += 1;
            out.emit(RaftEvent::Applied {
                index,
                term,
                digest,
            });
        }
        self.release_reads();
        self.maybe_snapshot(out);
    }

    /// Record the outcome of proposal `p` at `index`: queued for
    /// [`Settles::take_settled`] when awaited, else kept for
    /// [`Raft::take_result`].
    pub(super) fn settle_result(
        &mut self,
        index: u64,
        p: Proposal,
        outcome: ProposalOutcome<S::Reply>,
    ) {
        if p.awaited {
            let token = RaftToken::Write {
                index,
                term: p.term,
            };
            self.settled.push((token, RaftSettled::Write(outcome)));
            return;
        }
        self.results.insert(index, outcome);
        while self.results.len() > KEPT_RESULTS {
            self.results.pop_first();
        }
    }

    /// Settle the awaited reads whose index is now applied.
    pub(super) fn release_reads(&mut self) {
        while let Some(&(index, id)) = self.read_waits.first() {
            if index > self.applied {
                break;
            }
            self.read_waits.pop_first();
            self.settled
                .push((RaftToken::Read(id), RaftSettled::Read(true)));
        }
    }

    // ---- commands -----------------------------------------------------

    /// Propose `command` (leader only): appended to the log and replicated.
    /// Returns its `(index, term)`; collect the outcome with
    /// [`Raft::take_result`] once [`Raft::applied_index`] reaches it.
    pub fn propose(
        &mut self,
        now: Duration,
        session: Option<Session>,
        command: &S::Command,
        out: &mut OutputsOf<Self>,
    ) -> Result<(u64, u64), RaftError<Id>> {
        let bytes = super::log::encode(command).map_err(|e| RaftError::Encode(e.to_string()))?;
        self.propose_payload(now, Payload::Command { session, bytes }, out)
    }

    /// Propose an entry (leader only).
    pub(super) fn propose_payload(
        &mut self,
        now: Duration,
        payload: Payload<Id>,
        out: &mut OutputsOf<Self>,
    ) -> Result<(u64, u64), RaftError<Id>> {
        self.check_leading()?;
        let index = self.log.last_index() + 1;
        self.append_entries(
            [Entry {
                term: self.term,
                payload,
            }],
            out,
        );
        self.proposals.insert(
            index,
            Proposal {
                term: self.term,
                awaited: false,
            },
        );
        self.stats.proposed += 1;
        self.after_leader_append(now, out);
        Ok((index, self.term))
    }

    /// Err unless this server leads and accepts proposals.
    pub(super) fn check_leading(&self) -> Result<(), RaftError<Id>> {
        if self.role != Role::Leader {
            return Err(RaftError::NotLeader {
                leader: self.leader.clone(),
            });
        }
        if self.transfer.is_some() {
            return Err(RaftError::Transferring);
        }
        Ok(())
    }

    /// The outcome of the proposal at `index` made in `term`, once settled
    /// (then forgotten); `None` while it may still be applied.
    pub fn take_result(&mut self, index: u64, term: u64) -> Option<ProposalOutcome<S::Reply>> {
        if let Some(o) = self.results.remove(&index) {
            return Some(o);
        }
        if self.proposals.get(&index).is_some_and(|p| p.term == term) {
            return None;
        }
        match self.log.term_at(index) {
            // Still in the log, not applied: it may yet commit (the record
            // of proposing it was lost with a restart of the core).
            Some(t) if t == term && index > self.applied => None,
            // Another entry holds the index: this one can never commit.
            Some(t) if t != term => Some(Outcome::NotApplied),
            // Applied (through a snapshot, or its result was not kept), or
            // gone from a log that lost it: whether it applied is unknown.
            _ => Some(Outcome::Unknown),
        }
    }

    /// Await the outcome of the proposal at `index` made in `term` through
    /// [`Settles`] instead of [`Raft::take_result`]: it is queued as
    /// `(RaftToken::Write { index, term }, RaftSettled::Write(outcome))`
    /// when it settles, with the outcome `take_result` would have given
    /// (at once if it is settled already). Returns its token.
    pub fn await_result(&mut self, index: u64, term: u64) -> RaftToken {
        let token = RaftToken::Write { index, term };
        if let Some(p) = self.proposals.get_mut(&index).filter(|p| p.term == term) {
            p.awaited = true;
            return token;
        }
        match self.take_result(index, term) {
            Some(outcome) => self.settled.push((token, RaftSettled::Write(outcome))),
            // Still in the log with its term and not applied, but not
            // proposed in this life of the core: applying it settles it.
            None => {
                self.proposals.insert(
                    index,
                    Proposal {
                        term,
                        awaited: true,
                    },
                );
            }
        }
        token
    }

    /// Change the configuration to `voters` and `learners` (leader only). A
    /// change of voters goes through the joint configuration; the leader
    /// leaves it on its own once it is committed. One change at a time.
    /// Returns the index of the configuration entry.
    pub fn change_membership(
        &mut self,
        now: Duration,
        voters: BTreeSet<Id>,
        learners: BTreeSet<Id>,
        out: &mut OutputsOf<Self>,
    ) -> Result<u64, RaftError<Id>> {
        self.check_leading()?;
        if self.config_index > self.commit || self.membership.is_joint() {
            return Err(RaftError::ChangeInProgress);
        }
        if voters.is_empty() {
            return Err(RaftError::NoVoters);
        }
        let learners: BTreeSet<Id> = learners.difference(&voters).cloned().collect();
        let next = Membership {
            joint: (voters != self.membership.voters).then_some(voters),
            voters: self.membership.voters.clone(),
            learners,
        };
        if next == self.membership {
            return Ok(self.config_index);
        }
        self.propose_payload(now, Payload::Config(next), out)
            .map(|(i, _)| i)
    }

    /// Hand leadership to `to` (leader only): proposals are refused until
    /// the transfer ends; `to` is brought up to date, then told to start an
    /// election at once. Abandoned after an election timeout.
    pub fn transfer_leadership(
        &mut self,
        to: Id,
        out: &mut OutputsOf<Self>,
    ) -> Result<(), RaftError<Id>> {
        self.check_leading()?;
        if to == self.me {
            return Ok(());
        }
        if !self.membership.is_voter(&to) {
            return Err(RaftError::NotVoter(to));
        }
        self.transfer = Some(to.clone());
        out.set_timer(self.config.election_max, RaftTimer::Transfer);
        self.send_timeout_now_if_ready(&to, out);
        Ok(())
    }
}

/// A stable 64-bit digest of a command's bytes (FNV-1a), for checks that
/// two servers applied the same command at one index.
fn digest(bytes: &[u8]) -> u64 {
    let mut h = 0xcbf2_9ce4_8422_2325u64;
    for b in bytes {
        h = (h ^ u64::from(*b)).wrapping_mul(0x0100_0000_01b3);
    }
    h | 2
}

impl<Id: MemberId, S: StateMachine> Protocol for Raft<Id, S> {
    type Id = Id;
    type Msg = RaftMsg<Id>;
    type Timer = RaftTimer;
    type Event = RaftEvent<Id>;

    fn on_start(&mut self, now: Duration, out: &mut OutputsOf<Self>) {
        self.last_quorum_check = now;
        self.reset_election_timer(out);
        self.emit_role(out);
    }

    fn on_message(&mut self, now: Duration, from: Id, msg: RaftMsg<Id>, out: &mut OutputsOf<Self>) {
        match msg {
            RaftMsg::RequestVote {
                term,
                last_index,
                last_term,
                pre,
                transfer,
            } => self.on_request_vote(now, from, term, (last_index, last_term), pre, transfer, out),
            RaftMsg::Vote { term, granted, pre } => {
                self.on_vote(now, from, term, granted, pre, out)
            }
            RaftMsg::Append {
                term,
                prev_index,
                prev_term,
                entries,
                commit,
                round,
            } => self.on_append(
                now,
                from,
                term,
                (prev_index, prev_term),
                entries,
                commit,
                round,
                out,
            ),
            RaftMsg::AppendReply {
                term,
                ok,
                index,
                last,
                conflict,
                round,
            } => self.on_append_reply(now, from, term, ok, index, last, conflict, round, out),
            RaftMsg::Snapshot {
                term,
                index,
                snap_term,
                membership,
                offset,
                data,
                done,
                round,
            } => self.on_snapshot(
                now,
                from,
                term,
                (index, snap_term, membership),
                offset,
                data,
                done,
                round,
                out,
            ),
            RaftMsg::SnapshotReply {
                term,
                index,
                next,
                done,
                round,
            } => self.on_snapshot_reply(now, from, term, index, next, done, round, out),
            RaftMsg::TimeoutNow { term } => self.on_timeout_now(now, from, term, out),
        }
    }

    fn on_timer(&mut self, now: Duration, timer: RaftTimer, out: &mut OutputsOf<Self>) {
        match timer {
            RaftTimer::Election => self.on_election_timeout(now, out),
            RaftTimer::Heartbeat => self.on_heartbeat(now, out),
            RaftTimer::Transfer => self.transfer = None,
        }
    }

    fn persist(&mut self, out: &mut OutputsOf<Self>) {
        // Compared in place: this runs after every input.
        let saved = self
            .saved
            .as_ref()
            .is_some_and(|h| h.term == self.term && h.vote == self.vote);
        if !saved {
            let hard = HardState {
                term: self.term,
                vote: self.vote.clone(),
            };
            out.put(HARD_KEY, &hard);
            self.saved = Some(hard);
        }
    }
}

impl<Id: MemberId, S: StateMachine> SnapshotCore for Raft<Id, S> {
    type State = HardState<Id>;
    fn state(&self) -> HardState<Id> {
        HardState {
            term: self.term,
            vote: self.vote.clone(),
        }
    }
    fn recover(recovered: &Recovered) -> Result<Option<HardState<Id>>, DurableError> {
        recovered.get_as(HARD_KEY)
    }
}

impl<Id: MemberId, S: StateMachine> SimProtocol for Raft<Id, S> {}

impl<Id: MemberId, S: StateMachine> Settles for Raft<Id, S> {
    type Token = RaftToken;
    type Settled = RaftSettled<S::Reply>;
    fn take_settled(&mut self, into: &mut Vec<(RaftToken, RaftSettled<S::Reply>)>) {
        into.append(&mut self.settled);
    }
}

/// What a proposal's outcome is, as [`Raft::take_result`] reports it.
pub type ProposalOutcome<R> = Outcome<Applied<R>>;

#[cfg(test)]
mod tests {
    use super::{Proposal, Proposals};

    fn p(term: u64) -> Proposal {
        Proposal {
            term,
            awaited: false,
        }
    }

    #[test]
    fn proposals_behave_as_a_map_by_index() {
        let mut ps = Proposals::default();
        for i in [5, 6, 9] {
            ps.insert(i, p(1));
        }
        ps.insert(7, p(2));
        ps.insert(3, p(2));
        ps.insert(6, p(3));
        let all = |ps: &Proposals| ps.0.iter().map(|(i, p)| (*i, p.term)).collect::<Vec<_>>();
        assert_eq!(all(&ps), vec![(3, 2), (5, 1), (6, 3), (7, 2), (9, 1)]);
        assert_eq!(ps.get(&7).map(|p| p.term), Some(2));
        assert!(ps.get(&8).is_none());
        ps.get_mut(&9).unwrap().awaited = true;
        assert!(ps.get(&9).unwrap().awaited);
        assert_eq!(ps.remove(&3).map(|p| p.term), Some(2));
        assert_eq!(ps.remove(&6).map(|p| p.term), Some(3));
        assert!(ps.remove(&6).is_none());
        let tail: Vec<u64> = ps.split_off(&7).into_iter().map(|(i, _)| i).collect();
        assert_eq!(tail, vec![7, 9]);
        assert_eq!(all(&ps), vec![(5, 1)]);
        assert!(ps.split_off(&100).into_iter().next().is_none());
    }
}
