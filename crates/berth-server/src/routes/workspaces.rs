//! `/workspaces`: create, list, show, update, start, stop, remove.

use std::sync::Arc;
use std::time::Duration;

use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::response::IntoResponse;
use axum::Extension;
use berth_api as api;
use berth_domain::WorkspaceState;
use berth_store::Workspace;

use super::{parse_body, Query};
use crate::auth::Actor;
use crate::error::ApiResult;
use crate::lifecycle;
use crate::state::AppState;

/// The API view of a stored workspace (without live data).
pub fn to_api(w: &Workspace) -> api::Workspace {
    api::Workspace {
        id: w.id.to_string(),
        name: w.name.to_string(),
        tenant: w.tenant.to_string(),
        state: w.state.as_str().to_owned(),
        image: w.image.clone(),
        limits: api::Limits {
            memory_bytes: w.limits.memory_bytes,
            cpus: w.limits.cpus(),
            pids: w.limits.pids,
        },
        network: w.network.clone(),
        volume: w.volume.clone(),
        container_id: w.container_id.clone(),
        created_at: w.created_at.clone(),
        updated_at: w.updated_at.clone(),
        last_failure: w.failure.as_ref().map(|(f, at)| api::Failure {
            reason: f.reason.as_str().to_owned(),
            message: f.message.clone(),
            at: at.clone(),
        }),
        oom_kills: w.oom_kills,
        usage: None,
        daemon: None,
        mcp_servers: w
            .mcp_servers
            .iter()
            .map(api::McpServer::from_domain)
            .collect(),
    }
}

#[derive(Debug, serde::Deserialize, utoipa::IntoParams)]
pub struct ListQuery {
    /// Only this tenant's workspaces.
    pub tenant: Option<String>,
}

/// Workspaces with their state and limits.
#[utoipa::path(get, path = "/api/v1/workspaces", operation_id = "list_workspaces", tag = "workspaces", params(ListQuery),
    responses((status = 200, body = [api::Workspace]), (status = 401, body = api::ErrorBody)),
    security(("bearer" = [])))]
pub async fn list(
    State(state): State<Arc<AppState>>,
    Extension(actor): Extension<Actor>,
    Query(q): Query<ListQuery>,
) -> ApiResult<axum::Json<Vec<api::Workspace>>> {
    let tenant = match q.tenant.as_deref() {
        Some(t) => Some(crate::error::tenant_name(t)?),
        None => None,
    };
    // A tenant's caller lists its tenant's workspaces (another tenant's filter: none).
    let tenant = match (actor.scope(), tenant) {
        (Some(own), Some(t)) if own != t.as_str() => return Ok(axum::Json(Vec::new())),
        (Some(own), _) => Some(crate::error::tenant_name(own)?),
        (None, t) => t,
    };
    let all = state.store.list_workspaces(tenant.as_ref()).await?;
    Ok(axum::Json(all.iter().map(to_api).collect()))
}

/// Creates and starts a workspace.
#[utoipa::path(post, path = "/api/v1/workspaces", operation_id = "create_workspace", tag = "workspaces", request_body = api::CreateWorkspace,
    responses((status = 201, body = api::Workspace),
        (status = 400, description = "`invalid_argument`", body = api::ErrorBody),
        (status = 403, description = "`network: bridge` asked for by a token that is not admin", body = api::ErrorBody),
        (status = 404, description = "`not_found`: a tenant other than the caller's", body = api::ErrorBody),
        (status = 409, description = "`conflict`, or `quota_exceeded`: the tenant's quota is used up (the message has the numbers)", body = api::ErrorBody),
        (status = 422, description = "`exceeds_capacity`: a memory or CPU cap above the host's; `invalid_mcp_server`: a declared MCP server the schema takes is still unusable (the message names the server and the field); `param_missing`/`template_invalid`: the template needs a parameter not given, or does not render to a valid template with these", body = api::ErrorBody),
        (status = 424, body = api::ErrorBody),
        (status = 503, body = api::ErrorBody)),
    security(("bearer" = [])))]
pub async fn create(
    State(state): State<Arc<AppState>>,
    Extension(actor): Extension<Actor>,
    body: super::JsonBody,
) -> ApiResult<impl IntoResponse> {
    let req = parse_body::<api::CreateWorkspace>(&body);
    let w = lifecycle::create_workspace(&state, &actor, req).await?;
    Ok((StatusCode::CREATED, axum::Json(to_api(&w))))
}

/// One workspace with its state, usage and daemon status.
#[utoipa::path(get, path = "/api/v1/workspaces/{ws}", operation_id = "show_workspace", tag = "workspaces",
    params(("ws" = String, Path, description = "tenant/name (URL-encoded), bare name, or id")),
    responses((status = 200, body = api::Workspace), (status = 404, body = api::ErrorBody),
        (status = 409, body = api::ErrorBody)),
    security(("bearer" = [])))]
