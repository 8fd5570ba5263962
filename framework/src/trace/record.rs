//! The binary record stream of a [`super::FileTraceSink`]: what the node's
//! threads append for its writer, and, as written, the body of a binary
//! trace file (see [`super::binary`]).
//!
//! A record is a tag byte (the kind in the low nibble, flags above it) and
//! its fields, integers as LEB128 varints. Every timed record carries the
//! difference of its clock stamp to the previous timed record's, zigzag
//! encoded (the stamps of two threads can interleave out of order). The
//! strings of a frame record (node, peer, kind, message tag, cause node)
//! are not repeated per frame: they form a *block* kept in one of
//! [`SLOTS`] slots, and a record names its slot. The encoder defines a
//! block (a `DEF` record, just before the record that uses it) when it is
//! not in its slot already; the decoder mirrors the slots. Each slot also
//! keeps the `seq` of its last record, and a record whose `seq` is the
//! next one leaves it out (`tag::NEXT`). A node's frames go to few peers
//! with few message types, and its Lamport stamps rise by one per frame,
//! so a frame record is about 3-6 bytes instead of its ~200-byte JSON
//! line.
//!
//! Guarantees: decoding the records an [`Encoder`] wrote, in order, from
//! a fresh [`Decoder`] yields every field as given; a malformed or
//! truncated stream is an error naming the byte offset, never a panic.

use std::sync::atomic::{AtomicU64, Ordering};

use super::clock::Pair;
use super::FrameEvent;

/// Numbers slot definitions across every encoder of the process, so a
/// [`super::SlotHint`] names one definition of one encoder's slot.
static DEFINITIONS: AtomicU64 = AtomicU64::new(1);

/// Record kinds (the low nibble of the tag) and flags.
pub(super) mod tag {
    /// A frame sent: dt, seq, bytes, [lamport], [cause seq], slot.
    pub(crate) const SEND: u8 = 1;
    /// A frame delivered: dt, seq, slot.
    pub(crate) const DELIVER: u8 = 2;
    /// A frame dropped: dt, seq, node, from, reason, [to] (strings inline:
    /// drops are rare).
    pub(crate) const DROP: u8 = 3;
    /// Any other event: dt, then the JSON line without its `t_us` (it
    /// starts with `{"node":`), length first.
    pub(crate) const JSON: u8 = 4;
    /// A block of strings for a slot: slot, block kind, count, strings.
    pub(crate) const DEF: u8 = 5;
    /// Written by the writer: a clock reading and the wall-clock time it
    /// stands for (two u64, little-endian). Records between two of them
    /// were stamped between the two readings.
    pub(crate) const CLOCK: u8 = 6;
    /// Written by the writer: the stamp the next `dt` is counted from
    /// (u64, little-endian).
    pub(crate) const BASE: u8 = 7;
    /// Written by the writer: a JSON line with its own time (`t_us`, then
    /// the line without it, as `JSON`), e.g. how many lines were dropped.
    pub(crate) const NOTE_AT: u8 = 8;
    /// Written by the writer at the start of a file: the last `seq` a
    /// slot's records had (slot, seq), for the `NEXT` records that follow.
    pub(crate) const LAST_SEQ: u8 = 9;
    /// Flag: the first optional field is there (send's lamport; drop's `to`).
    pub(crate) const OPT_A: u8 = 0x10;
    /// Flag: the second optional field is there (send's cause).
    pub(crate) const OPT_B: u8 = 0x20;
    /// Flag (send): the lamport stamp equals `seq` (as on real nodes).
    pub(crate) const LAMPORT_IS_SEQ: u8 = 0x40;
    /// Flag (send, delivery): `seq` is one more than the last `seq` of a
    /// record in the same slot (0 after its definition), and is not
    /// written. A node's Lamport stamps rise by one per frame it sends,
    /// so most frames to or from a peer follow the previous one.
    pub(crate) const NEXT: u8 = 0x80;
}

/// Block slots kept by the encoder (and mirrored by decoders).
pub(super) const SLOTS: usize = 64;

/// A send's block: node, to, kind, tag, [cause node]. Its records are
/// `SEND`s; a delivery's block's are `DELIVER`s. Each slot also keeps the
/// `seq` of its last record (see `tag::NEXT`).
const SEND_BLOCK: u8 = 1;
/// A delivery's block: node, from.
const DELIVER_BLOCK: u8 = 2;

#[inline]
pub(super) fn put_varint(buf: &mut Vec<u8>, mut v: u64) {
    while v >= 0x80 {
        buf.push(v as u8 | 0x80);
        v >>= 7;
    }
    buf.push(v as u8);
}

