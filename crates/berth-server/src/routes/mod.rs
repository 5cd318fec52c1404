//! HTTP routes under `/api/v1`. Handlers only parse and validate, then call the lifecycle or
//! the daemon; one file per resource.

pub mod access;
pub mod access_requests;
pub mod approvals;
pub mod backups;
pub mod egress;
pub mod egress_templates;
pub mod mcp;
pub mod notify;
pub mod secrets;
pub mod sse;
pub mod sso;
pub mod system;
pub mod tasks;
pub mod templates;
pub mod tenants;
pub mod terminal;
pub mod tokens;
pub mod usage;
pub mod workspaces;

use std::sync::Arc;

use axum::routing::get;
use axum::Router;
use berth_domain::Permission::{Manage, Operate, Read};

use self::access::{Access, Api, RouteSpec};
use crate::state::AppState;

const ADMIN: Access = Access::Admin;
/// Viewers and up: look.
const READ: Access = Access::Tenant(Read);
/// Members and up: work.
const OPERATE: Access = Access::Tenant(Operate);
/// Owners and up: govern the tenant.
const MANAGE: Access = Access::Tenant(Manage);

/// Every API route with its access, in one table (paths relative to `/api/v1`).
fn api() -> Api {
    Api::default()
        .get("/version", READ, system::version)
        .get("/whoami", READ, system::whoami)
        .get("/doctor", ADMIN, system::doctor)
        .get("/audit", READ, system::audit)
        .get("/image", READ, system::image_status)
        .post("/image/build", ADMIN, system::image_build)
        .post("/image/prune", ADMIN, system::image_prune)
        .get("/openapi.json", READ, crate::openapi::serve)
        .get("/tokens", MANAGE, tokens::list)
        .post("/tokens", MANAGE, tokens::create)
        .delete("/tokens/{id}", MANAGE, tokens::revoke)
        .get("/tenants", READ, tenants::list)
        .get("/tenants/{tenant}/quota", READ, tenants::quota)
        .put("/tenants/{tenant}/quota", ADMIN, tenants::set_quota)
        .get("/workspaces", READ, workspaces::list)
        .post("/workspaces", OPERATE, workspaces::create)
        .get("/workspaces/{ws}", READ, workspaces::show)
        .delete("/workspaces/{ws}", MANAGE, workspaces::remove)
        // Limits, secret bindings and egress templates: governing the tenant, like egress rules.
        .patch("/workspaces/{ws}", MANAGE, workspaces::update)
        .post("/workspaces/{ws}/start", OPERATE, workspaces::start)
        .post("/workspaces/{ws}/stop", OPERATE, workspaces::stop)
        .get("/workspaces/{ws}/backup", ADMIN, backups::backup)
        .post("/backups/restore", ADMIN, backups::restore)
        .post("/workspaces/{ws}/exec", OPERATE, terminal::exec)
        .get("/workspaces/{ws}/exec/ws", OPERATE, terminal::exec_ws)
        .get("/workspaces/{ws}/sessions", READ, terminal::list_sessions)
        .post(
            "/workspaces/{ws}/sessions",
            OPERATE,
            terminal::create_session,
        )
        .get(
            "/workspaces/{ws}/sessions/{session}",
            READ,
            terminal::get_session,
        )
        .delete(
            "/workspaces/{ws}/sessions/{session}",
            OPERATE,
            terminal::remove_session,
        )
        .get(
            "/workspaces/{ws}/sessions/{session}/scrollback",
            READ,
            terminal::scrollback,
        )
        // Viewers attach read-only: their input is dropped (see `terminal::attach`).
        .get(
            "/workspaces/{ws}/sessions/{session}/attach",
            READ,
            terminal::attach,
        )
        .get("/tasks", READ, tasks::list)
        .post("/tasks", OPERATE, tasks::create)
        .get("/tasks/{task}", READ, tasks::show)
        .post("/tasks/{task}/messages", OPERATE, tasks::send)
        .post("/tasks/{task}/cancel", OPERATE, tasks::cancel)
        .post("/tasks/{task}/attach", OPERATE, tasks::attach)
        .get("/tasks/{task}/events", READ, tasks::events)
        .get("/tasks/{task}/diff", READ, tasks::diff)
        .get("/tasks/{task}/patch", READ, tasks::patch)
        .post("/tasks/{task}/push", OPERATE, tasks::push)
        .post("/tasks/{task}/pr", OPERATE, tasks::pull_request)
        .get("/tasks/{task}/events/stream", READ, tasks::stream)
        .get("/tasks/{task}/approvals", READ, approvals::list)
        .post("/tasks/{task}/approvals/{req}", OPERATE, approvals::decide)
        .get("/inbox", READ, approvals::inbox)
        .get("/access-requests", READ, access_requests::list)
        .post(
            "/workspaces/{ws}/access-requests/{req}",
            MANAGE,
            access_requests::decide,
        )
        .post(
            "/workspaces/{ws}/access-requests/{req}/comments",
            OPERATE,
            access_requests::comment,
        )
        .get("/workspaces/{ws}/egress/rules", READ, egress::rules)
        .put("/workspaces/{ws}/egress/rules", MANAGE, egress::set_rules)
        .post("/workspaces/{ws}/egress/rules", MANAGE, egress::add_rule)
        .delete(
            "/workspaces/{ws}/egress/rules/{index}",
            MANAGE,
            egress::remove_rule,
        )
        .get("/workspaces/{ws}/egress/effective", READ, egress::effective)
        .get(
            "/workspaces/{ws}/egress/templates",
            READ,
            egress_templates::attached,
        )
        .post(
            "/workspaces/{ws}/egress/templates",
            MANAGE,
            egress_templates::attach,
        )
        .delete(
            "/workspaces/{ws}/egress/templates/{name}",
            MANAGE,
            egress_templates::detach,
        )
        .get("/templates", READ, templates::list)
        .get("/templates/{tenant}/{name}", READ, templates::show)
        .put("/templates/{tenant}/{name}", MANAGE, templates::set)
        .delete("/templates/{tenant}/{name}", MANAGE, templates::remove)
        .get("/workspaces/{ws}/provision", READ, templates::status)
        .get("/workspaces/{ws}/provision/stream", READ, templates::stream)
        .post(
            "/workspaces/{ws}/provision",
            OPERATE,
            templates::reprovision,
        )
        .get("/egress/templates", READ, egress_templates::list)
        .post("/egress/templates", MANAGE, egress_templates::create)
        .get(
            "/egress/templates/{tenant}/{name}",
            READ,
            egress_templates::show,
        )
        .put(
            "/egress/templates/{tenant}/{name}",
            MANAGE,
            egress_templates::set,
        )
        .delete(
            "/egress/templates/{tenant}/{name}",
            MANAGE,
            egress_templates::remove,
        )
        .get("/workspaces/{ws}/egress/log", READ, egress::log)
        .get(
            "/workspaces/{ws}/egress/log/stream",
            READ,
            egress::log_stream,
        )
        // Metadata only: no route returns a secret's value.
        .get("/secrets", OPERATE, secrets::list)
        .put("/secrets/{tenant}/{name}", MANAGE, secrets::set)
        .delete("/secrets/{tenant}/{name}", MANAGE, secrets::remove)
        .get("/usage", READ, usage::usage)
        .get("/usage/calls", READ, usage::calls)
        .get("/usage/calls/{call}", READ, usage::call)
        // Single sign-on: the caller's own browser session, and the people it knows.
        .get("/auth/session", READ, sso::session)
        .post("/auth/logout", READ, sso::logout)
        .post("/auth/device", READ, sso::remember_device)
        .get("/users", MANAGE, sso::list)
        .post("/users/{user}/disable", MANAGE, sso::disable)
        .post("/users/{user}/enable", MANAGE, sso::enable)
        .get("/budgets", READ, usage::list_budgets)
        .put("/budgets", MANAGE, usage::set_budget)
        .delete("/budgets", MANAGE, usage::remove_budget)
        // Notifications: every caller subscribes to what it can read; a subscription is its
        // owner's alone (admins see all), which the service checks (404 otherwise).
        .get("/notifications/subscriptions", READ, notify::list)
        .post("/notifications/subscriptions", READ, notify::create)
        .get("/notifications/subscriptions/{sub}", READ, notify::show)
        .delete("/notifications/subscriptions/{sub}", READ, notify::remove)
        .post(
            "/notifications/subscriptions/{sub}/test",
            READ,
            notify::test,
        )
        .get(
            "/notifications/subscriptions/{sub}/deliveries",
            READ,
            notify::deliveries,
        )
        .get("/notifications/stream", READ, notify::stream)
        .get("/notifications/webpush", READ, notify::webpush)
        // MCP over streamable HTTP: any token may speak it; each tool call is an API request
        // with the caller's token, checked against this table like any other (routes/mcp.rs).
        .post("/mcp", READ, mcp::post)
        .delete("/mcp", READ, mcp::end)
}

