//! Integration tests against the real engine (Podman's Docker-compatible
//! service at /run/podman/podman.sock here and in CI; Docker works too).
//!
//! Skipped, with a printed reason, only when no engine socket exists.
//! The first test to need it builds the real workspace image (cached by its
//! content-addressed tag, so reruns skip the build).
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::{Duration, Instant};

use berth_runtime::image::{build_image, ImageRecipe};
use berth_runtime::{
    memcg_oom_kills, ContainerSpec, ContainerState, DockerRuntime, Mount, Runtime, RuntimeError,
};
use futures_util::StreamExt;
use tokio::sync::OnceCell;

static IMAGE: OnceCell<String> = OnceCell::const_new();
static COUNTER: AtomicU32 = AtomicU32::new(0);

fn engine() -> Option<DockerRuntime> {
    let have_socket = std::env::var("DOCKER_HOST").is_ok_and(|v| !v.is_empty())
        || berth_runtime::default_socket_candidates()
            .iter()
            .any(|p| Path::new(p).exists());
    if !have_socket {
        eprintln!(
            "SKIP: no container engine socket (DOCKER_HOST unset, none of {:?} exists)",
            berth_runtime::default_socket_candidates()
        );
        return None;
    }
    Some(DockerRuntime::connect(None).expect("engine socket exists but connect failed"))
}

fn unique(kind: &str) -> String {
    let n = COUNTER.fetch_add(1, Ordering::SeqCst);
    let t = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .subsec_nanos();
    format!("berth-test-{kind}-{}-{n}-{t:x}", std::process::id())
}

/// The real workspace image, built once per test binary run (skipped when the tag exists).
async fn workspace_image(rt: &DockerRuntime) -> String {
    IMAGE
        .get_or_init(|| async {
            let recipe = ImageRecipe::default();
            let out = build_image(rt, &recipe, false, |p| {
                if p.step != berth_runtime::image::BuildStep::Debootstrap
                    || p.line.starts_with("I: Base")
                    || p.line.starts_with("I: Retrieving Release ")
                {
                    eprintln!("[{}] {}", p.step, p.line);
                }
            })
            .await
            .expect("workspace image build");
            eprintln!(
                "image {} skipped={} base_reused={} in {:?} {:?}",
                out.tag, out.skipped, out.base_reused, out.duration, out.timings
            );
            out.tag
        })
        .await
        .clone()
}

/// Removes the named containers and volumes when dropped, also when a test panics.
struct Cleanup {
    containers: Vec<String>,
    volumes: Vec<String>,
}

impl Cleanup {
    fn new() -> Self {
        Self {
            containers: Vec::new(),
            volumes: Vec::new(),
        }
    }
}

impl Drop for Cleanup {
    fn drop(&mut self) {
        let containers = std::mem::take(&mut self.containers);
        let volumes = std::mem::take(&mut self.volumes);
        // A separate thread + runtime: Drop may run inside (or outside) the test's runtime.
        let _ = std::thread::spawn(move || {
            let Ok(rt) = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
            else {
                return;
            };
            rt.block_on(async {
                let Ok(engine) = DockerRuntime::connect(None) else {
                    return;
                };
                for c in containers {
                    if let Err(e) = engine.remove_container(&c).await {
                        eprintln!("cleanup: container {c}: {e}");
                    }
                }
                for v in volumes {
                    if let Err(e) = engine.remove_volume(&v).await {
                        eprintln!("cleanup: volume {v}: {e}");
                    }
                }
            });
        })
        .join();
    }
}

fn spec(name: &str, image: &str, cmd: &[&str]) -> ContainerSpec {
    let mut labels = HashMap::new();
    labels.insert("berth.test".to_string(), name.to_string());
    ContainerSpec {
        name: name.to_string(),
        image: image.to_string(),
        user: "1000:1000".into(),
        cmd: cmd.iter().map(|s| s.to_string()).collect(),
        labels,
        memory_bytes: 256 << 20,
        nano_cpus: 500_000_000,
        pids_limit: 128,
        network_mode: "none".into(),
        init: true,
        ..Default::default()
    }
}

async fn logs(rt: &DockerRuntime, id: &str) -> String {
    let mut s = rt.client().logs(
        id,
        Some(bollard::container::LogsOptions::<String> {
            stdout: true,
            stderr: true,
            ..Default::default()
        }),
    );
    let mut out = String::new();
    while let Some(item) = s.next().await {
        out.push_str(&item.expect("logs").to_string());
    }
    out
}

