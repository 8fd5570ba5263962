//! JSON lines for trace events, written without serde on the writer's hot
//! path: byte for byte what serde writes for the same [`super::TraceEvent`].

use super::clock::Span;
use super::record::{Block, Decoder, Rec, SLOTS};
use super::{FrameEvent, WRITE_CHUNK};

/// Bytes an [`Out`] keeps free past every piece, so that a short piece
/// (padded to this size) is copied with one fixed-size move.
const SLACK: usize = 64;

/// The writer's JSON, written through a cursor into zeroed room (which
/// spares it a `memcpy` call and a capacity check per piece).
pub(super) struct Out {
    buf: Vec<u8>,
    pub(super) pos: usize,
}

impl Out {
    pub(super) fn new() -> Self {
        Self {
            buf: vec![0; WRITE_CHUNK + (8 << 10)],
            pos: 0,
        }
    }

    /// What was written.
    pub(super) fn text(&self) -> &[u8] {
        &self.buf[..self.pos]
    }

    /// Make room for `n` more bytes (and the slack).
    #[inline]
    fn room(&mut self, n: usize) {
        if self.pos + n + SLACK > self.buf.len() {
            self.buf.resize(self.pos + n + SLACK, 0);
        }
    }

    #[inline]
    fn lit<const N: usize>(&mut self, s: &[u8; N]) {
        self.buf[self.pos..self.pos + N].copy_from_slice(s);
        self.pos += N;
    }

    /// The first `p.len` bytes of a [`Padded`] piece.
    #[inline]
    fn piece(&mut self, p: &Padded) {
        if p.len <= SLACK {
            // Its padding lands past the cursor, to be overwritten.
            self.buf[self.pos..self.pos + SLACK].copy_from_slice(&p.bytes[..SLACK]);
        } else {
            self.buf[self.pos..self.pos + p.len].copy_from_slice(&p.bytes[..p.len]);
        }
        self.pos += p.len;
    }

    /// Any bytes (room made here).
    pub(super) fn bytes(&mut self, b: &[u8]) {
        self.room(b.len());
        self.buf[self.pos..self.pos + b.len()].copy_from_slice(b);
        self.pos += b.len();
    }

    /// `v` in decimal (room for 20 digits must have been made).
    #[inline]
    fn num(&mut self, mut v: u64) {
        let n = v.checked_ilog10().unwrap_or(0) as usize + 1;
        let digits = &mut self.buf[self.pos..self.pos + n];
        let mut i = n;
        while v >= 100 {
            let d = (v % 100) as usize * 2;
            v /= 100;
            i -= 2;
            digits[i..i + 2].copy_from_slice(&DIGIT_PAIRS[d..d + 2]);
        }
        if v >= 10 {
            let d = v as usize * 2;
            digits[..2].copy_from_slice(&DIGIT_PAIRS[d..d + 2]);
        } else {
            digits[0] = b'0' + v as u8;
        }
        self.pos += n;
    }
}

/// A piece of a line, followed by at least [`SLACK`] bytes of padding.
#[derive(Default)]
struct Padded {
    bytes: Vec<u8>,
    len: usize,
}

impl Padded {
    /// Build the piece with `f`.
    fn set(&mut self, f: impl FnOnce(&mut Vec<u8>)) {
        self.bytes.clear();
        f(&mut self.bytes);
        self.len = self.bytes.len();
        self.bytes.resize(self.len + SLACK, 0);
    }
}

/// The constant parts of the JSON lines of the sends, or deliveries, of one
/// block slot (see [`super::record`]): the strings are escaped once per
/// block, not once per line.
#[derive(Default)]
struct Template {
    /// The [`Block::generation`] it was made from (0: none yet).
    generation: u64,
    /// Send: `,"node":…,"ev":"send","to":…,"seq":`; deliver:
    /// `,"node":…,"ev":"deliver","from":…,"seq":`.
    head: Padded,
    /// Send: `,"kind":…,"tag":…`.
    mid: Padded,
    /// Send with a cause: `,"cause":[…,` (else empty).
    cause: Padded,
}

