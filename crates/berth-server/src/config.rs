//! Server configuration: flags, environment variables, an optional TOML file, defaults.
//!
//! Precedence: flag or environment variable, then the config file, then the built-in default.
//! The file is `--config PATH` (`BERTH_CONFIG`), else `DATA_DIR/config.toml` when it exists; its
//! keys are the flag names with underscores (see `docs/configuration.md`).

use std::path::{Path, PathBuf};

use berth_domain::limits::{parse_cpus, parse_memory};
use berth_domain::Limits;
use serde::Deserialize;

/// `berth server` flags. Every flag has an environment variable.
#[derive(Debug, Clone, Default, clap::Args)]
pub struct ServerArgs {
    /// TOML config file (default: DATA_DIR/config.toml when it exists).
    #[arg(long, env = "BERTH_CONFIG")]
    pub config: Option<PathBuf>,
    /// Address to listen on [default: 127.0.0.1:8787].
    #[arg(long, env = "BERTH_LISTEN")]
    pub listen: Option<String>,
    /// Directory for the database, workspace channels and staged binaries.
    /// [default: /var/lib/berth as root, else $XDG_DATA_HOME/berth]
    #[arg(long, env = "BERTH_DATA_DIR")]
    pub data_dir: Option<PathBuf>,
    /// Container engine endpoint (Docker API), DOCKER_HOST syntax: unix:///path or tcp://host:port.
    /// [default: /run/podman/podman.sock, else /var/run/docker.sock]
    #[arg(long, env = "DOCKER_HOST")]
    pub engine: Option<String>,
    /// File holding the bootstrap admin token used on first start (alternative to
    /// BERTH_BOOTSTRAP_TOKEN). Without either, a token is generated and written to
    /// DATA_DIR/admin-token.
    #[arg(long, env = "BERTH_BOOTSTRAP_TOKEN_FILE")]
    pub bootstrap_token_file: Option<PathBuf>,
    /// Default memory cap of new workspaces [default: 2g].
    #[arg(long, env = "BERTH_DEFAULT_MEMORY")]
    pub default_memory: Option<String>,
    /// Default CPU cap of new workspaces [default: 1].
    #[arg(long, env = "BERTH_DEFAULT_CPUS")]
    pub default_cpus: Option<String>,
    /// Default process cap of new workspaces [default: 1024].
    #[arg(long, env = "BERTH_DEFAULT_PIDS")]
    pub default_pids: Option<i64>,
    /// Default network of new workspaces: `none` (no network; the only way out is berth's egress
    /// proxy) or `bridge` (the engine's default network, unfiltered) [default: none].
    #[arg(long, env = "BERTH_DEFAULT_NETWORK")]
    pub default_network: Option<String>,
    /// Workspace image [default: berth's content-addressed base image].
    #[arg(long, env = "BERTH_IMAGE")]
    pub image: Option<String>,
    /// Seconds between reconciler passes (engine state ⇄ store) [default: 2].
    #[arg(long, env = "BERTH_RECONCILE_SECONDS")]
    pub reconcile_seconds: Option<u64>,
}

/// The config file: the same settings as the flags.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct FileConfig {
    listen: Option<String>,
    data_dir: Option<PathBuf>,
    engine: Option<String>,
    bootstrap_token_file: Option<PathBuf>,
    default_memory: Option<String>,
    default_cpus: Option<String>,
    default_pids: Option<i64>,
    default_network: Option<String>,
    image: Option<String>,
    reconcile_seconds: Option<u64>,
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

fn load_file(path: &Path) -> anyhow::Result<FileConfig> {
    let text = std::fs::read_to_string(path)
        .map_err(|e| anyhow::anyhow!("config file {}: {e}", path.display()))?;
    toml::from_str(&text).map_err(|e| anyhow::anyhow!("config file {}: {e}", path.display()))
}

