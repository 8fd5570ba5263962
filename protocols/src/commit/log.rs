//! The commit log: the records a commit core appends to its durable log
//! `"commit"`, and [`CommitDurable`], what a restarted core rebuilds from
//! them.
//!
//! Every record is appended through the toolkit's durable writes, so it is
//! on stable storage before any message or event of the same input (or of a
//! later one) leaves: a record is *forced* exactly when the input that
//! appends it also sends something that depends on it. Which records are
//! forced is fixed per protocol (see each core's module header); the
//! `End` record is always lazy (appended in an input that sends nothing).
//!
//! ## Compaction
//! The log stays bounded: a core *forgets* a transaction nobody can still
//! need (see "Forgetting" in the family docs: a coordinator once it ended
//! it, a participant once the coordinator's floor passed it), and once
//! enough are forgotten ([`CommitDurable::compact`]) it rewrites what is
//! left — one `Kept` record per transaction still known, one `Floor` record
//! per coordinator floor — at the tail of the log and truncates everything
//! before (the toolkit's `TruncateBefore`), both in the same input, so a
//! crash keeps either the old log or the new one. The rewrite costs
//! O(transactions still known) and happens once per that many forgotten
//! ones (at least [`super::CommitConfig::compact_every`]), so it is O(1)
//! per transaction; the log holds at most the known transactions' records
//! plus those of the forgotten ones since the last compaction.
use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};
use troupe_framework::sansio::{DurableError, Outputs, Recovered};

use super::{Decision, TxId};
use crate::election::ElectionDurable;

/// The name of the durable log.
pub const LOG: &str = "commit";

/// The key under which 3PC keeps its embedded election's durable state
/// (beside the log, saved whole when it changes).
pub const ELECTION_KEY: &str = "commit.election";

/// One record of the commit log.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum LogRecord<Id> {
    /// Coordinator, presumed-nothing 2PC only: the transaction began, with
    /// these participants (forced before the first `Prepare`).
    Begin {
        /// The transaction.
        tx: TxId,
        /// Its participants.
        participants: Vec<Id>,
    },
    /// Participant: voted yes (forced before the vote leaves).
    Ready {
        /// The transaction.
        tx: TxId,
        /// Its coordinator.
        coordinator: Id,
        /// Its participants.
        participants: Vec<Id>,
    },
    /// 3PC, coordinator or participant: pre-committed (forced before the
    /// `PreCommit` or its acknowledgement leaves).
    PreCommit {
        /// The transaction.
        tx: TxId,
        /// Its coordinator.
        coordinator: Id,
        /// Its participants.
        participants: Vec<Id>,
    },
    /// 3PC participant: joined termination round `round` (forced before its
    /// state report leaves); it ignores older rounds from then on.
    Joined {
        /// The transaction.
        tx: TxId,
        /// The round.
        round: u64,
    },
    /// The decision (forced before it is sent or acknowledged).
    Decided {
        /// The transaction.
        tx: TxId,
        /// What was decided.
        decision: Decision,
        /// Its coordinator.
        coordinator: Id,
        /// Its participants.
        participants: Vec<Id>,
    },
    /// Coordinator: every participant acknowledged the decision (lazy).
    End {
        /// The transaction.
        tx: TxId,
    },
    /// Compaction: what the log said about `tx` when it was rewritten.
    Kept {
        /// The transaction.
        tx: TxId,
        /// Its fold.
        record: TxRecord<Id>,
    },
    /// Compaction: every transaction of `coordinator` below `below` that
    /// this node does not know was forgotten (or never concerned it); see
    /// [`CommitDurable::floors`].
    Floor {
        /// The coordinator.
        coordinator: Id,
        /// Its floor.
        below: TxId,
    },
}

impl<Id> LogRecord<Id> {
    /// The transaction the record is about (`None` for a `Floor`).
    pub fn tx(&self) -> Option<TxId> {
        match self {
            LogRecord::Begin { tx, .. }
            | LogRecord::Ready { tx, .. }
            | LogRecord::PreCommit { tx, .. }
            | LogRecord::Joined { tx, .. }
            | LogRecord::Decided { tx, .. }
            | LogRecord::Kept { tx, .. }
            | LogRecord::End { tx } => Some(*tx),
            LogRecord::Floor { .. } => None,
        }
    }
}

/// How far a transaction got, as the log says.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum Stage {
    /// Begun (coordinator) with no later record.
    Begun,
    /// Voted yes, no later record.
    Ready,
    /// Pre-committed (3PC), no decision.
    PreCommitted,
    /// Decided.
    Decided(Decision),
}

/// What the log says about one transaction.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct TxRecord<Id> {
    /// Its coordinator (`None` for a `Begin`, whose writer is it).
    pub coordinator: Option<Id>,
    /// Its participants (empty when only `Joined` was logged).
    pub participants: Vec<Id>,
    /// How far it got.
    pub stage: Option<Stage>,
    /// The last termination round joined (3PC).
    pub round: u64,
    /// True once the coordinator logged `End`.
    pub ended: bool,
}

