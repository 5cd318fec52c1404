//! A scripted mock LLM upstream that speaks the four wire formats the agent CLIs use:
//! Anthropic Messages, OpenAI Responses, OpenAI Chat Completions and Gemini `generateContent`.
//!
//! The server runs on `127.0.0.1:<free port>` on its own thread and tokio runtime, so callers
//! may block (e.g. `std::process::Command::output`) in any kind of test without starving it.
//! Dropping the [`MockLlm`] stops it and ends every open stream.
//!
//! Behaviour is **stateless**: each answer is decided from the request alone, so side calls
//! (titles, classifiers) and retries never desynchronise it:
//! - tools offered and the conversation ends with a new user message → one call of the
//!   request's shell tool running [`Script::shell_command`];
//! - the conversation ends with a tool result → the text [`Script::final_text`];
//! - no tools offered → a short text (`"Title"`), or the Gemini CLI routing-classifier JSON;
//! - the latest user text contains [`Script::slow_marker`] → the first events are streamed, then
//!   the response is held open for 120 s (with keep-alives) before it completes;
//! - the request body contains [`Script::delay_marker`] → the whole answer waits [`DELAY`]
//!   first (calls that stay in flight a while, e.g. to race budget checks);
//! - the latest user text contains [`REPLY_MARKER`]`<note>` → the text `REPLY <note>` at once
//!   (no tool call, even when the conversation ends with a tool result): the answer to a
//!   redirected turn, told apart from [`Script::final_text`];
//! - the latest user text contains [`MCP_MARKER`]`<note>` → one call of the offered MCP tool
//!   whose name ends in [`MCP_TOOL_SUFFIX`] with `{"text": "<note>"}` (instead of the shell
//!   call); Codex's deferred MCP tools are first found with its `tool_search` tool; when no such
//!   tool is offered, a text starting with [`MCP_MISSING`] naming the tools that were;
//! - a user message containing [`MCP_SCRIPT_MARKER`]`[steps]` (Anthropic Messages) → the offered
//!   tools the steps name, called in order, one per request, then the final text.
//!
//! Every final event carries usage: 20 input tokens, 10 output tokens.

use std::convert::Infallible;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::body::{Body, Bytes};
use axum::extract::{Request, State};
use axum::http::{header, HeaderMap, Method, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::Router;
use serde_json::{json, Value};
use tokio::sync::{mpsc, oneshot};

/// Input tokens reported in every final event.
pub const USAGE_INPUT_TOKENS: u64 = 20;
/// Output tokens reported in every final event.
pub const USAGE_OUTPUT_TOKENS: u64 = 10;
/// How long a slow response is held open.
pub const SLOW_HOLD: Duration = Duration::from_secs(120);
/// How long a request carrying [`Script::delay_marker`] waits before it is answered.
pub const DELAY: Duration = Duration::from_secs(2);

/// Which API a request was addressed to.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum WireFormat {
    AnthropicMessages,
    OpenaiResponses,
    OpenaiChat,
    Gemini,
    Other,
}

/// One request as the mock received it.
#[derive(Clone, Debug)]
pub struct RecordedRequest {
    pub method: String,
    /// Path with query, e.g. `/v1/messages?beta=true`.
    pub path: String,
    /// Header names lowercased, in arrival order.
    pub headers: Vec<(String, String)>,
    /// The parsed JSON body; `Null` when the body was empty or not JSON.
    pub body: Value,
    pub format: WireFormat,
    /// When the mock had read the whole request.
    pub at: std::time::Instant,
}

impl RecordedRequest {
    /// The first value of a header (name is matched case-insensitively).
    pub fn header(&self, name: &str) -> Option<&str> {
        let name = name.to_ascii_lowercase();
        self.headers
            .iter()
            .find(|(k, _)| *k == name)
            .map(|(_, v)| v.as_str())
    }
}

/// What the mock answers.
#[derive(Clone, Debug)]
pub struct Script {
    /// The command the shell tool call runs.
    pub shell_command: String,
    /// The text answered after a tool result.
    pub final_text: String,
    /// A user message containing this is answered slowly (held open for [`SLOW_HOLD`]).
    pub slow_marker: String,
    /// A request body containing this is answered after [`DELAY`].
    pub delay_marker: String,
}

impl Default for Script {
    fn default() -> Self {
        Self {
            shell_command: "echo hi > hello.txt".into(),
            final_text: "DONE".into(),
            slow_marker: "SLOW".into(),
            delay_marker: "BERTH-MOCK-DELAY".into(),
        }
    }
}

struct Shared {
    script: Script,
    requests: Mutex<Vec<RecordedRequest>>,
    counter: AtomicU64,
}

impl Shared {
    fn next_id(&self) -> u64 {
        self.counter.fetch_add(1, Ordering::Relaxed) + 1
    }
}

/// The running mock server. Stops on drop.
pub struct MockLlm {
    url: String,
    shared: Arc<Shared>,
    shutdown: Option<oneshot::Sender<()>>,
}

impl MockLlm {
    /// Starts with the default [`Script`].
    pub async fn start() -> MockLlm {
        Self::start_with(Script::default()).await
    }

    pub async fn start_with(script: Script) -> MockLlm {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("binding the mock LLM");
        listener.set_nonblocking(true).unwrap();
        let port = listener.local_addr().unwrap().port();
        let shared = Arc::new(Shared {
            script,
            requests: Mutex::new(Vec::new()),
            counter: AtomicU64::new(0),
        });
        let (shutdown_tx, shutdown_rx) = oneshot::channel::<()>();
        let state = shared.clone();
        std::thread::Builder::new()
            .name(format!("mock-llm-{port}"))
            .spawn(move || {
                let rt = tokio::runtime::Builder::new_multi_thread()
                    .worker_threads(2)
                    .enable_all()
                    .build()
                    .unwrap();
                rt.block_on(async move {
                    let listener = tokio::net::TcpListener::from_std(listener).unwrap();
                    let app = Router::new().fallback(handle).with_state(state);
                    tokio::select! {
                        res = axum::serve(listener, app) => { let _ = res; }
                        _ = shutdown_rx => {}
                    }
                });
                // Dropping the runtime cancels every connection and stream task.
                rt.shutdown_background();
            })
            .unwrap();
        MockLlm {
            url: format!("http://127.0.0.1:{port}"),
            shared,
            shutdown: Some(shutdown_tx),
        }
    }

