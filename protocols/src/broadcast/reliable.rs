//! Eager reliable broadcast, and the engine every ordering layer runs on.
//!
//! The sender delivers its message, keeps it in its history buffer and sends
//! it to every live member. A member that receives a message for the first
//! time keeps it, acknowledges it to the member it got it from and relays it
//! to every other live member: so once any member holds a message, every
//! member gets it even if the sender crashed mid-send. A copy from a member
//! tells the receiver that member holds it; a member re-sends a message
//! `retry` after it last sent it to the live members not known to hold it (marked as a re-send, so
//! that a duplicate is answered with an `Ack`), and at once to a member
//! reported up again. A message is dropped from the buffer once it is
//! delivered here and every member is known to hold it (stable).
//!
//! Cost without loss: `N(N-1)` messages per broadcast (the sender's `N-1`
//! copies, then from each other member one `Ack` and `N-2` relays), the
//! textbook's `O(N^2)`; one message delay to every member.
//!
//! [`Reliable`] is generic over an [`Order`], the hold-back rule of the
//! ordering layer: [`EagerReliable`] ([`Unordered`]) delivers on first
//! receipt, [`super::Fifo`] and [`super::Causal`] hold messages back until
//! their rule allows them.
//!
//! Guarantees (see the [family docs](super)): integrity, validity and
//! uniform agreement under loss, duplication, reordering, partitions that
//! heal and crash-recovery (a member's state is durable before what depends
//! on it leaves), whatever the failure detector says (a false suspicion
//! delays re-sends to the suspect until it is reported up). No order.

use std::collections::{BTreeMap, BTreeSet};
use std::fmt::Debug;
use std::time::Duration;

use serde::{Deserialize, Serialize};
use troupe_framework::membership::MemberEvent;
use troupe_framework::sansio::Protocol;

use super::{
    BroadcastConfig, BroadcastCore, BroadcastEvent, BroadcastStats, Engine, Ledger, MsgId, Opened,
    OrderDurable, SeqSet, Stamps, Stored,
};
use crate::driver::OutputsOf;
use crate::family::protocol_types;
use crate::group::{Change, Group};
use crate::testkit::model::Renaming;
use crate::MemberId;

/// The wire messages of the reliable engine (shared by its layers).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum RelayMsg<Id> {
    /// A broadcast message, from its origin or relayed.
    Data {
        /// Its identity.
        id: MsgId<Id>,
        /// Its ordering stamps.
        stamps: Stamps,
        /// What was broadcast.
        #[serde(with = "serde_bytes")]
        payload: Vec<u8>,
        /// A re-send: the receiver answers a duplicate with an `Ack`.
        retry: bool,
    },
    /// "I hold this message."
    Ack {
        /// Which message.
        id: MsgId<Id>,
    },
}

impl<Id: MemberId> RelayMsg<Id> {
    /// The message as it is with every member `m` called `r.to(m)` and its
    /// payload replaced by `payload(p)`, for the model checker's symmetry
    /// reduction; `None` with a total-order stamp.
    pub fn renamed(
        &self,
        r: &Renaming<'_, Id>,
        payload: &dyn Fn(&[u8]) -> Vec<u8>,
    ) -> Option<Self> {
        Some(match self {
            RelayMsg::Data {
                id,
                stamps,
                payload: p,
                retry,
            } => RelayMsg::Data {
                id: id.renamed(r),
                stamps: stamps.renamed(r)?,
                payload: payload(p),
                retry: *retry,
            },
            RelayMsg::Ack { id } => RelayMsg::Ack { id: id.renamed(r) },
        })
    }
}

/// The reliable engine's timers.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RelayTimer {
    /// Re-send what live members are not known to hold.
    Retry,
}