impl ServerArgs {
    pub fn resolve(self) -> anyhow::Result<Config> {
        let file = match &self.config {
            Some(path) => load_file(path)?,
            None => {
                let dir = self.data_dir.clone().unwrap_or_else(default_data_dir);
                let path = dir.join("config.toml");
                if path.exists() {
                    load_file(&path)?
                } else {
                    FileConfig::default()
                }
            }
        };
        let memory = self
            .default_memory
            .or(file.default_memory)
            .unwrap_or_else(|| "2g".into());
        let cpus = self
            .default_cpus
            .or(file.default_cpus)
            .unwrap_or_else(|| "1".into());
        let default_limits = Limits {
            memory_bytes: parse_memory(&memory)
                .map_err(|e| anyhow::anyhow!("default_memory: {e}"))?,
            nano_cpus: parse_cpus(&cpus).map_err(|e| anyhow::anyhow!("default_cpus: {e}"))?,
            pids: self.default_pids.or(file.default_pids).unwrap_or(1024),
        }
        .validate()
        .map_err(|e| anyhow::anyhow!("default limits: {e}"))?;
        let default_network = self
            .default_network
            .or(file.default_network)
            .unwrap_or_else(|| "none".into());
        if !NETWORKS.contains(&default_network.as_str()) {
            anyhow::bail!("default_network must be one of {}", NETWORKS.join(", "));
        }
        Ok(Config {
            listen: self
                .listen
                .or(file.listen)
                .unwrap_or_else(|| "127.0.0.1:8787".into()),
            data_dir: self
                .data_dir
                .or(file.data_dir)
                .unwrap_or_else(default_data_dir),
            engine: self.engine.or(file.engine).filter(|e| !e.is_empty()),
            bootstrap_token_file: self.bootstrap_token_file.or(file.bootstrap_token_file),
            default_limits,
            default_network,
            image: self.image.or(file.image).filter(|i| !i.is_empty()),
            reconcile_interval: std::time::Duration::from_secs(
                self.reconcile_seconds
                    .or(file.reconcile_seconds)
                    .unwrap_or(2)
                    .max(1),
            ),
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn flags_win_over_file_which_wins_over_defaults() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("berth.toml");
        std::fs::write(
            &path,
            "listen = \"127.0.0.1:9999\"\nengine = \"unix:///x.sock\"\ndefault_memory = \"512m\"\ndefault_network = \"none\"\n",
        )
        .unwrap();
        let c = ServerArgs {
            config: Some(path.clone()),
            data_dir: Some(dir.path().to_owned()),
            default_memory: Some("1g".into()),
            ..Default::default()
        }
        .resolve()
        .unwrap();
        assert_eq!(c.listen, "127.0.0.1:9999");
        assert_eq!(c.engine.as_deref(), Some("unix:///x.sock"));
        assert_eq!(c.default_limits.memory_bytes, 1 << 30);
        assert_eq!(c.default_network, "none");
        assert_eq!(c.default_limits.pids, 1024);
        assert_eq!(c.reconcile_interval.as_secs(), 2);
    }

    #[test]
    fn data_dir_config_toml_is_picked_up_and_checked() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("config.toml"), "default_pids = 300\n").unwrap();
        let args = ServerArgs {
            data_dir: Some(dir.path().to_owned()),
            ..Default::default()
        };
        assert_eq!(args.clone().resolve().unwrap().default_limits.pids, 300);
        std::fs::write(dir.path().join("config.toml"), "default_pid = 300\n").unwrap();
        let err = args.clone().resolve().unwrap_err().to_string();
        assert!(err.contains("unknown field"), "{err}");
        std::fs::write(
            dir.path().join("config.toml"),
            "default_network = \"host\"\n",
        )
        .unwrap();
        assert!(args.resolve().is_err());
    }

    #[test]
    fn missing_explicit_file_is_an_error() {
        let err = ServerArgs {
            config: Some("/nonexistent/berth.toml".into()),
            ..Default::default()
        }
        .resolve()
        .unwrap_err();
        assert!(err.to_string().contains("/nonexistent/berth.toml"));
    }
}
