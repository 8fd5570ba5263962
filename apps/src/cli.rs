//! The `troupe` command line.
//!
//! ```text
//! troupe certs init  --dir DIR [--days N]    create a cluster CA (DIR/ca.pem, DIR/ca.key)
//! troupe certs issue --dir DIR --node NAME [--days N] [--renew]
//!                                            issue DIR/NAME.pem and DIR/NAME.key, signed by the CA
//! troupe node --config FILE                  run one node until SIGINT / SIGTERM
//! troupe status --node URL [--token T] [--ca F --cert F --key F [--server-name N]]
//!                                            a node's status table (GET URL/v1/status)
//! troupe tree --node URL [...]               a node's supervision tree (GET URL/v1/tree)
//! troupe commit in-doubt --node URL [...]    transactions in doubt on a node (GET URL/v1/commit/in-doubt)
//! troupe bank transfer|accounts --node URL ...   the bank app's client
//! troupe chat --node URL --room ROOM [--once]  the chat app's client
//! troupe kv get|put|cas|del|cluster --node URL ...  the kv app's client
//! troupe cluster up --nodes N --apps A,B --dir DIR [--detector D]
//! troupe cluster kill|stop|start --dir DIR NODE
//! troupe cluster down --dir DIR [--clean]    a local cluster of node processes (see `cluster`)
//! troupe demo                                a 3-node cluster over QUIC on 127.0.0.1, narrated
//! troupe trace check [--causal] [--total] FILE...
//!                                            check broadcast order in JSON-lines traces
//! troupe trace view FILE... [-o out.html] [--axis auto|time|logical]
//!                                            a space-time diagram (one self-contained HTML page)
//! troupe trace shiviz FILE... [-o out.log]   the traces as a ShiViz log
//! troupe trace jsonl FILE... [-o out.jsonl]  binary traces as JSON lines
//! troupe check --list | FAMILY [--algorithm A] [--mutation M] [bounds] [--trace FILE]
//!                                            model-check a protocol (see `check_cli`)
//! ```
//!
//! Logs go through `tracing` to stdout, coloured only on a terminal; set
//! `RUST_LOG` (default `info` for `node`, `warn` for `demo`). Keys are
//! written with owner-only permissions, and `node` refuses to start with a
//! key others can read, or with a certificate that does not chain to its CA
//! or name the node, or that has expired (it warns from 30 days before, then
//! twice a day); these checks are the library's (`troupe::runtime`), so an
//! app that embeds Troupe gets the same messages. A start-up error exits
//! with code 1 (configuration errors name the config file, the line and
//! the key); SIGINT / SIGTERM make a node leave its
//! group and exit 0. Bad arguments exit with code 2 (clap's usage errors,
//! and those `troupe check` finds).

use std::io::IsTerminal;
use std::path::PathBuf;
use std::time::Duration;

use clap::{Parser, Subcommand};
use troupe::config::Config;
use troupe::runtime::{start_node_with, StartOptions, Stopped};
use troupe::transports::certs::{format_utc, Validity};
use troupe::transports::quic::CertificateExpiry;

use troupe::app::ClusterInfo;

/// Troupe: a distributed actor framework for running, testing and watching
/// distributed protocols.
#[derive(Debug, Parser)]
#[command(name = "troupe", version, after_help = DEPLOY_HELP)]
pub struct Cli {
    /// What to do.
    #[command(subcommand)]
    pub command: Command,
}

