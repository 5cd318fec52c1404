//! The reconciler: compares what the engine runs with what the store says, on start-up and
//! then periodically, and writes down what it finds (a vanished container, an OOM kill, a
//! workspace that exited on its own).

use std::sync::Arc;

use berth_domain::{Failure, FailureKind, Transition, WorkspaceState};
use berth_runtime::ContainerState;
use berth_store::{AuditRecord, Workspace};

use crate::state::AppState;

/// Actor name used in the audit log for what the reconciler does.
pub const ACTOR: &str = "reconciler";

pub fn spawn(state: Arc<AppState>) -> tokio::task::JoinHandle<()> {
    tokio::spawn(async move {
        let mut tick = tokio::time::interval(state.config.reconcile_interval);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let mut disk = crate::disk::Level::Ok;
        loop {
            tick.tick().await;
            disk = crate::disk::observe(&state, disk).await;
            if let Err(e) = pass(&state).await {
                tracing::warn!(error = %e, "reconcile pass failed");
            }
        }
    })
}

/// One pass over all workspaces. Workspaces with a lifecycle operation in flight are skipped.
pub async fn pass(state: &Arc<AppState>) -> anyhow::Result<()> {
    for w in state.store.list_workspaces(None).await? {
        let lock = state.lock_for(&w.id);
        let Ok(_guard) = lock.try_lock() else {
            continue;
        };
        // Re-read under the lock: the listing may be stale.
        let Some(w) = state.store.find_workspace_by_id(&w.id).await? else {
            continue;
        };
        if let Err(e) = reconcile_one(state, &w).await {
            tracing::warn!(workspace = %w.qualified_name(), error = %e, "reconcile failed");
        }
    }
    Ok(())
}

async fn reconcile_one(state: &Arc<AppState>, w: &Workspace) -> anyhow::Result<()> {
    let observed = match &w.container_id {
        Some(c) => state.runtime.inspect_container(c).await?,
        None => None,
    };
    let fail = |failure: Failure| async move {
        tracing::warn!(workspace = %w.qualified_name(), reason = failure.reason.as_str(), "{}", failure.message);
        state
            .store
            .set_state(&w.id, WorkspaceState::Failed, Some(&failure))
            .await?;
        audit(
            state,
            w,
            "workspace.failed",
            failure.reason.as_str(),
            &failure.message,
        )
        .await;
        anyhow::Ok(())
    };
    match (w.state, observed) {
        // A server crash in the middle of an operation: settle it from what the engine shows.
        (WorkspaceState::Creating, _) => {
            let f = Failure::new(
                FailureKind::StartFailed,
                "the server stopped while creating this workspace; remove it and create it again",
            );
            if w.state.apply(Transition::Fail).is_ok() {
                fail(f).await?;
            }
        }
        (WorkspaceState::Removing, _) => {
            if let Some(c) = &w.container_id {
                state.runtime.remove_container(c).await?;
            }
            if let Some(dir) = state.channel_dir(&w.id).parent() {
                crate::lifecycle::remove_workspace_dir(dir).await;
            }
            state.store.delete_workspace(&w.id).await?;
        }
        (WorkspaceState::Running | WorkspaceState::Starting, None) => {
            fail(Failure::new(
                FailureKind::Vanished,
                "the workspace container disappeared from the engine; `berth workspace start` recreates it",
            ))
            .await?;
        }
        (WorkspaceState::Running | WorkspaceState::Starting, Some(c)) => {
            if matches!(c.state, ContainerState::Running) {
                if w.state == WorkspaceState::Starting {
                    state
                        .store
                        .set_state(&w.id, WorkspaceState::Running, None)
                        .await?;
                }
                crate::egress::activate(state, &w.id).await;
                observe_oom(state, w, c.pid).await?;
            } else {
                let code = c.exit_code.unwrap_or(-1);
                fail(Failure::from_unexpected_exit(code, c.oom_killed)).await?;
            }
        }
        (WorkspaceState::Stopping, c) => {
            let running = c.is_some_and(|c| matches!(c.state, ContainerState::Running));
            if !running {
                state
                    .store
                    .set_state(&w.id, WorkspaceState::Stopped, None)
                    .await?;
            }
        }
        (WorkspaceState::Stopped | WorkspaceState::Failed, Some(c))
            if matches!(c.state, ContainerState::Running) =>
        {
            // Started outside berth (e.g. `podman start`): it is running, say so.
            state
                .store
                .set_state(&w.id, WorkspaceState::Running, None)
                .await?;
            audit(
                state,
                w,
                "workspace.observed_running",
                "ok",
                "container found running",
            )
            .await;
        }
        _ => {}
    }
    Ok(())
}

/// Reads the container's memory-cgroup OOM-kill counter (the engine's own flag is unreliable)
/// and records new kills on the workspace.
async fn observe_oom(state: &AppState, w: &Workspace, pid: Option<u32>) -> anyhow::Result<()> {
    let Some(pid) = pid else { return Ok(()) };
    let Some(counter) = berth_runtime::memcg_oom_kills(pid) else {
        return Ok(());
    };
    let new = state.store.observe_oom_counter(&w.id, counter).await?;
    if new > 0 {
        let msg = format!("{new} process(es) killed for exceeding the memory limit");
        tracing::warn!(workspace = %w.qualified_name(), "{msg}");
        audit(state, w, "workspace.oom", "oom", &msg).await;
    }
    Ok(())
}

async fn audit(state: &AppState, w: &Workspace, action: &str, result: &str, detail: &str) {
    let r = AuditRecord {
        actor: ACTOR.to_owned(),
        action: action.to_owned(),
        target: w.qualified_name(),
        result: result.to_owned(),
        detail: Some(detail.to_owned()),
    };
    if let Err(e) = state.store.append_audit(&r).await {
        tracing::error!(error = %e, "could not write audit record");
    }
}
