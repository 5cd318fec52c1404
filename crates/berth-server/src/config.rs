//! Server configuration: flags, environment variables, an optional TOML file, defaults.
//!
//! Precedence: flag or environment variable, then the config file, then the built-in default.
//! The file is `--config PATH` (`BERTH_CONFIG`), else `DATA_DIR/config.toml` when it exists; its
//! keys are the flag names with underscores (see `docs/configuration.md`).

mod env;
pub mod sso;
mod tls;

use std::path::{Path, PathBuf};

use berth_domain::limits::{parse_cpus, parse_memory};
use berth_domain::Limits;
use serde::Deserialize;

pub use env::{EnvSettings, EnvVars, ForgeEnv, UpstreamEnv};
pub use sso::SsoConfig;
pub use tls::{is_dns_name, AcmeSettings, TlsArgs, TlsSettings, TlsSource};

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
    /// Seconds an agent's permission request waits for a decision before it is denied (the
    /// agent is told why) [default: 1800].
    #[arg(long, env = "BERTH_APPROVAL_TIMEOUT_SECONDS")]
    pub approval_timeout_seconds: Option<u64>,
    /// Seconds a task's long-lived agent protocol process (codex app-server) is kept after a
    /// turn for a fast follow-up before it is stopped [default: 300].
    #[arg(long, env = "BERTH_AGENT_IDLE_SECONDS")]
    pub agent_idle_seconds: Option<u64>,
    /// Days egress log rows are kept; 0 keeps them forever [default: 30].
    #[arg(long, env = "BERTH_EGRESS_LOG_RETENTION_DAYS")]
    pub egress_log_retention_days: Option<u32>,
    /// Days the events of a finished task (completed, failed, cancelled) are kept after its last
    /// change; events of tasks still running are always kept; 0 keeps them forever [default: 90].
    #[arg(long, env = "BERTH_TASK_EVENTS_RETENTION_DAYS")]
    pub task_events_retention_days: Option<u32>,
    /// Free space on the data dir's filesystem below which the reconciler warns (audit
    /// `system.disk_low`) and doctor fails, e.g. `5g` [default: 5g].
    #[arg(long, env = "BERTH_DISK_WARN_FREE")]
    pub disk_warn_free: Option<String>,
    /// Free space below which new workspaces and restores are refused with
    /// `insufficient_storage` (HTTP 507) [default: 1g].
    #[arg(long, env = "BERTH_DISK_MIN_FREE")]
    pub disk_min_free: Option<String>,
    /// Largest home volume a restore may write (uncompressed), e.g. `50g` [default: 50g].
    #[arg(long, env = "BERTH_RESTORE_MAX_SIZE")]
    pub restore_max_size: Option<String>,
    /// User namespaces of workspaces: `auto` (each workspace's container gets a private range of
    /// host uids; Podman's userns=auto) or `off` (host uids; Docker: use the daemon's
    /// userns-remap) [default: auto on Podman when /etc/subuid and /etc/subgid give `containers` a
    /// range, off otherwise].
    #[arg(long, env = "BERTH_USERNS")]
    pub userns: Option<String>,
    /// HTTPS (off by default: plain HTTP).
    #[command(flatten)]
    pub tls: TlsArgs,
    /// Boxed: keeps `ServerArgs` (and the binary's command enum) small.
    #[command(flatten)]
    pub sso: Box<sso::SsoArgs>,
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
    approval_timeout_seconds: Option<u64>,
    agent_idle_seconds: Option<u64>,
    egress_log_retention_days: Option<u32>,
    task_events_retention_days: Option<u32>,
    disk_warn_free: Option<String>,
    disk_min_free: Option<String>,
    restore_max_size: Option<String>,
    userns: Option<String>,
    tls_cert: Option<PathBuf>,
    tls_key: Option<PathBuf>,
    tls: Option<String>,
    tls_names: Option<Vec<String>>,
    acme: Option<String>,
    acme_email: Option<String>,
    acme_directory: Option<String>,
    acme_ca_root: Option<PathBuf>,
    http_redirect: Option<String>,
    tls_reload_seconds: Option<u64>,
    oidc_issuer: Option<String>,
    oidc_client_id: Option<String>,
    oidc_client_secret_file: Option<PathBuf>,
    public_url: Option<String>,
    oidc_claim: Option<String>,
    oidc_map: Option<Vec<String>>,
    oidc_scopes: Option<String>,
    session_idle: Option<String>,
    session_lifetime: Option<String>,
}

