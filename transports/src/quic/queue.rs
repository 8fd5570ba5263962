//! A bounded multi-producer, single-consumer frame queue that stores frames
//! already in wire format and is drained in batches.
//!
//! Producers ([`FrameQueue::try_push`], [`FrameQueue::try_push_slice`],
//! [`FrameQueue::push`], from any thread) take a short lock to append. A
//! small frame is copied, with its `u32` length prefix, onto the end of the
//! queue's open buffer, so queueing it allocates nothing and the writer gets
//! many frames as one contiguous chunk; a large frame (over
//! `wire::COALESCE_LIMIT`) is kept as its own `Bytes`, with its prefix, and not
//! copied. The open buffer is sealed into a segment every `batch` frames, or
//! when it is full (16 KiB).
//!
//! The single consumer (a peer's writer task) takes the lock once per batch
//! and moves whole segments out ([`FrameQueue::pop_batch`]): never more than
//! `max` frames unless one segment alone holds more, and a large frame's
//! prefix always travels with its body (a failed write drops whole batches,
//! so the stream never sees one without the other). The consumer is woken
//! only when the queue goes from empty to non-empty, and waiting producers
//! only when a batch is taken from a full queue. FIFO; never holds more than
//! `capacity` frames.
//!
//! **Direct writes.** While the writer is idle it leaves its stream (a
//! [`WireSink`]) in the queue. A frame pushed onto an empty queue whose
//! sink belongs to the peer's current connection is then written at once,
//! under the queue's lock, instead of waking the writer: one task switch
//! less per message for a request/response exchange. A frame the stream
//! takes nothing of stays first in line for the writer; the rest of a frame
//! it took only part of stays with the stream ([`Sink::rest`]): the writer
//! writes it first on that same stream, or drops it if that stream's
//! connection is gone (on a new stream it would be a frame without its
//! beginning). Nothing is written directly while a rest is owed, so the
//! order is the same either way. The writer takes the sink
//! out with each batch and puts it back when the batch is written, so a
//! direct write never overtakes a batch in flight. After a direct write the
//! next frames queue up until the writer has looked at the queue again: a
//! burst still leaves in batches (a stream write per small frame cost the
//! sender 10 % of its CPU in quinn's packetizer).

use std::collections::VecDeque;
use std::sync::{Mutex, MutexGuard};

use bytes::{BufMut, Bytes, BytesMut};
use tokio::sync::Notify;

use super::wire::COALESCE_LIMIT;

/// Why a frame was not queued.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum PushError {
    /// The queue holds `capacity` frames.
    Full,
    /// The queue was closed.
    Closed,
}

/// A stream the queue can write to without waiting.
pub(crate) trait WireSink: Send + 'static {
    /// Writes as much of `chunks` as the stream takes now, without waiting.
    /// `Ok(k)`: the first `k` chunks were written whole and chunk `k` (if
    /// any) may have been advanced past a written prefix. `Err` means the
    /// stream is unusable (nothing of `chunks` was written).
    fn try_write(&mut self, chunks: &mut [Bytes]) -> Result<usize, ()>;
}

/// The writer's stream, parked in the queue while the writer is idle.
pub(crate) struct Sink<S> {
    /// The connection the stream belongs to.
    pub(crate) link: u64,
    pub(crate) stream: S,
    /// What a direct write left unwritten of a frame it had started: it
    /// must go on this same stream, before anything else, or not at all
    /// (on another stream it would be a frame without its beginning).
    pub(crate) rest: Vec<Bytes>,
}

/// Wire-format bytes ready to write, and how many frames they hold.
enum Segment {
    /// Small frames, each with its length prefix, in one buffer.
    Coalesced { bytes: Bytes, frames: usize },
    /// Chunks written in order: a large frame's prefix and body, or a frame
    /// a direct write could not start.
    Chunks { chunks: Vec<Bytes>, frames: usize },
}

impl Segment {
    fn frames(&self) -> usize {
        match self {
            Segment::Coalesced { frames, .. } | Segment::Chunks { frames, .. } => *frames,
        }
    }
}

