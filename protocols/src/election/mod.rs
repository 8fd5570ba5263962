//! Leader election: every member can ask "who leads, in which term?" and is
//! told when that changes.
//!
//! Algorithms, each a sans-IO core in its own module: [`Bully`] (the highest
//! live id wins), [`RingElection`] (a message collects the live ids around the
//! ring; the initiator announces the largest) and [`NextInLine`] (the leader
//! publishes an ordered successor list; on its failure the first live
//! successor takes over without an election). Each is an [`Election`] — the
//! group, the [`Terms`], the settings and the durable snapshot that every
//! algorithm keeps — around the algorithm's own state. [`ElectionAlgorithm`]
//! names them for configuration files and [`AnyElection`] runs the one a
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
//! [`Group`] the members, ranks and live set they
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

use std::fmt::Debug;
use std::time::Duration;

use serde::{Deserialize, Serialize};
use troupe_framework::sansio::{Outputs, Protocol, Snapshot, SnapshotCore};

use crate::family::{EventMetric, ViewMetric};
use crate::group::{Group, Terms};
use crate::testkit::SimProtocol;
use crate::MemberId;

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

/// An election core: what every algorithm keeps — its group, its terms, its
/// settings and the snapshot of its durable state — around the algorithm's
/// own state `A`. [`Bully`], [`RingElection`] and [`NextInLine`] are
/// elections of their algorithm's state; each implements [`Protocol`], and
/// every election is an [`ElectionCore`], a [`SnapshotCore`] (its terms, and
/// what `A` adds) and a [`SimProtocol`].
#[derive(Debug, Clone)]
pub struct Election<Id, A> {
    group: Group<Id>,
    terms: Terms<Id>,
    config: ElectionConfig,
    saved: Snapshot<ElectionDurable<Id>>,
    alg: A,
}

/// An election algorithm's own state: what its [`Election`] keeps besides
/// the group and the terms. It starts as the default value.
pub trait ElectionState<Id>: Clone + Debug + Default {
    /// Take up what a previous life made durable (the default value on a
    /// first start), for the member of `group`. Default: nothing to take.
    fn resume(&mut self, group: &Group<Id>, durable: &ElectionDurable<Id>) {
        let _ = (group, durable);
    }
    /// What it keeps on stable storage besides the terms: next-in-line's
    /// successor list (nothing by default).
    fn successors(&self) -> Vec<Id> {
        Vec::new()
    }
}

impl<Id: MemberId, A: ElectionState<Id>> Election<Id, A> {
    /// A core for `me` among `members`, restarted from `durable` if given.
    pub fn new(
        me: Id,
        members: impl IntoIterator<Item = Id>,
        config: ElectionConfig,
        durable: Option<ElectionDurable<Id>>,
    ) -> Self {
        let group = Group::new(me, members);
        let d = durable.clone().unwrap_or_default();
        let mut alg = A::default();
        alg.resume(&group, &d);
        Self {
            terms: Terms::new(&group, &d),
            group,
            config,
            saved: Snapshot::resumed(durable),
            alg,
        }
    }
}

impl<Id: MemberId, A: ElectionState<Id>> Election<Id, A>
where
    Self: SnapshotCore<State = ElectionDurable<Id>>,
{
    /// Save the durable state if it changed (what the algorithm's
    /// [`Protocol::persist`] does).
    fn save<M, T>(&mut self, out: &mut Outputs<Id, M, T, ElectionEvent<Id>>) {
        let state = self.state();
        self.saved.save(state, out);
    }
}

impl<Id: MemberId, A: ElectionState<Id>> ElectionCore for Election<Id, A>
where
    Self: Protocol<Id = Id, Event = ElectionEvent<Id>>,
{
    fn terms(&self) -> &Terms<Id> {
        &self.terms
    }
}

impl<Id: MemberId, A: ElectionState<Id>> SnapshotCore for Election<Id, A>
where
    Self: Protocol<Id = Id>,
{
    type State = ElectionDurable<Id>;
    fn state(&self) -> ElectionDurable<Id> {
        self.terms.durable(self.alg.successors())
    }
}

impl<Id: MemberId, A: ElectionState<Id>> SimProtocol for Election<Id, A> where Self: Protocol {}

/// Who leads, in which term, as this node knows it: what an election's
/// handles watch.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
pub struct Leadership {
    /// The term this node is in.
    pub term: u64,
    /// Its leader, if known.
    pub leader: Option<String>,
}

crate::family::family! {
    /// The leader-election family: actor `election` (or `election.<name>`
    /// for a named election) on every member.
    pub enum ElectionFamily {
        actor = |instance| match instance {
            "" => "election".to_string(),
            named => format!("election.{named}"),
        };
        core AnyElection(ElectionAlgorithm, ElectionConfig);
        view Leadership = |core| Leadership { term: core.term(), leader: core.leader().cloned() };
        trace = |protocol, event| Some(troupe_framework::trace::TraceEvent::Note {
            text: match event {
                ElectionEvent::LeaderChanged { term, leader: Some(l) } => {
                    format!("{protocol}: leader elected {l} (term {term})")
                }
                ElectionEvent::LeaderChanged { term, leader: None } => {
                    format!("{protocol}: no leader (term {term}), electing")
                }
            },
        });
        view_metrics = |view, out| {
            out.push(ViewMetric::gauge(
                "troupe_election_term",
                "The election term this node is in.",
                view.term as f64,
            ));
            out.push(ViewMetric::gauge(
                "troupe_election_leader_known",
                "1 while this node knows the leader of its term.",
                f64::from(u8::from(view.leader.is_some())),
            ));
        };
        event_metric = |event| match event {
            ElectionEvent::LeaderChanged { leader: Some(_), .. } => Some(EventMetric {
                name: "troupe_elections_total",
                help: "Elections this node saw end: leader changes that name a leader.",
                label: None,
            }),
            ElectionEvent::LeaderChanged { leader: None, .. } => None,
        };
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_round_trip() {
        crate::family::assert_names_round_trip::<ElectionAlgorithm>("raft");
    }
}
