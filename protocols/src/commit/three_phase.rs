//! Three-phase commit (Skeen) with a termination protocol run by an elected
//! coordinator, presumed abort.
//!
//! Phase 1 as in 2PC: `Prepare`, and a yes voter forces `Ready` before its
//! `Vote`. Phase 2: with every vote yes the coordinator forces `PreCommit`
//! and sends `PreCommit`; each participant forces `PreCommit` before its
//! `PreAck`. Phase 3: with every `PreAck` in, the coordinator forces
//! `Decided(Commit)` and sends it; participants force it and acknowledge;
//! `End` is lazy. A no vote or the vote timeout aborts (not logged, not
//! acknowledged: a coordinator with no record of a transaction answers
//! *abort*). No state can reach commit directly from an uncertain one, and
//! no uncertain state is next to commit — the two conditions of the course
//! notes — so the live participants can always decide among themselves.
//!
//! Costs, commit case, `n` participants: `6n` messages, `3n + 2` forced
//! writes; the coordinator decides after 4 one-way delays, participants
//! after 5. A run without timeouts sends no election message (the election
//! sleeps until a termination coordinator is needed, below).
//!
//! ## The termination coordinator: an embedded election
//! Every core embeds a [`Bully`] election over the commit group's members
//! (the [`crate::group::Group`]; timing [`CommitConfig::election`]), fed the
//! membership reports, its messages and timers wrapped in
//! [`ThreePhaseMsg::Election`] / [`TxTimer::Election`], its durable state
//! ([`crate::election::ElectionDurable`]: its term) saved under
//! [`super::log::ELECTION_KEY`] by the toolkit's durable writes whenever it
//! changes, so its term survives restarts. The election sleeps until this
//! node first needs a termination coordinator, or an election message
//! arrives (the leader's heartbeats then wake every live member); a
//! restarted node's sleeps again.
//!
//! An undecided participant that voted yes asks everyone (`Inquire`) every
//! `retry` once [`CommitConfig::decision_timeout`] passed. Once its failure
//! detector reports the coordinator down (or after five decision timeouts
//! without a decision: a live coordinator whose `PreCommit` is refused
//! because a participant joined a round cannot finish), it asks the leader
//! its election knows (`Terminate`, every `retry`, with the round it joined)
//! to run a **termination round** for the transaction. The leader — any
//! member: a participant of the transaction, its coordinator, or neither;
//! the request carries the coordinator and the participants — runs round
//! `r`: striped by its rank in the group like election terms (so no two
//! members ever run the same round), larger than every round it saw
//! (its own, the requester's, the one it joined). A participant leader
//! forces `Joined(r)` and counts its own state as a report. The runner asks
//! every participant for its state (`StateReq`) and waits for every
//! participant its detector reports live. A participant forces `Joined(r)`
//! before it answers, and from then on ignores older rounds (and the
//! original coordinator's `PreCommit`); asked in an older round, it answers
//! `Terminate` with the round it joined, so that a runner behind starts
//! above it. With the reports in:
//!
//! 1. someone decided: that decision;
//! 2. someone *active* (see below) pre-committed, or someone pre-committed
//!    and every participant reported: pre-commit the uncertain ones in round
//!    `r`, and commit once they acknowledged (or are reported down);
//! 3. someone active is uncertain, or every participant reported: abort;
//! 4. otherwise (only nodes rebuilt from their logs): wait for more reports.
//!
//! A runner that is a participant decides durably and tells everyone. A
//! runner that is **not** a participant (the leader need not be one) may
//! relay a reported decision (rule 1) and decide commit (rule 2: every
//! reporter is then durably pre-committed, so every later round commits
//! too), but an abort (rule 3) must be durable inside the participant set
//! before anyone acts on it — a later round that hears from every
//! participant must see it, else it could commit by rule 2 while the
//! runner's abort is still on its way. So it asks the participants that
//! reported uncertain in `r` (`RoundAbort`): one still uncertain in round `r`
//! (it has joined no later round) decides abort durably and tells everyone;
//! one that joined a later round refuses, which leaves round `r` without a
//! decision. This makes such a runner as safe as a participant one.
//!
//! A **leader change** mid-round: a node that stops leading (the election
//! says so) drops its rounds; the participants ask the new leader, which
//! starts a round above the one they joined. Two nodes that both believe
//! they lead (the election converging, or a partition) run rounds with
//! different numbers; a participant is in one round at a time and only ever
//! moves up, which is the safety argument below, whoever runs the rounds —
//! the election only picks one runner so that rounds rarely compete.
//!
//! A node is *active* while it has run without crashing since it voted; a
//! node rebuilt from its log in an undecided state is *passive*: it decides
//! only what a round or a decided node tells it (the textbook's recovery
//! rule: a recovered process must not act on a state it may have been the
//! last to know). The coordinator rebuilt after `PreCommit` sends its
//! `PreCommit` again (and asks): it commits only once every participant
//! acknowledged round 0, which none does once it joined a termination
//! round, so it cannot contradict one.
//!
//! ## Guarantees
//! Checked at every step of seeded chaos runs (`tests/commit_three_phase.rs`)
//! with coordinator and participant crashes at every protocol step that lose
//! unsynced writes, message loss, duplication and reordering, **no
//! partitions**; the failure detector is accurate (it reports down only
//! crashed nodes, and a crashed node's messages do not outlive its detection
//! — the simulator's delays are below its detection delay):
//! - **AC1–AC3** hold under crashes and restarts of any nodes
//!   (coordinator, participants, the elected leader — often not a
//!   participant in runs of 3 to 6 members — a leader mid-round; one down
//!   at a time in the seeded runs), and under message loss, duplication and
//!   reordering: they rest on the rounds, not on the election (two leaders
//!   at once cost messages, not safety).
//! - **AC4** when nothing fails (without a timeout the election is not
//!   even woken).
//! - **AC5**: the live participants decide without waiting for a crashed
//!   coordinator once the election has a leader (bully: the highest live
//!   member, elected within its timeouts after a crash is detected) and one
//!   of the live participants is active (or all of them reported), and, as
//!   a non-participant leader's abort needs one, an uncertain reporter of
//!   its round stays up long enough to decide it (else a later round does).
//!   Everyone decides once every participant is back and the failures have
//!   healed. Only passive participants left (every one restarted) and some
//!   participant down: they wait for it (rule 4).
//!
//! **Partitions break AC1**: a partition is an inaccurate failure detector.
//! Each side elects its own leader (bully: its highest member) and each
//! leader terminates the transaction with the participants it can reach. If
//! the coordinator crashes after its `PreCommit` reached only one side, that
//! side (rule 2) commits while the other side, all uncertain and active,
//! aborts (rule 3): both followed the protocol.
//! `tests/commit_three_phase_partition.rs` builds this run and asserts the
//! checker finds the violation. (Quorum-based 3PC, or Paxos commit, avoids it
//! at the price of blocking a minority.)