/// The hold-back rule of an ordering layer on top of [`Reliable`].
pub trait Order<Id>: Debug + Clone {
    /// The rule's state for `me` among `members`, given what it delivered
    /// (per origin). The engine then calls [`Order::received`] for every
    /// message of its history buffer.
    fn new(me: &Id, members: &[Id], delivered: &BTreeMap<Id, SeqSet>) -> Self;
    /// The stamps of `me`'s next broadcast, number `seq`.
    fn stamp(&self, me: &Id, seq: u64) -> Stamps;
    /// May `id` (not delivered yet) be delivered now?
    fn ready(&self, id: &MsgId<Id>, stamps: &Stamps, delivered: &BTreeMap<Id, SeqSet>) -> bool;
    /// `id` was delivered.
    fn delivered(&mut self, id: &MsgId<Id>, stamps: &Stamps);
    /// `id` entered the history buffer (first receipt, own broadcast, or
    /// rebuilt from the durable buffer after a restart).
    fn received(&mut self, _id: &MsgId<Id>, _stamps: &Stamps) {}
    /// Control messages this member must broadcast now, as their stamps
    /// (empty payload; the total-order sequencer's order messages). The
    /// engine calls it after every input that changed the buffer.
    fn take_controls(&mut self, _delivered: &BTreeMap<Id, SeqSet>) -> Vec<Stamps> {
        Vec::new()
    }
    /// True for a control message: delivered to the layer (it counts in
    /// the durable delivered sets) but not reported to the user.
    fn silent(&self, _stamps: &Stamps) -> bool {
        false
    }
    /// Take up what the rule made durable in a previous life (called once,
    /// right after [`Order::new`], before the buffer is replayed).
    /// Default: nothing kept.
    fn resume(&mut self, _durable: &OrderDurable<Id>) {}
    /// What the rule keeps on stable storage besides the delivered sets and
    /// the buffer, saved with them after every input that changes it.
    /// Default: nothing.
    fn durable(&self) -> OrderDurable<Id> {
        OrderDurable::default()
    }
    /// The rule's state as it is with every member `m` called `r.to(m)`,
    /// for the model checker's symmetry reduction. Default: `None` (a rule
    /// that cannot be renamed; the model then declares no symmetry).
    fn renamed(&self, _r: &Renaming<'_, Id>) -> Option<Self> {
        None
    }
    /// Take up the settings of the broadcast (called once, right after
    /// [`Order::new`]). Default: none read.
    fn configure(&mut self, _config: &BroadcastConfig) {}
}

/// No order: deliver on first receipt.
#[derive(Debug, Clone, Default)]
pub struct Unordered;

impl<Id> Order<Id> for Unordered {
    fn new(_: &Id, _: &[Id], _: &BTreeMap<Id, SeqSet>) -> Self {
        Unordered
    }
    fn stamp(&self, _: &Id, _: u64) -> Stamps {
        Stamps::default()
    }
    fn ready(&self, _: &MsgId<Id>, _: &Stamps, _: &BTreeMap<Id, SeqSet>) -> bool {
        true
    }
    fn delivered(&mut self, _: &MsgId<Id>, _: &Stamps) {}
    fn renamed(&self, _: &Renaming<'_, Id>) -> Option<Self> {
        Some(Unordered)
    }
}

/// Eager reliable broadcast, no order (see the module docs).
pub type EagerReliable<Id> = Reliable<Id, Unordered>;

/// A message in the history buffer, and who is known to hold it.
#[derive(Debug, Clone)]
struct Entry<Id> {
    stored: Stored,
    has: BTreeSet<Id>,
    /// When it was last sent (a re-send waits `retry` after it).
    sent_at: Duration,
    /// It was not deliverable when it arrived (or when the buffer was
    /// rebuilt after a restart): it waits in the hold-back queue.
    held: bool,
}

/// The reliable engine with hold-back rule `O` (see the module docs).
#[derive(Debug, Clone)]
pub struct Reliable<Id, O> {
    group: Group<Id>,
    config: BroadcastConfig,
    ledger: Ledger<Id>,
    buffer: BTreeMap<MsgId<Id>, Entry<Id>>,
    /// The buffered messages not delivered yet (the hold-back queue).
    pending: BTreeSet<MsgId<Id>>,
    order: O,
    retry_armed: bool,
    stats: BroadcastStats,
}

