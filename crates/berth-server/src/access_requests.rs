//! Access requests (issue 15 §2): what a workspace's egress rules denied, and what its agent
//! asked for explicitly (`berth request egress HOST[:PORT]`, `berth request secret NAME --host
//! H`), for an owner to approve once (an allow rule that expires), always (a rule of the
//! workspace's own, or of a tenant egress template), or deny.
//!
//! Everything comes from a hostile workspace, so:
//! - denied attempts are coalesced in memory ([`Sightings`]): at most [`PER_WORKSPACE`]
//!   distinct targets per workspace and [`WORKSPACES`] workspaces wait between two flushes,
//!   repeats only bump a counter, and the writer flushes every [`FLUSH_EVERY`]; a workspace
//!   hammering denied hosts costs one row write per distinct target per flush at most;
//! - explicit requests come through the workspace's own socket (`access.sock` in its channel
//!   directory, [`serve_connection`]): the workspace is the socket's, never a field of the
//!   message; one JSON line of at most [`MAX_LINE`] bytes within [`LINE_TIMEOUT`], at most
//!   [`EXPLICIT_PER_SECOND`] per workspace per second;
//! - the store cuts every field and holds at most `MAX_OPEN_PER_WORKSPACE` open requests per
//!   workspace.
//!
//! A decision is the server's own: who decided comes from the caller's token, it applies to the
//! running proxy at once (the workspace's policy is recomputed), and it is audited
//! (`access.approve`, `access.deny`). Grants "once" are part of the workspace's effective
//! policy until they expire; [`spawn_sweeper`] marks them expired and recomputes the policy.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use berth_api as api;
use berth_domain::{ErrorCode, WorkspaceId};
use berth_egress::Attempt;
use berth_store::{
    AccessDecision, AccessRecorded, AccessRequest, AccessSighting, AccessTarget, Store,
};
use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt};

use crate::auth::{audit, Actor};
use crate::error::{ApiError, ApiResult};
use crate::state::AppState;
use crate::{approvals, lifecycle};

/// Distinct denied targets of one workspace waiting for the writer.
pub const PER_WORKSPACE: usize = 64;
/// Workspaces with denied targets waiting for the writer.
pub const WORKSPACES: usize = 4096;
/// How often waiting sightings are written.
pub const FLUSH_EVERY: Duration = Duration::from_millis(250);
/// Longest line an explicit request may be.
pub const MAX_LINE: usize = 8 * 1024;
/// Time to send an explicit request's line.
pub const LINE_TIMEOUT: Duration = Duration::from_secs(5);
/// Explicit requests taken per workspace per second; more are refused.
pub const EXPLICIT_PER_SECOND: u32 = 10;
/// An approval "once" lasts this long unless the decision says otherwise.
pub const DEFAULT_TTL_SECONDS: u64 = 3600;
/// The longest an approval "once" may last.
pub const MAX_TTL_SECONDS: u64 = 30 * 86_400;
/// Most requests one list answer holds.
const LIST_LIMIT: u32 = 500;
/// The socket in a workspace's channel directory (`/run/berth/access.sock` inside).
pub const SOCKET_NAME: &str = berth_daemon::access::ACCESS_SOCKET_NAME;

// ---------------------------------------------------------------- denied attempts

type Key = (String, u16);

/// Denied attempts waiting to be written, coalesced per workspace and target.
#[derive(Default)]
pub struct Sightings {
    pending: Mutex<HashMap<WorkspaceId, HashMap<Key, AccessSighting>>>,
    wake: tokio::sync::Notify,
}

