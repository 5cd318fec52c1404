//! HTTP routes under `/api/v1`. Handlers only parse and validate, then call the lifecycle or
//! the daemon; one file per resource.

pub mod backups;
pub mod egress;
pub mod egress_templates;
pub mod secrets;
pub mod sse;
pub mod system;
pub mod tasks;
pub mod terminal;
pub mod usage;
pub mod workspaces;

use std::sync::Arc;

use axum::routing::{get, post};
use axum::Router;

use crate::state::AppState;

pub fn router(state: Arc<AppState>) -> Router {
    let api = Router::new()
        .route("/version", get(system::version))
        .route("/whoami", get(system::whoami))
        .route("/doctor", get(system::doctor))
        .route("/audit", get(system::audit))
        .route("/image", get(system::image_status))
        .route("/image/build", post(system::image_build))
        .route("/openapi.json", get(crate::openapi::serve))
        .route(
            "/workspaces",
            get(workspaces::list).post(workspaces::create),
        )
        .route(
            "/workspaces/{ws}",
            get(workspaces::show).delete(workspaces::remove),
        )
        .route("/workspaces/{ws}/start", post(workspaces::start))
        .route("/workspaces/{ws}/stop", post(workspaces::stop))
        .route("/workspaces/{ws}/backup", get(backups::backup))
        .route("/backups/restore", post(backups::restore))
        .route("/workspaces/{ws}/exec", post(terminal::exec))
        .route("/workspaces/{ws}/exec/ws", get(terminal::exec_ws))
        .route(
            "/workspaces/{ws}/sessions",
            get(terminal::list_sessions).post(terminal::create_session),
        )
        .route(
            "/workspaces/{ws}/sessions/{session}",
            get(terminal::get_session).delete(terminal::remove_session),
        )
        .route(
            "/workspaces/{ws}/sessions/{session}/scrollback",
            get(terminal::scrollback),
        )
        .route(
            "/workspaces/{ws}/sessions/{session}/attach",
            get(terminal::attach),
        )
        .route("/tasks", get(tasks::list).post(tasks::create))
        .route("/tasks/{task}", get(tasks::show))
        .route("/tasks/{task}/messages", post(tasks::send))
        .route("/tasks/{task}/cancel", post(tasks::cancel))
        .route("/tasks/{task}/events", get(tasks::events))
        .route("/tasks/{task}/diff", get(tasks::diff))
        .route("/tasks/{task}/events/stream", get(tasks::stream))
        .route(
            "/workspaces/{ws}/egress/rules",
            get(egress::rules)
                .put(egress::set_rules)
                .post(egress::add_rule),
        )
        .route(
            "/workspaces/{ws}/egress/rules/{index}",
            axum::routing::delete(egress::remove_rule),
        )
        .route("/workspaces/{ws}/egress/effective", get(egress::effective))
        .route(
            "/workspaces/{ws}/egress/templates",
            get(egress_templates::attached).post(egress_templates::attach),
        )
        .route(
            "/workspaces/{ws}/egress/templates/{name}",
            axum::routing::delete(egress_templates::detach),
        )
        .route(
            "/egress/templates",
            get(egress_templates::list).post(egress_templates::create),
        )
        .route(
            "/egress/templates/{tenant}/{name}",
            get(egress_templates::show)
                .put(egress_templates::set)
                .delete(egress_templates::remove),
        )
        .route("/workspaces/{ws}/egress/log", get(egress::log))
        .route(
            "/workspaces/{ws}/egress/log/stream",
            get(egress::log_stream),
        )
        .route("/secrets", get(secrets::list))
        .route(
            "/secrets/{tenant}/{name}",
            axum::routing::put(secrets::set).delete(secrets::remove),
        )
        .route("/usage", get(usage::usage))
        .route("/usage/calls", get(usage::calls))
        .route("/usage/calls/{id}", get(usage::call))
        .route(
            "/budgets",
            get(usage::list_budgets)
                .put(usage::set_budget)
                .delete(usage::remove_budget),
        )
        .fallback(not_found)
        .layer(axum::middleware::from_fn_with_state(
            state.clone(),
            crate::auth::require_token,
        ))
        .layer(axum::middleware::map_response(json_errors));
    Router::new()
        .nest(berth_api::API_PREFIX, api)
        .route("/healthz", get(|| async { "ok" }))
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
pub fn parse_body<T: serde::de::DeserializeOwned>(
    body: &(impl RequestBody + ?Sized),
) -> crate::error::ApiResult<T> {
    let invalid = |e: serde_json::Error| {
        crate::error::ApiError::invalid(format!("invalid request body: {e}"))
    };
    let mut v: serde_json::Value = serde_json::from_slice(body.json_bytes()?).map_err(invalid)?;
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
