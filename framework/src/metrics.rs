//! The node's metrics: counters kept as traffic flows, and the node's
//! state read when the metrics are scraped.
//!
//! Every [`Node`](crate::Node) owns one [`NodeMetrics`] with its own
//! `prometheus::Registry`: tests and the simulator run many nodes in one
//! process, so nothing here is process-global. The root crate serves them
//! in the Prometheus text format (`GET /metrics`, `troupe::metrics`, which
//! lists every metric of a node); [`Node::gather_metrics`](crate::Node::gather_metrics)
//! returns what the framework itself knows:
//!
//! | metric | type | labels | what |
//! |---|---|---|---|
//! | `troupe_messages_sent_total` | counter | `peer`, `type`, `kind` | remote messages this node handed to the transport, by target node, message type (its registered tag) and kind (`tell`, `ask`, `reply`; an ask's re-sends count, a reply is labelled with its ask's type) |
//! | `troupe_sent_bytes_total` | counter | `peer`, `type`, `kind` | their frames' bytes (envelope included) |
//! | `troupe_messages_received_total` | counter | `peer`, `type`, `kind` | remote messages received from the (authenticated) `peer` and handed to an actor (tells, asks: retried copies included) or to the ask waiting for them (replies) |
//! | `troupe_received_bytes_total` | counter | `peer`, `type`, `kind` | their frames' bytes |
//! | `troupe_ask_duration_seconds` | histogram | `peer`, `type` | time from a remote ask's first send to its answer (a reply or an error answer) |
//! | `troupe_asks_failed_total` | counter | `peer`, `type`, `reason` | remote asks that ended without a reply: `timeout` (deadline passed), `unreachable` (not sent: the peer is `Down`/`Left` or the transport refused), `refused` (answered with an error: unknown actor or type, payload that did not decode, actor stopped, overloaded, refused), `codec` (request or reply did not encode/decode), `node_stopped` |
//! | `troupe_member_transitions_total` | counter | `member`, `status` | changes of the membership view, by member and the status it moved to (`Joining`, `Up`, `Suspect`, `Down`, `Left`) |
//! | `troupe_member_status` | gauge | `member`, `status` | 1 for the member's status in the view, 0 for the four others |
//! | `troupe_frames_received_total` | counter | | frames received from the transport |
//! | `troupe_bad_frames_total` | counter | | frames that did not decode |
//! | `troupe_spoofed_frames_total` | counter | | frames whose claimed sender was not the authenticated peer |
//! | `troupe_undeliverable_messages_total` | counter | | messages for an unknown actor or with an unknown type |
//! | `troupe_asks_deduplicated_total` | counter | | retried copies of asks not executed again |
//! | `troupe_mailbox_full_total` | counter | | times a remote message found its actor's inbox full |
//! | `troupe_dropped_tells_total` | counter | | tells not sent because the target was `Down` or `Left` |
//! | `troupe_asks_in_flight` | gauge | | this node's remote asks waiting for their answer |
//! | `troupe_asks_executing` | gauge | | asks from other nodes handed to this node's actors and not answered yet |
//! | `troupe_inbound_in_flight` | gauge | | deliveries waiting for inbox room, parked messages and unanswered asks: what the dispatcher counts against `runtime.max_inflight_deliveries` |
//! | `troupe_inbound_in_flight_limit` | gauge | | `runtime.max_inflight_deliveries` |
//!
//! plus what protocol instances report through sources
//! ([`NodeMetrics::set_source`]) and event counters
//! ([`NodeMetrics::counter`]), and whatever an application registers in
//! [`NodeMetrics::registry`].
//!
//! **Cost.** Per remote message the sender and the receiver each add two
//! relaxed atomic increments to counters they keep per (peer, type, kind):
//! a `RemoteRef` caches its counters, the inbound dispatcher looks them up
//! in its own map (no lock) or takes them from its cache of the last tell's
//! header. An ask adds a clock read and a histogram observation.
//! `[runtime] message_metrics = false` turns the per-message counters and
//! the ask histogram off (they stay absent from the output); the rest is
//! read from the node's state when scraped and costs nothing in between.
//!
//! **Cardinality.** `peer` and `member` are the node's peers (authenticated
//! senders, or the nodes this node sends to: the transport refuses unknown
//! names before anything is counted); `type` is a registered message tag
//! (inbound messages count only once their tag resolved to a handler,
//! replies take their ask's tag); `kind`, `reason` and `status` are the
//! fixed sets above. So the series grow with members × message types, not
//! with traffic.

