//! Human output: aligned tables, key/value blocks, memory sizes, CPUs, costs, timestamps, text
//! cut to a length, and agent-written text made safe for a terminal.

const KIB: u64 = 1024;
const MIB: u64 = 1024 * KIB;
const GIB: u64 = 1024 * MIB;
const TIB: u64 = 1024 * GIB;

/// Columns separated by two spaces, each as wide as its widest cell; no trailing spaces.
pub(crate) fn table(headers: &[&str], rows: &[Vec<String>]) -> String {
    let cols = headers.len();
    let mut widths: Vec<usize> = headers.iter().map(|h| h.chars().count()).collect();
    for row in rows {
        for (i, cell) in row.iter().enumerate().take(cols) {
            widths[i] = widths[i].max(cell.chars().count());
        }
    }
    let mut out = String::new();
    let mut line = |cells: &mut dyn Iterator<Item = &str>| {
        let mut l = String::new();
        for (i, cell) in cells.enumerate().take(cols) {
            if i > 0 {
                l.push_str("  ");
            }
            l.push_str(cell);
            let pad = widths[i].saturating_sub(cell.chars().count());
            l.extend(std::iter::repeat_n(' ', pad));
        }
        out.push_str(l.trim_end());
        out.push('\n');
    };
    line(&mut headers.iter().copied());
    for row in rows {
        line(&mut row.iter().map(String::as_str));
    }
    out
}

/// `key: value` lines with the values aligned.
pub(crate) fn key_values(pairs: &[(&str, String)]) -> String {
    let w = pairs
        .iter()
        .map(|(k, _)| k.chars().count())
        .max()
        .unwrap_or(0)
        + 1;
    let mut out = String::new();
    for (k, v) in pairs {
        let key = format!("{k}:");
        out.push_str(&format!("{key:<w$} {v}").replace('\n', " "));
        out.push('\n');
    }
    out
}

/// A memory cap the way people type it: `512m`, `2g`, `1.5g`, `64k`, `1000` (bytes).
pub(crate) fn memory_short(bytes: i64) -> String {
    if bytes < 0 {
        return bytes.to_string();
    }
    let b = bytes.unsigned_abs();
    for (unit, suffix) in [(TIB, "t"), (GIB, "g"), (MIB, "m"), (KIB, "k")] {
        if b >= unit {
            return if b.is_multiple_of(unit) {
                format!("{}{suffix}", b / unit)
            } else {
                format!("{}{suffix}", trim_decimal(b as f64 / unit as f64))
            };
        }
    }
    b.to_string()
}

/// A size for reading: `87.2 MiB`, `512 MiB`, `2 GiB`, `100 B`.
pub(crate) fn bytes_human(b: u64) -> String {
    for (unit, suffix) in [(TIB, "TiB"), (GIB, "GiB"), (MIB, "MiB"), (KIB, "KiB")] {
        if b >= unit {
            return if b.is_multiple_of(unit) {
                format!("{} {suffix}", b / unit)
            } else {
                format!("{:.1} {suffix}", b as f64 / unit as f64)
            };
        }
    }
    format!("{b} B")
}

/// `1.50` → `1.5`, `2.00` → `2` (one or two decimals).
fn trim_decimal(v: f64) -> String {
    let s = format!("{v:.2}");
    let s = s.trim_end_matches('0').trim_end_matches('.');
    s.to_owned()
}

/// CPUs as typed: `1`, `0.5`, `2.25`.
pub(crate) fn cpus(v: f64) -> String {
    trim_decimal(v)
}

/// A cost in USD to four decimals; `-` when unknown or unlimited.
pub(crate) fn usd(c: Option<f64>) -> String {
    c.map(|c| format!("${c:.4}")).unwrap_or_else(|| "-".into())
}

/// At most `max` characters, with `…` when cut.
pub(crate) fn truncate(s: &str, max: usize) -> String {
    if s.chars().count() <= max {
        return s.to_owned();
    }
    let mut t: String = s.chars().take(max.saturating_sub(1)).collect();
    t.push('…');
    t
}

