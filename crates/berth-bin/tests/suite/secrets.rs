//! Scoped secrets: the workspace holds placeholders; the egress proxy swaps the real value in
//! only for the hosts a secret is bound to; a leak scan finds the real values nowhere a
//! workspace (or an API client) can look.

use std::time::Duration;

use berth_test_support::mock_llm::MockLlm;
use berth_test_support::{ensure_image, eventually, ServerOptions, TestServer};
use serde_json::json;

use super::egress::NetnsHost;
use crate::bin;

const REAL: &str = "ghp_REALsecretVALUE0123456789";
const REAL_LLM_KEY: &str = "sk-ant-REALllmKEY987654321";

/// A handler that answers each request with the Authorization header it received (serve it
/// with [`origin`]).
pub(crate) const ECHO: &str = r#"
class H(http.server.BaseHTTPRequestHandler):
    def do_GET(self):
        body = ("auth=" + str(self.headers.get("Authorization")) + "\n").encode()
        self.send_response(200)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)
    def log_message(self, *a):
        pass
"#;

/// A Python origin serving the handler class `H` of `handler` over HTTP on 8080 and HTTPS on
/// 8443 (with `server.crt`/`server.key` of its directory, see [`test_certs`]).
pub(crate) fn origin(handler: &str) -> String {
    format!(
        "import http.server, ssl, threading\n{handler}\n{}",
        r#"plain = http.server.ThreadingHTTPServer(("0.0.0.0", 8080), H)
tls = http.server.ThreadingHTTPServer(("0.0.0.0", 8443), H)
ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
ctx.load_cert_chain("server.crt", "server.key")
tls.socket = ctx.wrap_socket(tls.socket, server_side=True)
threading.Thread(target=plain.serve_forever, daemon=True).start()
tls.serve_forever()
"#
    )
}

/// Runs `cmd` with `sh -c` in `d`; it must succeed.
pub(crate) fn sh_in(d: &std::path::Path, cmd: &str) {
    let o = std::process::Command::new("sh")
        .args(["-c", cmd])
        .current_dir(d)
        .output()
        .unwrap();
    assert!(
        o.status.success(),
        "{cmd}: {}",
        String::from_utf8_lossy(&o.stderr)
    );
}

/// A test CA in `d` and a certificate for `names` signed by it (`server.crt`/`server.key`).
pub(crate) fn test_certs(d: &std::path::Path, names: &[&str]) {
    let sh = |cmd: &str| sh_in(d, cmd);
    let san = format!(
        "subjectAltName={}",
        names
            .iter()
            .map(|n| format!("DNS:{n}"))
            .collect::<Vec<_>>()
            .join(",")
    );
    sh("openssl req -x509 -newkey rsa:2048 -nodes -days 2 -subj /CN=berth-test-ca -keyout ca.key -out ca.crt 2>/dev/null");
    sh(&format!("openssl req -newkey rsa:2048 -nodes -subj /CN={} -addext {san} -keyout server.key -out server.csr 2>/dev/null", names[0]));
    sh(&format!("printf '{san}\\n' > ext && openssl x509 -req -in server.csr -CA ca.crt -CAkey ca.key -CAcreateserial -days 2 -extfile ext -out server.crt 2>/dev/null"));
}

