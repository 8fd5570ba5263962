//! A trace of what happened, for space-time diagrams and replay checks.
//!
//! Transports and protocol drivers report [`TraceEvent`]s to a [`TraceSink`];
//! [`TraceRecorder`] stamps each with the time since it was created (virtual
//! time under a paused tokio clock) and keeps them as JSON lines, one object
//! per event:
//!
//! ```text
//! {"t_us":1500,"node":"n1","ev":"send","to":"n2","seq":7,"bytes":96,"kind":"ask","tag":"bank.deposit","lamport":3}
//! ```
//!
//! The recorder is deterministic: the same run (same seed) yields
//! byte-identical output, which the simulation tests check.
//!
//! Real nodes record to a [`FileTraceSink`] (`[trace] file`), as the same
//! JSON lines or, cheaper, as a binary trace ([`TraceFormat::Binary`],
//! see [`binary`]); [`read_jsonl`] reads either back as JSON lines.

use std::io::Write;
use std::sync::Mutex;

use serde::Serialize;

pub mod binary;
mod clock;
mod file;
mod json;
mod record;

pub use binary::{read_jsonl, Decoded};
pub use file::{FileTraceSink, TraceFormat};

/// The writer hands its output to the file in pieces of about this size.
const WRITE_CHUNK: usize = 256 << 10;

/// One thing that happened at a node.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(tag = "ev", rename_all = "snake_case")]
pub enum TraceEvent {
    /// A frame left this node.
    Send {
        /// Destination node.
        to: String,
        /// Network-wide sequence number of the frame.
        seq: u64,
        /// Frame size.
        bytes: usize,
        /// tell / ask / reply / error.
        kind: String,
        /// Message type tag.
        tag: String,
        /// Lamport stamp carried, if any.
        #[serde(skip_serializing_if = "Option::is_none")]
        lamport: Option<u64>,
        /// Vector stamp carried, if any.
        #[serde(skip_serializing_if = "Option::is_none")]
        vector: Option<Vec<(String, u64)>>,
        /// The frame whose handling caused this one, as `[node, seq]`
        /// (real nodes: a reply names its ask; see [`FrameEvent::Send`]).
        #[serde(skip_serializing_if = "Option::is_none")]
        cause: Option<(String, u64)>,
    },
    /// A frame was handed to this node.
    Deliver {
        /// Sender node.
        from: String,
        /// Sequence number given at send.
        seq: u64,
    },
    /// A frame to this node was lost (fault injection, crash, partition),
    /// or, with `to`, a frame this node did not get out (recorded on the
    /// sender: `from` is then this node).
    Drop {
        /// Sender node.
        from: String,
        /// The destination, for a frame dropped at its sender.
        #[serde(skip_serializing_if = "Option::is_none")]
        to: Option<String>,
        /// Sequence number given at send.
        seq: u64,
        /// Why.
        reason: String,
    },
    /// A protocol timer fired.
    Timer {
        /// Which protocol / timer.
        name: String,
    },
    /// The node crashed (lost its volatile state).
    Crash,
    /// The node restarted as a new incarnation.
    Restart {
        /// The new incarnation.
        incarnation: String,
    },
    /// A protocol's durable writes became durable (see `crate::storage`).
    Sync {
        /// The protocol instance (its store namespace).
        protocol: String,
        /// Number of the store's sync that made them durable.
        sync: u64,
        /// Submissions (inputs, from every protocol) that shared that sync.
        group: usize,
        /// Writes in that sync.
        writes: usize,
    },
    /// Something happened in the node's supervision tree (see
    /// [`crate::supervision::SupervisionEvent`]).
    Supervision {
        /// The child's path below the root supervisor (`""`: the root).
        path: String,
        /// What happened, e.g. `exited, panicked: boom (at src/x.rs:3:5)`.
        event: String,
    },
    /// A broadcast message was delivered to the application here (reported
    /// once its delivery is durable), as `"ev":"delivered"`:
    ///
    /// ```text
    /// {"t_us":2100,"node":"n2","ev":"delivered","protocol":"broadcast.chat","origin":"n1","seq":3,"index":5,"vector":[["n1",3],["n2",1]],"held_back":false}
    /// ```
    ///
    /// `troupe_protocols::testkit::trace_check` checks causal and total
    /// order from these lines.
    Delivered {
        /// The broadcast instance (its actor name, e.g. `broadcast.chat`).
        protocol: String,
        /// The member that broadcast the message.
        origin: String,
        /// Its number among `origin`'s broadcasts (from 1).
        seq: u64,
        /// Its position among this node's deliveries of `protocol` (from 1).
        index: u64,
        /// Its vector stamp (causal broadcast only): per node name, the
        /// messages of that node the origin had delivered when it broadcast
        /// it, its own entry counting the message (`== seq`).
        #[serde(skip_serializing_if = "Option::is_none")]
        vector: Option<Vec<(String, u64)>>,
        /// It waited in the hold-back queue.
        held_back: bool,
    },
    /// A free-form annotation (a lock granted, a leader elected...).
    Note {
        /// The text.
        text: String,
    },
}

