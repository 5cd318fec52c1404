//! The engine connection, made on first use and retried until it works, so the server starts
//! (and `berth doctor` can explain) while the engine is still down, and recovers once it is up.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::Duration;

use async_trait::async_trait;
use berth_runtime::{
    ContainerSpec, ContainerStatus, ContainerSummary, DockerRuntime, EngineInfo, ResourceUsage,
    Runtime, RuntimeError,
};

pub struct Engine {
    configured: Option<String>,
    client: Mutex<Option<DockerRuntime>>,
}

impl Engine {
    pub fn new(configured: Option<String>) -> Self {
        Self {
            configured,
            client: Mutex::new(None),
        }
    }

    /// The Docker-API client, connecting now if needed.
    pub fn docker(&self) -> Result<DockerRuntime, RuntimeError> {
        let mut guard = berth_domain::sync::lock(&self.client);
        if let Some(c) = guard.as_ref() {
            return Ok(c.clone());
        }
        let c = DockerRuntime::connect(self.configured.as_deref())?;
        *guard = Some(c.clone());
        Ok(c)
    }

    /// The endpoint for display: the connected one, else what is configured.
    pub fn endpoint(&self) -> String {
        match self.docker() {
            Ok(c) => c.endpoint().to_owned(),
            Err(_) => self
                .configured
                .clone()
                .unwrap_or_else(|| berth_runtime::default_socket_candidates().join(" or ")),
        }
    }
}

#[async_trait]
impl Runtime for Engine {
    async fn info(&self) -> Result<EngineInfo, RuntimeError> {
        self.docker()?.info().await
    }
    async fn image_exists(&self, reference: &str) -> Result<bool, RuntimeError> {
        self.docker()?.image_exists(reference).await
    }
    async fn ensure_volume(
        &self,
        name: &str,
        labels: &HashMap<String, String>,
    ) -> Result<(), RuntimeError> {
        self.docker()?.ensure_volume(name, labels).await
    }
    async fn volume_exists(&self, name: &str) -> Result<bool, RuntimeError> {
        self.docker()?.volume_exists(name).await
    }
    async fn remove_volume(&self, name: &str) -> Result<(), RuntimeError> {
        self.docker()?.remove_volume(name).await
    }
    async fn create_container(&self, spec: &ContainerSpec) -> Result<String, RuntimeError> {
        self.docker()?.create_container(spec).await
    }
    async fn start_container(&self, id: &str) -> Result<(), RuntimeError> {
        self.docker()?.start_container(id).await
    }
    async fn stop_container(&self, id: &str, timeout: Duration) -> Result<(), RuntimeError> {
        self.docker()?.stop_container(id, timeout).await
    }
    async fn remove_container(&self, id: &str) -> Result<(), RuntimeError> {
        self.docker()?.remove_container(id).await
    }
    async fn inspect_container(
        &self,
        id_or_name: &str,
    ) -> Result<Option<ContainerStatus>, RuntimeError> {
        self.docker()?.inspect_container(id_or_name).await
    }
    async fn list_containers(&self, label: &str) -> Result<Vec<ContainerStatus>, RuntimeError> {
        self.docker()?.list_containers(label).await
    }
    async fn list_container_states(
        &self,
        label: &str,
    ) -> Result<Vec<ContainerSummary>, RuntimeError> {
        self.docker()?.list_container_states(label).await
    }
    fn container_events(&self, label: &str) -> berth_runtime::EventStream {
        match self.docker() {
            Ok(d) => d.container_events(label),
            Err(e) => futures_util::StreamExt::boxed(futures_util::stream::once(async { Err(e) })),
        }
    }
    async fn wait_container(&self, id: &str) -> Result<i64, RuntimeError> {
        self.docker()?.wait_container(id).await
    }
    async fn usage(&self, id: &str) -> Result<ResourceUsage, RuntimeError> {
        self.docker()?.usage(id).await
    }
    async fn exec_status(&self, id: &str, cmd: &[String]) -> Result<i64, RuntimeError> {
        self.docker()?.exec_status(id, cmd).await
    }
    async fn download_archive(
        &self,
        id: &str,
        path: &str,
    ) -> Result<berth_runtime::ByteStream, RuntimeError> {
        self.docker()?.download_archive(id, path).await
    }
    async fn upload_archive(
        &self,
        id: &str,
        path: &str,
        tar: futures_util::stream::BoxStream<'static, bytes::Bytes>,
    ) -> Result<(), RuntimeError> {
        self.docker()?.upload_archive(id, path, tar).await
    }
    async fn pause_container(&self, id: &str) -> Result<(), RuntimeError> {
        self.docker()?.pause_container(id).await
    }
    async fn unpause_container(&self, id: &str) -> Result<(), RuntimeError> {
        self.docker()?.unpause_container(id).await
    }
    async fn update_limits(
        &self,
        id: &str,
        limits: &berth_domain::Limits,
    ) -> Result<(), RuntimeError> {
        self.docker()?.update_limits(id, limits).await
    }
}
