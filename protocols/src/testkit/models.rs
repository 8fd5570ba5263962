//! Models of every protocol family for the model checker
//! ([`super::model`]), at small sizes, with the observers the chaos tests
//! use as their invariants.
//!
//! - [`mutex`]: every member requests the lock once and releases it once
//!   granted; safety by [`MutexObserver`]; at rest nobody waits and every
//!   member was granted the lock.
//! - [`election`]: the members elect on their own; safety (one leader per
//!   term, terms that grow) by [`ElectionObserver`].
//! - [`commit`]: member 1 coordinates one transaction over the others,
//!   each of which votes yes when asked; AC1–AC3 by [`CommitObserver`]; at
//!   rest (without crashes or partitions) every member decided.
//! - [`broadcast`]: members 1 and 2 broadcast one message each; the
//!   algorithm's order by [`BroadcastObserver`]; at rest every member
//!   delivered every message.
//! - [`raft`]: three servers elect and replicate a client's write;
//!   election safety, log matching, leader completeness and state-machine
//!   safety by [`RaftObserver`].
//!
//! Each takes a [`Mutation`] for the tests that prove the search catches a
//! broken variant of the family.

use std::rc::Rc;
use std::time::Duration;

use super::broadcast::{BroadcastObserver, OrderChecks};
use super::commit::CommitObserver;
use super::model::{Command, Goal, Model};
use super::raft::{KvRaft, RaftObserver};
use super::scenarios::{ElectionObserver, MutexObserver};
use super::{recover_state, NetFaults, OracleConfig, Sim};
use crate::broadcast::{AnyBroadcast, BroadcastAlgorithm, BroadcastCore};
use crate::commit::{AnyCommit, CommitAlgorithm, CommitConfig, CommitCore};
use crate::election::{AnyElection, ElectionAlgorithm, ElectionConfig};
use crate::mutex::{AnyMutex, MutexAlgorithm, MutexConfig, MutexCore};
use crate::raft::kv::KvCommand;
use crate::raft::{Membership, Raft, RaftConfig};

/// A deliberately broken variant, for the tests that prove the search
/// catches it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Mutation {
    /// The protocol as it is.
    #[default]
    None,
    /// Raft: commit an entry of an earlier term by counting replicas.
    RaftCommitsOldTerms,
    /// Raft: a server comes back from a crash without its term and vote,
    /// as if the vote were not made durable before it is sent.
    RaftForgetsVote,
    /// Ricart–Agrawala without the node-id tie-break between equal
    /// timestamps.
    MutexNoTieBreak,
    /// Commit: the coordinator comes back from a crash without its log, as
    /// if it had sent its decision before making it durable.
    CommitForgetsDecision,
    /// Broadcast: a member comes back from a crash without what it had
    /// delivered, as if deliveries were not made durable with the delivery.
    BroadcastForgetsDeliveries,
}

fn sim<P: super::SimProtocol<Id = u32>>(
    n: u32,
    make: impl Fn(u32, Vec<u32>, &troupe_framework::sansio::Recovered) -> P + 'static,
) -> Sim<P> {
    let members: Vec<u32> = (1..=n).collect();
    let m = members.clone();
    Sim::new(
        0,
        members,
        Box::new(move |id, r| make(*id, m.clone(), r)),
        NetFaults::reliable(Duration::from_millis(1)),
        OracleConfig::default(),
    )
}

