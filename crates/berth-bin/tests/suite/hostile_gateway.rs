//! The LLM gateway against a hostile workspace: the real server, a real workspace running the
//! real Claude Code CLI, and the scripted mock upstream, which records every request that
//! reaches it. The attacks run *inside* the workspace (curl to the gateway's in-workspace
//! address, with the task's virtual key read from the agent's environment, as any code the
//! agent runs could), and the checks are what reached the upstream and what was spent.

use std::time::Duration;

use berth_test_support::agents::provider_env;
use berth_test_support::mock_llm::{MockLlm, Script};
use berth_test_support::{ensure_image, eventually, ServerOptions, TestServer};
use serde_json::{json, Value};

use crate::bin;

const TURN: Duration = Duration::from_secs(180);
const REAL_KEY: &str = "real-anthropic-key-hostile";

async fn server(mock: &MockLlm) -> TestServer {
    TestServer::start_with(
        bin(),
        ServerOptions {
            env: provider_env(mock, |p| format!("{REAL_KEY}-{p}")),
            ..Default::default()
        },
    )
    .await
}

/// A variable of the running agent's environment, read from inside the workspace.
async fn agent_env(s: &TestServer, ws: &str, var: &str) -> String {
    let script = format!(
        "for p in /proc/[0-9]*; do tr '\\0' '\\n' < $p/environ 2>/dev/null; done \
         | sed -n 's/^{var}=//p' | head -n1"
    );
    eventually(TURN, "the agent's environment", || async {
        let out = s.exec(ws, &["sh", "-c", &script]).await;
        let v = out["stdout"].as_str().unwrap_or_default().trim().to_owned();
        (!v.is_empty()).then_some(v)
    })
    .await
}

