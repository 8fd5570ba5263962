//! SWIM membership and failure detection (Das, Gupta, Motivala 2002) with the
//! Lifeguard extensions (Dadgar, Phillips, Currey 2018), as in memberlist.
//!
//! Each protocol period a node probes one member, chosen in a randomized
//! round-robin order (reshuffled every round, seeded RNG): a direct `Ping`,
//! and if no `Ack` arrives within the probe timeout, `PingReq`s to `k` other
//! members who ping the target on its behalf and relay its `Ack` (or send a
//! `Nack` if they get none), plus one more direct `Ping` (memberlist's TCP
//! fallback ping plays this role). If the period ends without an ack the target is
//! *suspected*. Suspicion carries the member's incarnation number; a
//! suspected member that hears of it *refutes* by bumping its incarnation
//! and disseminating `Alive`. A suspicion that is not refuted within the
//! suspicion timeout turns into `Dead` (reported `Down`).
//!
//! Membership updates (alive / suspect / dead / left) spread
//! infection-style, piggybacked on pings, acks and ping-reqs, and by
//! periodic gossip as in memberlist: every `gossip_interval` (200 ms) a node
//! with pending updates sends them, in a gossip-only `Gossip` message, to
//! `gossip_nodes` (3) random members that are live or were declared `Down`
//! less than `gossip_to_the_dead` (30 s) ago, so that one declared dead by
//! mistake hears it and refutes (`gossip_nodes = 0` turns gossip off).
//! Each update is sent `retransmit_mult * ceil(log10(N+1))` times in all
//! (piggyback and gossip together), fewest-sent first (newest first among
//! equals), at most `max_piggyback` per message. Bad news about the
//! destination itself is always included first so it can refute quickly
//! (Lifeguard's buddy system). With gossip a death reaches every member in well under one
//! protocol period (p50 0.2-0.6 periods at N = 8..1024, loss 0 %, in `fd_quality`),
//! against 1-4.5 periods on probe traffic alone.
//!
//! Bounded gossip (unlike memberlist): a gossip round sends only while a
//! pending update is *fresh*: a suspicion or death that has been sent
//! (piggybacked or gossiped) fewer than `gossip_transmits` (6) times, or
//! any alive/left update (a refutation). A gossip message goes out only
//! if one is still fresh (or it carries bad news about its destination),
//! and then carries the usual selection. A suspicion's or death's later
//! sends, up to its retransmit limit, ride only on pings, acks and
//! ping-reqs, which go out anyway. Why: with a fixed amount of churn,
//! memberlist's rule (gossip while anything is pending) makes every update
//! cost about `retransmit_mult * log10 N` gossip-only messages per member,
//! so the per-member load grows like log N (measured at loss 0 %: 0.03 /
//! 0.41 / 0.68 / 0.81 gossip msgs/member/s at N = 8 / 64 / 256 / 1024);
//! with the bound a suspicion or death costs at most `gossip_transmits`
//! gossip-only messages per member whatever N (0.03 / 0.33 / 0.35 / 0.35;
//! total 1.75 / 2.36 / 2.52 / 2.55 msgs/member/s, 2.6 per live member at
//! N >= 64), while the first rounds, which do the fast part of the
//! epidemic, stay. The few members the gossip rounds miss (in a push
//! epidemic where each member sends `G` copies, roughly `e^-G` of them)
//! get the update from the remaining piggybacked sends. Refutations are
//! exempt because a member that misses one in time turns a false
//! suspicion into a false `Down` (measured at N = 64, 20 % loss, 64
//! seeds: bounding them too at `gossip_transmits = 4` gave 50 false deaths
//! against 19 without the bound; 17 with the exemption, 13 at 6), while a
//! member that misses a death only learns it a little later; without
//! false suspicions (loss 0 %) no refutation is sent.
//! `gossip_transmits = 4` also slowed dissemination (first to last `Down`
//! p99 1.0-1.4 periods at N = 1024, against 0.7-0.8 without the bound);
//! 6 keeps it close to that. A `gossip_transmits` at or above the
//! retransmit limit is memberlist's rule (so nothing changes at N <= 9,
//! where the limit is 4).
//!
//! Lifeguard: (1) a local-health score (0..multiplier-1) that rises on
//! missed acks/nacks and on refuting a suspicion of oneself, falls on
//! successful probes (acked directly in time, see (f) below), and scales the probe interval and timeout by
//! `score+1`, so a slow or overloaded node probes less aggressively instead
//! of spreading false suspicions; (2) a suspicion timeout that starts at
//! `max = suspicion_max_timeout_mult * min` with
//! `min = suspicion_mult * max(1, log10 N) * probe_interval` and shrinks
//! towards `min` as independent confirmations arrive:
//! `max - (ln(c+1)/ln(K+1)) * (max-min)` with `K = suspicion_mult - 2`
//! expected confirmations (0 when `N - 2 < K`: too few members to supply
//! them), where `c` counts distinct suspecters other than the one whose
//! suspicion started the timer, as in memberlist; confirmations beyond `K`
//! change nothing and, as in memberlist, are not re-broadcast. A member's
//! own failed probe of a member it already suspects is a confirmation too.
//!
//! Deviations from the papers and memberlist, all cheap: (a) the second
//! direct ping above (memberlist's fallback is TCP); (b) a node that
//! receives news older than its own (a suspicion of a member it knows
//! refuted, or of itself, or an alive for one it knows dead) puts the
//! newer state into its reply to that sender (in the ack, or in a gossip
//! message back when the stale news came by gossip; a death at the same
//! incarnation is not stale); (c) a node
//! whose suspicion is about to expire first sends the suspect one last
//! ping (one probe timeout before the deadline) carrying the suspicion;
//! the ack brings back a refutation the node may have missed; (d) a probe
//! without an ack does not raise a suspicion if the target sent this node
//! anything during that protocol period; (e) when more updates wait than
//! fit in a message, alive/left go before dead before suspect (a
//! refutation cancels a suspicion wherever it arrives, so under congestion
//! it must not starve behind new suspicions). A stale suspicion of oneself
//! is answered by re-announcing the current incarnation, not by bumping it
//! again. (f) Only a probe acked directly within the probe timeout lowers
//! the local-health score; one acked later (relayed by a helper, or
//! answering the second direct ping) leaves it unchanged, where Lifeguard
//! and memberlist lower it for every successful probe. Measured with
//! `fd_quality` (seeds 1..k): counting late acks changes no first-detection
//! p50 at N = 8 / 64 / 256 (64 / 24 / 6 seeds), and at N = 1024, 20 % loss
//! (4 seeds), where dissemination is saturated, it raises first / all
//! detection p50 from 13.9 / 21.5 to 14.8 / 23.0 s and false positives from
//! 1.7 to 3.6 per node-hour: the slightly higher score there throttles
//! probing, and with it the false suspicions that congest the queue.
//!
//! Joining goes through seed nodes (`Join`, answered with a membership
//! snapshot); a graceful `leave` disseminates `Left`; a restarted node (same
//! name, new identity, see [`super::MemberIdentity`]) replaces its old life.
//! Partitions heal because a node periodically pings one member it thinks is
//! `Down` and tells it so; a live one refutes, and the refutation spreads.
//!
//! Guarantees: strong completeness (a crashed member is eventually declared
//! dead by all), expected first detection about `e/(e-1)` protocol periods
//! after a crash plus the suspicion timeout, dissemination in O(log N)
//! periods, and per-member message load independent of N (the `log10 N`
//! retransmissions of each update add bytes to messages sent anyway, not
//! messages; refutations are the exception, see above). Accuracy is probabilistic: a
//! member unreachable or paused for longer than the suspicion timeout is
//! declared dead and comes back `Up` when its refutation arrives. Under
//! heavy uniform loss in a large cluster (20 % at N = 1024) false
//! suspicions arrive faster than their refutations can be retransmitted
//! `retransmit_mult * log10 N` times by every member; updates then queue
//! (refutations first) and dissemination slows to several periods.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::hash::{BuildHasherDefault, Hasher};
use std::time::Duration;

use rand::seq::SliceRandom;
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use serde::{Deserialize, Serialize};
use troupe_framework::membership::{FailureDetector, MemberEvent, MemberStatus};
use troupe_framework::sansio::Protocol;

use super::{FdId, FdMessage, FdOutputs, FdTimer};

/// Parameters of [`Swim`] (see [`super::config::SwimConfig`] for defaults).
#[derive(Debug, Clone, PartialEq)]
pub struct SwimParams {
    /// Protocol period (before local-health scaling).
    pub probe_interval: Duration,
    /// Direct-ack timeout (before local-health scaling).
    pub probe_timeout: Duration,
    /// Indirect probes `k`.
    pub indirect_checks: usize,
    /// Retransmit multiplier.
    pub retransmit_mult: u32,
    /// Suspicion multiplier.
    pub suspicion_mult: u32,
    /// max suspicion timeout = this * min.
    pub suspicion_max_timeout_mult: u32,
    /// Local-health multiplier cap.
    pub awareness_max_multiplier: u32,
    /// Updates piggybacked per message, at most.
    pub max_piggyback: usize,
    /// Period of pings to `Down` members (partition healing).
    pub reconnect_interval: Duration,
    /// Period of gossip rounds.
    pub gossip_interval: Duration,
    /// Members gossiped to per round (0 = no periodic gossip).
    pub gossip_nodes: usize,
    /// How long a member declared `Down` remains a gossip target.
    pub gossip_to_the_dead: Duration,
    /// A gossip-only message is sent only while some pending suspicion or
    /// death has been sent (piggybacked or gossiped) fewer than this many
    /// times, or an alive/left update is pending (see the module doc).
    pub gossip_transmits: u32,
}

impl Default for SwimParams {
    fn default() -> Self {
        super::config::SwimConfig::default().params()
    }
}

