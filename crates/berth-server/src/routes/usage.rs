//! `/usage` and `/budgets`: what the LLM gateway counted, and the limits it enforces.

use std::sync::Arc;

use axum::extract::State;
use axum::http::StatusCode;
use axum::Extension;
use berth_api as api;
use berth_domain::{TaskId, Timestamp};
use berth_store::{UsageBy, UsageFilter};

use super::{parse_body, Query};
use crate::auth::Actor;
use crate::budgets;
use crate::error::{ApiError, ApiResult};
use crate::lifecycle;
use crate::state::AppState;

/// `since` in berth's timestamp form (RFC 3339 UTC with milliseconds, as calls are stored, so
/// the bounds compare right as text): accepts RFC 3339, a date, or a duration back from now
/// (`30m`, `24h`, `7d`).
pub fn parse_since(s: &str) -> ApiResult<Timestamp> {
    parse_bound("since", s)
}

/// A time bound (`since`, `until`) named `what` in errors; see [`parse_since`].
fn parse_bound(what: &str, s: &str) -> ApiResult<Timestamp> {
    let s = s.trim();
    let bad = || {
        ApiError::invalid(format!(
            "{what} {s:?}: use an RFC 3339 time, a date like 2026-11-01, or a duration like 24h or 7d"
        ))
    };
    if let Some(t) = Timestamp::parse(s) {
        return Ok(t);
    }
    if s.len() == 10 {
        return Timestamp::parse(&format!("{s}T00:00:00Z")).ok_or_else(bad);
    }
    // The unit is the last character, which need not be one byte: split where it starts.
    let split = s.char_indices().last().map_or(0, |(i, _)| i);
    let (num, unit) = s.split_at(split);
    let secs = match unit {
        "m" => 60,
        "h" => 3600,
        "d" => 86_400,
        _ => return Err(bad()),
    };
    if !num.bytes().all(|b| b.is_ascii_digit()) {
        return Err(bad());
    }
    let n: i64 = num.parse().map_err(|_| bad())?;
    // A duration reaching past the calendar's start is refused, not an overflow.
    let t = time::OffsetDateTime::now_utc()
        .checked_sub(time::Duration::seconds(n.saturating_mul(secs)))
        .ok_or_else(bad)?;
    Ok(t.into())
}

/// `by` (or the older `group_by=session`) as the store's grouping; given both, `by` wins (but
/// a `group_by` other than `session` is refused either way).
fn parse_by(q: &api::UsageQuery) -> ApiResult<UsageBy> {
    if let Some(other) = q.group_by.as_deref().filter(|g| *g != "session") {
        return Err(ApiError::invalid(format!(
            "group_by {other:?}: only `session` is supported (see also `by`)"
        )));
    }
    let by = match (q.by.as_deref(), q.group_by.as_deref()) {
        (Some(b), _) => b,
        (None, Some(_)) => "session",
        (None, None) => return Ok(UsageBy::WorkspaceModel),
    };
    Ok(match by {
        "task" => UsageBy::Task,
        "workspace" => UsageBy::Workspace,
        "tenant" => UsageBy::Tenant,
        "model" => UsageBy::Model,
        "day" => UsageBy::Day,
        "session" => UsageBy::Session,
        other => {
            return Err(ApiError::invalid(format!(
                "by {other:?}: use task, workspace, tenant, model, day or session"
            )))
        }
    })
}

/// LLM usage through the gateway, summed per group over a period.
///
/// LLM usage through the gateway, summed per group (`by`) over a period (`since`, `until`):
/// tokens, calls and the exact cost (`cost`, a decimal string) of every group and in total.
#[utoipa::path(get, path = "/api/v1/usage", tag = "gateway", params(api::UsageQuery),
    responses((status = 200, body = api::UsageReport),
        (status = 400, description = "`invalid_argument`: a bad `since`, `until`, `by` or `group_by`", body = api::ErrorBody),
        (status = 404, description = "`not_found`: the workspace", body = api::ErrorBody)),
    security(("bearer" = [])))]
