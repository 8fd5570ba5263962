//! [`Ledger`]: what every broadcast core keeps durable, written
//! incrementally, and how it reports a delivery.
//!
//! A broadcast member's durable state ([`BroadcastDurable`]) is its own
//! sequence number, what it delivered per origin, how many deliveries it
//! reported, and its history buffer. Saved whole after every input (a
//! [`troupe_framework::sansio::Snapshot`]) it costs O(buffer) per input,
//! which under load is most of the CPU. The ledger writes each part under
//! its own key, only when it changes:
//!
//! | key | value | written |
//! |---|---|---|
//! | `meta` | `(seq, delivered_count)` | at the end of an input that changed them |
//! | `d/<origin>` | `(origin, SeqSet)` | at the end of an input that delivered a message of `origin` |
//! | `b/<origin>/<seq>` | `(MsgId, Stored)` | when the message enters the buffer ([`Ledger::kept`]), deleted when it leaves ([`Ledger::dropped`]) |
//! | `order` | the ordering layer's [`OrderDurable`] (total order) | at the end of an input that changed it ([`Ledger::persist_order`]) |
//!
//! plus, with [`super::BroadcastConfig::keep_log`], one record of
//! [`super::DELIVERY_LOG`] per delivery. All of an input's writes are made
//! durable together before its messages and events leave (the driver's
//! rule), so the parts never disagree. [`Ledger::recover`] rebuilds a
//! [`BroadcastDurable`] from them.
//!
//! [`Engine`] is how every broadcast core is built: one constructor opens
//! the group, the ledger and the buffered messages from what a previous
//! life left, and hands them to the core's [`Engine::open`].

use std::collections::{BTreeMap, BTreeSet};

use troupe_framework::sansio::{DurableError, Outputs, Recovered};

use super::{
    clock_key, BroadcastConfig, BroadcastDurable, BroadcastEvent, LoggedDelivery, MsgId,
    OrderDurable, SeqSet, Stored, DELIVERY_LOG,
};
use crate::group::Group;
use crate::MemberId;

const META: &str = "meta";
const ORDER: &str = "order";

fn delivered_key<Id: std::fmt::Debug>(origin: &Id) -> String {
    format!("d/{}", clock_key(origin))
}

fn buffer_key<Id: std::fmt::Debug>(id: &MsgId<Id>) -> String {
    format!("b/{}/{:020}", clock_key(&id.origin), id.seq)
}

/// A broadcast member's numbering and deliveries, and the durable writes
/// that keep them (see the module docs).
#[derive(Debug, Clone)]
pub struct Ledger<Id> {
    seq: u64,
    delivered: BTreeMap<Id, SeqSet>,
    count: u64,
    keep_log: bool,
    meta_dirty: bool,
    origins_dirty: BTreeSet<Id>,
    /// The ordering layer's durable state as last saved.
    order: OrderDurable<Id>,
}

impl<Id: MemberId> Ledger<Id> {
    /// The ledger as it is with every member `m` called `r.to(m)`, for the
    /// model checker's symmetry reduction; `None` if its order layer's
    /// durable state cannot be renamed ([`OrderDurable::renamed`]).
    pub fn renamed(&self, r: &crate::testkit::model::Renaming<'_, Id>) -> Option<Self> {
        Some(Self {
            seq: self.seq,
            delivered: self
                .delivered
                .iter()
                .map(|(o, s)| (r.id(o), s.clone()))
                .collect(),
            count: self.count,
            keep_log: self.keep_log,
            meta_dirty: self.meta_dirty,
            origins_dirty: self.origins_dirty.iter().map(|o| r.id(o)).collect(),
            order: self.order.renamed(r)?,
        })
    }

    /// The ledger of a member resumed from `durable` (default: a first
    /// start), keeping only the origins in `members`.
    pub fn new(durable: &BroadcastDurable<Id>, members: &[Id], config: &BroadcastConfig) -> Self {
        Self {
            seq: durable.seq,
            delivered: durable
                .delivered
                .iter()
                .filter(|(o, _)| members.contains(o))
                .cloned()
                .collect(),
            count: durable.delivered_count,
            keep_log: config.keep_log,
            meta_dirty: false,
            origins_dirty: BTreeSet::new(),
            order: durable.order.clone(),
        }
    }

