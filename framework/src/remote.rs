//! Remote-capable messages and the type-erased handlers behind named actors.
//!
//! A message type becomes remote-capable by deriving serde and declaring a
//! stable name and reply type with [`remote_message!`](crate::remote_message):
//!
//! ```
//! use serde::{Deserialize, Serialize};
//! #[derive(Debug, Serialize, Deserialize)]
//! pub struct Deposit { pub account: String, pub cents: i64 }
//! troupe_framework::remote_message!(Deposit, "bank.deposit", Result<i64, String>);
//! ```
//!
//! The macro implements both actix's `Message` (so the actor handles it with
//! an ordinary `impl Handler<Deposit>`) and [`RemoteMessage`] (so the node can
//! decode it from the wire by its name). An actor then lists, when it is
//! spawned, which remote messages it accepts
//! ([`ActorSpec::handles`](crate::supervision::ActorSpec::handles)); nothing is
//! registered by link-time magic.
//!
//! The name is the wire contract: keep it stable across versions, and change
//! it when the message's shape changes incompatibly.

use std::any::Any;
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;

use actix::dev::{MessageResponse, ToEnvelope};
use actix::{Actor, Addr, Context, Handler};
use serde::de::DeserializeOwned;
use serde::Serialize;
use tokio::sync::oneshot::error::TryRecvError;

use crate::codec::{decode_payload, with_encoded_payload, NodeIdView, RemoteError};
use crate::ids::NodeId;
use crate::inbox::{Inbox, Job, Refused};
use crate::reply::ReplyTo;

/// A message that can travel between nodes.
///
/// Implement it with [`remote_message!`](crate::remote_message) rather than by hand.
pub trait RemoteMessage:
    actix::Message<Result = <Self as RemoteMessage>::Reply>
    + Serialize
    + DeserializeOwned
    + Send
    + 'static
{
    /// What the handler answers (the same as actix's `Message::Result`).
    type Reply: Serialize + DeserializeOwned + Send + 'static;
    /// The stable wire name of this message type, e.g. `"bank.deposit"`.
    const NAME: &'static str;
}

/// Declare a remote-capable message: `remote_message!(Type, "stable.name", ReplyType)`.
///
/// Implements `actix::Message<Result = ReplyType>` and
/// [`RemoteMessage`](crate::RemoteMessage) for `Type`. Both `Type` and
/// `ReplyType` must implement serde's `Serialize` and `Deserialize`.
#[macro_export]
macro_rules! remote_message {
    ($ty:ty, $name:expr, $reply:ty) => {
        impl $crate::actix::Message for $ty {
            type Result = $reply;
        }
        impl $crate::RemoteMessage for $ty {
            type Reply = $reply;
            const NAME: &'static str = $name;
        }
    };
}

/// A message together with the node that sent it.
///
/// Register a handler with
/// [`ActorSpec::handles_from`](crate::supervision::ActorSpec::handles_from)
/// and implement `Handler<Sender<M>>` when the actor needs to know who sent
/// `M`. `from` is the sender's *authenticated* node (for QUIC, the name in
/// its certificate), never a value taken from the payload; for a local send
/// it is this node.
#[derive(Debug, Clone)]
pub struct Sender<M> {
    /// The sending node.
    pub from: NodeId,
    /// The message.
    pub msg: M,
}

impl<M: RemoteMessage> actix::Message for Sender<M> {
    type Result = M::Reply;
}

