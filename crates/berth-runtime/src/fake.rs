//! In-memory [`Runtime`] for unit tests of code that drives containers.
//!
//! It records every call with its arguments, keeps volumes and containers in
//! memory with Docker-like semantics (name conflicts, idempotent stop/remove,
//! `None` on inspecting a missing container), and lets a test inject failures.

use std::collections::{BTreeMap, HashMap, HashSet, VecDeque};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use async_trait::async_trait;
use tokio::sync::Notify;

use crate::docker::validate_spec;
use crate::error::RuntimeError;
use crate::types::{
    ContainerSpec, ContainerState, ContainerStatus, ContainerSummary, EngineInfo, ResourceUsage,
};
use crate::Runtime;

/// One recorded call with its arguments.
#[allow(clippy::large_enum_variant)]
#[derive(Debug, Clone, PartialEq)]
pub enum Call {
    Info,
    ImageExists {
        reference: String,
    },
    EnsureVolume {
        name: String,
        labels: HashMap<String, String>,
    },
    VolumeExists {
        name: String,
    },
    RemoveVolume {
        name: String,
    },
    CreateContainer {
        spec: ContainerSpec,
    },
    StartContainer {
        id: String,
    },
    StopContainer {
        id: String,
        timeout: Duration,
    },
    RemoveContainer {
        id: String,
    },
    InspectContainer {
        id_or_name: String,
    },
    ListContainers {
        label: String,
    },
    ListContainerStates {
        label: String,
    },
    WaitContainer {
        id: String,
    },
    Usage {
        id: String,
    },
    ExecStatus {
        id: String,
        cmd: Vec<String>,
    },
    UpdateLimits {
        id: String,
        limits: berth_domain::Limits,
    },
}

impl Call {
    /// The operation name, as used by [`FakeRuntime::fail_next`]: the trait method name
    /// (`"info"`, `"image_exists"`, `"ensure_volume"`, `"volume_exists"`, `"remove_volume"`,
    /// `"create_container"`, `"start_container"`, `"stop_container"`, `"remove_container"`,
    /// `"inspect_container"`, `"list_containers"`, `"list_container_states"`, `"wait_container"`,
    /// `"usage"`, `"exec_status"`, `"update_limits"`).
    pub fn op(&self) -> &'static str {
        match self {
            Call::Info => "info",
            Call::ImageExists { .. } => "image_exists",
            Call::EnsureVolume { .. } => "ensure_volume",
            Call::VolumeExists { .. } => "volume_exists",
            Call::RemoveVolume { .. } => "remove_volume",
            Call::CreateContainer { .. } => "create_container",
            Call::StartContainer { .. } => "start_container",
            Call::StopContainer { .. } => "stop_container",
            Call::RemoveContainer { .. } => "remove_container",
            Call::InspectContainer { .. } => "inspect_container",
            Call::ListContainers { .. } => "list_containers",
            Call::ListContainerStates { .. } => "list_container_states",
            Call::WaitContainer { .. } => "wait_container",
            Call::Usage { .. } => "usage",
            Call::ExecStatus { .. } => "exec_status",
            Call::UpdateLimits { .. } => "update_limits",
        }
    }
}

#[derive(Debug, Clone)]
struct FakeContainer {
    spec: ContainerSpec,
    status: ContainerStatus,
}

#[derive(Debug, Default)]
struct Inner {
    calls: Vec<Call>,
    missing_images: HashSet<String>,
    volumes: BTreeMap<String, HashMap<String, String>>,
    containers: BTreeMap<String, FakeContainer>,
    failures: HashMap<String, VecDeque<RuntimeError>>,
    unreachable: bool,
    usage: HashMap<String, ResourceUsage>,
    next: u64,
    info: EngineInfo,
}

/// In-memory [`Runtime`]. Cheap to clone (clones share state).
///
/// Semantics: every image exists unless marked with [`set_missing_image`](Self::set_missing_image);
/// `start` makes a container `Running` with a fake pid; `stop` makes it `Exited` with code 143
/// (SIGTERM via init); [`set_exited`](Self::set_exited) simulates the container dying on its own.
/// Failures injected with [`fail_next`](Self::fail_next) are returned (after the call is recorded)
/// instead of performing the operation.
#[derive(Debug, Clone, Default)]
pub struct FakeRuntime {
    inner: Arc<Mutex<Inner>>,
    changed: Arc<Notify>,
}