/// The access table of every API route, as registered (paths relative to `/api/v1`).
pub fn table() -> Vec<RouteSpec> {
    api().into_parts().1
}

pub fn router(state: Arc<AppState>) -> Router {
    let (api, _) = api().into_parts();
    let api = api
        .fallback(not_found)
        .layer(axum::middleware::from_fn_with_state(
            state.clone(),
            crate::auth::require_token,
        ))
        // Public (added after the token layer): the sign-in page asks how to sign in.
        .route("/auth/config", get(sso::config))
        .layer(axum::middleware::map_response(json_errors));
    Router::new()
        .nest(berth_api::API_PREFIX, api)
        .route("/healthz", get(|| async { "ok" }))
        .route("/auth/oidc/login", get(sso::login))
        .route("/auth/oidc/callback", get(sso::callback))
        .fallback(crate::ui::serve)
        .with_state(state)
}

async fn not_found() -> crate::error::ApiError {
    crate::error::ApiError::not_found("no such API route")
}

/// A request body meant to be JSON, taken by the handler whole: a body of another media type
/// (415 `unsupported_media_type`) or over the size limit (413 `payload_too_large`) is not refused
/// by the extractor but by [`parse_body`], so the handler can record the refusal in the audit
/// log like any other bad request.
pub struct JsonBody(crate::error::ApiResult<axum::body::Bytes>);

