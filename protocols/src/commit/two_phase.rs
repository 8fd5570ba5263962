//! Two-phase commit (Gray; Lampson–Sturgis) with cooperative termination,
//! presumed abort by default (Mohan, Lindsay, Obermarck), presumed nothing
//! on request ([`CommitConfig::presumed_abort`]).
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
//! [`CommitConfig::decision_timeout`] asks the coordinator and every other
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

use serde::{Deserialize, Serialize};
use troupe_framework::sansio::{Outputs, Protocol, SnapshotCore};

use super::{
    clean_participants, CommitConfig, CommitCore, CommitDurable, CommitEvent, Decision, LogRecord,
    LogStats, Phase, Tx, TxBook, TxId, TxStatus,
};
use crate::family::protocol_types;
use crate::group::Group;
use crate::testkit::SimProtocol;
use crate::MemberId;

/// Two-phase-commit wire messages.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum TwoPhaseMsg<Id> {
    /// Coordinator to participant: vote on `tx`.
    Prepare {
        /// The transaction.
        tx: TxId,
        /// Every participant (for termination).
        participants: Vec<Id>,
    },
    /// Participant to coordinator: its vote.
    Vote {
        /// The transaction.
        tx: TxId,
        /// Yes or no.
        yes: bool,
    },
    /// The decision (from the coordinator, or from any node that knows it).
    Decision {
        /// The transaction.
        tx: TxId,
        /// The outcome.
        decision: Decision,
    },
    /// Participant to coordinator: the decision is durable here.
    Ack {
        /// The transaction.
        tx: TxId,
    },
    /// An uncertain participant asks what was decided.
    Inquire {
        /// The transaction.
        tx: TxId,
        /// Its coordinator.
        coordinator: Id,
        /// Its participants.
        participants: Vec<Id>,
    },
}

/// Two-phase-commit timers: one per transaction (retries, vote timeout,
/// decision timeout).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum TwoPhaseTimer {
    /// Something of `tx` may need doing again.
    Tx(TxId),
}

type Out<Id> = Outputs<Id, TwoPhaseMsg<Id>, TwoPhaseTimer, CommitEvent>;

/// A two-phase-commit core for one member (see the module docs).
#[derive(Debug, Clone)]
pub struct TwoPhase<Id> {
    group: Group<Id>,
    config: CommitConfig,
    log: CommitDurable<Id>,
    txs: TxBook<Id>,
}

impl<Id: MemberId> TwoPhase<Id> {
    /// A core for `me` among `members`, restarted from `durable` if given.
    pub fn new(
        me: Id,
        members: impl IntoIterator<Item = Id>,
        config: CommitConfig,
        durable: Option<CommitDurable<Id>>,
    ) -> Self {
        let log = durable.unwrap_or_default();
        let txs = TxBook::resume(&me, &log);
        Self {
            group: Group::new(me, members),
            config,
            log,
            txs,
        }
    }

    fn me(&self) -> &Id {
        self.group.me()
    }

    /// Does `decision` need acknowledging (and a forced record)?
    fn acknowledged(&self, d: Decision) -> bool {
        d == Decision::Commit || !self.config.presumed_abort
    }

    /// Coordinator: decide `tx`, log as the rules say, tell everyone.
    fn coordinator_decides(&mut self, tx: TxId, d: Decision, out: &mut Out<Id>) {
        let ack = self.acknowledged(d);
        let Some(t) = self.txs.get_mut(&tx) else {
            return;
        };
        if t.decided().is_some() {
            return;
        }
        if ack {
            let rec = LogRecord::Decided {
                tx,
                decision: d,
                coordinator: t.coordinator.clone(),
                participants: t.participants.clone(),
            };
            self.log.append(rec, true, out);
        }
        t.phase = Phase::Decided(d);
        t.acks.clear();
        out.emit(CommitEvent::Decided { tx, decision: d });
        for p in &t.participants {
            out.send(p.clone(), TwoPhaseMsg::Decision { tx, decision: d });
        }
        if ack && !t.participants.is_empty() {
            out.set_timer(self.config.retry, TwoPhaseTimer::Tx(tx));
        } else {
            t.ended = true;
            out.cancel_timer(TwoPhaseTimer::Tx(tx));
        }
    }

    /// Participant: `d` was decided; make it durable (forced when it is
    /// acknowledged), tell the user.
    fn participant_learns(&mut self, tx: TxId, d: Decision, out: &mut Out<Id>) {
        let ack = self.acknowledged(d);
        let Some(t) = self.txs.get_mut(&tx) else {
            return;
        };
        if t.decided().is_none() {
            let rec = LogRecord::Decided {
                tx,
                decision: d,
                coordinator: t.coordinator.clone(),
                participants: t.participants.clone(),
            };
            self.log.append(rec, ack, out);
            t.phase = Phase::Decided(d);
            out.emit(CommitEvent::Decided { tx, decision: d });
            out.cancel_timer(TwoPhaseTimer::Tx(tx));
        }
        if ack && t.decided() == Some(d) {
            out.send(t.coordinator.clone(), TwoPhaseMsg::Ack { tx });
        }
    }

