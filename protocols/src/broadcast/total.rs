//! Reliable total-order broadcast by a sequencer, with failover: the eager
//! reliable engine ([`super::reliable`]) with a hold-back queue released by
//! the sequencer's order messages, and an embedded [`Bully`] election that
//! chooses the sequencer.
//!
//! ## The order
//! The global order is a sequence of *slots* 1, 2, 3, ...; a slot holds one
//! data message (or nothing: a no-op). The **sequencer** is the leader the
//! embedded election chose; its term is the *epoch*. For every data
//! message it holds and has not ordered, it broadcasts an *order message*
//! through the same reliable engine (empty payload, [`TotalStamp::Order`]:
//! epoch, slot, and in [`Stamps::assigns`] the data message). Every other
//! member that is in that term *accepts* the order message once it holds
//! both it and its data message, and says so with an *accept message*
//! ([`TotalStamp::Accept`], a range of slots of the epoch). A slot is
//! **decided** once a majority of the whole group accepted one order
//! message of it (its sequencer counts). A member
//! delivers slot `s` once it delivered slots `1..s` and holds a decided
//! order message of `s` (and its data message): the data message is
//! reported to the user, the control messages are delivered *silently*
//! (recorded in the durable delivered sets, never reported). A slot whose
//! message was delivered in an earlier slot is a no-op, the same one at
//! every member.
//!
//! ## Failover
//! Membership reports drive the election (bully: the highest live member
//! leads, with a term larger than any before, unique to it). A member's
//! election term is its *promise*: from then on it accepts order messages
//! of that epoch only (the term is durable, so the promise survives a
//! restart). A member that learns a new leader broadcasts a *join message*
//! ([`TotalStamp::Join`]): the prefix of slots it delivered and every
//! order message it holds beyond it (and whether it holds its data). The
//! new sequencer waits for joins from a majority (its own included) and
//! until it delivered every slot one of them delivered; then it proposes
//! again, in its epoch, every slot from its next one to the highest
//! reported, each with the message of the newest epoch reported for it,
//! and goes on from there with fresh slots for the messages not yet
//! ordered. A reported message whose data no reporter holds cannot have
//! been decided (its acceptors held it, and one of them joined): that slot
//! becomes a no-op, so a sequencer that crashed after ordering a message
//! only it held does not block the order; otherwise the new sequencer
//! waits until it holds the data of what it re-proposes. This is Paxos's
//! prepare/promise phase, run once per epoch for all later slots (as in
//! Multi-Paxos or Viewstamped Replication), with the reliable engine as
//! the transport; order messages are its accept phase. The new sequencer
//! starts where the previous epoch's decided slots end, because a decided
//! slot was accepted by a majority, which intersects the majority that
//! joined; it never puts a message in two slots that are both delivered
//! (the later one is a no-op) and never fills a decided slot differently.
//! An order message of an older epoch beyond the last slot a newer
//! sequencer re-proposed cannot have been decided: members drop it.
//!
//! Durable, besides the engine's state ([`OrderDurable`]): the election's
//! terms (the promise), the next slot to deliver and the newest epoch
//! seen with its last re-proposed slot. Undelivered order, accept and data
//! messages stay in the engine's durable buffer and are replayed into the
//! rule after a restart; a restarted sequencer does not resume its epoch
//! (it proposes again only after winning a new term).
//!
//! ## Guarantees
//! Those of [`super::reliable`] (integrity, validity, uniform agreement,
//! under loss, duplication, reordering, healing partitions and
//! crash-recovery) plus **total order**: every member delivers the one
//! sequence of decided slots, so every member's deliveries are a prefix of
//! one global order. **Safety does not depend on the failure detector**: a
//! false suspicion (or a partition) may give two sequencers in two epochs
//! at once, but a slot is delivered only once a majority accepted it, and
//! the majority that joined the newer epoch no longer accepts the older
//! one's order messages, so the two never decide different messages for
//! one slot. A sequencer in a minority (partitioned, or falsely suspected
//! and superseded) decides nothing; its order messages are dropped or
//! re-proposed by the newer sequencer. FIFO is **not** promised.
//!
//! **Liveness** needs a majority of the group up and connected and a
//! stable leader (bully's; bully answers a late claim of a leader already
//! reported down with a new election, so the group does not follow a dead
//! leader): a crashed sequencer is replaced by the
//! next election (crash-stop included: delivery resumes with the new
//! sequencer, which orders what the old one left undecided), but with half the group or
//! more down, nothing new is delivered until enough members are back. One
//! corner is not live: a member that reported holding a message the new
//! sequencer re-proposes, and that crashes for good before anyone else got
//! that message.
//!
//! Cost without loss, per broadcast, for a data message of any member:
//! the engine's `N(N-1)` for it, `N(N-1)` for its order message and
//! `N(N-1)` for each of the `N-1` accept messages: `(N+1) N (N-1)`
//! (`tests/broadcast_costs.rs`), plus the election's messages (heartbeats)
//! and `N` join messages per epoch. Three message delays. The textbook
//! fixed sequencer (no failover) needs only the order message (`2N(N-1)`
//! here); the accept round is the price of safety under false suspicion.

