//! What the coordination cores share about their group and their terms.
//!
//! [`Group`] is one member's view of its group: the members (sorted, without
//! duplicates, this member included, so that every member computes the same
//! ranks, ring and stripes) and the live set as the failure detector reports
//! it. [`Group::apply`] takes a membership event, ignores what is not about a
//! peer, and says what changed so that the core can react. On top of that:
//! ranks, the live ring ([`Group::successor`]), the highest and lowest live
//! member, majorities, and striped terms ([`next_term`]).
//!
//! [`Terms`] is an election's term state — the term this member is in, the
//! largest term it has seen, the leader of its term — with the rules every
//! election algorithm follows (see [`crate::election`]): observe the terms
//! messages carry, claim the next term of this member's stripe, accept a
//! leader only for a term at least as new as its own, follow a newer term
//! when told of it. Every change of term or leader is reported as an
//! [`ElectionEvent::LeaderChanged`].
//!
//! Both are plain values: no timers, no messages of their own.

use std::collections::BTreeSet;

use troupe_framework::membership::{MemberEvent, MemberStatus};
use troupe_framework::sansio::Outputs;

use crate::election::{ElectionDurable, ElectionEvent};

/// The smallest term `> max_seen` that the member of `rank` in a group of
/// `n` may claim (`t % n == rank`). Two members never claim the same term.
pub fn next_term(max_seen: u64, rank: usize, n: usize) -> u64 {
    let n = n.max(1) as u64;
    let rank = rank as u64 % n;
    let base = max_seen + 1;
    base + (rank + n - base % n) % n
}

/// What a membership event did to a [`Group`]'s live set.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Change<Id> {
    /// Reported `Up` or `Suspect` (or `Joining`) while it was down: back in
    /// the live set.
    Back(Id),
    /// Reported `Joining`, `Up` or `Suspect` while already live (not heard
    /// from yet, a suspicion, or a repeated `Up`): the live set is
    /// unchanged.
    Live(Id),
    /// Reported `Down` or `Left`: out of the live set (it may have been out
    /// already).
    Gone(Id),
}

/// One member's view of its group: who is in it, in which order, and who is
/// live (see the module docs). Every member starts believing every member is
/// live; this member is always live to itself.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Group<Id> {
    me: Id,
    members: Vec<Id>,
    down: BTreeSet<Id>,
}

impl<Id: Clone + Ord + std::fmt::Debug> Group<Id> {
    /// The group as it is with every member `m` called `r.to(m)`, for the
    /// model checker's symmetry reduction (the members kept sorted).
    pub fn renamed(&self, r: &crate::testkit::model::Renaming<'_, Id>) -> Self {
        let mut members: Vec<Id> = self.members.iter().map(|m| r.id(m)).collect();
        members.sort();
        Self {
            me: r.id(&self.me),
            members,
            down: self.down.iter().map(|m| r.id(m)).collect(),
        }
    }
}

impl<Id: Clone + Ord> Group<Id> {
    /// The group of `members` and `me` (added if missing), sorted, without
    /// duplicates.
    pub fn new(me: Id, members: impl IntoIterator<Item = Id>) -> Self {
        let mut all: Vec<Id> = members.into_iter().collect();
        all.push(me.clone());
        all.sort();
        all.dedup();
        Self {
            me,
            members: all,
            down: BTreeSet::new(),
        }
    }

    /// This member.
    pub fn me(&self) -> &Id {
        &self.me
    }

    /// Every member, sorted (`me` included).
    pub fn members(&self) -> &[Id] {
        &self.members
    }

    /// How many members there are (`me` included; at least 1).
    pub fn size(&self) -> usize {
        self.members.len()
    }

    /// True when `id` is a member.
    pub fn contains(&self, id: &Id) -> bool {
        self.members.binary_search(id).is_ok()
    }

    /// This member's rank: its position in the sorted members.
    pub fn rank(&self) -> usize {
        self.rank_of(&self.me)
    }

    /// The rank of `id` (0 for a non-member).
    pub fn rank_of(&self, id: &Id) -> usize {
        self.members.binary_search(id).unwrap_or(0)
    }

    /// The smallest term above `seen` of this member's stripe: the next term
    /// (or token generation) it may claim, which no other member ever claims.
    pub fn next_term(&self, seen: u64) -> u64 {
        self.next_term_of(&self.me, seen)
    }