/// Exit code of a container stopped through `stop_container` in the fake.
pub const FAKE_STOP_EXIT_CODE: i64 = 143;

impl FakeRuntime {
    pub fn new() -> Self {
        let f = Self::default();
        f.lock().info = EngineInfo {
            engine: "fake".into(),
            version: "0.0.0".into(),
            api_version: "1.41".into(),
            os: "linux".into(),
            arch: "amd64".into(),
            kernel_version: String::new(),
            cgroup_driver: "cgroupfs".into(),
            cgroup_version: "1".into(),
            default_runtime: "runc".into(),
        };
        f
    }

    fn lock(&self) -> MutexGuard<'_, Inner> {
        // A panic while holding the lock in one test thread must not cascade.
        berth_domain::sync::lock(&self.inner)
    }

    /// Every call so far, in order.
    pub fn calls(&self) -> Vec<Call> {
        self.lock().calls.clone()
    }

    /// Calls of one operation (see [`Call::op`]).
    pub fn calls_of(&self, op: &str) -> Vec<Call> {
        self.lock()
            .calls
            .iter()
            .filter(|c| c.op() == op)
            .cloned()
            .collect()
    }

    pub fn clear_calls(&self) {
        self.lock().calls.clear();
    }

    /// Make the next call of `op` fail with `err` (queued: several calls queue several failures).
    pub fn fail_next(&self, op: &str, err: RuntimeError) {
        self.lock()
            .failures
            .entry(op.to_string())
            .or_default()
            .push_back(err);
    }

    /// While set, every call fails with [`RuntimeError::Unreachable`].
    pub fn set_unreachable(&self, unreachable: bool) {
        self.lock().unreachable = unreachable;
    }

    /// Make `create_container` with this image fail with `ImageMissing` and `image_exists` false.
    pub fn set_missing_image(&self, reference: &str) {
        self.lock().missing_images.insert(reference.to_string());
    }

    /// Undo [`set_missing_image`](Self::set_missing_image).
    pub fn add_image(&self, reference: &str) {
        self.lock().missing_images.remove(reference);
    }

    /// Simulate the container's main process exiting on its own.
    pub fn set_exited(&self, id_or_name: &str, exit_code: i64) -> bool {
        let ok = {
            let mut g = self.lock();
            match find_id(&g, id_or_name) {
                Some(id) => {
                    if let Some(c) = g.containers.get_mut(&id) {
                        c.status.state = ContainerState::Exited;
                        c.status.exit_code = Some(exit_code);
                        c.status.pid = None;
                        c.status.finished_at = Some(berth_domain::Timestamp::now().to_string());
                    }
                    true
                }
                None => false,
            }
        };
        self.changed.notify_waiters();
        ok
    }

    /// Force a state (e.g. `Paused`, `Dead`) on a container.
    pub fn set_state(&self, id_or_name: &str, state: ContainerState) -> bool {
        let ok = {
            let mut g = self.lock();
            g.next += 1;
            let pid = fake_pid(g.next);
            let id = find_id(&g, id_or_name);
            match id.and_then(|id| g.containers.get_mut(&id)) {
                Some(c) => {
                    if !state.is_active() {
                        c.status.pid = None;
                    } else if c.status.pid.is_none() {
                        c.status.pid = Some(pid);
                    }
                    c.status.state = state;
                    true
                }
                None => false,
            }
        };
        self.changed.notify_waiters();
        ok
    }

    /// Set `oom_killed` as a Docker engine would report it.
    pub fn set_oom_killed(&self, id_or_name: &str, oom: bool) {
        let mut g = self.lock();
        if let Some(id) = find_id(&g, id_or_name) {
            if let Some(c) = g.containers.get_mut(&id) {
                c.status.oom_killed = oom;
            }
        }
    }

    /// Make the container disappear without a recorded call (deleted behind berth's back).
    pub fn vanish_container(&self, id_or_name: &str) -> bool {
        let removed = {
            let mut g = self.lock();
            find_id(&g, id_or_name)
                .and_then(|id| g.containers.remove(&id))
                .is_some()
        };
        self.changed.notify_waiters();
        removed
    }

    /// Make a volume disappear without a recorded call.
    pub fn vanish_volume(&self, name: &str) -> bool {
        self.lock().volumes.remove(name).is_some()
    }

    /// Insert a container directly (e.g. an orphan the reconciler should find). Returns its id.
    pub fn insert_container(&self, spec: ContainerSpec, state: ContainerState) -> String {
        let mut g = self.lock();
        let id = new_id(&mut g);
        let running = state.is_active();
        let pid = running.then(|| fake_pid(g.next));
        let status = ContainerStatus {
            id: id.clone(),
            name: spec.name.clone(),
            image: spec.image.clone(),
            exit_code: matches!(state, ContainerState::Exited | ContainerState::Dead).then_some(0),
            state,
            oom_killed: false,
            pid,
            started_at: running.then(|| berth_domain::Timestamp::now().to_string()),
            finished_at: None,
            labels: spec.labels.clone(),
        };
        g.containers
            .insert(id.clone(), FakeContainer { spec, status });
        id
    }

    /// Usage returned for a container by `usage`.
    pub fn set_usage(&self, id_or_name: &str, usage: ResourceUsage) {
        let mut g = self.lock();
        if let Some(id) = find_id(&g, id_or_name) {
            g.usage.insert(id, usage);
        }
    }

    /// Current containers.
    pub fn containers(&self) -> Vec<ContainerStatus> {
        self.lock()
            .containers
            .values()
            .map(|c| c.status.clone())
            .collect()
    }

    /// The spec a container was created with.
    pub fn container_spec(&self, id_or_name: &str) -> Option<ContainerSpec> {
        let g = self.lock();
        find_id(&g, id_or_name).and_then(|id| g.containers.get(&id).map(|c| c.spec.clone()))
    }

    /// Current volume names.
    pub fn volumes(&self) -> Vec<String> {
        self.lock().volumes.keys().cloned().collect()
    }

    /// Labels of a volume.
    pub fn volume_labels(&self, name: &str) -> Option<HashMap<String, String>> {
        self.lock().volumes.get(name).cloned()
    }

    /// Record the call and return an injected failure if any.
    fn enter(&self, call: Call) -> Result<MutexGuard<'_, Inner>, RuntimeError> {
        let mut g = self.lock();
        let op = call.op();
        g.calls.push(call);
        if g.unreachable {
            return Err(RuntimeError::unreachable(
                "fake://",
                "fake runtime set unreachable",
            ));
        }
        if let Some(err) = g.failures.get_mut(op).and_then(|q| q.pop_front()) {
            return Err(err);
        }
        Ok(g)
    }
}