/// Create, start, wait; returns (exit code, output). The container is removed by `cleanup`.
async fn run(rt: &DockerRuntime, cleanup: &mut Cleanup, spec: &ContainerSpec) -> (i64, String) {
    cleanup.containers.push(spec.name.clone());
    let id = rt.create_container(spec).await.expect("create");
    rt.start_container(&id).await.expect("start");
    let code = tokio::time::timeout(Duration::from_secs(120), rt.wait_container(&id))
        .await
        .expect("wait timed out")
        .expect("wait");
    (code, logs(rt, &id).await)
}

#[tokio::test]
async fn image_build_is_cached_and_has_the_toolchain() {
    let Some(rt) = engine() else { return };
    let tag = workspace_image(&rt).await;
    assert!(rt.image_exists(&tag).await.unwrap());
    assert!(rt
        .image_exists("localhost/berth-workspace:latest")
        .await
        .unwrap());

    // Second build: skipped because the tag exists.
    let t = Instant::now();
    let out = build_image(&rt, &ImageRecipe::default(), false, |_| {})
        .await
        .unwrap();
    assert!(out.skipped);
    assert_eq!(out.tag, tag);
    assert!(t.elapsed() < Duration::from_secs(5));

    let mut cleanup = Cleanup::new();
    let script = "set -e; id; echo HOME=$HOME; pwd; node --version; npm --version; \
        git --version; tmux -V; python3 --version; gcc --version | head -1; make --version | head -1; \
        ps --version; ip -V; less --version | head -1; curl --version | head -1; \
        stat -c 'runberth=%u:%g:%a' /run/berth; echo NODE_EXTRA_CA_CERTS=$NODE_EXTRA_CA_CERTS; \
        for f in /usr/local/share/ca-certificates/*.crt; do [ -e \"$f\" ] && echo ca=$(basename $f); done; \
        echo claude=$(claude --version); echo codex=$(codex --version); \
        echo gemini=$(gemini --version 2>/dev/null); echo opencode=$(opencode --version 2>/dev/null); true";
    let s = spec(&unique("image"), &tag, &["bash", "-c", script]);
    let (code, out) = run(&rt, &mut cleanup, &s).await;
    eprintln!("{out}");
    assert_eq!(code, 0, "{out}");
    assert!(out.contains("uid=1000(agent) gid=1000(agent)"), "{out}");
    assert!(out.contains("HOME=/home/agent"), "{out}");
    assert!(out.contains("\n/home/agent\n"), "{out}");
    assert!(out.contains("v22.23.3"), "{out}");
    assert!(out.contains("\n10.9.9\n"), "{out}");
    assert!(out.contains("gcc"), "{out}");
    assert!(out.contains("runberth=1000:1000:755"), "{out}");
    assert!(
        out.contains("NODE_EXTRA_CA_CERTS=/etc/ssl/certs/ca-certificates.crt"),
        "{out}"
    );
    // The pinned agent CLIs, runnable by the agent user.
    assert!(out.contains("claude=2.1.330 (Claude Code)"), "{out}");
    assert!(out.contains("codex=codex-cli 0.169.0"), "{out}");
    assert!(out.contains("gemini=0.61.0"), "{out}");
    assert!(out.contains("opencode=1.18.33"), "{out}");
    for ca in ImageRecipe::default().extra_ca_files() {
        assert!(out.contains(&format!("ca={}", ca.file_name)), "{out}");
    }
}

