//! How long a certificate is valid: the `Validity` field of an X.509
//! certificate, read straight from its DER encoding.
//!
//! rcgen writes certificates but (without its x509 parser) cannot read them,
//! and webpki checks validity without exposing it. A node needs the dates
//! itself, to refuse to start with an expired certificate and to warn ahead
//! of expiry, so this walks the few DER elements in front of the field:
//! `Certificate ::= SEQUENCE { tbsCertificate SEQUENCE { [0] version
//! OPTIONAL, serialNumber, signature, issuer, validity SEQUENCE { notBefore,
//! notAfter }, ... } ... }`, each time a `UTCTime` (years 1950-2049) or a
//! `GeneralizedTime`, in UTC as RFC 5280 requires. Anything else is refused
//! (`None`), never guessed.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

/// When a certificate starts and stops being valid.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Validity {
    /// The first instant it is valid.
    pub not_before: SystemTime,
    /// The last instant it is valid.
    pub not_after: SystemTime,
}

impl Validity {
    /// Reads the validity of a DER certificate; `None` if it is not one
    /// this understands.
    pub fn of_der(der: &[u8]) -> Option<Self> {
        let (tag, cert, _) = element(der)?;
        if tag != SEQUENCE {
            return None;
        }
        let (tag, tbs, _) = element(cert)?;
        if tag != SEQUENCE {
            return None;
        }
        let mut rest = tbs;
        // [0] EXPLICIT version, when present.
        let (tag, _, after) = element(rest)?;
        if tag == VERSION {
            rest = after;
        }
        // serialNumber, signature, issuer.
        for want in [INTEGER, SEQUENCE, SEQUENCE] {
            let (tag, _, after) = element(rest)?;
            if tag != want {
                return None;
            }
            rest = after;
        }
        let (tag, validity, _) = element(rest)?;
        if tag != SEQUENCE {
            return None;
        }
        let (t1, before, after) = element(validity)?;
        let (t2, not_after, end) = element(after)?;
        if !end.is_empty() {
            return None;
        }
        Some(Self {
            not_before: time(t1, before)?,
            not_after: time(t2, not_after)?,
        })
    }

    /// Time left until `not_after`, from `now`; `None` once it has passed.
    pub fn remaining(&self, now: SystemTime) -> Option<Duration> {
        self.not_after.duration_since(now).ok()
    }
}

const INTEGER: u8 = 0x02;
const SEQUENCE: u8 = 0x30;
const VERSION: u8 = 0xa0;
const UTC_TIME: u8 = 0x17;
const GENERALIZED_TIME: u8 = 0x18;

/// One DER element at the front of `b`: (tag, contents, what follows).
/// Single-byte tags and definite lengths only, as DER requires here.
fn element(b: &[u8]) -> Option<(u8, &[u8], &[u8])> {
    let (&tag, b) = b.split_first()?;
    let (&first, mut b) = b.split_first()?;
    let len = if first < 0x80 {
        usize::from(first)
    } else {
        let n = usize::from(first & 0x7f);
        if n == 0 || n > 4 || b.len() < n {
            return None;
        }
        let len = b[..n]
            .iter()
            .fold(0usize, |l, &x| (l << 8) | usize::from(x));
        b = &b[n..];
        len
    };
    if b.len() < len {
        return None;
    }
    Some((tag, &b[..len], &b[len..]))
}

