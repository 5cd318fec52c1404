//! berth's LLM gateway: a streaming pass-through from agents to the real LLM providers.
//!
//! Each running workspace gets a Unix socket in its channel directory (`/run/berth/gateway.sock`
//! inside); the workspace daemon relays a loopback port to it, so agents reach the gateway even
//! in a workspace with no network at all. Agents authenticate with their task's virtual key; the
//! gateway checks that the key is live (a turn the server started is in flight), belongs to a
//! task *of that workspace* and that task's provider, swaps in the real provider key, and
//! streams the upstream response back chunk by chunk. Real keys and upstream addresses never
//! enter a workspace.
//!
//! Paths: `/{provider}/{rest}` → `{provider base url}/{rest}`, provider ∈ anthropic, openai,
//! gemini, for the endpoints, headers and bodies `policy` allows only. Generating calls
//! reserve against budgets first (`budget`) and give the reservation back once their usage,
//! priced by the model the upstream reports, is stored.

mod budget;
mod policy;

use std::collections::HashMap;
use std::path::Path;
use std::sync::{Arc, Mutex};

use axum::body::Body;
use axum::extract::{Path as UrlPath, Request, State};
use axum::http::{HeaderMap, HeaderName, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use berth_domain::{ErrorCode, Provider, Secret, WorkspaceId};

use berth_store::LlmCall;

pub use budget::Reservations;
use budget::{Amount, Refused, Reservation};
use policy::Endpoint;

use crate::auth::hash_token;
use crate::state::AppState;
use crate::usage_tap::{request_model, Tokens, UsageTap};

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
                    .fallback(no_route)
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

/// Binds the gateway socket in the server-owned channel directory (read-only inside the
/// workspace, so the socket cannot be swapped); the workspace user (uid 1000) connects.
fn bind(path: &Path) -> std::io::Result<tokio::net::UnixListener> {
    let (dir, name) = crate::egress::split_socket_path(path)?;
    let l = berth_daemon::chanfs::Dir::open_private(dir)?.bind_socket(name, 0o666)?;
    tokio::net::UnixListener::from_std(l)
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

/// An error in the provider's own shape, so the agent CLI shows a sensible message, with
/// berth's stable `code` beside it.
fn provider_error(
    p: Option<Provider>,
    status: StatusCode,
    code: ErrorCode,
    message: &str,
) -> Response {
    let mut body = match p {
        Some(Provider::Anthropic) => serde_json::json!({
            "type": "error",
            "error": {"type": anthropic_type(status), "message": message}
        }),
        Some(Provider::Gemini) => serde_json::json!({
            "error": {"code": status.as_u16(), "message": message, "status": gemini_status(status)}
        }),
        _ => serde_json::json!({
            "error": {"message": message, "type": "berth_gateway_error", "code": code.as_str()}
        }),
    };
    body["code"] = serde_json::Value::from(code.as_str());
    (status, axum::Json(body)).into_response()
}

fn anthropic_type(status: StatusCode) -> &'static str {
    match status.as_u16() {
        400 => "invalid_request_error",
        401 => "authentication_error",
        403 => "permission_error",
        404 => "not_found_error",
        429 => "rate_limit_error",
        _ => "api_error",
    }
}

fn gemini_status(status: StatusCode) -> &'static str {
    match status.as_u16() {
        400 => "INVALID_ARGUMENT",
        401 => "UNAUTHENTICATED",
        403 => "PERMISSION_DENIED",
        404 => "NOT_FOUND",
        429 => "RESOURCE_EXHAUSTED",
        _ => "UNAVAILABLE",
    }
}

/// A refusal with the status its code stands for.
fn refuse(p: Option<Provider>, code: ErrorCode, message: &str) -> Response {
    let status = StatusCode::from_u16(code.http_status()).unwrap_or(StatusCode::FORBIDDEN);
    provider_error(p, status, code, message)
}

/// A failure on berth's or the upstream's side (5xx).
fn failure(p: Provider, status: StatusCode, message: &str) -> Response {
    provider_error(Some(p), status, ErrorCode::Internal, message)
}

/// Largest request body accepted from an agent.
const MAX_REQUEST_BODY: usize = 64 << 20;

