//! The supervisor actor, and [`SupervisorRef`]: a handle to a running
//! supervisor by its path.
//!
//! A supervisor keeps one slot per child, in start order (its key). A slot
//! remembers the child's factory, the generation of its current start (an
//! exit report from an older start, or one the supervisor caused itself, is
//! ignored), how often it was restarted, and whether a restart is pending.
//! Restarts wait their back-off with `run_later`, so they follow the tokio
//! clock (virtual time in simulations).

use std::collections::{BTreeMap, VecDeque};
use std::future::Future;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use actix::prelude::*;
use tokio::time::Instant;

use super::observe::{ChildState, ExitReason, Hub, SupervisionEventKind, TreeKind, TreeNode};
use super::{
    lock, next_generation, ChildContext, ChildExited, ChildFactory, GiveUp, Restart, RunningChild,
    Strategy, SupervisorPolicy, SupervisorSpec,
};
use crate::error::NodeError;
use crate::registry::Registry;

struct Slot {
    factory: Arc<dyn ChildFactory>,
    generation: u64,
    running: Option<RunningChild>,
    /// Times this child was restarted by this supervisor.
    restarts: u64,
    /// The id of the pending restart that will start it, if any.
    pending: Option<u64>,
}

impl Slot {
    fn state(&self) -> ChildState {
        if self.running.is_some() {
            ChildState::Running
        } else if self.pending.is_some() {
            ChildState::Restarting
        } else {
            ChildState::Stopped
        }
    }
}

/// The supervisor actor. Created through [`SupervisorSpec`] (or as the node's root).
pub struct Supervisor {
    name: String,
    path: String,
    policy: SupervisorPolicy,
    specs: Arc<Mutex<Vec<Arc<dyn ChildFactory>>>>,
    slots: BTreeMap<u64, Slot>,
    next_key: u64,
    /// When the restarts of the current intensity window happened.
    restarts: VecDeque<Instant>,
    registry: Registry,
    hub: Arc<Hub>,
    /// Running, restarting (a whole-subtree restart is pending) or gave up.
    state: ChildState,
    /// Whole-subtree restarts ([`GiveUp::Restart`], [`SupervisorRef::restart`]).
    whole_restarts: u64,
    /// The id of the pending whole-subtree restart, if any.
    whole_pending: Option<u64>,
    next_pending: u64,
}

/// Start the supervisor described by `spec` as the child described by `cx`.
pub(super) fn launch(spec: &SupervisorSpec, cx: ChildContext) -> RunningChild {
    let me = Supervisor {
        name: spec.name.clone(),
        path: cx.path.clone(),
        policy: spec.policy,
        specs: spec.children.clone(),
        slots: BTreeMap::new(),
        next_key: 1,
        restarts: VecDeque::new(),
        registry: cx.registry.clone(),
        hub: cx.hub.clone(),
        state: ChildState::Running,
        whole_restarts: 0,
        whole_pending: None,
        next_pending: 1,
    };
    let mut running = None;
    let addr = Supervisor::create(|ctx| {
        running = Some(super::install_exit_guard(ctx, &cx, None));
        me
    });
    let mut running = running.unwrap_or(RunningChild {
        stop: None,
        supervisor: None,
    });
    running.supervisor = Some(addr);
    running
}

/// The path of child `name` of the supervisor at `parent`.
fn join_path(parent: &str, name: &str) -> String {
    if parent.is_empty() {
        name.to_string()
    } else {
        format!("{parent}/{name}")
    }
}

