//! Changing a workspace after creation (`PATCH /workspaces/{ws}`), without the remove and
//! create that would lose its sessions and egress rules.
//!
//! What applies when:
//! - memory, CPU and process caps: stored, and applied to the running container through the
//!   engine's update call; where the engine cannot, they apply at the next start (the answer
//!   says so and why). Every start after a change of caps or secret bindings recreates the
//!   container (see `lifecycle::config_fingerprint`): some engines do not keep a live update
//!   across a restart, and the environment is fixed at container creation.
//! - secret bindings: a placeholder binding is swapped by the egress proxy from the next request
//!   on (its variable enters the environment at the next start; the answer gives the
//!   placeholder meanwhile); `env` and `file` deliveries apply at the next start.
//! - egress templates, the approval policy and MCP servers: at once (the policy is recomputed;
//!   new tasks and turns read the others from the store).
//!
//! Everything is validated, and the tenant's quota checked, before anything changes.

use std::collections::BTreeMap;
use std::sync::Arc;

use berth_api as api;
use berth_domain::limits::{parse_cpus, parse_memory};
use berth_domain::{ApprovalPolicy, ErrorCode, Limits, McpServer, Name, WorkspaceState};
use berth_store::{SecretUse, Workspace};

use crate::auth::{audit, Actor};
use crate::error::{ApiError, ApiResult};
use crate::state::AppState;

/// What an update did.
#[derive(Debug)]
pub struct Updated {
    pub workspace: Workspace,
    /// Fields whose value changed.
    pub changed: Vec<String>,
    /// Of those, the ones that take effect only at the next start.
    pub pending_restart: Vec<String>,
    /// Why the caps could not be applied live.
    pub live_error: Option<String>,
    /// Placeholders of newly bound placeholder secrets.
    pub placeholders: BTreeMap<String, String>,
    /// Bindings that newly put a real value into the workspace (audited as exposed).
    pub exposed: Vec<SecretUse>,
}

/// A validated update: `Some` for what changes.
#[derive(Debug, Default)]
struct Plan {
    limits: Option<Limits>,
    secrets: Option<Vec<SecretUse>>,
    templates: Option<Vec<Name>>,
    approval: Option<ApprovalPolicy>,
    mcp_servers: Option<Vec<McpServer>>,
}

/// Changes a workspace as `req` asks (`Err`: a malformed request, recorded too).
pub async fn update_workspace(
    state: &Arc<AppState>,
    actor: &Actor,
    ws: &str,
    req: ApiResult<api::UpdateWorkspace>,
) -> ApiResult<Updated> {
    let mut target = ws.to_owned();
    let result = async {
        let req = req?;
        let w = super::resolve(state, ws).await?;
        target = w.qualified_name();
        let first = plan(state, &w, &req).await?;
        // The tenant's admission lock before the workspace's, as start takes them.
        let _admitted = check_quota(state, &w, first.limits.as_ref()).await?;
        let lock = state.lock_for(&w.id);
        let _guard = lock.lock().await;
        let w = state.store.workspace(&w.id).await?;
        if matches!(w.state, WorkspaceState::Creating | WorkspaceState::Removing) {
            return Err(ApiError::new(
                ErrorCode::InvalidState,
                format!("workspace {} is {}", w.qualified_name(), w.state.as_str()),
            ));
        }
        // Planned again against the workspace as it is now, under its lock: the bindings and
        // templates of an update that ran meanwhile are kept, not overwritten. Caps other than
        // the ones the quota was checked for mean a concurrent change of caps: retry.
        let plan = plan(state, &w, &req).await?;
        if plan.limits.is_some() && plan.limits != first.limits {
            return Err(ApiError::new(
                ErrorCode::Conflict,
                format!(
                    "the caps of workspace {} changed while this update waited: retry",
                    w.qualified_name()
                ),
            ));
        }
        apply(state, &w, plan).await
    }
    .await;
    match &result {
        Ok(u) if !u.changed.is_empty() => {
            let detail = format!("changed {}", u.changed.join(", "));
            super::requests::audit_with_detail(state, actor, "workspace.update", &target, detail)
                .await
        }
        _ => audit(&state.store, actor, "workspace.update", &target, &result).await,
    }
    let u = result?;
    super::requests::record_exposed(state, actor, &u.workspace, &u.exposed).await?;
    Ok(u)
}

