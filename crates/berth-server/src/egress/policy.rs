//! Changing egress policy as a service: a workspace's own rules, tenant egress templates, and
//! attaching templates to workspaces. Each operation validates, stores, applies the change to the
//! running workspaces concerned at once ([`super::refresh`]) and records itself in the audit log,
//! so the HTTP handlers only parse and shape answers.

use berth_domain::{ErrorCode, Name, WorkspaceId};
use berth_egress::BUILTIN_TEMPLATES;
use berth_store::{EgressTemplate, StoreError, TemplateRemoval, TemplateUser, Workspace};

use super::{find_template, refresh, Template};
use crate::auth::{audit, Actor};
use crate::error::{ApiError, ApiResult};
use crate::lifecycle;
use crate::state::AppState;

/// A rule in its canonical form, or a 400 naming it.
pub fn check_rule(rule: &str) -> ApiResult<String> {
    berth_egress::Rule::parse(rule)
        .map(|r| r.to_string())
        .map_err(|e| ApiError::invalid(format!("egress rule {rule:?}: {e}")))
}

fn check_rules(rules: &[String]) -> ApiResult<Vec<String>> {
    rules.iter().map(|r| check_rule(r)).collect()
}

pub use crate::error::tenant_name;

/// Template names follow the tenant and workspace name rules.
pub fn template_name(n: &str) -> ApiResult<Name> {
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
pub fn unknown_template(tenant: &str, name: &str) -> ApiError {
    ApiError::not_found(format!(
        "tenant {tenant} has no egress template {name} and there is no built-in of that name \
         (built-ins: {}): create it with `berth egress template set --tenant {tenant} {name} RULE…`",
        builtin_names()
    ))
}

/// A tenant's template or a built-in, or the 404 naming what exists.
pub async fn template(state: &AppState, tenant: &str, name: &str) -> ApiResult<Template> {
    let tenant = tenant_name(tenant)?;
    let name = template_name(name)?;
    find_template(&state.store, tenant.as_str(), name.as_str())
        .await?
        .ok_or_else(|| unknown_template(tenant.as_str(), name.as_str()))
}

/// Applies a template change to every running workspace that uses it.
async fn refresh_users(state: &AppState, users: &[TemplateUser]) {
    let ids: Vec<WorkspaceId> = users.iter().map(|u| u.workspace_id.clone()).collect();
    refresh(state, &ids).await;
}

/// Stores a workspace's own rules and applies them to its running proxy at once.
async fn apply(state: &AppState, w: &Workspace, rules: &[String]) -> ApiResult<()> {
    state.store.set_egress_rules(&w.id, rules).await?;
    refresh(state, std::slice::from_ref(&w.id)).await;
    Ok(())
}

/// Records a rule change (`action`), its target being what `op` names, or the raw reference.
async fn audited_rules<F>(
    state: &AppState,
    actor: &Actor,
    action: &str,
    ws: &str,
    op: F,
) -> ApiResult<Vec<String>>
where
    F: std::future::Future<Output = ApiResult<(String, Vec<String>)>>,
{
    let result = op.await;
    let target = result.as_ref().map_or(ws, |(t, _)| t.as_str()).to_owned();
    audit(&state.store, actor, action, &target, &result).await;
    result.map(|(_, rules)| rules)
}

/// Replaces a workspace's own rules. `rules` is `Err` when the request was malformed.
pub async fn set_rules(
    state: &AppState,
    actor: &Actor,
    ws: &str,
    rules: ApiResult<Vec<String>>,
) -> ApiResult<Vec<String>> {
    audited_rules(state, actor, "egress.set_rules", ws, async {
        let rules = rules?;
        let w = lifecycle::resolve(state, ws).await?;
        let rules = check_rules(&rules)?;
        apply(state, &w, &rules).await?;
        Ok((w.qualified_name(), rules))
    })
    .await
}

/// Inserts one rule at `position` (0: first; the rule count: last; past that: refused).
pub async fn add_rule(
    state: &AppState,
    actor: &Actor,
    ws: &str,
    req: ApiResult<(String, Option<u32>)>,
) -> ApiResult<Vec<String>> {
    audited_rules(state, actor, "egress.add_rule", ws, async {
        let (rule, position) = req?;
        let rule = check_rule(&rule)?;
        let w = lifecycle::resolve(state, ws).await?;
        let mut rules = state.store.egress_rules(&w.id).await?;
        let at = insert_position(position, rules.len())?;
        rules.insert(at, rule.clone());
        apply(state, &w, &rules).await?;
        Ok((format!("{} {rule}", w.qualified_name()), rules))
    })
    .await
}

/// Removes the rule at `index` (as the client wrote it).
pub async fn remove_rule(
    state: &AppState,
    actor: &Actor,
    ws: &str,
    index: &str,
) -> ApiResult<Vec<String>> {
    audited_rules(state, actor, "egress.remove_rule", ws, async {
        let w = lifecycle::resolve(state, ws).await?;
        let mut rules = state.store.egress_rules(&w.id).await?;
        let i: usize = index
            .parse()
            .map_err(|_| ApiError::invalid(format!("rule index {index:?} is not a number")))?;
        if i >= rules.len() {
            return Err(ApiError::not_found(format!(
                "workspace {} has no egress rule {i} ({} rules)",
                w.qualified_name(),
                rules.len()
            )));
        }
        let gone = rules.remove(i);
        apply(state, &w, &rules).await?;
        Ok((format!("{} {gone}", w.qualified_name()), rules))
    })
    .await
}

/// Where `position` puts a new rule among `len` rules: 0 to `len` (appending); past that is
/// refused rather than quietly appended.
fn insert_position(position: Option<u32>, len: usize) -> ApiResult<usize> {
    let at = position.unwrap_or(0);
    match usize::try_from(at) {
        Ok(at) if at <= len => Ok(at),
        _ => Err(ApiError::invalid(format!(
            "position {at} is past the end: the workspace has {len} rules"
        ))),
    }
}

/// A template's fields as a request carries them.
pub struct TemplateSpec {
    pub description: Option<String>,
    pub rules: Vec<String>,
}

/// Creates a tenant template (409 when it exists). `target` names it for the audit log even
/// when the request was malformed (`req` is `Err`).
pub async fn create_template(
    state: &AppState,
    actor: &Actor,
    target: &str,
    req: ApiResult<(String, String, TemplateSpec)>,
) -> ApiResult<EgressTemplate> {
    let result = async {
        let (tenant, name, spec) = req?;
        let tenant = tenant_name(&tenant)?;
        let name = template_name(&name)?;
        refuse_builtin(&name, "choose another name")?;
        let rules = check_rules(&spec.rules)?;
        state.store.ensure_tenant(&tenant).await?;
        state
            .store
            .create_egress_template(
                tenant.as_str(),
                name.as_str(),
                spec.description.as_deref(),
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
            })
    }
    .await;
    audit(
        &state.store,
        actor,
        "egress_template.create",
        target,
        &result,
    )
    .await;
    result
}

