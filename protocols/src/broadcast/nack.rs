//! NACK-based reliable multicast (receiver-initiated recovery, in the
//! style of SRM and PGM), with FIFO delivery per sender.
//!
//! **First transmission.** The origin numbers its message (its durable
//! sequence number), delivers it, keeps it in its history buffer and sends
//! it once to every other member: `N-1` messages, no acknowledgements.
//! Like every message of this core it goes to the whole group (the model
//! is a group multicast, blind to the failure detector; a copy to a member
//! that is down is simply lost).
//!
//! **Gap detection.** A member delivers an origin's messages in sequence
//! order and holds back what arrives early. It learns that a message exists
//! from the message itself, from a later message of the same origin (a
//! gap), from another member's NACK, and from the *session* messages every
//! member multicasts while its history buffer is not empty: per origin, the
//! prefix it delivered and the highest sequence number it holds. Sessions
//! are what detects **tail loss** (the last message of a burst lost: no
//! later message reveals the gap).
//!
//! **NACKs with feedback suppression.** A member missing messages of an
//! origin waits a random delay (uniform in `[retry/5, retry]`, times `2^k`
//! after `k` rounds, `k <= 3`), then multicasts a NACK naming the missing
//! sequence numbers to the group, and waits again in case the repair is
//! lost. A member that hears another member's NACK covering everything it
//! misses of that origin backs off (a new random delay, one more doubling)
//! instead of sending its own: one NACK usually serves every member that
//! lost the same message.
//!
//! **Repair by any holder.** Every member that holds a NACKed message may
//! retransmit it: the origin at once, any other holder after a random delay
//! in `[retry/5, retry]`, cancelled when it hears someone else's repair.
//! Repairs are multicast (they serve every member missing the message);
//! NACKs for a message repaired in the last `retry/2` are ignored. So a
//! message still reaches everyone once any member holds it, even when its
//! origin crashed for good right after sending it to a single member.
//!
//! **Stability and garbage collection.** A message is dropped from a
//! member's history buffer once it is delivered there and every other
//! member of the group (live or not: a crashed member is the same member
//! when it restarts and may need it) reported, in a session, a delivered
//! prefix that covers it. A member whose buffer is empty stops sending
//! sessions; it answers a session that names it among the members its
//! sender waits for with a session of its own (so that the last reports
//! lost are made up). Costs without loss: `N-1` data messages per
//! broadcast, plus `N-1` session messages per member per session period
//! (`2 * retry`) while something is unstable, whatever the message rate;
//! see `protocols/tests/broadcast_costs.rs`.
//!
//! **Flow control.** With [`super::BroadcastConfig::window`] set (the
//! default), this member's messages that some live member has not yet
//! reported delivered are counted in flight
//! ([`super::BroadcastStats::in_flight`]; the typed API's `broadcast`
//! waits while the window is full), and a member that delivered a quarter
//! of the window (at least 16) of other members' messages since its last
//! session multicasts one at once, so a busy sender learns of its
//! messages' arrival long before its window is used up. Under load that
//! adds `N-1` session messages per `window/4` deliveries at each member;
//! without load (fewer deliveries between two session timers) nothing.
//!
//! **Randomness.** The delays come from a ChaCha8 generator seeded at
//! [`Protocol::on_start`] from the member's id (its `Debug` form), the
//! start time and an optional seed ([`Nack::with_rng_seed`], which
//! simulations set to their own): the core is a deterministic function of
//! its inputs, and a restarted member does not replay its previous life's
//! delays.
//!
//! **Durable state, crash-recovery.** As [`super::reliable`]: the sequence
//! number, the delivered prefixes and the history buffer are durable
//! ([`super::BroadcastDurable`], written before the messages and events that
//! depend on them leave). A restarted member is the same member: it numbers
//! on where it stopped, never delivers twice, still holds (and can repair)
//! every message it held, and multicasts a session at once. What it knew
//! of the others (their prefixes, pending NACKs and repairs) is soft state,
//! rebuilt from the next sessions.
//!
//! ## Guarantees
//! Under loss, duplication, reordering, partitions that heal and
//! crash-recovery (with the durable state above):
//! * **integrity**: a member delivers a message at most once (across its
//!   restarts) and only if its origin broadcast it;
//! * **validity**: a message broadcast by a member that does not crash for
//!   good is delivered by every member once failures heal;
//! * **uniform agreement**: a message delivered by any member is delivered
//!   by every member that is up once failures heal, even when its origin
//!   crashed for good (the member that delivered it holds it until it is
//!   stable, and repairs it). Members that crash for good are not waited
//!   for, but keep every later message in the others' buffers (nothing is
//!   stable without them).
//! * **FIFO order**: one origin's messages are delivered everywhere in the
//!   order it broadcast them (across its restarts). No order across
//!   origins. The price, as for any FIFO broadcast: when an origin crashes
//!   for good and one of its messages reached no other member, its later
//!   messages that did are held back for good (no member delivers them but
//!   the dead origin, so agreement holds).
//!
//! ## Failure detector
//! Membership reports only speed recovery up. Messages go to every
//! member whatever the reports say; when a member is reported up again, or
//! a session arrives from a member still reported down (a healed partition
//! not reported yet), every member sends it at once what it holds and that
//! member is not known to have delivered (as eager broadcast's catch-up
//! does: the holders may not live long enough to answer its NACKs), and
//! the member NACKs anything still missing. No guarantee depends on the
//! reports' accuracy: messages never stop going to a suspect, so a false
//! suspicion costs at most one such catch-up when it ends, and stability
//! never counts a member out.

