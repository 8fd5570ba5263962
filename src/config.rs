//! A node's configuration file: everything `troupe node --config FILE` needs.
//!
//! ```toml
//! name = "node-a"                 # required: 1-64 of [A-Za-z0-9._-], the SAN of its certificate
//! listen = "0.0.0.0:7400"         # UDP address (default 0.0.0.0:7400)
//! data_dir = "data/node-a"        # durable protocol state (default: kept in memory)
//! # [storage] group_commit = true  # writes waiting for a sync share the next one (default)
//!
//! [tls]                           # paths are relative to this file
//! ca = "certs/ca.pem"
//! cert = "certs/node-a.pem"
//! key = "certs/node-a.key"
//! # insecure_dev_mode = true      # no verification; only when asked for by name
//!
//! [[peers]]
//! name = "node-b"
//! addr = "192.0.2.2:7400"         # host:port; names are resolved at start-up
//!
//! # seeds = ["192.0.2.1:7400"]    # join through these (host:port), instead of or
//! #                               # besides [[peers]]; `seeds = []` on the first node.
//! #                               # Any node with `seeds` accepts joiners whose
//! #                               # certificate chains to the cluster CA (crate::join)
//!
//! [transport]                     # all optional, see TransportConfig
//! keep_alive_ms = 2000
//!
//! [failure_detector]              # default: SWIM with the `lan` preset
//! kind = "phi-accrual"            # or "heartbeat", "swim"
//! preset = "lan"                  # the default; or "lan-fast", "wan" (troupe_protocols::fd::config::Preset)
//!
//! [runtime]                       # framework limits, see NodeOptions
//! [supervision]                   # root supervisor policy
//! [apps.election]                 # apps to start, one table each (see crate::app::registry)
//!
//! [http]                          # the node's HTTP endpoint (off when absent), see HttpConfig
//! listen = "127.0.0.1:8080"       # TCP address; port 0 picks a free one
//! # token = "..."                 # bearer token
//! # client_certs = true           # HTTPS; clients need a certificate from the cluster CA
//! # max_body_bytes = 65536        # largest request body (default 64 KiB)
//! # (a `listen` that is not loopback needs `token`, `client_certs` or both)
//!
//! [trace]                         # a trace of the node (off when absent)
//! file = "node-a.trace.jsonl"     # appended to; read with `troupe trace view` / `check`
//! # format = "jsonl"              # "jsonl" (JSON lines, default) or "binary" (compact, cheap
//! #                               # at full traffic; `troupe trace jsonl FILE` converts it)
//! # max_bytes = 67108864          # rotate past this size: FILE -> FILE.1 (default 64 MiB, >= 4096)
//! # keep = 3                      # rotated files kept (default 3, at most 100);
//! #                               # the files never hold more than max_bytes * (keep + 1)
//! ```
//!
//! Every field but `name` has a default. [`Config::validate`] rejects values
//! that cannot work, naming the key.
//!
//! # Where an error is
//! Every configuration error ([`Error::Config`]) names the file, the line and
//! the key: `node-a.toml:12: failure_detector.threshold: invalid type: string
//! "high", expected f64`. Parse errors take the line from the TOML parser
//! (at the offending key, also inside `[failure_detector]`) and the key path
//! from `serde_path_to_error`; errors found later (validation, `[apps.*]`
//! tables, a `listen` port already in use, unusable `[tls]` files at
//! start-up) start with the key path, and [`Config::locate`] adds the file
//! and the line of that key (of its table when the key is not in the file).

use std::net::{SocketAddr, ToSocketAddrs};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use serde::{Deserialize, Serialize};
use troupe_framework::config::NodeConfig;
use troupe_framework::{NodeOptions, SupervisorPolicy};
pub use troupe_protocols::fd::config::{HeartbeatConfig, PhiAccrualConfig, SwimConfig};
pub use troupe_protocols::fd::FailureDetectorConfig;
use troupe_transports::quic::{QuicConfig, TlsSource};

use crate::Error;

/// One peer: its node name and where to reach it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PeerConfig {
    /// The peer's node name (the SAN of its certificate).
    pub name: String,
    /// `host:port` of its UDP listener.
    pub addr: String,
}

/// Where the node's certificates are (`[tls]`).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct TlsConfig {
    /// The cluster CA certificate (PEM).
    pub ca: Option<PathBuf>,
    /// This node's certificate (PEM), issued by the CA for `name`.
    pub cert: Option<PathBuf>,
    /// This node's private key (PEM, owner-only permissions).
    pub key: Option<PathBuf>,
    /// No certificate verification, self-signed TLS. Development only; the
    /// node logs a loud warning. Default false.
    pub insecure_dev_mode: bool,
}

/// QUIC transport tuning (`[transport]`); every field is optional.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct TransportConfig {
    /// Frames queued per peer before sends fail with "queue full" (default 8192).
    pub send_queue: usize,
    /// Control frames queued per peer (default 1024).
    pub control_queue: usize,
    /// Keep-alive interval in ms; must be below `idle_timeout_ms` (default 2000).
    pub keep_alive_ms: u64,
    /// A silent connection is closed after this many ms (default 10000).
    pub idle_timeout_ms: u64,
    /// Limit for the TLS handshake plus hello, in ms (default 5000).
    pub handshake_timeout_ms: u64,
    /// First reconnect delay in ms, doubling with jitter (default 50).
    pub reconnect_min_ms: u64,
    /// Largest reconnect delay in ms (default 5000).
    pub reconnect_max_ms: u64,
}