pub async fn usage(
    State(state): State<Arc<AppState>>,
    Extension(actor): Extension<Actor>,
    Query(q): Query<api::UsageQuery>,
) -> ApiResult<axum::Json<api::UsageReport>> {
    let since = q.since.as_deref().map(parse_since).transpose()?;
    let until = q
        .until
        .as_deref()
        .map(|u| parse_bound("until", u))
        .transpose()?;
    let by = parse_by(&q)?;
    let by_name = q.by.clone().or_else(|| q.group_by.clone());
    let workspace_id = match &q.workspace {
        Some(w) => Some(lifecycle::resolve(&state, w).await?.id),
        None => None,
    };
    let tenant = match &q.tenant {
        Some(t) => Some(crate::error::tenant_name(t)?),
        None => None,
    };
    let nothing = || {
        Ok(axum::Json(api::UsageReport {
            since: since.clone(),
            until: until.clone(),
            by: by_name.clone(),
            rows: Vec::new(),
            total: total_row(0),
        }))
    };
    // A tenant's caller sees its tenant's usage only (another tenant's filter: nothing).
    let tenant = match (actor.tenant_scope(), tenant) {
        (Some(own), Some(t)) if *own != t => return nothing(),
        (Some(own), _) => Some(own.clone()),
        (None, t) => t,
    };
    let Ok(task_id) = task_filter(q.task.as_deref()) else {
        return nothing();
    };
    let rows = state
        .store
        .usage(&UsageFilter {
            tenant,
            workspace_id,
            task_id,
            since: since.clone(),
            until: until.clone(),
            session_id: q.session.clone(),
            by,
        })
        .await?;
    let (rows, total) = report_rows(rows, by);
    Ok(axum::Json(api::UsageReport {
        since,
        until,
        by: by_name,
        rows,
        total,
    }))
}

/// A `task` filter as a task id: `Ok(None)` without one, `Err` for text that is no task id
/// (no call can match it).
fn task_filter(task: Option<&str>) -> Result<Option<TaskId>, ()> {
    task.map(|t| TaskId::parse(t).ok_or(())).transpose()
}

/// The rows of a report grouped `by` in their wire form, and the total row that sums them.
/// Grouped by task, every row names its task, and the calls of agent sessions of their own (no
/// task) are the row whose `task` is empty.
fn report_rows(
    rows: Vec<berth_store::UsageRow>,
    by: UsageBy,
) -> (Vec<api::UsageRow>, api::UsageRow) {
    let mut total_nusd = 0u64;
    let mut total = total_row(0);
    let rows: Vec<api::UsageRow> = rows
        .into_iter()
        .map(|r| {
            total.calls += r.calls;
            total.errors += r.errors;
            total.input_tokens = total.input_tokens.saturating_add(r.input_tokens);
            total.output_tokens = total.output_tokens.saturating_add(r.output_tokens);
            total.cache_read_tokens = total.cache_read_tokens.saturating_add(r.cache_read_tokens);
            total.cache_write_tokens = total
                .cache_write_tokens
                .saturating_add(r.cache_write_tokens);
            total.fallback_calls += r.fallback_calls;
            total_nusd = total_nusd.saturating_add(r.cost_nusd);
            api::UsageRow {
                tenant: r.tenant,
                workspace: r.workspace,
                session: r.session_id,
                task: (by == UsageBy::Task)
                    .then(|| r.task_id.map(|t| t.to_string()).unwrap_or_default()),
                day: r.day,
                provider: r.provider,
                model: r.model,
                calls: r.calls,
                errors: r.errors,
                input_tokens: r.input_tokens,
                output_tokens: r.output_tokens,
                cache_read_tokens: r.cache_read_tokens,
                cache_write_tokens: r.cache_write_tokens,
                cost_usd: r.cost_usd,
                cost: api::usd_decimal(r.cost_nusd),
                fallback_calls: r.fallback_calls,
            }
        })
        .collect();
    total.cost_usd = Some(total_nusd as f64 / 1e9);
    total.cost = api::usd_decimal(total_nusd);
    (rows, total)
}

/// The total row of a report whose calls cost `nusd`.
fn total_row(nusd: u64) -> api::UsageRow {
    api::UsageRow {
        cost_usd: Some(nusd as f64 / 1e9),
        cost: api::usd_decimal(nusd),
        ..Default::default()
    }
}

/// Budgets with their current spend.
#[utoipa::path(get, path = "/api/v1/budgets", tag = "gateway",
    responses((status = 200, body = [api::Budget])), security(("bearer" = [])))]
