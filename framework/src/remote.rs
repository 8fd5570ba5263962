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

use actix::dev::ToEnvelope;
use actix::{Actor, Addr, Handler, Recipient};
use serde::de::DeserializeOwned;
use serde::Serialize;

use crate::codec::{decode_payload, encode_payload, RemoteError};

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

/// A future that the node's dispatcher drives to completion (single-threaded).
pub(crate) type LocalFut<T> = Pin<Box<dyn Future<Output = T>>>;

/// Outcome of handing a decoded message to a local actor.
pub(crate) enum Dispatched {
    /// Queued in the actor's mailbox; nothing to wait for.
    Queued,
    /// The mailbox is full or a reply is awaited: drive this future. It
    /// yields the encoded reply (for asks) when the actor has answered.
    Pending(LocalFut<Result<Vec<u8>, RemoteError>>),
}

/// A handler for one message type on one actor, with the types erased so the
/// node can dispatch by wire name.
pub(crate) trait ErasedHandler: Send + Sync {
    /// Decode `payload` and deliver it. For a tell (`want_reply == false`)
    /// this returns `Queued` when the mailbox has room.
    fn dispatch(&self, payload: &[u8], want_reply: bool) -> Result<Dispatched, RemoteError>;
    /// For typed local lookups.
    fn as_any(&self) -> &dyn Any;
}

/// The erased handler for message `M` on some actor.
pub(crate) struct TypedHandler<M: RemoteMessage> {
    pub(crate) recipient: Recipient<M>,
}

impl<M: RemoteMessage> TypedHandler<M> {
    pub(crate) fn for_actor<A>(addr: &Addr<A>) -> Self
    where
        A: Actor + Handler<M>,
        A::Context: ToEnvelope<A, M>,
    {
        Self {
            recipient: addr.clone().recipient(),
        }
    }
}

impl<M: RemoteMessage> ErasedHandler for TypedHandler<M> {
    fn dispatch(&self, payload: &[u8], want_reply: bool) -> Result<Dispatched, RemoteError> {
        let msg: M = decode_payload(payload).map_err(|e| RemoteError::BadPayload(e.to_string()))?;
        if !want_reply {
            match self.recipient.try_send(msg) {
                Ok(()) => return Ok(Dispatched::Queued),
                Err(actix::prelude::SendError::Closed(_)) => return Err(RemoteError::ActorStopped),
                Err(actix::prelude::SendError::Full(msg)) => {
                    // Mailbox full: wait for room (and the handler) in the
                    // dispatcher's bounded in-flight set; that is the back-pressure.
                    let fut = self.recipient.send(msg);
                    return Ok(Dispatched::Pending(Box::pin(async move {
                        fut.await
                            .map(|_| Vec::new())
                            .map_err(|_| RemoteError::ActorStopped)
                    })));
                }
            }
        }
        let fut = self.recipient.send(msg);
        Ok(Dispatched::Pending(Box::pin(async move {
            let reply = fut.await.map_err(|_| RemoteError::ActorStopped)?;
            encode_payload(&reply)
                .map_err(|e| RemoteError::BadPayload(format!("reply did not encode: {e}")))
        })))
    }
    fn as_any(&self) -> &dyn Any {
        self
    }
}
