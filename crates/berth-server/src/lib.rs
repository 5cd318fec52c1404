//! berth server: the REST API, workspace lifecycle and reconciler.
//!
//! [`run`] wires the concrete pieces (SQLite store, Docker-API runtime, staged daemon binary)
//! into an [`AppState`] and serves the router until SIGINT/SIGTERM.

mod access_requests;
mod agent_sessions;
mod approvals;
mod auth;
mod backup;
mod binary;
mod budgets;
mod capacity;
mod config;
mod deliver;
mod disk;
mod doctor;
mod egress;
mod egress_log_queue;
mod engine;
mod error;
mod gateway;
mod images;
mod inbox;
#[cfg(test)]
mod layering_tests;
mod lifecycle;
mod mcp;
mod notify;
mod openapi;
mod provision;
mod reconciler;
mod retention;
mod routes;
mod secrets;
mod smoke;
mod sso;
mod state;
mod task_diff;
mod tasks;
mod templates;
mod tenants;
mod terminal;
#[cfg(test)]
mod test_support;
mod tls;
mod tokens;
mod ui;
mod vault;
mod watch_map;

use std::sync::Arc;

pub use config::{Config, ServerArgs};
pub use routes::access::{Access, RouteSpec};
pub use state::{AppState, DockerImageBuilder, ImageBuilder};

/// Every API route with the access it asks for (paths relative to `/api/v1`), as registered:
/// what the authorization matrix test enumerates.
pub fn route_table() -> Vec<RouteSpec> {
    routes::table()
}

/// The REST API's OpenAPI document as pretty-printed JSON: the one served at
/// `/api/v1/openapi.json`, for `berth openapi` and the committed snapshot the web UI's types are
/// generated from.
pub fn openapi_json() -> Result<String, serde_json::Error> {
    serde_json::to_string_pretty(&openapi::document())
}

use berth_runtime::Runtime;
use berth_store::Store;

/// Length of the server id that prefixes engine object names.
const SERVER_ID_LEN: usize = 6;

/// Runs the server until SIGINT/SIGTERM.
pub async fn run(args: ServerArgs) -> anyhow::Result<()> {
    let config = args.resolve()?;
    raise_nofile_limit();
    prepare_data_dir(&config)?;
    let (store, server_id) = open_store(&config).await?;
    let (host, engine) = build_host(&config, server_id.clone())?;
    let tls = match &config.tls {
        Some(settings) => Some(tls::Tls::setup(settings, &config.data_dir)?),
        None => None,
    };
    let listener = tokio::net::TcpListener::bind(&config.listen)
        .await
        .map_err(|e| anyhow::anyhow!("cannot listen on {}: {e}", config.listen))?;
    let local = listener.local_addr()?;
    let state = AppState::new(config, store.clone(), host)?;
    if let Some(t) = &tls {
        let _ = state.web.tls.set(Arc::new(t.handle(local)));
    }
    let state = Arc::new(state);
    match state.host.runtime.info().await {
        Ok(info) => {
            tracing::info!(engine = %info.engine, version = %info.version, endpoint = %engine.endpoint(), "engine reachable")
        }
        Err(e) => tracing::warn!(error = %e, "engine not reachable yet; `berth doctor` explains"),
    }
    let background = start_background(&state).await;

    let app = routes::router(state.clone()).layer(tower_http::trace::TraceLayer::new_for_http());
    tracing::info!(server_id = %server_id, "berth server ready");
    match tls {
        Some(tls) => tls.serve(listener, app, shutdown_signal()).await?,
        None => {
            tracing::info!(url = %format!("http://{local}"), "berth server listening");
            axum::serve(listener, app)
                .with_graceful_shutdown(shutdown_signal())
                .await?
        }
    }
    for task in background {
        task.abort();
    }
    store.close().await;
    Ok(())
}

/// Creates the data directory, readable by root alone.
fn prepare_data_dir(config: &Config) -> anyhow::Result<()> {
    std::fs::create_dir_all(&config.data_dir).map_err(|e| {
        anyhow::anyhow!("cannot create data dir {}: {e}", config.data_dir.display())
    })?;
    // Workspaces reach their channel directories through bind mounts, never through this path;
    // on the host nobody but root needs to traverse it (the channel dirs belong to uid 1000, which
    // may exist on the host too).
    binary::set_mode(&config.data_dir, 0o700).map_err(|e| {
        anyhow::anyhow!(
            "cannot restrict data dir {}: {e}",
            config.data_dir.display()
        )
    })
}