/// A membership update, disseminated by gossip.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub enum Update<Id> {
    /// `member` is alive at incarnation `inc`.
    Alive {
        /// The member.
        member: Id,
        /// Its incarnation number.
        inc: u64,
    },
    /// `from` suspects `member` at incarnation `inc`.
    Suspect {
        /// The member.
        member: Id,
        /// Its incarnation number.
        inc: u64,
        /// Who suspects it.
        from: Id,
    },
    /// `from` declared `member` dead at incarnation `inc`.
    Dead {
        /// The member.
        member: Id,
        /// Its incarnation number.
        inc: u64,
        /// Who declared it.
        from: Id,
    },
    /// `member` left gracefully.
    Left {
        /// The member.
        member: Id,
        /// Its incarnation number.
        inc: u64,
    },
}

impl<Id> Update<Id> {
    /// The member the update is about.
    pub fn member(&self) -> &Id {
        match self {
            Update::Alive { member, .. }
            | Update::Suspect { member, .. }
            | Update::Dead { member, .. }
            | Update::Left { member, .. } => member,
        }
    }
}

/// SWIM wire messages (inside [`FdMessage::Swim`]).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub enum SwimMessage<Id> {
    /// Are you alive? Answer with `Ack { seq }`.
    Ping {
        /// Sender's sequence number.
        seq: u64,
        /// Piggybacked updates.
        updates: Vec<Update<Id>>,
    },
    /// Answer to a `Ping` (or relayed answer to a `PingReq`).
    Ack {
        /// The ping's sequence number.
        seq: u64,
        /// Piggybacked updates.
        updates: Vec<Update<Id>>,
    },
    /// Please ping `target` for me and relay its ack.
    PingReq {
        /// Requester's sequence number.
        seq: u64,
        /// Member to probe.
        target: Id,
        /// Piggybacked updates.
        updates: Vec<Update<Id>>,
    },
    /// The helper got no ack from the target in time (Lifeguard).
    Nack {
        /// Requester's sequence number.
        seq: u64,
    },
    /// A new node asks a seed to be let in.
    Join {
        /// The joiner's incarnation number.
        inc: u64,
    },
    /// The seed's membership snapshot (including itself).
    JoinReply {
        /// Every member the seed knows, with its state.
        members: Vec<Update<Id>>,
    },
    /// Periodic gossip: membership updates only, no answer expected
    /// (except corrections when it carried news older than the receiver's).
    Gossip {
        /// The updates.
        updates: Vec<Update<Id>>,
    },
}

/// SWIM timers (inside [`FdTimer::Swim`]).
#[derive(Debug, Clone, PartialEq)]
pub enum SwimTimer<Id> {
    /// Start of a protocol period.
    Probe,
    /// Direct-ack deadline of probe `seq`.
    ProbeTimeout {
        /// Probe sequence number.
        seq: u64,
    },
    /// Deadline of a relayed ping (send a nack).
    RelayTimeout {
        /// Relay sequence number.
        seq: u64,
    },
    /// Re-check a suspicion of `member`.
    Suspicion {
        /// The suspected member.
        member: Id,
    },
    /// Ping a `Down` member.
    Reconnect,
    /// Retry joining through the seeds.
    JoinRetry,
    /// Start of a gossip round.
    Gossip,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum State {
    Alive,
    Suspect,
    Dead,
    Left,
}

impl State {
    fn status(self) -> MemberStatus {
        match self {
            State::Alive => MemberStatus::Up,
            State::Suspect => MemberStatus::Suspect,
            State::Dead => MemberStatus::Down,
            State::Left => MemberStatus::Left,
        }
    }
    fn live(self) -> bool {
        matches!(self, State::Alive | State::Suspect)
    }
}

#[derive(Debug, Clone)]
struct Suspicion<Id> {
    start: Duration,
    min: Duration,
    max: Duration,
    k: u32,
    confirmers: BTreeSet<Id>,
    verified: bool,
}

impl<Id> Suspicion<Id> {
    /// Lifeguard's remaining-time formula, as a total timeout from `start`.
    fn timeout(&self) -> Duration {
        let c = self.confirmers.len().saturating_sub(1) as f64;
        if self.k == 0 {
            return self.min;
        }
        let frac = (c + 1.0).ln() / (self.k as f64 + 1.0).ln();
        let (min, max) = (self.min.as_secs_f64(), self.max.as_secs_f64());
        let raw = max - frac * (max - min);
        let t = Duration::from_millis((raw * 1000.0).floor().max(0.0) as u64);
        t.max(self.min)
    }
}

/// What most lookups need about a member (every received update is
/// checked against it), kept small so the member table stays dense in
/// cache; the rest is in [`MemberDetail`].
#[derive(Debug, Clone, Copy)]
struct Member {
    inc: u64,
    state: State,
}

/// The rarely read part of a member's entry.
#[derive(Debug, Clone)]
struct MemberDetail<Id> {
    /// Boxed: most members are not suspected.
    suspicion: Option<Box<Suspicion<Id>>>,
    /// When its state last changed (or it was admitted).
    since: Duration,
}

#[derive(Debug, Clone)]
struct Probe<Id> {
    seq: u64,
    start: Duration,
    target: Id,
    acked: bool,
    indirect: bool,
    expected_nacks: u32,
    nacks: u32,
    /// The target sent us something after `start` (deviation (d)).
    heard: bool,
}

/// A fast multiplicative hasher (the rustc "Fx" scheme) with a fixed
/// start, for lookup-only tables: deterministic (no OS randomness) and a
/// few instructions per id. Not resistant to crafted collisions; member
/// ids come from authenticated cluster peers.
#[derive(Debug, Default, Clone, Copy)]
struct FxHasher(u64);

const FX_K: u64 = 0xf135_7aea_2e62_a9c5;

impl FxHasher {
    fn add(&mut self, word: u64) {
        self.0 = (self.0.rotate_left(26) ^ word).wrapping_mul(FX_K);
    }
}

impl Hasher for FxHasher {
    fn write(&mut self, bytes: &[u8]) {
        let mut chunks = bytes.chunks_exact(8);
        for c in &mut chunks {
            let mut w = [0u8; 8];
            w.copy_from_slice(c);
            self.add(u64::from_le_bytes(w));
        }
        let rest = chunks.remainder();
        if !rest.is_empty() {
            let mut w = [0u8; 8];
            w[..rest.len()].copy_from_slice(rest);
            self.add(u64::from_le_bytes(w) ^ ((rest.len() as u64) << 59));
        }
    }
    fn write_u8(&mut self, i: u8) {
        self.add(u64::from(i));
    }
    fn write_u16(&mut self, i: u16) {
        self.add(u64::from(i));
    }
    fn write_u32(&mut self, i: u32) {
        self.add(u64::from(i));
    }
    fn write_u64(&mut self, i: u64) {
        self.add(i);
    }
    fn write_usize(&mut self, i: usize) {
        self.add(i as u64);
    }
    fn finish(&self) -> u64 {
        self.0
    }
}

/// Lookup-only hash map with a fixed-start hasher (no OS randomness). It
/// is never iterated, so no decision depends on hash order.
type LookupMap<K, V> = HashMap<K, V, BuildHasherDefault<FxHasher>>;

/// The member table: entries in admission order (random picks index it
/// directly; every pass over the members goes through it and sorts when
/// order matters), found by id through an open-addressing index of
/// positions (linear probing, at most half full).
///
/// Built for the cache: with a 1024-member cluster simulated in one
/// process, each node's table is cold when its next event comes, and every
/// received update is checked against it. A lookup reads one 4-byte index
/// slot (the index is 8 KiB at N = 1024) and one 24-byte entry (for
/// [`super::SimId`]), where a general hash map with 64-byte entries took
/// two cache misses over a table six times larger. The index is never
/// iterated, so hash order decides nothing. Removal (a restarted member
/// replacing its old life) is rare and rebuilds the index.
#[derive(Debug)]
struct MemberTable<Id> {
    index: Vec<u32>,
    /// log2 of `index.len()`.
    bits: u32,
    entries: Vec<(Id, Member)>,
    /// Parallel to `entries`.
    details: Vec<MemberDetail<Id>>,
}

impl<Id: FdId> MemberTable<Id> {
    const EMPTY: u32 = u32::MAX;

    fn new() -> Self {
        Self {
            index: Vec::new(),
            bits: 0,
            entries: Vec::new(),
            details: Vec::new(),
        }
    }

    fn len(&self) -> usize {
        self.entries.len()
    }

    fn home(&self, id: &Id) -> usize {
        let mut h = FxHasher::default();
        id.hash(&mut h);
        // Fibonacci hashing: the top bits of a second multiplication.
        (h.finish().wrapping_mul(0x9e37_79b9_7f4a_7c15) >> (64 - self.bits)) as usize
    }

    /// Position of `id` in `entries`.
    fn pos(&self, id: &Id) -> Option<usize> {
        if self.entries.is_empty() {
            return None;
        }
        let mask = self.index.len() - 1;
        let mut i = self.home(id);
        loop {
            let p = self.index[i];
            if p == Self::EMPTY {
                return None;
            }
            if self.entries[p as usize].0 == *id {
                return Some(p as usize);
            }
            i = (i + 1) & mask;
        }
    }

    fn get(&self, id: &Id) -> Option<&Member> {
        self.pos(id).map(|p| &self.entries[p].1)
    }

    /// A member's entry and detail.
    fn get_full_mut(&mut self, id: &Id) -> Option<(&mut Member, &mut MemberDetail<Id>)> {
        let p = self.pos(id)?;
        Some((&mut self.entries[p].1, &mut self.details[p]))
    }

    fn detail_mut(&mut self, id: &Id) -> Option<&mut MemberDetail<Id>> {
        self.pos(id).map(|p| &mut self.details[p])
    }

    fn contains_key(&self, id: &Id) -> bool {
        self.pos(id).is_some()
    }

    fn place(&mut self, id: &Id, pos: u32) {
        let mask = self.index.len() - 1;
        let mut i = self.home(id);
        while self.index[i] != Self::EMPTY {
            i = (i + 1) & mask;
        }
        self.index[i] = pos;
    }

