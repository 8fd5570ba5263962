//! Centralized mutual exclusion: one coordinator with a FIFO queue.
//!
//! The coordinator is the highest live member in this node's membership view
//! (deterministic, no election needed; an elected leader works the same way).
//! A client sends `Request` to it; the coordinator grants the lock to the head
//! of its FIFO queue with `Grant` and the holder gives it back with `Release`:
//! 3 messages per entry and exit, 2 message delays before entry. The
//! coordinator's own requests are served locally (0 messages).
//!
//! Guarantees (stated exactly in the [module docs](super), exposure
//! [`Exposure::Group`](super::Exposure)): two members hold the lock at once
//! only if some member falsely suspected another between one's request and
//! its grant, so with an accurate failure detector at most one holder;
//! grants in the order requests reach the coordinator (no starvation); and
//! fencing tokens that grow across grants — also across a coordinator
//! failover, because the new coordinator learns the largest token every live
//! member has seen before it grants anything (a token whose holder and
//! coordinator both crashed may be lost until one of them is heard from).
//!
//! Failure behaviour: the coordinator is a single point of failure for the
//! time it takes the failure detector to report it. Then the next-highest live
//! member takes over and *rebuilds* the state: it sends `Sync` to every live
//! member and each answers `State` with the lock it holds (if any), its
//! pending request (if any) and its largest token (a member whose view
//! switches to a new coordinator also sends its `State` unasked, so a
//! coordinator that took over while views disagreed still learns every
//! token once they agree). Until every live member has
//! answered (or is reported down) it grants nothing; then every member that
//! reported holding the lock keeps it (two of them when a partition healed:
//! each side's holder), nothing is granted until all of them released, and
//! the pending requests form the new queue (in the order the
//! answers arrive; the FIFO order of the old queue is not recoverable). A holder or requester that is
//! reported down is dropped from the queue; a down holder's lock is freed.
//! Clients re-send an unanswered request every `retry`; the coordinator
//! re-sends the grant to the holder every `retry` (a lost `Release` is
//! answered by a new `Release`), so lost and duplicated messages are
//! tolerated. Two coordinators can coexist only while views disagree (a
//! partition); clients accept grants only from the coordinator of their own
//! view and fencing tokens protect the resource meanwhile.

use std::collections::{BTreeMap, BTreeSet, VecDeque};
use std::time::Duration;

use serde::{Deserialize, Serialize};
use troupe_framework::membership::MemberEvent;
use troupe_framework::sansio::{Outputs, Protocol};

use super::{Lock, LockCommands, LockState, Mine, MutexDurable, MutexEvent};
use crate::family::protocol_types;
use crate::group::Change;
use crate::MemberId;

/// Centralized-mutex wire messages. `req` numbers a client's requests.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum CentralMsg {
    /// Client to coordinator: queue me.
    Request {
        /// The client's request number.
        req: u64,
        /// Largest fencing token the client has seen.
        token: u64,
    },
    /// Coordinator to client: you hold the lock.
    Grant {
        /// The request this answers.
        req: u64,
        /// The grant's fencing token.
        token: u64,
    },
    /// Client to coordinator: I gave the lock back (or refuse a stale grant).
    Release {
        /// The request whose grant ends.
        req: u64,
        /// Largest fencing token the client has seen.
        token: u64,
    },
    /// New coordinator to client: report your state.
    Sync {
        /// The coordinator's sync round (never 0).
        round: u64,
    },
    /// Client to coordinator: my state, when asked or when it became my
    /// coordinator.
    State {
        /// The sync round this answers, 0 when unsolicited.
        round: u64,
        /// `(req, token)` of the lock I hold, if any.
        holding: Option<(u64, u64)>,
        /// My pending request, if any.
        waiting: Option<u64>,
        /// Largest fencing token I have seen.
        token: u64,
    },
}

/// Centralized-mutex timers.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum CentralTimer {
    /// Periodic re-sending of unanswered messages.
    Retry,
}

#[derive(Debug, Clone)]
struct CoordState<Id> {
    round: u64,
    syncing: BTreeSet<Id>,
    queue: VecDeque<(Id, u64)>,
    /// Who holds the lock, with `(req, token)`: one member, except after a
    /// partition healed and more than one reported holding it; nothing is
    /// granted while any of them holds.
    holders: BTreeMap<Id, (u64, u64)>,
}

/// A centralized-mutex core for one member (client, and coordinator when it
/// is the highest live member).
pub type Centralized<Id> = Lock<Id, CentralState<Id>>;

/// The centralized algorithm's own state (see [`Centralized`]).
#[derive(Debug, Clone)]
pub struct CentralState<Id> {
    /// This member's last request number.
    seq: u64,
    /// The coordinator's state, while this member is the coordinator.
    coord: Option<CoordState<Id>>,
    /// The last sync round this member started as coordinator.
    rounds: u64,
}

impl<Id> Default for CentralState<Id> {
    fn default() -> Self {
        Self {
            seq: 0,
            coord: None,
            rounds: 0,
        }
    }
}

