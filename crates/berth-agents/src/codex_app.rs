//! The `codex app-server` protocol (JSON-RPC 2.0, one JSON object per line on stdin/stdout),
//! as berth's codex driver speaks it. Verified against codex 0.169 and its schema
//! (`codex app-server generate-json-schema`).
//!
//! One process serves every turn of a task:
//!
//! ```text
//! → {"id":1,"method":"initialize","params":{"clientInfo":{"name":"berth",…}}}     ← result
//! → {"method":"initialized"}
//! → {"id":2,"method":"thread/start","params":{cwd, approvalPolicy, sandbox}}       ← result.thread.id
//!   (or thread/resume {threadId, …} when the task continues in a new process)
//! → {"id":3,"method":"turn/start","params":{threadId, input:[{type:"text",text}]}} ← result.turn.id
//! ← notifications: turn/started, item/started, item/agentMessage/delta, item/completed,
//!   thread/tokenUsage/updated, …, turn/completed {turn:{status, error}}
//! ```
//!
//! A permission request is a JSON-RPC request *from* the server:
//! `item/commandExecution/requestApproval {itemId, command, cwd, reason?, …}` or
//! `item/fileChange/requestApproval {itemId, reason?, grantRoot?}` (the change itself came with
//! the `fileChange` item's `item/started`), answered with `{"id":…,"result":{"decision":
//! "accept"|"decline"}}`. A decline carries no message: the model is told codex's own
//! "rejected by user". Requests berth does not serve are answered with a JSON-RPC error.
//! `turn/interrupt {threadId, turnId}` ends the running turn (`turn/completed` with status
//! `interrupted`).

use std::collections::{HashMap, HashSet, VecDeque};

use berth_domain::{ApprovalKind, ApprovalPolicy, ApprovalRequest, EventKind};
use serde_json::{json, Value};

use crate::util::{count_of, exit_code, str_of, string};
use crate::{TurnEnd, TurnSpec};

/// Most permission requests remembered at once; more are declined at once.
const MAX_PENDING: usize = 256;
/// Most item ids remembered (started tool items, file changes awaiting a request).
const MAX_ITEMS: usize = 4096;
/// The most of one command's output streamed as `tool_output` in a turn.
const MAX_STREAMED_OUTPUT: usize = 64 * 1024;

/// Where the handshake stands.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
enum Phase {
    /// Nothing sent yet.
    #[default]
    New,
    /// `initialize` sent, waiting for its result.
    Initializing,
    /// `thread/start` or `thread/resume` sent.
    OpeningThread,
    /// The thread is open: turns can start.
    Ready,
}

/// A permission request the server waits on.
#[derive(Debug)]
struct Pending {
    /// The server's JSON-RPC id (any JSON value), echoed in the answer.
    rpc_id: Value,
}

/// The protocol state of one app-server process (and the turn it runs).
#[derive(Debug, Default)]
pub(crate) struct AppServer {
    phase: Phase,
    next_id: u64,
    /// Our requests in flight: id → method.
    calls: HashMap<u64, &'static str>,
    thread_id: Option<String>,
    /// The running turn's id, once `turn/start` answered.
    turn_id: Option<String>,
    /// A turn was asked for and has not ended.
    in_turn: bool,
    /// The prompt of a turn asked for before the thread was open.
    queued_prompt: Option<String>,
    /// The thread request to send once `initialize` answered.
    thread_params: Option<(&'static str, Value)>,
    /// An interrupt asked for before the turn had an id.
    interrupt_wanted: bool,
    /// Lines to write.
    out: VecDeque<String>,
    end: Option<TurnEnd>,
    /// The policy of the task (what `thread/start` asks for; `never` answers requests itself).
    policy: ApprovalPolicy,
    pending: HashMap<String, Pending>,
    /// Every approval id handed out (a second request for one item gets a suffix).
    used_ids: HashSet<String>,
    /// Tool items already reported as `tool_call`.
    started: HashSet<String>,
    /// The changes of `fileChange` items, for their permission requests.
    changes: HashMap<String, Value>,
    last_message: Option<String>,
    /// Tokens of this turn: the sum of each model response's `last` usage.
    usage: [u64; 3],
    /// Bytes of each command's output streamed as `tool_output` this turn (capped per command).
    streamed: HashMap<String, usize>,
}

impl AppServer {
    fn send(&mut self, method: &'static str, params: Value) {
        self.next_id += 1;
        let id = self.next_id;
        self.calls.insert(id, method);
        self.out
            .push_back(json!({"id": id, "method": method, "params": params}).to_string());
    }