use std::collections::{BTreeMap, BTreeSet};
use std::fmt::Debug;
use std::time::Duration;

use troupe_framework::membership::{MemberEvent, MemberStatus};
use troupe_framework::sansio::{Outputs, Protocol, SnapshotCore};

use super::base::{
    clean_participants, tx_messages, Commit, CommitRules, CommitState, TxMsg, TxTimer,
};
use super::log::ELECTION_KEY;
use super::{CommitConfig, CommitDurable, CommitEvent, Decision, LogRecord, Phase, TxId};
use crate::election::bully::{BullyMsg, BullyTimer};
use crate::election::{Bully, ElectionCore, ElectionDurable, ElectionEvent};
use crate::family::protocol_types;
use crate::group::{Change, Group};
use crate::MemberId;

tx_messages! {
    /// Three-phase-commit wire messages: the ones every commit algorithm
    /// exchanges, then pre-commit, termination and the embedded election's.
    pub enum ThreePhaseMsg<Id> {
    /// Pre-commit (round 0: from the coordinator; else from the termination
    /// round `round`).
    PreCommit {
        /// The transaction.
        tx: TxId,
        /// The round.
        round: u64,
    },
    /// The pre-commit of `round` is durable here.
    PreAck {
        /// The transaction.
        tx: TxId,
        /// The round.
        round: u64,
    },
    /// Termination round `round` asks for the receiver's state.
    StateReq {
        /// The transaction.
        tx: TxId,
        /// The round.
        round: u64,
        /// Its coordinator.
        coordinator: Id,
        /// Its participants.
        participants: Vec<Id>,
    },
    /// The answer to a `StateReq`.
    StateReport {
        /// The transaction.
        tx: TxId,
        /// The round it answers.
        round: u64,
        /// `Ready`, `PreCommitted` or `Decided`.
        phase: Phase,
        /// See [`super::TxStatus::active`].
        active: bool,
    },
    /// An undecided participant asks the elected leader to run a
    /// termination round for `tx` above `round` (the round it joined, 0 for
    /// none); also its answer to a `StateReq` of an older round.
    Terminate {
        /// The transaction.
        tx: TxId,
        /// The round the sender joined.
        round: u64,
        /// Its coordinator.
        coordinator: Id,
        /// Its participants.
        participants: Vec<Id>,
    },
    /// Termination round `round`, run by a node that is not a participant,
    /// decided abort: a participant still uncertain in that round decides it
    /// (durably) and tells everyone, the sender included.
    RoundAbort {
        /// The transaction.
        tx: TxId,
        /// The round.
        round: u64,
    },
    /// A message of the embedded election.
    Election(BullyMsg<Id>),
    }
}

/// Three-phase-commit timers: one per transaction, one per termination
/// round this node runs, and the embedded election's.
pub type ThreePhaseTimer = TxTimer;

type Out<Id> = Outputs<Id, ThreePhaseMsg<Id>, ThreePhaseTimer, CommitEvent>;
type ElectionOut<Id> = Outputs<Id, BullyMsg<Id>, BullyTimer, ElectionEvent<Id>>;

/// A participant asks for a termination round without the coordinator
/// reported down once it has been uncertain for this many decision
/// timeouts (a live coordinator cannot finish once a participant joined a
/// termination round).
const PATIENCE: u32 = 5;

/// A termination round this node runs (as the elected leader).
#[derive(Debug, Clone)]
struct Round<Id> {
    round: u64,
    coordinator: Id,
    /// Sorted, without the coordinator.
    participants: Vec<Id>,
    /// This node is a participant: its own state is one of the reports,
    /// and it decides durably itself.
    member: bool,
    reports: BTreeMap<Id, (Phase, bool)>,
    /// Pre-committing: the uncertain reporters whose `PreAck` is awaited.
    awaiting: Option<BTreeSet<Id>>,
    /// Not a participant, rule 3: the uncertain reporters asked to decide
    /// the abort (`RoundAbort`).
    aborting: Option<BTreeSet<Id>>,
}

/// Three-phase commit's own state: the embedded election and the
/// termination rounds this node runs.
#[derive(Debug, Clone)]
pub struct ThreePhaseState<Id> {
    rounds: BTreeMap<TxId, Round<Id>>,
    /// Boxed: the any-core enum keeps its variants of similar size.
    election: Box<Bully<Id>>,
    /// The election runs (in this life): this node needed a termination
    /// coordinator, or an election message arrived.
    awake: bool,
    /// The election's durable state as saved last.
    saved: ElectionDurable<Id>,
}