impl<Id: Clone + std::fmt::Debug> LockState for CentralState<Id> {
    fn resume(&mut self, durable: Option<&MutexDurable>) {
        let seq = durable.map_or(0, |d| d.seq);
        (self.seq, self.rounds) = (seq, seq);
    }
    fn save(&self, durable: &mut MutexDurable) {
        durable.seq = self.seq.max(self.rounds);
    }
}

type Out<Id> = Outputs<Id, CentralMsg, CentralTimer, MutexEvent>;

impl<Id: MemberId> Centralized<Id> {
    /// The coordinator in this node's view: the highest live member.
    pub fn coordinator(&self) -> Id {
        self.group.highest_live().clone()
    }

    /// True while this node acts as coordinator.
    pub fn is_coordinator(&self) -> bool {
        self.alg.coord.is_some()
    }

    /// Requests queued at this node when it is coordinator (holder excluded).
    pub fn queue_len(&self) -> usize {
        self.alg.coord.as_ref().map_or(0, |c| c.queue.len())
    }

    fn state_msg(&self, round: u64) -> CentralMsg {
        let (holding, waiting) = match &self.mine {
            Mine::Idle => (None, None),
            Mine::Waiting { req, .. } => (None, Some(*req)),
            Mine::Held { req, token } => (Some((*req, *token)), None),
        };
        CentralMsg::State {
            round,
            holding,
            waiting,
            token: self.max_token,
        }
    }

    /// Send, or handle at once when the destination is this node.
    fn post(&mut self, now: Duration, to: Id, msg: CentralMsg, out: &mut Out<Id>) {
        if to == *self.group.me() {
            self.on_message(now, to, msg, out);
        } else {
            out.send(to, msg);
        }
    }

    /// Take the coordinator role if the view says so, or give it up.
    fn check_role(&mut self, now: Duration, out: &mut Out<Id>) {
        let me = self.group.me().clone();
        let should = *self.group.highest_live() == me;
        if should && self.alg.coord.is_none() {
            self.alg.rounds += 1;
            let others: Vec<Id> = self.group.live_peers().cloned().collect();
            let mut st = CoordState {
                round: self.alg.rounds,
                syncing: others.iter().cloned().collect(),
                queue: VecDeque::new(),
                holders: BTreeMap::new(),
            };
            match &self.mine {
                Mine::Held { req, token } => {
                    st.holders.insert(me, (*req, *token));
                }
                Mine::Waiting { req, .. } => st.queue.push_back((me, *req)),
                Mine::Idle => {}
            }
            let round = st.round;
            self.alg.coord = Some(st);
            for o in others {
                out.send(o, CentralMsg::Sync { round });
            }
            self.grant_next(now, out);
        } else if !should && self.alg.coord.is_some() {
            // Stepping down; `on_membership` reports our state to the new one.
            self.alg.coord = None;
        }
    }

    fn grant_next(&mut self, now: Duration, out: &mut Out<Id>) {
        let Some(st) = self.alg.coord.as_mut() else {
            return;
        };
        if !st.holders.is_empty() || !st.syncing.is_empty() {
            return;
        }
        let Some((who, req)) = st.queue.pop_front() else {
            return;
        };
        self.max_token += 1;
        let token = self.max_token;
        st.holders.insert(who.clone(), (req, token));
        self.post(now, who, CentralMsg::Grant { req, token }, out);
    }

    fn coord_on_request(&mut self, now: Duration, from: Id, req: u64, out: &mut Out<Id>) {
        let Some(st) = self.alg.coord.as_mut() else {
            return;
        };
        if let Some(&(hreq, htoken)) = st.holders.get(&from) {
            if hreq == req {
                // A duplicate or a lost grant: grant again.
                self.post(now, from, CentralMsg::Grant { req, token: htoken }, out);
                return;
            } else if hreq < req {
                // It moved on: its release was lost.
                st.holders.remove(&from);
            }
        }
        let Some(st) = self.alg.coord.as_mut() else {
            return;
        };
        if let Some(q) = st.queue.iter_mut().find(|(id, _)| *id == from) {
            q.1 = q.1.max(req);
        } else {
            st.queue.push_back((from, req));
        }
        self.grant_next(now, out);
    }

    fn coord_on_release(&mut self, now: Duration, from: Id, req: u64, out: &mut Out<Id>) {
        let Some(st) = self.alg.coord.as_mut() else {
            return;
        };
        if st.holders.get(&from).is_some_and(|(hreq, _)| *hreq == req) {
            st.holders.remove(&from);
        }
        st.queue.retain(|(id, r)| !(*id == from && *r <= req));
        self.grant_next(now, out);
    }
}

impl<Id: MemberId> LockCommands for Centralized<Id> {
    fn request(&mut self, now: Duration, out: &mut Out<Id>) {
        if !self.mine.is_idle() {
            return;
        }
        self.alg.seq += 1;
        let req = self.alg.seq;
        self.mine = Mine::Waiting {
            req,
            from: BTreeSet::new(),
        };
        let c = self.coordinator();
        let token = self.max_token;
        self.post(now, c, CentralMsg::Request { req, token }, out);
    }

