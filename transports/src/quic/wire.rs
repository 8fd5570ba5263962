//! The QUIC transport's wire format.
//!
//! - A *frame* travels as a `u32` big-endian length followed by that many bytes.
//!   A receiver refuses (and closes the connection on) any length over its limit
//!   before reading the body, so a garbage prefix cannot make it allocate.
//! - Each unidirectional stream starts with one *stream kind* byte
//!   ([`STREAM_DATA`] or [`STREAM_CONTROL`]) and then carries frames until closed.
//! - The *hello* is the first (and only) frame on the one bidirectional stream the
//!   dialer opens: `b"TRPH"`, version `1`, the node name and its incarnation string
//!   (each a `u8` length plus UTF-8 bytes). The acceptor answers with its own hello
//!   on the same stream. Version `2` (sent by nodes configured with seeds, see
//!   [`Hello::listen`]) appends the sender's listen address as a third string
//!   (`ip:port`), so that a node it joins through can dial it back; an acceptor
//!   answers in the version it was greeted with, so nodes without seeds keep
//!   speaking version 1 and interoperate with older nodes. The ALPN stays
//!   `troupe/1`: everything after the hello is unchanged.
//! - Connection close codes: [`CLOSE_SHUTDOWN`], [`CLOSE_REFUSED`],
//!   [`CLOSE_PROTOCOL`], [`CLOSE_DUPLICATE`], [`CLOSE_REPLACED`].

use bytes::{Buf, BufMut, Bytes, BytesMut};

/// Unidirectional stream carrying ordinary frames.
pub const STREAM_DATA: u8 = 0x01;
/// Unidirectional stream carrying control frames (never queued behind data).
pub const STREAM_CONTROL: u8 = 0x02;

/// Closed because the local transport is shutting down.
pub const CLOSE_SHUTDOWN: u32 = 0;
/// Closed because the peer's identity was refused (hello, certificate, unknown peer).
pub const CLOSE_REFUSED: u32 = 1;
/// Closed because the peer broke the wire format (oversize frame, bad stream kind).
pub const CLOSE_PROTOCOL: u32 = 2;
/// Closed by the duplicate-connection rule (the connection dialed by the lower name wins).
pub const CLOSE_DUPLICATE: u32 = 3;
/// Closed because the peer reconnected with a new incarnation.
pub const CLOSE_REPLACED: u32 = 4;

/// Frames at most this long are copied into one coalesced write; longer ones are
/// written as their own chunk (no copy).
pub(crate) const COALESCE_LIMIT: usize = 4096;
/// Largest hello accepted.
pub const MAX_HELLO: usize = 1024;
const HELLO_MAGIC: &[u8; 4] = b"TRPH";
const HELLO_VERSION: u8 = 1;
const HELLO_VERSION_LISTEN: u8 = 2;

/// A wire-format violation.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum WireError {
    /// A length prefix over the limit.
    #[error("frame length {len} exceeds the {max}-byte limit")]
    FrameTooLarge {
        /// The announced length.
        len: usize,
        /// The limit.
        max: usize,
    },
    /// A malformed hello.
    #[error("malformed hello: {0}")]
    BadHello(&'static str),
}

/// Appends the length-prefixed encoding of `frames` to `out` as few large chunks:
/// small frames are coalesced into `scratch`, large ones are passed through.
pub fn encode_batch(frames: &[Bytes], scratch: &mut BytesMut, out: &mut Vec<Bytes>) {
    // One allocation for the whole coalesced part (no regrowth while copying).
    let coalesced: usize = frames
        .iter()
        .map(|f| {
            4 + if f.len() <= COALESCE_LIMIT {
                f.len()
            } else {
                0
            }
        })
        .sum();
    scratch.reserve(coalesced);
    for frame in frames {
        // Frame lengths are checked against the (u32) limit at send time.
        scratch.put_u32(frame.len() as u32);
        if frame.len() <= COALESCE_LIMIT {
            scratch.extend_from_slice(frame);
        } else {
            out.push(scratch.split().freeze());
            out.push(frame.clone());
        }
    }
    if !scratch.is_empty() {
        out.push(scratch.split().freeze());
    }
}

/// Incremental decoder of length-prefixed frames from stream chunks.
///
/// Frames that lie entirely inside one received chunk are returned as slices of
/// that chunk (no copy); only frames split across chunks are assembled in a buffer.
#[derive(Debug)]
pub struct FrameDecoder {
    /// The unparsed rest of the current chunk.
    cur: Bytes,
    /// A frame (with its prefix) being assembled across chunks.
    partial: BytesMut,
    max: usize,
}