#[tokio::test]
async fn create_applies_hardening() {
    let Some(rt) = engine() else { return };
    let image = workspace_image(&rt).await;
    let mut cleanup = Cleanup::new();
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("hello.txt"), "from-host").unwrap();
    let mut s = spec(
        &unique("hard"),
        &image,
        &[
            "sh",
            "-c",
            "id -u; id -g; grep -E '^(CapEff|CapPrm|CapBnd|NoNewPrivs)' /proc/self/status; \
             cat /run/host/hello.txt; echo; touch /run/host/x 2>/dev/null && echo writable || echo readonly; \
             tail -n +3 /proc/net/dev | cut -d: -f1 | tr -d ' '; cat /proc/1/comm",
        ],
    );
    s.mounts.push(Mount::Bind {
        source: dir.path().to_path_buf(),
        target: "/run/host".into(),
        read_only: true,
    });
    s.hostname = Some("ws-host".into());
    cleanup.containers.push(s.name.clone());
    let id = rt.create_container(&s).await.unwrap();

    let st = rt.inspect_container(&s.name).await.unwrap().unwrap();
    assert_eq!(st.id, id);
    assert_eq!(st.state, ContainerState::Created);
    assert_eq!(st.pid, None);
    assert_eq!(st.exit_code, None);
    assert_eq!(st.image, image);
    assert_eq!(st.labels.get("berth.test"), Some(&s.name));

    let raw = rt.client().inspect_container(&id, None).await.unwrap();
    let hc = raw.host_config.unwrap();
    eprintln!(
        "CapDrop={:?} CapAdd={:?} SecurityOpt={:?} Memory={:?} MemorySwap={:?} NanoCpus={:?} CpuQuota={:?} PidsLimit={:?} Init={:?} NetworkMode={:?}",
        hc.cap_drop, hc.cap_add, hc.security_opt, hc.memory, hc.memory_swap, hc.nano_cpus, hc.cpu_quota, hc.pids_limit, hc.init, hc.network_mode
    );
    let cap_drop = hc.cap_drop.unwrap_or_default();
    // Docker echoes ["ALL"]; Podman lists the default capabilities it dropped.
    assert!(
        cap_drop.iter().any(|c| c == "ALL")
            || cap_drop.iter().any(|c| c.contains("CHOWN"))
                && cap_drop.iter().any(|c| c.contains("NET_RAW")),
        "{cap_drop:?}"
    );
    assert!(hc.cap_add.unwrap_or_default().is_empty());
    assert!(hc
        .security_opt
        .unwrap_or_default()
        .iter()
        .any(|o| o.contains("no-new-privileges")));
    assert_eq!(hc.memory, Some(256 << 20));
    assert_eq!(hc.memory_swap, Some(256 << 20));
    assert_eq!(hc.pids_limit, Some(128));
    assert!(
        hc.nano_cpus == Some(500_000_000)
            || (hc.cpu_quota == Some(50_000) && hc.cpu_period == Some(100_000)),
        "nano_cpus={:?} quota={:?} period={:?}",
        hc.nano_cpus,
        hc.cpu_quota,
        hc.cpu_period
    );
    assert_eq!(hc.init, Some(true));
    assert_ne!(hc.privileged, Some(true));
    assert_eq!(raw.config.unwrap().user.as_deref(), Some("1000:1000"));

    rt.start_container(&id).await.unwrap();
    let code = tokio::time::timeout(Duration::from_secs(60), rt.wait_container(&id))
        .await
        .unwrap()
        .unwrap();
    let out = logs(&rt, &id).await;
    eprintln!("{out}");
    assert_eq!(code, 0, "{out}");
    let lines: Vec<&str> = out.lines().map(str::trim).collect();
    assert_eq!(&lines[..2], &["1000", "1000"], "{out}");
    assert!(out.contains("CapEff:\t0000000000000000"), "{out}");
    assert!(out.contains("CapPrm:\t0000000000000000"), "{out}");
    assert!(out.contains("CapBnd:\t0000000000000000"), "{out}");
    assert!(out.contains("NoNewPrivs:\t1"), "{out}");
    assert!(out.contains("from-host"), "{out}");
    assert!(out.contains("readonly"), "{out}");
    // NetworkMode none: only loopback.
    assert!(lines.contains(&"lo"), "{out}");
    assert!(!lines.iter().any(|l| l.starts_with("eth")), "{out}");
    // Init: pid 1 is the engine's init, not sh.
    assert_ne!(lines.last().copied(), Some("sh"), "{out}");

    let st = rt.inspect_container(&id).await.unwrap().unwrap();
    assert_eq!(st.state, ContainerState::Exited);
    assert_eq!(st.exit_code, Some(0));
    assert!(st.started_at.is_some() && st.finished_at.is_some());

    // The engine socket can never be mounted.
    let mut bad = spec(&unique("sock"), &image, &["true"]);
    bad.mounts.push(Mount::Bind {
        source: PathBuf::from("/run"),
        target: "/host-run".into(),
        read_only: true,
    });
    assert!(matches!(
        rt.create_container(&bad).await,
        Err(RuntimeError::InvalidSpec(_))
    ));
}