/// Members `1..=requesters` of `n` request the lock once each and release
/// it when granted.
pub fn mutex(
    algorithm: MutexAlgorithm,
    n: u32,
    requesters: u32,
    mutation: Mutation,
) -> Model<AnyMutex<u32>, MutexObserver> {
    let config = MutexConfig {
        unsafe_no_tie_break: mutation == Mutation::MutexNoTieBreak,
        ..MutexConfig::new("model")
    };
    let init = move || {
        let config = config.clone();
        let mut s = sim(n, move |id, members, r| {
            AnyMutex::new(
                algorithm,
                id,
                members,
                config.clone(),
                recover_state::<AnyMutex<u32>>(r),
            )
        });
        let mut obs = MutexObserver::default();
        s.start(&mut obs)?;
        Ok((s, obs))
    };
    let mut commands = Vec::new();
    for id in 1..=requesters.min(n) {
        commands.push(Command::new(
            format!("{id} requests the lock"),
            id,
            move |s: &mut Sim<AnyMutex<u32>>, obs: &mut MutexObserver| {
                obs.note_request(id, s.now());
                s.command(&id, obs, |c, now, out| c.request(now, out))
                    .map(|_| ())
            },
        ));
        commands.push(
            Command::on_core(
                format!("{id} releases the lock"),
                id,
                |c: &mut AnyMutex<u32>, now, out| c.release(now, out),
            )
            .when(move |s, _| s.core(&id).is_some_and(|c| c.holding().is_some()))
            .eager(),
        );
    }
    Model {
        name: format!("mutex {algorithm} n={n} requesters={requesters}"),
        init: Rc::new(init),
        commands,
        at_rest: Some(Rc::new(
            move |s: &Sim<AnyMutex<u32>>, obs: &MutexObserver| {
                let waiting: Vec<u32> = s
                    .cores()
                    .filter(|(_, c)| c.is_waiting())
                    .map(|(id, _)| *id)
                    .collect();
                if !waiting.is_empty() {
                    return Err(format!(
                        "{waiting:?} requested the lock and were never granted it"
                    ));
                }
                let want = u64::from(requesters.min(n));
                if obs.grants < want {
                    return Err(format!("only {} of {want} requests granted", obs.grants));
                }
                Ok(())
            },
        )),
        crashable: None,
    }
}

/// The members elect a leader on their own.
pub fn election(algorithm: ElectionAlgorithm, n: u32) -> Model<AnyElection<u32>, ElectionObserver> {
    let init = move || {
        let mut s = sim(n, move |id, members, r| {
            AnyElection::new(
                algorithm,
                id,
                members,
                ElectionConfig::default(),
                recover_state::<AnyElection<u32>>(r),
            )
        });
        let mut obs = ElectionObserver::default();
        s.start(&mut obs)?;
        Ok((s, obs))
    };
    Model {
        name: format!("election {algorithm} n={n}"),
        init: Rc::new(init),
        commands: Vec::new(),
        at_rest: None,
        crashable: None,
    }
}

/// Member 1 coordinates transaction 1 over members `2..=n`, which vote yes.
pub fn commit(
    algorithm: CommitAlgorithm,
    n: u32,
    mutation: Mutation,
) -> Model<AnyCommit<u32>, CommitObserver> {
    let init = move || {
        let mut s = sim(n, move |id, members, r| {
            let state = if mutation == Mutation::CommitForgetsDecision && id == 1 {
                None
            } else {
                recover_state::<AnyCommit<u32>>(r)
            };
            AnyCommit::new(algorithm, id, members, CommitConfig::default(), state)
        });
        let mut obs = CommitObserver::default();
        s.start(&mut obs)?;
        Ok((s, obs))
    };
    let participants: Vec<u32> = (2..=n).collect();
    let mut commands = vec![Command::new("1 begins transaction 1", 1, {
        let participants = participants.clone();
        move |s: &mut Sim<AnyCommit<u32>>, obs: &mut CommitObserver| {
            obs.begun(1, 1, participants.clone());
            let p = participants.clone();
            s.command(&1, obs, move |c, now, out| c.begin(1, p.clone(), now, out))
                .map(|_| ())
        }
    })];
    for p in participants {
        commands.push(
            Command::new(
                format!("{p} votes yes"),
                p,
                move |s: &mut Sim<AnyCommit<u32>>, obs: &mut CommitObserver| {
                    obs.voted(p, 1, true);
                    s.command(&p, obs, |c, now, out| c.vote(1, true, now, out))
                        .map(|_| ())
                },
            )
            .when(move |s, _| {
                s.core(&p)
                    .and_then(|c| c.status(1))
                    .is_some_and(|st| st.phase == crate::commit::Phase::Voting)
            })
            .eager(),
        );
    }
    Model {
        name: format!("commit {algorithm} n={n}"),
        init: Rc::new(init),
        commands,
        at_rest: None,
        crashable: None,
    }
}

