//! The Agent Client Protocol (ACP: JSON-RPC 2.0, one JSON object per line on stdin/stdout), as
//! berth's gemini (`gemini --acp`, verified with 0.61) and opencode (`opencode acp`, 1.18.33)
//! drivers speak it. No I/O: the daemon writes what this gives it and feeds it every line.
//!
//! One process serves every turn of a task:
//!
//! ```text
//! → {"id":1,"method":"initialize","params":{protocolVersion:1, clientCapabilities:{fs:false…, terminal:false}}}
//! → {"id":2,"method":"session/new","params":{cwd, mcpServers:[]}}        ← result.sessionId
//!   (or session/load {sessionId, cwd, mcpServers} in a new process: the agent first replays the
//!   conversation as session/updates, skipped here)
//! → {"id":3,"method":"session/prompt","params":{sessionId, prompt:[{type:"text",text}]}}
//! ← session/update notifications (agent_message_chunk, agent_thought_chunk, tool_call,
//!   tool_call_update, plan, …), then the prompt's result {stopReason} ends the turn
//! ```
//!
//! A permission request is a JSON-RPC request *from* the agent:
//! `session/request_permission {toolCall, options:[{optionId, kind}]}`, answered with
//! `{outcome:{outcome:"selected", optionId}}` of its `allow_once` or `reject_once` option. ACP
//! carries no reason with a rejection: the agent tells the model its own words, and berth says
//! the reason before the text of the next prompt. Any other
//! request of the agent (fs/*, terminal/*: berth advertises neither) gets a JSON-RPC error so the
//! agent never waits. `session/cancel` (a notification) interrupts the turn, whose prompt then
//! answers `cancelled`; pending permission requests are answered `cancelled` as ACP requires.
//!
//! The approval policy is not part of the protocol here: each driver sets its CLI's own mode or
//! permission configuration when it starts the process (see gemini.rs, opencode.rs).
//!
//! Token usage is what the prompt's result reports: `usage {inputTokens, outputTokens,
//! cachedReadTokens}` (opencode) or `_meta.quota.token_count {input_tokens, output_tokens}`
//! (gemini).

use std::collections::{HashMap, HashSet, VecDeque};

use berth_domain::{ApprovalKind, ApprovalPolicy, ApprovalRequest, EventKind};
use serde_json::{json, Value};

use crate::util::{count_of, exit_code, str_of, string};
use crate::{TurnEnd, TurnSpec};

/// The [`crate::Driver`] methods of a driver that speaks ACP through its field `$field` (an
/// [`Acp`]): lines, answers, turns and interrupts all go to the protocol state.
macro_rules! protocol_methods {
    ($field:ident) => {
        fn parse_line(&mut self, line: &str) -> Vec<EventKind> {
            self.$field.parse_line(line)
        }

        fn supports_approvals(&self) -> bool {
            true
        }

        fn answer(&mut self, id: &str, approve: bool, message: &str) -> Vec<String> {
            self.$field.answer(id, approve, message)
        }

        fn long_lived(&self) -> bool {
            true
        }

        fn begin_turn(&mut self, spec: &TurnSpec) -> Vec<String> {
            self.$field.begin_turn(spec)
        }

        fn take_output(&mut self) -> Vec<String> {
            self.$field.take_output()
        }

        fn take_turn_end(&mut self) -> Option<TurnEnd> {
            self.$field.take_turn_end()
        }

        fn interrupt(&mut self) -> Vec<String> {
            self.$field.interrupt()
        }
    };
}
pub(crate) use protocol_methods;

/// Most permission requests remembered at once; more are rejected at once.
const MAX_PENDING: usize = 256;
/// Most tool calls remembered a turn.
const MAX_ITEMS: usize = 4096;
/// The longest text accumulated for one streamed message or thought.
const MAX_TEXT: usize = 1 << 20;

/// Where the handshake stands.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
enum Phase {
    #[default]
    New,
    Initializing,
    OpeningSession,
    Ready,
}

#[derive(Debug)]
struct Pending {
    rpc_id: Value,
    allow: Option<String>,
    reject: Option<String>,
}

/// What is known of one tool call (ACP sends it in pieces).
#[derive(Debug, Default, Clone)]
struct Tool {
    name: String,
    kind: String,
    title: String,
    input: Value,
    /// The text content the call was announced with (gemini: an MCP call's arguments as JSON,
    /// a command's working directory and description).
    detail: String,
    /// Reported as `tool_call`.
    reported: bool,
    /// Reported as `tool_result`.
    done: bool,
}

/// The protocol state of one ACP agent process (and the turn it runs).
#[derive(Debug)]
pub(crate) struct Acp {
    /// The agent's name in messages (`gemini`, `opencode`).
    agent: &'static str,
    phase: Phase,
    next_id: u64,
    /// Our requests in flight: id → method.
    calls: HashMap<u64, &'static str>,
    session_id: Option<String>,
    /// The id of the running turn's `session/prompt`.
    prompt_id: Option<u64>,
    in_turn: bool,
    queued_prompt: Option<String>,
    session_params: Option<(&'static str, Value)>,
    /// The session `session/load` asked for.
    resume_id: Option<String>,
    interrupt_wanted: bool,
    /// A loaded session's history is being replayed: its updates are not this turn's.
    replaying: bool,
    out: VecDeque<String>,
    end: Option<TurnEnd>,
    policy: ApprovalPolicy,
    pending: HashMap<String, Pending>,
    used_ids: HashSet<String>,
    tools: HashMap<String, Tool>,
    /// The streamed assistant message so far, and the streamed thought.
    message: String,
    thought: String,
    last_message: Option<String>,
    /// The reasons of denials the model was not told (ACP's answer carries none): said before
    /// the next prompt's text.
    untold: Vec<String>,
}

/// Most denial reasons kept for the next prompt, and the longest one (characters).
const MAX_UNTOLD: usize = 8;
const MAX_UNTOLD_CHARS: usize = 300;

impl Acp {
    pub(crate) fn new(agent: &'static str) -> Self {
        Acp {
            agent,
            phase: Phase::New,
            next_id: 0,
            calls: HashMap::new(),
            session_id: None,
            prompt_id: None,
            in_turn: false,
            queued_prompt: None,
            session_params: None,
            resume_id: None,
            interrupt_wanted: false,
            replaying: false,
            out: VecDeque::new(),
            end: None,
            policy: ApprovalPolicy::Never,
            pending: HashMap::new(),
            used_ids: HashSet::new(),
            tools: HashMap::new(),
            message: String::new(),
            thought: String::new(),
            last_message: None,
            untold: Vec::new(),
        }
    }