use std::collections::{BTreeMap, BTreeSet};
use std::fmt::Debug;
use std::time::Duration;

use serde::{Deserialize, Serialize};
use troupe_framework::membership::MemberEvent;
use troupe_framework::sansio::{Outputs, Protocol, SnapshotCore};

use super::reliable::{Order, RelayMsg, RelayTimer, Reliable};
use super::{
    clock_key, BroadcastCore, BroadcastDurable, BroadcastEvent, BroadcastStats, MsgId,
    OrderDurable, SeqSet, Stamps,
};
use crate::driver::OutputsOf;
use crate::election::bully::{BullyMsg, BullyTimer};
use crate::election::{Bully, ElectionConfig, ElectionCore, ElectionEvent};
use crate::testkit::{variant_kind, SimProtocol};
use crate::MemberId;

/// An order message a member holds, as reported in a join message.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct HeldOrder {
    /// Its slot.
    pub slot: u64,
    /// Its epoch.
    pub epoch: u64,
    /// The data message it puts in the slot (`None`: a no-op).
    pub assigns: Option<(String, u64)>,
    /// The reporter holds that data message (or delivered it).
    #[serde(default)]
    pub has_data: bool,
}

/// The stamps of the total-order layer's control messages.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum TotalStamp {
    /// The sequencer of `epoch` puts the message named by
    /// [`Stamps::assigns`] (nothing if `None`) in `slot`.
    Order {
        /// The sequencer's term.
        epoch: u64,
        /// The slot.
        slot: u64,
        /// The first slot this epoch proposes.
        start: u64,
        /// The last slot this epoch re-proposed from earlier epochs
        /// (`start - 1` if none).
        end: u64,
    },
    /// "I follow the leader of `epoch`: I delivered slots `1..=delivered`
    /// and hold these order messages beyond."
    Join {
        /// The term joined.
        epoch: u64,
        /// The prefix of slots delivered.
        delivered: u64,
        /// The order messages held for later slots.
        held: Vec<HeldOrder>,
    },
    /// "I accepted the order messages of `epoch` for slots `from..=upto`."
    Accept {
        /// Their epoch.
        epoch: u64,
        /// The first slot.
        from: u64,
        /// The last slot.
        upto: u64,
    },
}

/// An order message held.
#[derive(Debug, Clone)]
struct Proposal<Id> {
    leader: Id,
    target: Option<MsgId<Id>>,
}

/// What the joins report for a slot: the newest epoch, its message, and
/// whether a reporter holds that message's data.
type Reported = (u64, Option<(String, u64)>, bool);

/// The sequencer's state in its epoch.
#[derive(Debug, Clone)]
struct Lead<Id> {
    epoch: u64,
    /// Join messages of this epoch: per member, its delivered prefix and
    /// the order messages it held.
    joins: BTreeMap<Id, (u64, Vec<HeldOrder>)>,
    /// Once the joins are in: (start, end, next slot to assign, messages
    /// ordered in this epoch).
    steady: Option<(u64, u64, u64, BTreeSet<MsgId<Id>>)>,
}