/// A frame-level event, borrowed: what a real node records for every
/// frame it sends, receives or drops, without building a [`TraceEvent`]
/// (its owned strings) on the message path. Serialized exactly as the
/// matching [`TraceEvent`] variant.
///
/// On a real node `seq` is the frame's Lamport stamp: the node ticks its
/// clock once per frame sent, so `(sender, seq)` is unique within a sender's
/// incarnation (a restarted sender starts again from 0; readers match a
/// delivery to the latest send before it). A re-sent copy (an ask's retry,
/// a remembered reply sent again) is the same frame with the same `seq`,
/// recorded once, at its first send.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(tag = "ev", rename_all = "snake_case")]
pub enum FrameEvent<'a> {
    /// A frame left this node.
    Send {
        /// Destination node.
        to: &'a str,
        /// See the type's docs.
        seq: u64,
        /// Frame size.
        bytes: usize,
        /// tell / ask / reply / error.
        kind: &'a str,
        /// Message type tag.
        tag: &'a str,
        /// Lamport stamp carried.
        #[serde(skip_serializing_if = "Option::is_none")]
        lamport: Option<u64>,
        /// The frame whose handling caused this one, `[node, seq]`: for a
        /// reply or error reply, the ask it answers; for a message sent by
        /// an actor while it handled a remote message, that message's frame
        /// (see `crate::remote::current_cause`).
        #[serde(skip_serializing_if = "Option::is_none")]
        cause: Option<(&'a str, u64)>,
    },
    /// A frame was handed to this node.
    Deliver {
        /// Sender node.
        from: &'a str,
        /// The sender's `seq`.
        seq: u64,
    },
    /// A frame was refused here, or (with `to`) not sent by this node.
    Drop {
        /// Sender node.
        from: &'a str,
        /// The destination, for a frame dropped at its sender.
        #[serde(skip_serializing_if = "Option::is_none")]
        to: Option<&'a str>,
        /// The sender's `seq`.
        seq: u64,
        /// Why.
        reason: &'a str,
    },
}

impl FrameEvent<'_> {
    /// The owned event.
    pub fn to_event(&self) -> TraceEvent {
        match *self {
            FrameEvent::Send {
                to,
                seq,
                bytes,
                kind,
                tag,
                lamport,
                cause,
            } => TraceEvent::Send {
                to: to.to_string(),
                seq,
                bytes,
                kind: kind.to_string(),
                tag: tag.to_string(),
                lamport,
                vector: None,
                cause: cause.map(|(n, s)| (n.to_string(), s)),
            },
            FrameEvent::Deliver { from, seq } => TraceEvent::Deliver {
                from: from.to_string(),
                seq,
            },
            FrameEvent::Drop {
                from,
                to,
                seq,
                reason,
            } => TraceEvent::Drop {
                from: from.to_string(),
                to: to.map(str::to_string),
                seq,
                reason: reason.to_string(),
            },
        }
    }
}

/// Where a sink last found the strings of one call site's sends (its
/// node, peer, kind and message tag): kept by the caller (e.g. a
/// `RemoteRef`) and handed to [`TraceSink::record_send_hinted`], so a sink
/// that keeps those strings in slots (the file sink) checks one number
/// instead of comparing the strings on every frame. A hint must only ever
/// be used with the same four strings; a stale hint is only slower.
#[derive(Debug, Default)]
pub struct SlotHint(pub(crate) std::sync::atomic::AtomicU64);

