//! `/egress/templates…`: egress templates — named, ordered rule lists owned by a tenant, next to
//! the read-only built-ins every tenant may use — and `/workspaces/{ws}/egress/templates…`:
//! attaching them to workspaces. Every change takes effect at once in the running workspaces
//! concerned (their policies are recomputed; see `crate::egress`).

use std::sync::Arc;

use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::Extension;
use berth_api as api;
use berth_domain::Name;
use berth_egress::BUILTIN_TEMPLATES;
use berth_store::{TemplateUser, Workspace};

use super::{parse_body, Query};
use crate::auth::Actor;
use crate::egress::policy::{self, TemplateSpec};
use crate::egress::{find_template, Template};
use crate::error::ApiResult;
use crate::lifecycle;
use crate::state::AppState;

/// The API view. `tenant`: whose workspaces count as users of a built-in (`None`: all).
async fn to_api(
    state: &AppState,
    t: Template,
    tenant: Option<&str>,
) -> ApiResult<api::EgressTemplate> {
    let names = |users: Vec<TemplateUser>| users.into_iter().map(|u| u.workspace).collect();
    Ok(match t {
        Template::Stored(t) => api::EgressTemplate {
            used_by: names(
                state
                    .store
                    .egress_template_users(Some(&t.tenant), &t.name)
                    .await?,
            ),
            name: t.name,
            tenant: Some(t.tenant),
            builtin: false,
            description: t.description,
            rules: t.rules,
            created_at: Some(t.created_at),
            updated_at: Some(t.updated_at),
        },
        Template::Builtin(b) => api::EgressTemplate {
            used_by: names(state.store.egress_template_users(tenant, b.name).await?),
            name: b.name.to_owned(),
            tenant: None,
            builtin: true,
            description: Some(b.description.to_owned()),
            rules: b.rules.iter().map(|r| r.to_string()).collect(),
            created_at: None,
            updated_at: None,
        },
    })
}

/// Egress templates: the built-ins and the tenant's own.
#[utoipa::path(get, path = "/api/v1/egress/templates", operation_id = "list_egress_templates", tag = "egress", params(api::EgressTemplateQuery),
    responses((status = 200, body = [api::EgressTemplate]), (status = 400, body = api::ErrorBody)),
    security(("bearer" = [])))]
pub async fn list(
    State(state): State<Arc<AppState>>,
    Extension(actor): Extension<Actor>,
    Query(q): Query<api::EgressTemplateQuery>,
) -> ApiResult<axum::Json<Vec<api::EgressTemplate>>> {
    let tenant = q.tenant.as_deref().map(policy::tenant_name).transpose()?;
    let tenant = tenant.as_ref().map(Name::as_str);
    // A tenant's caller sees the built-ins and its tenant's templates.
    let tenant = match (actor.scope(), tenant) {
        (Some(own), Some(t)) if own != t => return Ok(axum::Json(Vec::new())),
        (Some(own), _) => Some(own),
        (None, t) => t,
    };
    let mut out = Vec::new();
    for b in BUILTIN_TEMPLATES {
        out.push(to_api(&state, Template::Builtin(b), tenant).await?);
    }
    for t in state.store.list_egress_templates(tenant).await? {
        out.push(to_api(&state, Template::Stored(t), tenant).await?);
    }
    Ok(axum::Json(out))
}

/// Creates a tenant's egress template.
#[utoipa::path(post, path = "/api/v1/egress/templates", operation_id = "create_egress_template", tag = "egress", request_body = api::CreateEgressTemplate,
    responses((status = 201, body = api::EgressTemplate), (status = 400, body = api::ErrorBody),
        (status = 409, body = api::ErrorBody)),
    security(("bearer" = [])))]
pub async fn create(
    State(state): State<Arc<AppState>>,
    Extension(actor): Extension<Actor>,
    body: super::JsonBody,
) -> ApiResult<(StatusCode, axum::Json<api::EgressTemplate>)> {
    // A template of another tenant than the caller's: as if that tenant did not exist.
    let req = parse_body::<api::CreateEgressTemplate>(&body).and_then(|r| {
        actor.check_tenant(&r.tenant, || format!("tenant {}", r.tenant))?;
        Ok(r)
    });
    let target = match &req {
        Ok(r) => format!("{}/{}", r.tenant, r.name),
        Err(_) => "(invalid request)".to_owned(),
    };
    let req = req.map(|r| {
        let spec = TemplateSpec {
            description: r.description,
            rules: r.rules,
        };
        (r.tenant, r.name, spec)
    });
    let t = policy::create_template(&state, &actor, &target, req).await?;
    Ok((
        StatusCode::CREATED,
        axum::Json(to_api(&state, Template::Stored(t), None).await?),
    ))
}

/// One egress template with its rules and the workspaces using it.
#[utoipa::path(get, path = "/api/v1/egress/templates/{tenant}/{name}", operation_id = "show_egress_template", tag = "egress",
    params(("tenant" = String, Path), ("name" = String, Path, description = "the tenant's template, or a built-in")),
    responses((status = 200, body = api::EgressTemplate), (status = 404, body = api::ErrorBody)),
    security(("bearer" = [])))]
pub async fn show(
    State(state): State<Arc<AppState>>,
    Path((tenant, name)): Path<(String, String)>,
) -> ApiResult<axum::Json<api::EgressTemplate>> {
    let t = policy::template(&state, &tenant, &name).await?;
    Ok(axum::Json(to_api(&state, t, Some(&tenant)).await?))
}

