//! Node configuration: the framework's part of a node's TOML file.
//!
//! Every field has a default (listed on each field), so the smallest valid
//! file is `name = "node-a"`. [`NodeConfig::validate`] rejects values that
//! cannot work and names the offending key. The full node file (transport,
//! TLS, peers, failure detector) is assembled by the root `troupe` crate,
//! which embeds this struct.

use std::time::Duration;

use serde::{Deserialize, Serialize};

use crate::error::NodeError;
use crate::supervision::SupervisorPolicy;

/// Serde helper: a [`Duration`] written as whole milliseconds.
pub mod duration_ms {
    use serde::{Deserialize, Deserializer, Serializer};
    use std::time::Duration;

    /// Serialize as milliseconds.
    pub fn serialize<S: Serializer>(d: &Duration, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_u64(d.as_millis().min(u64::MAX as u128) as u64)
    }
    /// Deserialize from milliseconds (a non-negative integer).
    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Duration, D::Error> {
        Ok(Duration::from_millis(u64::deserialize(d)?))
    }
}

/// How an `ask` is retried while waiting for its reply.
///
/// The same request (same correlation id) is re-sent after `initial_backoff`,
/// then after intervals growing by `multiplier` up to `max_backoff`, at most
/// `max_attempts` sends in all, until the reply or the ask's deadline. The
/// receiving node executes a retried request at most once (see [`crate::rpc`]).
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct RetryPolicy {
    /// Delay before the first re-send (default 200 ms).
    #[serde(rename = "initial_backoff_ms", with = "duration_ms")]
    pub initial_backoff: Duration,
    /// Growth factor between re-sends (default 2.0; must be >= 1).
    pub multiplier: f64,
    /// Largest delay between re-sends (default 2000 ms).
    #[serde(rename = "max_backoff_ms", with = "duration_ms")]
    pub max_backoff: Duration,
    /// Total sends, the first included (default 8; 1 disables retries).
    pub max_attempts: u32,
    /// Random extra delay, as a fraction of each back-off (default 0.2),
    /// so that many clients do not retry in lock-step.
    pub jitter: f64,
}

impl Default for RetryPolicy {
    fn default() -> Self {
        Self {
            initial_backoff: Duration::from_millis(200),
            multiplier: 2.0,
            max_backoff: Duration::from_millis(2000),
            max_attempts: 8,
            jitter: 0.2,
        }
    }
}

impl RetryPolicy {
    /// Send once, never retry.
    pub fn none() -> Self {
        Self {
            max_attempts: 1,
            ..Self::default()
        }
    }
    /// The delay before send number `attempt + 1` (attempt >= 1), without jitter.
    pub fn backoff(&self, attempt: u32) -> Duration {
        let exp = self
            .multiplier
            .max(1.0)
            .powi(attempt.saturating_sub(1).min(64) as i32);
        let d = self.initial_backoff.as_secs_f64() * exp;
        Duration::from_secs_f64(d.min(self.max_backoff.as_secs_f64()))
    }
    fn validate(&self, key: &str) -> Result<(), NodeError> {
        if self.initial_backoff.is_zero() {
            return Err(NodeError::Config(format!(
                "{key}.initial_backoff_ms must be > 0"
            )));
        }
        if !(self.multiplier.is_finite() && self.multiplier >= 1.0) {
            return Err(NodeError::Config(format!(
                "{key}.multiplier must be >= 1, got {}",
                self.multiplier
            )));
        }
        if self.max_attempts == 0 {
            return Err(NodeError::Config(format!(
                "{key}.max_attempts must be >= 1"
            )));
        }
        if !(0.0..=1.0).contains(&self.jitter) {
            return Err(NodeError::Config(format!(
                "{key}.jitter must be within 0..=1, got {}",
                self.jitter
            )));
        }
        Ok(())
    }
}

/// Runtime limits and defaults of a node (`[runtime]` in the TOML file).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct NodeOptions {
    /// Capacity of the channel from the transport to the node (default 8192
    /// events). When full, the transport stops reading: back-pressure. A
    /// transport that hands its streams to the node (QUIC) sends only
    /// connection events and streams through it; their frames are read by
    /// the node directly, bounded by `max_inflight_deliveries`.
    pub inbound_queue: usize,
    /// Deliveries to local actors that may wait at once for a full mailbox or
    /// a reply (default 4096). Past it the node stops taking inbound frames.
    pub max_inflight_deliveries: usize,
    /// Largest frame accepted or sent, in bytes (default 1 MiB).
    pub max_frame_bytes: usize,
    /// Default deadline of an `ask` (default 5000 ms).
    #[serde(rename = "ask_timeout_ms", with = "duration_ms")]
    pub ask_timeout: Duration,
    /// How long an answered request is remembered for deduplicating retries
    /// (default 60000 ms). Keep it above the longest ask deadline.
    #[serde(rename = "dedup_ttl_ms", with = "duration_ms")]
    pub dedup_ttl: Duration,
    /// Most requests remembered for deduplication (default 100000); the
    /// oldest are forgotten first.
    pub dedup_capacity: usize,
    /// Retry policy for asks (`[runtime.retry]`).
    pub retry: RetryPolicy,
    /// Count remote messages and bytes per peer, message type and kind,
    /// and time remote asks, for the node's metrics (default true; see
    /// [`crate::metrics`]). Off, those counters and the ask histogram are
    /// left out of `GET /metrics`; what is read from the node's state when
    /// scraped is still there.
    pub message_metrics: bool,
}

impl Default for NodeOptions {
    fn default() -> Self {
        Self {
            inbound_queue: 8192,
            max_inflight_deliveries: 4096,
            max_frame_bytes: crate::codec::DEFAULT_MAX_FRAME_LEN,
            ask_timeout: Duration::from_millis(5000),
            dedup_ttl: Duration::from_millis(60_000),
            dedup_capacity: 100_000,
            retry: RetryPolicy::default(),
            message_metrics: true,
        }
    }
}

