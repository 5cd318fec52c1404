//! `berth task …` against a fake server that scripts tasks' event streams.

use std::collections::HashMap;
use std::convert::Infallible;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::body::Body;
use axum::extract::{Path as AxPath, Query, RawQuery, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use futures_util::StreamExt;
use serde_json::{json, Value};

use super::{authorized, err, run_full, Outcome, TOKEN};
use crate::commands::task::printer::{shell_command, Printer};
use crate::commands::task::{count_short, task_details, task_table};
use crate::stream::SseParser;

// ---------------------------------------------------------------------------------------------
// Rendering and parsing units

#[test]
fn sse_parser_handles_split_chunks_comments_and_multiline_data() {
    let mut p = SseParser::default();
    assert!(p.push(b": keepalive\n\nid: 1\nevent: sta").is_empty());
    let evs = p.push(b"tus\ndata: {\"seq\":1}\r\n\r\ndata: a\ndata:b\n\n");
    assert_eq!(evs.len(), 2);
    assert_eq!(evs[0].id.as_deref(), Some("1"));
    assert_eq!(evs[0].event.as_deref(), Some("status"));
    assert_eq!(evs[0].data, "{\"seq\":1}");
    assert_eq!(evs[1].id, None);
    assert_eq!(evs[1].data, "a\nb");
    // An event without data is not dispatched; an unfinished one waits.
    assert!(p.push(b"event: x\n\ndata: half").is_empty());
}

fn kind(v: Value) -> berth_domain::EventKind {
    let mut v = v;
    v["seq"] = json!(1);
    v["at"] = json!("2024-05-01T12:00:00Z");
    serde_json::from_value::<berth_api::TaskEvent>(v)
        .unwrap()
        .kind
}

#[test]
fn rendering_status_messages_and_deltas() {
    let mut p = Printer::new("tsk_1", false, false, false);
    let mut r = |v: Value| p.render(&kind(v));
    assert_eq!(
        r(json!({"type":"status","state":"failed","reason":"boom\nbang"})),
        "[status] failed: boom bang\n"
    );
    assert_eq!(
        r(json!({"type":"status","state":"waiting"})),
        "[status] waiting (the agent waits for a decision: berth task approve tsk_1 / berth task deny tsk_1)\n"
    );
    assert_eq!(
        r(json!({"type":"user_message","text":"a\n\nb"})),
        "> a\n>\n> b\n"
    );
    // Deltas inline; the full message only completes the line.
    assert_eq!(r(json!({"type":"message_delta","text":"Hel"})), "Hel");
    assert_eq!(r(json!({"type":"message_delta","text":"lo"})), "lo");
    assert_eq!(
        r(json!({"type":"message","text":"Hello there"})),
        " there\n"
    );
    // Another event interrupts deltas on a new line; the message then shows only the rest.
    assert_eq!(r(json!({"type":"message_delta","text":"Par"})), "Par");
    assert_eq!(
        r(json!({"type":"file_change","path":"src/a.rs","change":"update"})),
        "\n~ src/a.rs (update)\n"
    );
    assert_eq!(r(json!({"type":"message","text":"Part two"})), "t two\n");
    // Deltas that differ from the message: the message is shown whole.
    assert_eq!(r(json!({"type":"message_delta","text":"xyz"})), "xyz");
    assert_eq!(r(json!({"type":"message","text":"abc"})), "\nabc\n");
    // The turn's result is not repeated when it is the last message.
    assert_eq!(r(json!({"type":"turn_completed","result":"abc"})), "");
    assert_eq!(
        r(json!({"type":"turn_completed","result":"summary"})),
        "summary\n"
    );
}

#[test]
fn rendering_tools_usage_and_diagnostics() {
    let mut p = Printer::new("tsk_1", false, false, false);
    let mut r = |v: Value| p.render(&kind(v));
    assert_eq!(
        r(json!({"type":"reasoning","text":"hmm\nlet me think"})),
        "(thinking) hmm let me think\n"
    );
    assert_eq!(
        r(json!({"type":"tool_call","call_id":"c","name":"Read","input":{"file_path":"/x"}})),
        "$ Read {\"file_path\":\"/x\"}\n"
    );
    assert_eq!(
        r(
            json!({"type":"tool_call","call_id":"c","name":"shell","input":{"command":["bash","-lc","ls -la"]}})
        ),
        "$ ls -la\n"
    );
    let long: Vec<String> = (1..=25).map(|i| format!("line {i}")).collect();
    let out = r(
        json!({"type":"tool_result","call_id":"c","output":long.join("\n"),"exit_code":2,"is_error":true}),
    );
    assert!(out.starts_with("  line 1\n  line 2\n"), "{out}");
    assert!(
        out.ends_with("  line 20\n  … (5 more lines)\n  [error, exit 2]\n"),
        "{out}"
    );
    assert_eq!(
        r(json!({"type":"tool_result","call_id":"c","output":"","is_error":false})),
        ""
    );
    assert_eq!(
        r(
            json!({"type":"usage","input_tokens":5,"output_tokens":6,"cached_input_tokens":7,"cost_usd":0.5})
        ),
        "[usage] in 5 out 6 cached 7 cost $0.5000\n"
    );
    assert_eq!(
        r(json!({"type":"error","message":"rate limited"})),
        "[error] rate limited\n"
    );
    assert_eq!(
        r(json!({"type":"session","agent_session_id":"s1","model":"m"})),
        "[session] s1 (model m)\n"
    );
    assert_eq!(r(json!({"type":"log","line":"debug"})), "");
    assert_eq!(r(json!({"type":"raw","data":{"a":1}})), "");

    let mut p = Printer::new("tsk_1", false, true, false);
    assert_eq!(
        p.render(&kind(json!({"type":"log","line":"debug"}))),
        "[log] debug\n"
    );
    assert_eq!(
        p.render(&kind(json!({"type":"raw","data":{"a":1}}))),
        "[raw] {\"a\":1}\n"
    );
}

#[test]
fn shell_commands_and_counts() {
    assert_eq!(
        shell_command(&json!({"command": "cargo test"})).as_deref(),
        Some("cargo test")
    );
    assert_eq!(
        shell_command(&json!({"command": ["git", "status"]})).as_deref(),
        Some("git status")
    );
    assert_eq!(shell_command(&json!({"path": "x"})), None);
    assert_eq!(count_short(950), "950");
    assert_eq!(count_short(12_345), "12.3k");
    assert_eq!(count_short(12_000), "12k");
    assert_eq!(count_short(4_100_000), "4.1M");
}

// ---------------------------------------------------------------------------------------------
// A fake server

fn task_json(id: &str, state: &str, last_seq: u64) -> Value {
    json!({
        "id": id, "workspace": "acme/web", "workspace_id": "ws_1", "agent": "claude",
        "state": state, "model": "sonnet", "dir": "/home/agent/src", "prompt": "fix the tests",
        "created_at": "2024-05-01T12:00:00.123Z", "updated_at": "2024-05-01T12:05:00Z",
        "last_seq": last_seq,
        "usage": {"input_tokens": 12345, "output_tokens": 678, "cached_input_tokens": 9000, "cost_usd": 0.0421},
        "last_message": "All green.\nEverything passes now, including the flaky integration test.",
        "agent_session_id": "sess-1"
    })
}

fn ev(seq: u64, body: Value) -> Value {
    let mut v = body;
    v["seq"] = json!(seq);
    v["at"] = json!("2024-05-01T12:00:00Z");
    v
}

/// The stored events of each fake task.
fn script(task: &str) -> Vec<Value> {
    match task {
        "tsk_ok" | "tsk_drop" => vec![
            ev(1, json!({"type":"status","state":"queued"})),
            ev(2, json!({"type":"user_message","text":"fix the tests"})),
            ev(3, json!({"type":"status","state":"running"})),
            ev(
                4,
                json!({"type":"tool_call","call_id":"c1","name":"Bash","input":{"command":"cargo test"}}),
            ),
            ev(
                5,
                json!({"type":"tool_result","call_id":"c1","output":"ok\n2 passed\n","exit_code":0,"is_error":false}),
            ),
            ev(6, json!({"type":"message_delta","text":"All "})),
            ev(7, json!({"type":"message_delta","text":"green."})),
            ev(8, json!({"type":"message","text":"All green."})),
            ev(
                9,
                json!({"type":"usage","input_tokens":100,"output_tokens":20,"cached_input_tokens":50}),
            ),
            ev(10, json!({"type":"turn_completed","result":"All green."})),
            ev(11, json!({"type":"status","state":"completed"})),
            // A follow-up turn.
            ev(12, json!({"type":"user_message","text":"thanks"})),
            ev(13, json!({"type":"status","state":"running"})),
            ev(14, json!({"type":"message","text":"You're welcome."})),
            ev(15, json!({"type":"status","state":"completed"})),
        ],
        "tsk_fail" => vec![
            ev(1, json!({"type":"status","state":"starting"})),
            ev(2, json!({"type":"status","state":"running"})),
            ev(3, json!({"type":"error","message":"rate limited"})),
            ev(
                4,
                json!({"type":"status","state":"failed","reason":"the agent exited with code 1"}),
            ),
        ],
        // Agent text aimed at the operator's terminal: clipboard write (OSC 52), screen clear,
        // a title change and a carriage-return overwrite.
        "tsk_evil" => vec![
            ev(
                1,
                json!({"type":"message","text":"done\u{1b}]52;c;cm0gLXJmIH4=\u{7}\u{1b}[2J\u{1b}]0;pwned\u{7} ok\rX"}),
            ),
            ev(
                2,
                json!({"type":"tool_call","call_id":"c1","name":"Bash","input":{"command":"ls \u{1b}[8mhidden"}}),
            ),
        ],
        "tsk_hang" => vec![
            ev(1, json!({"type":"status","state":"starting"})),
            ev(2, json!({"type":"status","state":"running"})),
            ev(3, json!({"type":"message_delta","text":"Working"})),
        ],
        _ => Vec::new(),
    }
}

/// What the run of `tsk_ok` up to its first `completed` prints.
const OK_TURN: &str = "[status] queued\n\
> fix the tests\n\
[status] running\n\
$ cargo test\n  ok\n  2 passed\n  [exit 0]\n\
All green.\n\
[usage] in 100 out 20 cached 50\n\
[status] completed\n";

#[derive(Clone, Default)]
struct TaskSeen {
    /// `task:after` of each event-stream connection.
    streams: Arc<Mutex<Vec<String>>>,
    /// Query strings of `GET …/events` and `GET /tasks`.
    queries: Arc<Mutex<Vec<String>>>,
    /// Bodies of the POSTs.
    bodies: Arc<Mutex<Vec<Value>>>,
}

fn task_app(seen: TaskSeen) -> Router {
    Router::new()
        .route("/api/v1/tasks", post(create_task).get(list_tasks))
        .route("/api/v1/tasks/{task}", get(get_task))
        .route("/api/v1/tasks/{task}/messages", post(send_message))
        .route(
            "/api/v1/tasks/{task}/cancel",
            post(|AxPath(t): AxPath<String>| async move { Json(task_json(&t, "cancelled", 4)) }),
        )
        .route("/api/v1/tasks/{task}/events", get(task_events))
        .route("/api/v1/tasks/{task}/events/stream", get(task_stream))
        .with_state(seen)
}

async fn create_task(h: HeaderMap, State(seen): State<TaskSeen>, Json(b): Json<Value>) -> Response {
    if !authorized(&h) {
        return err(StatusCode::UNAUTHORIZED, "unauthorized", "invalid token");
    }
    seen.bodies.lock().unwrap().push(b.clone());
    let prompt = b["prompt"].as_str().unwrap_or_default();
    let id = ["fail", "drop", "hang"]
        .into_iter()
        .find(|k| prompt.contains(k))
        .map_or("tsk_ok".to_owned(), |k| format!("tsk_{k}"));
    (StatusCode::CREATED, Json(task_json(&id, "queued", 0))).into_response()
}

async fn list_tasks(State(seen): State<TaskSeen>, RawQuery(q): RawQuery) -> Response {
    seen.queries.lock().unwrap().push(q.unwrap_or_default());
    let mut other = task_json("tsk_2", "failed", 4);
    other["last_message"] = Value::Null;
    other["agent"] = json!("codex");
    other["usage"]["input_tokens"] = json!(999);
    other["usage"]["output_tokens"] = json!(1_500_000);
    Json(json!([task_json("tsk_ok", "completed", 11), other])).into_response()
}

async fn get_task(AxPath(t): AxPath<String>) -> Response {
    if script(&t).is_empty() {
        return err(
            StatusCode::NOT_FOUND,
            "not_found",
            &format!("task {t} not found"),
        );
    }
    Json(task_json(&t, "completed", 11)).into_response()
}

async fn send_message(
    State(seen): State<TaskSeen>,
    AxPath(t): AxPath<String>,
    Json(b): Json<Value>,
) -> Response {
    seen.bodies.lock().unwrap().push(b);
    if t == "tsk_fail" {
        return err(
            StatusCode::CONFLICT,
            "invalid_state",
            "task tsk_fail has failed; start a new task",
        );
    }
    Json(task_json(&t, "running", 11)).into_response()
}

async fn task_events(
    h: HeaderMap,
    State(seen): State<TaskSeen>,
    AxPath(t): AxPath<String>,
    RawQuery(raw): RawQuery,
    Query(q): Query<HashMap<String, u64>>,
) -> Response {
    if !authorized(&h) {
        return err(StatusCode::UNAUTHORIZED, "unauthorized", "invalid token");
    }
    seen.queries.lock().unwrap().push(raw.unwrap_or_default());
    let after = q.get("after").copied().unwrap_or(0);
    // The server caps pages at 2 events, whatever the client asks for.
    let limit = q.get("limit").copied().unwrap_or(10_000).min(2) as usize;
    let page: Vec<Value> = script(&t)
        .into_iter()
        .filter(|e| e["seq"].as_u64().unwrap() > after)
        .take(limit)
        .collect();
    Json(page).into_response()
}

/// SSE: the events after `after`, then open (keepalives only) — except that `tsk_drop`'s first
/// connection breaks off in the middle of event 4 and `tsk_fail`'s stream ends.
async fn task_stream(
    h: HeaderMap,
    State(seen): State<TaskSeen>,
    AxPath(t): AxPath<String>,
    Query(q): Query<HashMap<String, u64>>,
) -> Response {
    if !authorized(&h) {
        return err(StatusCode::UNAUTHORIZED, "unauthorized", "invalid token");
    }
    if h.get("accept").and_then(|v| v.to_str().ok()) != Some("text/event-stream") {
        return err(
            StatusCode::BAD_REQUEST,
            "invalid_argument",
            "not an SSE request",
        );
    }
    let after = q.get("after").copied().unwrap_or(0);
    seen.streams.lock().unwrap().push(format!("{t}:{after}"));
    let mut chunks: Vec<String> = vec![": keepalive\n\n".into()];
    let drop_now = t == "tsk_drop" && after == 0;
    for e in script(&t) {
        let seq = e["seq"].as_u64().unwrap();
        if seq <= after {
            continue;
        }
        let text = format!(
            "id: {seq}\nevent: {}\ndata: {e}\n\n",
            e["type"].as_str().unwrap()
        );
        if drop_now && seq == 4 {
            chunks.push(text[..text.len() / 2].to_owned());
            break;
        }
        // Split each event over two writes.
        let (a, b) = text.split_at(text.len() / 2);
        chunks.push(a.to_owned());
        chunks.push(b.to_owned());
    }
    let head = futures_util::stream::iter(chunks.into_iter().map(Ok::<_, Infallible>));
    let body = if drop_now || t == "tsk_fail" {
        Body::from_stream(head)
    } else {
        Body::from_stream(head.chain(futures_util::stream::pending()))
    };
    ([("content-type", "text/event-stream")], body).into_response()
}

async fn serve_tasks(seen: TaskSeen) -> String {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move {
        let _ = axum::serve(listener, task_app(seen)).await;
    });
    format!("http://{addr}")
}

