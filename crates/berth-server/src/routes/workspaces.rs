//! `/workspaces`: create, list, show, start, stop, remove.

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
use crate::auth::{audit, Actor};
use crate::error::{ApiError, ApiResult};
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
    }
}

#[derive(Debug, serde::Deserialize, utoipa::IntoParams)]
pub struct ListQuery {
    /// Only this tenant's workspaces.
    pub tenant: Option<String>,
}

#[utoipa::path(get, path = "/api/v1/workspaces", operation_id = "list_workspaces", tag = "workspaces", params(ListQuery),
    responses((status = 200, body = [api::Workspace]), (status = 401, body = api::ErrorBody)),
    security(("bearer" = [])))]
pub async fn list(
    State(state): State<Arc<AppState>>,
    Query(q): Query<ListQuery>,
) -> ApiResult<axum::Json<Vec<api::Workspace>>> {
    let tenant = match q.tenant.as_deref() {
        Some(t) => Some(
            berth_domain::Name::parse(t).map_err(|e| ApiError::invalid(format!("tenant: {e}")))?,
        ),
        None => None,
    };
    let all = state.store.list_workspaces(tenant.as_ref()).await?;
    Ok(axum::Json(all.iter().map(to_api).collect()))
}

#[utoipa::path(post, path = "/api/v1/workspaces", operation_id = "create_workspace", tag = "workspaces", request_body = api::CreateWorkspace,
    responses((status = 201, body = api::Workspace), (status = 400, body = api::ErrorBody),
        (status = 403, description = "`network: bridge` asked for by a token that is not admin", body = api::ErrorBody),
        (status = 409, body = api::ErrorBody),
        (status = 422, description = "`exceeds_capacity`: a memory or CPU cap above the host's", body = api::ErrorBody),
        (status = 424, body = api::ErrorBody),
        (status = 503, body = api::ErrorBody)),
    security(("bearer" = [])))]
pub async fn create(
    State(state): State<Arc<AppState>>,
    Extension(actor): Extension<Actor>,
    body: super::JsonBody,
) -> ApiResult<impl IntoResponse> {
    let req = parse_body::<api::CreateWorkspace>(&body);
    let target = match &req {
        Ok(r) => match &r.tenant {
            Some(t) if !r.name.contains('/') => format!("{t}/{}", r.name),
            _ if r.name.contains('/') => r.name.clone(),
            _ => format!("default/{}", r.name),
        },
        Err(_) => "(invalid request)".to_owned(),
    };
    let req = req.and_then(|r| {
        check_plain_name(&r.name)?;
        lifecycle::check_network_allowed(&actor.role, r.network.as_deref())?;
        Ok(r)
    });
    let result = match req.and_then(|r| lifecycle::CreateSpec::from_request(&state, &r)) {
        Ok(spec) => lifecycle::create(&state, spec).await,
        Err(e) => Err(e),
    };
    audit(&state.store, &actor, "workspace.create", &target, &result).await;
    let w = result?;
    // Secrets delivered for real (env/file) are exposed to the workspace: say so in the log.
    for u in state.store.secret_uses(Some(w.id.as_str())).await? {
        if u.delivery != "placeholder" {
            let rec = berth_store::AuditRecord {
                actor: actor.token_id.clone(),
                action: "secret.expose".into(),
                target: format!("{}/{}", w.tenant, u.name),
                result: "ok".into(),
                detail: Some(format!(
                    "delivered as {} into {}",
                    u.delivery,
                    w.qualified_name()
                )),
            };
            state.store.append_audit(&rec).await?;
        }
    }
    crate::egress::activate(&state, &w.id).await;
    Ok((StatusCode::CREATED, axum::Json(to_api(&w))))
}

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
            match tokio::time::timeout(Duration::from_secs(5), state.runtime.usage(c)).await {
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
        out.daemon = Some(daemon_status(&state, &w).await);
    }
    Ok(axum::Json(out))
}

/// `name` is the workspace's own name; the tenant goes in `tenant` (a `tenant/name` here would
/// quietly create the workspace in another tenant than the field says).
fn check_plain_name(name: &str) -> ApiResult<()> {
    berth_domain::Name::parse(name)
        .map(|_| ())
        .map_err(|e| ApiError::invalid(format!("name: {e} (give the tenant in `tenant`)")))
}

pub async fn daemon_status(state: &AppState, w: &Workspace) -> api::DaemonStatus {
    let client = state.daemon(&w.id);
    match tokio::time::timeout(Duration::from_secs(3), client.hello()).await {
        Ok(Ok(info)) => api::DaemonStatus {
            reachable: true,
            protocol: Some(info.protocol),
            version: Some(info.version),
            outdated: false,
            message: None,
        },
        Ok(Err(berth_daemon::DaemonError::Incompatible { daemon, client })) => api::DaemonStatus {
            reachable: true,
            protocol: Some(daemon),
            version: None,
            outdated: daemon < client,
            message: Some(
                ApiError::from(berth_daemon::DaemonError::Incompatible { daemon, client }).message,
            ),
        },
        Ok(Err(e)) => api::DaemonStatus {
            reachable: false,
            protocol: None,
            version: None,
            outdated: false,
            message: Some(e.to_string()),
        },
        Err(_) => api::DaemonStatus {
            reachable: false,
            protocol: None,
            version: None,
            outdated: false,
            message: Some("the daemon did not answer within 3s".into()),
        },
    }
}

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
    let result = lifecycle::start(&state, &ws).await;
    audit(
        &state.store,
        &actor,
        "workspace.start",
        &target_of(&result, &ws),
        &result,
    )
    .await;
    let w = result?;
    crate::egress::activate(&state, &w.id).await;
    Ok(axum::Json(to_api(&w)))
}

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
    let result = lifecycle::stop(&state, &ws).await;
    audit(
        &state.store,
        &actor,
        "workspace.stop",
        &target_of(&result, &ws),
        &result,
    )
    .await;
    Ok(axum::Json(to_api(&result?)))
}

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
    let result = lifecycle::remove(&state, &ws, q.volume).await;
    let action = if q.volume {
        "workspace.remove_with_volume"
    } else {
        "workspace.remove"
    };
    audit(
        &state.store,
        &actor,
        action,
        &target_of(&result, &ws),
        &result,
    )
    .await;
    crate::egress::deactivate(&state, &result?.id);
    Ok(StatusCode::NO_CONTENT)
}

/// The audit target: `tenant/name` when known, else what the caller typed.
pub fn target_of<E>(result: &Result<Workspace, E>, raw: &str) -> String {
    match result {
        Ok(w) => w.qualified_name(),
        Err(_) => raw.to_owned(),
    }
}
