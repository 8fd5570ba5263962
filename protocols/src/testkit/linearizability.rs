//! A linearizability checker for the client histories of a replicated
//! service, with a key-value model.
//!
//! Clients record each operation they issue in a [`History`]: its
//! invocation (client, key, operation, time), then its outcome:
//!
//! - **returned**: the value it returned, and when;
//! - **unknown** (a timeout, a connection reset): it may have taken effect
//!   at any time after its invocation, or never, and may have returned
//!   anything. An operation still pending when the history is checked
//!   counts as unknown;
//! - **failed** for certain (the service said it was not applied, e.g. an
//!   HTTP 503): it is left out of the check.
//!
//! Times are ticks of one clock shared by all the clients (a [`u64`], or a
//! [`Duration`] since a common start: see [`Timestamp`]). An operation
//! that returned at `t` and one invoked at the same `t` are taken as
//! concurrent.
//!
//! [`check_history`] decides whether a history is *linearizable* against a
//! sequential specification of one key's object ([`Model`]): whether, for
//! every key, there is a total order of the key's operations that respects
//! real time (an operation that returned before another was invoked comes
//! first), contains every operation that returned and any subset of those
//! of unknown outcome, and in which every operation that returned gets the
//! value the model gives it. Keys are checked apart (linearizability is
//! compositional: a history of single-key operations is linearizable if and
//! only if each key's sub-history is), each with the search of Wing and
//! Gong as improved by Lowe: entries for the invocations and returns in a
//! linked list in time order, an operation *lifted* out of the list when it
//! is linearized and put back when the search backtracks, and a cache of
//! the (set of linearized operations, model state) pairs already explored,
//! which are never explored twice. Two sound refinements keep it small on
//! the histories of real clients: operations of unknown outcome are tried
//! after the others at each step, and a state is not explored when one
//! with the same model state and the same operations linearized but fewer
//! of unknown outcome was; and an operation that certainly left the state
//! unchanged (a read) and returned what the model gives is linearized as
//! soon as it may be, without trying other orders there.
//!
//! **Guarantees.** The check is exact: [`Ok`] means every key has a
//! linearization; [`CheckError::NotLinearizable`] means the search of the
//! named key was exhaustive and found none. The one exception is the
//! bound: a key whose search explores more than
//! [`CheckOptions::max_states_per_key`] states gives
//! [`CheckError::Undecided`], which is not a pass.
//!
//! [`check_kv`] checks a history against the key-value model [`KvModel`]
//! (get, put, compare-and-set, delete). A failed check explains itself
//! ([`Violation`]'s `Display`): the key's operations in invoke order, the
//! longest linearizable prefix found, and why none of the others can come
//! next. A history serializes to JSON ([`History::write_json`]) to keep it
//! when a check fails.

use std::collections::hash_map::Entry as MapEntry;
use std::collections::{BTreeMap, HashMap};
use std::fmt::{self, Debug};
use std::hash::Hash;
use std::path::Path;
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::Duration;

use serde::{Deserialize, Serialize};

/// Who issued an operation: any number that tells the clients apart.
pub type ClientId = u64;

/// An operation of a [`History`], numbered from 0 in invocation-record
/// order.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(transparent)]
pub struct OpId(pub u64);

impl fmt::Display for OpId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "#{}", self.0)
    }
}

/// A time read from the clock all the clients of a history share, as ticks
/// of that clock.
pub trait Timestamp {
    /// This time in ticks (any unit, the same for the whole history).
    fn ticks(self) -> u64;
}

impl Timestamp for u64 {
    fn ticks(self) -> u64 {
        self
    }
}

/// A [`Duration`] since a common start, in nanoseconds (saturating at
/// [`u64::MAX`], some 584 years).
impl Timestamp for Duration {
    fn ticks(self) -> u64 {
        u64::try_from(self.as_nanos()).unwrap_or(u64::MAX)
    }
}

/// How an operation ended.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Outcome<Ret> {
    /// No outcome recorded yet; checked as [`Outcome::Unknown`].
    Pending,
    /// It returned `value` at time `at`.
    Returned {
        /// When the client got the response, in ticks.
        at: u64,
        /// What the service returned.
        value: Ret,
    },
    /// It may have taken effect at any time after its invocation, or never
    /// (a timeout, a connection reset).
    Unknown,
    /// It was certainly not applied; left out of the check.
    Failed,
}

/// One recorded operation.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Operation<Op, Ret> {
    /// Its number in the history.
    pub id: OpId,
    /// The client that issued it.
    pub client: ClientId,
    /// The key it is on.
    pub key: String,
    /// What it asked for.
    pub op: Op,
    /// When the client issued it, in ticks.
    pub invoked_at: u64,
    /// How it ended.
    pub outcome: Outcome<Ret>,
}

/// A history of operations on keys, recorded by concurrent clients.
///
/// A cheap handle: clones share the same history, so each client task or
/// thread can hold one. Record an operation with
/// [`record_invoke`](History::record_invoke) before sending it, then its
/// outcome with exactly one of [`record_return`](History::record_return),
/// [`record_unknown`](History::record_unknown) or
/// [`record_failed`](History::record_failed). Serializes to (and from)
/// JSON as `{"operations": [...]}`.
pub struct History<Op = KvOp, Ret = KvRet> {
    operations: Arc<Mutex<Vec<Operation<Op, Ret>>>>,
}

impl<Op, Ret> Clone for History<Op, Ret> {
    fn clone(&self) -> Self {
        Self {
            operations: Arc::clone(&self.operations),
        }
    }
}

impl<Op, Ret> Default for History<Op, Ret> {
    fn default() -> Self {
        Self::from_operations(Vec::new())
    }
}

impl<Op: Debug, Ret: Debug> Debug for History<Op, Ret> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("History")
            .field("operations", &*self.lock())
            .finish()
    }
}

impl<Op, Ret> History<Op, Ret> {
    /// An empty history.
    pub fn new() -> Self {
        Self::default()
    }

    /// A history of already recorded operations (e.g. read from a file).
    pub fn from_operations(operations: Vec<Operation<Op, Ret>>) -> Self {
        Self {
            operations: Arc::new(Mutex::new(operations)),
        }
    }

    fn lock(&self) -> MutexGuard<'_, Vec<Operation<Op, Ret>>> {
        self.operations
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
    }

    /// Record that `client` invoked `op` on `key` at time `at`; its outcome
    /// is [`Outcome::Pending`] until recorded.
    pub fn record_invoke(
        &self,
        client: ClientId,
        key: impl Into<String>,
        op: Op,
        at: impl Timestamp,
    ) -> OpId {
        let mut operations = self.lock();
        let id = OpId(operations.len() as u64);
        operations.push(Operation {
            id,
            client,
            key: key.into(),
            op,
            invoked_at: at.ticks(),
            outcome: Outcome::Pending,
        });
        id
    }

    /// Record that operation `id` returned `value` at time `at`.
    ///
    /// # Panics
    ///
    /// If `id` is not an operation of this history, or its outcome was
    /// already recorded.
    pub fn record_return(&self, id: OpId, at: impl Timestamp, value: Ret) {
        self.settle(
            id,
            Outcome::Returned {
                at: at.ticks(),
                value,
            },
        );
    }

    /// Record that the outcome of operation `id` is unknown: it may have
    /// taken effect at any time after its invocation, or never.
    ///
    /// # Panics
    ///
    /// As [`record_return`](History::record_return).
    pub fn record_unknown(&self, id: OpId) {
        self.settle(id, Outcome::Unknown);
    }

    /// Record that operation `id` was certainly not applied: it is left out
    /// of the check.
    ///
    /// # Panics
    ///
    /// As [`record_return`](History::record_return).
    pub fn record_failed(&self, id: OpId) {
        self.settle(id, Outcome::Failed);
    }

    fn settle(&self, id: OpId, outcome: Outcome<Ret>) {
        let mut operations = self.lock();
        let recorded = usize::try_from(id.0)
            .ok()
            .and_then(|i| operations.get_mut(i));
        let Some(operation) = recorded else {
            drop(operations);
            panic!("operation {id} is not in this history");
        };
        if !matches!(operation.outcome, Outcome::Pending) {
            drop(operations);
            panic!("operation {id}: its outcome was already recorded");
        }
        operation.outcome = outcome;
    }

    /// How many operations were invoked.
    pub fn len(&self) -> usize {
        self.lock().len()
    }

    /// No operation was invoked.
    pub fn is_empty(&self) -> bool {
        self.lock().is_empty()
    }

    /// A copy of the operations recorded so far, in [`OpId`] order.
    pub fn operations(&self) -> Vec<Operation<Op, Ret>>
    where
        Op: Clone,
        Ret: Clone,
    {
        self.lock().clone()
    }

    /// Write the history to `path` as JSON.
    pub fn write_json(&self, path: impl AsRef<Path>) -> std::io::Result<()>
    where
        Op: Serialize,
        Ret: Serialize,
    {
        let json = serde_json::to_vec_pretty(self)?;
        std::fs::write(path, json)
    }

    /// Read a history written by [`write_json`](History::write_json).
    pub fn read_json(path: impl AsRef<Path>) -> std::io::Result<Self>
    where
        Op: serde::de::DeserializeOwned,
        Ret: serde::de::DeserializeOwned,
    {
        let json = std::fs::read(path)?;
        Ok(serde_json::from_slice(&json)?)
    }
}

