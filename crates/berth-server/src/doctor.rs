//! `GET /api/v1/doctor`: every prerequisite of the server checked, each failure with a fix.

use std::path::Path;

use berth_api::{Check, DoctorReport};

use crate::state::AppState;

pub async fn run(state: &AppState) -> DoctorReport {
    let mut checks = vec![
        data_dir(&state.config.data_dir, state.config.disk),
        staged_binary(state),
    ];
    let engine = state.host.runtime.info().await;
    match &engine {
        Ok(info) => {
            checks.push(ok(
                "engine",
                format!(
                    "{} {} (API {}) at {}",
                    info.engine,
                    info.version,
                    info.api_version,
                    state.engine_endpoint()
                ),
            ));
            checks.push(engine_config(info));
            let tag = state.default_image();
            let image = match state.host.runtime.image_exists(&tag).await {
                Ok(true) => ok("image", format!("{tag} is present")),
                Ok(false) => fail("image", format!("{tag} is missing"), "berth image build"),
                Err(e) => fail("image", e.to_string(), "fix the engine check first"),
            };
            let have_image = image.ok;
            checks.push(image);
            checks.push(if have_image {
                crate::smoke::check(state, &tag).await
            } else {
                fail(
                    "engine_smoke",
                    "skipped: needs the workspace base image".into(),
                    "berth image build, then berth doctor again",
                )
            });
        }
        Err(e) => {
            checks.push(fail(
                "engine",
                e.to_string(),
                "start Podman's Docker-compatible service: podman system service --time=0 unix:///run/podman/podman.sock & (or set DOCKER_HOST)",
            ));
        }
    }
    checks.push(debootstrap());
    DoctorReport {
        ok: checks.iter().all(|c| c.ok),
        checks,
    }
}

fn ok(name: &str, detail: String) -> Check {
    Check {
        name: name.to_owned(),
        ok: true,
        detail,
        fix: None,
    }
}

fn fail(name: &str, detail: String, fix: &str) -> Check {
    Check {
        name: name.to_owned(),
        ok: false,
        detail,
        fix: Some(fix.to_owned()),
    }
}

fn data_dir(dir: &Path, t: crate::config::DiskThresholds) -> Check {
    let probe = dir.join(".doctor-probe");
    if let Err(e) = std::fs::write(&probe, b"ok") {
        return fail(
            "data_dir",
            format!("{} is not writable: {e}", dir.display()),
            "point --data-dir (BERTH_DATA_DIR) at a writable directory",
        );
    }
    let _ = std::fs::remove_file(&probe);
    match crate::disk::free_bytes(dir) {
        Ok(free) => {
            let detail = format!("{} ({} free)", dir.display(), crate::disk::human(free));
            match crate::disk::level(free, t) {
                crate::disk::Level::Ok => ok("data_dir", detail),
                crate::disk::Level::Low => fail(
                    "data_dir",
                    format!(
                        "{detail}: below the warning threshold {} (disk_warn_free); below {} new workspaces are refused",
                        crate::disk::human(t.warn_free),
                        crate::disk::human(t.min_free)
                    ),
                    "free disk space on the data dir's filesystem (old images: podman image prune; removed workspaces' volumes: podman volume prune)",
                ),
                crate::disk::Level::Critical => fail(
                    "data_dir",
                    format!(
                        "{detail}: below {} (disk_min_free); new workspaces and restores are refused",
                        crate::disk::human(t.min_free)
                    ),
                    "free disk space on the data dir's filesystem (old images: podman image prune; removed workspaces' volumes: podman volume prune)",
                ),
            }
        }
        Err(e) => ok(
            "data_dir",
            format!("{} (free space unknown: {e})", dir.display()),
        ),
    }
}

fn staged_binary(state: &AppState) -> Check {
    if state.host.binary.path.is_file() {
        ok(
            "daemon_binary",
            format!(
                "{} (mounted read-only into workspaces)",
                state.host.binary.path.display()
            ),
        )
    } else {
        fail(
            "daemon_binary",
            format!("{} is missing", state.host.binary.path.display()),
            "restart berth server; it stages its own binary on start",
        )
    }
}

/// Known-bad engine setups: crun on a cgroup v1/hybrid host, and Podman without berth's
/// containers.conf drop-in (ulimits the host cannot grant).
fn engine_config(info: &berth_runtime::EngineInfo) -> Check {
    let detail = format!(
        "runtime {}, cgroup driver {}, cgroup v{}",
        info.default_runtime, info.cgroup_driver, info.cgroup_version
    );
    let podman = info.engine.to_ascii_lowercase().contains("podman");
    if podman && info.cgroup_version == "1" && info.default_runtime == "crun" {
        return fail(
            "engine_config",
            format!("{detail}: crun cannot run containers on this cgroup v1 host"),
            "install the drop-in: sudo ./scripts/setup-host (writes /etc/containers/containers.conf.d/50-berth.conf), then restart the podman service",
        );
    }
    if podman && !Path::new("/etc/containers/containers.conf.d/50-berth.conf").exists() {
        return fail(
            "engine_config",
            format!("{detail}; berth's containers.conf drop-in is missing"),
            "sudo ./scripts/setup-host (writes /etc/containers/containers.conf.d/50-berth.conf), then restart the podman service",
        );
    }
    ok("engine_config", detail)
}

fn debootstrap() -> Check {
    let found = [
        "/usr/sbin/debootstrap",
        "/sbin/debootstrap",
        "/usr/bin/debootstrap",
    ]
    .iter()
    .any(|p| Path::new(p).is_file());
    if found {
        ok(
            "debootstrap",
            "present (needed by `berth image build`)".into(),
        )
    } else {
        fail(
            "debootstrap",
            "not installed; `berth image build` needs it".into(),
            "apt-get install -y debootstrap",
        )
    }
}
