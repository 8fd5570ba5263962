//! Raft consensus: a replicated log, and a replicated state machine on it.
//!
//! One sans-IO core per server, [`Raft`], with its concerns in their own
//! modules: [`election`] (randomized timeouts, pre-vote, check-quorum,
//! leadership transfer), [`replication`] (pipelined, batched appends, the
//! fast back-up, the commit rule), [`snapshot`] (compaction and chunked
//! `InstallSnapshot`), [`read`] (ReadIndex and lease reads), [`membership`]
//! (joint consensus and learners), [`machine`] (the application's state
//! machine and client sessions) and [`log`] (the log and its durable form).
//!
//! ## Guarantees
//! With at most a minority of the voters crashed or cut off, and messages
//! that may be lost, duplicated, delayed and reordered:
//! - **election safety**: at most one leader per term;
//! - **leader append-only**: a leader never overwrites or deletes entries
//!   in its own log;
//! - **log matching**: two logs with an entry of the same index and term are
//!   identical up to that index;
//! - **leader completeness**: an entry committed in a term is in the log of
//!   every leader of a later term;
//! - **state-machine safety**: no two servers apply different entries at one
//!   index; every server applies the committed entries in index order.
//!
//! A leader commits by counting replicas only entries of its own term
//! (older entries commit with them: Figure 8 of the paper). The term and the
//! vote are durable before a vote or an append reply leaves, and entries are
//! durable before they are acknowledged (the toolkit's durable writes: see
//! [`troupe_framework::sansio::durable`]). A server that restarts is rebuilt
//! from its snapshot, its log, its term and its vote, and nothing else.
//!
//! Liveness needs a majority of the voters up and connected, and election
//! timeouts well above the round trip; then a leader is elected and
//! proposals commit.
//!
//! ## Failure behaviour
//! - A leader that has not heard from a quorum within an election timeout
//!   steps down (check-quorum), so a leader cut off from the majority stops
//!   serving reads and writes.
//! - With pre-vote, a server cut off from the others does not raise its
//!   term while away, so rejoining does not depose a working leader. A
//!   voter that heard from a leader within the minimum election timeout
//!   ignores vote requests (leader stickiness), except in a transfer.
//! - A proposal's outcome is reported as applied (with the state machine's
//!   reply), **not applied** (its entry was overwritten: it can never
//!   commit), or **unknown** (the server lost track of it: it may or may not
//!   have been applied). Client sessions make a retried command apply once.
//!
//! ## Reads
//! [`ReadMode::ReadIndex`] (the default): the leader notes its commit index,
//! confirms with a heartbeat round acknowledged by a quorum that it is still
//! the leader, waits until it has applied that index, and answers from its
//! state machine; this needs a committed entry of its own term (the no-op it
//! appends when elected). [`ReadMode::Lease`] skips the heartbeat round
//! while the leader holds a lease: a quorum acknowledged a heartbeat sent at
//! time `t`, so no other leader can be elected before `t` plus the minimum
//! election timeout on the voters' clocks (they ignore vote requests that
//! long after hearing from a leader). The lease ends at `t + election_min ×
//! (1 − clock_drift)`: correct only while clocks run at rates within
//! `clock_drift` of each other (and never during a leadership transfer).

pub mod election;
pub mod kv;
pub mod log;
pub mod machine;
pub mod membership;
pub mod message;
pub mod read;
pub mod replication;
pub mod server;
pub mod snapshot;

pub use self::log::{Entry, Payload, RaftLog, Session, LOG};
pub use self::machine::{Applied, CommandError, Replicated, StateMachine};
pub use self::membership::Membership;
pub use self::message::{RaftMsg, RaftTimer};
pub use self::server::{HardState, ProposalOutcome, Raft, SnapshotRecord, HARD_KEY, SNAPSHOT_KEY};

use std::collections::BTreeMap;
use std::marker::PhantomData;
use std::time::Duration;

use serde::{Deserialize, Serialize};
use troupe_framework::sansio::{DurableError, Recovered};

use crate::MemberId;

/// How reads are served (see the module docs).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum ReadMode {
    /// Confirm leadership with a heartbeat round per batch of reads.
    #[default]
    ReadIndex,
    /// Serve from the leader's lease (bounded clock drift assumed).
    Lease,
}

