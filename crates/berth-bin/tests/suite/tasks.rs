//! Agent tasks end to end: the four real agent CLIs inside a real workspace, reaching the
//! scripted mock LLM only through berth's gateway.

use std::time::Duration;

use berth_test_support::agents::{
    self, server_with_llm, task_events as events, upstream_text, REAL_KEYS,
};
use berth_test_support::mock_llm::{MockLlm, Script};
use berth_test_support::{ensure_image, eventually, TestServer};
use serde_json::{json, Value};

use crate::bin;

const TURN: Duration = Duration::from_secs(180);

async fn server_with(mock: &MockLlm) -> TestServer {
    server_with_llm(bin(), mock, Vec::new()).await
}

async fn wait_turn_over(s: &TestServer, id: &str) -> Value {
    agents::wait_turn_over(s, id, TURN).await
}

fn types(evs: &[Value]) -> Vec<String> {
    evs.iter()
        .map(|e| e["type"].as_str().unwrap().to_owned())
        .collect()
}

/// One tool-call turn and a follow-up with a real agent CLI.
async fn agent_round_trip(agent: &str) {
    ensure_image().await;
    let mock = MockLlm::start().await;
    let s = server_with(&mock).await;
    s.create_workspace(json!({"name": "agents", "memory": "2g", "pids": 2048}))
        .await;
    let prompt = format!("Create hello.txt containing hi, then say DONE. ({agent}-first-turn)");
    let (st, task) = s
        .call(
            "POST",
            "/api/v1/tasks",
            Some(json!({"workspace": "agents", "agent": agent, "prompt": prompt})),
        )
        .await;
    assert_eq!(st, 201, "{task}");
    let id = task["id"].as_str().unwrap().to_owned();
    let done = wait_turn_over(&s, &id).await;
    let evs = events(&s, &id).await;
    assert_eq!(done["state"], "completed", "{done}\n{evs:#?}\n{}", s.log());
    let kinds = types(&evs);
    let pos = |k: &str| kinds.iter().position(|t| t == k);
    let (call, result, msg) = (pos("tool_call"), pos("tool_result"), pos("message"));
    assert!(
        call.is_some() && result.is_some() && msg.is_some(),
        "{kinds:?}"
    );
    assert!(call < result && result < msg, "{kinds:?}");
    assert!(
        evs.iter()
            .any(|e| e["type"] == "message" && e["text"].as_str().unwrap_or("").contains("DONE")),
        "{evs:#?}"
    );
    assert_eq!(evs.last().unwrap()["type"], "status");
    assert_eq!(evs.last().unwrap()["state"], "completed");
    assert!(done["agent_session_id"].is_string(), "{done}");
    assert!(
        done["usage"]["input_tokens"].as_u64().unwrap() > 0,
        "{done}"
    );

    // The agent really ran its tool in the workspace.
    let out = s.exec("agents", &["cat", "/home/agent/hello.txt"]).await;
    assert_eq!(out["stdout"], "hi\n", "{out}");

    // The upstream saw only real keys; the virtual key and the real key never crossed.
    let reqs = mock.requests();
    assert!(!reqs.is_empty());
    for r in &reqs {
        let auth: Vec<&String> = r
            .headers
            .iter()
            .filter(|(n, _)| n == "authorization" || n == "x-api-key" || n == "x-goog-api-key")
            .map(|(_, v)| v)
            .collect();
        assert!(!auth.is_empty(), "{r:?}");
        for v in auth {
            assert!(
                REAL_KEYS.iter().any(|(_, k)| v.contains(k)),
                "upstream got {v}"
            );
        }
    }
    let env = s
        .exec(
            "agents",
            &[
                "sh",
                "-c",
                "env; cat /proc/*/environ 2>/dev/null | tr '\\0' '\\n'",
            ],
        )
        .await;
    for (_, k) in REAL_KEYS {
        assert!(
            !env["stdout"].as_str().unwrap().contains(k),
            "real key inside the workspace"
        );
    }

    // A follow-up continues the same conversation: the upstream sees the first turn again.
    let before = mock.requests().len();
    let (st, t) = s
        .call(
            "POST",
            &format!("/api/v1/tasks/{id}/messages"),
            Some(json!({"text": format!("And now the second turn ({agent}-second-turn)")})),
        )
        .await;
    assert_eq!(st, 200, "{t}");
    let done = wait_turn_over(&s, &id).await;
    assert_eq!(done["state"], "completed", "{done}\n{}", s.log());
    let later: Vec<String> = mock.requests()[before..]
        .iter()
        .map(|r| r.body.to_string())
        .collect();
    assert!(
        later
            .iter()
            .any(|b| b.contains(&format!("{agent}-second-turn"))
                && b.contains(&format!("{agent}-first-turn"))),
        "the follow-up request carries the earlier turn: {later:#?}"
    );
    let evs = events(&s, &id).await;
    let users: Vec<&Value> = evs.iter().filter(|e| e["type"] == "user_message").collect();
    assert_eq!(users.len(), 2, "{evs:#?}");
    assert!(
        users[1]["text"].as_str().unwrap().contains("second-turn"),
        "{users:?}"
    );
}