impl Default for TransportConfig {
    fn default() -> Self {
        Self {
            send_queue: 8192,
            control_queue: 1024,
            keep_alive_ms: 2000,
            idle_timeout_ms: 10_000,
            handshake_timeout_ms: 5000,
            reconnect_min_ms: 50,
            reconnect_max_ms: 5000,
        }
    }
}

/// The first of `resolved` that a socket bound to `listen` can send to: of
/// its IP family, or any when it is bound to `[::]` (dual-stack). A host name
/// such as `localhost` often resolves to an IPv6 and an IPv4 address, in
/// either order.
fn reachable_from(listen: SocketAddr, resolved: &[SocketAddr]) -> Option<SocketAddr> {
    let dual_stack = listen.is_ipv6() && listen.ip().is_unspecified();
    resolved
        .iter()
        .find(|a| dual_stack || a.is_ipv4() == listen.is_ipv4())
        .copied()
}

/// `listen` as an IP address and port, with an error that says so (serde's
/// own says only "invalid socket address syntax").
fn listen_address<'de, D: serde::Deserializer<'de>>(d: D) -> Result<SocketAddr, D::Error> {
    let text = String::deserialize(d)?;
    text.parse().map_err(|_| {
        serde::de::Error::custom(format!(
            "{text:?} is not an IP address and port such as \"0.0.0.0:7400\" or \"[::]:7400\" \
             (a listen address takes no host name)"
        ))
    })
}

/// The node's HTTP endpoint (`[http]`, off when absent): status, and the
/// routes applications mount under `/v1/<app>/` (see [`crate::http`]).
///
/// Two ways to keep strangers out, alone or together:
///
/// - `token`: every request must carry `Authorization: Bearer <token>`.
/// - `client_certs = true`: the endpoint speaks HTTPS only, with the node's
///   own `[tls]` certificate and key, and accepts only clients that present
///   a certificate chaining to the cluster CA (`[tls] ca`), such as one from
///   `troupe certs issue`. It needs those files, so it is refused with
///   `[tls] insecure_dev_mode`.
///
/// With both, a request needs both. A `listen` address that is not
/// loopback (`127.0.0.0/8`, `[::1]`) requires at least one of them: the
/// node refuses to start without.
#[derive(Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct HttpConfig {
    /// TCP address to serve on (required): an IP address and a port, such as
    /// `"127.0.0.1:8080"`; port 0 picks a free one
    /// ([`crate::runtime::RunningNode::http_addr`] tells which).
    #[serde(deserialize_with = "listen_address")]
    pub listen: SocketAddr,
    /// Bearer token every request must carry (default: none, which only a
    /// loopback `listen` allows). At least [`MIN_HTTP_TOKEN_LEN`] printable
    /// ASCII characters, no spaces; compared in constant time.
    #[serde(default)]
    pub token: Option<String>,
    /// Serve HTTPS and require a client certificate from the cluster CA
    /// (default false: plain HTTP). The server presents the node's `[tls]
    /// cert` (and key); a client must present a certificate that chains to
    /// `[tls] ca` (every certificate of that file is trusted, as for QUIC),
    /// or the TLS handshake fails before any HTTP is read. TLS 1.3 or 1.2,
    /// the aws-lc-rs provider of the QUIC transport
    /// ([`troupe_transports::quic::crypto_provider`]), ALPN `http/1.1`.
    /// Not with `[tls] insecure_dev_mode` (which has no CA).
    #[serde(default)]
    pub client_certs: bool,
    /// Largest request body in bytes (default 65536, i.e. 64 KiB; at most
    /// [`MAX_HTTP_BODY_BYTES`]). A larger body is refused with 413.
    #[serde(default = "default_max_body_bytes")]
    pub max_body_bytes: usize,
    /// Serve the live dashboard page at `/` (default true; see
    /// [`crate::dashboard`]). With `false`, `/` answers 404 and the
    /// dashboard's JSON (`/v1/dashboard/...`) is still served, for
    /// `troupe dashboard --node URL` to show.
    #[serde(default = "default_true")]
    pub dashboard: bool,
}

fn default_true() -> bool {
    true
}

/// Shortest `[http] token` accepted.
pub const MIN_HTTP_TOKEN_LEN: usize = 16;
/// Largest `[http] max_body_bytes` accepted (16 MiB).
pub const MAX_HTTP_BODY_BYTES: usize = 16 << 20;
/// The default `[http] max_body_bytes` (64 KiB).
pub const DEFAULT_HTTP_BODY_BYTES: usize = 64 << 10;

fn default_max_body_bytes() -> usize {
    DEFAULT_HTTP_BODY_BYTES
}

/// The token stays out of logs and error messages.
impl std::fmt::Debug for HttpConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("HttpConfig")
            .field("listen", &self.listen)
            .field("token", &self.token.as_ref().map(|_| "<redacted>"))
            .field("client_certs", &self.client_certs)
            .field("max_body_bytes", &self.max_body_bytes)
            .field("dashboard", &self.dashboard)
            .finish()
    }
}

