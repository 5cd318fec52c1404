//! Parallel tasks of one agent in one workspace: eight at once, each in its own directory, on a
//! fresh home (so the agents' first starts, with their one-time initialisation, run
//! concurrently), for every agent, three times over. Every task must complete.

use std::time::{Duration, Instant};

use berth_test_support::agents::server_with_llm;
use berth_test_support::mock_llm::MockLlm;
use berth_test_support::{ensure_image, TestServer};
use serde_json::{json, Value};

use crate::bin;

const PARALLEL: usize = 8;
const ROUNDS: usize = 3;
/// For all `4 × PARALLEL` turns of a round together, on a small shared machine.
const TURN: Duration = Duration::from_secs(600);

/// Starts `PARALLEL` tasks of `agent` at once and waits for all; returns the ones that did not
/// complete, with their reasons and last events.
async fn round(s: &TestServer, ws: &str, agent: &str) -> Vec<String> {
    let dirs: Vec<String> = (0..PARALLEL).map(|i| format!("{agent}-{i}")).collect();
    let mkdir = format!("mkdir -p {}", dirs.join(" "));
    s.exec(ws, &["sh", "-c", &format!("cd /home/agent && {mkdir}")])
        .await;
    let starts = dirs.iter().map(|d| {
        let body = json!({
            "workspace": ws,
            "agent": agent,
            "dir": format!("~/{d}"),
            "prompt": format!("Create hello.txt containing hi, then say DONE. ({d})"),
        });
        async move { s.call("POST", "/api/v1/tasks", Some(body)).await }
    });
    let mut ids = Vec::new();
    for (st, t) in futures_util::future::join_all(starts).await {
        assert_eq!(st, 201, "{t}");
        ids.push(t["id"].as_str().unwrap().to_owned());
    }
    // All turns share one deadline; a task still going when it passes is reported as such.
    let deadline = Instant::now() + TURN;
    let mut bad = Vec::new();
    for id in &ids {
        let t = loop {
            let t = s.get(&format!("/api/v1/tasks/{id}")).await;
            let over = matches!(
                t["state"].as_str(),
                Some("completed" | "failed" | "cancelled" | "interrupted")
            );
            if over || Instant::now() > deadline {
                break t;
            }
            tokio::time::sleep(Duration::from_millis(500)).await;
        };
        if t["state"] != "completed" {
            let evs = s.get(&format!("/api/v1/tasks/{id}/events")).await;
            let tail: Vec<String> = evs
                .as_array()
                .unwrap()
                .iter()
                .rev()
                .take(6)
                .map(Value::to_string)
                .collect();
            let late = if t["state"] == "running" || t["state"] == "starting" {
                format!(" (still so {TURN:?} after the round began)")
            } else {
                String::new()
            };
            bad.push(format!(
                "{agent} task {id} in {}: {}{late} ({})\n  last events: {tail:?}",
                t["dir"], t["state"], t["reason"]
            ));
        }
    }
    // Each really did its work in its own directory.
    let check = dirs
        .iter()
        .map(|d| format!("cat /home/agent/{d}/hello.txt"))
        .collect::<Vec<_>>()
        .join("; ");
    let out = s.exec(ws, &["sh", "-c", &check]).await;
    if bad.is_empty() {
        assert_eq!(
            out["stdout"].as_str().unwrap(),
            "hi\n".repeat(PARALLEL),
            "{out}"
        );
    }
    bad
}

/// Before per-task agent state directories, concurrent starts collided on the agents' shared
/// state in the home directory. Run with the old drivers (`BERTH_TEST_AGENTS=opencode`), 8 of 24
/// opencode tasks failed: "opencode exited with code 1: params:" after its SQLite migration of
/// `~/.local/share/opencode` (a `CREATE TABLE …` dump), and "database is locked".
///
/// `BERTH_TEST_AGENTS=a,b` limits the agents. All four take about 4 minutes a round (13 minutes
/// for the three) on a 2-core machine shared with other builds: over the 5 minutes aimed at.
#[tokio::test]
async fn eight_parallel_tasks_of_each_agent_in_one_workspace_all_complete() {
    ensure_image().await;
    let mock = MockLlm::start().await;
    let s = server_with_llm(bin(), &mock, Vec::new()).await;
    let agents: Vec<String> = std::env::var("BERTH_TEST_AGENTS")
        .map(|a| a.split(',').map(str::to_owned).collect())
        .unwrap_or_else(|_| {
            ["claude", "codex", "gemini", "opencode"]
                .map(String::from)
                .to_vec()
        });
    let started = Instant::now();
    let mut bad = Vec::new();
    for r in 0..ROUNDS {
        // A fresh workspace (fresh home volume) per round: first starts every time.
        let ws = format!("par{r}");
        s.create_workspace(json!({"name": ws, "memory": "8g", "cpus": "2", "pids": 8192}))
            .await;
        // Every agent's eight at the same time.
        let t0 = Instant::now();
        let rounds = agents.iter().map(|agent| round(&s, &ws, agent));
        for failed in futures_util::future::join_all(rounds).await {
            bad.extend(failed);
        }
        eprintln!(
            "round {r}: {PARALLEL} × {agents:?} in {:?}; failed so far: {}",
            t0.elapsed(),
            bad.len()
        );
        let (st, v) = s
            .call(
                "DELETE",
                &format!("/api/v1/workspaces/{ws}?volume=true"),
                None,
            )
            .await;
        assert_eq!(st, 204, "{v}");
    }
    assert!(
        bad.is_empty(),
        "{} tasks did not complete:\n{}",
        bad.len(),
        bad.join("\n")
    );
    eprintln!(
        "{} tasks in {:?}",
        ROUNDS * PARALLEL * agents.len(),
        started.elapsed()
    );
}
