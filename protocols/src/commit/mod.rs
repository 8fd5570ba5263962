//! Atomic commit: a transaction spread over several participants commits
//! everywhere or aborts everywhere.
//!
//! Algorithms, each a sans-IO core in its own module: [`TwoPhase`]
//! (two-phase commit with cooperative termination, presumed abort by
//! default, presumed nothing on request) and [`ThreePhase`] (Skeen's
//! three-phase commit with a termination protocol). [`CommitAlgorithm`]
//! names them for configuration files (`"two-phase"`, `"three-phase"`) and
//! [`AnyCommit`] runs the one a configuration names.
//!
//! ## One core, many transactions
//! A core plays, per transaction (a [`TxId`] unique across the group), the
//! *coordinator* (the node where [`CommitCore::begin`] was called) or a
//! *participant* (a node named in the `begin`; the coordinator is never one
//! of its own participants). A node takes part in any number of
//! transactions at once.
//!
//! ## The resource manager
//! A participant asks its local resource manager for its vote with the event
//! [`CommitEvent::Prepare`]; the manager answers with the command
//! [`CommitCore::vote`] (any time later, or never: the coordinator then
//! aborts on its vote timeout). Both roles report the outcome with
//! [`CommitEvent::Decided`] once it is durable.
//!
//! ## Properties
//! The names the module headers and tests use (`PROTOCOLS.md`): **AC1** all
//! processes that decide reach the same decision; **AC2** a decision is never
//! reversed; **AC3** commit only if every participant voted yes; **AC4** with
//! no failures and all votes yes the decision is commit; **AC5** every
//! process eventually decides once failures heal. Each core's header says
//! which hold under which failures.
//!
//! ## Durability
//! Every core keeps a log ([`log::LogRecord`], appended through the
//! toolkit's durable writes) and is rebuilt from it alone after a crash
//! ([`CommitDurable`]). The forcing rules are the textbook's: a participant
//! makes `Ready` durable before it votes yes, a coordinator makes its
//! decision durable before it sends it, and the `End` record is lazy.
//! [`ThreePhase`] also saves the durable state of its embedded election
//! (its term) under [`log::ELECTION_KEY`], beside the log, whenever it
//! changes.
//!
//! ## Forgetting
//! The log and the transactions a core keeps stay bounded over a long run:
//! a transaction nobody can still need is *forgotten* (dropped from memory,
//! and from the log at the next compaction, see [`log`]).
//! * A **coordinator** forgets its transaction once its user applied the
//!   decision ([`CommitCore::applied`]) and it *ended*: a commit
//!   (or, presuming nothing, an abort) once every participant acknowledged
//!   it — so every participant holds the decision durably, and the *abort*
//!   its presumption then answers about an unknown transaction can only
//!   reach a node that already decided — and a presumed abort at once
//!   (it answers *abort* about it anyway). A 3PC coordinator told the
//!   outcome by a termination round collects the acknowledgements too.
//! * Its **floor** is its lowest transaction not ended, or reserved and
//!   not begun yet ([`CommitCore::reserve`]), or else the next id it would
//!   use; it rides on every `Prepare` it sends. Transaction ids must grow
//!   per coordinator in the order they are begun or reserved (the typed
//!   API reserves each id as it draws it): a `begin` below the floor of a
//!   transaction neither known nor reserved is a no-op.
//! * A **participant** forgets a transaction it decided once its resource
//!   manager applied the decision ([`CommitCore::applied`]: until then a
//!   restart hands it over again) and its coordinator's floor is above it
//!   (the coordinator ended it, so no participant can still be uncertain
//!   about a commit). It keeps the
//!   floors (durably, in its compacted log); below a coordinator's floor, a
//!   transaction it does not know is one it forgot or never took part in:
//!   a stale `Prepare` for it starts nothing, and an `Inquire` or a 3PC
//!   state request about it gets no answer — never a unilateral abort,
//!   which could contradict a commit it forgot. [`CommitCore::forgot`]
//!   says which transactions a node forgot (the commit checker uses it to
//!   tell a forgotten transaction from a reversed decision).
//!
//! So what is kept is the transactions in flight, the decided ones of
//! coordinators whose floor has not passed them yet (a coordinator's
//! transaction blocked on a participant that is down holds its floor, and
//! the others' decided ones of that coordinator, until it ends), and one
//! floor per coordinator.

pub mod any;
pub mod base;
pub mod log;
pub mod three_phase;
pub mod two_phase;

pub use any::{AnyCommit, AnyCommitMsg};
pub use base::{Commit, CommitRules, CommitState, TxMsg, TxTimer};
pub use log::{CommitDurable, LogRecord, LogStats};
pub use three_phase::ThreePhase;
pub use two_phase::TwoPhase;

