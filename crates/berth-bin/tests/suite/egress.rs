//! The egress firewall from inside a real workspace: the allowed way out works, every bypass
//! fails, every attempt that reaches the proxy is logged, and rules change live.
//!
//! Every target is a host this test creates: a test host in a network namespace (given the
//! addresses the cases need, including a metadata-style 169.254.169.254), or a listener on the
//! host's loopback. No traffic is aimed at a real address outside the machine.

use std::process::{Child, Command, Stdio};
use std::time::Duration;

use berth_test_support::{ensure_image, eventually, ServerOptions, TestServer};
use futures_util::StreamExt;
use serde_json::{json, Value};

use crate::bin;

/// A test host in its own network namespace: 10.77.N.2 (+ 169.254.169.254 and fd77:N::2) with an
/// HTTP server on port 8080, reachable from the host over a veth pair.
pub(crate) struct NetnsHost {
    ns: String,
    pub(crate) ip: String,
    server: Child,
}

fn sh(cmd: &str) {
    let st = Command::new("sh").args(["-c", cmd]).status().unwrap();
    assert!(st.success(), "{cmd}");
}

impl NetnsHost {
    fn start() -> Self {
        Self::start_serving(&["python3", "-m", "http.server", "8080", "--bind", "::"], 0)
    }

    /// A host running the Python `script` in `dir` (see [`start_serving`](Self::start_serving)).
    pub(crate) fn serve_python(dir: &std::path::Path, script: &str, salt: u32) -> Self {
        let cd = format!("cd {} && exec python3 -c \"$0\"", dir.to_str().unwrap());
        Self::start_serving(&["sh", "-c", &cd, script], salt)
    }

    /// `salt` keeps two hosts of one test process apart.
    pub(crate) fn start_serving(server_cmd: &[&str], salt: u32) -> Self {
        let n = (std::process::id() + salt * 7) % 200 + 20;
        let ns = format!("berth-t{n}");
        let _ = Command::new("ip").args(["netns", "del", &ns]).status();
        sh(&format!(
            "ip netns add {ns} && ip link add bth{n} type veth peer name btn{n} && \
             ip link set btn{n} netns {ns} && ip addr add 10.77.{n}.1/24 dev bth{n} && ip link set bth{n} up && \
             ip netns exec {ns} ip addr add 10.77.{n}.2/24 dev btn{n} && \
             ip netns exec {ns} ip addr add 169.254.169.254/32 dev btn{n} && \
             ip netns exec {ns} ip -6 addr add fd77:{n}::2/64 dev btn{n} nodad && \
             ip netns exec {ns} ip link set btn{n} up && ip netns exec {ns} ip link set lo up && \
             (ip route replace 169.254.169.254/32 via 10.77.{n}.2 dev bth{n} || true)"
        ));
        let dir = std::env::temp_dir().join(format!("berth-netns-{n}"));
        std::fs::create_dir_all(&dir).unwrap();
        std::fs::write(dir.join("hello.txt"), "hello from the test host\n").unwrap();
        std::fs::write(dir.join("latest"), "instance-secret-from-metadata\n").unwrap();
        let server = Command::new("ip")
            .args(["netns", "exec", &ns])
            .args(server_cmd)
            .current_dir(&dir)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        Self {
            ns,
            ip: format!("10.77.{n}.2"),
            server,
        }
    }
}

impl Drop for NetnsHost {
    fn drop(&mut self) {
        let _ = self.server.kill();
        let _ = self.server.wait();
        let _ = Command::new("ip")
            .args(["route", "del", "169.254.169.254/32"])
            .status();
        let _ = Command::new("ip").args(["netns", "del", &self.ns]).status();
    }
}

/// Runs `script` in workspace `ws` through berth's exec: its exit code and stdout + stderr.
pub(crate) async fn exec_sh(s: &TestServer, ws: &str, script: &str) -> (i64, String) {
    let out = s.exec(ws, &["sh", "-c", script]).await;
    let text = format!(
        "{}{}",
        out["stdout"].as_str().unwrap(),
        out["stderr"].as_str().unwrap()
    );
    (out["exit_code"].as_i64().unwrap(), text)
}

/// Runs `script` in the workspace `fw` of these tests.
async fn run(s: &TestServer, script: &str) -> (i64, String) {
    exec_sh(s, "fw", script).await
}

/// Runs a command as root inside the workspace container, through the engine (berth itself
/// never does this: it is the attacker's view).
pub(crate) async fn run_as_root(container: &str, script: &str) -> (i64, String) {
    run_as(container, "0", script).await
}

