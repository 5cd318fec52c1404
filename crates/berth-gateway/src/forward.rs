//! One call through the gateway: admitted (a live key of this workspace's task for this
//! provider, an allowed endpoint, a sound body, room in the budgets), sent upstream with the
//! real key, and answered with the upstream's response, streamed and metered. Every refusal
//! is a [`GatewayError`], turned into the response in one place.

use std::sync::Arc;

use axum::body::Body;
use axum::extract::{Path as UrlPath, Request, State};
use axum::http::HeaderMap;
use axum::response::Response;
use berth_domain::{Provider, WorkspaceId};
use berth_store::LlmCall;

use crate::budget::{self, Amount, Refused, Reservation};
use crate::error::GatewayError;
use crate::keys::{hash_key, virtual_key, KeyOwner};
use crate::listen::Serving;
use crate::meter::{MeterStart, Metered, RECORD_MAX};
use crate::policy::{self, Endpoint};
use crate::upstream::Outgoing;
use crate::usage_tap::{request_model, Tokens};
use crate::Gateway;

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
pub(crate) async fn no_route() -> Response {
    GatewayError::NoRoute.response(None)
}

/// `/{provider}/{rest}` on a workspace's socket.
pub(crate) async fn forward(
    State(s): State<Arc<Serving>>,
    UrlPath((provider, _)): UrlPath<(String, String)>,
    req: Request,
) -> Response {
    let Some(p) = Provider::parse(&provider) else {
        return GatewayError::UnknownProvider(provider).response(None);
    };
    let answer = match admit(&s, p, req).await {
        Ok(a) => call_upstream(&s.gateway, &s.ws, p, a).await,
        Err(e) => Err(e),
    };
    answer.unwrap_or_else(|e| e.response(Some(p)))
}

/// Every check before a call may go upstream: a live key of this workspace's task for this
/// provider, an allowed endpoint, a sound body, room in the budgets.
async fn admit(s: &Serving, p: Provider, req: Request) -> Result<Admitted, GatewayError> {
    let gw = &s.gateway;
    let query = req.uri().query().map(str::to_owned);
    let owner = authenticate(gw, &s.ws, p, req.headers(), query.as_deref()).await?;
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
        GatewayError::Policy(r)
    })?;
    let headers = policy::forwarded_headers(req.headers());
    let body = axum::body::to_bytes(req.into_body(), MAX_REQUEST_BODY)
        .await
        .map_err(|e| GatewayError::Body(e.to_string()))?;
    let body = match policy::prepare_body(endpoint, &body).map_err(GatewayError::Policy)? {
        Some(rewritten) => bytes::Bytes::from(rewritten),
        None => body,
    };
    let estimate = budget::estimate(&body, gw.inner.reservations.reserve_output);
    let reservation = if endpoint.generates() {
        let model = request_model(p, &rest, &body);
        Some(reserve(s, &owner, model.as_deref(), estimate).await?)
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
    gw: &Gateway,
    ws: &WorkspaceId,
    p: Provider,
    headers: &HeaderMap,
    query: Option<&str>,
) -> Result<KeyOwner, GatewayError> {
    let key = virtual_key(headers, query).ok_or(GatewayError::NoKey)?;
    let owner = match gw.lookup_key(&hash_key(&key)).await {
        Ok(Some(o)) if o.0.workspace_id == *ws => o,
        Ok(_) => return Err(GatewayError::UnknownKey),
        Err(e) => {
            tracing::error!(error = %e, "gateway key lookup");
            return Err(GatewayError::KeyLookup);
        }
    };
    let own = owner.0.agent.provider();
    if own != p {
        tracing::warn!(task = %owner.0.id, provider = p.as_str(), "gateway: a key used on another provider");
        return Err(GatewayError::WrongProvider {
            agent: owner.0.agent,
            own,
        });
    }
    Ok(owner)
}

