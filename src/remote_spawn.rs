//! Remote spawn: start a named actor of a registered *kind* on another node,
//! supervised there (Akka's remote deployment, Erlang's `spawn(Node, ...)`).
//!
//! A node declares up front which kinds it lets others spawn, each with
//! typed, serde arguments:
//!
//! ```ignore
//! let kinds = SpawnKinds::new().kind::<WorkerArgs, _, _>("worker", |name, args| {
//!     ActorSpec::new(name, move || Worker::new(args.clone())).handles::<Job>()
//! });
//! start_spawner(&node, kinds).await?;   // start_node does this from StartOptions::spawn_kinds
//! // on another node:
//! let path = node.spawn_remote("node-b", "worker", "worker-7", WorkerArgs { .. }).await?;
//! let worker: RemoteRef<Job> = node.actor_ref(path);
//! ```
//!
//! Every node started by [`crate::runtime::start_node`] runs the spawner
//! actor [`SPAWNER_ACTOR`] with the kinds of [`StartOptions::spawn_kinds`]
//! (none by default: every request then answers [`SpawnError::UnknownKind`]).
//! The request carries the kind, the actor's name and the arguments encoded
//! as msgpack; the spawner checks the name (well formed, not in the
//! reserved `troupe.` namespace, free on its node), finds the kind, decodes
//! the arguments as that kind's type, and adds the actor under its node's
//! supervisor [`SPAWNED_SUPERVISOR`] (a child of the root supervisor,
//! created on first use; by default it restarts its whole subtree if a
//! child exceeds its restart intensity, see [`SpawnKinds::policy`]). It
//! answers the new actor's [`ActorPath`] or a [`SpawnError`] saying why not.
//!
//! [`StartOptions::spawn_kinds`]: crate::runtime::StartOptions::spawn_kinds
//!
//! # Guarantees
//!
//! - **At most once per request.** A spawn is one ask. Copies re-sent by the
//!   RPC layer are deduplicated by the target node (see
//!   [`troupe_framework::rpc`]): one request starts the actor at most once,
//!   as long as the target node does not restart meanwhile.
//! - **A lost reply is a timeout, not a failure.** When the answer does not
//!   arrive within the timeout, the caller gets [`SpawnError::Timeout`] and
//!   the actor *may exist*. Spawning again under the same name then answers
//!   [`SpawnError::NameTaken`] with `spawned_kind: Some(kind)` if the first
//!   request did start it, which tells the caller it can use the path.
//! - **Names are unique per node.** A name already in use on the target
//!   (by any actor) answers [`SpawnError::NameTaken`]; two concurrent
//!   requests for one name start one actor and the other gets that error.
//! - **Bad input never stops the target.** An unknown kind, arguments that
//!   do not decode, a malformed or reserved name: each is an error answer;
//!   the spawner and its node keep running.
//! - **Supervised on the target.** The actor lives (and is restarted) on
//!   the target node, under its restart type; it is not moved anywhere if
//!   that node goes down, and it is gone if that node restarts (nothing is
//!   persisted: use the cluster singleton, [`crate::singleton`], for an
//!   actor that must outlive its node).
//! - **Node down.** A target the local membership says is `Down` or `Left`
//!   answers [`SpawnError::NodeDown`] at once; one that is unreachable
//!   without being known as such ends in [`SpawnError::Timeout`].

use std::collections::BTreeMap;
use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};
use troupe_framework::actix::prelude::*;
use troupe_framework::codec::RemoteError;
use troupe_framework::supervision::ChildFactory;
use troupe_framework::{
    remote_message, ActorPath, ActorSpec, AskError, GiveUp, Node, NodeError, SupervisorPolicy,
    SupervisorSpec,
};

use crate::Error;

/// The name of every node's spawner actor.
pub const SPAWNER_ACTOR: &str = "troupe.spawner";
/// The supervisor (under the node's root) that remotely spawned actors run under.
pub const SPAWNED_SUPERVISOR: &str = "spawned";
/// How long [`SpawnRemote::spawn_remote`] waits for the answer.
pub const DEFAULT_SPAWN_TIMEOUT: Duration = Duration::from_secs(5);

