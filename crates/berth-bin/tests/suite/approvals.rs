//! Approvals end to end (issue 15 §1): a real agent CLI in a real workspace asks permission
//! through its own protocol, the task waits, and a decision through the API (or the CLI), or
//! the timeout, reaches the agent. The scripted mock LLM asks for one shell call (`echo hi >
//! hello.txt`) and sees what the agent sends back.

use std::time::Duration;

use berth_test_support::mock_llm::MockLlm;
use berth_test_support::{ensure_image, eventually, ServerOptions, TestServer};
use serde_json::{json, Value};

use crate::bin;

const TURN: Duration = Duration::from_secs(180);
/// Short, so the timeout case ends quickly; the other cases decide well within it.
const TIMEOUT_SECS: u64 = 15;

async fn server(mock: &MockLlm) -> TestServer {
    let mut env = vec![(
        "BERTH_APPROVAL_TIMEOUT_SECONDS".to_owned(),
        TIMEOUT_SECS.to_string(),
    )];
    for p in ["ANTHROPIC", "OPENAI", "GEMINI"] {
        env.push((format!("BERTH_{p}_BASE_URL"), mock.url()));
        env.push((format!("BERTH_{p}_API_KEY"), format!("real-{p}-key")));
    }
    TestServer::start_with(
        bin(),
        ServerOptions {
            env,
            ..Default::default()
        },
    )
    .await
}

/// Starts a task in `dir` (made first) under `policy`; returns its id.
async fn start(s: &TestServer, agent: &str, dir: &str, policy: &str) -> String {
    s.exec("appr", &["mkdir", "-p", dir]).await;
    let (st, t) = s
        .call(
            "POST",
            "/api/v1/tasks",
            Some(json!({"workspace": "appr", "agent": agent, "dir": dir,
                "approval": policy, "prompt": format!("Create hello.txt ({dir})")})),
        )
        .await;
    assert_eq!(st, 201, "{t}");
    assert_eq!(t["approval"], policy, "{t}");
    t["id"].as_str().unwrap().to_owned()
}

async fn state_of(s: &TestServer, id: &str) -> Value {
    s.get(&format!("/api/v1/tasks/{id}")).await
}

/// Waits until the task waits for a decision; returns its one pending request.
async fn pending_request(s: &TestServer, id: &str) -> Value {
    eventually(TURN, "the task to wait for approval", || async {
        let t = state_of(s, id).await;
        assert!(
            !matches!(t["state"].as_str(), Some("completed" | "failed")),
            "the turn ended without asking: {t}\n{:#}",
            s.get(&format!("/api/v1/tasks/{id}/events")).await
        );
        if t["state"] != "waiting" {
            return None;
        }
        let list = s
            .get(&format!("/api/v1/tasks/{id}/approvals?pending=true"))
            .await;
        list.as_array()
            .and_then(|l| (l.len() == 1).then(|| l[0].clone()))
    })
    .await
}

async fn turn_over(s: &TestServer, id: &str) -> Value {
    eventually(TURN, "the turn to end", || async {
        let t = state_of(s, id).await;
        matches!(
            t["state"].as_str(),
            Some("completed" | "failed" | "cancelled")
        )
        .then_some(t)
    })
    .await
}

async fn file_exists(s: &TestServer, path: &str) -> bool {
    let out = s.exec("appr", &["test", "-e", path]).await;
    out["exit_code"] == 0
}

fn upstream_text(mock: &MockLlm) -> String {
    mock.requests()
        .iter()
        .map(|r| r.body.to_string())
        .collect::<Vec<_>>()
        .join("\n")
}

/// What the model is told of a denial: the reason itself (claude; codex gets it as steering
/// input after its own "rejected by user"), or the agent's own words when its protocol carries
/// no reason (gemini over ACP: the tool "was canceled by the user"; berth says the reason
/// before the next prompt's text).
fn denial_seen(agent: &str, reason: &str) -> String {
    match agent {
        "gemini" => "was canceled by the user".to_owned(),
        _ => reason.to_owned(),
    }
}

/// The agent got the denial: the model was told (see [`denial_seen`]), or, for opencode, which
/// ends its turn on a rejection without asking the model again, the rejected tool call's result
/// in the task's events says so.
async fn denial_reached_agent(s: &TestServer, mock: &MockLlm, agent: &str, id: &str, reason: &str) {
    if agent == "opencode" {
        let evs = s.get(&format!("/api/v1/tasks/{id}/events")).await;
        assert!(
            evs.as_array()
                .unwrap()
                .iter()
                .any(|e| e["type"] == "tool_result"
                    && e["is_error"] == true
                    && e["output"]
                        .as_str()
                        .unwrap_or_default()
                        .contains("rejected")),
            "{evs:#}"
        );
    } else {
        assert!(
            upstream_text(mock).contains(&denial_seen(agent, reason)),
            "the agent passed the denial on to the model"
        );
    }
}

