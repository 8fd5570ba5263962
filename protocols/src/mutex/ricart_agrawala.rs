//! Ricart–Agrawala mutual exclusion.
//!
//! A requester stamps its request with its Lamport clock and sends it to every
//! live member; it enters once every one of them has replied. A member replies
//! at once unless it holds the lock or is itself requesting with a smaller
//! `(timestamp, id)`; then it defers the reply until it releases. Requests are
//! therefore granted in `(Lamport time, id)` order, and each entry costs
//! 2(N-1) messages (N-1 requests, N-1 replies), one round trip before entry.
//!
//! Guarantees (stated exactly in the [module docs](super), exposure
//! [`Exposure::Holders`](super::Exposure)): two members hold the lock at
//! once only if one of them falsely suspected the other between its request
//! and its grant, so with an accurate failure detector at most one holder;
//! no starvation, grants in request order; fencing tokens (carried on
//! requests and replies, max-merged) grow across grants, except past a
//! token that died with a crashed holder that had not passed it on.
//!
//! Failure behaviour: a silent peer would block every requester forever; the
//! membership `Down` event removes it from the set being waited on (and from
//! the deferred set). A peer reported `Up` again (restart, healed partition)
//! is asked too. A false `Down` (partition) can let both sides enter: the
//! fencing token is the defence. Lost messages are recovered by re-sending the
//! request to the members that have not replied every `retry`; replies carry
//! the request's timestamp so a stale reply never counts for a newer request.

use std::time::Duration;

use serde::{Deserialize, Serialize};
use troupe_framework::membership::MemberEvent;
use troupe_framework::sansio::{Outputs, Protocol};

use super::{Exposure, Lock, LockCommands, LockState, Mine, MutexEvent};
use crate::family::protocol_types;
use crate::group::Change;
use crate::MemberId;

/// Ricart–Agrawala wire messages.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum RaMsg {
    /// "May I enter?", stamped with the requester's Lamport time.
    Request {
        /// Lamport timestamp of the request.
        ts: u64,
        /// Largest fencing token the requester has seen.
        token: u64,
    },
    /// "Go ahead" for the request stamped `req_ts`.
    Reply {
        /// The timestamp of the request this answers.
        req_ts: u64,
        /// Largest fencing token the replier has seen.
        token: u64,
    },
}

/// Ricart–Agrawala timers.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RaTimer {
    /// Re-send the request stamped `ts` to members that have not replied.
    Retry {
        /// Which request.
        ts: u64,
    },
}

/// A Ricart–Agrawala core for one member.
pub type RicartAgrawala<Id> = Lock<Id, RaState>;

/// Ricart–Agrawala's own state (see [`RicartAgrawala`]): nothing besides
/// what every [`Lock`] keeps (the replies it defers until it releases
/// included).
#[derive(Debug, Clone, Default)]
pub struct RaState;

impl LockState for RaState {
    const STAMPED: bool = true;
    const EXPOSURE: Exposure = Exposure::Holders;
}

type Out<Id> = Outputs<Id, RaMsg, RaTimer, MutexEvent>;

impl<Id: MemberId> RicartAgrawala<Id> {
    /// "Go ahead" for the request stamped `req_ts`.
    fn reply(&self, req_ts: u64) -> RaMsg {
        RaMsg::Reply {
            req_ts,
            token: self.max_token,
        }
    }

    fn maybe_enter(&mut self, out: &mut Out<Id>) {
        if self.mine.answered_by_all().is_some() {
            self.max_token += 1;
            self.hold(self.max_token, out);
        }
    }

    fn send_request(&self, to: Id, ts: u64, out: &mut Out<Id>) {
        out.send(
            to,
            RaMsg::Request {
                ts,
                token: self.max_token,
            },
        );
    }

    /// A request stamped `ts`: reply at once, or defer the reply while
    /// holding or while our own request goes first.
    fn on_request(&mut self, from: Id, ts: u64, token: u64, out: &mut Out<Id>) {
        self.witness(ts, token);
        let defer = match &self.mine {
            Mine::Held { .. } => true,
            Mine::Waiting { req: mine, .. } if self.config.unsafe_no_tie_break => *mine < ts,
            Mine::Waiting { req: mine, .. } => (*mine, self.group.me()) < (ts, &from),
            Mine::Idle => false,
        };
        if defer {
            self.deferred.defer(from, ts);
        } else {
            out.send(from, self.reply(ts));
        }
    }
}

impl<Id: MemberId> LockCommands for RicartAgrawala<Id> {
    fn request(&mut self, _now: Duration, out: &mut Out<Id>) {
        let Some((ts, peers)) = self.start_stamped() else {
            return;
        };
        for p in peers {
            self.send_request(p, ts, out);
        }
        out.set_timer(self.config.retry, RaTimer::Retry { ts });
        self.maybe_enter(out);
    }

    fn release(&mut self, _now: Duration, out: &mut Out<Id>) {
        if self.unhold(out).is_some() {
            self.answer_deferred(Self::reply, out);
        }
    }
}

impl<Id: MemberId> Protocol for RicartAgrawala<Id> {
    protocol_types!(RaMsg, RaTimer, MutexEvent);

    fn on_message(&mut self, _now: Duration, from: Id, msg: RaMsg, out: &mut Out<Id>) {
        match msg {
            RaMsg::Request { ts, token } => self.on_request(from, ts, token, out),
            RaMsg::Reply { req_ts, token } => {
                self.see(token);
                self.mine.answered(&from, req_ts);
                self.maybe_enter(out);
            }
        }
    }

    fn on_timer(&mut self, _now: Duration, timer: RaTimer, out: &mut Out<Id>) {
        let RaTimer::Retry { ts } = timer;
        if let Mine::Waiting { req, from } = &self.mine {
            if *req == ts {
                for p in from.clone() {
                    self.send_request(p, ts, out);
                }
                out.set_timer(self.config.retry, RaTimer::Retry { ts });
            }
        }
    }

    fn on_membership(&mut self, _now: Duration, change: MemberEvent<Id>, out: &mut Out<Id>) {
        match self.group.apply(change) {
            Some(Change::Back(m) | Change::Live(m)) => {
                if let Some(ts) = self.mine.ask(m.clone()) {
                    self.send_request(m, ts, out);
                }
            }
            Some(Change::Gone(m)) => {
                self.deferred.forget(&m);
                self.mine.forget(&m);
                self.maybe_enter(out);
            }
            None => {}
        }
    }

    fn persist(&mut self, out: &mut Out<Id>) {
        self.save(out);
    }
}