/// A `UTCTime` (`YYMMDDHHMMSSZ`) or `GeneralizedTime` (`YYYYMMDDHHMMSSZ`).
fn time(tag: u8, s: &[u8]) -> Option<SystemTime> {
    let s = std::str::from_utf8(s).ok()?;
    let s = s.strip_suffix('Z')?;
    if !s.bytes().all(|c| c.is_ascii_digit()) {
        return None;
    }
    let num = |r: std::ops::Range<usize>| s.get(r)?.parse::<i64>().ok();
    let (year, rest) = match (tag, s.len()) {
        (UTC_TIME, 12) => {
            let yy = num(0..2)?;
            (if yy < 50 { 2000 + yy } else { 1900 + yy }, 2)
        }
        (GENERALIZED_TIME, 14) => (num(0..4)?, 4),
        _ => return None,
    };
    let [month, day, hour, min, sec] = [0, 2, 4, 6, 8].map(|i| num(rest + i..rest + i + 2));
    let (month, day, hour, min, sec) = (month?, day?, hour?, min?, sec?);
    if !(1..=12).contains(&month)
        || !(1..=days_in_month(year, month)).contains(&day)
        || hour > 23
        || min > 59
        || sec > 60
    {
        return None;
    }
    let secs = days_from_civil(year, month, day) * 86_400 + hour * 3600 + min * 60 + sec;
    if secs >= 0 {
        UNIX_EPOCH.checked_add(Duration::from_secs(secs as u64))
    } else {
        UNIX_EPOCH.checked_sub(Duration::from_secs(secs.unsigned_abs()))
    }
}

/// Days in `month` (1-12) of `year`, proleptic Gregorian.
fn days_in_month(year: i64, month: i64) -> i64 {
    match month {
        2 if year % 4 == 0 && (year % 100 != 0 || year % 400 == 0) => 29,
        2 => 28,
        4 | 6 | 9 | 11 => 30,
        _ => 31,
    }
}

/// Days from 1970-01-01 to the given proleptic Gregorian date (Howard
/// Hinnant's `days_from_civil`).
fn days_from_civil(y: i64, m: i64, d: i64) -> i64 {
    let y = if m <= 2 { y - 1 } else { y };
    let era = y.div_euclid(400);
    let yoe = y - era * 400;
    let mp = (m + 9) % 12;
    let doy = (153 * mp + 2) / 5 + d - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    era * 146_097 + doe - 719_468
}