/// Raft's settings (the same on every server of a group).
#[derive(Debug, Clone, PartialEq)]
pub struct RaftConfig {
    /// The shortest election timeout.
    pub election_min: Duration,
    /// The longest election timeout (exclusive): each timeout is drawn at
    /// random in between.
    pub election_max: Duration,
    /// The leader's heartbeat interval (well under `election_min`).
    pub heartbeat: Duration,
    /// Entries per append message at most.
    pub max_batch: usize,
    /// Append messages in flight per follower at most (pipelining).
    pub max_inflight: usize,
    /// Take a snapshot once this many entries were applied since the last.
    pub snapshot_after: u64,
    /// Bytes per snapshot chunk.
    pub snapshot_chunk: usize,
    /// Pre-vote before a real election.
    pub pre_vote: bool,
    /// Leaders step down without a quorum; voters are sticky to a leader.
    pub check_quorum: bool,
    /// How reads are served.
    pub read_mode: ReadMode,
    /// For lease reads: the bound on the relative clock-rate difference.
    pub clock_drift: f64,
    /// Client sessions kept at most.
    pub max_sessions: usize,
    /// Mixed into each server's random election timeouts (with its name).
    /// `troupe::raft::start_raft` also mixes in the node's incarnation, so
    /// fresh clusters and restarted servers draw new timeouts.
    pub seed: u64,
    /// This server joins an existing group: it starts with no
    /// configuration, never campaigns, and learns the configuration from
    /// the leader that adds it.
    pub joining: bool,
    /// A deliberately broken Raft that commits entries of earlier terms by
    /// counting replicas (Figure 8). Only for the tests that prove the
    /// checkers catch it; never set it otherwise.
    #[doc(hidden)]
    pub unsafe_commit_old_terms: bool,
}

impl Default for RaftConfig {
    fn default() -> Self {
        Self {
            election_min: Duration::from_millis(300),
            election_max: Duration::from_millis(600),
            heartbeat: Duration::from_millis(50),
            max_batch: 512,
            max_inflight: 8,
            snapshot_after: 10_000,
            snapshot_chunk: 256 * 1024,
            pre_vote: true,
            check_quorum: true,
            read_mode: ReadMode::ReadIndex,
            clock_drift: 0.1,
            max_sessions: 10_000,
            seed: 0,
            joining: false,
            unsafe_commit_old_terms: false,
        }
    }
}

/// A server's role.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Role {
    /// Follows a leader (or waits for one).
    #[default]
    Follower,
    /// Asks for pre-votes (changes no term).
    PreCandidate,
    /// Asks for votes in its new term.
    Candidate,
    /// Leads its term.
    Leader,
}

/// What a Raft core tells its local user.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RaftEvent<Id> {
    /// The role, the term or the known leader changed.
    Role {
        /// The term.
        term: u64,
        /// The role.
        role: Role,
        /// The leader, if known.
        leader: Option<Id>,
    },
    /// The entry at `index` was applied to the state machine.
    Applied {
        /// Its index.
        index: u64,
        /// Its term.
        term: u64,
        /// A digest of what it carried (0 for a no-op, 1 for a
        /// configuration, a hash of the command's bytes otherwise).
        digest: u64,
    },
    /// A snapshot from the leader replaced the state up to `index`.
    SnapshotInstalled {
        /// Its last index.
        index: u64,
        /// Its term.
        term: u64,
    },
}

/// The outcome of a proposal.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum Outcome<R> {
    /// Applied; the state machine answered this.
    Applied(R),
    /// Certainly not applied: its entry was replaced and can never commit.
    NotApplied,
    /// The server lost track of it: it may or may not have been applied.
    Unknown,
}

/// A request of the local user awaited through
/// [`troupe_framework::sansio::Settles`] (see [`Raft::await_result`] and
/// [`Raft::await_read`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum RaftToken {
    /// The proposal at `index` made in `term`.
    Write {
        /// Its index.
        index: u64,
        /// The term it was proposed in.
        term: u64,
    },
    /// The read with this id.
    Read(u64),
}

/// What an awaited request came to.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RaftSettled<R> {
    /// A proposal's outcome (as [`Raft::take_result`] gives it).
    Write(ProposalOutcome<R>),
    /// A read: `true` when it is confirmed and its read index applied (the
    /// state machine can be read now), `false` when it failed (leadership
    /// lost before it was confirmed).
    Read(bool),
}

/// Why a command was refused (nothing was proposed).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum RaftError<Id> {
    /// This server does not lead; the leader it knows, if any.
    #[error("not the leader (leader: {leader:?})")]
    NotLeader {
        /// The leader of the current term, if known.
        leader: Option<Id>,
    },
    /// A leadership transfer is under way.
    #[error("a leadership transfer is under way")]
    Transferring,
    /// A configuration change is not finished yet.
    #[error("a configuration change is under way")]
    ChangeInProgress,
    /// A configuration needs at least one voter.
    #[error("a configuration needs at least one voter")]
    NoVoters,
    /// Leadership can only go to a voter.
    #[error("{0:?} is not a voter")]
    NotVoter(Id),
    /// The command does not encode.
    #[error("the command does not encode: {0}")]
    Encode(String),
}

