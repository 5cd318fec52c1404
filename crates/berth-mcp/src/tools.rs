//! The tools: each one's description and input schema ([`list`]), and its call ([`call`]): the
//! arguments are checked against the schema ([`check_call`]), then turned into ordinary API
//! requests through [`Api`] with the caller's token, so the server's role checks apply.

use std::time::{Duration, Instant};

use berth_domain::TaskState;
use serde_json::{json, Value};

use crate::schema::{self as s, object};
use crate::{encode_segment, task_path, with_query, ws_path, Api, Method, Request};

/// Longest `wait` of `run_task`/`send_message`, in seconds.
pub const MAX_WAIT_SECONDS: i64 = 600;
/// `wait` without `timeout_seconds`.
const DEFAULT_WAIT_SECONDS: u64 = 120;
/// How often a waited task is polled.
const POLL: Duration = Duration::from_millis(500);
/// Most events one `task_events` call returns.
pub const MAX_EVENTS: i64 = 500;
/// Most egress log entries one `egress_log` call returns.
pub const MAX_EGRESS: i64 = 1000;
/// An access request's id.
const ACCESS_REQ_PATTERN: &str = "^ar_[0-9a-f]{32}$";
/// Longest diff text handed back (the rest is cut, and `truncated` says so).
const MAX_DIFF_CHARS: usize = 200_000;

/// One tool: name, what it does, its input schema.
pub struct Tool {
    pub name: &'static str,
    pub description: &'static str,
    pub schema: Value,
}

/// Every tool, in the order `tools/list` gives them.
pub fn list() -> Vec<Tool> {
    let mut tools = workspace_tools();
    tools.extend(task_tools());
    tools.extend(other_tools());
    tools
}

fn tool(name: &'static str, description: &'static str, schema: Value) -> Tool {
    Tool {
        name,
        description,
        schema,
    }
}

fn workspace_tools() -> Vec<Tool> {
    let ws = || ("workspace", s::workspace());
    vec![
        tool(
            "list_workspaces",
            "List the workspaces this token can see, with state, tenant and limits.",
            object(
                &[(
                    "tenant",
                    s::pattern("Only this tenant's", s::NAME_PATTERN, 40),
                )],
                &[],
            ),
        ),
        tool(
            "create_workspace",
            "Create and start a workspace (an isolated container with its own home volume), \
             optionally provisioned from one of the tenant's templates.",
            object(
                &[
                    (
                        "name",
                        s::pattern("Workspace name, unique in its tenant", s::NAME_PATTERN, 40),
                    ),
                    (
                        "tenant",
                        s::pattern(
                            "Tenant (client) it belongs to [default: default]",
                            s::NAME_PATTERN,
                            40,
                        ),
                    ),
                    (
                        "template",
                        s::pattern(
                            "A workspace template of the tenant to provision from",
                            s::NAME_PATTERN,
                            40,
                        ),
                    ),
                    (
                        "params",
                        json!({"type": "object", "description": "The template's parameters, name → value", "additionalProperties": {"type": "string"}}),
                    ),
                    (
                        "memory",
                        s::pattern("Memory cap, e.g. 512m or 2g", s::MEMORY_PATTERN, 8),
                    ),
                    (
                        "cpus",
                        s::pattern(
                            "CPU cap as a decimal string, e.g. 1 or 0.5",
                            s::CPUS_PATTERN,
                            8,
                        ),
                    ),
                    (
                        "approval",
                        s::one_of(
                            "Default approval policy of its tasks",
                            &["never", "on-request", "always"],
                        ),
                    ),
                ],
                &["name"],
            ),
        ),
        tool(
            "start_workspace",
            "Start a stopped workspace.",
            object(&[ws()], &["workspace"]),
        ),
        tool(
            "stop_workspace",
            "Stop a workspace; its home volume stays.",
            object(&[ws()], &["workspace"]),
        ),
        tool(
            "remove_workspace",
            "Remove a workspace (destructive: its container goes, and with volume=true its home \
             volume too). Requires confirm=true.",
            object(
                &[
                    ws(),
                    (
                        "confirm",
                        s::boolean("Must be true: you mean to remove this workspace"),
                    ),
                    (
                        "volume",
                        s::boolean("Also delete its home volume (all its files)"),
                    ),
                ],
                &["workspace", "confirm"],
            ),
        ),
    ]
}