#[tokio::test]
async fn claude_runs_a_tool_turn_and_a_follow_up() {
    agent_round_trip("claude").await;
}

#[tokio::test]
async fn codex_runs_a_tool_turn_and_a_follow_up() {
    agent_round_trip("codex").await;
}

#[tokio::test]
async fn gemini_runs_a_tool_turn_and_a_follow_up() {
    agent_round_trip("gemini").await;
}

#[tokio::test]
async fn opencode_runs_a_tool_turn_and_a_follow_up() {
    agent_round_trip("opencode").await;
}

#[tokio::test]
async fn cancel_ends_a_long_turn_and_events_survive_a_server_restart() {
    ensure_image().await;
    // The tool takes a while, so the server can die and come back in the middle of the turn.
    let mock = MockLlm::start_with(Script {
        shell_command: "sleep 6; echo hi > hello.txt".into(),
        ..Default::default()
    })
    .await;
    let mut s = server_with(&mock).await;
    s.create_workspace(json!({"name": "restart", "memory": "2g", "pids": 2048}))
        .await;
    let (st, task) = s
        .call(
            "POST",
            "/api/v1/tasks",
            Some(json!({"workspace": "restart", "agent": "claude", "prompt": "Create hello.txt, then say DONE."})),
        )
        .await;
    assert_eq!(st, 201, "{task}");
    let id = task["id"].as_str().unwrap().to_owned();
    // Wait for the tool call, then kill the server while the tool runs.
    eventually(TURN, "the tool call", || async {
        let evs = s.get(&format!("/api/v1/tasks/{id}/events")).await;
        evs.as_array()
            .unwrap()
            .iter()
            .any(|e| e["type"] == "tool_call")
            .then_some(())
    })
    .await;
    let seen = s.get(&format!("/api/v1/tasks/{id}")).await["last_seq"]
        .as_u64()
        .unwrap();
    s.kill9();
    tokio::time::sleep(Duration::from_secs(2)).await;
    s.restart().await;
    let done = wait_turn_over(&s, &id).await;
    assert_eq!(done["state"], "completed", "{done}\n{}", s.log());
    let evs = events(&s, &id).await; // asserts contiguous seq: no gap, no duplicate
    assert!(evs.len() as u64 > seen);
    let kinds = types(&evs);
    assert_eq!(
        kinds.iter().filter(|k| *k == "tool_result").count(),
        1,
        "{kinds:?}"
    );
    assert_eq!(
        s.exec("restart", &["cat", "hello.txt"]).await["stdout"],
        "hi\n"
    );

    // Cancel a turn that hangs on the LLM.
    let (st, _) = s
        .call(
            "POST",
            &format!("/api/v1/tasks/{id}/messages"),
            Some(json!({"text": "SLOW: think for a long time"})),
        )
        .await;
    assert_eq!(st, 200);
    eventually(TURN, "the turn to be running", || async {
        let t = s.get(&format!("/api/v1/tasks/{id}")).await;
        (t["state"] == "running").then_some(())
    })
    .await;
    tokio::time::sleep(Duration::from_secs(2)).await;
    let t0 = std::time::Instant::now();
    let (st, t) = s
        .call("POST", &format!("/api/v1/tasks/{id}/cancel"), None)
        .await;
    assert_eq!(st, 200, "{t}");
    assert_eq!(t["state"], "cancelled", "{t}");
    assert!(t0.elapsed() < Duration::from_secs(10));
    // Cancelled is final.
    let (st, v) = s
        .call(
            "POST",
            &format!("/api/v1/tasks/{id}/messages"),
            Some(json!({"text": "more"})),
        )
        .await;
    assert_eq!(
        (st, v["error"]["code"].as_str()),
        (409, Some("invalid_state")),
        "{v}"
    );
    let evs = events(&s, &id).await;
    assert_eq!(evs.last().unwrap()["state"], "cancelled");
    // No agent process is left behind.
    let ps = s
        .exec(
            "restart",
            &["sh", "-c", "ps -eo comm | grep -c claude || true"],
        )
        .await;
    assert_eq!(ps["stdout"].as_str().unwrap().trim(), "0", "{ps}");
    let _ = upstream_text(&mock);
}