impl<Id: MemberId, O: Order<Id>> Engine<Id> for Reliable<Id, O> {
    fn open(o: Opened<Id>) -> Self {
        let (group, ledger) = (o.group, o.ledger);
        // Every buffered message was held back or waits to be known stable;
        // this member and its origin hold it.
        let entry = |(id, stored): (MsgId<Id>, Stored)| {
            let has = [group.me().clone(), id.origin.clone()].into();
            let sent_at = Duration::ZERO;
            let held = true;
            let e = Entry {
                stored,
                has,
                sent_at,
                held,
            };
            (id, e)
        };
        let buffer: BTreeMap<MsgId<Id>, Entry<Id>> = o.buffer.into_iter().map(entry).collect();
        let mut order = O::new(group.me(), group.members(), ledger.delivered());
        order.configure(&o.config);
        order.resume(&o.order);
        for (id, e) in &buffer {
            order.received(id, &e.stored.stamps);
        }
        let pending = buffer
            .keys()
            .filter(|id| !ledger.is_delivered(id))
            .cloned()
            .collect();
        Self {
            order,
            group,
            config: o.config,
            ledger,
            buffer,
            pending,
            retry_armed: false,
            stats: BroadcastStats::default(),
        }
    }
}

impl<Id: MemberId, O: Order<Id>> Reliable<Id, O> {
    /// The core as it is with every member `m` called `r.to(m)` and every
    /// payload `p` replaced by `payload(p)` (the data a model ties to
    /// members), for the model checker's symmetry reduction; `None` if
    /// its order rule cannot be renamed ([`Order::renamed`]).
    pub fn renamed(
        &self,
        r: &Renaming<'_, Id>,
        payload: &dyn Fn(&[u8]) -> Vec<u8>,
    ) -> Option<Self> {
        let mut buffer = BTreeMap::new();
        for (id, e) in &self.buffer {
            let e = Entry {
                stored: e.stored.renamed(r, payload)?,
                has: e.has.iter().map(|m| r.id(m)).collect(),
                sent_at: e.sent_at,
                held: e.held,
            };
            buffer.insert(id.renamed(r), e);
        }
        Some(Self {
            group: self.group.renamed(r),
            config: self.config.clone(),
            ledger: self.ledger.renamed(r)?,
            buffer,
            pending: self.pending.iter().map(|id| id.renamed(r)).collect(),
            order: self.order.renamed(r)?,
            retry_armed: self.retry_armed,
            stats: self.stats,
        })
    }

    fn is_delivered(&self, id: &MsgId<Id>) -> bool {
        self.ledger.is_delivered(id)
    }

    fn data(&self, id: &MsgId<Id>, retry: bool) -> Option<RelayMsg<Id>> {
        let e = self.buffer.get(id)?;
        Some(RelayMsg::Data {
            id: id.clone(),
            stamps: e.stored.stamps.clone(),
            payload: e.stored.payload.clone(),
            retry,
        })
    }

    /// True when receiving `msg` from `from` now only records who holds
    /// a message, for the model checker's inert-first reduction
    /// ([`crate::testkit::model::Model::inert`]): an acknowledgement, or
    /// a copy (not a re-send) of a message this member holds or delivered.
    /// Such an input sends nothing and reports nothing; it adds `from` to
    /// the holders of the message, which only the retry timer, a
    /// member's return (failure detector) and the collection of stable
    /// messages read; a collection happens in either order (it is tried
    /// on every delivery and on every such input), so the input commutes
    /// with every other input but a timer and a membership change. It
    /// stays inert: a member does not forget what it holds without a
    /// crash.
    pub fn inert(&self, from: &Id, msg: &RelayMsg<Id>) -> bool {
        if !self.group.contains(from) {
            return true;
        }
        match msg {
            RelayMsg::Ack { .. } => true,
            RelayMsg::Data { id, retry, .. } => {
                !retry
                    && self.group.contains(&id.origin)
                    && id.seq != 0
                    && (self.is_delivered(id) || self.buffer.contains_key(id))
            }
        }
    }

    /// The hold-back rule.
    pub fn order(&self) -> &O {
        &self.order
    }

    /// The hold-back rule, to tell it what a composite core learned (an
    /// embedded election's leader); call [`Reliable::settle`] after.
    pub fn order_mut(&mut self) -> &mut O {
        &mut self.order
    }

    /// Broadcast the control messages the order asks for and deliver what
    /// it allows now (after a change made through [`Reliable::order_mut`]).
    pub fn settle(&mut self, now: Duration, out: &mut OutputsOf<Self>) {
        self.deliver_ready(now, out);
        self.arm_retry(out);
    }