/// Opens the store, with this server's id (made on the first start) and the bootstrap admin
/// token installed when one is given.
async fn open_store(config: &Config) -> anyhow::Result<(Store, String)> {
    let store = Store::open(&config.data_dir.join("berth.db")).await?;
    let server_id = match store.meta("server_id").await? {
        Some(id) => id,
        None => {
            let id = auth::generate_token().expose()["berth_".len()..][..SERVER_ID_LEN].to_owned();
            store.set_meta("server_id", &id).await?;
            id
        }
    };
    let env_token = config.env.bootstrap_token.clone();
    if let Some(source) = auth::bootstrap(
        &store,
        &config.data_dir,
        env_token,
        config.bootstrap_token_file.as_deref(),
    )
    .await?
    {
        tracing::info!(%source, "bootstrap admin token installed");
    }
    Ok((store, server_id))
}

/// The engine side: the engine client (also the image builder) and the staged daemon binary.
fn build_host(
    config: &Config,
    server_id: String,
) -> anyhow::Result<(state::Host, Arc<engine::Engine>)> {
    let engine = Arc::new(engine::Engine::new(config.engine.clone()));
    let recipe = berth_runtime::image::ImageRecipe {
        work_dir: config.data_dir.join("tmp"),
        ..Default::default()
    };
    std::fs::create_dir_all(&recipe.work_dir)?;
    let images: Arc<dyn ImageBuilder> = Arc::new(DockerImageBuilder::new(engine.clone(), recipe));
    let runtime: Arc<dyn Runtime> = engine.clone();
    let exe = std::env::current_exe()?;
    let binary = binary::stage(&exe, &config.data_dir)?;
    let host = state::Host::new(runtime, images, engine.clone(), server_id, binary);
    Ok((host, engine))
}

/// Settles what happened while the server was down, then starts the background work; returns
/// the loops to stop at shutdown.
async fn start_background(state: &Arc<AppState>) -> Vec<tokio::task::JoinHandle<()>> {
    // Settle what happened while the server was down before taking requests (workspaces whose
    // containers a host or engine restart stopped are started again in the background).
    reconciler::startup(state).await;
    let reconcile = reconciler::spawn(state.clone());
    let purge = retention::spawn(state.clone());
    state.gateway.spawn_recording_purge();
    tasks::resume_all(state).await;
    provision::recover(state).await;
    let sweeper = agent_sessions::spawn_sweeper(state.clone());
    let notifier = notify::worker::spawn(state.clone());
    let grants = access_requests::spawn_sweeper(state.clone());
    vec![reconcile, purge, sweeper, notifier, grants]
}

/// Raises the soft limit on open files to the hard one (at most the kernel's `nr_open`): every
/// running workspace holds sockets on the server (capped per workspace, see
/// `berth_daemon::conn_limit`), and the soft limit a shell hands down (often 1024) would let a
/// few busy workspaces use up the descriptors of all.
fn raise_nofile_limit() {
    use nix::sys::resource::{getrlimit, setrlimit, Resource};
    let (soft, hard) = match getrlimit(Resource::RLIMIT_NOFILE) {
        Ok(l) => l,
        Err(e) => {
            tracing::warn!(error = %e, "cannot read the open-file limit");
            return;
        }
    };
    let nr_open = std::fs::read_to_string("/proc/sys/fs/nr_open")
        .ok()
        .and_then(|s| s.trim().parse::<u64>().ok())
        .unwrap_or(1 << 20);
    let target = hard.min(nr_open);
    if soft >= target {
        tracing::info!(limit = soft, "open-file limit");
        return;
    }
    match setrlimit(Resource::RLIMIT_NOFILE, target, hard) {
        Ok(()) => tracing::info!(from = soft, limit = target, "raised the open-file limit"),
        Err(e) => {
            tracing::warn!(limit = soft, hard, error = %e, "cannot raise the open-file limit")
        }
    }
}

async fn shutdown_signal() {
    use tokio::signal::unix::{signal, SignalKind};
    let mut term = match signal(SignalKind::terminate()) {
        Ok(s) => s,
        Err(_) => return std::future::pending().await,
    };
    tokio::select! {
        _ = tokio::signal::ctrl_c() => {}
        _ = term.recv() => {}
    }
    tracing::info!("shutting down; workspaces and their sessions keep running");
}
