//! The egress bypasses that need an HTTP(S) origin to trick, from inside a real workspace:
//! a redirect from an allowed host to a denied one (plain and inside intercepted TLS), an
//! allowed SNI carrying a denied `Host` header, and a denied SNI inside a CONNECT to an allowed
//! host. The origin, a test host in a network namespace, writes down every request it gets: none
//! of the tricks may reach it, and the proxy logs each as denied with the reason.

use berth_test_support::{ensure_image, eventually, ServerOptions, TestServer};
use serde_json::{json, Value};
use std::time::Duration;

use super::egress::NetnsHost;
use super::secrets::{origin, test_certs};
use crate::bin;

/// The origin's handler, served by [`origin`] on 8080 (HTTP) and 8443 (HTTPS, a certificate from
/// the test's CA); `/redirect?to=URL` answers 302, anything else 200 "origin says hello".
/// Every request is appended to `requests.log` as `PORT HOST PATH`.
const ORIGIN: &str = r#"
import urllib.parse
class H(http.server.BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    def do_GET(self):
        with open("requests.log", "a") as f:
            f.write("%d %s %s\n" % (self.server.server_port, self.headers.get("Host"), self.path))
        if self.path.startswith("/redirect?to="):
            self.send_response(302)
            self.send_header("Location", urllib.parse.unquote(self.path[len("/redirect?to="):]))
            self.send_header("Content-Length", "0")
            self.end_headers()
            return
        body = b"origin says hello\n"
        self.send_response(200)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)
    def log_message(self, *a):
        pass
"#;

/// CONNECT to the allowed host, then TLS naming a denied one (no certificate check: the point
/// is whether any byte reaches the origin).
const SNI_TRICK: &str = r#"
import socket, ssl
s = socket.create_connection(("127.0.0.1", 3128), timeout=10)
s.sendall(b"CONNECT secure.test:8443 HTTP/1.1\r\nHost: secure.test:8443\r\n\r\n")
head = b""
while b"\r\n\r\n" not in head:
    c = s.recv(1)
    if not c:
        raise SystemExit("proxy closed: %r" % head)
    head += c
if not head.startswith(b"HTTP/1.1 200"):
    raise SystemExit("CONNECT refused: %r" % head)
ctx = ssl.create_default_context()
ctx.check_hostname = False
ctx.verify_mode = ssl.CERT_NONE
t = ctx.wrap_socket(s, server_hostname="denied.example")
t.sendall(b"GET /hello HTTP/1.1\r\nHost: secure.test:8443\r\nConnection: close\r\n\r\n")
print(t.recv(65536).decode(errors="replace"))
"#;

#[tokio::test]
async fn redirects_and_sni_host_tricks_are_denied_from_inside() {
    ensure_image().await;
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    test_certs(d, &["secure.test", "denied.example"]);
    let host = NetnsHost::serve_python(d, &origin(ORIGIN), 3);
    let ip = &host.ip;
    let s = TestServer::start_with(
        bin(),
        ServerOptions {
            env: vec![
                (
                    "BERTH_EGRESS_HOSTS".into(),
                    format!("ns.test={ip},secure.test={ip},denied.example={ip}"),
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
    // A method/path rule makes the proxy intercept secure.test's TLS.
    s.create_workspace(json!({"name": "tr", "memory": "256m",
        "egress": ["allow ns.test:8080", "allow secure.test:8443 GET /"]}))
        .await;
    let run = |script: String| {
        let s = &s;
        async move {
            let out = s.exec("tr", &["sh", "-c", &script]).await;
            let text = format!(
                "{}{}",
                out["stdout"].as_str().unwrap(),
                out["stderr"].as_str().unwrap()
            );
            (out["exit_code"].as_i64().unwrap(), text)
        }
    };

    // The allowed ways work (the origin is up and the rules are right).
    let hello = "origin says hello\n";
    let (code, out) = run("curl -sS -m 10 http://ns.test:8080/hello".into()).await;
    assert_eq!((code, out.as_str()), (0, hello));
    let (code, out) = run("curl -sS -m 10 https://secure.test:8443/hello".into()).await;
    assert_eq!((code, out.as_str()), (0, hello));

    let tricks = [
        (
            "plain redirect to a denied host",
            "curl -sSfL -m 10 'http://ns.test:8080/redirect?to=http://denied.example:8080/hello'"
                .to_owned(),
        ),
        (
            "redirect inside intercepted TLS to a denied host",
            "curl -sSfL -m 10 'https://secure.test:8443/redirect?to=https://denied.example:8443/hello'"
                .to_owned(),
        ),
        (
            "allowed SNI, denied Host header",
            "curl -sSf -m 10 -H 'Host: denied.example:8443' https://secure.test:8443/hello"
                .to_owned(),
        ),
        (
            "denied SNI inside a CONNECT to an allowed host",
            format!("python3 -c '{SNI_TRICK}'"),
        ),
    ];
    for (what, cmd) in &tricks {
        let (code, out) = run(cmd.clone()).await;
        assert_ne!(code, 0, "{what} succeeded: {cmd}\n{out}");
        assert!(!out.contains("origin says hello"), "{what}: {out}");
    }

    // The origin saw the allowed requests and the redirects, nothing addressed to the denied
    // name.
    let seen = std::fs::read_to_string(d.join("requests.log")).unwrap();
    let lines: Vec<&str> = seen.lines().collect();
    assert_eq!(
        lines,
        [
            "8080 ns.test:8080 /hello",
            "8443 secure.test:8443 /hello",
            "8080 ns.test:8080 /redirect?to=http://denied.example:8080/hello",
            "8443 secure.test:8443 /redirect?to=https://denied.example:8443/hello",
        ],
        "{seen}"
    );

    // Each trick is in the egress log as a denial, with its reason.
    let log = eventually(Duration::from_secs(10), "egress log entries", || async {
        let v = s.get("/api/v1/workspaces/tr/egress/log").await;
        let n = v
            .as_array()
            .unwrap()
            .iter()
            .filter(|e| e["decision"] == "deny")
            .count();
        (n >= 4).then_some(v)
    })
    .await;
    let entries = log.as_array().unwrap();
    let denied = |host: &str, reason: &str| {
        entries.iter().any(|e: &Value| {
            e["decision"] == "deny"
                && e["host"] == host
                && e["reason"].as_str().unwrap_or("").contains(reason)
        })
    };
    assert!(denied("denied.example", ""), "redirect follow-ups: {log:#}");
    assert!(denied("secure.test", "Host mismatch"), "{log:#}");
    assert!(denied("secure.test", "SNI mismatch"), "{log:#}");
    let redirects = entries
        .iter()
        .filter(|e| e["decision"] == "deny" && e["host"] == "denied.example")
        .count();
    assert_eq!(redirects, 2, "{log:#}");
}