/// What a commit core made durable: its log folded per transaction, the
/// coordinators' floors, and the index of the next record. The core keeps
/// the same fold of what it appended (less what it forgot), so
/// [`CommitDurable`] is also its
/// [`SnapshotCore::State`](troupe_framework::sansio::SnapshotCore::State).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(bound(
    serialize = "Id: Serialize",
    deserialize = "Id: Ord + Deserialize<'de>"
))]
pub struct CommitDurable<Id> {
    /// Index of the next record to append.
    pub next: u64,
    /// Per transaction, what its records say.
    pub txs: BTreeMap<TxId, TxRecord<Id>>,
    /// Per coordinator, its floor as last heard (for this node itself: the
    /// floor it announces): every transaction of that coordinator below it
    /// is ended at the coordinator, so one this node does not know is one
    /// it forgot (or never took part in). Only grows. Written at
    /// compaction (only then does a node forget what a floor covers).
    pub floors: BTreeMap<Id, TxId>,
    /// Records appended, by kind: `[forced, lazy]` counts (see
    /// [`LogStats`]); kept in memory only, rebuilt as zero.
    #[serde(skip)]
    pub stats: LogStats,
    /// 3PC: its embedded election's durable state, stored under
    /// [`ELECTION_KEY`] (not in the log; `None` when never saved).
    #[serde(default = "Option::default")]
    pub election: Option<ElectionDurable<Id>>,
}

impl<Id> Default for CommitDurable<Id> {
    fn default() -> Self {
        Self {
            next: 1,
            txs: BTreeMap::new(),
            floors: BTreeMap::new(),
            stats: LogStats::default(),
            election: None,
        }
    }
}

/// Log writes made by one core in its current life.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct LogStats {
    /// Records appended in an input that also sent something depending on
    /// them.
    pub forced: u64,
    /// Records appended lazily (`End`).
    pub lazy: u64,
    /// Compactions made.
    pub compactions: u64,
    /// Records written again by compactions (`Kept`, `Floor`).
    pub rewritten: u64,
    /// Transactions forgotten.
    pub forgotten: u64,
}

impl<Id: Clone + Ord> CommitDurable<Id> {
    /// Fold one record in.
    pub fn apply(&mut self, rec: &LogRecord<Id>) {
        let Some(tx) = rec.tx() else {
            if let LogRecord::Floor { coordinator, below } = rec {
                self.raise_floor(coordinator, *below);
            }
            return;
        };
        if let LogRecord::Kept { record, .. } = rec {
            self.txs.insert(tx, record.clone());
            return;
        }
        let e = self.txs.entry(tx).or_insert_with(|| TxRecord {
            coordinator: None,
            participants: Vec::new(),
            stage: None,
            round: 0,
            ended: false,
        });
        let mut set = |c: &Id, p: &[Id], s: Stage| {
            e.coordinator = Some(c.clone());
            e.participants = p.to_vec();
            e.stage = Some(s);
        };
        match rec {
            LogRecord::Begin { participants, .. } => {
                e.participants = participants.clone();
                e.stage = Some(Stage::Begun);
            }
            LogRecord::Ready {
                coordinator,
                participants,
                ..
            } => set(coordinator, participants, Stage::Ready),
            LogRecord::PreCommit {
                coordinator,
                participants,
                ..
            } => set(coordinator, participants, Stage::PreCommitted),
            LogRecord::Decided {
                decision,
                coordinator,
                participants,
                ..
            } => set(coordinator, participants, Stage::Decided(*decision)),
            LogRecord::Joined { round, .. } => e.round = e.round.max(*round),
            LogRecord::End { .. } => e.ended = true,
            LogRecord::Kept { .. } | LogRecord::Floor { .. } => {}
        }
    }

    /// `coordinator`'s floor as known here (0: none heard).
    pub fn floor(&self, coordinator: &Id) -> TxId {
        self.floors.get(coordinator).copied().unwrap_or(0)
    }

    /// Raise `coordinator`'s floor to `below` (floors only grow); true when
    /// it rose.
    pub fn raise_floor(&mut self, coordinator: &Id, below: TxId) -> bool {
        match self.floors.get_mut(coordinator) {
            Some(f) if *f >= below => false,
            Some(f) => {
                *f = below;
                true
            }
            None if below == 0 => false,
            None => {
                self.floors.insert(coordinator.clone(), below);
                true
            }
        }
    }

    /// Forget `tx`: drop it from the fold (its records leave the log at the
    /// next [`CommitDurable::compact`]).
    pub fn forget(&mut self, tx: TxId) {
        if self.txs.remove(&tx).is_some() {
            self.stats.forgotten += 1;
        }
    }
}

