//! The OpenAPI document, generated from the handlers' annotations and the wire types.

use axum::response::IntoResponse;
use berth_api as api;
use berth_domain::name::MAX_NAME_LEN;
use serde_json::{json, Value};
use utoipa::openapi::security::{HttpAuthScheme, HttpBuilder, SecurityScheme};
use utoipa::{Modify, OpenApi};

use crate::routes::terminal::{TERMINAL_MAX, TERMINAL_MIN};
use crate::routes::{
    backups, egress, egress_templates, secrets, system, tasks, terminal, usage, workspaces,
};

#[derive(OpenApi)]
#[openapi(
    info(title = "berth API", version = "1", description = "Isolated, persistent workspaces for coding agents."),
    paths(
        system::version, system::whoami, system::doctor, system::audit,
        system::image_status, system::image_build,
        workspaces::list, workspaces::create, workspaces::show, workspaces::remove,
        workspaces::start, workspaces::stop, backups::backup, backups::restore,
        terminal::exec, terminal::exec_ws, terminal::list_sessions, terminal::create_session,
        terminal::get_session, terminal::remove_session, terminal::scrollback, terminal::attach,
        tasks::create, tasks::list, tasks::show, tasks::send, tasks::cancel, tasks::events,
        tasks::stream, tasks::diff,
        usage::usage, usage::calls, usage::call, usage::list_budgets, usage::set_budget, usage::remove_budget,
        egress::rules, egress::set_rules, egress::add_rule, egress::remove_rule, egress::log,
        egress::log_stream, egress::effective,
        egress_templates::list, egress_templates::create, egress_templates::show,
        egress_templates::set, egress_templates::remove, egress_templates::attached,
        egress_templates::attach, egress_templates::detach,
        secrets::set, secrets::list, secrets::remove,
        openapi_json,
    ),
    components(schemas(berth_api::WsControl, berth_api::ExecStart, berth_api::BackupManifest,
        berth_api::BackupTrailer)),
    modifiers(&Bearer),
)]
pub struct ApiDoc;

struct Bearer;

impl Modify for Bearer {
    fn modify(&self, openapi: &mut utoipa::openapi::OpenApi) {
        let components = openapi.components.get_or_insert_with(Default::default);
        components.add_security_scheme(
            "bearer",
            SecurityScheme::Http(HttpBuilder::new().scheme(HttpAuthScheme::Bearer).build()),
        );
    }
}

/// This document.
#[utoipa::path(get, path = "/api/v1/openapi.json", tag = "system", operation_id = "openapi",
    responses((status = 200, description = "OpenAPI 3.1 document")), security(("bearer" = [])))]
pub async fn openapi_json() -> impl IntoResponse {
    axum::Json(document())
}

pub async fn serve() -> impl IntoResponse {
    openapi_json().await
}

/// The served document: the generated one, with the constraints the validators enforce and the
/// error responses every operation can give written in from the same constants the code uses.
pub fn document() -> Value {
    let mut doc = serde_json::to_value(ApiDoc::openapi()).unwrap_or(Value::Null);
    constrain(&mut doc);
    error_responses(&mut doc);
    doc
}

/// A tenant, workspace or template name ([`berth_domain::Name`]): a letter, then letters, digits
/// and single inner dashes. Together with `maxLength` exactly what `Name::parse` accepts.
pub const NAME_PATTERN: &str = "^[a-z](-?[a-z0-9])*$";

/// A workspace reference: an id, a bare name or `tenant/name`. At most [`MAX_NAME_LEN`] long in
/// all, which documents a subset of the qualified references (each name may be 40 long).
pub const WORKSPACE_REF_PATTERN: &str =
    "^(ws_[0-9a-f]{32}|[a-z](-?[a-z0-9])*(/[a-z](-?[a-z0-9])*)?)$";

/// Egress rules the schema documents: `allow` or `deny`, a host name of up to four labels, an
/// optional port. The server takes the whole syntax (wildcards, CIDR blocks, methods, path
/// prefixes: docs/api.md).
pub const EGRESS_RULE_PATTERN: &str =
    "^(allow|deny) [a-z][a-z0-9]{0,15}(\\.[a-z][a-z0-9]{0,15}){0,3}(:[1-9][0-9]{0,3})?$";

