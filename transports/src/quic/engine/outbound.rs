//! Outbound: the writer tasks and the connector.
//!
//! Sending: frames go into the peer's bounded queue in wire format (see
//! `queue`); a writer takes them in batches. While a writer is idle its stream
//! waits in the queue, and a frame sent to the empty queue is written at once
//! by the sender (a request or reply does not wait for the writer task).
//!
//! A writer writes its batches in queue order on one stream per connection,
//! and drops (never re-sends) a batch whose write failed: the writer's half
//! of the ordering argument, which [`super::reader`] completes.
//!
//! The connector dials a peer whenever a writer waits for a connection, with
//! jittered exponential back-off (`reconnect_min` .. `reconnect_max`, jitter
//! from an RNG seeded per node incarnation and peer), and exchanges the hello
//! as the dialer; a connection becomes the peer's current one only through
//! the duplicate rule of [`Inner::register`].

use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use quinn::{Connection, SendStream, VarInt};
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use tracing::{debug, warn};

use super::super::queue::{Sink, WireSink};
use super::super::wire::{self, Hello};
use super::super::QuicConfig;
use super::links::Registration;
use super::reader::read_hello;
use super::{close, Inner, Peer};

impl WireSink for SendStream {
    fn try_write(&mut self, chunks: &mut [Bytes]) -> Result<usize, ()> {
        // `write_chunks` does its work in its first poll: it returns what the
        // stream's flow control admits now, or `Pending` having written
        // nothing. Its waker is replaced when the writer next waits.
        let mut cx = std::task::Context::from_waker(futures::task::noop_waker_ref());
        let write = self.write_chunks(chunks);
        tokio::pin!(write);
        match std::future::Future::poll(write.as_mut(), &mut cx) {
            std::task::Poll::Ready(Ok(written)) => Ok(written.chunks),
            std::task::Poll::Ready(Err(_)) => Err(()),
            std::task::Poll::Pending => Ok(0),
        }
    }
}

/// Why a dial did not produce the peer's current connection.
pub(super) enum DialError {
    /// The duplicate rule kept another connection (expected, not an error).
    Duplicate,
    /// Anything else, described.
    Failed(String),
}

impl From<String> for DialError {
    fn from(e: String) -> Self {
        DialError::Failed(e)
    }
}

/// The wait before reconnect attempt `attempt` (from 0): the minimum
/// doubled per attempt, capped at the maximum, jittered by 0.5-1.5.
pub(super) fn reconnect_delay(cfg: &QuicConfig, attempt: u32, rng: &mut impl Rng) -> Duration {
    cfg.reconnect_min
        .saturating_mul(1u32 << attempt.min(16))
        .min(cfg.reconnect_max)
        .mul_f64(rng.gen_range(0.5..1.5))
}

pub(super) fn seed_for(a: &str, b: &str) -> u64 {
    // FNV-1a: a stable per-(node, peer) seed for the back-off jitter.
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for byte in a.bytes().chain([0u8]).chain(b.bytes()) {
        h ^= u64::from(byte);
        h = h.wrapping_mul(0x0100_0000_01b3);
    }
    h
}

impl Inner {
    // ----- writing -------------------------------------------------------------

