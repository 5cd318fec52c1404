//! Agent tasks owned by the daemon, driven through the real client, with a
//! fake agent driver whose "CLI" is `sh -c <prompt>`.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use berth_agents::{Driver, Invocation, TurnSpec};
use berth_daemon::proto::{read_frame, write_control, ErrorBody, ErrorCode, Request, Response};
use berth_daemon::{
    DaemonClient, DaemonError, DriverFactory, TaskEventStream, TaskInfo, TaskStart, Worktree,
};
use berth_domain::{Agent, EventKind, TaskEvent, TaskId, TaskState};

mod common;

use common::TestDaemon;

/// A task id as these tests name them (the daemon takes any id the server chooses).
fn tid(id: &str) -> TaskId {
    TaskId::from_stored(id.to_owned())
}

const WAIT: Duration = Duration::from_secs(20);
const MISSING: &str = "berth-no-such-agent-cli";

/// The fake agent: runs the prompt with `sh -c`; `!missing` runs a program
/// that does not exist. Lines: `session X`, `done X`, `error X`, anything
/// else is a message.
struct Fake;

impl Driver for Fake {
    fn agent(&self) -> Agent {
        Agent::Claude
    }

    fn invocation(&self, spec: &TurnSpec) -> Invocation {
        let program = if spec.prompt == "!missing" {
            MISSING.to_string()
        } else {
            "sh".to_string()
        };
        Invocation {
            program,
            args: vec!["-c".into(), spec.prompt.clone()],
            env: vec![
                ("PATH".into(), std::env::var("PATH").unwrap_or_default()),
                ("HOME".into(), spec.home.display().to_string()),
                ("RESUME".into(), spec.resume.clone().unwrap_or_default()),
                ("TASK_DIR".into(), spec.task_dir.display().to_string()),
            ],
            files: vec![(
                spec.task_dir.join("conf").join("settings.json"),
                "{}".into(),
            )],
            stdin: Some("stdin-data\n".into()),
            cwd: spec.cwd.clone(),
        }
    }

    /// Not used by the daemon (the server starts interactive sessions): a plain shell.
    fn interactive(&self, spec: &berth_agents::SessionSpec) -> Invocation {
        Invocation {
            program: "sh".into(),
            args: Vec::new(),
            env: Vec::new(),
            files: Vec::new(),
            stdin: None,
            cwd: spec.cwd.clone(),
        }
    }

    fn parse_line(&mut self, line: &str) -> Vec<EventKind> {
        if let Some(id) = line.strip_prefix("session ") {
            vec![EventKind::Session {
                agent_session_id: id.into(),
                model: None,
            }]
        } else if let Some(r) = line.strip_prefix("done") {
            let r = r.trim();
            vec![EventKind::TurnCompleted {
                result: (!r.is_empty()).then(|| r.to_string()),
            }]
        } else if let Some(m) = line.strip_prefix("error ") {
            vec![EventKind::Error { message: m.into() }]
        } else {
            vec![EventKind::Message { text: line.into() }]
        }
    }
}

/// The shared harness with the fake agent driver.
async fn start() -> TestDaemon {
    start_with(|_| {}).await
}

async fn start_with(f: impl FnOnce(&mut berth_daemon::server::DaemonOptions)) -> TestDaemon {
    TestDaemon::start_with(|o| {
        o.drivers = DriverFactory::new(|_| Box::new(Fake));
        f(o);
    })
    .await
}

/// What these tests need of a daemon beyond the shared harness.
trait TaskHarness {
    fn home(&self) -> PathBuf;
    fn spec(&self, id: &str, prompt: &str) -> TaskStart;
}

impl TaskHarness for TestDaemon {
    fn home(&self) -> PathBuf {
        self.dir.path().join("home")
    }

    fn spec(&self, id: &str, prompt: &str) -> TaskStart {
        let home = self.home();
        std::fs::create_dir_all(&home).unwrap();
        TaskStart {
            id: id.into(),
            turn: TurnSpec {
                agent: Agent::Claude,
                prompt: prompt.into(),
                model: None,
                cwd: home.clone(),
                home: home.clone(),
                task_dir: home.join(".berth").join("tasks").join(id),
                gateway_url: "http://127.0.0.1:7788/anthropic".into(),
                virtual_key: "vk-test".into(),
                resume: None,
                approval: berth_agents::ApprovalPolicy::Never,
                mcp_servers: Vec::new(),
            },
            worktree: None,
            after_seq: 0,
            approval_timeout_secs: 0,
            agent_idle_secs: 0,
        }
    }
}

fn is_status(e: &TaskEvent, s: TaskState) -> bool {
    matches!(&e.kind, EventKind::Status { state, .. } if *state == s)
}

fn is_turn_over(e: &TaskEvent) -> bool {
    matches!(&e.kind, EventKind::Status { state, .. } if state.is_turn_over())
}

