//! MCP over streamable HTTP (`/api/v1/mcp`): the sessions, and the messages of one POST.
//!
//! The tools and the JSON-RPC handling are `berth-mcp`'s, the same code `berth mcp` serves on
//! stdio. Each tool call is made through the [`berth_mcp::Api`] the HTTP layer hands in: a
//! request through the server's own router carrying the caller's `Authorization` header, so it
//! passes the same authentication, access table, handlers and audit as a request from outside,
//! and can do exactly what the caller's token can. This module never sees the token.
//!
//! Sessions (`Mcp-Session-Id`) are in memory: created at `initialize`, bound to the caller that
//! created them (another token naming one gets 404, as for an unknown one), ended by `DELETE`,
//! dropped after [`SESSION_IDLE`] without a request. A restart forgets them; clients then
//! initialize again, as the protocol says they must on a 404.
//!
//! Limits: at most [`MAX_SESSIONS`] sessions on the server and [`MAX_SESSIONS_PER_CALLER`] per
//! caller (a caller's new session replaces its least recently used idle one; when every one is
//! busy, or the server is full, `initialize` is refused with 429), [`MAX_BATCH`] messages per
//! POST, [`MAX_CALLS_PER_SESSION`] tool calls in flight per session (more are JSON-RPC errors),
//! and [`CALL_TIMEOUT`] per tool call. The body cap is the API's (`routes::MAX_BODY_BYTES`).

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use berth_domain::ErrorCode;
use berth_mcp::protocol::{answer, error as rpc_error, negotiate};
use berth_mcp::{handle, tool_result, Api, Handled, ToolError, PROTOCOL_VERSIONS};
use futures_util::stream::{self, BoxStream, FuturesUnordered, StreamExt};
use rand::RngCore;
use serde_json::Value;
use tokio::sync::{OwnedSemaphorePermit, Semaphore};

use crate::auth::Actor;
use crate::error::{ApiError, ApiResult};
use crate::state::AppState;

/// Most sessions the server keeps.
pub const MAX_SESSIONS: usize = 256;
/// Most sessions one caller (token) keeps.
pub const MAX_SESSIONS_PER_CALLER: usize = 16;
/// A session without a request for this long is forgotten.
pub const SESSION_IDLE: Duration = Duration::from_secs(60 * 60);
/// Most tool calls in flight in one session.
pub const MAX_CALLS_PER_SESSION: usize = 8;
/// Most JSON-RPC messages in one POST (a batch).
pub const MAX_BATCH: usize = 32;
/// Longest one tool call may take: the longest `wait`, and two minutes for its requests.
pub const CALL_TIMEOUT: Duration =
    Duration::from_secs(berth_mcp::tools::MAX_WAIT_SECONDS as u64 + 120);

/// The open sessions.
#[derive(Default)]
pub struct Sessions {
    map: Mutex<HashMap<String, Session>>,
}

struct Session {
    /// The caller (token or user id) that created it; only it may use it.
    caller: String,
    last_used: Instant,
    /// Permits for tool calls in flight.
    calls: Arc<Semaphore>,
}

impl Session {
    fn busy(&self) -> bool {
        self.calls.available_permits() < MAX_CALLS_PER_SESSION
    }

    fn expired(&self, now: Instant) -> bool {
        !self.busy() && now.duration_since(self.last_used) > SESSION_IDLE
    }
}

impl Sessions {
    /// How many sessions are open (expired ones not yet dropped included).
    pub fn len(&self) -> usize {
        berth_domain::sync::lock(&self.map).len()
    }

    /// Opens a session for `caller`; returns its id.
    fn open(&self, caller: &str) -> ApiResult<String> {
        self.open_at(caller, Instant::now())
    }