    /// Starts the turn of `spec`: the handshake and thread first when the process is new.
    pub(crate) fn begin_turn(&mut self, spec: &TurnSpec) -> Vec<String> {
        self.in_turn = true;
        self.turn_id = None;
        self.end = None;
        self.interrupt_wanted = false;
        self.last_message = None;
        self.usage = [0; 3];
        self.streamed.clear();
        self.policy = spec.approval;
        match self.phase {
            Phase::New => {
                self.queued_prompt = Some(spec.prompt.clone());
                self.phase = Phase::Initializing;
                self.send(
                    "initialize",
                    json!({"clientInfo": {"name": "berth", "title": "berth",
                        "version": env!("CARGO_PKG_VERSION")}}),
                );
                self.thread_params = Some(thread_params(spec));
            }
            Phase::Initializing | Phase::OpeningThread => {
                self.queued_prompt = Some(spec.prompt.clone());
            }
            Phase::Ready => self.start_turn(&spec.prompt),
        }
        self.take_output()
    }

    fn start_turn(&mut self, prompt: &str) {
        let Some(thread) = self.thread_id.clone() else {
            return;
        };
        self.send(
            "turn/start",
            json!({"threadId": thread, "input": [{"type": "text", "text": prompt}]}),
        );
    }

    pub(crate) fn take_output(&mut self) -> Vec<String> {
        self.out.drain(..).collect()
    }

    pub(crate) fn take_turn_end(&mut self) -> Option<TurnEnd> {
        self.end.take()
    }

    pub(crate) fn interrupt(&mut self) -> Vec<String> {
        if !self.in_turn {
            return Vec::new();
        }
        match (&self.thread_id, &self.turn_id) {
            (Some(thread), Some(turn)) => {
                let params = json!({"threadId": thread, "turnId": turn});
                self.send("turn/interrupt", params);
            }
            _ => self.interrupt_wanted = true,
        }
        self.take_output()
    }

    /// Ends the turn (once).
    fn finish(&mut self, end: TurnEnd) {
        if self.in_turn {
            self.in_turn = false;
            self.turn_id = None;
            self.queued_prompt = None;
            self.end = Some(end);
        }
    }

    /// One line of the server's stdout.
    pub(crate) fn parse_line(&mut self, line: &str) -> Vec<EventKind> {
        let v = match crate::json_or_log(line) {
            Ok(v) => v,
            Err(events) => return events,
        };
        let method = str_of(&v, "method");
        let events = match (method, v.get("id")) {
            (Some(m), Some(id)) => Some(self.server_request(m, id.clone(), &v["params"])),
            (Some(m), None) => self.notification(m, &v["params"]),
            (None, Some(id)) => Some(self.response(id, &v)),
            (None, None) => None,
        };
        events.unwrap_or_else(|| vec![EventKind::Raw { data: v }])
    }

    /// The answer to one of our calls.
    fn response(&mut self, id: &Value, v: &Value) -> Vec<EventKind> {
        let Some(method) = id.as_u64().and_then(|n| self.calls.remove(&n)) else {
            return Vec::new();
        };
        if let Some(err) = v.get("error") {
            let message = format!(
                "codex app-server: {method} failed: {}",
                error_message(err, "error")
            );
            return match method {
                // Nothing to interrupt or steer any more (the turn ended meanwhile).
                "turn/interrupt" | "turn/steer" => vec![EventKind::Log { line: message }],
                _ => {
                    self.finish(TurnEnd::Failed(message.clone()));
                    vec![EventKind::Error { message }]
                }
            };
        }
        let result = &v["result"];
        match method {
            "initialize" => {
                self.out
                    .push_back(json!({"method": "initialized"}).to_string());
                self.phase = Phase::OpeningThread;
                if let Some((method, params)) = self.thread_params.take() {
                    self.send(method, params);
                }
                Vec::new()
            }
            "thread/start" | "thread/resume" => {
                let thread = &result["thread"];
                let Some(id) = str_of(thread, "id").filter(|s| !s.is_empty()) else {
                    let message = format!("codex app-server: {method} returned no thread id");
                    self.finish(TurnEnd::Failed(message.clone()));
                    return vec![EventKind::Error { message }];
                };
                self.thread_id = Some(id.to_owned());
                self.phase = Phase::Ready;
                if let Some(prompt) = self.queued_prompt.take() {
                    self.start_turn(&prompt);
                }
                vec![EventKind::Session {
                    agent_session_id: id.to_owned(),
                    model: str_of(result, "model").map(str::to_owned),
                }]
            }
            "turn/start" => {
                if let Some(turn) = str_of(&result["turn"], "id") {
                    if self.in_turn {
                        self.turn_id = Some(turn.to_owned());
                        if std::mem::take(&mut self.interrupt_wanted) {
                            let lines = self.interrupt();
                            self.out.extend(lines);
                        }
                    }
                }
                Vec::new()
            }
            _ => Vec::new(),
        }
    }

