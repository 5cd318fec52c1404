//! Reading the memory cgroup's OOM-kill counter of a running container.
//!
//! Podman on cgroup v1 never sets `State.OOMKilled`, and the container's memcg
//! is removed when it exits, so the only reliable signal is the kernel's
//! `oom_kill` counter read while the container (its pid 1) is still alive.

use std::path::{Path, PathBuf};

/// The memory cgroup of a process, as listed in `/proc/<pid>/cgroup`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum MemcgPath {
    /// cgroup v1 `memory` controller hierarchy path (relative to `/sys/fs/cgroup/memory`).
    V1(String),
    /// cgroup v2 unified path (relative to `/sys/fs/cgroup`).
    V2(String),
}

impl MemcgPath {
    /// The file holding the `oom_kill` counter, under the cgroup fs root (normally `/sys/fs/cgroup`).
    pub fn counter_file(&self, cgroup_root: &Path) -> PathBuf {
        match self {
            MemcgPath::V1(p) => join_rel(&cgroup_root.join("memory"), p).join("memory.oom_control"),
            MemcgPath::V2(p) => join_rel(cgroup_root, p).join("memory.events"),
        }
    }
}

fn join_rel(base: &Path, p: &str) -> PathBuf {
    base.join(p.trim_start_matches('/'))
}

/// Parse the content of `/proc/<pid>/cgroup`.
///
/// A v1 line whose controller list contains `memory` wins (hybrid hosts also
/// have a `0::` line for the controller-less unified hierarchy); otherwise the
/// v2 `0::<path>` line is used.
pub fn parse_memcg_path(proc_cgroup: &str) -> Option<MemcgPath> {
    let mut v2 = None;
    for line in proc_cgroup.lines() {
        let mut parts = line.splitn(3, ':');
        let (Some(id), Some(controllers), Some(path)) = (parts.next(), parts.next(), parts.next())
        else {
            continue;
        };
        if controllers.split(',').any(|c| c == "memory") {
            return Some(MemcgPath::V1(path.to_string()));
        }
        if id == "0" && controllers.is_empty() {
            v2 = Some(MemcgPath::V2(path.to_string()));
        }
    }
    v2
}

/// Parse the `oom_kill N` line of `memory.oom_control` (v1) or `memory.events` (v2).
pub fn parse_oom_kill_counter(content: &str) -> Option<u64> {
    content.lines().find_map(|line| {
        let mut it = line.split_whitespace();
        match (it.next(), it.next()) {
            (Some("oom_kill"), Some(n)) => n.parse().ok(),
            _ => None,
        }
    })
}

/// Number of processes the kernel OOM-killed in the memory cgroup of `pid`
/// (pass the container's host pid from [`crate::ContainerStatus::pid`]).
///
/// `None` if the process is gone, the memory controller is not found, or the
/// kernel does not expose the counter (v1 kernels before 4.13). Must be read
/// while the container runs: the memcg disappears when it exits.
pub fn memcg_oom_kills(pid: u32) -> Option<u64> {
    memcg_oom_kills_at(Path::new("/proc"), Path::new("/sys/fs/cgroup"), pid)
}

pub(crate) fn memcg_oom_kills_at(proc_root: &Path, cgroup_root: &Path, pid: u32) -> Option<u64> {
    let proc_cgroup =
        std::fs::read_to_string(proc_root.join(pid.to_string()).join("cgroup")).ok()?;
    let memcg = parse_memcg_path(&proc_cgroup)?;
    let file = memcg.counter_file(cgroup_root);
    match std::fs::read_to_string(&file) {
        Ok(content) => parse_oom_kill_counter(&content),
        Err(e) => {
            tracing::debug!(pid, file = %file.display(), error = %e, "memcg counter not readable");
            None
        }
    }
}

/// What [`container_oom_kills`] found.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum OomReading {
    /// The `oom_kill` counter of the container's memory cgroup.
    Count(u64),
    /// The process is the container's, but the counter cannot be read (no memory controller,
    /// a kernel without the counter).
    Unavailable,
    /// The process is gone, or none of its cgroups is the container's: the pid is stale (the
    /// container restarted since it was learnt) and must be asked of the engine again.
    NotInContainer,
}

/// Like [`memcg_oom_kills`], for a pid remembered from an earlier inspect: first checks, from
/// `/proc/<pid>/cgroup`, that the process still belongs to the container (a cgroup path of it
/// names the container id, as Podman's and Docker's do), so that a remembered pid is only
/// trusted while it is the container's.
pub fn container_oom_kills(pid: u32, container_id: &str) -> OomReading {
    container_oom_kills_at(
        Path::new("/proc"),
        Path::new("/sys/fs/cgroup"),
        pid,
        container_id,
    )
}

/// The shortest id a cgroup path is matched against (Docker's short form).
const MIN_ID_LEN: usize = 12;