use std::collections::{BTreeMap, BTreeSet};
use std::time::Duration;

use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use serde::{Deserialize, Serialize};
use troupe_framework::membership::MemberEvent;
use troupe_framework::sansio::Protocol;

use super::{
    BroadcastConfig, BroadcastCore, BroadcastEvent, BroadcastStats, Engine, Ledger, MsgId, Opened,
    Stamps, Stored,
};
use crate::driver::OutputsOf;
use crate::family::protocol_types;
use crate::group::{Change, Group};
use crate::MemberId;

/// Most sequence numbers one NACK names (the rest wait for the next one).
const NACK_MAX: usize = 64;
/// Most doublings of the NACK delay.
const MAX_BACKOFF: u32 = 3;

/// The wire messages of NACK-based multicast.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum NackMsg<Id> {
    /// A message's first transmission, from its origin; or a catch-up, by
    /// any holder, to a member that was unreachable.
    Data {
        /// Its identity.
        id: MsgId<Id>,
        /// What was broadcast.
        #[serde(with = "serde_bytes")]
        payload: Vec<u8>,
    },
    /// A retransmission, by any member that holds the message, multicast.
    Repair {
        /// Its identity.
        id: MsgId<Id>,
        /// What was broadcast.
        #[serde(with = "serde_bytes")]
        payload: Vec<u8>,
    },
    /// "I miss these messages of `origin`", multicast to the group.
    Nack {
        /// Whose messages.
        origin: Id,
        /// Their sequence numbers (at most 64).
        missing: Vec<u64>,
    },
    /// What the sender delivered and holds, multicast periodically while
    /// its history buffer is not empty, at a restart, and sent alone in
    /// answer to a session that waits for its receiver or to a member
    /// reported up again.
    Session {
        /// Per origin: the sender's delivered prefix and the highest
        /// sequence number it knows to exist.
        have: Vec<(Id, u64, u64)>,
        /// The members whose delivered prefix the sender still needs to
        /// learn before it can collect its buffer.
        waiting: Vec<Id>,
    },
}

/// The timers of NACK-based multicast. Origins are named by their rank in
/// the group (its sorted members).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum NackTimer {
    /// Multicast a session.
    Session,
    /// NACK what is missing of the origin of this rank, unless suppressed.
    Gap(usize),
    /// Repair message `(origin rank, seq)`, unless someone did.
    Repair(usize, u64),
}

/// Counters of the NACK machinery (this life only).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct NackStats {
    /// NACKs multicast (each is `N-1` messages).
    pub nacks: u64,
    /// NACKs not sent because another member's NACK covered them.
    pub suppressed: u64,
    /// Repairs multicast.
    pub repairs: u64,
    /// Scheduled repairs cancelled because another member repaired first.
    pub repairs_cancelled: u64,
    /// Sessions sent (a multicast or an answer counts once).
    pub sessions: u64,
}

/// The delays, derived from [`BroadcastConfig::retry`].
#[derive(Debug, Clone, Copy)]
struct Timing {
    session: Duration,
    wait_min: Duration,
    wait_max: Duration,
    hold: Duration,
}

