//! `/egress/templates…`: egress templates — named, ordered rule lists owned by a tenant, next to
//! the read-only built-ins every tenant may use — and `/workspaces/{ws}/egress/templates…`:
//! attaching them to workspaces. Every change takes effect at once in the running workspaces
//! concerned (their policies are recomputed; see `crate::egress`).

use std::sync::Arc;

use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::Extension;
use berth_api as api;
use berth_domain::{ErrorCode, Name, WorkspaceId};
use berth_egress::BUILTIN_TEMPLATES;
use berth_store::{StoreError, TemplateRemoval, TemplateUser, Workspace};

use super::{parse_body, Query};
use crate::auth::{audit, Actor};
use crate::egress::{find_template, refresh, Template};
use crate::error::{ApiError, ApiResult};
use crate::lifecycle;
use crate::state::AppState;

fn tenant_name(t: &str) -> ApiResult<Name> {
    Name::parse(t).map_err(|e| ApiError::invalid(format!("tenant: {e}")))
}

/// Template names follow the tenant and workspace name rules.
pub(crate) fn template_name(n: &str) -> ApiResult<Name> {
    Name::parse(n).map_err(|e| ApiError::invalid(format!("egress template {e}")))
}

fn builtin_names() -> String {
    BUILTIN_TEMPLATES
        .iter()
        .map(|b| b.name)
        .collect::<Vec<_>>()
        .join(", ")
}

/// Built-in names are reserved: a tenant cannot create, replace or remove them.
fn refuse_builtin(name: &Name, what: &str) -> ApiResult<()> {
    if berth_egress::builtin_template(name.as_str()).is_some() {
        return Err(ApiError::new(
            ErrorCode::Conflict,
            format!(
                "{name} is a built-in egress template (read-only, usable by every tenant): {what}"
            ),
        ));
    }
    Ok(())
}

/// The 404 for a template a tenant does not have.
pub(crate) fn unknown_template(tenant: &str, name: &str) -> ApiError {
    ApiError::not_found(format!(
        "tenant {tenant} has no egress template {name} and there is no built-in of that name \
         (built-ins: {}): create it with `berth egress template set --tenant {tenant} {name} RULE…`",
        builtin_names()
    ))
}

fn check_rules(rules: &[String]) -> ApiResult<Vec<String>> {
    rules.iter().map(|r| super::egress::check(r)).collect()
}

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

/// Applies a template change to every running workspace that uses it.
async fn refresh_users(state: &AppState, users: &[TemplateUser]) {
    let ids: Vec<WorkspaceId> = users.iter().map(|u| u.workspace_id.clone()).collect();
    refresh(state, &ids).await;
}

#[utoipa::path(get, path = "/api/v1/egress/templates", operation_id = "list_egress_templates", tag = "egress", params(api::EgressTemplateQuery),
    responses((status = 200, body = [api::EgressTemplate]), (status = 400, body = api::ErrorBody)),
    security(("bearer" = [])))]
pub async fn list(
    State(state): State<Arc<AppState>>,
    Query(q): Query<api::EgressTemplateQuery>,
) -> ApiResult<axum::Json<Vec<api::EgressTemplate>>> {
    let tenant = q.tenant.as_deref().map(tenant_name).transpose()?;
    let tenant = tenant.as_ref().map(Name::as_str);
    let mut out = Vec::new();
    for b in BUILTIN_TEMPLATES {
        out.push(to_api(&state, Template::Builtin(b), tenant).await?);
    }
    for t in state.store.list_egress_templates(tenant).await? {
        out.push(to_api(&state, Template::Stored(t), tenant).await?);
    }
    Ok(axum::Json(out))
}

#[utoipa::path(post, path = "/api/v1/egress/templates", operation_id = "create_egress_template", tag = "egress", request_body = api::CreateEgressTemplate,
    responses((status = 201, body = api::EgressTemplate), (status = 400, body = api::ErrorBody),
        (status = 409, body = api::ErrorBody)),
    security(("bearer" = [])))]