fn task_tools() -> Vec<Tool> {
    let task = || ("task", s::task());
    let wait = || {
        (
            "wait",
            s::boolean("Wait until the turn is over or the task waits for an approval"),
        )
    };
    let timeout = || {
        (
            "timeout_seconds",
            s::integer("Longest wait [default 120]", 1, MAX_WAIT_SECONDS),
        )
    };
    vec![
        tool(
            "run_task",
            "Start a coding agent on a prompt in a running workspace. Returns the task id and \
             state; with wait=true, waits (bounded) and returns the final message too.",
            object(
                &[
                    ("workspace", s::workspace()),
                    ("agent", s::one_of("The coding agent", &s::AGENTS)),
                    (
                        "prompt",
                        s::pattern("The first message to the agent", "\\S", 100_000),
                    ),
                    ("model", s::string("Model [default: the agent's]")),
                    (
                        "approval",
                        s::one_of(
                            "When the agent must ask before acting",
                            &["never", "on-request", "always"],
                        ),
                    ),
                    wait(),
                    timeout(),
                ],
                &["workspace", "agent", "prompt"],
            ),
        ),
        tool(
            "task_status",
            "A task's state, usage and newest message.",
            object(&[task()], &["task"]),
        ),
        tool(
            "task_events",
            "A page of a task's events (messages, tool calls, results), oldest first.",
            object(
                &[
                    task(),
                    (
                        "after",
                        s::integer("Only events after this sequence number", 0, i64::MAX),
                    ),
                    (
                        "limit",
                        s::integer("Most events to return [default 100]", 1, MAX_EVENTS),
                    ),
                ],
                &["task"],
            ),
        ),
        tool(
            "send_message",
            "Send a follow-up message to a task (the next turn of its conversation).",
            object(
                &[
                    task(),
                    ("text", s::pattern("The message", "\\S", 100_000)),
                    wait(),
                    timeout(),
                ],
                &["task", "text"],
            ),
        ),
        tool(
            "task_diff",
            "What a task changed in its directory, as a unified diff (or a per-file summary).",
            object(
                &[
                    task(),
                    ("stat", s::boolean("Per-file summary instead of the diff")),
                    (
                        "turn",
                        s::integer("Only this turn's changes (1 = the first)", 1, 100_000),
                    ),
                ],
                &["task"],
            ),
        ),
        tool(
            "cancel_task",
            "Cancel a task: stops its agent (final).",
            object(&[task()], &["task"]),
        ),
    ]
}

fn other_tools() -> Vec<Tool> {
    vec![
        tool(
            "list_inbox",
            "Everything waiting for a decision across the token's workspaces: agents' permission \
             requests and access requests.",
            object(&[], &[]),
        ),
        tool(
            "decide_approval",
            "Approve or deny an agent's pending permission request; a denial's reason is told to \
             the agent.",
            object(
                &[
                    ("task", s::task()),
                    ("request", s::pattern("The request id (from list_inbox)", s::REQ_PATTERN, 128)),
                    ("decision", s::one_of("approve or deny", &["approve", "deny"])),
                    ("reason", json!({"type": "string", "description": "Why; recorded, and told to the agent on a denial", "maxLength": 1024})),
                    ("always_for_task", s::boolean("With approve: also approve later requests of the same tool in this task")),
                ],
                &["task", "request", "decision"],
            ),
        ),
        tool(
            "decide_access_request",
            "Approve or deny a workspace's open access request (egress it was denied or asked for, \
             a secret it asked for). An egress approval is `once` (a rule that expires), `always` \
             (a rule of the workspace) or `template` (into one of the tenant's egress templates); \
             a secret approval binds the secret to the host. Owners only.",
            object(
                &[
                    ("workspace", s::workspace()),
                    ("request", s::pattern("The access request's id (ar_…, from list_inbox)", ACCESS_REQ_PATTERN, 35)),
                    ("decision", s::one_of("approve or deny", &["approve", "deny"])),
                    ("scope", s::one_of("With approve of an egress request [default once]", &["once", "always", "template"])),
                    ("ttl_seconds", s::integer("With scope once: how long the rule lasts [default 3600]", 1, 2_592_000)),
                    ("template", s::pattern("With scope template: the tenant's egress template", s::NAME_PATTERN, 40)),
                    ("reason", json!({"type": "string", "description": "Why; recorded with the decision", "maxLength": 1024})),
                ],
                &["workspace", "request", "decision"],
            ),
        ),
        tool(
            "usage",
            "LLM usage through berth's gateway: calls, tokens and cost, grouped.",
            object(
                &[
                    ("since", s::pattern("From: a date, an RFC 3339 time, or an age such as 24h or 7d", s::SINCE_PATTERN, 40)),
                    ("until", s::pattern("Until (same forms as since)", s::SINCE_PATTERN, 40)),
                    ("by", s::one_of("Group by", &["task", "workspace", "tenant", "model", "day", "session"])),
                    ("tenant", s::pattern("Only this tenant", s::NAME_PATTERN, 40)),
                    ("workspace", s::workspace()),
                ],
                &[],
            ),
        ),
        tool(
            "egress_log",
            "A workspace's egress log: every outbound connection attempt, allowed or denied, \
             oldest first.",
            object(
                &[
                    ("workspace", s::workspace()),
                    ("after", s::integer("Only entries after this id", 0, i64::MAX)),
                    ("limit", s::integer("Most entries [default 100]", 1, MAX_EGRESS)),
                ],
                &["workspace"],
            ),
        ),
    ]
}