impl Sightings {
    /// Counts one denied attempt. Never waits; past the caps it is dropped (its target is then
    /// either waiting already, or the workspace has many others waiting).
    pub fn push(&self, ws: &WorkspaceId, attempt: &Attempt, rule: Option<String>) {
        let now = berth_domain::Timestamp::now();
        let mut pending = berth_domain::sync::lock(&self.pending);
        let total = pending.len();
        let targets = match pending.get_mut(ws) {
            Some(t) => t,
            None if total >= WORKSPACES => return,
            None => pending.entry(ws.clone()).or_default(),
        };
        let key = (attempt.host.clone(), attempt.port);
        if let Some(s) = targets.get_mut(&key) {
            s.count = s.count.saturating_add(1);
            s.last_seen = now;
            s.method = attempt.method.clone();
            s.path = attempt.path.clone();
            s.rule = rule;
            return;
        }
        if targets.len() >= PER_WORKSPACE {
            return;
        }
        targets.insert(
            key,
            AccessSighting {
                target: AccessTarget::Egress {
                    host: attempt.host.clone(),
                    port: attempt.port,
                },
                source: "denied",
                method: attempt.method.clone(),
                path: attempt.path.clone(),
                rule,
                task_id: None,
                reason: None,
                count: 1,
                first_seen: now.clone(),
                last_seen: now,
            },
        );
        drop(pending);
        self.wake.notify_one();
    }

    fn take(&self) -> HashMap<WorkspaceId, HashMap<Key, AccessSighting>> {
        std::mem::take(&mut *berth_domain::sync::lock(&self.pending))
    }

    #[cfg(test)]
    fn waiting(&self, ws: &WorkspaceId) -> usize {
        berth_domain::sync::lock(&self.pending)
            .get(ws)
            .map_or(0, |t| t.len())
    }
}

/// Writes waiting sightings as access requests, every [`FLUSH_EVERY`] while there are some.
pub fn spawn_writer(sightings: Arc<Sightings>, store: Store) {
    tokio::spawn(async move {
        loop {
            sightings.wake.notified().await;
            tokio::time::sleep(FLUSH_EVERY).await;
            for (ws, targets) in sightings.take() {
                for s in targets.into_values() {
                    if let Err(e) = store.record_access(&ws, &s).await {
                        tracing::error!(workspace = %ws, error = %e, "cannot record an access request");
                    }
                }
            }
        }
    });
}

// ---------------------------------------------------------------- explicit requests

use berth_daemon::access::{AccessAnswer as ExplicitAnswer, AccessAsk as ExplicitRequest};

fn refusal(msg: impl Into<String>) -> ExplicitAnswer {
    ExplicitAnswer {
        ok: false,
        error: Some(msg.into()),
        ..Default::default()
    }
}

/// A host as a request names it: normalized, or refused.
fn check_host(host: &str) -> Result<String, String> {
    if host.len() > 253 {
        return Err("the host is longer than 253 bytes".into());
    }
    berth_egress::normalize_host(host.trim()).ok_or_else(|| format!("invalid host {host:?}"))
}

/// A task id as a request names it (kept only if it looks like one).
fn check_task(task: Option<&str>) -> Option<berth_domain::TaskId> {
    task.and_then(berth_domain::TaskId::parse)
}

/// `s` with its task kept only if it is a task of workspace `ws` (the request names it; an
/// agent may name another workspace's task).
async fn own_task(store: &Store, ws: &WorkspaceId, mut s: AccessSighting) -> AccessSighting {
    if let Some(id) = &s.task_id {
        let ours = matches!(store.find_task(id).await, Ok(Some(t)) if t.workspace_id == *ws);
        if !ours {
            s.task_id = None;
        }
    }
    s
}

/// The sighting an explicit request stands for, or why it is refused.
fn sighting(req: ExplicitRequest) -> Result<AccessSighting, String> {
    let now = berth_domain::Timestamp::now();
    let (target, reason, task) = match req {
        ExplicitRequest::Egress {
            host,
            port,
            reason,
            task,
        } => {
            let port = port.unwrap_or(443);
            if port == 0 {
                return Err("port 0".into());
            }
            let host = check_host(&host)?;
            (AccessTarget::Egress { host, port }, reason, task)
        }
        ExplicitRequest::Secret {
            name,
            host,
            reason,
            task,
        } => {
            if !crate::vault::valid_name(&name) {
                return Err(format!(
                    "secret name {:?} must look like an environment variable: A-Z, 0-9 and _",
                    name.chars().take(64).collect::<String>()
                ));
            }
            let host = check_host(&host)?;
            (AccessTarget::Secret { name, host }, reason, task)
        }
    };
    Ok(AccessSighting {
        target,
        source: "explicit",
        method: None,
        path: None,
        rule: None,
        task_id: check_task(task.as_deref()),
        reason: reason.filter(|r| !r.trim().is_empty()),
        count: 1,
        first_seen: now.clone(),
        last_seen: now,
    })
}