impl<Id: MemberId> CommitState<Id> for ThreePhaseState<Id> {
    const ALWAYS_PRESUMES_ABORT: bool = true;
    /// The election over `group`, resumed from its saved term.
    fn open(group: &Group<Id>, config: &CommitConfig, durable: &CommitDurable<Id>) -> Self {
        let election = Bully::new(
            group.me().clone(),
            group.members().to_vec(),
            config.election,
            durable.election.clone(),
        );
        let saved = election.state();
        Self {
            rounds: BTreeMap::new(),
            election: Box::new(election),
            awake: false,
            saved,
        }
    }
    fn patience(config: &CommitConfig) -> Option<Duration> {
        Some(PATIENCE * config.decision_timeout)
    }
    /// A decided transaction needs no termination round.
    fn decided(&mut self, tx: TxId) {
        self.rounds.remove(&tx);
    }
}

/// A three-phase-commit core for one member (see the module docs).
pub type ThreePhase<Id> = Commit<Id, ThreePhaseState<Id>>;

impl<Id: MemberId> ThreePhase<Id> {
    /// The embedded election's term and its leader as this node knows it:
    /// the node that runs termination rounds (see the module docs).
    pub fn termination_leader(&self) -> (u64, Option<&Id>) {
        (self.alg.election.term(), self.alg.election.leader())
    }

    /// The termination rounds this node runs now: transaction, round.
    pub fn termination_rounds(&self) -> BTreeMap<TxId, u64> {
        self.alg
            .rounds
            .iter()
            .map(|(tx, r)| (*tx, r.round))
            .collect()
    }

    /// Run `f` on the election and carry out its outputs; a node that no
    /// longer leads drops its rounds.
    fn elect(&mut self, out: &mut Out<Id>, f: impl FnOnce(&mut Bully<Id>, &mut ElectionOut<Id>)) {
        let mut eo = Outputs::new();
        f(&mut self.alg.election, &mut eo);
        for (to, m) in eo.sends {
            out.send(to, ThreePhaseMsg::Election(m));
        }
        out.timers
            .extend(eo.timers.into_iter().map(|op| op.map(TxTimer::Election)));
        out.writes.extend(eo.writes);
        if out.write_error.is_none() {
            out.write_error = eo.write_error;
        }
        if !eo.events.is_empty() && !self.alg.election.is_leader() {
            for tx in std::mem::take(&mut self.alg.rounds).into_keys() {
                out.cancel_timer(TxTimer::Round(tx));
            }
        }
    }

    /// Wake the election if it sleeps: tell it who is down, and hold an
    /// election (`start`) or not (woken by an election message).
    fn wake(&mut self, now: Duration, start: bool, out: &mut Out<Id>) {
        if self.alg.awake {
            return;
        }
        self.alg.awake = true;
        let down: Vec<Id> = self
            .group
            .members()
            .iter()
            .filter(|m| !self.group.is_live(m))
            .cloned()
            .collect();
        self.elect(out, |e, o| {
            for member in down {
                let change = MemberEvent {
                    member,
                    status: MemberStatus::Down,
                    at: now,
                };
                e.on_membership(now, change, o);
            }
            if start {
                e.on_start(now, o);
            }
        });
    }

    /// Decide `tx` here, durably (`forced`), unless the coordinator
    /// aborts: a presumed abort is not logged by the coordinator.
    fn decide_forced(&mut self, tx: TxId, d: Decision, forced: bool, out: &mut Out<Id>) -> bool {
        let me = self.me().clone();
        let coordinator_abort =
            self.txs.get(&tx).is_some_and(|t| t.coordinator == me) && d == Decision::Abort;
        self.decide(tx, d, (!coordinator_abort).then_some(forced), out)
    }

    /// Learn decision `d` from someone who knows; acknowledge a commit to
    /// the coordinator.
    fn on_decision(&mut self, tx: TxId, d: Decision, out: &mut Out<Id>) {
        let Some(t) = self.txs.get(&tx) else {
            return;
        };
        if t.coordinator != *self.me() {
            self.learn(tx, d, d == Decision::Commit, out);
            return;
        }
        // Told by a termination round: it ends a commit once every
        // participant acknowledged it (only then may it forget it).
        if self.decide_forced(tx, d, false, out) {
            self.announce(tx, d, d == Decision::Commit, out);
        }
    }

    /// Make `tx`'s pre-commit durable (forced: its `PreCommit` or `PreAck`
    /// is about to leave).
    fn log_precommit(&mut self, tx: TxId, out: &mut Out<Id>) {
        self.record(
            tx,
            true,
            |t| LogRecord::PreCommit {
                tx,
                coordinator: t.coordinator.clone(),
                participants: t.participants.clone(),
            },
            out,
        );
    }

    /// Coordinator: every vote is yes: pre-commit.
    fn coordinator_precommits(&mut self, tx: TxId, out: &mut Out<Id>) {
        self.log_precommit(tx, out);
        if let Some(t) = self.txs.get_mut(&tx) {
            t.phase = Phase::PreCommitting;
            t.votes.clear();
            for p in &t.participants {
                out.send(p.clone(), ThreePhaseMsg::PreCommit { tx, round: 0 });
            }
        }
        out.set_timer(self.config.retry, ThreePhaseTimer::Tx(tx));
    }

    /// Termination: a participant pre-commits (in `round`), durably.
    fn participant_precommits(&mut self, tx: TxId, out: &mut Out<Id>) {
        if self.txs.get(&tx).map(|t| t.phase) == Some(Phase::Ready) {
            self.log_precommit(tx, out);
            if let Some(t) = self.txs.get_mut(&tx) {
                t.phase = Phase::PreCommitted;
            }
        }
    }

