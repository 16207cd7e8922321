//! DICOM dates and times (DA, TM, DT; PS3.5 Table 6.2-1) as instants, ns since the UNIX
//! epoch, and back.
//!
//! What a scanner writes is read exactly as the standard spells it: `YYYYMMDD` dates,
//! `HH[MM[SS[.F{1,6}]]]` times and `YYYY[MM[DD[HH[MM[SS[.F{1,6}]]]]]][&ZZXX]` date-times,
//! trailing padding ignored. The retired ACR-NEMA forms (`YYYY.MM.DD`, `HH:MM:SS`) are refused.
//! A value given to a coarser precision (a time without seconds) stands for an interval; it
//! is read as the interval's *first* instant, so a frame never looks younger than it can be
//! (its corrections expire no later than they should). Second 60 (a leap second) is read as
//! the first instant of the next minute's second 0 plus the fraction: UNIX time has no leap
//! seconds.
//!
//! The calendar (days per month, days since the epoch) is chrono's; the grammar is parsed
//! here, so that an error can name the attribute, the text and what in it is wrong.

use chrono::{DateTime, NaiveDate};

/// ns per second.
const NS_PER_S: i64 = 1_000_000_000;

/// A date, time or date-time value that is not a valid instant.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{attribute} {text:?}: {reason}")]
pub struct DateTimeError {
    /// The attribute it was read from (e.g. `AcquisitionDateTime`).
    pub attribute: &'static str,
    /// The text as stored.
    pub text: String,
    /// What is wrong with it.
    pub reason: String,
}

/// An offset from UTC, as DICOM writes it (`&ZZXX`, −12:00 to +14:00).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct UtcOffset {
    minutes: i16,
}

impl UtcOffset {
    /// UTC itself (`+0000`).
    pub const UTC: UtcOffset = UtcOffset { minutes: 0 };

    /// The offset of `minutes` east of UTC; `None` outside −720 to +840 (PS3.5's range).
    pub fn from_minutes(minutes: i32) -> Option<UtcOffset> {
        (-720..=840).contains(&minutes).then_some(UtcOffset {
            minutes: minutes as i16,
        })
    }

    /// Minutes east of UTC.
    pub fn minutes(self) -> i32 {
        i32::from(self.minutes)
    }

    fn ns(self) -> i64 {
        i64::from(self.minutes) * 60 * NS_PER_S
    }
}

impl std::fmt::Display for UtcOffset {
    /// `&ZZXX`, e.g. `+0100`, `-0530`, `+0000`.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let m = self.minutes();
        let sign = if m < 0 { '-' } else { '+' };
        write!(f, "{sign}{:02}{:02}", m.abs() / 60, m.abs() % 60)
    }
}

/// Reads one value: the attribute it came from, its text, and where the parse stands.
struct Reader<'a> {
    attribute: &'static str,
    text: &'a str,
}