/// RFC 3339 without the fraction of a second: `2024-05-01T12:34:56.123Z` → `2024-05-01T12:34:56Z`.
/// A text that is not RFC 3339 (a timestamp an older server stored) is shown as it is.
pub(crate) fn short_time(ts: impl AsRef<str>) -> String {
    let ts = ts.as_ref();
    let b = ts.as_bytes();
    let looks_rfc3339 = b.len() >= 19
        && b[4] == b'-'
        && b[7] == b'-'
        && (b[10] == b'T' || b[10] == b' ')
        && b[13] == b':'
        && b[16] == b':';
    if !looks_rfc3339 {
        return ts.to_owned();
    }
    let (head, rest) = ts.split_at(19);
    let rest = match rest.strip_prefix('.') {
        Some(r) => r.trim_start_matches(|c: char| c.is_ascii_digit()),
        None => rest,
    };
    format!("{head}{rest}")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tables_are_aligned_without_trailing_spaces() {
        let t = table(
            &["NAME", "STATE", "X"],
            &[
                vec!["acme/web".into(), "running".into(), "1".into()],
                vec!["b/c".into(), "stopped".into(), "".into()],
            ],
        );
        assert_eq!(
            t,
            "NAME      STATE    X\nacme/web  running  1\nb/c       stopped\n"
        );
    }

    #[test]
    fn tables_count_chars_not_bytes() {
        let t = table(&["A", "B"], &[vec!["ä".into(), "x".into()]]);
        assert_eq!(t, "A  B\nä  x\n");
    }

    #[test]
    fn tables_tolerate_short_rows() {
        let t = table(&["A", "B"], &[vec!["only".into()]]);
        assert_eq!(t, "A     B\nonly\n");
    }

    #[test]
    fn memory_formats() {
        assert_eq!(memory_short(512 * 1024 * 1024), "512m");
        assert_eq!(memory_short(2 * 1024 * 1024 * 1024), "2g");
        assert_eq!(memory_short(1536 * 1024 * 1024), "1.5g");
        assert_eq!(memory_short(64 * 1024), "64k");
        assert_eq!(memory_short(1000), "1000");
        assert_eq!(memory_short(-1), "-1");
        assert_eq!(bytes_human(91_435_827), "87.2 MiB");
        assert_eq!(bytes_human(512 * 1024 * 1024), "512 MiB");
        assert_eq!(bytes_human(2 * 1024 * 1024 * 1024), "2 GiB");
        assert_eq!(bytes_human(100), "100 B");
        assert_eq!(bytes_human(1536), "1.5 KiB");
    }

    #[test]
    fn cpus_and_times() {
        assert_eq!(cpus(1.0), "1");
        assert_eq!(cpus(0.5), "0.5");
        assert_eq!(cpus(2.25), "2.25");
        assert_eq!(
            short_time("2024-05-01T12:34:56.123456Z"),
            "2024-05-01T12:34:56Z"
        );
        assert_eq!(
            short_time("2024-05-01T12:34:56+02:00"),
            "2024-05-01T12:34:56+02:00"
        );
        assert_eq!(short_time("yesterday"), "yesterday");
    }

    #[test]
    fn key_values_align() {
        let s = key_values(&[("id", "ws_1".into()), ("memory", "512m".into())]);
        assert_eq!(s, "id:     ws_1\nmemory: 512m\n");
    }
}

