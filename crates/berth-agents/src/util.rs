//! Small helpers shared by the drivers: lenient JSON field access (never panics) and config
//! file encoding.

use serde_json::Value;

/// A string field, or `None` when missing or not a string.
pub(crate) fn str_of<'a>(v: &'a Value, key: &str) -> Option<&'a str> {
    v.get(key).and_then(Value::as_str)
}

/// A string field as an owned string, `""` when missing.
pub(crate) fn string(v: &Value, key: &str) -> String {
    str_of(v, key).unwrap_or_default().to_owned()
}

/// A non-negative count: integers, floats (truncated) and numeric strings; 0 otherwise.
pub(crate) fn count(v: &Value) -> u64 {
    match v {
        Value::Number(n) => n
            .as_u64()
            .or_else(|| {
                n.as_f64()
                    .filter(|f| f.is_finite() && *f > 0.0)
                    .map(|f| f as u64)
            })
            .unwrap_or(0),
        Value::String(s) => s.trim().parse().unwrap_or(0),
        _ => 0,
    }
}

/// A field as a count (see [`count`]); 0 when missing.
pub(crate) fn count_of(v: &Value, key: &str) -> u64 {
    v.get(key).map(count).unwrap_or(0)
}

/// An exit code, when the value is an integer that fits.
pub(crate) fn exit_code(v: &Value) -> Option<i32> {
    v.as_i64().and_then(|n| i32::try_from(n).ok())
}

/// A float field (cost), when numeric.
pub(crate) fn f64_of(v: &Value, key: &str) -> Option<f64> {
    v.get(key).and_then(Value::as_f64)
}

/// A TOML basic string literal (quoted and escaped).
pub(crate) fn toml_str(s: &str) -> String {
    let mut out = String::with_capacity(s.len() + 2);
    out.push('"');
    for c in s.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            '\n' => out.push_str("\\n"),
            '\r' => out.push_str("\\r"),
            '\t' => out.push_str("\\t"),
            c if (c as u32) < 0x20 || c as u32 == 0x7f => {
                out.push_str(&format!("\\u{:04X}", c as u32));
            }
            c => out.push(c),
        }
    }
    out.push('"');
    out
}

/// Joins a base URL and a path segment with exactly one slash.
pub(crate) fn join_url(base: &str, path: &str) -> String {
    format!(
        "{}/{}",
        base.trim_end_matches('/'),
        path.trim_start_matches('/')
    )
}

/// Text of a tool result that may be a string, a list of content blocks, or anything else.
pub(crate) fn text_content(v: &Value) -> String {
    match v {
        Value::Null => String::new(),
        Value::String(s) => s.clone(),
        Value::Array(items) => items
            .iter()
            .filter_map(|b| match b {
                Value::String(s) => Some(s.clone()),
                other => str_of(other, "text").map(str::to_owned),
            })
            .collect::<Vec<_>>()
            .join("\n"),
        other => str_of(other, "text")
            .map(str::to_owned)
            .unwrap_or_else(|| other.to_string()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn counts_are_lenient() {
        assert_eq!(count(&json!(5)), 5);
        assert_eq!(count(&json!(-5)), 0);
        assert_eq!(count(&json!(5.9)), 5);
        assert_eq!(count(&json!("7")), 7);
        assert_eq!(count(&json!(null)), 0);
        assert_eq!(count_of(&json!({"a": {}}), "a"), 0);
    }

    #[test]
    fn toml_strings_escape() {
        assert_eq!(toml_str(r#"a"b\c"#), r#""a\"b\\c""#);
        assert_eq!(toml_str("x\ny\u{1}"), r#""x\ny\u0001""#);
    }

    #[test]
    fn urls_join() {
        assert_eq!(join_url("http://h/openai/", "/v1"), "http://h/openai/v1");
        assert_eq!(join_url("http://h", "v1"), "http://h/v1");
    }

    #[test]
    fn text_content_shapes() {
        assert_eq!(text_content(&json!("x")), "x");
        assert_eq!(
            text_content(
                &json!([{"type":"text","text":"a"},{"type":"image"},{"type":"text","text":"b"}])
            ),
            "a\nb"
        );
        assert_eq!(text_content(&json!(null)), "");
        assert_eq!(text_content(&json!(3)), "3");
    }
}
