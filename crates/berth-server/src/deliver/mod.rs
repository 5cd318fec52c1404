//! Delivering a task's work: pushing its branch (`POST /tasks/{task}/push`) and opening a pull
//! or merge request for it (`POST /tasks/{task}/pr`) on GitHub, GitLab or Azure DevOps.
//!
//! **Push** runs `git push` inside the workspace, through its egress proxy and rules like any
//! of its traffic: the remote's credential is the placeholder of a secret bound to the
//! workspace, swapped for the real token by the proxy on the way out, so nothing new enters the
//! workspace. When the remote's URL carries no credential, berth hands git the placeholder of
//! the secret bound to the remote's host (a credential helper given on the command line; the
//! placeholder is already in the workspace's environment).
//!
//! **Pull request** is a call from the server to the provider's API with the real value of a
//! secret bound to the workspace, read from the vault on the server and never sent to the
//! workspace. The secret must be bound to the workspace and name the API host in its hosts (the
//! same grant that lets the workspace's own traffic to that host carry it); the API base is the
//! provider's public one or the operator's override, never one the workspace names.

pub mod forge;
pub mod git;

use std::sync::Arc;

use berth_api as api;
use berth_domain::{ErrorCode, TaskState, WorkspaceState};
use berth_store::{SecretUse, Task, Workspace};

use crate::auth::{audit, Actor};
use crate::error::{ApiError, ApiResult};
use crate::state::AppState;
use crate::tasks::{task_dir, task_target};

/// How long the provider's API may take.
const API_DEADLINE: std::time::Duration = std::time::Duration::from_secs(30);
/// The longest description sent (Azure DevOps takes 4000 characters).
const MAX_DESCRIPTION: usize = 4000;

fn pattern(re: &str, what: &str, v: &str) -> ApiResult<()> {
    match regex::Regex::new(re) {
        Ok(r) if r.is_match(v) => Ok(()),
        _ => Err(ApiError::invalid(format!(
            "{what} {v:?} does not match {re}"
        ))),
    }
}

/// The task, at rest, in its running workspace.
async fn ready(state: &AppState, raw: &str) -> ApiResult<(Task, Workspace)> {
    let t = crate::tasks::find(state, raw).await?;
    if !t.state.is_turn_over() && t.state != TaskState::Waiting {
        return Err(ApiError::new(
            ErrorCode::TaskTurnRunning,
            format!(
                "task {} is {}: deliver its work once the turn is over",
                t.id, t.state
            ),
        ));
    }
    if t.state == TaskState::Waiting {
        return Err(ApiError::new(
            ErrorCode::TaskTurnRunning,
            format!("task {} waits for an approval: decide it first", t.id),
        ));
    }
    let w = state
        .store
        .find_workspace_by_id(&t.workspace_id)
        .await?
        .ok_or_else(|| {
            ApiError::new(
                ErrorCode::InvalidState,
                format!("the workspace of task {} was removed", t.id),
            )
        })?;
    if w.state != WorkspaceState::Running {
        return Err(ApiError::new(
            ErrorCode::InvalidState,
            format!(
                "workspace {} is {}: start it to deliver the task",
                w.qualified_name(),
                w.state
            ),
        ));
    }
    Ok((t, w))
}

/// The workspace's secret bindings that name `host`.
async fn bindings_for(state: &AppState, w: &Workspace, host: &str) -> ApiResult<Vec<SecretUse>> {
    Ok(state
        .store
        .secret_uses(Some(&w.id))
        .await?
        .into_iter()
        .filter(|u| u.hosts.iter().any(|h| h.eq_ignore_ascii_case(host)))
        .collect())
}

/// Pushes the task's branch on behalf of `actor` (audited as `task.push`).
pub async fn push(
    state: &Arc<AppState>,
    actor: &Actor,
    raw: &str,
    req: ApiResult<api::PushTask>,
) -> ApiResult<api::TaskPush> {
    let result = match req {
        Ok(req) => push_unaudited(state, raw, req).await,
        Err(e) => Err(e),
    };
    let target = task_target(state, raw).await;
    audit(&state.store, actor, "task.push", &target, &result).await;
    result
}

