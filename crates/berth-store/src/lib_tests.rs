use super::*;

fn name(s: &str) -> Name {
    Name::parse(s).unwrap()
}

async fn new_ws(store: &Store, tenant: &str, n: &str) -> Result<Workspace> {
    let t = store.ensure_tenant(&name(tenant)).await?;
    store
        .insert_workspace(&NewWorkspace {
            id: WorkspaceId::generate(),
            tenant_id: t.id,
            name: name(n),
            image: "img".into(),
            limits: Limits::default(),
            network: "none".into(),
            volume: format!("vol-{tenant}-{n}"),
        })
        .await
}

#[tokio::test]
async fn tenants_are_created_once() {
    let s = Store::open_in_memory().await.unwrap();
    let a = s.ensure_tenant(&name("acme")).await.unwrap();
    let b = s.ensure_tenant(&name("acme")).await.unwrap();
    assert_eq!(a.id, b.id);
}

#[tokio::test]
async fn workspace_names_unique_per_tenant() {
    let s = Store::open_in_memory().await.unwrap();
    let w = new_ws(&s, "acme", "web").await.unwrap();
    assert_eq!(w.state, WorkspaceState::Creating);
    assert_eq!(w.qualified_name(), "acme/web");
    assert!(matches!(
        new_ws(&s, "acme", "web").await,
        Err(StoreError::Conflict(_))
    ));
    // Same name in another tenant is fine, and a bare-name lookup finds both.
    new_ws(&s, "globex", "web").await.unwrap();
    assert_eq!(
        s.find_workspaces_named(&name("web")).await.unwrap().len(),
        2
    );
    assert_eq!(
        s.list_workspaces(Some(&name("acme"))).await.unwrap().len(),
        1
    );
    assert_eq!(s.list_workspaces(None).await.unwrap().len(), 2);
}

#[tokio::test]
async fn state_and_failure_persist() {
    let s = Store::open_in_memory().await.unwrap();
    let w = new_ws(&s, "acme", "web").await.unwrap();
    let f = Failure::new(FailureKind::Vanished, "gone");
    let w2 = s
        .set_state(&w.id, WorkspaceState::Failed, Some(&f))
        .await
        .unwrap();
    assert_eq!(w2.state, WorkspaceState::Failed);
    assert_eq!(w2.failure.as_ref().unwrap().0, f);
    // Moving on keeps the failure as history.
    let w3 = s
        .set_state(&w.id, WorkspaceState::Starting, None)
        .await
        .unwrap();
    assert_eq!(w3.failure.unwrap().0.reason, FailureKind::Vanished);
    s.delete_workspace(&w.id).await.unwrap();
    assert!(matches!(
        s.set_state(&w.id, WorkspaceState::Running, None).await,
        Err(StoreError::NotFound(_))
    ));
}

#[tokio::test]
async fn oom_counter_is_folded_into_total() {
    let s = Store::open_in_memory().await.unwrap();
    let w = new_ws(&s, "acme", "web").await.unwrap();
    assert_eq!(s.observe_oom_counter(&w.id, 0).await.unwrap(), 0);
    assert_eq!(s.observe_oom_counter(&w.id, 2).await.unwrap(), 2);
    assert_eq!(s.observe_oom_counter(&w.id, 2).await.unwrap(), 0);
    assert_eq!(s.observe_oom_counter(&w.id, 3).await.unwrap(), 1);
    let got = s.workspace(&w.id).await.unwrap();
    assert_eq!(got.oom_kills, 3);
    assert_eq!(got.failure.unwrap().0.reason, FailureKind::Oom);
    // New container: the counter restarts from zero.
    s.set_container(&w.id, Some("c2")).await.unwrap();
    assert_eq!(s.observe_oom_counter(&w.id, 1).await.unwrap(), 1);
    assert_eq!(s.workspace(&w.id).await.unwrap().oom_kills, 4);
}

#[tokio::test]
async fn tokens_by_hash() {
    let s = Store::open_in_memory().await.unwrap();
    assert_eq!(s.count_tokens().await.unwrap(), 0);
    let t = s.insert_token("bootstrap", "abc", "admin").await.unwrap();
    assert_eq!(s.count_tokens().await.unwrap(), 1);
    assert_eq!(s.find_token("abc").await.unwrap().unwrap().id, t.id);
    assert!(s.find_token("abd").await.unwrap().is_none());
    assert!(matches!(
        s.insert_token("again", "abc", "admin").await,
        Err(StoreError::Conflict(_))
    ));
}

#[tokio::test]
async fn audit_newest_first_and_filtered() {
    let s = Store::open_in_memory().await.unwrap();
    for (i, target) in ["acme/a", "acme/b", "acme/a"].iter().enumerate() {
        s.append_audit(&AuditRecord {
            actor: "tok_1".into(),
            action: format!("act{i}"),
            target: (*target).into(),
            result: "ok".into(),
            detail: None,
        })
        .await
        .unwrap();
    }
    let all = s.list_audit(10, None).await.unwrap();
    assert_eq!(
        all.iter()
            .map(|e| e.record.action.as_str())
            .collect::<Vec<_>>(),
        ["act2", "act1", "act0"]
    );
    let a = s.list_audit(10, Some("acme/a")).await.unwrap();
    assert_eq!(a.len(), 2);
    assert_eq!(s.list_audit(1, None).await.unwrap().len(), 1);
}

#[tokio::test]
async fn file_database_survives_reopen() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("berth.db");
    let s = Store::open(&path).await.unwrap();
    let w = new_ws(&s, "acme", "web").await.unwrap();
    s.set_meta("server_id", "abc").await.unwrap();
    s.close().await;
    let s = Store::open(&path).await.unwrap();
    assert_eq!(s.workspace(&w.id).await.unwrap().name.as_str(), "web");
    assert_eq!(s.meta("server_id").await.unwrap().as_deref(), Some("abc"));
}