/// Why a tool call failed: the API's error, or a check made before any request.
#[derive(Debug, Clone, PartialEq)]
pub struct ToolError {
    pub code: String,
    pub message: String,
    /// The HTTP status the server answered (absent: no answer, or no request made).
    pub status: Option<u16>,
}

impl ToolError {
    pub fn new(code: &str, message: impl Into<String>) -> Self {
        Self {
            code: code.into(),
            message: message.into(),
            status: None,
        }
    }

    /// The API's refusal: its stable code (`http_error` when it gave none), message and status.
    pub fn api(status: u16, code: &str, message: impl Into<String>) -> Self {
        Self {
            code: if code.is_empty() {
                "http_error".into()
            } else {
                code.into()
            },
            message: message.into(),
            status: (status != 0).then_some(status),
        }
    }

    pub fn to_json(&self) -> Value {
        let mut e = json!({"code": self.code, "message": self.message});
        if let Some(st) = self.status {
            e["status"] = json!(st);
        }
        json!({ "error": e })
    }
}

type ToolResult = Result<Value, ToolError>;

/// Checks a call's arguments and checks the rules the schema cannot say (`confirm`).
pub fn check_call(name: &str, args: &Value) -> Result<(), ToolError> {
    let tool = list()
        .into_iter()
        .find(|t| t.name == name)
        .ok_or_else(|| ToolError::new("unknown_tool", format!("no tool named {name:?}")))?;
    s::check(&tool.schema, args).map_err(|m| ToolError::new("invalid_arguments", m))?;
    if name == "remove_workspace" && args["confirm"] != json!(true) {
        return Err(ToolError::new(
            "confirm_required",
            "remove_workspace is destructive: call it again with confirm=true once the user has \
             agreed to remove this workspace",
        ));
    }
    Ok(())
}

async fn get(api: &dyn Api, path: String) -> ToolResult {
    api.send(Request {
        method: Method::Get,
        path,
        body: None,
    })
    .await
}

async fn post(api: &dyn Api, path: String, body: Option<Value>) -> ToolResult {
    api.send(Request {
        method: Method::Post,
        path,
        body,
    })
    .await
}

/// The string argument `k` (checked by the schema before the call; empty when absent).
fn arg<'a>(a: &'a Value, k: &str) -> &'a str {
    a[k].as_str().unwrap_or_default()
}

/// The arguments among `keys` that are given, as a query.
fn query_of<'a>(a: &Value, keys: &[&'a str]) -> Vec<(&'a str, String)> {
    keys.iter()
        .filter_map(|k| {
            let v = &a[*k];
            match v {
                Value::String(s) => Some((*k, s.clone())),
                Value::Number(n) => Some((*k, n.to_string())),
                Value::Bool(b) => Some((*k, b.to_string())),
                _ => None,
            }
        })
        .collect()
}

/// Runs one tool call (arguments already checked by [`check_call`]).
pub async fn call(api: &dyn Api, name: &str, a: &Value) -> ToolResult {
    let ws = || ws_path(arg(a, "workspace"));
    let task = || task_path(arg(a, "task"));
    match name {
        "list_workspaces" => get(api, with_query("/workspaces", &query_of(a, &["tenant"]))).await,
        "create_workspace" => post(api, "/workspaces".into(), Some(create_body(a))).await,
        "start_workspace" => post(api, format!("{}/start", ws()), None).await,
        "stop_workspace" => post(api, format!("{}/stop", ws()), None).await,
        "remove_workspace" => {
            let volume = a["volume"].as_bool().unwrap_or(false);
            let path = with_query(&ws(), &[("volume", volume.to_string())]);
            api.send(Request {
                method: Method::Delete,
                path,
                body: None,
            })
            .await?;
            Ok(json!({"removed": arg(a, "workspace"), "volume_removed": volume}))
        }
        "run_task" => run_task(api, a).await,
        "task_status" => get(api, task()).await,
        "task_events" => {
            let limit = a["limit"].as_i64().unwrap_or(100).min(MAX_EVENTS);
            let after = a["after"].as_i64().unwrap_or(0);
            let q = [("after", after.to_string()), ("limit", limit.to_string())];
            get(api, with_query(&format!("{}/events", task()), &q)).await
        }
        "send_message" => {
            let body = json!({"text": arg(a, "text")});
            let t = post(api, format!("{}/messages", task()), Some(body)).await?;
            finish_task(api, t, a).await
        }
        "task_diff" => task_diff(api, &task(), a).await,
        "cancel_task" => post(api, format!("{}/cancel", task()), None).await,
        "list_inbox" => get(api, "/inbox".into()).await,
        "decide_approval" => decide(api, a).await,
        "decide_access_request" => {
            let path = format!(
                "{}/access-requests/{}",
                ws(),
                encode_segment(arg(a, "request"))
            );
            let body = only(
                a,
                &["decision", "scope", "ttl_seconds", "template", "reason"],
            );
            post(api, path, Some(body)).await
        }
        "usage" => {
            let q = query_of(a, &["since", "until", "by", "tenant", "workspace"]);
            get(api, with_query("/usage", &q)).await
        }
        "egress_log" => {
            let limit = a["limit"].as_i64().unwrap_or(100).min(MAX_EGRESS);
            let mut q = vec![("limit", limit.to_string())];
            if let Some(after) = a["after"].as_i64() {
                q.push(("after", after.to_string()));
            }
            get(api, with_query(&format!("{}/egress/log", ws()), &q)).await
        }
        other => Err(ToolError::new(
            "unknown_tool",
            format!("no tool named {other:?}"),
        )),
    }
}

