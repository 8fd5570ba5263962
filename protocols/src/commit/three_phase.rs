//! Three-phase commit (Skeen) with a termination protocol, presumed abort.
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
//! after 5.
//!
//! ## Termination
//! An undecided participant that voted yes asks everyone (`Inquire`) every
//! `retry` once [`CommitConfig::decision_timeout`] passed. When its failure
//! detector reports the coordinator down (or after five decision timeouts
//! without a decision: a live coordinator whose `PreCommit` is refused
//! because a participant joined a round cannot finish), the **lowest live
//! participant** in
//! its view (a deterministic rule over the [`crate::group::Group`] live set rather than
//! the election family: every participant computes it alone, without
//! messages, and the rounds below make overlapping choices harmless) runs a
//! termination round `r` (striped by rank like election terms, larger than
//! every round it saw): it forces `Joined(r)`, asks every participant for
//! its state (`StateReq`), and waits for every participant its detector
//! reports live. A participant forces `Joined(r)` before it answers, and from
//! then on ignores older rounds (and the original coordinator's
//! `PreCommit`). With the reports in:
//!
//! 1. someone decided: that decision;
//! 2. someone *active* (see below) pre-committed, or someone pre-committed
//!    and every participant reported: pre-commit the uncertain ones in round
//!    `r`, and commit once they acknowledged;
//! 3. someone active is uncertain, or every participant reported: abort;
//! 4. otherwise (only nodes rebuilt from their logs): wait for more reports.
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
//! partitions**: **AC1–AC3** hold while the failure detector is accurate (it
//! reports down only crashed nodes, and a crashed node's messages do not
//! outlive its detection — the simulator's delays are below its detection
//! delay); **AC4** when nothing fails; **AC5**: the live participants decide
//! without waiting for a crashed coordinator as long as one of them is
//! active, and everyone decides once every participant is back.
//!
//! **Partitions break AC1**: a partition is an inaccurate failure detector.
//! If the coordinator crashes after its `PreCommit` reached only one side,
//! that side (rule 2) commits while the other side, all uncertain and
//! active, aborts (rule 3): both followed the protocol.
//! `tests/commit_three_phase_partition.rs` builds this run and asserts the
//! checker finds the violation. (Quorum-based 3PC, or Paxos commit, avoids it
//! at the price of blocking a minority.)

use std::collections::{BTreeMap, BTreeSet};
use std::fmt::Debug;
use std::time::Duration;

use troupe_framework::membership::MemberEvent;
use troupe_framework::sansio::{Outputs, Protocol};

use super::base::{tx_messages, Commit, CommitRules, CommitState, TxMsg, TxTimer};
use super::{CommitConfig, CommitEvent, Decision, LogRecord, Phase, TxId};
use crate::family::protocol_types;
use crate::group::Change;
use crate::MemberId;

tx_messages! {
    /// Three-phase-commit wire messages: the ones every commit algorithm
    /// exchanges, then pre-commit and termination.
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
    }
}

/// Three-phase-commit timers: one per transaction.
pub type ThreePhaseTimer = TxTimer;

type Out<Id> = Outputs<Id, ThreePhaseMsg<Id>, ThreePhaseTimer, CommitEvent>;

/// A participant runs the termination protocol without the coordinator
/// reported down once it has been uncertain for this many decision
/// timeouts (a live coordinator cannot finish once a participant joined a
/// termination round).
const PATIENCE: u32 = 5;

/// A termination round this node runs.
#[derive(Debug, Clone)]
struct Round<Id> {
    round: u64,
    reports: BTreeMap<Id, (Phase, bool)>,
    /// Pre-committing: the uncertain reporters whose `PreAck` is awaited.
    awaiting: Option<BTreeSet<Id>>,
}

/// Three-phase commit's own state: the termination rounds this node runs.
#[derive(Debug, Clone)]
pub struct ThreePhaseState<Id> {
    rounds: BTreeMap<TxId, Round<Id>>,
}

impl<Id> Default for ThreePhaseState<Id> {
    fn default() -> Self {
        Self {
            rounds: BTreeMap::new(),
        }
    }
}

impl<Id: Clone + Debug> CommitState for ThreePhaseState<Id> {
    const ALWAYS_PRESUMES_ABORT: bool = true;
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

    /// Run (or continue) a termination round for `tx` if this node should.
    fn terminate(&mut self, now: Duration, tx: TxId, out: &mut Out<Id>) {
        let me = self.me().clone();
        let Some(t) = self.txs.get(&tx) else {
            return;
        };
        // The coordinator is reported down, or has not finished for long
        // (it cannot, e.g., once some participant joined a round).
        let given_up = !self.group.is_live(&t.coordinator) || now >= t.deadline;
        if !matches!(t.phase, Phase::Ready | Phase::PreCommitted) || !given_up {
            return;
        }
        let lowest = t.participants.iter().find(|p| self.group.is_live(p));
        if lowest != Some(&me) {
            return;
        }
        if self.alg.rounds.get(&tx).is_none_or(|r| r.round != t.round) {
            // A new round, above every round seen, in this node's stripe.
            let rank = t.participants.iter().position(|p| *p == me).unwrap_or(0);
            let round = crate::group::next_term(t.round, rank, t.participants.len());
            let (phase, active) = (t.phase, t.active);
            self.join(tx, round, out);
            let mut reports = BTreeMap::new();
            reports.insert(me.clone(), (phase, active));
            self.alg.rounds.insert(
                tx,
                Round {
                    round,
                    reports,
                    awaiting: None,
                },
            );
        }
        let (Some(t), Some(r)) = (self.txs.get(&tx), self.alg.rounds.get(&tx)) else {
            return;
        };
        match &r.awaiting {
            None => {
                let req = ThreePhaseMsg::StateReq {
                    tx,
                    round: r.round,
                    coordinator: t.coordinator.clone(),
                    participants: t.participants.clone(),
                };
                for p in t.others(&me).filter(|p| !r.reports.contains_key(*p)) {
                    out.send(p.clone(), req.clone());
                }
            }
            Some(awaiting) => {
                for p in awaiting {
                    out.send(p.clone(), ThreePhaseMsg::PreCommit { tx, round: r.round });
                }
            }
        }
        self.evaluate(tx, out);
    }

