//! Group communication: broadcast a message to every member of a group,
//! with a reliability and an ordering guarantee.
//!
//! Algorithms, each a sans-IO core in its own module, composed in layers:
//! [`reliable`] is the eager reliable broadcast every other layer runs on
//! (relay on first receipt, re-send until acknowledged, a durable history
//! buffer garbage-collected once a message is stable); [`fifo`] and
//! [`causal`] add an ordering rule on top of it (a hold-back queue released
//! by an [`Order`]), [`total`] a global order set by a sequencer's
//! order messages sent through the same engine (the sequencer chosen by an
//! embedded election, with failover), and [`lamport_total`] a global
//! order by Lamport timestamps and acknowledgements from every member.
//! [`nack`] is a separate
//! engine: NACK-based reliable multicast (one multicast from the origin,
//! receivers detect gaps and NACK them, any holder repairs, stability from
//! periodic sessions), with FIFO delivery per sender. The
//! epidemic (gossip) broadcasts run on their own engine, [`epidemic`]
//! (durable delivered sets and a bounded history buffer, an anti-entropy
//! exchange, seeded random peers): [`anti_entropy`] (push, pull,
//! push-pull), [`rumor`] (rumor mongering, feedback + coin, backed by a
//! slow anti-entropy pass) and [`plumtree`] (epidemic broadcast trees:
//! eager push on a spanning tree, lazy announcements, prune and graft;
//! backed by the same pass: the efficient choice at scale). They cost
//! `O(N)` messages per broadcast instead of `N(N-1)`, deliver in no order,
//! and guarantee agreement only for members that miss a message for less
//! than their history bound (see each module). Every engine keeps its
//! durable state through one [`Ledger`] and is built through [`Engine`].
//! [`BroadcastAlgorithm`] names them for configuration files
//! (`"eager-reliable"`, `"fifo"`, `"causal"`, `"total-sequencer"`,
//! `"total-lamport"`, `"nack"`, `"anti-entropy-push"`, `"anti-entropy-pull"`,
//! `"anti-entropy"`, `"rumor"`, `"plumtree"`) and [`AnyBroadcast`] runs
//! the one a configuration names.
//!
//! ## Vocabulary
//! The command is [`BroadcastCore::broadcast`] (an opaque payload); every
//! member, the sender included, reports [`BroadcastEvent::Delivered`] with
//! the message's [`MsgId`] (origin and the origin's sequence number) and its
//! [`Stamps`] (the vector stamp, for the causal layer).
//!
//! ## Properties (`PROTOCOLS.md`, and what the tests check)
//! * **Integrity**: no duplication (a member delivers a message at most
//!   once, across its restarts too) and no creation (only messages that were
//!   broadcast, by their sender);
//! * **Validity**: a message broadcast by a member is delivered by every
//!   member once failures heal;
//! * **Agreement** (uniform): a message delivered by any member (even one
//!   that crashed right after) is delivered by every member once failures
//!   heal, even when its sender crashed mid-send;
//! * the layer's order: **FIFO** (one sender's messages in send order) or
//!   **causal** (`send(m) -> send(m')` implies `m` before `m'` everywhere)
//!   or **total** (every member delivers in one global order).
//!
//! ## Crash and restart: one identity, durable state
//! A restarted member is the *same* member (crash-recovery model): its
//! sequence number, what it delivered (per origin, a [`SeqSet`]) and its
//! history buffer are durable ([`BroadcastDurable`], written before the
//! messages and events that depend on them leave). So a restarted sender
//! goes on numbering where it stopped (a broadcast whose write a crash lost
//! never left the node and its number is reused), a restarted receiver
//! never delivers twice, and every message a member holds it still holds
//! after a restart, so it can still relay it. The alternative (a new
//! incarnation is a new sender, and a receiver re-joins with no history)
//! needs a state transfer to tell the joiner where to start each sender's
//! sequence; durable state makes that unnecessary, at the cost of a write
//! per received message (batched by the driver's group commit).
//!
//! ## Failure detector
//! Membership reports (`Down`, `Up`) only decide whom to send to now: a
//! member reported down is skipped by re-sends, and caught up when it is
//! reported up again. No guarantee depends on their accuracy: a false
//! suspicion only delays. A member that never comes back keeps every later
//! message in the others' history buffers (nothing is stable without it).
//! [`total`] also feeds them to its election (a new sequencer); its safety
//! does not depend on their accuracy either, its liveness needs a
//! majority. [`lamport_total`] waits for every member: one that never
//! comes back blocks its delivery for good.

