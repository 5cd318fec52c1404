//! A real git server for tests: `git http-backend` behind a small HTTPS server (Python) with a
//! test CA, that answers only requests carrying the expected token (as the password of
//! `Authorization: Basic`, or `Authorization: Bearer`) and logs the `Authorization` header of
//! every request, so a test can prove what reached the server.
//!
//! [`GitServer::prepare`] makes the CA, a certificate for the host name, bare repositories with
//! one commit each and the server script in a temporary directory; the test runs
//! [`GitServer::command`] where it wants the server (e.g. in a network namespace it created,
//! reached by the workspace through berth's egress proxy with `BERTH_EGRESS_HOSTS` and
//! `BERTH_EGRESS_EXTRA_CA` = [`GitServer::ca`]). Pushes of small packs work too (the request body
//! is read by `Content-Length`).

use std::path::{Path, PathBuf};
use std::process::Command;

/// The HTTPS port the server listens on.
pub const PORT: u16 = 8443;

const SERVER: &str = r#"
import base64, http.server, os, ssl, subprocess, sys
root, token_file, log, cert, key = sys.argv[1:6]
TOKEN = open(token_file).read().strip()
class H(http.server.BaseHTTPRequestHandler):
    def git(self):
        auth = self.headers.get("Authorization") or ""
        with open(log, "a") as f:
            f.write(auth + "\n")
        ok = False
        if auth.startswith("Basic "):
            try:
                ok = base64.b64decode(auth[6:]).decode().partition(":")[2] == TOKEN
            except Exception:
                ok = False
        elif auth.startswith("Bearer "):
            ok = auth[7:] == TOKEN
        if not ok:
            self.send_response(401)
            self.send_header("WWW-Authenticate", 'Basic realm="git"')
            self.send_header("Content-Length", "0")
            self.end_headers()
            return
        path, _, query = self.path.partition("?")
        n = int(self.headers.get("Content-Length") or 0)
        body = self.rfile.read(n) if n else b""
        env = dict(os.environ, GIT_PROJECT_ROOT=root, GIT_HTTP_EXPORT_ALL="1", PATH_INFO=path,
                   QUERY_STRING=query, REQUEST_METHOD=self.command, REMOTE_USER="git",
                   REMOTE_ADDR="127.0.0.1", CONTENT_TYPE=self.headers.get("Content-Type") or "",
                   CONTENT_LENGTH=str(len(body)))
        if self.headers.get("Content-Encoding"):
            env["HTTP_CONTENT_ENCODING"] = self.headers.get("Content-Encoding")
        if self.headers.get("Git-Protocol"):
            env["GIT_PROTOCOL"] = self.headers.get("Git-Protocol")
        out = subprocess.run(["git", "http-backend"], input=body, env=env, capture_output=True).stdout
        sep = b"\r\n\r\n" if b"\r\n\r\n" in out else b"\n\n"
        head, _, rest = out.partition(sep)
        status, headers = 200, []
        for line in head.decode().splitlines():
            k, _, v = line.partition(":")
            if k.lower() == "status":
                status = int(v.strip().split()[0])
            elif k:
                headers.append((k, v.strip()))
        self.send_response(status)
        for k, v in headers:
            self.send_header(k, v)
        self.send_header("Content-Length", str(len(rest)))
        self.end_headers()
        self.wfile.write(rest)
    do_GET = git
    do_POST = git
    def log_message(self, *a):
        pass
srv = http.server.ThreadingHTTPServer(("0.0.0.0", 8443), H)
ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
ctx.load_cert_chain(cert, key)
srv.socket = ctx.wrap_socket(srv.socket, server_side=True)
srv.serve_forever()
"#;

/// A prepared git server (files only; run [`GitServer::command`] to serve).
pub struct GitServer {
    dir: tempfile::TempDir,
}

fn sh(dir: &Path, cmd: &str) {
    let o = Command::new("sh")
        .args(["-c", cmd])
        .current_dir(dir)
        .output()
        .unwrap();
    assert!(
        o.status.success(),
        "{cmd}: {}{}",
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr)
    );
}

impl GitServer {
    /// A CA and a certificate for `host`, the token file, and one bare repository per
    /// `(name, files)` (`name.git`, branch `main`, one commit of `files`).
    pub fn prepare(host: &str, token: &str, repos: &[(&str, &[(&str, &str)])]) -> Self {
        let dir = tempfile::tempdir().unwrap();
        let d = dir.path();
        let san = format!("subjectAltName=DNS:{host}");
        sh(d, "openssl req -x509 -newkey rsa:2048 -nodes -days 2 -subj /CN=berth-git-test-ca -keyout ca.key -out ca.crt 2>/dev/null");
        sh(d, &format!("openssl req -newkey rsa:2048 -nodes -subj /CN={host} -addext {san} -keyout server.key -out server.csr 2>/dev/null"));
        sh(d, &format!("printf '{san}\\n' > ext && openssl x509 -req -in server.csr -CA ca.crt -CAkey ca.key -CAcreateserial -days 2 -extfile ext -out server.crt 2>/dev/null"));
        std::fs::write(d.join("token"), token).unwrap();
        std::fs::write(d.join("server.py"), SERVER).unwrap();
        std::fs::write(d.join("auth.log"), "").unwrap();
        std::fs::create_dir_all(d.join("repos")).unwrap();
        for (name, files) in repos {
            let work = d.join(format!("work-{name}"));
            std::fs::create_dir_all(&work).unwrap();
            for (path, text) in *files {
                let p = work.join(path);
                if let Some(parent) = p.parent() {
                    std::fs::create_dir_all(parent).unwrap();
                }
                std::fs::write(p, text).unwrap();
            }
            sh(
                &work,
                "git init -q -b main && git add -A && \
                 git -c user.name=t -c user.email=t@example.com commit -q -m init",
            );
            sh(
                d,
                &format!("git clone -q --bare work-{name} repos/{name}.git && git -C repos/{name}.git config http.receivepack true"),
            );
        }
        // The server may run as another user's namespace root: everything readable.
        sh(d, "chmod -R a+rX . && chmod a+rw auth.log");
        Self { dir }
    }

    /// The test CA's certificate (PEM), for `BERTH_EGRESS_EXTRA_CA`.
    pub fn ca(&self) -> PathBuf {
        self.dir.path().join("ca.crt")
    }

    /// The server's command line (listens on [`PORT`] on every address).
    pub fn command(&self) -> Vec<String> {
        let d = self.dir.path();
        let p = |f: &str| d.join(f).display().to_string();
        vec![
            "python3".into(),
            p("server.py"),
            p("repos"),
            p("token"),
            p("auth.log"),
            p("server.crt"),
            p("server.key"),
        ]
    }

    /// The `Authorization` header of every request so far, one per line (empty: none sent).
    pub fn auth_log(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("auth.log")).unwrap()
    }

    /// The passwords of the Basic credentials the server received, decoded.
    pub fn basic_passwords(&self) -> Vec<String> {
        use base64::Engine as _;
        self.auth_log()
            .lines()
            .filter_map(|l| l.strip_prefix("Basic "))
            .filter_map(|b| base64::engine::general_purpose::STANDARD.decode(b).ok())
            .map(|b| {
                let s = String::from_utf8_lossy(&b).into_owned();
                s.split_once(':').map(|(_, p)| p.to_owned()).unwrap_or(s)
            })
            .collect()
    }

    /// The bare repository `name.git` on the host, to inspect what was pushed.
    pub fn repo(&self, name: &str) -> PathBuf {
        self.dir.path().join("repos").join(format!("{name}.git"))
    }
}