use std::collections::{BTreeMap, HashMap};
use std::sync::{Arc, Mutex};
use std::time::Duration;

pub use prometheus;
use prometheus::proto::{self, MetricFamily, MetricType};
use prometheus::{
    Histogram, HistogramOpts, HistogramVec, IntCounter, IntCounterVec, Opts, Registry,
};

use crate::membership::MemberStatus;

/// The kind of a remote message, as the `kind` label names it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum MessageKind {
    /// A tell.
    Tell,
    /// An ask (each copy sent or received).
    Ask,
    /// The answer to an ask (a reply or an error reply).
    Reply,
}

impl MessageKind {
    /// The label value: `tell`, `ask` or `reply`.
    pub fn label(self) -> &'static str {
        match self {
            MessageKind::Tell => "tell",
            MessageKind::Ask => "ask",
            MessageKind::Reply => "reply",
        }
    }
}

/// Which way a message went.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub(crate) enum Direction {
    Sent,
    Received,
}

/// The two counters of one (direction, peer, type, kind): messages and
/// bytes. Cloning shares them.
#[derive(Clone)]
pub(crate) struct Traffic {
    messages: IntCounter,
    bytes: IntCounter,
}

impl Traffic {
    /// One message of `bytes` bytes.
    #[inline]
    pub(crate) fn record(&self, bytes: usize) {
        self.messages.inc();
        self.bytes.inc_by(bytes as u64);
    }
}

/// The counters of the asks this node serves for one (peer, type): asks
/// received and replies sent, found with one lookup per ask and shared
/// with the ask's reply handle.
pub(crate) struct ServedAsks {
    pub(crate) asks: Traffic,
    pub(crate) replies: Traffic,
}

/// The meters of the asks of one handle (one peer, one type).
pub(crate) struct AskMeters {
    /// Each copy of the request sent.
    pub(crate) sent: Traffic,
    /// Each answer received.
    pub(crate) answers: Traffic,
    duration: Histogram,
    failed: IntCounterVec,
    peer: String,
    tag: &'static str,
}

impl AskMeters {
    /// An answer arrived `elapsed` after the first send.
    pub(crate) fn answered(&self, elapsed: Duration) {
        self.duration.observe(elapsed.as_secs_f64());
    }

    /// The ask ended without a reply, for `reason` (see the module docs).
    pub(crate) fn failed(&self, reason: &str) {
        self.failed
            .with_label_values(&[self.peer.as_str(), self.tag, reason])
            .inc();
    }
}

/// The `reason` label of an ask that ended with `error`.
pub(crate) fn failure_reason(error: &crate::error::AskError) -> &'static str {
    use crate::error::AskError;
    match error {
        AskError::Timeout(_) => "timeout",
        AskError::Unreachable(_) => "unreachable",
        AskError::Remote(_) => "refused",
        AskError::Codec(_) => "codec",
        AskError::NodeStopped => "node_stopped",
    }
}

/// Upper bounds of the ask-duration buckets, in seconds: from a busy
/// loopback round trip (~50 us) to the default ask deadline (5 s) and past.
pub const ASK_BUCKETS: [f64; 17] = [
    0.000_05, 0.000_1, 0.000_25, 0.000_5, 0.001, 0.002_5, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5,
    1.0, 2.5, 5.0, 10.0,
];

/// What a source adds to a scrape: see [`NodeMetrics::set_source`].
pub type Source = Box<dyn Fn(&mut Vec<Sample>) -> bool + Send + Sync>;

