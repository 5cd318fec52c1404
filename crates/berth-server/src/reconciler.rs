//! The reconciler: compares what the engine runs with what the store says, on start-up and
//! then periodically, and writes down what it finds (a vanished container, an OOM kill, a
//! workspace that exited on its own).
//!
//! A pass costs one engine call while nothing changes: the listing of the server's containers
//! (or, while the engine's event stream is followed, the last listing as the events have patched
//! it, with a fresh listing every [`LISTING_EVERY`] passes as a safety net). Only a workspace
//! whose stored state that listing does not confirm is inspected.
//!
//! On start-up it first recovers: a workspace the store says is running whose container no
//! longer runs (the host or the engine restarted while the server was down) is started again,
//! in the background, a few at a time, rather than marked failed.

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use berth_domain::{Failure, FailureKind, Transition, WorkspaceState};
use berth_runtime::{ContainerState, ContainerStatus, OomReading};
use berth_store::{AuditRecord, Workspace};

use crate::state::{AppState, LABEL_SERVER};

/// Actor name used in the audit log for what the reconciler does.
pub const ACTOR: &str = "reconciler";

/// While the engine's event stream is followed, one pass in this many lists the containers (the
/// safety net for an event missed); the others work from the last listing as the events since
/// have changed it, without an engine call.
const LISTING_EVERY: u32 = 15;

pub fn spawn(state: Arc<AppState>) -> tokio::task::JoinHandle<()> {
    tokio::spawn(async move {
        let mut tick = tokio::time::interval(state.config.reconcile_interval);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let mut disk = crate::disk::Level::Ok;
        let mut mem = Memory::default();
        let label = format!("{LABEL_SERVER}={}", state.host.server_id);
        let mut events: Option<berth_runtime::EventStream> = None;
        // Ticks since the stream was (re)opened, and since the last listing.
        let (mut followed, mut since_listing) = (0u32, 0u32);
        loop {
            tokio::select! {
                _ = tick.tick() => {}
                ev = next_event(&mut events) => {
                    match ev {
                        // Only noted: the next tick's pass settles it, as it would have
                        // found it by listing (`podman rm -f` reports `die` well before
                        // `remove`: settling at once would call a removed container exited).
                        Some(Ok(e)) => mem.apply(&e),
                        Some(Err(e)) => {
                            tracing::debug!(error = %e, "engine event stream unavailable");
                            events = None;
                        }
                        None => events = None,
                    }
                    continue;
                }
            }
            disk = crate::disk::observe(&state, disk).await;
            if events.is_none() {
                events = Some(state.host.runtime.container_events(&label));
                followed = 0;
            } else {
                followed = followed.saturating_add(1);
            }
            // The stream is only connected once it has been polled (during the wait for this
            // tick): the listings up to then may predate it, so they do not count.
            let list = followed < 2 || since_listing + 1 >= LISTING_EVERY;
            since_listing = if list { 0 } else { since_listing + 1 };
            run_pass(&state, &mut mem, list).await;
        }
    })
}

async fn next_event(
    events: &mut Option<berth_runtime::EventStream>,
) -> Option<Result<berth_runtime::ContainerEvent, berth_runtime::RuntimeError>> {
    match events {
        Some(s) => futures_util::StreamExt::next(s).await,
        None => std::future::pending().await,
    }
}

