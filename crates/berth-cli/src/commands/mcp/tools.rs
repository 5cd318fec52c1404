//! The tools `berth mcp` offers: each one's description and input schema ([`list`]), and its
//! call ([`call`]): the arguments are checked against the schema, then turned into ordinary
//! API requests with the token `berth mcp` was given, so the server's role checks apply.

use std::time::{Duration, Instant};

use berth_domain::TaskState;
use serde_json::{json, Value};

use super::schema::{self as s, object};
use crate::client::{task_path, ws_path, CliError, Client};

/// Longest `wait` of `run_task`/`send_message`, in seconds.
pub(crate) const MAX_WAIT_SECONDS: i64 = 600;
/// `wait` without `timeout_seconds`.
const DEFAULT_WAIT_SECONDS: u64 = 120;
/// How often a waited task is polled.
const POLL: Duration = Duration::from_millis(500);
/// Most events one `task_events` call returns.
pub(crate) const MAX_EVENTS: i64 = 500;
/// Most egress log entries one `egress_log` call returns.
pub(crate) const MAX_EGRESS: i64 = 1000;
/// Longest diff text handed back (the rest is cut, and `truncated` says so).
const MAX_DIFF_CHARS: usize = 200_000;

/// One tool: name, what it does, its input schema.
pub(crate) struct Tool {
    pub name: &'static str,
    pub description: &'static str,
    pub schema: Value,
}

