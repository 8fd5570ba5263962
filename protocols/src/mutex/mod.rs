//! Distributed mutual exclusion: a lock on one named resource across a group.
//!
//! Each algorithm is a sans-IO core (see `troupe_framework::sansio`) in its own
//! module: [`Centralized`] (a coordinator with a FIFO queue),
//! [`RicartAgrawala`] (Lamport-stamped requests, deferred replies),
//! [`TokenRing`] (a token circulating over the live ring, regenerated with a
//! new generation when lost) and [`LamportMutex`] (replicated request queue,
//! acks and releases). Each is a [`Lock`] — the group, the settings, the
//! fencing tokens, this member's request and the durable snapshot that every
//! algorithm keeps — around the algorithm's own state. [`MutexAlgorithm`]
//! names them for configuration files and [`AnyMutex`] runs the one a
//! configuration names.
//!
//! One core guards one resource; a driver that multiplexes several resources
//! over one connection routes messages by resource name itself.
//!
//! ## Common API
//! Commands: `request(now, out)` asks for the lock (a no-op while already
//! requesting or holding), `release(now, out)` gives it back (a no-op unless
//! holding). Events: [`MutexEvent::Granted`] with a *fencing token*, and
//! [`MutexEvent::Released`].
//!
//! ## Fencing tokens
//! Every core keeps the largest token it has seen and the cores piggyback it on
//! their messages (requests, replies, acks, grants, the token itself, the
//! state transfer during failover); a grant takes `max seen + 1` and stores it
//! durably before the grant is reported. A resource that remembers the
//! largest token it accepted and refuses smaller or equal ones stays safe
//! even when two nodes believe they hold the lock.
//!
//! ## Guarantees, exactly
//! A *false suspicion* is a running member believed down by another running
//! member (a partition, a one-way cut, or a restart not yet noticed). A
//! grant is *exposed* to a false suspicion according to its algorithm's
//! [`Exposure`]:
//! * [`RicartAgrawala`], [`LamportMutex`] ([`Exposure::Holders`]): a grant
//!   to `a` and a grant to `b` expose each other when `a` falsely suspected
//!   `b` between `a`'s request and `a`'s grant, or `b` falsely suspected `a`
//!   between `b`'s request and `b`'s grant (a requester waits for every peer
//!   it believes up, and only for those);
//! * [`Centralized`] ([`Exposure::Group`]): a grant is exposed when any
//!   member falsely suspected any other between its request and the grant
//!   (a third party, the coordinator, decides);
//! * [`TokenRing`] ([`Exposure::Generation`]): a grant is exposed when any
//!   member falsely suspected any other while its token's generation was
//!   being created, from the start of the regeneration to the first grant
//!   of that generation (the regenerator decides whom to wait for); two
//!   grants with tokens of the same generation are never both held.
//!
//! Then, for every algorithm, under any loss, duplication, reordering,
//! crash, restart and partition:
//! 1. **Mutual exclusion.** Two nodes hold the lock at the same time only
//!    if their grants expose each other (for [`Exposure::Group`] and
//!    [`Exposure::Generation`]: one of the two grants is exposed). So with
//!    an accurate detector, at most one holder.
//! 2. **Fencing.** A grant's token is larger than the token of every earlier
//!    grant, except an earlier grant whose holder has crashed since (a
//!    token can die with the only node that knew it, until that node
//!    restarts and is heard from) or that exposes this one as in 1.
//! 3. **Per node.** A node's grants carry strictly growing tokens, across
//!    its restarts too (the largest token is durable before a grant is
//!    reported).
//! 4. [`TokenRing`] only: never two holders of tokens of the same
//!    generation, whatever the detector does.
//!
//! `testkit::scenarios::MutexObserver` checks 1 to 4 after every step of
//! the seeded chaos scenarios, and counts the grants that were not exposed
//! themselves (for [`Exposure::Group`] and [`Exposure::Generation`], 1 and
//! 2 admit no exception for them; for [`Exposure::Holders`], only one made
//! by a node that another grant's node falsely suspected) so that a run,
//! or a set of runs, can require enough of them.

pub mod any;
pub mod centralized;
pub mod lamport;
pub mod ricart_agrawala;
pub mod token_ring;

pub use any::{AnyMutex, AnyMutexMsg};
pub use centralized::Centralized;
pub use lamport::LamportMutex;
pub use ricart_agrawala::RicartAgrawala;
pub use token_ring::TokenRing;