fn new_id(g: &mut Inner) -> String {
    g.next += 1;
    format!("{:064x}", 0xfa4e_0000_u64 + g.next)
}

fn fake_pid(n: u64) -> u32 {
    u32::try_from(100_000 + n).unwrap_or(u32::MAX)
}

fn find_id(g: &Inner, id_or_name: &str) -> Option<String> {
    if g.containers.contains_key(id_or_name) {
        return Some(id_or_name.to_string());
    }
    let name = id_or_name.trim_start_matches('/');
    if let Some((id, _)) = g.containers.iter().find(|(_, c)| c.status.name == name) {
        return Some(id.clone());
    }
    if id_or_name.len() >= 6 {
        let mut it = g.containers.keys().filter(|k| k.starts_with(id_or_name));
        if let (Some(id), None) = (it.next(), it.next()) {
            return Some(id.clone());
        }
    }
    None
}

fn label_matches(labels: &HashMap<String, String>, filter: &str) -> bool {
    match filter.split_once('=') {
        Some((k, v)) => labels.get(k).is_some_and(|x| x == v),
        None => labels.contains_key(filter),
    }
}

#[async_trait]
impl Runtime for FakeRuntime {
    async fn info(&self) -> Result<EngineInfo, RuntimeError> {
        let g = self.enter(Call::Info)?;
        Ok(g.info.clone())
    }

    async fn image_exists(&self, reference: &str) -> Result<bool, RuntimeError> {
        let g = self.enter(Call::ImageExists {
            reference: reference.to_string(),
        })?;
        Ok(!g.missing_images.contains(reference))
    }

    async fn ensure_volume(
        &self,
        name: &str,
        labels: &HashMap<String, String>,
    ) -> Result<(), RuntimeError> {
        let mut g = self.enter(Call::EnsureVolume {
            name: name.to_string(),
            labels: labels.clone(),
        })?;
        g.volumes
            .entry(name.to_string())
            .or_insert_with(|| labels.clone());
        Ok(())
    }