/// One value a source reports.
#[derive(Debug, Clone, PartialEq)]
pub struct Sample {
    /// The metric's name: `troupe_` prefix, base units, `_total` for
    /// counters.
    pub name: &'static str,
    /// Its help text (the same for every sample of the name).
    pub help: &'static str,
    /// Counter or gauge.
    pub kind: SampleKind,
    /// Its labels (the same names, in the same order, for every sample of
    /// the name).
    pub labels: Vec<(&'static str, String)>,
    /// The value.
    pub value: f64,
}

/// The type of a [`Sample`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SampleKind {
    /// Only grows (a restart of what it counts may reset it).
    Counter,
    /// Goes up and down.
    Gauge,
}

/// A node's metrics. See the module docs.
pub struct NodeMetrics {
    /// Per-message counters and the ask histogram are on.
    message_metrics: bool,
    registry: Registry,
    messages_sent: IntCounterVec,
    sent_bytes: IntCounterVec,
    messages_received: IntCounterVec,
    received_bytes: IntCounterVec,
    ask_duration: HistogramVec,
    asks_failed: IntCounterVec,
    transitions: IntCounterVec,
    /// Counters made by [`NodeMetrics::counter`], by name.
    counters: Mutex<HashMap<&'static str, IntCounterVec>>,
    /// Read at every scrape, by key.
    sources: Mutex<BTreeMap<String, Source>>,
}

impl std::fmt::Debug for NodeMetrics {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("NodeMetrics")
            .field("message_metrics", &self.message_metrics)
            .finish_non_exhaustive()
    }
}

fn counter_vec(registry: &Registry, name: &str, help: &str, labels: &[&str]) -> IntCounterVec {
    let vec = IntCounterVec::new(Opts::new(name, help), labels)
        .unwrap_or_else(|e| panic!("metric {name}: {e}"));
    registry
        .register(Box::new(vec.clone()))
        .unwrap_or_else(|e| panic!("metric {name}: {e}"));
    vec
}

impl NodeMetrics {
    /// Fresh metrics, with the per-message counters on or off.
    pub fn new(message_metrics: bool) -> Self {
        let registry = Registry::new();
        let traffic = ["peer", "type", "kind"];
        let r = &registry;
        let ask_duration = HistogramVec::new(
            HistogramOpts::new(
                "troupe_ask_duration_seconds",
                "Time from a remote ask's first send to its answer (a reply or an error answer).",
            )
            .buckets(ASK_BUCKETS.to_vec()),
            &["peer", "type"],
        )
        .expect("the ask histogram's options are valid");
        registry
            .register(Box::new(ask_duration.clone()))
            .expect("a fresh registry");
        Self {
            message_metrics,
            messages_sent: counter_vec(
                r,
                "troupe_messages_sent_total",
                "Remote messages handed to the transport, by target node, message type and kind.",
                &traffic,
            ),
            sent_bytes: counter_vec(
                r,
                "troupe_sent_bytes_total",
                "Bytes of the frames of the remote messages handed to the transport.",
                &traffic,
            ),
            messages_received: counter_vec(
                r,
                "troupe_messages_received_total",
                "Remote messages received and handed to an actor or to the waiting ask, by sender, message type and kind.",
                &traffic,
            ),
            received_bytes: counter_vec(
                r,
                "troupe_received_bytes_total",
                "Bytes of the frames of the remote messages received.",
                &traffic,
            ),
            asks_failed: counter_vec(
                r,
                "troupe_asks_failed_total",
                "Remote asks that ended without a reply, by reason (timeout, unreachable, refused, codec, node_stopped).",
                &["peer", "type", "reason"],
            ),
            transitions: counter_vec(
                r,
                "troupe_member_transitions_total",
                "Changes of the membership view, by member and the status it moved to.",
                &["member", "status"],
            ),
            ask_duration,
            registry,
            counters: Mutex::new(HashMap::new()),
            sources: Mutex::new(BTreeMap::new()),
        }
    }

    /// True when the per-message counters and the ask histogram are on
    /// (`[runtime] message_metrics`).
    pub fn message_metrics(&self) -> bool {
        self.message_metrics
    }

    /// The node's registry: the framework's counters are in it, and an
    /// application may register its own (they are served with the rest).
    pub fn registry(&self) -> &Registry {
        &self.registry
    }