use std::collections::{BTreeMap, BTreeSet};
use std::fmt::Debug;
use std::time::Duration;

use serde::{Deserialize, Serialize};
use troupe_framework::sansio::{Outputs, Protocol, Snapshot, SnapshotCore};

use crate::driver::OutputsOf;
use crate::family::{EventMetric, ViewMetric};
use crate::group::Group;
use crate::testkit::SimProtocol;
use crate::MemberId;

crate::algorithms! {
    /// The mutual-exclusion algorithms, by the names configuration files use.
    pub enum MutexAlgorithm {
        /// A coordinator (the highest live member) with a FIFO queue: [`Centralized`].
        Centralized = "centralized",
        /// Ricart and Agrawala's broadcast algorithm: [`RicartAgrawala`].
        RicartAgrawala = "ricart-agrawala",
        /// A token on a logical ring: [`TokenRing`].
        TokenRing = "token-ring",
        /// Lamport's replicated-queue algorithm: [`LamportMutex`].
        Lamport = "lamport",
    }
}

pub use crate::family::UnknownAlgorithm;

/// Which false suspicions can let two grants of an algorithm overlap or
/// carry tokens out of order: the condition its guarantees are stated under
/// (see the module docs). The simulator's checks rely on it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum Exposure {
    /// Only between the two holders: one of them falsely suspected the other
    /// between its request and its grant (Ricart–Agrawala, Lamport).
    Holders,
    /// Any member falsely suspecting any other between a grant's request and
    /// the grant (centralized: the coordinator decides).
    Group,
    /// Any member falsely suspecting any other while the generation of the
    /// grant's token was being created: from the start of its regeneration
    /// to the first grant of one of its tokens (token ring: the regenerator
    /// decides whom to wait for).
    Generation,
}

/// What a mutex core tells its local user.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum MutexEvent {
    /// This node now holds the lock; present `fencing_token` to the resource.
    Granted {
        /// The resource's name.
        resource: String,
        /// Larger than every earlier grant's token (see the module docs).
        fencing_token: u64,
    },
    /// This node gave the lock back.
    Released {
        /// The resource's name.
        resource: String,
        /// The token of the grant that ended.
        fencing_token: u64,
    },
}

/// Settings shared by every mutex core.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct MutexConfig {
    /// The resource's name (reported in events).
    pub resource: String,
    /// How often unanswered messages are sent again (requests, token
    /// regeneration rounds...). Lost messages are only recovered this way.
    pub retry: Duration,
    /// Token ring only: how long the lowest live member waits without seeing
    /// the token before regenerating it.
    pub token_timeout: Duration,
    /// A deliberately broken Ricart–Agrawala that drops the node-id
    /// tie-break between equal timestamps (two members can then hold the
    /// lock at once). Only for the tests that prove the model checker
    /// catches it; never set it otherwise.
    #[doc(hidden)]
    pub unsafe_no_tie_break: bool,
}

impl MutexConfig {
    /// Defaults for `resource`: retry every 250 ms, token timeout 1 s.
    pub fn new(resource: impl Into<String>) -> Self {
        Self {
            resource: resource.into(),
            retry: Duration::from_millis(250),
            token_timeout: Duration::from_secs(1),
            unsafe_no_tie_break: false,
        }
    }
}

/// What every mutex core keeps on stable storage.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct MutexDurable {
    /// Lamport clock (Ricart–Agrawala, Lamport) so restarted requests stay ordered.
    pub clock: u64,
    /// Largest fencing token seen or granted.
    pub max_token: u64,
    /// Request sequence number (centralized) or largest token generation (token ring).
    pub seq: u64,
    /// Token ring: the largest hop count seen in generation `seq`.
    pub hop: u64,
}

/// The command side every mutex core offers (what an actor wrapper calls).
pub trait MutexCore: Protocol<Event = MutexEvent> {
    /// Ask for the lock. No-op while already requesting or holding.
    fn request(
        &mut self,
        now: Duration,
        out: &mut Outputs<Self::Id, Self::Msg, Self::Timer, Self::Event>,
    );
    /// Give the lock back. No-op unless holding.
    fn release(
        &mut self,
        now: Duration,
        out: &mut Outputs<Self::Id, Self::Msg, Self::Timer, Self::Event>,
    );
    /// The fencing token of the grant this node holds, if it holds the lock.
    fn holding(&self) -> Option<u64>;
    /// True while a request is outstanding (not yet granted).
    fn is_waiting(&self) -> bool;
    /// The order key of the outstanding or held request, when the algorithm
    /// defines one (`(Lamport time, _)`), for checking grant order.
    fn request_stamp(&self) -> Option<u64> {
        None
    }
    /// Token ring: the newest token generation this node knows of (`None`
    /// for algorithms without generations).
    fn epoch(&self) -> Option<u64> {
        None
    }
    /// Token ring: the generation of the token this node holds the lock with.
    fn held_epoch(&self) -> Option<u64> {
        None
    }
    /// Which false suspicions this algorithm's guarantees are stated under.
    fn exposure(&self) -> Exposure {
        Exposure::Group
    }
}

