//! Atomic commit: a typed API over the commit family.
//!
//! ```ignore
//! // On every member: the commit driver with this node's resource manager.
//! let commit = start_commit(&node, "orders", CommitAlgorithm::TwoPhase, &members, Ledger::new()).await?;
//! // On the node that runs the transaction (its coordinator):
//! let tx = commit.begin(&["b".into(), "c".into()])?;
//! send_the_work_to_b_and_c(tx.id()).await;           // tagged with the id
//! match tx.commit().await? {
//!     Outcome::Committed => {}
//!     Outcome::Aborted(reason) => eprintln!("aborted: {reason}"),
//! }
//! let stuck = commit.in_doubt().await?;              // also GET /v1/commit/in-doubt
//! ```
//!
//! A **resource manager** ([`ResourceManager`]) is what a participant node
//! runs for its share of a transaction: `prepare` (vote), `commit`, `abort`,
//! by transaction id. [`start_commit`] starts, on one node, one instance of
//! the commit family ([`CommitFamily`], started by [`crate::family`]): a
//! driver actor `commit.<name>` running the configured algorithm
//! ([`CommitAlgorithm`]: two-phase or three-phase commit), rebuilt from the
//! node's durable store on every restart, plus the task that calls the
//! resource manager (see [`ResourceManager`] for when and how) and an actor
//! `commit-notes.<name>` that hears the reasons of no votes. Every member
//! starts the instance with the same name, algorithm and members.
//!
//! A **transaction** is begun on any member, its coordinator, over a set of
//! other members, its participants ([`CommitHandle::begin`]); the
//! coordinator itself is not a participant: its own resource manager is
//! not asked. [`Transaction::commit`] runs the protocol and returns
//! [`Outcome::Committed`] or [`Outcome::Aborted`] with the reason
//! ([`AbortReason`]).
//!
//! Guarantees (the cores', stated per algorithm in
//! `troupe_protocols::commit` and checked on every step of seeded chaos
//! runs):
//! - every participant that decides, and the coordinator, reach the same
//!   decision, and never reverse it; a commit happens only if every
//!   participant's manager voted yes; with no failure and all yes votes
//!   the outcome is commit;
//! - a decision is durable at a node before its manager hears of it and
//!   before `commit()` returns it;
//! - **in doubt** ([`CommitHandle::in_doubt`], [`in_doubt_on`], `GET
//!   /v1/commit/in-doubt`, `troupe commit in-doubt`): a participant that
//!   voted yes and does not know the decision, or a coordinator that has
//!   not decided, lists the transaction. It resolves by itself once the
//!   failure heals: under two-phase commit a participant stays in doubt
//!   while the coordinator is down and every participant it can reach is
//!   in doubt too (blocking), and decides once the coordinator restarts
//!   from its log; under three-phase commit the participants decide among
//!   themselves once the failure detector reports the coordinator down.
//!
//! Transaction ids are unique across the group and across restarts (see
//! `ids`). A transaction dropped without `commit()` was never begun: its
//! participants never hear of it.

mod ids;
mod notes;
mod rm;

pub use notes::NoVote;
pub use rm::ResourceManager;
pub use troupe_protocols::commit::{
    CommitAlgorithm, CommitConfig, CommitFamily, Decision, Phase, TxId,
};

use std::fmt;
use std::rc::Rc;
use std::time::Duration;

use serde::{Deserialize, Serialize};
use troupe_framework::Node;
use troupe_protocols::commit::CommitCore;
use troupe_protocols::driver::Awaited;
use troupe_protocols::family::Family;

use crate::family::{self, Instance};
use crate::Error;

/// How a transaction ended.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum Outcome {
    /// Every participant commits it.
    Committed,
    /// No participant applies it.
    Aborted(AbortReason),
}

/// Why a transaction aborted, as its coordinator knows it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum AbortReason {
    /// A participant's resource manager voted no (or failed, or panicked).
    VotedNo {
        /// The participant (its authenticated node name).
        participant: String,
        /// What its manager said.
        reason: String,
    },
    /// Not every vote arrived within the vote timeout
    /// ([`CommitConfig::vote_timeout`]): a participant down, cut off, or a
    /// manager slower than that.
    Timeout {
        /// The vote timeout.
        after: Duration,
    },
    /// Aborted before the vote timeout with no no vote heard (a
    /// participant that aborted on its own, e.g. restarted before it
    /// voted, or asked before it voted by another in doubt).
    Unexplained,
}

impl fmt::Display for AbortReason {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            AbortReason::VotedNo {
                participant,
                reason,
            } => write!(f, "{participant} voted no: {reason}"),
            AbortReason::Timeout { after } => {
                write!(f, "not every participant voted within {after:?}")
            }
            AbortReason::Unexplained => f.write_str("a participant aborted on its own"),
        }
    }
}

