//! Supervision trees: who restarts an actor that fails, and when to give up.
//!
//! The node is the root of a tree of [`Supervisor`]s. Each supervisor owns an
//! ordered list of children — named actors ([`ActorSpec`]) or nested
//! supervisors ([`SupervisorSpec`]) — and a [`SupervisorPolicy`], with the
//! vocabulary of Erlang/OTP:
//!
//! - **strategy**: [`Strategy::OneForOne`] restarts only the child that exited;
//!   [`Strategy::OneForAll`] stops the siblings too and restarts them all (for
//!   children that share state and must start together);
//!   [`Strategy::RestForOne`] stops and restarts the failed child and every
//!   child started after it (for children that depend on the ones before);
//!   restarts happen in start order;
//! - **intensity**: at most `max_restarts` restarts within `within`; one more
//!   and the supervisor *gives up*: it stops all its children, then does what
//!   its `on_give_up` says ([`GiveUp`]): escalate (stop itself, so that its
//!   parent handles that as the failure of one child — the default, as in
//!   OTP), restart its whole subtree in place after `backoff_max`, stay
//!   stopped, or stop the node. At the root, escalating stops the node;
//! - **back-off**: the n-th restart inside the window waits
//!   `backoff_base * 2^(n-1)`, capped at `backoff_max`.
//!
//! Children are [`Restart::Permanent`] (always restarted), [`Restart::Transient`]
//! (restarted only after an abnormal exit: an error or a panic) or
//! [`Restart::Temporary`] (never restarted; removed when they exit).
//!
//! # The handler contract (what counts as a failure)
//!
//! actix cannot catch a panic inside one actor and keep the others of its
//! thread untouched, so Troupe makes failure explicit: a handler that cannot
//! go on returns its error *and stops its actor*, most simply with
//! [`OrFail::or_fail`] (`self.apply(m).or_fail(ctx)`). Any exit of a
//! supervised actor that its supervisor did not ask for — `ctx.stop()`, an
//! error passed to `or_fail`, or a panic — counts as a failure of a permanent
//! child and is handled by the policy, with its [`ExitReason`].
//!
//! **On a panic:** the panic unwinds out of the actor's task; tokio catches it
//! at the task boundary and drops the actor's context, which reports the exit
//! to the supervisor like any other failure, so the actor is restarted with
//! fresh state from its factory. The message being handled is lost, and an
//! `ask` waiting on it gets [`RemoteError::ActorStopped`](crate::codec::RemoteError).
//! Other actors on the same thread keep running. State is never carried over a
//! restart: an actor that must keep state persists it (see [`crate::storage`]).
//!
//! A restarted named actor keeps its name: handles ([`crate::RemoteRef`])
//! resolve the name again when their cached instance is gone, so they reach
//! the new one. Actor names are unique on their node; supervisor names are
//! unique among their siblings, so that a path such as `apps/counter/counter`
//! names one child of the tree.
//!
//! # Watching it
//!
//! Every start, exit (with its reason), restart and give-up is published as a
//! [`SupervisionEvent`] (`Node::supervision_events`) and traced; a snapshot
//! of the whole tree, with restart counts and states, is a [`TreeNode`]
//! (`Node::supervision_tree`). See [`observe`].
//!
//! # Adding children later
//!
//! A [`SupervisorRef`] names a running supervisor by its path and adds
//! children to it; inside [`SupervisorRef::scope`], `Node::spawn` places its
//! children under that supervisor instead of the root, which is how a typed
//! protocol API called from an application lands in the application's tree.

pub mod observe;
mod supervisor;

use std::collections::BTreeSet;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use actix::dev::ToEnvelope;
use actix::prelude::*;
use serde::{Deserialize, Serialize};

use crate::error::NodeError;
use crate::ids::{validate_name, ActorPath};
use crate::inbox::{Drain, Inbox};
use crate::registry::{ActorEntry, Registry};
use crate::remote::{ErasedHandler, RemoteMessage, Sender, TypedHandler};

pub use observe::{
    ChildState, ExitReason, SupervisionEvent, SupervisionEventKind, TreeKind, TreeNode,
};
pub(crate) use observe::{Hub, StopNode};
pub(crate) use supervisor::{start_root, GetTree};
pub use supervisor::{Supervisor, SupervisorRef};

