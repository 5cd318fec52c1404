//! HTTP and WebSocket access to the berth API, errors as one readable line, and the login file.

use std::fmt;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use berth_api::{ErrorBody, API_PREFIX};
use percent_encoding::{utf8_percent_encode, AsciiSet, NON_ALPHANUMERIC};
use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};
use tokio::net::TcpStream;
use tokio_tungstenite::tungstenite::client::IntoClientRequest;
use tokio_tungstenite::tungstenite::http::{header, HeaderValue};
use tokio_tungstenite::{Connector, MaybeTlsStream, WebSocketStream};

use crate::tls::Trust;

/// Where the CLI looks for the server when neither `--url`, `BERTH_URL` nor a login file says.
pub const DEFAULT_URL: &str = "http://127.0.0.1:8787";

/// Timeout of plain requests (not of streams: image build, exec, attach).
const REQUEST_TIMEOUT: Duration = Duration::from_secs(120);
const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);

pub(crate) type Result<T, E = CliError> = std::result::Result<T, E>;

/// Everything that can go wrong in a CLI command; shown as one line `error: …`.
#[derive(Debug, Clone, PartialEq)]
pub enum CliError {
    /// The server answered with an error body (or a non-2xx status).
    Api {
        status: u16,
        code: String,
        message: String,
    },
    /// No connection could be made to the server.
    Unreachable { url: String, cause: String },
    /// Anything else (bad arguments, local I/O, unexpected responses).
    Other(String),
}

impl CliError {
    pub(crate) fn other(msg: impl Into<String>) -> Self {
        Self::Other(msg.into())
    }

    /// An error the server reported inside a stream (an exec or attach WebSocket, task events,
    /// an image build) rather than as an HTTP status.
    pub(crate) fn in_stream(code: String, message: String) -> Self {
        Self::Api {
            status: 0,
            code,
            message,
        }
    }

    /// The line printed on stderr: `error: <message>`, always exactly one line.
    pub fn line(&self) -> String {
        one_line(&format!("error: {self}"))
    }
}

impl fmt::Display for CliError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Api { code, message, .. } if code.is_empty() => f.write_str(message),
            Self::Api { code, message, .. } => write!(f, "{message} ({code})"),
            Self::Unreachable { url, cause } => write!(
                f,
                "cannot reach berth at {url}: {cause} (is `berth server` running?)"
            ),
            Self::Other(msg) => f.write_str(msg),
        }
    }
}

impl std::error::Error for CliError {}

/// Collapses whitespace runs that contain line breaks so a message stays on one line.
pub(crate) fn one_line(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for (i, line) in s
        .lines()
        .map(str::trim)
        .filter(|l| !l.is_empty())
        .enumerate()
    {
        if i > 0 {
            out.push(' ');
        }
        out.push_str(line);
    }
    out
}

/// Turns a non-2xx response body into an error: the API's `{"error":{…}}` when it is one,
/// otherwise the status with the start of the body.
pub(crate) fn api_error(status: u16, body: &[u8]) -> CliError {
    if let Ok(eb) = serde_json::from_slice::<ErrorBody>(body) {
        return CliError::Api {
            status,
            code: eb.error.code,
            message: eb.error.message,
        };
    }
    let text = String::from_utf8_lossy(body);
    let text = one_line(&text);
    let reason = reqwest::StatusCode::from_u16(status)
        .ok()
        .and_then(|s| s.canonical_reason())
        .unwrap_or("error");
    let message = if text.is_empty() {
        format!("server answered HTTP {status} {reason}")
    } else {
        let short: String = text.chars().take(200).collect();
        format!("server answered HTTP {status} {reason}: {short}")
    };
    CliError::Api {
        status,
        code: String::new(),
        message,
    }
}

