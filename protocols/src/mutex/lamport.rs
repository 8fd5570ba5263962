//! Lamport's distributed mutual exclusion (1978): a replicated request queue.
//!
//! A requester stamps a `Request` with its Lamport clock, puts it in its own
//! queue and sends it to every live member; each inserts it into its queue and
//! answers with a timestamped `Ack`. A member enters when its own request is
//! the first of its queue in `(timestamp, id)` order and it has an `Ack` for it
//! from every live member. On leaving it removes its request and sends
//! `Release` to all, which removes it everywhere. Cost: 3(N-1) messages per
//! entry and exit (requests, acks, releases), one round trip before entry.
//!
//! The textbook algorithm assumes FIFO channels. This core does not: an `Ack`
//! carries the sender's own pending request (so it cannot overtake it), a
//! member remembers the largest released timestamp of every peer (so a late
//! `Request` or duplicate never resurrects a finished request), and a newer
//! request from a peer supersedes its older ones.
//!
//! Guarantees (stated exactly in the [module docs](super), exposure
//! [`Exposure::Holders`](super::Exposure)): two members hold the lock at
//! once only if one of them falsely suspected the other between its request
//! and its grant, so with an accurate failure detector at most one holder;
//! grants in `(Lamport time, id)` order, so no starvation; fencing tokens
//! (piggybacked on every message, max-merged) grow across grants, except
//! past a token that died with a crashed holder that had not passed it on.
//!
//! A member that restarts (or that the others entered without, while it was
//! down) may stamp its next request *before* a request that holds the lock:
//! its clock never saw it. A holder therefore acknowledges a request stamped
//! before its own only when it leaves, so that request cannot come first in
//! its owner's queue while the lock is held.
//!
//! Failure behaviour: a member reported `Down` is dropped from the queue and
//! from the acks being waited for; one reported `Up` again is sent the
//! pending request. Lost requests and acks are recovered by re-sending the
//! request every `retry` to the members that have not acked; a lost `Release`
//! is recovered by asking (`Inquire`) the owner of a request that has stayed
//! ahead of ours for a `retry`; the owner answers with `Release` if it is done.

use std::collections::{BTreeMap, BTreeSet};
use std::time::Duration;

use serde::{Deserialize, Serialize};
use troupe_framework::membership::MemberEvent;
use troupe_framework::sansio::{Outputs, Protocol};

use super::{Exposure, Lock, LockCommands, LockState, Mine, MutexEvent};
use crate::family::protocol_types;
use crate::group::Change;
use crate::MemberId;

/// Lamport-mutex wire messages.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum LamportMsg {
    /// A request stamped with the requester's Lamport time.
    Request {
        /// Request timestamp.
        ts: u64,
        /// Largest fencing token the sender has seen.
        token: u64,
    },
    /// Acknowledges the request stamped `req_ts`.
    Ack {
        /// The acknowledged request.
        req_ts: u64,
        /// The sender's Lamport time.
        ts: u64,
        /// The sender's own pending (or held) request, if any.
        pending: Option<u64>,
        /// Largest fencing token the sender has seen.
        token: u64,
    },
    /// The request stamped `ts` is finished.
    Release {
        /// The finished request.
        ts: u64,
        /// Largest fencing token the sender has seen.
        token: u64,
    },
    /// "Is your request stamped `ts` still active?" (repairs a lost release).
    Inquire {
        /// The request asked about.
        ts: u64,
    },
}

/// Lamport-mutex timers.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum LamportTimer {
    /// Re-send what is unanswered for request `ts`.
    Retry {
        /// Which request.
        ts: u64,
    },
}

/// A Lamport-mutex core for one member.
pub type LamportMutex<Id> = Lock<Id, LamportState<Id>>;

/// The Lamport mutex's own state (see [`LamportMutex`]): this member's copy
/// of the request queue.
#[derive(Debug, Clone)]
pub struct LamportState<Id> {
    /// Pending requests, in `(timestamp, id)` order.
    queue: BTreeSet<(u64, Id)>,
    /// The largest finished request of every member.
    released: BTreeMap<Id, u64>,
}

impl<Id> Default for LamportState<Id> {
    fn default() -> Self {
        Self {
            queue: BTreeSet::new(),
            released: BTreeMap::new(),
        }
    }
}

impl<Id: Clone + std::fmt::Debug> LockState for LamportState<Id> {
    const STAMPED: bool = true;
    const EXPOSURE: Exposure = Exposure::Holders;
}

impl<Id: Ord + Clone> LamportState<Id> {
    /// Record that `from` has a request stamped `ts` (unless already finished).
    fn note_request(&mut self, from: &Id, ts: u64) {
        if self.released.get(from).is_some_and(|r| *r >= ts) {
            return;
        }
        // A member has one request at a time: older ones are finished.
        let older: Vec<(u64, Id)> = self
            .queue
            .iter()
            .filter(|(t, id)| id == from && *t < ts)
            .cloned()
            .collect();
        for o in older {
            self.queue.remove(&o);
            let r = self.released.entry(from.clone()).or_insert(0);
            *r = (*r).max(o.0);
        }
        self.queue.insert((ts, from.clone()));
    }

    fn note_release(&mut self, from: &Id, ts: u64) {
        let r = self.released.entry(from.clone()).or_insert(0);
        *r = (*r).max(ts);
        self.queue.retain(|(t, id)| !(id == from && *t <= ts));
    }
}

type Out<Id> = Outputs<Id, LamportMsg, LamportTimer, MutexEvent>;