impl Reader<'_> {
    fn fail(&self, reason: impl Into<String>) -> DateTimeError {
        DateTimeError {
            attribute: self.attribute,
            text: self.text.to_owned(),
            reason: reason.into(),
        }
    }

    /// The value without its padding (trailing spaces, a trailing NUL).
    fn body(&self) -> &str {
        self.text.trim_end_matches([' ', '\0'])
    }

    /// `s` (all ASCII digits) as a number in `lo..=hi`, named `what` in an error.
    fn number(&self, s: &str, what: &str, lo: u32, hi: u32) -> Result<u32, DateTimeError> {
        if s.is_empty() || !s.bytes().all(|b| b.is_ascii_digit()) {
            return Err(self.fail(format!("{what} {s:?} is not all digits")));
        }
        let v: u32 = s
            .parse()
            .map_err(|_| self.fail(format!("{what} {s:?} is not a number")))?;
        if !(lo..=hi).contains(&v) {
            return Err(self.fail(format!("{what} {v} is outside {lo}..={hi}")));
        }
        Ok(v)
    }

    /// Days since 1970-01-01 of a proleptic Gregorian date.
    fn days(&self, year: u32, month: u32, day: u32) -> Result<i64, DateTimeError> {
        let date = NaiveDate::from_ymd_opt(year as i32, month, day)
            .ok_or_else(|| self.fail(format!("{year:04}-{month:02}-{day:02} is not a calendar date")))?;
        Ok(date
            .signed_duration_since(DateTime::UNIX_EPOCH.date_naive())
            .num_days())
    }

    /// A DA value, `YYYYMMDD`: days since the epoch.
    fn date(&self) -> Result<i64, DateTimeError> {
        let s = self.body();
        if s.len() != 8 || !s.is_ascii() {
            return Err(self.fail("a date is YYYYMMDD (8 digits)"));
        }
        let year = self.number(&s[0..4], "year", 0, 9999)?;
        let month = self.number(&s[4..6], "month", 1, 12)?;
        let day = self.number(&s[6..8], "day", 1, 31)?;
        self.days(year, month, day)
    }

    /// A TM value (or the time part of a DT), `HH[MM[SS[.F{1,6}]]]`: ns since midnight.
    fn time_of(&self, s: &str) -> Result<i64, DateTimeError> {
        if !s.is_ascii() {
            return Err(self.fail("a time is HH[MM[SS[.FFFFFF]]] in ASCII digits"));
        }
        let (hms, fraction) = match s.split_once('.') {
            Some((hms, f)) => (hms, Some(f)),
            None => (s, None),
        };
        if !matches!(hms.len(), 2 | 4 | 6) {
            return Err(self.fail("a time is HH[MM[SS[.FFFFFF]]] (2, 4 or 6 digits before any fraction)"));
        }
        let hour = self.number(&hms[0..2], "hour", 0, 23)?;
        let minute = if hms.len() >= 4 {
            self.number(&hms[2..4], "minute", 0, 59)?
        } else {
            0
        };
        let second = if hms.len() == 6 {
            self.number(&hms[4..6], "second", 0, 60)?
        } else {
            0
        };
        let fraction_ns = match fraction {
            None => 0,
            Some(_) if hms.len() != 6 => {
                return Err(self.fail("a fraction of a second needs HHMMSS before it"))
            }
            Some(f) if f.is_empty() || f.len() > 6 => {
                return Err(self.fail("a fraction of a second has 1 to 6 digits"))
            }
            Some(f) => {
                let v = self.number(f, "fraction of a second", 0, 999_999)?;
                i64::from(v) * 10i64.pow(9 - f.len() as u32)
            }
        };
        Ok((i64::from(hour) * 3600 + i64::from(minute) * 60 + i64::from(second)) * NS_PER_S + fraction_ns)
    }

    /// An offset `&ZZXX`.
    fn offset_of(&self, s: &str) -> Result<UtcOffset, DateTimeError> {
        let sign = match s.as_bytes().first() {
            Some(b'+') => 1,
            Some(b'-') => -1,
            _ => return Err(self.fail("an offset from UTC starts with + or -")),
        };
        if s.len() != 5 || !s.is_ascii() {
            return Err(self.fail("an offset from UTC is &ZZXX (a sign and 4 digits)"));
        }
        let hours = self.number(&s[1..3], "offset hours", 0, 14)?;
        let minutes = self.number(&s[3..5], "offset minutes", 0, 59)?;
        let total = sign * (hours * 60 + minutes) as i32;
        UtcOffset::from_minutes(total)
            .ok_or_else(|| self.fail(format!("offset {total} min is outside −12:00..=+14:00")))
    }

    /// Local ns since the epoch at `offset` → UTC ns, refusing what i64 cannot hold.
    fn instant(&self, days: i64, time_ns: i64, offset: UtcOffset) -> Result<i64, DateTimeError> {
        days.checked_mul(86_400 * NS_PER_S)
            .and_then(|d| d.checked_add(time_ns))
            .and_then(|t| t.checked_sub(offset.ns()))
            .ok_or_else(|| {
                self.fail("outside the instants representable in i64 ns since 1970 (1677 to 2262)")
            })
    }
}

/// Reads an offset from UTC (`&ZZXX`), as in Timezone Offset From UTC (0008,0201).
pub fn parse_utc_offset(attribute: &'static str, text: &str) -> Result<UtcOffset, DateTimeError> {
    let r = Reader { attribute, text };
    r.offset_of(r.body())
}