/// Why a remote spawn did not start an actor (or may not have).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, thiserror::Error)]
pub enum SpawnError {
    /// The target node has no kind of this name.
    #[error("node {node:?} has no spawnable kind {kind:?} (it knows: {known:?})")]
    UnknownKind {
        /// The node asked.
        node: String,
        /// The kind asked for.
        kind: String,
        /// The kinds it knows, sorted.
        known: Vec<String>,
    },
    /// An actor of this name already runs on the target node.
    #[error("an actor named {name:?} already exists on node {node:?}{}", spawned_note(.spawned_kind))]
    NameTaken {
        /// The node asked.
        node: String,
        /// The name asked for.
        name: String,
        /// The kind it was spawned as, when the spawner itself started it
        /// (so a retry after a [`SpawnError::Timeout`] learns its first
        /// request worked).
        spawned_kind: Option<String>,
    },
    /// The name is malformed or reserved.
    #[error("bad actor name {name:?}: {reason}")]
    BadName {
        /// The name asked for.
        name: String,
        /// Why it is refused.
        reason: String,
    },
    /// The arguments did not decode as the kind's argument type.
    #[error("arguments for kind {kind:?} did not decode: {error}")]
    BadArgs {
        /// The kind asked for.
        kind: String,
        /// The decoder's message.
        error: String,
    },
    /// The target node is known to be down (or left), or cannot be reached.
    #[error("node {node:?} is unreachable: {reason}")]
    NodeDown {
        /// The node asked.
        node: String,
        /// What the transport or the membership view said.
        reason: String,
    },
    /// The target node runs no spawner actor.
    #[error("node {node:?} runs no spawner actor ({SPAWNER_ACTOR:?})")]
    NoSpawner {
        /// The node asked.
        node: String,
    },
    /// No answer in time: the actor may or may not have been started.
    #[error("no answer from node {node:?} within {after:?}: the actor may or may not exist")]
    Timeout {
        /// The node asked.
        node: String,
        /// The timeout.
        after: Duration,
    },
    /// Anything else (the local node stopped, the target's supervisor
    /// refused...), in words.
    #[error("spawn on node {node:?} failed: {reason}")]
    Failed {
        /// The node asked.
        node: String,
        /// What happened.
        reason: String,
    },
}

fn spawned_note(kind: &Option<String>) -> String {
    match kind {
        Some(k) => format!(" (spawned there as kind {k:?})"),
        None => String::new(),
    }
}

/// A spawn request, as it crosses the wire (what [`SpawnRemote::spawn_remote`] sends).
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct SpawnRequest {
    /// The kind to start.
    pub kind: String,
    /// The new actor's name on the target node.
    pub name: String,
    /// The kind's arguments, msgpack-encoded.
    pub args: Vec<u8>,
}
remote_message!(
    SpawnRequest,
    "troupe.spawn.request",
    Result<ActorPath, SpawnError>
);

type Builder = Arc<dyn Fn(&str, &[u8]) -> Result<Arc<dyn ChildFactory>, String> + Send + Sync>;

/// The kinds a node lets other nodes spawn, by name, each with its
/// argument type. Cheap to clone.
#[derive(Clone)]
pub struct SpawnKinds {
    kinds: BTreeMap<String, Builder>,
    policy: SupervisorPolicy,
}

impl Default for SpawnKinds {
    fn default() -> Self {
        Self::new()
    }
}

impl std::fmt::Debug for SpawnKinds {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SpawnKinds")
            .field("kinds", &self.names())
            .finish()
    }
}

impl SpawnKinds {
    /// No kinds; the [`SPAWNED_SUPERVISOR`] policy is the default one but
    /// with `on_give_up = restart`, so a crash-looping spawned actor never
    /// takes its node down.
    pub fn new() -> Self {
        Self {
            kinds: BTreeMap::new(),
            policy: SupervisorPolicy {
                on_give_up: GiveUp::Restart,
                ..SupervisorPolicy::default()
            },
        }
    }

