//! The binary trace file (`[trace] format = "binary"`), and reading any
//! trace file back as JSON lines.
//!
//! A binary trace is a sequence of *sessions*, each started by a header
//! (a sink opening the file, or a new file after rotation): the 14 bytes
//! `\0troupe-trace\x01` (a JSON-lines file never starts with a NUL byte),
//! then one byte naming the clock its stamps come from (0: wall-clock ns
//! since the Unix epoch, 1: the CPU's time-stamp counter). The records
//! follow (see `record`): a session starts with `BASE` and the
//! `DEF`s of its block slots, so a file reads alone; `CLOCK` records (a
//! counter reading and its wall-clock time) come at least every 50 ms, and
//! the records between two of them are mapped linearly into their
//! interval, as the JSON-lines writer does at write time. Decoding yields
//! byte for byte the lines the JSON-lines writer would have written for
//! the same records.
//!
//! A file damaged in the middle (a node killed while the writer wrote) is
//! read up to the damage and again from the next header; what was skipped
//! is reported in [`Decoded::damaged`], not silently dropped.

use std::path::Path;

use super::clock::{Clock, Pair, Span};
use super::file::TraceFormat;
use super::json::{Formatter, Out};
use super::record::{Decoder, Rec};

/// What every session of a binary trace starts with.
const MAGIC: &[u8; 14] = b"\0troupe-trace\x01";

/// The header of a session whose stamps come from `clock`.
pub(super) fn put_header(buf: &mut Vec<u8>, clock: Clock) {
    buf.extend_from_slice(MAGIC);
    buf.push(match clock {
        Clock::Wall => 0,
        Clock::Tsc => 1,
    });
}

/// True when `bytes` look like a binary trace.
pub fn is_binary(bytes: &[u8]) -> bool {
    bytes.first() == Some(&0)
}

/// Refuse to append `format` to an existing, non-empty file of the other
/// format.
pub(super) fn check_existing(path: &Path, format: TraceFormat) -> std::io::Result<()> {
    use std::io::Read;
    let mut first = [0u8; 1];
    let n = match std::fs::File::open(path) {
        Ok(mut f) => f.read(&mut first)?,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(()),
        Err(e) => return Err(e),
    };
    let held = match (n, is_binary(&first)) {
        (0, _) => return Ok(()),
        (_, true) => TraceFormat::Binary,
        (_, false) => TraceFormat::Jsonl,
    };
    if held == format {
        return Ok(());
    }
    let name = |f: TraceFormat| match f {
        TraceFormat::Jsonl => "JSON lines",
        TraceFormat::Binary => "a binary trace",
    };
    Err(std::io::Error::new(
        std::io::ErrorKind::InvalidData,
        format!(
            "{} holds {}, and this trace is written as {}: choose another file or the same format",
            path.display(),
            name(held),
            name(format)
        ),
    ))
}

/// A trace read back as JSON lines.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Decoded {
    /// The events, one JSON line each (with its newline).
    pub jsonl: String,
    /// What could not be read (binary traces only): a sentence per damaged
    /// stretch, naming its byte offset.
    pub damaged: Vec<String>,
}

/// Read a trace file, JSON lines or binary, as JSON lines.
pub fn read_jsonl(path: &Path) -> std::io::Result<Decoded> {
    let bytes = std::fs::read(path)?;
    if !is_binary(&bytes) {
        let jsonl = String::from_utf8(bytes).map_err(|e| {
            std::io::Error::new(
                std::io::ErrorKind::InvalidData,
                format!(
                    "{}: neither JSON lines (byte {} is not UTF-8) nor a binary trace",
                    path.display(),
                    e.utf8_error().valid_up_to()
                ),
            )
        })?;
        return Ok(Decoded {
            jsonl,
            damaged: Vec::new(),
        });
    }
    Ok(binary_to_jsonl(&bytes))
}

/// Decode a binary trace (see the module docs) into JSON lines.
pub fn binary_to_jsonl(bytes: &[u8]) -> Decoded {
    let mut out = Decoded::default();
    let mut text = Out::new();
    let mut pos = 0;
    while pos < bytes.len() {
        let Some(rest) = bytes[pos..].strip_prefix(MAGIC.as_slice()) else {
            let next = find_header(bytes, pos + 1);
            out.damaged.push(format!(
                "bytes {pos}..{next}: not a trace session (no header), skipped"
            ));
            pos = next;
            continue;
        };
        let clock = match rest.first() {
            Some(0) => Clock::Wall,
            Some(1) => Clock::Tsc,
            _ => {
                let next = find_header(bytes, pos + 1);
                out.damaged.push(format!(
                    "byte {}: unknown clock in a session header; bytes {pos}..{next} skipped",
                    pos + MAGIC.len()
                ));
                pos = next;
                continue;
            }
        };
        let start = pos + MAGIC.len() + 1;
        let end = find_header(bytes, start);
        session(&bytes[..end], start, clock, &mut text, &mut out.damaged);
        out.jsonl.push_str(&String::from_utf8_lossy(text.text()));
        text.pos = 0;
        pos = end;
    }
    out
}

/// The offset of the next session header at or after `from` (the end when
/// there is none).
fn find_header(bytes: &[u8], from: usize) -> usize {
    if from >= bytes.len() {
        return bytes.len();
    }
    bytes[from..]
        .windows(MAGIC.len())
        .position(|w| w == MAGIC)
        .map_or(bytes.len(), |i| from + i)
}

/// Decode the records of one session, `bytes[start..]`.
fn session(bytes: &[u8], start: usize, clock: Clock, text: &mut Out, damaged: &mut Vec<String>) {
    // First pass: where the clock readings are, and where the records end.
    let mut clocks: Vec<Pair> = Vec::new();
    let mut dec = Decoder::default();
    let mut pos = start;
    while pos < bytes.len() {
        match dec.next(&bytes[pos..], pos) {
            Ok((rec, len)) => {
                if let Rec::Clock(p) = rec {
                    clocks.push(p);
                }
                pos += len;
            }
            Err(e) => {
                damaged.push(format!("{e}; bytes {}..{} skipped", e.offset, bytes.len()));
                break;
            }
        }
    }
    let end = pos;
    // Second pass: each record mapped within the readings around it.
    let span_at = |k: usize| -> Span {
        match (k.checked_sub(1).and_then(|i| clocks.get(i)), clocks.get(k)) {
            (Some(&a), Some(&b)) => Span::new(clock, a, b),
            (Some(&a), None) => {
                let like = k
                    .checked_sub(2)
                    .and_then(|i| clocks.get(i))
                    .map(|&p| Span::new(clock, p, a));
                Span::open(clock, a, like)
            }
            // Records before the first reading (not written so): at it.
            (None, Some(&b)) => Span::new(clock, b, b),
            (None, None) => Span::open(clock, Pair { raw: 0, wall_ns: 0 }, None),
        }
    };
    let mut dec = Decoder::default();
    let mut fmt = Formatter::default();
    let mut seen = 0;
    let mut span = span_at(0);
    let mut pos = start;
    while pos < end {
        let Ok((rec, len)) = dec.next(&bytes[pos..end], pos) else {
            break;
        };
        pos += len;
        if let Rec::Clock(_) = rec {
            seen += 1;
            span = span_at(seen);
            continue;
        }
        fmt.record(&rec, &dec, &span, text);
    }
}
