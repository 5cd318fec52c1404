//! `berth task …`: coding-agent tasks. Their events come as a JSON array (`…/events`, paged)
//! or as Server-Sent Events (`…/events/stream?after=N`), resumed after a dropped connection
//! from the last sequence number seen, so no event is missed or shown twice.

use std::time::Duration;

use berth_api::{CreateTask, ErrorBody, EventsQuery, SendMessage, Task, TaskEvent, TaskQuery};
use berth_domain::{EventKind, TaskState};
use serde_json::Value;

use crate::client::{decode, one_line, task_path, CliError, Client, Result};
use crate::format::{key_values, short_time, table, terminal_safe, terminal_safe_json};
use crate::{Ctx, TaskCmd};

/// Events asked for per page by `task logs` (the server may send fewer).
const PAGE: i64 = 1000;
/// The server sends a keepalive every ~15 s; silence this long means the connection is dead.
const IDLE_TIMEOUT: Duration = Duration::from_secs(60);
/// Waits before the reconnects after a dropped event stream; then it is an error.
const BACKOFF_MS: [u64; 5] = [250, 500, 1000, 2000, 4000];
/// Lines of a tool's output shown.
const TOOL_OUTPUT_LINES: usize = 20;
/// Characters of a reasoning event shown.
const REASONING_CHARS: usize = 200;
/// Characters of a non-shell tool call's input shown.
const TOOL_INPUT_CHARS: usize = 200;

pub(crate) async fn task(cmd: TaskCmd, client: &Client, ctx: &mut Ctx<'_>) -> Result<i32> {
    match cmd {
        TaskCmd::Run {
            ws,
            agent,
            model,
            dir,
            worktree,
            detach,
            json,
            raw,
            verbose,
            prompt,
        } => {
            let prompt = join_words(&prompt, "prompt")?;
            let req = CreateTask {
                workspace: ws,
                agent,
                prompt,
                model,
                dir,
                worktree,
            };
            let v = client.post_value("/tasks", &req).await?;
            let t: Task = decode(v.clone())?;
            if detach {
                if json {
                    ctx.print_json(&v)?;
                } else {
                    ctx.print(&format!("{}\n", t.id))?;
                }
                return Ok(0);
            }
            if !json {
                ctx.note(&format!(
                    "task {}: {} in {} (Ctrl-C detaches)",
                    t.id, t.agent, t.workspace
                ));
            }
            let mut printer = Printer::new(&t.id, json, verbose, ctx.color).raw(raw);
            let end = follow(client, ctx, &t.id, 0, Until::TurnOver, &mut printer).await?;
            turn_result(ctx, &t.id, end)
        }
        TaskCmd::List {
            workspace,
            state,
            json,
            raw,
        } => {
            let v = client
                .get_query_value("/tasks", &TaskQuery { workspace, state })
                .await?;
            if json {
                ctx.print_json(&v)?;
            } else {
                let list: Vec<Task> = decode(v)?;
                if list.is_empty() {
                    ctx.print("no tasks (start one: berth task run WS --agent claude PROMPT)\n")?;
                } else {
                    ctx.print(&shown(&task_table(&list), raw))?;
                }
            }
            Ok(0)
        }
        TaskCmd::Show { task, json, raw } => {
            let v = client.get_value(&task_path(&task)).await?;
            if json {
                ctx.print_json(&v)?;
            } else {
                let t: Task = decode(v)?;
                ctx.print(&shown(&task_details(&t), raw))?;
            }
            Ok(0)
        }
        TaskCmd::Logs {
            task,
            follow: keep_following,
            json,
            raw,
            after,
            verbose,
        } => {
            let mut printer = Printer::new(&task, json, verbose, ctx.color).raw(raw);
            if keep_following {
                // Ends when the task fails or is cancelled, or on Ctrl-C: both are success.
                follow(client, ctx, &task, after, Until::Final, &mut printer).await?;
                return Ok(0);
            }
            let path = format!("{}/events", task_path(&task));
            let mut after = after;
            loop {
                let q = EventsQuery {
                    after: Some(after),
                    limit: Some(PAGE),
                };
                let v = client.get_query_value(&path, &q).await?;
                let Value::Array(items) = v else {
                    return Err(CliError::other(
                        "unexpected response from the server: the events are not a list",
                    ));
                };
                let mut progressed = false;
                for item in items {
                    let Some(seq) = item.get("seq").and_then(Value::as_u64) else {
                        continue;
                    };
                    if seq <= after {
                        continue;
                    }
                    after = seq;
                    progressed = true;
                    printer.event(ctx, &item.to_string(), &item)?;
                }
                // An empty page is the end (a short one may just be the server's page cap).
                if !progressed {
                    break;
                }
            }
            printer.finish(ctx)?;
            Ok(0)
        }
        TaskCmd::Send {
            task,
            wait,
            json,
            raw,
            verbose,
            text,
        } => {
            let text = join_words(&text, "message")?;
            // Where this turn's events will start: after everything stored before it.
            let before = if wait {
                Some(client.get::<Task>(&task_path(&task)).await?.last_seq)
            } else {
                None
            };
            let v = client
                .post_value(
                    &format!("{}/messages", task_path(&task)),
                    &SendMessage { text },
                )
                .await?;
            let t: Task = decode(v.clone())?;
            if json && !wait {
                ctx.print_json(&v)?;
            } else if !json {
                ctx.print(&format!("sent to {task}\n"))?;
            }
            let Some(after) = before else {
                return Ok(0);
            };
            let mut printer = Printer::new(&t.id, json, verbose, ctx.color).raw(raw);
            let end = follow(client, ctx, &t.id, after, Until::TurnOver, &mut printer).await?;
            turn_result(ctx, &t.id, end)
        }
        TaskCmd::Cancel { task } => {
            client
                .post_empty_value(&format!("{}/cancel", task_path(&task)))
                .await?;
            ctx.print(&format!("cancelled {task}\n"))?;
            Ok(0)
        }
    }
}

