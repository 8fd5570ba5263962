//! Token-ring mutual exclusion with token regeneration.
//!
//! The members form a logical ring in id order over the *live* membership; a
//! single token circulates, and only its holder may enter. A member that wants
//! the lock waits for the token, keeps it while inside, and passes it to its
//! next live successor on release (members reported down are skipped). Cost:
//! from 1 message per entry (everyone wants it) to unbounded (the token keeps
//! circulating when nobody does); 0 to N-1 message delays before entry; a
//! requester waits for at most N-1 other grants.
//!
//! Lost token: the token dies with a crashed holder or a lost message. The
//! lowest live member regenerates it when it has not seen the token for
//! `token_timeout`: it picks a new *generation* (striped by rank like election
//! terms, so two regenerators never pick the same one), sends `Regen` to every
//! live member and creates the new token only after all of them acknowledged.
//! A member that acknowledges generation `g` discards any token of an older
//! generation from then on (a member inside the critical section with an old
//! token acknowledges only when it leaves, and then drops that token). Tokens
//! also carry a hop count, kept durably with the generation, so a duplicated
//! token message is recognised and dropped (also after a restart): there is
//! never more than one honoured token per generation. Hence two tokens are never both honoured while the failure
//! detector is accurate; across a partition each side may regenerate its own
//! token (the fencing token, carried in the token and in the acks, protects
//! the resource) and after healing the newer generation wins.
//!
//! Guarantees: at most one holder (accurate detector), fencing tokens strictly
//! increase (the token carries the counter; regeneration takes the maximum
//! over the acks), no starvation.

use std::collections::BTreeSet;
use std::fmt::Debug;
use std::time::Duration;

use serde::{Deserialize, Serialize};
use troupe_framework::membership::MemberEvent;
use troupe_framework::sansio::{Outputs, Protocol, Snapshot, SnapshotCore};

use super::{MutexConfig, MutexCore, MutexDurable, MutexEvent};
use crate::group::{Change, Group};
use crate::testkit::SimProtocol;

/// Token-ring wire messages.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum RingMsg {
    /// The token.
    Token {
        /// Its generation.
        gen: u64,
        /// Hops since it was created (detects duplicates).
        hop: u64,
        /// Largest fencing token granted so far.
        counter: u64,
    },
    /// "The token is lost; I am creating generation `gen`."
    Regen {
        /// The new generation.
        gen: u64,
    },
    /// "Your generation is old: I know of `gen`" (answer to a stale `Regen`;
    /// the regenerator gives up and, if the token is still missing, tries
    /// again above `gen`).
    Newer {
        /// The newest generation the sender knows.
        gen: u64,
    },
    /// "I will honour no token older than `gen`."
    RegenAck {
        /// The acknowledged generation.
        gen: u64,
        /// Largest fencing token the sender has seen.
        token: u64,
    },
}

/// Token-ring timers.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RingTimer {
    /// Periodic check: token timeout, re-send of unacknowledged `Regen`s.
    Tick,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Token {
    gen: u64,
    hop: u64,
    counter: u64,
}

#[derive(Debug, Clone, PartialEq, Eq)]
struct Regen<Id> {
    gen: u64,
    waiting: BTreeSet<Id>,
}

/// A token-ring core for one member.
#[derive(Debug, Clone)]
pub struct TokenRing<Id> {
    group: Group<Id>,
    config: MutexConfig,
    saved: Snapshot<MutexDurable>,
    max_token: u64,
    gen: u64,
    seen: (u64, u64),
    token: Option<Token>,
    want: bool,
    held: Option<u64>,
    last_seen: Duration,
    regen: Option<Regen<Id>>,
    deferred_ack: Option<(Id, u64)>,
    fresh: bool,
}

type Out<Id> = Outputs<Id, RingMsg, RingTimer, MutexEvent>;

impl<Id: Clone + Ord + Debug> TokenRing<Id> {
    /// A core for `me` among `members`, restarted from `durable` if given. On
    /// a fresh start the lowest member creates the first token.
    pub fn new(
        me: Id,
        members: impl IntoIterator<Item = Id>,
        config: MutexConfig,
        durable: Option<MutexDurable>,
    ) -> Self {
        let fresh = durable.is_none();
        let saved = Snapshot::resumed(durable);
        let d = durable.unwrap_or_default();
        Self {
            group: Group::new(me, members),
            config,
            saved,
            max_token: d.max_token,
            gen: d.seq,
            seen: (d.seq, d.hop),
            token: None,
            want: false,
            held: None,
            last_seen: Duration::ZERO,
            regen: None,
            deferred_ack: None,
            fresh,
        }
    }