/// The subcommands.
#[derive(Debug, Subcommand)]
pub enum Command {
    /// Create or use cluster certificates.
    Certs {
        /// init or issue.
        #[command(subcommand)]
        action: CertsAction,
    },
    /// Run one node from its config file until SIGINT or SIGTERM.
    ///
    /// The TOML file names the node (`name`, the name its certificate was
    /// issued for), its UDP `listen` address, its `[[peers]]` (name and
    /// host:port), its `[tls]` files (paths relative to the config file) and
    /// its `[failure_detector]`; see README.md and examples/configs/. Before
    /// starting, the TLS files are checked: the key must be readable by its
    /// owner only, the certificate must be signed by the CA and name this
    /// node.
    ///
    /// The apps to run are `[apps.NAME]` tables (`kind = "..."` and the
    /// kind's settings: status, counter, election, lock, crashtest, bank,
    /// chat, kv); status and counter run by default. Each app is a
    /// supervised tree; see README.md, "Apps as supervised trees".
    ///
    /// Logs go to stdout; RUST_LOG sets the level (default info). On SIGINT or
    /// SIGTERM the node leaves the group (its peers see it Left) and exits 0;
    /// a configuration or start-up error exits 1, and so does a node whose
    /// supervision gave up (a failure escalated to the node).
    Node {
        /// The node's TOML config file.
        #[arg(long, short)]
        config: PathBuf,
    },
    /// Print a node's status: membership as it sees it (status, phi,
    /// incarnation per member), apps, leaders, counters.
    ///
    /// Reads GET URL/v1/status from the node's HTTP endpoint (the `[http]`
    /// table of its config). A node with `[http] client_certs = true`
    /// speaks HTTPS only and wants a client certificate from its cluster
    /// CA: pass https://HOST:PORT with --ca, --cert and --key (an
    /// operator's certificate: `troupe certs issue --node ops`).
    Status {
        /// Where the node is, and how to prove who we are.
        #[command(flatten)]
        endpoint: EndpointArgs,
    },
    /// Print a node's supervision tree, pstree-like (GET URL/v1/tree).
    ///
    /// The same options as `troupe status`, https:// included.
    Tree {
        /// Where the node is, and how to prove who we are.
        #[command(flatten)]
        endpoint: EndpointArgs,
    },
    /// Atomic commit: `troupe commit in-doubt --node URL` lists the
    /// transactions in doubt on a node (GET URL/v1/commit/in-doubt).
    Commit {
        /// in-doubt.
        #[command(subcommand)]
        action: CommitAction,
    },
    /// The bank sample app's client: `troupe bank transfer --node URL FROM
    /// TO AMOUNT`, `troupe bank accounts --node URL`.
    Bank {
        /// transfer or accounts.
        #[command(subcommand)]
        action: BankAction,
    },
    /// The chat sample app's client: `troupe chat --node URL --room ROOM`
    /// shows the room's messages as the node delivers them (replies and
    /// messages that waited in the hold-back queue marked) and posts the
    /// lines typed; `/reply ID TEXT` answers a message, `/quit` leaves.
    Chat {
        /// Where the node is, and how to prove who we are.
        #[command(flatten)]
        endpoint: EndpointArgs,
        /// The room (letters, digits, '.', '_', '-').
        #[arg(long)]
        room: String,
        /// Print the room's messages and exit.
        #[arg(long)]
        once: bool,
    },
    /// The kv sample app's client: `troupe kv get|put|cas|del --node URL
    /// KEY [VALUE]`, `troupe kv cluster --node URL`. Any node serves any
    /// request; a write answered "not applied" can be sent again, one whose
    /// outcome is unknown may or may not have been applied
    /// (`--idempotency-key CLIENT:SEQ` makes it apply at most once).
    Kv {
        /// get, put, cas, del or cluster.
        #[command(subcommand)]
        action: crate::kv_cli::KvCliAction,
    },
    /// A local cluster of node processes for development and tests, that
    /// outlives the command: up, kill, stop, start, down.
    Cluster {
        /// up, kill, stop, start or down.
        #[command(subcommand)]
        action: crate::cluster::ClusterAction,
    },
    /// Start a 3-node cluster over QUIC on 127.0.0.1 with throwaway
    /// certificates, exchange tells and asks, stop a node, watch the others
    /// notice, bring it back, and exit.
    Demo {
        /// Keep the demo's working directory (configs, certificates, logs).
        #[arg(long)]
        keep: bool,
        /// Failure detector the demo nodes run.
        #[arg(long, default_value = "phi-accrual", value_parser = ["heartbeat", "phi-accrual", "swim"])]
        detector: String,
    },
    /// Model-check a protocol family: search every order of its events,
    /// with faults within bounds, for the shortest path that breaks a
    /// property.
    ///
    /// `troupe check --list` shows each family's model, algorithms,
    /// default size and bounds, and the mutations (deliberately broken
    /// variants) it can run with; options not given take those defaults
    /// (the test suite's). Prints the states explored, the depth reached,
    /// the time and the verdict. Exits 0 when no property broke within the
    /// bounds (saying whether the search was exhaustive or stopped at the
    /// depth or state bound), 1 on a violation (its steps printed, and
    /// written as JSON lines to --trace), 2 on bad arguments.
    Check(crate::check_cli::CheckArgs),
    /// Serve the live cluster dashboard from this machine, reading a node's
    /// HTTP endpoint (for nodes with `[http] dashboard = false`, or behind
    /// a token or client certificates the browser does not have).
    ///
    /// Open the URL it prints. Repeat --node to fall back on other nodes
    /// when one stops answering.
    Dashboard(crate::dashboard_cli::DashboardArgs),
    /// Traces: `troupe trace check [--causal] [--total] FILE...` checks the
    /// broadcast deliveries recorded in JSON-lines traces; `troupe trace
    /// view FILE... -o out.html` draws them as a space-time diagram;
    /// `troupe trace shiviz FILE...` writes them as a ShiViz log.
    Trace {
        /// check, view or shiviz.
        #[command(subcommand)]
        action: TraceAction,
    },
}

