//! The batched pass over the recording fake runtime: what it costs in engine calls while
//! nothing changes, and that every change is still inspected and settled.

use berth_domain::{FailureKind, Name, WorkspaceId, WorkspaceState};
use berth_runtime::{
    Call, ContainerEvent, ContainerSpec, ContainerState, FakeRuntime, OomReading, RuntimeError,
};

use super::{pass_with, Memory, PassStats};
use crate::state::LABEL_SERVER;

/// The state over the fake runtime.
type Bed = crate::test_support::TestState;

async fn bed() -> Bed {
    Bed::new().await
}

/// A workspace in `state` whose container (labelled as this server's) is in `container`;
/// `None`: no container. Returns the workspace id and the container id.
async fn seed(
    b: &Bed,
    name: &str,
    state: WorkspaceState,
    container: Option<ContainerState>,
) -> (WorkspaceId, Option<String>) {
    let id = b.workspace_row("acme", name).await;
    let cid = container.map(|cs| {
        let spec = ContainerSpec {
            name: format!("berth-{name}"),
            image: "img".into(),
            labels: [(LABEL_SERVER.to_owned(), b.state.host.server_id.clone())].into(),
            ..Default::default()
        };
        b.fake.insert_container(spec, cs)
    });
    b.state
        .store
        .set_container(&id, cid.as_deref())
        .await
        .unwrap();
    b.state.store.set_state(&id, state, None).await.unwrap();
    (id, cid)
}

fn counts_none(_: u32, _: &str) -> OomReading {
    OomReading::Count(0)
}
fn counts_two(_: u32, _: &str) -> OomReading {
    OomReading::Count(2)
}
fn stale(_: u32, _: &str) -> OomReading {
    OomReading::NotInContainer
}

fn memory(probe: super::OomProbe) -> Memory {
    Memory {
        probe,
        ..Memory::default()
    }
}

fn ops(fake: &FakeRuntime) -> Vec<&'static str> {
    fake.calls().iter().map(Call::op).collect()
}

#[tokio::test]
async fn nothing_changing_costs_one_listing() {
    let b = bed().await;
    for n in ["r1", "r2", "r3"] {
        seed(
            &b,
            n,
            WorkspaceState::Running,
            Some(ContainerState::Running),
        )
        .await;
    }
    seed(
        &b,
        "s1",
        WorkspaceState::Stopped,
        Some(ContainerState::Exited),
    )
    .await;
    seed(&b, "f1", WorkspaceState::Failed, None).await;
    let mut mem = memory(counts_none);

    // The first pass learns the running containers' pids.
    let first = pass_with(&b.state, &mut mem, true).await.unwrap();
    assert_eq!(first.workspaces, 5);
    assert_eq!(first.inspected, 3);
    assert_eq!(first.engine_calls, 4);
    let mut want = vec!["list_container_states"];
    want.extend(["inspect_container"; 3]);
    assert_eq!(ops(&b.fake), want);

    // Then: one listing per pass, however many workspaces.
    b.fake.clear_calls();
    for _ in 0..3 {
        let s = pass_with(&b.state, &mut mem, true).await.unwrap();
        assert_eq!(
            s,
            PassStats {
                workspaces: 5,
                busy: 0,
                engine_calls: 1,
                inspected: 0
            }
        );
    }
    assert_eq!(ops(&b.fake), vec!["list_container_states"; 3]);
    match &b.fake.calls()[0] {
        Call::ListContainerStates { label } => {
            assert_eq!(label, &format!("{LABEL_SERVER}={}", b.state.host.server_id))
        }
        other => panic!("unexpected call {other:?}"),
    }
    for n in ["r1", "r2", "r3", "s1", "f1"] {
        let w = b
            .state
            .store
            .find_workspace(&Name::parse("acme").unwrap(), &Name::parse(n).unwrap())
            .await
            .unwrap()
            .unwrap();
        let want = match n {
            "s1" => WorkspaceState::Stopped,
            "f1" => WorkspaceState::Failed,
            _ => WorkspaceState::Running,
        };
        assert_eq!(w.state, want, "{n}");
    }
}