    fn rebuild(&mut self, bits: u32) {
        self.bits = bits;
        self.index = vec![Self::EMPTY; 1 << bits];
        for p in 0..self.entries.len() {
            let id = self.entries[p].0.clone();
            self.place(&id, p as u32);
        }
    }

    /// Add a member not in the table (at the end of the admission order).
    fn insert(&mut self, id: Id, member: Member, detail: MemberDetail<Id>) {
        debug_assert!(!self.contains_key(&id));
        let pos = self.entries.len() as u32;
        self.entries.push((id.clone(), member));
        self.details.push(detail);
        if 2 * self.entries.len() > self.index.len() {
            self.rebuild((self.bits + 1).max(4));
        } else {
            self.place(&id, pos);
        }
    }

    /// Remove a member, keeping the admission order of the others.
    fn remove(&mut self, id: &Id) -> Option<Member> {
        let p = self.pos(id)?;
        let (_, m) = self.entries.remove(p);
        self.details.remove(p);
        self.rebuild(self.bits);
        Some(m)
    }
}

/// A queued update: the update and whether it is still the queued one for
/// its member (a newer update about the same member replaces it in place).
#[derive(Debug)]
struct Queued<Id> {
    update: Update<Id>,
    live: bool,
    /// Times sent so far (mirrors its key's count; read when the update is
    /// replaced or dropped, to keep [`BroadcastQueue::fresh`] exact).
    transmits: u32,
}

/// Send-order key of a queued update: priority class, then fewest
/// transmissions, then newest (highest slot) first.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
struct QueueKey {
    class: u8,
    transmits: u32,
    newest: std::cmp::Reverse<u32>,
}

impl QueueKey {
    fn slot(self) -> u32 {
        self.newest.0
    }
}

/// Updates waiting to be piggybacked, at most one per member, in send
/// order: priority class (see [`priority`]), then fewest transmissions,
/// then newest first (memberlist's transmit-limited queue, plus the
/// priority classes).
///
/// Layout, chosen for speed (a large cluster under loss spends most of its
/// time here and in member lookups, on memory that is cold when the node's
/// next event comes): every pushed update gets the next slot of `slots`, so
/// slot numbers are push order; `order` holds one small key per live
/// update, sorted in reverse send order, so the next update to send is its
/// last element. Taking an update pops its key and re-inserts it with one
/// more transmission (a binary search and a short move in one contiguous
/// vector); no hash lookup is needed except when an update is dropped. A
/// replaced or removed update is only marked dead and skipped when
/// reached; `slots` is compacted (renumbered in the same order) when dead
/// ones outnumber live ones.
#[derive(Debug)]
struct BroadcastQueue<Id> {
    slots: Vec<Queued<Id>>,
    /// Keys in descending order (next to send last).
    order: Vec<QueueKey>,
    /// The slot of each member's queued update.
    by_member: LookupMap<Id, u32>,
    /// Scratch list of [`Self::take_into`] (kept for its capacity).
    resend: Vec<QueueKey>,
    /// A suspicion or death is *fresh* while it has been sent fewer than
    /// this many times (`gossip_transmits`; alive and left are fresh until
    /// dropped): only fresh updates start gossip-only messages.
    fresh_below: u32,
    /// Live updates that are fresh.
    fresh: usize,
}

impl<Id: FdId> BroadcastQueue<Id> {
    fn new(fresh_below: u32) -> Self {
        Self {
            slots: Vec::new(),
            order: Vec::new(),
            by_member: LookupMap::default(),
            resend: Vec::new(),
            fresh_below,
            fresh: 0,
        }
    }

    /// True if some queued update is fresh (see [`Self::is_fresh`]).
    fn has_fresh(&self) -> bool {
        self.fresh > 0
    }

    /// An update of priority `class` sent `transmits` times is fresh (may
    /// start gossip-only messages) while it has been sent fewer than
    /// `fresh_below` times; alive and left (refutations, class 0) stay
    /// fresh until their last send.
    fn is_fresh(&self, class: u8, transmits: u32) -> bool {
        class == 0 || transmits < self.fresh_below
    }

    /// Slot `slot` stops being live (replaced, removed or dropped).
    fn kill(&mut self, slot: u32) {
        let q = &self.slots[slot as usize];
        if q.live && self.is_fresh(priority(&q.update), q.transmits) {
            self.fresh -= 1;
        }
        self.slots[slot as usize].live = false;
    }

    fn len(&self) -> usize {
        self.by_member.len()
    }

    fn is_empty(&self) -> bool {
        self.by_member.is_empty()
    }

    fn insert_key(&mut self, key: QueueKey) {
        if self.order.last().map_or(true, |last| key < *last) {
            // The usual case for a new update: next to send.
            self.order.push(key);
        } else {
            let at = self.order.partition_point(|k| *k > key);
            self.order.insert(at, key);
        }
    }

    /// Queue `update`, replacing any queued update about the same member.
    fn push(&mut self, update: Update<Id>) {
        if self.slots.len() >= u32::MAX as usize || self.slots.len() > 2 * self.len() + 64 {
            self.compact();
        }
        let slot = self.slots.len() as u32;
        let class = priority(&update);
        if let Some(old) = self.by_member.insert(update.member().clone(), slot) {
            self.kill(old);
        }
        if self.is_fresh(class, 0) {
            self.fresh += 1;
        }
        self.slots.push(Queued {
            update,
            live: true,
            transmits: 0,
        });
        self.insert_key(QueueKey {
            class,
            transmits: 0,
            newest: std::cmp::Reverse(slot),
        });
    }

    fn remove_member(&mut self, member: &Id) {
        if let Some(slot) = self.by_member.remove(member) {
            self.kill(slot);
        }
    }

    /// Drop dead slots and renumber the live ones in the same order.
    fn compact(&mut self) {
        let mut renumber = vec![u32::MAX; self.slots.len()];
        let mut slots = Vec::with_capacity(self.len());
        for (i, q) in std::mem::take(&mut self.slots).into_iter().enumerate() {
            if q.live {
                renumber[i] = slots.len() as u32;
                slots.push(q);
            }
        }
        // Renumbering keeps the slots' order, so the keys stay sorted.
        self.order.retain_mut(|k| {
            k.newest.0 = renumber[k.slot() as usize];
            k.newest.0 != u32::MAX
        });
        for (i, q) in slots.iter().enumerate() {
            if let Some(s) = self.by_member.get_mut(q.update.member()) {
                *s = i as u32;
            }
        }
        self.slots = slots;
    }

    /// Forget `slot`, whose update is dropped for good.
    fn drop_slot(&mut self, slot: u32) {
        self.kill(slot);
        let q = &self.slots[slot as usize];
        self.by_member.remove(q.update.member());
    }

    /// Read (only) the slots of the next `room` queued updates, as
    /// [`Swim::touch`] does for the member table: a reply will take them.
    fn touch(&self, room: usize) {
        let live: usize = self
            .order
            .iter()
            .rev()
            .take(room)
            .map(|k| usize::from(self.slots[k.slot() as usize].live))
            .sum();
        std::hint::black_box(live);
    }

    /// Append the next `room` updates in send order to `v`, each counted
    /// as transmitted once more; an update that reached `limit`
    /// transmissions is dropped (also one found at or above a limit that
    /// shrank with the cluster).
    fn take_into(&mut self, v: &mut Vec<Update<Id>>, room: usize, limit: u32) {
        let room = v.len() + room;
        // Re-inserted after the pass, so that none is taken twice for one
        // message.
        let mut resend = std::mem::take(&mut self.resend);
        while v.len() < room {
            let Some(key) = self.order.pop() else {
                break;
            };
            let slot = key.slot();
            if !self.slots[slot as usize].live {
                continue;
            }
            if key.transmits >= limit {
                self.drop_slot(slot);
                continue;
            }
            let q = &mut self.slots[slot as usize];
            v.push(q.update.clone());
            q.transmits = key.transmits + 1;
            if key.class != 0 && q.transmits == self.fresh_below {
                self.fresh -= 1;
            }
            if key.transmits + 1 < limit {
                resend.push(QueueKey {
                    transmits: key.transmits + 1,
                    ..key
                });
            } else {
                self.drop_slot(slot);
            }
        }
        // Merge the re-sent keys back from the end (they were the smallest
        // and are still small, so only the tail of `order` moves).
        if !resend.is_empty() {
            // Keys were popped in ascending order and each got the same +1
            // on its transmission count, so they are still ascending:
            // reversing is enough (sorting a reversed run by insertion was
            // ~6 % of a 1024-member run at 20 % loss). Sorted anyway should
            // that ever not hold.
            if resend.windows(2).all(|w| w[0] < w[1]) {
                resend.reverse();
            } else {
                resend.sort_unstable_by(|a, b| b.cmp(a));
            }
            let mut i = self.order.len();
            let mut j = resend.len();
            self.order.extend_from_slice(&resend);
            let mut w = self.order.len();
            while j > 0 {
                w -= 1;
                if i > 0 && self.order[i - 1] < resend[j - 1] {
                    self.order[w] = self.order[i - 1];
                    i -= 1;
                } else {
                    self.order[w] = resend[j - 1];
                    j -= 1;
                }
            }
            resend.clear();
        }
        self.resend = resend;
    }

