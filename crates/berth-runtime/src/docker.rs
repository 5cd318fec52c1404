//! Docker Engine API backend (bollard). Works against Docker and Podman's
//! Docker-compatible service; no libpod endpoints are used.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use async_trait::async_trait;
use bollard::container::{
    Config, CreateContainerOptions, InspectContainerOptions, KillContainerOptions,
    ListContainersOptions, RemoveContainerOptions, StartContainerOptions, Stats, StatsOptions,
    StopContainerOptions, UpdateContainerOptions, WaitContainerOptions,
};
use bollard::models::{ContainerInspectResponse, HostConfig, Mount as BollardMount, MountTypeEnum};
use bollard::volume::{CreateVolumeOptions, RemoveVolumeOptions};
use bollard::{ClientVersion, Docker};
use futures_util::StreamExt;

use crate::error::RuntimeError;
use crate::types::{
    ContainerEvent, ContainerSpec, ContainerState, ContainerStatus, ContainerSummary, EngineInfo,
    Mount, ResourceUsage,
};
use crate::{ByteStream, Runtime};

/// Docker Engine API version we speak. 1.41 is served by Podman 4.x's compat
/// service and by every Docker release since 20.10.
const API_VERSION: ClientVersion = ClientVersion {
    major_version: 1,
    minor_version: 41,
};

/// Timeout for ordinary requests (time until the response headers arrive).
const REQUEST_TIMEOUT: Duration = Duration::from_secs(120);
/// Timeout for calls that legitimately block for long (wait, build, import).
pub(crate) const LONG_TIMEOUT: Duration = Duration::from_secs(10 * 365 * 24 * 3600);
/// How often `stop_container` re-sends SIGTERM while waiting for the container to exit.
const SIGTERM_RESEND_INTERVAL: Duration = Duration::from_secs(1);
/// Interval between the two stats samples when the engine gives no `precpu_stats`.
const CPU_SAMPLE_INTERVAL: Duration = Duration::from_millis(500);

/// Engine sockets tried, in this order, when neither an endpoint nor
/// `$DOCKER_HOST` is given: Podman's rootful service first (the engine berth is
/// tested with), then Docker's.
pub fn default_socket_candidates() -> &'static [&'static str] {
    &["/run/podman/podman.sock", "/var/run/docker.sock"]
}

/// Well-known engine socket paths that must never be bind-mounted into a container.
const ENGINE_SOCKETS: &[&str] = &[
    "/run/podman/podman.sock",
    "/var/run/podman/podman.sock",
    "/run/docker.sock",
    "/var/run/docker.sock",
    "/run/containerd/containerd.sock",
    "/var/run/containerd/containerd.sock",
];

/// A parsed engine endpoint (`DOCKER_HOST` syntax).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Endpoint {
    /// `unix:///path/to/sock` (a bare absolute path is accepted too).
    Unix(PathBuf),
    /// `tcp://host:port` or `http://host:port` (plain HTTP, no TLS).
    Http(String),
}

impl std::fmt::Display for Endpoint {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Endpoint::Unix(p) => write!(f, "unix://{}", p.display()),
            Endpoint::Http(a) => write!(f, "tcp://{a}"),
        }
    }
}

/// Parse an endpoint in `DOCKER_HOST` syntax.
pub fn parse_endpoint(s: &str) -> Result<Endpoint, RuntimeError> {
    let s = s.trim();
    if let Some(path) = s.strip_prefix("unix://") {
        if !path.starts_with('/') {
            return Err(RuntimeError::Other(format!(
                "invalid engine endpoint {s:?}: unix socket path must be absolute (unix:///path)"
            )));
        }
        return Ok(Endpoint::Unix(PathBuf::from(path)));
    }
    if s.starts_with('/') {
        return Ok(Endpoint::Unix(PathBuf::from(s)));
    }
    for scheme in ["tcp://", "http://"] {
        if let Some(rest) = s.strip_prefix(scheme) {
            let addr = rest.trim_end_matches('/');
            if addr.is_empty() || addr.contains('/') {
                return Err(RuntimeError::Other(format!(
                    "invalid engine endpoint {s:?}: expected {scheme}host:port"
                )));
            }
            let addr = if addr
                .rsplit_once(':')
                .is_some_and(|(_, p)| p.parse::<u16>().is_ok())
            {
                addr.to_string()
            } else {
                format!("{addr}:2375")
            };
            return Ok(Endpoint::Http(addr));
        }
    }
    Err(RuntimeError::Other(format!(
        "unsupported engine endpoint {s:?}: use unix:///path/to.sock, tcp://host:port or http://host:port \
         (TLS and ssh endpoints are not supported)"
    )))
}

/// Pick the endpoint: `explicit`, else `docker_host` (the value of `$DOCKER_HOST`),
/// else the first of [`default_socket_candidates`] for which `exists` is true.
pub fn resolve_endpoint(
    explicit: Option<&str>,
    docker_host: Option<&str>,
    exists: impl Fn(&Path) -> bool,
) -> Result<Endpoint, RuntimeError> {
    if let Some(e) = explicit.filter(|e| !e.trim().is_empty()) {
        return parse_endpoint(e);
    }
    if let Some(e) = docker_host.filter(|e| !e.trim().is_empty()) {
        return parse_endpoint(e);
    }
    for c in default_socket_candidates() {
        if exists(Path::new(c)) {
            return Ok(Endpoint::Unix(PathBuf::from(c)));
        }
    }
    Err(RuntimeError::unreachable(
        "(none)",
        format!(
            "no engine socket found (DOCKER_HOST unset; tried {})",
            default_socket_candidates().join(", ")
        ),
    ))
}

/// [`Runtime`] over the Docker Engine API.
#[derive(Debug, Clone)]
pub struct DockerRuntime {
    docker: Docker,
    endpoint: String,
    /// Paths that must not be bind-mounted (engine sockets, canonicalised).
    forbidden_sources: Vec<PathBuf>,
}

