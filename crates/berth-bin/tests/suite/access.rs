//! Access requests from a real workspace: a denied egress attempt becomes a request (repeats
//! counted), an owner's approval "once" lets the retry through and expires, a denial stays,
//! a member may comment but not decide, `berth request` from inside is recorded with its
//! reason, and a hostile flood leaves the server answering and the table capped.
//!
//! The only test host is an HTTP server on the host's loopback that this test starts; the
//! proxy reaches it by a name the operator maps (`BERTH_EGRESS_HOSTS`) once a rule names it.

use std::io::{Read, Write};
use std::time::{Duration, Instant};

use berth_test_support::{ensure_image, eventually, ServerOptions, TestServer};
use serde_json::{json, Value};

use crate::bin;

/// A loopback HTTP server answering every request with `hello access`.
fn loopback_host() -> u16 {
    let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = l.local_addr().unwrap().port();
    std::thread::spawn(move || {
        for mut c in l.incoming().flatten() {
            std::thread::spawn(move || {
                let _ = c.set_read_timeout(Some(Duration::from_secs(5)));
                let mut buf = [0u8; 4096];
                let _ = c.read(&mut buf);
                let _ = c.write_all(
                    b"HTTP/1.1 200 OK\r\nContent-Length: 13\r\nConnection: close\r\n\r\nhello access\n",
                );
            });
        }
    });
    port
}

async fn sh(s: &TestServer, script: &str) -> (i64, String) {
    let out = s.exec("acme/acc", &["sh", "-c", script]).await;
    let text = format!(
        "{}{}",
        out["stdout"].as_str().unwrap(),
        out["stderr"].as_str().unwrap()
    );
    (out["exit_code"].as_i64().unwrap(), text)
}

async fn as_token(s: &TestServer, token: &str, method: &str, path: &str, body: Value) -> u16 {
    let m = reqwest::Method::from_bytes(method.as_bytes()).unwrap();
    s.http()
        .request(m, format!("{}{path}", s.url))
        .bearer_auth(token)
        .json(&body)
        .send()
        .await
        .unwrap()
        .status()
        .as_u16()
}

async fn requests(s: &TestServer, query: &str) -> Vec<Value> {
    s.get(&format!("/api/v1/access-requests{query}"))
        .await
        .as_array()
        .unwrap()
        .clone()
}

fn one<'a>(list: &'a [Value], host: &str, state: &str) -> Option<&'a Value> {
    list.iter()
        .find(|r| r["host"] == host && r["state"] == state)
}