/// `troupe trace ...`.
#[derive(Debug, clap::Subcommand)]
pub enum TraceAction {
    /// Check the broadcast deliveries (`"ev":"delivered"` lines) of
    /// JSON-lines traces, from the simulator or from nodes: no node
    /// delivers a message twice and, if asked, causal and total order hold
    /// (per broadcast instance, each node's deliveries in the order of the
    /// lines). The files are read as one trace, in the order given (one per
    /// node, say). Prints a summary, or the first violation (naming the
    /// node, the messages and the line) and exits 1.
    Check {
        /// Check causal order from the vector stamps (FIFO included).
        #[arg(long)]
        causal: bool,
        /// Check that every two nodes deliver their common messages in the
        /// same order.
        #[arg(long)]
        total: bool,
        /// The trace files (JSON lines or binary).
        #[arg(required = true)]
        files: Vec<PathBuf>,
    },
    /// Draw JSON-lines traces (from the simulator, from nodes' `[trace]
    /// file`s, from `troupe check --trace`) as a space-time diagram: one HTML
    /// file that opens without a network. One lane per node, an arrow per
    /// message from send to delivery (lost ones dashed, ending in a cross),
    /// marks for timers, syncs, supervision, broadcast deliveries, notes,
    /// crashes and restarts; hover for details, wheel to zoom, drag to
    /// pan, filters by protocol, message type and node, click an event for
    /// its causal past and future. Several files (one per node, say) are
    /// merged: a message is matched by its sender and `seq`.
    View {
        /// Where to write the page.
        #[arg(short, long, default_value = "trace.html")]
        output: PathBuf,
        /// The axis it opens with: `time` (`t_us`), `logical`
        /// (happened-before order: no arrow goes backwards), or `auto` (logical for
        /// several nodes' wall-clock files with messages between them, a
        /// frozen clock or a model checker's counterexample; else time).
        #[arg(long, value_enum, default_value = "auto")]
        axis: crate::trace_view::Axis,
        /// The trace files (JSON lines or binary).
        #[arg(required = true)]
        files: Vec<PathBuf>,
    },
    /// Write traces as JSON lines, one event per line, as the simulator
    /// writes them: a binary trace (`[trace] format = "binary"`) decoded, a
    /// JSON-lines file as it is. Several files are written one after the
    /// other, in the order given.
    Jsonl {
        /// Where to write the lines (default: standard output).
        #[arg(short, long)]
        output: Option<PathBuf>,
        /// The trace files (JSON lines or binary).
        #[arg(required = true)]
        files: Vec<PathBuf>,
    },
    /// Write JSON-lines traces as a log for ShiViz (a space-time diagram
    /// viewer): its parser expression on the first line, then per event
    /// its text and `host {vector clock}`, the clocks computed from the
    /// messages' sends and deliveries. Open the file in ShiViz's input page.
    Shiviz {
        /// Where to write the log (default: standard output).
        #[arg(short, long)]
        output: Option<PathBuf>,
        /// The trace files (JSON lines or binary).
        #[arg(required = true)]
        files: Vec<PathBuf>,
    },
}