impl FileConfig {
    /// The HTTPS keys, as flags to merge under the real ones.
    fn tls_args(&mut self) -> TlsArgs {
        TlsArgs {
            tls_cert: self.tls_cert.take(),
            tls_key: self.tls_key.take(),
            tls: self.tls.take(),
            tls_names: self.tls_names.take().unwrap_or_default(),
            acme: self.acme.take(),
            acme_email: self.acme_email.take(),
            acme_directory: self.acme_directory.take(),
            acme_ca_root: self.acme_ca_root.take(),
            http_redirect: self.http_redirect.take(),
            tls_reload_seconds: self.tls_reload_seconds.take(),
        }
    }

    /// The single sign-on keys, moved out.
    fn take_sso(&mut self) -> sso::SsoFile {
        sso::SsoFile {
            oidc_issuer: self.oidc_issuer.take(),
            oidc_client_id: self.oidc_client_id.take(),
            oidc_client_secret_file: self.oidc_client_secret_file.take(),
            public_url: self.public_url.take(),
            oidc_claim: self.oidc_claim.take(),
            oidc_map: self.oidc_map.take(),
            oidc_scopes: self.oidc_scopes.take(),
            session_idle: self.session_idle.take(),
            session_lifetime: self.session_lifetime.take(),
        }
    }
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
    /// How long a permission request of an agent waits for a decision.
    pub approval_timeout: std::time::Duration,
    /// How long a task's idle agent protocol process is kept between turns.
    pub agent_idle: std::time::Duration,
    pub retention: Retention,
    pub disk: DiskThresholds,
    /// Cap on the uncompressed bytes one restore writes.
    pub restore_max_bytes: u64,
    /// `Some(true)`: private user namespaces; `Some(false)`: host uids; `None`: by engine.
    pub userns: Option<bool>,
    /// HTTPS; `None`: plain HTTP.
    pub tls: Option<TlsSettings>,
    /// The environment-only settings (keys, the gateway's upstreams, egress knobs).
    pub env: EnvSettings,
    /// Single sign-on through an OpenID Provider; `None` when off.
    pub sso: Option<SsoConfig>,
}

/// How long history is kept (days; 0 = forever).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Retention {
    pub egress_log_days: u32,
    pub task_events_days: u32,
}

/// Free-space thresholds of the data dir's filesystem, in bytes (`warn_free >= min_free`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct DiskThresholds {
    pub warn_free: u64,
    pub min_free: u64,
}

/// Parses a byte size: `0`, `512m`, `5g`, `1t` (binary units; `b`/`k`/`m`/`g`/`t`, optional
/// `b`/`ib` suffix).
pub fn parse_size(s: &str) -> anyhow::Result<u64> {
    let t = s.trim().to_ascii_lowercase();
    let split = t
        .find(|c: char| !(c.is_ascii_digit() || c == '.'))
        .unwrap_or(t.len());
    let (num, unit) = t.split_at(split);
    let shift = match unit.trim().trim_end_matches("ib").trim_end_matches('b') {
        "" => 0,
        "k" => 10,
        "m" => 20,
        "g" => 30,
        "t" => 40,
        _ => anyhow::bail!("size {s:?}: use a number with an optional unit k, m, g or t"),
    };
    let value: f64 = num
        .parse()
        .map_err(|_| anyhow::anyhow!("size {s:?}: use a number with an optional unit"))?;
    let bytes = value * (1u64 << shift) as f64;
    if !bytes.is_finite() || bytes < 0.0 || bytes >= u64::MAX as f64 {
        anyhow::bail!("size {s:?} is out of range");
    }
    Ok(bytes as u64)
}

/// Engine network modes a workspace may use.
pub const NETWORKS: [&str; 2] = ["bridge", "none"];

