//! Workspace backup and restore, streamed end to end (the archive is never held in memory).
//!
//! Both go through the engine, never through the host's view of the volume: a throwaway helper
//! container (never started) mounts the home volume where a workspace would, and the engine's
//! archive endpoints read or fill it, confined to that container. Backup rewrites the engine's
//! tar into berth's format ([`archive`]); restore validates every entry before the engine sees
//! it, fills a fresh volume, then creates the workspace on it through the ordinary create
//! path. A failed restore removes the volume, the helper and (through create's rollback) every
//! other object: nothing is left behind.
//!
//! A running workspace is copied live by default (files written during the copy may be caught
//! mid-write); `pause` freezes it for the copy so the archive is one point in time.

pub mod archive;
mod pipe;

use std::collections::{BTreeSet, HashMap};
use std::sync::Arc;

use berth_api::{BackupManifest, BackupTrailer, CreateWorkspace, RestoreQuery, UseSecret};
use berth_domain::{ErrorCode, Name, WorkspaceState};
use berth_runtime::{ContainerSpec, Mount};
use berth_store::Workspace;
use futures_util::StreamExt;

use crate::auth::{audit, Actor};
use crate::error::{ApiError, ApiResult};
use crate::lifecycle::{self, CreateSpec, HOME, WORKSPACE_UID};
use crate::state::{AppState, LABEL_MANAGED, LABEL_SERVER, LABEL_TENANT, LABEL_WORKSPACE};
use archive::ArchiveError;

/// Memory of the (never started) helper container; the engine requires a value.
const HELPER_MEMORY: i64 = 64 << 20;

/// Home volumes a restore is filling: a create or another restore of that name is refused
/// (409) until the restore hands over to the ordinary create.
static FILLING: std::sync::Mutex<BTreeSet<String>> = std::sync::Mutex::new(BTreeSet::new());

/// A restore's claim on a volume name, released on drop.
struct Claim(String);

impl Claim {
    fn take(volume: &str) -> Option<Self> {
        let mut set = berth_domain::sync::lock(&FILLING);
        set.insert(volume.to_owned())
            .then(|| Self(volume.to_owned()))
    }
}

impl Drop for Claim {
    fn drop(&mut self) {
        berth_domain::sync::lock(&FILLING).remove(&self.0);
    }
}

/// Refuses a create whose home volume a restore is filling right now.
pub fn refuse_if_restoring(state: &AppState, spec: &CreateSpec) -> ApiResult<()> {
    let volume = lifecycle::volume_name(state, &spec.tenant, &spec.name);
    let busy = berth_domain::sync::lock(&FILLING).contains(&volume);
    if busy {
        return Err(ApiError::new(
            ErrorCode::Conflict,
            format!(
                "workspace {}/{} is being restored from a backup",
                spec.tenant, spec.name
            ),
        ));
    }
    Ok(())
}

/// A backup being streamed: the suggested file name and the body.
pub struct Download {
    pub file_name: String,
    pub body: axum::body::Body,
}

/// What the workspace is, as a create request (secrets by name only).
async fn manifest(state: &AppState, w: &Workspace, paused: bool) -> ApiResult<BackupManifest> {
    let egress = state.store.egress_rules(&w.id).await?;
    let templates = state.store.workspace_egress_templates(&w.id).await?;
    let secrets = state
        .store
        .secret_uses(Some(&w.id))
        .await?
        .into_iter()
        .map(|u| UseSecret {
            name: u.name,
            delivery: Some(u.delivery.to_string()),
            hosts: u.hosts,
            headers: u.headers,
        })
        .collect();
    let approval = state.store.workspace_approval(&w.id).await?;
    Ok(BackupManifest {
        format: 1,
        berth_version: env!("CARGO_PKG_VERSION").to_owned(),
        created_at: berth_domain::Timestamp::now(),
        workspace: w.qualified_name(),
        image: w.image.clone(),
        paused,
        spec: CreateWorkspace {
            name: w.name.to_string(),
            tenant: Some(w.tenant.to_string()),
            memory: Some(w.limits.memory_bytes.to_string()),
            cpus: Some(w.limits.cpus().to_string()),
            pids: Some(w.limits.pids),
            image: Some(w.image.clone()),
            network: Some(w.network.clone()),
            egress: Some(egress),
            egress_templates: Some(templates),
            secrets: Some(secrets),
            approval: Some(approval.as_str().to_owned()),
            mcp_servers: (!w.mcp_servers.is_empty()).then(|| {
                w.mcp_servers
                    .iter()
                    .map(berth_api::McpServer::from_domain)
                    .collect()
            }),
            // The restored workspace is a plain one: its home already holds what the template
            // provisioned.
            template: None,
            params: None,
        },
    })
}

