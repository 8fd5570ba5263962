//! [`RemoteRef`]: a typed, location-transparent handle to a named actor.
//!
//! `node.lookup::<Deposit>("node-b/ledger")` gives a handle that accepts
//! `Deposit`s. The same two calls work wherever the target lives:
//!
//! - [`RemoteRef::tell`] — fire and forget. For a local target the message
//!   goes straight into the actor's mailbox (like actix's `do_send`, no
//!   serialization); for a remote one it is encoded and queued on the
//!   transport. `Ok` means *handed over*, not *delivered*.
//! - [`RemoteRef::tell_wait`] — the same, but waits for room when the
//!   transport's queue to the target node is full (back-pressure) where
//!   `tell` fails with `QueueFull`.
//! - [`RemoteRef::ask`] — request/response, resolving to the reply or a typed
//!   [`AskError`] (timeout, unreachable, remote error, codec error). Remote
//!   asks are retried and deduplicated (at most once execution, see
//!   [`crate::rpc`]); local asks cannot be lost and are not retried.
//!
//! A handle caches the local actor it resolved and resolves the name again
//! when that instance is gone, so it keeps working across restarts of the
//! target by its supervisor (tested in `tests/supervision.rs`).

use std::future::{Future, IntoFuture};
use std::marker::PhantomData;
use std::pin::Pin;
use std::sync::{Arc, OnceLock};

use arc_swap::ArcSwapOption;
use std::time::Duration;

use bytes::Bytes;

use crate::codec::{self, decode_payload, EnvelopeRef, Kind, RemoteError};
use crate::config::RetryPolicy;
use crate::error::{AskError, TellError};
use crate::ids::ActorPath;
use crate::metrics::{AskMeters, Direction, MessageKind, Traffic};
use crate::node::NodeShared;
use crate::remote::{LocalSend, RemoteMessage};
use crate::rpc::{Begun, Registered, Request, Wake};
use crate::transport::TransportError;

/// A typed handle to the actor at a path, accepting messages of type `M`.
pub struct RemoteRef<M: RemoteMessage> {
    /// Shared, so a handle and each of its asks clone a pointer.
    target: Arc<ActorPath>,
    shared: Arc<NodeShared>,
    from_actor: Option<String>,
    /// The first local recipient resolved. Set once, so reading it is a
    /// single atomic load: the fast path while that instance lives.
    pinned: Arc<OnceLock<Arc<dyn LocalSend<M>>>>,
    /// The recipient resolved after the pinned one stopped (the actor was
    /// restarted); replaced at each later restart.
    cache: Arc<ArcSwapOption<Arc<dyn LocalSend<M>>>>,
    /// The encoded header every remote tell of this handle starts with.
    prefix: Arc<OnceLock<Vec<u8>>>,
    /// Its counters for the node's metrics, made on first use.
    meters: Arc<RefMeters>,
    local: bool,
    control: bool,
    _m: PhantomData<fn(M)>,
}

impl<M: RemoteMessage> Clone for RemoteRef<M> {
    fn clone(&self) -> Self {
        Self {
            target: self.target.clone(),
            shared: self.shared.clone(),
            from_actor: self.from_actor.clone(),
            pinned: self.pinned.clone(),
            cache: self.cache.clone(),
            prefix: self.prefix.clone(),
            meters: self.meters.clone(),
            local: self.local,
            control: self.control,
            _m: PhantomData,
        }
    }
}

impl<M: RemoteMessage> std::fmt::Debug for RemoteRef<M> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "RemoteRef<{}>({})", M::NAME, self.target)
    }
}

impl<M: RemoteMessage> RemoteRef<M> {
    pub(crate) fn new(target: ActorPath, shared: Arc<NodeShared>) -> Self {
        let local = target.node == shared.id.name;
        Self {
            target: Arc::new(target),
            shared,
            from_actor: None,
            pinned: Arc::new(OnceLock::new()),
            cache: Arc::new(ArcSwapOption::empty()),
            prefix: Arc::new(OnceLock::new()),
            meters: Arc::default(),
            local,
            control: false,
            _m: PhantomData,
        }
    }

    /// Name the sending actor in outgoing envelopes (shown in traces).
    pub fn from_actor(mut self, name: impl Into<String>) -> Self {
        self.from_actor = Some(name.into());
        self.prefix = Arc::new(OnceLock::new());
        self
    }

