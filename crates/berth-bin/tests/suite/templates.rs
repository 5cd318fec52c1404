//! Workspace templates end to end, against real components: a real git server (`git
//! http-backend` behind HTTPS with a test CA, requiring a token) in a network namespace the test
//! creates, reached by the workspace only through berth's egress proxy; the real CLI; a real
//! workspace container.
//!
//! Proves: the repository is cloned with the token although the workspace only ever holds the
//! secret's placeholder (the git server received the real token; a root grep of the container
//! and the workspace's environment and git config find no trace of it); parameters and
//! environment reach the workspace; setup steps run in order; tasks and agent sessions are
//! refused (409 `provisioning`) until setup is done; a failing step leaves the workspace
//! `failed{provision}` with the step's log, and `berth workspace provision --retry` resumes at
//! that step without re-running the clone; bad templates are refused with the key path, by
//! the CLI (naming the file) and by the REST API (`template_invalid`); a missing parameter is
//! one readable line and exit 1.
//!
//! Image extras (a derived image built from package registries) are `template_image`'s.

use std::time::Duration;

use berth_test_support::git_server::GitServer;
use berth_test_support::{enc, ensure_image, eventually, ServerOptions, TestServer};
use serde_json::{json, Value};

use super::egress::{exec_sh, run_as, run_as_root, NetnsHost};
use crate::bin;

const REAL: &str = "glpat-REALgitTOKEN-0123456789";

const TEMPLATE: &str = r#"
description = "the app, cloned and built"
approval = "on-request"

[[param]]
name = "repo"
description = "the repository URL"
required = true

[[param]]
name = "branch"
default = "main"

[[param]]
name = "mode"
default = "dev"

[resources]
memory = "256m"

[git]
name = "Template Agent"
email = "agent@example.com"

[[repo]]
url = "{{repo}}"
branch = "{{branch}}"
dir = "app"
credential = "GIT_TOKEN"

[[secret]]
name = "GIT_TOKEN"
hosts = ["git.test"]

[egress]
rules = ["allow git.test:8443"]

[env]
APP_MODE = "{{mode}}"

[[setup]]
name = "build"
run = "cd app && cat README.md > ~/built.txt && echo built-marker"
timeout = "1m"

[[setup]]
name = "check"
run = "sleep 2; echo check-output; test -f ~/flag || { echo no flag; exit 3; }"
timeout = 60

[[mcp]]
name = "tools"
type = "stdio"
command = "tools-server"
args = ["--mode", "{{mode}}"]
"#;

fn text(o: &std::process::Output) -> (String, String) {
    (
        String::from_utf8_lossy(&o.stdout).into_owned(),
        String::from_utf8_lossy(&o.stderr).into_owned(),
    )
}

