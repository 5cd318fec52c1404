//! berth's one timestamp form: RFC 3339 in UTC with millisecond precision
//! (`2026-12-04T05:06:07.123Z`), as stored, sent over the API and compared as text (the form
//! sorts like the instants it names).

use time::format_description::well_known::Rfc3339;
use time::OffsetDateTime;

/// The form of `t` (truncated to milliseconds).
pub fn format(t: OffsetDateTime) -> String {
    let t = t.to_offset(time::UtcOffset::UTC);
    let t = t
        .replace_nanosecond(t.millisecond() as u32 * 1_000_000)
        .unwrap_or(t);
    t.format(&Rfc3339)
        .unwrap_or_else(|_| t.unix_timestamp().to_string())
}

/// Now, in berth's form.
pub fn now() -> String {
    format(OffsetDateTime::now_utc())
}

/// Any RFC 3339 timestamp (e.g. a client's `since`), or `None`.
pub fn parse(s: &str) -> Option<OffsetDateTime> {
    OffsetDateTime::parse(s, &Rfc3339).ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn millisecond_utc_and_sortable() {
        let t = parse("2026-12-04T07:06:07.123456789+02:00").unwrap();
        assert_eq!(format(t), "2026-12-04T05:06:07.123Z");
        let (a, b) = (now(), now());
        assert!(a <= b, "{a} > {b}");
        assert!(parse(&a).is_some());
        assert_eq!(parse("yesterday"), None);
    }
}
