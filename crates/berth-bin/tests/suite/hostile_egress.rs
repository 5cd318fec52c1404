//! The egress proxy against a hostile workspace, judged on the far side: a test host in a
//! network namespace this test creates (a private 172.16.N.2 and a ULA fd78:N::2 behind a
//! veth pair, never a real outside address) writes down every request that reaches it. From
//! inside a workspace whose rules end in `allow *`:
//! - private-range targets by every numeric spelling of the IP, and by a name that leads to
//!   the private address through the broad rule, never reach it (plain and CONNECT);
//! - a placeholder sent in plaintext HTTP to its bound host reaches the origin as the
//!   placeholder, never as the real value; inside TLS only the `Authorization` header gets it;
//! - a plain tunnel whose ClientHello names another host than the CONNECT is refused;
//! - rotating a secret, then deleting it, changes what the next request carries at once.

use std::process::{Child, Command, Stdio};
use std::time::Duration;

use berth_test_support::{ensure_image, eventually, ServerOptions, TestServer};
use serde_json::json;

use super::secrets::{origin, test_certs};
use crate::bin;

const REAL: &str = "ghp_HOSTILEtestREAL0123456789";
const ROTATED: &str = "ghp_HOSTILEtestROTATED987654";

/// The origin's handler, served by [`origin`] on 8080 (HTTP) and 8443 (HTTPS, a certificate from
/// the test's CA). Every request is appended to `hits.log` as
/// `PORT PATH auth=AUTHORIZATION key=X-API-KEY`, and echoed back.
const ORIGIN: &str = r#"
class H(http.server.BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    def do_GET(self):
        line = "%d %s auth=%s key=%s\n" % (self.server.server_port, self.path,
            self.headers.get("Authorization"), self.headers.get("X-Api-Key"))
        with open("hits.log", "a") as f:
            f.write(line)
        body = line.encode()
        self.send_response(200)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)
    def log_message(self, *a):
        pass
"#;

/// Raw requests through the proxy at 127.0.0.1:3128, with host spellings curl would
/// normalize away: `get TARGET PATH` (absolute-form GET) and `connect TARGET PATH SNI`
/// (CONNECT, then TLS without certificate checks naming SNI — or plain HTTP when SNI is `-`
/// — and a GET inside). Prints one line: what came back first.
const RAW: &str = r#"
import socket, ssl, sys
def proxy():
    return socket.create_connection(("127.0.0.1", 3128), timeout=10)
def read_all(s):
    out = b""
    try:
        while True:
            d = s.recv(65536)
            if not d:
                break
            out += d
    except Exception as e:
        out += (" [%s]" % e).encode()
    return out.decode(errors="replace")
mode, target, path = sys.argv[1], sys.argv[2], sys.argv[3]
s = proxy()
if mode == "get":
    s.sendall(("GET http://%s%s HTTP/1.1\r\nHost: %s\r\nConnection: close\r\n\r\n" % (target, path, target)).encode())
    print(read_all(s).split("\r\n")[0])
    raise SystemExit(0)
s.sendall(("CONNECT %s HTTP/1.1\r\nHost: %s\r\n\r\n" % (target, target)).encode())
head = b""
while b"\r\n\r\n" not in head:
    c = s.recv(1)
    if not c:
        break
    head += c
status = head.split(b"\r\n")[0].decode()
if " 200" not in status:
    print("CONNECT refused: " + status)
    raise SystemExit(0)
sni = sys.argv[4]
if sni != "-":
    ctx = ssl.create_default_context()
    ctx.check_hostname = False
    ctx.verify_mode = ssl.CERT_NONE
    try:
        s = ctx.wrap_socket(s, server_hostname=sni)
    except Exception as e:
        print("TLS failed: %s" % e)
        raise SystemExit(0)
try:
    s.sendall(("GET %s HTTP/1.1\r\nHost: %s\r\nConnection: close\r\n\r\n" % (path, target)).encode())
    print(read_all(s).split("\r\n")[0])
except Exception as e:
    print("tunnel failed: %s" % e)
"#;

/// A test host in its own network namespace: 172.16.N.2/24 and fd78:N::2/64 on a veth pair
/// whose host end is 172.16.N.1, running [`ORIGIN`] in `dir`.
struct PrivateHost {
    ns: String,
    n: u32,
    server: Child,
}

fn sh(cmd: &str) {
    let st = Command::new("sh").args(["-c", cmd]).status().unwrap();
    assert!(st.success(), "{cmd}");
}

