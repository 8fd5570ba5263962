//! The replicated log as one server holds it: the entries after its latest
//! snapshot, in memory, mirrored to the durable log [`LOG`] through the
//! toolkit's durable writes.
//!
//! Indexes start at 1; index 0 (term 0) is the empty prefix every log
//! shares. Entries up to [`RaftLog::snapshot_index`] are compacted into the
//! snapshot; the log keeps that boundary's term so that the consistency
//! check of the entry right after it still works.
//!
//! Every change that must survive a crash is emitted as a write in the same
//! call that makes it in memory (append, truncation of a conflicting tail,
//! compaction of the head), so the in-memory log and the durable one never
//! disagree about what a restarted server will find.

use std::cell::RefCell;

use serde::{Deserialize, Serialize};
use troupe_framework::sansio::Outputs;

use super::membership::Membership;
use crate::MemberId;

/// The name of the durable log of entries.
pub const LOG: &str = "log";

/// `value` as compact msgpack (structs as arrays), in a vector of exactly
/// its length: encoded into this thread's reused buffer, then copied once
/// (encoding straight into a new vector grows it three or four times for
/// a small entry).
pub(super) fn encode<T: Serialize + ?Sized>(
    value: &T,
) -> Result<Vec<u8>, rmp_serde::encode::Error> {
    thread_local! {
        static SCRATCH: RefCell<Vec<u8>> = const { RefCell::new(Vec::new()) };
    }
    SCRATCH.with(|s| {
        // Re-entered (a value whose serialization encodes another): a
        // fresh buffer.
        let Ok(mut buf) = s.try_borrow_mut() else {
            return rmp_serde::to_vec(value);
        };
        buf.clear();
        rmp_serde::encode::write(&mut *buf, value)?;
        let bytes = buf.as_slice().to_vec();
        // Keep a buffer for small values, not the largest ever encoded.
        if buf.capacity() > 64 * 1024 {
            *buf = Vec::new();
        }
        Ok(bytes)
    })
}

/// A client session: a retried command with the same `(client, seq)` is
/// applied once.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct Session {
    /// The client's id, unique among clients.
    pub client: String,
    /// The command's sequence number within the client's session.
    pub seq: u64,
}

/// What an entry carries.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum Payload<Id: Ord> {
    /// The entry a new leader appends at the start of its term (so that it
    /// can commit, and serve reads, in that term).
    Noop,
    /// An application command (msgpack of the state machine's command).
    Command {
        /// The client session, for at-most-once application.
        session: Option<Session>,
        /// The encoded command.
        #[serde(with = "serde_bytes")]
        bytes: Vec<u8>,
    },
    /// A configuration (in effect from the moment it is in the log).
    Config(Membership<Id>),
}

/// One log entry.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Entry<Id: Ord> {
    /// The term of the leader that created it.
    pub term: u64,
    /// What it carries.
    pub payload: Payload<Id>,
}

/// The in-memory log of one server (see the module docs).
#[derive(Debug, Clone)]
pub struct RaftLog<Id: Ord> {
    /// Index of the last entry compacted into the snapshot (0: none).
    snapshot_index: u64,
    /// Its term.
    snapshot_term: u64,
    /// Entries `snapshot_index + 1 ..`.
    entries: Vec<Entry<Id>>,
}

impl<Id: MemberId> RaftLog<Id> {
    /// A log whose snapshot ends at `(index, term)` followed by `entries`.
    pub fn new(snapshot_index: u64, snapshot_term: u64, entries: Vec<Entry<Id>>) -> Self {
        Self {
            snapshot_index,
            snapshot_term,
            entries,
        }
    }

    /// The last index compacted into the snapshot.
    pub fn snapshot_index(&self) -> u64 {
        self.snapshot_index
    }

    /// The term of [`RaftLog::snapshot_index`].
    pub fn snapshot_term(&self) -> u64 {
        self.snapshot_term
    }

    /// The first index held as an entry.
    pub fn first_index(&self) -> u64 {
        self.snapshot_index + 1
    }

    /// The last index (the snapshot's when no entry follows it).
    pub fn last_index(&self) -> u64 {
        self.snapshot_index + self.entries.len() as u64
    }

