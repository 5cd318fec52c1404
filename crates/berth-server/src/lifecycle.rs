//! Workspace lifecycle: create, start, stop, remove, each serialized per workspace and rolled
//! back on failure so the engine never keeps objects the store does not know about.

use std::collections::HashMap;
use std::path::Path;
use std::time::Duration;

use berth_domain::limits::{parse_cpus, parse_memory};
use berth_domain::{
    ErrorCode, Failure, FailureKind, Limits, Name, SecretDelivery, Transition, WorkspaceId,
    WorkspaceRef, WorkspaceState,
};
use berth_runtime::{ContainerSpec, ContainerState, Mount, RuntimeError};
use berth_store::{NewWorkspace, Workspace};

use berth_daemon::chanfs;

mod requests;
mod update;

pub(crate) use requests::quota_use;
pub use requests::{create_workspace, remove_workspace, start_workspace, stop_workspace};
pub use update::update_workspace;

use crate::binary::DAEMON_PATH_IN_WORKSPACE;
use crate::config::NETWORKS;
use crate::error::{ApiError, ApiResult};
use crate::state::{
    AppState, LABEL_BINARY, LABEL_CONFIG, LABEL_MANAGED, LABEL_SERVER, LABEL_TENANT,
    LABEL_WORKSPACE,
};

/// The uid/gid of the `agent` user in the base image.
pub const WORKSPACE_UID: u32 = 1000;
pub const HOME: &str = "/home/agent";
pub const CHANNEL_IN_WORKSPACE: &str = "/run/berth";
const STOP_TIMEOUT: Duration = Duration::from_secs(10);

/// A validated create request.
#[derive(Debug, Clone)]
pub struct CreateSpec {
    /// The new workspace's id (chosen with the request, so its secret bindings name it).
    pub id: WorkspaceId,
    pub tenant: Name,
    pub name: Name,
    pub limits: Limits,
    pub image: String,
    pub network: String,
    /// Initial egress rules (validated).
    pub egress: Vec<String>,
    /// Egress templates to attach, in order (names validated; existence checked at create).
    pub egress_templates: Vec<Name>,
    /// Tenant secrets the workspace uses (syntax validated; existence checked at create).
    pub secrets: Vec<berth_store::SecretUse>,
    /// MCP servers its agents use (validated).
    pub mcp_servers: Vec<berth_domain::McpServer>,
    /// The template the workspace is provisioned from (recorded with the row; the steps run
    /// once it is up: `crate::provision`).
    pub provision: Option<crate::provision::Pending>,
}

impl CreateSpec {
    pub fn from_request(state: &AppState, req: &berth_api::CreateWorkspace) -> ApiResult<Self> {
        // `name` is the workspace's own name (a `tenant/name` there is refused: the tenant is
        // `tenant`'s alone, so no request, archive manifest or caller can name it twice).
        let tenant = crate::error::tenant_name(req.tenant.as_deref().unwrap_or("default"))?;
        let name = Name::parse(&req.name)
            .map_err(|e| ApiError::invalid(format!("name: {e} (give the tenant in `tenant`)")))?;
        let d = state.config.default_limits;
        let limits = Limits {
            memory_bytes: match &req.memory {
                Some(m) => parse_memory(m).map_err(|e| ApiError::invalid(e.to_string()))?,
                None => d.memory_bytes,
            },
            nano_cpus: match &req.cpus {
                Some(c) => parse_cpus(c).map_err(|e| ApiError::invalid(e.to_string()))?,
                None => d.nano_cpus,
            },
            pids: req.pids.unwrap_or(d.pids),
        }
        .validate()
        .map_err(|e| ApiError::invalid(e.to_string()))?;
        crate::capacity::check_host(&limits)?;
        let network = req
            .network
            .clone()
            .unwrap_or_else(|| state.config.default_network.clone());
        if !NETWORKS.contains(&network.as_str()) {
            return Err(ApiError::invalid(format!(
                "network {network:?} is not supported: use one of {}",
                NETWORKS.join(", ")
            )));
        }
        let image = match &req.image {
            Some(i) if i.trim().is_empty() => return Err(ApiError::invalid("image is empty")),
            Some(i) if !crate::openapi::is_image_reference(i) => {
                return Err(ApiError::invalid(format!(
                    "image {i:?} is not an image reference ([registry/]name[:tag][@sha256:digest])"
                )))
            }
            Some(i) => i.clone(),
            None => state.default_image(),
        };
        let egress = req.egress.clone().unwrap_or_default();
        for r in &egress {
            berth_egress::Rule::parse(r)
                .map_err(|e| ApiError::invalid(format!("egress rule {r:?}: {e}")))?;
        }
        let mut egress_templates: Vec<Name> = Vec::new();
        for t in req.egress_templates.iter().flatten() {
            let name = crate::egress::policy::template_name(t)?;
            if egress_templates.contains(&name) {
                return Err(ApiError::invalid(format!(
                    "egress template {name} is named twice"
                )));
            }
            egress_templates.push(name);
        }
        let id = WorkspaceId::generate();
        let secrets = parse_secret_uses(&id, req.secrets.as_deref().unwrap_or_default())?;
        let mcp_servers =
            berth_api::mcp_servers_to_domain(req.mcp_servers.as_deref().unwrap_or_default())
                .map_err(|e| {
                    ApiError::new(ErrorCode::InvalidMcpServer, format!("mcp_servers: {e}"))
                })?;
        Ok(Self {
            id,
            tenant,
            name,
            limits,
            image,
            network,
            egress,
            egress_templates,
            secrets,
            mcp_servers,
            provision: None,
        })
    }
}