/// Explicit requests taken per workspace in the current second.
#[derive(Default)]
pub struct RateLimit {
    windows: Mutex<HashMap<WorkspaceId, (std::time::Instant, u32)>>,
}

impl RateLimit {
    fn admit(&self, ws: &WorkspaceId) -> bool {
        let now = std::time::Instant::now();
        let mut w = berth_domain::sync::lock(&self.windows);
        if w.len() > WORKSPACES {
            w.retain(|_, (start, _)| now.duration_since(*start) < Duration::from_secs(1));
        }
        let e = w.entry(ws.clone()).or_insert((now, 0));
        if now.duration_since(e.0) >= Duration::from_secs(1) {
            *e = (now, 0);
        }
        e.1 += 1;
        e.1 <= EXPLICIT_PER_SECOND
    }
}

/// Serves one connection of a workspace's `access.sock`: one request line, one answer line.
pub async fn serve_connection<S>(stream: S, ws: WorkspaceId, store: Store, rate: Arc<RateLimit>)
where
    S: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin,
{
    let (read, mut write) = tokio::io::split(stream);
    let mut reader = tokio::io::BufReader::new(read.take(MAX_LINE as u64 + 1));
    let mut line = Vec::new();
    let answer = match tokio::time::timeout(LINE_TIMEOUT, reader.read_until(b'\n', &mut line)).await
    {
        Err(_) => refusal("no request within 5s"),
        Ok(Err(e)) => refusal(format!("cannot read the request: {e}")),
        Ok(Ok(_)) if line.len() > MAX_LINE => {
            refusal(format!("the request is longer than {MAX_LINE} bytes"))
        }
        Ok(Ok(_)) if !rate.admit(&ws) => refusal(format!(
            "too many requests: at most {EXPLICIT_PER_SECOND} per second"
        )),
        Ok(Ok(_)) => match serde_json::from_slice::<ExplicitRequest>(&line) {
            Err(e) => refusal(format!("invalid request: {e}")),
            Ok(req) => match sighting(req) {
                Err(e) => refusal(e),
                Ok(s) => match store
                    .record_access(&ws, &own_task(&store, &ws, s).await)
                    .await
                {
                    Ok(AccessRecorded::Created(id)) => ExplicitAnswer {
                        ok: true,
                        id: Some(id.to_string()),
                        recorded: Some("created".into()),
                        error: None,
                    },
                    Ok(AccessRecorded::Repeated(id)) => ExplicitAnswer {
                        ok: true,
                        id: Some(id.to_string()),
                        recorded: Some("repeated".into()),
                        error: None,
                    },
                    Ok(AccessRecorded::Capped) => refusal(
                        "this workspace has too many open access requests; wait for decisions",
                    ),
                    Err(e) => {
                        tracing::error!(workspace = %ws, error = %e, "cannot record an access request");
                        refusal("the server cannot record the request now")
                    }
                },
            },
        },
    };
    let mut out = serde_json::to_vec(&answer).unwrap_or_default();
    out.push(b'\n');
    let _ = tokio::time::timeout(LINE_TIMEOUT, write.write_all(&out)).await;
    let _ = write.shutdown().await;
}

// ---------------------------------------------------------------- the API's side

pub fn to_api(r: &AccessRequest) -> api::AccessRequest {
    api::AccessRequest {
        id: r.id.clone(),
        workspace: r.workspace.clone(),
        kind: r.kind.clone(),
        source: r.source.clone(),
        host: r.host.clone(),
        port: r.port,
        secret: r.secret.clone(),
        method: r.method.clone(),
        path: r.path.clone(),
        rule: r.rule.clone(),
        task: r.task_id.as_ref().map(ToString::to_string),
        agent_reason: r.reason.clone(),
        count: r.count,
        first_seen: r.first_seen.clone(),
        last_seen: r.last_seen.clone(),
        state: r.state.clone(),
        scope: r.scope.clone(),
        template: r.template.clone(),
        granted_rule: r.granted_rule.clone(),
        expires_at: r.expires_at.clone(),
        decided_by: r.decided_by.clone(),
        decided_at: r.decided_at.clone(),
        reason: r.note.clone(),
        comments: r
            .comments
            .iter()
            .map(|c| api::AccessRequestComment {
                at: c.at.clone(),
                author: c.author.clone(),
                text: c.text.clone(),
            })
            .collect(),
    }
}