    fn send(&mut self, method: &'static str, params: Value) -> u64 {
        self.next_id += 1;
        let id = self.next_id;
        self.calls.insert(id, method);
        self.out.push_back(
            json!({"jsonrpc": "2.0", "id": id, "method": method, "params": params}).to_string(),
        );
        id
    }

    /// Starts the turn of `spec`: the handshake and the session first when the process is new.
    pub(crate) fn begin_turn(&mut self, spec: &TurnSpec) -> Vec<String> {
        self.in_turn = true;
        self.prompt_id = None;
        self.end = None;
        self.interrupt_wanted = false;
        self.last_message = None;
        self.message.clear();
        self.thought.clear();
        self.tools.clear();
        self.policy = spec.approval;
        match self.phase {
            Phase::New => {
                self.queued_prompt = Some(spec.prompt.clone());
                self.phase = Phase::Initializing;
                self.send(
                    "initialize",
                    json!({
                        "protocolVersion": 1,
                        "clientCapabilities": {
                            "fs": {"readTextFile": false, "writeTextFile": false},
                            "terminal": false,
                        },
                        "clientInfo": {"name": "berth", "title": "berth",
                            "version": env!("CARGO_PKG_VERSION")},
                    }),
                );
                let cwd = spec.cwd.display().to_string();
                self.resume_id = spec.resume.clone();
                self.session_params = Some(match &spec.resume {
                    Some(id) => (
                        "session/load",
                        json!({"sessionId": id, "cwd": cwd, "mcpServers": []}),
                    ),
                    None => ("session/new", json!({"cwd": cwd, "mcpServers": []})),
                });
            }
            Phase::Initializing | Phase::OpeningSession => {
                self.queued_prompt = Some(spec.prompt.clone());
            }
            Phase::Ready => self.prompt(&spec.prompt),
        }
        self.take_output()
    }

    fn prompt(&mut self, text: &str) {
        let Some(session) = self.session_id.clone() else {
            return;
        };
        if std::mem::take(&mut self.interrupt_wanted) {
            self.finish(TurnEnd::Interrupted);
            return;
        }
        let text = self.with_untold(text);
        let id = self.send(
            "session/prompt",
            json!({"sessionId": session, "prompt": [{"type": "text", "text": text}]}),
        );
        self.prompt_id = Some(id);
    }

    /// `text`, after the reasons of the denials the model was not told yet (then forgotten).
    fn with_untold(&mut self, text: &str) -> String {
        if self.untold.is_empty() {
            return text.to_owned();
        }
        let notes = std::mem::take(&mut self.untold);
        let what = if notes.len() == 1 {
            "A request of yours was"
        } else {
            "Requests of yours were"
        };
        format!(
            "[berth] {what} denied earlier in this task: {}.\n\n{text}",
            notes.join("; ")
        )
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
        match (&self.session_id, self.prompt_id) {
            (Some(session), Some(_)) => {
                // ACP: the client answers its pending permission requests `cancelled`.
                let pending: Vec<Pending> = self.pending.drain().map(|(_, p)| p).collect();
                for p in pending {
                    self.out.push_back(
                        json!({"jsonrpc": "2.0", "id": p.rpc_id,
                            "result": {"outcome": {"outcome": "cancelled"}}})
                        .to_string(),
                    );
                }
                self.out.push_back(
                    json!({"jsonrpc": "2.0", "method": "session/cancel",
                        "params": {"sessionId": session}})
                    .to_string(),
                );
            }
            _ => self.interrupt_wanted = true,
        }
        self.take_output()
    }

    fn finish(&mut self, end: TurnEnd) {
        if self.in_turn {
            self.in_turn = false;
            self.prompt_id = None;
            self.queued_prompt = None;
            self.end = Some(end);
        }
    }

    /// One line of the agent's stdout.
    pub(crate) fn parse_line(&mut self, line: &str) -> Vec<EventKind> {
        let v = match crate::json_or_log(line) {
            Ok(v) => v,
            Err(events) => return events,
        };
        let method = str_of(&v, "method");
        let events = match (method, v.get("id")) {
            (Some(m), Some(id)) => Some(self.agent_request(m, id.clone(), &v["params"])),
            (Some("session/update"), None) => self.update(&v["params"]["update"]),
            (Some(_), None) => None,
            (None, Some(id)) => Some(self.response(id, &v)),
            (None, None) => None,
        };
        events.unwrap_or_else(|| vec![EventKind::Raw { data: v }])
    }

