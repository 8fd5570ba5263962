//! The member table: each known member's state (alive, suspect, dead,
//! left), incarnation number, whether it was heard of, and rarely read
//! details, in admission order with a deterministic id index; and the
//! core's operations on it: admitting a member (retiring older lives of
//! the same node, and the placeholder of a configured seed), changing a
//! member's state (keeping the live count and the `Dead` set, and
//! reporting each change of its reported status once), random picks and
//! id-ordered passes.
//!
//! Reported status: a member's SWIM state, except that a live member not
//! heard of yet (a configured member added with `add_member`, before any
//! message from it or news of it) is reported `Joining`. The protocol
//! treats it exactly as an alive member (it is probed, suspected and
//! declared dead like any other); only what is reported differs.
//! Nothing here depends on hash order: the index is never iterated, and
//! every pass goes through the entries (sorted when order matters).

use std::collections::HashMap;
use std::hash::{BuildHasherDefault, Hasher};
use std::time::Duration;

use rand::seq::SliceRandom;
use rand::Rng;
use troupe_framework::membership::{MemberEvent, MemberStatus};

use super::probe::Suspicion;
use super::{Swim, Update};
use crate::fd::{FdId, FdOutputs};

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum State {
    Alive,
    Suspect,
    Dead,
    Left,
}

impl State {
    pub(super) fn status(self) -> MemberStatus {
        match self {
            State::Alive => MemberStatus::Up,
            State::Suspect => MemberStatus::Suspect,
            State::Dead => MemberStatus::Down,
            State::Left => MemberStatus::Left,
        }
    }
    pub(super) fn live(self) -> bool {
        matches!(self, State::Alive | State::Suspect)
    }
}

/// What most lookups need about a member (every received update is
/// checked against it), kept small so the member table stays dense in
/// cache; the rest is in [`MemberDetail`].
#[derive(Debug, Clone, Copy)]
pub(super) struct Member {
    pub(super) inc: u64,
    pub(super) state: State,
    /// Heard of: a message from it, news of it alive, or an ack to a probe
    /// of it. Until then a live member is reported `Joining`.
    pub(super) heard: bool,
}

impl Member {
    /// The status reported for this member (see the module docs).
    pub(super) fn status(&self) -> MemberStatus {
        if !self.heard && self.state.live() {
            MemberStatus::Joining
        } else {
            self.state.status()
        }
    }
}

/// The rarely read part of a member's entry.
#[derive(Debug, Clone)]
pub(super) struct MemberDetail<Id> {
    /// Boxed: most members are not suspected.
    pub(super) suspicion: Option<Box<Suspicion<Id>>>,
    /// When its state last changed (or it was admitted).
    pub(super) since: Duration,
}

/// A fast multiplicative hasher (the rustc "Fx" scheme) with a fixed
/// start, for lookup-only tables: deterministic (no OS randomness) and a
/// few instructions per id. Not resistant to crafted collisions; member
/// ids come from authenticated cluster peers.
#[derive(Debug, Default, Clone, Copy)]
pub(super) struct FxHasher(u64);

const FX_K: u64 = 0xf135_7aea_2e62_a9c5;

impl FxHasher {
    fn add(&mut self, word: u64) {
        self.0 = (self.0.rotate_left(26) ^ word).wrapping_mul(FX_K);
    }
}

impl Hasher for FxHasher {
    fn write(&mut self, bytes: &[u8]) {
        let mut chunks = bytes.chunks_exact(8);
        for c in &mut chunks {
            let mut w = [0u8; 8];
            w.copy_from_slice(c);
            self.add(u64::from_le_bytes(w));
        }
        let rest = chunks.remainder();
        if !rest.is_empty() {
            let mut w = [0u8; 8];
            w[..rest.len()].copy_from_slice(rest);
            self.add(u64::from_le_bytes(w) ^ ((rest.len() as u64) << 59));
        }
    }
    fn write_u8(&mut self, i: u8) {
        self.add(u64::from(i));
    }
    fn write_u16(&mut self, i: u16) {
        self.add(u64::from(i));
    }
    fn write_u32(&mut self, i: u32) {
        self.add(u64::from(i));
    }
    fn write_u64(&mut self, i: u64) {
        self.add(i);
    }
    fn write_usize(&mut self, i: usize) {
        self.add(i as u64);
    }
    fn finish(&self) -> u64 {
        self.0
    }
}

/// Lookup-only hash map with a fixed-start hasher (no OS randomness). It
/// is never iterated, so no decision depends on hash order.
pub(super) type LookupMap<K, V> = HashMap<K, V, BuildHasherDefault<FxHasher>>;