fn check_state(s: Option<&str>) -> ApiResult<Option<&str>> {
    match s {
        None => Ok(None),
        Some(s @ ("open" | "approved" | "denied" | "expired")) => Ok(Some(s)),
        Some(other) => Err(ApiError::invalid(format!(
            "unknown state {other:?}: use open, approved, denied or expired"
        ))),
    }
}

/// The caller's tenant's requests (every tenant's for an admin), newest sighting first.
pub async fn list(
    state: &AppState,
    actor: &Actor,
    q: &api::AccessRequestsQuery,
) -> ApiResult<Vec<api::AccessRequest>> {
    let st = check_state(q.state.as_deref())?;
    let ws = match &q.workspace {
        Some(w) => Some(lifecycle::resolve(state, w).await?.id),
        None => None,
    };
    let rows = state
        .store
        .access_requests(actor.scope(), ws.as_ref(), st, LIST_LIMIT)
        .await?;
    Ok(rows.iter().map(to_api).collect())
}

async fn find(state: &AppState, ws: &str, id: &str) -> ApiResult<AccessRequest> {
    let w = lifecycle::resolve(state, ws).await?;
    state.store.access_request(&w.id, id).await?.ok_or_else(|| {
        ApiError::not_found(format!(
            "workspace {} has no access request {}",
            w.qualified_name(),
            short(id)
        ))
    })
}

/// An id as shown in an audit target or an error (it comes from the URL).
fn short(id: &str) -> String {
    approvals::printable_cut(id, 64)
}

fn what(r: &AccessRequest) -> String {
    match (&r.secret, r.port) {
        (Some(name), _) => format!("secret {name} for {}", r.host),
        (None, Some(port)) => format!("egress {}", host_port(&r.host, port)),
        (None, None) => format!("egress {}", r.host),
    }
}

fn host_port(host: &str, port: u16) -> String {
    if host.contains(':') {
        format!("[{host}]:{port}")
    } else {
        format!("{host}:{port}")
    }
}

/// Decides an open request on behalf of `actor` (audited `access.approve` / `access.deny`,
/// `access.decide` when the body was malformed).
pub async fn decide(
    state: &Arc<AppState>,
    actor: &Actor,
    ws: &str,
    id: &str,
    body: ApiResult<api::DecideAccess>,
) -> ApiResult<api::AccessRequest> {
    let action = match body.as_ref().map(|b| b.decision.trim()) {
        Ok("approve") => "access.approve",
        Ok("deny") => "access.deny",
        _ => "access.decide",
    };
    let mut target = format!("{ws} {}", short(id));
    let result = async {
        let body = body?;
        let r = find(state, ws, id).await?;
        target = format!("{} {} {}", r.workspace, r.id, what(&r));
        decide_unaudited(state, actor, r, body).await
    }
    .await;
    audit(&state.store, actor, action, &target, &result).await;
    result
}

/// `approve` or `deny` (the API's two decisions) as whether to approve.
fn parse_decision(decision: &str) -> ApiResult<bool> {
    match decision.trim() {
        "approve" => Ok(true),
        "deny" => Ok(false),
        other => Err(ApiError::invalid(format!(
            "unknown decision {other:?}: use approve or deny"
        ))),
    }
}

/// Refuses a denial that carries approval options (they would be silently ignored).
fn check_denial(body: &api::DecideAccess) -> ApiResult<()> {
    if body.scope.is_some() || body.ttl_seconds.is_some() || body.template.is_some() {
        return Err(ApiError::invalid(
            "scope, ttl_seconds and template go with approve only",
        ));
    }
    Ok(())
}

/// Refuses options a secret's approval cannot honour: the binding has no expiry or template.
fn check_secret_approval(body: &api::DecideAccess) -> ApiResult<()> {
    if body.scope.as_deref().is_some_and(|s| s != "always")
        || body.ttl_seconds.is_some()
        || body.template.is_some()
    {
        return Err(ApiError::invalid(
            "a secret request is approved always (the secret is bound to the host): no ttl_seconds or template",
        ));
    }
    Ok(())
}