    /// `http://127.0.0.1:PORT`, no trailing slash. Every wire format is served under it.
    pub fn url(&self) -> String {
        self.url.clone()
    }

    /// The script this mock follows.
    pub fn script(&self) -> &Script {
        &self.shared.script
    }

    /// Every request received so far, in arrival order.
    pub fn requests(&self) -> Vec<RecordedRequest> {
        self.shared.requests.lock().unwrap().clone()
    }

    /// The requests of one wire format, in arrival order.
    pub fn requests_for(&self, kind: WireFormat) -> Vec<RecordedRequest> {
        self.requests()
            .into_iter()
            .filter(|r| r.format == kind)
            .collect()
    }
}

impl Drop for MockLlm {
    fn drop(&mut self) {
        if let Some(tx) = self.shutdown.take() {
            let _ = tx.send(());
        }
    }
}

// ---------------------------------------------------------------------------------------------
// Routing

async fn handle(State(shared): State<Arc<Shared>>, req: Request) -> Response {
    let method = req.method().clone();
    let path = req
        .uri()
        .path_and_query()
        .map(|p| p.as_str().to_owned())
        .unwrap_or_else(|| req.uri().path().to_owned());
    let bare_path = req.uri().path().to_owned();
    let headers = record_headers(req.headers());
    let bytes = axum::body::to_bytes(req.into_body(), 256 * 1024 * 1024)
        .await
        .unwrap_or_default();
    let body: Value = serde_json::from_slice(&bytes).unwrap_or(Value::Null);
    let marker = shared.script.delay_marker.as_bytes();
    if !marker.is_empty() && bytes.windows(marker.len()).any(|w| w == marker) {
        tokio::time::sleep(DELAY).await;
    }

    let route = route(&method, &bare_path);
    let format = match &route {
        Route::Root | Route::NotFound => WireFormat::Other,
        Route::Anthropic | Route::AnthropicCountTokens => WireFormat::AnthropicMessages,
        Route::Responses => WireFormat::OpenaiResponses,
        Route::Chat | Route::Models => WireFormat::OpenaiChat,
        Route::Gemini { .. } | Route::GeminiCountTokens => WireFormat::Gemini,
    };
    shared.requests.lock().unwrap().push(RecordedRequest {
        method: method.to_string(),
        path,
        headers,
        body: body.clone(),
        format,
        at: std::time::Instant::now(),
    });

    match route {
        Route::Root => (StatusCode::OK, "ok").into_response(),
        Route::NotFound => (
            StatusCode::NOT_FOUND,
            axum::Json(json!({"error": {"type": "not_found", "message": format!("mock LLM: no route for {method} {bare_path}")}})),
        )
            .into_response(),
        Route::AnthropicCountTokens => axum::Json(json!({
            "input_tokens": (bytes.len() as u64 / 4).max(1)
        }))
        .into_response(),
        Route::Models => models_list(&shared),
        Route::Anthropic => anthropic(&shared, &body),
        Route::Responses => responses(&shared, &body),
        Route::Chat => chat(&shared, &body),
        Route::GeminiCountTokens => axum::Json(json!({
            "totalTokens": (bytes.len() as u64 / 4).max(1)
        }))
        .into_response(),
        Route::Gemini { model, stream } => gemini(&shared, &body, &model, stream),
    }
}

enum Route {
    Root,
    Anthropic,
    AnthropicCountTokens,
    Responses,
    Chat,
    Models,
    Gemini { model: String, stream: bool },
    GeminiCountTokens,
    NotFound,
}

fn route(method: &Method, path: &str) -> Route {
    let post = method == Method::POST;
    let get = method == Method::GET || method == Method::HEAD;
    match path {
        "/" if get => return Route::Root,
        "/v1/messages" if post => return Route::Anthropic,
        "/v1/messages/count_tokens" if post => return Route::AnthropicCountTokens,
        "/v1/responses" if post => return Route::Responses,
        "/v1/chat/completions" | "/chat/completions" if post => return Route::Chat,
        "/v1/models" | "/models" if get => return Route::Models,
        _ => {}
    }
    // `/v1beta/models/{model}:{action}` (also `/v1/…`): a colon inside one segment.
    if post {
        let rest = path
            .strip_prefix("/v1beta/models/")
            .or_else(|| path.strip_prefix("/v1/models/"))
            .or_else(|| path.strip_prefix("/v1alpha/models/"));
        if let Some((model, action)) = rest.and_then(|r| r.rsplit_once(':')) {
            match action {
                "streamGenerateContent" => {
                    return Route::Gemini {
                        model: model.to_owned(),
                        stream: true,
                    }
                }
                "generateContent" => {
                    return Route::Gemini {
                        model: model.to_owned(),
                        stream: false,
                    }
                }
                "countTokens" => return Route::GeminiCountTokens,
                _ => {}
            }
        }
    }
    Route::NotFound
}

fn record_headers(h: &HeaderMap) -> Vec<(String, String)> {
    h.iter()
        .map(|(k, v)| {
            (
                k.as_str().to_ascii_lowercase(),
                String::from_utf8_lossy(v.as_bytes()).into_owned(),
            )
        })
        .collect()
}

// ---------------------------------------------------------------------------------------------
// The scripted decision

#[derive(Debug, Clone, PartialEq)]
enum Answer {
    /// Call tool `name` with these arguments.
    Tool { name: String, args: Value },
    /// Plain text.
    Text(String),
}

/// What the request looks like, extracted per wire format.
struct Conversation {
    tool_names: Vec<String>,
    last_is_tool_result: bool,
    latest_user_text: String,
    classifier: bool,
    /// A [`MCP_SCRIPT_MARKER`] script: the text after the marker, and how many tool results
    /// followed the message carrying it (Anthropic Messages only).
    mcp_script: Option<(String, usize)>,
}

