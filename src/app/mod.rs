//! Applications as supervised actor trees.
//!
//! An application is a subtree of its node's supervision tree: a root
//! supervisor named after the app, with its own [`SupervisorPolicy`], under
//! the node's `apps` supervisor, holding the app's children in order —
//! actors, nested supervisors, and the protocol actors its start-up steps
//! spawn (a typed protocol API such as [`start_lock`](crate::lock::start_lock)
//! called in a start-up step starts its protocol actor *inside* the app):
//!
//! ```text
//! node-a                        (the node's root supervisor, [supervision])
//! ├── fd                        (the failure detector)
//! └── apps                      (one-for-one)
//!     ├── counter               (an app's root supervisor, [apps.counter.supervision])
//!     │   └── counter           (an actor)
//!     └── lock
//!         ├── mutex.ledger      (the lock's protocol actor, spawned by start_lock)
//!         └── lock.worker       (an actor looping over acquire / release)
//! ```
//!
//! # Where a failure stops
//!
//! Children fail and are restarted under the app's policy (one-for-one,
//! one-for-all or rest-for-one, at most `max_restarts` within `within`, with
//! back-off). When the app's root supervisor gives up, its `on_give_up`
//! decides ([`GiveUp`]); an app's default is [`GiveUp::Restart`]:
//!
//! - `restart` (default): the whole app is restarted in place after
//!   `backoff_max`; the node and the other apps are not touched;
//! - `stop`: the app stays stopped (state `gave-up` in the tree) until
//!   [`App::restart`]; the node and the other apps keep running;
//! - `escalate`: the failure goes to the node: the `apps` supervisor, with the
//!   intensity and back-off of the node's `[supervision]` policy, restarts the
//!   app alone, and when that limit is hit too, the node stops;
//! - `stop-node`: the node stops at once.
//!
//! # Declaring and starting an app
//!
//! ```no_run
//! use troupe::app::{start_app, AppSpec};
//! use troupe::prelude::*;
//!
//! #[derive(Default)]
//! struct Worker;
//! impl Actor for Worker { type Context = Context<Self>; }
//!
//! async fn run(node: Node, members: Vec<String>) -> Result<(), troupe::Error> {
//!     let spec = AppSpec::new("ledger")
//!         .policy(SupervisorPolicy { strategy: Strategy::RestForOne, ..AppSpec::default_policy() })
//!         // A protocol first: its actor is a child of the app.
//!         .start(move |app| async move {
//!             start_lock(app.node(), "ledger", MutexAlgorithm::RicartAgrawala, &members).await?;
//!             Ok(())
//!         })
//!         // Then actors (and nested supervisors), restarted after it under rest-for-one.
//!         .child(ActorSpec::new("ledger.worker", Worker::default));
//!     let app = start_app(&node, spec).await?;
//!     println!("{:#?}", app.tree().await?);
//!     Ok(())
//! }
//! ```
//!
//! Apps are also started from a node's config file through an
//! [`AppRegistry`] of app kinds (see [`registry`]): `[apps.NAME]` tables with
//! `kind = "..."` and the kind's typed settings.
//!
//! # HTTP routes and dashboard panels
//!
//! An app kind declares the HTTP routes it serves under `/v1/<app>/...` on
//! the node's endpoint ([`AppKind::routes`], mounted through
//! [`AppsPlan::routes`] and [`crate::runtime::StartOptions::app_routes`])
//! and the panel it shows on the node's live dashboard
//! ([`AppKind::panel`], through [`AppsPlan::panels`] and
//! [`crate::runtime::StartOptions::app_panels`]; see [`crate::dashboard`]).

pub mod registry;

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;

use troupe_framework::supervision::ChildFactory;
use troupe_framework::{
    ChildState, GiveUp, Node, NodeError, Strategy, SupervisorPolicy, SupervisorRef, SupervisorSpec,
    TreeNode,
};

use crate::Error;

pub use registry::{
    check_members, AppContext, AppKind, AppRegistry, AppsPlan, ClusterInfo, PolicyOverrides,
};