impl Template {
    /// Make this the template of `block` (`None`: not a block of its kind).
    fn make(&mut self, block: &Block) -> Option<()> {
        if let Some((node, to, kind, tag, cause)) = block.send() {
            self.head.set(|b| {
                b.extend_from_slice(b",\"node\":");
                write_json_str(b, node);
                b.extend_from_slice(b",\"ev\":\"send\",\"to\":");
                write_json_str(b, to);
                b.extend_from_slice(b",\"seq\":");
            });
            self.mid.set(|b| {
                b.extend_from_slice(b",\"kind\":");
                write_json_str(b, kind);
                b.extend_from_slice(b",\"tag\":");
                write_json_str(b, tag);
            });
            self.cause.set(|b| {
                if let Some(c) = cause {
                    b.extend_from_slice(b",\"cause\":[");
                    write_json_str(b, c);
                    b.push(b',');
                }
            });
        } else {
            let (node, from) = block.deliver()?;
            self.head.set(|b| {
                b.extend_from_slice(b",\"node\":");
                write_json_str(b, node);
                b.extend_from_slice(b",\"ev\":\"deliver\",\"from\":");
                write_json_str(b, from);
                b.extend_from_slice(b",\"seq\":");
            });
        }
        self.generation = block.generation;
        Some(())
    }
}

/// Turns decoded records into JSON lines, keeping a [`Template`] per slot.
pub(super) struct Formatter {
    templates: Vec<Template>,
    /// `t_us / 10_000` of the last line, and its digits: the time's leading
    /// digits change every 10 ms only.
    t_high: u64,
    t_high_digits: Padded,
    /// For the lines not written through templates.
    scratch: Vec<u8>,
}

impl Default for Formatter {
    fn default() -> Self {
        Self {
            templates: (0..SLOTS).map(|_| Template::default()).collect(),
            t_high: 0,
            t_high_digits: Padded::default(),
            scratch: Vec::new(),
        }
    }
}

impl Formatter {
    /// `{"t_us":T` (room for 20 + 8 bytes must have been made).
    #[inline]
    fn time(&mut self, out: &mut Out, t_us: u64) {
        out.lit(b"{\"t_us\":");
        let high = t_us / 10_000;
        if high == 0 {
            out.num(t_us);
            return;
        }
        if high != self.t_high || self.t_high_digits.len == 0 {
            self.t_high = high;
            self.t_high_digits.set(|b| write_u64(b, high));
        }
        out.piece(&self.t_high_digits);
        let low = (t_us % 10_000) as usize;
        out.lit(&[
            DIGIT_PAIRS[low / 100 * 2],
            DIGIT_PAIRS[low / 100 * 2 + 1],
            DIGIT_PAIRS[low % 100 * 2],
            DIGIT_PAIRS[low % 100 * 2 + 1],
        ]);
    }

    /// The template of `slot`, made anew if its block changed.
    #[inline]
    fn template(&mut self, slot: u8, dec: &Decoder) -> Option<&Template> {
        let block = dec.slots.get(usize::from(slot))?;
        let t = self.templates.get_mut(usize::from(slot))?;
        if t.generation != block.generation {
            t.make(block)?;
        }
        Some(t)
    }

