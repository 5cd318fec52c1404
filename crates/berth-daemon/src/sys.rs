//! Small OS helpers: locks, signals, process trees, command lookup, time and timers.

use std::collections::BTreeMap;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::pin::Pin;
use std::process::Stdio;

use nix::sys::signal::{kill, killpg, Signal};
use nix::unistd::Pid;
use tokio::time::Sleep;

pub(crate) use berth_domain::sync::lock;

/// Waits for the timer `s`, or forever when there is none (a `select!` branch that is off
/// until the timer is set).
pub(crate) async fn sleep_opt(s: &mut Option<Pin<Box<Sleep>>>) {
    match s {
        Some(s) => s.as_mut().await,
        None => std::future::pending().await,
    }
}

/// Sends `sig` to process group `pgid`.
pub(crate) fn signal_group(pgid: u32, sig: Signal) {
    let Ok(pgid) = i32::try_from(pgid) else {
        return;
    };
    if pgid <= 1 {
        return;
    }
    if let Err(e) = killpg(Pid::from_raw(pgid), sig) {
        tracing::trace!(pgid, ?sig, error = %e, "killpg");
    }
}

/// Sends `sig` to every process of the session `sid` (the session leader's
/// pid): its process group, and every other process group of that session
/// (shell jobs), found through /proc.
pub(crate) fn signal_session(sid: u32, sig: Signal) {
    signal_group(sid, sig);
    let Ok(sid_i) = i32::try_from(sid) else {
        return;
    };
    for pid in processes_in_session(sid_i) {
        if pid > 1 {
            let _ = kill(Pid::from_raw(pid), sig);
        }
    }
}

/// Every process's (pid, parent pid), from /proc.
pub(crate) fn process_parents() -> Vec<(i32, i32)> {
    let mut out = Vec::new();
    let Ok(dir) = std::fs::read_dir("/proc") else {
        return out;
    };
    for entry in dir.flatten() {
        let Some(pid) = entry
            .file_name()
            .to_str()
            .and_then(|s| s.parse::<i32>().ok())
        else {
            continue;
        };
        let Ok(stat) = std::fs::read_to_string(entry.path().join("stat")) else {
            continue;
        };
        if let Some(ppid) = stat_field(&stat, 1) {
            out.push((pid, ppid));
        }
    }
    out
}

/// `roots` and every process below them (children, their children, …), found through /proc.
pub(crate) fn process_tree(roots: &[i32]) -> Vec<i32> {
    let mine = std::process::id() as i32;
    let mut tree: Vec<i32> = roots
        .iter()
        .copied()
        .filter(|p| *p > 1 && *p != mine)
        .collect();
    let parents = process_parents();
    loop {
        let before = tree.len();
        for (pid, ppid) in &parents {
            if tree.contains(ppid) && !tree.contains(pid) && *pid != mine {
                tree.push(*pid);
            }
        }
        if tree.len() == before {
            return tree;
        }
    }
}

/// Kills the process group `pgid` and every process of the tree below its leader and below
/// `known` (pids seen earlier, whose parent may have exited since): a tool an agent started in
/// a session of its own (Claude Code's and Gemini CLI's shells are) is not in the agent's
/// group, and would outlive a group kill. The tree is stopped (SIGSTOP) until no new process
/// shows up, so nothing forks past the kill.
pub(crate) fn kill_tree(pgid: u32, known: &[i32]) {
    let mut roots: Vec<i32> = known.to_vec();
    if let Ok(p) = i32::try_from(pgid) {
        roots.push(p);
    }
    let stopped = freeze(roots);
    signal_group(pgid, Signal::SIGKILL);
    for p in stopped {
        let _ = kill(Pid::from_raw(p), Signal::SIGKILL);
    }
}

/// Kills `roots` and every process below them, frozen first (SIGSTOP) until no new process
/// shows up, so nothing forks past the kill.
pub(crate) fn kill_processes(roots: &[i32]) {
    for p in freeze(roots.to_vec()) {
        let _ = kill(Pid::from_raw(p), Signal::SIGKILL);
    }
}

/// Stops (SIGSTOP) `roots` and their trees until no new process shows up; returns them all.
fn freeze(mut roots: Vec<i32>) -> Vec<i32> {
    let mut stopped: Vec<i32> = Vec::new();
    for _ in 0..8 {
        let tree = process_tree(&roots);
        let fresh: Vec<i32> = tree
            .iter()
            .copied()
            .filter(|p| !stopped.contains(p))
            .collect();
        if fresh.is_empty() {
            break;
        }
        for p in &fresh {
            let _ = kill(Pid::from_raw(*p), Signal::SIGSTOP);
        }
        stopped.extend(fresh);
        roots.clone_from(&stopped);
    }
    stopped
}

/// The program a process runs (the first word of its command line), from /proc.
pub(crate) fn program_of(pid: i32) -> Option<String> {
    let raw = std::fs::read(format!("/proc/{pid}/cmdline")).ok()?;
    let first = raw.split(|b| *b == 0).next()?;
    Some(String::from_utf8_lossy(first).into_owned())
}