struct State<S> {
    /// The writer's stream, while the writer is idle.
    sink: Option<Sink<S>>,
    /// A direct write is allowed: set by the writer each time it finds the
    /// queue empty, cleared by a direct write. So a burst of sends makes at
    /// most one direct write and then queues up for the writer's batches
    /// (one stream write per message would cost the sender far more).
    direct_ok: bool,
    sealed: VecDeque<Segment>,
    /// Small frames after `sealed`, in wire format.
    open: BytesMut,
    /// Frames in `open`.
    open_frames: usize,
    /// Frames in `sealed` and `open`.
    frames: usize,
    closed: bool,
}

/// Bytes reserved at a time for the open buffer: small enough that the
/// allocator recycles these buffers (a 64 KiB one went back to the OS and
/// was faulted in again, costing 5 % of a sender's CPU in page clearing).
const OPEN_CHUNK: usize = 16 * 1024;

impl<S: WireSink> State<S> {
    fn seal_open(&mut self) {
        if self.open_frames > 0 {
            self.sealed.push_back(Segment::Coalesced {
                bytes: self.open.split().freeze(),
                frames: self.open_frames,
            });
            self.open_frames = 0;
        }
    }

    fn append_small(&mut self, frame: &[u8], batch: usize) {
        if self.open.capacity() - self.open.len() < 4 + frame.len() {
            // Seal what is there rather than let `reserve` copy it over.
            self.seal_open();
            self.open.reserve(OPEN_CHUNK.max(4 + frame.len()));
        }
        // Frame lengths are checked against the (u32) limit before queueing.
        self.open.put_u32(frame.len() as u32);
        self.open.extend_from_slice(frame);
        self.open_frames += 1;
        self.frames += 1;
        if self.open_frames >= batch {
            self.seal_open();
        }
    }

    fn append_large(&mut self, frame: Bytes) {
        self.seal_open();
        let prefix = Bytes::copy_from_slice(&(frame.len() as u32).to_be_bytes());
        self.sealed.push_back(Segment::Chunks {
            chunks: vec![prefix, frame],
            frames: 1,
        });
        self.frames += 1;
    }

    /// Moves whole segments, at most `max` frames unless the first segment
    /// alone holds more, into `out`. Returns the number of frames moved.
    fn take(&mut self, out: &mut Vec<Bytes>, max: usize) -> usize {
        if self.sealed.is_empty() {
            self.seal_open();
        }
        let mut n = 0;
        while let Some(seg) = self.sealed.front() {
            if n > 0 && n + seg.frames() > max {
                break;
            }
            n += seg.frames();
            match self.sealed.pop_front() {
                Some(Segment::Coalesced { bytes, .. }) => out.push(bytes),
                Some(Segment::Chunks { chunks, .. }) => out.extend(chunks),
                None => break,
            }
            if self.sealed.is_empty() && n < max {
                self.seal_open();
            }
        }
        self.frames -= n;
        n
    }

    /// Writes the queue (holding one frame) straight to the idle writer's
    /// stream if that stream is on connection `link` and owes nothing.
    /// `true` when nothing is left for the writer.
    fn write_direct(&mut self, link: u64) -> bool {
        // Taken out while writing (and put back unless it broke), so no
        // frame is taken from the queue unless there is a stream to take it.
        let mut sink = match self.sink.take() {
            Some(sink) if sink.link == link && sink.rest.is_empty() => sink,
            other => {
                self.sink = other;
                return false;
            }
        };
        let mut chunks = Vec::with_capacity(2);
        let frames = self.take(&mut chunks, usize::MAX);
        let before: usize = chunks.iter().map(Bytes::len).sum();
        let done = match sink.stream.try_write(&mut chunks) {
            Ok(k) if k == chunks.len() => true,
            Ok(k) => {
                chunks.drain(..k);
                let left: usize = chunks.iter().map(Bytes::len).sum();
                if left == before {
                    // Nothing written: the frame waits, first in line.
                    self.sealed.push_front(Segment::Chunks { chunks, frames });
                    self.frames += frames;
                } else {
                    // Started: the rest belongs to this stream.
                    sink.rest = chunks;
                }
                false
            }
            Err(()) => {
                // The stream is dropped: the writer opens a new one, and the
                // frame (none of it written) waits for it.
                self.sealed.push_front(Segment::Chunks { chunks, frames });
                self.frames += frames;
                return false;
            }
        };
        self.sink = Some(sink);
        done
    }
}

