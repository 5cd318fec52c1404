//! berth's one timestamp type: an instant in berth's form, RFC 3339 in UTC with exactly three
//! decimals (`2026-12-04T05:06:07.123Z`), as stored, sent over the API and compared as text (the
//! form has a fixed width, so it sorts like the instants it names).
//!
//! A [`Timestamp`] is made from a clock ([`Timestamp::now`], `From<OffsetDateTime>`), parsed from
//! any RFC 3339 text ([`Timestamp::parse`], serde's `Deserialize`; both normalize to berth's form)
//! or read back from storage ([`Timestamp::from_stored`], which never fails: a stored text that is
//! not RFC 3339 is kept as it is, so no row written by an older berth fails to load).
//!
//! In the OpenAPI document a timestamp field is `type: string, format: date-time`; `berth-api`
//! declares it on the field (`#[schema(value_type = String, format = DateTime)]`), which keeps
//! the schema inline like the `String` it replaced.

use std::fmt;

use time::format_description::well_known::Rfc3339;
use time::{OffsetDateTime, UtcOffset};

/// An instant in berth's form (see the module doc). Ordered as the instants it names (values
/// kept verbatim by [`Timestamp::from_stored`] order by their text).
#[derive(Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Timestamp(String);

impl Timestamp {
    /// Now.
    pub fn now() -> Self {
        Self::from(OffsetDateTime::now_utc())
    }

    /// Any RFC 3339 text (any offset, any precision), normalized to berth's form (UTC,
    /// truncated to milliseconds); `None` when `s` is not RFC 3339.
    pub fn parse(s: &str) -> Option<Self> {
        OffsetDateTime::parse(s, &Rfc3339).ok().map(Self::from)
    }

    /// A value read back from storage: normalized when it is RFC 3339, otherwise the text as
    /// stored (older rows must load; such a value orders by its text and [`Self::instant`] is
    /// `None`).
    pub fn from_stored(s: impl Into<String>) -> Self {
        let s = s.into();
        Self::parse(&s).unwrap_or(Self(s))
    }

    /// The text, in berth's form (or as stored, see [`Self::from_stored`]).
    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// The instant, or `None` for a stored text that is not RFC 3339.
    pub fn instant(&self) -> Option<OffsetDateTime> {
        OffsetDateTime::parse(&self.0, &Rfc3339).ok()
    }
}

impl From<OffsetDateTime> for Timestamp {
    /// `t` in berth's form: UTC, truncated to milliseconds (years outside 0000–9999, which RFC
    /// 3339 cannot write, are clamped to its first or last millisecond).
    fn from(t: OffsetDateTime) -> Self {
        const FIRST: &str = "0000-01-01T00:00:00.000Z";
        const LAST: &str = "9999-12-31T23:59:59.999Z";
        // In UTC the instant can fall outside the calendar `time` supports (e.g.
        // `9999-12-31T23:00:00-02:00`): that is past either end as well.
        let Some(t) = t.checked_to_offset(UtcOffset::UTC) else {
            return Self(if t.year() < 0 { FIRST } else { LAST }.into());
        };
        if t.year() < 0 {
            return Self(FIRST.into());
        }
        if t.year() > 9999 {
            return Self(LAST.into());
        }
        Self(format!(
            "{:04}-{:02}-{:02}T{:02}:{:02}:{:02}.{:03}Z",
            t.year(),
            u8::from(t.month()),
            t.day(),
            t.hour(),
            t.minute(),
            t.second(),
            t.millisecond()
        ))
    }
}

impl Default for Timestamp {
    /// The Unix epoch (`1970-01-01T00:00:00.000Z`): a placeholder for structs that derive
    /// `Default`, not a time anything happened.
    fn default() -> Self {
        Self::from(OffsetDateTime::UNIX_EPOCH)
    }
}

impl fmt::Display for Timestamp {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl fmt::Debug for Timestamp {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Debug::fmt(&self.0, f)
    }
}

impl std::ops::Deref for Timestamp {
    type Target = str;

    fn deref(&self) -> &str {
        &self.0
    }
}

impl AsRef<str> for Timestamp {
    fn as_ref(&self) -> &str {
        &self.0
    }
}

impl PartialEq<str> for Timestamp {
    fn eq(&self, other: &str) -> bool {
        self.0 == other
    }
}

impl PartialEq<&str> for Timestamp {
    fn eq(&self, other: &&str) -> bool {
        self.0 == *other
    }
}

/// Text that is not RFC 3339.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0:?} is not an RFC 3339 time (like 2026-12-04T05:06:07.123Z)")]
pub struct TimestampError(pub String);

impl std::str::FromStr for Timestamp {
    type Err = TimestampError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Self::parse(s).ok_or_else(|| TimestampError(s.into()))
    }
}

impl serde::Serialize for Timestamp {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&self.0)
    }
}

impl<'de> serde::Deserialize<'de> for Timestamp {
    /// Any RFC 3339 text, normalized; anything else is refused.
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = <String as serde::Deserialize>::deserialize(d)?;
        s.parse().map_err(serde::de::Error::custom)
    }
}

