//! Runs each driver's invocation with the real agent CLI (from /opt/agent-clis/bin) against the
//! scripted mock LLM: a first turn (shell tool call writing hello.txt, then "DONE") and a
//! follow-up that resumes the agent's own session. Also: each CLI calls a real stdio MCP server
//! (the notes server of `berth_test_support::mcp_notes`) declared in the spec's `mcp_servers`.
//!
//! Skipped (with a message) when the CLI is not installed.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::Duration;

use berth_agents::{driver, Agent, EventKind, Invocation, TurnSpec};
use berth_test_support::mock_llm::MockLlm;
use tokio::io::{AsyncBufReadExt, AsyncReadExt, BufReader};

const CLI_DIR: &str = "/opt/agent-clis/bin";
const KEY: &str = "vk-real-cli-test";
const FIRST_PROMPT: &str =
    "Create hello.txt by running a shell command, then say DONE. [turn-1-marker]";

struct Turn {
    lines: Vec<String>,
    events: Vec<EventKind>,
    status: std::process::ExitStatus,
    stderr: String,
}

/// What the daemon does: write the files (0600), run with exactly `env`, stdin from /dev/null,
/// and feed each stdout line to the driver. A long-lived driver's process gets the turn's
/// protocol lines on stdin (and answers to what it asks: `approve` decides its permission
/// requests); stdin is closed once the turn ended, so it exits.
async fn run_turn(inv: &Invocation, agent: Agent, spec: Option<&TurnSpec>, approve: bool) -> Turn {
    for (path, content) in &inv.files {
        std::fs::create_dir_all(path.parent().unwrap()).unwrap();
        std::fs::write(path, content).unwrap();
        std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o600)).unwrap();
    }
    let env = inv.env.iter().map(|(k, v)| {
        if k == "PATH" {
            (k.clone(), format!("{CLI_DIR}:{v}"))
        } else {
            (k.clone(), v.clone())
        }
    });
    let mut d = driver(agent);
    let long_lived = d.long_lived();
    assert_eq!(inv.stdin.is_some(), long_lived);
    let mut child = tokio::process::Command::new(Path::new(CLI_DIR).join(&inv.program))
        .args(&inv.args)
        .env_clear()
        .envs(env)
        .current_dir(&inv.cwd)
        .stdin(if long_lived {
            Stdio::piped()
        } else {
            Stdio::null()
        })
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .unwrap();
    let mut stdout = BufReader::new(child.stdout.take().unwrap()).lines();
    let mut stderr_pipe = child.stderr.take().unwrap();
    let stderr_task = tokio::spawn(async move {
        let mut s = String::new();
        let _ = stderr_pipe.read_to_string(&mut s).await;
        s
    });
    let mut stdin = child.stdin.take();
    let mut events = Vec::new();
    let mut lines = Vec::new();
    let read = async {
        use tokio::io::AsyncWriteExt;
        if let (Some(w), Some(spec)) = (stdin.as_mut(), spec) {
            for l in d.begin_turn(spec) {
                w.write_all(format!("{l}\n").as_bytes()).await.unwrap();
            }
        }
        while let Some(line) = stdout.next_line().await.unwrap() {
            let evs = d.parse_line(&line);
            let mut out = d.take_output();
            for e in &evs {
                if let EventKind::ApprovalRequest { request } = e {
                    out.extend(d.answer(&request.id, approve, "not now"));
                }
            }
            events.extend(evs);
            lines.push(line);
            if let Some(w) = stdin.as_mut() {
                for l in out {
                    w.write_all(format!("{l}\n").as_bytes()).await.unwrap();
                }
            }
            if d.take_turn_end().is_some() {
                // The turn is over: closing stdin ends the process (the daemon kills what is left
                // of its group; here the process itself, when its MCP servers keep it alive).
                stdin = None;
                break;
            }
        }
    };
    tokio::time::timeout(Duration::from_secs(180), read)
        .await
        .unwrap_or_else(|_| panic!("{agent} turn timed out; events so far"));
    let status = match tokio::time::timeout(Duration::from_secs(10), child.wait()).await {
        Ok(status) => status.unwrap(),
        Err(_) => {
            child.kill().await.unwrap();
            child.wait().await.unwrap();
            // Killed after its turn: not the CLI's failure.
            std::os::unix::process::ExitStatusExt::from_raw(0)
        }
    };
    let stderr = stderr_task.await.unwrap();
    Turn {
        lines,
        events,
        status,
        stderr,
    }
}

