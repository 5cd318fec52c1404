//! `berth doctor`'s smoke check: create, start, exec `true` in and remove a throwaway container
//! with the host configuration a workspace gets — the very spec ([`lifecycle::container_spec`]:
//! init, dropped capabilities, memory/CPU/pids limits at the server defaults, read-only image, a
//! home volume, the read-only daemon binary, the channel and daemon mounts, the default network).
//!
//! Static checks (packages, config files) miss what only the engine knows at create/start time:
//! a missing container init (`catatonit`), a runtime that cannot set the requested rlimits, a
//! network backend that is not installed. This check asks the engine to do the real thing and
//! turns its error into one line of fix. It cleans up after itself, also when a step fails.

use std::collections::HashMap;
use std::path::PathBuf;
use std::time::Duration;

use berth_api::Check;
use berth_runtime::RuntimeError;

use crate::lifecycle;
use crate::state::AppState;

/// Label on every object the smoke check creates (and nothing else berth manages carries it).
pub const LABEL_SMOKE: &str = "berth.smoke";
/// The whole check gives up after this long (an engine that hangs is a failure too).
const DEADLINE: Duration = Duration::from_secs(90);

/// Runs the smoke check against `image` and reports it as the `engine_smoke` check.
pub async fn check(state: &AppState, image: &str) -> Check {
    let suffix = format!("{:016x}", rand::random::<u64>());
    let objects = Objects {
        name: format!("berth-smoke-{suffix}"),
        volume: format!("berth-smoke-{suffix}"),
        dir: state.config.data_dir.join("smoke").join(&suffix),
    };
    let outcome = match tokio::time::timeout(DEADLINE, run(state, image, &objects)).await {
        Ok(r) => r,
        Err(_) => Err(Step::new(
            "answer",
            RuntimeError::Other(format!(
                "the engine did not finish within {}s",
                DEADLINE.as_secs()
            )),
        )),
    };
    let leftovers = objects.remove(state).await;
    match outcome {
        Ok(()) if leftovers.is_empty() => Check {
            name: "engine_smoke".into(),
            ok: true,
            detail: format!(
                "created, started, ran `true` in and removed a workspace-shaped container ({image}, init, caps dropped, limits, mounts, network {})",
                state.config.default_network
            ),
            fix: None,
        },
        Ok(()) => Check {
            name: "engine_smoke".into(),
            ok: false,
            detail: format!("the container worked but cleanup failed: {}", leftovers.join("; ")),
            fix: Some("check the engine (podman ps -a, podman volume ls --filter label=berth.smoke) and remove the leftovers".into()),
        },
        Err(step) => {
            let message = step.error.to_string();
            Check {
                name: "engine_smoke".into(),
                ok: false,
                detail: format!("could not {} a workspace container: {message}", step.what),
                fix: Some(fix_for(&message)),
            }
        }
    }
}

/// The step that failed and the engine's answer.
struct Step {
    what: &'static str,
    error: RuntimeError,
}

impl Step {
    fn new(what: &'static str, error: RuntimeError) -> Self {
        Self { what, error }
    }
}

/// What the check creates, for cleanup.
struct Objects {
    name: String,
    volume: String,
    dir: PathBuf,
}

impl Objects {
    /// Removes everything (missing objects are fine); returns what could not be removed.
    async fn remove(&self, state: &AppState) -> Vec<String> {
        let mut left = Vec::new();
        if let Err(e) = state.host.runtime.remove_container(&self.name).await {
            left.push(format!("container {}: {e}", self.name));
        }
        if let Err(e) = state.host.runtime.remove_volume(&self.volume).await {
            left.push(format!("volume {}: {e}", self.volume));
        }
        // Without following anything the container may have planted (off the runtime).
        let dir = self.dir.clone();
        match tokio::task::spawn_blocking(move || berth_daemon::chanfs::remove_tree(&dir)).await {
            Ok(Ok(())) => {}
            Ok(Err(e)) if e.kind() == std::io::ErrorKind::NotFound => {}
            Ok(Err(e)) => left.push(format!("{}: {e}", self.dir.display())),
            Err(e) => left.push(format!("{}: {e}", self.dir.display())),
        }
        left
    }
}