#[inline]
fn zigzag(v: i64) -> u64 {
    ((v << 1) ^ (v >> 63)) as u64
}

#[inline]
fn unzigzag(v: u64) -> i64 {
    (v >> 1) as i64 ^ -((v & 1) as i64)
}

#[inline]
fn put_str(buf: &mut Vec<u8>, s: &str) {
    put_varint(buf, s.len() as u64);
    buf.extend_from_slice(s.as_bytes());
}

/// A slot's key: block kind, count, then each string (length first).
fn put_key(key: &mut Vec<u8>, kind: u8, strs: &[&str]) {
    key.clear();
    key.push(kind);
    key.push(strs.len() as u8);
    for s in strs {
        put_str(key, s);
    }
}

/// `a == b` for slices of equal length, compared a word at a time in
/// line (the strings of a frame are a few bytes: a `memcmp` call per
/// string cost more than the comparison).
#[inline(always)]
fn same_bytes(a: &[u8], b: &[u8]) -> bool {
    debug_assert_eq!(a.len(), b.len());
    let n = a.len();
    let word = |s: &[u8], i: usize| u64::from_ne_bytes(s[i..i + 8].try_into().unwrap_or([0; 8]));
    let half = |s: &[u8], i: usize| u32::from_ne_bytes(s[i..i + 4].try_into().unwrap_or([0; 4]));
    if n >= 8 {
        let mut i = 0;
        while i + 8 <= n {
            if word(a, i) != word(b, i) {
                return false;
            }
            i += 8;
        }
        // The last word, overlapping the ones compared.
        word(a, n - 8) == word(b, n - 8)
    } else if n >= 4 {
        half(a, 0) == half(b, 0) && half(a, n - 4) == half(b, n - 4)
    } else {
        (0..n).all(|i| a[i] == b[i])
    }
}

/// True when `key` is the key of (`kind`, `strs`).
#[inline]
fn key_is(key: &[u8], kind: u8, strs: &[&str]) -> bool {
    let [k, n, tail @ ..] = key else {
        return false;
    };
    let mut rest: &[u8] = tail;
    if *k != kind || usize::from(*n) != strs.len() {
        return false;
    }
    for s in strs {
        let len = s.len();
        let head = if len < 0x80 {
            match rest.split_first() {
                Some((&l, tail)) if usize::from(l) == len => tail,
                _ => return false,
            }
        } else {
            let mut r = Reader::new(rest);
            match r.varint() {
                Ok(l) if l == len as u64 => r.rest(),
                _ => return false,
            }
        };
        if head.len() < len || !same_bytes(&head[..len], s.as_bytes()) {
            return false;
        }
        rest = &head[len..];
    }
    rest.is_empty()
}

/// The slot a block hashes to.
#[inline]
fn slot_of(kind: u8, strs: &[&str]) -> usize {
    const K: u64 = 0x517c_c1b7_2722_0a95;
    let mut h = u64::from(kind);
    for s in strs {
        for c in s.as_bytes().chunks(8) {
            let mut w = [0u8; 8];
            w[..c.len()].copy_from_slice(c);
            h = (h.rotate_left(5) ^ u64::from_le_bytes(w)).wrapping_mul(K);
        }
        h = (h.rotate_left(5) ^ s.len() as u64).wrapping_mul(K);
    }
    (h >> 58) as usize % SLOTS
}

/// Writes records (see the module docs). One per stream: its slots and its
/// last stamp are the state a decoder mirrors.
pub(super) struct Encoder {
    last_raw: u64,
    slots: Vec<Vec<u8>>,
    /// Each slot's last record's `seq` (see `tag::NEXT`).
    last_seq: Vec<u64>,
    /// Each slot's definition number (from `DEFINITIONS`; 0: empty).
    defined: Vec<u64>,
    /// The slot the last send / delivery used (checked first).
    mru: [usize; 2],
    /// Slots defined since the last [`Self::sync_into`].
    dirty: u64,
}

impl Default for Encoder {
    fn default() -> Self {
        Self {
            last_raw: 0,
            slots: vec![Vec::new(); SLOTS],
            last_seq: vec![0; SLOTS],
            defined: vec![0; SLOTS],
            mru: [0; 2],
            dirty: 0,
        }
    }
}

