//! `/api/v1/mcp`: MCP's streamable HTTP transport (protocol revisions 2025-06-18, 2025-03-26).
//!
//! `POST` carries one JSON-RPC message or a batch; the answer is JSON, or, when a tool call is
//! among the messages and the client accepts `text/event-stream`, an SSE stream that sends each
//! answer as a `message` event when it is ready (with keep-alive comments meanwhile) and then
//! ends. Notifications and responses alone are answered 202. `initialize` opens a session whose
//! id comes back in `Mcp-Session-Id`; every later request sends it. `DELETE` ends a session.
//! `GET` (a server-initiated stream) is not offered: 405, as the transport allows.
//!
//! The tools are `berth-mcp`'s, made here into requests through this server's own router
//! ([`InProcess`]) with the caller's `Authorization` header: the same authentication, access
//! table, handlers and audit as from outside, so a tool does exactly what the caller's token can.
//! The endpoint takes a bearer token only (not a browser session), since that header is what the
//! tool requests carry.

use std::convert::Infallible;
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use axum::body::Body;
use axum::extract::State;
use axum::http::{header, HeaderMap, HeaderValue, StatusCode};
use axum::response::sse::{Event, KeepAlive, Sse};
use axum::response::{IntoResponse, Response};
use axum::Extension;
use berth_domain::ErrorCode;
use berth_mcp::ToolError;
use futures_util::StreamExt;
use serde_json::Value;
use tower::ServiceExt;

use super::RequestBody;
use crate::auth::Actor;
use crate::error::{ApiError, ApiResult};
use crate::state::AppState;

/// The session header (HTTP header names are case-insensitive).
pub const SESSION_HEADER: &str = "mcp-session-id";
/// The protocol revision header of requests after `initialize`.
pub const VERSION_HEADER: &str = "mcp-protocol-version";
/// Longest one API request of a tool may take.
const REQUEST_TIMEOUT: Duration = Duration::from_secs(120);
/// Largest API response a tool reads.
const MAX_RESPONSE: usize = 32 << 20;
/// How often an SSE answer that is not ready yet sends a keep-alive comment.
const KEEP_ALIVE: Duration = Duration::from_secs(15);

/// Sends MCP messages (JSON-RPC 2.0 over streamable HTTP) and returns their answers.
#[utoipa::path(post, path = "/api/v1/mcp", tag = "mcp", operation_id = "mcp_post",
    request_body(content = Object, content_type = "application/json",
        description = "One JSON-RPC 2.0 message of the Model Context Protocol, or a batch (an \
            array, at most 32). `initialize` opens a session; every other request sends its \
            `Mcp-Session-Id`. Methods: `initialize`, `ping`, `tools/list`, `tools/call`; \
            notifications are accepted. See docs/mcp.md."),
    params(
        ("Mcp-Session-Id" = Option<String>, Header,
            description = "The session (from the `initialize` answer); required after it"),
        ("MCP-Protocol-Version" = Option<String>, Header,
            description = "The negotiated protocol revision: 2025-06-18, 2025-03-26 or 2024-11-05"),
    ),
    responses(
        (status = 200, description = "The JSON-RPC answer (an array for a batch); after \
            `initialize` with the session's `Mcp-Session-Id` header. With tool calls and \
            `Accept: text/event-stream`: an SSE stream of `message` events, one per answer",
            content((Object = "application/json"), (String = "text/event-stream"))),
        (status = 202, description = "Only notifications or responses were sent: nothing to answer"),
        (status = 400, description = "`invalid_argument`: the body is not a JSON-RPC message or \
            batch (1 to 32), the `Mcp-Session-Id` header is missing after `initialize`, or the \
            `MCP-Protocol-Version` is not one this server speaks", body = berth_api::ErrorBody),
        (status = 401, description = "`unauthorized`: no bearer token (a browser session does not \
            do: the tools run with the token), an unknown, expired or revoked one",
            body = berth_api::ErrorBody),
        (status = 404, description = "`not_found`: no such session (ended, idle for an hour, the \
            server restarted, or another token's): initialize again", body = berth_api::ErrorBody),
        (status = 429, description = "`rate_limited`: too many MCP sessions open (256 on the \
            server; 16 per token, all with tool calls in flight)", body = berth_api::ErrorBody)),
    security(("bearer" = [])))]
pub async fn post(
    State(state): State<Arc<AppState>>,
    Extension(actor): Extension<Actor>,
    headers: HeaderMap,
    body: super::JsonBody,
) -> ApiResult<Response> {
    let authorization = bearer(&headers)?;
    let api = Arc::new(InProcess {
        router: super::router(state.clone()),
        authorization,
    });
    let h = crate::mcp::Headers {
        session: header_str(&headers, SESSION_HEADER),
        version: header_str(&headers, VERSION_HEADER),
    };
    let ex = crate::mcp::post(&state, &actor, h, body.json_bytes()?, api)?;
    if ex.count == 0 {
        return Ok(StatusCode::ACCEPTED.into_response());
    }
    if ex.calls && accepts_event_stream(&headers) {
        let events = ex
            .answers
            .map(|v| Ok::<_, Infallible>(Event::default().event("message").data(v.to_string())));
        let sse = Sse::new(events).keep_alive(KeepAlive::new().interval(KEEP_ALIVE));
        return Ok(sse.into_response());
    }
    let answers: Vec<Value> = ex.answers.collect().await;
    let body = if ex.batch {
        Value::Array(answers)
    } else {
        answers.into_iter().next().unwrap_or(Value::Null)
    };
    let mut resp = axum::Json(body).into_response();
    if let Some(id) = ex.session {
        let value = HeaderValue::from_str(&id).map_err(ApiError::internal)?;
        resp.headers_mut().insert(SESSION_HEADER, value);
    }
    Ok(resp)
}