#[tokio::test]
async fn task_bad_input() {
    ensure_image().await;
    let mock = MockLlm::start().await;
    let s = server_with(&mock).await;
    s.create_workspace(json!({"name": "bad", "memory": "256m"}))
        .await;
    let cases = [
        (
            json!({"workspace": "bad", "agent": "cursor", "prompt": "x"}),
            400,
            "invalid_argument",
        ),
        (
            json!({"workspace": "bad", "agent": "claude", "prompt": "  "}),
            400,
            "invalid_argument",
        ),
        (
            json!({"workspace": "nope", "agent": "claude", "prompt": "x"}),
            404,
            "not_found",
        ),
        (
            json!({"workspace": "bad", "agent": "claude", "prompt": "x", "dir": "relative"}),
            400,
            "invalid_argument",
        ),
        (
            json!({"workspace": "bad", "agent": "claude", "prompt": "x", "worktree": "a..b"}),
            400,
            "invalid_argument",
        ),
        (
            json!({"workspace": "bad", "agent": "claude"}),
            400,
            "invalid_argument",
        ),
    ];
    for (body, status, code) in cases {
        let (st, v) = s.call("POST", "/api/v1/tasks", Some(body.clone())).await;
        assert_eq!(
            (st, v["error"]["code"].as_str()),
            (status, Some(code)),
            "{body}: {v}"
        );
    }
    let (st, v) = s.call("GET", "/api/v1/tasks/tk_nope", None).await;
    assert_eq!((st, v["error"]["code"].as_str()), (404, Some("not_found")));
    let (st, v) = s.call("GET", "/api/v1/tasks?state=bogus", None).await;
    assert_eq!(
        (st, v["error"]["code"].as_str()),
        (400, Some("invalid_argument"))
    );
    // A stopped workspace takes no task.
    let (st, _) = s.call("POST", "/api/v1/workspaces/bad/stop", None).await;
    assert_eq!(st, 200);
    let (st, v) = s
        .call(
            "POST",
            "/api/v1/tasks",
            Some(json!({"workspace": "bad", "agent": "claude", "prompt": "x"})),
        )
        .await;
    assert_eq!(
        (st, v["error"]["code"].as_str()),
        (409, Some("invalid_state")),
        "{v}"
    );
    assert!(s.get("/api/v1/tasks").await.as_array().unwrap().is_empty());
}