impl DockerRuntime {
    /// Connect (lazily: no request is made; call [`Runtime::info`] to ping).
    ///
    /// `endpoint` uses the `DOCKER_HOST` syntax. `None` means `$DOCKER_HOST`,
    /// else the first existing of `/run/podman/podman.sock`, `/var/run/docker.sock`.
    /// A unix socket that does not exist gives [`RuntimeError::Unreachable`].
    pub fn connect(endpoint: Option<&str>) -> Result<Self, RuntimeError> {
        let env = std::env::var("DOCKER_HOST").ok();
        let ep = resolve_endpoint(endpoint, env.as_deref(), |p| p.exists())?;
        let ep_str = ep.to_string();
        let docker = match &ep {
            Endpoint::Unix(path) => {
                let p = path.to_string_lossy();
                Docker::connect_with_unix(&p, REQUEST_TIMEOUT.as_secs(), &API_VERSION)
            }
            Endpoint::Http(addr) => Docker::connect_with_http(
                &format!("http://{addr}"),
                REQUEST_TIMEOUT.as_secs(),
                &API_VERSION,
            ),
        }
        .map_err(|e| RuntimeError::from_bollard(&ep_str, e))?;

        let mut forbidden: Vec<PathBuf> = ENGINE_SOCKETS.iter().map(PathBuf::from).collect();
        if let Endpoint::Unix(p) = &ep {
            forbidden.push(p.clone());
        }
        let mut canon: Vec<PathBuf> = Vec::new();
        for p in forbidden {
            if let Ok(c) = std::fs::canonicalize(&p) {
                canon.push(c);
            }
            canon.push(p);
        }
        canon.sort();
        canon.dedup();
        tracing::debug!(endpoint = %ep_str, "container engine client created");
        Ok(Self {
            docker,
            endpoint: ep_str,
            forbidden_sources: canon,
        })
    }

    /// The endpoint in use, normalised (`unix:///…` or `tcp://host:port`).
    pub fn endpoint(&self) -> &str {
        &self.endpoint
    }

    /// The underlying bollard client, for calls outside the [`Runtime`] trait
    /// (exec, attach, events). Stick to endpoints Podman's compat service supports.
    pub fn client(&self) -> &Docker {
        &self.docker
    }

    /// A client without the per-request timeout, for long blocking calls.
    pub(crate) fn long_client(&self) -> Docker {
        self.docker.clone().with_timeout(LONG_TIMEOUT)
    }

    pub(crate) fn map_err(&self, e: bollard::errors::Error) -> RuntimeError {
        RuntimeError::from_bollard(&self.endpoint, e)
    }

    /// Check the spec against the hardening rules (also done by `create_container`).
    pub fn validate_spec(&self, spec: &ContainerSpec) -> Result<(), RuntimeError> {
        validate_spec(spec, &self.forbidden_sources)
    }

    /// Remove an image (force); missing = `Ok`.
    pub async fn remove_image(&self, reference: &str) -> Result<(), RuntimeError> {
        let opts = bollard::image::RemoveImageOptions {
            force: true,
            noprune: false,
        };
        match self.docker.remove_image(reference, Some(opts), None).await {
            Ok(_) => Ok(()),
            Err(e) => match self.map_err(e) {
                RuntimeError::NotFound(_) => Ok(()),
                other => Err(other),
            },
        }
    }

    async fn stats_once(&self, id: &str) -> Result<Stats, RuntimeError> {
        let mut s = self.docker.stats(
            id,
            Some(StatsOptions {
                stream: false,
                one_shot: false,
            }),
        );
        match s.next().await {
            Some(Ok(st)) => Ok(st),
            Some(Err(e)) => Err(self.map_err(e)),
            None => Err(RuntimeError::Other(format!(
                "engine returned no stats for {id}"
            ))),
        }
    }
}

/// Check a spec against the hardening rules.
pub(crate) fn validate_spec(
    spec: &ContainerSpec,
    forbidden: &[PathBuf],
) -> Result<(), RuntimeError> {
    let bad = |m: String| Err(RuntimeError::InvalidSpec(m));
    if spec.name.trim().is_empty() {
        return bad("name is empty".into());
    }
    if spec.image.trim().is_empty() {
        return bad("image is empty".into());
    }
    if spec.user.trim().is_empty() {
        return bad("user is empty (the engine would run as root)".into());
    }
    validate_limits(spec)?;
    if spec.network_mode.trim().is_empty() {
        return bad("network_mode is empty".into());
    }
    if let Some(u) = &spec.userns {
        if u != "auto" && !u.starts_with("auto:") {
            return bad(format!(
                "userns {u:?} is not supported: use \"auto\" (or leave it unset)"
            ));
        }
    }
    for m in &spec.mounts {
        if let Mount::Bind { source, .. } = m {
            let s = source.to_string_lossy();
            if spec.userns.is_some() && (s.contains(':') || s.contains(',')) {
                return bad(format!("bind source {s:?} cannot contain ':' or ','"));
            }
        }
    }
    if spec.network_mode == "host" || spec.network_mode.starts_with("container:") {
        return bad(format!(
            "network_mode {:?} is not allowed",
            spec.network_mode
        ));
    }
    for c in &spec.cap_add {
        let c = c.trim().to_ascii_uppercase();
        if c == "ALL" || c == "CAP_ALL" {
            return bad("cap_add must list capabilities, not ALL".into());
        }
    }
    validate_mounts(spec, forbidden)
}

/// The caps: memory and pids set, CPUs not negative.
fn validate_limits(spec: &ContainerSpec) -> Result<(), RuntimeError> {
    let bad = |m: String| Err(RuntimeError::InvalidSpec(m));
    if spec.memory_bytes <= 0 {
        return bad(format!(
            "memory_bytes must be > 0, got {}",
            spec.memory_bytes
        ));
    }
    if spec.pids_limit <= 0 {
        return bad(format!("pids_limit must be > 0, got {}", spec.pids_limit));
    }
    if spec.nano_cpus < 0 {
        return bad(format!("nano_cpus must be >= 0, got {}", spec.nano_cpus));
    }
    Ok(())
}