/// `troupe commit ...`.
#[derive(Debug, clap::Subcommand)]
pub enum CommitAction {
    /// List the transactions in doubt on a node: those it voted yes on (or
    /// coordinates) without knowing the decision yet. They resolve by
    /// themselves once the failure heals.
    ///
    /// The same options as `troupe status`, https:// included.
    InDoubt {
        /// Where the node is, and how to prove who we are.
        #[command(flatten)]
        endpoint: EndpointArgs,
    },
}

/// `troupe bank ...`.
#[derive(Debug, clap::Subcommand)]
pub enum BankAction {
    /// Transfer AMOUNT from account FROM to account TO, coordinated by the
    /// node (POST URL/v1/bank/transfer). Exits non-zero unless it committed.
    Transfer {
        /// Where the node is, and how to prove who we are.
        #[command(flatten)]
        endpoint: EndpointArgs,
        /// The account debited (acct-N).
        from: String,
        /// The account credited (acct-N).
        to: String,
        /// How much.
        amount: u64,
    },
    /// Every balance and the total, read as one read-only transaction
    /// (GET URL/v1/bank/accounts).
    Accounts {
        /// Where the node is, and how to prove who we are.
        #[command(flatten)]
        endpoint: EndpointArgs,
    },
}

/// A node's HTTP endpoint and the client's credentials (`troupe status`,
/// `troupe tree`, `troupe commit in-doubt`).
#[derive(Debug, Clone, clap::Args)]
pub struct EndpointArgs {
    /// The node's HTTP endpoint: http://HOST:PORT (its `[http] listen`),
    /// or https://HOST:PORT for a node with `[http] client_certs = true`.
    #[arg(long)]
    pub node: String,
    /// The client's credentials.
    #[command(flatten)]
    pub auth: ClientAuthArgs,
}

/// What a client of a node's HTTP endpoint proves itself with: the
/// node's token, and for an https:// endpoint a certificate of the
/// cluster CA.
#[derive(Debug, Clone, Default, clap::Args)]
pub struct ClientAuthArgs {
    /// The node's `[http]` token, if it has one.
    #[arg(long, env = "TROUPE_HTTP_TOKEN")]
    pub token: Option<String>,
    /// https:// only: the cluster CA certificate (PEM, e.g. certs/ca.pem).
    /// The node's certificate must chain to it.
    #[arg(long, value_name = "FILE")]
    pub ca: Option<PathBuf>,
    /// https:// only: the client certificate (PEM) the node checks against
    /// its cluster CA: one issued for the operator (`troupe certs issue
    /// --dir certs --node ops`) or a node's own.
    #[arg(long, value_name = "FILE")]
    pub cert: Option<PathBuf>,
    /// https:// only: the private key of --cert (PEM).
    #[arg(long, value_name = "FILE")]
    pub key: Option<PathBuf>,
    /// https:// only: the node name the node's certificate must carry.
    /// Default: the URL's host when it is a name (https://node-a:8443); with
    /// an IP address, any certificate of the cluster CA is taken (node
    /// certificates name nodes, not addresses), so pass the node's name to
    /// pin it.
    #[arg(long, value_name = "NAME")]
    pub server_name: Option<String>,
}

impl ClientAuthArgs {
    /// The client's TLS files and server name, if any TLS option was
    /// given; an error names the ones missing.
    pub fn client_tls(&self) -> Result<Option<crate::http_client::ClientTls>, CliError> {
        match (&self.ca, &self.cert, &self.key) {
            (None, None, None) if self.server_name.is_none() => Ok(None),
            (Some(ca), Some(cert), Some(key)) => Ok(Some(crate::http_client::ClientTls {
                files: troupe::http::tls::ClientTlsFiles {
                    ca: ca.clone(),
                    cert: cert.clone(),
                    key: key.clone(),
                },
                server_name: self.server_name.clone(),
            })),
            (ca, cert, key) => {
                let missing: Vec<&str> = [("--ca", ca), ("--cert", cert), ("--key", key)]
                    .into_iter()
                    .filter(|(_, v)| v.is_none())
                    .map(|(flag, _)| flag)
                    .collect();
                Err(CliError::Other(format!(
                    "an https:// endpoint needs --ca, --cert and --key together; missing: {}",
                    missing.join(", ")
                )))
            }
        }
    }
}