    /// Join round `round` of `tx` (durably); abandons a lower round of our own.
    fn join(&mut self, tx: TxId, round: u64, out: &mut Out<Id>) {
        self.log.append(LogRecord::Joined { tx, round }, true, out);
        if let Some(t) = self.txs.get_mut(&tx) {
            t.round = round;
        }
        if self.alg.rounds.get(&tx).is_some_and(|r| r.round < round) {
            self.alg.rounds.remove(&tx);
            out.cancel_timer(TxTimer::Round(tx));
        }
    }

    fn on_state_req(
        &mut self,
        tx: TxId,
        round: u64,
        from: Id,
        coordinator: Id,
        participants: Vec<Id>,
        out: &mut Out<Id>,
    ) {
        if self.forgot(&coordinator, tx) {
            return;
        }
        let (phase, active) = match self.txs.get(&tx).map(|t| (t.phase, t.round, t.active)) {
            None | Some((Phase::Voting, _, _)) => {
                self.abort_unilaterally(tx, coordinator, participants, out);
                (Phase::Decided(Decision::Abort), true)
            }
            Some((phase @ Phase::Decided(_), _, active)) => (phase, active),
            Some((phase @ (Phase::Ready | Phase::PreCommitted), joined, active)) => {
                if round < joined {
                    // A runner behind: it should start above our round.
                    let ask = ThreePhaseMsg::Terminate {
                        tx,
                        round: joined,
                        coordinator,
                        participants,
                    };
                    out.send(from, ask);
                    return;
                }
                if round > joined {
                    self.join(tx, round, out);
                }
                (phase, active)
            }
            Some(_) => return,
        };
        let report = ThreePhaseMsg::StateReport {
            tx,
            round,
            phase,
            active,
        };
        out.send(from, report);
    }

    /// An undecided participant: once it gave up on the coordinator, ask
    /// the elected leader for a termination round (or run it, leading).
    fn terminate(&mut self, now: Duration, tx: TxId, out: &mut Out<Id>) {
        let Some(t) = self.txs.get(&tx) else {
            return;
        };
        // The coordinator is reported down, or has not finished for long
        // (it cannot, e.g., once some participant joined a round).
        let given_up = !self.group.is_live(&t.coordinator) || now >= t.deadline;
        if !matches!(t.phase, Phase::Ready | Phase::PreCommitted) || !given_up {
            return;
        }
        let (round, coordinator, participants) =
            (t.round, t.coordinator.clone(), t.participants.clone());
        self.wake(now, true, out);
        let me = self.me().clone();
        match self.alg.election.leader().cloned() {
            Some(leader) if leader == me => {
                self.run_round(tx, round, coordinator, participants, out)
            }
            Some(leader) => {
                let ask = ThreePhaseMsg::Terminate {
                    tx,
                    round,
                    coordinator,
                    participants,
                };
                out.send(leader, ask);
            }
            // An election is under way: ask again on the next retry.
            None => {}
        }
    }

    /// `from` asks this node, as the leader, for a termination round of
    /// `tx` above `round`.
    #[allow(clippy::too_many_arguments)]
    fn on_terminate(
        &mut self,
        now: Duration,
        from: Id,
        tx: TxId,
        round: u64,
        coordinator: Id,
        participants: Vec<Id>,
        out: &mut Out<Id>,
    ) {
        if !self.alg.election.is_leader() {
            // Asked as the leader while not leading: a restarted node's
            // election sleeps until someone needs it.
            self.wake(now, true, out);
            return;
        }
        if let Some(decision) = self.txs.get(&tx).and_then(|t| t.decided()) {
            out.send(from, ThreePhaseMsg::Decision { tx, decision });
            return;
        }
        let me = self.me().clone();
        let participants = clean_participants(&coordinator, participants);
        let voting = self.txs.get(&tx).is_none_or(|t| t.phase == Phase::Voting);
        if participants.contains(&me) && voting {
            // A participant that has not voted yes aborts, and says so.
            self.abort_unilaterally(tx, coordinator, participants, out);
            let abort = ThreePhaseMsg::Decision {
                tx,
                decision: Decision::Abort,
            };
            self.broadcast(tx, abort, out);
            return;
        }
        self.run_round(tx, round, coordinator, participants, out);
    }

    /// As the leader: start a termination round of `tx` above `seen`,
    /// unless this node runs one that is not older (its timer continues
    /// it).
    fn run_round(
        &mut self,
        tx: TxId,
        seen: u64,
        coordinator: Id,
        participants: Vec<Id>,
        out: &mut Out<Id>,
    ) {
        let me = self.me().clone();
        let own = self
            .txs
            .get(&tx)
            .filter(|t| t.participants.contains(&me))
            .map(|t| (t.phase, t.active, t.round));
        if own.is_some_and(|(phase, _, _)| !matches!(phase, Phase::Ready | Phase::PreCommitted)) {
            return;
        }
        let current = self.alg.rounds.get(&tx).map(|r| r.round);
        if current.is_some_and(|c| c >= seen) {
            return;
        }
        // A new round, above every round seen, in this node's stripe.
        let joined = own.map_or(0, |(_, _, joined)| joined);
        let round = self
            .group
            .next_term(seen.max(joined).max(current.unwrap_or(0)));
        let (coordinator, participants) = match self.txs.get(&tx) {
            Some(t) => (t.coordinator.clone(), t.participants.clone()),
            None => (coordinator, participants),
        };
        let mut reports = BTreeMap::new();
        if let Some((phase, active, _)) = own {
            self.join(tx, round, out);
            reports.insert(me, (phase, active));
        }
        let r = Round {
            round,
            coordinator,
            participants,
            member: own.is_some(),
            reports,
            awaiting: None,
            aborting: None,
        };
        self.alg.rounds.insert(tx, r);
        self.continue_round(tx, out);
    }

