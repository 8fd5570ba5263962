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
//! less per message for a request/response exchange. Whatever the stream
//! does not take without waiting stays at the front of the queue for the
//! writer, so the order is the same either way. The writer takes the sink
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

/// Wire-format bytes ready to write, and how many frames they hold.
enum Segment {
    /// Small frames, each with its length prefix, in one buffer.
    Coalesced { bytes: Bytes, frames: usize },
    /// Chunks written in order: a large frame's prefix and body, or what a
    /// direct write left over.
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
    /// The writer's stream and the id of its connection, while the writer
    /// is idle.
    sink: Option<(u64, S)>,
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
    /// stream if that stream is on connection `link`. `true` when nothing is
    /// left for the writer.
    fn write_direct(&mut self, link: u64) -> bool {
        let Some((id, mut sink)) = self.sink.take() else {
            return false;
        };
        if id != link {
            self.sink = Some((id, sink));
            return false;
        }
        let mut chunks = Vec::with_capacity(2);
        let frames = self.take(&mut chunks, usize::MAX);
        match sink.try_write(&mut chunks) {
            Ok(k) if k == chunks.len() => {
                self.sink = Some((id, sink));
                true
            }
            Ok(k) => {
                // The rest waits, in order, for the writer.
                self.sink = Some((id, sink));
                chunks.drain(..k);
                self.sealed.push_front(Segment::Chunks { chunks, frames });
                self.frames += frames;
                false
            }
            Err(()) => {
                // The stream is dropped: the writer opens a new one, and the
                // frame waits for it.
                self.sealed.push_front(Segment::Chunks { chunks, frames });
                self.frames += frames;
                false
            }
        }
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

    /// Moves whole segments, at most `max` frames unless the first segment
    /// alone holds more, into `out` as wire-format chunks, waiting while the
    /// queue is empty, and takes the writer's stream out (it goes back with
    /// [`FrameQueue::put_sink`] once the batch is written). Returns the
    /// number of frames moved and the stream; 0 frames means the queue is
    /// closed and drained.
    pub(crate) async fn pop_batch(
        &self,
        out: &mut Vec<Bytes>,
        max: usize,
    ) -> (usize, Option<(u64, S)>) {
        loop {
            {
                let mut st = self.lock();
                if st.frames > 0 {
                    let was_full = st.frames >= self.capacity;
                    let n = st.take(out, max);
                    let sink = st.sink.take();
                    drop(st);
                    if was_full {
                        self.room.notify_waiters();
                    }
                    return (n, sink);
                }
                if st.closed {
                    return (0, st.sink.take());
                }
                st.direct_ok = true;
            }
            self.ready.notified().await;
        }
    }

    /// The writer is idle again: its stream (if it still has one) is
    /// available for direct writes.
    pub(crate) fn put_sink(&self, sink: Option<(u64, S)>) {
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
        assert_eq!(q.pop_batch(&mut out, 2).await.0, 2);
        assert_eq!(q.pop_batch(&mut out, 10).await.0, 1);
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
        assert_eq!(q.pop_batch(&mut out, 10).await.0, 0);
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
            let n = q.pop_batch(&mut batch, 5).await.0;
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
        assert_eq!(q.pop_batch(&mut out, 10).await.0, 1);
        producer.await.expect("join").expect("pushed");
        assert_eq!(q.pop_batch(&mut out, 10).await.0, 1);
        assert_eq!(
            frames_of(&out),
            vec![Bytes::from_static(b"a"), Bytes::from_static(b"b")]
        );
    }

    /// Everything the sink got, then everything the writer would write.
    async fn stream_contents(q: &Queue, sink: &TestSink) -> Vec<Bytes> {
        let mut all = vec![Bytes::from(sink.written.lock().expect("lock").clone())];
        q.close();
        loop {
            let mut batch = Vec::new();
            if q.pop_batch(&mut batch, usize::MAX).await.0 == 0 {
                break;
            }
            all.extend(batch);
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
        q.put_sink(Some((7, sink.clone())));
        let f = |i: u8| Bytes::from(vec![i; 50]);
        // Written at once: nothing queued.
        q.try_push(f(0), 7).expect("room");
        assert_eq!(q.lock().frames, 0);
        // Right behind it, a burst queues up for the writer ...
        q.try_push_slice(&f(1), 7).expect("room");
        assert_eq!(q.lock().frames, 1);
        let mut out = Vec::new();
        let (n, taken) = q.pop_batch(&mut out, 10).await;
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
        let (n, taken) = q.pop_batch(&mut out, 10).await;
        assert_eq!((n, taken.as_ref().map(|s| s.0)), (2, Some(7)));
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
        q.put_sink(Some((1, sink.clone())));
        let f = |i: u8| Bytes::from(vec![i; 60]);
        q.try_push_slice(&f(0), 1).expect("room");
        assert_eq!(q.lock().frames, 1, "the rest waits for the writer");
        q.try_push(f(1), 1).expect("room");
        let got = stream_contents(&q, &sink).await;
        assert_eq!(got, vec![f(0), f(1)]);
    }

    #[tokio::test]
    async fn a_broken_stream_is_dropped_and_the_frame_kept() {
        let q = Queue::new(100, 8);
        let sink = TestSink {
            broken: true,
            ..TestSink::default()
        };
        q.put_sink(Some((1, sink.clone())));
        q.try_push(Bytes::from_static(b"kept"), 1).expect("room");
        let mut out = Vec::new();
        let (n, taken) = q.pop_batch(&mut out, 10).await;
        assert_eq!(n, 1);
        assert!(taken.is_none(), "the broken stream was dropped");
        assert_eq!(frames_of(&out), vec![Bytes::from_static(b"kept")]);
    }
}