/// A frame to append: owned (kept as is when large) or borrowed (copied).
enum Frame<'a> {
    Owned(Bytes),
    Borrowed(&'a [u8]),
}

impl Frame<'_> {
    fn into_owned(self) -> Bytes {
        match self {
            Frame::Owned(b) => b,
            Frame::Borrowed(s) => Bytes::copy_from_slice(s),
        }
    }
}

pub(crate) struct FrameQueue<S> {
    state: Mutex<State<S>>,
    capacity: usize,
    /// Frames per sealed segment of small frames (the writer's batch size).
    batch: usize,
    /// Wakes the consumer when the queue becomes non-empty (or is closed).
    ready: Notify,
    /// Wakes producers waiting for room.
    room: Notify,
}

impl<S: WireSink> FrameQueue<S> {
    /// A queue of at most `capacity` frames whose writer takes about `batch`
    /// frames at a time.
    pub(crate) fn new(capacity: usize, batch: usize) -> Self {
        Self {
            state: Mutex::new(State {
                sink: None,
                direct_ok: true,
                sealed: VecDeque::new(),
                open: BytesMut::new(),
                open_frames: 0,
                frames: 0,
                closed: false,
            }),
            capacity,
            batch: batch.max(1),
            ready: Notify::new(),
            room: Notify::new(),
        }
    }

    fn lock(&self) -> MutexGuard<'_, State<S>> {
        // The state stays consistent even if a holder panicked (no invariants span
        // more than one statement), so a poisoned lock is still usable.
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Appends `frame`; onto an empty queue it is written directly when the
    /// idle writer's stream is on connection `link` (0: never).
    fn push_or_return<'a>(
        &self,
        frame: Frame<'a>,
        link: u64,
    ) -> Result<(), (PushError, Frame<'a>)> {
        let mut st = self.lock();
        if st.closed {
            return Err((PushError::Closed, frame));
        }
        if st.frames >= self.capacity {
            return Err((PushError::Full, frame));
        }
        let first = st.frames == 0;
        match frame {
            Frame::Owned(b) if b.len() > COALESCE_LIMIT => st.append_large(b),
            Frame::Owned(b) => st.append_small(&b, self.batch),
            Frame::Borrowed(s) if s.len() > COALESCE_LIMIT => {
                st.append_large(Bytes::copy_from_slice(s))
            }
            Frame::Borrowed(s) => st.append_small(s, self.batch),
        }
        if first && link != 0 && st.direct_ok && st.write_direct(link) {
            st.direct_ok = false;
            drop(st);
            // The writer (off the message's path) re-allows direct writes
            // when it finds the queue empty.
            self.ready.notify_one();
            return Ok(());
        }
        drop(st);
        if first {
            self.ready.notify_one();
        }
        Ok(())
    }

    /// Appends `frame` unless the queue is full or closed (written directly
    /// if the queue is empty and the idle writer's stream is on connection
    /// `link`; pass 0 for "no connection"). Never waits.
    pub(crate) fn try_push(&self, frame: Bytes, link: u64) -> Result<(), PushError> {
        self.push_or_return(Frame::Owned(frame), link)
            .map_err(|(e, _)| e)
    }

    /// Appends a copy of `frame` unless the queue is full or closed: for a
    /// frame encoded in a reused buffer, so queueing it allocates nothing.
    pub(crate) fn try_push_slice(&self, frame: &[u8], link: u64) -> Result<(), PushError> {
        self.push_or_return(Frame::Borrowed(frame), link)
            .map_err(|(e, _)| e)
    }

    /// Appends `frame`, waiting for room while the queue is full (never
    /// written directly: this is the bulk path).
    pub(crate) async fn push(&self, frame: Bytes) -> Result<(), PushError> {
        // Fast path: room now, no waiter registered.
        let mut frame = match self.push_or_return(Frame::Owned(frame), 0) {
            Ok(()) => return Ok(()),
            Err((PushError::Full, back)) => back.into_owned(),
            Err((e, _)) => return Err(e),
        };
        loop {
            let room = self.room.notified();
            tokio::pin!(room);
            room.as_mut().enable();
            match self.push_or_return(Frame::Owned(frame), 0) {
                Ok(()) => return Ok(()),
                Err((PushError::Full, back)) => {
                    frame = back.into_owned();
                    room.await;
                }
                Err((e, _)) => return Err(e),
            }
        }
    }

    /// Waits for work: moves whole segments, at most `max` frames unless the
    /// first segment alone holds more, into `out` as wire-format chunks, and
    /// takes the writer's stream out (it goes back with
    /// [`FrameQueue::put_sink`] once the batch is written). The stream's
    /// `rest`, if any, must be written before `out`. Returns the number of
    /// frames moved and the stream; `None` when the queue is closed and
    /// drained.
    pub(crate) async fn pop_batch(
        &self,
        out: &mut Vec<Bytes>,
        max: usize,
    ) -> Option<(usize, Option<Sink<S>>)> {
        loop {
            {
                let mut st = self.lock();
                let owed = st.sink.as_ref().is_some_and(|s| !s.rest.is_empty());
                if st.frames > 0 || owed {
                    let was_full = st.frames >= self.capacity;
                    let n = if st.frames > 0 { st.take(out, max) } else { 0 };
                    let sink = st.sink.take();
                    drop(st);
                    if was_full {
                        self.room.notify_waiters();
                    }
                    return Some((n, sink));
                }
                if st.closed {
                    return None;
                }
                st.direct_ok = true;
            }
            self.ready.notified().await;
        }
    }

    /// The writer is idle again: its stream (if it still has one) is
    /// available for direct writes.
    pub(crate) fn put_sink(&self, sink: Option<Sink<S>>) {
        let mut st = self.lock();
        if !st.closed {
            st.sink = sink;
        }
    }

    /// Refuses further frames and wakes everyone.
    pub(crate) fn close(&self) {
        self.lock().closed = true;
        self.ready.notify_one();
        self.room.notify_waiters();
    }
}