/// Creates the helper container that mounts `volume` at the home directory.
async fn helper(
    state: &AppState,
    volume: &str,
    image: &str,
    labels: HashMap<String, String>,
) -> ApiResult<String> {
    let suffix: u32 = rand::random();
    let spec = ContainerSpec {
        name: format!("berth-{}-archive-{suffix:08x}", state.host.server_id),
        image: image.to_owned(),
        user: format!("{WORKSPACE_UID}:{WORKSPACE_UID}"),
        cmd: vec!["true".to_owned()],
        labels,
        memory_bytes: HELPER_MEMORY,
        pids_limit: 16,
        mounts: vec![Mount::Volume {
            name: volume.to_owned(),
            target: HOME.to_owned(),
        }],
        network_mode: "none".to_owned(),
        ..Default::default()
    };
    Ok(state.host.runtime.create_container(&spec).await?)
}

fn labels(
    state: &AppState,
    tenant: &Name,
    workspace: Option<&Workspace>,
) -> HashMap<String, String> {
    let mut l = HashMap::from([
        (LABEL_MANAGED.to_owned(), "true".to_owned()),
        (LABEL_SERVER.to_owned(), state.host.server_id.clone()),
        (LABEL_TENANT.to_owned(), tenant.to_string()),
    ]);
    if let Some(w) = workspace {
        l.insert(LABEL_WORKSPACE.to_owned(), w.id.to_string());
    }
    l
}

/// An image the helper can be created from: the workspace's, else the server's default.
async fn helper_image(state: &AppState, preferred: &str) -> ApiResult<String> {
    if state.host.runtime.image_exists(preferred).await? {
        return Ok(preferred.to_owned());
    }
    let default = state.default_image();
    crate::lifecycle::ensure_image(state, &default).await?;
    Ok(default)
}

/// Starts streaming a backup of `w`. Set-up errors (engine down, workspace busy) are returned
/// here; an error during the copy aborts the body, and the archive then lacks its end marker.
/// `done` receives the outcome once the stream ends.
/// A backup of `ws` for `actor`, audited as `workspace.backup`: a backup that starts when its
/// stream ends (with the outcome), one that cannot start at once.
pub async fn audited_backup(
    state: &Arc<AppState>,
    actor: &Actor,
    ws: &str,
    pause: bool,
) -> ApiResult<Download> {
    let started = match lifecycle::resolve(state, ws).await {
        Ok(w) => {
            let target = w.qualified_name();
            let store = state.store.clone();
            let who = actor.clone();
            let done = move |result: Result<BackupTrailer, String>| {
                tokio::spawn(async move {
                    let result = result.map_err(|m| ApiError::new(ErrorCode::Internal, m));
                    audit(&store, &who, "workspace.backup", &target, &result).await;
                });
            };
            backup(state.clone(), w, pause, done).await
        }
        Err(e) => Err(e),
    };
    if let Err(e) = &started {
        let failed = Err::<(), _>(ApiError::new(e.code, e.message.clone()));
        audit(&state.store, actor, "workspace.backup", ws, &failed).await;
    }
    started
}