    /// Send what this node's round of `tx` waits for (again), and look at
    /// its reports.
    fn continue_round(&mut self, tx: TxId, out: &mut Out<Id>) {
        let me = self.me().clone();
        let Some(r) = self.alg.rounds.get(&tx) else {
            return;
        };
        let round = r.round;
        if let Some(asked) = &r.aborting {
            for p in asked {
                out.send(p.clone(), ThreePhaseMsg::RoundAbort { tx, round });
            }
        } else if let Some(awaiting) = &r.awaiting {
            for p in awaiting {
                out.send(p.clone(), ThreePhaseMsg::PreCommit { tx, round });
            }
        } else {
            let req = ThreePhaseMsg::StateReq {
                tx,
                round,
                coordinator: r.coordinator.clone(),
                participants: r.participants.clone(),
            };
            for p in r.participants.iter() {
                if *p != me && !r.reports.contains_key(p) {
                    out.send(p.clone(), req.clone());
                }
            }
        }
        out.set_timer(self.config.retry, TxTimer::Round(tx));
        self.evaluate(tx, out);
    }

    /// The timer of this node's round of `tx`: continue it while leading.
    fn on_round_timer(&mut self, tx: TxId, out: &mut Out<Id>) {
        let Some(r) = self.alg.rounds.get(&tx) else {
            return;
        };
        let orphaned = r
            .aborting
            .as_ref()
            .is_some_and(|asked| asked.iter().all(|p| !self.group.is_live(p)));
        if !self.alg.election.is_leader() || orphaned {
            // Not leading any more, or nobody left to decide the abort:
            // the next request starts a higher round.
            self.alg.rounds.remove(&tx);
            return;
        }
        self.continue_round(tx, out);
    }

    /// Apply the termination rules to the reports of this node's round.
    fn evaluate(&mut self, tx: TxId, out: &mut Out<Id>) {
        let me = self.me().clone();
        let Some(r) = self.alg.rounds.get(&tx) else {
            return;
        };
        if r.aborting.is_some() {
            return;
        }
        if let Some(awaiting) = &r.awaiting {
            if awaiting.iter().all(|p| !self.group.is_live(p)) {
                self.round_decides(tx, Decision::Commit, out);
            }
            return;
        }
        let decided = r.reports.values().find_map(|(p, _)| match p {
            Phase::Decided(d) => Some(*d),
            _ => None,
        });
        if let Some(d) = decided {
            self.round_decides(tx, d, out);
            return;
        }
        let missing = r
            .participants
            .iter()
            .any(|p| self.group.is_live(p) && !r.reports.contains_key(p));
        if missing {
            return;
        }
        let full = r.reports.len() == r.participants.len();
        let pre = |active_only: bool| {
            r.reports
                .values()
                .any(|(p, a)| *p == Phase::PreCommitted && (*a || !active_only))
        };
        let ready_active = r.reports.values().any(|(p, a)| *p == Phase::Ready && *a);
        if pre(true) || (full && pre(false)) {
            let uncertain: BTreeSet<Id> = r
                .reports
                .iter()
                .filter(|(id, (p, _))| *p == Phase::Ready && **id != me)
                .map(|(id, _)| id.clone())
                .collect();
            let (round, member) = (r.round, r.member);
            if member {
                self.participant_precommits(tx, out);
            }
            for p in &uncertain {
                out.send(p.clone(), ThreePhaseMsg::PreCommit { tx, round });
            }
            if let Some(r) = self.alg.rounds.get_mut(&tx) {
                r.awaiting = Some(uncertain);
            }
            self.evaluate(tx, out);
        } else if ready_active || full {
            self.round_aborts(tx, out);
        }
    }

    /// Rule 3: a participant runner decides abort; any other asks the
    /// uncertain reporters to (see the module docs).
    fn round_aborts(&mut self, tx: TxId, out: &mut Out<Id>) {
        let Some(r) = self.alg.rounds.get_mut(&tx) else {
            return;
        };
        if r.member {
            self.round_decides(tx, Decision::Abort, out);
            return;
        }
        let asked: BTreeSet<Id> = r
            .reports
            .iter()
            .filter(|(_, (p, _))| *p == Phase::Ready)
            .map(|(id, _)| id.clone())
            .collect();
        let round = r.round;
        for p in &asked {
            out.send(p.clone(), ThreePhaseMsg::RoundAbort { tx, round });
        }
        r.aborting = Some(asked);
    }

    /// This node's round decides `d`: a participant runner decides it
    /// durably; then everyone is told.
    fn round_decides(&mut self, tx: TxId, d: Decision, out: &mut Out<Id>) {
        let Some(r) = self.alg.rounds.remove(&tx) else {
            return;
        };
        out.cancel_timer(TxTimer::Round(tx));
        let decision = ThreePhaseMsg::Decision { tx, decision: d };
        if r.member {
            if self.decide_forced(tx, d, true, out) {
                self.broadcast(tx, decision, out);
                out.cancel_timer(ThreePhaseTimer::Tx(tx));
            }
            return;
        }
        let me = self.me().clone();
        for p in r.participants.iter().chain(std::iter::once(&r.coordinator)) {
            if *p != me {
                out.send(p.clone(), decision.clone());
            }
        }
        if r.coordinator == me {
            self.on_decision(tx, d, out);
        }
    }