/// Every tool, in the order `tools/list` gives them.
pub(crate) fn list() -> Vec<Tool> {
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
pub(crate) struct ToolError {
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

    pub fn to_json(&self) -> Value {
        let mut e = json!({"code": self.code, "message": self.message});
        if let Some(st) = self.status {
            e["status"] = json!(st);
        }
        json!({ "error": e })
    }
}

impl From<CliError> for ToolError {
    fn from(e: CliError) -> Self {
        match e {
            CliError::Api {
                status,
                code,
                message,
            } => Self {
                code: if code.is_empty() {
                    "http_error".into()
                } else {
                    code
                },
                message,
                status: (status != 0).then_some(status),
            },
            e @ CliError::Unreachable { .. } => Self::new("unreachable", e.to_string()),
            CliError::Other(m) => Self::new("client_error", m),
        }
    }
}

type ToolResult = Result<Value, ToolError>;

/// Checks a call's arguments and checks the rules the schema cannot say (`confirm`).
pub(crate) fn check_call(name: &str, args: &Value) -> Result<(), ToolError> {
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

/// Runs one tool call (arguments already checked by [`check_call`]).
pub(crate) async fn call(client: &Client, name: &str, a: &Value) -> ToolResult {
    let str_of = |k: &str| a[k].as_str().unwrap_or_default().to_owned();
    let ws = || ws_path(&str_of("workspace"));
    let task = || task_path(&str_of("task"));
    let v = match name {
        "list_workspaces" => list_workspaces(client, a["tenant"].as_str()).await?,
        "create_workspace" => client.post_value("/workspaces", &create_body(a)).await?,
        "start_workspace" => client.post_empty_value(&format!("{}/start", ws())).await?,
        "stop_workspace" => client.post_empty_value(&format!("{}/stop", ws())).await?,
        "remove_workspace" => {
            let volume = a["volume"].as_bool().unwrap_or(false);
            client.delete(&ws(), &[("volume", volume)]).await?;
            json!({"removed": str_of("workspace"), "volume_removed": volume})
        }
        "run_task" => run_task(client, a).await?,
        "task_status" => client.get_value(&task()).await?,
        "task_events" => {
            let limit = a["limit"].as_i64().unwrap_or(100).min(MAX_EVENTS);
            let after = a["after"].as_i64().unwrap_or(0);
            let q = [("after", after), ("limit", limit)];
            client
                .get_query_value(&format!("{}/events", task()), &q)
                .await?
        }
        "send_message" => {
            let body = json!({"text": str_of("text")});
            let t = client
                .post_value(&format!("{}/messages", task()), &body)
                .await?;
            finish_task(client, t, a).await?
        }
        "task_diff" => task_diff(client, &task(), a).await?,
        "cancel_task" => {
            client
                .post_empty_value(&format!("{}/cancel", task()))
                .await?
        }
        "list_inbox" => client.get_value("/inbox").await?,
        "decide_approval" => decide(client, a).await?,
        "usage" => {
            let q: Vec<(&str, String)> = ["since", "until", "by", "tenant", "workspace"]
                .into_iter()
                .filter_map(|k| a[k].as_str().map(|v| (k, v.to_owned())))
                .collect();
            client.get_query_value("/usage", &q).await?
        }
        "egress_log" => {
            let limit = a["limit"].as_i64().unwrap_or(100).min(MAX_EGRESS);
            let mut q = vec![("limit", limit)];
            if let Some(after) = a["after"].as_i64() {
                q.push(("after", after));
            }
            client
                .get_query_value(&format!("{}/egress/log", ws()), &q)
                .await?
        }
        other => {
            return Err(ToolError::new(
                "unknown_tool",
                format!("no tool named {other:?}"),
            ))
        }
    };
    Ok(v)
}

async fn list_workspaces(client: &Client, tenant: Option<&str>) -> ToolResult {
    let v = match tenant {
        Some(t) => {
            client
                .get_query_value("/workspaces", &[("tenant", t)])
                .await?
        }
        None => client.get_value("/workspaces").await?,
    };
    Ok(v)
}

/// The `POST /workspaces` body of a `create_workspace` call: only the arguments given.
pub(crate) fn create_body(a: &Value) -> Value {
    let mut body = json!({});
    for k in [
        "name", "tenant", "template", "params", "memory", "cpus", "approval",
    ] {
        if let Some(v) = a.get(k).filter(|v| !v.is_null()) {
            body[k] = v.clone();
        }
    }
    body
}

async fn run_task(client: &Client, a: &Value) -> ToolResult {
    let mut body = json!({});
    for k in ["workspace", "agent", "prompt", "model", "approval"] {
        if let Some(v) = a.get(k).filter(|v| !v.is_null()) {
            body[k] = v.clone();
        }
    }
    let t = client.post_value("/tasks", &body).await?;
    finish_task(client, t, a).await
}

/// With `wait`: polls the task until its turn is over, it waits for an approval, or the
/// timeout. Returns the task's summary (id, state, final message, whether the wait timed out).
async fn finish_task(client: &Client, mut t: Value, a: &Value) -> ToolResult {
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
            t = client.get_value(&task_path(&id)).await?;
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
pub(crate) fn turn_settled(t: &Value) -> bool {
    let state = t["state"].as_str().and_then(TaskState::parse);
    state.is_some_and(|s| s.is_turn_over() || s == TaskState::Waiting)
}

async fn task_diff(client: &Client, path: &str, a: &Value) -> ToolResult {
    let mut q: Vec<(&str, String)> = Vec::new();
    if a["stat"].as_bool() == Some(true) {
        q.push(("stat", "true".into()));
    }
    if let Some(turn) = a["turn"].as_i64() {
        q.push(("turn", turn.to_string()));
    }
    let mut v = client.get_query_value(&format!("{path}/diff"), &q).await?;
    if let Some(d) = v["diff"].as_str().filter(|d| d.len() > MAX_DIFF_CHARS) {
        let cut: String = d.chars().take(MAX_DIFF_CHARS).collect();
        v["diff"] = json!(cut);
        v["truncated"] = json!(true);
    }
    Ok(v)
}

async fn decide(client: &Client, a: &Value) -> ToolResult {
    let req = a["request"].as_str().unwrap_or_default();
    let path = format!(
        "{}/approvals/{}",
        task_path(a["task"].as_str().unwrap_or_default()),
        crate::client::encode_segment(req)
    );
    let approve = a["decision"] == json!("approve");
    let mut body = json!({"decision": a["decision"]});
    if approve && a["always_for_task"].as_bool() == Some(true) {
        body["always_for_task"] = json!(true);
    }
    if let Some(r) = a["reason"].as_str() {
        body["reason"] = json!(r);
    }
    Ok(client.post_value(&path, &body).await?)
}
