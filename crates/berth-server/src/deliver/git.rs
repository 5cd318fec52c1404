//! git in the task's workspace for delivery: what the repository's remote and branch are, and
//! the push itself. Everything runs through the workspace's daemon as the agent, with the
//! workspace's own network path (its egress proxy and rules); the answers are the workspace's
//! word and are parsed as such (object ids checked, URLs stripped of credentials, outputs
//! capped, a deadline on every exec).

use std::time::Duration;

use berth_domain::ErrorCode;
use berth_store::{is_object_id, Task};

use crate::error::{ApiError, ApiResult};
use crate::state::AppState;

/// How long reading the repository may take.
const INFO_DEADLINE: Duration = Duration::from_secs(20);
/// How long a push may take.
const PUSH_DEADLINE: Duration = Duration::from_secs(120);
/// The most output read back.
const CAP: usize = 64 * 1024;

/// `info DIR REMOTE` prints `url`, `branch`, `head`, `default` (when the remote has a HEAD)
/// and `dirty` lines; `push DIR REMOTE BRANCH` pushes HEAD to `refs/heads/BRANCH` and prints
/// git's porcelain output, then `__BERTH_EXIT__ N`. With `BERTH_PUSH_PASSWORD` set (a
/// placeholder the workspace already holds) git asks berth's helper for the credential.
const SCRIPT: &str = r#"mode=$1; cd "$2" 2>/dev/null || { echo __BERTH_NO_DIR__; exit 0; }
git rev-parse --is-inside-work-tree >/dev/null 2>&1 || { echo __BERTH_NOT_GIT__; exit 0; }
url=$(git remote get-url "$3" 2>/dev/null) || { echo __BERTH_NO_REMOTE__; exit 0; }
case "$mode" in
  info)
    printf 'url %s\n' "$url"
    printf 'branch %s\n' "$(git symbolic-ref -q --short HEAD || echo -)"
    printf 'head %s\n' "$(git rev-parse -q --verify HEAD || echo -)"
    d=$(git symbolic-ref -q --short "refs/remotes/$3/HEAD") && printf 'default %s\n' "${d#"$3"/}"
    printf 'dirty %s\n' "$(git status --porcelain 2>/dev/null | wc -l)" ;;
  push)
    git check-ref-format --branch "$4" >/dev/null 2>&1 || { echo __BERTH_BAD_BRANCH__; exit 0; }
    h='!f() { test "$1" = get || return 0; echo "username=$BERTH_PUSH_USER"; echo "password=$BERTH_PUSH_PASSWORD"; }; f'
    if [ -n "${BERTH_PUSH_PASSWORD:-}" ]; then
      out=$(git -c credential.helper= -c "credential.helper=$h" push --porcelain "$3" "HEAD:refs/heads/$4" 2>&1)
    else
      out=$(git push --porcelain "$3" "HEAD:refs/heads/$4" 2>&1)
    fi
    st=$?; printf '%s\n__BERTH_EXIT__ %s\n' "$out" "$st" ;;
esac"#;

/// What the task's repository says about itself.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct RepoInfo {
    /// The remote's URL, without any credentials.
    pub url: String,
    /// The checked-out branch (`None`: detached HEAD).
    pub branch: Option<String>,
    pub head: Option<String>,
    /// The remote's default branch, when the clone knows it.
    pub default: Option<String>,
    /// Uncommitted changes (lines of `git status --porcelain`).
    pub dirty: u64,
}

/// A URL with any `user:password@` taken out (placeholders included).
pub fn strip_credentials(url: &str) -> String {
    match url.split_once("://") {
        Some((scheme, rest)) => {
            let (authority, path) = rest.split_once('/').unwrap_or((rest, ""));
            let host = authority.rsplit_once('@').map_or(authority, |(_, h)| h);
            if path.is_empty() && !rest.contains('/') {
                format!("{scheme}://{host}")
            } else {
                format!("{scheme}://{host}/{path}")
            }
        }
        None => url.to_owned(),
    }
}

/// Takes credentials out of every URL in a line of git output.
fn scrub(line: &str) -> String {
    static RE: std::sync::LazyLock<Option<regex::Regex>> = std::sync::LazyLock::new(|| {
        regex::Regex::new(r"([A-Za-z][A-Za-z0-9+.-]*://)[^/@\s']*@").ok()
    });
    match RE.as_ref() {
        Some(re) => re.replace_all(line, "$1").into_owned(),
        None => String::new(),
    }
}

async fn run(
    state: &AppState,
    t: &Task,
    args: &[&str],
    env: Vec<(String, String)>,
    deadline: Duration,
) -> ApiResult<String> {
    let mut env = env;
    env.push(("GIT_TERMINAL_PROMPT".into(), "0".into()));
    let out = crate::task_diff::git_script(state, t, SCRIPT, args, env, CAP, deadline).await?;
    let text = out.stdout_lossy();
    let first = text.lines().next().unwrap_or_default();
    match first {
        "__BERTH_NO_DIR__" | "__BERTH_NOT_GIT__" => Err(ApiError::new(
            ErrorCode::InvalidState,
            format!("the task's directory {} is gone or not in git", args[1]),
        )),
        "__BERTH_NO_REMOTE__" => Err(ApiError::new(
            ErrorCode::GitRemoteMissing,
            format!("the task's repository has no remote named {:?}", args[2]),
        )),
        _ => Ok(text),
    }
}

/// Parses the `info` answer.
pub fn parse_info(text: &str) -> RepoInfo {
    let mut info = RepoInfo::default();
    for line in text.lines() {
        let (key, value) = line.split_once(' ').unwrap_or((line, ""));
        let value = value.trim();
        let some = |v: &str| (!v.is_empty() && v != "-").then(|| v.to_owned());
        match key {
            "url" => info.url = strip_credentials(value),
            "branch" => info.branch = some(value),
            "head" => info.head = some(value).filter(|h| is_object_id(h)),
            "default" => info.default = some(value),
            "dirty" => info.dirty = value.parse().unwrap_or(0),
            _ => {}
        }
    }
    info
}

