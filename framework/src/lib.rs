//! # troupe-framework: the actor runtime of Troupe
//!
//! Troupe runs distributed protocols as supervised actix actors that talk
//! across nodes. This crate is the runtime every other crate stands on:
//!
//! | module | what it is |
//! |---|---|
//! | [`ids`] | [`NodeId`] (name + incarnation) and [`ActorPath`] (`node/actor`) |
//! | [`codec`] | the one wire codec: versioned, size-limited msgpack [`codec::Envelope`]s |
//! | [`remote`] | remote-capable messages ([`RemoteMessage`], [`remote_message!`]) |
//! | [`remote_ref`] | [`RemoteRef`]: location-transparent `tell` / `ask` |
//! | [`reliable`] | reliable point-to-point channels: exactly once, in order, flow-controlled ([`reliable::ReliableSender`], [`reliable::ReliableReceiver`]) |
//! | [`rpc`] | the RPC stub: correlation ids, deadlines, retries, at-most-once dedup |
//! | [`node`] | the [`Node`]: registry, inbound dispatch with back-pressure, membership |
//! | [`supervision`] | supervision trees: one-for-one / one-for-all / rest-for-one, intensity, back-off, escalation, events, tree snapshots |
//! | [`clock`] | Lamport and vector clocks |
//! | [`membership`] | the membership view, its events, the [`membership::FailureDetector`] trait |
//! | [`metrics`] | the node's metrics: its own Prometheus registry, per-message counters, what is read when scraped |
//! | [`sansio`] | the shape of every protocol core: inputs in, [`sansio::Outputs`] out |
//! | [`transport`] | the boundary to the network ([`transport::Transport`]) |
//! | [`config`] | [`NodeConfig`] from TOML, every field defaulted |
//! | [`storage`] | the node's durable store (redb, group commit) for protocol state and logs |
//! | [`trace`] | JSON-lines traces for space-time diagrams |
//! | [`receptionist`], [`pubsub`], [`reliable_pubsub`], [`death_watch`] | cluster-wide discovery, topic pub/sub (at most once, or exactly once in order per publisher), remote death-watch |
//! | [`live`] | the live tap on a node's traffic, for the dashboard |
//!
//! A minimal remote-capable actor:
//!
//! ```
//! use actix::prelude::*;
//! use serde::{Deserialize, Serialize};
//! use troupe_framework::{remote_message, supervision::ActorSpec};
//!
//! #[derive(Debug, Serialize, Deserialize)]
//! struct Add(i64);
//! remote_message!(Add, "counter.add", i64);
//!
//! #[derive(Default)]
//! struct Counter(i64);
//! impl Actor for Counter { type Context = Context<Self>; }
//! impl Handler<Add> for Counter {
//!     type Result = i64;
//!     fn handle(&mut self, m: Add, _: &mut Context<Self>) -> i64 { self.0 += m.0; self.0 }
//! }
//!
//! let spec = ActorSpec::new("counter", Counter::default).handles::<Add>();
//! # let _ = spec;
//! ```

pub mod clock;
pub mod codec;
pub mod config;
pub mod death_watch;
pub mod dispatch;
pub mod error;
pub mod ids;
pub mod inbox;
pub mod live;
pub mod membership;
pub mod metrics;
pub mod node;
pub mod pubsub;
pub mod receptionist;
pub mod registry;
pub mod reliable;
pub mod reliable_pubsub;
pub mod remote;
pub mod remote_ref;
mod reply;
pub mod rpc;
pub mod sansio;
pub mod storage;
pub mod supervision;
pub mod trace;
pub mod transport;

pub use actix;
pub use clock::{ClockOrdering, LamportClock, LamportStamp, VectorClock};
pub use config::{NodeConfig, NodeOptions, RetryPolicy};
pub use error::{AskError, NodeError, TellError};
pub use ids::{ActorPath, NodeId};
pub use node::{Node, NodeBuilder};
pub use remote::{RemoteMessage, Sender};
pub use remote_ref::{ActorHandle, RemoteRef};
pub use supervision::{
    ActorSpec, ChildState, ExitReason, GiveUp, OrFail, Restart, Strategy, SupervisionEvent,
    SupervisionEventKind, SupervisorPolicy, SupervisorRef, SupervisorSpec, TreeKind, TreeNode,
};
