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

/// Records waiting for the writer past this many bytes are dropped (and
/// counted) instead of blocking the node.
const PENDING_CAP: usize = 8 << 20;
/// The writer is woken early once this many bytes of records wait.
const WAKE_AT: usize = 128 << 10;
/// The writer writes out what waits at least this often.
const FLUSH_EVERY: std::time::Duration = std::time::Duration::from_millis(50);
/// The writer hands its JSON to the file in pieces of about this size.
const WRITE_CHUNK: usize = 256 << 10;
/// Records are kept in buffers of this size, allocated once and reused
/// (a growing buffer would cost the node reallocations and fresh pages).
const CHUNK: usize = 64 << 10;
/// Empty chunks kept for reuse past a burst (the rest are freed).
const SPARE_CHUNKS: usize = 32;

/// What a [`FileTraceSink`] stamps its records with, read on the node's
/// thread for every line.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[cfg_attr(not(target_arch = "x86_64"), allow(dead_code))]
enum Clock {
    /// The CPU's time-stamp counter (x86-64, when the kernel itself keeps
    /// time with it, so it is invariant and synchronized across cores):
    /// about a third of the cost of a wall-clock read on a VM. The writer
    /// maps it to wall-clock time (see [`Span`]).
    Tsc,
    /// Wall-clock nanoseconds since the Unix epoch.
    Wall,
}

impl Clock {
    /// The TSC where the kernel's clock source is the TSC, else the wall
    /// clock (decided once per process).
    fn detect() -> Self {
        static CLOCK: std::sync::OnceLock<Clock> = std::sync::OnceLock::new();
        *CLOCK.get_or_init(|| {
            #[cfg(target_arch = "x86_64")]
            {
                let source = std::fs::read_to_string(
                    "/sys/devices/system/clocksource/clocksource0/current_clocksource",
                );
                if source.is_ok_and(|s| s.trim() == "tsc") {
                    return Clock::Tsc;
                }
            }
            Clock::Wall
        })
    }

    #[inline]
    fn read(self) -> u64 {
        match self {
            #[cfg(target_arch = "x86_64")]
            // SAFETY: `rdtsc` has no preconditions (x86-64 always has it).
            Clock::Tsc => unsafe { core::arch::x86_64::_rdtsc() },
            _ => now_ns(),
        }
    }

    /// A reading of this clock and of the wall clock at the same moment.
    fn pair(self) -> Pair {
        if self == Clock::Wall {
            let w = now_ns();
            return Pair { raw: w, wall_ns: w };
        }
        // The wall clock between two counter reads, the tightest of a few
        // tries (the thread may be preempted between the reads).
        let mut best = (u64::MAX, Pair { raw: 0, wall_ns: 0 });
        for _ in 0..4 {
            let a = self.read();
            let wall_ns = now_ns();
            let b = self.read();
            let width = b.wrapping_sub(a);
            if width < best.0 {
                best = (
                    width,
                    Pair {
                        raw: a + width / 2,
                        wall_ns,
                    },
                );
            }
            // ~10 us at any plausible counter rate.
            if width < 30_000 {
                break;
            }
        }
        best.1
    }
}

/// A [`Clock`] reading and the wall-clock time (ns since the epoch) it
/// stands for.
#[derive(Debug, Clone, Copy)]
struct Pair {
    raw: u64,
    wall_ns: u64,
}

/// Maps the raw stamps of the records of one batch to wall-clock
/// microseconds: linearly between the pair taken when the writer took the
/// previous batch and the pair taken when it took this one, clamped to that
/// interval (every record of the batch was stamped within it, give or take
/// a preemption between a stamp and its append).
#[derive(Debug, Clone, Copy)]
struct Span {
    from: Pair,
    to: Pair,
    /// Wall-clock ns per raw tick.
    scale: f64,
    wall: bool,
}

impl Span {
    fn new(clock: Clock, from: Pair, to: Pair) -> Self {
        let ticks = to.raw.saturating_sub(from.raw);
        let ns = to.wall_ns.saturating_sub(from.wall_ns);
        Self {
            from,
            to,
            scale: if ticks == 0 {
                0.0
            } else {
                ns as f64 / ticks as f64
            },
            wall: clock == Clock::Wall,
        }
    }

    #[inline]
    fn micros(self, raw: u64) -> u64 {
        let ns = if self.wall {
            raw
        } else if raw <= self.from.raw || self.to.wall_ns <= self.from.wall_ns {
            // Before the interval, or the wall clock went back: its start
            // (its end if it went back).
            if self.to.wall_ns <= self.from.wall_ns {
                self.to.wall_ns
            } else {
                self.from.wall_ns
            }
        } else if raw >= self.to.raw {
            self.to.wall_ns
        } else {
            let off = ((raw - self.from.raw) as f64 * self.scale) as u64;
            (self.from.wall_ns + off).min(self.to.wall_ns)
        };
        ns / 1000
    }
}

