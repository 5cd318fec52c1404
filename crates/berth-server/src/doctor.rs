//! `GET /api/v1/doctor`: every prerequisite of the server checked, each failure with a fix.

mod tls;

use std::path::Path;

use berth_api::{Check, DoctorReport};
use berth_domain::Provider;

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
            checks.push(userns(state.config.userns, info));
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
    checks.extend(upstreams(state).await);
    if let Some(t) = state.web.tls.get() {
        checks.push(tls::certificate(t));
        checks.push(tls::listener(t).await);
    }
    DoctorReport {
        ok: checks.iter().all(|c| c.ok),
        checks,
    }
}

/// How long `berth doctor` waits for a provider's upstream to answer.
const UPSTREAM_PROBE: std::time::Duration = std::time::Duration::from_secs(3);

/// One line per LLM provider (`upstream_anthropic`, `upstream_openai`, `upstream_gemini`):
/// whether its upstream key is configured and, if so, whether its base URL answers an HTTP
/// request (any status counts; probed in parallel, each bounded by [`UPSTREAM_PROBE`]). A
/// provider without a key is fine as long as another one has one (its agents' tasks are
/// refused with `provider_unconfigured`); none configured at all fails, since no task can run.
async fn upstreams(state: &AppState) -> Vec<Check> {
    let providers = [Provider::Anthropic, Provider::Openai, Provider::Gemini];
    let gw = &state.gateway;
    let probes = providers.map(|p| async move {
        if gw.configured(p) {
            Some(gw.probe(p, UPSTREAM_PROBE).await)
        } else {
            None
        }
    });
    let [a, o, g] = probes;
    let (a, o, g) = tokio::join!(a, o, g);
    let any = [&a, &o, &g].iter().any(|p| p.is_some());
    providers
        .into_iter()
        .zip([a, o, g])
        .map(|(p, probe)| upstream_check(p, gw.base_url(p), probe, any))
        .collect()
}

