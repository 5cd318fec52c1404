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
use crate::keys::{hash_key, session_liveness, virtual_key, Holder, KeyOwner, SessionLiveness};
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
    let owner = authenticate(gw, &s.ws, &s.daemon, p, req.headers(), query.as_deref()).await?;
    // The raw (still percent-encoded) path is matched, so no decoding trick reaches another
    // upstream route.
    let rest = req
        .uri()
        .path()
        .strip_prefix(&format!("/{}/", p.as_str()))
        .unwrap_or_default()
        .to_owned();
    let endpoint = policy::endpoint(p, req.method(), &rest).map_err(|r| {
        tracing::warn!(holder = %owner.id(), method = %req.method(), path = %rest, "gateway refused an endpoint");
        GatewayError::Policy(r)
    })?;
    let headers = policy::forwarded_headers(req.headers());
    let body = axum::body::to_bytes(req.into_body(), MAX_REQUEST_BODY)
        .await
        .map_err(|e| GatewayError::Body(e.to_string()))?;
    let max_output = gw.inner.reservations.reserve_output;
    let body =
        match policy::prepare_body(endpoint, &body, max_output).map_err(GatewayError::Policy)? {
            Some(rewritten) => bytes::Bytes::from(rewritten),
            None => body,
        };
    let estimate = budget::estimate(&body, max_output);
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

/// The key's holder and workspace: the key must be live (its task's turn in flight, or its
/// agent session running, as the server knows it), belong to the workspace whose socket the
/// call came in on, and its agent must speak this provider.
async fn authenticate(
    gw: &Gateway,
    ws: &WorkspaceId,
    daemon: &berth_daemon::DaemonClient,
    p: Provider,
    headers: &HeaderMap,
    query: Option<&str>,
) -> Result<KeyOwner, GatewayError> {
    let key = virtual_key(headers, query).ok_or(GatewayError::NoKey)?;
    let owner = match gw.lookup_key(&hash_key(&key)).await {
        Ok(Some(o)) if o.workspace_id() == ws => o,
        Ok(_) => return Err(GatewayError::UnknownKey),
        Err(e) => {
            tracing::error!(error = %e, "gateway key lookup");
            return Err(GatewayError::KeyLookup);
        }
    };
    let own = owner.agent().provider();
    if own != p {
        tracing::warn!(holder = %owner.id(), provider = p.as_str(), "gateway: a key used on another provider");
        return Err(GatewayError::WrongProvider {
            agent: owner.agent(),
            own,
        });
    }
    if let Holder::Session(k) = &owner.holder {
        confirm_session(gw, daemon, k).await?;
    }
    Ok(owner)
}

/// How long the daemon may take to confirm an agent session.
const CONFIRM_WAIT: std::time::Duration = std::time::Duration::from_secs(5);