    /// Make durable what changed, with the ordering layer's state as
    /// `amend` completes it (a composite core adds its own part).
    pub fn persist_with(
        &mut self,
        amend: impl FnOnce(&mut OrderDurable<Id>),
        out: &mut OutputsOf<Self>,
    ) {
        self.ledger.persist(out);
        let mut order = self.order.durable();
        amend(&mut order);
        self.ledger.persist_order(order, out);
    }

    /// Broadcast the control messages the order asks for, then deliver
    /// every buffered message the order allows, until neither is left.
    fn deliver_ready(&mut self, now: Duration, out: &mut OutputsOf<Self>) {
        loop {
            let controls = self.order.take_controls(self.ledger.delivered());
            let sent = !controls.is_empty();
            for stamps in controls {
                self.originate(stamps, Vec::new(), now, out);
            }
            if !self.deliver_some(out) && !sent {
                break;
            }
        }
    }

    /// Deliver every buffered message the order allows; true if any.
    fn deliver_some(&mut self, out: &mut OutputsOf<Self>) -> bool {
        let mut any = false;
        loop {
            let next = self.pending.iter().find(|id| {
                let e = &self.buffer[*id];
                self.order
                    .ready(id, &e.stored.stamps, self.ledger.delivered())
            });
            let Some(id) = next.cloned() else { break };
            any = true;
            self.pending.remove(&id);
            let e = &self.buffer[&id];
            let silent = self.order.silent(&e.stored.stamps);
            if self.ledger.deliver(&id, &e.stored, e.held, silent, out) && !silent {
                self.stats.delivered += 1;
            }
            self.order.delivered(&id, &self.buffer[&id].stored.stamps);
            self.collect(&id, out);
        }
        any
    }

    /// Drop `id` from the buffer if it is delivered and every member holds it.
    fn collect(&mut self, id: &MsgId<Id>, out: &mut OutputsOf<Self>) {
        let stable = self
            .buffer
            .get(id)
            .is_some_and(|e| self.group.members().iter().all(|m| e.has.contains(m)))
            && self.is_delivered(id);
        if stable {
            self.buffer.remove(id);
            self.ledger.dropped(id, out);
            self.stats.collected += 1;
        }
    }

    fn arm_retry(&mut self, out: &mut OutputsOf<Self>) {
        if !self.retry_armed && !self.buffer.is_empty() {
            self.retry_armed = true;
            out.set_timer(self.config.retry, RelayTimer::Retry);
        }
    }

    /// Send every buffered message `to` is not known to hold, as re-sends
    /// (only those last sent before `before`).
    fn catch_up(&self, to: &Id, before: Duration, out: &mut OutputsOf<Self>) {
        for (id, e) in &self.buffer {
            if !e.has.contains(to) && e.sent_at <= before {
                if let Some(m) = self.data(id, true) {
                    out.send(to.clone(), m);
                }
            }
        }
    }

    fn on_data(
        &mut self,
        now: Duration,
        from: Id,
        id: MsgId<Id>,
        stored: Stored,
        retry: bool,
        out: &mut OutputsOf<Self>,
    ) {
        if !self.group.contains(&id.origin) || id.seq == 0 {
            return;
        }
        if self.is_delivered(&id) || self.buffer.contains_key(&id) {
            if let Some(e) = self.buffer.get_mut(&id) {
                e.has.insert(from.clone());
            }
            if retry {
                out.send(from, RelayMsg::Ack { id: id.clone() });
            }
            self.collect(&id, out);
            return;
        }
        // First receipt: keep it, acknowledge it, relay it.
        let has: BTreeSet<Id> = [self.group.me().clone(), from.clone(), id.origin.clone()].into();
        out.send(from.clone(), RelayMsg::Ack { id: id.clone() });
        let relay = RelayMsg::Data {
            id: id.clone(),
            stamps: stored.stamps.clone(),
            payload: stored.payload.clone(),
            retry: false,
        };
        for p in self.group.live_peers() {
            if *p != from {
                out.send(p.clone(), relay.clone());
            }
        }
        let sent_at = now;
        self.order.received(&id, &stored.stamps);
        let held = !self
            .order
            .ready(&id, &stored.stamps, self.ledger.delivered());
        self.ledger.kept(&id, &stored, out);
        self.pending.insert(id.clone());
        self.buffer.insert(
            id,
            Entry {
                stored,
                has,
                sent_at,
                held,
            },
        );
        self.deliver_ready(now, out);
        self.arm_retry(out);
    }

