//! [`FileTraceSink`]: a node's trace, appended to a file by a background
//! writer, as JSON lines or as a compact binary trace ([`TraceFormat`]).
//!
//! Guarantees: every event recorded is written, in the order the node
//! recorded it, unless more than 8 MiB of records wait for the writer
//! (then lines are dropped and counted, and a `note` line says how many);
//! the files stay within [`Rotation::cap`] (a binary file may pass
//! `max_bytes` by one record); rotation never splits a JSON line, and a
//! binary file starts with what its records need to be read alone. A node
//! killed while the writer writes can leave a cut last line or record
//! (readers report it, see `binary`).

use std::cell::UnsafeCell;
use std::io::Write;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, OnceLock};

use serde::Serialize;

use super::binary;
use super::clock::{now_us, Clock, Pair, Span};
use super::json::{Formatter, Out};
use super::record::{self, Decoder, Encoder};
use super::{FrameEvent, Line, Rotation, SlotHint, TraceEvent, TraceSink, WRITE_CHUNK};

/// Records waiting for the writer past this many bytes are dropped (and
/// counted) instead of blocking the node.
const PENDING_CAP: usize = 8 << 20;
/// The writer is woken early once this many bytes of records wait.
const WAKE_AT: usize = 128 << 10;
/// The writer writes out what waits at least this often.
const FLUSH_EVERY: std::time::Duration = std::time::Duration::from_millis(50);
/// Records are kept in buffers of this size, allocated once and reused
/// (a growing buffer would cost the node reallocations and fresh pages).
const CHUNK: usize = 64 << 10;
/// Empty chunks kept for reuse past a burst (the rest are freed).
const SPARE_CHUNKS: usize = 32;

/// What a [`FileTraceSink`] writes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum TraceFormat {
    /// JSON lines, one event per line, as the simulator writes them
    /// (readable with any tool; the writer's formatting costs CPU).
    #[default]
    Jsonl,
    /// The compact binary trace (see `troupe_framework::trace::binary`):
    /// a tenth or less of the bytes, and the writer only copies records. Every
    /// `troupe trace` command reads it; `troupe trace jsonl` (or
    /// [`super::read_jsonl`]) turns it into the same JSON lines.
    Binary,
}

struct Pending {
    /// Records for the writer (see [`record`]), in chunks, the last one
    /// being filled; a record never spans two.
    chunks: Vec<Vec<u8>>,
    /// Bytes in `chunks`.
    bytes: usize,
    /// Empty chunks to reuse.
    spare: Vec<Vec<u8>>,
    /// Writes the records (its block slots and last stamp are the state
    /// the writer's decoder mirrors).
    enc: Encoder,
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

/// A spin lock: a node's thread holds it for one record (tens of
/// nanoseconds) and the writer for a buffer swap, so a waiter spins
/// briefly, then yields. Unlocking is a plain store, where a futex mutex
/// pays an atomic exchange (a few percent of a remote tell when every
/// frame is recorded).
struct Spin<T> {
    locked: AtomicBool,
    value: UnsafeCell<T>,
}

// SAFETY: the value is only reached through a `SpinGuard`, and at most one
// guard exists at a time (`locked`).
unsafe impl<T: Send> Sync for Spin<T> {}

impl<T> Spin<T> {
    fn new(value: T) -> Self {
        Self {
            locked: AtomicBool::new(false),
            value: UnsafeCell::new(value),
        }
    }

    #[inline]
    fn lock(&self) -> SpinGuard<'_, T> {
        if self
            .locked
            .compare_exchange(false, true, Ordering::Acquire, Ordering::Relaxed)
            .is_err()
        {
            self.lock_contended();
        }
        SpinGuard { spin: self }
    }

    #[cold]
    fn lock_contended(&self) {
        let mut spins = 0u32;
        loop {
            while self.locked.load(Ordering::Relaxed) {
                if spins < 100 {
                    spins += 1;
                    std::hint::spin_loop();
                } else {
                    // The holder may have been preempted.
                    std::thread::yield_now();
                }
            }
            if self
                .locked
                .compare_exchange_weak(false, true, Ordering::Acquire, Ordering::Relaxed)
                .is_ok()
            {
                return;
            }
        }
    }
}

