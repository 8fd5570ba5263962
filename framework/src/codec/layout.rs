//! The envelope's msgpack layout, read and written by hand on the hot path.
//!
//! Every frame is the rmp-serde encoding of an [`Envelope`](super::Envelope)
//! (a compact array, see the parent module). Going through serde costs a few
//! hundred nanoseconds per frame in generic visitor code; the envelope's
//! layout is small and fixed, so this module writes and reads it directly:
//!
//! ```text
//! [ [name, bin16 incarnation], from_actor | nil, [node, actor], kind,
//!   type_tag, bin payload, [lamport | nil, nil] | nil ]
//! kind: "Tell" | {"Ask": [id, done_below]} | {"Reply": [id]}
//! ```
//!
//! Guarantees:
//! - [`write`] produces exactly the bytes rmp-serde produces (minimal
//!   integer, string and binary headers), or declines (`false`) for the
//!   rare shapes it does not handle (error replies, vector-clock stamps),
//!   and the caller uses serde. The tests compare both encoders on
//!   arbitrary envelopes.
//! - [`read`] accepts only that exact layout and gives what serde would
//!   give for it; anything else (another shape, a non-minimal header,
//!   trailing bytes, bad UTF-8, truncation) is `None`, and the caller
//!   decodes with serde, which has the final word, errors included. It
//!   never panics and never allocates.

use super::{ActorPathView, ClockStamp, EnvelopeRef, EnvelopeView, Kind, NodeIdView};

/// Appends `env` to `buf` in the envelope layout; `false` (and `buf`
/// unchanged) when `env` has a shape left to serde.
pub(super) fn write(buf: &mut Vec<u8>, env: &EnvelopeRef<'_>) -> bool {
    if matches!(
        env.stamp,
        Some(ClockStamp {
            vector: Some(_),
            ..
        })
    ) {
        return false;
    }
    let start = buf.len();
    buf.push(0x97);
    buf.push(0x92);
    write_str(buf, &env.from.name);
    write_bin(buf, env.from.incarnation.as_bytes());
    match env.from_actor {
        None => buf.push(0xc0),
        Some(a) => write_str(buf, a),
    }
    buf.push(0x92);
    write_str(buf, &env.to.node);
    write_str(buf, &env.to.actor);
    match env.kind {
        Kind::Tell => write_str(buf, "Tell"),
        Kind::Ask { id, done_below } => {
            buf.push(0x81);
            write_str(buf, "Ask");
            buf.push(0x92);
            write_uint(buf, *id);
            write_uint(buf, *done_below);
        }
        Kind::Reply { id } => {
            buf.push(0x81);
            write_str(buf, "Reply");
            buf.push(0x91);
            write_uint(buf, *id);
        }
        Kind::ErrorReply { .. } => {
            buf.truncate(start);
            return false;
        }
    }
    write_str(buf, env.type_tag);
    write_bin(buf, env.payload);
    write_stamp(buf, env.stamp)
}

/// Appends an optional stamp as rmp-serde would; `false` (and `buf`
/// unchanged) for a vector-clock stamp, left to serde.
pub(super) fn write_stamp(buf: &mut Vec<u8>, stamp: Option<&ClockStamp>) -> bool {
    match stamp {
        None => buf.push(0xc0),
        Some(ClockStamp {
            lamport,
            vector: None,
        }) => {
            buf.push(0x92);
            match lamport {
                None => buf.push(0xc0),
                Some(t) => write_uint(buf, *t),
            }
            buf.push(0xc0);
        }
        Some(_) => return false,
    }
    true
}

fn write_str(buf: &mut Vec<u8>, s: &str) {
    let n = s.len();
    match n {
        0..=31 => buf.push(0xa0 | n as u8),
        32..=0xff => buf.extend_from_slice(&[0xd9, n as u8]),
        0x100..=0xffff => {
            buf.push(0xda);
            buf.extend_from_slice(&(n as u16).to_be_bytes());
        }
        _ => {
            buf.push(0xdb);
            buf.extend_from_slice(&(n as u32).to_be_bytes());
        }
    }
    buf.extend_from_slice(s.as_bytes());
}