/// How a supervisor reacts to one child's failure.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(rename_all = "kebab-case")]
pub enum Strategy {
    /// Restart only the failed child (default).
    #[default]
    OneForOne,
    /// Stop all children and restart them all, in their original order.
    OneForAll,
    /// Stop the children started after the failed one, then restart the
    /// failed child and those, in their original order.
    RestForOne,
}

/// Whether a child is restarted when it exits.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(rename_all = "kebab-case")]
pub enum Restart {
    /// Always restarted when it exits without being asked to (default).
    #[default]
    Permanent,
    /// Restarted only when it exits abnormally ([`ExitReason::is_abnormal`]:
    /// an error passed to `or_fail`, a panic); a plain stop leaves it stopped.
    Transient,
    /// Never restarted; removed when it exits.
    Temporary,
}

/// What a supervisor does when it gives up (a child failed more than
/// `max_restarts` times within `within`). In every case it first stops all
/// its children.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(rename_all = "kebab-case")]
pub enum GiveUp {
    /// Stop itself: its parent handles that as the failure of one child (OTP's
    /// behaviour, and the default). At the node's root, the node stops.
    #[default]
    Escalate,
    /// Restart its whole subtree in place after `backoff_max`, with a fresh
    /// intensity window; its parent is not involved. The default of an
    /// application's root supervisor.
    Restart,
    /// Stay stopped ([`ChildState::GaveUp`]) until restarted by hand
    /// ([`SupervisorRef::restart`]); its parent is not involved.
    Stop,
    /// Stop the node, whatever the supervisors above would do: for a subtree
    /// without which the node is useless.
    StopNode,
}

impl std::fmt::Display for GiveUp {
    /// As in a config file: `escalate`, `restart`, `stop`, `stop-node`.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            GiveUp::Escalate => "escalate",
            GiveUp::Restart => "restart",
            GiveUp::Stop => "stop",
            GiveUp::StopNode => "stop-node",
        })
    }
}

/// A supervisor's restart policy. Defaults: one-for-one, 5 restarts in 10 s,
/// back-off from 10 ms doubling up to 1 s, escalate on giving up.
///
/// In a config file (`[supervision]`, `[apps.NAME.supervision]`) the
/// durations are whole milliseconds and the enums are kebab-case:
///
/// ```toml
/// strategy = "rest-for-one"   # "one-for-one", "one-for-all", "rest-for-one"
/// max_restarts = 3
/// within = 5000
/// backoff_base = 10
/// backoff_max = 1000
/// on_give_up = "restart"      # "escalate", "restart", "stop", "stop-node"
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct SupervisorPolicy {
    /// One-for-one, one-for-all or rest-for-one.
    pub strategy: Strategy,
    /// Restarts allowed within `within` before giving up.
    pub max_restarts: u32,
    /// The sliding window for `max_restarts` (ms in config files).
    #[serde(with = "crate::config::duration_ms")]
    pub within: Duration,
    /// Delay before the first restart in a window (ms in config files).
    #[serde(with = "crate::config::duration_ms")]
    pub backoff_base: Duration,
    /// Upper bound on the delay before a restart, and the delay before a
    /// whole-subtree restart ([`GiveUp::Restart`]) (ms in config files).
    #[serde(with = "crate::config::duration_ms")]
    pub backoff_max: Duration,
    /// What to do on giving up.
    pub on_give_up: GiveUp,
}

impl Default for SupervisorPolicy {
    fn default() -> Self {
        Self {
            strategy: Strategy::OneForOne,
            max_restarts: 5,
            within: Duration::from_secs(10),
            backoff_base: Duration::from_millis(10),
            backoff_max: Duration::from_secs(1),
            on_give_up: GiveUp::Escalate,
        }
    }
}

impl SupervisorPolicy {
    /// The back-off before the `n`-th restart in the window (n >= 1).
    pub fn backoff(&self, n: u32) -> Duration {
        let factor = 1u32.checked_shl(n.saturating_sub(1)).unwrap_or(u32::MAX);
        self.backoff_base
            .saturating_mul(factor)
            .min(self.backoff_max)
    }

    /// Check the values that cannot work; `key` is where the policy sits in
    /// the config (e.g. `"supervision"`), for the error message.
    pub fn validate(&self, key: &str) -> Result<(), NodeError> {
        if self.within.is_zero() {
            return Err(NodeError::Config(format!("{key}.within must be > 0")));
        }
        if self.backoff_max < self.backoff_base {
            return Err(NodeError::Config(format!(
                "{key}.backoff_max must be >= {key}.backoff_base"
            )));
        }
        Ok(())
    }
}