/// Reads a DT value as ns since the UNIX epoch. A value without its own offset is at
/// `offset` (the object's Timezone Offset From UTC, else UTC).
pub fn parse_datetime(attribute: &'static str, text: &str, offset: UtcOffset) -> Result<i64, DateTimeError> {
    let r = Reader { attribute, text };
    let s = r.body();
    if !s.is_ascii() {
        return Err(r.fail("a date-time is ASCII digits, '.', '+' or '-'"));
    }
    // the sign of an offset is the only + or - a DT holds
    let (local, offset) = match s.find(['+', '-']) {
        Some(at) => (&s[..at], r.offset_of(&s[at..])?),
        None => (s, offset),
    };
    let digits = local.split_once('.').map_or(local, |(d, _)| d);
    if !matches!(digits.len(), 4 | 6 | 8 | 10 | 12 | 14) {
        return Err(r.fail("a date-time is YYYY[MM[DD[HH[MM[SS[.FFFFFF]]]]]][&ZZXX]"));
    }
    if local.contains('.') && digits.len() != 14 {
        return Err(r.fail("a fraction of a second needs YYYYMMDDHHMMSS before it"));
    }
    let year = r.number(&digits[0..4], "year", 0, 9999)?;
    let month = if digits.len() >= 6 {
        r.number(&digits[4..6], "month", 1, 12)?
    } else {
        1
    };
    let day = if digits.len() >= 8 {
        r.number(&digits[6..8], "day", 1, 31)?
    } else {
        1
    };
    let days = r.days(year, month, day)?;
    let time_ns = if digits.len() >= 10 {
        r.time_of(&local[8..])?
    } else {
        0
    };
    r.instant(days, time_ns, offset)
}