/// Approve, deny (by the CLI) and timeout with one agent, in one workspace.
async fn approvals_round_trip(agent: &str) {
    ensure_image().await;
    let mock = MockLlm::start().await;
    let s = server(&mock).await;
    s.create_workspace(json!({"name": "appr", "memory": "2g", "pids": 2048}))
        .await;

    // Approve: the task waits with the normalized request, the inbox lists it, the approval
    // lets the tool run, and the decision is recorded and audited with who decided.
    let id = start(&s, agent, "/home/agent/yes", "on-request").await;
    let req = pending_request(&s, &id).await;
    assert_eq!(req["kind"], "command", "{req}");
    assert_eq!(req["state"], "pending", "{req}");
    assert!(
        req["command"]
            .as_str()
            .unwrap()
            .contains("echo hi > hello.txt"),
        "{req}"
    );
    assert_eq!(req["task"], id.as_str());
    assert!(!file_exists(&s, "/home/agent/yes/hello.txt").await);
    let inbox = s.get("/api/v1/inbox").await;
    assert!(
        inbox["approvals"]
            .as_array()
            .unwrap()
            .iter()
            .any(|a| a["task"] == id.as_str() && a["id"] == req["id"]),
        "{inbox}"
    );
    let rid = req["id"].as_str().unwrap().to_owned();
    let path = format!(
        "/api/v1/tasks/{id}/approvals/{}",
        berth_test_support::enc(&rid)
    );
    // Bad decisions are refused before anything reaches the agent.
    let (st, e) = s
        .call("POST", &path, Some(json!({"decision": "maybe"})))
        .await;
    assert_eq!(
        (st, e["error"]["code"].as_str()),
        (400, Some("invalid_argument")),
        "{e}"
    );
    let (st, e) = s
        .call(
            "POST",
            &path,
            Some(json!({"decision": "deny", "always_for_task": true})),
        )
        .await;
    assert_eq!(st, 400, "{e}");
    let (st, e) = s
        .call(
            "POST",
            &format!("/api/v1/tasks/{id}/approvals/no-such-request"),
            Some(json!({"decision": "approve"})),
        )
        .await;
    assert_eq!(
        (st, e["error"]["code"].as_str()),
        (404, Some("not_found")),
        "{e}"
    );
    // A follow-up while waiting is refused with the way out.
    let (st, e) = s
        .call(
            "POST",
            &format!("/api/v1/tasks/{id}/messages"),
            Some(json!({"text": "hello?"})),
        )
        .await;
    assert_eq!(st, 409, "{e}");
    assert!(
        e["error"]["message"].as_str().unwrap().contains("approve"),
        "{e}"
    );

    let (st, a) = s
        .call(
            "POST",
            &path,
            Some(json!({"decision": "approve", "reason": "looks fine"})),
        )
        .await;
    assert_eq!(st, 200, "{a}\n{}", s.log());
    assert_eq!(a["state"], "approved", "{a}");
    assert!(a["decided_by"].as_str().unwrap().contains("admin"), "{a}");
    let done = turn_over(&s, &id).await;
    assert_eq!(done["state"], "completed", "{done}\n{}", s.log());
    let out = s.exec("appr", &["cat", "/home/agent/yes/hello.txt"]).await;
    assert_eq!(out["stdout"], "hi\n", "the approved tool ran: {out}");
    let evs = s.get(&format!("/api/v1/tasks/{id}/events")).await;
    let evs = evs.as_array().unwrap();
    let kinds: Vec<&str> = evs.iter().map(|e| e["type"].as_str().unwrap()).collect();
    let pos = |k: &str| kinds.iter().position(|t| *t == k).unwrap_or(usize::MAX);
    assert!(
        pos("approval_request") < pos("approval_resolved")
            && pos("approval_resolved") < pos("tool_result"),
        "{kinds:?}"
    );
    assert!(
        evs.iter()
            .any(|e| e["type"] == "status" && e["state"] == "waiting"),
        "{kinds:?}"
    );
    // Deciding again is a conflict.
    let (st, e) = s
        .call("POST", &path, Some(json!({"decision": "deny"})))
        .await;
    assert_eq!(
        (st, e["error"]["code"].as_str()),
        (409, Some("invalid_state")),
        "{e}"
    );
    let audit = s.get("/api/v1/audit?limit=200").await.to_string();
    assert!(audit.contains("task.approve"), "{audit}");

    // A follow-up keeps the policy (the agent resumes its session and asks again); approving
    // with always-for-this-task lets the next turn's same tool run without asking.
    let before = mock.requests().len();
    let (st, t) = s
        .call(
            "POST",
            &format!("/api/v1/tasks/{id}/messages"),
            Some(json!({"text": "again (second-turn)"})),
        )
        .await;
    assert_eq!(st, 200, "{t}");
    let req = pending_request(&s, &id).await;
    let path = format!(
        "/api/v1/tasks/{id}/approvals/{}",
        berth_test_support::enc(req["id"].as_str().unwrap())
    );
    let (st, a) = s
        .call(
            "POST",
            &path,
            Some(json!({"decision": "approve", "always_for_task": true})),
        )
        .await;
    assert_eq!(st, 200, "{a}");
    let done = turn_over(&s, &id).await;
    assert_eq!(done["state"], "completed", "{done}");
    assert!(
        mock.requests()[before..]
            .iter()
            .any(|r| r.body.to_string().contains("second-turn")
                && r.body.to_string().contains("/home/agent/yes")),
        "the follow-up resumed the conversation"
    );
    let (st, t) = s
        .call(
            "POST",
            &format!("/api/v1/tasks/{id}/messages"),
            Some(json!({"text": "and again (third-turn)"})),
        )
        .await;
    assert_eq!(st, 200, "{t}");
    let done = turn_over(&s, &id).await;
    assert_eq!(done["state"], "completed", "{done}");
    let evs = s.get(&format!("/api/v1/tasks/{id}/events")).await;
    let rule: Vec<&Value> = evs
        .as_array()
        .unwrap()
        .iter()
        .filter(|e| e["type"] == "approval_resolved" && e["by"] == "always-for-this-task")
        .collect();
    assert_eq!(rule.len(), 1, "{evs:#}");
    assert_eq!(rule[0]["decision"], "approved");

    // Deny, by the CLI with a reason: the agent is told (the model sees the reason in the next
    // request) and the tool never ran.
    let id = start(&s, agent, "/home/agent/no", "on-request").await;
    pending_request(&s, &id).await;
    let out = s.cli(&["task", "deny", &id, "--reason", "NOPE-REASON-4711"]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        String::from_utf8_lossy(&out.stdout).starts_with("denied request"),
        "{}",
        String::from_utf8_lossy(&out.stdout)
    );
    let done = turn_over(&s, &id).await;
    assert_eq!(done["state"], "completed", "{done}\n{}", s.log());
    assert!(!file_exists(&s, "/home/agent/no/hello.txt").await);
    denial_reached_agent(&s, &mock, agent, &id, "NOPE-REASON-4711").await;
    let list = s.get(&format!("/api/v1/tasks/{id}/approvals")).await;
    assert_eq!(list[0]["state"], "denied", "{list}");
    assert_eq!(list[0]["reason"], "NOPE-REASON-4711", "{list}");
    let audit = s.get("/api/v1/audit?limit=200").await.to_string();
    assert!(audit.contains("task.deny"), "{audit}");
    // Nothing pending any more: the CLI says so and exits non-zero.
    let out = s.cli(&["task", "approve", &id]);
    assert!(!out.status.success());
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("no pending request"),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    if matches!(agent, "gemini" | "opencode") {
        // ACP's answer had no room for the reason: the next prompt says it to the model first
        // (before, the model never saw it).
        assert!(!upstream_text(&mock).contains("NOPE-REASON-4711"));
        let (st, v) = s
            .call(
                "POST",
                &format!("/api/v1/tasks/{id}/messages"),
                Some(json!({"text": "Go on."})),
            )
            .await;
        assert_eq!(st, 200, "{v}");
        pending_request(&s, &id).await;
        let out = s.cli(&["task", "approve", &id]);
        assert!(out.status.success(), "{out:?}");
        let done = turn_over(&s, &id).await;
        assert_eq!(done["state"], "completed", "{done}\n{}", s.log());
        assert!(
            upstream_text(&mock).contains("denied earlier in this task: NOPE-REASON-4711."),
            "the model was not told the reason"
        );
    }

    // Timeout: nobody decides; the daemon denies and the agent is told why.
    let id = start(&s, agent, "/home/agent/late", "always").await;
    pending_request(&s, &id).await;
    let done = turn_over(&s, &id).await;
    assert_eq!(done["state"], "completed", "{done}\n{}", s.log());
    assert!(!file_exists(&s, "/home/agent/late/hello.txt").await);
    let list = s.get(&format!("/api/v1/tasks/{id}/approvals")).await;
    assert_eq!(list[0]["state"], "denied", "{list}");
    assert_eq!(list[0]["decided_by"], "timeout", "{list}");
    denial_reached_agent(&s, &mock, agent, &id, "approval timeout").await;
    // Nothing waits any more (the inbox's access requests are another matter: opencode's own
    // attempts to reach its package registry are denied egress, and are listed there).
    assert_eq!(s.get("/api/v1/inbox").await["approvals"], json!([]));

    // Cancel while waiting: the agent stops, the request expires.
    let id = start(&s, agent, "/home/agent/gone", "on-request").await;
    pending_request(&s, &id).await;
    let (st, t) = s
        .call("POST", &format!("/api/v1/tasks/{id}/cancel"), None)
        .await;
    assert_eq!(st, 200, "{t}");
    let done = turn_over(&s, &id).await;
    assert_eq!(done["state"], "cancelled", "{done}");
    let list = s.get(&format!("/api/v1/tasks/{id}/approvals")).await;
    assert_eq!(list[0]["state"], "expired", "{list}");
    assert!(!file_exists(&s, "/home/agent/gone/hello.txt").await);
}