    /// Write `rec` (decoded by `dec`) as a JSON line with its newline at
    /// the end of `out`, its time mapped through `span`. Records that are
    /// not events (definitions, clock readings) write nothing.
    pub(super) fn record(&mut self, rec: &Rec<'_>, dec: &Decoder, span: &Span, out: &mut Out) {
        match *rec {
            Rec::Send {
                raw,
                seq,
                bytes,
                lamport,
                cause_seq,
                slot,
            } => {
                let t_us = span.micros(raw);
                let Some(t) = self.template(slot, dec) else {
                    return;
                };
                // Time, 4 numbers and the literals: under 256 bytes.
                out.room(t.head.len + t.mid.len + t.cause.len + 256);
                self.time(out, t_us);
                let t = &self.templates[usize::from(slot)];
                out.piece(&t.head);
                out.num(seq);
                out.lit(b",\"bytes\":");
                out.num(bytes);
                out.piece(&t.mid);
                if let Some(l) = lamport {
                    out.lit(b",\"lamport\":");
                    out.num(l);
                }
                if let Some(s) = cause_seq {
                    out.piece(&t.cause);
                    out.num(s);
                    out.lit(b"]");
                }
                out.lit(b"}\n");
            }
            Rec::Deliver { raw, seq, slot } => {
                let t_us = span.micros(raw);
                let Some(t) = self.template(slot, dec) else {
                    return;
                };
                out.room(t.head.len + 128);
                self.time(out, t_us);
                out.piece(&self.templates[usize::from(slot)].head);
                out.num(seq);
                out.lit(b"}\n");
            }
            Rec::Drop {
                raw,
                seq,
                node,
                from,
                reason,
                to,
            } => {
                let event = FrameEvent::Drop {
                    from,
                    to,
                    seq,
                    reason,
                };
                self.scratch.clear();
                write_frame_line(&mut self.scratch, span.micros(raw), node, &event);
                self.scratch.push(b'\n');
                out.bytes(&self.scratch);
            }
            Rec::Json { raw, json } => self.json(out, span.micros(raw), json),
            Rec::NoteAt { t_us, json } => self.json(out, t_us, json),
            Rec::Def { .. } | Rec::Clock(_) | Rec::Base | Rec::LastSeq => {}
        }
    }

    /// `{"t_us":T,` and the rest of a JSON line (`{"node":…}`).
    fn json(&mut self, out: &mut Out, t_us: u64, json: &[u8]) {
        let Some(rest) = json.get(1..) else {
            return;
        };
        out.room(64);
        self.time(out, t_us);
        out.lit(b",");
        out.bytes(rest);
        out.lit(b"\n");
    }
}

/// One frame event as a JSON line (without its newline), the fields in
/// the order serde writes them.
pub(super) fn write_frame_line(buf: &mut Vec<u8>, t_us: u64, node: &str, event: &FrameEvent<'_>) {
    buf.extend_from_slice(b"{\"t_us\":");
    write_u64(buf, t_us);
    buf.extend_from_slice(b",\"node\":");
    write_json_str(buf, node);
    match *event {
        FrameEvent::Send {
            to,
            seq,
            bytes,
            kind,
            tag,
            lamport,
            cause,
        } => {
            buf.extend_from_slice(b",\"ev\":\"send\",\"to\":");
            write_json_str(buf, to);
            buf.extend_from_slice(b",\"seq\":");
            write_u64(buf, seq);
            buf.extend_from_slice(b",\"bytes\":");
            write_u64(buf, bytes as u64);
            buf.extend_from_slice(b",\"kind\":");
            write_json_str(buf, kind);
            buf.extend_from_slice(b",\"tag\":");
            write_json_str(buf, tag);
            if let Some(l) = lamport {
                buf.extend_from_slice(b",\"lamport\":");
                write_u64(buf, l);
            }
            if let Some((n, s)) = cause {
                buf.extend_from_slice(b",\"cause\":[");
                write_json_str(buf, n);
                buf.push(b',');
                write_u64(buf, s);
                buf.push(b']');
            }
        }
        FrameEvent::Deliver { from, seq } => {
            buf.extend_from_slice(b",\"ev\":\"deliver\",\"from\":");
            write_json_str(buf, from);
            buf.extend_from_slice(b",\"seq\":");
            write_u64(buf, seq);
        }
        FrameEvent::Drop {
            from,
            to,
            seq,
            reason,
        } => {
            buf.extend_from_slice(b",\"ev\":\"drop\",\"from\":");
            write_json_str(buf, from);
            if let Some(to) = to {
                buf.extend_from_slice(b",\"to\":");
                write_json_str(buf, to);
            }
            buf.extend_from_slice(b",\"seq\":");
            write_u64(buf, seq);
            buf.extend_from_slice(b",\"reason\":");
            write_json_str(buf, reason);
        }
    }
    buf.push(b'}');
}