/// Creates or replaces a tenant template; the running workspaces using it get the new rules at
/// once. Returns the template and whether it was created.
pub async fn set_template(
    state: &AppState,
    actor: &Actor,
    tenant: &str,
    name: &str,
    spec: ApiResult<TemplateSpec>,
) -> ApiResult<(EgressTemplate, bool)> {
    let result = async {
        let tenant = tenant_name(tenant)?;
        let name = template_name(name)?;
        refuse_builtin(&name, "choose another name")?;
        let spec = spec?;
        let rules = check_rules(&spec.rules)?;
        state.store.ensure_tenant(&tenant).await?;
        let (t, created) = state
            .store
            .put_egress_template(
                tenant.as_str(),
                name.as_str(),
                spec.description.as_deref(),
                &rules,
            )
            .await?;
        let users = state
            .store
            .egress_template_users(Some(tenant.as_str()), name.as_str())
            .await?;
        refresh_users(state, &users).await;
        Ok((t, created))
    }
    .await;
    audit(
        &state.store,
        actor,
        "egress_template.set",
        &format!("{tenant}/{name}"),
        &result,
    )
    .await;
    result
}

/// Removes a tenant template; `force` detaches it from the workspaces using it first (each
/// detachment recorded on its own).
pub async fn remove_template(
    state: &AppState,
    actor: &Actor,
    tenant: &str,
    name: &str,
    force: bool,
) -> ApiResult<()> {
    let result = async {
        let tenant = tenant_name(tenant)?;
        let name = template_name(name)?;
        match state
            .store
            .delete_egress_template(tenant.as_str(), name.as_str(), force)
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
                refresh_users(state, &detached).await;
                Ok(detached)
            }
        }
    }
    .await;
    audit(
        &state.store,
        actor,
        "egress_template.remove",
        &format!("{tenant}/{name}"),
        &result,
    )
    .await;
    // A forced removal detached the template from these workspaces: one record each.
    for u in result.as_deref().unwrap_or_default() {
        audit(
            &state.store,
            actor,
            "egress.detach_template",
            &format!("{} template {name}", u.workspace),
            &Ok::<(), ApiError>(()),
        )
        .await;
    }
    result.map(drop)
}

