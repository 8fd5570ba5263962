//! A deterministic discrete-event simulator for sans-IO protocol cores.
//!
//! [`Sim`] runs one core per member in virtual time (a [`Duration`] since the
//! start of the run) and carries their outputs out over a simulated network
//! with seeded faults: per-message loss and duplication, random delay (which
//! also reorders messages), partitions (symmetric and one-way) that heal, and
//! crash / restart of nodes. Timers are keyed as in production (setting a
//! timer equal to a pending one replaces it).
//!
//! Each node has a simulated disk that plays the node's durable store: the
//! cores' [`Write`]s are applied to it in order, and their sends and events
//! are held until the writes are synced, exactly as the production driver
//! does. With a sync delay ([`DiskModel`]) syncs take time and group the
//! writes of every input made meanwhile; a crash then loses what was not yet
//! synced (the writes of the sync in flight survive all together or not at
//! all, a seeded choice, as with the real store's atomic commits). A
//! restarted node is rebuilt by the factory from its disk ([`Recovered`]),
//! nothing else; timers of a previous life never fire.
//!
//! A membership oracle plays the failure detector: an observer learns that a
//! member is `Down` a detection delay after it crashed or became unreachable
//! (either direction of the link is cut), and `Up` a delay after it is back.
//! A quick crash + restart is seen as `Down` then `Up` (a new incarnation). The
//! oracle also knows when its own reports are *false* (a running member reported
//! down because of a partition, or restarted before the others noticed): [`Sim::fd_clean_since`] tells tests since when
//! no such false suspicion has been in force anywhere, and
//! [`Sim::last_false_suspicion`] when one given member last falsely
//! suspected another, which is what a protocol's safety under an accurate
//! failure detector may be checked against.
//!
//! An [`Observer`] sees every local event as it is emitted and checks
//! invariants after every step. Everything is a function of the seed: a
//! failing run prints its seed and replays with `TROUPE_SEED=<seed>`
//! (see [`check_seeds`]). Messages sent are counted per kind
//! ([`Sim::sent_counts`]) so that benchmarks can report protocol costs.
//!
//! Checkers for what runs record, in the simulator or on real nodes:
//! [`trace_check`] for a broadcast's delivery order, [`linearizability`]
//! for the client histories of a replicated key-value service.

pub mod broadcast;
mod chaos;
pub mod commit;
pub mod linearizability;
pub mod model;
pub mod models;
pub mod raft;
pub mod scenarios;
pub mod sim_trace;
pub mod trace_check;

pub use chaos::Chaos;

use std::collections::{BTreeMap, BTreeSet, VecDeque};
use std::fmt::Debug;
use std::rc::Rc;
use std::sync::{Mutex, PoisonError};
use std::time::Duration;

use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use troupe_framework::membership::{MemberEvent, MemberStatus};
use troupe_framework::sansio::{
    Outputs, Protocol, Recovered, SnapshotCore, TimerOp, TimerTable, Write,
};
use troupe_framework::trace::TraceEvent;

/// What the simulator needs from a core beyond [`Protocol`].
pub trait SimProtocol: Protocol {
    /// A short stable name for a message's kind, used to count costs.
    /// Default: the name of the message's enum variant, in kebab-case
    /// ([`variant_kind`]).
    fn msg_kind(msg: &Self::Msg) -> &'static str {
        variant_kind(msg)
    }
}

/// The name `value`'s `Debug` form starts with — an enum's variant name —
/// in kebab-case: `RegenAck { gen: 3 }` gives `"regen-ack"`. Each kind is
/// formatted once per thread and variant (then looked up by the variant's
/// discriminant) and allocated once for the life of the process.
pub fn variant_kind<T: Debug>(value: &T) -> &'static str {
    use std::hash::{Hash, Hasher};
    thread_local! {
        static SEEN: std::cell::RefCell<std::collections::HashMap<(&'static str, u64), &'static str>> =
            std::cell::RefCell::new(std::collections::HashMap::new());
    }
    let mut h = std::collections::hash_map::DefaultHasher::new();
    std::mem::discriminant(value).hash(&mut h);
    let key = (std::any::type_name::<T>(), h.finish());
    if let Some(kind) = SEEN.with(|s| s.borrow().get(&key).copied()) {
        return kind;
    }
    let kind = format_kind(value);
    SEEN.with(|s| s.borrow_mut().insert(key, kind));
    kind
}

/// Format the variant name of `value` in kebab-case, interned.
fn format_kind<T: Debug + ?Sized>(value: &T) -> &'static str {
    /// Collects the leading name, and stops the formatting after it.
    struct Name(String);
    impl std::fmt::Write for Name {
        fn write_str(&mut self, s: &str) -> std::fmt::Result {
            for c in s.chars() {
                if !(c.is_alphanumeric() || c == '_') {
                    return Err(std::fmt::Error);
                }
                if c.is_uppercase() && !self.0.is_empty() {
                    self.0.push('-');
                }
                self.0.extend(c.to_lowercase());
            }
            Ok(())
        }
    }
    static KINDS: Mutex<BTreeSet<&'static str>> = Mutex::new(BTreeSet::new());
    let mut name = Name(String::new());
    // An error only says that the formatting stopped after the name.
    let _ = std::fmt::Write::write_fmt(&mut name, format_args!("{value:?}"));
    let mut kinds = KINDS.lock().unwrap_or_else(PoisonError::into_inner);
    if let Some(kind) = kinds.get(name.0.as_str()) {
        return kind;
    }
    let kind: &'static str = Box::leak(name.0.into_boxed_str());
    kinds.insert(kind);
    kind
}

/// The output buffer type of core `P`.
pub type Out<P> = Outputs<
    <P as Protocol>::Id,
    <P as Protocol>::Msg,
    <P as Protocol>::Timer,
    <P as Protocol>::Event,
>;

/// Builds a core for member `id` from what its disk holds (empty on the
/// first start).
pub type Factory<P> = Box<dyn FnMut(&<P as Protocol>::Id, &Recovered) -> P>;

/// How the simulated disks behave.
#[derive(Debug, Clone, Copy, PartialEq, Default)]
pub struct DiskModel {
    /// Smallest time a sync takes.
    pub min_sync: Duration,
    /// Largest time a sync takes (uniform in between). With both zero
    /// (the default) writes are synced at once and a crash loses nothing.
    pub max_sync: Duration,
}

impl DiskModel {
    /// Syncs taking between `min` and `max`.
    pub fn syncing(min: Duration, max: Duration) -> Self {
        Self {
            min_sync: min,
            max_sync: max,
        }
    }
    fn instant(&self) -> bool {
        self.max_sync.is_zero()
    }
}

/// What the simulator records about durability, when asked to
/// ([`Sim::record_durability`]), for [`check_durability_order`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum DurabilityRecord<Id> {
    /// `node` (in life `life`) submitted the writes of one input as `ticket`.
    Wrote {
        /// The node.
        node: Id,
        /// Its life (restart count).
        life: u64,
        /// The submission's number.
        ticket: u64,
    },
    /// Every submission up to `upto` is on the disk.
    Synced {
        /// The node.
        node: Id,
        /// Its life.
        life: u64,
        /// Last submission synced.
        upto: u64,
    },
    /// Outputs that needed submission `needs` durable were carried out.
    Released {
        /// The node.
        node: Id,
        /// Its life.
        life: u64,
        /// The submission they depend on (all earlier ones too).
        needs: u64,
        /// Messages sent.
        sends: usize,
        /// Events emitted.
        events: usize,
    },
    /// The node crashed; submissions up to `kept` survived.
    Crashed {
        /// The node.
        node: Id,
        /// The life that ended.
        life: u64,
        /// Last submission on the disk after the crash.
        kept: u64,
        /// Last submission made before the crash.
        submitted: u64,
        /// The last submission of the sync in flight at the crash, if one was.
        in_flight: Option<u64>,
    },
}

/// Check a durability record: no message or event left before the writes it
/// depends on were synced. Returns the number of releases checked.
pub fn check_durability_order<Id: Ord + Clone + Debug>(
    records: &[DurabilityRecord<Id>],
) -> Result<usize, String> {
    let mut synced: BTreeMap<(Id, u64), u64> = BTreeMap::new();
    let mut checked = 0;
    for (i, r) in records.iter().enumerate() {
        match r {
            DurabilityRecord::Synced { node, life, upto } => {
                let s = synced.entry((node.clone(), *life)).or_insert(0);
                *s = (*s).max(*upto);
            }
            DurabilityRecord::Released {
                node,
                life,
                needs,
                sends,
                events,
            } => {
                let s = synced.get(&(node.clone(), *life)).copied().unwrap_or(0);
                if *needs > s && sends + events > 0 {
                    return Err(format!(
                        "record {i}: {node:?} (life {life}) sent {sends} message(s) and {events} event(s) \
                         needing submission {needs} while only {s} was synced"
                    ));
                }
                checked += 1;
            }
            _ => {}
        }
    }
    Ok(checked)
}

