//! The sample applications a `troupe node` can run, chosen in the `[apps]`
//! table of its config:
//!
//! ```toml
//! [apps]
//! status = true                 # default: answers GetStatus (membership, detector, leader, stats)
//! counter = true                # default: a counter to exercise tell / ask across nodes
//! election = "bully"            # optional: run leader election ("bully", "ring", "next-in-line")
//! members = ["n1", "n2", "n3"]  # who takes part in election and lock (default: this node + all peers)
//!
//! [apps.lock]                   # optional: a worker that takes a distributed lock in a loop
//! resource = "ledger"
//! algorithm = "ricart-agrawala" # "centralized", "ricart-agrawala", "token-ring", "lamport"
//! audit = "ctl/audit"           # optional: an actor told of every entry and exit (see Audit)
//! hold_ms = 20                  # how long each critical section lasts
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
use troupe::protocols::election::ElectionAlgorithm;
use troupe::protocols::mutex::MutexAlgorithm;

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
    /// Run leader election with this algorithm (default: none).
    pub election: Option<ElectionAlgorithm>,
    /// Members of the election and the lock (default: this node and all peers).
    pub members: Option<Vec<String>>,
    /// Run a lock worker (default: none).
    pub lock: Option<LockAppConfig>,
}

/// The `[apps.lock]` table.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LockAppConfig {
    /// The resource's name.
    pub resource: String,
    /// The mutual-exclusion algorithm.
    pub algorithm: MutexAlgorithm,
    /// An actor path told (asked) of every entry and exit, e.g. `"ctl/audit"`.
    #[serde(default)]
    pub audit: Option<String>,
    /// Length of each critical section in ms (default 20).
    #[serde(default = "default_hold_ms")]
    pub hold_ms: u64,
}

fn default_hold_ms() -> u64 {
    20
}

