//! The wire codec: what crosses the network between two nodes.
//!
//! Every frame is one [`Envelope`], encoded as
//!
//! ```text
//! +---------+-------------------------------------------+
//! | version | msgpack (rmp-serde) encoding of Envelope   |
//! |  1 byte | (a compact array, fields in declared order)|
//! +---------+-------------------------------------------+
//! ```
//!
//! The transport adds its own length prefix; this module only sees whole
//! frames. There is exactly one codec in Troupe and it lives here. The
//! usual envelopes (tells, asks, replies, with no or a Lamport stamp) are
//! written and read by hand (`layout`), byte for byte what serde gives and
//! about twice as fast; serde does the rest and has the final word on
//! anything unusual.
//!
//! Guarantees:
//! - [`decode`] never panics on untrusted bytes: a truncated, random, wrongly
//!   versioned or oversized frame is an [`CodecError`];
//! - frames larger than the configured limit are refused on both encode and
//!   decode, so a peer cannot make this node allocate without bound;
//! - the application payload is itself msgpack, tagged with the message type's
//!   stable name ([`crate::RemoteMessage::NAME`]), so a node can reject a
//!   message it has no handler for without decoding it.

use serde::{Deserialize, Serialize};

use crate::ids::{ActorPath, NodeId};

mod layout;

/// The wire-format version this build speaks (first byte of every frame).
/// Version 2 added [`Kind::Ask::done_below`].
pub const WIRE_VERSION: u8 = 2;

/// Default hard limit on a frame, in bytes (1 MiB).
pub const DEFAULT_MAX_FRAME_LEN: usize = 1 << 20;

/// What kind of envelope this is.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum Kind {
    /// Fire-and-forget.
    Tell,
    /// A request that expects a reply carrying the same correlation id.
    Ask {
        /// Correlation id, unique per sending node incarnation.
        id: u64,
        /// Every ask of the sending node incarnation with a smaller id is
        /// finished there (answered or given up), so it will never be sent
        /// again: the receiver forgets what it remembered for them and
        /// drops copies of them that arrive late (see [`crate::rpc`]).
        done_below: u64,
    },
    /// The successful reply to the ask `id`; the payload is the reply value.
    Reply {
        /// Correlation id of the ask.
        id: u64,
    },
    /// The ask `id` failed on the remote side.
    ErrorReply {
        /// Correlation id of the ask.
        id: u64,
        /// Why.
        error: RemoteError,
    },
}

/// Why a remote node could not answer an ask.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, thiserror::Error)]
pub enum RemoteError {
    /// No actor of that name on the target node.
    #[error("no actor named {0:?} on the target node")]
    UnknownActor(String),
    /// The actor exists but has no handler registered for this message type.
    #[error("actor has no handler for message type {0:?}")]
    UnknownMessage(String),
    /// The payload did not decode as the registered message type.
    #[error("payload did not decode: {0}")]
    BadPayload(String),
    /// The actor stopped (or was restarting) before it answered.
    #[error("the target actor stopped before answering")]
    ActorStopped,
    /// The target node refused the request because it is overloaded.
    #[error("target node is overloaded: {0}")]
    Overloaded(String),
    /// The target node refused the request as malformed: say, its envelope
    /// named another sender than the node the connection is authenticated as.
    #[error("target node refused the request: {0}")]
    Refused(String),
}

/// Optional logical-clock stamps carried with a message (used by protocols
/// and by the trace recorder to draw space-time diagrams).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct ClockStamp {
    /// A Lamport timestamp.
    pub lamport: Option<u64>,
    /// A vector clock, as `(node, counter)` pairs sorted by node.
    pub vector: Option<Vec<(String, u64)>>,
}