    #[cfg(test)]
    fn take(&mut self, room: usize, limit: u32) -> Vec<Update<Id>> {
        let mut v = Vec::new();
        self.take_into(&mut v, room, limit);
        v
    }
}

/// Piggyback priority when more updates wait than fit in a message: good
/// news (alive, refutations) and leaves first, then deaths, then
/// suspicions — a refutation cancels a suspicion everywhere it arrives, so
/// under congestion it must not starve behind new suspicions (measured:
/// putting deaths first spreads false deaths faster than their
/// refutations at 20% loss).
fn priority<Id>(u: &Update<Id>) -> u8 {
    match u {
        Update::Alive { .. } | Update::Left { .. } => 0,
        Update::Dead { .. } => 1,
        Update::Suspect { .. } => 2,
    }
}

/// The SWIM + Lifeguard detector core.
#[derive(Debug)]
pub struct Swim<Id: FdId> {
    me: Id,
    params: SwimParams,
    inc: u64,
    members: MemberTable<Id>,
    /// The members in state `Dead`, in id order (partition-healing pings).
    dead: BTreeSet<Id>,
    retired: BTreeSet<Id>,
    live: usize,
    probe_order: Vec<Id>,
    probe_idx: usize,
    probe: Option<Probe<Id>>,
    relays: BTreeMap<u64, (Id, u64)>,
    seq: u64,
    awareness: u32,
    queue: BroadcastQueue<Id>,
    seeds: Vec<Id>,
    corrections: Vec<Update<Id>>,
    joined: bool,
    left: bool,
    rng: ChaCha8Rng,
}

impl<Id: FdId> Swim<Id> {
    /// A SWIM node `me` that joins through `seeds` (may be empty when
    /// members are added with [`FailureDetector::add_member`]); `rng_seed`
    /// drives every random choice.
    pub fn new(me: Id, params: SwimParams, seeds: Vec<Id>, rng_seed: u64) -> Self {
        let seeds = seeds
            .into_iter()
            .filter(|s| *s != me && !s.same_node(&me))
            .collect();
        let fresh_below = params.gossip_transmits;
        Self {
            me,
            params,
            inc: 0,
            members: MemberTable::new(),
            dead: BTreeSet::new(),
            retired: BTreeSet::new(),
            live: 0,
            probe_order: Vec::new(),
            probe_idx: 0,
            probe: None,
            relays: BTreeMap::new(),
            seq: 0,
            awareness: 0,
            queue: BroadcastQueue::new(fresh_below),
            seeds,
            corrections: Vec::new(),
            joined: false,
            left: false,
            rng: ChaCha8Rng::seed_from_u64(rng_seed),
        }
    }

    /// This node's id.
    pub fn me(&self) -> &Id {
        &self.me
    }

    /// This node's SWIM incarnation number (bumped on each refutation).
    pub fn incarnation(&self) -> u64 {
        self.inc
    }

    /// Lifeguard local-health score (0 = healthy; timeouts scale by score+1).
    pub fn local_health(&self) -> u32 {
        self.awareness
    }

    /// Estimated cluster size: live members plus this node.
    pub fn cluster_size(&self) -> usize {
        self.live + 1
    }

    /// The SWIM incarnation number this node knows for `member`.
    pub fn incarnation_of(&self, member: &Id) -> Option<u64> {
        self.members.get(member).map(|m| m.inc)
    }

    /// Updates waiting to be piggybacked.
    pub fn pending_updates(&self) -> usize {
        self.queue.len()
    }

    /// Leave gracefully: disseminate `Left` to a few members directly and stop.
    pub fn leave(&mut self, _now: Duration, out: &mut FdOutputs<Id>) {
        if self.left {
            return;
        }
        let left = Update::Left {
            member: self.me.clone(),
            inc: self.inc,
        };
        self.enqueue(left.clone());
        let mut targets = self.sorted_ids(|m| m.state.live());
        targets.shuffle(&mut self.rng);
        targets.truncate(self.params.indirect_checks.max(3));
        for t in targets {
            self.seq += 1;
            let mut updates = vec![left.clone()];
            updates.extend(
                self.piggyback(&t)
                    .into_iter()
                    .filter(|u| *u != left)
                    .take(self.params.max_piggyback.saturating_sub(1)),
            );
            out.send(
                t,
                FdMessage::Swim(SwimMessage::Ping {
                    seq: self.seq,
                    updates,
                }),
            );
        }
        self.left = true;
    }

    fn scale(&self, d: Duration) -> Duration {
        d * (self.awareness + 1)
    }

    fn adjust_awareness(&mut self, delta: i32) {
        let max = self.params.awareness_max_multiplier.saturating_sub(1) as i64;
        self.awareness = (self.awareness as i64 + delta as i64).clamp(0, max) as u32;
    }

    fn retransmit_limit(&self) -> u32 {
        let n = self.cluster_size() as f64;
        self.params.retransmit_mult * ((n + 1.0).log10().ceil() as u32).max(1)
    }

    fn enqueue(&mut self, update: Update<Id>) {
        self.queue.push(update);
    }

    /// This node's suspicion or death verdict about `dest`, if any: it
    /// heads every message to `dest`, so that `dest` can refute.
    fn bad_news(&self, dest: &Id) -> Option<Update<Id>> {
        self.members.get(dest).and_then(|m| match m.state {
            State::Suspect => Some(Update::Suspect {
                member: dest.clone(),
                inc: m.inc,
                from: self.me.clone(),
            }),
            State::Dead => Some(Update::Dead {
                member: dest.clone(),
                inc: m.inc,
                from: self.me.clone(),
            }),
            _ => None,
        })
    }

    /// Updates for one message to `dest`: bad news about `dest` first, then
    /// the least-transmitted queued updates, at most `max_piggyback`.
    fn piggyback(&mut self, dest: &Id) -> Vec<Update<Id>> {
        let bad_news = self.bad_news(dest);
        if self.queue.is_empty() {
            return bad_news.into_iter().collect();
        }
        let mut v = Vec::with_capacity(self.params.max_piggyback.min(self.queue.len() + 1));
        v.extend(bad_news);
        let room = self.params.max_piggyback.saturating_sub(v.len());
        if room == 0 {
            return v;
        }
        let limit = self.retransmit_limit();
        self.queue.take_into(&mut v, room, limit);
        v
    }

    fn emit(&self, now: Duration, member: &Id, state: State, out: &mut FdOutputs<Id>) {
        out.emit(MemberEvent {
            member: member.clone(),
            status: state.status(),
            at: now,
        });
    }

    /// Change a known member's state, keeping the live count and reporting it.
    fn set_state(
        &mut self,
        now: Duration,
        id: &Id,
        state: State,
        inc: u64,
        out: &mut FdOutputs<Id>,
    ) {
        let Some((m, d)) = self.members.get_full_mut(id) else {
            return;
        };
        let old = m.state;
        m.state = state;
        m.inc = inc;
        if old != state {
            d.since = now;
            if state == State::Dead {
                self.dead.insert(id.clone());
            } else if old == State::Dead {
                self.dead.remove(id);
            }
        }
        if state != State::Suspect {
            d.suspicion = None;
        }
        if old.live() && !state.live() {
            self.live -= 1;
        } else if !old.live() && state.live() {
            self.live += 1;
        }
        if old != state {
            self.emit(now, id, state, out);
        }
    }

    /// A member not known yet: retire older incarnations of the same node
    /// and add it alive. False if it must be ignored.
    fn admit(&mut self, now: Duration, id: &Id, inc: u64, out: &mut FdOutputs<Id>) -> bool {
        if *id == self.me || id.same_node(&self.me) || self.retired.contains(id) {
            return false;
        }
        if self.members.contains_key(id) {
            return true;
        }
        // Scan the member entries (contiguous): this runs once per member
        // at start-up, O(N^2) in all for N members.
        let old: Vec<Id> = self
            .members
            .entries
            .iter()
            .filter(|(k, _)| k.same_node(id))
            .map(|(k, _)| k.clone())
            .collect();
        for o in old {
            self.dead.remove(&o);
            if let Some(m) = self.members.remove(&o) {
                if m.state.live() {
                    self.live -= 1;
                    self.emit(now, &o, State::Dead, out);
                }
            }
            self.queue.remove_member(&o);
            self.retired.insert(o);
        }
        self.members.insert(
            id.clone(),
            Member {
                inc,
                state: State::Alive,
            },
            MemberDetail {
                suspicion: None,
                since: now,
            },
        );
        self.live += 1;
        self.emit(now, id, State::Alive, out);
        // Probe it within the current round, at a random position.
        let lo = self.probe_idx.min(self.probe_order.len());
        let pos = self.rng.gen_range(lo..=self.probe_order.len());
        self.probe_order.insert(pos, id.clone());
        true
    }

    fn refute(&mut self, inc: u64) {
        self.inc = self.inc.max(inc) + 1;
        self.enqueue(Update::Alive {
            member: self.me.clone(),
            inc: self.inc,
        });
        self.adjust_awareness(1);
    }

    /// Bad news about this node: refute it if it is about the current
    /// incarnation; if it is stale (already refuted), re-announce the
    /// current `Alive` so that the holder of the stale news catches up
    /// (it rides on the reply to that very holder) without bumping the
    /// incarnation again.
    fn refute_if_current(&mut self, inc: u64) {
        if self.left {
            return;
        }
        if inc >= self.inc {
            self.refute(inc);
        } else {
            self.enqueue(Update::Alive {
                member: self.me.clone(),
                inc: self.inc,
            });
        }
    }

    fn new_suspicion(&self, now: Duration, from: Id) -> Suspicion<Id> {
        let n = self.cluster_size();
        let mult = self.params.suspicion_mult;
        let mut k = mult.saturating_sub(2);
        if (n as u32).saturating_sub(2) < k {
            k = 0;
        }
        let scale = (n as f64).log10().max(1.0);
        let min = self.params.probe_interval.mul_f64(mult as f64 * scale);
        let max = min * self.params.suspicion_max_timeout_mult;
        let mut confirmers = BTreeSet::new();
        confirmers.insert(from);
        Suspicion {
            start: now,
            min,
            max,
            k,
            confirmers,
            verified: false,
        }
    }

    /// Incoming news older than ours: remember what we know, to put it in
    /// the reply to the sender (targeted anti-entropy, so a member that
    /// missed a refutation or a death does not act on stale news).
    fn correct(&mut self, member: &Id, inc: u64, incoming_dead: bool) {
        if *member == self.me {
            if inc < self.inc {
                self.corrections.push(Update::Alive {
                    member: member.clone(),
                    inc: self.inc,
                });
            }
            return;
        }
        let Some(m) = self.members.get(member) else {
            return;
        };
        let (member, from) = (member.clone(), self.me.clone());
        let fix = match m.state {
            State::Alive if m.inc > inc => Update::Alive { member, inc: m.inc },
            // A death at the same incarnation is the same news, not stale
            // (answering it would make two holders bounce it forever).
            State::Dead if m.inc > inc || (m.inc == inc && !incoming_dead) => Update::Dead {
                member,
                inc: m.inc,
                from,
            },
            State::Left if m.inc >= inc => Update::Left { member, inc: m.inc },
            _ => return,
        };
        if self.corrections.len() < self.params.max_piggyback {
            self.corrections.push(fix);
        }
    }

