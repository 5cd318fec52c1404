//! `/workspaces/{ws}/egress/…`: the workspace's own egress rules (changed live), its effective
//! policy (own rules, then its templates'), and its egress log. Templates and attaching them
//! are in `egress_templates.rs`.

use std::convert::Infallible;
use std::sync::Arc;

use axum::extract::{Path, State};
use axum::response::sse::{Event, KeepAlive, Sse};
use axum::response::IntoResponse;
use axum::Extension;
use berth_api as api;
use berth_domain::ErrorCode;
use berth_store::{EgressEntry, Workspace};

use super::{parse_body, Query};
use crate::auth::{audit, Actor};
use crate::error::{ApiError, ApiResult};
use crate::lifecycle;
use crate::state::AppState;

/// A rule in its canonical form, or a 400 naming it.
pub(crate) fn check(rule: &str) -> ApiResult<String> {
    berth_egress::Rule::parse(rule)
        .map(|r| r.to_string())
        .map_err(|e| ApiError::invalid(format!("egress rule {rule:?}: {e}")))
}

/// Stores the rules and applies them to the running proxy at once.
async fn apply(state: &AppState, w: &Workspace, rules: &[String]) -> ApiResult<()> {
    state.store.set_egress_rules(w.id.as_str(), rules).await?;
    crate::egress::refresh(state, std::slice::from_ref(&w.id)).await;
    Ok(())
}

/// The workspace's effective policy, as the API shows it.
pub(crate) async fn effective_view(
    state: &AppState,
    w: &Workspace,
) -> ApiResult<api::EffectiveEgress> {
    let rules = crate::egress::effective_rules(&state.store, w).await?;
    let mut out = Vec::with_capacity(rules.len());
    let mut index = 0;
    for (i, r) in rules.iter().enumerate() {
        // Positions restart with each source.
        if i > 0 && rules[i - 1].template != r.template {
            index = 0;
        }
        out.push(api::EffectiveEgressRule {
            source: if r.template.is_some() {
                "template"
            } else {
                "workspace"
            }
            .to_owned(),
            template: r.template.clone(),
            index,
            rule: r.rule.clone(),
            label: r.label(),
        });
        index += 1;
    }
    Ok(api::EffectiveEgress {
        templates: state
            .store
            .workspace_egress_templates(w.id.as_str())
            .await?,
        rules: out,
    })
}

#[utoipa::path(get, path = "/api/v1/workspaces/{ws}/egress/effective", tag = "egress",
    params(("ws" = String, Path, description = "workspace reference")),
    responses((status = 200, body = api::EffectiveEgress), (status = 404, body = api::ErrorBody)),
    security(("bearer" = [])))]
pub async fn effective(
    State(state): State<Arc<AppState>>,
    Path(ws): Path<String>,
) -> ApiResult<axum::Json<api::EffectiveEgress>> {
    let w = lifecycle::resolve(&state, &ws).await?;
    Ok(axum::Json(effective_view(&state, &w).await?))
}

#[utoipa::path(get, path = "/api/v1/workspaces/{ws}/egress/rules", tag = "egress",
    params(("ws" = String, Path, description = "workspace reference")),
    responses((status = 200, body = api::EgressRules), (status = 404, body = api::ErrorBody)),
    security(("bearer" = [])))]
pub async fn rules(
    State(state): State<Arc<AppState>>,
    Path(ws): Path<String>,
) -> ApiResult<axum::Json<api::EgressRules>> {
    let w = lifecycle::resolve(&state, &ws).await?;
    Ok(axum::Json(api::EgressRules {
        rules: state.store.egress_rules(w.id.as_str()).await?,
    }))
}

#[utoipa::path(put, path = "/api/v1/workspaces/{ws}/egress/rules", tag = "egress", request_body = api::EgressRules,
    params(("ws" = String, Path, description = "workspace reference")),
    responses((status = 200, body = api::EgressRules), (status = 400, body = api::ErrorBody)),
    security(("bearer" = [])))]