pub async fn show(
    State(state): State<Arc<AppState>>,
    Path(ws): Path<String>,
) -> ApiResult<axum::Json<api::Workspace>> {
    let w = lifecycle::resolve(&state, &ws).await?;
    let mut out = to_api(&w);
    if w.state == WorkspaceState::Running {
        if let Some(c) = &w.container_id {
            // Podman computes one-shot stats slowly at times; the view must stay responsive.
            match tokio::time::timeout(Duration::from_secs(5), state.host.runtime.usage(c)).await {
                Ok(Ok(u)) => {
                    out.usage = Some(api::Usage {
                        memory_bytes: u.memory_bytes,
                        memory_limit_bytes: u.memory_limit_bytes,
                        cpu_percent: u.cpu_percent,
                        pids: u.pids,
                    })
                }
                Ok(Err(e)) => tracing::debug!(error = %e, "usage unavailable"),
                Err(_) => tracing::debug!("usage timed out"),
            }
        }
        out.daemon = Some(lifecycle::daemon_status(&state, &w).await);
    }
    Ok(axum::Json(out))
}

/// Starts a stopped workspace.
#[utoipa::path(post, path = "/api/v1/workspaces/{ws}/start", tag = "workspaces",
    params(("ws" = String, Path, description = "workspace reference")),
    responses((status = 200, body = api::Workspace), (status = 404, body = api::ErrorBody),
        (status = 409, body = api::ErrorBody)),
    security(("bearer" = [])))]
pub async fn start(
    State(state): State<Arc<AppState>>,
    Extension(actor): Extension<Actor>,
    Path(ws): Path<String>,
) -> ApiResult<axum::Json<api::Workspace>> {
    let w = lifecycle::start_workspace(&state, &actor, &ws).await?;
    Ok(axum::Json(to_api(&w)))
}

/// Stops a workspace (its volumes stay).
#[utoipa::path(post, path = "/api/v1/workspaces/{ws}/stop", tag = "workspaces",
    params(("ws" = String, Path, description = "workspace reference")),
    responses((status = 200, body = api::Workspace), (status = 404, body = api::ErrorBody),
        (status = 409, body = api::ErrorBody)),
    security(("bearer" = [])))]
pub async fn stop(
    State(state): State<Arc<AppState>>,
    Extension(actor): Extension<Actor>,
    Path(ws): Path<String>,
) -> ApiResult<axum::Json<api::Workspace>> {
    let w = lifecycle::stop_workspace(&state, &actor, &ws).await?;
    Ok(axum::Json(to_api(&w)))
}

/// Removes a workspace, its container and volumes.
#[utoipa::path(delete, path = "/api/v1/workspaces/{ws}", operation_id = "remove_workspace", tag = "workspaces",
    params(("ws" = String, Path, description = "workspace reference"), api::RemoveWorkspaceQuery),
    responses((status = 204), (status = 404, body = api::ErrorBody), (status = 409, body = api::ErrorBody)),
    security(("bearer" = [])))]
pub async fn remove(
    State(state): State<Arc<AppState>>,
    Extension(actor): Extension<Actor>,
    Path(ws): Path<String>,
    Query(q): Query<api::RemoveWorkspaceQuery>,
) -> ApiResult<StatusCode> {
    lifecycle::remove_workspace(&state, &actor, &ws, q.volume).await?;
    Ok(StatusCode::NO_CONTENT)
}

#[utoipa::path(patch, path = "/api/v1/workspaces/{ws}", operation_id = "update_workspace", tag = "workspaces",
    summary = "Change a workspace's limits, secret bindings, egress templates, approval policy or MCP servers",
    request_body = api::UpdateWorkspace,
    params(("ws" = String, Path, description = "workspace reference")),
    responses((status = 200, body = api::WorkspaceUpdate, description = "what changed, and what applies only at the next start"),
        (status = 400, description = "`invalid_argument`, or `invalid_mcp_server`", body = api::ErrorBody),
        (status = 404, description = "`not_found`: the workspace, a secret of the tenant, a binding to remove, or an egress template", body = api::ErrorBody),
        (status = 409, description = "`conflict` (a secret both bound and removed, or bound twice), `invalid_state` (the workspace is being created or removed), or `quota_exceeded`: the tenant's quota has no room for the larger caps", body = api::ErrorBody),
        (status = 422, description = "`exceeds_capacity`: a memory or CPU cap above the host's", body = api::ErrorBody),
        (status = 503, body = api::ErrorBody)),
    security(("bearer" = [])))]
pub async fn update(
    State(state): State<Arc<AppState>>,
    Extension(actor): Extension<Actor>,
    Path(ws): Path<String>,
    body: super::JsonBody,
) -> ApiResult<axum::Json<api::WorkspaceUpdate>> {
    let req = parse_body::<api::UpdateWorkspace>(&body);
    let u = lifecycle::update_workspace(&state, &actor, &ws, req).await?;
    Ok(axum::Json(api::WorkspaceUpdate {
        workspace: to_api(&u.workspace),
        changed: u.changed,
        pending_restart: u.pending_restart,
        live_error: u.live_error,
        placeholders: u.placeholders,
    }))
}
