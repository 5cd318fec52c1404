//! Workspace lifecycle: create, start, stop, remove, each serialized per workspace and rolled
//! back on failure so the engine never keeps objects the store does not know about.

use std::collections::HashMap;
use std::path::Path;
use std::time::Duration;

use berth_domain::limits::{parse_cpus, parse_memory};
use berth_domain::{
    ErrorCode, Failure, FailureKind, Limits, Name, Transition, WorkspaceId, WorkspaceRef,
    WorkspaceState,
};
use berth_runtime::{ContainerSpec, ContainerState, Mount, RuntimeError};
use berth_store::{NewWorkspace, Workspace};

use crate::binary::{set_mode, DAEMON_PATH_IN_WORKSPACE};
use crate::config::NETWORKS;
use crate::error::{ApiError, ApiResult};
use crate::state::{
    AppState, LABEL_BINARY, LABEL_MANAGED, LABEL_SERVER, LABEL_TENANT, LABEL_WORKSPACE,
};

/// The uid/gid of the `agent` user in the base image.
pub const WORKSPACE_UID: u32 = 1000;
pub const HOME: &str = "/home/agent";
pub const CHANNEL_IN_WORKSPACE: &str = "/run/berth";
const STOP_TIMEOUT: Duration = Duration::from_secs(10);

/// A validated create request.
#[derive(Debug, Clone)]
pub struct CreateSpec {
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
}

impl CreateSpec {
    pub fn from_request(state: &AppState, req: &berth_api::CreateWorkspace) -> ApiResult<Self> {
        let (tenant, name) = match req.name.split_once('/') {
            Some((t, n)) => {
                if req.tenant.as_deref().is_some_and(|rt| rt != t) {
                    return Err(ApiError::invalid(format!(
                        "name {:?} names tenant {t:?} but tenant is {:?}",
                        req.name,
                        req.tenant.as_deref().unwrap_or_default()
                    )));
                }
                (t.to_owned(), n.to_owned())
            }
            None => (
                req.tenant.clone().unwrap_or_else(|| "default".into()),
                req.name.clone(),
            ),
        };
        let tenant = Name::parse(&tenant).map_err(|e| ApiError::invalid(format!("tenant: {e}")))?;
        let name = Name::parse(&name).map_err(|e| ApiError::invalid(format!("name: {e}")))?;
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
            let name = crate::routes::egress_templates::template_name(t)?;
            if egress_templates.contains(&name) {
                return Err(ApiError::invalid(format!(
                    "egress template {name} is named twice"
                )));
            }
            egress_templates.push(name);
        }
        let mut secrets = Vec::new();
        for u in req.secrets.clone().unwrap_or_default() {
            if !crate::vault::valid_name(&u.name) {
                return Err(ApiError::invalid(format!(
                    "secret name {:?} is not valid",
                    u.name
                )));
            }
            let delivery = u.delivery.unwrap_or_else(|| "placeholder".into());
            if !["placeholder", "env", "file"].contains(&delivery.as_str()) {
                return Err(ApiError::invalid(format!(
                    "secret {}: delivery must be placeholder, env or file",
                    u.name
                )));
            }
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
            if delivery != "placeholder" && !headers.is_empty() {
                return Err(ApiError::invalid(format!(
                    "secret {}: headers apply to placeholder delivery only",
                    u.name
                )));
            }
            if delivery == "placeholder" && hosts.is_empty() {
                return Err(ApiError::invalid(format!(
                    "secret {}: name the hosts its real value may be sent to (NAME:host1,host2)",
                    u.name
                )));
            }
            if secrets
                .iter()
                .any(|s: &berth_store::SecretUse| s.name == u.name)
            {
                return Err(ApiError::invalid(format!(
                    "secret {} is named twice",
                    u.name
                )));
            }
            secrets.push(berth_store::SecretUse {
                workspace_id: String::new(),
                placeholder: crate::vault::placeholder(&u.name),
                name: u.name,
                hosts,
                delivery,
                headers,
            });
        }
        Ok(Self {
            tenant,
            name,
            limits,
            image,
            network,
            egress,
            egress_templates,
            secrets,
        })
    }
}

