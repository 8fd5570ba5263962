//! Reading: incoming streams, handed to the node as sources it reads itself.
//!
//! Receiving: a stream's reader hands the node every complete frame of the
//! chunks received so far in one `TransportEvent::Frames`.
//!
//! Ordering argument: a writer writes its batches in queue order on one stream per
//! connection, and drops (never re-sends) a batch whose write failed. A reader
//! delivers a frame only while its connection is the peer's *current* one
//! (`Peer::current_id`, checked when the node polls the reader; the node
//! delivers that whole batch before it takes any other event, though it may
//! yield to its actors in between), and once a connection stops being current
//! it never becomes current again. So the receiver sees, per class, a subsequence of the sender's order.
//!
//! Bad input (an unknown stream kind, a malformed frame) closes the
//! connection with `CLOSE_PROTOCOL`; the frames before a bad one are still
//! delivered.

use std::sync::atomic::Ordering;
use std::sync::Arc;

use bytes::Bytes;
use futures::FutureExt;
use quinn::{RecvStream, VarInt};
use tracing::{debug, error};
use troupe_framework::transport::TransportEvent;

use super::super::wire::{self, FrameDecoder, Hello};
use super::{close, Inner, Link, Peer};

/// Most frames a stream reader hands to the node in one event.
const GATHER_FRAMES: usize = 256;

impl Inner {
    pub(super) async fn accept_streams(self: Arc<Self>, peer: Arc<Peer>, link: Link) {
        while let Ok(recv) = link.conn.accept_uni().await {
            tokio::spawn(self.clone().read_stream(peer.clone(), link.clone(), recv));
        }
    }

    /// Reads an incoming stream's kind byte, then hands the stream to the
    /// node as a [`TransportEvent::Source`] (a control stream as a
    /// [`TransportEvent::ControlSource`]) that its dispatcher reads itself.
    async fn read_stream(self: Arc<Self>, peer: Arc<Peer>, link: Link, mut recv: RecvStream) {
        let mut kind = [0u8; 1];
        if recv.read_exact(&mut kind).await.is_err() {
            return;
        }
        if kind[0] != wire::STREAM_DATA && kind[0] != wire::STREAM_CONTROL {
            error!(node = %self.name, peer = %peer.name, kind = kind[0], "unknown stream kind; closing connection");
            close(&link.conn, wire::CLOSE_PROTOCOL, "unknown stream kind");
            return;
        }
        let reader = StreamReader {
            decoder: FrameDecoder::new(self.cfg.max_frame_size),
            from: Arc::from(peer.name.as_str()),
            inner: self.clone(),
            peer,
            link,
            recv,
            done: false,
        };
        let source = futures::stream::unfold(reader, |mut reader| async move {
            let frames = reader.next_batch().await?;
            let from = reader.from.clone();
            Some((TransportEvent::Frames { from, frames }, reader))
        });
        let source = Box::pin(source);
        let event = if kind[0] == wire::STREAM_CONTROL {
            TransportEvent::ControlSource(source)
        } else {
            TransportEvent::Source(source)
        };
        if self.inbound.send(event).await.is_err() {
            debug!(node = %self.name, "node's inbound channel is closed");
        }
    }
}

/// One incoming stream, read by whoever polls it (the node's dispatcher):
/// chunks become frames, handed over in batches.
struct StreamReader {
    inner: Arc<Inner>,
    peer: Arc<Peer>,
    link: Link,
    recv: RecvStream,
    decoder: FrameDecoder,
    from: Arc<str>,
    /// Set once the stream has ended, broken, sent bad input or been
    /// replaced: nothing more is read.
    done: bool,
}

impl StreamReader {
    /// Every complete frame of the chunks received so far (at least one, at
    /// most about [`GATHER_FRAMES`]), in order; `None` once the stream is
    /// over. Frames are handed over only while this stream's connection is
    /// the peer's current one, checked just before they are returned (the
    /// caller delivers the whole batch before it takes any other event).
    async fn next_batch(&mut self) -> Option<Vec<Bytes>> {
        let mut frames = Vec::new();
        while !self.done {
            let chunk = match self.recv.read_chunk(256 * 1024, true).await {
                Ok(Some(chunk)) => chunk.bytes,
                Ok(None) => return None,
                Err(e) => {
                    debug!(node = %self.inner.name, peer = %self.peer.name, "stream ended: {e}");
                    return None;
                }
            };
            let mut bad = take_frames(&mut self.decoder, chunk, &mut frames);
            // Every complete frame of the chunks already received goes to the
            // node at once: more chunks are taken while they are ready now.
            while bad.is_none() && frames.len() < GATHER_FRAMES {
                match self.recv.read_chunk(256 * 1024, true).now_or_never() {
                    Some(Ok(Some(chunk))) => {
                        bad = take_frames(&mut self.decoder, chunk.bytes, &mut frames);
                    }
                    Some(Ok(None)) => {
                        self.done = true;
                        break;
                    }
                    Some(Err(e)) => {
                        debug!(node = %self.inner.name, peer = %self.peer.name, "stream ended: {e}");
                        self.done = true;
                        break;
                    }
                    None => break,
                }
            }
            if let Some(e) = bad {
                // The frames before the bad one are still delivered.
                error!(node = %self.inner.name, peer = %self.peer.name, "bad input from peer: {e}; closing connection");
                close(&self.link.conn, wire::CLOSE_PROTOCOL, &e.to_string());
                self.done = true;
            }
            if self.peer.current_id.load(Ordering::Acquire) != self.link.id {
                // Replaced or closed: stop; frames from here on are dropped.
                let _ = self.recv.stop(VarInt::from_u32(wire::CLOSE_DUPLICATE));
                self.done = true;
                return None;
            }
            if !frames.is_empty() {
                return Some(frames);
            }
        }
        None
    }
}

/// Adds `chunk` to the decoder and moves every complete frame into
/// `frames`; the wire error, if a frame is malformed (the frames before it
/// are kept).
fn take_frames(
    decoder: &mut FrameDecoder,
    chunk: Bytes,
    frames: &mut Vec<Bytes>,
) -> Option<wire::WireError> {
    decoder.push(chunk);
    loop {
        match decoder.next_frame() {
            Ok(Some(frame)) => frames.push(frame),
            Ok(None) => return None,
            Err(e) => return Some(e),
        }
    }
}

/// Reads one length-prefixed hello from the hello stream.
pub(super) async fn read_hello(recv: &mut RecvStream) -> Result<Hello, String> {
    let mut len = [0u8; 4];
    recv.read_exact(&mut len).await.map_err(|e| e.to_string())?;
    let len = u32::from_be_bytes(len) as usize;
    if len > wire::MAX_HELLO {
        return Err(format!("hello of {len} bytes exceeds {}", wire::MAX_HELLO));
    }
    let mut body = vec![0u8; len];
    recv.read_exact(&mut body)
        .await
        .map_err(|e| e.to_string())?;
    Hello::decode(&body).map_err(|e| e.to_string())
}