impl Timing {
    fn new(config: &BroadcastConfig) -> Self {
        let r = config.retry.max(Duration::from_millis(1));
        Self {
            session: r * 2,
            wait_min: r / 5,
            wait_max: r,
            hold: r / 2,
        }
    }
}

/// A FNV-1a hash of `bytes` (a stable seed from a member's name).
fn fnv(bytes: &[u8]) -> u64 {
    bytes.iter().fold(0xcbf2_9ce4_8422_2325, |h, b| {
        (h ^ u64::from(*b)).wrapping_mul(0x0100_0000_01b3)
    })
}

/// NACK-based reliable FIFO multicast (see the module docs).
#[derive(Debug, Clone)]
pub struct Nack<Id> {
    group: Group<Id>,
    timing: Timing,
    ledger: Ledger<Id>,
    buffer: BTreeMap<MsgId<Id>, Stored>,
    /// Per origin, the highest sequence number known to exist.
    highest: BTreeMap<Id, u64>,
    /// Per member, per origin: the delivered prefix it reported.
    known: BTreeMap<Id, BTreeMap<Id, u64>>,
    /// Per origin with a NACK timer armed: its backoff level.
    gaps: BTreeMap<Id, u32>,
    /// Repairs scheduled (timer armed).
    repairing: BTreeSet<MsgId<Id>>,
    /// When a message was last repaired (by anyone, as far as we heard).
    repaired_at: BTreeMap<MsgId<Id>, Duration>,
    session_armed: bool,
    /// True for a core rebuilt from durable state.
    resumed: bool,
    /// Mixed into the seed of `rng` (see [`Nack::with_rng_seed`]).
    rng_seed: u64,
    /// Boxed: the generator's buffer would make this core much larger
    /// than the others in [`super::AnyBroadcast`].
    rng: Box<ChaCha8Rng>,
    stats: BroadcastStats,
    nack_stats: NackStats,
    /// Deliveries of other origins since this member's last session.
    unreported: usize,
    /// [`BroadcastConfig::window`]: the flow control's window.
    window: usize,
}

impl<Id: MemberId> Engine<Id> for Nack<Id> {
    fn open(opened: Opened<Id>) -> Self {
        let Opened {
            group,
            ledger,
            buffer,
            config,
            resumed,
            ..
        } = opened;
        let buffer: BTreeMap<MsgId<Id>, Stored> = buffer.into_iter().collect();
        let mut highest: BTreeMap<Id, u64> = ledger
            .delivered()
            .iter()
            .map(|(o, s)| (o.clone(), s.prefix()))
            .collect();
        for id in buffer.keys() {
            let h = highest.entry(id.origin.clone()).or_default();
            *h = (*h).max(id.seq);
        }
        Self {
            window: config.window,
            unreported: 0,
            group,
            timing: Timing::new(&config),
            ledger,
            buffer,
            highest,
            known: BTreeMap::new(),
            gaps: BTreeMap::new(),
            repairing: BTreeSet::new(),
            repaired_at: BTreeMap::new(),
            session_armed: false,
            resumed,
            rng_seed: 0,
            rng: Box::new(ChaCha8Rng::seed_from_u64(0)),
            stats: BroadcastStats::default(),
            nack_stats: NackStats::default(),
        }
    }
}

impl<Id: MemberId> Nack<Id> {
    /// The same core with `seed` mixed into the seed of its delay
    /// generator (default 0): simulations pass their own seed so that the
    /// delays differ from run to run; deployments need not (members already
    /// differ by id, and lives by start time).
    pub fn with_rng_seed(mut self, seed: u64) -> Self {
        self.rng_seed = seed;
        self
    }

    /// The seed of the delay generator at a start at `now`.
    fn seed_at(&self, now: Duration) -> u64 {
        let me = fnv(format!("{:?}", self.group.me()).as_bytes());
        me ^ (now.as_nanos() as u64).rotate_left(17)
            ^ self.rng_seed.wrapping_mul(0x9e37_79b9_7f4a_7c15)
    }

    /// Counters of the NACK machinery.
    pub fn nack_stats(&self) -> NackStats {
        self.nack_stats
    }

    fn prefix(&self, origin: &Id) -> u64 {
        self.ledger.prefix(origin)
    }

