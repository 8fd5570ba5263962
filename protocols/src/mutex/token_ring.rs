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
//! Guarantees (stated exactly in the [module docs](super), exposure
//! [`Exposure::Generation`](super::Exposure)): never two holders of tokens
//! of the same generation; two members hold the lock at once only if some
//! member falsely suspected another while one's token generation was
//! created, so with an accurate failure detector at most one holder; fencing
//! tokens grow (the token carries the counter; regeneration takes the
//! maximum over the acks), except past a token that died with a crashed
//! holder; no starvation while the token comes back to the lowest live
//! member within `token_timeout` (holds that add up to more than that in one
//! round make it regenerate the token, and the round starts over).
//!
//! These guarantees assume that a message is not handed to a later life of
//! its destination: a token sent to a member that crashes and restarts
//! before it arrives would be honoured by a life that never heard of a newer
//! generation. The simulator's scenarios keep every delay below the
//! shortest downtime, so there no message outlives its destination.

use std::collections::BTreeSet;
use std::time::Duration;

use serde::{Deserialize, Serialize};
use troupe_framework::membership::MemberEvent;
use troupe_framework::sansio::{Outputs, Protocol};

use super::{Exposure, Lock, LockCommands, LockState, Mine, MutexDurable, MutexEvent};
use crate::family::protocol_types;
use crate::group::Change;
use crate::MemberId;

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

/// A token-ring core for one member. On a fresh start the lowest member
/// creates the first token.
pub type TokenRing<Id> = Lock<Id, TokenRingState<Id>>;

/// The token ring's own state (see [`TokenRing`]).
#[derive(Debug, Clone)]
pub struct TokenRingState<Id> {
    /// The newest token generation known (kept durably).
    gen: u64,
    /// The newest `(generation, hop)` of a token seen (kept durably).
    seen: (u64, u64),
    /// The token, while this member has it.
    token: Option<Token>,
    /// When this member last saw the token.
    last_seen: Duration,
    /// The regeneration this member is running, if any.
    regen: Option<Regen<Id>>,
    /// A `RegenAck` held back until this member leaves the critical section.
    deferred_ack: Option<(Id, u64)>,
    /// A first start (nothing durable): the lowest member creates the token.
    fresh: bool,
}

impl<Id> Default for TokenRingState<Id> {
    fn default() -> Self {
        Self {
            gen: 0,
            seen: (0, 0),
            token: None,
            last_seen: Duration::ZERO,
            regen: None,
            deferred_ack: None,
            fresh: true,
        }
    }
}

impl<Id: Clone + std::fmt::Debug> LockState for TokenRingState<Id> {
    const EXPOSURE: Exposure = Exposure::Generation;
    fn resume(&mut self, durable: Option<&MutexDurable>) {
        self.fresh = durable.is_none();
        let d = durable.copied().unwrap_or_default();
        (self.gen, self.seen) = (d.seq, (d.seq, d.hop));
    }
    fn save(&self, durable: &mut MutexDurable) {
        durable.seq = self.gen;
        durable.hop = if self.seen.0 == self.gen {
            self.seen.1
        } else {
            0
        };
    }
    fn epoch(&self) -> Option<u64> {
        Some(self.gen)
    }
    fn token_epoch(&self) -> Option<u64> {
        self.token.map(|t| t.gen)
    }
}

type Out<Id> = Outputs<Id, RingMsg, RingTimer, MutexEvent>;

impl<Id: MemberId> TokenRing<Id> {
    /// The generation of the newest token this member knows of.
    pub fn generation(&self) -> u64 {
        self.alg.gen
    }

    /// True while this member has the token (inside or not).
    pub fn has_token(&self) -> bool {
        self.alg.token.is_some()
    }

    /// We have the token: enter if wanted, else pass it on.
    fn use_token(&mut self, now: Duration, mut t: Token, out: &mut Out<Id>) {
        self.alg.last_seen = now;
        if self.mine.waiting().is_some() {
            t.counter = t.counter.max(self.max_token) + 1;
            self.max_token = t.counter;
            self.alg.token = Some(t);
            self.hold(t.counter, out);
        } else {
            self.alg.token = Some(t);
            self.pass(out);
        }
    }

