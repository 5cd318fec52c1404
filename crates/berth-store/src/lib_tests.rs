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
            mcp_servers: Vec::new(),
        })
        .await
}

/// Timestamps an older berth stored load: another offset or precision in berth's form, and text
/// that is no RFC 3339 time at all as it was stored, never a failed row.
#[tokio::test]
async fn legacy_timestamps_load() {
    let s = Store::open_in_memory().await.unwrap();
    let w = new_ws(&s, "acme", "web").await.unwrap();
    assert_eq!(
        w.created_at.as_str().len(),
        "2026-12-04T05:06:07.123Z".len()
    );
    sqlx::query("UPDATE workspaces SET created_at = ?, updated_at = ? WHERE id = ?")
        .bind("2026-12-04T07:06:07.12+02:00")
        .bind("1733288767")
        .bind(w.id.as_str())
        .execute(&s.pool)
        .await
        .unwrap();
    sqlx::query("UPDATE tenants SET created_at = '' WHERE name = 'acme'")
        .execute(&s.pool)
        .await
        .unwrap();
    let w = s.find_workspace_by_id(&w.id).await.unwrap().unwrap();
    assert_eq!(w.created_at, "2026-12-04T05:06:07.120Z");
    assert_eq!(w.updated_at, "1733288767");
    assert_eq!(w.updated_at.instant(), None);
    let t = s.ensure_tenant(&name("acme")).await.unwrap();
    assert_eq!(t.created_at, "");
}

#[tokio::test]
async fn tenants_are_created_once() {
    let s = Store::open_in_memory().await.unwrap();
    let a = s.ensure_tenant(&name("acme")).await.unwrap();
    let b = s.ensure_tenant(&name("acme")).await.unwrap();
    assert_eq!(a.id, b.id);
}

#[tokio::test]
async fn workspace_mcp_servers_round_trip() {
    let s = Store::open_in_memory().await.unwrap();
    assert!(new_ws(&s, "acme", "plain")
        .await
        .unwrap()
        .mcp_servers
        .is_empty());
    let t = s.ensure_tenant(&name("acme")).await.unwrap();
    let servers = vec![McpServer {
        name: "notes".into(),
        transport: berth_domain::McpTransport::Stdio {
            command: "node".into(),
            args: vec!["/srv/notes.js".into()],
            env: [("TAG".to_string(), "x".to_string())].into(),
        },
    }];
    let w = s
        .insert_workspace(&NewWorkspace {
            id: WorkspaceId::generate(),
            tenant_id: t.id,
            name: name("mcp"),
            image: "img".into(),
            limits: Limits::default(),
            network: "none".into(),
            volume: "vol-mcp".into(),
            mcp_servers: servers.clone(),
        })
        .await
        .unwrap();
    assert_eq!(w.mcp_servers, servers);
    assert_eq!(s.workspace(&w.id).await.unwrap().mcp_servers, servers);
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
            actor_name: Some("alice".into()),
            actor_role: Some("member".into()),
            actor_tenant: Some("acme".into()),
            tenant: Some(if i == 1 { "globex" } else { "acme" }.into()),
        })
        .await
        .unwrap();
    }
    let all = s.list_audit(10, None, None).await.unwrap();
    assert_eq!(all[0].record.actor_name.as_deref(), Some("alice"));
    assert_eq!(all[0].record.actor_role.as_deref(), Some("member"));
    assert_eq!(all[0].record.actor_tenant.as_deref(), Some("acme"));
    let acme = s.list_audit(10, None, Some("acme")).await.unwrap();
    assert_eq!(acme.len(), 2);
    assert!(s
        .list_audit(10, None, Some("initech"))
        .await
        .unwrap()
        .is_empty());
    assert_eq!(
        all.iter()
            .map(|e| e.record.action.as_str())
            .collect::<Vec<_>>(),
        ["act2", "act1", "act0"]
    );
    let a = s.list_audit(10, Some("acme/a"), None).await.unwrap();
    assert_eq!(a.len(), 2);
    assert_eq!(s.list_audit(1, None, None).await.unwrap().len(), 1);
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

