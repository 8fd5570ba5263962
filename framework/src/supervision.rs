//! Supervision trees: who restarts an actor that fails, and when to give up.
//!
//! The node is the root of a tree of [`Supervisor`]s. Each supervisor owns an
//! ordered list of children — named actors ([`ActorSpec`]) or nested
//! supervisors ([`SupervisorSpec`]) — and a [`SupervisorPolicy`]:
//!
//! - **strategy**: [`Strategy::OneForOne`] restarts only the child that exited;
//!   [`Strategy::OneForAll`] stops the siblings too and restarts them all (for
//!   children that share state and must start together);
//! - **intensity**: at most `max_restarts` restarts within `within`; one more
//!   and the supervisor *escalates*: it stops its children and itself, and its
//!   own parent handles that as the failure of one child. At the root, the node
//!   logs the escalation and stops;
//! - **back-off**: the n-th restart inside the window waits
//!   `backoff_base * 2^(n-1)`, capped at `backoff_max`.
//!
//! # The handler contract (what counts as a failure)
//!
//! actix cannot catch a panic inside one actor and keep the others of its
//! thread untouched, so Troupe makes failure explicit: a handler that cannot
//! go on returns its error *and stops its actor*, most simply with
//! [`OrFail::or_fail`] (`self.apply(m).or_fail(ctx)`). Any exit of a
//! supervised actor that its supervisor did not ask for — `ctx.stop()`, an
//! error passed to `or_fail`, or a panic — counts as a failure and is handled
//! by the policy. ([`Restart::Temporary`] children are simply removed.)
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
//! the new one.

use std::collections::{BTreeMap, VecDeque};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use actix::dev::ToEnvelope;
use actix::prelude::*;
use serde::{Deserialize, Serialize};
use tokio::time::Instant;

use crate::error::NodeError;
use crate::ids::validate_name;
use crate::inbox::{Drain, Inbox};
use crate::registry::{ActorEntry, Registry};
use crate::remote::{ErasedHandler, RemoteMessage, Sender, TypedHandler};

/// How a supervisor reacts to one child's failure.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(rename_all = "kebab-case")]
pub enum Strategy {
    /// Restart only the failed child (default).
    #[default]
    OneForOne,
    /// Stop all children and restart them all, in their original order.
    OneForAll,
}

/// Whether a child is restarted when it exits.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(rename_all = "kebab-case")]
pub enum Restart {
    /// Always restarted when it exits without being asked to (default).
    #[default]
    Permanent,
    /// Never restarted; removed when it exits.
    Temporary,
}

/// A supervisor's restart policy. Defaults: one-for-one, 5 restarts in 10 s,
/// back-off from 10 ms doubling up to 1 s.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct SupervisorPolicy {
    /// One-for-one or one-for-all.
    pub strategy: Strategy,
    /// Restarts allowed within `within` before escalating.
    pub max_restarts: u32,
    /// The sliding window for `max_restarts`.
    #[serde(with = "crate::config::duration_ms")]
    pub within: Duration,
    /// Delay before the first restart in a window.
    #[serde(with = "crate::config::duration_ms")]
    pub backoff_base: Duration,
    /// Upper bound on the delay before a restart.
    #[serde(with = "crate::config::duration_ms")]
    pub backoff_max: Duration,
}