    async fn volume_exists(&self, name: &str) -> Result<bool, RuntimeError> {
        let g = self.enter(Call::VolumeExists {
            name: name.to_string(),
        })?;
        Ok(g.volumes.contains_key(name))
    }

    async fn remove_volume(&self, name: &str) -> Result<(), RuntimeError> {
        let mut g = self.enter(Call::RemoveVolume {
            name: name.to_string(),
        })?;
        let in_use = g.containers.values().any(|c| {
            c.spec
                .mounts
                .iter()
                .any(|m| matches!(m, crate::Mount::Volume { name: n, .. } if n == name))
        });
        if in_use {
            return Err(RuntimeError::Conflict(format!("volume {name} is in use")));
        }
        g.volumes.remove(name);
        Ok(())
    }

    async fn create_container(&self, spec: &ContainerSpec) -> Result<String, RuntimeError> {
        let mut g = self.enter(Call::CreateContainer { spec: spec.clone() })?;
        validate_spec(spec, &[])?;
        if g.containers.values().any(|c| c.status.name == spec.name) {
            return Err(RuntimeError::Conflict(format!(
                "the container name \"{}\" is already in use",
                spec.name
            )));
        }
        if g.missing_images.contains(&spec.image) {
            return Err(RuntimeError::ImageMissing(format!(
                "{}: no such image",
                spec.image
            )));
        }
        for m in &spec.mounts {
            if let crate::Mount::Volume { name, .. } = m {
                // Docker creates missing named volumes implicitly.
                g.volumes.entry(name.clone()).or_default();
            }
        }
        let id = new_id(&mut g);
        let status = ContainerStatus {
            id: id.clone(),
            name: spec.name.clone(),
            image: spec.image.clone(),
            state: ContainerState::Created,
            exit_code: None,
            oom_killed: false,
            pid: None,
            started_at: None,
            finished_at: None,
            labels: spec.labels.clone(),
        };
        g.containers.insert(
            id.clone(),
            FakeContainer {
                spec: spec.clone(),
                status,
            },
        );
        Ok(id)
    }

    async fn start_container(&self, id: &str) -> Result<(), RuntimeError> {
        {
            let mut g = self.enter(Call::StartContainer { id: id.to_string() })?;
            let Some(cid) = find_id(&g, id) else {
                return Err(RuntimeError::NotFound(format!("no such container: {id}")));
            };
            g.next += 1;
            let pid = fake_pid(g.next);
            if let Some(c) = g.containers.get_mut(&cid) {
                if c.status.state != ContainerState::Running {
                    c.status.state = ContainerState::Running;
                    c.status.pid = Some(pid);
                    c.status.exit_code = None;
                    c.status.oom_killed = false;
                    c.status.started_at = Some(berth_domain::Timestamp::now().to_string());
                    c.status.finished_at = None;
                }
            }
        }
        self.changed.notify_waiters();
        Ok(())
    }

    async fn stop_container(&self, id: &str, timeout: Duration) -> Result<(), RuntimeError> {
        {
            let mut g = self.enter(Call::StopContainer {
                id: id.to_string(),
                timeout,
            })?;
            let Some(cid) = find_id(&g, id) else {
                return Err(RuntimeError::NotFound(format!("no such container: {id}")));
            };
            if let Some(c) = g.containers.get_mut(&cid) {
                if c.status.state.is_active() {
                    c.status.state = ContainerState::Exited;
                    c.status.exit_code = Some(FAKE_STOP_EXIT_CODE);
                    c.status.pid = None;
                    c.status.finished_at = Some(berth_domain::Timestamp::now().to_string());
                }
            }
        }
        self.changed.notify_waiters();
        Ok(())
    }

    async fn remove_container(&self, id: &str) -> Result<(), RuntimeError> {
        {
            let mut g = self.enter(Call::RemoveContainer { id: id.to_string() })?;
            if let Some(cid) = find_id(&g, id) {
                g.containers.remove(&cid);
                g.usage.remove(&cid);
            }
        }
        self.changed.notify_waiters();
        Ok(())
    }

