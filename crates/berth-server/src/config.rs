//! Server configuration: flags, environment variables, defaults.

use std::path::PathBuf;

use berth_domain::limits::{parse_cpus, parse_memory};
use berth_domain::Limits;

/// `berth server` flags. Every flag has an environment variable; flags win.
#[derive(Debug, Clone, clap::Args)]
pub struct ServerArgs {
    /// Address to listen on.
    #[arg(long, env = "BERTH_LISTEN", default_value = "127.0.0.1:8787")]
    pub listen: String,
    /// Directory for the database, workspace channels and staged binaries.
    /// Default: /var/lib/berth as root, else $XDG_DATA_HOME/berth.
    #[arg(long, env = "BERTH_DATA_DIR")]
    pub data_dir: Option<PathBuf>,
    /// Container engine endpoint (Docker API), DOCKER_HOST syntax: unix:///path or tcp://host:port.
    /// Default: $DOCKER_HOST, else /run/podman/podman.sock, else /var/run/docker.sock.
    #[arg(long, env = "DOCKER_HOST")]
    pub engine: Option<String>,
    /// File holding the bootstrap admin token used on first start (alternative to
    /// BERTH_BOOTSTRAP_TOKEN). Without either, a token is generated and written to
    /// DATA_DIR/admin-token.
    #[arg(long, env = "BERTH_BOOTSTRAP_TOKEN_FILE")]
    pub bootstrap_token_file: Option<PathBuf>,
    /// Default memory cap of new workspaces.
    #[arg(long, env = "BERTH_DEFAULT_MEMORY", default_value = "2g")]
    pub default_memory: String,
    /// Default CPU cap of new workspaces.
    #[arg(long, env = "BERTH_DEFAULT_CPUS", default_value = "1")]
    pub default_cpus: String,
    /// Default process cap of new workspaces.
    #[arg(long, env = "BERTH_DEFAULT_PIDS", default_value_t = 1024)]
    pub default_pids: i64,
    /// Default network of new workspaces: `bridge` (engine default network) or `none`.
    #[arg(long, env = "BERTH_DEFAULT_NETWORK", default_value = "bridge")]
    pub default_network: String,
    /// Workspace image; default is berth's content-addressed base image.
    #[arg(long, env = "BERTH_IMAGE")]
    pub image: Option<String>,
    /// Seconds between reconciler passes (engine state ⇄ store).
    #[arg(long, env = "BERTH_RECONCILE_SECONDS", default_value_t = 2)]
    pub reconcile_seconds: u64,
}

/// Configuration after defaults are resolved and values validated.
#[derive(Debug, Clone)]
pub struct Config {
    pub listen: String,
    pub data_dir: PathBuf,
    pub engine: Option<String>,
    pub bootstrap_token_file: Option<PathBuf>,
    pub default_limits: Limits,
    pub default_network: String,
    pub image: Option<String>,
    pub reconcile_interval: std::time::Duration,
}

/// Engine network modes a workspace may use.
pub const NETWORKS: [&str; 2] = ["bridge", "none"];

impl ServerArgs {
    pub fn resolve(self) -> anyhow::Result<Config> {
        let default_limits = Limits {
            memory_bytes: parse_memory(&self.default_memory)
                .map_err(|e| anyhow::anyhow!("--default-memory: {e}"))?,
            nano_cpus: parse_cpus(&self.default_cpus)
                .map_err(|e| anyhow::anyhow!("--default-cpus: {e}"))?,
            pids: self.default_pids,
        }
        .validate()
        .map_err(|e| anyhow::anyhow!("default limits: {e}"))?;
        if !NETWORKS.contains(&self.default_network.as_str()) {
            anyhow::bail!("--default-network must be one of {}", NETWORKS.join(", "));
        }
        let data_dir = match self.data_dir {
            Some(d) => d,
            None => default_data_dir(),
        };
        Ok(Config {
            listen: self.listen,
            data_dir,
            engine: self.engine.filter(|e| !e.is_empty()),
            bootstrap_token_file: self.bootstrap_token_file,
            default_limits,
            default_network: self.default_network,
            image: self.image.filter(|i| !i.is_empty()),
            reconcile_interval: std::time::Duration::from_secs(self.reconcile_seconds.max(1)),
        })
    }
}

fn default_data_dir() -> PathBuf {
    if nix::unistd::geteuid().is_root() {
        return PathBuf::from("/var/lib/berth");
    }
    if let Some(x) = std::env::var_os("XDG_DATA_HOME").filter(|v| !v.is_empty()) {
        return PathBuf::from(x).join("berth");
    }
    match std::env::var_os("HOME") {
        Some(h) => PathBuf::from(h).join(".local/share/berth"),
        None => PathBuf::from("berth-data"),
    }
}