/// A transaction in doubt at one node (see the module docs).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct InDoubt {
    /// The commit instance's actor name (`commit.<name>`).
    pub instance: String,
    /// The transaction.
    pub tx: TxId,
    /// True if this node coordinates it.
    pub coordinator: bool,
    /// Where it stands here: `Collecting` / `PreCommitting` (coordinator),
    /// `Ready` / `PreCommitted` (participant).
    pub phase: Phase,
    /// False while this node, restarted from its log, waits for the others
    /// to tell it the decision.
    pub active: bool,
}

/// The commit instance on this node: begin transactions, list those in
/// doubt. Cheap to clone.
#[derive(Clone)]
pub struct CommitHandle {
    instance: Instance<CommitFamily>,
    name: String,
    members: Vec<String>,
    ids: ids::TxIds,
    notes: notes::Notes,
    config: CommitConfig,
}

/// Start commit instance `name` on `node` among `members` (every node
/// taking part; this one is added if missing), with `rm` as this node's
/// resource manager and the default timing.
pub async fn start_commit<R: ResourceManager>(
    node: &Node,
    name: &str,
    algorithm: CommitAlgorithm,
    members: &[String],
    rm: R,
) -> Result<CommitHandle, Error> {
    start_commit_with(node, name, algorithm, members, CommitConfig::default(), rm).await
}

/// [`start_commit`] with explicit timing.
pub async fn start_commit_with<R: ResourceManager>(
    node: &Node,
    name: &str,
    algorithm: CommitAlgorithm,
    members: &[String],
    config: CommitConfig,
    rm: R,
) -> Result<CommitHandle, Error> {
    troupe_framework::ids::validate_name(&notes::actor_name(name))
        .map_err(|e| Error::Config(format!("commit instance {name:?}: {e}")))?;
    let mut all = members.to_vec();
    all.push(node.name().to_string());
    all.sort();
    all.dedup();
    let index = all
        .iter()
        .position(|m| m == node.name())
        .unwrap_or_default();
    let ids = ids::TxIds::reserve(node, name, index).await?;
    let notes = notes::Notes::default();
    notes::spawn(node, name, notes.clone()).await?;
    let instance =
        family::start::<CommitFamily>(node, name, algorithm, &all, config.clone()).await?;
    rm::Worker {
        instance: instance.clone(),
        rm: Rc::new(rm),
        name: name.to_string(),
        members: all.clone(),
    }
    .spawn();
    Ok(CommitHandle {
        instance,
        name: name.to_string(),
        members: all,
        ids,
        notes,
        config,
    })
}

/// Every transaction in doubt on `node`, in every commit instance running
/// there (actors `commit.<name>`), by instance then id.
pub async fn in_doubt_on(node: &Node) -> Vec<InDoubt> {
    let mut out = Vec::new();
    let mut names: Vec<String> = node
        .registry()
        .names()
        .into_iter()
        .filter(|n| n.starts_with("commit."))
        .collect();
    names.sort();
    for name in names {
        let txs = troupe_protocols::driver::invoke_named(
            node,
            &name,
            |core: &mut <CommitFamily as Family>::Core, _, _| core.transactions(),
        )
        .await;
        if let Ok(txs) = txs {
            out.extend(in_doubt_of(&name, txs));
        }
    }
    out
}

fn in_doubt_of(
    instance: &str,
    txs: std::collections::BTreeMap<TxId, troupe_protocols::commit::TxStatus>,
) -> impl Iterator<Item = InDoubt> + '_ {
    txs.into_iter().filter_map(move |(tx, s)| {
        let doubt = matches!(
            s.phase,
            Phase::Collecting | Phase::PreCommitting | Phase::Ready | Phase::PreCommitted
        );
        doubt.then(|| InDoubt {
            instance: instance.to_string(),
            tx,
            coordinator: s.coordinator,
            phase: s.phase,
            active: s.active,
        })
    })
}

impl CommitHandle {
    /// The instance's name.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// The group: every member, sorted.
    pub fn members(&self) -> &[String] {
        &self.members
    }

    /// The member that coordinates `tx`, for an id drawn by
    /// [`CommitHandle::begin`] on any member.
    pub fn coordinator_of(&self, tx: TxId) -> Option<&str> {
        self.members
            .get(ids::coordinator_index(tx))
            .map(String::as_str)
    }

    /// A new transaction coordinated by this node over `participants`
    /// (members of the group; this node is left out). Nothing is sent until
    /// [`Transaction::commit`]: hand the participants their work, tagged
    /// with [`Transaction::id`], first.
    pub fn begin(&self, participants: &[String]) -> Result<Transaction, Error> {
        let me = self.instance.node().name();
        let mut ps: Vec<String> = Vec::new();
        for p in participants {
            if !self.members.contains(p) {
                return Err(Error::Config(format!(
                    "participant {p:?} is not a member of commit {:?} ({})",
                    self.name,
                    self.members.join(", ")
                )));
            }
            if p != me && !ps.contains(p) {
                ps.push(p.clone());
            }
        }
        if ps.is_empty() {
            return Err(Error::Config(
                "a transaction needs a participant besides its coordinator".into(),
            ));
        }
        let tx = self.ids.next()?;
        // Ids are drawn now and begun at `commit()`, maybe out of order:
        // the core keeps its floor at or below a drawn id until it ends.
        // (Not running: the transaction fails at `commit()` anyway.)
        let _ = self
            .instance
            .invoke_detached(move |c, now, out| c.reserve(tx, now, out));
        Ok(Transaction {
            handle: self.clone(),
            tx,
            participants: ps,
            started: false,
            held: false,
        })
    }

