//! `/templates…`: workspace templates of a tenant (every `set` a new revision), and
//! `/workspaces/{ws}/provision`: a workspace's provisioning from its template (progress, retry,
//! upgrade; live as Server-Sent Events). Owners manage templates; members use them (create, provision); viewers read.

use std::sync::Arc;

use axum::extract::{Path, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::IntoResponse;
use axum::Extension;
use berth_api as api;

use super::{parse_body, sse, Query};
use crate::auth::Actor;
use crate::error::ApiResult;
use crate::state::AppState;
use crate::{provision, templates};

/// Workspace templates: the built-ins and the tenant's own.
#[utoipa::path(get, path = "/api/v1/templates", operation_id = "list_templates", tag = "templates", params(api::TemplateQuery),
    responses((status = 200, body = [api::WorkspaceTemplate], description = "the newest revision of each template"),
        (status = 400, body = api::ErrorBody)),
    security(("bearer" = [])))]
pub async fn list(
    State(state): State<Arc<AppState>>,
    Extension(actor): Extension<Actor>,
    Query(q): Query<api::TemplateQuery>,
) -> ApiResult<axum::Json<Vec<api::WorkspaceTemplate>>> {
    let tenant = q
        .tenant
        .as_deref()
        .map(crate::error::tenant_name)
        .transpose()?;
    // A tenant's caller lists its own tenant's templates.
    let tenant = match (actor.scope(), tenant.as_ref().map(|t| t.as_str())) {
        (Some(own), Some(t)) if own != t => return Ok(axum::Json(Vec::new())),
        (Some(own), _) => Some(own.to_owned()),
        (None, t) => t.map(str::to_owned),
    };
    let mut out = Vec::new();
    for r in templates::list(&state, tenant.as_deref()).await? {
        out.push(templates::to_api(&state, r).await?);
    }
    Ok(axum::Json(out))
}

/// One workspace template.
#[utoipa::path(get, path = "/api/v1/templates/{tenant}/{name}", operation_id = "show_template", tag = "templates",
    params(("tenant" = String, Path), ("name" = String, Path), api::TemplateRevisionQuery),
    responses((status = 200, body = api::WorkspaceTemplate), (status = 400, body = api::ErrorBody),
        (status = 404, body = api::ErrorBody, description = "no such template or revision")),
    security(("bearer" = [])))]
pub async fn show(
    State(state): State<Arc<AppState>>,
    Path((tenant, name)): Path<(String, String)>,
    Query(q): Query<api::TemplateRevisionQuery>,
) -> ApiResult<axum::Json<api::WorkspaceTemplate>> {
    let r = templates::find(&state, &tenant, &name, q.revision).await?;
    Ok(axum::Json(templates::to_api(&state, r).await?))
}

/// Creates or replaces a workspace template.
#[utoipa::path(put, path = "/api/v1/templates/{tenant}/{name}", operation_id = "set_template", tag = "templates", request_body = api::SetTemplate,
    params(("tenant" = String, Path), ("name" = String, Path)),
    responses((status = 200, body = api::WorkspaceTemplate, description = "a new revision of an existing template"),
        (status = 201, body = api::WorkspaceTemplate, description = "created (revision 1)"),
        (status = 422, body = api::ErrorBody, description = "`template_invalid`: the file is not a valid template; the message names the key path (e.g. `setup[2].timeout`) and what is wrong")),
    security(("bearer" = [])))]
pub async fn set(
    State(state): State<Arc<AppState>>,
    Extension(actor): Extension<Actor>,
    Path((tenant, name)): Path<(String, String)>,
    body: super::JsonBody,
) -> ApiResult<(StatusCode, axum::Json<api::WorkspaceTemplate>)> {
    let req = parse_body::<api::SetTemplate>(&body);
    let (r, created) = templates::set(&state, &actor, &tenant, &name, req).await?;
    let status = if created {
        StatusCode::CREATED
    } else {
        StatusCode::OK
    };
    Ok((status, axum::Json(templates::to_api(&state, r).await?)))
}

/// Removes a workspace template.
#[utoipa::path(delete, path = "/api/v1/templates/{tenant}/{name}", operation_id = "remove_template", tag = "templates",
    params(("tenant" = String, Path), ("name" = String, Path)),
    responses((status = 204, description = "removed with all its revisions (workspaces made from it keep their copy)"),
        (status = 404, body = api::ErrorBody)),
    security(("bearer" = [])))]
pub async fn remove(
    State(state): State<Arc<AppState>>,
    Extension(actor): Extension<Actor>,
    Path((tenant, name)): Path<(String, String)>,
) -> ApiResult<StatusCode> {
    templates::remove(&state, &actor, &tenant, &name).await?;
    Ok(StatusCode::NO_CONTENT)
}