#[derive(Serialize)]
struct HistoryRef<'a, Op, Ret> {
    operations: &'a [Operation<Op, Ret>],
}

#[derive(Deserialize)]
struct HistoryOwned<Op, Ret> {
    operations: Vec<Operation<Op, Ret>>,
}

impl<Op: Serialize, Ret: Serialize> Serialize for History<Op, Ret> {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        HistoryRef {
            operations: &self.lock(),
        }
        .serialize(serializer)
    }
}

impl<'de, Op: Deserialize<'de>, Ret: Deserialize<'de>> Deserialize<'de> for History<Op, Ret> {
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let owned = HistoryOwned::deserialize(deserializer)?;
        Ok(Self::from_operations(owned.operations))
    }
}

/// The sequential specification of one key's object.
pub trait Model {
    /// The object's state; states are compared and hashed to prune the
    /// search, so it should be small.
    type State: Clone + Eq + Hash + Debug;
    /// An operation on the object.
    type Op: Debug;
    /// What an operation returns; compared for equality with the returns
    /// recorded.
    type Ret: PartialEq + Debug;

    /// The state of a key before any operation.
    fn init(&self) -> Self::State;

    /// Apply `op` to `state`: the new state and what `op` returns.
    fn step(&self, state: &Self::State, op: &Self::Op) -> (Self::State, Self::Ret);

    /// `op`, having returned `ret` (`None`: its outcome is unknown),
    /// certainly left the state unchanged, wherever it is linearized (a
    /// read; a compare-and-set that reported a mismatch). Such operations
    /// of unknown outcome constrain nothing and are left out of the search;
    /// one that returned what the model gives is linearized as soon as it
    /// may be, without trying other orders there. Default: `false`
    /// (always correct, only slower).
    fn is_read_only(&self, _op: &Self::Op, _ret: Option<&Self::Ret>) -> bool {
        false
    }

    /// `op` for a person. Default: its `Debug` form.
    fn describe_op(&self, op: &Self::Op) -> String {
        format!("{op:?}")
    }

    /// `ret` for a person. Default: its `Debug` form.
    fn describe_ret(&self, ret: &Self::Ret) -> String {
        format!("{ret:?}")
    }

    /// `state` for a person. Default: its `Debug` form.
    fn describe_state(&self, state: &Self::State) -> String {
        format!("{state:?}")
    }
}

/// How hard the checker may try.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct CheckOptions {
    /// At most this many states (steps of the model) are explored per key;
    /// a key that needs more is [`CheckError::Undecided`]. Default:
    /// 1 000 000, about a second per key in a debug build.
    pub max_states_per_key: u64,
}

impl Default for CheckOptions {
    fn default() -> Self {
        Self {
            max_states_per_key: 1_000_000,
        }
    }
}

/// What a successful check covered (to tell a real pass from a vacuous
/// one).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct CheckReport {
    /// Keys with at least one operation checked.
    pub keys: usize,
    /// Operations checked: those that returned and those of unknown outcome.
    pub operations: usize,
    /// Of which returned.
    pub returned: usize,
    /// Of which of unknown outcome (including those left pending).
    pub unknown: usize,
    /// Operations failed for certain, left out.
    pub failed: usize,
    /// States explored, all keys together.
    pub states_explored: u64,
}

impl fmt::Display for CheckReport {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "linearizable: {} operations on {} keys ({} returned, {} of unknown outcome; {} failed, left out); {} states explored",
            self.operations,
            self.keys,
            self.returned,
            self.unknown,
            self.failed,
            self.states_explored
        )
    }
}

/// Why a history did not pass.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum CheckError {
    /// A key's operations have no linearization.
    #[error("{0}")]
    NotLinearizable(Box<Violation>),
    /// A key's search hit [`CheckOptions::max_states_per_key`] (and no key
    /// was found not linearizable).
    #[error("{0}")]
    Undecided(Undecided),
    /// The history cannot be checked.
    #[error("operation {op}: {reason}")]
    Malformed {
        /// The operation at fault.
        op: OpId,
        /// What is wrong with it.
        reason: String,
    },
}

impl CheckError {
    /// The violation, if that is what this is.
    pub fn violation(&self) -> Option<&Violation> {
        match self {
            CheckError::NotLinearizable(v) => Some(v),
            _ => None,
        }
    }
}

/// A key whose search was cut short by the bound.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Undecided {
    /// The first such key (in key order).
    pub key: String,
    /// States explored on that key when the search stopped.
    pub states_explored: u64,
    /// How many keys were left undecided.
    pub undecided_keys: usize,
}

impl fmt::Display for Undecided {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "undecided: the search of key {:?} explored {} states (the limit) without deciding; {} key(s) undecided in all (raise CheckOptions::max_states_per_key)",
            self.key, self.states_explored, self.undecided_keys
        )
    }
}

/// A key's operations that have no linearization, and the best the search
/// could do.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Violation {
    /// The key.
    pub key: String,
    /// All the key's operations in invoke order, failed ones included.
    pub operations: Vec<OpSummary>,
    /// The longest linearizable prefix found: operations in linearization
    /// order. No operation left can come after it.
    pub longest_prefix: Vec<PrefixStep>,
    /// Why each operation that returned but is not in the prefix cannot
    /// come next, in invoke order.
    pub blocked: Vec<Blocked>,
    /// States explored on the key.
    pub states_explored: u64,
}

/// An operation, as shown in a [`Violation`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OpSummary {
    /// Its number in the history.
    pub id: OpId,
    /// Who issued it.
    pub client: ClientId,
    /// What it asked for.
    pub op: String,
    /// When it was invoked.
    pub invoked_at: u64,
    /// When it returned, if it did.
    pub returned_at: Option<u64>,
    /// What it returned, or its outcome.
    pub result: String,
}

/// One operation of a linearizable prefix.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PrefixStep {
    /// The operation.
    pub id: OpId,
    /// What it asked for.
    pub op: String,
    /// What the model returns for it there (which is what it returned, or
    /// anything when its outcome is unknown).
    pub result: String,
    /// Its outcome was unknown (and it is taken to have taken effect here).
    pub outcome_unknown: bool,
    /// The model's state after it.
    pub state_after: String,
}

/// Why an operation cannot come next after the longest prefix.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Blocked {
    /// The operation.
    pub id: OpId,
    /// The reason: an operation it must follow, or the return it would
    /// get.
    pub reason: String,
}

impl fmt::Display for Violation {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        writeln!(
            f,
            "not linearizable: key {:?} ({} operations, {} states explored)",
            self.key,
            self.operations.len(),
            self.states_explored
        )?;
        writeln!(
            f,
            "operations on the key, in invoke order (invoke..return):"
        )?;
        for o in &self.operations {
            let span = match o.returned_at {
                Some(r) => format!("{}..{}", o.invoked_at, r),
                None => format!("{}..", o.invoked_at),
            };
            writeln!(
                f,
                "  {:<7} client {:<4} {:<28} {:<22} {}",
                o.id.to_string(),
                o.client,
                o.op,
                span,
                o.result
            )?;
        }
        writeln!(
            f,
            "longest linearizable prefix ({} operations):",
            self.longest_prefix.len()
        )?;
        for s in &self.longest_prefix {
            let unknown = if s.outcome_unknown {
                " (outcome unknown, taken to take effect here)"
            } else {
                ""
            };
            writeln!(
                f,
                "  {:<7} {} -> {}{unknown}; state then {}",
                s.id.to_string(),
                s.op,
                s.result,
                s.state_after
            )?;
        }
        writeln!(f, "no operation left can come next:")?;
        for b in &self.blocked {
            writeln!(f, "  {:<7} {}", b.id.to_string(), b.reason)?;
        }
        Ok(())
    }
}