    /// Drains one queue of one peer, writing batches on a stream of the
    /// current link. Between batches the stream waits in the queue, where a
    /// frame sent to an empty queue is written directly (see `queue`).
    pub(super) async fn writer(self: Arc<Self>, peer: Arc<Peer>, kind: u8) {
        let queue = if kind == wire::STREAM_CONTROL {
            &peer.ctrl_q
        } else {
            &peer.data_q
        };
        let shutdown = self.shutdown_tx.subscribe();
        let stop = Self::shut_down(shutdown);
        tokio::pin!(stop);
        let mut link_rx = peer.link.subscribe();
        // Wire-format chunks (the queue stores frames already encoded).
        let mut chunks: Vec<Bytes> = Vec::new();
        loop {
            chunks.clear();
            let popped = tokio::select! {
                popped = queue.pop_batch(&mut chunks, self.cfg.max_batch) => popped,
                _ = &mut stop => return,
            };
            let Some((n, sink)) = popped else {
                return; // closed and drained
            };
            // Wait for a confirmed connection.
            let link = loop {
                let current = link_rx.borrow_and_update().clone();
                if let Some(link) = current {
                    break link;
                }
                peer.want_connect.notify_one();
                tokio::select! {
                    changed = link_rx.changed() => if changed.is_err() { return },
                    _ = &mut stop => return,
                }
            };
            // The rest of a frame a direct write started goes first, on the
            // same stream; if that stream's connection is gone, so is the
            // frame (like a batch whose write failed).
            let (mut stream, mut rest) = match sink {
                Some(s) if s.link == link.id => (Some(s.stream), s.rest),
                Some(s) => {
                    if !s.rest.is_empty() {
                        debug!(node = %self.name, peer = %peer.name, "connection replaced: a partly written frame dropped");
                    }
                    (None, Vec::new())
                }
                None => (None, Vec::new()),
            };
            if stream.is_none() {
                match Self::open_stream(&link.conn, kind).await {
                    Ok(s) => stream = Some(s),
                    Err(e) => {
                        debug!(node = %self.name, peer = %peer.name, "opening stream failed, {n} frames dropped: {e}");
                        queue.put_sink(None);
                        continue;
                    }
                }
            }
            if let Some(s) = stream.as_mut() {
                let written = match s.write_all_chunks(&mut rest).await {
                    Ok(()) => s.write_all_chunks(&mut chunks).await,
                    Err(e) => Err(e),
                };
                if let Err(e) = written {
                    debug!(node = %self.name, peer = %peer.name, "write failed, {n} frames dropped: {e}");
                    stream = None;
                }
            }
            queue.put_sink(stream.map(|stream| Sink {
                link: link.id,
                stream,
                rest: Vec::new(),
            }));
        }
    }

    async fn open_stream(conn: &Connection, kind: u8) -> Result<SendStream, String> {
        let mut s = conn.open_uni().await.map_err(|e| e.to_string())?;
        if kind == wire::STREAM_CONTROL {
            s.set_priority(10).map_err(|e| e.to_string())?;
        }
        s.write_all(&[kind]).await.map_err(|e| e.to_string())?;
        Ok(s)
    }

    // ----- dialing -------------------------------------------------------------

    /// Dials `peer` whenever a writer waits for a connection, with jittered
    /// exponential back-off between failed attempts.
    pub(super) async fn connector(self: Arc<Self>, peer: Arc<Peer>) {
        let stop = Self::shut_down(self.shutdown_tx.subscribe());
        tokio::pin!(stop);
        let mut rng = ChaCha8Rng::seed_from_u64(seed_for(&self.incarnation, &peer.name));
        loop {
            tokio::select! {
                _ = peer.want_connect.notified() => {}
                _ = &mut stop => return,
            }
            let mut attempt: u32 = 0;
            while peer.link.borrow().is_none() && !self.is_shut_down() {
                peer.dialing.store(true, Ordering::Release);
                // A shutdown abandons the dial at once: its outcome is
                // nobody's business any more, and a peer that is gone
                // (say, sent this node's leave announcement) would
                // otherwise be reported as a failure after the node stopped.
                let result = tokio::select! {
                    result = self.dial(&peer) => Some(result),
                    _ = &mut stop => None,
                };
                peer.dialing.store(false, Ordering::Release);
                let Some(result) = result.filter(|_| !self.is_shut_down()) else {
                    debug!(node = %self.name, peer = %peer.name, "shutting down: dial abandoned");
                    return;
                };
                match result {
                    Ok(()) => break,
                    // Expected when both nodes dial at once; the peer's dial wins.
                    Err(DialError::Duplicate) => debug!(
                        node = %self.name, peer = %peer.name,
                        "peer kept its own connection (simultaneous dial)"
                    ),
                    // Loud for the first attempts, then every tenth.
                    Err(DialError::Failed(e)) if attempt < 3 || attempt.is_multiple_of(10) => {
                        warn!(
                            node = %self.name, peer = %peer.name, addr = %peer.addr(), attempt,
                            "connecting to peer failed: {e}"
                        )
                    }
                    Err(DialError::Failed(e)) => debug!(
                        node = %self.name, peer = %peer.name, addr = %peer.addr(), attempt,
                        "connecting to peer failed: {e}"
                    ),
                }
                let delay = reconnect_delay(&self.cfg, attempt, &mut rng);
                attempt = attempt.saturating_add(1);
                tokio::select! {
                    _ = tokio::time::sleep(delay) => {}
                    _ = &mut stop => return,
                }
            }
        }
    }

