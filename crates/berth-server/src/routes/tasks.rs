//! `/tasks`: agent tasks and their event streams.

use std::sync::Arc;

use axum::extract::{Path, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::IntoResponse;
use axum::Extension;
use berth_api as api;
use berth_domain::TaskId;

use super::sse::{self, Read};
use super::{parse_body, Query};
use crate::auth::Actor;
use crate::error::{ApiError, ApiResult};
use crate::state::AppState;
use crate::tasks;

/// Starts a headless agent task in a workspace.
#[utoipa::path(post, path = "/api/v1/tasks", operation_id = "create_task", tag = "tasks", request_body = api::CreateTask,
    responses((status = 201, body = api::Task), (status = 400, body = api::ErrorBody),
        (status = 404, body = api::ErrorBody),
        (status = 409, description = "`invalid_state`, or `quota_exceeded`: the tenant's task quota is used up", body = api::ErrorBody),
        (status = 422, description = "`approval_unsupported`: an approval policy (`on-request`, `always`, given or the workspace's default) the agent's driver cannot honour yet", body = api::ErrorBody),
        (status = 424, description = "`provider_unconfigured`: the agent's LLM provider has no upstream key on this server", body = api::ErrorBody),
        (status = 503, body = api::ErrorBody)),
    security(("bearer" = [])))]
pub async fn create(
    State(state): State<Arc<AppState>>,
    Extension(actor): Extension<Actor>,
    body: super::JsonBody,
) -> ApiResult<impl IntoResponse> {
    let req = parse_body::<api::CreateTask>(&body);
    let task = tasks::create(&state, &actor, req).await?;
    Ok((
        StatusCode::CREATED,
        axum::Json(tasks::view(&state, &task).await?),
    ))
}

/// Takes a task over in an interactive session of its agent.
///
/// Takes a task over: an interactive session of the task's agent resuming its conversation in
/// its directory (attach to it like any session). 409 `task_turn_running` while a headless
/// turn runs; while the session is open, messages get 409 `task_interactive`.
#[utoipa::path(post, path = "/api/v1/tasks/{task}/attach", operation_id = "attach_task", tag = "tasks",
    request_body = api::AttachTask,
    params(("task" = String, Path, description = "task id")),
    responses((status = 201, body = api::Session), (status = 400, body = api::ErrorBody),
        (status = 404, body = api::ErrorBody), (status = 409, body = api::ErrorBody),
        (status = 424, description = "`provider_unconfigured`: the agent's LLM provider has no upstream key on this server", body = api::ErrorBody),
        (status = 503, body = api::ErrorBody)),
    security(("bearer" = [])))]
pub async fn attach(
    State(state): State<Arc<AppState>>,
    Extension(actor): Extension<Actor>,
    Path(id): Path<String>,
    body: super::JsonBody,
) -> ApiResult<impl IntoResponse> {
    let req = super::parse_optional_body::<api::AttachTask>(&body);
    let s = crate::agent_sessions::attach_task(&state, &actor, &id, req).await?;
    Ok((StatusCode::CREATED, axum::Json(s)))
}

/// Tasks, newest first, filtered by workspace or state.
#[utoipa::path(get, path = "/api/v1/tasks", operation_id = "list_tasks", tag = "tasks", params(api::TaskQuery),
    responses((status = 200, body = [api::Task]), (status = 400, body = api::ErrorBody)),
    security(("bearer" = [])))]
pub async fn list(
    State(state): State<Arc<AppState>>,
    Extension(actor): Extension<Actor>,
    Query(q): Query<api::TaskQuery>,
) -> ApiResult<axum::Json<Vec<api::Task>>> {
    Ok(axum::Json(tasks::list(&state, &actor, &q).await?))
}

/// One task with its state, usage and cost.
#[utoipa::path(get, path = "/api/v1/tasks/{task}", operation_id = "show_task", tag = "tasks",
    params(("task" = String, Path, description = "task id")),
    responses((status = 200, body = api::Task), (status = 404, body = api::ErrorBody)),
    security(("bearer" = [])))]