#[cfg(test)]
mod tests {
    use std::sync::{Arc, Mutex};

    use super::super::wire::FrameDecoder;
    use super::*;

    /// A stream that takes at most `room` more bytes, or fails.
    #[derive(Clone, Default)]
    struct TestSink {
        written: Arc<Mutex<Vec<u8>>>,
        room: Arc<Mutex<usize>>,
        broken: bool,
    }

    impl WireSink for TestSink {
        fn try_write(&mut self, chunks: &mut [Bytes]) -> Result<usize, ()> {
            if self.broken {
                return Err(());
            }
            let mut room = self.room.lock().expect("lock");
            let mut written = self.written.lock().expect("lock");
            for (k, c) in chunks.iter_mut().enumerate() {
                let n = c.len().min(*room);
                written.extend_from_slice(&c[..n]);
                *room -= n;
                let _ = c.split_to(n);
                if !c.is_empty() {
                    return Ok(k);
                }
            }
            Ok(chunks.len())
        }
    }

    type Queue = FrameQueue<TestSink>;

    /// Decodes wire chunks back into frames.
    fn frames_of(chunks: &[Bytes]) -> Vec<Bytes> {
        let mut dec = FrameDecoder::new(1 << 20);
        let mut got = Vec::new();
        for c in chunks {
            dec.push(c.clone());
            while let Some(f) = dec.next_frame().expect("valid wire format") {
                got.push(f);
            }
        }
        got
    }

    #[tokio::test]
    async fn fifo_bounded_batches_and_close() {
        let q = Queue::new(3, 2);
        for i in 0..3u8 {
            q.try_push(Bytes::from(vec![i]), 0).expect("room");
        }
        assert_eq!(q.try_push(Bytes::new(), 0), Err(PushError::Full));
        let mut out = Vec::new();
        assert_eq!(q.pop_batch(&mut out, 2).await.expect("open").0, 2);
        assert_eq!(q.pop_batch(&mut out, 10).await.expect("open").0, 1);
        assert_eq!(
            frames_of(&out),
            vec![
                Bytes::from(vec![0]),
                Bytes::from(vec![1]),
                Bytes::from(vec![2])
            ]
        );
        q.close();
        assert_eq!(q.try_push(Bytes::new(), 0), Err(PushError::Closed));
        assert_eq!(q.try_push_slice(b"x", 0), Err(PushError::Closed));
        assert!(
            q.pop_batch(&mut out, 10).await.is_none(),
            "closed and drained"
        );
    }