/// Check `history` against `model` (see the module docs). Holds the
/// history's lock during the check.
pub fn check_history<M: Model>(
    history: &History<M::Op, M::Ret>,
    model: &M,
    options: &CheckOptions,
) -> Result<CheckReport, CheckError> {
    check_operations(&history.lock(), model, options)
}

/// One key's operations.
type KeyOperations<'a, M> = Vec<&'a Operation<<M as Model>::Op, <M as Model>::Ret>>;

/// Check recorded `operations` against `model` (see the module docs).
pub fn check_operations<M: Model>(
    operations: &[Operation<M::Op, M::Ret>],
    model: &M,
    options: &CheckOptions,
) -> Result<CheckReport, CheckError> {
    // Each key's operations, failed ones included.
    let mut by_key: BTreeMap<&str, KeyOperations<'_, M>> = BTreeMap::new();
    for o in operations {
        if let Outcome::Returned { at, .. } = o.outcome {
            if at < o.invoked_at {
                return Err(CheckError::Malformed {
                    op: o.id,
                    reason: format!(
                        "returned at {at}, before its invocation at {}",
                        o.invoked_at
                    ),
                });
            }
        }
        by_key.entry(&o.key).or_default().push(o);
    }
    let mut report = CheckReport::default();
    let mut undecided: Option<Undecided> = None;
    for (key, mut ops) in by_key {
        ops.sort_by_key(|o| (o.invoked_at, o.id));
        let mut candidates = Vec::with_capacity(ops.len());
        let mut checked = 0;
        for o in &ops {
            let returned = match &o.outcome {
                Outcome::Failed => {
                    report.failed += 1;
                    continue;
                }
                Outcome::Returned { at, value } => {
                    report.returned += 1;
                    Some((*at, value))
                }
                Outcome::Pending | Outcome::Unknown => {
                    report.unknown += 1;
                    if model.is_read_only(&o.op, None) {
                        checked += 1;
                        continue;
                    }
                    None
                }
            };
            checked += 1;
            candidates.push(Candidate {
                id: o.id,
                op: &o.op,
                invoked_at: o.invoked_at,
                returned,
            });
        }
        if checked == 0 {
            continue;
        }
        report.keys += 1;
        report.operations += checked;
        match search(model, &candidates, options.max_states_per_key) {
            Search::Linearizable { explored } => report.states_explored += explored,
            Search::NotLinearizable {
                explored,
                longest_prefix,
            } => {
                let violation = explain(model, key, &ops, &candidates, &longest_prefix, explored);
                return Err(CheckError::NotLinearizable(Box::new(violation)));
            }
            Search::Undecided { explored } => {
                report.states_explored += explored;
                let u = undecided.get_or_insert_with(|| Undecided {
                    key: key.to_string(),
                    states_explored: explored,
                    undecided_keys: 0,
                });
                u.undecided_keys += 1;
            }
        }
    }
    match undecided {
        Some(u) => Err(CheckError::Undecided(u)),
        None => Ok(report),
    }
}

/// An operation the search may linearize.
struct Candidate<'a, Op, Ret> {
    id: OpId,
    op: &'a Op,
    invoked_at: u64,
    /// When it returned and what; `None` when its outcome is unknown (it
    /// may return anything, or never take effect).
    returned: Option<(u64, &'a Ret)>,
}

/// How the search of one key ended.
enum Search {
    Linearizable {
        explored: u64,
    },
    NotLinearizable {
        explored: u64,
        longest_prefix: Vec<usize>,
    },
    Undecided {
        explored: u64,
    },
}

/// A set of candidates, by index.
#[derive(Clone, PartialEq, Eq, Hash)]
struct OpSet(Box<[u64]>);

impl OpSet {
    fn new(len: usize) -> Self {
        Self(vec![0; len.div_ceil(64)].into_boxed_slice())
    }

    fn insert(&mut self, i: usize) {
        self.0[i / 64] |= 1 << (i % 64);
    }

    fn remove(&mut self, i: usize) {
        self.0[i / 64] &= !(1 << (i % 64));
    }

    fn is_subset_of(&self, other: &OpSet) -> bool {
        self.0.iter().zip(other.0.iter()).all(|(a, b)| a & !b == 0)
    }
}

/// The head and end sentinels of a [`Links`] list.
const HEAD: usize = 0;
const END: usize = 1;

/// A doubly linked list over nodes `2..`, between the sentinels, from
/// which nodes can be taken out and put back (in reverse order).
struct Links {
    next: Vec<usize>,
    prev: Vec<usize>,
}

impl Links {
    /// A list of `order`'s nodes, in that order, among `nodes` nodes.
    fn new(nodes: usize, order: impl IntoIterator<Item = usize>) -> Self {
        let mut list = Self {
            next: vec![END; nodes],
            prev: vec![HEAD; nodes],
        };
        let mut last = HEAD;
        for node in order {
            list.next[last] = node;
            list.prev[node] = last;
            last = node;
        }
        list.next[last] = END;
        list.prev[END] = last;
        list
    }

    fn first(&self) -> usize {
        self.next[HEAD]
    }

    fn unlink(&mut self, node: usize) {
        let (p, n) = (self.prev[node], self.next[node]);
        self.next[p] = n;
        self.prev[n] = p;
    }

    fn relink(&mut self, node: usize) {
        let (p, n) = (self.prev[node], self.next[node]);
        self.next[p] = node;
        self.prev[n] = node;
    }
}

/// Candidate `i`'s call entry in the list of entries.
fn call_node(i: usize) -> usize {
    2 + 2 * i
}

/// Whether `node` of the list of entries is a call entry (else a return
/// entry or a sentinel).
fn is_call_node(node: usize) -> bool {
    node >= 2 && node.is_multiple_of(2)
}

/// Candidate `i`'s return entry in the list of entries.
fn return_node(i: usize) -> usize {
    3 + 2 * i
}

/// Candidate `i`'s node in the list of those of unknown outcome.
fn unknown_node(i: usize) -> usize {
    2 + i
}

/// Where the search looks for the next candidate to linearize.
#[derive(Clone, Copy)]
enum Cursor {
    /// At a new node of the search: first look for a candidate to take
    /// without trying others ([`Searcher::forced`]).
    Fresh,
    /// At an entry of the list of the call and return entries of the
    /// candidates that returned.
    Entry(usize),
    /// At a node of the list of the candidates of unknown outcome; those
    /// invoked at or before `until` (the earliest return of a candidate
    /// left) may come next.
    Unknown { node: usize, until: u64 },
    /// Every candidate that may come next was tried: undo the last choice.
    Exhausted,
}

/// The Wing–Gong–Lowe search for a linearization of candidates (one key's
/// operations). See [`search`].
struct Searcher<'m, 'c, 'o, M: Model> {
    model: &'m M,
    candidates: &'c [Candidate<'o, M::Op, M::Ret>],
    /// Candidate `i` certainly left the state unchanged
    /// ([`Model::is_read_only`]).
    read_only: Vec<bool>,
    /// The call and return entries of the candidates that returned.
    entries: Links,
    /// The candidates of unknown outcome.
    unknowns: Links,
    state: M::State,
    /// The candidates that returned linearized.
    done: OpSet,
    /// The candidates of unknown outcome linearized.
    taken: OpSet,
    /// The candidates linearized, in order, each with the state before it
    /// and where the search resumes when it is undone.
    stack: Vec<(usize, M::State, Cursor)>,
    /// The states explored: for each (done, model state), the sets taken.
    seen: HashMap<(OpSet, M::State), Vec<OpSet>>,
    required_left: usize,
    longest_prefix: Vec<usize>,
    /// Steps of the model taken, at most `limit`.
    explored: u64,
    limit: u64,
}

