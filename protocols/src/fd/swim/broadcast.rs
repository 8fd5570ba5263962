//! Dissemination: the queue of updates waiting to be piggybacked (at
//! most one per member, each sent at most `retransmit_limit` times, in a
//! fixed send order) and the core's use of it: the updates of each outgoing
//! message (bad news about the destination first, Lifeguard's buddy
//! system) and the bounded gossip rounds. The send order depends only
//! on push order and transmission counts, never on hash order.

use std::time::Duration;

use super::members::{LookupMap, State};
use super::{Swim, SwimMessage, Update};
use crate::fd::{FdId, FdOutputs};

/// A queued update: the update and whether it is still the queued one for
/// its member (a newer update about the same member replaces it in place).
#[derive(Debug)]
pub(super) struct Queued<Id> {
    update: Update<Id>,
    live: bool,
    /// Times sent so far (mirrors its key's count; read when the update is
    /// replaced or dropped, to keep [`BroadcastQueue::fresh`] exact).
    transmits: u32,
}

/// Send-order key of a queued update: priority class, then fewest
/// transmissions, then newest (highest slot) first.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
struct QueueKey {
    class: u8,
    transmits: u32,
    newest: std::cmp::Reverse<u32>,
}

impl QueueKey {
    fn slot(self) -> u32 {
        self.newest.0
    }
}

/// Updates waiting to be piggybacked, at most one per member, in send
/// order: priority class (see [`priority`]), then fewest transmissions,
/// then newest first (memberlist's transmit-limited queue, plus the
/// priority classes).
///
/// Layout, chosen for speed (a large cluster under loss spends most of its
/// time here and in member lookups, on memory that is cold when the node's
/// next event comes): every pushed update gets the next slot of `slots`, so
/// slot numbers are push order; `order` holds one small key per live
/// update, sorted in reverse send order, so the next update to send is its
/// last element. Taking an update pops its key and re-inserts it with one
/// more transmission (a binary search and a short move in one contiguous
/// vector); no hash lookup is needed except when an update is dropped. A
/// replaced or removed update is only marked dead and skipped when
/// reached; `slots` is compacted (renumbered in the same order) when dead
/// ones outnumber live ones.
#[derive(Debug)]
pub(super) struct BroadcastQueue<Id> {
    pub(super) slots: Vec<Queued<Id>>,
    /// Keys in descending order (next to send last).
    order: Vec<QueueKey>,
    /// The slot of each member's queued update.
    by_member: LookupMap<Id, u32>,
    /// Scratch list of [`Self::take_into`] (kept for its capacity).
    resend: Vec<QueueKey>,
    /// A suspicion or death is *fresh* while it has been sent fewer than
    /// this many times (`gossip_transmits`; alive and left are fresh until
    /// dropped): only fresh updates start gossip-only messages.
    fresh_below: u32,
    /// Live updates that are fresh.
    pub(super) fresh: usize,
}

impl<Id: FdId> BroadcastQueue<Id> {
    pub(super) fn new(fresh_below: u32) -> Self {
        Self {
            slots: Vec::new(),
            order: Vec::new(),
            by_member: LookupMap::default(),
            resend: Vec::new(),
            fresh_below,
            fresh: 0,
        }
    }

    /// True if some queued update is fresh (see [`Self::is_fresh`]).
    pub(super) fn has_fresh(&self) -> bool {
        self.fresh > 0
    }

    /// An update of priority `class` sent `transmits` times is fresh (may
    /// start gossip-only messages) while it has been sent fewer than
    /// `fresh_below` times; alive and left (refutations, class 0) stay
    /// fresh until their last send.
    fn is_fresh(&self, class: u8, transmits: u32) -> bool {
        class == 0 || transmits < self.fresh_below
    }

    /// Slot `slot` stops being live (replaced, removed or dropped).
    fn kill(&mut self, slot: u32) {
        let q = &self.slots[slot as usize];
        if q.live && self.is_fresh(priority(&q.update), q.transmits) {
            self.fresh -= 1;
        }
        self.slots[slot as usize].live = false;
    }

    pub(super) fn len(&self) -> usize {
        self.by_member.len()
    }