/// The total-order hold-back rule with epochs (see the module docs).
#[derive(Debug, Clone)]
pub struct EpochOrder<Id> {
    me: Id,
    members: Vec<Id>,
    /// The election's term: this member accepts order messages of this
    /// epoch only.
    term: u64,
    /// The next slot to deliver.
    next: u64,
    /// The newest epoch seen in an order message, and its `end`.
    top: (u64, u64),
    /// Held order messages, by slot and epoch.
    orders: BTreeMap<u64, BTreeMap<u64, Proposal<Id>>>,
    /// Held accept messages, by epoch and member: their slot ranges.
    accepts: BTreeMap<u64, BTreeMap<Id, Vec<(u64, u64)>>>,
    /// Data messages held and not delivered.
    data: BTreeSet<MsgId<Id>>,
    /// (epoch, slot) accepted by this member in this life.
    accepted: BTreeSet<(u64, u64)>,
    /// A join message is due (a leader became known).
    join_due: bool,
    /// This member leads its term (known in this life).
    lead: Option<Lead<Id>>,
}

fn has<Id: Ord>(delivered: &BTreeMap<Id, SeqSet>, id: &MsgId<Id>) -> bool {
    delivered
        .get(&id.origin)
        .is_some_and(|s| s.contains(id.seq))
}

fn key<Id: Debug>(id: &MsgId<Id>) -> (String, u64) {
    (clock_key(&id.origin), id.seq)
}

/// The message `assigns` names, if it names one of `members`.
fn named<Id: Clone + Debug>(members: &[Id], assigns: &Option<(String, u64)>) -> Option<MsgId<Id>> {
    let (key, seq) = assigns.as_ref()?;
    let origin = members.iter().find(|m| clock_key(*m) == *key)?;
    Some(MsgId {
        origin: origin.clone(),
        seq: *seq,
    })
}

impl<Id: Ord + Clone + Debug> EpochOrder<Id> {
    /// The message `assigns` names, if it names one of the group.
    fn named(&self, assigns: &Option<(String, u64)>) -> Option<MsgId<Id>> {
        named(&self.members, assigns)
    }

    /// True when this member holds (or delivered) the data message of an
    /// order message (always for a no-op).
    fn holds(&self, target: Option<&MsgId<Id>>, delivered: &BTreeMap<Id, SeqSet>) -> bool {
        target.is_none_or(|t| self.data.contains(t) || has(delivered, t))
    }

    fn majority(&self) -> usize {
        self.members.len() / 2 + 1
    }

    /// An order message of `epoch` for `slot` that cannot have been
    /// decided: a newer epoch re-proposed only up to a lower slot.
    fn dead(&self, epoch: u64, slot: u64) -> bool {
        epoch < self.top.0 && slot > self.top.1
    }

    /// True when the held order message of `epoch` for `slot` is decided.
    fn decided(&self, epoch: u64, slot: u64) -> bool {
        let Some(p) = self.orders.get(&slot).and_then(|e| e.get(&epoch)) else {
            return false;
        };
        if self.dead(epoch, slot) {
            return false;
        }
        let others = self.accepts.get(&epoch).map_or(0, |by| {
            by.iter()
                .filter(|(m, ranges)| {
                    **m != p.leader && ranges.iter().any(|(f, u)| *f <= slot && slot <= *u)
                })
                .count()
        });
        1 + others >= self.majority()
    }

    /// The decided order message of the next slot, if any.
    fn next_decided(&self) -> Option<&Proposal<Id>> {
        let by = self.orders.get(&self.next)?;
        by.iter()
            .find(|(e, _)| self.decided(**e, self.next))
            .map(|(_, p)| p)
    }

    /// The last slot an accept message of `epoch` up to `upto` may still
    /// be needed for.
    fn accept_needed(&self, epoch: u64, upto: u64) -> u64 {
        if epoch < self.top.0 {
            upto.min(self.top.1)
        } else {
            upto
        }
    }

    /// A new election term, and its leader if known (from the embedded
    /// election).
    pub fn follow(&mut self, term: u64, leader: Option<&Id>) {
        if term != self.term {
            self.lead = None;
        }
        self.term = term;
        if leader.is_some() {
            self.join_due = true;
        }
        if leader == Some(&self.me) {
            if self.lead.as_ref().is_none_or(|l| l.epoch != term) {
                self.lead = Some(Lead {
                    epoch: term,
                    joins: BTreeMap::new(),
                    steady: None,
                });
            }
        } else {
            self.lead = None;
        }
    }