    fn pass(&mut self, out: &mut Out<Id>) {
        let Some(mut t) = self.alg.token else {
            return;
        };
        if let Some(next) = self.group.successor().cloned() {
            t.hop += 1;
            t.counter = t.counter.max(self.max_token);
            self.alg.token = None;
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
        if gen > self.alg.gen {
            self.alg.gen = gen;
            if self.alg.regen.as_ref().is_some_and(|r| r.gen < gen) {
                self.alg.regen = None;
            }
            if self.mine.holding().is_none() && self.alg.token.is_some_and(|t| t.gen < gen) {
                self.alg.token = None; // an idle token of an older generation dies
            }
        }
    }

    fn finish_regen(&mut self, now: Duration, out: &mut Out<Id>) {
        let done = self
            .alg
            .regen
            .as_ref()
            .is_some_and(|r| r.waiting.is_empty());
        if !done {
            return;
        }
        let Some(r) = self.alg.regen.take() else {
            return;
        };
        if r.gen != self.alg.gen {
            return;
        }
        self.alg.seen = (r.gen, 0);
        let t = Token {
            gen: r.gen,
            hop: 0,
            counter: self.max_token,
        };
        self.use_token(now, t, out);
    }
}

impl<Id: MemberId> LockCommands for TokenRing<Id> {
    fn request(&mut self, now: Duration, out: &mut Out<Id>) {
        if !self.mine.is_idle() {
            return;
        }
        self.mine = Mine::Waiting {
            req: 0,
            from: BTreeSet::new(),
        };
        if let Some(t) = self.alg.token {
            // Only possible when alone in the ring.
            self.alg.token = None;
            self.use_token(now, t, out);
        }
    }

    fn release(&mut self, _now: Duration, out: &mut Out<Id>) {
        if self.unhold(out).is_none() {
            return;
        }
        if let Some((r, gen)) = self.alg.deferred_ack.take() {
            // A newer generation was announced while we were inside: this
            // token is dead.
            self.alg.token = None;
            out.send(
                r,
                RingMsg::RegenAck {
                    gen,
                    token: self.max_token,
                },
            );
        } else if self.alg.token.is_some_and(|t| t.gen < self.alg.gen) {
            self.alg.token = None; // superseded while we were inside
        } else {
            self.pass(out);
        }
    }
}

impl<Id: MemberId> Protocol for TokenRing<Id> {
    protocol_types!(RingMsg, RingTimer, MutexEvent);

    fn on_start(&mut self, now: Duration, out: &mut Out<Id>) {
        self.alg.last_seen = now;
        out.set_timer(self.config.retry, RingTimer::Tick);
        if self.alg.fresh && self.group.rank() == 0 {
            self.alg.fresh = false;
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
                self.see(counter);
                if gen < self.alg.gen || (gen, hop) <= self.alg.seen || self.alg.token.is_some() {
                    return; // stale generation, duplicate, or a second copy
                }
                self.adopt_gen(gen);
                self.alg.seen = (gen, hop);
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
                if gen < self.alg.gen {
                    out.send(from, RingMsg::Newer { gen: self.alg.gen });
                    return;
                }
                self.adopt_gen(gen);
                if self.alg.regen.as_ref().is_some_and(|r| r.gen == gen) {
                    return;
                }
                let old = self.alg.token.is_some_and(|t| t.gen < gen);
                if old && self.mine.holding().is_some() {
                    self.alg.deferred_ack = Some((from, gen));
                    return;
                }
                if old {
                    self.alg.token = None;
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
                self.see(token);
                if let Some(r) = self.alg.regen.as_mut() {
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
        if let Some(r) = &self.alg.regen {
            for p in &r.waiting {
                out.send(p.clone(), RingMsg::Regen { gen: r.gen });
            }
            return;
        }
        let overdue = now.saturating_sub(self.alg.last_seen) >= self.config.token_timeout;
        if overdue && self.alg.token.is_none() && self.group.lowest_live() == self.group.me() {
            let gen = self.group.next_term(self.alg.gen);
            self.alg.gen = gen;
            let waiting: BTreeSet<Id> = self.group.live_peers().cloned().collect();
            for p in &waiting {
                out.send(p.clone(), RingMsg::Regen { gen });
            }
            self.alg.regen = Some(Regen { gen, waiting });
            self.alg.last_seen = now;
            self.finish_regen(now, out);
        }
    }

    fn on_membership(&mut self, now: Duration, change: MemberEvent<Id>, out: &mut Out<Id>) {
        match self.group.apply(change) {
            Some(Change::Back(m)) => {
                if let Some(r) = self.alg.regen.as_mut() {
                    if r.waiting.insert(m.clone()) {
                        out.send(m.clone(), RingMsg::Regen { gen: r.gen });
                    }
                }
                // Tell the newcomer our generation (after a partition the
                // older of two tokens dies at the first member that knows
                // the newer one), and stop keeping the token to ourselves.
                out.send(m, RingMsg::Newer { gen: self.alg.gen });
                if self.mine.holding().is_none() {
                    self.pass(out);
                }
            }
            Some(Change::Gone(m)) => {
                if let Some(r) = self.alg.regen.as_mut() {
                    r.waiting.remove(&m);
                }
                self.finish_regen(now, out);
            }
            Some(Change::Live(_)) | None => {}
        }
    }

    fn persist(&mut self, out: &mut Out<Id>) {
        self.save(out);
    }
}