    /// [`Self::open`] at `now` (expired sessions are dropped first).
    fn open_at(&self, caller: &str, now: Instant) -> ApiResult<String> {
        let mut map = berth_domain::sync::lock(&self.map);
        map.retain(|_, s| !s.expired(now));
        let mine: Vec<(&String, &Session)> =
            map.iter().filter(|(_, s)| s.caller == caller).collect();
        if mine.len() >= MAX_SESSIONS_PER_CALLER {
            // The caller's least recently used idle session makes room; another caller's never.
            let oldest = mine
                .iter()
                .filter(|(_, s)| !s.busy())
                .min_by_key(|(_, s)| s.last_used)
                .map(|(id, _)| (*id).clone());
            match oldest {
                Some(id) => {
                    map.remove(&id);
                }
                None => {
                    return Err(ApiError::new(
                        ErrorCode::RateLimited,
                        format!(
                            "this token has {MAX_SESSIONS_PER_CALLER} MCP sessions with tool \
                             calls in flight: end one (DELETE /api/v1/mcp) or wait"
                        ),
                    ))
                }
            }
        } else if map.len() >= MAX_SESSIONS {
            return Err(ApiError::new(
                ErrorCode::RateLimited,
                format!(
                    "the server has {MAX_SESSIONS} open MCP sessions: retry once one ends or \
                     has been idle for {} minutes",
                    SESSION_IDLE.as_secs() / 60
                ),
            ));
        }
        let id = new_session_id();
        map.insert(
            id.clone(),
            Session {
                caller: caller.to_owned(),
                last_used: now,
                calls: Arc::new(Semaphore::new(MAX_CALLS_PER_SESSION)),
            },
        );
        Ok(id)
    }

    /// The call permits of `caller`'s session `id`, noting its use; 404 for an unknown,
    /// expired or other caller's session.
    fn touch(&self, caller: &str, id: &str) -> ApiResult<Arc<Semaphore>> {
        let now = Instant::now();
        let mut map = berth_domain::sync::lock(&self.map);
        match map.get_mut(id) {
            Some(s) if s.caller == caller && !s.expired(now) => {
                s.last_used = now;
                Ok(s.calls.clone())
            }
            _ => Err(unknown_session()),
        }
    }

    /// Ends `caller`'s session `id`.
    fn close(&self, caller: &str, id: &str) -> ApiResult<()> {
        let mut map = berth_domain::sync::lock(&self.map);
        match map.get(id) {
            Some(s) if s.caller == caller => {
                map.remove(id);
                Ok(())
            }
            _ => Err(unknown_session()),
        }
    }
}

fn unknown_session() -> ApiError {
    ApiError::not_found(
        "no such MCP session (it ended, expired, or the server restarted): initialize a new one",
    )
}

/// `mcp_` and 32 random hex digits (visible ASCII, as the protocol asks).
fn new_session_id() -> String {
    let mut bytes = [0u8; 16];
    rand::thread_rng().fill_bytes(&mut bytes);
    format!("mcp_{}", hex::encode(bytes))
}

/// The MCP headers of a POST.
#[derive(Debug, Default, Clone, Copy)]
pub struct Headers<'a> {
    /// `Mcp-Session-Id`.
    pub session: Option<&'a str>,
    /// `MCP-Protocol-Version`.
    pub version: Option<&'a str>,
}

/// What one POST gets back.
pub struct Exchange {
    /// The new session's id (an `initialize`), for the `Mcp-Session-Id` header.
    pub session: Option<String>,
    /// The body was a batch: answer with an array.
    pub batch: bool,
    /// Some message is a tool call, whose answer may take long (stream it if the client can).
    pub calls: bool,
    /// The answers, as they are ready (none: only notifications or responses were sent, 202).
    pub answers: BoxStream<'static, Value>,
    /// How many answers will come.
    pub count: usize,
}

/// Handles the JSON-RPC message (or batch) of one POST by `actor`: `initialize` opens a
/// session; everything else needs the caller's session. Tool calls are made through `api`.
pub fn post(
    state: &AppState,
    actor: &Actor,
    headers: Headers<'_>,
    body: &[u8],
    api: Arc<dyn Api>,
) -> ApiResult<Exchange> {
    let (messages, batch) = parse_messages(body)?;
    check_version(headers.version)?;
    if !batch && is_init(&messages[0]) {
        return initialize(state, actor, &messages[0]);
    }
    let Some(id) = headers.session else {
        return Err(ApiError::invalid(
            "missing Mcp-Session-Id header: send `initialize` first and use the session id its \
             answer carries",
        ));
    };
    let permits = state.web.mcp.touch(&actor.id, id)?;
    Ok(in_session(&messages, batch, &permits, &api))
}

