//! The tools' input schemas (JSON Schema, the subset MCP clients read) and the check of a call's
//! arguments against them, so a model gets a precise tool error before any request is made.
//! The patterns are the OpenAPI document's (`docs/openapi.json`); the server checks again.

use serde_json::{json, Map, Value};

/// A workspace reference: `tenant/name`, a bare name or an id.
pub const WS_PATTERN: &str = "^(ws_[0-9a-f]{32}|[a-z](-?[a-z0-9])*(/[a-z](-?[a-z0-9])*)?)$";
/// A tenant, workspace or template name.
pub const NAME_PATTERN: &str = "^[a-z](-?[a-z0-9])*$";
/// A memory cap: `32m`…`9999m`, `1g`…`999g`.
pub const MEMORY_PATTERN: &str = "^((3[2-9]|[4-9][0-9]|[1-9][0-9]{2,3})[mM]|[1-9][0-9]{0,2}[gG])$";
/// A CPU cap as a decimal string.
pub const CPUS_PATTERN: &str = "^(0\\.(0[1-9]|[1-9][0-9]?)|[1-9][0-9]{0,2}(\\.[0-9]{1,2})?)$";
/// `since`/`until` of usage: an RFC 3339 time, a date, or an age like `24h`, `7d`.
pub const SINCE_PATTERN: &str =
    "^([0-9]{4}-[0-9]{2}-[0-9]{2}([T ][0-9:.]+(Z|[+-][0-9]{2}:?[0-9]{2})?)?|[0-9]{1,6}[mh]|[0-9]{1,5}d)$";
/// An approval request id.
pub const REQ_PATTERN: &str = "^[A-Za-z0-9_-][A-Za-z0-9._:-]{0,127}$";
/// The coding agents a task can run.
pub const AGENTS: [&str; 4] = ["claude", "codex", "gemini", "opencode"];

/// `{"type":"string", …}` with a description.
pub fn string(desc: &str) -> Value {
    json!({"type": "string", "description": desc})
}

/// A string matching `pattern`, at most `max` characters.
pub fn pattern(desc: &str, pattern: &str, max: u64) -> Value {
    json!({"type": "string", "description": desc, "pattern": pattern, "minLength": 1, "maxLength": max})
}

/// A string that is one of `values`.
pub fn one_of(desc: &str, values: &[&str]) -> Value {
    json!({"type": "string", "description": desc, "enum": values})
}

pub fn boolean(desc: &str) -> Value {
    json!({"type": "boolean", "description": desc})
}

pub fn integer(desc: &str, min: i64, max: i64) -> Value {
    json!({"type": "integer", "description": desc, "minimum": min, "maximum": max})
}

/// The reference of a workspace (`workspace`).
pub fn workspace() -> Value {
    pattern(
        "Workspace: TENANT/NAME, a bare NAME, or its id (ws_…)",
        WS_PATTERN,
        40,
    )
}

/// A task id (`task`).
pub fn task() -> Value {
    json!({"type": "string", "description": "Task id", "minLength": 1, "maxLength": 100})
}

/// An object schema: these properties, these required, nothing else.
pub fn object(props: &[(&str, Value)], required: &[&str]) -> Value {
    let properties: Map<String, Value> = props
        .iter()
        .map(|(k, v)| ((*k).to_owned(), v.clone()))
        .collect();
    json!({
        "type": "object",
        "properties": properties,
        "required": required,
        "additionalProperties": false,
    })
}

/// Checks `args` against an object `schema` of the subset built above. `Err` says what is
/// wrong in one sentence naming the argument.
pub fn check(schema: &Value, args: &Value) -> Result<(), String> {
    let Some(args) = args.as_object() else {
        return Err("the arguments must be a JSON object".into());
    };
    let empty = Map::new();
    let props = schema["properties"].as_object().unwrap_or(&empty);
    for req in schema["required"].as_array().into_iter().flatten() {
        let req = req.as_str().unwrap_or_default();
        if args.get(req).is_none_or(Value::is_null) {
            return Err(format!("missing required argument `{req}`"));
        }
    }
    for (name, value) in args {
        let Some(prop) = props.get(name) else {
            let known: Vec<&str> = props.keys().map(String::as_str).collect();
            return Err(format!(
                "unknown argument `{name}` (known: {})",
                known.join(", ")
            ));
        };
        if !value.is_null() {
            check_value(prop, value).map_err(|e| format!("argument `{name}`: {e}"))?;
        }
    }
    Ok(())
}

fn check_value(prop: &Value, value: &Value) -> Result<(), String> {
    match prop["type"].as_str().unwrap_or_default() {
        "string" => check_string(prop, value),
        "boolean" if value.is_boolean() => Ok(()),
        "boolean" => Err("must be true or false".into()),
        "integer" => check_integer(prop, value),
        "object" => {
            let Some(map) = value.as_object() else {
                return Err("must be an object".into());
            };
            match map.iter().find(|(_, v)| !v.is_string()) {
                Some((k, _)) => Err(format!("`{k}` must be a string")),
                None => Ok(()),
            }
        }
        _ => Ok(()),
    }
}

fn check_string(prop: &Value, value: &Value) -> Result<(), String> {
    let Some(s) = value.as_str() else {
        return Err("must be a string".into());
    };
    if let Some(values) = prop["enum"].as_array() {
        if !values.iter().any(|v| v.as_str() == Some(s)) {
            let names: Vec<&str> = values.iter().filter_map(Value::as_str).collect();
            return Err(format!("must be one of {}", names.join(", ")));
        }
    }
    let len = s.chars().count() as u64;
    if prop["minLength"].as_u64().is_some_and(|m| len < m) {
        return Err("must not be empty".into());
    }
    if let Some(max) = prop["maxLength"].as_u64().filter(|m| len > *m) {
        return Err(format!("longer than {max} characters"));
    }
    if let Some(p) = prop["pattern"].as_str() {
        let re = regex::Regex::new(p).map_err(|e| format!("bad pattern in the schema: {e}"))?;
        if !re.is_match(s) {
            return Err(format!("{s:?} does not match {p}"));
        }
    }
    Ok(())
}

fn check_integer(prop: &Value, value: &Value) -> Result<(), String> {
    let Some(n) = value.as_i64() else {
        return Err("must be an integer".into());
    };
    let min = prop["minimum"].as_i64().unwrap_or(i64::MIN);
    let max = prop["maximum"].as_i64().unwrap_or(i64::MAX);
    if n < min || n > max {
        return Err(format!("must be between {min} and {max}"));
    }
    Ok(())
}