/// Per-message network faults.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct NetFaults {
    /// Probability that a message is dropped.
    pub loss: f64,
    /// Probability that a message is delivered twice (independent delays).
    pub duplicate: f64,
    /// Smallest one-way delay.
    pub min_delay: Duration,
    /// Largest one-way delay (uniform in between; a wide range reorders).
    pub max_delay: Duration,
}

impl NetFaults {
    /// A reliable network with a fixed one-way delay: no loss, no duplicates,
    /// and messages between two nodes arrive in the order they were sent.
    pub fn reliable(delay: Duration) -> Self {
        Self {
            loss: 0.0,
            duplicate: 0.0,
            min_delay: delay,
            max_delay: delay,
        }
    }
    /// A lossy, duplicating, reordering network.
    pub fn chaotic() -> Self {
        Self {
            loss: 0.05,
            duplicate: 0.05,
            min_delay: Duration::from_millis(1),
            max_delay: Duration::from_millis(40),
        }
    }
}

/// How the membership oracle (the simulated failure detector) behaves.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct OracleConfig {
    /// Delay from a crash or a cut link to the `Down` report.
    pub down_after: Duration,
    /// Delay from a restart or a healed link to the `Up` report.
    pub up_after: Duration,
}

impl Default for OracleConfig {
    fn default() -> Self {
        Self {
            down_after: Duration::from_millis(300),
            up_after: Duration::from_millis(300),
        }
    }
}

/// Checks a run: sees every local event, and the whole simulation after
/// every step. Returning `Err` stops the run with that message.
pub trait Observer<P: SimProtocol> {
    /// `node` emitted `event` at `now`.
    fn on_event(&mut self, now: Duration, node: &P::Id, event: &P::Event) -> Result<(), String> {
        let _ = (now, node, event);
        Ok(())
    }
    /// Called after every step (a delivered message, a fired timer, a
    /// membership report, a command, a crash or restart).
    fn check(&mut self, sim: &Sim<P>) -> Result<(), String> {
        let _ = sim;
        Ok(())
    }
}

/// The observer that checks nothing.
impl<P: SimProtocol> Observer<P> for () {}

enum Ev<P: Protocol> {
    Deliver {
        from: P::Id,
        to: P::Id,
        msg: P::Msg,
        /// The send's number, for traces (not part of the state).
        id: u64,
        /// The model checker's print of the message (computed once per
        /// send, shared by its copies; not part of the state).
        print: std::cell::OnceCell<u64>,
    },
    Timer {
        node: P::Id,
        life: u64,
        token: u64,
        timer: P::Timer,
    },
    Sync {
        node: P::Id,
        life: u64,
        upto: u64,
    },
    Recheck {
        observer: P::Id,
        observer_life: u64,
        target: P::Id,
    },
}

/// Outputs held until the writes they depend on are synced.
struct Held<P: Protocol> {
    needs: u64,
    sends: Vec<(P::Id, P::Msg)>,
    events: Vec<P::Event>,
}

struct Slot<P: SimProtocol> {
    core: Option<P>,
    /// Bumped whenever the core may have changed (a mutable access, a
    /// crash, a restart): a model checker caches the core's fingerprint
    /// while it stays the same ([`Sim::core_versions`]).
    version: u64,
    life: u64,
    /// What is on the disk: survives crashes.
    disk: Recovered,
    /// Submissions not yet on the disk, in order.
    pending: VecDeque<(u64, Vec<Write>)>,
    /// The last submission of the sync in flight.
    syncing: Option<u64>,
    submitted: u64,
    synced: u64,
    held: VecDeque<Held<P>>,
    timers: TimerTable<P::Timer>,
    /// Queue keys of the pending timers, by token.
    timer_keys: BTreeMap<u64, (Duration, u64)>,
}

impl<P: SimProtocol> Slot<P> {
    fn new(core: Option<P>, disk: Recovered) -> Self {
        Self {
            core,
            version: 0,
            life: 0,
            disk,
            pending: VecDeque::new(),
            syncing: None,
            submitted: 0,
            synced: 0,
            held: VecDeque::new(),
            timers: TimerTable::new(),
            timer_keys: BTreeMap::new(),
        }
    }
}

/// How a simulation copies a node's slot.
type CopySlot<P> = fn(&Slot<P>) -> Slot<P>;

/// Node `id`'s slot, to change: copied first if another copy of the
/// simulation shares it.
fn slot_mut<'a, P: SimProtocol>(
    nodes: &'a mut BTreeMap<P::Id, Rc<Slot<P>>>,
    copy: Option<CopySlot<P>>,
    id: &P::Id,
) -> Option<&'a mut Slot<P>> {
    let rc = nodes.get_mut(id)?;
    if Rc::get_mut(rc).is_none() {
        let copy = copy.expect("a slot is shared only by copies of a simulation");
        *rc = Rc::new(copy(rc));
    }
    Rc::get_mut(rc)
}

impl<P: Protocol> Clone for Ev<P> {
    fn clone(&self) -> Self {
        match self {
            Ev::Deliver {
                from,
                to,
                msg,
                id,
                print,
            } => Ev::Deliver {
                from: from.clone(),
                to: to.clone(),
                msg: msg.clone(),
                id: *id,
                print: print.clone(),
            },
            Ev::Timer {
                node,
                life,
                token,
                timer,
            } => Ev::Timer {
                node: node.clone(),
                life: *life,
                token: *token,
                timer: timer.clone(),
            },
            Ev::Sync { node, life, upto } => Ev::Sync {
                node: node.clone(),
                life: *life,
                upto: *upto,
            },
            Ev::Recheck {
                observer,
                observer_life,
                target,
            } => Ev::Recheck {
                observer: observer.clone(),
                observer_life: *observer_life,
                target: target.clone(),
            },
        }
    }
}

impl<P: Protocol> Clone for Held<P> {
    fn clone(&self) -> Self {
        Self {
            needs: self.needs,
            sends: self.sends.clone(),
            events: self.events.clone(),
        }
    }
}

impl<P: SimProtocol + Clone> Clone for Slot<P> {
    fn clone(&self) -> Self {
        Self {
            core: self.core.clone(),
            version: self.version,
            life: self.life,
            disk: self.disk.clone(),
            pending: self.pending.clone(),
            syncing: self.syncing,
            submitted: self.submitted,
            synced: self.synced,
            held: self.held.clone(),
            timers: self.timers.clone(),
            timer_keys: self.timer_keys.clone(),
        }
    }
}

/// A copy of the whole simulation (for a model checker's branches); the
/// factory is shared.
impl<P: SimProtocol + Clone> Clone for Sim<P> {
    fn clone(&self) -> Self {
        Self {
            seed: self.seed,
            rng: self.rng.clone(),
            now: self.now,
            seq: self.seq,
            queue: self.queue.clone(),
            nodes: self.nodes.clone(),
            copy_slot: Some(<Slot<P> as Clone>::clone),
            factory: self.factory.clone(),
            faults: self.faults,
            blocked: self.blocked.clone(),
            oracle: self.oracle,
            opinions: self.opinions.clone(),
            sent: self.sent.clone(),
            delivered: self.delivered,
            fd_dirty: self.fd_dirty,
            fd_inaccurate: self.fd_inaccurate,
            clean_since: self.clean_since,
            suspicions: self.suspicions.clone(),
            suspected_until: self.suspected_until.clone(),
            trace: self.trace,
            disk: self.disk,
            records: self.records.clone(),
            msg_seq: self.msg_seq,
            events_reported: self.events_reported,
            recording: self.recording.clone(),
        }
    }
}

/// One event waiting in a simulation's queue, as a model checker sees it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Pending<Id, Msg, Timer> {
    /// A message on its way.
    Deliver {
        /// Sender.
        from: Id,
        /// Receiver.
        to: Id,
        /// The message.
        msg: Msg,
    },
    /// A timer of `node`.
    Timer {
        /// The node.
        node: Id,
        /// The timer.
        timer: Timer,
        /// True when no other timer of the node is due before it.
        first: bool,
    },
    /// A sync of `node`'s disk.
    Sync {
        /// The node.
        node: Id,
    },
    /// The failure detector's report on `target` to `observer`.
    Report {
        /// Who learns.
        observer: Id,
        /// About whom.
        target: Id,
    },
}