impl HttpConfig {
    /// Check the `[http]` table; errors name the key.
    pub fn validate(&self) -> Result<(), Error> {
        if let Some(token) = &self.token {
            if token.len() < MIN_HTTP_TOKEN_LEN || !token.bytes().all(|b| b.is_ascii_graphic()) {
                return Err(config_err(format!(
                    "http.token must be at least {MIN_HTTP_TOKEN_LEN} printable ASCII characters \
                     without spaces (it travels in an `Authorization: Bearer` header)"
                )));
            }
        }
        if self.max_body_bytes == 0 || self.max_body_bytes > MAX_HTTP_BODY_BYTES {
            return Err(config_err(format!(
                "http.max_body_bytes must be between 1 and {MAX_HTTP_BODY_BYTES}, not {}",
                self.max_body_bytes
            )));
        }
        if self.token.is_none() && !self.client_certs && !self.listen.ip().is_loopback() {
            return Err(config_err(format!(
                "http.listen = \"{}\" is not a loopback address, and anyone who can reach it \
                 could read and drive this node: set [http] token = \"...\" (at least \
                 {MIN_HTTP_TOKEN_LEN} characters; clients send `Authorization: Bearer <token>`), \
                 or set [http] client_certs = true (HTTPS; clients must present a certificate \
                 from the cluster CA), or both, or listen on 127.0.0.1 or [::1]",
                self.listen
            )));
        }
        Ok(())
    }

    /// The URL scheme the endpoint serves: `https` with `client_certs`,
    /// else `http`.
    pub fn scheme(&self) -> &'static str {
        if self.client_certs {
            "https"
        } else {
            "http"
        }
    }
}

fn default_listen() -> SocketAddr {
    SocketAddr::from(([0, 0, 0, 0], 7400))
}

/// `[storage]`: how the durable store in `data_dir` commits.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct StorageConfig {
    /// Group commit (default `true`): writes of many protocol steps that
    /// wait while a sync is in flight share the next sync. `false` syncs
    /// every step's writes on their own (one fsync each): only for
    /// comparison, or a disk whose syncs cost nothing.
    #[serde(default = "default_group_commit")]
    pub group_commit: bool,
}

fn default_group_commit() -> bool {
    true
}

impl Default for StorageConfig {
    fn default() -> Self {
        Self { group_commit: true }
    }
}

/// `[trace]`: record what the node does as JSON lines (sends, deliveries
/// of frames, timers, supervision, broadcast deliveries with their vector
/// stamps...; see `troupe_framework::trace`), for space-time diagrams and
/// `troupe trace check`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TraceConfig {
    /// The file the lines are appended to (relative to the config file's
    /// folder).
    pub file: PathBuf,
    /// When the file passes this size it is renamed `FILE.1` (older ones
    /// shifted, beyond `keep` deleted) and a new one is started (default
    /// 64 MiB; at least 4096).
    #[serde(default = "default_trace_max_bytes")]
    pub max_bytes: u64,
    /// Rotated files kept (default 3, at most 100). The trace never takes
    /// more than `max_bytes × (keep + 1)` on disk.
    #[serde(default = "default_trace_keep")]
    pub keep: u32,
    /// `"jsonl"` (default): JSON lines, as the simulator writes them;
    /// `"binary"`: the compact binary trace, a tenth or less of the bytes
    /// and about half the recording cost at full traffic (see
    /// BENCHMARKS.md), read by every `troupe trace` command and turned into
    /// the same JSON lines by `troupe trace jsonl`.
    #[serde(default)]
    pub format: troupe_framework::trace::TraceFormat,
}

fn default_trace_max_bytes() -> u64 {
    troupe_framework::trace::Rotation::DEFAULT_MAX_BYTES
}

fn default_trace_keep() -> u32 {
    troupe_framework::trace::Rotation::DEFAULT_KEEP
}

impl TraceConfig {
    /// A trace to `file` with the default rotation.
    pub fn new(file: impl Into<PathBuf>) -> Self {
        Self {
            file: file.into(),
            max_bytes: default_trace_max_bytes(),
            keep: default_trace_keep(),
            format: Default::default(),
        }
    }

    /// The rotation these settings describe.
    pub fn rotation(&self) -> troupe_framework::trace::Rotation {
        troupe_framework::trace::Rotation {
            max_bytes: self.max_bytes,
            keep: self.keep,
        }
    }
}

/// A node's whole configuration.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Config {
    /// The node's name (required).
    pub name: String,
    /// UDP listen address (default `0.0.0.0:7400`): an IP address and a
    /// port, not a host name.
    #[serde(default = "default_listen", deserialize_with = "listen_address")]
    pub listen: SocketAddr,
    /// Directory for durable protocol state (default: in memory only).
    #[serde(default)]
    pub data_dir: Option<PathBuf>,
    /// How the durable store in `data_dir` commits.
    #[serde(default)]
    pub storage: StorageConfig,
    /// Certificates.
    #[serde(default)]
    pub tls: TlsConfig,
    /// The other nodes of the cluster.
    #[serde(default)]
    pub peers: Vec<PeerConfig>,
    /// Seed nodes to join the cluster through (`host:port` each; default:
    /// absent). When present, even empty, membership is dynamic: this node
    /// dials its seeds, accepts nodes that are not in `[[peers]]` when their
    /// certificate chains to the cluster CA, and learns and announces members
    /// ([`crate::join`]). Absent: only `[[peers]]` are accepted.
    #[serde(default)]
    pub seeds: Option<Vec<String>>,
    /// Transport tuning.
    #[serde(default)]
    pub transport: TransportConfig,
    /// Which failure detector feeds membership, and its parameters.
    #[serde(default)]
    pub failure_detector: FailureDetectorConfig,
    /// Framework limits.
    #[serde(default)]
    pub runtime: NodeOptions,
    /// Root supervisor policy.
    #[serde(default)]
    pub supervision: SupervisorPolicy,
    /// The apps to start, one `[apps.NAME]` table each; read through an
    /// app registry ([`crate::app::AppRegistry::plan`]), e.g. by `troupe node`.
    #[serde(default)]
    pub apps: toml::Table,
    /// The node's HTTP endpoint (default: none).
    #[serde(default)]
    pub http: Option<HttpConfig>,
    /// `[trace]`: a JSON-lines trace of the node (default: none).
    #[serde(default)]
    pub trace: Option<TraceConfig>,
    /// The file and text this config was read from, to say where an error is.
    #[serde(skip)]
    source: Source,
}

