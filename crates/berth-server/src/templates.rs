//! Workspace templates as a service: set (a new revision each time), show, list, remove, each
//! change audited; and [`parse_stored`] / [`check`], the server's half of a template's
//! validation (egress rule syntax, secret hosts and headers), on top of the domain's
//! (`berth_domain::template`). Provisioning a workspace from a template is `crate::provision`.

use berth_api as api;
use berth_domain::template::{self, Template, TemplateError};
use berth_domain::{ErrorCode, Name};
use berth_store::TemplateRevision;

use crate::auth::{audit, Actor};
use crate::error::{ApiError, ApiResult};
use crate::state::AppState;

/// A template name: like a workspace's (lowercase letters, digits, inner dashes).
pub fn template_name(n: &str) -> ApiResult<Name> {
    Name::parse(n).map_err(|e| ApiError::invalid(format!("template name: {e}")))
}

fn invalid(tenant: &str, name: &str, e: &TemplateError) -> ApiError {
    ApiError::new(
        ErrorCode::TemplateInvalid,
        format!("template {tenant}/{name}: {e}"),
    )
}

/// The checks only the server can make (it knows egress rule syntax and host names). Strings
/// still holding a `{{param}}` reference are checked once the values are in.
pub fn check(t: &Template) -> Result<(), TemplateError> {
    for (i, r) in t.egress.rules.iter().enumerate() {
        if r.contains("{{") {
            continue;
        }
        berth_egress::Rule::parse(r)
            .map_err(|e| TemplateError::new(format!("egress.rules[{i}]"), e.to_string()))?;
    }
    for (i, s) in t.secrets.iter().enumerate() {
        for (j, h) in s.hosts.iter().enumerate() {
            if h.contains("{{") {
                continue;
            }
            if berth_egress::normalize_host(h).is_none() {
                return Err(TemplateError::new(
                    format!("secret[{i}].hosts[{j}]"),
                    format!("{h:?} is not a host name"),
                ));
            }
        }
        for (j, h) in s.headers.iter().enumerate() {
            berth_egress::secret_header_name(h)
                .map_err(|e| TemplateError::new(format!("secret[{i}].headers[{j}]"), e))?;
        }
    }
    if let Some(b) = &t.image.base {
        if !b.contains("{{") && !crate::openapi::is_image_reference(b) {
            return Err(TemplateError::new(
                "image.base",
                format!("{b:?} is not an image reference ([registry/]name[:tag][@sha256:digest])"),
            ));
        }
    }
    Ok(())
}

/// Parses and checks a template source (the domain's checks, then the server's).
pub fn parse_checked(source: &str) -> Result<Template, TemplateError> {
    let t = template::parse(source)?;
    check(&t)?;
    Ok(t)
}

/// A stored revision, parsed again (it was checked when stored; a source this server no longer
/// accepts is reported as invalid, never half-used).
pub fn parse_stored(r: &TemplateRevision) -> ApiResult<Template> {
    parse_checked(&r.source).map_err(|e| invalid(&r.tenant, &r.name, &e))
}

/// The API view of a revision.
pub async fn to_api(state: &AppState, r: TemplateRevision) -> ApiResult<api::WorkspaceTemplate> {
    let t = parse_stored(&r).ok();
    let latest = state
        .store
        .template(&r.tenant, &r.name, None)
        .await?
        .map_or(r.revision, |l| l.revision);
    let used_by = state.store.template_users(&r.tenant, &r.name).await?;
    Ok(api::WorkspaceTemplate {
        description: t.as_ref().and_then(|t| t.description.clone()),
        params: t
            .as_ref()
            .map(|t| {
                t.params
                    .iter()
                    .map(|p| api::TemplateParam {
                        name: p.name.clone(),
                        description: p.description.clone(),
                        required: p.required,
                        default: p.default.clone(),
                    })
                    .collect()
            })
            .unwrap_or_default(),
        agent: t
            .as_ref()
            .and_then(|t| t.agent.map(|a| a.as_str().to_owned())),
        auto_session: t.as_ref().is_some_and(|t| t.auto_session),
        tenant: r.tenant,
        name: r.name,
        revision: r.revision,
        latest_revision: latest,
        source: r.source,
        created_at: r.created_at,
        used_by,
    })
}

/// A revision of a template (`None`: the newest), or the 404 saying how to make one.
pub async fn find(
    state: &AppState,
    tenant: &str,
    name: &str,
    revision: Option<i64>,
) -> ApiResult<TemplateRevision> {
    let t = crate::error::tenant_name(tenant)?;
    let n = template_name(name)?;
    state
        .store
        .template(t.as_str(), n.as_str(), revision)
        .await?
        .ok_or_else(|| match revision {
            Some(r) => ApiError::not_found(format!("template {t}/{n} has no revision {r}")),
            None => ApiError::not_found(format!(
                "tenant {t} has no template {n}: create it with `berth template set --tenant {t} {n} FILE`"
            )),
        })
}

/// Stores `source` as the next revision (audited as `template.set`). Returns the revision and
/// whether the template is new.
pub async fn set(
    state: &AppState,
    actor: &Actor,
    tenant: &str,
    name: &str,
    req: ApiResult<api::SetTemplate>,
) -> ApiResult<(TemplateRevision, bool)> {
    let result = async {
        let t = crate::error::tenant_name(tenant)?;
        let n = template_name(name)?;
        let req = req?;
        if req.source.len() > template::MAX_SOURCE {
            return Err(invalid(
                tenant,
                name,
                &TemplateError::new(
                    "(file)",
                    format!("larger than {} bytes", template::MAX_SOURCE),
                ),
            ));
        }
        parse_checked(&req.source).map_err(|e| invalid(tenant, name, &e))?;
        state.store.ensure_tenant(&t).await?;
        let r = state
            .store
            .put_template(t.as_str(), n.as_str(), &req.source)
            .await?;
        let created = r.revision == 1;
        Ok((r, created))
    }
    .await;
    let target = format!("{tenant}/{name}");
    audit(&state.store, actor, "template.set", &target, &result).await;
    result
}

/// Removes a template with all its revisions (audited as `template.remove`). Workspaces made
/// from it keep what they were provisioned with (their instantiated copy), but cannot upgrade.
pub async fn remove(state: &AppState, actor: &Actor, tenant: &str, name: &str) -> ApiResult<()> {
    let result = async {
        let r = find(state, tenant, name, None).await?;
        state.store.delete_template(&r.tenant, &r.name).await?;
        Ok(())
    }
    .await;
    let target = format!("{tenant}/{name}");
    audit(&state.store, actor, "template.remove", &target, &result).await;
    result
}

/// The newest revision of each template of a tenant (or every tenant's).
pub async fn list(state: &AppState, tenant: Option<&str>) -> ApiResult<Vec<TemplateRevision>> {
    Ok(state.store.list_templates(tenant).await?)
}