#[tokio::test]
async fn cli_task_run_logs_and_parallel_worktrees() {
    ensure_image().await;
    let mock = MockLlm::start().await;
    let s = server_with(&mock).await;
    s.create_workspace(json!({"name": "cli", "memory": "2g", "pids": 2048}))
        .await;
    // A repository to work in, with two tasks on their own worktrees in parallel.
    let init = s
        .exec(
            "cli",
            &[
                "sh",
                "-c",
                "git init -q -b main ~/repo && cd ~/repo && git -c user.email=a@b -c user.name=a commit -q --allow-empty -m init && echo ok",
            ],
        )
        .await;
    assert_eq!(init["stdout"], "ok\n", "{init}");
    let o = s.cli(&[
        "task",
        "run",
        "cli",
        "--agent",
        "claude",
        "--dir",
        "~/repo",
        "--worktree",
        "feature-a",
        "--detach",
        "Create hello.txt, then say DONE.",
    ]);
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let a = String::from_utf8_lossy(&o.stdout).trim().to_owned();
    assert!(a.starts_with("tk_"), "{a}");
    // The second one runs in the foreground and streams its events until the turn is over.
    let o = s.cli(&[
        "task",
        "run",
        "cli",
        "--agent",
        "codex",
        "--dir",
        "~/repo",
        "--worktree",
        "feature-b",
        "--json",
        "Create hello.txt, then say DONE.",
    ]);
    let out = String::from_utf8_lossy(&o.stdout).into_owned();
    assert!(
        o.status.success(),
        "{out}\n{}",
        String::from_utf8_lossy(&o.stderr)
    );
    let lines: Vec<Value> = out
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    for (i, e) in lines.iter().enumerate() {
        assert_eq!(e["seq"], i as u64 + 1, "{out}");
    }
    assert_eq!(lines.last().unwrap()["state"], "completed", "{out}");
    let a_done = wait_turn_over(&s, &a).await;
    assert_eq!(a_done["state"], "completed", "{a_done}");
    // Each task wrote into its own worktree on its own branch.
    let check = s
        .exec(
            "cli",
            &["sh", "-c", "cd ~/repo && git worktree list | wc -l && git for-each-ref --format='%(refname:short)' 'refs/heads/feature-*' && ls ~/.berth/worktrees/*/hello.txt | wc -l"],
        )
        .await;
    assert_eq!(check["stdout"], "3\nfeature-a\nfeature-b\n2\n", "{check}");

    // The diff of a worktree task shows what its agent wrote.
    let d = s.get(&format!("/api/v1/tasks/{a}/diff")).await;
    assert_eq!(d["git"], true, "{d}");
    assert!(d["dir"].as_str().unwrap().ends_with(&a), "{d}");
    let diff = d["diff"].as_str().unwrap();
    assert!(
        diff.contains("+++ b/hello.txt") && diff.contains("+hi"),
        "{diff}"
    );

    // list, show, logs through the CLI.
    let o = s.cli(&["task", "list", "--workspace", "cli", "--json"]);
    let list: Value = serde_json::from_slice(&o.stdout).unwrap();
    assert_eq!(list.as_array().unwrap().len(), 2);
    let o = s.cli(&["task", "show", &a]);
    let shown = String::from_utf8_lossy(&o.stdout).into_owned();
    assert!(
        shown.contains("completed") && shown.contains("claude") && shown.contains("feature-a"),
        "{shown}"
    );
    let o = s.cli(&["task", "logs", &a]);
    let logs = String::from_utf8_lossy(&o.stdout).into_owned();
    assert!(
        logs.contains("DONE") && logs.contains("echo hi > hello.txt"),
        "{logs}"
    );
    // Bad input through the CLI: one line, non-zero.
    let o = s.cli(&["task", "send", "tk_nope", "hello"]);
    assert_eq!(o.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&o.stderr).starts_with("error: "));
}

#[tokio::test]
async fn a_missing_agent_cli_fails_the_task_with_a_reason() {
    let image = berth_test_support::ensure_image_without("claude").await;
    let mock = MockLlm::start().await;
    let s = server_with(&mock).await;
    s.create_workspace(json!({"name": "nocli", "memory": "256m", "image": image}))
        .await;
    let (st, task) = s
        .call(
            "POST",
            "/api/v1/tasks",
            Some(json!({"workspace": "nocli", "agent": "claude", "prompt": "hi"})),
        )
        .await;
    assert_eq!(st, 201, "{task}");
    let done = wait_turn_over(&s, task["id"].as_str().unwrap()).await;
    assert_eq!(done["state"], "failed");
    assert!(
        done["reason"]
            .as_str()
            .unwrap()
            .contains("`claude` is not installed"),
        "{done}"
    );
    assert!(mock.requests().is_empty());
}