    /// The counters of messages of type `tag` and `kind` to or from `peer`;
    /// `None` when per-message counters are off.
    pub(crate) fn traffic(
        &self,
        dir: Direction,
        peer: &str,
        tag: &str,
        kind: MessageKind,
    ) -> Option<Traffic> {
        if !self.message_metrics {
            return None;
        }
        let (messages, bytes) = match dir {
            Direction::Sent => (&self.messages_sent, &self.sent_bytes),
            Direction::Received => (&self.messages_received, &self.received_bytes),
        };
        let labels = [peer, tag, kind.label()];
        Some(Traffic {
            messages: messages.with_label_values(&labels),
            bytes: bytes.with_label_values(&labels),
        })
    }

    /// The meters of asks of type `tag` to `peer`; `None` when
    /// per-message counters are off.
    pub(crate) fn ask_meters(&self, peer: &str, tag: &'static str) -> Option<Arc<AskMeters>> {
        Some(Arc::new(AskMeters {
            sent: self.traffic(Direction::Sent, peer, tag, MessageKind::Ask)?,
            answers: self.traffic(Direction::Received, peer, tag, MessageKind::Reply)?,
            duration: self.ask_duration.with_label_values(&[peer, tag]),
            failed: self.asks_failed.clone(),
            peer: peer.to_string(),
            tag,
        }))
    }

    /// Count a change of the membership view.
    pub(crate) fn transition(&self, member: &str, status: MemberStatus) {
        self.transitions
            .with_label_values(&[member, status.name()])
            .inc();
    }

    /// The counter `name` with these labels, made (and registered) on first
    /// use: for counts pushed as things happen (a protocol's events). Every
    /// call for one name must give the same help and label names, in the
    /// same order; `None` (and a warning) when they differ from the first
    /// call's or are not valid Prometheus names. Keep the child it returns
    /// rather than asking again for every increment.
    pub fn counter(
        &self,
        name: &'static str,
        help: &'static str,
        labels: &[(&str, &str)],
    ) -> Option<IntCounter> {
        let names: Vec<&str> = labels.iter().map(|(n, _)| *n).collect();
        let values: Vec<&str> = labels.iter().map(|(_, v)| *v).collect();
        let mut counters = self.counters.lock().unwrap_or_else(|p| p.into_inner());
        let vec = match counters.get(name) {
            Some(v) => v.clone(),
            None => {
                let made = IntCounterVec::new(Opts::new(name, help), &names)
                    .and_then(|v| self.registry.register(Box::new(v.clone())).map(|()| v));
                match made {
                    Ok(v) => {
                        counters.insert(name, v.clone());
                        v
                    }
                    Err(e) => {
                        tracing::warn!(metric = name, error = %e, "counter not registered");
                        return None;
                    }
                }
            }
        };
        drop(counters);
        match vec.get_metric_with_label_values(&values) {
            Ok(c) => Some(c),
            Err(e) => {
                tracing::warn!(metric = name, labels = ?names, error = %e, "counter labels differ from its first use");
                None
            }
        }
    }

    /// Read `source` at every scrape from now on, under `key` (replacing
    /// the source of that key, e.g. a protocol instance started again). It
    /// pushes its samples and returns `false` once it is gone for good
    /// (then it is dropped).
    pub fn set_source(&self, key: impl Into<String>, source: Source) {
        self.sources
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .insert(key.into(), source);
    }

    /// Stop reading the source of `key`.
    pub fn remove_source(&self, key: &str) {
        self.sources
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .remove(key);
    }

    /// The registry's metrics and the sources' samples, now.
    pub fn gather(&self) -> Families {
        let mut f = Families::new();
        f.extend(self.registry.gather());
        let mut samples = Vec::new();
        self.sources
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .retain(|_, source| source(&mut samples));
        for s in &samples {
            f.sample(s);
        }
        f
    }
}

/// True for a valid Prometheus metric name.
pub fn valid_metric_name(name: &str) -> bool {
    let mut chars = name.chars();
    chars
        .next()
        .is_some_and(|c| c.is_ascii_alphabetic() || c == '_' || c == ':')
        && chars.all(|c| c.is_ascii_alphanumeric() || c == '_' || c == ':')
}

