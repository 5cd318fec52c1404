//! Plain data types shared by all runtime implementations.

use std::collections::HashMap;
use std::fmt;
use std::path::PathBuf;

use serde::{Deserialize, Serialize};

/// What to create. The Docker backend always adds the hardening on top:
/// `CapDrop ["ALL"]`, `SecurityOpt ["no-new-privileges"]`, `Privileged false`,
/// `MemorySwap = Memory`, and only the mounts listed here.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ContainerSpec {
    pub name: String,
    pub image: String,
    /// `uid:gid` (e.g. `"1000:1000"`); must not be empty.
    pub user: String,
    /// Command (the image's entrypoint, if any, is kept).
    pub cmd: Vec<String>,
    /// `KEY=value` entries.
    pub env: Vec<String>,
    pub labels: HashMap<String, String>,
    pub hostname: Option<String>,
    pub working_dir: Option<String>,
    /// Memory limit in bytes; swap is set to the same value (no swap). Must be > 0.
    pub memory_bytes: i64,
    /// CPU limit in 1e-9 CPUs (`1_000_000_000` = one core); 0 = unlimited.
    pub nano_cpus: i64,
    /// Max number of processes/threads; must be > 0.
    pub pids_limit: i64,
    pub mounts: Vec<Mount>,
    /// `"none"`, `"bridge"`, or a network name.
    pub network_mode: String,
    /// Capabilities added back after dropping ALL.
    pub cap_add: Vec<String>,
    pub readonly_rootfs: bool,
    /// Run an init process (tini / podman-init) as pid 1: fast stop, zombie reaping.
    pub init: bool,
    /// The engine's user-namespace mode. `Some("auto")` (Podman): the container gets a private
    /// range of host uids/gids of its own (from the `containers` entry of /etc/subuid), so its
    /// uid 1000 (and its root) are nobody on the host and nobody in another workspace; volumes
    /// and writable binds are then mounted with Podman's `U` option so their files follow the
    /// container's range. `None`: the engine default (host uids, shared by every container;
    /// Docker's daemon-wide `userns-remap` is configured on the daemon, not here).
    pub userns: Option<String>,
}

impl Default for ContainerSpec {
    fn default() -> Self {
        Self {
            name: String::new(),
            image: String::new(),
            user: "1000:1000".to_string(),
            cmd: Vec::new(),
            env: Vec::new(),
            labels: HashMap::new(),
            hostname: None,
            working_dir: None,
            memory_bytes: 2 * 1024 * 1024 * 1024,
            nano_cpus: 0,
            pids_limit: 1024,
            mounts: Vec::new(),
            network_mode: "none".to_string(),
            cap_add: Vec::new(),
            readonly_rootfs: false,
            init: true,
            userns: None,
        }
    }
}

/// A mount into the container.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum Mount {
    /// A named engine volume.
    Volume { name: String, target: String },
    /// A host path. The source must be absolute and must not expose the engine socket.
    Bind {
        source: PathBuf,
        target: String,
        read_only: bool,
    },
}

impl Mount {
    pub fn target(&self) -> &str {
        match self {
            Mount::Volume { target, .. } | Mount::Bind { target, .. } => target,
        }
    }
}

/// Container state as reported by the engine.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(into = "String", from = "String")]
pub enum ContainerState {
    Created,
    Running,
    Paused,
    Restarting,
    Exited,
    Dead,
    Other(String),
}

impl ContainerState {
    pub fn as_str(&self) -> &str {
        match self {
            ContainerState::Created => "created",
            ContainerState::Running => "running",
            ContainerState::Paused => "paused",
            ContainerState::Restarting => "restarting",
            ContainerState::Exited => "exited",
            ContainerState::Dead => "dead",
            ContainerState::Other(s) => s,
        }
    }

    /// Parse the engine's state string (case-insensitive). Podman reports
    /// `"configured"` for never-started containers on some paths; that maps to `Created`,
    /// and `"stopped"` maps to `Exited`.
    pub fn parse(s: &str) -> Self {
        match s.to_ascii_lowercase().as_str() {
            "created" | "configured" => ContainerState::Created,
            "running" => ContainerState::Running,
            "paused" => ContainerState::Paused,
            "restarting" => ContainerState::Restarting,
            "exited" | "stopped" => ContainerState::Exited,
            "dead" => ContainerState::Dead,
            other => ContainerState::Other(other.to_string()),
        }
    }

    /// Running, paused or restarting: the container's processes exist.
    pub fn is_active(&self) -> bool {
        matches!(
            self,
            ContainerState::Running | ContainerState::Paused | ContainerState::Restarting
        )
    }
}

impl fmt::Display for ContainerState {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl From<String> for ContainerState {
    fn from(s: String) -> Self {
        ContainerState::parse(&s)
    }
}

impl From<ContainerState> for String {
    fn from(s: ContainerState) -> Self {
        s.as_str().to_string()
    }
}

/// What the engine knows about one container.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ContainerStatus {
    pub id: String,
    /// Without the leading `/` Docker puts on names.
    pub name: String,
    pub image: String,
    pub state: ContainerState,
    /// Set once the container has exited (`None` while created/running).
    pub exit_code: Option<i64>,
    /// As reported by the engine. Always false on Podman + cgroup v1: use
    /// [`crate::memcg_oom_kills`] while running, or treat an unexpected exit 137 as OOM.
    pub oom_killed: bool,
    /// Host pid of the container's pid 1 while it is running.
    pub pid: Option<u32>,
    /// RFC 3339; `None` if never started.
    pub started_at: Option<String>,
    /// RFC 3339; `None` if never finished.
    pub finished_at: Option<String>,
    pub labels: HashMap<String, String>,
}

/// One row of a container listing: what a single engine call tells about every container,
/// without inspecting each (so no pid, no exit code, no OOM flag).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ContainerSummary {
    pub id: String,
    pub state: ContainerState,
    pub labels: HashMap<String, String>,
}

/// One event of a container, as the engine reports it (`start`, `die`, `remove`, …).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ContainerEvent {
    pub id: String,
    pub action: String,
}

/// One-shot resource usage sample.
#[derive(Debug, Clone, Copy, PartialEq, Default, Serialize, Deserialize)]
pub struct ResourceUsage {
    pub memory_bytes: u64,
    pub memory_limit_bytes: u64,
    /// Docker convention: 100.0 = one full core busy (so up to `100 * cpus`).
    pub cpu_percent: f64,
    pub pids: u64,
}

/// Engine identity and configuration.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
pub struct EngineInfo {
    /// `"podman"` or `"docker"` (or whatever the engine calls itself, lowercased).
    pub engine: String,
    pub version: String,
    pub api_version: String,
    pub os: String,
    pub arch: String,
    pub kernel_version: String,
    /// `"cgroupfs"`, `"systemd"`, ... (empty if unknown).
    pub cgroup_driver: String,
    /// `"1"` or `"2"` (empty if unknown).
    pub cgroup_version: String,
    pub default_runtime: String,
}