    /// True if `update` is exactly what this node already knows and needs
    /// no correction: the common case under load (each update is received
    /// about `retransmit_limit` times), answered with one lookup.
    fn is_duplicate(&self, update: &Update<Id>) -> bool {
        let Some(p) = self.members.pos(update.member()) else {
            return false;
        };
        let m = &self.members.entries[p].1;
        match update {
            Update::Alive { inc, .. } => m.state.live() && *inc <= m.inc,
            Update::Suspect { inc, from, .. } => {
                m.state == State::Suspect
                    && *inc == m.inc
                    && self.members.details[p]
                        .suspicion
                        .as_ref()
                        .map_or(true, |s| {
                            s.confirmers.len() > s.k as usize || s.confirmers.contains(from)
                        })
            }
            Update::Dead { inc, .. } => m.state == State::Dead && *inc == m.inc,
            Update::Left { inc, .. } => m.state == State::Left && *inc <= m.inc,
        }
    }

    fn apply(&mut self, now: Duration, update: Update<Id>, out: &mut FdOutputs<Id>) {
        if self.is_duplicate(&update) {
            return;
        }
        match &update {
            Update::Alive { member, inc } => {
                if self
                    .members
                    .get(member)
                    .is_some_and(|m| matches!(m.state, State::Dead | State::Left))
                {
                    self.correct(member, *inc, false);
                }
            }
            Update::Suspect { member, inc, .. } => self.correct(member, *inc, false),
            Update::Dead { member, inc, .. } => self.correct(member, *inc, true),
            Update::Left { .. } => {}
        }
        match update {
            Update::Alive { member, inc } => {
                if member == self.me || member.same_node(&self.me) {
                    return;
                }
                if !self.members.contains_key(&member) {
                    if self.admit(now, &member, inc, out) {
                        self.enqueue(Update::Alive { member, inc });
                    }
                    return;
                }
                let Some(m) = self.members.get(&member) else {
                    return;
                };
                if inc > m.inc {
                    self.set_state(now, &member, State::Alive, inc, out);
                    self.enqueue(Update::Alive { member, inc });
                }
            }
            Update::Suspect { member, inc, from } => {
                if member == self.me {
                    self.refute_if_current(inc);
                    return;
                }
                let Some((m, detail)) = self.members.get_full_mut(&member) else {
                    return;
                };
                if inc < m.inc {
                    return;
                }
                match m.state {
                    State::Dead | State::Left => {}
                    State::Suspect => {
                        if inc > m.inc {
                            m.inc = inc;
                        }
                        // memberlist: confirmations beyond the k expected
                        // ones change nothing and are not re-broadcast.
                        let suspicion = &mut detail.suspicion;
                        let new = match suspicion {
                            Some(s) if s.confirmers.len() <= s.k as usize => {
                                s.confirmers.insert(from.clone())
                            }
                            _ => false,
                        };
                        if new {
                            let deadline = suspicion
                                .as_ref()
                                .map(|s| s.start + s.timeout())
                                .unwrap_or(now)
                                .saturating_sub(self.params.probe_timeout);
                            let inc = m.inc;
                            out.set_timer(
                                deadline.saturating_sub(now),
                                FdTimer::Swim(SwimTimer::Suspicion {
                                    member: member.clone(),
                                }),
                            );
                            self.enqueue(Update::Suspect { member, inc, from });
                        }
                    }
                    State::Alive => {
                        let s = self.new_suspicion(now, from.clone());
                        let after = s.timeout().saturating_sub(self.params.probe_timeout);
                        self.set_state(now, &member, State::Suspect, inc, out);
                        if let Some(d) = self.members.detail_mut(&member) {
                            d.suspicion = Some(Box::new(s));
                        }
                        out.set_timer(
                            after,
                            FdTimer::Swim(SwimTimer::Suspicion {
                                member: member.clone(),
                            }),
                        );
                        self.enqueue(Update::Suspect { member, inc, from });
                    }
                }
            }
            Update::Dead { member, inc, from } => {
                if member == self.me {
                    self.refute_if_current(inc);
                    return;
                }
                let Some(m) = self.members.get(&member) else {
                    return;
                };
                if inc < m.inc || !m.state.live() {
                    return;
                }
                self.set_state(now, &member, State::Dead, inc, out);
                self.enqueue(Update::Dead { member, inc, from });
            }
            Update::Left { member, inc } => {
                let Some(m) = self.members.get(&member) else {
                    return;
                };
                if inc < m.inc || m.state == State::Left {
                    return;
                }
                self.set_state(now, &member, State::Left, inc, out);
                self.enqueue(Update::Left { member, inc });
            }
        }
    }

    /// Look up `from` and the members of `updates` (reads only) before
    /// handling a message: the lookups are independent, so the CPU
    /// overlaps their cache misses (a node's tables are usually cold when
    /// its message arrives in a large simulation), and the handling then
    /// finds the entries in cache.
    fn touch(&self, from: &Id, updates: &[Update<Id>]) {
        let mut touched = self.members.get(from).map_or(0, |m| m.inc);
        for u in updates {
            if let Some(m) = self.members.get(u.member()) {
                touched = touched.wrapping_add(m.inc);
            }
        }
        std::hint::black_box(touched);
    }

    fn apply_all(&mut self, now: Duration, updates: Vec<Update<Id>>, out: &mut FdOutputs<Id>) {
        for u in updates {
            self.apply(now, u, out);
        }
    }

    fn send(&mut self, to: Id, msg: SwimMessage<Id>, out: &mut FdOutputs<Id>) {
        out.send(to, FdMessage::Swim(msg));
    }

    fn next_target(&mut self) -> Option<Id> {
        for _ in 0..2 {
            while self.probe_idx < self.probe_order.len() {
                let id = self.probe_order[self.probe_idx].clone();
                self.probe_idx += 1;
                if self.members.get(&id).is_some_and(|m| m.state.live()) {
                    return Some(id);
                }
            }
            // Round over: reshuffle the live members.
            self.probe_order = self.sorted_ids(|m| m.state.live());
            self.probe_order.shuffle(&mut self.rng);
            self.probe_idx = 0;
        }
        None
    }

    /// End of a protocol period: a probe without any ack suspects its target.
    fn conclude_probe(&mut self, now: Duration, out: &mut FdOutputs<Id>) {
        let Some(p) = self.probe.take() else {
            return;
        };
        if p.acked {
            return;
        }
        if p.heard && self.members.contains_key(&p.target) {
            // No ack, but the target did talk to us during this period:
            // it is alive, and the loss was on the probe's path.
            return;
        }
        let delta = if p.expected_nacks > 0 {
            p.expected_nacks.saturating_sub(p.nacks) as i32
        } else {
            1
        };
        self.adjust_awareness(delta);
        let Some(m) = self.members.get(&p.target) else {
            return;
        };
        if m.state.live() {
            let inc = m.inc;
            let from = self.me.clone();
            self.apply(
                now,
                Update::Suspect {
                    member: p.target,
                    inc,
                    from,
                },
                out,
            );
        }
    }

    fn probe_tick(&mut self, now: Duration, out: &mut FdOutputs<Id>) {
        self.conclude_probe(now, out);
        if let Some(target) = self.next_target() {
            self.seq += 1;
            let seq = self.seq;
            self.probe = Some(Probe {
                seq,
                start: now,
                target: target.clone(),
                acked: false,
                indirect: false,
                expected_nacks: 0,
                nacks: 0,
                heard: false,
            });
            let updates = self.piggyback(&target);
            self.send(target, SwimMessage::Ping { seq, updates }, out);
            out.set_timer(
                self.scale(self.params.probe_timeout),
                FdTimer::Swim(SwimTimer::ProbeTimeout { seq }),
            );
        }
        out.set_timer(
            self.scale(self.params.probe_interval),
            FdTimer::Swim(SwimTimer::Probe),
        );
    }

    fn probe_timeout(&mut self, seq: u64, out: &mut FdOutputs<Id>) {
        let target = match &self.probe {
            Some(p) if p.seq == seq && !p.acked && !p.indirect => p.target.clone(),
            _ => return,
        };
        let helpers = self.random_members(self.params.indirect_checks, |id, m, _| {
            m.state == State::Alive && *id != target
        });
        // A second direct ping alongside the indirect ones (memberlist sends
        // a TCP ping here): a lost ping or ack no longer needs all k
        // indirect paths to fail too before the target is suspected.
        let updates = self.piggyback(&target);
        self.send(target.clone(), SwimMessage::Ping { seq, updates }, out);
        for h in &helpers {
            let updates = self.piggyback(h);
            self.send(
                h.clone(),
                SwimMessage::PingReq {
                    seq,
                    target: target.clone(),
                    updates,
                },
                out,
            );
        }
        if let Some(p) = &mut self.probe {
            p.indirect = true;
            p.expected_nacks = helpers.len() as u32;
        }
    }

    /// Up to `k` distinct random members satisfying `ok`. Small clusters
    /// (at most 64 members) choose among all qualifying members; larger
    /// ones make at most 3 x (members) random picks, like memberlist's
    /// `kRandomNodes` (O(k) in the usual case instead of a pass over all
    /// members; it may return fewer than `k` when few members qualify).
    fn random_members(
        &mut self,
        k: usize,
        ok: impl Fn(&Id, &Member, &MemberDetail<Id>) -> bool,
    ) -> Vec<Id> {
        let t = &self.members;
        let n = t.len();
        if n <= 64 {
            let all: Vec<&Id> = t
                .entries
                .iter()
                .zip(&t.details)
                .filter(|((id, m), d)| ok(id, m, d))
                .map(|((id, _), _)| id)
                .collect();
            return all
                .choose_multiple(&mut self.rng, k)
                .map(|id| (*id).clone())
                .collect();
        }
        let mut picked: Vec<Id> = Vec::with_capacity(k);
        for _ in 0..3 * n {
            if picked.len() >= k {
                break;
            }
            let p = self.rng.gen_range(0..n);
            let (id, m) = &t.entries[p];
            if !picked.contains(id) && ok(id, m, &t.details[p]) {
                picked.push(id.clone());
            }
        }
        picked
    }