impl Default for SupervisorPolicy {
    fn default() -> Self {
        Self {
            strategy: Strategy::OneForOne,
            max_restarts: 5,
            within: Duration::from_secs(10),
            backoff_base: Duration::from_millis(10),
            backoff_max: Duration::from_secs(1),
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
}

/// Sent to a supervisor when one of its children has exited.
#[derive(Debug, Clone, Copy, Message)]
#[rtype(result = "()")]
pub struct ChildExited {
    /// The child's key within its supervisor.
    pub key: u64,
    /// Which start of that child exited (stale exits are ignored).
    pub generation: u64,
}

/// What a child factory needs to start a child under a supervisor.
pub struct ChildContext {
    exit_to: Recipient<ChildExited>,
    key: u64,
    generation: u64,
    registry: Registry,
}

impl ChildContext {
    pub(crate) fn root(exit_to: Recipient<ChildExited>, registry: Registry) -> Self {
        Self {
            exit_to,
            key: 0,
            generation: next_generation(),
            registry,
        }
    }
}

/// A started child: dropping it (or calling [`RunningChild::stop`]) stops the child.
pub struct RunningChild {
    stop: Option<tokio::sync::oneshot::Sender<()>>,
}

impl RunningChild {
    /// Ask the child to stop.
    pub fn stop(mut self) {
        if let Some(tx) = self.stop.take() {
            let _ = tx.send(());
        }
    }
}

/// Something a supervisor can start and restart.
pub trait ChildFactory: Send + Sync + 'static {
    /// The child's name (unique on its node for named actors).
    fn name(&self) -> &str;
    /// Whether it is restarted on exit.
    fn restart(&self) -> Restart;
    /// Start a fresh instance.
    fn start(&self, cx: ChildContext) -> RunningChild;
    /// Called once when the child is removed for good.
    fn removed(&self, registry: &Registry) {
        let _ = registry;
    }
}

static GENERATION: AtomicU64 = AtomicU64::new(1);
fn next_generation() -> u64 {
    GENERATION.fetch_add(1, Ordering::Relaxed)
}

/// Reports the exit of the actor whose context holds it.
struct ExitGuard {
    to: Recipient<ChildExited>,
    key: u64,
    generation: u64,
    cleanup: Option<Box<dyn FnOnce()>>,
}

impl Drop for ExitGuard {
    fn drop(&mut self) {
        if let Some(cleanup) = self.cleanup.take() {
            cleanup();
        }
        self.to.do_send(ChildExited {
            key: self.key,
            generation: self.generation,
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
    RunningChild { stop: Some(tx) }
}

/// Helper for the handler contract: turn an `Err` into a supervised failure.
pub trait OrFail<T, E> {
    /// On `Err`, log it and stop the actor (its supervisor restarts it per
    /// policy); the error is still returned to the caller.
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
            ctx.stop();
        }
        self
    }
}

type HandlerBuilder<A> =
    Arc<dyn Fn(&Addr<A>, &Arc<Inbox<A>>) -> (&'static str, Arc<dyn ErasedHandler>) + Send + Sync>;

/// How to build and supervise one named actor: its name, a factory that makes
/// a fresh instance (called again on every restart), the remote messages it
/// accepts, its mailbox size and restart type.
pub struct ActorSpec<A: Actor<Context = Context<A>>> {
    name: String,
    factory: Arc<dyn Fn() -> A + Send + Sync>,
    handlers: Vec<HandlerBuilder<A>>,
    mailbox: usize,
    restart: Restart,
}

impl<A: Actor<Context = Context<A>>> ActorSpec<A> {
    /// A spec for actor `name` built by `factory`.
    pub fn new(name: impl Into<String>, factory: impl Fn() -> A + Send + Sync + 'static) -> Self {
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

    /// Permanent (default) or temporary.
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
            factory()
        });
        let inbox = inbox.expect("actix runs the create closure before returning");
        let handlers: BTreeMap<&'static str, Arc<dyn ErasedHandler>> =
            self.handlers.iter().map(|b| b(&addr, &inbox)).collect();
        registry.insert(
            &name,
            Arc::new(ActorEntry {
                handlers,
                generation,
                addr: Arc::new(addr),
            }),
        );
        running.unwrap_or(RunningChild { stop: None })
    }
    fn removed(&self, registry: &Registry) {
        registry.release(&self.name);
    }
}

/// A nested supervisor: its policy and its initial children.
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
        lock(&self.children).push(Arc::new(child));
        self
    }
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
}

impl SupervisorSpec {
    fn launch(&self, cx: ChildContext) -> (Addr<Supervisor>, RunningChild) {
        let mut running = None;
        let me = Supervisor {
            name: self.name.clone(),
            policy: self.policy,
            specs: self.children.clone(),
            slots: BTreeMap::new(),
            next_key: 1,
            restarts: VecDeque::new(),
            registry: cx.registry.clone(),
        };
        let addr = Supervisor::create(|ctx| {
            running = Some(install_exit_guard(ctx, &cx, None));
            me
        });
        (addr, running.unwrap_or(RunningChild { stop: None }))
    }
}

impl ChildFactory for SupervisorSpec {
    fn name(&self) -> &str {
        &self.name
    }
    fn restart(&self) -> Restart {
        self.restart
    }
    fn start(&self, cx: ChildContext) -> RunningChild {
        self.launch(cx).1
    }
}

struct Slot {
    factory: Arc<dyn ChildFactory>,
    generation: u64,
    running: Option<RunningChild>,
}

/// The supervisor actor. Created through [`SupervisorSpec`] (or as the node's root).
pub struct Supervisor {
    name: String,
    policy: SupervisorPolicy,
    specs: Arc<Mutex<Vec<Arc<dyn ChildFactory>>>>,
    slots: BTreeMap<u64, Slot>,
    next_key: u64,
    restarts: VecDeque<Instant>,
    registry: Registry,
}

impl Supervisor {
    fn start_slot(&mut self, key: u64, ctx: &mut Context<Self>) {
        let exit_to = ctx.address().recipient();
        let registry = self.registry.clone();
        if let Some(slot) = self.slots.get_mut(&key) {
            slot.generation = next_generation();
            let cx = ChildContext {
                exit_to,
                key,
                generation: slot.generation,
                registry,
            };
            slot.running = Some(slot.factory.start(cx));
        }
    }

