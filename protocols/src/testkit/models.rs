//! Models of every protocol family for the model checker
//! ([`super::model`]), at small sizes, with the observers the chaos tests
//! use as their invariants.
//!
//! - [`mutex`]: members `1..=requesters` request the lock once each and
//!   release it once granted; safety by [`MutexObserver`]; at rest nobody
//!   waits and every request was granted.
//! - [`election`]: the members elect on their own; safety (one leader per
//!   term, terms that grow) by [`ElectionObserver`].
//! - [`commit`]: member 1 coordinates one transaction over the others,
//!   each of which votes yes when asked; AC1–AC3 by [`CommitObserver`];
//!   with [`everyone_alive_decided`] as its goal, at rest every running
//!   member that knows the transaction decided it.
//! - [`broadcast`]: members 1 and 2 broadcast one message each; the
//!   algorithm's order by [`BroadcastObserver`]. The broadcasts on the
//!   reliable engine declare its bookkeeping deliveries inert
//!   ([`Model::inert`], the inert-first reduction of [`super::model`]).
//!   The sequencer's total order starts *settled* ([`Model::settled`]):
//!   its embedded election decided and every join delivered, so the
//!   search spends its states on the order, not on the start-up (which
//!   the election's own models check).
//! - [`raft`]: three servers elect and replicate a client's write;
//!   election safety, log matching, leader completeness and state-machine
//!   safety by [`RaftObserver`].
//!
//! Each takes a [`Mutation`] for the tests that prove the search catches a
//! broken variant of the family.
//!
//! The models whose members are interchangeable declare it for the
//! symmetry reduction ([`super::model::Symmetry`]): eager reliable, FIFO
//! and causal broadcast (the broadcasters with their payloads, and the
//! other members) and two-phase commit (the participants). The others
//! order members by id somewhere (tie-breaks, elections, rings, a fixed
//! coordinator) or were not examined (Raft), and declare none.
//!
//! The catalog ([`Family`], [`Algorithm`], [`Mutation`], [`Check`]) names
//! them and holds the bounds the suite checks each within:
//! `tests/model_check.rs` and `troupe check` both start from it.

use std::rc::Rc;
use std::time::Duration;

use super::broadcast::{BroadcastObserver, OrderChecks};
use super::commit::CommitObserver;
use super::model::{Bounds, Checker, Command, Goal, Model, Renaming, Search, Symmetry};
use super::raft::{KvRaft, RaftObserver};
use super::scenarios::{ElectionObserver, MutexObserver};
use super::{recover_state, NetFaults, OracleConfig, Sim};
use crate::broadcast::{
    any::AnyBroadcastTimer, AnyBroadcast, AnyBroadcastMsg, BroadcastAlgorithm, BroadcastCore,
};
use crate::commit::any::{AnyCommitMsg, AnyCommitTimer};
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
    /// Total order by Lamport timestamps: a member delivers the head of
    /// its queue once it heard a later message from one other member
    /// instead of from every one.
    LamportOneAck,
    /// Election: a member comes back from a crash without its term, as if
    /// the term were not made durable before the member claimed it.
    ElectionForgetsTerm,
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
        let s = sim(n, move |id, members, r| {
            AnyMutex::new(
                algorithm,
                id,
                members,
                config.clone(),
                recover_state::<AnyMutex<u32>>(r),
            )
        });
        Ok((s, MutexObserver::default()))
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
        partial_order: true,
        symmetry: None,
        inert: None,
        settled: false,
    }
}

/// The members elect a leader on their own.
pub fn election(
    algorithm: ElectionAlgorithm,
    n: u32,
    mutation: Mutation,
) -> Model<AnyElection<u32>, ElectionObserver> {
    let init = move || {
        let s = sim(n, move |id, members, r| {
            let state = if mutation == Mutation::ElectionForgetsTerm {
                None
            } else {
                recover_state::<AnyElection<u32>>(r)
            };
            AnyElection::new(algorithm, id, members, ElectionConfig::default(), state)
        });
        Ok((s, ElectionObserver::default()))
    };
    Model {
        name: format!("election {algorithm} n={n}"),
        init: Rc::new(init),
        commands: Vec::new(),
        at_rest: None,
        crashable: None,
        partial_order: true,
        symmetry: None,
        inert: None,
        settled: false,
    }
}

