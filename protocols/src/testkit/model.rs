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
//! fingerprint are explored once. A fingerprint collision could hide a
//! state (with 64 bits and millions of states, a chance around 1e-7).
//! A core's part of the print is cached while the core is unchanged (the
//! simulator versions each core), so a step reformats only the cores it
//! touched; a step's description is formatted only for counterexamples.
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
//! Not done: symmetry reduction (member ids are baked into every core's
//! state, the messages, the disks' encoded bytes and the observers, so
//! permuting them is specific to each family; see BENCHMARKS.md),
//! partial-order reduction, and a parallel search (the machines this runs
//! on have two cores, which the suite already uses; the models hold `Rc`s
//! and are not `Send`).

use std::collections::{HashMap, VecDeque};
use std::fmt::{Debug, Write as _};
use std::hash::{Hash, Hasher};
use std::rc::Rc;
use std::time::{Duration, Instant};

use serde::Serialize;

use super::{EventKey, Observer, Out, Pending, Sim, SimProtocol};

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
}

impl<P: SimProtocol, O> Clone for Model<P, O> {
    fn clone(&self) -> Self {
        Self {
            name: self.name.clone(),
            init: self.init.clone(),
            commands: self.commands.clone(),
            at_rest: self.at_rest.clone(),
            crashable: self.crashable.clone(),
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
            "{verdict}: {} states explored, {} unique, depth {}, {:.2?} ({:.0} states/s)",
            self.explored,
            self.unique,
            self.depth,
            self.elapsed,
            self.states_per_second()
        )
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

/// The states seen: fingerprint -> the parent's and the index of the
/// choice that led here (`None`: the initial state). Fingerprints are
/// hashes already: the map does not hash them again.
type Seen = HashMap<u64, Option<(u64, usize)>, std::hash::BuildHasherDefault<IdentityHasher>>;

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
}

impl<P, O> Search<P, O>
where
    P: SimProtocol + Clone + Debug,
    O: Observer<P> + Clone + Debug,
{
    /// A search of `model` within `bounds`.
    pub fn new(model: Model<P, O>, bounds: Bounds) -> Self {
        Self { model, bounds }
    }

    /// The state's fingerprint. A core's part is cached in the state (and
    /// so in its successors) while the core's version stays the same: a
    /// step changes one or two cores, and formatting every core of every
    /// successor was the largest cost of the search.
    fn fingerprint(&self, s: &mut State<P, O>) -> u64 {
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
        let mut messages: Vec<u64> = Vec::new();
        let mut others: Vec<u64> = Vec::new();
        for (_, p) in s.sim.pending() {
            match &p {
                Pending::Deliver { .. } | Pending::Report { .. } => messages.push(hash_debug(&p)),
                _ => others.push(hash_debug(&p)),
            }
        }
        messages.sort_unstable();
        messages.hash(&mut h);
        others.hash(&mut h);
        hash_debug(s.sim.blocked_links()).hash(&mut h);
        hash_debug(s.sim.opinions()).hash(&mut h);
        hash_debug(&s.obs).hash(&mut h);
        s.used.hash(&mut h);
        s.budget.hash(&mut h);
        h.finish()
    }

    /// The steps state `s` allows, in a fixed order, each with what it
    /// does when `describe` (else an empty string: the search records a
    /// step by its index and describes only the steps of a counterexample).
    fn choices(&self, s: &State<P, O>, describe: bool) -> Vec<(Choice<P::Id>, String)> {
        let mut out = Vec::new();
        let d = |f: &dyn Fn() -> String| if describe { f() } else { String::new() };
        let pending = s.sim.pending();
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
        s.used.iter().all(|u| *u)
            && s.sim
                .pending()
                .iter()
                .all(|(_, p)| matches!(p, Pending::Timer { .. }))
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
        let mut s = State {
            sim,
            core_prints: Vec::new(),
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
        // fingerprint -> (parent, choice index)
        let mut seen: Seen = Seen::default();
        seen.insert(root, None);
        let mut frontier: VecDeque<(State<P, O>, u64)> = VecDeque::new();
        frontier.push_back((init, root));
        let (mut explored, mut deepest, mut depth_limited) = (0u64, 0usize, false);
        let mut generated = 1u64;
        let report = |verdict, explored, generated, unique: usize, depth, limited| Report {
            verdict,
            explored,
            generated,
            unique: unique as u64,
            depth,
            depth_limited: limited,
            elapsed: started.elapsed(),
        };
        let violated = |cx, explored, generated, unique, depth, limited| {
            report(
                Verdict::Violated(Box::new(cx)),
                explored,
                generated,
                unique,
                depth,
                limited,
            )
        };
        while let Some((state, fp)) = if breadth_first {
            frontier.pop_front()
        } else {
            frontier.pop_back()
        } {
            explored += 1;
            deepest = deepest.max(state.depth);
            if self.quiescent(&state) {
                if let Some(goal) = &self.model.at_rest {
                    if let Err(e) = goal(&state.sim, &state.obs) {
                        let steps = self.steps_to(&seen, fp);
                        let cx = self.counterexample(&steps, format!("at rest: {e}"));
                        return Ok(violated(
                            cx,
                            explored,
                            generated,
                            seen.len(),
                            deepest,
                            depth_limited,
                        ));
                    }
                }
            }
            if state.depth >= self.bounds.max_depth {
                depth_limited = true;
                continue;
            }
            for (i, (choice, _)) in self.choices(&state, false).into_iter().enumerate() {
                let (mut next, result) = self.take(&state, &choice);
                generated += 1;
                let nfp = self.fingerprint(&mut next);
                if let Err(e) = result {
                    // The path to this state, then the step that broke it
                    // (the broken state itself is not recorded: another
                    // path may have reached a state of the same print).
                    let mut steps = self.steps_to(&seen, fp);
                    steps.push(i);
                    let cx = self.counterexample(&steps, e);
                    return Ok(violated(
                        cx,
                        explored,
                        generated,
                        seen.len(),
                        deepest,
                        depth_limited,
                    ));
                }
                if seen.contains_key(&nfp) {
                    continue;
                }
                seen.insert(nfp, Some((fp, i)));
                if seen.len() >= self.bounds.max_states {
                    return Ok(report(
                        Verdict::Undecided,
                        explored,
                        generated,
                        seen.len(),
                        deepest,
                        depth_limited,
                    ));
                }
                frontier.push_back((next, nfp));
            }
        }
        Ok(report(
            Verdict::Holds,
            explored,
            generated,
            seen.len(),
            deepest,
            depth_limited,
        ))
    }

    /// The choice indexes of the path to the state of print `fp`.
    fn steps_to(&self, seen: &Seen, mut fp: u64) -> Vec<usize> {
        let mut steps = Vec::new();
        while let Some(Some((parent, choice))) = seen.get(&fp) {
            steps.push(*choice);
            fp = *parent;
        }
        steps.reverse();
        steps
    }

    /// The counterexample of the path `choices` (each step described and
    /// traced by running it again).
    fn counterexample(&self, choices: &[usize], violation: String) -> Counterexample {
        let mut cx = Counterexample {
            model: self.model.name.clone(),
            steps: choices
                .iter()
                .enumerate()
                .map(|(i, choice)| Step {
                    step: i + 1,
                    choice: *choice,
                    what: String::new(),
                    events: Vec::new(),
                })
                .collect(),
            violation,
            start_events: Vec::new(),
        };
        self.trace(&mut cx);
        cx
    }

    /// Fill in what happened at each step of `cx` (its trace lines), by
    /// running it again with the simulation recording. The steps were
    /// found by this search, so they replay; if one does not (it cannot),
    /// the trace stops there.
    fn trace(&self, cx: &mut Counterexample) {
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
            let Some((choice, what)) = self.choices(&state, true).into_iter().nth(step.choice)
            else {
                return;
            };
            step.what = what;
            let (mut next, result) = self.take(&state, &choice);
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