    fn response(&mut self, id: &Value, v: &Value) -> Vec<EventKind> {
        let Some(n) = id.as_u64() else {
            return Vec::new();
        };
        let Some(method) = self.calls.remove(&n) else {
            return Vec::new();
        };
        if let Some(err) = v.get("error") {
            let message = format!(
                "{} acp: {method} failed: {}",
                self.agent,
                error_message(err, "error")
            );
            let mut events = self.flush();
            if method == "session/prompt" && Some(n) != self.prompt_id {
                return events;
            }
            self.finish(TurnEnd::Failed(message.clone()));
            events.push(EventKind::Error { message });
            return events;
        }
        let result = &v["result"];
        match method {
            "initialize" => {
                self.phase = Phase::OpeningSession;
                if let Some((method, params)) = self.session_params.take() {
                    if method == "session/load" {
                        self.replaying = true;
                    }
                    self.send(method, params);
                }
                Vec::new()
            }
            "session/new" | "session/load" => {
                let id = match method {
                    "session/new" => str_of(result, "sessionId").map(str::to_owned),
                    _ => self.loaded_id(),
                };
                let Some(id) = id.filter(|s| !s.is_empty()) else {
                    let message = format!("{} acp: {method} returned no session id", self.agent);
                    self.finish(TurnEnd::Failed(message.clone()));
                    return vec![EventKind::Error { message }];
                };
                self.session_id = Some(id.clone());
                self.phase = Phase::Ready;
                if let Some(prompt) = self.queued_prompt.take() {
                    self.prompt(&prompt);
                }
                let model = str_of(&result["models"], "currentModelId").map(str::to_owned);
                vec![EventKind::Session {
                    agent_session_id: id,
                    model,
                }]
            }
            "session/prompt" if Some(n) == self.prompt_id => {
                self.replaying = false;
                self.prompt_done(result)
            }
            _ => Vec::new(),
        }
    }

    /// The id `session/load` was sent for (kept in the sent line's params).
    fn loaded_id(&self) -> Option<String> {
        self.session_id.clone().or_else(|| self.resume_id.clone())
    }

    fn prompt_done(&mut self, result: &Value) -> Vec<EventKind> {
        let mut events = self.flush();
        if let Some(usage) = usage(result) {
            events.push(usage);
        }
        let reason = str_of(result, "stopReason").unwrap_or("end_turn");
        match reason {
            "cancelled" => self.finish(TurnEnd::Interrupted),
            "refusal" => {
                let message = format!("{}: the model refused", self.agent);
                events.push(EventKind::Error {
                    message: message.clone(),
                });
                self.finish(TurnEnd::Failed(message));
            }
            _ => {
                if reason != "end_turn" {
                    events.push(EventKind::Log {
                        line: format!("{}: turn stopped: {reason}", self.agent),
                    });
                }
                events.push(EventKind::TurnCompleted {
                    result: self.last_message.take(),
                });
                self.finish(TurnEnd::Completed);
            }
        }
        events
    }

    /// Ends the streamed thought and message, if any.
    fn flush(&mut self) -> Vec<EventKind> {
        let mut out = Vec::new();
        if !self.thought.is_empty() {
            out.push(EventKind::Reasoning {
                text: std::mem::take(&mut self.thought),
            });
        }
        if !self.message.is_empty() {
            let text = std::mem::take(&mut self.message);
            self.last_message = Some(text.clone());
            out.push(EventKind::Message { text });
        }
        out
    }

    /// One `session/update`.
    fn update(&mut self, u: &Value) -> Option<Vec<EventKind>> {
        let kind = str_of(u, "sessionUpdate")?;
        if kind == "available_commands_update" {
            // Sent once a loaded session's history is replayed (gemini answers `session/load`
            // before its replay is over; opencode after).
            self.replaying = false;
            return Some(Vec::new());
        }
        if self.replaying || !self.in_turn || self.prompt_id.is_none() {
            // A loaded conversation's history, or chatter between turns (a mode change's note).
            return Some(Vec::new());
        }
        Some(match kind {
            "agent_message_chunk" => {
                let text = chunk_text(u);
                let mut out = Vec::new();
                if !self.thought.is_empty() {
                    out.push(EventKind::Reasoning {
                        text: std::mem::take(&mut self.thought),
                    });
                }
                if !text.is_empty() {
                    if self.message.len() < MAX_TEXT {
                        self.message.push_str(&text);
                    }
                    out.push(EventKind::MessageDelta { text });
                }
                out
            }
            "agent_thought_chunk" => {
                let text = chunk_text(u);
                if self.thought.len() < MAX_TEXT {
                    self.thought.push_str(&text);
                }
                Vec::new()
            }
            "tool_call" | "tool_call_update" => self.tool_update(u),
            // The user's own message (the daemon records it) and state with nothing for the log.
            "user_message_chunk"
            | "current_mode_update"
            | "config_option_update"
            | "session_info_update"
            | "usage_update" => Vec::new(),
            _ => return None,
        })
    }

    fn tool_update(&mut self, u: &Value) -> Vec<EventKind> {
        let id = string(u, "toolCallId");
        let mut out = self.flush();
        if !self.tools.contains_key(&id) && self.tools.len() >= MAX_ITEMS {
            return out;
        }
        let tool = self.tools.entry(id.clone()).or_default();
        merge(tool, &id, u);
        if str_of(u, "sessionUpdate") == Some("tool_call") && tool.detail.is_empty() {
            tool.detail = content_text(&u["content"]);
        }
        let status = str_of(u, "status").unwrap_or("");
        if status != "pending" {
            out.extend(report(tool, &id));
        }
        if matches!(status, "completed" | "failed") && !tool.done {
            tool.done = true;
            let failed = status == "failed";
            let raw = &u["rawOutput"];
            let mut output = content_text(&u["content"]);
            if output.is_empty() {
                output = str_of(raw, "output")
                    .or_else(|| str_of(raw, "error"))
                    .unwrap_or_default()
                    .to_owned();
            }
            let code = raw["metadata"].get("exit").and_then(exit_code);
            out.push(EventKind::ToolResult {
                call_id: id,
                output,
                exit_code: code,
                is_error: failed || code.is_some_and(|c| c != 0),
            });
            if !failed {
                for d in diffs(&u["content"]) {
                    out.push(EventKind::FileChange {
                        path: string(d, "path"),
                        change: if d.get("oldText").is_none_or(Value::is_null) {
                            "add".into()
                        } else {
                            "update".into()
                        },
                    });
                }
            }
        }
        out
    }

