//! Pieces the server's unit tests share.

use berth_runtime::image::{BuildOutcome, BuildProgress};
use berth_runtime::RuntimeError;
/// A workspace row in the store only (no container): the store's own test helper.
pub use berth_store::test_support::workspace_row;

use crate::state::ImageBuilder;

/// An image builder for tests that never build: a fixed tag, every build an error.
pub struct NoImages;

#[async_trait::async_trait]
impl ImageBuilder for NoImages {
    fn tag(&self) -> String {
        "localhost/berth-workspace:test".into()
    }
    async fn build(
        &self,
        _force: bool,
        _progress: tokio::sync::mpsc::UnboundedSender<BuildProgress>,
    ) -> Result<BuildOutcome, RuntimeError> {
        Err(RuntimeError::Other("no builds in unit tests".into()))
    }
}

/// An engine connection at a socket in `dir` that does not exist (unit tests run on the fake
/// runtime; what needs the real engine, like building a derived image, fails as without one).
pub fn no_engine(dir: &std::path::Path) -> std::sync::Arc<crate::engine::Engine> {
    let socket = dir.join("no-engine.sock");
    std::sync::Arc::new(crate::engine::Engine::new(Some(format!(
        "unix://{}",
        socket.display()
    ))))
}

/// The admin token [`route_state`] installs.
pub const TOKEN: &str = "berth_route_test_token_0123456789";

/// A server state for route tests, over the fake runtime and an in-memory store with
/// [`TOKEN`] as an admin token, with the egress proxy and the secrets vault started in `dir`.
pub async fn route_state(
    dir: &std::path::Path,
) -> (
    std::sync::Arc<crate::state::AppState>,
    std::sync::Arc<berth_runtime::FakeRuntime>,
) {
    route_state_with(dir, crate::config::ServerArgs::default()).await
}

/// [`route_state`] with these flags (`data_dir` is set to `dir`).
pub async fn route_state_with(
    dir: &std::path::Path,
    args: crate::config::ServerArgs,
) -> (
    std::sync::Arc<crate::state::AppState>,
    std::sync::Arc<berth_runtime::FakeRuntime>,
) {
    let config = crate::config::ServerArgs {
        data_dir: Some(dir.to_owned()),
        ..args
    }
    .resolve()
    .unwrap();
    let store = berth_store::Store::open_in_memory().await.unwrap();
    store
        .insert_token("test", &crate::auth::hash_token(TOKEN), "admin")
        .await
        .unwrap();
    let fake = std::sync::Arc::new(berth_runtime::FakeRuntime::new());
    let state = crate::state::AppState::new(
        config,
        store.clone(),
        crate::state::Host::new(
            fake.clone(),
            std::sync::Arc::new(NoImages),
            no_engine(dir),
            "t0000".into(),
            crate::binary::StagedBinary {
                path: dir.join("berth-bin"),
                hash: "hash1".into(),
            },
        ),
    )
    .unwrap();
    (std::sync::Arc::new(state), fake)
}

/// One request through `app` (JSON body, bearer `token` if any): the status and the JSON answer
/// (`Null` when empty).
pub async fn call_router(
    app: &axum::Router,
    token: Option<&str>,
    method: &str,
    path: &str,
    body: Option<&str>,
) -> (u16, serde_json::Value) {
    use tower::ServiceExt;
    let mut req = axum::http::Request::builder()
        .method(method)
        .uri(format!("/api/v1{path}"))
        .header("content-type", "application/json");
    if let Some(t) = token {
        req = req.header("authorization", format!("Bearer {t}"));
    }
    let req = req
        .body(axum::body::Body::from(body.unwrap_or_default().to_owned()))
        .unwrap();
    let resp = app.clone().oneshot(req).await.unwrap();
    let status = resp.status().as_u16();
    let bytes = axum::body::to_bytes(resp.into_body(), usize::MAX)
        .await
        .unwrap();
    let v = if bytes.is_empty() {
        serde_json::Value::Null
    } else {
        serde_json::from_slice(&bytes).unwrap()
    };
    (status, v)
}

/// A [`route_state`] in a temporary directory: what service and route tests start from.
pub struct TestState {
    pub state: std::sync::Arc<crate::state::AppState>,
    pub fake: std::sync::Arc<berth_runtime::FakeRuntime>,
    _dir: tempfile::TempDir,
}

impl TestState {
    pub async fn new() -> Self {
        let dir = tempfile::tempdir().unwrap();
        let (state, fake) = route_state(dir.path()).await;
        Self {
            state,
            fake,
            _dir: dir,
        }
    }

    /// A workspace `tenant/name` in the store only (no container), in state `creating`.
    pub async fn workspace_row(&self, tenant: &str, name: &str) -> berth_domain::WorkspaceId {
        workspace_row(&self.state.store, tenant, name).await
    }
}