impl<M: Model> Searcher<'_, '_, '_, M> {
    /// Try to linearize candidate `i` next, to resume at `resume` when it
    /// is undone: whether it was (it returns what the model gives, and the
    /// state reached was not explored already).
    fn linearize(&mut self, i: usize, resume: Cursor) -> bool {
        self.explored += 1;
        let c = &self.candidates[i];
        let (next_state, ret) = self.model.step(&self.state, c.op);
        if c.returned.is_some_and(|(_, value)| *value != ret) {
            return false;
        }
        let definite = c.returned.is_some();
        let (mut next_done, mut next_taken) = (self.done.clone(), self.taken.clone());
        if definite {
            next_done.insert(i);
        } else {
            next_taken.insert(i);
        }
        match self.seen.entry((next_done, next_state.clone())) {
            MapEntry::Occupied(mut e) => {
                if e.get().iter().any(|t| t.is_subset_of(&next_taken)) {
                    return false;
                }
                e.get_mut().push(next_taken.clone());
            }
            MapEntry::Vacant(e) => {
                e.insert(vec![next_taken.clone()]);
            }
        }
        let previous = std::mem::replace(&mut self.state, next_state);
        self.stack.push((i, previous, resume));
        if definite {
            self.done.insert(i);
            self.required_left -= 1;
            self.entries.unlink(call_node(i));
            self.entries.unlink(return_node(i));
        } else {
            self.taken = next_taken;
            self.unknowns.unlink(unknown_node(i));
        }
        if self.stack.len() > self.longest_prefix.len() {
            self.longest_prefix = self.stack.iter().map(|(i, _, _)| *i).collect();
        }
        true
    }

    /// Undo the last linearization: where to resume, or `None` if there
    /// is none.
    fn undo(&mut self) -> Option<Cursor> {
        let (i, previous, resume) = self.stack.pop()?;
        self.state = previous;
        if self.candidates[i].returned.is_some() {
            self.done.remove(i);
            self.required_left += 1;
            self.entries.relink(return_node(i));
            self.entries.relink(call_node(i));
        } else {
            self.taken.remove(i);
            self.unknowns.relink(unknown_node(i));
        }
        Some(resume)
    }

    /// A candidate that may come next, certainly leaves the state
    /// unchanged and returned what the model gives now. If the search can
    /// succeed from here, it can with this candidate next (moved to the
    /// front of a linearization from here, it returns the same and changes
    /// nothing for the others), so the others need not be tried here.
    fn forced(&mut self) -> Option<usize> {
        let mut node = self.entries.first();
        while is_call_node(node) && self.explored < self.limit {
            let i = (node - 2) / 2;
            if self.read_only[i] {
                self.explored += 1;
                let c = &self.candidates[i];
                let (_, ret) = self.model.step(&self.state, c.op);
                if c.returned.is_some_and(|(_, value)| *value == ret) {
                    return Some(i);
                }
            }
            node = self.entries.next[node];
        }
        None
    }

    fn run(&mut self) -> Search {
        let mut cursor = Cursor::Fresh;
        loop {
            if self.required_left == 0 {
                return Search::Linearizable {
                    explored: self.explored,
                };
            }
            if self.explored >= self.limit {
                return Search::Undecided {
                    explored: self.explored,
                };
            }
            cursor = match cursor {
                Cursor::Fresh => match self.forced() {
                    Some(i) if self.linearize(i, Cursor::Exhausted) => Cursor::Fresh,
                    Some(_) => Cursor::Exhausted,
                    None => Cursor::Entry(self.entries.first()),
                },
                Cursor::Entry(node) if !is_call_node(node) => {
                    // The first return entry left (or, defensively, the
                    // end): the candidates of unknown outcome invoked
                    // before it may come next too.
                    let until = match node {
                        END => u64::MAX,
                        _ => self.candidates[(node - 3) / 2]
                            .returned
                            .map_or(u64::MAX, |r| r.0),
                    };
                    Cursor::Unknown {
                        node: self.unknowns.first(),
                        until,
                    }
                }
                Cursor::Entry(node) => {
                    let i = (node - 2) / 2;
                    let resume = Cursor::Entry(self.entries.next[node]);
                    if self.linearize(i, resume) {
                        Cursor::Fresh
                    } else {
                        resume
                    }
                }
                Cursor::Unknown { node, until } => {
                    let i = node.wrapping_sub(2);
                    if node == END || self.candidates[i].invoked_at > until {
                        Cursor::Exhausted
                    } else {
                        let resume = Cursor::Unknown {
                            node: self.unknowns.next[node],
                            until,
                        };
                        if self.linearize(i, resume) {
                            Cursor::Fresh
                        } else {
                            resume
                        }
                    }
                }
                Cursor::Exhausted => match self.undo() {
                    Some(resume) => resume,
                    None => {
                        return Search::NotLinearizable {
                            explored: self.explored,
                            longest_prefix: std::mem::take(&mut self.longest_prefix),
                        }
                    }
                },
            };
        }
    }
}

/// The Wing–Gong–Lowe search for a linearization of `candidates` (one
/// key's operations), exploring at most `limit` states.
///
/// The candidates that returned have a call and a return entry in a list
/// in time order (calls before returns at the same time, so that such
/// operations are concurrent): those whose call comes before the first
/// return entry may come next. The candidates of unknown outcome have no
/// return (they are never required and never make another wait) and are
/// kept in a list of their own, in invoke order: they are tried after the
/// others at each step, as most are either never needed or needed only
/// where something observes them.
///
/// Two prunings keep the search small, both sound: a state explored is
/// (the candidates that returned linearized, the candidates of unknown
/// outcome linearized, the model state), and one is not explored again
/// when one with the same first and last parts and a subset of the second
/// was (whatever completes it completes that one too, leaving the extra
/// unknown ones out); and a read-only candidate that may come next and
/// matches the state is taken without trying the others
/// ([`Searcher::forced`]).
fn search<M: Model>(model: &M, candidates: &[Candidate<'_, M::Op, M::Ret>], limit: u64) -> Search {
    let n = candidates.len();
    // (time, 0 for a call or 1 for a return, node)
    let mut events: Vec<(u64, u8, usize)> = Vec::with_capacity(2 * n);
    let mut unknown: Vec<(u64, usize)> = Vec::new();
    for (i, c) in candidates.iter().enumerate() {
        match c.returned {
            Some((at, _)) => {
                events.push((c.invoked_at, 0, call_node(i)));
                events.push((at, 1, return_node(i)));
            }
            None => unknown.push((c.invoked_at, unknown_node(i))),
        }
    }
    events.sort_unstable();
    unknown.sort_unstable();
    let mut searcher = Searcher {
        model,
        candidates,
        read_only: candidates
            .iter()
            .map(|c| model.is_read_only(c.op, c.returned.map(|r| r.1)))
            .collect(),
        entries: Links::new(2 + 2 * n, events.iter().map(|e| e.2)),
        unknowns: Links::new(2 + n, unknown.iter().map(|u| u.1)),
        state: model.init(),
        done: OpSet::new(n),
        taken: OpSet::new(n),
        stack: Vec::new(),
        seen: HashMap::new(),
        required_left: events.len() / 2,
        longest_prefix: Vec::new(),
        explored: 0,
        limit,
    };
    searcher.run()
}

/// A [`Violation`] from a failed search of `key`.
fn explain<M: Model>(
    model: &M,
    key: &str,
    ops: &[&Operation<M::Op, M::Ret>],
    candidates: &[Candidate<'_, M::Op, M::Ret>],
    longest_prefix: &[usize],
    explored: u64,
) -> Violation {
    let operations = ops
        .iter()
        .map(|o| {
            let (returned_at, result) = match &o.outcome {
                Outcome::Returned { at, value } => (Some(*at), model.describe_ret(value)),
                Outcome::Unknown => (None, "outcome unknown".to_string()),
                Outcome::Pending => (None, "no outcome recorded (unknown)".to_string()),
                Outcome::Failed => (None, "failed (not applied; left out)".to_string()),
            };
            OpSummary {
                id: o.id,
                client: o.client,
                op: model.describe_op(&o.op),
                invoked_at: o.invoked_at,
                returned_at,
                result,
            }
        })
        .collect();
    let mut state = model.init();
    let mut in_prefix = vec![false; candidates.len()];
    let mut steps = Vec::with_capacity(longest_prefix.len());
    for &i in longest_prefix {
        in_prefix[i] = true;
        let c = &candidates[i];
        let (next, ret) = model.step(&state, c.op);
        state = next;
        steps.push(PrefixStep {
            id: c.id,
            op: model.describe_op(c.op),
            result: model.describe_ret(&ret),
            outcome_unknown: c.returned.is_none(),
            state_after: model.describe_state(&state),
        });
    }
    let mut blocked = Vec::new();
    for (i, c) in candidates.iter().enumerate() {
        let Some((_, value)) = c.returned else {
            continue;
        };
        if in_prefix[i] {
            continue;
        }
        // An operation left that returned before this one was invoked.
        let before = candidates
            .iter()
            .enumerate()
            .find(|(j, d)| !in_prefix[*j] && d.returned.is_some_and(|(at, _)| at < c.invoked_at));
        let reason = match before {
            Some((_, d)) => format!(
                "{} must follow {} (which returned at {}, before it was invoked at {})",
                model.describe_op(c.op),
                d.id,
                d.returned.map_or(0, |(at, _)| at),
                c.invoked_at
            ),
            None => {
                let (_, ret) = model.step(&state, c.op);
                format!(
                    "{} returned {}, but here the model gives {}",
                    model.describe_op(c.op),
                    model.describe_ret(value),
                    model.describe_ret(&ret)
                )
            }
        };
        blocked.push(Blocked { id: c.id, reason });
    }
    Violation {
        key: key.to_string(),
        operations,
        longest_prefix: steps,
        blocked,
        states_explored: explored,
    }
}

/// An operation on a key of the key-value service.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum KvOp {
    /// Read the value: [`KvRet::Value`].
    Get,
    /// Set the value: [`KvRet::Ok`].
    Put {
        /// The new value.
        value: String,
    },
    /// Set the value if the current one is `expected` (`None`: absent):
    /// [`KvRet::Ok`], or else [`KvRet::Mismatch`].
    Cas {
        /// The value required (`None`: the key must be absent).
        expected: Option<String>,
        /// The new value.
        value: String,
    },
    /// Remove the key: [`KvRet::Ok`].
    Delete,
}

/// What a key-value operation returns (revisions, which the service also
/// returns, are left out).
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum KvRet {
    /// A get's value (`None`: absent).
    Value(Option<String>),
    /// A put, delete, or successful compare-and-set.
    Ok,
    /// A compare-and-set that did not apply, with the value it found
    /// (`None`: absent).
    Mismatch {
        /// The current value.
        current: Option<String>,
    },
}

fn show_value(value: &Option<String>) -> String {
    match value {
        Some(v) => format!("{v:?}"),
        None => "absent".to_string(),
    }
}

impl fmt::Display for KvOp {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            KvOp::Get => write!(f, "get"),
            KvOp::Put { value } => write!(f, "put {value:?}"),
            KvOp::Cas { expected, value } => {
                write!(f, "cas {} -> {value:?}", show_value(expected))
            }
            KvOp::Delete => write!(f, "delete"),
        }
    }
}

