//! Group communication: a typed API over the broadcast family.
//!
//! ```ignore
//! // On every member, with the same name, algorithm and members:
//! let chat: BroadcastGroup<Line> =
//!     start_broadcast(&node, "chat", BroadcastAlgorithm::Causal, &members).await?;
//! let mut deliveries = chat.deliveries(0).await?;     // from the first delivery
//! let id = chat.broadcast(&Line { text: "hi".into() }).await?;
//! while let Some(d) = deliveries.next().await? {      // in delivery order
//!     println!("#{} {} says {:?} (held back: {})", d.index, d.sender, d.payload, d.held_back);
//! }
//! ```
//!
//! A group is one instance of the broadcast family ([`BroadcastFamily`],
//! started by [`crate::family`]): a driver actor `broadcast.<name>` on every
//! member, supervised, rebuilt from the node's durable store on every
//! restart, running the configured algorithm ([`BroadcastAlgorithm`]:
//! eager reliable, FIFO, causal, total order). Payloads are any serde type,
//! encoded with msgpack.
//!
//! Guarantees (the cores', stated per algorithm in
//! `troupe_protocols::broadcast` and checked on every step of seeded chaos
//! runs): every member delivers each message at most once, only messages
//! that were broadcast, and, once failures heal, every message any member
//! delivered (even one whose sender crashed mid-send), in the layer's order.
//!
//! **What the application sees.** [`BroadcastGroup::broadcast`] returns the
//! message's id once the message is durable here (a crash from then on does
//! not lose it: it is re-sent after the restart). Deliveries are numbered
//! per member, 1, 2, 3, ... across restarts ([`Delivery::index`]). A group
//! started by this module keeps every delivery in a durable log, written in
//! the same durable write as the delivery itself, so
//! [`BroadcastGroup::deliveries`] can start from any index, and resumes
//! without a gap when its reader falls behind or the member restarts: the
//! application sees each delivery **exactly once, in order**, if it
//! remembers the index it has processed. The log grows by one record per
//! delivery (a long-running group should be restarted under a new name, or
//! use [`start_broadcast_with`] with `keep_log: false` and read the live
//! events only: then a reader that falls behind gets
//! [`Error::Protocol`] naming how many it missed).

use std::marker::PhantomData;
use std::time::Duration;

use serde::de::DeserializeOwned;
use serde::Serialize;
use tokio::sync::broadcast::error::RecvError;
use tokio::sync::broadcast::Receiver;
use troupe_framework::supervision::ActorSpec;
use troupe_framework::Node;
use troupe_protocols::broadcast::{
    AnyBroadcast, BroadcastAlgorithm, BroadcastConfig, BroadcastCore, BroadcastEvent,
    BroadcastFamily, LoggedDelivery, MsgId, Stamps, DELIVERY_LOG,
};
use troupe_protocols::driver::Driver;

use crate::family::{self, Instance};
use crate::Error;

/// Deliveries read from the durable log at a time, when a reader starts
/// or falls behind.
const LOG_PAGE: usize = 1024;

/// A message's identity: its sender (a node name) and its number among the
/// sender's broadcasts, from 1.
pub type MessageId = MsgId<String>;

/// One delivery, as the application sees it.
#[derive(Debug, Clone, PartialEq)]
pub struct Delivery<T> {
    /// Its position among this member's deliveries (1, 2, ... across
    /// restarts).
    pub index: u64,
    /// The node that broadcast it.
    pub sender: String,
    /// Its identity.
    pub id: MessageId,
    /// What was broadcast.
    pub payload: T,
    /// Its ordering stamps (the vector stamp, for a causal group).
    pub stamps: Stamps,
    /// It waited in the hold-back queue for a message that had to come
    /// first (its cause, under causal order).
    pub held_back: bool,
}

/// A broadcast group on one node, carrying payloads of type `T`. Cheap to
/// clone.
pub struct BroadcastGroup<T> {
    instance: Instance<BroadcastFamily>,
    keep_log: bool,
    /// [`BroadcastConfig::window`].
    window: usize,
    _payload: PhantomData<fn(T) -> T>,
}

impl<T> Clone for BroadcastGroup<T> {
    fn clone(&self) -> Self {
        Self {
            instance: self.instance.clone(),
            keep_log: self.keep_log,
            window: self.window,
            _payload: PhantomData,
        }
    }
}

/// Start group `name` on `node` over `members` (this node is added if
/// missing) with `algorithm`, keeping a durable delivery log (see the
/// module docs). Every member starts it with the same name, algorithm and
/// members.
pub async fn start_broadcast<T: Serialize + DeserializeOwned>(
    node: &Node,
    name: &str,
    algorithm: BroadcastAlgorithm,
    members: &[String],
) -> Result<BroadcastGroup<T>, Error> {
    let config = BroadcastConfig {
        keep_log: true,
        ..BroadcastConfig::default()
    };
    start_broadcast_with(node, name, algorithm, members, config).await
}