fn decide(script: &Script, conv: &Conversation) -> (Answer, bool) {
    let slow =
        !script.slow_marker.is_empty() && conv.latest_user_text.contains(&script.slow_marker);
    if conv.classifier {
        return (
            Answer::Text(r#"{"complexity_reasoning":"simple","complexity_score":1}"#.into()),
            slow,
        );
    }
    if conv.tool_names.is_empty() {
        return (Answer::Text("Title".into()), slow);
    }
    if let Some((_, rest)) = conv.latest_user_text.split_once(REPLY_MARKER) {
        return (Answer::Text(format!("REPLY {}", mcp_note(rest))), slow);
    }
    if let Some((steps, done)) = &conv.mcp_script {
        return (
            mcp_script_step(script, &conv.tool_names, steps, *done),
            slow,
        );
    }
    if conv.last_is_tool_result {
        return (Answer::Text(script.final_text.clone()), slow);
    }
    if let Some(answer) = mcp_call(conv) {
        return (answer, slow);
    }
    match shell_call(&conv.tool_names, &script.shell_command) {
        Some(a) => (a, slow),
        None => (Answer::Text(script.final_text.clone()), slow),
    }
}

/// One call of the offered shell tool, with the argument shape that tool expects.
fn shell_call(tools: &[String], cmd: &str) -> Option<Answer> {
    let has = |n: &str| tools.iter().any(|t| t == n);
    let call = |name: &str, args: Value| {
        Some(Answer::Tool {
            name: name.to_owned(),
            args,
        })
    };
    let description = "Run the scripted command";
    if has("Bash") {
        return call(
            "Bash",
            json!({ "command": cmd, "description": description }),
        );
    }
    if has("exec_command") {
        return call("exec_command", json!({ "cmd": cmd }));
    }
    if has("shell") {
        return call("shell", json!({ "command": ["bash", "-lc", cmd] }));
    }
    if has("run_shell_command") {
        return call(
            "run_shell_command",
            json!({ "command": cmd, "description": description }),
        );
    }
    if has("bash") {
        return call(
            "bash",
            json!({ "command": cmd, "description": description }),
        );
    }
    let fallback = tools.iter().find(|t| {
        let l = t.to_ascii_lowercase();
        l.contains("shell") || l.contains("bash") || l.contains("exec")
    })?;
    call(fallback, json!({ "command": cmd }))
}

/// A user message containing this marker followed by a note (letters, digits, `-`, `_`, `.`) is
/// answered with the text `REPLY <note>` and no tool call.
pub const REPLY_MARKER: &str = "BERTH-MOCK-REPLY:";

// --- MCP (the `mcp` suite): a marker that makes the model call an MCP tool -------------------

/// A user message containing this marker followed by a note (letters, digits, `-`, `_`, `.`) makes
/// the model call the offered MCP tool named `…record_note` with `{"text": note}`.
pub const MCP_MARKER: &str = "BERTH-MCP-NOTE:";
/// How the MCP tool is recognised: each CLI names MCP tools its own way
/// (`mcp__notes__record_note`, `notes_record_note`, `record_note`, …), all ending in this.
pub const MCP_TOOL_SUFFIX: &str = "record_note";
/// The text answered when the marker is present but no tool ends in [`MCP_TOOL_SUFFIX`]; the
/// offered tool names follow it.
pub const MCP_MISSING: &str = "MCP-TOOL-MISSING; offered tools:";

/// The note after the marker: letters, digits, `-`, `_` and `.` (a CLI may quote the prompt).
fn mcp_note(rest: &str) -> String {
    rest.chars()
        .take_while(|c| c.is_alphanumeric() || matches!(c, '-' | '_' | '.'))
        .collect()
}

/// The MCP-marker answer, or `None` when the latest user text has no marker.
fn mcp_call(conv: &Conversation) -> Option<Answer> {
    let (_, rest) = conv.latest_user_text.split_once(MCP_MARKER)?;
    let note = mcp_note(rest);
    let tool = conv
        .tool_names
        .iter()
        .find(|t| t.ends_with(MCP_TOOL_SUFFIX));
    Some(match tool {
        Some(name) => Answer::Tool {
            name: name.clone(),
            args: json!({ "text": note }),
        },
        None => Answer::Text(format!("{MCP_MISSING} {}", conv.tool_names.join(", "))),
    })
}

/// The MCP marker's answer in the Responses API (Codex), which defers MCP tools behind its
/// client-side `tool_search` tool and names them inside namespaces (`mcp__notes__` +
/// `record_note`): a call of the tool when it is offered (in `tools`, or found by an earlier
/// search in the input), else one `tool_search_call` for it when searching is offered and has not
/// happened yet. `None` leaves the answer to [`decide`] (which reports a missing tool).
fn responses_mcp_item(body: &Value, input: &[Value], conv: &Conversation, n: u64) -> Option<Value> {
    let (_, rest) = conv.latest_user_text.split_once(MCP_MARKER)?;
    if conv.last_is_tool_result {
        return None;
    }
    let note = mcp_note(rest);
    let searched: Vec<&Value> = input
        .iter()
        .filter(|i| i.get("type").and_then(Value::as_str) == Some("tool_search_output"))
        .collect();
    let mut offered: Vec<&Value> = body
        .get("tools")
        .and_then(Value::as_array)
        .map(|a| a.iter().collect())
        .unwrap_or_default();
    for out in &searched {
        offered.extend(
            out.get("tools")
                .and_then(Value::as_array)
                .into_iter()
                .flatten(),
        );
    }
    if let Some((namespace, name)) = offered.iter().find_map(|t| find_mcp_tool(t, None)) {
        let mut item = json!({"type": "function_call", "id": format!("fc_mock_{n:08}"),
            "call_id": format!("call_mock_{n:08}"), "name": name,
            "arguments": json!({"text": note}).to_string(), "status": "completed"});
        if let Some(ns) = namespace {
            item["namespace"] = json!(ns);
        }
        return Some(item);
    }
    let can_search = offered
        .iter()
        .any(|t| t.get("type").and_then(Value::as_str) == Some("tool_search"));
    (can_search && searched.is_empty()).then(|| {
        json!({"type": "tool_search_call", "id": format!("ts_mock_{n:08}"),
            "call_id": format!("call_mock_{n:08}"), "execution": "client", "status": "completed",
            "arguments": {"query": MCP_TOOL_SUFFIX, "limit": 8}})
    })
}

/// A tool named `…record_note` in a tool definition or a namespace of them: (namespace, name).
fn find_mcp_tool(t: &Value, namespace: Option<&str>) -> Option<(Option<String>, String)> {
    let name = t.get("name").and_then(Value::as_str);
    if let Some(inner) = t.get("tools").and_then(Value::as_array) {
        return inner.iter().find_map(|i| find_mcp_tool(i, name));
    }
    let name = name.filter(|n| n.ends_with(MCP_TOOL_SUFFIX))?;
    Some((namespace.map(str::to_owned), name.to_owned()))
}

/// A user message containing this marker followed by a JSON array of steps,
/// `[{"tool": "create_workspace", "args": {…}}, …]`, makes the model call the offered tools in
/// that order, one per request: step N once N tool results follow that message, then
/// [`Script::final_text`]. A step's tool is the offered one named `tool` or ending in `_tool`
/// (Claude Code offers `mcp__berth__create_workspace`); when none is offered, the answer is
/// [`MCP_MISSING`] with the offered names. Stateless like the rest: the step is read from the
/// conversation. Anthropic Messages (Claude Code) only.
pub const MCP_SCRIPT_MARKER: &str = "BERTH-MCP-SCRIPT:";

/// The answer to step `done` of the script in `text` (what follows the marker).
fn mcp_script_step(script: &Script, tools: &[String], text: &str, done: usize) -> Answer {
    let steps: Vec<Value> = serde_json::Deserializer::from_str(text.trim_start())
        .into_iter::<Value>()
        .next()
        .and_then(Result::ok)
        .and_then(|v| v.as_array().cloned())
        .unwrap_or_default();
    let Some(step) = steps.get(done) else {
        return Answer::Text(script.final_text.clone());
    };
    let want = step["tool"].as_str().unwrap_or_default();
    let offered = tools
        .iter()
        .find(|t| *t == want || t.ends_with(&format!("_{want}")));
    match offered {
        Some(name) => Answer::Tool {
            name: name.clone(),
            args: step.get("args").cloned().unwrap_or(json!({})),
        },
        None => Answer::Text(format!("{MCP_MISSING} {}", tools.join(", "))),
    }
}

/// The script of an Anthropic conversation: the text after [`MCP_SCRIPT_MARKER`] in the last
/// user message carrying it, and the number of tool results in the user messages after it.
fn anthropic_mcp_script(messages: &[Value]) -> Option<(String, usize)> {
    let is_user = |m: &Value| m.get("role").and_then(Value::as_str) == Some("user");
    let (at, text) = messages.iter().enumerate().rev().find_map(|(i, m)| {
        let text = m.get("content").map(text_of).filter(|_| is_user(m))?;
        let (_, rest) = text.split_once(MCP_SCRIPT_MARKER)?;
        Some((i, rest.to_owned()))
    })?;
    let results = messages[at + 1..]
        .iter()
        .filter(|m| is_user(m))
        .filter_map(|m| m.get("content").and_then(Value::as_array))
        .flatten()
        .filter(|b| b.get("type").and_then(Value::as_str) == Some("tool_result"))
        .count();
    Some((text, results))
}

// --- end of MCP ----------------------------------------------------------------------------

/// A user message berth adds to a running turn (`[berth] …`).
fn is_berth_note(item: &Value) -> bool {
    item.get("role").and_then(Value::as_str) == Some("user")
        && item
            .get("content")
            .map(text_of)
            .is_some_and(|t| t.starts_with("[berth] "))
}

fn text_of(content: &Value) -> String {
    match content {
        Value::String(s) => s.clone(),
        Value::Array(parts) => parts
            .iter()
            .filter_map(|p| match p {
                Value::String(s) => Some(s.clone()),
                _ => p.get("text").and_then(Value::as_str).map(str::to_owned),
            })
            .collect::<Vec<_>>()
            .join("\n"),
        _ => String::new(),
    }
}

fn names(tools: Option<&Value>, f: impl Fn(&Value) -> Vec<String>) -> Vec<String> {
    tools
        .and_then(Value::as_array)
        .map(|a| a.iter().flat_map(f).collect())
        .unwrap_or_default()
}

// ---------------------------------------------------------------------------------------------
// Streaming plumbing

/// A streamed body: `head` is sent at once; for slow answers the stream is then held open for
/// [`SLOW_HOLD`] (sending `keepalive` every 2 s while the client stays connected) before `tail`.
fn stream_response(
    content_type: &'static str,
    head: Vec<String>,
    tail: Vec<String>,
    slow: Option<String>,
) -> Response {
    let (tx, rx) = mpsc::channel::<Bytes>(16);
    tokio::spawn(async move {
        for chunk in head {
            if tx.send(Bytes::from(chunk)).await.is_err() {
                return;
            }
        }
        if let Some(keepalive) = slow {
            let deadline = tokio::time::Instant::now() + SLOW_HOLD;
            while tokio::time::Instant::now() < deadline {
                tokio::time::sleep(Duration::from_secs(2)).await;
                if tx.send(Bytes::from(keepalive.clone())).await.is_err() {
                    return; // client went away
                }
            }
        }
        for chunk in tail {
            if tx.send(Bytes::from(chunk)).await.is_err() {
                return;
            }
        }
    });
    let stream = futures_util::stream::unfold(rx, |mut rx| async move {
        rx.recv().await.map(|b| (Ok::<_, Infallible>(b), rx))
    });
    Response::builder()
        .status(StatusCode::OK)
        .header(header::CONTENT_TYPE, content_type)
        .header(header::CACHE_CONTROL, "no-cache")
        .body(Body::from_stream(stream))
        .unwrap()
}

fn sse_event(name: &str, data: &Value) -> String {
    format!("event: {name}\ndata: {data}\n\n")
}

fn sse_data(data: &Value) -> String {
    format!("data: {data}\n\n")
}

const SSE: &str = "text/event-stream";

fn now_secs() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0)
}