/// The allow rule approving egress request `r` grants; refused for special-purpose addresses.
fn granted_rule(r: &AccessRequest) -> ApiResult<String> {
    let Some(port) = r.port else {
        return Err(ApiError::internal("an egress request without a port"));
    };
    // An IP rule opens even special-purpose addresses (the host's loopback, the LAN): a
    // request cannot talk an owner into that with one click.
    if let Some(why) = r
        .host
        .parse::<std::net::IpAddr>()
        .ok()
        .and_then(berth_egress::special_purpose)
    {
        return Err(ApiError::new(
            ErrorCode::AccessRefused,
            format!(
                "{} is a {why}: an access request cannot open it; add an egress rule naming it if the workspace must reach it",
                r.host
            ),
        ));
    }
    crate::egress::policy::check_rule(&format!("allow {}", host_port(&r.host, port)))
}

/// Checks the body against the request and applies the decision: approving a secret binds it
/// to the host, approving egress adds an allow rule (expiring, the workspace's own, or a
/// template's), denying only records it.
async fn decide_unaudited(
    state: &Arc<AppState>,
    actor: &Actor,
    r: AccessRequest,
    body: api::DecideAccess,
) -> ApiResult<api::AccessRequest> {
    let note = approvals::decision_reason(body.reason.clone(), berth_store::access::MAX_TEXT)?;
    let approve = parse_decision(&body.decision)?;
    if r.state != "open" {
        return Err(approvals::nothing_to_decide(
            format!("access request {}", r.id),
            &r.state,
            r.decided_by.as_deref(),
        ));
    }
    let w = lifecycle::resolve(state, r.workspace_id.as_str()).await?;
    let mut d = AccessDecision {
        state: if approve { "approved" } else { "denied" },
        scope: None,
        template: None,
        granted_rule: None,
        expires_at: None,
        decided_by: actor.label(),
        note,
    };
    if !approve {
        check_denial(&body)?;
        return store_decision(state, &w.id, &r.id, &d, false).await;
    }
    if r.kind == "secret" {
        check_secret_approval(&body)?;
        d.scope = Some("always");
        bind_secret(state, actor, &w, &r).await?;
        return store_decision(state, &w.id, &r.id, &d, false).await;
    }
    let rule = granted_rule(&r)?;
    d.granted_rule = Some(rule.clone());
    match body.scope.as_deref().unwrap_or("once") {
        "once" => {
            let ttl = once_ttl(&body)?;
            d.scope = Some("once");
            d.expires_at = Some(berth_domain::Timestamp::from(
                time::OffsetDateTime::now_utc() + Duration::from_secs(ttl),
            ));
        }
        "always" => {
            approve_always(state, &w.id, &body, rule).await?;
            d.scope = Some("always");
        }
        "template" => {
            d.template = Some(approve_into_template(state, actor, &w, &body, rule).await?);
            d.scope = Some("template");
        }
        other => {
            return Err(ApiError::invalid(format!(
                "unknown scope {other:?}: use once, always or template"
            )))
        }
    }
    store_decision(state, &w.id, &r.id, &d, true).await
}

/// Scope `once`: how long the grant lasts (the body's `ttl_seconds`, checked, or the default).
fn once_ttl(body: &api::DecideAccess) -> ApiResult<u64> {
    if body.template.is_some() {
        return Err(ApiError::invalid("template goes with scope template only"));
    }
    let ttl = body.ttl_seconds.unwrap_or(DEFAULT_TTL_SECONDS);
    if ttl == 0 || ttl > MAX_TTL_SECONDS {
        return Err(ApiError::invalid(format!(
            "ttl_seconds must be 1 to {MAX_TTL_SECONDS}"
        )));
    }
    Ok(ttl)
}

/// Scope `always`: puts `rule` first among the workspace's own egress rules (once).
async fn approve_always(
    state: &AppState,
    ws: &WorkspaceId,
    body: &api::DecideAccess,
    rule: String,
) -> ApiResult<()> {
    if body.ttl_seconds.is_some() || body.template.is_some() {
        return Err(ApiError::invalid(
            "ttl_seconds goes with scope once, template with scope template",
        ));
    }
    let mut rules = state.store.egress_rules(ws).await?;
    if !rules.contains(&rule) {
        rules.insert(0, rule);
        state.store.set_egress_rules(ws, &rules).await?;
    }
    Ok(())
}