/// Text for the terminal: agent-written parts made [`terminal_safe`] unless `--raw`.
fn shown(text: &str, raw: bool) -> String {
    if raw {
        text.to_owned()
    } else {
        terminal_safe(text).into_owned()
    }
}

/// Trailing words joined with spaces; an empty result is an error.
fn join_words(words: &[String], what: &str) -> Result<String> {
    let s = words.join(" ");
    if s.trim().is_empty() {
        return Err(CliError::other(format!("the {what} is empty")));
    }
    Ok(s)
}

/// Exit code of `run`/`send --wait` from how the stream ended.
fn turn_result(ctx: &mut Ctx<'_>, id: &str, end: End) -> Result<i32> {
    match end {
        End::State(TaskState::Completed, _) => Ok(0),
        End::State(TaskState::Interrupted, reason) => Err(CliError::other(format!(
            "task {id} was interrupted: {}",
            reason
                .as_deref()
                .unwrap_or("its agent process went away with its workspace")
        ))),
        End::State(TaskState::Cancelled, reason) => Err(CliError::other(match reason {
            Some(r) => format!("task {id} was cancelled: {r}"),
            None => format!("task {id} was cancelled"),
        })),
        End::State(_, reason) => Err(CliError::other(format!(
            "task {id} failed: {}",
            reason.as_deref().unwrap_or("no reason given")
        ))),
        End::Detached => {
            ctx.note(&format!(
                "detached; the task keeps running — berth task logs {id} -f"
            ));
            Ok(130)
        }
    }
}

// ---------------------------------------------------------------------------------------------
// Following the event stream

/// When following stops (besides Ctrl-C).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Until {
    /// The turn that the stream shows beginning is over: completed, interrupted, failed or
    /// cancelled.
    TurnOver,
    /// The task failed or was cancelled (a completed task may get follow-ups).
    Final,
}