/// The innermost cause of an error chain, phrased briefly for the common I/O failures.
pub(crate) fn root_cause(e: &(dyn std::error::Error + 'static)) -> String {
    let mut cur = e;
    let mut kind = None;
    loop {
        if let Some(io) = cur.downcast_ref::<std::io::Error>() {
            kind = Some(io.kind());
        }
        match cur.source() {
            Some(next) => cur = next,
            None => break,
        }
    }
    use std::io::ErrorKind as K;
    match kind {
        Some(K::ConnectionRefused) => "connection refused".into(),
        Some(K::ConnectionReset) => "connection reset".into(),
        Some(K::TimedOut) => "timed out".into(),
        Some(K::NotFound) => "not found".into(),
        Some(K::PermissionDenied) => "permission denied".into(),
        _ => one_line(&cur.to_string()),
    }
}

/// Characters left as-is in a path segment: RFC 3986 unreserved. Everything else, including
/// `/`, is percent-encoded so a `tenant/name` reference stays one segment.
const SEGMENT: &AsciiSet = &NON_ALPHANUMERIC
    .remove(b'-')
    .remove(b'.')
    .remove(b'_')
    .remove(b'~');

/// Percent-encodes a workspace or session reference as ONE path segment.
pub fn encode_segment(s: &str) -> String {
    utf8_percent_encode(s, SEGMENT).to_string()
}

// ---------------------------------------------------------------------------------------------
// Login file

/// What `berth login` saves.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct LoginConfig {
    pub url: String,
    pub token: String,
    /// Pinned SHA-256 of the server's certificate (`berth login --fingerprint`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub fingerprint: Option<String>,
    /// Extra root certificates (`berth login --ca`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ca: Option<PathBuf>,
}

impl LoginConfig {
    /// The saved TLS trust of this login.
    pub(crate) fn trust(&self) -> Trust {
        Trust {
            fingerprint: self.fingerprint.clone(),
            ca: self.ca.clone(),
        }
    }
}

/// `$XDG_CONFIG_HOME/berth/config.json`, else `$HOME/.config/berth/config.json`.
pub fn config_path() -> Option<PathBuf> {
    config_path_from(
        std::env::var_os("XDG_CONFIG_HOME"),
        std::env::var_os("HOME"),
    )
}

pub(crate) fn config_path_from(
    xdg: Option<std::ffi::OsString>,
    home: Option<std::ffi::OsString>,
) -> Option<PathBuf> {
    let base = match xdg.map(PathBuf::from).filter(|p| p.is_absolute()) {
        Some(x) => x,
        None => PathBuf::from(home.filter(|h| !h.is_empty())?).join(".config"),
    };
    Some(base.join("berth").join("config.json"))
}

/// Reads the login file; `Ok(None)` when there is none.
pub(crate) fn load_config(path: &Path) -> Result<Option<LoginConfig>> {
    match std::fs::read(path) {
        Ok(bytes) => serde_json::from_slice(&bytes).map(Some).map_err(|e| {
            CliError::other(format!(
                "invalid login file {}: {e} (run `berth login URL --token T` again)",
                path.display()
            ))
        }),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
        Err(e) => Err(CliError::other(format!(
            "cannot read {}: {}",
            path.display(),
            root_cause(&e)
        ))),
    }
}

/// Writes the login file atomically with mode 0600 (its directory 0700 when created).
pub(crate) fn save_config(path: &Path, cfg: &LoginConfig) -> Result<()> {
    use std::io::Write;
    use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt, PermissionsExt};

    let io_err = |what: &str, p: &Path, e: std::io::Error| {
        CliError::other(format!("cannot {what} {}: {}", p.display(), root_cause(&e)))
    };
    let dir = path
        .parent()
        .ok_or_else(|| CliError::other(format!("invalid config path {}", path.display())))?;
    std::fs::DirBuilder::new()
        .recursive(true)
        .mode(0o700)
        .create(dir)
        .map_err(|e| io_err("create", dir, e))?;
    let tmp = dir.join(".config.json.tmp");
    let _ = std::fs::remove_file(&tmp);
    let mut body = serde_json::to_vec_pretty(cfg)
        .map_err(|e| CliError::other(format!("cannot encode the login file: {e}")))?;
    body.push(b'\n');
    let mut f = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(&tmp)
        .map_err(|e| io_err("write", &tmp, e))?;
    f.set_permissions(std::fs::Permissions::from_mode(0o600))
        .map_err(|e| io_err("write", &tmp, e))?;
    f.write_all(&body)
        .and_then(|()| f.sync_all())
        .map_err(|e| io_err("write", &tmp, e))?;
    drop(f);
    std::fs::rename(&tmp, path).map_err(|e| io_err("write", path, e))?;
    Ok(())
}