/// The secret bindings of a request (create's `secrets`, update's), validated: names, delivery,
/// hosts and headers; a secret named twice is a 409 `conflict`. Placeholders are new; the
/// bindings are workspace `ws`'s.
pub(crate) fn parse_secret_uses(
    ws: &WorkspaceId,
    uses: &[berth_api::UseSecret],
) -> ApiResult<Vec<berth_store::SecretUse>> {
    let mut secrets = Vec::new();
    for u in uses.iter().cloned() {
        if !crate::vault::valid_name(&u.name) {
            return Err(ApiError::invalid(format!(
                "secret name {:?} is not valid",
                u.name
            )));
        }
        let delivery = match u.delivery.as_deref() {
            None => SecretDelivery::Placeholder,
            Some(d) => SecretDelivery::parse(d).ok_or_else(|| {
                ApiError::invalid(format!(
                    "secret {}: delivery must be placeholder, env or file",
                    u.name
                ))
            })?,
        };
        let mut hosts = Vec::new();
        for h in &u.hosts {
            hosts.push(berth_egress::normalize_host(h).ok_or_else(|| {
                ApiError::invalid(format!("secret {}: host {h:?} is not a host name", u.name))
            })?);
        }
        let mut headers = Vec::new();
        for h in &u.headers {
            let h = berth_egress::secret_header_name(h)
                .map_err(|e| ApiError::invalid(format!("secret {}: header {e}", u.name)))?;
            if !headers.contains(&h) {
                headers.push(h);
            }
        }
        if delivery.exposes() && !headers.is_empty() {
            return Err(ApiError::invalid(format!(
                "secret {}: headers apply to placeholder delivery only",
                u.name
            )));
        }
        if !delivery.exposes() && hosts.is_empty() {
            return Err(ApiError::invalid(format!(
                "secret {}: name the hosts its real value may be sent to (NAME:host1,host2)",
                u.name
            )));
        }
        if secrets
            .iter()
            .any(|s: &berth_store::SecretUse| s.name == u.name)
        {
            // Two bindings of one secret contradict each other (hosts, delivery): a
            // conflict within the request, not a malformed one.
            return Err(ApiError::new(
                ErrorCode::Conflict,
                format!("secret {} is named twice", u.name),
            ));
        }
        secrets.push(berth_store::SecretUse {
            workspace_id: ws.clone(),
            placeholder: crate::vault::placeholder(&u.name),
            name: u.name,
            hosts,
            delivery,
            headers,
        });
    }
    Ok(secrets)
}

/// Finds the workspace a user means.
pub async fn resolve(state: &AppState, raw: &str) -> ApiResult<Workspace> {
    let scope = SCOPE.try_with(Clone::clone).ok();
    resolve_in(state, raw, scope.as_deref()).await
}

tokio::task_local! {
    /// The tenant the current request's caller is limited to (set for tenant tokens by
    /// `routes::access`): [`resolve`] finds only that tenant's workspaces.
    static SCOPE: String;
}

/// Runs `f` (a request of a tenant's caller) with workspace references resolved in `tenant`.
pub async fn with_scope<F: std::future::Future>(tenant: String, f: F) -> F::Output {
    SCOPE.scope(tenant, f).await
}

/// [`resolve`] within `scope` (`None`: every tenant). Within a scope a bare name is that
/// tenant's, and another tenant's workspace is not found.
pub async fn resolve_in(state: &AppState, raw: &str, scope: Option<&str>) -> ApiResult<Workspace> {
    let r = WorkspaceRef::parse(raw).map_err(|e| ApiError::invalid(format!("workspace: {e}")))?;
    let not_found = || ApiError::not_found(format!("workspace {raw} not found"));
    let w = match (r, scope) {
        (WorkspaceRef::Bare(name), Some(t)) => match Name::parse(t) {
            Ok(t) => state.store.find_workspace(&t, &name).await?,
            Err(_) => None,
        },
        (WorkspaceRef::Id(id), _) => state.store.find_workspace_by_id(&id).await?,
        (WorkspaceRef::Qualified { tenant, name }, _) => {
            state.store.find_workspace(&tenant, &name).await?
        }
        (WorkspaceRef::Bare(name), None) => return resolve_bare(state, &name, raw).await,
    };
    match w {
        Some(w) if scope.is_none_or(|t| w.tenant.as_str() == t) => Ok(w),
        _ => Err(not_found()),
    }
}

async fn resolve_bare(state: &AppState, name: &Name, raw: &str) -> ApiResult<Workspace> {
    let mut all = state.store.find_workspaces_named(name).await?;
    match all.len() {
        0 => Err(ApiError::not_found(format!("workspace {raw} not found"))),
        1 => Ok(all.remove(0)),
        _ => Err(ApiError::new(
            ErrorCode::Ambiguous,
            format!(
                "workspace name {name} exists in several tenants ({}): use tenant/name",
                all.iter()
                    .map(|w| w.tenant.as_str())
                    .collect::<Vec<_>>()
                    .join(", ")
            ),
        )),
    }
}

fn engine_name(state: &AppState, tenant: &Name, name: &Name) -> String {
    format!("berth-{}-{}-{}", state.host.server_id, tenant, name)
}

pub(crate) fn volume_name(state: &AppState, tenant: &Name, name: &Name) -> String {
    format!("{}-home", engine_name(state, tenant, name))
}

fn invalid_state(w: &Workspace, e: berth_domain::TransitionError) -> ApiError {
    ApiError::new(
        ErrorCode::InvalidState,
        format!("workspace {}: {e}", w.qualified_name()),
    )
}