    /// Number, keep and send a new message of this member.
    fn originate(
        &mut self,
        stamps: Stamps,
        payload: Vec<u8>,
        now: Duration,
        out: &mut OutputsOf<Self>,
    ) {
        let seq = self.ledger.next_seq();
        let me = self.group.me().clone();
        let id = MsgId {
            origin: me.clone(),
            seq,
        };
        self.order.received(&id, &stamps);
        let stored = Stored { stamps, payload };
        self.ledger.kept(&id, &stored, out);
        self.pending.insert(id.clone());
        self.buffer.insert(
            id.clone(),
            Entry {
                stored,
                has: [me].into(),
                sent_at: now,
                held: false,
            },
        );
        if let Some(m) = self.data(&id, false) {
            for p in self.group.live_peers() {
                out.send(p.clone(), m.clone());
            }
        }
    }
}

impl<Id: MemberId, O: Order<Id>> Protocol for Reliable<Id, O> {
    protocol_types!(RelayMsg<Id>, RelayTimer, BroadcastEvent<Id>);

    fn on_start(&mut self, now: Duration, out: &mut OutputsOf<Self>) {
        // A restarted member delivers what it held back, and re-sends what
        // it holds to everyone (they answer with acknowledgements).
        self.deliver_ready(now, out);
        self.arm_retry(out);
    }

    fn on_message(
        &mut self,
        now: Duration,
        from: Id,
        msg: RelayMsg<Id>,
        out: &mut OutputsOf<Self>,
    ) {
        if !self.group.contains(&from) {
            return;
        }
        match msg {
            RelayMsg::Data {
                id,
                stamps,
                payload,
                retry,
            } => self.on_data(now, from, id, Stored { stamps, payload }, retry, out),
            RelayMsg::Ack { id } => {
                if let Some(e) = self.buffer.get_mut(&id) {
                    e.has.insert(from);
                }
                self.collect(&id, out);
            }
        }
    }

    fn on_timer(&mut self, now: Duration, timer: RelayTimer, out: &mut OutputsOf<Self>) {
        match timer {
            RelayTimer::Retry => {
                self.retry_armed = false;
                let before = now.saturating_sub(self.config.retry);
                let peers: Vec<Id> = self.group.live_peers().cloned().collect();
                for p in &peers {
                    self.catch_up(p, before, out);
                }
                for e in self.buffer.values_mut() {
                    if e.sent_at <= before {
                        e.sent_at = now;
                    }
                }
                self.arm_retry(out);
            }
        }
    }

    fn on_membership(&mut self, _: Duration, change: MemberEvent<Id>, out: &mut OutputsOf<Self>) {
        if let Some(Change::Back(p)) = self.group.apply(change) {
            self.catch_up(&p, Duration::MAX, out);
        }
    }

    fn persist(&mut self, out: &mut OutputsOf<Self>) {
        self.persist_with(|_| {}, out);
    }
}

super::ledger::ledger_snapshot!(impl<Id: MemberId, O: Order<Id>> for Reliable<Id, O>, |s| s.ledger, s.buffer.iter().map(|(id, e)| (id, &e.stored)));

impl<Id: MemberId, O: Order<Id>> crate::testkit::SimProtocol for Reliable<Id, O> {}

impl<Id: MemberId, O: Order<Id>> BroadcastCore for Reliable<Id, O> {
    fn broadcast(&mut self, payload: Vec<u8>, now: Duration, out: &mut OutputsOf<Self>) {
        let stamps = self.order.stamp(self.group.me(), self.ledger.seq() + 1);
        self.originate(stamps, payload, now, out);
        self.deliver_ready(now, out);
        self.arm_retry(out);
    }

    fn stats(&self) -> BroadcastStats {
        BroadcastStats {
            sent: self.ledger.seq(),
            index: self.ledger.count(),
            buffered: self.buffer.len(),
            held_back: self.pending.len(),
            ..self.stats
        }
    }
}
