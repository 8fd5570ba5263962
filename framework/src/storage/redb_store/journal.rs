//! The journal's binary encoding of a group of submissions.

use super::*;

// The journal's encoding of a group: a format byte, then per submission its
// namespace and its writes. Integers are little-endian; a string or a byte
// string is its u32 length, then its bytes.
//
//   group      = 0x01, u32 submissions, submission*
//   submission = str namespace, u32 writes, write*
//   write      = 0 str key, bytes value         (Put)
//              | 1 str key                       (Delete)
//              | 2 str log, u64 first, u32 n, bytes*n   (Append)
//              | 3 str log, u64 index            (TruncateFrom)
//              | 4 str log, u64 index            (TruncateBefore)

pub(super) const GROUP_FORMAT: u8 = 1;

pub(super) struct GroupEncoder {
    pub(super) buf: Vec<u8>,
    pub(super) submissions: u32,
}

impl GroupEncoder {
    #[cfg(test)]
    pub(super) fn new() -> Self {
        Self::with_buffer(Vec::new())
    }

    /// Encode into `buf` (cleared first), reusing its memory.
    pub(super) fn with_buffer(mut buf: Vec<u8>) -> Self {
        buf.clear();
        buf.push(GROUP_FORMAT);
        buf.extend_from_slice(&0u32.to_le_bytes());
        Self {
            buf,
            submissions: 0,
        }
    }

    pub(super) fn bytes(&mut self, b: &[u8]) {
        self.buf.extend_from_slice(&(b.len() as u32).to_le_bytes());
        self.buf.extend_from_slice(b);
    }

    pub(super) fn u64(&mut self, v: u64) {
        self.buf.extend_from_slice(&v.to_le_bytes());
    }

    pub(super) fn push(&mut self, ns: &str, writes: &[Write]) {
        self.submissions += 1;
        self.bytes(ns.as_bytes());
        self.buf
            .extend_from_slice(&(writes.len() as u32).to_le_bytes());
        for w in writes {
            match w {
                Write::Put { key, value } => {
                    self.buf.push(0);
                    self.bytes(key.as_bytes());
                    self.bytes(value);
                }
                Write::Delete { key } => {
                    self.buf.push(1);
                    self.bytes(key.as_bytes());
                }
                Write::Append {
                    log,
                    first,
                    records,
                } => {
                    self.buf.push(2);
                    self.bytes(log.as_bytes());
                    self.u64(*first);
                    self.buf
                        .extend_from_slice(&(records.len() as u32).to_le_bytes());
                    for r in records {
                        self.bytes(r);
                    }
                }
                Write::TruncateFrom { log, index } => {
                    self.buf.push(3);
                    self.bytes(log.as_bytes());
                    self.u64(*index);
                }
                Write::TruncateBefore { log, index } => {
                    self.buf.push(4);
                    self.bytes(log.as_bytes());
                    self.u64(*index);
                }
            }
        }
    }

    pub(super) fn finish(mut self) -> Vec<u8> {
        self.buf[1..5].copy_from_slice(&self.submissions.to_le_bytes());
        self.buf
    }
}

pub(super) struct Decoder<'a> {
    pub(super) buf: &'a [u8],
}

impl<'a> Decoder<'a> {
    pub(super) fn take(&mut self, n: usize) -> Result<&'a [u8], String> {
        if self.buf.len() < n {
            return Err(format!(
                "truncated: {n} bytes wanted, {} left",
                self.buf.len()
            ));
        }
        let (a, b) = self.buf.split_at(n);
        self.buf = b;
        Ok(a)
    }
    pub(super) fn u8(&mut self) -> Result<u8, String> {
        Ok(self.take(1)?[0])
    }
    pub(super) fn u32(&mut self) -> Result<u32, String> {
        let b = self.take(4)?;
        Ok(u32::from_le_bytes([b[0], b[1], b[2], b[3]]))
    }
    pub(super) fn u64(&mut self) -> Result<u64, String> {
        let mut a = [0u8; 8];
        a.copy_from_slice(self.take(8)?);
        Ok(u64::from_le_bytes(a))
    }
    pub(super) fn bytes(&mut self) -> Result<Vec<u8>, String> {
        let n = self.u32()? as usize;
        Ok(self.take(n)?.to_vec())
    }
    pub(super) fn string(&mut self) -> Result<String, String> {
        String::from_utf8(self.bytes()?).map_err(|e| e.to_string())
    }
    /// A count of items each at least `min` bytes long, checked against
    /// what is left (a corrupt count must not reserve gigabytes).
    pub(super) fn count(&mut self, min: usize) -> Result<usize, String> {
        let n = self.u32()? as usize;
        if n.saturating_mul(min) > self.buf.len() {
            return Err(format!(
                "count {n} exceeds the {} bytes left",
                self.buf.len()
            ));
        }
        Ok(n)
    }
}

/// The submissions of one journal entry, in order.
pub(super) fn decode_group(buf: &[u8]) -> Result<Vec<(String, Vec<Write>)>, String> {
    let mut d = Decoder { buf };
    let format = d.u8()?;
    if format != GROUP_FORMAT {
        return Err(format!("unknown format {format}"));
    }
    let n = d.count(8)?;
    let mut group = Vec::with_capacity(n);
    for _ in 0..n {
        let ns = d.string()?;
        let m = d.count(5)?;
        let mut writes = Vec::with_capacity(m);
        for _ in 0..m {
            let w = match d.u8()? {
                0 => Write::Put {
                    key: d.string()?,
                    value: d.bytes()?,
                },
                1 => Write::Delete { key: d.string()? },
                2 => {
                    let log = d.string()?;
                    let first = d.u64()?;
                    let r = d.count(4)?;
                    let mut records = Vec::with_capacity(r);
                    for _ in 0..r {
                        records.push(d.bytes()?);
                    }
                    Write::Append {
                        log,
                        first,
                        records,
                    }
                }
                3 => Write::TruncateFrom {
                    log: d.string()?,
                    index: d.u64()?,
                },
                4 => Write::TruncateBefore {
                    log: d.string()?,
                    index: d.u64()?,
                },
                t => return Err(format!("unknown write tag {t}")),
            };
            writes.push(w);
        }
        group.push((ns, writes));
    }
    if !d.buf.is_empty() {
        return Err(format!("{} bytes after the last submission", d.buf.len()));
    }
    Ok(group)
}