/// Member 1 coordinates transaction 1 over members `2..=n`, which vote yes.
pub fn commit(
    algorithm: CommitAlgorithm,
    n: u32,
    mutation: Mutation,
) -> Model<AnyCommit<u32>, CommitObserver> {
    let init = move || {
        let s = sim(n, move |id, members, r| {
            let state = if mutation == Mutation::CommitForgetsDecision && id == 1 {
                None
            } else {
                recover_state::<AnyCommit<u32>>(r)
            };
            AnyCommit::new(algorithm, id, members, CommitConfig::default(), state)
        });
        Ok((s, CommitObserver::default()))
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
    // Two-phase commit treats its participants alike (no tie-break by
    // id); three-phase commit does not (its termination protocol elects
    // the highest live member).
    let symmetry = (algorithm == CommitAlgorithm::TwoPhase && n > 2).then(|| Symmetry {
        classes: vec![(2..=n).collect()],
        core: Rc::new(|c: &AnyCommit<u32>, r: &Renaming<'_, u32>| {
            c.renamed(r).expect("two-phase commit cores rename")
        }) as Rc<dyn Fn(&AnyCommit<u32>, &Renaming<'_, u32>) -> AnyCommit<u32>>,
        message: Rc::new(|m: &AnyCommitMsg<u32>, r: &Renaming<'_, u32>| {
            m.renamed(r).expect("two-phase commit messages rename")
        }),
        timer: Rc::new(|t: &AnyCommitTimer, _: &Renaming<'_, u32>| t.clone()),
        observer: Rc::new(|o: &CommitObserver, r: &Renaming<'_, u32>| o.renamed(r)),
    });
    Model {
        name: format!("commit {algorithm} n={n}"),
        init: Rc::new(init),
        commands,
        at_rest: None,
        crashable: None,
        partial_order: true,
        symmetry,
        inert: None,
        settled: false,
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
    broadcasts(algorithm, n, 2, mutation)
}

/// Members `1..=messages` broadcast one message each (message `i` from
/// member `i`).
pub fn broadcasts(
    algorithm: BroadcastAlgorithm,
    n: u32,
    messages: u32,
    mutation: Mutation,
) -> Model<AnyBroadcast<u32>, BroadcastObserver> {
    broadcasts_checked(algorithm, n, messages, mutation, order_checks(algorithm))
}

/// [`broadcasts`], checked for the orders `checks` instead of those the
/// algorithm promises (FIFO broadcast checked for causal order is a
/// causal broadcast that ignores every entry of the vector but the
/// sender's: a broken variant the search must catch).
pub fn broadcasts_checked(
    algorithm: BroadcastAlgorithm,
    n: u32,
    messages: u32,
    mutation: Mutation,
    checks: OrderChecks,
) -> Model<AnyBroadcast<u32>, BroadcastObserver> {
    let init = move || {
        let s = sim(n, move |id, members, r| {
            let state = if mutation == Mutation::BroadcastForgetsDeliveries {
                None
            } else {
                recover_state::<AnyBroadcast<u32>>(r)
            };
            let config = crate::broadcast::BroadcastConfig {
                unsafe_lamport_one_ack: mutation == Mutation::LamportOneAck,
                ..Default::default()
            };
            AnyBroadcast::new(algorithm, id, members, config, state)
        });
        Ok((s, BroadcastObserver::new(checks)))
    };
    let mut commands = Vec::new();
    for (node, pid) in (1..=messages.min(n)).map(|i| (i, u64::from(i))) {
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
    // Eager reliable, FIFO and causal broadcast treat members alike (no
    // tie-break by id): the broadcasters are interchangeable with their
    // payloads (each payload is its sender's id), and so are the others.
    let symmetric = matches!(
        algorithm,
        BroadcastAlgorithm::EagerReliable | BroadcastAlgorithm::Fifo | BroadcastAlgorithm::Causal
    );
    let symmetry = symmetric.then(|| {
        let senders = messages.min(n);
        fn payload(r: &Renaming<'_, u32>, p: &[u8]) -> Vec<u8> {
            match <[u8; 8]>::try_from(p) {
                Ok(b) => pid(r, u64::from_le_bytes(b)).to_le_bytes().to_vec(),
                Err(_) => p.to_vec(),
            }
        }
        fn pid(r: &Renaming<'_, u32>, p: u64) -> u64 {
            u32::try_from(p).map_or(p, |m| u64::from(r.id(&m)))
        }
        Symmetry {
            classes: vec![(1..=senders).collect(), (senders + 1..=n).collect()],
            core: Rc::new(|c: &AnyBroadcast<u32>, r: &Renaming<'_, u32>| {
                c.renamed(r, &|p| payload(r, p))
                    .expect("eager, FIFO and causal cores rename")
            }),
            message: Rc::new(|m: &AnyBroadcastMsg<u32>, r: &Renaming<'_, u32>| {
                m.renamed(r, &|p| payload(r, p))
                    .expect("eager, FIFO and causal messages rename")
            }),
            timer: Rc::new(|t: &AnyBroadcastTimer, _: &Renaming<'_, u32>| t.clone()),
            observer: Rc::new(|o: &BroadcastObserver, r: &Renaming<'_, u32>| {
                o.renamed(r, &|p| pid(r, p))
            }),
        }
    });
    let settled = algorithm == BroadcastAlgorithm::Total;
    Model {
        name: format!(
            "broadcast {algorithm} n={n}{}{}",
            if messages == 2 {
                String::new()
            } else {
                format!(" messages={messages}")
            },
            if settled {
                " (from a settled start: election decided, joins delivered)"
            } else {
                ""
            }
        ),
        init: Rc::new(init),
        commands,
        at_rest: None,
        crashable: None,
        partial_order: true,
        symmetry,
        inert: Some(Rc::new(
            |c: &AnyBroadcast<u32>, from: &u32, m: &AnyBroadcastMsg<u32>| c.inert(from, m),
        )),
        settled,
    }
}

/// Three servers elect a leader and replicate one write.
pub fn raft(n: u32, mutation: Mutation) -> Model<KvRaft, RaftObserver> {
    raft_with(n, mutation, RaftConfig::default().max_batch)
}

/// [`raft`] with AppendEntries of at most `max_batch` entries (with 1, a
/// follower acknowledges an old entry before the leader's no-op of its
/// term: what Raft's Figure 8 needs against a leader that commits old
/// entries by counting).
pub fn raft_with(n: u32, mutation: Mutation, max_batch: usize) -> Model<KvRaft, RaftObserver> {
    let config = RaftConfig {
        pre_vote: false,
        check_quorum: false,
        unsafe_commit_old_terms: mutation == Mutation::RaftCommitsOldTerms,
        max_batch,
        ..RaftConfig::default()
    };
    let init = move || {
        let config = config.clone();
        let s = sim(n, move |id, members, r| {
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
        Ok((s, RaftObserver::default()))
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
        partial_order: true,
        symmetry: None,
        inert: None,
        settled: false,
    }
}

// The catalog: every model with the bounds the suite checks it within and
// the mutations it can run with. `tests/model_check.rs` and `troupe check`
// both start from here.

/// The bounds the suite searches within: `max_depth` steps, at most six
/// timer firings per path (retries and heartbeats would otherwise make
/// every path endless), 400 000 states; the rest as [`Bounds::default`].
pub fn suite_bounds(max_depth: usize) -> Bounds {
    Bounds {
        max_depth,
        max_states: 400_000,
        timer_fires: Some(6),
        ..Bounds::default()
    }
}

/// A protocol family with a model in the catalog.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Family {
    /// Mutual exclusion: [`mutex`].
    Mutex,
    /// Leader election: [`election`].
    Election,
    /// Atomic commit: [`commit`].
    Commit,
    /// Broadcast: [`broadcast`].
    Broadcast,
    /// Raft: [`raft`].
    Raft,
}

impl Family {
    /// Every family, in a stable order.
    pub const ALL: [Family; 5] = [
        Family::Mutex,
        Family::Election,
        Family::Commit,
        Family::Broadcast,
        Family::Raft,
    ];

    /// The name `troupe check` takes.
    pub fn name(self) -> &'static str {
        match self {
            Family::Mutex => "mutex",
            Family::Election => "election",
            Family::Commit => "commit",
            Family::Broadcast => "broadcast",
            Family::Raft => "raft",
        }
    }

    /// What the model does and what it checks.
    pub fn about(self) -> &'static str {
        match self {
            Family::Mutex => {
                "members 1 and 2 request the lock once each and release it when granted; \
                 mutual exclusion and fencing tokens as the chaos suites check them; at \
                 rest nobody waits and every request was granted"
            }
            Family::Election => {
                "the members elect on their own; one leader per term, terms that grow"
            }
            Family::Commit => {
                "member 1 coordinates one transaction over the others, which vote yes; \
                 AC1-AC3 (one decision, never changed, commit only on all yes)"
            }
            Family::Broadcast => {
                "members 1 and 2 broadcast one message each; the algorithm's order, no \
                 message delivered twice"
            }
            Family::Raft => {
                "the servers elect a leader and a client writes x through it; election \
                 safety, log matching, leader completeness, state-machine safety"
            }
        }
    }

    /// Every algorithm the family's model runs.
    pub fn algorithms(self) -> Vec<Algorithm> {
        match self {
            Family::Mutex => MutexAlgorithm::ALL.map(Algorithm::Mutex).to_vec(),
            Family::Election => ElectionAlgorithm::ALL.map(Algorithm::Election).to_vec(),
            Family::Commit => CommitAlgorithm::ALL.map(Algorithm::Commit).to_vec(),
            Family::Broadcast => BroadcastAlgorithm::ALL.map(Algorithm::Broadcast).to_vec(),
            Family::Raft => vec![Algorithm::Raft],
        }
    }

    /// The algorithms the suite checks (and `troupe check FAMILY` without
    /// an algorithm): every one of the family, each within its bounds
    /// ([`Family::bounds_for`]).
    pub fn checked_algorithms(self) -> Vec<Algorithm> {
        self.algorithms()
    }

    /// The group sizes the model takes (every model runs at 3 in the suite).
    pub fn members(self) -> std::ops::RangeInclusive<u32> {
        2..=5
    }

    /// The group size the suite checks.
    pub const DEFAULT_MEMBERS: u32 = 3;

    /// The bounds the suite checks the family's algorithms within (without
    /// a mutation).
    pub fn bounds(self) -> Bounds {
        match self {
            Family::Mutex => suite_bounds(60),
            // Exhaustive at 3 members: one crash, for good (with a
            // restart, bully's state space has message-only paths of
            // hundreds of steps and the ring's is 448 000 states; see
            // BENCHMARKS.md), six timer firings.
            Family::Election => Bounds {
                crashes: 1,
                restarts: false,
                ..suite_bounds(100)
            },
            Family::Commit | Family::Broadcast => suite_bounds(40),
            // Exhaustive at 3 servers: two timer firings (an election and
            // one more timeout: a heartbeat or a rival election), no fault;
            // three firings are 1.3 million states.
            Family::Raft => Bounds {
                timer_fires: Some(2),
                ..suite_bounds(100)
            },
        }
    }

    /// The bounds the suite checks `algorithm` of this family within
    /// (without a mutation): the family's ([`Family::bounds`]) but for
    /// the total orders, searched exhaustively without a timer firing and
    /// without the depth bound's cut (their paths are 38 and 50 steps
    /// long). Lamport timestamps' only timer is the engine's retry, which
    /// re-sends what a member is not known to hold: without a fault every
    /// copy arrives and every member learns who holds what before the
    /// network is idle, so a firing re-sends nothing (with one or two
    /// firings the search finds the same verdict in 1-2% more states).
    /// The sequencer's model starts settled ([`Model::settled`]: its
    /// election decided, every join delivered); its timers are the same
    /// retry and the election's heartbeats, which without a fault change
    /// no leader (with one firing: the same verdict in twice the states,
    /// 39 s in a release build; with two, 1.5 million states). Rumor
    /// mongering within two timer firings: each firing is a round of
    /// gossip, and every round more multiplies the states (48 332 with
    /// two, 121 140 with three, 263 587 with four, each holding).
    pub fn bounds_for(self, algorithm: Algorithm) -> Bounds {
        match algorithm {
            Algorithm::Broadcast(BroadcastAlgorithm::LamportTotal | BroadcastAlgorithm::Total) => {
                Bounds {
                    timer_fires: Some(0),
                    ..suite_bounds(60)
                }
            }
            Algorithm::Broadcast(BroadcastAlgorithm::Rumor) => Bounds {
                timer_fires: Some(2),
                ..self.bounds()
            },
            _ => self.bounds(),
        }
    }

    /// The mutations of the family.
    pub fn mutations(self) -> Vec<Mutation> {
        Mutation::ALL
            .into_iter()
            .filter(|m| m.family() == Some(self))
            .collect()
    }
}

impl std::fmt::Display for Family {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.name())
    }
}

