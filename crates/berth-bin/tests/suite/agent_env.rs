//! A task's agent runs in the workspace's environment, as terminals and exec do: the template's
//! `[env]` and the placeholder of a secret bound to the workspace reach the commands the agent
//! runs, beneath the driver's own variables (its TMPDIR and virtual key win over the
//! workspace's). Before, the daemon started agents with the driver's variables alone, so a
//! task could not use the credentials the workspace was given.

use std::time::Duration;

use berth_test_support::agents::{server_with_llm, wait_turn_over};
use berth_test_support::ensure_image;
use berth_test_support::mock_llm::{MockLlm, Script};
use serde_json::json;

use crate::bin;

const TEMPLATE: &str = "description = \"env only\"\n\n[env]\nSTAGE = \"blue\"\n\
                        TMPDIR = \"/nowhere\"\nANTHROPIC_API_KEY = \"from-the-template\"\n";

/// What the agent's shell command writes: the workspace's variables and two of the driver's.
const PROBE: &str = "printf 'stage=%s\\ntoken=%s\\nws=%s\\ntmp=%s\\nkey=%s\\n' \"$STAGE\" \
                     \"$GH_TOKEN\" \"$BERTH_WORKSPACE\" \"$TMPDIR\" \"${ANTHROPIC_API_KEY%%_*}\" \
                     > /home/agent/agent-env.txt";

fn text(o: &std::process::Output) -> String {
    format!(
        "{}{}",
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr)
    )
}

#[tokio::test]
async fn a_task_agent_sees_the_template_env_and_the_secret_placeholders() {
    ensure_image().await;
    let mock = MockLlm::start_with(Script {
        shell_command: PROBE.into(),
        ..Script::default()
    })
    .await;
    let s = server_with_llm(bin(), &mock, Vec::new()).await;
    let o = s.cli_with_stdin(
        &["secret", "set", "--tenant", "default", "GH_TOKEN"],
        b"ghp-REAL-agent-env",
    );
    assert!(o.status.success(), "{}", text(&o));
    let (st, v) = s
        .call(
            "PUT",
            "/api/v1/templates/default/envy",
            Some(json!({ "source": TEMPLATE })),
        )
        .await;
    assert_eq!(st, 201, "{v}");
    // The CLI follows the provisioning until it is done.
    let o = s.cli(&[
        "workspace",
        "create",
        "envy",
        "--template",
        "envy",
        "--secret",
        "GH_TOKEN:github.com",
        "--memory",
        "2g",
        "--pids",
        "2048",
    ]);
    assert!(o.status.success(), "{}\n{}", text(&o), s.log());
    // What a terminal or exec sees.
    let placeholder = s.sh("envy", "printf %s \"$GH_TOKEN\"").await;
    assert!(
        placeholder.starts_with("berth-placeholder-"),
        "{placeholder}"
    );
    assert_eq!(s.sh("envy", "printf %s \"$STAGE\"").await, "blue");

    let (st, task) = s
        .call(
            "POST",
            "/api/v1/tasks",
            Some(
                json!({"workspace": "envy", "agent": "claude", "prompt": "Show the environment."}),
            ),
        )
        .await;
    assert_eq!(st, 201, "{task}");
    let id = task["id"].as_str().unwrap().to_owned();
    let done = wait_turn_over(&s, &id, Duration::from_secs(180)).await;
    assert_eq!(done["state"], "completed", "{done}\n{}", s.log());

    let seen = s.sh("envy", "cat /home/agent/agent-env.txt").await;
    let want = format!(
        "stage=blue\ntoken={placeholder}\nws=default/envy\ntmp=/home/agent/.berth/tasks/{id}/tmp\nkey=berth\n"
    );
    assert_eq!(seen, want, "the agent's environment");
    // `key=berth`: the task's virtual key (`berth_…`, the driver's), not the template's value.
    assert!(!mock.requests().is_empty());
}