/// One message on the wire.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Envelope {
    /// The sending node (name + incarnation). The receiver checks the name
    /// against the transport's authenticated peer name.
    pub from: NodeId,
    /// The sending actor's name, when the sender is a named actor.
    pub from_actor: Option<String>,
    /// The target actor.
    pub to: ActorPath,
    /// Tell, ask, reply or error reply.
    pub kind: Kind,
    /// Stable type tag of the payload ([`crate::RemoteMessage::NAME`]);
    /// empty for error replies.
    pub type_tag: String,
    /// The msgpack-encoded message or reply.
    #[serde(with = "serde_bytes")]
    pub payload: Vec<u8>,
    /// Optional clock stamps.
    pub stamp: Option<ClockStamp>,
}

/// A borrowed [`Envelope`] for sending: encodes to exactly the same bytes
/// without cloning the names, tag and payload it points at.
#[derive(Debug, Clone, Copy, Serialize)]
pub struct EnvelopeRef<'a> {
    /// See [`Envelope::from`].
    pub from: &'a NodeId,
    /// See [`Envelope::from_actor`].
    pub from_actor: Option<&'a str>,
    /// See [`Envelope::to`].
    pub to: &'a ActorPath,
    /// See [`Envelope::kind`].
    pub kind: &'a Kind,
    /// See [`Envelope::type_tag`].
    pub type_tag: &'a str,
    /// See [`Envelope::payload`].
    #[serde(with = "serde_bytes")]
    pub payload: &'a [u8],
    /// See [`Envelope::stamp`].
    pub stamp: Option<&'a ClockStamp>,
}

/// The sender of a received envelope, borrowed from the frame.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
pub struct NodeIdView<'a> {
    /// The node's name.
    pub name: &'a str,
    /// Its incarnation.
    pub incarnation: uuid::Uuid,
}

impl NodeIdView<'_> {
    /// An owned [`NodeId`].
    pub fn to_node_id(&self) -> NodeId {
        NodeId {
            name: self.name.to_string(),
            incarnation: self.incarnation,
        }
    }
}

impl<'a> From<&'a NodeId> for NodeIdView<'a> {
    fn from(id: &'a NodeId) -> Self {
        NodeIdView {
            name: &id.name,
            incarnation: id.incarnation,
        }
    }
}

/// A target actor, borrowed from the frame.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
pub struct ActorPathView<'a> {
    /// The node's name.
    pub node: &'a str,
    /// The actor's name.
    pub actor: &'a str,
}

/// A received [`Envelope`] whose names, tag and payload point into the
/// frame: decoding it allocates nothing on the common path.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
pub struct EnvelopeView<'a> {
    /// See [`Envelope::from`].
    #[serde(borrow)]
    pub from: NodeIdView<'a>,
    /// See [`Envelope::from_actor`].
    #[serde(borrow)]
    pub from_actor: Option<&'a str>,
    /// See [`Envelope::to`].
    #[serde(borrow)]
    pub to: ActorPathView<'a>,
    /// See [`Envelope::kind`].
    pub kind: Kind,
    /// See [`Envelope::type_tag`].
    pub type_tag: &'a str,
    /// See [`Envelope::payload`].
    #[serde(with = "serde_bytes")]
    pub payload: &'a [u8],
    /// See [`Envelope::stamp`].
    pub stamp: Option<ClockStamp>,
}

impl EnvelopeView<'_> {
    /// An owned [`Envelope`] with the same contents.
    pub fn to_envelope(&self) -> Envelope {
        Envelope {
            from: self.from.to_node_id(),
            from_actor: self.from_actor.map(str::to_string),
            to: ActorPath {
                node: self.to.node.to_string(),
                actor: self.to.actor.to_string(),
            },
            kind: self.kind.clone(),
            type_tag: self.type_tag.to_string(),
            payload: self.payload.to_vec(),
            stamp: self.stamp.clone(),
        }
    }
}