    /// Send this handle's remote tells as *control* traffic: on a transport
    /// with a separate control stream (QUIC) they never queue behind large
    /// payloads. For heartbeats and probes; order relative to ordinary
    /// traffic is not kept.
    pub fn control(mut self) -> Self {
        self.control = true;
        self
    }

    /// The target's path.
    pub fn path(&self) -> &ActorPath {
        &self.target
    }

    /// True when the target lives on this node.
    pub fn is_local(&self) -> bool {
        self.local
    }

    /// Run `f` on the live local recipient, resolving the name only when the
    /// cached one is gone (first use, or the actor was restarted).
    fn with_local<T>(&self, f: impl FnOnce(&dyn LocalSend<M>) -> T) -> Result<T, RemoteError> {
        if let Some(r) = self.pinned.get() {
            if r.connected() {
                return Ok(f(r.as_ref()));
            }
        }
        if let Some(r) = self.cache.load().as_deref() {
            if r.connected() {
                return Ok(f(r.as_ref()));
            }
        }
        let r = self.resolve_local()?;
        let out = f(r.as_ref());
        self.remember(r);
        Ok(out)
    }

    /// Keep a freshly resolved recipient: pinned the first time, cached after.
    fn remember(&self, r: Arc<dyn LocalSend<M>>) {
        if let Err(r) = self.pinned.set(r) {
            self.cache.store(Some(Arc::new(r)));
        }
    }

    fn resolve_local(&self) -> Result<Arc<dyn LocalSend<M>>, RemoteError> {
        let entry = self
            .shared
            .registry
            .get(&self.target.actor)
            .ok_or_else(|| RemoteError::UnknownActor(self.target.actor.clone()))?;
        let h = entry
            .handlers
            .get(M::NAME)
            .and_then(|h| h.local().downcast_ref::<Arc<dyn LocalSend<M>>>())
            .ok_or_else(|| RemoteError::UnknownMessage(M::NAME.to_string()))?;
        Ok(h.clone())
    }

    /// Send `msg` without waiting for an answer. See the module docs.
    pub fn tell(&self, msg: M) -> Result<(), TellError> {
        if self.is_local() {
            // One atomic load and one dynamic call on the fast path; a dead
            // recipient hands the message back and the name is resolved
            // again (the actor was restarted).
            let me = &self.shared.id;
            let msg = match self.pinned.get() {
                Some(r) => match r.tell(msg, me) {
                    Ok(()) => return Ok(()),
                    Err(msg) => msg,
                },
                None => msg,
            };
            let msg = match self.cache.load().as_deref() {
                Some(r) => match r.tell(msg, me) {
                    Ok(()) => return Ok(()),
                    Err(msg) => msg,
                },
                None => msg,
            };
            let r = self.resolve_local()?;
            let sent = r.tell(msg, me);
            self.remember(r);
            return sent.map_err(|_| TellError::Local(RemoteError::ActorStopped));
        }
        self.check_reachable()?;
        let len = self.send_remote(&msg)??;
        self.count_tell(len);
        Ok(())
    }

    /// [`tell`](Self::tell), except that a remote message that finds the
    /// transport's queue to its node full (`QueueFull`) is handed back
    /// with the error instead of being dropped, for a caller that keeps it
    /// and sends it later with [`tell_wait`](Self::tell_wait), in order
    /// behind it (the protocol driver's back-pressure).
    pub fn tell_or_return(&self, msg: M) -> Result<(), (TellError, Option<M>)> {
        if self.is_local() {
            return self.tell(msg).map_err(|e| (e, None));
        }
        self.check_reachable().map_err(|e| (e, None))?;
        match self.send_remote(&msg) {
            Ok(Ok(len)) => {
                self.count_tell(len);
                Ok(())
            }
            Ok(Err(e @ TransportError::QueueFull { .. })) => Err((e.into(), Some(msg))),
            Ok(Err(e)) => Err((e.into(), None)),
            Err(e) => Err((e, None)),
        }
    }

    /// Encode `msg` for its remote target and hand the frame to the
    /// transport: the frame's length, or why the transport refused it
    /// (the outer error: it did not encode).
    fn send_remote(&self, msg: &M) -> Result<Result<usize, TransportError>, TellError> {
        // Encoded into this thread's reused buffer and copied into the
        // transport's queue: no allocation per message on this path.
        let (to, transport) = (&self.target.node, &self.shared.transport);
        let send = |frame: &[u8]| {
            if self.control {
                transport.send_control_slice(to, frame)
            } else {
                transport.send_slice(to, frame)
            }
        };
        codec::with_scratch(|buf| {
            let seq = self.encode_tell_into(buf, msg)?;
            let sent = send(buf);
            let hint = Some(&self.meters.trace_slot);
            self.shared
                .trace_send(to, seq, buf.len(), "tell", M::NAME, None, &sent, hint);
            Ok::<_, TellError>(sent.map(|()| buf.len()))
        })
    }