    /// The term of the last entry.
    pub fn last_term(&self) -> u64 {
        self.entries.last().map_or(self.snapshot_term, |e| e.term)
    }

    /// The term at `index`: `None` when it is past the end or compacted
    /// away (the snapshot's own index still has its term).
    pub fn term_at(&self, index: u64) -> Option<u64> {
        if index == self.snapshot_index {
            return Some(self.snapshot_term);
        }
        self.entry(index).map(|e| e.term)
    }

    /// The entry at `index`, if held.
    pub fn entry(&self, index: u64) -> Option<&Entry<Id>> {
        if index <= self.snapshot_index {
            return None;
        }
        self.entries.get((index - self.snapshot_index - 1) as usize)
    }

    /// Up to `max` entries from `from` on (fewer at the end of the log).
    pub fn slice(&self, from: u64, max: usize) -> Vec<Entry<Id>> {
        if from <= self.snapshot_index || from > self.last_index() {
            return Vec::new();
        }
        let start = (from - self.snapshot_index - 1) as usize;
        let end = (start + max).min(self.entries.len());
        self.entries[start..end].to_vec()
    }

    /// True when a log ending at `(index, term)` is at least as up to date
    /// as this one (the election restriction, section 5.4.1).
    pub fn is_up_to_date(&self, index: u64, term: u64) -> bool {
        (term, index) >= (self.last_term(), self.last_index())
    }

    /// The first index of the term of the entry at `index` (for the fast
    /// back-up of a rejected append): the follower tells the leader where
    /// the conflicting term starts.
    pub fn first_index_of_term_at(&self, index: u64) -> u64 {
        let Some(term) = self.term_at(index) else {
            return index;
        };
        let mut i = index;
        while i > self.first_index() && self.term_at(i - 1) == Some(term) {
            i -= 1;
        }
        i
    }

    /// The last index whose entry has `term`, if this log has any.
    pub fn last_index_of_term(&self, term: u64) -> Option<u64> {
        let mut i = self.last_index();
        while i >= self.snapshot_index {
            match self.term_at(i) {
                Some(t) if t == term => return Some(i),
                Some(t) if t < term => return None,
                _ => {}
            }
            if i == 0 {
                break;
            }
            i -= 1;
        }
        None
    }

    /// Append `entries` after the last index, durably.
    ///
    /// Records are msgpack with structs as arrays (`rmp_serde::to_vec`),
    /// not maps with field names (`Outputs::append`): a third of the bytes
    /// and of the encoding time of a small command's entry. Both forms
    /// decode the same way, so logs written either way recover.
    pub fn append<M, T, E>(
        &mut self,
        entries: impl IntoIterator<Item = Entry<Id>>,
        out: &mut Outputs<Id, M, T, E>,
    ) {
        for e in entries {
            let index = self.last_index() + 1;
            match encode(&e) {
                Ok(record) => out.append_record(LOG, index, record),
                // Records the failed write, naming the entry that does not
                // encode (the driver then applies nothing of this input).
                Err(_) => out.append(LOG, index, std::slice::from_ref(&e)),
            }
            self.entries.push(e);
        }
    }

    /// Remove the entries at `index` and after, durably (a conflicting tail).
    pub fn truncate_from<M, T, E>(&mut self, index: u64, out: &mut Outputs<Id, M, T, E>) {
        if index > self.last_index() || index <= self.snapshot_index {
            return;
        }
        out.truncate_from(LOG, index);
        self.entries
            .truncate((index - self.snapshot_index - 1) as usize);
    }

    /// Compact the entries up to `index` (which must be held) into a
    /// snapshot ending there, durably.
    pub fn compact<M, T, E>(&mut self, index: u64, out: &mut Outputs<Id, M, T, E>) {
        let Some(term) = self.term_at(index) else {
            return;
        };
        if index <= self.snapshot_index {
            return;
        }
        out.truncate_before(LOG, index + 1);
        self.entries.drain(..(index - self.snapshot_index) as usize);
        self.snapshot_index = index;
        self.snapshot_term = term;
    }

