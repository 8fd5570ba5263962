//! # troupe-apps: the `troupe` command and its sample applications
//!
//! - [`sample`]: the kinds of apps a node runs from its config (`status`,
//!   `counter`, `election`, `lock`, `crashtest`), each a supervised tree, and
//!   their messages;
//! - [`cli`]: `troupe certs init|issue`, `troupe node --config FILE`;
//! - [`demo`]: `troupe demo`, a real cluster over QUIC on 127.0.0.1;
//! - [`local_cluster`]: node processes on one machine, for the demo and tests.

pub mod cli;
pub mod demo;
pub mod local_cluster;
pub mod sample;
