//! The CLI end to end, as a user types it, against a real server.

use berth_test_support::{ensure_image, TestServer};
use serde_json::Value;

use crate::bin;

fn stdout(o: &std::process::Output) -> String {
    String::from_utf8_lossy(&o.stdout).into_owned()
}

fn stderr(o: &std::process::Output) -> String {
    String::from_utf8_lossy(&o.stderr).into_owned()
}

#[tokio::test]
async fn cli_workspace_exec_session_flow() {
    ensure_image().await;
    let s = TestServer::start(bin()).await;

    let o = s.cli(&[
        "workspace",
        "create",
        "acme-web",
        "--tenant",
        "acme",
        "--memory",
        "512m",
        "--cpus",
        "1",
        "--pids",
        "512",
    ]);
    assert!(o.status.success(), "{}{}", stdout(&o), stderr(&o));
    assert!(stdout(&o).contains("acme/acme-web"), "{}", stdout(&o));

    let o = s.cli(&["workspace", "list", "--json"]);
    assert!(o.status.success());
    let list: Value = serde_json::from_slice(&o.stdout).unwrap();
    assert_eq!(list[0]["name"], "acme-web");
    assert_eq!(list[0]["state"], "running");
    assert_eq!(list[0]["limits"]["pids"], 512);
    let o = s.cli(&["workspace", "list"]);
    let table = stdout(&o);
    assert!(
        table.contains("acme/acme-web") && table.contains("running") && table.contains("512m"),
        "{table}"
    );

    let o = s.cli(&["workspace", "show", "acme-web"]);
    assert!(o.status.success(), "{}", stderr(&o));
    let shown = stdout(&o);
    assert!(
        shown.contains("running") && shown.contains("512m"),
        "{shown}"
    );

    // exec: output, exit code propagation, stdin.
    let o = s.cli(&["exec", "acme-web", "--", "id", "-u"]);
    assert_eq!(stdout(&o), "1000\n");
    assert!(o.status.success());
    let o = s.cli(&[
        "exec",
        "acme-web",
        "--",
        "sh",
        "-c",
        "echo oops >&2; exit 7",
    ]);
    assert_eq!(o.status.code(), Some(7), "stderr: {}", stderr(&o));
    assert!(stderr(&o).contains("oops"));
    let o = s.cli_with_stdin(&["exec", "acme-web", "--", "wc", "-c"], &[b'z'; 100_000]);
    assert_eq!(stdout(&o).trim(), "100000");

    // sessions: new, list, attach through a pipe, capture.
    let o = s.cli(&["session", "new", "acme-web", "--name", "build"]);
    assert!(o.status.success(), "{}", stderr(&o));
    let o = s.cli(&["session", "list", "acme-web", "--json"]);
    let sessions: Value = serde_json::from_slice(&o.stdout).unwrap();
    assert_eq!(sessions[0]["name"], "build");
    let o = s.cli_with_stdin(
        &["attach", "acme-web", "build"],
        b"echo piped-$((20+22))\nsleep 1\n",
    );
    assert!(o.status.success(), "{}", stderr(&o));
    assert!(stdout(&o).contains("piped-42"), "{}", stdout(&o));
    let o = s.cli(&["session", "capture", "acme-web", "build"]);
    assert!(stdout(&o).contains("piped-42"), "{}", stdout(&o));
    let o = s.cli(&["session", "list", "acme-web"]);
    assert!(
        stdout(&o).contains("build") && stdout(&o).contains("running"),
        "{}",
        stdout(&o)
    );

    // stop/start/rm and the audit trail.
    assert!(s.cli(&["workspace", "stop", "acme-web"]).status.success());
    let o = s.cli(&["exec", "acme-web", "--", "true"]);
    assert_eq!(o.status.code(), Some(1));
    assert!(stderr(&o).contains("stopped"), "{}", stderr(&o));
    assert!(s.cli(&["workspace", "start", "acme-web"]).status.success());
    let o = s.cli(&["audit", "--json"]);
    let audit: Value = serde_json::from_slice(&o.stdout).unwrap();
    let actions: Vec<&str> = audit
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["action"].as_str().unwrap())
        .collect();
    for a in [
        "workspace.create",
        "workspace.exec",
        "session.create",
        "workspace.stop",
        "workspace.start",
    ] {
        assert!(actions.contains(&a), "{a} missing from {actions:?}");
    }
    assert!(s
        .cli(&["workspace", "rm", "acme-web", "--volume"])
        .status
        .success());
    let o = s.cli(&["workspace", "list", "--json"]);
    assert_eq!(
        serde_json::from_slice::<Value>(&o.stdout).unwrap(),
        serde_json::json!([])
    );
}