/// Ends an MCP session.
#[utoipa::path(delete, path = "/api/v1/mcp", tag = "mcp", operation_id = "mcp_end",
    params(("Mcp-Session-Id" = String, Header, description = "The session to end")),
    responses((status = 204, description = "Ended"),
        (status = 400, description = "`invalid_argument`: no `Mcp-Session-Id` header",
            body = berth_api::ErrorBody),
        (status = 404, description = "`not_found`: no such session (or another token's)",
            body = berth_api::ErrorBody)),
    security(("bearer" = [])))]
pub async fn end(
    State(state): State<Arc<AppState>>,
    Extension(actor): Extension<Actor>,
    headers: HeaderMap,
) -> ApiResult<StatusCode> {
    crate::mcp::end(&state, &actor, header_str(&headers, SESSION_HEADER))?;
    Ok(StatusCode::NO_CONTENT)
}

fn header_str<'a>(headers: &'a HeaderMap, name: &str) -> Option<&'a str> {
    headers.get(name).and_then(|v| v.to_str().ok())
}

/// The caller's `Authorization: Bearer …` header, which the tools' requests carry.
fn bearer(headers: &HeaderMap) -> ApiResult<HeaderValue> {
    headers
        .get(header::AUTHORIZATION)
        .filter(|v| {
            v.to_str()
                .ok()
                .and_then(crate::auth::bearer_token)
                .is_some()
        })
        .cloned()
        .ok_or_else(|| {
            ApiError::new(
                ErrorCode::Unauthorized,
                "the MCP endpoint takes a bearer token (`Authorization: Bearer <token>`): its \
                 tools run with it",
            )
        })
}

fn accepts_event_stream(headers: &HeaderMap) -> bool {
    headers
        .get_all(header::ACCEPT)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .any(|t| {
            t.split(';')
                .next()
                .is_some_and(|t| t.trim().eq_ignore_ascii_case("text/event-stream"))
        })
}

/// The tools' API inside the server: each request goes through this server's router with the
/// caller's `Authorization` header, exactly like a request from outside (token check, access
/// table, tenant scope, handler, audit). Nothing crosses a socket.
pub struct InProcess {
    router: axum::Router,
    authorization: HeaderValue,
}

#[async_trait]
impl berth_mcp::Api for InProcess {
    async fn send(&self, req: berth_mcp::Request) -> Result<Value, ToolError> {
        let what = format!("{} {}", req.method.as_str(), req.path);
        let mut builder = axum::http::Request::builder()
            .method(req.method.as_str())
            .uri(format!("{}{}", berth_api::API_PREFIX, req.path))
            .header(header::AUTHORIZATION, self.authorization.clone())
            .header(
                header::USER_AGENT,
                concat!("berth-mcp/", env!("CARGO_PKG_VERSION")),
            );
        let body = match &req.body {
            Some(v) => {
                builder = builder.header(header::CONTENT_TYPE, "application/json");
                Body::from(v.to_string())
            }
            None => Body::empty(),
        };
        let request = builder
            .body(body)
            .map_err(|e| ToolError::new("invalid_arguments", format!("{what}: {e}")))?;
        let call = self.router.clone().oneshot(request);
        let resp = match tokio::time::timeout(REQUEST_TIMEOUT, call).await {
            Ok(Ok(r)) => r,
            Ok(Err(never)) => match never {},
            Err(_) => {
                return Err(ToolError::new(
                    "timed_out",
                    format!("{what} took longer than {} s", REQUEST_TIMEOUT.as_secs()),
                ))
            }
        };
        let status = resp.status().as_u16();
        tracing::debug!(request = %what, status, "MCP tool request");
        let bytes = axum::body::to_bytes(resp.into_body(), MAX_RESPONSE)
            .await
            .map_err(|_| {
                ToolError::new(
                    "response_too_large",
                    format!("{what}: the answer is larger than {MAX_RESPONSE} bytes"),
                )
            })?;
        let json: Value = if bytes.iter().all(u8::is_ascii_whitespace) {
            Value::Null
        } else {
            serde_json::from_slice(&bytes)
                .unwrap_or_else(|_| Value::String(String::from_utf8_lossy(&bytes).into_owned()))
        };
        if (200..300).contains(&status) {
            return Ok(json);
        }
        let code = json["error"]["code"].as_str().unwrap_or_default();
        let message = json["error"]["message"]
            .as_str()
            .map(str::to_owned)
            .unwrap_or_else(|| format!("{what} answered {status}"));
        Err(ToolError::api(status, code, message))
    }
}

#[cfg(test)]
#[path = "mcp_tests.rs"]
mod tests;
