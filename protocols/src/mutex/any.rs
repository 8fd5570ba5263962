//! [`AnyMutex`]: any of the mutex cores, chosen at run time by
//! [`MutexAlgorithm`] (for drivers configured from a file).
//!
//! It forwards every input to the chosen core and wraps its messages and
//! timers in [`AnyMutexMsg`] / [`AnyMutexTimer`], which say which algorithm
//! they belong to. A message of another algorithm (a misconfigured peer) is
//! dropped and counted in [`AnyMutex::foreign_messages`]; the guarantees are
//! those of the chosen algorithm.

use std::fmt::Debug;
use std::time::Duration;

use serde::{Deserialize, Serialize};
use troupe_framework::membership::MemberEvent;
use troupe_framework::sansio::{Outputs, Protocol};

use super::centralized::{CentralMsg, CentralTimer};
use super::lamport::{LamportMsg, LamportTimer};
use super::ricart_agrawala::{RaMsg, RaTimer};
use super::token_ring::{RingMsg, RingTimer};
use super::{
    Centralized, LamportMutex, MutexAlgorithm, MutexConfig, MutexCore, MutexDurable, MutexEvent,
    RicartAgrawala, TokenRing,
};
use crate::testkit::SimProtocol;

/// A wire message of one of the mutex algorithms.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum AnyMutexMsg {
    /// [`Centralized`].
    Centralized(CentralMsg),
    /// [`RicartAgrawala`].
    RicartAgrawala(RaMsg),
    /// [`TokenRing`].
    TokenRing(RingMsg),
    /// [`LamportMutex`].
    Lamport(LamportMsg),
}

/// A timer of one of the mutex algorithms.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum AnyMutexTimer {
    /// [`Centralized`].
    Centralized(CentralTimer),
    /// [`RicartAgrawala`].
    RicartAgrawala(RaTimer),
    /// [`TokenRing`].
    TokenRing(RingTimer),
    /// [`LamportMutex`].
    Lamport(LamportTimer),
}

#[derive(Debug, Clone)]
enum Inner<Id> {
    Centralized(Centralized<Id>),
    RicartAgrawala(RicartAgrawala<Id>),
    TokenRing(TokenRing<Id>),
    Lamport(LamportMutex<Id>),
}

/// Any mutex core, selected by [`MutexAlgorithm`].
#[derive(Debug, Clone)]
pub struct AnyMutex<Id> {
    inner: Inner<Id>,
    foreign: u64,
}

type Out<Id> = Outputs<Id, AnyMutexMsg, AnyMutexTimer, MutexEvent>;

/// Run `f` on a fresh output buffer of the inner core's types, then move its
/// outputs into `out`, wrapping messages and timers.
fn relay<Id, M, T>(
    out: &mut Out<Id>,
    wrap_msg: fn(M) -> AnyMutexMsg,
    wrap_timer: fn(T) -> AnyMutexTimer,
    f: impl FnOnce(&mut Outputs<Id, M, T, MutexEvent>),
) {
    let mut inner = Outputs::new();
    f(&mut inner);
    out.sends
        .extend(inner.sends.into_iter().map(|(to, m)| (to, wrap_msg(m))));
    out.timers
        .extend(inner.timers.into_iter().map(|(d, t)| (d, wrap_timer(t))));
    out.events.extend(inner.events);
}

macro_rules! each {
    ($self:ident, $out:ident, |$core:ident, $o:ident| $body:expr) => {
        match &mut $self.inner {
            Inner::Centralized($core) => relay(
                $out,
                AnyMutexMsg::Centralized,
                AnyMutexTimer::Centralized,
                |$o| $body,
            ),
            Inner::RicartAgrawala($core) => relay(
                $out,
                AnyMutexMsg::RicartAgrawala,
                AnyMutexTimer::RicartAgrawala,
                |$o| $body,
            ),
            Inner::TokenRing($core) => relay(
                $out,
                AnyMutexMsg::TokenRing,
                AnyMutexTimer::TokenRing,
                |$o| $body,
            ),
            Inner::Lamport($core) => {
                relay($out, AnyMutexMsg::Lamport, AnyMutexTimer::Lamport, |$o| {
                    $body
                })
            }
        }
    };
}

impl<Id: Clone + Ord + Debug> AnyMutex<Id> {
    /// A core of `algorithm` for `me` among `members`, restarted from
    /// `durable` if given.
    pub fn new(
        algorithm: MutexAlgorithm,
        me: Id,
        members: impl IntoIterator<Item = Id>,
        config: MutexConfig,
        durable: Option<MutexDurable>,
    ) -> Self {
        let inner = match algorithm {
            MutexAlgorithm::Centralized => {
                Inner::Centralized(Centralized::new(me, members, config, durable))
            }
            MutexAlgorithm::RicartAgrawala => {
                Inner::RicartAgrawala(RicartAgrawala::new(me, members, config, durable))
            }
            MutexAlgorithm::TokenRing => {
                Inner::TokenRing(TokenRing::new(me, members, config, durable))
            }
            MutexAlgorithm::Lamport => {
                Inner::Lamport(LamportMutex::new(me, members, config, durable))
            }
        };
        Self { inner, foreign: 0 }
    }

    /// The algorithm this core runs.
    pub fn algorithm(&self) -> MutexAlgorithm {
        match self.inner {
            Inner::Centralized(_) => MutexAlgorithm::Centralized,
            Inner::RicartAgrawala(_) => MutexAlgorithm::RicartAgrawala,
            Inner::TokenRing(_) => MutexAlgorithm::TokenRing,
            Inner::Lamport(_) => MutexAlgorithm::Lamport,
        }
    }

    /// Messages of another algorithm that were dropped.
    pub fn foreign_messages(&self) -> u64 {
        self.foreign
    }
}