/// Where a config came from: its file (when read from one) and its text.
#[derive(Clone, Default)]
struct Source {
    file: Option<PathBuf>,
    text: Arc<str>,
}

/// The file only: the text may hold secrets (`[http] token`).
impl std::fmt::Debug for Source {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Source")
            .field("file", &self.file)
            .finish_non_exhaustive()
    }
}

impl Source {
    /// `FILE:LINE`, `FILE`, `line LINE` or nothing, for a 1-based `line`.
    fn at(&self, line: Option<usize>) -> String {
        match (&self.file, line) {
            (Some(f), Some(l)) => format!("{}:{l}", f.display()),
            (Some(f), None) => f.display().to_string(),
            (None, Some(l)) => format!("line {l}"),
            (None, None) => String::new(),
        }
    }

    /// `message` about `key` (when known) at `line`: `WHERE: KEY: message`.
    fn error(&self, line: Option<usize>, key: Option<&str>, message: &str) -> Error {
        let mut text = self.at(line);
        for part in key.into_iter().chain([message]) {
            if !text.is_empty() {
                text.push_str(": ");
            }
            text.push_str(part);
        }
        Error::Config(text)
    }

    /// The 1-based line of `offset` in the text.
    fn line_at(&self, offset: usize) -> usize {
        let end = offset.min(self.text.len());
        self.text.as_bytes()[..end]
            .iter()
            .filter(|b| **b == b'\n')
            .count()
            + 1
    }

    /// The line of `key` (a path such as `peers[1].addr`) in the text: of
    /// the key itself, else of the deepest table on its path that the text
    /// has (a key left out is reported at its table), else none.
    fn line_of(&self, key: &str) -> Option<usize> {
        use toml_edit::{Item, TableLike, Value};
        /// Where the walk down the document is.
        enum At<'a> {
            Table(&'a dyn TableLike),
            Item(&'a Item),
            Value(&'a Value),
        }
        let doc = toml_edit::ImDocument::parse(&*self.text).ok()?;
        let mut at = At::Table(doc.as_table());
        let mut best = None;
        for segment in key_segments(key)? {
            let (span, next) = match (segment, at) {
                (Segment::Key(k), at) => {
                    let table = match at {
                        At::Table(t) => Some(t),
                        At::Item(i) => i.as_table_like(),
                        At::Value(v) => v.as_inline_table().map(|t| t as &dyn TableLike),
                    };
                    let Some((k, v)) = table.and_then(|t| t.get_key_value(k)) else {
                        break;
                    };
                    (k.span().or_else(|| v.span()), At::Item(v))
                }
                (Segment::Index(n), At::Item(i)) => {
                    if let Some(t) = i.as_array_of_tables().and_then(|a| a.get(n)) {
                        (t.span(), At::Table(t))
                    } else if let Some(v) = i.as_array().and_then(|a| a.get(n)) {
                        (v.span(), At::Value(v))
                    } else {
                        break;
                    }
                }
                (Segment::Index(n), At::Value(v)) => {
                    let Some(v) = v.as_array().and_then(|a| a.get(n)) else {
                        break;
                    };
                    (v.span(), At::Value(v))
                }
                (Segment::Index(_), At::Table(_)) => break,
            };
            if let Some(span) = span {
                best = Some(self.line_at(span.start));
            }
            at = next;
        }
        best
    }
}

/// One step of a key path.
enum Segment<'a> {
    Key(&'a str),
    Index(usize),
}

/// `peers[1].addr` as `peers`, `1`, `addr` (None if it is no key path).
fn key_segments(key: &str) -> Option<Vec<Segment<'_>>> {
    let mut out = Vec::new();
    for part in key.split('.') {
        let (name, mut rest) = part.split_once('[').map_or((part, ""), |(n, r)| (n, r));
        if name.is_empty() {
            return None;
        }
        out.push(Segment::Key(name));
        while !rest.is_empty() {
            let (n, after) = rest.split_once(']')?;
            out.push(Segment::Index(n.parse().ok()?));
            rest = after.strip_prefix('[').unwrap_or(after);
        }
    }
    Some(out)
}

/// The key path an error message starts with (`peers[0].addr` in
/// `peers[0].addr: "x" must be host:port`), if any.
fn leading_key(message: &str) -> Option<&str> {
    let end = message
        .find(|c: char| !(c.is_ascii_alphanumeric() || "_-.[]".contains(c)))
        .unwrap_or(message.len());
    let key = message[..end].trim_end_matches('.');
    key_segments(key).map(|_| key)
}

fn config_err(msg: impl Into<String>) -> Error {
    Error::Config(msg.into())
}

impl Config {
    /// Parse TOML text; relative paths are taken relative to `base`. An
    /// error says the line and the key (see [`Config::from_file`]).
    pub fn from_toml(text: &str, base: &Path) -> Result<Self, Error> {
        Self::parse(text, base, None)
    }

