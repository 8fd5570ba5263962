//! [`AnyElection`]: any of the election cores, chosen at run time by
//! [`ElectionAlgorithm`] (for drivers configured from a file).
//!
//! It forwards every input to the chosen core and wraps its messages and
//! timers in [`AnyElectionMsg`] / [`AnyElectionTimer`], which say which
//! algorithm they belong to. A message of another algorithm (a misconfigured
//! peer) is dropped and counted in [`AnyElection::foreign_messages`]; the
//! guarantees are those of the chosen algorithm.

use std::fmt::Debug;
use std::time::Duration;

use serde::{Deserialize, Serialize};
use troupe_framework::membership::MemberEvent;
use troupe_framework::sansio::{Outputs, Protocol};

use super::bully::{BullyMsg, BullyTimer};
use super::next_in_line::{NextInLineMsg, NextInLineTimer};
use super::ring::{RingElectionMsg, RingElectionTimer};
use super::{
    Bully, ElectionAlgorithm, ElectionConfig, ElectionCore, ElectionDurable, ElectionEvent,
    NextInLine, RingElection,
};
use crate::testkit::SimProtocol;

/// A wire message of one of the election algorithms.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum AnyElectionMsg<Id> {
    /// [`Bully`].
    Bully(BullyMsg<Id>),
    /// [`RingElection`].
    Ring(RingElectionMsg<Id>),
    /// [`NextInLine`].
    NextInLine(NextInLineMsg<Id>),
}

/// A timer of one of the election algorithms.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum AnyElectionTimer {
    /// [`Bully`].
    Bully(BullyTimer),
    /// [`RingElection`].
    Ring(RingElectionTimer),
    /// [`NextInLine`].
    NextInLine(NextInLineTimer),
}

#[derive(Debug, Clone)]
enum Inner<Id> {
    Bully(Bully<Id>),
    Ring(RingElection<Id>),
    NextInLine(NextInLine<Id>),
}

/// Any election core, selected by [`ElectionAlgorithm`].
#[derive(Debug, Clone)]
pub struct AnyElection<Id> {
    inner: Inner<Id>,
    foreign: u64,
}

type Out<Id> = Outputs<Id, AnyElectionMsg<Id>, AnyElectionTimer, ElectionEvent<Id>>;

fn relay<Id, M, T>(
    out: &mut Out<Id>,
    wrap_msg: fn(M) -> AnyElectionMsg<Id>,
    wrap_timer: fn(T) -> AnyElectionTimer,
    f: impl FnOnce(&mut Outputs<Id, M, T, ElectionEvent<Id>>),
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
            Inner::Bully($core) => {
                relay($out, AnyElectionMsg::Bully, AnyElectionTimer::Bully, |$o| {
                    $body
                })
            }
            Inner::Ring($core) => relay($out, AnyElectionMsg::Ring, AnyElectionTimer::Ring, |$o| {
                $body
            }),
            Inner::NextInLine($core) => relay(
                $out,
                AnyElectionMsg::NextInLine,
                AnyElectionTimer::NextInLine,
                |$o| $body,
            ),
        }
    };
}

macro_rules! read {
    ($self:ident, |$core:ident| $body:expr) => {
        match &$self.inner {
            Inner::Bully($core) => $body,
            Inner::Ring($core) => $body,
            Inner::NextInLine($core) => $body,
        }
    };
}

impl<Id: Clone + Ord + Debug> AnyElection<Id> {
    /// A core of `algorithm` for `me` among `members`, restarted from
    /// `durable` if given.
    pub fn new(
        algorithm: ElectionAlgorithm,
        me: Id,
        members: impl IntoIterator<Item = Id>,
        config: ElectionConfig,
        durable: Option<ElectionDurable<Id>>,
    ) -> Self {
        let inner = match algorithm {
            ElectionAlgorithm::Bully => Inner::Bully(Bully::new(me, members, config, durable)),
            ElectionAlgorithm::Ring => Inner::Ring(RingElection::new(me, members, config, durable)),
            ElectionAlgorithm::NextInLine => {
                Inner::NextInLine(NextInLine::new(me, members, config, durable))
            }
        };
        Self { inner, foreign: 0 }
    }

