//! Helpers the store's own tests share, and the server's tests through the `test-support`
//! feature.
#![allow(clippy::unwrap_used)]

use berth_domain::{Limits, Name, WorkspaceId};

use crate::{NewWorkspace, Store};

/// A workspace `tenant/name` in `store` only (no container), in state `creating`, with 1 GiB,
/// one CPU and no network.
pub async fn workspace_row(store: &Store, tenant: &str, name: &str) -> WorkspaceId {
    let t = store
        .ensure_tenant(&Name::parse(tenant).unwrap())
        .await
        .unwrap();
    let id = WorkspaceId::generate();
    store
        .insert_workspace(&NewWorkspace {
            id: id.clone(),
            tenant_id: t.id,
            name: Name::parse(name).unwrap(),
            image: "img".into(),
            limits: Limits {
                memory_bytes: 1 << 30,
                nano_cpus: 1_000_000_000,
                pids: 100,
            },
            network: "none".into(),
            volume: format!("v-{name}"),
            mcp_servers: Vec::new(),
        })
        .await
        .unwrap();
    id
}
