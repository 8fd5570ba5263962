//! The boundary between a node and the network.
//!
//! A [`Transport`] moves opaque frames (encoded envelopes) between nodes
//! named by their node name, and reports what it receives as
//! [`TransportEvent`]s into a bounded channel owned by the node. It knows
//! nothing of actors or protocols.
//!
//! Guarantees every transport gives:
//! - frames from one sender node to one receiver node arrive in send order,
//!   or not at all (the simulated network can be told to break this on purpose);
//! - `from` in [`TransportEvent::Frame`] is the *authenticated* sender (for QUIC,
//!   the name in the peer's certificate), never taken from the frame itself;
//! - `send` never blocks: a frame that cannot be queued is refused with an error
//!   (bounded queues), so a dead peer cannot make the sender grow without limit;
//! - inbound frames are delivered with back-pressure: when the node's inbound
//!   channel is full the transport stops reading, and flow control pushes back
//!   on the remote sender.

use std::future::Future;
use std::pin::Pin;

use bytes::Bytes;

/// What a transport tells its node.
#[derive(Debug, Clone)]
pub enum TransportEvent {
    /// A frame arrived from the (authenticated) node `from`.
    Frame {
        /// Sender node name.
        from: String,
        /// The frame's bytes (one encoded envelope).
        bytes: Bytes,
    },
    /// Several frames that arrived together from the (authenticated) node
    /// `from`, in arrival order: a transport that reads in chunks (QUIC)
    /// hands over a chunk's frames at once, so the node pays one channel
    /// operation per chunk rather than per frame. Same guarantees as
    /// [`TransportEvent::Frame`].
    Frames {
        /// Sender node name.
        from: std::sync::Arc<str>,
        /// The frames, in order (each one encoded envelope).
        frames: Vec<Bytes>,
    },
    /// A connection to `peer` is established and the peer is confirmed.
    PeerUp {
        /// Peer node name.
        peer: String,
    },
    /// The connection to `peer` is gone.
    PeerDown {
        /// Peer node name.
        peer: String,
        /// Why, for logs.
        reason: String,
    },
}

impl TransportEvent {
    /// The frames this event carries, with their sender: one for
    /// [`TransportEvent::Frame`], all of them for [`TransportEvent::Frames`],
    /// none for connection events.
    pub fn frames(&self) -> impl Iterator<Item = (&str, &Bytes)> {
        let (from, frames): (&str, &[Bytes]) = match self {
            TransportEvent::Frame { from, bytes } => (from, std::slice::from_ref(bytes)),
            TransportEvent::Frames { from, frames } => (from, frames),
            _ => ("", &[]),
        };
        frames.iter().map(move |b| (from, b))
    }
}

/// The node's inbound channel: bounded, so a fast sender is slowed down.
pub type InboundSender = tokio::sync::mpsc::Sender<TransportEvent>;
/// The receiving end, owned by the node.
pub type InboundReceiver = tokio::sync::mpsc::Receiver<TransportEvent>;

/// Why a frame could not be sent.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum TransportError {
    /// No address is known for this peer.
    #[error("unknown peer {0:?}")]
    UnknownPeer(String),
    /// The peer's bounded send queue is full (the peer is slow or unreachable).
    #[error("send queue to {peer:?} is full ({capacity} frames): peer slow or unreachable")]
    QueueFull {
        /// Peer node name.
        peer: String,
        /// Queue capacity in frames.
        capacity: usize,
    },
    /// The frame is larger than the configured maximum.
    #[error("frame of {len} bytes exceeds the {max}-byte limit")]
    FrameTooLarge {
        /// Frame length.
        len: usize,
        /// Limit.
        max: usize,
    },
    /// The transport has been shut down.
    #[error("transport is shut down")]
    Closed,
    /// Anything else, with a description.
    #[error("transport error: {0}")]
    Other(String),
}

/// Moves frames between nodes. Implemented by `troupe-transports` (`quic`, `sim`).
pub trait Transport: Send + Sync + 'static {
    /// This node's name as the transport knows it.
    fn local_name(&self) -> &str;
    /// Queue `frame` for `to`. Never blocks; see [`TransportError`].
    fn send(&self, to: &str, frame: Bytes) -> Result<(), TransportError>;
    /// Queue a *control* frame (heartbeats, failure-detector probes) for `to`:
    /// a transport that can (QUIC) sends it on its own stream, so it never
    /// waits behind large payloads. Control frames keep their order among
    /// themselves, not relative to ordinary frames. Default: [`Transport::send`].
    fn send_control(&self, to: &str, frame: Bytes) -> Result<(), TransportError> {
        self.send(to, frame)
    }
    /// Like [`Transport::send`] for a frame the caller keeps (say, encoded
    /// in a reused buffer): the transport copies what it needs. A transport
    /// that queues frames in wire format (QUIC) appends the bytes straight to
    /// the peer's queue, so neither side allocates per frame. Default: a copy
    /// into a new [`Bytes`] for [`Transport::send`].
    fn send_slice(&self, to: &str, frame: &[u8]) -> Result<(), TransportError> {
        self.send(to, Bytes::copy_from_slice(frame))
    }
    /// [`Transport::send_control`] for a borrowed frame, as
    /// [`Transport::send_slice`] is for [`Transport::send`].
    fn send_control_slice(&self, to: &str, frame: &[u8]) -> Result<(), TransportError> {
        self.send_control(to, Bytes::copy_from_slice(frame))
    }
    /// Like [`Transport::send`], but when the peer's queue is full, wait for
    /// room instead of refusing the frame: back-pressure for bulk senders.
    /// Other errors are returned at once. A transport without queues (the
    /// default) just sends.
    fn send_wait<'a>(
        &'a self,
        to: &'a str,
        frame: Bytes,
    ) -> Pin<Box<dyn Future<Output = Result<(), TransportError>> + Send + 'a>> {
        let sent = self.send(to, frame);
        Box::pin(std::future::ready(sent))
    }
    /// Stop sending and receiving; pending frames may be dropped.
    fn shutdown(&self);
}