/// A restore for `actor` (whose role bounds what the archive may ask for), audited as
/// `workspace.restore`; `checked` is the transport's verdict on the body (its media type).
pub async fn audited_restore(
    state: &Arc<AppState>,
    actor: &Actor,
    q: RestoreQuery,
    checked: ApiResult<()>,
    body: axum::body::Body,
) -> ApiResult<Workspace> {
    let shown = match (&q.tenant, &q.name) {
        (Some(t), Some(n)) if !n.contains('/') => format!("{t}/{n}"),
        (_, Some(n)) => n.clone(),
        _ => "(name from the archive)".to_owned(),
    };
    let result = match checked {
        Ok(()) => restore(state.clone(), q, body, actor.role).await,
        Err(e) => Err(e),
    };
    let target = match &result {
        Ok(w) => w.qualified_name(),
        Err(_) => shown,
    };
    audit(&state.store, actor, "workspace.restore", &target, &result).await;
    if let Ok(w) = &result {
        lifecycle::serve_channel(state, &w.id).await;
    }
    result
}

/// A workspace's lifecycle lock, held while it is paused for a backup, and the container to
/// pause (none when the workspace stopped meanwhile).
type PauseHold = (tokio::sync::OwnedMutexGuard<()>, Option<String>);

/// Streams a backup of workspace `w` (paused for the copy when `pause` and it runs); `done`
/// gets the archive's trailer, or why the copy failed, once the body is written.
pub async fn backup(
    state: Arc<AppState>,
    w: Workspace,
    pause: bool,
    done: impl FnOnce(Result<BackupTrailer, String>) + Send + 'static,
) -> ApiResult<Download> {
    if matches!(w.state, WorkspaceState::Creating | WorkspaceState::Removing) {
        return Err(ApiError::new(
            ErrorCode::InvalidState,
            format!("workspace {} is {}", w.qualified_name(), w.state.as_str()),
        ));
    }
    let image = helper_image(&state, &w.image).await?;
    let guard = if pause && w.state == WorkspaceState::Running {
        hold_for_pause(&state, &w).await?
    } else {
        None
    };
    let helper = helper(
        &state,
        &w.volume,
        &image,
        labels(&state, &w.tenant, Some(&w)),
    )
    .await?;
    let paused = match guard.as_ref().and_then(|(_, c)| c.as_ref()) {
        Some(c) => match state.host.runtime.pause_container(c).await {
            Ok(()) => Some(c.clone()),
            Err(e) => {
                cleanup(&state, &helper, None).await;
                return Err(e.into());
            }
        },
        None => None,
    };
    let (manifest, source) = match open_home(&state, &w, &helper, paused.is_some()).await {
        Ok(s) => s,
        Err(e) => {
            cleanup(&state, &helper, paused.as_deref()).await;
            return Err(e);
        }
    };
    let (body, copy) = spawn_copy(manifest, source);
    let file_name = format!("{}-{}-{}.tar.zst", w.tenant, w.name, manifest_stamp());
    tokio::spawn(async move {
        let result = match copy.await {
            Ok(r) => r.map_err(|e| e.to_string()),
            Err(e) => Err(format!("the copy failed: {e}")),
        };
        cleanup(&state, &helper, paused.as_deref()).await;
        drop(guard);
        done(result);
    });
    Ok(Download {
        file_name,
        body: axum::body::Body::from_stream(body),
    })
}

/// Takes the lifecycle lock of a workspace to pause, and re-reads it under the lock: `None`
/// when it no longer runs. A paused workspace holds its lock until it is thawed: the
/// reconciler (which would take a paused container for a dead one) and start/stop/remove wait
/// for the copy.
async fn hold_for_pause(state: &AppState, w: &Workspace) -> ApiResult<Option<PauseHold>> {
    let guard = state.lock_for(&w.id).lock_owned().await;
    let w = state.store.workspace(&w.id).await?;
    Ok((w.state == WorkspaceState::Running).then_some((guard, w.container_id)))
}

/// The backup's manifest and the engine's tar of the home directory in `helper`; the first
/// chunk is read here, since it tells whether the engine serves the archive at all.
async fn open_home(
    state: &AppState,
    w: &Workspace,
    helper: &str,
    paused: bool,
) -> ApiResult<(BackupManifest, berth_runtime::ByteStream)> {
    let manifest = manifest(state, w, paused).await?;
    let mut source = state.host.runtime.download_archive(helper, HOME).await?;
    let first = match source.next().await {
        Some(chunk) => chunk?,
        None => bytes::Bytes::new(),
    };
    let source = futures_util::stream::iter([Ok(first)])
        .chain(source)
        .boxed();
    Ok((manifest, source))
}