/// Validates the request against the workspace as it is: what would change, or the error.
async fn plan(state: &AppState, w: &Workspace, req: &api::UpdateWorkspace) -> ApiResult<Plan> {
    let limits = new_limits(w.limits, req)?.filter(|l| *l != w.limits);
    let secrets = new_secrets(state, w, req).await?;
    let templates = match &req.egress_templates {
        Some(names) => new_templates(state, w, names).await?,
        None => None,
    };
    let approval = match crate::approvals::parse_policy(req.approval.as_deref())? {
        Some(p) if p != state.store.workspace_approval(&w.id).await? => Some(p),
        _ => None,
    };
    let mcp_servers = match &req.mcp_servers {
        Some(list) => Some(berth_api::mcp_servers_to_domain(list).map_err(|e| {
            ApiError::new(ErrorCode::InvalidMcpServer, format!("mcp_servers: {e}"))
        })?)
        .filter(|m| *m != w.mcp_servers),
        None => None,
    };
    Ok(Plan {
        limits,
        secrets,
        templates,
        approval,
        mcp_servers,
    })
}

/// The caps asked for (the others as they are), validated and within the host's capacity.
fn new_limits(old: Limits, req: &api::UpdateWorkspace) -> ApiResult<Option<Limits>> {
    if req.memory.is_none() && req.cpus.is_none() && req.pids.is_none() {
        return Ok(None);
    }
    let invalid = |e: berth_domain::limits::LimitsError| ApiError::invalid(e.to_string());
    let limits = Limits {
        memory_bytes: match &req.memory {
            Some(m) => parse_memory(m).map_err(invalid)?,
            None => old.memory_bytes,
        },
        nano_cpus: match &req.cpus {
            Some(c) => parse_cpus(c).map_err(invalid)?,
            None => old.nano_cpus,
        },
        pids: req.pids.unwrap_or(old.pids),
    }
    .validate()
    .map_err(invalid)?;
    crate::capacity::check_host(&limits)?;
    Ok(Some(limits))
}

/// Larger caps of a workspace that holds its resources (running) must fit the tenant's quota,
/// as at create and start; smaller ones always do.
async fn check_quota(
    state: &AppState,
    w: &Workspace,
    limits: Option<&Limits>,
) -> ApiResult<crate::tenants::QuotaHold> {
    let holds = matches!(
        w.state,
        WorkspaceState::Running | WorkspaceState::Starting | WorkspaceState::Creating
    );
    match limits {
        Some(l)
            if holds
                && (l.memory_bytes > w.limits.memory_bytes || l.nano_cpus > w.limits.nano_cpus) =>
        {
            let asked = berth_domain::QuotaUse {
                workspaces: 0,
                ..super::quota_use(l)
            };
            crate::tenants::check(state, &w.tenant, asked, Some(&w.id)).await
        }
        _ => Ok(crate::tenants::QuotaHold::none()),
    }
}

/// The workspace's secret bindings after the request's additions (replacing one of the same
/// name) and removals; `None` when they stay as they are. A placeholder binding replaced by
/// another keeps its placeholder, so the variable in the running workspace stays valid.
async fn new_secrets(
    state: &AppState,
    w: &Workspace,
    req: &api::UpdateWorkspace,
) -> ApiResult<Option<Vec<SecretUse>>> {
    if req.secrets.is_none() && req.remove_secrets.is_none() {
        return Ok(None);
    }
    let added = super::parse_secret_uses(&w.id, req.secrets.as_deref().unwrap_or_default())?;
    let removed = req.remove_secrets.as_deref().unwrap_or_default();
    let current = state.store.secret_uses(Some(&w.id)).await?;
    for name in removed {
        if !crate::vault::valid_name(name) {
            return Err(ApiError::invalid(format!(
                "secret name {name:?} is not valid"
            )));
        }
        if added.iter().any(|u| &u.name == name) {
            return Err(ApiError::new(
                ErrorCode::Conflict,
                format!("secret {name} is both bound and removed"),
            ));
        }
        if !current.iter().any(|u| &u.name == name) {
            return Err(ApiError::not_found(format!(
                "workspace {} does not use secret {name}",
                w.qualified_name()
            )));
        }
    }
    super::check_secrets_exist(state, &w.tenant, &added).await?;
    let mut next: Vec<SecretUse> = current
        .iter()
        .filter(|u| !removed.contains(&u.name) && !added.iter().any(|a| a.name == u.name))
        .cloned()
        .collect();
    for mut a in added {
        if let Some(old) = current.iter().find(|u| u.name == a.name) {
            if old.delivery == a.delivery {
                a.placeholder = old.placeholder.clone();
            }
        }
        next.push(a);
    }
    next.sort_by(|a, b| a.name.cmp(&b.name));
    Ok((next != current).then_some(next))
}

