//! Reliable total-order broadcast with Lamport timestamps and
//! acknowledgements from every member (the textbook algorithm of the course
//! notes: a queue ordered by timestamp, every receiver multicasts an
//! acknowledgement, a message is delivered at the head of the queue once
//! every member acknowledged it), on the eager reliable engine
//! ([`super::reliable`]).
//!
//! Every member keeps a Lamport clock: it takes the largest timestamp of
//! every message it receives, and stamps each message it sends (data or
//! acknowledgement) with its clock plus one ([`Stamps::lamport`]). A member
//! that receives another member's data message broadcasts an
//! *acknowledgement* (a silent control message through the same engine,
//! [`Stamps::assigns`] naming the latest message it acknowledges; one
//! acknowledgement covers every message received in the same input). The
//! hold-back queue holds the undelivered data messages ordered by
//! `(timestamp, origin)`. The head `m` is delivered once, for every other
//! member `k`, this member *heard* from `k` a message stamped after `m` in
//! that order, counting only the contiguous prefix of `k`'s messages (by
//! `k`'s sequence numbers) received here. The engine does not keep FIFO
//! order, so this prefix rule is what the textbook's FIFO channels give:
//! `k`'s clock only grows, so every message of `k` stamped before `m` is
//! in that prefix, hence already in the queue. `m`'s own origin counts as
//! heard once `m` is in its prefix. Acknowledgements are delivered
//! (silently) once in their sender's prefix.
//!
//! ## Guarantees
//! Those of [`super::reliable`] (integrity, validity, uniform agreement)
//! plus **total order**: every member delivers in `(timestamp, origin)`
//! order, one global order. It is also **causal**: a member that
//! broadcasts `m'` after delivering (or broadcasting) `m` has a clock of
//! at least `ts(m)`, so `ts(m') > ts(m)` and `m` comes first everywhere
//! (hence FIFO too). So Lamport total order gives total + causal order by
//! itself, with no vector clock; the sequencer ([`super::total`]) gives
//! total order but not causal (nor FIFO) order. The clock and the heard
//! timestamps are durable ([`OrderDurable`]): a restarted member never
//! stamps below what it sent before.
//!
//! ## Crashes and the failure detector
//! The rule waits for **every** member of the group, live or not: the
//! failure detector is not consulted for delivery. A false suspicion (or
//! a partition) only delays; it can never reorder. A member that crashes
//! for good blocks every delivery after its last message at every member,
//! for good (`tests/broadcast_lamport_total.rs` shows it). Removing a
//! suspected member from the wait would unblock it, but a falsely
//! suspected member's message stamped below the head could then arrive
//! after the head was delivered: total order lost. Without a membership
//! change agreed by the group (a view change), blocking is the safe
//! choice.
//!
//! Cost without loss: per broadcast the engine's `N(N-1)` for the data
//! message, and `N(N-1)` for each of the `N-1` acknowledgements:
//! `N^2 (N-1)` (`tests/broadcast_costs.rs`). The textbook counts `N-1`
//! sends per multicast, `N(N-1)` for the message and its acknowledgements;
//! the engine's relaying multiplies each multicast by `N`. Two message
//! delays.

use std::collections::{BTreeMap, BTreeSet};
use std::fmt::Debug;

use super::reliable::{Order, Reliable};
use super::{clock_key, BroadcastConfig, MsgId, OrderDurable, SeqSet, Stamps};