    /// Count a remote tell of `bytes` bytes handed to the transport.
    #[inline]
    fn count_tell(&self, bytes: usize) {
        let traffic = self.meters.tell.get_or_init(|| {
            self.shared.metrics.traffic(
                Direction::Sent,
                &self.target.node,
                M::NAME,
                MessageKind::Tell,
            )
        });
        if let Some(t) = traffic {
            t.record(bytes);
        }
    }

    /// The meters of this handle's remote asks (`None`: not counted).
    fn ask_meters(&self) -> Option<&Arc<AskMeters>> {
        self.meters
            .ask
            .get_or_init(|| self.shared.metrics.ask_meters(&self.target.node, M::NAME))
            .as_ref()
    }

    /// Like [`tell`](Self::tell), but when the transport's queue to the
    /// target's node is full, wait for room instead of failing with
    /// `QueueFull`: back-pressure for a sender that produces faster than the
    /// network drains. It waits as long as the peer is unreachable, so bound
    /// it with a timeout where that matters. Local targets and control
    /// handles behave exactly like `tell`.
    pub async fn tell_wait(&self, msg: M) -> Result<(), TellError> {
        if self.is_local() || self.control {
            return self.tell(msg);
        }
        self.check_reachable()?;
        let mut frame = Vec::new();
        let seq = self.encode_tell_into(&mut frame, &msg)?;
        let len = frame.len();
        let sent = self
            .shared
            .transport
            .send_wait(&self.target.node, Bytes::from(frame))
            .await;
        let hint = Some(&self.meters.trace_slot);
        self.shared.trace_send(
            &self.target.node,
            seq,
            len,
            "tell",
            M::NAME,
            None,
            &sent,
            hint,
        );
        sent?;
        self.count_tell(len);
        Ok(())
    }

    /// A remote tell to a node the membership view says is `Down` or `Left`
    /// is not sent: counted, and refused with
    /// [`TransportError::PeerDown`]. Control traffic (failure detectors)
    /// is always sent, so a node that comes back is noticed.
    fn check_reachable(&self) -> Result<(), TellError> {
        if self.control {
            return Ok(());
        }
        match self.shared.unreachable(&self.target.node) {
            None => Ok(()),
            Some(e) => {
                self.shared
                    .stats
                    .dropped_tells
                    .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                if self.shared.tracing() {
                    // Never sent: a drop with a fresh stamp and no send.
                    let seq = self.shared.stamp().and_then(|s| s.lamport).unwrap_or(0);
                    let reason = e.to_string();
                    self.shared.record_frame(crate::trace::FrameEvent::Drop {
                        from: &self.shared.id.name,
                        to: Some(&self.target.node),
                        seq,
                        reason: &reason,
                    });
                }
                Err(TellError::Transport(e))
            }
        }
    }

    /// The frame for a remote tell of `msg`: this handle's cached envelope
    /// header, the payload encoded in place, and a fresh Lamport stamp.
    /// Returns the frame's Lamport stamp (its `seq` in traces).
    fn encode_tell_into(&self, buf: &mut Vec<u8>, msg: &M) -> Result<u64, TellError> {
        let prefix = match self.prefix.get() {
            Some(p) => p,
            None => {
                let p = codec::tell_prefix(
                    &self.shared.id,
                    self.from_actor.as_deref(),
                    &self.target,
                    M::NAME,
                )?;
                self.prefix.get_or_init(|| p)
            }
        };
        let stamp = self.shared.stamp();
        codec::encode_tell(
            buf,
            prefix,
            msg,
            stamp.as_ref(),
            self.shared.options.max_frame_bytes,
        )?;
        Ok(stamp.and_then(|s| s.lamport).unwrap_or(0))
    }

    /// Like [`tell`](Self::tell) for a local target, but refuses with
    /// [`TellError::MailboxFull`] instead of queueing past the mailbox
    /// capacity. For a remote target it is the same as `tell`.
    pub fn try_tell(&self, msg: M) -> Result<(), TellError> {
        if self.is_local() {
            let me = &self.shared.id;
            return match self.with_local(|r| r.try_send(msg, me))? {
                Ok(()) => Ok(()),
                Err(actix::prelude::SendError::Full(_)) => Err(TellError::MailboxFull),
                Err(actix::prelude::SendError::Closed(_)) => {
                    Err(TellError::Local(RemoteError::ActorStopped))
                }
            };
        }
        self.tell(msg)
    }