/// The key of a queued event (its position in the queue).
pub type EventKey = (Duration, u64);

/// A queued event of core `P`'s simulation.
pub type PendingOf<P> = Pending<<P as Protocol>::Id, <P as Protocol>::Msg, <P as Protocol>::Timer>;

/// A queued event of core `P`'s simulation, borrowed.
pub(crate) type PendingRef<'a, P> =
    Pending<&'a <P as Protocol>::Id, &'a <P as Protocol>::Msg, &'a <P as Protocol>::Timer>;

/// Per (observer, target): what the observer's failure detector says of
/// the target, and of which life.
pub type Opinions<Id> = BTreeMap<(Id, Id), (MemberStatus, u64)>;

impl<P: SimProtocol> Sim<P> {
    /// The keys of the queued events, in queue order (what
    /// [`Sim::pending`] lists, without copying the events).
    pub(crate) fn pending_keys(&self) -> impl Iterator<Item = EventKey> + '_ {
        self.queue.keys().copied()
    }

    /// The queued event `key` if it is a message on its way: its sender,
    /// receiver and message (without copying them).
    pub(crate) fn delivery(&self, key: &EventKey) -> Option<(&P::Id, &P::Id, &P::Msg)> {
        match self.queue.get(key)? {
            Ev::Deliver { from, to, msg, .. } => Some((from, to, msg)),
            _ => None,
        }
    }

    /// Every queued event, in queue order, as [`Sim::pending`] lists it
    /// but borrowed (nothing is copied).
    pub(crate) fn pending_refs(&self) -> Vec<(EventKey, PendingRef<'_, P>)> {
        let mut seen_timer: BTreeSet<&P::Id> = BTreeSet::new();
        self.queue
            .iter()
            .map(|(k, ev)| (*k, Self::pending_ref(ev, &mut seen_timer)))
            .collect()
    }

    fn pending_ref<'a>(ev: &'a Ev<P>, seen_timer: &mut BTreeSet<&'a P::Id>) -> PendingRef<'a, P> {
        match ev {
            Ev::Deliver { from, to, msg, .. } => Pending::Deliver { from, to, msg },
            Ev::Timer { node, timer, .. } => Pending::Timer {
                node,
                timer,
                first: seen_timer.insert(node),
            },
            Ev::Sync { node, .. } => Pending::Sync { node },
            Ev::Recheck {
                observer, target, ..
            } => Pending::Report { observer, target },
        }
    }

    /// The print of the queued message `key` by `print` (computed once per
    /// send and kept with it, copies included: `print` must depend on the
    /// message only); `None` if `key` is not a queued message.
    pub(crate) fn message_print(
        &self,
        key: &EventKey,
        print: impl FnOnce(&PendingRef<'_, P>) -> u64,
    ) -> Option<u64> {
        match self.queue.get(key)? {
            ev @ Ev::Deliver { print: cached, .. } => {
                Some(*cached.get_or_init(|| print(&Self::pending_ref(ev, &mut BTreeSet::new()))))
            }
            _ => None,
        }
    }

    /// The prints of the queued events, for a model checker's
    /// fingerprint: of each message and failure-detector report (by
    /// `print`; a message's print is kept with it as
    /// [`Sim::message_print`] keeps it), and of each timer and sync with
    /// its node's (by `print` and `node`), in queue order.
    pub(crate) fn pending_prints(
        &self,
        print: impl Fn(&PendingRef<'_, P>) -> u64,
        node: impl Fn(&P::Id) -> u64,
    ) -> (Vec<u64>, Vec<(u64, u64)>) {
        let mut seen_timer: BTreeSet<&P::Id> = BTreeSet::new();
        let mut messages = Vec::new();
        let mut others = Vec::new();
        for ev in self.queue.values() {
            let p = Self::pending_ref(ev, &mut seen_timer);
            match (&p, ev) {
                (Pending::Deliver { .. }, Ev::Deliver { print: cached, .. }) => {
                    messages.push(*cached.get_or_init(|| print(&p)))
                }
                (Pending::Timer { node: at, .. } | Pending::Sync { node: at }, _) => {
                    others.push((node(at), print(&p)))
                }
                _ => messages.push(print(&p)),
            }
        }
        (messages, others)
    }

    /// Whether every queued event is a timer (nothing else is pending).
    pub(crate) fn only_timers_pending(&self) -> bool {
        self.queue.values().all(|ev| matches!(ev, Ev::Timer { .. }))
    }

    /// Every queued event, in queue order (for a model checker, which may
    /// run any of them next: [`Sim::run_key`]).
    pub fn pending(&self) -> Vec<(EventKey, PendingOf<P>)> {
        let mut seen_timer: BTreeSet<P::Id> = BTreeSet::new();
        self.queue
            .iter()
            .map(|(k, ev)| {
                let p = match ev {
                    Ev::Deliver { from, to, msg, .. } => Pending::Deliver {
                        from: from.clone(),
                        to: to.clone(),
                        msg: msg.clone(),
                    },
                    Ev::Timer { node, timer, .. } => Pending::Timer {
                        node: node.clone(),
                        timer: timer.clone(),
                        first: seen_timer.insert(node.clone()),
                    },
                    Ev::Sync { node, .. } => Pending::Sync { node: node.clone() },
                    Ev::Recheck {
                        observer, target, ..
                    } => Pending::Report {
                        observer: observer.clone(),
                        target: target.clone(),
                    },
                };
                (*k, p)
            })
            .collect()
    }

    /// Run the queued event `key` now, whatever its scheduled time (the
    /// clock moves to it if it is later, unless `frozen`: then every input
    /// sees the same time). `Ok(false)` if there is no such event.
    pub fn run_key(
        &mut self,
        key: EventKey,
        frozen: bool,
        obs: &mut impl Observer<P>,
    ) -> Result<bool, String> {
        let Some(ev) = self.queue.remove(&key) else {
            return Ok(false);
        };
        if !frozen {
            self.now = self.now.max(key.0);
        }
        self.run_event(ev, obs)?;
        self.after_step(obs)?;
        Ok(true)
    }

    /// Lose the queued message `key` (`false`: not a message).
    pub fn drop_key(&mut self, key: EventKey) -> bool {
        match self.queue.get(&key) {
            Some(Ev::Deliver { from, to, id, .. }) => {
                let (from, to, id) = (from.clone(), to.clone(), *id);
                self.trace_drop(&from, &to, id, "lost");
                self.queue.remove(&key);
                true
            }
            _ => false,
        }
    }

    /// Deliver the queued message `key` twice (`false`: not a message).
    pub fn duplicate_key(&mut self, key: EventKey) -> bool {
        let Some(ev @ Ev::Deliver { .. }) = self.queue.get(&key).cloned() else {
            return false;
        };
        self.schedule(key.0, ev);
        true
    }

    /// Every node's disk, life and liveness, for fingerprints.
    pub fn durable_states(&self) -> Vec<(&P::Id, u64, bool, &Recovered)> {
        self.nodes
            .iter()
            .map(|(id, s)| (id, s.life, s.core.is_some(), &s.disk))
            .collect()
    }

    /// Every member in order with its core's version and its core (`None`
    /// while crashed): the version changes whenever the core may have (a
    /// mutable access, a crash, a restart), so a copy of this simulation
    /// whose member shows the same version as before has the same core.
    pub fn core_versions(&self) -> impl Iterator<Item = (&P::Id, u64, Option<&P>)> {
        self.nodes
            .iter()
            .map(|(id, s)| (id, s.version, s.core.as_ref()))
    }

    /// How many events the members have reported to the observer so far
    /// (a model checker tells a step that the observer saw from one that
    /// it did not by comparing this before and after it).
    pub fn events_reported(&self) -> u64 {
        self.events_reported
    }

    /// The links cut now (from, to).
    pub fn blocked_links(&self) -> &BTreeSet<(P::Id, P::Id)> {
        &self.blocked
    }

    /// What each member's failure detector says of each other member (and
    /// of which life), for fingerprints.
    pub fn opinions(&self) -> &Opinions<P::Id> {
        &self.opinions
    }
}

/// The simulator: one core per member, a network, a membership oracle.
pub struct Sim<P: SimProtocol> {
    seed: u64,
    rng: ChaCha8Rng,
    now: Duration,
    seq: u64,
    queue: BTreeMap<(Duration, u64), Ev<P>>,
    /// Each node's slot, shared between copies of the simulation until
    /// one of them changes it (a model checker copies a state per step).
    nodes: BTreeMap<P::Id, Rc<Slot<P>>>,
    /// How to copy a shared slot before changing it: set by
    /// [`Sim::clone`], the only way a slot becomes shared.
    copy_slot: Option<CopySlot<P>>,
    factory: std::rc::Rc<std::cell::RefCell<Factory<P>>>,
    faults: NetFaults,
    blocked: BTreeSet<(P::Id, P::Id)>,
    oracle: OracleConfig,
    opinions: BTreeMap<(P::Id, P::Id), (MemberStatus, u64)>,
    sent: BTreeMap<&'static str, u64>,
    delivered: u64,
    fd_dirty: bool,
    fd_inaccurate: bool,
    clean_since: Duration,
    /// Pairs `(observer, target)` where a running observer believes a
    /// running target down, now.
    suspicions: BTreeSet<(P::Id, P::Id)>,
    /// Per pair: when such a false suspicion last ended or was reported.
    suspected_until: BTreeMap<(P::Id, P::Id), Duration>,
    trace: bool,
    disk: DiskModel,
    records: Option<Vec<DurabilityRecord<P::Id>>>,
    /// Messages sent so far (numbers them in traces).
    msg_seq: u64,
    /// Events reported to the observer so far (not part of the state: a
    /// model checker compares it before and after a step, see
    /// [`Sim::events_reported`]).
    events_reported: u64,
    recording: Option<sim_trace::SimTrace>,
}

impl<P: SimProtocol> Sim<P> {
    /// A simulation of `members`, each built by `factory(id, None)`; call
    /// [`Sim::start`] before running it.
    pub fn new(
        seed: u64,
        members: impl IntoIterator<Item = P::Id>,
        factory: Factory<P>,
        faults: NetFaults,
        oracle: OracleConfig,
    ) -> Self {
        let mut sim = Self {
            seed,
            rng: ChaCha8Rng::seed_from_u64(seed),
            now: Duration::ZERO,
            seq: 0,
            queue: BTreeMap::new(),
            nodes: BTreeMap::new(),
            copy_slot: None,
            factory: std::rc::Rc::new(std::cell::RefCell::new(factory)),
            faults,
            blocked: BTreeSet::new(),
            oracle,
            opinions: BTreeMap::new(),
            sent: BTreeMap::new(),
            delivered: 0,
            fd_dirty: false,
            fd_inaccurate: false,
            clean_since: Duration::ZERO,
            suspicions: BTreeSet::new(),
            suspected_until: BTreeMap::new(),
            trace: std::env::var_os("TROUPE_TRACE").is_some(),
            disk: DiskModel::default(),
            records: None,
            msg_seq: 0,
            events_reported: 0,
            recording: None,
        };
        let ids: Vec<P::Id> = members.into_iter().collect();
        for id in &ids {
            let core = (sim.factory.borrow_mut())(id, &Recovered::empty());
            sim.nodes.insert(
                id.clone(),
                Rc::new(Slot::new(Some(core), Recovered::empty())),
            );
        }
        for a in &ids {
            for b in &ids {
                if a != b {
                    sim.opinions
                        .insert((a.clone(), b.clone()), (MemberStatus::Up, 0));
                }
            }
        }
        sim
    }

    /// Start every core (`on_start` at the current time).
    pub fn start(&mut self, obs: &mut impl Observer<P>) -> Result<(), String> {
        let ids: Vec<P::Id> = self.nodes.keys().cloned().collect();
        for id in ids {
            self.input(&id, obs, |core, now, out| core.on_start(now, out))?;
        }
        self.after_step(obs)
    }

    /// Make syncs take time (see [`DiskModel`]); from now on.
    pub fn set_disk(&mut self, disk: DiskModel) {
        self.disk = disk;
    }

    /// Record durability steps for [`check_durability_order`] from now on.
    pub fn record_durability(&mut self) {
        self.records.get_or_insert_with(Vec::new);
    }

    /// Record the run as the framework's JSON-lines trace from now on
    /// (see [`sim_trace`]); [`Sim::take_trace`] takes the lines.
    pub fn record_trace(&mut self) {
        self.recording.get_or_insert_with(Default::default);
    }

    /// The trace lines recorded since the last call (none unless
    /// [`Sim::record_trace`] was called).
    pub fn take_trace(&mut self) -> Vec<String> {
        self.recording
            .as_mut()
            .map(|t| t.take())
            .unwrap_or_default()
    }

    /// Stamp trace lines with `at` instead of the clock (`None`: the
    /// clock again).
    pub fn set_trace_clock(&mut self, at: Option<Duration>) {
        if let Some(t) = self.recording.as_mut() {
            t.set_clock(at);
        }
    }

    /// Add a note at `node` to the trace (when recording).
    pub fn trace_note(&mut self, node: &P::Id, text: impl FnOnce() -> String) {
        let now = self.now;
        if let Some(t) = self.recording.as_mut() {
            t.note(now, &sim_trace::node_name(node), text());
        }
    }

    fn trace_event(&mut self, node: &P::Id, event: impl FnOnce() -> TraceEvent) {
        let now = self.now;
        if let Some(t) = self.recording.as_mut() {
            t.record(now, &sim_trace::node_name(node), event(), None);
        }
    }

    fn trace_drop(&mut self, from: &P::Id, to: &P::Id, seq: u64, reason: &str) {
        let from = sim_trace::node_name(from);
        self.trace_event(to, || TraceEvent::Drop {
            from,
            to: None,
            seq,
            reason: reason.into(),
        });
    }

    /// The durability steps recorded so far.
    pub fn durability_records(&self) -> &[DurabilityRecord<P::Id>] {
        self.records.as_deref().unwrap_or(&[])
    }

    /// What `id`'s disk holds (what a restart would rebuild it from).
    pub fn disk(&self, id: &P::Id) -> Option<&Recovered> {
        self.nodes.get(id).map(|s| &s.disk)
    }

    /// Feed one input to `node`'s core (if it runs), let it persist, and
    /// carry out its outputs. Returns false when the node is crashed.
    fn input(
        &mut self,
        node: &P::Id,
        obs: &mut impl Observer<P>,
        f: impl FnOnce(&mut P, Duration, &mut Out<P>),
    ) -> Result<bool, String> {
        let now = self.now;
        let mut out = Out::<P>::new();
        match self.core_mut(node) {
            Some(core) => {
                f(core, now, &mut out);
                core.persist(&mut out);
            }
            None => return Ok(false),
        }
        self.apply_outputs(node, out, obs)?;
        Ok(true)
    }

    fn record(&mut self, r: impl FnOnce() -> DurabilityRecord<P::Id>) {
        if let Some(v) = self.records.as_mut() {
            v.push(r());
        }
    }

    /// The seed this run was built from.
    pub fn seed(&self) -> u64 {
        self.seed
    }
    /// Current virtual time.
    pub fn now(&self) -> Duration {
        self.now
    }
    /// All members, crashed or not, in order.
    pub fn members(&self) -> Vec<P::Id> {
        self.nodes.keys().cloned().collect()
    }
    /// Members that are running (not crashed), in order.
    pub fn alive(&self) -> Vec<P::Id> {
        self.nodes
            .iter()
            .filter(|(_, s)| s.core.is_some())
            .map(|(k, _)| k.clone())
            .collect()
    }
    /// True when `id` is running.
    pub fn is_alive(&self, id: &P::Id) -> bool {
        self.nodes.get(id).is_some_and(|s| s.core.is_some())
    }
    /// How many times `id` has been restarted.
    pub fn life(&self, id: &P::Id) -> u64 {
        self.nodes.get(id).map_or(0, |s| s.life)
    }
    /// The running core of `id`.
    pub fn core(&self, id: &P::Id) -> Option<&P> {
        self.nodes.get(id).and_then(|s| s.core.as_ref())
    }
    fn core_mut(&mut self, id: &P::Id) -> Option<&mut P> {
        slot_mut(&mut self.nodes, self.copy_slot, id).and_then(|s| {
            s.version += 1;
            s.core.as_mut()
        })
    }
    /// All running cores, in member order.
    pub fn cores(&self) -> impl Iterator<Item = (&P::Id, &P)> {
        self.nodes
            .iter()
            .filter_map(|(k, s)| s.core.as_ref().map(|c| (k, c)))
    }
    /// Messages sent so far, per kind (including lost ones).
    pub fn sent_counts(&self) -> &BTreeMap<&'static str, u64> {
        &self.sent
    }
    /// Total messages sent so far.
    pub fn total_sent(&self) -> u64 {
        self.sent.values().sum()
    }
    /// Messages delivered so far (duplicates count twice).
    pub fn delivered(&self) -> u64 {
        self.delivered
    }
    /// Forget the message counts.
    pub fn reset_counts(&mut self) {
        self.sent.clear();
        self.delivered = 0;
    }
    /// Replace the network faults from now on (messages in flight keep theirs).
    pub fn set_faults(&mut self, faults: NetFaults) {
        self.faults = faults;
    }
    /// The network faults in force.
    pub fn faults(&self) -> NetFaults {
        self.faults
    }
    /// What `observer` currently believes about `target`.
    pub fn opinion(&self, observer: &P::Id, target: &P::Id) -> MemberStatus {
        self.opinions
            .get(&(observer.clone(), target.clone()))
            .map_or(MemberStatus::Up, |(s, _)| *s)
    }
    /// `None` while some running node believes another running node is down
    /// — a false suspicion, as a partition causes (or a restart the others
    /// have not noticed yet); otherwise the time since which no such false
    /// suspicion has been in force or reported (a quick restart is reported
    /// as `Down` + `Up`: the `Down` counts as a false suspicion of the
    /// running new incarnation).
    pub fn fd_clean_since(&self) -> Option<Duration> {
        if self.fd_inaccurate {
            None
        } else {
            Some(self.clean_since)
        }
    }
    /// The last time `observer` falsely suspected `target` (believed it down
    /// while both were running: a partition, or a restart `observer` had not
    /// noticed yet): the current time while it still does, `None` if it never
    /// did. A quick restart reported as `Down` + `Up` counts at the report.
    pub fn last_false_suspicion(&self, observer: &P::Id, target: &P::Id) -> Option<Duration> {
        let key = (observer.clone(), target.clone());
        if self.suspicions.contains(&key) {
            Some(self.now)
        } else {
            self.suspected_until.get(&key).copied()
        }
    }
    /// True when no link is cut.
    pub fn is_connected(&self) -> bool {
        self.blocked.is_empty()
    }
    /// True when nothing is scheduled.
    pub fn is_idle(&self) -> bool {
        self.queue.is_empty()
    }
    /// When the next scheduled event happens, if any.
    pub fn next_event_at(&self) -> Option<Duration> {
        self.queue.first_key_value().map(|((at, _), _)| *at)
    }

    fn schedule(&mut self, at: Duration, ev: Ev<P>) {
        self.seq += 1;
        self.queue.insert((at, self.seq), ev);
    }

    fn delay(&mut self) -> Duration {
        let lo = self.faults.min_delay.as_nanos() as u64;
        let hi = self.faults.max_delay.as_nanos() as u64;
        if hi <= lo {
            self.faults.min_delay
        } else {
            Duration::from_nanos(self.rng.gen_range(lo..=hi))
        }
    }

    fn apply_outputs(
        &mut self,
        from: &P::Id,
        out: Out<P>,
        obs: &mut impl Observer<P>,
    ) -> Result<(), String> {
        if let Some(e) = out.write_error {
            return Err(format!(
                "t={:?} node {from:?}: durable write failed: {e}",
                self.now
            ));
        }
        let life = self.life(from);
        if !out.writes.is_empty() {
            self.submit(from, life, out.writes)?;
        }
        let Some((needs, now)) = self
            .nodes
            .get(from)
            .map(|s| (s.submitted, s.held.is_empty() && s.submitted <= s.synced))
        else {
            return Ok(());
        };
        if now {
            return self.carry_out(
                from,
                life,
                needs,
                out.sends,
                out.events,
                Some(out.timers),
                obs,
            );
        }
        self.arm_timers(from, life, out.timers);
        if let Some(slot) = slot_mut(&mut self.nodes, self.copy_slot, from) {
            slot.held.push_back(Held {
                needs,
                sends: out.sends,
                events: out.events,
            });
        }
        Ok(())
    }

    /// Send, arm timers (in that order: the queue breaks ties by
    /// scheduling order) and report events.
    #[allow(clippy::too_many_arguments)]
    fn carry_out(
        &mut self,
        from: &P::Id,
        life: u64,
        needs: u64,
        sends: Vec<(P::Id, P::Msg)>,
        events: Vec<P::Event>,
        timers: Option<Vec<TimerOp<P::Timer>>>,
        obs: &mut impl Observer<P>,
    ) -> Result<(), String> {
        if needs > 0 || self.records.is_some() {
            let (n_sends, n_events) = (sends.len(), events.len());
            self.record(|| DurabilityRecord::Released {
                node: from.clone(),
                life,
                needs,
                sends: n_sends,
                events: n_events,
            });
        }
        for (to, msg) in sends {
            *self.sent.entry(P::msg_kind(&msg)).or_insert(0) += 1;
            self.msg_seq += 1;
            let id = self.msg_seq;
            if let Some(t) = self.recording.as_mut() {
                let (a, b) = (sim_trace::node_name(from), sim_trace::node_name(&to));
                t.send(self.now, &a, &b, id, &msg);
            }
            if to == *from {
                // A node talking to itself: local, never lost.
                let at = self.now;
                self.schedule(
                    at,
                    Ev::Deliver {
                        from: from.clone(),
                        to,
                        msg,
                        id,
                        print: Default::default(),
                    },
                );
                continue;
            }
            if self.blocked.contains(&(from.clone(), to.clone())) {
                self.trace_drop(from, &to, id, "partition");
                continue;
            }
            if self.faults.loss > 0.0 && self.rng.gen_bool(self.faults.loss) {
                self.trace_drop(from, &to, id, "lost");
                continue;
            }
            let copies = if self.faults.duplicate > 0.0 && self.rng.gen_bool(self.faults.duplicate)
            {
                2
            } else {
                1
            };
            for _ in 0..copies {
                let at = self.now + self.delay();
                self.schedule(
                    at,
                    Ev::Deliver {
                        from: from.clone(),
                        to: to.clone(),
                        msg: msg.clone(),
                        id,
                        print: Default::default(),
                    },
                );
            }
        }
        if let Some(timers) = timers {
            self.arm_timers(from, life, timers);
        }
        for ev in events {
            self.events_reported += 1;
            if self.trace {
                eprintln!("{:?} EVENT {from:?}: {ev:?}", self.now);
            }
            self.trace_note(from, || format!("{ev:?}"));
            obs.on_event(self.now, from, &ev)
                .map_err(|e| format!("t={:?} node {:?}: {e}", self.now, from))?;
        }
        Ok(())
    }

    fn arm_timers(&mut self, node: &P::Id, life: u64, ops: Vec<TimerOp<P::Timer>>) {
        for op in ops {
            let Some(slot) = slot_mut(&mut self.nodes, self.copy_slot, node) else {
                return;
            };
            let old = match op {
                TimerOp::Set { after, timer } => {
                    let (token, old) = slot.timers.set(timer.clone());
                    let at = self.now + after;
                    self.seq += 1;
                    let key = (at, self.seq);
                    slot.timer_keys.insert(token, key);
                    self.queue.insert(
                        key,
                        Ev::Timer {
                            node: node.clone(),
                            life,
                            token,
                            timer,
                        },
                    );
                    old
                }
                TimerOp::Cancel(timer) => slot.timers.cancel(&timer),
            };
            if let Some(key) = old.and_then(|t| slot.timer_keys.remove(&t)) {
                self.queue.remove(&key);
            }
        }
    }

    /// Hand one input's writes to `node`'s disk.
    fn submit(&mut self, node: &P::Id, life: u64, writes: Vec<Write>) -> Result<(), String> {
        let instant = self.disk.instant();
        let Some(slot) = slot_mut(&mut self.nodes, self.copy_slot, node) else {
            return Ok(());
        };
        slot.submitted += 1;
        let ticket = slot.submitted;
        slot.pending.push_back((ticket, writes));
        self.record(|| DurabilityRecord::Wrote {
            node: node.clone(),
            life,
            ticket,
        });
        if instant {
            self.sync_to(node, life, ticket)
        } else {
            self.start_sync(node, life);
            Ok(())
        }
    }

    /// Start a sync of everything submitted so far, unless one is running.
    fn start_sync(&mut self, node: &P::Id, life: u64) {
        let Some(slot) = self.nodes.get(node) else {
            return;
        };
        if slot.syncing.is_some() || slot.submitted == slot.synced {
            return;
        }
        let upto = slot.submitted;
        let lo = self.disk.min_sync.as_nanos() as u64;
        let hi = self.disk.max_sync.as_nanos() as u64;
        let took = Duration::from_nanos(if hi <= lo {
            lo
        } else {
            self.rng.gen_range(lo..=hi)
        });
        if let Some(slot) = slot_mut(&mut self.nodes, self.copy_slot, node) {
            slot.syncing = Some(upto);
        }
        let at = self.now + took;
        self.schedule(
            at,
            Ev::Sync {
                node: node.clone(),
                life,
                upto,
            },
        );
    }

    /// Put every submission up to `upto` on the disk.
    fn sync_to(&mut self, node: &P::Id, life: u64, upto: u64) -> Result<(), String> {
        let now = self.now;
        let Some(slot) = slot_mut(&mut self.nodes, self.copy_slot, node) else {
            return Ok(());
        };
        while slot.pending.front().is_some_and(|(t, _)| *t <= upto) {
            if let Some((t, writes)) = slot.pending.pop_front() {
                slot.disk.apply_owned(writes).map_err(|e| {
                    format!("t={now:?} node {node:?}: durable write {t} refused: {e}")
                })?;
            }
        }
        slot.synced = slot.synced.max(upto);
        slot.syncing = None;
        self.record(|| DurabilityRecord::Synced {
            node: node.clone(),
            life,
            upto,
        });
        Ok(())
    }

    /// A sync finished: release what waited for it, start the next one.
    fn synced(
        &mut self,
        node: &P::Id,
        life: u64,
        upto: u64,
        obs: &mut impl Observer<P>,
    ) -> Result<(), String> {
        self.sync_to(node, life, upto)?;
        while let Some(h) = slot_mut(&mut self.nodes, self.copy_slot, node).and_then(|s| {
            let ready = s.held.front().is_some_and(|h| h.needs <= s.synced);
            ready.then(|| s.held.pop_front()).flatten()
        }) {
            self.carry_out(node, life, h.needs, h.sends, h.events, None, obs)?;
        }
        self.start_sync(node, life);
        Ok(())
    }

    fn after_step(&mut self, obs: &mut impl Observer<P>) -> Result<(), String> {
        if self.fd_dirty {
            self.fd_dirty = false;
            let was = self.fd_inaccurate;
            let now: BTreeSet<(P::Id, P::Id)> = self
                .opinions
                .iter()
                .filter(|((o, t), (s, _))| {
                    *s == MemberStatus::Down && self.is_alive(o) && self.is_alive(t)
                })
                .map(|(k, _)| k.clone())
                .collect();
            for ended in self.suspicions.difference(&now) {
                self.suspected_until.insert(ended.clone(), self.now);
            }
            self.suspicions = now;
            self.fd_inaccurate = !self.suspicions.is_empty();
            if was && !self.fd_inaccurate {
                self.clean_since = self.now;
            }
        }
        obs.check(self)
            .map_err(|e| format!("t={:?}: invariant violated: {e}", self.now))
    }

    /// Run a local command on `node` (e.g. `|c, now, out| c.request(now, out)`).
    /// Returns `Ok(false)` if the node is crashed (the command is not run).
    pub fn command(
        &mut self,
        node: &P::Id,
        obs: &mut impl Observer<P>,
        f: impl FnOnce(&mut P, Duration, &mut Out<P>),
    ) -> Result<bool, String> {
        if self.trace {
            eprintln!("{:?} command at {node:?}", self.now);
        }
        if !self.input(node, obs, f)? {
            return Ok(false);
        }
        self.after_step(obs)?;
        Ok(true)
    }

    /// Process the next scheduled event. Returns `Ok(false)` when nothing is left.
    pub fn step(&mut self, obs: &mut impl Observer<P>) -> Result<bool, String> {
        let Some(((at, _), ev)) = self.queue.pop_first() else {
            return Ok(false);
        };
        self.now = self.now.max(at);
        let now = self.now;
        if self.trace {
            match &ev {
                Ev::Deliver { from, to, msg, .. } => {
                    eprintln!("{now:?} deliver {from:?} -> {to:?}: {msg:?}")
                }
                Ev::Timer { node, timer, .. } => eprintln!("{now:?} timer {node:?}: {timer:?}"),
                Ev::Sync { node, upto, .. } => eprintln!("{now:?} sync {node:?} up to {upto}"),
                Ev::Recheck { .. } => {}
            }
        }
        self.run_event(ev, obs)?;
        self.after_step(obs)?;
        Ok(true)
    }

    /// Carry out one scheduled event (already taken off the queue).
    fn run_event(&mut self, ev: Ev<P>, obs: &mut impl Observer<P>) -> Result<(), String> {
        match ev {
            Ev::Deliver {
                from, to, msg, id, ..
            } => {
                if self.is_alive(&to) {
                    let sender = sim_trace::node_name(&from);
                    self.trace_event(&to, || TraceEvent::Deliver {
                        from: sender,
                        seq: id,
                    });
                } else {
                    self.trace_drop(&from, &to, id, "crashed");
                }
                if self.input(&to, obs, |core, now, out| {
                    core.on_message(now, from, msg, out)
                })? {
                    self.delivered += 1;
                }
            }
            Ev::Timer {
                node,
                life,
                token,
                timer,
            } => {
                let current = self.life(&node) == life
                    && slot_mut(&mut self.nodes, self.copy_slot, &node).is_some_and(|s| {
                        s.timer_keys.remove(&token);
                        s.timers.fire(token)
                    });
                if current {
                    let name = format!("{timer:?}");
                    self.trace_event(&node, || TraceEvent::Timer { name });
                    self.input(&node, obs, |core, now, out| core.on_timer(now, timer, out))?;
                }
            }
            Ev::Sync { node, life, upto } => {
                if self.life(&node) == life && self.is_alive(&node) {
                    self.synced(&node, life, upto, obs)?;
                }
            }
            Ev::Recheck {
                observer,
                observer_life,
                target,
            } => {
                if self.is_alive(&observer) && self.life(&observer) == observer_life {
                    self.recheck(&observer, &target, obs)?;
                }
            }
        }
        Ok(())
    }

    /// Process every event scheduled up to `until`, then set the clock to `until`.
    pub fn run_until(&mut self, until: Duration, obs: &mut impl Observer<P>) -> Result<(), String> {
        while let Some((&(at, _), _)) = self.queue.first_key_value() {
            if at > until {
                break;
            }
            self.step(obs)?;
        }
        self.now = self.now.max(until);
        Ok(())
    }

    /// Run for `d` of virtual time.
    pub fn run_for(&mut self, d: Duration, obs: &mut impl Observer<P>) -> Result<(), String> {
        let until = self.now + d;
        self.run_until(until, obs)
    }

    fn truth(&self, observer: &P::Id, target: &P::Id) -> MemberStatus {
        let reachable = self.is_alive(target)
            && !self.blocked.contains(&(observer.clone(), target.clone()))
            && !self.blocked.contains(&(target.clone(), observer.clone()));
        if reachable {
            MemberStatus::Up
        } else {
            MemberStatus::Down
        }
    }

    fn recheck(
        &mut self,
        observer: &P::Id,
        target: &P::Id,
        obs: &mut impl Observer<P>,
    ) -> Result<(), String> {
        let truth = self.truth(observer, target);
        let life = self.life(target);
        let key = (observer.clone(), target.clone());
        let (status, seen_life) = self
            .opinions
            .get(&key)
            .copied()
            .unwrap_or((MemberStatus::Up, life));
        let mut reports = Vec::new();
        match (truth, status) {
            (MemberStatus::Up, MemberStatus::Up) if seen_life != life => {
                reports.push(MemberStatus::Down);
                reports.push(MemberStatus::Up);
            }
            (MemberStatus::Up, MemberStatus::Up) => {}
            (MemberStatus::Up, _) => reports.push(MemberStatus::Up),
            (_, MemberStatus::Up) => reports.push(MemberStatus::Down),
            _ => {}
        }
        if reports.is_empty() {
            return Ok(());
        }
        let last = reports.last().copied().unwrap_or(MemberStatus::Up);
        let op_life = if last == MemberStatus::Up {
            life
        } else {
            seen_life
        };
        self.opinions.insert(key.clone(), (last, op_life));
        self.fd_dirty = true;
        if reports.contains(&MemberStatus::Down) && self.is_alive(target) {
            // A Down report about a running member (the old incarnation of a
            // restarted node, or a partition): a false suspicion from now on.
            self.clean_since = self.clean_since.max(self.now);
            self.suspected_until.insert(key, self.now);
        }
        let now = self.now;
        for status in reports {
            self.trace_note(observer, || {
                format!("failure detector: {target:?} {status:?}")
            });
            if self.trace {
                eprintln!("{now:?} membership at {observer:?}: {target:?} {status:?}");
            }
            let change = MemberEvent {
                member: target.clone(),
                status,
                at: now,
            };
            self.input(observer, obs, |core, now, out| {
                core.on_membership(now, change, out)
            })?;
        }
        Ok(())
    }

    /// Schedule the oracle to re-examine every pair involving `who` (or all
    /// pairs when `None`) after the appropriate detection delay.
    fn schedule_rechecks(&mut self, who: Option<&P::Id>) {
        let ids = self.members();
        for o in &ids {
            if !self.is_alive(o) {
                continue;
            }
            for t in &ids {
                if o == t {
                    continue;
                }
                if let Some(w) = who {
                    if o != w && t != w {
                        continue;
                    }
                }
                let delay = if self.truth(o, t) == MemberStatus::Up {
                    self.oracle.up_after
                } else {
                    self.oracle.down_after
                };
                let at = self.now + delay;
                let observer_life = self.life(o);
                self.schedule(
                    at,
                    Ev::Recheck {
                        observer: o.clone(),
                        observer_life,
                        target: t.clone(),
                    },
                );
            }
        }
    }

    /// Crash `node`: its state is lost except what its disk holds (the
    /// writes of a sync in flight survive all together or not at all, a
    /// seeded choice; later ones are lost); messages to it are dropped until
    /// it restarts, and its held outputs and timers are gone.
    pub fn crash(&mut self, node: &P::Id, obs: &mut impl Observer<P>) -> Result<(), String> {
        if self.trace {
            eprintln!("{:?} CRASH {node:?}", self.now);
        }
        let (life, syncing) = match self.nodes.get(node) {
            Some(s) if s.core.is_some() => (s.life, s.syncing),
            _ => return self.after_step(obs),
        };
        self.trace_event(node, || TraceEvent::Crash);
        if let Some(upto) = syncing {
            if self.rng.gen_bool(0.5) {
                self.sync_to(node, life, upto)?;
            }
        }
        if let Some(slot) = slot_mut(&mut self.nodes, self.copy_slot, node) {
            slot.core = None;
            slot.version += 1;
            slot.pending.clear();
            slot.syncing = None;
            slot.held.clear();
            slot.timers.clear();
            for key in std::mem::take(&mut slot.timer_keys).into_values() {
                self.queue.remove(&key);
            }
            let (kept, submitted) = (slot.synced, slot.submitted);
            self.record(|| DurabilityRecord::Crashed {
                node: node.clone(),
                life,
                kept,
                submitted,
                in_flight: syncing,
            });
        }
        self.fd_dirty = true;
        self.schedule_rechecks(Some(node));
        self.after_step(obs)
    }

    /// Restart a crashed `node` from its durable state (a new incarnation; its
    /// old timers never fire). It starts believing every member is up; the
    /// oracle corrects it after the detection delay.
    pub fn restart(&mut self, node: &P::Id, obs: &mut impl Observer<P>) -> Result<(), String> {
        let Some(slot) = slot_mut(&mut self.nodes, self.copy_slot, node) else {
            return Ok(());
        };
        if slot.core.is_some() {
            return Ok(());
        }
        slot.life += 1;
        slot.submitted = 0;
        slot.synced = 0;
        if self.trace {
            eprintln!("{:?} RESTART {node:?}", self.now);
        }
        let incarnation = slot.life.to_string();
        let disk = slot.disk.clone();
        self.trace_event(node, || TraceEvent::Restart { incarnation });
        let core = (self.factory.borrow_mut())(node, &disk);
        if let Some(slot) = slot_mut(&mut self.nodes, self.copy_slot, node) {
            slot.core = Some(core);
            slot.version += 1;
        }
        for t in self.members() {
            if t != *node {
                let life = self.life(&t);
                self.opinions
                    .insert((node.clone(), t), (MemberStatus::Up, life));
            }
        }
        self.fd_dirty = true;
        self.input(node, obs, |core, now, out| core.on_start(now, out))?;
        self.schedule_rechecks(Some(node));
        self.after_step(obs)
    }

    /// Cut every link between different groups (both directions). Members
    /// not named in any group form one more group.
    pub fn partition(
        &mut self,
        groups: &[Vec<P::Id>],
        obs: &mut impl Observer<P>,
    ) -> Result<(), String> {
        if self.trace {
            eprintln!("{:?} PARTITION {groups:?}", self.now);
        }
        for id in self.members() {
            self.trace_note(&id, || format!("PARTITION {groups:?}"));
        }
        let ids = self.members();
        let group_of = |id: &P::Id| {
            groups
                .iter()
                .position(|g| g.contains(id))
                .unwrap_or(usize::MAX)
        };
        for a in &ids {
            for b in &ids {
                if a != b && group_of(a) != group_of(b) {
                    self.blocked.insert((a.clone(), b.clone()));
                }
            }
        }
        self.schedule_rechecks(None);
        self.after_step(obs)
    }

    /// Cut the link from `from` to `to` only (a one-way partition).
    pub fn block(
        &mut self,
        from: &P::Id,
        to: &P::Id,
        obs: &mut impl Observer<P>,
    ) -> Result<(), String> {
        if self.trace {
            eprintln!("{:?} BLOCK {from:?} -> {to:?}", self.now);
        }
        self.trace_note(from, || format!("BLOCK {from:?} -> {to:?}"));
        self.blocked.insert((from.clone(), to.clone()));
        self.schedule_rechecks(None);
        self.after_step(obs)
    }

    /// Restore every cut link.
    pub fn heal(&mut self, obs: &mut impl Observer<P>) -> Result<(), String> {
        if !self.blocked.is_empty() {
            if self.trace {
                eprintln!("{:?} HEAL", self.now);
            }
            for id in self.members() {
                self.trace_note(&id, || "HEAL".to_string());
            }
            self.blocked.clear();
            self.schedule_rechecks(None);
        }
        self.after_step(obs)
    }
}

