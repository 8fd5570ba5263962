//! The engine of the epidemic (gossip) broadcasts: [`super::anti_entropy`],
//! [`super::rumor`] and [`super::plumtree`] are [`Epidemic`] cores, each
//! with its own [`Spread`] (how a new message travels fast), all sharing
//! what this module keeps: the durable delivered sets and history buffer,
//! what each peer is known to hold, and the **anti-entropy exchange**.
//!
//! ## The anti-entropy exchange
//! Every round (a timer, while this member holds a message not known to be
//! stable or knows of one it lacks), a member contacts random live peers
//! and, by [`Mode`]:
//! * **push**: sends each the buffered messages it may lack (not known to
//!   hold) with its digest; a receiver that got only copies it had answers
//!   with its digest (feedback, so the pusher stops pushing them);
//! * **pull**: sends its digest (per origin, the [`SeqSet`] it delivered);
//!   the peer answers with the buffered messages the digest lacks;
//! * **push-pull**: the same pull, but the peer's answer also asks for what
//!   the peer lacks, and the initiator sends it (three messages at most,
//!   and no payload is sent to a member whose digest shows it holds it).
//!
//! Every digest tells the receiver what the sender delivered (durably), so
//! members learn what their peers hold, and what exists that they lack.
//!
//! ## History buffer: bounded
//! A delivered message stays in the history buffer (so that it can be
//! given to a member that lacks it) until it is **stable** (every member is
//! known to have delivered it, learned from digests, copies, feedback and
//! announcements) or until it is `history_rounds` rounds old
//! ([`GossipConfig::history_rounds`], rounds of [`GossipConfig::period`]),
//! whichever comes first. The second bound is what keeps the buffer bounded
//! when a member stays away: a member that misses a message for longer than
//! that (down, partitioned away) may never get it.
//!
//! ## Crash and restart
//! As in the reliable engine (see the [family docs](super)), the sequence
//! number, the delivered sets and the history buffer are durable: a
//! restarted member never delivers twice, goes on numbering where it
//! stopped, and still gives what it holds to others. What a spread keeps
//! (hot rumors, eager/lazy peers, pending grafts) and what peers are known
//! to hold is not durable: a restarted member starts them afresh, and the
//! anti-entropy exchange makes up for it. A message's age restarts with
//! its holder.
//!
//! ## Randomness
//! Peers are chosen with a seeded RNG inside the core (seeded from the
//! member's id and its durable counters): runs are a function of their
//! inputs, and a failing seed replays.

use std::collections::{BTreeMap, BTreeSet};
use std::fmt::Debug;
use std::time::Duration;

use rand::seq::SliceRandom;
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use serde::{Deserialize, Serialize};
use troupe_framework::membership::MemberEvent;
use troupe_framework::sansio::{Outputs, Protocol};

use super::{
    clock_key, BroadcastConfig, BroadcastCore, BroadcastEvent, BroadcastStats, Engine, Ledger,
    MsgId, Opened, SeqSet, Stamps, Stored,
};
use crate::driver::OutputsOf;
use crate::family::protocol_types;
use crate::group::{Change, Group};
use crate::MemberId;