/// The binary records a [`FileTraceSink`] keeps for its writer: a tag
/// byte, the raw [`Clock`] stamp (u64, little-endian), then the fields of
/// the event, integers as u64 and strings as a u32 length and their bytes.
/// The writer turns them into JSON lines.
mod rec {
    /// `FrameEvent::Send`: seq, bytes, [lamport], [cause seq], then the
    /// strings as one block (its length, u32, first): node, to, kind, tag,
    /// [cause node]. The block is what the writer's [`super::Template`]
    /// for sends is keyed by.
    pub(super) const SEND: u8 = 1;
    /// `FrameEvent::Deliver`: seq, then the block of strings node, from.
    pub(super) const DELIVER: u8 = 2;
    /// `FrameEvent::Drop`: seq, node, from, reason, [to].
    pub(super) const DROP: u8 = 3;
    /// Any other event: the JSON line without its `t_us` (it starts with
    /// `{"node":`).
    pub(super) const JSON: u8 = 4;
    /// Flag: the first optional field is there (lamport; drop's `to`).
    pub(super) const OPT_A: u8 = 0x10;
    /// Flag: the second optional field is there (cause).
    pub(super) const OPT_B: u8 = 0x20;
}

/// Bytes a string takes in a record.
#[inline]
fn str_len(s: &str) -> usize {
    4 + s.len()
}

#[inline]
fn put_u64(buf: &mut Vec<u8>, v: u64) {
    buf.extend_from_slice(&v.to_le_bytes());
}

#[inline]
fn put_str(buf: &mut Vec<u8>, s: &str) {
    // Longer strings are cut (at a char boundary) to what a u32 counts.
    let mut end = s.len().min(u32::MAX as usize);
    while !s.is_char_boundary(end) {
        end -= 1;
    }
    buf.extend_from_slice(&(end as u32).to_le_bytes());
    buf.extend_from_slice(&s.as_bytes()[..end]);
}

/// The size of `event`'s record.
#[inline]
fn frame_record_len(node: &str, event: &FrameEvent<'_>) -> usize {
    9 + match *event {
        FrameEvent::Send {
            to,
            kind,
            tag,
            lamport,
            cause,
            ..
        } => {
            20 + str_len(node)
                + str_len(to)
                + str_len(kind)
                + str_len(tag)
                + lamport.map_or(0, |_| 8)
                + cause.map_or(0, |(n, _)| 8 + str_len(n))
        }
        FrameEvent::Deliver { from, .. } => 12 + str_len(node) + str_len(from),
        FrameEvent::Drop {
            from, to, reason, ..
        } => 8 + str_len(node) + str_len(from) + str_len(reason) + to.map_or(0, str_len),
    }
}

/// Reserve a block's length; returns where it goes.
#[inline]
fn block_start(buf: &mut Vec<u8>) -> usize {
    buf.extend_from_slice(&[0; 4]);
    buf.len()
}

/// Write the length of the block begun at `start`.
#[inline]
fn block_end(buf: &mut [u8], start: usize) {
    let len = (buf.len() - start) as u32;
    buf[start - 4..start].copy_from_slice(&len.to_le_bytes());
}

/// Append `event`'s record, stamped `raw`.
#[inline]
fn put_frame_record(buf: &mut Vec<u8>, raw: u64, node: &str, event: &FrameEvent<'_>) {
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
            let mut t = rec::SEND;
            if lamport.is_some() {
                t |= rec::OPT_A;
            }
            if cause.is_some() {
                t |= rec::OPT_B;
            }
            buf.push(t);
            put_u64(buf, raw);
            put_u64(buf, seq);
            put_u64(buf, bytes as u64);
            if let Some(l) = lamport {
                put_u64(buf, l);
            }
            if let Some((_, s)) = cause {
                put_u64(buf, s);
            }
            let block = block_start(buf);
            put_str(buf, node);
            put_str(buf, to);
            put_str(buf, kind);
            put_str(buf, tag);
            if let Some((n, _)) = cause {
                put_str(buf, n);
            }
            block_end(buf, block);
        }
        FrameEvent::Deliver { from, seq } => {
            buf.push(rec::DELIVER);
            put_u64(buf, raw);
            put_u64(buf, seq);
            let block = block_start(buf);
            put_str(buf, node);
            put_str(buf, from);
            block_end(buf, block);
        }
        FrameEvent::Drop {
            from,
            to,
            seq,
            reason,
        } => {
            buf.push(rec::DROP | if to.is_some() { rec::OPT_A } else { 0 });
            put_u64(buf, raw);
            put_u64(buf, seq);
            put_str(buf, node);
            put_str(buf, from);
            put_str(buf, reason);
            if let Some(to) = to {
                put_str(buf, to);
            }
        }
    }
}

