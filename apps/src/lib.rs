//! # troupe-apps: the `troupe` command and its sample applications
//!
//! - [`sample`]: the kinds of apps a node runs from its config (`status`,
//!   `counter`, `election`, `lock`, `bank`, `chat`, `kv`, `crashtest`), each
//!   a supervised tree, and their messages;
//! - [`bank_cli`], [`chat_cli`], [`kv_cli`]: `troupe bank`, `troupe chat`,
//!   `troupe kv`, clients of those apps' HTTP routes;
//! - [`cli`]: `troupe certs init|issue`, `troupe node --config FILE`;
//! - [`check_cli`]: `troupe check`, the model checker over every protocol
//!   family;
//! - [`inspect`]: `troupe status` and `troupe tree`, over [`http_client`];
//! - [`cluster`]: `troupe cluster up|kill|stop|start|down`, a local cluster
//!   that outlives the command;
//! - [`dashboard_cli`]: `troupe dashboard`, the live dashboard served from
//!   the operator's machine;
//! - [`demo`]: `troupe demo`, a real cluster over QUIC on 127.0.0.1;
//! - [`local_cluster`]: node processes on one machine, for the demo and tests;
//! - [`trace_graph`], [`trace_view`], [`shiviz`]: `troupe trace view` (a
//!   space-time diagram as one HTML page) and `troupe trace shiviz` (a
//!   ShiViz log) of JSON-lines traces.

pub mod bank_cli;
pub mod chat_cli;
pub mod check_cli;
pub mod cli;
pub mod cluster;
pub mod dashboard_cli;
pub mod demo;
pub mod http_client;
pub mod inspect;
pub mod kv_cli;
pub mod local_cluster;
pub mod sample;
pub mod shiviz;
pub mod trace_graph;
pub mod trace_view;