fn processes_in_session(sid: i32) -> Vec<i32> {
    let mut out = Vec::new();
    let Ok(dir) = std::fs::read_dir("/proc") else {
        return out;
    };
    for entry in dir.flatten() {
        let Some(pid) = entry
            .file_name()
            .to_str()
            .and_then(|s| s.parse::<i32>().ok())
        else {
            continue;
        };
        let Ok(stat) = std::fs::read_to_string(entry.path().join("stat")) else {
            continue;
        };
        if stat_session(&stat) == Some(sid) {
            out.push(pid);
        }
    }
    out
}

/// The session id (field 6) of a /proc/PID/stat line.
fn stat_session(stat: &str) -> Option<i32> {
    stat_field(stat, 3)
}

/// Field `n` after the command of a /proc/PID/stat line (0: state, 1: ppid, 2: pgrp,
/// 3: session).
fn stat_field(stat: &str, n: usize) -> Option<i32> {
    // "pid (comm) state ppid pgrp session ..."; comm may contain spaces and parens.
    let rest = &stat[stat.rfind(')')? + 1..];
    rest.split_whitespace().nth(n)?.parse().ok()
}

/// Exit code of a wait status: the exit status, or 128+N when killed by signal N.
pub(crate) fn exit_code(status: std::process::ExitStatus) -> i32 {
    use std::os::unix::process::ExitStatusExt;
    if let Some(code) = status.code() {
        code
    } else if let Some(sig) = status.signal() {
        128 + sig
    } else {
        -1
    }
}

/// Blocks until `pid` (a child of this process) exits; returns its exit code.
pub(crate) fn wait_pid(pid: u32) -> i32 {
    use nix::errno::Errno;
    use nix::sys::wait::{waitpid, WaitStatus};
    let Ok(raw) = i32::try_from(pid) else {
        return -1;
    };
    loop {
        match waitpid(Pid::from_raw(raw), None) {
            Ok(WaitStatus::Exited(_, code)) => return code,
            Ok(WaitStatus::Signaled(_, sig, _)) => return 128 + sig as i32,
            Ok(_) => continue,
            Err(Errno::EINTR) => continue,
            Err(e) => {
                tracing::warn!(pid, error = %e, "waitpid failed");
                return -1;
            }
        }
    }
}

/// The environment of a child: the daemon's own, then defaults for the
/// variables a login environment has, then `extra`.
pub(crate) fn child_env(
    home: &Path,
    shell: &str,
    tty: bool,
    extra: &[(String, String)],
) -> BTreeMap<String, String> {
    let mut env: BTreeMap<String, String> = std::env::vars().collect();
    let mut default = |k: &str, v: String| {
        env.entry(k.to_string()).or_insert(v);
    };
    default("HOME", home.display().to_string());
    default("USER", current_user());
    default("SHELL", shell.to_string());
    default("LANG", "C.UTF-8".to_string());
    default(
        "PATH",
        "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin".to_string(),
    );
    if tty {
        env.insert("TERM".into(), "xterm-256color".into());
    }
    for (k, v) in extra {
        env.insert(k.clone(), v.clone());
    }
    env
}

fn current_user() -> String {
    let uid = nix::unistd::getuid();
    match nix::unistd::User::from_uid(uid) {
        Ok(Some(u)) => u.name,
        _ => uid.to_string(),
    }
}

/// Validates env entries and argv strings (no NUL, sane keys).
pub(crate) fn validate_env(env: &[(String, String)]) -> Result<(), String> {
    for (k, v) in env {
        if k.is_empty() || k.contains('=') || k.contains('\0') {
            return Err(format!("invalid environment variable name {k:?}"));
        }
        if v.contains('\0') {
            return Err(format!("environment variable {k} contains a NUL byte"));
        }
    }
    Ok(())
}

pub(crate) fn validate_argv(argv: &[String]) -> Result<(), String> {
    match argv.first() {
        None => return Err("argv is empty".into()),
        Some(p) if p.is_empty() => return Err("argv[0] is empty".into()),
        _ => {}
    }
    if argv.iter().any(|a| a.contains('\0')) {
        return Err("argv contains a NUL byte".into());
    }
    Ok(())
}

/// Resolves the working directory of a child.
pub(crate) fn resolve_cwd(requested: Option<&str>, default: &Path) -> Result<PathBuf, String> {
    match requested {
        Some(c) => {
            if c.contains('\0') {
                return Err("cwd contains a NUL byte".into());
            }
            let p = default.join(c);
            if p.is_dir() {
                Ok(p)
            } else {
                Err(format!("cwd is not a directory: {}", p.display()))
            }
        }
        None if default.is_dir() => Ok(default.to_path_buf()),
        None => Ok(PathBuf::from("/")),
    }
}