/// The minimal msgpack `bin` header for `n` bytes (`n` fits in a `u32`):
/// its bytes and how many of them are used.
pub(super) fn bin_header(n: usize) -> ([u8; 5], usize) {
    match n {
        0..=0xff => ([0xc4, n as u8, 0, 0, 0], 2),
        0x100..=0xffff => {
            let b = (n as u16).to_be_bytes();
            ([0xc5, b[0], b[1], 0, 0], 3)
        }
        _ => {
            let b = (n as u32).to_be_bytes();
            ([0xc6, b[0], b[1], b[2], b[3]], 5)
        }
    }
}

fn write_bin(buf: &mut Vec<u8>, b: &[u8]) {
    let (header, len) = bin_header(b.len());
    buf.extend_from_slice(&header[..len]);
    buf.extend_from_slice(b);
}

fn write_uint(buf: &mut Vec<u8>, v: u64) {
    match v {
        0..=0x7f => buf.push(v as u8),
        0x80..=0xff => buf.extend_from_slice(&[0xcc, v as u8]),
        0x100..=0xffff => {
            buf.push(0xcd);
            buf.extend_from_slice(&(v as u16).to_be_bytes());
        }
        0x1_0000..=0xffff_ffff => {
            buf.push(0xce);
            buf.extend_from_slice(&(v as u32).to_be_bytes());
        }
        _ => {
            buf.push(0xcf);
            buf.extend_from_slice(&v.to_be_bytes());
        }
    }
}

/// The envelope in `body` (the frame after its version byte), when it is in
/// exactly the layout [`write`] produces; `None` otherwise.
pub(super) fn read(body: &[u8]) -> Option<EnvelopeView<'_>> {
    let mut r = Reader { rest: body };
    r.tag(0x97)?;
    r.tag(0x92)?;
    let name = r.str()?;
    let incarnation = uuid::Uuid::from_bytes(r.bin()?.try_into().ok()?);
    let from_actor = if r.nil() { None } else { Some(r.str()?) };
    r.tag(0x92)?;
    let node = r.str()?;
    let actor = r.str()?;
    let kind = if r.peek()? == 0x81 {
        r.tag(0x81)?;
        match r.str()? {
            "Ask" => {
                r.tag(0x92)?;
                Kind::Ask {
                    id: r.uint()?,
                    done_below: r.uint()?,
                }
            }
            "Reply" => {
                r.tag(0x91)?;
                Kind::Reply { id: r.uint()? }
            }
            _ => return None,
        }
    } else {
        match r.str()? {
            "Tell" => Kind::Tell,
            _ => return None,
        }
    };
    let type_tag = r.str()?;
    let payload = r.bin()?;
    let stamp = r.stamp()?;
    if !r.rest.is_empty() {
        return None;
    }
    Some(EnvelopeView {
        from: NodeIdView { name, incarnation },
        from_actor,
        to: ActorPathView { node, actor },
        kind,
        type_tag,
        payload,
        stamp,
    })
}

/// A `bin` value at the start of `bytes` (minimal header), and what
/// follows it.
pub(super) fn split_bin(bytes: &[u8]) -> Option<(&[u8], &[u8])> {
    let mut r = Reader { rest: bytes };
    let bin = r.bin()?;
    Some((bin, r.rest))
}

/// `bytes` read whole as an optional stamp in the layout [`write_stamp`]
/// produces (none, or a Lamport time and no vector); `None` otherwise.
pub(super) fn read_stamp(bytes: &[u8]) -> Option<Option<ClockStamp>> {
    let mut r = Reader { rest: bytes };
    let stamp = r.stamp()?;
    r.rest.is_empty().then_some(stamp)
}

/// A cursor over untrusted bytes: every read checks its bounds.
struct Reader<'a> {
    rest: &'a [u8],
}

impl<'a> Reader<'a> {
    fn peek(&self) -> Option<u8> {
        self.rest.first().copied()
    }