struct SpinGuard<'a, T> {
    spin: &'a Spin<T>,
}

impl<T> std::ops::Deref for SpinGuard<'_, T> {
    type Target = T;
    fn deref(&self) -> &T {
        // SAFETY: this guard holds the lock.
        unsafe { &*self.spin.value.get() }
    }
}

impl<T> std::ops::DerefMut for SpinGuard<'_, T> {
    fn deref_mut(&mut self) -> &mut T {
        // SAFETY: this guard holds the lock.
        unsafe { &mut *self.spin.value.get() }
    }
}

impl<T> Drop for SpinGuard<'_, T> {
    #[inline]
    fn drop(&mut self) {
        self.spin.locked.store(false, Ordering::Release);
    }
}

struct SinkShared {
    pending: Spin<Pending>,
    /// The writer thread (woken with `unpark`).
    writer: OnceLock<std::thread::Thread>,
    /// Held while `flushed` is compared or announced, so a flush waiting
    /// on `done` misses no announcement.
    done_lock: Mutex<()>,
    done: std::sync::Condvar,
}

impl SinkShared {
    #[inline]
    fn lock(&self) -> SpinGuard<'_, Pending> {
        self.pending.lock()
    }

    fn wake_writer(&self) {
        if let Some(t) = self.writer.get() {
            t.unpark();
        }
    }
}

thread_local! {
    static LINE: std::cell::RefCell<Vec<u8>> = const { std::cell::RefCell::new(Vec::new()) };
}

/// Appends trace events to a file (`[trace] file` of a node's config), as
/// JSON lines or as a binary trace ([`TraceFormat`]). `t_us` is wall-clock
/// time in microseconds since the Unix epoch, so that the files of several
/// nodes can be read together; within one file, events are in the order
/// the node recorded them.
///
/// Cheap on the node's paths: a frame event is appended as a small binary
/// record (a few varints and a slot number for its strings; see
/// `record`) stamped with the CPU's time-stamp counter where the kernel
/// keeps time with it, else the wall clock, to a buffer under a short lock,
/// with no allocation once the buffer has grown; other events are
/// serialized by the caller. The tells a node's dispatcher delivers from
/// one batch of frames read from a peer are recorded together, with one
/// clock reading (they share a time, taken once the batch is handed
/// over, before anything they cause is sent); a sending handle's
/// [`SlotHint`] spares the comparison of its strings. A background thread writes the records out at
/// least every 50 ms, when 128 KiB of records wait, on
/// [`TraceSink::flush`] and when the sink is dropped: as JSON lines (the
/// stamps turned into wall-clock time, interpolated between two wall-clock
/// readings it takes per batch), or, in the binary format, as they are,
/// with those readings. If more than 8 MiB of records wait (the disk cannot
/// keep up), further lines are dropped and counted, never blocking the
/// node; once the writer catches up it writes a `note` line saying how many
/// were lost. A node killed by a signal loses the lines not yet written (at
/// most about 50 ms of them).
///
/// The file is bounded by [`Rotation`]: past `max_bytes` it is renamed
/// `FILE.1` (`FILE.1` to `FILE.2`..., beyond `keep` deleted) and a new one
/// is started; a line never spans two files, and a binary file starts with
/// what its records need to be read alone (it may pass `max_bytes` by one
/// record).
pub struct FileTraceSink {
    shared: Arc<SinkShared>,
    clock: Clock,
    writer: Mutex<Option<std::thread::JoinHandle<()>>>,
}

impl FileTraceSink {
    /// Open `path` for appending JSON lines (created if missing), with the
    /// default [`Rotation`].
    pub fn append(path: &std::path::Path) -> std::io::Result<Self> {
        Self::with_rotation(path, Rotation::default())
    }

    /// Open `path` for appending JSON lines (created if missing), rotated
    /// as `rotation` says.
    pub fn with_rotation(path: &std::path::Path, rotation: Rotation) -> std::io::Result<Self> {
        Self::open(path, rotation, TraceFormat::Jsonl)
    }

