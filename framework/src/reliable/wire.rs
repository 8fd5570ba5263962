//! The reliable channel's wire messages (ordinary remote messages between
//! the producer's and the consumer's endpoint actors).
//!
//! Names are the wire contract (`troupe.reliable.*`); the application
//! message travels inside [`Data`] as its msgpack payload, exactly the bytes
//! a plain tell of it would carry.

use bytes::Bytes;
use serde::{Deserialize, Deserializer, Serialize, Serializer};

/// Producer -> consumer (an ask): open, or re-open, a session. Answered
/// with the consumer's current [`Grant`] for it, or a refusal in words.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Open {
    /// The producer's session id (one per producer incarnation).
    pub producer: u64,
    /// The wire name of the application message the producer sends.
    pub message: String,
}
crate::remote_message!(Open, "troupe.reliable.open", Result<Grant, String>);

/// What a consumer grants a producer: every sequence number up to `acked`
/// is confirmed (handled by the consumer actor); the producer may send up
/// to `limit`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct Grant {
    /// The consumer's incarnation (a fresh id per receiver instance).
    pub consumer: u64,
    /// Cumulative acknowledgement.
    pub acked: u64,
    /// The highest sequence number the producer may send (flow control).
    pub limit: u64,
}

/// Producer -> consumer (a tell): consecutive messages `first`,
/// `first + 1`, ... of one session. `base` is the producer's oldest
/// unacknowledged sequence number: everything below it was confirmed.
/// A frame with no items is a probe (asks for a fresh [`Ack`]).
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Data {
    /// The producer's session id.
    pub producer: u64,
    /// Every sequence number below `base` is acknowledged.
    pub base: u64,
    /// The sequence number of the first item.
    pub first: u64,
    /// The messages, each its msgpack payload.
    pub items: Vec<Payload>,
}
crate::remote_message!(Data, "troupe.reliable.data", ());

/// Consumer -> producer (a tell): the cumulative acknowledgement and grant
/// of one session.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct Ack {
    /// The producer's session id this acknowledges.
    pub producer: u64,
    /// The acknowledgement and grant.
    pub grant: Grant,
}
crate::remote_message!(Ack, "troupe.reliable.ack", ());

/// Producer -> consumer (a tell, best effort): the session is over; the
/// consumer forgets it.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Close {
    /// The producer's session id.
    pub producer: u64,
}
crate::remote_message!(Close, "troupe.reliable.close", ());

/// One encoded application message: msgpack `bin` on the wire, shared
/// (not copied) between the producer's resend buffer and its frames.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Payload(pub Bytes);

impl Serialize for Payload {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_bytes(&self.0)
    }
}

impl<'de> Deserialize<'de> for Payload {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let b = serde_bytes::ByteBuf::deserialize(d)?;
        Ok(Payload(Bytes::from(b.into_vec())))
    }
}