pub async fn show(
    State(state): State<Arc<AppState>>,
    Path(id): Path<String>,
) -> ApiResult<axum::Json<api::Task>> {
    let task = tasks::find(&state, &id).await?;
    Ok(axum::Json(tasks::view(&state, &task).await?))
}

/// Sends a follow-up message: the next turn of the task's conversation.
///
/// Sends a follow-up message: the next turn of the task's conversation. With `interrupt: true`
/// a turn in flight (`starting`, `running`, `waiting`) is stopped first (a `turn_interrupted`
/// event; its open approval requests expire) and the message starts the next turn at once, the
/// task staying `running`; with no turn in flight it is a plain follow-up.
#[utoipa::path(post, path = "/api/v1/tasks/{task}/messages", tag = "tasks", request_body = api::SendMessage,
    params(("task" = String, Path, description = "task id")),
    responses((status = 200, body = api::Task), (status = 400, body = api::ErrorBody),
        (status = 404, body = api::ErrorBody),
        (status = 409, description = "`invalid_state`: the turn is still running or waiting for an approval (without `interrupt`), the task is final, or the workspace is not running; `conflict`: another interrupt of the task is under way, or its turn ended failed or cancelled before the interrupt took effect (the message was not sent); `task_interactive`: taken over", body = api::ErrorBody),
        (status = 503, body = api::ErrorBody)),
    security(("bearer" = [])))]
pub async fn send(
    State(state): State<Arc<AppState>>,
    Extension(actor): Extension<Actor>,
    Path(id): Path<String>,
    body: super::JsonBody,
) -> ApiResult<axum::Json<api::Task>> {
    let msg = parse_body::<api::SendMessage>(&body);
    let task = tasks::send(&state, &actor, &id, msg).await?;
    Ok(axum::Json(tasks::view(&state, &task).await?))
}

/// Cancels a task (final: it takes no more messages).
#[utoipa::path(post, path = "/api/v1/tasks/{task}/cancel", tag = "tasks",
    params(("task" = String, Path, description = "task id")),
    responses((status = 200, body = api::Task), (status = 404, body = api::ErrorBody),
        (status = 409, body = api::ErrorBody)),
    security(("bearer" = [])))]
pub async fn cancel(
    State(state): State<Arc<AppState>>,
    Extension(actor): Extension<Actor>,
    Path(id): Path<String>,
) -> ApiResult<axum::Json<api::Task>> {
    let task = tasks::cancel(&state, &actor, &id).await?;
    Ok(axum::Json(tasks::view(&state, &task).await?))
}

/// A task's stored events after a sequence number.
#[utoipa::path(get, path = "/api/v1/tasks/{task}/events", tag = "tasks",
    params(("task" = String, Path, description = "task id"), api::EventsQuery),
    responses((status = 200, description = "TaskEvent objects, ascending seq", body = [Object]),
        (status = 404, body = api::ErrorBody)),
    security(("bearer" = [])))]
pub async fn events(
    State(state): State<Arc<AppState>>,
    Path(id): Path<String>,
    Query(q): Query<api::EventsQuery>,
) -> ApiResult<axum::Json<Vec<api::TaskEvent>>> {
    let limit = api::EVENTS_LIMIT
        .check(q.limit)
        .map_err(ApiError::invalid)? as u64;
    let id = tasks::find(&state, &id).await?.id;
    Ok(axum::Json(
        state
            .store
            .task_events(&id, q.after.unwrap_or(0), limit)
            .await?,
    ))
}

/// A task's events as they happen (Server-Sent Events).
///
/// The live event stream (Server-Sent Events). Every stored event with `seq > after` (or the
/// `Last-Event-ID` header) first, then new ones as they are stored; each SSE message carries
/// `id: seq`, `event: type`, `data: TaskEvent`. Ends when the task is failed or cancelled.
#[utoipa::path(get, path = "/api/v1/tasks/{task}/events/stream", tag = "tasks",
    params(("task" = String, Path, description = "task id"), api::EventsQuery),
    responses((status = 200, content_type = "text/event-stream", description = "SSE of TaskEvent"),
        (status = 404, body = api::ErrorBody)),
    security(("bearer" = [])))]