/// The mounts: absolute targets used once, plain volume names, absolute bind sources that do
/// not expose an engine socket.
fn validate_mounts(spec: &ContainerSpec, forbidden: &[PathBuf]) -> Result<(), RuntimeError> {
    let bad = |m: String| Err(RuntimeError::InvalidSpec(m));
    let mut targets = std::collections::HashSet::new();
    for m in &spec.mounts {
        let t = m.target();
        if !t.starts_with('/') {
            return bad(format!("mount target {t:?} is not absolute"));
        }
        if !targets.insert(t.trim_end_matches('/').to_string()) {
            return bad(format!("mount target {t:?} is used twice"));
        }
        match m {
            Mount::Volume { name, .. } => {
                if name.trim().is_empty() || name.contains('/') {
                    return bad(format!("volume name {name:?} is invalid"));
                }
            }
            Mount::Bind { source, .. } => {
                if !source.is_absolute() {
                    return bad(format!("bind source {} is not absolute", source.display()));
                }
                let resolved = std::fs::canonicalize(source).unwrap_or_else(|_| source.clone());
                for f in forbidden {
                    if f.starts_with(&resolved) || f.starts_with(source) {
                        return bad(format!(
                            "bind source {} would expose the engine socket {}",
                            source.display(),
                            f.display()
                        ));
                    }
                }
            }
        }
    }
    Ok(())
}

/// The engine request for a spec, with the hardening applied.
pub(crate) fn container_config(spec: &ContainerSpec) -> Config<String> {
    // In a private user namespace, what the container must write (volumes, writable binds) is
    // mounted with Podman's `U` option (chown to the container's range on start); the Docker
    // API's typed mounts cannot say that, its `Binds` strings can.
    let chown = spec.userns.is_some();
    let mut binds = Vec::new();
    let mut mounts = Vec::new();
    for m in &spec.mounts {
        match m {
            Mount::Volume { name, target } if chown => binds.push(format!("{name}:{target}:U")),
            Mount::Volume { name, target } => mounts.push(BollardMount {
                target: Some(target.clone()),
                source: Some(name.clone()),
                typ: Some(MountTypeEnum::VOLUME),
                read_only: Some(false),
                ..Default::default()
            }),
            Mount::Bind {
                source,
                target,
                read_only: false,
            } if chown => binds.push(format!("{}:{target}:rw,U", source.display())),
            Mount::Bind {
                source,
                target,
                read_only,
            } => mounts.push(BollardMount {
                target: Some(target.clone()),
                source: Some(source.to_string_lossy().into_owned()),
                typ: Some(MountTypeEnum::BIND),
                read_only: Some(*read_only),
                ..Default::default()
            }),
        }
    }
    let host_config = HostConfig {
        memory: Some(spec.memory_bytes),
        memory_swap: Some(spec.memory_bytes),
        nano_cpus: (spec.nano_cpus > 0).then_some(spec.nano_cpus),
        pids_limit: Some(spec.pids_limit),
        network_mode: Some(spec.network_mode.clone()),
        cap_drop: Some(vec!["ALL".to_string()]),
        cap_add: (!spec.cap_add.is_empty()).then(|| spec.cap_add.clone()),
        security_opt: Some(vec!["no-new-privileges".to_string()]),
        privileged: Some(false),
        readonly_rootfs: Some(spec.readonly_rootfs),
        // A read-only root keeps its scratch space: tmpfs (counted in the memory cgroup, so
        // bounded by the memory cap). Podman adds these itself; Docker does not.
        tmpfs: Some(tmpfs_mounts(spec.readonly_rootfs)),
        // An IPC namespace of its own, whose /dev/shm is the tmpfs above rather than the
        // engine's default: a tmpfs the engine mounts on the host (Podman's
        // `userdata/shm`, Docker's `mounts/shm`) and binds in. Podman copies the host's mounts
        // into the mount namespace of every user-namespaced container's conmon, and removing a
        // container whose host-side shm another namespace still held failed with
        // `unlinkat …/userdata/shm: device or resource busy` (docs/threat-model.md).
        ipc_mode: Some("private".to_string()),
        init: Some(spec.init),
        mounts: Some(mounts),
        binds: (!binds.is_empty()).then_some(binds),
        userns_mode: spec.userns.clone(),
        publish_all_ports: Some(false),
        ..Default::default()
    };
    Config {
        image: Some(spec.image.clone()),
        user: Some(spec.user.clone()),
        cmd: (!spec.cmd.is_empty()).then(|| spec.cmd.clone()),
        env: Some(spec.env.clone()),
        labels: Some(spec.labels.clone()),
        hostname: spec.hostname.clone(),
        working_dir: spec.working_dir.clone(),
        tty: Some(false),
        open_stdin: Some(false),
        attach_stdin: Some(false),
        attach_stdout: Some(false),
        attach_stderr: Some(false),
        host_config: Some(host_config),
        ..Default::default()
    }
}

/// The size of a workspace's `/dev/shm` (the engines' own default is 64 MB).
pub(crate) const SHM_OPTIONS: &str = "rw,nosuid,nodev,noexec,size=64m";

/// The tmpfs mounts of a container: `/dev/shm` always (see `ipc_mode` in [`container_config`]),
/// and with a read-only root its scratch space.
fn tmpfs_mounts(readonly_rootfs: bool) -> HashMap<String, String> {
    let mut t = HashMap::from([("/dev/shm".to_string(), SHM_OPTIONS.to_string())]);
    if readonly_rootfs {
        t.insert("/tmp".to_string(), "rw,nosuid,nodev,exec".to_string());
        t.insert("/var/tmp".to_string(), "rw,nosuid,nodev".to_string());
    }
    t
}

fn none_if_zero_time(s: Option<String>) -> Option<String> {
    s.filter(|t| !t.is_empty() && !t.starts_with("0001-01-01"))
}

/// Map an inspect response to our status type.
pub(crate) fn status_from_inspect(r: ContainerInspectResponse) -> ContainerStatus {
    let state = r.state.unwrap_or_default();
    let cstate = state
        .status
        .map(|s| ContainerState::parse(s.as_ref()))
        .unwrap_or_else(|| ContainerState::Other(String::new()));
    let exit_code = if matches!(cstate, ContainerState::Exited | ContainerState::Dead) {
        state.exit_code
    } else {
        None
    };
    let pid = if cstate.is_active() {
        state
            .pid
            .filter(|p| *p > 0)
            .and_then(|p| u32::try_from(p).ok())
    } else {
        None
    };
    let config = r.config.unwrap_or_default();
    ContainerStatus {
        id: r.id.unwrap_or_default(),
        name: r
            .name
            .unwrap_or_default()
            .trim_start_matches('/')
            .to_string(),
        image: config.image.or(r.image).unwrap_or_default(),
        state: cstate,
        exit_code,
        oom_killed: state.oom_killed.unwrap_or(false),
        pid,
        started_at: none_if_zero_time(state.started_at),
        finished_at: none_if_zero_time(state.finished_at),
        labels: config.labels.unwrap_or_default(),
    }
}

