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

/// Wire-format bytes ready to write, and how many frames they hold.
enum Segment {
    /// Small frames, each with its length prefix, in one buffer.
    Coalesced { bytes: Bytes, frames: usize },
    /// One large frame: its length prefix, then its body.
    Large { prefix: Bytes, body: Bytes },
}

impl Segment {
    fn frames(&self) -> usize {
        match self {
            Segment::Coalesced { frames, .. } => *frames,
            Segment::Large { .. } => 1,
        }
    }
}

struct State {
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

impl State {
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
        self.sealed.push_back(Segment::Large {
            prefix,
            body: frame,
        });
        self.frames += 1;
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

pub(crate) struct FrameQueue {
    state: Mutex<State>,
    capacity: usize,
    /// Frames per sealed segment of small frames (the writer's batch size).
    batch: usize,
    /// Wakes the consumer when the queue becomes non-empty (or is closed).
    ready: Notify,
    /// Wakes producers waiting for room.
    room: Notify,
}

impl FrameQueue {
    /// A queue of at most `capacity` frames whose writer takes about `batch`
    /// frames at a time.
    pub(crate) fn new(capacity: usize, batch: usize) -> Self {
        Self {
            state: Mutex::new(State {
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

    fn lock(&self) -> MutexGuard<'_, State> {
        // The state stays consistent even if a holder panicked (no invariants span
        // more than one statement), so a poisoned lock is still usable.
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn push_or_return<'a>(&self, frame: Frame<'a>) -> Result<(), (PushError, Frame<'a>)> {
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
        drop(st);
        if first {
            self.ready.notify_one();
        }
        Ok(())
    }

    /// Appends `frame` unless the queue is full or closed. Never blocks on I/O.
    pub(crate) fn try_push(&self, frame: Bytes) -> Result<(), PushError> {
        self.push_or_return(Frame::Owned(frame)).map_err(|(e, _)| e)
    }

    /// Appends a copy of `frame` unless the queue is full or closed: for a
    /// frame encoded in a reused buffer, so queueing it allocates nothing.
    pub(crate) fn try_push_slice(&self, frame: &[u8]) -> Result<(), PushError> {
        self.push_or_return(Frame::Borrowed(frame))
            .map_err(|(e, _)| e)
    }

    /// Appends `frame`, waiting for room while the queue is full.
    pub(crate) async fn push(&self, frame: Bytes) -> Result<(), PushError> {
        // Fast path: room now, no waiter registered.
        let mut frame = match self.push_or_return(Frame::Owned(frame)) {
            Ok(()) => return Ok(()),
            Err((PushError::Full, back)) => back.into_owned(),
            Err((e, _)) => return Err(e),
        };
        loop {
            let room = self.room.notified();
            tokio::pin!(room);
            room.as_mut().enable();
            match self.push_or_return(Frame::Owned(frame)) {
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
    /// queue is empty. Returns the number of frames moved; 0 means the queue
    /// is closed and drained.
    pub(crate) async fn pop_batch(&self, out: &mut Vec<Bytes>, max: usize) -> usize {
        loop {
            {
                let mut st = self.lock();
                if st.frames > 0 {
                    let was_full = st.frames >= self.capacity;
                    if st.sealed.is_empty() {
                        st.seal_open();
                    }
                    let mut n = 0;
                    while let Some(seg) = st.sealed.front() {
                        if n > 0 && n + seg.frames() > max {
                            break;
                        }
                        n += seg.frames();
                        match st.sealed.pop_front() {
                            Some(Segment::Coalesced { bytes, .. }) => out.push(bytes),
                            Some(Segment::Large { prefix, body }) => {
                                out.push(prefix);
                                out.push(body);
                            }
                            None => break,
                        }
                        if st.sealed.is_empty() && n < max {
                            st.seal_open();
                        }
                    }
                    st.frames -= n;
                    drop(st);
                    if was_full {
                        self.room.notify_waiters();
                    }
                    return n;
                }
                if st.closed {
                    return 0;
                }
            }
            self.ready.notified().await;
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
    use super::super::wire::FrameDecoder;
    use super::*;

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
        let q = FrameQueue::new(3, 2);
        for i in 0..3u8 {
            q.try_push(Bytes::from(vec![i])).expect("room");
        }
        assert_eq!(q.try_push(Bytes::new()), Err(PushError::Full));
        let mut out = Vec::new();
        assert_eq!(q.pop_batch(&mut out, 2).await, 2);
        assert_eq!(q.pop_batch(&mut out, 10).await, 1);
        assert_eq!(
            frames_of(&out),
            vec![
                Bytes::from(vec![0]),
                Bytes::from(vec![1]),
                Bytes::from(vec![2])
            ]
        );
        q.close();
        assert_eq!(q.try_push(Bytes::new()), Err(PushError::Closed));
        assert_eq!(q.try_push_slice(b"x"), Err(PushError::Closed));
        assert_eq!(q.pop_batch(&mut out, 10).await, 0);
    }

    #[tokio::test]
    async fn small_copied_and_large_frames_keep_their_order_and_prefixes() {
        let q = FrameQueue::new(1000, 4);
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
                q.try_push(f.clone()).expect("room");
            } else {
                q.try_push_slice(&f).expect("room");
            }
            want.push(f);
        }
        let mut out = Vec::new();
        let mut total = 0;
        while total < want.len() {
            let mut batch = Vec::new();
            let n = q.pop_batch(&mut batch, 5).await;
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
        let q = std::sync::Arc::new(FrameQueue::new(1, 8));
        q.try_push(Bytes::from_static(b"a")).expect("room");
        let q2 = q.clone();
        let producer = tokio::spawn(async move { q2.push(Bytes::from_static(b"b")).await });
        tokio::task::yield_now().await;
        let mut out = Vec::new();
        assert_eq!(q.pop_batch(&mut out, 10).await, 1);
        producer.await.expect("join").expect("pushed");
        assert_eq!(q.pop_batch(&mut out, 10).await, 1);
        assert_eq!(
            frames_of(&out),
            vec![Bytes::from_static(b"a"), Bytes::from_static(b"b")]
        );
    }
}
