//! Leader election: a typed API over the election cores.
//!
//! ```ignore
//! let election = start_election(&node, ElectionAlgorithm::Bully, &members).await?;
//! let now = election.current();             // Leadership { term, leader }
//! let mut changes = election.watch();       // a tokio watch channel
//! changes.changed().await?;
//! ```
//!
//! Each election is one [`Driver`](troupe_protocols::driver::Driver) actor
//! named `election` on every member, fed by the node's membership (the
//! failure detector). Its term is durable: written to the node's storage
//! before any message carrying it is sent, so terms only grow across
//! restarts. Safety: at most one leader per term; every node that knows a
//! leader for a term agrees on it. Under a partition bully and ring can
//! elect one leader per side — with different terms, so the rest of the
//! system can tell the stale one apart (see `troupe_protocols::election`).

use std::sync::Arc;
use std::time::Duration;

use tokio::sync::watch;
use troupe_framework::Node;
use troupe_protocols::driver::{spawn_driver, DriverHandle, DriverSpec, EventHook};
use troupe_protocols::election::{
    AnyElection, ElectionAlgorithm, ElectionConfig, ElectionCore, ElectionDurable, ElectionEvent,
};
use troupe_protocols::testkit::SimProtocol;

use crate::Error;

type Core = AnyElection<String>;

/// The actor (and storage key) name of the election.
pub const ELECTION_ACTOR: &str = "election";

/// Who leads, in which term.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Leadership {
    /// The term this node is in.
    pub term: u64,
    /// Its leader, if known.
    pub leader: Option<String>,
}

/// A running election on this node. Cheap to clone.
#[derive(Clone)]
pub struct LeaderElection {
    driver: DriverHandle<Core>,
    watch: watch::Receiver<Leadership>,
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
    let mut all: Vec<String> = members.to_vec();
    all.push(node.name().to_string());
    all.sort();
    all.dedup();
    let make = move |n: &Node| {
        let durable = match n.storage().get(ELECTION_ACTOR) {
            Ok(Some(bytes)) => rmp_serde::from_slice::<ElectionDurable<String>>(&bytes)
                .map_err(|e| tracing::error!(error = %e, "stored election state does not decode; starting fresh"))
                .ok(),
            Ok(None) => None,
            Err(e) => {
                tracing::error!(error = %e, "cannot read election state; starting fresh");
                None
            }
        };
        AnyElection::new(
            algorithm,
            n.name().to_string(),
            all.clone(),
            config,
            durable,
        )
    };
    let (tx, rx) = watch::channel(Leadership::default());
    let tx = Arc::new(tx);
    let hook = Arc::new(move || {
        let tx = tx.clone();
        let hook: EventHook<Core> =
            Box::new(move |_node: &Node, events: &[ElectionEvent<String>]| {
                if let Some(ElectionEvent::LeaderChanged { term, leader }) = events.last() {
                    let _ = tx.send(Leadership {
                        term: *term,
                        leader: leader.clone(),
                    });
                }
            });
        hook
    });
    let spec = DriverSpec::new(ELECTION_ACTOR, make)
        .membership()
        .hook(hook)
        .persist(ELECTION_ACTOR, |core: &Core| {
            rmp_serde::to_vec(&core.durable()).unwrap_or_default()
        });
    let driver = spawn_driver(node, spec).await?;
    Ok(LeaderElection { driver, watch: rx })
}

impl LeaderElection {
    /// The leadership as last reported by the core.
    pub fn current(&self) -> Leadership {
        self.watch.borrow().clone()
    }

    /// A receiver that sees every change of term or leader.
    pub fn watch(&self) -> watch::Receiver<Leadership> {
        self.watch.clone()
    }

    /// Ask the core directly (term, leader).
    pub async fn query(&self) -> Result<Leadership, Error> {
        Ok(self
            .driver
            .invoke(|core, _, _| Leadership {
                term: core.term(),
                leader: core.leader().cloned(),
            })
            .await?)
    }

    /// Wait until a leader is known, at most `timeout`.
    pub async fn wait_for_leader(&self, timeout: Duration) -> Result<Leadership, Error> {
        let mut rx = self.watch.clone();
        let wait = async {
            loop {
                let l = rx.borrow_and_update().clone();
                if l.leader.is_some() {
                    return Ok(l);
                }
                if rx.changed().await.is_err() {
                    return Err(Error::Protocol("election stopped".into()));
                }
            }
        };
        tokio::time::timeout(timeout, wait)
            .await
            .map_err(|_| Error::Timeout(timeout))?
    }
}