impl Encoder {
    /// Bring `mirror` (a decoder that has read everything this encoder
    /// wrote up to its last sync) to this encoder's state, without reading
    /// the records written since: the slots defined meanwhile and the last
    /// stamp.
    pub(super) fn sync_into(&mut self, mirror: &mut Decoder) {
        mirror.last_raw = self.last_raw;
        while self.dirty != 0 {
            let i = self.dirty.trailing_zeros() as usize;
            self.dirty &= self.dirty - 1;
            mirror.define(i, &self.slots[i]);
        }
        for (block, &seq) in mirror.slots.iter_mut().zip(&self.last_seq) {
            block.last_seq = seq;
        }
    }

    /// The most bytes [`Self::frame`] appends for this event.
    #[inline]
    pub(super) fn frame_bound(node: &str, event: &FrameEvent<'_>) -> usize {
        let strs = match *event {
            FrameEvent::Send {
                to,
                kind,
                tag,
                cause,
                ..
            } => node.len() + to.len() + kind.len() + tag.len() + cause.map_or(0, |(n, _)| n.len()),
            FrameEvent::Deliver { from, .. } => node.len() + from.len(),
            FrameEvent::Drop {
                from, to, reason, ..
            } => node.len() + from.len() + reason.len() + to.map_or(0, str::len),
        };
        // Tags, slot bytes, six varints and five string lengths at most.
        96 + strs
    }

    /// The most bytes [`Self::delivered`] appends for `count` deliveries.
    #[inline]
    pub(super) fn delivered_bound(node: &str, from: &str, count: usize) -> usize {
        // A block definition, then per delivery a tag, two varints and a
        // slot byte.
        96 + node.len() + from.len() + 22 * count
    }

    /// The most bytes [`Self::json`] appends for a line of `len` bytes.
    pub(super) fn json_bound(len: usize) -> usize {
        24 + len
    }

    #[inline]
    fn dt(&mut self, buf: &mut Vec<u8>, raw: u64) {
        let d = raw.wrapping_sub(self.last_raw) as i64;
        self.last_raw = raw;
        put_varint(buf, zigzag(d));
    }

    /// The slot holding (`kind`, `strs`), defined first (a `DEF` record in
    /// `buf`) when it does not hold it yet.
    #[inline]
    fn slot(&mut self, buf: &mut Vec<u8>, kind: u8, strs: &[&str]) -> u8 {
        let m = self.mru[usize::from(kind - 1)];
        if key_is(&self.slots[m], kind, strs) {
            return m as u8;
        }
        let s = slot_of(kind, strs);
        if !key_is(&self.slots[s], kind, strs) {
            put_key(&mut self.slots[s], kind, strs);
            self.last_seq[s] = 0;
            self.defined[s] = DEFINITIONS.fetch_add(1, Ordering::Relaxed);
            self.dirty |= 1 << s;
            buf.push(tag::DEF);
            buf.push(s as u8);
            buf.extend_from_slice(&self.slots[s]);
        }
        self.mru[usize::from(kind - 1)] = s;
        s as u8
    }

    /// The slot of a send block (`strs`), found through `hint` while the
    /// definition it names stands, else looked up (and left in `hint`).
    /// A hint of 0 names nothing (an empty slot's definition number is 0).
    #[inline]
    fn send_slot_hinted(&mut self, buf: &mut Vec<u8>, hint: &AtomicU64, strs: &[&str]) -> u8 {
        let h = hint.load(Ordering::Relaxed);
        let s = (h & 0xff) as usize;
        if h != 0 && s < SLOTS && self.defined[s] == h >> 8 {
            return s as u8;
        }
        let s = self.slot(buf, SEND_BLOCK, strs);
        hint.store(
            self.defined[usize::from(s)] << 8 | u64::from(s),
            Ordering::Relaxed,
        );
        s
    }

    /// Append `event` at `node`, stamped `raw`.
    #[inline]
    pub(super) fn frame(
        &mut self,
        buf: &mut Vec<u8>,
        raw: u64,
        node: &str,
        event: &FrameEvent<'_>,
    ) {
        self.frame_hinted(buf, raw, node, event, None);
    }

