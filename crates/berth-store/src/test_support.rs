//! Helpers the store's own tests share (the server's tests have the same row in its
//! `test_support::workspace_row`; the store cannot use that one, it sits below the server).

use berth_domain::{Limits, Name, WorkspaceId};

use crate::{NewWorkspace, Store};

/// A workspace `tenant/name` in `store` only (no container), in state `creating`, with 1 GiB,
/// one CPU and no network.
pub(crate) async fn workspace_row(store: &Store, tenant: &str, name: &str) -> WorkspaceId {
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