    fn parse(text: &str, base: &Path, file: Option<&Path>) -> Result<Self, Error> {
        let source = Source {
            file: file.map(Path::to_path_buf),
            text: text.into(),
        };
        let mut c: Config = serde_path_to_error::deserialize(toml::Deserializer::new(text))
            .map_err(|e| {
                let key = e.path().to_string();
                let e = e.into_inner();
                let line = e.span().map(|s| source.line_at(s.start));
                let key = (key != "." && !key.is_empty()).then_some(key);
                source.error(line, key.as_deref(), e.message().trim_end())
            })?;
        c.source = source;
        for p in [
            &mut c.tls.ca,
            &mut c.tls.cert,
            &mut c.tls.key,
            &mut c.data_dir,
        ]
        .into_iter()
        .flatten()
        {
            if p.is_relative() {
                *p = base.join(&*p);
            }
        }
        if let Some(t) = c.trace.as_mut().filter(|t| t.file.is_relative()) {
            t.file = base.join(&t.file);
        }
        c.validate().map_err(|e| c.locate(e))?;
        Ok(c)
    }

    /// Read and validate a config file. An error names the file, the line
    /// and the key: `node-a.toml:7: failure_detector.threshold: ...`.
    pub fn from_file(path: impl AsRef<Path>) -> Result<Self, Error> {
        let path = path.as_ref();
        let text = std::fs::read_to_string(path).map_err(|e| Error::Io {
            path: path.display().to_string(),
            message: e.to_string(),
        })?;
        let base = path.parent().unwrap_or(Path::new("."));
        Self::parse(&text, base, Some(path))
    }

    /// The file this config was read from ([`Config::from_file`]), if any.
    pub fn file(&self) -> Option<&Path> {
        self.source.file.as_deref()
    }

    /// Says where in this config an error is. An [`Error::Config`] (or a
    /// framework [`NodeError::Config`](troupe_framework::NodeError::Config))
    /// whose message starts with a key path, as Troupe's configuration
    /// errors do (`peers[1].addr ...`, `apps.election.members: ...`),
    /// becomes `Error::Config("FILE:LINE: message")`, LINE being the line
    /// of that key, or of its table when the key is not in the file. Other
    /// errors, and those already located, are returned as they are. Errors
    /// of [`crate::runtime::start_node`] and [`Config::from_file`] come
    /// located; use this for what else reads the config, such as
    /// [`crate::app::AppRegistry::plan`].
    pub fn locate(&self, e: Error) -> Error {
        let message = match e {
            Error::Config(m) => m,
            Error::Node(troupe_framework::NodeError::Config(m)) => m,
            other => return other,
        };
        let here = self.source.at(None);
        if !here.is_empty() && message.starts_with(&here) {
            return Error::Config(message);
        }
        let line = leading_key(&message).and_then(|k| self.source.line_of(k));
        self.source.error(line, None, &message)
    }

    /// The framework's part of this config.
    pub fn node_config(&self) -> NodeConfig {
        NodeConfig {
            name: self.name.clone(),
            runtime: self.runtime.clone(),
            supervision: self.supervision,
        }
    }

    /// Peer names, sorted.
    pub fn peer_names(&self) -> Vec<String> {
        let mut v: Vec<String> = self.peers.iter().map(|p| p.name.clone()).collect();
        v.sort();
        v
    }

    /// Check every value; errors name the key.
    pub fn validate(&self) -> Result<(), Error> {
        self.node_config().validate().map_err(|e| match e {
            troupe_framework::NodeError::Config(m) => Error::Config(m),
            other => Error::Node(other),
        })?;
        let mut seen = std::collections::BTreeSet::new();
        for (i, p) in self.peers.iter().enumerate() {
            troupe_framework::ids::validate_name(&p.name)
                .map_err(|e| config_err(format!("peers[{i}].name: {e}")))?;
            if p.name == self.name {
                return Err(config_err(format!(
                    "peers[{i}].name: {:?} is this node itself",
                    p.name
                )));
            }
            if !seen.insert(&p.name) {
                return Err(config_err(format!(
                    "peers[{i}].name: {:?} is listed twice",
                    p.name
                )));
            }
            if !p.addr.contains(':') {
                return Err(config_err(format!(
                    "peers[{i}].addr: {:?} must be host:port",
                    p.addr
                )));
            }
        }
        for (i, seed) in self.seeds.iter().flatten().enumerate() {
            if seed
                .rsplit_once(':')
                .is_none_or(|(host, port)| host.is_empty() || port.parse::<u16>().is_err())
            {
                return Err(config_err(format!(
                    "seeds[{i}]: {seed:?} must be host:port (such as \"10.0.0.1:7400\")"
                )));
            }
        }
        if let Some(t) = &self.trace {
            if t.max_bytes < 4096 {
                return Err(config_err(format!(
                    "trace.max_bytes: {} is too small (at least 4096)",
                    t.max_bytes
                )));
            }
            if t.keep > 100 {
                return Err(config_err(format!(
                    "trace.keep: {} rotated files is too many (at most 100)",
                    t.keep
                )));
            }
        }
        let t = &self.transport;
        for (key, v) in [
            ("transport.send_queue", t.send_queue as u64),
            ("transport.control_queue", t.control_queue as u64),
            ("transport.keep_alive_ms", t.keep_alive_ms),
            ("transport.idle_timeout_ms", t.idle_timeout_ms),
            ("transport.handshake_timeout_ms", t.handshake_timeout_ms),
            ("transport.reconnect_min_ms", t.reconnect_min_ms),
        ] {
            if v == 0 {
                return Err(config_err(format!("{key} must be > 0")));
            }
        }
        if t.keep_alive_ms >= t.idle_timeout_ms {
            return Err(config_err(format!(
                "transport.keep_alive_ms ({}) must be below transport.idle_timeout_ms ({})",
                t.keep_alive_ms, t.idle_timeout_ms
            )));
        }
        if t.reconnect_max_ms < t.reconnect_min_ms {
            return Err(config_err(
                "transport.reconnect_max_ms must be >= transport.reconnect_min_ms",
            ));
        }
        if !self.tls.insecure_dev_mode {
            for (key, v) in [
                ("tls.ca", &self.tls.ca),
                ("tls.cert", &self.tls.cert),
                ("tls.key", &self.tls.key),
            ] {
                if v.is_none() {
                    return Err(config_err(format!(
                        "{key} is required (or set tls.insecure_dev_mode = true for development)"
                    )));
                }
            }
        }
        match self.seeds {
            // Joining nodes: the cluster's size is not known up front.
            Some(_) => self.failure_detector.validate(),
            None => self
                .failure_detector
                .validate_for_cluster(self.peers.len() + 1),
        }
        .map_err(|e| config_err(e.to_string()))?;
        if let Some(http) = &self.http {
            http.validate()?;
            if http.client_certs && self.tls.insecure_dev_mode {
                return Err(config_err(
                    "http.client_certs = true needs the node's [tls] ca, cert and key (the \
                     endpoint serves the node's certificate and accepts clients whose \
                     certificates chain to the CA), and tls.insecure_dev_mode = true has none: \
                     turn off one of them (a development endpoint on 127.0.0.1 needs neither \
                     client_certs nor a token)",
                ));
            }
        }
        Ok(())
    }

