//! Workspace start latency: `berth` create → shell ready, side by side with the raw engine's
//! create + start of the same image through the same API, in the same run.
//!
//! `cargo bench -p berth-bin --bench start` (needs the engine and the base image; builds it if
//! missing). Prints min / median / max per mode and the berth/raw ratio of the medians.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::print_stdout)]

use std::time::{Duration, Instant};

use berth_runtime::{ContainerSpec, DockerRuntime, Mount, Runtime};
use berth_test_support::{ensure_image, TestServer};
use serde_json::json;

const SEQUENTIAL: usize = 20;
const PARALLEL: usize = 10;
const MEMORY: i64 = 256 << 20;

fn stats(mut v: Vec<Duration>) -> (f64, f64, f64) {
    v.sort();
    let ms = |d: Duration| d.as_secs_f64() * 1000.0;
    (ms(v[0]), ms(v[v.len() / 2]), ms(v[v.len() - 1]))
}

fn row(label: &str, v: &[Duration]) -> f64 {
    let (min, med, max) = stats(v.to_vec());
    println!("| {label:<44} | {min:>7.0} | {med:>7.0} | {max:>7.0} |");
    med
}

/// berth: POST /workspaces returns once the workspace daemon answered its handshake; then one
/// exec round trip proves a shell can run.
async fn berth_once(s: &TestServer, name: &str) -> Duration {
    let t = Instant::now();
    let (st, v) = s
        .call(
            "POST",
            "/api/v1/workspaces",
            Some(json!({"name": name, "memory": "256m", "network": "none"})),
        )
        .await;
    assert_eq!(st, 201, "{v}");
    let out = s
        .exec(&format!("default/{name}"), &["sh", "-c", "echo ready"])
        .await;
    assert_eq!(out["stdout"], "ready\n");
    t.elapsed()
}

fn raw_spec(image: &str, name: &str) -> ContainerSpec {
    ContainerSpec {
        name: name.to_owned(),
        image: image.to_owned(),
        cmd: vec!["sleep".into(), "infinity".into()],
        memory_bytes: MEMORY,
        nano_cpus: 1_000_000_000,
        pids_limit: 1024,
        network_mode: "none".into(),
        labels: [("berth.bench".to_owned(), "raw".to_owned())].into(),
        ..Default::default()
    }
}

/// Raw engine: create + start, returning when the engine reports the container started.
async fn raw_once(rt: &DockerRuntime, image: &str, name: &str) -> Duration {
    let t = Instant::now();
    let id = rt.create_container(&raw_spec(image, name)).await.unwrap();
    rt.start_container(&id).await.unwrap();
    t.elapsed()
}

/// The user namespace the server gives workspace containers (as `lifecycle::userns_mode`
/// decides it): `BERTH_USERNS` (`auto`/`off`, which the bench's server inherits), else `auto` on
/// Podman when /etc/subuid and /etc/subgid give `containers` a range.
fn server_userns(engine: &str) -> Option<String> {
    let range = |f: &str| {
        std::fs::read_to_string(f).is_ok_and(|t| t.lines().any(|l| l.starts_with("containers:")))
    };
    let on = match std::env::var("BERTH_USERNS").ok().as_deref() {
        Some("off") => false,
        Some("auto") => true,
        _ => {
            engine.to_ascii_lowercase().contains("podman")
                && range("/etc/subuid")
                && range("/etc/subgid")
        }
    };
    on.then(|| "auto".to_owned())
}

/// Raw engine with what a workspace container is on top: a fresh named volume at /home/agent
/// (the engine copies the image's home into it on first mount), the bind mounts (the daemon
/// binary, the channel read-only and its daemon directory writable), a read-only image with
/// tmpfs scratch space, and the workspace's user namespace (`userns`; with it the engine
/// chowns the volume and the writable bind to the container's range). As in berth, containers
/// in a user namespace are created one at a time (`one`): ten concurrent `userns=auto` creates
/// of this baseline hung Podman 4.3.1 in a run.
async fn raw_mounts_once(
    rt: &DockerRuntime,
    image: &str,
    name: &str,
    chan: &std::path::Path,
    userns: Option<&str>,
    one: &tokio::sync::Mutex<()>,
) -> Duration {
    let t = Instant::now();
    let volume = format!("{name}-home");
    rt.ensure_volume(
        &volume,
        &[("berth.bench".to_owned(), "raw".to_owned())].into(),
    )
    .await
    .unwrap();
    let mut spec = raw_spec(image, name);
    spec.mounts = vec![
        Mount::Volume {
            name: volume,
            target: "/home/agent".into(),
        },
        Mount::Bind {
            source: std::path::PathBuf::from(env!("CARGO_BIN_EXE_berth")),
            target: "/opt/berth/berth".into(),
            read_only: true,
        },
        Mount::Bind {
            source: chan.to_owned(),
            target: "/run/berth".into(),
            read_only: true,
        },
        Mount::Bind {
            source: chan.join("daemon"),
            target: "/run/berth/daemon".into(),
            read_only: false,
        },
    ];
    spec.readonly_rootfs = true;
    spec.userns = userns.map(str::to_owned);
    let guard = match userns {
        Some(_) => Some(one.lock().await),
        None => None,
    };
    let id = rt.create_container(&spec).await.unwrap();
    drop(guard);
    rt.start_container(&id).await.unwrap();
    t.elapsed()
}