    /// Forget what no longer matters (delivered, or replayed from the
    /// buffer after a restart though already delivered).
    fn prune(&mut self, delivered: &BTreeMap<Id, SeqSet>) {
        self.data.retain(|id| !has(delivered, id));
        let next = self.next;
        self.orders = std::mem::take(&mut self.orders)
            .into_iter()
            .filter(|(s, _)| *s >= next)
            .collect();
        let (top, top_end) = self.top;
        for (e, by) in &mut self.accepts {
            for ranges in by.values_mut() {
                ranges.retain(|(f, u)| {
                    let hi = if *e < top { (*u).min(top_end) } else { *u };
                    hi >= *f && hi >= next
                });
            }
            by.retain(|_, r| !r.is_empty());
        }
        self.accepts.retain(|_, by| !by.is_empty());
    }

    /// The sequencer's order messages due now.
    fn lead(&mut self, delivered: &BTreeMap<Id, SeqSet>, out: &mut Vec<Stamps>) {
        let majority = self.majority();
        let next = self.next;
        let Some(lead) = self.lead.as_mut() else {
            return;
        };
        let epoch = lead.epoch;
        if lead.steady.is_none() {
            let caught_up = lead.joins.values().all(|(d, _)| *d < next);
            if lead.joins.len() < majority || !caught_up {
                return;
            }
            // The newest epoch's message reported for each slot from
            // `next`, and whether a reporter holds its data.
            let mut best: BTreeMap<u64, Reported> = BTreeMap::new();
            for (_, held) in lead.joins.values() {
                for h in held.iter().filter(|h| h.slot >= next) {
                    let e = best.entry(h.slot).or_insert((0, None, false));
                    if h.epoch > e.0 || (h.epoch == e.0 && h.assigns != e.1) {
                        *e = (h.epoch, h.assigns.clone(), h.has_data);
                    } else if h.epoch == e.0 {
                        e.2 |= h.has_data;
                    }
                }
            }
            let end = best.keys().next_back().copied().unwrap_or(0).max(next - 1);
            // A message no reporter holds cannot have been decided (a
            // member accepts an order message only once it holds its data,
            // and a majority accepted a decided one): a no-op instead.
            let mut values = Vec::new();
            for slot in next..=end {
                let value = best.get(&slot).and_then(|(_, a, has_data)| {
                    let id = named(&self.members, a)?;
                    let holds = self.data.contains(&id) || has(delivered, &id);
                    (*has_data || holds).then_some((id, holds))
                });
                values.push(value);
            }
            // Wait until this sequencer holds every message it re-proposes
            // (its own acceptance counts).
            if values.iter().flatten().any(|(_, holds)| !holds) {
                return;
            }
            let mut proposed = BTreeSet::new();
            for (slot, value) in (next..=end).zip(values) {
                let assigns = value.map(|(id, _)| {
                    let k = key(&id);
                    proposed.insert(id);
                    k
                });
                out.push(Stamps {
                    assigns,
                    total: Some(TotalStamp::Order {
                        epoch,
                        slot,
                        start: next,
                        end,
                    }),
                    ..Stamps::default()
                });
            }
            lead.steady = Some((next, end, end + 1, proposed));
        }
        if let Some((start, end, slot, proposed)) = lead.steady.as_mut() {
            for id in &self.data {
                if has(delivered, id) || proposed.contains(id) {
                    continue;
                }
                proposed.insert(id.clone());
                out.push(Stamps {
                    assigns: Some(key(id)),
                    total: Some(TotalStamp::Order {
                        epoch,
                        slot: *slot,
                        start: *start,
                        end: *end,
                    }),
                    ..Stamps::default()
                });
                *slot += 1;
            }
        }
    }
}