impl fmt::Display for KvRet {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            KvRet::Value(v) => write!(f, "{}", show_value(v)),
            KvRet::Ok => write!(f, "ok"),
            KvRet::Mismatch { current } => write!(f, "mismatch (current {})", show_value(current)),
        }
    }
}

/// The sequential specification of one key of the key-value service: its
/// state is its value (`None`: absent).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct KvModel;

impl Model for KvModel {
    type State = Option<String>;
    type Op = KvOp;
    type Ret = KvRet;

    fn init(&self) -> Option<String> {
        None
    }

    fn step(&self, state: &Option<String>, op: &KvOp) -> (Option<String>, KvRet) {
        match op {
            KvOp::Get => (state.clone(), KvRet::Value(state.clone())),
            KvOp::Put { value } => (Some(value.clone()), KvRet::Ok),
            KvOp::Cas { expected, value } if expected == state => (Some(value.clone()), KvRet::Ok),
            KvOp::Cas { .. } => (
                state.clone(),
                KvRet::Mismatch {
                    current: state.clone(),
                },
            ),
            KvOp::Delete => (None, KvRet::Ok),
        }
    }

    fn is_read_only(&self, op: &KvOp, ret: Option<&KvRet>) -> bool {
        match op {
            KvOp::Get => true,
            KvOp::Cas { .. } => matches!(ret, Some(KvRet::Mismatch { .. })),
            KvOp::Put { .. } | KvOp::Delete => false,
        }
    }

    fn describe_op(&self, op: &KvOp) -> String {
        op.to_string()
    }

    fn describe_ret(&self, ret: &KvRet) -> String {
        ret.to_string()
    }

    fn describe_state(&self, state: &Option<String>) -> String {
        show_value(state)
    }
}

/// Check a key-value history against [`KvModel`] with the default
/// [`CheckOptions`].
pub fn check_kv(history: &History) -> Result<CheckReport, CheckError> {
    check_history(history, &KvModel, &CheckOptions::default())
}

/// Check a key-value history against [`KvModel`] with `options`.
pub fn check_kv_with(history: &History, options: &CheckOptions) -> Result<CheckReport, CheckError> {
    check_history(history, &KvModel, options)
}

#[cfg(test)]
mod tests {
    use super::*;
    use rand::{Rng, SeedableRng};
    use rand_chacha::ChaCha8Rng;

    /// A history from a compact spec: operations separated by `;`, each
    /// `client key op span result` where `op` is `get`, `put=v`, `del`,
    /// `cas=e>v` (`_` for absent), `span` is `invoke..return` or `invoke..`
    /// and `result` is `ok`, `=v`, `!=v` (a CAS mismatch with current `v`),
    /// `?` (unknown outcome), `failed`, or `pending`.
    fn history(spec: &str) -> History {
        let h = History::new();
        for text in spec.split(';').map(str::trim).filter(|t| !t.is_empty()) {
            let f: Vec<&str> = text.split_whitespace().collect();
            let [client, key, op, span, result] = f[..] else {
                panic!("bad op spec: {text}");
            };
            let value = |v: &str| (v != "_").then(|| v.to_string());
            let op = match op.split_once('=') {
                None if op == "get" => KvOp::Get,
                None if op == "del" => KvOp::Delete,
                Some(("put", v)) => KvOp::Put { value: v.into() },
                Some(("cas", ev)) => {
                    let (e, v) = ev.split_once('>').expect("cas=e>v");
                    KvOp::Cas {
                        expected: value(e),
                        value: v.into(),
                    }
                }
                _ => panic!("bad op: {op}"),
            };
            let (invoke, ret) = span.split_once("..").expect("invoke..return");
            let id = h.record_invoke(
                client.parse().unwrap(),
                key,
                op,
                invoke.parse::<u64>().unwrap(),
            );
            let ret_at = || ret.parse::<u64>().expect("a return time");
            match result {
                "?" => h.record_unknown(id),
                "failed" => h.record_failed(id),
                "pending" => {}
                "ok" => h.record_return(id, ret_at(), KvRet::Ok),
                r if r.starts_with("!=") => h.record_return(
                    id,
                    ret_at(),
                    KvRet::Mismatch {
                        current: value(&r[2..]),
                    },
                ),
                r if r.starts_with('=') => {
                    h.record_return(id, ret_at(), KvRet::Value(value(&r[1..])))
                }
                r => panic!("bad result: {r}"),
            }
        }
        h
    }

    fn passes(spec: &str) -> CheckReport {
        let h = history(spec);
        match check_kv(&h) {
            Ok(report) => report,
            Err(e) => panic!("{spec}\n  should pass, but:\n{e}"),
        }
    }

    fn violation(spec: &str) -> Violation {
        let h = history(spec);
        match check_kv(&h) {
            Err(CheckError::NotLinearizable(v)) => *v,
            other => panic!("{spec}\n  should be a violation, but: {other:?}"),
        }
    }

    fn ids(steps: &[PrefixStep]) -> Vec<u64> {
        steps.iter().map(|s| s.id.0).collect()
    }

    #[test]
    fn sequential_histories_pass() {
        let r = passes(
            "1 x get 0..1 =_; 1 x put=a 2..3 ok; 2 x get 4..5 =a; 2 x cas=a>b 6..7 ok;
             1 x cas=a>c 8..9 !=b; 1 x get 10..11 =b; 2 x del 12..13 ok; 2 x get 14..15 =_;
             1 x cas=_>d 16..17 ok; 1 y get 18..19 =_",
        );
        assert_eq!(
            r,
            CheckReport {
                keys: 2,
                operations: 10,
                returned: 10,
                unknown: 0,
                failed: 0,
                states_explored: r.states_explored,
            }
        );
        assert!(r.states_explored >= 10, "{r}");
        assert!(r
            .to_string()
            .starts_with("linearizable: 10 operations on 2 keys"));
        // The empty history passes, vacuously, and says so.
        assert_eq!(check_kv(&History::new()).unwrap().operations, 0);
    }