    /// One gossip round (memberlist's `gossip`): pending updates to
    /// `gossip_nodes` random members that are live or were declared `Down`
    /// less than `gossip_to_the_dead` ago, while a fresh update is pending
    /// (bounded gossip, see the module doc); a message to a suspected or
    /// dead target also goes out for the bad news it carries.
    fn gossip_round(&mut self, now: Duration, out: &mut FdOutputs<Id>) {
        if !self.queue.has_fresh() {
            return;
        }
        let window = self.params.gossip_to_the_dead;
        let targets = self.random_members(self.params.gossip_nodes, |_, m, d| {
            m.state.live() || (m.state == State::Dead && now.saturating_sub(d.since) < window)
        });
        for t in targets {
            if !self.queue.has_fresh() && self.bad_news(&t).is_none() {
                return;
            }
            let updates = self.piggyback(&t);
            self.send(t, SwimMessage::Gossip { updates }, out);
        }
    }

    /// Ids of the members satisfying `ok`, in id order (deterministic).
    fn sorted_ids(&self, ok: impl Fn(&Member) -> bool) -> Vec<Id> {
        let mut v: Vec<Id> = self
            .members
            .entries
            .iter()
            .filter(|(_, m)| ok(m))
            .map(|(id, _)| id.clone())
            .collect();
        v.sort_unstable();
        v
    }

    fn snapshot(&self) -> Vec<Update<Id>> {
        let mut v = vec![Update::Alive {
            member: self.me.clone(),
            inc: self.inc,
        }];
        for id in self.sorted_ids(|_| true) {
            let Some(m) = self.members.get(&id) else {
                continue;
            };
            let (member, inc, from) = (id, m.inc, self.me.clone());
            v.push(match m.state {
                State::Alive => Update::Alive { member, inc },
                State::Suspect => Update::Suspect { member, inc, from },
                State::Dead => Update::Dead { member, inc, from },
                State::Left => Update::Left { member, inc },
            });
        }
        v
    }

    fn send_joins(&mut self, out: &mut FdOutputs<Id>) {
        for s in self.seeds.clone() {
            self.send(s, SwimMessage::Join { inc: self.inc }, out);
        }
        out.set_timer(
            self.params.probe_interval * 2,
            FdTimer::Swim(SwimTimer::JoinRetry),
        );
    }
}

impl<Id: FdId> Protocol for Swim<Id> {
    type Id = Id;
    type Msg = FdMessage<Id>;
    type Timer = FdTimer<Id>;
    type Event = MemberEvent<Id>;

    fn on_start(&mut self, _now: Duration, out: &mut FdOutputs<Id>) {
        if !self.seeds.is_empty() && !self.joined {
            // Announce ourselves through gossip as well as to the seeds.
            self.enqueue(Update::Alive {
                member: self.me.clone(),
                inc: self.inc,
            });
            self.send_joins(out);
        }
        // Random phase so that nodes started together do not probe in lockstep.
        let interval_ms = self.params.probe_interval.as_millis().max(1) as u64;
        let phase = Duration::from_millis(self.rng.gen_range(0..interval_ms));
        out.set_timer(phase, FdTimer::Swim(SwimTimer::Probe));
        out.set_timer(
            self.params.reconnect_interval,
            FdTimer::Swim(SwimTimer::Reconnect),
        );
        if self.params.gossip_nodes > 0 && !self.params.gossip_interval.is_zero() {
            let gi = self.params.gossip_interval.as_millis().max(1) as u64;
            let phase = Duration::from_millis(self.rng.gen_range(0..gi));
            out.set_timer(phase, FdTimer::Swim(SwimTimer::Gossip));
        }
    }

    fn on_message(&mut self, now: Duration, from: Id, msg: FdMessage<Id>, out: &mut FdOutputs<Id>) {
        let FdMessage::Swim(msg) = msg else {
            return;
        };
        if self.left || from == self.me || self.retired.contains(&from) {
            return;
        }
        match &msg {
            SwimMessage::Ping { updates, .. } | SwimMessage::PingReq { updates, .. } => {
                // These are answered (an ack, a relayed ping) with updates
                // from the queue.
                self.queue.touch(self.params.max_piggyback);
                self.touch(&from, updates);
            }
            SwimMessage::Ack { updates, .. } | SwimMessage::Gossip { updates } => {
                self.touch(&from, updates)
            }
            _ => {}
        }
        self.corrections.clear();
        // Only the current probe's target needs "heard from" (deviation
        // (d)); a retired target's messages were dropped above.
        if let Some(p) = &mut self.probe {
            if p.target == from && now > p.start {
                p.heard = true;
            }
        }
        // A probe from a member we never heard of (a joiner whose Alive has
        // not reached us yet): it is evidently alive, learn it.
        if matches!(
            msg,
            SwimMessage::Ping { .. } | SwimMessage::Ack { .. } | SwimMessage::PingReq { .. }
        ) && !self.members.contains_key(&from)
            && self.admit(now, &from, 0, out)
        {
            self.enqueue(Update::Alive {
                member: from.clone(),
                inc: 0,
            });
        }
        match msg {
            SwimMessage::Ping { seq, updates } => {
                self.apply_all(now, updates, out);
                let mut updates = std::mem::take(&mut self.corrections);
                if updates.is_empty() {
                    updates = self.piggyback(&from);
                } else {
                    let room = self.params.max_piggyback.saturating_sub(updates.len());
                    updates.extend(self.piggyback(&from).into_iter().take(room));
                }
                self.send(from, SwimMessage::Ack { seq, updates }, out);
            }
            SwimMessage::Ack { seq, updates } => {
                self.apply_all(now, updates, out);
                let mut mine = false;
                if let Some(p) = &mut self.probe {
                    if p.seq == seq && !p.acked {
                        p.acked = true;
                        mine = true;
                        // Deviation (f): only a direct ack in time
                        // lowers the local-health score.
                        if !p.indirect {
                            self.adjust_awareness(-1);
                        }
                    }
                }
                if mine {
                    // Our probe succeeded; nothing to relay.
                } else if let Some((origin, origin_seq)) = self.relays.remove(&seq) {
                    let updates = self.piggyback(&origin);
                    self.send(
                        origin,
                        SwimMessage::Ack {
                            seq: origin_seq,
                            updates,
                        },
                        out,
                    );
                }
            }
            SwimMessage::PingReq {
                seq,
                target,
                updates,
            } => {
                self.apply_all(now, updates, out);
                if target == self.me {
                    let updates = self.piggyback(&from);
                    self.send(from, SwimMessage::Ack { seq, updates }, out);
                    return;
                }
                self.seq += 1;
                let relay = self.seq;
                self.relays.insert(relay, (from.clone(), seq));
                let updates = self.piggyback(&target);
                self.send(
                    target,
                    SwimMessage::Ping {
                        seq: relay,
                        updates,
                    },
                    out,
                );
                out.set_timer(
                    self.params.probe_timeout.mul_f64(0.8),
                    FdTimer::Swim(SwimTimer::RelayTimeout { seq: relay }),
                );
            }
            SwimMessage::Nack { seq } => {
                if let Some(p) = &mut self.probe {
                    if p.seq == seq {
                        p.nacks += 1;
                    }
                }
            }
            SwimMessage::Join { inc } => {
                self.apply(
                    now,
                    Update::Alive {
                        member: from.clone(),
                        inc,
                    },
                    out,
                );
                let members = self.snapshot();
                self.send(from, SwimMessage::JoinReply { members }, out);
            }
            SwimMessage::JoinReply { members } => {
                self.joined = true;
                self.apply_all(now, members, out);
            }
            SwimMessage::Gossip { updates } => {
                self.apply_all(now, updates, out);
                if !self.corrections.is_empty() {
                    let updates = std::mem::take(&mut self.corrections);
                    self.send(from, SwimMessage::Gossip { updates }, out);
                }
            }
        }
    }