impl std::str::FromStr for Family {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        Family::ALL
            .into_iter()
            .find(|f| f.name() == s)
            .ok_or_else(|| format!("unknown family {s:?} (known: {})", names(Family::ALL)))
    }
}

fn names<T: std::fmt::Display>(all: impl IntoIterator<Item = T>) -> String {
    all.into_iter()
        .map(|t| t.to_string())
        .collect::<Vec<_>>()
        .join(", ")
}

/// An algorithm of a family of the catalog.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Algorithm {
    /// A mutual-exclusion algorithm.
    Mutex(MutexAlgorithm),
    /// An election algorithm.
    Election(ElectionAlgorithm),
    /// An atomic-commit algorithm.
    Commit(CommitAlgorithm),
    /// A broadcast algorithm.
    Broadcast(BroadcastAlgorithm),
    /// Raft (the family has one algorithm).
    Raft,
}

impl Algorithm {
    /// Its family.
    pub fn family(self) -> Family {
        match self {
            Algorithm::Mutex(_) => Family::Mutex,
            Algorithm::Election(_) => Family::Election,
            Algorithm::Commit(_) => Family::Commit,
            Algorithm::Broadcast(_) => Family::Broadcast,
            Algorithm::Raft => Family::Raft,
        }
    }

    /// Its name (the configuration name; "raft" for Raft).
    pub fn name(self) -> &'static str {
        match self {
            Algorithm::Mutex(a) => a.name(),
            Algorithm::Election(a) => a.name(),
            Algorithm::Commit(a) => a.name(),
            Algorithm::Broadcast(a) => a.name(),
            Algorithm::Raft => "raft",
        }
    }

    /// The algorithm of `family` called `name`; `Err` says which it knows.
    pub fn parse(family: Family, name: &str) -> Result<Self, String> {
        let all = family.algorithms();
        all.iter()
            .copied()
            .find(|a| a.name() == name)
            .ok_or_else(|| {
                format!(
                    "unknown algorithm {name:?} for {family} (known: {})",
                    names(all)
                )
            })
    }
}