fn json_response(v: Value) -> Response {
    axum::Json(v).into_response()
}

// ---------------------------------------------------------------------------------------------
// Anthropic Messages

fn anthropic(shared: &Shared, body: &Value) -> Response {
    let messages = body
        .get("messages")
        .and_then(Value::as_array)
        .cloned()
        .unwrap_or_default();
    // Claude Code puts `role: "system"` messages into `messages`: look at the last user turn.
    let last_user = messages
        .iter()
        .rev()
        .find(|m| m.get("role").and_then(Value::as_str) == Some("user"));
    let last_is_tool_result = last_user
        .and_then(|m| m.get("content"))
        .and_then(Value::as_array)
        .is_some_and(|c| {
            c.iter()
                .any(|b| b.get("type").and_then(Value::as_str) == Some("tool_result"))
        });
    let latest_user_text = last_user
        .and_then(|m| m.get("content"))
        .map(text_of)
        .unwrap_or_default();
    let conv = Conversation {
        tool_names: names(body.get("tools"), |t| {
            t.get("name")
                .and_then(Value::as_str)
                .map(|s| vec![s.to_owned()])
                .unwrap_or_default()
        }),
        last_is_tool_result,
        latest_user_text,
        classifier: false,
        mcp_script: anthropic_mcp_script(&messages),
    };
    let (answer, slow) = decide(&shared.script, &conv);
    let n = shared.next_id();
    let model = body
        .get("model")
        .and_then(Value::as_str)
        .unwrap_or("mock-model")
        .to_owned();
    let msg_id = format!("msg_mock_{n:08}");
    let (block, stop_reason) = match &answer {
        Answer::Tool { name, args } => (
            json!({"type": "tool_use", "id": format!("toolu_mock_{n:08}"), "name": name, "input": args}),
            "tool_use",
        ),
        Answer::Text(t) => (json!({"type": "text", "text": t}), "end_turn"),
    };
    let usage = json!({
        "input_tokens": USAGE_INPUT_TOKENS,
        "output_tokens": USAGE_OUTPUT_TOKENS,
        "cache_creation_input_tokens": 0,
        "cache_read_input_tokens": 0
    });

    if body.get("stream").and_then(Value::as_bool) != Some(true) {
        return json_response(json!({
            "id": msg_id, "type": "message", "role": "assistant", "model": model,
            "content": [block], "stop_reason": stop_reason, "stop_sequence": null, "usage": usage
        }));
    }

    let mut head = vec![sse_event(
        "message_start",
        &json!({"type": "message_start", "message": {
            "id": msg_id, "type": "message", "role": "assistant", "model": model, "content": [],
            "stop_reason": null, "stop_sequence": null,
            "usage": {"input_tokens": USAGE_INPUT_TOKENS, "output_tokens": 1,
                      "cache_creation_input_tokens": 0, "cache_read_input_tokens": 0}
        }}),
    )];
    let (start_block, delta) = match &answer {
        Answer::Tool { .. } => {
            let mut start = block.clone();
            start["input"] = json!({});
            (
                start,
                json!({"type": "input_json_delta", "partial_json": block["input"].to_string()}),
            )
        }
        Answer::Text(t) => (
            json!({"type": "text", "text": ""}),
            json!({"type": "text_delta", "text": t}),
        ),
    };
    let block_start = sse_event(
        "content_block_start",
        &json!({"type": "content_block_start", "index": 0, "content_block": start_block}),
    );
    let mut tail = vec![
        sse_event(
            "content_block_delta",
            &json!({"type": "content_block_delta", "index": 0, "delta": delta}),
        ),
        sse_event(
            "content_block_stop",
            &json!({"type": "content_block_stop", "index": 0}),
        ),
        sse_event(
            "message_delta",
            &json!({"type": "message_delta",
                    "delta": {"stop_reason": stop_reason, "stop_sequence": null},
                    "usage": usage}),
        ),
        sse_event("message_stop", &json!({"type": "message_stop"})),
    ];
    if slow {
        head.push(block_start);
    } else {
        tail.insert(0, block_start);
    }
    let keepalive = slow.then(|| sse_event("ping", &json!({"type": "ping"})));
    stream_response(SSE, head, tail, keepalive)
}