impl JsonBody {
    /// True when no body (or only whitespace) was sent, of any media type: routes whose body is
    /// optional take that as the defaults.
    pub fn is_blank(&self) -> bool {
        match &self.0 {
            Ok(b) => b.iter().all(u8::is_ascii_whitespace),
            Err(_) => false,
        }
    }
}

impl<S: Send + Sync> axum::extract::FromRequest<S> for JsonBody {
    type Rejection = std::convert::Infallible;

    async fn from_request(req: axum::extract::Request, state: &S) -> Result<Self, Self::Rejection> {
        let declared = req
            .headers()
            .get(axum::http::header::CONTENT_TYPE)
            .map(|v| v.to_str().map(str::to_owned).unwrap_or_default());
        let bytes = match axum::body::Bytes::from_request(req, state).await {
            Ok(b) => b,
            Err(rej) if rej.status() == axum::http::StatusCode::PAYLOAD_TOO_LARGE => {
                return Ok(Self(Err(crate::error::ApiError::new(
                    berth_domain::ErrorCode::PayloadTooLarge,
                    format!("the request body is larger than {MAX_BODY_BYTES} bytes"),
                ))));
            }
            Err(rej) => {
                return Ok(Self(Err(crate::error::ApiError::invalid(format!(
                    "cannot read the request body: {}",
                    rej.body_text()
                )))))
            }
        };
        let blank = bytes.iter().all(u8::is_ascii_whitespace);
        let ok = match declared.as_deref() {
            Some(ct) => is_json_media_type(ct),
            // No body and no media type: nothing to refuse (the parser answers for required bodies).
            None => blank,
        };
        if !ok {
            return Ok(Self(Err(crate::error::ApiError::new(
                berth_domain::ErrorCode::UnsupportedMediaType,
                format!(
                    "the request body must be JSON, sent with `Content-Type: application/json` (got {})",
                    declared.as_deref().map_or("none".to_owned(), |c| format!("{c:?}"))
                ),
            ))));
        }
        Ok(Self(Ok(bytes)))
    }
}

/// The largest JSON request body (axum's default body limit).
pub const MAX_BODY_BYTES: usize = 2 << 20;

/// `application/json` or a `+json` type, parameters (`; charset=utf-8`) aside.
pub fn is_json_media_type(content_type: &str) -> bool {
    let essence = content_type
        .split(';')
        .next()
        .unwrap_or_default()
        .trim()
        .to_ascii_lowercase();
    match essence.split_once('/') {
        Some(("application", sub)) => sub == "json" || sub.ends_with("+json"),
        _ => false,
    }
}

/// What [`parse_body`] takes: a checked [`JsonBody`], or raw bytes (tests, internal callers).
pub trait RequestBody {
    fn json_bytes(&self) -> crate::error::ApiResult<&[u8]>;
}

impl RequestBody for JsonBody {
    fn json_bytes(&self) -> crate::error::ApiResult<&[u8]> {
        match &self.0 {
            Ok(b) => Ok(b),
            Err(e) => Err(crate::error::ApiError::new(e.code, e.message.clone())),
        }
    }
}

impl RequestBody for [u8] {
    fn json_bytes(&self) -> crate::error::ApiResult<&[u8]> {
        Ok(self)
    }
}

impl RequestBody for axum::body::Bytes {
    fn json_bytes(&self) -> crate::error::ApiResult<&[u8]> {
        Ok(self)
    }
}