/// The seeds a property test should run: only `TROUPE_SEED` when it is set,
/// else `0..count` (`TROUPE_SEEDS` overrides `count`).
pub fn seeds(count: u64) -> Vec<u64> {
    if let Some(s) = std::env::var("TROUPE_SEED")
        .ok()
        .and_then(|v| v.trim().parse::<u64>().ok())
    {
        return vec![s];
    }
    let count = std::env::var("TROUPE_SEEDS")
        .ok()
        .and_then(|v| v.trim().parse::<u64>().ok())
        .unwrap_or(count);
    (0..count).collect()
}

/// Run `scenario` for each of [`seeds`]`(count)`; panic on the first failure
/// with the seed and the command that replays it.
pub fn check_seeds(name: &str, count: u64, mut scenario: impl FnMut(u64) -> Result<(), String>) {
    for seed in seeds(count) {
        if let Err(e) = scenario(seed) {
            panic!(
                "{name}: seed {seed} failed: {e}\n  replay with: TROUPE_SEED={seed} cargo test -p troupe-protocols {name}"
            );
        }
    }
}

/// The state a [`SnapshotCore`] left on a simulated disk (`None` when it
/// saved nothing yet). A state that does not decode is a bug of the core
/// under test: it panics, naming it.
pub fn recover_state<P: SnapshotCore>(r: &Recovered) -> Option<P::State> {
    P::recover(r).unwrap_or_else(|e| {
        panic!(
            "{}: recovering its state from the simulated disk: {e}",
            std::any::type_name::<P>()
        )
    })
}