impl<Id: Ord + Clone + Debug> Order<Id> for EpochOrder<Id> {
    fn new(me: &Id, members: &[Id], _: &BTreeMap<Id, SeqSet>) -> Self {
        Self {
            me: me.clone(),
            members: members.to_vec(),
            term: 0,
            next: 1,
            top: (0, 0),
            orders: BTreeMap::new(),
            accepts: BTreeMap::new(),
            data: BTreeSet::new(),
            accepted: BTreeSet::new(),
            join_due: false,
            lead: None,
        }
    }
    fn resume(&mut self, durable: &OrderDurable<Id>) {
        self.next = durable.slot.max(1);
        self.top = durable.epoch;
    }
    fn durable(&self) -> OrderDurable<Id> {
        OrderDurable {
            slot: self.next,
            epoch: self.top,
            ..OrderDurable::default()
        }
    }
    fn stamp(&self, _: &Id, _: u64) -> Stamps {
        Stamps::default()
    }
    fn received(&mut self, id: &MsgId<Id>, stamps: &Stamps) {
        match &stamps.total {
            None => {
                self.data.insert(id.clone());
            }
            Some(TotalStamp::Order {
                epoch, slot, end, ..
            }) => {
                if *epoch > self.top.0 {
                    self.top = (*epoch, *end);
                }
                let target = self.named(&stamps.assigns);
                self.orders.entry(*slot).or_default().insert(
                    *epoch,
                    Proposal {
                        leader: id.origin.clone(),
                        target,
                    },
                );
            }
            Some(TotalStamp::Accept { epoch, from, upto }) => {
                self.accepts
                    .entry(*epoch)
                    .or_default()
                    .entry(id.origin.clone())
                    .or_default()
                    .push((*from, *upto));
            }
            Some(TotalStamp::Join {
                epoch,
                delivered,
                held,
            }) => {
                if let Some(lead) = self.lead.as_mut() {
                    if lead.epoch == *epoch && lead.steady.is_none() {
                        lead.joins
                            .insert(id.origin.clone(), (*delivered, held.clone()));
                    }
                }
            }
        }
    }
    fn take_controls(&mut self, delivered: &BTreeMap<Id, SeqSet>) -> Vec<Stamps> {
        self.prune(delivered);
        let mut out = Vec::new();
        if std::mem::take(&mut self.join_due) {
            let held = self
                .orders
                .iter()
                .flat_map(|(slot, by)| {
                    by.iter()
                        .filter(|(e, _)| !self.dead(**e, *slot))
                        .map(|(e, p)| HeldOrder {
                            slot: *slot,
                            epoch: *e,
                            assigns: p.target.as_ref().map(key),
                            has_data: self.holds(p.target.as_ref(), delivered),
                        })
                })
                .collect();
            out.push(Stamps {
                total: Some(TotalStamp::Join {
                    epoch: self.term,
                    delivered: self.next - 1,
                    held,
                }),
                ..Stamps::default()
            });
        }
        // Accept the order messages of this member's term it holds, with
        // their data.
        let term = self.term;
        let fresh: Vec<u64> = self
            .orders
            .iter()
            .filter(|(slot, by)| {
                by.get(&term).is_some_and(|p| {
                    p.leader != self.me && self.holds(p.target.as_ref(), delivered)
                }) && !self.accepted.contains(&(term, **slot))
            })
            .map(|(slot, _)| *slot)
            .collect();
        let mut runs: Vec<(u64, u64)> = Vec::new();
        for s in fresh {
            self.accepted.insert((term, s));
            match runs.last_mut() {
                Some((_, u)) if *u + 1 == s => *u = s,
                _ => runs.push((s, s)),
            }
        }
        for (from, upto) in runs {
            out.push(Stamps {
                total: Some(TotalStamp::Accept {
                    epoch: term,
                    from,
                    upto,
                }),
                ..Stamps::default()
            });
        }
        self.lead(delivered, &mut out);
        out
    }
    fn ready(&self, id: &MsgId<Id>, stamps: &Stamps, delivered: &BTreeMap<Id, SeqSet>) -> bool {
        match &stamps.total {
            None => self
                .next_decided()
                .is_some_and(|p| p.target.as_ref() == Some(id)),
            Some(TotalStamp::Order { epoch, slot, .. }) => {
                if *slot < self.next || self.dead(*epoch, *slot) {
                    return true;
                }
                *slot == self.next
                    && self.decided(*epoch, *slot)
                    && self
                        .named(&stamps.assigns)
                        .is_none_or(|t| has(delivered, &t))
            }
            Some(TotalStamp::Accept { epoch, from, upto }) => {
                let hi = self.accept_needed(*epoch, *upto);
                hi < *from || hi < self.next
            }
            Some(TotalStamp::Join { .. }) => true,
        }
    }
    fn delivered(&mut self, id: &MsgId<Id>, stamps: &Stamps) {
        match &stamps.total {
            None => {
                self.data.remove(id);
            }
            Some(TotalStamp::Order { epoch, slot, .. }) => {
                if *slot == self.next && self.decided(*epoch, *slot) {
                    self.next += 1;
                }
                if let Some(by) = self.orders.get_mut(slot) {
                    by.remove(epoch);
                    if by.is_empty() {
                        self.orders.remove(slot);
                    }
                }
            }
            Some(TotalStamp::Accept { epoch, from, upto }) => {
                if let Some(ranges) = self
                    .accepts
                    .get_mut(epoch)
                    .and_then(|by| by.get_mut(&id.origin))
                {
                    if let Some(i) = ranges.iter().position(|r| *r == (*from, *upto)) {
                        ranges.swap_remove(i);
                    }
                }
            }
            Some(TotalStamp::Join { .. }) => {}
        }
    }
    fn silent(&self, stamps: &Stamps) -> bool {
        stamps.total.is_some()
    }
}

