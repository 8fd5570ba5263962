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
//! Guarantees: with an accurate failure detector, at most one holder; grants
//! in `(Lamport time, id)` order, so no starvation; fencing tokens
//! (piggybacked on every message, max-merged) strictly increase across grants.
//!
//! Failure behaviour: a member reported `Down` is dropped from the queue and
//! from the acks being waited for; one reported `Up` again is sent the
//! pending request. Lost requests and acks are recovered by re-sending the
//! request every `retry` to the members that have not acked; a lost `Release`
//! is recovered by asking (`Inquire`) the owner of a request that has stayed
//! ahead of ours for a `retry`; the owner answers with `Release` if it is done.

use std::collections::{BTreeMap, BTreeSet};
use std::fmt::Debug;
use std::time::Duration;

use serde::{Deserialize, Serialize};
use troupe_framework::membership::MemberEvent;
use troupe_framework::sansio::{Outputs, Protocol, Snapshot, SnapshotCore};

use super::{MutexConfig, MutexCore, MutexDurable, MutexEvent};
use crate::group::{Change, Group};
use crate::testkit::SimProtocol;

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

#[derive(Debug, Clone, PartialEq, Eq)]
enum Mine<Id> {
    Idle,
    Wanted { ts: u64, unacked: BTreeSet<Id> },
    Held { ts: u64, token: u64 },
}

/// A Lamport-mutex core for one member.
#[derive(Debug, Clone)]
pub struct LamportMutex<Id> {
    group: Group<Id>,
    config: MutexConfig,
    saved: Snapshot<MutexDurable>,
    clock: u64,
    max_token: u64,
    queue: BTreeSet<(u64, Id)>,
    released: BTreeMap<Id, u64>,
    mine: Mine<Id>,
}

type Out<Id> = Outputs<Id, LamportMsg, LamportTimer, MutexEvent>;

impl<Id: Clone + Ord + Debug> LamportMutex<Id> {
    /// A core for `me` among `members`, restarted from `durable` if given.
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
            queue: BTreeSet::new(),
            released: BTreeMap::new(),
            mine: Mine::Idle,
        }
    }

    /// Number of requests in this member's copy of the queue.
    pub fn queue_len(&self) -> usize {
        self.queue.len()
    }

    fn my_ts(&self) -> Option<u64> {
        match self.mine {
            Mine::Wanted { ts, .. } | Mine::Held { ts, .. } => Some(ts),
            Mine::Idle => None,
        }
    }

    /// Record that `from` has a request stamped `ts` (unless already finished).
    fn note_request(&mut self, from: &Id, ts: u64) {
        // A request from a member reported down is a late message of a dead
        // incarnation (or the view is stale; its `Up` makes us ask again).
        if !self.group.is_live(from) || self.released.get(from).is_some_and(|r| *r >= ts) {
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

    fn maybe_enter(&mut self, out: &mut Out<Id>) {
        let Mine::Wanted { ts, unacked } = &self.mine else {
            return;
        };
        let ts = *ts;
        let first = self
            .queue
            .first()
            .is_some_and(|(t, id)| *t == ts && id == self.group.me());
        if unacked.is_empty() && first {
            self.max_token += 1;
            let token = self.max_token;
            self.mine = Mine::Held { ts, token };
            out.emit(MutexEvent::Granted {
                resource: self.config.resource.clone(),
                fencing_token: token,
            });
        }
    }
}

impl<Id: Clone + Ord + Debug> MutexCore for LamportMutex<Id> {
    fn request(&mut self, _now: Duration, out: &mut Out<Id>) {
        if self.mine != Mine::Idle {
            return;
        }
        self.clock += 1;
        let ts = self.clock;
        let unacked: BTreeSet<Id> = self.group.live_peers().cloned().collect();
        for p in &unacked {
            out.send(
                p.clone(),
                LamportMsg::Request {
                    ts,
                    token: self.max_token,
                },
            );
        }
        self.queue.insert((ts, self.group.me().clone()));
        self.mine = Mine::Wanted { ts, unacked };
        out.set_timer(self.config.retry, LamportTimer::Retry { ts });
        self.maybe_enter(out);
    }

    fn release(&mut self, _now: Duration, out: &mut Out<Id>) {
        let Mine::Held { ts, token } = self.mine else {
            return;
        };
        self.mine = Mine::Idle;
        let me = self.group.me().clone();
        self.note_release(&me, ts);
        for p in self.group.live_peers() {
            out.send(
                p.clone(),
                LamportMsg::Release {
                    ts,
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
        match self.mine {
            Mine::Held { token, .. } => Some(token),
            _ => None,
        }
    }

    fn is_waiting(&self) -> bool {
        matches!(self.mine, Mine::Wanted { .. })
    }

    fn request_stamp(&self) -> Option<u64> {
        self.my_ts()
    }
}

impl<Id: Clone + Ord + Debug> Protocol for LamportMutex<Id> {
    type Id = Id;
    type Msg = LamportMsg;
    type Timer = LamportTimer;
    type Event = MutexEvent;

    fn persist(&mut self, out: &mut Out<Id>) {
        let state = self.state();
        self.saved.save(state, out);
    }

    fn on_start(&mut self, _now: Duration, _out: &mut Out<Id>) {}

    fn on_message(&mut self, _now: Duration, from: Id, msg: LamportMsg, out: &mut Out<Id>) {
        match msg {
            LamportMsg::Request { ts, token } => {
                self.clock = self.clock.max(ts) + 1;
                self.max_token = self.max_token.max(token);
                self.note_request(&from, ts);
                out.send(
                    from,
                    LamportMsg::Ack {
                        req_ts: ts,
                        ts: self.clock,
                        pending: self.my_ts(),
                        token: self.max_token,
                    },
                );
            }
            LamportMsg::Ack {
                req_ts,
                ts,
                pending,
                token,
            } => {
                self.clock = self.clock.max(ts) + 1;
                self.max_token = self.max_token.max(token);
                if let Some(p) = pending {
                    self.note_request(&from, p);
                }
                if let Mine::Wanted { ts: mine, unacked } = &mut self.mine {
                    if *mine == req_ts {
                        unacked.remove(&from);
                    }
                }
            }
            LamportMsg::Release { ts, token } => {
                self.max_token = self.max_token.max(token);
                self.note_release(&from, ts);
            }
            LamportMsg::Inquire { ts } => {
                if self.my_ts() != Some(ts) {
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
        let Mine::Wanted { ts: mine, unacked } = &self.mine else {
            return;
        };
        if *mine != ts {
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
                if let Some(ts) = self.my_ts() {
                    if let Mine::Wanted { unacked, .. } = &mut self.mine {
                        unacked.insert(m.clone());
                    }
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
                self.queue.retain(|(_, id)| *id != m);
                if let Mine::Wanted { unacked, .. } = &mut self.mine {
                    unacked.remove(&m);
                }
                self.maybe_enter(out);
            }
            Some(Change::Live(_)) | None => {}
        }
    }
}

impl<Id: Clone + Ord + Debug> SnapshotCore for LamportMutex<Id> {
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

impl<Id: Clone + Ord + Debug> SimProtocol for LamportMutex<Id> {
    fn msg_kind(msg: &LamportMsg) -> &'static str {
        match msg {
            LamportMsg::Request { .. } => "request",
            LamportMsg::Ack { .. } => "ack",
            LamportMsg::Release { .. } => "release",
            LamportMsg::Inquire { .. } => "inquire",
        }
    }
}