/// The check line of provider `p` (see [`upstreams`]); `probe` is None when `p` has no key.
fn upstream_check(
    p: Provider,
    base_url: &str,
    probe: Option<berth_gateway::Probe>,
    any_configured: bool,
) -> Check {
    let name = format!("upstream_{}", p.as_str());
    let (key, base) = crate::gateway::provider_env(p);
    let agents = berth_domain::Agent::ALL
        .iter()
        .filter(|a| a.provider() == p)
        .map(|a| a.as_str())
        .collect::<Vec<_>>()
        .join(", ");
    match probe {
        None if any_configured => ok(
            &name,
            format!("not configured: {agents} tasks are refused (provider_unconfigured); set {key} to run them"),
        ),
        None => fail(
            &name,
            format!("not configured: no LLM provider is, so no agent task can run ({agents} need this one)"),
            &format!("set {key} (and {base} for an upstream other than {}) in berth server's environment and restart it", berth_gateway::Upstreams::default_base_url(p)),
        ),
        Some(berth_gateway::Probe::Answered(status)) => ok(
            &name,
            format!("configured; {base_url} answers (HTTP {status})"),
        ),
        Some(berth_gateway::Probe::Unreachable(why)) => fail(
            &name,
            format!("configured, but {base_url} does not answer: {why}"),
            &format!("check {base} and the network path from the berth host to it (proxy, firewall, DNS)"),
        ),
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

/// Private user namespaces: on by default on Podman, which needs the `containers` range in
/// /etc/subuid and /etc/subgid (without it every workspace's agent would be host uid 1000).
fn userns(configured: Option<bool>, info: &berth_runtime::EngineInfo) -> Check {
    let podman = info.engine.to_ascii_lowercase().contains("podman");
    let range = crate::lifecycle::subid_range_present(
        Path::new(crate::lifecycle::SUBUID),
        Path::new(crate::lifecycle::SUBGID),
    );
    userns_check(configured, podman, range)
}

fn userns_check(configured: Option<bool>, podman: bool, range: bool) -> Check {
    const FIX: &str = "sudo ./scripts/setup-host (adds containers:2147483647:2147483648 to /etc/subuid and /etc/subgid), or run berth server --userns off";
    match (configured, podman, range) {
        (Some(false), ..) => ok(
            "userns",
            "off (--userns off): every workspace's agent is host uid 1000".into(),
        ),
        (_, true, true) => ok(
            "userns",
            "each workspace has a private range of host uids (userns=auto)".into(),
        ),
        (_, true, false) => fail(
            "userns",
            "no `containers` range in /etc/subuid and /etc/subgid: workspaces would share host uid 1000".into(),
            FIX,
        ),
        (Some(true), false, _) => fail(
            "userns",
            "--userns auto needs Podman; this engine has no per-container user namespaces".into(),
            "run berth server --userns off (on Docker, configure userns-remap in daemon.json)",
        ),
        (None, false, _) => ok(
            "userns",
            "not per workspace on this engine (Docker: the daemon-wide userns-remap)".into(),
        ),
    }
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::lifecycle::subid_range_present;

    #[test]
    fn upstream_lines_say_configured_reachable_or_what_to_set() {
        use berth_gateway::Probe;
        let url = "http://127.0.0.1:9";
        let up = upstream_check(Provider::Anthropic, url, Some(Probe::Answered(404)), true);
        assert!(up.ok && up.detail.contains("HTTP 404"), "{up:?}");
        assert_eq!(up.name, "upstream_anthropic");
        let down = upstream_check(
            Provider::Openai,
            url,
            Some(Probe::Unreachable("refused".into())),
            true,
        );
        assert!(
            !down.ok
                && down
                    .fix
                    .as_deref()
                    .unwrap()
                    .contains("BERTH_OPENAI_BASE_URL")
        );
        // Unconfigured next to a configured one: fine, but it says which tasks are refused.
        let other = upstream_check(Provider::Gemini, url, None, true);
        assert!(
            other.ok && other.detail.contains("gemini tasks are refused"),
            "{other:?}"
        );
        // None configured at all: a failure naming the variable.
        let none = upstream_check(Provider::Anthropic, url, None, false);
        assert!(!none.ok, "{none:?}");
        assert!(none
            .fix
            .as_deref()
            .unwrap()
            .contains("BERTH_ANTHROPIC_API_KEY"));
        assert!(none.detail.contains("(claude need this one)"), "{none:?}");
        let openai = upstream_check(Provider::Openai, url, None, true);
        assert!(
            openai.detail.contains("codex, opencode tasks"),
            "{openai:?}"
        );
    }

    #[test]
    fn userns_fails_on_podman_without_a_range_unless_turned_off() {
        assert!(userns_check(None, true, true).ok);
        let missing = userns_check(None, true, false);
        assert!(!missing.ok, "{missing:?}");
        assert!(userns_check(Some(false), true, false).ok);
        assert!(!userns_check(Some(true), false, true).ok);
        assert!(userns_check(None, false, false).ok);
    }

    #[test]
    fn a_subid_range_needs_both_files_and_a_count() {
        let dir = tempfile::tempdir().unwrap();
        let (u, g) = (dir.path().join("subuid"), dir.path().join("subgid"));
        let good = "root:100000:65536\ncontainers:2147483647:2147483648\n";
        std::fs::write(&u, good).unwrap();
        assert!(!subid_range_present(&u, &g), "no subgid file");
        std::fs::write(&g, "containers:2147483647:0\n").unwrap();
        assert!(!subid_range_present(&u, &g), "an empty range");
        std::fs::write(&g, "containersx:1:2\nroot:100000:65536\n").unwrap();
        assert!(!subid_range_present(&u, &g), "another user's range");
        std::fs::write(&g, good).unwrap();
        assert!(subid_range_present(&u, &g));
    }
}