/// The Lamport total-order hold-back rule (see the module docs).
#[derive(Debug, Clone)]
pub struct LamportOrder<Id> {
    me: Id,
    members: Vec<Id>,
    clock: u64,
    /// Per member, the largest timestamp of the prefix of its messages
    /// received here.
    heard: BTreeMap<Id, u64>,
    /// Per member, the sequence numbers received (delivered or held).
    recv: BTreeMap<Id, SeqSet>,
    /// Per member, the end of the prefix `heard` counts.
    upto: BTreeMap<Id, u64>,
    /// Timestamps of received messages beyond their sender's prefix.
    beyond: BTreeMap<MsgId<Id>, u64>,
    /// Undelivered data messages, by `(timestamp, origin, seq)`.
    queue: BTreeSet<(u64, Id, u64)>,
    /// The latest data message received and not yet acknowledged.
    ack_due: Option<MsgId<Id>>,
    /// Set at the first call of [`Order::take_controls`]: messages
    /// received before are the buffer replayed after a restart, already
    /// acknowledged.
    started: bool,
    /// [`BroadcastConfig::unsafe_lamport_one_ack`] (a broken variant for
    /// the model checker's tests).
    one_ack: bool,
}

impl<Id: Ord + Clone + Debug> LamportOrder<Id> {
    /// Take `origin`'s prefix of received messages into `heard`.
    fn advance(&mut self, origin: &Id) {
        let prefix = self.recv.get(origin).map_or(0, SeqSet::prefix);
        let upto = self.upto.entry(origin.clone()).or_insert(0);
        while *upto < prefix {
            *upto += 1;
            let id = MsgId {
                origin: origin.clone(),
                seq: *upto,
            };
            if let Some(ts) = self.beyond.remove(&id) {
                let h = self.heard.entry(origin.clone()).or_insert(0);
                *h = (*h).max(ts);
            }
        }
    }

    fn in_prefix(&self, id: &MsgId<Id>) -> bool {
        self.upto.get(&id.origin).is_some_and(|u| id.seq <= *u)
    }
}

impl<Id: Ord + Clone + Debug> Order<Id> for LamportOrder<Id> {
    fn new(me: &Id, members: &[Id], delivered: &BTreeMap<Id, SeqSet>) -> Self {
        let upto = delivered
            .iter()
            .map(|(k, s)| (k.clone(), s.prefix()))
            .collect();
        Self {
            me: me.clone(),
            members: members.to_vec(),
            clock: 0,
            heard: BTreeMap::new(),
            recv: delivered.clone(),
            upto,
            beyond: BTreeMap::new(),
            queue: BTreeSet::new(),
            ack_due: None,
            started: false,
            one_ack: false,
        }
    }
    fn configure(&mut self, config: &BroadcastConfig) {
        self.one_ack = config.unsafe_lamport_one_ack;
    }
    fn resume(&mut self, durable: &OrderDurable<Id>) {
        self.clock = durable.clock;
        self.heard = durable.heard.iter().cloned().collect();
    }
    fn durable(&self) -> OrderDurable<Id> {
        OrderDurable {
            clock: self.clock,
            heard: self.heard.iter().map(|(k, v)| (k.clone(), *v)).collect(),
            ..OrderDurable::default()
        }
    }
    fn stamp(&self, _: &Id, _: u64) -> Stamps {
        Stamps {
            lamport: Some(self.clock + 1),
            ..Stamps::default()
        }
    }
    fn received(&mut self, id: &MsgId<Id>, stamps: &Stamps) {
        let ts = stamps.lamport.unwrap_or(0);
        self.clock = self.clock.max(ts);
        let fresh = self
            .recv
            .entry(id.origin.clone())
            .or_default()
            .insert(id.seq);
        if !fresh {
            // Delivered in an earlier life (replayed from the buffer, where
            // it stays until stable): heard and not queued.
            return;
        }
        self.beyond.insert(id.clone(), ts);
        self.advance(&id.origin);
        if stamps.assigns.is_none() {
            self.queue.insert((ts, id.origin.clone(), id.seq));
            if self.started && id.origin != self.me {
                self.ack_due = Some(id.clone());
            }
        }
    }
    fn take_controls(&mut self, _: &BTreeMap<Id, SeqSet>) -> Vec<Stamps> {
        self.started = true;
        let Some(id) = self.ack_due.take() else {
            return Vec::new();
        };
        vec![Stamps {
            lamport: Some(self.clock + 1),
            assigns: Some((clock_key(&id.origin), id.seq)),
            ..Stamps::default()
        }]
    }
    fn ready(&self, id: &MsgId<Id>, stamps: &Stamps, _: &BTreeMap<Id, SeqSet>) -> bool {
        if stamps.assigns.is_some() {
            return self.in_prefix(id);
        }
        let ts = stamps.lamport.unwrap_or(0);
        let head = (ts, id.origin.clone(), id.seq);
        if self.queue.first() != Some(&head) || !self.in_prefix(id) {
            return false;
        }
        let later = |k: &&Id| {
            self.heard
                .get(*k)
                .is_some_and(|h| *h > ts || (*h == ts && **k > id.origin))
        };
        let others: Vec<&Id> = self
            .members
            .iter()
            .filter(|k| **k != self.me && **k != id.origin)
            .collect();
        if self.one_ack && !others.is_empty() {
            others.iter().any(later)
        } else {
            others.iter().all(later)
        }
    }
    fn delivered(&mut self, id: &MsgId<Id>, stamps: &Stamps) {
        if stamps.assigns.is_none() {
            let ts = stamps.lamport.unwrap_or(0);
            self.queue.remove(&(ts, id.origin.clone(), id.seq));
        }
    }
    fn silent(&self, stamps: &Stamps) -> bool {
        stamps.assigns.is_some()
    }
}

