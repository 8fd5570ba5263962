//! Two-phase commit (Gray; Lampson–Sturgis) with cooperative termination,
//! presumed abort by default (Mohan, Lindsay, Obermarck), presumed nothing
//! on request ([`super::CommitConfig::presumed_abort`]).
//!
//! Phase 1: the coordinator sends `Prepare` to every participant; each asks
//! its resource manager ([`CommitEvent::Prepare`]) and answers `Vote`. A yes
//! voter first makes `Ready` durable (forced). Phase 2: with every vote yes
//! the coordinator makes `Decided(Commit)` durable (forced) and sends it;
//! on a no vote or its vote timeout it aborts. Participants make the
//! decision durable, then acknowledge; the coordinator logs `End` lazily
//! once every participant acknowledged.
//!
//! Presumed abort: the coordinator logs nothing before its decision, does
//! not log an abort, sends it once without waiting for acknowledgements,
//! and answers *abort* about any transaction it has no record of (no
//! record means no commit record, hence no commit was ever sent).
//! Participants log an abort lazily and do not acknowledge it. Presumed
//! nothing: the coordinator forces `Begin` (the participant list) before
//! `Prepare`, forces aborts too, both decisions are acknowledged, and a
//! coordinator restarted with `Begin` and no decision aborts.
//!
//! Costs, commit case, `n` participants (the cost benchmark prints them next
//! to these figures): `4n` messages; forced writes `2n + 1` (presumed
//! abort) or `2n + 2` (presumed nothing); the coordinator decides after 2
//! one-way delays, participants after 3.
//!
//! Termination: a `Ready` participant that hears nothing for
//! [`super::CommitConfig::decision_timeout`] asks the coordinator and every other
//! participant (`Inquire`, repeated every `retry`). A decided node answers
//! with the decision; a participant that has not voted yet aborts
//! unilaterally (durably, before answering) and answers *abort*; a `Ready`
//! one cannot help. So the participant blocks exactly when every participant
//! it can reach is `Ready` and the coordinator is down or cut off; it
//! decides as soon as the coordinator (restarted from its log, which holds
//! the decision or, by presumption, means abort) or any decided participant
//! answers. A restarted participant takes up its log: `Ready` without a
//! decision means ask again; no `Ready` means it never voted yes (the vote
//! is sent only once `Ready` is durable), so it may abort.
//!
//! Guarantees (checked at every step of seeded chaos runs with coordinator
//! and participant crashes at every protocol step that lose unsynced
//! writes, message loss, duplication and reordering, and partitions that
//! heal: `tests/commit_two_phase.rs`): **AC1, AC2, AC3** under all of these
//! failures (2PC is safe whatever the network and the failure detector
//! do); **AC4** when nothing fails during the transaction (a lost vote
//! leads to an abort only if the retries do not get through before the
//! vote timeout); **AC5** once crashed nodes restart and partitions heal —
//! but not before: while the coordinator is down and every reachable
//! participant is `Ready`, they block (`tests/commit_blocking.rs`).

use std::time::Duration;

use troupe_framework::sansio::{Outputs, Protocol};

use super::base::{tx_messages, Commit, CommitRules, CommitState, TxTimer};
use super::{CommitConfig, CommitDurable, CommitEvent, Decision, Phase, TxId};
use crate::family::protocol_types;
use crate::group::Group;
use crate::MemberId;

tx_messages! {
    /// Two-phase-commit wire messages: only the ones every commit algorithm
    /// exchanges.
    pub enum TwoPhaseMsg<Id> {}
}

/// Two-phase-commit timers: one per transaction (retries, vote timeout,
/// decision timeout).
pub type TwoPhaseTimer = TxTimer;

/// Two-phase commit's own state: nothing besides what every [`Commit`]
/// core keeps.
#[derive(Debug, Clone, Copy, Default)]
pub struct TwoPhaseState;

impl<Id> CommitState<Id> for TwoPhaseState {
    fn open(_: &Group<Id>, _: &CommitConfig, _: &CommitDurable<Id>) -> Self {
        Self
    }
}

/// A two-phase-commit core for one member (see the module docs).
pub type TwoPhase<Id> = Commit<Id, TwoPhaseState>;

impl<Id: MemberId> TwoPhase<Id> {
    /// The core as it is with every member `m` called `r.to(m)`, for the
    /// model checker's symmetry reduction
    /// ([`crate::testkit::model::Symmetry`]).
    pub fn renamed(&self, r: &crate::testkit::model::Renaming<'_, Id>) -> Option<Self> {
        self.renamed_with(r, TwoPhaseState)
    }
}

