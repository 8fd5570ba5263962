//! The SWIM inputs' types: the membership [`Update`]s that every message
//! can piggyback, the wire messages ([`SwimMessage`], carried in
//! [`FdMessage::Swim`](crate::fd::FdMessage::Swim)) and the timers
//! ([`SwimTimer`], in [`FdTimer::Swim`](crate::fd::FdTimer::Swim)).
//! Data only: what each input does is in the sibling modules.

use serde::{Deserialize, Serialize};

/// A membership update, disseminated by gossip.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub enum Update<Id> {
    /// `member` is alive at incarnation `inc`.
    Alive {
        /// The member.
        member: Id,
        /// Its incarnation number.
        inc: u64,
    },
    /// `from` suspects `member` at incarnation `inc`.
    Suspect {
        /// The member.
        member: Id,
        /// Its incarnation number.
        inc: u64,
        /// Who suspects it.
        from: Id,
    },
    /// `from` declared `member` dead at incarnation `inc`.
    Dead {
        /// The member.
        member: Id,
        /// Its incarnation number.
        inc: u64,
        /// Who declared it.
        from: Id,
    },
    /// `member` left gracefully.
    Left {
        /// The member.
        member: Id,
        /// Its incarnation number.
        inc: u64,
    },
}

impl<Id> Update<Id> {
    /// The member the update is about.
    pub fn member(&self) -> &Id {
        match self {
            Update::Alive { member, .. }
            | Update::Suspect { member, .. }
            | Update::Dead { member, .. }
            | Update::Left { member, .. } => member,
        }
    }
}

/// SWIM wire messages (inside [`FdMessage::Swim`](crate::fd::FdMessage::Swim)).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub enum SwimMessage<Id> {
    /// Are you alive? Answer with `Ack { seq }`.
    Ping {
        /// Sender's sequence number.
        seq: u64,
        /// Piggybacked updates.
        updates: Vec<Update<Id>>,
    },
    /// Answer to a `Ping` (or relayed answer to a `PingReq`).
    Ack {
        /// The ping's sequence number.
        seq: u64,
        /// Piggybacked updates.
        updates: Vec<Update<Id>>,
    },
    /// Please ping `target` for me and relay its ack.
    PingReq {
        /// Requester's sequence number.
        seq: u64,
        /// Member to probe.
        target: Id,
        /// Piggybacked updates.
        updates: Vec<Update<Id>>,
    },
    /// The helper got no ack from the target in time (Lifeguard).
    Nack {
        /// Requester's sequence number.
        seq: u64,
    },
    /// A new node asks a seed to be let in.
    Join {
        /// The joiner's incarnation number.
        inc: u64,
    },
    /// The seed's membership snapshot (including itself).
    JoinReply {
        /// Every member the seed knows, with its state.
        members: Vec<Update<Id>>,
    },
    /// Periodic gossip: membership updates only, no answer expected
    /// (except corrections when it carried news older than the receiver's).
    Gossip {
        /// The updates.
        updates: Vec<Update<Id>>,
    },
}

/// SWIM timers (inside [`FdTimer::Swim`](crate::fd::FdTimer::Swim)).
#[derive(Debug, Clone, PartialEq)]
pub enum SwimTimer<Id> {
    /// Start of a protocol period.
    Probe,
    /// Direct-ack deadline of probe `seq`.
    ProbeTimeout {
        /// Probe sequence number.
        seq: u64,
    },
    /// Deadline of a relayed ping (send a nack).
    RelayTimeout {
        /// Relay sequence number.
        seq: u64,
    },
    /// Re-check a suspicion of `member`.
    Suspicion {
        /// The suspected member.
        member: Id,
    },
    /// Ping a `Down` member.
    Reconnect,
    /// Retry joining through the seeds.
    JoinRetry,
    /// Start of a gossip round.
    Gossip,
    /// The first-contact deadline of the seeds: one not heard of by then
    /// is reported `Down`.
    FirstContact,
}
