//! Approvals, server side: parsing a policy, listing a task's permission requests and a
//! tenant's pending ones (for the inbox), and deciding a request on behalf of a person.
//!
//! The store learns of requests from the task's event log (the `approval_request` and
//! `approval_resolved` events the follow-loop appends); a decision goes to the workspace daemon,
//! which holds the request and answers the agent in its protocol. Everything the daemon
//! reported is capped before it is stored, and the decision's record (who, why) is the
//! server's own: [`decide`] writes it over whatever the daemon said, and audits it as
//! `task.approve` or `task.deny`.

use std::sync::Arc;

use berth_api as api;
use berth_daemon::DaemonError;
use berth_domain::{Agent, ApprovalDecision, ApprovalPolicy, ErrorCode, TaskState};
use berth_store::{Approval, Task};

use crate::auth::{audit, Actor};
use crate::error::{ApiError, ApiResult};
use crate::state::AppState;

/// Most items one inbox answer holds.
const INBOX_LIMIT: u32 = 500;

/// A policy as the API takes it (`None` when not given).
pub(crate) fn parse_policy(s: Option<&str>) -> ApiResult<Option<ApprovalPolicy>> {
    match s.map(str::trim) {
        None => Ok(None),
        Some(p) => ApprovalPolicy::parse(p).map(Some).ok_or_else(|| {
            ApiError::invalid(format!(
                "unknown approval policy {p:?}: use never, on-request or always"
            ))
        }),
    }
}

/// Refuses a policy the agent's driver cannot honour (it would run unattended instead).
pub(crate) fn check_supported(agent: Agent, policy: ApprovalPolicy) -> ApiResult<()> {
    if policy.asks() && !berth_agents::supports_approvals(agent) {
        return Err(ApiError::new(
            ErrorCode::ApprovalUnsupported,
            format!(
            "approval policy {policy} is not supported for {agent} tasks yet (see docs/tasks.md); use approval never"
        ),
        ));
    }
    Ok(())
}

fn to_api(a: &Approval, workspace: &str, agent: &str) -> api::Approval {
    let r = &a.request;
    api::Approval {
        id: r.id.clone(),
        task: a.task_id.to_string(),
        workspace: workspace.to_owned(),
        agent: agent.to_owned(),
        seq: a.seq,
        kind: r.kind.as_str().to_owned(),
        tool: r.tool.clone(),
        summary: r.summary.clone(),
        command: r.command.clone(),
        path: r.path.clone(),
        diff: r.diff.clone(),
        input: r.input.clone(),
        agent_reason: r.reason.clone(),
        risks: r.risks.clone(),
        state: a.state.clone(),
        decided_by: a.decided_by.clone(),
        reason: a.reason.clone(),
        created_at: a.created_at.clone(),
        decided_at: a.decided_at.clone(),
    }
}

/// A task's requests, oldest first.
pub async fn list(
    state: &AppState,
    task: &str,
    pending_only: bool,
) -> ApiResult<Vec<api::Approval>> {
    let t = crate::tasks::find(state, task).await?;
    let rows = state.store.task_approvals(&t.id, pending_only).await?;
    Ok(rows
        .iter()
        .map(|a| to_api(a, &t.workspace, t.agent.as_str()))
        .collect())
}

/// Every pending request of the caller's tenant (all tenants for an admin), oldest first.
pub async fn pending(state: &AppState, actor: &Actor) -> ApiResult<Vec<api::Approval>> {
    let rows = state.store.inbox(actor.scope(), INBOX_LIMIT).await?;
    Ok(rows
        .iter()
        .map(|i| to_api(&i.approval, &i.workspace, &i.agent))
        .collect())
}

/// Decides request `req` of task `task` on behalf of `actor` (`body` is `Err` for a malformed
/// request; audited too).
pub async fn decide(
    state: &Arc<AppState>,
    actor: &Actor,
    task: &str,
    req: &str,
    body: ApiResult<api::Decide>,
) -> ApiResult<api::Approval> {
    let decision = body
        .as_ref()
        .ok()
        .and_then(|b| parse_decision(&b.decision).ok());
    let action = match decision {
        Some(ApprovalDecision::Approved) => "task.approve",
        Some(ApprovalDecision::Denied) => "task.deny",
        None => "task.decide",
    };
    let result = match body {
        Ok(b) => decide_unaudited(state, actor, task, req, b).await,
        Err(e) => Err(e),
    };
    let target = match crate::tasks::find(state, task).await {
        Ok(t) => format!("{}:{}/{}", t.workspace, t.id, short(req)),
        Err(_) => format!("{}/{}", short(task), short(req)),
    };
    audit(&state.store, actor, action, &target, &result).await;
    result
}

/// An id as shown in an audit target (ids from the agent can be long).
fn short(id: &str) -> String {
    printable_cut(id, 128)
}

fn parse_decision(s: &str) -> ApiResult<ApprovalDecision> {
    match s.trim() {
        "approve" | "approved" | "allow" => Ok(ApprovalDecision::Approved),
        "deny" | "denied" | "reject" => Ok(ApprovalDecision::Denied),
        other => Err(ApiError::invalid(format!(
            "unknown decision {other:?}: use approve or deny"
        ))),
    }
}