/// Settings of the epidemic broadcasts ([`BroadcastConfig::gossip`]).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct GossipConfig {
    /// Peers contacted per round: by an anti-entropy round, and by a
    /// rumor-mongering round for each hot rumor. Plumtree: how many
    /// neighbours each member picks (its view is its picks and the members
    /// that picked it).
    pub fanout: usize,
    /// A round: the anti-entropy period of [`super::anti_entropy`], the
    /// rumor-mongering round, Plumtree's batching of IHAVE announcements.
    pub period: Duration,
    /// Rumor mongering: the probability that a member stops spreading a
    /// rumor each time it pushed it to a peer that already had it (`1/k`).
    pub stop_probability: f64,
    /// Rumor mongering and Plumtree: the period of the slow anti-entropy
    /// pass (push-pull with one random peer) that makes every message reach
    /// every connected member eventually. Zero turns it off (then a message
    /// reaches every member only with high probability).
    pub anti_entropy_period: Duration,
    /// Plumtree: how long a member waits, after an IHAVE announced a
    /// message it lacks, before it GRAFTs the announcer (and again before
    /// the next announcer).
    pub graft_timeout: Duration,
    /// Rounds (of `period`) a message stays in the history buffer when it
    /// is not known to be stable before.
    pub history_rounds: u32,
    /// Plumtree's tree optimisation: a member that got a message over a
    /// tree link and sees it announced (IHAVE) by a lazy peer through
    /// which it would have been at least this many hops closer to the
    /// origin swaps the two links (GRAFTs the announcer, PRUNEs the tree
    /// link), so the tree gets shallower for that origin. Zero (the
    /// default) turns it off: the tree is shared by every origin, and with
    /// many origins the swaps for one undo those for another (measured in
    /// BENCHMARKS.md, "Epidemic broadcast at scale"); 3 suits a few
    /// origins.
    pub optimization_threshold: u32,
}

impl Default for GossipConfig {
    /// Fanout 3, 50 ms rounds, stop probability 1/4, anti-entropy backing
    /// every 500 ms, graft after 100 ms, history of 600 rounds (30 s),
    /// Plumtree's tree optimisation off.
    fn default() -> Self {
        Self {
            fanout: 3,
            period: Duration::from_millis(50),
            stop_probability: 0.25,
            anti_entropy_period: Duration::from_millis(500),
            graft_timeout: Duration::from_millis(100),
            history_rounds: 600,
            optimization_threshold: 0,
        }
    }
}

impl GossipConfig {
    /// How long a message stays in the history buffer at most.
    pub fn history(&self) -> Duration {
        self.period.saturating_mul(self.history_rounds)
    }
}

/// A message with its identity, as the epidemic messages carry it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Item<Id> {
    /// Its identity.
    pub id: MsgId<Id>,
    /// Its stamps and payload.
    pub stored: Stored,
}

/// What a member delivered: per origin, the sequence numbers.
pub type Digest<Id> = Vec<(Id, SeqSet)>;

/// The wire messages of the epidemic broadcasts (each algorithm uses the
/// anti-entropy ones and its own).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum GossipMsg<Id> {
    /// Anti-entropy: messages the receiver may lack, and the sender's
    /// digest. `ask`: the sender lacks messages of the receiver's last
    /// digest; send them.
    Push {
        /// What the sender delivered.
        digest: Digest<Id>,
        /// Messages the receiver may lack.
        items: Vec<Item<Id>>,
        /// Answer with what the sender lacks.
        ask: bool,
    },
    /// Anti-entropy: the sender's digest; answer with the messages it lacks.
    Pull {
        /// What the sender delivered.
        digest: Digest<Id>,
    },
    /// Rumor mongering: hot rumors.
    Rumor {
        /// The rumors.
        items: Vec<Item<Id>>,
    },
    /// Rumor mongering: the receiver of a `Rumor` already had these.
    Feedback {
        /// The rumors it had.
        had: Vec<MsgId<Id>>,
    },
    /// Plumtree: eager push of a message along the tree.
    Gossip {
        /// The message.
        item: Item<Id>,
        /// The receiver's distance from the origin along this copy's path:
        /// the links it crossed, this one included (1 from the origin;
        /// [`u32::MAX`] when the sender does not know its own).
        hops: u32,
    },
    /// Plumtree: lazy push, "I have these".
    IHave {
        /// The announced messages, each with the receiver's distance from
        /// its origin through the sender (as [`GossipMsg::Gossip`]'s
        /// `hops`).
        ids: Vec<(MsgId<Id>, u32)>,
    },
    /// Plumtree: "send me these, and be my eager peer" (no message: a
    /// tree-optimisation graft, only "be my eager peer").
    Graft {
        /// The messages wanted.
        ids: Vec<MsgId<Id>>,
    },
    /// Plumtree: "I got that twice: be my lazy peer".
    Prune,
}

