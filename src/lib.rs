//! # Troupe
//!
//! A distributed actor framework for Rust, built to run, test and *see*
//! distributed protocols. This crate is the facade: it re-exports
//!
//! - [`framework`] (`troupe-framework`): nodes, named actors, location-transparent
//!   `tell`/`ask`, supervision, clocks, membership;
//! - [`transports`] (`troupe-transports`): the simulated network and QUIC;
//! - [`protocols`] (`troupe-protocols`): failure detectors, locks, elections,
//!   atomic commit;
//!
//! and assembles real nodes from a config file ([`config::Config`],
//! [`runtime::start_node`]) with the failure detector the config names
//! ([`failure_detector`]), joining through seed nodes ([`join`]), with `[http]` the node's HTTP endpoint
//! ([`http`]) with its live dashboard ([`dashboard`]) and Prometheus
//! metrics ([`metrics`]), and applications
//! as supervised actor trees, declared in code or started from the config
//! ([`app`]). Typed protocol APIs: locks
//! ([`lock`]), leader election ([`leader`]), atomic commit ([`commit`]).
//! Cluster features: remote spawn ([`remote_spawn`]) and the cluster
//! singleton ([`singleton`]).
//!
//! Start with [`prelude`].

pub use troupe_framework as framework;
pub use troupe_protocols as protocols;
pub use troupe_transports as transports;

pub mod app;
pub mod broadcast;
pub mod commit;
pub mod config;
pub mod dashboard;
pub mod error;
pub mod failure_detector;
pub mod family;
pub mod http;
pub mod join;
pub mod leader;
pub mod lock;
pub mod metrics;
pub mod raft;
pub mod remote_spawn;
pub mod runtime;
pub mod singleton;

pub use error::Error;

/// The names most programs use.
pub mod prelude {
    pub use crate::app::{start_app, App, AppContext, AppKind, AppRegistry, AppSpec};
    pub use crate::broadcast::{start_broadcast, BroadcastGroup, Delivery};
    pub use crate::commit::{
        start_commit, AbortReason, CommitAlgorithm, CommitHandle, Outcome, ResourceManager,
        Transaction, TxId,
    };
    pub use crate::config::Config;
    pub use crate::leader::{start_election, LeaderElection, Leadership};
    pub use crate::lock::{start_lock, DistributedLock, LockGuard};
    pub use crate::raft::{start_raft, ProposeError, ReadError, Replica};
    pub use crate::remote_spawn::{start_spawner, SpawnError, SpawnKinds, SpawnRemote};
    pub use crate::runtime::{start_node, start_node_with, RunningNode, StartOptions};
    pub use crate::singleton::{start_singleton, Singleton, SingletonError, SingletonProxy};
    pub use troupe_framework::actix::prelude::*;
    pub use troupe_framework::membership::{MemberEvent, MemberStatus};
    pub use troupe_framework::{
        remote_message, ActorPath, ActorSpec, AskError, GiveUp, Node, NodeConfig, NodeId, OrFail,
        RemoteMessage, RemoteRef, Restart, RetryPolicy, Sender, Strategy, SupervisorPolicy,
        SupervisorSpec, TellError,
    };
    pub use troupe_protocols::broadcast::BroadcastAlgorithm;
    pub use troupe_protocols::election::ElectionAlgorithm;
    pub use troupe_protocols::mutex::MutexAlgorithm;
    pub use troupe_transports::sim::{run_virtual, FaultPlan, LinkFaults, SimCluster};
}