/// Scope `template`: appends `rule` to the tenant's template the body names (audited as a
/// template change) and attaches the template to the workspace; returns its name.
async fn approve_into_template(
    state: &Arc<AppState>,
    actor: &Actor,
    w: &berth_store::Workspace,
    body: &api::DecideAccess,
    rule: String,
) -> ApiResult<String> {
    use crate::egress::policy;
    if body.ttl_seconds.is_some() {
        return Err(ApiError::invalid("ttl_seconds goes with scope once"));
    }
    let Some(name) = body.template.as_deref() else {
        return Err(ApiError::invalid("scope template needs a template"));
    };
    let name = policy::template_name(name)?;
    let tenant = w.tenant.as_str();
    let Some(t) = state.store.egress_template(tenant, name.as_str()).await? else {
        return Err(policy::unknown_template(tenant, name.as_str()));
    };
    let mut rules = t.rules.clone();
    if !rules.contains(&rule) {
        rules.push(rule);
    }
    let spec = policy::TemplateSpec {
        description: t.description.clone(),
        rules,
    };
    policy::set_template(state, actor, tenant, name.as_str(), Ok(spec)).await?;
    // The workspace gets the template's rules even if it did not attach it yet.
    policy::attach_to(state, w, &name).await?;
    Ok(name.to_string())
}

/// Stores the decision and (`refresh`) recomputes the workspace's running policy.
async fn store_decision(
    state: &AppState,
    ws: &WorkspaceId,
    id: &str,
    d: &AccessDecision,
    refresh: bool,
) -> ApiResult<api::AccessRequest> {
    if !state.store.decide_access(id, d).await? {
        return Err(ApiError::new(
            ErrorCode::InvalidState,
            format!("access request {id} was decided meanwhile"),
        ));
    }
    if refresh {
        crate::egress::refresh(state, std::slice::from_ref(ws)).await;
    }
    let r = state
        .store
        .access_request(ws, id)
        .await?
        .ok_or_else(|| ApiError::internal("the decided request vanished from the store"))?;
    Ok(to_api(&r))
}

/// Binds the tenant's secret to the requested host (placeholder delivery, swapped by the
/// proxy at once), keeping its other hosts.
async fn bind_secret(
    state: &Arc<AppState>,
    actor: &Actor,
    w: &berth_store::Workspace,
    r: &AccessRequest,
) -> ApiResult<()> {
    let Some(name) = r.secret.clone() else {
        return Err(ApiError::internal("a secret request without a secret"));
    };
    let uses = state.store.secret_uses(Some(&w.id)).await?;
    let current = uses.iter().find(|u| u.name == name);
    if current.is_some_and(|u| u.delivery != berth_domain::SecretDelivery::Placeholder) {
        return Err(ApiError::new(
            ErrorCode::Conflict,
            format!(
                "workspace {} receives secret {name} as its value already",
                w.qualified_name()
            ),
        ));
    }
    let mut hosts = current.map(|u| u.hosts.clone()).unwrap_or_default();
    if !hosts.contains(&r.host) {
        hosts.push(r.host.clone());
    }
    let req = api::UpdateWorkspace {
        secrets: Some(vec![api::UseSecret {
            name,
            delivery: Some("placeholder".into()),
            hosts,
            headers: current.map(|u| u.headers.clone()).unwrap_or_default(),
        }]),
        ..Default::default()
    };
    lifecycle::update_workspace(state, actor, w.id.as_str(), Ok(req)).await?;
    Ok(())
}