pub mod anti_entropy;
pub mod any;
pub mod causal;
pub mod epidemic;
pub mod fifo;
pub mod lamport_total;
pub mod ledger;
pub mod nack;
pub mod plumtree;
pub mod reliable;
pub mod rumor;
mod seqset;
pub mod total;

pub use anti_entropy::{AntiEntropyPull, AntiEntropyPush, AntiEntropyPushPull};
pub use any::{AnyBroadcast, AnyBroadcastMsg};
pub use causal::Causal;
pub use epidemic::{Epidemic, GossipConfig, GossipMsg, GossipStats, GossipTimer};
pub use fifo::Fifo;
pub use lamport_total::LamportTotal;
pub use ledger::{Engine, Ledger, Opened};
pub use nack::{Nack, NackMsg, NackStats, NackTimer};
pub use plumtree::Plumtree;
pub use reliable::{EagerReliable, Order, RelayMsg, RelayTimer, Reliable};
pub use rumor::RumorMongering;
pub use seqset::SeqSet;
pub use total::{Total, TotalMsg, TotalStamp, TotalTimer};

use std::time::Duration;

use serde::{Deserialize, Serialize};
use troupe_framework::clock::VectorClock;
use troupe_framework::sansio::Protocol;

use crate::driver::OutputsOf;
use crate::election::ElectionDurable;
use crate::family::ViewMetric;

pub use crate::family::UnknownAlgorithm;

crate::algorithms! {
    /// The broadcast algorithms, by the names configuration files use.
    pub enum BroadcastAlgorithm {
        /// Eager reliable broadcast, no order: [`EagerReliable`].
        EagerReliable = "eager-reliable",
        /// Reliable FIFO broadcast: [`Fifo`].
        Fifo = "fifo",
        /// Reliable causal broadcast: [`Causal`].
        Causal = "causal",
        /// Reliable total-order broadcast, a sequencer with failover: [`Total`].
        Total = "total-sequencer",
        /// Reliable total-order broadcast, Lamport timestamps and
        /// acknowledgements from every member: [`LamportTotal`].
        LamportTotal = "total-lamport",
        /// NACK-based reliable multicast, FIFO per sender: [`Nack`].
        Nack = "nack",
        /// Anti-entropy, push: [`AntiEntropyPush`].
        AntiEntropyPush = "anti-entropy-push",
        /// Anti-entropy, pull: [`AntiEntropyPull`].
        AntiEntropyPull = "anti-entropy-pull",
        /// Anti-entropy, push-pull: [`AntiEntropyPushPull`].
        AntiEntropyPushPull = "anti-entropy",
        /// Rumor mongering (feedback + coin) backed by anti-entropy:
        /// [`RumorMongering`].
        Rumor = "rumor",
        /// Plumtree, epidemic broadcast trees: [`Plumtree`].
        Plumtree = "plumtree",
    }
}

/// A broadcast message's identity: its origin (the member that broadcast
/// it) and its number among the origin's broadcasts (from 1).
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
pub struct MsgId<Id> {
    /// The member that broadcast it.
    pub origin: Id,
    /// Its sequence number among `origin`'s broadcasts (1, 2, ...).
    pub seq: u64,
}

/// What a message carries for its ordering layer.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Stamps {
    /// Causal layer: the origin's delivered vector when it broadcast the
    /// message, its own entry counting the message (so `vector[origin] ==
    /// seq`). Keyed by [`clock_key`].
    pub vector: Option<VectorClock>,
    /// The data message a control message is about, by origin (by
    /// [`clock_key`]) and sequence number: the message a total-order
    /// sequencer's order message puts in its slot, or the message a
    /// Lamport acknowledgement acknowledges.
    #[serde(default)]
    pub assigns: Option<(String, u64)>,
    /// Total-order layer ([`total`]): set on its control messages only
    /// (order, join and accept messages).
    #[serde(default)]
    pub total: Option<TotalStamp>,
    /// Lamport total order ([`lamport_total`]): the message's Lamport
    /// timestamp (data messages and acknowledgements).
    #[serde(default)]
    pub lamport: Option<u64>,
}