/// Creates or replaces an egress template's rules.
#[utoipa::path(put, path = "/api/v1/egress/templates/{tenant}/{name}", operation_id = "set_egress_template", tag = "egress", request_body = api::SetEgressTemplate,
    params(("tenant" = String, Path), ("name" = String, Path)),
    responses((status = 200, body = api::EgressTemplate, description = "replaced"),
        (status = 201, body = api::EgressTemplate, description = "created"),
        (status = 400, body = api::ErrorBody), (status = 409, body = api::ErrorBody)),
    security(("bearer" = [])))]
pub async fn set(
    State(state): State<Arc<AppState>>,
    Extension(actor): Extension<Actor>,
    Path((tenant, name)): Path<(String, String)>,
    body: super::JsonBody,
) -> ApiResult<(StatusCode, axum::Json<api::EgressTemplate>)> {
    let spec = parse_body::<api::SetEgressTemplate>(&body).map(|r| TemplateSpec {
        description: r.description,
        rules: r.rules,
    });
    let (t, created) = policy::set_template(&state, &actor, &tenant, &name, spec).await?;
    let status = if created {
        StatusCode::CREATED
    } else {
        StatusCode::OK
    };
    Ok((
        status,
        axum::Json(to_api(&state, Template::Stored(t), None).await?),
    ))
}

/// Removes an egress template (with `force`, detached from its workspaces first).
#[utoipa::path(delete, path = "/api/v1/egress/templates/{tenant}/{name}", operation_id = "remove_egress_template", tag = "egress",
    params(("tenant" = String, Path), ("name" = String, Path), api::RemoveEgressTemplateQuery),
    responses((status = 204), (status = 404, body = api::ErrorBody),
        (status = 409, body = api::ErrorBody, description = "`in_use`: attached to workspaces (named in the message) and not forced; `conflict`: a built-in")),
    security(("bearer" = [])))]
pub async fn remove(
    State(state): State<Arc<AppState>>,
    Extension(actor): Extension<Actor>,
    Path((tenant, name)): Path<(String, String)>,
    Query(q): Query<api::RemoveEgressTemplateQuery>,
) -> ApiResult<StatusCode> {
    policy::remove_template(&state, &actor, &tenant, &name, q.force).await?;
    Ok(StatusCode::NO_CONTENT)
}

/// The templates a workspace attaches, in evaluation order.
async fn attached_view(state: &AppState, w: &Workspace) -> ApiResult<Vec<api::EgressTemplate>> {
    let mut out = Vec::new();
    for name in state.store.workspace_egress_templates(&w.id).await? {
        if let Some(t) = find_template(&state.store, w.tenant.as_str(), &name).await? {
            out.push(to_api(state, t, Some(w.tenant.as_str())).await?);
        }
    }
    Ok(out)
}

/// The egress templates attached to a workspace.
#[utoipa::path(get, path = "/api/v1/workspaces/{ws}/egress/templates", tag = "egress",
    params(("ws" = String, Path, description = "workspace reference")),
    responses((status = 200, body = [api::EgressTemplate], description = "attached templates, in evaluation order"),
        (status = 404, body = api::ErrorBody)),
    security(("bearer" = [])))]
pub async fn attached(
    State(state): State<Arc<AppState>>,
    Path(ws): Path<String>,
) -> ApiResult<axum::Json<Vec<api::EgressTemplate>>> {
    let w = lifecycle::resolve(&state, &ws).await?;
    Ok(axum::Json(attached_view(&state, &w).await?))
}

/// Attaches an egress template to a workspace.
#[utoipa::path(post, path = "/api/v1/workspaces/{ws}/egress/templates", operation_id = "attach_egress_template", tag = "egress", request_body = api::AttachEgressTemplate,
    params(("ws" = String, Path, description = "workspace reference")),
    responses((status = 200, body = [api::EgressTemplate], description = "attached templates, in evaluation order"),
        (status = 400, body = api::ErrorBody), (status = 404, body = api::ErrorBody)),
    security(("bearer" = [])))]
pub async fn attach(
    State(state): State<Arc<AppState>>,
    Extension(actor): Extension<Actor>,
    Path(ws): Path<String>,
    body: super::JsonBody,
) -> ApiResult<axum::Json<Vec<api::EgressTemplate>>> {
    let template = parse_body::<api::AttachEgressTemplate>(&body).map(|r| r.template);
    let w = policy::attach(&state, &actor, &ws, template).await?;
    Ok(axum::Json(attached_view(&state, &w).await?))
}

/// Detaches an egress template from a workspace.
#[utoipa::path(delete, path = "/api/v1/workspaces/{ws}/egress/templates/{name}", tag = "egress",
    params(("ws" = String, Path, description = "workspace reference"), ("name" = String, Path)),
    responses((status = 200, body = [api::EgressTemplate], description = "attached templates, in evaluation order"),
        (status = 404, body = api::ErrorBody)),
    security(("bearer" = [])))]
pub async fn detach(
    State(state): State<Arc<AppState>>,
    Extension(actor): Extension<Actor>,
    Path((ws, name)): Path<(String, String)>,
) -> ApiResult<axum::Json<Vec<api::EgressTemplate>>> {
    let w = policy::detach(&state, &actor, &ws, &name).await?;
    Ok(axum::Json(attached_view(&state, &w).await?))
}

#[cfg(test)]
#[path = "egress_templates_tests.rs"]
mod tests;