    /// A notification of the server.
    fn notification(&mut self, method: &str, p: &Value) -> Option<Vec<EventKind>> {
        Some(match method {
            "item/started" => return p.get("item").and_then(|i| self.item_started(i)),
            "item/completed" => return p.get("item").and_then(|i| self.item_completed(i)),
            "item/agentMessage/delta" => {
                let text = string(p, "delta");
                if text.is_empty() {
                    Vec::new()
                } else {
                    vec![EventKind::MessageDelta { text }]
                }
            }
            "item/commandExecution/outputDelta" => self.output_delta(p),
            "thread/tokenUsage/updated" => {
                let last = &p["tokenUsage"]["last"];
                // Saturating: the counts are the agent's word, and any number may come.
                for (n, key) in ["inputTokens", "outputTokens", "cachedInputTokens"]
                    .into_iter()
                    .enumerate()
                {
                    self.usage[n] = self.usage[n].saturating_add(count_of(last, key));
                }
                Vec::new()
            }
            "turn/started" => {
                if let Some(id) = str_of(&p["turn"], "id") {
                    if self.in_turn && self.turn_id.is_none() {
                        self.turn_id = Some(id.to_owned());
                    }
                }
                Vec::new()
            }
            "turn/completed" => self.turn_completed(&p["turn"]),
            "error" => {
                let message = error_message(&p["error"], "codex error");
                if p.get("willRetry").and_then(Value::as_bool) == Some(true) {
                    vec![EventKind::Log {
                        line: format!("codex: {message} (retrying)"),
                    }]
                } else {
                    vec![EventKind::Error { message }]
                }
            }
            // Chatter with nothing for the task's log.
            "thread/started"
            | "thread/status/changed"
            | "thread/settings/updated"
            | "account/rateLimits/updated"
            | "serverRequest/resolved"
            | "remoteControl/status/changed"
            | "mcpServer/startupStatus/updated"
            | "turn/diff/updated"
            | "item/fileChange/outputDelta"
            | "item/fileChange/patchUpdated"
            | "item/reasoning/summaryTextDelta"
            | "item/reasoning/summaryPartAdded"
            | "item/reasoning/textDelta" => Vec::new(),
            _ => return None,
        })
    }

    fn turn_completed(&mut self, turn: &Value) -> Vec<EventKind> {
        let mut events = Vec::new();
        if self.usage != [0; 3] {
            events.push(EventKind::Usage {
                input_tokens: self.usage[0],
                output_tokens: self.usage[1],
                cached_input_tokens: self.usage[2],
                cost_usd: None,
            });
            self.usage = [0; 3];
        }
        match str_of(turn, "status") {
            Some("interrupted") => self.finish(TurnEnd::Interrupted),
            Some("failed") => {
                let message = error_message(&turn["error"], "codex turn failed");
                events.push(EventKind::Error {
                    message: message.clone(),
                });
                self.finish(TurnEnd::Failed(message));
            }
            _ => {
                events.push(EventKind::TurnCompleted {
                    result: self.last_message.take(),
                });
                self.finish(TurnEnd::Completed);
            }
        }
        events
    }