    #[test]
    fn a_sequential_wrong_read_fails() {
        let v = violation("1 x put=a 0..1 ok; 1 x get 2..3 =b");
        assert_eq!(v.key, "x");
        assert_eq!(ids(&v.longest_prefix), [0]);
        assert_eq!(v.blocked.len(), 1);
        assert_eq!(v.blocked[0].id, OpId(1));
        assert!(
            v.blocked[0]
                .reason
                .contains("get returned \"b\", but here the model gives \"a\""),
            "{}",
            v.blocked[0].reason
        );
    }

    #[test]
    fn concurrent_histories_linearizable_in_one_order_only() {
        // The two puts overlap; the later reads see a, so a was last.
        passes("1 x put=a 0..10 ok; 2 x put=b 0..10 ok; 3 x get 20..30 =a; 3 x get 40..50 =a");
        // A read concurrent with both puts sees b, then a: b first.
        passes("1 x put=a 0..10 ok; 2 x put=b 0..10 ok; 3 x get 5..8 =b; 3 x get 20..30 =a");
        // ... but then a later read cannot see b again.
        violation("1 x put=a 0..10 ok; 2 x put=b 0..10 ok; 3 x get 5..8 =b; 3 x get 20..30 =a; 4 x get 31..32 =b");
        // The CAS overlaps the put and succeeded, so it came after it; the
        // read overlaps both and saw the CAS's value.
        passes("1 x put=a 0..10 ok; 2 x cas=a>b 5..15 ok; 3 x get 1..20 =b");
        // The same read seeing a is fine too (before the CAS) ...
        passes("1 x put=a 0..10 ok; 2 x cas=a>b 5..15 ok; 3 x get 1..20 =a");
        // ... but not once the CAS completed before it.
        violation("1 x put=a 0..10 ok; 2 x cas=a>b 5..15 ok; 3 x get 16..20 =a");
        // A return and an invocation at the same time are concurrent.
        passes("1 x put=a 0..10 ok; 2 x get 10..12 =_");
        violation("1 x put=a 0..10 ok; 2 x get 11..12 =_");
    }

    #[test]
    fn a_stale_read_after_a_completed_write_fails() {
        let v = violation("1 x put=a 0..10 ok; 2 x put=b 20..30 ok; 3 x get 40..50 =a");
        assert_eq!(ids(&v.longest_prefix), [0, 1]);
        assert_eq!(v.longest_prefix[1].state_after, "\"b\"");
        assert_eq!(v.blocked[0].id, OpId(2));
        let text = v.to_string();
        for line in [
            "not linearizable: key \"x\" (3 operations",
            "operations on the key, in invoke order (invoke..return):",
            "#2      client 3    get",
            "40..50",
            "longest linearizable prefix (2 operations):",
            "#1      put \"b\" -> ok; state then \"b\"",
            "no operation left can come next:",
            "#2      get returned \"a\", but here the model gives \"b\"",
        ] {
            assert!(text.contains(line), "{text}\n  does not say: {line}");
        }
    }

    #[test]
    fn two_reads_seeing_the_writes_in_opposite_orders_fail() {
        let v = violation(
            "1 x put=a 0..100 ok; 2 x put=b 0..100 ok;
             3 x get 10..20 =a; 3 x get 30..40 =b;
             4 x get 10..20 =b; 4 x get 30..40 =a",
        );
        assert_eq!(v.operations.len(), 6);
        // One reader's order works, the other's then cannot.
        assert_eq!(v.longest_prefix.len(), 5);
        // Either reader alone is fine.
        passes("1 x put=a 0..100 ok; 2 x put=b 0..100 ok; 3 x get 10..20 =a; 3 x get 30..40 =b");
        passes("1 x put=a 0..100 ok; 2 x put=b 0..100 ok; 4 x get 10..20 =b; 4 x get 30..40 =a");
    }

    #[test]
    fn a_cas_on_a_value_never_written_fails() {
        let v = violation("1 x put=a 0..10 ok; 2 x cas=c>d 20..30 ok");
        assert!(
            v.blocked[0]
                .reason
                .contains("but here the model gives mismatch (current \"a\")"),
            "{v}"
        );
        // A mismatch must report the current value.
        violation("1 x put=a 0..10 ok; 2 x cas=c>d 20..30 !=b");
        passes("1 x put=a 0..10 ok; 2 x cas=c>d 20..30 !=a");
        // A CAS on absent succeeds only while absent.
        passes("1 x cas=_>a 0..10 ok; 2 x cas=_>b 20..30 !=a");
        violation("1 x cas=_>a 0..10 ok; 2 x cas=_>b 20..30 ok");
    }

    #[test]
    fn unknown_outcomes() {
        // An unknown write observed later: it took effect.
        let r = passes("1 x put=a 0..10 ok; 2 x put=b 20.. ?; 3 x get 100..110 =b");
        assert_eq!((r.operations, r.returned, r.unknown), (3, 2, 1));
        // Never observed: it did not take effect (or was overwritten).
        passes("1 x put=a 0..10 ok; 2 x put=b 20.. ?; 3 x get 100..110 =a");
        // Observed, then the older value again: it took effect only once.
        violation("1 x put=a 0..10 ok; 2 x put=b 20.. ?; 3 x get 100..110 =b; 3 x get 120..130 =a");
        // It cannot take effect before it was invoked.
        let v = violation("1 x get 0..5 =b; 2 x put=b 10.. ?");
        assert!(v.longest_prefix.is_empty());
        // An unknown CAS seen to apply, and an unknown delete seen.
        passes("1 x put=a 0..10 ok; 2 x cas=a>b 20.. ?; 3 x get 30..40 =b; 1 x del 50.. ?; 3 x get 60..70 =_");
        // An unknown CAS whose expectation never held cannot apply.
        violation("1 x put=a 0..10 ok; 2 x cas=z>b 20.. ?; 3 x get 30..40 =b");
        // Several unknown writes, observed in any order after them.
        passes("1 x put=a 0.. ?; 2 x put=b 0.. ?; 3 x put=c 0.. ?; 4 x get 10..11 =b; 4 x get 12..13 =a; 4 x get 14..15 =c");
        // A pending operation counts as unknown.
        let r = passes("1 x put=a 0.. pending; 3 x get 100..110 =a");
        assert_eq!(r.unknown, 1);
        // An unknown read constrains nothing.
        passes("1 x put=a 0..10 ok; 2 x get 0.. ?; 3 x get 11..12 =a");
    }

    #[test]
    fn a_failed_write_is_left_out() {
        let v = violation("1 x put=a 0..10 ok; 2 x put=b 20.. failed; 3 x get 100..110 =b");
        assert_eq!(v.operations.len(), 3);
        assert!(v.operations[1].result.contains("failed"), "{v}");
        assert_eq!(ids(&v.longest_prefix), [0]);
        // Not read back: fine, and counted as left out.
        let r = passes("1 x put=a 0..10 ok; 2 x put=b 20.. failed; 3 x get 100..110 =a");
        assert_eq!((r.operations, r.failed), (2, 1));
        // A key with only failed operations is not a checked key.
        let r = passes("1 x put=a 0..10 ok; 2 y put=b 20.. failed");
        assert_eq!(r.keys, 1);
    }

    #[test]
    fn keys_are_checked_apart_and_the_bad_one_is_named() {
        // Interleaved in time, each key fine on its own.
        passes("1 x put=a 0..10 ok; 2 y put=b 5..15 ok; 1 x get 20..30 =a; 2 y get 20..30 =b");
        let v = violation(
            "1 x put=a 0..10 ok; 2 y put=b 5..15 ok; 1 x get 20..30 =a; 2 y get 20..30 =a",
        );
        assert_eq!(v.key, "y");
        assert_eq!(
            v.operations.iter().map(|o| o.id.0).collect::<Vec<_>>(),
            [1, 3]
        );
    }

    #[test]
    fn a_return_before_the_invocation_is_malformed() {
        let h = history("1 x put=a 0..10 ok; 1 x get 20..15 =a");
        let e = check_kv(&h).unwrap_err();
        assert!(
            matches!(e, CheckError::Malformed { op: OpId(1), .. }),
            "{e:?}"
        );
        assert_eq!(
            e.to_string(),
            "operation #1: returned at 15, before its invocation at 20"
        );
    }

    /// `writers` overlapping puts of distinct values and a read of a value
    /// none wrote: every order of the puts must be tried.
    fn pathological(writers: usize) -> History {
        let h = History::new();
        for w in 0..writers {
            let id = h.record_invoke(
                w as u64,
                "x",
                KvOp::Put {
                    value: format!("v{w}"),
                },
                0u64,
            );
            h.record_return(id, 100u64, KvRet::Ok);
        }
        let id = h.record_invoke(99, "x", KvOp::Get, 50u64);
        h.record_return(id, 60u64, KvRet::Value(Some("never".into())));
        h
    }

