//! `/workspaces/{ws}/egress/…`: the workspace's own egress rules (changed live), its effective
//! policy (own rules, then its templates'), and its egress log. Templates and attaching them
//! are in `egress_templates.rs`.

use std::sync::Arc;

use axum::extract::{Path, State};
use axum::http::HeaderMap;
use axum::response::IntoResponse;
use axum::Extension;
use berth_api as api;
use berth_store::{EgressEntry, Workspace};

use super::sse::{self, Read};
use super::{parse_body, Query};
use crate::auth::Actor;
use crate::egress::policy;
use crate::error::{ApiError, ApiResult};
use crate::lifecycle;
use crate::state::AppState;

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
        if i > 0
            && (rules[i - 1].template != r.template
                || rules[i - 1].grant.is_some() != r.grant.is_some())
        {
            index = 0;
        }
        out.push(api::EffectiveEgressRule {
            source: if r.template.is_some() {
                "template"
            } else if r.grant.is_some() {
                "access"
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
        templates: state.store.workspace_egress_templates(&w.id).await?,
        rules: out,
    })
}

/// A workspace's effective egress rules, in evaluation order with their sources.
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

/// A workspace's own egress rules.
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
        rules: state.store.egress_rules(&w.id).await?,
    }))
}

/// Replaces a workspace's egress rules.
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
    let rules = parse_body::<api::EgressRules>(&body).map(|r| r.rules);
    let rules = policy::set_rules(&state, &actor, &ws, rules).await?;
    Ok(axum::Json(api::EgressRules { rules }))
}

/// Inserts an egress rule into a workspace's rules.
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
    let req = parse_body::<api::AddEgressRule>(&body).map(|r| (r.rule, r.position));
    let rules = policy::add_rule(&state, &actor, &ws, req).await?;
    Ok(axum::Json(api::EgressRules { rules }))
}

/// Removes one of a workspace's egress rules.
#[utoipa::path(delete, path = "/api/v1/workspaces/{ws}/egress/rules/{index}", tag = "egress",
    params(("ws" = String, Path, description = "workspace reference"), ("index" = usize, Path, description = "0-based position")),
    responses((status = 200, body = api::EgressRules), (status = 404, body = api::ErrorBody)),
    security(("bearer" = [])))]
pub async fn remove_rule(
    State(state): State<Arc<AppState>>,
    Extension(actor): Extension<Actor>,
    Path((ws, index)): Path<(String, String)>,
) -> ApiResult<axum::Json<api::EgressRules>> {
    let rules = policy::remove_rule(&state, &actor, &ws, &index).await?;
    Ok(axum::Json(api::EgressRules { rules }))
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

/// A workspace's egress log: allowed and denied connections, newest first.
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
        .egress_log(&w.id, q.after.unwrap_or(0), limit)
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
    headers: HeaderMap,
) -> ApiResult<impl IntoResponse> {
    let w = lifecycle::resolve(&state, &ws).await?;
    let rx = state.egress.subscribe(&w.id);
    let after = sse::resume_after(q.after.map(|a| u64::try_from(a).unwrap_or(0)), &headers);
    let ws = w.id.clone();
    Ok(sse::follow(rx, after, move |after| {
        let (state, ws) = (state.clone(), ws.clone());
        async move {
            match state
                .store
                .egress_log(
                    &ws,
                    i64::try_from(after).unwrap_or(i64::MAX),
                    sse::BATCH.into(),
                )
                .await
            {
                Ok(batch) => Ok(Read::Records(batch.into_iter().map(entry_to_api).collect())),
                Err(e) => {
                    tracing::error!(workspace = %ws, error = %e, "reading the egress log");
                    Err(())
                }
            }
        }
    }))
}

impl sse::Numbered for api::EgressLogEntry {
    fn number(&self) -> u64 {
        u64::try_from(self.id).unwrap_or(0)
    }
    fn kind(&self) -> String {
        self.decision.clone()
    }
    fn data(&self) -> String {
        serde_json::to_string(self).unwrap_or_default()
    }
}