impl<Id: Clone + Ord + Serialize + serde::de::DeserializeOwned> CommitDurable<Id> {
    /// The log a previous life left, with the election state saved beside
    /// it (`None` when it left neither).
    pub fn recover(r: &Recovered) -> Result<Option<Self>, DurableError> {
        let records: Vec<(u64, LogRecord<Id>)> = r.log_as(LOG)?;
        let election: Option<ElectionDurable<Id>> = r.get_as(ELECTION_KEY)?;
        let Some(last) = records.last().map(|(i, _)| *i) else {
            return Ok(election.map(|e| Self {
                election: Some(e),
                ..Self::default()
            }));
        };
        let mut d = Self {
            election,
            ..Self::default()
        };
        for (_, rec) in &records {
            d.apply(rec);
        }
        d.next = last + 1;
        Ok(Some(d))
    }

    /// Rewrite the log as the fold says it now: one `Floor` record per
    /// floor and one `Kept` record per known transaction, appended at the
    /// tail, then every earlier record truncated — in one input, so a
    /// crash keeps the old log or the new one, never a mix. What was
    /// forgotten since the last compaction leaves the disk here.
    pub fn compact<M, T, E>(&mut self, out: &mut Outputs<Id, M, T, E>) {
        let start = self.next;
        let floors = self.floors.iter().map(|(c, below)| LogRecord::Floor {
            coordinator: c.clone(),
            below: *below,
        });
        let kept = self.txs.iter().map(|(tx, r)| LogRecord::Kept {
            tx: *tx,
            record: r.clone(),
        });
        let records: Vec<LogRecord<Id>> = floors.chain(kept).collect();
        out.append(LOG, start, &records);
        out.truncate_before(LOG, start);
        self.next += records.len() as u64;
        self.stats.compactions += 1;
        self.stats.rewritten += records.len() as u64;
    }

    /// Append `rec` to the durable log (`forced`: some send of this input
    /// depends on it) and fold it in.
    pub fn append<M, T, E>(
        &mut self,
        rec: LogRecord<Id>,
        forced: bool,
        out: &mut Outputs<Id, M, T, E>,
    ) {
        out.append(LOG, self.next, std::slice::from_ref(&rec));
        self.next += 1;
        if forced {
            self.stats.forced += 1;
        } else {
            self.stats.lazy += 1;
        }
        self.apply(&rec);
    }
}

/// `ps` renamed and sorted (participant lists are kept sorted).
fn renamed_sorted<Id: crate::MemberId>(
    ps: &[Id],
    r: &crate::testkit::model::Renaming<'_, Id>,
) -> Vec<Id> {
    let mut ps: Vec<Id> = ps.iter().map(|p| r.id(p)).collect();
    ps.sort();
    ps
}

impl<Id: crate::MemberId> TxRecord<Id> {
    /// The record as it is with every member `m` called `r.to(m)`, for the
    /// model checker's symmetry reduction.
    pub fn renamed(&self, r: &crate::testkit::model::Renaming<'_, Id>) -> Self {
        Self {
            coordinator: self.coordinator.as_ref().map(|c| r.id(c)),
            participants: renamed_sorted(&self.participants, r),
            stage: self.stage,
            round: self.round,
            ended: self.ended,
        }
    }
}

impl<Id: crate::MemberId> CommitDurable<Id> {
    /// The log as it is with every member `m` called `r.to(m)`, for the
    /// model checker's symmetry reduction; `None` with an embedded
    /// election's state (3PC's).
    pub fn renamed(&self, r: &crate::testkit::model::Renaming<'_, Id>) -> Option<Self> {
        if self.election.is_some() {
            return None;
        }
        Some(Self {
            next: self.next,
            txs: self.txs.iter().map(|(tx, t)| (*tx, t.renamed(r))).collect(),
            floors: self.floors.iter().map(|(c, f)| (r.id(c), *f)).collect(),
            stats: self.stats,
            election: None,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_restart_rebuilds_exactly_what_was_appended() {
        let mut d: CommitDurable<u32> = CommitDurable::default();
        let mut out: Outputs<u32, (), (), ()> = Outputs::new();
        d.append(
            LogRecord::Ready {
                tx: 1,
                coordinator: 9,
                participants: vec![1, 2],
            },
            true,
            &mut out,
        );
        d.append(LogRecord::Joined { tx: 1, round: 4 }, true, &mut out);
        d.append(
            LogRecord::Decided {
                tx: 2,
                decision: Decision::Commit,
                coordinator: 1,
                participants: vec![2],
            },
            true,
            &mut out,
        );
        d.append(LogRecord::End { tx: 2 }, false, &mut out);
        assert_eq!(
            d.stats,
            LogStats {
                forced: 3,
                lazy: 1,
                ..LogStats::default()
            }
        );
        let mut disk = Recovered::empty();
        disk.apply(&out.writes).unwrap();
        let back = CommitDurable::<u32>::recover(&disk).unwrap().unwrap();
        assert_eq!(back.txs, d.txs);
        assert_eq!(back.next, 5);
        assert_eq!(back.txs[&1].stage, Some(Stage::Ready));
        assert_eq!(back.txs[&1].round, 4);
        assert!(back.txs[&2].ended);
        assert_eq!(
            CommitDurable::<u32>::recover(&Recovered::empty()).unwrap(),
            None
        );
    }
}