/// The usual sequence, shown under `troupe --help`.
const DEPLOY_HELP: &str = "\
Deploying a cluster (README.md, \"Deploying a cluster across hosts\"):
  troupe certs init  --dir certs                 once, on a trusted machine
  troupe certs issue --dir certs --node node-a   once per node
  troupe node --config node-a.toml               on each node's host
Try it on one machine first: troupe demo, or
  troupe cluster up --nodes 3 --apps counter --dir /tmp/c   (then troupe status --node URL)";

/// `troupe certs ...`
#[derive(Debug, Subcommand)]
pub enum CertsAction {
    /// Create a cluster CA: DIR/ca.pem and DIR/ca.key (refuses to overwrite).
    ///
    /// Every node gets a copy of ca.pem. ca.key (written owner-only) signs
    /// node certificates: keep it on this machine, never on the nodes. DIR is
    /// created if missing; an existing CA is never overwritten.
    Init {
        /// Directory for the CA files (created if missing).
        #[arg(long)]
        dir: PathBuf,
        /// Days the CA is valid. Node certificates never outlive it; when it
        /// expires, every node needs a certificate from a new CA.
        #[arg(long, default_value_t = troupe::transports::certs::DEFAULT_CA_DAYS)]
        days: u32,
    },
    /// Issue a node certificate signed by the CA in DIR: DIR/NAME.pem, DIR/NAME.key.
    ///
    /// Copy NAME.pem, NAME.key (written owner-only; keep it so: `troupe node`
    /// refuses a key others can read) and ca.pem to the node's host. Existing
    /// files are never overwritten, unless --renew.
    ///
    /// A node warns from 30 days before its certificate expires; renew it with
    /// --renew, copy the two files over the old ones and restart the node
    /// (peers need nothing: same CA).
    Issue {
        /// Directory holding ca.pem and ca.key (made by `troupe certs init`).
        #[arg(long)]
        dir: PathBuf,
        /// The node name, exactly as `name` in its config (letters, digits,
        /// '-' and '.'; it becomes the certificate's DNS subject alternative
        /// name).
        #[arg(long)]
        node: String,
        /// Days the certificate is valid (never past the CA's expiry).
        #[arg(long, default_value_t = troupe::transports::certs::DEFAULT_NODE_DAYS)]
        days: u32,
        /// Replace NAME.pem and NAME.key if they exist (a new key and
        /// certificate), instead of refusing.
        #[arg(long)]
        renew: bool,
    },
}

/// Why a command failed.
#[derive(Debug, thiserror::Error)]
pub enum CliError {
    /// From the framework facade.
    #[error(transparent)]
    Troupe(#[from] troupe::Error),
    /// Certificates.
    #[error("certificates: {0}")]
    Certs(String),
    /// Bad arguments (exit code 2, as clap's usage errors).
    #[error("{0}")]
    Usage(String),
    /// Anything else.
    #[error("{0}")]
    Other(String),
}

impl CliError {
    /// The process exit code: 2 for bad arguments, 1 otherwise.
    pub fn exit_code(&self) -> u8 {
        match self {
            CliError::Usage(_) => 2,
            _ => 1,
        }
    }
}

fn init_logs(default: &str) {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new(default));
    // Colours only on a terminal: a log file or the journal gets plain text.
    let ansi = std::io::stdout().is_terminal() && std::env::var_os("NO_COLOR").is_none();
    let _ = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_ansi(ansi)
        .with_target(false)
        .try_init();
}

