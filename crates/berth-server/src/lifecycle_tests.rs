//! Lifecycle and reconciler over the in-tree fake runtime, with a real workspace daemon serving
//! the channel socket (so readiness is the real handshake).

use std::sync::Arc;
use std::time::Duration;

use berth_runtime::FakeRuntime;
use berth_store::Store;

use super::*;
use crate::binary::StagedBinary;
use crate::test_support::NoImages;

struct Harness {
    state: Arc<AppState>,
    fake: Arc<FakeRuntime>,
    _dir: tempfile::TempDir,
    daemons: tokio::task::JoinHandle<()>,
}

impl Drop for Harness {
    fn drop(&mut self) {
        self.daemons.abort();
    }
}

/// `serve_daemons`: start a real daemon on every channel directory that appears, like a
/// container start would.
async fn harness(serve_daemons: bool) -> Harness {
    let dir = tempfile::tempdir().unwrap();
    let fake = Arc::new(FakeRuntime::new());
    let config = crate::config::ServerArgs {
        data_dir: Some(dir.path().to_owned()),
        default_memory: Some("256m".into()),
        default_pids: Some(256),
        default_network: Some("none".into()),
        ..Default::default()
    }
    .resolve()
    .unwrap();
    let bin = dir.path().join("berth-bin");
    std::fs::write(&bin, b"bin").unwrap();
    let mut state = AppState::new(
        config,
        Store::open_in_memory().await.unwrap(),
        crate::state::Host::new(
            fake.clone(),
            Arc::new(NoImages),
            crate::test_support::no_engine(dir.path()),
            "t0000".into(),
            StagedBinary {
                path: bin,
                hash: "hash1".into(),
            },
        ),
    )
    .unwrap();
    state.host.daemon_ready_timeout = Duration::from_millis(500);
    let root = dir.path().join("workspaces");
    let daemons = tokio::spawn(async move {
        if !serve_daemons {
            return;
        }
        // A (re)started container gets a fresh daemon: whenever a channel has no socket.
        let mut spawned: std::collections::HashMap<std::path::PathBuf, std::time::Instant> =
            Default::default();
        loop {
            if let Ok(entries) = std::fs::read_dir(&root) {
                for e in entries.flatten() {
                    let chan = e.path().join("chan").join(berth_daemon::DAEMON_DIR);
                    let recent = spawned
                        .get(&chan)
                        .is_some_and(|t| t.elapsed() < Duration::from_millis(300));
                    if chan.is_dir() && !chan.join("daemon.sock").exists() && !recent {
                        spawned.insert(chan.clone(), std::time::Instant::now());
                        let opts = berth_daemon::server::DaemonOptions {
                            socket: chan.join("daemon.sock"),
                            ..Default::default()
                        };
                        tokio::spawn(berth_daemon::server::run_until(
                            opts,
                            std::future::pending(),
                        ));
                    }
                }
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    });
    Harness {
        state: Arc::new(state),
        fake,
        _dir: dir,
        daemons,
    }
}

fn spec(state: &AppState, name: &str) -> CreateSpec {
    CreateSpec::from_request(
        state,
        &berth_api::CreateWorkspace {
            name: name.into(),
            tenant: Some("acme".into()),
            ..Default::default()
        },
    )
    .unwrap()
}

#[tokio::test]
async fn create_builds_a_hardened_container_and_waits_for_the_daemon() {
    let h = harness(true).await;
    let w = create(&h.state, spec(&h.state, "web")).await.unwrap();
    assert_eq!(w.state, WorkspaceState::Running);
    assert_eq!(w.volume, "berth-t0000-acme-web-home");
    let c = h
        .fake
        .container_spec(w.container_id.as_deref().unwrap())
        .unwrap();
    assert_eq!(c.name, "berth-t0000-acme-web");
    assert_eq!(c.user, "1000:1000");
    assert!(c.init);
    assert!(c.cap_add.is_empty());
    assert_eq!(c.network_mode, "none");
    assert_eq!(c.memory_bytes, 256 << 20);
    assert_eq!(
        c.labels.get(LABEL_BINARY).map(String::as_str),
        Some("hash1")
    );
    // Exactly four mounts: home volume, the daemon binary read-only, its own channel read-only
    // and, writable, only the daemon's directory in it.
    assert_eq!(c.mounts.len(), 4);
    assert!(c.mounts.iter().any(|m| matches!(m, Mount::Bind { target, read_only: true, .. } if target == DAEMON_PATH_IN_WORKSPACE)));
    let chan = h.state.channel_dir(&w.id);
    assert!(c.mounts.iter().any(|m| matches!(m, Mount::Bind { source, target, read_only: true } if *source == chan && target == CHANNEL_IN_WORKSPACE)));
    let daemon_dir = chan.join(berth_daemon::DAEMON_DIR);
    assert!(c.mounts.iter().any(|m| matches!(m, Mount::Bind { source, target, read_only: false } if *source == daemon_dir && target == "/run/berth/daemon")));
}

#[tokio::test]
async fn create_attaches_egress_templates_in_order_and_removal_forgets_them() {
    let h = harness(true).await;
    h.state
        .store
        .create_egress_template("acme", "ci", None, &["allow ci.test".into()])
        .await
        .unwrap();
    let mut s = spec(&h.state, "web");
    s.egress_templates = vec![Name::parse("ci").unwrap(), Name::parse("npm").unwrap()];
    let w = create(&h.state, s).await.unwrap();
    assert_eq!(
        h.state
            .store
            .workspace_egress_templates(&w.id)
            .await
            .unwrap(),
        ["ci", "npm"]
    );
    remove(&h.state, "acme/web", false).await.unwrap();
    assert!(h
        .state
        .store
        .egress_template_users(Some("acme"), "ci")
        .await
        .unwrap()
        .is_empty());
}

#[tokio::test]
async fn create_rolls_back_when_the_engine_fails() {
    let h = harness(true).await;
    h.fake
        .fail_next("create_container", RuntimeError::Other("boom".into()));
    let err = create(&h.state, spec(&h.state, "web")).await.unwrap_err();
    assert_eq!(err.code, ErrorCode::EngineError);
    assert!(h
        .state
        .store
        .list_workspaces(None)
        .await
        .unwrap()
        .is_empty());
    assert!(
        h.fake.volumes().is_empty(),
        "volume created for this workspace is removed"
    );
    assert!(!h
        .state
        .config
        .data_dir
        .join("workspaces")
        .read_dir()
        .unwrap()
        .any(|_| true));
    // The name is free again.
    create(&h.state, spec(&h.state, "web")).await.unwrap();
}

#[tokio::test]
async fn create_rolls_back_when_the_daemon_never_answers_but_keeps_an_old_volume() {
    let h = harness(false).await;
    use berth_runtime::Runtime;
    h.fake
        .ensure_volume("berth-t0000-acme-old-home", &Default::default())
        .await
        .unwrap();
    let err = create(&h.state, spec(&h.state, "old")).await.unwrap_err();
    assert_eq!(err.code, ErrorCode::DaemonUnavailable, "{err}");
    assert!(h
        .state
        .store
        .list_workspaces(None)
        .await
        .unwrap()
        .is_empty());
    assert!(h.fake.containers().is_empty());
    assert_eq!(
        h.fake.volumes(),
        vec!["berth-t0000-acme-old-home".to_owned()]
    );
    assert!(h.fake.calls_of("remove_volume").is_empty());
}

#[tokio::test]
async fn creates_ask_the_engine_its_kind_once() {
    let h = harness(true).await;
    // An engine that cannot answer is asked again at the next create.
    h.fake.fail_next(
        "info",
        RuntimeError::Engine {
            status: 500,
            message: "boom".into(),
        },
    );
    create(&h.state, spec(&h.state, "one")).await.unwrap();
    create(&h.state, spec(&h.state, "two")).await.unwrap();
    create(&h.state, spec(&h.state, "three")).await.unwrap();
    // Podman answers /info slowly and one call at a time: asked on every create, it serialised
    // parallel creates (docs/benchmarks.md, workspace start).
    assert_eq!(h.fake.calls_of("info").len(), 2);
}

#[tokio::test]
async fn missing_image_touches_nothing() {
    let h = harness(true).await;
    h.fake.set_missing_image("localhost/berth-workspace:test");
    let err = create(&h.state, spec(&h.state, "web")).await.unwrap_err();
    assert_eq!(err.code, ErrorCode::ImageMissing);
    let ops: Vec<_> = h.fake.calls().iter().map(|c| c.op()).collect();
    assert_eq!(ops, ["image_exists"]);
}

#[tokio::test]
async fn stop_start_reuses_the_container_unless_the_daemon_build_changed() {
    let mut h = harness(true).await;
    let w = create(&h.state, spec(&h.state, "web")).await.unwrap();
    let first = w.container_id.clone().unwrap();
    let w = stop(&h.state, "acme/web").await.unwrap();
    assert_eq!(w.state, WorkspaceState::Stopped);
    // Stopping twice is fine; starting a running one too.
    stop(&h.state, "acme/web").await.unwrap();
    let w = start(&h.state, "acme/web").await.unwrap();
    assert_eq!(w.state, WorkspaceState::Running);
    assert_eq!(w.container_id.as_deref(), Some(first.as_str()));
    assert_eq!(h.fake.calls_of("create_container").len(), 1);

    // A new server build: the next start recreates the container with the new daemon.
    stop(&h.state, "acme/web").await.unwrap();
    Arc::get_mut(&mut h.state).unwrap().host.binary.hash = "hash2".into();
    let w = start(&h.state, "acme/web").await.unwrap();
    assert_eq!(w.state, WorkspaceState::Running);
    let second = w.container_id.clone().unwrap();
    assert_ne!(second, first);
    assert!(
        h.fake.container_spec(&first).is_none(),
        "old container removed"
    );
    let c = h.fake.container_spec(&second).unwrap();
    assert_eq!(
        c.labels.get(LABEL_BINARY).map(String::as_str),
        Some("hash2")
    );
    assert_eq!(h.fake.volumes(), vec![w.volume.clone()], "same home volume");
}

/// `PATCH /workspaces/{ws}`'s caps: live through the engine's update where it can; where it
/// cannot, stored and applied by the next start, which makes the container anew (and only
/// then: an unchanged workspace keeps its container).
#[tokio::test]
async fn update_applies_caps_live_or_at_the_next_start() {
    let h = harness(true).await;
    let w = create(&h.state, spec(&h.state, "web")).await.unwrap();
    let first = w.container_id.clone().unwrap();
    let admin = crate::auth::Actor {
        id: "tok_a".into(),
        name: "root".into(),
        role: berth_domain::Role::Admin,
        tenant: None,
    };
    let req = |v: serde_json::Value| {
        serde_json::from_value::<berth_api::UpdateWorkspace>(v).map_err(ApiError::internal)
    };
    let u = update_workspace(
        &h.state,
        &admin,
        "acme/web",
        req(serde_json::json!({"memory": "512m"})),
    )
    .await
    .unwrap();
    assert_eq!(u.changed, ["memory"]);
    assert!(u.pending_restart.is_empty(), "{u:?}");
    assert_eq!(
        h.fake.container_spec(&first).unwrap().memory_bytes,
        512 << 20
    );

    // An engine that cannot: stored, pending, and the reason given.
    h.fake.fail_next(
        "update_limits",
        RuntimeError::NotFound("no such route".into()),
    );
    let u = update_workspace(
        &h.state,
        &admin,
        "acme/web",
        req(serde_json::json!({"pids": 300})),
    )
    .await
    .unwrap();
    assert_eq!(u.pending_restart, ["pids"]);
    assert!(
        u.live_error
            .as_deref()
            .unwrap_or_default()
            .contains("no such route"),
        "{u:?}"
    );
    assert_eq!(u.workspace.limits.pids, 300);
    assert_eq!(h.fake.container_spec(&first).unwrap().pids_limit, 256);

    stop(&h.state, "acme/web").await.unwrap();
    let w = start(&h.state, "acme/web").await.unwrap();
    let second = w.container_id.clone().unwrap();
    assert_ne!(second, first, "the changed workspace gets a new container");
    let c = h.fake.container_spec(&second).unwrap();
    assert_eq!((c.memory_bytes, c.pids_limit), (512 << 20, 300));
    stop(&h.state, "acme/web").await.unwrap();
    let w = start(&h.state, "acme/web").await.unwrap();
    assert_eq!(
        w.container_id.as_deref(),
        Some(second.as_str()),
        "unchanged: reused"
    );

    // Nothing asked, nothing changed; bad caps change nothing either.
    let u = update_workspace(&h.state, &admin, "acme/web", req(serde_json::json!({})))
        .await
        .unwrap();
    assert!(u.changed.is_empty());
    let e = update_workspace(
        &h.state,
        &admin,
        "acme/web",
        req(serde_json::json!({"memory": "1k"})),
    )
    .await
    .unwrap_err();
    assert_eq!(e.code, ErrorCode::InvalidArgument);
    assert_eq!(h.fake.calls_of("update_limits").len(), 2);
}

/// Updates binding different secrets at the same moment both hold: each is planned against the
/// bindings as they are under the workspace's lock, so neither overwrites the other.
#[tokio::test]
async fn concurrent_updates_keep_each_others_bindings() {
    let h = harness(true).await;
    create(&h.state, spec(&h.state, "web")).await.unwrap();
    let admin = crate::auth::Actor {
        id: "tok_a".into(),
        name: "root".into(),
        role: berth_domain::Role::Admin,
        tenant: None,
    };
    let names: Vec<String> = (0..8).map(|i| format!("KEY_{i}")).collect();
    for n in &names {
        h.state
            .store
            .put_secret("acme", n, b"nonce", b"sealed")
            .await
            .unwrap();
    }
    let updates = names.iter().map(|n| {
        let req = serde_json::from_value::<berth_api::UpdateWorkspace>(serde_json::json!({
            "secrets": [{"name": n, "hosts": ["api.example.com"]}]
        }))
        .map_err(ApiError::internal);
        update_workspace(&h.state, &admin, "acme/web", req)
    });
    for r in futures_util::future::join_all(updates).await {
        r.unwrap();
    }
    let w = crate::lifecycle::resolve(&h.state, "acme/web")
        .await
        .unwrap();
    let mut bound: Vec<String> = h
        .state
        .store
        .secret_uses(Some(&w.id))
        .await
        .unwrap()
        .into_iter()
        .map(|u| u.name)
        .collect();
    bound.sort();
    assert_eq!(bound, names);
}

#[tokio::test]
async fn reconciler_records_oom_exit_and_vanish() {
    let h = harness(true).await;
    let a = create(&h.state, spec(&h.state, "a")).await.unwrap();
    let b = create(&h.state, spec(&h.state, "b")).await.unwrap();
    let c = create(&h.state, spec(&h.state, "c")).await.unwrap();
    let e = create(&h.state, spec(&h.state, "e")).await.unwrap();
    h.fake.set_exited(a.container_id.as_deref().unwrap(), 137);
    h.fake
        .set_oom_killed(a.container_id.as_deref().unwrap(), true);
    h.fake.set_exited(b.container_id.as_deref().unwrap(), 3);
    // A SIGKILL the memory cgroup did not cause (the agent's `pkill -9` of its daemon).
    h.fake.set_exited(e.container_id.as_deref().unwrap(), 137);
    h.fake.vanish_container(c.container_id.as_deref().unwrap());
    crate::reconciler::pass(&h.state).await.unwrap();
    let get = |id| h.state.store.workspace(id);
    let a = get(&a.id).await.unwrap();
    assert_eq!(a.state, WorkspaceState::Failed);
    assert_eq!(a.failure.unwrap().0.reason, FailureKind::Oom);
    let b = get(&b.id).await.unwrap();
    assert_eq!(b.failure.unwrap().0.reason, FailureKind::Exited);
    let c = get(&c.id).await.unwrap();
    assert_eq!(c.failure.unwrap().0.reason, FailureKind::Vanished);
    let e = get(&e.id).await.unwrap();
    assert_eq!(e.failure.unwrap().0.reason, FailureKind::Exited);
    // A stop that berth asked for is not a failure.
    let d = create(&h.state, spec(&h.state, "d")).await.unwrap();
    stop(&h.state, "acme/d").await.unwrap();
    crate::reconciler::pass(&h.state).await.unwrap();
    assert_eq!(get(&d.id).await.unwrap().state, WorkspaceState::Stopped);
    // Audit trail of what the reconciler decided.
    let audit = h
        .state
        .store
        .list_audit(10, Some("acme/a"), None)
        .await
        .unwrap();
    assert_eq!(audit[0].record.action, "workspace.failed");
    assert_eq!(audit[0].record.result, "oom");
}

#[tokio::test]
async fn bare_names_resolve_only_when_unambiguous() {
    let h = harness(true).await;
    create(&h.state, spec(&h.state, "web")).await.unwrap();
    assert_eq!(
        resolve(&h.state, "web").await.unwrap().tenant.as_str(),
        "acme"
    );
    let other = CreateSpec::from_request(
        &h.state,
        &berth_api::CreateWorkspace {
            name: "web".into(),
            tenant: Some("globex".into()),
            ..Default::default()
        },
    )
    .unwrap();
    create(&h.state, other).await.unwrap();
    assert_eq!(
        resolve(&h.state, "web").await.unwrap_err().code,
        ErrorCode::Ambiguous
    );
    assert_eq!(
        resolve(&h.state, "globex/web")
            .await
            .unwrap()
            .tenant
            .as_str(),
        "globex"
    );
    assert_eq!(
        resolve(&h.state, "nope").await.unwrap_err().code,
        ErrorCode::NotFound
    );
    assert_eq!(
        resolve(&h.state, "Bad!").await.unwrap_err().code,
        ErrorCode::InvalidArgument
    );
}

#[test]
fn create_spec_validation() {
    let rt = tokio::runtime::Runtime::new().unwrap();
    let h = rt.block_on(harness(false));
    let bad = |req: berth_api::CreateWorkspace| {
        CreateSpec::from_request(&h.state, &req)
            .unwrap_err()
            .message
    };
    assert!(bad(berth_api::CreateWorkspace {
        name: "x/y/z".into(),
        ..Default::default()
    })
    .contains("name"));
    assert!(bad(berth_api::CreateWorkspace {
        name: "a/b".into(),
        tenant: Some("a".into()),
        ..Default::default()
    })
    .contains("give the tenant in `tenant`"));
    assert!(bad(berth_api::CreateWorkspace {
        name: "ok".into(),
        image: Some(" ".into()),
        ..Default::default()
    })
    .contains("image"));
    let ok = CreateSpec::from_request(
        &h.state,
        &berth_api::CreateWorkspace {
            name: "ok".into(),
            memory: Some("1g".into()),
            ..Default::default()
        },
    )
    .unwrap();
    assert_eq!(ok.tenant.as_str(), "default");
    assert_eq!(ok.limits.memory_bytes, 1 << 30);
    assert_eq!(ok.limits.pids, 256);
    drop(h);
}

#[tokio::test]
async fn a_newer_server_detects_an_older_daemon() {
    let mut h = harness(true).await;
    create(&h.state, spec(&h.state, "old")).await.unwrap();
    // Play a newer server: same workspace, its daemon still speaks the current protocol.
    let newer = berth_daemon::PROTOCOL_VERSION + 1;
    Arc::get_mut(&mut h.state).unwrap().host.daemon_protocol = newer;
    let w = resolve(&h.state, "acme/old").await.unwrap();
    let status = crate::lifecycle::daemon_status(&h.state, &w).await;
    assert!(status.reachable && status.outdated, "{status:?}");
    assert_eq!(status.protocol, Some(berth_daemon::PROTOCOL_VERSION));
    assert!(status.message.unwrap().contains("restart the workspace"));
    let err = crate::error::ApiError::from(h.state.daemon(&w.id).session_list().await.unwrap_err());
    assert_eq!(err.code, ErrorCode::DaemonOutdated);
}

#[test]
fn only_admins_may_ask_for_the_unfiltered_network() {
    use berth_domain::Role;
    assert!(check_network_allowed(Role::Admin, Some("bridge")).is_ok());
    assert!(check_network_allowed(Role::Member, Some("none")).is_ok());
    assert!(check_network_allowed(Role::Member, None).is_ok());
    for role in [Role::Member, Role::Owner, Role::Viewer] {
        let e = check_network_allowed(role, Some("bridge")).unwrap_err();
        assert_eq!(e.code, ErrorCode::Forbidden, "{role}");
        assert!(e.message.contains("only an admin"), "{}", e.message);
    }
}

#[tokio::test]
async fn quotas_bound_create_and_start_and_say_the_numbers() {
    let h = harness(true).await;
    let admin = crate::auth::Actor {
        id: "tok_test".into(),
        name: "root".into(),
        role: berth_domain::Role::Admin,
        tenant: None,
    };
    let acme = h
        .state
        .store
        .ensure_tenant(&Name::parse("acme").unwrap())
        .await
        .unwrap();
    let set = |max_workspaces| berth_domain::Quota {
        max_workspaces: Some(max_workspaces),
        memory_bytes: Some(512 << 20),
        ..Default::default()
    };
    h.state
        .store
        .set_tenant_quota(&acme.id, &set(2))
        .await
        .unwrap();
    let req = |name: &str| {
        Ok(berth_api::CreateWorkspace {
            name: name.into(),
            tenant: Some("acme".into()),
            memory: Some("256m".into()),
            ..Default::default()
        })
    };
    let refused = |r: ApiResult<Workspace>| {
        let e = r.unwrap_err();
        assert_eq!(e.code, ErrorCode::QuotaExceeded, "{}", e.message);
        e.message
    };
    create_workspace(&h.state, &admin, req("a")).await.unwrap();
    create_workspace(&h.state, &admin, req("b")).await.unwrap();
    let m = refused(create_workspace(&h.state, &admin, req("c")).await);
    assert!(
        m.contains("workspaces quota is 2: 2 in use, 1 requested"),
        "{m}"
    );
    // Room for a third workspace, but its memory would exceed 512m while a and b run.
    h.state
        .store
        .set_tenant_quota(&acme.id, &set(3))
        .await
        .unwrap();
    let m = refused(create_workspace(&h.state, &admin, req("c")).await);
    assert!(
        m.contains("memory quota is 512m: 512m in use, 256m requested"),
        "{m}"
    );
    // A stopped workspace holds no memory: c fits, and then a cannot start again.
    stop_workspace(&h.state, &admin, "acme/a").await.unwrap();
    create_workspace(&h.state, &admin, req("c")).await.unwrap();
    let m = refused(start_workspace(&h.state, &admin, "acme/a").await);
    assert!(m.contains("512m in use, 256m requested"), "{m}");
    // Nothing was half made by the refusals.
    let all = h.state.store.list_workspaces(None).await.unwrap();
    assert_eq!(all.len(), 3);
}

/// Parallel creates against the last room of a quota: exactly one gets it. Fails without the
/// tenant's admission lock (both check the usage before either row exists, and both pass).
#[tokio::test]
async fn parallel_creates_cannot_both_take_the_last_room() {
    let h = harness(true).await;
    let admin = crate::auth::Actor {
        id: "tok_test".into(),
        name: "root".into(),
        role: berth_domain::Role::Admin,
        tenant: None,
    };
    let acme = h
        .state
        .store
        .ensure_tenant(&Name::parse("acme").unwrap())
        .await
        .unwrap();
    let quota = berth_domain::Quota {
        max_workspaces: Some(1),
        ..Default::default()
    };
    h.state
        .store
        .set_tenant_quota(&acme.id, &quota)
        .await
        .unwrap();
    let create = |name: &'static str| {
        let (state, admin) = (h.state.clone(), admin.clone());
        tokio::spawn(async move {
            let req = berth_api::CreateWorkspace {
                name: name.into(),
                tenant: Some("acme".into()),
                ..Default::default()
            };
            create_workspace(&state, &admin, Ok(req)).await
        })
    };
    let all = [create("p1"), create("p2"), create("p3"), create("p4")];
    let mut made = 0;
    for t in all {
        match t.await.unwrap() {
            Ok(_) => made += 1,
            Err(e) => assert_eq!(e.code, ErrorCode::QuotaExceeded, "{}", e.message),
        }
    }
    assert_eq!(made, 1);
    assert_eq!(h.state.store.list_workspaces(None).await.unwrap().len(), 1);
}