use std::collections::{BTreeMap, BTreeSet};
use std::time::Duration;

use serde::{Deserialize, Serialize};
use troupe_framework::sansio::Protocol;

use crate::driver::OutputsOf;
use crate::election::ElectionConfig;
use crate::family::{EventMetric, ViewMetric};

pub use crate::family::UnknownAlgorithm;

/// A transaction's id, unique across the group (the caller of
/// [`CommitCore::begin`] picks it).
pub type TxId = u64;

crate::algorithms! {
    /// The atomic-commit algorithms, by the names configuration files use.
    pub enum CommitAlgorithm {
        /// Two-phase commit: [`TwoPhase`].
        TwoPhase = "two-phase",
        /// Three-phase commit: [`ThreePhase`].
        ThreePhase = "three-phase",
    }
}

/// The outcome of a transaction.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
pub enum Decision {
    /// Every participant applies the transaction.
    Commit,
    /// No participant applies it.
    Abort,
}

/// What a commit core tells its local user (the resource manager).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum CommitEvent {
    /// Participant: vote on `tx` (answer with [`CommitCore::vote`]).
    Prepare {
        /// The transaction.
        tx: TxId,
    },
    /// `tx` is decided, durably, at this node.
    Decided {
        /// The transaction.
        tx: TxId,
        /// The outcome.
        decision: Decision,
    },
}

/// Settings shared by the commit cores.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct CommitConfig {
    /// How often unanswered messages are sent again.
    pub retry: Duration,
    /// Coordinator: how long it waits for every vote before aborting.
    pub vote_timeout: Duration,
    /// Participant: how long it waits for the decision after voting yes
    /// before it asks the others (2PC) or runs the termination protocol
    /// (3PC, once the coordinator is reported down).
    pub decision_timeout: Duration,
    /// 2PC: presumed abort (no `Begin` record, aborts neither forced nor
    /// acknowledged, an unknown transaction is aborted). `false`: presumed
    /// nothing. 3PC always presumes abort.
    pub presumed_abort: bool,
    /// 3PC: the timing of the embedded bully election that chooses the
    /// termination coordinator (see [`ThreePhase`]). 2PC ignores it.
    #[serde(default)]
    pub election: ElectionConfig,
    /// Compact the log once this many transactions can be forgotten (and
    /// at least as many as are still known: see [`log`]'s "Compaction").
    #[serde(default = "default_compact_every")]
    pub compact_every: u32,
}

fn default_compact_every() -> u32 {
    base::COMPACT_EVERY
}

impl Default for CommitConfig {
    /// Retry every 50 ms, vote timeout 500 ms, decision timeout 200 ms,
    /// presumed abort, the election's defaults ([`ElectionConfig::default`]),
    /// compaction every [`base::COMPACT_EVERY`] forgotten transactions.
    fn default() -> Self {
        Self {
            retry: Duration::from_millis(50),
            vote_timeout: Duration::from_millis(500),
            decision_timeout: Duration::from_millis(200),
            presumed_abort: true,
            election: ElectionConfig::default(),
            compact_every: base::COMPACT_EVERY,
        }
    }
}

/// Where a transaction stands at one node.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum Phase {
    /// Coordinator: collecting votes.
    Collecting,
    /// Coordinator, 3PC: pre-committed, collecting acknowledgements.
    PreCommitting,
    /// Participant: waiting for the local vote.
    Voting,
    /// Participant: voted yes, uncertain.
    Ready,
    /// Participant, 3PC: pre-committed, not yet committed.
    PreCommitted,
    /// Decided.
    Decided(Decision),
}

/// One transaction at one node, as [`CommitCore::status`] reports it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct TxStatus {
    /// True at the transaction's coordinator.
    pub coordinator: bool,
    /// Where it stands.
    pub phase: Phase,
    /// False when this node was rebuilt from its log in an undecided phase
    /// (it then decides only with others: see [`ThreePhase`]).
    pub active: bool,
}