impl std::fmt::Display for Algorithm {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.name())
    }
}

impl Mutation {
    /// Every broken variant ([`Mutation::None`] left out).
    pub const ALL: [Mutation; 7] = [
        Mutation::MutexNoTieBreak,
        Mutation::ElectionForgetsTerm,
        Mutation::CommitForgetsDecision,
        Mutation::BroadcastForgetsDeliveries,
        Mutation::LamportOneAck,
        Mutation::RaftForgetsVote,
        Mutation::RaftCommitsOldTerms,
    ];

    /// The name `troupe check --mutation` takes.
    pub fn name(self) -> &'static str {
        match self {
            Mutation::None => "none",
            Mutation::MutexNoTieBreak => "no-tie-break",
            Mutation::CommitForgetsDecision => "forgets-decision",
            Mutation::BroadcastForgetsDeliveries => "forgets-deliveries",
            Mutation::LamportOneAck => "one-ack",
            Mutation::ElectionForgetsTerm => "forgets-term",
            Mutation::RaftForgetsVote => "forgets-vote",
            Mutation::RaftCommitsOldTerms => "commits-old-terms",
        }
    }

    /// What is broken.
    pub fn about(self) -> &'static str {
        match self {
            Mutation::None => "the protocol as it is",
            Mutation::MutexNoTieBreak => {
                "Ricart-Agrawala without the node-id tie-break between equal timestamps"
            }
            Mutation::CommitForgetsDecision => {
                "the coordinator comes back from a crash without its log (its decision \
                 sent before it was durable)"
            }
            Mutation::BroadcastForgetsDeliveries => {
                "a member comes back from a crash without what it had delivered"
            }
            Mutation::LamportOneAck => {
                "total order by Lamport timestamps delivers the head of its queue once one \
                 other member (not every one) was heard from later"
            }
            Mutation::RaftForgetsVote => {
                "a server comes back from a crash without its term and vote (the vote \
                 sent before it was durable)"
            }
            Mutation::ElectionForgetsTerm => {
                "a member comes back from a crash without its term (its claim sent \
                 before the term was durable)"
            }
            Mutation::RaftCommitsOldTerms => {
                "a leader commits an entry of an earlier term by counting replicas"
            }
        }
    }

    /// Its family (`None` for [`Mutation::None`], which fits every family).
    pub fn family(self) -> Option<Family> {
        match self {
            Mutation::None => None,
            Mutation::MutexNoTieBreak => Some(Family::Mutex),
            Mutation::CommitForgetsDecision => Some(Family::Commit),
            Mutation::ElectionForgetsTerm => Some(Family::Election),
            Mutation::BroadcastForgetsDeliveries | Mutation::LamportOneAck => {
                Some(Family::Broadcast)
            }
            Mutation::RaftForgetsVote | Mutation::RaftCommitsOldTerms => Some(Family::Raft),
        }
    }

    /// Whether it breaks `algorithm` (the tie-break is Ricart-Agrawala's,
    /// the one-acknowledgement rule total-lamport's; the others break any
    /// algorithm of their family).
    pub fn applies_to(self, algorithm: Algorithm) -> bool {
        match self {
            Mutation::MutexNoTieBreak => {
                algorithm == Algorithm::Mutex(MutexAlgorithm::RicartAgrawala)
            }
            Mutation::LamportOneAck => {
                algorithm == Algorithm::Broadcast(BroadcastAlgorithm::LamportTotal)
            }
            other => other.family().is_none_or(|f| f == algorithm.family()),
        }
    }

    /// What it breaks: its family, or the one algorithm it applies to.
    pub fn breaks(self) -> String {
        match self {
            Mutation::None => "nothing".to_string(),
            Mutation::MutexNoTieBreak => "mutex ricart-agrawala only".to_string(),
            Mutation::LamportOneAck => "broadcast total-lamport only".to_string(),
            other => match other.family() {
                Some(f) if f.algorithms().len() == 1 => f.to_string(),
                Some(f) => format!("any {f} algorithm"),
                None => String::new(),
            },
        }
    }

    /// The algorithm the suite catches it with, and the bounds: `None`
    /// for a mutation the suite does not keep (Raft committing old terms).
    pub fn caught_with(self) -> Option<(Algorithm, Bounds)> {
        match self {
            Mutation::None | Mutation::RaftCommitsOldTerms => None,
            Mutation::MutexNoTieBreak => Some((
                Algorithm::Mutex(MutexAlgorithm::RicartAgrawala),
                Family::Mutex.bounds(),
            )),
            Mutation::CommitForgetsDecision => Some((
                Algorithm::Commit(CommitAlgorithm::TwoPhase),
                Bounds {
                    crashes: 1,
                    drops: 1,
                    ..suite_bounds(40)
                },
            )),
            Mutation::BroadcastForgetsDeliveries => Some((
                Algorithm::Broadcast(BroadcastAlgorithm::Causal),
                Bounds {
                    crashes: 1,
                    ..suite_bounds(40)
                },
            )),
            Mutation::LamportOneAck => {
                let alg = Algorithm::Broadcast(BroadcastAlgorithm::LamportTotal);
                Some((alg, Family::Broadcast.bounds_for(alg)))
            }
            Mutation::ElectionForgetsTerm => Some((
                Algorithm::Election(ElectionAlgorithm::NextInLine),
                Bounds {
                    crashes: 1,
                    restarts: true,
                    ..Family::Election.bounds()
                },
            )),
            Mutation::RaftForgetsVote => Some((
                Algorithm::Raft,
                Bounds {
                    crashes: 1,
                    ..suite_bounds(30)
                },
            )),
        }
    }
}