    /// A non-participant runner's round `round` decided abort: decide it
    /// if still uncertain in that round (see the module docs).
    fn on_round_abort(&mut self, tx: TxId, round: u64, from: Id, out: &mut Out<Id>) {
        let Some(t) = self.txs.get(&tx) else {
            return;
        };
        let abort = ThreePhaseMsg::Decision {
            tx,
            decision: Decision::Abort,
        };
        match t.phase {
            Phase::Decided(decision) => out.send(from, ThreePhaseMsg::Decision { tx, decision }),
            Phase::Ready if t.round == round && t.coordinator != *self.me() => {
                if self.decide_forced(tx, Decision::Abort, true, out) {
                    self.broadcast(tx, abort.clone(), out);
                    out.cancel_timer(ThreePhaseTimer::Tx(tx));
                }
                out.send(from, abort);
            }
            _ => {}
        }
    }

    fn on_report(
        &mut self,
        tx: TxId,
        from: Id,
        round: u64,
        report: (Phase, bool),
        out: &mut Out<Id>,
    ) {
        let Some(r) = self.alg.rounds.get_mut(&tx) else {
            return;
        };
        let open = r.awaiting.is_none() && r.aborting.is_none();
        if r.round != round || !open || !r.participants.contains(&from) {
            return;
        }
        r.reports.insert(from, report);
        self.evaluate(tx, out);
    }

    fn on_vote(&mut self, tx: TxId, from: Id, yes: bool, out: &mut Out<Id>) {
        match self.tally(tx, from, Phase::Collecting, yes) {
            Some(Decision::Commit) => self.coordinator_precommits(tx, out),
            Some(Decision::Abort) => self.coordinator_decides(tx, Decision::Abort, out),
            None => {}
        }
    }

    fn on_precommit(&mut self, tx: TxId, from: Id, round: u64, out: &mut Out<Id>) {
        let Some(t) = self.txs.get(&tx) else {
            return;
        };
        let accept = if round == 0 {
            from == t.coordinator && t.round == 0
        } else {
            round == t.round
        };
        if !accept {
            return;
        }
        match t.phase {
            Phase::Ready | Phase::PreCommitted | Phase::Decided(Decision::Commit) => {
                self.participant_precommits(tx, out);
                out.send(from, ThreePhaseMsg::PreAck { tx, round });
            }
            _ => {}
        }
    }

    fn on_preack(&mut self, tx: TxId, from: Id, round: u64, out: &mut Out<Id>) {
        if round == 0 {
            if self.tally(tx, from, Phase::PreCommitting, true).is_some() {
                self.coordinator_decides(tx, Decision::Commit, out);
            }
            return;
        }
        if let Some(r) = self.alg.rounds.get_mut(&tx) {
            if r.round == round {
                if let Some(a) = r.awaiting.as_mut() {
                    a.remove(&from);
                    if a.is_empty() {
                        self.round_decides(tx, Decision::Commit, out);
                    }
                }
            }
        }
    }
}

impl<Id: MemberId> CommitRules for ThreePhase<Id> {
    /// Log a commit (forced) and wait for its acknowledgements; a presumed
    /// abort is neither logged nor acknowledged.
    fn coordinator_decides(&mut self, tx: TxId, d: Decision, out: &mut Out<Id>) {
        if self.decide_forced(tx, d, true, out) {
            self.announce(tx, d, d == Decision::Commit, out);
        }
    }

    /// The coordinator sends its pre-commit again (and asks); an
    /// uncertain participant asks around and asks for a termination round
    /// if it should.
    fn on_own_timer(&mut self, now: Duration, tx: TxId, out: &mut Out<Id>) {
        let Some(t) = self.txs.get(&tx) else {
            return;
        };
        let retry = self.config.retry;
        match t.phase {
            Phase::PreCommitting => {
                let inquire =
                    ThreePhaseMsg::inquire(tx, t.coordinator.clone(), t.participants.clone());
                for p in t.participants.iter().filter(|p| !t.votes.contains(*p)) {
                    out.send(p.clone(), ThreePhaseMsg::PreCommit { tx, round: 0 });
                    out.send(p.clone(), inquire.clone());
                }
                out.set_timer(retry, TxTimer::Tx(tx));
            }
            Phase::Ready | Phase::PreCommitted => {
                self.inquire(tx, out);
                self.terminate(now, tx, out);
                out.set_timer(retry, TxTimer::Tx(tx));
            }
            _ => {}
        }
    }
}

impl<Id: MemberId> Protocol for ThreePhase<Id> {
    protocol_types!(ThreePhaseMsg<Id>, ThreePhaseTimer, CommitEvent);

    /// After every input: compact the log once enough transactions can be
    /// forgotten, and save the election's state if it changed (before the
    /// messages of the same input leave).
    fn persist(&mut self, out: &mut Out<Id>) {
        self.tidy(out);
        let state = self.alg.election.state();
        if state != self.alg.saved {
            out.put(ELECTION_KEY, &state);
            self.alg.saved = state;
        }
    }

    fn on_start(&mut self, _now: Duration, out: &mut Out<Id>) {
        let open: Vec<TxId> = self
            .txs
            .iter()
            .filter(|(_, t)| t.decided().is_none() || (t.coordinator == *self.me() && !t.ended))
            .map(|(tx, _)| *tx)
            .collect();
        for tx in open {
            out.set_timer(Duration::ZERO, ThreePhaseTimer::Tx(tx));
        }
    }

