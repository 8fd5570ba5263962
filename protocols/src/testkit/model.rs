//! Model checking: an exhaustive search over the orders in which a
//! simulation's events can happen, with faults within bounds, for the
//! shortest path that breaks an invariant.
//!
//! A state of the search is a whole [`Sim`] — every node's core, the
//! messages in flight, the pending timers, the disks — together with the
//! [`Observer`] that checks it (the same observers the seeded chaos tests
//! use, so every property they check is checked here) and what is left of
//! the fault budget. From a state, the search may take any of these steps:
//!
//! - deliver any message in flight (any order: the network is asynchronous);
//! - fire a node's next timer (by default only when nothing else is
//!   pending: timeouts are longer than message delays; see [`Timers`]);
//! - finish any pending disk sync, and deliver any pending failure-detector
//!   report (with a simulated disk or detector that has them);
//! - run any client command of the model that has not run yet on this path;
//! - within the bounds: drop or duplicate a message in flight, crash a
//!   running node (losing what its disk had not synced), restart a crashed
//!   one from its disk, cut the group in two (the detector then reports the
//!   other side down: a wrong suspicion, since nobody crashed) and heal it.
//!
//! The observer checks every state reached; breadth-first search
//! ([`Search::bfs`]) returns the shortest counterexample, depth-first
//! ([`Search::dfs`]) goes deep with little memory. States are identified by a
//! 64-bit fingerprint of their `Debug` forms (cores, in-flight messages as a
//! multiset, timers, disks, observer, budget): two states with the same
//! fingerprint are explored once (the pending timers and syncs count per
//! member, in their order at that member, not in the order different
//! members armed them). A fingerprint collision could hide a
//! state (with 64 bits and millions of states, a chance around 1e-7).
//! A core's part of the print is cached while the core is unchanged (the
//! simulator versions each core), so a step reformats only the cores it
//! touched; a message's print is computed once per send; a step's
//! description is formatted only for counterexamples. Copying a state
//! for a successor is cheap where the step left things alone: the
//! simulator's node slots (core, disk, timers) are shared between copies
//! until one of them changes.
//!
//! A model may start *settled* ([`Model::settled`]): the start-up's
//! messages (an embedded election, joins) run in queue order before the
//! search begins, which then checks the protocol from that one outcome.
//!
//! **Eventually** properties are checked on *quiescent* states — nothing in
//! flight, no sync or report pending, every command run: only timers left —
//! with [`Model::at_rest`]; under fair scheduling a run reaches such a state
//! once the protocol has finished its work, so a quiescent state where the
//! goal does not hold is a counterexample (e.g. a lock requested and never
//! granted with every message delivered).
//!
//! A counterexample is the list of steps from the initial state; it prints
//! as readable lines, is written as JSON lines ([`Counterexample::to_json_lines`])
//! and replays deterministically ([`replay`]): every step is the index of a
//! choice among the choices of its state, which are listed in a fixed order.
//!
//! ## Partial-order reduction: sleep sets
//!
//! On by default ([`Model::partial_order`], [`Search::partial_order`];
//! only with the clock frozen). Two steps *commute* when each acts on one
//! member's core — a message delivered to it, its disk's sync, a command
//! of the model on it — not the same member's, and the observer did not
//! see both (a step is *seen* when a member reports an event or a command
//! runs). Such a pair is independent: each changes only its own core and
//! disk and adds messages to the multiset in flight, neither disables
//! the other, and the observer, which saw at most one of them, sees the
//! same events in the same order either way. Everything else — timers
//! (with [`Timers::WhenIdle`] a delivery that sends disables them), the
//! failure detectors' reports, drops, duplicates, crashes, restarts,
//! partitions, heals, and a step that changed another member's core than
//! its own (an eager command set off elsewhere: checked after each step)
//! — is dependent on every step.
//!
//! The search keeps, with every state seen, a *sleep set* (Godefroid): the
//! steps already explored from an earlier state on the path, or before this
//! one from the same state, that commute with the steps since; a step
//! asleep is not taken (the same steps in the other order reach the same
//! state and are explored). A successor's sleep set is the steps asleep in
//! its parent or taken from the parent before it that commute with the
//! step to it. A state reached again with a sleep set that lacks some of
//! the steps asleep in the one it was stored with is stored with the
//! intersection, and the steps that woke up are taken from it (the pitfall
//! of sleep sets with state caching: without this, a step could stay
//! asleep on every path).
//!
//! What it preserves. With sleep sets alone (no persistent sets), every
//! state reachable within the bounds is still reached, at its shortest
//! distance: for any path from the initial state, the search explores a
//! path of the same steps, each member's in the same order, with the same
//! length (by induction on the path: the first of its steps in the order
//! the state lists its choices that can be moved to the front is not
//! asleep and is taken, and the rest is not led by a step asleep in the
//! successor). So the observer's checks of every step and state, and the
//! goals on quiescent states ([`Model::at_rest`]), are checked as without
//! the reduction, and breadth-first search still returns a shortest
//! counterexample (of the same length; it may be another path of that
//! length). What it saves is steps taken (`generated`), not states: states
//! that differ only in what an observer counts in the order things
//! happened (counters of checks done) merge, so `unique` may drop a
//! little. Its soundness rests on two things the search cannot see: a
//! model's commands are local ([`Model::partial_order`]), and an observer's
//! `check` after a step does not record anything that depends on the
//! order of two unseen steps of different members other than such
//! counters.
//!
//! It does not cut the states of protocols whose members receive
//! messages from several others in any order (every broadcast): a
//! member's next message may be one not sent yet, so no subset of the
//! steps enabled now is persistent (safe to explore alone) without
//! knowing the future, which is what dynamic partial-order reduction
//! computes on a depth-first search; not done.
//!
//! ## Inert-first reduction
//!
//! On by default where the model declares *inert* deliveries
//! ([`Model::inert`], [`Search::inert_first`]): the broadcasts on the
//! reliable engine, whose every broadcast costs `N(N-1)` messages of which
//! most only tell a member who else holds a message (an acknowledgement, a
//! copy of a message it holds). From a state where no fault can follow (no
//! drop, duplicate, crash or partition left in the budget, none in force,
//! no member down that may restart) and with [`Timers::WhenIdle`], the
//! search takes the first inert delivery enabled *alone*
//! ([`Report::forced`]). That set of one step is persistent: the step
//! stays enabled and inert until taken (the model's word: a member does
//! not forget what it holds without a crash), and every step that can be
//! taken before it commutes with it — a step at another member by the
//! independence above, a step at its receiver because the model declares
//! that an inert delivery commutes with every input of its core but a
//! timer, a failure-detector report, a crash and a restart, none of which
//! can happen while a message is in flight with those bounds. It is
//! invisible (it reports nothing, sends nothing, arms nothing: checked as
//! the search goes, an `Err` if not). So every quiescent state and every
//! sequence of events the observer sees are still reached (the classical
//! argument for persistent sets with invisible steps; no cycle proviso is
//! needed, every path being finite), and the verdicts hold; what is lost is
//! intermediate states that differ from a reached one only in inert
//! deliveries still in flight, and BFS's shortest counterexamples (a
//! counterexample may be longer by the inert steps forced before its
//! violation; and with a depth bound that cuts paths, a state within the
//! bound may be reached only by a longer path, beyond it). A state
//! expanded again (reached with a smaller sleep set) takes its woken
//! steps as without the reduction.
//!
//! ## Symmetry reduction
//!
//! On by default where it applies ([`Model::symmetry`],
//! [`Search::symmetry`]). A model may declare classes of *interchangeable*
//! members: members whose cores treat each other alike (no tie-break,
//! rank or election by id), started alike, offered the same commands
//! (the `k`-th command of one is the `k`-th of another, with the same
//! guard), and that the observer and the goal judge alike. Then the
//! transition system is invariant under every permutation `π` of the
//! members that maps each class to itself: `s -> t` is a step iff
//! `π(s) -> π(t)` is one, and a property holds in `s` iff it holds in
//! `π(s)`. The search merges states equal up to such a permutation: a
//! state's fingerprint is the least, over the permutations (at most 3! or
//! 4! here), of the print of the state renamed by it, so the first copy of
//! a class reached is explored and the others are not. Every state
//! reachable is still reached up to a permutation, at its shortest
//! distance (the orbit of a path is a path of the same length), so the
//! verdicts and the BFS counterexample lengths are those of the plain
//! search.
//!
//! Renaming a state: the simulation's own parts are renamed by the
//! search (which member a core, a timer or a sync belongs to, a message's
//! sender and receiver, cut links, the failure detectors' opinions, the
//! commands run); what is inside a core, a message, a timer and the
//! observer by the model's functions ([`Symmetry`]), which build the
//! renamed value itself — every id it holds mapped, what is sorted by id
//! sorted again, what an id is encoded in (a vector clock's key) encoded
//! again, and whatever data the model ties to members (a broadcast's
//! payload, which is its sender's id) renamed with them — so that the
//! renamed state prints exactly as the state it stands for. That is the
//! one thing the soundness rests on besides the model's word that its
//! members are interchangeable: a renaming function that forgets an id
//! (or a position that stands for one) would merge states that are not
//! equivalent. Renaming the `Debug` text instead would not do: with
//! `u32` ids a `2` may be a member, a count or a sequence number, and
//! the text of a renamed state is not the text of a state (its maps and
//! sets are in the old order). The disks are the exception: they are left
//! out of the fingerprint, which is sound only because the reduction
//! applies only when no crash is allowed (nothing reads a disk but a
//! restart, and the observers read one only after a restart); renaming
//! them would mean decoding every record. With a crash allowed the
//! search runs without it ([`Search::symmetry_refused`] says why).
//!
//! Checked by tests: with the reduction on, the same verdicts and
//! counterexample lengths as with it off, and (without sleep sets)
//! exactly as many states as the plain search's states fall into classes
//! up to a permutation ([`Search::count_orbits`], [`Report::orbits`]):
//! no class is lost and none is split.
//!
//! Counterexamples: a state is explored from the first copy reached, which
//! may be a permutation of the one the recorded path leads to; the path is
//! rebuilt by running it again from the initial state, taking at each
//! step the first choice whose successor has the recorded fingerprint (at
//! the last step of a step violation, the first choice that breaks a
//! property). The steps recorded are real and unpermuted, and replay
//! exactly ([`replay`]); the violation is the one this path meets (it may
//! name other members than the one the search met).
//!
//! With the partial-order reduction: sleep sets name steps of one state,
//! and the copies of a class may be permutations of each other. A state
//! reached again whose copy differs from the one stored (their plain
//! prints differ) wakes every step asleep in the stored one: expanded
//! already, it is expanded again from the new copy, every step (so
//! nothing asleep in another naming is left out). The tests run the
//! combination too: the same verdicts and counterexample lengths; as many
//! states as orbits for the broadcasts, fewer for 2PC with a drop, where
//! sleep sets also merge states that differ only in the commit
//! observer's order-dependent count of checks (as they do without the
//! symmetry reduction).
//!
//! Which models declare it: eager reliable, FIFO and causal broadcast
//! (the broadcasters, with their payloads, and the other members), and
//! two-phase commit (the participants). Not three-phase commit (its
//! termination protocol elects the highest live member), not the
//! total-order broadcasts (the sequencer is elected by id; Lamport's
//! total order breaks timestamp ties by id), not bully, ring or
//! next-in-line election, nor Ricart–Agrawala or Lamport's mutex
//! (timestamp ties broken by id), the centralized mutex (a fixed
//! coordinator) or the token ring (the ring is the order of ids). Raft
//! does not declare it yet: whether its core breaks no tie by id was not
//! examined, and renaming its logs, indexes and durable state is not
//! written.
//!
//! Not done: a parallel search (the machines this runs on have two
//! cores, which the suite already uses; the models hold `Rc`s and are not
//! `Send`).