    fn is_delivered(&self, id: &MsgId<Id>) -> bool {
        self.ledger.is_delivered(id)
    }

    /// A random delay in `[lo, hi]`.
    fn jitter(&mut self, lo: Duration, hi: Duration) -> Duration {
        let (lo, hi) = (lo.as_nanos() as u64, hi.as_nanos() as u64);
        Duration::from_nanos(if hi <= lo {
            lo
        } else {
            self.rng.gen_range(lo..=hi)
        })
    }

    fn learn_highest(&mut self, origin: &Id, seq: u64) {
        let h = self.highest.entry(origin.clone()).or_default();
        *h = (*h).max(seq);
    }

    /// The sequence numbers of `origin` known to exist, neither delivered
    /// nor held here.
    fn missing(&self, origin: &Id) -> Vec<u64> {
        let high = self.highest.get(origin).copied().unwrap_or(0);
        (self.prefix(origin) + 1..=high)
            .filter(|s| {
                !self.buffer.contains_key(&MsgId {
                    origin: origin.clone(),
                    seq: *s,
                })
            })
            .take(NACK_MAX)
            .collect()
    }

    fn multicast(&self, msg: NackMsg<Id>, out: &mut OutputsOf<Self>) {
        for p in self.group.members() {
            if p != self.group.me() {
                out.send(p.clone(), msg.clone());
            }
        }
    }

    /// Deliver every held message that is next in its origin's sequence
    /// (`fresh`: the message that just arrived, not held back if it goes
    /// at once).
    fn deliver_ready(&mut self, fresh: Option<&MsgId<Id>>, out: &mut OutputsOf<Self>) {
        let origins: Vec<Id> = self.group.members().to_vec();
        for o in origins {
            loop {
                let id = MsgId {
                    origin: o.clone(),
                    seq: self.prefix(&o) + 1,
                };
                let Some(stored) = self.buffer.get(&id) else {
                    break;
                };
                let held_back = fresh != Some(&id);
                self.ledger.deliver(&id, stored, held_back, false, out);
                self.stats.delivered += 1;
                if o != *self.group.me() {
                    self.unreported += 1;
                }
            }
        }
        if self.window > 0 && self.unreported >= self.early_report() {
            self.send_session(out);
        }
    }

    /// Deliveries since the last session after which a member reports at
    /// once instead of at the next session timer: a quarter of the flow
    /// control's window (at least 16), so that a sender waiting for its
    /// window hears of its messages' arrival long before the window is
    /// used up. Without a window, never.
    fn early_report(&self) -> usize {
        (self.window / 4).max(16)
    }

    /// Multicast a session now.
    fn send_session(&mut self, out: &mut OutputsOf<Self>) {
        self.nack_stats.sessions += 1;
        self.unreported = 0;
        self.multicast(self.session(), out);
    }

    /// This member's buffered messages that some live member has not
    /// reported delivered (its sessions' prefixes): what the flow
    /// control's window bounds. Counted from the buffer, so a restarted
    /// member, which knows nobody's prefix yet, counts only what it still
    /// holds (and asks for the reports in its sessions).
    fn in_flight(&self) -> usize {
        if self.window == 0 {
            return 0;
        }
        let me = self.group.me();
        let reported = self
            .group
            .live_peers()
            .map(|p| {
                self.known
                    .get(p)
                    .and_then(|k| k.get(me))
                    .copied()
                    .unwrap_or(0)
            })
            .min();
        match reported {
            Some(r) => self.buffered_of(me, r.saturating_add(1), u64::MAX).count(),
            None => 0,
        }
    }

    /// The buffered messages of `origin` numbered `first..=last`.
    fn buffered_of(&self, origin: &Id, first: u64, last: u64) -> impl Iterator<Item = &MsgId<Id>> {
        let at = |seq| MsgId {
            origin: origin.clone(),
            seq,
        };
        self.buffer.range(at(first)..=at(last)).map(|(id, _)| id)
    }