/// Reads records back.
struct Reader<'a> {
    buf: &'a [u8],
}

impl<'a> Reader<'a> {
    #[inline]
    fn u8(&mut self) -> Option<u8> {
        let (&b, rest) = self.buf.split_first()?;
        self.buf = rest;
        Some(b)
    }

    #[inline]
    fn u64(&mut self) -> Option<u64> {
        let (head, rest) = self.buf.split_first_chunk::<8>()?;
        self.buf = rest;
        Some(u64::from_le_bytes(*head))
    }

    #[inline]
    fn bytes(&mut self) -> Option<&'a [u8]> {
        let (head, rest) = self.buf.split_first_chunk::<4>()?;
        let len = u32::from_le_bytes(*head) as usize;
        if rest.len() < len {
            return None;
        }
        let (s, rest) = rest.split_at(len);
        self.buf = rest;
        Some(s)
    }

    #[inline]
    fn str(&mut self) -> Option<&'a str> {
        std::str::from_utf8(self.bytes()?).ok()
    }
}

/// Bytes an [`Out`] keeps free past every piece, so that a short piece
/// (padded to this size) is copied with one fixed-size move.
const SLACK: usize = 64;

/// The writer's JSON, written through a cursor into zeroed room (which
/// spares it a `memcpy` call and a capacity check per piece).
struct Out {
    buf: Vec<u8>,
    pos: usize,
}

impl Out {
    fn new() -> Self {
        Self {
            buf: vec![0; WRITE_CHUNK + (8 << 10)],
            pos: 0,
        }
    }

    /// What was written.
    fn text(&self) -> &[u8] {
        &self.buf[..self.pos]
    }

    /// Make room for `n` more bytes (and the slack).
    #[inline]
    fn room(&mut self, n: usize) {
        if self.pos + n + SLACK > self.buf.len() {
            self.buf.resize(self.pos + n + SLACK, 0);
        }
    }

    #[inline]
    fn lit<const N: usize>(&mut self, s: &[u8; N]) {
        self.buf[self.pos..self.pos + N].copy_from_slice(s);
        self.pos += N;
    }

    /// The first `p.len` bytes of a [`Padded`] piece.
    #[inline]
    fn piece(&mut self, p: &Padded) {
        if p.len <= SLACK {
            // Its padding lands past the cursor, to be overwritten.
            self.buf[self.pos..self.pos + SLACK].copy_from_slice(&p.bytes[..SLACK]);
        } else {
            self.buf[self.pos..self.pos + p.len].copy_from_slice(&p.bytes[..p.len]);
        }
        self.pos += p.len;
    }

    /// Any bytes (room made here).
    fn bytes(&mut self, b: &[u8]) {
        self.room(b.len());
        self.buf[self.pos..self.pos + b.len()].copy_from_slice(b);
        self.pos += b.len();
    }

    /// `v` in decimal (room for 20 digits must have been made).
    #[inline]
    fn num(&mut self, mut v: u64) {
        let n = v.checked_ilog10().unwrap_or(0) as usize + 1;
        let digits = &mut self.buf[self.pos..self.pos + n];
        let mut i = n;
        while v >= 100 {
            let d = (v % 100) as usize * 2;
            v /= 100;
            i -= 2;
            digits[i..i + 2].copy_from_slice(&DIGIT_PAIRS[d..d + 2]);
        }
        if v >= 10 {
            let d = v as usize * 2;
            digits[..2].copy_from_slice(&DIGIT_PAIRS[d..d + 2]);
        } else {
            digits[0] = b'0' + v as u8;
        }
        self.pos += n;
    }
}

/// A piece of a line, followed by at least [`SLACK`] bytes of padding.
#[derive(Default)]
struct Padded {
    bytes: Vec<u8>,
    len: usize,
}

impl Padded {
    /// Build the piece with `f`.
    fn set(&mut self, f: impl FnOnce(&mut Vec<u8>)) {
        self.bytes.clear();
        f(&mut self.bytes);
        self.len = self.bytes.len();
        self.bytes.resize(self.len + SLACK, 0);
    }
}