use std::collections::{HashMap, VecDeque};
use std::fmt::{Debug, Write as _};
use std::hash::{Hash, Hasher};
use std::rc::Rc;
use std::time::{Duration, Instant};

use serde::Serialize;
use troupe_framework::sansio::Protocol;

use super::{EventKey, Observer, Out, Pending, PendingOf, PendingRef, Sim, SimProtocol};

/// A command's action: `(simulation, observer) -> Err` on a broken property.
pub type Action<P, O> = Rc<dyn Fn(&mut Sim<P>, &mut O) -> Result<(), String>>;
/// A predicate on a state.
pub type Guard<P, O> = Rc<dyn Fn(&Sim<P>, &O) -> bool>;
/// A goal on a quiescent state (`Err`: why it does not hold).
pub type Goal<P, O> = Rc<dyn Fn(&Sim<P>, &O) -> Result<(), String>>;
/// Builds a model's initial state: the simulation (not started: the
/// search starts it, recording its trace when it writes a counterexample)
/// and the observer.
pub type Init<P, O> = Rc<dyn Fn() -> Result<(Sim<P>, O), String>>;
/// Says whether delivering a message (from the given sender) to the
/// given core now is *inert* (see [`Model::inert`]).
pub type Inert<P> = Rc<dyn Fn(&P, &<P as Protocol>::Id, &<P as Protocol>::Msg) -> bool>;

/// A client command a model offers: run once per path, on `node`, when
/// `enabled` says so.
pub struct Command<P: SimProtocol, O> {
    /// What it does, for traces ("1 requests the lock").
    pub label: String,
    /// The node it runs on (it is offered only while the node runs).
    pub node: P::Id,
    /// The command: usually `sim.command(&node, obs, ...)`, with whatever
    /// the observer must be told first.
    pub run: Action<P, O>,
    /// When it may run (default: always).
    pub enabled: Guard<P, O>,
    /// Run it as soon as it is enabled, as part of the step that enabled
    /// it, instead of offering it as a step of its own (a local reaction,
    /// such as a resource manager voting when asked: fewer interleavings).
    pub eager: bool,
}

impl<P: SimProtocol, O> Clone for Command<P, O> {
    fn clone(&self) -> Self {
        Self {
            label: self.label.clone(),
            node: self.node.clone(),
            run: self.run.clone(),
            enabled: self.enabled.clone(),
            eager: self.eager,
        }
    }
}

impl<P: SimProtocol, O> Command<P, O> {
    /// A command that may run at any time: `run(sim, observer)`.
    pub fn new(
        label: impl Into<String>,
        node: P::Id,
        run: impl Fn(&mut Sim<P>, &mut O) -> Result<(), String> + 'static,
    ) -> Self {
        Self {
            label: label.into(),
            node,
            run: Rc::new(run),
            enabled: Rc::new(|_, _| true),
            eager: false,
        }
    }

    /// Run it as part of the step that enables it (see [`Command::eager`]).
    pub fn eager(mut self) -> Self {
        self.eager = true;
        self
    }

    /// A command that runs `f` on the core of `node`.
    pub fn on_core(
        label: impl Into<String>,
        node: P::Id,
        f: impl Fn(&mut P, Duration, &mut Out<P>) + 'static,
    ) -> Self
    where
        O: Observer<P>,
        P::Id: 'static,
    {
        let f = Rc::new(f);
        let at = node.clone();
        Self::new(label, node, move |sim, obs| {
            let f = f.clone();
            sim.command(&at, obs, move |c, now, out| f(c, now, out))
                .map(|_| ())
        })
    }

    /// Only when `enabled` holds.
    pub fn when(mut self, enabled: impl Fn(&Sim<P>, &O) -> bool + 'static) -> Self {
        self.enabled = Rc::new(enabled);
        self
    }
}

/// What to check: the initial state, the client commands and the goal.
pub struct Model<P: SimProtocol, O> {
    /// Its name (for reports).
    pub name: String,
    /// The initial simulation (not started) and observer.
    pub init: Init<P, O>,
    /// The client commands.
    pub commands: Vec<Command<P, O>>,
    /// The goal every quiescent state must meet (`Err`: why not); `None`:
    /// safety only.
    pub at_rest: Option<Goal<P, O>>,
    /// The members the search may crash (`None`: any).
    pub crashable: Option<Vec<P::Id>>,
    /// Search with the partial-order reduction (see the module docs),
    /// which is sound only for a model whose commands are *local*: each
    /// command's guard (`enabled`) reads, and its action changes, only the
    /// core of its own node (and the observer), and an eager command
    /// becomes enabled only by a step of its own node. The search checks
    /// the second half as it goes (a step that changes another core counts
    /// as a step on the whole simulation); the first is the model's word.
    pub partial_order: bool,
    /// The members that are interchangeable, and how to rename them in a
    /// state's parts, for the symmetry reduction (see the module docs);
    /// `None`: no two members are.
    pub symmetry: Option<Symmetry<P, O>>,
    /// The deliveries that are *inert* where the model says so, for the
    /// inert-first reduction (see the module docs); `None`: none is. A
    /// delivery is inert when, given to its receiver's core as it is,
    /// it sends nothing, arms no timer, reports nothing, and commutes
    /// with every input of that core but a timer, a failure-detector
    /// report, a crash and a restart (it only records bookkeeping that
    /// nothing else reads before those), and it stays inert whatever
    /// the receiver takes in first. The model's word; the search checks
    /// the first three halves as it goes.
    pub inert: Option<Inert<P>>,
    /// Start the search from a *settled* group: before the first step,
    /// the started simulation runs every queued event but the timers, in
    /// queue order, until only timers are pending (`false`: the search
    /// starts right after the start). For a core whose start-up traffic
    /// (an embedded election, joins) is not what the model checks and
    /// would crowd out what is: the start-up's own orders are the
    /// subject of another model (the election's). A model that settles
    /// checks the protocol from one start-up outcome only.
    pub settled: bool,
}

impl<P: SimProtocol, O> Clone for Model<P, O> {
    fn clone(&self) -> Self {
        Self {
            name: self.name.clone(),
            init: self.init.clone(),
            commands: self.commands.clone(),
            at_rest: self.at_rest.clone(),
            crashable: self.crashable.clone(),
            partial_order: self.partial_order,
            symmetry: self.symmetry.clone(),
            inert: self.inert.clone(),
            settled: self.settled,
        }
    }
}

/// A renaming of members: every member `m` is called `to(m)` (a
/// permutation of the group).
pub struct Renaming<'a, Id> {
    /// The group, every member (for keys derived from ids).
    pub members: &'a [Id],
    /// The new name of a member (itself for an id that is not renamed).
    pub to: &'a dyn Fn(&Id) -> Id,
}

impl<Id: Debug> Renaming<'_, Id> {
    /// The new name of `id`.
    pub fn id(&self, id: &Id) -> Id {
        (self.to)(id)
    }

    /// A key derived from a member's id by its `Debug` form (a vector
    /// clock's entry, [`crate::broadcast::clock_key`]) renamed: the key of
    /// the member's new name; a key that is no member's is kept.
    pub fn key(&self, key: &str) -> String {
        self.members
            .iter()
            .find(|m| format!("{m:?}") == key)
            .map_or_else(|| key.to_string(), |m| format!("{:?}", self.id(m)))
    }
}