impl Default for AppsConfig {
    fn default() -> Self {
        Self {
            status: true,
            counter: true,
            election: None,
            members: None,
            lock: None,
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

    /// Checks the table against the node's config: every name in `members`
    /// must be this node (`this`) or one of its configured `peers` (a node
    /// can only reach its peers), and appear once.
    pub fn validate(&self, this: &str, peers: &[String]) -> Result<(), troupe::Error> {
        let mut seen = std::collections::BTreeSet::new();
        for (i, m) in self.members.iter().flatten().enumerate() {
            if m != this && !peers.contains(m) {
                return Err(troupe::Error::Config(format!(
                    "apps.members[{i}]: {m:?} is neither this node nor one of its [[peers]]"
                )));
            }
            if !seen.insert(m) {
                return Err(troupe::Error::Config(format!(
                    "apps.members[{i}]: {m:?} is listed twice"
                )));
            }
        }
        Ok(())
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
    /// The election term and leader this node knows (when it runs an election).
    pub leader: Option<(u64, Option<String>)>,
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
    election: Option<LeaderElection>,
}

impl Actor for Status {
    type Context = Context<Self>;
}

impl Handler<GetStatus> for Status {
    type Result = ResponseFuture<NodeStatus>;
    fn handle(&mut self, _: GetStatus, _: &mut Context<Self>) -> Self::Result {
        let node = self.node.clone();
        let fd = self.fd.clone();
        let leader = self.election.as_ref().map(|e| {
            let l = e.current();
            (l.term, l.leader)
        });
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
                leader,
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

/// A lock worker reports entering its critical section (asked, so that the
/// auditor sees entries and exits in causal order).
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Enter {
    /// The resource.
    pub resource: String,
    /// The fencing token of the grant.
    pub token: u64,
}
remote_message!(Enter, "troupe.lock.enter", ());

/// A lock worker reports leaving its critical section.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Exit {
    /// The resource.
    pub resource: String,
    /// The fencing token of the grant.
    pub token: u64,
}
remote_message!(Exit, "troupe.lock.exit", ());

/// Start the apps `config` asks for on `node` (with the node's peers, for
/// the default member list). Returns the election, if one was started.
pub async fn start_apps(
    node: &Node,
    fd: Option<FailureDetectorHandle>,
    config: &AppsConfig,
) -> Result<Option<LeaderElection>, troupe::Error> {
    start_apps_with_peers(node, fd, config, &[]).await
}

/// [`start_apps`] with the configured peers (the default members).
pub async fn start_apps_with_peers(
    node: &Node,
    fd: Option<FailureDetectorHandle>,
    config: &AppsConfig,
    peers: &[String],
) -> Result<Option<LeaderElection>, troupe::Error> {
    let members = config.members.clone().unwrap_or_else(|| peers.to_vec());
    let election = match config.election {
        Some(algorithm) => Some(start_election(node, algorithm, &members).await?),
        None => None,
    };
    if let Some(election) = &election {
        // The election's outcome, where an operator looks: the node's log.
        let mut changes = election.watch();
        let name = node.name().to_string();
        actix_rt::spawn(async move {
            while changes.changed().await.is_ok() {
                let l = changes.borrow_and_update().clone();
                match l.leader {
                    Some(leader) => {
                        tracing::info!(node = %name, term = l.term, %leader, "leader elected")
                    }
                    None => tracing::info!(node = %name, term = l.term, "no leader; electing"),
                }
            }
        });
    }
    if config.status {
        let (n, election) = (node.clone(), election.clone());
        node.spawn(
            ActorSpec::new(STATUS, move || Status {
                node: n.clone(),
                fd: fd.clone(),
                election: election.clone(),
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
    if let Some(lock) = &config.lock {
        let dl = start_lock(node, &lock.resource, lock.algorithm, &members).await?;
        let audit = match &lock.audit {
            Some(path) => Some((
                node.lookup::<Enter>(path)
                    .map_err(|e| troupe::Error::Config(format!("apps.lock.audit: {e}")))?,
                node.lookup::<Exit>(path)
                    .map_err(|e| troupe::Error::Config(format!("apps.lock.audit: {e}")))?,
            )),
            None => None,
        };
        let hold = Duration::from_millis(lock.hold_ms);
        let node = node.clone();
        actix_rt::spawn(async move {
            while !node.is_stopped() {
                let Ok(guard) = dl.acquire_within(Duration::from_secs(10)).await else {
                    tokio::time::sleep(Duration::from_millis(100)).await;
                    continue;
                };
                let token = guard.fencing_token();
                let resource = dl.resource().to_string();
                if let Some((enter, _)) = &audit {
                    let _ = enter
                        .ask(Enter {
                            resource: resource.clone(),
                            token,
                        })
                        .timeout(Duration::from_secs(2))
                        .await;
                }
                tokio::time::sleep(hold).await;
                if let Some((_, exit)) = &audit {
                    let _ = exit
                        .ask(Exit { resource, token })
                        .timeout(Duration::from_secs(2))
                        .await;
                }
                guard.release().await;
                tokio::time::sleep(hold).await;
            }
        });
    }
    Ok(election)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn apps(text: &str) -> AppsConfig {
        AppsConfig::from_table(&text.parse::<toml::Table>().expect("toml")).expect("apps")
    }

    #[test]
    fn members_must_be_this_node_or_configured_peers() {
        let peers = vec!["node-b".to_string(), "node-c".to_string()];
        apps("election = \"bully\"\nmembers = [\"node-a\", \"node-b\", \"node-c\"]")
            .validate("node-a", &peers)
            .expect("this node and its peers");
        apps("")
            .validate("node-a", &peers)
            .expect("default members");
        for (members, bad) in [
            ("[\"node-a\", \"node b\"]", "apps.members[1]: \"node b\""),
            ("[\"node-a\", \"node-d\"]", "apps.members[1]: \"node-d\""),
            (
                "[\"node-b\", \"node-b\"]",
                "apps.members[1]: \"node-b\" is listed twice",
            ),
        ] {
            let err = apps(&format!("members = {members}"))
                .validate("node-a", &peers)
                .expect_err(members)
                .to_string();
            assert!(err.contains(bad), "{members}: {err}");
        }
    }
}