async fn cleanup_raw(rt: &DockerRuntime) {
    for c in rt.list_containers("berth.bench=raw").await.unwrap() {
        rt.remove_container(&c.id).await.unwrap();
        rt.remove_volume(&format!("{}-home", c.name)).await.unwrap();
    }
}

async fn cleanup_berth(s: &TestServer) {
    let list = s.get("/api/v1/workspaces").await;
    for w in list.as_array().unwrap() {
        let id = w["id"].as_str().unwrap();
        let (st, _) = s
            .call(
                "DELETE",
                &format!("/api/v1/workspaces/{id}?volume=true"),
                None,
            )
            .await;
        assert_eq!(st, 204);
    }
}

#[tokio::main]
async fn main() {
    let image = ensure_image().await;
    let rt = DockerRuntime::connect(Some(&berth_test_support::engine())).unwrap();
    let bin = std::path::PathBuf::from(env!("CARGO_BIN_EXE_berth"));
    let s = TestServer::start(&bin).await;
    let info = rt.info().await.unwrap();
    let userns = server_userns(&info.engine);
    let userns = userns.as_deref();
    let one = tokio::sync::Mutex::new(());
    let one = &one;
    cleanup_raw(&rt).await;
    // Warm-up: first start after an image build pays for layer setup; measure steady state.
    raw_once(&rt, &image, "berth-bench-warm").await;
    berth_once(&s, "warm").await;
    cleanup_raw(&rt).await;
    cleanup_berth(&s).await;

    // Interleave berth and raw so machine noise hits both alike.
    let chan = tempfile::tempdir().unwrap();
    std::fs::create_dir(chan.path().join("daemon")).unwrap();
    let (mut berth_seq, mut raw_seq, mut rawm_seq) = (Vec::new(), Vec::new(), Vec::new());
    for i in 0..SEQUENTIAL {
        berth_seq.push(berth_once(&s, &format!("seq-{i}")).await);
        raw_seq.push(raw_once(&rt, &image, &format!("berth-bench-raw-{i}")).await);
        rawm_seq.push(
            raw_mounts_once(
                &rt,
                &image,
                &format!("berth-bench-rawm-{i}"),
                chan.path(),
                userns,
                one,
            )
            .await,
        );
    }
    cleanup_raw(&rt).await;
    cleanup_berth(&s).await;

    let t = Instant::now();
    let berth_par: Vec<Duration> = futures_util::future::join_all((0..PARALLEL).map(|i| {
        let s = &s;
        async move { berth_once(s, &format!("par-{i}")).await }
    }))
    .await;
    let berth_wall = t.elapsed();
    cleanup_berth(&s).await;
    let t = Instant::now();
    let raw_par: Vec<Duration> = futures_util::future::join_all((0..PARALLEL).map(|i| {
        let rt = &rt;
        let image = &image;
        async move { raw_once(rt, image, &format!("berth-bench-rawp-{i}")).await }
    }))
    .await;
    let raw_wall = t.elapsed();
    cleanup_raw(&rt).await;
    let t = Instant::now();
    let rawm_par: Vec<Duration> = futures_util::future::join_all((0..PARALLEL).map(|i| {
        let rt = &rt;
        let image = &image;
        let chan = chan.path();
        async move {
            raw_mounts_once(
                rt,
                image,
                &format!("berth-bench-rawmp-{i}"),
                chan,
                userns,
                one,
            )
            .await
        }
    }))
    .await;
    let rawm_wall = t.elapsed();
    cleanup_raw(&rt).await;

    println!(
        "engine: {} {} at {}; image {image}; workspace user namespace: {}",
        info.engine,
        info.version,
        rt.endpoint(),
        userns.unwrap_or("none (host uids)")
    );
    println!();
    println!("| mode (ms)                                    |     min |  median |     max |");
    println!("|----------------------------------------------|---------|---------|---------|");
    let b1 = row(
        &format!("berth create → shell ready, {SEQUENTIAL} sequential"),
        &berth_seq,
    );
    let r1 = row(
        &format!("raw engine create+start, {SEQUENTIAL} sequential"),
        &raw_seq,
    );
    let m1 = row(
        &format!("raw + volume + mounts, {SEQUENTIAL} sequential"),
        &rawm_seq,
    );
    let b2 = row(
        &format!("berth create → shell ready, {PARALLEL} parallel"),
        &berth_par,
    );
    let r2 = row(
        &format!("raw engine create+start, {PARALLEL} parallel"),
        &raw_par,
    );
    let m2 = row(
        &format!("raw + volume + mounts, {PARALLEL} parallel"),
        &rawm_par,
    );
    println!();
    println!("ratio berth / raw (median), sequential: {:.2}", b1 / r1);
    println!("ratio berth / raw (median), parallel:   {:.2}", b2 / r2);
    println!(
        "ratio berth / raw+volume+mounts (median), sequential: {:.2}",
        b1 / m1
    );
    println!(
        "ratio berth / raw+volume+mounts (median), parallel:   {:.2}",
        b2 / m2
    );
    let ms = |d: Duration| d.as_secs_f64() * 1000.0;
    println!(
        "parallel wall time for all {PARALLEL}: berth {:.0} ms, raw {:.0} ms, raw+volume+mounts {:.0} ms",
        ms(berth_wall),
        ms(raw_wall),
        ms(rawm_wall)
    );
}