/// A goal for [`commit`] models: at rest, every running member that knows
/// the transaction has decided it (fails where a protocol blocks).
pub fn everyone_alive_decided() -> Goal<AnyCommit<u32>, CommitObserver> {
    Rc::new(|s, _| {
        for (id, c) in s.cores() {
            if let Some(st) = c.status(1) {
                if !matches!(st.phase, crate::commit::Phase::Decided(_)) {
                    return Err(format!("member {id} is stuck in {:?}", st.phase));
                }
            }
        }
        Ok(())
    })
}

/// The order `algorithm` promises, as the chaos suites check it.
pub fn order_checks(algorithm: BroadcastAlgorithm) -> OrderChecks {
    let name = algorithm.name();
    OrderChecks {
        fifo: matches!(name, "fifo" | "causal" | "total-lamport" | "nack"),
        causal: matches!(name, "causal" | "total-lamport"),
        total: matches!(name, "total-sequencer" | "total-lamport"),
    }
}

/// Members 1 and 2 broadcast one message each.
pub fn broadcast(
    algorithm: BroadcastAlgorithm,
    n: u32,
    mutation: Mutation,
) -> Model<AnyBroadcast<u32>, BroadcastObserver> {
    let checks = order_checks(algorithm);
    let init = move || {
        let mut s = sim(n, move |id, members, r| {
            let state = if mutation == Mutation::BroadcastForgetsDeliveries {
                None
            } else {
                recover_state::<AnyBroadcast<u32>>(r)
            };
            AnyBroadcast::new(algorithm, id, members, Default::default(), state)
        });
        let mut obs = BroadcastObserver::new(checks);
        s.start(&mut obs)?;
        Ok((s, obs))
    };
    let mut commands = Vec::new();
    for (node, pid) in [(1u32, 1u64), (2, 2)] {
        let c = Command::new(
            format!("{node} broadcasts message {pid}"),
            node,
            move |s: &mut Sim<AnyBroadcast<u32>>, obs: &mut BroadcastObserver| {
                obs.broadcast(node, pid);
                s.command(&node, obs, move |c, now, o| {
                    c.broadcast(pid.to_le_bytes().to_vec(), now, o)
                })
                .map(|_| ())
            },
        );
        commands.push(c);
    }
    Model {
        name: format!("broadcast {algorithm} n={n}"),
        init: Rc::new(init),
        commands,
        at_rest: None,
        crashable: None,
    }
}

/// Three servers elect a leader and replicate one write.
pub fn raft(n: u32, mutation: Mutation) -> Model<KvRaft, RaftObserver> {
    let config = RaftConfig {
        pre_vote: false,
        check_quorum: false,
        unsafe_commit_old_terms: mutation == Mutation::RaftCommitsOldTerms,
        ..RaftConfig::default()
    };
    let init = move || {
        let config = config.clone();
        let mut s = sim(n, move |id, members, r| {
            let mut r = r.clone();
            if mutation == Mutation::RaftForgetsVote {
                r.apply(&[troupe_framework::sansio::Write::Delete {
                    key: crate::raft::HARD_KEY.to_string(),
                }])
                .unwrap_or_else(|e| panic!("raft {id}: {e}"));
            }
            Raft::recover(id, Membership::new(members), config.clone(), &r)
                .unwrap_or_else(|e| panic!("raft {id}: {e}"))
        });
        let mut obs = RaftObserver::default();
        s.start(&mut obs)?;
        Ok((s, obs))
    };
    let mut commands = Vec::new();
    for id in 1..=n {
        commands.push(
            Command::on_core(
                format!("a client writes x at {id}"),
                id,
                |c: &mut KvRaft, now, out| {
                    let _ = c.propose(
                        now,
                        None,
                        &KvCommand::Put {
                            key: "x".into(),
                            value: "1".into(),
                        },
                        out,
                    );
                },
            )
            .when(move |s, _| {
                s.core(&id)
                    .is_some_and(|c| c.role() == crate::raft::Role::Leader)
            }),
        );
    }
    Model {
        name: format!("raft n={n}"),
        init: Rc::new(init),
        commands,
        at_rest: None,
        crashable: None,
    }
}