    /// Drop every stable message from the buffer: delivered here and
    /// reported delivered by every other member (its origin holds it by
    /// definition). Per origin, the stable messages are a prefix (delivery
    /// is in sequence order, and a report is a delivered prefix), bounded
    /// by this member's delivered prefix and the least prefix the other
    /// members reported: a range scan per origin, not a test of every
    /// buffered message (which made each input cost the buffer's size
    /// under load).
    fn collect(&mut self, out: &mut OutputsOf<Self>) {
        let mut stable: Vec<MsgId<Id>> = Vec::new();
        for o in self.group.members() {
            let reported = self
                .group
                .members()
                .iter()
                .filter(|m| *m != self.group.me() && *m != o)
                .map(|m| {
                    self.known
                        .get(m)
                        .and_then(|k| k.get(o))
                        .copied()
                        .unwrap_or(0)
                })
                .min()
                .unwrap_or(u64::MAX);
            let bound = reported.min(self.prefix(o));
            if bound == 0 {
                continue;
            }
            stable.extend(self.buffered_of(o, 1, bound).cloned());
        }
        for id in stable {
            self.buffer.remove(&id);
            self.ledger.dropped(&id, out);
            self.repaired_at.remove(&id);
            self.stats.collected += 1;
        }
    }

    /// The members whose reports this member needs to collect its buffer.
    fn waiting(&self) -> Vec<Id> {
        self.group
            .members()
            .iter()
            .filter(|m| {
                **m != *self.group.me()
                    && self.buffer.keys().any(|id| {
                        id.origin != **m
                            && self
                                .known
                                .get(*m)
                                .and_then(|k| k.get(&id.origin))
                                .is_none_or(|p| *p < id.seq)
                    })
            })
            .cloned()
            .collect()
    }

    fn session(&self) -> NackMsg<Id> {
        let have = self
            .highest
            .iter()
            .map(|(o, h)| (o.clone(), self.prefix(o), *h))
            .collect();
        NackMsg::Session {
            have,
            waiting: self.waiting(),
        }
    }

    fn arm_session(&mut self, out: &mut OutputsOf<Self>) {
        if !self.session_armed && !self.buffer.is_empty() {
            self.session_armed = true;
            out.set_timer(self.timing.session, NackTimer::Session);
        }
    }

    /// Arm a NACK timer for `origin` if something of it is missing, or
    /// forget its gap if nothing is.
    fn check_gap(&mut self, origin: &Id, out: &mut OutputsOf<Self>) {
        let rank = self.group.rank_of(origin);
        if self.missing(origin).is_empty() {
            if self.gaps.remove(origin).is_some() {
                out.cancel_timer(NackTimer::Gap(rank));
            }
        } else if !self.gaps.contains_key(origin) {
            self.gaps.insert(origin.clone(), 0);
            let d = self.jitter(self.timing.wait_min, self.timing.wait_max);
            out.set_timer(d, NackTimer::Gap(rank));
        }
    }

    /// Re-arm `origin`'s NACK timer one doubling later.
    fn back_off(&mut self, origin: &Id, out: &mut OutputsOf<Self>) {
        let level = self
            .gaps
            .get(origin)
            .map_or(0, |l| (l + 1).min(MAX_BACKOFF));
        self.gaps.insert(origin.clone(), level);
        let d = self.jitter(self.timing.wait_min, self.timing.wait_max) * (1 << level);
        out.set_timer(d, NackTimer::Gap(self.group.rank_of(origin)));
    }

    /// A message arrived (first transmission or repair).
    fn on_data(
        &mut self,
        now: Duration,
        id: MsgId<Id>,
        payload: Vec<u8>,
        repair: bool,
        out: &mut OutputsOf<Self>,
    ) {
        if !self.group.contains(&id.origin) || id.seq == 0 {
            return;
        }
        if repair {
            self.repaired_at.insert(id.clone(), now);
            if self.repairing.remove(&id) {
                self.nack_stats.repairs_cancelled += 1;
                out.cancel_timer(NackTimer::Repair(self.group.rank_of(&id.origin), id.seq));
            }
        }
        self.learn_highest(&id.origin, id.seq);
        if !self.is_delivered(&id) && !self.buffer.contains_key(&id) {
            let origin = id.origin.clone();
            let stored = Stored {
                stamps: Stamps::default(),
                payload,
            };
            self.ledger.kept(&id, &stored, out);
            self.buffer.insert(id.clone(), stored);
            self.deliver_ready(Some(&id), out);
            self.collect(out);
            self.check_gap(&origin, out);
        } else {
            self.check_gap(&id.origin, out);
        }
        self.arm_session(out);
    }

