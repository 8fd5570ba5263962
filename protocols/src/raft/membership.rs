//! Raft's configurations: who votes, who only learns, and what a quorum is.
//!
//! A [`Membership`] is either *simple* (one set of voters) or *joint*
//! (`C_old,new` of the Raft paper's section 6: the old voters and the new
//! voters, where every decision — an election, a commit, a read — needs a
//! majority of **both**). Learners receive the log but never vote and never
//! count towards a quorum; they catch up before they are promoted.
//!
//! A configuration takes effect on every server as soon as its entry is in
//! the server's log (not when it commits); the leader moves from the joint
//! configuration to the new one once the joint one is committed. So at no
//! time can the old and the new voters each elect a leader on their own.

use std::collections::BTreeSet;

use serde::{Deserialize, Serialize};

use crate::MemberId;

/// One configuration of a Raft group.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Membership<Id: Ord> {
    /// The voters (the old voters while a change is in its joint phase).
    pub voters: BTreeSet<Id>,
    /// During a change: the new voters. A decision then needs a majority of
    /// `voters` and a majority of these.
    pub joint: Option<BTreeSet<Id>>,
    /// Members that receive the log but do not vote.
    pub learners: BTreeSet<Id>,
}

impl<Id: MemberId> Membership<Id> {
    /// A simple configuration of `voters`, no learners.
    pub fn new(voters: impl IntoIterator<Item = Id>) -> Self {
        Self {
            voters: voters.into_iter().collect(),
            joint: None,
            learners: BTreeSet::new(),
        }
    }

    /// True while a change is in its joint phase.
    pub fn is_joint(&self) -> bool {
        self.joint.is_some()
    }

    /// True when `id` votes (in the old or the new voters).
    pub fn is_voter(&self, id: &Id) -> bool {
        self.voters.contains(id) || self.joint.as_ref().is_some_and(|j| j.contains(id))
    }

    /// True when `id` is a member in any role.
    pub fn contains(&self, id: &Id) -> bool {
        self.is_voter(id) || self.learners.contains(id)
    }

    /// Every member (voters, new voters, learners), once each, sorted.
    pub fn members(&self) -> BTreeSet<Id> {
        let mut all = self.voters.clone();
        if let Some(j) = &self.joint {
            all.extend(j.iter().cloned());
        }
        all.extend(self.learners.iter().cloned());
        all
    }

    /// True when the members for which `yes` holds form a quorum: a
    /// majority of the voters and, in the joint phase, of the new voters.
    pub fn is_quorum(&self, yes: impl Fn(&Id) -> bool) -> bool {
        let majority = |set: &BTreeSet<Id>| set.iter().filter(|id| yes(id)).count() * 2 > set.len();
        majority(&self.voters) && self.joint.as_ref().is_none_or(majority)
    }

    /// The largest value a quorum has reached, given each voter's value
    /// (for a commit index: the largest index a quorum has stored).
    pub fn quorum_value(&self, value: impl Fn(&Id) -> u64) -> u64 {
        let reached = |set: &BTreeSet<Id>| {
            if set.is_empty() {
                return u64::MAX;
            }
            // On the stack for the usual group sizes (this runs on every
            // append reply and proposal of a leader).
            let mut small = [0u64; 16];
            let mut large = Vec::new();
            let v: &mut [u64] = if set.len() <= small.len() {
                for (slot, id) in small.iter_mut().zip(set) {
                    *slot = value(id);
                }
                &mut small[..set.len()]
            } else {
                large.extend(set.iter().map(&value));
                &mut large
            };
            v.sort_unstable_by(|a, b| b.cmp(a));
            v[set.len() / 2]
        };
        let old = reached(&self.voters);
        match &self.joint {
            Some(j) => old.min(reached(j)),
            None => old,
        }
    }

    /// True when `id` is the only voter of the configuration, or of its
    /// joint half: then its own log alone can move the quorum value.
    pub fn sole_voter(&self, id: &Id) -> bool {
        let alone = |set: &BTreeSet<Id>| set.len() == 1 && set.contains(id);
        alone(&self.voters) || self.joint.as_ref().is_some_and(alone)
    }

    /// The configuration that ends a joint phase: the new voters alone.
    pub fn finished(&self) -> Self {
        let voters = self.joint.clone().unwrap_or_else(|| self.voters.clone());
        let learners = self
            .learners
            .iter()
            .filter(|l| !voters.contains(l))
            .cloned()
            .collect();
        Self {
            voters,
            joint: None,
            learners,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn set(ids: &[u32]) -> BTreeSet<u32> {
        ids.iter().copied().collect()
    }

    #[test]
    fn a_simple_quorum_is_a_strict_majority() {
        let m = Membership::new([1u32, 2, 3, 4]);
        assert!(!m.is_quorum(|id| *id <= 2));
        assert!(m.is_quorum(|id| *id <= 3));
        // Match indexes 9, 7, 5, 3: three of four have 5.
        assert_eq!(m.quorum_value(|id| 11 - 2 * u64::from(*id)), 5);
    }

    #[test]
    fn a_joint_quorum_needs_both_majorities() {
        let m = Membership {
            voters: set(&[1, 2, 3]),
            joint: Some(set(&[3, 4, 5])),
            learners: set(&[6]),
        };
        // 1, 2, 3: a majority of the old voters, one of the new.
        assert!(!m.is_quorum(|id| *id <= 3));
        assert!(m.is_quorum(|id| [2, 3, 4].contains(id)));
        // Old voters reached 10, new ones only 4.
        assert_eq!(m.quorum_value(|id| if *id <= 3 { 10 } else { 4 }), 4);
        assert!(m.is_voter(&5) && !m.is_voter(&6) && m.contains(&6));
        let done = m.finished();
        assert_eq!(done.voters, set(&[3, 4, 5]));
        assert!(!done.is_joint());
    }
}