/// An agent session's key works only while the daemon lists that very session running. When
/// the daemon says it ended (or is another session by now), the server ends the key for good;
/// when the daemon does not answer, this call is refused.
async fn confirm_session(
    gw: &Gateway,
    daemon: &berth_daemon::DaemonClient,
    k: &berth_store::SessionKey,
) -> Result<(), GatewayError> {
    let answer = match &k.session_id {
        Some(id) => match tokio::time::timeout(CONFIRM_WAIT, daemon.session_get(id)).await {
            Ok(a) => a,
            Err(_) => return Err(GatewayError::UnknownKey),
        },
        None => return Err(GatewayError::UnknownKey),
    };
    match session_liveness(k, &answer) {
        SessionLiveness::Running => Ok(()),
        SessionLiveness::Ended => {
            tracing::info!(session = %k.id, "gateway: the agent session ended; its key is dead");
            if let Err(e) = gw.inner.store.end_session_key(&k.id).await {
                tracing::error!(session = %k.id, error = %e, "cannot end an agent session's key");
            }
            Err(GatewayError::UnknownKey)
        }
        SessionLiveness::Unconfirmed => {
            tracing::warn!(session = %k.id, "gateway: the daemon did not confirm the agent session; call refused");
            Err(GatewayError::UnknownKey)
        }
    }
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
    let (gw, ws_row) = (&s.gateway, &owner.ws);
    let holder = owner.id();
    let closed = |e: anyhow::Error| {
        tracing::error!(holder, error = %e, "budget check failed; refusing the call");
        GatewayError::BudgetsUnavailable
    };
    let budgets: Vec<berth_store::Budget> = gw
        .all_budgets()
        .await
        .map_err(closed)?
        .into_iter()
        .filter(|b| b.applies_to(&ws_row.tenant, &s.ws))
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
            Ok(store.spent(&b, since.as_ref()).await?)
        }
    };
    match gw.inner.reservations.admit(&budgets, amount, spent).await {
        Ok(Ok(r)) => Ok(r),
        Ok(Err(Refused::Busy(why))) => {
            tracing::info!(holder, "{why}");
            Err(GatewayError::BudgetBusy(why))
        }
        Ok(Err(Refused::Exceeded(over))) => {
            tracing::warn!(holder, "{over}");
            match &owner.holder {
                Holder::Task(t) => stop_over_budget(s, &t.id, &over).await,
                Holder::Session(k) => stop_session_over_budget(s, k).await,
            }
            Err(GatewayError::BudgetExceeded(over))
        }
        Err(e) => Err(closed(e)),
    }
}

/// Ends a task over budget: its key dies now (server side), and the daemon is told to stop the
/// agent so the task ends `failed{budget_exceeded}`. The refusal is answered only after the
/// daemon took the stop (bounded by [`STOP_WAIT`]): an agent that exits on the 403 at once must
/// not end its turn as an ordinary failure first.
async fn stop_over_budget(s: &Serving, task: &berth_domain::TaskId, over: &str) {
    if let Err(e) = s.gateway.inner.store.set_task_key_live(task, false).await {
        tracing::error!(task = %task, error = %e, "cannot revoke the key of a task over budget");
    }
    s.gateway.forget_task(task);
    let reason = format!("budget_exceeded: {over}");
    match tokio::time::timeout(STOP_WAIT, s.daemon.task_fail(task, &reason)).await {
        Ok(Ok(_)) => {}
        Ok(Err(e)) => {
            tracing::warn!(task = %task, error = %e, "could not stop the task over budget")
        }
        Err(_) => {
            tracing::warn!(task = %task, "the daemon did not take the over-budget stop in time")
        }
    }
}

/// Ends an agent session over budget: its key dies now (server side) and the daemon is told
/// to end the session (bounded by [`STOP_WAIT`]).
async fn stop_session_over_budget(s: &Serving, k: &berth_store::SessionKey) {
    if let Err(e) = s.gateway.inner.store.end_session_key(&k.id).await {
        tracing::error!(session = %k.id, error = %e, "cannot revoke the key of a session over budget");
    }
    if let Some(id) = &k.session_id {
        match tokio::time::timeout(STOP_WAIT, s.daemon.session_kill(id)).await {
            Ok(Ok(())) => {}
            Ok(Err(e)) => {
                tracing::warn!(session = %k.id, error = %e, "could not end the session over budget")
            }
            Err(_) => {
                tracing::warn!(session = %k.id, "the daemon did not end the session over budget in time")
            }
        }
    }
}

/// How long a refused call waits for the daemon to take the over-budget stop.
const STOP_WAIT: std::time::Duration = std::time::Duration::from_secs(5);

/// The call's row as it starts (its usage and outcome are filled in when it ends).
fn new_call(ws: &WorkspaceId, p: Provider, a: &Admitted) -> LlmCall {
    let ws_row = &a.owner.ws;
    LlmCall {
        workspace_id: ws.clone(),
        workspace: ws_row.qualified_name(),
        tenant: ws_row.tenant.clone(),
        task_id: a.owner.task_id().cloned(),
        session_id: a.owner.session_id(),
        provider: p.as_str().to_owned(),
        model: request_model(p, &a.rest, &a.body),
        path: a.rest.clone(),
        status: 0,
        input_tokens: 0,
        output_tokens: 0,
        cache_read_tokens: 0,
        cache_write_tokens: 0,
        cost_usd: None,
        cost_nusd: None,
        priced: None,
        latency_ms: 0,
        ttfb_ms: None,
        error: None,
    }
}

