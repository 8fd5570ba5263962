//! Ricart–Agrawala mutual exclusion.
//!
//! A requester stamps its request with its Lamport clock and sends it to every
//! live member; it enters once every one of them has replied. A member replies
//! at once unless it holds the lock or is itself requesting with a smaller
//! `(timestamp, id)`; then it defers the reply until it releases. Requests are
//! therefore granted in `(Lamport time, id)` order, and each entry costs
//! 2(N-1) messages (N-1 requests, N-1 replies), one round trip before entry.
//!
//! Guarantees: with an accurate failure detector, at most one holder, no
//! starvation, grants in request order; fencing tokens (carried on requests
//! and replies, max-merged) strictly increase across grants.
//!
//! Failure behaviour: a silent peer would block every requester forever; the
//! membership `Down` event removes it from the set being waited on (and from
//! the deferred set). A peer reported `Up` again (restart, healed partition)
//! is asked too. A false `Down` (partition) can let both sides enter: the
//! fencing token is the defence. Lost messages are recovered by re-sending the
//! request to the members that have not replied every `retry`; replies carry
//! the request's timestamp so a stale reply never counts for a newer request.

use std::collections::{BTreeMap, BTreeSet};
use std::fmt::Debug;
use std::time::Duration;

use serde::{Deserialize, Serialize};
use troupe_framework::membership::MemberEvent;
use troupe_framework::sansio::{Outputs, Protocol, Snapshot, SnapshotCore};

use super::{MutexConfig, MutexCore, MutexDurable, MutexEvent};
use crate::group::{Change, Group};
use crate::testkit::SimProtocol;

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

#[derive(Debug, Clone, PartialEq, Eq)]
enum State<Id> {
    Idle,
    Wanted { ts: u64, waiting: BTreeSet<Id> },
    Held { ts: u64, token: u64 },
}

/// A Ricart–Agrawala core for one member.
#[derive(Debug, Clone)]
pub struct RicartAgrawala<Id> {
    group: Group<Id>,
    config: MutexConfig,
    saved: Snapshot<MutexDurable>,
    clock: u64,
    max_token: u64,
    state: State<Id>,
    deferred: BTreeMap<Id, u64>,
}

type Out<Id> = Outputs<Id, RaMsg, RaTimer, MutexEvent>;

impl<Id: Clone + Ord + Debug> RicartAgrawala<Id> {
    /// A core for `me` among `members`, restarted from `durable` if given.
    /// Every member starts believed alive.
    pub fn new(
        me: Id,
        members: impl IntoIterator<Item = Id>,
        config: MutexConfig,
        durable: Option<MutexDurable>,
    ) -> Self {
        let saved = Snapshot::resumed(durable);
        let d = durable.unwrap_or_default();
        Self {
            group: Group::new(me, members),
            config,
            saved,
            clock: d.clock,
            max_token: d.max_token,
            state: State::Idle,
            deferred: BTreeMap::new(),
        }
    }

