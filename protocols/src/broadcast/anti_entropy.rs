//! Anti-entropy broadcast: push, pull and push-pull (Demers et al., 1987).
//!
//! The sender delivers its message and keeps it in its history buffer;
//! nothing is sent at once. Every round ([`GossipConfig::period`]) a member
//! that holds a message not known to be stable, or knows of one it lacks,
//! contacts [`GossipConfig::fanout`] random live peers and runs the
//! exchange of its [`Mode`] (see [`super::epidemic`]): **push** sends each
//! peer the buffered messages it may lack, **pull** sends a digest (per
//! origin, the [`super::SeqSet`] delivered) and receives what it lacks,
//! **push-pull** does both (digest, then the messages each side lacks). A
//! message reaches every member in `O(log N)` rounds (push about `log2 N +
//! ln N` with one peer per round, push-pull fastest); pull starts slowly
//! (a member pulls only once it has heard, from a digest, that a message
//! exists) and ends fast.
//!
//! Cost: background, not per message: each active member sends `fanout`
//! messages per round (push: one per contact plus a feedback digest when a
//! push brought nothing new; pull: two; push-pull: two or three), for as
//! long as a message is not known to be stable. Payloads travel only to a
//! member not known to hold them.
//!
//! Guarantees (see the [family docs](super)): integrity (no duplication,
//! across restarts too; no creation); **every member that stays connected
//! eventually delivers** every message a member delivered (validity and
//! agreement, uniform: the holder's buffer is durable), provided no member
//! misses a message for longer than the history
//! ([`GossipConfig::history_rounds`] rounds): past that a message not
//! known to be stable is dropped, and a member that was down or
//! partitioned away that long may never get it. No order. Partitions only
//! delay (each side spreads what it has; the exchange crosses once
//! healed). Membership reports only decide whom to contact: a false
//! suspicion delays the suspect's exchanges until it is reported up.

use std::time::Duration;

use super::epidemic::{Epidemic, GossipConfig, Mode, Pass, Spread, Store};
use crate::MemberId;

/// The anti-entropy exchange alone, in mode `M` (see the module docs).
#[derive(Debug, Clone, Default)]
pub struct Exchange<const M: u8>;

const PUSH: u8 = 0;
const PULL: u8 = 1;
const PUSH_PULL: u8 = 2;

impl<Id: MemberId, const M: u8> Spread<Id> for Exchange<M> {
    fn pass(config: &GossipConfig) -> Option<Pass> {
        let mode = match M {
            PUSH => Mode::Push,
            PULL => Mode::Pull,
            _ => Mode::PushPull,
        };
        Some(Pass {
            mode,
            period: config.period,
            fanout: config.fanout.max(1),
            min_age: Duration::ZERO,
        })
    }
    fn new(_: &Store<Id>) -> Self {
        Exchange
    }
}

/// Anti-entropy, push (see the module docs).
pub type AntiEntropyPush<Id> = Epidemic<Id, Exchange<PUSH>>;
/// Anti-entropy, pull (see the module docs).
pub type AntiEntropyPull<Id> = Epidemic<Id, Exchange<PULL>>;
/// Anti-entropy, push-pull (see the module docs).
pub type AntiEntropyPushPull<Id> = Epidemic<Id, Exchange<PUSH_PULL>>;