async fn push_unaudited(
    state: &AppState,
    raw: &str,
    req: api::PushTask,
) -> ApiResult<api::TaskPush> {
    let remote = req.remote.unwrap_or_else(|| "origin".to_owned());
    pattern(api::REMOTE_PATTERN, "remote", &remote)?;
    if let Some(b) = &req.branch {
        pattern(api::BRANCH_PATTERN, "branch", b)?;
    }
    let (t, w) = ready(state, raw).await?;
    let dir = task_dir(&t);
    let info = git::info(state, &t, &dir, &remote).await?;
    let branch = req.branch.or(info.branch.clone()).ok_or_else(|| {
        ApiError::new(
            ErrorCode::GitBranchMissing,
            format!("{dir} is on a detached HEAD: name the branch to push to (--branch)"),
        )
    })?;
    let head = info.head.clone().ok_or_else(|| {
        ApiError::new(ErrorCode::NothingToPush, "the repository has no commit yet")
    })?;
    let base = state
        .store
        .task_snapshots(&t.id)
        .await?
        .first()
        .and_then(|s| s.head.clone());
    if base.as_deref() == Some(head.as_str()) {
        let dirty = match info.dirty {
            0 => String::new(),
            n => format!(" ({n} uncommitted changes: commit them in the workspace first)"),
        };
        return Err(ApiError::new(
            ErrorCode::NothingToPush,
            format!("the task made no commits since {}{dirty}", &head[..12]),
        ));
    }
    let credential = push_credential(state, &w, &info.url).await?;
    match git::push(state, &t, &dir, &remote, &branch, credential.as_deref()).await? {
        git::PushOutcome::Pushed => {}
        git::PushOutcome::UpToDate => {
            return Err(ApiError::new(
                ErrorCode::NothingToPush,
                format!(
                    "{remote}/{branch} already has {}: nothing to push",
                    &head[..12]
                ),
            ))
        }
        git::PushOutcome::Refused(reason) => {
            return Err(ApiError::new(
                ErrorCode::PushRejected,
                format!("the push to {remote}/{branch} was refused: {reason}"),
            ))
        }
    }
    state
        .store
        .set_task_push(&t.id, &remote, &branch, &head)
        .await?;
    tracing::info!(task = %t.id, %remote, %branch, commit = %head, "pushed the task's branch");
    Ok(api::TaskPush {
        remote,
        branch,
        commit: head,
        at: berth_domain::Timestamp::now(),
    })
}

/// The placeholder git is given for a remote whose URL carries no credential: that of the one
/// placeholder secret bound to the remote's host (none: git uses what the workspace has).
async fn push_credential(state: &AppState, w: &Workspace, url: &str) -> ApiResult<Option<String>> {
    let Some((host, _)) = forge::split_remote(url) else {
        return Ok(None);
    };
    if !url.starts_with("https://") && !url.starts_with("http://") {
        return Ok(None);
    }
    let uses = bindings_for(state, w, &host).await?;
    Ok(uses
        .into_iter()
        .find(|u| u.delivery == berth_domain::SecretDelivery::Placeholder)
        .map(|u| u.placeholder))
}

/// Opens a pull (merge) request for the task on behalf of `actor` (audited as `task.pr`).
pub async fn pull_request(
    state: &Arc<AppState>,
    actor: &Actor,
    raw: &str,
    req: ApiResult<api::CreatePullRequest>,
) -> ApiResult<api::TaskPullRequest> {
    let result = match req {
        Ok(req) => pr_unaudited(state, raw, req).await,
        Err(e) => Err(e),
    };
    let target = task_target(state, raw).await;
    audit(&state.store, actor, "task.pr", &target, &result).await;
    result
}

fn check_pr_request(req: &api::CreatePullRequest) -> ApiResult<()> {
    if let Some(r) = &req.remote {
        pattern(api::REMOTE_PATTERN, "remote", r)?;
    }
    for b in [&req.branch, &req.base].into_iter().flatten() {
        pattern(api::BRANCH_PATTERN, "branch", b)?;
    }
    if let Some(s) = &req.secret {
        pattern(api::SECRET_NAME_PATTERN, "secret", s)?;
    }
    if req.title.as_ref().is_some_and(|t| t.chars().count() > 256) {
        return Err(ApiError::invalid("the title is longer than 256 characters"));
    }
    Ok(())
}

async fn pr_unaudited(
    state: &AppState,
    raw: &str,
    req: api::CreatePullRequest,
) -> ApiResult<api::TaskPullRequest> {
    check_pr_request(&req)?;
    let (t, w) = ready(state, raw).await?;
    let delivered = state.store.task_deliveries(&[&t.id]).await?;
    let delivered = delivered.get(&t.id).cloned().unwrap_or_default();
    if let Some(pr) = &delivered.pull_request {
        return Err(ApiError::new(
            ErrorCode::Conflict,
            format!("task {} already has a pull request: {}", t.id, pr.url),
        ));
    }
    let remote = req.remote.clone().unwrap_or_else(|| "origin".to_owned());
    let dir = task_dir(&t);
    let info = git::info(state, &t, &dir, &remote).await?;
    let repo = forge::detect(&info.url, &state.config.env.forges)?;
    let pushed = delivered
        .push
        .filter(|p| p.remote == remote)
        .map(|p| p.branch);
    let head = req.branch.clone().or(pushed).or(info.branch.clone());
    let head = head.ok_or_else(|| {
        ApiError::new(
            ErrorCode::GitBranchMissing,
            "the task has no branch (detached HEAD, never pushed): name it (--branch)",
        )
    })?;
    let base = req.base.clone().or(info.default.clone()).ok_or_else(|| {
        ApiError::new(
            ErrorCode::GitBranchMissing,
            format!(
                "the clone does not know {remote}'s default branch: name the base branch (--base)"
            ),
        )
    })?;
    if base == head {
        return Err(ApiError::new(
            ErrorCode::GitBranchMissing,
            format!("the task's branch is {head}, the base branch itself: push it to its own branch first (--branch)"),
        ));
    }
    let token = api_credential(state, &w, &repo, req.secret.as_deref()).await?;
    let title = title(&t, req.title.as_deref());
    let body = summary::describe(state, &t).await;
    let pr = forge::PullRequest {
        title: &title,
        body: &body,
        head: &head,
        base: &base,
        draft: req.draft,
    };
    let (url, number) = call(&repo, &forge::request(&repo, &pr, token.expose()), &token).await?;
    let provider = repo.provider.as_str();
    state
        .store
        .set_task_pull_request(&t.id, provider, &url, number)
        .await?;
    tracing::info!(task = %t.id, %provider, %url, "opened a pull request for the task");
    Ok(api::TaskPullRequest {
        provider: provider.to_owned(),
        url,
        number,
        at: berth_domain::Timestamp::now(),
    })
}

