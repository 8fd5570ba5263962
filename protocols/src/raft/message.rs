//! Raft's wire messages and timers.

use serde::{Deserialize, Serialize};

use super::log::Entry;
use super::membership::Membership;
use crate::MemberId;

/// The messages Raft servers exchange.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(bound = "Id: MemberId")]
pub enum RaftMsg<Id: Ord> {
    /// A candidate asks for a vote (`pre`: a pre-vote, which changes no
    /// term and no vote; `transfer`: the leader asked for this election,
    /// so leader stickiness does not apply).
    RequestVote {
        /// The term the vote is for (for a pre-vote: the term the candidate
        /// would campaign in).
        term: u64,
        /// The candidate's last log index.
        last_index: u64,
        /// The candidate's last log term.
        last_term: u64,
        /// A pre-vote.
        pre: bool,
        /// An election the leader handed over.
        transfer: bool,
    },
    /// The answer to a vote request.
    Vote {
        /// The voter's term (for a granted pre-vote: the request's term).
        term: u64,
        /// Whether the vote was granted.
        granted: bool,
        /// Answering a pre-vote.
        pre: bool,
    },
    /// Leader to follower: entries after `(prev_index, prev_term)` (none for
    /// a heartbeat), the leader's commit index and its read round.
    Append {
        /// The leader's term.
        term: u64,
        /// The index of the entry before `entries`.
        prev_index: u64,
        /// Its term.
        prev_term: u64,
        /// The entries to store.
        entries: Vec<Entry<Id>>,
        /// The leader's commit index.
        commit: u64,
        /// The leader's heartbeat round (echoed, for ReadIndex and leases).
        round: u64,
    },
    /// Follower to leader.
    AppendReply {
        /// The follower's term.
        term: u64,
        /// Whether the entries now follow `prev` in the follower's log.
        ok: bool,
        /// When `ok`: the last index known to match the leader's log.
        /// Otherwise: the `prev_index` that was rejected.
        index: u64,
        /// The follower's last index (where a shorter log ends).
        last: u64,
        /// When rejected on a term mismatch: the follower's term at
        /// `prev_index` and the first index of that term (fast back-up).
        conflict: Option<(u64, u64)>,
        /// The round of the append answered.
        round: u64,
    },
    /// Leader to follower: one chunk of a snapshot.
    Snapshot {
        /// The leader's term.
        term: u64,
        /// The last index the snapshot covers.
        index: u64,
        /// Its term.
        snap_term: u64,
        /// The configuration at `index`.
        membership: Membership<Id>,
        /// Where this chunk starts in the snapshot's bytes.
        offset: u64,
        /// The chunk.
        #[serde(with = "serde_bytes")]
        data: Vec<u8>,
        /// The last chunk.
        done: bool,
        /// The leader's heartbeat round.
        round: u64,
    },
    /// Follower to leader: the snapshot's bytes received so far.
    SnapshotReply {
        /// The follower's term.
        term: u64,
        /// The snapshot's last index.
        index: u64,
        /// The offset of the next chunk wanted.
        next: u64,
        /// The snapshot is installed.
        done: bool,
        /// The round of the chunk answered.
        round: u64,
    },
    /// Leader to its chosen successor: start an election now.
    TimeoutNow {
        /// The leader's term.
        term: u64,
    },
}

impl<Id: Ord> RaftMsg<Id> {
    /// The term the message carries.
    pub fn term(&self) -> u64 {
        match self {
            RaftMsg::RequestVote { term, .. }
            | RaftMsg::Vote { term, .. }
            | RaftMsg::Append { term, .. }
            | RaftMsg::AppendReply { term, .. }
            | RaftMsg::Snapshot { term, .. }
            | RaftMsg::SnapshotReply { term, .. }
            | RaftMsg::TimeoutNow { term } => *term,
        }
    }
}

impl crate::driver::WireMessage for RaftMsg<String> {
    const WIRE_NAME: &'static str = "troupe.raft";
}

/// Raft's timers (keyed: setting one replaces the pending one).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RaftTimer {
    /// Follower or candidate: no leader heard from for an election timeout.
    Election,
    /// Leader: send heartbeats (and resend what was not acknowledged).
    Heartbeat,
    /// Leader: a leadership transfer that has not finished is abandoned.
    Transfer,
}