/// Receives trace events.
pub trait TraceSink: Send + Sync + 'static {
    /// Record `event` at `node`.
    fn record(&self, node: &str, event: TraceEvent);
    /// Record a frame-level event at `node` (by default as its
    /// [`TraceEvent`]).
    fn record_frame(&self, node: &str, event: FrameEvent<'_>) {
        self.record(node, event.to_event());
    }
    /// Record a [`FrameEvent::Send`] at `node` made by the call site that
    /// keeps `hint` (by default as [`Self::record_frame`] does; `hint` is
    /// only a shortcut for finding the event's strings).
    fn record_send_hinted(&self, node: &str, event: &FrameEvent<'_>, hint: &SlotHint) {
        let _ = hint;
        self.record_frame(node, *event);
    }
    /// Record that `node` delivered the frames stamped `seqs` from `from`,
    /// in this order, together (one batch read from the network): by
    /// default a [`FrameEvent::Deliver`] each. A sink may give them one
    /// time.
    fn record_delivered(&self, node: &str, from: &str, seqs: &[u64]) {
        for &seq in seqs {
            self.record_frame(node, FrameEvent::Deliver { from, seq });
        }
    }
    /// Write out everything recorded so far (by default nothing to do).
    fn flush(&self) {}
}

#[derive(Serialize)]
struct Line<'a> {
    t_us: u64,
    node: &'a str,
    #[serde(flatten)]
    event: &'a TraceEvent,
}

/// Keeps trace events as JSON lines in memory.
pub struct TraceRecorder {
    start: tokio::time::Instant,
    out: Mutex<Vec<u8>>,
    count: Mutex<u64>,
}

impl TraceRecorder {
    /// A recorder whose time zero is now (call inside the runtime).
    pub fn new() -> Self {
        Self {
            start: tokio::time::Instant::now(),
            out: Mutex::new(Vec::new()),
            count: Mutex::new(0),
        }
    }
    /// Everything recorded so far, as JSON lines.
    pub fn to_jsonl(&self) -> String {
        String::from_utf8_lossy(&self.out.lock().unwrap_or_else(|p| p.into_inner())).into_owned()
    }
    /// Number of events recorded.
    pub fn len(&self) -> u64 {
        *self.count.lock().unwrap_or_else(|p| p.into_inner())
    }
    /// True if nothing was recorded.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
    /// Write the JSON lines to `path`.
    pub fn write_to(&self, path: &std::path::Path) -> std::io::Result<()> {
        let mut f = std::fs::File::create(path)?;
        f.write_all(&self.out.lock().unwrap_or_else(|p| p.into_inner()))
    }
}

impl Default for TraceRecorder {
    fn default() -> Self {
        Self::new()
    }
}

impl TraceSink for TraceRecorder {
    fn record(&self, node: &str, event: TraceEvent) {
        let t_us = self.start.elapsed().as_micros().min(u64::MAX as u128) as u64;
        let line = Line {
            t_us,
            node,
            event: &event,
        };
        let mut out = self.out.lock().unwrap_or_else(|p| p.into_inner());
        if serde_json::to_writer(&mut *out, &line).is_ok() {
            out.push(b'\n');
            *self.count.lock().unwrap_or_else(|p| p.into_inner()) += 1;
        }
    }
}

/// How a [`FileTraceSink`] bounds its files.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Rotation {
    /// When the file passes this size it is renamed `FILE.1` (older ones
    /// shifted to `FILE.2`...) and a new `FILE` is started.
    pub max_bytes: u64,
    /// Rotated files kept (`FILE.1` .. `FILE.keep`); older ones are deleted.
    pub keep: u32,
}

impl Rotation {
    /// Default `max_bytes`: 64 MiB.
    pub const DEFAULT_MAX_BYTES: u64 = 64 << 20;
    /// Default `keep`: 3.
    pub const DEFAULT_KEEP: u32 = 3;

    /// The most bytes the trace files hold together: `max_bytes × (keep +
    /// 1)` (a single line longer than `max_bytes` is the one exception: it
    /// is written whole, in a file of its own).
    pub fn cap(&self) -> u64 {
        self.max_bytes.saturating_mul(u64::from(self.keep) + 1)
    }
}

impl Default for Rotation {
    fn default() -> Self {
        Self {
            max_bytes: Self::DEFAULT_MAX_BYTES,
            keep: Self::DEFAULT_KEEP,
        }
    }
}