    /// Open `path` for appending in `format` (created if missing), rotated
    /// as `rotation` says. An existing file in the other format is an
    /// error (`InvalidData`, naming the file): the two are not mixed.
    pub fn open(
        path: &std::path::Path,
        rotation: Rotation,
        format: TraceFormat,
    ) -> std::io::Result<Self> {
        Self::with_clock(path, rotation, format, Clock::detect())
    }

    fn with_clock(
        path: &std::path::Path,
        rotation: Rotation,
        format: TraceFormat,
        clock: Clock,
    ) -> std::io::Result<Self> {
        binary::check_existing(path, format)?;
        let mut out = RotatingFile::open(path.to_path_buf(), rotation)?;
        let shared = Arc::new(SinkShared {
            pending: Spin::new(Pending {
                chunks: Vec::new(),
                bytes: 0,
                spare: Vec::new(),
                enc: Encoder::default(),
                dropped_since: 0,
                dropped: 0,
                node: String::new(),
                woken: false,
                shutdown: false,
                flush_asked: 0,
                flushed: 0,
            }),
            writer: OnceLock::new(),
            done_lock: Mutex::new(()),
            done: std::sync::Condvar::new(),
        });
        let s = shared.clone();
        let start = clock.pair();
        let writer = std::thread::Builder::new()
            .name("troupe-trace".into())
            .spawn(move || {
                let mut w = Writer {
                    out: &mut out,
                    format,
                    clock,
                    dec: Decoder::default(),
                    end: Decoder::default(),
                    fmt: Formatter::default(),
                    text: Out::new(),
                    bin: Vec::with_capacity(WRITE_CHUNK + CHUNK),
                    fresh: true,
                };
                w.run(&s, start)
            })?;
        let _ = shared.writer.set(writer.thread().clone());
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

    /// Append `lines` records of at most `bound` bytes in all, written by
    /// `put` (which gets the encoder, the buffer and the clock reading), or
    /// count them dropped.
    #[inline]
    fn push_record(
        &self,
        node: &str,
        lines: u64,
        bound: usize,
        put: impl FnOnce(&mut Encoder, &mut Vec<u8>, u64),
    ) {
        let raw = self.clock.read();
        let mut guard = self.shared.lock();
        let p = &mut *guard;
        if p.bytes + bound > PENDING_CAP {
            p.dropped_since += lines;
            p.dropped += lines;
            if p.node != node {
                p.node = node.to_string();
            }
            return;
        }
        let room = p
            .chunks
            .last()
            .is_some_and(|c| c.capacity() - c.len() >= bound);
        if !room {
            let chunk = match p.spare.pop() {
                Some(c) if c.capacity() >= bound => c,
                _ => Vec::with_capacity(CHUNK.max(bound)),
            };
            p.chunks.push(chunk);
        }
        if let Some(chunk) = p.chunks.last_mut() {
            let before = chunk.len();
            put(&mut p.enc, chunk, raw);
            p.bytes += chunk.len() - before;
        }
        if p.bytes >= WAKE_AT && !p.woken {
            p.woken = true;
            drop(guard);
            self.shared.wake_writer();
        }
    }
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
            if serde_json::to_writer(&mut *buf, &line).is_err() {
                return;
            }
            self.push_record(node, 1, Encoder::json_bound(buf.len()), |enc, out, raw| {
                enc.json(out, raw, buf)
            });
        });
    }

    #[inline]
    fn record_frame(&self, node: &str, event: FrameEvent<'_>) {
        // A binary record: the writer turns it into JSON, or copies it
        // (every frame costs two records, at up to millions a second).
        self.push_record(
            node,
            1,
            Encoder::frame_bound(node, &event),
            |enc, out, raw| enc.frame(out, raw, node, &event),
        );
    }

    #[inline]
    fn record_send_hinted(&self, node: &str, event: &FrameEvent<'_>, hint: &SlotHint) {
        self.push_record(
            node,
            1,
            Encoder::frame_bound(node, event),
            |enc, out, raw| enc.frame_hinted(out, raw, node, event, Some(&hint.0)),
        );
    }

    #[inline]
    fn record_delivered(&self, node: &str, from: &str, seqs: &[u64]) {
        // One clock reading, lock and block lookup for the batch.
        if seqs.is_empty() {
            return;
        }
        let bound = Encoder::delivered_bound(node, from, seqs.len());
        self.push_record(node, seqs.len() as u64, bound, |enc, out, raw| {
            enc.delivered(out, raw, node, from, seqs)
        });
    }

    fn flush(&self) {
        let want = {
            let mut p = self.shared.lock();
            if p.shutdown {
                return;
            }
            p.flush_asked += 1;
            p.flush_asked
        };
        self.shared.wake_writer();
        let mut waiting = self
            .shared
            .done_lock
            .lock()
            .unwrap_or_else(|p| p.into_inner());
        loop {
            {
                let p = self.shared.lock();
                if p.flushed >= want || p.shutdown {
                    return;
                }
            }
            waiting = self
                .shared
                .done
                .wait(waiting)
                .unwrap_or_else(|e| e.into_inner());
        }
    }
}