impl PrivateHost {
    fn start(dir: &std::path::Path) -> Self {
        let n = std::process::id() % 200 + 20;
        let ns = format!("berth-h{n}");
        let _ = Command::new("ip").args(["netns", "del", &ns]).status();
        sh(&format!(
            "ip netns add {ns} && ip link add bhh{n} type veth peer name bhn{n} && \
             ip link set bhn{n} netns {ns} && ip addr add 172.16.{n}.1/24 dev bhh{n} && \
             ip -6 addr add fd78:{n}::1/64 dev bhh{n} nodad && ip link set bhh{n} up && \
             ip netns exec {ns} ip addr add 172.16.{n}.2/24 dev bhn{n} && \
             ip netns exec {ns} ip -6 addr add fd78:{n}::2/64 dev bhn{n} nodad && \
             ip netns exec {ns} ip link set bhn{n} up && ip netns exec {ns} ip link set lo up"
        ));
        let server = Command::new("ip")
            .args(["netns", "exec", &ns, "python3", "-c", &origin(ORIGIN)])
            .current_dir(dir)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        Self { ns, n, server }
    }

    fn ip(&self) -> String {
        format!("172.16.{}.2", self.n)
    }
}

impl Drop for PrivateHost {
    fn drop(&mut self) {
        let _ = self.server.kill();
        let _ = self.server.wait();
        let _ = Command::new("ip").args(["netns", "del", &self.ns]).status();
        let _ = Command::new("ip")
            .args(["link", "del", &format!("bhh{}", self.n)])
            .status();
    }
}

/// The origin's hits so far.
fn hits(d: &std::path::Path) -> String {
    std::fs::read_to_string(d.join("hits.log")).unwrap_or_default()
}

async fn run(s: &TestServer, script: &str) -> String {
    let out = s.exec("acme/hostile", &["sh", "-c", script]).await;
    format!(
        "{}{}",
        out["stdout"].as_str().unwrap(),
        out["stderr"].as_str().unwrap()
    )
}

/// The numeric spellings of `a.b.c.d` that `inet_aton` (and so getaddrinfo) accepts.
fn spellings(ip: &str) -> Vec<String> {
    let o: Vec<u32> = ip.split('.').map(|p| p.parse().unwrap()).collect();
    let n = (o[0] << 24) | (o[1] << 16) | (o[2] << 8) | o[3];
    vec![
        n.to_string(),
        format!("0x{n:08x}"),
        format!("{}.{}", o[0], n & 0x00ff_ffff),
        format!("{}.{}.{}", o[0], o[1], n & 0xffff),
        format!("0{:o}.0{:o}.{}.{}", o[0], o[1], o[2], o[3]),
        format!("{ip}."),
        format!("[::ffff:{ip}]"),
    ]
}