    fn maybe_enter(&mut self, out: &mut Out<Id>) {
        if let State::Wanted { ts, waiting } = &self.state {
            if waiting.is_empty() {
                let ts = *ts;
                self.max_token += 1;
                let token = self.max_token;
                self.state = State::Held { ts, token };
                out.emit(MutexEvent::Granted {
                    resource: self.config.resource.clone(),
                    fencing_token: token,
                });
            }
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
}

impl<Id: Clone + Ord + Debug> MutexCore for RicartAgrawala<Id> {
    fn request(&mut self, _now: Duration, out: &mut Out<Id>) {
        if self.state != State::Idle {
            return;
        }
        self.clock += 1;
        let ts = self.clock;
        let waiting: BTreeSet<Id> = self.group.live_peers().cloned().collect();
        for p in &waiting {
            self.send_request(p.clone(), ts, out);
        }
        self.state = State::Wanted { ts, waiting };
        out.set_timer(self.config.retry, RaTimer::Retry { ts });
        self.maybe_enter(out);
    }

    fn release(&mut self, _now: Duration, out: &mut Out<Id>) {
        let State::Held { token, .. } = self.state else {
            return;
        };
        self.state = State::Idle;
        for (p, req_ts) in std::mem::take(&mut self.deferred) {
            out.send(
                p,
                RaMsg::Reply {
                    req_ts,
                    token: self.max_token,
                },
            );
        }
        out.emit(MutexEvent::Released {
            resource: self.config.resource.clone(),
            fencing_token: token,
        });
    }

    fn holding(&self) -> Option<u64> {
        match self.state {
            State::Held { token, .. } => Some(token),
            _ => None,
        }
    }

    fn is_waiting(&self) -> bool {
        matches!(self.state, State::Wanted { .. })
    }

    fn request_stamp(&self) -> Option<u64> {
        match self.state {
            State::Wanted { ts, .. } | State::Held { ts, .. } => Some(ts),
            State::Idle => None,
        }
    }
}

impl<Id: Clone + Ord + Debug> Protocol for RicartAgrawala<Id> {
    type Id = Id;
    type Msg = RaMsg;
    type Timer = RaTimer;
    type Event = MutexEvent;

    fn persist(&mut self, out: &mut Out<Id>) {
        let state = self.state();
        self.saved.save(state, out);
    }

    fn on_start(&mut self, _now: Duration, _out: &mut Out<Id>) {}

    fn on_message(&mut self, _now: Duration, from: Id, msg: RaMsg, out: &mut Out<Id>) {
        match msg {
            RaMsg::Request { ts, token } => {
                self.clock = self.clock.max(ts) + 1;
                self.max_token = self.max_token.max(token);
                let defer = match &self.state {
                    State::Held { .. } => true,
                    State::Wanted { ts: mine, .. } => (*mine, self.group.me()) < (ts, &from),
                    State::Idle => false,
                };
                if defer {
                    let e = self.deferred.entry(from).or_insert(ts);
                    *e = (*e).max(ts);
                } else {
                    out.send(
                        from,
                        RaMsg::Reply {
                            req_ts: ts,
                            token: self.max_token,
                        },
                    );
                }
            }
            RaMsg::Reply { req_ts, token } => {
                self.max_token = self.max_token.max(token);
                if let State::Wanted { ts, waiting } = &mut self.state {
                    if *ts == req_ts {
                        waiting.remove(&from);
                    }
                }
                self.maybe_enter(out);
            }
        }
    }

    fn on_timer(&mut self, _now: Duration, timer: RaTimer, out: &mut Out<Id>) {
        let RaTimer::Retry { ts } = timer;
        if let State::Wanted { ts: mine, waiting } = &self.state {
            if *mine == ts {
                for p in waiting.clone() {
                    self.send_request(p, ts, out);
                }
                out.set_timer(self.config.retry, RaTimer::Retry { ts });
            }
        }
    }

    fn on_membership(&mut self, _now: Duration, change: MemberEvent<Id>, out: &mut Out<Id>) {
        match self.group.apply(change) {
            Some(Change::Back(m) | Change::Live(m)) => {
                if let State::Wanted { ts, waiting } = &mut self.state {
                    let ts = *ts;
                    if waiting.insert(m.clone()) {
                        self.send_request(m, ts, out);
                    }
                }
            }
            Some(Change::Gone(m)) => {
                self.deferred.remove(&m);
                if let State::Wanted { waiting, .. } = &mut self.state {
                    waiting.remove(&m);
                }
                self.maybe_enter(out);
            }
            None => {}
        }
    }
}

impl<Id: Clone + Ord + Debug> SnapshotCore for RicartAgrawala<Id> {
    type State = MutexDurable;
    fn state(&self) -> MutexDurable {
        MutexDurable {
            clock: self.clock,
            max_token: self.max_token,
            seq: 0,
            hop: 0,
        }
    }
}

impl<Id: Clone + Ord + Debug> SimProtocol for RicartAgrawala<Id> {
    fn msg_kind(msg: &RaMsg) -> &'static str {
        match msg {
            RaMsg::Request { .. } => "request",
            RaMsg::Reply { .. } => "reply",
        }
    }
}