/// A listing row, or `None` without an id. A missing state is `Other("")`, never `Running`.
pub(crate) fn summary_from_list(c: bollard::models::ContainerSummary) -> Option<ContainerSummary> {
    Some(ContainerSummary {
        id: c.id?,
        state: c
            .state
            .map(|s| ContainerState::parse(&s))
            .unwrap_or_else(|| ContainerState::Other(String::new())),
        labels: c.labels.unwrap_or_default(),
    })
}

/// Engine name from `/version`.
pub(crate) fn engine_name(v: &bollard::system::Version) -> String {
    let mut names: Vec<String> = Vec::new();
    if let Some(p) = &v.platform {
        names.push(p.name.clone());
    }
    if let Some(cs) = &v.components {
        names.extend(cs.iter().map(|c| c.name.clone()));
    }
    let lower: Vec<String> = names.iter().map(|n| n.to_ascii_lowercase()).collect();
    if lower.iter().any(|n| n.contains("podman")) {
        "podman".into()
    } else if lower.iter().any(|n| n.contains("docker") || n == "engine") {
        "docker".into()
    } else {
        "unknown".into()
    }
}

/// CPU percent (100 = one core) from `cpu_stats` vs `precpu_stats`, as the
/// Docker CLI computes it. `None` when there is no usable previous sample
/// (Podman's one-shot stats leave `precpu_stats` empty).
pub(crate) fn cpu_percent_from_precpu(s: &Stats) -> Option<f64> {
    let pre = &s.precpu_stats;
    let cur = &s.cpu_stats;
    let pre_sys = pre.system_cpu_usage?;
    let cur_sys = cur.system_cpu_usage?;
    if pre.cpu_usage.total_usage == 0 || cur_sys <= pre_sys {
        return None;
    }
    let cpu_delta = cur
        .cpu_usage
        .total_usage
        .saturating_sub(pre.cpu_usage.total_usage) as f64;
    let sys_delta = (cur_sys - pre_sys) as f64;
    let cpus = cur
        .online_cpus
        .filter(|n| *n > 0)
        .or_else(|| cur.cpu_usage.percpu_usage.as_ref().map(|v| v.len() as u64))
        .filter(|n| *n > 0)
        .unwrap_or(1) as f64;
    Some(cpu_delta / sys_delta * cpus * 100.0)
}

/// CPU percent from two samples of cumulative usage and the wall time between them.
pub(crate) fn cpu_percent_between(first_ns: u64, second_ns: u64, elapsed: Duration) -> f64 {
    let el = elapsed.as_nanos() as f64;
    if el <= 0.0 {
        return 0.0;
    }
    second_ns.saturating_sub(first_ns) as f64 / el * 100.0
}

/// Memory usage without the inactive page cache (Docker CLI convention).
pub(crate) fn memory_usage(s: &Stats) -> u64 {
    use bollard::container::MemoryStatsStats as M;
    let usage = s.memory_stats.usage.unwrap_or(0);
    let inactive = match &s.memory_stats.stats {
        Some(M::V1(v1)) => v1.total_inactive_file,
        Some(M::V2(v2)) => v2.inactive_file,
        None => 0,
    };
    usage.saturating_sub(inactive)
}

#[async_trait]
impl Runtime for DockerRuntime {
    async fn info(&self) -> Result<EngineInfo, RuntimeError> {
        self.docker.ping().await.map_err(|e| self.map_err(e))?;
        let v = self.docker.version().await.map_err(|e| self.map_err(e))?;
        let i = self.docker.info().await.map_err(|e| self.map_err(e))?;
        Ok(EngineInfo {
            engine: engine_name(&v),
            version: v.version.clone().unwrap_or_default(),
            api_version: v.api_version.clone().unwrap_or_default(),
            os: v.os.clone().unwrap_or_default(),
            arch: v.arch.clone().unwrap_or_default(),
            kernel_version: v.kernel_version.clone().unwrap_or_default(),
            cgroup_driver: i.cgroup_driver.map(|d| d.to_string()).unwrap_or_default(),
            cgroup_version: i.cgroup_version.map(|d| d.to_string()).unwrap_or_default(),
            default_runtime: i.default_runtime.unwrap_or_default(),
        })
    }

    async fn image_exists(&self, reference: &str) -> Result<bool, RuntimeError> {
        match self.docker.inspect_image(reference).await {
            Ok(_) => Ok(true),
            Err(e) => match self.map_err(e) {
                RuntimeError::NotFound(_) => Ok(false),
                other => Err(other),
            },
        }
    }

    async fn ensure_volume(
        &self,
        name: &str,
        labels: &HashMap<String, String>,
    ) -> Result<(), RuntimeError> {
        if self.volume_exists(name).await? {
            return Ok(());
        }
        let opts = CreateVolumeOptions {
            name: name.to_string(),
            driver: "local".to_string(),
            driver_opts: HashMap::new(),
            labels: labels.clone(),
        };
        match self.docker.create_volume(opts).await {
            Ok(_) => {
                tracing::debug!(volume = name, "volume created");
                Ok(())
            }
            // Lost a race with a concurrent creator: the volume exists, which is what we want.
            Err(e) => match self.map_err(e) {
                RuntimeError::Conflict(_) => Ok(()),
                other => Err(other),
            },
        }
    }

    async fn volume_exists(&self, name: &str) -> Result<bool, RuntimeError> {
        match self.docker.inspect_volume(name).await {
            Ok(_) => Ok(true),
            Err(e) => match self.map_err(e) {
                RuntimeError::NotFound(_) => Ok(false),
                other => Err(other),
            },
        }
    }