/// An image reference, as the engines parse one: `[domain[:port]/]path[:tag][@sha256:digest]`.
/// Both the schema and [`is_image_reference`] use it, so they cannot drift.
pub const IMAGE_REF_PATTERN: &str = concat!(
    "^(([A-Za-z0-9]([A-Za-z0-9-]*[A-Za-z0-9])?(\\.[A-Za-z0-9]([A-Za-z0-9-]*[A-Za-z0-9])?)*(:[0-9]{1,5})?)/)?",
    "[a-z0-9]+((\\.|_|__|-+)[a-z0-9]+)*(/[a-z0-9]+((\\.|_|__|-+)[a-z0-9]+)*)*",
    "(:[A-Za-z0-9_][A-Za-z0-9_.-]{0,127})?(@sha256:[0-9a-f]{64})?$"
);

/// The longest image reference the engines take.
pub const IMAGE_REF_MAX_LEN: usize = 255;

/// Whether `s` is an image reference an engine will parse ([`IMAGE_REF_PATTERN`]).
pub fn is_image_reference(s: &str) -> bool {
    static RE: std::sync::LazyLock<Option<regex::Regex>> =
        std::sync::LazyLock::new(|| regex::Regex::new(IMAGE_REF_PATTERN).ok());
    s.len() <= IMAGE_REF_MAX_LEN && RE.as_ref().is_some_and(|re| re.is_match(s))
}

/// Operations whose JSON body is optional: no body (and no `Content-Type`) means the defaults,
/// so `curl -X POST` works.
pub const OPTIONAL_BODIES: [(&str, &str); 2] = [
    ("/api/v1/workspaces/{ws}/sessions", "post"),
    ("/api/v1/image/build", "post"),
];

/// Worktree branches the schema documents: words joined by `-`, `_` or `/` (the server takes
/// any valid git branch name).
pub const BRANCH_PATTERN: &str = "^[A-Za-z0-9]{1,20}([-_/][A-Za-z0-9]{1,20}){0,3}$";

/// A task's `dir`: `~`, `~/…` or an absolute path, without `..`.
pub const DIR_PATTERN: &str =
    "^(~|~/[A-Za-z0-9_-]{0,20}|/[A-Za-z0-9_-]{0,20})(/[A-Za-z0-9_-]{1,20}){0,3}$";

/// Host names the schema documents for a secret's `hosts` (the server takes any host name).
pub const HOST_PATTERN: &str = "^[a-z][a-z0-9]{0,15}(\\.[a-z][a-z0-9]{0,15}){0,3}$";

/// Headers the schema documents for a secret's `headers`: `authorization` or an `x-` header
/// (the server takes any header but those the proxy sets or drops).
pub const SECRET_HEADER_PATTERN: &str = "^(authorization|x-[a-z0-9]{1,20}(-[a-z0-9]{1,20}){0,3})$";

/// A secret's name: an environment variable's ([`crate::vault::valid_name`]).
pub const SECRET_NAME_PATTERN: &str = "^[A-Z_][A-Z0-9_]*$";

/// Memory caps the schema documents: 32m to 9999m, or 1g to 999g — always within
/// [`berth_domain::limits`]'s range. The server also takes bytes, `k`, `mb`, `gib` and
/// decimals (docs/api.md); above the host's memory it answers 422 `exceeds_capacity`.
pub const MEMORY_PATTERN: &str = "^((3[2-9]|[4-9][0-9]|[1-9][0-9]{2,3})[mM]|[1-9][0-9]{0,2}[gG])$";

/// CPU caps the schema documents: 0.01 to 999.99, at most two decimals.
pub const CPUS_PATTERN: &str = "^(0\\.(0[1-9]|[1-9][0-9]?)|[1-9][0-9]{0,2}(\\.[0-9]{1,2})?)$";

fn name_schema() -> Value {
    json!({"type": "string", "pattern": NAME_PATTERN, "minLength": 1, "maxLength": MAX_NAME_LEN})
}

fn ref_schema() -> Value {
    json!({"type": "string", "pattern": WORKSPACE_REF_PATTERN, "minLength": 1, "maxLength": MAX_NAME_LEN})
}