#[tokio::test]
async fn claude_asks_and_is_approved_denied_and_timed_out() {
    approvals_round_trip("claude").await;
}

/// Codex through its app-server protocol: the same flow (its follow-ups run on the task's warm
/// process).
#[tokio::test]
async fn codex_asks_and_is_approved_denied_and_timed_out() {
    approvals_round_trip("codex").await;
}

/// Gemini CLI through ACP (`session/request_permission`); its follow-ups run on the task's warm
/// `gemini --acp` process.
#[tokio::test]
async fn gemini_asks_and_is_approved_denied_and_timed_out() {
    approvals_round_trip("gemini").await;
}

/// OpenCode through ACP, as gemini.
#[tokio::test]
async fn opencode_asks_and_is_approved_denied_and_timed_out() {
    approvals_round_trip("opencode").await;
}

#[tokio::test]
async fn approval_policies_are_validated() {
    let mock = MockLlm::start().await;
    let s = server(&mock).await;
    ensure_image().await;
    s.create_workspace(json!({"name": "appr", "approval": "on-request"}))
        .await;
    let body =
        json!({"workspace": "appr", "agent": "claude", "prompt": "x", "approval": "sometimes"});
    let (st, e) = s.call("POST", "/api/v1/tasks", Some(body.clone())).await;
    assert_eq!(
        (st, e["error"]["code"].as_str()),
        (400, Some("invalid_argument")),
        "{body} → {e}"
    );
    // Every agent speaks a permission protocol (gemini and opencode through ACP): the
    // workspace's default applies to a task that does not say.
    let (st, t) = s
        .call(
            "POST",
            "/api/v1/tasks",
            Some(json!({"workspace": "appr", "agent": "opencode", "prompt": "x"})),
        )
        .await;
    assert_eq!(
        (st, t["approval"].as_str()),
        (201, Some("on-request")),
        "{t}"
    );
    let (st, e) = s
        .call(
            "POST",
            "/api/v1/workspaces",
            Some(json!({"name": "bad", "approval": "sometimes"})),
        )
        .await;
    assert_eq!(
        (st, e["error"]["code"].as_str()),
        (400, Some("invalid_argument")),
        "{e}"
    );
}