// ---------------------------------------------------------------------------------------------
// OpenAI Responses

fn responses(shared: &Shared, body: &Value) -> Response {
    let mut input = match body.get("input") {
        Some(Value::Array(items)) => items.clone(),
        Some(Value::String(s)) => vec![json!({"type": "message", "role": "user", "content": s})],
        _ => Vec::new(),
    };
    // A note berth steered into a running turn (a denial's reason) is not a new prompt: the
    // model answers what came before it, as a real one would.
    input.retain(|it| !is_berth_note(it));
    let last_is_tool_result = input.last().is_some_and(|it| {
        it.get("type")
            .and_then(Value::as_str)
            .is_some_and(|t| t.ends_with("_call_output"))
    });
    let latest_user_text = input
        .iter()
        .rev()
        .find(|m| m.get("role").and_then(Value::as_str) == Some("user"))
        .and_then(|m| m.get("content"))
        .map(text_of)
        .unwrap_or_default();
    let conv = Conversation {
        tool_names: names(body.get("tools"), |t| {
            // Function tools carry `name`; namespaced tools nest theirs.
            let mut v: Vec<String> = t
                .get("name")
                .and_then(Value::as_str)
                .map(|s| vec![s.to_owned()])
                .unwrap_or_default();
            if let Some(inner) = t.get("tools").and_then(Value::as_array) {
                v.extend(
                    inner
                        .iter()
                        .filter_map(|i| i.get("name").and_then(Value::as_str).map(str::to_owned)),
                );
            }
            v
        }),
        last_is_tool_result,
        latest_user_text,
        classifier: false,
        mcp_script: None,
    };
    let (answer, slow) = decide(&shared.script, &conv);
    let n = shared.next_id();
    let model = body
        .get("model")
        .and_then(Value::as_str)
        .unwrap_or("mock-model")
        .to_owned();
    let resp_id = format!("resp_mock_{n:08}");
    let created = now_secs();
    let usage = json!({
        "input_tokens": USAGE_INPUT_TOKENS,
        "input_tokens_details": {"cached_tokens": 0},
        "output_tokens": USAGE_OUTPUT_TOKENS,
        "output_tokens_details": {"reasoning_tokens": 0},
        "total_tokens": USAGE_INPUT_TOKENS + USAGE_OUTPUT_TOKENS
    });
    let response_obj = |status: &str, output: Value, usage: Value| {
        json!({"id": resp_id, "object": "response", "created_at": created, "status": status,
               "model": model, "output": output, "usage": usage})
    };

    let mut events: Vec<(String, Value)> = Vec::new();
    let mut push = |name: &str, mut v: Value| {
        v["type"] = json!(name);
        events.push((name.to_owned(), v));
    };
    let mcp_item = responses_mcp_item(body, &input, &conv, n);
    let final_item = match &answer {
        // MCP marker (Codex): a namespaced call or a tool search, see `responses_mcp_item`.
        _ if mcp_item.is_some() => {
            let item = mcp_item.unwrap_or_default();
            push(
                "response.output_item.added",
                json!({"output_index": 0, "item": item}),
            );
            item
        }
        Answer::Tool { name, args } => {
            let item_id = format!("fc_mock_{n:08}");
            let call_id = format!("call_mock_{n:08}");
            let arguments = args.to_string();
            push(
                "response.output_item.added",
                json!({"output_index": 0, "item": {"type": "function_call", "id": item_id,
                    "call_id": call_id, "name": name, "arguments": "", "status": "in_progress"}}),
            );
            push(
                "response.function_call_arguments.delta",
                json!({"item_id": item_id, "output_index": 0, "delta": arguments}),
            );
            push(
                "response.function_call_arguments.done",
                json!({"item_id": item_id, "output_index": 0, "arguments": arguments}),
            );
            json!({"type": "function_call", "id": item_id, "call_id": call_id,
                "name": name, "arguments": arguments, "status": "completed"})
        }
        Answer::Text(t) => {
            let item_id = format!("msg_mock_{n:08}");
            push(
                "response.output_item.added",
                json!({"output_index": 0, "item": {"type": "message", "id": item_id,
                    "role": "assistant", "status": "in_progress", "content": []}}),
            );
            push(
                "response.content_part.added",
                json!({"item_id": item_id, "output_index": 0, "content_index": 0,
                    "part": {"type": "output_text", "text": "", "annotations": []}}),
            );
            push(
                "response.output_text.delta",
                json!({"item_id": item_id, "output_index": 0, "content_index": 0, "delta": t}),
            );
            push(
                "response.output_text.done",
                json!({"item_id": item_id, "output_index": 0, "content_index": 0, "text": t}),
            );
            let part = json!({"type": "output_text", "text": t, "annotations": []});
            push(
                "response.content_part.done",
                json!({"item_id": item_id, "output_index": 0, "content_index": 0, "part": part}),
            );
            json!({"type": "message", "id": item_id, "role": "assistant",
                "status": "completed", "content": [part]})
        }
    };
    push(
        "response.output_item.done",
        json!({"output_index": 0, "item": final_item}),
    );
    push(
        "response.completed",
        json!({"response": response_obj("completed", json!([final_item]), usage.clone())}),
    );

    if body.get("stream").and_then(Value::as_bool) == Some(false) {
        return json_response(response_obj("completed", json!([final_item]), usage));
    }

    let mut seq = 0u64;
    let mut frame = |name: &str, mut v: Value| {
        v["sequence_number"] = json!(seq);
        seq += 1;
        sse_event(name, &v)
    };
    let head = vec![
        frame(
            "response.created",
            json!({"type": "response.created",
                   "response": response_obj("in_progress", json!([]), Value::Null)}),
        ),
        frame(
            "response.in_progress",
            json!({"type": "response.in_progress",
                   "response": response_obj("in_progress", json!([]), Value::Null)}),
        ),
    ];
    let tail = events.into_iter().map(|(n, v)| frame(&n, v)).collect();
    stream_response(SSE, head, tail, slow.then(|| ": keep-alive\n\n".to_owned()))
}

