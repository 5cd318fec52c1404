//! Delivering a task's work, end to end.
//!
//! Push: a real git server (`git http-backend` behind HTTPS with a test CA, requiring a token)
//! in a network namespace the test creates, reached by the workspace only through berth's egress
//! proxy and its rules. The workspace holds only the secret's placeholder, and its remote's URL
//! carries no credential: berth hands git the placeholder, the proxy swaps the token in, and the
//! git server (which refuses anything but the real token) receives the real value and the
//! agent's commit. Refusals: nothing to push, no such remote, a non-fast-forward push (git's
//! one-line reason).
//!
//! Pull requests: loopback fakes of the three providers' documented REST calls (third-party
//! SaaS APIs, the only fakes allowed), each asserting method, path, auth header and JSON body
//! shape; the PR's URL and number land on the task (API and CLI); a secret not bound for the
//! API host, an unknown provider and the provider's own refusal are clear errors that never
//! reach (or are reported from) the provider.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use base64::Engine as _;
use berth_test_support::agents::{server_with_llm, wait_turn_over};
use berth_test_support::git_server::GitServer;
use berth_test_support::mock_llm::{MockLlm, Script};
use berth_test_support::{ensure_image, TestServer};
use serde_json::{json, Value};

use super::egress::NetnsHost;
use crate::bin;

const REAL: &str = "glpat-REALpushTOKEN-0123456789";
const TURN: Duration = Duration::from_secs(180);

/// The agent's turn: one commit.
const COMMIT: &str = "echo agent-line >> README.md && git -c user.name=agent \
    -c user.email=agent@example.invalid commit -qam 'agent change'";

fn text(o: &std::process::Output) -> (String, String) {
    (
        String::from_utf8_lossy(&o.stdout).into_owned(),
        String::from_utf8_lossy(&o.stderr).into_owned(),
    )
}

fn host_git(repo: &std::path::Path, args: &str) -> String {
    let o = std::process::Command::new("sh")
        .args(["-c", &format!("git --git-dir {} {args}", repo.display())])
        .output()
        .unwrap();
    assert!(o.status.success(), "{args}: {:?}", text(&o));
    String::from_utf8_lossy(&o.stdout).trim().to_owned()
}

async fn run_task(s: &TestServer, body: Value) -> String {
    let (st, task) = s.call("POST", "/api/v1/tasks", Some(body)).await;
    assert_eq!(st, 201, "{task}");
    let id = task["id"].as_str().unwrap().to_owned();
    assert_eq!(
        wait_turn_over(s, &id, TURN).await["state"],
        "completed",
        "{}",
        s.log()
    );
    id
}