/// Creates volume, channel directory and container, starts it and waits for its daemon.
/// On any failure everything created here is removed again and the store row deleted.
pub async fn create(state: &AppState, spec: CreateSpec) -> ApiResult<Workspace> {
    // Cheap checks first, so the common mistakes leave no trace at all.
    check_create(state, &spec).await?;
    let tenant = state.store.ensure_tenant(&spec.tenant).await?;
    let id = spec.id.clone();
    let lock = state.lock_for(&id);
    let guard = lock.lock().await;
    let row = insert_row(state, &spec, tenant.id).await?;
    if let Some(p) = &spec.provision {
        // With the row, so the workspace is never seen running without its provisioning.
        if let Err(err) = crate::provision::record(state, &id, p).await {
            return Err(abandon(state, &id, guard, err).await);
        }
    }
    state.store.set_egress_rules(&id, &spec.egress).await?;
    state.store.set_secret_uses(&id, &spec.secrets).await?;
    for t in &spec.egress_templates {
        // Checked above; a template removed since then fails the create here, before anything
        // is provisioned.
        if let Err(err) = crate::egress::policy::attach_to(state, &row, t).await {
            return Err(abandon(state, &id, guard, err).await);
        }
    }
    let mut undo = Undo::default();
    match provision(state, &row, &mut undo).await {
        Ok(()) => Ok(state
            .store
            .set_state(&id, WorkspaceState::Running, None)
            .await?),
        Err(err) => {
            tracing::warn!(workspace = %row.qualified_name(), error = %err, "create failed; rolling back");
            undo.run(state).await;
            Err(abandon(state, &id, guard, err).await)
        }
    }
}

/// The checks of a create that need no write: disk room, no restore of the name under way,
/// the image, the tenant's secrets and egress templates.
async fn check_create(state: &AppState, spec: &CreateSpec) -> ApiResult<()> {
    crate::disk::ensure_room(state)?;
    crate::backup::refuse_if_restoring(state, spec)?;
    ensure_image(state, &spec.image).await?;
    check_secrets_exist(state, &spec.tenant, &spec.secrets).await?;
    for t in &spec.egress_templates {
        if crate::egress::find_template(&state.store, spec.tenant.as_str(), t.as_str())
            .await?
            .is_none()
        {
            return Err(crate::egress::policy::unknown_template(
                spec.tenant.as_str(),
                t.as_str(),
            ));
        }
    }
    Ok(())
}

/// Stores the new workspace's row (state `creating`); 409 `conflict` when the tenant has a
/// workspace of that name.
async fn insert_row(
    state: &AppState,
    spec: &CreateSpec,
    tenant_id: berth_domain::TenantId,
) -> ApiResult<Workspace> {
    let volume = volume_name(state, &spec.tenant, &spec.name);
    state
        .store
        .insert_workspace(&NewWorkspace {
            id: spec.id.clone(),
            tenant_id,
            name: spec.name.clone(),
            image: spec.image.clone(),
            limits: spec.limits,
            network: spec.network.clone(),
            volume,
            mcp_servers: spec.mcp_servers.clone(),
        })
        .await
        .map_err(|e| match e {
            berth_store::StoreError::Conflict(_) => ApiError::new(
                ErrorCode::Conflict,
                format!("workspace {}/{} already exists", spec.tenant, spec.name),
            ),
            other => other.into(),
        })
}

/// Gives up a create after its row was stored: the row and what came with it go
/// ([`forget_row`]), then the workspace's lock (held as `guard`); returns `err`.
async fn abandon(
    state: &AppState,
    id: &WorkspaceId,
    guard: tokio::sync::MutexGuard<'_, ()>,
    err: ApiError,
) -> ApiError {
    forget_row(state, id).await;
    drop(guard);
    state.forget_lock(id);
    err
}

/// 404 `not_found` (with the fix) unless the tenant has every secret of `uses`.
pub(crate) async fn check_secrets_exist(
    state: &AppState,
    tenant: &Name,
    uses: &[berth_store::SecretUse],
) -> ApiResult<()> {
    for u in uses {
        if state
            .store
            .secret(tenant.as_str(), &u.name)
            .await?
            .is_none()
        {
            return Err(ApiError::not_found(format!(
                "tenant {tenant} has no secret {}: set it with `berth secret set --tenant {tenant} {}`",
                u.name, u.name
            )));
        }
    }
    Ok(())
}

/// Rollback of a create: the workspace's row, its own egress rules and its secret uses go
/// (template attachments go with the row). Failures are logged; the caller's error wins.
async fn forget_row(state: &AppState, id: &WorkspaceId) {
    if let Err(e) = state.store.delete_workspace(id).await {
        tracing::error!(error = %e, "rollback: could not delete workspace row");
    }
    if let Err(e) = state.store.set_egress_rules(id, &[]).await {
        tracing::error!(error = %e, "rollback: could not delete egress rules");
    }
    if let Err(e) = state.store.set_secret_uses(id, &[]).await {
        tracing::error!(error = %e, "rollback: could not delete secret uses");
    }
}

/// `network: bridge` puts a workspace on the engine's unfiltered network, outside berth's egress
/// proxy, rules and secret placeholders: only an admin may ask for it (the server-wide default is
/// the admin's own choice).
pub fn check_network_allowed(role: berth_domain::Role, requested: Option<&str>) -> ApiResult<()> {
    match requested {
        Some(n) if n != "none" && role != berth_domain::Role::Admin => Err(ApiError::new(
            ErrorCode::Forbidden,
            format!(
                "network {n:?} bypasses berth's egress proxy; only an admin token may ask for it"
            ),
        )),
        _ => Ok(()),
    }
}

/// Engine objects created so far, for rollback.
#[derive(Default)]
struct Undo {
    container: Option<String>,
    volume: Option<String>,
    channel: Option<std::path::PathBuf>,
}

