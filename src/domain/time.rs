//! Timestamps that survive a round trip through an unencoded query string.
//!
//! The seed's mobile client pastes `data.updated_at` verbatim into
//! `?last_update=…` without URL-encoding it. A `+00:00` offset would decode as
//! a space, so timestamps are always written in UTC with a `Z` and microsecond
//! precision, e.g. `2025-01-12T20:30:00.123456Z`. Values are truncated to that
//! precision when created, so what a client echoes back compares equal to what
//! the server stored.

use std::fmt;
use std::str::FromStr;

use chrono::{DateTime, NaiveDate, NaiveDateTime, SubsecRound, TimeDelta, Utc};
use serde::{Deserialize, Deserializer, Serialize, Serializer};

/// A UTC instant with microsecond precision.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Timestamp(DateTime<Utc>);

/// The smallest step between two timestamps of one order.
const TICK: TimeDelta = TimeDelta::microseconds(1);

/// The last instant RFC 3339 can write (its years have four digits), at our
/// precision. Built at compile time, so the `expect`s cannot fire at run time.
const LAST_RFC_3339: DateTime<Utc> = NaiveDate::from_ymd_opt(9999, 12, 31)
    .expect("a valid date")
    .and_hms_micro_opt(23, 59, 59, 999_999)
    .expect("a valid time")
    .and_utc();

impl Timestamp {
    /// Truncates `at` to microseconds, the precision of the wire format.
    pub fn new(at: DateTime<Utc>) -> Self {
        Timestamp(at.trunc_subsecs(6))
    }

    /// The next timestamp for an order last changed at `self`: `now`, or one
    /// microsecond after `self` if the clock has not moved past it. Keeping
    /// `updated_at` strictly increasing makes it an exact poll cursor, even for
    /// two changes within one microsecond or a clock that steps back.
    pub fn advance_to(self, now: Timestamp) -> Timestamp {
        if now > self {
            now
        } else {
            Timestamp(self.0 + TICK)
        }
    }

    /// `self + delta`, saturating at 9999-12-31T23:59:59.999999Z rather than
    /// panicking or running past what the wire format (RFC 3339) can write.
    /// Deltas are minutes of a timeline, scaled by a bounded speed, so the
    /// cap is a guard, not something a real estimate reaches.
    pub fn plus(self, delta: TimeDelta) -> Timestamp {
        let at = self
            .0
            .checked_add_signed(delta)
            .unwrap_or(DateTime::<Utc>::MAX_UTC);
        Timestamp(at.min(LAST_RFC_3339))
    }

    pub fn as_datetime(self) -> DateTime<Utc> {
        self.0
    }
}

/// The wire format, as a chrono format string. [`Timestamp`]'s `Display`
/// writes the same text digit by digit: every order version renders three
/// timestamps, and interpreting this string each time was the largest part of
/// rendering an order (callgrind: about 5,000 instructions a timestamp,
/// against a few hundred now).
const WIRE_FORMAT: &str = "%Y-%m-%dT%H:%M:%S%.6fZ";

impl fmt::Display for Timestamp {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        use chrono::{Datelike, Timelike};
        let date = self.0.date_naive();
        let time = self.0.time();
        let Ok(year) = u32::try_from(date.year()) else {
            return write!(f, "{}", self.0.format(WIRE_FORMAT));
        };
        if year > 9999 {
            // Years chrono writes with a sign; only saturated far-future values.
            return write!(f, "{}", self.0.format(WIRE_FORMAT));
        }
        // A leap second is a nanosecond count past 999,999,999; chrono writes
        // it as second 60 with the remainder as the fraction.
        let nanos = time.nanosecond();
        let mut text = *b"0000-00-00T00:00:00.000000Z";
        for (at, width, value) in [
            (0, 4, year),
            (5, 2, date.month()),
            (8, 2, date.day()),
            (11, 2, time.hour()),
            (14, 2, time.minute()),
            (17, 2, time.second() + nanos / 1_000_000_000),
            (20, 6, nanos % 1_000_000_000 / 1_000),
        ] {
            let mut value = value;
            for digit in text[at..at + width].iter_mut().rev() {
                *digit = b'0' + (value % 10) as u8;
                value /= 10;
            }
        }
        // Invariant: ASCII digits written into an ASCII template.
        f.write_str(std::str::from_utf8(&text).expect("the timestamp text is ASCII"))
    }
}

/// A `last_update` value that is not a timestamp we can read.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error(
    "'{given}' is not a timestamp; use RFC 3339 such as 2025-01-12T20:30:00Z (no offset means UTC)"
)]
pub struct BadTimestamp {
    pub given: String,
}

impl FromStr for Timestamp {
    type Err = BadTimestamp;