    /// Participant that has not voted yes: abort on its own, durably
    /// (forced: it is about to tell someone).
    fn abort_unilaterally(
        &mut self,
        tx: TxId,
        coordinator: Id,
        participants: Vec<Id>,
        out: &mut Out<Id>,
    ) {
        let t = self
            .txs
            .get_or_insert(tx, || Tx::new(coordinator, participants, Phase::Voting));
        if matches!(t.phase, Phase::Voting) {
            let rec = LogRecord::Decided {
                tx,
                decision: Decision::Abort,
                coordinator: t.coordinator.clone(),
                participants: t.participants.clone(),
            };
            self.log.append(rec, true, out);
            t.phase = Phase::Decided(Decision::Abort);
            out.emit(CommitEvent::Decided {
                tx,
                decision: Decision::Abort,
            });
        }
    }

    fn on_inquire(
        &mut self,
        tx: TxId,
        from: Id,
        coordinator: Id,
        participants: Vec<Id>,
        out: &mut Out<Id>,
    ) {
        let me = self.me().clone();
        match self.txs.get(&tx).map(|t| t.phase) {
            Some(Phase::Decided(d)) => {
                out.send(from, TwoPhaseMsg::Decision { tx, decision: d });
            }
            // Uncertain, or still collecting votes: nothing to say.
            Some(Phase::Ready | Phase::Collecting | Phase::PreCommitting | Phase::PreCommitted) => {
            }
            None if coordinator == me => {
                // No record at the coordinator: presumed abort (presumed
                // nothing always has a record of a begun transaction).
                out.send(
                    from,
                    TwoPhaseMsg::Decision {
                        tx,
                        decision: Decision::Abort,
                    },
                );
            }
            None | Some(Phase::Voting) => {
                self.abort_unilaterally(tx, coordinator, participants, out);
                out.send(
                    from,
                    TwoPhaseMsg::Decision {
                        tx,
                        decision: Decision::Abort,
                    },
                );
            }
        }
    }

    fn on_timer_tx(&mut self, now: Duration, tx: TxId, out: &mut Out<Id>) {
        let me = self.me().clone();
        let Some(t) = self.txs.get(&tx) else {
            return;
        };
        let retry = self.config.retry;
        match t.phase {
            Phase::Collecting if now >= t.deadline => {
                self.coordinator_decides(tx, Decision::Abort, out);
            }
            Phase::Collecting => {
                for p in t.participants.iter().filter(|p| !t.votes.contains(*p)) {
                    out.send(
                        p.clone(),
                        TwoPhaseMsg::Prepare {
                            tx,
                            participants: t.participants.clone(),
                        },
                    );
                }
                out.set_timer(retry, TwoPhaseTimer::Tx(tx));
            }
            Phase::Decided(d) if t.coordinator == me && !t.ended => {
                for p in t.participants.iter().filter(|p| !t.acks.contains(*p)) {
                    out.send(p.clone(), TwoPhaseMsg::Decision { tx, decision: d });
                }
                out.set_timer(retry, TwoPhaseTimer::Tx(tx));
            }
            Phase::Ready => {
                let ask = TwoPhaseMsg::Inquire {
                    tx,
                    coordinator: t.coordinator.clone(),
                    participants: t.participants.clone(),
                };
                out.send(t.coordinator.clone(), ask.clone());
                for p in t.others(&me) {
                    out.send(p.clone(), ask.clone());
                }
                out.set_timer(retry, TwoPhaseTimer::Tx(tx));
            }
            _ => {}
        }
    }
}

impl<Id: MemberId> Protocol for TwoPhase<Id> {
    protocol_types!(TwoPhaseMsg<Id>, TwoPhaseTimer, CommitEvent);