    /// The transactions in doubt on this node in this instance, by id.
    pub async fn in_doubt(&self) -> Result<Vec<InDoubt>, Error> {
        let txs = self.instance.invoke(|c, _, _| c.transactions()).await?;
        Ok(in_doubt_of(self.instance.name(), txs).collect())
    }

    /// This node's application applied the decision on `tx`, a transaction
    /// it coordinates and [held](Transaction::hold): the core may forget it.
    pub fn applied(&self, tx: TxId) {
        let _ = self
            .instance
            .invoke_detached(move |c, now, out| c.applied(tx, now, out));
    }

    /// The decision on `tx` known at this node.
    pub async fn decision(&self, tx: TxId) -> Result<Option<Decision>, Error> {
        self.instance.invoke(move |c, _, _| c.decision(tx)).await
    }

    /// The protocol instance underneath (its view, events and commands).
    pub fn instance(&self) -> &Instance<CommitFamily> {
        &self.instance
    }
}

/// A transaction begun at this node, not committed yet.
pub struct Transaction {
    handle: CommitHandle,
    tx: TxId,
    participants: Vec<String>,
    /// `commit()` ran: nothing to release on drop.
    started: bool,
    /// See [`Transaction::hold`].
    held: bool,
}

impl Drop for Transaction {
    /// Never committed: the core may let its floor pass the id.
    fn drop(&mut self) {
        if !self.started {
            let tx = self.tx;
            let _ = self
                .handle
                .instance
                .invoke_detached(move |c, now, out| c.release(tx, now, out));
        }
    }
}

impl Transaction {
    /// Its id, unique across the group.
    pub fn id(&self) -> TxId {
        self.tx
    }

    /// Its participants, in the order given.
    pub fn participants(&self) -> &[String] {
        &self.participants
    }

    /// Keep the decision in this node's commit log after `commit()`
    /// returns, until [`CommitHandle::applied`] says the application
    /// applied it: for an application that holds a part of the transaction
    /// of its own on the coordinator, and after a crash reads the outcome
    /// from the log ([`CommitHandle::decision`]; no record means abort).
    /// Without it the coordinator may forget the transaction once
    /// `commit()` returned and every participant acknowledged.
    pub fn hold(&mut self) {
        self.held = true;
    }

    /// Run the protocol: ask every participant to prepare, decide, and
    /// return the decision once it is durable here. An error means this
    /// node's commit driver stopped (the node shut down): the transaction
    /// is then in doubt until the node restarts.
    pub async fn commit(mut self) -> Result<Outcome, Error> {
        self.started = true;
        let handle = self.handle.clone();
        let tx = self.tx;
        let held = self.held;
        let participants = std::mem::take(&mut self.participants);
        drop(self);
        handle.notes.watch(tx);
        let started = tokio::time::Instant::now();
        let outcome = async {
            // One command: begin, and a waiter the driver answers with the
            // decision once it is durable here (one message, one wake-up;
            // no event stream to sift).
            let settled = handle
                .instance
                .settle(
                    move |c, now, out| {
                        c.begin(tx, participants, now, out);
                        c.await_decision(tx, now, out);
                        Ok(tx)
                    },
                    |_, _, decision| decision,
                )
                .await;
            let decision = match settled {
                Awaited::Done(d) => {
                    if !held {
                        handle.applied(tx);
                    }
                    d
                }
                Awaited::NotRunning | Awaited::Dropped => {
                    return Err(Error::Protocol(format!(
                        "commit {:?} stopped before transaction {tx} was decided",
                        handle.name
                    )))
                }
            };
            if decision == Decision::Commit {
                return Ok(Outcome::Committed);
            }
            // The no vote's note travels beside the vote: give it a moment.
            let grace = handle.config.retry * 2;
            if let Some((participant, reason)) = handle.notes.no_vote(tx, grace).await {
                return Ok(Outcome::Aborted(AbortReason::VotedNo {
                    participant,
                    reason,
                }));
            }
            let timeout = handle.config.vote_timeout;
            Ok(Outcome::Aborted(if started.elapsed() >= timeout {
                AbortReason::Timeout { after: timeout }
            } else {
                AbortReason::Unexplained
            }))
        }
        .await;
        handle.notes.forget(tx);
        outcome
    }
}