/// The key of member `id` in a [`VectorClock`] (which is keyed by node
/// name): its `Debug` form (`7` for a `u32` id, `"node-a"` with its quotes
/// for a name).
pub fn clock_key<Id: std::fmt::Debug>(id: &Id) -> String {
    format!("{id:?}")
}

/// What a broadcast core tells its local user.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum BroadcastEvent<Id> {
    /// A message is delivered here (once, and only once it is durable that
    /// it was). Across a crash this is *at most once* to the application:
    /// a node that crashes after its delivery is durable but before this
    /// event reached the user never reports it again (its restarted core
    /// knows the message as delivered). An application that must see every
    /// message applies it in its own durable state before acting on it, or
    /// rereads what it missed.
    Delivered {
        /// The member that broadcast it.
        sender: Id,
        /// Its identity.
        id: MsgId<Id>,
        /// What was broadcast.
        #[serde(with = "serde_bytes")]
        payload: Vec<u8>,
        /// Its ordering stamps.
        stamps: Stamps,
        /// Its position among this member's deliveries, from 1, counted
        /// durably across restarts (the n-th message delivered here). With
        /// [`BroadcastConfig::keep_log`] it is also its index in
        /// [`DELIVERY_LOG`].
        index: u64,
        /// It waited in the hold-back queue: it arrived before the layer's
        /// rule allowed it (a cause, an earlier message of its sender, or
        /// its total-order slot was missing then).
        held_back: bool,
    },
}

/// The durable log in which a core configured with
/// [`BroadcastConfig::keep_log`] records each delivery ([`LoggedDelivery`]),
/// at its [`BroadcastEvent::Delivered::index`], in the same durable write
/// as the delivery itself: the log holds every message delivered here,
/// exactly once, across crashes.
pub const DELIVERY_LOG: &str = "delivered";

/// A record of [`DELIVERY_LOG`]: one delivery, as reported.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct LoggedDelivery<Id> {
    /// Its identity (its origin is the sender).
    pub id: MsgId<Id>,
    /// Its ordering stamps.
    pub stamps: Stamps,
    /// What was broadcast.
    #[serde(with = "serde_bytes")]
    pub payload: Vec<u8>,
    /// It waited in the hold-back queue.
    pub held_back: bool,
}

/// Settings shared by the broadcast cores.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct BroadcastConfig {
    /// How often a message is sent again to the live members not known to
    /// hold it. For [`Nack`], the base of its delays (session period
    /// `2 * retry`, NACK and repair delays in `[retry/5, retry]`).
    pub retry: Duration,
    /// Record every delivery in the durable [`DELIVERY_LOG`] (for
    /// applications that read back what was delivered, such as a chat's
    /// history). The log grows by one record per delivery and is never
    /// trimmed by the core.
    #[serde(default)]
    pub keep_log: bool,
    /// Settings of the epidemic broadcasts ([`anti_entropy`], [`rumor`],
    /// [`plumtree`]); the others ignore them.
    #[serde(default)]
    pub gossip: GossipConfig,
    /// Flow control: the most messages of this member that may be in
    /// flight (not yet known to be held by every live member) before the
    /// typed API's `broadcast` waits for some to arrive; 0 for no limit. A
    /// sender that outruns its receivers is slowed down to their pace
    /// instead of filling the transport's queues, whose overflow only the
    /// re-send timers would recover. Members reported down do not count:
    /// a crashed member does not stop the group. The eager engines (eager
    /// reliable, FIFO, causal, both total orders) and NACK track it (NACK
    /// from its members' session reports, which it then sends early under
    /// load); the epidemic engines do not ([`BroadcastStats::in_flight`]
    /// is 0).
    #[serde(default = "default_window")]
    pub window: usize,
    /// A deliberately broken total order by Lamport timestamps that
    /// delivers the head of its queue once it heard a later message from
    /// *one* other member instead of from every one (total order is then
    /// lost). Only for the tests that prove the model checker catches it;
    /// never set it otherwise.
    #[doc(hidden)]
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub unsafe_lamport_one_ack: bool,
}

fn default_window() -> usize {
    256
}

impl Default for BroadcastConfig {
    /// Re-send every 50 ms, no delivery log, [`GossipConfig::default`], a
    /// window of 256 messages in flight.
    fn default() -> Self {
        Self {
            retry: Duration::from_millis(50),
            keep_log: false,
            gossip: GossipConfig::default(),
            window: default_window(),
            unsafe_lamport_one_ack: false,
        }
    }
}