/// Reliable total-order broadcast by Lamport timestamps (see the module
/// docs).
pub type LamportTotal<Id> = Reliable<Id, LamportOrder<Id>>;

#[cfg(test)]
mod tests {
    use super::*;

    fn id(origin: u32, seq: u64) -> MsgId<u32> {
        MsgId { origin, seq }
    }
    fn data(ts: u64) -> Stamps {
        Stamps {
            lamport: Some(ts),
            ..Stamps::default()
        }
    }
    fn ack(ts: u64, of: (u32, u64)) -> Stamps {
        Stamps {
            lamport: Some(ts),
            assigns: Some((clock_key(&of.0), of.1)),
            ..Stamps::default()
        }
    }

    #[test]
    fn the_head_waits_until_every_member_was_heard_from_later() {
        let none = BTreeMap::new();
        let mut o = LamportOrder::new(&1, &[1, 2, 3], &none);
        o.take_controls(&none);
        o.received(&id(2, 1), &data(5));
        let acks = o.take_controls(&none);
        assert_eq!(acks, vec![ack(6, (2, 1))], "acknowledged above its stamp");
        assert!(!o.ready(&id(2, 1), &data(5), &none), "3 not heard from");
        // 3's acknowledgement (its message 2) arrives before its message 1:
        // not counted until the prefix is complete.
        o.received(&id(3, 2), &ack(7, (2, 1)));
        assert!(!o.ready(&id(2, 1), &data(5), &none), "3's prefix has a gap");
        o.received(&id(3, 1), &data(4));
        assert!(
            !o.ready(&id(2, 1), &data(5), &none),
            "(4, 3) heads the queue"
        );
        // (4, 3) needs 2 heard after it: 2's message (5) is.
        assert!(o.ready(&id(3, 1), &data(4), &none));
        o.delivered(&id(3, 1), &data(4));
        assert!(o.ready(&id(2, 1), &data(5), &none));
    }

    #[test]
    fn equal_timestamps_are_ordered_by_origin() {
        let none = BTreeMap::new();
        let mut o = LamportOrder::new(&1, &[1, 2, 3], &none);
        o.received(&id(2, 1), &data(3));
        o.received(&id(3, 1), &data(3));
        // Heard from 3 at (3, 3) > (3, 2): 2's message may go first.
        assert!(o.ready(&id(2, 1), &data(3), &none));
        assert!(!o.ready(&id(3, 1), &data(3), &none));
    }
}