    async fn inspect_container(
        &self,
        id_or_name: &str,
    ) -> Result<Option<ContainerStatus>, RuntimeError> {
        let g = self.enter(Call::InspectContainer {
            id_or_name: id_or_name.to_string(),
        })?;
        Ok(find_id(&g, id_or_name).and_then(|id| g.containers.get(&id).map(|c| c.status.clone())))
    }

    async fn list_containers(&self, label: &str) -> Result<Vec<ContainerStatus>, RuntimeError> {
        let g = self.enter(Call::ListContainers {
            label: label.to_string(),
        })?;
        Ok(g.containers
            .values()
            .filter(|c| label_matches(&c.status.labels, label))
            .map(|c| c.status.clone())
            .collect())
    }

    async fn list_container_states(
        &self,
        label: &str,
    ) -> Result<Vec<ContainerSummary>, RuntimeError> {
        let g = self.enter(Call::ListContainerStates {
            label: label.to_string(),
        })?;
        Ok(g.containers
            .values()
            .filter(|c| label_matches(&c.status.labels, label))
            .map(|c| ContainerSummary {
                id: c.status.id.clone(),
                state: c.status.state.clone(),
                labels: c.status.labels.clone(),
            })
            .collect())
    }

    async fn wait_container(&self, id: &str) -> Result<i64, RuntimeError> {
        drop(self.enter(Call::WaitContainer { id: id.to_string() })?);
        loop {
            let notified = self.changed.notified();
            tokio::pin!(notified);
            notified.as_mut().enable();
            {
                let g = self.lock();
                let Some(cid) = find_id(&g, id) else {
                    return Err(RuntimeError::NotFound(format!("no such container: {id}")));
                };
                if let Some(c) = g.containers.get(&cid) {
                    if !c.status.state.is_active() {
                        return Ok(c.status.exit_code.unwrap_or(0));
                    }
                }
            }
            notified.await;
        }
    }

    async fn usage(&self, id: &str) -> Result<ResourceUsage, RuntimeError> {
        let g = self.enter(Call::Usage { id: id.to_string() })?;
        let Some(cid) = find_id(&g, id) else {
            return Err(RuntimeError::NotFound(format!("no such container: {id}")));
        };
        let limit = g
            .containers
            .get(&cid)
            .map(|c| u64::try_from(c.spec.memory_bytes).unwrap_or(0))
            .unwrap_or(0);
        Ok(g.usage.get(&cid).copied().unwrap_or(ResourceUsage {
            memory_bytes: 0,
            memory_limit_bytes: limit,
            cpu_percent: 0.0,
            pids: 0,
        }))
    }

    /// Changes the caps of the container's spec (read back with
    /// [`container_spec`](FakeRuntime::container_spec)); a missing container is `NotFound`.
    async fn update_limits(
        &self,
        id: &str,
        limits: &berth_domain::Limits,
    ) -> Result<(), RuntimeError> {
        let mut g = self.enter(Call::UpdateLimits {
            id: id.to_string(),
            limits: *limits,
        })?;
        let Some(cid) = find_id(&g, id) else {
            return Err(RuntimeError::NotFound(format!("no such container: {id}")));
        };
        if let Some(c) = g.containers.get_mut(&cid) {
            c.spec.memory_bytes = limits.memory_bytes;
            c.spec.nano_cpus = limits.nano_cpus;
            c.spec.pids_limit = limits.pids;
        }
        Ok(())
    }

