//! Watching and steering a long turn, with the real agent CLIs against the scripted mock LLM.
//!
//! Interrupt and redirect (`berth task send --interrupt`, all four agents): the first turn's
//! tool runs a long `sleep`; an interrupt stops the turn within seconds, the tool's process is
//! gone, and the next turn continues the same conversation (its request to the upstream
//! carries the first turn and the new message) and finishes the task with the new turn's
//! answer.
//!
//! Tokens and cost during a turn: the task's figures are the gateway's record of its calls,
//! which grows as each call ends, not when the turn does.

use std::time::{Duration, Instant};

use berth_test_support::agents::{self, server_with_llm, task_events as events};
use berth_test_support::mock_llm::{MockLlm, Script, REPLY_MARKER};
use berth_test_support::{ensure_image, eventually, TestServer};
use serde_json::json;

use crate::bin;

const TURN: Duration = Duration::from_secs(180);

/// How many processes in the workspace run the first turn's long tool (`sleep 61`).
async fn sleeps(s: &TestServer, ws: &str) -> usize {
    // /proc, not pgrep: the pattern must not count the shell that looks for it.
    let out = s
        .exec(
            ws,
            &[
                "sh",
                "-c",
                "for p in /proc/[0-9]*; do tr '\\0' ' ' < $p/cmdline 2>/dev/null; echo; done | grep -c '^sleep 61' || true",
            ],
        )
        .await;
    out["stdout"].as_str().unwrap().trim().parse().unwrap()
}

async fn interrupt_and_redirect(agent: &str) {
    ensure_image().await;
    let mock = MockLlm::start_with(Script {
        shell_command: "echo long-tool-started; sleep 61".into(),
        ..Default::default()
    })
    .await;
    let s = server_with_llm(bin(), &mock, Vec::new()).await;
    let ws = "steer";
    s.create_workspace(json!({"name": ws, "memory": "2g", "pids": 2048}))
        .await;
    let (st, task) = s
        .call(
            "POST",
            "/api/v1/tasks",
            Some(json!({"workspace": ws, "agent": agent,
                "prompt": format!("Run the long command, then say DONE. ({agent}-first-turn)")})),
        )
        .await;
    assert_eq!(st, 201, "{task}");
    let id = task["id"].as_str().unwrap().to_owned();

    // The tool runs (and the agent has said which conversation this is).
    eventually(TURN, "the long tool to run", || async {
        let t = s.get(&format!("/api/v1/tasks/{id}")).await;
        assert!(
            matches!(t["state"].as_str(), Some("starting" | "running")),
            "{t}\n{:#?}",
            events(&s, &id).await
        );
        (t["agent_session_id"].is_string() && sleeps(&s, ws).await > 0).then_some(())
    })
    .await;
    let before = mock.requests().len();

    let text = format!(
        "Stop that and answer instead. {REPLY_MARKER}redirected-{agent} ({agent}-second-turn)"
    );
    let t0 = Instant::now();
    let t = if agent == "claude" {
        // Through the CLI (the others through the API).
        let out = s.cli(&["task", "send", &id, "--interrupt", "--json", &text]);
        assert!(
            out.status.success(),
            "{}\n{}",
            String::from_utf8_lossy(&out.stderr),
            s.log()
        );
        serde_json::from_slice(&out.stdout).unwrap()
    } else {
        let (st, t) = s
            .call(
                "POST",
                &format!("/api/v1/tasks/{id}/messages"),
                Some(json!({"text": text, "interrupt": true})),
            )
            .await;
        assert_eq!(st, 200, "{t}\n{}", s.log());
        t
    };
    let took = t0.elapsed();
    assert!(
        took < Duration::from_secs(15),
        "the interrupt took {took:?}"
    );
    assert!(
        matches!(t["state"].as_str(), Some("running" | "completed")),
        "{t}"
    );
    // The interrupted turn's tool is gone: berth kills the agent's process tree, or, for codex,
    // whose app-server stays warm, what the turn left running below it (codex's own
    // `turn/interrupt` does not always end the command: seen in CI). Killed processes may take
    // a moment to be reaped.
    eventually(
        Duration::from_secs(10),
        "the long tool to end after the interrupt",
        || async { (sleeps(&s, ws).await == 0).then_some(()) },
    )
    .await;

    let done = agents::wait_turn_over(&s, &id, TURN).await;
    let evs = events(&s, &id).await;
    assert_eq!(done["state"], "completed", "{done}\n{evs:#?}\n{}", s.log());
    // The task went on from the interrupted turn to the next without ending in between.
    let turn_overs = evs
        .iter()
        .filter(|e| {
            e["type"] == "status"
                && matches!(
                    e["state"].as_str(),
                    Some("completed" | "failed" | "cancelled" | "interrupted")
                )
        })
        .count();
    assert_eq!(turn_overs, 1, "{evs:#?}");
    let at = evs
        .iter()
        .position(|e| e["type"] == "turn_interrupted")
        .unwrap_or_else(|| panic!("no turn_interrupted: {evs:#?}"));
    assert!(
        evs[at]["by"].as_str().unwrap_or("").contains("admin"),
        "{}",
        evs[at]
    );
    assert_eq!(evs[at + 1]["type"], "user_message", "{evs:#?}");
    assert_eq!(evs[at + 1]["text"], text.as_str());
    // The task ends with the new turn's answer.
    assert!(
        done["last_message"]
            .as_str()
            .unwrap_or("")
            .contains(&format!("REPLY redirected-{agent}")),
        "{done}\n{evs:#?}"
    );
    // Same conversation: the next turn's request carries the first turn and the new message.
    let later: Vec<String> = mock.requests()[before..]
        .iter()
        .map(|r| r.body.to_string())
        .collect();
    assert!(
        later
            .iter()
            .any(|b| b.contains(&format!("{agent}-first-turn"))
                && b.contains(&format!("{agent}-second-turn"))),
        "no request after the interrupt carries both turns: {later:#?}"
    );
    assert_eq!(sleeps(&s, ws).await, 0);
}