    /// [`Self::frame`], where a send without a cause finds its block
    /// through `hint` (a slot and its definition number; see
    /// [`super::SlotHint`]) while that definition stands, and leaves the
    /// slot it used there.
    #[inline]
    pub(super) fn frame_hinted(
        &mut self,
        buf: &mut Vec<u8>,
        raw: u64,
        node: &str,
        event: &FrameEvent<'_>,
        hint: Option<&AtomicU64>,
    ) {
        match *event {
            FrameEvent::Send {
                to,
                seq,
                bytes,
                kind,
                tag: mtag,
                lamport,
                cause,
            } => {
                let slot = match (cause, hint) {
                    (None, Some(hint)) => self.send_slot_hinted(buf, hint, &[node, to, kind, mtag]),
                    (None, None) => self.slot(buf, SEND_BLOCK, &[node, to, kind, mtag]),
                    (Some((c, _)), _) => self.slot(buf, SEND_BLOCK, &[node, to, kind, mtag, c]),
                };
                let mut t = tag::SEND;
                match lamport {
                    Some(l) if l == seq => t |= tag::LAMPORT_IS_SEQ,
                    Some(_) => t |= tag::OPT_A,
                    None => {}
                }
                if cause.is_some() {
                    t |= tag::OPT_B;
                }
                let next = self.follows(slot, seq);
                if next {
                    t |= tag::NEXT;
                }
                buf.push(t);
                self.dt(buf, raw);
                if !next {
                    put_varint(buf, seq);
                }
                put_varint(buf, bytes as u64);
                if let Some(l) = lamport.filter(|&l| l != seq) {
                    put_varint(buf, l);
                }
                if let Some((_, s)) = cause {
                    put_varint(buf, s);
                }
                buf.push(slot);
            }
            FrameEvent::Deliver { from, seq } => {
                let slot = self.slot(buf, DELIVER_BLOCK, &[node, from]);
                self.deliver(buf, raw, slot, seq);
            }
            FrameEvent::Drop {
                from,
                to,
                seq,
                reason,
            } => {
                buf.push(tag::DROP | if to.is_some() { tag::OPT_A } else { 0 });
                self.dt(buf, raw);
                put_varint(buf, seq);
                put_str(buf, node);
                put_str(buf, from);
                put_str(buf, reason);
                if let Some(to) = to {
                    put_str(buf, to);
                }
            }
        }
    }

    /// Append the deliveries at `node` of the frames stamped `seqs` from
    /// `from`, all stamped `raw` (the same records as [`Self::frame`]'s, the
    /// block looked up once).
    #[inline]
    pub(super) fn delivered(
        &mut self,
        buf: &mut Vec<u8>,
        raw: u64,
        node: &str,
        from: &str,
        seqs: &[u64],
    ) {
        let slot = self.slot(buf, DELIVER_BLOCK, &[node, from]);
        for &seq in seqs {
            self.deliver(buf, raw, slot, seq);
        }
    }

    /// A `DELIVER` record in `slot`.
    #[inline]
    fn deliver(&mut self, buf: &mut Vec<u8>, raw: u64, slot: u8, seq: u64) {
        let next = self.follows(slot, seq);
        buf.push(tag::DELIVER | if next { tag::NEXT } else { 0 });
        self.dt(buf, raw);
        if !next {
            put_varint(buf, seq);
        }
        buf.push(slot);
    }

    /// True when `seq` is one more than `slot`'s last (then it need not be
    /// written); it becomes the slot's last either way.
    #[inline]
    fn follows(&mut self, slot: u8, seq: u64) -> bool {
        let last = &mut self.last_seq[usize::from(slot)];
        let next = seq == last.wrapping_add(1);
        *last = seq;
        next
    }

    /// Append an event already written as JSON (`{"node":…}`, no `t_us`).
    pub(super) fn json(&mut self, buf: &mut Vec<u8>, raw: u64, json: &[u8]) {
        buf.push(tag::JSON);
        self.dt(buf, raw);
        put_varint(buf, json.len() as u64);
        buf.extend_from_slice(json);
    }
}

/// A malformed record stream.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DecodeError {
    /// Byte offset of the record (from the start of what was decoded).
    pub offset: usize,
    /// What is wrong.
    pub what: &'static str,
}

impl std::fmt::Display for DecodeError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "byte {}: {}", self.offset, self.what)
    }
}

/// Reads a record's fields.
pub(super) struct Reader<'a> {
    buf: &'a [u8],
}

impl<'a> Reader<'a> {
    pub(super) fn new(buf: &'a [u8]) -> Self {
        Self { buf }
    }