/// Rewrites the engine's tar into berth's archive on a blocking thread: the body to send, and
/// the copy's result (its trailer). When the copy fails the body ends with an error (an
/// aborted response), so the client cannot take a cut archive for a whole one.
fn spawn_copy(
    manifest: BackupManifest,
    source: berth_runtime::ByteStream,
) -> (
    impl futures_util::Stream<Item = Result<bytes::Bytes, std::io::Error>> + Send + 'static,
    tokio::task::JoinHandle<Result<BackupTrailer, ArchiveError>>,
) {
    let (in_tx, in_rx) = pipe::channel();
    let (out_tx, out_rx) = pipe::channel();
    tokio::spawn(pipe::feed(source, in_tx));
    // Set before the channel closes when the copy fails.
    let failed = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let body = pipe::stream_or_fail(out_rx, failed.clone());
    let copy = tokio::task::spawn_blocking(move || {
        use std::io::Write;
        let keep_open = out_tx.clone();
        let result = archive::write_backup(
            &manifest,
            pipe::ChanReader::new(in_rx),
            pipe::ChanWriter::new(out_tx),
        )
        .and_then(|(t, mut w)| w.flush().map(|()| t).map_err(ArchiveError::from));
        if result.is_err() {
            failed.store(true, std::sync::atomic::Ordering::SeqCst);
        }
        drop(keep_open);
        result
    });
    (body, copy)
}

fn manifest_stamp() -> String {
    let t = time::OffsetDateTime::now_utc();
    format!(
        "{:04}{:02}{:02}T{:02}{:02}{:02}Z",
        t.year(),
        u8::from(t.month()),
        t.day(),
        t.hour(),
        t.minute(),
        t.second()
    )
}

/// Thaws the workspace (when it was paused) and removes the helper.
async fn cleanup(state: &AppState, helper: &str, paused: Option<&str>) {
    if let Some(c) = paused {
        if let Err(e) = state.host.runtime.unpause_container(c).await {
            tracing::error!(container = %c, error = %e, "could not unpause after backup");
        }
    }
    if let Err(e) = state.host.runtime.remove_container(helper).await {
        tracing::error!(container = %helper, error = %e, "could not remove the archive helper");
    }
}

fn archive_error(e: ArchiveError) -> ApiError {
    match e {
        ArchiveError::Invalid(m) => ApiError::invalid(format!("backup archive refused: {m}")),
        ArchiveError::TooLarge(m) => ApiError::new(ErrorCode::InsufficientStorage, m),
        ArchiveError::Io(e) => ApiError::internal(format!("restore: {e}")),
    }
}

/// The create request for the restored workspace: the archive's spec, renamed as asked.
async fn restore_request(
    state: &AppState,
    manifest: &BackupManifest,
    q: &RestoreQuery,
) -> ApiResult<CreateWorkspace> {
    let mut req = manifest.spec.clone();
    if let Some(name) = q.name.as_deref().filter(|n| !n.is_empty()) {
        req.name = name.to_owned();
        if name.contains('/') {
            req.tenant = None;
        }
    }
    if let Some(t) = q.tenant.as_deref().filter(|t| !t.is_empty()) {
        req.tenant = Some(t.to_owned());
    }
    // An archive from another berth version may name a base image this server no longer has.
    let keep_image = match &req.image {
        Some(i) => state.host.runtime.image_exists(i).await?,
        None => false,
    };
    if !keep_image {
        req.image = None;
    }
    Ok(req)
}

/// The archive reader of a restore, running on a blocking thread: it hands the manifest over,
/// waits for the go-ahead (the byte budget, or `None` to stop), then streams the validated
/// home-directory tar out.
struct RestoreReader {
    /// The reader itself; its result is the archive's trailer.
    archive: tokio::task::JoinHandle<Result<BackupTrailer, ArchiveError>>,
    manifest: tokio::sync::oneshot::Receiver<BackupManifest>,
    go: tokio::sync::oneshot::Sender<Option<u64>>,
    /// The tar for the engine.
    out: pipe::Rx,
}