    /// The smallest term above `seen` of `id`'s stripe.
    pub fn next_term_of(&self, id: &Id, seen: u64) -> u64 {
        next_term(seen, self.rank_of(id), self.size())
    }

    /// Votes that make a majority of the whole group (live or not).
    pub fn majority(&self) -> usize {
        self.size() / 2 + 1
    }

    /// True unless `id` was reported down (or left); this member is always
    /// live to itself.
    pub fn is_live(&self, id: &Id) -> bool {
        *id == self.me || !self.down.contains(id)
    }

    /// The live members other than this one, in ascending order (`.rev()`
    /// for descending).
    pub fn live_peers(&self) -> impl DoubleEndedIterator<Item = &Id> + '_ {
        self.members
            .iter()
            .filter(move |m| **m != self.me && !self.down.contains(*m))
    }

    /// The next live member after this one on the ring of members in id
    /// order (wrapping around), if any other member is live.
    pub fn successor(&self) -> Option<&Id> {
        let i = self.rank();
        let live = |m: &&Id| **m != self.me && !self.down.contains(*m);
        self.members[i + 1..]
            .iter()
            .find(live)
            .or_else(|| self.members[..i].iter().find(live))
    }

    /// The highest live member (this one when every higher one is down).
    pub fn highest_live(&self) -> &Id {
        self.members
            .iter()
            .rev()
            .find(|m| self.is_live(m))
            .unwrap_or(&self.me)
    }

    /// The lowest live member (this one when every lower one is down).
    pub fn lowest_live(&self) -> &Id {
        self.members
            .iter()
            .find(|m| self.is_live(m))
            .unwrap_or(&self.me)
    }

    /// Take a membership event into the live set: `None` when it is about
    /// this member or a non-member (ignored), else what it changed.
    pub fn apply(&mut self, event: MemberEvent<Id>) -> Option<Change<Id>> {
        let m = event.member;
        if m == self.me || !self.contains(&m) {
            return None;
        }
        Some(match event.status {
            MemberStatus::Joining | MemberStatus::Up | MemberStatus::Suspect => {
                if self.down.remove(&m) {
                    Change::Back(m)
                } else {
                    Change::Live(m)
                }
            }
            MemberStatus::Down | MemberStatus::Left => {
                self.down.insert(m.clone());
                Change::Gone(m)
            }
        })
    }
}

/// An election's terms: the term this member is in, the largest term it has
/// seen, and the leader of its term, if known (see the module docs).
///
/// The methods that change the term or the leader take the core's outputs
/// and emit [`ElectionEvent::LeaderChanged`] when (term, leader) changed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Terms<Id> {
    me: Id,
    stripe: (usize, usize),
    term: u64,
    max_term: u64,
    leader: Option<Id>,
}

type Out<Id, M, T> = Outputs<Id, M, T, ElectionEvent<Id>>;

impl<Id: Clone + Ord> Terms<Id> {
    /// The terms of `group`'s member, resumed from what it made durable
    /// (its term, and the largest term it had seen); no leader known yet.
    pub fn new(group: &Group<Id>, durable: &ElectionDurable<Id>) -> Self {
        Self {
            me: group.me().clone(),
            stripe: (group.rank(), group.size()),
            term: durable.term,
            max_term: durable.max_term.max(durable.term),
            leader: None,
        }
    }

    /// This member.
    pub fn me(&self) -> &Id {
        &self.me
    }

    /// The term this member is in (it never goes back).
    pub fn term(&self) -> u64 {
        self.term
    }

    /// The largest term this member has seen (at least [`Terms::term`]).
    pub fn max_term(&self) -> u64 {
        self.max_term
    }

    /// The leader of [`Terms::term`], if known.
    pub fn leader(&self) -> Option<&Id> {
        self.leader.as_ref()
    }

    /// True when `id` leads this member's term.
    pub fn is_led_by(&self, id: &Id) -> bool {
        self.leader.as_ref() == Some(id)
    }

    /// True when this member leads its term.
    pub fn is_leading(&self) -> bool {
        self.is_led_by(&self.me)
    }

    /// The term and leader to answer a claim with when it is refused: this
    /// member's.
    pub fn rejection(&self) -> (u64, Option<Id>) {
        (self.term, self.leader.clone())
    }

    /// What to keep on stable storage, with `successors` (next-in-line).
    pub fn durable(&self, successors: Vec<Id>) -> ElectionDurable<Id> {
        ElectionDurable {
            term: self.term,
            max_term: self.max_term,
            successors,
        }
    }