impl Supervisor {
    /// Start (or restart) the child in slot `key`, reporting it as `how`.
    fn start_slot(&mut self, key: u64, how: SupervisionEventKind, ctx: &mut Context<Self>) {
        let exit_to = ctx.address().recipient();
        let registry = self.registry.clone();
        let hub = self.hub.clone();
        let Some(name) = self.slots.get(&key).map(|s| s.factory.name().to_string()) else {
            return;
        };
        let path = join_path(&self.path, &name);
        if let Some(slot) = self.slots.get_mut(&key) {
            slot.generation = next_generation();
            slot.pending = None;
            if matches!(how, SupervisionEventKind::Restarted { .. }) {
                slot.restarts += 1;
            }
            let cx = ChildContext {
                exit_to,
                key,
                generation: slot.generation,
                registry,
                hub: hub.clone(),
                path: path.clone(),
            };
            slot.running = Some(slot.factory.start(cx));
            hub.publish(&path, how);
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
                restarts: 0,
                pending: None,
            },
        );
        if self.state == ChildState::Running {
            self.start_slot(key, SupervisionEventKind::Started, ctx);
        }
    }

    /// Stop the child in slot `key` on purpose (its exit report will be
    /// ignored) and cancel any restart pending for it.
    fn stop_slot(&mut self, key: u64) {
        let Some(slot) = self.slots.get_mut(&key) else {
            return;
        };
        slot.generation = next_generation();
        slot.pending = None;
        if let Some(r) = slot.running.take() {
            r.stop();
            let path = join_path(&self.path, slot.factory.name());
            self.hub.publish(
                &path,
                SupervisionEventKind::Exited {
                    reason: ExitReason::Shutdown,
                },
            );
        }
    }

    /// Stop every child, the last started first.
    fn stop_all(&mut self) {
        let keys: Vec<u64> = self.slots.keys().rev().copied().collect();
        for key in keys {
            self.stop_slot(key);
        }
    }

    /// Remove slot `key` for good: stop it, forget its spec, free its names.
    fn remove_slot(&mut self, key: u64) {
        self.stop_slot(key);
        if let Some(slot) = self.slots.remove(&key) {
            lock(&self.specs).retain(|f| !Arc::ptr_eq(f, &slot.factory));
            slot.factory.removed(&self.registry);
        }
    }

    /// Count a restart in the intensity window; the number of restarts in it.
    fn count_restart(&mut self) -> u32 {
        let now = Instant::now();
        self.restarts.push_back(now);
        while let Some(&t) = self.restarts.front() {
            if now.duration_since(t) > self.policy.within {
                self.restarts.pop_front();
            } else {
                break;
            }
        }
        self.restarts.len() as u32
    }

    /// Restart the children in `keys` (in order) after `delay`, unless
    /// something else stops or restarts them meanwhile.
    fn schedule_restart(
        &mut self,
        keys: Vec<u64>,
        attempt: u32,
        delay: Duration,
        ctx: &mut Context<Self>,
    ) {
        let id = self.next_pending;
        self.next_pending += 1;
        for key in &keys {
            if let Some(slot) = self.slots.get_mut(key) {
                slot.pending = Some(id);
            }
        }
        ctx.run_later(delay, move |act, ctx| {
            for key in keys {
                let due = act
                    .slots
                    .get(&key)
                    .is_some_and(|s| s.pending == Some(id) && s.running.is_none());
                if due {
                    act.start_slot(key, SupervisionEventKind::Restarted { attempt, delay }, ctx);
                }
            }
        });
    }

    /// Stop every child and start them all again, as a fresh subtree, after
    /// `delay`.
    fn restart_whole(&mut self, delay: Duration, ctx: &mut Context<Self>) {
        self.stop_all();
        self.restarts.clear();
        self.state = ChildState::Restarting;
        let id = self.next_pending;
        self.next_pending += 1;
        self.whole_pending = Some(id);
        ctx.run_later(delay, move |act, ctx| {
            if act.whole_pending != Some(id) {
                return; // superseded by a later decision
            }
            act.whole_pending = None;
            act.whole_restarts += 1;
            act.state = ChildState::Running;
            let attempt = u32::try_from(act.whole_restarts).unwrap_or(u32::MAX);
            act.hub.publish(
                &act.path,
                SupervisionEventKind::Restarted { attempt, delay },
            );
            let keys: Vec<u64> = act.slots.keys().copied().collect();
            for key in keys {
                if let Some(slot) = act.slots.get_mut(&key) {
                    slot.restarts = 0;
                }
                act.start_slot(key, SupervisionEventKind::Started, ctx);
            }
        });
    }

    fn give_up(&mut self, ctx: &mut Context<Self>) {
        let then = self.policy.on_give_up;
        self.hub
            .publish(&self.path, SupervisionEventKind::GaveUp { then });
        match then {
            GiveUp::Escalate | GiveUp::StopNode => {
                self.stop_all();
                if then == GiveUp::StopNode {
                    self.hub.stop_node(&self.path);
                }
                super::observe::note_exit(ExitReason::GaveUp);
                ctx.stop();
            }
            GiveUp::Restart => {
                let delay = self.policy.backoff_max;
                self.restart_whole(delay, ctx);
            }
            GiveUp::Stop => {
                self.stop_all();
                self.restarts.clear();
                self.state = ChildState::GaveUp;
                // Its children stay stopped: they ended (for death-watch).
                for slot in self.slots.values() {
                    for n in slot.factory.actor_names() {
                        self.registry.end(&n);
                    }
                }
            }
        }
    }

    fn key_of(&self, name: &str) -> Option<u64> {
        self.slots
            .iter()
            .find(|(_, s)| s.factory.name() == name)
            .map(|(k, _)| *k)
    }

    fn tree_leaf(&self) -> TreeNode {
        TreeNode {
            name: self.name.clone(),
            kind: TreeKind::Supervisor,
            strategy: Some(self.policy.strategy),
            restarts: self.whole_restarts,
            state: self.state,
            children: Vec::new(),
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

/// Add a child to a running supervisor (used by `Node::spawn` and
/// [`SupervisorRef::spawn`]). Its names are checked and its actor names
/// claimed on the node first.
#[derive(Message)]
#[rtype(result = "Result<(), NodeError>")]
pub(crate) struct AddChild {
    pub(crate) child: Arc<dyn ChildFactory>,
    /// Succeed without adding anything if a supervisor of that name exists.
    pub(crate) existing_ok: bool,
}

impl Handler<AddChild> for Supervisor {
    type Result = Result<(), NodeError>;
    fn handle(&mut self, msg: AddChild, ctx: &mut Context<Self>) -> Self::Result {
        let child = msg.child;
        child.validate()?;
        let name = child.name().to_string();
        let sibling = self.key_of(&name);
        if let Some(key) = sibling {
            let is_supervisor = self.slots[&key].factory.kind() == TreeKind::Supervisor;
            if msg.existing_ok && is_supervisor && child.kind() == TreeKind::Supervisor {
                return Ok(());
            }
        }
        let names = child.actor_names();
        for (i, n) in names.iter().enumerate() {
            if !self.registry.claim(n) {
                for claimed in &names[..i] {
                    self.registry.release(claimed);
                }
                return Err(NodeError::NameTaken(n.clone()));
            }
        }
        if sibling.is_some() {
            for claimed in &names {
                self.registry.release(claimed);
            }
            return Err(NodeError::ChildExists(name));
        }
        lock(&self.specs).push(child.clone());
        self.add_slot(child, ctx);
        Ok(())
    }
}

/// Stop and remove the child named `0`; answers whether it existed.
#[derive(Message)]
#[rtype(result = "bool")]
pub(crate) struct RemoveChild(pub(crate) String);

impl Handler<RemoveChild> for Supervisor {
    type Result = bool;
    fn handle(&mut self, msg: RemoveChild, _ctx: &mut Context<Self>) -> bool {
        match self.key_of(&msg.0) {
            Some(key) => {
                self.remove_slot(key);
                true
            }
            None => false,
        }
    }
}

/// The address of the running child supervisor named `0`, if any.
#[derive(Message)]
#[rtype(result = "Option<Addr<Supervisor>>")]
struct FindChild(String);

impl Handler<FindChild> for Supervisor {
    type Result = Option<Addr<Supervisor>>;
    fn handle(&mut self, msg: FindChild, _ctx: &mut Context<Self>) -> Self::Result {
        let key = self.key_of(&msg.0)?;
        self.slots[&key]
            .running
            .as_ref()
            .and_then(|r| r.supervisor.clone())
    }
}

/// Stop every child and start them all again now, with a fresh intensity
/// window (also out of [`ChildState::GaveUp`]).
#[derive(Message)]
#[rtype(result = "()")]
struct RestartAll;

impl Handler<RestartAll> for Supervisor {
    type Result = ();
    fn handle(&mut self, _: RestartAll, ctx: &mut Context<Self>) {
        self.restart_whole(Duration::ZERO, ctx);
    }
}

/// A snapshot of this supervisor's subtree.
#[derive(Message)]
#[rtype(result = "TreeNode")]
pub(crate) struct GetTree;

impl Handler<GetTree> for Supervisor {
    type Result = ResponseFuture<TreeNode>;
    fn handle(&mut self, _: GetTree, _ctx: &mut Context<Self>) -> Self::Result {
        let mut me = self.tree_leaf();
        let children: Vec<(TreeNode, Option<Addr<Supervisor>>)> = self
            .slots
            .values()
            .map(|slot| {
                let node = TreeNode {
                    name: slot.factory.name().to_string(),
                    kind: slot.factory.kind(),
                    strategy: slot.factory.strategy(),
                    restarts: slot.restarts,
                    state: slot.state(),
                    children: Vec::new(),
                };
                let sub = slot.running.as_ref().and_then(|r| r.supervisor.clone());
                (node, sub)
            })
            .collect();
        Box::pin(async move {
            for (mut node, sub) in children {
                if let Some(addr) = sub {
                    if let Ok(sub) = addr.send(GetTree).await {
                        node.restarts += sub.restarts;
                        node.state = sub.state;
                        node.strategy = sub.strategy;
                        node.children = sub.children;
                    }
                }
                me.children.push(node);
            }
            me
        })
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
        let restart = slot.factory.restart();
        let path = join_path(&self.path, slot.factory.name());
        self.hub.publish(
            &path,
            SupervisionEventKind::Exited {
                reason: msg.reason.clone(),
            },
        );
        for n in slot.factory.actor_names() {
            self.registry.note_exit(&n, &msg.reason);
        }
        match restart {
            Restart::Temporary => {
                self.remove_slot(msg.key);
                return;
            }
            Restart::Transient if !msg.reason.is_abnormal() => {
                for n in slot.factory.actor_names() {
                    self.registry.end(&n);
                }
                return;
            }
            Restart::Transient | Restart::Permanent => {}
        }
        let n = self.count_restart();
        if n > self.policy.max_restarts {
            self.give_up(ctx);
            return;
        }
        let delay = self.policy.backoff(n);
        let affected: Vec<u64> = match self.policy.strategy {
            Strategy::OneForOne => vec![msg.key],
            Strategy::OneForAll => self.slots.keys().copied().collect(),
            Strategy::RestForOne => self.slots.range(msg.key..).map(|(k, _)| *k).collect(),
        };
        // Stop the siblings, the last started first; temporary ones go for good.
        let mut restart_keys = Vec::new();
        for &key in affected.iter().rev() {
            if key == msg.key {
                restart_keys.push(key);
                continue;
            }
            let temporary = self
                .slots
                .get(&key)
                .is_some_and(|s| s.factory.restart() == Restart::Temporary);
            if temporary {
                self.remove_slot(key);
            } else {
                self.stop_slot(key);
                restart_keys.push(key);
            }
        }
        restart_keys.reverse();
        self.schedule_restart(restart_keys, n, delay, ctx);
    }
}

/// Start `spec` as the root of a node's tree whose escalation goes to
/// `exit_to`; returns its address, its handle and the generation its exit
/// will carry.
pub(crate) fn start_root(
    spec: &SupervisorSpec,
    exit_to: Recipient<ChildExited>,
    registry: Registry,
    hub: Arc<Hub>,
) -> (Addr<Supervisor>, RunningChild, u64) {
    let cx = ChildContext {
        exit_to,
        key: 0,
        generation: next_generation(),
        registry,
        hub,
        path: String::new(),
    };
    let generation = cx.generation;
    let mut running = launch(spec, cx);
    let addr = running
        .supervisor
        .take()
        .expect("launch returns the supervisor's address");
    (addr, running, generation)
}

tokio::task_local! {
    /// Where `Node::spawn` puts children while a [`SupervisorRef::scope`] runs.
    static SPAWN_PARENT: SupervisorRef;
}

/// A handle to a running supervisor of a node, named by its path from the
/// node's root supervisor (`""` for the root, `apps/counter` for an app's).
/// Cheap to clone. Each call finds the supervisor by its path again, so a
/// handle keeps working when the supervisor is restarted by its parent; while
/// it is not running, calls fail with [`NodeError::NoSupervisor`].
#[derive(Clone)]
pub struct SupervisorRef {
    root: Addr<Supervisor>,
    path: Vec<String>,
}

impl std::fmt::Debug for SupervisorRef {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SupervisorRef")
            .field("path", &self.path())
            .finish()
    }
}

impl SupervisorRef {
    /// The root supervisor of a node.
    pub(crate) fn root(root: Addr<Supervisor>) -> Self {
        Self {
            root,
            path: Vec::new(),
        }
    }

    /// The supervisor whose `scope` is running, if any.
    pub(crate) fn current() -> Option<SupervisorRef> {
        SPAWN_PARENT.try_with(|p| p.clone()).ok()
    }

    /// Its path from the node's root supervisor (`""` for the root).
    pub fn path(&self) -> String {
        self.path.join("/")
    }

    /// A handle to its child supervisor `name` (not checked until used).
    pub fn child(&self, name: &str) -> SupervisorRef {
        let mut path = self.path.clone();
        path.push(name.to_string());
        Self {
            root: self.root.clone(),
            path,
        }
    }

    async fn resolve(&self) -> Result<Addr<Supervisor>, NodeError> {
        let mut addr = self.root.clone();
        if !addr.connected() {
            return Err(NodeError::Stopped);
        }
        for name in &self.path {
            addr = addr
                .send(FindChild(name.clone()))
                .await
                .map_err(|_| NodeError::Stopped)?
                .ok_or_else(|| NodeError::NoSupervisor(self.path()))?;
        }
        Ok(addr)
    }

    /// Add `child` (an [`ActorSpec`](super::ActorSpec) or a nested
    /// [`SupervisorSpec`]) after its current children; it is started at once
    /// and restarted under this supervisor's policy. Its names are checked
    /// and its actor names claimed on the node.
    pub async fn spawn(&self, child: impl ChildFactory) -> Result<(), NodeError> {
        self.spawn_arc(Arc::new(child)).await
    }

    /// [`SupervisorRef::spawn`] for a child already behind an `Arc`.
    pub async fn spawn_arc(&self, child: Arc<dyn ChildFactory>) -> Result<(), NodeError> {
        self.resolve()
            .await?
            .send(AddChild {
                child,
                existing_ok: false,
            })
            .await
            .map_err(|_| NodeError::Stopped)?
    }

    /// The child supervisor named like `spec`, started from `spec` if it
    /// does not exist yet (an existing one is kept as it is).
    pub async fn ensure_supervisor(
        &self,
        spec: SupervisorSpec,
    ) -> Result<SupervisorRef, NodeError> {
        let name = spec.name().to_string();
        self.resolve()
            .await?
            .send(AddChild {
                child: Arc::new(spec),
                existing_ok: true,
            })
            .await
            .map_err(|_| NodeError::Stopped)??;
        Ok(self.child(&name))
    }

    /// Stop and remove its child `name` for good (with everything below it,
    /// freeing their names); false if it has no such child.
    pub async fn stop_child(&self, name: &str) -> Result<bool, NodeError> {
        self.resolve()
            .await?
            .send(RemoveChild(name.to_string()))
            .await
            .map_err(|_| NodeError::Stopped)
    }

    /// Stop every child and start them all again, with a fresh intensity
    /// window: also brings back a supervisor that gave up with
    /// [`GiveUp::Stop`].
    pub async fn restart(&self) -> Result<(), NodeError> {
        self.resolve()
            .await?
            .send(RestartAll)
            .await
            .map_err(|_| NodeError::Stopped)
    }

    /// A snapshot of its subtree.
    pub async fn tree(&self) -> Result<TreeNode, NodeError> {
        self.resolve()
            .await?
            .send(GetTree)
            .await
            .map_err(|_| NodeError::Stopped)
    }

    /// Run `fut` so that every `Node::spawn` inside it adds its child under
    /// this supervisor instead of the node's root: typed protocol APIs
    /// (`start_lock`, `start_election`...) called from an application then
    /// start their protocol actors in the application's tree.
    pub fn scope<F: Future>(&self, fut: F) -> impl Future<Output = F::Output> {
        SPAWN_PARENT.scope(self.clone(), fut)
    }
}
