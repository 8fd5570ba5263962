//! The family layer: what every protocol family shares, so that adding one
//! is mostly writing its algorithms.
//!
//! A *family* is a set of algorithms that solve one problem behind one typed
//! API: mutual exclusion (centralized, Ricart–Agrawala, token ring, Lamport),
//! leader election (bully, ring, next-in-line), atomic commit (two-phase,
//! three-phase)... Each algorithm is a sans-IO
//! core (see [`troupe_framework::sansio`]) in its own module. The layer gives
//! a family, for free:
//!
//! - [`algorithms!`](crate::algorithms): the algorithm enum with its stable
//!   names (`"ricart-agrawala"`), parsing that lists the known names on a
//!   typo, `Display`, serde, and `ALL` ([`Algorithm::all`]);
//! - [`any_core!`](crate::any_core): the `Any*` core that runs the algorithm a
//!   configuration names — one wire message type with its registered wire
//!   name, one timer type, the relay of every input and output, the
//!   family trait forwarded to the chosen core, message kinds for cost
//!   counting and the durable state (a [`SnapshotCore`]);
//! - [`Family`]: how the typed-API layer (`troupe::family` in the root crate)
//!   starts an instance on a node — its actor name, how to build the core
//!   from its algorithm, members, settings and what it made durable, and the
//!   *view* (a projection of the core's state) that handles watch and wait on.
//!   Optionally, what a node's trace records of its events
//!   ([`Family::trace`]; the broadcast family records its deliveries), and
//!   what it reports to the node's metrics: numbers read from the view at
//!   every scrape ([`Family::view_metrics`]: a Raft term, a lock held) and
//!   counters of events ([`Family::event_metric`]: grants, decisions).
//!
//! The driver needs no edit for a new family: a message type is carried
//! once it implements [`crate::driver::WireMessage`], which `any_core!` does.
//!
//! # Writing a protocol family
//!
//! The mutual-exclusion family (`crate::mutex`) is the worked example.
//!
//! 1. **Shared vocabulary** (`mutex/mod.rs`): the event the user sees
//!    (`MutexEvent`), the settings (`MutexConfig`), the durable state when it
//!    is a small value (`MutexDurable`), and the family trait with the
//!    commands and queries every algorithm offers (`MutexCore: request,
//!    release, holding...`). Name the algorithms with
//!    [`algorithms!`](crate::algorithms). What every algorithm's core keeps
//!    whatever the algorithm is one generic core around the algorithm's own
//!    state (`Lock<Id, A>`; elections: `Election<Id, A>`): its
//!    [`crate::group::Group`] (members, live set, ranks, ring), its settings,
//!    its durable snapshot and counters (elections: [`crate::group::Terms`]),
//!    with the constructor `new(me, members, config, state)`, the family
//!    trait's queries, [`SnapshotCore`] and
//!    [`crate::testkit::SimProtocol`] written once for all algorithms.
//! 2. **One module per algorithm** (`mutex/ricart_agrawala.rs`): its wire
//!    messages and timers, its own state (`RaState`, a `LockState`: what it
//!    adds to the durable state, if anything) and its core — the generic core
//!    around that state (`pub type RicartAgrawala<Id> = Lock<Id,
//!    RaState>`) — implementing [`Protocol`] (the associated types with
//!    `protocol_types!`) and the family's commands (`LockCommands`). Set
//!    timers by key ([`troupe_framework::sansio::Outputs::set_timer`]
//!    replaces a pending equal timer), so no round counters are needed. The
//!    module header says what it guarantees and how it fails.
//! 3. **The run-time choice** (`mutex/any.rs`): one
//!    [`any_core!`](crate::any_core) invocation naming the algorithms, their
//!    message and timer types, and the family trait's commands and queries.
//! 4. **The family** (`mutex/mod.rs`): implement [`Family`] — actor name,
//!    `build`, `view`.
//! 5. **Checks** (`testkit/scenarios.rs`, `tests/mutex_*.rs`): an observer
//!    that checks the safety properties after every step of a seeded chaos
//!    run, in every phase (an exception only where the module's statement
//!    makes one, e.g. a false suspicion of the failure detector), counts the
//!    grants checked with no exception and requires a minimum of them per
//!    run, and checks the liveness properties after healing, over hundreds
//!    of seeds; add the algorithm to the cost benchmark.
//! 6. **The typed API** (root crate, `src/lock.rs`): a thin layer over
//!    `troupe::family::start::<MutexFamily>` that turns commands and views
//!    into the user's vocabulary (`acquire` returns a guard once the view
//!    says the lock is held). A request answered later, one per caller (a
//!    Raft proposal answered once applied), is better served by
//!    [`troupe_framework::sansio::Settles`]: the core hands out a token and
//!    queues its outcome, and `Instance::settle` answers that caller alone
//!    (`src/raft.rs`), where a view would wake every waiter on each change.