/// A message kept in a history buffer: its stamps and payload.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Stored {
    /// Its ordering stamps.
    pub stamps: Stamps,
    /// What was broadcast.
    #[serde(with = "serde_bytes")]
    pub payload: Vec<u8>,
}

/// What a broadcast core makes durable (see the module docs), saved whole
/// after every input that changed it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct BroadcastDurable<Id> {
    /// How many messages this member broadcast.
    pub seq: u64,
    /// Per origin, the sequence numbers delivered here.
    pub delivered: Vec<(Id, SeqSet)>,
    /// The history buffer: messages received (delivered or held back) and
    /// not yet known to be stable.
    pub buffer: Vec<(MsgId<Id>, Stored)>,
    /// How many messages were delivered to the user here (control messages
    /// of a layer not counted): the last [`BroadcastEvent::Delivered::index`].
    #[serde(default)]
    pub delivered_count: u64,
    /// What the ordering layer keeps besides the delivered sets and the
    /// buffer (nothing for FIFO and causal).
    #[serde(default = "OrderDurable::default")]
    pub order: OrderDurable<Id>,
}

impl<Id> Default for BroadcastDurable<Id> {
    fn default() -> Self {
        Self {
            seq: 0,
            delivered: Vec::new(),
            buffer: Vec::new(),
            delivered_count: 0,
            order: OrderDurable::default(),
        }
    }
}

/// The durable state of an ordering layer (see [`Order::durable`]), saved
/// with [`BroadcastDurable`] in the same write.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct OrderDurable<Id> {
    /// [`total`]: the next slot of the global order to deliver here.
    #[serde(default)]
    pub slot: u64,
    /// [`total`]: the newest epoch of which an order message was seen, and
    /// the last slot its sequencer re-proposed.
    #[serde(default)]
    pub epoch: (u64, u64),
    /// [`total`]: the embedded election's durable state (its term is this
    /// member's promise).
    #[serde(default = "Option::default")]
    pub election: Option<ElectionDurable<Id>>,
    /// [`lamport_total`]: this member's Lamport clock.
    #[serde(default)]
    pub clock: u64,
    /// [`lamport_total`]: per member, the largest timestamp of the
    /// contiguous prefix of its messages received here.
    #[serde(default = "Vec::new")]
    pub heard: Vec<(Id, u64)>,
}

impl<Id> Default for OrderDurable<Id> {
    fn default() -> Self {
        Self {
            slot: 0,
            epoch: (0, 0),
            election: None,
            clock: 0,
            heard: Vec::new(),
        }
    }
}

/// Counters a broadcast core keeps (this life only).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct BroadcastStats {
    /// Messages this member broadcast (across restarts): its last
    /// broadcast's sequence number.
    pub sent: u64,
    /// Messages delivered here.
    pub delivered: u64,
    /// Messages in the history buffer now.
    pub buffered: usize,
    /// Messages received and held back (not deliverable yet) now.
    pub held_back: usize,
    /// Messages dropped from the history buffer once stable.
    pub collected: u64,
    /// The index of the last delivery reported here (across restarts,
    /// from the durable ledger): how many messages this member has
    /// delivered in all its lives.
    pub index: u64,
    /// This member's own messages not yet known to be held by every live
    /// member: what [`BroadcastConfig::window`] bounds. Zero for the
    /// epidemic engines, which do not track it.
    #[serde(default)]
    pub in_flight: usize,
}

/// The commands and queries every broadcast core offers.
pub trait BroadcastCore: Protocol<Event = BroadcastEvent<<Self as Protocol>::Id>> {
    /// Broadcast `payload` to the group (this member delivers it too).
    fn broadcast(&mut self, payload: Vec<u8>, now: Duration, out: &mut OutputsOf<Self>);
    /// Counters and queue sizes.
    fn stats(&self) -> BroadcastStats;
}

/// What a broadcast instance's handles watch: how many messages this member
/// delivered, and how many it holds back.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct BroadcastView {
    /// Messages delivered in this life.
    pub delivered: u64,
    /// Messages held back now.
    pub held_back: usize,
    /// This member's own messages not yet held by every live member
    /// ([`BroadcastStats::in_flight`]).
    #[serde(default)]
    pub in_flight: usize,
}