#[tokio::test]
async fn denied_egress_becomes_an_access_request_that_an_owner_approves_once() {
    ensure_image().await;
    let port = loopback_host();
    let s = TestServer::start_with(
        bin(),
        ServerOptions {
            env: vec![("BERTH_EGRESS_HOSTS".into(), "acc.test=127.0.0.1".into())],
            ..Default::default()
        },
    )
    .await;
    s.create_workspace(json!({"name": "acc", "tenant": "acme", "memory": "256m"}))
        .await;
    let curl = format!("curl -sSf -m 5 http://acc.test:{port}/hello");

    // Default deny: each attempt is refused and counted on one request.
    for _ in 0..3 {
        let (code, out) = sh(&s, &curl).await;
        assert_ne!(code, 0, "{out}");
    }
    let r = eventually(Duration::from_secs(10), "the access request", || async {
        let list = requests(&s, "?state=open").await;
        one(&list, "acc.test", "open")
            .filter(|r| r["count"] == 3)
            .cloned()
    })
    .await;
    assert_eq!(r["workspace"], "acme/acc");
    assert_eq!(
        (r["kind"].as_str(), r["source"].as_str()),
        (Some("egress"), Some("denied"))
    );
    assert_eq!(r["port"], port);
    assert_eq!(
        (r["method"].as_str(), r["path"].as_str()),
        (Some("GET"), Some("/hello"))
    );
    assert!(r.get("rule").is_none(), "default deny names no rule: {r}");
    let id = r["id"].as_str().unwrap().to_owned();
    let decide = format!("/api/v1/workspaces/acme%2Facc/access-requests/{id}");

    // A member sees it and comments, but cannot decide.
    let (st, v) = s
        .call(
            "POST",
            "/api/v1/tokens",
            Some(json!({"name": "mia", "tenant": "acme", "role": "member"})),
        )
        .await;
    assert_eq!(st, 201, "{v}");
    let member = v["token"].as_str().unwrap().to_owned();
    assert_eq!(
        as_token(&s, &member, "POST", &decide, json!({"decision": "approve"})).await,
        403
    );
    assert_eq!(
        as_token(
            &s,
            &member,
            "POST",
            &format!("{decide}/comments"),
            json!({"text": "we need this for the docs build"})
        )
        .await,
        200
    );
    let listed = s
        .http()
        .get(format!("{}/api/v1/access-requests", s.url))
        .bearer_auth(&member)
        .send()
        .await
        .unwrap();
    assert_eq!(listed.status().as_u16(), 200);
    let listed: Vec<Value> = listed.json().await.unwrap();
    let seen = listed.iter().find(|r| r["id"] == id.as_str()).unwrap();
    assert_eq!(seen["comments"][0]["author"], "mia (member)");

    // An owner (here the admin) approves once for 4 s: the retry gets through, at once.
    let (st, a) = s
        .call(
            "POST",
            &decide,
            Some(json!({"decision": "approve", "scope": "once", "ttl_seconds": 4})),
        )
        .await;
    assert_eq!(st, 200, "{a}");
    assert_eq!(
        (a["state"].as_str(), a["scope"].as_str()),
        (Some("approved"), Some("once"))
    );
    assert_eq!(a["granted_rule"], format!("allow acc.test:{port}"));
    assert!(a["decided_by"].as_str().unwrap().contains("(admin)"), "{a}");
    let (code, out) = sh(&s, &curl).await;
    assert_eq!((code, out.as_str()), (0, "hello access\n"));
    let eff = s
        .get("/api/v1/workspaces/acme%2Facc/egress/effective")
        .await;
    assert_eq!(eff["rules"][0]["source"], "access", "{eff}");
    // Deciding again is a conflict.
    let (st, _) = s
        .call("POST", &decide, Some(json!({"decision": "deny"})))
        .await;
    assert_eq!(st, 409);

    // After the expiry the rule is gone: denied again, and a new request opens.
    let started = Instant::now();
    eventually(Duration::from_secs(15), "the grant to expire", || async {
        let (code, _) = sh(&s, &curl).await;
        (code != 0).then_some(())
    })
    .await;
    assert!(started.elapsed() < Duration::from_secs(12));
    let list = requests(&s, "").await;
    assert!(one(&list, "acc.test", "expired").is_some(), "{list:#?}");
    let eff = s
        .get("/api/v1/workspaces/acme%2Facc/egress/effective")
        .await;
    assert!(eff["rules"].as_array().unwrap().is_empty(), "{eff}");
    let again = eventually(Duration::from_secs(10), "a new request", || async {
        one(&requests(&s, "?state=open").await, "acc.test", "open").cloned()
    })
    .await;
    assert_ne!(again["id"], id.as_str());

    // Deny: it stays denied, its repeats are counted on it and open nothing new.
    let again_id = again["id"].as_str().unwrap();
    let (st, d) = s
        .call(
            "POST",
            &format!("/api/v1/workspaces/acme%2Facc/access-requests/{again_id}"),
            Some(json!({"decision": "deny", "reason": "not this one"})),
        )
        .await;
    assert_eq!((st, d["state"].as_str()), (200, Some("denied")), "{d}");
    let before = d["count"].as_u64().unwrap();
    let (code, _) = sh(&s, &curl).await;
    assert_ne!(code, 0);
    eventually(Duration::from_secs(10), "the repeat counted", || async {
        let list = requests(&s, "").await;
        one(&list, "acc.test", "denied")
            .filter(|r| r["count"].as_u64().unwrap() > before)
            .map(|_| ())
    })
    .await;
    assert!(one(&requests(&s, "?state=open").await, "acc.test", "open").is_none());

    // Decisions are audited with who decided.
    let audit = s.get("/api/v1/audit").await;
    let actions: Vec<&str> = audit
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|e| e["action"].as_str())
        .collect();
    assert!(actions.contains(&"access.approve"), "{actions:?}");
    assert!(actions.contains(&"access.deny"), "{actions:?}");
    assert!(actions.contains(&"access.comment"), "{actions:?}");

    // The CLI lists and decides.
    let o = s.cli(&["access", "list", "--all"]);
    let text = String::from_utf8_lossy(&o.stdout).into_owned();
    assert!(o.status.success() && text.contains("acc.test"), "{text}");

    // An explicit request from inside, with its reason (any agent can run it).
    let (code, out) = sh(
        &s,
        "/opt/berth/berth request egress pypi.example:443 --reason 'install the docs toolchain'",
    )
    .await;
    assert_eq!(code, 0, "{out}");
    assert!(out.contains("ar_"), "{out}");
    let (code, out) = sh(
        &s,
        "/opt/berth/berth request secret GIT_TOKEN --host git.example --reason 'push the branch'",
    )
    .await;
    assert_eq!(code, 0, "{out}");
    let list = requests(&s, "?state=open").await;
    let e = one(&list, "pypi.example", "open").unwrap();
    assert_eq!(
        (
            e["source"].as_str(),
            e["agent_reason"].as_str(),
            e["port"].as_u64()
        ),
        (
            Some("explicit"),
            Some("install the docs toolchain"),
            Some(443)
        )
    );
    let sec = one(&list, "git.example", "open").unwrap();
    assert_eq!(
        (sec["kind"].as_str(), sec["secret"].as_str()),
        (Some("secret"), Some("GIT_TOKEN"))
    );
    // The inbox holds them beside the agents' permission requests, and `berth task inbox`
    // shows them.
    let inbox = s.get("/api/v1/inbox").await;
    let open: Vec<&str> = inbox["access_requests"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| r["host"].as_str().unwrap())
        .collect();
    assert!(
        open.contains(&"pypi.example") && open.contains(&"git.example"),
        "{inbox}"
    );
    assert_eq!(inbox["approvals"], json!([]), "{inbox}");
    let o = s.cli(&["task", "inbox"]);
    let text = String::from_utf8_lossy(&o.stdout).into_owned();
    assert!(
        o.status.success() && text.contains("pypi.example:443"),
        "{text}"
    );
    // The CLI approves "always": a rule of the workspace's own.
    let pypi = e["id"].as_str().unwrap();
    let o = s.cli(&["access", "approve", pypi, "--always"]);
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let rules = s.get("/api/v1/workspaces/acme%2Facc/egress/rules").await;
    assert_eq!(rules["rules"][0], "allow pypi.example:443", "{rules}");
    // A secret request is approved by binding the tenant's secret to the host.
    let (st, v) = s
        .call(
            "PUT",
            "/api/v1/secrets/acme/GIT_TOKEN",
            Some(json!({"value": "real-secret-value"})),
        )
        .await;
    assert!(st == 200 || st == 201, "{v}");
    let sec_id = sec["id"].as_str().unwrap();
    let (st, v) = s
        .call(
            "POST",
            &format!("/api/v1/workspaces/acme%2Facc/access-requests/{sec_id}"),
            Some(json!({"decision": "approve", "ttl_seconds": 60})),
        )
        .await;
    assert_eq!(st, 400, "a secret is not approved for a while: {v}");
    let (st, v) = s
        .call(
            "POST",
            &format!("/api/v1/workspaces/acme%2Facc/access-requests/{sec_id}"),
            Some(json!({"decision": "approve"})),
        )
        .await;
    assert_eq!((st, v["scope"].as_str()), (200, Some("always")), "{v}");
    let secrets = s.get("/api/v1/secrets?tenant=acme").await;
    assert_eq!(
        secrets[0]["used_by"][0]["hosts"],
        json!(["git.example"]),
        "{secrets}"
    );
    assert!(!v.to_string().contains("real-secret-value"));
    // A request for a special-purpose address cannot be approved (a click must not open the
    // host's loopback or the LAN to the workspace).
    let (code, _) = sh(&s, "curl -sS -m 5 http://10.1.2.3:8080/ ; true").await;
    assert_eq!(code, 0);
    let lo = eventually(
        Duration::from_secs(10),
        "the private-address request",
        || async { one(&requests(&s, "?state=open").await, "10.1.2.3", "open").cloned() },
    )
    .await;
    let (st, v) = s
        .call(
            "POST",
            &format!(
                "/api/v1/workspaces/acme%2Facc/access-requests/{}",
                lo["id"].as_str().unwrap()
            ),
            Some(json!({"decision": "approve", "scope": "always"})),
        )
        .await;
    assert_eq!(
        (st, v["error"]["code"].as_str()),
        (422, Some("access_refused")),
        "{v}"
    );
    // Bad input to the CLI is one line and a non-zero exit.
    let o = s.cli(&["access", "approve", "ar_nope"]);
    assert!(!o.status.success());
    assert_eq!(String::from_utf8_lossy(&o.stderr).trim().lines().count(), 1);
}