/// The pull request's title: the caller's, else the prompt's first line (one line, capped).
fn title(t: &Task, given: Option<&str>) -> String {
    let raw = given.filter(|g| !g.trim().is_empty()).unwrap_or_else(|| {
        t.prompt
            .lines()
            .find(|l| !l.trim().is_empty())
            .unwrap_or("berth task")
    });
    let one: String = raw
        .chars()
        .map(|c| if c.is_control() { ' ' } else { c })
        .collect();
    let one = one.trim();
    if one.chars().count() > 72 && given.is_none() {
        format!("{}…", one.chars().take(71).collect::<String>())
    } else {
        one.to_owned()
    }
}

/// The real value of the secret berth may use on `repo`'s API for this workspace: bound to the
/// workspace, with the API host among its hosts (named, or the only such binding).
async fn api_credential(
    state: &AppState,
    w: &Workspace,
    repo: &forge::Repo,
    named: Option<&str>,
) -> ApiResult<berth_domain::Secret> {
    let host = &repo.api_host;
    let uses = bindings_for(state, w, host).await?;
    let refuse = |why: String| ApiError::new(ErrorCode::ForgeCredential, why);
    let chosen = match named {
        Some(n) => uses.iter().find(|u| u.name == n).ok_or_else(|| {
            refuse(format!("secret {n} is not bound to workspace {} for {host}: bind it with {host} among its hosts", w.qualified_name()))
        })?,
        None => match uses.as_slice() {
            [one] => one,
            [] => return Err(refuse(format!("no secret bound to workspace {} names {host}: bind the provider's token with {host} among its hosts", w.qualified_name()))),
            many => return Err(refuse(format!("several secrets bound to workspace {} name {host} ({}): choose one (--secret)", w.qualified_name(),
                many.iter().map(|u| u.name.as_str()).collect::<Vec<_>>().join(", ")))),
        },
    };
    crate::secrets::reveal(&state.store, &state.vault, w.tenant.as_str(), &chosen.name)
        .await
        .map_err(|e| {
            tracing::warn!(secret = %chosen.name, error = %e, "the pull request's secret cannot be read");
            refuse(format!("secret {} cannot be read from the vault (removed?)", chosen.name))
        })
}

/// Makes the API call; the pull request's URL and number, or 502 `forge_error`.
async fn call(
    repo: &forge::Repo,
    c: &forge::Call,
    token: &berth_domain::Secret,
) -> ApiResult<(String, u64)> {
    let fail =
        |m: String| ApiError::new(ErrorCode::ForgeError, m.replace(token.expose(), "[secret]"));
    let client = reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .timeout(API_DEADLINE)
        .user_agent(concat!("berth/", env!("CARGO_PKG_VERSION")))
        .build()
        .map_err(|e| fail(format!("no HTTP client: {e}")))?;
    let mut rb = client.post(&c.url).json(&c.body);
    for (k, v) in &c.headers {
        rb = rb.header(*k, v);
    }
    let provider = repo.provider.as_str();
    let resp = rb.send().await.map_err(|e| {
        fail(format!(
            "{provider}'s API at {} did not answer: {}",
            repo.api_base,
            e.without_url()
        ))
    })?;
    let status = resp.status();
    let v: serde_json::Value = resp.json().await.unwrap_or_default();
    if !status.is_success() {
        return Err(fail(format!(
            "{provider} refused the pull request ({}): {}",
            status.as_u16(),
            forge::refusal(&v)
        )));
    }
    forge::created(repo, &v).ok_or_else(|| {
        fail(format!(
            "{provider} answered {status} without the pull request's URL and number"
        ))
    })
}

mod summary;