/// Sends an admitted call upstream and streams the answer back, metered.
async fn call_upstream(
    gw: &Gateway,
    ws: &WorkspaceId,
    p: Provider,
    a: Admitted,
) -> Result<Response, GatewayError> {
    tracing::debug!(holder = %a.owner.id(), provider = p.as_str(), path = %a.rest, "gateway call");
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
            tracing::warn!(holder = %a.owner.id(), error = %e, "gateway upstream unreachable");
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
    use berth_domain::{Agent, Name, Timestamp};

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
                        mcp_servers: Vec::new(),
                    })
                    .await
                    .unwrap(),
            };
            store
                .insert_task(&berth_store::NewTask {
                    id: berth_domain::TaskId::from_stored(format!("tk_{key}")),
                    workspace_id: w.id.clone(),
                    workspace: w.qualified_name(),
                    agent: *agent,
                    model: None,
                    dir: "/home/agent".into(),
                    worktree: None,
                    prompt: "hi".into(),
                    virtual_key_hash: hash_key(key),
                    approval: Default::default(),
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
        // Task keys never ask the daemon: one that is not there does.
        let daemon = berth_daemon::DaemonClient::new("/nonexistent/daemon.sock");
        auth_via(gw, ws, &daemon, p, key).await
    }

    async fn auth_via(
        gw: &Gateway,
        ws: &WorkspaceId,
        daemon: &berth_daemon::DaemonClient,
        p: Provider,
        key: &str,
    ) -> u16 {
        let mut h = HeaderMap::new();
        h.insert(
            "authorization",
            HeaderValue::from_str(&format!("Bearer {key}")).unwrap(),
        );
        match authenticate(gw, ws, daemon, p, &h, None).await {
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
        let task = berth_domain::TaskId::from_stored("tk_k-claude".into());
        store.set_task_key_live(&task, false).await.unwrap();
        gw.forget_task(&task);
        assert_eq!(
            auth_status(&gw, &web, Provider::Anthropic, "k-claude").await,
            401
        );
    }

    /// A real daemon on a socket in `dir`, until the returned sender is dropped.
    async fn start_daemon(
        dir: &std::path::Path,
    ) -> (berth_daemon::DaemonClient, tokio::sync::oneshot::Sender<()>) {
        let socket = dir.join("daemon.sock");
        let opts = berth_daemon::server::DaemonOptions {
            socket: socket.clone(),
            default_cwd: dir.to_path_buf(),
            ..Default::default()
        };
        let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
        tokio::spawn(berth_daemon::server::run_until(opts, async move {
            let _ = stopped.await;
        }));
        let client = berth_daemon::DaemonClient::new(&socket);
        for _ in 0..100 {
            if client.session_list().await.is_ok() {
                return (client, stop);
            }
            tokio::time::sleep(std::time::Duration::from_millis(50)).await;
        }
        panic!("the daemon did not start");
    }

    #[tokio::test]
    async fn session_keys_live_only_while_the_daemon_lists_their_session() {
        let (gw, store, dir) = gateway_with_tasks(&[("web", "k-task", Agent::Claude)]).await;
        gateway_with_other_ws(&store).await;
        let (web, api) = (ws_id(&store, "web").await, ws_id(&store, "api").await);
        let (daemon, _stop) = start_daemon(dir.path()).await;
        let s = daemon
            .session_create(berth_daemon::SessionCreate {
                name: Some("codex".into()),
                argv: Some(vec!["sleep".into(), "60".into()]),
                ..Default::default()
            })
            .await
            .unwrap();
        store
            .insert_session_key(&berth_store::NewSessionKey {
                id: "as_1".into(),
                key_hash: hash_key("k-sess"),
                workspace_id: web.clone(),
                workspace: "acme/web".into(),
                agent: Agent::Codex,
                task_id: None,
            })
            .await
            .unwrap();
        let live = || async {
            store
                .find_live_session_key_by_hash(&hash_key("k-sess"))
                .await
                .unwrap()
                .is_some()
        };
        // Not bound to a running session yet: refused.
        assert_eq!(
            auth_via(&gw, &web, &daemon, Provider::Openai, "k-sess").await,
            401
        );
        // Bound to the running session: accepted on its own provider and workspace only.
        store
            .bind_session_key("as_1", &s.id, &s.name, &s.created_at)
            .await
            .unwrap();
        assert_eq!(
            auth_via(&gw, &web, &daemon, Provider::Openai, "k-sess").await,
            200
        );
        assert_eq!(
            auth_via(&gw, &web, &daemon, Provider::Anthropic, "k-sess").await,
            403
        );
        assert_eq!(
            auth_via(&gw, &api, &daemon, Provider::Openai, "k-sess").await,
            401
        );
        // A daemon that cannot answer: refused, but the key is not ended by that alone.
        let gone = berth_daemon::DaemonClient::new(dir.path().join("none.sock"));
        assert_eq!(
            auth_via(&gw, &web, &gone, Provider::Openai, "k-sess").await,
            401
        );
        assert!(live().await);
        // The session exits: refused, and the key is dead for good.
        daemon.session_kill(&s.id).await.unwrap();
        assert_eq!(
            auth_via(&gw, &web, &daemon, Provider::Openai, "k-sess").await,
            401
        );
        assert!(!live().await);
    }

    async fn gateway_with_other_ws(store: &berth_store::Store) {
        let tenant = store
            .ensure_tenant(&Name::parse("acme").unwrap())
            .await
            .unwrap();
        store
            .insert_workspace(&berth_store::NewWorkspace {
                id: WorkspaceId::generate(),
                tenant_id: tenant.id.clone(),
                name: Name::parse("api").unwrap(),
                image: "img".into(),
                limits: Default::default(),
                network: "none".into(),
                volume: "vol-api".into(),
                mcp_servers: Vec::new(),
            })
            .await
            .unwrap();
    }

    #[test]
    fn session_liveness_needs_the_very_same_running_session() {
        let key = berth_store::SessionKey {
            id: "as_1".into(),
            workspace_id: WorkspaceId::generate(),
            workspace: "acme/web".into(),
            agent: Agent::Claude,
            task_id: None,
            session_id: Some("ab12".into()),
            session_name: Some("claude".into()),
            session_created_at: Some(Timestamp::from_stored("t0")),
            live: true,
            created_at: Timestamp::from_stored("t0"),
        };
        let info = |id: &str, name: &str, at: &str, state| berth_daemon::SessionInfo {
            id: id.into(),
            name: name.into(),
            argv: vec!["claude".into()],
            pid: 1,
            state,
            exit_code: None,
            created_at: Timestamp::from_stored(at),
            attached: 0,
            cols: 80,
            rows: 24,
            scrollback_bytes: 0,
        };
        use berth_daemon::SessionState::{Exited, Running};
        use SessionLiveness as L;
        let judge = |a| session_liveness(&key, &a);
        assert_eq!(judge(Ok(info("ab12", "claude", "t0", Running))), L::Running);
        assert_eq!(judge(Ok(info("ab12", "claude", "t0", Exited))), L::Ended);
        assert_eq!(judge(Ok(info("ab12", "claude", "t1", Running))), L::Ended);
        assert_eq!(judge(Ok(info("ab12", "other", "t0", Running))), L::Ended);
        assert_eq!(
            judge(Err(berth_daemon::DaemonError::NotFound("x".into()))),
            L::Ended
        );
        let unbound = berth_store::SessionKey {
            session_id: None,
            ..key.clone()
        };
        assert_eq!(
            session_liveness(&unbound, &Ok(info("ab12", "claude", "t0", Running))),
            L::Unconfirmed
        );
    }
}