    async fn remove_volume(&self, name: &str) -> Result<(), RuntimeError> {
        match self
            .docker
            .remove_volume(name, Some(RemoveVolumeOptions { force: false }))
            .await
        {
            Ok(()) => Ok(()),
            Err(e) => match self.map_err(e) {
                RuntimeError::NotFound(_) => Ok(()),
                other => Err(other),
            },
        }
    }

    async fn create_container(&self, spec: &ContainerSpec) -> Result<String, RuntimeError> {
        self.validate_spec(spec)?;
        let config = container_config(spec);
        let opts = CreateContainerOptions {
            name: spec.name.clone(),
            platform: None,
        };
        let resp = self
            .docker
            .create_container(Some(opts), config)
            .await
            .map_err(|e| RuntimeError::from_bollard_create(&self.endpoint, &spec.image, e))?;
        for w in resp.warnings.iter().filter(|w| !w.is_empty()) {
            tracing::warn!(container = %spec.name, warning = %w, "engine warning on create");
        }
        tracing::debug!(container = %spec.name, id = %resp.id, "container created");
        Ok(resp.id)
    }

    async fn start_container(&self, id: &str) -> Result<(), RuntimeError> {
        self.docker
            .start_container(id, None::<StartContainerOptions<String>>)
            .await
            .map_err(|e| self.map_err(e))
    }

    async fn stop_container(&self, id: &str, timeout: Duration) -> Result<(), RuntimeError> {
        let t = i64::try_from(timeout.as_secs()).unwrap_or(i64::MAX);
        // The engine may take `t` seconds plus the kill; give the request room beyond that.
        let client = self.docker.clone().with_timeout(REQUEST_TIMEOUT + timeout);
        let stop = client.stop_container(id, Some(StopContainerOptions { t }));
        // A SIGTERM that reaches the container's init (tini / podman-init) before it has
        // installed its handlers is dropped by the kernel (pid 1 of a pid namespace), and the
        // engine then waits the full timeout. Re-send SIGTERM every second during the grace period.
        let resend = async {
            loop {
                tokio::time::sleep(SIGTERM_RESEND_INTERVAL).await;
                let opts = KillContainerOptions { signal: "SIGTERM" };
                if let Err(e) = self.docker.kill_container(id, Some(opts)).await {
                    tracing::debug!(container = id, error = %e, "SIGTERM resend failed");
                }
            }
        };
        let result = tokio::select! {
            r = stop => r,
            () = resend => Ok(()),
        };
        match result {
            Ok(()) => Ok(()),
            Err(e) => match self.map_err(e) {
                // 304 is success in bollard; some engines answer 409/500 for "not running".
                RuntimeError::Conflict(m) if m.to_ascii_lowercase().contains("not running") => {
                    Ok(())
                }
                other => Err(other),
            },
        }
    }

    async fn download_archive(&self, id: &str, path: &str) -> Result<ByteStream, RuntimeError> {
        let opts = bollard::container::DownloadFromContainerOptions {
            path: path.to_owned(),
        };
        let endpoint = self.endpoint.clone();
        let stream = self
            .long_client()
            .download_from_container(id, Some(opts))
            .map(move |r| r.map_err(|e| RuntimeError::from_bollard(&endpoint, e)));
        Ok(stream.boxed())
    }

    async fn upload_archive(
        &self,
        id: &str,
        path: &str,
        tar: futures_util::stream::BoxStream<'static, bytes::Bytes>,
    ) -> Result<(), RuntimeError> {
        let opts = bollard::container::UploadToContainerOptions {
            path: path.to_owned(),
            no_overwrite_dir_non_dir: "true".to_owned(),
        };
        self.long_client()
            .upload_to_container_streaming(id, Some(opts), tar)
            .await
            .map_err(|e| self.map_err(e))
    }

    async fn update_limits(
        &self,
        id: &str,
        limits: &berth_domain::Limits,
    ) -> Result<(), RuntimeError> {
        let opts = UpdateContainerOptions::<String> {
            memory: Some(limits.memory_bytes),
            memory_swap: Some(limits.memory_bytes),
            nano_cpus: Some(limits.nano_cpus),
            pids_limit: Some(limits.pids),
            ..Default::default()
        };
        match self.docker.update_container(id, opts).await {
            Ok(()) => Ok(()),
            Err(e) => match self.map_err(e) {
                // Podman 4's compat service has no such route (a bare 404): its own API has.
                RuntimeError::NotFound(_) => {
                    crate::libpod::update(&self.endpoint, id, limits).await
                }
                other => Err(other),
            },
        }
    }

    async fn pause_container(&self, id: &str) -> Result<(), RuntimeError> {
        self.docker
            .pause_container(id)
            .await
            .map_err(|e| self.map_err(e))
    }

    async fn unpause_container(&self, id: &str) -> Result<(), RuntimeError> {
        self.docker
            .unpause_container(id)
            .await
            .map_err(|e| self.map_err(e))
    }

    async fn remove_container(&self, id: &str) -> Result<(), RuntimeError> {
        let opts = RemoveContainerOptions {
            v: false,
            force: true,
            link: false,
        };
        match self.docker.remove_container(id, Some(opts)).await {
            Ok(()) => Ok(()),
            Err(e) => match self.map_err(e) {
                RuntimeError::NotFound(_) => Ok(()),
                // Docker answers 409 "removal already in progress".
                RuntimeError::Conflict(m) if m.contains("already in progress") => Ok(()),
                other => Err(other),
            },
        }
    }

    async fn inspect_container(
        &self,
        id_or_name: &str,
    ) -> Result<Option<ContainerStatus>, RuntimeError> {
        match self
            .docker
            .inspect_container(id_or_name, Some(InspectContainerOptions { size: false }))
            .await
        {
            Ok(r) => Ok(Some(status_from_inspect(r))),
            Err(e) => match self.map_err(e) {
                RuntimeError::NotFound(_) => Ok(None),
                other => Err(other),
            },
        }
    }

    async fn list_containers(&self, label: &str) -> Result<Vec<ContainerStatus>, RuntimeError> {
        let list = self.list_container_states(label).await?;
        let mut out = Vec::with_capacity(list.len());
        for ContainerSummary { id, .. } in list {
            // Removed between list and inspect: skip.
            if let Some(s) = self.inspect_container(&id).await? {
                out.push(s);
            }
        }
        Ok(out)
    }