#[derive(Debug, PartialEq)]
enum End {
    State(TaskState, Option<String>),
    /// Ctrl-C: the CLI stopped following; the task goes on.
    Detached,
}

struct FollowState {
    until: Until,
    /// Sequence number of the newest event shown.
    last: u64,
    /// The stream has shown a turn begin (a user message or a non-final state), so a
    /// `completed` ends this turn rather than being an earlier one's.
    begun: bool,
}

impl FollowState {
    fn stop(&mut self, kind: &EventKind) -> Option<End> {
        match kind {
            EventKind::Status { state, reason } if state.is_final() => {
                Some(End::State(*state, reason.clone()))
            }
            EventKind::Status {
                state: state @ (TaskState::Completed | TaskState::Interrupted),
                reason,
            } => (self.until == Until::TurnOver && self.begun)
                .then(|| End::State(*state, reason.clone())),
            EventKind::Status { .. } | EventKind::UserMessage { .. } => {
                self.begun = true;
                None
            }
            _ => None,
        }
    }
}

/// Streams a task's events after `after` until `until` (or Ctrl-C), reconnecting with
/// `after=<last seq>` when the connection drops.
async fn follow(
    client: &Client,
    ctx: &mut Ctx<'_>,
    task: &str,
    after: u64,
    until: Until,
    printer: &mut Printer,
) -> Result<End> {
    let mut interrupt = ctx.interrupt.listen()?;
    let mut st = FollowState {
        until,
        last: after,
        begun: false,
    };
    let res = follow_loop(client, ctx, task, &mut st, printer, &mut interrupt).await;
    let finished = printer.finish(ctx);
    let end = res?;
    finished?;
    Ok(end)
}

async fn follow_loop(
    client: &Client,
    ctx: &mut Ctx<'_>,
    task: &str,
    st: &mut FollowState,
    printer: &mut Printer,
    interrupt: &mut crate::InterruptListener,
) -> Result<End> {
    let mut failures = 0usize;
    loop {
        let path = format!("{}/events/stream?after={}", task_path(task), st.last);
        let resp = tokio::select! {
            r = client.get_event_stream(&path) => r,
            () = interrupt.recv() => return Ok(End::Detached),
        };
        let cause = match resp {
            Err(e) if !retryable(&e) => return Err(e),
            Err(e) => e.to_string(),
            Ok(mut resp) => {
                let mut sse = SseParser::default();
                loop {
                    let chunk = tokio::select! {
                        c = tokio::time::timeout(IDLE_TIMEOUT, resp.chunk()) => c,
                        () = interrupt.recv() => return Ok(End::Detached),
                    };
                    match chunk {
                        Ok(Ok(Some(bytes))) => {
                            failures = 0;
                            for ev in sse.push(&bytes) {
                                if let Some(end) = on_sse(ev, st, printer, ctx)? {
                                    return Ok(end);
                                }
                            }
                        }
                        Ok(Ok(None)) => break "the server closed the event stream".to_owned(),
                        Ok(Err(e)) => break client.stream_error(&e).to_string(),
                        Err(_) => {
                            break format!("no data for {}s", IDLE_TIMEOUT.as_secs());
                        }
                    }
                }
            }
        };
        let Some(ms) = BACKOFF_MS.get(failures) else {
            return Err(CliError::other(format!(
                "lost the event stream of task {task}: {cause} (the task keeps running; \
                 resume with: berth task logs {task} -f --after {})",
                st.last
            )));
        };
        failures += 1;
        tokio::select! {
            () = tokio::time::sleep(Duration::from_millis(*ms)) => {}
            () = interrupt.recv() => return Ok(End::Detached),
        }
    }
}

/// Whether connecting again may help: the server is unreachable, timed out or failed (5xx);
/// not when it refused the request (4xx).
fn retryable(e: &CliError) -> bool {
    match e {
        CliError::Api { status, .. } => *status == 0 || *status >= 500,
        CliError::Unreachable { .. } | CliError::Other(_) => true,
    }
}