/// Adds a comment by `actor` (audited `access.comment`).
pub async fn comment(
    state: &AppState,
    actor: &Actor,
    ws: &str,
    id: &str,
    body: ApiResult<api::AccessComment>,
) -> ApiResult<api::AccessRequest> {
    let mut target = format!("{ws} {}", short(id));
    let result = async {
        let body = body?;
        let text = body.text.trim();
        if text.is_empty() || text.len() > berth_store::access::MAX_TEXT {
            return Err(ApiError::invalid(format!(
                "a comment is 1 to {} bytes",
                berth_store::access::MAX_TEXT
            )));
        }
        let r = find(state, ws, id).await?;
        target = format!("{} {} {}", r.workspace, r.id, what(&r));
        if !state
            .store
            .add_access_comment(&r.id, &actor.label(), text)
            .await?
        {
            return Err(ApiError::new(
                ErrorCode::Conflict,
                format!(
                    "access request {} has {} comments, the most it takes",
                    r.id,
                    berth_store::access::MAX_COMMENTS
                ),
            ));
        }
        let r = state
            .store
            .access_request(&r.workspace_id, &r.id)
            .await?
            .ok_or_else(|| ApiError::internal("the request vanished from the store"))?;
        Ok(to_api(&r))
    }
    .await;
    audit(&state.store, actor, "access.comment", &target, &result).await;
    result
}

/// Marks the grants "once" that expired by now and recomputes their workspaces' policies.
pub async fn sweep(state: &AppState) {
    match state
        .store
        .expire_access_grants(&berth_domain::Timestamp::now())
        .await
    {
        Ok(ws) if !ws.is_empty() => crate::egress::refresh(state, &ws).await,
        Ok(_) => {}
        Err(e) => tracing::error!(error = %e, "cannot expire access grants"),
    }
}

/// Runs [`sweep`] every second. (The effective policy also leaves out grants past their expiry
/// whenever it is computed, so an expired grant never comes back.)
pub fn spawn_sweeper(state: Arc<AppState>) -> tokio::task::JoinHandle<()> {
    tokio::spawn(async move {
        let mut tick = tokio::time::interval(Duration::from_secs(1));
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tick.tick().await;
            sweep(&state).await;
        }
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ws(s: &str) -> WorkspaceId {
        WorkspaceId::from_stored(s.to_owned())
    }

    fn attempt(host: &str) -> Attempt {
        Attempt {
            host: host.into(),
            port: 443,
            method: None,
            path: None,
        }
    }

    #[test]
    fn sightings_coalesce_and_are_capped() {
        let s = Sightings::default();
        let (a, b) = (ws("ws_a"), ws("ws_b"));
        for _ in 0..10_000 {
            s.push(&a, &attempt("same.test"), None);
        }
        for i in 0..10_000 {
            s.push(&a, &attempt(&format!("h{i}.test")), None);
        }
        assert_eq!(s.waiting(&a), PER_WORKSPACE);
        s.push(&b, &attempt("quiet.test"), None);
        assert_eq!(s.waiting(&b), 1);
        let taken = s.take();
        let same = &taken[&a][&("same.test".to_string(), 443)];
        assert_eq!(same.count, 10_000);
        assert_eq!(s.waiting(&a), 0);
    }

    #[test]
    fn explicit_requests_are_checked() {
        let ok: ExplicitRequest =
            serde_json::from_str(r#"{"kind":"egress","host":"Example.COM.","reason":"docs"}"#)
                .unwrap();
        let s = sighting(ok).unwrap();
        assert_eq!(
            s.target,
            AccessTarget::Egress {
                host: "example.com".into(),
                port: 443
            }
        );
        for bad in [
            r#"{"kind":"egress","host":"a b"}"#,
            r#"{"kind":"egress","host":"x.test","port":0}"#,
            r#"{"kind":"secret","name":"../x","host":"x.test"}"#,
            r#"{"kind":"secret","name":"git_token","host":"x.test"}"#,
        ] {
            let r: ExplicitRequest = serde_json::from_str(bad).unwrap();
            assert!(sighting(r).is_err(), "{bad}");
        }
        // The workspace is never a field of the message.
        assert!(serde_json::from_str::<ExplicitRequest>(
            r#"{"kind":"egress","host":"x.test","workspace":"ws_other"}"#
        )
        .is_err());
    }

    #[test]
    fn the_rate_limit_holds_per_workspace() {
        let r = RateLimit::default();
        let (a, b) = (ws("ws_a"), ws("ws_b"));
        let admitted = (0..100).filter(|_| r.admit(&a)).count();
        assert_eq!(admitted, EXPLICIT_PER_SECOND as usize);
        assert!(r.admit(&b));
    }
}