impl std::fmt::Display for Mutation {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.name())
    }
}

impl std::str::FromStr for Mutation {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        std::iter::once(Mutation::None)
            .chain(Mutation::ALL)
            .find(|m| m.name() == s)
            .ok_or_else(|| {
                format!(
                    "unknown mutation {s:?} (known: none, {})",
                    names(Mutation::ALL)
                )
            })
    }
}

/// One model of the catalog and the bounds to search it within.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Check {
    /// The algorithm (and so the family).
    pub algorithm: Algorithm,
    /// The group size.
    pub members: u32,
    /// The broken variant to run, if any.
    pub mutation: Mutation,
    /// The bounds.
    pub bounds: Bounds,
    /// The members the search may crash (`None`: any).
    pub crashable: Option<Vec<u32>>,
    /// Commit only: at rest, every running member that knows the
    /// transaction has decided it ([`everyone_alive_decided`]; two-phase
    /// commit fails it, blocking while its coordinator is down).
    pub must_decide: bool,
    /// Search with the partial-order reduction ([`Search::partial_order`];
    /// on by default: every model of the catalog allows it).
    pub partial_order: bool,
    /// Search with the symmetry reduction where the model declares
    /// interchangeable members and the bounds allow it
    /// ([`Search::symmetry`]; on by default).
    pub symmetry: bool,
}

