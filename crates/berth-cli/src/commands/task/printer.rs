//! How `berth task` shows a task's events: one JSON line each (`--json`), or readably for a
//! terminal: the agent's text as it streams, tool calls and their output cut short, status
//! changes, usage. Agent-written text is made safe for the terminal unless `--raw`.

use berth_api::TaskEvent;
use berth_domain::{EventKind, TaskState};
use serde_json::Value;

use crate::client::{one_line, Result};
use crate::ctx::Ctx;
use crate::format::{terminal_safe_json, truncate};

/// Lines of a tool's output shown.
const TOOL_OUTPUT_LINES: usize = 20;
/// Characters of a reasoning event shown.
const REASONING_CHARS: usize = 200;
/// Characters of a non-shell tool call's input shown.
const TOOL_INPUT_CHARS: usize = 200;

/// Prints events: as JSON lines, or readably for a terminal.
pub(crate) struct Printer {
    task: String,
    json: bool,
    verbose: bool,
    color: bool,
    /// Print agent text as it came (`--raw`); else control sequences are stripped.
    raw: bool,
    /// Text of the assistant message streamed so far as deltas.
    delta: String,
    /// The cursor is after delta text, not at the start of a line.
    open_line: bool,
    /// The newest complete message shown (so a turn's result is not shown twice).
    last_message: Option<String>,
}

impl Printer {
    pub fn new(task: &str, json: bool, verbose: bool, color: bool) -> Self {
        Self {
            task: task.to_owned(),
            json,
            verbose,
            color,
            raw: false,
            delta: String::new(),
            open_line: false,
            last_message: None,
        }
    }

    /// With `raw`, agent text is printed as it came, control sequences included.
    pub fn raw(mut self, raw: bool) -> Self {
        self.raw = raw;
        self
    }

    /// Prints one event (`raw` is its JSON text); returns it decoded when it is a known type.
    /// Agent-written strings are made [`terminal_safe`](crate::format::terminal_safe) before
    /// rendering unless `--raw` (JSON output escapes control characters itself and is printed
    /// as received).
    pub(crate) fn event(
        &mut self,
        ctx: &mut Ctx<'_>,
        raw: &str,
        v: &Value,
    ) -> Result<Option<TaskEvent>> {
        let mut v = v.clone();
        if !self.raw && !self.json {
            terminal_safe_json(&mut v);
        }
        let v = &v;
        let ev = serde_json::from_value::<TaskEvent>(v.clone()).ok();
        let text = if self.json {
            format!("{raw}\n")
        } else {
            match &ev {
                Some(e) => self.render(&e.kind),
                None => self.render_unknown(v),
            }
        };
        if !text.is_empty() {
            ctx.print(&text)?;
        }
        Ok(ev)
    }

    /// Ends a line left open by streamed deltas.
    pub(crate) fn finish(&mut self, ctx: &mut Ctx<'_>) -> Result<()> {
        if self.open_line {
            self.open_line = false;
            ctx.print("\n")?;
        }
        Ok(())
    }

    /// The text shown for an event of a type this client does not know.
    fn render_unknown(&mut self, v: &Value) -> String {
        let kind = v.get("type").and_then(Value::as_str).unwrap_or("event");
        self.block(format!("[{kind}] {v}\n"))
    }

    /// Text after an open delta line is ended (when there is any text).
    fn block(&mut self, body: String) -> String {
        if body.is_empty() || !self.open_line {
            return body;
        }
        self.open_line = false;
        format!("\n{body}")
    }

    /// The text shown for an event; empty for events not shown.
    pub(crate) fn render(&mut self, kind: &EventKind) -> String {
        match kind {
            EventKind::MessageDelta { text } => {
                self.delta.push_str(text);
                if !text.is_empty() {
                    self.open_line = !text.ends_with('\n');
                }
                text.clone()
            }
            EventKind::Message { text } => {
                let delta = std::mem::take(&mut self.delta);
                self.last_message = Some(text.clone());
                let rest = (!delta.is_empty())
                    .then(|| text.strip_prefix(delta.as_str()))
                    .flatten();
                match rest {
                    // The deltas showed the start of this message: show the rest only.
                    Some(rest) if self.open_line => {
                        self.open_line = false;
                        with_newline(rest)
                    }
                    Some("") => String::new(),
                    Some(rest) => with_newline(rest),
                    None => self.block(with_newline(text)),
                }
            }
            EventKind::TurnCompleted { result } => {
                let shown = self.last_message.take();
                match result {
                    Some(r)
                        if !r.trim().is_empty()
                            && shown.as_deref().map(str::trim) != Some(r.trim()) =>
                    {
                        self.block(with_newline(r))
                    }
                    _ => String::new(),
                }
            }
            other => {
                let body = self.render_other(other);
                self.block(body)
            }
        }
    }