impl<Id: MemberId> TwoPhaseMsg<Id> {
    /// The message as it is with every member `m` called `r.to(m)` (its
    /// participant lists kept sorted), for the model checker's symmetry
    /// reduction.
    pub fn renamed(&self, r: &crate::testkit::model::Renaming<'_, Id>) -> Self {
        let sorted = |ps: &[Id]| {
            let mut ps: Vec<Id> = ps.iter().map(|p| r.id(p)).collect();
            ps.sort();
            ps
        };
        match self {
            Self::Prepare {
                tx,
                participants,
                floor,
            } => Self::Prepare {
                tx: *tx,
                participants: sorted(participants),
                floor: *floor,
            },
            Self::Vote { tx, yes } => Self::Vote { tx: *tx, yes: *yes },
            Self::Decision { tx, decision } => Self::Decision {
                tx: *tx,
                decision: *decision,
            },
            Self::Ack { tx } => Self::Ack { tx: *tx },
            Self::Inquire {
                tx,
                coordinator,
                participants,
            } => Self::Inquire {
                tx: *tx,
                coordinator: r.id(coordinator),
                participants: sorted(participants),
            },
        }
    }
}

type Out<Id> = Outputs<Id, TwoPhaseMsg<Id>, TwoPhaseTimer, CommitEvent>;

impl<Id: MemberId> CommitRules for TwoPhase<Id> {
    /// Log the decision (forced) only when it is acknowledged; wait for the
    /// acknowledgements only then, and when there is someone to wait for.
    fn coordinator_decides(&mut self, tx: TxId, d: Decision, out: &mut Out<Id>) {
        let ack = self.acknowledged(d);
        if self.decide(tx, d, ack.then_some(true), out) {
            let wait = ack && !self.txs[&tx].participants.is_empty();
            self.announce(tx, d, wait, out);
        }
    }

    /// An uncertain participant asks around.
    fn on_own_timer(&mut self, _now: Duration, tx: TxId, out: &mut Out<Id>) {
        if self.txs.get(&tx).is_some_and(|t| t.phase == Phase::Ready) {
            self.inquire(tx, out);
            out.set_timer(self.config.retry, TxTimer::Tx(tx));
        }
    }
}

impl<Id: MemberId> Protocol for TwoPhase<Id> {
    protocol_types!(TwoPhaseMsg<Id>, TwoPhaseTimer, CommitEvent);

    /// After every input: compact the log once enough transactions can be
    /// forgotten.
    fn persist(&mut self, out: &mut Out<Id>) {
        self.tidy(out);
    }

    fn on_start(&mut self, now: Duration, out: &mut Out<Id>) {
        let me = self.me().clone();
        let txs: Vec<(TxId, Phase, bool)> = self
            .txs
            .iter()
            .map(|(tx, t)| (*tx, t.phase, t.coordinator == me && !t.ended))
            .collect();
        for (tx, phase, open_coordinator) in txs {
            match phase {
                // Presumed nothing: begun, never decided: abort.
                Phase::Collecting => self.coordinator_decides(tx, Decision::Abort, out),
                Phase::Ready => out.set_timer(Duration::ZERO, TxTimer::Tx(tx)),
                Phase::Decided(_) if open_coordinator => {
                    self.on_timer_tx(now, tx, out);
                }
                _ => {}
            }
        }
    }

    fn on_message(&mut self, _now: Duration, from: Id, msg: TwoPhaseMsg<Id>, out: &mut Out<Id>) {
        let Some((from, msg)) = self.on_shared(from, msg, out) else {
            return;
        };
        match msg {
            TwoPhaseMsg::Vote { tx, yes } => {
                if let Some(d) = self.tally(tx, from, Phase::Collecting, yes) {
                    self.coordinator_decides(tx, d, out);
                }
            }
            TwoPhaseMsg::Decision { tx, decision } => {
                let ack = self.acknowledged(decision);
                match self.txs.get(&tx).map(|t| t.coordinator == *self.me()) {
                    Some(false) => self.learn(tx, decision, ack, out),
                    // Never voted yes here: acknowledge when asked to.
                    None if ack => out.send(from, TwoPhaseMsg::Ack { tx }),
                    _ => {}
                }
            }
            // Handled by `on_shared`.
            TwoPhaseMsg::Prepare { .. } | TwoPhaseMsg::Ack { .. } | TwoPhaseMsg::Inquire { .. } => {
            }
        }
    }

    fn on_timer(&mut self, now: Duration, timer: TwoPhaseTimer, out: &mut Out<Id>) {
        // 2PC sets only transaction timers (the others are 3PC's).
        if let TxTimer::Tx(tx) = timer {
            self.on_timer_tx(now, tx, out);
        }
    }
}
