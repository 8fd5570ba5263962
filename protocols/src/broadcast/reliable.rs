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
    /// True if an origin's messages can only become deliverable in their
    /// sequence order (FIFO and causal order): the engine then tests only
    /// each origin's lowest held-back message, instead of every held-back
    /// one, so a long hold-back queue costs per origin, not per message.
    /// Default: false (every held-back message is tested).
    fn in_sequence(&self) -> bool {
        false
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
    /// This member's own message, not yet held by every live member
    /// (counted in [`BroadcastStats::in_flight`]).
    in_flight: bool,
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
    /// This member's own messages not yet held by every live member.
    in_flight: usize,
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
                in_flight: false,
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
        let mut engine = Self {
            order,
            group,
            config: o.config,
            ledger,
            buffer,
            pending,
            retry_armed: false,
            stats: BroadcastStats::default(),
            in_flight: 0,
        };
        engine.count_in_flight();
        engine
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
                in_flight: e.in_flight,
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
            in_flight: self.in_flight,
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
    /// member's return (failure detector), the collection of stable
    /// messages and the count of own messages in flight (read by the typed
    /// API's flow control, outside the core) read; a collection happens in either order (it is tried
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
        if self.order.in_sequence() {
            return self.deliver_in_sequence(out);
        }
        let mut any = false;
        loop {
            let next = self.pending.iter().find(|id| {
                let e = &self.buffer[*id];
                self.order
                    .ready(id, &e.stored.stamps, self.ledger.delivered())
            });
            let Some(id) = next.cloned() else { break };
            any = true;
            self.deliver_one(id, out);
        }
        any
    }

    /// [`Reliable::deliver_some`] for an order whose messages become
    /// deliverable in each origin's sequence ([`Order::in_sequence`]):
    /// passes over the origins, testing each one's lowest held-back
    /// message, until a pass delivers nothing (a delivery of one origin may
    /// free another's: causal order).
    fn deliver_in_sequence(&mut self, out: &mut OutputsOf<Self>) -> bool {
        let mut any = false;
        loop {
            let mut progressed = false;
            let mut next = self.pending.first().cloned();
            while let Some(id) = next {
                let e = &self.buffer[&id];
                if self
                    .order
                    .ready(&id, &e.stored.stamps, self.ledger.delivered())
                {
                    progressed = true;
                    self.deliver_one(id.clone(), out);
                    // The same origin's next one, if held back.
                    next = self
                        .pending
                        .range(&id..)
                        .next()
                        .filter(|n| n.origin == id.origin)
                        .cloned();
                    if next.is_none() {
                        next = self.after_origin(&id.origin);
                    }
                } else {
                    next = self.after_origin(&id.origin);
                }
            }
            if !progressed {
                return any;
            }
            any = true;
        }
    }

    /// The lowest held-back message of the first origin after `origin`.
    fn after_origin(&self, origin: &Id) -> Option<MsgId<Id>> {
        let past = MsgId {
            origin: origin.clone(),
            seq: u64::MAX,
        };
        self.pending
            .range((std::ops::Bound::Excluded(&past), std::ops::Bound::Unbounded))
            .next()
            .cloned()
    }

    /// Deliver held-back message `id`, which the order allows now.
    fn deliver_one(&mut self, id: MsgId<Id>, out: &mut OutputsOf<Self>) {
        self.pending.remove(&id);
        let e = &self.buffer[&id];
        let silent = self.order.silent(&e.stored.stamps);
        if self.ledger.deliver(&id, &e.stored, e.held, silent, out) && !silent {
            self.stats.delivered += 1;
        }
        self.order.delivered(&id, &self.buffer[&id].stored.stamps);
        self.collect(&id, out);
    }

    /// Mark every own message as in flight or not, from who holds it and
    /// who is live now (on opening, and after a membership change).
    fn count_in_flight(&mut self) {
        let me = self.group.me().clone();
        let (first, last) = (
            MsgId {
                origin: me.clone(),
                seq: 0,
            },
            MsgId {
                origin: me,
                seq: u64::MAX,
            },
        );
        let mut n = 0;
        for e in self.buffer.range_mut(first..=last).map(|(_, e)| e) {
            e.in_flight = !self.group.live_peers().all(|p| e.has.contains(p));
            n += usize::from(e.in_flight);
        }
        self.in_flight = n;
    }

    /// Drop `id` from the buffer if it is delivered and every member holds
    /// it; first, if it is an own message in flight that every live member
    /// now holds, count it out of flight.
    fn collect(&mut self, id: &MsgId<Id>, out: &mut OutputsOf<Self>) {
        if let Some(e) = self.buffer.get_mut(id) {
            if e.in_flight && self.group.live_peers().all(|p| e.has.contains(p)) {
                e.in_flight = false;
                self.in_flight -= 1;
            }
        }
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

    /// Send the buffered messages `to` is not known to hold, as re-sends
    /// (a member reported up again): at most [`Reliable::resend_cap`] of
    /// them, the oldest; the re-send passes send the rest.
    fn catch_up(&self, to: &Id, out: &mut OutputsOf<Self>) {
        let missing = self.buffer.iter().filter(|(_, e)| !e.has.contains(to));
        for (id, _) in missing.take(self.resend_cap()) {
            if let Some(m) = self.data(id, true) {
                out.send(to.clone(), m);
            }
        }
    }

    /// The re-send pass: every buffered message last sent `retry` ago or
    /// more goes again to the live members not known to hold it, at most
    /// [`Reliable::resend_cap`] messages to each member per pass, oldest
    /// (lowest numbers) first: the rest wait for the next pass. Without the
    /// cap, a buffer that grew while a member was slow would be re-sent
    /// whole every `retry`, and the re-sends would keep the member slow
    /// (a congestion collapse).
    fn resend_due(&mut self, now: Duration, out: &mut OutputsOf<Self>) {
        let before = now.saturating_sub(self.config.retry);
        let cap = self.resend_cap();
        let peers: Vec<Id> = self.group.live_peers().cloned().collect();
        let mut left = vec![cap; peers.len()];
        let mut resent = Vec::new();
        for (id, e) in &self.buffer {
            if e.sent_at > before {
                continue;
            }
            let mut sent = false;
            for (p, left) in peers.iter().zip(left.iter_mut()) {
                if *left == 0 || e.has.contains(p) {
                    continue;
                }
                *left -= 1;
                sent = true;
                if let Some(m) = self.data(id, true) {
                    out.send(p.clone(), m);
                }
            }
            if sent {
                resent.push(id.clone());
            }
            if left.iter().all(|l| *l == 0) {
                break;
            }
        }
        for id in resent {
            if let Some(e) = self.buffer.get_mut(&id) {
                e.sent_at = now;
            }
        }
    }

    /// The most messages one re-send pass sends to one member: the flow
    /// control window ([`BroadcastConfig::window`]), at least 64; no cap
    /// without a window.
    fn resend_cap(&self) -> usize {
        match self.config.window {
            0 => usize::MAX,
            w => w.max(64),
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
                in_flight: false,
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
        let in_flight = self.group.live_peers().next().is_some();
        self.in_flight += usize::from(in_flight);
        self.buffer.insert(
            id.clone(),
            Entry {
                stored,
                has: [me].into(),
                sent_at: now,
                held: false,
                in_flight,
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
                self.resend_due(now, out);
                self.arm_retry(out);
            }
        }
    }

    fn on_membership(&mut self, _: Duration, change: MemberEvent<Id>, out: &mut OutputsOf<Self>) {
        let change = self.group.apply(change);
        self.count_in_flight();
        if let Some(Change::Back(p)) = change {
            self.catch_up(&p, out);
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
            in_flight: self.in_flight,
            ..self.stats
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::broadcast::{Engine, Fifo};
    use troupe_framework::membership::MemberStatus;

    type Core = Fifo<u32>;

    fn core(me: u32, window: usize) -> Core {
        let config = BroadcastConfig {
            window,
            ..BroadcastConfig::default()
        };
        Fifo::new(me, [1, 2, 3], config, None)
    }

    fn out() -> OutputsOf<Core> {
        OutputsOf::<Core>::new()
    }

    fn report(c: &mut Core, member: u32, status: MemberStatus) {
        let ev = MemberEvent {
            member,
            status,
            at: Duration::ZERO,
        };
        c.on_membership(Duration::ZERO, ev, &mut out());
    }

    fn ack(c: &mut Core, from: u32, seq: u64) {
        let id = MsgId { origin: 1, seq };
        c.on_message(Duration::ZERO, from, RelayMsg::Ack { id }, &mut out());
    }

    /// The sequence numbers of the data messages to `to` in `o`.
    fn data_to(o: &OutputsOf<Core>, to: u32) -> Vec<u64> {
        o.sends
            .iter()
            .filter_map(|(d, m)| match m {
                RelayMsg::Data { id, .. } if *d == to => Some(id.seq),
                _ => None,
            })
            .collect()
    }

    #[test]
    fn own_messages_are_in_flight_until_every_live_member_holds_them() {
        let mut a = core(1, 16);
        for i in 0..5u8 {
            a.broadcast(vec![i], Duration::ZERO, &mut out());
        }
        assert_eq!(a.stats().in_flight, 5);
        for seq in 1..=5 {
            ack(&mut a, 2, seq);
        }
        assert_eq!(a.stats().in_flight, 5, "member 3 holds none of them");
        ack(&mut a, 3, 1);
        assert_eq!(a.stats().in_flight, 4);
        // A member reported down does not hold the others back...
        report(&mut a, 3, MemberStatus::Down);
        assert_eq!(a.stats().in_flight, 0);
        // ...until it is back: then what it lacks is in flight again.
        report(&mut a, 3, MemberStatus::Up);
        assert_eq!(a.stats().in_flight, 4);
        for seq in 2..=5 {
            ack(&mut a, 3, seq);
        }
        assert_eq!(a.stats().in_flight, 0);
        assert_eq!(a.stats().buffered, 0, "held by all and delivered: stable");
        // Restarted from its durable state, a sender counts what is in
        // flight again (its buffer, nobody known to hold it).
        a.broadcast(vec![9], Duration::ZERO, &mut out());
        let state = troupe_framework::sansio::SnapshotCore::state(&a);
        let b = Fifo::new(1, [1, 2, 3], a.config.clone(), Some(state));
        assert_eq!(b.stats().in_flight, 1);
    }

    #[test]
    fn a_resend_pass_sends_each_member_at_most_the_window_oldest_first() {
        let mut a = core(1, 64);
        for i in 0..150u32 {
            a.broadcast(i.to_le_bytes().to_vec(), Duration::ZERO, &mut out());
        }
        for seq in 1..=10 {
            ack(&mut a, 2, seq);
        }
        let retry = a.config.retry;
        let mut o = out();
        a.on_timer(retry, RelayTimer::Retry, &mut o);
        assert_eq!(data_to(&o, 2), (11..=74).collect::<Vec<_>>());
        assert_eq!(data_to(&o, 3), (1..=64).collect::<Vec<_>>());
        // A pass before those are due again goes on with the rest (a
        // message re-sent to one member waits a `retry` for the others).
        let mut o = out();
        a.on_timer(retry + retry / 2, RelayTimer::Retry, &mut o);
        assert_eq!(data_to(&o, 2), (75..=138).collect::<Vec<_>>());
        assert_eq!(data_to(&o, 3), (75..=138).collect::<Vec<_>>());
        // A member back up is caught up on what it lacks, capped the same
        // way (the passes send the rest).
        report(&mut a, 3, MemberStatus::Down);
        let mut o = out();
        let ev = MemberEvent {
            member: 3,
            status: MemberStatus::Up,
            at: Duration::ZERO,
        };
        a.on_membership(Duration::ZERO, ev, &mut o);
        assert_eq!(data_to(&o, 3), (1..=64).collect::<Vec<_>>());
        // Without a window, a pass re-sends everything due.
        let mut u = core(1, 0);
        for i in 0..150u32 {
            u.broadcast(i.to_le_bytes().to_vec(), Duration::ZERO, &mut out());
        }
        let mut o = out();
        u.on_timer(retry, RelayTimer::Retry, &mut o);
        assert_eq!(data_to(&o, 2).len(), 150);
    }

    #[test]
    fn a_long_held_back_run_is_delivered_in_sequence() {
        // Member 2 hears member 1's 200 messages in reverse, and member 3's
        // 50 in order in between: each origin in sequence, all delivered.
        let mut a = core(1, 0);
        let mut c = core(3, 0);
        let mut copies = Vec::new();
        for i in 0..200u32 {
            let mut o = out();
            a.broadcast(i.to_le_bytes().to_vec(), Duration::ZERO, &mut o);
            copies.push(o.sends.into_iter().find(|(d, _)| *d == 2).unwrap().1);
        }
        let mut b = core(2, 0);
        let mut order = Vec::new();
        for (k, m) in copies.into_iter().rev().enumerate() {
            let mut o = out();
            b.on_message(Duration::ZERO, 1, m, &mut o);
            if k % 4 == 0 {
                let mut oc = out();
                c.broadcast(vec![k as u8], Duration::ZERO, &mut oc);
                let m = oc.sends.into_iter().find(|(d, _)| *d == 2).unwrap().1;
                b.on_message(Duration::ZERO, 3, m, &mut o);
            }
            order.extend(
                o.events
                    .into_iter()
                    .map(|BroadcastEvent::Delivered { id, .. }| (id.origin, id.seq)),
            );
        }
        let of = |origin: u32| -> Vec<u64> {
            order
                .iter()
                .filter(|(o, _)| *o == origin)
                .map(|(_, s)| *s)
                .collect()
        };
        assert_eq!(of(1), (1..=200).collect::<Vec<_>>());
        assert_eq!(of(3), (1..=50).collect::<Vec<_>>());
        assert_eq!(b.stats().held_back, 0);
    }
}
