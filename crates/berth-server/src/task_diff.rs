//! What a task changed: a snapshot of its directory before each turn (the commit it was on and a
//! tree of the whole working state, written with a throw-away index so the real index is never
//! touched), and diffs and patches between them. The task's diff is the first snapshot → now, so
//! it includes the agent's commits, untracked files (`.gitignore` honoured) and renames, and not
//! what was already uncommitted before the task began; turn n's diff is snapshot n → n+1 (the
//! last turn's: → now). Tasks from before snapshots existed, and directories outside git, keep
//! the old diff (`git diff HEAD` plus untracked files).
//!
//! Everything here runs inside the workspace through its daemon, so the output is the
//! workspace's word: object ids are accepted only as git object ids (stored and passed as
//! positional arguments, never spliced into a script), outputs are capped, and every exec has a
//! deadline.

use std::time::Duration;

use berth_api as api;
use berth_domain::ErrorCode;
use berth_store::{is_object_id, Task, TaskSnapshot};

use crate::error::{ApiError, ApiResult};
use crate::state::AppState;
use crate::tasks::task_dir;

/// How long a snapshot may take before the task starts without one (a huge repository).
const SNAPSHOT_DEADLINE: Duration = Duration::from_secs(20);
/// How long a diff or patch may take.
const DIFF_DEADLINE: Duration = Duration::from_secs(60);
/// The most diff or patch text returned (the rest is cut, and said so).
const MAX_DIFF: usize = 4 << 20;

/// The one script, by mode (`$1`): `snapshot DIR` / `commit DIR` print `HEAD TREE` (`-` for no
/// commit); `diff DIR FROM TO STAT` and `patch DIR FROM TO` print a diff between two trees (`TO`
/// `-`: the working state now); `mbox DIR BASE` prints the commits since BASE as an mbox.
const SCRIPT: &str = r#"mode=$1; cd "$2" 2>/dev/null || { echo __BERTH_NO_DIR__; exit 0; }
git rev-parse --is-inside-work-tree >/dev/null 2>&1 || { echo __BERTH_NOT_GIT__; exit 0; }
q="git -c core.quotepath=off"
head=$(git rev-parse --verify -q HEAD) || head=-
now_tree() {
  idx=$(mktemp) || return 1
  cp "$(git rev-parse --git-path index)" "$idx" 2>/dev/null || rm -f "$idx"
  GIT_INDEX_FILE="$idx" git add -A >/dev/null 2>&1 && GIT_INDEX_FILE="$idx" git write-tree
  st=$?; rm -f "$idx"; return $st
}
case "$mode" in
  commit) [ "$head" = - ] && { echo __BERTH_NO_COMMIT__; exit 0; }
          echo "$head $(git rev-parse "$head^{tree}")" ;;
  snapshot) t=$(now_tree) || exit 1; echo "$head $t" ;;
  diff|patch) to=$4; [ "$to" = - ] && { to=$(now_tree) || exit 1; }
          if [ "$mode" = patch ]; then $q diff --no-color --binary -M "$3" "$to"
          elif [ "$5" = stat ]; then $q diff --no-color -M --stat=200 "$3" "$to"
          else $q diff --no-color -M "$3" "$to"; fi ;;
  mbox) [ "$head" = - ] && exit 0; $q format-patch --stdout --no-color "$3..$head" ;;
esac"#;

/// The pre-snapshot diff: against HEAD plus untracked files.
const LEGACY_DIFF: &str = r#"cd "$1" 2>/dev/null || { echo __BERTH_NO_DIR__; exit 0; }
git rev-parse --is-inside-work-tree >/dev/null 2>&1 || { echo __BERTH_NOT_GIT__; exit 0; }
git -c core.quotepath=off diff --no-color HEAD 2>/dev/null || git -c core.quotepath=off diff --no-color
git ls-files --others --exclude-standard -z | xargs -0 -r -n1 git diff --no-color --no-index /dev/null 2>/dev/null
true"#;

/// Runs `script` in the task's workspace with `args`; stdout, and whether it was cut.
async fn run(
    state: &AppState,
    t: &Task,
    script: &str,
    args: &[&str],
    cap: usize,
    deadline: Duration,
) -> ApiResult<(String, bool)> {
    let out = git_script(state, t, script, args, Vec::new(), cap, deadline).await?;
    Ok((out.stdout_lossy(), out.stdout_truncated))
}