    /// A request of the server: a permission request becomes an `approval_request` (or is
    /// answered at once); anything else is refused with a JSON-RPC error so codex never waits.
    fn server_request(&mut self, method: &str, rpc_id: Value, p: &Value) -> Vec<EventKind> {
        let request = match method {
            "item/commandExecution/requestApproval" => self.command_request(p),
            "item/fileChange/requestApproval" => self.file_request(p),
            _ => {
                self.out.push_back(
                    json!({"id": rpc_id, "error": {"code": -32601,
                        "message": format!("berth does not serve {method}")}})
                    .to_string(),
                );
                return vec![EventKind::Log {
                    line: format!("berth: refused codex's {method} request"),
                }];
            }
        };
        if !self.policy.asks() || self.pending.len() >= MAX_PENDING {
            // Unattended (the policy is never), or too many open: answered here.
            let accept = !self.policy.asks();
            self.out.push_back(decision(&rpc_id, accept));
            return Vec::new();
        }
        let mut id = request.id.clone();
        let mut n = 1;
        while self.used_ids.contains(&id) {
            n += 1;
            id = format!("{}#{n}", request.id);
        }
        if self.used_ids.len() < MAX_ITEMS {
            self.used_ids.insert(id.clone());
        }
        self.pending.insert(id.clone(), Pending { rpc_id });
        vec![EventKind::ApprovalRequest {
            request: ApprovalRequest { id, ..request }.capped(),
        }]
    }

    fn command_request(&mut self, p: &Value) -> ApprovalRequest {
        let cmd = string(p, "command");
        let mut risks = crate::approval_util::command_risks(&cmd);
        if p.get("networkApprovalContext")
            .is_some_and(|c| !c.is_null())
            && !risks.iter().any(|r| r == "network")
        {
            risks.push("network".to_owned());
        }
        ApprovalRequest {
            id: request_id(p),
            kind: ApprovalKind::Command,
            tool: "shell".into(),
            summary: format!("run `{}`", shown_command(&cmd)),
            command: Some(cmd),
            path: None,
            diff: None,
            input: json!({"command": p["command"], "cwd": p["cwd"]}),
            reason: str_of(p, "reason").map(str::to_owned),
            risks,
        }
    }

    fn file_request(&mut self, p: &Value) -> ApprovalRequest {
        let changes = self
            .changes
            .get(&string(p, "itemId"))
            .cloned()
            .unwrap_or(Value::Null);
        let list = changes.as_array().cloned().unwrap_or_default();
        let path = list
            .first()
            .map(|c| string(c, "path"))
            .or_else(|| str_of(p, "grantRoot").map(str::to_owned));
        let summary = match (list.len(), list.first()) {
            (1, Some(c)) => format!("{} {}", change_kind(c), string(c, "path")),
            (0, _) => "apply a patch".to_owned(),
            (n, _) => format!("edit {n} files"),
        };
        let diff: String = list
            .iter()
            .map(|c| {
                format!(
                    "--- {} ({})\n{}",
                    string(c, "path"),
                    change_kind(c),
                    string(c, "diff")
                )
            })
            .collect::<Vec<_>>()
            .join("\n");
        ApprovalRequest {
            id: request_id(p),
            kind: ApprovalKind::FileEdit,
            tool: "apply_patch".into(),
            summary,
            command: None,
            path,
            diff: Some(diff),
            input: changes,
            reason: str_of(p, "reason").map(str::to_owned),
            risks: Vec::new(),
        }
    }

    /// The answer to permission request `id`. Codex's decline carries no message (its model is
    /// told "rejected by user"), so a denial's `message` follows as steering input of the
    /// running turn (`turn/steer`): the model reads it with the rejection.
    pub(crate) fn answer(&mut self, id: &str, approve: bool, message: &str) -> Vec<String> {
        let Some(p) = self.pending.remove(id) else {
            return Vec::new();
        };
        self.out.push_back(decision(&p.rpc_id, approve));
        let message = message.trim();
        if !approve && !message.is_empty() {
            if let (Some(thread), Some(turn)) = (self.thread_id.clone(), self.turn_id.clone()) {
                let text = format!("[berth] The request was denied: {message}");
                self.send(
                    "turn/steer",
                    json!({"threadId": thread, "expectedTurnId": turn,
                           "input": [{"type": "text", "text": text}]}),
                );
            }
        }
        self.take_output()
    }

