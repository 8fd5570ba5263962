//! # troupe-protocols: coordination protocols as sans-IO cores in thin actors
//!
//! Every protocol here is a deterministic state machine implementing
//! [`troupe_framework::sansio::Protocol`], tested on a seeded simulator
//! ([`testkit`] for coordination, [`fd::sim`] for detectors at scale), and run
//! in production by the generic [`driver::Driver`] actor.
//!
//! - [`fd`]: failure detectors (heartbeat, phi-accrual, SWIM + Lifeguard);
//! - [`mutex`]: distributed mutual exclusion (centralized, Ricart–Agrawala,
//!   token ring, Lamport);
//! - [`election`]: leader election (bully, ring, next-in-line);
//! - [`commit`]: atomic commit (two-phase with presumed abort or nothing,
//!   three-phase with a termination protocol);
//! - [`broadcast`]: group communication (eager reliable, FIFO and causal
//!   broadcast, layered on one reliable engine);
//! - [`group`]: what their cores share: the group's members and live set
//!   ([`group::Group`]) and an election's terms ([`group::Terms`]);
//! - [`family`]: what every family shares (algorithm names, the `Any*`
//!   run-time choice, the [`family::Family`] trait the typed APIs start),
//!   and the guide to writing a new family.
pub mod broadcast;
pub mod commit;
pub mod driver;
pub mod election;
pub mod family;
pub mod fd;
pub mod group;
pub mod mutex;
pub mod raft;
pub mod testkit;

/// What a protocol needs of a member id: ordered (ranks, rings, tie
/// breaks), printable, and storable (cores that persist ids, such as an
/// election's successor list). Node names (`String`) and test ids (`u32`)
/// are member ids.
pub trait MemberId:
    Clone + Ord + std::fmt::Debug + serde::Serialize + serde::de::DeserializeOwned
{
}

impl<T> MemberId for T where
    T: Clone + Ord + std::fmt::Debug + serde::Serialize + serde::de::DeserializeOwned
{
}