/// A function that renames members in a part of a state ([`Symmetry`]).
pub type RenameFn<T, Id> = Rc<dyn Fn(&T, &Renaming<'_, Id>) -> T>;

/// What a model declares for the symmetry reduction: the members that are
/// interchangeable, and, for each kind of part of a state that names
/// members, the function that renames them. Each must return the part
/// exactly as it is in the state where every member `m` is called `to(m)`
/// (re-sorting what is kept sorted by id), so that a renamed state prints
/// as the state it stands for (see the module docs for what the model
/// vouches for).
pub struct Symmetry<P: SimProtocol, O> {
    /// The classes of interchangeable members: the search merges states
    /// equal up to a permutation of the members that maps each class to
    /// itself (the members in no class keep their names).
    pub classes: Vec<Vec<P::Id>>,
    /// A core renamed.
    pub core: RenameFn<P, P::Id>,
    /// A message renamed.
    pub message: RenameFn<P::Msg, P::Id>,
    /// A timer renamed.
    pub timer: RenameFn<P::Timer, P::Id>,
    /// The observer renamed (with whatever data the model ties to members,
    /// such as a broadcast's payload naming its sender).
    pub observer: RenameFn<O, P::Id>,
}

impl<P: SimProtocol, O> Clone for Symmetry<P, O> {
    fn clone(&self) -> Self {
        Self {
            classes: self.classes.clone(),
            core: self.core.clone(),
            message: self.message.clone(),
            timer: self.timer.clone(),
            observer: self.observer.clone(),
        }
    }
}

/// The bounds of a search.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub struct Bounds {
    /// Steps per path at most.
    pub max_depth: usize,
    /// Distinct states at most (the search stops, undecided, beyond).
    pub max_states: usize,
    /// Messages that may be dropped per path.
    pub drops: u32,
    /// Messages that may be duplicated per path.
    pub duplicates: u32,
    /// Crashes per path.
    pub crashes: u32,
    /// A crashed node may restart (from its disk).
    pub restarts: bool,
    /// Partitions per path (cut the group in two; healing is a step too).
    pub partitions: u32,
    /// When timers may fire (see [`Timers`]).
    pub timers: Timers,
    /// Timer firings per path at most (`None`: no bound). Retries and
    /// rounds that grow a counter make every firing a new state; a bound
    /// keeps such searches finite.
    pub timer_fires: Option<u32>,
    /// Keep the clock still: every input sees the initial time, so states
    /// that differ only in when things happened are one state (the default;
    /// cores whose safety rests on elapsed time, such as leases, need
    /// `false`).
    pub frozen_clock: bool,
}

/// When a pending timer may fire in the search (and when the failure
/// detectors report).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize)]
pub enum Timers {
    /// Only when nothing else is pending (no message in flight, no sync,
    /// no failure-detector report): timeouts are longer than message
    /// delays, and so is failure detection (the pending reports come all
    /// together, as one step, while no message is in flight). The
    /// default: it keeps retries, heartbeats and reports
    /// from multiplying the states while every message is still on its
    /// way; a dropped message is then recovered by the timer that fires
    /// once the network is idle.
    #[default]
    WhenIdle,
    /// A node's next timer, at any time (the network may be slower than
    /// any timeout).
    Next,
    /// Any of a node's timers, in any order.
    Any,
}

impl Default for Bounds {
    fn default() -> Self {
        Self {
            max_depth: 30,
            max_states: 1_000_000,
            drops: 0,
            duplicates: 0,
            crashes: 0,
            restarts: true,
            partitions: 0,
            timers: Timers::WhenIdle,
            timer_fires: None,
            frozen_clock: true,
        }
    }
}

/// What is left of the fault budget on one path.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
struct Budget {
    timer_fires: u32,
    drops: u32,
    duplicates: u32,
    crashes: u32,
    partitions: u32,
}

/// One step a state allows.
#[derive(Debug, Clone)]
enum Choice<Id> {
    Run(EventKey),
    Fire(EventKey),
    Reports(Vec<EventKey>),
    Drop(EventKey),
    Duplicate(EventKey),
    Command(usize),
    Crash(Id),
    Restart(Id),
    Partition(Vec<Id>),
    Heal,
}

/// One search node.
struct State<P: SimProtocol, O> {
    sim: Sim<P>,
    /// Per member (in order): the version of its core whose fingerprint
    /// is cached, and that fingerprint (see [`Sim::core_versions`]).
    core_prints: Vec<Option<(u64, u64)>>,
    /// The print of the state as it is (with the symmetry reduction, its
    /// fingerprint is the least print of its permutations): set by
    /// [`Search::fingerprint`].
    actual: u64,
    obs: O,
    used: Vec<bool>,
    budget: Budget,
    depth: usize,
}

impl<P: SimProtocol + Clone, O: Clone> Clone for State<P, O> {
    fn clone(&self) -> Self {
        Self {
            sim: self.sim.clone(),
            core_prints: self.core_prints.clone(),
            actual: self.actual,
            obs: self.obs.clone(),
            used: self.used.clone(),
            budget: self.budget,
            depth: self.depth,
        }
    }
}

/// One step of a counterexample.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Step {
    /// The step's number (1 is the first after the initial state).
    pub step: usize,
    /// The index of the choice taken among its state's choices.
    pub choice: usize,
    /// What it did.
    pub what: String,
    /// What happened in it, as the framework's JSON trace lines (see
    /// [`super::sim_trace`]); empty until the counterexample is traced.
    #[serde(skip)]
    pub events: Vec<String>,
}

/// A path from the initial state to a state that breaks a property.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Counterexample {
    /// The model.
    pub model: String,
    /// The steps.
    pub steps: Vec<Step>,
    /// The property broken, as the observer or goal said.
    pub violation: String,
    /// What happened as the members started, as trace lines (see
    /// [`Step::events`]).
    #[serde(skip)]
    pub start_events: Vec<String>,
}

impl Counterexample {
    /// One JSON object per line: each step (`model`, `step`, `choice`,
    /// `what`) followed by what happened in it as the framework's trace
    /// lines (`t_us`, `node`, `ev`..., stamped with the step's number in
    /// milliseconds: the model's clock stands still), then the violation
    /// (also a `note` line at every member, for the viewers). `troupe trace
    /// view` draws it; [`Counterexample::from_json_lines`] reads the steps
    /// back.
    pub fn to_json_lines(&self) -> String {
        let mut s = String::new();
        for line in &self.start_events {
            let _ = writeln!(s, "{line}");
        }
        for step in &self.steps {
            let _ = writeln!(
                s,
                "{}",
                serde_json::json!({"model": self.model, "step": step.step, "choice": step.choice, "what": step.what})
            );
            for line in &step.events {
                let _ = writeln!(s, "{line}");
            }
        }
        let _ = writeln!(
            s,
            "{}",
            serde_json::json!({"model": self.model, "violation": self.violation})
        );
        s
    }
}

impl Counterexample {
    /// Read back what [`Counterexample::to_json_lines`] wrote: the steps
    /// (`choice` and `what`, in the order of the lines) and the violation.
    /// `Err` names the line that is not such an object.
    pub fn from_json_lines(text: &str) -> Result<Self, String> {
        let mut cx = Counterexample {
            model: String::new(),
            steps: Vec::new(),
            violation: String::new(),
            start_events: Vec::new(),
        };
        let mut violation = None;
        for (i, line) in text
            .lines()
            .enumerate()
            .filter(|(_, l)| !l.trim().is_empty())
        {
            let at = |e: &str| format!("line {}: {e}", i + 1);
            let v: serde_json::Value =
                serde_json::from_str(line).map_err(|e| at(&e.to_string()))?;
            if v.get("ev").is_some() {
                // What happened in a step, for the viewers.
                continue;
            }
            let model = v["model"].as_str().ok_or_else(|| at("no \"model\""))?;
            if cx.model.is_empty() {
                cx.model = model.to_string();
            } else if cx.model != model {
                return Err(at(&format!("model {model:?}, not {:?} as above", cx.model)));
            }
            if violation.is_some() {
                return Err(at("a line after the violation"));
            }
            if let Some(e) = v["violation"].as_str() {
                violation = Some(e.to_string());
                continue;
            }
            let choice = v["choice"]
                .as_u64()
                .ok_or_else(|| at("no \"choice\" (a step's index among its state's choices)"))?;
            cx.steps.push(Step {
                step: cx.steps.len() + 1,
                choice: usize::try_from(choice).map_err(|e| at(&e.to_string()))?,
                what: v["what"].as_str().unwrap_or_default().to_string(),
                events: Vec::new(),
            });
        }
        cx.violation = violation.ok_or("no violation line (the last line of a counterexample)")?;
        Ok(cx)
    }
}

impl std::fmt::Display for Counterexample {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        writeln!(
            f,
            "{}: {} steps to a violation:",
            self.model,
            self.steps.len()
        )?;
        for s in &self.steps {
            writeln!(f, "  {:>3}. {}", s.step, s.what)?;
        }
        write!(f, "  violated: {}", self.violation)
    }
}

/// How a search ended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Verdict {
    /// Every state within the bounds was explored; every property held.
    Holds,
    /// A property broke.
    Violated(Box<Counterexample>),
    /// The state bound was hit before the search finished: nothing found
    /// so far, but not everything was seen.
    Undecided,
}