/// A fake workspace daemon (what any process in a workspace can run: it owns the daemon's
/// directory and renames its own socket over `daemon.sock`). Mode `approvals`: a started task
/// floods 200 permission requests with over-long ids and 150 kB commands, and a decision is
/// never answered.
const FAKE_DAEMON: &str = concat!(
    crate::fake_daemon_prelude!(),
    r#"def handle(c):
    try:
        read(c)
        c.sendall(frame({"type": "hello_ok", "protocol": 1, "version": "fake", "pid": 1,
                         "started_at": "2026-01-01T00:00:00Z", "uid": 1000, "sessions": 0}))
        req = read(c)
        t = req["type"]
        if t == "exec" and req["argv"][:1] == ["berth-fake"]:
            mode[0] = req["argv"][1]
            c.sendall(frame({"type": "exec_started", "pid": 1}) + frame({"type": "exit", "code": 0}))
            return hold(c)
        if t == "task_start":
            c.sendall(frame(dict(info(req["id"], 0), type="task")))
            return hold(c)
        if t == "task_events":
            seq = req.get("after", 0)
            c.sendall(frame({"type": "task_subscribed", "task": info(req["task"], seq)}))
            if seq == 0:
                c.sendall(event(1, {"type": "status", "state": "starting"}))
                c.sendall(event(2, {"type": "status", "state": "running"}))
                seq = 2
                for i in range(200):
                    seq += 1
                    c.sendall(event(seq, {"type": "approval_request", "id": "r%d-" % i + "x" * 1000,
                        "kind": "command", "tool": "Bash", "summary": "s" * 100000,
                        "command": "c" * 150000, "input": {"command": "c"}, "risks": ["r"] * 50}))
                seq += 1
                c.sendall(event(seq, {"type": "status", "state": "waiting"}))
            return hold(c)
        # task_decide and everything else: never answered.
        hold(c)
    except Exception:
        pass
    finally:
        c.close()
tmp = PATH + ".fake"
try:
    os.unlink(tmp)
except FileNotFoundError:
    pass
srv = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
srv.bind(tmp)
os.chmod(tmp, 0o777)
srv.listen(128)
time.sleep(1)
os.rename(tmp, PATH)
while True:
    c, _ = srv.accept()
    threading.Thread(target=handle, args=(c,), daemon=True).start()
"#
);