impl Undo {
    async fn run(self, state: &AppState) {
        if let Some(c) = self.container {
            if let Err(e) = state.host.runtime.remove_container(&c).await {
                tracing::error!(container = %c, error = %e, "rollback: remove container");
            }
        }
        if let Some(v) = self.volume {
            if let Err(e) = state.host.runtime.remove_volume(&v).await {
                tracing::error!(volume = %v, error = %e, "rollback: remove volume");
            }
        }
        if let Some(dir) = self.channel {
            if let Some(ws_dir) = dir.parent() {
                remove_workspace_dir(ws_dir).await;
            }
        }
    }
}

async fn provision(state: &AppState, w: &Workspace, undo: &mut Undo) -> ApiResult<()> {
    let existed = state.host.runtime.volume_exists(&w.volume).await?;
    state
        .host
        .runtime
        .ensure_volume(&w.volume, &labels(state, w))
        .await?;
    if !existed {
        undo.volume = Some(w.volume.clone());
    }
    undo.channel = Some(state.channel_dir(&w.id));
    prepare_channel(state, &w.id).await?;
    let container = create_container(state, w).await?;
    undo.container = Some(container.clone());
    state.store.set_container(&w.id, Some(&container)).await?;
    start_and_wait(state, w, &container).await
}

fn labels(state: &AppState, w: &Workspace) -> HashMap<String, String> {
    HashMap::from([
        (LABEL_MANAGED.to_owned(), "true".to_owned()),
        (LABEL_SERVER.to_owned(), state.host.server_id.clone()),
        (LABEL_WORKSPACE.to_owned(), w.id.to_string()),
        (LABEL_TENANT.to_owned(), w.tenant.to_string()),
    ])
}

/// Lays out the per-workspace channel directories (see `berth_daemon::chanfs`): the
/// server-owned `chan/` (read-only inside) with the CA files, and a fresh, empty, agent-owned
/// `chan/daemon/` for the daemon's socket. A `chan/` of an older berth (owned by the workspace
/// user) is replaced; then `true` is returned, and the container must be made anew (its secret
/// files are gone). Runs on a blocking thread: the workspace decides how much there is to
/// delete, and nothing the workspace left there is opened.
async fn prepare_channel(state: &AppState, id: &WorkspaceId) -> ApiResult<bool> {
    let chan = state.channel_dir(id);
    let ca_pem = Some(state.egress.ca_pem().to_owned());
    tokio::task::spawn_blocking(move || prepare_channel_dir(&chan, ca_pem.as_deref()))
        .await
        .map_err(ApiError::internal)?
        .map_err(ApiError::internal)
}

/// [`prepare_channel`]'s work at a given path (blocking): also used by doctor's smoke check, so
/// its throwaway container gets the same channel as a workspace.
pub(crate) fn prepare_channel_dir(chan: &Path, ca_pem: Option<&str>) -> std::io::Result<bool> {
    let ws_dir = chan.parent().unwrap_or(Path::new("/"));
    // Root-only: the channel is reached through its mounts, never through this path, so no
    // host user can read what is in it (file-delivered secrets are world-readable under a
    // user namespace, see `secret_env`).
    let ws = chanfs::Dir::create_private(ws_dir, 0o700)?;
    let name = chan.file_name().and_then(|n| n.to_str()).unwrap_or("chan");
    let (chan, replaced) = ws.subdir_created(name, 0o755, None)?;
    // A stale socket from an earlier run would make the readiness check pass too early.
    chan.fresh_subdir(berth_daemon::DAEMON_DIR, 0o700, workspace_owner())?;
    if let Some(pem) = ca_pem {
        crate::egress::write_ca_bundle(&chan, pem)?;
    }
    Ok(replaced)
}

/// The owner of what the workspace user must own on the host; `None` (this process) for
/// unprivileged servers (tests with a fake runtime), which cannot and need not chown.
fn workspace_owner() -> Option<u32> {
    nix::unistd::geteuid().is_root().then_some(WORKSPACE_UID)
}

/// Deletes a workspace's host directory without following anything the workspace planted.
pub(crate) async fn remove_workspace_dir(dir: &Path) {
    let dir = dir.to_owned();
    let done = tokio::task::spawn_blocking(move || chanfs::remove_tree(&dir)).await;
    if let Ok(Err(e)) = done {
        tracing::warn!(error = %e, "could not remove a workspace directory");
    }
}

async fn create_container(state: &AppState, w: &Workspace) -> ApiResult<String> {
    let mut labels = labels(state, w);
    labels.insert(LABEL_BINARY.to_owned(), state.host.binary.hash.clone());
    labels.insert(LABEL_CONFIG.to_owned(), config_fingerprint(state, w).await?);
    let userns = userns_mode(state).await;
    let env = [
        format!("BERTH_WORKSPACE={}", w.qualified_name()),
        format!("BERTH_WORKSPACE_ID={}", w.id),
    ]
    .into_iter()
    .chain(proxy_env())
    .chain(secret_env(state, w, userns.is_some()).await?)
    .chain(crate::provision::template_env(state, &w.id).await?)
    .collect();
    let spec = container_spec(
        state,
        ContainerParts {
            userns,
            name: engine_name(state, &w.tenant, &w.name),
            image: w.image.clone(),
            hostname: w.name.to_string(),
            limits: w.limits,
            network: w.network.clone(),
            volume: w.volume.clone(),
            channel: state.channel_dir(&w.id),
            env,
            labels,
        },
    );
    // One `userns=auto` create at a time on the host ([`userns_create_turn`]); the rest of the
    // create (volume, start, handshake) stays parallel.
    let _one = userns_create_turn(state, &spec).await;
    Ok(state.host.runtime.create_container(&spec).await?)
}