fn spec(agent: Agent, dir: &Path, gateway_url: String) -> TurnSpec {
    let cwd = dir.join("repo");
    let home = dir.join("home");
    let task_dir = dir.join("task");
    for d in [&cwd, &home, &task_dir.join("tmp")] {
        std::fs::create_dir_all(d).unwrap();
    }
    TurnSpec {
        agent,
        prompt: FIRST_PROMPT.into(),
        model: None,
        cwd,
        home,
        task_dir,
        gateway_url,
        virtual_key: KEY.into(),
        resume: None,
        approval: berth_agents::ApprovalPolicy::Never,
        mcp_servers: Vec::new(),
    }
}

fn session_id(events: &[EventKind]) -> Option<String> {
    events.iter().find_map(|e| match e {
        EventKind::Session {
            agent_session_id, ..
        } => Some(agent_session_id.clone()),
        _ => None,
    })
}

fn check_turn(agent: Agent, turn: &Turn) {
    let ctx = || {
        format!(
            "{agent}: {:#?}\nstatus {:?}\nstderr:\n{}",
            turn.events, turn.status, turn.stderr
        )
    };
    assert!(turn.status.success(), "{}", ctx());
    let ev = &turn.events;
    let pos = |pred: &dyn Fn(&EventKind) -> bool| ev.iter().position(pred);
    let session = pos(&|e| matches!(e, EventKind::Session { .. }));
    let call = pos(&|e| matches!(e, EventKind::ToolCall { .. }));
    let result = pos(&|e| {
        matches!(
            e,
            EventKind::ToolResult {
                is_error: false,
                ..
            }
        )
    });
    let done = pos(&|e| matches!(e, EventKind::Message { text } if text.trim() == "DONE"));
    let completed = pos(&|e| matches!(e, EventKind::TurnCompleted { .. }));
    let usage = pos(&|e| matches!(e, EventKind::Usage { output_tokens, .. } if *output_tokens > 0));
    for (name, p) in [
        ("Session", session),
        ("ToolCall", call),
        ("ToolResult", result),
        ("Message DONE", done),
        ("Usage", usage),
        ("TurnCompleted", completed),
    ] {
        assert!(p.is_some(), "no {name}: {}", ctx());
    }
    assert!(
        session < call && call < result && result < done && done < completed,
        "order: {}",
        ctx()
    );
    assert_eq!(
        ev.iter()
            .filter(|e| matches!(e, EventKind::TurnCompleted { .. }))
            .count(),
        1,
        "{}",
        ctx()
    );
    assert!(
        !ev.iter().any(|e| matches!(e, EventKind::Error { .. })),
        "unexpected Error: {}",
        ctx()
    );
    // The last event of the turn is TurnCompleted.
    assert!(
        matches!(ev.last(), Some(EventKind::TurnCompleted { .. })),
        "{}",
        ctx()
    );
}