/// The wire messages of [`Total`]: the engine's and the election's.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum TotalMsg<Id> {
    /// A message of the reliable engine.
    Relay(RelayMsg<Id>),
    /// A message of the embedded election.
    Election(BullyMsg<Id>),
}

/// The timers of [`Total`]: the engine's and the election's.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum TotalTimer {
    /// A timer of the reliable engine.
    Relay(RelayTimer),
    /// A timer of the embedded election.
    Election(BullyTimer),
}

type Engine<Id> = Reliable<Id, EpochOrder<Id>>;
type TotalOut<Id> = Outputs<Id, TotalMsg<Id>, TotalTimer, BroadcastEvent<Id>>;
type ElectionOut<Id> = Outputs<Id, BullyMsg<Id>, BullyTimer, ElectionEvent<Id>>;

/// Reliable total-order broadcast, a sequencer chosen by an embedded bully
/// election, with failover (see the module docs).
#[derive(Debug, Clone)]
pub struct Total<Id> {
    engine: Box<Engine<Id>>,
    election: Bully<Id>,
}

impl<Id: MemberId> super::Engine<Id> for Total<Id> {
    /// The election runs with [`ElectionConfig::default`].
    fn open(o: super::Opened<Id>) -> Self {
        let me = o.group.me().clone();
        let members = o.group.members().to_vec();
        let election_state = o.order.election.clone();
        let election = Bully::new(me, members, ElectionConfig::default(), election_state);
        let mut engine = Box::new(<Engine<Id> as super::Engine<Id>>::open(o));
        engine.order_mut().follow(election.term(), None);
        Self { engine, election }
    }
}

impl<Id: MemberId> Total<Id> {
    /// The term of the embedded election (the epoch this member is in)
    /// and its leader (the sequencer), if known.
    pub fn sequencer(&self) -> (u64, Option<&Id>) {
        (self.election.term(), self.election.leader())
    }

    /// [`Reliable::inert`] for the engine's messages; an election
    /// message is never inert.
    pub fn inert(&self, from: &Id, msg: &TotalMsg<Id>) -> bool {
        match msg {
            TotalMsg::Relay(m) => self.engine.inert(from, m),
            TotalMsg::Election(_) => false,
        }
    }

    fn relay(
        &mut self,
        out: &mut TotalOut<Id>,
        f: impl FnOnce(&mut Engine<Id>, &mut OutputsOf<Engine<Id>>),
    ) {
        out.relay(TotalMsg::Relay, TotalTimer::Relay, |o| {
            f(&mut self.engine, o)
        });
    }

    /// Run `f` on the election, carry out its outputs, and tell the order
    /// of a new term or leader.
    fn elect(
        &mut self,
        now: Duration,
        out: &mut TotalOut<Id>,
        f: impl FnOnce(&mut Bully<Id>, &mut ElectionOut<Id>),
    ) {
        let mut eo = Outputs::new();
        f(&mut self.election, &mut eo);
        self.carry(now, out, eo);
    }