    /// Accepts RFC 3339 with `Z` or an offset, and offset-less date-times
    /// (`2025-01-12T20:30:00`, as in the seed), which are UTC. An offset whose
    /// `+` was decoded to a space by an unencoded query string is repaired.
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let trimmed = s.trim();
        let repaired;
        // The date and time take the first 19 bytes; a space after them can
        // only be a `+` that lost its encoding.
        let text = match (trimmed.get(..19), trimmed.get(19..)) {
            (Some(head), Some(tail)) if tail.contains(' ') => {
                repaired = format!("{head}{}", tail.replace(' ', "+"));
                repaired.as_str()
            }
            _ => trimmed,
        };
        if let Ok(at) = DateTime::parse_from_rfc3339(text) {
            return Ok(Timestamp::new(at.with_timezone(&Utc)));
        }
        for format in ["%Y-%m-%dT%H:%M:%S%.f", "%Y-%m-%d %H:%M:%S%.f"] {
            if let Ok(naive) = NaiveDateTime::parse_from_str(text, format) {
                return Ok(Timestamp::new(naive.and_utc()));
            }
        }
        Err(BadTimestamp {
            given: s.to_owned(),
        })
    }
}

impl Serialize for Timestamp {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.collect_str(self)
    }
}

impl<'de> Deserialize<'de> for Timestamp {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let text = String::deserialize(deserializer)?;
        text.parse().map_err(serde::de::Error::custom)
    }
}

impl utoipa::PartialSchema for Timestamp {
    fn schema() -> utoipa::openapi::RefOr<utoipa::openapi::schema::Schema> {
        utoipa::openapi::ObjectBuilder::new()
            .schema_type(utoipa::openapi::schema::Type::String)
            .format(Some(utoipa::openapi::SchemaFormat::KnownFormat(
                utoipa::openapi::KnownFormat::DateTime,
            )))
            .description(Some(
                "RFC 3339 in UTC with a `Z` and microseconds. Safe to paste unencoded into `last_update`.",
            ))
            .examples(["2025-01-12T20:30:00.123456Z"])
            .into()
    }
}

impl utoipa::ToSchema for Timestamp {}

#[cfg(test)]
mod tests {
    use super::*;

    fn ts(s: &str) -> Timestamp {
        s.parse().unwrap()
    }

    #[test]
    fn display_round_trips_and_needs_no_url_encoding() {
        let now = Timestamp::new(Utc::now());
        let text = now.to_string();
        assert!(text.ends_with('Z'));
        assert!(!text.contains('+') && !text.contains(' '));
        assert_eq!(text.parse::<Timestamp>().unwrap(), now);
    }

    #[test]
    fn display_writes_what_the_wire_format_says() {
        let instants = [
            "2025-01-12T20:30:00Z",
            "2025-01-12T20:30:00.000001Z",
            "1999-12-31T23:59:59.999999Z",
            "0001-01-01T00:00:00Z",
        ]
        .map(ts)
        .into_iter()
        .chain([
            Timestamp::new(Utc::now()),
            Timestamp::new(DateTime::<Utc>::MAX_UTC),
            Timestamp::new(DateTime::<Utc>::MIN_UTC),
        ]);
        for at in instants {
            assert_eq!(at.to_string(), at.0.format(WIRE_FORMAT).to_string());
        }
        let leap = NaiveDateTime::parse_from_str("2016-12-31 23:59:60.5", "%Y-%m-%d %H:%M:%S%.f")
            .unwrap()
            .and_utc();
        assert_eq!(
            Timestamp::new(leap).to_string(),
            leap.trunc_subsecs(6).format(WIRE_FORMAT).to_string()
        );
    }

    #[test]
    fn offsetless_means_utc_and_offsets_are_honoured() {
        assert_eq!(ts("2025-01-12T20:30:00"), ts("2025-01-12T20:30:00Z"));
        assert_eq!(ts("2025-01-12T22:30:00+02:00"), ts("2025-01-12T20:30:00Z"));
        // `+02:00` pasted unencoded into a query string arrives as ` 02:00`.
        assert_eq!(ts("2025-01-12T22:30:00 02:00"), ts("2025-01-12T20:30:00Z"));
        assert_eq!(ts("2025-01-12T20:30:00.5"), ts("2025-01-12T20:30:00.500Z"));
    }

    #[test]
    fn rejects_garbage() {
        for bad in ["", "yesterday", "2025-13-01T00:00:00", "12345"] {
            assert!(bad.parse::<Timestamp>().is_err(), "{bad:?}");
        }
    }

    #[test]
    fn sums_past_year_9999_stay_rfc_3339() {
        let now = Timestamp::new(Utc::now());
        let last = ts("9999-12-31T23:59:59.999999Z");
        for delta in [
            TimeDelta::days(365 * 8_000),
            TimeDelta::MAX,
            TimeDelta::days(365 * 300_000),
        ] {
            let at = now.plus(delta);
            assert_eq!(at, last, "{delta}");
            assert_eq!(at.to_string(), "9999-12-31T23:59:59.999999Z");
            assert!(DateTime::parse_from_rfc3339(&at.to_string()).is_ok());
        }
        let soon = now.plus(TimeDelta::hours(55));
        assert_eq!(soon.as_datetime() - now.as_datetime(), TimeDelta::hours(55));
    }

    #[test]
    fn advance_is_strictly_increasing() {
        let t = ts("2025-01-12T20:30:00Z");
        assert!(t.advance_to(t) > t);
        assert!(t.advance_to(ts("2020-01-01T00:00:00Z")) > t);
        let later = ts("2025-01-12T20:31:00Z");
        assert_eq!(t.advance_to(later), later);
    }
}
