//! Test harness for berth's integration tests.
//!
//! [`TestServer`] runs the real `berth server` binary on a private data directory and a free
//! loopback port, against the real engine (`DOCKER_HOST`, default Podman's socket), with a known
//! admin token. It can be killed with SIGKILL and restarted on the same data. On drop it stops the
//! server and removes every engine object labelled with its server id, so tests leave nothing
//! behind even when they fail.
#![allow(clippy::unwrap_used, clippy::expect_used)]

pub mod agents;
pub mod git_server;
pub mod mcp_notes;
pub mod mock_llm;

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::Duration;

use berth_runtime::image::ImageRecipe;
use berth_runtime::DockerRuntime;
use futures_util::{SinkExt, StreamExt};
use serde_json::Value;
use tokio_tungstenite::tungstenite::client::IntoClientRequest;
use tokio_tungstenite::tungstenite::Message;

pub type Ws =
    tokio_tungstenite::WebSocketStream<tokio_tungstenite::MaybeTlsStream<tokio::net::TcpStream>>;

/// The engine endpoint tests use.
pub fn engine() -> String {
    std::env::var("DOCKER_HOST").unwrap_or_else(|_| "unix:///run/podman/podman.sock".into())
}

/// Builds the workspace base image once per machine (content-addressed: later calls are quick)
/// and returns its tag. Holds a file lock so parallel test processes build it only once.
pub async fn ensure_image() -> String {
    let lock_path = std::env::temp_dir().join("berth-test-image.lock");
    let file = std::fs::OpenOptions::new()
        .create(true)
        .truncate(false)
        .write(true)
        .open(&lock_path)
        .unwrap();
    let _lock = tokio::task::spawn_blocking(move || {
        nix::fcntl::Flock::lock(file, nix::fcntl::FlockArg::LockExclusive)
            .map_err(|(_, e)| e)
            .unwrap()
    })
    .await
    .unwrap();
    let rt = DockerRuntime::connect(Some(&engine())).unwrap();
    let work = std::env::temp_dir().join("berth-test-image-build");
    std::fs::create_dir_all(&work).unwrap();
    let recipe = ImageRecipe {
        work_dir: work,
        ..Default::default()
    };
    let out = berth_runtime::image::build_image(&rt, &recipe, false, |p| {
        eprintln!("[image {}] {}", p.step, p.line);
    })
    .await
    .expect("building the workspace base image");
    out.tag
}

pub struct ServerOptions {
    pub reconcile_seconds: u64,
    pub default_network: String,
    pub env: Vec<(String, String)>,
    /// `127.0.0.1:PORT` to listen on (default: a free port), for tests that must name the URL
    /// before the server starts (e.g. an identity provider's redirect URI).
    pub listen: Option<String>,
}

impl Default for ServerOptions {
    fn default() -> Self {
        Self {
            reconcile_seconds: 1,
            default_network: "none".into(),
            env: Vec::new(),
            listen: None,
        }
    }
}

pub struct TestServer {
    pub url: String,
    pub token: String,
    pub bin: PathBuf,
    pub data_dir: tempfile::TempDir,
    listen: String,
    opts: ServerOptions,
    child: Option<Child>,
    server_id: Option<String>,
}

/// A TCP port free on 127.0.0.1 right now.
pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

impl TestServer {
    pub async fn start(bin: &Path) -> Self {
        Self::start_with(bin, ServerOptions::default()).await
    }

    pub async fn start_with(bin: &Path, opts: ServerOptions) -> Self {
        let data_dir = tempfile::Builder::new()
            .prefix("berth-test-")
            .tempdir_in("/var/tmp")
            .unwrap();
        let listen = opts
            .listen
            .clone()
            .unwrap_or_else(|| format!("127.0.0.1:{}", free_port()));
        let token = format!("berth_test_{:032x}", rand::random::<u128>());
        let mut s = Self {
            url: format!("http://{listen}"),
            token,
            bin: bin.to_owned(),
            data_dir,
            listen,
            opts,
            child: None,
            server_id: None,
        };
        s.spawn().await;
        let info = s.get("/api/v1/version").await;
        s.server_id = Some(info["server_id"].as_str().unwrap().to_owned());
        s
    }