    fn tool_call(&mut self, item: &Value) -> Option<EventKind> {
        let id = string(item, "id");
        let (name, input) = match str_of(item, "type")? {
            "commandExecution" => ("shell".to_owned(), json!({"command": item["command"]})),
            "mcpToolCall" => (
                format!("{}.{}", string(item, "server"), string(item, "tool")),
                item.get("arguments").cloned().unwrap_or(Value::Null),
            ),
            "dynamicToolCall" => (
                string(item, "tool"),
                item.get("arguments").cloned().unwrap_or(Value::Null),
            ),
            "webSearch" => ("web_search".to_owned(), json!({"query": item["query"]})),
            _ => return None,
        };
        if self.started.contains(&id) {
            return None;
        }
        if self.started.len() < MAX_ITEMS {
            self.started.insert(id.clone());
        }
        Some(EventKind::ToolCall {
            call_id: id,
            name,
            input,
        })
    }

    /// A running command's output as it comes (`tool_output`), at most
    /// [`MAX_STREAMED_OUTPUT`] bytes of one command and [`MAX_ITEMS`] commands a turn: the whole
    /// output still comes with the command's result.
    fn output_delta(&mut self, p: &Value) -> Vec<EventKind> {
        let (Some(id), Some(delta)) = (str_of(p, "itemId"), p.get("delta").and_then(Value::as_str))
        else {
            return Vec::new();
        };
        if delta.is_empty() || (self.streamed.len() >= MAX_ITEMS && !self.streamed.contains_key(id))
        {
            return Vec::new();
        }
        let sent = self.streamed.entry(id.to_owned()).or_insert(0);
        let room = MAX_STREAMED_OUTPUT.saturating_sub(*sent);
        if room == 0 {
            return Vec::new();
        }
        let text = if delta.len() <= room {
            *sent += delta.len();
            delta.to_owned()
        } else {
            let mut cut = room;
            while !delta.is_char_boundary(cut) {
                cut -= 1;
            }
            *sent = MAX_STREAMED_OUTPUT;
            format!(
                "{}\n[output cut here; the whole of it comes with the result]",
                &delta[..cut]
            )
        };
        vec![EventKind::ToolOutput {
            call_id: id.to_owned(),
            text,
        }]
    }

    fn item_started(&mut self, item: &Value) -> Option<Vec<EventKind>> {
        match str_of(item, "type")? {
            "commandExecution" | "mcpToolCall" | "dynamicToolCall" | "webSearch" => {
                Some(self.tool_call(item).into_iter().collect())
            }
            "fileChange" => {
                let id = string(item, "id");
                let changes = item.get("changes").cloned().unwrap_or(Value::Null);
                if self.changes.len() < MAX_ITEMS {
                    self.changes.insert(id, changes);
                }
                Some(Vec::new())
            }
            // Reported when completed (the user's own message is the daemon's).
            "userMessage" | "agentMessage" | "reasoning" | "plan" | "contextCompaction" => {
                Some(Vec::new())
            }
            _ => None,
        }
    }