/// Runs `berth ARGS --url URL --token T` (flags before any `--`); `interrupt` is Ctrl-C.
async fn run_task(url: &str, args: &[&str], interrupt: Arc<tokio::sync::Notify>) -> Outcome {
    let mut all: Vec<&str> = args.to_vec();
    let at = all.iter().position(|a| *a == "--").unwrap_or(all.len());
    all.splice(at..at, ["--url", url, "--token", TOKEN]);
    run_full(&all, b"", None, interrupt).await
}

async fn run_t(url: &str, args: &[&str]) -> Outcome {
    run_task(url, args, Arc::default()).await
}

/// A Ctrl-C after `ms` milliseconds.
fn ctrl_c_after(ms: u64) -> Arc<tokio::sync::Notify> {
    let n = Arc::new(tokio::sync::Notify::new());
    let n2 = n.clone();
    tokio::spawn(async move {
        tokio::time::sleep(Duration::from_millis(ms)).await;
        n2.notify_one();
    });
    n
}

// ---------------------------------------------------------------------------------------------
// Commands

#[tokio::test]
async fn task_run_streams_until_the_turn_completes() {
    let seen = TaskSeen::default();
    let url = serve_tasks(seen.clone()).await;
    let o = run_t(
        &url,
        &[
            "task",
            "run",
            "acme/web",
            "--agent",
            "claude",
            "--model",
            "sonnet",
            "--worktree",
            "fix-1",
            "--",
            "fix",
            "the",
            "tests",
        ],
    )
    .await;
    assert_eq!(o.code, 0, "{}", o.err);
    assert_eq!(o.out, OK_TURN);
    assert_eq!(o.err, "task tsk_ok: claude in acme/web (Ctrl-C detaches)\n");
    assert_eq!(
        seen.bodies.lock().unwrap().clone(),
        vec![json!({
            "workspace": "acme/web", "agent": "claude", "prompt": "fix the tests",
            "model": "sonnet", "worktree": "fix-1"
        })]
    );
    assert_eq!(seen.streams.lock().unwrap().clone(), vec!["tsk_ok:0"]);
}