use std::fmt::{Debug, Display};
use std::str::FromStr;

use serde::de::DeserializeOwned;
use serde::Serialize;
use troupe_framework::metrics::SampleKind;
use troupe_framework::sansio::Protocol;
use troupe_framework::sansio::{DurableError, Recovered, SnapshotCore};

use crate::driver::Drivable;

/// An algorithm name that does not exist.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("unknown algorithm {name:?} (known: {})", .known.join(", "))]
pub struct UnknownAlgorithm {
    /// The name asked for.
    pub name: String,
    /// The names that exist.
    pub known: Vec<&'static str>,
}

/// The algorithms of a family, by the names configuration files use. Made by
/// [`algorithms!`](crate::algorithms).
pub trait Algorithm:
    Copy
    + Eq
    + Debug
    + Display
    + FromStr<Err = UnknownAlgorithm>
    + Serialize
    + DeserializeOwned
    + Send
    + Sync
    + 'static
{
    /// Every algorithm, in a stable order.
    fn all() -> &'static [Self];
    /// Its configuration name.
    fn name(self) -> &'static str;
}

/// A protocol family, as the typed-API layer starts it (see the module docs).
pub trait Family: 'static {
    /// The family's algorithms.
    type Algorithm: Algorithm;
    /// Settings shared by its algorithms.
    type Config: Clone + Send + Sync + 'static;
    /// The core a driver runs: the run-time choice among the algorithms,
    /// with members named by node name.
    type Core: Drivable<Id = String> + SnapshotCore;
    /// The projection of the core's state that handles watch and wait on
    /// (published once the state it shows is durable).
    type View: Clone + PartialEq + Default + Debug + Send + Sync + 'static;

    /// The actor name (and store namespace) of instance `instance`; the
    /// same on every member.
    fn actor_name(instance: &str) -> String;
    /// A core of `algorithm` for `me` among `members` (sorted, `me`
    /// included), rebuilt from what a previous life made durable.
    fn build(
        algorithm: Self::Algorithm,
        me: String,
        members: Vec<String>,
        config: &Self::Config,
        recovered: &Recovered,
    ) -> Result<Self::Core, DurableError>;
    /// The view of `core`.
    fn view(core: &Self::Core) -> Self::View;
    /// True when `view(core)` is certainly `last`: a cheap check that lets
    /// the driver skip building the view after an input that changed
    /// nothing it shows. `false` (the default) builds and compares it.
    fn view_unchanged(core: &Self::Core, last: &Self::View) -> bool {
        let _ = (core, last);
        false
    }
    /// What a node's trace records of `event`, emitted by instance
    /// `protocol` (its actor name); nothing by default. Called once the
    /// event's input is durable, for nodes that trace.
    fn trace(
        protocol: &str,
        event: &<Self::Core as Protocol>::Event,
    ) -> Option<troupe_framework::trace::TraceEvent> {
        let _ = (protocol, event);
        None
    }
    /// What `view` reports to the node's metrics (`GET /metrics`), read at
    /// every scrape and labelled with the instance's actor name
    /// (`protocol`); nothing by default.
    fn view_metrics(view: &Self::View, out: &mut Vec<ViewMetric>) {
        let _ = (view, out);
    }
    /// The counter `event` adds one to in the node's metrics, labelled with
    /// the instance's actor name (`protocol`) and the metric's own label if
    /// any; none by default. Counted once the event's input is durable.
    fn event_metric(event: &<Self::Core as Protocol>::Event) -> Option<EventMetric> {
        let _ = event;
        None
    }
}

/// A number a family reads from its view for the node's metrics (see
/// [`Family::view_metrics`]).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct ViewMetric {
    /// The metric's name: `troupe_` prefix, base units, `_total` for a
    /// counter.
    pub name: &'static str,
    /// Its help text.
    pub help: &'static str,
    /// Counter or gauge.
    pub kind: SampleKind,
    /// The value.
    pub value: f64,
}