    /// The algorithm this core runs.
    pub fn algorithm(&self) -> ElectionAlgorithm {
        match self.inner {
            Inner::Bully(_) => ElectionAlgorithm::Bully,
            Inner::Ring(_) => ElectionAlgorithm::Ring,
            Inner::NextInLine(_) => ElectionAlgorithm::NextInLine,
        }
    }

    /// Messages of another algorithm that were dropped.
    pub fn foreign_messages(&self) -> u64 {
        self.foreign
    }
}

impl<Id: Clone + Ord + Debug> ElectionCore for AnyElection<Id> {
    fn term(&self) -> u64 {
        read!(self, |c| c.term())
    }
    fn leader(&self) -> Option<&Id> {
        read!(self, |c| c.leader())
    }
    fn id(&self) -> &Id {
        read!(self, |c| c.id())
    }
}

impl<Id: Clone + Ord + Debug> Protocol for AnyElection<Id> {
    type Id = Id;
    type Msg = AnyElectionMsg<Id>;
    type Timer = AnyElectionTimer;
    type Event = ElectionEvent<Id>;

    fn on_start(&mut self, now: Duration, out: &mut Out<Id>) {
        each!(self, out, |c, o| c.on_start(now, o));
    }

    fn on_message(&mut self, now: Duration, from: Id, msg: AnyElectionMsg<Id>, out: &mut Out<Id>) {
        match (&mut self.inner, msg) {
            (Inner::Bully(c), AnyElectionMsg::Bully(m)) => {
                relay(out, AnyElectionMsg::Bully, AnyElectionTimer::Bully, |o| {
                    c.on_message(now, from, m, o)
                })
            }
            (Inner::Ring(c), AnyElectionMsg::Ring(m)) => {
                relay(out, AnyElectionMsg::Ring, AnyElectionTimer::Ring, |o| {
                    c.on_message(now, from, m, o)
                })
            }
            (Inner::NextInLine(c), AnyElectionMsg::NextInLine(m)) => relay(
                out,
                AnyElectionMsg::NextInLine,
                AnyElectionTimer::NextInLine,
                |o| c.on_message(now, from, m, o),
            ),
            _ => self.foreign += 1,
        }
    }

    fn on_timer(&mut self, now: Duration, timer: AnyElectionTimer, out: &mut Out<Id>) {
        match (&mut self.inner, timer) {
            (Inner::Bully(c), AnyElectionTimer::Bully(t)) => {
                relay(out, AnyElectionMsg::Bully, AnyElectionTimer::Bully, |o| {
                    c.on_timer(now, t, o)
                })
            }
            (Inner::Ring(c), AnyElectionTimer::Ring(t)) => {
                relay(out, AnyElectionMsg::Ring, AnyElectionTimer::Ring, |o| {
                    c.on_timer(now, t, o)
                })
            }
            (Inner::NextInLine(c), AnyElectionTimer::NextInLine(t)) => relay(
                out,
                AnyElectionMsg::NextInLine,
                AnyElectionTimer::NextInLine,
                |o| c.on_timer(now, t, o),
            ),
            // A timer of another algorithm cannot come from this core.
            _ => {}
        }
    }

    fn on_membership(&mut self, now: Duration, change: MemberEvent<Id>, out: &mut Out<Id>) {
        each!(self, out, |c, o| c.on_membership(now, change, o));
    }
}

impl<Id: Clone + Ord + Debug> SimProtocol for AnyElection<Id> {
    type Durable = ElectionDurable<Id>;
    fn durable(&self) -> ElectionDurable<Id> {
        read!(self, |c| c.durable())
    }
    fn msg_kind(msg: &AnyElectionMsg<Id>) -> &'static str {
        match msg {
            AnyElectionMsg::Bully(m) => Bully::<Id>::msg_kind(m),
            AnyElectionMsg::Ring(m) => RingElection::<Id>::msg_kind(m),
            AnyElectionMsg::NextInLine(m) => NextInLine::<Id>::msg_kind(m),
        }
    }
}