/// The file every berth server on the host locks around a `userns=auto` create.
const USERNS_CREATE_LOCK: &str = "berth-userns-create.lock";

/// Held while the engine creates a container in a private user namespace (`None` for any other
/// container): Podman 4.3 deadlocks its API service on concurrent `userns=auto` creates (its
/// user-namespace and storage locks), so they are made one at a time — within this server
/// ([`Host::userns_create`](crate::state::Host)) and across every berth server on the host (a
/// `flock` on a file in the temporary directory, released when the holder exits, even killed).
/// Without the file lock (it cannot be opened) the in-process one still holds.
pub(crate) async fn userns_create_turn<'a>(
    state: &'a AppState,
    spec: &berth_runtime::ContainerSpec,
) -> Option<UsernsTurn<'a>> {
    spec.userns.as_ref()?;
    let local = state.host.userns_create.lock().await;
    let path = std::env::temp_dir().join(USERNS_CREATE_LOCK);
    let host = tokio::task::spawn_blocking(move || {
        let file = std::fs::OpenOptions::new()
            .create(true)
            .truncate(false)
            .write(true)
            .open(&path)
            .ok()?;
        nix::fcntl::Flock::lock(file, nix::fcntl::FlockArg::LockExclusive).ok()
    })
    .await
    .ok()
    .flatten();
    Some(UsernsTurn {
        _local: local,
        _host: host,
    })
}

/// A turn at `userns=auto` creates ([`userns_create_turn`]); released on drop.
pub(crate) struct UsernsTurn<'a> {
    _local: tokio::sync::MutexGuard<'a, ()>,
    _host: Option<nix::fcntl::Flock<std::fs::File>>,
}

/// What a workspace's container was made with that can change after creation: its caps and
/// its secret bindings (`PATCH`; the environment holds their placeholders or values, and
/// files), its image and its template's environment (a template's derived image, an upgrade
/// to a new template revision). A start recreates a container whose label differs, so a
/// change reaches the container even where the engine could not apply it live, or forgets a
/// live change on restart (Podman 4). Placeholders are not secret; values are not hashed.
async fn config_fingerprint(state: &AppState, w: &Workspace) -> ApiResult<String> {
    use sha2::Digest;
    let l = w.limits;
    let mut h = sha2::Sha256::new();
    h.update(format!("{}:{}:{}", l.memory_bytes, l.nano_cpus, l.pids));
    for u in state.store.secret_uses(Some(&w.id)).await? {
        h.update(format!("|{}:{}:{}", u.name, u.delivery, u.placeholder));
    }
    h.update(format!("|image:{}", w.image));
    for kv in crate::provision::template_env(state, &w.id).await? {
        h.update(format!("|env:{}:{kv}", kv.len()));
    }
    Ok(hex::encode(&h.finalize()[..8]))
}

/// What differs between workspace containers; the rest of [`container_spec`] is the same for
/// every workspace, and for doctor's smoke check.
pub(crate) struct ContainerParts {
    /// The engine's user-namespace mode ([`userns_mode`]).
    pub userns: Option<String>,
    pub name: String,
    pub image: String,
    pub hostname: String,
    pub limits: berth_domain::Limits,
    pub network: String,
    pub volume: String,
    /// The host channel directory (see [`prepare_channel_dir`]).
    pub channel: std::path::PathBuf,
    /// Added to the base environment (HOME, USER, …).
    pub env: Vec<String>,
    pub labels: HashMap<String, String>,
}

/// The container of a workspace: the daemon as its command, the agent user, limits, no
/// capabilities, an init, a read-only image, the home volume, the daemon binary and the channel.
pub(crate) fn container_spec(state: &AppState, p: ContainerParts) -> ContainerSpec {
    ContainerSpec {
        name: p.name,
        image: p.image,
        user: format!("{WORKSPACE_UID}:{WORKSPACE_UID}"),
        cmd: vec![
            DAEMON_PATH_IN_WORKSPACE.to_owned(),
            "workspace-daemon".to_owned(),
            "--socket".to_owned(),
            berth_daemon::DEFAULT_SOCKET.to_owned(),
        ],
        env: [
            format!("HOME={HOME}"),
            "USER=agent".to_owned(),
            "LOGNAME=agent".to_owned(),
            "SHELL=/bin/bash".to_owned(),
            "LANG=C.UTF-8".to_owned(),
        ]
        .into_iter()
        .chain(p.env)
        .collect(),
        labels: p.labels,
        hostname: Some(p.hostname),
        working_dir: Some(HOME.to_owned()),
        memory_bytes: p.limits.memory_bytes,
        nano_cpus: p.limits.nano_cpus,
        pids_limit: p.limits.pids,
        mounts: vec![
            Mount::Volume {
                name: p.volume,
                target: HOME.to_owned(),
            },
            Mount::Bind {
                source: state.host.binary.path.clone(),
                target: DAEMON_PATH_IN_WORKSPACE.to_owned(),
                read_only: true,
            },
            // Server-owned, so nothing in it can be renamed or replaced from inside...
            Mount::Bind {
                source: p.channel.clone(),
                target: CHANNEL_IN_WORKSPACE.to_owned(),
                read_only: true,
            },
            // ...but for the daemon's own directory, where it binds daemon.sock.
            Mount::Bind {
                source: p.channel.join(berth_daemon::DAEMON_DIR),
                target: format!("{CHANNEL_IN_WORKSPACE}/{}", berth_daemon::DAEMON_DIR),
                read_only: false,
            },
        ],
        network_mode: p.network,
        cap_add: Vec::new(),
        // The image is not the agent's to change; scratch space is tmpfs, work is in the volume.
        readonly_rootfs: true,
        init: true,
        userns: p.userns,
    }
}