/// The body's messages and whether it was a batch; 400 unless it is 1 to [`MAX_BATCH`] of them.
fn parse_messages(body: &[u8]) -> ApiResult<(Vec<Value>, bool)> {
    let parsed: Value = serde_json::from_slice(body)
        .map_err(|e| ApiError::invalid(format!("invalid request body: not JSON: {e}")))?;
    let (messages, batch) =
        match parsed {
            Value::Array(items) => (items, true),
            v @ Value::Object(_) => (vec![v], false),
            _ => return Err(ApiError::invalid(
                "invalid request body: expected a JSON-RPC message (an object) or a batch of them \
                 (an array)",
            )),
        };
    if messages.is_empty() || messages.len() > MAX_BATCH {
        return Err(ApiError::invalid(format!(
            "a batch holds 1 to {MAX_BATCH} messages (got {})",
            messages.len()
        )));
    }
    Ok((messages, batch))
}

/// 400 for an `MCP-Protocol-Version` header naming a version this server does not speak.
fn check_version(version: Option<&str>) -> ApiResult<()> {
    if let Some(v) = version.filter(|v| !PROTOCOL_VERSIONS.contains(v)) {
        return Err(ApiError::invalid(format!(
            "unsupported MCP-Protocol-Version {v:?}: this server speaks {}",
            PROTOCOL_VERSIONS.join(", ")
        )));
    }
    Ok(())
}

/// Whether `m` is an `initialize` request (a notification of that name is not).
fn is_init(m: &Value) -> bool {
    m["method"] == "initialize" && m.get("id").is_some()
}

/// Answers a lone `initialize`: opens a session for `actor`, whose id the answer carries.
fn initialize(state: &AppState, actor: &Actor, msg: &Value) -> ApiResult<Exchange> {
    let session = state.web.mcp.open(&actor.id)?;
    let reply = match handle(msg) {
        Handled::Reply(r) => r,
        _ => rpc_error(msg["id"].clone(), -32603, "initialize failed"),
    };
    let asked = msg["params"]["protocolVersion"].as_str();
    tracing::debug!(caller = %actor.id, version = negotiate(asked.unwrap_or_default()),
        "MCP session opened");
    Ok(Exchange {
        session: Some(session),
        batch: false,
        calls: false,
        answers: stream::iter([reply]).boxed(),
        count: 1,
    })
}

/// Answers the messages of a session's POST: replies at once, then each tool call (taking one
/// of the session's `permits`, or refused) as it finishes.
fn in_session(
    messages: &[Value],
    batch: bool,
    permits: &Arc<Semaphore>,
    api: &Arc<dyn Api>,
) -> Exchange {
    let mut ready = Vec::new();
    let calls = FuturesUnordered::new();
    for msg in messages {
        if is_init(msg) {
            ready.push(rpc_error(
                msg["id"].clone(),
                -32600,
                "initialize must be sent alone, not in a batch",
            ));
            continue;
        }
        match handle(msg) {
            Handled::Reply(r) => ready.push(r),
            Handled::Nothing => {}
            Handled::Call { id, name, args } => match permits.clone().try_acquire_owned() {
                Ok(permit) => calls.push(call_tool(api.clone(), permit, id, name, args)),
                Err(_) => ready.push(rpc_error(
                    id,
                    -32000,
                    &format!(
                        "too many tool calls in flight in this session (at most \
                         {MAX_CALLS_PER_SESSION}): wait for one to finish"
                    ),
                )),
            },
        }
    }
    let count = ready.len() + calls.len();
    let has_calls = !calls.is_empty();
    Exchange {
        session: None,
        batch,
        calls: has_calls,
        answers: stream::iter(ready).chain(calls).boxed(),
        count,
    }
}

/// Makes tool call `id` within [`CALL_TIMEOUT`], holding `permit` until it ends; its answer.
async fn call_tool(
    api: Arc<dyn Api>,
    permit: OwnedSemaphorePermit,
    id: Value,
    name: String,
    args: Value,
) -> Value {
    let result =
        match tokio::time::timeout(CALL_TIMEOUT, berth_mcp::tools::call(&*api, &name, &args)).await
        {
            Ok(r) => r,
            Err(_) => Err(ToolError::new(
                "timed_out",
                format!("{name} did not finish within {} s", CALL_TIMEOUT.as_secs()),
            )),
        };
    drop(permit);
    answer(id, tool_result(result))
}

/// Ends `actor`'s session `id` (`DELETE /api/v1/mcp`).
pub fn end(state: &AppState, actor: &Actor, id: Option<&str>) -> ApiResult<()> {
    let Some(id) = id else {
        return Err(ApiError::invalid(
            "missing Mcp-Session-Id header: name the session to end",
        ));
    };
    state.web.mcp.close(&actor.id, id)
}

#[cfg(test)]
#[path = "mcp_tests.rs"]
mod tests;