    fn on_nack(&mut self, now: Duration, origin: Id, missing: Vec<u64>, out: &mut OutputsOf<Self>) {
        if !self.group.contains(&origin) {
            return;
        }
        if let Some(max) = missing.iter().max() {
            self.learn_highest(&origin, *max);
        }
        // Suppression: someone asked for everything this member misses.
        let mine = self.missing(&origin);
        if self.gaps.contains_key(&origin)
            && !mine.is_empty()
            && mine.iter().all(|s| missing.contains(s))
        {
            self.nack_stats.suppressed += 1;
            self.back_off(&origin, out);
        } else {
            self.check_gap(&origin, out);
        }
        // Repairs: any holder may answer.
        let rank = self.group.rank_of(&origin);
        for seq in missing.into_iter().take(NACK_MAX) {
            let id = MsgId {
                origin: origin.clone(),
                seq,
            };
            let recent = self
                .repaired_at
                .get(&id)
                .is_some_and(|t| now < *t + self.timing.hold);
            if !self.buffer.contains_key(&id) || recent || self.repairing.contains(&id) {
                continue;
            }
            if origin == *self.group.me() {
                self.repair(now, &id, out);
            } else {
                let d = self.jitter(self.timing.wait_min, self.timing.wait_max);
                self.repairing.insert(id);
                out.set_timer(d, NackTimer::Repair(rank, seq));
            }
        }
    }

    /// Multicast a repair of `id` if this member holds it.
    fn repair(&mut self, now: Duration, id: &MsgId<Id>, out: &mut OutputsOf<Self>) {
        if let Some(stored) = self.buffer.get(id) {
            let msg = NackMsg::Repair {
                id: id.clone(),
                payload: stored.payload.clone(),
            };
            self.multicast(msg, out);
            self.nack_stats.repairs += 1;
            self.repaired_at.insert(id.clone(), now);
        }
    }

    /// Send `p` (reported down until now, or still reported down but heard
    /// from) every held message it is not known to have delivered, as
    /// first transmissions: it was unreachable, and the holders may not
    /// live long enough to answer its NACKs.
    fn catch_up(&self, p: &Id, out: &mut OutputsOf<Self>) {
        for (id, stored) in &self.buffer {
            let known = self
                .known
                .get(p)
                .and_then(|k| k.get(&id.origin))
                .is_some_and(|prefix| *prefix >= id.seq);
            if id.origin != *p && !known {
                let msg = NackMsg::Data {
                    id: id.clone(),
                    payload: stored.payload.clone(),
                };
                out.send(p.clone(), msg);
            }
        }
    }

    fn on_session(
        &mut self,
        from: Id,
        have: Vec<(Id, u64, u64)>,
        waiting: Vec<Id>,
        out: &mut OutputsOf<Self>,
    ) {
        let mut origins = Vec::new();
        for (o, prefix, high) in have {
            if !self.group.contains(&o) {
                continue;
            }
            let k = self
                .known
                .entry(from.clone())
                .or_default()
                .entry(o.clone())
                .or_default();
            *k = (*k).max(prefix);
            self.learn_highest(&o, high.max(prefix));
            origins.push(o);
        }
        self.collect(out);
        for o in &origins {
            self.check_gap(o, out);
        }
        // A member still reported down is reachable after all (a healed
        // partition the failure detector has not reported yet): catch it
        // up now, once per session it sends.
        if !self.group.is_live(&from) {
            self.catch_up(&from, out);
        }
        // An idle member answers a sender that waits for its report.
        if !self.session_armed && waiting.contains(self.group.me()) {
            self.nack_stats.sessions += 1;
            out.send(from, self.session());
        }
        self.arm_session(out);
    }
}

impl<Id: MemberId> Protocol for Nack<Id> {
    protocol_types!(NackMsg<Id>, NackTimer, BroadcastEvent<Id>);

    fn on_start(&mut self, now: Duration, out: &mut OutputsOf<Self>) {
        *self.rng = ChaCha8Rng::seed_from_u64(self.seed_at(now));
        self.deliver_ready(None, out);
        if self.resumed {
            // Tell the others what this member holds and lacks.
            self.send_session(out);
        }
        let origins: Vec<Id> = self.highest.keys().cloned().collect();
        for o in &origins {
            self.check_gap(o, out);
        }
        self.arm_session(out);
    }