/// Sent to a supervisor when one of its children has exited.
#[derive(Debug, Clone, Message)]
#[rtype(result = "()")]
pub struct ChildExited {
    /// The child's key within its supervisor.
    pub key: u64,
    /// Which start of that child exited (stale exits are ignored).
    pub generation: u64,
    /// Why it exited.
    pub reason: ExitReason,
}

/// What a child factory needs to start a child under a supervisor.
pub struct ChildContext {
    exit_to: Recipient<ChildExited>,
    key: u64,
    generation: u64,
    registry: Registry,
    hub: Arc<Hub>,
    /// The child's path in the tree.
    path: String,
}

impl ChildContext {
    /// The path the child being started will have (`apps/counter/counter`).
    pub fn path(&self) -> &str {
        &self.path
    }
}

/// A started child: dropping it (or calling [`RunningChild::stop`]) stops the child.
pub struct RunningChild {
    stop: Option<tokio::sync::oneshot::Sender<()>>,
    /// The address of a child supervisor, to ask it for its own subtree.
    supervisor: Option<Addr<Supervisor>>,
}

impl RunningChild {
    /// Ask the child to stop.
    pub fn stop(mut self) {
        if let Some(tx) = self.stop.take() {
            let _ = tx.send(());
        }
    }
}

/// Something a supervisor can start and restart: an [`ActorSpec`] or a
/// [`SupervisorSpec`].
pub trait ChildFactory: Send + Sync + 'static {
    /// The child's name (unique on its node for named actors, among its
    /// siblings for supervisors).
    fn name(&self) -> &str;
    /// Whether it is restarted on exit.
    fn restart(&self) -> Restart;
    /// Start a fresh instance.
    fn start(&self, cx: ChildContext) -> RunningChild;
    /// Called once when the child is removed for good.
    fn removed(&self, registry: &Registry) {
        let _ = registry;
    }
    /// Actor or supervisor (for tree snapshots).
    fn kind(&self) -> TreeKind {
        TreeKind::Actor
    }
    /// A supervisor's strategy (for tree snapshots).
    fn strategy(&self) -> Option<Strategy> {
        None
    }
    /// The actor names this child claims on its node: its own for an actor,
    /// those of every actor below it for a supervisor.
    fn actor_names(&self) -> Vec<String>;
    /// Check every name in this child (and below it): well formed, and
    /// supervisors' children unique among their siblings.
    fn validate(&self) -> Result<(), NodeError> {
        validate_name(self.name())?;
        Ok(())
    }
}

static GENERATION: AtomicU64 = AtomicU64::new(1);
fn next_generation() -> u64 {
    GENERATION.fetch_add(1, Ordering::Relaxed)
}

/// Reports the exit of the actor whose context holds it, with its reason.
struct ExitGuard {
    to: Recipient<ChildExited>,
    key: u64,
    generation: u64,
    cleanup: Option<Box<dyn FnOnce()>>,
}

impl Drop for ExitGuard {
    fn drop(&mut self) {
        // Read first: the reason is tied to this moment (a panic unwinding,
        // a reason noted by the actor's own task).
        let reason = observe::exit_reason_now();
        if let Some(cleanup) = self.cleanup.take() {
            cleanup();
        }
        self.to.do_send(ChildExited {
            key: self.key,
            generation: self.generation,
            reason,
        });
    }
}

/// Tie an actor's lifetime to its supervisor: the returned child stops the
/// actor when told to (or when dropped), and the actor's exit — for any
/// reason, panic included — is reported to the supervisor.
fn install_exit_guard<A>(
    ctx: &mut Context<A>,
    cx: &ChildContext,
    cleanup: Option<Box<dyn FnOnce()>>,
) -> RunningChild
where
    A: Actor<Context = Context<A>>,
{
    observe::install_panic_capture();
    let (tx, rx) = tokio::sync::oneshot::channel::<()>();
    let guard = ExitGuard {
        to: cx.exit_to.clone(),
        key: cx.key,
        generation: cx.generation,
        cleanup,
    };
    ctx.spawn(
        actix::fut::wrap_future::<_, A>(async move {
            let _ = rx.await;
        })
        .map(move |(), _act, ctx: &mut Context<A>| {
            let _guard = guard;
            ctx.stop();
        }),
    );
    RunningChild {
        stop: Some(tx),
        supervisor: None,
    }
}