/// The constant middle parts of the JSON lines of the last send, or
/// delivery, the writer formatted, keyed by their record's block of
/// strings: a node's frames mostly go to few peers with few message types,
/// so the strings are escaped once, not once per line.
#[derive(Default)]
struct Template {
    /// The block of strings it was made from (empty: none yet).
    key: Vec<u8>,
    /// Send: `,"node":…,"ev":"send","to":…,"seq":`; deliver:
    /// `,"node":…,"ev":"deliver","from":…,"seq":`.
    head: Padded,
    /// Send: `,"kind":…,"tag":…`.
    mid: Padded,
    /// Send with a cause: `,"cause":[…,` (else empty).
    cause: Padded,
}

impl Template {
    /// Make this the template of a send whose block of strings is `block`.
    fn make_send(&mut self, block: &[u8]) -> Option<()> {
        let mut r = Reader { buf: block };
        let (node, to, kind, tag) = (r.str()?, r.str()?, r.str()?, r.str()?);
        let cause = if r.buf.is_empty() {
            None
        } else {
            Some(r.str()?)
        };
        self.head.set(|b| {
            b.extend_from_slice(b",\"node\":");
            write_json_str(b, node);
            b.extend_from_slice(b",\"ev\":\"send\",\"to\":");
            write_json_str(b, to);
            b.extend_from_slice(b",\"seq\":");
        });
        self.mid.set(|b| {
            b.extend_from_slice(b",\"kind\":");
            write_json_str(b, kind);
            b.extend_from_slice(b",\"tag\":");
            write_json_str(b, tag);
        });
        self.cause.set(|b| {
            if let Some(c) = cause {
                b.extend_from_slice(b",\"cause\":[");
                write_json_str(b, c);
                b.push(b',');
            }
        });
        self.key.clear();
        self.key.extend_from_slice(block);
        Some(())
    }

    /// Make this the template of a delivery whose block of strings is
    /// `block`.
    fn make_deliver(&mut self, block: &[u8]) -> Option<()> {
        let mut r = Reader { buf: block };
        let (node, from) = (r.str()?, r.str()?);
        self.head.set(|b| {
            b.extend_from_slice(b",\"node\":");
            write_json_str(b, node);
            b.extend_from_slice(b",\"ev\":\"deliver\",\"from\":");
            write_json_str(b, from);
            b.extend_from_slice(b",\"seq\":");
        });
        self.key.clear();
        self.key.extend_from_slice(block);
        Some(())
    }
}

/// What the writer keeps from line to line.
#[derive(Default)]
struct Formatter {
    send: Template,
    deliver: Template,
    /// `t_us / 10_000` of the last line, and its digits: the time's leading
    /// digits change every 10 ms only.
    t_high: u64,
    t_high_digits: Padded,
    /// For the lines not written through templates.
    scratch: Vec<u8>,
}

impl Formatter {
    /// `{"t_us":T` (room for 20 + 8 bytes must have been made).
    #[inline]
    fn time(&mut self, out: &mut Out, t_us: u64) {
        out.lit(b"{\"t_us\":");
        let high = t_us / 10_000;
        if high == 0 {
            out.num(t_us);
            return;
        }
        if high != self.t_high || self.t_high_digits.len == 0 {
            self.t_high = high;
            self.t_high_digits.set(|b| write_u64(b, high));
        }
        out.piece(&self.t_high_digits);
        let low = (t_us % 10_000) as usize;
        out.lit(&[
            DIGIT_PAIRS[low / 100 * 2],
            DIGIT_PAIRS[low / 100 * 2 + 1],
            DIGIT_PAIRS[low % 100 * 2],
            DIGIT_PAIRS[low % 100 * 2 + 1],
        ]);
    }