/// Parses a JSON request body inside the handler (not in an extractor), so that malformed
/// requests are answered in berth's error shape *and* recorded in the audit log.
/// A body that may be left out: no body (or only whitespace) means `T`'s defaults, so
/// `curl -X POST` works; anything else is parsed as [`parse_body`] does. The routes taking one
/// are `crate::openapi::OPTIONAL_BODIES`.
pub fn parse_optional_body<T: serde::de::DeserializeOwned + Default>(
    body: &JsonBody,
) -> crate::error::ApiResult<T> {
    if body.is_blank() {
        Ok(T::default())
    } else {
        parse_body(body)
    }
}

pub fn parse_body<T: serde::de::DeserializeOwned>(
    body: &(impl RequestBody + ?Sized),
) -> crate::error::ApiResult<T> {
    let invalid = |e: serde_json::Error| {
        crate::error::ApiError::invalid(format!("invalid request body: {e}"))
    };
    let mut v: serde_json::Value = serde_json::from_slice(body.json_bytes()?).map_err(invalid)?;
    // Every body of this API is an object (serde would also read a struct from an array).
    if !v.is_object() {
        return Err(crate::error::ApiError::invalid(
            "invalid request body: expected a JSON object",
        ));
    }
    integral_numbers(&mut v);
    serde_json::from_value(v).map_err(invalid)
}

/// JSON has one number type: `437.0` is the integer 437 (JSON Schema's `integer` says so too),
/// so integral floats are read as integers wherever the wire types take one.
fn integral_numbers(v: &mut serde_json::Value) {
    match v {
        serde_json::Value::Number(n) if n.is_f64() => {
            if let Some(f) = n.as_f64() {
                // Within ±2^53 every integer is exact as f64.
                if f.fract() == 0.0 && f.abs() <= 9_007_199_254_740_992.0 {
                    *v = serde_json::Value::from(f as i64);
                }
            }
        }
        serde_json::Value::Array(items) => items.iter_mut().for_each(integral_numbers),
        serde_json::Value::Object(map) => map.values_mut().for_each(integral_numbers),
        _ => {}
    }
}

/// Every error the API answers is `{"error":{"code","message"}}`: responses of the HTTP layer
/// itself (405 with an empty body, 413, 400 for a path that is not valid UTF-8, WebSocket
/// handshake refusals) are rewritten into that shape with the code of their status, keeping
/// their headers (`Allow` on a 405).
async fn json_errors(res: axum::response::Response) -> axum::response::Response {
    use axum::response::IntoResponse;
    let status = res.status();
    if !(status.is_client_error() || status.is_server_error()) {
        return res;
    }
    let json = res
        .headers()
        .get(axum::http::header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(is_json_media_type);
    if json {
        return res;
    }
    let (parts, body) = res.into_parts();
    let text = axum::body::to_bytes(body, 4096)
        .await
        .map(|b| String::from_utf8_lossy(&b).trim().to_owned())
        .unwrap_or_default();
    let code = berth_domain::ErrorCode::for_status(status.as_u16());
    let message = if text.is_empty() {
        match code {
            berth_domain::ErrorCode::MethodNotAllowed => {
                "this route does not take this method; the Allow header lists those it takes"
                    .to_owned()
            }
            _ => status
                .canonical_reason()
                .unwrap_or("request refused")
                .to_owned(),
        }
    } else {
        text
    };
    let mut out = crate::error::ApiError::new(code, message).into_response();
    for (name, value) in &parts.headers {
        if name != axum::http::header::CONTENT_TYPE && name != axum::http::header::CONTENT_LENGTH {
            out.headers_mut().append(name, value.clone());
        }
    }
    out
}

/// Query-string rejections in berth's error shape.
pub struct Query<T>(pub T);

impl<S, T> axum::extract::FromRequestParts<S> for Query<T>
where
    T: serde::de::DeserializeOwned,
    S: Send + Sync,
{
    type Rejection = crate::error::ApiError;

    async fn from_request_parts(
        parts: &mut axum::http::request::Parts,
        state: &S,
    ) -> Result<Self, Self::Rejection> {
        match axum::extract::Query::<T>::from_request_parts(parts, state).await {
            Ok(axum::extract::Query(v)) => Ok(Query(v)),
            Err(rej) => Err(crate::error::ApiError::invalid(format!(
                "invalid query: {}",
                rej.body_text()
            ))),
        }
    }
}

#[cfg(test)]
#[path = "contract_tests.rs"]
mod contract_tests;
#[cfg(test)]
#[path = "sso_tests.rs"]
mod sso_tests;
#[cfg(test)]
pub(crate) mod test_harness;