/// `http://host:port/` → `http://host:port`; rejects anything that is not http(s).
pub(crate) fn normalize_url(url: &str) -> Result<String> {
    let u = url.trim().trim_end_matches('/');
    let ok = ["http://", "https://"]
        .iter()
        .any(|p| u.len() > p.len() && u[..p.len()].eq_ignore_ascii_case(p));
    if !ok {
        return Err(CliError::other(format!(
            "invalid URL {url:?}: expected http://HOST:PORT or https://HOST"
        )));
    }
    let u = u.strip_suffix(API_PREFIX).unwrap_or(u);
    Ok(u.to_owned())
}

/// Where to connect and with what token, after flags, environment and the login file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Conn {
    pub url: String,
    pub token: Option<String>,
    /// How to trust the server's certificate (the login file's, for its own URL).
    pub trust: Trust,
}

/// Flag/env values win; the login file fills in what is missing. The file's token and TLS trust
/// are only used for the file's own URL, so a token never goes to a server it was not issued
/// for, and a pin never applies to another server.
pub(crate) fn resolve_conn(
    url: Option<&str>,
    token: Option<&str>,
    file: Option<&LoginConfig>,
) -> Result<Conn> {
    let token = token.map(str::trim).filter(|t| !t.is_empty());
    let file_url = file.and_then(|f| normalize_url(&f.url).ok());
    let url = match url.map(str::trim).filter(|u| !u.is_empty()) {
        Some(u) => normalize_url(u)?,
        None => file_url.clone().unwrap_or_else(|| DEFAULT_URL.to_owned()),
    };
    let same = match (file, &file_url) {
        (Some(f), Some(fu)) if *fu == url => Some(f),
        _ => None,
    };
    let token = match token {
        Some(t) => Some(t.to_owned()),
        None => same.map(|f| f.token.clone()),
    };
    let trust = same.map(LoginConfig::trust).unwrap_or_default();
    Ok(Conn { url, token, trust })
}

// ---------------------------------------------------------------------------------------------
// Client

pub(crate) type Ws = WebSocketStream<MaybeTlsStream<TcpStream>>;

pub(crate) struct Client {
    base: String,
    token: String,
    tls: Arc<rustls::ClientConfig>,
    http: reqwest::Client,
    stream: reqwest::Client,
}

impl Client {
    pub fn new(conn: &Conn) -> Result<Self> {
        let token = conn.token.clone().ok_or_else(|| {
            CliError::other(format!(
                "no token for {}: run `berth login {} --token T`, or pass --token / set BERTH_TOKEN",
                conn.url, conn.url
            ))
        })?;
        Self::with_token(&conn.url, &token, &conn.trust)
    }

    pub fn with_token(url: &str, token: &str, trust: &Trust) -> Result<Self> {
        let tls = Arc::new(crate::tls::client_config(trust)?);
        let build = |timeout: Option<Duration>| {
            let b = reqwest::Client::builder()
                .use_preconfigured_tls((*tls).clone())
                .connect_timeout(CONNECT_TIMEOUT)
                .user_agent(concat!("berth-cli/", env!("CARGO_PKG_VERSION")));
            let b = match timeout {
                Some(t) => b.timeout(t),
                None => b,
            };
            b.build()
                .map_err(|e| CliError::other(format!("cannot set up HTTP: {}", root_cause(&e))))
        };
        Ok(Self {
            base: normalize_url(url)?,
            token: token.to_owned(),
            tls: tls.clone(),
            http: build(Some(REQUEST_TIMEOUT))?,
            stream: build(None)?,
        })
    }

    pub fn base(&self) -> &str {
        &self.base
    }

    fn url(&self, path: &str) -> String {
        format!("{}{}{}", self.base, API_PREFIX, path)
    }

    fn transport_error(&self, e: &reqwest::Error) -> CliError {
        if let Some(tls) = crate::tls::describe_failure(e) {
            return CliError::other(format!("TLS with {} failed: {tls}", self.base));
        }
        let cause = root_cause(e);
        if e.is_connect() {
            CliError::Unreachable {
                url: self.base.clone(),
                cause,
            }
        } else if e.is_timeout() {
            CliError::other(format!("request to {} timed out", self.base))
        } else {
            CliError::other(format!("request to {} failed: {cause}", self.base))
        }
    }