impl FrameDecoder {
    /// A decoder refusing frames longer than `max` bytes.
    pub fn new(max: usize) -> Self {
        Self {
            cur: Bytes::new(),
            partial: BytesMut::new(),
            max,
        }
    }

    /// Appends a chunk read from the stream. Call only after [`Self::next_frame`]
    /// returned `Ok(None)` (everything before was consumed).
    pub fn push(&mut self, chunk: Bytes) {
        if self.cur.is_empty() {
            self.cur = chunk;
        } else {
            // Not the documented use; stay correct anyway (copying).
            let mut joined = BytesMut::with_capacity(self.cur.len() + chunk.len());
            joined.extend_from_slice(&self.cur);
            joined.extend_from_slice(&chunk);
            self.cur = joined.freeze();
        }
    }

    fn check(&self, len: usize) -> Result<(), WireError> {
        if len > self.max {
            Err(WireError::FrameTooLarge { len, max: self.max })
        } else {
            Ok(())
        }
    }

    fn take_into_partial(&mut self, want: usize) {
        let n = want.min(self.cur.len());
        self.partial.extend_from_slice(&self.cur[..n]);
        self.cur.advance(n);
    }

    /// The next complete frame, `Ok(None)` if more bytes are needed.
    pub fn next_frame(&mut self) -> Result<Option<Bytes>, WireError> {
        if !self.partial.is_empty() {
            if self.partial.len() < 4 {
                self.take_into_partial(4 - self.partial.len());
                if self.partial.len() < 4 {
                    return Ok(None);
                }
            }
            let p = &self.partial;
            let len = u32::from_be_bytes([p[0], p[1], p[2], p[3]]) as usize;
            self.check(len)?;
            self.partial.reserve(4 + len - self.partial.len());
            self.take_into_partial(4 + len - self.partial.len());
            if self.partial.len() < 4 + len {
                return Ok(None);
            }
            let mut frame = self.partial.split();
            frame.advance(4);
            return Ok(Some(frame.freeze()));
        }
        if self.cur.len() < 4 {
            self.take_into_partial(4);
            return Ok(None);
        }
        let c = &self.cur;
        let len = u32::from_be_bytes([c[0], c[1], c[2], c[3]]) as usize;
        self.check(len)?;
        if self.cur.len() >= 4 + len {
            self.cur.advance(4);
            return Ok(Some(self.cur.split_to(len)));
        }
        self.partial.reserve(4 + len);
        self.take_into_partial(4 + len);
        Ok(None)
    }

    /// Bytes buffered but not yet returned as a frame.
    pub fn pending(&self) -> usize {
        self.cur.len() + self.partial.len()
    }
}

/// What a node says about itself in the hello.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Hello {
    /// Node name (must match the certificate in secure mode).
    pub name: String,
    /// Incarnation string (changes when the node restarts).
    pub incarnation: String,
    /// Where the sender listens (hello version 2; `None`: version 1). Its IP
    /// may be unspecified (`0.0.0.0`): the receiver then takes the IP the
    /// connection came from.
    pub listen: Option<std::net::SocketAddr>,
}

impl Hello {
    /// Encodes the hello as one length-prefixed frame.
    pub fn encode(&self) -> Result<Bytes, WireError> {
        if self.name.len() > 255 || self.incarnation.len() > 255 {
            return Err(WireError::BadHello(
                "name or incarnation longer than 255 bytes",
            ));
        }
        let listen = self.listen.map(|a| a.to_string());
        let listen_len = listen.as_ref().map_or(0, |l| 1 + l.len());
        let body_len = 4 + 1 + 1 + self.name.len() + 1 + self.incarnation.len() + listen_len;
        let mut b = BytesMut::with_capacity(4 + body_len);
        b.put_u32(body_len as u32);
        b.extend_from_slice(HELLO_MAGIC);
        b.put_u8(if listen.is_some() {
            HELLO_VERSION_LISTEN
        } else {
            HELLO_VERSION
        });
        b.put_u8(self.name.len() as u8);
        b.extend_from_slice(self.name.as_bytes());
        b.put_u8(self.incarnation.len() as u8);
        b.extend_from_slice(self.incarnation.as_bytes());
        if let Some(l) = listen {
            // A socket address is at most 47 bytes long.
            b.put_u8(l.len() as u8);
            b.extend_from_slice(l.as_bytes());
        }
        Ok(b.freeze())
    }