/// A simulation of members `1..=nodes`, each core built by `make(id,
/// members, state)` from what its disk holds ([`recover_state`]): how every
/// family scenario (mutex, election, commit, broadcast) starts.
pub fn snapshot_sim<P>(
    seed: u64,
    nodes: u32,
    faults: NetFaults,
    oracle: OracleConfig,
    make: impl Fn(u32, Vec<u32>, Option<P::State>) -> P + 'static,
) -> Sim<P>
where
    P: SimProtocol<Id = u32> + SnapshotCore,
{
    let members: Vec<u32> = (1..=nodes).collect();
    let m2 = members.clone();
    Sim::new(
        seed,
        members,
        Box::new(move |id, r| make(*id, m2.clone(), recover_state::<P>(r))),
        faults,
        oracle,
    )
}

/// Convenience: milliseconds as a [`Duration`].
pub fn ms(n: u64) -> Duration {
    Duration::from_millis(n)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A tiny core: on `ping` it answers `pong`; it counts what it received
    /// and remembers membership reports. Durable: the number of pongs seen.
    #[derive(Debug, Default, Clone)]
    struct Echo {
        pongs: u64,
        reports: Vec<(u32, MemberStatus)>,
    }

    impl Protocol for Echo {
        type Id = u32;
        type Msg = bool; // true = ping, false = pong
        type Timer = ();
        type Event = u64;
        fn on_start(&mut self, _now: Duration, _out: &mut Outputs<u32, bool, (), u64>) {}
        fn on_message(
            &mut self,
            _now: Duration,
            from: u32,
            ping: bool,
            out: &mut Outputs<u32, bool, (), u64>,
        ) {
            if ping {
                out.send(from, false);
            } else {
                self.pongs += 1;
                out.put("pongs", &self.pongs);
                out.emit(self.pongs);
            }
        }
        fn on_timer(&mut self, _now: Duration, _t: (), _out: &mut Outputs<u32, bool, (), u64>) {}
        fn on_membership(
            &mut self,
            _now: Duration,
            change: MemberEvent<u32>,
            _out: &mut Outputs<u32, bool, (), u64>,
        ) {
            self.reports.push((change.member, change.status));
        }
    }

    impl SimProtocol for Echo {
        fn msg_kind(ping: &bool) -> &'static str {
            if *ping {
                "ping"
            } else {
                "pong"
            }
        }
    }

    fn sim(seed: u64, faults: NetFaults) -> Sim<Echo> {
        Sim::new(
            seed,
            [1, 2, 3],
            Box::new(|_, d| Echo {
                pongs: d.get_as("pongs").unwrap().unwrap_or(0),
                ..Echo::default()
            }),
            faults,
            OracleConfig::default(),
        )
    }

    fn ping_all(s: &mut Sim<Echo>, rounds: u32) -> Vec<(Duration, u32, u64)> {
        struct Log(Vec<(Duration, u32, u64)>);
        impl Observer<Echo> for Log {
            fn on_event(&mut self, now: Duration, node: &u32, e: &u64) -> Result<(), String> {
                self.0.push((now, *node, *e));
                Ok(())
            }
        }
        let mut log = Log(Vec::new());
        s.start(&mut log).unwrap();
        for _ in 0..rounds {
            for to in [2, 3] {
                s.command(&1, &mut log, |_, _, out| out.send(to, true))
                    .unwrap();
            }
            s.run_for(ms(50), &mut log).unwrap();
        }
        log.0
    }

    #[test]
    fn same_seed_same_run_and_other_seed_other_run() {
        let a = ping_all(&mut sim(5, NetFaults::chaotic()), 50);
        let b = ping_all(&mut sim(5, NetFaults::chaotic()), 50);
        let c = ping_all(&mut sim(6, NetFaults::chaotic()), 50);
        assert_eq!(a, b);
        assert_ne!(a, c);
    }

    #[test]
    fn the_default_message_kind_is_the_variant_name_in_kebab_case() {
        #[derive(Debug)]
        #[allow(dead_code)]
        enum M {
            Request { ts: u64 },
            RegenAck(u8),
            Newer,
        }
        assert_eq!(variant_kind(&M::Request { ts: 1 }), "request");
        assert_eq!(variant_kind(&M::RegenAck(2)), "regen-ack");
        assert_eq!(variant_kind(&M::Newer), "newer");
        let (a, b) = (variant_kind(&M::Newer), variant_kind(&M::Newer));
        assert!(std::ptr::eq(a, b), "allocated once");
    }

    #[test]
    fn loss_and_duplication_show_in_the_counts() {
        let mut s = sim(1, NetFaults::reliable(ms(5)));
        ping_all(&mut s, 100);
        assert_eq!(s.sent_counts().get("ping"), Some(&200));
        assert_eq!(s.core(&1).map(|c| c.pongs), Some(200));
        let mut s = sim(
            1,
            NetFaults {
                loss: 0.2,
                duplicate: 0.2,
                ..NetFaults::chaotic()
            },
        );
        ping_all(&mut s, 100);
        let pongs = s.core(&1).map_or(0, |c| c.pongs);
        assert!(pongs != 200 && pongs > 100, "{pongs}");
    }

    #[test]
    fn partitions_block_and_the_oracle_reports_down_then_up() {
        let mut s = sim(2, NetFaults::reliable(ms(5)));
        let obs = &mut ();
        s.start(obs).unwrap();
        s.partition(&[vec![1]], obs).unwrap();
        s.command(&1, obs, |_, _, out| out.send(2, true)).unwrap();
        s.run_for(ms(200), obs).unwrap();
        assert_eq!(
            s.core(&1).map(|c| c.pongs),
            Some(0),
            "message crossed a partition"
        );
        assert_eq!(
            s.opinion(&1, &2),
            MemberStatus::Up,
            "before the detection delay"
        );
        s.run_for(ms(200), obs).unwrap();
        assert_eq!(s.opinion(&1, &2), MemberStatus::Down);
        assert_eq!(s.opinion(&2, &1), MemberStatus::Down);
        assert_eq!(s.opinion(&2, &3), MemberStatus::Up);
        assert!(
            s.fd_clean_since().is_none(),
            "a partition is a false suspicion"
        );
        assert_eq!(s.last_false_suspicion(&1, &2), Some(s.now()), "in force");
        assert_eq!(s.last_false_suspicion(&2, &1), Some(s.now()));
        assert_eq!(s.last_false_suspicion(&2, &3), None, "2 and 3 agree");
        s.heal(obs).unwrap();
        s.run_for(ms(400), obs).unwrap();
        assert_eq!(s.opinion(&1, &2), MemberStatus::Up);
        assert!(s.fd_clean_since().is_some());
        let ended = s.last_false_suspicion(&1, &2).expect("it happened");
        assert!(ended < s.now() && Some(ended) == s.fd_clean_since());
        assert_eq!(s.last_false_suspicion(&2, &3), None);
        let reports = s.core(&1).map(|c| c.reports.clone()).unwrap();
        assert_eq!(
            reports,
            vec![
                (2, MemberStatus::Down),
                (3, MemberStatus::Down),
                (2, MemberStatus::Up),
                (3, MemberStatus::Up)
            ]
        );
    }

    #[test]
    fn a_copy_runs_on_its_own_and_leaves_the_original_as_it_was() {
        // The copies share their node slots until one changes them
        // (copy-on-write): what a copy does must not show in the other.
        let ping = |s: &mut Sim<Echo>, rounds: u32| {
            for _ in 0..rounds {
                for to in [2, 3] {
                    s.command(&1, &mut (), |_, _, out| out.send(to, true))
                        .unwrap();
                }
                s.run_for(ms(50), &mut ()).unwrap();
            }
        };
        let pongs = |s: &Sim<Echo>| s.core(&1).map(|c| c.pongs);
        let mut s = sim(2, NetFaults::reliable(ms(5)));
        ping_all(&mut s, 2);
        let before = (pongs(&s), s.disk(&1).cloned());
        assert_eq!(before.0, Some(4));
        let mut copy = s.clone();
        ping(&mut copy, 3);
        assert_eq!(pongs(&copy), Some(10));
        assert_eq!((pongs(&s), s.disk(&1).cloned()), before);
        // And the original goes on from where it was.
        ping(&mut s, 1);
        assert_eq!(pongs(&s), Some(6));
        assert_eq!(pongs(&copy), Some(10));
    }

    #[test]
    fn a_one_way_cut_is_seen_from_both_ends() {
        let mut s = sim(3, NetFaults::reliable(ms(5)));
        let obs = &mut ();
        s.start(obs).unwrap();
        s.block(&1, &2, obs).unwrap();
        s.command(&2, obs, |_, _, out| out.send(1, true)).unwrap();
        s.run_for(ms(400), obs).unwrap();
        // 2 -> 1 works, the pong 1 -> 2 is cut.
        assert_eq!(s.core(&2).map(|c| c.pongs), Some(0));
        assert_eq!(s.opinion(&1, &2), MemberStatus::Down);
        assert_eq!(s.opinion(&2, &1), MemberStatus::Down);
    }

    #[test]
    fn a_restart_keeps_only_durable_state_and_is_reported_down_then_up() {
        let mut s = sim(4, NetFaults::reliable(ms(5)));
        ping_all(&mut s, 3);
        let obs = &mut ();
        s.command(&1, obs, |c, _, _| c.reports.push((9, MemberStatus::Left)))
            .unwrap();
        s.crash(&1, obs).unwrap();
        assert!(!s.is_alive(&1));
        s.command(&2, obs, |_, _, out| out.send(1, true)).unwrap();
        s.run_for(ms(50), obs).unwrap();
        s.restart(&1, obs).unwrap();
        assert_eq!(s.life(&1), 1);
        let c = s.core(&1).map(|c| (c.pongs, c.reports.len()));
        assert_eq!(c, Some((6, 0)), "durable pongs kept, volatile reports lost");
        s.run_for(ms(400), obs).unwrap();
        let seen = s.core(&2).map(|c| c.reports.clone()).unwrap();
        assert_eq!(seen, vec![(1, MemberStatus::Down), (1, MemberStatus::Up)]);
        // The restart was noticed late: 2 suspected the running new life.
        assert!(s.last_false_suspicion(&2, &1).is_some());
        assert_eq!(s.last_false_suspicion(&1, &2), None);
    }
}