pub async fn stream(
    State(state): State<Arc<AppState>>,
    Path(id): Path<String>,
    Query(q): Query<api::EventsQuery>,
    headers: HeaderMap,
) -> ApiResult<impl IntoResponse> {
    let id = tasks::find(&state, &id).await?.id;
    let after = sse::resume_after(q.after, &headers);
    // Subscribe before the first read, so nothing stored in between is missed.
    let rx = state.tasks.subscribe(&id);
    Ok(sse::follow(rx, after, move |after| {
        let (state, id) = (state.clone(), id.clone());
        async move { read_events(&state, &id, after).await }
    }))
}

/// The task's events after `after`; the end once the task is final and all were sent.
async fn read_events(
    state: &AppState,
    id: &TaskId,
    after: u64,
) -> Result<Read<api::TaskEvent>, ()> {
    let batch = state
        .store
        .task_events(id, after, sse::BATCH.into())
        .await
        .map_err(|e| tracing::error!(task = %id, error = %e, "reading task events"))?;
    if !batch.is_empty() {
        return Ok(Read::Records(batch));
    }
    match state.store.task(id).await {
        Ok(t) if t.state.is_final() && t.last_seq <= after => Ok(Read::End),
        Ok(_) => Ok(Read::Wait),
        Err(_) => Err(()),
    }
}

impl sse::Numbered for api::TaskEvent {
    fn number(&self) -> u64 {
        self.seq
    }
    fn kind(&self) -> String {
        serde_json::to_value(self)
            .ok()
            .and_then(|v| v["type"].as_str().map(str::to_owned))
            .unwrap_or_else(|| "event".to_owned())
    }
    fn data(&self) -> String {
        serde_json::to_string(self).unwrap_or_default()
    }
}

#[utoipa::path(get, path = "/api/v1/tasks/{task}/diff", tag = "tasks", operation_id = "task_diff",
    summary = "What the task changed: the whole task (commits, untracked files and renames included) or one turn",
    params(("task" = String, Path, description = "task id"), api::DiffQuery),
    responses((status = 200, body = api::TaskDiff),
        (status = 400, body = api::ErrorBody, description = "`invalid_argument`: a turn without a snapshot, or `turn`/`stat` on a task without snapshots"),
        (status = 404, body = api::ErrorBody),
        (status = 409, body = api::ErrorBody, description = "`invalid_state`: the workspace is not running"),
        (status = 503, body = api::ErrorBody, description = "`daemon_unavailable`: the workspace did not answer in time")),
    security(("bearer" = [])))]
pub async fn diff(
    State(state): State<Arc<AppState>>,
    Path(id): Path<String>,
    Query(q): Query<api::DiffQuery>,
) -> ApiResult<axum::Json<api::TaskDiff>> {
    let t = tasks::find(&state, &id).await?;
    let opts = crate::task_diff::DiffOptions {
        turn: q.turn,
        stat: q.stat.unwrap_or(false),
    };
    Ok(axum::Json(crate::task_diff::diff(&state, &t, opts).await?))
}

/// Pushes the task's branch from inside its workspace (through its egress proxy, with the
/// placeholder of the secret bound to the remote's host).
#[utoipa::path(post, path = "/api/v1/tasks/{task}/push", tag = "tasks", operation_id = "push_task",
    summary = "Push the task's branch to a remote of its repository, with the workspace's scoped credential",
    request_body = api::PushTask,
    params(("task" = String, Path, description = "task id")),
    responses((status = 200, body = api::TaskPush),
        (status = 400, body = api::ErrorBody),
        (status = 404, body = api::ErrorBody),
        (status = 409, body = api::ErrorBody, description = "`nothing_to_push`: no commits beyond the task's base, or the remote already has them; `push_rejected`: git's one-line reason; `task_turn_running`; `invalid_state`: the workspace is not running or the directory is not in git"),
        (status = 422, body = api::ErrorBody, description = "`git_remote_missing`: no such remote; `git_branch_missing`: detached HEAD and no branch given, or not a branch name git accepts"),
        (status = 503, body = api::ErrorBody, description = "`daemon_unavailable`: the workspace did not answer in time")),
    security(("bearer" = [])))]
