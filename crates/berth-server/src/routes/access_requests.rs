//! `/access-requests` and `/workspaces/{ws}/access-requests/…`: what workspaces were denied or
//! asked for, and the decisions on them (see `crate::access_requests`).

use std::sync::Arc;

use axum::extract::{Path, State};
use axum::Extension;
use berth_api as api;

use super::{parse_body, Query};
use crate::access_requests;
use crate::auth::Actor;
use crate::error::ApiResult;
use crate::state::AppState;

/// Access requests of the caller's tenant.
///
/// What the caller's tenant's workspaces (every tenant's for an admin) were denied by their
/// egress rules or asked for with `berth request`, newest sighting first, at most 500; each
/// with its repeat count, its decision and its comments.
#[utoipa::path(get, path = "/api/v1/access-requests", operation_id = "list_access_requests", tag = "egress",
    params(api::AccessRequestsQuery),
    responses((status = 200, body = [api::AccessRequest]), (status = 400, body = api::ErrorBody),
        (status = 404, body = api::ErrorBody)),
    security(("bearer" = [])))]
pub async fn list(
    State(state): State<Arc<AppState>>,
    Extension(actor): Extension<Actor>,
    Query(q): Query<api::AccessRequestsQuery>,
) -> ApiResult<axum::Json<Vec<api::AccessRequest>>> {
    Ok(axum::Json(access_requests::list(&state, &actor, &q).await?))
}

/// Approves or denies an open access request.
///
/// Approve `once` (default: an allow rule for the host and port that expires after
/// `ttl_seconds`, default 3600), `always` (the rule becomes the workspace's own first rule) or
/// `template` (the rule is added to the tenant's egress template `template`, which the
/// workspace then attaches); a secret request is approved by binding the secret to the host.
/// The running workspace's proxy applies it at once. Deny keeps it denied (its repeats are
/// counted on it). Audited (`access.approve` / `access.deny`) with who decided. 409
/// `invalid_state` when the request is no longer open.
#[utoipa::path(post, path = "/api/v1/workspaces/{ws}/access-requests/{req}", operation_id = "decide_access_request", tag = "egress",
    request_body = api::DecideAccess,
    params(("ws" = String, Path, description = "workspace reference"),
        ("req" = String, Path, description = "the access request's id (`ar_…`)")),
    responses((status = 200, body = api::AccessRequest), (status = 400, body = api::ErrorBody),
        (status = 404, body = api::ErrorBody), (status = 409, body = api::ErrorBody),
        (status = 422, body = api::ErrorBody)),
    security(("bearer" = [])))]
pub async fn decide(
    State(state): State<Arc<AppState>>,
    Extension(actor): Extension<Actor>,
    Path((ws, req)): Path<(String, String)>,
    body: super::JsonBody,
) -> ApiResult<axum::Json<api::AccessRequest>> {
    let body = parse_body::<api::DecideAccess>(&body);
    Ok(axum::Json(
        access_requests::decide(&state, &actor, &ws, &req, body).await?,
    ))
}

/// Comments on an access request.
///
/// Adds a comment (members may comment; deciding takes an owner), at most 50 per request.
/// Audited (`access.comment`).
#[utoipa::path(post, path = "/api/v1/workspaces/{ws}/access-requests/{req}/comments", operation_id = "comment_access_request", tag = "egress",
    request_body = api::AccessComment,
    params(("ws" = String, Path, description = "workspace reference"),
        ("req" = String, Path, description = "the access request's id (`ar_…`)")),
    responses((status = 200, body = api::AccessRequest), (status = 400, body = api::ErrorBody),
        (status = 404, body = api::ErrorBody), (status = 409, body = api::ErrorBody)),
    security(("bearer" = [])))]
pub async fn comment(
    State(state): State<Arc<AppState>>,
    Extension(actor): Extension<Actor>,
    Path((ws, req)): Path<(String, String)>,
    body: super::JsonBody,
) -> ApiResult<axum::Json<api::AccessRequest>> {
    let body = parse_body::<api::AccessComment>(&body);
    Ok(axum::Json(
        access_requests::comment(&state, &actor, &ws, &req, body).await?,
    ))
}

#[cfg(test)]
#[path = "access_requests_tests.rs"]
mod tests;