pub async fn set_rules(
    State(state): State<Arc<AppState>>,
    Extension(actor): Extension<Actor>,
    Path(ws): Path<String>,
    body: super::JsonBody,
) -> ApiResult<axum::Json<api::EgressRules>> {
    let result = async {
        let req: api::EgressRules = parse_body(&body)?;
        let w = lifecycle::resolve(&state, &ws).await?;
        let rules = req
            .rules
            .iter()
            .map(|r| check(r))
            .collect::<ApiResult<Vec<_>>>()?;
        apply(&state, &w, &rules).await?;
        Ok((w.qualified_name(), rules))
    }
    .await;
    let target = result.as_ref().map(|(t, _)| t.clone()).unwrap_or(ws);
    audit(&state.store, &actor, "egress.set_rules", &target, &result).await;
    Ok(axum::Json(api::EgressRules { rules: result?.1 }))
}

/// Where `position` puts a new rule among `len` rules: 0 to `len` (appending); past that is
/// refused rather than quietly appended.
fn insert_position(position: Option<u32>, len: usize) -> ApiResult<usize> {
    let at = position.unwrap_or(0);
    match usize::try_from(at) {
        Ok(at) if at <= len => Ok(at),
        _ => Err(ApiError::invalid(format!(
            "position {at} is past the end: the workspace has {len} rules"
        ))),
    }
}

#[utoipa::path(post, path = "/api/v1/workspaces/{ws}/egress/rules", tag = "egress", request_body = api::AddEgressRule,
    params(("ws" = String, Path, description = "workspace reference")),
    responses((status = 200, body = api::EgressRules), (status = 400, body = api::ErrorBody)),
    security(("bearer" = [])))]
pub async fn add_rule(
    State(state): State<Arc<AppState>>,
    Extension(actor): Extension<Actor>,
    Path(ws): Path<String>,
    body: super::JsonBody,
) -> ApiResult<axum::Json<api::EgressRules>> {
    let result = async {
        let req: api::AddEgressRule = parse_body(&body)?;
        let rule = check(&req.rule)?;
        let w = lifecycle::resolve(&state, &ws).await?;
        let mut rules = state.store.egress_rules(w.id.as_str()).await?;
        let at = insert_position(req.position, rules.len())?;
        rules.insert(at, rule.clone());
        apply(&state, &w, &rules).await?;
        Ok((format!("{} {rule}", w.qualified_name()), rules))
    }
    .await;
    let target = result.as_ref().map(|(t, _)| t.clone()).unwrap_or(ws);
    audit(&state.store, &actor, "egress.add_rule", &target, &result).await;
    Ok(axum::Json(api::EgressRules { rules: result?.1 }))
}

#[utoipa::path(delete, path = "/api/v1/workspaces/{ws}/egress/rules/{index}", tag = "egress",
    params(("ws" = String, Path, description = "workspace reference"), ("index" = usize, Path, description = "0-based position")),
    responses((status = 200, body = api::EgressRules), (status = 404, body = api::ErrorBody)),
    security(("bearer" = [])))]
pub async fn remove_rule(
    State(state): State<Arc<AppState>>,
    Extension(actor): Extension<Actor>,
    Path((ws, index)): Path<(String, String)>,
) -> ApiResult<axum::Json<api::EgressRules>> {
    let result = async {
        let w = lifecycle::resolve(&state, &ws).await?;
        let mut rules = state.store.egress_rules(w.id.as_str()).await?;
        let i: usize = index
            .parse()
            .map_err(|_| ApiError::invalid(format!("rule index {index:?} is not a number")))?;
        if i >= rules.len() {
            return Err(ApiError::not_found(format!(
                "workspace {} has no egress rule {i} ({} rules)",
                w.qualified_name(),
                rules.len()
            )));
        }
        let gone = rules.remove(i);
        apply(&state, &w, &rules).await?;
        Ok((format!("{} {gone}", w.qualified_name()), rules))
    }
    .await;
    let target = result.as_ref().map(|(t, _)| t.clone()).unwrap_or(ws);
    audit(&state.store, &actor, "egress.remove_rule", &target, &result).await;
    Ok(axum::Json(api::EgressRules { rules: result?.1 }))
}