#[tokio::test]
async fn task_run_failed_exits_1_with_the_reason() {
    let url = serve_tasks(TaskSeen::default()).await;
    let o = run_t(
        &url,
        &[
            "task", "run", "w", "--agent", "codex", "--", "make", "it", "fail",
        ],
    )
    .await;
    assert_eq!(o.code, 1);
    assert_eq!(
        o.out,
        "[status] starting\n[status] running\n[error] rate limited\n[status] failed: the agent exited with code 1\n"
    );
    assert!(
        o.err
            .ends_with("error: task tsk_fail failed: the agent exited with code 1\n"),
        "{}",
        o.err
    );
}

#[tokio::test]
async fn task_run_json_prints_the_events_in_order() {
    let url = serve_tasks(TaskSeen::default()).await;
    let o = run_t(
        &url,
        &[
            "task", "run", "w", "--agent", "claude", "--json", "--", "go",
        ],
    )
    .await;
    assert_eq!(o.code, 0, "{}", o.err);
    assert_eq!(o.err, "");
    let want: Vec<String> = script("tsk_ok")
        .into_iter()
        .take(11)
        .map(|e| e.to_string())
        .collect();
    let got: Vec<&str> = o.out.lines().collect();
    assert_eq!(got, want);

    let o = run_t(
        &url,
        &[
            "task", "run", "w", "--agent", "claude", "--json", "--", "fail",
        ],
    )
    .await;
    assert_eq!(o.code, 1);
    assert_eq!(o.out.lines().count(), 4, "{}", o.out);
    assert_eq!(
        o.err,
        "error: task tsk_fail failed: the agent exited with code 1\n"
    );
}