    async fn dial(self: &Arc<Self>, peer: &Arc<Peer>) -> Result<(), DialError> {
        let connecting = self
            .endpoint
            .connect_with(self.client_config.clone(), peer.addr(), &peer.name)
            .map_err(|e| format!("cannot start connection: {e}"))?;
        let deadline = self.cfg.handshake_timeout;
        let handshake = async {
            let conn = connecting
                .await
                .map_err(|e| format!("TLS handshake failed: {e}"))?;
            if let Some(checker) = &self.checker {
                if let Err(e) = checker.check(&conn, &peer.name) {
                    close(&conn, wire::CLOSE_REFUSED, "identity mismatch");
                    return Err(e.into());
                }
            }
            let (mut send, theirs) = self.exchange_hello(&conn, "peer").await?;
            if theirs.name != peer.name {
                close(&conn, wire::CLOSE_REFUSED, "unexpected node name in hello");
                return Err(format!(
                    "peer at {} says it is {:?}, expected {:?}",
                    peer.addr(),
                    theirs.name,
                    peer.name
                )
                .into());
            }
            // The hello stream has served its purpose.
            let _ = send.finish();
            Ok::<_, DialError>((conn, theirs))
        };
        let (conn, theirs) = tokio::time::timeout(deadline, handshake)
            .await
            .map_err(|_| format!("handshake and hello took longer than {deadline:?}"))??;
        match self.register(peer, conn, true, theirs.incarnation).await {
            Ok(()) => Ok(()),
            Err(Registration::Duplicate) => Err(DialError::Duplicate),
            Err(Registration::ShuttingDown) => Err("transport is shutting down".to_string().into()),
        }
    }

    /// As the dialer of `conn`: open the hello stream, send this node's
    /// hello and read the other side's (`who` names it in errors: `peer`,
    /// `seed`). The stream is returned to be finished once the hello is
    /// checked.
    pub(super) async fn exchange_hello(
        &self,
        conn: &Connection,
        who: &str,
    ) -> Result<(quinn::SendStream, Hello), DialError> {
        let (mut send, mut recv) = conn
            .open_bi()
            .await
            .map_err(|e| format!("opening hello stream: {e}"))?;
        let hello = self.hello().encode().map_err(|e| e.to_string())?;
        send.write_all(&hello)
            .await
            .map_err(|e| format!("sending hello: {e}"))?;
        match read_hello(&mut recv).await {
            Ok(h) => Ok((send, h)),
            Err(e) => Err(match conn.close_reason() {
                Some(quinn::ConnectionError::ApplicationClosed(c))
                    if c.error_code == VarInt::from_u32(wire::CLOSE_DUPLICATE) =>
                {
                    DialError::Duplicate
                }
                Some(reason) => format!("{who} refused us: {reason}").into(),
                None => format!("{who} sent no valid hello: {e}").into(),
            }),
        }
    }

    /// This node's hello: version 2 (with the listen address) when it
    /// accepts joins, else version 1.
    pub(super) fn hello(&self) -> Hello {
        Hello {
            name: self.name.clone(),
            incarnation: self.incarnation.clone(),
            listen: self.cfg.accept_joins.then_some(self.local_addr),
        }
    }
}
