//! What both commit cores are made of: the per-transaction state
//! (`Tx`, `TxBook`), the messages both exchange (`Prepare`, `Vote`,
//! `Decision`, `Ack`, `Inquire`: [`TxMsg`], declared with
//! `tx_messages!`), one timer ([`TxTimer`]), and the generic core
//! [`Commit`] — group, settings, log and transactions around the
//! algorithm's own state — with the handling both algorithms share
//! (voting, deciding, learning a decision, answering an inquiry, sending
//! again) and the [`CommitCore`], [`SnapshotCore`] and [`SimProtocol`]
//! implementations written once.

use std::collections::{BTreeMap, BTreeSet};
use std::fmt::Debug;
use std::time::Duration;

use troupe_framework::sansio::{DurableError, Outputs, Protocol, Recovered, Settles, SnapshotCore};

use super::{
    log, CommitConfig, CommitCore, CommitDurable, CommitEvent, Decision, LogRecord, LogStats,
    Phase, TxId, TxStatus,
};
use crate::driver::OutputsOf;
use crate::election::bully::BullyTimer;
use crate::group::Group;
use crate::testkit::SimProtocol;
use crate::MemberId;

/// A commit core's timers: one per transaction (retries, vote timeout,
/// decision timeout), and 3PC's own.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum TxTimer {
    /// Something of `tx` may need doing again.
    Tx(TxId),
    /// 3PC: the termination round this node runs for `tx` may need doing
    /// again.
    Round(TxId),
    /// 3PC: a timer of the embedded election.
    Election(BullyTimer),
}

/// The messages both commit algorithms exchange, built by the shared
/// handling of [`Commit`] (implemented by `tx_messages!`).
pub trait TxMsg<Id>: Clone {
    /// Coordinator to participant: vote on `tx`; `floor` is the
    /// coordinator's floor (see [`CommitDurable::floors`]).
    fn prepare(tx: TxId, participants: Vec<Id>, floor: TxId) -> Self;
    /// Participant to coordinator: its vote.
    fn vote(tx: TxId, yes: bool) -> Self;
    /// The decision.
    fn decision(tx: TxId, decision: Decision) -> Self;
    /// Participant to coordinator: the decision is durable here.
    fn ack(tx: TxId) -> Self;
    /// An undecided node asks what was decided.
    fn inquire(tx: TxId, coordinator: Id, participants: Vec<Id>) -> Self;
    /// The message as one `Commit::on_shared` handles, or itself when it
    /// is the algorithm's to handle.
    fn shared(self) -> Result<SharedMsg<Id>, Self>;
}

/// The messages every commit algorithm handles alike
/// (`Commit::on_shared`); see the algorithms' message enums.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SharedMsg<Id> {
    /// Coordinator to participant: vote on `tx`.
    Prepare {
        /// The transaction.
        tx: TxId,
        /// Every participant.
        participants: Vec<Id>,
        /// The coordinator's floor.
        floor: TxId,
    },
    /// Participant to coordinator: the decision is durable here.
    Ack {
        /// The transaction.
        tx: TxId,
    },
    /// An undecided node asks what was decided.
    Inquire {
        /// The transaction.
        tx: TxId,
        /// Its coordinator.
        coordinator: Id,
        /// Its participants.
        participants: Vec<Id>,
    },
}