#[tokio::test]
async fn placeholder_secrets_reach_only_bound_hosts_and_never_leak() {
    ensure_image().await;
    let dir = tempfile::tempdir().unwrap();
    test_certs(dir.path(), &["api.bound.test", "elsewhere.test"]);
    let host = NetnsHost::serve_python(dir.path(), &origin(ECHO), 1);
    let mock = MockLlm::start().await;
    let mut s = TestServer::start_with(
        bin(),
        ServerOptions {
            env: vec![
                (
                    "BERTH_EGRESS_HOSTS".into(),
                    format!("api.bound.test={ip},elsewhere.test={ip}", ip = host.ip),
                ),
                (
                    "BERTH_EGRESS_EXTRA_CA".into(),
                    dir.path().join("ca.crt").display().to_string(),
                ),
                ("BERTH_ANTHROPIC_BASE_URL".into(), mock.url()),
                // The provider key itself lives in the vault.
                (
                    "BERTH_ANTHROPIC_API_KEY".into(),
                    "vault:ops/ANTHROPIC_API_KEY".into(),
                ),
            ],
            ..Default::default()
        },
    )
    .await;
    let o = s.cli_with_stdin(
        &["secret", "set", "--tenant", "ops", "ANTHROPIC_API_KEY"],
        REAL_LLM_KEY.as_bytes(),
    );
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    // The value goes in through stdin only.
    let o = s.cli_with_stdin(
        &["secret", "set", "--tenant", "acme", "GITHUB_TOKEN"],
        format!("{REAL}\n").as_bytes(),
    );
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let o = s.cli(&[
        "workspace",
        "create",
        "vaulted",
        "--tenant",
        "acme",
        "--memory",
        "2g",
        "--pids",
        "2048",
        "--allow",
        "api.bound.test:8443",
        "--allow",
        "api.bound.test:8080",
        "--allow",
        "elsewhere.test:8443",
        "--secret",
        "GITHUB_TOKEN:api.bound.test",
    ]);
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let ws = "acme/vaulted";

    // Inside, the variable is a placeholder.
    let env = s.exec(ws, &["sh", "-c", "echo $GITHUB_TOKEN"]).await;
    let placeholder = env["stdout"].as_str().unwrap().trim().to_owned();
    assert!(
        placeholder.starts_with("berth-placeholder-github_token-"),
        "{placeholder}"
    );
    // Bound host, inside TLS: the request arrives with the real value (bearer and basic auth).
    let out = s
        .exec(ws, &["sh", "-c", "curl -sS -m 10 -H \"Authorization: Bearer $GITHUB_TOKEN\" https://api.bound.test:8443/"])
        .await;
    assert_eq!(out["stdout"], format!("auth=Bearer {REAL}\n"), "{out}");
    // The same host in plain HTTP gets the placeholder: the real value never crosses the wire
    // in clear (with placeholders swapped into plain HTTP, this got `Bearer ghp_REAL…`).
    let out = s
        .exec(ws, &["sh", "-c", "curl -sS -m 10 -H \"Authorization: Bearer $GITHUB_TOKEN\" http://api.bound.test:8080/"])
        .await;
    assert_eq!(
        out["stdout"],
        format!("auth=Bearer {placeholder}\n"),
        "{out}"
    );
    let out = s
        .exec(
            ws,
            &[
                "sh",
                "-c",
                "curl -sS -m 10 -u \"x-access-token:$GITHUB_TOKEN\" https://api.bound.test:8443/",
            ],
        )
        .await;
    let basic = out["stdout"]
        .as_str()
        .unwrap()
        .trim()
        .trim_start_matches("auth=Basic ")
        .to_owned();
    let decoded = String::from_utf8(base64_decode(&basic)).unwrap();
    assert_eq!(decoded, format!("x-access-token:{REAL}"));
    // Anywhere else the placeholder stays a placeholder (a plain tunnel: the workspace does
    // not trust the test CA, hence -k).
    let out = s
        .exec(ws, &["sh", "-c", "curl -sSk -m 10 -H \"Authorization: Bearer $GITHUB_TOKEN\" https://elsewhere.test:8443/"])
        .await;
    assert_eq!(
        out["stdout"],
        format!("auth=Bearer {placeholder}\n"),
        "{out}"
    );

    // An agent task with its virtual LLM key runs in the same workspace.
    let (st, task) = s
        .call("POST", "/api/v1/tasks", Some(json!({"workspace": ws, "agent": "claude", "prompt": "Create hello.txt, then say DONE."})))
        .await;
    assert_eq!(st, 201, "{task}");
    let id = task["id"].as_str().unwrap().to_owned();
    eventually(Duration::from_secs(120), "the task", || async {
        let t = s.get(&format!("/api/v1/tasks/{id}")).await;
        (t["state"] == "completed").then_some(())
    })
    .await;

    // Leak scan inside: every process's environment, /proc, the whole filesystem.
    // The values are split so that the scan's own command line does not contain them; printf is
    // a shell builtin, so the joined value never appears in any process's argv.
    let (a, b) = REAL.split_at(10);
    let (c, d) = REAL_LLM_KEY.split_at(10);
    let scan = format!(
        "scan() {{ pat=\"$1$2\"; \
           cat /proc/[0-9]*/environ /proc/[0-9]*/cmdline 2>/dev/null | tr '\\0' '\\n' | grep -c -F -f <(printf '%s\\n' \"$pat\"); \
           grep -rIl -F -f <(printf '%s\\n' \"$pat\") --exclude-dir=proc --exclude-dir=sys --exclude-dir=dev / 2>/dev/null | wc -l; }}; \
         scan '{a}' '{b}'; scan '{c}' '{d}'"
    );
    let out = s.exec(ws, &["bash", "-c", &scan]).await;
    assert_eq!(
        out["stdout"], "0\n0\n0\n0\n",
        "leak inside the workspace: {out}"
    );
    // …and as root through the engine, to see every file and process.
    let w = s
        .get(&format!("/api/v1/workspaces/{}", "acme%2Fvaulted"))
        .await;
    let container = w["container_id"].as_str().unwrap();
    let root_scan = std::process::Command::new("podman")
        .args(["exec", "--user", "0", container, "bash", "-c", &scan])
        .output()
        .unwrap();
    assert_eq!(
        String::from_utf8_lossy(&root_scan.stdout),
        "0\n0\n0\n0\n",
        "{root_scan:?}"
    );

    // berth's log, API answers, the audit log: no real value anywhere.
    let mut surfaces = vec![s.log()];
    for path in [
        "/api/v1/workspaces".to_owned(),
        "/api/v1/workspaces/acme%2Fvaulted".to_owned(),
        "/api/v1/secrets".to_owned(),
        "/api/v1/audit?limit=1000".to_owned(),
        format!("/api/v1/tasks/{id}"),
        format!("/api/v1/tasks/{id}/events"),
        "/api/v1/workspaces/acme%2Fvaulted/egress/log".to_owned(),
    ] {
        surfaces.push(s.get(&path).await.to_string());
    }
    for text in &surfaces {
        assert!(
            !text.contains(REAL) && !text.contains(REAL_LLM_KEY),
            "leak: {text}"
        );
    }
    // The vault on disk is ciphertext.
    let db = std::fs::read(s.data_dir.path().join("berth.db")).unwrap();
    let wal = std::fs::read(s.data_dir.path().join("berth.db-wal")).unwrap_or_default();
    for bytes in [db, wal] {
        assert!(!String::from_utf8_lossy(&bytes).contains(REAL));
    }
    // The upstream got the real LLM key.
    assert!(mock
        .requests()
        .iter()
        .any(|r| r.header("x-api-key") == Some(REAL_LLM_KEY)));

    // list shows where it is used, and that it is not exposed.
    let list = s.get("/api/v1/secrets?tenant=acme").await;
    assert_eq!(list[0]["used_by"][0]["workspace"], ws);
    assert_eq!(list[0]["used_by"][0]["exposed"], false);

    // Opt-in env delivery is marked exposed, in the list and in the audit log.
    let o = s.cli(&[
        "workspace",
        "create",
        "exposed",
        "--tenant",
        "acme",
        "--memory",
        "128m",
        "--secret-env",
        "GITHUB_TOKEN",
    ]);
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    assert_eq!(
        s.exec("acme/exposed", &["sh", "-c", "echo $GITHUB_TOKEN"])
            .await["stdout"],
        format!("{REAL}\n")
    );
    let list = s.get("/api/v1/secrets?tenant=acme").await;
    let uses = list[0]["used_by"].as_array().unwrap();
    assert!(
        uses.iter()
            .any(|u| u["workspace"] == "acme/exposed" && u["exposed"] == true),
        "{list}"
    );
    let audit = s.get("/api/v1/audit?target=acme/GITHUB_TOKEN").await;
    assert!(
        audit
            .as_array()
            .unwrap()
            .iter()
            .any(|e| e["action"] == "secret.expose"),
        "{audit}"
    );

    // A secret of another tenant cannot be used.
    let o = s.cli_with_stdin(&["secret", "set", "--tenant", "globex", "OTHER"], b"x");
    assert!(o.status.success());
    let (st, v) = s
        .call("POST", "/api/v1/workspaces", Some(json!({"name": "thief", "tenant": "acme", "secrets": [{"name": "OTHER", "hosts": ["x.test"]}]})))
        .await;
    assert_eq!(
        (st, v["error"]["code"].as_str()),
        (404, Some("not_found")),
        "{v}"
    );
    s.kill9();
}