fn limit_schema(l: api::PageLimit) -> Value {
    json!({"type": "integer", "format": "int64", "minimum": 1, "maximum": l.max, "default": l.default})
}

/// Writes the validators' constraints into the document.
fn constrain(doc: &mut Value) {
    let secret_name = json!({"type": "string", "pattern": SECRET_NAME_PATTERN, "minLength": 1,
        "maxLength": crate::vault::MAX_NAME_LEN});
    let size = json!({"type": "integer", "format": "int32", "minimum": TERMINAL_MIN, "maximum": TERMINAL_MAX});
    // Component properties: (schema, property, constraint).
    let mut props: Vec<(&str, &str, Value)> = vec![
        ("CreateWorkspace", "name", name_schema()),
        ("CreateWorkspace", "tenant", name_schema()),
        (
            "CreateWorkspace",
            "memory",
            json!({"type": "string", "pattern": MEMORY_PATTERN}),
        ),
        (
            "CreateWorkspace",
            "cpus",
            json!({"type": "string", "pattern": CPUS_PATTERN}),
        ),
        (
            "CreateWorkspace",
            "pids",
            json!({"type": "integer", "format": "int64",
            "minimum": berth_domain::limits::MIN_PIDS, "maximum": berth_domain::limits::MAX_PIDS}),
        ),
        (
            "CreateWorkspace",
            "network",
            json!({"type": "string", "enum": ["none", "bridge"]}),
        ),
        ("CreateEgressTemplate", "tenant", name_schema()),
        ("CreateEgressTemplate", "name", name_schema()),
        ("AttachEgressTemplate", "template", name_schema()),
        ("CreateTask", "workspace", ref_schema()),
        ("CreateTask", "prompt", not_blank()),
        (
            "CreateTask",
            "agent",
            json!({"type": "string", "enum": ["claude", "codex", "gemini", "opencode"]}),
        ),
        ("SendMessage", "text", not_blank()),
        (
            "CreateTask",
            "worktree",
            json!({"type": "string", "pattern": BRANCH_PATTERN}),
        ),
        (
            "CreateTask",
            "dir",
            json!({"type": "string", "pattern": DIR_PATTERN}),
        ),
        (
            "SetSecret",
            "value",
            json!({"type": "string", "minLength": 1}),
        ),
        ("SetBudget", "tenant", name_schema()),
        (
            "CreateWorkspace",
            "image",
            json!({"type": "string", "pattern": IMAGE_REF_PATTERN,
            "maxLength": IMAGE_REF_MAX_LEN}),
        ),
        (
            "SetBudget",
            "max_tokens",
            json!({"type": "integer", "format": "int64", "minimum": 0,
            "maximum": api::MAX_BUDGET_TOKENS}),
        ),
        (
            "SetBudget",
            "max_cost_usd",
            json!({"type": "number", "minimum": 0}),
        ),
        (
            "SetBudget",
            "period",
            json!({"type": "string", "enum": ["day", "month", "total"]}),
        ),
        ("SetBudget", "workspace", ref_schema()),
        ("UseSecret", "name", secret_name.clone()),
        ("CreateSession", "cols", size.clone()),
        ("CreateSession", "rows", size.clone()),
        ("CreateSession", "cmd", argv_schema()),
        ("ExecRequest", "cmd", argv_schema()),
        ("ExecStart", "cmd", argv_schema()),
    ];
    let rule = json!({"type": "string", "pattern": EGRESS_RULE_PATTERN});
    let rules = json!({"type": "array", "items": rule});
    props.extend([
        ("CreateWorkspace", "egress", rules.clone()),
        (
            "CreateWorkspace",
            "egress_templates",
            json!({"type": "array", "items": name_schema(),
            "uniqueItems": true}),
        ),
        ("EgressRules", "rules", rules.clone()),
        ("AddEgressRule", "rule", rule),
        ("CreateEgressTemplate", "rules", rules.clone()),
        ("SetEgressTemplate", "rules", rules),
        (
            "UseSecret",
            "hosts",
            json!({"type": "array", "items": {"type": "string", "pattern": HOST_PATTERN}}),
        ),
        (
            "UseSecret",
            "headers",
            json!({"type": "array", "items": {"type": "string", "pattern": SECRET_HEADER_PATTERN}}),
        ),
        (
            "UseSecret",
            "delivery",
            json!({"type": "string", "enum": ["placeholder", "env", "file"]}),
        ),
    ]);
    for (schema, prop, c) in props {
        if let Some(p) = doc.pointer_mut(&format!("/components/schemas/{schema}/properties/{prop}"))
        {
            merge(p, c);
        }
    }
    // Placeholder delivery (the default) needs hosts; headers are for placeholders only.
    if let Some(u) = doc.pointer_mut("/components/schemas/UseSecret") {
        merge(
            u,
            json!({
                "if": {"properties": {"delivery": {"enum": ["env", "file"]}}, "required": ["delivery"]},
                "then": {"properties": {"headers": {"maxItems": 0}}},
                "else": {"properties": {"hosts": {"minItems": 1}}, "required": ["hosts"]},
            }),
        );
    }
    // A budget is a tenant's or a workspace's: exactly one of them.
    // It caps tokens, cost or both.
    if let Some(b) = doc.pointer_mut("/components/schemas/SetBudget") {
        merge(
            b,
            json!({"allOf": [
                {"oneOf": [
                    {"required": ["tenant"], "properties": {"tenant": {"type": "string"}}},
                    {"required": ["workspace"], "properties": {"workspace": {"type": "string"}}},
                ]},
                {"anyOf": [
                    {"required": ["max_tokens"], "properties": {"max_tokens": {"type": "integer"}}},
                    {"required": ["max_cost_usd"], "properties": {"max_cost_usd": {"type": "number"}}},
                ]},
            ]}),
        );
    }
    if let Some(op) = doc.pointer_mut("/paths/~1api~1v1~1budgets/delete") {
        op["parameters"] = json!([{
            "name": "target", "in": "query", "required": true, "style": "form", "explode": true,
            "description": "`tenant=T` or `workspace=W`: exactly one",
            "schema": {"type": "object", "additionalProperties": false,
                "properties": {"tenant": name_schema(), "workspace": ref_schema()},
                "oneOf": [{"required": ["tenant"]}, {"required": ["workspace"]}]},
        }]);
    }
    // Bodies that may be left out (the handlers take no body as the defaults).
    for (path, method) in OPTIONAL_BODIES {
        let pointer = format!("/paths/{}/{method}/requestBody", path.replace('/', "~1"));
        if let Some(b) = doc.pointer_mut(&pointer) {
            b["required"] = json!(false);
        }
    }
    // Parameters: (path prefix, parameter name, constraint); "" matches every path.
    let params: Vec<(&str, &str, Value)> = vec![
        ("", "ws", ref_schema()),
        ("", "workspace", ref_schema()),
        ("", "tenant", name_schema()),
        ("/api/v1/egress/templates/", "name", name_schema()),
        (
            "/api/v1/workspaces/{ws}/egress/templates/",
            "name",
            name_schema(),
        ),
        ("/api/v1/secrets/", "name", secret_name),
        (
            "/api/v1/workspaces/{ws}/sessions/{session}/attach",
            "cols",
            size.clone(),
        ),
        (
            "/api/v1/workspaces/{ws}/sessions/{session}/attach",
            "rows",
            size,
        ),
        (
            "/api/v1/tasks",
            "state",
            json!({"type": "string", "enum": ["queued", "starting",
            "running", "waiting", "completed", "failed", "cancelled"]}),
        ),
        (
            "/api/v1/usage",
            "since",
            json!({"type": "string", "anyOf": [
            {"format": "date-time"}, {"format": "date"}, {"pattern": "^([0-9]{1,6}[mh]|[0-9]{1,5}d)$"}]}),
        ),
        ("/api/v1/audit", "limit", limit_schema(api::AUDIT_LIMIT)),
        (
            "/api/v1/usage/calls",
            "limit",
            limit_schema(api::CALLS_LIMIT),
        ),
        (
            "/api/v1/workspaces/{ws}/egress/log",
            "limit",
            limit_schema(api::EGRESS_LOG_LIMIT),
        ),
        (
            "/api/v1/tasks/{task}/events",
            "limit",
            limit_schema(api::EVENTS_LIMIT),
        ),
    ];
    let Some(paths) = doc.get_mut("paths").and_then(Value::as_object_mut) else {
        return;
    };
    for (path, item) in paths.iter_mut() {
        for op in item
            .as_object_mut()
            .into_iter()
            .flat_map(|o| o.values_mut())
        {
            let Some(list) = op.get_mut("parameters").and_then(Value::as_array_mut) else {
                continue;
            };
            for p in list {
                let name = p
                    .get("name")
                    .and_then(Value::as_str)
                    .unwrap_or_default()
                    .to_owned();
                for (prefix, pname, c) in &params {
                    if *pname == name && path.starts_with(prefix) {
                        if let Some(schema) = p.get_mut("schema") {
                            merge(schema, c.clone());
                        }
                    }
                }
            }
        }
    }
}