#[tokio::test]
async fn stop_is_fast_with_init_and_remove_is_idempotent() {
    let Some(rt) = engine() else { return };
    let image = workspace_image(&rt).await;
    let mut cleanup = Cleanup::new();
    let s = spec(&unique("stop"), &image, &["sleep", "infinity"]);
    cleanup.containers.push(s.name.clone());
    let id = rt.create_container(&s).await.unwrap();
    rt.start_container(&id).await.unwrap();
    rt.start_container(&id).await.unwrap(); // already running: ok
    let st = rt.inspect_container(&id).await.unwrap().unwrap();
    assert_eq!(st.state, ContainerState::Running);
    assert!(st.pid.is_some_and(|p| p > 1));
    assert!(st.started_at.is_some());

    let waiter = {
        let rt = rt.clone();
        let id = id.clone();
        tokio::spawn(async move { rt.wait_container(&id).await })
    };
    let t = Instant::now();
    rt.stop_container(&id, Duration::from_secs(10))
        .await
        .unwrap();
    let took = t.elapsed();
    eprintln!("stop took {took:?}");
    assert!(took < Duration::from_secs(5), "stop took {took:?}");
    let code = tokio::time::timeout(Duration::from_secs(30), waiter)
        .await
        .unwrap()
        .unwrap()
        .unwrap();
    assert_eq!(code, 143, "SIGTERM via init");
    rt.stop_container(&id, Duration::from_secs(1))
        .await
        .unwrap(); // already stopped: ok
    let st = rt.inspect_container(&id).await.unwrap().unwrap();
    assert_eq!(st.state, ContainerState::Exited);
    assert_eq!(st.pid, None);

    // Restart (workspace resume) works.
    rt.start_container(&id).await.unwrap();
    assert_eq!(
        rt.inspect_container(&id).await.unwrap().unwrap().state,
        ContainerState::Running
    );

    rt.remove_container(&id).await.unwrap(); // force-removes the running container
    rt.remove_container(&id).await.unwrap();
    rt.remove_container(&s.name).await.unwrap();
    assert_eq!(rt.inspect_container(&id).await.unwrap(), None);
    assert!(matches!(
        rt.wait_container(&id).await,
        Err(RuntimeError::NotFound(_))
    ));
    assert!(matches!(
        rt.stop_container(&id, Duration::from_secs(1)).await,
        Err(RuntimeError::NotFound(_))
    ));
    assert!(matches!(
        rt.start_container(&id).await,
        Err(RuntimeError::NotFound(_))
    ));
}

#[tokio::test]
async fn wait_returns_exit_code() {
    let Some(rt) = engine() else { return };
    let image = workspace_image(&rt).await;
    let mut cleanup = Cleanup::new();
    let s = spec(&unique("wait"), &image, &["sh", "-c", "echo bye; exit 7"]);
    let (code, out) = run(&rt, &mut cleanup, &s).await;
    assert_eq!(code, 7);
    assert_eq!(out.trim(), "bye");
    let st = rt.inspect_container(&s.name).await.unwrap().unwrap();
    assert_eq!(st.exit_code, Some(7));
    // Waiting on an exited container returns at once.
    let t = Instant::now();
    assert_eq!(rt.wait_container(&s.name).await.unwrap(), 7);
    assert!(t.elapsed() < Duration::from_secs(5));
}