    #[tokio::test]
    async fn small_copied_and_large_frames_keep_their_order_and_prefixes() {
        let q = Queue::new(1000, 4);
        let mut want = Vec::new();
        for i in 0..40usize {
            // Every seventh frame is larger than the coalescing limit.
            let len = if i % 7 == 3 {
                COALESCE_LIMIT + 1 + i
            } else {
                i * 13
            };
            let f = Bytes::from(vec![i as u8; len]);
            if i % 2 == 0 {
                q.try_push(f.clone(), 0).expect("room");
            } else {
                q.try_push_slice(&f, 0).expect("room");
            }
            want.push(f);
        }
        let mut out = Vec::new();
        let mut total = 0;
        while total < want.len() {
            let mut batch = Vec::new();
            let n = q.pop_batch(&mut batch, 5).await.expect("open").0;
            assert!((1..=5).contains(&n), "batch of {n} frames");
            // Each batch decodes on its own: no frame is split between batches.
            assert_eq!(frames_of(&batch).len(), n);
            total += n;
            out.extend(batch);
        }
        assert_eq!(frames_of(&out), want);
    }

    #[tokio::test]
    async fn waiting_producer_gets_room_after_a_batch() {
        let q = Arc::new(Queue::new(1, 8));
        q.try_push(Bytes::from_static(b"a"), 0).expect("room");
        let q2 = q.clone();
        let producer = tokio::spawn(async move { q2.push(Bytes::from_static(b"b")).await });
        tokio::task::yield_now().await;
        let mut out = Vec::new();
        assert_eq!(q.pop_batch(&mut out, 10).await.expect("open").0, 1);
        producer.await.expect("join").expect("pushed");
        assert_eq!(q.pop_batch(&mut out, 10).await.expect("open").0, 1);
        assert_eq!(
            frames_of(&out),
            vec![Bytes::from_static(b"a"), Bytes::from_static(b"b")]
        );
    }

    /// A stream parked in the queue.
    fn sink_on(link: u64, stream: &TestSink) -> Option<Sink<TestSink>> {
        Some(Sink {
            link,
            stream: stream.clone(),
            rest: Vec::new(),
        })
    }

    /// Everything the stream got, then what the writer would write on it
    /// (the rest it owes first, then the batch), until the queue is drained.
    async fn stream_contents(q: &Queue, stream: &TestSink) -> Vec<Bytes> {
        let mut all = vec![Bytes::from(stream.written.lock().expect("lock").clone())];
        q.close();
        let mut batch = Vec::new();
        while let Some((_, sink)) = q.pop_batch(&mut batch, usize::MAX).await {
            if let Some(sink) = sink {
                all.extend(sink.rest);
            }
            all.append(&mut batch);
        }
        frames_of(&all)
    }

    /// The writer's `pop_batch` runs on an empty queue (and times out).
    async fn writer_finds_the_queue_empty(q: &Queue) {
        let mut none = Vec::new();
        let popped = tokio::time::timeout(
            std::time::Duration::from_millis(10),
            q.pop_batch(&mut none, 10),
        )
        .await;
        assert!(popped.is_err(), "the queue was not empty");
    }

    #[tokio::test]
    async fn an_idle_writers_stream_takes_frames_directly_and_in_order() {
        let q = Queue::new(100, 8);
        let sink = TestSink::default();
        *sink.room.lock().expect("lock") = 1000;
        q.put_sink(sink_on(7, &sink));
        let f = |i: u8| Bytes::from(vec![i; 50]);
        // Written at once: nothing queued.
        q.try_push(f(0), 7).expect("room");
        assert_eq!(q.lock().frames, 0);
        // Right behind it, a burst queues up for the writer ...
        q.try_push_slice(&f(1), 7).expect("room");
        assert_eq!(q.lock().frames, 1);
        let mut out = Vec::new();
        let (n, taken) = q.pop_batch(&mut out, 10).await.expect("open");
        assert_eq!((n, frames_of(&out)), (1, vec![f(1)]));
        q.put_sink(taken);
        // ... which, finding the queue empty, allows a direct write again.
        writer_finds_the_queue_empty(&q).await;
        q.try_push_slice(&f(0), 7).expect("room");
        assert_eq!(q.lock().frames, 0);
        assert_eq!(
            frames_of(&[Bytes::from(sink.written.lock().expect("lock").clone())]),
            vec![f(0), f(0)]
        );
        writer_finds_the_queue_empty(&q).await;
        // A frame for another connection (or with none given) is queued.
        q.try_push(f(2), 8).expect("room");
        assert_eq!(q.lock().frames, 1);
        // Not written directly behind a queued frame, which would overtake it.
        q.try_push(f(3), 7).expect("room");
        assert_eq!(q.lock().frames, 2);
        let mut out = Vec::new();
        let (n, taken) = q.pop_batch(&mut out, 10).await.expect("open");
        assert_eq!((n, taken.as_ref().map(|s| s.link)), (2, Some(7)));
        // While the writer holds the stream, frames are queued.
        q.try_push(f(4), 7).expect("room");
        assert_eq!(q.lock().frames, 1);
        assert_eq!(frames_of(&out), vec![f(2), f(3)]);
    }