    fn item_completed(&mut self, item: &Value) -> Option<Vec<EventKind>> {
        let status = str_of(item, "status").unwrap_or("completed");
        let id = string(item, "id");
        match str_of(item, "type")? {
            "userMessage" | "contextCompaction" => Some(Vec::new()),
            "agentMessage" => {
                let text = string(item, "text");
                self.last_message = Some(text.clone());
                Some(vec![EventKind::Message { text }])
            }
            "reasoning" => {
                let text = ["summary", "content"]
                    .iter()
                    .filter_map(|k| item.get(*k).and_then(Value::as_array))
                    .flatten()
                    .filter_map(Value::as_str)
                    .collect::<Vec<_>>()
                    .join("\n");
                Some(if text.is_empty() {
                    Vec::new()
                } else {
                    vec![EventKind::Reasoning { text }]
                })
            }
            "commandExecution" => {
                let mut out: Vec<EventKind> = self.tool_call(item).into_iter().collect();
                let code = item.get("exitCode").and_then(exit_code);
                let output = match status {
                    "declined" => "declined".to_owned(),
                    _ => string(item, "aggregatedOutput"),
                };
                out.push(EventKind::ToolResult {
                    call_id: id,
                    output,
                    exit_code: code,
                    is_error: matches!(status, "failed" | "declined")
                        || code.is_some_and(|c| c != 0),
                });
                Some(out)
            }
            "mcpToolCall" | "dynamicToolCall" => {
                let mut out: Vec<EventKind> = self.tool_call(item).into_iter().collect();
                let error = item.get("error").filter(|e| !e.is_null());
                let output = match (error, item.get("result").filter(|r| !r.is_null())) {
                    (Some(e), _) => error_message(e, "tool call failed"),
                    (None, Some(r)) => match r.get("content") {
                        Some(c) => crate::util::text_content(c),
                        None => r.to_string(),
                    },
                    (None, None) => match item.get("contentItems") {
                        Some(c) if !c.is_null() => crate::util::text_content(c),
                        _ => String::new(),
                    },
                };
                out.push(EventKind::ToolResult {
                    call_id: id,
                    output,
                    exit_code: None,
                    is_error: error.is_some() || status == "failed",
                });
                Some(out)
            }
            "fileChange" => {
                self.changes.remove(&id);
                if status != "completed" {
                    return Some(vec![EventKind::Log {
                        line: format!("codex: patch {status}"),
                    }]);
                }
                let changes = item.get("changes")?.as_array()?;
                Some(
                    changes
                        .iter()
                        .map(|c| EventKind::FileChange {
                            path: string(c, "path"),
                            change: change_kind(c),
                        })
                        .collect(),
                )
            }
            "webSearch" => {
                let mut out: Vec<EventKind> = self.tool_call(item).into_iter().collect();
                out.push(EventKind::ToolResult {
                    call_id: id,
                    output: String::new(),
                    exit_code: None,
                    is_error: false,
                });
                Some(out)
            }
            _ => None,
        }
    }
}

/// `thread/start` for a new conversation, `thread/resume` to continue one (`spec.resume`): the
/// working directory, the approval policy (berth's `on-request` and `always` are codex's
/// `untrusted`: every command and patch asks, as codex runs commands through a login shell that
/// its known-safe list never matches), and no sandbox (the container is the sandbox).
fn thread_params(spec: &TurnSpec) -> (&'static str, Value) {
    let policy = if spec.approval.asks() {
        "untrusted"
    } else {
        "never"
    };
    let mut params = json!({
        "cwd": spec.cwd.display().to_string(),
        "approvalPolicy": policy,
        "sandbox": "danger-full-access",
    });
    if let Some(model) = &spec.model {
        params["model"] = json!(model);
    }
    match &spec.resume {
        Some(id) => {
            params["threadId"] = json!(id);
            params["excludeTurns"] = json!(true);
            ("thread/resume", params)
        }
        None => ("thread/start", params),
    }
}

fn decision(rpc_id: &Value, accept: bool) -> String {
    let decision = if accept { "accept" } else { "decline" };
    json!({"id": rpc_id, "result": {"decision": decision}}).to_string()
}

/// The approval id of a request: its item id (the model's call id), with the approval's own id
/// when one item asks more than once.
fn request_id(p: &Value) -> String {
    let item = string(p, "itemId");
    match str_of(p, "approvalId").filter(|s| !s.is_empty()) {
        Some(a) => format!("{item}/{a}"),
        None => item,
    }
}

/// The command as a person would type it: codex wraps it in `/bin/bash -lc '…'`.
fn shown_command(cmd: &str) -> String {
    let inner = cmd
        .strip_prefix("/bin/bash -lc ")
        .or_else(|| cmd.strip_prefix("bash -lc "))
        .map(|s| s.trim_matches('\''))
        .unwrap_or(cmd);
    inner.lines().next().unwrap_or_default().to_owned()
}

/// `add`, `delete` or `update` (`kind` is `{type}` in the v2 protocol, a string in older ones).
fn change_kind(c: &Value) -> String {
    match &c["kind"] {
        Value::String(s) => s.clone(),
        k => string(k, "type"),
    }
}

fn error_message(v: &Value, fallback: &str) -> String {
    match v {
        Value::String(s) if !s.is_empty() => s.clone(),
        _ => str_of(v, "message")
            .filter(|s| !s.is_empty())
            .map(str::to_owned)
            .unwrap_or_else(|| fallback.to_owned()),
    }
}
