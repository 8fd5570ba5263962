//! Reliable causal broadcast: the eager reliable engine
//! ([`super::reliable`]) with a vector-clock hold-back queue (Birman,
//! Schiper and Stephenson 1991).
//!
//! Each member keeps its *delivered vector* `V` ([`VectorClock`], keyed by
//! [`clock_key`]): `V[k]` is how many of `k`'s broadcasts it delivered. A
//! broadcast carries the sender's `V` with its own entry counted
//! ([`Stamps::vector`]); a member delivers a message `m` of `j` when
//! [`VectorClock::can_deliver`] says so: `ts(m)[j] = V[j] + 1` (the next of
//! `j`'s messages) and `ts(m)[k] <= V[k]` for every `k != j` (everything `j`
//! had delivered when it sent `m` is delivered here), holding it back
//! otherwise. `V` is rebuilt after a restart from the durable per-origin
//! delivered prefixes.
//!
//! Guarantees: those of [`super::reliable`] (integrity, validity, uniform
//! agreement, under every fault of the simulator, whatever the failure
//! detector says) plus **causal order**: if the broadcast of `m`
//! happened before the broadcast of `m'`, every member delivers `m` before
//! `m'` (so FIFO too); concurrent messages may be delivered in different
//! orders. The hold-back queue drains once faults heal: a message waits only
//! for messages that exist (its sender delivered them), and every member
//! eventually holds them. Cost: that of the engine plus a vector of up to `N`
//! entries on every copy.

use std::collections::BTreeMap;

use troupe_framework::clock::VectorClock;

use super::reliable::{Order, Reliable};
use super::{clock_key, MsgId, SeqSet, Stamps};

/// The causal hold-back rule: this member's delivered vector.
#[derive(Debug, Clone, Default)]
pub struct VectorOrder {
    delivered: VectorClock,
}

impl<Id: std::fmt::Debug> Order<Id> for VectorOrder {
    fn new(_: &Id, _: &[Id], delivered: &BTreeMap<Id, SeqSet>) -> Self {
        let v = delivered.iter().map(|(o, s)| (clock_key(o), s.prefix()));
        Self {
            delivered: v.collect(),
        }
    }
    fn stamp(&self, me: &Id, _seq: u64) -> Stamps {
        let mut v = self.delivered.clone();
        v.increment(&clock_key(me));
        Stamps {
            vector: Some(v),
            ..Stamps::default()
        }
    }
    fn ready(&self, id: &MsgId<Id>, stamps: &Stamps, _: &BTreeMap<Id, SeqSet>) -> bool {
        let Some(ts) = &stamps.vector else {
            return false;
        };
        let from = clock_key(&id.origin);
        ts.get(&from) == id.seq && self.delivered.can_deliver(&from, ts)
    }
    fn delivered(&mut self, id: &MsgId<Id>, _: &Stamps) {
        self.delivered.increment(&clock_key(&id.origin));
    }
}

/// Reliable causal broadcast (see the module docs).
pub type Causal<Id> = Reliable<Id, VectorOrder>;