/// [`start_broadcast`] with explicit settings (re-send period, whether to
/// keep the delivery log).
pub async fn start_broadcast_with<T: Serialize + DeserializeOwned>(
    node: &Node,
    name: &str,
    algorithm: BroadcastAlgorithm,
    members: &[String],
    config: BroadcastConfig,
) -> Result<BroadcastGroup<T>, Error> {
    let handle = |instance| BroadcastGroup::new(instance, &config);
    let instance =
        family::start::<BroadcastFamily>(node, name, algorithm, members, config.clone()).await?;
    Ok(handle(instance))
}

/// What [`prepare_broadcast`] returns: the driver's actor spec and the
/// group's handle.
pub type PreparedGroup<T> = (ActorSpec<Driver<AnyBroadcast<String>>>, BroadcastGroup<T>);

/// The driver's actor spec of group `name` (to place in an app's
/// supervision tree) and the group's handle; as [`start_broadcast_with`]
/// otherwise.
pub fn prepare_broadcast<T: Serialize + DeserializeOwned>(
    node: &Node,
    name: &str,
    algorithm: BroadcastAlgorithm,
    members: &[String],
    config: BroadcastConfig,
) -> Result<PreparedGroup<T>, Error> {
    let (spec, instance) =
        family::prepare::<BroadcastFamily>(node, name, algorithm, members, config.clone())?;
    Ok((spec, BroadcastGroup::new(instance, &config)))
}

fn decode<T: DeserializeOwned>(id: &MessageId, payload: &[u8]) -> Result<T, Error> {
    rmp_serde::from_slice(payload).map_err(|e| {
        Error::Protocol(format!(
            "message {}#{} does not decode as this group's payload type: {e}",
            id.origin, id.seq
        ))
    })
}

impl<T: Serialize + DeserializeOwned> BroadcastGroup<T> {
    /// A handle on a started instance, started with `config` (whether it
    /// keeps the delivery log, its flow-control window).
    pub fn new(instance: Instance<BroadcastFamily>, config: &BroadcastConfig) -> Self {
        Self {
            instance,
            keep_log: config.keep_log,
            window: config.window,
            _payload: PhantomData,
        }
    }

    /// The underlying family instance (its view, its raw events).
    pub fn instance(&self) -> &Instance<BroadcastFamily> {
        &self.instance
    }

    /// Broadcast `payload` to the group; returns its id once it is durable
    /// here (from then on a crash does not lose it). This member delivers
    /// it too, like every other.
    ///
    /// Flow control: while [`BroadcastConfig::window`] of this member's
    /// messages are in flight (not yet held by every live member), it
    /// first waits for that number to fall below the window, so a sender
    /// cannot run ahead of its receivers (callers waiting at once may each
    /// pass, so at most the window plus the concurrent callers are in
    /// flight). Members reported down do not count.
    pub async fn broadcast(&self, payload: &T) -> Result<MessageId, Error> {
        let bytes = rmp_serde::to_vec(payload)
            .map_err(|e| Error::Protocol(format!("the payload does not encode: {e}")))?;
        if self.window > 0 && self.instance.view().in_flight >= self.window {
            let window = self.window;
            self.instance
                .wait_for(|v| v.in_flight < window, Duration::MAX)
                .await?;
        }
        let me = self.instance.node().name().to_string();
        let seq = self
            .instance
            .invoke(move |core, now, out| {
                core.broadcast(bytes, now, out);
                core.stats().sent
            })
            .await?;
        Ok(MsgId { origin: me, seq })
    }

    /// How many messages this member has delivered in all its lives (the
    /// index of its last delivery), once durable: asked of the running
    /// core, whose ledger keeps the count (no read of the store, whatever
    /// the log's length; with or without the delivery log).
    pub async fn delivered_count(&self) -> Result<u64, Error> {
        self.instance.invoke(|core, _, _| core.stats().index).await
    }

    /// Up to [`LOG_PAGE`] deliveries logged here after index `after`, in
    /// index order. Reads that range of the store's log only.
    async fn logged(&self, after: u64) -> Result<Vec<(u64, LoggedDelivery<String>)>, Error> {
        if !self.keep_log {
            return Ok(Vec::new());
        }
        let ns = self.instance.name().to_string();
        let store = self.instance.node().store().clone();
        let (ns, loaded) = tokio::task::spawn_blocking(move || {
            let loaded = store.load_log(&ns, DELIVERY_LOG, after, LOG_PAGE);
            (ns, loaded)
        })
        .await
        .map_err(|e| Error::Protocol(format!("reading a delivery log: {e}")))?;
        let records = loaded
            .map_err(|e| Error::Protocol(format!("reading the delivery log of {ns}: {e}")))?;
        records
            .into_iter()
            .map(|(i, bytes)| {
                rmp_serde::from_slice(&bytes).map(|r| (i, r)).map_err(|e| {
                    Error::Protocol(format!(
                        "reading the delivery log of {ns}: record {i} does not decode: {e}"
                    ))
                })
            })
            .collect()
    }

