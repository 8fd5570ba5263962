//! # troupe-transports: how Troupe nodes reach each other
//!
//! Two implementations of [`troupe_framework::transport::Transport`]:
//!
//! - [`sim`] — a deterministic in-process network with seeded faults
//!   (loss, duplication, delay, reordering, partitions, crash/restart) under
//!   virtual time, where every protocol is tested;
//! - [`quic`] — QUIC (quinn + rustls) with mutual TLS between real processes
//!   and hosts; [`certs`] makes and loads the cluster CA and node certificates;
//!   [`ports`] picks listen ports for local clusters and tests.
//!
//! Protocols never name a transport: the same code runs on both.

pub mod certs;
pub mod ports;
pub mod quic;
pub mod sim;
