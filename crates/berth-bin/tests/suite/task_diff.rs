//! What a task changed, with the agent committing: the diff covers its commits, untracked and
//! binary files (summarised), honours .gitignore and leaves out what was uncommitted before the
//! task; per-turn diffs, `--stat`, a patch and an mbox of the agent's commits; the CLI.

use std::time::Duration;

use berth_test_support::agents::{server_with_llm, wait_turn_over};
use berth_test_support::ensure_image;
use berth_test_support::mock_llm::{MockLlm, Script};
use serde_json::{json, Value};

use crate::bin;

/// Each turn: the next line in notes.txt and a binary file, committed; an untracked file.
const AGENT_TURN: &str = "n=$(cat turn 2>/dev/null || echo 0); n=$((n+1)); echo $n > turn; \
    echo line-$n >> notes.txt; printf '\\000\\001\\002' > bin-$n.dat; git add notes.txt bin-$n.dat; \
    git -c user.name=agent -c user.email=agent@example.invalid commit -qm \"agent commit $n\"; \
    echo untracked-$n > new-$n.txt";

#[tokio::test]
async fn the_diff_includes_commits_per_turn_and_as_patches() {
    ensure_image().await;
    let mock = MockLlm::start_with(Script {
        shell_command: AGENT_TURN.into(),
        ..Script::default()
    })
    .await;
    let s = server_with_llm(bin(), &mock, Vec::new()).await;
    s.create_workspace(json!({"name": "diffs", "memory": "2g", "pids": 2048}))
        .await;
    let setup = "git init -q repo && cd repo && echo turn > .gitignore && echo base > a.txt \
        && echo before > dirty.txt && git add -A && git -c user.name=u -c user.email=u@example.invalid \
        commit -qm base && echo uncommitted-before-the-task >> dirty.txt && git rev-parse HEAD";
    let out = s.exec("diffs", &["sh", "-c", setup]).await;
    let base = out["stdout"].as_str().unwrap().trim().to_owned();
    assert_eq!(base.len(), 40, "{out}");

    let (st, task) = s
        .call(
            "POST",
            "/api/v1/tasks",
            Some(
                json!({"workspace": "diffs", "agent": "claude", "dir": "/home/agent/repo",
                        "prompt": "Make your change, then say DONE."}),
            ),
        )
        .await;
    assert_eq!(st, 201, "{task}");
    let id = task["id"].as_str().unwrap().to_owned();
    let turn = Duration::from_secs(180);
    assert_eq!(wait_turn_over(&s, &id, turn).await["state"], "completed");
    let (st, t) = s
        .call(
            "POST",
            &format!("/api/v1/tasks/{id}/messages"),
            Some(json!({"text": "Once more."})),
        )
        .await;
    assert_eq!(st, 200, "{t}");
    assert_eq!(wait_turn_over(&s, &id, turn).await["state"], "completed");
    let log = s
        .exec(
            "diffs",
            &["git", "-C", "/home/agent/repo", "log", "--oneline"],
        )
        .await;
    assert!(
        log["stdout"].as_str().unwrap().contains("agent commit 2"),
        "{log}"
    );

    let get = |q: &'static str| {
        let (s, id) = (&s, &id);
        async move { s.get(&format!("/api/v1/tasks/{id}/diff{q}")).await }
    };
    let text = |v: &Value| v["diff"].as_str().unwrap().to_owned();

    // The whole task: both commits, untracked and binary files; not the earlier dirty edit.
    let whole = get("").await;
    let d = text(&whole);
    assert_eq!(whole["base_commit"], base.as_str(), "{whole}");
    assert_eq!(whole["turns"], json!([1, 2]), "{whole}");
    for want in [
        "+line-1",
        "+line-2",
        "b/new-1.txt",
        "b/new-2.txt",
        "+untracked-2",
        "Binary files",
    ] {
        assert!(
            d.contains(want),
            "{want} missing from the task's diff:\n{d}"
        );
    }
    assert!(
        !d.contains("dirty.txt"),
        "the edit made before the task is not the task's:\n{d}"
    );
    assert!(!d.contains("b/turn"), ".gitignore is honoured:\n{d}");

    // Per turn.
    let d1 = text(&get("?turn=1").await);
    assert!(d1.contains("+line-1") && !d1.contains("+line-2"), "{d1}");
    let d2 = text(&get("?turn=2").await);
    assert!(d2.contains("+line-2") && !d2.contains("+line-1"), "{d2}");
    assert!(
        !d2.contains("new-1.txt"),
        "turn 1's untracked file is not turn 2's:\n{d2}"
    );
    let stat = text(&get("?stat=true").await);
    assert!(stat.contains("notes.txt") && stat.contains('|'), "{stat}");
    let (st, bad) = s
        .call("GET", &format!("/api/v1/tasks/{id}/diff?turn=9"), None)
        .await;
    assert_eq!(
        (st, bad["error"]["code"].as_str()),
        (400, Some("invalid_argument")),
        "{bad}"
    );

    // A patch file and an mbox of the agent's commits.
    let raw = |q: &'static str| {
        let (s, id) = (&s, &id);
        async move {
            let resp = s
                .http()
                .get(format!("{}/api/v1/tasks/{id}/patch{q}", s.url))
                .bearer_auth(&s.token)
                .send()
                .await
                .unwrap();
            let ctype = resp.headers()["content-type"].to_str().unwrap().to_owned();
            (resp.status().as_u16(), ctype, resp.text().await.unwrap())
        }
    };
    let (st, ctype, patch) = raw("").await;
    assert_eq!(st, 200, "{patch}");
    assert!(ctype.starts_with("text/x-patch"), "{ctype}");
    assert!(
        patch.contains("GIT binary patch") && patch.contains("+line-2"),
        "{patch}"
    );
    let (st, ctype, mbox) = raw("?format=mbox").await;
    assert_eq!((st, ctype.as_str()), (200, "application/mbox"), "{mbox}");
    assert!(
        mbox.contains("Subject: [PATCH 1/2] agent commit 1"),
        "{mbox}"
    );
    assert!(
        mbox.contains("Subject: [PATCH 2/2] agent commit 2"),
        "{mbox}"
    );
    // The patch applies to the base commit.
    let apply = format!(
        "rm -rf /tmp/check && git clone -q /home/agent/repo /tmp/check && cd /tmp/check && git checkout -q {base} \
         && git apply --check - && echo APPLIES"
    );
    let out = s
        .http()
        .post(format!("{}/api/v1/workspaces/diffs/exec", s.url))
        .bearer_auth(&s.token)
        .json(&json!({"cmd": ["sh", "-c", apply], "stdin": patch}))
        .send()
        .await
        .unwrap();
    let out: Value = out.json().await.unwrap();
    assert!(
        out["stdout"].as_str().unwrap_or("").contains("APPLIES"),
        "{out}"
    );

    // The CLI.
    let o = s.cli(&["task", "diff", &id, "--stat"]);
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    assert!(String::from_utf8_lossy(&o.stdout).contains("notes.txt"));
    let o = s.cli(&["task", "diff", &id, "--turn", "9"]);
    assert!(!o.status.success());
    let err = String::from_utf8_lossy(&o.stderr);
    assert_eq!(err.trim().lines().count(), 1, "{err}");
    assert!(err.contains("turn 9"), "{err}");
    let o = s.cli(&["task", "diff", &id, "--mbox"]);
    assert!(String::from_utf8_lossy(&o.stdout).contains("agent commit 2"));
}