/// `Some("auto")` when workspaces get a private user namespace: configured (`--userns`), else
/// on Podman (which supports it through the Docker API; Docker's is daemon-wide) once the engine
/// has a range to take it from (the `containers` entries of /etc/subuid and /etc/subgid, which
/// `setup-host` adds and doctor checks).
/// The engine's kind is asked once per server ([`Host::podman`](crate::state::Host)).
pub(crate) async fn userns_mode(state: &AppState) -> Option<String> {
    let on = match state.config.userns {
        Some(on) => on,
        None => {
            // The engine's kind is asked once per server (a failed answer is asked again).
            let podman = state
                .host
                .podman
                .get_or_try_init(|| async {
                    let info = state.host.runtime.info().await?;
                    Ok::<_, RuntimeError>(info.engine.to_ascii_lowercase().contains("podman"))
                })
                .await
                .is_ok_and(|p| *p);
            podman && subid_range_present(Path::new(SUBUID), Path::new(SUBGID))
        }
    };
    on.then(|| "auto".to_owned())
}

/// Where Podman's `userns=auto` takes its host uids and gids from.
pub(crate) const SUBUID: &str = "/etc/subuid";
/// See [`SUBUID`].
pub(crate) const SUBGID: &str = "/etc/subgid";
/// The user whose subordinate ranges `userns=auto` uses (Podman's default).
const SUBID_USER: &str = "containers";

/// Whether both files give [`SUBID_USER`] a non-empty range.
pub(crate) fn subid_range_present(subuid: &Path, subgid: &Path) -> bool {
    [subuid, subgid].iter().all(|f| {
        std::fs::read_to_string(f).is_ok_and(|text| {
            text.lines().any(|l| {
                let mut parts = l.trim().split(':');
                parts.next() == Some(SUBID_USER)
                    && parts
                        .next()
                        .is_some_and(|start| start.parse::<u64>().is_ok())
                    && parts
                        .next()
                        .and_then(|n| n.parse::<u64>().ok())
                        .is_some_and(|n| n > 0)
            })
        })
    })
}

/// The workspace's secrets as it sees them: placeholders (the default), or — opted in, marked
/// exposed — the real value in the environment or in a file under /run/berth/secrets.
/// `private_userns`: the container gets a user namespace of its own ([`userns_mode`]).
async fn secret_env(
    state: &AppState,
    w: &Workspace,
    private_userns: bool,
) -> ApiResult<Vec<String>> {
    let mut env = Vec::new();
    let uses = state.store.secret_uses(Some(&w.id)).await?;
    // Files of secrets no longer used go; the directory is made anew on the first file below.
    let chan = chanfs::Dir::open_private(&state.channel_dir(&w.id)).map_err(ApiError::internal)?;
    chan.remove("secrets").map_err(ApiError::internal)?;
    if uses.is_empty() {
        return Ok(env);
    }
    let mut secrets_dir = None;
    let vault = &state.vault;
    for u in uses {
        match u.delivery {
            SecretDelivery::Placeholder => env.push(format!("{}={}", u.name, u.placeholder)),
            delivery => {
                let value = crate::secrets::reveal(&state.store, vault, w.tenant.as_str(), &u.name)
                    .await
                    .map_err(ApiError::internal)?;
                if delivery == SecretDelivery::Env {
                    env.push(format!("{}={}", u.name, value.expose()));
                } else {
                    if secrets_dir.is_none() {
                        let d = chan.subdir("secrets", 0o755, None);
                        secrets_dir = Some(d.map_err(ApiError::internal)?);
                    }
                    if let Some(dir) = &secrets_dir {
                        // A new file in a directory the workspace cannot write: owned by the
                        // workspace user; under a private user namespace (where host uid 1000 is
                        // nobody) root-owned and readable by all, behind the root-only workspace
                        // directory.
                        let (mode, owner) = if private_userns {
                            (0o444, None)
                        } else {
                            (0o400, workspace_owner())
                        };
                        dir.write_file(&u.name, value.expose().as_bytes(), mode, owner)
                            .map_err(ApiError::internal)?;
                    }
                    env.push(format!(
                        "{}_FILE={CHANNEL_IN_WORKSPACE}/secrets/{}",
                        u.name, u.name
                    ));
                }
            }
        }
    }
    Ok(env)
}

/// The way out of a workspace: berth's egress proxy (relayed on loopback by the daemon), with
/// berth's CA trusted for intercepted TLS. Loopback itself (the LLM gateway) stays direct.
pub fn proxy_env() -> Vec<String> {
    let proxy = format!("http://127.0.0.1:{}", berth_daemon::EGRESS_PORT);
    let bundle = format!("{CHANNEL_IN_WORKSPACE}/ca-bundle.crt");
    let mut env = Vec::new();
    for k in berth_domain::workspace::PROXY_ENV {
        env.push(format!("{k}={proxy}"));
    }
    for k in berth_domain::workspace::NO_PROXY_ENV {
        env.push(format!("{k}=localhost,127.0.0.1,::1"));
    }
    for k in berth_domain::workspace::CA_BUNDLE_ENV {
        env.push(format!("{k}={bundle}"));
    }
    env
}

async fn start_and_wait(state: &AppState, w: &Workspace, container: &str) -> ApiResult<()> {
    state.host.runtime.start_container(container).await?;
    wait_ready(state, w, container).await
}

