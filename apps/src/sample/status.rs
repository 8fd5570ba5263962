//! The `status` app: one actor, `status`, that tells how its node is doing
//! ([`GetStatus`]) and shows the node's supervision tree ([`GetTree`]).

use std::time::Duration;

use actix::prelude::*;
use serde::{Deserialize, Serialize};
use troupe::app::{AppContext, AppKind, AppSpec};
use troupe::failure_detector::FailureDetectorHandle;
use troupe::framework::membership::MemberStatus;
use troupe::framework::{RetryPolicy, TreeNode};
use troupe::prelude::*;

use super::election::{GetLeadership, LEADER};

/// Actor name of the status app.
pub const STATUS: &str = "status";

/// Ask a node how it is doing.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct GetStatus;

/// What a node says about itself.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct NodeStatus {
    /// Node name.
    pub name: String,
    /// Incarnation (short form).
    pub incarnation: String,
    /// Time since the node started, in ms.
    pub uptime_ms: u64,
    /// Which failure detector runs.
    pub detector: String,
    /// Membership as this node sees it: name and status.
    pub members: Vec<(String, MemberStatus)>,
    /// Current phi per peer (phi-accrual only).
    pub phis: Vec<(String, f64)>,
    /// Named actors running on the node.
    pub actors: Vec<String>,
    /// Inbound frames seen so far.
    pub frames_in: u64,
    /// The election term and leader this node knows (when it runs the
    /// `election` app).
    pub leader: Option<(u64, Option<String>)>,
}
remote_message!(GetStatus, "troupe.status.get", NodeStatus);

/// Ask a node for a snapshot of its supervision tree
/// (`Node::supervision_tree`): every supervisor and actor with its
/// strategy, restart count and state.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct GetTree;
remote_message!(GetTree, "troupe.status.tree", Result<TreeNode, String>);

/// The status app's actor.
pub struct Status {
    node: Node,
    fd: Option<FailureDetectorHandle>,
}

impl Actor for Status {
    type Context = Context<Self>;
}

impl Handler<GetStatus> for Status {
    type Result = ResponseFuture<NodeStatus>;
    fn handle(&mut self, _: GetStatus, _: &mut Context<Self>) -> Self::Result {
        let node = self.node.clone();
        let fd = self.fd.clone();
        Box::pin(async move {
            let phis = match &fd {
                Some(fd) => fd.phis().await.unwrap_or_default(),
                None => Vec::new(),
            };
            // The election app's `leader` actor, when this node runs one.
            let leader = match node.lookup::<GetLeadership>(&format!("{}/{LEADER}", node.name())) {
                Ok(r) => r
                    .ask(GetLeadership)
                    .timeout(Duration::from_secs(1))
                    .retry(RetryPolicy::none())
                    .await
                    .ok(),
                Err(_) => None,
            };
            NodeStatus {
                name: node.name().to_string(),
                incarnation: node.id().to_string(),
                uptime_ms: node.now().as_millis() as u64,
                detector: fd
                    .as_ref()
                    .map(|f| f.kind().to_string())
                    .unwrap_or_default(),
                members: node
                    .membership()
                    .iter()
                    .map(|(k, v)| (k.clone(), v))
                    .collect(),
                phis,
                actors: node.registry().names(),
                frames_in: node.stats().frames_in,
                leader,
            }
        })
    }
}

impl Handler<GetTree> for Status {
    type Result = ResponseFuture<Result<TreeNode, String>>;
    fn handle(&mut self, _: GetTree, _: &mut Context<Self>) -> Self::Result {
        let tree = self.node.supervision_tree();
        Box::pin(async move { tree.await.map_err(|e| e.to_string()) })
    }
}

/// The status app of `ctx`'s node: its actor is named [`STATUS`], whatever
/// the app is called.
pub fn status_app(ctx: &AppContext) -> AppSpec {
    let node = ctx.node().clone();
    let fd = ctx.failure_detector().cloned();
    AppSpec::new(ctx.name()).child(
        ActorSpec::new(STATUS, move || Status {
            node: node.clone(),
            fd: fd.clone(),
        })
        .handles::<GetStatus>()
        .handles::<GetTree>(),
    )
}

/// The `status` app kind: no settings.
pub struct StatusKind;

impl StatusKind {
    /// Its name in `kind = "..."`.
    pub const KIND: &'static str = "status";
}

/// The `status` kind takes no settings.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct NoSettings {}

impl AppKind for StatusKind {
    type Settings = NoSettings;
    fn kind(&self) -> &'static str {
        Self::KIND
    }
    fn build(&self, ctx: &AppContext, _: NoSettings) -> Result<AppSpec, troupe::Error> {
        Ok(status_app(ctx))
    }
}