    /// Apply the termination rules to the reports of this node's round.
    fn evaluate(&mut self, tx: TxId, out: &mut Out<Id>) {
        let (Some(t), Some(r)) = (self.txs.get(&tx), self.alg.rounds.get(&tx)) else {
            return;
        };
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
        let missing = t
            .participants
            .iter()
            .any(|p| self.group.is_live(p) && !r.reports.contains_key(p));
        if missing {
            return;
        }
        let full = r.reports.len() == t.participants.len();
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
                .filter(|(id, (p, _))| *p == Phase::Ready && **id != *self.group.me())
                .map(|(id, _)| id.clone())
                .collect();
            let round = r.round;
            self.participant_precommits(tx, out);
            for p in &uncertain {
                out.send(p.clone(), ThreePhaseMsg::PreCommit { tx, round });
            }
            if let Some(r) = self.alg.rounds.get_mut(&tx) {
                r.awaiting = Some(uncertain);
            }
            self.evaluate_awaiting(tx, out);
        } else if ready_active || full {
            self.round_decides(tx, Decision::Abort, out);
        }
    }

    fn evaluate_awaiting(&mut self, tx: TxId, out: &mut Out<Id>) {
        let done = self
            .alg
            .rounds
            .get(&tx)
            .and_then(|r| r.awaiting.as_ref())
            .is_some_and(|a| a.iter().all(|p| !self.group.is_live(p)));
        if done {
            self.round_decides(tx, Decision::Commit, out);
        }
    }

    /// The termination round decides: durably, then everyone is told.
    fn round_decides(&mut self, tx: TxId, d: Decision, out: &mut Out<Id>) {
        if self.decide_forced(tx, d, true, out) {
            self.broadcast(tx, ThreePhaseMsg::Decision { tx, decision: d }, out);
            out.cancel_timer(ThreePhaseTimer::Tx(tx));
        }
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
    /// uncertain participant asks around and runs the termination protocol
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
    /// forgotten.
    fn persist(&mut self, out: &mut Out<Id>) {
        self.tidy(out);
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

    fn on_message(&mut self, _now: Duration, from: Id, msg: ThreePhaseMsg<Id>, out: &mut Out<Id>) {
        let Some((from, msg)) = self.on_shared(from, msg, out) else {
            return;
        };
        match msg {
            ThreePhaseMsg::Vote { tx, yes } => self.on_vote(tx, from, yes, out),
            ThreePhaseMsg::PreCommit { tx, round } => self.on_precommit(tx, from, round, out),
            ThreePhaseMsg::PreAck { tx, round } => self.on_preack(tx, from, round, out),
            ThreePhaseMsg::Decision { tx, decision } => self.on_decision(tx, decision, out),
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
            } => {
                let Some(r) = self.alg.rounds.get_mut(&tx) else {
                    return;
                };
                if r.round != round || r.awaiting.is_some() {
                    return;
                }
                r.reports.insert(from, (phase, active));
                self.evaluate(tx, out);
            }
            // Handled by `on_shared`.
            ThreePhaseMsg::Prepare { .. }
            | ThreePhaseMsg::Ack { .. }
            | ThreePhaseMsg::Inquire { .. } => {}
        }
    }

    fn on_timer(&mut self, now: Duration, timer: ThreePhaseTimer, out: &mut Out<Id>) {
        let TxTimer::Tx(tx) = timer;
        self.on_timer_tx(now, tx, out);
    }

    fn on_membership(&mut self, _now: Duration, change: MemberEvent<Id>, out: &mut Out<Id>) {
        if let Some(Change::Gone(gone)) = self.group.apply(change) {
            // Undecided transactions that waited on it look again now.
            let affected: Vec<TxId> = self
                .txs
                .iter()
                .filter(|(_, t)| {
                    t.decided().is_none()
                        && (t.coordinator == gone || t.participants.contains(&gone))
                })
                .map(|(tx, _)| *tx)
                .collect();
            for tx in affected {
                if self.alg.rounds.contains_key(&tx) {
                    self.evaluate(tx, out);
                    self.evaluate_awaiting(tx, out);
                }
                if self
                    .txs
                    .get(&tx)
                    .is_some_and(|t| t.coordinator != *self.group.me())
                {
                    out.set_timer(Duration::ZERO, ThreePhaseTimer::Tx(tx));
                }
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

    /// The coordinator (1) and participant 4 go down; participant 2 runs a
    /// termination round, whose number is returned.
    fn run_round(c: &mut ThreePhase<u32>, out: &mut O) -> u64 {
        member(c, 1, MemberStatus::Down, out);
        member(c, 4, MemberStatus::Down, out);
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
}