/// The framework's node configuration.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct NodeConfig {
    /// The node's name (required): 1-64 characters of `[A-Za-z0-9._-]`.
    pub name: String,
    /// Runtime limits (`[runtime]`, all optional).
    #[serde(default)]
    pub runtime: NodeOptions,
    /// Restart policy of the node's root supervisor (`[supervision]`, all optional).
    #[serde(default)]
    pub supervision: SupervisorPolicy,
}

impl NodeConfig {
    /// A config with the given name and every default.
    pub fn named(name: impl Into<String>) -> Self {
        Self {
            name: name.into(),
            runtime: NodeOptions::default(),
            supervision: SupervisorPolicy::default(),
        }
    }
    /// Parse TOML text and validate it.
    pub fn from_toml(text: &str) -> Result<Self, NodeError> {
        let c: NodeConfig = toml::from_str(text).map_err(|e| NodeError::Config(e.to_string()))?;
        c.validate()?;
        Ok(c)
    }
    /// Check every value; the error names the key.
    pub fn validate(&self) -> Result<(), NodeError> {
        crate::ids::validate_name(&self.name)
            .map_err(|e| NodeError::Config(format!("name: {e}")))?;
        let r = &self.runtime;
        for (key, v) in [
            ("runtime.inbound_queue", r.inbound_queue),
            ("runtime.max_inflight_deliveries", r.max_inflight_deliveries),
            ("runtime.dedup_capacity", r.dedup_capacity),
        ] {
            if v == 0 {
                return Err(NodeError::Config(format!("{key} must be > 0")));
            }
        }
        if r.max_frame_bytes < 256 {
            return Err(NodeError::Config(format!(
                "runtime.max_frame_bytes must be >= 256, got {}",
                r.max_frame_bytes
            )));
        }
        if r.ask_timeout.is_zero() {
            return Err(NodeError::Config(
                "runtime.ask_timeout_ms must be > 0".into(),
            ));
        }
        if r.dedup_ttl < r.ask_timeout {
            return Err(NodeError::Config(format!(
                "runtime.dedup_ttl_ms ({:?}) must be >= runtime.ask_timeout_ms ({:?}), or retried asks could run twice",
                r.dedup_ttl, r.ask_timeout
            )));
        }
        r.retry.validate("runtime.retry")?;
        self.supervision.validate("supervision")?;
        if self.supervision.on_give_up == crate::supervision::GiveUp::Stop {
            return Err(NodeError::Config(
                "supervision.on_give_up = \"stop\" would leave the node running with nothing \
                 in it: the root supervisor can \"escalate\" (stop the node, the default) \
                 or \"restart\" everything below it"
                    .into(),
            ));
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn smallest_file_gets_every_default() {
        let c = NodeConfig::from_toml("name = \"node-a\"").unwrap();
        assert_eq!(c, NodeConfig::named("node-a"));
    }

    #[test]
    fn fields_override_defaults() {
        let c = NodeConfig::from_toml(
            "name = \"b\"\n[runtime]\nask_timeout_ms = 300\n[runtime.retry]\nmax_attempts = 3\n[supervision]\nstrategy = \"one-for-all\"\nmax_restarts = 2\n",
        )
        .unwrap();
        assert_eq!(c.runtime.ask_timeout, Duration::from_millis(300));
        assert_eq!(c.runtime.retry.max_attempts, 3);
        assert_eq!(
            c.supervision.strategy,
            crate::supervision::Strategy::OneForAll
        );
        assert_eq!(c.supervision.max_restarts, 2);
    }

    #[test]
    fn bad_values_name_their_key() {
        for (text, key) in [
            ("name = \"a b\"", "name"),
            (
                "name = \"a\"\n[runtime]\ninbound_queue = 0",
                "runtime.inbound_queue",
            ),
            (
                "name = \"a\"\n[runtime]\nmax_frame_bytes = 10",
                "runtime.max_frame_bytes",
            ),
            (
                "name = \"a\"\n[runtime]\ndedup_ttl_ms = 10",
                "runtime.dedup_ttl_ms",
            ),
            (
                "name = \"a\"\n[runtime.retry]\nmultiplier = 0.5",
                "runtime.retry.multiplier",
            ),
            (
                "name = \"a\"\n[runtime.retry]\njitter = 3.0",
                "runtime.retry.jitter",
            ),
            (
                "name = \"a\"\n[runtime]\nask_timeout_ms = -5",
                "ask_timeout_ms",
            ),
            ("name = \"a\"\n[runtime]\nno_such_key = 1", "no_such_key"),
            (
                "name = \"a\"\n[runtime.retry]\nmax_attemps = 3",
                "max_attemps",
            ),
            (
                "name = \"a\"\n[supervision]\nmax_restart = 3",
                "max_restart",
            ),
            (
                "name = \"a\"\n[supervision]\non_give_up = \"stop\"",
                "supervision.on_give_up",
            ),
            (
                "name = \"a\"\n[supervision]\nstrategy = \"rest-for-two\"",
                "rest-for-two",
            ),
        ] {
            let err = NodeConfig::from_toml(text).unwrap_err().to_string();
            assert!(
                err.contains(key),
                "error for {text:?} does not name {key}: {err}"
            );
        }
    }

    #[test]
    fn retry_backoff_grows_and_caps() {
        let r = RetryPolicy::default();
        assert_eq!(r.backoff(1), Duration::from_millis(200));
        assert_eq!(r.backoff(2), Duration::from_millis(400));
        assert_eq!(r.backoff(10), Duration::from_millis(2000));
    }
}