    pub(super) fn rest(&self) -> &'a [u8] {
        self.buf
    }

    #[inline]
    pub(super) fn u8(&mut self) -> Result<u8, &'static str> {
        let (&b, rest) = self.buf.split_first().ok_or("truncated record")?;
        self.buf = rest;
        Ok(b)
    }

    #[inline]
    pub(super) fn u64_le(&mut self) -> Result<u64, &'static str> {
        let (head, rest) = self
            .buf
            .split_first_chunk::<8>()
            .ok_or("truncated record")?;
        self.buf = rest;
        Ok(u64::from_le_bytes(*head))
    }

    #[inline]
    pub(super) fn varint(&mut self) -> Result<u64, &'static str> {
        let mut v = 0u64;
        for shift in (0..64).step_by(7) {
            let b = self.u8()?;
            v |= u64::from(b & 0x7f) << shift;
            if b < 0x80 {
                return Ok(v);
            }
        }
        Err("varint longer than 64 bits")
    }

    #[inline]
    pub(super) fn bytes(&mut self) -> Result<&'a [u8], &'static str> {
        let len = usize::try_from(self.varint()?).map_err(|_| "length too large")?;
        if self.buf.len() < len {
            return Err("truncated record");
        }
        let (s, rest) = self.buf.split_at(len);
        self.buf = rest;
        Ok(s)
    }

    #[inline]
    pub(super) fn str(&mut self) -> Result<&'a str, &'static str> {
        std::str::from_utf8(self.bytes()?).map_err(|_| "string is not UTF-8")
    }
}

/// One decoded record.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Rec<'a> {
    Send {
        raw: u64,
        seq: u64,
        bytes: u64,
        lamport: Option<u64>,
        cause_seq: Option<u64>,
        slot: u8,
    },
    Deliver {
        raw: u64,
        seq: u64,
        slot: u8,
    },
    Drop {
        raw: u64,
        seq: u64,
        node: &'a str,
        from: &'a str,
        reason: &'a str,
        to: Option<&'a str>,
    },
    /// `json` is `{"node":…}` without the time.
    Json {
        raw: u64,
        json: &'a [u8],
    },
    /// A slot was (re)defined.
    Def {
        slot: u8,
    },
    Clock(Pair),
    Base,
    /// A slot's last `seq` was restated.
    LastSeq,
    NoteAt {
        t_us: u64,
        json: &'a [u8],
    },
}

/// A slot's block as decoded.
#[derive(Debug, Clone, Default)]
pub(super) struct Block {
    /// The key as written (for re-defining the slot in a new file).
    pub(super) key: Vec<u8>,
    /// Send or delivery block.
    pub(super) kind: u8,
    pub(super) strs: Vec<String>,
    /// Bumped on every definition (formatters cache per generation).
    pub(super) generation: u64,
    /// The `seq` of the slot's last record (see `tag::NEXT`).
    pub(super) last_seq: u64,
}

impl Block {
    /// A send block's strings: node, to, kind, tag, cause node.
    pub(super) fn send(&self) -> Option<(&str, &str, &str, &str, Option<&str>)> {
        match (self.kind, self.strs.as_slice()) {
            (SEND_BLOCK, [n, t, k, g]) => Some((n, t, k, g, None)),
            (SEND_BLOCK, [n, t, k, g, c]) => Some((n, t, k, g, Some(c))),
            _ => None,
        }
    }

    /// A delivery block's strings: node, from.
    pub(super) fn deliver(&self) -> Option<(&str, &str)> {
        match (self.kind, self.strs.as_slice()) {
            (DELIVER_BLOCK, [n, f]) => Some((n, f)),
            _ => None,
        }
    }
}

/// Mirrors an [`Encoder`]'s state while reading its records.
#[derive(Clone)]
pub(super) struct Decoder {
    pub(super) last_raw: u64,
    pub(super) slots: Vec<Block>,
    generation: u64,
}

impl Default for Decoder {
    fn default() -> Self {
        Self {
            last_raw: 0,
            slots: vec![Block::default(); SLOTS],
            generation: 0,
        }
    }
}

impl Decoder {
    #[inline]
    fn raw(&mut self, r: &mut Reader<'_>) -> Result<u64, &'static str> {
        let d = unzigzag(r.varint()?);
        self.last_raw = self.last_raw.wrapping_add(d as u64);
        Ok(self.last_raw)
    }

    /// Decode the record at the start of `buf`; returns it and its length.
    /// `offset` (of `buf` in the stream) is only for the error.
    #[inline]
    pub(super) fn next<'a>(
        &mut self,
        buf: &'a [u8],
        offset: usize,
    ) -> Result<(Rec<'a>, usize), DecodeError> {
        let mut r = Reader::new(buf);
        let rec = self
            .decode(&mut r)
            .map_err(|what| DecodeError { offset, what })?;
        Ok((rec, buf.len() - r.buf.len()))
    }