    /// The QUIC transport config for this node, resolving peer addresses.
    pub fn quic_config(&self, incarnation: String) -> Result<QuicConfig, Error> {
        let tls = if self.tls.insecure_dev_mode {
            TlsSource::SelfSigned
        } else {
            match (&self.tls.ca, &self.tls.cert, &self.tls.key) {
                (Some(ca), Some(cert), Some(key)) => TlsSource::Files {
                    ca: ca.clone(),
                    cert: cert.clone(),
                    key: key.clone(),
                },
                _ => return Err(config_err("tls.ca, tls.cert and tls.key are required")),
            }
        };
        let mut q = QuicConfig::new(self.name.clone(), self.listen, tls);
        q.incarnation = incarnation;
        q.insecure_dev_mode = self.tls.insecure_dev_mode;
        q.max_frame_size = self.runtime.max_frame_bytes;
        q.send_queue_capacity = self.transport.send_queue;
        q.control_queue_capacity = self.transport.control_queue;
        q.keep_alive = Duration::from_millis(self.transport.keep_alive_ms);
        q.idle_timeout = Duration::from_millis(self.transport.idle_timeout_ms);
        q.handshake_timeout = Duration::from_millis(self.transport.handshake_timeout_ms);
        q.reconnect_min = Duration::from_millis(self.transport.reconnect_min_ms);
        q.reconnect_max = Duration::from_millis(self.transport.reconnect_max_ms);
        for (i, p) in self.peers.iter().enumerate() {
            let resolved: Vec<SocketAddr> = p
                .addr
                .to_socket_addrs()
                .map_err(|e| config_err(format!("peers[{i}].addr {:?}: {e}", p.addr)))?
                .collect();
            let addr = reachable_from(self.listen, &resolved).ok_or_else(|| {
                if resolved.is_empty() {
                    config_err(format!("peers[{i}].addr {:?} resolves to nothing", p.addr))
                } else {
                    config_err(format!(
                        "peers[{i}].addr {:?} resolves only to {resolved:?}, none of which \
                         this node can reach from its listen address {} (another IP family)",
                        p.addr, self.listen
                    ))
                }
            })?;
            q.peers.insert(p.name.clone(), addr);
        }
        if let Some(seeds) = &self.seeds {
            q.accept_joins = true;
            for (i, seed) in seeds.iter().enumerate() {
                let resolved: Vec<SocketAddr> = seed
                    .to_socket_addrs()
                    .map_err(|e| config_err(format!("seeds[{i}] {seed:?}: {e}")))?
                    .collect();
                let addr = reachable_from(self.listen, &resolved).ok_or_else(|| {
                    config_err(format!(
                        "seeds[{i}] {seed:?} resolves to nothing this node can reach from its \
                         listen address {} (resolved: {resolved:?})",
                        self.listen
                    ))
                })?;
                q.seeds.push(addr);
            }
        }
        Ok(q)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const GOOD: &str = r#"
name = "node-a"
listen = "127.0.0.1:7401"
[tls]
ca = "certs/ca.pem"
cert = "certs/node-a.pem"
key = "certs/node-a.key"
[[peers]]
name = "node-b"
addr = "127.0.0.1:7402"
[[peers]]
name = "node-c"
addr = "localhost:7403"
[failure_detector]
kind = "phi-accrual"
"#;

    #[test]
    fn a_peer_host_name_resolves_to_an_address_of_the_listen_family() {
        let v4: SocketAddr = "127.0.0.1:7402".parse().unwrap();
        let v6: SocketAddr = "[::1]:7402".parse().unwrap();
        let listen = |s: &str| s.parse::<SocketAddr>().unwrap();
        // `localhost` may come back IPv6 first.
        assert_eq!(reachable_from(listen("0.0.0.0:7401"), &[v6, v4]), Some(v4));
        assert_eq!(reachable_from(listen("[::1]:7401"), &[v4, v6]), Some(v6));
        assert_eq!(reachable_from(listen("[::]:7401"), &[v6, v4]), Some(v6));
        assert_eq!(reachable_from(listen("127.0.0.1:7401"), &[v6]), None);
        assert_eq!(reachable_from(listen("127.0.0.1:7401"), &[]), None);
    }

    #[test]
    fn a_trace_file_is_relative_to_the_config_and_its_table_is_checked() {
        let c = Config::from_toml(GOOD, Path::new("/etc/troupe")).unwrap();
        assert_eq!(c.trace, None);
        let traced = format!("{GOOD}[trace]\nfile = \"logs/a.jsonl\"\n");
        let c = Config::from_toml(&traced, Path::new("/etc/troupe")).unwrap();
        assert_eq!(
            c.trace.map(|t| t.file),
            Some(PathBuf::from("/etc/troupe/logs/a.jsonl"))
        );
        let c = Config::from_toml(&traced, Path::new("/etc/troupe")).unwrap();
        let t = c.trace.unwrap();
        assert_eq!((t.max_bytes, t.keep), (64 << 20, 3));
        assert_eq!(t.rotation().cap(), 256 << 20);
        let rotated = format!("{traced}max_bytes = 10000\nkeep = 0\n");
        let t = Config::from_toml(&rotated, Path::new("."))
            .unwrap()
            .trace
            .unwrap();
        assert_eq!((t.max_bytes, t.keep), (10000, 0));
        assert_eq!(t.format, troupe_framework::trace::TraceFormat::Jsonl);
        let binary = format!("{traced}format = \"binary\"\n");
        let t = Config::from_toml(&binary, Path::new("."))
            .unwrap()
            .trace
            .unwrap();
        assert_eq!(t.format, troupe_framework::trace::TraceFormat::Binary);
        for (bad, key) in [
            ("format = \"json\"", "trace.format"),
            ("max_bytes = 100", "trace.max_bytes"),
            ("keep = 101", "trace.keep"),
            ("max_bytes = -1", "trace.max_bytes"),
        ] {
            let err = Config::from_toml(&format!("{traced}{bad}\n"), Path::new("."))
                .unwrap_err()
                .to_string();
            assert!(err.contains(key), "{bad}: {err}");
        }
        let typo = format!("{GOOD}[trace]\npath = \"a.jsonl\"\n");
        let err = Config::from_toml(&typo, Path::new("."))
            .unwrap_err()
            .to_string();
        assert!(
            err.contains("trace.path") && err.contains("unknown field"),
            "{err}"
        );
    }

    #[test]
    fn parses_resolves_relative_paths_and_builds_quic_config() {
        let c = Config::from_toml(GOOD, Path::new("/etc/troupe")).unwrap();
        assert_eq!(
            c.tls.ca.as_deref(),
            Some(Path::new("/etc/troupe/certs/ca.pem"))
        );
        assert_eq!(c.failure_detector.kind(), "phi-accrual");
        assert_eq!(
            c.peer_names(),
            vec!["node-b".to_string(), "node-c".to_string()]
        );
        let q = c.quic_config("inc".into()).unwrap();
        assert_eq!(q.peers.len(), 2);
        assert_eq!(q.keep_alive, Duration::from_secs(2));
    }

    #[test]
    fn seeds_make_membership_dynamic() {
        let c = Config::from_toml(
            "name = \"c\"\nlisten = \"127.0.0.1:0\"\nseeds = [\"127.0.0.1:7000\", \"localhost:7001\"]\n\
             [tls]\ninsecure_dev_mode = true\n",
            Path::new("."),
        )
        .unwrap();
        let q = c.quic_config("inc".into()).unwrap();
        assert!(q.accept_joins);
        assert_eq!(q.seeds.len(), 2);
        assert_eq!(q.seeds[0], "127.0.0.1:7000".parse().unwrap());
        assert!(q.peers.is_empty());
        let c = Config::from_toml(
            "name = \"a\"\nseeds = []\n[tls]\ninsecure_dev_mode = true\n",
            Path::new("."),
        )
        .unwrap();
        let q = c.quic_config("inc".into()).unwrap();
        assert!(
            q.accept_joins && q.seeds.is_empty(),
            "an empty list: accept joiners"
        );
        let c = Config::from_toml(
            "name = \"a\"\n[tls]\ninsecure_dev_mode = true\n",
            Path::new("."),
        )
        .unwrap();
        assert!(!c.quic_config("inc".into()).unwrap().accept_joins);
    }

    #[test]
    fn minimal_insecure_config_gets_defaults() {
        let c = Config::from_toml(
            "name = \"a\"\n[tls]\ninsecure_dev_mode = true\n",
            Path::new("."),
        )
        .unwrap();
        assert_eq!(c.listen, default_listen());
        assert_eq!(c.failure_detector.kind(), "swim");
        assert!(c.peers.is_empty());
    }

    #[test]
    fn http_defaults_and_the_loopback_rule() {
        let base = "name = \"a\"\n[tls]\ninsecure_dev_mode = true\n";
        let c = Config::from_toml(base, Path::new(".")).unwrap();
        assert!(c.http.is_none(), "no [http]: no endpoint");
        let c = Config::from_toml(
            &format!("{base}[http]\nlisten = \"127.0.0.1:0\"\n"),
            Path::new("."),
        )
        .unwrap();
        let http = c.http.expect("[http]");
        assert_eq!(http.max_body_bytes, 64 * 1024);
        assert_eq!(http.token, None);
        assert!(!http.client_certs, "plain HTTP unless asked");
        assert_eq!(http.scheme(), "http");
        // Not loopback, with client certificates only: accepted.
        let c = Config::from_toml(
            "name = \"a\"\n[tls]\nca = \"ca.pem\"\ncert = \"a.pem\"\nkey = \"a.key\"\n\
             [http]\nlisten = \"0.0.0.0:8443\"\nclient_certs = true\n",
            Path::new("."),
        )
        .unwrap();
        assert_eq!(c.http.expect("[http]").scheme(), "https");
        // Not loopback, with a token: accepted, and the token is not printed.
        let c = Config::from_toml(
            &format!("{base}[http]\nlisten = \"0.0.0.0:8080\"\ntoken = \"s3cret-s3cret-s3cret\"\n"),
            Path::new("."),
        )
        .unwrap();
        let shown = format!("{c:?}");
        assert!(
            !shown.contains("s3cret") && shown.contains("<redacted>"),
            "{shown}"
        );
    }

    #[test]
    fn bad_values_name_their_key() {
        for (patch, key) in [
            ("name = \"a b\"\n[tls]\ninsecure_dev_mode = true", "name"),
            ("name = \"a\"", "tls.ca"),
            ("name = \"a\"\n[tls]\ninsecure_dev_mode = true\n[[peers]]\nname = \"a\"\naddr = \"x:1\"", "peers[0].name"),
            ("name = \"a\"\n[tls]\ninsecure_dev_mode = true\n[[peers]]\nname = \"b\"\naddr = \"nowhere\"", "peers[0].addr"),
            ("name = \"a\"\n[tls]\ninsecure_dev_mode = true\n[transport]\nkeep_alive_ms = 20000", "transport.keep_alive_ms"),
            ("name = \"a\"\n[tls]\ninsecure_dev_mode = true\n[failure_detector]\nkind = \"phi-accrual\"\nthreshold = -1", "failure_detector.threshold"),
            ("name = \"a\"\n[tls]\ninsecure_dev_mode = true\n[failure_detector]\nkind = \"gossip\"", "gossip"),
            ("name = \"a\"\n[tls]\ninsecure_dev_mode = true\n[failure_detector]\nkind = \"swim\"\nindirect_checks = 9", "failure_detector.indirect_checks"),
            ("name = \"a\"\nlisten = \"nope\"\n[tls]\ninsecure_dev_mode = true", "listen"),
            ("name = \"a\"\nlisten = \"localhost:7400\"\n[tls]\ninsecure_dev_mode = true", "takes no host name"),
            ("name = \"a\"\nlisten = \"127.0.0.1\"\n[tls]\ninsecure_dev_mode = true", "IP address and port"),
            ("name = \"a\"\nbogus = 1\n[tls]\ninsecure_dev_mode = true", "bogus"),
            ("name = \"a\"\nseeds = [\"10.0.0.1\"]\n[tls]\ninsecure_dev_mode = true", "seeds[0]"),
            ("name = \"a\"\nseeds = [\"10.0.0.1:7400\", \":1\"]\n[tls]\ninsecure_dev_mode = true", "seeds[1]"),
            ("name = \"a\"\nseeds = \"10.0.0.1:7400\"\n[tls]\ninsecure_dev_mode = true", "seeds"),
            ("name = \"a\"\n[tls]\ninsecure_dev_mode = true\n[http]\ntoken = \"0123456789abcdef\"", "listen"),
            ("name = \"a\"\n[tls]\ninsecure_dev_mode = true\n[http]\nlisten = \"127.0.0.1\"", "IP address and port"),
            ("name = \"a\"\n[tls]\ninsecure_dev_mode = true\n[http]\nlisten = \"127.0.0.1:0\"\nport = 1", "port"),
            ("name = \"a\"\n[tls]\ninsecure_dev_mode = true\n[http]\nlisten = \"127.0.0.1:0\"\ntoken = \"short\"", "http.token"),
            ("name = \"a\"\n[tls]\ninsecure_dev_mode = true\n[http]\nlisten = \"127.0.0.1:0\"\ntoken = \"has a space in it ok\"", "http.token"),
            ("name = \"a\"\n[tls]\ninsecure_dev_mode = true\n[http]\nlisten = \"127.0.0.1:0\"\nmax_body_bytes = 0", "http.max_body_bytes"),
            ("name = \"a\"\n[tls]\ninsecure_dev_mode = true\n[http]\nlisten = \"0.0.0.0:8080\"", "set [http] token"),
            ("name = \"a\"\n[tls]\ninsecure_dev_mode = true\n[http]\nlisten = \"[::]:8080\"", "set [http] token"),
            ("name = \"a\"\n[tls]\ninsecure_dev_mode = true\n[http]\nlisten = \"[::]:8080\"", "client_certs = true"),
            ("name = \"a\"\n[tls]\ninsecure_dev_mode = true\n[http]\nlisten = \"127.0.0.1:0\"\nclient_certs = true", "http.client_certs"),
            ("name = \"a\"\n[tls]\ninsecure_dev_mode = true\n[http]\nlisten = \"127.0.0.1:0\"\nclient_certs = \"yes\"", "http.client_certs"),
        ] {
            let err = Config::from_toml(patch, Path::new(".")).unwrap_err().to_string();
            assert!(err.contains(key), "error for {patch:?} does not name {key}: {err}");
        }
    }
}