    /// A message carried `term`: remember it if it is the largest seen.
    pub fn observe(&mut self, term: u64) {
        self.max_term = self.max_term.max(term);
    }

    /// True when a claim of `leader` for `term` may be accepted: a newer
    /// term, or this term when its leader is unknown or is `leader`.
    pub fn acceptable(&self, term: u64, leader: &Id) -> bool {
        term > self.term || (term == self.term && self.leader.as_ref().is_none_or(|l| l == leader))
    }

    /// Be in `term` under `leader` (`None`: not known, or gone). Returns true
    /// (and emits the change) when term or leader changed.
    pub fn follow<M, T>(&mut self, term: u64, leader: Option<Id>, out: &mut Out<Id, M, T>) -> bool {
        self.observe(term);
        if self.term == term && self.leader == leader {
            return false;
        }
        self.term = term;
        self.leader = leader.clone();
        out.emit(ElectionEvent::LeaderChanged { term, leader });
        true
    }

    /// `leader` claims `term`: follow it if [acceptable](Terms::acceptable).
    /// Returns whether the claim was accepted (the term is observed either
    /// way).
    pub fn accept<M, T>(&mut self, term: u64, leader: Id, out: &mut Out<Id, M, T>) -> bool {
        self.observe(term);
        if !self.acceptable(term, &leader) {
            return false;
        }
        self.follow(term, Some(leader), out);
        true
    }

    /// Lead the next term of this member's stripe, above every term seen.
    /// Returns that term.
    pub fn claim<M, T>(&mut self, out: &mut Out<Id, M, T>) -> u64 {
        let (rank, n) = self.stripe;
        let term = next_term(self.max_term, rank, n);
        self.follow(term, Some(self.me.clone()), out);
        term
    }

    /// A refusal says `term` (newer or not) is led by `leader`: if `term` is
    /// newer than this member's, follow it — stepping down if this member
    /// led. Returns whether it did.
    pub fn step_down<M, T>(
        &mut self,
        term: u64,
        leader: Option<Id>,
        out: &mut Out<Id, M, T>,
    ) -> bool {
        self.observe(term);
        if term <= self.term {
            return false;
        }
        self.follow(term, leader, out);
        true
    }