    /// Decodes a hello body (without its length prefix).
    pub fn decode(mut body: &[u8]) -> Result<Hello, WireError> {
        if body.len() < 6 || &body[..4] != HELLO_MAGIC {
            return Err(WireError::BadHello("missing TRPH magic"));
        }
        body.advance(4);
        let version = body.get_u8();
        if version != HELLO_VERSION && version != HELLO_VERSION_LISTEN {
            return Err(WireError::BadHello("unsupported hello version"));
        }
        let name = take_str(&mut body)?;
        let incarnation = take_str(&mut body)?;
        let listen = if version == HELLO_VERSION_LISTEN {
            Some(
                take_str(&mut body)?
                    .parse()
                    .map_err(|_| WireError::BadHello("listen address is not ip:port"))?,
            )
        } else {
            None
        };
        if !body.is_empty() {
            return Err(WireError::BadHello("trailing bytes"));
        }
        Ok(Hello {
            name,
            incarnation,
            listen,
        })
    }
}

fn take_str(body: &mut &[u8]) -> Result<String, WireError> {
    if body.is_empty() {
        return Err(WireError::BadHello("truncated"));
    }
    let len = body.get_u8() as usize;
    if body.len() < len {
        return Err(WireError::BadHello("truncated"));
    }
    let s = std::str::from_utf8(&body[..len])
        .map_err(|_| WireError::BadHello("not UTF-8"))?
        .to_string();
    body.advance(len);
    Ok(s)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn batch_round_trips_through_decoder_in_any_chunking() {
        let frames: Vec<Bytes> = (0..50usize)
            .map(|i| Bytes::from(vec![i as u8; (i * 397) % 9000]))
            .collect();
        let mut scratch = BytesMut::new();
        let mut out = Vec::new();
        encode_batch(&frames, &mut scratch, &mut out);
        let wire: Vec<u8> = out.iter().flat_map(|c| c.iter().copied()).collect();
        for step in [1usize, 3, 100, 4096, wire.len()] {
            let mut dec = FrameDecoder::new(10_000);
            let mut got = Vec::new();
            for chunk in wire.chunks(step) {
                dec.push(Bytes::copy_from_slice(chunk));
                while let Some(f) = dec.next_frame().expect("valid") {
                    got.push(f);
                }
            }
            assert_eq!(got, frames, "chunk size {step}");
            assert_eq!(dec.pending(), 0);
        }
    }

    #[test]
    fn pushing_before_draining_keeps_the_stream_intact() {
        let frames: Vec<Bytes> = (0..5u8).map(|i| Bytes::from(vec![i; 10])).collect();
        let mut out = Vec::new();
        encode_batch(&frames, &mut BytesMut::new(), &mut out);
        let wire: Vec<u8> = out.iter().flat_map(|c| c.iter().copied()).collect();
        let mut dec = FrameDecoder::new(100);
        dec.push(Bytes::copy_from_slice(&wire[..7]));
        dec.push(Bytes::copy_from_slice(&wire[7..]));
        let mut got = Vec::new();
        while let Some(f) = dec.next_frame().expect("valid") {
            got.push(f);
        }
        assert_eq!(got, frames);
    }

    #[test]
    fn oversize_prefix_is_refused_before_the_body_arrives() {
        let mut dec = FrameDecoder::new(100);
        dec.push(Bytes::from_static(&[0xff, 0xff, 0xff, 0xff]));
        assert_eq!(
            dec.next_frame(),
            Err(WireError::FrameTooLarge {
                len: u32::MAX as usize,
                max: 100
            })
        );
    }

    #[test]
    fn hello_round_trip_and_garbage() {
        let h = Hello {
            name: "node-a".into(),
            incarnation: "1234".into(),
            listen: None,
        };
        let enc = h.encode().expect("encode");
        assert_eq!(enc[8], HELLO_VERSION, "no listen address: version 1");
        assert_eq!(Hello::decode(&enc[4..]), Ok(h));
        assert!(Hello::decode(b"XXXX\x01\x00\x00").is_err());
        assert!(Hello::decode(b"TRPH\x01\x09ab").is_err());
        assert!(
            Hello::decode(b"TRPH\x02\x00\x00").is_err(),
            "v2 without address"
        );
        assert!(Hello::decode(b"TRPH\x03\x00\x00").is_err());
    }

    #[test]
    fn hello_v2_carries_the_listen_address() {
        let h = Hello {
            name: "node-c".into(),
            incarnation: "77".into(),
            listen: Some("[::1]:7000".parse().expect("addr")),
        };
        let enc = h.encode().expect("encode");
        assert_eq!(enc[8], HELLO_VERSION_LISTEN);
        assert_eq!(Hello::decode(&enc[4..]), Ok(h));
        assert_eq!(
            Hello::decode(b"TRPH\x02\x01c\x01i\x03abc"),
            Err(WireError::BadHello("listen address is not ip:port"))
        );
    }
}