/// A mutual-exclusion core: what every algorithm keeps — its group, its
/// settings, its durable counters (a Lamport clock for the algorithms that
/// stamp their requests, the largest fencing token seen), this member's own
/// request and the snapshot of its durable state — around the algorithm's
/// own state `A`. [`Centralized`], [`RicartAgrawala`], [`TokenRing`] and
/// [`LamportMutex`] are locks of their algorithm's state; each implements
/// [`Protocol`] and [`LockCommands`], and every lock is a [`MutexCore`], a
/// [`SnapshotCore`] and a [`SimProtocol`].
#[derive(Debug, Clone)]
pub struct Lock<Id, A> {
    group: Group<Id>,
    config: MutexConfig,
    saved: Snapshot<MutexDurable>,
    clock: u64,
    max_token: u64,
    mine: Mine<Id>,
    /// Stamped algorithms: the answers held back until the lock is
    /// released.
    deferred: Deferred<Id>,
    alg: A,
}

/// This member's own request.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
enum Mine<Id> {
    /// Not requesting.
    #[default]
    Idle,
    /// Request `req` (a request number or a Lamport stamp; 0 where the
    /// algorithm has neither) waits, for the answers of `from` where the
    /// algorithm asks its peers.
    Waiting { req: u64, from: BTreeSet<Id> },
    /// Request `req` holds the lock, with fencing token `token`.
    Held { req: u64, token: u64 },
}

impl<Id> Mine<Id> {
    fn is_idle(&self) -> bool {
        matches!(self, Mine::Idle)
    }
    /// The waiting request.
    fn waiting(&self) -> Option<u64> {
        match self {
            Mine::Waiting { req, .. } => Some(*req),
            _ => None,
        }
    }
    /// The fencing token of the holding request.
    fn holding(&self) -> Option<u64> {
        match self {
            Mine::Held { token, .. } => Some(*token),
            _ => None,
        }
    }
    /// The request, waiting or holding.
    fn req(&self) -> Option<u64> {
        match self {
            Mine::Waiting { req, .. } | Mine::Held { req, .. } => Some(*req),
            Mine::Idle => None,
        }
    }
}

impl<Id: Ord> Mine<Id> {
    /// The waiting request, once it waits for nobody's answer.
    fn answered_by_all(&self) -> Option<u64> {
        match self {
            Mine::Waiting { req, from } if from.is_empty() => Some(*req),
            _ => None,
        }
    }
    /// `peer` answered request `req`: stop waiting for it (if that request
    /// still waits).
    fn answered(&mut self, peer: &Id, req: u64) {
        if let Mine::Waiting { req: r, from } = self {
            if *r == req {
                from.remove(peer);
            }
        }
    }
    /// Wait for `peer`'s answer too. Returns the waiting request if `peer`
    /// was not awaited yet.
    fn ask(&mut self, peer: Id) -> Option<u64> {
        match self {
            Mine::Waiting { req, from } => from.insert(peer).then_some(*req),
            _ => None,
        }
    }
    /// Stop waiting for `peer` (gone).
    fn forget(&mut self, peer: &Id) {
        if let Mine::Waiting { from, .. } = self {
            from.remove(peer);
        }
    }
}

/// A mutex algorithm's own state: what its [`Lock`] keeps besides the
/// group, the settings, the durable counters and this member's request. It
/// starts as the default value.
pub trait LockState: Clone + Debug + Default {
    /// True when requests are stamped with the Lamport clock (and granted in
    /// stamp order): [`MutexCore::request_stamp`] reports the stamp.
    const STAMPED: bool = false;
    /// Which false suspicions its guarantees are stated under
    /// ([`MutexCore::exposure`]).
    const EXPOSURE: Exposure = Exposure::Group;
    /// Take up what a previous life made durable (`None` on a first start).
    /// Default: nothing to take (the lock keeps the clock and the tokens).
    fn resume(&mut self, durable: Option<&MutexDurable>) {
        let _ = durable;
    }
    /// Write its part of the durable state (`seq`, `hop`). Default: none.
    fn save(&self, durable: &mut MutexDurable) {
        let _ = durable;
    }
    /// [`MutexCore::epoch`]: the newest token generation this member knows.
    fn epoch(&self) -> Option<u64> {
        None
    }
    /// The generation of the token this member has, if any.
    fn token_epoch(&self) -> Option<u64> {
        None
    }
}

