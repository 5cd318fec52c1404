//! The lifecycle as people ask for it: create, start, stop and remove on behalf of an actor,
//! each recorded in the audit log (with the workspace's `tenant/name` once known) and followed by
//! what the operation implies for the workspace's egress proxy and gateway. The HTTP handlers
//! call these; the reconciler and start-up recovery call the unaudited operations directly.

use std::sync::Arc;

use berth_api as api;
use berth_store::{AuditRecord, Workspace};

use super::{check_network_allowed, CreateSpec};
use crate::auth::{audit, Actor};
use crate::error::{ApiError, ApiResult};
use crate::state::AppState;

/// The audit target: `tenant/name` when known, else what the caller typed.
fn target_of<E>(result: &Result<Workspace, E>, raw: &str) -> String {
    match result {
        Ok(w) => w.qualified_name(),
        Err(_) => raw.to_owned(),
    }
}

/// The audit target of a create request, before anything is validated.
fn create_target(req: &ApiResult<api::CreateWorkspace>) -> String {
    match req {
        Ok(r) => match &r.tenant {
            Some(t) if !r.name.contains('/') => format!("{t}/{}", r.name),
            _ if r.name.contains('/') => r.name.clone(),
            _ => format!("default/{}", r.name),
        },
        Err(_) => "(invalid request)".to_owned(),
    }
}

/// Creates a workspace (see [`super::create`]); `req` is `Err` when the request was malformed,
/// which is recorded too. Secrets delivered for real (env/file) are recorded as exposed.
pub async fn create_workspace(
    state: &Arc<AppState>,
    actor: &Actor,
    req: ApiResult<api::CreateWorkspace>,
) -> ApiResult<Workspace> {
    let target = create_target(&req);
    let result = async {
        let req = req?;
        check_plain_name(&req.name)?;
        check_network_allowed(&actor.role, req.network.as_deref())?;
        let spec = CreateSpec::from_request(state, &req)?;
        super::create(state, spec).await
    }
    .await;
    audit(&state.store, actor, "workspace.create", &target, &result).await;
    let w = result?;
    record_exposed_secrets(state, actor, &w).await?;
    super::serve_channel(state, &w.id).await;
    Ok(w)
}

/// `name` is the workspace's own name; the tenant goes in `tenant` (a `tenant/name` here would
/// quietly create the workspace in another tenant than the field says).
fn check_plain_name(name: &str) -> ApiResult<()> {
    berth_domain::Name::parse(name)
        .map(|_| ())
        .map_err(|e| ApiError::invalid(format!("name: {e} (give the tenant in `tenant`)")))
}

/// One `secret.expose` audit record per secret the workspace gets as a real value.
async fn record_exposed_secrets(state: &AppState, actor: &Actor, w: &Workspace) -> ApiResult<()> {
    for u in state.store.secret_uses(Some(&w.id)).await? {
        if u.delivery.exposes() {
            let rec = AuditRecord {
                actor: actor.token_id.clone(),
                action: "secret.expose".into(),
                target: format!("{}/{}", w.tenant, u.name),
                result: "ok".into(),
                detail: Some(format!(
                    "delivered as {} into {}",
                    u.delivery,
                    w.qualified_name()
                )),
            };
            state.store.append_audit(&rec).await?;
        }
    }
    Ok(())
}

/// Starts a stopped workspace and its egress proxy and gateway.
pub async fn start_workspace(
    state: &Arc<AppState>,
    actor: &Actor,
    ws: &str,
) -> ApiResult<Workspace> {
    let result = super::start(state, ws).await;
    audit(
        &state.store,
        actor,
        "workspace.start",
        &target_of(&result, ws),
        &result,
    )
    .await;
    let w = result?;
    super::serve_channel(state, &w.id).await;
    Ok(w)
}

/// Stops a workspace (its volume and sessions' scrollback stay).
pub async fn stop_workspace(state: &AppState, actor: &Actor, ws: &str) -> ApiResult<Workspace> {
    let result = super::stop(state, ws).await;
    audit(
        &state.store,
        actor,
        "workspace.stop",
        &target_of(&result, ws),
        &result,
    )
    .await;
    result
}

/// Removes a workspace (and its volume when `remove_volume`), closing its egress proxy.
pub async fn remove_workspace(
    state: &AppState,
    actor: &Actor,
    ws: &str,
    remove_volume: bool,
) -> ApiResult<Workspace> {
    let result = super::remove(state, ws, remove_volume).await;
    let action = if remove_volume {
        "workspace.remove_with_volume"
    } else {
        "workspace.remove"
    };
    audit(
        &state.store,
        actor,
        action,
        &target_of(&result, ws),
        &result,
    )
    .await;
    let w = result?;
    super::stop_channel(state, &w.id);
    Ok(w)
}