impl<Id: MemberId> LamportMutex<Id> {
    /// Number of requests in this member's copy of the queue.
    pub fn queue_len(&self) -> usize {
        self.alg.queue.len()
    }

    /// Record that `from` has a request stamped `ts`, unless `from` is
    /// reported down: then it is a late message of a dead incarnation (or
    /// the view is stale; its `Up` makes us ask again).
    fn note_request(&mut self, from: &Id, ts: u64) {
        if self.group.is_live(from) {
            self.alg.note_request(from, ts);
        }
    }

    /// The acknowledgement of the request stamped `req_ts`, with our own
    /// pending (or held) request so that it cannot overtake it.
    fn ack(&self, req_ts: u64) -> LamportMsg {
        LamportMsg::Ack {
            req_ts,
            ts: self.clock,
            pending: self.mine.req(),
            token: self.max_token,
        }
    }

    fn maybe_enter(&mut self, out: &mut Out<Id>) {
        let Some(ts) = self.mine.answered_by_all() else {
            return;
        };
        let me = self.group.me();
        if self
            .alg
            .queue
            .first()
            .is_some_and(|(t, id)| *t == ts && id == me)
        {
            self.max_token += 1;
            self.hold(self.max_token, out);
        }
    }
}

impl<Id: MemberId> LockCommands for LamportMutex<Id> {
    fn request(&mut self, _now: Duration, out: &mut Out<Id>) {
        let Some((ts, unacked)) = self.start_stamped() else {
            return;
        };
        for p in unacked {
            out.send(
                p,
                LamportMsg::Request {
                    ts,
                    token: self.max_token,
                },
            );
        }
        self.alg.queue.insert((ts, self.group.me().clone()));
        out.set_timer(self.config.retry, LamportTimer::Retry { ts });
        self.maybe_enter(out);
    }

    fn release(&mut self, _now: Duration, out: &mut Out<Id>) {
        let Some((ts, _)) = self.unhold(out) else {
            return;
        };
        self.alg.note_release(self.group.me(), ts);
        for p in self.group.live_peers() {
            out.send(
                p.clone(),
                LamportMsg::Release {
                    ts,
                    token: self.max_token,
                },
            );
        }
        self.answer_deferred(Self::ack, out);
    }
}

impl<Id: MemberId> Protocol for LamportMutex<Id> {
    protocol_types!(LamportMsg, LamportTimer, MutexEvent);

    fn on_message(&mut self, _now: Duration, from: Id, msg: LamportMsg, out: &mut Out<Id>) {
        match msg {
            LamportMsg::Request { ts, token } => {
                self.witness(ts, token);
                self.note_request(&from, ts);
                // A request stamped before the one we hold the lock with (a
                // member that restarted, or that we entered without hearing
                // from, while it was down) would come first in its own
                // queue: acknowledge it only when we leave.
                let earlier = matches!(self.mine, Mine::Held { req, .. }
                    if (ts, &from) < (req, self.group.me()));
                let finished = self.alg.released.get(&from).is_some_and(|r| *r >= ts);
                if earlier && !finished {
                    self.deferred.defer(from, ts);
                } else {
                    out.send(from, self.ack(ts));
                }
            }
            LamportMsg::Ack {
                req_ts,
                ts,
                pending,
                token,
            } => {
                self.witness(ts, token);
                if let Some(p) = pending {
                    self.note_request(&from, p);
                }
                self.mine.answered(&from, req_ts);
            }
            LamportMsg::Release { ts, token } => {
                self.see(token);
                self.alg.note_release(&from, ts);
            }
            LamportMsg::Inquire { ts } => {
                if self.mine.req() != Some(ts) {
                    out.send(
                        from,
                        LamportMsg::Release {
                            ts,
                            token: self.max_token,
                        },
                    );
                }
            }
        }
        self.maybe_enter(out);
    }

    fn on_timer(&mut self, _now: Duration, timer: LamportTimer, out: &mut Out<Id>) {
        let LamportTimer::Retry { ts } = timer;
        let Mine::Waiting { req, from: unacked } = &self.mine else {
            return;
        };
        if *req != ts {
            return;
        }
        for p in unacked.clone() {
            out.send(
                p,
                LamportMsg::Request {
                    ts,
                    token: self.max_token,
                },
            );
        }
        let ahead: Vec<(u64, Id)> = self
            .alg
            .queue
            .iter()
            .take_while(|(t, id)| (*t, id) < (ts, self.group.me()))
            .cloned()
            .collect();
        for (t, id) in ahead {
            out.send(id, LamportMsg::Inquire { ts: t });
        }
        out.set_timer(self.config.retry, LamportTimer::Retry { ts });
    }

    fn on_membership(&mut self, _now: Duration, change: MemberEvent<Id>, out: &mut Out<Id>) {
        match self.group.apply(change) {
            Some(Change::Back(m)) => {
                if let Some(ts) = self.mine.req() {
                    self.mine.ask(m.clone());
                    out.send(
                        m,
                        LamportMsg::Request {
                            ts,
                            token: self.max_token,
                        },
                    );
                }
            }
            Some(Change::Gone(m)) => {
                self.alg.queue.retain(|(_, id)| *id != m);
                self.deferred.forget(&m);
                self.mine.forget(&m);
                self.maybe_enter(out);
            }
            Some(Change::Live(_)) | None => {}
        }
    }

    fn persist(&mut self, out: &mut Out<Id>) {
        self.save(out);
    }
}