/// Run a parsed command line.
pub fn run(cli: Cli) -> Result<(), CliError> {
    match cli.command {
        Command::Certs { action } => certs(action),
        Command::Node { config } => {
            init_logs("info");
            node(config)
        }
        Command::Status { endpoint } => {
            print!("{}", crate::inspect::status_command(&endpoint)?);
            Ok(())
        }
        Command::Tree { endpoint } => {
            print!("{}", crate::inspect::tree_command(&endpoint)?);
            Ok(())
        }
        Command::Commit {
            action: CommitAction::InDoubt { endpoint },
        } => {
            print!("{}", crate::inspect::in_doubt_command(&endpoint)?);
            Ok(())
        }
        Command::Bank {
            action:
                BankAction::Transfer {
                    endpoint,
                    from,
                    to,
                    amount,
                },
        } => {
            print!(
                "{}",
                crate::bank_cli::transfer_command(&endpoint, &from, &to, amount)?
            );
            Ok(())
        }
        Command::Bank {
            action: BankAction::Accounts { endpoint },
        } => {
            print!("{}", crate::bank_cli::accounts_command(&endpoint)?);
            Ok(())
        }
        Command::Chat {
            endpoint,
            room,
            once,
        } => crate::chat_cli::chat_command(&endpoint, &room, once),
        Command::Kv { action } => {
            quiet_on_closed_pipe();
            print!("{}", crate::kv_cli::run(action)?);
            Ok(())
        }
        Command::Cluster { action } => crate::cluster::run(action),
        Command::Demo { keep, detector } => {
            init_logs("warn");
            crate::demo::run(keep, &detector)
        }
        Command::Check(args) => {
            quiet_on_closed_pipe();
            crate::check_cli::run(&args)
        }
        Command::Dashboard(args) => {
            init_logs("warn");
            crate::dashboard_cli::run(&args, |_| {})
        }
        Command::Trace { action } => {
            quiet_on_closed_pipe();
            print!("{}", trace(action)?);
            Ok(())
        }
    }
}

/// `troupe trace ...`: what to print.
pub fn trace(action: TraceAction) -> Result<String, CliError> {
    match action {
        TraceAction::Check {
            causal,
            total,
            files,
        } => trace_check(&files, causal, total),
        TraceAction::View {
            output,
            axis,
            files,
        } => {
            let graph = crate::trace_graph::read_files(&files)
                .map_err(|e| CliError::Other(e.to_string()))?;
            let (page, summary) = crate::trace_view::render(&graph, &files, axis);
            std::fs::write(&output, page)
                .map_err(|e| CliError::Other(format!("{}: {e}", output.display())))?;
            Ok(format!("{}: {summary}\n", output.display()))
        }
        TraceAction::Jsonl { output, files } => {
            let mut all = String::new();
            for f in &files {
                all.push_str(
                    &crate::trace_graph::read_text(f)
                        .map_err(|e| CliError::Other(e.to_string()))?,
                );
            }
            match output {
                None => Ok(all),
                Some(path) => {
                    std::fs::write(&path, &all)
                        .map_err(|e| CliError::Other(format!("{}: {e}", path.display())))?;
                    Ok(format!(
                        "{}: {} events as JSON lines\n",
                        path.display(),
                        all.lines().count()
                    ))
                }
            }
        }
        TraceAction::Shiviz { output, files } => {
            let graph = crate::trace_graph::read_files(&files)
                .map_err(|e| CliError::Other(e.to_string()))?;
            let (log, events) = crate::shiviz::render(&graph);
            match output {
                None => Ok(log),
                Some(path) => {
                    std::fs::write(&path, log)
                        .map_err(|e| CliError::Other(format!("{}: {e}", path.display())))?;
                    Ok(format!(
                        "{}: {events} events on {} hosts, for ShiViz (paste it, or open the file, on its input page)\n",
                        path.display(),
                        graph.nodes.len()
                    ))
                }
            }
        }
    }
}

/// `troupe trace check`: the summary, or the violation as the error.
pub fn trace_check(files: &[PathBuf], causal: bool, total: bool) -> Result<String, CliError> {
    let mut all = String::new();
    for f in files {
        let text = crate::trace_graph::read_text(f).map_err(|e| CliError::Other(e.to_string()))?;
        all.push_str(&text);
        if !all.is_empty() && !all.ends_with('\n') {
            all.push('\n');
        }
    }
    troupe::protocols::testkit::trace_check::check_broadcast_trace(&all, causal, total)
        .map(|s| s.to_string())
        .map_err(|e| CliError::Other(format!("trace check failed: {e}")))
}