#[tokio::test]
async fn cli_errors_are_one_line_and_nonzero() {
    let s = TestServer::start(bin()).await;
    for args in [
        vec!["workspace", "create", "Bad_Name"],
        vec!["workspace", "create", "ok", "--memory", "lots"],
        vec!["workspace", "show", "nope"],
        vec!["workspace", "rm", "nope"],
        vec!["exec", "nope", "--", "true"],
    ] {
        let o = s.cli(&args);
        assert_eq!(o.status.code(), Some(1), "{args:?}");
        let err = stderr(&o);
        assert_eq!(err.trim_end().lines().count(), 1, "{args:?}: {err}");
        assert!(err.starts_with("error: "), "{args:?}: {err}");
    }
    // Wrong token and unreachable server.
    let o = std::process::Command::new(bin())
        .args(["workspace", "list"])
        .env("BERTH_URL", &s.url)
        .env("BERTH_TOKEN", "wrong-token-wrong-token")
        .output()
        .unwrap();
    assert_eq!(o.status.code(), Some(1));
    assert!(stderr(&o).starts_with("error: "));
    let o = std::process::Command::new(bin())
        .args(["workspace", "list"])
        .env("BERTH_URL", "http://127.0.0.1:9")
        .env("BERTH_TOKEN", "x")
        .output()
        .unwrap();
    assert_eq!(o.status.code(), Some(1));
    assert!(stderr(&o).contains("127.0.0.1:9"), "{}", stderr(&o));
}

#[tokio::test]
async fn cli_login_and_doctor() {
    ensure_image().await;
    // A configured machine has an LLM provider (doctor fails when none is; see suite::costs).
    let mock = berth_test_support::mock_llm::MockLlm::start().await;
    let s = berth_test_support::agents::server_with_llm(bin(), &mock, Vec::new()).await;
    let home = s.data_dir.path().join("home");
    std::fs::create_dir_all(&home).unwrap();
    let run = |args: &[&str]| {
        std::process::Command::new(bin())
            .args(args)
            .env_remove("BERTH_URL")
            .env_remove("BERTH_TOKEN")
            .env("HOME", &home)
            .env("XDG_CONFIG_HOME", home.join(".config"))
            .output()
            .unwrap()
    };
    let o = run(&["login", &s.url, "--token", &s.token]);
    assert!(o.status.success(), "{}", stderr(&o));
    let o = run(&["whoami"]);
    assert!(o.status.success(), "{}", stderr(&o));
    assert!(stdout(&o).contains("admin"), "{}", stdout(&o));
    let o = run(&["doctor"]);
    let text = stdout(&o);
    for check in ["engine", "image", "data_dir"] {
        assert!(text.contains(check), "{check} missing: {text}");
    }
    assert!(
        o.status.success(),
        "doctor failed on a configured machine: {text}{}",
        stderr(&o)
    );

    // The image is content-addressed: a build with nothing changed is skipped, through the API.
    let o = run(&["image", "build"]);
    assert!(o.status.success(), "{}{}", stdout(&o), stderr(&o));
    let o = run(&["image", "status", "--json"]);
    let status: Value = serde_json::from_slice(&o.stdout).unwrap();
    assert_eq!(status["present"], true);
    assert!(status["tag"]
        .as_str()
        .unwrap()
        .starts_with("localhost/berth-workspace:"));
    let audit = s.get("/api/v1/audit").await;
    assert_eq!(audit[0]["action"], "image.build");
    assert_eq!(audit[0]["result"], "ok");
}
