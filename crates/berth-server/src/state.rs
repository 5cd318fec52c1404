//! Shared server state and the pieces picked at start-up.

use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};

use async_trait::async_trait;
use berth_domain::WorkspaceId;
use berth_runtime::image::{BuildOutcome, BuildProgress, ImageRecipe};
use berth_runtime::{Runtime, RuntimeError};
use berth_store::Store;

use crate::binary::StagedBinary;
use crate::config::Config;
use crate::engine::Engine;

/// Builds the workspace base image. The Docker backend builds for real; tests may plug in others.
#[async_trait]
pub trait ImageBuilder: Send + Sync + 'static {
    /// The content-addressed tag the current recipe produces.
    fn tag(&self) -> String;
    async fn build(
        &self,
        force: bool,
        progress: tokio::sync::mpsc::UnboundedSender<BuildProgress>,
    ) -> Result<BuildOutcome, RuntimeError>;
}

pub struct DockerImageBuilder {
    pub engine: Arc<Engine>,
    pub recipe: ImageRecipe,
    tag: String,
}

impl DockerImageBuilder {
    pub fn new(engine: Arc<Engine>, recipe: ImageRecipe) -> Self {
        let tag = recipe.tag();
        Self {
            engine,
            recipe,
            tag,
        }
    }
}

#[async_trait]
impl ImageBuilder for DockerImageBuilder {
    fn tag(&self) -> String {
        self.tag.clone()
    }

    async fn build(
        &self,
        force: bool,
        progress: tokio::sync::mpsc::UnboundedSender<BuildProgress>,
    ) -> Result<BuildOutcome, RuntimeError> {
        let docker = self.engine.docker()?;
        berth_runtime::image::build_image(&docker, &self.recipe, force, move |p| {
            let _ = progress.send(p);
        })
        .await
    }
}

/// What this server runs workspaces with: the engine, the image builder, its own identity and
/// the daemon it stages into every workspace.
pub struct Host {
    pub runtime: Arc<dyn Runtime>,
    pub images: Arc<dyn ImageBuilder>,
    /// The engine connection (made on first use): where it is, and what builds derived images.
    /// Unit tests give one at a socket that does not exist beside their fake runtime.
    pub engine: Arc<Engine>,
    /// Short id of this server instance; prefixes engine object names and labels them, so
    /// several servers can share one engine without touching each other's workspaces.
    pub server_id: String,
    pub binary: StagedBinary,
    /// Daemon protocol this server speaks (tests raise it to play a newer server).
    pub daemon_protocol: u32,
    /// How long a started workspace may take until its daemon answers.
    pub daemon_ready_timeout: std::time::Duration,
    /// Whether the engine is Podman, once asked (`lifecycle::userns_mode`): the answer comes
    /// from the engine's `/info`, which Podman computes slowly (0.1–1 s on the benchmark VM) and
    /// answers one call at a time, so asking on every create serialised parallel creates.
    pub podman: tokio::sync::OnceCell<bool>,
    /// Held while the engine creates a container in a private user namespace: ten concurrent
    /// `userns=auto` creates hung Podman 4.3.1 on the benchmark VM (a userns/storage lock
    /// deadlock of that version is podman issue 16062); one at a time made it rarer, not gone
    /// (docs/benchmarks.md, workspace start, 2026-12-05).
    pub userns_create: tokio::sync::Mutex<()>,
}

impl Host {
    pub fn new(
        runtime: Arc<dyn Runtime>,
        images: Arc<dyn ImageBuilder>,
        engine: Arc<Engine>,
        server_id: String,
        binary: StagedBinary,
    ) -> Self {
        Self {
            runtime,
            images,
            engine,
            server_id,
            binary,
            daemon_protocol: berth_daemon::PROTOCOL_VERSION,
            daemon_ready_timeout: std::time::Duration::from_secs(20),
            podman: tokio::sync::OnceCell::new(),
            userns_create: tokio::sync::Mutex::new(()),
        }
    }
}

/// Everything a request handler or background task needs: the configuration, the store, the
/// host's engine side, and the service handles.
pub struct AppState {
    pub config: Config,
    pub store: Store,
    pub host: Host,
    /// The LLM gateway: its per-workspace listeners, caches, budget reservations, recorder.
    pub gateway: berth_gateway::Gateway,
    /// The egress proxy: its per-workspace listeners, policies, placeholder secrets and log.
    pub egress: Arc<crate::egress::Egress>,
    /// The secrets vault.
    pub vault: Arc<crate::vault::Vault>,
    pub tasks: crate::tasks::TaskHub,
    /// Notifications: settings, the host's addresses, the browser stream's signal.
    pub notify: crate::notify::Notifier,
    /// What the front door alone keeps: HTTPS, single sign-on, the MCP endpoint's sessions.
    pub web: Web,
    locks: Locks,
}

/// The front door's own state, which no service below the routes needs (the notifier and PR
/// summaries read the public URL from `sso`).
pub struct Web {
    /// The HTTPS setup, when the server serves HTTPS (set once, at start).
    pub tls: std::sync::OnceLock<Arc<crate::tls::TlsHandle>>,
    /// Single sign-on (OpenID Connect) for people; `None` when no issuer is configured.
    pub sso: Option<Arc<crate::sso::Sso>>,
    /// The sessions of the MCP endpoint (`/api/v1/mcp`).
    pub mcp: crate::mcp::Sessions,
}