impl RestoreReader {
    /// Starts reading `body`.
    fn start(body: axum::body::Body) -> Self {
        let (in_tx, in_rx) = pipe::channel();
        let (out_tx, out_rx) = pipe::channel();
        let (manifest_tx, manifest_rx) = tokio::sync::oneshot::channel::<BackupManifest>();
        let (go_tx, go_rx) = tokio::sync::oneshot::channel::<Option<u64>>();
        tokio::spawn(pipe::feed(body.into_data_stream(), in_tx));
        let archive = tokio::task::spawn_blocking(move || {
            archive::restore(
                pipe::ChanReader::new(in_rx),
                move |m| {
                    manifest_tx.send(m).ok()?;
                    go_rx.blocking_recv().ok().flatten()
                },
                pipe::ChanWriter::new(out_tx),
            )
            .and_then(|(t, mut w)| {
                use std::io::Write;
                w.flush()?;
                Ok(t)
            })
        });
        Self {
            archive,
            manifest: manifest_rx,
            go: go_tx,
            out: out_rx,
        }
    }
}

/// Restores an archive streamed in `body` as a new workspace (started), or refuses it leaving
/// nothing behind.
/// `role` is the caller's: an archive cannot grant what the caller may not ask for (`network:
/// bridge` only for admins).
pub async fn restore(
    state: Arc<AppState>,
    q: RestoreQuery,
    body: axum::body::Body,
    role: berth_domain::Role,
) -> ApiResult<Workspace> {
    crate::disk::ensure_room(&state)?;
    let RestoreReader {
        mut archive,
        manifest,
        go,
        out,
    } = RestoreReader::start(body);
    let manifest = match manifest.await {
        Ok(m) => m,
        Err(_) => {
            match (&mut archive).await {
                Ok(r) => r.map_err(archive_error)?,
                Err(e) => return Err(ApiError::internal(format!("restore: {e}"))),
            };
            return Err(ApiError::invalid("backup archive refused: no manifest"));
        }
    };
    let (spec, volume, claim) = match prepare_restore(&state, &manifest, &q, role).await {
        Ok(p) => p,
        Err(e) => {
            let _ = go.send(None);
            let _ = archive.await;
            return Err(e);
        }
    };
    let budget = restore_budget(&state);
    let filled = fill_volume(&state, &spec, &volume, out, go, budget, archive).await;
    if let Err(e) = filled {
        remove_volume(&state, &volume).await;
        return Err(e);
    }
    // The ordinary create takes over (its name check, provisioning and rollback).
    drop(claim);
    create_restored(&state, spec, &volume).await
}

/// Checks a restore against the server before any data is written: the caller may ask for
/// the archive's workspace (network, quota), its image is here, and neither the workspace nor
/// its home volume exists. Returns the create spec, the volume's name and the claim on it.
async fn prepare_restore(
    state: &AppState,
    manifest: &BackupManifest,
    q: &RestoreQuery,
    role: berth_domain::Role,
) -> ApiResult<(CreateSpec, String, Claim)> {
    let req = restore_request(state, manifest, q).await?;
    crate::lifecycle::check_network_allowed(role, req.network.as_deref())?;
    let spec = CreateSpec::from_request(state, &req)?;
    // A restore makes a workspace like a create: within the tenant's quota.
    let asked = crate::lifecycle::quota_use(&spec.limits);
    // Admin-only; not held until the restored row is stored (a restore racing a create of
    // the same tenant may both pass).
    drop(crate::tenants::check(state, &spec.tenant, asked, None).await?);
    crate::lifecycle::ensure_image(state, &spec.image).await?;
    if state
        .store
        .find_workspace(&spec.tenant, &spec.name)
        .await?
        .is_some()
    {
        return Err(ApiError::new(
            ErrorCode::Conflict,
            format!("workspace {}/{} already exists", spec.tenant, spec.name),
        ));
    }
    let volume = lifecycle::volume_name(state, &spec.tenant, &spec.name);
    if state.host.runtime.volume_exists(&volume).await? {
        return Err(ApiError::new(
            ErrorCode::Conflict,
            format!(
                "volume {volume} exists (left by a removed workspace {}/{}): remove it with \
                 `podman volume rm {volume}`, or restore under another name (--name)",
                spec.tenant, spec.name
            ),
        ));
    }
    let claim = Claim::take(&volume).ok_or_else(|| {
        ApiError::new(
            ErrorCode::Conflict,
            format!(
                "workspace {}/{} is being restored from a backup",
                spec.tenant, spec.name
            ),
        )
    })?;
    Ok((spec, volume, claim))
}