#[tokio::test]
async fn task_run_reconnects_after_a_dropped_stream_without_gaps_or_repeats() {
    let seen = TaskSeen::default();
    let url = serve_tasks(seen.clone()).await;
    let o = run_t(
        &url,
        &["task", "run", "w", "--agent", "claude", "--", "drop"],
    )
    .await;
    assert_eq!(o.code, 0, "{}", o.err);
    assert_eq!(o.out, OK_TURN);
    assert_eq!(
        seen.streams.lock().unwrap().clone(),
        vec!["tsk_drop:0", "tsk_drop:3"]
    );

    let seen = TaskSeen::default();
    let url = serve_tasks(seen.clone()).await;
    let o = run_t(
        &url,
        &[
            "task", "run", "w", "--agent", "claude", "--json", "--", "drop",
        ],
    )
    .await;
    assert_eq!(o.code, 0, "{}", o.err);
    let seqs: Vec<u64> = o
        .out
        .lines()
        .map(|l| {
            serde_json::from_str::<Value>(l).unwrap()["seq"]
                .as_u64()
                .unwrap()
        })
        .collect();
    assert_eq!(seqs, (1..=11).collect::<Vec<_>>());
}

#[tokio::test]
async fn task_run_detach_prints_the_id_and_ctrl_c_detaches() {
    let seen = TaskSeen::default();
    let url = serve_tasks(seen.clone()).await;
    let o = run_t(
        &url,
        &["task", "run", "w", "--agent", "gemini", "-d", "--", "go"],
    )
    .await;
    assert_eq!(o.code, 0, "{}", o.err);
    assert_eq!(o.out, "tsk_ok\n");
    assert_eq!(o.err, "");
    assert!(seen.streams.lock().unwrap().is_empty());

    let o = run_t(
        &url,
        &[
            "task", "run", "w", "--agent", "gemini", "-d", "--json", "--", "go",
        ],
    )
    .await;
    let v: Value = serde_json::from_str(&o.out).unwrap();
    assert_eq!(v["id"], "tsk_ok");

    let o = run_task(
        &url,
        &["task", "run", "w", "--agent", "claude", "--", "hang"],
        ctrl_c_after(300),
    )
    .await;
    assert_eq!(o.code, 130, "{}", o.err);
    assert_eq!(o.out, "[status] starting\n[status] running\nWorking\n");
    assert!(
        o.err
            .ends_with("detached; the task keeps running — berth task logs tsk_hang -f\n"),
        "{}",
        o.err
    );

    let o = run_t(&url, &["task", "run", "w", "--agent", "claude", "--", " "]).await;
    assert_eq!(o.code, 1);
    assert_eq!(o.err, "error: the prompt is empty\n");
}

