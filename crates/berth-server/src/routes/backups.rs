//! `GET /workspaces/{ws}/backup` and `POST /backups/restore`: a workspace's home volume and
//! spec as a streamed archive, and a new workspace from one (see `crate::backup`).

use std::sync::Arc;

use axum::extract::{Path, State};
use axum::http::{header, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::Extension;
use berth_api as api;

use super::Query;
use crate::auth::Actor;
use crate::backup;
use crate::error::ApiResult;
use crate::state::AppState;

/// Downloads a backup archive of a workspace.
#[utoipa::path(get, path = "/api/v1/workspaces/{ws}/backup", tag = "workspaces",
    params(("ws" = String, Path, description = "workspace reference"), api::BackupQuery),
    responses(
        (status = 200, content_type = "application/zstd",
            description = "The archive, streamed: a zstd-compressed tar of berth-backup.json (the manifest), \
                the home volume under home/, and berth-backup-end.json. A copy that fails midway aborts \
                the response; such an archive has no end marker and is refused by restore."),
        (status = 404, body = api::ErrorBody), (status = 409, body = api::ErrorBody),
        (status = 424, body = api::ErrorBody), (status = 502, body = api::ErrorBody),
        (status = 503, body = api::ErrorBody)),
    security(("bearer" = [])))]
pub async fn backup(
    State(state): State<Arc<AppState>>,
    Extension(actor): Extension<Actor>,
    Path(ws): Path<String>,
    Query(q): Query<api::BackupQuery>,
) -> ApiResult<Response> {
    let download = backup::audited_backup(&state, &actor, &ws, q.pause).await?;
    Ok((
        [
            (header::CONTENT_TYPE, "application/zstd".to_owned()),
            (
                header::CONTENT_DISPOSITION,
                format!("attachment; filename=\"{}\"", download.file_name),
            ),
        ],
        download.body,
    )
        .into_response())
}

/// Restores a workspace from a backup archive (the request body).
#[utoipa::path(post, path = "/api/v1/backups/restore", tag = "workspaces", params(api::RestoreQuery),
    request_body(content = Vec<u8>, content_type = "application/zstd",
        description = "An archive written by GET /api/v1/workspaces/{ws}/backup, streamed"),
    responses((status = 201, body = api::Workspace, description = "the restored workspace, running"),
        (status = 400, body = api::ErrorBody, description = "the archive is corrupt, truncated or holds a refused entry"),
        (status = 404, body = api::ErrorBody, description = "a secret or egress template the archive names is missing in the tenant"),
        (status = 409, body = api::ErrorBody, description = "the workspace (or its volume) already exists"),
        (status = 422, description = "`exceeds_capacity`: the archive's memory or CPU cap is above the host's", body = api::ErrorBody),
        (status = 424, body = api::ErrorBody), (status = 502, body = api::ErrorBody),
        (status = 503, body = api::ErrorBody),
        (status = 507, body = api::ErrorBody, description = "not enough free space, or the archive exceeds restore_max_size")),
    security(("bearer" = [])))]
pub async fn restore(
    State(state): State<Arc<AppState>>,
    Extension(actor): Extension<Actor>,
    Query(q): Query<api::RestoreQuery>,
    headers: axum::http::HeaderMap,
    body: axum::body::Body,
) -> ApiResult<impl IntoResponse> {
    let checked = check_archive_type(&headers);
    let w = backup::audited_restore(&state, &actor, q, checked, body).await?;
    Ok((
        StatusCode::CREATED,
        axum::Json(super::workspaces::to_api(&w)),
    ))
}

/// The media types a restore takes: a backup archive, or bytes as such.
pub const ARCHIVE_MEDIA_TYPES: [&str; 2] = ["application/zstd", "application/octet-stream"];

/// Refuses a restore body sent as anything but an archive (415 `unsupported_media_type`).
fn check_archive_type(headers: &axum::http::HeaderMap) -> crate::error::ApiResult<()> {
    let ct = headers
        .get(axum::http::header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .unwrap_or_default();
    let essence = ct
        .split(';')
        .next()
        .unwrap_or_default()
        .trim()
        .to_ascii_lowercase();
    if ARCHIVE_MEDIA_TYPES.contains(&essence.as_str()) {
        return Ok(());
    }
    Err(crate::error::ApiError::new(
        berth_domain::ErrorCode::UnsupportedMediaType,
        format!(
            "a restore takes a backup archive sent as `Content-Type: application/zstd` (got {ct:?})"
        ),
    ))
}