    async fn spawn(&mut self) {
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(self.data_dir.path().join("server.log"))
            .unwrap();
        let mut cmd = Command::new(&self.bin);
        cmd.arg("server")
            .env("BERTH_LISTEN", &self.listen)
            .env("BERTH_DATA_DIR", self.data_dir.path())
            .env("BERTH_BOOTSTRAP_TOKEN", &self.token)
            .env("DOCKER_HOST", engine())
            .env(
                "BERTH_RECONCILE_SECONDS",
                self.opts.reconcile_seconds.to_string(),
            )
            .env("BERTH_DEFAULT_NETWORK", &self.opts.default_network)
            .env("BERTH_LOG", "info,berth_server=debug")
            .stdin(Stdio::null())
            .stdout(log.try_clone().unwrap())
            .stderr(log);
        for (k, v) in &self.opts.env {
            cmd.env(k, v);
        }
        self.child = Some(cmd.spawn().unwrap());
        let client = reqwest::Client::new();
        // Up to 60 s: a loaded 2-core machine (parallel test binaries) can be slow to start it.
        for _ in 0..1200 {
            if let Ok(r) = client.get(format!("{}/healthz", self.url)).send().await {
                if r.status().is_success() {
                    return;
                }
            }
            if let Some(st) = self.child.as_mut().unwrap().try_wait().unwrap() {
                panic!("berth server exited with {st}; log:\n{}", self.log());
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        panic!("berth server did not come up; log:\n{}", self.log());
    }

    pub fn log(&self) -> String {
        std::fs::read_to_string(self.data_dir.path().join("server.log")).unwrap_or_default()
    }

    pub fn server_id(&self) -> &str {
        self.server_id.as_deref().unwrap()
    }

    /// SIGKILL, no shutdown path at all.
    pub fn kill9(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }

    /// Starts the server again on the same data directory and port.
    pub async fn restart(&mut self) {
        self.kill9();
        self.spawn().await;
    }

    pub fn http(&self) -> reqwest::Client {
        reqwest::Client::builder()
            .timeout(Duration::from_secs(120))
            .build()
            .unwrap()
    }

    /// Any method with optional JSON body; returns status and parsed JSON (Null when empty).
    pub async fn call(&self, method: &str, path: &str, body: Option<Value>) -> (u16, Value) {
        let m = reqwest::Method::from_bytes(method.as_bytes()).unwrap();
        let mut req = self
            .http()
            .request(m, format!("{}{path}", self.url))
            .bearer_auth(&self.token);
        if let Some(b) = body {
            req = req.json(&b);
        }
        let resp = req.send().await.unwrap();
        let status = resp.status().as_u16();
        let text = resp.text().await.unwrap();
        let v = if text.is_empty() {
            Value::Null
        } else {
            serde_json::from_str(&text).unwrap_or(Value::String(text))
        };
        (status, v)
    }

    /// GET that must succeed.
    pub async fn get(&self, path: &str) -> Value {
        let (s, v) = self.call("GET", path, None).await;
        assert_eq!(s, 200, "GET {path}: {v}");
        v
    }

    /// Creates a workspace (must succeed) and returns its JSON.
    pub async fn create_workspace(&self, body: Value) -> Value {
        let (s, v) = self.call("POST", "/api/v1/workspaces", Some(body)).await;
        assert_eq!(s, 201, "create: {v}\nlog:\n{}", self.log());
        v
    }

    /// Runs a command in a workspace through the buffered exec API.
    pub async fn exec(&self, ws: &str, cmd: &[&str]) -> Value {
        let (s, v) = self
            .call(
                "POST",
                &format!("/api/v1/workspaces/{}/exec", enc(ws)),
                Some(serde_json::json!({ "cmd": cmd })),
            )
            .await;
        assert_eq!(s, 200, "exec {cmd:?}: {v}");
        v
    }

    /// Runs `sh -c script` in a workspace; it must exit 0. Its stdout.
    pub async fn sh(&self, ws: &str, script: &str) -> String {
        let out = self.exec(ws, &["sh", "-c", script]).await;
        assert_eq!(out["exit_code"], 0, "{script}: {out}");
        out["stdout"].as_str().unwrap_or_default().to_owned()
    }

    /// Runs the `berth` CLI against this server.
    pub fn cli(&self, args: &[&str]) -> Output {
        self.cli_with_stdin(args, &[])
    }

    pub fn cli_with_stdin(&self, args: &[&str], stdin: &[u8]) -> Output {
        use std::io::Write;
        let mut child = Command::new(&self.bin)
            .args(args)
            .env("BERTH_URL", &self.url)
            .env("BERTH_TOKEN", &self.token)
            .env("HOME", self.data_dir.path())
            .env("XDG_CONFIG_HOME", self.data_dir.path().join("config"))
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        let mut input = child.stdin.take().unwrap();
        input.write_all(stdin).unwrap();
        drop(input);
        child.wait_with_output().unwrap()
    }

    /// Opens a WebSocket on an API path with the bearer token.
    pub async fn ws(&self, path: &str) -> Ws {
        let url = format!("{}{path}", self.url.replacen("http://", "ws://", 1));
        let mut req = url.into_client_request().unwrap();
        req.headers_mut().insert(
            "authorization",
            format!("Bearer {}", self.token).parse().unwrap(),
        );
        let (ws, _) = tokio_tungstenite::connect_async(req).await.unwrap();
        ws
    }
}

/// Percent-encodes one path segment (`acme/web` → `acme%2Fweb`).
pub fn enc(s: &str) -> String {
    let mut out = String::new();
    for b in s.bytes() {
        if b.is_ascii_alphanumeric() || b"-_.~".contains(&b) {
            out.push(b as char);
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

/// Reads terminal output from an attach WebSocket until `needle` shows up; returns all bytes.
pub async fn read_until(ws: &mut Ws, needle: &str, timeout: Duration) -> String {
    let mut seen = Vec::new();
    let res = tokio::time::timeout(timeout, async {
        while let Some(msg) = ws.next().await {
            match msg.unwrap() {
                Message::Binary(b) => {
                    seen.extend_from_slice(&b);
                    if String::from_utf8_lossy(&seen).contains(needle) {
                        return;
                    }
                }
                Message::Close(_) => return,
                _ => {}
            }
        }
    })
    .await;
    let text = String::from_utf8_lossy(&seen).into_owned();
    assert!(
        res.is_ok() && text.contains(needle),
        "did not see {needle:?}; got {text:?}"
    );
    text
}

pub async fn send_input(ws: &mut Ws, text: &str) {
    ws.send(Message::Binary(text.as_bytes().to_vec()))
        .await
        .unwrap();
}

/// Polls `f` until it returns Some, or panics after `timeout`.
pub async fn eventually<T, F, Fut>(timeout: Duration, what: &str, mut f: F) -> T
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Option<T>>,
{
    let deadline = tokio::time::Instant::now() + timeout;
    loop {
        if let Some(v) = f().await {
            return v;
        }
        if tokio::time::Instant::now() > deadline {
            panic!("timed out waiting for {what}");
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

impl Drop for TestServer {
    fn drop(&mut self) {
        self.kill9();
        let Some(id) = self.server_id.clone() else {
            return;
        };
        // Remove everything this server created in the engine, on a private runtime so this
        // works from inside (or outside) an async test.
        let _ = std::thread::spawn(move || {
            let rt = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .unwrap();
            rt.block_on(cleanup_engine(&id));
        })
        .join();
    }
}

/// Removes containers and volumes of the server with this id.
pub async fn cleanup_engine(server_id: &str) {
    use berth_runtime::Runtime;
    let Ok(rt) = DockerRuntime::connect(Some(&engine())) else {
        return;
    };
    if let Ok(list) = rt
        .list_containers(&format!("berth.server={server_id}"))
        .await
    {
        for c in list {
            let _ = rt.remove_container(&c.id).await;
        }
    }
    let prefix = format!("berth-{server_id}-");
    if let Ok(vols) = rt
        .client()
        .list_volumes(None::<bollard::volume::ListVolumesOptions<String>>)
        .await
    {
        for v in vols.volumes.unwrap_or_default() {
            if v.name.starts_with(&prefix) {
                let _ = rt.remove_volume(&v.name).await;
            }
        }
    }
}

/// An image whose entrypoint exits at once: workspaces on it fail during start, which is how
/// tests exercise creation rollback against the real engine. Built from the debootstrap base.
pub async fn ensure_broken_image() -> String {
    // Building the workspace image leaves its debootstrap base behind, which this builds on.
    ensure_image().await;
    let rt = DockerRuntime::connect(Some(&engine())).unwrap();
    let from = ImageRecipe::default().base_tag();
    let tag = "localhost/berth-test-broken:1".to_owned();
    use berth_runtime::Runtime;
    if rt.image_exists(&tag).await.unwrap() {
        return tag;
    }
    let dockerfile = format!("FROM {from}\nENTRYPOINT [\"/bin/false\"]\n");
    build_small_image(&rt, &tag, &dockerfile).await;
    tag
}

/// The workspace image minus one agent CLI, for the "CLI missing" case.
pub async fn ensure_image_without(cli: &str) -> String {
    let base = ensure_image().await;
    let rt = DockerRuntime::connect(Some(&engine())).unwrap();
    let tag = format!(
        "localhost/berth-test-no-{cli}:{}",
        base.rsplit(':').next().unwrap_or("x")
    );
    use berth_runtime::Runtime;
    if rt.image_exists(&tag).await.unwrap() {
        return tag;
    }
    let dockerfile =
        format!("FROM {base}\nUSER root\nRUN rm -f /usr/local/bin/{cli}\nUSER agent\n");
    build_small_image(&rt, &tag, &dockerfile).await;
    tag
}

async fn build_small_image(rt: &DockerRuntime, tag: &str, dockerfile: &str) {
    let mut tar = tar::Builder::new(Vec::new());
    let mut header = tar::Header::new_gnu();
    header.set_size(dockerfile.len() as u64);
    header.set_mode(0o644);
    header.set_cksum();
    tar.append_data(&mut header, "Dockerfile", dockerfile.as_bytes())
        .unwrap();
    let body = tar.into_inner().unwrap();
    let opts = bollard::image::BuildImageOptions {
        t: tag.to_owned(),
        rm: true,
        ..Default::default()
    };
    // Podman answers a bare 400 to an empty X-Registry-Config header: send empty credentials.
    let creds = Some(std::collections::HashMap::new());
    let mut stream = rt.client().build_image(opts, creds, Some(body.into()));
    while let Some(item) = stream.next().await {
        item.expect("building a test image");
    }
}
