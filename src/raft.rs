//! Replicated state machines on Raft: a typed API over the Raft family.
//!
//! ```ignore
//! // On every member, with the same name and members:
//! let kv: Replica<KvStore> = start_raft(&node, "kv", &members, RaftConfig::default()).await?;
//! let reply = kv.propose(KvCommand::Put { key: "a".into(), value: "1".into() }, None).await?;
//! let value = kv.read(|store| store.get("a").cloned()).await?;     // linearizable
//! ```
//!
//! An instance is a driver actor `raft.<name>` on every member, supervised,
//! rebuilt from the node's durable store (term, vote, log, snapshot) on
//! every restart, running [`troupe_protocols::raft::Raft`] around the
//! application's [`StateMachine`]. The guarantees are Raft's (stated in
//! `troupe_protocols::raft` and checked after every step of seeded chaos
//! runs).
//!
//! **What a caller learns** ([`ProposeError`] says which case it is):
//! - `Ok(reply)`: the command was committed and applied once, and this is
//!   what the state machine answered;
//! - [`ProposeError::NotLeader`] / [`ProposeError::NotApplied`]: certainly
//!   **not** applied (this node does not lead, or the entry was replaced);
//!   safe to retry elsewhere;
//! - [`ProposeError::Unknown`] (including a timeout): the command may or may
//!   not have been applied; retry it with the same [`Session`] to have it
//!   applied at most once.
//!
//! Reads: [`Replica::read`] is linearizable (the configured read mode:
//! ReadIndex by default, or a lease) and runs on the leader;
//! [`Replica::read_local`] reads this replica's state as applied so far
//! (possibly stale).

use std::collections::BTreeSet;
use std::time::Duration;

use troupe_framework::supervision::ActorSpec;
use troupe_framework::Node;
use troupe_protocols::driver::{Awaited, Driver};
use troupe_protocols::raft::{
    CommandError, Outcome, Raft, RaftAlgorithm, RaftConfig, RaftError, RaftFamily, RaftSettled,
    RaftStatus, RaftToken, RaftView, Role, Session, StateMachine,
};

use crate::family::{self, Instance};
use crate::Error;

/// How long a proposal or a read waits at most, unless told otherwise.
pub const DEFAULT_TIMEOUT: Duration = Duration::from_secs(5);

/// Why a proposal produced no reply (see the module docs for what each
/// case means for the command).
#[derive(Debug, thiserror::Error)]
pub enum ProposeError {
    /// This node does not lead; the leader it knows, if any. Not applied.
    #[error("not the leader (leader: {leader:?})")]
    NotLeader {
        /// The leader of the current term, if known.
        leader: Option<String>,
    },
    /// Certainly not applied (the entry was replaced, a transfer or a
    /// configuration change is under way, the command does not encode).
    #[error("not applied: {0}")]
    NotApplied(String),
    /// It may or may not have been applied.
    #[error("outcome unknown: {0}")]
    Unknown(String),
    /// The state machine refused it (see [`CommandError`]).
    #[error(transparent)]
    Command(#[from] CommandError),
}

impl ProposeError {
    /// True when the command was certainly not applied.
    pub fn certainly_not_applied(&self) -> bool {
        matches!(
            self,
            ProposeError::NotLeader { .. } | ProposeError::NotApplied(_)
        )
    }
}

/// Why a linearizable read produced no answer. Reads change nothing, so a
/// failed read can always be retried.
#[derive(Debug, thiserror::Error)]
pub enum ReadError {
    /// This node does not lead; the leader it knows, if any.
    #[error("not the leader (leader: {leader:?})")]
    NotLeader {
        /// The leader of the current term, if known.
        leader: Option<String>,
    },
    /// Leadership was lost before the read was confirmed.
    #[error("leadership lost before the read was confirmed")]
    LeadershipLost,
    /// The read was not confirmed in time, or the protocol stopped.
    #[error("{0}")]
    Failed(String),
}

fn refused(e: RaftError<String>) -> ProposeError {
    match e {
        RaftError::NotLeader { leader } => ProposeError::NotLeader { leader },
        other => ProposeError::NotApplied(other.to_string()),
    }
}

/// One member's replica of a Raft-replicated state machine `S`. Cheap to
/// clone.
pub struct Replica<S: StateMachine> {
    instance: Instance<RaftFamily<S>>,
}

impl<S: StateMachine> Clone for Replica<S> {
    fn clone(&self) -> Self {
        Self {
            instance: self.instance.clone(),
        }
    }
}

/// Start replica group `name` on `node` over `members` (this node is added
/// if missing). Every initial member starts it with the same name and
/// members; a node added later starts it with `config.joining` set.
pub async fn start_raft<S: StateMachine>(
    node: &Node,
    name: &str,
    members: &[String],
    config: RaftConfig,
) -> Result<Replica<S>, Error> {
    let config = per_incarnation(node.id().incarnation.as_u128(), config);
    let instance =
        family::start::<RaftFamily<S>>(node, name, RaftAlgorithm::Raft, members, config).await?;
    Ok(Replica { instance })
}

/// `config` with the node's incarnation mixed into its seed: two clusters
/// of same-named nodes, or one node before and after a restart, draw
/// different election timeouts (servers that time out in lockstep split
/// their votes again and again). The simulator builds cores directly and
/// keeps its seeded determinism.
fn per_incarnation(incarnation: u128, mut config: RaftConfig) -> RaftConfig {
    config.seed ^= (incarnation as u64) ^ ((incarnation >> 64) as u64);
    config
}

/// What [`prepare_raft`] returns: the driver's actor spec and the handle.
pub type PreparedReplica<S> = (ActorSpec<Driver<Raft<String, S>>>, Replica<S>);

/// The actor spec of replica group `name` (for an application's own
/// supervision tree) and its handle.
pub fn prepare_raft<S: StateMachine>(
    node: &Node,
    name: &str,
    members: &[String],
    config: RaftConfig,
) -> Result<PreparedReplica<S>, Error> {
    let config = per_incarnation(node.id().incarnation.as_u128(), config);
    let (spec, instance) =
        family::prepare::<RaftFamily<S>>(node, name, RaftAlgorithm::Raft, members, config)?;
    Ok((spec, Replica { instance }))
}

impl<S: StateMachine> Replica<S> {
    /// Propose `command` (on the leader), optionally under a client
    /// `session`, and wait at most [`DEFAULT_TIMEOUT`] for its outcome.
    pub async fn propose(
        &self,
        command: S::Command,
        session: Option<Session>,
    ) -> Result<S::Reply, ProposeError> {
        self.propose_within(command, session, DEFAULT_TIMEOUT).await
    }

