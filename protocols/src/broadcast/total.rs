//! Reliable total-order broadcast with a fixed sequencer: the eager
//! reliable engine ([`super::reliable`]) with a hold-back queue released by
//! a sequencer's order messages.
//!
//! The **sequencer** is the lowest member of the group (fixed: the same
//! member whatever the failure detector says). The global order is the
//! sequencer's own sequence of broadcasts, slot `s` being its message
//! number `s`:
//! * a data message the sequencer broadcasts takes its own slot;
//! * for a data message of another member, the sequencer broadcasts (once,
//!   when it first holds the message) an *order message* through the same
//!   reliable engine: empty payload, [`Stamps::assigns`] naming the data
//!   message; its slot is the data message's slot.
//!
//! A member delivers slot `s` only after slots `1..s` (the prefix of the
//! sequencer's messages it delivered): the sequencer's data message of
//! slot `s` at once, another member's data message once it holds both it
//! and its order message. An order message is then delivered *silently*
//! (recorded in the durable delivered sets, never reported to the user),
//! right after the data message it orders. Nothing else is new state: an
//! undelivered order message stays in the durable history buffer, so a
//! restarted member rebuilds what it knows of the order from its buffer
//! ([`Order::received`]), and a restarted sequencer finds which held
//! messages still need an order message (those neither delivered nor named
//! by an order message in its buffer). Its next slot is its durable
//! sequence number.
//!
//! Guarantees: those of [`super::reliable`] (integrity, validity, uniform
//! agreement, under loss, duplication, reordering, healing partitions and
//! crash-recovery) plus **total order**: every member delivers in the one
//! order of the sequencer's slots, so any two messages delivered by two
//! members are delivered by both in the same order; more, every member's
//! deliveries are a prefix of that one order (no gaps). FIFO is **not**
//! promised: the sequencer orders another member's messages as they reach
//! it, and the engine may reorder them on the way. Safety holds whatever
//! the failure detector says: there is one sequencer and no failover, so a
//! false suspicion cannot create a second one.
//!
//! **No failover.** When the sequencer is down (crashed or partitioned
//! away), nothing new is delivered anywhere until it is back: it recovers
//! its assignments from its durable state and goes on. A sequencer that
//! crashes for good blocks delivery for good. Failing over to "the lowest
//! live member" would be unsafe without agreement on the switch: a falsely
//! suspected sequencer and its successor would both assign a slot, and
//! members would deliver different messages in it; a safe failover needs a
//! consensus step (an epoch change) this layer does not have. Cost: that of
//! the engine for each message, plus one order message (another `N(N-1)`)
//! per message not broadcast by the sequencer; two message delays.

use std::collections::{BTreeMap, BTreeSet};
use std::fmt::Debug;

use super::reliable::{Order, Reliable};
use super::{clock_key, MsgId, SeqSet, Stamps};

/// The total-order hold-back rule: what this member knows of the
/// sequencer's assignments.
#[derive(Debug, Clone)]
pub struct SequencerOrder<Id> {
    me: Id,
    sequencer: Id,
    members: Vec<Id>,
    /// The slot of every data message an order message in the buffer
    /// assigns, until that data message is delivered.
    slots: BTreeMap<MsgId<Id>, u64>,
    /// Sequencer only: data messages held and not yet ordered.
    unordered: BTreeSet<MsgId<Id>>,
}

impl<Id: Ord + Clone + Debug> SequencerOrder<Id> {
    /// The data message an order message's stamps name, if it names one of
    /// the group.
    fn assigned(&self, stamps: &Stamps) -> Option<MsgId<Id>> {
        let (key, seq) = stamps.assigns.as_ref()?;
        let origin = self.members.iter().find(|m| clock_key(*m) == *key)?;
        Some(MsgId {
            origin: origin.clone(),
            seq: *seq,
        })
    }
}

fn has<Id: Ord>(delivered: &BTreeMap<Id, SeqSet>, id: &MsgId<Id>) -> bool {
    delivered
        .get(&id.origin)
        .is_some_and(|s| s.contains(id.seq))
}

