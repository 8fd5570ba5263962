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
use std::sync::{Arc, Mutex};

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

/// Receives trace events.
pub trait TraceSink: Send + Sync + 'static {
    /// Record `event` at `node`.
    fn record(&self, node: &str, event: TraceEvent);
    /// Record a frame-level event at `node` (by default as its
    /// [`TraceEvent`]).
    fn record_frame(&self, node: &str, event: FrameEvent<'_>) {
        self.record(node, event.to_event());
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

/// Lines waiting for the writer past this many bytes are dropped (and
/// counted) instead of blocking the node.
const PENDING_CAP: usize = 8 << 20;
/// The writer is woken early once this many bytes wait.
const WAKE_AT: usize = 256 << 10;
/// The writer writes out what waits at least this often.
const FLUSH_EVERY: std::time::Duration = std::time::Duration::from_millis(50);

#[derive(Default)]
struct Pending {
    lines: Vec<u8>,
    /// Lines dropped since the writer last took `lines`.
    dropped_since: u64,
    /// Lines dropped in all.
    dropped: u64,
    /// The node name of the last line (for the writer's own notes).
    node: String,
    woken: bool,
    shutdown: bool,
    flush_asked: u64,
    flushed: u64,
}

struct SinkShared {
    pending: Mutex<Pending>,
    wake: std::sync::Condvar,
    done: std::sync::Condvar,
}

impl SinkShared {
    fn lock(&self) -> std::sync::MutexGuard<'_, Pending> {
        self.pending.lock().unwrap_or_else(|p| p.into_inner())
    }
}

thread_local! {
    static LINE: std::cell::RefCell<Vec<u8>> = const { std::cell::RefCell::new(Vec::new()) };
}

/// Appends trace events as JSON lines to a file (`[trace] file` of a
/// node's config). `t_us` is wall-clock time in microseconds since the
/// Unix epoch, so that the files of several nodes can be read together;
/// within one file, lines are in the order the node recorded them.
///
/// Cheap on the node's paths: a line is serialized by the caller and
/// appended to a buffer under a short lock; a background thread writes the
/// buffer out (whole lines only) at least every 50 ms, when 256 KiB wait,
/// on [`TraceSink::flush`] and when the sink is dropped. If more than
/// 8 MiB wait (the disk cannot keep up), further lines are dropped and
/// counted, never blocking the node; once the writer catches up it writes a
/// `note` line saying how many were lost. A node killed by a signal loses
/// the lines not yet written (at most about 50 ms of them).
///
/// The file is bounded by [`Rotation`]: past `max_bytes` it is renamed
/// `FILE.1` (`FILE.1` to `FILE.2`..., beyond `keep` deleted) and a new one
/// is started; a line never spans two files.
pub struct FileTraceSink {
    shared: Arc<SinkShared>,
    writer: Mutex<Option<std::thread::JoinHandle<()>>>,
}

impl FileTraceSink {
    /// Open `path` for appending (created if missing), with the default
    /// [`Rotation`].
    pub fn append(path: &std::path::Path) -> std::io::Result<Self> {
        Self::with_rotation(path, Rotation::default())
    }

    /// Open `path` for appending (created if missing), rotated as `rotation`
    /// says.
    pub fn with_rotation(path: &std::path::Path, rotation: Rotation) -> std::io::Result<Self> {
        let mut out = RotatingFile::open(path.to_path_buf(), rotation)?;
        let shared = Arc::new(SinkShared {
            pending: Mutex::new(Pending::default()),
            wake: std::sync::Condvar::new(),
            done: std::sync::Condvar::new(),
        });
        let s = shared.clone();
        let writer = std::thread::Builder::new()
            .name("troupe-trace".into())
            .spawn(move || write_loop(&s, &mut out))?;
        Ok(Self {
            shared,
            writer: Mutex::new(Some(writer)),
        })
    }

    /// Lines dropped so far because the writer was behind.
    pub fn dropped(&self) -> u64 {
        self.shared.lock().dropped
    }

    fn push(&self, node: &str, line: &impl Serialize) {
        self.push_with(node, |buf| serde_json::to_writer(buf, line).is_ok());
    }

    /// Append the line `write` puts in a buffer (`false`: no line).
    fn push_with(&self, node: &str, write: impl FnOnce(&mut Vec<u8>) -> bool) {
        LINE.with(|cell| {
            let mut fresh = Vec::new();
            let mut guard = cell.try_borrow_mut();
            let buf = match guard.as_deref_mut() {
                Ok(b) => b,
                Err(_) => &mut fresh,
            };
            buf.clear();
            if !write(&mut *buf) {
                return;
            }
            buf.push(b'\n');
            let mut p = self.shared.lock();
            if p.lines.len() + buf.len() > PENDING_CAP {
                p.dropped_since += 1;
                p.dropped += 1;
                return;
            }
            if p.node != node {
                p.node = node.to_string();
            }
            p.lines.extend_from_slice(buf);
            if p.lines.len() >= WAKE_AT && !p.woken {
                p.woken = true;
                self.shared.wake.notify_one();
            }
        });
    }
}