/// Shows one SSE event unless it was shown already; `Some` when following should stop.
fn on_sse(
    ev: SseEvent,
    st: &mut FollowState,
    printer: &mut Printer,
    ctx: &mut Ctx<'_>,
) -> Result<Option<End>> {
    let Ok(v) = serde_json::from_str::<Value>(&ev.data) else {
        return Ok(None);
    };
    if v.get("error").is_some() {
        if let Ok(eb) = serde_json::from_value::<ErrorBody>(v.clone()) {
            return Err(CliError::Api {
                status: 0,
                code: eb.error.code,
                message: eb.error.message,
            });
        }
    }
    let seq = v
        .get("seq")
        .and_then(Value::as_u64)
        .or_else(|| ev.id.as_deref().and_then(|id| id.trim().parse().ok()));
    let Some(seq) = seq else {
        return Ok(None);
    };
    if seq <= st.last {
        return Ok(None);
    }
    st.last = seq;
    let raw = if ev.data.contains('\n') {
        v.to_string()
    } else {
        ev.data.trim().to_owned()
    };
    let decoded = printer.event(ctx, &raw, &v)?;
    Ok(decoded.and_then(|e| st.stop(&e.kind)))
}

/// One Server-Sent Event.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct SseEvent {
    pub id: Option<String>,
    pub event: Option<String>,
    pub data: String,
}

/// Incremental `text/event-stream` parser: `field: value` lines, events end at a blank line,
/// `:` lines are comments (keepalives), `data` lines of one event are joined with `\n`.
#[derive(Default)]
pub(crate) struct SseParser {
    buf: Vec<u8>,
    id: Option<String>,
    event: Option<String>,
    data: Vec<String>,
}

impl SseParser {
    pub fn push(&mut self, bytes: &[u8]) -> Vec<SseEvent> {
        self.buf.extend_from_slice(bytes);
        let mut out = Vec::new();
        while let Some(i) = self.buf.iter().position(|&b| b == b'\n') {
            let line: Vec<u8> = self.buf.drain(..=i).collect();
            let line = String::from_utf8_lossy(&line[..i]);
            let line = line.strip_suffix('\r').unwrap_or(&line);
            self.line(line, &mut out);
        }
        out
    }

    fn line(&mut self, line: &str, out: &mut Vec<SseEvent>) {
        if line.is_empty() {
            let event = self.event.take();
            let id = self.id.take();
            if !self.data.is_empty() {
                out.push(SseEvent {
                    id,
                    event,
                    data: std::mem::take(&mut self.data).join("\n"),
                });
            }
            return;
        }
        if line.starts_with(':') {
            return;
        }
        let (field, value) = match line.split_once(':') {
            Some((f, v)) => (f, v.strip_prefix(' ').unwrap_or(v)),
            None => (line, ""),
        };
        match field {
            "data" => self.data.push(value.to_owned()),
            "event" => self.event = Some(value.to_owned()),
            "id" => self.id = Some(value.to_owned()),
            _ => {}
        }
    }
}

