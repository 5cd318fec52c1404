//! Budgets as a service: tenants' and workspaces' token and cost caps, listed with what is
//! spent in the current period, set and removed on behalf of an actor (audited as
//! `budget.set` and `budget.remove`). A tenant's caller sees and changes its tenant's only.

use berth_api as api;
use berth_store::Budget;

use crate::auth::{audit, Actor};
use crate::error::{ApiError, ApiResult};
use crate::gateway::period_start;
use crate::lifecycle;
use crate::state::AppState;

async fn budget_target(
    state: &AppState,
    actor: &Actor,
    tenant: Option<&str>,
    workspace: Option<&str>,
) -> ApiResult<(String, String, String)> {
    match (tenant, workspace) {
        (Some(t), None) => {
            let n = crate::error::tenant_name(t)?;
            actor.check_tenant(n.as_str(), || format!("tenant {n}"))?;
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
        .spent(&b, period_start(&b.period).as_ref())
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

/// The budgets the caller sees: every one for an admin, its tenant's and its tenant's
/// workspaces' otherwise.
pub async fn list(state: &AppState, actor: &Actor) -> ApiResult<Vec<api::Budget>> {
    let own = match actor.scope() {
        Some(t) => Some(crate::error::tenant_name(t)?),
        None => None,
    };
    let own_workspaces: Vec<String> = match &own {
        Some(t) => state
            .store
            .list_workspaces(Some(t))
            .await?
            .iter()
            .map(|w| w.id.to_string())
            .collect(),
        None => Vec::new(),
    };
    let mut out = Vec::new();
    for b in state.store.budgets().await? {
        let visible = match &own {
            None => true,
            Some(t) if b.scope == "tenant" => b.target == t.as_str(),
            Some(_) => own_workspaces.contains(&b.target),
        };
        if visible {
            out.push(to_api(state, b).await?);
        }
    }
    Ok(out)
}

/// Sets (replaces) a budget; `req` is `Err` when the request was malformed (recorded too).
pub async fn set(
    state: &AppState,
    actor: &Actor,
    req: ApiResult<api::SetBudget>,
) -> ApiResult<api::Budget> {
    let result = async {
        let req = req?;
        let (scope, target, shown) = budget_target(
            state,
            actor,
            req.tenant.as_deref(),
            req.workspace.as_deref(),
        )
        .await?;
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
        Ok((shown, to_api(state, b).await?))
    }
    .await;
    let target = result.as_ref().map(|(t, _)| t.clone()).unwrap_or_default();
    audit(&state.store, actor, "budget.set", &target, &result).await;
    result.map(|(_, b)| b)
}

/// Removes a tenant's or a workspace's budget.
pub async fn remove(state: &AppState, actor: &Actor, q: &api::BudgetTarget) -> ApiResult<()> {
    let result = async {
        let (scope, target, shown) =
            budget_target(state, actor, q.tenant.as_deref(), q.workspace.as_deref()).await?;
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
    audit(&state.store, actor, "budget.remove", &target, &result).await;
    result.map(|_| ())
}