async fn two_turns(agent: Agent) {
    let cli = Path::new(CLI_DIR).join(agent.program());
    if !cli.exists() {
        eprintln!("skipping {agent}: {} not installed", cli.display());
        return;
    }
    let mock = MockLlm::start().await;
    let dir = tempfile::tempdir().unwrap();
    let mut s = spec(agent, dir.path(), mock.url());
    let d = driver(agent);

    let inv = d.invocation(&s);
    let first = run_turn(&inv, agent, Some(&s), true).await;
    check_turn(agent, &first);
    let hello: PathBuf = s.cwd.join("hello.txt");
    assert_eq!(
        std::fs::read_to_string(&hello)
            .map(|s| s.trim().to_owned())
            .ok(),
        Some("hi".to_owned()),
        "{agent}: hello.txt"
    );
    let reqs = mock.requests();
    assert!(!reqs.is_empty());
    for r in &reqs {
        let auth = r.headers.iter().any(|(_, v)| v.contains(KEY));
        assert!(
            auth,
            "{agent}: request without the virtual key: {} {:?}",
            r.path, r.headers
        );
    }
    let n_first = reqs.len();

    // Follow-up: resume the agent's own session; the conversation must carry the first prompt.
    let id = session_id(&first.events).unwrap();
    if agent == Agent::Gemini {
        // Gemini CLI 0.61's `session/load` first starts a fresh recording named
        // `session-<UTC minute>-<id prefix>.jsonl`: in the minute the session started that is the
        // session's own file, which it then resets (the load finds no conversation). A new
        // process in a later minute is fine (docs/tasks.md).
        let secs = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .as_secs();
        tokio::time::sleep(Duration::from_secs(61 - secs % 60)).await;
    }
    std::fs::remove_file(&hello).unwrap();
    s.resume = Some(id.clone());
    s.prompt = "--follow-up: did it work? [turn-2-marker]".into();
    let inv = d.invocation(&s);
    let second = run_turn(&inv, agent, Some(&s), true).await;
    check_turn(agent, &second);
    let later = &mock.requests()[n_first..];
    assert!(
        later.iter().any(|r| {
            let body = r.body.to_string();
            body.contains("turn-1-marker") && body.contains("turn-2-marker")
        }),
        "{agent}: no follow-up request carries both prompts: {:#?}",
        later.iter().map(|r| &r.path).collect::<Vec<_>>()
    );
    if let Some(id2) = session_id(&second.events) {
        assert_eq!(id2, id, "{agent}: resumed into another session");
    }
    // BERTH_AGENTS_RECORD=DIR saves the stdout of both turns (fixture material).
    if let Some(out) = std::env::var_os("BERTH_AGENTS_RECORD") {
        let out = PathBuf::from(out);
        std::fs::create_dir_all(&out).unwrap();
        for (n, t) in [(1, &first), (2, &second)] {
            let text = t.lines.join("\n") + "\n";
            std::fs::write(out.join(format!("{agent}-turn{n}.jsonl")), text).unwrap();
            let events: Vec<String> = t
                .events
                .iter()
                .map(|e| serde_json::to_string(e).unwrap())
                .collect();
            std::fs::write(
                out.join(format!("{agent}-turn{n}.events")),
                events.join("\n") + "\n",
            )
            .unwrap();
        }
    }
    eprintln!(
        "{agent}: turn 1 {} events, turn 2 {} events, {} requests; turn-1 stderr:\n{}",
        first.events.len(),
        second.events.len(),
        mock.requests().len(),
        first.stderr
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn claude_real() {
    two_turns(Agent::Claude).await;
}

#[tokio::test(flavor = "multi_thread")]
async fn codex_real() {
    two_turns(Agent::Codex).await;
}

#[tokio::test(flavor = "multi_thread")]
async fn gemini_real() {
    two_turns(Agent::Gemini).await;
}

#[tokio::test(flavor = "multi_thread")]
async fn opencode_real() {
    two_turns(Agent::Opencode).await;
}

/// The driver's MCP configuration works with the real CLI: the scripted model calls the
/// declared server's tool, and the server (a real Node.js process) records the call.
async fn mcp_call(agent: Agent) {
    use berth_test_support::mcp_notes;
    use berth_test_support::mock_llm::{MCP_MARKER, MCP_TOOL_SUFFIX};
    let cli = Path::new(CLI_DIR).join(agent.program());
    if !cli.exists() {
        eprintln!("skipping {agent}: {} not installed", cli.display());
        return;
    }
    let mock = MockLlm::start().await;
    let dir = tempfile::tempdir().unwrap();
    let server = dir.path().join("notes.js");
    std::fs::write(&server, mcp_notes::SOURCE).unwrap();
    let notes = dir.path().join("notes.jsonl");
    let mut s = spec(agent, dir.path(), mock.url());
    let decl = mcp_notes::declaration(
        "notes",
        server.to_str().unwrap(),
        notes.to_str().unwrap(),
        "tag-1",
    );
    s.mcp_servers = vec![serde_json::from_value(decl).unwrap()];
    s.prompt = format!("Record a note. {MCP_MARKER}from-{agent}");
    let turn = run_turn(&driver(agent).invocation(&s), agent, Some(&s), true).await;
    let recorded = std::fs::read_to_string(&notes).unwrap_or_default();
    assert_eq!(
        recorded,
        format!("{{\"server\":\"notes\",\"text\":\"from-{agent}\",\"env\":\"tag-1\"}}\n"),
        "{agent}: {:#?}\nstderr:\n{}",
        turn.events,
        turn.stderr
    );
    assert!(turn.status.success(), "{agent}: {}", turn.stderr);
    assert!(
        turn.events.iter().any(|e| matches!(e,
            EventKind::ToolCall { name, .. } if name.ends_with(MCP_TOOL_SUFFIX))),
        "{agent}: {:#?}",
        turn.events
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn claude_calls_an_mcp_server() {
    mcp_call(Agent::Claude).await;
}

#[tokio::test(flavor = "multi_thread")]
async fn codex_calls_an_mcp_server() {
    mcp_call(Agent::Codex).await;
}

#[tokio::test(flavor = "multi_thread")]
async fn gemini_calls_an_mcp_server() {
    mcp_call(Agent::Gemini).await;
}

#[tokio::test(flavor = "multi_thread")]
async fn opencode_calls_an_mcp_server() {
    mcp_call(Agent::Opencode).await;
}

/// The command permission requests of `agent`'s turns asking for `cmd` with the mock's shell
/// call.
fn asked(events: &[EventKind], cmd: &str) -> usize {
    events
        .iter()
        .filter(|e| {
            matches!(e, EventKind::ApprovalRequest { request }
            if request.kind == berth_domain::ApprovalKind::Command
                && request.command.as_deref().is_some_and(|c| c.contains(cmd)))
        })
        .count()
}

/// Two `on-request` turns of `agent` with the real CLI against `mock`: the shell call asks once;
/// approved, it runs; rejected, it does not and the turn still completes.
async fn approved_then_rejected(agent: Agent, mock: &MockLlm) {
    for approve in [true, false] {
        let dir = tempfile::tempdir().unwrap();
        let mut s = spec(agent, dir.path(), mock.url());
        s.approval = berth_agents::ApprovalPolicy::OnRequest;
        let turn = run_turn(&driver(agent).invocation(&s), agent, Some(&s), approve).await;
        assert_eq!(
            asked(&turn.events, "echo hi > hello.txt"),
            1,
            "{:#?}\n{}",
            turn.events,
            turn.stderr
        );
        assert_eq!(
            s.cwd.join("hello.txt").exists(),
            approve,
            "{:#?}",
            turn.events
        );
        assert!(
            matches!(turn.events.last(), Some(EventKind::TurnCompleted { .. })),
            "{:#?}",
            turn.events
        );
    }
}

/// Codex's permission requests through its app-server protocol, with the real CLI: under
/// `on-request` the shell call waits for an answer; approved, it runs; declined, it does not
/// and the turn still completes (the model is told the command was rejected, and why).
#[tokio::test(flavor = "multi_thread")]
async fn codex_asks_and_is_answered() {
    let agent = Agent::Codex;
    if !Path::new(CLI_DIR).join(agent.program()).exists() {
        eprintln!("skipping {agent}: not installed");
        return;
    }
    let mock = MockLlm::start().await;
    approved_then_rejected(agent, &mock).await;
    // Codex's own word for the decline, and berth's reason steered in after it.
    let seen = |text: &str| {
        mock.requests()
            .iter()
            .any(|r| r.body.to_string().contains(text))
    };
    assert!(seen("rejected by user"), "the model was told of the denial");
    assert!(
        seen("[berth] The request was denied: not now"),
        "the model was told the reason"
    );
}

/// Gemini CLI and OpenCode over ACP, with the real CLI: under `on-request` the shell call asks;
/// approved, it runs; rejected, it does not and the turn still completes. Under `always` even a
/// read-only command (`ls`) asks.
async fn acp_asks_and_is_answered(agent: Agent) {
    use berth_test_support::mock_llm::Script;
    if !Path::new(CLI_DIR).join(agent.program()).exists() {
        eprintln!("skipping {agent}: not installed");
        return;
    }
    approved_then_rejected(agent, &MockLlm::start().await).await;
    let mock = MockLlm::start_with(Script {
        shell_command: "ls".into(),
        ..Script::default()
    })
    .await;
    let dir = tempfile::tempdir().unwrap();
    let mut s = spec(agent, dir.path(), mock.url());
    s.approval = berth_agents::ApprovalPolicy::Always;
    let turn = run_turn(&driver(agent).invocation(&s), agent, Some(&s), true).await;
    assert_eq!(asked(&turn.events, "ls"), 1, "{:#?}", turn.events);
    assert!(
        turn.events.iter().any(|e| matches!(
            e,
            EventKind::ToolResult {
                is_error: false,
                ..
            }
        )),
        "{:#?}",
        turn.events
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn gemini_asks_and_is_answered() {
    acp_asks_and_is_answered(Agent::Gemini).await;
}

#[tokio::test(flavor = "multi_thread")]
async fn opencode_asks_and_is_answered() {
    acp_asks_and_is_answered(Agent::Opencode).await;
}