#[tokio::test]
async fn a_flood_of_denied_hosts_and_huge_requests_is_capped() {
    ensure_image().await;
    let s = TestServer::start(bin()).await;
    s.create_workspace(json!({"name": "acc", "tenant": "acme", "memory": "256m"}))
        .await;
    // 3000 denied hosts through the proxy, then 300 explicit requests with huge fields and
    // 50 oversized lines on the access socket, all at once from inside.
    let flood = r#"
import socket, json, threading
def proxy():
    for i in range(3000):
        try:
            c = socket.create_connection(("127.0.0.1", 3128), timeout=5)
            c.sendall(("GET http://h%d.flood.test/%s HTTP/1.1\r\nHost: h%d.flood.test\r\n\r\n" % (i, "p" * 3000, i)).encode())
            c.recv(256)
            c.close()
        except Exception:
            pass
def explicit():
    for i in range(300):
        try:
            c = socket.socket(socket.AF_UNIX)
            c.settimeout(5)
            c.connect("/run/berth/access.sock")
            line = json.dumps({"kind": "egress", "host": "x%d.flood.test" % i, "reason": "r" * 6000, "task": "t" * 1000})
            c.sendall((line + "\n").encode())
            c.recv(512)
            c.close()
        except Exception:
            pass
    for i in range(50):
        try:
            c = socket.socket(socket.AF_UNIX)
            c.settimeout(5)
            c.connect("/run/berth/access.sock")
            c.sendall(b"{" + b"x" * 1000000)
            c.close()
        except Exception:
            pass
ts = [threading.Thread(target=proxy), threading.Thread(target=explicit)]
[t.start() for t in ts]
[t.join() for t in ts]
print("done")
"#;
    let started = Instant::now();
    let script = format!("python3 - <<'EOF'\n{flood}\nEOF");
    let cmd = ["sh", "-c", script.as_str()];
    let run = s.exec("acme/acc", &cmd);
    // The server answers meanwhile.
    let answered = async {
        tokio::time::sleep(Duration::from_secs(2)).await;
        let t = Instant::now();
        let v = s.get("/api/v1/version").await;
        (t.elapsed(), v)
    };
    let (out, (latency, _)) = tokio::join!(run, answered);
    assert!(out["stdout"].as_str().unwrap().contains("done"), "{out}");
    assert!(latency < Duration::from_secs(2), "{latency:?}");
    eprintln!("flood took {:?}", started.elapsed());
    // The table is capped; every stored field is cut.
    let list = eventually(Duration::from_secs(10), "the flood recorded", || async {
        let l = requests(&s, "?workspace=acme%2Facc&state=open").await;
        (l.len() >= 100).then_some(l)
    })
    .await;
    assert_eq!(list.len(), 100, "at most 100 open requests per workspace");
    for r in &list {
        assert!(r["path"].as_str().map_or(0, str::len) <= 1024, "{r}");
        assert!(
            r["agent_reason"].as_str().map_or(0, str::len) <= 1024,
            "{r}"
        );
        assert!(
            r.get("task").is_none(),
            "a task id that is none is dropped: {r}"
        );
    }
    let all = requests(&s, "").await;
    assert_eq!(all.len(), 100, "nothing but open requests were created");
    // Another tenant's token sees none of them.
    let (st, v) = s
        .call(
            "POST",
            "/api/v1/tokens",
            Some(json!({"name": "eve", "tenant": "other", "role": "owner"})),
        )
        .await;
    assert_eq!(st, 201, "{v}");
    let other: Vec<Value> = s
        .http()
        .get(format!("{}/api/v1/access-requests", s.url))
        .bearer_auth(v["token"].as_str().unwrap())
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert!(other.is_empty(), "{other:?}");
    // And the server still answers promptly.
    let t = Instant::now();
    s.get("/api/v1/workspaces").await;
    assert!(t.elapsed() < Duration::from_secs(2));
}