/// How many bytes a restore may write: the configured maximum, within the free disk space
/// above the reserve.
fn restore_budget(state: &AppState) -> u64 {
    let free = crate::disk::free_bytes(&state.config.data_dir).unwrap_or(u64::MAX);
    state
        .config
        .restore_max_bytes
        .min(free.saturating_sub(state.config.disk.min_free))
}

/// Creates the restored workspace on its filled `volume` through the ordinary create; when
/// that fails, the volume goes too (unless another create of the name took it meanwhile).
async fn create_restored(state: &AppState, spec: CreateSpec, volume: &str) -> ApiResult<Workspace> {
    let result = lifecycle::create(state, spec).await;
    match &result {
        // A create of the same name won the race after the claim was dropped: the volume is
        // that workspace's now.
        Err(e) if e.code == ErrorCode::Conflict => {}
        Err(_) => remove_volume(state, volume).await,
        Ok(_) => {}
    }
    result
}

async fn remove_volume(state: &AppState, volume: &str) {
    if let Err(e) = state.host.runtime.remove_volume(volume).await {
        tracing::error!(volume = %volume, error = %e, "restore rollback: remove volume");
    }
}

/// Creates `volume` and extracts the validated archive into it through a helper container.
async fn fill_volume(
    state: &AppState,
    spec: &CreateSpec,
    volume: &str,
    out_rx: pipe::Rx,
    go_tx: tokio::sync::oneshot::Sender<Option<u64>>,
    budget: u64,
    pipeline: tokio::task::JoinHandle<Result<BackupTrailer, ArchiveError>>,
) -> ApiResult<()> {
    let set_up = async {
        let labels = labels(state, &spec.tenant, None);
        state.host.runtime.ensure_volume(volume, &labels).await?;
        helper(state, volume, &spec.image, labels).await
    }
    .await;
    let helper = match set_up {
        Ok(h) => h,
        Err(e) => {
            let _ = go_tx.send(None);
            let _ = pipeline.await;
            return Err(e);
        }
    };
    let _ = go_tx.send(Some(budget));
    let upload = state
        .host
        .runtime
        .upload_archive(&helper, HOME, pipe::stream_ok(out_rx).boxed());
    let (uploaded, validated) = tokio::join!(upload, pipeline);
    if let Err(e) = state.host.runtime.remove_container(&helper).await {
        tracing::error!(container = %helper, error = %e, "could not remove the archive helper");
    }
    match validated {
        Ok(Ok(_)) => Ok(uploaded?),
        // The archive's own fault wins over what the engine said about the cut stream.
        Ok(Err(e @ (ArchiveError::Invalid(_) | ArchiveError::TooLarge(_)))) => {
            Err(archive_error(e))
        }
        Ok(Err(e)) => {
            uploaded?;
            Err(archive_error(e))
        }
        Err(e) => Err(ApiError::internal(format!("restore: {e}"))),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_restore_claim_is_exclusive_until_dropped() {
        let first = Claim::take("berth-test-claim-home");
        assert!(first.is_some());
        assert!(Claim::take("berth-test-claim-home").is_none());
        assert!(Claim::take("berth-test-other-home").is_some());
        drop(first);
        assert!(Claim::take("berth-test-claim-home").is_some());
    }
}