#[tokio::test]
async fn a_task_branch_is_pushed_through_the_proxy_with_the_placeholder_credential() {
    ensure_image().await;
    let git = GitServer::prepare("git.test", REAL, &[("app", &[("README.md", "hello\n")])]);
    let cmd = git.command();
    let argv: Vec<&str> = cmd.iter().map(String::as_str).collect();
    let host = NetnsHost::start_serving(&argv, 13);
    let mock = MockLlm::start_with(Script {
        shell_command: COMMIT.into(),
        ..Script::default()
    })
    .await;
    let env = vec![
        ("BERTH_EGRESS_HOSTS".into(), format!("git.test={}", host.ip)),
        (
            "BERTH_EGRESS_EXTRA_CA".into(),
            git.ca().display().to_string(),
        ),
    ];
    let s = server_with_llm(bin(), &mock, env).await;
    let o = s.cli_with_stdin(
        &["secret", "set", "--tenant", "acme", "GIT_TOKEN"],
        REAL.as_bytes(),
    );
    assert!(o.status.success(), "{:?}", text(&o));
    s.create_workspace(
        json!({"name": "ship", "tenant": "acme", "memory": "2g", "pids": 2048,
        "egress": ["allow git.test:8443"],
        "secrets": [{"name": "GIT_TOKEN", "hosts": ["git.test"]}]}),
    )
    .await;
    let ws = "acme/ship";
    // Clone with the placeholder, then leave the remote's URL without any credential: the push
    // must get its credential from berth.
    let placeholder = s.sh(ws, "printf %s \"$GIT_TOKEN\"").await;
    assert!(
        placeholder.starts_with("berth-placeholder-"),
        "{placeholder}"
    );
    s.sh(
        ws,
        "git clone -q \"https://x-access-token:$GIT_TOKEN@git.test:8443/app.git\" app && \
         git -C app remote set-url origin https://git.test:8443/app.git",
    )
    .await;

    let id = run_task(
        &s,
        json!({"workspace": ws, "agent": "claude", "dir": "/home/agent/app",
               "worktree": "agent/readme", "prompt": "Add a line to the README."}),
    )
    .await;
    let wt = format!("/home/agent/.berth/worktrees/{id}");
    let head = s.sh(ws, &format!("git -C {wt} rev-parse HEAD")).await;
    let head = head.trim();
    let seen_before = git.basic_passwords().len();

    // The push, by the CLI.
    let o = s.cli(&["task", "push", &id]);
    let (out, err) = text(&o);
    assert!(o.status.success(), "{out}{err}\n{}", s.log());
    assert_eq!(
        out,
        format!("pushed {} to origin/agent/readme\n", &head[..12])
    );
    // On the host: the agent's commit is on the branch, and the server got the real token.
    let repo = git.repo("app");
    assert_eq!(host_git(&repo, "rev-parse refs/heads/agent/readme"), head);
    assert_eq!(
        host_git(&repo, "log -1 --format=%s refs/heads/agent/readme"),
        "agent change"
    );
    let pushed_with = &git.basic_passwords()[seen_before..];
    assert!(
        !pushed_with.is_empty() && pushed_with.iter().all(|p| p == REAL),
        "the git server must receive the real token only: {pushed_with:?}"
    );
    // ... which never entered the workspace.
    let found = s
        .sh(
            ws,
            &format!("grep -rlsF -D skip '{REAL}' /home/agent /proc/self/environ; true"),
        )
        .await;
    assert_eq!(found, "", "the real token is in the workspace");
    // The task shows the push.
    let t = s.get(&format!("/api/v1/tasks/{id}")).await;
    assert_eq!(t["push"]["branch"], "agent/readme", "{t}");
    assert_eq!(t["push"]["commit"], head, "{t}");
    let (out, _) = text(&s.cli(&["task", "show", &id]));
    assert!(out.contains("to origin/agent/readme"), "{out}");

    // Refusals, each with its stable code.
    let push = |body: Value| {
        let (s, id) = (&s, &id);
        async move {
            s.call("POST", &format!("/api/v1/tasks/{id}/push"), Some(body))
                .await
        }
    };
    let (st, v) = push(json!({})).await;
    assert_eq!(
        (st, v["error"]["code"].as_str()),
        (409, Some("nothing_to_push")),
        "{v}"
    );
    let (st, v) = push(json!({"remote": "upstream"})).await;
    assert_eq!(
        (st, v["error"]["code"].as_str()),
        (422, Some("git_remote_missing")),
        "{v}"
    );
    let (st, v) = push(json!({"branch": "a..b"})).await;
    assert_eq!(
        (st, v["error"]["code"].as_str()),
        (422, Some("git_branch_missing")),
        "{v}"
    );
    // Someone else moved main on the server: pushing onto it is refused with git's reason.
    let r = repo.display().to_string();
    host_git(
        &repo,
        &format!(
            "update-ref refs/heads/main $(git -c user.name=h -c user.email=h@example.invalid \
             --git-dir {r} commit-tree 'main^{{tree}}' -p main -m elsewhere)"
        ),
    );
    let o = s.cli(&["task", "push", &id, "--branch", "main"]);
    let (out, err) = text(&o);
    assert_eq!(o.status.code(), Some(1), "{out}{err}");
    assert_eq!(err.lines().count(), 1, "{err}");
    assert!(
        err.contains("push_rejected") && err.contains("[rejected]"),
        "{err}"
    );
    assert_ne!(host_git(&repo, "rev-parse refs/heads/main"), head);

    // `task pr --push` on the pushed task: the remote already has it (said on stderr), so the
    // pull request is asked for next, and refused: git.test is no provider berth knows.
    let o = s.cli(&["task", "pr", &id, "--push"]);
    let (out, err) = text(&o);
    assert_eq!(o.status.code(), Some(1), "{out}{err}");
    assert!(
        err.contains("not pushed: origin/agent/readme already has")
            && err.contains("forge_unknown"),
        "{err}"
    );
}

