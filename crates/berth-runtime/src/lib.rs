//! Container runtime boundary for berth.
//!
//! * [`Runtime`]: the trait the server codes against.
//! * [`DockerRuntime`]: the Docker Engine API backend (bollard). It only uses
//!   endpoints that Docker and Podman's Docker-compatible service both serve,
//!   and applies the workspace hardening on every container it creates.
//! * [`FakeRuntime`]: an in-memory implementation that records every call and
//!   can inject failures, for other crates' unit tests.
//! * [`memcg_oom_kills`]: reads the kernel's memcg OOM-kill counter of a
//!   running container (Podman's `State.OOMKilled` is always false on cgroup v1).
//! * live limit updates: the Docker API's `POST /containers/{id}/update`, or Podman's libpod
//!   equivalent where its compat service lacks the call (`libpod`).
//! * [`image`]: builds the workspace base image locally (debootstrap → import →
//!   build through the engine API), content-addressed by tag.

mod cgroup;
mod docker;
mod error;
mod fake;
pub mod image;
mod libpod;
mod types;

pub use cgroup::{
    container_oom_kills, memcg_oom_kills, parse_memcg_path, parse_oom_kill_counter, MemcgPath,
    OomReading,
};
pub use docker::{
    default_socket_candidates, parse_endpoint, resolve_endpoint, DockerRuntime, Endpoint,
};
pub use error::RuntimeError;
pub use fake::{Call, FakeRuntime};
pub use types::{
    ContainerEvent, ContainerSpec, ContainerState, ContainerStatus, ContainerSummary, EngineInfo,
    Mount, ResourceUsage,
};

use std::collections::HashMap;
use std::time::Duration;

use async_trait::async_trait;

/// A stream of archive bytes (a tar) coming from the engine.
pub type ByteStream = futures_util::stream::BoxStream<'static, Result<bytes::Bytes, RuntimeError>>;

/// The events of some containers, as they happen.
pub type EventStream =
    futures_util::stream::BoxStream<'static, Result<ContainerEvent, RuntimeError>>;

fn unsupported(what: &str) -> RuntimeError {
    RuntimeError::Other(format!("{what} is not supported by this container runtime"))
}

/// The container engine as the server sees it.
///
/// Every method maps to Docker Engine API calls that Docker and Podman's
/// compat service both support. Idempotency rules are part of the contract:
/// `stop_container` on a stopped container, `remove_container` and
/// `remove_volume` on missing objects all return `Ok`.
#[async_trait]
pub trait Runtime: Send + Sync + 'static {
    /// Ping the engine and describe it.
    async fn info(&self) -> Result<EngineInfo, RuntimeError>;
    /// Whether an image with this reference exists locally.
    async fn image_exists(&self, reference: &str) -> Result<bool, RuntimeError>;
    /// Create the named volume if it does not exist (labels apply on creation only).
    async fn ensure_volume(
        &self,
        name: &str,
        labels: &HashMap<String, String>,
    ) -> Result<(), RuntimeError>;
    /// Whether the named volume exists.
    async fn volume_exists(&self, name: &str) -> Result<bool, RuntimeError>;
    /// Remove the named volume; a missing volume is `Ok`.
    async fn remove_volume(&self, name: &str) -> Result<(), RuntimeError>;
    /// Create a hardened container; returns the container id.
    async fn create_container(&self, spec: &ContainerSpec) -> Result<String, RuntimeError>;
    /// Start a created or stopped container (already running = `Ok`).
    async fn start_container(&self, id: &str) -> Result<(), RuntimeError>;
    /// Stop with SIGTERM, then SIGKILL after `timeout`; already stopped = `Ok`.
    async fn stop_container(&self, id: &str, timeout: Duration) -> Result<(), RuntimeError>;
    /// Force-remove a container (named volumes are kept); missing = `Ok`.
    async fn remove_container(&self, id: &str) -> Result<(), RuntimeError>;
    /// Inspect by id or name; `None` if it does not exist.
    async fn inspect_container(
        &self,
        id_or_name: &str,
    ) -> Result<Option<ContainerStatus>, RuntimeError>;
    /// All containers (including stopped ones) carrying the label filter `key=value` (or `key`).
    async fn list_containers(&self, label: &str) -> Result<Vec<ContainerStatus>, RuntimeError>;
    /// The id, state and labels of every container (stopped ones included) carrying the label
    /// filter, in one engine call: the cheap listing for periodic checks, which then inspect
    /// only the containers whose state calls for it.
    async fn list_container_states(
        &self,
        label: &str,
    ) -> Result<Vec<ContainerSummary>, RuntimeError>;
    /// The events of the containers carrying the label filter, from the moment the stream is
    /// first polled, until it ends (the engine went away) or fails. An engine without an event
    /// stream gives one that fails at once.
    fn container_events(&self, _label: &str) -> EventStream {
        use futures_util::StreamExt;
        futures_util::stream::once(async { Err(unsupported("the container event stream")) }).boxed()
    }
    /// Block until the container is not running; returns its exit code.
    async fn wait_container(&self, id: &str) -> Result<i64, RuntimeError>;
    /// One-shot resource usage of a running container.
    async fn usage(&self, id: &str) -> Result<ResourceUsage, RuntimeError>;
    /// Run `cmd` in a running container as its configured user (no TTY, output discarded) and
    /// return the exit code. For probes such as `berth doctor`'s smoke check; workspaces run
    /// their commands through the daemon instead.
    async fn exec_status(&self, id: &str, cmd: &[String]) -> Result<i64, RuntimeError>;
    /// A tar of `path` inside the container (which need not be running; a volume mounted at
    /// exactly `path` is read from the volume). The engine reads it, confined to the container.
    async fn download_archive(&self, _id: &str, _path: &str) -> Result<ByteStream, RuntimeError> {
        Err(unsupported("archive download"))
    }
    /// Extracts a tar into `path` inside the container (which need not be running).
    async fn upload_archive(
        &self,
        _id: &str,
        _path: &str,
        _tar: futures_util::stream::BoxStream<'static, bytes::Bytes>,
    ) -> Result<(), RuntimeError> {
        Err(unsupported("archive upload"))
    }
    /// Changes a container's memory, CPU and process caps; a running container gets them at
    /// once. An engine that cannot (no update call, or the kernel refuses the new value) answers
    /// an error and nothing changed: the caller then applies the limits by recreating the
    /// container. Some engines (Podman 4) do not keep such a change across a restart of the
    /// same container.
    async fn update_limits(
        &self,
        _id: &str,
        _limits: &berth_domain::Limits,
    ) -> Result<(), RuntimeError> {
        Err(unsupported("changing a container's limits"))
    }
    /// Freezes every process of a running container.
    async fn pause_container(&self, _id: &str) -> Result<(), RuntimeError> {
        Err(unsupported("pause"))
    }
    /// Thaws a paused container.
    async fn unpause_container(&self, _id: &str) -> Result<(), RuntimeError> {
        Err(unsupported("unpause"))
    }
}