fn base64_decode(s: &str) -> Vec<u8> {
    const T: &[u8] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    let mut out = Vec::new();
    let mut buf = 0u32;
    let mut bits = 0;
    for c in s.bytes().filter(|c| *c != b'=') {
        let v = T.iter().position(|t| *t == c).unwrap() as u32;
        buf = (buf << 6) | v;
        bits += 6;
        if bits >= 8 {
            bits -= 8;
            out.push((buf >> bits) as u8);
            buf &= (1 << bits) - 1;
        }
    }
    out
}

/// A git server over HTTPS (dumb protocol) that only serves clients presenting the real token
/// with basic auth, like a code host does.
const GIT_SERVER: &str = r#"
import base64, http.server, os, ssl, sys
TOKEN = os.environ["EXPECTED_TOKEN"]
class H(http.server.SimpleHTTPRequestHandler):
    def do_GET(self):
        want = "Basic " + base64.b64encode(("x-access-token:" + TOKEN).encode()).decode()
        if self.headers.get("Authorization") != want:
            self.send_response(401)
            self.send_header("WWW-Authenticate", 'Basic realm="git"')
            self.send_header("Content-Length", "0")
            self.end_headers()
            return
        return super().do_GET()
    def log_message(self, *a):
        pass
srv = http.server.ThreadingHTTPServer(("0.0.0.0", 8443), H)
ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
ctx.load_cert_chain("server.crt", "server.key")
srv.socket = ctx.wrap_socket(srv.socket, server_side=True)
srv.serve_forever()
"#;