/// The member table: entries in admission order (random picks index it
/// directly; every pass over the members goes through it and sorts when
/// order matters), found by id through an open-addressing index of
/// positions (linear probing, at most half full).
///
/// Built for the cache: with a 1024-member cluster simulated in one
/// process, each node's table is cold when its next event comes, and every
/// received update is checked against it. A lookup reads one 4-byte index
/// slot (the index is 8 KiB at N = 1024) and one 24-byte entry (for
/// [`SimId`](crate::fd::SimId)), where a general hash map with 64-byte entries took
/// two cache misses over a table six times larger. The index is never
/// iterated, so hash order decides nothing. Removal (a restarted member
/// replacing its old life) is rare and rebuilds the index.
#[derive(Debug)]
pub(super) struct MemberTable<Id> {
    pub(super) index: Vec<u32>,
    /// log2 of `index.len()`.
    bits: u32,
    pub(super) entries: Vec<(Id, Member)>,
    /// Parallel to `entries`.
    pub(super) details: Vec<MemberDetail<Id>>,
}

impl<Id: FdId> MemberTable<Id> {
    const EMPTY: u32 = u32::MAX;

    pub(super) fn new() -> Self {
        Self {
            index: Vec::new(),
            bits: 0,
            entries: Vec::new(),
            details: Vec::new(),
        }
    }

    pub(super) fn len(&self) -> usize {
        self.entries.len()
    }

    fn home(&self, id: &Id) -> usize {
        let mut h = FxHasher::default();
        id.hash(&mut h);
        // Fibonacci hashing: the top bits of a second multiplication.
        (h.finish().wrapping_mul(0x9e37_79b9_7f4a_7c15) >> (64 - self.bits)) as usize
    }

    /// Position of `id` in `entries`.
    pub(super) fn pos(&self, id: &Id) -> Option<usize> {
        if self.entries.is_empty() {
            return None;
        }
        let mask = self.index.len() - 1;
        let mut i = self.home(id);
        loop {
            let p = self.index[i];
            if p == Self::EMPTY {
                return None;
            }
            if self.entries[p as usize].0 == *id {
                return Some(p as usize);
            }
            i = (i + 1) & mask;
        }
    }

    pub(super) fn get(&self, id: &Id) -> Option<&Member> {
        self.pos(id).map(|p| &self.entries[p].1)
    }

    /// A member's entry and detail.
    pub(super) fn get_full_mut(&mut self, id: &Id) -> Option<(&mut Member, &mut MemberDetail<Id>)> {
        let p = self.pos(id)?;
        Some((&mut self.entries[p].1, &mut self.details[p]))
    }

    pub(super) fn detail_mut(&mut self, id: &Id) -> Option<&mut MemberDetail<Id>> {
        self.pos(id).map(|p| &mut self.details[p])
    }

    pub(super) fn contains_key(&self, id: &Id) -> bool {
        self.pos(id).is_some()
    }

    fn place(&mut self, id: &Id, pos: u32) {
        let mask = self.index.len() - 1;
        let mut i = self.home(id);
        while self.index[i] != Self::EMPTY {
            i = (i + 1) & mask;
        }
        self.index[i] = pos;
    }

    fn rebuild(&mut self, bits: u32) {
        self.bits = bits;
        self.index = vec![Self::EMPTY; 1 << bits];
        for p in 0..self.entries.len() {
            let id = self.entries[p].0.clone();
            self.place(&id, p as u32);
        }
    }

    /// Add a member not in the table (at the end of the admission order).
    pub(super) fn insert(&mut self, id: Id, member: Member, detail: MemberDetail<Id>) {
        debug_assert!(!self.contains_key(&id));
        let pos = self.entries.len() as u32;
        self.entries.push((id.clone(), member));
        self.details.push(detail);
        if 2 * self.entries.len() > self.index.len() {
            self.rebuild((self.bits + 1).max(4));
        } else {
            self.place(&id, pos);
        }
    }

    /// Remove a member, keeping the admission order of the others.
    pub(super) fn remove(&mut self, id: &Id) -> Option<Member> {
        let p = self.pos(id)?;
        let (_, m) = self.entries.remove(p);
        self.details.remove(p);
        self.rebuild(self.bits);
        Some(m)
    }
}

impl<Id: FdId> Swim<Id> {
    pub(super) fn emit(
        &self,
        now: Duration,
        member: &Id,
        status: MemberStatus,
        out: &mut FdOutputs<Id>,
    ) {
        out.emit(MemberEvent {
            member: member.clone(),
            status,
            at: now,
        });
    }

    /// Change a known member's state, keeping the live count and reporting
    /// a change of its reported status.
    pub(super) fn set_state(
        &mut self,
        now: Duration,
        id: &Id,
        state: State,
        inc: u64,
        out: &mut FdOutputs<Id>,
    ) {
        self.change(now, id, state, inc, false, out);
    }

    /// `id` was heard of (see [`Member::heard`]): report it as its state
    /// says from now on.
    pub(super) fn hear(&mut self, now: Duration, id: &Id, out: &mut FdOutputs<Id>) {
        if let Some(m) = self.members.get(id).filter(|m| !m.heard).copied() {
            self.change(now, id, m.state, m.inc, true, out);
        }
    }