/// Declare a commit algorithm's wire message enum: the messages every
/// commit algorithm exchanges (`Prepare`, `Vote`, `Decision`, `Ack`,
/// `Inquire`, encoded by variant name), then the algorithm's own, and its
/// [`TxMsg`] implementation.
macro_rules! tx_messages {
    (
        $(#[$meta:meta])*
        pub enum $name:ident<Id> { $($own:tt)* }
    ) => {
        $(#[$meta])*
        #[derive(Debug, Clone, PartialEq, Eq, ::serde::Serialize, ::serde::Deserialize)]
        pub enum $name<Id> {
            /// Coordinator to participant: vote on `tx`.
            Prepare {
                /// The transaction.
                tx: $crate::commit::TxId,
                /// Every participant (for termination).
                participants: Vec<Id>,
                /// The coordinator's floor: each of its transactions below
                /// it is ended (see [`CommitDurable`](crate::commit::CommitDurable)'s
                /// `floors`).
                floor: $crate::commit::TxId,
            },
            /// Participant to coordinator: its vote.
            Vote {
                /// The transaction.
                tx: $crate::commit::TxId,
                /// Yes or no.
                yes: bool,
            },
            /// The decision (from the coordinator, or from any node that
            /// knows it).
            Decision {
                /// The transaction.
                tx: $crate::commit::TxId,
                /// The outcome.
                decision: $crate::commit::Decision,
            },
            /// Participant to coordinator: the decision is durable here.
            Ack {
                /// The transaction.
                tx: $crate::commit::TxId,
            },
            /// An undecided node asks what was decided.
            Inquire {
                /// The transaction.
                tx: $crate::commit::TxId,
                /// Its coordinator.
                coordinator: Id,
                /// Its participants.
                participants: Vec<Id>,
            },
            $($own)*
        }

        impl<Id: Clone> $crate::commit::base::TxMsg<Id> for $name<Id> {
            fn prepare(
                tx: $crate::commit::TxId,
                participants: Vec<Id>,
                floor: $crate::commit::TxId,
            ) -> Self {
                Self::Prepare { tx, participants, floor }
            }
            fn vote(tx: $crate::commit::TxId, yes: bool) -> Self {
                Self::Vote { tx, yes }
            }
            fn decision(tx: $crate::commit::TxId, decision: $crate::commit::Decision) -> Self {
                Self::Decision { tx, decision }
            }
            fn ack(tx: $crate::commit::TxId) -> Self {
                Self::Ack { tx }
            }
            fn inquire(tx: $crate::commit::TxId, coordinator: Id, participants: Vec<Id>) -> Self {
                Self::Inquire { tx, coordinator, participants }
            }
            fn shared(self) -> Result<$crate::commit::base::SharedMsg<Id>, Self> {
                use $crate::commit::base::SharedMsg;
                match self {
                    Self::Prepare { tx, participants, floor } => {
                        Ok(SharedMsg::Prepare { tx, participants, floor })
                    }
                    Self::Ack { tx } => Ok(SharedMsg::Ack { tx }),
                    Self::Inquire { tx, coordinator, participants } => {
                        Ok(SharedMsg::Inquire { tx, coordinator, participants })
                    }
                    own => Err(own),
                }
            }
        }
    };
}
pub(crate) use tx_messages;

/// One transaction at one node: the state both cores keep.
#[derive(Debug, Clone)]
pub(crate) struct Tx<Id> {
    pub(crate) coordinator: Id,
    /// Sorted, without the coordinator.
    pub(crate) participants: Vec<Id>,
    pub(crate) phase: Phase,
    /// Coordinator: participants that voted yes (or acknowledged the
    /// pre-commit, 3PC).
    pub(crate) votes: BTreeSet<Id>,
    /// Coordinator: participants that acknowledged the decision.
    pub(crate) acks: BTreeSet<Id>,
    /// Coordinator: when it stops waiting for votes.
    pub(crate) deadline: Duration,
    /// See [`TxStatus::active`].
    pub(crate) active: bool,
    /// 3PC: the termination round this node joined (0: none).
    pub(crate) round: u64,
    /// Coordinator: `End` logged.
    pub(crate) ended: bool,
    /// Participant: the resource manager applied the decision (in this
    /// life): see [`CommitCore::applied`].
    pub(crate) applied: bool,
    /// Coordinator: a command awaits the decision (see
    /// [`CommitCore::await_decision`]).
    pub(crate) awaited: bool,
}

impl<Id: Clone + Ord> Tx<Id> {
    /// The log record of this transaction decided `decision`.
    fn decided_record(&self, tx: TxId, decision: Decision) -> LogRecord<Id> {
        LogRecord::Decided {
            tx,
            decision,
            coordinator: self.coordinator.clone(),
            participants: self.participants.clone(),
        }
    }

    pub(crate) fn new(coordinator: Id, participants: Vec<Id>, phase: Phase) -> Self {
        Self {
            coordinator,
            participants,
            phase,
            votes: BTreeSet::new(),
            acks: BTreeSet::new(),
            deadline: Duration::ZERO,
            active: true,
            round: 0,
            ended: false,
            applied: false,
            awaited: false,
        }
    }
    pub(crate) fn decided(&self) -> Option<Decision> {
        match self.phase {
            Phase::Decided(d) => Some(d),
            _ => None,
        }
    }
    pub(crate) fn status(&self, me: &Id) -> TxStatus {
        TxStatus {
            coordinator: self.coordinator == *me,
            phase: self.phase,
            active: self.active,
        }
    }
    /// The participants other than `me`.
    pub(crate) fn others<'a>(&'a self, me: &'a Id) -> impl Iterator<Item = &'a Id> + 'a {
        self.participants.iter().filter(move |p| *p != me)
    }
}

impl<Id: MemberId> Tx<Id> {
    /// Renamed (see [`Commit::renamed`]).
    pub(crate) fn renamed(&self, r: &crate::testkit::model::Renaming<'_, Id>) -> Self {
        let mut participants: Vec<Id> = self.participants.iter().map(|p| r.id(p)).collect();
        participants.sort();
        Self {
            coordinator: r.id(&self.coordinator),
            participants,
            phase: self.phase,
            votes: self.votes.iter().map(|p| r.id(p)).collect(),
            acks: self.acks.iter().map(|p| r.id(p)).collect(),
            deadline: self.deadline,
            active: self.active,
            round: self.round,
            ended: self.ended,
            applied: self.applied,
            awaited: self.awaited,
        }
    }
}

impl<Id: MemberId> TxBook<Id> {
    /// Renamed (see [`Commit::renamed`]).
    pub(crate) fn renamed(&self, r: &crate::testkit::model::Renaming<'_, Id>) -> Self {
        Self {
            txs: self.txs.iter().map(|(tx, t)| (*tx, t.renamed(r))).collect(),
            undecided: self.undecided.clone(),
            own: self.own.clone(),
            own_next: self.own_next,
            settled: self
                .settled
                .iter()
                .map(|(c, s)| (r.id(c), s.clone()))
                .collect(),
            done: self.done.clone(),
        }
    }
}

impl<Id: MemberId, A: Clone> Commit<Id, A> {
    /// The core as it is with every member `m` called `r.to(m)`, given
    /// its algorithm's own state already renamed (`alg`), for the model
    /// checker's symmetry reduction; `None` if its log cannot be renamed
    /// ([`CommitDurable::renamed`]).
    pub(crate) fn renamed_with(
        &self,
        r: &crate::testkit::model::Renaming<'_, Id>,
        alg: A,
    ) -> Option<Self> {
        Some(Self {
            group: self.group.renamed(r),
            config: self.config.clone(),
            log: self.log.renamed(r)?,
            txs: self.txs.renamed(r),
            alg,
            settled: self.settled.clone(),
        })
    }
}

/// Sorted, deduplicated participants without `coordinator`.
pub(crate) fn clean_participants<Id: Ord>(coordinator: &Id, mut ps: Vec<Id>) -> Vec<Id> {
    ps.sort();
    ps.dedup();
    ps.retain(|p| p != coordinator);
    ps
}

/// A core's transactions, with the set of the undecided ones (kept
/// exactly: a transaction leaves it when it is decided, see
/// [`TxBook::decided`]), so the family view costs O(transactions in
/// flight) per input, not O(every transaction ever);
/// and what forgetting needs: this node's own open transactions (its
/// floor), the decided ones it takes part in by coordinator (waiting for
/// that coordinator's floor), and the ones it may forget.
/// Derefs to the map; [`TxBook::insert`] and [`TxBook::get_or_insert`]
/// are the ways in (the commit checker asserts `pending` at every step).
#[derive(Debug, Clone)]
pub(crate) struct TxBook<Id> {
    txs: BTreeMap<TxId, Tx<Id>>,
    undecided: BTreeSet<TxId>,
    /// Coordinator: its transactions not ended yet (the lowest is its
    /// floor).
    own: BTreeSet<TxId>,
    /// Coordinator: one above the highest transaction it began (or the
    /// floor it announced before a restart).
    own_next: TxId,
    /// Participant: decided transactions, by coordinator, kept until that
    /// coordinator's floor passes them.
    settled: BTreeMap<Id, BTreeSet<TxId>>,
    /// Transactions nobody can need any more: forgotten at the next
    /// compaction.
    done: Vec<TxId>,
}

impl<Id: Clone + Ord> TxBook<Id> {
    /// The transactions `durable` describes, taken up by `me` after a
    /// restart (see [`resume`]).
    pub(crate) fn resume(me: &Id, durable: &CommitDurable<Id>) -> Self {
        let txs = resume(me, durable);
        let mut book = Self {
            txs: BTreeMap::new(),
            undecided: BTreeSet::new(),
            own: BTreeSet::new(),
            own_next: durable.floor(me),
            settled: BTreeMap::new(),
            done: Vec::new(),
        };
        for (tx, t) in &txs {
            if t.coordinator == *me {
                book.own_next = book.own_next.max(tx + 1);
                // An ended one is forgotten once its user applied it
                // again (see `CommitCore::applied`).
                if !t.ended {
                    book.own.insert(*tx);
                }
            }
            if t.decided().is_none() {
                book.undecided.insert(*tx);
            }
        }
        book.txs = txs;
        book
    }

    /// Participant: `tx` of `coordinator` is decided and applied here;
    /// forget it once the coordinator's floor is above it.
    fn settle(&mut self, tx: TxId, coordinator: &Id, floor: TxId) {
        if tx < floor {
            self.done.push(tx);
        } else {
            self.settled
                .entry(coordinator.clone())
                .or_default()
                .insert(tx);
        }
    }

    /// `coordinator`'s floor rose to `floor`: the decided transactions
    /// below it may be forgotten.
    fn floor_rose(&mut self, coordinator: &Id, floor: TxId) {
        if let Some(s) = self.settled.get_mut(coordinator) {
            let above = s.split_off(&floor);
            self.done.extend(std::mem::replace(s, above));
            if s.is_empty() {
                self.settled.remove(coordinator);
            }
        }
    }

    /// Coordinator: `tx` began here.
    fn began(&mut self, tx: TxId) {
        self.own.insert(tx);
        self.own_next = self.own_next.max(tx + 1);
    }

    /// Coordinator: `tx` ended (every participant has the decision, or it
    /// is a presumed abort): mark it, and forget it at the next compaction.
    pub(crate) fn end(&mut self, tx: TxId) {
        if let Some(t) = self.txs.get_mut(&tx) {
            if !t.ended {
                t.ended = true;
                self.own.remove(&tx);
                if t.applied {
                    self.done.push(tx);
                }
            }
        }
    }

    /// The floor this node announces as a coordinator: every transaction
    /// it began below it is ended.
    pub(crate) fn own_floor(&self) -> TxId {
        self.own.first().copied().unwrap_or(self.own_next)
    }

    /// Add (or replace) `tx`.
    pub(crate) fn insert(&mut self, tx: TxId, t: Tx<Id>) {
        if t.decided().is_none() {
            self.undecided.insert(tx);
        } else {
            self.undecided.remove(&tx);
        }
        self.txs.insert(tx, t);
    }

    /// `tx`, added as `new()` if unknown.
    pub(crate) fn get_or_insert(&mut self, tx: TxId, new: impl FnOnce() -> Tx<Id>) -> &mut Tx<Id> {
        let t = self.txs.entry(tx).or_insert_with(new);
        if t.decided().is_none() {
            self.undecided.insert(tx);
        }
        t
    }

    /// `tx` was just decided (the only way a transaction's phase becomes
    /// `Decided`: [`Commit::decide`]).
    pub(crate) fn decided(&mut self, tx: TxId) {
        self.undecided.remove(&tx);
    }

    /// `tx`'s status as `me` sees it.
    pub(crate) fn status(&self, me: &Id, tx: TxId) -> Option<TxStatus> {
        self.txs.get(&tx).map(|t| t.status(me))
    }

    /// Every transaction with its status.
    pub(crate) fn transactions(&self, me: &Id) -> BTreeMap<TxId, TxStatus> {
        self.txs.iter().map(|(tx, t)| (*tx, t.status(me))).collect()
    }

    /// The undecided transactions.
    pub(crate) fn pending(&self) -> BTreeSet<TxId> {
        self.undecided.clone()
    }
}

impl<Id> std::ops::Deref for TxBook<Id> {
    type Target = BTreeMap<TxId, Tx<Id>>;
    fn deref(&self) -> &Self::Target {
        &self.txs
    }
}

impl<Id> std::ops::DerefMut for TxBook<Id> {
    fn deref_mut(&mut self) -> &mut Self::Target {
        &mut self.txs
    }
}

/// The transactions a log describes, as a restarted core takes them up:
/// every undecided one inactive (see [`TxStatus::active`]).
pub(crate) fn resume<Id: Clone + Ord>(
    me: &Id,
    durable: &CommitDurable<Id>,
) -> BTreeMap<TxId, Tx<Id>> {
    let mut txs = BTreeMap::new();
    for (tx, rec) in &durable.txs {
        let Some(stage) = rec.stage else {
            // Only a `Joined`: a participant that knows nothing else.
            continue;
        };
        let coordinator = rec.coordinator.clone().unwrap_or_else(|| me.clone());
        let mine = coordinator == *me;
        let phase = match stage {
            log::Stage::Begun => Phase::Collecting,
            log::Stage::Ready => Phase::Ready,
            log::Stage::PreCommitted if mine => Phase::PreCommitting,
            log::Stage::PreCommitted => Phase::PreCommitted,
            log::Stage::Decided(d) => Phase::Decided(d),
        };
        let mut t = Tx::new(coordinator, rec.participants.clone(), phase);
        t.active = matches!(phase, Phase::Decided(_));
        t.round = rec.round;
        t.ended = rec.ended;
        txs.insert(*tx, t);
    }
    txs
}

/// A commit algorithm's own state: what its [`Commit`] keeps besides the
/// group, the settings, the log and the transactions, and the few rules in
/// which the algorithms differ.
pub trait CommitState<Id>: Clone + Debug {
    /// The state the member of `group` starts with, after a previous life
    /// made `durable` durable (the default value on a first start).
    fn open(group: &Group<Id>, config: &CommitConfig, durable: &CommitDurable<Id>) -> Self;
    /// True when the algorithm presumes abort whatever
    /// [`CommitConfig::presumed_abort`] says.
    const ALWAYS_PRESUMES_ABORT: bool = false;
    /// How long a participant that voted yes waits for the decision before
    /// it acts without the coordinator (its transaction's deadline); `None`:
    /// it never does. Default: `None`.
    fn patience(config: &CommitConfig) -> Option<Duration> {
        let _ = config;
        None
    }
    /// `tx` was decided here: forget what was kept for deciding it.
    /// Default: nothing kept.
    fn decided(&mut self, tx: TxId) {
        let _ = tx;
    }
}

/// Compact the log once this many transactions (and at least as many as
/// are still known) can be forgotten, unless the configuration says
/// otherwise ([`CommitConfig::compact_every`]).
pub const COMPACT_EVERY: u32 = 256;

/// What one algorithm's commit core does its own way; [`Commit`] does the
/// rest of [`CommitCore`] with them.
pub trait CommitRules: Protocol<Event = CommitEvent, Timer = TxTimer> {
    /// Coordinator: decide `tx`, log as the algorithm's rules say, tell
    /// every participant.
    fn coordinator_decides(&mut self, tx: TxId, d: Decision, out: &mut OutputsOf<Self>);
    /// `tx`'s timer fired, and it is not the coordinator's to abort on its
    /// vote timeout or to send `Prepare` or the decision again (what
    /// [`Commit`] does): do what the algorithm does again (an uncertain
    /// participant asks around).
    fn on_own_timer(&mut self, now: Duration, tx: TxId, out: &mut OutputsOf<Self>);
}

/// The outputs of a commit core with messages `M`.
type TxOut<Id, M> = Outputs<Id, M, TxTimer, CommitEvent>;

/// A commit core: what both algorithms keep — the group, the settings,
/// the log and the transactions — around the algorithm's own state `A`.
/// [`TwoPhase`](super::TwoPhase) and [`ThreePhase`](super::ThreePhase) are
/// commit cores of their algorithm's state; each implements [`Protocol`]
/// and [`CommitRules`], and every commit core is a [`CommitCore`], a
/// [`SnapshotCore`] and a [`SimProtocol`].
#[derive(Debug, Clone)]
pub struct Commit<Id, A> {
    pub(crate) group: Group<Id>,
    pub(crate) config: CommitConfig,
    pub(crate) log: CommitDurable<Id>,
    pub(crate) txs: TxBook<Id>,
    pub(crate) alg: A,
    /// Decisions awaited by a command, not yet taken by the driver (see
    /// [`Settles`]).
    pub(crate) settled: Vec<(TxId, Decision)>,
}

impl<Id: MemberId, A: CommitState<Id>> Commit<Id, A> {
    /// A core for `me` among `members`, restarted from `durable` if given.
    pub fn new(
        me: Id,
        members: impl IntoIterator<Item = Id>,
        config: CommitConfig,
        durable: Option<CommitDurable<Id>>,
    ) -> Self {
        let log = durable.unwrap_or_default();
        let txs = TxBook::resume(&me, &log);
        let group = Group::new(me, members);
        let alg = A::open(&group, &config, &log);
        Self {
            group,
            config,
            log,
            txs,
            alg,
            settled: Vec::new(),
        }
    }

    pub(crate) fn me(&self) -> &Id {
        self.group.me()
    }

    /// True when this node has no record of `tx` (of `coordinator`)
    /// because it forgot it, or never will hear of it: `tx` is below the
    /// coordinator's floor (for this node's own transactions: below the
    /// next id it expects). A message about it is stale: it is neither
    /// started nor decided again here.
    pub fn forgot(&self, coordinator: &Id, tx: TxId) -> bool {
        if self.txs.contains_key(&tx) {
            return false;
        }
        if coordinator == self.me() {
            tx < self.txs.own_next && !self.txs.own.contains(&tx)
        } else {
            tx < self.log.floor(coordinator)
        }
    }

    /// After every input: once enough transactions may be forgotten (see
    /// [`COMPACT_EVERY`]), forget them and compact the log.
    pub(crate) fn tidy<M>(&mut self, out: &mut TxOut<Id, M>) {
        let done = self.txs.done.len();
        let every = self.config.compact_every.max(1) as usize;
        if done < every || done < self.txs.len() - done {
            return;
        }
        for tx in std::mem::take(&mut self.txs.done) {
            self.txs.remove(&tx);
            self.log.forget(tx);
        }
        let me = self.me().clone();
        let floor = self.txs.own_floor();
        self.log.raise_floor(&me, floor);
        self.log.compact(out);
    }

    /// Does the algorithm, so configured, presume abort?
    fn presumed_abort(&self) -> bool {
        A::ALWAYS_PRESUMES_ABORT || self.config.presumed_abort
    }

    /// Does `d` need acknowledging (and a forced record)? A presumed abort
    /// does not.
    pub(crate) fn acknowledged(&self, d: Decision) -> bool {
        d == Decision::Commit || !self.presumed_abort()
    }

    /// Append the record `make` builds from `tx` (if known) to the log.
    pub(crate) fn record<M>(
        &mut self,
        tx: TxId,
        forced: bool,
        make: impl FnOnce(&Tx<Id>) -> LogRecord<Id>,
        out: &mut TxOut<Id, M>,
    ) {
        if let Some(t) = self.txs.get(&tx) {
            let rec = make(t);
            self.log.append(rec, forced, out);
        }
    }

    /// Decide `tx` here (any role): log it (`log`: `Some(forced)`, or
    /// `None` for a presumed abort), tell the user. Returns false when `tx`
    /// is unknown or was decided already.
    pub(crate) fn decide<M>(
        &mut self,
        tx: TxId,
        d: Decision,
        log: Option<bool>,
        out: &mut TxOut<Id, M>,
    ) -> bool {
        let Some(t) = self.txs.get_mut(&tx) else {
            return false;
        };
        if t.decided().is_some() {
            return false;
        }
        if let Some(forced) = log {
            self.log.append(t.decided_record(tx, d), forced, out);
        }
        t.phase = Phase::Decided(d);
        if std::mem::take(&mut t.awaited) {
            self.settled.push((tx, d));
        }
        self.txs.decided(tx);
        self.alg.decided(tx);
        out.emit(CommitEvent::Decided { tx, decision: d });
        true
    }

    /// Coordinator, once `tx` is decided `d`: tell every participant; then
    /// send it again until every participant acknowledged (`wait`), or end
    /// the transaction.
    pub(crate) fn announce<M: TxMsg<Id>>(
        &mut self,
        tx: TxId,
        d: Decision,
        wait: bool,
        out: &mut TxOut<Id, M>,
    ) {
        let Some(t) = self.txs.get_mut(&tx) else {
            return;
        };
        t.acks.clear();
        for p in &t.participants {
            out.send(p.clone(), M::decision(tx, d));
        }
        if wait {
            out.set_timer(self.config.retry, TxTimer::Tx(tx));
            return;
        }
        // Ended without acknowledgements (a presumed abort, or no
        // participant). If the log holds anything of `tx` (3PC's
        // `PreCommit`, a logged commit), the decision and `End` go in too,
        // lazily: a restart must find it ended, since its floor passes it.
        let logged = self.log.txs.get(&tx).map(|r| (r.stage, r.ended));
        if let Some((stage, false)) = logged {
            if stage != Some(log::Stage::Decided(d)) {
                self.log.append(t.decided_record(tx, d), false, out);
            }
            self.log.append(LogRecord::End { tx }, false, out);
        }
        self.txs.end(tx);
        out.cancel_timer(TxTimer::Tx(tx));
    }

    /// Participant: `d` was decided; make it durable (forced when it is
    /// acknowledged, `ack`), tell the user, acknowledge it to the
    /// coordinator.
    pub(crate) fn learn<M: TxMsg<Id>>(
        &mut self,
        tx: TxId,
        d: Decision,
        ack: bool,
        out: &mut TxOut<Id, M>,
    ) {
        let Some(coordinator) = self.txs.get(&tx).map(|t| t.coordinator.clone()) else {
            return;
        };
        if self.decide(tx, d, Some(ack), out) {
            out.cancel_timer(TxTimer::Tx(tx));
        }
        if ack && self.txs.get(&tx).and_then(Tx::decided) == Some(d) {
            out.send(coordinator, M::ack(tx));
        }
    }

    /// A participant that has not voted yes aborts on its own, durably
    /// (forced: it is about to tell someone).
    pub(crate) fn abort_unilaterally<M>(
        &mut self,
        tx: TxId,
        coordinator: Id,
        participants: Vec<Id>,
        out: &mut TxOut<Id, M>,
    ) {
        if self.forgot(&coordinator, tx) {
            // Decided and forgotten here: never decided again.
            return;
        }
        let ps = clean_participants(&coordinator, participants);
        let t = self
            .txs
            .get_or_insert(tx, || Tx::new(coordinator, ps, Phase::Voting));
        if t.phase == Phase::Voting {
            // A presumed abort is not logged by the coordinator.
            let log = (t.coordinator != *self.group.me()).then_some(true);
            self.decide(tx, Decision::Abort, log, out);
        }
    }

    /// Answer `from`'s `Inquire` about `tx`: the decision if known here; a
    /// coordinator with no record presumes abort (it forgets a commit only
    /// once every participant acknowledged it, so no one can still need
    /// it); a participant that forgot `tx` (see [`Commit::forgot`]) or an
    /// uncertain one has nothing to say; one that has not voted yes aborts.
    fn on_inquire<M: TxMsg<Id>>(
        &mut self,
        tx: TxId,
        from: Id,
        coordinator: Id,
        participants: Vec<Id>,
        out: &mut TxOut<Id, M>,
    ) {
        let abort = M::decision(tx, Decision::Abort);
        match self.txs.get(&tx).map(|t| t.phase) {
            Some(Phase::Decided(d)) => out.send(from, M::decision(tx, d)),
            None if coordinator == *self.me() => out.send(from, abort),
            None if self.forgot(&coordinator, tx) => {}
            None | Some(Phase::Voting) => {
                self.abort_unilaterally(tx, coordinator, participants, out);
                out.send(from, abort);
            }
            Some(_) => {}
        }
    }

    /// Handle `msg` from `from` if every algorithm handles it alike
    /// (`Prepare`, `Ack`, `Inquire`); otherwise give both back.
    pub(crate) fn on_shared<M: TxMsg<Id>>(
        &mut self,
        from: Id,
        msg: M,
        out: &mut TxOut<Id, M>,
    ) -> Option<(Id, M)> {
        match msg.shared() {
            Ok(SharedMsg::Prepare {
                tx,
                participants,
                floor,
            }) => self.on_prepare(tx, from, participants, floor, out),
            Ok(SharedMsg::Ack { tx }) => self.on_ack(tx, from, out),
            Ok(SharedMsg::Inquire {
                tx,
                coordinator,
                participants,
            }) => self.on_inquire(tx, from, coordinator, participants, out),
            Err(own) => return Some((from, own)),
        }
        None
    }

    /// Participant: `from` asks for a vote on `tx` (`Prepare`) and
    /// announces its floor. A new transaction goes to the resource manager
    /// unless it is below the floor (a stale `Prepare`: the coordinator
    /// ended it); a vote already given is sent again.
    fn on_prepare<M: TxMsg<Id>>(
        &mut self,
        tx: TxId,
        from: Id,
        participants: Vec<Id>,
        floor: TxId,
        out: &mut TxOut<Id, M>,
    ) {
        if from == *self.me() {
            return;
        }
        if self.log.raise_floor(&from, floor) {
            self.txs.floor_rose(&from, floor);
        }
        match self.txs.get(&tx).map(|t| t.phase) {
            None if tx < self.log.floor(&from) => {}
            None => {
                let ps = clean_participants(&from, participants);
                self.txs.insert(tx, Tx::new(from, ps, Phase::Voting));
                out.emit(CommitEvent::Prepare { tx });
            }
            Some(Phase::Ready) => out.send(from, M::vote(tx, true)),
            Some(Phase::Decided(Decision::Abort)) => out.send(from, M::vote(tx, false)),
            Some(_) => {}
        }
    }

    /// Coordinator: `from` acknowledged the decision on `tx`; once every
    /// participant did, log `End` (lazily).
    fn on_ack<M>(&mut self, tx: TxId, from: Id, out: &mut TxOut<Id, M>) {
        let me = self.me().clone();
        let Some(t) = self.txs.get_mut(&tx) else {
            return;
        };
        if t.coordinator != me || t.decided().is_none() || t.ended {
            return;
        }
        t.acks.insert(from);
        if t.participants.iter().all(|p| t.acks.contains(p)) {
            self.txs.end(tx);
            self.log.append(LogRecord::End { tx }, false, out);
            out.cancel_timer(TxTimer::Tx(tx));
        }
    }

    /// Coordinator: `from`'s answer (`yes` or no) while `tx` is in `phase`
    /// (votes while collecting, 3PC pre-commit acknowledgements while
    /// pre-committing). `Some(Decision::Commit)` once every participant
    /// answered yes, `Some(Decision::Abort)` on a no, `None` otherwise (and
    /// for an answer out of place).
    pub(crate) fn tally(
        &mut self,
        tx: TxId,
        from: Id,
        phase: Phase,
        yes: bool,
    ) -> Option<Decision> {
        let t = self.txs.get_mut(&tx)?;
        if t.phase != phase || !t.participants.contains(&from) {
            return None;
        }
        if !yes {
            return Some(Decision::Abort);
        }
        t.votes.insert(from);
        (t.votes.len() == t.participants.len()).then_some(Decision::Commit)
    }

    /// Coordinator, on `tx`'s timer: send `Prepare` again to the
    /// participants that have not voted, or the decision to those that have
    /// not acknowledged it, and wait again. False when it has nothing of
    /// the kind to send.
    pub(crate) fn resend<M: TxMsg<Id>>(&self, tx: TxId, out: &mut TxOut<Id, M>) -> bool {
        let Some(t) = self.txs.get(&tx) else {
            return false;
        };
        match t.phase {
            Phase::Collecting => {
                let floor = self.txs.own_floor();
                for p in t.participants.iter().filter(|p| !t.votes.contains(*p)) {
                    out.send(p.clone(), M::prepare(tx, t.participants.clone(), floor));
                }
            }
            Phase::Decided(d) if t.coordinator == *self.me() && !t.ended => {
                for p in t.participants.iter().filter(|p| !t.acks.contains(*p)) {
                    out.send(p.clone(), M::decision(tx, d));
                }
            }
            _ => return false,
        }
        out.set_timer(self.config.retry, TxTimer::Tx(tx));
        true
    }

    /// Uncertain participant: ask the coordinator and every other
    /// participant what was decided on `tx`.
    pub(crate) fn inquire<M: TxMsg<Id>>(&self, tx: TxId, out: &mut TxOut<Id, M>) {
        if let Some(t) = self.txs.get(&tx) {
            let ask = M::inquire(tx, t.coordinator.clone(), t.participants.clone());
            self.broadcast(tx, ask, out);
        }
    }

    /// Send `msg` about `tx` to its coordinator (unless it is this node)
    /// and every other participant.
    pub(crate) fn broadcast<M: Clone>(&self, tx: TxId, msg: M, out: &mut TxOut<Id, M>) {
        let me = self.me();
        if let Some(t) = self.txs.get(&tx) {
            if t.coordinator != *me {
                out.send(t.coordinator.clone(), msg.clone());
            }
            for p in t.others(me) {
                out.send(p.clone(), msg.clone());
            }
        }
    }
}

impl<Id: MemberId, A: CommitState<Id>> Commit<Id, A>
where
    Self: CommitRules<Id = Id>,
    <Self as Protocol>::Msg: TxMsg<Id>,
{
    /// `tx`'s timer fired: do again what may need doing. The coordinator
    /// aborts once its vote timeout passed, or sends again what is
    /// unanswered; the rest is the algorithm's.
    pub(crate) fn on_timer_tx(&mut self, now: Duration, tx: TxId, out: &mut OutputsOf<Self>) {
        let Some(t) = self.txs.get(&tx) else {
            return;
        };
        if t.phase == Phase::Collecting && now >= t.deadline {
            self.coordinator_decides(tx, Decision::Abort, out);
        } else if !self.resend(tx, out) {
            self.on_own_timer(now, tx, out);
        }
    }
}

impl<Id: MemberId, A: CommitState<Id>> CommitCore for Commit<Id, A>
where
    Self: CommitRules<Id = Id>,
    <Self as Protocol>::Msg: TxMsg<Id>,
{
    fn begin(&mut self, tx: TxId, participants: Vec<Id>, now: Duration, out: &mut OutputsOf<Self>) {
        let me = self.me().clone();
        if self.txs.contains_key(&tx) || self.forgot(&me, tx) {
            return;
        }
        let ps = clean_participants(&me, participants);
        if !self.presumed_abort() {
            // Presumed nothing: the participant list is durable first.
            let rec = LogRecord::Begin {
                tx,
                participants: ps.clone(),
            };
            self.log.append(rec, true, out);
        }
        let empty = ps.is_empty();
        let mut t = Tx::new(me, ps, Phase::Collecting);
        t.deadline = now + self.config.vote_timeout;
        self.txs.insert(tx, t);
        self.txs.began(tx);
        if empty {
            self.coordinator_decides(tx, Decision::Commit, out);
        } else {
            self.on_timer_tx(now, tx, out);
        }
    }

    fn vote(&mut self, tx: TxId, yes: bool, now: Duration, out: &mut OutputsOf<Self>) {
        let Some(t) = self.txs.get_mut(&tx) else {
            return;
        };
        if t.phase != Phase::Voting {
            return;
        }
        let coordinator = t.coordinator.clone();
        if yes {
            if let Some(patience) = A::patience(&self.config) {
                t.deadline = now + patience;
            }
            t.phase = Phase::Ready;
            let rec = LogRecord::Ready {
                tx,
                coordinator: coordinator.clone(),
                participants: t.participants.clone(),
            };
            self.log.append(rec, true, out);
            out.send(coordinator, TxMsg::vote(tx, true));
            out.set_timer(self.config.decision_timeout, TxTimer::Tx(tx));
        } else {
            let forced = !self.presumed_abort();
            self.decide(tx, Decision::Abort, Some(forced), out);
            out.send(coordinator, TxMsg::vote(tx, false));
        }
    }

    fn status(&self, tx: TxId) -> Option<TxStatus> {
        self.txs.status(self.me(), tx)
    }

    fn log_stats(&self) -> LogStats {
        self.log.stats
    }

    fn transactions(&self) -> BTreeMap<TxId, TxStatus> {
        self.txs.transactions(self.me())
    }

    fn pending(&self) -> BTreeSet<TxId> {
        self.txs.pending()
    }

    fn forgot(&self, coordinator: &Id, tx: TxId) -> bool {
        Commit::forgot(self, coordinator, tx)
    }

    fn reserve(&mut self, tx: TxId, _now: Duration, _out: &mut OutputsOf<Self>) {
        let me = self.me().clone();
        if !self.txs.contains_key(&tx) && !self.forgot(&me, tx) {
            self.txs.own.insert(tx);
        }
    }

    fn release(&mut self, tx: TxId, _now: Duration, _out: &mut OutputsOf<Self>) {
        if !self.txs.contains_key(&tx) {
            self.txs.own.remove(&tx);
        }
    }

    fn await_decision(&mut self, tx: TxId, _now: Duration, _out: &mut OutputsOf<Self>) {
        let me = self.me().clone();
        let Some(t) = self.txs.get_mut(&tx) else {
            return;
        };
        if t.coordinator != me {
            return;
        }
        match t.decided() {
            Some(d) => self.settled.push((tx, d)),
            None => t.awaited = true,
        }
    }

    fn applied(&mut self, tx: TxId, _now: Duration, _out: &mut OutputsOf<Self>) {
        let me = self.me().clone();
        let Some(t) = self.txs.get_mut(&tx) else {
            return;
        };
        if t.applied || t.decided().is_none() {
            return;
        }
        t.applied = true;
        if t.coordinator == me {
            if t.ended {
                self.txs.done.push(tx);
            }
            return;
        }
        let coordinator = t.coordinator.clone();
        let floor = self.log.floor(&coordinator);
        self.txs.settle(tx, &coordinator, floor);
    }
}

impl<Id: MemberId, A: CommitState<Id>> SnapshotCore for Commit<Id, A>
where
    Self: Protocol<Id = Id>,
{
    type State = CommitDurable<Id>;
    fn state(&self) -> CommitDurable<Id> {
        self.log.clone()
    }
    fn recover(r: &Recovered) -> Result<Option<CommitDurable<Id>>, DurableError> {
        CommitDurable::recover(r)
    }
}

impl<Id: MemberId, A: CommitState<Id>> SimProtocol for Commit<Id, A> where Self: Protocol {}

/// A coordinator's decisions settle the commands that await them
/// ([`CommitCore::await_decision`]): token the transaction, settlement its
/// decision.
impl<Id: MemberId, A: CommitState<Id>> Settles for Commit<Id, A>
where
    Self: Protocol,
{
    type Token = TxId;
    type Settled = Decision;
    fn take_settled(&mut self, into: &mut Vec<(TxId, Decision)>) {
        into.append(&mut self.settled);
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;
    use crate::commit::log::LOG;
    use crate::commit::{AnyCommit, Decision};
    use crate::commit::{CommitAlgorithm, CommitConfig};
    use crate::testkit::commit::{apply_decisions, CommitObserver};
    use crate::testkit::{snapshot_sim, NetFaults, OracleConfig, Sim};

    const N: u32 = 3;
    const EVERY: u32 = 16;

    /// Run `count` transactions, `batch` at a time, every vote yes; after
    /// each batch the durable log and the kept transactions of every node
    /// stay under a bound independent of `count`. Node 3 restarts now and
    /// then, from its compacted log.
    fn long_run(algorithm: CommitAlgorithm, count: u64, batch: u64) {
        let config = CommitConfig {
            compact_every: EVERY,
            ..CommitConfig::default()
        };
        let mut sim: Sim<AnyCommit<u32>> = snapshot_sim(
            7,
            N,
            NetFaults::reliable(Duration::from_millis(1)),
            OracleConfig::default(),
            move |id, m, d| AnyCommit::new(algorithm, id, m, config.clone(), d),
        );
        let mut obs = CommitObserver::default();
        sim.start(&mut obs).unwrap();
        let mut next: TxId = 1;
        let mut most_records = 0;
        let mut most_kept = 0;
        let mut applied = std::collections::BTreeSet::new();
        while next <= count {
            let first = next;
            for _ in 0..batch {
                let c = (next % u64::from(N)) as u32 + 1;
                let others: Vec<u32> = (1..=N).filter(|m| *m != c).collect();
                obs.begun(next, c, others.clone());
                let tx = next;
                sim.command(&c, &mut obs, |core, now, o| core.begin(tx, others, now, o))
                    .unwrap();
                next += 1;
            }
            // Let the batch finish, answering every Prepare with yes.
            for _ in 0..10_000 {
                for (node, tx) in obs.take_prepares() {
                    obs.voted(node, tx, true);
                    sim.command(&node, &mut obs, |c, now, o| c.vote(tx, true, now, o))
                        .unwrap();
                }
                if !sim.step(&mut obs).unwrap() {
                    break;
                }
                if (first..next).all(|tx| obs.decision(tx).is_some()) && sim.is_idle() {
                    break;
                }
            }
            for tx in first..next {
                assert_eq!(obs.decision(tx), Some(Decision::Commit), "tx {tx}");
            }
            apply_decisions(&mut sim, &mut obs, &mut applied).unwrap();
            for id in 1..=N {
                let records = sim.disk(&id).map_or(0, |d| d.log(LOG).count());
                let kept = sim.core(&id).map_or(0, |c| c.transactions().len());
                most_records = most_records.max(records);
                most_kept = most_kept.max(kept);
            }
            if next % 97 < batch {
                sim.crash(&3, &mut obs).unwrap();
                sim.restart(&3, &mut obs).unwrap();
            }
            obs.close_decided(&sim);
        }
        // Bounded by the compaction threshold and the batch, not by `count`.
        let bound = 8 * (EVERY as usize + batch as usize);
        assert!(most_records <= bound, "log grew to {most_records} records");
        assert!(most_kept <= bound, "kept {most_kept} transactions");
        let stats: Vec<_> = (1..=N)
            .filter_map(|id| sim.core(&id).map(|c| c.log_stats()))
            .collect();
        assert!(
            stats.iter().all(|s| s.compactions > 0 && s.forgotten > 0),
            "{stats:?}"
        );
    }

    #[test]
    fn a_long_two_phase_run_keeps_the_log_bounded() {
        long_run(CommitAlgorithm::TwoPhase, 2_000, 5);
    }

    #[test]
    fn a_long_three_phase_run_keeps_the_log_bounded() {
        long_run(CommitAlgorithm::ThreePhase, 2_000, 5);
    }
}