    #[tokio::test]
    async fn what_the_stream_does_not_take_stays_first_in_line() {
        let q = Queue::new(100, 8);
        let sink = TestSink::default();
        // Room for the prefix and 10 of the 60 bytes.
        *sink.room.lock().expect("lock") = 14;
        q.put_sink(sink_on(1, &sink));
        let f = |i: u8| Bytes::from(vec![i; 60]);
        q.try_push_slice(&f(0), 1).expect("room");
        // The frame was started: its rest is owed by this stream, and no
        // other frame is written directly before it.
        assert_eq!(q.lock().frames, 0);
        let owed: usize = q
            .lock()
            .sink
            .as_ref()
            .map_or(0, |s| s.rest.iter().map(Bytes::len).sum());
        assert_eq!(owed, 50);
        q.try_push(f(1), 1).expect("room");
        assert_eq!(q.lock().frames, 1);
        let got = stream_contents(&q, &sink).await;
        assert_eq!(got, vec![f(0), f(1)]);
    }

    #[tokio::test]
    async fn a_frame_the_stream_takes_nothing_of_stays_first_in_line() {
        let q = Queue::new(100, 8);
        let sink = TestSink::default(); // no room at all
        q.put_sink(sink_on(1, &sink));
        let f = |i: u8| Bytes::from(vec![i; 60]);
        q.try_push_slice(&f(0), 1).expect("room");
        assert_eq!(q.lock().frames, 1, "waits for the writer");
        assert!(q.lock().sink.as_ref().is_some_and(|s| s.rest.is_empty()));
        q.try_push(f(1), 1).expect("room");
        let mut out = Vec::new();
        let (n, _) = q.pop_batch(&mut out, 10).await.expect("open");
        assert_eq!((n, frames_of(&out)), (2, vec![f(0), f(1)]));
    }

    #[tokio::test]
    async fn the_writer_is_woken_for_a_rest_alone() {
        let q = Queue::new(100, 8);
        let sink = TestSink::default();
        *sink.room.lock().expect("lock") = 10;
        q.put_sink(sink_on(3, &sink));
        q.try_push_slice(&[9u8; 40], 3).expect("room");
        let mut out = Vec::new();
        let popped =
            tokio::time::timeout(std::time::Duration::from_secs(5), q.pop_batch(&mut out, 10))
                .await
                .expect("woken")
                .expect("open");
        let (n, sink) = popped;
        assert_eq!(n, 0);
        let rest: usize = sink.map_or(0, |s| s.rest.iter().map(Bytes::len).sum());
        assert_eq!(rest, 34, "prefix and 40 bytes, 10 written");
    }

    #[tokio::test]
    async fn a_broken_stream_is_dropped_and_the_frame_kept() {
        let q = Queue::new(100, 8);
        let sink = TestSink {
            broken: true,
            ..TestSink::default()
        };
        q.put_sink(sink_on(1, &sink));
        q.try_push(Bytes::from_static(b"kept"), 1).expect("room");
        let mut out = Vec::new();
        let (n, taken) = q.pop_batch(&mut out, 10).await.expect("open");
        assert_eq!(n, 1);
        assert!(taken.is_none(), "the broken stream was dropped");
        assert_eq!(frames_of(&out), vec![Bytes::from_static(b"kept")]);
    }
}