/// Runs a git `script` (`sh -c`, `args` as `$1`…, `env` added) in the task's workspace through
/// its daemon, keeping at most `cap` bytes of stdout; 503 `daemon_unavailable` when it takes
/// longer than `deadline`.
pub(crate) async fn git_script(
    state: &AppState,
    t: &Task,
    script: &str,
    args: &[&str],
    env: Vec<(String, String)>,
    cap: usize,
    deadline: Duration,
) -> ApiResult<berth_daemon::ExecOutput> {
    let mut argv = vec![
        "sh".to_owned(),
        "-c".to_owned(),
        script.to_owned(),
        "sh".to_owned(),
    ];
    argv.extend(args.iter().map(|a| (*a).to_owned()));
    let req = berth_daemon::ExecRequest {
        argv,
        env,
        cwd: None,
        stdin: false,
    };
    let out = tokio::time::timeout(
        deadline,
        state.daemon(&t.workspace_id).exec_collect(req, cap),
    )
    .await
    .map_err(|_| {
        ApiError::new(
            ErrorCode::DaemonUnavailable,
            format!(
                "git in the workspace took longer than {}s",
                deadline.as_secs()
            ),
        )
    })??;
    Ok(out)
}

/// Parses `HEAD TREE` as the script prints it; `None` for anything else.
fn parse_snapshot(out: &str) -> Option<(Option<String>, String)> {
    let mut words = out.lines().next()?.split_whitespace();
    let head = words.next()?;
    let tree = words.next()?;
    if words.next().is_some() || !is_object_id(tree) {
        return None;
    }
    let head = match head {
        "-" => None,
        h if is_object_id(h) => Some(h.to_owned()),
        _ => return None,
    };
    Some((head, tree.to_owned()))
}

/// Records what the task's directory holds before turn `turn` (1 for the first). Best effort: a
/// directory outside git, a slow repository or a daemon error leave no snapshot (the diff then
/// falls back), and are logged, never fatal to the turn. A worktree task's first snapshot is
/// its repository's HEAD (the worktree is made from it when the turn starts).
pub async fn snapshot(state: &AppState, t: &Task, turn: u32) {
    let (mode, dir) = if turn == 1 && t.worktree.is_some() {
        ("commit", t.dir.clone())
    } else {
        ("snapshot", task_dir(t))
    };
    let out = run(state, t, SCRIPT, &[mode, &dir], 4096, SNAPSHOT_DEADLINE).await;
    let parsed = match &out {
        Ok((text, _)) => parse_snapshot(text),
        Err(_) => None,
    };
    match (parsed, out) {
        (Some((head, tree)), _) => {
            if let Err(e) = state
                .store
                .add_task_snapshot(&t.id, turn, head.as_deref(), &tree)
                .await
            {
                tracing::warn!(task = %t.id, turn, error = %e, "cannot store the task snapshot");
            }
        }
        (None, Ok((text, _))) => {
            tracing::debug!(task = %t.id, turn, answer = %text.chars().take(80).collect::<String>(),
                "no snapshot: not a git directory (or no commit yet)");
        }
        (None, Err(e)) => {
            tracing::warn!(task = %t.id, turn, error = %e.message, "no snapshot of the task's directory");
        }
    }
}

/// The number the next turn's snapshot gets.
pub async fn next_turn(state: &AppState, t: &Task) -> u32 {
    match state.store.task_snapshots(&t.id).await {
        Ok(s) => s.last().map_or(1, |l| l.turn + 1),
        Err(_) => 1,
    }
}

/// What to diff: the whole task, or one turn (1-based).
#[derive(Debug, Clone, Copy, Default)]
pub struct DiffOptions {
    pub turn: Option<u32>,
    pub stat: bool,
}

/// The trees to diff for `opts`: (from, to), `to` `-` meaning the working state now.
fn range(snaps: &[TaskSnapshot], turn: Option<u32>) -> ApiResult<(String, String)> {
    let Some(n) = turn else {
        return Ok((snaps[0].tree.clone(), "-".to_owned()));
    };
    let i = snaps.iter().position(|s| s.turn == n).ok_or_else(|| {
        ApiError::invalid(format!(
            "turn {n} has no snapshot: this task's turns with one are {}",
            snaps
                .iter()
                .map(|s| s.turn.to_string())
                .collect::<Vec<_>>()
                .join(", ")
        ))
    })?;
    let to = snaps
        .get(i + 1)
        .map_or_else(|| "-".to_owned(), |s| s.tree.clone());
    Ok((snaps[i].tree.clone(), to))
}