    fn on_message(&mut self, now: Duration, from: Id, msg: NackMsg<Id>, out: &mut OutputsOf<Self>) {
        if !self.group.contains(&from) || from == *self.group.me() {
            return;
        }
        match msg {
            NackMsg::Data { id, payload } => self.on_data(now, id, payload, false, out),
            NackMsg::Repair { id, payload } => self.on_data(now, id, payload, true, out),
            NackMsg::Nack { origin, missing } => self.on_nack(now, origin, missing, out),
            NackMsg::Session { have, waiting } => self.on_session(from, have, waiting, out),
        }
    }

    fn on_timer(&mut self, now: Duration, timer: NackTimer, out: &mut OutputsOf<Self>) {
        match timer {
            NackTimer::Session => {
                self.session_armed = false;
                if !self.buffer.is_empty() {
                    self.send_session(out);
                }
                self.arm_session(out);
            }
            NackTimer::Gap(rank) => {
                let Some(origin) = self.group.members().get(rank).cloned() else {
                    return;
                };
                let missing = self.missing(&origin);
                if missing.is_empty() {
                    self.gaps.remove(&origin);
                    return;
                }
                self.nack_stats.nacks += 1;
                self.multicast(
                    NackMsg::Nack {
                        origin: origin.clone(),
                        missing,
                    },
                    out,
                );
                self.back_off(&origin, out);
            }
            NackTimer::Repair(rank, seq) => {
                let Some(origin) = self.group.members().get(rank).cloned() else {
                    return;
                };
                let id = MsgId { origin, seq };
                if self.repairing.remove(&id) {
                    self.repair(now, &id, out);
                }
            }
        }
    }

    fn on_membership(&mut self, _: Duration, change: MemberEvent<Id>, out: &mut OutputsOf<Self>) {
        if let Some(Change::Back(p)) = self.group.apply(change) {
            self.catch_up(&p, out);
            self.nack_stats.sessions += 1;
            out.send(p, self.session());
        }
    }

    fn persist(&mut self, out: &mut OutputsOf<Self>) {
        self.ledger.persist(out);
    }
}

super::ledger::ledger_snapshot!(impl<Id: MemberId> for Nack<Id>, |s| s.ledger, s.buffer.iter());

impl<Id: MemberId> crate::testkit::SimProtocol for Nack<Id> {}

impl<Id: MemberId> BroadcastCore for Nack<Id> {
    fn broadcast(&mut self, payload: Vec<u8>, now: Duration, out: &mut OutputsOf<Self>) {
        let _ = now;
        let seq = self.ledger.next_seq();
        let me = self.group.me().clone();
        let id = MsgId {
            origin: me.clone(),
            seq,
        };
        self.learn_highest(&me, seq);
        let stored = Stored {
            stamps: Stamps::default(),
            payload: payload.clone(),
        };
        self.ledger.kept(&id, &stored, out);
        self.buffer.insert(id.clone(), stored);
        self.deliver_ready(Some(&id), out);
        self.multicast(NackMsg::Data { id, payload }, out);
        self.collect(out);
        self.arm_session(out);
    }