impl Check {
    /// `algorithm` with `mutation` as the suite checks it: at
    /// [`Family::DEFAULT_MEMBERS`], within the bounds the suite catches the
    /// mutation with ([`Mutation::caught_with`]) or else the family's
    /// ([`Family::bounds`]). `Err`: the mutation does not apply.
    pub fn new(algorithm: Algorithm, mutation: Mutation) -> Result<Self, String> {
        let bounds = match mutation.caught_with() {
            Some((_, bounds)) => bounds,
            None => algorithm.family().bounds_for(algorithm),
        };
        let check = Check {
            algorithm,
            members: Family::DEFAULT_MEMBERS,
            mutation,
            bounds,
            crashable: None,
            must_decide: false,
            partial_order: true,
            symmetry: true,
        };
        check.validate()?;
        Ok(check)
    }

    /// Whether the model can run: the mutation applies to the algorithm,
    /// the group size is one the family takes, the crashable members are
    /// members, `must_decide` is for commit. `Err` names the problem.
    pub fn validate(&self) -> Result<(), String> {
        let family = self.algorithm.family();
        if !self.mutation.applies_to(self.algorithm) {
            let fits: Vec<Mutation> = Mutation::ALL
                .into_iter()
                .filter(|m| m.applies_to(self.algorithm))
                .collect();
            return Err(format!(
                "mutation {:?} does not apply to {family} {}: it breaks {} (mutations of {} {}: {})",
                self.mutation.name(),
                self.algorithm,
                self.mutation.breaks(),
                family,
                self.algorithm,
                if fits.is_empty() {
                    "none".to_string()
                } else {
                    names(fits)
                }
            ));
        }
        let range = family.members();
        if !range.contains(&self.members) {
            return Err(format!(
                "{} members: {family} models take {} to {}",
                self.members,
                range.start(),
                range.end()
            ));
        }
        if let Some(bad) = self
            .crashable
            .iter()
            .flatten()
            .find(|m| !(1..=self.members).contains(*m))
        {
            return Err(format!(
                "crashable member {bad}: the members are 1 to {}",
                self.members
            ));
        }
        if self.must_decide && family != Family::Commit {
            return Err(format!(
                "the decided-at-rest goal is commit's, not {family}'s"
            ));
        }
        Ok(())
    }

