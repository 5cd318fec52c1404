//! `berth doctor`'s smoke check against real Podman: it passes on this (set-up) host, and it
//! fails with the engine's own error and a one-line fix when the engine's container init is
//! missing — the fresh-machine failure (`catatonit` not installed) that static checks missed.

use std::process::{Child, Command, Stdio};
use std::time::Duration;

use berth_test_support::{ensure_image, ServerOptions, TestServer};
use serde_json::Value;

use crate::bin;

fn check<'a>(report: &'a Value, name: &str) -> &'a Value {
    report["checks"]
        .as_array()
        .unwrap()
        .iter()
        .find(|c| c["name"] == name)
        .unwrap_or_else(|| panic!("no {name} check in {report}"))
}

/// Containers and volumes the smoke check made that are still there.
/// Smoke objects still on the engine after a while. Other tests' servers run their own smoke
/// checks at the same time (the engine is shared), and theirs are gone within seconds; a
/// leftover of this test's server stays.
async fn smoke_leftovers_after_a_while() -> String {
    let mut left = smoke_leftovers();
    for _ in 0..30 {
        if left.is_empty() {
            break;
        }
        tokio::time::sleep(std::time::Duration::from_secs(1)).await;
        left = smoke_leftovers();
    }
    left
}

fn smoke_leftovers() -> String {
    let ps = Command::new("podman")
        .args(["ps", "-a", "-q", "--filter", "label=berth.smoke"])
        .output()
        .unwrap();
    let vols = Command::new("podman")
        .args(["volume", "ls", "-q", "--filter", "label=berth.smoke"])
        .output()
        .unwrap();
    format!(
        "{}{}",
        String::from_utf8_lossy(&ps.stdout).trim(),
        String::from_utf8_lossy(&vols.stdout).trim()
    )
}

#[tokio::test]
async fn smoke_check_passes_on_a_set_up_host_and_leaves_nothing() {
    ensure_image().await;
    // One LLM provider configured (doctor fails when none is; see `suite::costs`).
    let mock = berth_test_support::mock_llm::MockLlm::start().await;
    let s = TestServer::start_with(
        bin(),
        ServerOptions {
            env: vec![
                ("BERTH_ANTHROPIC_BASE_URL".into(), mock.url()),
                ("BERTH_ANTHROPIC_API_KEY".into(), "real-key".into()),
            ],
            ..Default::default()
        },
    )
    .await;
    let report = s.get("/api/v1/doctor").await;
    let smoke = check(&report, "engine_smoke");
    assert_eq!(smoke["ok"], true, "{report}");
    assert_eq!(report["ok"], true, "{report}");
    assert_eq!(
        smoke_leftovers_after_a_while().await,
        "",
        "the smoke check left objects behind"
    );
}

/// A second Podman API service in a private mount namespace where the container init's directory
/// (`/usr/libexec/podman`, catatonit's home) is hidden under an empty tmpfs: to this engine the
/// host looks like a fresh machine without catatonit, and it answers `Init: true` with the very
/// error a fresh machine gave. (An `init_path` in a throwaway containers.conf does not do it: the
/// Docker-compatible API ignores that setting.) The host's own engine is untouched.
struct BrokenEngine {
    child: Child,
    socket: std::path::PathBuf,
    _dir: tempfile::TempDir,
}

impl BrokenEngine {
    async fn start() -> Self {
        let dir = tempfile::tempdir().unwrap();
        let socket = dir.path().join("podman.sock");
        // The new (private) namespace starts with copies of every mount, other containers' among them;
        // podman's are private, so those copies would keep them busy (EBUSY on their removal)
        // for as long as this engine runs. Detach them first: this engine never gets as far as
        // mounting anything.
        let script = format!(
            "awk '$5 ~ \"^/(var/lib/containers|run/containers|run/netns|var/run/netns)/\" {{print $5}}' /proc/self/mountinfo \
             | sort -r | xargs -r -n1 umount -l 2>/dev/null; \
             mount -t tmpfs berth-test /usr/libexec/podman && exec podman system service --time=0 unix://{}",
            socket.display()
        );
        let child = Command::new("unshare")
            .args(["--mount", "--propagation", "private", "sh", "-c", &script])
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        for _ in 0..100 {
            if socket.exists() {
                break;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        assert!(
            socket.exists(),
            "the throwaway podman service did not start"
        );
        Self {
            child,
            socket,
            _dir: dir,
        }
    }
}

impl Drop for BrokenEngine {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Fails without the smoke check: every static check (engine reachable, runc, drop-in present,
/// image present) passes against this engine, so doctor said "all checks passed".
#[tokio::test]
async fn smoke_check_names_the_missing_init_and_its_fix() {
    ensure_image().await;
    let engine = BrokenEngine::start().await;
    let s = TestServer::start_with(
        bin(),
        ServerOptions {
            env: vec![(
                "DOCKER_HOST".into(),
                format!("unix://{}", engine.socket.display()),
            )],
            ..Default::default()
        },
    )
    .await;
    let report = s.get("/api/v1/doctor").await;
    assert_eq!(check(&report, "engine")["ok"], true, "{report}");
    assert_eq!(check(&report, "image")["ok"], true, "{report}");
    let smoke = check(&report, "engine_smoke");
    assert_eq!(smoke["ok"], false, "{report}");
    let detail = smoke["detail"].as_str().unwrap();
    assert!(
        detail.contains("container-init binary not found on the host"),
        "{detail}"
    );
    assert!(
        smoke["fix"].as_str().unwrap().contains("catatonit"),
        "{smoke}"
    );
    assert_eq!(report["ok"], false);

    // The CLI: non-zero, and the fix printed.
    let o = s.cli(&["doctor"]);
    let out = format!(
        "{}{}",
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr)
    );
    assert!(!o.status.success(), "{out}");
    assert!(
        out.contains("apt-get install --no-install-recommends catatonit"),
        "{out}"
    );
    assert_eq!(
        smoke_leftovers_after_a_while().await,
        "",
        "the smoke check left objects behind"
    );
}