    fn stats(&self) -> BroadcastStats {
        BroadcastStats {
            sent: self.ledger.seq(),
            index: self.ledger.count(),
            buffered: self.buffer.len(),
            // Held back: what is buffered past an origin's delivered
            // prefix (delivery is in sequence order), counted per origin
            // rather than by testing every buffered message.
            held_back: self
                .group
                .members()
                .iter()
                .map(|o| self.buffered_of(o, self.prefix(o) + 1, u64::MAX).count())
                .sum(),
            in_flight: self.in_flight(),
            ..self.stats
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testkit::{ms, NetFaults, OracleConfig, Sim};

    fn sim(n: u32, seed: u64) -> Sim<Nack<u32>> {
        let members: Vec<u32> = (1..=n).collect();
        let m2 = members.clone();
        Sim::new(
            seed,
            members,
            Box::new(move |id, _| Nack::new(*id, m2.clone(), BroadcastConfig::default(), None)),
            NetFaults::reliable(ms(5)),
            OracleConfig::default(),
        )
    }

    fn core(me: u32, window: usize) -> Nack<u32> {
        let config = BroadcastConfig {
            window,
            ..BroadcastConfig::default()
        };
        Nack::new(me, [1, 2, 3], config, None)
    }

    fn report(c: &mut Nack<u32>, from: u32, prefix_of_1: u64) {
        let have = vec![(1, prefix_of_1, prefix_of_1)];
        let msg = NackMsg::Session {
            have,
            waiting: Vec::new(),
        };
        c.on_message(
            Duration::ZERO,
            from,
            msg,
            &mut OutputsOf::<Nack<u32>>::new(),
        );
    }

    #[test]
    fn own_messages_are_in_flight_until_every_live_member_reports_them() {
        let mut a = core(1, 64);
        for i in 0..5u8 {
            a.broadcast(vec![i], Duration::ZERO, &mut OutputsOf::<Nack<u32>>::new());
        }
        assert_eq!(a.stats().in_flight, 5, "nobody reported yet");
        report(&mut a, 2, 5);
        assert_eq!(a.stats().in_flight, 5, "member 3 reported nothing");
        report(&mut a, 3, 3);
        assert_eq!(a.stats().in_flight, 2);
        let down = MemberEvent {
            member: 3,
            status: troupe_framework::membership::MemberStatus::Down,
            at: Duration::ZERO,
        };
        a.on_membership(Duration::ZERO, down, &mut OutputsOf::<Nack<u32>>::new());
        assert_eq!(a.stats().in_flight, 0, "a member down does not count");
        assert_eq!(core(1, 0).stats().in_flight, 0);
    }

    /// The broadcasts (`1..=n`) of `a` (member 1) that made `b` (member 2),
    /// receiving each, send a session to `a` at once.
    fn reports_at_once(a: &mut Nack<u32>, b: &mut Nack<u32>, n: u64) -> Vec<u64> {
        let mut sessions = Vec::new();
        for k in 1..=n {
            let mut o = OutputsOf::<Nack<u32>>::new();
            a.broadcast(vec![k as u8], Duration::ZERO, &mut o);
            let data = o.sends.into_iter().find(|(to, _)| *to == 2).unwrap().1;
            let mut o = OutputsOf::<Nack<u32>>::new();
            b.on_message(Duration::ZERO, 1, data, &mut o);
            if o.sends
                .iter()
                .any(|(to, m)| *to == 1 && matches!(m, NackMsg::Session { .. }))
            {
                sessions.push(k);
            }
        }
        sessions
    }

    #[test]
    fn a_busy_receiver_reports_every_quarter_window_without_waiting_for_its_timer() {
        // Window 64: a report after 16 deliveries of others' messages.
        let (mut a, mut b) = (core(1, 64), core(2, 64));
        assert_eq!(reports_at_once(&mut a, &mut b, 40), [16, 32]);
        // Without a window, only the session timer reports (every one of
        // the 40 is delivered, and no session goes at once).
        let (mut a, mut c) = (core(1, 0), core(2, 0));
        assert!(reports_at_once(&mut a, &mut c, 40).is_empty());
        assert_eq!(c.stats().delivered, 40);
    }

    #[test]
    fn one_broadcast_costs_n_minus_one_data_and_is_collected() {
        let mut s = sim(4, 1);
        s.start(&mut ()).unwrap();
        s.command(&1, &mut (), |c, now, o| c.broadcast(vec![7], now, o))
            .unwrap();
        s.run_for(Duration::from_secs(2), &mut ()).unwrap();
        assert_eq!(s.sent_counts().get("data"), Some(&3));
        assert_eq!(s.sent_counts().get("nack"), None);
        for (_, c) in s.cores() {
            assert_eq!(c.stats().delivered, 1);
            assert_eq!(c.stats().buffered, 0);
        }
        assert!(s.is_idle(), "sessions stop once everything is stable");
    }

    #[test]
    fn a_lost_last_message_is_found_by_sessions_and_repaired() {
        let mut s = sim(3, 2);
        s.start(&mut ()).unwrap();
        s.block(&1, &3, &mut ()).unwrap();
        s.command(&1, &mut (), |c, now, o| c.broadcast(vec![1], now, o))
            .unwrap();
        s.heal(&mut ()).unwrap();
        s.run_for(Duration::from_secs(2), &mut ()).unwrap();
        assert_eq!(s.core(&3).map(|c| c.stats().delivered), Some(1));
        assert!(s.core(&3).is_some_and(|c| c.nack_stats().nacks >= 1));
    }
}
