//! Reliable FIFO broadcast: the eager reliable engine ([`super::reliable`])
//! with a per-sender hold-back queue.
//!
//! A message carries its origin's sequence number; a member delivers
//! message `seq` of an origin only after `seq - 1` of that origin, holding
//! back what arrives early (the history buffer is the hold-back queue).
//! Messages of different origins are delivered in any order: FIFO does not
//! respect causality across senders.
//!
//! Guarantees: those of [`super::reliable`] (integrity, validity, uniform
//! agreement, under every fault of the simulator, whatever the failure
//! detector says) plus **FIFO order**: one sender's messages are delivered
//! everywhere in the order it broadcast them, across its restarts too (its
//! sequence number is durable). The hold-back queue drains once the faults
//! heal. Cost: that of the engine, `N(N-1)` messages per broadcast.

use std::collections::BTreeMap;

use super::reliable::{Order, Reliable};
use super::{MsgId, SeqSet, Stamps};

/// Per-sender sequence order: deliver an origin's messages in sequence.
#[derive(Debug, Clone, Default)]
pub struct SenderOrder;

impl<Id: Ord> Order<Id> for SenderOrder {
    fn new(_: &Id, _: &[Id], _: &BTreeMap<Id, SeqSet>) -> Self {
        SenderOrder
    }
    fn stamp(&self, _: &Id, _: u64) -> Stamps {
        Stamps::default()
    }
    fn in_sequence(&self) -> bool {
        true
    }
    fn ready(&self, id: &MsgId<Id>, _: &Stamps, delivered: &BTreeMap<Id, SeqSet>) -> bool {
        let next = delivered.get(&id.origin).map_or(0, SeqSet::prefix) + 1;
        id.seq == next
    }
    fn delivered(&mut self, _: &MsgId<Id>, _: &Stamps) {}
    fn renamed(&self, _: &crate::testkit::model::Renaming<'_, Id>) -> Option<Self> {
        Some(SenderOrder)
    }
}

/// Reliable FIFO broadcast (see the module docs).
pub type Fifo<Id> = Reliable<Id, SenderOrder>;