#[tokio::test]
async fn task_logs_pages_through_the_events() {
    let seen = TaskSeen::default();
    let url = serve_tasks(seen.clone()).await;
    let o = run_t(&url, &["task", "logs", "tsk_ok"]).await;
    assert_eq!(o.code, 0, "{}", o.err);
    assert_eq!(
        o.out,
        format!("{OK_TURN}> thanks\n[status] running\nYou're welcome.\n[status] completed\n")
    );
    let queries = seen.queries.lock().unwrap().clone();
    let want: Vec<String> = [0, 2, 4, 6, 8, 10, 12, 14, 15]
        .iter()
        .map(|a| format!("after={a}&limit=1000"))
        .collect();
    assert_eq!(queries, want);

    let o = run_t(&url, &["task", "logs", "tsk_ok", "--after", "11", "--json"]).await;
    assert_eq!(o.code, 0, "{}", o.err);
    let seqs: Vec<u64> = o
        .out
        .lines()
        .map(|l| {
            serde_json::from_str::<Value>(l).unwrap()["seq"]
                .as_u64()
                .unwrap()
        })
        .collect();
    assert_eq!(seqs, vec![12, 13, 14, 15]);

    let o = run_t(&url, &["task", "logs", "nope"]).await;
    assert_eq!(o.code, 0, "an unknown task has no events here: {}", o.err);
}