async fn run_pass(state: &Arc<AppState>, mem: &mut Memory, list: bool) {
    let t0 = std::time::Instant::now();
    match pass_with(state, mem, list).await {
        Ok(s) => tracing::debug!(
            workspaces = s.workspaces,
            busy = s.busy,
            engine_calls = s.engine_calls,
            inspected = s.inspected,
            elapsed_us = t0.elapsed().as_micros() as u64,
            "reconcile pass"
        ),
        Err(e) => tracing::warn!(error = %e, "reconcile pass failed"),
    }
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

/// What the periodic passes remember from one to the next: the host pid of each running
/// container's init, learnt from an inspect, so that a container that keeps running costs no
/// engine call of its own (its OOM counter is read from the kernel with that pid, which is
/// trusted only while it is still in the container's cgroup).
pub struct Memory {
    pids: HashMap<String, u32>,
    /// The last listing (container id → state), patched by the engine's events since.
    listed: Option<HashMap<String, ContainerState>>,
    probe: OomProbe,
}

/// Reads the OOM-kill counter of a container through a remembered pid.
type OomProbe = fn(pid: u32, container_id: &str) -> OomReading;

impl Default for Memory {
    fn default() -> Self {
        Self {
            pids: HashMap::new(),
            listed: None,
            probe: berth_runtime::container_oom_kills,
        }
    }
}

impl Memory {
    /// Patches the last listing with an engine event. Actions that do not change whether the
    /// container runs (`init`, `exec…`, `kill` before its `die`, …) leave it as it is.
    fn apply(&mut self, e: &berth_runtime::ContainerEvent) {
        let Some(listed) = self.listed.as_mut() else {
            return;
        };
        let state = match e.action.as_str() {
            "create" => ContainerState::Created,
            "start" | "unpause" | "restart" => ContainerState::Running,
            "pause" => ContainerState::Paused,
            "die" | "stop" => ContainerState::Exited,
            "remove" | "destroy" => {
                listed.remove(&e.id);
                self.pids.remove(&e.id);
                return;
            }
            _ => return,
        };
        if state != ContainerState::Running {
            self.pids.remove(&e.id);
        }
        listed.insert(e.id.clone(), state);
    }
}

/// What one pass did, for the log (and the density benchmark, which reads it there).
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct PassStats {
    /// Workspaces in the store.
    pub workspaces: usize,
    /// Workspaces left alone because a lifecycle operation held them.
    pub busy: usize,
    /// Engine calls the pass made (one listing, plus one inspect per workspace whose state
    /// the listing did not settle).
    pub engine_calls: usize,
    /// Workspaces whose container was inspected.
    pub inspected: usize,
}

/// One pass over all workspaces without memory of earlier passes (every running container is
/// inspected once). Workspaces with a lifecycle operation in flight are skipped.
pub async fn pass(state: &Arc<AppState>) -> anyhow::Result<PassStats> {
    pass_with(state, &mut Memory::default(), true).await
}

/// What the listing says about one workspace.
#[derive(Debug, PartialEq, Eq)]
enum Plan {
    /// Nothing to do: stopped or failed, and its container (if any) is not running.
    Settled,
    /// Running and its container runs with a pid learnt earlier: serve it, read its OOM counter.
    Steady { container: String, pid: u32 },
    /// Anything else: inspect the container and settle it (a state change, an operation the
    /// server did not finish, a container not listed, a pid not known yet).
    Inspect,
}

fn plan(w: &Workspace, mem: &Memory) -> Plan {
    let Some(c) = w.container_id.as_deref() else {
        return match w.state {
            WorkspaceState::Stopped | WorkspaceState::Failed => Plan::Settled,
            _ => Plan::Inspect,
        };
    };
    let engine = mem.listed.as_ref().and_then(|l| l.get(c));
    let running = matches!(engine, Some(ContainerState::Running));
    match w.state {
        WorkspaceState::Running if running => match mem.pids.get(c) {
            Some(pid) => Plan::Steady {
                container: c.to_owned(),
                pid: *pid,
            },
            None => Plan::Inspect,
        },
        // Every workspace container carries the server label from its creation, so one the
        // listing lacks does not exist: nothing to notice for a workspace that is not running.
        WorkspaceState::Stopped | WorkspaceState::Failed if !running => Plan::Settled,
        _ => Plan::Inspect,
    }
}

/// One pass over all workspaces, in at most one engine call while nothing changes: the listing
/// of the server's containers (`list`, or when there is no earlier one; else the earlier one as
/// the engine's events have patched it). Only a workspace whose stored state the listing does
/// not confirm costs an inspect (and is then settled as before). Workspaces with a lifecycle
/// operation in flight are skipped.
pub async fn pass_with(
    state: &Arc<AppState>,
    mem: &mut Memory,
    list: bool,
) -> anyhow::Result<PassStats> {
    let mut stats = PassStats::default();
    // Lock every workspace no operation holds, then read the store and the engine: for the
    // locked ones, both stay current until their lock is released.
    let mut held = lock_idle(state).await?;
    let workspaces = state.store.list_workspaces(None).await?;
    stats.workspaces = workspaces.len();
    refresh_listing(state, mem, list, &mut stats).await?;
    let mut unsettled = Vec::new();
    for w in workspaces {
        let Some(guard) = held.remove(&w.id) else {
            stats.busy += 1;
            continue;
        };
        let settled = match plan(&w, mem) {
            Plan::Settled => true,
            Plan::Steady { container, pid } => steady(state, mem, &w, &container, pid).await,
            Plan::Inspect => false,
        };
        if !settled {
            unsettled.push(w);
        }
        drop(guard);
    }
    drop(held);
    for w in unsettled {
        reconcile_if_free(state, mem, &w.id, &mut stats).await?;
    }
    Ok(stats)
}

/// The lock of every workspace no lifecycle operation holds now, held by the pass.
async fn lock_idle(
    state: &AppState,
) -> anyhow::Result<HashMap<berth_domain::WorkspaceId, tokio::sync::OwnedMutexGuard<()>>> {
    let mut held = HashMap::new();
    for w in state.store.list_workspaces(None).await? {
        if let Ok(guard) = state.lock_for(&w.id).try_lock_owned() {
            held.insert(w.id, guard);
        }
    }
    Ok(held)
}

/// Lists the server's containers (`list`, or when there is no earlier listing) into `mem`,
/// else keeps the earlier one as the events patched it; forgets pids of stopped containers.
async fn refresh_listing(
    state: &AppState,
    mem: &mut Memory,
    list: bool,
    stats: &mut PassStats,
) -> anyhow::Result<()> {
    let listed = match mem.listed.take() {
        Some(l) if !list => l,
        _ => {
            stats.engine_calls += 1;
            state
                .host
                .runtime
                .list_container_states(&format!("{LABEL_SERVER}={}", state.host.server_id))
                .await?
                .into_iter()
                .map(|c| (c.id, c.state))
                .collect()
        }
    };
    // A pid is worth remembering only while its container keeps running.
    mem.pids.retain(|id, _| {
        listed
            .get(id.as_str())
            .is_some_and(|s| matches!(s, ContainerState::Running))
    });
    mem.listed = Some(listed);
    Ok(())
}

/// Checks a workspace the listing shows running through its remembered pid: serves its
/// channel and records new OOM kills. False when the pid is no longer the container's (the
/// workspace must be inspected).
async fn steady(
    state: &Arc<AppState>,
    mem: &mut Memory,
    w: &Workspace,
    container: &str,
    pid: u32,
) -> bool {
    match (mem.probe)(pid, container) {
        OomReading::NotInContainer => {
            mem.pids.remove(container);
            false
        }
        reading => {
            crate::lifecycle::serve_channel(state, &w.id).await;
            if let OomReading::Count(counter) = reading {
                if let Err(e) = record_oom(state, w, counter).await {
                    tracing::warn!(workspace = %w.qualified_name(), error = %e, "recording OOM kills failed");
                }
            }
            true
        }
    }
}

/// Inspects and settles workspace `id` unless an operation took it meanwhile (then it counts
/// as busy), re-reading it under its lock.
async fn reconcile_if_free(
    state: &Arc<AppState>,
    mem: &mut Memory,
    id: &berth_domain::WorkspaceId,
    stats: &mut PassStats,
) -> anyhow::Result<()> {
    let lock = state.lock_for(id);
    let Ok(_guard) = lock.try_lock() else {
        stats.busy += 1;
        return Ok(());
    };
    // Re-read under the lock: an operation may have run since the guard above was dropped.
    let Some(w) = state.store.find_workspace_by_id(id).await? else {
        return Ok(());
    };
    stats.engine_calls += 1;
    stats.inspected += 1;
    if w.state == WorkspaceState::Removing && w.container_id.is_some() {
        stats.engine_calls += 1;
    }
    if let Err(e) = reconcile_one(state, &w, mem).await {
        tracing::warn!(workspace = %w.qualified_name(), error = %e, "reconcile failed");
    }
    Ok(())
}

/// Settles one workspace from an inspect of its container (the one engine call counted for it
/// by [`pass_with`]; a `Removing` workspace's container removal comes on top).
async fn reconcile_one(
    state: &Arc<AppState>,
    w: &Workspace,
    mem: &mut Memory,
) -> anyhow::Result<()> {
    let observed = inspect_and_remember(state, w, mem).await?;
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
                mark_failed(state, w, f).await?;
            }
        }
        (WorkspaceState::Removing, _) => finish_removal(state, w).await?,
        // Left for the start-up recovery, which restarts it once the engine answers.
        (WorkspaceState::Running | WorkspaceState::Starting, _)
            if RECOVERY_PENDING.load(Ordering::SeqCst) && !alive => {}
        (WorkspaceState::Running | WorkspaceState::Starting, None) => {
            mark_failed(
                state,
                w,
                Failure::new(
                    FailureKind::Vanished,
                    "the workspace container disappeared from the engine; `berth workspace start` recreates it",
                ),
            )
            .await?;
        }
        (WorkspaceState::Running | WorkspaceState::Starting, Some(c)) => {
            settle_live(state, w, &c, mem).await?
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
        // A failed provisioning leaves the container running on purpose (for `--retry`).
        (WorkspaceState::Stopped | WorkspaceState::Failed, Some(c))
            if matches!(c.state, ContainerState::Running)
                && !w
                    .failure
                    .as_ref()
                    .is_some_and(|(f, _)| f.reason == FailureKind::Provision) =>
        {
            adopt_running(state, w).await?
        }
        _ => {}
    }
    Ok(())
}