/// Waits until the daemon answers the handshake, or the container dies, or time runs out.
/// The daemon is usually up a few milliseconds after the container starts, so the socket is
/// polled tightly at first (a connect to a missing socket costs microseconds); the engine is
/// asked whether the container still runs only now and then.
async fn wait_ready(state: &AppState, w: &Workspace, container: &str) -> ApiResult<()> {
    let client = state.daemon(&w.id);
    let started = tokio::time::Instant::now();
    let deadline = started + state.host.daemon_ready_timeout;
    let mut next_inspect = started + Duration::from_millis(250);
    loop {
        match client.hello().await {
            Ok(_) | Err(berth_daemon::DaemonError::Incompatible { .. }) => return Ok(()),
            Err(_) => {}
        }
        let now = tokio::time::Instant::now();
        if now >= deadline {
            return Err(ApiError::new(
                ErrorCode::DaemonUnavailable,
                format!(
                    "the workspace daemon did not answer within {:.1}s",
                    state.host.daemon_ready_timeout.as_secs_f64()
                ),
            ));
        }
        if now >= next_inspect {
            next_inspect = now + Duration::from_millis(250);
            if let Some(st) = state.host.runtime.inspect_container(container).await? {
                if !matches!(st.state, ContainerState::Running) {
                    return Err(ApiError::new(
                        ErrorCode::EngineError,
                        format!(
                            "the workspace container exited during start (exit code {})",
                            st.exit_code.unwrap_or(-1)
                        ),
                    ));
                }
            }
        }
        let pause = if now - started < Duration::from_millis(500) {
            2
        } else {
            50
        };
        tokio::time::sleep(Duration::from_millis(pause)).await;
    }
}

pub async fn start(state: &AppState, raw: &str) -> ApiResult<Workspace> {
    let w = resolve(state, raw).await?;
    let lock = state.lock_for(&w.id);
    let _guard = lock.lock().await;
    let w = state.store.workspace(&w.id).await?;
    if w.state == WorkspaceState::Running {
        return Ok(w);
    }
    w.state
        .apply(Transition::Start)
        .map_err(|e| invalid_state(&w, e))?;
    ensure_image(state, &w.image).await?;
    start_recorded(state, &w, "").await
}

/// Start-up recovery: starts again a workspace that was running when the server (or the host,
/// or the engine) went down and whose container no longer runs. Same path as `start` (the
/// container is reused or recreated; the home volume and the channel directory stay); a
/// failure leaves the workspace `failed` with the reason. The caller holds its lock.
pub async fn recover(state: &AppState, w: &Workspace) -> ApiResult<Workspace> {
    start_recorded(state, w, "restarting after the server came back failed: ").await
}

/// Starts `w` with its state recorded: `starting`, then `running`, or `failed` with the error's
/// message (after `why`) as the reason.
async fn start_recorded(state: &AppState, w: &Workspace, why: &str) -> ApiResult<Workspace> {
    let w = state
        .store
        .set_state(&w.id, WorkspaceState::Starting, None)
        .await?;
    match start_inner(state, &w).await {
        Ok(()) => Ok(state
            .store
            .set_state(&w.id, WorkspaceState::Running, None)
            .await?),
        Err(err) => {
            let failure = Failure::new(FailureKind::StartFailed, format!("{why}{}", err.message));
            state
                .store
                .set_state(&w.id, WorkspaceState::Failed, Some(&failure))
                .await?;
            Err(err)
        }
    }
}

/// `image_missing` (with the fix, as for the engine's own answer) unless the engine has `image`.
pub(crate) async fn ensure_image(state: &AppState, image: &str) -> ApiResult<()> {
    if state.host.runtime.image_exists(image).await? {
        return Ok(());
    }
    Err(berth_runtime::RuntimeError::ImageMissing(image.to_owned()).into())
}

async fn start_inner(state: &AppState, w: &Workspace) -> ApiResult<()> {
    let new_channel = prepare_channel(state, &w.id).await?;
    state
        .host
        .runtime
        .ensure_volume(&w.volume, &labels(state, w))
        .await?;
    // Reuse the container when it runs this server's daemon build, was made with the
    // workspace's current caps and secret bindings, and its channel directory is the one it
    // had; otherwise (first start after an upgrade or a `PATCH`, an old channel layout, or the
    // container vanished) recreate it: the home volume carries the state.
    let existing = match &w.container_id {
        Some(c) => state.host.runtime.inspect_container(c).await?,
        None => None,
    };
    let config = config_fingerprint(state, w).await?;
    let reuse = !new_channel
        && existing.as_ref().is_some_and(|c| {
            c.labels.get(LABEL_BINARY) == Some(&state.host.binary.hash)
                && c.labels.get(LABEL_CONFIG) == Some(&config)
        });
    let container = if reuse {
        w.container_id.clone().unwrap_or_default()
    } else {
        if let Some(old) = &existing {
            state.host.runtime.remove_container(&old.id).await?;
        }
        // A container of this name may be left from a crash between create and store update.
        state
            .host
            .runtime
            .remove_container(&engine_name(state, &w.tenant, &w.name))
            .await?;
        let c = create_container(state, w).await?;
        state.store.set_container(&w.id, Some(&c)).await?;
        c
    };
    start_and_wait(state, w, &container).await
}