/// Why a frame could not be encoded or decoded.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum CodecError {
    /// The frame is empty.
    #[error("empty frame")]
    Empty,
    /// The frame's version byte is not one this build speaks.
    #[error("unsupported wire version {found} (this node speaks {WIRE_VERSION})")]
    Version {
        /// The version byte found.
        found: u8,
    },
    /// The frame (or payload) is over the size limit.
    #[error("frame of {len} bytes exceeds the {max}-byte limit")]
    TooLarge {
        /// Its length.
        len: usize,
        /// The limit.
        max: usize,
    },
    /// msgpack decoding failed (truncated, malformed, wrong shape).
    #[error("malformed frame: {0}")]
    Malformed(String),
    /// Encoding failed (a payload type that msgpack cannot represent).
    #[error("encode failed: {0}")]
    Encode(String),
}

/// Encode `env` into a frame, refusing results over `max_len` bytes.
pub fn encode(env: &Envelope, max_len: usize) -> Result<Vec<u8>, CodecError> {
    encode_ref(
        &EnvelopeRef {
            from: &env.from,
            from_actor: env.from_actor.as_deref(),
            to: &env.to,
            kind: &env.kind,
            type_tag: &env.type_tag,
            payload: &env.payload,
            stamp: env.stamp.as_ref(),
        },
        max_len,
    )
}

/// Encode a borrowed envelope (the same bytes as [`encode`]).
pub fn encode_ref(env: &EnvelopeRef<'_>, max_len: usize) -> Result<Vec<u8>, CodecError> {
    let mut buf = Vec::with_capacity(
        64 + env.to.node.len() + env.to.actor.len() + env.type_tag.len() + env.payload.len(),
    );
    buf.push(WIRE_VERSION);
    // The usual shapes are written by hand (the same bytes), the rest by serde.
    if !layout::write(&mut buf, env) {
        rmp_serde::encode::write(&mut buf, env).map_err(|e| CodecError::Encode(e.to_string()))?;
    }
    if buf.len() > max_len {
        return Err(CodecError::TooLarge {
            len: buf.len(),
            max: max_len,
        });
    }
    Ok(buf)
}

/// Decode a frame produced by [`encode`]. Never panics; see [`CodecError`].
pub fn decode(frame: &[u8], max_len: usize) -> Result<Envelope, CodecError> {
    if frame.len() > max_len {
        return Err(CodecError::TooLarge {
            len: frame.len(),
            max: max_len,
        });
    }
    let (&version, body) = frame.split_first().ok_or(CodecError::Empty)?;
    if version != WIRE_VERSION {
        return Err(CodecError::Version { found: version });
    }
    if let Some(view) = layout::read(body) {
        return Ok(view.to_envelope());
    }
    rmp_serde::from_slice(body).map_err(|e| CodecError::Malformed(e.to_string()))
}

/// Decode a frame without copying its names and payload. Never panics.
pub fn decode_view(frame: &[u8], max_len: usize) -> Result<EnvelopeView<'_>, CodecError> {
    if frame.len() > max_len {
        return Err(CodecError::TooLarge {
            len: frame.len(),
            max: max_len,
        });
    }
    let (&version, body) = frame.split_first().ok_or(CodecError::Empty)?;
    if version != WIRE_VERSION {
        return Err(CodecError::Version { found: version });
    }
    // The usual layout is read by hand; serde has the final word otherwise.
    if let Some(view) = layout::read(body) {
        return Ok(view);
    }
    rmp_serde::from_slice(body).map_err(|e| CodecError::Malformed(e.to_string()))
}

/// Encode an application value (a message or a reply) as msgpack.
pub fn encode_payload<T: Serialize + ?Sized>(value: &T) -> Result<Vec<u8>, CodecError> {
    rmp_serde::to_vec(value).map_err(|e| CodecError::Encode(e.to_string()))
}

thread_local! {
    /// This thread's encoding buffer, see [`with_scratch`].
    static SCRATCH: std::cell::RefCell<Vec<u8>> = const { std::cell::RefCell::new(Vec::new()) };
}