#[tokio::test]
async fn git_over_https_with_a_placeholder_token() {
    ensure_image().await;
    // A test CA and a certificate for git.bound.test, and a bare repository served over HTTPS.
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let sh = |cmd: &str| sh_in(d, cmd);
    test_certs(d, &["git.bound.test"]);
    sh("git init -q --bare -b main repo.git && git init -q -b main src && cd src && echo 'from the code host' > README && git add README && \
        git -c user.email=a@b -c user.name=a commit -q -m init && git push -q ../repo.git main && cd ../repo.git && git update-server-info");
    // Serve from the directory holding repo.git, inside a network namespace.
    let serve_dir = d.to_str().unwrap().to_owned();
    let host = NetnsHost::start_serving(
        &[
            "env",
            &format!("EXPECTED_TOKEN={REAL}"),
            "sh",
            "-c",
            &format!("cd {serve_dir} && exec python3 -c \"$0\""),
            GIT_SERVER,
        ],
        2,
    );
    let mut s = TestServer::start_with(
        bin(),
        ServerOptions {
            env: vec![
                (
                    "BERTH_EGRESS_HOSTS".into(),
                    format!("git.bound.test={}", host.ip),
                ),
                (
                    "BERTH_EGRESS_EXTRA_CA".into(),
                    d.join("ca.crt").display().to_string(),
                ),
            ],
            ..Default::default()
        },
    )
    .await;
    let o = s.cli_with_stdin(
        &["secret", "set", "--tenant", "acme", "GITHUB_TOKEN"],
        REAL.as_bytes(),
    );
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let o = s.cli(&[
        "workspace",
        "create",
        "coder",
        "--tenant",
        "acme",
        "--memory",
        "256m",
        "--allow",
        "git.bound.test:8443",
        "--secret",
        "GITHUB_TOKEN:git.bound.test",
    ]);
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let out = s
        .exec(
            "acme/coder",
            &["sh", "-c", "git clone -q \"https://x-access-token:$GITHUB_TOKEN@git.bound.test:8443/repo.git\" ~/repo 2>&1 && cat ~/repo/README && cat ~/repo/.git/config"],
        )
        .await;
    let text = out["stdout"].as_str().unwrap();
    assert_eq!(out["exit_code"], 0, "{out}");
    assert!(text.starts_with("from the code host\n"), "{text}");
    // What git stored in the workspace is the placeholder, never the token.
    assert!(
        text.contains("berth-placeholder-github_token-") && !text.contains(REAL),
        "{text}"
    );
    let log = s.get("/api/v1/workspaces/acme%2Fcoder/egress/log").await;
    assert!(
        log.as_array()
            .unwrap()
            .iter()
            .any(|e| e["host"] == "git.bound.test"
                && e["intercepted"] == true
                && e["decision"] == "allow"),
        "{log:#}"
    );
    s.kill9();
}