/// Attaches a template of the workspace's tenant, or a built-in, after the others (nothing
/// changes when it is attached already). Does not touch the running policy.
pub async fn attach_to(state: &AppState, w: &Workspace, name: &Name) -> ApiResult<()> {
    let tenant = w.tenant.as_str();
    let t = find_template(&state.store, tenant, name.as_str())
        .await?
        .ok_or_else(|| unknown_template(tenant, name.as_str()))?;
    let stored = matches!(t, Template::Stored(_));
    match state
        .store
        .attach_egress_template(&w.id, tenant, name.as_str(), stored)
        .await
    {
        Ok(_) => Ok(()),
        // Removed in between.
        Err(StoreError::NotFound(_)) => Err(unknown_template(tenant, name.as_str())),
        Err(e) => Err(e.into()),
    }
}

/// Attaches a template to a workspace and applies it at once. `template` is `Err` when the
/// request was malformed.
pub async fn attach(
    state: &AppState,
    actor: &Actor,
    ws: &str,
    template: ApiResult<String>,
) -> ApiResult<Workspace> {
    let mut target = ws.to_owned();
    let result = async {
        let template = template?;
        let w = lifecycle::resolve(state, ws).await?;
        target = format!("{} template {template}", w.qualified_name());
        let name = template_name(&template)?;
        attach_to(state, &w, &name).await?;
        refresh(state, std::slice::from_ref(&w.id)).await;
        Ok(w)
    }
    .await;
    audit(
        &state.store,
        actor,
        "egress.attach_template",
        &target,
        &result,
    )
    .await;
    result
}

/// Detaches a template from a workspace and applies that at once.
pub async fn detach(state: &AppState, actor: &Actor, ws: &str, name: &str) -> ApiResult<Workspace> {
    let mut target = format!("{ws} template {name}");
    let result = async {
        let w = lifecycle::resolve(state, ws).await?;
        target = format!("{} template {name}", w.qualified_name());
        if !state.store.detach_egress_template(&w.id, name).await? {
            return Err(ApiError::not_found(format!(
                "workspace {} does not attach egress template {name}",
                w.qualified_name()
            )));
        }
        refresh(state, std::slice::from_ref(&w.id)).await;
        Ok(w)
    }
    .await;
    audit(
        &state.store,
        actor,
        "egress.detach_template",
        &target,
        &result,
    )
    .await;
    result
}