fn entry_to_api(e: EgressEntry) -> api::EgressLogEntry {
    let r = e.record;
    api::EgressLogEntry {
        id: e.id,
        at: r.at,
        task: r.task_id,
        method: r.method,
        host: r.host,
        port: r.port,
        path: r.path,
        decision: r.decision,
        rule: r.rule,
        reason: r.reason,
        bytes_up: r.bytes_up,
        bytes_down: r.bytes_down,
        intercepted: r.intercepted,
    }
}

#[utoipa::path(get, path = "/api/v1/workspaces/{ws}/egress/log", tag = "egress",
    params(("ws" = String, Path, description = "workspace reference"), api::EgressLogQuery),
    responses((status = 200, body = [api::EgressLogEntry]), (status = 404, body = api::ErrorBody)),
    security(("bearer" = [])))]
pub async fn log(
    State(state): State<Arc<AppState>>,
    Path(ws): Path<String>,
    Query(q): Query<api::EgressLogQuery>,
) -> ApiResult<axum::Json<Vec<api::EgressLogEntry>>> {
    let limit = api::EGRESS_LOG_LIMIT
        .check(q.limit)
        .map_err(ApiError::invalid)?;
    let w = lifecycle::resolve(&state, &ws).await?;
    let entries = state
        .store
        .egress_log(w.id.as_str(), q.after.unwrap_or(0), limit)
        .await?;
    Ok(axum::Json(entries.into_iter().map(entry_to_api).collect()))
}

/// The egress log as it grows (Server-Sent Events, `id:` = entry id, resumable with `after=`).
#[utoipa::path(get, path = "/api/v1/workspaces/{ws}/egress/log/stream", tag = "egress",
    params(("ws" = String, Path, description = "workspace reference"), api::EgressLogQuery),
    responses((status = 200, content_type = "text/event-stream", description = "SSE of EgressLogEntry")),
    security(("bearer" = [])))]
pub async fn log_stream(
    State(state): State<Arc<AppState>>,
    Path(ws): Path<String>,
    Query(q): Query<api::EgressLogQuery>,
) -> ApiResult<impl IntoResponse> {
    let w = lifecycle::resolve(&state, &ws).await?;
    let Some(egress) = state.egress.clone() else {
        return Err(ApiError::new(
            ErrorCode::Internal,
            "the egress proxy is not running",
        ));
    };
    let rx = egress.subscribe(&w.id);
    let init = (
        state,
        w.id.to_string(),
        q.after.unwrap_or(0),
        rx,
        std::collections::VecDeque::new(),
    );
    let s = futures_util::stream::unfold(
        init,
        |(state, ws, mut after, mut rx, mut pending)| async move {
            loop {
                if let Some(e) = pending.pop_front() {
                    let e: api::EgressLogEntry = e;
                    after = e.id;
                    let ev = Event::default()
                        .id(e.id.to_string())
                        .event(e.decision.clone())
                        .data(serde_json::to_string(&e).unwrap_or_default());
                    return Some((Ok::<_, Infallible>(ev), (state, ws, after, rx, pending)));
                }
                rx.borrow_and_update();
                match state.store.egress_log(&ws, after, 1000).await {
                    Ok(batch) if !batch.is_empty() => {
                        pending.extend(batch.into_iter().map(entry_to_api));
                        continue;
                    }
                    Ok(_) => {}
                    Err(_) => return None,
                }
                if rx.changed().await.is_err() {
                    return None;
                }
            }
        },
    );
    Ok(Sse::new(s).keep_alive(KeepAlive::default()))
}
