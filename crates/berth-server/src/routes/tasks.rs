//! `/tasks`: agent tasks and their event streams.

use std::sync::Arc;

use axum::extract::{Path, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::IntoResponse;
use axum::Extension;
use berth_api as api;
use berth_domain::TaskState;

use super::sse::{self, Read};
use super::{parse_body, Query};
use crate::auth::Actor;
use crate::error::{ApiError, ApiResult};
use crate::lifecycle;
use crate::state::AppState;
use crate::tasks;

#[utoipa::path(post, path = "/api/v1/tasks", operation_id = "create_task", tag = "tasks", request_body = api::CreateTask,
    responses((status = 201, body = api::Task), (status = 400, body = api::ErrorBody),
        (status = 404, body = api::ErrorBody), (status = 409, body = api::ErrorBody),
        (status = 503, body = api::ErrorBody)),
    security(("bearer" = [])))]
pub async fn create(
    State(state): State<Arc<AppState>>,
    Extension(actor): Extension<Actor>,
    body: super::JsonBody,
) -> ApiResult<impl IntoResponse> {
    let req = parse_body::<api::CreateTask>(&body);
    let task = tasks::create(&state, &actor, req).await?;
    Ok((StatusCode::CREATED, axum::Json(tasks::to_api(&task))))
}

#[utoipa::path(get, path = "/api/v1/tasks", operation_id = "list_tasks", tag = "tasks", params(api::TaskQuery),
    responses((status = 200, body = [api::Task]), (status = 400, body = api::ErrorBody)),
    security(("bearer" = [])))]
pub async fn list(
    State(state): State<Arc<AppState>>,
    Query(q): Query<api::TaskQuery>,
) -> ApiResult<axum::Json<Vec<api::Task>>> {
    let ws = match &q.workspace {
        Some(w) => Some(lifecycle::resolve(&state, w).await?.id),
        None => None,
    };
    let st = match &q.state {
        Some(s) => Some(TaskState::parse(s).ok_or_else(|| {
            ApiError::invalid(format!(
                "unknown state {s:?}: use queued, starting, running, waiting, completed, failed or cancelled"
            ))
        })?),
        None => None,
    };
    let all = state.store.list_tasks(ws.as_ref(), st).await?;
    Ok(axum::Json(all.iter().map(tasks::to_api).collect()))
}

#[utoipa::path(get, path = "/api/v1/tasks/{task}", operation_id = "show_task", tag = "tasks",
    params(("task" = String, Path, description = "task id")),
    responses((status = 200, body = api::Task), (status = 404, body = api::ErrorBody)),
    security(("bearer" = [])))]
pub async fn show(
    State(state): State<Arc<AppState>>,
    Path(id): Path<String>,
) -> ApiResult<axum::Json<api::Task>> {
    Ok(axum::Json(tasks::to_api(&tasks::get(&state, &id).await?)))
}

#[utoipa::path(post, path = "/api/v1/tasks/{task}/messages", tag = "tasks", request_body = api::SendMessage,
    params(("task" = String, Path, description = "task id")),
    responses((status = 200, body = api::Task), (status = 400, body = api::ErrorBody),
        (status = 404, body = api::ErrorBody), (status = 409, body = api::ErrorBody)),
    security(("bearer" = [])))]
pub async fn send(
    State(state): State<Arc<AppState>>,
    Extension(actor): Extension<Actor>,
    Path(id): Path<String>,
    body: super::JsonBody,
) -> ApiResult<axum::Json<api::Task>> {
    let text = parse_body::<api::SendMessage>(&body).map(|m| m.text);
    let task = tasks::send(&state, &actor, &id, text).await?;
    Ok(axum::Json(tasks::to_api(&task)))
}

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
    Ok(axum::Json(tasks::to_api(&task)))
}

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
    tasks::get(&state, &id).await?;
    Ok(axum::Json(
        state
            .store
            .task_events(&id, q.after.unwrap_or(0), limit)
            .await?,
    ))
}

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
    tasks::get(&state, &id).await?;
    let after = sse::resume_after(q.after, &headers);
    // Subscribe before the first read, so nothing stored in between is missed.
    let rx = state.tasks.subscribe(&id);
    Ok(sse::follow(rx, after, move |after| {
        let (state, id) = (state.clone(), id.clone());
        async move { read_events(&state, &id, after).await }
    }))
}

/// The task's events after `after`; the end once the task is final and all were sent.
async fn read_events(state: &AppState, id: &str, after: u64) -> Result<Read<api::TaskEvent>, ()> {
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

/// Shell script run in the task's directory: the diff against HEAD plus untracked files, without
/// touching the index.
const DIFF_SCRIPT: &str = r#"git rev-parse --is-inside-work-tree >/dev/null 2>&1 || { echo __BERTH_NOT_GIT__; exit 0; }
git -c core.quotepath=off diff --no-color HEAD 2>/dev/null || git -c core.quotepath=off diff --no-color
git ls-files --others --exclude-standard -z | xargs -0 -r -n1 git diff --no-color --no-index /dev/null 2>/dev/null
true"#;

#[utoipa::path(get, path = "/api/v1/tasks/{task}/diff", tag = "tasks",
    params(("task" = String, Path, description = "task id")),
    responses((status = 200, body = api::TaskDiff), (status = 404, body = api::ErrorBody),
        (status = 409, body = api::ErrorBody)),
    security(("bearer" = [])))]
pub async fn diff(
    State(state): State<Arc<AppState>>,
    Path(id): Path<String>,
) -> ApiResult<axum::Json<api::TaskDiff>> {
    let t = tasks::get(&state, &id).await?;
    let w = state
        .store
        .find_workspace_by_id(&t.workspace_id)
        .await?
        .ok_or_else(|| ApiError::not_found(format!("the workspace of task {id} was removed")))?;
    if w.state != berth_domain::WorkspaceState::Running {
        return Err(ApiError::new(
            berth_domain::ErrorCode::InvalidState,
            format!(
                "workspace {} is {}: start it to see the diff",
                w.qualified_name(),
                w.state
            ),
        ));
    }
    let dir = match &t.worktree {
        Some(_) => format!("{}/.berth/worktrees/{}", crate::lifecycle::HOME, t.id),
        None => t.dir.clone(),
    };
    let out = state
        .daemon(&w.id)
        .exec_collect(
            berth_daemon::ExecRequest {
                argv: vec!["sh".into(), "-c".into(), DIFF_SCRIPT.into()],
                env: Vec::new(),
                cwd: Some(dir.clone()),
                stdin: false,
            },
            4 << 20,
        )
        .await?;
    let text = out.stdout_lossy();
    let git = !text.starts_with("__BERTH_NOT_GIT__");
    Ok(axum::Json(api::TaskDiff {
        dir,
        git,
        diff: if git { text } else { String::new() },
        truncated: out.stdout_truncated,
    }))
}
