//! Interactive agent sessions end to end: each real agent CLI's own TUI in a persistent terminal
//! session of a real workspace, driven through the attach WebSocket like a person at a
//! terminal (the test answers the terminal queries a real terminal answers), reaching the
//! scripted mock LLM only through berth's gateway with a per-session key. Also: taking a
//! finished task over interactively, and the key dying with its session.

use std::time::Duration;

use berth_test_support::agents::{self, server_with_llm, upstream_text, REAL_KEYS};
use berth_test_support::mock_llm::{MockLlm, Script};
use berth_test_support::{ensure_image, eventually, TestServer, Ws};
use futures_util::{SinkExt, StreamExt};
use serde_json::{json, Value};
use tokio_tungstenite::tungstenite::Message;

use crate::bin;

const TURN: Duration = Duration::from_secs(240);
const FINAL: &str = "FINISHED-OK-7";

async fn server_with(mock: &MockLlm) -> TestServer {
    server_with_llm(bin(), mock, Vec::new()).await
}

async fn wait_turn_over(s: &TestServer, id: &str) -> Value {
    agents::wait_turn_over(s, id, TURN).await
}

fn script(file: &str) -> Script {
    Script {
        shell_command: format!("echo hi > {file}"),
        final_text: FINAL.into(),
        ..Script::default()
    }
}

/// A terminal on an attach WebSocket: collects the screen output and answers the queries a real
/// terminal answers (cursor position, colours, device attributes, keyboard protocol), which
/// some TUIs wait for before they draw.
pub(super) struct Term {
    ws: Ws,
    raw: Vec<u8>,
}

impl Term {
    pub(super) async fn open(s: &TestServer, ws: &str, session: &str) -> Term {
        let ws = s
            .ws(&format!(
                "/api/v1/workspaces/{ws}/sessions/{session}/attach?cols=120&rows=40"
            ))
            .await;
        Term {
            ws,
            raw: Vec::new(),
        }
    }

    /// The output so far without escape sequences.
    fn text(&self) -> String {
        strip_ansi(&String::from_utf8_lossy(&self.raw))
    }

    async fn answer(&mut self, chunk: &[u8]) {
        let replies: [(&[u8], &[u8]); 5] = [
            (b"\x1b[6n", b"\x1b[1;1R"),
            (b"\x1b]10;?", b"\x1b]10;rgb:ffff/ffff/ffff\x1b\\"),
            (b"\x1b]11;?", b"\x1b]11;rgb:0000/0000/0000\x1b\\"),
            (b"\x1b[c", b"\x1b[?62;22c"),
            (b"\x1b[?u", b"\x1b[?0u"),
        ];
        for (query, reply) in replies {
            if chunk.windows(query.len()).any(|w| w == query) {
                let _ = self.ws.send(Message::Binary(reply.to_vec())).await;
            }
        }
    }

    /// Reads until `done` holds for the text seen so far (whitespace removed), or panics.
    pub(super) async fn until(
        &mut self,
        what: &str,
        timeout: Duration,
        done: impl Fn(&str) -> bool,
    ) {
        let deadline = tokio::time::Instant::now() + timeout;
        loop {
            let squeezed: String = self.text().split_whitespace().collect();
            if done(&squeezed) {
                return;
            }
            let next = tokio::time::timeout_at(deadline, self.ws.next()).await;
            match next {
                Ok(Some(Ok(Message::Binary(b)))) => {
                    self.answer(&b).await;
                    self.raw.extend_from_slice(&b);
                }
                Ok(Some(Ok(_))) => {}
                _ => panic!(
                    "terminal: no {what} within {timeout:?}; screen so far:\n{}\nraw tail: {:?}",
                    tail(&self.text(), 4000),
                    tail(&String::from_utf8_lossy(&self.raw), 1500)
                ),
            }
        }
    }

    /// Reads until nothing new arrived for `quiet` (the TUI has drawn itself).
    pub(super) async fn settle(&mut self, quiet: Duration, max: Duration) {
        let end = tokio::time::Instant::now() + max;
        while tokio::time::Instant::now() < end {
            match tokio::time::timeout(quiet, self.ws.next()).await {
                Ok(Some(Ok(Message::Binary(b)))) => {
                    self.answer(&b).await;
                    self.raw.extend_from_slice(&b);
                }
                Ok(Some(Ok(_))) => {}
                Ok(_) => return,
                Err(_) if self.raw.len() > 500 => return,
                Err(_) => {}
            }
        }
    }