    fn render_other(&self, kind: &EventKind) -> String {
        match kind {
            EventKind::Status { state, reason } => self.status(*state, reason.as_deref()),
            EventKind::Session {
                agent_session_id,
                model,
            } => match model {
                Some(m) => format!("[session] {agent_session_id} (model {m})\n"),
                None => format!("[session] {agent_session_id}\n"),
            },
            EventKind::UserMessage { text } => quoted(text),
            EventKind::Reasoning { text } => {
                let t = truncate(&one_line(text), REASONING_CHARS);
                if t.is_empty() {
                    String::new()
                } else if self.color {
                    format!("\x1b[2m(thinking) {t}\x1b[0m\n")
                } else {
                    format!("(thinking) {t}\n")
                }
            }
            EventKind::ToolCall { name, input, .. } => tool_call(name, input),
            EventKind::ToolResult {
                output,
                exit_code,
                is_error,
                ..
            } => tool_result(output, *exit_code, *is_error),
            EventKind::FileChange { path, change } => format!("~ {path} ({change})\n"),
            // The whole output comes with the result; the fragments only with --verbose.
            EventKind::ToolOutput { text, .. } if self.verbose => {
                let mut s = String::new();
                for line in text.lines() {
                    s.push_str(&format!("  | {line}\n"));
                }
                s
            }
            EventKind::ToolOutput { .. } => String::new(),
            EventKind::Usage {
                input_tokens,
                output_tokens,
                cached_input_tokens,
                cost_usd,
            } => {
                let mut s = format!(
                    "[usage] in {input_tokens} out {output_tokens} cached {cached_input_tokens}"
                );
                if let Some(c) = cost_usd {
                    s.push_str(&format!(" cost ${c:.4}"));
                }
                s + "\n"
            }
            EventKind::ApprovalRequest { request } => approval_request(request),
            EventKind::ApprovalResolved {
                id,
                decision,
                reason,
                by,
            } => approval_resolved(id, *decision, reason.as_deref(), by.as_deref()),
            EventKind::TurnInterrupted {
                by,
                new_conversation,
            } => interrupted(by.as_deref(), *new_conversation),
            EventKind::Error { message } => format!("[error] {}\n", message.trim_end()),
            EventKind::Log { line } if self.verbose => format!("[log] {}\n", line.trim_end()),
            EventKind::Raw { data } if self.verbose => format!("[raw] {data}\n"),
            EventKind::Log { .. } | EventKind::Raw { .. } => String::new(),
            // Handled by `render`.
            EventKind::MessageDelta { .. }
            | EventKind::Message { .. }
            | EventKind::TurnCompleted { .. } => String::new(),
        }
    }

    /// `[status] STATE: reason`, with how to answer an agent that waits for input.
    fn status(&self, state: TaskState, reason: Option<&str>) -> String {
        let mut s = format!("[status] {state}");
        if let Some(r) = reason {
            s.push_str(&format!(": {}", one_line(r)));
        }
        if state == TaskState::Waiting {
            s.push_str(&format!(
                " (the agent waits for a decision: berth task approve {} / berth task deny {})",
                self.task, self.task
            ));
        }
        s + "\n"
    }
}

/// A user's message, each line quoted with `> `.
fn quoted(text: &str) -> String {
    let mut s = String::new();
    for line in text.trim_end_matches('\n').split('\n') {
        if line.is_empty() {
            s.push_str(">\n");
        } else {
            s.push_str(&format!("> {line}\n"));
        }
    }
    s
}

