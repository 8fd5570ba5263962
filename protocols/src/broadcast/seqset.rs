//! [`SeqSet`]: a set of sequence numbers stored as a contiguous prefix plus
//! the numbers above it (what a member delivered of one origin).

use std::collections::BTreeSet;

use serde::{Deserialize, Serialize};

/// A set of sequence numbers (from 1): every number up to
/// [`SeqSet::prefix`], and the few above it. Ordered layers deliver each
/// origin's messages in sequence, so their sets are pure prefixes.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct SeqSet {
    prefix: u64,
    above: BTreeSet<u64>,
}

impl SeqSet {
    /// True if `seq` is in the set.
    pub fn contains(&self, seq: u64) -> bool {
        seq <= self.prefix || self.above.contains(&seq)
    }

    /// Add `seq`; false if it was there already.
    pub fn insert(&mut self, seq: u64) -> bool {
        if self.contains(seq) {
            return false;
        }
        self.above.insert(seq);
        while self.above.remove(&(self.prefix + 1)) {
            self.prefix += 1;
        }
        true
    }

    /// The largest `p` with `1..=p` all in the set.
    pub fn prefix(&self) -> u64 {
        self.prefix
    }

    /// How many numbers the set holds.
    pub fn len(&self) -> u64 {
        self.prefix + self.above.len() as u64
    }

    /// True when the set is empty.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Add every number of `other`; true if any was new.
    pub fn union_with(&mut self, other: &SeqSet) -> bool {
        let missing = self.missing_from(other);
        for s in &missing {
            self.insert(*s);
        }
        !missing.is_empty()
    }

    /// The numbers of `other` that are not in this set, ascending.
    pub fn missing_from(&self, other: &SeqSet) -> Vec<u64> {
        let mut out: Vec<u64> = (self.prefix + 1..=other.prefix)
            .filter(|s| !self.above.contains(s))
            .collect();
        out.extend(other.above.iter().copied().filter(|s| !self.contains(*s)));
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_prefix_absorbs_numbers_as_gaps_fill() {
        let mut s = SeqSet::default();
        assert!(s.insert(2) && s.insert(3));
        assert_eq!((s.prefix(), s.len()), (0, 2));
        assert!(!s.insert(3));
        assert!(s.insert(1));
        assert_eq!((s.prefix(), s.len()), (3, 3));
        assert!(s.contains(2) && !s.contains(4));
    }

    #[test]
    fn missing_and_union() {
        let mut a = SeqSet::default();
        let mut b = SeqSet::default();
        for x in [1, 2, 5] {
            a.insert(x);
        }
        for x in [1, 2, 3, 4, 7] {
            b.insert(x);
        }
        assert_eq!(a.missing_from(&b), vec![3, 4, 7]);
        assert_eq!(b.missing_from(&a), vec![5]);
        assert!(a.union_with(&b));
        assert_eq!((a.prefix(), a.len()), (5, 6));
        assert!(!a.union_with(&b));
    }
}