/// The timers of the epidemic broadcasts.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum GossipTimer {
    /// An anti-entropy round.
    Round,
    /// A spread round: rumor mongering's push round, Plumtree's IHAVE flush.
    Spread,
    /// Plumtree: an announced message has not arrived (the spread's
    /// number for it).
    Graft(u64),
}

/// The output buffer of an [`Epidemic`] core.
pub type Out<Id> = Outputs<Id, GossipMsg<Id>, GossipTimer, BroadcastEvent<Id>>;

/// Which anti-entropy exchange a member runs (see the module docs).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum Mode {
    /// Send what the peer may lack.
    Push,
    /// Ask for what this member lacks.
    Pull,
    /// Both.
    PushPull,
}

/// An anti-entropy pass: its mode, period and peers per round.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Pass {
    /// The exchange.
    pub mode: Mode,
    /// How often.
    pub period: Duration,
    /// With how many random live peers.
    pub fanout: usize,
    /// Offer only messages at least this old (a backing pass leaves fresh
    /// messages to the fast path).
    pub min_age: Duration,
}

/// A message in the history buffer.
#[derive(Debug, Clone)]
struct Held<Id> {
    stored: Stored,
    /// When it entered the buffer (in this life).
    born: Duration,
    /// The member it first came from (none: broadcast here, or rebuilt).
    from: Option<Id>,
}

/// Counters of an epidemic core (this life only).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct GossipStats {
    /// Copies of a message received after it was delivered here.
    pub duplicates: u64,
    /// Messages received through the anti-entropy exchange first.
    pub via_anti_entropy: u64,
    /// Messages dropped from the history buffer by age (not known stable).
    pub aged_out: u64,
    /// Rumors that stopped being spread (coin flips that came up "stop").
    pub rumors_stopped: u64,
    /// Plumtree: GRAFTs sent.
    pub grafts: u64,
    /// Plumtree: PRUNEs sent.
    pub prunes: u64,
    /// Plumtree: tree-optimisation swaps (a GRAFT to a shallower announcer
    /// and a PRUNE to the deeper tree link).
    pub swaps: u64,
}

/// What the epidemic broadcasts share (see the module docs): the group,
/// the durable state, what peers are known to hold, and the RNG.
#[derive(Debug, Clone)]
pub struct Store<Id> {
    group: Group<Id>,
    config: BroadcastConfig,
    ledger: Ledger<Id>,
    buffer: BTreeMap<MsgId<Id>, Held<Id>>,
    /// Per peer, what it is known to have delivered.
    known: BTreeMap<Id, BTreeMap<Id, SeqSet>>,
    /// Messages some peer delivered that this member lacks, since when.
    lacking: BTreeMap<MsgId<Id>, Duration>,
    rng: ChaCha8Rng,
    stats: BroadcastStats,
    gossip: GossipStats,
}

/// A stable 64-bit hash of a member id (FNV-1a of its [`clock_key`]).
pub fn id_hash<Id: Debug>(id: &Id) -> u64 {
    clock_key(id)
        .bytes()
        .fold(0xcbf2_9ce4_8422_2325u64, |h, b| {
            (h ^ u64::from(b)).wrapping_mul(0x0000_0100_0000_01b3)
        })
}

impl<Id: MemberId> Store<Id> {
    fn open(o: Opened<Id>) -> Self {
        let seed = id_hash(o.group.me())
            ^ o.ledger.seq().rotate_left(32)
            ^ o.ledger.count().rotate_left(16);
        let held = |(id, stored): (MsgId<Id>, Stored)| {
            let born = Duration::ZERO;
            (
                id,
                Held {
                    stored,
                    born,
                    from: None,
                },
            )
        };
        Self {
            rng: ChaCha8Rng::seed_from_u64(seed),
            group: o.group,
            config: o.config,
            ledger: o.ledger,
            buffer: o.buffer.into_iter().map(held).collect(),
            known: BTreeMap::new(),
            lacking: BTreeMap::new(),
            stats: BroadcastStats::default(),
            gossip: GossipStats::default(),
        }
    }