    fn on_message(&mut self, now: Duration, from: Id, msg: ThreePhaseMsg<Id>, out: &mut Out<Id>) {
        let Some((from, msg)) = self.on_shared(from, msg, out) else {
            return;
        };
        match msg {
            ThreePhaseMsg::Vote { tx, yes } => self.on_vote(tx, from, yes, out),
            ThreePhaseMsg::PreCommit { tx, round } => self.on_precommit(tx, from, round, out),
            ThreePhaseMsg::PreAck { tx, round } => self.on_preack(tx, from, round, out),
            ThreePhaseMsg::Decision { tx, decision } => {
                self.on_decision(tx, decision, out);
                // A runner with no part in `tx`: someone decided it.
                if !self.txs.contains_key(&tx) && self.alg.rounds.remove(&tx).is_some() {
                    out.cancel_timer(TxTimer::Round(tx));
                }
            }
            ThreePhaseMsg::StateReq {
                tx,
                round,
                coordinator,
                participants,
            } => self.on_state_req(tx, round, from, coordinator, participants, out),
            ThreePhaseMsg::StateReport {
                tx,
                round,
                phase,
                active,
            } => self.on_report(tx, from, round, (phase, active), out),
            ThreePhaseMsg::Terminate {
                tx,
                round,
                coordinator,
                participants,
            } => self.on_terminate(now, from, tx, round, coordinator, participants, out),
            ThreePhaseMsg::RoundAbort { tx, round } => self.on_round_abort(tx, round, from, out),
            ThreePhaseMsg::Election(m) => {
                // A stray `Alive` (to an election of a previous life) would
                // leave the woken election idle without a leader: hold one.
                let start = matches!(m, BullyMsg::Alive { .. });
                self.wake(now, start, out);
                self.elect(out, |e, o| e.on_message(now, from, m, o));
            }
            // Handled by `on_shared`.
            ThreePhaseMsg::Prepare { .. }
            | ThreePhaseMsg::Ack { .. }
            | ThreePhaseMsg::Inquire { .. } => {}
        }
    }

    fn on_timer(&mut self, now: Duration, timer: ThreePhaseTimer, out: &mut Out<Id>) {
        match timer {
            TxTimer::Tx(tx) => self.on_timer_tx(now, tx, out),
            TxTimer::Round(tx) => self.on_round_timer(tx, out),
            TxTimer::Election(t) => self.elect(out, |e, o| e.on_timer(now, t, o)),
        }
    }