    /// Carry out the election's outputs `eo`.
    fn carry(&mut self, now: Duration, out: &mut TotalOut<Id>, eo: ElectionOut<Id>) {
        for (to, m) in eo.sends {
            out.send(to, TotalMsg::Election(m));
        }
        out.timers
            .extend(eo.timers.into_iter().map(|op| op.map(TotalTimer::Election)));
        out.writes.extend(eo.writes);
        if out.write_error.is_none() {
            out.write_error = eo.write_error;
        }
        if eo.events.is_empty() {
            return;
        }
        let term = self.election.term();
        let leader = self.election.leader().cloned();
        self.engine.order_mut().follow(term, leader.as_ref());
        self.relay(out, |e, o| e.settle(now, o));
    }
}

impl<Id: MemberId> Protocol for Total<Id> {
    type Id = Id;
    type Msg = TotalMsg<Id>;
    type Timer = TotalTimer;
    type Event = BroadcastEvent<Id>;

    fn on_start(&mut self, now: Duration, out: &mut TotalOut<Id>) {
        self.relay(out, |e, o| e.on_start(now, o));
        self.elect(now, out, |e, o| e.on_start(now, o));
    }

    fn on_message(&mut self, now: Duration, from: Id, msg: TotalMsg<Id>, out: &mut TotalOut<Id>) {
        match msg {
            TotalMsg::Relay(m) => self.relay(out, |e, o| e.on_message(now, from, m, o)),
            TotalMsg::Election(m) => self.elect(now, out, |e, o| e.on_message(now, from, m, o)),
        }
    }

    fn on_timer(&mut self, now: Duration, timer: TotalTimer, out: &mut TotalOut<Id>) {
        match timer {
            TotalTimer::Relay(t) => self.relay(out, |e, o| e.on_timer(now, t, o)),
            TotalTimer::Election(t) => self.elect(now, out, |e, o| e.on_timer(now, t, o)),
        }
    }

    fn on_membership(&mut self, now: Duration, change: MemberEvent<Id>, out: &mut TotalOut<Id>) {
        let c = change.clone();
        self.relay(out, |e, o| e.on_membership(now, c, o));
        self.elect(now, out, |e, o| e.on_membership(now, change, o));
    }

    fn persist(&mut self, out: &mut TotalOut<Id>) {
        let election = self.election.state();
        self.relay(out, |e, o| {
            e.persist_with(|d| d.election = Some(election), o)
        });
    }
}

impl<Id: MemberId> SnapshotCore for Total<Id> {
    type State = BroadcastDurable<Id>;
    fn state(&self) -> BroadcastDurable<Id> {
        let mut state = self.engine.state();
        state.order.election = Some(self.election.state());
        state
    }
    fn recover(
        recovered: &troupe_framework::sansio::Recovered,
    ) -> Result<Option<BroadcastDurable<Id>>, troupe_framework::sansio::DurableError> {
        super::Ledger::recover(recovered)
    }
}

impl<Id: MemberId> SimProtocol for Total<Id> {
    fn msg_kind(msg: &TotalMsg<Id>) -> &'static str {
        match msg {
            TotalMsg::Relay(m) => variant_kind(m),
            TotalMsg::Election(m) => variant_kind(m),
        }
    }
}