#[tokio::test]
async fn changes_are_inspected_and_settled() {
    let b = bed().await;
    let (exits, exits_c) = seed(
        &b,
        "exits",
        WorkspaceState::Running,
        Some(ContainerState::Running),
    )
    .await;
    let (vanishes, vanishes_c) = seed(
        &b,
        "vanishes",
        WorkspaceState::Running,
        Some(ContainerState::Running),
    )
    .await;
    let (steady, _) = seed(
        &b,
        "steady",
        WorkspaceState::Running,
        Some(ContainerState::Running),
    )
    .await;
    let (outside, outside_c) = seed(
        &b,
        "outside",
        WorkspaceState::Stopped,
        Some(ContainerState::Exited),
    )
    .await;
    let (starting, _) = seed(
        &b,
        "starting",
        WorkspaceState::Starting,
        Some(ContainerState::Running),
    )
    .await;
    let mut mem = memory(counts_none);
    pass_with(&b.state, &mut mem, true).await.unwrap();
    assert_eq!(
        b.state.store.workspace(&starting).await.unwrap().state,
        WorkspaceState::Running
    );

    b.fake.set_exited(exits_c.as_deref().unwrap(), 3);
    b.fake.vanish_container(vanishes_c.as_deref().unwrap());
    b.fake
        .set_state(outside_c.as_deref().unwrap(), ContainerState::Running);
    b.fake.clear_calls();
    let s = pass_with(&b.state, &mut mem, true).await.unwrap();
    assert_eq!(s.inspected, 3, "{s:?}");
    assert_eq!(s.engine_calls, 4, "{s:?}");
    let mut inspected: Vec<String> = b
        .fake
        .calls_of("inspect_container")
        .into_iter()
        .map(|c| match c {
            Call::InspectContainer { id_or_name } => id_or_name,
            other => panic!("unexpected call {other:?}"),
        })
        .collect();
    inspected.sort();
    let mut want = vec![exits_c.unwrap(), vanishes_c.unwrap(), outside_c.unwrap()];
    want.sort();
    assert_eq!(inspected, want);

    let get = |id| b.state.store.workspace(id);
    let w = get(&exits).await.unwrap();
    assert_eq!(w.state, WorkspaceState::Failed);
    assert_eq!(w.failure.unwrap().0.reason, FailureKind::Exited);
    let w = get(&vanishes).await.unwrap();
    assert_eq!(w.failure.unwrap().0.reason, FailureKind::Vanished);
    assert_eq!(get(&outside).await.unwrap().state, WorkspaceState::Running);
    assert_eq!(get(&steady).await.unwrap().state, WorkspaceState::Running);
    let audit = b
        .state
        .store
        .list_audit(10, Some("acme/outside"), None)
        .await
        .unwrap();
    assert_eq!(audit[0].record.action, "workspace.observed_running");
}

#[tokio::test]
async fn between_listings_events_stand_in_for_the_engine() {
    let b = bed().await;
    let (exits, exits_c) = seed(
        &b,
        "exits",
        WorkspaceState::Running,
        Some(ContainerState::Running),
    )
    .await;
    let (steady, steady_c) = seed(
        &b,
        "steady",
        WorkspaceState::Running,
        Some(ContainerState::Running),
    )
    .await;
    let mut mem = memory(counts_none);
    pass_with(&b.state, &mut mem, true).await.unwrap();

    // Without a listing and with nothing reported: no engine call at all.
    b.fake.clear_calls();
    let s = pass_with(&b.state, &mut mem, false).await.unwrap();
    assert_eq!((s.engine_calls, s.inspected), (0, 0), "{s:?}");
    assert!(b.fake.calls().is_empty(), "{:?}", b.fake.calls());

    // A container dies; until its event arrives, the pass does not know.
    let exits_c = exits_c.unwrap();
    b.fake.set_exited(&exits_c, 2);
    pass_with(&b.state, &mut mem, false).await.unwrap();
    assert_eq!(
        b.state.store.workspace(&exits).await.unwrap().state,
        WorkspaceState::Running
    );
    // Events that do not change whether it runs change nothing either.
    for action in ["kill", "exec_create", "init"] {
        mem.apply(&ContainerEvent {
            id: exits_c.clone(),
            action: action.into(),
        });
    }
    let s = pass_with(&b.state, &mut mem, false).await.unwrap();
    assert_eq!(s.engine_calls, 0, "{s:?}");
    // Its `die` event: inspected (only it) and settled.
    mem.apply(&ContainerEvent {
        id: exits_c.clone(),
        action: "die".into(),
    });
    b.fake.clear_calls();
    let s = pass_with(&b.state, &mut mem, false).await.unwrap();
    assert_eq!((s.engine_calls, s.inspected), (1, 1), "{s:?}");
    assert_eq!(
        b.fake.calls(),
        vec![Call::InspectContainer {
            id_or_name: exits_c.clone()
        }]
    );
    let w = b.state.store.workspace(&exits).await.unwrap();
    assert_eq!(w.failure.unwrap().0.reason, FailureKind::Exited);

    // A `remove` event: the container is gone, so the running workspace is inspected and
    // found vanished.
    let steady_c = steady_c.unwrap();
    b.fake.vanish_container(&steady_c);
    mem.apply(&ContainerEvent {
        id: steady_c,
        action: "remove".into(),
    });
    pass_with(&b.state, &mut mem, false).await.unwrap();
    let w = b.state.store.workspace(&steady).await.unwrap();
    assert_eq!(w.failure.unwrap().0.reason, FailureKind::Vanished);

    // A listing asked for is made even with events at hand.
    b.fake.clear_calls();
    pass_with(&b.state, &mut mem, true).await.unwrap();
    assert_eq!(ops(&b.fake), vec!["list_container_states"]);
}