#[tokio::test]
async fn templates_are_versioned_and_provisions_follow_their_workspace() {
    let s = Store::open_in_memory().await.unwrap();
    assert_eq!(
        s.put_template("acme", "web", "a = 1")
            .await
            .unwrap()
            .revision,
        1
    );
    assert_eq!(
        s.put_template("acme", "web", "a = 2")
            .await
            .unwrap()
            .revision,
        2
    );
    assert_eq!(
        s.put_template("other", "web", "b").await.unwrap().revision,
        1
    );
    let newest = s.template("acme", "web", None).await.unwrap().unwrap();
    assert_eq!((newest.revision, newest.source.as_str()), (2, "a = 2"));
    let first = s.template("acme", "web", Some(1)).await.unwrap().unwrap();
    assert_eq!(first.source, "a = 1");
    assert!(s.template("acme", "web", Some(3)).await.unwrap().is_none());
    let listed = s.list_templates(Some("acme")).await.unwrap();
    assert_eq!(listed.len(), 1);
    assert_eq!(listed[0].revision, 2);
    assert_eq!(s.list_templates(None).await.unwrap().len(), 2);

    let w = new_ws(&s, "acme", "app").await.unwrap();
    let step = |name: &str| crate::NewStep {
        kind: "setup".into(),
        name: name.into(),
        input_hash: format!("h-{name}"),
        state: "pending".into(),
    };
    s.put_provision(&w.id, "web", 2, "{}", "{}", &[step("a"), step("b")])
        .await
        .unwrap();
    s.start_step(&w.id, 1).await.unwrap();
    s.finish_step(&w.id, 1, "failed", "boom", Some(2), Some("exit 2"))
        .await
        .unwrap();
    let p = s.provision(&w.id).await.unwrap().unwrap();
    assert_eq!(p.steps.len(), 2);
    assert_eq!(p.steps[1].state, "failed");
    assert_eq!(p.steps[1].log, "boom");
    assert_eq!(s.template_users("acme", "web").await.unwrap(), ["acme/app"]);
    assert!(s.delete_template("acme", "web").await.unwrap());
    assert!(s.template("acme", "web", None).await.unwrap().is_none());
    s.delete_workspace(&w.id).await.unwrap();
    assert!(s.provision(&w.id).await.unwrap().is_none());
}

fn sighting(host: &str, port: u16) -> AccessSighting {
    let at = Timestamp::now();
    AccessSighting {
        target: AccessTarget::Egress {
            host: host.into(),
            port,
        },
        source: "denied",
        method: Some("GET".into()),
        path: Some("/x".into()),
        rule: None,
        task_id: None,
        reason: None,
        count: 1,
        first_seen: at.clone(),
        last_seen: at,
    }
}

