//! The OpenAPI document, generated from the handlers' annotations and the wire types.

use axum::response::IntoResponse;
use berth_api as api;
use berth_domain::name::MAX_NAME_LEN;
use berth_domain::SecretDelivery;
use serde_json::{json, Value};
use utoipa::openapi::security::{HttpAuthScheme, HttpBuilder, SecurityScheme};
use utoipa::{Modify, OpenApi};

use crate::routes::terminal::{TERMINAL_MAX, TERMINAL_MIN};
use crate::routes::{
    access_requests, approvals, backups, egress, egress_templates, mcp, notify, secrets, sso,
    system, tasks, templates, tenants, terminal, tokens, usage, workspaces,
};

#[derive(OpenApi)]
#[openapi(
    info(title = "berth API", version = "1", description = "Isolated, persistent workspaces for coding agents."),
    paths(
        system::version, system::whoami, system::doctor, system::audit,
        system::image_status, system::image_build, system::image_prune,
        workspaces::list, workspaces::create, workspaces::show, workspaces::remove,
        workspaces::start, workspaces::stop, workspaces::update, backups::backup, backups::restore,
        terminal::exec, terminal::exec_ws, terminal::list_sessions, terminal::create_session,
        terminal::get_session, terminal::remove_session, terminal::scrollback, terminal::attach,
        tasks::create, tasks::list, tasks::show, tasks::send, tasks::cancel, tasks::attach, tasks::events,
        tasks::stream, tasks::diff, tasks::patch, tasks::push, tasks::pull_request, approvals::list, approvals::decide, approvals::inbox,
        access_requests::list, access_requests::decide, access_requests::comment,
        usage::usage, usage::calls, usage::call, usage::list_budgets, usage::set_budget, usage::remove_budget,
        egress::rules, egress::set_rules, egress::add_rule, egress::remove_rule, egress::log,
        egress::log_stream, egress::effective,
        egress_templates::list, egress_templates::create, egress_templates::show,
        egress_templates::set, egress_templates::remove, egress_templates::attached,
        egress_templates::attach, egress_templates::detach,
        templates::list, templates::show, templates::set, templates::remove,
        templates::status, templates::stream, templates::reprovision,
        secrets::set, secrets::list, secrets::remove,
        sso::config, sso::session, sso::logout, sso::remember_device, sso::list, sso::disable, sso::enable,
        tokens::list, tokens::create, tokens::revoke,
        tenants::list, tenants::quota, tenants::set_quota,
        notify::list, notify::create, notify::show, notify::remove, notify::test,
        notify::deliveries, notify::stream, notify::webpush,
        mcp::post, mcp::end,
        openapi_json,
    ),
    components(schemas(berth_api::WsControl, berth_api::ExecStart, berth_api::BackupManifest,
        berth_api::BackupTrailer, berth_api::NotificationEvent)),
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
        // A browser signed in with single sign-on; state-changing requests also send the
        // session's `X-CSRF-Token` (GET /api/v1/auth/session), else 403 `csrf_failed`.
        components.add_security_scheme(
            "session",
            SecurityScheme::ApiKey(utoipa::openapi::security::ApiKey::Cookie(
                utoipa::openapi::security::ApiKeyValue::with_description(
                    "berth_session",
                    "`__Host-berth_session` when berth's public URL is https",
                ),
            )),
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
    access(&mut doc);
    error_responses(&mut doc);
    doc
}