fn load_file(path: &Path) -> anyhow::Result<FileConfig> {
    let text = std::fs::read_to_string(path)
        .map_err(|e| anyhow::anyhow!("config file {}: {e}", path.display()))?;
    toml::from_str(&text).map_err(|e| anyhow::anyhow!("config file {}: {e}", path.display()))
}

impl ServerArgs {
    /// The server's configuration: each setting from its flag (or environment variable, which
    /// clap reads into the flag), else the config file, else the default; checked.
    pub fn resolve(self) -> anyhow::Result<Config> {
        let mut file = self.read_file()?;
        let tls = self.tls.or(file.tls_args()).resolve()?;
        let sso_file = file.take_sso();
        let default_limits = default_limits(
            self.default_memory.or(file.default_memory),
            self.default_cpus.or(file.default_cpus),
            self.default_pids.or(file.default_pids),
        )?;
        let default_network = default_network(self.default_network.or(file.default_network))?;
        let disk = disk_thresholds(
            self.disk_warn_free.or(file.disk_warn_free),
            self.disk_min_free.or(file.disk_min_free),
        )?;
        let retention = Retention {
            egress_log_days: self
                .egress_log_retention_days
                .or(file.egress_log_retention_days)
                .unwrap_or(30),
            task_events_days: self
                .task_events_retention_days
                .or(file.task_events_retention_days)
                .unwrap_or(90),
        };
        let env = EnvSettings::from_env();
        let sso = sso::resolve(*self.sso, sso_file, env.oidc_client_secret.clone())?;
        let restore_max_bytes = size_setting(
            self.restore_max_size.or(file.restore_max_size),
            "50g",
            "restore_max_size",
        )?;
        let userns = userns(self.userns.or(file.userns).as_deref())?;
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
            approval_timeout: std::time::Duration::from_secs(
                self.approval_timeout_seconds
                    .or(file.approval_timeout_seconds)
                    .unwrap_or(1800)
                    .max(1),
            ),
            agent_idle: std::time::Duration::from_secs(
                self.agent_idle_seconds
                    .or(file.agent_idle_seconds)
                    .unwrap_or(300)
                    .max(1),
            ),
            retention,
            disk,
            restore_max_bytes,
            userns,
            tls,
            env,
            sso,
        })
    }

    /// The config file: the one named by `--config`, else `config.toml` in the data directory
    /// when there is one, else an empty one.
    fn read_file(&self) -> anyhow::Result<FileConfig> {
        match &self.config {
            Some(path) => load_file(path),
            None => {
                let dir = self.data_dir.clone().unwrap_or_else(default_data_dir);
                let path = dir.join("config.toml");
                if path.exists() {
                    load_file(&path)
                } else {
                    Ok(FileConfig::default())
                }
            }
        }
    }
}

/// A new workspace's limits when its request names none (2 GiB, one CPU, 1024 pids unless
/// set), checked.
fn default_limits(
    memory: Option<String>,
    cpus: Option<String>,
    pids: Option<i64>,
) -> anyhow::Result<Limits> {
    let memory = memory.unwrap_or_else(|| "2g".into());
    let cpus = cpus.unwrap_or_else(|| "1".into());
    Limits {
        memory_bytes: parse_memory(&memory).map_err(|e| anyhow::anyhow!("default_memory: {e}"))?,
        nano_cpus: parse_cpus(&cpus).map_err(|e| anyhow::anyhow!("default_cpus: {e}"))?,
        pids: pids.unwrap_or(1024),
    }
    .validate()
    .map_err(|e| anyhow::anyhow!("default limits: {e}"))
}

/// A new workspace's network when its request names none (`none` unless set): one of
/// [`NETWORKS`].
fn default_network(network: Option<String>) -> anyhow::Result<String> {
    let network = network.unwrap_or_else(|| "none".into());
    if !NETWORKS.contains(&network.as_str()) {
        anyhow::bail!("default_network must be one of {}", NETWORKS.join(", "));
    }
    Ok(network)
}

