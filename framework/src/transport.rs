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
//!
//! A transport may also hand the node a whole source of frames
//! ([`TransportEvent::Source`], say one QUIC stream) for the node to read
//! itself: the node's dispatcher then polls it in its own task, so a frame
//! reaches an actor without passing through a reader task and the channel
//! (one task switch fewer per message). [`InboundEvents`] merges the channel
//! and the sources it carried into one sequence of events, for the node and
//! for anyone else who reads a transport directly. Back-pressure holds the
//! same way: a source that is not polled is not read.
//!
//! A source of *control* frames ([`TransportEvent::ControlSource`]: what
//! [`Transport::send_control`] sent, on QUIC its own stream) can be read
//! on its own, while ordinary traffic is held back
//! ([`InboundEvents::recv_filtered`]): a node whose actors are slow stops
//! reading their messages but still hears its peers' heartbeats.

use std::future::Future;
use std::pin::Pin;
use std::task::{Context, Poll};

use bytes::Bytes;
use futures::stream::{SelectAll, Stream};

/// A source of inbound events the receiver reads itself (see
/// [`TransportEvent::Source`]). It ends when its stream or connection does.
pub type InboundStream = Pin<Box<dyn Stream<Item = TransportEvent> + Send>>;

/// What a transport tells its node.
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
    /// A source of further events (frames from one incoming stream) that the
    /// receiver polls itself, for as long as it yields. Its events carry the
    /// same guarantees as those sent through the channel; the frames of one
    /// sender may be split over several sources (QUIC: one per stream class),
    /// each in order. [`InboundEvents`] takes care of this variant.
    Source(InboundStream),
    /// Like [`TransportEvent::Source`], for a source of control frames only
    /// (heartbeats, failure-detector probes: what [`Transport::send_control`]
    /// sent). A receiver holding ordinary traffic back can still read it
    /// ([`InboundEvents::recv_filtered`]).
    ControlSource(InboundStream),
}

impl std::fmt::Debug for TransportEvent {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            TransportEvent::Frame { from, bytes } => f
                .debug_struct("Frame")
                .field("from", from)
                .field("len", &bytes.len())
                .finish(),
            TransportEvent::Frames { from, frames } => f
                .debug_struct("Frames")
                .field("from", from)
                .field("count", &frames.len())
                .finish(),
            TransportEvent::PeerUp { peer } => {
                f.debug_struct("PeerUp").field("peer", peer).finish()
            }
            TransportEvent::PeerDown { peer, reason } => f
                .debug_struct("PeerDown")
                .field("peer", peer)
                .field("reason", reason)
                .finish(),
            TransportEvent::Source(_) => f.write_str("Source(..)"),
            TransportEvent::ControlSource(_) => f.write_str("ControlSource(..)"),
        }
    }
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

/// A transport's inbound events as one sequence: what comes through the
/// channel, and what the [`TransportEvent::Source`]s and
/// [`TransportEvent::ControlSource`]s it carried yield, polled here in the
/// caller's task. Never yields a source itself.
///
/// Within one source and within the channel, order is kept; between them
/// there is no order (as between two streams of a QUIC connection). The
/// channel is polled first, so connection events are not starved by a busy
/// source; control frames and the others (from the channel or a source)
/// take turns, control first.
pub struct InboundEvents {
    rx: InboundReceiver,
    sources: SelectAll<InboundStream>,
    control: SelectAll<InboundStream>,
    /// A frame event taken from the channel, waiting for its turn (after a
    /// control frame, or until ordinary traffic is read again); the channel
    /// is not read past it meanwhile, so at most one waits here.
    held: Option<TransportEvent>,
    /// The last event came from a control source (ordinary ones go first next).
    control_last: bool,
    closed: bool,
}

impl InboundEvents {
    /// Reads the events of the channel `rx`.
    pub fn new(rx: InboundReceiver) -> Self {
        Self {
            rx,
            sources: SelectAll::new(),
            control: SelectAll::new(),
            held: None,
            control_last: false,
            closed: false,
        }
    }