/// Locks serializing lifecycle operations: per workspace, and per tenant for quota admission.
#[derive(Default)]
struct Locks {
    workspaces: Mutex<HashMap<WorkspaceId, Arc<tokio::sync::Mutex<()>>>>,
    tenants: Mutex<HashMap<String, Arc<tokio::sync::Mutex<()>>>>,
}

/// Label keys on engine objects.
pub const LABEL_MANAGED: &str = "berth.managed";
pub const LABEL_SERVER: &str = "berth.server";
pub const LABEL_WORKSPACE: &str = "berth.workspace";
pub const LABEL_TENANT: &str = "berth.tenant";
pub const LABEL_BINARY: &str = "berth.daemon-binary";
/// A fingerprint of the caps and secret bindings a workspace's container was made with.
pub const LABEL_CONFIG: &str = "berth.config";

/// The contact of berth's Web Push token: `BERTH_VAPID_SUBJECT`, else the server's https
/// public URL, else a placeholder address (some push services refuse it: set the variable).
fn vapid_subject(config: &Config) -> anyhow::Result<String> {
    if let Some(s) = &config.env.vapid_subject {
        anyhow::ensure!(
            (s.starts_with("mailto:") || s.starts_with("https://")) && s.len() <= 256,
            "BERTH_VAPID_SUBJECT: {s:?} is not a mailto: or https: URL"
        );
        return Ok(s.clone());
    }
    Ok(match &config.sso {
        Some(sso) if sso.public_url.scheme() == "https" => {
            sso.public_url.as_str().trim_end_matches('/').to_owned()
        }
        _ => "mailto:berth@localhost".to_owned(),
    })
}

impl AppState {
    /// Builds the services over `config`'s data dir: the gateway, the egress proxy (its CA under
    /// `DATA_DIR/ca`, its log writer started) and the vault (its key from the environment or
    /// `DATA_DIR/secrets.key`), the vault also being the gateway's source of `vault:` keys.
    pub fn new(config: Config, store: Store, host: Host) -> anyhow::Result<Self> {
        let gateway =
            berth_gateway::Gateway::new(crate::gateway::config(&config), store.clone())
                .map_err(|e| anyhow::anyhow!("cannot set up the gateway's TLS client: {e}"))?;
        let egress = crate::egress::Egress::start(&config.data_dir, &config.env, store.clone())?;
        let vault = Arc::new(crate::vault::Vault::load(
            &config.data_dir,
            config.env.secrets_key.as_ref(),
            config.env.secrets_key_file.as_deref(),
        )?);
        gateway.set_secrets(Arc::new(crate::gateway::VaultKeys {
            store: store.clone(),
            vault: vault.clone(),
        }));
        let sso = match &config.sso {
            Some(c) => Some(Arc::new(crate::sso::Sso::new(c.clone())?)),
            None => None,
        };
        let notify = crate::notify::Notifier::new(
            crate::notify::Settings::parse(&config.env)?,
            crate::notify::webpush::Vapid::load(
                &config.data_dir,
                config.env.vapid_key_file.as_deref(),
                vapid_subject(&config)?,
            )?,
        );
        Ok(Self {
            notify,
            config,
            store,
            host,
            gateway,
            egress,
            vault,
            tasks: Default::default(),
            web: Web {
                tls: std::sync::OnceLock::new(),
                sso,
                mcp: Default::default(),
            },
            locks: Locks::default(),
        })
    }

    /// Where the engine is (or is expected), for messages.
    pub fn engine_endpoint(&self) -> String {
        self.host.engine.endpoint()
    }

    /// The image new workspaces use unless they name one.
    pub fn default_image(&self) -> String {
        self.config
            .image
            .clone()
            .unwrap_or_else(|| self.host.images.tag())
    }

    /// The lock serializing lifecycle operations on one workspace.
    pub fn lock_for(&self, id: &WorkspaceId) -> Arc<tokio::sync::Mutex<()>> {
        let mut locks = berth_domain::sync::lock(&self.locks.workspaces);
        locks.entry(id.clone()).or_default().clone()
    }

    pub fn forget_lock(&self, id: &WorkspaceId) {
        let mut locks = berth_domain::sync::lock(&self.locks.workspaces);
        locks.remove(id);
    }

    /// The lock serializing quota admissions of one tenant (held from the quota check until
    /// what it admitted is in the store, so two creates cannot both take the last room).
    pub fn tenant_lock(&self, tenant: &str) -> Arc<tokio::sync::Mutex<()>> {
        let mut locks = berth_domain::sync::lock(&self.locks.tenants);
        locks.entry(tenant.to_owned()).or_default().clone()
    }

    /// Drops the gateway's cached budgets (after a change through the API).
    pub fn forget_budgets(&self) {
        self.gateway.forget_budgets();
    }

    /// Host directory bind-mounted read-only at /run/berth in this workspace only; it is
    /// server-owned, and only its `daemon/` subdirectory is writable from inside (see
    /// `berth_daemon::chanfs`).
    pub fn channel_dir(&self, id: &WorkspaceId) -> PathBuf {
        self.config
            .data_dir
            .join("workspaces")
            .join(id.as_str())
            .join("chan")
    }

    pub fn daemon_socket(&self, id: &WorkspaceId) -> PathBuf {
        self.channel_dir(id)
            .join(berth_daemon::DAEMON_DIR)
            .join("daemon.sock")
    }

    pub fn daemon(&self, id: &WorkspaceId) -> berth_daemon::DaemonClient {
        berth_daemon::DaemonClient::new(self.daemon_socket(id))
            .with_protocol_version(self.host.daemon_protocol)
    }
}