    fn take(&mut self, n: usize) -> Option<&'a [u8]> {
        if self.rest.len() < n {
            return None;
        }
        let (head, tail) = self.rest.split_at(n);
        self.rest = tail;
        Some(head)
    }

    fn byte(&mut self) -> Option<u8> {
        Some(self.take(1)?[0])
    }

    /// Consumes the byte `b`, or fails.
    fn tag(&mut self, b: u8) -> Option<()> {
        (self.byte()? == b).then_some(())
    }

    /// Consumes a `nil` if one is next.
    fn nil(&mut self) -> bool {
        if self.peek() == Some(0xc0) {
            self.rest = &self.rest[1..];
            true
        } else {
            false
        }
    }

    fn be(&mut self, n: usize) -> Option<u64> {
        Some(
            self.take(n)?
                .iter()
                .fold(0u64, |acc, b| (acc << 8) | u64::from(*b)),
        )
    }

    /// A length of the given marker width, accepted only if minimal.
    fn len(&mut self, width: usize, min: usize) -> Option<usize> {
        let n = usize::try_from(self.be(width)?).ok()?;
        (n >= min).then_some(n)
    }

    fn str(&mut self) -> Option<&'a str> {
        let n = match self.byte()? {
            m @ 0xa0..=0xbf => usize::from(m & 0x1f),
            0xd9 => self.len(1, 32)?,
            0xda => self.len(2, 0x100)?,
            0xdb => self.len(4, 0x1_0000)?,
            _ => return None,
        };
        std::str::from_utf8(self.take(n)?).ok()
    }

    fn bin(&mut self) -> Option<&'a [u8]> {
        let n = match self.byte()? {
            0xc4 => self.len(1, 0)?,
            0xc5 => self.len(2, 0x100)?,
            0xc6 => self.len(4, 0x1_0000)?,
            _ => return None,
        };
        self.take(n)
    }

    /// An optional stamp without a vector clock: `nil`, or
    /// `[lamport | nil, nil]`.
    fn stamp(&mut self) -> Option<Option<ClockStamp>> {
        if self.nil() {
            return Some(None);
        }
        self.tag(0x92)?;
        let lamport = if self.nil() { None } else { Some(self.uint()?) };
        if !self.nil() {
            return None;
        }
        Some(Some(ClockStamp {
            lamport,
            vector: None,
        }))
    }

    fn uint(&mut self) -> Option<u64> {
        match self.byte()? {
            m @ 0x00..=0x7f => Some(u64::from(m)),
            0xcc => self.be(1).filter(|v| *v >= 0x80),
            0xcd => self.be(2).filter(|v| *v >= 0x100),
            0xce => self.be(4).filter(|v| *v >= 0x1_0000),
            0xcf => self.be(8).filter(|v| *v >= 0x1_0000_0000),
            _ => None,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const EDGES: [u64; 14] = [
        0,
        1,
        0x7f,
        0x80,
        0xff,
        0x100,
        0xffff,
        0x1_0000,
        0xffff_ffff,
        0x1_0000_0000,
        u64::MAX - 1,
        u64::MAX,
        1000,
        70_000,
    ];

    /// Every width boundary is written as rmp writes it, and read back.
    #[test]
    fn integers_strings_and_binaries_match_rmp_at_every_width_boundary() {
        for v in EDGES {
            let (mut ours, mut theirs) = (Vec::new(), Vec::new());
            write_uint(&mut ours, v);
            rmp_serde::encode::write(&mut theirs, &v).unwrap();
            assert_eq!(ours, theirs, "uint {v}");
            assert_eq!(Reader { rest: &ours }.uint(), Some(v));
        }
        for n in [0usize, 1, 31, 32, 255, 256, 65_535, 65_536, 70_000] {
            let s = "x".repeat(n);
            let (mut ours, mut theirs) = (Vec::new(), Vec::new());
            write_str(&mut ours, &s);
            rmp_serde::encode::write(&mut theirs, &s).unwrap();
            assert_eq!(ours, theirs, "str of {n}");
            assert_eq!(Reader { rest: &ours }.str(), Some(s.as_str()));
            let b = vec![7u8; n];
            let (mut ours, mut theirs) = (Vec::new(), Vec::new());
            write_bin(&mut ours, &b);
            rmp_serde::encode::write(&mut theirs, serde_bytes::Bytes::new(&b)).unwrap();
            assert_eq!(ours, theirs, "bin of {n}");
            assert_eq!(Reader { rest: &ours }.bin(), Some(&b[..]));
        }
    }

    /// Non-minimal headers are valid msgpack but not what rmp writes: the
    /// reader declines them (serde then decides).
    #[test]
    fn non_minimal_headers_are_declined() {
        assert_eq!(
            Reader {
                rest: &[0xcc, 0x05]
            }
            .uint(),
            None
        );
        assert_eq!(
            Reader {
                rest: &[0xd9, 0x01, b'a']
            }
            .str(),
            None
        );
        assert_eq!(
            Reader {
                rest: &[0xc5, 0x00, 0x01, 9]
            }
            .bin(),
            None
        );
        assert_eq!(
            Reader {
                rest: &[0xcc, 0x80]
            }
            .uint(),
            Some(0x80)
        );
    }
}