/// The `POST /workspaces` body of a `create_workspace` call: only the arguments given.
pub fn create_body(a: &Value) -> Value {
    only(
        a,
        &[
            "name", "tenant", "template", "params", "memory", "cpus", "approval",
        ],
    )
}

/// An object of the arguments `keys` that were given (not null).
fn only(a: &Value, keys: &[&str]) -> Value {
    let mut body = json!({});
    for k in keys {
        if let Some(v) = a.get(*k).filter(|v| !v.is_null()) {
            body[*k] = v.clone();
        }
    }
    body
}

async fn run_task(api: &dyn Api, a: &Value) -> ToolResult {
    let body = only(a, &["workspace", "agent", "prompt", "model", "approval"]);
    let t = post(api, "/tasks".into(), Some(body)).await?;
    finish_task(api, t, a).await
}

/// With `wait`: polls the task until its turn is over, it waits for an approval, or the
/// timeout. Returns the task's summary (id, state, final message, whether the wait timed out).
async fn finish_task(api: &dyn Api, mut t: Value, a: &Value) -> ToolResult {
    let id = t["id"].as_str().unwrap_or_default().to_owned();
    let mut timed_out = false;
    if a["wait"].as_bool().unwrap_or(false) && !id.is_empty() {
        let secs = a["timeout_seconds"]
            .as_u64()
            .unwrap_or(DEFAULT_WAIT_SECONDS);
        let deadline = Instant::now() + Duration::from_secs(secs.min(MAX_WAIT_SECONDS as u64));
        loop {
            if turn_settled(&t) {
                break;
            }
            if Instant::now() >= deadline {
                timed_out = true;
                break;
            }
            tokio::time::sleep(POLL).await;
            t = get(api, task_path(&id)).await?;
        }
    }
    Ok(json!({
        "task": id,
        "workspace": t["workspace"],
        "agent": t["agent"],
        "state": t["state"],
        "last_message": t["last_message"],
        "reason": t["reason"],
        "usage": t["usage"],
        "timed_out": timed_out,
    }))
}

/// The task's turn is over, or it waits for a decision.
pub fn turn_settled(t: &Value) -> bool {
    let state = t["state"].as_str().and_then(TaskState::parse);
    state.is_some_and(|s| s.is_turn_over() || s == TaskState::Waiting)
}

async fn task_diff(api: &dyn Api, path: &str, a: &Value) -> ToolResult {
    let mut q: Vec<(&str, String)> = Vec::new();
    if a["stat"].as_bool() == Some(true) {
        q.push(("stat", "true".into()));
    }
    if let Some(turn) = a["turn"].as_i64() {
        q.push(("turn", turn.to_string()));
    }
    let mut v = get(api, with_query(&format!("{path}/diff"), &q)).await?;
    if let Some(d) = v["diff"].as_str().filter(|d| d.len() > MAX_DIFF_CHARS) {
        let cut: String = d.chars().take(MAX_DIFF_CHARS).collect();
        v["diff"] = json!(cut);
        v["truncated"] = json!(true);
    }
    Ok(v)
}

async fn decide(api: &dyn Api, a: &Value) -> ToolResult {
    let path = format!(
        "{}/approvals/{}",
        task_path(arg(a, "task")),
        encode_segment(arg(a, "request"))
    );
    let approve = a["decision"] == json!("approve");
    let mut body = json!({"decision": a["decision"]});
    if approve && a["always_for_task"].as_bool() == Some(true) {
        body["always_for_task"] = json!(true);
    }
    if let Some(r) = a["reason"].as_str() {
        body["reason"] = json!(r);
    }
    post(api, path, Some(body)).await
}