/// Checks the decision, hands it to the workspace daemon (which answers the agent) and records
/// it as the server's own (who decided, why).
async fn decide_unaudited(
    state: &Arc<AppState>,
    actor: &Actor,
    task: &str,
    req: &str,
    body: api::Decide,
) -> ApiResult<api::Approval> {
    let decision = parse_decision(&body.decision)?;
    if !berth_domain::approval::valid_request_id(req) {
        return Err(ApiError::invalid(format!(
            "invalid request id {:?}",
            short(req)
        )));
    }
    let reason = decision_reason(body.reason, berth_domain::approval::MAX_APPROVAL_TEXT)?;
    if body.always_for_task && decision == ApprovalDecision::Denied {
        return Err(ApiError::invalid("always_for_task goes with approve only"));
    }
    let t = crate::tasks::find(state, task).await?;
    check_pending(state, &t, task, req).await?;
    let by = actor.label();
    let decide = berth_daemon::TaskDecide {
        task: task.to_owned(),
        request: req.to_owned(),
        approve: decision == ApprovalDecision::Approved,
        reason: reason.clone(),
        by: by.clone(),
        always: body.always_for_task,
    };
    forward(state, &t.workspace_id, decide).await?;
    state
        .store
        .record_decision(&t.id, req, decision, &by, reason.as_deref())
        .await?;
    let a = state
        .store
        .task_approval(&t.id, req)
        .await?
        .ok_or_else(|| ApiError::internal("the decided request vanished from the store"))?;
    Ok(to_api(&a, &t.workspace, t.agent.as_str()))
}

/// 404 unless task `t` has request `req`, 409 unless it waits on it (decided once only).
async fn check_pending(state: &AppState, t: &Task, task: &str, req: &str) -> ApiResult<()> {
    let Some(a) = state.store.task_approval(&t.id, req).await? else {
        return Err(ApiError::not_found(format!(
            "task {task} has no request {}",
            short(req)
        )));
    };
    if a.state != "pending" || t.state != TaskState::Waiting {
        return Err(nothing_to_decide(
            format!("request {} of task {task}", short(req)),
            &a.state,
            a.decided_by.as_deref(),
        ));
    }
    Ok(())
}

/// Hands the decision to the workspace's daemon; a request it no longer holds is a 409.
async fn forward(
    state: &AppState,
    ws: &berth_domain::WorkspaceId,
    decide: berth_daemon::TaskDecide,
) -> ApiResult<()> {
    let (task, req) = (decide.task.clone(), short(&decide.request));
    match state.daemon(ws).task_decide(decide).await {
        Ok(_) => Ok(()),
        Err(DaemonError::NotFound(m)) => Err(ApiError::new(
            ErrorCode::InvalidState,
            format!(
                "request {req} of task {task} is no longer pending in its workspace (it timed out, or the turn ended): {m}"
            ),
        )),
        Err(e) => Err(e.into()),
    }
}

// ------------------------------------------------- shared with access requests' decisions

/// `s` without control characters, cut to `max` bytes: an id from a URL as an audit target or
/// an error shows it.
pub(crate) fn printable_cut(s: &str, max: usize) -> String {
    let mut s: String = s.chars().filter(|c| !c.is_control()).collect();
    berth_domain::approval::cut(&mut s, max);
    s
}

/// A decision's optional reason: blank is none, longer than `max` bytes is refused.
pub(crate) fn decision_reason(reason: Option<String>, max: usize) -> ApiResult<Option<String>> {
    let reason = reason.filter(|r| !r.trim().is_empty());
    if reason.as_ref().is_some_and(|r| r.len() > max) {
        return Err(ApiError::invalid(format!(
            "the reason is longer than {max} bytes"
        )));
    }
    Ok(reason)
}

/// The 409 for deciding `what` (already in `state`, decided by `by` if known) again.
pub(crate) fn nothing_to_decide(what: String, state: &str, by: Option<&str>) -> ApiError {
    let by = by.map(|b| format!(" by {b}")).unwrap_or_default();
    ApiError::new(
        ErrorCode::InvalidState,
        format!("{what} is {state}{by}; nothing to decide"),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn policies_and_decisions_parse() {
        assert_eq!(parse_policy(None).unwrap(), None);
        assert_eq!(
            parse_policy(Some("on-request")).unwrap(),
            Some(ApprovalPolicy::OnRequest)
        );
        assert!(parse_policy(Some("maybe")).is_err());
        assert_eq!(
            parse_decision("approve").unwrap(),
            ApprovalDecision::Approved
        );
        assert_eq!(parse_decision("deny").unwrap(), ApprovalDecision::Denied);
        assert!(parse_decision("later").is_err());
        assert!(check_supported(Agent::Claude, ApprovalPolicy::Always).is_ok());
        assert!(check_supported(Agent::Codex, ApprovalPolicy::OnRequest).is_ok());
        assert!(check_supported(Agent::Opencode, ApprovalPolicy::Never).is_ok());
        // Every agent speaks a permission protocol now (gemini and opencode through ACP).
        assert!(check_supported(Agent::Gemini, ApprovalPolicy::OnRequest).is_ok());
        assert!(check_supported(Agent::Opencode, ApprovalPolicy::Always).is_ok());
    }
}