    /// The group.
    pub fn group(&self) -> &Group<Id> {
        &self.group
    }

    /// The epidemic settings.
    pub fn config(&self) -> &GossipConfig {
        &self.config.gossip
    }

    /// The core's RNG.
    pub fn rng(&mut self) -> &mut ChaCha8Rng {
        &mut self.rng
    }

    /// Counters of the epidemic layer.
    pub fn gossip_stats_mut(&mut self) -> &mut GossipStats {
        &mut self.gossip
    }

    /// True if `id` was delivered here.
    pub fn is_delivered(&self, id: &MsgId<Id>) -> bool {
        self.ledger.is_delivered(id)
    }

    /// The buffered message `id`, as an [`Item`].
    pub fn item(&self, id: &MsgId<Id>) -> Option<Item<Id>> {
        self.buffer.get(id).map(|h| Item {
            id: id.clone(),
            stored: h.stored.clone(),
        })
    }

    /// True if `id` is in the history buffer.
    pub fn item_exists(&self, id: &MsgId<Id>) -> bool {
        self.buffer.contains_key(id)
    }

    /// The member `id` first came from, if it is buffered and came from one.
    pub fn first_from(&self, id: &MsgId<Id>) -> Option<&Id> {
        self.buffer.get(id).and_then(|h| h.from.as_ref())
    }

    /// True if `peer` is known to have delivered `id`.
    pub fn knows(&self, peer: &Id, id: &MsgId<Id>) -> bool {
        self.known
            .get(peer)
            .and_then(|k| k.get(&id.origin))
            .is_some_and(|s| s.contains(id.seq))
    }

    /// `peer` has delivered `id` (it sent, announced or acknowledged it).
    pub fn mark_known(&mut self, peer: &Id, id: &MsgId<Id>) {
        if *peer != *self.group.me() && self.group.contains(peer) {
            self.known
                .entry(peer.clone())
                .or_default()
                .entry(id.origin.clone())
                .or_default()
                .insert(id.seq);
        }
    }

    /// `peer` delivered `id` and this member lacks it: remember to look
    /// for it.
    pub fn note_lacking(&mut self, id: &MsgId<Id>, now: Duration) {
        if !self.is_delivered(id) && self.group.contains(&id.origin) && id.seq > 0 {
            self.lacking.entry(id.clone()).or_insert(now);
        }
    }

    /// This member's digest.
    pub fn digest(&self) -> Digest<Id> {
        self.ledger
            .delivered()
            .iter()
            .map(|(k, v)| (k.clone(), v.clone()))
            .collect()
    }

    /// Learn `peer`'s digest: what it holds, and what exists that this
    /// member lacks.
    fn learn(&mut self, peer: &Id, digest: &Digest<Id>, now: Duration) {
        if !self.group.contains(peer) || peer == self.group.me() {
            return;
        }
        let known = self.known.entry(peer.clone()).or_default();
        for (origin, set) in digest {
            known.entry(origin.clone()).or_default().union_with(set);
        }
        for (origin, set) in digest {
            let mine = self
                .ledger
                .delivered()
                .get(origin)
                .cloned()
                .unwrap_or_default();
            for seq in mine.missing_from(set) {
                let id = MsgId {
                    origin: origin.clone(),
                    seq,
                };
                self.note_lacking(&id, now);
            }
        }
    }