    /// Reads for up to `time`; true as soon as `done()` holds.
    async fn pump_for(&mut self, time: Duration, done: impl Fn() -> bool) -> bool {
        let end = tokio::time::Instant::now() + time;
        while tokio::time::Instant::now() < end {
            if done() {
                return true;
            }
            if let Ok(Some(Ok(Message::Binary(b)))) =
                tokio::time::timeout(Duration::from_millis(300), self.ws.next()).await
            {
                self.answer(&b).await;
                self.raw.extend_from_slice(&b);
            }
        }
        done()
    }

    /// Types a prompt like a person: the text, a look that it arrived, a pause, then Enter —
    /// again if the agent did not take it (a TUI may take a fast Enter for part of a paste).
    pub(super) async fn submit(&mut self, mock: &MockLlm, text: &str, marker: &str) {
        self.ws
            .send(Message::Binary(text.as_bytes().to_vec()))
            .await
            .unwrap();
        let squeezed: String = marker.split_whitespace().collect();
        self.until("the typed prompt", TURN, |t| t.contains(&squeezed))
            .await;
        self.settle(Duration::from_millis(1500), Duration::from_secs(5))
            .await;
        for _ in 0..3 {
            self.ws.send(Message::Binary(b"\r".to_vec())).await.unwrap();
            let sent = || upstream_text(mock).contains(marker);
            if self.pump_for(Duration::from_secs(20), sent).await {
                return;
            }
        }
        panic!(
            "the agent never sent the prompt upstream; screen:\n{}",
            tail(&self.text(), 4000)
        );
    }
}

fn tail(s: &str, n: usize) -> &str {
    let start = s.len().saturating_sub(n);
    let start = (start..s.len())
        .find(|i| s.is_char_boundary(*i))
        .unwrap_or(s.len());
    &s[start..]
}

/// Removes CSI, OSC, DCS/APC and two-byte escape sequences.
fn strip_ansi(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    let mut chars = s.chars().peekable();
    while let Some(c) = chars.next() {
        if c != '\x1b' {
            out.push(c);
            continue;
        }
        match chars.next() {
            Some('[') => {
                for c in chars.by_ref() {
                    if ('\x40'..='\x7e').contains(&c) {
                        break;
                    }
                }
            }
            Some(']' | 'P' | '_' | '^') => {
                while let Some(c) = chars.next() {
                    if c == '\x07' {
                        break;
                    }
                    if c == '\x1b' {
                        chars.next();
                        break;
                    }
                }
            }
            _ => {}
        }
        // A cursor move may stand where a space was.
        out.push(' ');
    }
    out
}

/// What shows that each TUI is ready for input.
pub(super) fn ready_marker(agent: &str) -> Option<&'static str> {
    match agent {
        "claude" => Some("bypasspermissionson"),
        "codex" => Some("AskCodex"),
        "gemini" => Some("Typeyourmessage"),
        // "Ask anything" is the empty prompt's placeholder; the mode label shows either way.
        "opencode" => Some("Build"),
        _ => None,
    }
}

/// The environment variable an agent's key is in, and a request the gateway accepts with it.
fn key_probe(agent: &str) -> (&'static str, &'static str, &'static str, &'static str) {
    match agent {
        "claude" => (
            "ANTHROPIC_API_KEY",
            "x-api-key",
            "http://127.0.0.1:7788/anthropic/v1/messages",
            r#"{"model":"claude-x","max_tokens":5,"messages":[{"role":"user","content":"ping"}]}"#,
        ),
        "gemini" => (
            "GEMINI_API_KEY",
            "x-goog-api-key",
            "http://127.0.0.1:7788/gemini/v1beta/models/gemini-2.5-pro:generateContent",
            r#"{"contents":[{"role":"user","parts":[{"text":"ping"}]}]}"#,
        ),
        _ => (
            "BERTH_VIRTUAL_KEY",
            "authorization",
            "http://127.0.0.1:7788/openai/v1/chat/completions",
            r#"{"model":"m","messages":[{"role":"user","content":"ping"}]}"#,
        ),
    }
}