/// The commands of one algorithm's lock: what [`MutexCore::request`] and
/// [`MutexCore::release`] do for it.
pub trait LockCommands: Protocol<Event = MutexEvent> {
    /// Ask for the lock; no-op while already requesting or holding.
    fn request(&mut self, now: Duration, out: &mut OutputsOf<Self>);
    /// Give the lock back; no-op unless holding.
    fn release(&mut self, now: Duration, out: &mut OutputsOf<Self>);
}

type LockOut<Id, M, T> = Outputs<Id, M, T, MutexEvent>;

/// Requests whose answer a member holds back until it releases the lock
/// (the stamped algorithms: Ricart–Agrawala, Lamport): per requester, the stamp of its latest
/// deferred request.
#[derive(Debug, Clone)]
pub(crate) struct Deferred<Id>(BTreeMap<Id, u64>);

impl<Id> Default for Deferred<Id> {
    fn default() -> Self {
        Self(BTreeMap::new())
    }
}

impl<Id: Ord> Deferred<Id> {
    /// Hold back the answer to `from`'s request stamped `ts`.
    pub(crate) fn defer(&mut self, from: Id, ts: u64) {
        let e = self.0.entry(from).or_insert(ts);
        *e = (*e).max(ts);
    }
    /// `who` is gone: there is nothing to answer.
    pub(crate) fn forget(&mut self, who: &Id) {
        self.0.remove(who);
    }
    /// Every deferred request, to be answered now.
    fn take(&mut self) -> BTreeMap<Id, u64> {
        std::mem::take(&mut self.0)
    }
}

impl<Id: MemberId, A: LockState> Lock<Id, A> {
    /// Answer every request deferred until now (on release) with the
    /// message `answer` builds from its stamp.
    fn answer_deferred<M, T>(
        &mut self,
        answer: impl Fn(&Self, u64) -> M,
        out: &mut LockOut<Id, M, T>,
    ) {
        for (p, req_ts) in self.deferred.take() {
            out.send(p, answer(self, req_ts));
        }
    }
}

impl<Id: MemberId, A: LockState> Lock<Id, A> {
    /// A core for `me` among `members`, restarted from `durable` if given.
    pub fn new(
        me: Id,
        members: impl IntoIterator<Item = Id>,
        config: MutexConfig,
        durable: Option<MutexDurable>,
    ) -> Self {
        let d = durable.unwrap_or_default();
        let mut alg = A::default();
        alg.resume(durable.as_ref());
        Self {
            group: Group::new(me, members),
            config,
            saved: Snapshot::resumed(durable),
            clock: d.clock,
            max_token: d.max_token,
            mine: Mine::Idle,
            deferred: Deferred::default(),
            alg,
        }
    }

    /// A fencing token is seen on a message.
    fn see(&mut self, token: u64) {
        self.max_token = self.max_token.max(token);
    }

    /// A message stamped `ts` with fencing token `token` is seen: move the
    /// clock past the stamp, and take the token.
    fn witness(&mut self, ts: u64, token: u64) {
        self.clock = self.clock.max(ts) + 1;
        self.see(token);
    }

    /// If idle, start a request stamped with the next clock value that waits
    /// for the answer of every live peer: its stamp and those peers.
    fn start_stamped(&mut self) -> Option<(u64, BTreeSet<Id>)> {
        if !self.mine.is_idle() {
            return None;
        }
        self.clock += 1;
        let from: BTreeSet<Id> = self.group.live_peers().cloned().collect();
        self.mine = Mine::Waiting {
            req: self.clock,
            from: from.clone(),
        };
        Some((self.clock, from))
    }

    /// The waiting request takes the lock with fencing token `token`; the
    /// user is told.
    fn hold<M, T>(&mut self, token: u64, out: &mut LockOut<Id, M, T>) {
        if let Some(req) = self.mine.waiting() {
            self.mine = Mine::Held { req, token };
            out.emit(MutexEvent::Granted {
                resource: self.config.resource.clone(),
                fencing_token: token,
            });
        }
    }