/// `2027-11-26 04:16 UTC`, for messages.
pub fn format_utc(t: SystemTime) -> String {
    let secs = match t.duration_since(UNIX_EPOCH) {
        Ok(d) => d.as_secs() as i64,
        Err(e) => -(e.duration().as_secs() as i64),
    };
    let (days, rem) = (secs.div_euclid(86_400), secs.rem_euclid(86_400));
    // civil_from_days, the inverse of the above.
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = doy - (153 * mp + 2) / 5 + 1;
    let m = if mp < 10 { mp + 3 } else { mp - 9 };
    let y = yoe + era * 400 + i64::from(m <= 2);
    format!(
        "{y:04}-{m:02}-{d:02} {:02}:{:02} UTC",
        rem / 3600,
        rem % 3600 / 60
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn civil_dates_round_trip() {
        assert_eq!(days_from_civil(1970, 1, 1), 0);
        assert_eq!(days_from_civil(2000, 3, 1), 11_017);
        assert_eq!(days_from_civil(1969, 12, 31), -1);
        let t = UNIX_EPOCH + Duration::from_secs(1_795_666_560); // 2026-11-26 04:16 UTC
        assert_eq!(format_utc(t), "2026-11-26 04:16 UTC");
        assert_eq!(format_utc(UNIX_EPOCH), "1970-01-01 00:00 UTC");
    }

    #[test]
    fn both_time_forms_parse() {
        let utc = time(UTC_TIME, b"261126041600Z").unwrap();
        let gen = time(GENERALIZED_TIME, b"20261126041600Z").unwrap();
        assert_eq!(utc, gen);
        assert_eq!(format_utc(utc), "2026-11-26 04:16 UTC");
        // UTCTime years 50-99 are 1950-1999.
        assert_eq!(
            format_utc(time(UTC_TIME, b"750101000000Z").unwrap()),
            "1975-01-01 00:00 UTC"
        );
        for bad in [
            &b"2611260416Z"[..],
            b"261126041600",
            b"26112604160aZ",
            b"261326041600Z",
        ] {
            assert_eq!(time(UTC_TIME, bad), None, "{bad:?}");
        }
    }

    /// DER element `tag` around `content`, long-form length when needed.
    fn der(tag: u8, content: &[u8]) -> Vec<u8> {
        let mut out = vec![tag];
        let n = content.len();
        if n < 0x80 {
            out.push(n as u8);
        } else if n < 0x100 {
            out.extend([0x81, n as u8]);
        } else {
            out.extend([0x82, (n >> 8) as u8, n as u8]);
        }
        out.extend_from_slice(content);
        out
    }

    /// A certificate skeleton up to its validity, with or without the
    /// `[0]` version, an issuer name padded to `issuer_len` bytes.
    fn skeleton(version: bool, issuer_len: usize, times: &[(u8, &[u8])]) -> Vec<u8> {
        let mut tbs = Vec::new();
        if version {
            tbs.extend(der(VERSION, &der(INTEGER, &[2])));
        }
        tbs.extend(der(INTEGER, &[0x01, 0x02]));
        tbs.extend(der(SEQUENCE, &der(0x06, &[0x2a, 0x86, 0x48])));
        tbs.extend(der(SEQUENCE, &vec![0x31; issuer_len]));
        let validity: Vec<u8> = times.iter().flat_map(|(t, s)| der(*t, s)).collect();
        tbs.extend(der(SEQUENCE, &validity));
        tbs.extend(der(SEQUENCE, &[])); // subject
        der(SEQUENCE, &der(SEQUENCE, &tbs))
    }

    #[test]
    fn v1_and_v3_certificates_with_long_lengths_parse() {
        let times: &[(u8, &[u8])] = &[
            (UTC_TIME, b"491231235959Z"),
            (GENERALIZED_TIME, b"20500101000000Z"),
        ];
        for version in [false, true] {
            for issuer_len in [3, 200, 400] {
                let v = Validity::of_der(&skeleton(version, issuer_len, times))
                    .unwrap_or_else(|| panic!("version {version}, issuer {issuer_len}"));
                assert_eq!(format_utc(v.not_before), "2049-12-31 23:59 UTC");
                assert_eq!(format_utc(v.not_after), "2050-01-01 00:00 UTC");
                assert_eq!(
                    v.not_after.duration_since(v.not_before).unwrap(),
                    Duration::from_secs(1)
                );
            }
        }
        // UTCTime 50 is 1950, not 2050.
        let old = skeleton(
            false,
            3,
            &[(UTC_TIME, b"500101000000Z"), (UTC_TIME, b"991231235959Z")],
        );
        let v = Validity::of_der(&old).expect("parses");
        assert_eq!(format_utc(v.not_before), "1950-01-01 00:00 UTC");
        // A third time in the validity is not a certificate this knows.
        let t: (u8, &[u8]) = (UTC_TIME, b"500101000000Z");
        let three = skeleton(true, 3, &[t; 3]);
        assert_eq!(Validity::of_der(&three), None);
    }

    #[test]
    fn days_that_do_not_exist_are_refused() {
        for bad in [
            &b"20260230000000Z"[..],
            b"20250229000000Z",
            b"20260431000000Z",
            b"21000229000000Z",
        ] {
            assert_eq!(time(GENERALIZED_TIME, bad), None, "{bad:?}");
        }
        for good in [
            &b"20240229000000Z"[..],
            b"20000229000000Z",
            b"20261231000000Z",
        ] {
            assert!(time(GENERALIZED_TIME, good).is_some(), "{good:?}");
        }
    }

    #[test]
    fn garbage_is_refused_not_guessed() {
        assert_eq!(Validity::of_der(&[]), None);
        assert_eq!(Validity::of_der(&[0x30, 0x82, 0xff]), None);
        assert_eq!(Validity::of_der(&[0x30, 0x03, 0x02, 0x01, 0x00]), None);
    }
}