/// The name of the node's supervisor under which every app runs.
pub const APPS: &str = "apps";

type StartStep = Box<dyn FnOnce(App) -> Pin<Box<dyn Future<Output = Result<(), Error>>>> + Send>;

/// One step of an app's start-up, in declaration order.
enum Step {
    /// Add a child (actor or nested supervisor).
    Child(Arc<dyn ChildFactory>),
    /// Run a start-up function inside the app's tree.
    Start(StartStep),
}

/// How to build an application: its name, its root supervisor's policy and
/// its start-up steps, run in order when it starts:
///
/// - [`AppSpec::child`] / [`AppSpec::supervisor`] add an actor or a nested
///   supervisor;
/// - [`AppSpec::start`] runs an async function once, inside the app's tree:
///   every actor it spawns (through `Node::spawn`, a typed protocol API, or
///   [`App::spawn`]) becomes a child of the app.
///
/// Children are started in the order of the steps and kept in that order:
/// that is the order one-for-all and rest-for-one restart them in. A
/// restart rebuilds each child from its factory; the start-up functions are
/// not run again (what they spawned is restarted like any child).
pub struct AppSpec {
    name: String,
    policy: SupervisorPolicy,
    steps: Vec<Step>,
    // HTTP routes: the place where an app's routes under /v1/<app>/... will
    // be declared (see the module docs, "HTTP routes").
}

impl AppSpec {
    /// An app named `name` (its root supervisor's name and its path
    /// `apps/<name>` in the tree) with [`AppSpec::default_policy`].
    pub fn new(name: impl Into<String>) -> Self {
        Self {
            name: name.into(),
            policy: Self::default_policy(),
            steps: Vec::new(),
        }
    }

    /// An app's default policy: the framework's defaults (one-for-one, 5
    /// restarts in 10 s, back-off 10 ms doubling to 1 s) with
    /// `on_give_up = restart`: an app that keeps failing is restarted as a
    /// whole without involving the node.
    pub fn default_policy() -> SupervisorPolicy {
        SupervisorPolicy {
            on_give_up: GiveUp::Restart,
            ..SupervisorPolicy::default()
        }
    }

    /// The app's name.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// The policy of the app's root supervisor.
    pub fn current_policy(&self) -> &SupervisorPolicy {
        &self.policy
    }

    /// Set the policy of the app's root supervisor.
    pub fn policy(mut self, policy: SupervisorPolicy) -> Self {
        self.policy = policy;
        self
    }

    /// Set only the strategy of the app's root supervisor.
    pub fn strategy(mut self, strategy: Strategy) -> Self {
        self.policy.strategy = strategy;
        self
    }

    /// Add a child: an [`ActorSpec`](troupe_framework::ActorSpec) or a
    /// [`SupervisorSpec`].
    pub fn child(mut self, child: impl ChildFactory) -> Self {
        self.steps.push(Step::Child(Arc::new(child)));
        self
    }

    /// Add a nested supervisor (the same as [`AppSpec::child`], for reading).
    pub fn supervisor(self, spec: SupervisorSpec) -> Self {
        self.child(spec)
    }

    /// Run `f` once when the app starts, after the steps before it, inside
    /// the app's tree: whatever it spawns becomes a child of the app (see
    /// [`SupervisorRef::scope`]). An error stops the app's start.
    pub fn start<F, Fut>(mut self, f: F) -> Self
    where
        F: FnOnce(App) -> Fut + Send + 'static,
        Fut: Future<Output = Result<(), Error>> + 'static,
    {
        self.steps
            .push(Step::Start(Box::new(move |app| Box::pin(f(app)))));
        self
    }
}

/// A running application. Cheap to clone.
#[derive(Clone)]
pub struct App {
    node: Node,
    name: String,
    supervisor: SupervisorRef,
}

impl std::fmt::Debug for App {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("App").field("name", &self.name).finish()
    }
}

impl App {
    /// The app's name.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// The node it runs on.
    pub fn node(&self) -> &Node {
        &self.node
    }

    /// Its root supervisor (`apps/<name>`).
    pub fn supervisor(&self) -> &SupervisorRef {
        &self.supervisor
    }