impl<Id: MemberId> BroadcastCore for Total<Id> {
    fn broadcast(&mut self, payload: Vec<u8>, now: Duration, out: &mut TotalOut<Id>) {
        self.relay(out, |e, o| e.broadcast(payload, now, o));
    }
    fn stats(&self) -> BroadcastStats {
        self.engine.stats()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn id(origin: u32, seq: u64) -> MsgId<u32> {
        MsgId { origin, seq }
    }

    fn order(epoch: u64, slot: u64, end: u64, target: Option<(u32, u64)>) -> Stamps {
        Stamps {
            assigns: target.map(|(o, s)| (clock_key(&o), s)),
            total: Some(TotalStamp::Order {
                epoch,
                slot,
                start: 1,
                end,
            }),
            ..Stamps::default()
        }
    }

    fn accept(epoch: u64, from: u64, upto: u64) -> Stamps {
        Stamps {
            total: Some(TotalStamp::Accept { epoch, from, upto }),
            ..Stamps::default()
        }
    }

    #[test]
    fn a_slot_is_delivered_once_a_majority_accepted_it() {
        // Member 1 of 5; sequencer 5 in epoch 9.
        let mut o = EpochOrder::new(&1, &[1, 2, 3, 4, 5], &BTreeMap::new());
        o.follow(9, Some(&5));
        let delivered = BTreeMap::new();
        let data = Stamps::default();
        o.received(&id(2, 1), &data);
        let ord = order(9, 1, 0, Some((2, 1)));
        o.received(&id(5, 1), &ord);
        assert!(!o.ready(&id(2, 1), &data, &delivered), "not decided");
        // This member accepts it (with its join).
        let c = o.take_controls(&delivered);
        assert!(matches!(
            c[0].total,
            Some(TotalStamp::Join { epoch: 9, .. })
        ));
        assert_eq!(c[1], accept(9, 1, 1));
        o.received(&id(1, 1), &c[1]);
        assert!(!o.ready(&id(2, 1), &data, &delivered), "2 of 5 accepted");
        o.received(&id(3, 1), &accept(9, 1, 1));
        assert!(o.ready(&id(2, 1), &data, &delivered), "3 of 5");
    }

    #[test]
    fn an_older_epoch_is_not_accepted_and_is_dropped_beyond_the_newer_end() {
        let mut o = EpochOrder::new(&1, &[1, 2, 3], &BTreeMap::new());
        o.follow(7, Some(&3));
        let delivered = BTreeMap::new();
        o.take_controls(&delivered);
        // An order message of epoch 4 (older than the promise): held, not
        // accepted.
        o.received(&id(2, 1), &order(4, 1, 0, Some((2, 5))));
        assert!(o.take_controls(&delivered).is_empty());
        // Epoch 7 re-proposed nothing: slot 1 of epoch 4 is dead.
        o.received(&id(3, 1), &order(7, 1, 0, Some((1, 1))));
        assert!(o.ready(&id(2, 1), &order(4, 1, 0, Some((2, 5))), &delivered));
    }

    #[test]
    fn a_new_sequencer_re_proposes_what_the_majority_reported() {
        let mut o = EpochOrder::new(&3, &[1, 2, 3], &BTreeMap::new());
        let delivered = BTreeMap::new();
        o.follow(5, Some(&3));
        let c = o.take_controls(&delivered);
        assert_eq!(c.len(), 1, "its own join: {c:?}");
        o.received(&id(3, 1), &c[0]);
        assert!(o.take_controls(&delivered).is_empty(), "1 join of 3");
        let join = Stamps {
            total: Some(TotalStamp::Join {
                epoch: 5,
                delivered: 0,
                held: vec![
                    HeldOrder {
                        slot: 1,
                        epoch: 2,
                        assigns: Some((clock_key(&1u32), 1)),
                        has_data: true,
                    },
                    HeldOrder {
                        slot: 3,
                        epoch: 2,
                        assigns: Some((clock_key(&2u32), 1)),
                        has_data: true,
                    },
                    // Nobody holds its data: not decided, a no-op.
                    HeldOrder {
                        slot: 4,
                        epoch: 2,
                        assigns: Some((clock_key(&2u32), 9)),
                        has_data: false,
                    },
                ],
            }),
            ..Stamps::default()
        };
        o.received(&id(1, 1), &join);
        o.received(&id(1, 2), &Stamps::default());
        o.received(&id(2, 1), &Stamps::default());
        assert!(
            o.take_controls(&delivered).is_empty(),
            "waits until it holds what it re-proposes"
        );
        o.received(&id(1, 1), &Stamps::default());
        let c = o.take_controls(&delivered);
        let slots: Vec<(u64, Option<(String, u64)>)> = c
            .iter()
            .map(|s| match s.total {
                Some(TotalStamp::Order { slot, end, .. }) => {
                    assert_eq!(end, 4);
                    (slot, s.assigns.clone())
                }
                _ => panic!("{s:?}"),
            })
            .collect();
        assert_eq!(
            slots,
            vec![
                (1, Some((clock_key(&1u32), 1))),
                (2, None),
                (3, Some((clock_key(&2u32), 1))),
                (4, None),
                (5, Some((clock_key(&1u32), 2))),
            ]
        );
    }
}