/// Reads events until one matches `stop` (included).
async fn read_until(
    stream: &mut TaskEventStream,
    stop: impl Fn(&TaskEvent) -> bool,
) -> Vec<TaskEvent> {
    let mut got = Vec::new();
    let res = tokio::time::timeout(WAIT, async {
        loop {
            let e = stream
                .next()
                .await
                .unwrap()
                .expect("stream ended unexpectedly");
            let done = stop(&e);
            got.push(e);
            if done {
                return;
            }
        }
    })
    .await;
    assert!(res.is_ok(), "timed out; events so far: {got:#?}");
    got
}

/// Waits for the end of the current turn and returns all events from seq 1.
async fn run_to_end(c: &DaemonClient, id: &str) -> Vec<TaskEvent> {
    let mut s = c.task_events(&tid(id), 0).await.unwrap();
    read_until(&mut s, is_turn_over).await
}

fn assert_contiguous(events: &[TaskEvent], first: u64) {
    for (i, e) in events.iter().enumerate() {
        assert_eq!(e.seq, first + i as u64, "events: {events:#?}");
        assert!(e.at.instant().is_some(), "bad at {:?}", e.at);
    }
}

fn messages(events: &[TaskEvent]) -> Vec<String> {
    events
        .iter()
        .filter_map(|e| match &e.kind {
            EventKind::Message { text } => Some(text.clone()),
            _ => None,
        })
        .collect()
}

fn mode(p: &Path) -> u32 {
    std::fs::metadata(p).unwrap().permissions().mode() & 0o777
}