    /// This member's last sequence number.
    pub fn seq(&self) -> u64 {
        self.seq
    }

    /// Number this member's next broadcast.
    pub fn next_seq(&mut self) -> u64 {
        self.seq += 1;
        self.meta_dirty = true;
        self.seq
    }

    /// Per origin, the sequence numbers delivered here.
    pub fn delivered(&self) -> &BTreeMap<Id, SeqSet> {
        &self.delivered
    }

    /// The delivered prefix of `origin`.
    pub fn prefix(&self, origin: &Id) -> u64 {
        self.delivered.get(origin).map_or(0, SeqSet::prefix)
    }

    /// True if `id` was delivered here.
    pub fn is_delivered(&self, id: &MsgId<Id>) -> bool {
        self.delivered
            .get(&id.origin)
            .is_some_and(|s| s.contains(id.seq))
    }

    /// How many deliveries were reported here (the last index).
    pub fn count(&self) -> u64 {
        self.count
    }

    /// Mark `id` delivered; unless `silent` (a layer's control message),
    /// number it, log it (with `keep_log`) and report it, marked
    /// `held_back` if it waited. Returns false if it was delivered already
    /// (nothing is done).
    pub fn deliver<M, T>(
        &mut self,
        id: &MsgId<Id>,
        stored: &Stored,
        held_back: bool,
        silent: bool,
        out: &mut Outputs<Id, M, T, BroadcastEvent<Id>>,
    ) -> bool {
        if !self
            .delivered
            .entry(id.origin.clone())
            .or_default()
            .insert(id.seq)
        {
            return false;
        }
        self.origins_dirty.insert(id.origin.clone());
        if silent {
            return true;
        }
        self.count += 1;
        self.meta_dirty = true;
        let index = self.count;
        if self.keep_log {
            let record = LoggedDelivery {
                id: id.clone(),
                stamps: stored.stamps.clone(),
                payload: stored.payload.clone(),
                held_back,
            };
            out.append(DELIVERY_LOG, index, &[record]);
        }
        out.emit(BroadcastEvent::Delivered {
            sender: id.origin.clone(),
            id: id.clone(),
            payload: stored.payload.clone(),
            stamps: stored.stamps.clone(),
            index,
            held_back,
        });
        true
    }

    /// `id` entered the history buffer: keep it durably.
    pub fn kept<M, T, E>(&self, id: &MsgId<Id>, stored: &Stored, out: &mut Outputs<Id, M, T, E>) {
        out.put(&buffer_key(id), &(id, stored));
    }

    /// `id` left the history buffer.
    pub fn dropped<M, T, E>(&self, id: &MsgId<Id>, out: &mut Outputs<Id, M, T, E>) {
        out.delete(&buffer_key(id));
    }

    /// Write what changed since the last call (call from
    /// [`troupe_framework::sansio::Protocol::persist`]).
    pub fn persist<M, T, E>(&mut self, out: &mut Outputs<Id, M, T, E>) {
        if std::mem::take(&mut self.meta_dirty) {
            out.put(META, &(self.seq, self.count));
        }
        for o in std::mem::take(&mut self.origins_dirty) {
            if let Some(s) = self.delivered.get(&o) {
                out.put(&delivered_key(&o), &(&o, s));
            }
        }
    }

    /// Save the ordering layer's durable state `order` under `order` if it
    /// changed (call from `persist`, with [`Ledger::persist`]).
    pub fn persist_order<M, T, E>(
        &mut self,
        order: OrderDurable<Id>,
        out: &mut Outputs<Id, M, T, E>,
    ) {
        if order != self.order {
            out.put(ORDER, &order);
            self.order = order;
        }
    }