    #[inline]
    fn decode<'a>(&mut self, r: &mut Reader<'a>) -> Result<Rec<'a>, &'static str> {
        let t = r.u8()?;
        Ok(match t & 0x0f {
            tag::SEND => {
                let raw = self.raw(r)?;
                let written = if t & tag::NEXT != 0 {
                    None
                } else {
                    Some(r.varint()?)
                };
                let bytes = r.varint()?;
                let lamport = if t & tag::OPT_A != 0 && t & tag::LAMPORT_IS_SEQ == 0 {
                    Some(r.varint()?)
                } else {
                    None
                };
                let cause_seq = if t & tag::OPT_B != 0 {
                    Some(r.varint()?)
                } else {
                    None
                };
                let slot = self.used_slot(r.u8()?, SEND_BLOCK)?;
                let seq = self.seq_in(slot, written);
                let lamport = if t & tag::LAMPORT_IS_SEQ != 0 {
                    Some(seq)
                } else {
                    lamport
                };
                let has_cause = self.slots[usize::from(slot)].strs.len() == 5;
                if has_cause != cause_seq.is_some() {
                    return Err("a send's cause does not match its block");
                }
                Rec::Send {
                    raw,
                    seq,
                    bytes,
                    lamport,
                    cause_seq,
                    slot,
                }
            }
            tag::DELIVER => {
                let raw = self.raw(r)?;
                let written = if t & tag::NEXT != 0 {
                    None
                } else {
                    Some(r.varint()?)
                };
                let slot = self.used_slot(r.u8()?, DELIVER_BLOCK)?;
                let seq = self.seq_in(slot, written);
                Rec::Deliver { raw, seq, slot }
            }
            tag::LAST_SEQ => {
                let slot = r.u8()?;
                let seq = r.varint()?;
                match self.slots.get_mut(usize::from(slot)) {
                    Some(b) if !b.key.is_empty() => b.last_seq = seq,
                    Some(_) => return Err("a record names a slot not defined for it"),
                    None => return Err("slot out of range"),
                }
                Rec::LastSeq
            }
            tag::DROP => Rec::Drop {
                raw: self.raw(r)?,
                seq: r.varint()?,
                node: r.str()?,
                from: r.str()?,
                reason: r.str()?,
                to: if t & tag::OPT_A != 0 {
                    Some(r.str()?)
                } else {
                    None
                },
            },
            tag::JSON => Rec::Json {
                raw: self.raw(r)?,
                json: r.bytes()?,
            },
            tag::DEF => {
                let slot = r.u8()?;
                if usize::from(slot) >= SLOTS {
                    return Err("slot out of range");
                }
                let start = r.rest();
                let (kind, strs) = parse_key(r)?;
                let key = &start[..start.len() - r.rest().len()];
                self.install(usize::from(slot), key, kind, strs);
                Rec::Def { slot }
            }
            tag::CLOCK => Rec::Clock(Pair {
                raw: r.u64_le()?,
                wall_ns: r.u64_le()?,
            }),
            tag::BASE => {
                self.last_raw = r.u64_le()?;
                Rec::Base
            }
            tag::NOTE_AT => Rec::NoteAt {
                t_us: r.varint()?,
                json: r.bytes()?,
            },
            _ => return Err("unknown record tag"),
        })
    }

    /// Define `slot` from its key (as the encoder keeps it); false when the
    /// key does not parse.
    fn define(&mut self, slot: usize, key: &[u8]) -> bool {
        match parse_key(&mut Reader::new(key)) {
            Ok((kind, strs)) => {
                self.install(slot, key, kind, strs);
                true
            }
            Err(_) => false,
        }
    }

    /// Put a parsed block in `slot`.
    fn install(&mut self, slot: usize, key: &[u8], kind: u8, strs: Vec<String>) {
        self.generation += 1;
        self.slots[slot] = Block {
            key: key.to_vec(),
            kind,
            strs,
            generation: self.generation,
            last_seq: 0,
        };
    }

    /// The `seq` of a record in `slot`: as `written`, or (not written)
    /// one more than the slot's last; it becomes the slot's last.
    #[inline]
    fn seq_in(&mut self, slot: u8, written: Option<u64>) -> u64 {
        let last = &mut self.slots[usize::from(slot)].last_seq;
        let seq = written.unwrap_or_else(|| last.wrapping_add(1));
        *last = seq;
        seq
    }

    fn used_slot(&self, slot: u8, kind: u8) -> Result<u8, &'static str> {
        match self.slots.get(usize::from(slot)) {
            Some(b) if b.kind == kind => Ok(slot),
            Some(_) => Err("a record names a slot not defined for it"),
            None => Err("slot out of range"),
        }
    }

    /// Records that give a fresh decoder this one's state: `BASE`, and a
    /// `DEF` per defined slot with its `LAST_SEQ` (the start of a new file).
    pub(super) fn restate(&self, buf: &mut Vec<u8>) {
        buf.push(tag::BASE);
        buf.extend_from_slice(&self.last_raw.to_le_bytes());
        for (i, b) in self.slots.iter().enumerate() {
            if !b.key.is_empty() {
                buf.push(tag::DEF);
                buf.push(i as u8);
                buf.extend_from_slice(&b.key);
                if b.last_seq != 0 {
                    buf.push(tag::LAST_SEQ);
                    buf.push(i as u8);
                    put_varint(buf, b.last_seq);
                }
            }
        }
    }
}