    /// [`Replica::propose`] waiting at most `timeout`.
    ///
    /// One command to the driver: it proposes and leaves a waiter for the
    /// entry, which the driver answers when the core settles it (applied,
    /// replaced, or lost track of), once that is durable.
    pub async fn propose_within(
        &self,
        command: S::Command,
        session: Option<Session>,
        timeout: Duration,
    ) -> Result<S::Reply, ProposeError> {
        let settled = self.instance.settle(
            // A refusal answers at once (nothing was proposed).
            move |core, now, out| match core.propose(now, session, &command, out) {
                Ok((index, term)) => Ok(core.await_result(index, term)),
                Err(e) => Err(Err(refused(e))),
            },
            |_, token, settled| match (token, settled) {
                (_, RaftSettled::Write(Outcome::Applied(Ok(reply)))) => Ok(reply),
                (_, RaftSettled::Write(Outcome::Applied(Err(e)))) => Err(ProposeError::Command(e)),
                (RaftToken::Write { index, term }, RaftSettled::Write(Outcome::NotApplied)) => {
                    Err(ProposeError::NotApplied(format!(
                        "entry {index} of term {term} was replaced by another leader's"
                    )))
                }
                (RaftToken::Write { index, term }, RaftSettled::Write(Outcome::Unknown)) => {
                    Err(ProposeError::Unknown(format!(
                        "entry {index} of term {term}: this replica lost track of it"
                    )))
                }
                (token, settled) => Err(ProposeError::Unknown(format!(
                    "{token:?} settled as {settled:?}"
                ))),
            },
        );
        match tokio::time::timeout(timeout, settled).await {
            Ok(Awaited::Done(r)) => r,
            Ok(Awaited::NotRunning) => Err(ProposeError::NotApplied(format!(
                "protocol {:?} is not running",
                self.instance.name()
            ))),
            Ok(Awaited::Dropped) => Err(ProposeError::Unknown(format!(
                "protocol {:?} stopped before the entry's outcome was known",
                self.instance.name()
            ))),
            Err(_) => Err(ProposeError::Unknown(format!(
                "no outcome within {timeout:?}"
            ))),
        }
    }

    /// A linearizable read (on the leader): `f` runs on the state machine
    /// once it reflects every write completed before the read began. Waits
    /// at most [`DEFAULT_TIMEOUT`].
    pub async fn read<R: Send + 'static>(
        &self,
        f: impl FnOnce(&S) -> R + Send + 'static,
    ) -> Result<R, ReadError> {
        self.read_within(f, DEFAULT_TIMEOUT).await
    }

