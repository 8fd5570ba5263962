//! Leader election: every member can ask "who leads, in which term?" and is
//! told when that changes.
//!
//! Algorithms, each a sans-IO core in its own module: [`Bully`] (the highest
//! live id wins), [`RingElection`] (a message collects the live ids around the
//! ring; the initiator announces the largest) and [`NextInLine`] (the leader
//! publishes an ordered successor list; on its failure the first live
//! successor takes over without an election). [`ElectionAlgorithm`] names
//! them for configuration files and [`AnyElection`] runs the one a
//! configuration names.
//!
//! ## Terms
//! Every leadership has a *term* that only grows and is kept on stable
//! storage ([`ElectionDurable`]), so it survives restarts. Terms are *striped*
//! by member rank (like Paxos ballot numbers `(round, id)` packed into one
//! integer): the member of rank `r` in a group of `n` only ever claims terms
//! `t` with `t % n == r`, always larger than every term it has seen. Hence
//! two members can never claim the same term: **at most one leader per
//! term**, whatever the network does. Members accept a leader only for a term
//! at least as large as the one they know, reject older ones (answering with
//! [`ElectionEvent`]-worthy information: the newer term and its leader), and a
//! leader that hears of a newer term steps down.
//! [`Terms`] keeps these rules for every core, and
//! [`Group`](crate::group::Group) the members, ranks and live set they
//! are computed from.
//!
//! ## Partitions
//! Bully and ring election rely on the failure detector; across a partition
//! each side sees the other as down and elects its own leader — two leaders
//! at once, necessarily with different terms. After the partition heals the
//! members hear of both terms; the newer one wins (bully and ring then hold a
//! fresh election that the highest live id wins, with a term larger than
//! both). A resource that remembers the largest term it has seen can refuse
//! the stale leader meanwhile. `tests/election_partition.rs` shows this.

pub mod any;
pub mod bully;
pub mod next_in_line;
pub mod ring;

pub use any::{AnyElection, AnyElectionMsg};
pub use bully::Bully;
pub use next_in_line::NextInLine;
pub use ring::RingElection;

use std::time::Duration;

use serde::{Deserialize, Serialize};
use troupe_framework::sansio::{DurableError, Protocol, Recovered, SnapshotCore};

use crate::group::Terms;

pub use crate::family::UnknownAlgorithm;
pub use crate::group::next_term;

crate::algorithms! {
    /// The election algorithms, by the names configuration files use.
    pub enum ElectionAlgorithm {
        /// Garcia-Molina's bully algorithm: [`Bully`].
        Bully = "bully",
        /// Ring election (Chang–Roberts style, collecting ids): [`RingElection`].
        Ring = "ring",
        /// Successor-list failover: [`NextInLine`].
        NextInLine = "next-in-line",
    }
}

/// What an election core tells its local user.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum ElectionEvent<Id> {
    /// The leader this node knows changed. `leader: None` means the leader of
    /// `term` is gone (or stepped down) and a new one is being chosen.
    LeaderChanged {
        /// The term this node is in.
        term: u64,
        /// Its leader, if known.
        leader: Option<Id>,
    },
}

/// Timing of an election core.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct ElectionConfig {
    /// Bully: how long to wait for an `Alive` from a higher member; ring: for
    /// the election message to come back; next-in-line: for the successor to
    /// announce itself.
    pub election_timeout: Duration,
    /// Bully: how long to wait for the `Coordinator` after an `Alive`.
    pub coordinator_timeout: Duration,
    /// How often a leader re-announces itself (repairs lost announcements).
    pub heartbeat: Duration,
}

impl Default for ElectionConfig {
    fn default() -> Self {
        Self {
            election_timeout: Duration::from_millis(200),
            coordinator_timeout: Duration::from_millis(400),
            heartbeat: Duration::from_millis(500),
        }
    }
}

/// What every election core keeps on stable storage.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ElectionDurable<Id> {
    /// The term this node is in (it never goes back).
    pub term: u64,
    /// The largest term it has seen.
    pub max_term: u64,
    /// Next-in-line: the last successor list it was given.
    pub successors: Vec<Id>,
}

impl<Id> Default for ElectionDurable<Id> {
    fn default() -> Self {
        Self {
            term: 0,
            max_term: 0,
            successors: Vec::new(),
        }
    }
}

/// The query side every election core offers (what an actor wrapper exposes).
pub trait ElectionCore: Protocol<Event = ElectionEvent<<Self as Protocol>::Id>> {
    /// This node's terms: its term, the largest it has seen, its leader.
    fn terms(&self) -> &Terms<Self::Id>;
    /// The term this node is in.
    fn term(&self) -> u64 {
        self.terms().term()
    }
    /// The leader of that term, if known.
    fn leader(&self) -> Option<&Self::Id> {
        self.terms().leader()
    }
    /// This node's id.
    fn id(&self) -> &Self::Id {
        self.terms().me()
    }
    /// True when this node is the leader of its term.
    fn is_leader(&self) -> bool {
        self.leader() == Some(self.id())
    }
}

/// Who leads, in which term, as this node knows it: what an election's
/// handles watch.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
pub struct Leadership {
    /// The term this node is in.
    pub term: u64,
    /// Its leader, if known.
    pub leader: Option<String>,
}

/// The leader-election family: actor `election` (or `election.<name>` for
/// a named election) on every member.
#[derive(Debug)]
pub enum ElectionFamily {}

impl crate::family::Family for ElectionFamily {
    type Algorithm = ElectionAlgorithm;
    type Config = ElectionConfig;
    type Core = AnyElection<String>;
    type View = Leadership;

    fn actor_name(instance: &str) -> String {
        if instance.is_empty() {
            "election".to_string()
        } else {
            format!("election.{instance}")
        }
    }
    fn build(
        algorithm: ElectionAlgorithm,
        me: String,
        members: Vec<String>,
        config: &ElectionConfig,
        recovered: &Recovered,
    ) -> Result<AnyElection<String>, DurableError> {
        let state = AnyElection::<String>::recover(recovered)?;
        Ok(AnyElection::new(algorithm, me, members, *config, state))
    }
    fn view(core: &AnyElection<String>) -> Leadership {
        Leadership {
            term: core.term(),
            leader: core.leader().cloned(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_round_trip() {
        for a in ElectionAlgorithm::ALL {
            assert_eq!(a.name().parse::<ElectionAlgorithm>(), Ok(a));
        }
        assert!("raft".parse::<ElectionAlgorithm>().is_err());
    }
}