    /// Turn the next record of `r` into a JSON line (with its newline) at
    /// the end of `out`; `None` when no whole record is left (or it is not
    /// one).
    fn record(&mut self, r: &mut Reader<'_>, span: &Span, out: &mut Out) -> Option<()> {
        let tag = r.u8()?;
        let t_us = span.micros(r.u64()?);
        match tag & 0x0f {
            rec::SEND => {
                let seq = r.u64()?;
                let bytes = r.u64()?;
                let lamport = if tag & rec::OPT_A != 0 {
                    Some(r.u64()?)
                } else {
                    None
                };
                let cause_seq = if tag & rec::OPT_B != 0 {
                    Some(r.u64()?)
                } else {
                    None
                };
                let block = r.bytes()?;
                if self.send.key != block {
                    self.send.make_send(block)?;
                }
                let t = &self.send;
                if cause_seq.is_some() != (t.cause.len > 0) {
                    return None;
                }
                // Time, 4 numbers and the literals: under 256 bytes.
                out.room(t.head.len + t.mid.len + t.cause.len + 256);
                self.time(out, t_us);
                let t = &self.send;
                out.piece(&t.head);
                out.num(seq);
                out.lit(b",\"bytes\":");
                out.num(bytes);
                out.piece(&t.mid);
                if let Some(l) = lamport {
                    out.lit(b",\"lamport\":");
                    out.num(l);
                }
                if let Some(s) = cause_seq {
                    out.piece(&t.cause);
                    out.num(s);
                    out.lit(b"]");
                }
                out.lit(b"}\n");
            }
            rec::DELIVER => {
                let seq = r.u64()?;
                let block = r.bytes()?;
                if self.deliver.key != block {
                    self.deliver.make_deliver(block)?;
                }
                out.room(self.deliver.head.len + 128);
                self.time(out, t_us);
                out.piece(&self.deliver.head);
                out.num(seq);
                out.lit(b"}\n");
            }
            rec::DROP => {
                let seq = r.u64()?;
                let node = r.str()?;
                let from = r.str()?;
                let reason = r.str()?;
                let to = if tag & rec::OPT_A != 0 {
                    Some(r.str()?)
                } else {
                    None
                };
                let event = FrameEvent::Drop {
                    from,
                    to,
                    seq,
                    reason,
                };
                self.scratch.clear();
                write_frame_line(&mut self.scratch, t_us, node, &event);
                self.scratch.push(b'\n');
                out.bytes(&self.scratch);
            }
            rec::JSON => {
                let rest = r.bytes()?.get(1..)?;
                // `{"node":"…",…}` after `{"t_us":…,`.
                out.room(64);
                self.time(out, t_us);
                out.lit(b",");
                out.bytes(rest);
                out.lit(b"\n");
            }
            _ => return None,
        }
        Some(())
    }
}

struct Pending {
    /// Records for the writer (see [`rec`]), in chunks, the last one being
    /// filled; a record never spans two.
    chunks: Vec<Vec<u8>>,
    /// Bytes in `chunks`.
    bytes: usize,
    /// Empty chunks to reuse.
    spare: Vec<Vec<u8>>,
    /// Lines dropped since the writer last took `records`.
    dropped_since: u64,
    /// Lines dropped in all.
    dropped: u64,
    /// The node name of the last dropped line (for the writer's note).
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
/// Cheap on the node's paths: a frame event is appended as a small binary
/// record (its fields and a time stamp: the CPU's time-stamp counter where
/// the kernel keeps time with it, else the wall clock) to a buffer under a
/// short lock, with no allocation once the buffer has grown; other events
/// are serialized by the caller. A background thread turns the records into
/// JSON lines (the time stamps into wall-clock time, interpolated between
/// two wall-clock readings it takes per batch) and writes them out (whole
/// lines only) at least every 50 ms, when 128 KiB of records wait, on
/// [`TraceSink::flush`] and when the sink is dropped. If more than 8 MiB of
/// records wait (the disk cannot keep up), further lines are dropped and
/// counted, never blocking the node; once the writer catches up it writes a
/// `note` line saying how many were lost. A node killed by a signal loses
/// the lines not yet written (at most about 50 ms of them).
///
/// The file is bounded by [`Rotation`]: past `max_bytes` it is renamed
/// `FILE.1` (`FILE.1` to `FILE.2`..., beyond `keep` deleted) and a new one
/// is started; a line never spans two files.
pub struct FileTraceSink {
    shared: Arc<SinkShared>,
    clock: Clock,
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
        Self::with_clock(path, rotation, Clock::detect())
    }

    fn with_clock(
        path: &std::path::Path,
        rotation: Rotation,
        clock: Clock,
    ) -> std::io::Result<Self> {
        let mut out = RotatingFile::open(path.to_path_buf(), rotation)?;
        let shared = Arc::new(SinkShared {
            pending: Mutex::new(Pending {
                chunks: Vec::new(),
                bytes: 0,
                spare: Vec::new(),
                dropped_since: 0,
                dropped: 0,
                node: String::new(),
                woken: false,
                shutdown: false,
                flush_asked: 0,
                flushed: 0,
            }),
            wake: std::sync::Condvar::new(),
            done: std::sync::Condvar::new(),
        });
        let s = shared.clone();
        let start = clock.pair();
        let writer = std::thread::Builder::new()
            .name("troupe-trace".into())
            .spawn(move || write_loop(&s, &mut out, clock, start))?;
        Ok(Self {
            shared,
            clock,
            writer: Mutex::new(Some(writer)),
        })
    }

    /// Lines dropped so far because the writer was behind.
    pub fn dropped(&self) -> u64 {
        self.shared.lock().dropped
    }