fn certs(action: CertsAction) -> Result<(), CliError> {
    match action {
        CertsAction::Init { dir, days } => {
            if dir.join("ca.key").exists() {
                return Err(CliError::Certs(format!(
                    "{} already exists; refusing to overwrite a cluster CA",
                    dir.join("ca.key").display()
                )));
            }
            let ca = troupe::transports::certs::init_with_days(&dir, days)
                .map_err(|e| CliError::Certs(e.to_string()))?;
            println!(
                "cluster CA written: {}/ca.pem (share), {}/ca.key (keep secret){}",
                dir.display(),
                dir.display(),
                valid_until(ca.validity())
            );
            Ok(())
        }
        CertsAction::Issue {
            dir,
            node,
            days,
            renew,
        } => {
            for file in ["ca.pem", "ca.key"] {
                if !dir.join(file).exists() {
                    return Err(CliError::Certs(format!(
                        "no cluster CA in {dir} ({} is missing): run `troupe certs init --dir {dir}` \
                         first, or pass the --dir that holds ca.pem and ca.key",
                        dir.join(file).display(),
                        dir = dir.display()
                    )));
                }
            }
            let options = troupe::transports::certs::IssueOptions { days, renew };
            let (cert, key) =
                troupe::transports::certs::issue_with(&dir, &node, options).map_err(issue_error)?;
            let dates = troupe::transports::certs::load_cert_chain(&cert)
                .ok()
                .and_then(|c| c.first().and_then(|c| Validity::of_der(c.as_ref())));
            println!(
                "{} for node {node:?}: {} and {} (owner-only){}",
                if renew { "renewed" } else { "issued" },
                cert.display(),
                key.display(),
                valid_until(dates)
            );
            // Capped at the CA's expiry: say so, or a CA near its end makes
            // short-lived node certificates without anyone noticing.
            let asked =
                std::time::SystemTime::now() + Duration::from_secs(u64::from(days) * 86_400);
            if let Some(v) = dates {
                if v.not_after + Duration::from_secs(86_400) < asked {
                    println!(
                        "note: shorter than the {days} days asked: a node certificate never \
                         outlives the cluster CA, which expires on {}",
                        format_utc(v.not_after)
                    );
                }
            }
            Ok(())
        }
    }
}

/// Why `certs issue` failed, and what to do about it.
fn issue_error(e: troupe::transports::certs::CertError) -> CliError {
    use troupe::transports::certs::CertError;
    match e {
        CertError::AlreadyExists(p) => CliError::Certs(format!(
            "{} already exists; refusing to overwrite it (to replace it with a new certificate \
             and key, add --renew)",
            p.display()
        )),
        e @ CertError::Expired { .. } => CliError::Certs(format!(
            "{e}: it can sign no more certificates. Make a new CA in a new directory \
             (`troupe certs init --dir NEW_DIR`) and roll it out node by node: set every \
             node's ca.pem to both CAs and restart them one at a time, issue every node a \
             certificate from the new CA and restart them again, then drop the old CA from \
             ca.pem (README, \"Deploying a cluster across hosts\", step 1, has the steps)"
        )),
        other => CliError::Certs(other.to_string()),
    }
}

/// ", valid until 2027-11-26 04:16 UTC", or nothing if the dates are unknown.
fn valid_until(v: Option<Validity>) -> String {
    v.map(|v| format!(", valid until {}", format_utc(v.not_after)))
        .unwrap_or_default()
}

fn node(path: PathBuf) -> Result<(), CliError> {
    // Every check (the config, its `[tls]` files, its `listen` addresses)
    // is the library's, with the library's messages: an app that embeds
    // Troupe gets the same ones. Errors name the file, line and key.
    let config = Config::from_file(&path)?;
    let apps = crate::sample::registry()
        .plan(&config.apps, &ClusterInfo::of(&config))
        .map_err(|e| config.locate(e))?;
    // The certificates the node is about to load: it keeps them until it
    // restarts, whatever is copied over the files meanwhile.
    // (None in the insecure development mode, which uses no certificates.)
    let expiry = match (&config.tls.ca, &config.tls.cert) {
        (Some(ca), Some(cert)) if !config.tls.insecure_dev_mode => {
            Some(CertificateExpiry::read(&config.name, ca, cert))
        }
        _ => None,
    };
    let options = StartOptions {
        app_routes: apps.routes().map_err(|e| config.locate(e))?,
        app_panels: apps.panels(),
        ..StartOptions::default()
    };
    let system = actix_rt::System::new();
    system.block_on(async move {
        let running = start_node_with(config, options).await?;
        let peers = running.config.peer_names();
        let fd = Some(running.failure_detector.clone());
        apps.start(&running.node, &peers, fd)
            .await
            .map_err(|e| running.config.locate(e))?;
        match running.http_url() {
            Some(http) => {
                tracing::info!(node = %running.node.id(), addr = %running.local_addr(), %http, "ready")
            }
            None => tracing::info!(node = %running.node.id(), addr = %running.local_addr(), "ready"),
        }
        let stopped = tokio::select! {
            s = running.run_until_signal() => s,
            never = warn_before_expiry(expiry) => match never {},
        };
        match stopped {
            Stopped::Signal => Ok::<(), CliError>(()),
            Stopped::Failure => Err(CliError::Other(format!(
                "node {} stopped: a supervisor gave up and the failure reached the node \
                 (its log says which)",
                running.node.name()
            ))),
        }
    })
}