/// What a fake provider received.
#[derive(Debug, Clone)]
struct Seen {
    method: String,
    path: String,
    query: String,
    headers: http::HeaderMap,
    body: Value,
}

/// A loopback server answering the three providers' "open a pull request" calls as their
/// documentation describes; a title `dup` gets GitHub's refusal.
fn fake_forges() -> (String, Arc<Mutex<Vec<Seen>>>) {
    let seen: Arc<Mutex<Vec<Seen>>> = Arc::default();
    let rec = seen.clone();
    let app = axum::Router::new().fallback(
        move |method: http::Method, uri: http::Uri, headers: http::HeaderMap, body: bytes::Bytes| {
            let rec = rec.clone();
            async move {
                let body: Value = serde_json::from_slice(&body).unwrap_or(Value::Null);
                let path = uri.path().to_owned();
                rec.lock().unwrap().push(Seen {
                    method: method.to_string(),
                    path: path.clone(),
                    query: uri.query().unwrap_or_default().to_owned(),
                    headers,
                    body: body.clone(),
                });
                let (status, answer) = if path.ends_with("/pulls") && body["title"] == "dup" {
                    (422, json!({"message": "Validation Failed",
                        "errors": [{"message": "A pull request already exists for acme:feature-gh."}]}))
                } else if path.ends_with("/pulls") {
                    (201, json!({"html_url": "https://github.com/acme/app/pull/42", "number": 42}))
                } else if path.ends_with("/merge_requests") {
                    (201, json!({"web_url": "https://gitlab.com/acme/web/-/merge_requests/7", "iid": 7}))
                } else if path.ends_with("/pullrequests") {
                    (201, json!({"pullRequestId": 9,
                        "repository": {"webUrl": "https://dev.azure.com/acme/proj/_git/svc"}}))
                } else {
                    (404, json!({"message": "Not Found"}))
                };
                (
                    http::StatusCode::from_u16(status).unwrap(),
                    axum::Json(answer),
                )
            }
        },
    );
    // Its own thread and runtime: the test blocks its runtime while the CLI runs.
    let std_listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    std_listener.set_nonblocking(true).unwrap();
    let url = format!("http://{}", std_listener.local_addr().unwrap());
    std::thread::spawn(move || {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        rt.block_on(async move {
            let listener = tokio::net::TcpListener::from_std(std_listener).unwrap();
            axum::serve(listener, app).await
        })
    });
    (url, seen)
}

fn header<'a>(s: &'a Seen, name: &str) -> &'a str {
    s.headers
        .get(name)
        .map(|v| v.to_str().unwrap())
        .unwrap_or_default()
}