/// Helper for the handler contract: turn an `Err` into a supervised failure.
pub trait OrFail<T, E> {
    /// On `Err`, log it and stop the actor (its supervisor restarts it per
    /// policy, with [`ExitReason::Failed`] carrying the error's text); the
    /// error is still returned to the caller.
    fn or_fail<A>(self, ctx: &mut Context<A>) -> Result<T, E>
    where
        A: Actor<Context = Context<A>>;
}

impl<T, E: std::fmt::Display> OrFail<T, E> for Result<T, E> {
    fn or_fail<A>(self, ctx: &mut Context<A>) -> Result<T, E>
    where
        A: Actor<Context = Context<A>>,
    {
        if let Err(e) = &self {
            tracing::warn!(actor = std::any::type_name::<A>(), error = %e, "handler failed; stopping actor for its supervisor");
            observe::note_exit(ExitReason::Failed {
                error: e.to_string(),
            });
            ctx.stop();
        }
        self
    }
}

type HandlerBuilder<A> =
    Arc<dyn Fn(&Addr<A>, &Arc<Inbox<A>>) -> (&'static str, Arc<dyn ErasedHandler>) + Send + Sync>;

/// What an actor's factory gets ([`ActorSpec::with_context`]): the node it
/// runs on and where it is.
pub struct ActorSetup {
    node: crate::Node,
    path: ActorPath,
    tree_path: String,
}

impl ActorSetup {
    /// The node the actor runs on.
    pub fn node(&self) -> &crate::Node {
        &self.node
    }
    /// The actor's path (`node/name`), where its peers reach it.
    pub fn path(&self) -> &ActorPath {
        &self.path
    }
    /// The actor's name.
    pub fn name(&self) -> &str {
        &self.path.actor
    }
    /// Where it is in the node's supervision tree (`apps/counter/counter`).
    pub fn tree_path(&self) -> &str {
        &self.tree_path
    }
}

/// How to build and supervise one named actor: its name, a factory that makes
/// a fresh instance (called again on every restart), the remote messages it
/// accepts, its mailbox size and restart type.
pub struct ActorSpec<A: Actor<Context = Context<A>>> {
    name: String,
    factory: Arc<dyn Fn(&ActorSetup) -> A + Send + Sync>,
    handlers: Vec<HandlerBuilder<A>>,
    mailbox: usize,
    restart: Restart,
}

impl<A: Actor<Context = Context<A>>> ActorSpec<A> {
    /// A spec for actor `name` built by `factory`.
    pub fn new(name: impl Into<String>, factory: impl Fn() -> A + Send + Sync + 'static) -> Self {
        Self::with_context(name, move |_| factory())
    }

    /// A spec for actor `name` built by `factory`, which gets the node the
    /// actor runs on and the actor's own path on every (re)start, so the
    /// actor can reach its peers without capturing clones:
    ///
    /// ```
    /// # use actix::prelude::*;
    /// # use troupe_framework::{supervision::ActorSetup, ActorSpec, Node};
    /// struct Greeter { node: Node, me: String }
    /// impl Actor for Greeter { type Context = Context<Self>; }
    /// let spec = ActorSpec::with_context("greeter", |cx: &ActorSetup| Greeter {
    ///     node: cx.node().clone(),
    ///     me: cx.path().to_string(), // "node-a/greeter"
    /// });
    /// # let _ = spec;
    /// ```
    pub fn with_context(
        name: impl Into<String>,
        factory: impl Fn(&ActorSetup) -> A + Send + Sync + 'static,
    ) -> Self {
        Self {
            name: name.into(),
            factory: Arc::new(factory),
            handlers: Vec::new(),
            mailbox: 1024,
            restart: Restart::Permanent,
        }
    }

    /// Accept remote (and location-transparent local) messages of type `M`.
    pub fn handles<M>(mut self) -> Self
    where
        M: RemoteMessage,
        A: Handler<M>,
        Context<A>: ToEnvelope<A, M>,
    {
        self.handlers
            .push(Arc::new(|addr: &Addr<A>, inbox: &Arc<Inbox<A>>| {
                let h: Arc<dyn ErasedHandler> =
                    Arc::new(TypedHandler::<A, M, M>::for_actor(addr, inbox));
                (M::NAME, h)
            }));
        self
    }

    /// Accept messages of type `M` delivered together with their sender:
    /// the actor implements `Handler<Sender<M>>` (see [`Sender`]).
    pub fn handles_from<M>(mut self) -> Self
    where
        M: RemoteMessage,
        A: Handler<Sender<M>>,
        Context<A>: ToEnvelope<A, Sender<M>>,
    {
        self.handlers
            .push(Arc::new(|addr: &Addr<A>, inbox: &Arc<Inbox<A>>| {
                let h: Arc<dyn ErasedHandler> =
                    Arc::new(TypedHandler::<A, M, Sender<M>>::for_actor(addr, inbox));
                (M::NAME, h)
            }));
        self
    }

    /// Capacity for messages arriving from the network (default 1024): the
    /// actor's remote inbox (see the `inbox` module), and its actix mailbox
    /// for local `try_send`s. When the inbox is full, inbound delivery
    /// waits, which slows the network reader and, through flow control, the
    /// remote senders.
    pub fn mailbox(mut self, capacity: usize) -> Self {
        self.mailbox = capacity.max(1);
        self
    }

    /// Permanent (default), transient or temporary.
    pub fn restart(mut self, restart: Restart) -> Self {
        self.restart = restart;
        self
    }
}

impl<A: Actor<Context = Context<A>>> ChildFactory for ActorSpec<A> {
    fn name(&self) -> &str {
        &self.name
    }
    fn restart(&self) -> Restart {
        self.restart
    }
    fn start(&self, cx: ChildContext) -> RunningChild {
        let Some(node) = cx.hub.node() else {
            // Only while the node itself goes away: nothing to start.
            tracing::debug!(actor = %self.name, "not started: the node is gone");
            return RunningChild {
                stop: None,
                supervisor: None,
            };
        };
        let actor_cx = ActorSetup {
            path: ActorPath {
                node: node.name().to_string(),
                actor: self.name.clone(),
            },
            tree_path: cx.path.clone(),
            node,
        };
        let factory = self.factory.clone();
        let mailbox = self.mailbox;
        let mut running = None;
        let registry = cx.registry.clone();
        let name = self.name.clone();
        let generation = cx.generation;
        let mut inbox = None;
        let addr = A::create(|ctx| {
            ctx.set_mailbox_capacity(mailbox);
            inbox = Some(Drain::spawn(ctx, mailbox));
            let reg = registry.clone();
            let n = name.clone();
            let cleanup: Box<dyn FnOnce()> =
                Box::new(move || reg.remove_if_generation(&n, generation));
            running = Some(install_exit_guard(ctx, &cx, Some(cleanup)));
            factory(&actor_cx)
        });
        let inbox = inbox.expect("actix runs the create closure before returning");
        let handlers: std::collections::BTreeMap<&'static str, Arc<dyn ErasedHandler>> =
            self.handlers.iter().map(|b| b(&addr, &inbox)).collect();
        registry.insert(
            &name,
            Arc::new(ActorEntry {
                handlers,
                generation,
                addr: Arc::new(addr),
            }),
        );
        running.unwrap_or(RunningChild {
            stop: None,
            supervisor: None,
        })
    }
    fn removed(&self, registry: &Registry) {
        registry.release(&self.name);
    }
    fn actor_names(&self) -> Vec<String> {
        vec![self.name.clone()]
    }
}

/// A nested supervisor: its policy and its children. Children added to it
/// once it runs ([`SupervisorRef::spawn`]) join this list, so a restart of
/// the supervisor starts them again too.
pub struct SupervisorSpec {
    name: String,
    policy: SupervisorPolicy,
    children: Arc<Mutex<Vec<Arc<dyn ChildFactory>>>>,
    restart: Restart,
}

impl SupervisorSpec {
    /// A supervisor named `name` with `policy` and no children yet.
    pub fn new(name: impl Into<String>, policy: SupervisorPolicy) -> Self {
        Self {
            name: name.into(),
            policy,
            children: Arc::new(Mutex::new(Vec::new())),
            restart: Restart::Permanent,
        }
    }
    /// Add a child, started in order after the ones before it.
    pub fn child(self, child: impl ChildFactory) -> Self {
        self.child_arc(Arc::new(child))
    }
    /// [`SupervisorSpec::child`] for a child already behind an `Arc`.
    pub fn child_arc(self, child: Arc<dyn ChildFactory>) -> Self {
        lock(&self.children).push(child);
        self
    }
    /// Permanent (default), transient or temporary.
    pub fn restart(mut self, restart: Restart) -> Self {
        self.restart = restart;
        self
    }
    /// The supervisor's policy.
    pub fn policy(&self) -> &SupervisorPolicy {
        &self.policy
    }
    /// Replace the supervisor's policy.
    pub fn with_policy(mut self, policy: SupervisorPolicy) -> Self {
        self.policy = policy;
        self
    }
    /// The supervisor's name.
    pub fn name(&self) -> &str {
        &self.name
    }
    fn children(&self) -> Vec<Arc<dyn ChildFactory>> {
        lock(&self.children).clone()
    }
}

pub(crate) fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
}