/// One frame event as a JSON line (without its newline), the fields in
/// the order serde writes them.
fn write_frame_line(buf: &mut Vec<u8>, t_us: u64, node: &str, event: &FrameEvent<'_>) {
    buf.extend_from_slice(b"{\"t_us\":");
    write_u64(buf, t_us);
    buf.extend_from_slice(b",\"node\":");
    write_json_str(buf, node);
    match *event {
        FrameEvent::Send {
            to,
            seq,
            bytes,
            kind,
            tag,
            lamport,
            cause,
        } => {
            buf.extend_from_slice(b",\"ev\":\"send\",\"to\":");
            write_json_str(buf, to);
            buf.extend_from_slice(b",\"seq\":");
            write_u64(buf, seq);
            buf.extend_from_slice(b",\"bytes\":");
            write_u64(buf, bytes as u64);
            buf.extend_from_slice(b",\"kind\":");
            write_json_str(buf, kind);
            buf.extend_from_slice(b",\"tag\":");
            write_json_str(buf, tag);
            if let Some(l) = lamport {
                buf.extend_from_slice(b",\"lamport\":");
                write_u64(buf, l);
            }
            if let Some((n, s)) = cause {
                buf.extend_from_slice(b",\"cause\":[");
                write_json_str(buf, n);
                buf.push(b',');
                write_u64(buf, s);
                buf.push(b']');
            }
        }
        FrameEvent::Deliver { from, seq } => {
            buf.extend_from_slice(b",\"ev\":\"deliver\",\"from\":");
            write_json_str(buf, from);
            buf.extend_from_slice(b",\"seq\":");
            write_u64(buf, seq);
        }
        FrameEvent::Drop {
            from,
            to,
            seq,
            reason,
        } => {
            buf.extend_from_slice(b",\"ev\":\"drop\",\"from\":");
            write_json_str(buf, from);
            if let Some(to) = to {
                buf.extend_from_slice(b",\"to\":");
                write_json_str(buf, to);
            }
            buf.extend_from_slice(b",\"seq\":");
            write_u64(buf, seq);
            buf.extend_from_slice(b",\"reason\":");
            write_json_str(buf, reason);
        }
    }
    buf.push(b'}');
}

fn write_u64(buf: &mut Vec<u8>, mut v: u64) {
    let mut digits = [0u8; 20];
    let mut i = digits.len();
    loop {
        i -= 1;
        digits[i] = b'0' + (v % 10) as u8;
        v /= 10;
        if v == 0 {
            break;
        }
    }
    buf.extend_from_slice(&digits[i..]);
}

/// A JSON string: copied as is when nothing in it needs escaping (node
/// names and message tags), else escaped by serde_json.
fn write_json_str(buf: &mut Vec<u8>, s: &str) {
    if s.bytes()
        .all(|b| b >= 0x20 && b != b'"' && b != b'\\' && b < 0x7f)
    {
        buf.push(b'"');
        buf.extend_from_slice(s.as_bytes());
        buf.push(b'"');
    } else if serde_json::to_writer(&mut *buf, s).is_err() {
        buf.extend_from_slice(b"\"\"");
    }
}

fn now_us() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_micros().min(u64::MAX as u128) as u64)
}

impl TraceSink for FileTraceSink {
    fn record(&self, node: &str, event: TraceEvent) {
        let line = Line {
            t_us: now_us(),
            node,
            event: &event,
        };
        self.push(node, &line);
    }

    fn record_frame(&self, node: &str, event: FrameEvent<'_>) {
        // Written by hand: the same JSON as `record` gives, several times
        // cheaper than serde's flattened tagged enum (every frame costs
        // two lines, at up to millions of frames a second).
        self.push_with(node, |buf| {
            write_frame_line(buf, now_us(), node, &event);
            true
        });
    }

    fn flush(&self) {
        let mut p = self.shared.lock();
        if p.shutdown {
            return;
        }
        p.flush_asked += 1;
        let want = p.flush_asked;
        self.shared.wake.notify_one();
        while p.flushed < want && !p.shutdown {
            p = self.shared.done.wait(p).unwrap_or_else(|e| e.into_inner());
        }
    }
}