/// `$ COMMAND` for a shell-like tool, else `$ TOOL INPUT` (the input cut short).
/// `[approval] ID asks: SUMMARY (KIND)`, why, the risks and the start of the diff.
fn approval_request(r: &berth_domain::ApprovalRequest) -> String {
    let mut s = format!(
        "[approval] {} asks: {} ({})\n",
        r.id,
        one_line(&r.summary),
        r.kind.as_str()
    );
    if let Some(why) = &r.reason {
        s.push_str(&format!("  why: {}\n", one_line(why)));
    }
    if !r.risks.is_empty() {
        s.push_str(&format!("  risks: {}\n", r.risks.join(", ")));
    }
    if let Some(d) = &r.diff {
        for line in d.lines().take(20) {
            s.push_str(&format!("  {line}\n"));
        }
    }
    s
}

/// `[approval] ID DECISION by WHO: REASON`.
fn approval_resolved(
    id: &str,
    decision: berth_domain::ApprovalDecision,
    reason: Option<&str>,
    by: Option<&str>,
) -> String {
    let mut s = format!("[approval] {id} {}", decision.as_str());
    if let Some(by) = by {
        s.push_str(&format!(" by {}", one_line(by)));
    }
    if let Some(r) = reason {
        s.push_str(&format!(": {}", one_line(r)));
    }
    s + "\n"
}

/// `[interrupted] by WHO`, and whether the next turn starts a new conversation.
fn interrupted(by: Option<&str>, new_conversation: bool) -> String {
    let mut s = "[interrupted]".to_owned();
    if let Some(by) = by {
        s.push_str(&format!(" by {}", one_line(by)));
    }
    if new_conversation {
        s.push_str(
            " (the agent had no session to resume yet: a new conversation starts with the original prompt and the new message)",
        );
    }
    s + "\n"
}

fn tool_call(name: &str, input: &Value) -> String {
    match shell_command(input) {
        Some(cmd) => format!("$ {}\n", head_lines(&cmd, TOOL_OUTPUT_LINES, "")),
        None => match input {
            Value::Null => format!("$ {name}\n"),
            Value::Object(m) if m.is_empty() => format!("$ {name}\n"),
            _ => format!(
                "$ {name} {}\n",
                truncate(&input.to_string(), TOOL_INPUT_CHARS)
            ),
        },
    }
}

/// A tool's output (its first lines, indented) and how it ended.
fn tool_result(output: &str, exit_code: Option<i32>, is_error: bool) -> String {
    let mut s = String::new();
    let out = output.trim_end_matches('\n');
    if !out.is_empty() {
        s.push_str(&head_lines(out, TOOL_OUTPUT_LINES, "  "));
        s.push('\n');
    }
    match (is_error, exit_code) {
        (false, None) => {}
        (false, Some(c)) => s.push_str(&format!("  [exit {c}]\n")),
        (true, Some(c)) => s.push_str(&format!("  [error, exit {c}]\n")),
        (true, None) => s.push_str("  [error]\n"),
    }
    s
}

/// The command line of a shell-like tool call: `{"command": "ls -la"}` or
/// `{"command": ["bash", "-lc", "ls -la"]}` (the script of `sh -c`).
pub(crate) fn shell_command(input: &Value) -> Option<String> {
    let cmd = input.get("command").or_else(|| input.get("cmd"))?;
    match cmd {
        Value::String(s) if !s.trim().is_empty() => Some(s.trim_end().to_owned()),
        Value::Array(items) => {
            let words: Option<Vec<&str>> = items.iter().map(Value::as_str).collect();
            let words = words?;
            match words.as_slice() {
                [] => None,
                [sh, flag, script]
                    if ["bash", "sh", "zsh", "/bin/bash", "/bin/sh", "/bin/zsh"].contains(sh)
                        && flag.starts_with('-')
                        && flag.ends_with('c') =>
                {
                    Some(script.trim_end().to_owned())
                }
                _ => Some(words.join(" ")),
            }
        }
        _ => None,
    }
}

fn with_newline(s: &str) -> String {
    if s.ends_with('\n') {
        s.to_owned()
    } else {
        format!("{s}\n")
    }
}

/// The first `n` lines, each prefixed with `indent`, and a note of how many were left out.
fn head_lines(s: &str, n: usize, indent: &str) -> String {
    let lines: Vec<&str> = s.split('\n').collect();
    let mut out: Vec<String> = lines
        .iter()
        .take(n)
        .map(|l| format!("{indent}{}", l.strip_suffix('\r').unwrap_or(l)))
        .collect();
    if lines.len() > n {
        out.push(format!("{indent}… ({} more lines)", lines.len() - n));
    }
    out.join("\n")
}