/// Fails without the sanitising: the escape sequences reach stdout as they came.
#[tokio::test]
async fn task_logs_strip_terminal_control_sequences_unless_raw() {
    let url = serve_tasks(TaskSeen::default()).await;
    let o = run_t(&url, &["task", "logs", "tsk_evil"]).await;
    assert_eq!(o.code, 0, "{}", o.err);
    assert_eq!(o.out, "done okX\n$ ls hidden\n");
    assert!(!o.out.contains('\u{1b}') && !o.out.contains('\r') && !o.out.contains('\u{7}'));
    let o = run_t(&url, &["task", "logs", "tsk_evil", "--raw"]).await;
    assert!(o.out.contains("\u{1b}]52;c;"), "{:?}", o.out);
    // JSON output carries the text escaped, as JSON does.
    let o = run_t(&url, &["task", "logs", "tsk_evil", "--json"]).await;
    assert!(!o.out.contains('\u{1b}'), "{:?}", o.out);
    assert!(o.out.contains("\\u001b]52"), "{:?}", o.out);
}

#[tokio::test]
async fn task_logs_follow_stops_at_failure_or_ctrl_c() {
    let seen = TaskSeen::default();
    let url = serve_tasks(seen.clone()).await;
    // A completed task may get follow-ups: keep following until Ctrl-C, then exit 0.
    let o = run_task(
        &url,
        &["task", "logs", "tsk_ok", "-f", "--after", "10"],
        ctrl_c_after(300),
    )
    .await;
    assert_eq!(o.code, 0, "{}", o.err);
    assert_eq!(
        o.out,
        "[status] completed\n> thanks\n[status] running\nYou're welcome.\n[status] completed\n"
    );
    assert_eq!(o.err, "");
    assert_eq!(seen.streams.lock().unwrap().clone(), vec!["tsk_ok:10"]);

    // A failed task: the stream ends at its final state.
    let o = run_t(&url, &["task", "logs", "tsk_fail", "--follow"]).await;
    assert_eq!(o.code, 0, "{}", o.err);
    assert!(
        o.out
            .ends_with("[status] failed: the agent exited with code 1\n"),
        "{}",
        o.out
    );
}