impl Drop for FileTraceSink {
    fn drop(&mut self) {
        self.shared.lock().shutdown = true;
        self.shared.wake.notify_one();
        let writer = self.writer.lock().unwrap_or_else(|p| p.into_inner()).take();
        if let Some(w) = writer {
            let _ = w.join();
        }
    }
}

/// The writer thread: takes the waiting lines and writes them out, until
/// the sink is dropped (then once more, so nothing recorded is lost).
fn write_loop(shared: &SinkShared, out: &mut RotatingFile) {
    let mut batch = Vec::new();
    loop {
        let (dropped, node, asked, shutdown) = {
            let mut p = shared.lock();
            if p.lines.is_empty() && !p.shutdown && p.flush_asked == p.flushed {
                p = shared
                    .wake
                    .wait_timeout(p, FLUSH_EVERY)
                    .unwrap_or_else(|e| e.into_inner())
                    .0;
            }
            std::mem::swap(&mut p.lines, &mut batch);
            p.woken = false;
            let dropped = std::mem::take(&mut p.dropped_since);
            let node = if dropped > 0 {
                p.node.clone()
            } else {
                String::new()
            };
            (dropped, node, p.flush_asked, p.shutdown)
        };
        if dropped > 0 {
            let note = TraceEvent::Note {
                text: format!("trace: {dropped} lines dropped (the trace writer fell behind)"),
            };
            let line = Line {
                t_us: now_us(),
                node: &node,
                event: &note,
            };
            if serde_json::to_writer(&mut batch, &line).is_ok() {
                batch.push(b'\n');
            }
        }
        if !batch.is_empty() {
            if let Err(e) = out.write_lines(&batch) {
                tracing::warn!(error = %e, path = %out.path.display(), "trace file: lines were not written");
            }
            batch.clear();
            if batch.capacity() > 4 * WAKE_AT {
                batch = Vec::new();
            }
        }
        let mut p = shared.lock();
        p.flushed = p.flushed.max(asked);
        shared.done.notify_all();
        if shutdown {
            return;
        }
    }
}

/// A file that is rotated by size (see [`Rotation`]).
struct RotatingFile {
    path: std::path::PathBuf,
    file: Option<std::fs::File>,
    size: u64,
    rotation: Rotation,
}

impl RotatingFile {
    fn open(path: std::path::PathBuf, rotation: Rotation) -> std::io::Result<Self> {
        let mut f = Self {
            path,
            file: None,
            size: 0,
            rotation,
        };
        f.reopen()?;
        Ok(f)
    }