    /// The held lock is given back; the user is told. Returns the request
    /// and its fencing token, or `None` when not holding.
    fn unhold<M, T>(&mut self, out: &mut LockOut<Id, M, T>) -> Option<(u64, u64)> {
        let Mine::Held { req, token } = self.mine else {
            return None;
        };
        self.mine = Mine::Idle;
        out.emit(MutexEvent::Released {
            resource: self.config.resource.clone(),
            fencing_token: token,
        });
        Some((req, token))
    }
}

impl<Id: MemberId, A: LockState> Lock<Id, A>
where
    Self: SnapshotCore<State = MutexDurable>,
{
    /// Save the durable state if it changed (what the algorithm's
    /// [`Protocol::persist`] does).
    fn save<M, T>(&mut self, out: &mut LockOut<Id, M, T>) {
        let state = self.state();
        self.saved.save(state, out);
    }
}

impl<Id: MemberId, A: LockState> MutexCore for Lock<Id, A>
where
    Self: LockCommands<Id = Id>,
{
    fn request(&mut self, now: Duration, out: &mut OutputsOf<Self>) {
        LockCommands::request(self, now, out);
    }
    fn release(&mut self, now: Duration, out: &mut OutputsOf<Self>) {
        LockCommands::release(self, now, out);
    }
    fn holding(&self) -> Option<u64> {
        self.mine.holding()
    }
    fn is_waiting(&self) -> bool {
        self.mine.waiting().is_some()
    }
    fn request_stamp(&self) -> Option<u64> {
        self.mine.req().filter(|_| A::STAMPED)
    }
    fn epoch(&self) -> Option<u64> {
        self.alg.epoch()
    }
    fn held_epoch(&self) -> Option<u64> {
        self.mine.holding().and(self.alg.token_epoch())
    }
    fn exposure(&self) -> Exposure {
        A::EXPOSURE
    }
}

impl<Id: MemberId, A: LockState> SnapshotCore for Lock<Id, A>
where
    Self: Protocol<Id = Id>,
{
    type State = MutexDurable;
    fn state(&self) -> MutexDurable {
        let mut d = MutexDurable {
            clock: self.clock,
            max_token: self.max_token,
            seq: 0,
            hop: 0,
        };
        self.alg.save(&mut d);
        d
    }
}

impl<Id: MemberId, A: LockState> SimProtocol for Lock<Id, A> where Self: Protocol {}

/// What a lock's handles watch: whether this node holds the lock (with the
/// grant's fencing token) or waits for it.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct MutexView {
    /// The fencing token of the grant this node holds.
    pub holding: Option<u64>,
    /// True while a request is outstanding.
    pub waiting: bool,
}

crate::family::family! {
    /// The mutual-exclusion family: one lock per resource, actor
    /// `mutex.<resource>` on every member.
    pub enum MutexFamily {
        actor = |resource| format!("mutex.{resource}");
        core AnyMutex(MutexAlgorithm, MutexConfig);
        view MutexView = |core| MutexView { holding: core.holding(), waiting: core.is_waiting() };
        trace = |protocol, event| Some(troupe_framework::trace::TraceEvent::Note {
            text: match event {
                MutexEvent::Granted { fencing_token, .. } => {
                    format!("{protocol}: lock granted (fencing token {fencing_token})")
                }
                MutexEvent::Released { fencing_token, .. } => {
                    format!("{protocol}: lock released (fencing token {fencing_token})")
                }
            },
        });
        view_metrics = |view, out| {
            out.push(ViewMetric::gauge(
                "troupe_lock_held",
                "1 while this node holds the lock.",
                f64::from(u8::from(view.holding.is_some())),
            ));
            out.push(ViewMetric::gauge(
                "troupe_lock_waiting",
                "1 while this node has a request for the lock outstanding.",
                f64::from(u8::from(view.waiting)),
            ));
        };
        event_metric = |event| Some(match event {
            MutexEvent::Granted { .. } => EventMetric {
                name: "troupe_lock_grants_total",
                help: "Grants of the lock to this node.",
                label: None,
            },
            MutexEvent::Released { .. } => EventMetric {
                name: "troupe_lock_releases_total",
                help: "Releases of the lock by this node.",
                label: None,
            },
        });
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn algorithm_names_round_trip() {
        crate::family::assert_names_round_trip::<MutexAlgorithm>("paxos");
    }
}