/// The agent's key, read from its process's environment as any code in the workspace could.
async fn agent_key(s: &TestServer, ws: &str, var: &str) -> String {
    let script = format!(
        "for p in /proc/[0-9]*; do tr '\\0' '\\n' < $p/environ 2>/dev/null; done | grep '^{var}=' | head -1 | cut -d= -f2-"
    );
    let out = s.exec(ws, &["sh", "-c", &script]).await;
    let key = out["stdout"].as_str().unwrap_or_default().trim().to_owned();
    assert!(!key.is_empty(), "no {var} in the workspace: {out}");
    key
}

/// The gateway's status for one call with `key`, by curl inside the workspace.
async fn gateway_status(s: &TestServer, ws: &str, agent: &str, key: &str) -> u16 {
    let (_, header, url, body) = key_probe(agent);
    let value = if header == "authorization" {
        format!("Bearer {key}")
    } else {
        key.to_owned()
    };
    let out = s
        .exec(
            ws,
            &[
                "curl",
                "-s",
                "-o",
                "/dev/null",
                "-w",
                "%{http_code}",
                "-H",
                &format!("{header}: {value}"),
                "-H",
                "content-type: application/json",
                "--data-binary",
                body,
                url,
            ],
        )
        .await;
    out["stdout"]
        .as_str()
        .unwrap_or("0")
        .trim()
        .parse()
        .unwrap_or(0)
}

/// One interactive session of a real agent CLI: a prompt typed into its TUI runs the scripted
/// tool and shows the final text; the usage is recorded for the session; its key dies with it.
async fn interactive_round_trip(agent: &str) {
    ensure_image().await;
    let file = format!("isession-{agent}.txt");
    let mock = MockLlm::start_with(script(&file)).await;
    let s = server_with(&mock).await;
    s.create_workspace(json!({"name": "isess", "memory": "2g", "pids": 2048}))
        .await;
    // cmd and agent together: refused.
    let (st, err) = s
        .call(
            "POST",
            "/api/v1/workspaces/isess/sessions",
            Some(json!({"agent": agent, "cmd": ["bash"]})),
        )
        .await;
    assert_eq!(
        (st, err["error"]["code"].as_str()),
        (400, Some("invalid_argument"))
    );
    let (st, sess) = s
        .call(
            "POST",
            "/api/v1/workspaces/isess/sessions",
            Some(json!({"agent": agent, "cols": 120, "rows": 40})),
        )
        .await;
    assert_eq!(st, 201, "{sess}\n{}", s.log());
    assert_eq!(sess["name"], agent);
    assert_eq!(sess["agent"], agent);
    let agent_session = sess["agent_session"].as_str().unwrap().to_owned();

    let mut term = Term::open(&s, "isess", agent).await;
    match ready_marker(agent) {
        Some(m) => {
            term.until("the TUI's prompt", TURN, |t| t.contains(m))
                .await
        }
        None => term.settle(Duration::from_secs(8), TURN).await,
    }
    // Drawn is not always listening yet: let it finish starting.
    term.settle(Duration::from_secs(2), Duration::from_secs(10))
        .await;
    let marker = format!("{agent}-isession-turn");
    term.submit(
        &mock,
        &format!("Please run the scripted tool ({marker})"),
        &marker,
    )
    .await;
    term.until("the final text", TURN, |t| t.contains(FINAL))
        .await;
    // The scripted tool ran in the workspace before the final answer.
    let out = s
        .exec("isess", &["cat", &format!("/home/agent/{file}")])
        .await;
    assert_eq!(out["stdout"], "hi\n", "{out}");

    // Usage recorded for the session.
    let usage = s
        .get(&format!("/api/v1/usage?session={agent_session}"))
        .await;
    assert!(
        usage["total"]["calls"].as_u64().unwrap_or(0) >= 1,
        "{usage}"
    );
    assert!(
        usage["total"]["input_tokens"].as_u64().unwrap_or(0) > 0,
        "{usage}"
    );
    let grouped = s.get("/api/v1/usage?group_by=session").await;
    assert!(
        grouped["rows"]
            .as_array()
            .unwrap()
            .iter()
            .any(|r| r["session"] == agent_session.as_str()),
        "{grouped}"
    );

    // The key lives with the session and dies when it is removed.
    let (var, ..) = key_probe(agent);
    let key = agent_key(&s, "isess", var).await;
    assert!(!REAL_KEYS.iter().any(|(_, k)| key.contains(k)));
    assert_eq!(gateway_status(&s, "isess", agent, &key).await, 200);
    let (st, _) = s
        .call(
            "DELETE",
            &format!("/api/v1/workspaces/isess/sessions/{agent}"),
            None,
        )
        .await;
    assert_eq!(st, 204);
    assert_eq!(gateway_status(&s, "isess", agent, &key).await, 401);
}