/// Makes the running workspace's container match what the workspace is now made from (its
/// image, caps, secret bindings, template environment: [`config_fingerprint`]), recreating
/// it when it does not — the home volume and the channel stay; the daemon's terminal sessions
/// end with the old container, as on a restart. `Ok(false)`: it matched, nothing was done.
/// Used by provisioning when a template's derived image is ready or an upgrade changed the
/// container's inputs.
pub async fn ensure_current(state: &AppState, id: &WorkspaceId) -> ApiResult<bool> {
    let lock = state.lock_for(id);
    let _guard = lock.lock().await;
    let w = state.store.workspace(id).await?;
    if !matches!(w.state, WorkspaceState::Running | WorkspaceState::Failed) {
        return Err(ApiError::new(
            ErrorCode::InvalidState,
            format!(
                "workspace {} is {}: its container is remade only while it runs",
                w.qualified_name(),
                w.state
            ),
        ));
    }
    let existing = match &w.container_id {
        Some(c) => state.host.runtime.inspect_container(c).await?,
        None => None,
    };
    let config = config_fingerprint(state, &w).await?;
    let current = existing.as_ref().is_some_and(|c| {
        matches!(c.state, ContainerState::Running)
            && c.labels.get(LABEL_BINARY) == Some(&state.host.binary.hash)
            && c.labels.get(LABEL_CONFIG) == Some(&config)
    });
    if current {
        return Ok(false);
    }
    ensure_image(state, &w.image).await?;
    if let Some(old) = &existing {
        state.host.runtime.remove_container(&old.id).await?;
    }
    state
        .host
        .runtime
        .remove_container(&engine_name(state, &w.tenant, &w.name))
        .await?;
    state.store.set_container(&w.id, None).await?;
    prepare_channel(state, &w.id).await?;
    state
        .host
        .runtime
        .ensure_volume(&w.volume, &labels(state, &w))
        .await?;
    let c = create_container(state, &w).await?;
    state.store.set_container(&w.id, Some(&c)).await?;
    start_and_wait(state, &w, &c).await?;
    serve_channel(state, &w.id).await;
    Ok(true)
}

pub async fn stop(state: &AppState, raw: &str) -> ApiResult<Workspace> {
    let w = resolve(state, raw).await?;
    let lock = state.lock_for(&w.id);
    let _guard = lock.lock().await;
    let w = state.store.workspace(&w.id).await?;
    if w.state == WorkspaceState::Stopped {
        return Ok(w);
    }
    w.state
        .apply(Transition::Stop)
        .map_err(|e| invalid_state(&w, e))?;
    state
        .store
        .set_state(&w.id, WorkspaceState::Stopping, None)
        .await?;
    if let Some(c) = &w.container_id {
        if let Err(e) = state.host.runtime.stop_container(c, STOP_TIMEOUT).await {
            if !matches!(e, RuntimeError::NotFound(_)) {
                // Leave it `stopping`; the reconciler settles it when the engine is back.
                return Err(e.into());
            }
        }
    }
    Ok(state
        .store
        .set_state(&w.id, WorkspaceState::Stopped, None)
        .await?)
}

pub async fn remove(state: &AppState, raw: &str, remove_volume: bool) -> ApiResult<Workspace> {
    let w = resolve(state, raw).await?;
    let lock = state.lock_for(&w.id);
    let _guard = lock.lock().await;
    let w = state.store.workspace(&w.id).await?;
    w.state
        .apply(Transition::Remove)
        .map_err(|e| invalid_state(&w, e))?;
    state
        .store
        .set_state(&w.id, WorkspaceState::Removing, None)
        .await?;
    if let Some(c) = &w.container_id {
        state.host.runtime.remove_container(c).await?;
    }
    state
        .host
        .runtime
        .remove_container(&engine_name(state, &w.tenant, &w.name))
        .await?;
    if remove_volume {
        state.host.runtime.remove_volume(&w.volume).await?;
    }
    if let Some(ws_dir) = state.channel_dir(&w.id).parent() {
        remove_workspace_dir(ws_dir).await;
    }
    state.store.delete_workspace(&w.id).await?;
    state.store.set_egress_rules(&w.id, &[]).await?;
    state.store.set_secret_uses(&w.id, &[]).await?;
    drop(_guard);
    state.forget_lock(&w.id);
    Ok(w)
}

/// Whether the workspace's daemon answers, and with which protocol (for the workspace view).
pub async fn daemon_status(state: &AppState, w: &Workspace) -> berth_api::DaemonStatus {
    let client = state.daemon(&w.id);
    match tokio::time::timeout(Duration::from_secs(3), client.hello()).await {
        Ok(Ok(info)) => berth_api::DaemonStatus {
            reachable: true,
            protocol: Some(info.protocol),
            version: Some(info.version),
            outdated: false,
            message: None,
        },
        Ok(Err(berth_daemon::DaemonError::Incompatible { daemon, client })) => {
            berth_api::DaemonStatus {
                reachable: true,
                protocol: Some(daemon),
                version: None,
                outdated: daemon < client,
                message: Some(
                    ApiError::from(berth_daemon::DaemonError::Incompatible { daemon, client })
                        .message,
                ),
            }
        }
        Ok(Err(e)) => berth_api::DaemonStatus {
            reachable: false,
            protocol: None,
            version: None,
            outdated: false,
            message: Some(e.to_string()),
        },
        Err(_) => berth_api::DaemonStatus {
            reachable: false,
            protocol: None,
            version: None,
            outdated: false,
            message: Some("the daemon did not answer within 3s".into()),
        },
    }
}

/// Serves everything a running workspace needs on the host side of its channel: the LLM
/// gateway's socket, and the egress proxy's with the workspace's rules loaded (idempotent).
pub async fn serve_channel(state: &AppState, ws: &WorkspaceId) {
    state
        .gateway
        .serve(ws, &state.channel_dir(ws), state.daemon(ws));
    crate::egress::activate(state, ws).await;
}

/// The opposite of [`serve_channel`], when a workspace is removed.
pub fn stop_channel(state: &AppState, ws: &WorkspaceId) {
    state.gateway.stop(ws);
    crate::egress::deactivate(state, ws);
}

#[cfg(test)]
#[path = "lifecycle_tests.rs"]
mod tests;