    /// Exit 0 in a running container; `invalid_state`-like engine error otherwise.
    async fn exec_status(&self, id: &str, cmd: &[String]) -> Result<i64, RuntimeError> {
        let g = self.enter(Call::ExecStatus {
            id: id.to_string(),
            cmd: cmd.to_vec(),
        })?;
        let Some(cid) = find_id(&g, id) else {
            return Err(RuntimeError::NotFound(format!("no such container: {id}")));
        };
        match g.containers.get(&cid).map(|c| &c.status.state) {
            Some(ContainerState::Running) => Ok(0),
            _ => Err(RuntimeError::Conflict(format!(
                "container {id} is not running"
            ))),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::Mount;

    fn spec(name: &str) -> ContainerSpec {
        let mut labels = HashMap::new();
        labels.insert("berth.workspace".to_string(), name.to_string());
        ContainerSpec {
            name: name.into(),
            image: "img:1".into(),
            cmd: vec!["sleep".into(), "infinity".into()],
            labels,
            mounts: vec![Mount::Volume {
                name: format!("{name}-home"),
                target: "/home/agent".into(),
            }],
            ..Default::default()
        }
    }

    #[tokio::test]
    async fn lifecycle_and_calls() -> Result<(), RuntimeError> {
        let rt = FakeRuntime::new();
        rt.ensure_volume("ws1-home", &HashMap::new()).await?;
        let id = rt.create_container(&spec("ws1")).await?;
        assert!(matches!(
            rt.create_container(&spec("ws1")).await,
            Err(RuntimeError::Conflict(_))
        ));
        rt.start_container(&id).await?;
        let st = rt
            .inspect_container("ws1")
            .await?
            .ok_or_else(|| RuntimeError::Other("gone".into()))?;
        assert_eq!(st.state, ContainerState::Running);
        assert!(st.pid.is_some());
        assert_eq!(rt.list_containers("berth.workspace=ws1").await?.len(), 1);
        assert_eq!(rt.list_containers("berth.workspace=ws2").await?.len(), 0);
        assert_eq!(rt.list_containers("berth.workspace").await?.len(), 1);

        let waiter = {
            let rt = rt.clone();
            let id = id.clone();
            tokio::spawn(async move { rt.wait_container(&id).await })
        };
        tokio::time::sleep(Duration::from_millis(20)).await;
        assert!(!waiter.is_finished());
        rt.set_exited(&id, 137);
        let code = tokio::time::timeout(Duration::from_secs(2), waiter)
            .await
            .map_err(|_| RuntimeError::Other("wait timed out".into()))?
            .map_err(|e| RuntimeError::Other(e.to_string()))??;
        assert_eq!(code, 137);

        rt.stop_container(&id, Duration::from_secs(1)).await?; // already stopped: ok
        assert!(matches!(
            rt.remove_volume("ws1-home").await,
            Err(RuntimeError::Conflict(_))
        ));
        rt.remove_container(&id).await?;
        rt.remove_container(&id).await?; // idempotent
        assert_eq!(rt.inspect_container(&id).await?, None);
        rt.remove_volume("ws1-home").await?;
        rt.remove_volume("ws1-home").await?;

        let ops: Vec<&str> = rt.calls().iter().map(Call::op).collect();
        assert_eq!(
            ops,
            vec![
                "ensure_volume",
                "create_container",
                "create_container",
                "start_container",
                "inspect_container",
                "list_containers",
                "list_containers",
                "list_containers",
                "wait_container",
                "stop_container",
                "remove_volume",
                "remove_container",
                "remove_container",
                "inspect_container",
                "remove_volume",
                "remove_volume",
            ]
        );
        assert_eq!(
            rt.calls_of("stop_container"),
            vec![Call::StopContainer {
                id: id.clone(),
                timeout: Duration::from_secs(1)
            }]
        );
        Ok(())
    }

    #[tokio::test]
    async fn injected_failures() -> Result<(), RuntimeError> {
        let rt = FakeRuntime::new();
        rt.fail_next(
            "start_container",
            RuntimeError::Engine {
                status: 500,
                message: "boom".into(),
            },
        );
        let id = rt.create_container(&spec("ws2")).await?;
        assert!(matches!(
            rt.start_container(&id).await,
            Err(RuntimeError::Engine { status: 500, .. })
        ));
        rt.start_container(&id).await?; // only the next one failed
        rt.set_missing_image("img:2");
        let mut s = spec("ws3");
        s.image = "img:2".into();
        assert!(!rt.image_exists("img:2").await?);
        assert!(matches!(
            rt.create_container(&s).await,
            Err(RuntimeError::ImageMissing(_))
        ));
        rt.set_unreachable(true);
        assert!(matches!(
            rt.info().await,
            Err(RuntimeError::Unreachable { .. })
        ));
        rt.set_unreachable(false);
        assert_eq!(rt.info().await?.engine, "fake");
        let mut bad = spec("ws4");
        bad.memory_bytes = 0;
        assert!(matches!(
            rt.create_container(&bad).await,
            Err(RuntimeError::InvalidSpec(_))
        ));
        assert!(rt.vanish_container("ws2"));
        assert_eq!(rt.inspect_container("ws2").await?, None);
        Ok(())
    }
}