/// The commands and queries every commit core offers.
pub trait CommitCore: Protocol<Event = CommitEvent> {
    /// Coordinator: start `tx` with `participants` (this node is dropped
    /// from the list). No-op for a transaction this node already knows.
    fn begin(
        &mut self,
        tx: TxId,
        participants: Vec<Self::Id>,
        now: Duration,
        out: &mut OutputsOf<Self>,
    );
    /// Participant: the resource manager's vote on `tx` (after
    /// [`CommitEvent::Prepare`]). No-op unless this node waits for it.
    fn vote(&mut self, tx: TxId, yes: bool, now: Duration, out: &mut OutputsOf<Self>);
    /// Where `tx` stands here (`None`: unknown, e.g. never begun here, or
    /// forgotten in a crash before anything of it was durable).
    fn status(&self, tx: TxId) -> Option<TxStatus>;
    /// The decision on `tx` known here.
    fn decision(&self, tx: TxId) -> Option<Decision> {
        match self.status(tx)?.phase {
            Phase::Decided(d) => Some(d),
            _ => None,
        }
    }
    /// Log records appended in this life.
    fn log_stats(&self) -> LogStats;
    /// Every transaction this node knows, with its status.
    fn transactions(&self) -> BTreeMap<TxId, TxStatus>;
    /// The transactions this node knows that are not decided here yet
    /// (what [`CommitFamily`]'s view holds, after every input: no status
    /// is built for the decided ones).
    fn pending(&self) -> BTreeSet<TxId>;
    /// True when this node has no record of `tx`, whose coordinator is
    /// `coordinator`, because it forgot it (see "Forgetting" in the family
    /// docs) or never will hear of it: a message about it is stale, and it
    /// is never started or decided here again.
    fn forgot(&self, coordinator: &Self::Id, tx: TxId) -> bool;
    /// The local user applied the decision on `tx` (a participant's
    /// resource manager; a coordinator's application, which may hold a
    /// part of the transaction of its own): durably, it needs it no more.
    /// Until then the decision is kept (and, after a restart, reported
    /// again by [`CommitCore::transactions`] and [`CommitCore::status`]),
    /// so a decision is never forgotten before it was applied. No-op for a
    /// transaction not decided here.
    fn applied(&mut self, tx: TxId, now: Duration, out: &mut OutputsOf<Self>);
    /// Coordinator: settle `tx` with its decision once it is decided here
    /// (at once if it is), for a command that awaits it through the
    /// driver ([`troupe_framework::sansio::Settles`]: token `tx`,
    /// settlement the [`Decision`]). No-op for a transaction not
    /// coordinated here.
    fn await_decision(&mut self, tx: TxId, now: Duration, out: &mut OutputsOf<Self>);
    /// Coordinator: `tx` will be begun here later (its id is drawn, its
    /// `begin` has not run yet): the floor stays at or below it until it
    /// is begun and ends, or is [released](CommitCore::release). A caller
    /// that draws ids before it begins them, possibly out of order (the
    /// typed API), reserves each as it draws it.
    fn reserve(&mut self, tx: TxId, now: Duration, out: &mut OutputsOf<Self>);
    /// Coordinator: a reserved `tx` will never be begun.
    fn release(&mut self, tx: TxId, now: Duration, out: &mut OutputsOf<Self>);
}

/// What a commit instance's handles watch: the transactions this node
/// knows that are not decided yet. Decided ones are not in it: the view is
/// rebuilt after every input, and the decided transactions only grow
/// (waiters for a decision watch the `Decided` events instead).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct CommitView {
    /// Undecided transactions.
    pub pending: BTreeSet<TxId>,
}

crate::family::family! {
    /// The atomic-commit family: actor `commit.<instance>` on every member.
    pub enum CommitFamily {
        actor = |instance| format!("commit.{instance}");
        core AnyCommit(CommitAlgorithm, CommitConfig);
        view CommitView = |core| CommitView { pending: core.pending() };
        trace = |protocol, event| match event {
            CommitEvent::Decided { tx, decision } => Some(troupe_framework::trace::TraceEvent::Note {
                text: format!("{protocol}: commit decided {tx:?}: {decision:?}"),
            }),
            CommitEvent::Prepare { .. } => None,
        };
        view_metrics = |view, out| {
            out.push(ViewMetric::gauge(
                "troupe_commit_pending",
                "Transactions this node knows that are not decided yet.",
                view.pending.len() as f64,
            ));
        };
        event_metric = |event| match event {
            CommitEvent::Decided { decision, .. } => Some(EventMetric {
                name: "troupe_commit_decisions_total",
                help: "Transactions decided at this node, by decision (commit, abort).",
                label: Some(("decision", match decision {
                    Decision::Commit => "commit",
                    Decision::Abort => "abort",
                })),
            }),
            CommitEvent::Prepare { .. } => None,
        };
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn algorithm_names_round_trip() {
        crate::family::assert_names_round_trip::<CommitAlgorithm>("four-phase");
        assert_eq!(CommitAlgorithm::TwoPhase.name(), "two-phase");
        assert_eq!(CommitAlgorithm::ThreePhase.name(), "three-phase");
    }
}