/// Reserves the call's estimate against the budgets of its workspace and tenant. Used up: the
/// task fails `budget_exceeded` (its key dies at once); reserved by calls in flight: 429 so the
/// agent retries; the store failing: refused (fail closed).
async fn reserve(
    s: &Serving,
    owner: &KeyOwner,
    model: Option<&str>,
    estimate: Tokens,
) -> Result<Reservation, GatewayError> {
    let (gw, task, ws_row) = (&s.gateway, &owner.0, &owner.1);
    let closed = |e: anyhow::Error| {
        tracing::error!(task = %task.id, error = %e, "budget check failed; refusing the call");
        GatewayError::BudgetsUnavailable
    };
    let budgets: Vec<berth_store::Budget> = gw
        .all_budgets()
        .await
        .map_err(closed)?
        .into_iter()
        .filter(|b| b.applies_to(ws_row.tenant.as_str(), s.ws.as_str()))
        .collect();
    let amount = Amount {
        tokens: estimate.input.saturating_add(estimate.output),
        cost_usd: gw.inner.prices.cost(model, estimate),
    };
    let store = gw.inner.store.clone();
    let spent = move |b: berth_store::Budget| {
        let store = store.clone();
        async move {
            let since = crate::period_start(&b.period);
            Ok(store.spent(&b, since.as_deref()).await?)
        }
    };
    match gw.inner.reservations.admit(&budgets, amount, spent).await {
        Ok(Ok(r)) => Ok(r),
        Ok(Err(Refused::Busy(why))) => {
            tracing::info!(task = %task.id, "{why}");
            Err(GatewayError::BudgetBusy(why))
        }
        Ok(Err(Refused::Exceeded(over))) => {
            tracing::warn!(task = %task.id, "{over}");
            stop_over_budget(s, &task.id, &over).await;
            Err(GatewayError::BudgetExceeded(over))
        }
        Err(e) => Err(closed(e)),
    }
}

/// Ends a task over budget: its key dies now (server side), and the daemon is told to stop the
/// agent so the task ends `failed{budget_exceeded}`. The refusal is answered only after the
/// daemon took the stop (bounded by [`STOP_WAIT`]): an agent that exits on the 403 at once must
/// not end its turn as an ordinary failure first.
async fn stop_over_budget(s: &Serving, task: &str, over: &str) {
    if let Err(e) = s.gateway.inner.store.set_task_key_live(task, false).await {
        tracing::error!(task, error = %e, "cannot revoke the key of a task over budget");
    }
    s.gateway.forget_task(task);
    let reason = format!("budget_exceeded: {over}");
    match tokio::time::timeout(STOP_WAIT, s.daemon.task_fail(task, &reason)).await {
        Ok(Ok(_)) => {}
        Ok(Err(e)) => tracing::warn!(task, error = %e, "could not stop the task over budget"),
        Err(_) => tracing::warn!(task, "the daemon did not take the over-budget stop in time"),
    }
}

/// How long a refused call waits for the daemon to take the over-budget stop.
const STOP_WAIT: std::time::Duration = std::time::Duration::from_secs(5);

/// The call's row as it starts (its usage and outcome are filled in when it ends).
fn new_call(ws: &WorkspaceId, p: Provider, a: &Admitted) -> LlmCall {
    let (task, ws_row) = (&a.owner.0, &a.owner.1);
    LlmCall {
        workspace_id: ws.to_string(),
        workspace: ws_row.qualified_name(),
        tenant: ws_row.tenant.to_string(),
        task_id: task.id.clone(),
        provider: p.as_str().to_owned(),
        model: request_model(p, &a.rest, &a.body),
        path: a.rest.clone(),
        ..Default::default()
    }
}

/// Sends an admitted call upstream and streams the answer back, metered.
async fn call_upstream(
    gw: &Gateway,
    ws: &WorkspaceId,
    p: Provider,
    a: Admitted,
) -> Result<Response, GatewayError> {
    tracing::debug!(task = %a.owner.0.id, provider = p.as_str(), path = %a.rest, "gateway call");
    // Kept only when the operator turned recording on.
    let request = gw.inner.recording_days.map(|_| {
        let copy = &a.body[..a.body.len().min(RECORD_MAX)];
        String::from_utf8_lossy(copy).into_owned()
    });
    let mut call = new_call(ws, p, &a);
    let out = Outgoing {
        rest: &a.rest,
        query: a.query.as_deref(),
        endpoint: a.endpoint,
        headers: a.headers,
        body: a.body.clone(),
    };
    let upstream_req = gw.upstream_request(p, out).await?;
    let started = std::time::Instant::now();
    let resp = match gw.inner.http.request(upstream_req).await {
        Ok(r) => r,
        Err(e) => {
            tracing::warn!(task = %a.owner.0.id, error = %e, "gateway upstream unreachable");
            call.status = 502;
            call.latency_ms = started.elapsed().as_millis() as u64;
            call.error = Some("upstream unreachable".into());
            gw.record(call, None, a.reservation);
            return Err(GatewayError::Unreachable);
        }
    };
    call.status = resp.status().as_u16();
    call.ttfb_ms = Some(started.elapsed().as_millis() as u64);
    let start = MeterStart {
        provider: p,
        call,
        started,
        request,
        estimate: if a.endpoint.generates() {
            a.estimate
        } else {
            Tokens::default()
        },
        reservation: a.reservation,
    };
    respond(gw, resp, start)
}