    fn on_timer(&mut self, now: Duration, timer: FdTimer<Id>, out: &mut FdOutputs<Id>) {
        let FdTimer::Swim(timer) = timer else {
            return;
        };
        if self.left {
            return;
        }
        match timer {
            SwimTimer::Probe => self.probe_tick(now, out),
            SwimTimer::ProbeTimeout { seq } => self.probe_timeout(seq, out),
            SwimTimer::RelayTimeout { seq } => {
                if let Some((origin, origin_seq)) = self.relays.remove(&seq) {
                    self.send(origin, SwimMessage::Nack { seq: origin_seq }, out);
                }
            }
            SwimTimer::Suspicion { member } => {
                let Some(p) = self.members.pos(&member) else {
                    return;
                };
                let m = &self.members.entries[p].1;
                let Some(s) = (m.state == State::Suspect)
                    .then_some(self.members.details[p].suspicion.as_ref())
                    .flatten()
                else {
                    return;
                };
                let deadline = s.start + s.timeout();
                let verify_at = deadline.saturating_sub(self.params.probe_timeout);
                let verified = s.verified;
                if now >= deadline {
                    let inc = m.inc;
                    self.set_state(now, &member, State::Dead, inc, out);
                    let from = self.me.clone();
                    self.enqueue(Update::Dead { member, inc, from });
                } else if now >= verify_at && !verified {
                    // Last-chance ping, one probe timeout before the
                    // deadline: it carries the suspicion to the member,
                    // whose ack carries its refutation (or the refutation
                    // we missed) back.
                    if let Some(s) = self
                        .members
                        .detail_mut(&member)
                        .and_then(|d| d.suspicion.as_mut())
                    {
                        s.verified = true;
                    }
                    self.seq += 1;
                    let seq = self.seq;
                    let updates = self.piggyback(&member);
                    self.send(member.clone(), SwimMessage::Ping { seq, updates }, out);
                    out.set_timer(
                        deadline - now,
                        FdTimer::Swim(SwimTimer::Suspicion { member }),
                    );
                } else {
                    let at = if verified { deadline } else { verify_at };
                    out.set_timer(at - now, FdTimer::Swim(SwimTimer::Suspicion { member }));
                }
            }
            SwimTimer::Reconnect => {
                let dead: Vec<Id> = self.dead.iter().cloned().collect();
                if let Some(target) = dead.choose(&mut self.rng).cloned() {
                    self.seq += 1;
                    let seq = self.seq;
                    let updates = self.piggyback(&target);
                    self.send(target, SwimMessage::Ping { seq, updates }, out);
                }
                out.set_timer(
                    self.params.reconnect_interval,
                    FdTimer::Swim(SwimTimer::Reconnect),
                );
            }
            SwimTimer::JoinRetry => {
                if !self.joined {
                    self.send_joins(out);
                }
            }
            SwimTimer::Gossip => {
                self.gossip_round(now, out);
                out.set_timer(
                    self.params.gossip_interval,
                    FdTimer::Swim(SwimTimer::Gossip),
                );
            }
        }
    }
}

impl<Id: FdId> FailureDetector for Swim<Id> {
    fn kind(&self) -> &'static str {
        "swim"
    }

    fn view(&self) -> Vec<(Id, MemberStatus)> {
        self.sorted_ids(|_| true)
            .into_iter()
            .filter_map(|id| {
                let status = self.members.get(&id)?.state.status();
                Some((id, status))
            })
            .collect()
    }