/// The task's diff (see the module doc).
pub async fn diff(state: &AppState, t: &Task, opts: DiffOptions) -> ApiResult<api::TaskDiff> {
    crate::tasks::running_workspace(state, t, "see the diff").await?;
    let dir = task_dir(t);
    let snaps = state.store.task_snapshots(&t.id).await?;
    let (text, truncated) = if snaps.is_empty() {
        if opts.turn.is_some() || opts.stat {
            return Err(ApiError::invalid(
                "this task has no snapshots (its directory was not in git when it started): only its whole diff is available",
            ));
        }
        run(state, t, LEGACY_DIFF, &[&dir], MAX_DIFF, DIFF_DEADLINE).await?
    } else {
        let (from, to) = range(&snaps, opts.turn)?;
        let stat = if opts.stat { "stat" } else { "full" };
        run(
            state,
            t,
            SCRIPT,
            &["diff", &dir, &from, &to, stat],
            MAX_DIFF,
            DIFF_DEADLINE,
        )
        .await?
    };
    let git = !text.starts_with("__BERTH_NOT_GIT__") && !text.starts_with("__BERTH_NO_DIR__");
    Ok(api::TaskDiff {
        dir,
        git,
        diff: if git { text } else { String::new() },
        truncated,
        base_commit: snaps.first().and_then(|s| s.head.clone()),
        turn: opts.turn,
        turns: snaps.iter().map(|s| s.turn).collect(),
    })
}

/// A patch of the whole task: `git apply`-able (binary files included), or (`mbox`) the agent's
/// commits since the task's base commit as `git am` reads them.
pub async fn patch(state: &AppState, t: &Task, mbox: bool) -> ApiResult<String> {
    crate::tasks::running_workspace(state, t, "download the patch").await?;
    let dir = task_dir(t);
    let snaps = state.store.task_snapshots(&t.id).await?;
    let Some(first) = snaps.first() else {
        return Err(ApiError::invalid(
            "this task has no snapshots (its directory was not in git when it started): no patch",
        ));
    };
    let (text, truncated) = if mbox {
        let Some(base) = &first.head else {
            return Err(ApiError::invalid(
                "the repository had no commit when the task started: no mbox (take the patch)",
            ));
        };
        run(
            state,
            t,
            SCRIPT,
            &["mbox", &dir, base],
            MAX_DIFF,
            DIFF_DEADLINE,
        )
        .await?
    } else {
        run(
            state,
            t,
            SCRIPT,
            &["patch", &dir, &first.tree, "-"],
            MAX_DIFF,
            DIFF_DEADLINE,
        )
        .await?
    };
    if text.starts_with("__BERTH_") {
        return Err(ApiError::new(
            ErrorCode::InvalidState,
            format!("the task's directory {dir} is gone or no longer in git"),
        ));
    }
    if truncated {
        return Err(ApiError::new(
            ErrorCode::PayloadTooLarge,
            format!(
                "the patch is larger than {} MiB: take it with git in the workspace",
                MAX_DIFF >> 20
            ),
        ));
    }
    Ok(text)
}

#[cfg(test)]
mod tests {
    use super::*;

    const A: &str = "0123456789abcdef0123456789abcdef01234567";
    const B: &str = "89abcdef0123456789abcdef0123456789abcdef";

    #[test]
    fn snapshot_answers_are_checked() {
        assert_eq!(
            parse_snapshot(&format!("{A} {B}\n")),
            Some((Some(A.into()), B.into()))
        );
        assert_eq!(parse_snapshot(&format!("- {B}")), Some((None, B.into())));
        for bad in [
            String::new(),
            "__BERTH_NOT_GIT__".into(),
            A.to_string(),
            format!("{A} {B} extra"),
            format!("HEAD {B}"),
            format!("{A} --output=/etc/passwd"),
        ] {
            assert_eq!(parse_snapshot(&bad), None, "{bad}");
        }
    }

    #[test]
    fn ranges_cover_the_task_or_one_turn() {
        let s = |turn, tree: &str| TaskSnapshot {
            turn,
            head: None,
            tree: tree.into(),
            at: berth_domain::Timestamp::from_stored(""),
        };
        let snaps = [s(1, A), s(2, B)];
        assert_eq!(range(&snaps, None).unwrap(), (A.into(), "-".into()));
        assert_eq!(range(&snaps, Some(1)).unwrap(), (A.into(), B.into()));
        assert_eq!(range(&snaps, Some(2)).unwrap(), (B.into(), "-".into()));
        let err = range(&snaps, Some(3)).unwrap_err();
        assert!(err.message.contains("1, 2"), "{}", err.message);
    }
}