    /// Ask `msg` and await the reply. Configure with
    /// [`Ask::timeout`] and [`Ask::retry`], then `.await` it.
    pub fn ask(&self, msg: M) -> Ask<M> {
        Ask {
            target: self.clone(),
            msg,
            timeout: self.shared.options.ask_timeout,
            retry: self.shared.options.retry,
        }
    }
}

/// A pending ask; `.await` it.
pub struct Ask<M: RemoteMessage> {
    target: RemoteRef<M>,
    msg: M,
    timeout: Duration,
    retry: RetryPolicy,
}

impl<M: RemoteMessage> Ask<M> {
    /// The deadline for the reply (default: `runtime.ask_timeout_ms`).
    pub fn timeout(mut self, d: Duration) -> Self {
        self.timeout = d;
        self
    }
    /// How to re-send while waiting (default: `runtime.retry`).
    pub fn retry(mut self, policy: RetryPolicy) -> Self {
        self.retry = policy;
        self
    }

    async fn run(self) -> Result<M::Reply, AskError> {
        let Ask {
            target,
            msg,
            timeout,
            retry,
        } = self;
        if target.is_local() {
            let me = target.shared.id.clone();
            let fut = target.with_local(|r| r.send(msg, &me))?;
            return match tokio::time::timeout(timeout, fut).await {
                Ok(Ok(reply)) => Ok(reply),
                Ok(Err(_)) => Err(AskError::Remote(RemoteError::ActorStopped)),
                Err(_) => Err(AskError::Timeout(timeout)),
            };
        }
        let meters = target.ask_meters();
        let started = meters.map(|_| tokio::time::Instant::now());
        let result = Self::remote(&target, msg, timeout, retry, meters).await;
        if let Some(m) = meters {
            if let Err(e) = &result {
                m.failed(crate::metrics::failure_reason(&e.error));
            }
            if let (Some(t), Ok(_) | Err(Failed { answered: true, .. })) = (started, &result) {
                m.answered(t.elapsed());
            }
        }
        result.map_err(|f| f.error)
    }

    /// A remote ask: its reply, or its error and whether an answer arrived.
    async fn remote(
        target: &RemoteRef<M>,
        msg: M,
        timeout: Duration,
        retry: RetryPolicy,
        meters: Option<&Arc<AskMeters>>,
    ) -> Result<M::Reply, Failed> {
        // A node known to be Down or Left cannot answer: say so now rather
        // than after the deadline.
        if let Some(e) = target.shared.unreachable(&target.target.node) {
            return Err(AskError::Unreachable(e).into());
        }
        // Register (with the re-send and deadline timers, which the node's
        // RPC stub carries out), then send the first copy from here.
        let shared = &target.shared;
        let to_node = &target.target.node;
        let (tx, rx) = tokio::sync::oneshot::channel();
        // The payload is encoded into this thread's reused buffer and
        // copied once, into the frame.
        let (id, seq, frame) = codec::with_encoded_payload(&msg, |payload| {
            let req = Request {
                to: target.target.clone(),
                timeout,
                retry,
                meters: meters.cloned(),
            };
            let Begun {
                id,
                done_below,
                registered,
            } = shared.asks.begin(req, tx);
            match registered {
                Registered::Ok => {}
                // The stub was idle: wake it (not for every ask, only then).
                Registered::WakeStub => shared.rpc.do_send(Wake),
                Registered::Closed => return Err(AskError::NodeStopped),
            }
            let stamp = shared.stamp();
            let seq = stamp.as_ref().and_then(|s| s.lamport).unwrap_or(0);
            let env = EnvelopeRef {
                from: &shared.id,
                from_actor: target.from_actor.as_deref(),
                to: &target.target,
                kind: &Kind::Ask { id, done_below },
                type_tag: M::NAME,
                payload,
                stamp: stamp.as_ref(),
            };
            match codec::encode_ref(&env, shared.options.max_frame_bytes) {
                Ok(frame) => Ok((id, seq, Bytes::from(frame))),
                Err(e) => {
                    shared.asks.fail(id, AskError::Codec(e.clone()));
                    Err(e.into())
                }
            }
        })
        .map_err(AskError::from)??;
        // Not armed: the ask ended already (the node stopped, or the
        // deadline passed), and the reply channel says how.
        if shared.asks.arm(id, frame.clone()) {
            let len = frame.len();
            let sent = shared.transport.send(to_node, frame);
            shared.trace_send(to_node, seq, len, "ask", M::NAME, None, &sent, None);
            match sent {
                Ok(()) => {
                    if let Some(m) = meters {
                        m.sent.record(len);
                    }
                }
                // A full queue is like a lost request: the re-sends cover it.
                Err(TransportError::QueueFull { .. }) => {}
                Err(e) => {
                    shared.asks.fail(id, AskError::Unreachable(e.clone()));
                    return Err(AskError::Unreachable(e).into());
                }
            }
        }
        let answer = rx.await.map_err(|_| AskError::NodeStopped)?;
        // From here on an answer arrived (an error answer included).
        let answered = |error: AskError| Failed {
            error,
            answered: true,
        };
        let bytes = match answer {
            Ok(bytes) => bytes,
            Err(e @ AskError::Remote(_)) => return Err(answered(e)),
            Err(e) => return Err(e.into()),
        };
        decode_payload(&bytes).map_err(|e| answered(e.into()))
    }
}