#[tokio::test]
async fn a_stale_pid_is_asked_of_the_engine_again() {
    let b = bed().await;
    seed(
        &b,
        "r",
        WorkspaceState::Running,
        Some(ContainerState::Running),
    )
    .await;
    let mut mem = memory(stale);
    for _ in 0..3 {
        let s = pass_with(&b.state, &mut mem, true).await.unwrap();
        assert_eq!(s.inspected, 1, "{s:?}");
    }
    assert_eq!(
        ops(&b.fake),
        ["list_container_states", "inspect_container"].repeat(3)
    );
}

#[tokio::test]
async fn oom_kills_are_recorded_once() {
    let b = bed().await;
    let (id, _) = seed(
        &b,
        "r",
        WorkspaceState::Running,
        Some(ContainerState::Running),
    )
    .await;
    let mut mem = memory(counts_two);
    for _ in 0..3 {
        pass_with(&b.state, &mut mem, true).await.unwrap();
    }
    let w = b.state.store.workspace(&id).await.unwrap();
    assert_eq!(w.oom_kills, 2);
    assert_eq!(w.memcg_oom_seen, 2);
    assert_eq!(w.state, WorkspaceState::Running);
    let audit = b
        .state
        .store
        .list_audit(10, Some("acme/r"), None)
        .await
        .unwrap();
    let ooms = audit
        .iter()
        .filter(|e| e.record.action == "workspace.oom")
        .count();
    assert_eq!(ooms, 1);
}

#[tokio::test]
async fn busy_workspaces_are_left_alone() {
    let b = bed().await;
    let (id, c) = seed(
        &b,
        "r",
        WorkspaceState::Running,
        Some(ContainerState::Running),
    )
    .await;
    b.fake.set_exited(c.as_deref().unwrap(), 1);
    let lock = b.state.lock_for(&id);
    let guard = lock.lock().await;
    let mut mem = memory(counts_none);
    let s = pass_with(&b.state, &mut mem, true).await.unwrap();
    assert_eq!((s.busy, s.inspected), (1, 0), "{s:?}");
    assert_eq!(
        b.state.store.workspace(&id).await.unwrap().state,
        WorkspaceState::Running
    );
    drop(guard);
    pass_with(&b.state, &mut mem, true).await.unwrap();
    assert_eq!(
        b.state.store.workspace(&id).await.unwrap().state,
        WorkspaceState::Failed
    );
}

#[tokio::test]
async fn a_failed_listing_changes_nothing() {
    let b = bed().await;
    let (id, c) = seed(
        &b,
        "r",
        WorkspaceState::Running,
        Some(ContainerState::Running),
    )
    .await;
    b.fake.vanish_container(c.as_deref().unwrap());
    b.fake.fail_next(
        "list_container_states",
        RuntimeError::Other("engine hiccup".into()),
    );
    let mut mem = memory(counts_none);
    assert!(pass_with(&b.state, &mut mem, true).await.is_err());
    assert_eq!(ops(&b.fake), vec!["list_container_states"]);
    assert_eq!(
        b.state.store.workspace(&id).await.unwrap().state,
        WorkspaceState::Running
    );
    // The locks were released: the next pass settles it.
    pass_with(&b.state, &mut mem, true).await.unwrap();
    let w = b.state.store.workspace(&id).await.unwrap();
    assert_eq!(w.failure.unwrap().0.reason, FailureKind::Vanished);
}