#[tokio::test]
async fn claude_interactive_session_through_the_gateway() {
    interactive_round_trip("claude").await;
}

#[tokio::test]
async fn codex_interactive_session_through_the_gateway() {
    interactive_round_trip("codex").await;
}

#[tokio::test]
async fn gemini_interactive_session_through_the_gateway() {
    interactive_round_trip("gemini").await;
}

#[tokio::test]
async fn opencode_interactive_session_through_the_gateway() {
    interactive_round_trip("opencode").await;
}

/// A finished task of `agent` continues interactively (its own conversation resumed in its
/// TUI): the upstream sees the earlier turn in the interactive turn's request, and the next
/// headless turn carries the interactive one; messages wait (409) while the session is open; a
/// task whose turn runs cannot be taken over (409).
async fn take_over(agent: &str) {
    ensure_image().await;
    let mock = MockLlm::start_with(script("takeover.txt")).await;
    let s = server_with(&mock).await;
    s.create_workspace(json!({"name": "takeover", "memory": "2g", "pids": 2048}))
        .await;
    let (st, task) = s
        .call(
            "POST",
            "/api/v1/tasks",
            Some(json!({"workspace": "takeover", "agent": agent,
                "prompt": format!("Run the tool ({agent}-headless-first-turn)")})),
        )
        .await;
    assert_eq!(st, 201, "{task}");
    let id = task["id"].as_str().unwrap().to_owned();
    let done = wait_turn_over(&s, &id).await;
    assert_eq!(done["state"], "completed", "{done}\n{}", s.log());

    let (st, sess) = s
        .call("POST", &format!("/api/v1/tasks/{id}/attach"), None)
        .await;
    assert_eq!(st, 201, "{sess}\n{}", s.log());
    assert_eq!(sess["task"], id.as_str());
    let name = sess["name"].as_str().unwrap().to_owned();
    // A second take-over, or a message, while it is open: 409 task_interactive.
    let (st, err) = s
        .call("POST", &format!("/api/v1/tasks/{id}/attach"), None)
        .await;
    assert_eq!(
        (st, err["error"]["code"].as_str()),
        (409, Some("task_interactive")),
        "{err}"
    );
    let (st, err) = s
        .call(
            "POST",
            &format!("/api/v1/tasks/{id}/messages"),
            Some(json!({"text": "not now"})),
        )
        .await;
    assert_eq!(
        (st, err["error"]["code"].as_str()),
        (409, Some("task_interactive")),
        "{err}"
    );

    let before = mock.requests().len();
    let mut term = Term::open(&s, "takeover", &name).await;
    let ready = ready_marker(agent).unwrap_or("");
    term.until("the TUI's prompt", TURN, |t| t.contains(ready))
        .await;
    term.settle(Duration::from_secs(2), Duration::from_secs(10))
        .await;
    let marker = format!("{agent}-interactive-second-turn");
    term.submit(&mock, &format!("And continue here ({marker})"), &marker)
        .await;
    term.until("the final text", TURN, |t| {
        t.matches(FINAL).count() >= 1 && t.contains("interactive-second-turn")
    })
    .await;
    let later = eventually(TURN, "the interactive turn upstream", || async {
        let bodies: Vec<String> = mock.requests()[before..]
            .iter()
            .map(|r| r.body.to_string())
            .filter(|b| b.contains(&marker))
            .collect();
        (!bodies.is_empty()).then_some(bodies)
    })
    .await;
    assert!(
        later
            .iter()
            .any(|b| b.contains(&format!("{agent}-headless-first-turn"))),
        "the interactive turn carries the task's earlier turn: {later:#?}"
    );

    // The session ends: messages are taken again.
    let (st, _) = s
        .call(
            "DELETE",
            &format!("/api/v1/workspaces/takeover/sessions/{name}"),
            None,
        )
        .await;
    assert_eq!(st, 204);
    let (st, t) = s
        .call(
            "POST",
            &format!("/api/v1/tasks/{id}/messages"),
            Some(json!({"text": "Back to headless (SLOW)"})),
        )
        .await;
    assert_eq!(st, 200, "{t}");
    // The headless turn goes on from the conversation, the interactive turn included.
    let headless = || {
        mock.requests()
            .iter()
            .map(|r| r.body.to_string())
            .filter(|b| b.contains("Back to headless"))
            .collect::<Vec<_>>()
    };
    let deadline = tokio::time::Instant::now() + TURN;
    while headless().is_empty() && tokio::time::Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    let back = headless();
    if back.is_empty() {
        let t = s.get(&format!("/api/v1/tasks/{id}")).await;
        let evs = s.get(&format!("/api/v1/tasks/{id}/events")).await;
        panic!("the headless turn never reached the upstream: {t}\n{evs:#}");
    }
    assert!(back.iter().any(|b| b.contains(&marker)), "{back:#?}");
    // Its turn runs (held open by the mock): no take-over now.
    eventually(TURN, "the turn to run", || async {
        let t = s.get(&format!("/api/v1/tasks/{id}")).await;
        (t["state"] == "running").then_some(())
    })
    .await;
    let (st, err) = s
        .call("POST", &format!("/api/v1/tasks/{id}/attach"), None)
        .await;
    assert_eq!(
        (st, err["error"]["code"].as_str()),
        (409, Some("task_turn_running")),
        "{err}"
    );
    let (st, _) = s
        .call("POST", &format!("/api/v1/tasks/{id}/cancel"), None)
        .await;
    assert_eq!(st, 200);
}

