//! A codex task keeps its `codex app-server` process between turns: a follow-up runs on the
//! warm process (no new process, no extra model request), the idle process is reaped after
//! `BERTH_AGENT_IDLE_SECONDS`, and the next turn starts a new process that resumes the thread.
//! Real codex CLI in a real workspace, against the scripted mock LLM. The same scenario serves
//! the ACP agents ([`follow_ups_on_the_warm_process`], `suite::acp_resume`).

use std::collections::BTreeSet;
use std::time::Duration;

use berth_test_support::mock_llm::MockLlm;
use berth_test_support::{ensure_image, eventually, ServerOptions, TestServer};
use serde_json::{json, Value};

use crate::bin;

const TURN: Duration = Duration::from_secs(180);
const IDLE_SECS: u64 = 4;

/// The pids of the processes in the workspace whose command line matches the shell `case`
/// pattern `pattern` (written so that it does not match the shell that looks for them, e.g.
/// `*ap[p]-server*`).
async fn app_servers(s: &TestServer, pattern: &str) -> BTreeSet<String> {
    let script = format!(
        r#"for p in /proc/[0-9]*; do c=$(tr '\0' ' ' < $p/cmdline 2>/dev/null); case "$c" in {pattern}) echo ${{p#/proc/}};; esac; done"#
    );
    let out = s.exec("warm", &["sh", "-c", &script]).await;
    out["stdout"]
        .as_str()
        .unwrap_or_default()
        .lines()
        .map(str::to_owned)
        .collect()
}

async fn turn_over(s: &TestServer, id: &str) -> Value {
    eventually(TURN, "the turn to end", || async {
        let t = s.get(&format!("/api/v1/tasks/{id}")).await;
        matches!(
            t["state"].as_str(),
            Some("completed" | "failed" | "cancelled")
        )
        .then_some(t)
    })
    .await
}

async fn send(s: &TestServer, id: &str, text: &str) -> Value {
    let (st, t) = s
        .call(
            "POST",
            &format!("/api/v1/tasks/{id}/messages"),
            Some(json!({ "text": text })),
        )
        .await;
    assert_eq!(st, 200, "{t}");
    let done = turn_over(s, id).await;
    assert_eq!(done["state"], "completed", "{done}\n{}", s.log());
    done
}

#[tokio::test]
async fn codex_follow_ups_run_on_the_warm_process_which_is_reaped_when_idle() {
    // The npm wrapper and the native binary.
    follow_ups_on_the_warm_process("codex", "*ap[p]-server*").await;
}

/// Three turns of an `agent` task whose protocol process matches `pattern` (see
/// [`app_servers`]): the first starts the process, the second runs on it warm, the idle
/// process is reaped, the third resumes the conversation in a new one; then a cancel stops it.
pub(crate) async fn follow_ups_on_the_warm_process(agent: &str, pattern: &str) {
    ensure_image().await;
    let mock = MockLlm::start().await;
    let mut env = vec![("BERTH_AGENT_IDLE_SECONDS".to_owned(), IDLE_SECS.to_string())];
    env.push(("BERTH_OPENAI_BASE_URL".to_owned(), mock.url()));
    env.push((
        "BERTH_OPENAI_API_KEY".to_owned(),
        "real-openai-key".to_owned(),
    ));
    let s = TestServer::start_with(
        bin(),
        ServerOptions {
            env,
            ..Default::default()
        },
    )
    .await;
    s.create_workspace(json!({"name": "warm", "memory": "2g", "pids": 2048}))
        .await;
    s.exec("warm", &["mkdir", "-p", "/home/agent/w"]).await;
    let (st, t) = s
        .call(
            "POST",
            "/api/v1/tasks",
            Some(
                json!({"workspace": "warm", "agent": agent, "dir": "/home/agent/w",
                "prompt": "Create hello.txt [turn-1-marker]"}),
            ),
        )
        .await;
    assert_eq!(st, 201, "{t}");
    let id = t["id"].as_str().unwrap().to_owned();
    let done = turn_over(&s, &id).await;
    assert_eq!(done["state"], "completed", "{done}\n{}", s.log());
    let first = app_servers(&s, pattern).await;
    assert!(!first.is_empty(), "the process is kept after the turn");

    // A follow-up on the warm process: the same process, the conversation goes on, and the
    // turn costs exactly its own two model requests (tool call, final text).
    let before = mock.requests().len();
    send(&s, &id, "again [turn-2-marker]").await;
    assert_eq!(
        app_servers(&s, pattern).await,
        first,
        "the warm process served it"
    );
    let reqs = mock.requests();
    assert_eq!(reqs.len() - before, 2, "no extra model requests");
    assert!(reqs[before..].iter().any(|r| {
        let b = r.body.to_string();
        b.contains("turn-1-marker") && b.contains("turn-2-marker")
    }));

    // Idle: reaped after the idle time.
    eventually(
        Duration::from_secs(IDLE_SECS + 30),
        "the idle process to be reaped",
        || async { app_servers(&s, pattern).await.is_empty().then_some(()) },
    )
    .await;

    // The next turn starts a new process, which resumes the thread.
    let before = mock.requests().len();
    send(&s, &id, "once more [turn-3-marker]").await;
    let third = app_servers(&s, pattern).await;
    assert!(
        !third.is_empty() && third.is_disjoint(&first),
        "{first:?} {third:?}"
    );
    assert!(mock.requests()[before..].iter().any(|r| {
        let b = r.body.to_string();
        b.contains("turn-1-marker") && b.contains("turn-3-marker")
    }));
    let out = s.exec("warm", &["cat", "/home/agent/w/hello.txt"]).await;
    assert_eq!(out["stdout"], "hi\n", "{out}");

    // One contiguous event log over the three turns and two processes.
    let evs = s.get(&format!("/api/v1/tasks/{id}/events")).await;
    let evs = evs.as_array().unwrap();
    let seqs: Vec<u64> = evs.iter().map(|e| e["seq"].as_u64().unwrap()).collect();
    assert_eq!(seqs, (1..=seqs.len() as u64).collect::<Vec<_>>());
    let turns = evs.iter().filter(|e| e["type"] == "turn_completed").count();
    assert_eq!(turns, 3, "{evs:#?}");
    // A resumed conversation is not reported again: three tool calls, three final messages.
    let calls = evs.iter().filter(|e| e["type"] == "tool_call").count();
    assert_eq!(calls, 3, "{evs:#?}");
    let messages = evs.iter().filter(|e| e["type"] == "message").count();
    assert_eq!(messages, 3, "{evs:#?}");
    let sessions: BTreeSet<&str> = evs
        .iter()
        .filter(|e| e["type"] == "session")
        .filter_map(|e| e["agent_session_id"].as_str())
        .collect();
    assert_eq!(sessions.len(), 1, "one conversation: {sessions:?}");

    // Cancel of the finished task's warm process: the task ends and the process goes.
    let (st, _) = s
        .call("POST", &format!("/api/v1/tasks/{id}/cancel"), None)
        .await;
    assert_eq!(st, 200);
    eventually(
        Duration::from_secs(20),
        "the cancelled task's process to stop",
        || async { app_servers(&s, pattern).await.is_empty().then_some(()) },
    )
    .await;
}
