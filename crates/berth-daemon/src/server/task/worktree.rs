//! The files a turn needs before its agent starts: the task's git worktree (`git worktree
//! add`, bounded in time), its private state directories, and the private files the driver
//! asks for (mode 0700 directories, 0600 files).

use std::io::Write as _;
use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::Duration;

use super::events::truncate_string;
use super::output::MAX_LOG_LINE;
use crate::proto::Worktree;
use crate::sys;

/// How long `git worktree add` may take.
const GIT_TIMEOUT: Duration = Duration::from_secs(300);

/// Creates the worktree `path` of `wt.repo` on the new branch `wt.branch`.
pub(super) async fn create_worktree(wt: &Worktree, path: &Path) -> Result<(), String> {
    if let Some(parent) = path.parent() {
        std::fs::create_dir_all(parent)
            .map_err(|e| format!("creating {}: {e}", parent.display()))?;
    }
    let mut cmd = tokio::process::Command::new("git");
    cmd.arg("-C")
        .arg(&wt.repo)
        .args(["worktree", "add", "-b", &wt.branch, "--"])
        .arg(path)
        .env("GIT_TERMINAL_PROMPT", "0")
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .kill_on_drop(true);
    let output =
        match tokio::time::timeout(GIT_TIMEOUT, cmd.output()).await {
            Ok(Ok(o)) => o,
            Ok(Err(e)) if e.kind() == std::io::ErrorKind::NotFound => return Err(
                "creating the git worktree failed: git is not installed in this workspace image"
                    .into(),
            ),
            Ok(Err(e)) => return Err(format!("creating the git worktree failed: {e}")),
            Err(_) => {
                return Err(format!(
                    "creating the git worktree failed: git did not finish within {GIT_TIMEOUT:?}"
                ))
            }
        };
    if output.status.success() {
        return Ok(());
    }
    let mut msg = String::from_utf8_lossy(&output.stderr).trim().to_string();
    if msg.is_empty() {
        msg = format!("git exited with code {}", sys::exit_code(output.status));
    }
    truncate_string(&mut msg, MAX_LOG_LINE);
    Err(format!("creating the git worktree failed: {msg}"))
}

/// Creates `dir` (and its parents) and makes it mode 0700.
pub(super) fn make_private_dir(dir: &Path) -> Result<(), String> {
    std::fs::DirBuilder::new()
        .recursive(true)
        .mode(0o700)
        .create(dir)
        .and_then(|()| std::fs::set_permissions(dir, std::fs::Permissions::from_mode(0o700)))
        .map_err(|e| format!("creating {}: {e}", dir.display()))
}

/// Writes `content` to `path` (mode 0600), creating its missing parents with mode 0700.
pub(super) fn write_private_file(path: &PathBuf, content: &str) -> Result<(), String> {
    let fail = |e: std::io::Error| format!("writing {}: {e}", path.display());
    if let Some(parent) = path.parent().filter(|p| !p.as_os_str().is_empty()) {
        std::fs::DirBuilder::new()
            .recursive(true)
            .mode(0o700)
            .create(parent)
            .map_err(fail)?;
    }
    let mut f = std::fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(0o600)
        .open(path)
        .map_err(fail)?;
    f.set_permissions(std::fs::Permissions::from_mode(0o600))
        .map_err(fail)?;
    f.write_all(content.as_bytes()).map_err(fail)
}