#[tokio::test]
async fn a_template_provisions_a_workspace_with_a_placeholder_credential_and_resumes_a_failed_step()
{
    ensure_image().await;
    let git = GitServer::prepare(
        "git.test",
        REAL,
        &[("app", &[("README.md", "hello from the template repo\n")])],
    );
    let cmd = git.command();
    let argv: Vec<&str> = cmd.iter().map(String::as_str).collect();
    let host = NetnsHost::start_serving(&argv, 3);
    let s = TestServer::start_with(
        bin(),
        ServerOptions {
            env: vec![
                ("BERTH_EGRESS_HOSTS".into(), format!("git.test={}", host.ip)),
                (
                    "BERTH_EGRESS_EXTRA_CA".into(),
                    git.ca().display().to_string(),
                ),
                // A provider is configured, so a refused task is refused for its provisioning
                // (the provider check would answer 424 first otherwise); no call is made.
                (
                    "BERTH_ANTHROPIC_BASE_URL".into(),
                    "http://127.0.0.1:9".into(),
                ),
                ("BERTH_ANTHROPIC_API_KEY".into(), "unused-key".into()),
            ],
            ..Default::default()
        },
    )
    .await;
    let o = s.cli_with_stdin(
        &["secret", "set", "--tenant", "acme", "GIT_TOKEN"],
        REAL.as_bytes(),
    );
    assert!(o.status.success(), "{:?}", text(&o));

    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("web.toml");

    // A bad file: refused by the CLI with the file and the key path, nothing stored.
    std::fs::write(&file, TEMPLATE.replace("timeout = 60", "timout = 60")).unwrap();
    let f = file.to_str().unwrap();
    let o = s.cli(&["template", "set", "--tenant", "acme", "web", f]);
    let (_, err) = text(&o);
    assert_eq!(o.status.code(), Some(1), "{err}");
    assert_eq!(err.lines().count(), 1, "{err}");
    assert!(
        err.contains(f) && err.contains("setup[1].timout: unknown key"),
        "{err}"
    );
    // The same through REST: 422 template_invalid naming the key.
    let (st, v) = s
        .call(
            "PUT",
            "/api/v1/templates/acme/web",
            Some(json!({"source": TEMPLATE.replace("timeout = \"1m\"", "timeout = \"forever\"")})),
        )
        .await;
    assert_eq!(st, 422, "{v}");
    assert_eq!(v["error"]["code"], "template_invalid");
    let m = v["error"]["message"].as_str().unwrap();
    assert!(m.contains("setup[0].timeout"), "{m}");
    // A package name that is not one (an option here) is refused, with the key.
    let (st, v) = s
        .call(
            "PUT",
            "/api/v1/templates/acme/web",
            Some(json!({"source": "[image]\napt = [\"jq\", \"-oAPT::Get::Foo=1\"]\n"})),
        )
        .await;
    assert_eq!(st, 422, "{v}");
    assert!(v["error"]["message"]
        .as_str()
        .unwrap()
        .contains("image.apt[1]"));
    let (st, _) = s.call("GET", "/api/v1/templates/acme/web", None).await;
    assert_eq!(st, 404, "nothing was stored");

    // The good file: revision 1, then 2.
    std::fs::write(&file, TEMPLATE).unwrap();
    for rev in ["1", "2"] {
        let o = s.cli(&["template", "set", "--tenant", "acme", "web", f]);
        let (out, err) = text(&o);
        assert!(o.status.success(), "{err}");
        assert_eq!(out, format!("template acme/web revision {rev} stored\n"));
    }
    let o = s.cli(&[
        "template",
        "show",
        "--tenant",
        "acme",
        "web",
        "--revision",
        "1",
    ]);
    let (out, _) = text(&o);
    assert!(
        out.contains("1 of 2") && out.contains("repo: required"),
        "{out}"
    );

    // A missing required parameter: one readable line, exit 1, nothing created.
    let o = s.cli(&[
        "workspace",
        "create",
        "app",
        "--tenant",
        "acme",
        "--template",
        "web",
    ]);
    let (_, err) = text(&o);
    assert_eq!(o.status.code(), Some(1), "{err}");
    assert_eq!(err.lines().count(), 1, "{err}");
    assert!(
        err.contains("parameter repo is required") && err.contains("param_missing"),
        "{err}"
    );
    let (st, _) = s
        .call(
            "GET",
            &format!("/api/v1/workspaces/{}", enc("acme/app")),
            None,
        )
        .await;
    assert_eq!(st, 404);

    // Create: returns once the workspace runs; provisioning goes on.
    let o = s.cli(&[
        "workspace",
        "create",
        "app",
        "--tenant",
        "acme",
        "--template",
        "web",
        "--param",
        "repo=https://git.test:8443/app.git",
        "--param",
        "mode=staging",
        "--no-follow",
    ]);
    let (out, err) = text(&o);
    assert!(o.status.success(), "{out}{err}\n{}", s.log());
    let ws = "acme/app";
    let prov = format!("/api/v1/workspaces/{}/provision", enc(ws));

    // While setup runs, no task and no agent session.
    let (st, v) = s
        .call(
            "POST",
            "/api/v1/tasks",
            Some(json!({"workspace": ws, "agent": "claude", "prompt": "hi"})),
        )
        .await;
    assert_eq!(
        (st, v["error"]["code"].as_str()),
        (409, Some("provisioning")),
        "{v}"
    );
    let (st, v) = s
        .call(
            "POST",
            &format!("/api/v1/workspaces/{}/sessions", enc(ws)),
            Some(json!({"agent": "claude"})),
        )
        .await;
    assert_eq!(
        (st, v["error"]["code"].as_str()),
        (409, Some("provisioning")),
        "{v}"
    );

    // The check step fails (no flag yet): failed{provision}, with the step's log.
    let status: Value = eventually(Duration::from_secs(180), "provisioning fails", || async {
        let (_, v) = s.call("GET", &prov, None).await;
        (v["state"] == "failed").then_some(v)
    })
    .await;
    let steps = status["steps"].as_array().unwrap();
    let names: Vec<&str> = steps.iter().map(|s| s["name"].as_str().unwrap()).collect();
    assert_eq!(
        names,
        ["git identity", "clone app", "build", "check"],
        "{status}"
    );
    let states: Vec<&str> = steps.iter().map(|s| s["state"].as_str().unwrap()).collect();
    assert_eq!(states, ["done", "done", "done", "failed"], "{status}");
    assert_eq!(steps[3]["exit_code"], 3);
    assert!(
        steps[3]["log"].as_str().unwrap().contains("no flag"),
        "{status}"
    );
    assert!(steps[2]["log"].as_str().unwrap().contains("built-marker"));
    assert_eq!(status["params"]["mode"], "staging");
    assert_eq!(status["revision"], 2);
    let w = s.get(&format!("/api/v1/workspaces/{}", enc(ws))).await;
    assert_eq!(w["state"], "failed", "{w}");
    assert_eq!(w["last_failure"]["reason"], "provision", "{w}");
    // The reconciler leaves it failed although the container runs.
    tokio::time::sleep(Duration::from_secs(5)).await;
    let w = s.get(&format!("/api/v1/workspaces/{}", enc(ws))).await;
    assert_eq!(w["state"], "failed", "{w}");
    let o = s.cli(&["workspace", "provision", ws]);
    let (out, _) = text(&o);
    assert!(
        out.contains("log of step 4 (check)") && out.contains("no flag"),
        "{out}"
    );

    // The clone went through the proxy with the real token, the workspace held a placeholder.
    let container = w["container_id"].as_str().unwrap().to_owned();
    let (code, readme) = run_as_root(&container, "cat /home/agent/app/README.md").await;
    assert_eq!(
        (code, readme.as_str()),
        (0, "hello from the template repo\n")
    );
    let passwords = git.basic_passwords();
    assert!(
        !passwords.is_empty() && passwords.iter().all(|p| p == REAL),
        "the git server got: {passwords:?}"
    );
    let (code, found) = run_as_root(
        &container,
        &format!(
            "grep -rIl -- '{REAL}' /home /run /etc /tmp /opt 2>/dev/null; \
             cat /proc/[0-9]*/environ 2>/dev/null | tr '\\0' '\\n' | grep -c -- '{REAL}'"
        ),
    )
    .await;
    assert_eq!(
        found.trim(),
        "0",
        "the token is inside the workspace: {found} ({code})"
    );
    // What the workspace holds instead: its placeholder, as the git password of the repo's
    // extraHeader.
    let (_, ph) = run_as_root(
        &container,
        "printenv GIT_TOKEN || cat /proc/1/environ | tr '\\0' '\\n' | sed -n 's/^GIT_TOKEN=//p'",
    )
    .await;
    let ph = ph.trim().to_owned();
    assert!(!ph.is_empty() && ph != REAL, "placeholder {ph:?}");
    let (_, header) = run_as_root(
        &container,
        "git config -f /home/agent/app/.git/config http.extraHeader",
    )
    .await;
    use base64::Engine as _;
    let b64 = header.trim().strip_prefix("Authorization: Basic ").unwrap();
    let decoded = base64::engine::general_purpose::STANDARD
        .decode(b64)
        .unwrap();
    assert_eq!(
        String::from_utf8(decoded).unwrap(),
        format!("x-access-token:{ph}")
    );
    assert!(
        !git.auth_log().contains(&ph),
        "a placeholder reached the server"
    );

    // Retry once the cause is fixed: only the failed step runs again.
    let clone_finished = steps[1]["finished_at"].clone();
    // As the agent user, through the engine: the workspace is `failed`, so berth's own exec
    // refuses it.
    let (code, out) = run_as(&container, "1000", "touch /home/agent/flag").await;
    assert_eq!(code, 0, "{out}");
    let o = s.cli(&["workspace", "provision", ws, "--retry"]);
    let (out, err) = text(&o);
    assert!(o.status.success(), "{out}{err}");
    assert!(out.contains("[4/4] check: done"), "{out}");
    assert!(out.contains("check-output"), "live log printed: {out}");
    assert!(
        out.contains("provisioned acme/app from template web revision 2"),
        "{out}"
    );
    let (_, v) = s.call("GET", &prov, None).await;
    assert_eq!(v["state"], "done");
    assert_eq!(
        v["steps"][1]["finished_at"], clone_finished,
        "the clone ran again: {v}"
    );
    let w = s.get(&format!("/api/v1/workspaces/{}", enc(ws))).await;
    assert_eq!(w["state"], "running", "{w}");

    // What setup made, the git identity and the parameters' environment, as the agent sees it.
    let (code, out) = exec_sh(
        &s,
        ws,
        "cat ~/built.txt; git config --global user.name; echo \"mode=$APP_MODE\"",
    )
    .await;
    assert_eq!(code, 0, "{out}");
    assert_eq!(
        out,
        "hello from the template repo\nTemplate Agent\nmode=staging\n"
    );
    // The agent's own view of the token: the placeholder, and fetching works through berth.
    let (code, out) = exec_sh(
        &s,
        ws,
        "cd ~/app && git fetch -q origin && git log -1 --format=%s origin/main",
    )
    .await;
    assert_eq!((code, out.as_str()), (0, "init\n"));

    // Setup done: a task is no longer refused for provisioning.
    let (_, v) = s
        .call(
            "POST",
            "/api/v1/tasks",
            Some(json!({"workspace": ws, "agent": "claude", "prompt": "hi"})),
        )
        .await;
    assert_ne!(v["error"]["code"], "provisioning", "{v}");
    // The template's approval policy is the workspace's default.
    assert_eq!(v["approval"], "on-request", "{v}");

    // Upgrade to a revision that changes only the check step: only that step runs again.
    let (_, before) = s.call("GET", &prov, None).await;
    let build_finished = before["steps"][2]["finished_at"].clone();
    assert!(build_finished.is_string(), "{before}");
    std::fs::write(
        &file,
        TEMPLATE.replace("echo check-output", "echo upgraded-check"),
    )
    .unwrap();
    let o = s.cli(&["template", "set", "--tenant", "acme", "web", f]);
    assert!(o.status.success(), "{:?}", text(&o));
    let o = s.cli(&["workspace", "provision", ws, "--upgrade"]);
    let (out, err) = text(&o);
    assert!(o.status.success(), "{out}{err}");
    assert!(out.contains("upgraded-check"), "{out}");
    assert!(out.contains("template web revision 3"), "{out}");
    assert!(!out.contains("[3/4] build: done"), "build ran again: {out}");
    let (_, v) = s.call("GET", &prov, None).await;
    assert_eq!(
        (v["state"].as_str(), v["revision"].as_i64()),
        (Some("done"), Some(3)),
        "{v}"
    );
    assert_eq!(v["steps"][2]["finished_at"], build_finished, "{v}");

    // Retrying what did not fail is refused.
    let (st, v) = s.call("POST", &prov, Some(json!({"retry": true}))).await;
    assert_eq!(
        (st, v["error"]["code"].as_str()),
        (409, Some("invalid_state")),
        "{v}"
    );
    drop(host);
}