#[tokio::test]
async fn a_finished_claude_task_is_taken_over_interactively() {
    take_over("claude").await;
}

/// Codex resumes a task's thread interactively, but afterwards `codex exec resume` of that
/// thread fails ("already has an active writer", seen whether the TUI was quit or killed), which
/// would fail the task: a codex task is not taken over (422 `takeover_unsupported`).
#[tokio::test]
async fn a_codex_task_is_not_taken_over() {
    ensure_image().await;
    let mock = MockLlm::start_with(script("takeover.txt")).await;
    let s = server_with(&mock).await;
    s.create_workspace(json!({"name": "takeover", "memory": "2g", "pids": 2048}))
        .await;
    let (st, task) = s
        .call(
            "POST",
            "/api/v1/tasks",
            Some(json!({"workspace": "takeover", "agent": "codex", "prompt": "Run the tool"})),
        )
        .await;
    assert_eq!(st, 201, "{task}");
    let id = task["id"].as_str().unwrap().to_owned();
    assert_eq!(wait_turn_over(&s, &id).await["state"], "completed");
    let (st, err) = s
        .call("POST", &format!("/api/v1/tasks/{id}/attach"), None)
        .await;
    assert_eq!(
        (st, err["error"]["code"].as_str()),
        (422, Some("takeover_unsupported")),
        "{err}"
    );
    // The task goes on headless as before.
    let (st, t) = s
        .call(
            "POST",
            &format!("/api/v1/tasks/{id}/messages"),
            Some(json!({"text": "go on"})),
        )
        .await;
    assert_eq!(st, 200, "{t}");
    assert_eq!(wait_turn_over(&s, &id).await["state"], "completed");
}

#[tokio::test]
async fn a_finished_gemini_task_is_taken_over_interactively() {
    take_over("gemini").await;
}

#[tokio::test]
async fn a_finished_opencode_task_is_taken_over_interactively() {
    take_over("opencode").await;
}