    /// The leader is gone (reported down): stay in the term, without a
    /// leader. Returns whether there was one.
    pub fn leader_gone<M, T>(&mut self, out: &mut Out<Id, M, T>) -> bool {
        self.follow(self.term, None, out)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    fn event(member: u32, status: MemberStatus) -> MemberEvent<u32> {
        MemberEvent {
            member,
            status,
            at: Duration::ZERO,
        }
    }

    #[test]
    fn striped_terms_are_unique_and_growing() {
        for n in 1..6usize {
            for max in 0..20u64 {
                for r in 0..n {
                    let t = next_term(max, r, n);
                    assert!(t > max);
                    assert_eq!(t % n as u64, r as u64);
                    assert!(t <= max + n as u64);
                }
            }
        }
        let g = Group::new(30, [10, 20, 40]);
        assert_eq!(g.next_term(5), 6, "rank 2 of 4");
        assert_eq!(g.next_term_of(&40, 5), 7);
        assert_eq!(g.next_term_of(&10, 8), 12);
    }

    #[test]
    fn members_are_sorted_deduplicated_and_include_me() {
        let g = Group::new(3, [5, 1, 5, 2]);
        assert_eq!(g.members(), &[1, 2, 3, 5]);
        assert_eq!((g.size(), g.rank(), g.rank_of(&5)), (4, 2, 3));
        assert_eq!(g.rank_of(&9), 0, "non-member");
        assert!(g.contains(&2) && !g.contains(&4));
        assert_eq!(Group::new(1, [1, 2]).members(), &[1, 2]);
        assert_eq!(g.majority(), 3);
        assert_eq!(Group::new(1, [2, 3, 4, 5]).majority(), 3);
        assert_eq!(Group::new(1, []).majority(), 1);
    }

    #[test]
    fn membership_events_feed_the_live_set_and_say_what_changed() {
        let mut g = Group::new(2, [1, 2, 3, 4]);
        assert_eq!(g.apply(event(2, MemberStatus::Down)), None, "self");
        assert_eq!(g.apply(event(7, MemberStatus::Down)), None, "stranger");
        assert_eq!(
            g.apply(event(3, MemberStatus::Suspect)),
            Some(Change::Live(3))
        );
        assert_eq!(g.apply(event(3, MemberStatus::Down)), Some(Change::Gone(3)));
        assert_eq!(g.apply(event(3, MemberStatus::Left)), Some(Change::Gone(3)));
        assert!(!g.is_live(&3) && g.is_live(&2) && g.is_live(&7));
        assert_eq!(g.live_peers().copied().collect::<Vec<_>>(), [1, 4]);
        assert_eq!(g.live_peers().rev().copied().collect::<Vec<_>>(), [4, 1]);
        assert_eq!(g.apply(event(3, MemberStatus::Up)), Some(Change::Back(3)));
        assert_eq!(g.apply(event(3, MemberStatus::Up)), Some(Change::Live(3)));
        assert_eq!(g.live_peers().count(), 3);
    }

    #[test]
    fn successor_highest_and_lowest_follow_the_live_ring() {
        let mut g = Group::new(2, [1, 2, 3, 4]);
        assert_eq!(g.successor(), Some(&3));
        assert_eq!((g.highest_live(), g.lowest_live()), (&4, &1));
        g.apply(event(3, MemberStatus::Down));
        g.apply(event(4, MemberStatus::Down));
        assert_eq!(g.successor(), Some(&1), "wraps around");
        assert_eq!(g.highest_live(), &2);
        g.apply(event(1, MemberStatus::Left));
        assert_eq!(g.successor(), None, "alone");
        assert_eq!((g.highest_live(), g.lowest_live()), (&2, &2));
    }

    type O = Outputs<u32, (), (), ElectionEvent<u32>>;

    fn changed(term: u64, leader: Option<u32>) -> ElectionEvent<u32> {
        ElectionEvent::LeaderChanged { term, leader }
    }

    #[test]
    fn terms_claim_their_stripe_and_accept_only_newer_or_equal_claims() {
        let g = Group::new(2, [1, 2, 3]);
        let durable = ElectionDurable {
            term: 4,
            max_term: 3,
            successors: vec![],
        };
        let mut t = Terms::new(&g, &durable);
        assert_eq!((t.term(), t.max_term(), t.leader()), (4, 4, None));
        let mut out = O::new();
        t.observe(6);
        assert_eq!(t.claim(&mut out), 7, "rank 1 of 3, above 6");
        assert!(t.is_leading() && t.is_led_by(&2));
        assert_eq!(out.events, vec![changed(7, Some(2))]);

        let mut out = O::new();
        assert!(!t.accept(5, 3, &mut out), "older term");
        assert!(!t.accept(7, 3, &mut out), "same term, other leader");
        assert!(t.accept(7, 2, &mut out), "same term, same leader");
        assert!(out.events.is_empty(), "nothing changed");
        assert_eq!(t.rejection(), (7, Some(2)));
        assert!(t.accept(9, 3, &mut out));
        assert_eq!(out.events, vec![changed(9, Some(3))]);

        let mut out = O::new();
        assert!(t.leader_gone(&mut out));
        assert!(!t.leader_gone(&mut out), "already gone");
        assert!(t.acceptable(9, &1), "a leaderless term takes any leader");
        assert!(t.accept(9, 1, &mut out));
        assert_eq!(out.events, vec![changed(9, None), changed(9, Some(1))]);
        assert_eq!(t.durable(vec![3]).successors, vec![3]);
        assert_eq!((t.durable(vec![]).term, t.durable(vec![]).max_term), (9, 9));
    }

    #[test]
    fn a_refusal_with_a_newer_term_makes_a_leader_step_down() {
        let g = Group::new(1, [1, 2, 3]);
        let mut t = Terms::new(&g, &ElectionDurable::default());
        let mut out = O::new();
        assert_eq!(t.claim(&mut out), 3);
        assert!(!t.step_down(3, Some(2), &mut out), "not newer");
        assert!(!t.step_down(2, None, &mut out));
        assert_eq!(t.max_term(), 3);
        assert!(t.is_leading());
        assert!(t.step_down(5, None, &mut out));
        assert!(!t.is_leading());
        assert_eq!((t.term(), t.leader()), (5, None));
        assert_eq!(t.claim(&mut out), 6, "the next claim is above it");
        assert_eq!(
            out.events,
            vec![changed(3, Some(1)), changed(5, None), changed(6, Some(1))]
        );
    }
}