    /// A request of the agent: a permission request becomes an `approval_request` (or is
    /// answered at once); anything else is refused with a JSON-RPC error.
    fn agent_request(&mut self, method: &str, rpc_id: Value, p: &Value) -> Vec<EventKind> {
        if method != "session/request_permission" {
            self.out.push_back(
                json!({"jsonrpc": "2.0", "id": rpc_id, "error": {"code": -32601,
                    "message": format!("berth does not serve {method}")}})
                .to_string(),
            );
            return vec![EventKind::Log {
                line: format!("berth: refused {}'s {method} request", self.agent),
            }];
        }
        // A permission request is always this turn's.
        self.replaying = false;
        let options = p["options"].as_array().cloned().unwrap_or_default();
        let pick = |kinds: &[&str]| {
            kinds.iter().find_map(|k| {
                options
                    .iter()
                    .find(|o| str_of(o, "kind") == Some(k))
                    .and_then(|o| str_of(o, "optionId"))
                    .map(str::to_owned)
            })
        };
        let pending = Pending {
            rpc_id,
            allow: pick(&["allow_once", "allow_always"]),
            reject: pick(&["reject_once", "reject_always"]),
        };
        let call = &p["toolCall"];
        let call_id = string(call, "toolCallId");
        let mut events = self.flush();
        if self.tools.len() < MAX_ITEMS || self.tools.contains_key(&call_id) {
            let tool = self.tools.entry(call_id.clone()).or_default();
            merge(tool, &call_id, call);
            if tool.detail.is_empty() {
                tool.detail = content_text(&call["content"]);
            }
            events.extend(report(tool, &call_id));
        }
        if !self.policy.asks() || self.pending.len() >= MAX_PENDING {
            let allow = !self.policy.asks();
            self.out.push_back(selected(&pending, allow));
            return events;
        }
        let tool = self.tools.get(&call_id).cloned().unwrap_or_default();
        let request = normalize(&call_id, &tool, call);
        let mut id = request.id.clone();
        let mut n = 1;
        while self.used_ids.contains(&id) {
            n += 1;
            id = format!("{}#{n}", request.id);
        }
        if self.used_ids.len() < MAX_ITEMS {
            self.used_ids.insert(id.clone());
        }
        self.pending.insert(id.clone(), pending);
        events.push(EventKind::ApprovalRequest {
            request: ApprovalRequest { id, ..request }.capped(),
        });
        events
    }