    /// The next event; `None` once the channel is closed and every source
    /// has ended. Cancel-safe: dropping the future loses nothing, so it can
    /// be a `tokio::select!` branch.
    pub async fn recv(&mut self) -> Option<TransportEvent> {
        std::future::poll_fn(|cx| self.poll_recv(cx)).await
    }

    /// Like [`InboundEvents::recv`], but with `data` false only connection
    /// events and the frames of control sources come out: ordinary frames
    /// (from the channel or a [`TransportEvent::Source`]) wait, unread, so
    /// back-pressure holds for them while heartbeats keep arriving.
    /// Cancel-safe.
    pub async fn recv_filtered(&mut self, data: bool) -> Option<TransportEvent> {
        std::future::poll_fn(|cx| self.poll_recv_filtered(cx, data)).await
    }

    /// Sources currently being read (ordinary and control).
    pub fn sources(&self) -> usize {
        self.sources.len() + self.control.len()
    }

    /// Poll-based [`InboundEvents::recv`].
    pub fn poll_recv(&mut self, cx: &mut Context<'_>) -> Poll<Option<TransportEvent>> {
        self.poll_recv_filtered(cx, true)
    }

    /// Poll-based [`InboundEvents::recv_filtered`].
    pub fn poll_recv_filtered(
        &mut self,
        cx: &mut Context<'_>,
        data: bool,
    ) -> Poll<Option<TransportEvent>> {
        // The channel: sources are adopted and connection events come out
        // at once; the first frame event waits in `held` (one slot), and
        // the channel is not read past it until it has gone out.
        while !self.closed && self.held.is_none() {
            match self.rx.poll_recv(cx) {
                Poll::Ready(Some(ev)) => match self.adopt(ev) {
                    Some(ev) if ev.frames().next().is_none() => return Poll::Ready(Some(ev)),
                    Some(ev) => self.held = Some(ev),
                    None => {}
                },
                Poll::Ready(None) => self.closed = true,
                Poll::Pending => break,
            }
        }
        // Control and ordinary frames (the held channel frame, then the
        // ordinary sources) take turns, control first: a heartbeat waits
        // behind at most one batch of ordinary frames, and a flood of
        // control frames cannot starve the rest. (An empty set is not
        // polled: nothing in it can wake us.)
        let control_first = !(data && self.control_last);
        for control in [control_first, !control_first] {
            if control {
                if !self.control.is_empty() {
                    if let Poll::Ready(Some(ev)) = Self::poll_sources(&mut self.control, cx) {
                        self.control_last = true;
                        return Poll::Ready(Some(ev));
                    }
                }
            } else if data {
                if let Some(ev) = self.held.take() {
                    self.control_last = false;
                    return Poll::Ready(Some(ev));
                }
                if !self.sources.is_empty() {
                    if let Poll::Ready(Some(ev)) = Self::poll_sources(&mut self.sources, cx) {
                        self.control_last = false;
                        return Poll::Ready(Some(ev));
                    }
                }
            }
        }
        let over = self.closed
            && self.held.is_none()
            && self.sources.is_empty()
            && self.control.is_empty();
        if over {
            Poll::Ready(None)
        } else {
            Poll::Pending
        }
    }

    /// Keeps a source handed over in an event, to be read from now on;
    /// other events are given back.
    fn adopt(&mut self, ev: TransportEvent) -> Option<TransportEvent> {
        match ev {
            TransportEvent::Source(s) => self.sources.push(s),
            TransportEvent::ControlSource(s) => self.control.push(s),
            ev => return Some(ev),
        }
        None
    }