impl<Id: Clone + Ord + Debug> MutexCore for AnyMutex<Id> {
    fn request(&mut self, now: Duration, out: &mut Out<Id>) {
        each!(self, out, |c, o| c.request(now, o));
    }
    fn release(&mut self, now: Duration, out: &mut Out<Id>) {
        each!(self, out, |c, o| c.release(now, o));
    }
    fn holding(&self) -> Option<u64> {
        match &self.inner {
            Inner::Centralized(c) => c.holding(),
            Inner::RicartAgrawala(c) => c.holding(),
            Inner::TokenRing(c) => c.holding(),
            Inner::Lamport(c) => c.holding(),
        }
    }
    fn is_waiting(&self) -> bool {
        match &self.inner {
            Inner::Centralized(c) => c.is_waiting(),
            Inner::RicartAgrawala(c) => c.is_waiting(),
            Inner::TokenRing(c) => c.is_waiting(),
            Inner::Lamport(c) => c.is_waiting(),
        }
    }
    fn request_stamp(&self) -> Option<u64> {
        match &self.inner {
            Inner::Centralized(c) => c.request_stamp(),
            Inner::RicartAgrawala(c) => c.request_stamp(),
            Inner::TokenRing(c) => c.request_stamp(),
            Inner::Lamport(c) => c.request_stamp(),
        }
    }
    fn epoch(&self) -> Option<u64> {
        match &self.inner {
            Inner::TokenRing(c) => c.epoch(),
            _ => None,
        }
    }
    fn held_epoch(&self) -> Option<u64> {
        match &self.inner {
            Inner::TokenRing(c) => c.held_epoch(),
            _ => None,
        }
    }
}

impl<Id: Clone + Ord + Debug> Protocol for AnyMutex<Id> {
    type Id = Id;
    type Msg = AnyMutexMsg;
    type Timer = AnyMutexTimer;
    type Event = MutexEvent;

    fn on_start(&mut self, now: Duration, out: &mut Out<Id>) {
        each!(self, out, |c, o| c.on_start(now, o));
    }

    fn on_message(&mut self, now: Duration, from: Id, msg: AnyMutexMsg, out: &mut Out<Id>) {
        match (&mut self.inner, msg) {
            (Inner::Centralized(c), AnyMutexMsg::Centralized(m)) => relay(
                out,
                AnyMutexMsg::Centralized,
                AnyMutexTimer::Centralized,
                |o| c.on_message(now, from, m, o),
            ),
            (Inner::RicartAgrawala(c), AnyMutexMsg::RicartAgrawala(m)) => relay(
                out,
                AnyMutexMsg::RicartAgrawala,
                AnyMutexTimer::RicartAgrawala,
                |o| c.on_message(now, from, m, o),
            ),
            (Inner::TokenRing(c), AnyMutexMsg::TokenRing(m)) => {
                relay(out, AnyMutexMsg::TokenRing, AnyMutexTimer::TokenRing, |o| {
                    c.on_message(now, from, m, o)
                })
            }
            (Inner::Lamport(c), AnyMutexMsg::Lamport(m)) => {
                relay(out, AnyMutexMsg::Lamport, AnyMutexTimer::Lamport, |o| {
                    c.on_message(now, from, m, o)
                })
            }
            _ => self.foreign += 1,
        }
    }

    fn on_timer(&mut self, now: Duration, timer: AnyMutexTimer, out: &mut Out<Id>) {
        match (&mut self.inner, timer) {
            (Inner::Centralized(c), AnyMutexTimer::Centralized(t)) => relay(
                out,
                AnyMutexMsg::Centralized,
                AnyMutexTimer::Centralized,
                |o| c.on_timer(now, t, o),
            ),
            (Inner::RicartAgrawala(c), AnyMutexTimer::RicartAgrawala(t)) => relay(
                out,
                AnyMutexMsg::RicartAgrawala,
                AnyMutexTimer::RicartAgrawala,
                |o| c.on_timer(now, t, o),
            ),
            (Inner::TokenRing(c), AnyMutexTimer::TokenRing(t)) => {
                relay(out, AnyMutexMsg::TokenRing, AnyMutexTimer::TokenRing, |o| {
                    c.on_timer(now, t, o)
                })
            }
            (Inner::Lamport(c), AnyMutexTimer::Lamport(t)) => {
                relay(out, AnyMutexMsg::Lamport, AnyMutexTimer::Lamport, |o| {
                    c.on_timer(now, t, o)
                })
            }
            // A timer of another algorithm cannot come from this core.
            _ => {}
        }
    }

    fn on_membership(&mut self, now: Duration, change: MemberEvent<Id>, out: &mut Out<Id>) {
        each!(self, out, |c, o| c.on_membership(now, change, o));
    }
}

impl<Id: Clone + Ord + Debug> SimProtocol for AnyMutex<Id> {
    type Durable = MutexDurable;
    fn durable(&self) -> MutexDurable {
        match &self.inner {
            Inner::Centralized(c) => c.durable(),
            Inner::RicartAgrawala(c) => c.durable(),
            Inner::TokenRing(c) => c.durable(),
            Inner::Lamport(c) => c.durable(),
        }
    }
    fn msg_kind(msg: &AnyMutexMsg) -> &'static str {
        match msg {
            AnyMutexMsg::Centralized(m) => Centralized::<Id>::msg_kind(m),
            AnyMutexMsg::RicartAgrawala(m) => RicartAgrawala::<Id>::msg_kind(m),
            AnyMutexMsg::TokenRing(m) => TokenRing::<Id>::msg_kind(m),
            AnyMutexMsg::Lamport(m) => LamportMutex::<Id>::msg_kind(m),
        }
    }
}