/// A request that passed every check, ready to go upstream.
struct Admitted {
    owner: KeyOwner,
    endpoint: Endpoint,
    rest: String,
    query: Option<String>,
    headers: HeaderMap,
    body: bytes::Bytes,
    /// The tokens reserved for the call (its estimate).
    estimate: Tokens,
    reservation: Option<Reservation>,
}

/// Anything outside `/{provider}/{rest}`.
async fn no_route() -> Response {
    refuse(
        None,
        ErrorCode::NotFound,
        "berth gateway: use /{anthropic|openai|gemini}/…",
    )
}

async fn forward(
    State((state, ws)): State<(Arc<AppState>, WorkspaceId)>,
    UrlPath((provider, _)): UrlPath<(String, String)>,
    req: Request,
) -> Response {
    let Some(p) = Provider::parse(&provider) else {
        return refuse(
            None,
            ErrorCode::NotFound,
            &format!("berth gateway: unknown provider {provider:?}"),
        );
    };
    match admit(&state, &ws, p, req).await {
        Ok(a) => call_upstream(&state, &ws, p, a).await,
        Err(resp) => resp,
    }
}

/// Every check before a call may go upstream: a live key of this workspace's task for this
/// provider, an allowed endpoint, a sound body, room in the budgets.
async fn admit(
    state: &Arc<AppState>,
    ws: &WorkspaceId,
    p: Provider,
    req: Request,
) -> Result<Admitted, Response> {
    let query = req.uri().query().map(str::to_owned);
    let owner = authenticate(state, ws, p, req.headers(), query.as_deref()).await?;
    // The raw (still percent-encoded) path is matched, so no decoding trick reaches another
    // upstream route.
    let rest = req
        .uri()
        .path()
        .strip_prefix(&format!("/{}/", p.as_str()))
        .unwrap_or_default()
        .to_owned();
    let endpoint = policy::endpoint(p, req.method(), &rest).map_err(|r| {
        tracing::warn!(task = %owner.0.id, method = %req.method(), path = %rest, "gateway refused an endpoint");
        refuse(Some(p), r.code, &r.message)
    })?;
    let headers = policy::forwarded_headers(req.headers());
    let body = match axum::body::to_bytes(req.into_body(), MAX_REQUEST_BODY).await {
        Ok(b) => b,
        Err(e) => {
            return Err(refuse(
                Some(p),
                ErrorCode::InvalidArgument,
                &format!("berth gateway: request body: {e}"),
            ))
        }
    };
    let body = match policy::prepare_body(endpoint, &body) {
        Ok(Some(rewritten)) => bytes::Bytes::from(rewritten),
        Ok(None) => body,
        Err(r) => return Err(refuse(Some(p), r.code, &r.message)),
    };
    let estimate = budget::estimate(&body, state.reservations.reserve_output);
    let reservation = if endpoint.generates() {
        let model = request_model(p, &rest, &body);
        Some(reserve(state, ws, p, &owner, model.as_deref(), estimate).await?)
    } else {
        None
    };
    Ok(Admitted {
        owner,
        endpoint,
        rest,
        query: policy::forwarded_query(p, query.as_deref()),
        headers,
        body,
        estimate,
        reservation,
    })
}

/// The key's task and workspace: the key must be live (its task's turn in flight, as the server
/// knows it), belong to a task of the workspace whose socket the call came in on, and that
/// task's agent must speak this provider.
async fn authenticate(
    state: &AppState,
    ws: &WorkspaceId,
    p: Provider,
    headers: &HeaderMap,
    query: Option<&str>,
) -> Result<KeyOwner, Response> {
    let Some(key) = virtual_key(headers, query) else {
        return Err(refuse(
            Some(p),
            ErrorCode::Unauthorized,
            "berth gateway: no API key in the request",
        ));
    };
    let owner = match lookup_key(state, &hash_token(&key)).await {
        Ok(Some(o)) if o.0.workspace_id == *ws => o,
        Ok(_) => {
            return Err(refuse(
                Some(p),
                ErrorCode::Unauthorized,
                "berth gateway: unknown, revoked or foreign virtual key (a task's key works only while its turn runs)",
            ))
        }
        Err(e) => {
            tracing::error!(error = %e, "gateway key lookup");
            return Err(failure(
                p,
                StatusCode::INTERNAL_SERVER_ERROR,
                "berth gateway: internal error",
            ));
        }
    };
    let own = owner.0.agent.provider();
    if own != p {
        tracing::warn!(task = %owner.0.id, provider = p.as_str(), "gateway: a key used on another provider");
        return Err(refuse(
            Some(p),
            ErrorCode::Forbidden,
            &format!(
                "berth gateway: this key belongs to a {} task and works on /{} only",
                owner.0.agent,
                own.as_str()
            ),
        ));
    }
    Ok(owner)
}