pub async fn push(
    State(state): State<Arc<AppState>>,
    Extension(actor): Extension<Actor>,
    Path(id): Path<String>,
    body: super::JsonBody,
) -> ApiResult<axum::Json<api::TaskPush>> {
    let req = super::parse_optional_body::<api::PushTask>(&body);
    Ok(axum::Json(
        crate::deliver::push(&state, &actor, &id, req).await?,
    ))
}

/// Opens a pull (merge) request for the task's branch on the provider its remote belongs to.
#[utoipa::path(post, path = "/api/v1/tasks/{task}/pr", tag = "tasks", operation_id = "create_task_pr",
    summary = "Open a pull request (GitHub), merge request (GitLab) or pull request (Azure DevOps) for the task's branch",
    request_body = api::CreatePullRequest,
    params(("task" = String, Path, description = "task id")),
    responses((status = 201, body = api::TaskPullRequest),
        (status = 400, body = api::ErrorBody),
        (status = 404, body = api::ErrorBody),
        (status = 409, body = api::ErrorBody, description = "`conflict`: the task already has a pull request; `task_turn_running`; `invalid_state`: the workspace is not running or the directory is not in git"),
        (status = 422, body = api::ErrorBody, description = "`git_remote_missing`, `git_branch_missing` (no branch, or no base branch known), `forge_unknown`: the remote is on no known provider, `forge_credential`: no secret bound to the workspace names the provider's API host"),
        (status = 502, body = api::ErrorBody, description = "`forge_error`: the provider refused the request (its status and message) or did not answer"),
        (status = 503, body = api::ErrorBody, description = "`daemon_unavailable`: the workspace did not answer in time")),
    security(("bearer" = [])))]
pub async fn pull_request(
    State(state): State<Arc<AppState>>,
    Extension(actor): Extension<Actor>,
    Path(id): Path<String>,
    body: super::JsonBody,
) -> ApiResult<impl IntoResponse> {
    let req = super::parse_optional_body::<api::CreatePullRequest>(&body);
    let pr = crate::deliver::pull_request(&state, &actor, &id, req).await?;
    Ok((StatusCode::CREATED, axum::Json(pr)))
}

#[utoipa::path(get, path = "/api/v1/tasks/{task}/patch", tag = "tasks", operation_id = "task_patch",
    summary = "The task's changes as a patch file (git apply), or its commits as an mbox (git am)",
    params(("task" = String, Path, description = "task id"), api::PatchQuery),
    responses((status = 200, description = "the patch (`format=mbox`: the commits as an mbox)",
            content((String = "text/x-patch"), (String = "application/mbox"))),
        (status = 400, body = api::ErrorBody, description = "`invalid_argument`: the task has no snapshot (its directory was not in git), or no base commit for an mbox"),
        (status = 404, body = api::ErrorBody),
        (status = 409, body = api::ErrorBody, description = "`invalid_state`: the workspace is not running, or the directory is gone"),
        (status = 413, body = api::ErrorBody, description = "`payload_too_large`: over 4 MiB"),
        (status = 503, body = api::ErrorBody, description = "`daemon_unavailable`: the workspace did not answer in time")),
    security(("bearer" = [])))]
pub async fn patch(
    State(state): State<Arc<AppState>>,
    Path(id): Path<String>,
    Query(q): Query<api::PatchQuery>,
) -> ApiResult<axum::response::Response> {
    let t = tasks::find(&state, &id).await?;
    let mbox = q.format == Some(api::PatchFormat::Mbox);
    let text = crate::task_diff::patch(&state, &t, mbox).await?;
    let (ctype, ext) = if mbox {
        ("application/mbox", "mbox")
    } else {
        ("text/x-patch", "patch")
    };
    let disposition = format!("attachment; filename=\"{}.{ext}\"", t.id);
    Ok((
        [
            (axum::http::header::CONTENT_TYPE, ctype.to_owned()),
            (axum::http::header::CONTENT_DISPOSITION, disposition),
        ],
        text,
    )
        .into_response())
}