/// Writes each operation's access from the route table: `x-berth-role` (the lowest role that
/// may call it) and, where some token may lack it, the 403 it answers then.
fn access(doc: &mut Value) {
    for r in crate::routes::table() {
        let pointer = format!(
            "/paths/{}/{}",
            format!("{}{}", berth_api::API_PREFIX, r.path).replace('/', "~1"),
            r.method.to_ascii_lowercase()
        );
        let Some(op) = doc.pointer_mut(&pointer).and_then(Value::as_object_mut) else {
            continue;
        };
        let role = r.access.min_role();
        op.insert("x-berth-role".into(), json!(role.as_str()));
        if role == berth_domain::Role::Viewer {
            continue;
        }
        if let Some(responses) = op.get_mut("responses").and_then(Value::as_object_mut) {
            responses.entry("403").or_insert_with(|| {
                json!({"description": format!(
                    "`forbidden`: needs the {role} role (or higher); the message names it"
                )})
            });
        }
    }
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
/// The first component is a domain only when it holds a `.` or a `:` or is `localhost` (the
/// Docker reference rule Podman's compatible API applies); anything else is a path component and
/// must be lowercase (`X/app` is refused by the engine as "repository name must be lowercase").
/// Both the schema and [`is_image_reference`] use it, so they cannot drift.
pub const IMAGE_REF_PATTERN: &str = concat!(
    "^((localhost(:[0-9]{1,5})?",
    "|[A-Za-z0-9]([A-Za-z0-9-]*[A-Za-z0-9])?",
    "((\\.[A-Za-z0-9]([A-Za-z0-9-]*[A-Za-z0-9])?)+(:[0-9]{1,5})?|:[0-9]{1,5}))/)?",
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
/// The handlers read them with `routes::parse_optional_body`.
pub const OPTIONAL_BODIES: [(&str, &str); 6] = [
    ("/api/v1/workspaces/{ws}/sessions", "post"),
    ("/api/v1/image/build", "post"),
    ("/api/v1/image/prune", "post"),
    ("/api/v1/tasks/{task}/attach", "post"),
    ("/api/v1/tasks/{task}/push", "post"),
    ("/api/v1/tasks/{task}/pr", "post"),
];

/// Worktree branches the schema documents: words joined by `-`, `_` or `/` (the server takes
/// any valid git branch name).
pub const BRANCH_PATTERN: &str = "^[A-Za-z0-9]{1,20}([-_/][A-Za-z0-9]{1,20}){0,3}$";

/// A task's `dir`: `~`, `~/…` or an absolute path, without `..`.
pub const DIR_PATTERN: &str =
    "^(~|~/[A-Za-z0-9_-]{0,20}|/[A-Za-z0-9_-]{0,20})(/[A-Za-z0-9_-]{1,20}){0,3}$";

/// Host names the schema documents for a secret's `hosts` (the server takes any host name).
pub const HOST_PATTERN: &str = "^[a-z][a-z0-9]{0,15}(\\.[a-z][a-z0-9]{0,15}){0,3}$";

/// A header name (RFC 9110 token characters), as a secret's `headers` take it.
pub const SECRET_HEADER_PATTERN: &str = "^[!#$%&'*+.^_`|~0-9A-Za-z-]+$";

/// The schema of one of a secret's `headers`: any header name but those the proxy sets or drops
/// itself ([`berth_egress::SECRET_HEADERS_REFUSED`] and `proxy-*`), in any case — exactly what
/// [`berth_egress::secret_header_name`] takes.
fn secret_header_schema() -> Value {
    let any_case = |word: &str| -> String {
        word.chars()
            .map(|c| {
                if c.is_ascii_alphabetic() {
                    format!("[{}{}]", c.to_ascii_lowercase(), c.to_ascii_uppercase())
                } else {
                    regex::escape(&c.to_string())
                }
            })
            .collect()
    };
    let refused: Vec<String> = berth_egress::SECRET_HEADERS_REFUSED
        .iter()
        .map(|h| any_case(h))
        .chain([format!("{}.*", any_case("proxy-"))])
        .collect();
    json!({"type": "string", "pattern": SECRET_HEADER_PATTERN,
        "not": {"pattern": format!("^({})$", refused.join("|"))}})
}

/// Permission request ids the schema documents: a letter, digit, `_` or `-`, then up to 127 of
/// those, `.` and `:` (the server takes any printable ASCII but `/`; the agents' own ids are
/// UUIDs and `toolu_…`-style words).
pub const APPROVAL_REQUEST_PATTERN: &str = "^[A-Za-z0-9_-][A-Za-z0-9._:-]{0,127}$";

/// A secret's name: an environment variable's ([`crate::vault::valid_name`]).
pub const SECRET_NAME_PATTERN: &str = "^[A-Z_][A-Z0-9_]*$";

/// Token names: a letter or digit, then up to 39 letters, digits, `.`, `_`, `@` or `-`
/// (exactly what [`crate::tokens::valid_name`] takes).
pub const TOKEN_NAME_PATTERN: &str = "^[A-Za-z0-9][A-Za-z0-9._@-]{0,39}$";

/// Token lifetimes: 1 to 999 days, hours or minutes (exactly what
/// [`crate::tokens::parse_lifetime`] takes).
pub const LIFETIME_PATTERN: &str = "^[1-9][0-9]{0,2}[dhm]$";

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

/// The bounds `berth_domain::mcp` enforces on declared MCP servers.
fn mcp_constraints() -> Vec<(&'static str, &'static str, Value)> {
    use berth_domain::mcp::{MAX_ENTRIES, MAX_NAME, MAX_SERVERS, MAX_VALUE};
    let value = json!({"type": "string", "maxLength": MAX_VALUE, "pattern": "^[^\\u0000]*$"});
    let line = json!({"type": "string", "maxLength": MAX_VALUE, "pattern": "^[^\\u0000\\r\\n]*$"});
    let map = |key_pattern: &str| {
        json!({"type": "object", "maxProperties": MAX_ENTRIES,
            "propertyNames": {"pattern": key_pattern, "minLength": 1}, "additionalProperties": line})
    };
    vec![
        (
            "CreateWorkspace",
            "mcp_servers",
            json!({"type": "array", "maxItems": MAX_SERVERS}),
        ),
        (
            "UpdateWorkspace",
            "mcp_servers",
            json!({"type": "array", "maxItems": MAX_SERVERS}),
        ),
        (
            "McpServer",
            "name",
            json!({"type": "string", "pattern": "^[a-z0-9][a-z0-9_-]*$", "minLength": 1,
                "maxLength": MAX_NAME}),
        ),
        (
            "McpServer",
            "command",
            json!({"type": "string", "maxLength": MAX_VALUE, "pattern": "\\S"}),
        ),
        (
            "McpServer",
            "args",
            json!({"type": "array", "maxItems": MAX_ENTRIES, "items": value}),
        ),
        ("McpServer", "env", map("^[A-Za-z_][A-Za-z0-9_]*$")),
        ("McpServer", "headers", map("^[A-Za-z0-9_-]+$")),
        (
            "McpServer",
            "url",
            json!({"type": "string", "maxLength": MAX_VALUE, "pattern": "^https?://."}),
        ),
    ]
}

/// Writes the validators' constraints into the document.
fn constrain(doc: &mut Value) {
    for (schema, prop, c) in property_constraints() {
        if let Some(p) = doc.pointer_mut(&format!("/components/schemas/{schema}/properties/{prop}"))
        {
            merge(p, c);
        }
    }
    constrain_combinations(doc);
    constrain_bodies(doc);
}

/// A tenant secret's name.
fn secret_name_schema() -> Value {
    json!({"type": "string", "pattern": SECRET_NAME_PATTERN, "minLength": 1,
        "maxLength": crate::vault::MAX_NAME_LEN})
}

/// A terminal's columns or rows.
fn terminal_size_schema() -> Value {
    json!({"type": "integer", "format": "int32", "minimum": TERMINAL_MIN, "maximum": TERMINAL_MAX})
}

/// The validators' constraints on single properties: (schema, property, constraint).
fn property_constraints() -> Vec<(&'static str, &'static str, Value)> {
    let secret_name = secret_name_schema();
    let size = terminal_size_schema();
    // Component properties: (schema, property, constraint).
    let mut props: Vec<(&'static str, &'static str, Value)> = vec![
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
            "UpdateWorkspace",
            "memory",
            json!({"type": "string", "pattern": MEMORY_PATTERN}),
        ),
        (
            "UpdateWorkspace",
            "cpus",
            json!({"type": "string", "pattern": CPUS_PATTERN}),
        ),
        (
            "UpdateWorkspace",
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
        (
            "CreateSession",
            "agent",
            json!({"type": "string", "enum": ["claude", "codex", "gemini", "opencode"]}),
        ),
        ("AttachTask", "cols", size.clone()),
        ("AttachTask", "rows", size.clone()),
        ("ExecRequest", "cmd", argv_schema()),
        ("ExecStart", "cmd", argv_schema()),
    ];
    props.extend([
        (
            "CreateToken",
            "name",
            json!({"type": "string", "pattern": TOKEN_NAME_PATTERN}),
        ),
        (
            "CreateToken",
            "role",
            json!({"type": "string", "enum": ["admin", "owner", "member", "viewer"]}),
        ),
        ("CreateToken", "tenant", name_schema()),
        (
            "CreateToken",
            "expires_in",
            json!({"type": "string", "pattern": LIFETIME_PATTERN}),
        ),
        (
            "TenantQuota",
            "max_workspaces",
            json!({"type": "integer", "format": "int64", "minimum": 0, "maximum": u32::MAX}),
        ),
        (
            "TenantQuota",
            "max_tasks",
            json!({"type": "integer", "format": "int64", "minimum": 0, "maximum": u32::MAX}),
        ),
        (
            "TenantQuota",
            "memory",
            json!({"type": "string", "pattern": MEMORY_PATTERN}),
        ),
        (
            "TenantQuota",
            "cpus",
            json!({"type": "string", "pattern": CPUS_PATTERN}),
        ),
    ]);
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
        (
            "UpdateWorkspace",
            "egress_templates",
            json!({"type": "array", "items": name_schema(),
            "uniqueItems": true}),
        ),
        (
            "UpdateWorkspace",
            "remove_secrets",
            json!({"type": "array", "items": secret_name.clone()}),
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
            json!({"type": "array", "items": secret_header_schema()}),
        ),
        (
            "UseSecret",
            "delivery",
            json!({"type": "string", "enum": SecretDelivery::ALL.map(SecretDelivery::as_str)}),
        ),
    ]);
    props.extend(mcp_constraints());
    props.extend([
        (
            "CreateSubscription",
            "url",
            json!({"type": "string", "pattern": "^https?://[^\\s/?#]",
                "maxLength": api::MAX_NOTIFY_URL}),
        ),
        ("CreateSubscription", "tenant", name_schema()),
        ("CreateSubscription", "workspace", ref_schema()),
        (
            "CreateSubscription",
            "kinds",
            json!({"type": "array", "items": {"type": "string", "enum": api::NOTIFY_KINDS}}),
        ),
        (
            "AccessComment",
            "text",
            json!({"type": "string", "minLength": 1, "pattern": "\\S",
                "maxLength": berth_store::access::MAX_TEXT / 4}),
        ),
        (
            "Decide",
            "reason",
            json!({"type": "string", "maxLength": berth_domain::approval::MAX_APPROVAL_TEXT / 4}),
        ),
    ]);
    props
}