#[tokio::test]
async fn task_send_and_wait() {
    let seen = TaskSeen::default();
    let url = serve_tasks(seen.clone()).await;
    let o = run_t(&url, &["task", "send", "tsk_ok", "--", "thanks"]).await;
    assert_eq!(o.code, 0, "{}", o.err);
    assert_eq!(o.out, "sent to tsk_ok\n");
    assert!(seen.streams.lock().unwrap().is_empty());

    let o = run_t(&url, &["task", "send", "tsk_ok", "--wait", "--", "thanks"]).await;
    assert_eq!(o.code, 0, "{}", o.err);
    assert_eq!(
        o.out,
        "sent to tsk_ok\n> thanks\n[status] running\nYou're welcome.\n[status] completed\n"
    );
    // The turn's events start after the newest event before the message.
    assert_eq!(seen.streams.lock().unwrap().clone(), vec!["tsk_ok:11"]);
    assert_eq!(
        seen.bodies.lock().unwrap().last().cloned(),
        Some(json!({"text": "thanks"}))
    );

    let o = run_t(&url, &["task", "send", "tsk_fail", "--", "more"]).await;
    assert_eq!(o.code, 1);
    assert_eq!(
        o.err,
        "error: task tsk_fail has failed; start a new task (invalid_state)\n"
    );
}