/// The requested template list, names valid and templates existing; `None` when it is the
/// list attached now.
async fn new_templates(
    state: &AppState,
    w: &Workspace,
    names: &[String],
) -> ApiResult<Option<Vec<Name>>> {
    let mut list = Vec::new();
    for n in names {
        let name = crate::egress::policy::template_name(n)?;
        if list.contains(&name) {
            return Err(ApiError::invalid(format!(
                "egress template {name} is named twice"
            )));
        }
        let tenant = w.tenant.as_str();
        if crate::egress::find_template(&state.store, tenant, name.as_str())
            .await?
            .is_none()
        {
            return Err(crate::egress::policy::unknown_template(
                tenant,
                name.as_str(),
            ));
        }
        list.push(name);
    }
    let current = state.store.workspace_egress_templates(&w.id).await?;
    let same =
        current.len() == list.len() && current.iter().zip(&list).all(|(c, n)| c == n.as_str());
    Ok((!same).then_some(list))
}

/// Stores the plan and applies what can be applied live.
async fn apply(state: &AppState, w: &Workspace, plan: Plan) -> ApiResult<Updated> {
    let running = w.state == WorkspaceState::Running && w.container_id.is_some();
    let mut u = Updated {
        workspace: w.clone(),
        changed: Vec::new(),
        pending_restart: Vec::new(),
        live_error: None,
        placeholders: BTreeMap::new(),
        exposed: Vec::new(),
    };
    if let Some(l) = plan.limits {
        apply_limits(state, w, l, running, &mut u).await?;
    }
    if let Some(next) = plan.secrets {
        apply_secrets(state, w, next, running, &mut u).await?;
    }
    if let Some(list) = plan.templates {
        for old in state.store.workspace_egress_templates(&w.id).await? {
            state.store.detach_egress_template(&w.id, &old).await?;
        }
        for t in &list {
            crate::egress::policy::attach_to(state, w, t).await?;
        }
        crate::egress::refresh(state, std::slice::from_ref(&w.id)).await;
        u.changed.push("egress_templates".into());
    }
    if let Some(p) = plan.approval {
        state.store.set_workspace_approval(&w.id, p).await?;
        u.changed.push("approval".into());
    }
    if let Some(m) = plan.mcp_servers {
        state.store.set_workspace_mcp_servers(&w.id, &m).await?;
        u.changed.push("mcp_servers".into());
    }
    u.workspace = state.store.workspace(&w.id).await?;
    Ok(u)
}

/// Stores the caps and gives them to the running container; what the engine refuses (or a
/// stopped workspace) applies at the next start.
async fn apply_limits(
    state: &AppState,
    w: &Workspace,
    l: Limits,
    running: bool,
    u: &mut Updated,
) -> ApiResult<()> {
    let fields: Vec<String> = [
        ("memory", l.memory_bytes != w.limits.memory_bytes),
        ("cpus", l.nano_cpus != w.limits.nano_cpus),
        ("pids", l.pids != w.limits.pids),
    ]
    .into_iter()
    .filter(|(_, differs)| *differs)
    .map(|(f, _)| f.to_owned())
    .collect();
    state.store.set_workspace_limits(&w.id, &l).await?;
    u.changed.extend(fields.iter().cloned());
    let live = match (&w.container_id, running) {
        (Some(c), true) => state.host.runtime.update_limits(c, &l).await,
        _ => {
            u.pending_restart.extend(fields);
            return Ok(());
        }
    };
    if let Err(e) = live {
        tracing::info!(workspace = %w.qualified_name(), error = %e, "limits apply at the next start");
        u.live_error = Some(e.to_string());
        u.pending_restart.extend(fields);
    }
    Ok(())
}

/// Stores the bindings and reloads the proxy's placeholder secrets.
async fn apply_secrets(
    state: &AppState,
    w: &Workspace,
    next: Vec<SecretUse>,
    running: bool,
    u: &mut Updated,
) -> ApiResult<()> {
    let current = state.store.secret_uses(Some(&w.id)).await?;
    state.store.set_secret_uses(&w.id, &next).await?;
    crate::egress::reload_secrets(state, &w.id).await;
    u.changed.push("secrets".into());
    let old = |name: &str| current.iter().find(|c| c.name == name);
    let mut env_changed = !running;
    for n in &next {
        let before = old(&n.name);
        if n.delivery.exposes() {
            env_changed |= before != Some(n);
            if before.is_none_or(|b| !b.delivery.exposes()) {
                u.exposed.push(n.clone());
            }
        } else if before.is_none_or(|b| b.placeholder != n.placeholder) {
            u.placeholders.insert(n.name.clone(), n.placeholder.clone());
        }
    }
    env_changed |= current
        .iter()
        .any(|c| c.delivery.exposes() && !next.iter().any(|n| n.name == c.name));
    if env_changed {
        u.pending_restart.push("secrets".into());
    }
    Ok(())
}
