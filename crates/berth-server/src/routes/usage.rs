//! `/usage` and `/budgets`: what the LLM gateway counted, and the limits it enforces.

use std::sync::Arc;

use axum::extract::State;
use axum::http::StatusCode;
use axum::Extension;
use berth_api as api;
use berth_store::{Budget, UsageFilter};

use super::{parse_body, Query};
use crate::auth::{audit, Actor};
use crate::error::{ApiError, ApiResult};
use crate::gateway::period_start;
use crate::lifecycle;
use crate::state::AppState;

/// `since` as RFC 3339: accepts RFC 3339, a date, or a duration back from now (`30m`, `24h`, `7d`).
pub fn parse_since(s: &str) -> ApiResult<String> {
    let s = s.trim();
    let bad = || {
        ApiError::invalid(format!(
            "since {s:?}: use an RFC 3339 time, a date like 2026-11-01, or a duration like 24h or 7d"
        ))
    };
    let rfc = &time::format_description::well_known::Rfc3339;
    if let Ok(t) = time::OffsetDateTime::parse(s, rfc) {
        return t
            .to_offset(time::UtcOffset::UTC)
            .format(rfc)
            .map_err(|_| bad());
    }
    if s.len() == 10 {
        let t = time::OffsetDateTime::parse(&format!("{s}T00:00:00Z"), rfc).map_err(|_| bad())?;
        return t.format(rfc).map_err(|_| bad());
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
    t.format(rfc).map_err(|_| bad())
}

#[utoipa::path(get, path = "/api/v1/usage", tag = "gateway", params(api::UsageQuery),
    responses((status = 200, body = api::UsageReport), (status = 400, body = api::ErrorBody)),
    security(("bearer" = [])))]
pub async fn usage(
    State(state): State<Arc<AppState>>,
    Query(q): Query<api::UsageQuery>,
) -> ApiResult<axum::Json<api::UsageReport>> {
    let since = q.since.as_deref().map(parse_since).transpose()?;
    let workspace_id = match &q.workspace {
        Some(w) => Some(lifecycle::resolve(&state, w).await?.id.to_string()),
        None => None,
    };
    let tenant = match &q.tenant {
        Some(t) => Some(crate::error::tenant_name(t)?.to_string()),
        None => None,
    };
    let rows = state
        .store
        .usage(&UsageFilter {
            tenant,
            workspace_id,
            since: since.clone(),
        })
        .await?;
    let mut total = api::UsageRow::default();
    let rows: Vec<api::UsageRow> = rows
        .into_iter()
        .map(|r| {
            total.calls += r.calls;
            total.errors += r.errors;
            total.input_tokens += r.input_tokens;
            total.output_tokens += r.output_tokens;
            total.cache_read_tokens += r.cache_read_tokens;
            total.cache_write_tokens += r.cache_write_tokens;
            if let Some(c) = r.cost_usd {
                total.cost_usd = Some(total.cost_usd.unwrap_or(0.0) + c);
            }
            api::UsageRow {
                tenant: r.tenant,
                workspace: r.workspace,
                provider: r.provider,
                model: r.model,
                calls: r.calls,
                errors: r.errors,
                input_tokens: r.input_tokens,
                output_tokens: r.output_tokens,
                cache_read_tokens: r.cache_read_tokens,
                cache_write_tokens: r.cache_write_tokens,
                cost_usd: r.cost_usd,
            }
        })
        .collect();
    Ok(axum::Json(api::UsageReport { since, rows, total }))
}

/// (scope, stored target, display target) of a budget request.
async fn budget_target(
    state: &AppState,
    tenant: Option<&str>,
    workspace: Option<&str>,
) -> ApiResult<(String, String, String)> {
    match (tenant, workspace) {
        (Some(t), None) => {
            let n = crate::error::tenant_name(t)?;
            Ok(("tenant".into(), n.to_string(), n.to_string()))
        }
        (None, Some(w)) => {
            let w = lifecycle::resolve(state, w).await?;
            Ok(("workspace".into(), w.id.to_string(), w.qualified_name()))
        }
        _ => Err(ApiError::invalid("give exactly one of tenant or workspace")),
    }
}

async fn to_api(state: &AppState, b: Budget) -> ApiResult<api::Budget> {
    let spent = state
        .store
        .spent(&b, period_start(&b.period).as_deref())
        .await?;
    let target = if b.scope == "workspace" {
        match berth_domain::WorkspaceId::parse(&b.target) {
            Some(id) => match state.store.find_workspace_by_id(&id).await? {
                Some(w) => w.qualified_name(),
                None => b.target.clone(),
            },
            None => b.target.clone(),
        }
    } else {
        b.target.clone()
    };
    Ok(api::Budget {
        scope: b.scope,
        target,
        period: b.period,
        max_tokens: b.max_tokens,
        max_cost_usd: b.max_cost_usd,
        spent_tokens: spent.tokens,
        spent_cost_usd: spent.cost_usd,
    })
}

#[utoipa::path(get, path = "/api/v1/budgets", tag = "gateway",
    responses((status = 200, body = [api::Budget])), security(("bearer" = [])))]
pub async fn list_budgets(
    State(state): State<Arc<AppState>>,
) -> ApiResult<axum::Json<Vec<api::Budget>>> {
    let mut out = Vec::new();
    for b in state.store.budgets().await? {
        out.push(to_api(&state, b).await?);
    }
    Ok(axum::Json(out))
}

