//! A host reboot, as the server sees it: the workspace containers are stopped from outside
//! (`podman stop`, as a shutdown does) and the server dies and comes back. Running workspaces
//! must come back running by themselves, a session that died must be listed as `ended`, the task whose turn was in flight must be
//! `interrupted` (not `failed`), and `berth task send` must continue its conversation.

use std::time::Duration;

use berth_test_support::mock_llm::{MockLlm, Script};
use berth_test_support::{ensure_image, eventually, ServerOptions, TestServer};
use serde_json::{json, Value};

use crate::bin;

const TURN: Duration = Duration::from_secs(180);

async fn task(s: &TestServer, id: &str) -> Value {
    s.get(&format!("/api/v1/tasks/{id}")).await
}

fn podman_stop(container: &str) {
    let o = std::process::Command::new("podman")
        .args(["stop", "-t", "2", container])
        .output()
        .unwrap();
    assert!(
        o.status.success(),
        "podman stop: {}",
        String::from_utf8_lossy(&o.stderr)
    );
}

/// Without the start-up recovery the workspace stays `failed` ("exited unexpectedly") and the
/// wait for `running` times out (seen before the fix); without the session journal the session
/// list is empty and the "session is missing" assertion fails; without the `interrupted` state the task ends
/// `failed` ("the workspace daemon no longer knows this task") and the follow-up is refused
/// with 409 invalid_state.
#[tokio::test]
async fn a_reboot_restarts_running_workspaces_and_interrupts_their_tasks() {
    ensure_image().await;
    // The tool waits for a file the test creates after the reboot, so the first turn is
    // certainly in flight when the "host" goes down, and the follow-up's tool finishes at once.
    let mock = MockLlm::start_with(Script {
        shell_command: "while ! test -f /home/agent/go; do sleep 1; done; echo hi > hello.txt"
            .into(),
        ..Default::default()
    })
    .await;
    let env = vec![
        ("BERTH_ANTHROPIC_BASE_URL".to_owned(), mock.url()),
        (
            "BERTH_ANTHROPIC_API_KEY".to_owned(),
            "real-anthropic-key-123".to_owned(),
        ),
    ];
    let mut s = TestServer::start_with(
        bin(),
        ServerOptions {
            env,
            ..Default::default()
        },
    )
    .await;
    let w = s
        .create_workspace(json!({"name": "reboot", "memory": "2g", "pids": 2048}))
        .await;
    let container = w["container_id"].as_str().unwrap().to_owned();
    // Something in the home volume that must survive, and a session that dies with the host.
    s.exec("reboot", &["sh", "-c", "echo kept > /home/agent/marker"])
        .await;
    let (st, v) = s
        .call(
            "POST",
            "/api/v1/workspaces/reboot/sessions",
            Some(json!({"name": "work", "cmd": ["sleep", "100000"]})),
        )
        .await;
    assert_eq!(st, 201, "{v}");
    let (st, t) = s
        .call(
            "POST",
            "/api/v1/tasks",
            Some(json!({"workspace": "reboot", "agent": "claude", "prompt": "Create hello.txt, then say DONE."})),
        )
        .await;
    assert_eq!(st, 201, "{t}");
    let id = t["id"].as_str().unwrap().to_owned();
    eventually(TURN, "the tool call", || async {
        let evs = s.get(&format!("/api/v1/tasks/{id}/events")).await;
        evs.as_array()
            .unwrap()
            .iter()
            .any(|e| e["type"] == "tool_call")
            .then_some(())
    })
    .await;
    let before = task(&s, &id).await;
    assert_eq!(before["state"], "running", "{before}");
    let session = before["agent_session_id"]
        .as_str()
        .unwrap_or_else(|| panic!("{before}"));
    // A real reboot lands at any moment; this one must land after claude wrote the conversation
    // to disk (it flushes its transcript a little after printing the tool call), since what is
    // tested is resuming a conversation that exists, not claude's own write-behind.
    let transcript = format!("ls /home/agent/.berth/tasks/{id}/claude/projects/*/{session}.jsonl");
    eventually(TURN, "claude's transcript on disk", || async {
        let out = s.exec("reboot", &["sh", "-c", &transcript]).await;
        (out["exit_code"] == 0).then_some(())
    })
    .await;

    // The "reboot": the server dies, the engine stops the containers.
    s.kill9();
    podman_stop(&container);
    s.restart().await;

    // The workspace comes back by itself, with its home volume.
    eventually(
        Duration::from_secs(90),
        "the workspace to run again",
        || async {
            let w = s.get("/api/v1/workspaces/reboot").await;
            (w["state"] == "running").then_some(())
        },
    )
    .await;
    let out = s.exec("reboot", &["cat", "/home/agent/marker"]).await;
    assert_eq!(out["stdout"], "kept\n", "{out}");
    let audit = s.get("/api/v1/audit?limit=200").await.to_string();
    assert!(audit.contains("workspace.recovered"), "{audit}");
    // The session that died is reported as ended, not silently missing; removing it works.
    let sessions = s.get("/api/v1/workspaces/reboot/sessions").await;
    let work = sessions
        .as_array()
        .unwrap()
        .iter()
        .find(|x| x["name"] == "work")
        .cloned();
    let work = work.unwrap_or_else(|| panic!("the session is missing: {sessions}"));
    assert_eq!(work["state"], "ended", "{work}");
    assert!(work["exit_code"].is_null(), "{work}");
    let o = s.cli(&["session", "list", "reboot"]);
    assert!(
        String::from_utf8_lossy(&o.stdout).contains("ended"),
        "{}",
        String::from_utf8_lossy(&o.stdout)
    );
    let (st, v) = s
        .call("DELETE", "/api/v1/workspaces/reboot/sessions/work", None)
        .await;
    assert!(st == 204 || st == 200, "{st} {v}");
    let sessions = s.get("/api/v1/workspaces/reboot/sessions").await;
    assert_eq!(sessions, json!([]), "{sessions}");

    // The task whose turn was in flight is interrupted, with a reason saying how to go on.
    let t = eventually(
        Duration::from_secs(60),
        "the task to be interrupted",
        || async {
            let t = task(&s, &id).await;
            (t["state"] != "running").then_some(t)
        },
    )
    .await;
    assert_eq!(t["state"], "interrupted", "{t}\n{}", s.log());
    let reason = t["reason"].as_str().unwrap_or_default();
    assert!(reason.contains("berth task send"), "{reason}");

    // A follow-up continues the same conversation in a new agent process.
    s.exec("reboot", &["touch", "/home/agent/go"]).await;
    let o = s.cli(&["task", "send", &id, "--wait", "Please", "finish"]);
    assert!(
        o.status.success(),
        "{}{}\n{}",
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr),
        s.log()
    );
    let done = task(&s, &id).await;
    assert_eq!(done["state"], "completed", "{done}");
    assert_eq!(done["agent_session_id"], before["agent_session_id"]);
    let evs = s.get(&format!("/api/v1/tasks/{id}/events")).await;
    let evs = evs.as_array().unwrap();
    for (i, e) in evs.iter().enumerate() {
        assert_eq!(e["seq"], i as u64 + 1, "seq contiguous from 1: {evs:#?}");
    }
    let states: Vec<&str> = evs
        .iter()
        .filter(|e| e["type"] == "status")
        .filter_map(|e| e["state"].as_str())
        .collect();
    let interrupted = states.iter().position(|s| *s == "interrupted");
    assert!(
        interrupted.is_some() && states.last() == Some(&"completed"),
        "{states:?}"
    );
    // The resumed agent was told which session to continue.
    let ps_args = mock
        .requests()
        .iter()
        .any(|r| r.body.to_string().contains("Please finish"));
    assert!(ps_args, "the follow-up reached the LLM");
    let out = s.exec("reboot", &["cat", "/home/agent/hello.txt"]).await;
    assert_eq!(out["stdout"], "hi\n", "{out}");
}