/// Inspects the workspace's container (none without a container id) and notes what it shows
/// in `mem`: its init pid while it runs, its state in the last listing.
async fn inspect_and_remember(
    state: &AppState,
    w: &Workspace,
    mem: &mut Memory,
) -> anyhow::Result<Option<ContainerStatus>> {
    let observed = match &w.container_id {
        Some(c) => state.host.runtime.inspect_container(c).await?,
        None => None,
    };
    if let Some(c) = &observed {
        match (&c.state, c.pid) {
            (ContainerState::Running, Some(pid)) => mem.pids.insert(c.id.clone(), pid),
            _ => mem.pids.remove(&c.id),
        };
        if let Some(listed) = mem.listed.as_mut() {
            listed.insert(c.id.clone(), c.state.clone());
        }
    }
    Ok(observed)
}

/// Marks the workspace failed with `failure`, logs it and records `workspace.failed`.
async fn mark_failed(state: &AppState, w: &Workspace, failure: Failure) -> anyhow::Result<()> {
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
    Ok(())
}

/// Finishes a removal the server did not finish: the container, the workspace's host
/// directory, then the row.
async fn finish_removal(state: &AppState, w: &Workspace) -> anyhow::Result<()> {
    if let Some(c) = &w.container_id {
        state.host.runtime.remove_container(c).await?;
    }
    if let Some(dir) = state.channel_dir(&w.id).parent() {
        crate::lifecycle::remove_workspace_dir(dir).await;
    }
    state.store.delete_workspace(&w.id).await?;
    Ok(())
}