impl<Id: Ord + Clone + Debug> Order<Id> for SequencerOrder<Id> {
    fn new(me: &Id, members: &[Id], _: &BTreeMap<Id, SeqSet>) -> Self {
        let sequencer = members.iter().min().unwrap_or(me).clone();
        Self {
            me: me.clone(),
            sequencer,
            members: members.to_vec(),
            slots: BTreeMap::new(),
            unordered: BTreeSet::new(),
        }
    }
    fn stamp(&self, _: &Id, _: u64) -> Stamps {
        Stamps::default()
    }
    fn received(&mut self, id: &MsgId<Id>, stamps: &Stamps) {
        if id.origin == self.sequencer {
            if let Some(data) = self.assigned(stamps) {
                self.unordered.remove(&data);
                self.slots.insert(data, id.seq);
            }
        } else if self.me == self.sequencer && !self.slots.contains_key(id) {
            self.unordered.insert(id.clone());
        }
    }
    fn take_controls(&mut self, delivered: &BTreeMap<Id, SeqSet>) -> Vec<Stamps> {
        std::mem::take(&mut self.unordered)
            .into_iter()
            .filter(|id| !has(delivered, id))
            .map(|id| Stamps {
                assigns: Some((clock_key(&id.origin), id.seq)),
                ..Stamps::default()
            })
            .collect()
    }
    fn ready(&self, id: &MsgId<Id>, stamps: &Stamps, delivered: &BTreeMap<Id, SeqSet>) -> bool {
        let next = delivered.get(&self.sequencer).map_or(0, SeqSet::prefix) + 1;
        if id.origin != self.sequencer {
            return self.slots.get(id) == Some(&next);
        }
        if id.seq != next {
            return false;
        }
        match stamps.assigns {
            None => true,
            // An order message: after the data message it orders.
            Some(_) => self.assigned(stamps).is_some_and(|d| has(delivered, &d)),
        }
    }
    fn delivered(&mut self, id: &MsgId<Id>, stamps: &Stamps) {
        if id.origin != self.sequencer {
            self.slots.remove(id);
        } else if let Some(data) = self.assigned(stamps) {
            self.slots.remove(&data);
        }
    }
    fn silent(&self, stamps: &Stamps) -> bool {
        stamps.assigns.is_some()
    }
}

/// Reliable total-order broadcast, fixed sequencer (see the module docs).
pub type Total<Id> = Reliable<Id, SequencerOrder<Id>>;

#[cfg(test)]
mod tests {
    use super::*;

    fn id(origin: u32, seq: u64) -> MsgId<u32> {
        MsgId { origin, seq }
    }

    #[test]
    fn data_waits_for_its_slot_and_the_order_message_for_its_data() {
        let mut o = SequencerOrder::new(&2, &[1, 2, 3], &BTreeMap::new());
        let data = Stamps::default();
        let order = Stamps {
            assigns: Some((clock_key(&3u32), 1)),
            ..Stamps::default()
        };
        let mut delivered: BTreeMap<u32, SeqSet> = BTreeMap::new();
        o.received(&id(3, 1), &data);
        assert!(!o.ready(&id(3, 1), &data, &delivered), "not ordered yet");
        assert!(o.take_controls(&delivered).is_empty(), "not the sequencer");
        // Slot 2: the order message arrives, slot 1 is still missing.
        o.received(&id(1, 2), &order);
        assert!(!o.ready(&id(3, 1), &data, &delivered), "slot 1 first");
        assert!(o.ready(&id(1, 1), &data, &delivered));
        delivered.entry(1).or_default().insert(1);
        assert!(o.ready(&id(3, 1), &data, &delivered));
        assert!(!o.ready(&id(1, 2), &order, &delivered), "after its data");
        delivered.entry(3).or_default().insert(1);
        o.delivered(&id(3, 1), &data);
        assert!(o.ready(&id(1, 2), &order, &delivered) && o.silent(&order));
    }

    #[test]
    fn the_sequencer_orders_each_held_message_once() {
        let mut o = SequencerOrder::new(&1, &[3, 1, 2], &BTreeMap::new());
        o.received(&id(2, 1), &Stamps::default());
        o.received(&id(3, 1), &Stamps::default());
        let controls = o.take_controls(&BTreeMap::new());
        assert_eq!(controls.len(), 2);
        for (s, c) in controls.iter().enumerate() {
            o.received(&id(1, s as u64 + 1), c);
        }
        assert!(o.take_controls(&BTreeMap::new()).is_empty());
        // A restart replays the buffer, order messages first: nothing new.
        let mut r = SequencerOrder::new(&1, &[1, 2, 3], &BTreeMap::new());
        r.received(&id(1, 1), &controls[0]);
        r.received(&id(2, 1), &Stamps::default());
        r.received(&id(3, 1), &Stamps::default());
        let again = r.take_controls(&BTreeMap::new());
        assert_eq!(again, vec![controls[1].clone()]);
    }
}