pub async fn create(
    State(state): State<Arc<AppState>>,
    Extension(actor): Extension<Actor>,
    body: super::JsonBody,
) -> ApiResult<(StatusCode, axum::Json<api::EgressTemplate>)> {
    let req = parse_body::<api::CreateEgressTemplate>(&body);
    let target = match &req {
        Ok(r) => format!("{}/{}", r.tenant, r.name),
        Err(_) => "(invalid request)".to_owned(),
    };
    let result = async {
        let req = req?;
        let tenant = tenant_name(&req.tenant)?;
        let name = template_name(&req.name)?;
        refuse_builtin(&name, "choose another name")?;
        let rules = check_rules(&req.rules)?;
        state.store.ensure_tenant(&tenant).await?;
        let t = state
            .store
            .create_egress_template(
                tenant.as_str(),
                name.as_str(),
                req.description.as_deref(),
                &rules,
            )
            .await
            .map_err(|e| match e {
                StoreError::Conflict(_) => ApiError::new(
                    ErrorCode::Conflict,
                    format!(
                        "egress template {tenant}/{name} already exists: replace it with \
                         `berth egress template set --tenant {tenant} {name} RULE…` \
                         (PUT /api/v1/egress/templates/{tenant}/{name})"
                    ),
                ),
                other => other.into(),
            })?;
        to_api(&state, Template::Stored(t), None).await
    }
    .await;
    audit(
        &state.store,
        &actor,
        "egress_template.create",
        &target,
        &result,
    )
    .await;
    Ok((StatusCode::CREATED, axum::Json(result?)))
}

#[utoipa::path(get, path = "/api/v1/egress/templates/{tenant}/{name}", operation_id = "show_egress_template", tag = "egress",
    params(("tenant" = String, Path), ("name" = String, Path, description = "the tenant's template, or a built-in")),
    responses((status = 200, body = api::EgressTemplate), (status = 404, body = api::ErrorBody)),
    security(("bearer" = [])))]
pub async fn show(
    State(state): State<Arc<AppState>>,
    Path((tenant, name)): Path<(String, String)>,
) -> ApiResult<axum::Json<api::EgressTemplate>> {
    let tenant = tenant_name(&tenant)?;
    let name = template_name(&name)?;
    let t = find_template(&state.store, tenant.as_str(), name.as_str())
        .await?
        .ok_or_else(|| unknown_template(tenant.as_str(), name.as_str()))?;
    Ok(axum::Json(to_api(&state, t, Some(tenant.as_str())).await?))
}

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
    let result = async {
        let tenant = tenant_name(&tenant)?;
        let name = template_name(&name)?;
        refuse_builtin(&name, "choose another name")?;
        let req: api::SetEgressTemplate = parse_body(&body)?;
        let rules = check_rules(&req.rules)?;
        state.store.ensure_tenant(&tenant).await?;
        let (t, created) = state
            .store
            .put_egress_template(
                tenant.as_str(),
                name.as_str(),
                req.description.as_deref(),
                &rules,
            )
            .await?;
        // Every running workspace that uses it gets the new rules now.
        let users = state
            .store
            .egress_template_users(Some(tenant.as_str()), name.as_str())
            .await?;
        refresh_users(&state, &users).await;
        Ok((created, to_api(&state, Template::Stored(t), None).await?))
    }
    .await;
    audit(
        &state.store,
        &actor,
        "egress_template.set",
        &format!("{tenant}/{name}"),
        &result,
    )
    .await;
    let (created, t) = result?;
    let status = if created {
        StatusCode::CREATED
    } else {
        StatusCode::OK
    };
    Ok((status, axum::Json(t)))
}

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
    let result = async {
        let tenant = tenant_name(&tenant)?;
        let name = template_name(&name)?;
        match state
            .store
            .delete_egress_template(tenant.as_str(), name.as_str(), q.force)
            .await?
        {
            TemplateRemoval::NotFound => {
                refuse_builtin(
                    &name,
                    "it cannot be removed (detach it from workspaces instead)",
                )?;
                Err(ApiError::not_found(format!(
                    "egress template {tenant}/{name} not found"
                )))
            }
            TemplateRemoval::InUse(users) => Err(ApiError::new(
                ErrorCode::InUse,
                format!(
                    "egress template {tenant}/{name} is attached to {}: detach it first \
                     (berth egress detach W {name}) or remove it with --force (?force=true) \
                     to detach it everywhere",
                    users
                        .iter()
                        .map(|u| u.workspace.as_str())
                        .collect::<Vec<_>>()
                        .join(", ")
                ),
            )),
            TemplateRemoval::Removed(detached) => {
                refresh_users(&state, &detached).await;
                Ok(detached)
            }
        }
    }
    .await;
    audit(
        &state.store,
        &actor,
        "egress_template.remove",
        &format!("{tenant}/{name}"),
        &result,
    )
    .await;
    // A forced removal detached the template from these workspaces: one record each.
    for u in result.as_deref().unwrap_or_default() {
        audit(
            &state.store,
            &actor,
            "egress.detach_template",
            &format!("{} template {name}", u.workspace),
            &Ok::<(), ApiError>(()),
        )
        .await;
    }
    result?;
    Ok(StatusCode::NO_CONTENT)
}