impl ChildFactory for SupervisorSpec {
    fn name(&self) -> &str {
        &self.name
    }
    fn restart(&self) -> Restart {
        self.restart
    }
    fn start(&self, cx: ChildContext) -> RunningChild {
        supervisor::launch(self, cx)
    }
    fn removed(&self, registry: &Registry) {
        for child in self.children() {
            child.removed(registry);
        }
    }
    fn kind(&self) -> TreeKind {
        TreeKind::Supervisor
    }
    fn strategy(&self) -> Option<Strategy> {
        Some(self.policy.strategy)
    }
    fn actor_names(&self) -> Vec<String> {
        self.children()
            .iter()
            .flat_map(|c| c.actor_names())
            .collect()
    }
    fn validate(&self) -> Result<(), NodeError> {
        validate_name(&self.name)?;
        let mut seen = BTreeSet::new();
        for child in self.children() {
            child.validate()?;
            if !seen.insert(child.name().to_string()) {
                return Err(NodeError::ChildExists(child.name().to_string()));
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backoff_doubles_and_caps() {
        let p = SupervisorPolicy {
            backoff_base: Duration::from_millis(10),
            backoff_max: Duration::from_millis(50),
            ..Default::default()
        };
        assert_eq!(p.backoff(1), Duration::from_millis(10));
        assert_eq!(p.backoff(2), Duration::from_millis(20));
        assert_eq!(p.backoff(3), Duration::from_millis(40));
        assert_eq!(p.backoff(4), Duration::from_millis(50));
        assert_eq!(p.backoff(100), Duration::from_millis(50));
    }

    #[test]
    fn policies_read_from_toml_in_kebab_case() {
        let p: SupervisorPolicy =
            toml::from_str("strategy = \"rest-for-one\"\non_give_up = \"stop-node\"\nwithin = 500")
                .unwrap();
        assert_eq!(p.strategy, Strategy::RestForOne);
        assert_eq!(p.on_give_up, GiveUp::StopNode);
        assert_eq!(p.within, Duration::from_millis(500));
        assert_eq!(p.max_restarts, 5);
        let bad = SupervisorPolicy {
            backoff_base: Duration::from_secs(2),
            ..Default::default()
        };
        let e = bad.validate("apps.x.supervision").unwrap_err().to_string();
        assert!(e.contains("apps.x.supervision.backoff_max"), "{e}");
    }

    #[test]
    fn a_spec_refuses_twin_children_and_bad_names() {
        struct Nobody;
        impl Actor for Nobody {
            type Context = Context<Self>;
        }
        let twins = SupervisorSpec::new("pair", SupervisorPolicy::default())
            .child(ActorSpec::new("a", || Nobody))
            .child(SupervisorSpec::new("a", SupervisorPolicy::default()));
        assert_eq!(twins.validate(), Err(NodeError::ChildExists("a".into())));
        let nested = SupervisorSpec::new("outer", SupervisorPolicy::default()).child(
            SupervisorSpec::new("inner", SupervisorPolicy::default())
                .child(ActorSpec::new("bad name", || Nobody)),
        );
        assert!(nested.validate().is_err());
        let ok = SupervisorSpec::new("outer", SupervisorPolicy::default())
            .child(ActorSpec::new("x", || Nobody))
            .child(
                SupervisorSpec::new("inner", SupervisorPolicy::default())
                    .child(ActorSpec::new("y", || Nobody)),
            );
        ok.validate().unwrap();
        assert_eq!(ok.actor_names(), vec!["x".to_string(), "y".to_string()]);
    }
}