    fn release(&mut self, now: Duration, out: &mut Out<Id>) {
        let Some((req, _)) = self.unhold(out) else {
            return;
        };
        let c = self.coordinator();
        let t = self.max_token;
        self.post(now, c, CentralMsg::Release { req, token: t }, out);
    }
}

impl<Id: MemberId> Protocol for Centralized<Id> {
    protocol_types!(CentralMsg, CentralTimer, MutexEvent);

    fn on_start(&mut self, now: Duration, out: &mut Out<Id>) {
        out.set_timer(self.config.retry, CentralTimer::Retry);
        self.check_role(now, out);
    }

    fn on_message(&mut self, now: Duration, from: Id, msg: CentralMsg, out: &mut Out<Id>) {
        match msg {
            CentralMsg::Request { req, token } => {
                self.see(token);
                self.coord_on_request(now, from, req, out);
            }
            CentralMsg::Release { req, token } => {
                self.see(token);
                self.coord_on_release(now, from, req, out);
            }
            CentralMsg::Grant { req, token } => {
                self.see(token);
                if self.mine.waiting() == Some(req) && from == self.coordinator() {
                    self.hold(token, out);
                } else if !matches!(self.mine, Mine::Held { req: r, .. } if r == req) {
                    // Stale, or from a node that is not our coordinator:
                    // refuse it so that it does not stay taken.
                    let t = self.max_token;
                    self.post(now, from, CentralMsg::Release { req, token: t }, out);
                    // Refusing the grant of the request we still wait on
                    // voids that request: a copy of the same grant must not
                    // be taken later (once `from` becomes our coordinator),
                    // since `from` has freed the lock on our refusal. Ask
                    // again under a new number.
                    if self.mine.waiting() == Some(req) {
                        self.mine = Mine::Idle;
                        self.request(now, out);
                    }
                }
            }
            CentralMsg::Sync { round } => {
                let msg = self.state_msg(round);
                self.post(now, from, msg, out);
            }
            CentralMsg::State {
                round,
                holding,
                waiting,
                token,
            } => {
                self.see(token);
                let Some(st) = self.alg.coord.as_mut() else {
                    return;
                };
                // Round 0: an unsolicited report from a member that just
                // switched to us; otherwise the answer to our `Sync`.
                if round != 0 && (st.round != round || !st.syncing.remove(&from)) {
                    return;
                }
                if let Some((req, t)) = holding {
                    // Every member that says it holds the lock is a holder
                    // (two of them after a partition healed): none is
                    // forgotten, and nothing is granted until all released.
                    let newer = st.holders.get(&from).is_none_or(|(_, ht)| *ht < t);
                    if newer {
                        st.holders.insert(from.clone(), (req, t));
                    }
                    st.queue.retain(|(id, _)| *id != from);
                }
                if let Some(req) = waiting {
                    if !st.queue.iter().any(|(id, _)| *id == from) {
                        st.queue.push_back((from, req));
                    }
                }
                if st.syncing.is_empty() {
                    self.grant_next(now, out);
                }
            }
        }
    }

    fn on_timer(&mut self, _now: Duration, _timer: CentralTimer, out: &mut Out<Id>) {
        out.set_timer(self.config.retry, CentralTimer::Retry);
        if let Some(req) = self.mine.waiting() {
            let c = self.coordinator();
            if c != *self.group.me() {
                let token = self.max_token;
                out.send(c, CentralMsg::Request { req, token });
            }
        }
        if let Some(st) = &self.alg.coord {
            for s in &st.syncing {
                out.send(s.clone(), CentralMsg::Sync { round: st.round });
            }
            for (h, (req, token)) in &st.holders {
                if h != self.group.me() {
                    out.send(
                        h.clone(),
                        CentralMsg::Grant {
                            req: *req,
                            token: *token,
                        },
                    );
                }
            }
        }
    }

    fn on_membership(&mut self, now: Duration, change: MemberEvent<Id>, out: &mut Out<Id>) {
        let before = self.coordinator();
        match self.group.apply(change) {
            None => return,
            Some(Change::Back(m) | Change::Live(m)) => {
                if let Some(st) = self.alg.coord.as_mut() {
                    // A member back from a crash or a partition (or only
                    // suspected): ask its state.
                    if st.syncing.insert(m.clone()) {
                        out.send(m, CentralMsg::Sync { round: st.round });
                    }
                }
            }
            Some(Change::Gone(m)) => {
                if let Some(st) = self.alg.coord.as_mut() {
                    st.syncing.remove(&m);
                    st.queue.retain(|(id, _)| *id != m);
                    st.holders.remove(&m);
                }
                self.grant_next(now, out);
            }
        }
        self.check_role(now, out);
        // A new coordinator for us: report our state (pending request, hold,
        // largest token) without waiting to be asked.
        let c = self.coordinator();
        if c != *self.group.me() && c != before {
            let msg = self.state_msg(0);
            out.send(c, msg);
        }
    }

    fn persist(&mut self, out: &mut Out<Id>) {
        self.save(out);
    }
}