/// Reserves the call's estimate against the budgets of its workspace and tenant. Used up: the
/// task fails `budget_exceeded` (its key dies at once); reserved by calls in flight: 429 so the
/// agent retries; the store failing: refused (fail closed).
async fn reserve(
    state: &Arc<AppState>,
    ws: &WorkspaceId,
    p: Provider,
    owner: &KeyOwner,
    model: Option<&str>,
    estimate: Tokens,
) -> Result<Reservation, Response> {
    let (task, ws_row) = (&owner.0, &owner.1);
    let closed = |e: anyhow::Error| {
        tracing::error!(task = %task.id, error = %e, "budget check failed; refusing the call");
        failure(
            p,
            StatusCode::SERVICE_UNAVAILABLE,
            "berth gateway: budgets cannot be checked right now",
        )
    };
    let budgets: Vec<berth_store::Budget> = all_budgets(state)
        .await
        .map_err(closed)?
        .into_iter()
        .filter(|b| b.applies_to(ws_row.tenant.as_str(), ws.as_str()))
        .collect();
    let amount = Amount {
        tokens: estimate.input.saturating_add(estimate.output),
        cost_usd: state.prices.cost(model, estimate),
    };
    let store = state.store.clone();
    let spent = move |b: berth_store::Budget| {
        let store = store.clone();
        async move {
            let since = period_start(&b.period);
            Ok(store.spent(&b, since.as_deref()).await?)
        }
    };
    match state.reservations.admit(&budgets, amount, spent).await {
        Ok(Ok(r)) => Ok(r),
        Ok(Err(Refused::Busy(why))) => {
            tracing::info!(task = %task.id, "{why}");
            Err(refuse(
                Some(p),
                ErrorCode::RateLimited,
                &format!("berth gateway: {why}"),
            ))
        }
        Ok(Err(Refused::Exceeded(over))) => {
            tracing::warn!(task = %task.id, "{over}");
            stop_over_budget(state, ws, &task.id, &over).await;
            Err(refuse(
                Some(p),
                ErrorCode::Forbidden,
                &format!("berth gateway: {over}"),
            ))
        }
        Err(e) => Err(closed(e)),
    }
}

/// Ends a task over budget: its key dies now (server side), and the daemon is told to stop the
/// agent so the task ends `failed{budget_exceeded}`.
async fn stop_over_budget(state: &Arc<AppState>, ws: &WorkspaceId, task: &str, over: &str) {
    if let Err(e) = state.store.set_task_key_live(task, false).await {
        tracing::error!(task, error = %e, "cannot revoke the key of a task over budget");
    }
    forget_task(state, task);
    let daemon = state.daemon(ws);
    let (id, reason) = (task.to_owned(), format!("budget_exceeded: {over}"));
    tokio::spawn(async move {
        if let Err(e) = daemon.task_fail(&id, &reason).await {
            tracing::warn!(task = %id, error = %e, "could not stop the task over budget");
        }
    });
}