async fn wait_for<F: Fn(&TaskInfo) -> bool>(c: &DaemonClient, id: &str, f: F) -> TaskInfo {
    let deadline = Instant::now() + WAIT;
    loop {
        let info = c.task_get(&tid(id)).await.unwrap();
        if f(&info) {
            return info;
        }
        assert!(Instant::now() < deadline, "timed out; task: {info:?}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

fn process_gone(pid: i32) -> bool {
    match std::fs::read_to_string(format!("/proc/{pid}/stat")) {
        Err(_) => true,
        Ok(stat) => {
            let rest = &stat[stat.rfind(')').unwrap() + 1..];
            rest.split_whitespace().next() == Some("Z")
        }
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn a_turn_produces_ordered_contiguous_events() {
    let d = start().await;
    let c = &d.client;
    let prompt = r#"echo 'session s1'; echo hello; echo to-stderr >&2; read x; echo "stdin:$x"; echo "manifest:${CARGO_MANIFEST_DIR:-unset}"; echo "home:$HOME"; echo "task:$BERTH_TASK_ID"; echo 'done all good'"#;
    let info = c.task_start(d.spec("t1", prompt)).await.unwrap();
    assert_eq!(info.id, "t1");
    assert_eq!(info.agent, Agent::Claude);
    assert!(
        matches!(info.state, TaskState::Running | TaskState::Completed),
        "{info:?}"
    );
    let events = run_to_end(c, "t1").await;
    assert_contiguous(&events, 1);
    assert!(is_status(&events[0], TaskState::Starting));
    assert_eq!(
        events[1].kind,
        EventKind::UserMessage {
            text: prompt.into()
        }
    );
    assert!(is_status(&events[2], TaskState::Running));
    // stdout and stderr are separate pipes: only stdout's order is defined.
    let first_out = events[3..]
        .iter()
        .find(|e| !matches!(e.kind, EventKind::Log { .. }))
        .unwrap();
    assert_eq!(
        first_out.kind,
        EventKind::Session {
            agent_session_id: "s1".into(),
            model: None
        }
    );
    let home = d.home();
    // The agent runs in the daemon's environment (here the test's: cargo's CARGO_MANIFEST_DIR;
    // in a workspace the container's), with the driver's variables over it (HOME).
    assert_eq!(
        messages(&events),
        [
            "hello".to_string(),
            "stdin:stdin-data".into(),
            format!("manifest:{}", env!("CARGO_MANIFEST_DIR")),
            format!("home:{}", home.display()),
            "task:t1".into(),
        ]
    );
    assert!(events.iter().any(|e| e.kind
        == EventKind::Log {
            line: "to-stderr".into()
        }));
    let n = events.len();
    let no_logs: Vec<&TaskEvent> = events
        .iter()
        .filter(|e| !matches!(e.kind, EventKind::Log { .. }))
        .collect();
    let m = no_logs.len();
    assert_eq!(
        no_logs[m - 2].kind,
        EventKind::TurnCompleted {
            result: Some("all good".into())
        }
    );
    // The turn ends only after both pipes are drained.
    assert!(is_status(&events[n - 1], TaskState::Completed));
    // Exactly one TurnCompleted: the daemon adds none when the driver reported one.
    assert_eq!(
        events
            .iter()
            .filter(|e| matches!(e.kind, EventKind::TurnCompleted { .. }))
            .count(),
        1
    );

    let info = c.task_get(&tid("t1")).await.unwrap();
    assert_eq!(info.state, TaskState::Completed);
    assert_eq!(info.last_seq, n as u64);
    assert_eq!(info.agent_session_id.as_deref(), Some("s1"));
    assert_eq!(info.pid, None);
    assert_eq!(info.reason, None);
    d.stop().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn a_turn_writes_the_driver_files_privately() {
    let d = start().await;
    let c = &d.client;
    c.task_start(d.spec("t1", "echo 'session s1'"))
        .await
        .unwrap();
    run_to_end(c, "t1").await;
    let task_dir = d.home().join(".berth/tasks/t1");
    assert_eq!(mode(&task_dir), 0o700);
    assert_eq!(mode(&task_dir.join("tmp")), 0o700);
    assert_eq!(mode(&task_dir.join("conf/settings.json")), 0o600);
    assert_eq!(
        std::fs::read_to_string(task_dir.join("conf/settings.json")).unwrap(),
        "{}"
    );
    d.stop().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn a_turn_without_turn_completed_gets_one_and_tasks_list_in_order() {
    let d = start().await;
    let c = &d.client;
    c.task_start(d.spec("t1", "echo 'session s1'; echo 'done all good'"))
        .await
        .unwrap();
    run_to_end(c, "t1").await;
    // A turn without TurnCompleted from the driver gets one from the daemon.
    c.task_start(d.spec("t2", "echo 'session s2'"))
        .await
        .unwrap();
    let events = run_to_end(c, "t2").await;
    let n = events.len();
    assert_eq!(
        events[n - 2].kind,
        EventKind::TurnCompleted { result: None }
    );
    assert!(is_status(&events[n - 1], TaskState::Completed));

    let list = c.task_list().await.unwrap();
    assert_eq!(
        list.iter().map(|t| t.id.as_str()).collect::<Vec<_>>(),
        ["t1", "t2"]
    );
    d.stop().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn replay_then_live_has_no_gap_or_duplicate() {
    let d = start().await;
    let c = &d.client;
    let prompt =
        "echo 'session s1'; i=0; while [ $i -lt 60 ]; do i=$((i+1)); echo m$i; sleep 0.01; done";
    c.task_start(d.spec("t", prompt)).await.unwrap();
    // One subscriber from the start...
    let mut early = c.task_events(&tid("t"), 0).await.unwrap();
    // ...and some that join mid-run.
    wait_for(c, "t", |t| t.last_seq > 20).await;
    let mut mid = c.task_events(&tid("t"), 0).await.unwrap();
    let mut after10 = c.task_events(&tid("t"), 10).await.unwrap();
    let all = read_until(&mut early, is_turn_over).await;
    let mid = read_until(&mut mid, is_turn_over).await;
    let after10 = read_until(&mut after10, is_turn_over).await;
    assert_contiguous(&all, 1);
    assert!(all.len() > 60);
    assert_eq!(mid, all);
    assert_eq!(after10[..], all[10..]);
    let m: Vec<String> = (1..=60).map(|i| format!("m{i}")).collect();
    assert_eq!(messages(&all), m);

    // Subscribed after the end: nothing until a follow-up; then exactly the new events.
    let last = c.task_get(&tid("t")).await.unwrap().last_seq;
    let mut idle = c.task_events(&tid("t"), last).await.unwrap();
    assert!(
        tokio::time::timeout(Duration::from_millis(300), idle.next())
            .await
            .is_err(),
        "no events expected while idle"
    );
    c.task_send(&tid("t"), "echo again").await.unwrap();
    let more = read_until(&mut idle, is_turn_over).await;
    assert_contiguous(&more, last + 1);
    assert!(is_status(&more[0], TaskState::Running));
    assert_eq!(messages(&more), ["again"]);
    d.stop().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn follow_up_resumes_the_agent_session() {
    let d = start().await;
    let c = &d.client;
    c.task_start(d.spec("t", "echo 'session sess-42'; echo first"))
        .await
        .unwrap();
    let first = run_to_end(c, "t").await;
    let last = first.last().unwrap().seq;

    let info = c
        .task_send(&tid("t"), "echo \"resumed:$RESUME\"; sleep 0.5")
        .await
        .unwrap();
    assert_eq!(info.state, TaskState::Running);
    assert!(info.pid.is_some());
    // While the turn runs, no other message is accepted.
    match c.task_send(&tid("t"), "echo x").await {
        Err(DaemonError::Conflict(m)) => assert!(m.contains("running"), "{m}"),
        other => panic!("expected a conflict, got {other:?}"),
    }
    let mut s = c.task_events(&tid("t"), last).await.unwrap();
    let events = read_until(&mut s, is_turn_over).await;
    assert_contiguous(&events, last + 1);
    assert!(is_status(&events[0], TaskState::Running));
    assert_eq!(
        events[1].kind,
        EventKind::UserMessage {
            text: "echo \"resumed:$RESUME\"; sleep 0.5".into()
        }
    );
    assert_eq!(messages(&events), ["resumed:sess-42"]);
    assert!(is_status(events.last().unwrap(), TaskState::Completed));

    // A task whose agent reported no session cannot be continued.
    c.task_start(d.spec("nosess", "echo hi")).await.unwrap();
    run_to_end(c, "nosess").await;
    match c.task_send(&tid("nosess"), "more").await {
        Err(DaemonError::Conflict(m)) => assert!(m.contains("no session id"), "{m}"),
        other => panic!("expected a conflict, got {other:?}"),
    }
    assert!(matches!(
        c.task_send(&tid("nope"), "x").await,
        Err(DaemonError::NotFound(_))
    ));
    d.stop().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn cancel_kills_the_whole_process_group() {
    let d = start().await;
    let c = &d.client;
    // "polite" dies on SIGINT; "stubborn" ignores it and needs the SIGKILL.
    // Both leave a background grandchild that ignores SIGINT.
    c.task_start(d.spec(
        "polite",
        "echo 'session p'; sleep 60 & echo child $!; sleep 60",
    ))
    .await
    .unwrap();
    c.task_start(d.spec(
        "stubborn",
        "trap '' INT; echo 'session s'; sleep 60 & echo child $!; while :; do sleep 1; done",
    ))
    .await
    .unwrap();
    let child_of = |events: &[TaskEvent]| -> i32 {
        messages(events)
            .iter()
            .find_map(|m| m.strip_prefix("child ").map(|p| p.parse().unwrap()))
            .unwrap()
    };
    let mut sp = c.task_events(&tid("polite"), 0).await.unwrap();
    let mut ss = c.task_events(&tid("stubborn"), 0).await.unwrap();
    let is_child = |e: &TaskEvent| matches!(&e.kind, EventKind::Message { text } if text.starts_with("child "));
    let ep = read_until(&mut sp, is_child).await;
    let es = read_until(&mut ss, is_child).await;
    let (gp, gs) = (child_of(&ep), child_of(&es));
    let leader_s = c.task_get(&tid("stubborn")).await.unwrap().pid.unwrap() as i32;
    assert!(!process_gone(gp) && !process_gone(gs));

    let t0 = Instant::now();
    let (polite, stubborn) = (tid("polite"), tid("stubborn"));
    let (rp, rs) = tokio::join!(c.task_cancel(&polite), c.task_cancel(&stubborn));
    let elapsed = t0.elapsed();
    let (rp, rs) = (rp.unwrap(), rs.unwrap());
    assert_eq!(rp.state, TaskState::Cancelled);
    assert_eq!(rs.state, TaskState::Cancelled);
    assert_eq!(rp.pid, None);
    assert!(elapsed < Duration::from_secs(8), "cancel took {elapsed:?}");
    assert!(
        elapsed >= Duration::from_millis(2500),
        "stubborn should need the SIGKILL: {elapsed:?}"
    );
    tokio::time::sleep(Duration::from_millis(200)).await;
    assert!(process_gone(gp), "grandchild {gp} survived");
    assert!(process_gone(gs), "grandchild {gs} survived");
    assert!(process_gone(leader_s), "leader {leader_s} survived");

    let ep = read_until(&mut sp, is_turn_over).await;
    assert!(is_status(ep.last().unwrap(), TaskState::Cancelled));
    let es = read_until(&mut ss, is_turn_over).await;
    assert!(is_status(es.last().unwrap(), TaskState::Cancelled));

    // Idempotent; final.
    assert_eq!(
        c.task_cancel(&tid("polite")).await.unwrap().state,
        TaskState::Cancelled
    );
    match c.task_send(&tid("polite"), "more").await {
        Err(DaemonError::Conflict(m)) => assert!(m.contains("cancelled"), "{m}"),
        other => panic!("expected a conflict, got {other:?}"),
    }
    // Cancelling an idle (completed) task.
    c.task_start(d.spec("idle", "echo 'session i'"))
        .await
        .unwrap();
    run_to_end(c, "idle").await;
    let info = c.task_cancel(&tid("idle")).await.unwrap();
    assert_eq!(info.state, TaskState::Cancelled);
    let events = c.task_events(&tid("idle"), 0).await.unwrap();
    drop(events);
    assert!(matches!(
        c.task_cancel(&tid("nope")).await,
        Err(DaemonError::NotFound(_))
    ));
    d.stop().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn failures_carry_a_reason() {
    let d = start().await;
    let c = &d.client;
    c.task_start(d.spec(
        "err",
        "echo 'error model overloaded'; echo noise >&2; exit 3",
    ))
    .await
    .unwrap();
    c.task_start(d.spec("stderr", "echo 'last words' >&2; exit 2"))
        .await
        .unwrap();
    c.task_start(d.spec("oom", "kill -9 $$")).await.unwrap();
    let info = c.task_start(d.spec("missing", "!missing")).await.unwrap();
    assert_eq!(info.state, TaskState::Failed);
    assert_eq!(
        info.reason.as_deref(),
        Some(
            format!("the agent CLI `{MISSING}` is not installed in this workspace image").as_str()
        )
    );

    for (id, want) in [
        ("err", "claude exited with code 3: model overloaded"),
        ("stderr", "claude exited with code 2: last words"),
    ] {
        let events = run_to_end(c, id).await;
        let last = events.last().unwrap();
        assert_eq!(
            last.kind,
            EventKind::Status {
                state: TaskState::Failed,
                reason: Some(want.into())
            }
        );
        let info = c.task_get(&tid(id)).await.unwrap();
        assert_eq!(info.state, TaskState::Failed);
        assert_eq!(info.reason.as_deref(), Some(want));
        assert!(!events
            .iter()
            .any(|e| matches!(e.kind, EventKind::TurnCompleted { .. })));
    }
    let events = run_to_end(c, "oom").await;
    let reason = c.task_get(&tid("oom")).await.unwrap().reason.unwrap();
    assert!(
        reason.contains("SIGKILL") && reason.contains("memory"),
        "{reason}"
    );
    assert!(is_status(events.last().unwrap(), TaskState::Failed));

    let events = run_to_end(c, "missing").await;
    assert!(is_status(&events[0], TaskState::Starting));
    assert!(is_status(events.last().unwrap(), TaskState::Failed));

    // Failed is final.
    assert!(matches!(
        c.task_cancel(&tid("err")).await,
        Err(DaemonError::Conflict(_))
    ));
    assert!(matches!(
        c.task_send(&tid("err"), "x").await,
        Err(DaemonError::Conflict(_))
    ));
    d.stop().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn start_validates_and_rejects_duplicates() {
    let d = start().await;
    let c = &d.client;
    c.task_start(d.spec("dup", "echo 'session x'"))
        .await
        .unwrap();
    assert!(matches!(
        c.task_start(d.spec("dup", "echo")).await,
        Err(DaemonError::Conflict(_))
    ));
    for bad in ["", "../x", "a/b", "-x", &"x".repeat(129)] {
        assert!(
            matches!(
                c.task_start(d.spec(bad, "echo")).await,
                Err(DaemonError::Invalid(_))
            ),
            "{bad:?}"
        );
    }
    let mut rel = d.spec("rel", "echo");
    rel.turn.task_dir = PathBuf::from("relative");
    assert!(matches!(
        c.task_start(rel).await,
        Err(DaemonError::Invalid(_))
    ));
    let mut badbranch = d.spec("bb", "echo");
    badbranch.worktree = Some(Worktree {
        repo: d.home(),
        branch: "--force".into(),
    });
    assert!(matches!(
        c.task_start(badbranch).await,
        Err(DaemonError::Invalid(_))
    ));
    assert!(matches!(
        c.task_get(&tid("nope")).await,
        Err(DaemonError::NotFound(_))
    ));
    assert!(matches!(
        c.task_events(&tid("nope"), 0).await,
        Err(DaemonError::NotFound(_))
    ));
    d.stop().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn worktree_is_created_for_the_task() {
    let d = start().await;
    let c = &d.client;
    let repo = d.dir.path().join("repo");
    std::fs::create_dir_all(&repo).unwrap();
    let git = |args: &[&str]| {
        let out = std::process::Command::new("git")
            .arg("-C")
            .arg(&repo)
            .args(["-c", "user.name=t", "-c", "user.email=t@example.com"])
            .args(args)
            .output()
            .unwrap();
        assert!(out.status.success(), "{out:?}");
    };
    git(&["init", "-q"]);
    git(&["commit", "-q", "--allow-empty", "-m", "init"]);

    let mut req = d.spec("wt1", "pwd; git rev-parse --abbrev-ref HEAD");
    req.worktree = Some(Worktree {
        repo: repo.clone(),
        branch: "berth/wt1".into(),
    });
    c.task_start(req).await.unwrap();
    let events = run_to_end(c, "wt1").await;
    let path = d.home().join(".berth/worktrees/wt1");
    assert_eq!(
        messages(&events),
        [path.display().to_string(), "berth/wt1".into()]
    );
    assert!(is_status(events.last().unwrap(), TaskState::Completed));

    // The same branch again: git refuses, the task fails with git's message.
    let mut req = d.spec("wt2", "pwd");
    req.worktree = Some(Worktree {
        repo: repo.clone(),
        branch: "berth/wt1".into(),
    });
    let info = c.task_start(req).await.unwrap();
    assert_eq!(info.state, TaskState::Failed);
    let reason = info.reason.unwrap();
    assert!(
        reason.starts_with("creating the git worktree failed:") && reason.contains("berth/wt1"),
        "{reason}"
    );
    // Not a repository.
    let mut req = d.spec("wt3", "pwd");
    req.worktree = Some(Worktree {
        repo: d.dir.path().join("nothing-here"),
        branch: "b".into(),
    });
    let info = c.task_start(req).await.unwrap();
    assert_eq!(info.state, TaskState::Failed, "{info:?}");
    d.stop().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn slow_subscriber_does_not_block_the_task() {
    let d = start().await;
    let c = &d.client;
    // ~4 MB of events, far more than the socket buffers.
    let prompt = "echo 'session s'; i=0; while [ $i -lt 20000 ]; do i=$((i+1)); echo \"line $i xxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxx\"; done";
    c.task_start(d.spec("t", prompt)).await.unwrap();
    let mut lazy = c.task_events(&tid("t"), 0).await.unwrap();
    let info = wait_for(c, "t", |t| t.state == TaskState::Completed).await;
    let events = read_until(&mut lazy, is_turn_over).await;
    assert_eq!(events.len() as u64, info.last_seq);
    assert_contiguous(&events, 1);
    assert_eq!(messages(&events).len(), 20000);
    d.stop().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn event_buffer_keeps_the_newest() {
    let d = start_with(|o| o.task_event_buffer = 10).await;
    let c = &d.client;
    c.task_start(d.spec(
        "t",
        "echo 'session s'; i=0; while [ $i -lt 30 ]; do i=$((i+1)); echo m$i; done",
    ))
    .await
    .unwrap();
    let info = wait_for(c, "t", |t| t.state == TaskState::Completed).await;
    assert!(info.last_seq > 35, "{info:?}");
    let mut s = c.task_events(&tid("t"), 0).await.unwrap();
    let events = read_until(&mut s, is_turn_over).await;
    assert_eq!(events.len(), 10);
    assert_contiguous(&events, info.last_seq - 9);
    d.stop().await;

    let d = start_with(|o| o.task_event_buffer = 10).await;
    let c = &d.client;
    c.task_start(d.spec(
        "t",
        "echo 'session s'; sleep 0.3; i=0; while [ $i -lt 12 ]; do i=$((i+1)); echo m$i; done",
    ))
    .await
    .unwrap();
    let mut s = c.task_events(&tid("t"), 0).await.unwrap();
    let events = read_until(
        &mut s,
        |e| matches!(&e.kind, EventKind::Log { line } if line.contains("only the newest")),
    )
    .await;
    assert!(!events.is_empty());
    d.stop().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn shutdown_kills_running_agents_and_ends_streams() {
    let d = start().await;
    let c = d.client.clone();
    let info = c
        .task_start(d.spec("t", "echo 'session s'; sleep 60"))
        .await
        .unwrap();
    let pid = info.pid.unwrap() as i32;
    let mut s = c.task_events(&tid("t"), 0).await.unwrap();
    d.stop().await;
    let ended = tokio::time::timeout(WAIT, async {
        loop {
            match s.next().await {
                Ok(Some(_)) => continue,
                _ => return,
            }
        }
    })
    .await;
    assert!(ended.is_ok(), "the event stream did not end");
    tokio::time::sleep(Duration::from_millis(200)).await;
    assert!(process_gone(pid));
}

#[tokio::test(flavor = "multi_thread")]
async fn an_unknown_request_gets_a_clear_error() {
    let d = start().await;
    // A newer client's request to this daemon.
    let mut stream = tokio::net::UnixStream::connect(d.client.socket())
        .await
        .unwrap();
    write_control(
        &mut stream,
        &Request::Hello {
            protocol: berth_daemon::PROTOCOL_VERSION,
            client: "t".into(),
        },
    )
    .await
    .unwrap();
    let _hello = read_frame(&mut stream).await.unwrap().unwrap();
    let frame = berth_daemon::proto::Frame::control(
        &serde_json::json!({"type": "task_frobnicate", "task": "x"}),
    )
    .unwrap();
    berth_daemon::proto::write_frame(&mut stream, &frame)
        .await
        .unwrap();
    let resp: Response = read_frame(&mut stream)
        .await
        .unwrap()
        .unwrap()
        .parse()
        .unwrap();
    match resp {
        Response::Error(ErrorBody { code, message, .. }) => {
            assert_eq!(code, ErrorCode::Protocol);
            assert!(
                message.contains("unknown request \"task_frobnicate\""),
                "{message}"
            );
        }
        other => panic!("{other:?}"),
    }
    d.stop().await;
}

#[tokio::test]
async fn an_old_daemons_refusal_of_a_task_request_is_explained() {
    // An old daemon (before tasks) answering a task request the way it does.
    let dir = tempfile::tempdir().unwrap();
    let sock = dir.path().join("old.sock");
    let listener = tokio::net::UnixListener::bind(&sock).unwrap();
    tokio::spawn(async move {
        loop {
            let (mut s, _) = listener.accept().await.unwrap();
            let _ = read_frame(&mut s).await;
            let info = berth_daemon::DaemonInfo {
                protocol: berth_daemon::PROTOCOL_VERSION,
                version: "0.0.1".into(),
                pid: 1,
                started_at: berth_domain::Timestamp::parse("2020-01-01T00:00:00Z").unwrap(),
                uid: 1000,
                sessions: 0,
            };
            write_control(&mut s, &Response::HelloOk(info))
                .await
                .unwrap();
            let _ = read_frame(&mut s).await;
            let body = ErrorBody {
                code: ErrorCode::Protocol,
                message:
                    "bad request: unknown variant `task_list`, expected one of `hello`, `exec`"
                        .into(),
                daemon_protocol: None,
            };
            write_control(&mut s, &Response::Error(body)).await.unwrap();
        }
    });
    match DaemonClient::new(&sock).task_list().await {
        Err(DaemonError::Protocol(m)) => {
            assert!(
                m.contains("unknown request \"task_list\"") && m.contains("older"),
                "{m}"
            )
        }
        other => panic!("{other:?}"),
    }
}

#[tokio::test]
async fn a_stop_with_a_reason_ends_the_task_failed() {
    let d = start().await;
    let c = &d.client;
    c.task_start(d.spec("budget", "echo 'session b'; sleep 60"))
        .await
        .unwrap();
    let mut s = c.task_events(&tid("budget"), 0).await.unwrap();
    read_until(&mut s, |e| matches!(&e.kind, EventKind::Session { .. })).await;
    let info = c
        .task_fail(&tid("budget"), "budget_exceeded: 10 of 10 tokens")
        .await
        .unwrap();
    assert_eq!(info.state, TaskState::Failed);
    assert_eq!(
        info.reason.as_deref(),
        Some("budget_exceeded: 10 of 10 tokens")
    );
    let last = read_until(&mut s, |e| {
        matches!(
            &e.kind,
            EventKind::Status {
                state: TaskState::Failed,
                ..
            }
        )
    })
    .await;
    assert!(
        matches!(&last.last().unwrap().kind, EventKind::Status { reason: Some(r), .. } if r.starts_with("budget_exceeded"))
    );
    // Failed is final: a later cancel is refused, nothing more can be sent.
    assert!(c.task_cancel(&tid("budget")).await.is_err());
    assert!(c.task_send(&tid("budget"), "more").await.is_err());
}

fn user_messages(events: &[TaskEvent]) -> Vec<String> {
    events
        .iter()
        .filter_map(|e| match &e.kind {
            EventKind::UserMessage { text } => Some(text.clone()),
            _ => None,
        })
        .collect()
}

#[tokio::test(flavor = "multi_thread")]
async fn interrupt_stops_the_turn_and_redirects_the_same_conversation() {
    let d = start().await;
    let c = &d.client;
    // Ignores SIGINT (as the agent CLIs do in their headless modes), and runs a "tool" in a
    // session of its own, as Claude Code's shell does: only a kill of the tree reaches it.
    c.task_start(d.spec(
        "t",
        "trap '' INT; echo 'session s-9'; setsid sleep 60 & echo child $!; while :; do sleep 1; done",
    ))
    .await
    .unwrap();
    let mut s = c.task_events(&tid("t"), 0).await.unwrap();
    let is_child = |e: &TaskEvent| matches!(&e.kind, EventKind::Message { text } if text.starts_with("child "));
    let first = read_until(&mut s, is_child).await;
    let grandchild: i32 = messages(&first)
        .iter()
        .find_map(|m| m.strip_prefix("child ").map(|p| p.parse().unwrap()))
        .unwrap();
    let leader = c.task_get(&tid("t")).await.unwrap().pid.unwrap() as i32;
    assert!(!process_gone(grandchild));

    let next = "echo \"resumed:$RESUME\"; echo 'done redirected'";
    let t0 = Instant::now();
    let info = c
        .task_interrupt(&tid("t"), next, "alice (member)")
        .await
        .unwrap();
    let elapsed = t0.elapsed();
    assert!(
        elapsed < Duration::from_secs(8),
        "interrupt took {elapsed:?}"
    );
    assert!(
        matches!(info.state, TaskState::Running | TaskState::Completed),
        "{info:?}"
    );
    assert_eq!(info.agent_session_id.as_deref(), Some("s-9"));
    tokio::time::sleep(Duration::from_millis(200)).await;
    assert!(
        process_gone(grandchild),
        "the tool {grandchild} survived the interrupt"
    );
    assert!(
        process_gone(leader),
        "the agent {leader} survived the interrupt"
    );

    let rest = read_until(&mut s, is_turn_over).await;
    let all: Vec<TaskEvent> = first.into_iter().chain(rest).collect();
    assert_contiguous(&all, 1);
    // One turn-over only: the task went on `running` from the interrupted turn to the next.
    assert_eq!(
        all.iter().filter(|e| is_turn_over(e)).count(),
        1,
        "{all:#?}"
    );
    assert!(is_status(all.last().unwrap(), TaskState::Completed));
    let at = all
        .iter()
        .position(|e| matches!(e.kind, EventKind::TurnInterrupted { .. }))
        .expect("a turn_interrupted event");
    assert_eq!(
        all[at].kind,
        EventKind::TurnInterrupted {
            by: Some("alice (member)".into()),
            new_conversation: false
        }
    );
    assert_eq!(
        all[at + 1].kind,
        EventKind::UserMessage { text: next.into() }
    );
    assert_eq!(messages(&all[at..]), ["resumed:s-9"]);
    assert!(all[at..].iter().any(|e| e.kind
        == EventKind::TurnCompleted {
            result: Some("redirected".into())
        }));

    // No turn in flight: an interrupt is a plain follow-up.
    let last = all.last().unwrap().seq;
    c.task_interrupt(&tid("t"), "echo plain", "bob (member)")
        .await
        .unwrap();
    let mut s = c.task_events(&tid("t"), last).await.unwrap();
    let more = read_until(&mut s, is_turn_over).await;
    assert!(!more
        .iter()
        .any(|e| matches!(e.kind, EventKind::TurnInterrupted { .. })));
    assert_eq!(messages(&more), ["plain"]);
    d.stop().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn two_interrupts_at_once_one_wins_and_cancel_stays_final() {
    let d = start().await;
    let c = &d.client;
    c.task_start(d.spec("two", "echo 'session s2'; sleep 60"))
        .await
        .unwrap();
    wait_for(c, "two", |i| i.agent_session_id.is_some()).await;
    let id = tid("two");
    let (a, b) = tokio::join!(
        c.task_interrupt(&id, "echo 'from a'; sleep 60", "a"),
        c.task_interrupt(&id, "echo 'from b'; sleep 60", "b")
    );
    let (won, lost) = match (a, b) {
        (Ok(_), Err(e)) => ("a", e),
        (Err(e), Ok(_)) => ("b", e),
        other => panic!("expected one interrupt to win: {other:?}"),
    };
    match lost {
        DaemonError::Conflict(m) => assert!(m.contains("already being interrupted"), "{m}"),
        other => panic!("expected a conflict, got {other:?}"),
    }
    let mut s = c.task_events(&id, 0).await.unwrap();
    let events = read_until(
        &mut s,
        |e| matches!(&e.kind, EventKind::Message { text } if text.starts_with("from ")),
    )
    .await;
    assert_eq!(messages(&events).last().unwrap(), &format!("from {won}"));
    assert_eq!(user_messages(&events).len(), 2, "{events:#?}");

    // A cancel ends the redirected turn for good.
    let info = c.task_cancel(&id).await.unwrap();
    assert_eq!(info.state, TaskState::Cancelled);
    match c.task_interrupt(&id, "echo more", "a").await {
        Err(DaemonError::Conflict(m)) => assert!(m.contains("cancelled"), "{m}"),
        other => panic!("expected a conflict, got {other:?}"),
    }
    d.stop().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn an_interrupt_before_any_session_id_starts_a_new_conversation_with_both_messages() {
    let d = start().await;
    let c = &d.client;
    // No `session` line: the agent never reports a session id in its first turn.
    let first = "if [ -e once ]; then echo second-run; else touch once; sleep 60; fi";
    c.task_start(d.spec("fresh", first)).await.unwrap();
    wait_for(c, "fresh", |i| i.state == TaskState::Running).await;
    // Running is said when the agent is spawned; under load its shell may not have made its
    // mark yet, and interrupted before that, the new conversation would sleep too.
    let mark = d.home().join("once");
    let deadline = Instant::now() + Duration::from_secs(20);
    while !mark.exists() {
        assert!(
            std::time::Instant::now() < deadline,
            "the first run never started"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let next = "echo \"resume:[$RESUME]\"";
    c.task_interrupt(&tid("fresh"), next, "carol (admin)")
        .await
        .unwrap();
    let events = run_to_end(c, "fresh").await;
    assert_contiguous(&events, 1);
    assert!(
        is_status(events.last().unwrap(), TaskState::Completed),
        "{events:#?}"
    );
    assert!(events.iter().any(|e| e.kind
        == EventKind::TurnInterrupted {
            by: Some("carol (admin)".into()),
            new_conversation: true
        }));
    // The new conversation's prompt was the original one followed by the new message.
    assert_eq!(messages(&events), ["second-run", "resume:[]"]);
    assert_eq!(user_messages(&events), [first, next]);
    d.stop().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn an_interrupt_racing_the_end_of_a_turn_always_starts_the_next_turn() {
    let d = start().await;
    let c = &d.client;
    for i in 0..6 {
        let id = format!("race{i}");
        c.task_start(d.spec(&id, &format!("echo 'session r{i}'; sleep 0.0{i}")))
            .await
            .unwrap();
        // Sometimes the turn is still running, sometimes just over, sometimes completed.
        tokio::time::sleep(Duration::from_millis(10 * i)).await;
        c.task_interrupt(&tid(&id), "echo \"next:$RESUME\"", "racer")
            .await
            .unwrap();
        let mut s = c.task_events(&tid(&id), 0).await.unwrap();
        let events = read_until(
            &mut s,
            |e| matches!(&e.kind, EventKind::Message { text } if text.starts_with("next:")),
        )
        .await;
        let info = wait_for(c, &id, |t| t.state == TaskState::Completed).await;
        assert_contiguous(&events, 1);
        assert_eq!(
            user_messages(&events).last().unwrap(),
            "echo \"next:$RESUME\""
        );
        assert!(info.last_seq >= events.last().unwrap().seq);
    }
    d.stop().await;
}