/// Runs a command as `user` (a uid) inside the workspace container, through the engine, past
/// berth: its exit code and output.
pub(crate) async fn run_as(container: &str, user: &str, script: &str) -> (i64, String) {
    use bollard::exec::{CreateExecOptions, StartExecResults};
    let rt = berth_runtime::DockerRuntime::connect(Some(&berth_test_support::engine())).unwrap();
    let d = rt.client();
    let exec = d
        .create_exec(
            container,
            CreateExecOptions {
                cmd: Some(vec!["sh", "-c", script]),
                user: Some(user),
                attach_stdout: Some(true),
                attach_stderr: Some(true),
                ..Default::default()
            },
        )
        .await
        .unwrap();
    let mut text = String::new();
    if let StartExecResults::Attached { mut output, .. } =
        d.start_exec(&exec.id, None).await.unwrap()
    {
        while let Some(Ok(chunk)) = output.next().await {
            text.push_str(&chunk.to_string());
        }
    }
    let code = d
        .inspect_exec(&exec.id)
        .await
        .unwrap()
        .exit_code
        .unwrap_or(-1);
    (code, text)
}

#[tokio::test]
async fn egress_allows_only_what_the_rules_say_and_nothing_bypasses_it() {
    ensure_image().await;
    let host = NetnsHost::start();
    // A listener on the host's own loopback, which must stay out of reach.
    let lo = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let lo_port = lo.local_addr().unwrap().port();
    let s = TestServer::start_with(
        bin(),
        ServerOptions {
            env: vec![(
                "BERTH_EGRESS_HOSTS".into(),
                format!(
                    "ns.test={},meta.test=169.254.169.254,lo.test=127.0.0.1",
                    host.ip
                ),
            )],
            ..Default::default()
        },
    )
    .await;
    let w = s
        .create_workspace(json!({"name": "fw", "memory": "256m", "egress": ["allow ns.test:8080", "allow *.test"]}))
        .await;
    assert_eq!(w["network"], "none");
    let container = w["container_id"].as_str().unwrap().to_owned();

    // The way out that is allowed works (through the proxy, by name).
    let (code, out) = run(&s, "curl -sS -m 10 http://ns.test:8080/hello.txt").await;
    assert_eq!((code, out.as_str()), (0, "hello from the test host\n"));

    // Bypasses: each must fail.
    let ip = &host.ip;
    let n = ip.split('.').nth(2).unwrap();
    let attempts = [
        ("raw TCP to an IP literal", format!("curl -sS -m 3 --noproxy '*' http://{ip}:8080/hello.txt")),
        ("raw TCP via /dev/tcp", format!("bash -c 'exec 3<>/dev/tcp/{ip}/8080'")),
        ("UDP", format!("python3 -c \"import socket; socket.socket(socket.AF_INET, socket.SOCK_DGRAM).sendto(b'x', ('{ip}', 53))\"")),
        ("DNS through the system resolver", "getent hosts ns.test".to_owned()),
        ("DNS query to a resolver", format!("python3 -c \"import socket; s=socket.socket(socket.AF_INET, socket.SOCK_DGRAM); s.settimeout(2); s.sendto(b'\\x00'*12, ('{ip}', 53)); s.recv(512)\"")),
        ("IPv6", format!("curl -sS -m 3 --noproxy '*' -g 'http://[fd77:{n}::2]:8080/hello.txt'")),
        ("metadata address directly", "curl -sS -m 3 --noproxy '*' http://169.254.169.254:8080/latest".to_owned()),
        ("metadata address through the proxy", "curl -sSf -m 5 http://169.254.169.254:8080/latest".to_owned()),
        ("metadata by an allowed-pattern name", "curl -sSf -m 5 http://meta.test:8080/latest".to_owned()),
        ("host loopback directly", format!("curl -sS -m 3 http://127.0.0.1:{lo_port}/")),
        ("host loopback through the proxy", format!("curl -sSf -m 5 --noproxy '' -x http://127.0.0.1:3128 http://127.0.0.1:{lo_port}/")),
        ("host loopback by name", format!("curl -sSf -m 5 http://lo.test:{lo_port}/")),
        ("CONNECT to a denied host", "curl -sSf -m 5 https://denied.example:443/".to_owned()),
        ("engine socket", "test -e /run/podman/podman.sock || test -e /var/run/docker.sock || test -e /run/docker.sock".to_owned()),
    ];
    for (what, cmd) in &attempts {
        let (code, out) = run(&s, cmd).await;
        assert_ne!(code, 0, "{what} succeeded: {cmd}\n{out}");
        assert!(
            !out.contains("instance-secret") && !out.contains("hello from the test host"),
            "{what}: {out}"
        );
    }
    // Root inside the container cannot open another way out either.
    for cmd in [
        "unset http_proxy https_proxy HTTP_PROXY HTTPS_PROXY ALL_PROXY all_proxy; curl -sS -m 3 http://ns.test:8080/hello.txt",
        "ip link add dummy0 type dummy",
        "ip route add default dev lo",
        "ip addr add 10.77.0.9/24 dev lo",
        "iptables -F 2>&1 || nft flush ruleset",
        &format!("curl -sS -m 3 --noproxy '*' http://{ip}:8080/hello.txt"),
    ] {
        let (code, out) = run_as_root(&container, cmd).await;
        assert_ne!(code, 0, "as root: {cmd} succeeded: {out}");
    }
    let ifaces = run_as_root(&container, "ls /sys/class/net").await.1;
    assert_eq!(ifaces.trim(), "lo", "{ifaces}");

    // The proxy logged every attempt that reached it.
    let log = eventually(Duration::from_secs(10), "egress log entries", || async {
        let v = s.get("/api/v1/workspaces/fw/egress/log").await;
        (v.as_array().unwrap().len() >= 6).then_some(v)
    })
    .await;
    let entries = log.as_array().unwrap();
    let find = |host: &str, decision: &str| {
        entries
            .iter()
            .any(|e: &Value| e["host"] == host && e["decision"] == decision)
    };
    assert!(find("ns.test", "allow"), "{log:#}");
    assert!(find("169.254.169.254", "deny"), "{log:#}");
    assert!(find("meta.test", "deny"), "{log:#}");
    assert!(find("127.0.0.1", "deny"), "{log:#}");
    assert!(find("lo.test", "deny"), "{log:#}");
    assert!(find("denied.example", "deny"), "{log:#}");
    let allowed = entries.iter().find(|e| e["host"] == "ns.test").unwrap();
    assert!(allowed["bytes_down"].as_u64().unwrap() > 0, "{allowed}");

    // Policy changes apply live, without restarting the workspace.
    let o = s.cli(&["egress", "deny", "fw", "ns.test"]);
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let (code, _) = run(&s, "curl -sSf -m 5 http://ns.test:8080/hello.txt").await;
    assert_ne!(code, 0, "denied after the rule change");
    let o = s.cli(&["egress", "rm", "fw", "0"]);
    assert!(o.status.success());
    let (code, out) = run(&s, "curl -sS -m 10 http://ns.test:8080/hello.txt").await;
    assert_eq!((code, out.as_str()), (0, "hello from the test host\n"));
    let o = s.cli(&["egress", "log", "fw"]);
    let text = String::from_utf8_lossy(&o.stdout).into_owned();
    assert!(
        text.contains("DENY") && text.contains("ALLOW") && text.contains("ns.test"),
        "{text}"
    );
    let (st, v) = s
        .call(
            "POST",
            "/api/v1/workspaces/fw/egress/rules",
            Some(json!({"rule": "permit everything"})),
        )
        .await;
    assert_eq!(
        (st, v["error"]["code"].as_str()),
        (400, Some("invalid_argument")),
        "{v}"
    );
    drop(lo);
}

