//! Leader election: a typed API over the election family.
//!
//! ```ignore
//! let election = start_election(&node, ElectionAlgorithm::Bully, &members).await?;
//! let now = election.current();             // Leadership { term, leader }
//! let mut changes = election.watch();       // a tokio watch channel
//! changes.changed().await?;
//! ```
//!
//! Each election is one instance of the election family ([`ElectionFamily`],
//! started by [`crate::family`]): a driver actor named `election` on every
//! member, fed by the node's membership (the failure detector). Its term is
//! durable: made durable in the node's store before any message carrying it
//! is sent and before it is reported here, so terms only grow across
//! restarts. Safety: at most one leader per term; every node that knows a
//! leader for a term agrees on it. Under a partition bully and ring can
//! elect one leader per side — with different terms, so the rest of the
//! system can tell the stale one apart (see `troupe_protocols::election`).

use std::time::Duration;

use tokio::sync::watch;
use troupe_framework::Node;
pub use troupe_protocols::election::Leadership;
use troupe_protocols::election::{ElectionAlgorithm, ElectionConfig, ElectionFamily};
use troupe_protocols::family::Family;

use crate::family::{self, Instance};
use crate::Error;

/// The actor (and store namespace) name of the election.
pub const ELECTION_ACTOR: &str = "election";

/// A running election on this node. Cheap to clone.
#[derive(Clone)]
pub struct LeaderElection {
    instance: Instance<ElectionFamily>,
}

/// Start the election on this node among `members` (names of every node
/// taking part; this one is added if missing).
pub async fn start_election(
    node: &Node,
    algorithm: ElectionAlgorithm,
    members: &[String],
) -> Result<LeaderElection, Error> {
    start_election_with(node, algorithm, members, ElectionConfig::default()).await
}

/// [`start_election`] with explicit timing.
pub async fn start_election_with(
    node: &Node,
    algorithm: ElectionAlgorithm,
    members: &[String],
    config: ElectionConfig,
) -> Result<LeaderElection, Error> {
    let instance = family::start::<ElectionFamily>(node, "", algorithm, members, config).await?;
    Ok(LeaderElection { instance })
}

/// Every election running on `node` (actors `election` and
/// `election.<name>`), with the term and leader it knows, by actor name.
pub async fn running_elections(node: &Node) -> Vec<(String, Leadership)> {
    let mut out = Vec::new();
    for name in node.registry().names() {
        if name != ELECTION_ACTOR && !name.starts_with("election.") {
            continue;
        }
        let view = troupe_protocols::driver::invoke_named(
            node,
            &name,
            |core: &mut <ElectionFamily as Family>::Core, _, _| ElectionFamily::view(core),
        )
        .await;
        if let Ok(l) = view {
            out.push((name, l));
        }
    }
    out
}

impl LeaderElection {
    /// An election over a running election instance (from
    /// [`family::prepare`], when the election lives in an app's tree).
    pub fn new(instance: Instance<ElectionFamily>) -> Self {
        Self { instance }
    }

    /// The leadership as last reported by the core.
    pub fn current(&self) -> Leadership {
        self.instance.view()
    }

    /// A receiver that sees every change of term or leader.
    pub fn watch(&self) -> watch::Receiver<Leadership> {
        self.instance.watch()
    }

    /// Ask the core directly (term, leader).
    pub async fn query(&self) -> Result<Leadership, Error> {
        self.instance
            .invoke(|core, _, _| ElectionFamily::view(core))
            .await
    }

    /// Wait until a leader is known, at most `timeout`.
    pub async fn wait_for_leader(&self, timeout: Duration) -> Result<Leadership, Error> {
        self.instance
            .wait_for(|l| l.leader.is_some(), timeout)
            .await
    }

    /// The protocol instance underneath (its view, events and commands).
    pub fn instance(&self) -> &Instance<ElectionFamily> {
        &self.instance
    }
}