/// True for a valid Prometheus label name (not starting with `__`, which
/// Prometheus keeps for itself).
pub fn valid_label_name(name: &str) -> bool {
    let mut chars = name.chars();
    !name.starts_with("__")
        && chars
            .next()
            .is_some_and(|c| c.is_ascii_alphabetic() || c == '_')
        && chars.all(|c| c.is_ascii_alphanumeric() || c == '_')
}

/// Metric families being assembled for one scrape: families of one name
/// are merged (their samples together under one help and type), and the
/// result is sorted by name, as the text format wants.
#[derive(Default)]
pub struct Families {
    by_name: BTreeMap<String, MetricFamily>,
}

impl Families {
    /// None yet.
    pub fn new() -> Self {
        Self::default()
    }

    /// Add a counter sample (`name` should end in `_total`).
    pub fn counter(&mut self, name: &str, help: &str, labels: &[(&str, &str)], value: f64) {
        let mut c = proto::Counter::default();
        c.set_value(value);
        let mut m = metric(labels);
        m.set_counter(c);
        self.push(name, help, MetricType::COUNTER, m);
    }

    /// Add a gauge sample.
    pub fn gauge(&mut self, name: &str, help: &str, labels: &[(&str, &str)], value: f64) {
        let mut g = proto::Gauge::default();
        g.set_value(value);
        let mut m = metric(labels);
        m.set_gauge(g);
        self.push(name, help, MetricType::GAUGE, m);
    }

    /// Add a source's sample.
    pub fn sample(&mut self, s: &Sample) {
        let labels: Vec<(&str, &str)> = s.labels.iter().map(|(n, v)| (*n, v.as_str())).collect();
        match s.kind {
            SampleKind::Counter => self.counter(s.name, s.help, &labels, s.value),
            SampleKind::Gauge => self.gauge(s.name, s.help, &labels, s.value),
        }
    }

    /// Add gathered families (e.g. a registry's), merging names seen before.
    pub fn extend(&mut self, families: impl IntoIterator<Item = MetricFamily>) {
        for mut family in families {
            let metrics = family.take_metric();
            let (name, help, kind) = (
                family.name().to_string(),
                family.help().to_string(),
                family.get_field_type(),
            );
            for m in metrics {
                self.push(&name, &help, kind, m);
            }
        }
    }

    fn push(&mut self, name: &str, help: &str, kind: MetricType, m: proto::Metric) {
        if !valid_metric_name(name) || !m.get_label().iter().all(|l| valid_label_name(l.name())) {
            tracing::warn!(metric = name, "invalid metric or label name: left out");
            return;
        }
        let family = self.by_name.entry(name.to_string()).or_insert_with(|| {
            let mut f = MetricFamily::default();
            f.set_name(name.to_string());
            f.set_help(help.to_string());
            f.set_field_type(kind);
            f
        });
        if family.get_field_type() != kind {
            tracing::warn!(
                metric = name,
                "a metric of this name has another type: left out"
            );
            return;
        }
        family.mut_metric().push(m);
    }

    /// The families, sorted by name.
    pub fn into_vec(self) -> Vec<MetricFamily> {
        self.by_name.into_values().collect()
    }

    /// The families in the Prometheus text exposition format, version 0.0.4
    /// ([`TEXT_CONTENT_TYPE`]).
    pub fn encode_text(self) -> String {
        use prometheus::Encoder;
        let families = self.into_vec();
        let mut out = Vec::new();
        // Writing into a Vec fails only on a family without samples, which
        // `push` never makes.
        if let Err(e) = prometheus::TextEncoder::new().encode(&families, &mut out) {
            tracing::warn!(error = %e, "metrics did not encode");
        }
        String::from_utf8(out).unwrap_or_else(|e| String::from_utf8_lossy(e.as_bytes()).into())
    }
}

/// The content type of [`Families::encode_text`]'s output.
pub const TEXT_CONTENT_TYPE: &str = "text/plain; version=0.0.4; charset=utf-8";