    /// The deliveries after index `after`, in delivery order: first those
    /// already in the durable log, then each new one as it happens (see the
    /// module docs). `after = 0` starts from the first delivery; the index
    /// of the last delivery processed resumes where it stopped.
    pub async fn deliveries(&self, after: u64) -> Result<Deliveries<T>, Error> {
        // Subscribe first, then read the log: nothing falls in between.
        let live = self.instance.subscribe();
        let mut d = Deliveries {
            group: self.clone(),
            live,
            backlog: std::collections::VecDeque::new(),
            more: false,
            last: after,
        };
        d.refill().await?;
        Ok(d)
    }

    /// Wait until this member has delivered `index` messages, at most
    /// `timeout`.
    pub async fn wait_delivered(&self, index: u64, timeout: Duration) -> Result<(), Error> {
        let start = self.delivered_count().await?;
        if start >= index {
            return Ok(());
        }
        let mut d = self.deliveries(start).await?;
        let wait = async {
            while let Some(x) = d.next().await? {
                if x.index >= index {
                    return Ok(());
                }
            }
            Err(Error::Protocol("the broadcast group stopped".into()))
        };
        tokio::time::timeout(timeout, wait)
            .await
            .map_err(|_| Error::Timeout(timeout))?
    }
}

/// The deliveries of a group, in delivery order (see
/// [`BroadcastGroup::deliveries`]).
pub struct Deliveries<T> {
    group: BroadcastGroup<T>,
    live: Receiver<BroadcastEvent<String>>,
    backlog: std::collections::VecDeque<(u64, LoggedDelivery<String>)>,
    /// The last page read from the log was full: read the next one before
    /// waiting for live deliveries.
    more: bool,
    /// The index of the last delivery handed out.
    last: u64,
}

impl<T: Serialize + DeserializeOwned> Deliveries<T> {
    /// Queue the next page of what the log holds after `last` (called
    /// with the queue empty; the pages after it are read when this one is
    /// handed out: see [`Deliveries::next`]).
    async fn refill(&mut self) -> Result<(), Error> {
        let records = self.group.logged(self.last).await?;
        self.more = records.len() == LOG_PAGE;
        self.backlog.extend(records);
        Ok(())
    }

    fn hand_out(&mut self, index: u64, r: LoggedDelivery<String>) -> Result<Delivery<T>, Error> {
        self.last = index;
        let payload = decode(&r.id, &r.payload)?;
        Ok(Delivery {
            index,
            sender: r.id.origin.clone(),
            id: r.id,
            payload,
            stamps: r.stamps,
            held_back: r.held_back,
        })
    }

    /// The next delivery; `Ok(None)` once the group's driver has stopped for
    /// good. A payload that does not decode as `T` is an error for that
    /// delivery only: the next call goes on with the one after it.
    pub async fn next(&mut self) -> Result<Option<Delivery<T>>, Error> {
        loop {
            if let Some((index, r)) = self.backlog.pop_front() {
                if index <= self.last {
                    continue;
                }
                return self.hand_out(index, r).map(Some);
            }
            if self.more {
                // The last page read was full: the log holds more.
                self.refill().await?;
                continue;
            }
            match self.live.recv().await {
                Ok(BroadcastEvent::Delivered {
                    id,
                    payload,
                    stamps,
                    index,
                    held_back,
                    ..
                }) => {
                    if index <= self.last {
                        continue;
                    }
                    if index > self.last + 1 {
                        // Deliveries this reader did not see (a restart of
                        // the driver between the log read and the event):
                        // read them from the log first.
                        self.refill().await?;
                        if self
                            .backlog
                            .front()
                            .is_some_and(|(i, _)| *i == self.last + 1)
                        {
                            continue;
                        }
                    }
                    let r = LoggedDelivery {
                        id,
                        stamps,
                        payload,
                        held_back,
                    };
                    return self.hand_out(index, r).map(Some);
                }
                Err(RecvError::Lagged(missed)) => {
                    if !self.group.keep_log {
                        return Err(Error::Protocol(format!(
                            "this reader fell behind: {missed} deliveries were missed (the group keeps no delivery log)"
                        )));
                    }
                    self.refill().await?;
                }
                Err(RecvError::Closed) => return Ok(None),
            }
        }
    }
}