    /// The buffered messages a member with `digest` lacks, of those born
    /// by `born_by`.
    fn lacked_by(&self, digest: &Digest<Id>, born_by: Duration) -> Vec<Item<Id>> {
        let d: BTreeMap<&Id, &SeqSet> = digest.iter().map(|(k, v)| (k, v)).collect();
        self.buffer
            .iter()
            .filter(|(_, h)| h.born <= born_by)
            .filter(|(id, _)| !d.get(&id.origin).is_some_and(|s| s.contains(id.seq)))
            .map(|(id, h)| Item {
                id: id.clone(),
                stored: h.stored.clone(),
            })
            .collect()
    }

    /// The buffered messages `peer` is not known to hold, of those born by
    /// `born_by`.
    fn may_lack(&self, peer: &Id, born_by: Duration) -> Vec<Item<Id>> {
        self.buffer
            .iter()
            .filter(|(id, h)| h.born <= born_by && !self.knows(peer, id))
            .map(|(id, h)| Item {
                id: id.clone(),
                stored: h.stored.clone(),
            })
            .collect()
    }

    /// Up to `k` distinct random live peers other than `except`.
    pub fn random_peers(&mut self, k: usize, except: Option<&Id>) -> Vec<Id> {
        let members = self.group.members();
        let n = members.len();
        let ok = |m: &Id| m != self.group.me() && self.group.is_live(m) && Some(m) != except;
        if n <= 64 {
            let all: Vec<&Id> = members.iter().filter(|m| ok(m)).collect();
            return all
                .choose_multiple(&mut self.rng, k)
                .map(|m| (*m).clone())
                .collect();
        }
        let mut picked: Vec<Id> = Vec::with_capacity(k);
        for _ in 0..3 * n {
            if picked.len() >= k {
                break;
            }
            let m = &members[self.rng.gen_range(0..n)];
            if ok(m) && !picked.contains(m) {
                picked.push(m.clone());
            }
        }
        picked
    }

    /// Take `item` (from `from`, or broadcast here): deliver it and keep it
    /// if it is new (true), else count the copy (false).
    pub fn accept(
        &mut self,
        item: Item<Id>,
        from: Option<&Id>,
        now: Duration,
        out: &mut Out<Id>,
    ) -> bool {
        let Item { id, stored } = item;
        if let Some(f) = from {
            self.mark_known(f, &id);
        }
        if !self.group.contains(&id.origin) || id.seq == 0 {
            return false;
        }
        if self.is_delivered(&id) {
            self.gossip.duplicates += 1;
            return false;
        }
        self.ledger.deliver(&id, &stored, false, false, out);
        self.ledger.kept(&id, &stored, out);
        self.lacking.remove(&id);
        self.stats.delivered += 1;
        self.buffer.insert(
            id,
            Held {
                stored,
                born: now,
                from: from.cloned(),
            },
        );
        true
    }

    /// Drop from the buffer what is stable or too old, and forget lacks
    /// too old to be filled.
    fn collect(&mut self, now: Duration, out: &mut Out<Id>) {
        let history = self.config.gossip.history();
        let members = self.group.members().to_vec();
        let me = self.group.me().clone();
        let mut drop = Vec::new();
        for (id, h) in &self.buffer {
            let stable = members.iter().all(|m| *m == me || self.knows(m, id));
            let aged = now.saturating_sub(h.born) >= history;
            if stable || aged {
                drop.push((id.clone(), stable));
            }
        }
        for (id, stable) in drop {
            self.buffer.remove(&id);
            self.ledger.dropped(&id, out);
            self.stats.collected += 1;
            if !stable {
                self.gossip.aged_out += 1;
            }
        }
        self.lacking
            .retain(|_, since| now.saturating_sub(*since) < history);
    }

    /// True while this member has something to exchange: a message not
    /// known stable, or one it knows it lacks.
    fn active(&self) -> bool {
        !self.buffer.is_empty() || !self.lacking.is_empty()
    }

    /// Buffered ids.
    pub fn buffered(&self) -> impl Iterator<Item = &MsgId<Id>> {
        self.buffer.keys()
    }
}