/// Text with something in it besides whitespace.
fn not_blank() -> Value {
    json!({"type": "string", "pattern": "\\S"})
}

/// An argv: at least one element, the first (the program) not empty.
fn argv_schema() -> Value {
    json!({"type": "array", "minItems": 1, "prefixItems": [{"type": "string", "minLength": 1}],
        "items": {"type": "string"}})
}

/// Merges `c` into `target`; a nullable `type` (`["string","null"]`) stays nullable.
fn merge(target: &mut Value, c: Value) {
    let nullable = target
        .get("type")
        .and_then(Value::as_array)
        .is_some_and(|t| t.iter().any(|v| v == "null"));
    let (Some(t), Value::Object(c)) = (target.as_object_mut(), c) else {
        return;
    };
    for (k, v) in c {
        if k == "type" && nullable {
            t.insert(k, json!([v, "null"]));
        } else {
            t.insert(k, v);
        }
    }
}

/// The error responses of the HTTP layer and of every handler's common checks, added to each
/// operation that does not list them itself, all with the `ErrorBody` schema.
fn error_responses(doc: &mut Value) {
    let body = json!({"application/json": {"schema": {"$ref": "#/components/schemas/ErrorBody"}}});
    let Some(paths) = doc.get_mut("paths").and_then(Value::as_object_mut) else {
        return;
    };
    for (path, item) in paths.iter_mut() {
        let has_path_params = path.contains('{');
        for op in item
            .as_object_mut()
            .into_iter()
            .flat_map(|o| o.values_mut())
        {
            let has_body = op.get("requestBody").is_some();
            let has_query = op
                .get("parameters")
                .and_then(Value::as_array)
                .is_some_and(|ps| ps.iter().any(|p| p["in"] == "query"));
            let mut common: Vec<(&str, &str)> = vec![
                ("400", "`invalid_argument`: a malformed path, query or body"),
                (
                    "401",
                    "`unauthorized`: no bearer token, or an unknown or revoked one",
                ),
                ("500", "`internal`: see the server log"),
            ];
            if has_path_params || has_query || has_body {
                common.push((
                    "404",
                    "`not_found`: a workspace, task or other object named does not exist",
                ));
            }
            if has_body {
                common.push((
                    "413",
                    "`payload_too_large`: the body is over the route's limit",
                ));
                common.push((
                    "415",
                    "`unsupported_media_type`: the body is not of the documented media type",
                ));
            }
            let Some(responses) = op.get_mut("responses").and_then(Value::as_object_mut) else {
                continue;
            };
            for (status, description) in common {
                responses
                    .entry(status)
                    .or_insert_with(|| json!({"description": description}));
            }
            for (status, r) in responses.iter_mut() {
                if status.starts_with('4') || status.starts_with('5') {
                    if let Some(r) = r.as_object_mut() {
                        r.entry("content").or_insert_with(|| body.clone());
                    }
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn operations(doc: &Value) -> Vec<(String, String, Value)> {
        let mut out = Vec::new();
        for (path, item) in doc["paths"].as_object().unwrap() {
            for (method, op) in item.as_object().unwrap() {
                out.push((path.clone(), method.clone(), op.clone()));
            }
        }
        out
    }

    #[test]
    fn operation_ids_are_unique() {
        let doc = document();
        let mut seen = std::collections::BTreeMap::new();
        for (path, method, op) in operations(&doc) {
            let id = op["operationId"].as_str().unwrap().to_owned();
            if let Some(other) = seen.insert(id.clone(), format!("{method} {path}")) {
                panic!("operationId {id} of {method} {path} is also {other}'s");
            }
        }
        assert!(seen.len() > 50, "{}", seen.len());
    }

    #[test]
    fn every_operation_lists_its_errors_with_the_error_body() {
        let doc = document();
        for (path, method, op) in operations(&doc) {
            let responses = op["responses"].as_object().unwrap();
            for s in ["400", "401", "500"] {
                assert!(responses.contains_key(s), "{method} {path} lacks {s}");
            }
            if op.get("requestBody").is_some() {
                for s in ["413", "415"] {
                    assert!(responses.contains_key(s), "{method} {path} lacks {s}");
                }
            }
            if path.contains('{') {
                assert!(responses.contains_key("404"), "{method} {path} lacks 404");
            }
            for (status, r) in responses {
                if status.starts_with('4') || status.starts_with('5') {
                    assert_eq!(
                        r["content"]["application/json"]["schema"]["$ref"],
                        "#/components/schemas/ErrorBody",
                        "{method} {path} {status}"
                    );
                }
            }
        }
    }

    fn matches(schema: &Value, s: &str) -> bool {
        let re = regex::Regex::new(schema["pattern"].as_str().unwrap()).unwrap();
        let len = s.chars().count() as u64;
        re.is_match(s)
            && schema["minLength"].as_u64().is_none_or(|m| len >= m)
            && schema["maxLength"].as_u64().is_none_or(|m| len <= m)
    }

    /// Names made of the characters that matter, every one up to 4 long, plus length edges.
    fn candidates(alphabet: &[&str]) -> Vec<String> {
        let mut out = vec![String::new()];
        let mut level = vec![String::new()];
        for _ in 0..4 {
            level = level
                .iter()
                .flat_map(|p| alphabet.iter().map(move |c| format!("{p}{c}")))
                .collect();
            out.extend(level.iter().cloned());
        }
        for n in [39, 40, 41, 63, 64, 65] {
            out.push("a".repeat(n));
            out.push("A".repeat(n));
            out.push(format!("a-{}", "b".repeat(n - 2)));
        }
        out
    }

    #[test]
    fn name_schema_is_what_name_parse_accepts() {
        let doc = document();
        let schema = &doc["components"]["schemas"]["CreateWorkspace"]["properties"]["name"];
        assert_eq!(schema["pattern"], NAME_PATTERN);
        for s in candidates(&["a", "z", "0", "-", "A", "/", "_", "é"]) {
            assert_eq!(
                matches(schema, &s),
                berth_domain::Name::parse(&s).is_ok(),
                "{s:?}"
            );
        }
    }

    #[test]
    fn secret_name_schema_is_what_the_vault_accepts() {
        let doc = document();
        let params = doc["paths"]["/api/v1/secrets/{tenant}/{name}"]["put"]["parameters"]
            .as_array()
            .unwrap();
        let name = params.iter().find(|p| p["name"] == "name").unwrap();
        for s in candidates(&["A", "_", "0", "a", "-"]) {
            assert_eq!(
                matches(&name["schema"], &s),
                crate::vault::valid_name(&s),
                "{s:?}"
            );
        }
    }

    #[test]
    fn workspace_refs_the_schema_documents_are_all_valid() {
        let doc = document();
        let ws = doc["paths"]["/api/v1/workspaces/{ws}"]["get"]["parameters"][0]["schema"].clone();
        let mut all = candidates(&["a", "0", "-", "/", "_"]);
        all.push(format!("ws_{}", "0a".repeat(16)));
        all.push(format!("{}/{}", "a".repeat(19), "b".repeat(20)));
        for s in all {
            if matches(&ws, &s) {
                assert!(berth_domain::WorkspaceRef::parse(&s).is_ok(), "{s:?}");
            }
        }
    }

    #[test]
    fn memory_and_cpus_the_schema_documents_are_all_in_range() {
        let doc = document();
        let props = &doc["components"]["schemas"]["CreateWorkspace"]["properties"];
        let mem = regex::Regex::new(props["memory"]["pattern"].as_str().unwrap()).unwrap();
        for n in 0..=10_000 {
            for unit in ["m", "g", "M", "G"] {
                let s = format!("{n}{unit}");
                if mem.is_match(&s) {
                    assert!(berth_domain::limits::parse_memory(&s).is_ok(), "{s}");
                }
            }
        }
        assert!(mem.is_match("32m") && mem.is_match("2g") && !mem.is_match("31m"));
        let cpus = regex::Regex::new(props["cpus"]["pattern"].as_str().unwrap()).unwrap();
        for n in 0..=100_000 {
            let s = format!("{}.{:02}", n / 100, n % 100);
            if cpus.is_match(&s) {
                assert!(berth_domain::limits::parse_cpus(&s).is_ok(), "{s}");
            }
        }
        assert!(cpus.is_match("0.5") && cpus.is_match("2") && !cpus.is_match("0"));
    }

    #[test]
    fn rules_hosts_and_headers_the_schema_documents_are_all_accepted() {
        let rule = regex::Regex::new(EGRESS_RULE_PATTERN).unwrap();
        let host = regex::Regex::new(HOST_PATTERN).unwrap();
        let header = regex::Regex::new(SECRET_HEADER_PATTERN).unwrap();
        let hosts = [
            "a",
            "a0",
            "example.com",
            "a.b.c.d",
            "z9.y8",
            "registry.npmjs.org",
        ];
        for h in hosts {
            assert!(host.is_match(h), "{h}");
            assert!(berth_egress::normalize_host(h).is_some(), "{h}");
            for r in [
                format!("allow {h}"),
                format!("deny {h}:443"),
                format!("allow {h}:1"),
            ] {
                assert!(rule.is_match(&r), "{r}");
                assert!(berth_egress::Rule::parse(&r).is_ok(), "{r}");
            }
        }
        for h in ["authorization", "x-api-key", "x-a", "x-goog-api-key"] {
            assert!(header.is_match(h), "{h}");
            assert!(berth_egress::secret_header_name(h).is_ok(), "{h}");
        }
        for bad in ["", "allow", "allow *", "allow a:0", "permit a"] {
            assert!(!rule.is_match(bad), "{bad}");
        }
    }

    #[test]
    fn bodies_are_required_unless_the_handler_takes_none() {
        let doc = document();
        for (path, method, op) in operations(&doc) {
            let Some(body) = op.get("requestBody") else {
                continue;
            };
            let optional = OPTIONAL_BODIES.contains(&(path.as_str(), method.as_str()));
            assert_eq!(body["required"], json!(!optional), "{method} {path}");
        }
    }

    #[test]
    fn image_references() {
        for ok in [
            "debian",
            "localhost/berth-workspace:3f2a",
            "docker.io/library/debian:12",
            "registry.example.com:5000/team/app_x__y.z-w:v1.2",
            "debian@sha256:0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef",
        ] {
            assert!(is_image_reference(ok), "{ok}");
        }
        for bad in [
            "",
            " ",
            "Debian",
            "a b",
            "a:",
            "a/",
            "/a",
            "]\u{d4}n",
            "a:-x",
            "a@sha256:12",
        ] {
            assert!(!is_image_reference(bad), "{bad:?}");
        }
        assert!(!is_image_reference(&"a".repeat(IMAGE_REF_MAX_LEN + 1)));
    }

    #[test]
    fn limits_and_sizes_are_the_validators_bounds() {
        let doc = document();
        let audit = &doc["paths"]["/api/v1/audit"]["get"]["parameters"];
        let limit = audit
            .as_array()
            .unwrap()
            .iter()
            .find(|p| p["name"] == "limit")
            .unwrap();
        assert_eq!(limit["schema"]["minimum"], 1);
        assert_eq!(limit["schema"]["maximum"], api::AUDIT_LIMIT.max);
        let cols = &doc["components"]["schemas"]["CreateSession"]["properties"]["cols"];
        assert_eq!(cols["minimum"], TERMINAL_MIN);
        assert_eq!(cols["maximum"], TERMINAL_MAX);
        let cmd = &doc["components"]["schemas"]["ExecRequest"]["properties"]["cmd"];
        assert_eq!(cmd["minItems"], 1);
    }
}