/// A slot's key (see [`put_key`]): its block kind and strings, checked.
fn parse_key(r: &mut Reader<'_>) -> Result<(u8, Vec<String>), &'static str> {
    let kind = r.u8()?;
    let n = r.u8()?;
    let want = match kind {
        SEND_BLOCK => 4..=5,
        DELIVER_BLOCK => 2..=2,
        _ => return Err("unknown block kind"),
    };
    if !want.contains(&n) {
        return Err("wrong number of strings in a block");
    }
    let strs = (0..n)
        .map(|_| r.str().map(str::to_string))
        .collect::<Result<_, _>>()?;
    Ok((kind, strs))
}

/// A `CLOCK` record.
pub(super) fn put_clock(buf: &mut Vec<u8>, p: Pair) {
    buf.push(tag::CLOCK);
    buf.extend_from_slice(&p.raw.to_le_bytes());
    buf.extend_from_slice(&p.wall_ns.to_le_bytes());
}

/// A `NOTE_AT` record.
pub(super) fn put_note_at(buf: &mut Vec<u8>, t_us: u64, json: &[u8]) {
    buf.push(tag::NOTE_AT);
    put_varint(buf, t_us);
    put_varint(buf, json.len() as u64);
    buf.extend_from_slice(json);
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn same_bytes_is_slice_equality() {
        let text = b"abcdefghijklmnopqrstuvwxyz0123456789";
        for n in 0..=text.len() {
            let a = &text[..n];
            assert!(same_bytes(a, a));
            for i in 0..n {
                let mut b = a.to_vec();
                b[i] ^= 1;
                assert!(!same_bytes(a, &b), "{n} {i}");
            }
        }
    }

    #[test]
    fn varints_and_zigzag_round_trip() {
        for v in [
            0,
            1,
            127,
            128,
            300,
            u64::from(u32::MAX),
            u64::MAX - 1,
            u64::MAX,
        ] {
            let mut b = Vec::new();
            put_varint(&mut b, v);
            assert_eq!(Reader::new(&b).varint(), Ok(v));
        }
        for d in [0i64, 1, -1, 63, -64, i64::MAX, i64::MIN] {
            assert_eq!(unzigzag(zigzag(d)), d);
        }
        assert!(Reader::new(&[0xff; 11]).varint().is_err());
    }

    #[test]
    fn frames_decode_as_encoded_with_blocks_defined_once() {
        let long = "x".repeat(300);
        let events = [
            FrameEvent::Send {
                to: "b",
                seq: 7,
                bytes: 96,
                kind: "tell",
                tag: "t.x",
                lamport: Some(7),
                cause: None,
            },
            FrameEvent::Send {
                to: "b",
                seq: 8,
                bytes: 96,
                kind: "tell",
                tag: "t.x",
                lamport: Some(3),
                cause: Some(("c", 2)),
            },
            FrameEvent::Send {
                to: &long,
                seq: u64::MAX,
                bytes: usize::MAX,
                kind: "ask",
                tag: &long,
                lamport: None,
                cause: None,
            },
            FrameEvent::Deliver { from: "b", seq: 1 },
            FrameEvent::Deliver { from: "b", seq: 2 },
            FrameEvent::Drop {
                from: "a",
                to: Some("b"),
                seq: 4,
                reason: "full",
            },
        ];
        let mut enc = Encoder::default();
        let mut buf = Vec::new();
        let stamps = [100u64, 90, 5_000, 5_001, u64::MAX, 3];
        for (e, &raw) in events.iter().zip(&stamps) {
            let before = buf.len();
            enc.frame(&mut buf, raw, "a", e);
            assert!(buf.len() - before <= Encoder::frame_bound("a", e));
        }
        enc.json(&mut buf, 9, b"{\"node\":\"a\"}");
        let mut dec = Decoder::default();
        let (mut pos, mut defs, mut got) = (0, 0, Vec::new());
        while pos < buf.len() {
            let (rec, len) = dec.next(&buf[pos..], pos).unwrap();
            pos += len;
            match rec {
                Rec::Def { .. } => defs += 1,
                Rec::Send {
                    raw,
                    seq,
                    bytes,
                    lamport,
                    cause_seq,
                    slot,
                } => {
                    let (n, to, k, t, c) = dec.slots[usize::from(slot)].send().unwrap();
                    got.push(format!(
                        "{raw} send {n} {to} {k} {t} {seq} {bytes} {lamport:?} {c:?} {cause_seq:?}"
                    ));
                }
                Rec::Deliver { raw, seq, slot } => {
                    let (n, f) = dec.slots[usize::from(slot)].deliver().unwrap();
                    got.push(format!("{raw} deliver {n} {f} {seq}"));
                }
                Rec::Drop {
                    raw,
                    seq,
                    node,
                    from,
                    reason,
                    to,
                } => got.push(format!("{raw} drop {node} {from} {to:?} {seq} {reason}")),
                Rec::Json { raw, json } => {
                    got.push(format!("{raw} {}", String::from_utf8_lossy(json)))
                }
                other => panic!("{other:?}"),
            }
        }
        // Four blocks: the two sends' (with and without a cause), the long
        // one, the delivery's; the second delivery reuses its block.
        assert_eq!(defs, 4);
        assert_eq!(
            got,
            [
                "100 send a b tell t.x 7 96 Some(7) None None".to_string(),
                "90 send a b tell t.x 8 96 Some(3) Some(\"c\") Some(2)".into(),
                format!(
                    "5000 send a {long} ask {long} {} {} None None None",
                    u64::MAX,
                    usize::MAX
                ),
                "5001 deliver a b 1".into(),
                format!("{} deliver a b 2", u64::MAX),
                "3 drop a a Some(\"b\") 4 full".into(),
                "9 {\"node\":\"a\"}".into(),
            ]
        );
        // Every cut of the stream is an error or a shorter stream, never a
        // panic; a foreign byte is named.
        for cut in 0..buf.len() {
            let mut dec = Decoder::default();
            let mut pos = 0;
            while pos < cut {
                match dec.next(&buf[pos..cut], pos) {
                    Ok((_, len)) => pos += len,
                    Err(e) => {
                        assert_eq!(e.offset, pos);
                        break;
                    }
                }
            }
        }
        let e = Decoder::default().next(&[0x0e], 0).unwrap_err();
        assert_eq!(e.what, "unknown record tag");
    }

    #[test]
    fn a_restated_decoder_reads_the_rest_of_the_stream() {
        let mut enc = Encoder::default();
        let mut buf = Vec::new();
        for (i, peer) in ["p1", "p2", "p1", "p3"].iter().enumerate() {
            enc.frame(
                &mut buf,
                1000 + i as u64,
                "n",
                &FrameEvent::Deliver {
                    from: peer,
                    seq: i as u64,
                },
            );
        }
        let split = buf.len();
        let before = buf.len();
        // p1's last was 2: 3 follows it (not written, restated for the
        // second decoder by `LAST_SEQ`).
        enc.frame(
            &mut buf,
            1010,
            "n",
            &FrameEvent::Deliver { from: "p1", seq: 3 },
        );
        assert_eq!(
            buf.len() - before,
            3,
            "tag, dt, slot: the seq is not written"
        );
        enc.frame(
            &mut buf,
            2000,
            "n",
            &FrameEvent::Deliver { from: "p2", seq: 9 },
        );
        let mut first = Decoder::default();
        let mut pos = 0;
        while pos < split {
            pos += first.next(&buf[pos..], pos).unwrap().1;
        }
        let mut fresh = Vec::new();
        first.restate(&mut fresh);
        fresh.extend_from_slice(&buf[split..]);
        let mut second = Decoder::default();
        let mut pos = 0;
        let mut got = Vec::new();
        while pos < fresh.len() {
            let (rec, len) = second.next(&fresh[pos..], pos).unwrap();
            pos += len;
            if let Rec::Deliver { raw, seq, slot } = rec {
                got.push((
                    raw,
                    seq,
                    second.slots[usize::from(slot)]
                        .deliver()
                        .unwrap()
                        .1
                        .to_string(),
                ));
            }
        }
        assert_eq!(
            got,
            [(1010, 3, "p1".to_string()), (2000, 9, "p2".to_string())]
        );
    }
}