    /// The search of the model (validated first).
    pub fn search(&self) -> Result<Box<dyn Checker>, String> {
        self.validate()?;
        let n = self.members;
        fn boxed<P, O>(
            mut m: Model<P, O>,
            c: &Check,
            crashable: Option<Vec<P::Id>>,
        ) -> Box<dyn Checker>
        where
            P: super::SimProtocol + Clone + std::fmt::Debug + 'static,
            O: super::Observer<P> + Clone + std::fmt::Debug + 'static,
        {
            if crashable.is_some() {
                m.crashable = crashable;
            }
            Box::new(
                Search::new(m, c.bounds)
                    .partial_order(c.partial_order)
                    .symmetry(c.symmetry),
            )
        }
        let crashable = self.crashable.clone();
        Ok(match self.algorithm {
            Algorithm::Mutex(a) => boxed(mutex(a, n, 2, self.mutation), self, crashable),
            Algorithm::Election(a) => boxed(election(a, n, self.mutation), self, crashable),
            Algorithm::Commit(a) => {
                let mut m = commit(a, n, self.mutation);
                if self.must_decide {
                    m.at_rest = Some(everyone_alive_decided());
                }
                boxed(m, self, crashable)
            }
            Algorithm::Broadcast(a) => boxed(broadcast(a, n, self.mutation), self, crashable),
            Algorithm::Raft => boxed(raft(n, self.mutation), self, crashable),
        })
    }
}