#[utoipa::path(put, path = "/api/v1/budgets", tag = "gateway", request_body = api::SetBudget,
    responses((status = 200, body = api::Budget), (status = 400, body = api::ErrorBody),
        (status = 404, body = api::ErrorBody)),
    security(("bearer" = [])))]
pub async fn set_budget(
    State(state): State<Arc<AppState>>,
    Extension(actor): Extension<Actor>,
    body: super::JsonBody,
) -> ApiResult<axum::Json<api::Budget>> {
    let result = async {
        let req: api::SetBudget = parse_body(&body)?;
        let (scope, target, shown) =
            budget_target(&state, req.tenant.as_deref(), req.workspace.as_deref()).await?;
        let period = req.period.unwrap_or_else(|| "day".into());
        if !["day", "month", "total"].contains(&period.as_str()) {
            return Err(ApiError::invalid("period must be day, month or total"));
        }
        if req.max_tokens.is_none() && req.max_cost_usd.is_none() {
            return Err(ApiError::invalid("give max_tokens and/or max_cost_usd"));
        }
        if req.max_tokens.is_some_and(|t| t > api::MAX_BUDGET_TOKENS) {
            return Err(ApiError::invalid(format!(
                "max_tokens must be at most {}",
                api::MAX_BUDGET_TOKENS
            )));
        }
        if req.max_cost_usd.is_some_and(|c| !c.is_finite() || c < 0.0) {
            return Err(ApiError::invalid(
                "max_cost_usd must be a non-negative number",
            ));
        }
        let b = Budget {
            scope,
            target,
            period,
            max_tokens: req.max_tokens,
            max_cost_usd: req.max_cost_usd,
        };
        state.store.set_budget(&b).await?;
        state.forget_budgets();
        Ok((shown, to_api(&state, b).await?))
    }
    .await;
    let target = result.as_ref().map(|(t, _)| t.clone()).unwrap_or_default();
    audit(&state.store, &actor, "budget.set", &target, &result).await;
    Ok(axum::Json(result?.1))
}

#[utoipa::path(delete, path = "/api/v1/budgets", tag = "gateway", params(api::BudgetTarget),
    responses((status = 204), (status = 404, body = api::ErrorBody)), security(("bearer" = [])))]
pub async fn remove_budget(
    State(state): State<Arc<AppState>>,
    Extension(actor): Extension<Actor>,
    Query(q): Query<api::BudgetTarget>,
) -> ApiResult<StatusCode> {
    let result = async {
        let (scope, target, shown) =
            budget_target(&state, q.tenant.as_deref(), q.workspace.as_deref()).await?;
        let removed = state.store.remove_budget(&scope, &target).await?;
        state.forget_budgets();
        if !removed {
            return Err(ApiError::not_found(format!(
                "no budget for {scope} {shown}"
            )));
        }
        Ok(shown)
    }
    .await;
    let target = result.as_ref().cloned().unwrap_or_default();
    audit(&state.store, &actor, "budget.remove", &target, &result).await;
    result?;
    Ok(StatusCode::NO_CONTENT)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn since_forms() {
        assert_eq!(parse_since("2026-11-01").unwrap(), "2026-11-01T00:00:00Z");
        assert_eq!(
            parse_since("2026-11-01T10:00:00+01:00").unwrap(),
            "2026-11-01T09:00:00Z"
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
    fn since_with_multibyte_characters_is_refused_not_a_panic() {
        for bad in ["é", "5é", "éd", "24hé", "ééééé", "3日"] {
            let err = parse_since(bad).unwrap_err();
            assert_eq!(err.code, berth_domain::ErrorCode::InvalidArgument, "{bad}");
        }
    }

    #[test]
    fn since_past_the_calendar_is_refused_not_an_overflow() {
        for bad in ["99999999999d", "9223372036854775807m"] {
            assert!(parse_since(bad).is_err(), "{bad}");
        }
    }
}

fn call_to_api(id: i64, at: String, c: berth_store::LlmCall, recorded: bool) -> api::LlmCall {
    api::LlmCall {
        id,
        at,
        workspace: c.workspace,
        tenant: c.tenant,
        task: c.task_id,
        provider: c.provider,
        model: c.model,
        path: c.path,
        status: c.status,
        input_tokens: c.input_tokens,
        output_tokens: c.output_tokens,
        cache_read_tokens: c.cache_read_tokens,
        cache_write_tokens: c.cache_write_tokens,
        cost_usd: c.cost_usd,
        latency_ms: c.latency_ms,
        ttfb_ms: c.ttfb_ms,
        error: c.error,
        recorded,
    }
}

#[utoipa::path(get, path = "/api/v1/usage/calls", tag = "gateway", params(api::CallsQuery),
    responses((status = 200, body = [api::LlmCall])), security(("bearer" = [])))]
pub async fn calls(
    State(state): State<Arc<AppState>>,
    Query(q): Query<api::CallsQuery>,
) -> ApiResult<axum::Json<Vec<api::LlmCall>>> {
    let ws = match &q.workspace {
        Some(w) => Some(lifecycle::resolve(&state, w).await?.id.to_string()),
        None => None,
    };
    let limit = api::CALLS_LIMIT.check(q.limit).map_err(ApiError::invalid)?;
    let rows = state
        .store
        .llm_calls(ws.as_deref(), q.task.as_deref(), limit)
        .await?;
    Ok(axum::Json(
        rows.into_iter()
            .map(|(id, at, c, rec)| call_to_api(id, at, c, rec))
            .collect(),
    ))
}

#[utoipa::path(get, path = "/api/v1/usage/calls/{id}", tag = "gateway",
    params(("id" = i64, Path)),
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