// ---------------------------------------------------------------------------------------------
// Rendering events

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
    /// Agent-written strings are made [`terminal_safe`] before rendering unless `--raw` (JSON
    /// output escapes control characters itself and is printed as received).
    fn event(&mut self, ctx: &mut Ctx<'_>, raw: &str, v: &Value) -> Result<Option<TaskEvent>> {
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
    fn finish(&mut self, ctx: &mut Ctx<'_>) -> Result<()> {
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
            EventKind::Status { state, reason } => {
                let mut s = format!("[status] {state}");
                if let Some(r) = reason {
                    s.push_str(&format!(": {}", one_line(r)));
                }
                if *state == TaskState::Waiting {
                    s.push_str(&format!(
                        " (the agent waits for input: berth task send {} TEXT)",
                        self.task
                    ));
                }
                s + "\n"
            }
            EventKind::Session {
                agent_session_id,
                model,
            } => match model {
                Some(m) => format!("[session] {agent_session_id} (model {m})\n"),
                None => format!("[session] {agent_session_id}\n"),
            },
            EventKind::UserMessage { text } => {
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
            EventKind::ToolCall { name, input, .. } => match shell_command(input) {
                Some(cmd) => format!("$ {}\n", head_lines(&cmd, TOOL_OUTPUT_LINES, "")),
                None => match input {
                    Value::Null => format!("$ {name}\n"),
                    Value::Object(m) if m.is_empty() => format!("$ {name}\n"),
                    _ => format!(
                        "$ {name} {}\n",
                        truncate(&input.to_string(), TOOL_INPUT_CHARS)
                    ),
                },
            },
            EventKind::ToolResult {
                output,
                exit_code,
                is_error,
                ..
            } => {
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
            EventKind::FileChange { path, change } => format!("~ {path} ({change})\n"),
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

/// At most `max` characters, with `…` when cut.
fn truncate(s: &str, max: usize) -> String {
    if s.chars().count() <= max {
        return s.to_owned();
    }
    let mut t: String = s.chars().take(max.saturating_sub(1)).collect();
    t.push('…');
    t
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

// ---------------------------------------------------------------------------------------------
// List and show

/// A token count in a few characters: `950`, `12.3k`, `4.1M`.
pub(crate) fn count_short(n: u64) -> String {
    let f = |v: f64, suffix: &str| {
        let s = format!("{v:.1}");
        let s = s.strip_suffix(".0").unwrap_or(&s);
        format!("{s}{suffix}")
    };
    match n {
        0..1000 => n.to_string(),
        1000..999_950 => f(n as f64 / 1e3, "k"),
        _ => f(n as f64 / 1e6, "M"),
    }
}

pub(crate) fn task_table(list: &[Task]) -> String {
    let rows: Vec<Vec<String>> = list
        .iter()
        .map(|t| {
            vec![
                t.id.clone(),
                t.workspace.clone(),
                t.agent.clone(),
                t.state.clone(),
                format!(
                    "{}/{}",
                    count_short(t.usage.input_tokens),
                    count_short(t.usage.output_tokens)
                ),
                short_time(&t.created_at),
                truncate(&one_line(t.last_message.as_deref().unwrap_or("")), 48),
            ]
        })
        .collect();
    table(
        &[
            "ID",
            "WORKSPACE",
            "AGENT",
            "STATE",
            "TOKENS",
            "CREATED",
            "LAST MESSAGE",
        ],
        &rows,
    )
}

pub(crate) fn task_details(t: &Task) -> String {
    let mut kv: Vec<(&str, String)> = vec![
        ("id", t.id.clone()),
        ("workspace", t.workspace.clone()),
        ("agent", t.agent.clone()),
        (
            "model",
            t.model
                .clone()
                .unwrap_or_else(|| "(the agent's default)".into()),
        ),
        ("state", t.state.clone()),
    ];
    if let Some(r) = &t.reason {
        kv.push(("reason", one_line(r)));
    }
    kv.push(("dir", t.dir.clone()));
    if let Some(w) = &t.worktree {
        kv.push(("worktree", w.clone()));
    }
    kv.push(("prompt", truncate(&one_line(&t.prompt), 200)));
    kv.push(("created", short_time(&t.created_at)));
    kv.push(("updated", short_time(&t.updated_at)));
    kv.push((
        "tokens",
        format!(
            "in {}, out {}, cached {}",
            t.usage.input_tokens, t.usage.output_tokens, t.usage.cached_input_tokens
        ),
    ));
    if let Some(c) = t.usage.cost_usd {
        kv.push(("cost", format!("${c:.4}")));
    }
    if let Some(m) = &t.last_message {
        kv.push(("last message", truncate(&one_line(m), 300)));
    }
    if let Some(s) = &t.agent_session_id {
        kv.push(("agent session", s.clone()));
    }
    kv.push(("events", t.last_seq.to_string()));
    key_values(&kv)
}