    /// Replace the whole log by a snapshot ending at `(index, term)`,
    /// keeping the entries after it if the entry at `index` matches
    /// (section 7: a snapshot that covers a prefix of the log).
    pub fn install<M, T, E>(&mut self, index: u64, term: u64, out: &mut Outputs<Id, M, T, E>) {
        if self.term_at(index) == Some(term) && index >= self.snapshot_index {
            self.compact(index, out);
            return;
        }
        if !self.entries.is_empty() {
            out.truncate_from(LOG, self.first_index());
        }
        self.entries.clear();
        self.snapshot_index = index;
        self.snapshot_term = term;
    }

    /// The entries held, with their indexes.
    pub fn iter(&self) -> impl DoubleEndedIterator<Item = (u64, &Entry<Id>)> {
        let base = self.snapshot_index;
        self.entries
            .iter()
            .enumerate()
            .map(move |(i, e)| (base + 1 + i as u64, e))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    type O = Outputs<u32, (), (), ()>;

    fn noop(term: u64) -> Entry<u32> {
        Entry {
            term,
            payload: Payload::Noop,
        }
    }

    fn log_of(terms: &[u64]) -> RaftLog<u32> {
        RaftLog::new(0, 0, terms.iter().map(|t| noop(*t)).collect())
    }

    #[test]
    fn terms_and_the_up_to_date_check() {
        let log = log_of(&[1, 1, 2, 2, 2, 4]);
        assert_eq!(log.last_index(), 6);
        assert_eq!(log.term_at(0), Some(0));
        assert_eq!(log.term_at(4), Some(2));
        assert_eq!(log.term_at(7), None);
        assert!(log.is_up_to_date(1, 5));
        assert!(!log.is_up_to_date(9, 3));
        assert!(log.is_up_to_date(6, 4));
        assert!(!log.is_up_to_date(5, 4));
        assert_eq!(log.first_index_of_term_at(5), 3);
        assert_eq!(log.last_index_of_term(2), Some(5));
        assert_eq!(log.last_index_of_term(3), None);
    }

    #[test]
    fn entries_are_written_compactly_and_named_ones_still_recover() {
        let mut out = O::new();
        let mut log = RaftLog::new(0, 0, Vec::new());
        let cmd = Entry {
            term: 2,
            payload: Payload::Command {
                session: Some(Session {
                    client: "c".into(),
                    seq: 7,
                }),
                bytes: vec![1, 2, 3],
            },
        };
        log.append(vec![noop(1), cmd.clone()], &mut out);
        let mut disk = troupe_framework::sansio::Recovered::empty();
        disk.apply(&out.writes).unwrap();
        // A log written by an older version, fields named.
        let mut named = O::new();
        named.append(LOG, 3, std::slice::from_ref(&cmd));
        disk.apply(&named.writes).unwrap();
        let back: Vec<(u64, Entry<u32>)> = disk.log_as(LOG).unwrap();
        assert_eq!(back, vec![(1, noop(1)), (2, cmd.clone()), (3, cmd)]);
    }

    #[test]
    fn truncation_and_compaction_are_written_and_kept_in_step() {
        let mut out = O::new();
        let mut log = RaftLog::new(0, 0, Vec::new());
        log.append(vec![noop(1), noop(1), noop(2)], &mut out);
        log.truncate_from(3, &mut out);
        assert_eq!(log.last_index(), 2);
        log.append(vec![noop(3)], &mut out);
        log.compact(2, &mut out);
        assert_eq!((log.snapshot_index(), log.snapshot_term()), (2, 1));
        assert_eq!(log.term_at(3), Some(3));
        assert_eq!(log.slice(3, 10).len(), 1);
        assert!(log.slice(2, 10).is_empty());
        let mut disk = troupe_framework::sansio::Recovered::empty();
        disk.apply(&out.writes).unwrap();
        let back: Vec<(u64, Entry<u32>)> = disk.log_as(LOG).unwrap();
        assert_eq!(back, vec![(3, noop(3))]);
        // A snapshot past the end replaces everything.
        log.install(9, 5, &mut out);
        assert_eq!((log.last_index(), log.last_term()), (9, 5));
        disk.apply(&out.writes[4..]).unwrap();
        assert_eq!(disk.log_as::<Entry<u32>>(LOG).unwrap(), vec![]);
    }
}
