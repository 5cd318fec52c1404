//! `/tasks/{task}/approvals` and `/inbox`: agents' permission requests and the decisions on
//! them, and everything else waiting for a person.

use std::sync::Arc;

use axum::extract::{Path, State};
use axum::Extension;
use berth_api as api;

use super::{parse_body, Query};
use crate::approvals;
use crate::auth::Actor;
use crate::error::ApiResult;
use crate::state::AppState;

/// A task's permission requests.
///
/// A task's permission requests, oldest first (`pending=true`: only those waiting for a
/// decision).
#[utoipa::path(get, path = "/api/v1/tasks/{task}/approvals", operation_id = "list_approvals", tag = "tasks",
    params(("task" = String, Path, description = "task id"), api::ApprovalsQuery),
    responses((status = 200, body = [api::Approval]), (status = 400, body = api::ErrorBody),
        (status = 404, body = api::ErrorBody)),
    security(("bearer" = [])))]
pub async fn list(
    State(state): State<Arc<AppState>>,
    Path(task): Path<String>,
    Query(q): Query<api::ApprovalsQuery>,
) -> ApiResult<axum::Json<Vec<api::Approval>>> {
    Ok(axum::Json(
        approvals::list(&state, &task, q.pending.unwrap_or(false)).await?,
    ))
}

/// Approves or denies a pending permission request.
///
/// Approves or denies a pending request: the daemon tells the agent (a denial's `reason`
/// reaches it as the tool's error), the task goes back to `running` once nothing is pending,
/// and the decision is audited (`task.approve` / `task.deny`) with who decided. 409
/// `invalid_state` when the request is no longer pending (decided, timed out, or its turn
/// ended).
#[utoipa::path(post, path = "/api/v1/tasks/{task}/approvals/{req}", operation_id = "decide_approval", tag = "tasks",
    request_body = api::Decide,
    params(("task" = String, Path, description = "task id"),
        ("req" = String, Path, description = "the request's id (1 to 128 printable ASCII characters, no `/`)")),
    responses((status = 200, body = api::Approval), (status = 400, body = api::ErrorBody),
        (status = 404, body = api::ErrorBody), (status = 409, body = api::ErrorBody),
        (status = 503, body = api::ErrorBody)),
    security(("bearer" = [])))]
pub async fn decide(
    State(state): State<Arc<AppState>>,
    Extension(actor): Extension<Actor>,
    Path((task, req)): Path<(String, String)>,
    body: super::JsonBody,
) -> ApiResult<axum::Json<api::Approval>> {
    let body = parse_body::<api::Decide>(&body);
    Ok(axum::Json(
        approvals::decide(&state, &actor, &task, &req, body).await?,
    ))
}

/// Everything waiting for a decision.
///
/// Agents' pending permission requests (oldest first, at most 500) and open access requests
/// (newest sighting first, at most 500) across the caller's tenant's workspaces (every
/// tenant's for an admin).
#[utoipa::path(get, path = "/api/v1/inbox", operation_id = "inbox", tag = "tasks",
    responses((status = 200, body = api::Inbox)),
    security(("bearer" = [])))]
pub async fn inbox(
    State(state): State<Arc<AppState>>,
    Extension(actor): Extension<Actor>,
) -> ApiResult<axum::Json<api::Inbox>> {
    Ok(axum::Json(crate::inbox::inbox(&state, &actor).await?))
}