/// The free-space thresholds of the data directory (warn below 5 GiB, refuse below 1 GiB
/// unless set); the warning cannot come after the refusal.
fn disk_thresholds(warn: Option<String>, min: Option<String>) -> anyhow::Result<DiskThresholds> {
    let disk = DiskThresholds {
        warn_free: size_setting(warn, "5g", "disk_warn_free")?,
        min_free: size_setting(min, "1g", "disk_min_free")?,
    };
    if disk.warn_free < disk.min_free {
        anyhow::bail!("disk_warn_free must be at least disk_min_free");
    }
    Ok(disk)
}

/// A size setting (`5g`) in bytes, `default` when unset; errors name the setting `key`.
fn size_setting(value: Option<String>, default: &str, key: &str) -> anyhow::Result<u64> {
    parse_size(value.as_deref().unwrap_or(default)).map_err(|e| anyhow::anyhow!("{key}: {e}"))
}

/// `userns`: `auto` (on), `off`, or unset (the engine's default).
fn userns(value: Option<&str>) -> anyhow::Result<Option<bool>> {
    match value {
        None | Some("") => Ok(None),
        Some("auto") => Ok(Some(true)),
        Some("off") => Ok(Some(false)),
        Some(other) => anyhow::bail!("userns: {other:?} is not auto or off"),
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
    fn retention_disk_and_restore_settings() {
        let dir = tempfile::tempdir().unwrap();
        let base = ServerArgs {
            data_dir: Some(dir.path().to_owned()),
            ..Default::default()
        };
        let c = base.clone().resolve().unwrap();
        assert_eq!(
            c.retention,
            Retention {
                egress_log_days: 30,
                task_events_days: 90
            }
        );
        assert_eq!(c.disk.warn_free, 5 << 30);
        assert_eq!(c.disk.min_free, 1 << 30);
        assert_eq!(c.restore_max_bytes, 50 << 30);
        std::fs::write(
            dir.path().join("config.toml"),
            "egress_log_retention_days = 7\ntask_events_retention_days = 0\ndisk_warn_free = \"10g\"\ndisk_min_free = \"512m\"\n",
        )
        .unwrap();
        let c = ServerArgs {
            task_events_retention_days: Some(3),
            ..base.clone()
        }
        .resolve()
        .unwrap();
        assert_eq!(c.retention.egress_log_days, 7);
        assert_eq!(c.retention.task_events_days, 3);
        assert_eq!(c.disk.warn_free, 10 << 30);
        assert_eq!(c.disk.min_free, 512 << 20);
        // The warning threshold must not be below the refusal threshold.
        std::fs::write(
            dir.path().join("config.toml"),
            "disk_warn_free = \"1g\"\ndisk_min_free = \"2g\"\n",
        )
        .unwrap();
        assert!(base.clone().resolve().is_err());
        assert_eq!(parse_size("0").unwrap(), 0);
        assert_eq!(parse_size("1.5k").unwrap(), 1536);
        assert_eq!(parse_size("2TiB").unwrap(), 2 << 40);
        assert!(parse_size("5 parsecs").is_err());
        assert!(parse_size("-1g").is_err());
    }

    #[test]
    fn https_settings_come_from_the_file_too() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(
            dir.path().join("config.toml"),
            "tls = \"self-signed\"\ntls_names = [\"phone.example\"]\nhttp_redirect = \"127.0.0.1:8080\"\n",
        )
        .unwrap();
        let base = ServerArgs {
            data_dir: Some(dir.path().to_owned()),
            ..Default::default()
        };
        let tls = base.clone().resolve().unwrap().tls.unwrap();
        assert_eq!(tls.source, TlsSource::SelfSigned);
        assert_eq!(tls.names, ["phone.example"]);
        assert_eq!(tls.http_redirect.as_deref(), Some("127.0.0.1:8080"));
        // A flag adds to the file's choice and the combination is checked as a whole.
        let both = ServerArgs {
            tls: TlsArgs {
                acme: Some("berth.example".into()),
                acme_email: Some("ops@berth.example".into()),
                ..Default::default()
            },
            ..base.clone()
        };
        assert!(both.resolve().is_err());
        // No HTTPS setting anywhere: plain HTTP, as before.
        let plain = tempfile::tempdir().unwrap();
        let c = ServerArgs {
            data_dir: Some(plain.path().to_owned()),
            ..Default::default()
        };
        assert!(c.resolve().unwrap().tls.is_none());
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