/// How it fails without each fix (each reverted alone, and the run watched failing): with no
/// check of resolved addresses, `priv.test` (a static name for the private address) passes
/// through `*` and the origin answers `/by-name-get-0` with 200; with placeholders swapped
/// into plain HTTP the origin logs `/plain auth=Bearer ghp_HOSTILE…REAL…`; with every header
/// swapped it logs `key=ghp_…` inside TLS; with no SNI check the fronted ClientHello gets a
/// 200 through the plain tunnel; with no refresh on delete the request after `secret rm`
/// still carries `…ROTATED…`; with numeric spellings read as names (`*` matches them,
/// getaddrinfo turns them into 172.16.N.2, and only the address check stops them) the log
/// shows them under their spellings instead of as default-denied IP literals.
#[tokio::test]
async fn hostile_egress_never_reaches_private_hosts_or_leaks_secrets() {
    ensure_image().await;
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    test_certs(d, &["secure.test", "front.test", "hidden.test"]);
    let host = PrivateHost::start(d);
    let ip = host.ip();
    let mut s = TestServer::start_with(
        bin(),
        ServerOptions {
            env: vec![
                (
                    "BERTH_EGRESS_HOSTS".into(),
                    format!(
                        "priv.test={ip},plain.test={ip},secure.test={ip},front.test={ip},hidden.test={ip},ula.test=fd78:{n}::2",
                        n = host.n
                    ),
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
        &["secret", "set", "--tenant", "acme", "TOKEN"],
        REAL.as_bytes(),
    );
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    s.create_workspace(json!({
        "name": "hostile", "tenant": "acme", "memory": "256m",
        "egress": [
            "allow plain.test:8080",
            "allow secure.test:8443",
            "allow front.test:8443",
            "allow *"
        ],
        "secrets": [{"name": "TOKEN", "hosts": ["plain.test", "secure.test"]}]
    }))
    .await;
    // The origin is up and reachable the allowed way.
    let out = run(&s, "curl -sS -m 10 http://plain.test:8080/control").await;
    assert!(out.starts_with("8080 /control "), "{out}\n{}", s.log());

    // Private range through `*`: numeric spellings (absolute-form and CONNECT) and a name.
    let raw = |args: String| format!("python3 -c '{RAW}' {args}");
    let mut attacks = Vec::new();
    for (i, sp) in spellings(&ip).iter().enumerate() {
        attacks.push(raw(format!("get '{sp}:8080' /spelled-get-{i}")));
        attacks.push(raw(format!("connect '{sp}:8080' /spelled-connect-{i} -")));
    }
    let n = ip.split('.').nth(2).unwrap().to_owned();
    for (i, target) in [
        "priv.test:8080".to_owned(),
        format!("[fd78:{n}::2]:8080"),
        format!("[::ffff:ac10:{:02x}02]:8080", n.parse::<u32>().unwrap()),
        "ula.test:8080".to_owned(),
    ]
    .iter()
    .enumerate()
    {
        attacks.push(raw(format!("get '{target}' /by-name-get-{i}")));
        attacks.push(raw(format!("connect '{target}' /by-name-connect-{i} -")));
    }
    attacks.push("curl -sS -m 10 http://priv.test:8080/by-name-curl".to_owned());
    for cmd in &attacks {
        let out = run(&s, cmd).await;
        assert!(
            !out.contains(" 200") && !out.contains("auth="),
            "{cmd} got through: {out}"
        );
    }
    let seen = hits(d);
    assert!(
        !seen.contains("/spelled") && !seen.contains("/by-name"),
        "the private host was reached: {seen}"
    );

    // Plaintext HTTP to the bound host: the origin sees the placeholder.
    let placeholder = run(&s, "printf %s \"$TOKEN\"").await;
    assert!(
        placeholder.starts_with("berth-placeholder-"),
        "{placeholder}"
    );
    let curl_auth = |url: &str| {
        format!("curl -sS -m 10 -H \"Authorization: Bearer $TOKEN\" -H \"X-Api-Key: $TOKEN\" {url}")
    };
    let out = run(&s, &curl_auth("http://plain.test:8080/plain")).await;
    assert_eq!(
        out,
        format!("8080 /plain auth=Bearer {placeholder} key={placeholder}\n")
    );
    // Inside TLS to the bound host: the real value, in Authorization only.
    let out = run(&s, &curl_auth("https://secure.test:8443/tls")).await;
    assert_eq!(
        out,
        format!("8443 /tls auth=Bearer {REAL} key={placeholder}\n")
    );

    // Domain fronting through a plain tunnel: refused; the matching name works.
    let out = run(
        &s,
        &raw("connect front.test:8443 /fronted hidden.test".into()),
    )
    .await;
    assert!(!out.contains(" 200"), "fronting got through: {out}");
    let out = run(
        &s,
        &raw("connect front.test:8443 /front-ok front.test".into()),
    )
    .await;
    assert!(out.contains(" 200"), "the matching SNI failed: {out}");
    let seen = hits(d);
    assert!(!seen.contains("/fronted"), "{seen}");
    assert!(seen.contains("8443 /front-ok "), "{seen}");

    // Rotation, then deletion, apply to the very next request.
    let o = s.cli_with_stdin(
        &["secret", "set", "--tenant", "acme", "TOKEN"],
        ROTATED.as_bytes(),
    );
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let out = run(&s, &curl_auth("https://secure.test:8443/rotated")).await;
    assert_eq!(
        out,
        format!("8443 /rotated auth=Bearer {ROTATED} key={placeholder}\n")
    );
    let o = s.cli(&["secret", "rm", "--tenant", "acme", "TOKEN"]);
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    // With nothing left to swap the proxy no longer intercepts: a plain tunnel to an origin
    // whose CA the workspace does not trust (hence -k).
    let out = run(&s, &curl_auth("-k https://secure.test:8443/deleted")).await;
    assert_eq!(
        out,
        format!("8443 /deleted auth=Bearer {placeholder} key={placeholder}\n")
    );
    let seen = hits(d);
    for line in seen.lines().filter(|l| !l.contains(" /tls ")) {
        assert!(!line.contains(REAL), "{line}");
    }

    // The proxy logged the refusals with their reasons.
    let log = eventually(Duration::from_secs(10), "egress log entries", || async {
        let v = s.get("/api/v1/workspaces/acme%2Fhostile/egress/log").await;
        let entries = v.as_array().unwrap().clone();
        let has = |host: &str, reason: &str| {
            entries.iter().any(|e| {
                e["decision"] == "deny"
                    && e["host"] == host
                    && e["reason"].as_str().unwrap_or("").contains(reason)
            })
        };
        (has("priv.test", "private address")
            && has("ula.test", "unique local address")
            && has(&ip, "default deny")
            && has("front.test", "SNI mismatch"))
        .then_some(v)
    })
    .await;
    assert!(!log.to_string().contains(REAL) && !log.to_string().contains(ROTATED));
    // Every numeric spelling was judged as the IP literal it is (the `*` rule never matched
    // it): none is logged under its spelling, and each attempt is a default deny for the IP.
    let entries = log.as_array().unwrap();
    let spelled = spellings(&ip);
    assert!(
        !entries
            .iter()
            .any(|e| spelled.iter().any(|sp| e["host"] == sp.as_str())),
        "{log:#}"
    );
    let as_literal = entries
        .iter()
        .filter(|e| {
            e["host"] == ip.as_str() && e["reason"].as_str().unwrap_or("").contains("default deny")
        })
        .count();
    assert!(as_literal >= 2 * (spelled.len() - 1), "{log:#}");
    s.kill9();
}