    /// Append a record of `len` bytes, written by `put` (which gets the
    /// clock reading), or count it dropped.
    #[inline]
    fn push_record(&self, node: &str, len: usize, put: impl FnOnce(&mut Vec<u8>, u64)) {
        let raw = self.clock.read();
        let mut p = self.shared.lock();
        if p.bytes + len > PENDING_CAP {
            p.dropped_since += 1;
            p.dropped += 1;
            if p.node != node {
                p.node = node.to_string();
            }
            return;
        }
        p.bytes += len;
        let room = p
            .chunks
            .last()
            .is_some_and(|c| c.capacity() - c.len() >= len);
        if !room {
            let chunk = match p.spare.pop() {
                Some(c) if c.capacity() >= len => c,
                _ => Vec::with_capacity(CHUNK.max(len)),
            };
            p.chunks.push(chunk);
        }
        if let Some(chunk) = p.chunks.last_mut() {
            put(chunk, raw);
        }
        if p.bytes >= WAKE_AT && !p.woken {
            p.woken = true;
            self.shared.wake.notify_one();
        }
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

/// "00" to "99".
const DIGIT_PAIRS: &[u8; 200] = b"0001020304050607080910111213141516171819\
    2021222324252627282930313233343536373839\
    4041424344454647484950515253545556575859\
    6061626364656667686970717273747576777879\
    8081828384858687888990919293949596979899";

/// `v` in decimal, two digits at a time.
#[inline]
fn write_u64(buf: &mut Vec<u8>, mut v: u64) {
    let mut digits = [0u8; 20];
    let mut i = digits.len();
    while v >= 100 {
        let d = (v % 100) as usize * 2;
        v /= 100;
        i -= 2;
        digits[i..i + 2].copy_from_slice(&DIGIT_PAIRS[d..d + 2]);
    }
    if v >= 10 {
        let d = v as usize * 2;
        i -= 2;
        digits[i..i + 2].copy_from_slice(&DIGIT_PAIRS[d..d + 2]);
    } else {
        i -= 1;
        digits[i] = b'0' + v as u8;
    }
    buf.extend_from_slice(&digits[i..]);
}

/// A JSON string: copied as is when nothing in it needs escaping (node
/// names and message tags), else escaped by serde_json.
#[inline]
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

fn now_ns() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_nanos().min(u64::MAX as u128) as u64)
}

fn now_us() -> u64 {
    now_ns() / 1000
}

/// [`Line`] without its `t_us` (the writer puts it in front).
#[derive(Serialize)]
struct Untimed<'a> {
    node: &'a str,
    #[serde(flatten)]
    event: &'a TraceEvent,
}

impl TraceSink for FileTraceSink {
    fn record(&self, node: &str, event: TraceEvent) {
        LINE.with(|cell| {
            let mut fresh = Vec::new();
            let mut guard = cell.try_borrow_mut();
            let buf = match guard.as_deref_mut() {
                Ok(b) => b,
                Err(_) => &mut fresh,
            };
            buf.clear();
            let line = Untimed {
                node,
                event: &event,
            };
            if serde_json::to_writer(&mut *buf, &line).is_err() || buf.len() > u32::MAX as usize {
                return;
            }
            self.push_record(node, 13 + buf.len(), |out, raw| {
                out.push(rec::JSON);
                put_u64(out, raw);
                out.extend_from_slice(&(buf.len() as u32).to_le_bytes());
                out.extend_from_slice(buf);
            });
        });
    }

