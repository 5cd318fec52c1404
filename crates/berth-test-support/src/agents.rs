//! Shared setup of the agent suites (tasks, agent sessions, the hostile gateway, parallel tasks):
//! a real server whose gateway reaches the scripted [`MockLlm`] with known "real" provider keys
//! (so a test can check that only those ever reach the upstream), and waiting on a task's turn.

use std::path::Path;
use std::time::Duration;

use serde_json::Value;

use crate::mock_llm::MockLlm;
use crate::{eventually, ServerOptions, TestServer};

/// The provider keys the server holds (`BERTH_<PROVIDER>_API_KEY`): what the upstream may see,
/// and what must never show up inside a workspace.
pub const REAL_KEYS: [(&str, &str); 3] = [
    ("ANTHROPIC", "real-anthropic-key-123"),
    ("OPENAI", "real-openai-key-456"),
    ("GEMINI", "real-gemini-key-789"),
];

/// Server environment that points every provider at `mock` with the key `key(provider)`.
pub fn provider_env(mock: &MockLlm, key: impl Fn(&str) -> String) -> Vec<(String, String)> {
    let mut env = Vec::new();
    for (p, _) in REAL_KEYS {
        env.push((format!("BERTH_{p}_BASE_URL"), mock.url()));
        env.push((format!("BERTH_{p}_API_KEY"), key(p)));
    }
    env
}

/// The key of [`REAL_KEYS`] for `provider`.
pub fn real_key(provider: &str) -> String {
    REAL_KEYS
        .iter()
        .find(|(p, _)| *p == provider)
        .map(|(_, k)| (*k).to_owned())
        .unwrap_or_default()
}

/// A server whose gateway reaches `mock` with [`REAL_KEYS`], plus `env`.
pub async fn server_with_llm(bin: &Path, mock: &MockLlm, env: Vec<(String, String)>) -> TestServer {
    let mut all = provider_env(mock, real_key);
    all.extend(env);
    TestServer::start_with(
        bin,
        ServerOptions {
            env: all,
            ..Default::default()
        },
    )
    .await
}

/// Waits until the task's turn is over (`completed`, `failed` or `cancelled`) and returns it.
pub async fn wait_turn_over(s: &TestServer, id: &str, timeout: Duration) -> Value {
    eventually(timeout, "the turn to end", || async {
        let t = s.get(&format!("/api/v1/tasks/{id}")).await;
        matches!(
            t["state"].as_str(),
            Some("completed" | "failed" | "cancelled")
        )
        .then_some(t)
    })
    .await
}

/// The task's stored events, checked to be numbered 1, 2, 3, … without a gap.
pub async fn task_events(s: &TestServer, id: &str) -> Vec<Value> {
    let v = s.get(&format!("/api/v1/tasks/{id}/events")).await;
    let list = v.as_array().unwrap().clone();
    for (i, e) in list.iter().enumerate() {
        assert_eq!(e["seq"], i as u64 + 1, "seq contiguous from 1: {list:#?}");
    }
    list
}

/// Every request body the mock upstream received, one per line.
pub fn upstream_text(mock: &MockLlm) -> String {
    mock.requests()
        .iter()
        .map(|r| r.body.to_string())
        .collect::<Vec<_>>()
        .join("\n")
}