    /// A configured peer: known alive at incarnation 0 without gossiping it
    /// (every node is expected to be configured with it too).
    fn add_member(&mut self, now: Duration, id: Id, out: &mut FdOutputs<Id>) {
        self.admit(now, &id, 0, out);
        self.joined = true;
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::fd::SimId;

    fn id(n: u32) -> SimId {
        SimId::new(n)
    }

    fn swim(n: u32, peers: u32) -> (Swim<SimId>, FdOutputs<SimId>) {
        let mut s = Swim::new(id(n), SwimParams::default(), vec![], 1);
        let mut out = FdOutputs::new();
        for p in 0..peers {
            if p != n {
                s.add_member(Duration::ZERO, id(p), &mut out);
            }
        }
        out.events.clear();
        (s, out)
    }

    #[test]
    fn suspicion_timeout_shrinks_with_confirmations() {
        let mut s = Suspicion {
            start: Duration::ZERO,
            min: Duration::from_secs(4),
            max: Duration::from_secs(24),
            k: 2,
            confirmers: BTreeSet::from([id(1)]),
            verified: false,
        };
        assert_eq!(s.timeout(), Duration::from_secs(24));
        s.confirmers.insert(id(2));
        // 24 - ln2/ln3 * 20 = 11.381...
        assert_eq!(s.timeout(), Duration::from_millis(11381));
        s.confirmers.insert(id(3));
        assert_eq!(s.timeout(), Duration::from_secs(4));
        s.confirmers.insert(id(4));
        assert_eq!(s.timeout(), Duration::from_secs(4));
        s.k = 0;
        assert_eq!(s.timeout(), Duration::from_secs(4));
    }

    /// Deviation (f): a probe acked only after the indirect phase began (a
    /// relayed ack, or the answer to the second direct ping) leaves the
    /// local-health score unchanged; a direct ack in time lowers it.
    #[test]
    fn only_a_direct_ack_in_time_lowers_local_health() {
        let (mut s, mut out) = swim(0, 5);
        let t = Duration::from_secs(1);
        // Two refutations raise the score to 2.
        for inc in 0..2 {
            s.on_message(
                t,
                id(1),
                FdMessage::Swim(SwimMessage::Gossip {
                    updates: vec![Update::Suspect {
                        member: id(0),
                        inc,
                        from: id(1),
                    }],
                }),
                &mut out,
            );
        }
        assert_eq!(s.local_health(), 2);
        out.sends.clear();
        s.on_timer(t, FdTimer::Swim(SwimTimer::Probe), &mut out);
        let (target, seq) = match &out.sends[..] {
            [(to, FdMessage::Swim(SwimMessage::Ping { seq, .. }))] => (*to, *seq),
            other => panic!("expected one ping: {other:?}"),
        };
        // No direct ack in time: indirect probes go out.
        s.on_timer(
            t + Duration::from_millis(1500),
            FdTimer::Swim(SwimTimer::ProbeTimeout { seq }),
            &mut out,
        );
        assert!(out
            .sends
            .iter()
            .any(|(_, m)| matches!(m, FdMessage::Swim(SwimMessage::PingReq { .. }))));
        // A helper relays the target's ack.
        let helper = out
            .sends
            .iter()
            .find_map(|(to, m)| {
                matches!(m, FdMessage::Swim(SwimMessage::PingReq { .. })).then_some(*to)
            })
            .expect("a helper");
        assert_ne!(helper, target);
        s.on_message(
            t + Duration::from_millis(1600),
            helper,
            FdMessage::Swim(SwimMessage::Ack {
                seq,
                updates: vec![],
            }),
            &mut out,
        );
        assert_eq!(s.local_health(), 2);
        // The next probe is acked directly, in time.
        let t2 = t + Duration::from_secs(3);
        out.sends.clear();
        s.on_timer(t2, FdTimer::Swim(SwimTimer::Probe), &mut out);
        let (target, seq) = match &out.sends[..] {
            [(to, FdMessage::Swim(SwimMessage::Ping { seq, .. }))] => (*to, *seq),
            other => panic!("expected one ping: {other:?}"),
        };
        s.on_message(
            t2 + Duration::from_millis(5),
            target,
            FdMessage::Swim(SwimMessage::Ack {
                seq,
                updates: vec![],
            }),
            &mut out,
        );
        assert_eq!(s.local_health(), 1);
    }

    #[test]
    fn refutes_suspicion_of_itself() {
        let (mut s, mut out) = swim(0, 5);
        s.on_message(
            Duration::from_secs(1),
            id(1),
            FdMessage::Swim(SwimMessage::Ping {
                seq: 1,
                updates: vec![Update::Suspect {
                    member: id(0),
                    inc: 0,
                    from: id(1),
                }],
            }),
            &mut out,
        );
        assert_eq!(s.incarnation(), 1);
        assert_eq!(s.local_health(), 1);
        let (_, FdMessage::Swim(SwimMessage::Ack { updates, .. })) = &out.sends[0] else {
            panic!("expected an ack: {:?}", out.sends)
        };
        assert!(updates.contains(&Update::Alive {
            member: id(0),
            inc: 1
        }));
    }

    #[test]
    fn retransmit_limit_and_piggyback_bound() {
        let (mut s, _) = swim(0, 100);
        assert_eq!(s.cluster_size(), 100);
        assert_eq!(s.retransmit_limit(), 4 * 3);
        for n in 200..240 {
            s.enqueue(Update::Alive {
                member: id(n),
                inc: 0,
            });
        }
        let p = s.piggyback(&id(1));
        assert_eq!(p.len(), 16);
        // The newest among the never-sent ones.
        let mut got: Vec<u32> = p.iter().map(|u| u.member().node).collect();
        got.sort_unstable();
        assert_eq!(got, (224..240).collect::<Vec<u32>>());
        // Next message: the 24 never-sent ones come before re-sends.
        let p2 = s.piggyback(&id(1));
        assert!(p2.iter().all(|u| u.member().node < 224));
    }

    #[test]
    fn member_table_finds_every_member_and_keeps_admission_order() {
        let mut t: MemberTable<SimId> = MemberTable::new();
        let detail = || MemberDetail {
            suspicion: None,
            since: Duration::ZERO,
        };
        let ids: Vec<SimId> = (0..300).map(|n| id(n * 7 + 3)).collect();
        for (i, m) in ids.iter().enumerate() {
            let member = Member {
                inc: i as u64,
                state: State::Alive,
            };
            t.insert(*m, member, detail());
        }
        assert!(t.index.len() >= 2 * t.len());
        for (i, m) in ids.iter().enumerate() {
            assert_eq!(t.get(m).map(|e| e.inc), Some(i as u64));
        }
        assert!(t.get(&id(1)).is_none());
        // Remove every third member: the others keep their order and entry.
        for m in ids.iter().step_by(3) {
            assert!(t.remove(m).is_some());
            assert!(t.remove(m).is_none());
        }
        let kept: Vec<SimId> = ids.iter().skip(1).step_by(3).copied().collect();
        let order: Vec<SimId> = t.entries.iter().map(|(k, _)| *k).collect();
        let want: Vec<SimId> = ids
            .iter()
            .enumerate()
            .filter(|(i, _)| i % 3 != 0)
            .map(|(_, k)| *k)
            .collect();
        assert_eq!(order, want);
        for m in &kept {
            let i = ids.iter().position(|x| x == m).map(|i| i as u64);
            assert_eq!(t.get(m).map(|e| e.inc), i);
        }
        for m in ids.iter().step_by(3) {
            assert!(!t.contains_key(m));
        }
        assert_eq!(t.details.len(), t.entries.len());
    }

    /// The bucketed queue against a direct model of memberlist's order
    /// (class, transmissions, newest first), with replacements, removals,
    /// drops at the limit and compactions on the way.
    #[test]
    fn broadcast_queue_matches_a_sorted_model() {
        const FRESH: u32 = 3;
        let mut q: BroadcastQueue<SimId> = BroadcastQueue::new(FRESH);
        // Model: (class, transmits, push order, update).
        let mut model: Vec<(u8, u32, u64, Update<SimId>)> = Vec::new();
        let mut rng = ChaCha8Rng::seed_from_u64(5);
        let mut order = 0u64;
        let mut compactions = 0;
        for step in 0..4000 {
            let member = id(rng.gen_range(0..40));
            match rng.gen_range(0..10) {
                0..=4 => {
                    let inc = step;
                    let u = match rng.gen_range(0..3) {
                        0 => Update::Alive { member, inc },
                        1 => Update::Dead {
                            member,
                            inc,
                            from: id(99),
                        },
                        _ => Update::Suspect {
                            member,
                            inc,
                            from: id(99),
                        },
                    };
                    let before = q.slots.len();
                    q.push(u.clone());
                    if q.slots.len() <= before {
                        compactions += 1;
                    }
                    model.retain(|e| *e.3.member() != member);
                    order += 1;
                    model.push((priority(&u), 0, order, u));
                }
                5 => {
                    q.remove_member(&member);
                    model.retain(|e| *e.3.member() != member);
                }
                _ => {
                    let room = rng.gen_range(1..8);
                    let limit = rng.gen_range(2..6);
                    let got = q.take(room, limit);
                    model.sort_by_key(|e| (e.0, e.1, std::cmp::Reverse(e.2)));
                    let mut want = Vec::new();
                    let mut keep = Vec::new();
                    for mut e in std::mem::take(&mut model) {
                        if want.len() == room {
                            keep.push(e);
                        } else if e.1 < limit {
                            want.push(e.3.clone());
                            e.1 += 1;
                            if e.1 < limit {
                                keep.push(e);
                            }
                        }
                    }
                    model = keep;
                    assert_eq!(got, want, "step {step}");
                }
            }
            assert_eq!(q.len(), model.len(), "step {step}");
            let fresh = model.iter().filter(|e| e.0 == 0 || e.1 < FRESH).count();
            assert_eq!(q.fresh, fresh, "fresh updates, step {step}");
            assert_eq!(q.has_fresh(), fresh > 0, "step {step}");
        }
        assert!(compactions > 10, "compactions: {compactions}");
    }

    #[test]
    fn stale_news_is_corrected_in_the_ack() {
        let (mut s, mut out) = swim(0, 5);
        let t = Duration::from_secs(1);
        s.apply(
            t,
            Update::Alive {
                member: id(2),
                inc: 3,
            },
            &mut out,
        );
        out.sends.clear();
        s.on_message(
            t,
            id(1),
            FdMessage::Swim(SwimMessage::Ping {
                seq: 9,
                updates: vec![Update::Suspect {
                    member: id(2),
                    inc: 1,
                    from: id(1),
                }],
            }),
            &mut out,
        );
        let (to, FdMessage::Swim(SwimMessage::Ack { seq: 9, updates })) = &out.sends[0] else {
            panic!("expected an ack: {:?}", out.sends)
        };
        assert_eq!(*to, id(1));
        assert_eq!(
            updates[0],
            Update::Alive {
                member: id(2),
                inc: 3
            }
        );
        assert_eq!(s.view()[1], (id(2), MemberStatus::Up));
    }

    #[test]
    fn suspicion_is_verified_by_a_last_ping_before_the_deadline() {
        let (mut s, mut out) = swim(0, 3);
        let t = Duration::from_secs(1);
        s.apply(
            t,
            Update::Suspect {
                member: id(2),
                inc: 0,
                from: id(1),
            },
            &mut out,
        );
        // N = 3: no confirmations expected, timeout = min = 4 s.
        let (after, timer) = out.timers.last().cloned().expect("timer");
        assert_eq!(after, Duration::from_millis(3500));
        out.sends.clear();
        s.on_timer(t + after, timer, &mut out);
        assert!(matches!(
            &out.sends[..],
            [(to, FdMessage::Swim(SwimMessage::Ping { .. }))] if *to == id(2)
        ));
        let (after, timer) = out.timers.last().cloned().expect("timer");
        assert_eq!(after, Duration::from_millis(500));
        s.on_timer(t + Duration::from_secs(4), timer, &mut out);
        assert_eq!(s.view()[1], (id(2), MemberStatus::Down));
    }

    #[test]
    fn gossip_round_sends_pending_updates_to_distinct_members_or_nothing() {
        let (mut s, mut out) = swim(0, 10);
        let t = Duration::from_secs(1);
        // Nothing pending: no gossip message, but the next round is armed.
        s.on_timer(t, FdTimer::Swim(SwimTimer::Gossip), &mut out);
        assert!(out.sends.is_empty(), "{:?}", out.sends);
        assert_eq!(
            out.timers,
            vec![(Duration::from_millis(200), FdTimer::Swim(SwimTimer::Gossip))]
        );
        let news = Update::Alive {
            member: id(42),
            inc: 7,
        };
        s.enqueue(news.clone());
        out.sends.clear();
        s.on_timer(t, FdTimer::Swim(SwimTimer::Gossip), &mut out);
        let mut to: Vec<SimId> = out.sends.iter().map(|(to, _)| *to).collect();
        to.sort_unstable();
        to.dedup();
        assert_eq!(to.len(), 3, "{:?}", out.sends);
        for (_, m) in &out.sends {
            let FdMessage::Swim(SwimMessage::Gossip { updates }) = m else {
                panic!("expected gossip: {m:?}")
            };
            assert_eq!(updates, &vec![news.clone()]);
        }
    }

    /// Gossip-only messages carry a death (or suspicion) only for its first
    /// `gossip_transmits` sends; its other sends (up to the retransmit
    /// limit) ride on probe traffic only. A refutation (alive) is gossiped
    /// for all its sends.
    #[test]
    fn gossip_stops_after_gossip_transmits_and_piggyback_finishes_the_job() {
        let params = SwimParams {
            gossip_transmits: 4,
            ..SwimParams::default()
        };
        let mut s = Swim::new(id(0), params, vec![], 1);
        let mut out = FdOutputs::new();
        for p in 1..10 {
            s.add_member(Duration::ZERO, id(p), &mut out);
        }
        // N = 10: each update is sent 4 * ceil(log10(11)) = 8 times.
        assert_eq!(s.retransmit_limit(), 8);
        let news = Update::Dead {
            member: id(42),
            inc: 7,
            from: id(3),
        };
        s.enqueue(news.clone());
        let t = Duration::from_secs(1);
        let mut gossip_counts = Vec::new();
        for _ in 0..4 {
            out.sends.clear();
            s.on_timer(t, FdTimer::Swim(SwimTimer::Gossip), &mut out);
            for (_, m) in &out.sends {
                assert!(
                    matches!(m, FdMessage::Swim(SwimMessage::Gossip { updates }) if *updates == vec![news.clone()]),
                    "{m:?}"
                );
            }
            gossip_counts.push(out.sends.len());
        }
        // 3 messages, then the 4th send, then nothing: 4 gossip sends.
        assert_eq!(gossip_counts, vec![3, 1, 0, 0]);
        assert_eq!(s.pending_updates(), 1);
        // The 4 remaining sends ride on pings (probe periods).
        let mut piggybacked = 0;
        for period in 0..6u64 {
            out.sends.clear();
            s.on_timer(
                t + Duration::from_secs(period),
                FdTimer::Swim(SwimTimer::Probe),
                &mut out,
            );
            let pings: Vec<(SimId, u64, usize)> = out
                .sends
                .iter()
                .filter_map(|(to, m)| match m {
                    FdMessage::Swim(SwimMessage::Ping { seq, updates }) => {
                        Some((*to, *seq, updates.iter().filter(|u| **u == news).count()))
                    }
                    _ => None,
                })
                .collect();
            assert_eq!(pings.len(), 1, "{:?}", out.sends);
            for (to, seq, n) in pings {
                piggybacked += n;
                // The target answers: no suspicion, nothing else queued.
                let ack = SwimMessage::Ack {
                    seq,
                    updates: vec![],
                };
                s.on_message(t, to, FdMessage::Swim(ack), &mut out);
            }
        }
        assert_eq!(piggybacked, 4);
        assert_eq!(s.pending_updates(), 0);
        // A refutation goes out in gossip messages for all its 8 sends.
        s.enqueue(Update::Alive {
            member: id(43),
            inc: 1,
        });
        let mut gossip_counts = Vec::new();
        for _ in 0..4 {
            out.sends.clear();
            s.on_timer(t, FdTimer::Swim(SwimTimer::Gossip), &mut out);
            gossip_counts.push(out.sends.len());
        }
        assert_eq!(gossip_counts, vec![3, 3, 2, 0]);
        assert_eq!(s.pending_updates(), 0);
    }

    #[test]
    fn no_gossip_timer_when_gossip_nodes_is_zero() {
        let params = SwimParams {
            gossip_nodes: 0,
            ..SwimParams::default()
        };
        let mut s = Swim::new(id(0), params, vec![], 1);
        let mut out = FdOutputs::new();
        s.on_start(Duration::ZERO, &mut out);
        assert!(!out
            .timers
            .iter()
            .any(|(_, t)| *t == FdTimer::Swim(SwimTimer::Gossip)));
        let mut s = Swim::new(id(0), SwimParams::default(), vec![], 1);
        s.on_start(Duration::ZERO, &mut out);
        assert!(out
            .timers
            .iter()
            .any(|(_, t)| *t == FdTimer::Swim(SwimTimer::Gossip)));
    }

    #[test]
    fn alive_with_higher_incarnation_clears_suspicion() {
        let (mut s, mut out) = swim(0, 5);
        let t = Duration::from_secs(1);
        s.apply(
            t,
            Update::Suspect {
                member: id(2),
                inc: 0,
                from: id(1),
            },
            &mut out,
        );
        s.apply(
            t,
            Update::Alive {
                member: id(2),
                inc: 0,
            },
            &mut out,
        );
        s.apply(
            t,
            Update::Alive {
                member: id(2),
                inc: 1,
            },
            &mut out,
        );
        let st: Vec<_> = out.events.iter().map(|e| e.status).collect();
        assert_eq!(st, vec![MemberStatus::Suspect, MemberStatus::Up]);
    }
}