    /// Register kind `kind`: `build(name, args)` returns the child to start
    /// (usually an [`ActorSpec`] named `name`; a [`SupervisorSpec`] works
    /// too) from the decoded arguments. A second registration of one kind
    /// replaces the first.
    pub fn kind<Args, C, F>(mut self, kind: &str, build: F) -> Self
    where
        Args: DeserializeOwned + 'static,
        C: ChildFactory,
        F: Fn(&str, Args) -> C + Send + Sync + 'static,
    {
        let builder: Builder = Arc::new(move |name: &str, bytes: &[u8]| {
            let args: Args = rmp_serde::from_slice(bytes).map_err(|e| e.to_string())?;
            Ok(Arc::new(build(name, args)) as Arc<dyn ChildFactory>)
        });
        self.kinds.insert(kind.to_string(), builder);
        self
    }

    /// The policy of the [`SPAWNED_SUPERVISOR`] (used when the spawner
    /// creates it).
    pub fn policy(mut self, policy: SupervisorPolicy) -> Self {
        self.policy = policy;
        self
    }

    /// The registered kinds, sorted.
    pub fn names(&self) -> Vec<String> {
        self.kinds.keys().cloned().collect()
    }
}

/// The spawner actor of a node (see the module docs).
pub struct Spawner {
    node: Node,
    kinds: SpawnKinds,
    /// What this spawner started: name -> kind (for [`SpawnError::NameTaken`]).
    spawned: Arc<std::sync::Mutex<BTreeMap<String, String>>>,
}

impl Actor for Spawner {
    type Context = Context<Self>;
}

impl Handler<SpawnRequest> for Spawner {
    type Result = ResponseFuture<Result<ActorPath, SpawnError>>;
    fn handle(&mut self, req: SpawnRequest, _: &mut Context<Self>) -> Self::Result {
        let (node, kinds, spawned) = (self.node.clone(), self.kinds.clone(), self.spawned.clone());
        Box::pin(async move {
            let result = spawn_here(&node, &kinds, &spawned, req).await;
            if let Err(e) = &result {
                tracing::info!(node = %node.name(), error = %e, "remote spawn refused");
            }
            result
        })
    }
}

async fn spawn_here(
    node: &Node,
    kinds: &SpawnKinds,
    spawned: &std::sync::Mutex<BTreeMap<String, String>>,
    req: SpawnRequest,
) -> Result<ActorPath, SpawnError> {
    let me = node.name().to_string();
    let bad_name = |reason: String| SpawnError::BadName {
        name: req.name.clone(),
        reason,
    };
    let path = ActorPath::new(&me, &req.name).map_err(|e| bad_name(e.to_string()))?;
    if req.name.starts_with("troupe.") {
        return Err(bad_name(
            "names starting with \"troupe.\" are reserved for the node's own actors".into(),
        ));
    }
    let Some(build) = kinds.kinds.get(&req.kind) else {
        return Err(SpawnError::UnknownKind {
            node: me,
            kind: req.kind,
            known: kinds.names(),
        });
    };
    let taken = |spawned: &std::sync::Mutex<BTreeMap<String, String>>| SpawnError::NameTaken {
        node: me.clone(),
        name: req.name.clone(),
        spawned_kind: spawned
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .get(&req.name)
            .cloned(),
    };
    if node.registry().is_running(&req.name) {
        return Err(taken(spawned));
    }
    let child = build(&req.name, &req.args).map_err(|error| SpawnError::BadArgs {
        kind: req.kind.clone(),
        error,
    })?;
    if child.name() != req.name {
        return Err(SpawnError::Failed {
            node: me,
            reason: format!(
                "kind {:?} built a child named {:?}, not {:?} (its builder must use the name it is given)",
                req.kind,
                child.name(),
                req.name
            ),
        });
    }
    let failed = |e: NodeError| SpawnError::Failed {
        node: me.clone(),
        reason: e.to_string(),
    };
    let parent = node
        .root_supervisor()
        .ensure_supervisor(SupervisorSpec::new(SPAWNED_SUPERVISOR, kinds.policy))
        .await
        .map_err(failed)?;
    match parent.spawn_arc(child).await {
        Ok(()) => {
            spawned
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .insert(req.name.clone(), req.kind.clone());
            tracing::info!(node = %me, actor = %req.name, kind = %req.kind, "spawned on request");
            Ok(path)
        }
        Err(NodeError::NameTaken(_) | NodeError::ChildExists(_)) => Err(taken(spawned)),
        Err(NodeError::Name(e)) => Err(bad_name(e.to_string())),
        Err(e) => Err(failed(e)),
    }
}