/// Reads a DA value and a TM value together as ns since the UNIX epoch, at `offset`.
pub fn parse_date_and_time(
    date: (&'static str, &str),
    time: (&'static str, &str),
    offset: UtcOffset,
) -> Result<i64, DateTimeError> {
    let d = Reader {
        attribute: date.0,
        text: date.1,
    };
    let t = Reader {
        attribute: time.0,
        text: time.1,
    };
    let days = d.date()?;
    let time_ns = t.time_of(t.body())?;
    d.instant(days, time_ns, offset)
}

/// The instant as a DT value to the microsecond at `offset`, e.g.
/// `20261202095301.123456+0000` (rounded down to the microsecond). The DA and TM values of
/// the same local instant are its first 8 characters and the 13 after them.
pub fn format_datetime(unix_ns: i64, offset: UtcOffset) -> String {
    let local_ns = unix_ns.saturating_add(offset.ns());
    let secs = local_ns.div_euclid(NS_PER_S);
    let sub_ns = local_ns.rem_euclid(NS_PER_S) as u32;
    // every i64 ns instant lies within chrono's range (±262 000 years)
    let local = DateTime::from_timestamp(secs, sub_ns - sub_ns % 1000).unwrap_or_default();
    format!("{}.{:06}{offset}", local.format("%Y%m%d%H%M%S"), sub_ns / 1000)
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    const A: &str = "AcquisitionDateTime";

    #[test]
    fn known_instants() {
        // 2026-12-02T09:53:01.123456Z, from `date -u -d 2026-12-02T09:53:01Z +%s` = 1796205181
        let t = 1_796_205_181_123_456_000;
        assert_eq!(parse_datetime(A, "20261202095301.123456", UtcOffset::UTC), Ok(t));
        assert_eq!(
            parse_datetime(A, "20261202105301.123456+0100", UtcOffset::UTC),
            Ok(t)
        );
        assert_eq!(
            parse_datetime(A, "20261202042301.123456-0530 ", UtcOffset::UTC),
            Ok(t)
        );
        // no offset in the value: the one given applies
        let plus_one = UtcOffset::from_minutes(60).unwrap();
        assert_eq!(parse_datetime(A, "20261202105301.123456", plus_one), Ok(t));
        assert_eq!(
            parse_date_and_time(
                ("AcquisitionDate", "20261202"),
                ("AcquisitionTime", "095301.123456"),
                UtcOffset::UTC
            ),
            Ok(t)
        );
        assert_eq!(format_datetime(t, UtcOffset::UTC), "20261202095301.123456+0000");
        assert_eq!(format_datetime(t, plus_one), "20261202105301.123456+0100");
        assert_eq!(parse_datetime(A, "1970", UtcOffset::UTC), Ok(0));
        assert_eq!(format_datetime(-1, UtcOffset::UTC), "19691231235959.999999+0000");
    }

    #[test]
    fn partial_values_are_their_interval_s_first_instant() {
        let whole_minute = parse_datetime(A, "20261202095300", UtcOffset::UTC).unwrap();
        assert_eq!(
            parse_datetime(A, "202612020953", UtcOffset::UTC),
            Ok(whole_minute)
        );
        assert_eq!(
            parse_datetime(A, "20261202095301.1", UtcOffset::UTC),
            Ok(whole_minute + 1_100_000_000)
        );
        assert_eq!(
            parse_datetime(A, "202612", UtcOffset::UTC),
            parse_datetime(A, "20261201000000", UtcOffset::UTC)
        );
        // a leap second is the next minute's first second
        assert_eq!(
            parse_datetime(A, "20161231235960", UtcOffset::UTC),
            parse_datetime(A, "20170101000000", UtcOffset::UTC)
        );
    }

    #[test]
    fn malformed_values_name_attribute_text_and_fault() {
        for (text, fault) in [
            ("20261302095301", "month 13"),
            ("20260230095301", "not a calendar date"),
            ("20261202245301", "hour 24"),
            ("2026120209530", "YYYY[MM"),
            ("20261202095301.1234567", "1 to 6 digits"),
            ("202612020953.5", "needs YYYYMMDDHHMMSS"),
            ("20261202095301+1500", "offset hours 15"),
            ("20261202095301+010", "&ZZXX"),
            ("2026-12-02", "&ZZXX"),
            ("2026.12.02", "needs YYYYMMDDHHMMSS"),
            ("2O261202", "not all digits"),
            ("20261202 095301", "YYYY[MM"),
        ] {
            let e = parse_datetime(A, text, UtcOffset::UTC).unwrap_err();
            assert_eq!(e.attribute, A);
            assert_eq!(e.text, text);
            assert!(e.to_string().contains(fault), "{text}: {e}");
            assert!(e.to_string().contains(text), "{e}");
        }
        let e = parse_date_and_time(
            ("ContentDate", "20261202"),
            ("ContentTime", "09:53:01"),
            UtcOffset::UTC,
        )
        .unwrap_err();
        assert_eq!((e.attribute, e.text.as_str()), ("ContentTime", "09:53:01"));
        let e = parse_date_and_time(
            ("ContentDate", "2026.12.02"),
            ("ContentTime", "095301"),
            UtcOffset::UTC,
        )
        .unwrap_err();
        assert_eq!(e.attribute, "ContentDate");
        assert!(parse_utc_offset("TimezoneOffsetFromUTC", "0100").is_err());
        assert!(parse_datetime(A, "99991231235959", UtcOffset::UTC)
            .unwrap_err()
            .reason
            .contains("representable"));
    }

    proptest! {
        /// Any instant i64 ns can hold, at µs resolution, written at any valid offset, reads
        /// back as itself; and its DA and TM parts read back the same.
        #[test]
        fn format_then_parse_round_trips(
            micros in (i64::MIN / 1000 + 172_800_000_000)..(i64::MAX / 1000 - 172_800_000_000),
            offset_min in -720i32..=840,
            default_min in -720i32..=840,
        ) {
            let t = micros * 1000;
            let offset = UtcOffset::from_minutes(offset_min).unwrap();
            let text = format_datetime(t, offset);
            prop_assert_eq!(text.len(), 26);
            // the offset in the value wins over the one given
            let other = UtcOffset::from_minutes(default_min).unwrap();
            prop_assert_eq!(parse_datetime(A, &text, other), Ok(t));
            prop_assert_eq!(parse_datetime(A, &text[..21], offset), Ok(t));
            prop_assert_eq!(
                parse_date_and_time(("AcquisitionDate", &text[..8]), ("AcquisitionTime", &text[8..21]), offset),
                Ok(t)
            );
            prop_assert_eq!(parse_utc_offset("TimezoneOffsetFromUTC", &text[21..]), Ok(offset));
        }

        /// Random text never panics the readers.
        #[test]
        fn random_text_never_panics(text in "[0-9+\\-. :]{0,30}") {
            let _ = parse_datetime(A, &text, UtcOffset::UTC);
            let _ = parse_date_and_time(("D", &text), ("T", &text), UtcOffset::UTC);
            let _ = parse_utc_offset("Z", &text);
        }
    }
}