/// Counters of one server.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct RaftStats {
    /// Elections started (real ones, not pre-votes).
    pub elections: u64,
    /// Entries proposed here.
    pub proposed: u64,
    /// Entries applied here.
    pub applied: u64,
    /// Append messages sent (with entries).
    pub appends: u64,
    /// Entries sent in them.
    pub entries_sent: u64,
    /// Heartbeats sent.
    pub heartbeats: u64,
    /// Snapshots taken.
    pub snapshots_taken: u64,
    /// Snapshots installed from a leader.
    pub snapshots_installed: u64,
    /// Reads served.
    pub reads: u64,
}

/// A server's status: role, term, indexes, configuration, and (on the
/// leader) each member's match index.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(bound = "Id: MemberId")]
pub struct RaftStatus<Id: Ord> {
    /// This server.
    pub id: Id,
    /// Its term.
    pub term: u64,
    /// Its role.
    pub role: Role,
    /// The leader it knows.
    pub leader: Option<Id>,
    /// Its commit index.
    pub commit: u64,
    /// Its last applied index.
    pub applied: u64,
    /// Its last log index.
    pub last_index: u64,
    /// The last index its snapshot covers.
    pub snapshot_index: u64,
    /// The configuration in effect.
    pub membership: Membership<Id>,
    /// On a leader: each member's match index (its own: its last index).
    pub matched: BTreeMap<Id, u64>,
    /// Counters.
    pub stats: RaftStats,
}

/// What typed handles watch: changes whenever the role, the leader, the
/// term, the applied index or a read's outcome changes.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct RaftView {
    /// The term.
    pub term: u64,
    /// The role.
    pub role: Role,
    /// The leader, if known.
    pub leader: Option<String>,
    /// The commit index.
    pub commit: u64,
    /// The last applied index.
    pub applied: u64,
    /// Grows whenever a read collected with [`Raft::take_read`] is settled
    /// (confirmed or failed); awaited reads ([`Raft::await_read`]) settle
    /// through [`troupe_framework::sansio::Settles`] instead.
    pub read_epoch: u64,
}

crate::algorithms! {
    /// The consensus algorithms (one, for configuration files).
    pub enum RaftAlgorithm {
        /// Raft (Ongaro and Ousterhout), with the extensions in the module docs.
        Raft = "raft",
    }
}

/// The Raft family for state machine `S`: actor `raft.<instance>`.
pub struct RaftFamily<S>(PhantomData<S>);

impl<S: StateMachine> crate::family::Family for RaftFamily<S> {
    type Algorithm = RaftAlgorithm;
    type Config = RaftConfig;
    type Core = Raft<String, S>;
    type View = RaftView;

    fn actor_name(instance: &str) -> String {
        format!("raft.{instance}")
    }

    fn build(
        _algorithm: RaftAlgorithm,
        me: String,
        members: Vec<String>,
        config: &RaftConfig,
        recovered: &Recovered,
    ) -> Result<Raft<String, S>, DurableError> {
        let initial = if config.joining {
            Membership::new([])
        } else {
            Membership::new(members)
        };
        Raft::recover(me, initial, config.clone(), recovered)
    }

    fn view_unchanged(core: &Raft<String, S>, last: &RaftView) -> bool {
        last.applied == core.applied
            && last.commit == core.commit
            && last.read_epoch == core.read_epoch
            && last.term == core.term
            && last.role == core.role
            && last.leader == core.leader
    }

    fn view(core: &Raft<String, S>) -> RaftView {
        RaftView {
            term: core.term,
            role: core.role,
            leader: core.leader.clone(),
            commit: core.commit,
            applied: core.applied,
            read_epoch: core.read_epoch,
        }
    }

    fn view_metrics(view: &RaftView, out: &mut Vec<crate::family::ViewMetric>) {
        use crate::family::ViewMetric;
        out.push(ViewMetric::gauge(
            "troupe_raft_term",
            "The Raft term this server is in.",
            view.term as f64,
        ));
        out.push(ViewMetric::gauge(
            "troupe_raft_commit_index",
            "The highest log index this server knows committed.",
            view.commit as f64,
        ));
        out.push(ViewMetric::gauge(
            "troupe_raft_applied_index",
            "The highest log index applied to this server's state machine.",
            view.applied as f64,
        ));
        out.push(ViewMetric::gauge(
            "troupe_raft_leader",
            "1 while this server leads its term.",
            f64::from(u8::from(view.role == Role::Leader)),
        ));
    }
}

impl<Id: MemberId> Default for Membership<Id> {
    fn default() -> Self {
        Membership::new([])
    }
}