/// Which fields go together, and which exclude each other.
fn constrain_combinations(doc: &mut Value) {
    // Placeholder delivery (the default) needs hosts; headers are for placeholders only.
    let exposing: Vec<&str> = SecretDelivery::ALL
        .into_iter()
        .filter(|d| d.exposes())
        .map(SecretDelivery::as_str)
        .collect();
    if let Some(u) = doc.pointer_mut("/components/schemas/UseSecret") {
        merge(
            u,
            json!({
                "if": {"properties": {"delivery": {"enum": exposing}}, "required": ["delivery"]},
                "then": {"properties": {"headers": {"maxItems": 0}}},
                "else": {"properties": {"hosts": {"minItems": 1}}, "required": ["hosts"]},
            }),
        );
    }
    // A stdio server has a command and no HTTP fields; an HTTP server the reverse.
    if let Some(m) = doc.pointer_mut("/components/schemas/McpServer") {
        merge(
            m,
            json!({
                "if": {"properties": {"type": {"const": "stdio"}}, "required": ["type"]},
                "then": {"required": ["command"],
                    "not": {"anyOf": [{"required": ["url"]}, {"required": ["headers"]}]}},
                "else": {"required": ["url"],
                    "not": {"anyOf": [{"required": ["command"]}, {"required": ["args"]},
                        {"required": ["env"]}]}},
            }),
        );
    }
    // Template parameters go with a template.
    if let Some(c) = doc.pointer_mut("/components/schemas/CreateWorkspace") {
        merge(
            c,
            json!({
                "if": {"properties": {"params": {"type": "object", "minProperties": 1}},
                    "required": ["params"]},
                "then": {"required": ["template"], "properties": {"template": {"type": "string"}}},
            }),
        );
    }
    // A browser's keys go with a Web Push subscription, and only with one.
    if let Some(c) = doc.pointer_mut("/components/schemas/CreateSubscription") {
        merge(
            c,
            json!({
                "if": {"properties": {"channel": {"const": "webpush"}}, "required": ["channel"]},
                "then": {"required": ["keys"], "properties": {"keys": {"type": "object"}}},
                "else": {"properties": {"keys": {"type": "null"}}},
            }),
        );
    }
    // `always_for_task` goes with an approval only.
    if let Some(d) = doc.pointer_mut("/components/schemas/Decide") {
        merge(
            d,
            json!({
                "if": {"properties": {"decision": {"const": "deny"}}, "required": ["decision"]},
                "then": {"properties": {"always_for_task": {"const": false}}},
            }),
        );
    }
    // A re-provisioning is a retry or an upgrade: exactly one of them.
    if let Some(r) = doc.pointer_mut("/components/schemas/Reprovision") {
        merge(
            r,
            json!({"oneOf": [
                {"required": ["retry"], "properties": {"retry": {"const": true}}},
                {"required": ["upgrade"], "properties": {"upgrade": {"const": true}}},
            ]}),
        );
    }
    // An admin token has no tenant; every other role has one.
    if let Some(t) = doc.pointer_mut("/components/schemas/CreateToken") {
        merge(
            t,
            json!({
                "if": {"properties": {"role": {"const": "admin"}}, "required": ["role"]},
                "then": {"properties": {"tenant": {"type": "null"}}},
                "else": {"required": ["tenant"], "properties": {"tenant": {"type": "string"}}},
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
}

/// Request bodies that may be left out, path and query parameters, and the shapes of the bodies
/// the document leaves opaque.
fn constrain_bodies(doc: &mut Value) {
    let secret_name = secret_name_schema();
    let size = terminal_size_schema();
    // Bodies that may be left out (the handlers take no body as the defaults).
    for (path, method) in OPTIONAL_BODIES {
        let pointer = format!("/paths/{}/{method}/requestBody", path.replace('/', "~1"));
        if let Some(b) = doc.pointer_mut(&pointer) {
            b["required"] = json!(false);
        }
    }
    // The MCP endpoint's body is JSON-RPC, which the document leaves opaque: one message (an
    // object) or a batch of them; the answer has the same shape (docs/mcp.md).
    let message = json!({"type": "object", "description": "a JSON-RPC 2.0 message (MCP)"});
    let rpc = json!({"oneOf": [message.clone(), {"type": "array", "items": message,
        "minItems": 1, "maxItems": crate::mcp::MAX_BATCH}]});
    let mcp = "/paths/~1api~1v1~1mcp/post";
    if let Some(b) = doc.pointer_mut(&format!("{mcp}/requestBody/content/application~1json")) {
        b["schema"] = rpc.clone();
        b["example"] = json!({"jsonrpc": "2.0", "id": 1, "method": "initialize",
            "params": {"protocolVersion": "2025-06-18", "capabilities": {},
                "clientInfo": {"name": "curl", "version": "1"}}});
    }
    if let Some(r) = doc.pointer_mut(&format!("{mcp}/responses/200/content/application~1json")) {
        r["schema"] = rpc;
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
        ("/api/v1/templates/", "name", name_schema()),
        (
            "/api/v1/tasks/{task}/approvals/",
            "req",
            json!({"type": "string", "pattern": APPROVAL_REQUEST_PATTERN}),
        ),
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
        (
            "/api/v1/usage",
            "until",
            json!({"type": "string", "anyOf": [
            {"format": "date-time"}, {"format": "date"}, {"pattern": "^([0-9]{1,6}[mh]|[0-9]{1,5}d)$"}]}),
        ),
        (
            "/api/v1/usage",
            "by",
            json!({"type": "string", "enum": ["task", "workspace", "tenant", "model", "day", "session"]}),
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
        (
            "/api/v1/usage",
            "group_by",
            json!({"type": "string", "enum": ["session"]}),
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
    document_ambiguous(doc);
}

/// Every operation that resolves a workspace reference (a `{ws}` path segment, a `workspace`
/// parameter, or a `workspace` field of its body) may find a bare name in several tenants:
/// 409 `ambiguous` is documented on each (added to its 409 if it has one).
fn document_ambiguous(doc: &mut Value) {
    let note = "`ambiguous`: a bare workspace name matches workspaces in several tenants (name it `tenant/name` or by id)";
    let with_workspace: Vec<String> = doc
        .pointer("/components/schemas")
        .and_then(Value::as_object)
        .map(|schemas| {
            schemas
                .iter()
                .filter(|(_, v)| v.pointer("/properties/workspace").is_some())
                .map(|(k, _)| format!("#/components/schemas/{k}"))
                .collect()
        })
        .unwrap_or_default();
    let Some(paths) = doc.get_mut("paths").and_then(Value::as_object_mut) else {
        return;
    };
    for (path, item) in paths.iter_mut() {
        let Some(ops) = item.as_object_mut() else {
            continue;
        };
        for op in ops.values_mut() {
            let by_param = op
                .get("parameters")
                .and_then(Value::as_array)
                .is_some_and(|ps| {
                    ps.iter().any(|p| {
                        matches!(
                            p.get("name").and_then(Value::as_str),
                            Some("ws" | "workspace" | "target")
                        )
                    })
                });
            let body = op
                .pointer("/requestBody/content/application~1json/schema/$ref")
                .and_then(Value::as_str)
                .unwrap_or_default();
            let by_body = with_workspace.iter().any(|r| r == body);
            if !(by_param || by_body || path.contains("{ws}")) {
                continue;
            }
            let Some(responses) = op.get_mut("responses").and_then(Value::as_object_mut) else {
                continue;
            };
            match responses.get_mut("409") {
                Some(r) => {
                    let d = r
                        .get("description")
                        .and_then(Value::as_str)
                        .unwrap_or_default()
                        .to_owned();
                    if !d.contains("ambiguous") {
                        r["description"] = json!(format!("{d}; {note}"));
                    }
                }
                None => {
                    responses.insert(
                        "409".into(),
                        json!({"description": note, "content": {"application/json":
                            {"schema": {"$ref": "#/components/schemas/ErrorBody"}}}}),
                    );
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

/// Merges `c` into `target`; a nullable `type` (`["string","null"]`) stays nullable, and so
/// does a nullable field given an `enum` (the server takes `null` there as "left out").
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
        } else if let (true, "enum", Value::Array(mut values)) = (nullable, k.as_str(), v.clone()) {
            values.push(Value::Null);
            t.insert(k, Value::Array(values));
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
        for (method, op) in item.as_object_mut().into_iter().flat_map(|o| o.iter_mut()) {
            let public = op["security"].as_array().is_some_and(|s| {
                s.iter()
                    .any(|r| r.as_object().is_some_and(|r| r.is_empty()))
            });
            let has_body = op.get("requestBody").is_some();
            let has_query = op
                .get("parameters")
                .and_then(Value::as_array)
                .is_some_and(|ps| ps.iter().any(|p| p["in"] == "query"));
            let mut common: Vec<(&str, &str)> = vec![
                ("400", "`invalid_argument`: a malformed path, query or body"),
                ("500", "`internal`: see the server log"),
            ];
            if !public {
                common.push((
                    "401",
                    "`unauthorized`: no bearer token or session cookie, an unknown token, or an \
                     expired or signed-out session; `token_expired`; `token_revoked`",
                ));
            }
            if !public && method != "get" {
                common.push((
                    "403",
                    "`csrf_failed`: made with the session cookie but without the session's \
                     `X-CSRF-Token`, or from another origin",
                ));
            }
            if has_path_params || has_query || has_body {
                common.push((
                    "404",
                    "`not_found`: a workspace, task or other object named does not exist, \
                     or belongs to another tenant than the token's",
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
    fn every_route_is_documented_with_its_role_and_every_operation_is_a_route() {
        let doc = document();
        let table = crate::routes::table();
        let ops = operations(&doc);
        for r in &table {
            let path = format!("{}{}", berth_api::API_PREFIX, r.path);
            let method = r.method.to_ascii_lowercase();
            let op = ops
                .iter()
                .find(|(p, m, _)| *p == path && *m == method)
                .map(|(_, _, op)| op)
                .unwrap_or_else(|| panic!("{method} {path} is not in the OpenAPI document"));
            assert_eq!(
                op["x-berth-role"],
                r.access.min_role().as_str(),
                "{method} {path}"
            );
            if r.access.min_role() != berth_domain::Role::Viewer {
                assert!(
                    op["responses"].get("403").is_some(),
                    "{method} {path} lacks 403"
                );
            }
        }
        // Public operations (`security: [{}]`, such as the sign-in page's `/auth/config`) are
        // served before the token check and have no access entry.
        let guarded = ops
            .iter()
            .filter(|(_, _, op)| op["security"] != json!([{}]));
        assert_eq!(guarded.count(), table.len(), "operations that are no route");
    }

    /// utoipa takes an operation's `summary` from the first line of its handler's doc comment:
    /// a handler without one is a nameless line in every generated client and API browser.
    #[test]
    fn every_operation_has_a_summary_and_documented_errors() {
        let doc = document();
        let mut missing = Vec::new();
        for (path, method, op) in operations(&doc) {
            let summary = op["summary"].as_str().unwrap_or_default().trim();
            if summary.is_empty() || summary.len() > 120 {
                missing.push(format!("{method} {path}: summary {summary:?}"));
            }
            let errors = op["responses"]
                .as_object()
                .into_iter()
                .flatten()
                .filter(|(status, r)| {
                    status.starts_with('4')
                        && r["description"].as_str().is_some_and(|d| !d.is_empty())
                })
                .count();
            if errors == 0 {
                missing.push(format!("{method} {path}: no documented 4xx answer"));
            }
        }
        assert!(
            missing.is_empty(),
            "operations without a one-line summary (a `///` line on the handler) or errors:\n{}",
            missing.join("\n")
        );
    }

    /// The route table of docs/api.md: `(METHOD, path, role)` of every row
    /// `| GET/PUT | `/api/v1/…[?query]` | viewer/owner | what |`.
    fn documented_routes(md: &str) -> Vec<(String, String, String)> {
        let mut out = Vec::new();
        for line in md.lines() {
            let cells: Vec<&str> = line.trim().trim_matches('|').split(" | ").collect();
            let [methods, path, roles, ..] = cells[..] else {
                continue;
            };
            let Some(path) = path.trim().strip_prefix("`/api/v1") else {
                continue;
            };
            let path = path.split(['`', '[', '?']).next().unwrap_or_default();
            let methods: Vec<&str> = methods
                .trim()
                .trim_end_matches(" (WS)")
                .split('/')
                .collect();
            let roles: Vec<&str> = roles.trim().split('/').collect();
            for (i, m) in methods.iter().enumerate() {
                let role = roles.get(i).or(roles.first()).copied().unwrap_or_default();
                out.push((m.to_string(), path.to_owned(), role.to_owned()));
            }
        }
        out
    }

    #[test]
    fn docs_api_md_lists_every_route_with_its_role() {
        let md = std::fs::read_to_string(
            std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../../docs/api.md"),
        )
        .unwrap();
        let documented = documented_routes(&md);
        let mut wrong = Vec::new();
        for r in crate::routes::table() {
            let role = r.access.min_role().as_str();
            match documented
                .iter()
                .find(|(m, p, _)| m == r.method && p == r.path)
            {
                None => wrong.push(format!("{} {} is missing", r.method, r.path)),
                Some((_, _, r2)) if r2 != role => wrong.push(format!(
                    "{} {}: documented for {r2}, the route table says {role}",
                    r.method, r.path
                )),
                Some(_) => {}
            }
        }
        for (m, p, _) in &documented {
            if !crate::routes::table()
                .iter()
                .any(|r| r.method == m && r.path == p)
            {
                wrong.push(format!("{m} {p} is documented but no route"));
            }
        }
        assert!(
            wrong.is_empty(),
            "docs/api.md's route table:\n{}",
            wrong.join("\n")
        );
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
            for s in ["400", "500"] {
                assert!(responses.contains_key(s), "{method} {path} lacks {s}");
            }
            // Every operation but the public ones (`security: [{}]`) can be unauthorized, and
            // every state-changing one refused for CSRF.
            let public = op["security"] == json!([{}]);
            assert_eq!(
                responses.contains_key("401"),
                !public,
                "{method} {path}: 401 listed iff not public"
            );
            if !public && method != "get" {
                assert!(responses.contains_key("403"), "{method} {path} lacks 403");
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
        let schema = secret_header_schema();
        let refused = regex::Regex::new(schema["not"]["pattern"].as_str().unwrap()).unwrap();
        let documented = |h: &str| header.is_match(h) && !refused.is_match(h);
        for h in [
            "authorization",
            "x-api-key",
            "x-a",
            "x-goog-api-key",
            "PRIVATE-TOKEN",
            "api-key",
            "authorization*",
        ] {
            assert!(documented(h), "{h}");
            assert!(berth_egress::secret_header_name(h).is_ok(), "{h}");
        }
        // What the schema refuses, the server refuses too (Schemathesis sends such values and
        // expects a 4xx).
        for h in [
            "",
            " authorization",
            "x a",
            "Host",
            "CONTENT-length",
            "proxy-authorization",
            "Proxy-X",
            "te",
            "x\u{e9}",
        ] {
            assert!(!documented(h), "{h:?}");
            assert!(berth_egress::secret_header_name(h).is_err(), "{h:?}");
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
    fn token_names_and_lifetimes_the_schema_documents_are_accepted() {
        let life = regex::Regex::new(LIFETIME_PATTERN).unwrap();
        for n in ["0", "1", "01", "999", "1000", "", "-1", "1.5"] {
            for unit in ["d", "h", "m", "w", ""] {
                let s = format!("{n}{unit}");
                assert_eq!(
                    life.is_match(&s),
                    crate::tokens::parse_lifetime(&s).is_ok(),
                    "{s}"
                );
            }
        }
        let name = regex::Regex::new(TOKEN_NAME_PATTERN).unwrap();
        let mut all = candidates(&["a", "Z", "0", ".", "@", "-", "_", " ", "é", "*"]);
        all.push("a".repeat(40));
        for s in all {
            assert_eq!(name.is_match(&s), crate::tokens::valid_name(&s), "{s:?}");
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
            "Registry.Example:5000/app",
            "REG:5000/app",
            "my-reg/app",
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
            // Uppercase outside a domain: the engines refuse these (found by Schemathesis).
            "X/app",
            "Localhost/app",
            "localhost/App",
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