#[tokio::test]
async fn gateway_counts_usage_and_enforces_budgets() {
    ensure_image().await;
    let mock = MockLlm::start().await;
    // Prompt recording on, kept 7 days.
    let s = server_with_llm(
        bin(),
        &mock,
        vec![("BERTH_GATEWAY_RECORD_DAYS".into(), "7".into())],
    )
    .await;
    // The operator's price table, picked up without a restart.
    std::fs::write(
        s.data_dir.path().join("prices.toml"),
        "[models.\"gpt-5.5\"]\ninput = 2.0\noutput = 10.0\n",
    )
    .unwrap();
    s.create_workspace(json!({"name": "metered", "tenant": "acme", "memory": "2g", "pids": 2048}))
        .await;
    let (st, task) = s
        .call(
            "POST",
            "/api/v1/tasks",
            Some(json!({"workspace": "acme/metered", "agent": "codex", "prompt": "Create hello.txt, then say DONE."})),
        )
        .await;
    assert_eq!(st, 201, "{task}");
    let done = wait_turn_over(&s, task["id"].as_str().unwrap()).await;
    assert_eq!(done["state"], "completed", "{done}");
    let calls = mock.requests().len() as u64;
    let report = eventually(Duration::from_secs(10), "usage recorded", || async {
        let r = s.get("/api/v1/usage?tenant=acme").await;
        (r["total"]["calls"].as_u64() == Some(calls)).then_some(r)
    })
    .await;
    let row = &report["rows"][0];
    assert_eq!(row["workspace"], "acme/metered");
    assert_eq!(row["provider"], "openai");
    assert_eq!(row["model"], "gpt-5.5");
    assert_eq!(row["input_tokens"], 20 * calls);
    assert_eq!(row["output_tokens"], 10 * calls);
    let cost = row["cost_usd"].as_f64().unwrap();
    let want = (20 * calls) as f64 * 2.0 / 1e6 + (10 * calls) as f64 * 10.0 / 1e6;
    assert!((cost - want).abs() < 1e-12, "{cost} vs {want}");
    let o = s.cli(&["usage", "--workspace", "acme/metered"]);
    let table = String::from_utf8_lossy(&o.stdout).into_owned();
    assert!(
        table.contains("acme/metered") && table.contains("gpt-5.5") && table.contains("TOTAL"),
        "{table}"
    );
    // Each call is listed, and with recording on its prompt and answer can be read back.
    let listed = s.get("/api/v1/usage/calls?workspace=acme/metered").await;
    let listed = listed.as_array().unwrap();
    assert_eq!(listed.len() as u64, calls, "one entry per upstream request");
    assert!(
        listed
            .iter()
            .all(|c| c["recorded"] == true && c["status"] == 200),
        "{listed:?}"
    );
    let mut saw_prompt = false;
    let mut saw_done = false;
    for c in listed {
        let d = s.get(&format!("/api/v1/usage/calls/{}", c["id"])).await;
        saw_prompt |= d["request"].as_str().unwrap().contains("Create hello.txt");
        saw_done |= d["response"].as_str().unwrap().contains("DONE");
        assert!(
            !d["request"].as_str().unwrap().contains("real-openai-key"),
            "no keys in recordings"
        );
    }
    assert!(saw_prompt && saw_done);
    let (st, v) = s.call("GET", "/api/v1/usage?since=yesterday", None).await;
    assert_eq!(
        (st, v["error"]["code"].as_str()),
        (400, Some("invalid_argument"))
    );

    // A tenant budget that is already used up: the next call is refused in the provider's
    // shape and the task ends failed{budget_exceeded}.
    let o = s.cli(&[
        "budget", "set", "--tenant", "acme", "--tokens", "50", "--period", "day",
    ]);
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let budgets = s.get("/api/v1/budgets").await;
    assert_eq!(budgets[0]["spent_tokens"], 30 * calls);
    let before = mock.requests().len();
    let (st, task) = s
        .call(
            "POST",
            "/api/v1/tasks",
            Some(json!({"workspace": "acme/metered", "agent": "claude", "prompt": "Create hello.txt, then say DONE."})),
        )
        .await;
    assert_eq!(st, 201, "{task}");
    let done = wait_turn_over(&s, task["id"].as_str().unwrap()).await;
    assert_eq!(done["state"], "failed", "{done}");
    assert!(
        done["reason"]
            .as_str()
            .unwrap()
            .starts_with("budget_exceeded"),
        "{done}"
    );
    assert_eq!(
        mock.requests().len(),
        before,
        "no call reached the upstream over budget"
    );
    let o = s.cli(&["budget", "rm", "--tenant", "acme"]);
    assert!(o.status.success());
    assert!(s
        .get("/api/v1/budgets")
        .await
        .as_array()
        .unwrap()
        .is_empty());
}