/// What a [`Spread`] method works with: the shared store, the time, and
/// the outputs of the input being handled.
pub struct Cx<'a, Id: MemberId> {
    /// The shared state.
    pub st: &'a mut Store<Id>,
    /// Now.
    pub now: Duration,
    /// The outputs.
    pub out: &'a mut Out<Id>,
}

/// The slow anti-entropy pass that backs a fast, probabilistic spread
/// (rumor mongering, Plumtree): push-pull with one peer every
/// `anti_entropy_period`, offering only messages older than a period (so
/// it does not race the fast path); none when the period is zero.
pub fn backing_pass(config: &GossipConfig) -> Option<Pass> {
    (config.anti_entropy_period > Duration::ZERO).then_some(Pass {
        mode: Mode::PushPull,
        period: config.anti_entropy_period,
        fanout: 1,
        min_age: config.anti_entropy_period,
    })
}

/// How a new message travels fast in one epidemic algorithm (the
/// anti-entropy exchange being the slow, sure path). Every method has a
/// default that does nothing.
pub trait Spread<Id: MemberId>: Debug + Clone {
    /// The anti-entropy pass of this algorithm, if any.
    fn pass(config: &GossipConfig) -> Option<Pass>;
    /// Its state for a (re)started member.
    fn new(store: &Store<Id>) -> Self;
    /// `id` was delivered here first: broadcast here (`from` none) or
    /// received from `from` through the anti-entropy exchange.
    fn on_new(&mut self, _cx: Cx<'_, Id>, _id: &MsgId<Id>, _from: Option<&Id>) {}
    /// A message of this algorithm (not an anti-entropy one).
    fn on_message(&mut self, _cx: Cx<'_, Id>, _from: Id, _msg: GossipMsg<Id>) {}
    /// A timer of this algorithm (not [`GossipTimer::Round`]).
    fn on_timer(&mut self, _cx: Cx<'_, Id>, _timer: GossipTimer) {}
    /// The live set changed.
    fn on_change(&mut self, _cx: Cx<'_, Id>, _change: Change<Id>) {}
}

/// An epidemic broadcast core: the shared [`Store`] and anti-entropy
/// exchange, and the algorithm's [`Spread`] (see the module docs).
#[derive(Debug, Clone)]
pub struct Epidemic<Id, S> {
    st: Store<Id>,
    spread: S,
    round_armed: bool,
}

impl<Id: MemberId, S: Spread<Id>> Engine<Id> for Epidemic<Id, S> {
    fn open(o: Opened<Id>) -> Self {
        let st = Store::open(o);
        let spread = S::new(&st);
        Self {
            st,
            spread,
            round_armed: false,
        }
    }
}

impl<Id: MemberId, S: Spread<Id>> Epidemic<Id, S> {
    /// The algorithm's spread state.
    pub fn spread(&self) -> &S {
        &self.spread
    }

    /// Counters of the epidemic layer.
    pub fn gossip_stats(&self) -> GossipStats {
        self.st.gossip
    }

    fn arm(&mut self, out: &mut Out<Id>) {
        if let Some(pass) = S::pass(&self.st.config.gossip) {
            if !self.round_armed && self.st.active() {
                self.round_armed = true;
                out.set_timer(pass.period, GossipTimer::Round);
            }
        }
    }

    fn new_message(&mut self, id: &MsgId<Id>, from: Option<&Id>, now: Duration, out: &mut Out<Id>) {
        let cx = Cx {
            st: &mut self.st,
            now,
            out,
        };
        self.spread.on_new(cx, id, from);
    }

    fn round(&mut self, pass: Pass, now: Duration, out: &mut Out<Id>) {
        self.st.collect(now, out);
        if !self.st.active() {
            return;
        }
        let digest = self.st.digest();
        for p in self.st.random_peers(pass.fanout, None) {
            match pass.mode {
                Mode::Push => {
                    let items = self.st.may_lack(&p, now.saturating_sub(pass.min_age));
                    if !items.is_empty() {
                        let digest = digest.clone();
                        out.send(
                            p,
                            GossipMsg::Push {
                                digest,
                                items,
                                ask: false,
                            },
                        );
                    }
                }
                Mode::Pull | Mode::PushPull => {
                    let digest = digest.clone();
                    out.send(p, GossipMsg::Pull { digest });
                }
            }
        }
    }

    fn on_push(
        &mut self,
        from: Id,
        digest: Digest<Id>,
        items: Vec<Item<Id>>,
        ask: bool,
        now: Duration,
        out: &mut Out<Id>,
    ) {
        self.st.learn(&from, &digest, now);
        let brought = !items.is_empty();
        let mut fresh = false;
        for item in items {
            let id = item.id.clone();
            if self.st.accept(item, Some(&from), now, out) {
                fresh = true;
                self.st.gossip.via_anti_entropy += 1;
                self.new_message(&id, Some(&from), now, out);
            }
        }
        let pass = S::pass(&self.st.config.gossip);
        let born_by = now.saturating_sub(pass.map_or(Duration::ZERO, |p| p.min_age));
        let mode = pass.map(|p| p.mode);
        if ask {
            let items = self.st.lacked_by(&digest, born_by);
            let digest = self.st.digest();
            out.send(
                from,
                GossipMsg::Push {
                    digest,
                    items,
                    ask: false,
                },
            );
        } else if mode == Some(Mode::Push) && brought && !fresh {
            // Feedback: nothing new, so that the pusher learns it.
            let digest = self.st.digest();
            out.send(
                from,
                GossipMsg::Push {
                    digest,
                    items: Vec::new(),
                    ask: false,
                },
            );
        }
    }

    fn on_pull(&mut self, from: Id, digest: Digest<Id>, now: Duration, out: &mut Out<Id>) {
        self.st.learn(&from, &digest, now);
        let pass = S::pass(&self.st.config.gossip);
        let born_by = now.saturating_sub(pass.map_or(Duration::ZERO, |p| p.min_age));
        let mode = pass.map(|p| p.mode);
        let items = self.st.lacked_by(&digest, born_by);
        // Push-pull: ask back for what the digest shows this member lacks.
        let lacks = digest.iter().any(|(o, set)| {
            let mine = self
                .st
                .ledger
                .delivered()
                .get(o)
                .cloned()
                .unwrap_or_default();
            !mine.missing_from(set).is_empty()
        });
        let ask = mode == Some(Mode::PushPull) && lacks;
        let digest = self.st.digest();
        out.send(from, GossipMsg::Push { digest, items, ask });
    }
}

impl<Id: MemberId, S: Spread<Id>> Protocol for Epidemic<Id, S> {
    protocol_types!(GossipMsg<Id>, GossipTimer, BroadcastEvent<Id>);

    fn on_start(&mut self, now: Duration, out: &mut OutputsOf<Self>) {
        for h in self.st.buffer.values_mut() {
            h.born = now;
        }
        self.arm(out);
    }

    fn on_message(
        &mut self,
        now: Duration,
        from: Id,
        msg: GossipMsg<Id>,
        out: &mut OutputsOf<Self>,
    ) {
        if !self.st.group.contains(&from) || from == *self.st.group.me() {
            return;
        }
        match msg {
            GossipMsg::Push { digest, items, ask } => {
                self.on_push(from, digest, items, ask, now, out)
            }
            GossipMsg::Pull { digest } => self.on_pull(from, digest, now, out),
            other => {
                let cx = Cx {
                    st: &mut self.st,
                    now,
                    out,
                };
                self.spread.on_message(cx, from, other)
            }
        }
        self.arm(out);
    }

    fn on_timer(&mut self, now: Duration, timer: GossipTimer, out: &mut OutputsOf<Self>) {
        match timer {
            GossipTimer::Round => {
                self.round_armed = false;
                if let Some(pass) = S::pass(&self.st.config.gossip) {
                    self.round(pass, now, out);
                }
            }
            other => {
                let cx = Cx {
                    st: &mut self.st,
                    now,
                    out,
                };
                self.spread.on_timer(cx, other)
            }
        }
        self.arm(out);
    }

    fn on_membership(&mut self, now: Duration, change: MemberEvent<Id>, out: &mut OutputsOf<Self>) {
        if let Some(c) = self.st.group.apply(change) {
            let cx = Cx {
                st: &mut self.st,
                now,
                out,
            };
            self.spread.on_change(cx, c);
        }
        self.arm(out);
    }

    fn persist(&mut self, out: &mut OutputsOf<Self>) {
        self.st.ledger.persist(out);
    }
}

super::ledger::ledger_snapshot!(
    impl<Id: MemberId, S: Spread<Id>> for Epidemic<Id, S>,
    |s| s.st.ledger, s.st.buffer.iter().map(|(id, h)| (id, &h.stored))
);

impl<Id: MemberId, S: Spread<Id>> crate::testkit::SimProtocol for Epidemic<Id, S> {
    fn msg_kind(msg: &GossipMsg<Id>) -> &'static str {
        match msg {
            GossipMsg::Push { items, .. } if items.is_empty() => "digest",
            GossipMsg::Push { .. } => "push",
            GossipMsg::Pull { .. } => "pull",
            GossipMsg::Rumor { .. } => "rumor",
            GossipMsg::Feedback { .. } => "feedback",
            GossipMsg::Gossip { .. } => "gossip",
            GossipMsg::IHave { .. } => "ihave",
            GossipMsg::Graft { .. } => "graft",
            GossipMsg::Prune => "prune",
        }
    }
}

impl<Id: MemberId, S: Spread<Id>> BroadcastCore for Epidemic<Id, S> {
    fn broadcast(&mut self, payload: Vec<u8>, now: Duration, out: &mut OutputsOf<Self>) {
        let id = MsgId {
            origin: self.st.group.me().clone(),
            seq: self.st.ledger.next_seq(),
        };
        let stored = Stored {
            stamps: Stamps::default(),
            payload,
        };
        let item = Item {
            id: id.clone(),
            stored,
        };
        if self.st.accept(item, None, now, out) {
            self.new_message(&id, None, now, out);
        }
        self.arm(out);
    }

    fn stats(&self) -> BroadcastStats {
        BroadcastStats {
            sent: self.st.ledger.seq(),
            index: self.st.ledger.count(),
            buffered: self.st.buffer.len(),
            held_back: 0,
            ..self.st.stats
        }
    }
}

/// A deterministic random graph for Plumtree's views: member `m` picks
/// `k` distinct others from a generator seeded by its id; the view of `me`
/// is its picks and the members that picked it (so the relation is
/// symmetric). A random `k`-out graph is connected with high probability
/// for `k >= 2`.
pub fn random_view<Id: MemberId>(me: &Id, members: &[Id], k: usize) -> BTreeSet<Id> {
    let n = members.len();
    let k = k.min(n.saturating_sub(1));
    let picks = |m: &Id| -> Vec<Id> {
        let mut rng = ChaCha8Rng::seed_from_u64(id_hash(m) ^ 0x9e37_79b9_7f4a_7c15);
        let mut picked: Vec<Id> = Vec::with_capacity(k);
        while picked.len() < k {
            let x = &members[rng.gen_range(0..n)];
            if x != m && !picked.contains(x) {
                picked.push(x.clone());
            }
        }
        picked
    };
    let mut view: BTreeSet<Id> = picks(me).into_iter().collect();
    for m in members.iter().filter(|m| *m != me) {
        if picks(m).contains(me) {
            view.insert(m.clone());
        }
    }
    view
}