    async fn list_container_states(
        &self,
        label: &str,
    ) -> Result<Vec<ContainerSummary>, RuntimeError> {
        let mut filters = HashMap::new();
        filters.insert("label".to_string(), vec![label.to_string()]);
        let list = self
            .docker
            .list_containers(Some(ListContainersOptions {
                all: true,
                limit: None,
                size: false,
                filters,
            }))
            .await
            .map_err(|e| self.map_err(e))?;
        Ok(list.into_iter().filter_map(summary_from_list).collect())
    }

    fn container_events(&self, label: &str) -> crate::EventStream {
        let mut filters = HashMap::new();
        filters.insert("type".to_string(), vec!["container".to_string()]);
        filters.insert("label".to_string(), vec![label.to_string()]);
        let this = self.clone();
        self.long_client()
            .events(Some(bollard::system::EventsOptions::<String> {
                since: None,
                until: None,
                filters,
            }))
            .map(move |r| match r {
                Ok(m) => Ok(ContainerEvent {
                    id: m.actor.and_then(|a| a.id).unwrap_or_default(),
                    action: m.action.unwrap_or_default(),
                }),
                Err(e) => Err(this.map_err(e)),
            })
            .boxed()
    }

    async fn wait_container(&self, id: &str) -> Result<i64, RuntimeError> {
        let client = self.long_client();
        let mut s = client.wait_container(
            id,
            Some(WaitContainerOptions {
                condition: "not-running",
            }),
        );
        match s.next().await {
            Some(Ok(r)) => Ok(r.status_code),
            Some(Err(bollard::errors::Error::DockerContainerWaitError { code, .. })) => Ok(code),
            Some(Err(e)) => Err(self.map_err(e)),
            None => Err(RuntimeError::Other(format!(
                "engine closed the wait for {id} without a status"
            ))),
        }
    }

    async fn exec_status(&self, id: &str, cmd: &[String]) -> Result<i64, RuntimeError> {
        use bollard::exec::{CreateExecOptions, StartExecOptions, StartExecResults};
        let created = self
            .docker
            .create_exec(
                id,
                CreateExecOptions::<String> {
                    cmd: Some(cmd.to_vec()),
                    attach_stdout: Some(true),
                    attach_stderr: Some(true),
                    tty: Some(false),
                    ..Default::default()
                },
            )
            .await
            .map_err(|e| self.map_err(e))?;
        let started = self
            .docker
            .start_exec(
                &created.id,
                Some(StartExecOptions {
                    detach: false,
                    tty: false,
                    output_capacity: None,
                }),
            )
            .await
            .map_err(|e| self.map_err(e))?;
        if let StartExecResults::Attached { mut output, .. } = started {
            // Drain (and drop) the output: the exit code is final once the stream ends.
            while let Some(chunk) = output.next().await {
                chunk.map_err(|e| self.map_err(e))?;
            }
        }
        let inspected = self
            .docker
            .inspect_exec(&created.id)
            .await
            .map_err(|e| self.map_err(e))?;
        inspected.exit_code.ok_or_else(|| {
            RuntimeError::Other(format!(
                "engine reported no exit code for exec {} in {id}",
                created.id
            ))
        })
    }