/// The agent's response: the upstream's status and the headers `policy` returns, and its body
/// chunk by chunk (no buffering of streamed (SSE) responses). Usage is counted on a copy as the
/// chunks pass, and the call is recorded when the body ends (or the agent hangs up).
fn respond(
    gw: &Gateway,
    resp: hyper::Response<hyper::body::Incoming>,
    start: MeterStart,
) -> Result<Response, GatewayError> {
    let sse = resp
        .headers()
        .get(axum::http::header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.starts_with("text/event-stream"));
    let mut out = Response::builder().status(resp.status().as_u16());
    for (name, value) in resp.headers() {
        if policy::returns_header(name) {
            out = out.header(name, value);
        }
    }
    let metered = Metered::new(gw.clone(), resp.into_body(), sse, start);
    out.body(Body::new(metered))
        .map_err(|_| GatewayError::BadUpstreamResponse)
}

#[cfg(test)]
mod tests {
    use super::*;
    use axum::http::HeaderValue;
    use berth_domain::{Agent, Name};

    /// A gateway over an in-memory store with the named workspaces and one live task per key.
    async fn gateway_with_tasks(
        tasks: &[(&str, &str, Agent)],
    ) -> (Gateway, berth_store::Store, tempfile::TempDir) {
        let dir = tempfile::tempdir().unwrap();
        let store = berth_store::Store::open_in_memory().await.unwrap();
        let tenant = store
            .ensure_tenant(&Name::parse("acme").unwrap())
            .await
            .unwrap();
        for (ws, key, agent) in tasks {
            let name = Name::parse(ws).unwrap();
            let w = match store.find_workspace(&tenant.name, &name).await.unwrap() {
                Some(w) => w,
                None => store
                    .insert_workspace(&berth_store::NewWorkspace {
                        id: WorkspaceId::generate(),
                        tenant_id: tenant.id.clone(),
                        name,
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
                    virtual_key_hash: hash_key(key),
                })
                .await
                .unwrap();
        }
        let upstream = |p| crate::Upstream {
            base_url: crate::Upstreams::default_base_url(p).into(),
            api_key: None,
        };
        let config = crate::GatewayConfig {
            upstreams: crate::Upstreams {
                anthropic: upstream(Provider::Anthropic),
                openai: upstream(Provider::Openai),
                gemini: upstream(Provider::Gemini),
            },
            recording_days: None,
            reserve_output: crate::DEFAULT_RESERVE_OUTPUT,
            prices_file: dir.path().join("prices.toml"),
        };
        let gw = Gateway::new(config, store.clone()).unwrap();
        (gw, store, dir)
    }

    async fn ws_id(store: &berth_store::Store, name: &str) -> WorkspaceId {
        let acme = Name::parse("acme").unwrap();
        let name = Name::parse(name).unwrap();
        store
            .find_workspace(&acme, &name)
            .await
            .unwrap()
            .unwrap()
            .id
    }

    async fn auth_status(gw: &Gateway, ws: &WorkspaceId, p: Provider, key: &str) -> u16 {
        let mut h = HeaderMap::new();
        h.insert(
            "authorization",
            HeaderValue::from_str(&format!("Bearer {key}")).unwrap(),
        );
        match authenticate(gw, ws, p, &h, None).await {
            Ok(_) => 200,
            Err(e) => e.response(Some(p)).status().as_u16(),
        }
    }

    #[tokio::test]
    async fn keys_are_bound_to_provider_workspace_and_live_turn() {
        let (gw, store, _dir) = gateway_with_tasks(&[
            ("web", "k-claude", Agent::Claude),
            ("web", "k-codex", Agent::Codex),
            ("api", "k-other-ws", Agent::Claude),
        ])
        .await;
        let web = ws_id(&store, "web").await;
        assert_eq!(
            auth_status(&gw, &web, Provider::Anthropic, "k-claude").await,
            200
        );
        assert_eq!(
            auth_status(&gw, &web, Provider::Openai, "k-codex").await,
            200
        );
        // A claude task's key on /openai or /gemini: refused.
        assert_eq!(
            auth_status(&gw, &web, Provider::Openai, "k-claude").await,
            403
        );
        assert_eq!(
            auth_status(&gw, &web, Provider::Gemini, "k-claude").await,
            403
        );
        // Another workspace's key on this workspace's socket: unknown here.
        assert_eq!(
            auth_status(&gw, &web, Provider::Anthropic, "k-other-ws").await,
            401
        );
        assert_eq!(
            auth_status(&gw, &web, Provider::Anthropic, "nope").await,
            401
        );
        // The server ends the turn: the key is dead at once, the cache notwithstanding.
        store.set_task_key_live("tk_k-claude", false).await.unwrap();
        gw.forget_task("tk_k-claude");
        assert_eq!(
            auth_status(&gw, &web, Provider::Anthropic, "k-claude").await,
            401
        );
    }
}
