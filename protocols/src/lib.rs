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
//! - [`election`]: leader election (bully, ring, next-in-line).
pub mod driver;
pub mod election;
pub mod fd;
pub mod mutex;
pub mod testkit;