    #[test]
    fn the_bound_gives_undecided_not_a_pass() {
        let h = pathological(12);
        let small = CheckOptions {
            max_states_per_key: 1000,
        };
        match check_kv_with(&h, &small) {
            Err(CheckError::Undecided(u)) => {
                assert_eq!(u.key, "x");
                assert_eq!(u.states_explored, 1000);
                assert_eq!(u.undecided_keys, 1);
                assert!(u.to_string().contains("undecided"), "{u}");
            }
            other => panic!("expected undecided: {other:?}"),
        }
        // Undecided on one key and a violation on another: the violation.
        let other = history("1 y put=a 0..10 ok; 1 y get 20..30 =b");
        let mut both = h.operations();
        for mut o in other.operations() {
            o.id = OpId(both.len() as u64);
            both.push(o);
        }
        let e = check_operations(&both, &KvModel, &small).unwrap_err();
        assert_eq!(e.violation().map(|v| v.key.as_str()), Some("y"));
        // With the default bound the search is exhaustive: a violation.
        let v = check_kv(&h).unwrap_err();
        let v = v.violation().expect("a violation");
        assert!(v.states_explored > 1000, "{}", v.states_explored);
        assert_eq!(v.longest_prefix.len(), 12);
    }

    #[test]
    fn the_recorder_takes_operations_from_several_threads() {
        let h = History::new();
        let threads: Vec<_> = (0..4u64)
            .map(|client| {
                let h = h.clone();
                std::thread::spawn(move || {
                    for n in 0..50u64 {
                        let t = Duration::from_micros(client * 1000 + 2 * n);
                        let key = format!("k{client}");
                        let value = format!("{client}-{n}");
                        let id = h.record_invoke(
                            client,
                            key.clone(),
                            KvOp::Put {
                                value: value.clone(),
                            },
                            t,
                        );
                        h.record_return(id, t + Duration::from_micros(1), KvRet::Ok);
                        let id =
                            h.record_invoke(client, key, KvOp::Get, t + Duration::from_nanos(1500));
                        h.record_return(
                            id,
                            t + Duration::from_nanos(1900),
                            KvRet::Value(Some(value)),
                        );
                    }
                })
            })
            .collect();
        for t in threads {
            t.join().unwrap();
        }
        let ops = h.operations();
        assert_eq!(ops.len(), 400);
        assert!(ops.iter().enumerate().all(|(i, o)| o.id.0 == i as u64));
        let r = check_kv(&h).unwrap();
        assert_eq!((r.operations, r.keys), (400, 4));
        // One read back wrong.
        let mut bad = ops.clone();
        let i = bad
            .iter()
            .position(|o| o.key == "k2" && o.op == KvOp::Get)
            .unwrap();
        bad[i].outcome = Outcome::Returned {
            at: bad[i].invoked_at + 1,
            value: KvRet::Value(Some("2-49".into())),
        };
        let e = check_kv(&History::from_operations(bad)).unwrap_err();
        assert_eq!(e.violation().map(|v| v.key.as_str()), Some("k2"));
    }