/// Why a remote ask failed, and whether an answer had arrived (for the
/// ask-duration histogram).
struct Failed {
    error: AskError,
    answered: bool,
}

impl From<AskError> for Failed {
    fn from(error: AskError) -> Self {
        Failed {
            error,
            answered: false,
        }
    }
}

/// A handle's counters, made on first use (see [`crate::metrics`]).
#[derive(Default)]
struct RefMeters {
    tell: OnceLock<Option<Traffic>>,
    ask: OnceLock<Option<Arc<AskMeters>>>,
    /// Where the node's trace keeps the strings of this handle's tells.
    trace_slot: crate::trace::SlotHint,
}

impl<M: RemoteMessage> IntoFuture for Ask<M> {
    type Output = Result<M::Reply, AskError>;
    type IntoFuture = Pin<Box<dyn Future<Output = Self::Output> + Send>>;
    fn into_future(self) -> Self::IntoFuture {
        Box::pin(self.run())
    }
}

/// A handle to the actor at a path that tells and asks it any message type
/// it accepts (`node.actor("node-b/ledger")`): one handle per actor instead of
/// one [`RemoteRef`] per message type. Each message type gets its typed
/// handle on first use, kept for the next ones, so every call behaves
/// exactly as [`RemoteRef`]'s (ordering, back-pressure, retries,
/// deduplication, restarts of the target). Cheap to clone.
#[derive(Clone)]
pub struct ActorHandle {
    target: ActorPath,
    shared: Arc<NodeShared>,
    typed: Arc<std::sync::Mutex<TypedRefs>>,
}

type TypedRefs = std::collections::HashMap<std::any::TypeId, Box<dyn std::any::Any + Send + Sync>>;

impl std::fmt::Debug for ActorHandle {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "ActorHandle({})", self.target)
    }
}

impl ActorHandle {
    pub(crate) fn new(target: ActorPath, shared: Arc<NodeShared>) -> Self {
        Self {
            target,
            shared,
            typed: Arc::default(),
        }
    }

    /// The target's path.
    pub fn path(&self) -> &ActorPath {
        &self.target
    }

    /// The typed handle for messages of type `M` (made once, then shared).
    pub fn of<M: RemoteMessage>(&self) -> RemoteRef<M> {
        let mut typed = self.typed.lock().unwrap_or_else(|p| p.into_inner());
        typed
            .entry(std::any::TypeId::of::<M>())
            .or_insert_with(|| {
                Box::new(RemoteRef::<M>::new(
                    self.target.clone(),
                    self.shared.clone(),
                ))
            })
            .downcast_ref::<RemoteRef<M>>()
            .cloned()
            .unwrap_or_else(|| RemoteRef::new(self.target.clone(), self.shared.clone()))
    }

    /// [`RemoteRef::tell`] of `msg`.
    pub fn tell<M: RemoteMessage>(&self, msg: M) -> Result<(), TellError> {
        self.of::<M>().tell(msg)
    }

    /// [`RemoteRef::tell_wait`] of `msg`.
    pub async fn tell_wait<M: RemoteMessage>(&self, msg: M) -> Result<(), TellError> {
        self.of::<M>().tell_wait(msg).await
    }

    /// [`RemoteRef::ask`] of `msg`.
    pub fn ask<M: RemoteMessage>(&self, msg: M) -> Ask<M> {
        self.of::<M>().ask(msg)
    }
}