    fn on_membership(&mut self, now: Duration, change: MemberEvent<Id>, out: &mut Out<Id>) {
        if self.alg.awake {
            let c = change.clone();
            self.elect(out, |e, o| e.on_membership(now, c, o));
        }
        if let Some(Change::Gone(gone)) = self.group.apply(change) {
            // Rounds that waited on it look again now.
            let rounds: Vec<TxId> = self
                .alg
                .rounds
                .iter()
                .filter(|(_, r)| r.participants.contains(&gone))
                .map(|(tx, _)| *tx)
                .collect();
            for tx in rounds {
                self.evaluate(tx, out);
            }
            // Undecided participants that waited on it look again now.
            let me = self.me().clone();
            let affected: Vec<TxId> = self
                .txs
                .iter()
                .filter(|(_, t)| {
                    t.decided().is_none()
                        && t.coordinator != me
                        && (t.coordinator == gone || t.participants.contains(&gone))
                })
                .map(|(tx, _)| *tx)
                .collect();
            for tx in affected {
                out.set_timer(Duration::ZERO, ThreePhaseTimer::Tx(tx));
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use troupe_framework::membership::MemberStatus;
    use troupe_framework::sansio::Recovered;

    use super::*;
    use crate::commit::{CommitCore, CommitDurable};

    type O = Out<u32>;
    const MS: Duration = Duration::from_millis(1);

    fn core(me: u32, disk: &Recovered) -> ThreePhase<u32> {
        let d = CommitDurable::recover(disk).unwrap();
        ThreePhase::new(me, [1, 2, 3, 4], CommitConfig::default(), d)
    }

    /// Participant `me` of tx 1 (coordinator 1, participants 2..=4), Ready.
    fn ready(me: u32, disk: &mut Recovered) -> ThreePhase<u32> {
        let mut c = core(me, disk);
        let mut out = O::new();
        c.on_start(MS, &mut out);
        let participants = vec![2, 3, 4];
        c.on_message(
            MS,
            1,
            ThreePhaseMsg::Prepare {
                tx: 1,
                participants,
                floor: 0,
            },
            &mut out,
        );
        c.vote(1, true, MS, &mut out);
        disk.apply(&out.writes).unwrap();
        assert_eq!(c.status(1).map(|s| s.phase), Some(Phase::Ready));
        c
    }

    fn acks(out: &O) -> Vec<(u32, u64)> {
        out.sends
            .iter()
            .filter_map(|(to, m)| match m {
                ThreePhaseMsg::PreAck { round, .. } => Some((*to, *round)),
                _ => None,
            })
            .collect()
    }

    fn member(c: &mut ThreePhase<u32>, who: u32, status: MemberStatus, out: &mut O) {
        let change = MemberEvent {
            member: who,
            status,
            at: MS,
        };
        c.on_membership(MS, change, out);
    }

    /// The coordinator (1) and participant 4 go down; participant 2 gives
    /// up, wakes its election, hears no `Alive` from 3 and leads, then runs
    /// a termination round, whose number is returned.
    fn run_round(c: &mut ThreePhase<u32>, out: &mut O) -> u64 {
        member(c, 1, MemberStatus::Down, out);
        member(c, 4, MemberStatus::Down, out);
        c.on_timer(MS, ThreePhaseTimer::Tx(1), out);
        assert_eq!(c.termination_leader().1, None, "electing");
        let alive = ThreePhaseTimer::Election(BullyTimer::AliveTimeout);
        c.on_timer(MS, alive, out);
        assert_eq!(c.termination_leader().1, Some(&2));
        c.on_timer(MS, ThreePhaseTimer::Tx(1), out);
        c.alg
            .rounds
            .get(&1)
            .map(|r| r.round)
            .expect("2 runs a round")
    }

    #[test]
    fn a_participant_that_joined_a_round_refuses_the_coordinators_precommit_across_restarts() {
        let mut disk = Recovered::empty();
        let mut c = ready(3, &mut disk);
        let mut out = O::new();
        let req = ThreePhaseMsg::StateReq {
            tx: 1,
            round: 5,
            coordinator: 1,
            participants: vec![2, 3, 4],
        };
        c.on_message(MS, 2, req, &mut out);
        disk.apply(&out.writes).unwrap();
        assert!(
            out.sends.iter().any(|(to, m)| *to == 2 && matches!(m, ThreePhaseMsg::StateReport { round: 5, .. })),
            "{:?}",
            out.sends
        );
        let mut out = O::new();
        c.on_message(
            MS,
            1,
            ThreePhaseMsg::PreCommit { tx: 1, round: 0 },
            &mut out,
        );
        assert_eq!(acks(&out), vec![], "round 0 after joining round 5");
        // Rebuilt from its log, it still refuses round 0 and takes round 5.
        let mut c = core(3, &disk);
        let mut out = O::new();
        c.on_start(MS, &mut out);
        c.on_message(
            MS,
            1,
            ThreePhaseMsg::PreCommit { tx: 1, round: 0 },
            &mut out,
        );
        assert_eq!(acks(&out), vec![], "round 0 after a restart");
        c.on_message(
            MS,
            2,
            ThreePhaseMsg::PreCommit { tx: 1, round: 5 },
            &mut out,
        );
        assert_eq!(acks(&out), vec![(2, 5)]);
        assert_eq!(c.status(1).map(|s| s.phase), Some(Phase::PreCommitted));
    }

    #[test]
    fn only_passive_uncertain_reports_decide_nothing_until_everyone_reported() {
        let mut disk = Recovered::empty();
        ready(2, &mut disk);
        // Participant 2 restarts: passive. The coordinator and 4 are down.
        let mut c = core(2, &disk);
        let mut out = O::new();
        c.on_start(MS, &mut out);
        assert_eq!(c.status(1).map(|s| s.active), Some(false));
        let round = run_round(&mut c, &mut out);
        let report = |active| ThreePhaseMsg::StateReport {
            tx: 1,
            round,
            phase: Phase::Ready,
            active,
        };
        c.on_message(MS, 3, report(false), &mut out);
        assert_eq!(c.decision(1), None, "only passive reports: blocked");
        // 4 comes back and reports: every participant reported, all uncertain.
        member(&mut c, 4, MemberStatus::Up, &mut out);
        c.on_message(MS, 4, report(false), &mut out);
        assert_eq!(c.decision(1), Some(Decision::Abort));
    }

    #[test]
    fn an_active_uncertain_report_aborts_a_partial_round() {
        let mut disk = Recovered::empty();
        let mut c = ready(2, &mut disk);
        let mut out = O::new();
        let round = run_round(&mut c, &mut out);
        let pre = ThreePhaseMsg::StateReport {
            tx: 1,
            round,
            phase: Phase::PreCommitted,
            active: false,
        };
        c.on_message(MS, 3, pre, &mut out);
        // A passive pre-commit does not count in a partial round; 2 is
        // active and uncertain: abort.
        assert_eq!(c.decision(1), Some(Decision::Abort));
    }

    #[test]
    fn the_election_term_and_the_joined_round_survive_a_restart() {
        let mut disk = Recovered::empty();
        let mut c = ready(2, &mut disk);
        let mut out = O::new();
        let round = run_round(&mut c, &mut out);
        c.persist(&mut out);
        disk.apply(&out.writes).unwrap();
        let term = c.termination_leader().0;
        assert!(term > 0);
        assert!(disk.get(super::super::log::ELECTION_KEY).is_some());
        // Rebuilt: the term it was in, no leader known, the election asleep.
        let mut c = core(2, &disk);
        assert_eq!(c.termination_leader(), (term, None));
        let mut out = O::new();
        c.on_start(MS, &mut out);
        assert!(out.sends.is_empty(), "{:?}", out.sends);
        // Leading again: a larger term, and a round above the one joined.
        let again = run_round(&mut c, &mut out);
        assert!(c.termination_leader().0 > term);
        assert!(again > round, "{again} after {round}");
        assert_eq!(again % 4, 1, "2's stripe (rank 1 of 4)");
    }

    #[test]
    fn a_participant_asked_in_an_older_round_names_the_round_it_joined() {
        let mut disk = Recovered::empty();
        let mut c = ready(3, &mut disk);
        let mut out = O::new();
        let req = |round| ThreePhaseMsg::StateReq {
            tx: 1,
            round,
            coordinator: 1,
            participants: vec![2, 3, 4],
        };
        c.on_message(MS, 4, req(7), &mut out);
        let mut out = O::new();
        // A runner behind (two nodes both believing they lead): no report,
        // but the round to start above.
        c.on_message(MS, 2, req(5), &mut out);
        assert_eq!(
            out.sends,
            vec![(
                2,
                ThreePhaseMsg::Terminate {
                    tx: 1,
                    round: 7,
                    coordinator: 1,
                    participants: vec![2, 3, 4],
                }
            )]
        );
        // Nor does round 5 decide for it.
        let mut out = O::new();
        c.on_message(
            MS,
            2,
            ThreePhaseMsg::RoundAbort { tx: 1, round: 5 },
            &mut out,
        );
        c.on_message(
            MS,
            2,
            ThreePhaseMsg::PreCommit { tx: 1, round: 5 },
            &mut out,
        );
        assert!(out.sends.is_empty(), "{:?}", out.sends);
        assert_eq!(c.status(1).map(|s| s.phase), Some(Phase::Ready));
        // Round 7's abort it decides, durably, and tells everyone.
        c.on_message(
            MS,
            4,
            ThreePhaseMsg::RoundAbort { tx: 1, round: 7 },
            &mut out,
        );
        assert_eq!(c.decision(1), Some(Decision::Abort));
        assert!(!out.writes.is_empty());
    }
}