/// Start the spawner actor [`SPAWNER_ACTOR`] on `node`, under its root
/// supervisor, offering `kinds`. [`crate::runtime::start_node`] calls this.
pub async fn start_spawner(node: &Node, kinds: SpawnKinds) -> Result<(), Error> {
    let n = node.clone();
    let spawned = Arc::new(std::sync::Mutex::new(BTreeMap::new()));
    node.spawn(
        ActorSpec::new(SPAWNER_ACTOR, move || Spawner {
            node: n.clone(),
            kinds: kinds.clone(),
            spawned: spawned.clone(),
        })
        .handles::<SpawnRequest>(),
    )
    .await?;
    Ok(())
}

/// Spawn actor `name` of kind `kind` with `args` on node `target` (which
/// may be this node), waiting at most `timeout` for the answer.
pub async fn spawn_remote_within<A: Serialize>(
    node: &Node,
    target: &str,
    kind: &str,
    name: &str,
    args: &A,
    timeout: Duration,
) -> Result<ActorPath, SpawnError> {
    let failed = |reason: String| SpawnError::Failed {
        node: target.to_string(),
        reason,
    };
    let args =
        rmp_serde::to_vec(args).map_err(|e| failed(format!("arguments did not encode: {e}")))?;
    let spawner = node
        .lookup::<SpawnRequest>(&format!("{target}/{SPAWNER_ACTOR}"))
        .map_err(|e| failed(e.to_string()))?;
    let request = SpawnRequest {
        kind: kind.to_string(),
        name: name.to_string(),
        args,
    };
    match spawner.ask(request).timeout(timeout).await {
        Ok(answer) => answer,
        Err(AskError::Timeout(after)) => Err(SpawnError::Timeout {
            node: target.to_string(),
            after,
        }),
        Err(AskError::Unreachable(e)) => Err(SpawnError::NodeDown {
            node: target.to_string(),
            reason: e.to_string(),
        }),
        Err(AskError::Remote(RemoteError::UnknownActor(_) | RemoteError::UnknownMessage(_))) => {
            Err(SpawnError::NoSpawner {
                node: target.to_string(),
            })
        }
        Err(e @ AskError::Remote(RemoteError::ActorStopped)) => Err(failed(format!(
            "{e} (the actor may or may not have been started)"
        ))),
        Err(e) => Err(failed(e.to_string())),
    }
}

/// Remote spawn as a method of [`Node`].
pub trait SpawnRemote {
    /// Spawn actor `name` of kind `kind` with `args` on node `target`,
    /// waiting at most [`DEFAULT_SPAWN_TIMEOUT`]; see the module docs for
    /// the guarantees and [`SpawnError`] for the answers.
    fn spawn_remote<A: Serialize>(
        &self,
        target: &str,
        kind: &str,
        name: &str,
        args: A,
    ) -> impl Future<Output = Result<ActorPath, SpawnError>>;
}

impl SpawnRemote for Node {
    fn spawn_remote<A: Serialize>(
        &self,
        target: &str,
        kind: &str,
        name: &str,
        args: A,
    ) -> impl Future<Output = Result<ActorPath, SpawnError>> {
        let (node, target, kind, name) = (
            self.clone(),
            target.to_string(),
            kind.to_string(),
            name.to_string(),
        );
        async move {
            spawn_remote_within(&node, &target, &kind, &name, &args, DEFAULT_SPAWN_TIMEOUT).await
        }
    }
}