fn metric(labels: &[(&str, &str)]) -> proto::Metric {
    let pairs = labels
        .iter()
        .map(|(n, v)| {
            let mut p = proto::LabelPair::default();
            p.set_name(n.to_string());
            p.set_value(v.to_string());
            p
        })
        .collect();
    let mut m = proto::Metric::default();
    m.set_label(pairs);
    m
}

/// Counters per (direction, kind, peer, type), for one task (the inbound
/// dispatcher): a plain map, no lock; the key is built in a reused buffer.
#[derive(Default)]
pub(crate) struct TrafficCache {
    map: HashMap<Box<str>, Option<Traffic>>,
    served: HashMap<Box<str>, Option<Arc<ServedAsks>>>,
    key: String,
}

impl TrafficCache {
    fn key(&mut self, dir: Direction, kind: MessageKind, peer: &str, tag: &str) {
        self.key.clear();
        self.key.push(match dir {
            Direction::Sent => 's',
            Direction::Received => 'r',
        });
        self.key.push(match kind {
            MessageKind::Tell => 't',
            MessageKind::Ask => 'a',
            MessageKind::Reply => 'r',
        });
        self.key.push_str(peer);
        self.key.push('\0');
        self.key.push_str(tag);
    }

    /// The counters of (dir, kind, peer, tag), looked up once and kept.
    pub(crate) fn get(
        &mut self,
        metrics: &NodeMetrics,
        dir: Direction,
        kind: MessageKind,
        peer: &str,
        tag: &str,
    ) -> Option<Traffic> {
        if !metrics.message_metrics {
            return None;
        }
        self.key(dir, kind, peer, tag);
        if let Some(t) = self.map.get(self.key.as_str()) {
            return t.clone();
        }
        let t = metrics.traffic(dir, peer, tag, kind);
        self.map.insert(self.key.as_str().into(), t.clone());
        t
    }

    /// The counters of asks of type `tag` served for `peer` (received asks,
    /// sent replies), looked up once and kept.
    pub(crate) fn served(
        &mut self,
        metrics: &NodeMetrics,
        peer: &str,
        tag: &str,
    ) -> Option<Arc<ServedAsks>> {
        if !metrics.message_metrics {
            return None;
        }
        self.key.clear();
        self.key.push_str(peer);
        self.key.push('\0');
        self.key.push_str(tag);
        if let Some(s) = self.served.get(self.key.as_str()) {
            return s.clone();
        }
        let s = Some(Arc::new(ServedAsks {
            asks: metrics.traffic(Direction::Received, peer, tag, MessageKind::Ask)?,
            replies: metrics.traffic(Direction::Sent, peer, tag, MessageKind::Reply)?,
        }));
        self.served.insert(self.key.as_str().into(), s.clone());
        s
    }