async fn run(state: &AppState, image: &str, o: &Objects) -> Result<(), Step> {
    let labels = HashMap::from([(LABEL_SMOKE.to_owned(), "true".to_owned())]);
    let chan = o.dir.join("chan");
    let ca_pem = Some(state.egress.ca_pem().to_owned());
    let prepared = {
        let chan = chan.clone();
        tokio::task::spawn_blocking(move || {
            if let Some(parent) = chan.parent().and_then(|p| p.parent()) {
                std::fs::create_dir_all(parent)?;
            }
            lifecycle::prepare_channel_dir(&chan, ca_pem.as_deref())
        })
        .await
    };
    match prepared {
        Ok(Ok(_)) => {}
        Ok(Err(e)) => return Err(Step::new("prepare the channel of", RuntimeError::Io(e))),
        Err(e) => {
            return Err(Step::new(
                "prepare the channel of",
                RuntimeError::Other(e.to_string()),
            ))
        }
    }
    state
        .host
        .runtime
        .ensure_volume(&o.volume, &labels)
        .await
        .map_err(|e| Step::new("create the volume of", e))?;
    let userns = lifecycle::userns_mode(state).await;
    let spec = lifecycle::container_spec(
        state,
        lifecycle::ContainerParts {
            userns,
            name: o.name.clone(),
            image: image.to_owned(),
            hostname: "berth-smoke".to_owned(),
            limits: state.config.default_limits,
            network: state.config.default_network.clone(),
            volume: o.volume.clone(),
            channel: chan,
            env: lifecycle::proxy_env(),
            labels,
        },
    );
    let turn = lifecycle::userns_create_turn(state, &spec).await;
    let id = state
        .host
        .runtime
        .create_container(&spec)
        .await
        .map_err(|e| Step::new("create", e))?;
    drop(turn);
    state
        .host
        .runtime
        .start_container(&id)
        .await
        .map_err(|e| Step::new("start", e))?;
    match state
        .host
        .runtime
        .exec_status(&id, &["true".to_owned()])
        .await
    {
        Ok(0) => Ok(()),
        Ok(code) => Err(Step::new(
            "exec in",
            RuntimeError::Other(format!("`true` exited with {code}")),
        )),
        Err(e) => Err(Step::new("exec in", e)),
    }
}

/// One line of fix for an engine error, by what the engine complained about.
pub fn fix_for(message: &str) -> String {
    let m = message.to_ascii_lowercase();
    let has = |needles: &[&str]| needles.iter().any(|n| m.contains(n));
    if has(&["container-init", "catatonit", "init binary"]) {
        "install the container init that HostConfig.Init needs: apt-get install --no-install-recommends catatonit (or sudo ./scripts/setup-host)".into()
    } else if has(&["rlimit", "ulimit"]) {
        "the engine asks for ulimits this host cannot grant: sudo ./scripts/setup-host (writes /etc/containers/containers.conf.d/50-berth.conf), then restart the podman service".into()
    } else if has(&["cgroups in hybrid mode", "crun"]) {
        "use runc on this cgroup v1 host: sudo ./scripts/setup-host (writes the engine config), then restart the podman service".into()
    } else if has(&["conmon"]) {
        "install the container monitor: apt-get install --no-install-recommends conmon (or sudo ./scripts/setup-host)".into()
    } else if has(&["runc", "oci runtime"]) {
        "install the OCI runtime: apt-get install --no-install-recommends runc (or sudo ./scripts/setup-host)".into()
    } else if has(&["netavark", "aardvark", "network backend", "cni"]) {
        "install the network backend: apt-get install --no-install-recommends netavark aardvark-dns iptables (or sudo ./scripts/setup-host)".into()
    } else if has(&["enough available ids", "subuid", "subgid"]) {
        "give the engine a user-namespace range: sudo ./scripts/setup-host (adds containers:2147483647:2147483648 to /etc/subuid and /etc/subgid), or run berth server --userns off".into()
    } else if has(&["no space left"]) {
        "free disk space on the engine's storage (podman system prune) and on the data dir".into()
    } else if has(&["image missing", "no such image", "image not known"]) {
        "build the workspace base image: berth image build".into()
    } else {
        "run sudo ./scripts/setup-host (it installs and configures what the engine needs), then berth doctor again".into()
    }
}

#[cfg(test)]
mod tests {
    use crate::test_support::NoImages;
    use std::sync::Arc;

    use berth_runtime::{Call, FakeRuntime};

    use super::*;
    use crate::binary::StagedBinary;

