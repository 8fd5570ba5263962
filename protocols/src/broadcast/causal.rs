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
    fn in_sequence(&self) -> bool {
        true
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
    fn renamed(&self, r: &crate::testkit::model::Renaming<'_, Id>) -> Option<Self> {
        let delivered = self.delivered.iter().map(|(k, c)| (r.key(k), c)).collect();
        Some(Self { delivered })
    }
}

/// Reliable causal broadcast (see the module docs).
pub type Causal<Id> = Reliable<Id, VectorOrder>;

#[cfg(test)]
mod tests {
    use super::*;
    use crate::broadcast::{BroadcastConfig, BroadcastCore, BroadcastEvent, Engine};
    use crate::driver::OutputsOf;
    use troupe_framework::sansio::Protocol;

    type Core = Causal<u32>;

    fn core(me: u32) -> Core {
        let config = BroadcastConfig {
            keep_log: true,
            ..BroadcastConfig::default()
        };
        Causal::new(me, [1, 2, 3], config, None)
    }

    /// (index, payload, held back) of every delivery in `out`.
    fn deliveries(out: &OutputsOf<Core>) -> Vec<(u64, Vec<u8>, bool)> {
        out.events
            .iter()
            .map(
                |BroadcastEvent::Delivered {
                     index,
                     payload,
                     held_back,
                     ..
                 }| { (*index, payload.clone(), *held_back) },
            )
            .collect()
    }

    /// The first copy of a data message `from` sent to `to` in `out`.
    fn copy_to(out: &OutputsOf<Core>, to: u32) -> RelayMsgOf {
        out.sends
            .iter()
            .find(|(d, _)| *d == to)
            .expect("a copy")
            .1
            .clone()
    }
    type RelayMsgOf = crate::broadcast::RelayMsg<u32>;

    #[test]
    fn a_reply_that_arrives_before_its_cause_waits_and_is_marked_held_back() {
        let now = std::time::Duration::ZERO;
        let (mut a, mut b, mut c) = (core(1), core(2), core(3));
        let mut out = OutputsOf::<Core>::new();
        a.broadcast(b"question".to_vec(), now, &mut out);
        let question = copy_to(&out, 2);
        let mut out = OutputsOf::<Core>::new();
        b.on_message(now, 1, question.clone(), &mut out);
        assert_eq!(deliveries(&out), vec![(1, b"question".to_vec(), false)]);
        let mut out = OutputsOf::<Core>::new();
        b.broadcast(b"answer".to_vec(), now, &mut out);
        let answer = copy_to(&out, 3);
        // c hears the answer first: it waits for its cause.
        let mut out = OutputsOf::<Core>::new();
        c.on_message(now, 2, answer, &mut out);
        assert!(
            deliveries(&out).is_empty(),
            "the answer waits for the question"
        );
        assert_eq!(c.stats().held_back, 1);
        let mut out = OutputsOf::<Core>::new();
        c.on_message(now, 1, question, &mut out);
        assert_eq!(
            deliveries(&out),
            vec![
                (1, b"question".to_vec(), false),
                (2, b"answer".to_vec(), true)
            ]
        );
        // Both are in the delivery log, at their indexes, in the same step
        // (contiguous appends may share one write).
        let logged: Vec<u64> = out
            .writes
            .iter()
            .flat_map(|w| match w {
                troupe_framework::sansio::Write::Append {
                    log,
                    first,
                    records,
                } if log == crate::broadcast::DELIVERY_LOG => *first..*first + records.len() as u64,
                _ => 0..0,
            })
            .collect();
        assert_eq!(logged, vec![1, 2]);
    }
}