    async fn send(&self, rb: reqwest::RequestBuilder) -> Result<reqwest::Response> {
        let resp = rb
            .bearer_auth(&self.token)
            .send()
            .await
            .map_err(|e| self.transport_error(&e))?;
        let status = resp.status();
        if status.is_success() {
            return Ok(resp);
        }
        let body = resp.bytes().await.unwrap_or_default();
        Err(api_error(status.as_u16(), &body))
    }

    async fn read_json(&self, resp: reqwest::Response) -> Result<serde_json::Value> {
        let body = resp.bytes().await.map_err(|e| self.transport_error(&e))?;
        serde_json::from_slice(&body)
            .map_err(|e| CliError::other(format!("unexpected response from the server: {e}")))
    }

    pub async fn get_value(&self, path: &str) -> Result<serde_json::Value> {
        let resp = self.send(self.http.get(self.url(path))).await?;
        self.read_json(resp).await
    }

    pub async fn get<T: DeserializeOwned>(&self, path: &str) -> Result<T> {
        decode(self.get_value(path).await?)
    }

    pub async fn get_query_value<Q: Serialize + ?Sized>(
        &self,
        path: &str,
        query: &Q,
    ) -> Result<serde_json::Value> {
        let resp = self
            .send(self.http.get(self.url(path)).query(query))
            .await?;
        self.read_json(resp).await
    }

    pub async fn get_bytes(&self, path: &str) -> Result<Vec<u8>> {
        let resp = self.send(self.http.get(self.url(path))).await?;
        let body = resp.bytes().await.map_err(|e| self.transport_error(&e))?;
        Ok(body.to_vec())
    }

    pub async fn post_value<B: Serialize + ?Sized>(
        &self,
        path: &str,
        body: &B,
    ) -> Result<serde_json::Value> {
        let resp = self.send(self.http.post(self.url(path)).json(body)).await?;
        self.read_json(resp).await
    }

    pub async fn delete_value(&self, path: &str) -> Result<serde_json::Value> {
        let resp = self.send(self.http.delete(self.url(path))).await?;
        self.read_json(resp).await
    }

    pub async fn put_value<B: Serialize + ?Sized>(
        &self,
        path: &str,
        body: &B,
    ) -> Result<serde_json::Value> {
        let resp = self.send(self.http.put(self.url(path)).json(body)).await?;
        self.read_json(resp).await
    }

    pub async fn patch_value<B: Serialize + ?Sized>(
        &self,
        path: &str,
        body: &B,
    ) -> Result<serde_json::Value> {
        let resp = self
            .send(self.http.patch(self.url(path)).json(body))
            .await?;
        self.read_json(resp).await
    }

    pub async fn post_empty_value(&self, path: &str) -> Result<serde_json::Value> {
        let resp = self.send(self.http.post(self.url(path))).await?;
        self.read_json(resp).await
    }

    /// Any method with an optional JSON body; the response's JSON, or `Null` when it has no
    /// body (a 204).
    pub async fn request_value(
        &self,
        method: reqwest::Method,
        path: &str,
        body: Option<&serde_json::Value>,
    ) -> Result<serde_json::Value> {
        let mut rb = self.http.request(method, self.url(path));
        if let Some(b) = body {
            rb = rb.json(b);
        }
        let resp = self.send(rb).await?;
        let bytes = resp.bytes().await.map_err(|e| self.transport_error(&e))?;
        if bytes.iter().all(u8::is_ascii_whitespace) {
            return Ok(serde_json::Value::Null);
        }
        serde_json::from_slice(&bytes)
            .map_err(|e| CliError::other(format!("unexpected response from the server: {e}")))
    }

    /// A POST whose response is streamed (no overall timeout).
    pub async fn post_stream<B: Serialize + ?Sized>(
        &self,
        path: &str,
        body: &B,
    ) -> Result<reqwest::Response> {
        self.send(self.stream.post(self.url(path)).json(body)).await
    }

    /// A GET whose (binary) response is streamed (no overall timeout).
    pub async fn get_download<Q: Serialize + ?Sized>(
        &self,
        path: &str,
        query: &Q,
    ) -> Result<reqwest::Response> {
        self.send(self.stream.get(self.url(path)).query(query))
            .await
    }

