//! A bounded multi-producer, single-consumer frame queue drained in batches.
//!
//! Producers ([`FrameQueue::try_push`], from any thread) take a short lock to
//! append; the single consumer (a peer's writer task) takes the lock once per
//! batch and moves up to `max` frames out ([`FrameQueue::pop_batch`]). The consumer
//! is woken only when the queue goes from empty to non-empty, and waiting producers
//! ([`FrameQueue::push`]) only when a batch is taken from a full queue. FIFO; never
//! holds more than `capacity` frames.

use std::collections::VecDeque;
use std::sync::{Mutex, MutexGuard};

use bytes::Bytes;
use tokio::sync::Notify;

/// Why a frame was not queued.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum PushError {
    /// The queue holds `capacity` frames.
    Full,
    /// The queue was closed.
    Closed,
}

struct State {
    frames: VecDeque<Bytes>,
    closed: bool,
}

pub(crate) struct FrameQueue {
    state: Mutex<State>,
    capacity: usize,
    /// Wakes the consumer when the queue becomes non-empty (or is closed).
    ready: Notify,
    /// Wakes producers waiting for room.
    room: Notify,
}

impl FrameQueue {
    pub(crate) fn new(capacity: usize) -> Self {
        Self {
            state: Mutex::new(State {
                frames: VecDeque::new(),
                closed: false,
            }),
            capacity,
            ready: Notify::new(),
            room: Notify::new(),
        }
    }

    fn lock(&self) -> MutexGuard<'_, State> {
        // The state stays consistent even if a holder panicked (no invariants span
        // more than one statement), so a poisoned lock is still usable.
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn push_or_return(&self, frame: Bytes) -> Result<(), (PushError, Bytes)> {
        let mut st = self.lock();
        if st.closed {
            return Err((PushError::Closed, frame));
        }
        if st.frames.len() >= self.capacity {
            return Err((PushError::Full, frame));
        }
        st.frames.push_back(frame);
        let first = st.frames.len() == 1;
        drop(st);
        if first {
            self.ready.notify_one();
        }
        Ok(())
    }

    /// Appends `frame` unless the queue is full or closed. Never blocks on I/O.
    pub(crate) fn try_push(&self, frame: Bytes) -> Result<(), PushError> {
        self.push_or_return(frame).map_err(|(e, _)| e)
    }

    /// Appends `frame`, waiting for room while the queue is full.
    pub(crate) async fn push(&self, frame: Bytes) -> Result<(), PushError> {
        // Fast path: room now, no waiter registered.
        let mut frame = match self.push_or_return(frame) {
            Ok(()) => return Ok(()),
            Err((PushError::Full, back)) => back,
            Err((e, _)) => return Err(e),
        };
        loop {
            let room = self.room.notified();
            tokio::pin!(room);
            room.as_mut().enable();
            match self.push_or_return(frame) {
                Ok(()) => return Ok(()),
                Err((PushError::Full, back)) => {
                    frame = back;
                    room.await;
                }
                Err((e, _)) => return Err(e),
            }
        }
    }

    /// Moves up to `max` frames into `out`, waiting while the queue is empty.
    /// Returns the number moved; 0 means the queue is closed and drained.
    pub(crate) async fn pop_batch(&self, out: &mut Vec<Bytes>, max: usize) -> usize {
        loop {
            {
                let mut st = self.lock();
                if !st.frames.is_empty() {
                    let was_full = st.frames.len() >= self.capacity;
                    let n = st.frames.len().min(max);
                    out.extend(st.frames.drain(..n));
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
    use super::*;

    #[tokio::test]
    async fn fifo_bounded_batches_and_close() {
        let q = FrameQueue::new(3);
        for i in 0..3u8 {
            q.try_push(Bytes::from(vec![i])).expect("room");
        }
        assert_eq!(q.try_push(Bytes::new()), Err(PushError::Full));
        let mut out = Vec::new();
        assert_eq!(q.pop_batch(&mut out, 2).await, 2);
        assert_eq!(q.pop_batch(&mut out, 10).await, 1);
        assert_eq!(
            out,
            vec![
                Bytes::from(vec![0]),
                Bytes::from(vec![1]),
                Bytes::from(vec![2])
            ]
        );
        q.close();
        assert_eq!(q.try_push(Bytes::new()), Err(PushError::Closed));
        assert_eq!(q.pop_batch(&mut out, 10).await, 0);
    }

    #[tokio::test]
    async fn waiting_producer_gets_room_after_a_batch() {
        let q = std::sync::Arc::new(FrameQueue::new(1));
        q.try_push(Bytes::from_static(b"a")).expect("room");
        let q2 = q.clone();
        let producer = tokio::spawn(async move { q2.push(Bytes::from_static(b"b")).await });
        tokio::task::yield_now().await;
        let mut out = Vec::new();
        assert_eq!(q.pop_batch(&mut out, 10).await, 1);
        producer.await.expect("join").expect("pushed");
        assert_eq!(q.pop_batch(&mut out, 10).await, 1);
        assert_eq!(
            out,
            vec![Bytes::from_static(b"a"), Bytes::from_static(b"b")]
        );
    }
}