crate::family::family! {
    /// The broadcast family: actor `broadcast.<instance>` on every member.
    pub enum BroadcastFamily {
        actor = |instance| format!("broadcast.{instance}");
        core AnyBroadcast(BroadcastAlgorithm, BroadcastConfig);
        view BroadcastView = |core| {
            let s = core.stats();
            BroadcastView {
                delivered: s.delivered,
                held_back: s.held_back,
                in_flight: s.in_flight,
            }
        };
        trace = |protocol, event| Some(delivered_trace(protocol, event));
        view_metrics = |view, out| {
            out.push(ViewMetric::counter(
                "troupe_broadcast_delivered_total",
                "Messages delivered here (in this life of the instance).",
                view.delivered as f64,
            ));
            out.push(ViewMetric::gauge(
                "troupe_broadcast_held_back",
                "Messages received and held back (waiting for their order) now.",
                view.held_back as f64,
            ));
        };
    }
}

/// The trace line of a delivery ([`TraceEvent::Delivered`]): node names
/// without the quotes of [`clock_key`].
///
/// [`TraceEvent::Delivered`]: troupe_framework::trace::TraceEvent::Delivered
pub fn delivered_trace(
    protocol: &str,
    event: &BroadcastEvent<String>,
) -> troupe_framework::trace::TraceEvent {
    let BroadcastEvent::Delivered {
        id,
        stamps,
        index,
        held_back,
        ..
    } = event;
    let unquote = |k: &str| -> String {
        k.strip_prefix('"')
            .and_then(|k| k.strip_suffix('"'))
            .map(str::to_string)
            .unwrap_or_else(|| k.to_string())
    };
    troupe_framework::trace::TraceEvent::Delivered {
        protocol: protocol.to_string(),
        origin: id.origin.clone(),
        seq: id.seq,
        index: *index,
        vector: stamps
            .vector
            .as_ref()
            .map(|v| v.iter().map(|(k, n)| (unquote(k), n)).collect()),
        held_back: *held_back,
    }
}

/// Renaming members in the broadcast types, for the model checker's
/// symmetry reduction ([`crate::testkit::model::Symmetry`]): each returns
/// the value as it is with every member `m` called `r.to(m)`, or `None`
/// for what it cannot rename (the total orders' stamps and durable
/// state, which no symmetric model uses).
mod rename {
    use super::{MsgId, OrderDurable, Stamps, Stored};
    use crate::testkit::model::Renaming;
    use crate::MemberId;

    impl<Id: MemberId> MsgId<Id> {
        /// Renamed (see the module docs).
        pub fn renamed(&self, r: &Renaming<'_, Id>) -> Self {
            MsgId {
                origin: r.id(&self.origin),
                seq: self.seq,
            }
        }
    }

    impl Stamps {
        /// Renamed: the vector clock's entries and the assigned message's
        /// origin (keyed by [`super::clock_key`]). `None` with a total-order
        /// stamp.
        pub fn renamed<Id: MemberId>(&self, r: &Renaming<'_, Id>) -> Option<Self> {
            if self.total.is_some() {
                return None;
            }
            Some(Stamps {
                vector: self
                    .vector
                    .as_ref()
                    .map(|v| v.iter().map(|(k, c)| (r.key(k), c)).collect()),
                assigns: self.assigns.as_ref().map(|(k, seq)| (r.key(k), *seq)),
                total: None,
                lamport: self.lamport,
            })
        }
    }

    impl Stored {
        /// Renamed, its payload by `payload` (the data a model ties to
        /// members).
        pub fn renamed<Id: MemberId>(
            &self,
            r: &Renaming<'_, Id>,
            payload: &dyn Fn(&[u8]) -> Vec<u8>,
        ) -> Option<Self> {
            Some(Stored {
                stamps: self.stamps.renamed(r)?,
                payload: payload(&self.payload),
            })
        }
    }

    impl<Id: MemberId> OrderDurable<Id> {
        /// Renamed; `None` with an embedded election's state (the
        /// sequencer's).
        pub fn renamed(&self, r: &Renaming<'_, Id>) -> Option<Self> {
            if self.election.is_some() {
                return None;
            }
            let mut heard: Vec<(Id, u64)> = self.heard.iter().map(|(m, t)| (r.id(m), *t)).collect();
            heard.sort();
            Some(OrderDurable {
                slot: self.slot,
                epoch: self.epoch,
                election: None,
                clock: self.clock,
                heard,
            })
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn algorithm_names_round_trip() {
        crate::family::assert_names_round_trip::<BroadcastAlgorithm>("gossip");
    }
}