/// What a search did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Report {
    /// How it ended.
    pub verdict: Verdict,
    /// States explored (expanded: their successors computed).
    pub explored: u64,
    /// Successor states computed, repeats included (each step taken from
    /// an explored state, plus the initial state): what stateright calls
    /// its state count.
    pub generated: u64,
    /// Distinct states seen.
    pub unique: u64,
    /// Deepest path.
    pub depth: usize,
    /// True when some path was cut by the depth bound.
    pub depth_limited: bool,
    /// Steps not taken because they were asleep (partial-order reduction:
    /// an equivalent order of the same steps is explored elsewhere); 0
    /// without the reduction.
    pub slept: u64,
    /// States expanded again because they were reached with a smaller
    /// sleep set than when they were expanded (counted in `explored`).
    pub reexpanded: u64,
    /// With [`Search::count_orbits`] (the symmetry reduction off): how
    /// many classes of states equal up to a permutation of the
    /// interchangeable members the states seen fall in (distinct
    /// canonical prints) — the states a search with the reduction should
    /// find.
    pub orbits: Option<u64>,
    /// States from which the inert-first reduction took one inert
    /// delivery alone ([`Model::inert`]); 0 without it.
    pub forced: u64,
    /// Wall time.
    pub elapsed: Duration,
}

impl Report {
    /// States explored per second of wall time (0 when no time passed).
    pub fn states_per_second(&self) -> f64 {
        let secs = self.elapsed.as_secs_f64();
        if secs > 0.0 {
            self.explored as f64 / secs
        } else {
            0.0
        }
    }
}

impl std::fmt::Display for Report {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let verdict = match &self.verdict {
            Verdict::Holds if self.depth_limited => "holds within the depth bound",
            Verdict::Holds => "holds (exhaustive)",
            Verdict::Violated(_) => "VIOLATED",
            Verdict::Undecided => "undecided (state bound reached)",
        };
        write!(
            f,
            "{verdict}: {} states explored, {} unique, {} generated, depth {}, {:.2?} ({:.0} \
             states/s)",
            self.explored,
            self.unique,
            self.generated,
            self.depth,
            self.elapsed,
            self.states_per_second()
        )?;
        if let Some(orbits) = self.orbits {
            write!(f, "; {orbits} up to symmetry")?;
        }
        if self.slept > 0 || self.reexpanded > 0 {
            write!(
                f,
                "; partial-order reduction: {} steps asleep, {} states expanded again",
                self.slept, self.reexpanded
            )?;
        }
        if self.forced > 0 {
            write!(f, "; inert-first: {} states took one step", self.forced)?;
        }
        Ok(())
    }
}

/// A hasher fed by `Debug` formatting, without allocating: eight bytes at
/// a time, each word folded in by a 64x64->128-bit multiply (as wyhash
/// does). Cheaper than SipHash, whose generic code runs unoptimized in the
/// debug builds the suite runs; not meant to resist chosen inputs, only to
/// tell states apart.
struct HashWriter(u64);

const MIX: u64 = 0x9E37_79B9_7F4A_7C15;

fn fold(h: u64, w: u64) -> u64 {
    let m = u128::from(h ^ w) * u128::from(MIX ^ 0xA076_1D64_78BD_642F);
    (m as u64) ^ ((m >> 64) as u64)
}

impl std::fmt::Write for HashWriter {
    fn write_str(&mut self, s: &str) -> std::fmt::Result {
        let b = s.as_bytes();
        let mut chunks = b.chunks_exact(8);
        let mut h = self.0;
        for c in &mut chunks {
            h = fold(
                h,
                u64::from_le_bytes([c[0], c[1], c[2], c[3], c[4], c[5], c[6], c[7]]),
            );
        }
        let mut tail = [0u8; 8];
        let rest = chunks.remainder();
        tail[..rest.len()].copy_from_slice(rest);
        self.0 = fold(h, u64::from_le_bytes(tail) ^ ((b.len() as u64) << 56));
        Ok(())
    }
}

fn hash_debug<T: Debug + ?Sized>(v: &T) -> u64 {
    let mut w = HashWriter(MIX);
    let _ = write!(w, "{v:?}");
    w.0
}

/// The states seen: fingerprint -> the parent's, and the index and
/// identity ([`Search::identify`]; 0 without the reduction) of the choice
/// that led here (`None`: the initial state). Fingerprints are hashes
/// already: the map does not hash them again.
type Seen = HashMap<u64, Option<(u64, usize, u64)>, std::hash::BuildHasherDefault<IdentityHasher>>;

/// The print recorded for the last step of a counterexample that broke a
/// property in the step (the state it led to is not recorded).
const BROKEN: u64 = u64::MAX;

/// A state waiting to be expanded: the state, its print, and for a state
/// expanded again (reached with a smaller sleep set) the steps that woke
/// up.
type Queued<P, O> = (State<P, O>, u64, Option<Vec<u64>>);

/// Per state seen (by fingerprint), with the partial-order reduction: its
/// sleep set, whether it was expanded yet, and the print of the copy
/// stored (with the symmetry reduction, the copies of one fingerprint may
/// be permutations of each other).
type Sleeps = HashMap<u64, (Vec<Move>, bool, u64), std::hash::BuildHasherDefault<IdentityHasher>>;

/// A step as the partial-order reduction sees it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Move {
    /// What it is ([`Search::identify`]).
    tid: u64,
    /// The member whose core it acts on (a print of its id); `None`: it
    /// acts on the whole simulation (a fault, a timer, the failure
    /// detectors, a step that changed another core than its own).
    node: Option<u64>,
    /// The observer saw it (an event was reported, a command ran).
    visible: bool,
}

impl Move {
    /// Whether the two steps commute: each acts on one core, not the
    /// same, and the observer did not see both.
    fn independent(&self, other: &Move) -> bool {
        matches!((self.node, other.node), (Some(a), Some(b)) if a != b)
            && !(self.visible && other.visible)
    }
}

/// A hasher for keys that are hashes already (u64 fingerprints).
#[derive(Default)]
struct IdentityHasher(u64);

impl Hasher for IdentityHasher {
    fn finish(&self) -> u64 {
        self.0
    }
    fn write(&mut self, bytes: &[u8]) {
        for b in bytes {
            self.0 = self.0.rotate_left(8) ^ u64::from(*b);
        }
    }
    fn write_u64(&mut self, n: u64) {
        self.0 = n;
    }
}

/// The search over a [`Model`].
pub struct Search<P: SimProtocol, O> {
    model: Model<P, O>,
    bounds: Bounds,
    /// The partial-order reduction is on.
    por: bool,
    /// The symmetry reduction is on.
    sym: bool,
    /// Count the orbits of the states seen ([`Report::orbits`]).
    orbits: bool,
    /// The inert-first reduction is on.
    inert: bool,
    /// With [`Model::symmetry`] that applies: every permutation of the
    /// interchangeable members (the identity first).
    perms: Vec<Perm<P::Id>>,
}

/// One permutation of the interchangeable members.
struct Perm<Id> {
    /// `(member, its new name)` for every interchangeable member.
    map: Vec<(Id, Id)>,
    /// Per command of the model, the index of its image: the command of
    /// the same rank among those of the renamed node.
    commands: Vec<usize>,
}

impl<Id: Clone + PartialEq> Perm<Id> {
    fn to(&self, id: &Id) -> Id {
        self.map
            .iter()
            .find(|(a, _)| a == id)
            .map_or_else(|| id.clone(), |(_, b)| b.clone())
    }
}

/// Every permutation of `items` (the identity first).
fn permutations<T: Clone>(items: &[T]) -> Vec<Vec<T>> {
    if items.len() <= 1 {
        return vec![items.to_vec()];
    }
    let mut out = Vec::new();
    for i in 0..items.len() {
        let mut rest = items.to_vec();
        let first = rest.remove(i);
        for mut tail in permutations(&rest) {
            tail.insert(0, first.clone());
            out.push(tail);
        }
    }
    out
}