/// Finds the executable for `program` the way a shell does: a name with a `/`
/// is a path (relative to `cwd`), anything else is looked up in `path_var`.
pub(crate) fn resolve_program(
    program: &str,
    path_var: Option<&str>,
    cwd: &Path,
) -> Result<PathBuf, String> {
    if program.contains('/') {
        let p = cwd.join(program);
        return match std::fs::metadata(&p) {
            Ok(m) if m.is_dir() => Err(format!("is a directory: {program}")),
            Ok(m) if m.permissions().mode() & 0o111 == 0 => {
                Err(format!("permission denied: {program}"))
            }
            Ok(_) => Ok(p),
            Err(_) => Err(format!("no such file: {program}")),
        };
    }
    for dir in std::env::split_paths(path_var.unwrap_or("")) {
        let dir = if dir.as_os_str().is_empty() {
            cwd.to_path_buf()
        } else {
            cwd.join(dir)
        };
        let candidate = dir.join(program);
        if let Ok(m) = std::fs::metadata(&candidate) {
            if m.is_file() && m.permissions().mode() & 0o111 != 0 {
                return Ok(candidate);
            }
        }
    }
    Err(format!("command not found: {program}"))
}

/// Makes `cmd` a child with pipes (stdin a pipe only if `stdin`, else /dev/null) in a process
/// group of its own (so that it and what it starts can be signalled together), killed if its
/// handle is dropped.
pub(crate) fn pipes_in_own_group(cmd: &mut tokio::process::Command, stdin: bool) {
    cmd.stdin(if stdin { Stdio::piped() } else { Stdio::null() })
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .process_group(0)
        .kill_on_drop(true);
}

/// Turns a spawn error into a message for the user.
pub(crate) fn spawn_error_message(program: &str, e: &std::io::Error) -> String {
    match e.kind() {
        std::io::ErrorKind::NotFound => format!("command not found: {program}"),
        std::io::ErrorKind::PermissionDenied => format!("permission denied: {program}"),
        _ => format!("cannot run {program}: {e}"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_stat_session() {
        assert_eq!(
            stat_session("123 (my (weird) prog) S 1 123 456 0 -1"),
            Some(456)
        );
        assert_eq!(stat_session("garbage"), None);
    }

    #[test]
    fn resolves_programs() {
        let cwd = Path::new("/");
        let sh = resolve_program("sh", Some("/nonexistent:/bin:/usr/bin"), cwd).unwrap();
        assert!(sh.ends_with("sh"));
        assert_eq!(
            resolve_program("no-such-cmd-xyz", Some("/bin"), cwd).unwrap_err(),
            "command not found: no-such-cmd-xyz"
        );
        assert!(resolve_program("/bin/sh", None, cwd).is_ok());
        assert_eq!(
            resolve_program("/nope/x", None, cwd).unwrap_err(),
            "no such file: /nope/x"
        );
        let dir = std::env::temp_dir().join(format!("berth-daemon-test-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let plain = dir.join("plain");
        std::fs::write(&plain, b"x").unwrap();
        std::fs::set_permissions(&plain, std::fs::Permissions::from_mode(0o644)).unwrap();
        assert_eq!(
            resolve_program("./plain", None, &dir).unwrap_err(),
            "permission denied: ./plain"
        );
        assert_eq!(
            resolve_program("plain", Some(dir.to_str().unwrap()), cwd).unwrap_err(),
            "command not found: plain"
        );
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn validates() {
        assert!(validate_argv(&[]).is_err());
        assert!(validate_argv(&["".into()]).is_err());
        assert!(validate_argv(&["a\0".into()]).is_err());
        assert!(validate_argv(&["ls".into(), "-l".into()]).is_ok());
        assert!(validate_env(&[("A=B".into(), "x".into())]).is_err());
        assert!(validate_env(&[("".into(), "x".into())]).is_err());
        assert!(validate_env(&[("A".into(), "x".into())]).is_ok());
        assert!(resolve_cwd(Some("/nonexistent-dir-xyz"), Path::new("/")).is_err());
        assert_eq!(
            resolve_cwd(Some("tmp"), Path::new("/")).unwrap(),
            PathBuf::from("/tmp")
        );
        assert_eq!(
            resolve_cwd(None, Path::new("/nonexistent-dir-xyz")).unwrap(),
            PathBuf::from("/")
        );
    }

    #[test]
    fn env_defaults_and_overrides() {
        let env = child_env(
            Path::new("/home/x"),
            "/bin/bash",
            true,
            &[("TERM".into(), "vt100".into()), ("FOO".into(), "1".into())],
        );
        assert_eq!(env.get("TERM").map(String::as_str), Some("vt100"));
        assert_eq!(env.get("FOO").map(String::as_str), Some("1"));
        assert!(env.contains_key("HOME"));
        assert!(env.contains_key("USER"));
        assert!(env.contains_key("LANG"));
        let env = child_env(Path::new("/home/x"), "/bin/bash", true, &[]);
        assert_eq!(env.get("TERM").map(String::as_str), Some("xterm-256color"));
    }
}