pub(crate) fn container_oom_kills_at(
    proc_root: &Path,
    cgroup_root: &Path,
    pid: u32,
    container_id: &str,
) -> OomReading {
    let Ok(proc_cgroup) = std::fs::read_to_string(proc_root.join(pid.to_string()).join("cgroup"))
    else {
        return OomReading::NotInContainer;
    };
    let ours = container_id.len() >= MIN_ID_LEN
        && proc_cgroup
            .lines()
            .filter_map(|l| l.splitn(3, ':').nth(2))
            .any(|path| path.contains(container_id));
    if !ours {
        return OomReading::NotInContainer;
    }
    let Some(memcg) = parse_memcg_path(&proc_cgroup) else {
        return OomReading::Unavailable;
    };
    match std::fs::read_to_string(memcg.counter_file(cgroup_root)) {
        Ok(content) => {
            parse_oom_kill_counter(&content).map_or(OomReading::Unavailable, OomReading::Count)
        }
        Err(_) => OomReading::Unavailable,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const V1_HYBRID: &str = "12:pids:/libpod_parent/libpod-abc\n\
        11:cpu,cpuacct:/libpod_parent/libpod-abc\n\
        7:memory:/libpod_parent/libpod-abc\n\
        1:name=systemd:/libpod_parent/libpod-abc\n\
        0::/libpod_parent/libpod-abc\n";
    const V2: &str = "0::/machine.slice/libpod-abc.scope/container\n";

    #[test]
    fn v1_memory_line_wins_over_unified() {
        assert_eq!(
            parse_memcg_path(V1_HYBRID),
            Some(MemcgPath::V1("/libpod_parent/libpod-abc".into()))
        );
        let p = parse_memcg_path(V1_HYBRID).map(|m| m.counter_file(Path::new("/sys/fs/cgroup")));
        assert_eq!(
            p,
            Some(PathBuf::from(
                "/sys/fs/cgroup/memory/libpod_parent/libpod-abc/memory.oom_control"
            ))
        );
    }

    #[test]
    fn v2_line() {
        let m = parse_memcg_path(V2);
        assert_eq!(
            m,
            Some(MemcgPath::V2(
                "/machine.slice/libpod-abc.scope/container".into()
            ))
        );
        assert_eq!(
            m.map(|m| m.counter_file(Path::new("/sys/fs/cgroup"))),
            Some(PathBuf::from(
                "/sys/fs/cgroup/machine.slice/libpod-abc.scope/container/memory.events"
            ))
        );
    }

    #[test]
    fn controller_list_must_contain_memory_exactly() {
        assert_eq!(parse_memcg_path("3:nomemory:/x\n"), None);
        assert_eq!(parse_memcg_path("garbage\n\n"), None);
        assert_eq!(
            parse_memcg_path("4:blkio,memory:/y\n"),
            Some(MemcgPath::V1("/y".into()))
        );
    }

    #[test]
    fn counters() {
        let v1 = "oom_kill_disable 0\nunder_oom 0\noom_kill 3\n";
        assert_eq!(parse_oom_kill_counter(v1), Some(3));
        let v2 = "low 0\nhigh 0\nmax 17\noom 2\noom_kill 2\noom_group_kill 0\n";
        assert_eq!(parse_oom_kill_counter(v2), Some(2));
        assert_eq!(
            parse_oom_kill_counter("oom_kill_disable 0\nunder_oom 0\n"),
            None
        );
    }

    #[test]
    fn reads_files_from_roots() -> Result<(), Box<dyn std::error::Error>> {
        let dir = tempfile::tempdir()?;
        let proc_root = dir.path().join("proc");
        let cg_root = dir.path().join("cg");
        std::fs::create_dir_all(proc_root.join("42"))?;
        std::fs::write(proc_root.join("42/cgroup"), V1_HYBRID)?;
        let memdir = cg_root.join("memory/libpod_parent/libpod-abc");
        std::fs::create_dir_all(&memdir)?;
        std::fs::write(
            memdir.join("memory.oom_control"),
            "oom_kill_disable 0\nunder_oom 0\noom_kill 5\n",
        )?;
        assert_eq!(memcg_oom_kills_at(&proc_root, &cg_root, 42), Some(5));
        assert_eq!(memcg_oom_kills_at(&proc_root, &cg_root, 43), None);
        Ok(())
    }

    #[test]
    fn container_reading_checks_the_pid_is_the_containers() -> Result<(), Box<dyn std::error::Error>>
    {
        let id = "abc0123456789def";
        let dir = tempfile::tempdir()?;
        let proc_root = dir.path().join("proc");
        let cg_root = dir.path().join("cg");
        for (pid, content) in [
            (
                "42",
                V1_HYBRID.replace("libpod-abc", &format!("libpod-{id}")),
            ),
            (
                "43",
                "7:memory:/libpod_parent/libpod-fffffffffffffff0\n".to_owned(),
            ),
            ("44", format!("1:name=systemd:/libpod_parent/libpod-{id}\n")),
        ] {
            std::fs::create_dir_all(proc_root.join(pid))?;
            std::fs::write(proc_root.join(pid).join("cgroup"), content)?;
        }
        let memdir = cg_root.join(format!("memory/libpod_parent/libpod-{id}"));
        std::fs::create_dir_all(&memdir)?;
        std::fs::write(memdir.join("memory.oom_control"), "oom_kill 2\n")?;
        let read = |pid, id| container_oom_kills_at(&proc_root, &cg_root, pid, id);
        assert_eq!(read(42, id), OomReading::Count(2));
        // Another container's process (a reused pid), a gone process.
        assert_eq!(read(43, id), OomReading::NotInContainer);
        assert_eq!(read(45, id), OomReading::NotInContainer);
        // The container's, without a memory controller.
        assert_eq!(read(44, id), OomReading::Unavailable);
        // Too short an id matches nothing.
        assert_eq!(read(42, "abc"), OomReading::NotInContainer);
        Ok(())
    }

    #[test]
    fn own_process_has_a_readable_memcg() {
        // The test process itself lives in some memcg on any Linux host with cgroups.
        let pid = std::process::id();
        let content = std::fs::read_to_string(format!("/proc/{pid}/cgroup")).unwrap_or_default();
        if parse_memcg_path(&content).is_some() {
            // The counter may legitimately be absent for the root cgroup; just make sure it doesn't panic.
            let _ = memcg_oom_kills(pid);
        }
    }
}