/// The host-side effect of a hostile daemon's requests is bounded: at most 64 open requests per
/// task are stored, every field is cut to its cap, and a decision the daemon never answers ends
/// with an error within the client's deadline instead of hanging. Shown able to fail: without
/// the store's caps (`record_event` storing what it got), 200 rows with 1000-byte ids and
/// 150 kB commands come back.
#[tokio::test]
async fn a_hostile_daemon_cannot_flood_or_bloat_approvals() {
    ensure_image().await;
    let mock = MockLlm::start().await;
    let s = server(&mock).await;
    s.create_workspace(json!({"name": "appr"})).await;
    let (st, v) = s
        .call(
            "POST",
            "/api/v1/workspaces/appr/exec",
            Some(json!({"cmd": ["sh", "-c", "cat > /tmp/fake.py"], "stdin": FAKE_DAEMON})),
        )
        .await;
    assert_eq!(st, 200, "{v}");
    s.exec(
        "appr",
        &[
            "sh",
            "-c",
            "setsid python3 /tmp/fake.py > /tmp/fake.log 2>&1 < /dev/null &",
        ],
    )
    .await;
    eventually(
        Duration::from_secs(20),
        "the fake daemon answers",
        || async {
            let (st, v) = s
                .call(
                    "POST",
                    "/api/v1/workspaces/appr/exec",
                    Some(json!({"cmd": ["berth-fake", "approvals"]})),
                )
                .await;
            (st == 200 && v["exit_code"] == 0).then_some(())
        },
    )
    .await;

    let (st, t) = s
        .call(
            "POST",
            "/api/v1/tasks",
            Some(json!({"workspace": "appr", "agent": "claude", "prompt": "x", "approval": "on-request"})),
        )
        .await;
    assert_eq!(st, 201, "{t}");
    let id = t["id"].as_str().unwrap().to_owned();
    eventually(TURN, "the task to wait", || async {
        (state_of(&s, &id).await["state"] == "waiting").then_some(())
    })
    .await;
    let list = s.get(&format!("/api/v1/tasks/{id}/approvals")).await;
    let list = list.as_array().unwrap().clone();
    assert_eq!(list.len(), 64, "at most 64 open requests are stored");
    for a in &list {
        assert!(a["id"].as_str().unwrap().len() <= 128, "{}", a["id"]);
        assert!(a["command"].as_str().unwrap().len() <= 64 * 1024);
        assert!(a["summary"].as_str().unwrap().len() <= 4096);
        assert!(a["risks"].as_array().unwrap().len() <= 8);
    }
    let inbox = s.get("/api/v1/inbox").await;
    assert_eq!(inbox["approvals"].as_array().unwrap().len(), 64);

    // A decision the daemon never answers: an error within the deadline, nothing recorded.
    let rid = list[0]["id"].as_str().unwrap();
    let path = format!(
        "/api/v1/tasks/{id}/approvals/{}",
        berth_test_support::enc(rid)
    );
    let started = std::time::Instant::now();
    let (st, e) = tokio::time::timeout(
        Duration::from_secs(60),
        s.call("POST", &path, Some(json!({"decision": "approve"}))),
    )
    .await
    .expect("the decision hangs");
    assert!(st >= 500, "{st} {e}");
    assert!(
        started.elapsed() < Duration::from_secs(40),
        "{:?}",
        started.elapsed()
    );
    let a = s
        .get(&format!("/api/v1/tasks/{id}/approvals?pending=true"))
        .await;
    assert_eq!(a.as_array().unwrap().len(), 64, "still pending: {e}");
    assert!(!s.log().contains("panicked"), "{}", s.log());
}