    /// The whole durable state, with `buffer` the history buffer.
    pub fn durable<'a>(
        &self,
        buffer: impl Iterator<Item = (&'a MsgId<Id>, &'a Stored)>,
    ) -> BroadcastDurable<Id>
    where
        Id: 'a,
    {
        BroadcastDurable {
            seq: self.seq,
            delivered: self
                .delivered
                .iter()
                .map(|(k, v)| (k.clone(), v.clone()))
                .collect(),
            buffer: buffer.map(|(id, s)| (id.clone(), s.clone())).collect(),
            delivered_count: self.count,
            order: self.order.clone(),
        }
    }

    /// The state a previous life made durable (`None` on a first start).
    pub fn recover(r: &Recovered) -> Result<Option<BroadcastDurable<Id>>, DurableError> {
        // `meta` is written whenever the sequence number or the count
        // leaves 0: missing, both are 0.
        let meta = r.get_as::<(u64, u64)>(META)?;
        if meta.is_none() && r.keys().next().is_none() {
            return Ok(None);
        }
        let (seq, delivered_count) = meta.unwrap_or_default();
        let mut state = BroadcastDurable {
            seq,
            delivered_count,
            order: r.get_as(ORDER)?.unwrap_or_default(),
            ..BroadcastDurable::default()
        };
        for key in r.keys() {
            if key.starts_with("d/") {
                if let Some(entry) = r.get_as::<(Id, SeqSet)>(key)? {
                    state.delivered.push(entry);
                }
            } else if key.starts_with("b/") {
                if let Some(entry) = r.get_as::<(MsgId<Id>, Stored)>(key)? {
                    state.buffer.push(entry);
                }
            }
        }
        Ok(Some(state))
    }
}

/// What a broadcast core starts from (see [`Engine`]).
#[derive(Debug)]
pub struct Opened<Id> {
    /// This member and the group.
    pub group: Group<Id>,
    /// Its numbering and deliveries.
    pub ledger: Ledger<Id>,
    /// The messages its history buffer held.
    pub buffer: Vec<(MsgId<Id>, Stored)>,
    /// The settings.
    pub config: BroadcastConfig,
    /// True when rebuilt from a previous life's durable state.
    pub resumed: bool,
    /// What the ordering layer kept (see `Order::durable`).
    pub order: OrderDurable<Id>,
}

/// A broadcast core, built from what it [`Opened`] with.
pub trait Engine<Id: MemberId>: Sized {
    /// The core for what it opened with.
    fn open(opened: Opened<Id>) -> Self;

    /// A core for `me` among `members`, resumed from `state` (what a
    /// previous life made durable) if given.
    fn new(
        me: Id,
        members: impl IntoIterator<Item = Id>,
        config: BroadcastConfig,
        state: Option<BroadcastDurable<Id>>,
    ) -> Self {
        let group = Group::new(me, members);
        let resumed = state.is_some();
        let durable = state.unwrap_or_default();
        let ledger = Ledger::new(&durable, group.members(), &config);
        Self::open(Opened {
            group,
            ledger,
            buffer: durable.buffer,
            config,
            resumed,
            order: durable.order,
        })
    }
}

/// Implements `SnapshotCore` for a broadcast engine: its state is its
/// ledger's (`$ledger`) with the history buffer `$buffer` yields (an
/// iterator of `(&MsgId, &Stored)`), recovered through [`Ledger::recover`].
macro_rules! ledger_snapshot {
    (impl<$($gen:ident $(: $bound:path)?),*> for $ty:ty, |$s:ident| $ledger:expr, $buffer:expr) => {
        impl<$($gen $(: $bound)?),*> ::troupe_framework::sansio::SnapshotCore for $ty {
            type State = $crate::broadcast::BroadcastDurable<Id>;
            fn state(&self) -> Self::State {
                let $s = self;
                $ledger.durable($buffer)
            }
            fn recover(
                recovered: &::troupe_framework::sansio::Recovered,
            ) -> Result<Option<Self::State>, ::troupe_framework::sansio::DurableError> {
                $crate::broadcast::Ledger::recover(recovered)
            }
        }
    };
}
pub(crate) use ledger_snapshot;