/// Every agent is told how to ask: berth's instructions reach the model in each CLI's own
/// instructions file (the mock LLM records what each CLI sent).
#[tokio::test]
async fn every_agent_is_told_how_to_ask_for_access() {
    use berth_test_support::agents::{server_with_llm, wait_turn_over};
    use berth_test_support::mock_llm::MockLlm;
    ensure_image().await;
    // Each agent's shell tool asks for access, as an agent told how would: the request names
    // the agent's task by itself ($BERTH_TASK_ID).
    let mock = MockLlm::start_with(berth_test_support::mock_llm::Script {
        shell_command: "/opt/berth/berth request egress docs.example --reason 'read the docs'"
            .into(),
        ..Default::default()
    })
    .await;
    let s = server_with_llm(bin(), &mock, Vec::new()).await;
    s.create_workspace(json!({"name": "ask", "memory": "2g", "pids": 2048}))
        .await;
    let mut tasks = Vec::new();
    for agent in ["claude", "codex", "gemini", "opencode"] {
        let before = mock.requests().len();
        let (st, task) = s
            .call(
                "POST",
                "/api/v1/tasks",
                Some(json!({"workspace": "ask", "agent": agent, "prompt": "Say hello."})),
            )
            .await;
        assert_eq!(st, 201, "{task}");
        let id = task["id"].as_str().unwrap();
        let done = wait_turn_over(&s, id, Duration::from_secs(240)).await;
        assert_eq!(done["state"], "completed", "{agent}: {done}");
        let told = mock.requests()[before..].iter().any(|r| {
            r.body
                .to_string()
                .contains("/opt/berth/berth request egress HOST")
        });
        assert!(told, "{agent} was not told about berth request");
        tasks.push(id.to_owned());
    }
    let list = requests(&s, "?workspace=ask").await;
    let asked = one(&list, "docs.example", "open").unwrap_or_else(|| panic!("{list:#?}"));
    assert_eq!(
        (asked["task"].as_str(), asked["count"].as_u64()),
        (Some(tasks[3].as_str()), Some(4)),
        "each agent's request counts on the one request and names its task (the last one's): {asked}"
    );
    // A request keeps the task it names only if that is a task of its own workspace.
    let other = format!("tk_{}", "ab".repeat(16));
    for (host, task) in [
        ("own.example", tasks[0].as_str()),
        ("other.example", &other),
    ] {
        let script = format!("/opt/berth/berth request egress {host} --task {task}");
        let out = s.exec("ask", &["sh", "-c", &script]).await;
        assert_eq!(out["exit_code"], 0, "{out}");
    }
    let list = requests(&s, "?workspace=ask").await;
    let task_of = |host: &str| one(&list, host, "open").map(|r| r["task"].clone());
    assert_eq!(task_of("own.example"), Some(json!(tasks[0])), "{list:#?}");
    assert_eq!(task_of("other.example"), Some(Value::Null), "{list:#?}");
}