impl<P, O> Search<P, O>
where
    P: SimProtocol + Clone + Debug,
    O: Observer<P> + Clone + Debug,
{
    /// A search of `model` within `bounds`, with the partial-order
    /// reduction if the model allows it ([`Search::partial_order`]) and
    /// the symmetry reduction if the model declares interchangeable
    /// members and the bounds allow it ([`Search::symmetry`]).
    pub fn new(model: Model<P, O>, bounds: Bounds) -> Self {
        let por = model.partial_order && bounds.frozen_clock;
        let mut search = Self {
            model,
            bounds,
            por,
            sym: false,
            orbits: false,
            inert: false,
            perms: Vec::new(),
        };
        search.inert = search.model.inert.is_some();
        search.perms = search.permutations().unwrap_or_default();
        search.sym = search.perms.len() > 1;
        search
    }

    /// The permutations the symmetry reduction merges states by, or why
    /// it does not apply: the model declares no symmetry, a crash is
    /// allowed (the disks, which a restart reads, are not renamed), or a
    /// permutation maps a command to no command of the renamed node.
    fn permutations(&self) -> Result<Vec<Perm<P::Id>>, String> {
        let sym = self
            .model
            .symmetry
            .as_ref()
            .ok_or("the model declares no interchangeable members")?;
        if self.bounds.crashes > 0 {
            return Err("crashes are allowed: the disks are not renamed".into());
        }
        let commands = &self.model.commands;
        let rank = |i: usize| {
            commands[..i]
                .iter()
                .filter(|c| c.node == commands[i].node)
                .count()
        };
        // Every permutation of each class, combined.
        let mut maps: Vec<Vec<(P::Id, P::Id)>> = vec![Vec::new()];
        for class in &sym.classes {
            let mut next = Vec::new();
            for map in &maps {
                for image in permutations(class) {
                    let mut m = map.clone();
                    m.extend(class.iter().cloned().zip(image));
                    next.push(m);
                }
            }
            maps = next;
        }
        let mut out = Vec::new();
        for map in maps {
            let mut perm = Perm {
                map,
                commands: Vec::new(),
            };
            for (i, c) in commands.iter().enumerate() {
                let node = perm.to(&c.node);
                let r = rank(i);
                let j = (0..commands.len())
                    .find(|&j| commands[j].node == node && rank(j) == r)
                    .ok_or_else(|| format!("command {:?} has no image at {node:?}", c.label))?;
                perm.commands.push(j);
            }
            out.push(perm);
        }
        Ok(out)
    }

    /// The same search with the partial-order reduction on or off (it is
    /// on when the model allows it, [`Model::partial_order`], and the
    /// clock is frozen: a step that moves the clock acts on every core;
    /// turning it on for a model that does not allow it does nothing). It
    /// combines with the symmetry reduction (see the module docs).
    pub fn partial_order(mut self, on: bool) -> Self {
        self.por = on && self.model.partial_order && self.bounds.frozen_clock;
        self
    }

    /// The same search with the symmetry reduction on or off (on by
    /// default where it applies: the model declares interchangeable
    /// members, [`Model::symmetry`], and no crash is allowed; turning it
    /// on where it does not apply does nothing). It combines with the
    /// partial-order reduction (see the module docs).
    pub fn symmetry(mut self, on: bool) -> Self {
        self.sym = on && self.perms.len() > 1;
        self
    }

    /// The same search counting, with the symmetry reduction off, the
    /// classes of the states it sees up to a permutation of the
    /// interchangeable members ([`Report::orbits`]; a check of the
    /// reduction: the search with it should see as many states). Costs a
    /// renaming of every state per permutation; does nothing where the
    /// symmetry reduction does not apply.
    pub fn count_orbits(mut self, on: bool) -> Self {
        self.orbits = on && self.perms.len() > 1;
        self
    }

    /// The same search with the inert-first reduction on or off (on by
    /// default where the model declares inert deliveries,
    /// [`Model::inert`]; see the module docs). It combines with the
    /// other two.
    pub fn inert_first(mut self, on: bool) -> Self {
        self.inert = on && self.model.inert.is_some();
        self
    }

    /// The choice the inert-first reduction takes alone from `s`, if any:
    /// the first delivery the model declares inert, in a state from
    /// which no fault can follow (no drop, duplicate, crash or partition
    /// left, none in force, no member down that may restart) and with
    /// [`Timers::WhenIdle`] (no timer and no failure-detector report
    /// while a message is in flight).
    fn forced(&self, s: &State<P, O>, choices: &[(Choice<P::Id>, String)]) -> Option<usize> {
        let inert = self.model.inert.as_ref().filter(|_| self.inert)?;
        let b = &s.budget;
        if self.bounds.timers != Timers::WhenIdle
            || b.drops > 0
            || b.duplicates > 0
            || b.crashes > 0
            || b.partitions > 0
            || !s.sim.blocked_links().is_empty()
            || (self.bounds.restarts && s.sim.members().iter().any(|m| !s.sim.is_alive(m)))
        {
            return None;
        }
        choices.iter().position(|(c, _)| {
            let Choice::Run(key) = c else { return false };
            let Some((from, to, msg)) = s.sim.delivery(key) else {
                return false;
            };
            s.sim.core(to).is_some_and(|core| inert(core, from, msg))
        })
    }

    /// Check that the inert delivery `c` from `s` to `next` did what the
    /// model says such a delivery does: no report, and nothing pending
    /// but what was (a message, a timer or a sync more would be an input
    /// to come that the delivery caused). `Err`: the model's
    /// [`Model::inert`] is wrong.
    fn check_inert(
        &self,
        s: &State<P, O>,
        next: &State<P, O>,
        c: &Choice<P::Id>,
    ) -> Result<(), String> {
        let Choice::Run(key) = c else {
            return Err("the inert-first reduction took a step that is not a delivery".into());
        };
        let before = s.sim.pending_keys().filter(|k| k != key);
        if next.sim.events_reported() != s.sim.events_reported()
            || !before.eq(next.sim.pending_keys())
        {
            let what = self
                .choices(s, true)
                .into_iter()
                .find(|(x, _)| matches!(x, Choice::Run(k) if k == key));
            return Err(format!(
                "{}: a delivery the model declares inert reported an event or caused an \
                 input: {}",
                self.model.name,
                what.map_or_else(String::new, |(_, d)| d)
            ));
        }
        Ok(())
    }

    /// Whether the symmetry reduction runs in this search.
    pub fn symmetric(&self) -> bool {
        self.sym
    }

    /// Why the symmetry reduction does not apply to this search (`None`:
    /// it does, whether or not it is switched on).
    pub fn symmetry_refused(&self) -> Option<String> {
        match self.permutations() {
            Ok(p) if p.len() > 1 => None,
            Ok(_) => Some("fewer than two interchangeable members".into()),
            Err(e) => Some(e),
        }
    }

    /// Whether the partial-order reduction runs.
    fn por(&self) -> bool {
        self.por
    }

    /// The state's fingerprint. A core's part is cached in the state (and
    /// so in its successors) while the core's version stays the same: a
    /// step changes one or two cores, and formatting every core of every
    /// successor was the largest cost of the search.
    fn fingerprint(&self, s: &mut State<P, O>) -> u64 {
        if self.sym {
            return self.canonical(s);
        }
        let fp = self.plain_fingerprint(s);
        s.actual = fp;
        fp
    }

    /// The fingerprint without the symmetry reduction.
    fn plain_fingerprint(&self, s: &mut State<P, O>) -> u64 {
        let mut h = std::collections::hash_map::DefaultHasher::new();
        let members = s.sim.core_versions().count();
        s.core_prints.resize(members, None);
        for (i, (id, version, core)) in s.sim.core_versions().enumerate() {
            let Some(core) = core else { continue };
            let print = match s.core_prints[i] {
                Some((v, print)) if v == version => print,
                _ => {
                    let print = hash_debug(id) ^ hash_debug(core).rotate_left(1);
                    s.core_prints[i] = Some((version, print));
                    print
                }
            };
            print.hash(&mut h);
        }
        for (id, life, up, disk) in s.sim.durable_states() {
            // The disk's bytes as they are (their Debug form lists every
            // byte in decimal: the costliest part of a print).
            (hash_debug(id), life, up, disk).hash(&mut h);
        }
        let (mut messages, mut others) = s.sim.pending_prints(|p| hash_debug(p), hash_debug);
        messages.sort_unstable();
        messages.hash(&mut h);
        // Timers and syncs by member, each member's in queue order: which
        // of its timers is due first matters, the order in which different
        // members armed theirs does not (a timer re-armed goes to the end
        // of the queue, so that order only tells which member re-armed
        // last).
        others.sort_by_key(|(node, _)| *node);
        others.hash(&mut h);
        hash_debug(s.sim.blocked_links()).hash(&mut h);
        hash_debug(s.sim.opinions()).hash(&mut h);
        hash_debug(&s.obs).hash(&mut h);
        s.used.hash(&mut h);
        s.budget.hash(&mut h);
        h.finish()
    }

    /// The canonical print of `s` ([`Search::canonical`]) in a search
    /// without the symmetry reduction (on a copy whose cache of core
    /// prints, which holds plain prints here, is emptied).
    fn orbit(&self, s: &State<P, O>) -> u64 {
        let mut c = s.clone();
        c.core_prints.clear();
        self.canonical(&mut c)
    }

    /// With the symmetry reduction: the least over the permutations of the
    /// interchangeable members of the print of the state renamed by each
    /// (see the module docs), so that states equal up to such a
    /// permutation have one print. The parts are those of
    /// [`Search::fingerprint`] but the disks (no crash is allowed, so no
    /// disk is read again: they cannot change what follows), each renamed
    /// by the model's functions ([`Symmetry`]) and the simulation's own
    /// (members' slots, senders and receivers, timers' owners, cut links,
    /// the failure detectors' opinions, the commands run). A renamed
    /// core's print is cached like a core's, per permutation.
    fn canonical(&self, s: &mut State<P, O>) -> u64 {
        let Some(sym) = &self.model.symmetry else {
            unreachable!("the symmetry reduction runs only with a model's symmetry")
        };
        let members = s.sim.members();
        let n = self.perms.len();
        s.core_prints.resize(members.len() * n, None);
        let pending = s.sim.pending();
        let mut best = u64::MAX;
        for (k, perm) in self.perms.iter().enumerate() {
            let to = |id: &P::Id| perm.to(id);
            let r = Renaming {
                members: &members,
                to: &to,
            };
            let mut h = std::collections::hash_map::DefaultHasher::new();
            let mut cores: Vec<(P::Id, u64)> = Vec::new();
            for (i, (id, version, core)) in s.sim.core_versions().enumerate() {
                let Some(core) = core else { continue };
                let new = r.id(id);
                let slot = i * n + k;
                let print = match s.core_prints[slot] {
                    Some((v, print)) if v == version => print,
                    _ => {
                        let print = if k == 0 {
                            hash_debug(core)
                        } else {
                            hash_debug(&(sym.core)(core, &r))
                        };
                        let print = hash_debug(&new) ^ print.rotate_left(1);
                        s.core_prints[slot] = Some((version, print));
                        print
                    }
                };
                cores.push((new, print));
            }
            cores.sort_by(|a, b| a.0.cmp(&b.0));
            for (_, print) in &cores {
                print.hash(&mut h);
            }
            let mut messages: Vec<u64> = Vec::new();
            let mut others: Vec<(u64, u64)> = Vec::new();
            for (_, p) in &pending {
                let renamed: PendingOf<P> = match p {
                    Pending::Deliver { from, to, msg } => Pending::Deliver {
                        from: r.id(from),
                        to: r.id(to),
                        msg: (sym.message)(msg, &r),
                    },
                    Pending::Report { observer, target } => Pending::Report {
                        observer: r.id(observer),
                        target: r.id(target),
                    },
                    Pending::Timer { node, timer, first } => Pending::Timer {
                        node: r.id(node),
                        timer: (sym.timer)(timer, &r),
                        first: *first,
                    },
                    Pending::Sync { node } => Pending::Sync { node: r.id(node) },
                };
                match &renamed {
                    Pending::Deliver { .. } | Pending::Report { .. } => {
                        messages.push(hash_debug(&renamed))
                    }
                    Pending::Timer { node, .. } | Pending::Sync { node } => {
                        others.push((hash_debug(node), hash_debug(&renamed)))
                    }
                }
            }
            messages.sort_unstable();
            messages.hash(&mut h);
            others.sort_by_key(|(node, _)| *node);
            others.hash(&mut h);
            let blocked: std::collections::BTreeSet<(P::Id, P::Id)> = s
                .sim
                .blocked_links()
                .iter()
                .map(|(a, b)| (r.id(a), r.id(b)))
                .collect();
            hash_debug(&blocked).hash(&mut h);
            let opinions: std::collections::BTreeMap<_, _> = s
                .sim
                .opinions()
                .iter()
                .map(|((a, b), v)| ((r.id(a), r.id(b)), *v))
                .collect();
            hash_debug(&opinions).hash(&mut h);
            if k == 0 {
                hash_debug(&s.obs).hash(&mut h);
            } else {
                hash_debug(&(sym.observer)(&s.obs, &r)).hash(&mut h);
            }
            let mut used = vec![false; s.used.len()];
            for (i, u) in s.used.iter().enumerate() {
                used[perm.commands[i]] = *u;
            }
            used.hash(&mut h);
            s.budget.hash(&mut h);
            let print = h.finish();
            if k == 0 {
                s.actual = print;
            }
            best = best.min(print);
        }
        best
    }

    /// The steps state `s` allows, in a fixed order, each with what it
    /// does when `describe` (else an empty string: the search records a
    /// step by its index and describes only the steps of a counterexample).
    fn choices(&self, s: &State<P, O>, describe: bool) -> Vec<(Choice<P::Id>, String)> {
        let mut out = Vec::new();
        let d = |f: &dyn Fn() -> String| if describe { f() } else { String::new() };
        let pending = s.sim.pending_refs();
        let idle = pending
            .iter()
            .all(|(_, p)| matches!(p, Pending::Timer { .. }));
        let network_idle = pending
            .iter()
            .all(|(_, p)| matches!(p, Pending::Timer { .. } | Pending::Report { .. }));
        for (key, p) in &pending {
            match p {
                Pending::Deliver { from, to, msg } => out.push((
                    Choice::Run(*key),
                    d(&|| format!("deliver {from:?} -> {to:?}: {msg:?}")),
                )),
                Pending::Timer { node, timer, first } => {
                    let may = match self.bounds.timers {
                        Timers::WhenIdle => *first && idle,
                        Timers::Next => *first,
                        Timers::Any => true,
                    };
                    if may && s.budget.timer_fires > 0 {
                        out.push((
                            Choice::Fire(*key),
                            d(&|| format!("timer {node:?}: {timer:?}")),
                        ));
                    }
                }
                Pending::Sync { node } => {
                    out.push((Choice::Run(*key), d(&|| format!("disk sync at {node:?}"))))
                }
                Pending::Report { observer, target } => {
                    if self.bounds.timers != Timers::WhenIdle {
                        out.push((
                            Choice::Run(*key),
                            d(&|| format!("failure detector tells {observer:?} about {target:?}")),
                        ))
                    }
                }
            }
        }
        let reports: Vec<EventKey> = pending
            .iter()
            .filter(|(_, p)| matches!(p, Pending::Report { .. }))
            .map(|(k, _)| *k)
            .collect();
        if self.bounds.timers == Timers::WhenIdle && network_idle && !reports.is_empty() {
            out.push((
                Choice::Reports(reports),
                d(&|| "the failure detectors report what changed".to_string()),
            ));
        }
        for (i, c) in self.model.commands.iter().enumerate() {
            if !c.eager && !s.used[i] && s.sim.is_alive(&c.node) && (c.enabled)(&s.sim, &s.obs) {
                out.push((Choice::Command(i), d(&|| c.label.clone())));
            }
        }
        for (key, p) in &pending {
            if let Pending::Deliver { from, to, msg } = p {
                if s.budget.drops > 0 {
                    out.push((
                        Choice::Drop(*key),
                        d(&|| format!("LOSE {from:?} -> {to:?}: {msg:?}")),
                    ));
                }
                if s.budget.duplicates > 0 {
                    out.push((
                        Choice::Duplicate(*key),
                        d(&|| format!("DUPLICATE {from:?} -> {to:?}: {msg:?}")),
                    ));
                }
            }
        }
        for id in s.sim.members() {
            if s.sim.is_alive(&id) {
                let may = self
                    .model
                    .crashable
                    .as_ref()
                    .is_none_or(|c| c.contains(&id));
                if s.budget.crashes > 0 && may {
                    out.push((Choice::Crash(id.clone()), d(&|| format!("CRASH {id:?}"))));
                }
            } else if self.bounds.restarts {
                out.push((
                    Choice::Restart(id.clone()),
                    d(&|| format!("RESTART {id:?}")),
                ));
            }
        }
        if s.sim.blocked_links().is_empty() {
            if s.budget.partitions > 0 {
                let members = s.sim.members();
                // Every split into two non-empty sides, each once.
                let n = members.len();
                for mask in 1..(1u64 << n) - 1 {
                    if mask & 1 == 0 {
                        continue;
                    }
                    let side: Vec<P::Id> = (0..n)
                        .filter(|i| mask & (1 << i) != 0)
                        .map(|i| members[i].clone())
                        .collect();
                    out.push((
                        Choice::Partition(side.clone()),
                        d(&|| format!("PARTITION {side:?} from the rest")),
                    ));
                }
            }
        } else {
            out.push((Choice::Heal, d(&|| "HEAL the partition".to_string())));
        }
        out
    }

    /// Take choice `c` in `s` (a copy); `Err` when a property broke.
    fn take(&self, s: &State<P, O>, c: &Choice<P::Id>) -> (State<P, O>, Result<(), String>) {
        let mut next = s.clone();
        next.depth += 1;
        let r = match c {
            Choice::Run(key) => next
                .sim
                .run_key(*key, self.bounds.frozen_clock, &mut next.obs)
                .map(|_| ()),
            Choice::Reports(keys) => keys.iter().try_for_each(|key| {
                next.sim
                    .run_key(*key, self.bounds.frozen_clock, &mut next.obs)
                    .map(|_| ())
            }),
            Choice::Fire(key) => {
                next.budget.timer_fires = next.budget.timer_fires.saturating_sub(1);
                next.sim
                    .run_key(*key, self.bounds.frozen_clock, &mut next.obs)
                    .map(|_| ())
            }
            Choice::Drop(key) => {
                next.budget.drops -= 1;
                next.sim.drop_key(*key);
                next.obs.check(&next.sim)
            }
            Choice::Duplicate(key) => {
                next.budget.duplicates -= 1;
                next.sim.duplicate_key(*key);
                next.obs.check(&next.sim)
            }
            Choice::Command(i) => {
                next.used[*i] = true;
                let c = &self.model.commands[*i];
                next.sim.trace_note(&c.node, || c.label.clone());
                (c.run)(&mut next.sim, &mut next.obs)
            }
            Choice::Crash(id) => {
                next.budget.crashes -= 1;
                next.sim.crash(id, &mut next.obs)
            }
            Choice::Restart(id) => next.sim.restart(id, &mut next.obs),
            Choice::Partition(side) => {
                next.budget.partitions -= 1;
                next.sim
                    .partition(std::slice::from_ref(side), &mut next.obs)
            }
            Choice::Heal => next.sim.heal(&mut next.obs),
        };
        let r = r.and_then(|()| self.run_eager(&mut next));
        (next, r)
    }

    /// Run every eager command that is enabled, until none is.
    fn run_eager(&self, s: &mut State<P, O>) -> Result<(), String> {
        loop {
            let ready = self.model.commands.iter().enumerate().find(|(i, c)| {
                c.eager && !s.used[*i] && s.sim.is_alive(&c.node) && (c.enabled)(&s.sim, &s.obs)
            });
            let Some((i, c)) = ready else {
                return Ok(());
            };
            s.used[i] = true;
            s.sim.trace_note(&c.node, || c.label.clone());
            (c.run)(&mut s.sim, &mut s.obs)?;
        }
    }

    fn quiescent(&self, s: &State<P, O>) -> bool {
        s.used.iter().all(|u| *u) && s.sim.only_timers_pending()
    }

    /// Run every queued event but the timers, in queue order, until only
    /// timers are pending ([`Model::settled`]).
    fn settle(&self, sim: &mut Sim<P>, obs: &mut O) -> Result<(), String> {
        const MOST: usize = 100_000;
        for _ in 0..MOST {
            let next = sim
                .pending_refs()
                .into_iter()
                .find(|(_, p)| !matches!(p, Pending::Timer { .. }))
                .map(|(key, _)| key);
            let Some(key) = next else {
                return Ok(());
            };
            sim.run_key(key, self.bounds.frozen_clock, obs)?;
        }
        Err(format!(
            "{}: still not settled after {MOST} start-up events",
            self.model.name
        ))
    }

    fn initial(&self) -> Result<State<P, O>, String> {
        self.initial_traced(false)
    }

    /// The initial state, its simulation started (recording its trace if
    /// `traced`, stamped 0).
    fn initial_traced(&self, traced: bool) -> Result<State<P, O>, String> {
        let (mut sim, mut obs) = (self.model.init)()?;
        if traced {
            sim.record_trace();
            sim.set_trace_clock(Some(Duration::ZERO));
        }
        sim.start(&mut obs)?;
        if self.model.settled {
            self.settle(&mut sim, &mut obs)?;
        }
        let mut s = State {
            sim,
            core_prints: Vec::new(),
            actual: 0,
            obs,
            used: vec![false; self.model.commands.len()],
            budget: Budget {
                timer_fires: self.bounds.timer_fires.unwrap_or(u32::MAX),
                drops: self.bounds.drops,
                duplicates: self.bounds.duplicates,
                crashes: self.bounds.crashes,
                partitions: self.bounds.partitions,
            },
            depth: 0,
        };
        self.run_eager(&mut s)?;
        Ok(s)
    }

    /// Breadth-first: the shortest counterexample, if any.
    pub fn bfs(&self) -> Result<Report, String> {
        self.search(true)
    }

    /// Depth-first with the depth bound.
    pub fn dfs(&self) -> Result<Report, String> {
        self.search(false)
    }

    fn search(&self, breadth_first: bool) -> Result<Report, String> {
        let started = Instant::now();
        let mut init = self.initial()?;
        let root = self.fingerprint(&mut init);
        // With `count_orbits`: the canonical prints of the states seen.
        let count = self.orbits && !self.sym;
        let mut classes: Option<std::collections::HashSet<u64>> = count.then(|| {
            let mut c = std::collections::HashSet::new();
            c.insert(self.orbit(&init));
            c
        });
        let mut seen: Seen = Seen::default();
        seen.insert(root, None);
        // With the reduction: per state seen, its sleep set (the
        // intersection of those it was reached with) and whether it was
        // expanded yet.
        let mut sleeps: Sleeps = Sleeps::default();
        if self.por() {
            sleeps.insert(root, (Vec::new(), false, init.actual));
        }
        // A state, its print, and for a state expanded again (reached
        // with a smaller sleep set) the steps that woke up.
        let mut frontier: VecDeque<Queued<P, O>> = VecDeque::new();
        frontier.push_back((init, root, None));
        let mut report = Report {
            verdict: Verdict::Holds,
            explored: 0,
            generated: 1,
            unique: 1,
            depth: 0,
            depth_limited: false,
            slept: 0,
            reexpanded: 0,
            orbits: None,
            forced: 0,
            elapsed: Duration::ZERO,
        };
        let done = |mut r: Report,
                    verdict,
                    seen: &Seen,
                    classes: &Option<std::collections::HashSet<u64>>| {
            r.verdict = verdict;
            r.orbits = classes.as_ref().map(|c| c.len() as u64);
            r.unique = seen.len() as u64;
            r.elapsed = started.elapsed();
            Ok(r)
        };
        while let Some((state, fp, woke)) = if breadth_first {
            frontier.pop_front()
        } else {
            frontier.pop_back()
        } {
            report.explored += 1;
            report.depth = report.depth.max(state.depth);
            if woke.is_some() {
                report.reexpanded += 1;
            } else if self.quiescent(&state) {
                if let Some(goal) = &self.model.at_rest {
                    if let Err(e) = goal(&state.sim, &state.obs) {
                        let steps = self.steps_to(&seen, fp);
                        let cx = self.counterexample(&steps, format!("at rest: {e}"));
                        return done(report, Verdict::Violated(Box::new(cx)), &seen, &classes);
                    }
                }
            }
            if state.depth >= self.bounds.max_depth {
                report.depth_limited = true;
                continue;
            }
            let sleep = match sleeps.get_mut(&fp) {
                Some((sleep, expanded, _)) => {
                    *expanded = true;
                    sleep.clone()
                }
                None => Vec::new(),
            };
            let choices = self.choices(&state, false);
            // Expanded again, a state takes the steps that woke up as
            // they are (more steps than needed is sound).
            let forced = if woke.is_none() {
                self.forced(&state, &choices)
            } else {
                None
            };
            if forced.is_some() {
                report.forced += 1;
            }
            let ids = if self.por() {
                self.identify(&state, &choices)
            } else {
                Vec::new()
            };
            // The steps taken from this state so far (with the reduction).
            let mut taken: Vec<Move> = Vec::new();
            for (i, (choice, _)) in choices.into_iter().enumerate() {
                let (tid, node) = ids.get(i).copied().unwrap_or((0, None));
                if forced.is_some_and(|f| f != i) {
                    continue;
                }
                if self.por() && forced.is_none() {
                    if sleep.iter().any(|m| m.tid == tid) {
                        report.slept += 1;
                        continue;
                    }
                    if woke.as_ref().is_some_and(|w| !w.contains(&tid))
                        || taken.iter().any(|m| m.tid == tid)
                    {
                        // Taken when the state was first expanded, or the
                        // same step as one taken (a copy of a message).
                        continue;
                    }
                }
                let (mut next, result) = self.take(&state, &choice);
                report.generated += 1;
                if forced.is_some() {
                    self.check_inert(&state, &next, &choice)?;
                }
                let nfp = self.fingerprint(&mut next);
                if let Err(e) = result {
                    // The path to this state, then the step that broke it
                    // (the broken state itself is not recorded: another
                    // path may have reached a state of the same print).
                    let mut steps = self.steps_to(&seen, fp);
                    steps.push((i, tid, BROKEN));
                    let cx = self.counterexample(&steps, e);
                    return done(report, Verdict::Violated(Box::new(cx)), &seen, &classes);
                }
                if self.por() {
                    let m = self.moved(&state, &next, tid, node);
                    // Asleep in the successor: the steps asleep here or
                    // taken here before, which commute with this one.
                    let sleep_next: Vec<Move> = sleep
                        .iter()
                        .chain(&taken)
                        .filter(|s| s.independent(&m))
                        .copied()
                        .collect();
                    taken.push(m);
                    if let Some((old, expanded, actual)) = sleeps.get_mut(&nfp) {
                        if *actual != next.actual {
                            // A permutation of the copy stored: its sleep
                            // set names other steps. Everything asleep
                            // there wakes up: expanded already, it is
                            // expanded again (this copy, every step).
                            if !old.is_empty() {
                                old.clear();
                                if *expanded {
                                    let all = self.choices(&next, false);
                                    let all = self.identify(&next, &all);
                                    let all = all.into_iter().map(|(tid, _)| tid).collect();
                                    frontier.push_back((next, nfp, Some(all)));
                                }
                            }
                            continue;
                        }
                        // Seen: what was asleep there and is not now must
                        // be taken from it after all.
                        let woke: Vec<u64> = old
                            .iter()
                            .filter(|o| !sleep_next.iter().any(|s| s.tid == o.tid))
                            .map(|o| o.tid)
                            .collect();
                        if !woke.is_empty() {
                            old.retain(|o| sleep_next.iter().any(|s| s.tid == o.tid));
                            if *expanded {
                                frontier.push_back((next, nfp, Some(woke)));
                            }
                        }
                        continue;
                    }
                    sleeps.insert(nfp, (sleep_next, false, next.actual));
                } else if seen.contains_key(&nfp) {
                    continue;
                }
                seen.insert(nfp, Some((fp, i, tid)));
                if let Some(classes) = &mut classes {
                    classes.insert(self.orbit(&next));
                }
                if seen.len() >= self.bounds.max_states {
                    return done(report, Verdict::Undecided, &seen, &classes);
                }
                frontier.push_back((next, nfp, None));
            }
        }
        done(report, Verdict::Holds, &seen, &classes)
    }

    /// Each choice's identity for the reduction: a print of the step (the
    /// same for the same step in any state that allows it: a message by
    /// its sender, receiver and content, a command by its index) and the
    /// member whose core it acts on (`None`: a step on the whole
    /// simulation).
    fn identify(
        &self,
        s: &State<P, O>,
        choices: &[(Choice<P::Id>, String)],
    ) -> Vec<(u64, Option<u64>)> {
        let pending: HashMap<EventKey, PendingRef<'_, P>> =
            s.sim.pending_refs().into_iter().collect();
        let event = |key: &EventKey| {
            s.sim
                .message_print(key, |p| hash_debug(p))
                .unwrap_or_else(|| pending.get(key).map_or(0, hash_debug))
        };
        choices
            .iter()
            .map(|(c, _)| match c {
                Choice::Run(key) => match pending.get(key) {
                    Some(Pending::Deliver { to, .. }) => {
                        (fold(1, event(key)), Some(hash_debug(to)))
                    }
                    Some(p @ Pending::Sync { node }) => {
                        (fold(2, hash_debug(p)), Some(hash_debug(node)))
                    }
                    _ => (fold(3, event(key)), None),
                },
                Choice::Fire(key) => (fold(4, event(key)), None),
                Choice::Command(i) => (
                    fold(5, *i as u64),
                    Some(hash_debug(&self.model.commands[*i].node)),
                ),
                Choice::Drop(key) => (fold(6, event(key)), None),
                Choice::Duplicate(key) => (fold(7, event(key)), None),
                Choice::Reports(_) => (fold(8, 0), None),
                Choice::Crash(id) => (fold(9, hash_debug(id)), None),
                Choice::Restart(id) => (fold(10, hash_debug(id)), None),
                Choice::Partition(side) => (fold(11, hash_debug(side)), None),
                Choice::Heal => (fold(12, 0), None),
            })
            .collect()
    }

    /// What step `tid` on `node` (see [`Search::identify`]) did from `s`
    /// to `next`: the observer saw it if a member reported an event or a
    /// command ran; it acts on the whole simulation if it changed another
    /// member's core than its own (an eager command of another node).
    fn moved(&self, s: &State<P, O>, next: &State<P, O>, tid: u64, node: Option<u64>) -> Move {
        let visible = next.sim.events_reported() != s.sim.events_reported() || next.used != s.used;
        let node = node.filter(|n| {
            s.sim
                .core_versions()
                .zip(next.sim.core_versions())
                .all(|((id, v, _), (_, w, _))| v == w || hash_debug(id) == *n)
        });
        Move { tid, node, visible }
    }

    /// The path to the state of print `fp`: each step's choice index,
    /// identity, and the print of the state it led to.
    fn steps_to(&self, seen: &Seen, mut fp: u64) -> Vec<(usize, u64, u64)> {
        let mut steps = Vec::new();
        while let Some(Some((parent, choice, tid))) = seen.get(&fp) {
            steps.push((*choice, *tid, fp));
            fp = *parent;
        }
        steps.reverse();
        steps
    }

    /// The counterexample of the path `choices` (each step described and
    /// traced by running it again).
    fn counterexample(&self, choices: &[(usize, u64, u64)], violation: String) -> Counterexample {
        let mut cx = Counterexample {
            model: self.model.name.clone(),
            steps: choices
                .iter()
                .enumerate()
                .map(|(i, (choice, _, _))| Step {
                    step: i + 1,
                    choice: *choice,
                    what: String::new(),
                    events: Vec::new(),
                })
                .collect(),
            violation,
            start_events: Vec::new(),
        };
        let tids: Vec<u64> = choices.iter().map(|(_, tid, _)| *tid).collect();
        let prints: Vec<u64> = choices.iter().map(|(_, _, fp)| *fp).collect();
        self.trace(&mut cx, &tids, &prints);
        cx
    }

    /// Fill in what happened at each step of `cx` (its trace lines), by
    /// running it again with the simulation recording. The steps were
    /// found by this search, so they replay; if one does not (it cannot),
    /// the trace stops there. With the reduction, a step is found by its
    /// identity (`tids`) and its choice index set from it: a state seen
    /// first on one path may have been expanded again from another copy
    /// of it, whose choices are listed in another order.
    ///
    /// With the symmetry reduction, a state was explored from the first
    /// copy of it the search reached, which may be a permutation of the
    /// copy this path reaches: a step is found by the print of the state
    /// it leads to (`prints`; [`BROKEN`] for the last step of a
    /// violation: the first choice that breaks a property), so the path
    /// recorded is one of real, unpermuted steps, each the first in its
    /// state's order that leads to a state of the print found (a
    /// permutation of the one the search found), with the violation as
    /// this path meets it.
    fn trace(&self, cx: &mut Counterexample, tids: &[u64], prints: &[u64]) {
        let Ok(mut state) = self.initial_traced(true) else {
            return;
        };
        cx.start_events = state.sim.take_trace();
        let members = state.sim.members();
        let last = cx.steps.len();
        for (n, step) in cx.steps.iter_mut().enumerate() {
            state
                .sim
                .set_trace_clock(Some(Duration::from_millis(n as u64 + 1)));
            let choices = self.choices(&state, true);
            let mut found = None;
            if self.sym {
                let want = prints.get(n).copied().unwrap_or(BROKEN);
                for (i, (choice, _)) in choices.iter().enumerate() {
                    let (mut next, result) = self.take(&state, choice);
                    let hit = match &result {
                        Err(e) if want == BROKEN => {
                            cx.violation = e.clone();
                            true
                        }
                        Err(_) => false,
                        Ok(()) => want != BROKEN && self.fingerprint(&mut next) == want,
                    };
                    if hit {
                        step.choice = i;
                        found = Some((next, result));
                        break;
                    }
                }
                if found.is_none() {
                    return;
                }
            } else if self.por() {
                let ids = self.identify(&state, &choices);
                let Some(i) = ids.iter().position(|(tid, _)| Some(tid) == tids.get(n)) else {
                    return;
                };
                step.choice = i;
            }
            let Some((choice, what)) = choices.into_iter().nth(step.choice) else {
                return;
            };
            step.what = what;
            let (mut next, result) = match found {
                Some(f) => f,
                None => self.take(&state, &choice),
            };
            if self.sym && n + 1 == last && result.is_ok() && self.quiescent(&next) {
                // The goal as this (permuted) path meets it.
                if let Some(Err(e)) = self.model.at_rest.as_ref().map(|g| g(&next.sim, &next.obs)) {
                    cx.violation = format!("at rest: {e}");
                }
            }
            if n + 1 == last || result.is_err() {
                for id in &members {
                    next.sim
                        .trace_note(id, || format!("VIOLATED: {}", cx.violation));
                }
            }
            step.events = next.sim.take_trace();
            state = next;
        }
    }

    /// Replay `steps` (choice indexes) from the initial state and say
    /// what it did: a step broke a property, or the path ends in a
    /// quiescent state that misses the model's goal ([`Replay::Violated`]),
    /// or neither ([`Replay::Clean`]). `Err`: the path does not fit this
    /// search (a step names a choice its state does not have: another
    /// model, or other bounds, which change the choices), or the model
    /// does not start.
    pub fn replay(&self, steps: &[usize]) -> Result<Replay, String> {
        let mut state = self.initial()?;
        let mut done = Vec::new();
        for &i in steps {
            let choices = self.choices(&state, true);
            let Some((choice, what)) = choices.get(i) else {
                return Err(format!(
                    "step {}: no choice {i} (the state has {}): the path was found with another \
                     model or other bounds",
                    done.len() + 1,
                    choices.len()
                ));
            };
            done.push(what.clone());
            let (next, result) = self.take(&state, choice);
            if let Err(violation) = result {
                return Ok(Replay::Violated {
                    steps: done,
                    violation,
                });
            }
            state = next;
        }
        if let (true, Some(goal)) = (self.quiescent(&state), &self.model.at_rest) {
            if let Err(e) = goal(&state.sim, &state.obs) {
                return Ok(Replay::Violated {
                    steps: done,
                    violation: format!("at rest: {e}"),
                });
            }
        }
        Ok(Replay::Clean { steps: done })
    }
}