impl ViewMetric {
    /// A gauge.
    pub fn gauge(name: &'static str, help: &'static str, value: f64) -> Self {
        Self {
            name,
            help,
            kind: SampleKind::Gauge,
            value,
        }
    }
    /// A counter (a count the view keeps; it may restart from zero with
    /// the instance).
    pub fn counter(name: &'static str, help: &'static str, value: f64) -> Self {
        Self {
            name,
            help,
            kind: SampleKind::Counter,
            value,
        }
    }
}

/// The counter an event adds one to (see [`Family::event_metric`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct EventMetric {
    /// The counter's name (`troupe_` prefix, `_total` suffix).
    pub name: &'static str,
    /// Its help text.
    pub help: &'static str,
    /// A label of its own besides `protocol` (the same label name for
    /// every event counted under this name), e.g. `("decision", "commit")`.
    pub label: Option<(&'static str, &'static str)>,
}

/// Declare a protocol family: the uninhabited type naming it and its
/// [`Family`] implementation, which builds the family's `Any*` core (made by
/// [`any_core!`](crate::any_core)) from what a previous life made durable.
///
/// ```ignore
/// family! {
///     /// The atomic-commit family.
///     pub enum CommitFamily {
///         actor = |instance| format!("commit.{instance}");
///         core AnyCommit(CommitAlgorithm, CommitConfig);
///         view CommitView = |core| CommitView { pending: core.pending() };
///     }
/// }
/// ```
macro_rules! family {
    (
        $(#[$meta:meta])*
        $vis:vis enum $family:ident {
            actor = |$instance:ident| $actor:expr;
            core $core:ident($alg:ty, $config:ty);
            view $view:ty = |$c:ident| $body:expr;
            $(trace = |$tp:ident, $te:ident| $tbody:expr;)?
            $(view_metrics = |$mv:ident, $mo:ident| $mbody:expr;)?
            $(event_metric = |$me:ident| $ebody:expr;)?
        }
    ) => {
        $(#[$meta])*
        #[derive(Debug)]
        $vis enum $family {}

        impl $crate::family::Family for $family {
            type Algorithm = $alg;
            type Config = $config;
            type Core = $core<String>;
            type View = $view;

            fn actor_name($instance: &str) -> String {
                $actor
            }
            fn build(
                algorithm: $alg,
                me: String,
                members: Vec<String>,
                config: &$config,
                recovered: &::troupe_framework::sansio::Recovered,
            ) -> Result<$core<String>, ::troupe_framework::sansio::DurableError> {
                let state = <$core<String> as ::troupe_framework::sansio::SnapshotCore>::recover(recovered)?;
                Ok($core::new(algorithm, me, members, Clone::clone(config), state))
            }
            fn view($c: &$core<String>) -> $view {
                $body
            }
            $(
                fn trace(
                    $tp: &str,
                    $te: &<$core<String> as ::troupe_framework::sansio::Protocol>::Event,
                ) -> Option<::troupe_framework::trace::TraceEvent> {
                    $tbody
                }
            )?
            $(
                fn view_metrics($mv: &$view, $mo: &mut Vec<$crate::family::ViewMetric>) {
                    $mbody
                }
            )?
            $(
                fn event_metric(
                    $me: &<$core<String> as ::troupe_framework::sansio::Protocol>::Event,
                ) -> Option<$crate::family::EventMetric> {
                    $ebody
                }
            )?
        }
    };
}
pub(crate) use family;

/// Test helper: every algorithm of `A` parses back from its name, displays
/// as it, and survives a serde round trip; `unknown` is not a name.
#[cfg(test)]
pub(crate) fn assert_names_round_trip<A: Algorithm>(unknown: &str) {
    for &a in A::all() {
        assert_eq!(a.name().parse::<A>(), Ok(a));
        assert_eq!(a.to_string(), a.name());
        let bytes = rmp_serde::to_vec(&a).unwrap();
        let back: A = rmp_serde::from_slice(&bytes).unwrap();
        assert_eq!(back, a);
    }
    assert!(unknown.parse::<A>().is_err());
}

/// The associated types of a [`Protocol`] impl for a core generic over its
/// member type `Id`: `protocol_types!(Msg, Timer, Event)` stands for
/// `type Id = Id; type Msg = Msg; type Timer = Timer; type Event = Event;`.
macro_rules! protocol_types {
    ($msg:ty, $timer:ty, $event:ty) => {
        type Id = Id;
        type Msg = $msg;
        type Timer = $timer;
        type Event = $event;
    };
}
pub(crate) use protocol_types;

/// Count token trees (for array lengths in the macros).
#[doc(hidden)]
#[macro_export]
macro_rules! __count {
    () => { 0usize };
    ($head:tt $($tail:tt)*) => { 1usize + $crate::__count!($($tail)*) };
}

/// Declare a family's algorithm enum: variants with their stable names.
///
/// ```
/// troupe_protocols::algorithms! {
///     /// How to pick a winner.
///     pub enum Pick {
///         /// The first one.
///         First = "first",
///         /// The last one.
///         Last = "last",
///     }
/// }
/// assert_eq!("last".parse::<Pick>(), Ok(Pick::Last));
/// assert_eq!(Pick::First.to_string(), "first");
/// let e = "middle".parse::<Pick>().unwrap_err().to_string();
/// assert_eq!(e, "unknown algorithm \"middle\" (known: first, last)");
/// ```
#[macro_export]
macro_rules! algorithms {
    (
        $(#[$meta:meta])*
        $vis:vis enum $name:ident {
            $( $(#[$vmeta:meta])* $var:ident = $text:literal ),+ $(,)?
        }
    ) => {
        $(#[$meta])*
        #[derive(
            Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord,
            ::serde::Serialize, ::serde::Deserialize,
        )]
        $vis enum $name {
            $( $(#[$vmeta])* #[serde(rename = $text)] $var ),+
        }

        impl $name {
            /// Every algorithm, in a stable order.
            pub const ALL: [$name; $crate::__count!($($var)+)] = [$($name::$var),+];
            /// The configuration name.
            pub fn name(self) -> &'static str {
                match self {
                    $( $name::$var => $text ),+
                }
            }
        }

        impl $crate::family::Algorithm for $name {
            fn all() -> &'static [Self] {
                &Self::ALL
            }
            fn name(self) -> &'static str {
                $name::name(self)
            }
        }

        impl ::std::fmt::Display for $name {
            fn fmt(&self, f: &mut ::std::fmt::Formatter<'_>) -> ::std::fmt::Result {
                f.write_str(self.name())
            }
        }

        impl ::std::str::FromStr for $name {
            type Err = $crate::family::UnknownAlgorithm;
            fn from_str(s: &str) -> Result<Self, Self::Err> {
                Self::ALL
                    .into_iter()
                    .find(|a| a.name() == s)
                    .ok_or_else(|| $crate::family::UnknownAlgorithm {
                        name: s.to_string(),
                        known: Self::ALL.iter().map(|a| a.name()).collect(),
                    })
            }
        }
    };
}

/// Declare a family's `Any*` core: the algorithm a configuration names,
/// chosen at run time.
///
/// It generates the wire message enum (one variant per algorithm, with the
/// family's wire name registered through
/// [`WireMessage`](crate::driver::WireMessage)), the timer enum, the core
/// (a struct with `new(algorithm, me, members, config, state)`,
/// `algorithm()` and `foreign_messages()`), and its [`Protocol`],
/// [`SnapshotCore`], [`crate::testkit::SimProtocol`] and family-trait
/// implementations. Every algorithm's core must have
/// `new(me, members, config, state: Option<State>)`; the family trait's
/// commands take their arguments, if any (`command begin(tx: TxId);`), then
/// `(now, out)`, and its queries `&self` and their arguments. The `Any*`
/// core recovers its state as its first algorithm does
/// ([`SnapshotCore::recover`]; the algorithms share the state type).
///
/// A message of another algorithm (a misconfigured peer) is dropped and
/// counted in `foreign_messages()`; the guarantees are those of the chosen
/// algorithm. See `crate::mutex::any` for an invocation.
#[macro_export]
macro_rules! any_core {
    (
        $(#[$meta:meta])*
        $vis:vis struct $any:ident;
        message $msg:ident $(<$mid:ident>)? = $wire:literal;
        timer $timer:ident;
        algorithm $alg:ident;
        event $event:ty;
        state $state:ty;
        config $config:ty;
        trait $core_trait:ident {
            $( command $cmd:ident $(( $($carg:ident : $caty:ty),* ))?; )*
            $( query $q:ident $(( $($qarg:ident : $qaty:ty),* ))? -> $qret:ty; )*
        }
        variants $variants:tt
    ) => {
        $crate::any_core!(@types $msg $(<$mid>)?, $timer, $wire, $variants);

        $crate::any_core!(@inner $variants);

        $(#[$meta])*
        #[derive(Debug, Clone)]
        $vis struct $any<Id> {
            inner: Inner<Id>,
            foreign: u64,
        }

        impl<Id: $crate::MemberId> $any<Id> {
            /// A core of `algorithm` for `me` among `members`, rebuilt from
            /// `state` (what a previous life made durable) if given.
            pub fn new(
                algorithm: $alg,
                me: Id,
                members: impl IntoIterator<Item = Id>,
                config: $config,
                state: Option<$state>,
            ) -> Self {
                let inner = $crate::any_core!(@new $alg, algorithm, me, members, config, state, $variants);
                Self { inner, foreign: 0 }
            }

            /// The algorithm this core runs.
            pub fn algorithm(&self) -> $alg {
                $crate::any_core!(@algorithm self, $alg, $variants)
            }

            /// Messages of another algorithm that were dropped.
            pub fn foreign_messages(&self) -> u64 {
                self.foreign
            }
        }

        impl<Id: $crate::MemberId> $core_trait for $any<Id> {
            $( $crate::any_core!(@command $cmd ($($($carg : $caty),*)?), $msg, $timer, $variants); )*
            $( $crate::any_core!(@query $q ($($($qarg : $qaty),*)?), $qret, $variants); )*
        }

        impl<Id: $crate::MemberId> ::troupe_framework::sansio::Protocol for $any<Id> {
            type Id = Id;
            type Msg = $msg $(<$mid>)?;
            type Timer = $timer;
            type Event = $event;

            fn on_start(&mut self, now: ::std::time::Duration, out: &mut $crate::driver::OutputsOf<Self>) {
                $crate::any_core!(@each self, out, $msg, $timer, $variants, |c, o| c.on_start(now, o))
            }

            fn on_message(
                &mut self,
                now: ::std::time::Duration,
                from: Id,
                msg: Self::Msg,
                out: &mut $crate::driver::OutputsOf<Self>,
            ) {
                $crate::any_core!(@message self, out, now, from, msg, $msg, $timer, $variants)
            }

            fn on_timer(
                &mut self,
                now: ::std::time::Duration,
                timer: $timer,
                out: &mut $crate::driver::OutputsOf<Self>,
            ) {
                $crate::any_core!(@timer self, out, now, timer, $msg, $timer, $variants)
            }

            fn on_membership(
                &mut self,
                now: ::std::time::Duration,
                change: ::troupe_framework::membership::MemberEvent<Id>,
                out: &mut $crate::driver::OutputsOf<Self>,
            ) {
                $crate::any_core!(@each self, out, $msg, $timer, $variants, |c, o| c.on_membership(now, change, o))
            }

            fn persist(&mut self, out: &mut $crate::driver::OutputsOf<Self>) {
                $crate::any_core!(@each self, out, $msg, $timer, $variants, |c, o| c.persist(o))
            }
        }

        impl<Id: $crate::MemberId> ::troupe_framework::sansio::SnapshotCore for $any<Id> {
            type State = $state;
            fn state(&self) -> $state {
                $crate::any_core!(@read self, $variants, |c| ::troupe_framework::sansio::SnapshotCore::state(c))
            }
            fn recover(
                recovered: &::troupe_framework::sansio::Recovered,
            ) -> ::std::result::Result<::std::option::Option<$state>, ::troupe_framework::sansio::DurableError> {
                $crate::any_core!(@recover recovered, $variants)
            }
        }

        impl<Id: $crate::MemberId> $crate::testkit::SimProtocol for $any<Id> {
            fn msg_kind(msg: &Self::Msg) -> &'static str {
                $crate::any_core!(@kind msg, $msg, $variants)
            }
        }
    };

    (@types $msg:ident $(<$mid:ident>)?, $timer:ident, $wire:literal,
        { $( $(#[$vmeta:meta])* $var:ident => $core:ident, $cmsg:ty, $ctimer:ty; )+ }) => {
        /// A wire message of one of the family's algorithms.
        #[derive(Debug, Clone, PartialEq, Eq, ::serde::Serialize, ::serde::Deserialize)]
        pub enum $msg $(<$mid>)? {
            $( $(#[$vmeta])* $var($cmsg), )+
        }

        /// A timer of one of the family's algorithms.
        #[derive(Debug, Clone, PartialEq, Eq)]
        pub enum $timer {
            $( $(#[$vmeta])* $var($ctimer), )+
        }

        impl $(<$mid>)? $crate::driver::WireMessage for $msg $(<$mid>)?
        where
            $( $mid: $crate::MemberId + Send + 'static, )?
        {
            const WIRE_NAME: &'static str = $wire;
        }
    };

    (@inner { $( $(#[$vmeta:meta])* $var:ident => $core:ident, $cmsg:ty, $ctimer:ty; )+ }) => {
        #[derive(Debug, Clone)]
        enum Inner<Id> {
            $( $var($core<Id>), )+
        }
    };

    (@new $alg:ident, $algorithm:ident, $me:ident, $members:ident, $config:ident, $state:ident,
        { $( $(#[$vmeta:meta])* $var:ident => $core:ident, $cmsg:ty, $ctimer:ty; )+ }) => {
        match $algorithm {
            $( $alg::$var => Inner::$var($core::new($me, $members, $config, $state)), )+
        }
    };

    (@algorithm $self:ident, $alg:ident,
        { $( $(#[$vmeta:meta])* $var:ident => $core:ident, $cmsg:ty, $ctimer:ty; )+ }) => {
        match $self.inner {
            $( Inner::$var(_) => $alg::$var, )+
        }
    };

    (@each $self:ident, $out:ident, $msg:ident, $timer:ident,
        { $( $(#[$vmeta:meta])* $var:ident => $core:ident, $cmsg:ty, $ctimer:ty; )+ },
        |$c:ident, $o:ident| $body:expr) => {
        match &mut $self.inner {
            $( Inner::$var($c) => $out.relay($msg::$var, $timer::$var, |$o| $body), )+
        }
    };

    (@read $self:ident,
        { $( $(#[$vmeta:meta])* $var:ident => $core:ident, $cmsg:ty, $ctimer:ty; )+ },
        |$c:ident| $body:expr) => {
        match &$self.inner {
            $( Inner::$var($c) => $body, )+
        }
    };

    (@command $cmd:ident ($($arg:ident : $aty:ty),*), $msg:ident, $timer:ident, $variants:tt) => {
        fn $cmd(&mut self, $($arg: $aty,)* now: ::std::time::Duration, out: &mut $crate::driver::OutputsOf<Self>) {
            $crate::any_core!(@each self, out, $msg, $timer, $variants, |c, o| c.$cmd($($arg,)* now, o))
        }
    };

    (@query $q:ident ($($arg:ident : $aty:ty),*), $qret:ty, $variants:tt) => {
        fn $q(&self, $($arg: $aty),*) -> $qret {
            $crate::any_core!(@read self, $variants, |c| c.$q($($arg),*))
        }
    };

    // The algorithms share the state type, and recover it alike: the first one's way.
    (@recover $r:ident,
        { $(#[$vmeta:meta])* $var:ident => $core:ident, $cmsg:ty, $ctimer:ty; $($rest:tt)* }) => {
        <$core<Id> as ::troupe_framework::sansio::SnapshotCore>::recover($r)
    };

    (@message $self:ident, $out:ident, $now:ident, $from:ident, $m:ident, $msg:ident, $timer:ident,
        { $( $(#[$vmeta:meta])* $var:ident => $core:ident, $cmsg:ty, $ctimer:ty; )+ }) => {
        #[allow(unreachable_patterns)]
        match (&mut $self.inner, $m) {
            $( (Inner::$var(c), $msg::$var(m)) => {
                $out.relay($msg::$var, $timer::$var, |o| c.on_message($now, $from, m, o))
            } )+
            _ => $self.foreign += 1,
        }
    };

    (@timer $self:ident, $out:ident, $now:ident, $t:ident, $msg:ident, $timer:ident,
        { $( $(#[$vmeta:meta])* $var:ident => $core:ident, $cmsg:ty, $ctimer:ty; )+ }) => {
        #[allow(unreachable_patterns)]
        match (&mut $self.inner, $t) {
            $( (Inner::$var(c), $timer::$var(t)) => {
                $out.relay($msg::$var, $timer::$var, |o| c.on_timer($now, t, o))
            } )+
            // A timer of another algorithm cannot come from this core.
            _ => {}
        }
    };

    (@kind $m:ident, $msg:ident,
        { $( $(#[$vmeta:meta])* $var:ident => $core:ident, $cmsg:ty, $ctimer:ty; )+ }) => {
        match $m {
            $( $msg::$var(m) => <$core<Id> as $crate::testkit::SimProtocol>::msg_kind(m), )+
        }
    };
}