/// How a decoded `M` becomes the actix message the actor handles.
pub(crate) trait Wrap<M: RemoteMessage>:
    actix::Message<Result = M::Reply> + Send + 'static
{
    fn wrap(msg: M, from: &NodeIdView<'_>) -> Self;
}

impl<M: RemoteMessage> Wrap<M> for M {
    fn wrap(msg: M, _from: &NodeIdView<'_>) -> Self {
        msg
    }
}

impl<M: RemoteMessage> Wrap<M> for Sender<M> {
    fn wrap(msg: M, from: &NodeIdView<'_>) -> Self {
        Sender {
            from: from.to_node_id(),
            msg,
        }
    }
}

thread_local! {
    /// The cause a [`with_cause`] on this thread holds (on its stack)
    /// while its closure runs; null otherwise.
    static CAUSE: std::cell::Cell<*const (Arc<str>, u64)> =
        const { std::cell::Cell::new(std::ptr::null()) };
}

/// The frame being handled on this thread, as `(sender, seq)`, while
/// frames are traced: set while an actor's handler runs for a remote
/// message (its synchronous part: a handler's future runs later, without
/// it), and by a protocol driver while it sends what an input from a remote
/// message produced. Every frame sent meanwhile is traced with this
/// `cause` (see [`crate::trace::FrameEvent::Send`]), so a message can be
/// followed to the messages it caused. `None` otherwise.
pub fn current_cause() -> Option<(Arc<str>, u64)> {
    let p = CAUSE.with(std::cell::Cell::get);
    // SAFETY: `CAUSE` is non-null only while the `with_cause` that set it
    // runs its closure, on this thread; this call is inside that closure,
    // so the cause it points at (on that call's stack) is alive.
    unsafe { p.as_ref() }.cloned()
}

/// `f` of the [`current_cause`], borrowed (no reference count touched).
pub fn with_current_cause<R>(f: impl FnOnce(Option<(&str, u64)>) -> R) -> R {
    let p = CAUSE.with(std::cell::Cell::get);
    // SAFETY: as in `current_cause`: the cause outlives this call.
    let cause = unsafe { p.as_ref() };
    f(cause.map(|(n, s)| (&**n, *s)))
}

/// Run `f` with `cause` as the [`current_cause`] (`None`: none), restoring
/// the previous one after (also when `f` panics).
pub fn with_cause<R>(cause: Option<(Arc<str>, u64)>, f: impl FnOnce() -> R) -> R {
    let before = CAUSE.with(std::cell::Cell::get);
    if cause.is_none() && before.is_null() {
        return f();
    }
    // Puts `before` back when dropped. Locals drop in reverse order, so
    // `_restore` (declared after `held`) resets the pointer before the
    // cause it points at goes.
    struct Restore(*const (Arc<str>, u64));
    impl Drop for Restore {
        fn drop(&mut self) {
            CAUSE.with(|c| c.set(self.0));
        }
    }
    let held = cause;
    let _restore = Restore(before);
    CAUSE.with(|c| c.set(held.as_ref().map_or(std::ptr::null(), |c| c as *const _)));
    f()
}

/// A future that the node's dispatcher drives to completion (single-threaded):
/// a message waiting for room in an actor's inbox.
pub(crate) type LocalFut<T> = Pin<Box<dyn Future<Output = T>>>;

/// Outcome of handing a decoded message to a local actor.
pub(crate) enum Dispatched {
    /// The message is in the actor's inbox (an ask with its [`ReplyTo`],
    /// which answers it).
    Queued,
    /// The actor's inbox is full: this future puts the message in when
    /// there is room. Nothing else may be handed to this actor before then,
    /// or order would break.
    Full(LocalFut<()>),
}

/// A message that could not be handed over, and the ask's [`ReplyTo`] when
/// it was an ask that is still to be answered.
pub(crate) struct Undelivered {
    pub(crate) error: RemoteError,
    pub(crate) reply: Option<ReplyTo>,
}

/// A handler for one message type on one actor, with the types erased so the
/// node can dispatch by wire name.
pub(crate) trait ErasedHandler: Send + Sync {
    /// Decode `payload` and put it in the actor's inbox: a tell when `reply`
    /// is `None`, an ask answered through `reply` otherwise.
    /// `cause` is the frame's `(sender, seq)` while frames are traced: set
    /// as the [`current_cause`] while the actor handles the message.
    fn dispatch(
        &self,
        payload: &[u8],
        from: &NodeIdView<'_>,
        reply: Option<ReplyTo>,
        cause: Option<(Arc<str>, u64)>,
    ) -> Result<Dispatched, Undelivered>;
    /// Like a tell through [`dispatch`](Self::dispatch), and once the
    /// handler has returned, call `then.0(then.1)`: how a reliable channel
    /// learns what its consumer handled (see [`crate::reliable`]).
    fn dispatch_then(
        &self,
        payload: &[u8],
        from: &NodeIdView<'_>,
        then: AfterHandled,
    ) -> Result<Dispatched, Undelivered>;
    /// The typed local sender, as an `Arc<dyn LocalSend<M>>` behind `Any`.
    fn local(&self) -> &(dyn Any + Send + Sync);
}

/// Called with the number after a delivered message's handler returned.
pub(crate) type AfterHandled = (Arc<dyn Fn(u64) + Send + Sync>, u64);

/// Typed delivery to a local actor, used by [`crate::RemoteRef`] without
/// serialization.
pub(crate) trait LocalSend<M: RemoteMessage>: Send + Sync {
    /// Queue `msg` like actix's `do_send` (past the mailbox capacity if need
    /// be); gives the message back if the actor is gone.
    fn tell(&self, msg: M, from: &NodeId) -> Result<(), M>;
    fn try_send(&self, msg: M, from: &NodeId) -> Result<(), actix::prelude::SendError<()>>;
    fn send(
        &self,
        msg: M,
        from: &NodeId,
    ) -> Pin<Box<dyn Future<Output = Result<M::Reply, actix::MailboxError>> + Send>>;
    fn connected(&self) -> bool;
}

/// The erased handler for message `M` on an actor `A`, delivered to it as
/// `W` (`M` itself, or [`Sender<M>`]): from the network through the actor's
/// [`Inbox`], locally through its `Addr`.
pub(crate) struct TypedHandler<A: Actor, M: RemoteMessage, W: Wrap<M>> {
    inbox: Arc<Inbox<A>>,
    local: Arc<dyn LocalSend<M>>,
    _w: std::marker::PhantomData<fn(W)>,
}

/// Local delivery through the actor's typed `Addr<A>`: every send is
/// statically dispatched, as fast as a plain actix `Addr`.
struct LocalAddr<A: Actor, M, W> {
    addr: Addr<A>,
    _m: std::marker::PhantomData<fn(M, W)>,
}

impl<A, M, W> LocalSend<M> for LocalAddr<A, M, W>
where
    M: RemoteMessage,
    W: Wrap<M>,
    A: Actor + Handler<W>,
    A::Context: ToEnvelope<A, W>,
{
    fn tell(&self, msg: M, from: &NodeId) -> Result<(), M> {
        // Like `do_send`: queue past the mailbox capacity rather than refuse.
        // A stopped actor gets the message back so the caller can resolve the
        // name again (a restarted instance has a new address).
        if !self.addr.connected() {
            return Err(msg);
        }
        self.addr.do_send(W::wrap(msg, &from.into()));
        Ok(())
    }
    fn try_send(&self, msg: M, from: &NodeId) -> Result<(), actix::prelude::SendError<()>> {
        self.addr
            .try_send(W::wrap(msg, &from.into()))
            .map_err(|e| match e {
                actix::prelude::SendError::Full(_) => actix::prelude::SendError::Full(()),
                actix::prelude::SendError::Closed(_) => actix::prelude::SendError::Closed(()),
            })
    }
    fn send(
        &self,
        msg: M,
        from: &NodeId,
    ) -> Pin<Box<dyn Future<Output = Result<M::Reply, actix::MailboxError>> + Send>> {
        Box::pin(self.addr.send(W::wrap(msg, &from.into())))
    }
    fn connected(&self) -> bool {
        self.addr.connected()
    }
}

impl<A, M, W> TypedHandler<A, M, W>
where
    A: Actor<Context = Context<A>> + Handler<W>,
    M: RemoteMessage,
    W: Wrap<M>,
{
    pub(crate) fn for_actor(addr: &Addr<A>, inbox: &Arc<Inbox<A>>) -> Self {
        Self {
            local: Arc::new(LocalAddr::<A, M, W> {
                addr: addr.clone(),
                _m: std::marker::PhantomData,
            }),
            inbox: inbox.clone(),
            _w: std::marker::PhantomData,
        }
    }
}

/// Encode `answer` (in the thread's reused buffer) and send it.
fn answer_with<R: Serialize>(reply: ReplyTo, answer: &R) {
    let mut reply = Some(reply);
    let encoded = with_encoded_payload(answer, |payload| {
        if let Some(r) = reply.take() {
            r.answer(payload);
        }
    });
    if let (Err(e), Some(r)) = (encoded, reply) {
        r.fail(RemoteError::BadPayload(format!(
            "reply did not encode: {e}"
        )));
    }
}

impl<A, M, W> ErasedHandler for TypedHandler<A, M, W>
where
    A: Actor<Context = Context<A>> + Handler<W>,
    M: RemoteMessage,
    W: Wrap<M>,
{
    fn dispatch(
        &self,
        payload: &[u8],
        from: &NodeIdView<'_>,
        reply: Option<ReplyTo>,
        cause: Option<(Arc<str>, u64)>,
    ) -> Result<Dispatched, Undelivered> {
        let msg: M = match decode_payload(payload) {
            Ok(m) => m,
            Err(e) => {
                let error = RemoteError::BadPayload(e.to_string());
                return Err(Undelivered { error, reply });
            }
        };
        let msg = W::wrap(msg, from);
        let job: Job<A> = match reply {
            // Run as actix runs a `do_send`: the result is handled, with no
            // one to answer.
            None => Box::new(move |act: &mut A, ctx: &mut Context<A>| {
                with_cause(cause, || {
                    MessageResponse::<A, W>::handle(act.handle(msg, ctx), ctx, None);
                });
            }),
            // Run as actix runs a `send`, and answer right here when the
            // handler's answer is ready at once (no hop back through the
            // dispatcher); else when its future finishes.
            Some(reply) => Box::new(move |act: &mut A, ctx: &mut Context<A>| {
                let (tx, mut rx) = tokio::sync::oneshot::channel::<M::Reply>();
                with_cause(cause, || {
                    MessageResponse::<A, W>::handle(act.handle(msg, ctx), ctx, Some(tx));
                });
                match rx.try_recv() {
                    Ok(answer) => answer_with(reply, &answer),
                    // A dropped sender (the handler's future cannot finish)
                    // drops `reply`, which answers `ActorStopped`.
                    Err(TryRecvError::Closed) => {}
                    Err(TryRecvError::Empty) => {
                        actix_rt::spawn(async move {
                            if let Ok(answer) = rx.await {
                                answer_with(reply, &answer);
                            }
                        });
                    }
                }
            }),
        };
        self.push(job)
    }
    fn dispatch_then(
        &self,
        payload: &[u8],
        from: &NodeIdView<'_>,
        then: AfterHandled,
    ) -> Result<Dispatched, Undelivered> {
        let msg: M = match decode_payload(payload) {
            Ok(m) => m,
            Err(e) => {
                let error = RemoteError::BadPayload(e.to_string());
                return Err(Undelivered { error, reply: None });
            }
        };
        let msg = W::wrap(msg, from);
        self.push(Box::new(move |act: &mut A, ctx: &mut Context<A>| {
            MessageResponse::<A, W>::handle(act.handle(msg, ctx), ctx, None);
            (then.0)(then.1);
        }))
    }
    fn local(&self) -> &(dyn Any + Send + Sync) {
        &self.local
    }
}

impl<A, M, W> TypedHandler<A, M, W>
where
    A: Actor<Context = Context<A>> + Handler<W>,
    M: RemoteMessage,
    W: Wrap<M>,
{
    /// Put `job` in the actor's inbox, or say how to when it is full.
    fn push(&self, job: Job<A>) -> Result<Dispatched, Undelivered> {
        match self.inbox.try_push(job) {
            Ok(()) => Ok(Dispatched::Queued),
            // The job (and an ask's `ReplyTo` in it, which answers
            // `ActorStopped`) is dropped.
            Err(Refused::Closed) => Err(Undelivered {
                error: RemoteError::ActorStopped,
                reply: None,
            }),
            Err(Refused::Full(job)) => {
                // Inbox full: the dispatcher waits for room (in its bounded
                // in-flight set) before this actor gets more.
                let room = self.inbox.push_when_room(job);
                Ok(Dispatched::Full(Box::pin(async move {
                    room.await;
                })))
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn now() -> Option<(String, u64)> {
        with_current_cause(|c| c.map(|(n, s)| (n.to_string(), s)))
    }

    #[test]
    fn causes_nest_and_are_restored_even_after_a_panic() {
        assert_eq!(now(), None);
        with_cause(Some((Arc::from("a"), 1)), || {
            assert_eq!(now(), Some(("a".into(), 1)));
            with_cause(None, || assert_eq!(now(), None));
            with_cause(Some((Arc::from("b"), 2)), || {
                assert_eq!(now(), Some(("b".into(), 2)));
                assert_eq!(current_cause().map(|(n, s)| (n.to_string(), s)), now());
            });
            let hit = std::panic::catch_unwind(|| {
                with_cause(Some((Arc::from("c"), 3)), || panic!("handler panics"))
            });
            assert!(hit.is_err());
            assert_eq!(now(), Some(("a".into(), 1)));
        });
        assert_eq!(now(), None);
        assert_eq!(current_cause(), None);
    }
}