// ---------------------------------------------------------------------------------------------
// OpenAI Chat Completions

fn chat(shared: &Shared, body: &Value) -> Response {
    let messages = body
        .get("messages")
        .and_then(Value::as_array)
        .cloned()
        .unwrap_or_default();
    let last_is_tool_result = messages
        .last()
        .is_some_and(|m| m.get("role").and_then(Value::as_str) == Some("tool"));
    let latest_user_text = messages
        .iter()
        .rev()
        .find(|m| m.get("role").and_then(Value::as_str) == Some("user"))
        .and_then(|m| m.get("content"))
        .map(text_of)
        .unwrap_or_default();
    let conv = Conversation {
        tool_names: names(body.get("tools"), |t| {
            t.pointer("/function/name")
                .or_else(|| t.get("name"))
                .and_then(Value::as_str)
                .map(|s| vec![s.to_owned()])
                .unwrap_or_default()
        }),
        last_is_tool_result,
        latest_user_text,
        classifier: false,
        mcp_script: None,
    };
    let (answer, slow) = decide(&shared.script, &conv);
    let n = shared.next_id();
    let model = body
        .get("model")
        .and_then(Value::as_str)
        .unwrap_or("mock-model")
        .to_owned();
    let id = format!("chatcmpl-mock{n:08}");
    let created = now_secs();
    let usage = json!({
        "prompt_tokens": USAGE_INPUT_TOKENS,
        "completion_tokens": USAGE_OUTPUT_TOKENS,
        "total_tokens": USAGE_INPUT_TOKENS + USAGE_OUTPUT_TOKENS
    });
    let call_id = format!("call_mock_{n:08}");
    let finish = match &answer {
        Answer::Tool { .. } => "tool_calls",
        Answer::Text(_) => "stop",
    };

    if body.get("stream").and_then(Value::as_bool) != Some(true) {
        let message = match &answer {
            Answer::Tool { name, args } => json!({"role": "assistant", "content": null,
                "tool_calls": [{"id": call_id, "type": "function",
                    "function": {"name": name, "arguments": args.to_string()}}]}),
            Answer::Text(t) => json!({"role": "assistant", "content": t}),
        };
        return json_response(json!({
            "id": id, "object": "chat.completion", "created": created, "model": model,
            "choices": [{"index": 0, "message": message, "finish_reason": finish}],
            "usage": usage
        }));
    }

    let chunk = |choices: Value| {
        sse_data(
            &json!({"id": id, "object": "chat.completion.chunk", "created": created,
            "model": model, "choices": choices}),
        )
    };
    let delta =
        |d: Value, finish: Value| json!([{"index": 0, "delta": d, "finish_reason": finish}]);
    let head = vec![chunk(delta(
        json!({"role": "assistant", "content": ""}),
        Value::Null,
    ))];
    let mut tail = match &answer {
        Answer::Tool { name, args } => vec![
            chunk(delta(
                json!({"tool_calls": [{"index": 0, "id": call_id, "type": "function",
                    "function": {"name": name, "arguments": ""}}]}),
                Value::Null,
            )),
            chunk(delta(
                json!({"tool_calls": [{"index": 0, "function": {"arguments": args.to_string()}}]}),
                Value::Null,
            )),
        ],
        Answer::Text(t) => vec![chunk(delta(json!({"content": t}), Value::Null))],
    };
    tail.push(chunk(delta(json!({}), json!(finish))));
    if body.pointer("/stream_options/include_usage") == Some(&json!(true)) {
        tail.push(sse_data(
            &json!({"id": id, "object": "chat.completion.chunk",
            "created": created, "model": model, "choices": [], "usage": usage}),
        ));
    }
    tail.push("data: [DONE]\n\n".to_owned());
    stream_response(SSE, head, tail, slow.then(|| ": keep-alive\n\n".to_owned()))
}