    #[inline]
    fn record_frame(&self, node: &str, event: FrameEvent<'_>) {
        // A binary record: the JSON is written by the writer thread (every
        // frame costs two lines, at up to millions of frames a second).
        let len = frame_record_len(node, &event);
        self.push_record(node, len, |out, raw| {
            put_frame_record(out, raw, node, &event)
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

/// The writer thread: takes the waiting records, writes them out as JSON
/// lines, until the sink is dropped (then once more, so nothing recorded is
/// lost).
fn write_loop(shared: &SinkShared, out: &mut RotatingFile, clock: Clock, start: Pair) {
    let mut batch: Vec<Vec<u8>> = Vec::new();
    let mut text = Out::new();
    let mut last = start;
    let mut fmt = Formatter::default();
    let write = |out: &mut RotatingFile, text: &mut Out| {
        if let Err(e) = out.write_lines(text.text()) {
            tracing::warn!(error = %e, path = %out.path.display(), "trace file: lines were not written");
        }
        text.pos = 0;
    };
    loop {
        let (dropped, node, asked, shutdown) = {
            let mut p = shared.lock();
            if p.bytes == 0 && !p.shutdown && p.flush_asked == p.flushed {
                p = shared
                    .wake
                    .wait_timeout(p, FLUSH_EVERY)
                    .unwrap_or_else(|e| e.into_inner())
                    .0;
            }
            std::mem::swap(&mut p.chunks, &mut batch);
            p.bytes = 0;
            p.woken = false;
            let dropped = std::mem::take(&mut p.dropped_since);
            let node = if dropped > 0 {
                p.node.clone()
            } else {
                String::new()
            };
            (dropped, node, p.flush_asked, p.shutdown)
        };
        if !batch.is_empty() {
            let now = clock.pair();
            let span = Span::new(clock, last, now);
            last = now;
            for chunk in &batch {
                let mut r = Reader { buf: chunk };
                while !r.buf.is_empty() {
                    if fmt.record(&mut r, &span, &mut text).is_none() {
                        break;
                    }
                    if text.pos >= WRITE_CHUNK {
                        write(out, &mut text);
                    }
                }
            }
        }
        if dropped > 0 {
            let note = TraceEvent::Note {
                text: format!("trace: {dropped} lines dropped (the trace writer fell behind)"),
            };
            let line = Line {
                t_us: now_us(),
                node: &node,
                event: &note,
            };
            if let Ok(mut note) = serde_json::to_vec(&line) {
                note.push(b'\n');
                text.bytes(&note);
            }
        }
        if text.pos > 0 {
            write(out, &mut text);
        }
        let mut p = shared.lock();
        // The chunks go back for reuse (beyond a few, after a burst, or
        // made for an outsized record: freed).
        for mut chunk in batch.drain(..) {
            if p.spare.len() < SPARE_CHUNKS && chunk.capacity() == CHUNK {
                chunk.clear();
                p.spare.push(chunk);
            }
        }
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

    /// Strings that need escaping, or nearly do.
    const TRICKY: &[&str] = &[
        "",
        "plain.tag",
        "odd \"name\"\n\u{e9}",
        "back\\slash",
        "queue full\t\\",
        "\u{0}\u{1}\u{8}\u{b}\u{c}\u{1f} \u{7f}",
        "caf\u{e9} \u{1f980} \u{2028}\u{2029} \u{feff}",
        "</script>",
        "\r\n",
    ];

    fn tricky_frames() -> Vec<FrameEvent<'static>> {
        let mut v = Vec::new();
        for (i, &s) in TRICKY.iter().enumerate() {
            let i = i as u64;
            v.push(FrameEvent::Send {
                to: s,
                seq: i,
                bytes: 90,
                kind: "reply",
                tag: s,
                lamport: Some(i),
                cause: Some((s, 3)),
            });
            // The same strings again (the writer's templates hit).
            v.push(FrameEvent::Send {
                to: s,
                seq: u64::MAX - i,
                bytes: usize::MAX,
                kind: "reply",
                tag: s,
                lamport: Some(i * 1_000_000_007),
                cause: Some((s, 0)),
            });
            v.push(FrameEvent::Send {
                to: "b",
                seq: i,
                bytes: 0,
                kind: s,
                tag: "x.y",
                lamport: None,
                cause: None,
            });
            v.push(FrameEvent::Deliver { from: s, seq: i });
            v.push(FrameEvent::Deliver {
                from: s,
                seq: i + 1,
            });
            v.push(FrameEvent::Drop {
                from: s,
                to: Some(s),
                seq: 12345678901,
                reason: s,
            });
            v.push(FrameEvent::Drop {
                from: "c",
                to: None,
                seq: 9,
                reason: s,
            });
        }
        v
    }

    #[test]
    fn frame_events_serialize_like_trace_events() {
        for clock in [Clock::detect(), Clock::Wall] {
            let dir = temp_dir(&format!("frames-{clock:?}"));
            let path = dir.join("n.jsonl");
            let before = now_us();
            let sink = FileTraceSink::with_clock(&path, Rotation::default(), clock).unwrap();
            let frames = tricky_frames();
            for (i, &e) in frames.iter().enumerate() {
                let node = TRICKY[i % TRICKY.len()];
                sink.record_frame(node, e);
                sink.record(node, e.to_event());
            }
            sink.flush();
            let after = now_us();
            let text = std::fs::read_to_string(&path).unwrap();
            let raw: Vec<&str> = text.lines().collect();
            assert_eq!(raw.len(), 2 * frames.len());
            let mut last_t = 0;
            for (i, pair) in raw.chunks(2).enumerate() {
                let node = TRICKY[i % TRICKY.len()];
                let event = frames[i].to_event();
                for line in pair {
                    // Byte for byte what serde writes for the same time.
                    let v: serde_json::Value =
                        serde_json::from_str(line).unwrap_or_else(|e| panic!("{line}: {e}"));
                    let t_us = v["t_us"].as_u64().unwrap();
                    assert!(
                        (before..=after).contains(&t_us),
                        "{clock:?}: {before} <= {t_us} <= {after}"
                    );
                    assert!(t_us >= last_t, "{clock:?}: time went back");
                    last_t = t_us;
                    let want = serde_json::to_string(&Line {
                        t_us,
                        node,
                        event: &event,
                    })
                    .unwrap();
                    assert_eq!(*line, want);
                }
            }
        }
    }

    #[test]
    fn json_strings_and_numbers_are_written_as_serde_writes_them() {
        let mut extra: Vec<String> = (0u32..0x80)
            .filter_map(char::from_u32)
            .map(|c| format!("a{c}b"))
            .collect();
        extra.extend(TRICKY.iter().map(|s| s.to_string()));
        for s in &extra {
            let mut buf = Vec::new();
            write_json_str(&mut buf, s);
            assert_eq!(
                String::from_utf8(buf).unwrap(),
                serde_json::to_string(s).unwrap()
            );
        }
        let mut values = vec![0, 1, 9, 10, 11, 99, 100, 101, 12345, u64::MAX, u64::MAX - 1];
        for p in 1..20 {
            let x = 10u64.pow(p);
            values.extend([x - 1, x, x + 1]);
        }
        let mut fmt = Formatter::default();
        for v in values {
            let mut buf = Vec::new();
            write_u64(&mut buf, v);
            assert_eq!(String::from_utf8(buf).unwrap(), v.to_string());
            let mut out = Out::new();
            out.num(v);
            out.lit(b" ");
            fmt.time(&mut out, v);
            assert_eq!(
                String::from_utf8(out.text().to_vec()).unwrap(),
                format!("{v} {{\"t_us\":{v}")
            );
        }
    }

    #[test]
    fn span_interpolates_within_its_pair_of_readings() {
        let from = Pair {
            raw: 1_000,
            wall_ns: 5_000_000,
        };
        let to = Pair {
            raw: 3_000,
            wall_ns: 9_000_000,
        };
        let s = Span::new(Clock::Tsc, from, to);
        assert_eq!(s.micros(0), 5_000);
        assert_eq!(s.micros(1_000), 5_000);
        assert_eq!(s.micros(2_000), 7_000);
        assert_eq!(s.micros(2_999), 8_998);
        assert_eq!(s.micros(3_000), 9_000);
        assert_eq!(s.micros(u64::MAX), 9_000);
        let mut last = 0;
        for raw in (0..4_000).step_by(7) {
            let t = s.micros(raw);
            assert!(t >= last);
            last = t;
        }
        // A wall clock that went back: the later reading for all.
        let back = Span::new(
            Clock::Tsc,
            to,
            Pair {
                raw: 4_000,
                wall_ns: 1_000,
            },
        );
        assert_eq!(back.micros(3_500), 1);
        // No time between the readings.
        let same = Span::new(Clock::Tsc, from, from);
        assert_eq!(same.micros(1_000), 5_000);
        // Wall-clock stamps are the time already.
        let wall = Span::new(Clock::Wall, from, to);
        assert_eq!(wall.micros(123_456_789), 123_456);
    }

    #[test]
    fn lines_of_several_threads_are_all_written_in_time_order_per_thread() {
        let dir = temp_dir("threads");
        let path = dir.join("n.jsonl");
        let sink = Arc::new(FileTraceSink::append(&path).unwrap());
        let per = 20_000u64;
        let threads: Vec<_> = (0..3)
            .map(|i| {
                let sink = sink.clone();
                std::thread::spawn(move || {
                    let from = format!("p{i}");
                    for seq in 0..per {
                        sink.record_frame("n", FrameEvent::Deliver { from: &from, seq });
                    }
                })
            })
            .collect();
        for t in threads {
            t.join().unwrap();
        }
        sink.flush();
        assert_eq!(sink.dropped(), 0);
        let text = std::fs::read_to_string(&path).unwrap();
        let mut next = [0u64; 3];
        let mut last_t = [0u64; 3];
        for line in text.lines() {
            let v: serde_json::Value = serde_json::from_str(line).unwrap();
            let i: usize = v["from"].as_str().unwrap()[1..].parse().unwrap();
            assert_eq!(v["seq"].as_u64().unwrap(), next[i]);
            next[i] += 1;
            let t = v["t_us"].as_u64().unwrap();
            assert!(t >= last_t[i]);
            last_t[i] = t;
        }
        assert_eq!(next, [per; 3]);
    }
}