    /// [`Self::set_state`], also marking the member heard of if `heard`;
    /// one report for both.
    pub(super) fn change(
        &mut self,
        now: Duration,
        id: &Id,
        state: State,
        inc: u64,
        heard: bool,
        out: &mut FdOutputs<Id>,
    ) {
        let Some((m, d)) = self.members.get_full_mut(id) else {
            return;
        };
        let old = m.state;
        let reported = m.status();
        m.state = state;
        m.inc = inc;
        m.heard |= heard;
        let now_reported = m.status();
        if old != state {
            d.since = now;
            if state == State::Dead {
                self.dead.insert(id.clone());
            } else if old == State::Dead {
                self.dead.remove(id);
            }
        }
        if state != State::Suspect {
            d.suspicion = None;
        }
        if old.live() && !state.live() {
            self.live -= 1;
        } else if !old.live() && state.live() {
            self.live += 1;
        }
        if reported != now_reported {
            self.emit(now, id, now_reported, out);
        }
    }

    /// A member not known yet: retire older incarnations of the same node
    /// (and its placeholder, if it is a seed not heard of yet) and add it
    /// alive, heard of or not (a configured member: reported `Joining`).
    /// False if it must be ignored.
    pub(super) fn admit(
        &mut self,
        now: Duration,
        id: &Id,
        inc: u64,
        heard: bool,
        out: &mut FdOutputs<Id>,
    ) -> bool {
        if *id == self.me || id.same_node(&self.me) || self.retired.contains(id) {
            return false;
        }
        if self.members.contains_key(id) {
            return true;
        }
        // Scan the member entries (contiguous): this runs once per member
        // at start-up, O(N^2) in all for N members.
        let old: Vec<Id> = self
            .members
            .entries
            .iter()
            .filter(|(k, _)| k.same_node(id))
            .map(|(k, _)| k.clone())
            .collect();
        for o in old {
            self.dead.remove(&o);
            if let Some(m) = self.members.remove(&o) {
                if m.state.live() {
                    self.live -= 1;
                    // A life never heard of did not end: no report.
                    if m.heard {
                        self.emit(now, &o, MemberStatus::Down, out);
                    }
                }
            }
            self.queue.remove_member(&o);
            self.retired.insert(o);
        }
        self.members.insert(
            id.clone(),
            Member {
                inc,
                state: State::Alive,
                heard,
            },
            MemberDetail {
                suspicion: None,
                since: now,
            },
        );
        self.live += 1;
        self.drop_placeholder(id);
        let status = if heard {
            MemberStatus::Up
        } else {
            MemberStatus::Joining
        };
        self.emit(now, id, status, out);
        // Probe it within the current round, at a random position.
        let lo = self.probe_idx.min(self.probe_order.len());
        let pos = self.rng.gen_range(lo..=self.probe_order.len());
        self.probe_order.insert(pos, id.clone());
        true
    }

    /// Up to `k` distinct random members satisfying `ok`. Small clusters
    /// (at most 64 members) choose among all qualifying members; larger
    /// ones make at most 3 x (members) random picks, like memberlist's
    /// `kRandomNodes` (O(k) in the usual case instead of a pass over all
    /// members; it may return fewer than `k` when few members qualify).
    pub(super) fn random_members(
        &mut self,
        k: usize,
        ok: impl Fn(&Id, &Member, &MemberDetail<Id>) -> bool,
    ) -> Vec<Id> {
        let t = &self.members;
        let n = t.len();
        if n <= 64 {
            let all: Vec<&Id> = t
                .entries
                .iter()
                .zip(&t.details)
                .filter(|((id, m), d)| ok(id, m, d))
                .map(|((id, _), _)| id)
                .collect();
            return all
                .choose_multiple(&mut self.rng, k)
                .map(|id| (*id).clone())
                .collect();
        }
        let mut picked: Vec<Id> = Vec::with_capacity(k);
        for _ in 0..3 * n {
            if picked.len() >= k {
                break;
            }
            let p = self.rng.gen_range(0..n);
            let (id, m) = &t.entries[p];
            if !picked.contains(id) && ok(id, m, &t.details[p]) {
                picked.push(id.clone());
            }
        }
        picked
    }

    /// Ids of the members satisfying `ok`, in id order (deterministic).
    pub(super) fn sorted_ids(&self, ok: impl Fn(&Member) -> bool) -> Vec<Id> {
        let mut v: Vec<Id> = self
            .members
            .entries
            .iter()
            .filter(|(_, m)| ok(m))
            .map(|(id, _)| id.clone())
            .collect();
        v.sort_unstable();
        v
    }

    pub(super) fn snapshot(&self) -> Vec<Update<Id>> {
        let mut v = vec![Update::Alive {
            member: self.me.clone(),
            inc: self.inc,
        }];
        for id in self.sorted_ids(|_| true) {
            let Some(m) = self.members.get(&id) else {
                continue;
            };
            let (member, inc, from) = (id, m.inc, self.me.clone());
            v.push(match m.state {
                State::Alive => Update::Alive { member, inc },
                State::Suspect => Update::Suspect { member, inc, from },
                State::Dead => Update::Dead { member, inc, from },
                State::Left => Update::Left { member, inc },
            });
        }
        v
    }
}