#[tokio::test]
async fn access_requests_dedup_cap_decide_and_expire() {
    let s = Store::open_in_memory().await.unwrap();
    let w = new_ws(&s, "acme", "web").await.unwrap();
    let first = s
        .record_access(&w.id, &sighting("a.test", 443))
        .await
        .unwrap();
    let AccessRecorded::Created(id) = first else {
        panic!("{first:?}")
    };
    let mut again = sighting("a.test", 443);
    again.count = 4;
    again.path = Some("y".repeat(100_000));
    assert_eq!(
        s.record_access(&w.id, &again).await.unwrap(),
        AccessRecorded::Repeated(id.clone())
    );
    let r = s.access_request(&w.id, id.as_str()).await.unwrap().unwrap();
    assert_eq!((r.count, r.state.as_str()), (5, "open"));
    assert_eq!(r.path.unwrap().len(), access::MAX_TEXT);
    assert_eq!(r.workspace, "acme/web");
    // The trigger queued a notification of the new request only.
    let kinds: Vec<String> =
        sqlx::query_scalar("SELECT kind FROM notify_events WHERE kind = 'access.request'")
            .fetch_all(&s.pool)
            .await
            .unwrap();
    assert_eq!(kinds.len(), 1);

    // The cap: past MAX_OPEN_PER_WORKSPACE open requests, new ones are not recorded.
    for i in 0..access::MAX_OPEN_PER_WORKSPACE + 20 {
        s.record_access(&w.id, &sighting(&format!("h{i}.test"), 443))
            .await
            .unwrap();
    }
    let open = s
        .access_requests(Some("acme"), Some(&w.id), Some("open"), 1000)
        .await
        .unwrap();
    assert_eq!(open.len() as i64, access::MAX_OPEN_PER_WORKSPACE);
    assert_eq!(
        s.record_access(&w.id, &sighting("new.test", 443))
            .await
            .unwrap(),
        AccessRecorded::Capped
    );
    // Another tenant sees none of them.
    assert!(s
        .access_requests(Some("other"), None, None, 10)
        .await
        .unwrap()
        .is_empty());

    // Approve once: a grant until its expiry, then expired.
    let past = test_ts("2000-01-01T00:00:00.000Z");
    let d = AccessDecision {
        state: "approved",
        scope: Some("once"),
        template: None,
        granted_rule: Some("allow a.test:443".into()),
        expires_at: Some(crate::test_ts("2999-01-01T00:00:00.000Z")),
        decided_by: "alice (owner)".into(),
        note: None,
    };
    assert!(s.decide_access(id.as_str(), &d).await.unwrap());
    assert!(
        !s.decide_access(id.as_str(), &d).await.unwrap(),
        "decided once"
    );
    let grants = s.access_grants(&w.id, &Timestamp::now()).await.unwrap();
    assert_eq!(grants.len(), 1);
    assert_eq!(grants[0].rule, "allow a.test:443");
    assert!(s.expire_access_grants(&past).await.unwrap().is_empty());
    assert!(s
        .access_grants(&w.id, &crate::test_ts("3000-01-01T00:00:00.000Z"))
        .await
        .unwrap()
        .is_empty());
    assert_eq!(
        s.expire_access_grants(&crate::test_ts("3000-01-01T00:00:00.000Z"))
            .await
            .unwrap(),
        vec![w.id.clone()]
    );
    // The next denial opens a new request.
    let next = s
        .record_access(&w.id, &sighting("a.test", 443))
        .await
        .unwrap();
    assert!(matches!(
        next,
        AccessRecorded::Capped | AccessRecorded::Created(_)
    ));

    // Comments are capped.
    for i in 0..access::MAX_COMMENTS {
        assert!(s
            .add_access_comment(id.as_str(), "bob", &format!("c{i}"))
            .await
            .unwrap());
    }
    assert!(!s
        .add_access_comment(id.as_str(), "bob", "one more")
        .await
        .unwrap());
    s.delete_workspace(&w.id).await.unwrap();
    assert!(s
        .access_requests(None, None, None, 10)
        .await
        .unwrap()
        .is_empty());
}

#[tokio::test]
async fn a_denied_access_request_absorbs_its_repeats() {
    let s = Store::open_in_memory().await.unwrap();
    let w = new_ws(&s, "acme", "web").await.unwrap();
    let AccessRecorded::Created(id) = s
        .record_access(&w.id, &sighting("a.test", 443))
        .await
        .unwrap()
    else {
        panic!()
    };
    let d = AccessDecision {
        state: "denied",
        scope: None,
        template: None,
        granted_rule: None,
        expires_at: None,
        decided_by: "alice (owner)".into(),
        note: Some("no".into()),
    };
    assert!(s.decide_access(id.as_str(), &d).await.unwrap());
    assert_eq!(
        s.record_access(&w.id, &sighting("a.test", 443))
            .await
            .unwrap(),
        AccessRecorded::Repeated(id.clone())
    );
    let r = s.access_request(&w.id, id.as_str()).await.unwrap().unwrap();
    assert_eq!((r.state.as_str(), r.count), ("denied", 2));
}