    /// Add a child to the app's root supervisor, after the others.
    pub async fn spawn(&self, child: impl ChildFactory) -> Result<(), Error> {
        Ok(self.supervisor.spawn(child).await?)
    }

    /// A snapshot of the app's subtree.
    pub async fn tree(&self) -> Result<TreeNode, Error> {
        Ok(self.supervisor.tree().await?)
    }

    /// Restart the whole app now (also one that gave up with `stop`).
    pub async fn restart(&self) -> Result<(), Error> {
        Ok(self.supervisor.restart().await?)
    }

    /// Stop the app for good and remove it from the node (freeing its actor
    /// names); false if it was not running.
    pub async fn stop(&self) -> Result<bool, Error> {
        stop_app(&self.node, &self.name).await
    }
}

/// The `apps` supervisor's policy on `node`: one-for-one with the intensity
/// and back-off of the node's root, giving up by stopping the node (or by
/// restarting every app, when the root restarts in place).
fn apps_policy(node: &Node) -> SupervisorPolicy {
    let root = node.root_policy();
    SupervisorPolicy {
        strategy: Strategy::OneForOne,
        on_give_up: match root.on_give_up {
            GiveUp::Restart => GiveUp::Restart,
            _ => GiveUp::StopNode,
        },
        ..root
    }
}

fn apps_supervisor(node: &Node) -> SupervisorRef {
    node.root_supervisor().child(APPS)
}

/// Start `spec` on `node`, under its `apps` supervisor: create the app's
/// root supervisor, then run the steps in order. If a step fails, the app is
/// removed again and the error returned. Fails if an app of that name runs.
pub async fn start_app(node: &Node, spec: AppSpec) -> Result<App, Error> {
    spec.policy
        .validate(&format!("apps.{}.supervision", spec.name))?;
    let apps = node
        .root_supervisor()
        .ensure_supervisor(SupervisorSpec::new(APPS, apps_policy(node)))
        .await?;
    let AppSpec {
        name,
        policy,
        steps,
    } = spec;
    match apps.spawn(SupervisorSpec::new(name.clone(), policy)).await {
        Err(NodeError::ChildExists(_)) => {
            return Err(Error::Config(format!(
                "apps.{name}: an app named {name:?} already runs on this node"
            )))
        }
        other => other?,
    }
    let app = App {
        node: node.clone(),
        name: name.clone(),
        supervisor: apps.child(&name),
    };
    for step in steps {
        let done = match step {
            Step::Child(child) => app.supervisor.spawn_arc(child).await.map_err(Error::from),
            Step::Start(f) => app.supervisor.scope(f(app.clone())).await,
        };
        if let Err(e) = done {
            let _ = apps.stop_child(&name).await;
            return Err(e);
        }
    }
    tracing::info!(node = %node.name(), app = %name, "app started");
    Ok(app)
}

/// Stop the app `name` on `node` for good; false if it was not running.
pub async fn stop_app(node: &Node, name: &str) -> Result<bool, Error> {
    match apps_supervisor(node).stop_child(name).await {
        Ok(found) => Ok(found),
        Err(NodeError::NoSupervisor(_)) => Ok(false),
        Err(e) => Err(e.into()),
    }
}

/// One app as [`list_apps`] sees it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AppInfo {
    /// Its name.
    pub name: String,
    /// Running, restarting, stopped or gave up.
    pub state: ChildState,
    /// Times it was restarted as a whole (by itself after giving up, or by
    /// the node).
    pub restarts: u64,
}

/// The apps on `node`, in start order.
pub async fn list_apps(node: &Node) -> Result<Vec<AppInfo>, Error> {
    let tree = match apps_supervisor(node).tree().await {
        Ok(tree) => tree,
        Err(NodeError::NoSupervisor(_)) => return Ok(Vec::new()),
        Err(e) => return Err(e.into()),
    };
    Ok(tree
        .children
        .into_iter()
        .map(|c| AppInfo {
            name: c.name,
            state: c.state,
            restarts: c.restarts,
        })
        .collect())
}