/// A running or starting workspace whose container exists: running, it is served (and its OOM
/// kills counted); stopped on its own, the workspace failed with the container's exit.
async fn settle_live(
    state: &Arc<AppState>,
    w: &Workspace,
    c: &ContainerStatus,
    mem: &mut Memory,
) -> anyhow::Result<()> {
    if !matches!(c.state, ContainerState::Running) {
        let code = c.exit_code.unwrap_or(-1);
        return mark_failed(state, w, Failure::from_unexpected_exit(code, c.oom_killed)).await;
    }
    if w.state == WorkspaceState::Starting {
        state
            .store
            .set_state(&w.id, WorkspaceState::Running, None)
            .await?;
    }
    crate::lifecycle::serve_channel(state, &w.id).await;
    if let Some(pid) = c.pid {
        if let OomReading::Count(counter) = (mem.probe)(pid, &c.id) {
            record_oom(state, w, counter).await?;
        }
    }
    Ok(())
}

/// A stopped or failed workspace whose container was started outside berth (e.g. `podman
/// start`): it is running, say so.
async fn adopt_running(state: &AppState, w: &Workspace) -> anyhow::Result<()> {
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
    Ok(())
}

/// Records new kills on the workspace when the container's memory-cgroup OOM-kill counter (the
/// engine's own flag is unreliable) moved from what the store has seen; a counter that did not
/// move costs no write.
async fn record_oom(state: &AppState, w: &Workspace, counter: u64) -> anyhow::Result<()> {
    if counter == w.memcg_oom_seen {
        return Ok(());
    }
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
        tenant: Some(w.tenant.to_string()),
        ..AuditRecord::default()
    };
    if let Err(e) = state.store.append_audit(&r).await {
        tracing::error!(error = %e, "could not write audit record");
    }
}

#[cfg(test)]
#[path = "reconciler_tests.rs"]
mod tests;