#[tokio::test]
async fn claude_turn_is_interrupted_and_redirected() {
    interrupt_and_redirect("claude").await;
}

#[tokio::test]
async fn codex_turn_is_interrupted_and_redirected() {
    interrupt_and_redirect("codex").await;
}

#[tokio::test]
async fn gemini_turn_is_interrupted_and_redirected() {
    interrupt_and_redirect("gemini").await;
}

#[tokio::test]
async fn opencode_turn_is_interrupted_and_redirected() {
    interrupt_and_redirect("opencode").await;
}

/// A turn of two model calls (the tool call, then the answer after the tool's result): after
/// the first call, while the tool still runs, the task (API and `berth task show`) already
/// shows that call's tokens and cost; at the end, both calls'.
#[tokio::test]
async fn tokens_and_cost_grow_during_the_turn() {
    use berth_test_support::mock_llm::{USAGE_INPUT_TOKENS, USAGE_OUTPUT_TOKENS};
    ensure_image().await;
    let mock = MockLlm::start_with(Script {
        shell_command: "echo started; sleep 61; echo hi".into(),
        ..Default::default()
    })
    .await;
    let s = server_with_llm(bin(), &mock, Vec::new()).await;
    let ws = "meter";
    s.create_workspace(json!({"name": ws, "memory": "2g", "pids": 2048}))
        .await;
    let (st, task) = s
        .call(
            "POST",
            "/api/v1/tasks",
            Some(json!({"workspace": ws, "agent": "claude", "prompt": "Run the long command."})),
        )
        .await;
    assert_eq!(st, 201, "{task}");
    let id = task["id"].as_str().unwrap().to_owned();
    eventually(TURN, "the long tool to run", || async {
        let t = s.get(&format!("/api/v1/tasks/{id}")).await;
        assert!(
            matches!(t["state"].as_str(), Some("starting" | "running")),
            "{t}\n{:#?}",
            events(&s, &id).await
        );
        (sleeps(&s, ws).await > 0).then_some(())
    })
    .await;
    // The first call is recorded while the turn runs (the tool sleeps for a minute).
    let t = eventually(
        Duration::from_secs(30),
        "the first call's tokens",
        || async {
            let t = s.get(&format!("/api/v1/tasks/{id}")).await;
            (t["usage"]["calls"].as_u64() >= Some(1)).then_some(t)
        },
    )
    .await;
    assert_eq!(t["state"], "running", "{t}");
    let calls = t["usage"]["calls"].as_u64().unwrap();
    assert_eq!(
        t["usage"]["input_tokens"],
        calls * USAGE_INPUT_TOKENS,
        "{t}"
    );
    assert_eq!(
        t["usage"]["output_tokens"],
        calls * USAGE_OUTPUT_TOKENS,
        "{t}"
    );
    assert!(t["usage"]["cost_usd"].as_f64().unwrap() > 0.0, "{t}");
    // No agent-reported usage yet: Claude reports its usage at the end of the turn.
    assert!(t["usage"]["agent_reported"].is_null(), "{t}");
    let out = s.cli(&["task", "show", &id]);
    let shown = String::from_utf8_lossy(&out.stdout);
    assert!(
        shown.contains(&format!(
            "in {}, out {}",
            calls * USAGE_INPUT_TOKENS,
            calls * USAGE_OUTPUT_TOKENS
        )),
        "{shown}"
    );
    // Stop the minute-long tool: the task is then final, with the one call it made.
    let (st, t) = s
        .call("POST", &format!("/api/v1/tasks/{id}/cancel"), None)
        .await;
    assert_eq!(st, 200, "{t}");
    assert_eq!(t["usage"]["calls"], calls, "{t}");
    assert_eq!(sleeps(&s, ws).await, 0);
}