/// `s` made safe to print on the operator's terminal: escape sequences (CSI, OSC, DCS, …, in
/// their 7-bit and C1 forms) removed whole, other control characters (C0 but newline and tab,
/// carriage return, DEL, C1) and bidirectional overrides dropped. Agent text is written by a
/// hostile party as far as the operator's terminal is concerned: an OSC 52 could fill the
/// clipboard, a CSI could rewrite what was shown, a title sequence could answer back.
pub(crate) fn terminal_safe(s: &str) -> std::borrow::Cow<'_, str> {
    let unsafe_char = |c: char| {
        (c.is_control() && c != '\n' && c != '\t')
            || matches!(c, '\u{202a}'..='\u{202e}' | '\u{2066}'..='\u{2069}')
    };
    if !s.chars().any(unsafe_char) {
        return std::borrow::Cow::Borrowed(s);
    }
    let mut out = String::with_capacity(s.len());
    let mut chars = s.chars().peekable();
    while let Some(c) = chars.next() {
        match c {
            '\x1b' => match chars.next() {
                Some('[') => skip_csi(&mut chars),
                Some(']' | 'P' | 'X' | '^' | '_') => skip_string(&mut chars),
                // Two-character escapes (ESC c, ESC 7, …) and charset selections (ESC ( B).
                Some('(' | ')' | '*' | '+' | '#' | '%') => {
                    chars.next();
                }
                _ => {}
            },
            '\u{9b}' => skip_csi(&mut chars),
            '\u{90}' | '\u{98}' | '\u{9d}' | '\u{9e}' | '\u{9f}' => skip_string(&mut chars),
            c if unsafe_char(c) => {}
            c => out.push(c),
        }
    }
    std::borrow::Cow::Owned(out)
}

/// Skips a control sequence's parameters up to and including its final byte.
fn skip_csi(chars: &mut std::iter::Peekable<std::str::Chars<'_>>) {
    for c in chars.by_ref() {
        if ('\u{40}'..='\u{7e}').contains(&c) {
            break;
        }
    }
}

/// Skips a string sequence (OSC, DCS, SOS, PM, APC) up to its terminator: BEL, ESC \ or ST.
fn skip_string(chars: &mut std::iter::Peekable<std::str::Chars<'_>>) {
    while let Some(c) = chars.next() {
        match c {
            '\x07' | '\u{9c}' => break,
            '\x1b' => {
                if chars.peek() == Some(&'\\') {
                    chars.next();
                }
                break;
            }
            _ => {}
        }
    }
}

/// Every string in `v` made [`terminal_safe`].
pub(crate) fn terminal_safe_json(v: &mut serde_json::Value) {
    match v {
        serde_json::Value::String(s) => {
            if let std::borrow::Cow::Owned(clean) = terminal_safe(s) {
                *s = clean;
            }
        }
        serde_json::Value::Array(items) => items.iter_mut().for_each(terminal_safe_json),
        serde_json::Value::Object(map) => map.values_mut().for_each(terminal_safe_json),
        _ => {}
    }
}

#[cfg(test)]
mod terminal_safe_tests {
    use super::*;

    #[test]
    fn escape_sequences_and_controls_are_removed_text_stays() {
        let cases = [
            ("plain text\n\twith tab", "plain text\n\twith tab"),
            ("\x1b[2J\x1b[1;1Hcleared", "cleared"),
            ("red \x1b[31mtext\x1b[0m", "red text"),
            // OSC 52 (clipboard) with BEL and with ST terminators, OSC 0 (title).
            ("a\x1b]52;c;ZXZpbA==\x07b", "ab"),
            ("a\x1b]0;owned\x1b\\b", "ab"),
            // C1 CSI and OSC.
            ("x\u{9b}31my", "xy"),
            ("x\u{9d}0;t\u{9c}y", "xy"),
            ("over\rwrite\x08\x7f", "overwrite"),
            ("bidi \u{202e}txet\u{202c} end", "bidi txet end"),
            ("charset \x1b(0lqk\x1b(B", "charset lqk"),
            ("unterminated \x1b]8;;http://x", "unterminated "),
            ("ünïcödé ✓", "ünïcödé ✓"),
        ];
        for (input, want) in cases {
            assert_eq!(terminal_safe(input), want, "{input:?}");
        }
    }

    #[test]
    fn json_strings_are_cleaned_in_place() {
        let mut v = serde_json::json!({"type": "message", "text": "hi\x1b]52;c;eA==\x07", "n": 1,
            "items": ["\x1b[31mx"]});
        terminal_safe_json(&mut v);
        assert_eq!(
            v,
            serde_json::json!({"type": "message", "text": "hi", "n": 1, "items": ["x"]})
        );
    }
}