    fn add_slot(&mut self, factory: Arc<dyn ChildFactory>, ctx: &mut Context<Self>) {
        let key = self.next_key;
        self.next_key += 1;
        self.slots.insert(
            key,
            Slot {
                factory,
                generation: 0,
                running: None,
            },
        );
        self.start_slot(key, ctx);
    }

    fn stop_all(&mut self) {
        for slot in self.slots.values_mut() {
            slot.generation = next_generation(); // its exit is expected, ignore it
            if let Some(r) = slot.running.take() {
                r.stop();
            }
        }
    }
}

impl Actor for Supervisor {
    type Context = Context<Self>;
    fn started(&mut self, ctx: &mut Context<Self>) {
        let specs: Vec<_> = lock(&self.specs).clone();
        for f in specs {
            self.add_slot(f, ctx);
        }
    }
}

/// Add a child to a running supervisor (used by the node's `spawn`).
#[derive(Message)]
#[rtype(result = "Result<(), NodeError>")]
pub struct AddChild(pub Arc<dyn ChildFactory>);

impl Handler<AddChild> for Supervisor {
    type Result = Result<(), NodeError>;
    fn handle(&mut self, msg: AddChild, ctx: &mut Context<Self>) -> Self::Result {
        let name = msg.0.name().to_string();
        validate_name(&name)?;
        if !self.registry.claim(&name) {
            return Err(NodeError::NameTaken(name));
        }
        lock(&self.specs).push(msg.0.clone());
        self.add_slot(msg.0, ctx);
        Ok(())
    }
}

/// Stop and remove the child named `0`; answers whether it existed.
#[derive(Message)]
#[rtype(result = "bool")]
pub struct RemoveChild(pub String);

impl Handler<RemoveChild> for Supervisor {
    type Result = bool;
    fn handle(&mut self, msg: RemoveChild, _ctx: &mut Context<Self>) -> bool {
        let Some(key) = self
            .slots
            .iter()
            .find(|(_, s)| s.factory.name() == msg.0)
            .map(|(k, _)| *k)
        else {
            return false;
        };
        if let Some(mut slot) = self.slots.remove(&key) {
            if let Some(r) = slot.running.take() {
                r.stop();
            }
            lock(&self.specs).retain(|f| !Arc::ptr_eq(f, &slot.factory));
            slot.factory.removed(&self.registry);
        }
        true
    }
}

impl Handler<ChildExited> for Supervisor {
    type Result = ();
    fn handle(&mut self, msg: ChildExited, ctx: &mut Context<Self>) {
        let Some(slot) = self.slots.get_mut(&msg.key) else {
            return;
        };
        if slot.generation != msg.generation {
            return; // an exit we caused, or an older life of the child
        }
        slot.running = None;
        let child = slot.factory.name().to_string();
        if slot.factory.restart() == Restart::Temporary {
            if let Some(slot) = self.slots.remove(&msg.key) {
                lock(&self.specs).retain(|f| !Arc::ptr_eq(f, &slot.factory));
                slot.factory.removed(&self.registry);
            }
            return;
        }
        let now = Instant::now();
        self.restarts.push_back(now);
        while let Some(&t) = self.restarts.front() {
            if now.duration_since(t) > self.policy.within {
                self.restarts.pop_front();
            } else {
                break;
            }
        }
        let n = self.restarts.len() as u32;
        if n > self.policy.max_restarts {
            tracing::error!(
                supervisor = %self.name, %child,
                "restart limit hit ({} in {:?}); escalating to the parent",
                self.policy.max_restarts, self.policy.within
            );
            self.stop_all();
            ctx.stop();
            return;
        }
        let delay = self.policy.backoff(n);
        tracing::warn!(supervisor = %self.name, %child, restart = n, ?delay, "child exited; restarting");
        match self.policy.strategy {
            Strategy::OneForOne => {
                let key = msg.key;
                ctx.run_later(delay, move |act, ctx| act.start_slot(key, ctx));
            }
            Strategy::OneForAll => {
                self.stop_all();
                ctx.run_later(delay, |act, ctx| {
                    let keys: Vec<u64> = act.slots.keys().copied().collect();
                    for key in keys {
                        act.start_slot(key, ctx);
                    }
                });
            }
        }
    }
}

/// Start `spec` as the root of a tree whose escalation goes to `exit_to`;
/// returns its address, its handle and the generation its exit will carry.
pub(crate) fn start_root(
    spec: &SupervisorSpec,
    exit_to: Recipient<ChildExited>,
    registry: Registry,
) -> (Addr<Supervisor>, RunningChild, u64) {
    let cx = ChildContext::root(exit_to, registry);
    let generation = cx.generation;
    let (addr, running) = spec.launch(cx);
    (addr, running, generation)
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
}