/// For `#[serde(deserialize_with = "…")]` on a timestamp read back from stored JSON: like
/// [`Timestamp::from_stored`], any string loads.
pub fn deserialize_stored<'de, D: serde::Deserializer<'de>>(d: D) -> Result<Timestamp, D::Error> {
    let s = <String as serde::Deserialize>::deserialize(d)?;
    Ok(Timestamp::from_stored(s))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn normalizes_to_utc_milliseconds_with_three_decimals() {
        let t = Timestamp::parse("2026-12-04T07:06:07.123456789+02:00").unwrap();
        assert_eq!(t.as_str(), "2026-12-04T05:06:07.123Z");
        // Always three decimals, so the text has one width and sorts like the instants.
        let whole = Timestamp::parse("2026-12-04T05:06:07Z").unwrap();
        assert_eq!(whole.to_string(), "2026-12-04T05:06:07.000Z");
        assert_eq!(
            Timestamp::parse("2026-12-04t05:06:07.12z").unwrap(),
            "2026-12-04T05:06:07.120Z"
        );
        assert_eq!(
            Timestamp::parse(t.as_str()).unwrap(),
            t,
            "berth's form parses to itself"
        );
        for bad in ["yesterday", "", "2026-12-04", "2026-12-04T05:06Z", "24h"] {
            assert_eq!(Timestamp::parse(bad), None, "{bad:?}");
            assert!(bad.parse::<Timestamp>().is_err(), "{bad:?}");
        }
        assert!(t.instant().is_some());
        let (a, b) = (Timestamp::now(), Timestamp::now());
        assert!(a <= b, "{a} > {b}");
        assert_eq!(Timestamp::parse(a.as_str()), Some(a));
    }

    #[test]
    fn out_of_range_years_clamp() {
        let far = OffsetDateTime::parse("9999-12-31T23:00:00+00:00", &Rfc3339).unwrap();
        assert_eq!(
            Timestamp::from(far.to_offset(UtcOffset::from_hms(-2, 0, 0).unwrap())).as_str(),
            "9999-12-31T23:00:00.000Z"
        );
        // Parsed text whose UTC instant lies past the calendar's end is clamped, not a panic.
        assert_eq!(
            Timestamp::parse("9999-12-31T23:00:00-02:00").unwrap(),
            "9999-12-31T23:59:59.999Z"
        );
        assert_eq!(
            Timestamp::parse("0000-01-01T00:30:00+01:00").unwrap(),
            "0000-01-01T00:00:00.000Z"
        );
        let before = OffsetDateTime::parse("0000-01-01T00:00:00Z", &Rfc3339).unwrap()
            - time::Duration::days(1);
        assert_eq!(Timestamp::from(before).as_str(), "0000-01-01T00:00:00.000Z");
    }

    #[test]
    fn orders_as_instants_across_offsets() {
        // As text the second sorts first ("03" < "05"); as instants it is half an hour later.
        let a = Timestamp::parse("2026-12-04T05:00:00.500+01:00").unwrap();
        let b = Timestamp::parse("2026-12-04T03:30:00-01:00").unwrap();
        assert!(a < b, "{a} !< {b}");
        // Whole seconds against fractions: without the fixed width "07Z" would sort after
        // "07.5Z".
        let whole = Timestamp::parse("2026-12-04T05:06:07Z").unwrap();
        let half = Timestamp::parse("2026-12-04T05:06:07.5Z").unwrap();
        assert!(whole < half);
        let mut v = vec![b.clone(), half.clone(), a.clone(), whole.clone()];
        v.sort();
        assert_eq!(v, [a, b, whole, half]);
    }

    #[test]
    fn serde_is_the_plain_string() {
        let t = Timestamp::parse("2026-12-04T05:06:07.123Z").unwrap();
        let json = serde_json::to_string(&t).unwrap();
        assert_eq!(json, r#""2026-12-04T05:06:07.123Z""#);
        assert_eq!(
            json,
            serde_json::to_string("2026-12-04T05:06:07.123Z").unwrap(),
            "the wire form of the String it replaced"
        );
        assert_eq!(serde_json::from_str::<Timestamp>(&json).unwrap(), t);
        // Input in another offset is normalized; text that is not a time is refused.
        let other: Timestamp = serde_json::from_str(r#""2026-12-04T06:06:07.123+01:00""#).unwrap();
        assert_eq!(other, t);
        let err = serde_json::from_str::<Timestamp>(r#""soon""#).unwrap_err();
        assert!(err.to_string().contains("not an RFC 3339 time"), "{err}");
        assert!(serde_json::from_str::<Timestamp>("17").is_err());
    }

    #[test]
    fn stored_values_always_load() {
        // An older row in another precision or offset comes back in berth's form ...
        assert_eq!(
            Timestamp::from_stored("2026-12-04T05:06:07.123456+00:00"),
            "2026-12-04T05:06:07.123Z"
        );
        // ... and one that is not RFC 3339 at all loads as it was stored.
        let legacy = Timestamp::from_stored("1733288767");
        assert_eq!(legacy.as_str(), "1733288767");
        assert_eq!(legacy.instant(), None);
        assert_eq!(serde_json::to_string(&legacy).unwrap(), r#""1733288767""#);
        #[derive(serde::Deserialize)]
        struct Row {
            #[serde(deserialize_with = "deserialize_stored")]
            at: Timestamp,
        }
        let row: Row = serde_json::from_str(r#"{"at":""}"#).unwrap();
        assert_eq!(row.at, "");
        let row: Row = serde_json::from_str(r#"{"at":"2026-12-04T05:06:07+00:00"}"#).unwrap();
        assert_eq!(row.at, "2026-12-04T05:06:07.000Z");
    }
}
