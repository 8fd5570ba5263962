//! The sample applications a `troupe node` can run, chosen in the `[apps]`
//! table of its config:
//!
//! ```toml
//! [apps]
//! status = true    # default: answers GetStatus (membership, detector, stats)
//! counter = true   # default: a counter to exercise tell / ask across nodes
//! ```
//!
//! Their messages are public so that other programs (the demo, the tests, a
//! dashboard) can talk to them from their own node.

use std::time::Duration;

use actix::prelude::*;
use serde::{Deserialize, Serialize};
use troupe::failure_detector::FailureDetectorHandle;
use troupe::framework::membership::MemberStatus;
use troupe::prelude::*;

/// Actor name of the status app.
pub const STATUS: &str = "status";
/// Actor name of the counter app.
pub const COUNTER: &str = "counter";

/// Which sample apps to start (the `[apps]` table).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct AppsConfig {
    /// Start the status app (default true).
    pub status: bool,
    /// Start the counter app (default true).
    pub counter: bool,
}

impl Default for AppsConfig {
    fn default() -> Self {
        Self {
            status: true,
            counter: true,
        }
    }
}

impl AppsConfig {
    /// Read the `[apps]` table of a node config.
    pub fn from_table(table: &toml::Table) -> Result<Self, troupe::Error> {
        toml::Value::Table(table.clone())
            .try_into()
            .map_err(|e| troupe::Error::Config(format!("apps: {e}")))
    }
}

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
}
remote_message!(GetStatus, "troupe.status.get", NodeStatus);

/// Add to the counter; answers the new value.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Add(pub i64);
remote_message!(Add, "troupe.counter.add", i64);

/// Read the counter.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Get;
remote_message!(Get, "troupe.counter.get", i64);

/// Ask this node's counter to add `amount` to the counter on `node` and
/// answer what that node replied: actor-to-actor traffic across nodes.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Forward {
    /// The node whose counter to ask.
    pub node: String,
    /// How much to add.
    pub amount: i64,
}
remote_message!(Forward, "troupe.counter.forward", Result<i64, String>);

/// The status app.
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
            }
        })
    }
}

/// The counter app.
pub struct Counter {
    node: Node,
    value: i64,
}

impl Actor for Counter {
    type Context = Context<Self>;
}

impl Handler<Add> for Counter {
    type Result = i64;
    fn handle(&mut self, m: Add, _: &mut Context<Self>) -> i64 {
        self.value += m.0;
        self.value
    }
}

impl Handler<Get> for Counter {
    type Result = i64;
    fn handle(&mut self, _: Get, _: &mut Context<Self>) -> i64 {
        self.value
    }
}

impl Handler<Forward> for Counter {
    type Result = ResponseFuture<Result<i64, String>>;
    fn handle(&mut self, m: Forward, _: &mut Context<Self>) -> Self::Result {
        let target = self.node.lookup::<Add>(&format!("{}/{COUNTER}", m.node));
        Box::pin(async move {
            let target = target.map_err(|e| e.to_string())?;
            target
                .ask(Add(m.amount))
                .timeout(Duration::from_secs(2))
                .await
                .map_err(|e| e.to_string())
        })
    }
}

/// Start the apps `config` asks for on `node`.
pub async fn start_apps(
    node: &Node,
    fd: Option<FailureDetectorHandle>,
    config: &AppsConfig,
) -> Result<(), troupe::Error> {
    if config.status {
        let n = node.clone();
        node.spawn(
            ActorSpec::new(STATUS, move || Status {
                node: n.clone(),
                fd: fd.clone(),
            })
            .handles::<GetStatus>(),
        )
        .await?;
    }
    if config.counter {
        let n = node.clone();
        node.spawn(
            ActorSpec::new(COUNTER, move || Counter {
                node: n.clone(),
                value: 0,
            })
            .handles::<Add>()
            .handles::<Get>()
            .handles::<Forward>(),
        )
        .await?;
    }
    Ok(())
}
