//! Server-wide routes: version, whoami, doctor, audit, the base image.

use std::sync::Arc;

use axum::body::Body;
use axum::extract::State;
use axum::http::header;
use axum::response::{IntoResponse, Response};
use axum::Extension;
use berth_api as api;

use super::Query;
use crate::auth::Actor;
use crate::error::{ApiError, ApiResult};
use crate::state::AppState;

/// The server's version.
#[utoipa::path(get, path = "/api/v1/version", tag = "system",
    responses((status = 200, body = api::ServerInfo)), security(("bearer" = [])))]
pub async fn version(State(state): State<Arc<AppState>>) -> axum::Json<api::ServerInfo> {
    axum::Json(api::ServerInfo {
        version: env!("CARGO_PKG_VERSION").to_owned(),
        server_id: state.host.server_id.clone(),
        daemon_protocol: berth_daemon::PROTOCOL_VERSION,
        engine_endpoint: state.engine_endpoint(),
        image: state.default_image(),
    })
}

/// The caller: token, role and tenant.
#[utoipa::path(get, path = "/api/v1/whoami", tag = "system",
    responses((status = 200, body = api::WhoAmI),
        (status = 401, description = "`unauthorized`, `token_expired` or `token_revoked`", body = api::ErrorBody)),
    security(("bearer" = [])))]
pub async fn whoami(
    State(state): State<Arc<AppState>>,
    Extension(actor): Extension<Actor>,
) -> ApiResult<axum::Json<api::WhoAmI>> {
    let expires_at = crate::tokens::expiry(&state, &actor).await?;
    Ok(axum::Json(api::WhoAmI {
        token_id: actor.id,
        token_name: actor.name,
        role: actor.role.as_str().to_owned(),
        tenant: actor.tenant.map(String::from),
        expires_at,
        server_version: env!("CARGO_PKG_VERSION").to_owned(),
    }))
}

/// The audit log, newest first (optionally only one target's entries).
#[utoipa::path(get, path = "/api/v1/audit", tag = "system", params(api::AuditQuery),
    responses((status = 200, body = [api::AuditEntry]), (status = 400, body = api::ErrorBody)),
    security(("bearer" = [])))]
pub async fn audit(
    State(state): State<Arc<AppState>>,
    Extension(actor): Extension<Actor>,
    Query(q): Query<api::AuditQuery>,
) -> ApiResult<axum::Json<Vec<api::AuditEntry>>> {
    let limit = api::AUDIT_LIMIT.check(q.limit).map_err(ApiError::invalid)?;
    // A tenant's caller reads the rows of its tenant's objects only.
    let entries = state
        .store
        .list_audit(limit, q.target.as_deref(), actor.scope())
        .await?;
    Ok(axum::Json(
        entries
            .into_iter()
            .map(|e| api::AuditEntry {
                id: e.id,
                at: e.at,
                actor: e.record.actor,
                actor_name: e.record.actor_name,
                actor_role: e.record.actor_role,
                actor_tenant: e.record.actor_tenant,
                tenant: e.record.tenant,
                action: e.record.action,
                target: e.record.target,
                result: e.record.result,
                detail: e.record.detail,
            })
            .collect(),
    ))
}

/// Checks berth's prerequisites.
///
/// Every prerequisite checked, each failure with a one-line fix. Includes the engine smoke check
/// (`engine_smoke`): a throwaway workspace-shaped container is created, started, exec'd in and
/// removed (labelled `berth.smoke`), so a call takes about a second.
#[utoipa::path(get, path = "/api/v1/doctor", tag = "system",
    responses((status = 200, body = api::DoctorReport)), security(("bearer" = [])))]
pub async fn doctor(State(state): State<Arc<AppState>>) -> axum::Json<api::DoctorReport> {
    axum::Json(crate::doctor::run(&state).await)
}

/// The base image: present or not, and how it was built.
#[utoipa::path(get, path = "/api/v1/image", tag = "image",
    responses((status = 200, body = api::ImageStatus), (status = 503, body = api::ErrorBody)),
    security(("bearer" = [])))]
pub async fn image_status(
    State(state): State<Arc<AppState>>,
) -> ApiResult<axum::Json<api::ImageStatus>> {
    let tag = state.default_image();
    let present = state.host.runtime.image_exists(&tag).await?;
    Ok(axum::Json(api::ImageStatus { tag, present }))
}

/// Builds the base image, streaming progress as newline-delimited JSON [`api::BuildEvent`]s.
#[utoipa::path(post, path = "/api/v1/image/build", tag = "image", request_body = api::BuildImage,
    responses((status = 200, content_type = "application/x-ndjson", body = api::BuildEvent,
        description = "one BuildEvent per line: progress…, then done or error")),
    security(("bearer" = [])))]
pub async fn image_build(
    State(state): State<Arc<AppState>>,
    Extension(actor): Extension<Actor>,
    body: super::JsonBody,
) -> ApiResult<Response> {
    let req: api::BuildImage = super::parse_optional_body(&body)?;
    let (line_tx, line_rx) = tokio::sync::mpsc::unbounded_channel::<api::BuildEvent>();
    crate::images::build(state, actor, req.force, line_tx);
    let line_rx = ndjson_lines(line_rx);
    let stream = tokio_stream_from(line_rx);
    Ok((
        [(header::CONTENT_TYPE, "application/x-ndjson")],
        Body::from_stream(stream),
    )
        .into_response())
}

/// Removes unused derived images.
///
/// Removes the images berth built for templates' `[image]` extras (`localhost/berth-derived:…`)
/// that no workspace is on (in any state), none being built or used by a container;
/// `dry_run` only lists them.
#[utoipa::path(post, path = "/api/v1/image/prune", tag = "image", request_body = api::PruneImages,
    responses((status = 200, body = api::ImagePrune), (status = 400, body = api::ErrorBody),
        (status = 503, body = api::ErrorBody)),
    security(("bearer" = [])))]
pub async fn image_prune(
    State(state): State<Arc<AppState>>,
    Extension(actor): Extension<Actor>,
    body: super::JsonBody,
) -> ApiResult<axum::Json<api::ImagePrune>> {
    let req: api::PruneImages = super::parse_optional_body(&body)?;
    Ok(axum::Json(
        crate::images::prune(&state, &actor, req.dry_run).await?,
    ))
}

fn ndjson(ev: &api::BuildEvent) -> String {
    let mut s = serde_json::to_string(ev).unwrap_or_default();
    s.push('\n');
    s
}

/// The events as newline-delimited JSON, one per line.
fn ndjson_lines(
    mut events: tokio::sync::mpsc::UnboundedReceiver<api::BuildEvent>,
) -> tokio::sync::mpsc::UnboundedReceiver<String> {
    let (tx, rx) = tokio::sync::mpsc::unbounded_channel();
    tokio::spawn(async move {
        while let Some(ev) = events.recv().await {
            if tx.send(ndjson(&ev)).is_err() {
                break;
            }
        }
    });
    rx
}

fn tokio_stream_from(
    mut rx: tokio::sync::mpsc::UnboundedReceiver<String>,
) -> impl futures_util::Stream<Item = Result<String, std::convert::Infallible>> {
    futures_util::stream::poll_fn(move |cx| rx.poll_recv(cx).map(|o| o.map(Ok)))
}