/// What replaying a path did ([`Search::replay`]).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Replay {
    /// A property broke: the steps taken (the last one broke it, unless the
    /// violation is at rest) and the violation.
    Violated {
        /// What each step did.
        steps: Vec<String>,
        /// The property broken, as the observer or goal said.
        violation: String,
    },
    /// Every step ran and every property held.
    Clean {
        /// What each step did.
        steps: Vec<String>,
    },
}

/// A search of any model behind one type: the models of the catalog
/// ([`super::models::Check`]) differ in their cores and observers.
pub trait Checker {
    /// The model's name.
    fn model_name(&self) -> &str;
    /// [`Search::bfs`].
    fn bfs(&self) -> Result<Report, String>;
    /// [`Search::dfs`].
    fn dfs(&self) -> Result<Report, String>;
    /// [`Search::replay`].
    fn replay(&self, steps: &[usize]) -> Result<Replay, String>;
}

impl<P, O> Checker for Search<P, O>
where
    P: SimProtocol + Clone + Debug,
    O: Observer<P> + Clone + Debug,
{
    fn model_name(&self) -> &str {
        &self.model.name
    }
    fn bfs(&self) -> Result<Report, String> {
        Search::bfs(self)
    }
    fn dfs(&self) -> Result<Report, String> {
        Search::dfs(self)
    }
    fn replay(&self, steps: &[usize]) -> Result<Replay, String> {
        Search::replay(self, steps)
    }
}