/// Starts a claude task whose first LLM call the mock holds open (the turn stays live), and
/// returns its id, its virtual key and the gateway's root URL as the workspace sees them.
async fn live_task(s: &TestServer, mock: &MockLlm, ws: &str) -> (String, String, String) {
    let (st, task) = s
        .call(
            "POST",
            "/api/v1/tasks",
            Some(json!({"workspace": ws, "agent": "claude", "prompt": "SLOW: think long"})),
        )
        .await;
    assert_eq!(st, 201, "{task}");
    eventually(TURN, "the agent's first call upstream", || async {
        (!mock.requests().is_empty()).then_some(())
    })
    .await;
    let key = agent_env(s, ws, "ANTHROPIC_API_KEY").await;
    let base = agent_env(s, ws, "ANTHROPIC_BASE_URL").await;
    let root = base.trim_end_matches("/anthropic").to_owned();
    (task["id"].as_str().unwrap().to_owned(), key, root)
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

/// A file of the `turns` workspace, trimmed.
async fn read(s: &TestServer, f: &str) -> String {
    let out = s.exec("turns", &["cat", f]).await;
    out["stdout"].as_str().unwrap_or_default().trim().to_owned()
}

/// `curl` inside the workspace: the status and the JSON body (Null when not JSON).
async fn curl_inside(
    s: &TestServer,
    ws: &str,
    method: &str,
    url: &str,
    headers: &[String],
    body: Option<&str>,
) -> (u16, Value) {
    let mut cmd: Vec<&str> = vec![
        "sh",
        "-c",
        "m=$1; u=$2; b=$3; shift 3; \
         curl -s --path-as-is -o /tmp/gw-resp -w '%{http_code}\\n' -X \"$m\" \"$@\" \
         ${b:+--data-binary \"$b\"} \"$u\"; cat /tmp/gw-resp",
        "sh",
        method,
        url,
        body.unwrap_or(""),
    ];
    for h in headers {
        cmd.push("-H");
        cmd.push(h);
    }
    let out = s.exec(ws, &cmd).await;
    let text = out["stdout"].as_str().unwrap_or_default().to_owned();
    let (code, rest) = text.split_once('\n').unwrap_or((&text, ""));
    let code = code.trim().parse().unwrap_or(0);
    (code, serde_json::from_str(rest).unwrap_or(Value::Null))
}

fn key_header(key: &str) -> String {
    format!("x-api-key: {key}")
}

const SMALL_CALL: &str =
    r#"{"model":"claude-hostile","max_tokens":16,"messages":[{"role":"user","content":"probe"}]}"#;

/// Forbidden paths, methods and providers are answered by the gateway with a stable code and
/// never reach the upstream; what is allowed goes up with the allowlisted headers only.
///
/// Fails without the allowlist (the old `any(forward)` on every path): the file, batch and
/// traversal requests reach the mock, which then records more requests than before, and the
/// claude key works on /openai; without the header allowlist the mock sees `openai-
/// organization` and the cookie.
#[tokio::test]
async fn forbidden_requests_never_reach_the_upstream() {
    ensure_image().await;
    let mock = MockLlm::start().await;
    let s = server(&mock).await;
    s.create_workspace(json!({"name": "hostile", "memory": "2g", "pids": 2048}))
        .await;
    let (id, key, root) = live_task(&s, &mock, "hostile").await;
    let before = mock.requests().len();
    let json = "content-type: application/json".to_owned();
    let cases: [(&str, &str, u16, &str); 14] = [
        ("GET", "/anthropic/v1/messages", 403, "forbidden"),
        ("DELETE", "/anthropic/v1/messages", 403, "forbidden"),
        ("POST", "/anthropic/v1/messages/batches", 404, "not_found"),
        ("GET", "/anthropic/v1/files", 404, "not_found"),
        ("POST", "/anthropic/v1/files", 404, "not_found"),
        ("GET", "/anthropic/v1/organizations/me", 404, "not_found"),
        ("POST", "/anthropic/v1/complete", 404, "not_found"),
        (
            "POST",
            "/anthropic/v1/messages%2F..%2Ffiles",
            404,
            "not_found",
        ),
        ("POST", "/anthropic/v1/../v1/files", 404, "not_found"),
        ("POST", "/anthropic//v1/messages", 404, "not_found"),
        // The claude task's key on the other providers.
        ("POST", "/openai/v1/chat/completions", 403, "forbidden"),
        ("POST", "/openai/v1/files", 403, "forbidden"),
        (
            "POST",
            "/gemini/v1beta/models/g:generateContent",
            403,
            "forbidden",
        ),
        ("POST", "/nope/v1/messages", 404, "not_found"),
    ];
    for (method, path, status, code) in cases {
        let (st, v) = curl_inside(
            &s,
            "hostile",
            method,
            &format!("{root}{path}"),
            &[key_header(&key), json.clone()],
            Some(SMALL_CALL),
        )
        .await;
        assert_eq!(
            (st, v["code"].as_str()),
            (status, Some(code)),
            "{method} {path}: {v}"
        );
    }
    assert_eq!(
        mock.requests().len(),
        before,
        "a refused request reached the upstream: {:#?}",
        &mock.requests()[before..]
    );

    // An allowed call with hostile headers and query: it goes up, stripped to the allowlist.
    let hostile = [
        key_header(&key),
        json.clone(),
        "anthropic-version: 2023-06-01".into(),
        "openai-organization: org-someone-else".into(),
        "x-goog-user-project: other".into(),
        "cookie: session=steal".into(),
        "x-forwarded-for: 10.0.0.1".into(),
        "authorization: Bearer sk-agent-own-key".into(),
    ];
    let (st, v) = curl_inside(
        &s,
        "hostile",
        "POST",
        &format!("{root}/anthropic/v1/messages?beta=true&evil=1"),
        &hostile,
        Some(SMALL_CALL),
    )
    .await;
    assert_eq!(st, 200, "{v}");
    let reqs = mock.requests();
    assert_eq!(reqs.len(), before + 1);
    let up = &reqs[before];
    assert_eq!(up.path, "/v1/messages?beta=true");
    assert_eq!(
        up.header("x-api-key"),
        Some(&*format!("{REAL_KEY}-ANTHROPIC"))
    );
    assert_eq!(up.header("anthropic-version"), Some("2023-06-01"));
    for gone in [
        "openai-organization",
        "x-goog-user-project",
        "cookie",
        "x-forwarded-for",
        "authorization",
    ] {
        assert_eq!(up.header(gone), None, "{gone} reached the upstream: {up:?}");
    }

    // A call asking for more output than one call may reserve goes up with the cap lowered, so
    // the upstream cannot return more than the budget reserved (fails if the body went up as
    // the agent sent it: max_tokens 1000000).
    let greedy = r#"{"model":"claude-hostile","max_tokens":1000000,"messages":[{"role":"user","content":"probe"}]}"#;
    let (st, v) = curl_inside(
        &s,
        "hostile",
        "POST",
        &format!("{root}/anthropic/v1/messages"),
        &[key_header(&key), json.clone()],
        Some(greedy),
    )
    .await;
    assert_eq!(st, 200, "{v}");
    let up = mock
        .requests()
        .pop()
        .expect("the call reached the upstream");
    assert_eq!(up.body["max_tokens"], 32_000, "{:?}", up.body);

    // Cancelled: the key is dead at once, whatever the daemon does.
    let (st, t) = s
        .call("POST", &format!("/api/v1/tasks/{id}/cancel"), None)
        .await;
    assert_eq!((st, t["state"].as_str()), (200, Some("cancelled")), "{t}");
    let before = mock.requests().len();
    let (st, v) = curl_inside(
        &s,
        "hostile",
        "POST",
        &format!("{root}/anthropic/v1/messages"),
        &[key_header(&key), json],
        Some(SMALL_CALL),
    )
    .await;
    assert_eq!((st, v["code"].as_str()), (401, Some("unauthorized")), "{v}");
    assert_eq!(mock.requests().len(), before);
}

/// 20 parallel calls against a small budget: what reaches the upstream overshoots the budget
/// by at most one call's reservation, and once it is used up the task fails and its key dies.
///
/// Fails without reservations (the old check of stored spending only, with usage recorded
/// after the call): every call passes the check before any is recorded (each is held 2 s by
/// the mock), e.g. 20 calls of 30 tokens against a 10-token budget.
#[tokio::test]
async fn parallel_calls_cannot_overshoot_a_budget() {
    ensure_image().await;
    let mock = MockLlm::start().await;
    let s = server(&mock).await;
    s.create_workspace(json!({"name": "spender", "memory": "2g", "pids": 2048}))
        .await;
    // The agent's own held call started before the budget, so it reserves nothing.
    let (id, key, root) = live_task(&s, &mock, "spender").await;
    let budget = 10u64;
    let (st, b) = s
        .call(
            "PUT",
            "/api/v1/budgets",
            Some(json!({"workspace": "spender", "max_tokens": budget, "period": "total"})),
        )
        .await;
    assert_eq!(st, 200, "{b}");
    tokio::time::sleep(Duration::from_millis(1200)).await; // the gateway's budget cache
    let before = mock.requests().len();
    // Each call is answered after 2 s, so all 20 are in flight together.
    let body = SMALL_CALL.replace("probe", "parallel-probe BERTH-MOCK-DELAY");
    let script = "k=$1; u=$2; b=$3; for i in $(seq 20); do \
         (curl -s -o /dev/null -w '%{http_code}\\n' -H \"x-api-key: $k\" \
          -H 'content-type: application/json' --data-binary \"$b\" \"$u\" > /tmp/par-$i) & \
         done; wait; cat /tmp/par-*";
    let url = format!("{root}/anthropic/v1/messages");
    let out = s
        .exec("spender", &["sh", "-c", script, "sh", &key, &url, &body])
        .await;
    let codes: Vec<u16> = out["stdout"]
        .as_str()
        .unwrap()
        .lines()
        .filter_map(|l| l.trim().parse().ok())
        .collect();
    assert_eq!(codes.len(), 20, "{out}");
    let passed = mock.requests()[before..]
        .iter()
        .filter(|r| r.body.to_string().contains("parallel-probe"))
        .count() as u64;
    assert_eq!(
        codes.iter().filter(|c| **c == 200).count() as u64,
        passed,
        "{codes:?}"
    );
    // 429: the rest is reserved by calls in flight; 403: used up (the task is stopped); 401:
    // the stopped task's key is dead.
    assert!(
        codes.iter().all(|c| [200, 401, 403, 429].contains(c)),
        "{codes:?}"
    );
    // Each call reports 30 tokens; its reservation is its body at 4 bytes a token plus its
    // max_tokens (16).
    let reservation = (body.len() as u64).div_ceil(4) + 16;
    let per_call = 30;
    assert!(passed >= 1, "{codes:?}");
    assert!(
        passed * per_call <= budget + reservation,
        "{passed} calls of {per_call} tokens passed a {budget}-token budget: {codes:?}"
    );
    let spent = eventually(Duration::from_secs(10), "usage recorded", || async {
        let list = s.get("/api/v1/budgets").await;
        let spent = list[0]["spent_tokens"].as_u64().unwrap_or(0);
        (spent == passed * per_call).then_some(spent)
    })
    .await;
    assert!(spent <= budget + reservation);

    // The budget is used up now: the next call is refused and the task ends failed.
    let (st, v) = curl_inside(
        &s,
        "spender",
        "POST",
        &url,
        &[key_header(&key), "content-type: application/json".into()],
        Some(SMALL_CALL),
    )
    .await;
    assert!(
        (st == 403 && v["code"] == "forbidden") || (st == 401 && v["code"] == "unauthorized"),
        "{st} {v}"
    );
    let t = eventually(TURN, "the task to fail", || async {
        let t = s.get(&format!("/api/v1/tasks/{id}")).await;
        (t["state"] == "failed").then_some(t)
    })
    .await;
    assert!(
        t["reason"].as_str().unwrap().starts_with("budget_exceeded"),
        "{t}"
    );
    let (st, _) = curl_inside(
        &s,
        "spender",
        "POST",
        &url,
        &[key_header(&key), "content-type: application/json".into()],
        Some(SMALL_CALL),
    )
    .await;
    assert_eq!(st, 401);
}

/// The agent's tool (run by the real CLI in the middle of its turn) uses the task's key and
/// writes it down; once the turn is over the key is refused, and the next turn the server
/// starts (`task send`) brings it back for that turn only.
///
/// Fails without the server-side revocation (the old "any task that is not final" rule): after
/// the `completed` turn the key still gets 200.
#[tokio::test]
async fn a_key_lives_only_while_the_server_runs_a_turn() {
    ensure_image().await;
    let probe = "k=$(for p in /proc/[0-9]*; do tr '\\0' '\\n' < $p/environ 2>/dev/null; done \
         | sed -n 's/^ANTHROPIC_API_KEY=//p' | head -n1); \
         u=$(for p in /proc/[0-9]*; do tr '\\0' '\\n' < $p/environ 2>/dev/null; done \
         | sed -n 's/^ANTHROPIC_BASE_URL=//p' | head -n1); \
         echo \"$k\" > /tmp/key; echo \"$u\" > /tmp/url; \
         curl -s -o /dev/null -w '%{http_code}\\n' -H \"x-api-key: $k\" \
         -H 'content-type: application/json' \
         --data-binary '{\"model\":\"m\",\"max_tokens\":8,\"messages\":[{\"role\":\"user\",\"content\":\"in-turn\"}]}' \
         \"$u/v1/messages\" >> /tmp/codes";
    let mock = MockLlm::start_with(Script {
        shell_command: probe.into(),
        ..Default::default()
    })
    .await;
    let s = server(&mock).await;
    s.create_workspace(json!({"name": "turns", "memory": "2g", "pids": 2048}))
        .await;
    let (st, task) = s
        .call(
            "POST",
            "/api/v1/tasks",
            Some(json!({"workspace": "turns", "agent": "claude", "prompt": "Run the probe, then say DONE."})),
        )
        .await;
    assert_eq!(st, 201, "{task}");
    let id = task["id"].as_str().unwrap().to_owned();
    let t = turn_over(&s, &id).await;
    assert_eq!(t["state"], "completed", "{t}\n{}", s.log());
    assert_eq!(
        read(&s, "/tmp/codes").await,
        "200",
        "the key works during its turn"
    );
    let key = read(&s, "/tmp/key").await;
    let url = format!("{}/v1/messages", read(&s, "/tmp/url").await);
    let before = mock.requests().len();
    let (st, v) = curl_inside(
        &s,
        "turns",
        "POST",
        &url,
        &[key_header(&key), "content-type: application/json".into()],
        Some(SMALL_CALL),
    )
    .await;
    assert_eq!((st, v["code"].as_str()), (401, Some("unauthorized")), "{v}");
    assert_eq!(mock.requests().len(), before);

    // A follow-up: the server starts the next turn, the key works in it, and dies with it.
    let (st, t) = s
        .call(
            "POST",
            &format!("/api/v1/tasks/{id}/messages"),
            Some(json!({"text": "Run the probe again."})),
        )
        .await;
    assert_eq!(st, 200, "{t}");
    let t = turn_over(&s, &id).await;
    assert_eq!(t["state"], "completed", "{t}\n{}", s.log());
    assert_eq!(read(&s, "/tmp/codes").await, "200\n200");
    let (st, _) = curl_inside(
        &s,
        "turns",
        "POST",
        &url,
        &[key_header(&key), "content-type: application/json".into()],
        Some(SMALL_CALL),
    )
    .await;
    assert_eq!(st, 401);
}