/// "00" to "99".
const DIGIT_PAIRS: &[u8; 200] = b"0001020304050607080910111213141516171819\
    2021222324252627282930313233343536373839\
    4041424344454647484950515253545556575859\
    6061626364656667686970717273747576777879\
    8081828384858687888990919293949596979899";

/// `v` in decimal, two digits at a time.
#[inline]
pub(super) fn write_u64(buf: &mut Vec<u8>, mut v: u64) {
    let mut digits = [0u8; 20];
    let mut i = digits.len();
    while v >= 100 {
        let d = (v % 100) as usize * 2;
        v /= 100;
        i -= 2;
        digits[i..i + 2].copy_from_slice(&DIGIT_PAIRS[d..d + 2]);
    }
    if v >= 10 {
        let d = v as usize * 2;
        i -= 2;
        digits[i..i + 2].copy_from_slice(&DIGIT_PAIRS[d..d + 2]);
    } else {
        i -= 1;
        digits[i] = b'0' + v as u8;
    }
    buf.extend_from_slice(&digits[i..]);
}

/// A JSON string: copied as is when nothing in it needs escaping (node
/// names and message tags), else escaped by serde_json.
#[inline]
pub(super) fn write_json_str(buf: &mut Vec<u8>, s: &str) {
    if s.bytes()
        .all(|b| b >= 0x20 && b != b'"' && b != b'\\' && b < 0x7f)
    {
        buf.push(b'"');
        buf.extend_from_slice(s.as_bytes());
        buf.push(b'"');
    } else if serde_json::to_writer(&mut *buf, s).is_err() {
        buf.extend_from_slice(b"\"\"");
    }
}

#[cfg(test)]
pub(super) mod tests {
    use super::*;

    /// Strings that need escaping, or nearly do.
    pub(crate) const TRICKY: &[&str] = &[
        "",
        "plain.tag",
        "odd \"name\"\n\u{e9}",
        "back\\slash",
        "queue full\t\\",
        "\u{0}\u{1}\u{8}\u{b}\u{c}\u{1f} \u{7f}",
        "caf\u{e9} \u{1f980} \u{2028}\u{2029} \u{feff}",
        "</script>",
        "\r\n",
    ];

    #[test]
    fn json_strings_and_numbers_are_written_as_serde_writes_them() {
        let mut extra: Vec<String> = (0u32..0x80)
            .filter_map(char::from_u32)
            .map(|c| format!("a{c}b"))
            .collect();
        extra.extend(TRICKY.iter().map(|s| s.to_string()));
        for s in &extra {
            let mut buf = Vec::new();
            write_json_str(&mut buf, s);
            assert_eq!(
                String::from_utf8(buf).unwrap(),
                serde_json::to_string(s).unwrap()
            );
        }
        let mut values = vec![0, 1, 9, 10, 11, 99, 100, 101, 12345, u64::MAX, u64::MAX - 1];
        for p in 1..20 {
            let x = 10u64.pow(p);
            values.extend([x - 1, x, x + 1]);
        }
        let mut fmt = Formatter::default();
        for v in values {
            let mut buf = Vec::new();
            write_u64(&mut buf, v);
            assert_eq!(String::from_utf8(buf).unwrap(), v.to_string());
            let mut out = Out::new();
            out.num(v);
            out.lit(b" ");
            fmt.time(&mut out, v);
            assert_eq!(
                String::from_utf8(out.text().to_vec()).unwrap(),
                format!("{v} {{\"t_us\":{v}")
            );
        }
    }
}