    async fn state(fake: Arc<FakeRuntime>, dir: &std::path::Path) -> AppState {
        let config = crate::config::ServerArgs {
            data_dir: Some(dir.to_owned()),
            default_memory: Some("256m".into()),
            default_pids: Some(256),
            default_network: Some("none".into()),
            ..Default::default()
        }
        .resolve()
        .unwrap();
        let bin = dir.join("berth-bin");
        std::fs::write(&bin, b"bin").unwrap();
        AppState::new(
            config,
            berth_store::Store::open_in_memory().await.unwrap(),
            crate::state::Host::new(
                fake,
                Arc::new(NoImages),
                crate::test_support::no_engine(dir),
                "t0000".into(),
                StagedBinary {
                    path: bin,
                    hash: "hash1".into(),
                },
            ),
        )
        .unwrap()
    }

    /// Nothing the check made is left behind: no container, no volume, no directory.
    fn assert_clean(fake: &FakeRuntime, dir: &std::path::Path) {
        assert!(fake.containers().is_empty(), "{:?}", fake.containers());
        assert!(fake.volumes().is_empty(), "{:?}", fake.volumes());
        let smoke = dir.join("smoke");
        let left: Vec<_> = std::fs::read_dir(&smoke)
            .map(|d| d.flatten().map(|e| e.path()).collect())
            .unwrap_or_default();
        assert!(left.is_empty(), "{left:?}");
    }

    /// The engine's answer on a host without catatonit, as Podman gives it.
    #[tokio::test]
    async fn a_missing_init_fails_with_the_engine_error_and_the_fix() {
        let dir = tempfile::tempdir().unwrap();
        let fake = Arc::new(FakeRuntime::new());
        let st = state(fake.clone(), dir.path()).await;
        fake.fail_next(
            "create_container",
            RuntimeError::Engine {
                status: 500,
                message: "container create: container-init binary not found on the host: stat /usr/libexec/podman/catatonit: no such file or directory".into(),
            },
        );
        let c = check(&st, "localhost/img:1").await;
        assert!(!c.ok);
        assert_eq!(c.name, "engine_smoke");
        assert!(
            c.detail
                .starts_with("could not create a workspace container"),
            "{}",
            c.detail
        );
        assert!(c.detail.contains("catatonit"), "{}", c.detail);
        let fix = c.fix.unwrap();
        assert!(
            fix.contains("apt-get install --no-install-recommends catatonit"),
            "{fix}"
        );
        assert_clean(&fake, dir.path());
    }

    #[tokio::test]
    async fn a_working_engine_passes_with_a_workspace_shaped_container_and_cleans_up() {
        let dir = tempfile::tempdir().unwrap();
        let fake = Arc::new(FakeRuntime::new());
        let st = state(fake.clone(), dir.path()).await;
        let c = check(&st, "localhost/img:1").await;
        assert!(c.ok, "{c:?}");
        let created = fake.calls_of("create_container");
        let Some(Call::CreateContainer { spec }) = created.first() else {
            panic!("no create: {:?}", fake.calls());
        };
        assert!(spec.init);
        assert!(spec.cap_add.is_empty());
        assert_eq!(spec.memory_bytes, 256 << 20);
        assert_eq!(spec.pids_limit, 256);
        assert_eq!(spec.network_mode, "none");
        assert_eq!(spec.user, "1000:1000");
        assert_eq!(spec.mounts.len(), 4);
        assert!(spec.readonly_rootfs);
        let execs = fake.calls_of("exec_status");
        assert!(matches!(execs.first(), Some(Call::ExecStatus { cmd, .. }) if cmd == &["true"]));
        assert_clean(&fake, dir.path());
    }

    #[tokio::test]
    async fn a_failing_start_still_removes_what_was_created() {
        let dir = tempfile::tempdir().unwrap();
        let fake = Arc::new(FakeRuntime::new());
        let st = state(fake.clone(), dir.path()).await;
        fake.fail_next(
            "start_container",
            RuntimeError::Engine {
                status: 500,
                message: "runc create failed: error setting rlimit type 7: operation not permitted"
                    .into(),
            },
        );
        let c = check(&st, "localhost/img:1").await;
        assert!(!c.ok);
        assert!(c.detail.starts_with("could not start"), "{}", c.detail);
        assert!(c.fix.unwrap().contains("ulimits"));
        assert_clean(&fake, dir.path());
    }

    #[test]
    fn the_missing_init_gets_the_catatonit_fix() {
        let msg = "engine error (HTTP 500): container create: container-init binary not found on the host: stat /usr/libexec/podman/catatonit: no such file or directory";
        assert!(fix_for(msg).contains("apt-get install --no-install-recommends catatonit"));
        assert!(
            fix_for("error setting rlimit type 7: operation not permitted").contains("ulimits")
        );
        assert!(fix_for("something else entirely").contains("scripts/setup-host"));
    }
}