#[tokio::test]
async fn pull_requests_are_opened_on_github_gitlab_and_azure_devops() {
    ensure_image().await;
    let (api, seen) = fake_forges();
    let mock = MockLlm::start_with(Script {
        shell_command: COMMIT.into(),
        ..Script::default()
    })
    .await;
    let env = vec![
        ("BERTH_GITHUB_API_URL".into(), api.clone()),
        ("BERTH_GITLAB_API_URL".into(), api.clone()),
        ("BERTH_AZURE_DEVOPS_API_URL".into(), api.clone()),
    ];
    let s = server_with_llm(bin(), &mock, env).await;
    for (name, value) in [
        ("GH_TOKEN", "ghp-REAL-github"),
        ("GL_TOKEN", "glpat-REAL-gitlab"),
        ("AZ_TOKEN", "az-REAL-devops"),
    ] {
        let o = s.cli_with_stdin(
            &["secret", "set", "--tenant", "acme", name],
            value.as_bytes(),
        );
        assert!(o.status.success(), "{:?}", text(&o));
    }
    s.create_workspace(
        json!({"name": "prs", "tenant": "acme", "memory": "2g", "pids": 2048,
        "secrets": [{"name": "GH_TOKEN", "hosts": ["github.com", "api.github.com"]},
                    {"name": "GL_TOKEN", "hosts": ["gitlab.com"]},
                    {"name": "AZ_TOKEN", "hosts": ["dev.azure.com"]}]}),
    )
    .await;
    let ws = "acme/prs";
    let mut tasks = Vec::new();
    for (dir, url) in [
        ("gh", "https://github.com/acme/app.git"),
        ("gl", "git@gitlab.com:acme/web.git"),
        ("az", "https://acme@dev.azure.com/acme/proj/_git/svc"),
    ] {
        s.sh(
            ws,
            &format!(
                "git init -q -b main {dir} && cd {dir} && echo base > README.md && git add -A && \
                 git -c user.name=u -c user.email=u@example.invalid commit -qm base && \
                 git remote add origin {url} && git update-ref refs/remotes/origin/main HEAD && \
                 git symbolic-ref refs/remotes/origin/HEAD refs/remotes/origin/main && \
                 git remote add other https://git.example.com/acme/app.git && \
                 git checkout -q -b feature-{dir}"
            ),
        )
        .await;
        let id = run_task(
            &s,
            json!({"workspace": ws, "agent": "claude", "dir": format!("/home/agent/{dir}"),
                   "prompt": format!("Improve the {dir} README.\nKeep it short.")}),
        )
        .await;
        tasks.push(id);
    }
    let pr = |id: &str, body: Value| {
        let (s, id) = (&s, id.to_owned());
        async move {
            s.call("POST", &format!("/api/v1/tasks/{id}/pr"), Some(body))
                .await
        }
    };
    let code = |v: &Value| v["error"]["code"].as_str().map(str::to_owned);

    // `task pr --push` stops at the push's refusal (the workspace may not reach github.com)
    // and asks for no pull request.
    let o = s.cli(&["task", "pr", &tasks[0], "--push"]);
    let (out, err) = text(&o);
    assert_eq!(o.status.code(), Some(1), "{out}{err}");
    assert!(err.contains("push_rejected"), "{err}");
    assert!(
        seen.lock().unwrap().is_empty(),
        "a pull request was asked for"
    );
    assert!(s.get(&format!("/api/v1/tasks/{}", tasks[0])).await["push"].is_null());

    // Refused before any call: a secret not bound for the API host, an unknown provider.
    let (st, v) = pr(&tasks[0], json!({"secret": "GL_TOKEN"})).await;
    assert_eq!(
        (st, code(&v).as_deref()),
        (422, Some("forge_credential")),
        "{v}"
    );
    assert!(
        v["error"]["message"]
            .as_str()
            .unwrap()
            .contains("api.github.com"),
        "{v}"
    );
    let (st, v) = pr(&tasks[0], json!({"remote": "other"})).await;
    assert_eq!(
        (st, code(&v).as_deref()),
        (422, Some("forge_unknown")),
        "{v}"
    );
    assert!(
        seen.lock().unwrap().is_empty(),
        "nothing reached a provider"
    );
    // The provider's refusal, with its own message.
    let (st, v) = pr(&tasks[0], json!({"title": "dup"})).await;
    assert_eq!((st, code(&v).as_deref()), (502, Some("forge_error")), "{v}");
    assert!(
        v["error"]["message"]
            .as_str()
            .unwrap()
            .contains("already exists"),
        "{v}"
    );

    // GitHub, by the CLI, as a draft.
    let o = s.cli(&[
        "task",
        "pr",
        &tasks[0],
        "--title",
        "Improve the README",
        "--draft",
    ]);
    let (out, err) = text(&o);
    assert!(o.status.success(), "{out}{err}\n{}", s.log());
    assert_eq!(
        out,
        "opened pull request #42: https://github.com/acme/app/pull/42\n"
    );
    let gh = seen.lock().unwrap().last().cloned().unwrap();
    assert_eq!(
        (gh.method.as_str(), gh.path.as_str()),
        ("POST", "/repos/acme/app/pulls")
    );
    assert_eq!(header(&gh, "authorization"), "Bearer ghp-REAL-github");
    assert_eq!(header(&gh, "accept"), "application/vnd.github+json");
    let b = &gh.body;
    assert_eq!(
        (&b["title"], &b["head"], &b["base"], &b["draft"]),
        (
            &json!("Improve the README"),
            &json!("feature-gh"),
            &json!("main"),
            &json!(true)
        ),
        "{b}"
    );
    let desc = b["body"].as_str().unwrap();
    for want in [
        "> Improve the gh README.",
        "claude",
        &tasks[0],
        "README.md |",
        "berth task show",
    ] {
        assert!(
            desc.contains(want),
            "{want} missing from the description:\n{desc}"
        );
    }

    // GitLab: the project path URL-encoded, PRIVATE-TOKEN, the default title.
    let (st, v) = pr(&tasks[1], json!({})).await;
    assert_eq!(st, 201, "{v}");
    assert_eq!(v["url"], "https://gitlab.com/acme/web/-/merge_requests/7");
    let gl = seen.lock().unwrap().last().cloned().unwrap();
    assert_eq!(gl.path, "/api/v4/projects/acme%2Fweb/merge_requests");
    assert_eq!(header(&gl, "private-token"), "glpat-REAL-gitlab");
    assert_eq!(header(&gl, "authorization"), "");
    let b = &gl.body;
    assert_eq!(
        (&b["source_branch"], &b["target_branch"], &b["title"]),
        (
            &json!("feature-gl"),
            &json!("main"),
            &json!("Improve the gl README.")
        ),
        "{b}"
    );
    assert!(
        b["description"].as_str().unwrap().contains(&tasks[1]),
        "{b}"
    );

    // Azure DevOps: api-version 7.1, Basic with an empty user, refs/heads names, isDraft.
    let (st, v) = pr(&tasks[2], json!({"draft": true, "base": "main"})).await;
    assert_eq!(st, 201, "{v}");
    assert_eq!(
        v["url"],
        "https://dev.azure.com/acme/proj/_git/svc/pullrequest/9"
    );
    let az = seen.lock().unwrap().last().cloned().unwrap();
    assert_eq!(
        az.path,
        "/acme/proj/_apis/git/repositories/svc/pullrequests"
    );
    assert_eq!(az.query, "api-version=7.1");
    let basic = base64::engine::general_purpose::STANDARD.encode(":az-REAL-devops");
    assert_eq!(header(&az, "authorization"), format!("Basic {basic}"));
    let b = &az.body;
    assert_eq!(
        (&b["sourceRefName"], &b["targetRefName"], &b["isDraft"]),
        (
            &json!("refs/heads/feature-az"),
            &json!("refs/heads/main"),
            &json!(true)
        ),
        "{b}"
    );
    assert!(
        b["description"]
            .as_str()
            .unwrap()
            .contains("Keep it short."),
        "{b}"
    );
    assert_eq!(seen.lock().unwrap().len(), 4);

    // Stored on the task: API and CLI; a second one is refused.
    let t = s.get(&format!("/api/v1/tasks/{}", tasks[0])).await;
    assert_eq!(
        t["pull_request"]["url"], "https://github.com/acme/app/pull/42",
        "{t}"
    );
    assert_eq!(
        (&t["pull_request"]["number"], &t["pull_request"]["provider"]),
        (&json!(42), &json!("github"))
    );
    let (out, _) = text(&s.cli(&["task", "show", &tasks[2]]));
    assert!(
        out.contains("#9 https://dev.azure.com/acme/proj/_git/svc/pullrequest/9"),
        "{out}"
    );
    let (st, v) = pr(&tasks[0], json!({})).await;
    assert_eq!((st, code(&v).as_deref()), (409, Some("conflict")), "{v}");
    let list = s.get("/api/v1/tasks").await;
    let with_pr = list
        .as_array()
        .unwrap()
        .iter()
        .filter(|t| t.get("pull_request").is_some())
        .count();
    assert_eq!(with_pr, 3, "{list}");
    // No answer carried a real token.
    let audit = s.get("/api/v1/audit").await.to_string();
    assert!(audit.contains("task.pr"), "{audit}");
    for real in ["ghp-REAL-github", "glpat-REAL-gitlab", "az-REAL-devops"] {
        assert!(!audit.contains(real) && !list.to_string().contains(real));
    }
}