/// The real provider key: from the environment, or `vault:TENANT/NAME` from berth's vault.
async fn real_key(state: &AppState, p: Provider) -> Result<Secret, Response> {
    let key = match state.upstreams.get(p).api_key.clone() {
        Some(k) if k.expose().starts_with("vault:") => {
            let reference = k.expose()["vault:".len()..].to_owned();
            match vault_key(state, &reference).await {
                Ok(v) => Some(v),
                Err(e) => {
                    tracing::error!(provider = p.as_str(), error = %e, "provider key from the vault");
                    return Err(failure(
                        p,
                        StatusCode::SERVICE_UNAVAILABLE,
                        &format!(
                            "berth gateway: the {} key in the vault is unavailable",
                            p.as_str()
                        ),
                    ));
                }
            }
        }
        other => other,
    };
    key.ok_or_else(|| {
        let name = p.as_str().to_ascii_uppercase();
        failure(
            p,
            StatusCode::SERVICE_UNAVAILABLE,
            &format!(
                "berth gateway: no upstream key for {} (set BERTH_{name}_API_KEY on the server)",
                p.as_str()
            ),
        )
    })
}

/// Sends an admitted call upstream and streams the answer back, metered.
async fn call_upstream(
    state: &Arc<AppState>,
    ws: &WorkspaceId,
    p: Provider,
    a: Admitted,
) -> Response {
    let real_key = match real_key(state, p).await {
        Ok(k) => k,
        Err(resp) => return resp,
    };
    let upstream = state.upstreams.get(p);
    let url = upstream_url(&upstream.base_url, &a.rest, a.query.as_deref());
    let mut headers = a.headers;
    let (auth_name, auth_value) = match p {
        Provider::Anthropic => ("x-api-key", real_key.expose().to_owned()),
        Provider::Openai => ("authorization", format!("Bearer {}", real_key.expose())),
        Provider::Gemini => ("x-goog-api-key", real_key.expose().to_owned()),
    };
    if let Ok(v) = HeaderValue::from_str(&auth_value) {
        headers.insert(HeaderName::from_static(auth_name), v);
    }
    let (task, ws_row) = (&a.owner.0, &a.owner.1);
    tracing::debug!(task = %task.id, provider = p.as_str(), path = %a.rest, "gateway call");
    // Kept only when the operator turned recording on (BERTH_GATEWAY_RECORD_DAYS).
    let request_copy = if state.recording_days.is_some() {
        a.body.slice(..a.body.len().min(RECORD_MAX))
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
        model: request_model(p, &a.rest, &a.body),
        path: a.rest.clone(),
        ..Default::default()
    };
    let uri: hyper::Uri = match url.parse() {
        Ok(u) => u,
        Err(e) => {
            tracing::error!(provider = p.as_str(), url = %url, error = %e, "gateway upstream URL");
            return failure(
                p,
                StatusCode::BAD_GATEWAY,
                &format!("berth gateway: the {} upstream URL is invalid", p.as_str()),
            );
        }
    };
    let method = if a.endpoint == Endpoint::Models {
        hyper::Method::GET
    } else {
        hyper::Method::POST
    };
    let mut upstream_req = hyper::Request::new(http_body_util::Full::new(a.body));
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
            record_with(state, call, None, a.reservation);
            return failure(
                p,
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
        if policy::returns_header(name) {
            out = out.header(name, value);
        }
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
        estimate: if a.endpoint.generates() {
            a.estimate
        } else {
            Tokens::default()
        },
        passed: 0,
        reservation: a.reservation,
    };
    out.body(Body::new(metered)).unwrap_or_else(|_| {
        failure(
            p,
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
    let Some(task) = state.store.find_live_task_by_key_hash(hash).await? else {
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

/// Drops a task's cached key lookups, so a key the server just revoked stops working at once
/// (not only when the cache entry expires).
pub fn forget_task(state: &AppState, task_id: &str) {
    let mut cache = state.key_cache.lock().unwrap_or_else(|e| e.into_inner());
    cache.retain(|_, (_, owner)| owner.0.id != task_id);
}

async fn vault_key(state: &AppState, reference: &str) -> anyhow::Result<Secret> {
    let (tenant, name) = reference
        .split_once('/')
        .ok_or_else(|| anyhow::anyhow!("expected vault:TENANT/NAME, got vault:{reference}"))?;
    let vault = state
        .vault
        .as_deref()
        .ok_or_else(|| anyhow::anyhow!("no vault"))?;
    crate::secrets::reveal(&state.store, vault, tenant, name).await
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

/// A finished call, its recorded request and response when recording is on, and the budget
/// reservation it gives back once it is stored.
pub struct Recorded {
    call: LlmCall,
    exchange: Option<(String, String)>,
    reservation: Option<Reservation>,
}

/// Hands a finished call to the recorder, a single writer that stores whatever has queued up in
/// one transaction, so busy gateways do not pay one SQLite commit per call. Reservations are
/// given back only after the commit: until then the call's tokens count against its budgets as
/// reserved, from then on as spent.
fn record_with(
    state: &Arc<AppState>,
    call: LlmCall,
    exchange: Option<(String, String)>,
    reservation: Option<Reservation>,
) {
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
                let (rows, reservations): (Vec<_>, Vec<_>) = batch
                    .into_iter()
                    .map(|r| ((r.call, r.exchange), r.reservation))
                    .unzip();
                if let Err(e) = store.record_llm_calls(&rows).await {
                    tracing::error!(error = %e, calls = rows.len(), "cannot record LLM calls");
                }
                drop(reservations);
            }
        });
        tx
    });
    let _ = tx.send(Recorded {
        call,
        exchange,
        reservation,
    });
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
    /// What the call was expected to use at most (its reservation).
    estimate: Tokens,
    /// Response bytes passed to the agent so far.
    passed: u64,
    reservation: Option<Reservation>,
}

impl Metered {
    fn finish(&mut self, error: Option<String>) {
        let Some(mut call) = self.call.take() else {
            return;
        };
        self.tap.finish();
        let cut_off = error.is_some() && (200..300).contains(&call.status);
        let t = settled_tokens(self.tap.tokens, cut_off, self.estimate, self.passed);
        call.input_tokens = t.input;
        call.output_tokens = t.output;
        call.cache_read_tokens = t.cache_read;
        call.cache_write_tokens = t.cache_write;
        // Priced by the model the upstream says it used; the name the agent asked for is only
        // shown when the upstream named none (then the fallback price applies).
        let priced = self.tap.model.clone();
        call.cost_usd = Some(self.state.prices.cost(priced.as_deref(), t));
        if priced.is_some() {
            call.model = priced;
        }
        call.latency_ms = self.started.elapsed().as_millis() as u64;
        call.error = error;
        let exchange = self
            .recording
            .take()
            .map(|(req, resp)| (req, String::from_utf8_lossy(&resp).into_owned()));
        record_with(&self.state, call, exchange, self.reservation.take());
    }
}

/// The tokens a call is charged: what the upstream reported; for a stream cut off before the
/// upstream reported anything (OpenAI reports usage last), the prompt's estimate and what was
/// streamed at 4 bytes a token (at most the output estimate), so hanging up early is not free.
fn settled_tokens(reported: Tokens, cut_off: bool, estimate: Tokens, passed: u64) -> Tokens {
    if !cut_off || reported != Tokens::default() {
        return reported;
    }
    Tokens {
        input: estimate.input,
        output: passed.div_ceil(4).min(estimate.output),
        ..Tokens::default()
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
                    self.passed = self.passed.saturating_add(chunk.len() as u64);
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
    use crate::test_support::NoImages;

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

    /// A state over an in-memory store with the named workspaces and one live task per key.
    async fn state_with_tasks(
        tasks: &[(&str, &str, berth_domain::Agent)],
    ) -> (Arc<AppState>, tempfile::TempDir) {
        let dir = tempfile::tempdir().unwrap();
        let config = crate::config::ServerArgs {
            data_dir: Some(dir.path().to_owned()),
            ..Default::default()
        }
        .resolve()
        .unwrap();
        let store = berth_store::Store::open_in_memory().await.unwrap();
        let tenant = store
            .ensure_tenant(&berth_domain::Name::parse("acme").unwrap())
            .await
            .unwrap();
        for (ws, key, agent) in tasks {
            let w = match store
                .find_workspace(&tenant.name, &berth_domain::Name::parse(ws).unwrap())
                .await
                .unwrap()
            {
                Some(w) => w,
                None => store
                    .insert_workspace(&berth_store::NewWorkspace {
                        id: WorkspaceId::generate(),
                        tenant_id: tenant.id.clone(),
                        name: berth_domain::Name::parse(ws).unwrap(),
                        image: "img".into(),
                        limits: Default::default(),
                        network: "none".into(),
                        volume: format!("vol-{ws}"),
                    })
                    .await
                    .unwrap(),
            };
            store
                .insert_task(&berth_store::NewTask {
                    id: format!("tk_{key}"),
                    workspace_id: w.id.clone(),
                    workspace: w.qualified_name(),
                    agent: *agent,
                    model: None,
                    dir: "/home/agent".into(),
                    worktree: None,
                    prompt: "hi".into(),
                    virtual_key_hash: hash_token(key),
                })
                .await
                .unwrap();
        }
        let state = AppState::new(
            config,
            store,
            Arc::new(berth_runtime::FakeRuntime::new()),
            Arc::new(NoImages),
            "t0000".into(),
            crate::binary::StagedBinary {
                path: dir.path().join("bin"),
                hash: "h".into(),
            },
        )
        .unwrap();
        (Arc::new(state), dir)
    }

    async fn ws_id(state: &AppState, name: &str) -> WorkspaceId {
        let acme = berth_domain::Name::parse("acme").unwrap();
        let name = berth_domain::Name::parse(name).unwrap();
        state
            .store
            .find_workspace(&acme, &name)
            .await
            .unwrap()
            .unwrap()
            .id
    }

    async fn auth_status(state: &AppState, ws: &WorkspaceId, p: Provider, key: &str) -> u16 {
        let mut h = HeaderMap::new();
        h.insert(
            "authorization",
            HeaderValue::from_str(&format!("Bearer {key}")).unwrap(),
        );
        match authenticate(state, ws, p, &h, None).await {
            Ok(_) => 200,
            Err(resp) => resp.status().as_u16(),
        }
    }

    #[tokio::test]
    async fn keys_are_bound_to_provider_workspace_and_live_turn() {
        use berth_domain::Agent;
        let (state, _dir) = state_with_tasks(&[
            ("web", "k-claude", Agent::Claude),
            ("web", "k-codex", Agent::Codex),
            ("api", "k-other-ws", Agent::Claude),
        ])
        .await;
        let web = ws_id(&state, "web").await;
        assert_eq!(
            auth_status(&state, &web, Provider::Anthropic, "k-claude").await,
            200
        );
        assert_eq!(
            auth_status(&state, &web, Provider::Openai, "k-codex").await,
            200
        );
        // A claude task's key on /openai or /gemini: refused.
        assert_eq!(
            auth_status(&state, &web, Provider::Openai, "k-claude").await,
            403
        );
        assert_eq!(
            auth_status(&state, &web, Provider::Gemini, "k-claude").await,
            403
        );
        // Another workspace's key on this workspace's socket: unknown here.
        assert_eq!(
            auth_status(&state, &web, Provider::Anthropic, "k-other-ws").await,
            401
        );
        assert_eq!(
            auth_status(&state, &web, Provider::Anthropic, "nope").await,
            401
        );
        // The server ends the turn: the key is dead at once, the cache notwithstanding.
        state
            .store
            .set_task_key_live("tk_k-claude", false)
            .await
            .unwrap();
        forget_task(&state, "tk_k-claude");
        assert_eq!(
            auth_status(&state, &web, Provider::Anthropic, "k-claude").await,
            401
        );
    }

    #[test]
    fn cut_off_streams_are_charged() {
        let est = Tokens {
            input: 500,
            output: 4096,
            ..Tokens::default()
        };
        let seen = Tokens {
            input: 20,
            output: 3,
            ..Tokens::default()
        };
        // What the upstream reported counts, cut off or not.
        assert_eq!(settled_tokens(seen, true, est, 999), seen);
        assert_eq!(settled_tokens(seen, false, est, 999), seen);
        // Nothing reported yet: the prompt's estimate and what passed.
        let t = settled_tokens(Tokens::default(), true, est, 401);
        assert_eq!((t.input, t.output), (500, 101));
        let t = settled_tokens(Tokens::default(), true, est, 1 << 30);
        assert_eq!(t.output, 4096);
        // A complete answer without usage (an error body) is not estimated.
        assert_eq!(
            settled_tokens(Tokens::default(), false, est, 401),
            Tokens::default()
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