/// Tasks stay with the workspace they ran in (its id), not with its name: after `workspace rm`
/// and a new `workspace create` of the same name, the new workspace lists only its own tasks,
/// and the full list shows the old ones as the removed workspace's (issue 16 §5).
#[tokio::test]
async fn tasks_stay_with_the_workspace_they_ran_in_not_its_name() {
    ensure_image().await;
    let mock = MockLlm::start().await;
    let s = server_with(&mock).await;
    let run_one = |tag: &'static str| {
        let s = &s;
        async move {
            let (st, t) = s
                .call(
                    "POST",
                    "/api/v1/tasks",
                    Some(json!({"workspace": "acme/web", "agent": "claude", "prompt": format!("say DONE ({tag})")})),
                )
                .await;
            assert_eq!(st, 201, "{t}");
            let id = t["id"].as_str().unwrap().to_owned();
            wait_turn_over(s, &id).await;
            (id, t["workspace_id"].as_str().unwrap().to_owned())
        }
    };
    let ids = |v: Value| -> Vec<String> {
        v.as_array()
            .unwrap()
            .iter()
            .map(|t| t["id"].as_str().unwrap().to_owned())
            .collect()
    };

    let old_ws = s
        .create_workspace(json!({"tenant": "acme", "name": "web", "memory": "1g"}))
        .await;
    let (old_task, ran_in) = run_one("old").await;
    assert_eq!(ran_in, old_ws["id"].as_str().unwrap());
    let (st, v) = s
        .call("DELETE", "/api/v1/workspaces/acme%2Fweb", None)
        .await;
    assert!(st == 200 || st == 204, "{st} {v}");
    let new_ws = s
        .create_workspace(json!({"tenant": "acme", "name": "web", "memory": "1g"}))
        .await;
    assert_ne!(new_ws["id"], old_ws["id"]);
    let (new_task, ran_in) = run_one("new").await;
    assert_eq!(ran_in, new_ws["id"].as_str().unwrap());

    // The workspace's list and the full list agree: the old task is not the new workspace's.
    let mine = ids(s.get("/api/v1/tasks?workspace=acme%2Fweb").await);
    assert_eq!(mine, std::slice::from_ref(&new_task));
    let all = s.get("/api/v1/tasks").await;
    let by_id = |id: &str| {
        all.as_array()
            .unwrap()
            .iter()
            .find(|t| t["id"] == id)
            .cloned()
            .unwrap_or_else(|| panic!("{id} not in {all}"))
    };
    let (old, new) = (by_id(&old_task), by_id(&new_task));
    assert_eq!(old["workspace_removed"], true, "{old}");
    assert_eq!(old["workspace_id"], old_ws["id"], "{old}");
    assert!(new.get("workspace_removed").is_none(), "{new}");
    let shown = s.get(&format!("/api/v1/tasks/{old_task}")).await;
    assert_eq!(shown["workspace_removed"], true, "{shown}");

    // The CLI says the same.
    let o = s.cli(&["task", "list", "--workspace", "acme/web"]);
    let out = String::from_utf8_lossy(&o.stdout).into_owned();
    assert!(o.status.success(), "{out}");
    assert!(out.contains(&new_task) && !out.contains(&old_task), "{out}");
    let o = s.cli(&["task", "list"]);
    let out = String::from_utf8_lossy(&o.stdout).into_owned();
    let old_line = out
        .lines()
        .find(|l| l.contains(&old_task))
        .unwrap_or_default();
    let new_line = out
        .lines()
        .find(|l| l.contains(&new_task))
        .unwrap_or_default();
    assert!(old_line.contains("acme/web (removed)"), "{out}");
    assert!(
        new_line.contains("acme/web") && !new_line.contains("(removed)"),
        "{out}"
    );
    let o = s.cli(&["task", "show", &old_task]);
    assert!(
        String::from_utf8_lossy(&o.stdout).contains("acme/web (removed)"),
        "{}",
        String::from_utf8_lossy(&o.stdout)
    );
}