    fn reopen(&mut self) -> std::io::Result<()> {
        let file = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&self.path)?;
        self.size = file.metadata()?.len();
        self.file = Some(file);
        Ok(())
    }

    fn numbered(&self, i: u32) -> std::path::PathBuf {
        let mut p = self.path.clone().into_os_string();
        p.push(format!(".{i}"));
        p.into()
    }

    /// `FILE` becomes `FILE.1`, `FILE.1` becomes `FILE.2`... up to `keep`
    /// (the oldest is replaced); with `keep = 0`, `FILE` is deleted.
    fn rotate(&mut self) -> std::io::Result<()> {
        self.file = None;
        let keep = self.rotation.keep;
        if keep == 0 {
            std::fs::remove_file(&self.path)?;
        } else {
            for i in (1..keep).rev() {
                match std::fs::rename(self.numbered(i), self.numbered(i + 1)) {
                    Err(e) if e.kind() != std::io::ErrorKind::NotFound => return Err(e),
                    _ => {}
                }
            }
            std::fs::rename(&self.path, self.numbered(1))?;
        }
        self.reopen()
    }

    /// Write `lines` (whole lines), rotating where the file would pass
    /// `max_bytes`, never inside a line.
    fn write_lines(&mut self, mut lines: &[u8]) -> std::io::Result<()> {
        let max = self.rotation.max_bytes;
        while !lines.is_empty() {
            let room = usize::try_from(max.saturating_sub(self.size)).unwrap_or(usize::MAX);
            let take = if lines.len() <= room {
                lines.len()
            } else {
                match lines[..room].iter().rposition(|&b| b == b'\n') {
                    Some(end) => end + 1,
                    // Not even one more line fits: rotate first, unless the
                    // file is empty (a line longer than `max_bytes` is
                    // written whole, alone).
                    None if self.size > 0 => {
                        self.rotate()?;
                        continue;
                    }
                    None => lines
                        .iter()
                        .position(|&b| b == b'\n')
                        .map_or(lines.len(), |end| end + 1),
                }
            };
            if self.file.is_none() {
                self.reopen()?;
            }
            let Some(file) = self.file.as_mut() else {
                return Ok(());
            };
            file.write_all(&lines[..take])?;
            self.size += take as u64;
            lines = &lines[take..];
            if self.size >= max {
                self.rotate()?;
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn temp_dir(name: &str) -> std::path::PathBuf {
        let d = std::env::temp_dir().join(format!("troupe-trace-{name}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&d);
        std::fs::create_dir_all(&d).unwrap();
        d
    }

    #[test]
    fn rotation_keeps_whole_lines_and_at_most_keep_plus_one_files() {
        let dir = temp_dir("rotate");
        let path = dir.join("n.jsonl");
        let rotation = Rotation {
            max_bytes: 1000,
            keep: 2,
        };
        let sink = FileTraceSink::with_rotation(&path, rotation).unwrap();
        let total = 200u64;
        for i in 0..total {
            sink.record(
                "n1",
                TraceEvent::Note {
                    text: format!("line {i} {}", "x".repeat((i % 17) as usize)),
                },
            );
        }
        sink.flush();
        drop(sink);
        let mut files: Vec<_> = std::fs::read_dir(&dir)
            .unwrap()
            .map(|e| e.unwrap().file_name().into_string().unwrap())
            .collect();
        files.sort();
        assert_eq!(files, ["n.jsonl", "n.jsonl.1", "n.jsonl.2"], "{files:?}");
        let mut seen = Vec::new();
        for name in ["n.jsonl.2", "n.jsonl.1", "n.jsonl"] {
            let text = std::fs::read_to_string(dir.join(name)).unwrap();
            assert!(
                text.len() as u64 <= rotation.max_bytes,
                "{name}: {}",
                text.len()
            );
            assert!(text.is_empty() || text.ends_with('\n'), "{name}");
            for line in text.lines() {
                let v: serde_json::Value = serde_json::from_str(line)
                    .unwrap_or_else(|e| panic!("{name}: split line {line:?}: {e}"));
                let t = v["text"].as_str().unwrap();
                let n: u64 = t.split(' ').nth(1).unwrap().parse().unwrap();
                seen.push(n);
            }
        }
        let total_bytes: u64 = files
            .iter()
            .map(|f| std::fs::metadata(dir.join(f)).unwrap().len())
            .sum();
        assert!(total_bytes <= rotation.cap());
        // The newest lines survive, in order and without gaps.
        assert!(!seen.is_empty());
        let first = seen[0];
        assert_eq!(seen, (first..total).collect::<Vec<_>>());
        assert!(first > 0, "the oldest lines were rotated away");
    }

    #[test]
    fn frame_events_serialize_like_trace_events() {
        let dir = temp_dir("frames");
        let path = dir.join("n.jsonl");
        let sink = FileTraceSink::append(&path).unwrap();
        let ev = FrameEvent::Send {
            to: "b",
            seq: 7,
            bytes: 90,
            kind: "reply",
            tag: "",
            lamport: Some(7),
            cause: Some(("b", 3)),
        };
        let others = [
            ev,
            FrameEvent::Send {
                to: "odd \"name\"\n\u{e9}",
                seq: u64::MAX,
                bytes: 0,
                kind: "tell",
                tag: "x.y",
                lamport: None,
                cause: None,
            },
            FrameEvent::Deliver { from: "b", seq: 0 },
            FrameEvent::Drop {
                from: "a",
                to: Some("c"),
                seq: 12345678901,
                reason: "queue full\t\\",
            },
            FrameEvent::Drop {
                from: "c",
                to: None,
                seq: 9,
                reason: "",
            },
        ];
        for e in others {
            sink.record_frame("a", e);
            sink.record("a", e.to_event());
        }
        sink.flush();
        let text = std::fs::read_to_string(&path).unwrap();
        let lines: Vec<serde_json::Value> = text
            .lines()
            .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("{l}: {e}")))
            .collect();
        assert_eq!(lines.len(), 2 * others.len());
        assert_eq!(lines[0]["ev"], "send");
        assert_eq!(lines[0]["cause"], serde_json::json!(["b", 3]));
        assert_eq!(lines[0]["seq"], 7);
        let strip = |v: &serde_json::Value| {
            let mut v = v.clone();
            v.as_object_mut().unwrap().remove("t_us");
            v
        };
        for pair in lines.chunks(2) {
            // Hand-written and serde lines say the same.
            assert_eq!(strip(&pair[0]), strip(&pair[1]));
        }
        // Byte for byte too, once the times are equal.
        let raw: Vec<&str> = text.lines().collect();
        let untimed = |l: &str| l.split_once(',').unwrap().1.to_string();
        for pair in raw.chunks(2) {
            assert_eq!(untimed(pair[0]), untimed(pair[1]));
        }
    }
}