    /// The generation of the newest token this member knows of.
    pub fn generation(&self) -> u64 {
        self.gen
    }

    /// True while this member has the token (inside or not).
    pub fn has_token(&self) -> bool {
        self.token.is_some()
    }

    /// We have the token: enter if wanted, else pass it on.
    fn use_token(&mut self, now: Duration, mut t: Token, out: &mut Out<Id>) {
        self.last_seen = now;
        if self.want && self.held.is_none() {
            t.counter = t.counter.max(self.max_token) + 1;
            self.max_token = t.counter;
            self.held = Some(t.counter);
            self.token = Some(t);
            out.emit(MutexEvent::Granted {
                resource: self.config.resource.clone(),
                fencing_token: t.counter,
            });
        } else {
            self.token = Some(t);
            self.pass(out);
        }
    }

    fn pass(&mut self, out: &mut Out<Id>) {
        let Some(mut t) = self.token else {
            return;
        };
        if let Some(next) = self.group.successor().cloned() {
            t.hop += 1;
            t.counter = t.counter.max(self.max_token);
            self.token = None;
            out.send(
                next,
                RingMsg::Token {
                    gen: t.gen,
                    hop: t.hop,
                    counter: t.counter,
                },
            );
        }
        // Alone in the ring: keep the token.
    }

    fn adopt_gen(&mut self, gen: u64) {
        if gen > self.gen {
            self.gen = gen;
            if self.regen.as_ref().is_some_and(|r| r.gen < gen) {
                self.regen = None;
            }
            if self.held.is_none() && self.token.is_some_and(|t| t.gen < gen) {
                self.token = None; // an idle token of an older generation dies
            }
        }
    }

    fn finish_regen(&mut self, now: Duration, out: &mut Out<Id>) {
        let done = self.regen.as_ref().is_some_and(|r| r.waiting.is_empty());
        if !done {
            return;
        }
        let Some(r) = self.regen.take() else {
            return;
        };
        if r.gen != self.gen {
            return;
        }
        self.seen = (r.gen, 0);
        let t = Token {
            gen: r.gen,
            hop: 0,
            counter: self.max_token,
        };
        self.use_token(now, t, out);
    }
}

impl<Id: Clone + Ord + Debug> MutexCore for TokenRing<Id> {
    fn request(&mut self, now: Duration, out: &mut Out<Id>) {
        if self.want {
            return;
        }
        self.want = true;
        if let Some(t) = self.token {
            // Only possible when alone in the ring.
            self.token = None;
            self.use_token(now, t, out);
        }
    }

    fn release(&mut self, _now: Duration, out: &mut Out<Id>) {
        let Some(fencing_token) = self.held.take() else {
            return;
        };
        self.want = false;
        out.emit(MutexEvent::Released {
            resource: self.config.resource.clone(),
            fencing_token,
        });
        if let Some((r, gen)) = self.deferred_ack.take() {
            // A newer generation was announced while we were inside: this
            // token is dead.
            self.token = None;
            out.send(
                r,
                RingMsg::RegenAck {
                    gen,
                    token: self.max_token,
                },
            );
        } else if self.token.is_some_and(|t| t.gen < self.gen) {
            self.token = None; // superseded while we were inside
        } else {
            self.pass(out);
        }
    }

    fn holding(&self) -> Option<u64> {
        self.held
    }

    fn epoch(&self) -> Option<u64> {
        Some(self.gen)
    }

    fn held_epoch(&self) -> Option<u64> {
        self.held.and(self.token.map(|t| t.gen))
    }

    fn is_waiting(&self) -> bool {
        self.want && self.held.is_none()
    }
}

impl<Id: Clone + Ord + Debug> Protocol for TokenRing<Id> {
    type Id = Id;
    type Msg = RingMsg;
    type Timer = RingTimer;
    type Event = MutexEvent;

    fn persist(&mut self, out: &mut Out<Id>) {
        let state = self.state();
        self.saved.save(state, out);
    }

    fn on_start(&mut self, now: Duration, out: &mut Out<Id>) {
        self.last_seen = now;
        out.set_timer(self.config.retry, RingTimer::Tick);
        if self.fresh && self.group.rank() == 0 {
            self.fresh = false;
            let t = Token {
                gen: 0,
                hop: 0,
                counter: self.max_token,
            };
            self.use_token(now, t, out);
        }
    }