/// The templates a workspace attaches, in evaluation order.
async fn attached_view(state: &AppState, w: &Workspace) -> ApiResult<Vec<api::EgressTemplate>> {
    let mut out = Vec::new();
    for name in state
        .store
        .workspace_egress_templates(w.id.as_str())
        .await?
    {
        if let Some(t) = find_template(&state.store, w.tenant.as_str(), &name).await? {
            out.push(to_api(state, t, Some(w.tenant.as_str())).await?);
        }
    }
    Ok(out)
}

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
    let mut target = ws.clone();
    let result = async {
        let req: api::AttachEgressTemplate = parse_body(&body)?;
        let w = lifecycle::resolve(&state, &ws).await?;
        target = format!("{} template {}", w.qualified_name(), req.template);
        let name = template_name(&req.template)?;
        attach_to(&state, &w, &name).await?;
        refresh(&state, std::slice::from_ref(&w.id)).await;
        attached_view(&state, &w).await
    }
    .await;
    audit(
        &state.store,
        &actor,
        "egress.attach_template",
        &target,
        &result,
    )
    .await;
    Ok(axum::Json(result?))
}

/// Attaches a template of the workspace's tenant, or a built-in, after the others (nothing
/// changes when it is attached already). Does not touch the running policy.
pub(crate) async fn attach_to(state: &AppState, w: &Workspace, name: &Name) -> ApiResult<()> {
    let tenant = w.tenant.as_str();
    let t = find_template(&state.store, tenant, name.as_str())
        .await?
        .ok_or_else(|| unknown_template(tenant, name.as_str()))?;
    let stored = matches!(t, Template::Stored(_));
    match state
        .store
        .attach_egress_template(w.id.as_str(), tenant, name.as_str(), stored)
        .await
    {
        Ok(_) => Ok(()),
        // Removed in between.
        Err(StoreError::NotFound(_)) => Err(unknown_template(tenant, name.as_str())),
        Err(e) => Err(e.into()),
    }
}

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
    let mut target = format!("{ws} template {name}");
    let result = async {
        let w = lifecycle::resolve(&state, &ws).await?;
        target = format!("{} template {name}", w.qualified_name());
        if !state
            .store
            .detach_egress_template(w.id.as_str(), &name)
            .await?
        {
            return Err(ApiError::not_found(format!(
                "workspace {} does not attach egress template {name}",
                w.qualified_name()
            )));
        }
        refresh(&state, std::slice::from_ref(&w.id)).await;
        attached_view(&state, &w).await
    }
    .await;
    audit(
        &state.store,
        &actor,
        "egress.detach_template",
        &target,
        &result,
    )
    .await;
    Ok(axum::Json(result?))
}

#[cfg(test)]
#[path = "egress_templates_tests.rs"]
mod tests;
