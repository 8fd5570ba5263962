//! # troupe-protocols: coordination protocols as sans-IO cores in thin actors
//!
//! Every protocol here is a deterministic state machine implementing
//! [`troupe_framework::sansio::Protocol`], tested on a seeded simulator, and
//! run in production by the generic [`driver::Driver`] actor.
//!
//! - [`fd`]: failure detectors (heartbeat, phi-accrual, SWIM + Lifeguard).
pub mod driver;
pub mod fd;