#[tokio::test]
async fn volume_persists_across_containers() {
    let Some(rt) = engine() else { return };
    let image = workspace_image(&rt).await;
    let mut cleanup = Cleanup::new();
    let vol = unique("vol");
    cleanup.volumes.push(vol.clone());
    let mut labels = HashMap::new();
    labels.insert("berth.test".to_string(), vol.clone());
    assert!(!rt.volume_exists(&vol).await.unwrap());
    rt.ensure_volume(&vol, &labels).await.unwrap();
    rt.ensure_volume(&vol, &labels).await.unwrap();
    assert!(rt.volume_exists(&vol).await.unwrap());

    let mount = Mount::Volume {
        name: vol.clone(),
        target: "/home/agent".into(),
    };
    let mut a = spec(
        &unique("vol-a"),
        &image,
        &["sh", "-c", "echo persisted-$((6*7)) > /home/agent/note.txt"],
    );
    a.mounts.push(mount.clone());
    let (code, out) = run(&rt, &mut cleanup, &a).await;
    assert_eq!(code, 0, "{out}");
    rt.remove_container(&a.name).await.unwrap();
    assert!(rt.volume_exists(&vol).await.unwrap());

    let mut b = spec(&unique("vol-b"), &image, &["cat", "/home/agent/note.txt"]);
    b.mounts.push(mount);
    let (code, out) = run(&rt, &mut cleanup, &b).await;
    assert_eq!(code, 0, "{out}");
    assert_eq!(out.trim(), "persisted-42");

    // In use by (stopped) b: the engine refuses.
    assert!(rt.remove_volume(&vol).await.is_err());
    rt.remove_container(&b.name).await.unwrap();
    rt.remove_volume(&vol).await.unwrap();
    rt.remove_volume(&vol).await.unwrap();
    assert!(!rt.volume_exists(&vol).await.unwrap());
}

