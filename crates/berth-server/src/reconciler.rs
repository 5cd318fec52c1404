//! The reconciler: compares what the engine runs with what the store says, on start-up and
//! then periodically, and writes down what it finds (a vanished container, an OOM kill, a
//! workspace that exited on its own).
//!
//! On start-up it first recovers: a workspace the store says is running whose container no
//! longer runs (the host or the engine restarted while the server was down) is started again,
//! in the background, a few at a time, rather than marked failed.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

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

/// Workspaces restarted at once by the start-up recovery.
const RECOVER_PARALLEL: usize = 4;
/// How often the start-up recovery asks again for an engine that does not answer yet.
const ENGINE_RETRY: Duration = Duration::from_secs(2);

/// Set while the start-up recovery waits for the engine: until it has run, a stopped container
/// of a running workspace is left for it to restart, not marked failed by a periodic pass.
static RECOVERY_PENDING: AtomicBool = AtomicBool::new(false);

/// Start-up: recovers what a host or engine restart stopped, then settles the rest with a
/// [`pass`]. When the engine does not answer yet (it may start after berth at boot), this is
/// retried in the background until it does.
pub async fn startup(state: &Arc<AppState>) {
    match recover_all(state).await {
        Ok(()) => {
            if let Err(e) = pass(state).await {
                tracing::warn!(error = %e, "initial reconcile failed");
            }
        }
        Err(e) => {
            tracing::warn!(error = %e, "engine not reachable at start-up; workspaces that were running are restarted once it answers");
            RECOVERY_PENDING.store(true, Ordering::SeqCst);
            let state = state.clone();
            tokio::spawn(async move {
                loop {
                    tokio::time::sleep(ENGINE_RETRY).await;
                    if recover_all(&state).await.is_ok() {
                        RECOVERY_PENDING.store(false, Ordering::SeqCst);
                        return;
                    }
                }
            });
        }
    }
}

/// Finds the workspaces to restart, takes their locks (so passes leave them alone) and restarts
/// them in the background. Fails only when the engine cannot be asked.
async fn recover_all(state: &Arc<AppState>) -> anyhow::Result<()> {
    let mut doomed = Vec::new();
    for w in state.store.list_workspaces(None).await? {
        if !matches!(w.state, WorkspaceState::Running | WorkspaceState::Starting) {
            continue;
        }
        let observed = match &w.container_id {
            Some(c) => state.host.runtime.inspect_container(c).await?,
            None => None,
        };
        if observed.is_some_and(|c| matches!(c.state, ContainerState::Running)) {
            continue;
        }
        let Ok(guard) = state.lock_for(&w.id).try_lock_owned() else {
            continue;
        };
        doomed.push((w, guard));
    }
    if doomed.is_empty() {
        return Ok(());
    }
    tracing::info!(
        count = doomed.len(),
        "restarting workspaces that were running before the restart"
    );
    let gate = Arc::new(tokio::sync::Semaphore::new(RECOVER_PARALLEL));
    for (w, guard) in doomed {
        let (state, gate) = (state.clone(), gate.clone());
        tokio::spawn(async move {
            let _permit = gate.acquire_owned().await;
            recover_one(&state, &w).await;
            drop(guard);
        });
    }
    Ok(())
}

async fn recover_one(state: &Arc<AppState>, w: &Workspace) {
    // Re-read under the lock: the listing may be stale.
    let w = match state.store.find_workspace_by_id(&w.id).await {
        Ok(Some(w)) => w,
        _ => return,
    };
    match crate::lifecycle::recover(state, &w).await {
        Ok(_) => {
            tracing::info!(workspace = %w.qualified_name(), "workspace restarted after the restart of the server");
            crate::lifecycle::serve_channel(state, &w.id).await;
            audit(
                state,
                &w,
                "workspace.recovered",
                "ok",
                "the container was not running after a restart; started it again",
            )
            .await;
        }
        Err(e) => {
            tracing::warn!(workspace = %w.qualified_name(), error = %e.message, "restarting the workspace failed");
            audit(state, &w, "workspace.recovered", "error", &e.message).await;
        }
    }
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
        Some(c) => state.host.runtime.inspect_container(c).await?,
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
    let alive = observed
        .as_ref()
        .is_some_and(|c| matches!(c.state, ContainerState::Running));
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
                state.host.runtime.remove_container(c).await?;
            }
            if let Some(dir) = state.channel_dir(&w.id).parent() {
                crate::lifecycle::remove_workspace_dir(dir).await;
            }
            state.store.delete_workspace(&w.id).await?;
        }
        // Left for the start-up recovery, which restarts it once the engine answers.
        (WorkspaceState::Running | WorkspaceState::Starting, _)
            if RECOVERY_PENDING.load(Ordering::SeqCst) && !alive => {}
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
                crate::lifecycle::serve_channel(state, &w.id).await;
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