    #[test]
    fn a_history_round_trips_through_json() {
        let h = history("1 x put=a 0..10 ok; 2 x cas=_>b 20.. ?; 3 y get 5.. failed; 4 y del 1.. pending; 3 x get 30..40 =a; 2 x cas=b>c 41..42 !=_");
        let json = serde_json::to_string(&h).unwrap();
        assert!(
            json.starts_with("{\"operations\":[{\"id\":0,\"client\":1,\"key\":\"x\""),
            "{json}"
        );
        let back: History = serde_json::from_str(&json).unwrap();
        assert_eq!(back.operations(), h.operations());
        let dir = std::env::temp_dir().join(format!("troupe-lin-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("history.json");
        h.write_json(&path).unwrap();
        assert_eq!(
            History::read_json(&path).unwrap().operations(),
            h.operations()
        );
        std::fs::remove_dir_all(&dir).unwrap();
        assert!(History::<KvOp, KvRet>::read_json(dir.join("missing.json")).is_err());
    }

    #[test]
    #[should_panic(expected = "operation #0: its outcome was already recorded")]
    fn an_outcome_is_recorded_once() {
        let h: History = History::new();
        let id = h.record_invoke(1, "x", KvOp::Get, 0u64);
        h.record_unknown(id);
        h.record_return(id, 1u64, KvRet::Value(None));
    }

    #[test]
    #[should_panic(expected = "operation #3 is not in this history")]
    fn an_outcome_needs_an_invocation() {
        History::<KvOp, KvRet>::new().record_failed(OpId(3));
    }

    /// How [`simulate`] plays clients against a correct store.
    struct Workload {
        ops: usize,
        clients: usize,
        keys: usize,
        /// Values are drawn from this many (0: every write a fresh value).
        values: usize,
        /// An operation is lost before reaching the store: recorded as
        /// unknown or as failed (both true).
        lost: f64,
        /// An applied operation's response is lost: recorded as unknown.
        unknown: f64,
        /// An applied operation is recorded as failed (a lie).
        failed_lie: f64,
        /// A returned value is replaced by a random one.
        corrupt: f64,
    }

    struct InFlight {
        id: OpId,
        key: String,
        op: KvOp,
        applied: Option<KvRet>,
    }

    fn random_value(rng: &mut ChaCha8Rng, w: &Workload, fresh: &mut u64) -> String {
        if w.values == 0 {
            *fresh += 1;
            format!("v{fresh}")
        } else {
            ((b'a' + rng.gen_range(0..w.values) as u8) as char).to_string()
        }
    }

    fn maybe_value(rng: &mut ChaCha8Rng, w: &Workload, fresh: &mut u64) -> Option<String> {
        rng.gen_bool(0.7).then(|| random_value(rng, w, fresh))
    }

    /// Clients issuing random operations, one at a time each, against a
    /// linearizable store: each operation is applied atomically at some
    /// point between its invocation and its response, and the steps of the
    /// clients interleave at random (some at the same tick).
    fn simulate(rng: &mut ChaCha8Rng, w: &Workload) -> History {
        let h = History::new();
        let mut store: BTreeMap<String, Option<String>> = BTreeMap::new();
        let mut clients: Vec<Option<InFlight>> = (0..w.clients).map(|_| None).collect();
        let (mut issued, mut now, mut fresh) = (0, 0u64, 0u64);
        loop {
            let able: Vec<usize> = (0..w.clients)
                .filter(|&c| clients[c].is_some() || issued < w.ops)
                .collect();
            if able.is_empty() {
                return h;
            }
            let c = able[rng.gen_range(0..able.len())];
            if rng.gen_bool(0.8) {
                now += 1;
            }
            match clients[c].take() {
                None => {
                    let key = format!("k{}", rng.gen_range(0..w.keys));
                    let op = match rng.gen_range(0..10) {
                        0..=3 => KvOp::Get,
                        4..=5 => KvOp::Put {
                            value: random_value(rng, w, &mut fresh),
                        },
                        6..=8 => KvOp::Cas {
                            expected: if rng.gen_bool(0.5) {
                                store.get(&key).cloned().flatten()
                            } else {
                                maybe_value(rng, w, &mut fresh)
                            },
                            value: random_value(rng, w, &mut fresh),
                        },
                        _ => KvOp::Delete,
                    };
                    let id = h.record_invoke(c as u64, key.clone(), op.clone(), now);
                    issued += 1;
                    clients[c] = Some(InFlight {
                        id,
                        key,
                        op,
                        applied: None,
                    });
                }
                Some(f) if f.applied.is_none() => {
                    if rng.gen_bool(w.lost) {
                        if rng.gen_bool(0.5) {
                            h.record_unknown(f.id);
                        } else {
                            h.record_failed(f.id);
                        }
                        continue;
                    }
                    let current = store.entry(f.key.clone()).or_default();
                    let (next, ret) = KvModel.step(current, &f.op);
                    *current = next;
                    clients[c] = Some(InFlight {
                        applied: Some(ret),
                        ..f
                    });
                }
                Some(InFlight {
                    id,
                    op,
                    applied: Some(ret),
                    ..
                }) => {
                    if rng.gen_bool(w.unknown) {
                        h.record_unknown(id);
                    } else if rng.gen_bool(w.failed_lie) {
                        h.record_failed(id);
                    } else if rng.gen_bool(w.corrupt) {
                        let wrong = match op {
                            KvOp::Get => KvRet::Value(maybe_value(rng, w, &mut fresh)),
                            KvOp::Cas { .. } if rng.gen_bool(0.5) => KvRet::Ok,
                            KvOp::Cas { .. } => KvRet::Mismatch {
                                current: maybe_value(rng, w, &mut fresh),
                            },
                            _ => ret,
                        };
                        h.record_return(id, now, wrong);
                    } else {
                        h.record_return(id, now, ret);
                    }
                }
                Some(_) => unreachable!("matched above"),
            }
        }
    }

    /// Whether some order of the operations (all that returned, any subset
    /// of those of unknown outcome, none of those failed) respects real
    /// time and the semantics of a key-value store: tried one by one, all
    /// keys together.
    fn brute_force_linearizable(ops: &[Operation<KvOp, KvRet>]) -> bool {
        fn returned(o: &Operation<KvOp, KvRet>) -> Option<(u64, &KvRet)> {
            match &o.outcome {
                Outcome::Returned { at, value } => Some((*at, value)),
                _ => None,
            }
        }
        fn apply(store: &mut BTreeMap<String, String>, key: &str, op: &KvOp) -> KvRet {
            let current = store.get(key).cloned();
            match op {
                KvOp::Get => KvRet::Value(current),
                KvOp::Put { value } => {
                    store.insert(key.to_string(), value.clone());
                    KvRet::Ok
                }
                KvOp::Cas { expected, value } => {
                    if *expected == current {
                        store.insert(key.to_string(), value.clone());
                        KvRet::Ok
                    } else {
                        KvRet::Mismatch { current }
                    }
                }
                KvOp::Delete => {
                    store.remove(key);
                    KvRet::Ok
                }
            }
        }
        fn extend(
            ops: &[&Operation<KvOp, KvRet>],
            placed: &mut [bool],
            store: &BTreeMap<String, String>,
        ) -> bool {
            let all_required = (0..ops.len()).all(|i| placed[i] || returned(ops[i]).is_none());
            if all_required {
                return true;
            }
            for i in 0..ops.len() {
                if placed[i] {
                    continue;
                }
                let must_wait = (0..ops.len()).any(|j| {
                    !placed[j] && returned(ops[j]).is_some_and(|(at, _)| at < ops[i].invoked_at)
                });
                if must_wait {
                    continue;
                }
                let mut next = store.clone();
                let ret = apply(&mut next, &ops[i].key, &ops[i].op);
                if returned(ops[i]).is_some_and(|(_, value)| *value != ret) {
                    continue;
                }
                placed[i] = true;
                if extend(ops, placed, &next) {
                    return true;
                }
                placed[i] = false;
            }
            false
        }
        let ops: Vec<&Operation<KvOp, KvRet>> = ops
            .iter()
            .filter(|o| !matches!(o.outcome, Outcome::Failed))
            .collect();
        extend(&ops, &mut vec![false; ops.len()], &BTreeMap::new())
    }

    #[test]
    fn agrees_with_a_brute_force_checker_on_small_random_histories() {
        let mut verdicts = [0usize; 2]; // not linearizable, linearizable
        let mut with_unknown = 0;
        for seed in 0..20_000u64 {
            let mut rng = ChaCha8Rng::seed_from_u64(seed);
            let w = Workload {
                ops: rng.gen_range(1..=7),
                clients: rng.gen_range(1..=4),
                keys: rng.gen_range(1..=2),
                // Few values, and some histories with many unknown
                // outcomes: states of the search that differ only in the
                // unknown operations linearized.
                values: rng.gen_range(1..=3),
                lost: [0.1, 0.5][rng.gen_range(0..2)],
                unknown: [0.05, 0.3, 0.7][rng.gen_range(0..3)],
                failed_lie: 0.05,
                corrupt: [0.1, 0.4][rng.gen_range(0..2)],
            };
            let h = simulate(&mut rng, &w);
            let ops = h.operations();
            let expected = brute_force_linearizable(&ops);
            let got = check_kv(&h);
            let agree = match &got {
                Ok(r) => expected && r.operations + r.failed == ops.len(),
                Err(CheckError::NotLinearizable(_)) => !expected,
                Err(_) => false,
            };
            if !agree {
                panic!(
                    "seed {seed}: the brute force says linearizable: {expected}; the checker: {got:?}\nhistory: {}",
                    serde_json::to_string_pretty(&h).unwrap_or_default()
                );
            }
            verdicts[usize::from(expected)] += 1;
            if ops.iter().any(|o| matches!(o.outcome, Outcome::Unknown)) {
                with_unknown += 1;
            }
        }
        // Both verdicts are common, and unknown outcomes are exercised.
        println!("verdicts (not linearizable, linearizable): {verdicts:?}; {with_unknown} with unknown outcomes");
        assert!(verdicts[0] >= 2000 && verdicts[1] >= 2000, "{verdicts:?}");
        assert!(with_unknown >= 2000, "{with_unknown}");
    }

    fn large_workload() -> Workload {
        Workload {
            ops: 20_000,
            clients: 16,
            keys: 200,
            values: 0,
            lost: 0.002,
            unknown: 0.003,
            failed_lie: 0.0,
            corrupt: 0.0,
        }
    }

    /// A get of `ops` that returned and was invoked after a write of a value
    /// was overwritten by a later write, both completed; the index of the
    /// get and that value. (Every write writes a fresh value.)
    fn stale_read_target(ops: &[Operation<KvOp, KvRet>]) -> Option<(usize, String)> {
        let written = |o: &Operation<KvOp, KvRet>| match (&o.op, &o.outcome) {
            (KvOp::Put { value }, Outcome::Returned { at, .. })
            | (
                KvOp::Cas { value, .. },
                Outcome::Returned {
                    at,
                    value: KvRet::Ok,
                },
            ) => Some((*at, value.clone())),
            (KvOp::Delete, Outcome::Returned { at, .. }) => Some((*at, String::new())),
            _ => None,
        };
        for (g, get) in ops.iter().enumerate().skip(ops.len() / 2) {
            if get.op != KvOp::Get || !matches!(get.outcome, Outcome::Returned { .. }) {
                continue;
            }
            let on_key = || ops.iter().filter(|o| o.key == get.key);
            for first in on_key() {
                let Some((first_at, value)) = written(first) else {
                    continue;
                };
                let overwritten = on_key().any(|second| {
                    second.invoked_at > first_at
                        && written(second).is_some_and(|(at, _)| at < get.invoked_at)
                });
                if overwritten && !value.is_empty() {
                    return Some((g, value));
                }
            }
        }
        None
    }

    #[test]
    fn a_large_history_passes_and_one_stale_read_is_found() {
        let mut rng = ChaCha8Rng::seed_from_u64(7);
        let h = simulate(&mut rng, &large_workload());
        let r = check_kv(&h).unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(r.keys, 200);
        assert!(
            r.operations + r.failed == 20_000 && r.failed < 100 && r.unknown > 20,
            "{r}"
        );

        assert_one_stale_read_is_found(&h);
    }

    /// `h` with one read made stale is a violation, on that read's key,
    /// with that read among those that cannot come next.
    fn assert_one_stale_read_is_found(h: &History) {
        let mut ops = h.operations();
        let (g, stale) = stale_read_target(&ops).expect("a read to corrupt");
        let Outcome::Returned { at, .. } = ops[g].outcome else {
            unreachable!("a read that returned");
        };
        ops[g].outcome = Outcome::Returned {
            at,
            value: KvRet::Value(Some(stale)),
        };
        let e = check_kv(&History::from_operations(ops.clone())).unwrap_err();
        let v = e
            .violation()
            .unwrap_or_else(|| panic!("not a violation: {e}"));
        assert_eq!(v.key, ops[g].key);
        assert!(v.blocked.iter().any(|b| b.id == ops[g].id), "{v}");
    }

    #[test]
    fn a_hot_key_of_sixteen_concurrent_clients_passes_and_one_stale_read_is_found() {
        let mut rng = ChaCha8Rng::seed_from_u64(11);
        let w = Workload {
            ops: 2000,
            keys: 1,
            ..large_workload()
        };
        let h = simulate(&mut rng, &w);
        let r = check_kv(&h).unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(r.keys, 1);
        assert_eq!(r.operations + r.failed, 2000);
        assert!(r.unknown > 0, "{r}");
        assert_one_stale_read_is_found(&h);
    }
}