    /// The next event of the sources in `sources`; `Ready(None)` once all
    /// have ended. A source that a source yields is read too, in the same
    /// set (it is of the same class).
    fn poll_sources(
        sources: &mut SelectAll<InboundStream>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<TransportEvent>> {
        loop {
            match Pin::new(&mut *sources).poll_next(cx) {
                Poll::Ready(Some(TransportEvent::Source(s)))
                | Poll::Ready(Some(TransportEvent::ControlSource(s))) => sources.push(s),
                other => return other,
            }
        }
    }
}

impl Stream for InboundEvents {
    type Item = TransportEvent;
    fn poll_next(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<TransportEvent>> {
        self.get_mut().poll_recv(cx)
    }
}

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
    /// The target node is `Down` or `Left` in this node's membership view
    /// (its failure detector reported it): asks fail at once instead of
    /// waiting for their deadline, and tells are not sent (and counted in
    /// the node's `dropped_tells`). Failure-detector (control) traffic is
    /// still sent, so a node that comes back is noticed.
    #[error("node {peer:?} is {status:?} in this node's membership view")]
    PeerDown {
        /// Peer node name.
        peer: String,
        /// What the failure detector reported.
        status: crate::membership::MemberStatus,
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
    /// True when the transport records sends, deliveries and drops in the
    /// trace itself (the simulated network, with its network-wide
    /// sequence numbers); then the node does not record frames again.
    fn traces_frames(&self) -> bool {
        false
    }
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

#[cfg(test)]
mod tests {
    use super::*;

    fn frame(from: &str, text: &'static str) -> TransportEvent {
        TransportEvent::Frame {
            from: from.into(),
            bytes: Bytes::from_static(text.as_bytes()),
        }
    }

    /// A channel that has handed over a source of frames `d:<t>` for each
    /// of `data` and a control source of frames `c:<t>` for each of
    /// `control`, and the events read from it.
    async fn with_sources(
        data: &[&'static str],
        control: &[&'static str],
    ) -> (tokio::sync::mpsc::Sender<TransportEvent>, InboundEvents) {
        let (tx, rx) = tokio::sync::mpsc::channel(8);
        let frames = |from: &'static str, texts: &[&'static str]| {
            let frames: Vec<_> = texts.iter().map(|t| frame(from, t)).collect();
            Box::pin(futures::stream::iter(frames))
        };
        tx.send(TransportEvent::Source(frames("d", data)))
            .await
            .unwrap();
        tx.send(TransportEvent::ControlSource(frames("c", control)))
            .await
            .unwrap();
        (tx, InboundEvents::new(rx))
    }

    fn text(ev: &TransportEvent) -> String {
        ev.frames()
            .map(|(from, b)| format!("{from}:{}", String::from_utf8_lossy(b)))
            .collect::<Vec<_>>()
            .join(",")
    }

    /// A source's events come out in order, interleaved with the channel's,
    /// and the sequence ends only once the channel is closed *and* every
    /// source (including one handed over by a source) has ended.
    #[tokio::test]
    async fn channel_and_sources_merge_in_order_and_end_together() {
        let (tx, rx) = tokio::sync::mpsc::channel(8);
        let mut events = InboundEvents::new(rx);
        let (src_tx, src_rx) = tokio::sync::mpsc::channel::<TransportEvent>(8);
        let source = futures::stream::unfold(src_rx, |mut rx| async move {
            rx.recv().await.map(|ev| (ev, rx))
        });
        tx.send(frame("a", "1")).await.unwrap();
        tx.send(TransportEvent::Source(Box::pin(source)))
            .await
            .unwrap();
        src_tx.send(frame("b", "1")).await.unwrap();
        src_tx.send(frame("b", "2")).await.unwrap();
        assert_eq!(text(&events.recv().await.unwrap()), "a:1");
        assert_eq!(text(&events.recv().await.unwrap()), "b:1");
        assert_eq!(events.sources(), 1);
        // A source handed over by a source is read as well.
        let inner = futures::stream::iter([frame("c", "1")]);
        src_tx
            .send(TransportEvent::Source(Box::pin(inner)))
            .await
            .unwrap();
        assert_eq!(text(&events.recv().await.unwrap()), "b:2");
        assert_eq!(text(&events.recv().await.unwrap()), "c:1");
        // The channel closes, but a source is still open: not over yet.
        drop(tx);
        src_tx.send(frame("b", "3")).await.unwrap();
        assert_eq!(text(&events.recv().await.unwrap()), "b:3");
        let pending = tokio::time::timeout(std::time::Duration::from_millis(50), events.recv());
        assert!(pending.await.is_err(), "must wait for the open source");
        drop(src_tx);
        assert!(events.recv().await.is_none());
        assert_eq!(events.sources(), 0);
    }

    /// With ordinary traffic held back, control sources and connection
    /// events still come out; an ordinary frame from the channel stops the
    /// channel (so connection events after it wait too) and comes out first
    /// once ordinary traffic is read again; nothing is lost or reordered.
    #[tokio::test]
    async fn control_sources_are_read_while_ordinary_traffic_waits() {
        let (tx, mut events) = with_sources(&["1", "2"], &["1", "2"]).await;
        tx.send(TransportEvent::PeerUp { peer: "p".into() })
            .await
            .unwrap();
        tx.send(frame("ch", "1")).await.unwrap();
        tx.send(TransportEvent::PeerDown {
            peer: "p".into(),
            reason: "test".into(),
        })
        .await
        .unwrap();
        let mut held_back = Vec::new();
        loop {
            let next = events.recv_filtered(false);
            match tokio::time::timeout(std::time::Duration::from_millis(50), next).await {
                Ok(Some(ev)) => held_back.push(format!("{ev:?}/{}", text(&ev))),
                Ok(None) => panic!("ended early"),
                Err(_) => break,
            }
        }
        assert_eq!(
            held_back,
            [
                "PeerUp { peer: \"p\" }/",
                "Frame { from: \"c\", len: 1 }/c:1",
                "Frame { from: \"c\", len: 1 }/c:2",
            ]
        );
        // The control source has ended; the data source is still unread.
        assert_eq!(events.sources(), 1);
        // Ordinary traffic again: the held channel frame first, then the
        // rest of the channel, then the data source.
        assert_eq!(text(&events.recv().await.unwrap()), "ch:1");
        assert!(matches!(
            events.recv().await,
            Some(TransportEvent::PeerDown { .. })
        ));
        assert_eq!(text(&events.recv().await.unwrap()), "d:1");
        assert_eq!(text(&events.recv().await.unwrap()), "d:2");
        drop(tx);
        assert!(events.recv().await.is_none());
    }

    /// Frames on the channel (a transport that sends them there, like the
    /// simulated network) take turns with control frames too: a heartbeat
    /// does not wait behind a full channel.
    #[tokio::test]
    async fn channel_frames_take_turns_with_control_frames() {
        let (tx, rx) = tokio::sync::mpsc::channel(8);
        let mut events = InboundEvents::new(rx);
        let control = futures::stream::iter([frame("c", "1")]);
        tx.send(TransportEvent::ControlSource(Box::pin(control)))
            .await
            .unwrap();
        for t in ["1", "2", "3"] {
            tx.send(frame("ch", t)).await.unwrap();
        }
        drop(tx);
        let mut seen = Vec::new();
        while let Some(ev) = events.recv().await {
            seen.push(text(&ev));
        }
        assert_eq!(seen, ["c:1", "ch:1", "ch:2", "ch:3"]);
    }

    /// With both kinds ready, control and ordinary events take turns: a
    /// busy control source neither waits behind a busy ordinary one nor
    /// starves it.
    #[tokio::test]
    async fn control_and_ordinary_sources_take_turns() {
        let (tx, mut events) = with_sources(&["1", "2", "3"], &["1", "2", "3", "4", "5"]).await;
        drop(tx);
        let mut seen = Vec::new();
        while let Some(ev) = events.recv().await {
            seen.push(text(&ev));
        }
        assert_eq!(
            seen,
            ["c:1", "d:1", "c:2", "d:2", "c:3", "d:3", "c:4", "c:5"]
        );
    }
}