    /// After every input: forget the decided ones among the undecided (the
    /// transactions in flight, so this is cheap).
    fn persist(&mut self, _out: &mut Out<Id>) {
        self.txs.prune();
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
                Phase::Ready => out.set_timer(Duration::ZERO, TwoPhaseTimer::Tx(tx)),
                Phase::Decided(_) if open_coordinator => {
                    self.on_timer_tx(now, tx, out);
                }
                _ => {}
            }
        }
    }

    fn on_message(&mut self, _now: Duration, from: Id, msg: TwoPhaseMsg<Id>, out: &mut Out<Id>) {
        let me = self.me().clone();
        match msg {
            TwoPhaseMsg::Prepare { tx, participants } => {
                if from == me {
                    return;
                }
                match self.txs.get(&tx).map(|t| t.phase) {
                    None => {
                        let ps = clean_participants(&from, participants);
                        self.txs.insert(tx, Tx::new(from, ps, Phase::Voting));
                        out.emit(CommitEvent::Prepare { tx });
                    }
                    Some(Phase::Ready) => out.send(from, TwoPhaseMsg::Vote { tx, yes: true }),
                    Some(Phase::Decided(Decision::Abort)) => {
                        out.send(from, TwoPhaseMsg::Vote { tx, yes: false })
                    }
                    Some(_) => {}
                }
            }
            TwoPhaseMsg::Vote { tx, yes } => {
                let Some(t) = self.txs.get_mut(&tx) else {
                    return;
                };
                if t.phase != Phase::Collecting || !t.participants.contains(&from) {
                    return;
                }
                if !yes {
                    self.coordinator_decides(tx, Decision::Abort, out);
                    return;
                }
                t.votes.insert(from);
                if t.votes.len() == t.participants.len() {
                    self.coordinator_decides(tx, Decision::Commit, out);
                }
            }
            TwoPhaseMsg::Decision { tx, decision } => {
                let coordinator = self.txs.get(&tx).map(|t| t.coordinator == me);
                match coordinator {
                    Some(false) => self.participant_learns(tx, decision, out),
                    // Never voted yes here: acknowledge when asked to.
                    None if self.acknowledged(decision) => {
                        out.send(from, TwoPhaseMsg::Ack { tx });
                    }
                    _ => {}
                }
            }
            TwoPhaseMsg::Ack { tx } => {
                let Some(t) = self.txs.get_mut(&tx) else {
                    return;
                };
                if t.coordinator != me || t.decided().is_none() || t.ended {
                    return;
                }
                t.acks.insert(from);
                if t.participants.iter().all(|p| t.acks.contains(p)) {
                    t.ended = true;
                    self.log.append(LogRecord::End { tx }, false, out);
                    out.cancel_timer(TwoPhaseTimer::Tx(tx));
                }
            }
            TwoPhaseMsg::Inquire {
                tx,
                coordinator,
                participants,
            } => self.on_inquire(tx, from, coordinator, participants, out),
        }
    }

    fn on_timer(&mut self, now: Duration, timer: TwoPhaseTimer, out: &mut Out<Id>) {
        let TwoPhaseTimer::Tx(tx) = timer;
        self.on_timer_tx(now, tx, out);
    }
}

impl<Id: MemberId> CommitCore for TwoPhase<Id> {
    fn begin(&mut self, tx: TxId, participants: Vec<Id>, now: Duration, out: &mut Out<Id>) {
        if self.txs.contains_key(&tx) {
            return;
        }
        let me = self.me().clone();
        let ps = clean_participants(&me, participants);
        if !self.config.presumed_abort {
            let rec = LogRecord::Begin {
                tx,
                participants: ps.clone(),
            };
            self.log.append(rec, true, out);
        }
        let mut t = Tx::new(me, ps, Phase::Collecting);
        t.deadline = now + self.config.vote_timeout;
        self.txs.insert(tx, t);
        if self.txs[&tx].participants.is_empty() {
            self.coordinator_decides(tx, Decision::Commit, out);
            return;
        }
        self.on_timer_tx(now, tx, out);
    }

    fn vote(&mut self, tx: TxId, yes: bool, _now: Duration, out: &mut Out<Id>) {
        let Some(t) = self.txs.get_mut(&tx) else {
            return;
        };
        if t.phase != Phase::Voting {
            return;
        }
        let coordinator = t.coordinator.clone();
        if yes {
            let rec = LogRecord::Ready {
                tx,
                coordinator: coordinator.clone(),
                participants: t.participants.clone(),
            };
            self.log.append(rec, true, out);
            t.phase = Phase::Ready;
            out.send(coordinator, TwoPhaseMsg::Vote { tx, yes: true });
            out.set_timer(self.config.decision_timeout, TwoPhaseTimer::Tx(tx));
        } else {
            let forced = !self.config.presumed_abort;
            let rec = LogRecord::Decided {
                tx,
                decision: Decision::Abort,
                coordinator: coordinator.clone(),
                participants: t.participants.clone(),
            };
            self.log.append(rec, forced, out);
            t.phase = Phase::Decided(Decision::Abort);
            out.emit(CommitEvent::Decided {
                tx,
                decision: Decision::Abort,
            });
            out.send(coordinator, TwoPhaseMsg::Vote { tx, yes: false });
        }
    }

    fn status(&self, tx: TxId) -> Option<TxStatus> {
        self.txs.status(self.me(), tx)
    }

    fn log_stats(&self) -> LogStats {
        self.log.stats
    }

    fn transactions(&self) -> std::collections::BTreeMap<TxId, TxStatus> {
        self.txs.transactions(self.me())
    }

    fn pending(&self) -> std::collections::BTreeSet<TxId> {
        self.txs.pending()
    }
}

impl<Id: MemberId> SnapshotCore for TwoPhase<Id> {
    type State = CommitDurable<Id>;
    fn state(&self) -> CommitDurable<Id> {
        self.log.clone()
    }
    fn recover(
        r: &troupe_framework::sansio::Recovered,
    ) -> Result<Option<Self::State>, troupe_framework::sansio::DurableError> {
        CommitDurable::recover(r)
    }
}

impl<Id: MemberId> SimProtocol for TwoPhase<Id> {}