/// Finds the workspace a user means.
pub async fn resolve(state: &AppState, raw: &str) -> ApiResult<Workspace> {
    let r = WorkspaceRef::parse(raw).map_err(|e| ApiError::invalid(format!("workspace: {e}")))?;
    let not_found = || ApiError::not_found(format!("workspace {raw} not found"));
    match r {
        WorkspaceRef::Id(id) => state
            .store
            .find_workspace_by_id(&id)
            .await?
            .ok_or_else(not_found),
        WorkspaceRef::Qualified { tenant, name } => state
            .store
            .find_workspace(&tenant, &name)
            .await?
            .ok_or_else(not_found),
        WorkspaceRef::Bare(name) => {
            let mut all = state.store.find_workspaces_named(&name).await?;
            match all.len() {
                0 => Err(not_found()),
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
    }
}

fn engine_name(state: &AppState, tenant: &Name, name: &Name) -> String {
    format!("berth-{}-{}-{}", state.server_id, tenant, name)
}

fn volume_name(state: &AppState, tenant: &Name, name: &Name) -> String {
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
    if !state.runtime.image_exists(&spec.image).await? {
        return Err(ApiError::new(
            ErrorCode::ImageMissing,
            format!(
                "image {} is missing: build it with `berth image build`",
                spec.image
            ),
        ));
    }
    for u in &spec.secrets {
        if state
            .store
            .secret(spec.tenant.as_str(), &u.name)
            .await?
            .is_none()
        {
            return Err(ApiError::not_found(format!(
                "tenant {} has no secret {}: set it with `berth secret set --tenant {} {}`",
                spec.tenant, u.name, spec.tenant, u.name
            )));
        }
    }
    for t in &spec.egress_templates {
        if crate::egress::find_template(&state.store, spec.tenant.as_str(), t.as_str())
            .await?
            .is_none()
        {
            return Err(crate::routes::egress_templates::unknown_template(
                spec.tenant.as_str(),
                t.as_str(),
            ));
        }
    }
    let tenant = state.store.ensure_tenant(&spec.tenant).await?;
    let id = WorkspaceId::generate();
    let lock = state.lock_for(&id);
    let _guard = lock.lock().await;
    let volume = volume_name(state, &spec.tenant, &spec.name);
    let row = state
        .store
        .insert_workspace(&NewWorkspace {
            id: id.clone(),
            tenant_id: tenant.id,
            name: spec.name.clone(),
            image: spec.image.clone(),
            limits: spec.limits,
            network: spec.network.clone(),
            volume: volume.clone(),
        })
        .await
        .map_err(|e| match e {
            berth_store::StoreError::Conflict(_) => ApiError::new(
                ErrorCode::Conflict,
                format!("workspace {}/{} already exists", spec.tenant, spec.name),
            ),
            other => other.into(),
        })?;

    state
        .store
        .set_egress_rules(id.as_str(), &spec.egress)
        .await?;
    let uses: Vec<berth_store::SecretUse> = spec
        .secrets
        .iter()
        .map(|u| berth_store::SecretUse {
            workspace_id: id.to_string(),
            ..u.clone()
        })
        .collect();
    state.store.set_secret_uses(id.as_str(), &uses).await?;
    for t in &spec.egress_templates {
        // Checked above; a template removed since then fails the create here, before anything
        // is provisioned.
        if let Err(err) = crate::routes::egress_templates::attach_to(state, &row, t).await {
            if let Err(e) = state.store.delete_workspace(&id).await {
                tracing::error!(error = %e, "rollback: could not delete workspace row");
            }
            let _ = state.store.set_egress_rules(id.as_str(), &[]).await;
            let _ = state.store.set_secret_uses(id.as_str(), &[]).await;
            drop(_guard);
            state.forget_lock(&id);
            return Err(err);
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
            if let Err(e) = state.store.delete_workspace(&id).await {
                tracing::error!(error = %e, "rollback: could not delete workspace row");
            }
            if let Err(e) = state.store.set_egress_rules(id.as_str(), &[]).await {
                tracing::error!(error = %e, "rollback: could not delete egress rules");
            }
            if let Err(e) = state.store.set_secret_uses(id.as_str(), &[]).await {
                tracing::error!(error = %e, "rollback: could not delete secret uses");
            }
            drop(_guard);
            state.forget_lock(&id);
            Err(err)
        }
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
            if let Err(e) = state.runtime.remove_container(&c).await {
                tracing::error!(container = %c, error = %e, "rollback: remove container");
            }
        }
        if let Some(v) = self.volume {
            if let Err(e) = state.runtime.remove_volume(&v).await {
                tracing::error!(volume = %v, error = %e, "rollback: remove volume");
            }
        }
        if let Some(dir) = self.channel {
            if let Some(ws_dir) = dir.parent() {
                let _ = std::fs::remove_dir_all(ws_dir);
            }
        }
    }
}

async fn provision(state: &AppState, w: &Workspace, undo: &mut Undo) -> ApiResult<()> {
    let existed = state.runtime.volume_exists(&w.volume).await?;
    state
        .runtime
        .ensure_volume(&w.volume, &labels(state, w))
        .await?;
    if !existed {
        undo.volume = Some(w.volume.clone());
    }
    let chan = prepare_channel(state, &w.id).map_err(ApiError::internal)?;
    undo.channel = Some(chan);
    let container = create_container(state, w).await?;
    undo.container = Some(container.clone());
    state.store.set_container(&w.id, Some(&container)).await?;
    start_and_wait(state, w, &container).await
}

fn labels(state: &AppState, w: &Workspace) -> HashMap<String, String> {
    HashMap::from([
        (LABEL_MANAGED.to_owned(), "true".to_owned()),
        (LABEL_SERVER.to_owned(), state.server_id.clone()),
        (LABEL_WORKSPACE.to_owned(), w.id.to_string()),
        (LABEL_TENANT.to_owned(), w.tenant.to_string()),
    ])
}

/// Creates (or empties) the per-workspace channel directory, owned by the workspace user.
fn prepare_channel(state: &AppState, id: &WorkspaceId) -> std::io::Result<std::path::PathBuf> {
    let dir = state.channel_dir(id);
    std::fs::create_dir_all(&dir)?;
    // A stale socket from an earlier run would make the readiness check pass too early.
    let _ = std::fs::remove_file(state.daemon_socket(id));
    if let Some(e) = &state.egress {
        crate::egress::write_ca_bundle(&dir, e.ca_pem())?;
    }
    chown_to_workspace_user(&dir)?;
    set_mode(&dir, 0o700)?;
    Ok(dir)
}

fn chown_to_workspace_user(dir: &Path) -> std::io::Result<()> {
    if !nix::unistd::geteuid().is_root() {
        // Unprivileged servers (tests with a fake runtime) cannot and need not chown.
        return Ok(());
    }
    let id = nix::unistd::Uid::from_raw(WORKSPACE_UID);
    let gid = nix::unistd::Gid::from_raw(WORKSPACE_UID);
    nix::unistd::chown(dir, Some(id), Some(gid)).map_err(std::io::Error::from)
}

async fn create_container(state: &AppState, w: &Workspace) -> ApiResult<String> {
    let mut labels = labels(state, w);
    labels.insert(LABEL_BINARY.to_owned(), state.binary.hash.clone());
    let spec = ContainerSpec {
        name: engine_name(state, &w.tenant, &w.name),
        image: w.image.clone(),
        user: format!("{WORKSPACE_UID}:{WORKSPACE_UID}"),
        cmd: vec![
            DAEMON_PATH_IN_WORKSPACE.to_owned(),
            "workspace-daemon".to_owned(),
            "--socket".to_owned(),
            format!("{CHANNEL_IN_WORKSPACE}/daemon.sock"),
        ],
        env: vec![
            format!("HOME={HOME}"),
            "USER=agent".to_owned(),
            "LOGNAME=agent".to_owned(),
            "SHELL=/bin/bash".to_owned(),
            "LANG=C.UTF-8".to_owned(),
            format!("BERTH_WORKSPACE={}", w.qualified_name()),
            format!("BERTH_WORKSPACE_ID={}", w.id),
        ]
        .into_iter()
        .chain(proxy_env())
        .chain(secret_env(state, w).await?)
        .collect(),
        labels,
        hostname: Some(w.name.to_string()),
        working_dir: Some(HOME.to_owned()),
        memory_bytes: w.limits.memory_bytes,
        nano_cpus: w.limits.nano_cpus,
        pids_limit: w.limits.pids,
        mounts: vec![
            Mount::Volume {
                name: w.volume.clone(),
                target: HOME.to_owned(),
            },
            Mount::Bind {
                source: state.binary.path.clone(),
                target: DAEMON_PATH_IN_WORKSPACE.to_owned(),
                read_only: true,
            },
            Mount::Bind {
                source: state.channel_dir(&w.id),
                target: CHANNEL_IN_WORKSPACE.to_owned(),
                read_only: false,
            },
        ],
        network_mode: w.network.clone(),
        cap_add: Vec::new(),
        readonly_rootfs: false,
        init: true,
    };
    Ok(state.runtime.create_container(&spec).await?)
}

/// The workspace's secrets as it sees them: placeholders (the default), or — opted in, marked
/// exposed — the real value in the environment or in a file under /run/berth/secrets.
async fn secret_env(state: &AppState, w: &Workspace) -> ApiResult<Vec<String>> {
    let mut env = Vec::new();
    let uses = state.store.secret_uses(Some(w.id.as_str())).await?;
    if uses.is_empty() {
        return Ok(env);
    }
    let vault = state
        .vault
        .as_deref()
        .ok_or_else(|| ApiError::new(ErrorCode::Internal, "the secrets vault is not available"))?;
    for u in uses {
        match u.delivery.as_str() {
            "placeholder" => env.push(format!("{}={}", u.name, u.placeholder)),
            delivery => {
                let value =
                    crate::routes::secrets::reveal(state, vault, w.tenant.as_str(), &u.name)
                        .await
                        .map_err(ApiError::internal)?;
                if delivery == "env" {
                    env.push(format!("{}={}", u.name, value.expose()));
                } else {
                    let dir = state.channel_dir(&w.id).join("secrets");
                    std::fs::create_dir_all(&dir).map_err(ApiError::internal)?;
                    let path = dir.join(&u.name);
                    std::fs::write(&path, value.expose()).map_err(ApiError::internal)?;
                    set_mode(&path, 0o400).map_err(ApiError::internal)?;
                    chown_to_workspace_user(&path).map_err(ApiError::internal)?;
                    chown_to_workspace_user(&dir).map_err(ApiError::internal)?;
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
    for k in [
        "HTTP_PROXY",
        "HTTPS_PROXY",
        "http_proxy",
        "https_proxy",
        "ALL_PROXY",
        "all_proxy",
    ] {
        env.push(format!("{k}={proxy}"));
    }
    for k in ["NO_PROXY", "no_proxy"] {
        env.push(format!("{k}=localhost,127.0.0.1,::1"));
    }
    for k in [
        "SSL_CERT_FILE",
        "NODE_EXTRA_CA_CERTS",
        "REQUESTS_CA_BUNDLE",
        "CURL_CA_BUNDLE",
        "GIT_SSL_CAINFO",
    ] {
        env.push(format!("{k}={bundle}"));
    }
    env
}

async fn start_and_wait(state: &AppState, w: &Workspace, container: &str) -> ApiResult<()> {
    state.runtime.start_container(container).await?;
    wait_ready(state, w, container).await
}

/// Waits until the daemon answers the handshake, or the container dies, or time runs out.
/// The daemon is usually up a few milliseconds after the container starts, so the socket is
/// polled tightly at first (a connect to a missing socket costs microseconds); the engine is
/// asked whether the container still runs only now and then.
async fn wait_ready(state: &AppState, w: &Workspace, container: &str) -> ApiResult<()> {
    let client = state.daemon(&w.id);
    let started = tokio::time::Instant::now();
    let deadline = started + state.daemon_ready_timeout;
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
                    state.daemon_ready_timeout.as_secs_f64()
                ),
            ));
        }
        if now >= next_inspect {
            next_inspect = now + Duration::from_millis(250);
            if let Some(st) = state.runtime.inspect_container(container).await? {
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
    if !state.runtime.image_exists(&w.image).await? {
        return Err(ApiError::new(
            ErrorCode::ImageMissing,
            format!(
                "image {} is missing: build it with `berth image build`",
                w.image
            ),
        ));
    }
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
            let failure = Failure::new(FailureKind::StartFailed, err.message.clone());
            state
                .store
                .set_state(&w.id, WorkspaceState::Failed, Some(&failure))
                .await?;
            Err(err)
        }
    }
}

async fn start_inner(state: &AppState, w: &Workspace) -> ApiResult<()> {
    prepare_channel(state, &w.id).map_err(ApiError::internal)?;
    state
        .runtime
        .ensure_volume(&w.volume, &labels(state, w))
        .await?;
    // Reuse the container when it runs this server's daemon build; otherwise (first start after
    // an upgrade, or the container vanished) recreate it: the home volume carries the state.
    let existing = match &w.container_id {
        Some(c) => state.runtime.inspect_container(c).await?,
        None => None,
    };
    let reuse = existing
        .as_ref()
        .is_some_and(|c| c.labels.get(LABEL_BINARY) == Some(&state.binary.hash));
    let container = if reuse {
        w.container_id.clone().unwrap_or_default()
    } else {
        if let Some(old) = &existing {
            state.runtime.remove_container(&old.id).await?;
        }
        // A container of this name may be left from a crash between create and store update.
        state
            .runtime
            .remove_container(&engine_name(state, &w.tenant, &w.name))
            .await?;
        let c = create_container(state, w).await?;
        state.store.set_container(&w.id, Some(&c)).await?;
        c
    };
    start_and_wait(state, w, &container).await
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
        if let Err(e) = state.runtime.stop_container(c, STOP_TIMEOUT).await {
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
        state.runtime.remove_container(c).await?;
    }
    state
        .runtime
        .remove_container(&engine_name(state, &w.tenant, &w.name))
        .await?;
    if remove_volume {
        state.runtime.remove_volume(&w.volume).await?;
    }
    if let Some(ws_dir) = state.channel_dir(&w.id).parent() {
        let _ = std::fs::remove_dir_all(ws_dir);
    }
    state.store.delete_workspace(&w.id).await?;
    state.store.set_egress_rules(w.id.as_str(), &[]).await?;
    state.store.set_secret_uses(w.id.as_str(), &[]).await?;
    drop(_guard);
    state.forget_lock(&w.id);
    Ok(w)
}

#[cfg(test)]
#[path = "lifecycle_tests.rs"]
mod tests;