/// A workspace's provisioning status (its template's setup steps).
#[utoipa::path(get, path = "/api/v1/workspaces/{ws}/provision", operation_id = "show_provision", tag = "templates",
    params(("ws" = String, Path, description = "workspace reference")),
    responses((status = 200, body = api::ProvisionStatus),
        (status = 404, body = api::ErrorBody, description = "no such workspace, or it was not made from a template")),
    security(("bearer" = [])))]
pub async fn status(
    State(state): State<Arc<AppState>>,
    Path(ws): Path<String>,
) -> ApiResult<axum::Json<api::ProvisionStatus>> {
    Ok(axum::Json(provision::status(&state, &ws).await?))
}

/// A workspace's provisioning as it happens (Server-Sent Events).
///
/// Each SSE message is `event: status`, `data: ProvisionStatus` (the whole status: step states,
/// the running step's log so far) with an increasing `id`: the current status first, then a
/// new one whenever provisioning stored progress. Resumable: with `?after=` (or the
/// `Last-Event-ID` a reconnecting browser sends) a status not newer than that id is not sent
/// again. Ends after a status that is `done` or `failed`.
#[utoipa::path(get, path = "/api/v1/workspaces/{ws}/provision/stream", operation_id = "stream_provision", tag = "templates",
    params(("ws" = String, Path, description = "workspace reference"), api::ProvisionStreamQuery),
    responses((status = 200, content_type = "text/event-stream", description = "SSE of ProvisionStatus"),
        (status = 404, body = api::ErrorBody, description = "no such workspace, or it was not made from a template")),
    security(("bearer" = [])))]
pub async fn stream(
    State(state): State<Arc<AppState>>,
    Path(ws): Path<String>,
    Query(q): Query<api::ProvisionStreamQuery>,
    headers: HeaderMap,
) -> ApiResult<impl IntoResponse> {
    // Subscribe before the first read, so nothing stored in between is missed.
    let (id, rx) = provision::subscribe(&state, &ws).await?;
    let after = provision::resume_from(&id, sse::resume_after(q.after, &headers));
    Ok(sse::follow(rx, after, move |after| {
        let (state, id) = (state.clone(), id.clone());
        async move {
            match provision::read_stream(&state, &id, after).await {
                Ok(provision::StreamRead::Status(number, status)) => {
                    Ok(sse::Read::Records(vec![Numbered { number, status }]))
                }
                Ok(provision::StreamRead::Wait) => Ok(sse::Read::Wait),
                Ok(provision::StreamRead::End) => Ok(sse::Read::End),
                Err(e) => {
                    tracing::warn!(workspace = %id, error = %e, "provisioning stream");
                    Err(())
                }
            }
        }
    }))
}

/// A provisioning status with its id, as a stream event.
struct Numbered {
    number: u64,
    status: Box<api::ProvisionStatus>,
}

impl sse::Numbered for Numbered {
    fn number(&self) -> u64 {
        self.number
    }
    fn kind(&self) -> String {
        "status".into()
    }
    fn data(&self) -> String {
        serde_json::to_string(&self.status).unwrap_or_default()
    }
}

/// Runs a workspace's provisioning again.
#[utoipa::path(post, path = "/api/v1/workspaces/{ws}/provision", operation_id = "reprovision", tag = "templates", request_body = api::Reprovision,
    params(("ws" = String, Path, description = "workspace reference")),
    responses((status = 202, body = api::ProvisionStatus, description = "provisioning resumed (retry) or restarted on the newest revision (upgrade); follow it with GET"),
        (status = 422, body = api::ErrorBody, description = "`param_missing`/`template_invalid`: an upgrade the stored parameters no longer fit"),
        (status = 404, body = api::ErrorBody),
        (status = 409, body = api::ErrorBody, description = "`provisioning`: it is running; `invalid_state`: nothing failed to retry, or the workspace is not up; `conflict`: an upgrade that remakes the container while tasks run in it")),
    security(("bearer" = [])))]
pub async fn reprovision(
    State(state): State<Arc<AppState>>,
    Extension(actor): Extension<Actor>,
    Path(ws): Path<String>,
    body: super::JsonBody,
) -> ApiResult<(StatusCode, axum::Json<api::ProvisionStatus>)> {
    let req = parse_body::<api::Reprovision>(&body);
    let s = provision::reprovision(&state, &actor, &ws, req).await?;
    Ok((StatusCode::ACCEPTED, axum::Json(s)))
}