    /// A POST of a streamed body (no overall timeout), answered with JSON.
    pub async fn post_upload<Q: Serialize + ?Sized>(
        &self,
        path: &str,
        query: &Q,
        content_type: &str,
        body: reqwest::Body,
    ) -> Result<serde_json::Value> {
        let rb = self
            .stream
            .post(self.url(path))
            .query(query)
            .header(reqwest::header::CONTENT_TYPE, content_type)
            .body(body);
        let resp = self.send(rb).await?;
        self.read_json(resp).await
    }

    /// A GET of a Server-Sent Events stream (no overall timeout).
    pub async fn get_event_stream(&self, path_and_query: &str) -> Result<reqwest::Response> {
        self.send(
            self.stream
                .get(self.url(path_and_query))
                .header(reqwest::header::ACCEPT, "text/event-stream"),
        )
        .await
    }

    pub async fn delete<Q: Serialize + ?Sized>(&self, path: &str, query: &Q) -> Result<()> {
        self.send(self.http.delete(self.url(path)).query(query))
            .await
            .map(drop)
    }

    pub fn stream_error(&self, e: &reqwest::Error) -> CliError {
        self.transport_error(e)
    }

    /// `ws://` or `wss://` URL of an API path (which may carry a query string).
    pub fn ws_url(&self, path_and_query: &str) -> String {
        let rest = self.url(path_and_query);
        if let Some(r) = rest.strip_prefix("https://") {
            format!("wss://{r}")
        } else if let Some(r) = rest.strip_prefix("http://") {
            format!("ws://{r}")
        } else {
            rest
        }
    }

    /// Opens a WebSocket to an API path with the bearer token.
    pub async fn ws_connect(&self, path_and_query: &str) -> Result<Ws> {
        let url = self.ws_url(path_and_query);
        let mut req = url
            .as_str()
            .into_client_request()
            .map_err(|e| CliError::other(format!("invalid WebSocket URL {url}: {e}")))?;
        let auth = HeaderValue::from_str(&format!("Bearer {}", self.token)).map_err(|_| {
            CliError::other("the token contains characters not allowed in a header")
        })?;
        req.headers_mut().insert(header::AUTHORIZATION, auth);
        let connector = if url.starts_with("wss://") {
            Some(Connector::Rustls(self.tls.clone()))
        } else {
            None
        };
        let connect = tokio_tungstenite::connect_async_tls_with_config(req, None, true, connector);
        let res = tokio::time::timeout(REQUEST_TIMEOUT, connect)
            .await
            .map_err(|_| CliError::other(format!("connecting to {url} timed out")))?;
        use tokio_tungstenite::tungstenite::Error as WsError;
        if let Some(tls) = res
            .as_ref()
            .err()
            .and_then(|e| crate::tls::describe_failure(e))
        {
            return Err(CliError::other(format!(
                "TLS with {} failed: {tls}",
                self.base
            )));
        }
        match res {
            Ok((ws, _)) => Ok(ws),
            Err(WsError::Http(resp)) => {
                let body = resp.body().clone().unwrap_or_default();
                Err(api_error(resp.status().as_u16(), &body))
            }
            Err(WsError::Io(e)) => Err(CliError::Unreachable {
                url: self.base.clone(),
                cause: root_cause(&e),
            }),
            Err(e) => Err(CliError::other(format!(
                "WebSocket to {url} failed: {}",
                root_cause(&e)
            ))),
        }
    }
}

pub(crate) fn decode<T: DeserializeOwned>(v: serde_json::Value) -> Result<T> {
    serde_json::from_value(v)
        .map_err(|e| CliError::other(format!("unexpected response from the server: {e}")))
}

/// API path of a workspace: `/workspaces/{ws}` with `ws` as one encoded segment.
pub(crate) fn ws_path(ws: &str) -> String {
    format!("/workspaces/{}", encode_segment(ws))
}

/// API path of a task: `/tasks/{task}`.
pub(crate) fn task_path(task: &str) -> String {
    format!("/tasks/{}", encode_segment(task))
}

/// API path of a session in a workspace.
pub(crate) fn session_path(ws: &str, session: &str) -> String {
    format!("{}/sessions/{}", ws_path(ws), encode_segment(session))
}