async fn sh_in(s: &TestServer, ws: &str, cmd: String) -> (i64, String) {
    let out = s.exec(ws, &["sh", "-c", &cmd]).await;
    (
        out["exit_code"].as_i64().unwrap(),
        format!(
            "{}{}",
            out["stdout"].as_str().unwrap(),
            out["stderr"].as_str().unwrap()
        ),
    )
}

/// The newest egress log entry for `host` after log id `after` with this decision.
async fn log_entry(s: &TestServer, ws: &str, host: &str, decision: &str, after: i64) -> Value {
    let path = format!(
        "/api/v1/workspaces/{}/egress/log?after={after}",
        berth_test_support::enc(ws)
    );
    eventually(
        Duration::from_secs(10),
        &format!("a {decision} entry for {host}"),
        || async {
            let v = s.get(&path).await;
            v.as_array()
                .unwrap()
                .iter()
                .rev()
                .find(|e| e["host"] == host && e["decision"] == decision)
                .cloned()
        },
    )
    .await
}

#[tokio::test]
async fn egress_templates_apply_live_and_workspace_rules_come_first() {
    ensure_image().await;
    // The upstream: a listener on the host's loopback that this test starts. The proxy reaches
    // it only through a rule naming the host exactly (a loopback address otherwise is refused).
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = listener.local_addr().unwrap().port();
    let upstream = axum::Router::new().route(
        "/",
        axum::routing::get(|| async { "hello from the template upstream\n" }),
    );
    tokio::spawn(async move {
        let _ = axum::serve(listener, upstream).await;
    });
    let s = TestServer::start_with(
        bin(),
        ServerOptions {
            env: vec![("BERTH_EGRESS_HOSTS".into(), "up.test=127.0.0.1".into())],
            ..Default::default()
        },
    )
    .await;
    let allow = format!("allow up.test:{port}");
    let o = s.cli(&[
        "egress",
        "template",
        "set",
        "--tenant",
        "acme",
        "ci",
        &allow,
        "--description",
        "the CI upstream",
    ]);
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let o = s.cli(&[
        "workspace",
        "create",
        "acme/tpl",
        "--memory",
        "256m",
        "--egress-template",
        "ci",
    ]);
    assert!(
        o.status.success(),
        "{}\n{}",
        String::from_utf8_lossy(&o.stderr),
        s.log()
    );
    let before = s.get("/api/v1/workspaces/acme%2Ftpl").await;
    let curl = |fail: bool| {
        let f = if fail { "f" } else { "" };
        format!("curl -sS{f} -m 10 http://up.test:{port}/")
    };
    let run = |cmd: String| sh_in(&s, "acme/tpl", cmd);

    // Allowed by the template; the log names the template's rule.
    let (code, out) = run(curl(false)).await;
    assert_eq!(
        (code, out.as_str()),
        (0, "hello from the template upstream\n")
    );
    let e = log_entry(&s, "acme/tpl", "up.test", "allow", 0).await;
    assert_eq!(e["rule"], format!("template ci: {allow}"), "{e}");
    let mut seen = e["id"].as_i64().unwrap();

    // The template loses its allow (through the API): the same running workspace is denied on
    // its next request.
    let (st, v) = s
        .call(
            "PUT",
            "/api/v1/egress/templates/acme/ci",
            Some(json!({"rules": ["allow other.test:443"]})),
        )
        .await;
    assert_eq!(st, 200, "{v}");
    assert_eq!(v["used_by"], json!(["acme/tpl"]));
    let (code, out) = run(curl(true)).await;
    assert_ne!(code, 0, "still allowed after the template change: {out}");
    assert!(!out.contains("hello from"), "{out}");
    let e = log_entry(&s, "acme/tpl", "up.test", "deny", seen).await;
    assert!(
        e["reason"].as_str().unwrap().contains("default deny"),
        "{e}"
    );
    seen = e["id"].as_i64().unwrap();

    // The allow comes back: allowed again, still live.
    let (st, v) = s
        .call(
            "PUT",
            "/api/v1/egress/templates/acme/ci",
            Some(json!({ "rules": [allow] })),
        )
        .await;
    assert_eq!(st, 200, "{v}");
    let (code, out) = run(curl(false)).await;
    assert_eq!(
        (code, out.as_str()),
        (0, "hello from the template upstream\n")
    );
    seen = log_entry(&s, "acme/tpl", "up.test", "allow", seen).await["id"]
        .as_i64()
        .unwrap();

    // A workspace-level deny overrides the template's allow: own rules come first.
    let target = format!("up.test:{port}");
    let o = s.cli(&["egress", "deny", "acme/tpl", &target]);
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let (code, out) = run(curl(true)).await;
    assert_ne!(code, 0, "the workspace's deny did not win: {out}");
    let e = log_entry(&s, "acme/tpl", "up.test", "deny", seen).await;
    assert_eq!(e["rule"], format!("deny {target}"), "{e}");
    let o = s.cli(&["egress", "rules", "acme/tpl"]);
    let text = String::from_utf8_lossy(&o.stdout).into_owned();
    let lines: Vec<&str> = text.lines().collect();
    assert!(
        lines[1].starts_with(&format!("0  deny {target}"))
            && lines[1].ends_with("workspace")
            && lines[2].starts_with(&format!("-  {allow}"))
            && lines[2].ends_with("template ci"),
        "{text}"
    );

    // All of it without a restart.
    let after = s.get("/api/v1/workspaces/acme%2Ftpl").await;
    assert_eq!(after["state"], "running");
    assert_eq!(after["container_id"], before["container_id"]);

    // The attached template cannot simply be removed; the refusal names the workspace.
    let o = s.cli(&["egress", "template", "rm", "--tenant", "acme", "ci"]);
    assert!(!o.status.success());
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(
        err.contains("acme/tpl") && err.contains("(in_use)"),
        "{err}"
    );
}