    pub(super) fn is_empty(&self) -> bool {
        self.by_member.is_empty()
    }

    fn insert_key(&mut self, key: QueueKey) {
        if self.order.last().is_none_or(|last| key < *last) {
            // The usual case for a new update: next to send.
            self.order.push(key);
        } else {
            let at = self.order.partition_point(|k| *k > key);
            self.order.insert(at, key);
        }
    }

    /// Queue `update`, replacing any queued update about the same member.
    pub(super) fn push(&mut self, update: Update<Id>) {
        if self.slots.len() >= u32::MAX as usize || self.slots.len() > 2 * self.len() + 64 {
            self.compact();
        }
        let slot = self.slots.len() as u32;
        let class = priority(&update);
        if let Some(old) = self.by_member.insert(update.member().clone(), slot) {
            self.kill(old);
        }
        if self.is_fresh(class, 0) {
            self.fresh += 1;
        }
        self.slots.push(Queued {
            update,
            live: true,
            transmits: 0,
        });
        self.insert_key(QueueKey {
            class,
            transmits: 0,
            newest: std::cmp::Reverse(slot),
        });
    }

    pub(super) fn remove_member(&mut self, member: &Id) {
        if let Some(slot) = self.by_member.remove(member) {
            self.kill(slot);
        }
    }

    /// Drop dead slots and renumber the live ones in the same order.
    fn compact(&mut self) {
        let mut renumber = vec![u32::MAX; self.slots.len()];
        let mut slots = Vec::with_capacity(self.len());
        for (i, q) in std::mem::take(&mut self.slots).into_iter().enumerate() {
            if q.live {
                renumber[i] = slots.len() as u32;
                slots.push(q);
            }
        }
        // Renumbering keeps the slots' order, so the keys stay sorted.
        self.order.retain_mut(|k| {
            k.newest.0 = renumber[k.slot() as usize];
            k.newest.0 != u32::MAX
        });
        for (i, q) in slots.iter().enumerate() {
            if let Some(s) = self.by_member.get_mut(q.update.member()) {
                *s = i as u32;
            }
        }
        self.slots = slots;
    }

    /// Forget `slot`, whose update is dropped for good.
    fn drop_slot(&mut self, slot: u32) {
        self.kill(slot);
        let q = &self.slots[slot as usize];
        self.by_member.remove(q.update.member());
    }

    /// Read (only) the slots of the next `room` queued updates, as
    /// [`Swim::touch`] does for the member table: a reply will take them.
    pub(super) fn touch(&self, room: usize) {
        let live: usize = self
            .order
            .iter()
            .rev()
            .take(room)
            .map(|k| usize::from(self.slots[k.slot() as usize].live))
            .sum();
        std::hint::black_box(live);
    }

    /// Append the next `room` updates in send order to `v`, each counted
    /// as transmitted once more; an update that reached `limit`
    /// transmissions is dropped (also one found at or above a limit that
    /// shrank with the cluster).
    pub(super) fn take_into(&mut self, v: &mut Vec<Update<Id>>, room: usize, limit: u32) {
        let room = v.len() + room;
        // Re-inserted after the pass, so that none is taken twice for one
        // message.
        let mut resend = std::mem::take(&mut self.resend);
        while v.len() < room {
            let Some(key) = self.order.pop() else {
                break;
            };
            let slot = key.slot();
            if !self.slots[slot as usize].live {
                continue;
            }
            if key.transmits >= limit {
                self.drop_slot(slot);
                continue;
            }
            let q = &mut self.slots[slot as usize];
            v.push(q.update.clone());
            q.transmits = key.transmits + 1;
            if key.class != 0 && q.transmits == self.fresh_below {
                self.fresh -= 1;
            }
            if key.transmits + 1 < limit {
                resend.push(QueueKey {
                    transmits: key.transmits + 1,
                    ..key
                });
            } else {
                self.drop_slot(slot);
            }
        }
        // Merge the re-sent keys back from the end (they were the smallest
        // and are still small, so only the tail of `order` moves).
        if !resend.is_empty() {
            // Keys were popped in ascending order and each got the same +1
            // on its transmission count, so they are still ascending:
            // reversing is enough (sorting a reversed run by insertion was
            // ~6 % of a 1024-member run at 20 % loss). Sorted anyway should
            // that ever not hold.
            if resend.windows(2).all(|w| w[0] < w[1]) {
                resend.reverse();
            } else {
                resend.sort_unstable_by(|a, b| b.cmp(a));
            }
            let mut i = self.order.len();
            let mut j = resend.len();
            self.order.extend_from_slice(&resend);
            let mut w = self.order.len();
            while j > 0 {
                w -= 1;
                if i > 0 && self.order[i - 1] < resend[j - 1] {
                    self.order[w] = self.order[i - 1];
                    i -= 1;
                } else {
                    self.order[w] = resend[j - 1];
                    j -= 1;
                }
            }
            resend.clear();
        }
        self.resend = resend;
    }

