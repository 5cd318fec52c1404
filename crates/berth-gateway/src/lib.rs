//! berth's LLM gateway: a streaming pass-through from agents to the real LLM providers.
//!
//! Each running workspace gets a Unix socket in its channel directory (`/run/berth/gateway.sock`
//! inside); the workspace daemon relays a loopback port to it, so agents reach the gateway even
//! in a workspace with no network at all. Agents authenticate with their task's virtual key; the
//! gateway checks that the key is live (a turn the server started is in flight), belongs to a
//! task *of that workspace* and that task's provider, swaps in the real provider key, and
//! streams the upstream response back chunk by chunk. Real keys and upstream addresses never
//! enter a workspace.
//!
//! Paths: `/{provider}/{rest}` → `{provider base url}/{rest}`, provider ∈ anthropic, openai,
//! gemini, for the endpoints, headers and bodies `policy` allows only. Generating calls
//! reserve against budgets first (`budget`) and give the reservation back once their usage,
//! priced by the model the upstream reports (`usage_tap`), is stored (`meter`).
//!
//! One [`Gateway`] handle (cheap to clone) holds all of it, built from a [`GatewayConfig`] the
//! server fills in (this crate reads no environment) and the store; upstream keys kept in the
//! server's vault come through a [`SecretSource`]. The server starts a workspace's listener
//! with [`Gateway::serve`] and ends it with [`Gateway::stop`].

mod budget;
mod error;
mod forward;
mod keys;
mod listen;
mod meter;
mod policy;
mod prices;
mod upstream;
pub mod usage_tap;

use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::Instant;

use async_trait::async_trait;
use berth_daemon::DaemonClient;
use berth_domain::{Secret, Timestamp, WorkspaceId};
use berth_store::{Budget, Store};

pub use budget::DEFAULT_RESERVE_OUTPUT;
pub use keys::{hash_key, session_liveness, SessionLiveness};
pub use prices::{Price, PriceSource, Prices, Quote, DEFAULT_FALLBACK};
pub use upstream::{upstream_url, Probe, Upstream, Upstreams};
pub use usage_tap::Tokens;

/// The gateway's socket in a workspace's channel directory.
pub const SOCKET_NAME: &str = "gateway.sock";

/// Where upstream keys configured as `vault:TENANT/NAME` are read: the server's vault.
#[async_trait]
pub trait SecretSource: Send + Sync + 'static {
    /// The value of tenant `tenant`'s secret `name`.
    async fn reveal(&self, tenant: &str, name: &str) -> anyhow::Result<Secret>;
}

/// What the gateway is configured with (the server reads it from its environment).
#[derive(Debug, Clone)]
pub struct GatewayConfig {
    /// The real upstream of each provider.
    pub upstreams: Upstreams,
    /// Prompt recording: keep each call's request and response this many days (None: off).
    pub recording_days: Option<u32>,
    /// Most output tokens reserved against budgets for one call (see `budget`).
    pub reserve_output: u64,
    /// The operator's price table, over the shipped one (see [`Prices`]).
    pub prices_file: PathBuf,
}

/// The LLM gateway of one server: its listeners, caches, budget reservations and recorder.
/// Clones share all of it.
#[derive(Clone)]
pub struct Gateway {
    inner: Arc<Inner>,
}

struct Inner {
    upstreams: Upstreams,
    recording_days: Option<u32>,
    store: Store,
    /// HTTP client for the upstream calls.
    http: upstream::UpstreamClient,
    listeners: listen::Listeners,
    /// Recent virtual-key lookups.
    keys: keys::KeyCache,
    /// The budgets, briefly cached.
    budgets: Mutex<Option<(Instant, Vec<Budget>)>>,
    /// Budget reservations of the calls in flight.
    reservations: budget::Reservations,
    /// The call recorder (started on first use).
    recorder: OnceLock<meter::Recorder>,
    prices: Prices,
    /// Upstream keys by reference (None: `vault:` keys are unavailable).
    secrets: OnceLock<Arc<dyn SecretSource>>,
}

impl Gateway {
    /// A gateway over `store`; fails only when the upstream TLS client cannot be set up.
    pub fn new(config: GatewayConfig, store: Store) -> std::io::Result<Self> {
        Ok(Self {
            inner: Arc::new(Inner {
                http: upstream::upstream_client()?,
                upstreams: config.upstreams,
                recording_days: config.recording_days,
                store,
                listeners: Default::default(),
                keys: Default::default(),
                budgets: Default::default(),
                reservations: budget::Reservations::new(config.reserve_output),
                recorder: OnceLock::new(),
                prices: Prices::new(config.prices_file),
                secrets: OnceLock::new(),
            }),
        })
    }

    /// Where `vault:` upstream keys come from; set once (a second source is ignored).
    pub fn set_secrets(&self, secrets: Arc<dyn SecretSource>) {
        if self.inner.secrets.set(secrets).is_err() {
            tracing::warn!("the gateway's secret source is already set");
        }
    }

    /// Makes sure the workspace's gateway socket ([`SOCKET_NAME`] in its channel directory
    /// `channel_dir`) is served (idempotent; rebinds when the socket went away). `daemon` is the
    /// workspace's daemon, told to stop a task whose budget is used up.
    pub fn serve(&self, ws: &WorkspaceId, channel_dir: &Path, daemon: DaemonClient) {
        self.inner
            .listeners
            .ensure(self, ws, &channel_dir.join(SOCKET_NAME), daemon);
    }

    /// Stops serving the workspace's socket (when the workspace is removed).
    pub fn stop(&self, ws: &WorkspaceId) {
        self.inner.listeners.stop(ws);
    }

    /// Drops a task's cached key lookups, so a key the server just revoked stops working at
    /// once (not only when the cache entry expires).
    pub fn forget_task(&self, task_id: &berth_domain::TaskId) {
        self.inner.keys.forget_task(task_id);
    }

    /// Drops the cached budgets (after a change through the API).
    pub fn forget_budgets(&self) {
        *berth_domain::sync::lock(&self.inner.budgets) = None;
    }

    /// Days prompt recordings are kept (None: recording is off).
    pub fn recording_days(&self) -> Option<u32> {
        self.inner.recording_days
    }

    /// With recording on: purges recordings past their retention every ten minutes.
    pub fn spawn_recording_purge(&self) -> Option<tokio::task::JoinHandle<()>> {
        let days = self.inner.recording_days?;
        tracing::info!(days, "recording LLM prompts and answers");
        let store = self.inner.store.clone();
        Some(tokio::spawn(async move {
            let mut tick = tokio::time::interval(std::time::Duration::from_secs(600));
            loop {
                tick.tick().await;
                let cutoff =
                    time::OffsetDateTime::now_utc() - time::Duration::days(i64::from(days));
                let before = Timestamp::from(cutoff);
                match store.purge_llm_recordings(&before).await {
                    Ok(0) => {}
                    Ok(n) => tracing::info!(n, "purged LLM recordings past retention"),
                    Err(e) => tracing::warn!(error = %e, "purging LLM recordings"),
                }
            }
        }))
    }
}

/// Start of the current budget period (UTC); None for `total`.
pub fn period_start(period: &str) -> Option<Timestamp> {
    let day = time::OffsetDateTime::now_utc().replace_time(time::Time::MIDNIGHT);
    match period {
        "day" => Some(day.into()),
        "month" => Some(day.replace_day(1).unwrap_or(day).into()),
        _ => None,
    }
}