    /// [`Replica::read`] waiting at most `timeout`.
    ///
    /// One command to the driver: it asks for the read and leaves a
    /// waiter, which runs `f` once the read is confirmed and its index
    /// applied.
    pub async fn read_within<R: Send + 'static>(
        &self,
        f: impl FnOnce(&S) -> R + Send + 'static,
        timeout: Duration,
    ) -> Result<R, ReadError> {
        let settled = self.instance.settle(
            |core, now, out| match core.read_index(now, out) {
                Ok(id) => Ok(core.await_read(id)),
                Err(RaftError::NotLeader { leader }) => Err(Err(ReadError::NotLeader { leader })),
                Err(other) => Err(Err(ReadError::Failed(other.to_string()))),
            },
            move |core, _, settled| match settled {
                RaftSettled::Read(true) => Ok(f(core.machine())),
                RaftSettled::Read(false) => Err(ReadError::LeadershipLost),
                other => Err(ReadError::Failed(format!("read settled as {other:?}"))),
            },
        );
        match tokio::time::timeout(timeout, settled).await {
            Ok(Awaited::Done(r)) => r,
            Ok(Awaited::NotRunning | Awaited::Dropped) => Err(ReadError::Failed(format!(
                "protocol {:?} is not running",
                self.instance.name()
            ))),
            Err(_) => Err(ReadError::Failed(format!(
                "not confirmed within {timeout:?}"
            ))),
        }
    }

    /// Read this replica's state as applied so far (possibly stale).
    pub async fn read_local<R: Send + 'static>(
        &self,
        f: impl FnOnce(&S) -> R + Send + 'static,
    ) -> Result<R, Error> {
        self.instance
            .invoke(move |core, _, _| f(core.machine()))
            .await
    }

    /// Role, term, indexes, configuration and (on the leader) each
    /// member's match index.
    pub async fn status(&self) -> Result<RaftStatus<String>, Error> {
        self.instance.invoke(|core, _, _| core.status()).await
    }

    /// The view as last published (role, leader, term, indexes).
    pub fn view(&self) -> RaftView {
        self.instance.view()
    }

    /// Wait until this replica knows a leader (itself or another), at most
    /// `timeout`; returns it.
    pub async fn wait_leader(&self, timeout: Duration) -> Result<String, Error> {
        let v = self
            .instance
            .wait_for(|v| v.leader.is_some(), timeout)
            .await?;
        v.leader
            .ok_or_else(|| Error::Protocol("no leader".to_string()))
    }

    /// Wait until the view this replica publishes meets `ready`, at most
    /// `timeout` (`Duration::MAX`: no limit); returns that view.
    pub async fn wait_view(
        &self,
        ready: impl Fn(&RaftView) -> bool,
        timeout: Duration,
    ) -> Result<RaftView, Error> {
        self.instance.wait_for(ready, timeout).await
    }

    /// True when this replica leads (as last published).
    pub fn is_leader(&self) -> bool {
        self.instance.view().role == Role::Leader
    }

    /// Change the voters and learners (on the leader; one change at a
    /// time, through the joint configuration). Returns once the change is
    /// proposed; the configuration in effect shows in [`Replica::status`].
    pub async fn change_membership(
        &self,
        voters: BTreeSet<String>,
        learners: BTreeSet<String>,
    ) -> Result<u64, ProposeError> {
        self.instance
            .invoke(move |core, now, out| core.change_membership(now, voters, learners, out))
            .await
            .map_err(|e| ProposeError::NotApplied(e.to_string()))?
            .map_err(refused)
    }

    /// Hand leadership to `to` (on the leader).
    pub async fn transfer_leadership(&self, to: &str) -> Result<(), ProposeError> {
        let to = to.to_string();
        self.instance
            .invoke(move |core, _, out| core.transfer_leadership(to, out))
            .await
            .map_err(|e| ProposeError::NotApplied(e.to_string()))?
            .map_err(refused)
    }

    /// The instance's actor name.
    pub fn name(&self) -> &str {
        self.instance.name()
    }

    /// The node it runs on.
    pub fn node(&self) -> &Node {
        self.instance.node()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn each_incarnation_draws_its_own_election_timeouts() {
        let seeded = |incarnation: u128, seed: u64| {
            per_incarnation(
                incarnation,
                RaftConfig {
                    seed,
                    ..RaftConfig::default()
                },
            )
            .seed
        };
        let (a, b) = (
            0x1234_5678_9abc_def0_u128 << 64 | 7,
            0x0fed_cba9_u128 << 64 | 7,
        );
        assert_ne!(seeded(a, 0), seeded(b, 0), "the high half counts");
        assert_ne!(seeded(a, 0), seeded(a + 1, 0), "the low half counts");
        assert_eq!(seeded(a, 5), seeded(a, 5), "one incarnation, one sequence");
        assert_ne!(
            seeded(a, 5),
            seeded(a, 6),
            "the configured seed still counts"
        );
    }
}
