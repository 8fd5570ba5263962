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

use std::io::Write;
use std::sync::Mutex;

use serde::Serialize;

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
    },
    /// A frame was handed to this node.
    Deliver {
        /// Sender node.
        from: String,
        /// Sequence number given at send.
        seq: u64,
    },
    /// A frame to this node was lost (fault injection, crash, partition).
    Drop {
        /// Sender node.
        from: String,
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

/// Receives trace events.
pub trait TraceSink: Send + Sync + 'static {
    /// Record `event` at `node`.
    fn record(&self, node: &str, event: TraceEvent);
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

/// Appends trace events as JSON lines to a file (`[trace] file` of a
/// node's config), one `write` per line, so that a node killed at any
/// moment leaves whole lines behind. `t_us` is wall-clock time in
/// microseconds since the Unix epoch, so that the files of several nodes
/// can be read together; within one file, lines are in the order the node
/// recorded them.
pub struct FileTraceSink {
    file: Mutex<std::fs::File>,
}

impl FileTraceSink {
    /// Open `path` for appending (created if missing).
    pub fn append(path: &std::path::Path) -> std::io::Result<Self> {
        let file = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(path)?;
        Ok(Self {
            file: Mutex::new(file),
        })
    }
}

impl TraceSink for FileTraceSink {
    fn record(&self, node: &str, event: TraceEvent) {
        let t_us = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_micros().min(u64::MAX as u128) as u64);
        let line = Line {
            t_us,
            node,
            event: &event,
        };
        if let Ok(mut bytes) = serde_json::to_vec(&line) {
            bytes.push(b'\n');
            let mut f = self.file.lock().unwrap_or_else(|p| p.into_inner());
            if let Err(e) = f.write_all(&bytes) {
                tracing::warn!(error = %e, "trace file: a line was not written");
            }
        }
    }
}