impl Drop for FileTraceSink {
    fn drop(&mut self) {
        self.shared.lock().shutdown = true;
        self.shared.wake_writer();
        let writer = self.writer.lock().unwrap_or_else(|p| p.into_inner()).take();
        if let Some(w) = writer {
            let _ = w.join();
        }
    }
}

/// Bytes kept free in a binary file for a header and its slot
/// definitions when deciding whether a batch fits as it is.
const HEADER_ROOM: u64 = 16 << 10;

/// The writer thread's state.
struct Writer<'a> {
    out: &'a mut RotatingFile,
    format: TraceFormat,
    clock: Clock,
    /// Reads the records (JSON lines: all; binary: a batch in which the
    /// file fills).
    dec: Decoder,
    /// Binary: the sink's encoder's state after the last batch taken.
    end: Decoder,
    /// JSON lines: the formatter and its output.
    fmt: Formatter,
    text: Out,
    /// Binary: the output.
    bin: Vec<u8>,
    /// Binary: the file has no header yet (opened, or rotated).
    fresh: bool,
}

impl Writer<'_> {
    /// Take the waiting records and write them out, until the sink is
    /// dropped (then once more, so nothing recorded is lost).
    fn run(&mut self, shared: &SinkShared, start: Pair) {
        let mut batch: Vec<Vec<u8>> = Vec::new();
        let mut last = start;
        loop {
            // Binary: the encoder's state when this batch starts.
            let start = (self.format == TraceFormat::Binary).then(|| self.end.clone());
            let (dropped, node, asked, shutdown) = {
                let mut p = shared.lock();
                if p.bytes == 0 && !p.shutdown && p.flush_asked == p.flushed {
                    drop(p);
                    // Woken early by a full buffer, a flush or the drop.
                    std::thread::park_timeout(FLUSH_EVERY);
                    p = shared.lock();
                }
                std::mem::swap(&mut p.chunks, &mut batch);
                if start.is_some() {
                    p.enc.sync_into(&mut self.end);
                }
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
                let now = self.clock.pair();
                let span = Span::new(self.clock, last, now);
                let size: usize = batch.iter().map(Vec::len).sum();
                let room = self.out.rotation.max_bytes.saturating_sub(HEADER_ROOM);
                let fits = self.out.size + ((self.bin.len() + size) as u64) < room;
                if let Some(start) = start {
                    // Binary: the state the batch starts in (a new file
                    // restates it; if the file fills within this batch,
                    // its records are read from it to find where, and the
                    // state the next file starts with).
                    self.dec = start;
                }
                let copy = self.format == TraceFormat::Binary && fits;
                for chunk in &batch {
                    let done = if copy {
                        self.header(span.from());
                        self.copy(chunk);
                        Ok(())
                    } else {
                        self.chunk(chunk, &span)
                    };
                    if let Err(e) = done {
                        // The sink wrote these records itself: a bug.
                        tracing::error!(error = %e, path = %self.out.path.display(), "trace: a record could not be read back; the rest of its batch is lost");
                        break;
                    }
                }
                if self.format == TraceFormat::Binary {
                    self.header(last);
                    record::put_clock(&mut self.bin, now);
                }
                last = now;
            }
            if dropped > 0 {
                self.note(&node, dropped, last);
            }
            self.write();
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
            drop(p);
            {
                let _announcing = shared.done_lock.lock().unwrap_or_else(|e| e.into_inner());
                shared.done.notify_all();
            }
            if shutdown {
                return;
            }
        }
    }

    /// Write out one chunk of records, stamped within `span`.
    fn chunk(&mut self, chunk: &[u8], span: &Span) -> Result<(), record::DecodeError> {
        let mut pos = 0;
        match self.format {
            TraceFormat::Jsonl => {
                while pos < chunk.len() {
                    let (rec, len) = self.dec.next(&chunk[pos..], pos)?;
                    pos += len;
                    self.fmt.record(&rec, &self.dec, span, &mut self.text);
                    if self.text.pos >= WRITE_CHUNK {
                        self.write();
                    }
                }
            }
            TraceFormat::Binary => {
                self.header(span.from());
                // Records are copied in runs; a run ends where the file
                // is full (the next file starts with the decoder's state).
                let mut run = 0;
                let max = self.out.rotation.max_bytes;
                while pos < chunk.len() {
                    let (_, len) = self.dec.next(&chunk[pos..], pos)?;
                    pos += len;
                    let size = self.out.size + (self.bin.len() + pos - run) as u64;
                    if size >= max {
                        self.bin.extend_from_slice(&chunk[run..pos]);
                        run = pos;
                        self.write();
                        if let Err(e) = self.out.rotate() {
                            tracing::warn!(error = %e, path = %self.out.path.display(), "trace file: not rotated");
                        }
                        self.fresh = true;
                        self.header(span.from());
                    } else if self.bin.len() + pos - run >= WRITE_CHUNK {
                        self.bin.extend_from_slice(&chunk[run..pos]);
                        run = pos;
                        self.write();
                    }
                }
                self.bin.extend_from_slice(&chunk[run..]);
            }
        }
        Ok(())
    }

    /// Binary: copy `chunk`'s records as they are (a full chunk straight
    /// from the node's buffer to the file, after what waits in `bin`).
    fn copy(&mut self, chunk: &[u8]) {
        if self.bin.len() + chunk.len() < WRITE_CHUNK {
            self.bin.extend_from_slice(chunk);
            return;
        }
        self.write();
        if let Err(e) = self.out.write_all(chunk) {
            tracing::warn!(error = %e, path = %self.out.path.display(), "trace file: lines were not written");
        }
    }

    /// Binary: if the file is new, its header, the decoder's state and the
    /// clock reading its records are counted from.
    fn header(&mut self, from: Pair) {
        if self.format == TraceFormat::Binary && self.fresh {
            binary::put_header(&mut self.bin, self.clock);
            self.dec.restate(&mut self.bin);
            record::put_clock(&mut self.bin, from);
            self.fresh = false;
        }
    }

    /// A `note` saying `dropped` lines of `node` were lost.
    fn note(&mut self, node: &str, dropped: u64, at: Pair) {
        let note = TraceEvent::Note {
            text: format!("trace: {dropped} lines dropped (the trace writer fell behind)"),
        };
        let t_us = now_us();
        match self.format {
            TraceFormat::Jsonl => {
                let line = Line {
                    t_us,
                    node,
                    event: &note,
                };
                if let Ok(mut note) = serde_json::to_vec(&line) {
                    note.push(b'\n');
                    self.text.bytes(&note);
                }
            }
            TraceFormat::Binary => {
                self.header(at);
                let line = Untimed { node, event: &note };
                if let Ok(json) = serde_json::to_vec(&line) {
                    record::put_note_at(&mut self.bin, t_us, &json);
                }
            }
        }
    }

    /// Hand what was formatted or copied to the file.
    fn write(&mut self) {
        let result = match self.format {
            TraceFormat::Jsonl => {
                let r = self.out.write_lines(self.text.text());
                self.text.pos = 0;
                r
            }
            TraceFormat::Binary => {
                let r = self.out.write_all(&self.bin);
                self.bin.clear();
                r
            }
        };
        if let Err(e) = result {
            tracing::warn!(error = %e, path = %self.out.path.display(), "trace file: lines were not written");
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

    /// Write `bytes` as they are (the binary writer rotates by itself).
    fn write_all(&mut self, bytes: &[u8]) -> std::io::Result<()> {
        if bytes.is_empty() {
            return Ok(());
        }
        if self.file.is_none() {
            self.reopen()?;
        }
        if let Some(file) = self.file.as_mut() {
            file.write_all(bytes)?;
            self.size += bytes.len() as u64;
        }
        Ok(())
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
    use crate::trace::clock::now_us;

    fn temp_dir(name: &str) -> std::path::PathBuf {
        let d = std::env::temp_dir().join(format!("troupe-trace-{name}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&d);
        std::fs::create_dir_all(&d).unwrap();
        d
    }

    /// The file read back as JSON lines (either format), undamaged.
    fn read_back(path: &std::path::Path) -> String {
        let d = crate::trace::read_jsonl(path).unwrap();
        assert!(d.damaged.is_empty(), "{}: {:?}", path.display(), d.damaged);
        d.jsonl
    }

    const FORMATS: [TraceFormat; 2] = [TraceFormat::Jsonl, TraceFormat::Binary];

    #[test]
    fn rotation_keeps_whole_lines_and_at_most_keep_plus_one_files() {
        for format in FORMATS {
            let dir = temp_dir(&format!("rotate-{format:?}"));
            let path = dir.join("n.trace");
            let rotation = Rotation {
                max_bytes: 1000,
                keep: 2,
            };
            let sink = FileTraceSink::open(&path, rotation, format).unwrap();
            let total = 200u64;
            let peers = ["p1", "p2", "p3"];
            for i in 0..total {
                sink.record(
                    "n1",
                    TraceEvent::Note {
                        text: format!("line {i} {}", "x".repeat((i % 17) as usize)),
                    },
                );
                // Frames whose strings were defined in an earlier file.
                sink.record_frame(
                    "n1",
                    FrameEvent::Deliver {
                        from: peers[(i % 3) as usize],
                        seq: i,
                    },
                );
                // Frames whose seq follows their slot's last one (not
                // written: a new file restates the last).
                sink.record_frame("n1", FrameEvent::Deliver { from: "p0", seq: i });
            }
            sink.flush();
            drop(sink);
            let mut files: Vec<_> = std::fs::read_dir(&dir)
                .unwrap()
                .map(|e| e.unwrap().file_name().into_string().unwrap())
                .collect();
            files.sort();
            assert_eq!(files, ["n.trace", "n.trace.1", "n.trace.2"], "{format:?}");
            // A binary file may pass `max_bytes` by one record.
            let slack = if format == TraceFormat::Binary {
                100
            } else {
                0
            };
            let (mut notes, mut frames, mut solo) = (Vec::new(), Vec::new(), Vec::new());
            for name in ["n.trace.2", "n.trace.1", "n.trace"] {
                let size = std::fs::metadata(dir.join(name)).unwrap().len();
                assert!(
                    size <= rotation.max_bytes + slack,
                    "{format:?} {name}: {size}"
                );
                // Each file reads alone.
                let text = read_back(&dir.join(name));
                assert!(text.is_empty() || text.ends_with('\n'), "{name}");
                for line in text.lines() {
                    let v: serde_json::Value = serde_json::from_str(line)
                        .unwrap_or_else(|e| panic!("{name}: split line {line:?}: {e}"));
                    if let Some(t) = v["text"].as_str() {
                        notes.push(t.split(' ').nth(1).unwrap().parse::<u64>().unwrap());
                    } else if v["from"] == "p0" {
                        solo.push(v["seq"].as_u64().unwrap());
                    } else {
                        let seq = v["seq"].as_u64().unwrap();
                        assert_eq!(v["from"], peers[(seq % 3) as usize], "{line}");
                        frames.push(seq);
                    }
                }
            }
            let total_bytes: u64 = files
                .iter()
                .map(|f| std::fs::metadata(dir.join(f)).unwrap().len())
                .sum();
            assert!(total_bytes <= rotation.cap() + 3 * slack);
            // The newest lines survive, in order and without gaps.
            for seen in [&notes, &frames, &solo] {
                assert!(!seen.is_empty());
                let first = seen[0];
                assert_eq!(*seen, (first..total).collect::<Vec<_>>(), "{format:?}");
                assert!(first > 0, "the oldest lines were rotated away");
            }
        }
    }

    use crate::trace::json::tests::TRICKY;

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
        for (clock, format) in [Clock::detect(), Clock::Wall]
            .into_iter()
            .flat_map(|c| FORMATS.map(|f| (c, f)))
        {
            let dir = temp_dir(&format!("frames-{clock:?}-{format:?}"));
            let path = dir.join("n.trace");
            let before = now_us();
            let sink =
                FileTraceSink::with_clock(&path, Rotation::default(), format, clock).unwrap();
            let frames = tricky_frames();
            for (i, &e) in frames.iter().enumerate() {
                let node = TRICKY[i % TRICKY.len()];
                sink.record_frame(node, e);
                sink.record(node, e.to_event());
            }
            sink.flush();
            let after = now_us();
            let text = read_back(&path);
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
    fn lines_of_several_threads_are_all_written_in_time_order_per_thread() {
        for format in FORMATS {
            several_threads(format);
        }
    }

    fn several_threads(format: TraceFormat) {
        let dir = temp_dir(&format!("threads-{format:?}"));
        let path = dir.join("n.trace");
        let sink = Arc::new(FileTraceSink::open(&path, Rotation::default(), format).unwrap());
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
        let text = read_back(&path);
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

    #[test]
    fn a_binary_file_started_after_copied_batches_restates_each_slots_last_seq() {
        // Batches that fit are copied as they are (the writer's mirror of
        // the encoder is synced, not decoded); the batch that fills a file
        // starts the next one from that mirror, which must hold the last
        // seq of every slot for the records that follow it unwritten.
        let dir = temp_dir("copied-batches");
        let path = dir.join("n.trace");
        let rotation = Rotation {
            max_bytes: 40_000,
            keep: 20,
        };
        let sink = FileTraceSink::open(&path, rotation, TraceFormat::Binary).unwrap();
        let per_batch = 500u64;
        let batches = 100u64;
        for b in 0..batches {
            let seqs: Vec<u64> = (b * per_batch..(b + 1) * per_batch).collect();
            sink.record_delivered("n", "p0", &seqs);
            sink.flush();
        }
        drop(sink);
        let mut names: Vec<String> = std::fs::read_dir(&dir)
            .unwrap()
            .map(|e| e.unwrap().file_name().into_string().unwrap())
            .collect();
        assert!(names.len() >= 3, "the files rotated: {names:?}");
        // Oldest first: n.trace.N .. n.trace.1, n.trace.
        names.sort_by_key(|n| {
            std::cmp::Reverse(n.rsplit('.').next().unwrap().parse::<u32>().unwrap_or(0))
        });
        let mut seen = Vec::new();
        for name in &names {
            for line in read_back(&dir.join(name)).lines() {
                let v: serde_json::Value = serde_json::from_str(line).unwrap();
                seen.push(v["seq"].as_u64().unwrap());
            }
        }
        assert_eq!(seen, (0..batches * per_batch).collect::<Vec<_>>());
    }

    #[test]
    fn batched_deliveries_and_hinted_sends_read_back_like_single_frames() {
        for format in FORMATS {
            batches_and_hints(format);
        }
    }

    /// One thread records deliveries in batches, another sends through a
    /// hint while a third keeps redefining slots (so the hint goes stale
    /// and is renewed): every line reads back with its own strings, in
    /// order per thread.
    fn batches_and_hints(format: TraceFormat) {
        let dir = temp_dir(&format!("hints-{format:?}"));
        let path = dir.join("n.trace");
        let sink = Arc::new(FileTraceSink::open(&path, Rotation::default(), format).unwrap());
        let per = 20_000u64;
        let batcher = {
            let sink = sink.clone();
            std::thread::spawn(move || {
                let seqs: Vec<u64> = (0..per).collect();
                for batch in seqs.chunks(7) {
                    sink.record_delivered("n", "pa", batch);
                }
                sink.record_delivered("n", "pa", &[]);
            })
        };
        let hinted = {
            let sink = sink.clone();
            std::thread::spawn(move || {
                let hint = SlotHint::default();
                for seq in 0..per {
                    let event = FrameEvent::Send {
                        to: "pb",
                        seq,
                        bytes: 10,
                        kind: "tell",
                        tag: "t.b",
                        lamport: Some(seq),
                        cause: None,
                    };
                    sink.record_send_hinted("n", &event, &hint);
                }
            })
        };
        let churn = {
            let sink = sink.clone();
            std::thread::spawn(move || {
                for seq in 0..per {
                    let to = format!("q{}", seq % 500);
                    let event = FrameEvent::Send {
                        to: &to,
                        seq,
                        bytes: 10,
                        kind: "tell",
                        tag: "t.q",
                        lamport: Some(seq),
                        cause: None,
                    };
                    sink.record_frame("n", event);
                }
            })
        };
        for t in [batcher, hinted, churn] {
            t.join().unwrap();
        }
        sink.flush();
        assert_eq!(sink.dropped(), 0);
        let text = read_back(&path);
        let (mut delivered, mut hinted, mut churned) = (0u64, 0u64, 0u64);
        for line in text.lines() {
            let v: serde_json::Value = serde_json::from_str(line).unwrap();
            let seq = v["seq"].as_u64().unwrap();
            match (
                v["ev"].as_str().unwrap(),
                v["to"].as_str(),
                v["tag"].as_str(),
            ) {
                ("deliver", _, _) => {
                    assert_eq!(v["from"], "pa", "{line}");
                    assert_eq!(seq, delivered, "{line}");
                    delivered += 1;
                }
                ("send", Some("pb"), Some("t.b")) => {
                    assert_eq!(seq, hinted, "{line}");
                    hinted += 1;
                }
                ("send", Some(to), Some("t.q")) => {
                    assert_eq!(to, format!("q{}", seq % 500), "{line}");
                    assert_eq!(seq, churned, "{line}");
                    churned += 1;
                }
                _ => panic!("a line with the wrong strings: {line}"),
            }
        }
        assert_eq!((delivered, hinted, churned), (per, per, per));
    }

    #[test]
    fn a_binary_trace_reopened_appends_a_session_and_damage_is_named_and_skipped() {
        let dir = temp_dir("sessions");
        let path = dir.join("n.trace");
        for run in 0..2u64 {
            let sink =
                FileTraceSink::open(&path, Rotation::default(), TraceFormat::Binary).unwrap();
            for seq in 0..3 {
                sink.record_frame(
                    "n",
                    FrameEvent::Deliver {
                        from: "p",
                        seq: run * 10 + seq,
                    },
                );
            }
        }
        let seqs = |text: &str| -> Vec<u64> {
            text.lines()
                .map(|l| {
                    serde_json::from_str::<serde_json::Value>(l).unwrap()["seq"]
                        .as_u64()
                        .unwrap()
                })
                .collect()
        };
        assert_eq!(seqs(&read_back(&path)), [0, 1, 2, 10, 11, 12]);
        // The first session cut short (a node killed mid-write): its whole
        // records are read, the cut is reported, the second session is whole.
        let bytes = std::fs::read(&path).unwrap();
        let second = bytes[1..].windows(5).position(|w| w == b"\0trou").unwrap() + 1;
        // (Its last CLOCK and two bytes of its last delivery.)
        let mut cut = bytes[..second - 19].to_vec();
        cut.extend_from_slice(&bytes[second..]);
        let d = crate::trace::binary::binary_to_jsonl(&cut);
        assert_eq!(d.damaged.len(), 1, "{:?}", d.damaged);
        assert!(d.damaged[0].contains("truncated record"), "{:?}", d.damaged);
        let got = seqs(&d.jsonl);
        assert_eq!(got[got.len() - 3..], [10, 11, 12]);
        assert_eq!(got, [0, 1, 10, 11, 12]);
        // The two formats are not mixed in one file.
        let e = FileTraceSink::open(&path, Rotation::default(), TraceFormat::Jsonl)
            .err()
            .unwrap();
        assert_eq!(e.kind(), std::io::ErrorKind::InvalidData);
        assert!(e.to_string().contains("holds a binary trace"), "{e}");
        let text = dir.join("t.jsonl");
        std::fs::write(&text, "{\"t_us\":1}\n").unwrap();
        let e = FileTraceSink::open(&text, Rotation::default(), TraceFormat::Binary)
            .err()
            .unwrap();
        assert!(e.to_string().contains("holds JSON lines"), "{e}");
    }
}