/// Replay a counterexample with `search`: `Ok` with the violation it
/// reproduces (at its last step, or at rest after it), `Err` if it does
/// not, or if it does not fit ([`replay_steps`]).
pub fn replay<S: Checker + ?Sized>(search: &S, cx: &Counterexample) -> Result<String, String> {
    match replay_steps(search, cx)? {
        Replay::Violated { violation, .. } => Ok(violation),
        Replay::Clean { .. } => Err("the path replays without a violation".to_string()),
    }
}

/// Replay the steps of `cx` with `search` ([`Search::replay`]) and check
/// that each did what the trace says it did. `Err`: the path does not fit
/// this search — a choice its state does not have, or one that does
/// something else (a step is the index of a choice, and the choices of a
/// state depend on the model and the bounds: replay with those the trace
/// was found with).
pub fn replay_steps<S: Checker + ?Sized>(
    search: &S,
    cx: &Counterexample,
) -> Result<Replay, String> {
    let choices: Vec<usize> = cx.steps.iter().map(|s| s.choice).collect();
    let replayed = search.replay(&choices)?;
    let (Replay::Violated { steps, .. } | Replay::Clean { steps }) = &replayed;
    for (i, (did, said)) in steps.iter().zip(&cx.steps).enumerate() {
        if *did != said.what {
            return Err(format!(
                "step {}: the trace says {:?}, its choice {} here is {did:?}: the path was \
                 found with another model or other bounds",
                i + 1,
                said.what,
                said.choice
            ));
        }
    }
    Ok(replayed)
}