/// Logs a warning now and every 12 hours while the node's certificate or
/// the cluster CA, as the node loaded them, expires within 30 days (see
/// [`troupe::transports::quic::CertificateExpiry::warning`]). Never returns.
async fn warn_before_expiry(expiry: Option<CertificateExpiry>) -> std::convert::Infallible {
    let Some(expiry) = expiry else {
        return std::future::pending().await;
    };
    let mut every = tokio::time::interval(Duration::from_secs(12 * 3600));
    loop {
        every.tick().await;
        if let Some(warning) = expiry.warning(std::time::SystemTime::now()) {
            tracing::warn!("{warning}");
        }
    }
}

/// For a command that only prints its results (`check`, `kv`, `trace`):
/// when whoever reads its output goes away (`troupe check ... | head`),
/// it ends quietly, as Unix tools do, instead of panicking on the failed
/// print (Rust ignores `SIGPIPE` by default). Not for the commands that
/// run nodes: they write to sockets and children, where a closed peer is
/// an error to handle, not a reason to stop.
fn quiet_on_closed_pipe() {
    #[cfg(unix)]
    // SAFETY: restoring a signal's default disposition; called before this
    // command starts any thread or writes anything.
    unsafe {
        libc::signal(libc::SIGPIPE, libc::SIG_DFL);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::CommandFactory;

    #[test]
    fn help_describes_troupe_and_the_deployment_steps() {
        Cli::command().debug_assert();
        let help = Cli::command().render_long_help().to_string();
        assert!(help.contains("distributed actor framework"), "{help}");
        for step in ["certs init", "certs issue", "node --config", "demo"] {
            assert!(help.contains(step), "{step} missing from:\n{help}");
        }
        let mut cmd = Cli::command();
        let node = cmd.find_subcommand_mut("node").expect("node subcommand");
        let help = node.render_long_help().to_string();
        for word in ["[[peers]]", "RUST_LOG", "exits 0", "exits 1"] {
            assert!(help.contains(word), "{word} missing from:\n{help}");
        }
        let check = cmd.find_subcommand_mut("check").expect("check subcommand");
        let help = check.render_long_help().to_string();
        for word in [
            "--list",
            "--mutation",
            "--trace",
            "--replay",
            "Exits 0",
            "2 on bad",
        ] {
            assert!(help.contains(word), "{word} missing from:\n{help}");
        }
        for sub in ["status", "tree"] {
            let mut cmd = Cli::command();
            let help = cmd
                .find_subcommand_mut(sub)
                .expect("subcommand")
                .render_long_help()
                .to_string();
            for word in [
                "https://",
                "client_certs",
                "--ca",
                "--cert",
                "--key",
                "--server-name",
            ] {
                assert!(help.contains(word), "{sub}: {word} missing from:\n{help}");
            }
        }
    }

    #[test]
    fn an_expired_ca_error_says_what_to_do() {
        let e = troupe::transports::certs::CertError::Expired {
            what: "the cluster CA".into(),
            at: "2036-11-26 05:00 UTC".into(),
        };
        let said = issue_error(e).to_string();
        assert!(
            said.contains("expired on 2036-11-26")
                && said.contains("certs init --dir")
                && said.contains("new directory")
                && said.contains("both CAs")
                && said.contains("one at a time"),
            "{said}"
        );
    }
}