    /// Count one message of `bytes` bytes (without cloning the counters).
    pub(crate) fn record(
        &mut self,
        metrics: &NodeMetrics,
        dir: Direction,
        kind: MessageKind,
        peer: &str,
        tag: &str,
        bytes: usize,
    ) {
        if !metrics.message_metrics {
            return;
        }
        self.key(dir, kind, peer, tag);
        if let Some(t) = self.map.get(self.key.as_str()) {
            if let Some(t) = t {
                t.record(bytes);
            }
            return;
        }
        let t = metrics.traffic(dir, peer, tag, kind);
        if let Some(t) = &t {
            t.record(bytes);
        }
        self.map.insert(self.key.as_str().into(), t);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn text(m: &NodeMetrics) -> String {
        m.gather().encode_text()
    }

    #[test]
    fn traffic_counts_per_peer_type_and_kind() {
        let m = NodeMetrics::new(true);
        let t = m
            .traffic(Direction::Sent, "b", "bank.deposit", MessageKind::Tell)
            .unwrap();
        t.record(100);
        t.record(50);
        let mut cache = TrafficCache::default();
        for _ in 0..3 {
            cache.record(
                &m,
                Direction::Received,
                MessageKind::Ask,
                "c",
                "bank.read",
                10,
            );
        }
        let out = text(&m);
        assert!(
            out.contains(
                "troupe_messages_sent_total{kind=\"tell\",peer=\"b\",type=\"bank.deposit\"} 2"
            ),
            "{out}"
        );
        assert!(
            out.contains(
                "troupe_sent_bytes_total{kind=\"tell\",peer=\"b\",type=\"bank.deposit\"} 150"
            ),
            "{out}"
        );
        assert!(
            out.contains(
                "troupe_messages_received_total{kind=\"ask\",peer=\"c\",type=\"bank.read\"} 3"
            ),
            "{out}"
        );
        assert!(
            out.contains(
                "troupe_received_bytes_total{kind=\"ask\",peer=\"c\",type=\"bank.read\"} 30"
            ),
            "{out}"
        );
    }

    #[test]
    fn message_metrics_off_counts_nothing() {
        let m = NodeMetrics::new(false);
        assert!(m
            .traffic(Direction::Sent, "b", "x", MessageKind::Tell)
            .is_none());
        assert!(m.ask_meters("b", "x").is_none());
        let mut cache = TrafficCache::default();
        cache.record(&m, Direction::Received, MessageKind::Tell, "b", "x", 10);
        assert!(cache
            .get(&m, Direction::Received, MessageKind::Tell, "b", "x")
            .is_none());
        assert!(!text(&m).contains("troupe_messages_"), "{}", text(&m));
    }

    #[test]
    fn counters_are_made_once_and_refuse_other_labels() {
        let m = NodeMetrics::new(true);
        let a = m
            .counter(
                "troupe_test_events_total",
                "Test events.",
                &[("protocol", "p")],
            )
            .unwrap();
        a.inc();
        let b = m
            .counter(
                "troupe_test_events_total",
                "Test events.",
                &[("protocol", "p")],
            )
            .unwrap();
        b.inc();
        assert_eq!(a.get(), 2, "the same child");
        assert!(m
            .counter(
                "troupe_test_events_total",
                "Test events.",
                &[("protocol", "p"), ("extra", "x")]
            )
            .is_none());
        assert!(m.counter("not a name", "x", &[]).is_none());
        assert!(text(&m).contains("troupe_test_events_total{protocol=\"p\"} 2"));
    }

    #[test]
    fn sources_are_read_at_each_scrape_and_dropped_when_gone() {
        let m = NodeMetrics::new(true);
        let value = Arc::new(std::sync::atomic::AtomicU64::new(3));
        let v = value.clone();
        m.set_source(
            "raft.kv",
            Box::new(move |out| {
                let now = v.load(std::sync::atomic::Ordering::Relaxed);
                if now == 0 {
                    return false;
                }
                out.push(Sample {
                    name: "troupe_test_term",
                    help: "A test gauge.",
                    kind: SampleKind::Gauge,
                    labels: vec![("protocol", "raft.kv".into())],
                    value: now as f64,
                });
                true
            }),
        );
        assert!(text(&m).contains("troupe_test_term{protocol=\"raft.kv\"} 3"));
        value.store(7, std::sync::atomic::Ordering::Relaxed);
        assert!(text(&m).contains("troupe_test_term{protocol=\"raft.kv\"} 7"));
        value.store(0, std::sync::atomic::Ordering::Relaxed);
        assert!(!text(&m).contains("troupe_test_term"));
        assert!(
            m.sources.lock().unwrap().is_empty(),
            "a gone source is dropped"
        );
    }

    #[test]
    fn families_of_one_name_merge_and_bad_names_are_left_out() {
        let mut f = Families::new();
        f.gauge("troupe_x", "X.", &[("a", "1")], 1.0);
        f.gauge("troupe_x", "X.", &[("a", "2")], 2.0);
        f.counter("troupe_x", "X.", &[("a", "3")], 3.0);
        f.gauge("bad name", "X.", &[], 1.0);
        f.gauge("troupe_y", "Y.", &[("__reserved", "1")], 1.0);
        let families = f.into_vec();
        assert_eq!(families.len(), 1);
        assert_eq!(families[0].get_metric().len(), 2);
        assert!(valid_metric_name("troupe_a:b_1"));
        assert!(!valid_metric_name("1troupe"));
        assert!(valid_label_name("_a1"));
        assert!(!valid_label_name("a-b"));
    }
}