fn models_list(shared: &Shared) -> Response {
    let mut ids = vec!["mock-model".to_owned()];
    for r in shared.requests.lock().unwrap().iter() {
        if let Some(m) = r.body.get("model").and_then(Value::as_str) {
            if !ids.iter().any(|i| i == m) {
                ids.push(m.to_owned());
            }
        }
    }
    let data: Vec<Value> = ids
        .into_iter()
        .map(|id| json!({"id": id, "object": "model", "created": 0, "owned_by": "mock"}))
        .collect();
    json_response(json!({"object": "list", "data": data}))
}

// ---------------------------------------------------------------------------------------------
// Gemini generateContent

fn gemini(shared: &Shared, body: &Value, model: &str, stream: bool) -> Response {
    let contents = body
        .get("contents")
        .and_then(Value::as_array)
        .cloned()
        .unwrap_or_default();
    let last_is_tool_result = contents
        .last()
        .and_then(|c| c.get("parts"))
        .and_then(Value::as_array)
        .is_some_and(|parts| parts.iter().any(|p| p.get("functionResponse").is_some()));
    let latest_user_text = contents
        .iter()
        .rev()
        .find(|c| c.get("role").and_then(Value::as_str) != Some("model"))
        .and_then(|c| c.get("parts"))
        .map(text_of)
        .unwrap_or_default();
    let classifier = body
        .get("generationConfig")
        .is_some_and(|g| g.to_string().contains("complexity_score"));
    let conv = Conversation {
        tool_names: names(body.get("tools"), |t| {
            t.get("functionDeclarations")
                .and_then(Value::as_array)
                .map(|d| {
                    d.iter()
                        .filter_map(|f| f.get("name").and_then(Value::as_str).map(str::to_owned))
                        .collect()
                })
                .unwrap_or_default()
        }),
        last_is_tool_result,
        latest_user_text,
        classifier,
        mcp_script: None,
    };
    let (answer, slow) = decide(&shared.script, &conv);
    let part = match &answer {
        Answer::Tool { name, args } => json!({"functionCall": {"name": name, "args": args}}),
        Answer::Text(t) => json!({"text": t}),
    };
    let usage = json!({
        "promptTokenCount": USAGE_INPUT_TOKENS,
        "candidatesTokenCount": USAGE_OUTPUT_TOKENS,
        "totalTokenCount": USAGE_INPUT_TOKENS + USAGE_OUTPUT_TOKENS
    });
    let full = json!({
        "candidates": [{"content": {"role": "model", "parts": [part]}, "finishReason": "STOP", "index": 0}],
        "usageMetadata": usage,
        "modelVersion": model
    });
    if !stream {
        return json_response(full);
    }
    let head = if slow {
        vec![sse_data(&json!({
            "candidates": [{"content": {"role": "model", "parts": [{"text": ""}]}, "index": 0}],
            "modelVersion": model
        }))]
    } else {
        Vec::new()
    };
    stream_response(
        SSE,
        head,
        vec![sse_data(&full)],
        slow.then(|| ": keep-alive\n\n".to_owned()),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    async fn post(url: &str, body: Value) -> (u16, String) {
        let r = reqwest::Client::new()
            .post(url)
            .json(&body)
            .send()
            .await
            .unwrap();
        (r.status().as_u16(), r.text().await.unwrap())
    }

    #[tokio::test]
    async fn anthropic_tool_then_text() {
        let m = MockLlm::start().await;
        let (s, t) = post(
            &format!("{}/v1/messages?beta=true", m.url()),
            json!({"model": "x", "stream": true, "tools": [{"name": "Read"}, {"name": "Bash"}],
                   "messages": [{"role": "user", "content": "hello"}]}),
        )
        .await;
        assert_eq!(s, 200);
        assert!(t.starts_with("event: message_start\ndata: "), "{t}");
        assert!(t.contains(r#""name":"Bash""#), "{t}");
        assert!(t.contains("echo hi > hello.txt"), "{t}");
        assert!(t.contains(r#""stop_reason":"tool_use""#), "{t}");
        assert!(t.ends_with("event: message_stop\ndata: {\"type\":\"message_stop\"}\n\n"));
        let (_, t) = post(
            &format!("{}/v1/messages", m.url()),
            json!({"model": "x", "tools": [{"name": "Bash"}],
                   "messages": [{"role": "user", "content": "hello"},
                                {"role": "assistant", "content": [{"type": "tool_use", "id": "a", "name": "Bash", "input": {}}]},
                                {"role": "user", "content": [{"type": "tool_result", "tool_use_id": "a", "content": "ok"}]},
                                {"role": "system", "content": "reminder"}]}),
        )
        .await;
        let v: Value = serde_json::from_str(&t).unwrap();
        assert_eq!(v["content"][0]["text"], "DONE");
        assert_eq!(v["usage"]["output_tokens"], 10);
        let reqs = m.requests_for(WireFormat::AnthropicMessages);
        assert_eq!(reqs.len(), 2);
        assert_eq!(reqs[0].path, "/v1/messages?beta=true");
    }

    #[tokio::test]
    async fn an_mcp_script_calls_its_tools_in_order_then_ends() {
        let m = MockLlm::start().await;
        let tools = json!([{"name": "Bash"}, {"name": "mcp__berth__create_workspace"},
                           {"name": "mcp__berth__run_task"}]);
        let prompt = format!(
            "Set it up. {MCP_SCRIPT_MARKER}[{{\"tool\":\"create_workspace\",\"args\":{{\"name\":\"w\"}}}},\
             {{\"tool\":\"run_task\",\"args\":{{\"workspace\":\"w\"}}}}] thanks"
        );
        let user = json!({"role": "user", "content": [{"type": "text", "text": prompt}]});
        let call = |id: &str, name: &str| json!({"role": "assistant", "content": [{"type": "tool_use", "id": id, "name": name, "input": {}}]});
        let result = |id: &str| json!({"role": "user", "content": [{"type": "tool_result", "tool_use_id": id, "content": "ok"}]});
        let ask = |messages: Value| {
            let url = format!("{}/v1/messages", m.url());
            let body = json!({"model": "x", "tools": tools, "messages": messages});
            async move {
                let (_, t) = post(&url, body).await;
                serde_json::from_str::<Value>(&t).unwrap()["content"][0].clone()
            }
        };
        let first = ask(json!([user])).await;
        assert_eq!(first["name"], "mcp__berth__create_workspace", "{first}");
        assert_eq!(first["input"], json!({"name": "w"}));
        let second = ask(
            json!([user, call("a", "mcp__berth__create_workspace"), result("a"),
                                {"role": "system", "content": "reminder"}]),
        )
        .await;
        assert_eq!(second["name"], "mcp__berth__run_task", "{second}");
        assert_eq!(second["input"], json!({"workspace": "w"}));
        let last = ask(json!([
            user,
            call("a", "x"),
            result("a"),
            call("b", "y"),
            result("b")
        ]))
        .await;
        assert_eq!(last["text"], "DONE", "{last}");
        // Without the tools offered, the model says so.
        let url = format!("{}/v1/messages", m.url());
        let (_, t) = post(
            &url,
            json!({"model": "x", "tools": [{"name": "Bash"}], "messages": [user]}),
        )
        .await;
        assert!(t.contains(MCP_MISSING), "{t}");
    }

    #[tokio::test]
    async fn gemini_routes_and_classifier() {
        let m = MockLlm::start().await;
        let (s, t) = post(
            &format!(
                "{}/v1beta/models/gemini-2.5-pro:streamGenerateContent?alt=sse",
                m.url()
            ),
            json!({"contents": [{"role": "user", "parts": [{"text": "hi"}]}],
                   "tools": [{"functionDeclarations": [{"name": "run_shell_command"}]}]}),
        )
        .await;
        assert_eq!(s, 200);
        assert!(t.starts_with("data: {"), "{t}");
        assert!(t.contains("functionCall"), "{t}");
        let (_, t) = post(
            &format!("{}/v1beta/models/flash-lite:generateContent", m.url()),
            json!({"contents": [{"role": "user", "parts": [{"text": "hi"}]}],
                   "generationConfig": {"responseJsonSchema": {"properties": {"complexity_score": {}}}}}),
        )
        .await;
        let v: Value = serde_json::from_str(&t).unwrap();
        let text = v["candidates"][0]["content"]["parts"][0]["text"]
            .as_str()
            .unwrap();
        assert_eq!(
            serde_json::from_str::<Value>(text).unwrap()["complexity_score"],
            1
        );
        let (s, _) = post(&format!("{}/nope", m.url()), json!({})).await;
        assert_eq!(s, 404);
        assert_eq!(m.requests_for(WireFormat::Gemini).len(), 2);
        assert_eq!(m.requests_for(WireFormat::Other).len(), 1);
    }

    #[tokio::test]
    async fn chat_and_responses_streams() {
        let m = MockLlm::start().await;
        let (_, t) = post(
            &format!("{}/v1/chat/completions", m.url()),
            json!({"model": "mock-model", "stream": true, "stream_options": {"include_usage": true},
                   "tools": [{"type": "function", "function": {"name": "bash"}}],
                   "messages": [{"role": "user", "content": "go"}]}),
        )
        .await;
        assert!(t.contains(r#""finish_reason":"tool_calls""#), "{t}");
        assert!(t.contains(r#""prompt_tokens":20"#), "{t}");
        assert!(t.ends_with("data: [DONE]\n\n"));
        let (_, t) = post(
            &format!("{}/v1/responses", m.url()),
            json!({"model": "gpt-5.5", "stream": true,
                   "tools": [{"type": "function", "name": "exec_command"}],
                   "input": [{"type": "message", "role": "user", "content": [{"type": "input_text", "text": "go"}]},
                             {"type": "function_call", "call_id": "c", "name": "exec_command", "arguments": "{}"},
                             {"type": "function_call_output", "call_id": "c", "output": "ok"}]}),
        )
        .await;
        assert!(t.contains("event: response.output_text.delta\n"), "{t}");
        assert!(t.contains("event: response.completed\n"), "{t}");
        assert!(t.contains(r#""delta":"DONE""#), "{t}");
        let models: Value = reqwest::get(format!("{}/v1/models", m.url()))
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        let ids: Vec<&str> = models["data"]
            .as_array()
            .unwrap()
            .iter()
            .map(|d| d["id"].as_str().unwrap())
            .collect();
        assert!(ids.contains(&"gpt-5.5") && ids.contains(&"mock-model"));
    }

    #[tokio::test]
    async fn slow_marker_holds_the_stream() {
        let m = MockLlm::start().await;
        let resp = reqwest::Client::new()
            .post(format!("{}/v1/chat/completions", m.url()))
            .json(&json!({"model": "m", "stream": true, "tools": [{"type": "function", "function": {"name": "bash"}}],
                          "messages": [{"role": "user", "content": "please be SLOW"}]}))
            .send()
            .await
            .unwrap();
        assert_eq!(resp.status(), 200);
        let mut resp = resp;
        let first = resp.chunk().await.unwrap().unwrap();
        assert!(String::from_utf8_lossy(&first).contains("\"role\":\"assistant\""));
        let more = tokio::time::timeout(Duration::from_secs(5), async {
            let mut all = String::new();
            while let Ok(Some(c)) = resp.chunk().await {
                all.push_str(&String::from_utf8_lossy(&c));
                if all.contains("[DONE]") {
                    break;
                }
            }
            all
        })
        .await;
        assert!(more.is_err(), "stream finished early: {more:?}");
    }
}