/// A scratch buffer that grew past this (one huge message) is not kept.
const SCRATCH_KEEP: usize = 256 * 1024;

/// Run `f` with this thread's reused, empty encoding buffer, so encoding a
/// frame or payload allocates nothing once the buffer has grown. If the
/// buffer is in use (encoding a value encodes another: re-entrancy), `f`
/// gets a fresh one.
pub(crate) fn with_scratch<R>(f: impl FnOnce(&mut Vec<u8>) -> R) -> R {
    SCRATCH.with(|cell| match cell.try_borrow_mut() {
        Ok(mut buf) => {
            buf.clear();
            let out = f(&mut buf);
            if buf.capacity() > SCRATCH_KEEP {
                *buf = Vec::new();
            }
            out
        }
        Err(_) => f(&mut Vec::new()),
    })
}

/// Encode `value` as msgpack into this thread's reused buffer and hand the
/// bytes to `f`: no allocation for the payload itself (and none of the
/// regrowth a fresh `Vec` goes through) when `f` copies it into a frame.
pub(crate) fn with_encoded_payload<T: Serialize + ?Sized, R>(
    value: &T,
    f: impl FnOnce(&[u8]) -> R,
) -> Result<R, CodecError> {
    with_scratch(|buf| {
        rmp_serde::encode::write(buf, value)
            .map(|()| f(buf))
            .map_err(|e| CodecError::Encode(e.to_string()))
    })
}

/// Decode an application value from msgpack. Never panics.
pub fn decode_payload<T: serde::de::DeserializeOwned>(bytes: &[u8]) -> Result<T, CodecError> {
    rmp_serde::from_slice(bytes).map_err(|e| CodecError::Malformed(e.to_string()))
}

/// The bytes every tell frame from one handle starts with: version byte,
/// array header, sender, sending actor, target, `Kind::Tell` and type tag.
///
/// They are the same for every message a handle sends, so a sender computes
/// them once ([`tell_prefix`]) and a receiver can recognise a frame that
/// repeats the previous one's header by a byte comparison
/// ([`split_tell_tail`]) instead of decoding it again. A frame built from a
/// prefix by [`encode_tell`] is byte for byte what [`encode_ref`] produces.
pub fn tell_prefix(
    from: &NodeId,
    from_actor: Option<&str>,
    to: &ActorPath,
    type_tag: &str,
) -> Result<Vec<u8>, CodecError> {
    let mut buf = encode_ref(
        &EnvelopeRef {
            from,
            from_actor,
            to,
            kind: &Kind::Tell,
            type_tag,
            payload: &[],
            stamp: None,
        },
        usize::MAX,
    )?;
    // An empty `bin 8` payload then `nil` for the stamp end the frame.
    if !buf.ends_with(&[0xc4, 0x00, 0xc0]) {
        return Err(CodecError::Encode(
            "unexpected envelope layout for a tell prefix".into(),
        ));
    }
    buf.truncate(buf.len() - 3);
    Ok(buf)
}

/// Encode the tell `msg` after `prefix` (from [`tell_prefix`]) into `buf`,
/// replacing its contents: the payload is serialized in place rather than
/// into its own vector and copied, and a reused `buf` means no allocation.
/// Refuses frames over `max_len` bytes, like [`encode_ref`].
pub fn encode_tell<T: Serialize + ?Sized>(
    buf: &mut Vec<u8>,
    prefix: &[u8],
    msg: &T,
    stamp: Option<&ClockStamp>,
    max_len: usize,
) -> Result<(), CodecError> {
    buf.clear();
    buf.extend_from_slice(prefix);
    let at = buf.len();
    // Room for the largest `bin` header; the payload is moved back over the
    // unused part once its length is known, so the bytes stay canonical.
    buf.extend_from_slice(&[0; 5]);
    rmp_serde::encode::write(buf, msg).map_err(|e| CodecError::Encode(e.to_string()))?;
    let len = buf.len() - at - 5;
    if u32::try_from(len).is_err() {
        return Err(CodecError::TooLarge { len, max: max_len });
    }
    let (header, hlen) = layout::bin_header(len);
    buf[at..at + hlen].copy_from_slice(&header[..hlen]);
    if hlen < 5 {
        buf.copy_within(at + 5.., at + hlen);
        buf.truncate(buf.len() - (5 - hlen));
    }
    if !layout::write_stamp(buf, stamp) {
        rmp_serde::encode::write(buf, &stamp).map_err(|e| CodecError::Encode(e.to_string()))?;
    }
    if buf.len() > max_len {
        return Err(CodecError::TooLarge {
            len: buf.len(),
            max: max_len,
        });
    }
    Ok(())
}