#[tokio::test]
async fn task_list_show_and_cancel() {
    let seen = TaskSeen::default();
    let url = serve_tasks(seen.clone()).await;
    let o = run_t(
        &url,
        &[
            "task",
            "list",
            "--workspace",
            "acme/web",
            "--state",
            "completed",
        ],
    )
    .await;
    assert_eq!(o.code, 0, "{}", o.err);
    assert_eq!(
        o.out,
        "ID      WORKSPACE  AGENT   STATE      TOKENS     CREATED               LAST MESSAGE\n\
         tsk_ok  acme/web   claude  completed  12.3k/678  2024-05-01T12:00:00Z  All green. Everything passes now, including the…\n\
         tsk_2   acme/web   codex   failed     999/1.5M   2024-05-01T12:00:00Z\n"
    );
    assert_eq!(
        seen.queries.lock().unwrap().clone(),
        vec!["workspace=acme%2Fweb&state=completed"]
    );
    let o = run_t(&url, &["task", "list", "--json"]).await;
    let v: Value = serde_json::from_str(&o.out).unwrap();
    assert_eq!(v.as_array().unwrap().len(), 2);

    let o = run_t(&url, &["task", "show", "tsk_ok"]).await;
    assert_eq!(o.code, 0, "{}", o.err);
    assert_eq!(
        o.out,
        "id:            tsk_ok\n\
         workspace:     acme/web\n\
         agent:         claude\n\
         model:         sonnet\n\
         state:         completed\n\
         dir:           /home/agent/src\n\
         prompt:        fix the tests\n\
         created:       2024-05-01T12:00:00Z\n\
         updated:       2024-05-01T12:05:00Z\n\
         tokens:        in 12345, out 678, cached 9000\n\
         cost:          $0.0421\n\
         last message:  All green. Everything passes now, including the flaky integration test.\n\
         agent session: sess-1\n\
         events:        11\n"
    );
    let o = run_t(&url, &["task", "show", "nope"]).await;
    assert_eq!(o.code, 1);
    assert_eq!(o.err, "error: task nope not found (not_found)\n");

    let o = run_t(&url, &["task", "cancel", "tsk_ok"]).await;
    assert_eq!(o.code, 0, "{}", o.err);
    assert_eq!(o.out, "cancelled tsk_ok\n");
}

#[test]
fn details_and_table_of_a_minimal_task() {
    let mut v = task_json("t", "failed", 0);
    for k in ["model", "last_message", "agent_session_id"] {
        v[k] = Value::Null;
    }
    v["reason"] = json!("workspace stopped");
    v["usage"] = json!({"input_tokens": 0, "output_tokens": 0, "cached_input_tokens": 0});
    let t: berth_api::Task = serde_json::from_value(v).unwrap();
    let d = task_details(&t);
    assert!(d.contains("model:     (the agent's default)\n"), "{d}");
    assert!(d.contains("reason:    workspace stopped\n"), "{d}");
    assert!(d.contains("cost:      -\n"), "{d}");
    assert!(task_table(std::slice::from_ref(&t)).contains("0/0"));
    // A server that sums the gateway's calls: exact cost, calls, the fallback flag, and the
    // agent's own figures apart.
    let mut t = t;
    t.usage = serde_json::from_value(json!({"calls": 2, "input_tokens": 40, "output_tokens": 20,
        "cached_input_tokens": 0, "cost": "0.00056", "cost_usd": 0.00056, "fallback_calls": 1,
        "agent_reported": {"input_tokens": 80, "output_tokens": 40, "cached_input_tokens": 0, "cost_usd": 0.0008}}))
    .unwrap();
    let d = task_details(&t);
    assert!(
        d.contains("tokens:         in 40, out 20, cached 0 (2 LLM calls)\n"),
        "{d}"
    );
    assert!(
        d.contains("cost:           $0.00056 (1 call at the fallback price: no price table lists the model)\n"),
        "{d}"
    );
    assert!(
        d.contains(
            "agent reported: in 80, out 40, cached 0, $0.000800 (informational, not billed)\n"
        ),
        "{d}"
    );
}

#[test]
fn rendering_approvals() {
    let mut p = Printer::new("tsk_1", false, false, false);
    let mut r = |v: Value| p.render(&kind(v));
    assert_eq!(
        r(json!({"type":"approval_request","id":"r1","kind":"file_edit","tool":"Write",
            "summary":"write /w/a.txt","path":"/w/a.txt","diff":"+hi\n","input":{},
            "reason":"because\nso","risks":["network"]})),
        "[approval] r1 asks: write /w/a.txt (file_edit)\n  why: because so\n  risks: network\n  +hi\n"
    );
    assert_eq!(
        r(
            json!({"type":"approval_resolved","id":"r1","decision":"denied","by":"timeout","reason":"late"})
        ),
        "[approval] r1 denied by timeout: late\n"
    );
}