    /// The answer to permission request `id`. ACP's answer carries no reason, so a denial's
    /// (`message`) is kept for the next prompt.
    pub(crate) fn answer(&mut self, id: &str, approve: bool, message: &str) -> Vec<String> {
        let Some(p) = self.pending.remove(id) else {
            return Vec::new();
        };
        let note = message.trim();
        if !approve && !note.is_empty() && self.untold.len() < MAX_UNTOLD {
            self.untold
                .push(note.chars().take(MAX_UNTOLD_CHARS).collect::<String>());
        }
        vec![selected(&p, approve)]
    }
}

/// Folds one `tool_call`/`tool_call_update` (or a permission request's `toolCall`) into what is
/// known of the call.
fn merge(tool: &mut Tool, id: &str, u: &Value) {
    let title = str_of(u, "title").unwrap_or_default();
    if tool.name.is_empty() {
        // gemini's call ids are `<tool>__<call>`; opencode names the tool in its first title.
        tool.name = match id.split_once("__") {
            Some((name, _)) if !name.is_empty() => name.to_owned(),
            _ if !title.is_empty() => title.to_owned(),
            _ => string(u, "kind"),
        };
    }
    if let Some(kind) = str_of(u, "kind").filter(|k| !k.is_empty()) {
        tool.kind = kind.to_owned();
    }
    if !title.is_empty() {
        tool.title = title.to_owned();
    }
    if let Some(raw) = u.get("rawInput").filter(|r| !r.is_null()) {
        // A later, fuller input replaces an earlier one (opencode sends the command after the
        // call itself).
        let size = |v: &Value| v.as_object().map_or(0, |o| o.len());
        if size(raw) >= size(&tool.input) {
            tool.input = raw.clone();
        }
    }
}

/// The call's `tool_call` event, once.
fn report(tool: &mut Tool, id: &str) -> Option<EventKind> {
    if tool.reported {
        return None;
    }
    tool.reported = true;
    Some(EventKind::ToolCall {
        call_id: id.to_owned(),
        name: tool.name.clone(),
        input: tool_input(tool),
    })
}

/// The call's arguments: its `rawInput`, or (gemini sends none) what its title and content
/// say: a command's title is the command; an MCP call's content is its arguments as JSON.
fn tool_input(tool: &Tool) -> Value {
    match &tool.input {
        Value::Null => match tool.kind.as_str() {
            "execute" => json!({"command": tool.title}),
            _ => match serde_json::from_str::<Value>(&tool.detail) {
                Ok(v) if v.is_object() => v,
                _ if tool.detail.is_empty() => json!({"title": tool.title}),
                _ => json!({"title": tool.title, "detail": tool.detail}),
            },
        },
        v => v.clone(),
    }
}

/// A permission request in berth's terms.
fn normalize(id: &str, tool: &Tool, call: &Value) -> ApprovalRequest {
    let input = tool_input(tool);
    let text = |k: &str| str_of(&input, k).map(str::to_owned);
    let changes = diffs(&call["content"]);
    let location = call["locations"]
        .as_array()
        .and_then(|l| l.first())
        .and_then(|l| str_of(l, "path"))
        .map(str::to_owned);
    let mut r = ApprovalRequest {
        id: id.to_owned(),
        kind: ApprovalKind::ToolCall,
        tool: tool.name.clone(),
        summary: format!("{} {}", tool.name, tool.title).trim().to_owned(),
        command: None,
        path: None,
        diff: None,
        input: input.clone(),
        reason: text("description"),
        risks: Vec::new(),
    };
    match tool.kind.as_str() {
        "execute" => {
            let cmd = text("command").unwrap_or_else(|| tool.title.clone());
            r.kind = ApprovalKind::Command;
            r.summary = format!("run `{}`", cmd.lines().next().unwrap_or_default());
            r.risks = crate::approval_util::command_risks(&cmd);
            r.command = Some(cmd);
        }
        "edit" | "delete" | "move" => {
            let path = changes
                .first()
                .map(|d| string(d, "path"))
                .or_else(|| text("filePath"))
                .or_else(|| text("file_path"))
                .or(location)
                .unwrap_or_default();
            r.kind = ApprovalKind::FileEdit;
            r.summary = format!("{} {path}", tool.kind);
            if !changes.is_empty() {
                r.diff = Some(render_diffs(&changes));
            }
            r.path = Some(path);
        }
        "fetch" => r.risks.push("network".into()),
        _ if tool.name.starts_with("mcp_") => {
            r.kind = ApprovalKind::McpCall;
            r.summary = format!("call MCP tool {}", tool.name);
        }
        _ => {}
    }
    r
}

/// The `diff` items of an ACP tool-call content list.
fn diffs(content: &Value) -> Vec<&Value> {
    content
        .as_array()
        .map(|l| {
            l.iter()
                .filter(|c| str_of(c, "type") == Some("diff"))
                .collect()
        })
        .unwrap_or_default()
}

fn render_diffs(changes: &[&Value]) -> String {
    let mut out = String::new();
    for d in changes {
        let path = string(d, "path");
        out.push_str(&format!("--- {path}\n+++ {path}\n"));
        for l in string(d, "oldText").lines() {
            out.push_str(&format!("-{l}\n"));
        }
        for l in string(d, "newText").lines() {
            out.push_str(&format!("+{l}\n"));
        }
    }
    out
}

/// The text of an ACP tool-call content list (`content` items holding text blocks).
fn content_text(content: &Value) -> String {
    content
        .as_array()
        .map(|l| {
            l.iter()
                .filter(|c| str_of(c, "type") == Some("content"))
                .filter_map(|c| str_of(&c["content"], "text"))
                .collect::<Vec<_>>()
                .join("\n")
        })
        .unwrap_or_default()
}

fn chunk_text(u: &Value) -> String {
    string(&u["content"], "text")
}

/// The answer selecting the request's allow or reject option (`cancelled` when it offers none).
fn selected(p: &Pending, allow: bool) -> String {
    let option = if allow { &p.allow } else { &p.reject };
    let outcome = match option {
        Some(id) => json!({"outcome": "selected", "optionId": id}),
        None => json!({"outcome": "cancelled"}),
    };
    json!({"jsonrpc": "2.0", "id": p.rpc_id, "result": {"outcome": outcome}}).to_string()
}

/// The turn's token usage from a prompt's result, when the agent reports it.
fn usage(result: &Value) -> Option<EventKind> {
    let (input, output, cached) = if let Some(u) = result.get("usage").filter(|u| u.is_object()) {
        (
            count_of(u, "inputTokens"),
            count_of(u, "outputTokens"),
            count_of(u, "cachedReadTokens"),
        )
    } else {
        let t = result["_meta"]["quota"].get("token_count")?;
        (
            count_of(t, "input_tokens"),
            count_of(t, "output_tokens"),
            count_of(t, "cached_tokens"),
        )
    };
    (input > 0 || output > 0).then_some(EventKind::Usage {
        input_tokens: input,
        output_tokens: output,
        cached_input_tokens: cached,
        cost_usd: None,
    })
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

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use crate::testutil::spec;
    use berth_domain::Agent;

    /// What `gemini --acp` (0.61) printed for an `on-request` turn against the mock LLM
    /// (trimmed): the shell call asks first, then runs.
    pub(crate) const GEMINI_SAMPLE: &str = r#"{"jsonrpc":"2.0","id":1,"result":{"protocolVersion":1,"agentInfo":{"name":"gemini-cli","version":"0.61.0"},"agentCapabilities":{"loadSession":true}}}
{"jsonrpc":"2.0","id":2,"result":{"sessionId":"fad5c433","modes":{"currentModeId":"default"},"models":{"currentModelId":"gemini-2.5-pro"}}}
{"jsonrpc":"2.0","method":"session/update","params":{"sessionId":"fad5c433","update":{"sessionUpdate":"available_commands_update","availableCommands":[{"name":"memory"}]}}}
{"jsonrpc":"2.0","method":"session/update","params":{"sessionId":"fad5c433","update":{"sessionUpdate":"agent_thought_chunk","content":{"type":"text","text":"Let me "}}}}
{"jsonrpc":"2.0","method":"session/update","params":{"sessionId":"fad5c433","update":{"sessionUpdate":"agent_thought_chunk","content":{"type":"text","text":"think."}}}}
{"jsonrpc":"2.0","id":0,"method":"session/request_permission","params":{"sessionId":"fad5c433","options":[{"optionId":"proceed_always","name":"Allow for this session","kind":"allow_always"},{"optionId":"proceed_once","name":"Allow","kind":"allow_once"},{"optionId":"cancel","name":"Reject","kind":"reject_once"}],"toolCall":{"toolCallId":"run_shell_command__run_shell_command_1_0","status":"pending","title":"echo hi > hello.txt","content":[{"type":"content","content":{"type":"text","text":"[current working directory /r] (Run the scripted command)"}}],"locations":[],"kind":"execute"}}}
{"jsonrpc":"2.0","method":"session/update","params":{"sessionId":"fad5c433","update":{"sessionUpdate":"tool_call_update","toolCallId":"run_shell_command__run_shell_command_1_0","status":"completed","title":"echo hi > hello.txt","content":[],"locations":[],"kind":"execute"}}}
{"jsonrpc":"2.0","method":"session/update","params":{"sessionId":"fad5c433","update":{"sessionUpdate":"agent_message_chunk","content":{"type":"text","text":"DO"}}}}
{"jsonrpc":"2.0","method":"session/update","params":{"sessionId":"fad5c433","update":{"sessionUpdate":"agent_message_chunk","content":{"type":"text","text":"NE"}}}}
{"jsonrpc":"2.0","id":3,"result":{"stopReason":"end_turn","_meta":{"quota":{"token_count":{"input_tokens":40,"output_tokens":20}}}}}"#;

    /// What `opencode acp` (1.18.33) printed for an edit that asked and was approved (trimmed).
    pub(crate) const OPENCODE_SAMPLE: &str = r#"{"jsonrpc":"2.0","id":1,"result":{"protocolVersion":1,"agentInfo":{"name":"OpenCode","version":"1.18.33"}}}
{"jsonrpc":"2.0","id":2,"result":{"sessionId":"ses_1","configOptions":[]}}
{"jsonrpc":"2.0","method":"session/update","params":{"sessionId":"ses_1","update":{"sessionUpdate":"tool_call","toolCallId":"call_1","title":"edit","kind":"edit","status":"pending","locations":[],"rawInput":{}}}}
{"jsonrpc":"2.0","method":"session/update","params":{"sessionId":"ses_1","update":{"sessionUpdate":"tool_call_update","toolCallId":"call_1","status":"in_progress","kind":"edit","title":"a.txt","locations":[{"path":"/r/a.txt"}],"rawInput":{"filePath":"/r/a.txt","oldString":"x","newString":"y"}}}}
{"jsonrpc":"2.0","id":0,"method":"session/request_permission","params":{"sessionId":"ses_1","toolCall":{"toolCallId":"call_1","title":"a.txt","kind":"edit","status":"pending","locations":[{"path":"/r/a.txt"}],"content":[{"type":"diff","path":"/r/a.txt","oldText":"x\n","newText":"y\n"}]},"options":[{"optionId":"once","kind":"allow_once","name":"Allow once"},{"optionId":"always","kind":"allow_always","name":"Always allow"},{"optionId":"reject","kind":"reject_once","name":"Reject"}]}}
{"jsonrpc":"2.0","id":7,"method":"fs/read_text_file","params":{"sessionId":"ses_1","path":"/etc/passwd"}}
{"jsonrpc":"2.0","method":"session/update","params":{"sessionId":"ses_1","update":{"sessionUpdate":"tool_call_update","toolCallId":"call_1","status":"completed","title":"a.txt","content":[{"type":"content","content":{"type":"text","text":"Edit applied."}},{"type":"diff","path":"/r/a.txt","oldText":"x\n","newText":"y\n"}],"rawOutput":{"output":"Edit applied."}}}}
{"jsonrpc":"2.0","method":"session/update","params":{"sessionId":"ses_1","update":{"sessionUpdate":"plan","entries":[{"content":"x","status":"pending"}]}}}
{"jsonrpc":"2.0","method":"session/update","params":{"sessionId":"ses_1","update":{"sessionUpdate":"agent_message_chunk","messageId":"m","content":{"type":"text","text":"DONE"}}}}
{"jsonrpc":"2.0","id":3,"result":{"stopReason":"end_turn","usage":{"inputTokens":20,"outputTokens":10,"totalTokens":30},"_meta":{}}}"#;

    fn run(acp: &mut Acp, text: &str) -> (Vec<EventKind>, Vec<Value>) {
        let mut events = Vec::new();
        let mut out = Vec::new();
        for line in text.lines() {
            events.extend(acp.parse_line(line));
            out.extend(acp.take_output());
        }
        let out = out
            .iter()
            .map(|l| serde_json::from_str(l).unwrap())
            .collect();
        (events, out)
    }

    #[test]
    fn gemini_turn_with_an_approval() {
        let mut acp = Acp::new("gemini");
        let mut s = spec(Agent::Gemini);
        s.approval = ApprovalPolicy::OnRequest;
        let first: Vec<Value> = acp
            .begin_turn(&s)
            .iter()
            .map(|l| serde_json::from_str(l).unwrap())
            .collect();
        assert_eq!(first.len(), 1);
        assert_eq!(first[0]["method"], "initialize");
        assert_eq!(
            first[0]["params"]["clientCapabilities"],
            json!({"fs": {"readTextFile": false, "writeTextFile": false}, "terminal": false})
        );
        let lines: Vec<&str> = GEMINI_SAMPLE.lines().collect();
        let (ev, out) = run(&mut acp, &lines[..5].join("\n"));
        assert_eq!(out[0]["method"], "session/new");
        assert_eq!(
            out[0]["params"],
            json!({"cwd": "/workspace/repo", "mcpServers": []})
        );
        assert_eq!(out[1]["method"], "session/prompt");
        assert_eq!(
            out[1]["params"],
            json!({"sessionId": "fad5c433", "prompt": [{"type": "text", "text": "Create hello.txt"}]})
        );
        assert_eq!(
            ev,
            [EventKind::Session {
                agent_session_id: "fad5c433".into(),
                model: Some("gemini-2.5-pro".into())
            }]
        );
        let (ev, out) = run(&mut acp, lines[5]);
        assert!(out.is_empty(), "the request waits for a decision: {out:?}");
        let call = "run_shell_command__run_shell_command_1_0";
        assert_eq!(
            ev[..2],
            [
                EventKind::Reasoning {
                    text: "Let me think.".into()
                },
                EventKind::ToolCall {
                    call_id: call.into(),
                    name: "run_shell_command".into(),
                    input: json!({"command": "echo hi > hello.txt"}),
                },
            ]
        );
        let EventKind::ApprovalRequest { request } = &ev[2] else {
            panic!("{ev:?}")
        };
        assert_eq!(request.id, call);
        assert_eq!(request.kind, ApprovalKind::Command);
        assert_eq!(request.command.as_deref(), Some("echo hi > hello.txt"));
        assert_eq!(request.summary, "run `echo hi > hello.txt`");
        assert_eq!(acp.answer("nope", true, ""), Vec::<String>::new());
        let answer: Value = serde_json::from_str(&acp.answer(call, true, "")[0]).unwrap();
        assert_eq!(
            answer,
            json!({"jsonrpc": "2.0", "id": 0,
                "result": {"outcome": {"outcome": "selected", "optionId": "proceed_once"}}})
        );
        assert!(acp.answer(call, true, "").is_empty(), "answered once");
        let (ev, _) = run(&mut acp, &lines[6..].join("\n"));
        assert_eq!(
            ev,
            [
                EventKind::ToolResult {
                    call_id: call.into(),
                    output: String::new(),
                    exit_code: None,
                    is_error: false
                },
                EventKind::MessageDelta { text: "DO".into() },
                EventKind::MessageDelta { text: "NE".into() },
                EventKind::Message {
                    text: "DONE".into()
                },
                EventKind::Usage {
                    input_tokens: 40,
                    output_tokens: 20,
                    cached_input_tokens: 0,
                    cost_usd: None
                },
                EventKind::TurnCompleted {
                    result: Some("DONE".into())
                },
            ]
        );
        assert_eq!(acp.take_turn_end(), Some(TurnEnd::Completed));
        assert_eq!(acp.take_turn_end(), None);

        // The next turn on the warm process is one prompt; a denial selects the reject option.
        let mut s2 = s.clone();
        s2.prompt = "again".into();
        let l = acp.begin_turn(&s2);
        assert_eq!(l.len(), 1);
        let v: Value = serde_json::from_str(&l[0]).unwrap();
        assert_eq!(
            (v["method"].as_str(), v["id"].as_u64()),
            (Some("session/prompt"), Some(4))
        );
        let req = lines[5].replace("_1_0", "_2_0");
        let (ev, _) = run(&mut acp, &req);
        assert!(
            matches!(ev.last(), Some(EventKind::ApprovalRequest { .. })),
            "{ev:?}"
        );
        let answer = acp.answer(
            "run_shell_command__run_shell_command_2_0",
            false,
            "not on the release branch",
        );
        let answer: Value = serde_json::from_str(&answer[0]).unwrap();
        assert_eq!(answer["result"]["outcome"]["optionId"], "cancel");
        run(
            &mut acp,
            r#"{"jsonrpc":"2.0","id":4,"result":{"stopReason":"end_turn"}}"#,
        );
        assert_eq!(acp.take_turn_end(), Some(TurnEnd::Completed));

        // ACP's answer had no room for the reason: the next prompt says it first, once.
        let prompt_text = |acp: &mut Acp, text: &str| {
            let mut next = s.clone();
            next.prompt = text.into();
            let l = acp.begin_turn(&next);
            let v: Value = serde_json::from_str(&l[0]).unwrap();
            let text = v["params"]["prompt"][0]["text"]
                .as_str()
                .unwrap()
                .to_owned();
            let id = v["id"].as_u64().unwrap();
            run(
                acp,
                &format!(r#"{{"jsonrpc":"2.0","id":{id},"result":{{"stopReason":"end_turn"}}}}"#),
            );
            text
        };
        assert_eq!(
            prompt_text(&mut acp, "third"),
            "[berth] A request of yours was denied earlier in this task: not on the release \
             branch.\n\nthird"
        );
        assert_eq!(prompt_text(&mut acp, "fourth"), "fourth");
    }

    #[test]
    fn opencode_edit_diff_and_refused_requests() {
        let mut acp = Acp::new("opencode");
        let mut s = spec(Agent::Opencode);
        s.approval = ApprovalPolicy::Always;
        acp.begin_turn(&s);
        let (ev, out) = run(&mut acp, OPENCODE_SAMPLE);
        let request = ev
            .iter()
            .find_map(|e| match e {
                EventKind::ApprovalRequest { request } => Some(request.clone()),
                _ => None,
            })
            .unwrap();
        assert_eq!(request.kind, ApprovalKind::FileEdit);
        assert_eq!(request.path.as_deref(), Some("/r/a.txt"));
        assert_eq!(request.summary, "edit /r/a.txt");
        assert_eq!(
            request.diff.as_deref(),
            Some("--- /r/a.txt\n+++ /r/a.txt\n-x\n+y\n")
        );
        assert_eq!(request.input["oldString"], "x");
        // fs/read_text_file is refused at once (berth advertises no fs capability).
        let refusal = out.iter().find(|o| o["id"] == 7).unwrap();
        assert_eq!(refusal["error"]["code"], -32601);
        let names: Vec<&str> = ev
            .iter()
            .map(|e| match e {
                EventKind::ToolCall { name, .. } => name.as_str(),
                EventKind::ToolResult { .. } => "result",
                EventKind::FileChange { change, .. } => change.as_str(),
                EventKind::Raw { .. } => "raw",
                EventKind::Usage { .. } => "usage",
                EventKind::ApprovalRequest { .. } => "ask",
                EventKind::Log { .. } => "log",
                EventKind::Message { .. } => "message",
                EventKind::MessageDelta { .. } => "delta",
                EventKind::TurnCompleted { .. } => "completed",
                EventKind::Session { .. } => "session",
                _ => "other",
            })
            .collect();
        assert_eq!(
            names,
            [
                "session",
                "edit",
                "ask",
                "log",
                "result",
                "update",
                "raw",
                "delta",
                "message",
                "usage",
                "completed"
            ]
        );
        assert!(ev.contains(&EventKind::Usage {
            input_tokens: 20,
            output_tokens: 10,
            cached_input_tokens: 0,
            cost_usd: None
        }));
    }

    #[test]
    fn never_answers_itself_and_a_loaded_session_skips_its_replay() {
        let mut acp = Acp::new("opencode");
        let mut s = spec(Agent::Opencode);
        s.resume = Some("ses_1".into());
        acp.begin_turn(&s);
        let (_, out) = run(
            &mut acp,
            r#"{"jsonrpc":"2.0","id":1,"result":{"protocolVersion":1}}"#,
        );
        assert_eq!(out[0]["method"], "session/load");
        assert_eq!(
            out[0]["params"],
            json!({"sessionId": "ses_1", "cwd": "/workspace/repo", "mcpServers": []})
        );
        let replay = r#"{"jsonrpc":"2.0","method":"session/update","params":{"sessionId":"ses_1","update":{"sessionUpdate":"user_message_chunk","content":{"type":"text","text":"old"}}}}
{"jsonrpc":"2.0","method":"session/update","params":{"sessionId":"ses_1","update":{"sessionUpdate":"tool_call","toolCallId":"c0","title":"ls","kind":"execute","status":"completed"}}}
{"jsonrpc":"2.0","id":2,"result":{}}
{"jsonrpc":"2.0","method":"session/update","params":{"sessionId":"ses_1","update":{"sessionUpdate":"agent_message_chunk","content":{"type":"text","text":"OLD DONE"}}}}
{"jsonrpc":"2.0","method":"session/update","params":{"sessionId":"ses_1","update":{"sessionUpdate":"available_commands_update","availableCommands":[]}}}
{"jsonrpc":"2.0","id":0,"method":"session/request_permission","params":{"sessionId":"ses_1","toolCall":{"toolCallId":"c1","title":"rm -rf x","kind":"execute","rawInput":{"command":"rm -rf x"}},"options":[{"optionId":"once","kind":"allow_once"},{"optionId":"reject","kind":"reject_once"}]}}
{"jsonrpc":"2.0","method":"session/update","params":{"sessionId":"ses_1","update":{"sessionUpdate":"agent_message_chunk","content":{"type":"text","text":"NEW"}}}}"#;
        let (ev, out) = run(&mut acp, replay);
        assert_eq!(
            ev[0],
            EventKind::Session {
                agent_session_id: "ses_1".into(),
                model: None
            }
        );
        // Under `never` the request is allowed at once and nothing waits.
        assert_eq!(out[0]["method"], "session/prompt");
        assert_eq!(out[1]["result"]["outcome"]["optionId"], "once");
        assert_eq!(
            ev[1..],
            [
                EventKind::ToolCall {
                    call_id: "c1".into(),
                    name: "rm -rf x".into(),
                    input: json!({"command": "rm -rf x"})
                },
                EventKind::MessageDelta { text: "NEW".into() },
            ]
        );
        // An interrupt cancels the session's prompt; the prompt answers `cancelled`.
        let l = acp.interrupt();
        let v: Value = serde_json::from_str(&l[0]).unwrap();
        assert_eq!(
            v,
            json!({"jsonrpc": "2.0", "method": "session/cancel", "params": {"sessionId": "ses_1"}})
        );
        let (ev, _) = run(
            &mut acp,
            r#"{"jsonrpc":"2.0","id":3,"result":{"stopReason":"cancelled"}}"#,
        );
        assert_eq!(ev, [EventKind::Message { text: "NEW".into() }]);
        assert_eq!(acp.take_turn_end(), Some(TurnEnd::Interrupted));
        assert!(acp.interrupt().is_empty(), "no turn to interrupt");
    }

    /// Gemini announces an MCP call with its arguments as the content text (0.61).
    #[test]
    fn gemini_mcp_call_arguments() {
        let mut acp = Acp::new("gemini");
        acp.begin_turn(&spec(Agent::Gemini));
        let lines = r#"{"jsonrpc":"2.0","id":1,"result":{}}
{"jsonrpc":"2.0","id":2,"result":{"sessionId":"s"}}
{"jsonrpc":"2.0","method":"session/update","params":{"sessionId":"s","update":{"sessionUpdate":"tool_call","toolCallId":"mcp_notes_record_note__mcp_notes_record_note_1_0","status":"in_progress","title":"record_note (notes MCP Server)","content":[{"type":"content","content":{"type":"text","text":"{\"text\":\"from-gemini\"}"}}],"locations":[],"kind":"other"}}}
{"jsonrpc":"2.0","method":"session/update","params":{"sessionId":"s","update":{"sessionUpdate":"tool_call_update","toolCallId":"mcp_notes_record_note__mcp_notes_record_note_1_0","status":"completed","content":[{"type":"content","content":{"type":"text","text":"noted: from-gemini"}}],"kind":"other"}}}"#;
        let (ev, _) = run(&mut acp, lines);
        assert_eq!(
            ev[1..],
            [
                EventKind::ToolCall {
                    call_id: "mcp_notes_record_note__mcp_notes_record_note_1_0".into(),
                    name: "mcp_notes_record_note".into(),
                    input: json!({"text": "from-gemini"}),
                },
                EventKind::ToolResult {
                    call_id: "mcp_notes_record_note__mcp_notes_record_note_1_0".into(),
                    output: "noted: from-gemini".into(),
                    exit_code: None,
                    is_error: false
                },
            ]
        );
    }

    #[test]
    fn failures_end_the_turn() {
        let mut acp = Acp::new("gemini");
        acp.begin_turn(&spec(Agent::Gemini));
        let (ev, _) = run(
            &mut acp,
            r#"{"jsonrpc":"2.0","id":1,"error":{"code":-32000,"message":"auth required"}}"#,
        );
        assert_eq!(
            ev,
            [EventKind::Error {
                message: "gemini acp: initialize failed: auth required".into()
            }]
        );
        assert!(matches!(acp.take_turn_end(), Some(TurnEnd::Failed(_))));
        // Interrupting before the prompt was sent ends the turn without sending it.
        let mut acp = Acp::new("gemini");
        acp.begin_turn(&spec(Agent::Gemini));
        assert!(acp.interrupt().is_empty());
        let (_, out) = run(
            &mut acp,
            "{\"jsonrpc\":\"2.0\",\"id\":1,\"result\":{}}\n{\"jsonrpc\":\"2.0\",\"id\":2,\"result\":{\"sessionId\":\"s\"}}",
        );
        assert!(
            out.iter().all(|o| o["method"] != "session/prompt"),
            "{out:?}"
        );
        assert_eq!(acp.take_turn_end(), Some(TurnEnd::Interrupted));
    }

    #[test]
    fn fuzzed_samples_never_panic() {
        for sample in [GEMINI_SAMPLE, OPENCODE_SAMPLE] {
            let mut d = crate::driver(Agent::Gemini);
            let mut s = spec(Agent::Gemini);
            s.approval = ApprovalPolicy::Always;
            d.begin_turn(&s);
            crate::testutil::fuzz(d.as_mut(), sample);
        }
    }
}