/// The length of the header that a decoded tell frame shares with every
/// other tell from the same handle: the bytes before its payload's `bin`
/// marker. `None` when `view` is not a tell borrowed from `frame` with a
/// canonical `bin` marker (then the frame is simply not cached).
pub fn tell_header_len(frame: &[u8], view: &EnvelopeView<'_>) -> Option<usize> {
    if view.kind != Kind::Tell {
        return None;
    }
    let start = frame.as_ptr() as usize;
    let at = (view.payload.as_ptr() as usize).checked_sub(start)?;
    if at > frame.len() {
        return None;
    }
    let (header, hlen) = layout::bin_header(view.payload.len());
    let h = at.checked_sub(hlen)?;
    (frame.get(h..at) == Some(&header[..hlen])).then_some(h)
}

/// Split what follows a known tell header (see [`tell_header_len`]) into the
/// payload and the clock stamp. Never panics on untrusted bytes.
pub fn split_tell_tail(rest: &[u8]) -> Result<(&[u8], Option<ClockStamp>), CodecError> {
    let (payload, tail) = layout::split_bin(rest).ok_or_else(|| {
        CodecError::Malformed("tell frame: payload missing, truncated or not binary".into())
    })?;
    // The usual stamps (none, or a Lamport time) are read by hand; anything
    // else goes through serde.
    if let Some(stamp) = layout::read_stamp(tail) {
        return Ok((payload, stamp));
    }
    let stamp = rmp_serde::from_slice(tail).map_err(|e| CodecError::Malformed(e.to_string()))?;
    Ok((payload, stamp))
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    /// Serializes by encoding another value first (re-entrancy), or fails.
    struct Nested(bool);
    impl Serialize for Nested {
        fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
            if !self.0 {
                return Err(serde::ser::Error::custom("refused"));
            }
            let inner = with_encoded_payload(&("inner", 1u8), <[u8]>::to_vec)
                .map_err(serde::ser::Error::custom)?;
            s.serialize_bytes(&inner)
        }
    }

    #[test]
    fn payloads_encoded_in_the_reused_buffer_match_encode_payload() {
        for v in [("a", 1i64), ("a much longer name than the first", -5)] {
            let reused = with_encoded_payload(&v, <[u8]>::to_vec).unwrap();
            assert_eq!(reused, encode_payload(&v).unwrap());
        }
        // Re-entrant use falls back to a fresh buffer and stays correct.
        let outer = with_encoded_payload(&Nested(true), <[u8]>::to_vec).unwrap();
        assert_eq!(outer, encode_payload(&Nested(true)).unwrap());
        // A value that does not serialize is an error, and the buffer is
        // usable afterwards.
        assert!(matches!(
            with_encoded_payload(&Nested(false), |_| ()),
            Err(CodecError::Encode(_))
        ));
        assert_eq!(
            with_encoded_payload(&7u8, <[u8]>::to_vec).unwrap(),
            encode_payload(&7u8).unwrap()
        );
    }

    fn sample() -> Envelope {
        Envelope {
            from: NodeId::with_incarnation("node-a", 7),
            from_actor: Some("client".into()),
            to: ActorPath::new("node-b", "ledger").unwrap(),
            kind: Kind::Ask {
                id: 42,
                done_below: 40,
            },
            type_tag: "bank.deposit".into(),
            payload: encode_payload(&("alice", 500i64)).unwrap(),
            stamp: Some(ClockStamp {
                lamport: Some(3),
                vector: Some(vec![("node-a".into(), 2)]),
            }),
        }
    }

    #[test]
    fn round_trips_a_sample() {
        let env = sample();
        let frame = encode(&env, DEFAULT_MAX_FRAME_LEN).unwrap();
        assert_eq!(frame[0], WIRE_VERSION);
        assert_eq!(decode(&frame, DEFAULT_MAX_FRAME_LEN).unwrap(), env);
        // A 100-byte-class message stays compact.
        assert!(frame.len() < 120, "frame is {} bytes", frame.len());
    }

    #[test]
    fn rejects_wrong_version_empty_and_oversize() {
        let mut frame = encode(&sample(), DEFAULT_MAX_FRAME_LEN).unwrap();
        frame[0] = 99;
        assert_eq!(
            decode(&frame, DEFAULT_MAX_FRAME_LEN),
            Err(CodecError::Version { found: 99 })
        );
        assert_eq!(decode(&[], DEFAULT_MAX_FRAME_LEN), Err(CodecError::Empty));
        let frame = encode(&sample(), DEFAULT_MAX_FRAME_LEN).unwrap();
        assert!(matches!(
            decode(&frame, 10),
            Err(CodecError::TooLarge { .. })
        ));
        let mut big = sample();
        big.payload = vec![0; 2000];
        assert!(matches!(
            encode(&big, 1000),
            Err(CodecError::TooLarge { .. })
        ));
    }

    #[test]
    fn every_truncation_is_an_error() {
        let frame = encode(&sample(), DEFAULT_MAX_FRAME_LEN).unwrap();
        for cut in 0..frame.len() {
            assert!(
                decode(&frame[..cut], DEFAULT_MAX_FRAME_LEN).is_err(),
                "prefix of {cut} bytes decoded"
            );
        }
    }

    #[test]
    fn huge_declared_lengths_do_not_allocate_or_panic() {
        // version, array of 7, then a str32 claiming 4 GiB.
        let frame = [WIRE_VERSION, 0x97, 0xdb, 0xff, 0xff, 0xff, 0xff, b'x'];
        assert!(decode(&frame, DEFAULT_MAX_FRAME_LEN).is_err());
        let frame = [WIRE_VERSION, 0xdd, 0xff, 0xff, 0xff, 0xff];
        assert!(decode(&frame, DEFAULT_MAX_FRAME_LEN).is_err());
    }

    /// Integers around every msgpack width boundary, and anything.
    fn arb_uint() -> impl Strategy<Value = u64> {
        prop_oneof![
            any::<u64>(),
            0u64..=300,
            (0u32..64).prop_map(|s| 1u64 << s),
            (1u32..=64).prop_map(|s| u64::MAX >> (64 - s)),
        ]
    }

    fn arb_kind() -> impl Strategy<Value = Kind> {
        prop_oneof![
            Just(Kind::Tell),
            (arb_uint(), arb_uint()).prop_map(|(id, done_below)| Kind::Ask { id, done_below }),
            arb_uint().prop_map(|id| Kind::Reply { id }),
            (any::<u64>(), "[a-z]{0,12}").prop_map(|(id, s)| Kind::ErrorReply {
                id,
                error: RemoteError::UnknownActor(s)
            }),
            any::<u64>().prop_map(|id| Kind::ErrorReply {
                id,
                error: RemoteError::ActorStopped
            }),
        ]
    }

    fn arb_envelope() -> impl Strategy<Value = Envelope> {
        (
            "[a-z][a-z0-9-]{0,15}",
            any::<u128>(),
            proptest::option::of("[a-z]{1,10}"),
            "[a-z][a-z0-9-]{0,15}",
            "[a-z][a-z0-9._-]{0,15}",
            arb_kind(),
            "[a-z.]{0,20}",
            proptest::collection::vec(any::<u8>(), 0..300),
            proptest::option::of((
                proptest::option::of(arb_uint()),
                proptest::option::of(proptest::collection::vec(
                    ("[a-z]{1,5}", any::<u64>()),
                    0..4,
                )),
            )),
        )
            .prop_map(
                |(fname, inc, from_actor, node, actor, kind, type_tag, payload, stamp)| Envelope {
                    from: NodeId::with_incarnation(fname, inc),
                    from_actor,
                    to: ActorPath::new(node, actor).expect("strategy yields valid names"),
                    kind,
                    type_tag,
                    payload,
                    stamp: stamp.map(|(lamport, vector)| ClockStamp { lamport, vector }),
                },
            )
    }

    fn arb_tell() -> impl Strategy<Value = Envelope> {
        (
            arb_envelope(),
            prop_oneof![0usize..300, 250usize..70_000],
            any::<u8>(),
        )
            .prop_map(|(mut env, n, fill)| {
                env.kind = Kind::Tell;
                // Half the cases carry the usual Lamport-only stamp.
                if n % 2 == 0 {
                    env.stamp = Some(ClockStamp {
                        lamport: Some(u64::from(fill) << (n % 57)),
                        vector: None,
                    });
                }
                env.payload = encode_payload(serde_bytes::Bytes::new(&vec![fill; n])).unwrap();
                env
            })
    }

    proptest! {
        #[test]
        fn prop_tell_fast_paths_match_the_envelope_codec(env in arb_tell()) {
            let reference = encode(&env, DEFAULT_MAX_FRAME_LEN).unwrap();
            // Sender: prefix + in-place payload gives the very same bytes.
            let prefix = tell_prefix(&env.from, env.from_actor.as_deref(), &env.to, &env.type_tag).unwrap();
            let value: serde_bytes::ByteBuf = decode_payload(&env.payload).unwrap();
            // Into a buffer holding an older, longer frame: replaced, not appended to.
            let mut fast = vec![0xee; 300];
            encode_tell(&mut fast, &prefix, &value, env.stamp.as_ref(), DEFAULT_MAX_FRAME_LEN).unwrap();
            prop_assert_eq!(&fast, &reference);
            // Receiver: the header is the prefix, and the tail splits back.
            let view = decode_view(&reference, DEFAULT_MAX_FRAME_LEN).unwrap();
            let h = tell_header_len(&reference, &view).unwrap();
            prop_assert_eq!(&reference[..h], &prefix[..]);
            let (payload, stamp) = split_tell_tail(&reference[h..]).unwrap();
            prop_assert_eq!(payload, &env.payload[..]);
            prop_assert_eq!(stamp, env.stamp.clone());
            // Every truncation of the tail is an error, never a panic.
            for cut in 0..reference.len() - h {
                prop_assert!(split_tell_tail(&reference[h..h + cut]).is_err());
            }
        }

        #[test]
        fn prop_tell_tail_never_panics(bytes in proptest::collection::vec(any::<u8>(), 0..64)) {
            let _ = split_tell_tail(&bytes);
        }
    }

    proptest! {
        #[test]
        fn prop_round_trip(env in arb_envelope()) {
            let frame = encode(&env, DEFAULT_MAX_FRAME_LEN).unwrap();
            prop_assert_eq!(decode(&frame, DEFAULT_MAX_FRAME_LEN).unwrap(), env);
        }

        #[test]
        fn prop_view_decodes_the_same_envelope(env in arb_envelope()) {
            let frame = encode(&env, DEFAULT_MAX_FRAME_LEN).unwrap();
            let v = decode_view(&frame, DEFAULT_MAX_FRAME_LEN).unwrap();
            prop_assert_eq!(v.from.to_node_id(), env.from.clone());
            prop_assert_eq!(v.from_actor, env.from_actor.as_deref());
            prop_assert_eq!((v.to.node, v.to.actor), (env.to.node.as_str(), env.to.actor.as_str()));
            prop_assert_eq!(&v.kind, &env.kind);
            prop_assert_eq!(v.type_tag, env.type_tag.as_str());
            prop_assert_eq!(v.payload, &env.payload[..]);
            prop_assert_eq!(&v.stamp, &env.stamp);
        }

        #[test]
        fn prop_hand_written_layout_is_the_serde_layout(env in arb_envelope()) {
            let frame = encode(&env, DEFAULT_MAX_FRAME_LEN).unwrap();
            let mut by_serde = vec![WIRE_VERSION];
            rmp_serde::encode::write(&mut by_serde, &env).unwrap();
            prop_assert_eq!(&frame, &by_serde);
            let serde_view: EnvelopeView<'_> = rmp_serde::from_slice(&frame[1..]).unwrap();
            // Read by hand whenever the shape allows, with serde's result.
            let handled = !matches!(env.kind, Kind::ErrorReply { .. })
                && !matches!(env.stamp, Some(ClockStamp { vector: Some(_), .. }));
            match layout::read(&frame[1..]) {
                Some(view) => prop_assert_eq!(view, serde_view),
                None => prop_assert!(!handled, "declined a usual envelope"),
            }
        }

        #[test]
        fn prop_hand_reader_agrees_with_serde_on_mutated_frames(env in arb_envelope(), flips in proptest::collection::vec((any::<prop::sample::Index>(), any::<u8>()), 1..4)) {
            let mut frame = encode(&env, DEFAULT_MAX_FRAME_LEN).unwrap();
            for (i, b) in flips {
                let i = 1 + i.index(frame.len() - 1);
                frame[i] = b;
            }
            if let Some(view) = layout::read(&frame[1..]) {
                let by_serde: Result<EnvelopeView<'_>, _> = rmp_serde::from_slice(&frame[1..]);
                prop_assert_eq!(Some(view), by_serde.ok());
            }
        }

        #[test]
        fn prop_random_bytes_never_panic(bytes in proptest::collection::vec(any::<u8>(), 0..512)) {
            let _ = decode(&bytes, DEFAULT_MAX_FRAME_LEN);
            let _ = decode_view(&bytes, DEFAULT_MAX_FRAME_LEN);
            let mut versioned = vec![WIRE_VERSION];
            versioned.extend_from_slice(&bytes);
            let _ = decode(&versioned, DEFAULT_MAX_FRAME_LEN);
            let _ = decode_view(&versioned, DEFAULT_MAX_FRAME_LEN);
            if let Some(view) = layout::read(&bytes) {
                let by_serde: Result<EnvelopeView<'_>, _> = rmp_serde::from_slice(&bytes);
                prop_assert_eq!(Some(view), by_serde.ok());
            }
        }

        #[test]
        fn prop_mutated_frames_never_panic(env in arb_envelope(), flips in proptest::collection::vec((any::<prop::sample::Index>(), any::<u8>()), 1..8)) {
            let mut frame = encode(&env, DEFAULT_MAX_FRAME_LEN).unwrap();
            for (i, b) in flips {
                let i = i.index(frame.len());
                frame[i] = b;
            }
            let _ = decode(&frame, DEFAULT_MAX_FRAME_LEN);
        }

        #[test]
        fn prop_truncated_frames_are_errors(env in arb_envelope(), cut in any::<prop::sample::Index>()) {
            let frame = encode(&env, DEFAULT_MAX_FRAME_LEN).unwrap();
            let cut = cut.index(frame.len());
            prop_assert!(decode(&frame[..cut], DEFAULT_MAX_FRAME_LEN).is_err());
            prop_assert!(decode_view(&frame[..cut], DEFAULT_MAX_FRAME_LEN).is_err());
        }
    }
}