pub async fn list_budgets(
    State(state): State<Arc<AppState>>,
    Extension(actor): Extension<Actor>,
) -> ApiResult<axum::Json<Vec<api::Budget>>> {
    Ok(axum::Json(budgets::list(&state, &actor).await?))
}

/// Sets a tenant's or workspace's budget (cost or tokens per period).
#[utoipa::path(put, path = "/api/v1/budgets", tag = "gateway", request_body = api::SetBudget,
    responses((status = 200, body = api::Budget), (status = 400, body = api::ErrorBody),
        (status = 404, body = api::ErrorBody)),
    security(("bearer" = [])))]
pub async fn set_budget(
    State(state): State<Arc<AppState>>,
    Extension(actor): Extension<Actor>,
    body: super::JsonBody,
) -> ApiResult<axum::Json<api::Budget>> {
    let req = parse_body::<api::SetBudget>(&body);
    Ok(axum::Json(budgets::set(&state, &actor, req).await?))
}

/// Removes a tenant's or workspace's budget.
#[utoipa::path(delete, path = "/api/v1/budgets", tag = "gateway", params(api::BudgetTarget),
    responses((status = 204), (status = 404, body = api::ErrorBody)), security(("bearer" = [])))]
pub async fn remove_budget(
    State(state): State<Arc<AppState>>,
    Extension(actor): Extension<Actor>,
    Query(q): Query<api::BudgetTarget>,
) -> ApiResult<StatusCode> {
    budgets::remove(&state, &actor, &q).await?;
    Ok(StatusCode::NO_CONTENT)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn since_forms() {
        // In the stored form, so a call at the very bound compares right as text.
        assert_eq!(
            parse_since("2026-11-01").unwrap(),
            "2026-11-01T00:00:00.000Z"
        );
        assert_eq!(
            parse_since("2026-11-01T10:00:00+01:00").unwrap(),
            "2026-11-01T09:00:00.000Z"
        );
        assert!(parse_since("24h").unwrap().ends_with('Z'));
        // The longest durations the OpenAPI document describes.
        for ok in ["99999d", "999999h", "999999m"] {
            assert!(parse_since(ok).is_ok(), "{ok}");
        }
        for bad in ["", "yesterday", "5x", "-3d", "+3d", "2026-13-01"] {
            assert!(parse_since(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn by_and_the_older_group_by() {
        let q = |by: Option<&str>, group_by: Option<&str>| api::UsageQuery {
            by: by.map(Into::into),
            group_by: group_by.map(Into::into),
            ..Default::default()
        };
        assert_eq!(parse_by(&q(None, None)).unwrap(), UsageBy::WorkspaceModel);
        assert_eq!(parse_by(&q(Some("task"), None)).unwrap(), UsageBy::Task);
        assert_eq!(parse_by(&q(Some("day"), None)).unwrap(), UsageBy::Day);
        assert_eq!(
            parse_by(&q(None, Some("session"))).unwrap(),
            UsageBy::Session
        );
        assert_eq!(
            parse_by(&q(Some("session"), Some("session"))).unwrap(),
            UsageBy::Session
        );
        // Both given: `by` wins over the older parameter.
        assert_eq!(
            parse_by(&q(Some("task"), Some("session"))).unwrap(),
            UsageBy::Task
        );
        for (b, g) in [
            (Some("week"), None),
            (None, Some("task")),
            (Some("task"), Some("week")),
        ] {
            let err = parse_by(&q(b, g)).unwrap_err();
            assert_eq!(
                err.code,
                berth_domain::ErrorCode::InvalidArgument,
                "{b:?} {g:?}"
            );
        }
    }

    #[test]
    fn grouped_by_task_a_session_row_has_an_empty_task_and_other_groupings_none() {
        let row = |task: Option<&str>| berth_store::UsageRow {
            task_id: task.map(|t| TaskId::from_stored(t.into())),
            calls: 1,
            ..Default::default()
        };
        let (rows, _) = report_rows(vec![row(Some("tk_1")), row(None)], UsageBy::Task);
        let wire: Vec<_> = rows
            .iter()
            .map(|r| serde_json::to_value(r).unwrap()["task"].clone())
            .collect();
        assert_eq!(wire, [serde_json::json!("tk_1"), serde_json::json!("")]);
        let (rows, _) = report_rows(vec![row(None)], UsageBy::WorkspaceModel);
        assert!(serde_json::to_value(&rows[0])
            .unwrap()
            .get("task")
            .is_none());
    }

    #[test]
    fn since_with_multibyte_characters_is_refused_not_a_panic() {
        for bad in ["é", "5é", "éd", "24hé", "ééééé", "3日"] {
            let err = parse_since(bad).unwrap_err();
            assert_eq!(err.code, berth_domain::ErrorCode::InvalidArgument, "{bad}");
        }
    }

    #[test]
    fn a_task_filter_that_is_no_task_id_matches_nothing() {
        assert_eq!(task_filter(None), Ok(None));
        let id = TaskId::generate();
        assert_eq!(task_filter(Some(id.as_str())), Ok(Some(id)));
        for bad in ["", "t1", "tk_", "ws_0123456789abcdef0123456789abcdef"] {
            assert_eq!(task_filter(Some(bad)), Err(()), "{bad}");
        }
    }

    #[test]
    fn since_past_the_calendar_is_refused_not_an_overflow() {
        for bad in ["99999999999d", "9223372036854775807m"] {
            assert!(parse_since(bad).is_err(), "{bad}");
        }
    }
}

fn call_to_api(id: i64, at: Timestamp, c: berth_store::LlmCall, recorded: bool) -> api::LlmCall {
    api::LlmCall {
        id,
        at,
        workspace: c.workspace,
        tenant: c.tenant.into(),
        task: c.task_id.map(|t| t.to_string()).unwrap_or_default(),
        provider: c.provider,
        model: c.model,
        path: c.path,
        status: c.status,
        input_tokens: c.input_tokens,
        output_tokens: c.output_tokens,
        cache_read_tokens: c.cache_read_tokens,
        cache_write_tokens: c.cache_write_tokens,
        cost_usd: c.cost_nusd.map(|n| n as f64 / 1e9).or(c.cost_usd),
        cost: c.cost_nusd.map(api::usd_decimal),
        priced: c.priced,
        latency_ms: c.latency_ms,
        ttfb_ms: c.ttfb_ms,
        error: c.error,
        recorded,
    }
}

/// Recorded LLM calls through the gateway, newest first.
#[utoipa::path(get, path = "/api/v1/usage/calls", tag = "gateway", params(api::CallsQuery),
    responses((status = 200, body = [api::LlmCall])), security(("bearer" = [])))]
pub async fn calls(
    State(state): State<Arc<AppState>>,
    Extension(actor): Extension<Actor>,
    Query(q): Query<api::CallsQuery>,
) -> ApiResult<axum::Json<Vec<api::LlmCall>>> {
    let ws = match &q.workspace {
        Some(w) => Some(lifecycle::resolve(&state, w).await?.id),
        None => None,
    };
    let limit = api::CALLS_LIMIT.check(q.limit).map_err(ApiError::invalid)?;
    let Ok(task) = task_filter(q.task.as_deref()) else {
        return Ok(axum::Json(Vec::new()));
    };
    let rows = state
        .store
        .llm_calls(ws.as_ref(), task.as_ref(), actor.tenant_scope(), limit)
        .await?;
    Ok(axum::Json(
        rows.into_iter()
            .map(|(id, at, c, rec)| call_to_api(id, at, c, rec))
            .collect(),
    ))
}

/// One recorded LLM call in detail.
#[utoipa::path(get, path = "/api/v1/usage/calls/{call}", tag = "gateway",
    params(("call" = i64, Path, description = "call id")),
    responses((status = 200, body = api::LlmCallDetail), (status = 404, body = api::ErrorBody)),
    security(("bearer" = [])))]
pub async fn call(
    State(state): State<Arc<AppState>>,
    axum::extract::Path(id): axum::extract::Path<String>,
) -> ApiResult<axum::Json<api::LlmCallDetail>> {
    let n: i64 = id
        .parse()
        .map_err(|_| ApiError::invalid(format!("call id {id:?} is not a number")))?;
    let (at, c, ex) = state
        .store
        .llm_call(n)
        .await?
        .ok_or_else(|| ApiError::not_found(format!("LLM call {n} not found")))?;
    let recorded = ex.is_some();
    let (request, response) = ex.map(|(a, b)| (Some(a), Some(b))).unwrap_or((None, None));
    Ok(axum::Json(api::LlmCallDetail {
        call: call_to_api(n, at, c, recorded),
        request,
        response,
    }))
}