    #[cfg(test)]
    pub(super) fn take(&mut self, room: usize, limit: u32) -> Vec<Update<Id>> {
        let mut v = Vec::new();
        self.take_into(&mut v, room, limit);
        v
    }
}

/// Piggyback priority when more updates wait than fit in a message: good
/// news (alive, refutations) and leaves first, then deaths, then
/// suspicions — a refutation cancels a suspicion everywhere it arrives, so
/// under congestion it must not starve behind new suspicions (measured:
/// putting deaths first spreads false deaths faster than their
/// refutations at 20% loss).
pub(super) fn priority<Id>(u: &Update<Id>) -> u8 {
    match u {
        Update::Alive { .. } | Update::Left { .. } => 0,
        Update::Dead { .. } => 1,
        Update::Suspect { .. } => 2,
    }
}

impl<Id: FdId> Swim<Id> {
    pub(super) fn retransmit_limit(&self) -> u32 {
        let n = self.cluster_size() as f64;
        self.params.retransmit_mult * ((n + 1.0).log10().ceil() as u32).max(1)
    }

    pub(super) fn enqueue(&mut self, update: Update<Id>) {
        self.queue.push(update);
    }

    /// This node's suspicion or death verdict about `dest`, if any: it
    /// heads every message to `dest`, so that `dest` can refute.
    pub(super) fn bad_news(&self, dest: &Id) -> Option<Update<Id>> {
        self.members.get(dest).and_then(|m| match m.state {
            State::Suspect => Some(Update::Suspect {
                member: dest.clone(),
                inc: m.inc,
                from: self.me.clone(),
            }),
            State::Dead => Some(Update::Dead {
                member: dest.clone(),
                inc: m.inc,
                from: self.me.clone(),
            }),
            _ => None,
        })
    }

    /// Updates for one message to `dest`: bad news about `dest` first, then
    /// the least-transmitted queued updates, at most `max_piggyback`.
    pub(super) fn piggyback(&mut self, dest: &Id) -> Vec<Update<Id>> {
        let bad_news = self.bad_news(dest);
        if self.queue.is_empty() {
            return bad_news.into_iter().collect();
        }
        let mut v = Vec::with_capacity(self.params.max_piggyback.min(self.queue.len() + 1));
        v.extend(bad_news);
        let room = self.params.max_piggyback.saturating_sub(v.len());
        if room == 0 {
            return v;
        }
        let limit = self.retransmit_limit();
        self.queue.take_into(&mut v, room, limit);
        v
    }

    /// One gossip round (memberlist's `gossip`): pending updates to
    /// `gossip_nodes` random members that are live or were declared `Down`
    /// less than `gossip_to_the_dead` ago, while a fresh update is pending
    /// (bounded gossip, see the module doc); a message to a suspected or
    /// dead target also goes out for the bad news it carries.
    pub(super) fn gossip_round(&mut self, now: Duration, out: &mut FdOutputs<Id>) {
        if !self.queue.has_fresh() {
            return;
        }
        let window = self.params.gossip_to_the_dead;
        let targets = self.random_members(self.params.gossip_nodes, |_, m, d| {
            m.state.live() || (m.state == State::Dead && now.saturating_sub(d.since) < window)
        });
        for t in targets {
            if !self.queue.has_fresh() && self.bad_news(&t).is_none() {
                return;
            }
            let updates = self.piggyback(&t);
            self.send(t, SwimMessage::Gossip { updates }, out);
        }
    }
}