/// The repository in `dir` and its remote `remote`.
pub async fn info(state: &AppState, t: &Task, dir: &str, remote: &str) -> ApiResult<RepoInfo> {
    let text = run(state, t, &["info", dir, remote], Vec::new(), INFO_DEADLINE).await?;
    Ok(parse_info(&text))
}

/// How a push ended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PushOutcome {
    Pushed,
    UpToDate,
    /// git's one-line reason.
    Refused(String),
}

/// Reads git's porcelain push output (see `git push --porcelain`).
pub fn parse_push(text: &str) -> PushOutcome {
    let exit = text
        .lines()
        .rev()
        .find_map(|l| l.strip_prefix("__BERTH_EXIT__ "))
        .and_then(|c| c.trim().parse::<i32>().ok())
        .unwrap_or(-1);
    let refs: Vec<(char, &str)> = text
        .lines()
        .filter_map(|l| {
            let mut f = l.split('\t');
            let flag = f.next()?;
            let _refs = f.next()?;
            let summary = f.next()?;
            (flag.chars().count() == 1).then(|| (flag.chars().next().unwrap_or(' '), summary))
        })
        .collect();
    if let Some((_, summary)) = refs.iter().find(|(f, _)| *f == '!') {
        return PushOutcome::Refused(scrub(summary.trim()));
    }
    if exit == 0 {
        return if !refs.is_empty() && refs.iter().all(|(f, _)| *f == '=') {
            PushOutcome::UpToDate
        } else {
            PushOutcome::Pushed
        };
    }
    let reason = text
        .lines()
        .filter(|l| !l.starts_with("__BERTH_EXIT__"))
        .rfind(|l| l.starts_with("fatal:") || l.starts_with("error:"))
        .or_else(|| {
            text.lines()
                .rfind(|l| !l.trim().is_empty() && !l.starts_with("__BERTH"))
        })
        .unwrap_or("git push failed");
    let reason = reason
        .trim_start_matches("fatal: ")
        .trim_start_matches("error: ");
    PushOutcome::Refused(scrub(reason.trim()).chars().take(300).collect())
}

/// Pushes the HEAD of `dir` to `refs/heads/BRANCH` on `remote`; `credential` is the
/// placeholder of the secret bound to the remote's host, handed to git when the remote's URL
/// carries none.
pub async fn push(
    state: &AppState,
    t: &Task,
    dir: &str,
    remote: &str,
    branch: &str,
    credential: Option<&str>,
) -> ApiResult<PushOutcome> {
    let env = credential.map_or_else(Vec::new, |p| {
        vec![
            ("BERTH_PUSH_USER".to_owned(), "x-access-token".to_owned()),
            ("BERTH_PUSH_PASSWORD".to_owned(), p.to_owned()),
        ]
    });
    let args = ["push", dir, remote, branch];
    let text = run(state, t, &args, env, PUSH_DEADLINE).await?;
    if text.starts_with("__BERTH_BAD_BRANCH__") {
        return Err(ApiError::new(
            ErrorCode::GitBranchMissing,
            format!("{branch:?} is not a branch name git accepts"),
        ));
    }
    Ok(parse_push(&text))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn credentials_never_leave_a_url() {
        assert_eq!(
            strip_credentials("https://x-access-token:berth-placeholder-t-1@git.test:8443/app.git"),
            "https://git.test:8443/app.git"
        );
        assert_eq!(
            strip_credentials("git@github.com:a/b"),
            "git@github.com:a/b"
        );
        assert_eq!(
            scrub("Authentication failed for 'https://u:p@h/x.git/'"),
            "Authentication failed for 'https://h/x.git/'"
        );
    }

    #[test]
    fn push_answers_are_read() {
        let ok = "To https://h/x.git\n*\tHEAD:refs/heads/f\t[new branch]\nDone\n__BERTH_EXIT__ 0\n";
        assert_eq!(parse_push(ok), PushOutcome::Pushed);
        let same =
            "To https://h/x.git\n=\tHEAD:refs/heads/f\t[up to date]\nDone\n__BERTH_EXIT__ 0\n";
        assert_eq!(parse_push(same), PushOutcome::UpToDate);
        let rejected = "To https://h/x.git\n!\tHEAD:refs/heads/main\t[rejected] (fetch first)\nDone\nerror: failed to push some refs to 'https://h/x.git'\n__BERTH_EXIT__ 1\n";
        assert_eq!(
            parse_push(rejected),
            PushOutcome::Refused("[rejected] (fetch first)".into())
        );
        let auth = "fatal: Authentication failed for 'https://a:b@h/x.git/'\n__BERTH_EXIT__ 128\n";
        assert_eq!(
            parse_push(auth),
            PushOutcome::Refused("Authentication failed for 'https://h/x.git/'".into())
        );
    }

    #[test]
    fn info_is_read_as_the_workspaces_word() {
        let i = parse_info(
            "url https://u:p@h/x.git\nbranch feature\nhead 0123456789abcdef0123456789abcdef01234567\ndefault main\ndirty 2\n",
        );
        assert_eq!(i.url, "https://h/x.git");
        assert_eq!(i.branch.as_deref(), Some("feature"));
        assert!(i.head.is_some());
        assert_eq!((i.default.as_deref(), i.dirty), (Some("main"), 2));
        let i = parse_info("url x\nbranch -\nhead --exec=evil\n");
        assert_eq!((i.branch, i.head), (None, None));
    }
}