    fn on_message(&mut self, now: Duration, from: Id, msg: RingMsg, out: &mut Out<Id>) {
        match msg {
            RingMsg::Token { gen, hop, counter } => {
                self.max_token = self.max_token.max(counter);
                if gen < self.gen || (gen, hop) <= self.seen || self.token.is_some() {
                    return; // stale generation, duplicate, or a second copy
                }
                self.adopt_gen(gen);
                self.seen = (gen, hop);
                self.use_token(
                    now,
                    Token {
                        gen,
                        hop,
                        counter: counter.max(self.max_token),
                    },
                    out,
                );
            }
            RingMsg::Regen { gen } => {
                if gen < self.gen {
                    out.send(from, RingMsg::Newer { gen: self.gen });
                    return;
                }
                self.adopt_gen(gen);
                if self.regen.as_ref().is_some_and(|r| r.gen == gen) {
                    return;
                }
                let old = self.token.is_some_and(|t| t.gen < gen);
                if old && self.held.is_some() {
                    self.deferred_ack = Some((from, gen));
                    return;
                }
                if old {
                    self.token = None;
                }
                out.send(
                    from,
                    RingMsg::RegenAck {
                        gen,
                        token: self.max_token,
                    },
                );
            }
            RingMsg::Newer { gen } => self.adopt_gen(gen),
            RingMsg::RegenAck { gen, token } => {
                self.max_token = self.max_token.max(token);
                if let Some(r) = self.regen.as_mut() {
                    if r.gen == gen {
                        r.waiting.remove(&from);
                    }
                }
                self.finish_regen(now, out);
            }
        }
    }

    fn on_timer(&mut self, now: Duration, _timer: RingTimer, out: &mut Out<Id>) {
        out.set_timer(self.config.retry, RingTimer::Tick);
        if let Some(r) = &self.regen {
            for p in &r.waiting {
                out.send(p.clone(), RingMsg::Regen { gen: r.gen });
            }
            return;
        }
        let overdue = now.saturating_sub(self.last_seen) >= self.config.token_timeout;
        if overdue && self.token.is_none() && self.group.lowest_live() == self.group.me() {
            let gen = self.group.next_term(self.gen);
            self.gen = gen;
            let waiting: BTreeSet<Id> = self.group.live_peers().cloned().collect();
            for p in &waiting {
                out.send(p.clone(), RingMsg::Regen { gen });
            }
            self.regen = Some(Regen { gen, waiting });
            self.last_seen = now;
            self.finish_regen(now, out);
        }
    }

    fn on_membership(&mut self, now: Duration, change: MemberEvent<Id>, out: &mut Out<Id>) {
        match self.group.apply(change) {
            Some(Change::Back(m)) => {
                if let Some(r) = self.regen.as_mut() {
                    if r.waiting.insert(m.clone()) {
                        out.send(m.clone(), RingMsg::Regen { gen: r.gen });
                    }
                }
                // Tell the newcomer our generation (after a partition the
                // older of two tokens dies at the first member that knows
                // the newer one), and stop keeping the token to ourselves.
                out.send(m, RingMsg::Newer { gen: self.gen });
                if self.held.is_none() {
                    self.pass(out);
                }
            }
            Some(Change::Gone(m)) => {
                if let Some(r) = self.regen.as_mut() {
                    r.waiting.remove(&m);
                }
                self.finish_regen(now, out);
            }
            Some(Change::Live(_)) | None => {}
        }
    }
}

impl<Id: Clone + Ord + Debug> SnapshotCore for TokenRing<Id> {
    type State = MutexDurable;
    fn state(&self) -> MutexDurable {
        MutexDurable {
            clock: 0,
            max_token: self.max_token,
            seq: self.gen,
            hop: if self.seen.0 == self.gen {
                self.seen.1
            } else {
                0
            },
        }
    }
}

impl<Id: Clone + Ord + Debug> SimProtocol for TokenRing<Id> {
    fn msg_kind(msg: &RingMsg) -> &'static str {
        match msg {
            RingMsg::Token { .. } => "token",
            RingMsg::Regen { .. } => "regen",
            RingMsg::RegenAck { .. } => "regen-ack",
            RingMsg::Newer { .. } => "newer",
        }
    }
}