    async fn usage(&self, id: &str) -> Result<ResourceUsage, RuntimeError> {
        let t0 = Instant::now();
        let first = self.stats_once(id).await?;
        let cpu_percent = match cpu_percent_from_precpu(&first) {
            Some(p) => p,
            None => {
                // No previous sample in the answer (Podman): take a second one ourselves.
                tokio::time::sleep(CPU_SAMPLE_INTERVAL).await;
                let second = self.stats_once(id).await?;
                let el = t0.elapsed();
                let p = cpu_percent_between(
                    first.cpu_stats.cpu_usage.total_usage,
                    second.cpu_stats.cpu_usage.total_usage,
                    el,
                );
                return Ok(ResourceUsage {
                    memory_bytes: memory_usage(&second),
                    memory_limit_bytes: second.memory_stats.limit.unwrap_or(0),
                    cpu_percent: p,
                    pids: second.pids_stats.current.unwrap_or(0),
                });
            }
        };
        Ok(ResourceUsage {
            memory_bytes: memory_usage(&first),
            memory_limit_bytes: first.memory_stats.limit.unwrap_or(0),
            cpu_percent,
            pids: first.pids_stats.current.unwrap_or(0),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parse_endpoints() {
        assert_eq!(
            parse_endpoint("unix:///run/podman/podman.sock").ok(),
            Some(Endpoint::Unix("/run/podman/podman.sock".into()))
        );
        assert_eq!(
            parse_endpoint("/var/run/docker.sock").ok(),
            Some(Endpoint::Unix("/var/run/docker.sock".into()))
        );
        assert_eq!(
            parse_endpoint("tcp://127.0.0.1:2375").ok(),
            Some(Endpoint::Http("127.0.0.1:2375".into()))
        );
        assert_eq!(
            parse_endpoint("http://engine.local:8080/").ok(),
            Some(Endpoint::Http("engine.local:8080".into()))
        );
        assert_eq!(
            parse_endpoint("tcp://engine.local").ok(),
            Some(Endpoint::Http("engine.local:2375".into()))
        );
        assert!(parse_endpoint("unix://relative.sock").is_err());
        assert!(parse_endpoint("ssh://user@host").is_err());
        assert!(parse_endpoint("https://host:2376").is_err());
        assert!(parse_endpoint("tcp://").is_err());
        assert_eq!(
            Endpoint::Unix("/a/b.sock".into()).to_string(),
            "unix:///a/b.sock"
        );
        assert_eq!(Endpoint::Http("h:1".into()).to_string(), "tcp://h:1");
    }

    #[test]
    fn resolve_order() {
        let none = |_: &Path| false;
        let all = |_: &Path| true;
        let docker_only = |p: &Path| p == Path::new("/var/run/docker.sock");
        assert_eq!(
            resolve_endpoint(Some("tcp://a:1"), Some("unix:///b.sock"), all).ok(),
            Some(Endpoint::Http("a:1".into()))
        );
        assert_eq!(
            resolve_endpoint(None, Some("unix:///b.sock"), all).ok(),
            Some(Endpoint::Unix("/b.sock".into()))
        );
        assert_eq!(
            resolve_endpoint(None, Some(""), all).ok(),
            Some(Endpoint::Unix("/run/podman/podman.sock".into()))
        );
        assert_eq!(
            resolve_endpoint(None, None, docker_only).ok(),
            Some(Endpoint::Unix("/var/run/docker.sock".into()))
        );
        match resolve_endpoint(None, None, none) {
            Err(RuntimeError::Unreachable { message, .. }) => {
                assert!(message.contains("podman system service"), "{message}")
            }
            other => panic!("unexpected {other:?}"),
        }
    }

    fn spec() -> ContainerSpec {
        ContainerSpec {
            name: "berth-ws-1".into(),
            image: "localhost/img:1".into(),
            user: "1000:1000".into(),
            cmd: vec!["sleep".into(), "infinity".into()],
            env: vec!["A=b".into()],
            memory_bytes: 128 << 20,
            nano_cpus: 500_000_000,
            pids_limit: 256,
            mounts: vec![
                Mount::Volume {
                    name: "vol1".into(),
                    target: "/home/agent".into(),
                },
                Mount::Bind {
                    source: "/var/lib/berth/ws1/chan".into(),
                    target: "/run/berth".into(),
                    read_only: false,
                },
            ],
            cap_add: vec!["NET_BIND_SERVICE".into()],
            ..Default::default()
        }
    }

    #[test]
    fn config_has_hardening() {
        let c = container_config(&spec());
        let h = c.host_config.clone().unwrap_or_default();
        assert_eq!(h.cap_drop, Some(vec!["ALL".to_string()]));
        assert_eq!(h.cap_add, Some(vec!["NET_BIND_SERVICE".to_string()]));
        assert_eq!(h.security_opt, Some(vec!["no-new-privileges".to_string()]));
        assert_eq!(h.memory, Some(128 << 20));
        assert_eq!(h.memory_swap, Some(128 << 20));
        assert_eq!(h.nano_cpus, Some(500_000_000));
        assert_eq!(h.pids_limit, Some(256));
        assert_eq!(h.privileged, Some(false));
        assert_eq!(h.init, Some(true));
        assert_eq!(h.network_mode.as_deref(), Some("none"));
        assert_eq!(h.binds, None);
        let mounts = h.mounts.unwrap_or_default();
        assert_eq!(mounts.len(), 2);
        assert_eq!(mounts[0].typ, Some(MountTypeEnum::VOLUME));
        assert_eq!(mounts[1].typ, Some(MountTypeEnum::BIND));
        assert_eq!(mounts[1].source.as_deref(), Some("/var/lib/berth/ws1/chan"));
        assert_eq!(c.user.as_deref(), Some("1000:1000"));
        assert_eq!(c.image.as_deref(), Some("localhost/img:1"));
    }

    #[test]
    fn dev_shm_is_the_containers_own_tmpfs_not_a_host_mount() {
        for readonly in [false, true] {
            let mut s = spec();
            s.readonly_rootfs = readonly;
            let h = container_config(&s).host_config.unwrap_or_default();
            assert_eq!(h.ipc_mode.as_deref(), Some("private"));
            let t = h.tmpfs.unwrap_or_default();
            assert_eq!(t.get("/dev/shm").map(String::as_str), Some(SHM_OPTIONS));
            assert_eq!(t.contains_key("/tmp"), readonly);
            assert_eq!(t.contains_key("/var/tmp"), readonly);
        }
    }

    #[test]
    fn a_private_user_namespace_mounts_writable_storage_with_chown() {
        let mut s = spec();
        s.userns = Some("auto".into());
        s.mounts.push(Mount::Bind {
            source: "/opt/berth/bin".into(),
            target: "/opt/berth/berth".into(),
            read_only: true,
        });
        let h = container_config(&s).host_config.unwrap_or_default();
        assert_eq!(h.userns_mode.as_deref(), Some("auto"));
        assert_eq!(
            h.binds,
            Some(vec![
                "vol1:/home/agent:U".to_string(),
                "/var/lib/berth/ws1/chan:/run/berth:rw,U".to_string()
            ])
        );
        // Read-only binds stay typed mounts, untouched.
        let mounts = h.mounts.unwrap_or_default();
        assert_eq!(mounts.len(), 1);
        assert_eq!(mounts[0].read_only, Some(true));
        let forbidden = vec![];
        assert!(validate_spec(&s, &forbidden).is_ok());
        s.userns = Some("host".into());
        assert!(validate_spec(&s, &forbidden).is_err());
        s.userns = Some("auto".into());
        s.mounts.push(Mount::Bind {
            source: "/tmp/a:b".into(),
            target: "/x".into(),
            read_only: false,
        });
        assert!(validate_spec(&s, &forbidden).is_err());
    }

    #[test]
    fn validation() {
        let forbidden = vec![PathBuf::from("/run/podman/podman.sock")];
        assert!(validate_spec(&spec(), &forbidden).is_ok());
        let mut s = spec();
        s.mounts.push(Mount::Bind {
            source: "/run".into(),
            target: "/x".into(),
            read_only: true,
        });
        assert!(matches!(
            validate_spec(&s, &forbidden),
            Err(RuntimeError::InvalidSpec(_))
        ));
        let mut s = spec();
        s.mounts.push(Mount::Bind {
            source: "/run/podman/podman.sock".into(),
            target: "/var/run/docker.sock".into(),
            read_only: true,
        });
        assert!(validate_spec(&s, &forbidden).is_err());
        let mut s = spec();
        s.user = String::new();
        assert!(validate_spec(&s, &forbidden).is_err());
        let mut s = spec();
        s.memory_bytes = 0;
        assert!(validate_spec(&s, &forbidden).is_err());
        let mut s = spec();
        s.cap_add = vec!["all".into()];
        assert!(validate_spec(&s, &forbidden).is_err());
        let mut s = spec();
        s.network_mode = "host".into();
        assert!(validate_spec(&s, &forbidden).is_err());
        let mut s = spec();
        s.mounts.push(Mount::Volume {
            name: "v2".into(),
            target: "/home/agent/".into(),
        });
        assert!(validate_spec(&s, &forbidden).is_err());
    }

    #[test]
    fn inspect_mapping() -> Result<(), serde_json::Error> {
        let running: ContainerInspectResponse = serde_json::from_value(serde_json::json!({
            "Id": "abc", "Name": "/berth-ws-1", "Image": "sha256:1",
            "Config": {"Image": "localhost/img:1", "Labels": {"berth.workspace": "w1"}},
            "State": {"Status": "running", "Running": true, "Pid": 4242, "ExitCode": 0,
                      "OOMKilled": false, "StartedAt": "2026-11-23T07:00:00Z",
                      "FinishedAt": "0001-01-01T00:00:00Z"}
        }))?;
        let s = status_from_inspect(running);
        assert_eq!(s.name, "berth-ws-1");
        assert_eq!(s.image, "localhost/img:1");
        assert_eq!(s.state, ContainerState::Running);
        assert_eq!(s.pid, Some(4242));
        assert_eq!(s.exit_code, None);
        assert_eq!(s.finished_at, None);
        assert_eq!(
            s.labels.get("berth.workspace").map(String::as_str),
            Some("w1")
        );

        let exited: ContainerInspectResponse = serde_json::from_value(serde_json::json!({
            "Id": "abc", "Name": "/x",
            "State": {"Status": "exited", "Pid": 0, "ExitCode": 137,
                      "StartedAt": "2026-11-23T07:00:00Z", "FinishedAt": "2026-11-23T07:00:02Z"}
        }))?;
        let s = status_from_inspect(exited);
        assert_eq!(s.state, ContainerState::Exited);
        assert_eq!(s.exit_code, Some(137));
        assert_eq!(s.pid, None);
        assert!(s.finished_at.is_some());
        Ok(())
    }

    #[test]
    fn list_row_mapping() -> Result<(), serde_json::Error> {
        // Podman's compat listing: lower-case state, labels; no pid, no exit code.
        let row: bollard::models::ContainerSummary = serde_json::from_value(serde_json::json!({
            "Id": "abc", "Names": ["/berth-ws-1"], "State": "running",
            "Status": "Up 3 minutes", "Labels": {"berth.server": "s1"}
        }))?;
        let s = summary_from_list(row).expect("a row with an id");
        assert_eq!(s.id, "abc");
        assert_eq!(s.state, ContainerState::Running);
        assert_eq!(s.labels.get("berth.server").map(String::as_str), Some("s1"));

        let exited: bollard::models::ContainerSummary =
            serde_json::from_value(serde_json::json!({"Id": "def", "State": "exited"}))?;
        let s = summary_from_list(exited).expect("a row with an id");
        assert_eq!(s.state, ContainerState::Exited);
        assert!(s.labels.is_empty());

        // No state: never taken for running. No id: dropped.
        let bare: bollard::models::ContainerSummary =
            serde_json::from_value(serde_json::json!({"Id": "ghi"}))?;
        let s = summary_from_list(bare).expect("a row with an id");
        assert_ne!(s.state, ContainerState::Running);
        let anonymous: bollard::models::ContainerSummary =
            serde_json::from_value(serde_json::json!({"State": "running"}))?;
        assert!(summary_from_list(anonymous).is_none());
        Ok(())
    }

    fn stats_json(pre_total: u64, pre_sys: Option<u64>, total: u64, sys: u64) -> serde_json::Value {
        let mut pre = serde_json::json!({"cpu_usage": {"total_usage": pre_total, "usage_in_kernelmode": 0, "usage_in_usermode": 0},
            "throttling_data": {"periods": 0, "throttled_periods": 0, "throttled_time": 0}});
        if let Some(ps) = pre_sys {
            pre["system_cpu_usage"] = ps.into();
        }
        serde_json::json!({
            "read": "2026-11-23T07:10:37Z", "preread": "0001-01-01T00:00:00Z",
            "num_procs": 0, "pids_stats": {"current": 3},
            "blkio_stats": {}, "storage_stats": {},
            "cpu_stats": {"cpu_usage": {"total_usage": total, "usage_in_kernelmode": 0, "usage_in_usermode": 0},
                "system_cpu_usage": sys, "online_cpus": 2,
                "throttling_data": {"periods": 0, "throttled_periods": 0, "throttled_time": 0}},
            "precpu_stats": pre,
            "memory_stats": {"usage": 1000, "limit": 4000},
            "name": "x", "Id": "y"
        })
    }

    #[test]
    fn cpu_math() -> Result<(), serde_json::Error> {
        // Docker: 0.5 s of CPU over 2 s of system time (2 cpus) = 50% of one core.
        let s: Stats = serde_json::from_value(stats_json(
            1_000_000_000,
            Some(10_000_000_000),
            1_500_000_000,
            12_000_000_000,
        ))?;
        let p = cpu_percent_from_precpu(&s).unwrap_or(-1.0);
        assert!((p - 50.0).abs() < 1e-6, "{p}");
        assert_eq!(memory_usage(&s), 1000);
        // Podman one-shot: empty precpu.
        let s: Stats = serde_json::from_value(stats_json(0, None, 1_500_000_000, 12_000_000_000))?;
        assert_eq!(cpu_percent_from_precpu(&s), None);
        let p = cpu_percent_between(1_000_000_000, 1_250_000_000, Duration::from_millis(500));
        assert!((p - 50.0).abs() < 1e-6, "{p}");
        Ok(())
    }

    #[test]
    fn engine_names() {
        let podman = bollard::system::Version {
            platform: Some(bollard::models::SystemVersionPlatform {
                name: "linux/amd64/debian-12".into(),
            }),
            components: Some(vec![bollard::system::VersionComponents {
                name: "Podman Engine".into(),
                version: "4.3.1".into(),
                details: None,
            }]),
            ..Default::default()
        };
        assert_eq!(engine_name(&podman), "podman");
        let docker = bollard::system::Version {
            platform: Some(bollard::models::SystemVersionPlatform {
                name: "Docker Engine - Community".into(),
            }),
            components: Some(vec![bollard::system::VersionComponents {
                name: "Engine".into(),
                version: "27.0.1".into(),
                details: None,
            }]),
            ..Default::default()
        };
        assert_eq!(engine_name(&docker), "docker");
    }
}
