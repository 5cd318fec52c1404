//! berth's LLM gateway: a streaming pass-through from agents to the real LLM providers.
//!
//! Each running workspace gets a Unix socket in its channel directory (`/run/berth/gateway.sock`
//! inside); the workspace daemon relays a loopback port to it, so agents reach the gateway even
//! in a workspace with no network at all. Agents authenticate with their task's virtual key; the
//! gateway checks that the key belongs to a live task *of that workspace*, swaps in the real
//! provider key, and streams the upstream response back chunk by chunk. Real keys and upstream
//! addresses never enter a workspace.
//!
//! Paths: `/{provider}/{rest}` → `{provider base url}/{rest}`, provider ∈ anthropic, openai,
//! gemini.

use std::collections::HashMap;
use std::path::Path;
use std::sync::{Arc, Mutex};

use axum::body::Body;
use axum::extract::{Path as UrlPath, Request, State};
use axum::http::{HeaderMap, HeaderName, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use berth_domain::{Provider, Secret, WorkspaceId};

use berth_store::LlmCall;

use crate::auth::hash_token;
use crate::state::AppState;
use crate::usage_tap::{request_model, UsageTap};

/// One provider's real upstream.
#[derive(Debug, Clone)]
pub struct Upstream {
    pub base_url: String,
    pub api_key: Option<Secret>,
}

/// The configured upstreams (`BERTH_{ANTHROPIC,OPENAI,GEMINI}_{BASE_URL,API_KEY}`).
#[derive(Debug, Clone)]
pub struct Upstreams {
    pub anthropic: Upstream,
    pub openai: Upstream,
    pub gemini: Upstream,
}

impl Upstreams {
    pub fn from_env() -> Self {
        let get = |name: &str, default: &str| Upstream {
            base_url: std::env::var(format!("BERTH_{name}_BASE_URL"))
                .ok()
                .filter(|v| !v.is_empty())
                .unwrap_or_else(|| default.to_owned()),
            api_key: std::env::var(format!("BERTH_{name}_API_KEY"))
                .ok()
                .filter(|v| !v.is_empty())
                .map(Secret::new),
        };
        Self {
            anthropic: get("ANTHROPIC", "https://api.anthropic.com"),
            openai: get("OPENAI", "https://api.openai.com"),
            gemini: get("GEMINI", "https://generativelanguage.googleapis.com"),
        }
    }

    pub fn get(&self, p: Provider) -> &Upstream {
        match p {
            Provider::Anthropic => &self.anthropic,
            Provider::Openai => &self.openai,
            Provider::Gemini => &self.gemini,
        }
    }
}

/// The per-workspace gateway listeners.
#[derive(Default)]
pub struct Listeners {
    running: Mutex<HashMap<WorkspaceId, tokio::task::JoinHandle<()>>>,
}

impl Listeners {
    /// Makes sure the workspace's gateway socket is served (idempotent; rebinds when the socket
    /// file went away, e.g. after the channel directory was recreated).
    pub fn ensure(&self, state: &Arc<AppState>, ws: &WorkspaceId) {
        let path = state.channel_dir(ws).join("gateway.sock");
        let mut running = self.running.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(h) = running.get(ws) {
            if !h.is_finished() && path.exists() {
                return;
            }
            h.abort();
        }
        match bind(&path) {
            Ok(listener) => {
                let app = axum::Router::new()
                    .route("/{provider}/{*rest}", axum::routing::any(forward))
                    .with_state((state.clone(), ws.clone()));
                let ws_name = ws.clone();
                // Capped and deadlined per workspace (see `conn_limit`).
                let listener = crate::conn_limit::LimitedListener {
                    listener,
                    limiter: crate::conn_limit::ConnLimiter::new(
                        "gateway",
                        crate::conn_limit::ConnLimits::GATEWAY,
                    ),
                };
                let handle = tokio::spawn(async move {
                    if let Err(e) = axum::serve(listener, app).await {
                        tracing::warn!(workspace = %ws_name, error = %e, "gateway listener ended");
                    }
                });
                running.insert(ws.clone(), handle);
            }
            Err(e) => {
                tracing::warn!(workspace = %ws, path = %path.display(), error = %e, "cannot serve the gateway socket")
            }
        }
    }

    pub fn stop(&self, ws: &WorkspaceId) {
        let mut running = self.running.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(h) = running.remove(ws) {
            h.abort();
        }
    }
}

fn bind(path: &Path) -> std::io::Result<tokio::net::UnixListener> {
    let _ = std::fs::remove_file(path);
    let l = tokio::net::UnixListener::bind(path)?;
    // The workspace user (uid 1000) connects; the directory itself is private to the workspace.
    crate::binary::set_mode(path, 0o666)?;
    Ok(l)
}

/// The virtual key, from wherever the agent's SDK puts it.
fn virtual_key(headers: &HeaderMap, query: Option<&str>) -> Option<String> {
    let h = |n: &str| {
        headers
            .get(n)
            .and_then(|v| v.to_str().ok())
            .map(str::to_owned)
    };
    if let Some(k) = h("x-api-key").or_else(|| h("x-goog-api-key")) {
        return Some(k);
    }
    if let Some(b) = h("authorization") {
        if let Some(k) = b
            .strip_prefix("Bearer ")
            .or_else(|| b.strip_prefix("bearer "))
        {
            return Some(k.trim().to_owned());
        }
    }
    query?
        .split('&')
        .find_map(|kv| kv.strip_prefix("key=").map(str::to_owned))
}

/// An error in the provider's own shape, so the agent CLI shows a sensible message.
fn provider_error(p: Option<Provider>, status: StatusCode, message: &str) -> Response {
    let body = match p {
        Some(Provider::Anthropic) => serde_json::json!({
            "type": "error",
            "error": {"type": if status == StatusCode::UNAUTHORIZED { "authentication_error" } else { "api_error" }, "message": message}
        }),
        Some(Provider::Gemini) => serde_json::json!({
            "error": {"code": status.as_u16(), "message": message, "status": if status == StatusCode::UNAUTHORIZED { "UNAUTHENTICATED" } else { "UNAVAILABLE" }}
        }),
        _ => serde_json::json!({
            "error": {"message": message, "type": "berth_gateway_error", "code": status.as_u16()}
        }),
    };
    (status, axum::Json(body)).into_response()
}

const HOP_BY_HOP: [&str; 10] = [
    "host",
    "connection",
    "keep-alive",
    "proxy-connection",
    "transfer-encoding",
    "upgrade",
    "te",
    "trailer",
    "content-length",
    "accept-encoding",
];
const AUTH_HEADERS: [&str; 3] = ["authorization", "x-api-key", "x-goog-api-key"];

async fn forward(
    State((state, ws)): State<(Arc<AppState>, WorkspaceId)>,
    UrlPath((provider, rest)): UrlPath<(String, String)>,
    req: Request,
) -> Response {
    let Some(p) = Provider::parse(&provider) else {
        return provider_error(
            None,
            StatusCode::NOT_FOUND,
            &format!("berth gateway: unknown provider {provider:?}"),
        );
    };
    let query = req.uri().query().map(str::to_owned);
    let Some(key) = virtual_key(req.headers(), query.as_deref()) else {
        return provider_error(
            Some(p),
            StatusCode::UNAUTHORIZED,
            "berth gateway: no API key in the request",
        );
    };
    let owner = match lookup_key(&state, &hash_token(&key)).await {
        Ok(Some(o)) if o.0.workspace_id == ws && !o.0.state.is_final() => o,
        Ok(_) => {
            return provider_error(
                Some(p),
                StatusCode::UNAUTHORIZED,
                "berth gateway: unknown, revoked or foreign virtual key",
            )
        }
        Err(e) => {
            tracing::error!(error = %e, "gateway key lookup");
            return provider_error(
                Some(p),
                StatusCode::INTERNAL_SERVER_ERROR,
                "berth gateway: internal error",
            );
        }
    };
    let (task, ws_row) = (&owner.0, &owner.1);
    if let Some(over) = over_budget(&state, ws_row.tenant.as_str(), ws.as_str()).await {
        tracing::warn!(task = %task.id, "{over}");
        // End the task `failed{budget_exceeded}`; the agent gets the reason in its provider's shape.
        let daemon = state.daemon(&ws);
        let (id, reason) = (task.id.clone(), format!("budget_exceeded: {over}"));
        tokio::spawn(async move {
            if let Err(e) = daemon.task_fail(&id, &reason).await {
                tracing::warn!(task = %id, error = %e, "could not stop the task over budget");
            }
        });
        return provider_error(
            Some(p),
            StatusCode::FORBIDDEN,
            &format!("berth gateway: {over}"),
        );
    }
    let upstream = state.upstreams.get(p);
    let real_key = match upstream.api_key.clone() {
        // `vault:TENANT/NAME`: the provider key lives in berth's secrets vault.
        Some(k) if k.expose().starts_with("vault:") => {
            let reference = k.expose()["vault:".len()..].to_owned();
            match vault_key(&state, &reference).await {
                Ok(v) => Some(v),
                Err(e) => {
                    tracing::error!(provider = p.as_str(), error = %e, "provider key from the vault");
                    return provider_error(
                        Some(p),
                        StatusCode::SERVICE_UNAVAILABLE,
                        &format!(
                            "berth gateway: the {} key in the vault is unavailable",
                            p.as_str()
                        ),
                    );
                }
            }
        }
        other => other,
    };
    let Some(real_key) = real_key else {
        let name = p.as_str().to_ascii_uppercase();
        return provider_error(
            Some(p),
            StatusCode::SERVICE_UNAVAILABLE,
            &format!(
                "berth gateway: no upstream key for {} (set BERTH_{name}_API_KEY on the server)",
                p.as_str()
            ),
        );
    };
    let url = upstream_url(&upstream.base_url, &rest, query.as_deref());
    let method = req.method().clone();
    let mut headers = HeaderMap::new();
    for (name, value) in req.headers() {
        let n = name.as_str();
        if HOP_BY_HOP.contains(&n) || AUTH_HEADERS.contains(&n) {
            continue;
        }
        headers.append(name.clone(), value.clone());
    }
    let (auth_name, auth_value) = match p {
        Provider::Anthropic => ("x-api-key", real_key.expose().to_owned()),
        Provider::Openai => ("authorization", format!("Bearer {}", real_key.expose())),
        Provider::Gemini => ("x-goog-api-key", real_key.expose().to_owned()),
    };
    if let Ok(v) = HeaderValue::from_str(&auth_value) {
        headers.insert(HeaderName::from_static(auth_name), v);
    }
    let body = match axum::body::to_bytes(req.into_body(), 64 << 20).await {
        Ok(b) => b,
        Err(e) => {
            return provider_error(
                Some(p),
                StatusCode::BAD_REQUEST,
                &format!("berth gateway: request body: {e}"),
            )
        }
    };
    tracing::debug!(task = %task.id, provider = p.as_str(), path = %rest, "gateway call");
    // Kept only when the operator turned recording on (BERTH_GATEWAY_RECORD_DAYS).
    let request_copy = if state.recording_days.is_some() {
        body.slice(..body.len().min(RECORD_MAX))
    } else {
        bytes::Bytes::new()
    };
    let started = std::time::Instant::now();
    let mut call = LlmCall {
        workspace_id: ws.to_string(),
        workspace: ws_row.qualified_name(),
        tenant: ws_row.tenant.to_string(),
        task_id: task.id.clone(),
        provider: p.as_str().to_owned(),
        model: request_model(p, &rest, &body),
        path: rest.clone(),
        ..Default::default()
    };
    let uri: hyper::Uri = match url.parse() {
        Ok(u) => u,
        Err(e) => {
            tracing::error!(provider = p.as_str(), url = %url, error = %e, "gateway upstream URL");
            return provider_error(
                Some(p),
                StatusCode::BAD_GATEWAY,
                &format!("berth gateway: the {} upstream URL is invalid", p.as_str()),
            );
        }
    };
    let mut upstream_req = hyper::Request::new(http_body_util::Full::new(body));
    *upstream_req.method_mut() = method;
    *upstream_req.uri_mut() = uri;
    *upstream_req.headers_mut() = headers;
    let resp = match state.http.request(upstream_req).await {
        Ok(r) => r,
        Err(e) => {
            tracing::warn!(task = %task.id, error = %e, "gateway upstream unreachable");
            call.status = 502;
            call.latency_ms = started.elapsed().as_millis() as u64;
            call.error = Some("upstream unreachable".into());
            record(&state, call);
            return provider_error(
                Some(p),
                StatusCode::BAD_GATEWAY,
                &format!("berth gateway: the {} upstream is unreachable", p.as_str()),
            );
        }
    };
    let status = resp.status();
    call.status = status.as_u16();
    call.ttfb_ms = Some(started.elapsed().as_millis() as u64);
    let sse = resp
        .headers()
        .get(axum::http::header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.starts_with("text/event-stream"));
    let mut out = Response::builder().status(status.as_u16());
    for (name, value) in resp.headers() {
        if HOP_BY_HOP.contains(&name.as_str()) {
            continue;
        }
        out = out.header(name, value);
    }
    // Chunk by chunk: no buffering of streamed (SSE) responses. Usage is counted on a copy as
    // the chunks pass, and the call is recorded when the body ends (or the agent hangs up).
    let metered = Metered {
        inner: resp.into_body(),
        tap: UsageTap::new(p, sse),
        call: Some(call),
        started,
        state: state.clone(),
        recording: state.recording_days.map(|_| {
            (
                String::from_utf8_lossy(&request_copy).into_owned(),
                Vec::new(),
            )
        }),
    };
    out.body(Body::new(metered)).unwrap_or_else(|_| {
        provider_error(
            Some(p),
            StatusCode::BAD_GATEWAY,
            "berth gateway: bad upstream response",
        )
    })
}

/// The gateway's HTTP client to the providers: HTTP/1.1 with keep-alive, `TCP_NODELAY`, TLS by
/// rustls (ring) trusting the webpki roots and the host's bundle.
pub type UpstreamClient = hyper_util::client::legacy::Client<
    hyper_rustls::HttpsConnector<hyper_util::client::legacy::connect::HttpConnector>,
    http_body_util::Full<bytes::Bytes>,
>;

pub fn upstream_client() -> std::io::Result<UpstreamClient> {
    let mut roots = berth_egress::UpstreamTls::webpki();
    if let Err(e) = roots.add_system_bundle() {
        tracing::warn!(error = %e, "cannot read the host's CA bundle; the gateway trusts the built-in roots only");
    }
    let mut tls = (*roots.client_config()?).clone();
    // The connector sets ALPN itself (http/1.1).
    tls.alpn_protocols.clear();
    let mut http = hyper_util::client::legacy::connect::HttpConnector::new();
    http.set_connect_timeout(Some(std::time::Duration::from_secs(10)));
    http.set_nodelay(true);
    http.enforce_http(false);
    let https = hyper_rustls::HttpsConnectorBuilder::new()
        .with_tls_config(tls)
        .https_or_http()
        .enable_http1()
        .wrap_connector(http);
    Ok(
        hyper_util::client::legacy::Client::builder(hyper_util::rt::TokioExecutor::new())
            .pool_idle_timeout(std::time::Duration::from_secs(90))
            .build(https),
    )
}

/// How long a virtual-key lookup is reused: revocation (cancel, failure, workspace stop) takes
/// effect within this time, and a busy agent does not cost two queries per call.
const KEY_CACHE_TTL: std::time::Duration = std::time::Duration::from_secs(1);

/// A live key's task and workspace, shared by the calls that reuse the lookup.
type KeyOwner = Arc<(berth_store::Task, berth_store::Workspace)>;

pub type KeyCache = std::sync::Mutex<HashMap<String, (std::time::Instant, KeyOwner)>>;

/// The task a virtual key belongs to, and its workspace.
async fn lookup_key(state: &AppState, hash: &str) -> anyhow::Result<Option<KeyOwner>> {
    {
        let cache = state.key_cache.lock().unwrap_or_else(|e| e.into_inner());
        if let Some((at, owner)) = cache.get(hash) {
            if at.elapsed() < KEY_CACHE_TTL {
                return Ok(Some(owner.clone()));
            }
        }
    }
    let Some(task) = state.store.find_task_by_key_hash(hash).await? else {
        return Ok(None);
    };
    let Some(w) = state.store.find_workspace_by_id(&task.workspace_id).await? else {
        return Ok(None);
    };
    let owner = Arc::new((task, w));
    let mut cache = state.key_cache.lock().unwrap_or_else(|e| e.into_inner());
    if cache.len() > 10_000 {
        cache.retain(|_, (at, _)| at.elapsed() < KEY_CACHE_TTL);
    }
    cache.insert(hash.to_owned(), (std::time::Instant::now(), owner.clone()));
    Ok(Some(owner))
}

async fn vault_key(state: &AppState, reference: &str) -> anyhow::Result<Secret> {
    let (tenant, name) = reference
        .split_once('/')
        .ok_or_else(|| anyhow::anyhow!("expected vault:TENANT/NAME, got vault:{reference}"))?;
    let vault = state
        .vault
        .as_deref()
        .ok_or_else(|| anyhow::anyhow!("no vault"))?;
    crate::routes::secrets::reveal(state, vault, tenant, name).await
}

/// Whether a budget of the workspace or its tenant is used up; the message says which.
async fn over_budget(state: &AppState, tenant: &str, ws: &str) -> Option<String> {
    let budgets: Vec<berth_store::Budget> = match all_budgets(state).await {
        Ok(all) => all
            .into_iter()
            .filter(|b| b.applies_to(tenant, ws))
            .collect(),
        Err(e) => {
            tracing::error!(error = %e, "reading budgets");
            return None;
        }
    };
    for b in budgets {
        let since = period_start(&b.period);
        let spent = match state.store.spent(&b, since.as_deref()).await {
            Ok(s) => s,
            Err(e) => {
                tracing::error!(error = %e, "reading spend");
                continue;
            }
        };
        let who = if b.scope == "tenant" {
            format!("tenant {}", b.target)
        } else {
            "this workspace".to_owned()
        };
        let per = match b.period.as_str() {
            "day" => " today",
            "month" => " this month",
            _ => "",
        };
        if let Some(max) = b.max_tokens {
            if spent.tokens >= max {
                return Some(format!(
                    "token budget exceeded for {who}: {} of {max} tokens used{per}",
                    spent.tokens
                ));
            }
        }
        if let Some(max) = b.max_cost_usd {
            if spent.cost_usd >= max {
                return Some(format!(
                    "cost budget exceeded for {who}: ${:.4} of ${max:.2} used{per}",
                    spent.cost_usd
                ));
            }
        }
    }
    None
}

/// All budgets, re-read at most once a second (a budget set through the API applies within a
/// second; spending is always read fresh).
async fn all_budgets(state: &AppState) -> anyhow::Result<Vec<berth_store::Budget>> {
    {
        let cache = state.budget_cache.lock().unwrap_or_else(|e| e.into_inner());
        if let Some((at, list)) = cache.as_ref() {
            if at.elapsed() < KEY_CACHE_TTL {
                return Ok(list.clone());
            }
        }
    }
    let list = state.store.budgets().await?;
    *state.budget_cache.lock().unwrap_or_else(|e| e.into_inner()) =
        Some((std::time::Instant::now(), list.clone()));
    Ok(list)
}

/// Start of the current budget period (UTC), RFC 3339; None for `total`.
pub fn period_start(period: &str) -> Option<String> {
    let now = berth_store::now();
    match period {
        "day" => Some(format!("{}T00:00:00Z", &now[..10])),
        "month" => Some(format!("{}-01T00:00:00Z", &now[..7])),
        _ => None,
    }
}

/// Largest request/response kept by prompt recording.
const RECORD_MAX: usize = 1 << 20;

fn record(state: &Arc<AppState>, call: LlmCall) {
    record_with(state, call, None);
}

/// A finished call, with its recorded request and response when recording is on.
pub type Recorded = (LlmCall, Option<(String, String)>);

/// Hands a finished call to the recorder, a single writer that stores whatever has queued up in
/// one transaction, so busy gateways do not pay one SQLite commit per call.
fn record_with(state: &Arc<AppState>, call: LlmCall, exchange: Option<(String, String)>) {
    let tx = state.recorder.get_or_init(|| {
        let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel::<Recorded>();
        let store = state.store.clone();
        tokio::spawn(async move {
            while let Some(first) = rx.recv().await {
                let mut batch = vec![first];
                while batch.len() < 512 {
                    match rx.try_recv() {
                        Ok(more) => batch.push(more),
                        Err(_) => break,
                    }
                }
                if let Err(e) = store.record_llm_calls(&batch).await {
                    tracing::error!(error = %e, calls = batch.len(), "cannot record LLM calls");
                }
            }
        });
        tx
    });
    let _ = tx.send((call, exchange));
}

/// The upstream body, passed through frame by frame while its usage is counted.
struct Metered {
    inner: hyper::body::Incoming,
    tap: UsageTap,
    call: Option<LlmCall>,
    started: std::time::Instant,
    state: Arc<AppState>,
    /// With prompt recording on: the request, and the response as it passed (bounded).
    recording: Option<(String, Vec<u8>)>,
}

impl Metered {
    fn finish(&mut self, error: Option<String>) {
        let Some(mut call) = self.call.take() else {
            return;
        };
        self.tap.finish();
        let t = self.tap.tokens;
        call.input_tokens = t.input;
        call.output_tokens = t.output;
        call.cache_read_tokens = t.cache_read;
        call.cache_write_tokens = t.cache_write;
        if call.model.is_none() {
            call.model = self.tap.model.clone();
        }
        call.cost_usd = self.state.prices.cost(call.model.as_deref(), t);
        call.latency_ms = self.started.elapsed().as_millis() as u64;
        call.error = error;
        let exchange = self
            .recording
            .take()
            .map(|(req, resp)| (req, String::from_utf8_lossy(&resp).into_owned()));
        record_with(&self.state, call, exchange);
    }
}

impl http_body::Body for Metered {
    type Data = bytes::Bytes;
    type Error = hyper::Error;

    fn poll_frame(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Option<Result<http_body::Frame<bytes::Bytes>, hyper::Error>>> {
        use std::task::Poll;
        match std::pin::Pin::new(&mut self.inner).poll_frame(cx) {
            Poll::Ready(Some(Ok(frame))) => {
                if let Some(chunk) = frame.data_ref() {
                    let chunk = chunk.clone();
                    self.tap.feed(&chunk);
                    if let Some((_, resp)) = self.recording.as_mut() {
                        let room = RECORD_MAX.saturating_sub(resp.len());
                        resp.extend_from_slice(&chunk[..chunk.len().min(room)]);
                    }
                }
                Poll::Ready(Some(Ok(frame)))
            }
            Poll::Ready(Some(Err(e))) => {
                self.finish(Some(format!("upstream stream broke: {e}")));
                Poll::Ready(Some(Err(e)))
            }
            Poll::Ready(None) => {
                self.finish(None);
                Poll::Ready(None)
            }
            Poll::Pending => Poll::Pending,
        }
    }
}

impl Drop for Metered {
    fn drop(&mut self) {
        // The agent hung up before the end (e.g. a cancelled task): record what was seen.
        if self.call.is_some() {
            self.finish(Some("client disconnected before the end".into()));
        }
    }
}

/// `base` + `/` + `rest` (+ query without the virtual key), tolerating a base that already ends
/// in the API version the agent also sends (`https://api.openai.com/v1` + `v1/responses`).
pub fn upstream_url(base: &str, rest: &str, query: Option<&str>) -> String {
    let base = base.trim_end_matches('/');
    let mut rest = rest.trim_start_matches('/');
    for version in ["v1/", "v1beta/"] {
        let v = version.trim_end_matches('/');
        if base.ends_with(&format!("/{v}")) && rest.starts_with(version) {
            rest = &rest[version.len()..];
        }
    }
    let mut url = format!("{base}/{rest}");
    if let Some(q) = query {
        let kept: Vec<&str> = q
            .split('&')
            .filter(|kv| !kv.starts_with("key=") && !kv.is_empty())
            .collect();
        if !kept.is_empty() {
            url.push('?');
            url.push_str(&kept.join("&"));
        }
    }
    url
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn urls() {
        assert_eq!(
            upstream_url(
                "https://api.anthropic.com",
                "v1/messages",
                Some("beta=true")
            ),
            "https://api.anthropic.com/v1/messages?beta=true"
        );
        assert_eq!(
            upstream_url("https://api.openai.com/v1/", "v1/responses", None),
            "https://api.openai.com/v1/responses"
        );
        assert_eq!(
            upstream_url(
                "http://127.0.0.1:9",
                "v1beta/models/m:streamGenerateContent",
                Some("alt=sse&key=bvk_x")
            ),
            "http://127.0.0.1:9/v1beta/models/m:streamGenerateContent?alt=sse"
        );
    }

    #[test]
    fn keys_from_any_sdk() {
        let mut h = HeaderMap::new();
        h.insert("x-api-key", HeaderValue::from_static("a"));
        assert_eq!(virtual_key(&h, None).as_deref(), Some("a"));
        let mut h = HeaderMap::new();
        h.insert("authorization", HeaderValue::from_static("Bearer b"));
        assert_eq!(virtual_key(&h, None).as_deref(), Some("b"));
        let mut h = HeaderMap::new();
        h.insert("x-goog-api-key", HeaderValue::from_static("c"));
        assert_eq!(virtual_key(&h, None).as_deref(), Some("c"));
        assert_eq!(
            virtual_key(&HeaderMap::new(), Some("alt=sse&key=d")).as_deref(),
            Some("d")
        );
        assert_eq!(virtual_key(&HeaderMap::new(), Some("alt=sse")), None);
    }
}