#[tokio::test]
async fn oom_kill_exits_137_and_is_counted_in_the_memcg() {
    let Some(rt) = engine() else { return };
    let image = workspace_image(&rt).await;
    let mut cleanup = Cleanup::new();

    // 1. pid 1's child allocates 1 GiB under a 128 MiB cap: exit 137.
    let mut s = spec(
        &unique("oom"),
        &image,
        &["python3", "-c", "b = b'x' * (1 << 30)"],
    );
    s.memory_bytes = 128 << 20;
    let t = Instant::now();
    let (code, out) = run(&rt, &mut cleanup, &s).await;
    eprintln!("oom exit {code} after {:?}: {out}", t.elapsed());
    assert_eq!(code, 137, "{out}");
    let st = rt.inspect_container(&s.name).await.unwrap().unwrap();
    assert_eq!(st.exit_code, Some(137));
    eprintln!(
        "engine OOMKilled={} (always false on podman + cgroup v1)",
        st.oom_killed
    );

    // 2. A child gets OOM-killed while the container keeps running: the memcg counter shows it.
    let mut s = spec(
        &unique("oom-live"),
        &image,
        &["sh", "-c", "tail /dev/zero; echo tail-died; sleep 300"],
    );
    s.memory_bytes = 64 << 20;
    cleanup.containers.push(s.name.clone());
    let id = rt.create_container(&s).await.unwrap();
    rt.start_container(&id).await.unwrap();
    let pid = rt
        .inspect_container(&id)
        .await
        .unwrap()
        .unwrap()
        .pid
        .unwrap();
    let before = memcg_oom_kills(pid);
    eprintln!("pid {pid}, oom_kill before: {before:?}");
    let deadline = Instant::now() + Duration::from_secs(60);
    let mut kills = None;
    while Instant::now() < deadline {
        kills = memcg_oom_kills(pid);
        if kills.is_some_and(|k| k > 0) {
            break;
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    eprintln!("oom_kill after: {kills:?}");
    assert!(
        kills.is_some_and(|k| k > 0),
        "no OOM kill counted: {kills:?}"
    );
    let st = rt.inspect_container(&id).await.unwrap().unwrap();
    assert_eq!(st.state, ContainerState::Running);

    // Usage of the surviving container: within the limit.
    let u = rt.usage(&id).await.unwrap();
    eprintln!("usage {u:?}");
    assert_eq!(u.memory_limit_bytes, 64 << 20);
    assert!(u.memory_bytes <= 64 << 20);
    assert!(u.pids >= 1);
}

#[tokio::test]
async fn usage_reports_cpu_memory_and_pids() {
    let Some(rt) = engine() else { return };
    let image = workspace_image(&rt).await;
    let mut cleanup = Cleanup::new();
    let s = spec(
        &unique("usage"),
        &image,
        &["sh", "-c", "while :; do :; done"],
    );
    cleanup.containers.push(s.name.clone());
    let id = rt.create_container(&s).await.unwrap();
    rt.start_container(&id).await.unwrap();
    tokio::time::sleep(Duration::from_millis(500)).await;
    let t = Instant::now();
    let u = rt.usage(&id).await.unwrap();
    eprintln!("usage {u:?} in {:?}", t.elapsed());
    assert_eq!(u.memory_limit_bytes, 256 << 20);
    assert!(u.memory_bytes > 0);
    assert!(u.pids >= 2, "init + sh: {}", u.pids);
    // Busy loop capped at 0.5 CPU.
    assert!(
        u.cpu_percent > 0.0 && u.cpu_percent < 75.0,
        "{}",
        u.cpu_percent
    );
}

#[tokio::test]
async fn list_info_conflict_and_missing_image() {
    let Some(rt) = engine() else { return };
    let image = workspace_image(&rt).await;
    let mut cleanup = Cleanup::new();

    let info = rt.info().await.unwrap();
    eprintln!("{info:?}");
    assert!(
        info.engine == "podman" || info.engine == "docker",
        "{info:?}"
    );
    assert!(!info.version.is_empty() && !info.api_version.is_empty());
    assert!(!info.cgroup_version.is_empty());

    let group = unique("group");
    let mk = |n: &str| {
        let mut s = spec(&unique(n), &image, &["sleep", "infinity"]);
        s.labels.insert("berth.group".into(), group.clone());
        s
    };
    let a = mk("list-a");
    let b = mk("list-b");
    cleanup.containers.push(a.name.clone());
    cleanup.containers.push(b.name.clone());
    let ida = rt.create_container(&a).await.unwrap();
    let idb = rt.create_container(&b).await.unwrap();
    rt.start_container(&idb).await.unwrap();

    let mut listed = rt
        .list_containers(&format!("berth.group={group}"))
        .await
        .unwrap();
    listed.sort_by(|x, y| x.name.cmp(&y.name));
    assert_eq!(listed.len(), 2, "{listed:?}");
    let by_id: HashMap<_, _> = listed.iter().map(|s| (s.id.clone(), s)).collect();
    assert_eq!(by_id[&ida].state, ContainerState::Created);
    assert_eq!(by_id[&idb].state, ContainerState::Running);
    assert_eq!(by_id[&ida].name, a.name);
    assert!(rt
        .list_containers(&format!("berth.group={group}-none"))
        .await
        .unwrap()
        .is_empty());

    // Same name again: Conflict.
    match rt.create_container(&a).await {
        Err(RuntimeError::Conflict(m)) => eprintln!("conflict: {m}"),
        other => panic!("expected Conflict, got {other:?}"),
    }
    // Unknown image: ImageMissing.
    let mut m = spec(
        &unique("noimg"),
        "localhost/berth-no-such-image:nope",
        &["true"],
    );
    cleanup.containers.push(m.name.clone());
    match rt.create_container(&m).await {
        Err(RuntimeError::ImageMissing(msg)) => eprintln!("image missing: {msg}"),
        other => panic!("expected ImageMissing, got {other:?}"),
    }
    assert!(!rt
        .image_exists("localhost/berth-no-such-image:nope")
        .await
        .unwrap());
    m.image = image.clone();
    assert_eq!(rt.inspect_container(&m.name).await.unwrap(), None);
}

#[tokio::test]
async fn unreachable_engine_is_reported_with_a_fix() {
    // Missing socket: connect fails.
    match DockerRuntime::connect(Some("unix:///nonexistent/berth-test.sock")) {
        Err(RuntimeError::Unreachable { endpoint, message }) => {
            assert_eq!(endpoint, "unix:///nonexistent/berth-test.sock");
            assert!(message.contains("podman system service"), "{message}");
        }
        other => panic!("expected Unreachable, got {other:?}"),
    }
    // A socket file nobody listens on: connection refused on the first request.
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("dead.sock");
    drop(std::os::unix::net::UnixListener::bind(&path).unwrap());
    let rt = DockerRuntime::connect(Some(&format!("unix://{}", path.display()))).unwrap();
    match rt.info().await {
        Err(RuntimeError::Unreachable { message, .. }) => {
            eprintln!("{message}");
            assert!(message.contains("podman system service"), "{message}");
        }
        other => panic!("expected Unreachable, got {other:?}"),
    }
    match rt.inspect_container("x").await {
        Err(RuntimeError::Unreachable { .. }) => {}
        other => panic!("expected Unreachable, got {other:?}"),
    }
    // Nothing listening on a TCP port.
    let rt = DockerRuntime::connect(Some("tcp://127.0.0.1:1")).unwrap();
    assert!(matches!(
        rt.info().await,
        Err(RuntimeError::Unreachable { .. })
    ));
}
