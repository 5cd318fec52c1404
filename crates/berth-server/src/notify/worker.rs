//! The notifier's background worker: every half second it fans new outbox events out to the
//! matching subscriptions (building each event's payload once), makes the attempts that are
//! due (a few at a time, each bounded by [`deliver::ATTEMPT_TIMEOUT`]) and schedules retries;
//! every 30 seconds it checks budgets for near/over crossings and prunes the outbox and the
//! delivery log.

use std::sync::Arc;
use std::time::Duration;

use berth_api as api;
use berth_domain::notify::{self, Channel, NotifyKind};
use berth_store::{NewNotifyEvent, NotifyAttempt, NotifyEvent, NotifySubscription};
use futures_util::StreamExt;

use super::deliver;
use crate::error::{ApiError, ApiResult};
use crate::state::AppState;

const TICK: Duration = Duration::from_millis(500);
/// Budget checks and pruning run every this many ticks.
const SLOW_EVERY: u32 = 60;
/// Events fanned out per tick.
const FAN_OUT_BATCH: u32 = 200;
/// Attempts made per tick, and at once.
const DUE_BATCH: u32 = 64;
const PARALLEL: usize = 8;
/// Outbox rows are kept this long after fan-out (the browser stream's resume window).
const KEEP_EVENTS: time::Duration = time::Duration::hours(24);
/// And never more than this many.
const MAX_EVENTS: u32 = 10_000;
/// The characters of a task's last message a payload carries.
pub const EXCERPT: usize = 200;
const CURSOR_KEY: &str = "notify_fanned_out";

/// Starts the worker.
pub fn spawn(state: Arc<AppState>) -> tokio::task::JoinHandle<()> {
    tokio::spawn(async move {
        let mut tick = tokio::time::interval(TICK);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let mut n: u32 = 0;
        loop {
            tick.tick().await;
            if n == 0 {
                if let Err(e) = check_budgets(&state).await {
                    tracing::warn!(error = %e, "notify: checking budgets");
                }
                if let Err(e) = prune(&state).await {
                    tracing::warn!(error = %e, "notify: pruning");
                }
            }
            n = (n + 1) % SLOW_EVERY;
            if let Err(e) = fan_out(&state).await {
                tracing::warn!(error = %e, "notify: fanning out events");
            }
            if let Err(e) = deliver_due(&state).await {
                tracing::warn!(error = %e, "notify: delivering");
            }
        }
    })
}

async fn cursor(state: &AppState) -> ApiResult<i64> {
    Ok(state
        .store
        .meta(CURSOR_KEY)
        .await?
        .and_then(|v| v.parse().ok())
        .unwrap_or(0))
}

/// Builds the payloads of new events and queues their deliveries.
pub async fn fan_out(state: &AppState) -> ApiResult<()> {
    let mut after = cursor(state).await?;
    let events = state
        .store
        .notify_events_after(after, FAN_OUT_BATCH)
        .await?;
    if events.is_empty() {
        return Ok(());
    }
    let subs = state.store.notify_subscriptions(None, None).await?;
    for e in events {
        if e.payload.is_none() {
            let payload = build(state, &e).await?;
            state
                .store
                .set_notify_payload(e.id, &serde_json::to_string(&payload).unwrap_or_default())
                .await?;
        }
        if let Some(kind) = NotifyKind::parse(&e.kind) {
            for s in &subs {
                if !super::filter(s).matches(kind, &e.tenant, e.workspace_id.as_ref()) {
                    continue;
                }
                if !super::owner_may_read(state, &s.owner, &e.tenant).await? {
                    continue;
                }
                state
                    .store
                    .queue_notify_delivery(&s.id, e.id, &e.kind, super::MAX_PENDING, true)
                    .await?;
            }
        }
        after = e.id;
        state.store.set_meta(CURSOR_KEY, &after.to_string()).await?;
    }
    state.notify.fanned_out(after);
    Ok(())
}

/// berth's payload of an event: who, what, a one-line text, the UI link. A task's prompt is
/// never in it, only its id, state, agent and a short excerpt of its last message.
pub async fn build(state: &AppState, e: &NotifyEvent) -> ApiResult<api::NotificationEvent> {
    let kind = NotifyKind::parse(&e.kind).unwrap_or(NotifyKind::Test);
    let detail: serde_json::Value = e
        .detail
        .as_deref()
        .and_then(|d| serde_json::from_str(d).ok())
        .unwrap_or_default();
    let public = state.web.sso.as_ref().map(|s| {
        s.config
            .public_url
            .as_str()
            .trim_end_matches('/')
            .to_owned()
    });
    let ws = e.workspace.clone();
    let ws_shown = ws.clone().unwrap_or_else(|| e.tenant.clone());
    let mut ev = api::NotificationEvent {
        id: e.id,
        kind: e.kind.clone(),
        at: e.at.clone(),
        title: kind.title().to_owned(),
        text: String::new(),
        tenant: e.tenant.clone(),
        workspace: ws,
        ..Default::default()
    };
    match kind {
        NotifyKind::TaskCompleted | NotifyKind::TaskFailed | NotifyKind::TaskWaiting => {
            let task = match &e.task_id {
                Some(tid) => state.store.find_task(tid).await?,
                None => None,
            };
            let id = e
                .task_id
                .as_ref()
                .map(ToString::to_string)
                .unwrap_or_default();
            ev.link = public.map(|p| format!("{p}/#/tasks/{id}"));
            let last = task.and_then(|t| t.last_message);
            fill_task(&mut ev, kind, &detail, id, last, &ws_shown);
        }
        NotifyKind::WorkspaceFailed => {
            let reason = text_of(&detail, "reason").unwrap_or_else(|| "unknown".into());
            ev.text = format!("Workspace {ws_shown} failed ({reason})");
            ev.failure = Some(reason);
            ev.link = public.map(|p| format!("{p}/#/workspaces/{ws_shown}"));
        }
        NotifyKind::WorkspaceOom => {
            let n = detail["new_kills"].as_u64().unwrap_or(1);
            ev.text = format!(
                "Workspace {ws_shown}: {n} process{} killed for lack of memory",
                if n == 1 { "" } else { "es" }
            );
            ev.failure = Some("oom".into());
            ev.link = public.map(|p| format!("{p}/#/workspaces/{ws_shown}"));
        }
        NotifyKind::BudgetNear | NotifyKind::BudgetOver => {
            let b: api::NotificationBudget = serde_json::from_value(detail).unwrap_or_default();
            ev.text = budget_text(&b);
            ev.budget = Some(b);
            ev.link = public.map(|p| format!("{p}/#/usage"));
        }
        NotifyKind::AccessRequest => {
            ev.text = access_request_text(&detail, &ws_shown);
            ev.link = public.map(|p| format!("{p}/#/inbox"));
        }
        NotifyKind::Test => {
            ev.text = format!("A test notification for {ws_shown} from berth");
        }
    }
    Ok(ev)
}

/// A text field of an event's facts.
fn text_of(detail: &serde_json::Value, k: &str) -> Option<String> {
    detail[k].as_str().map(str::to_owned)
}

/// A task event's text and task part: its id, state, agent, and an excerpt of the failure
/// reason or of its last message.
fn fill_task(
    ev: &mut api::NotificationEvent,
    kind: NotifyKind,
    detail: &serde_json::Value,
    id: String,
    last_message: Option<String>,
    ws_shown: &str,
) {
    let st = text_of(detail, "state").unwrap_or_else(|| kind.as_str()["task.".len()..].to_owned());
    let agent = text_of(detail, "agent").unwrap_or_default();
    let last = last_message
        .map(|m| notify::excerpt(&m, EXCERPT))
        .filter(|m| !m.is_empty());
    ev.text = format!("Task {id} ({agent}) in {ws_shown} is {st}");
    if let Some(reason) = text_of(detail, "reason").filter(|_| kind == NotifyKind::TaskFailed) {
        ev.text
            .push_str(&format!(": {}", notify::excerpt(&reason, EXCERPT)));
    } else if let Some(m) = &last {
        ev.text.push_str(&format!(": {m}"));
    }
    ev.task = Some(api::NotificationTask {
        id,
        state: st,
        agent,
        last_message: last,
    });
}

/// "The day budget of tenant acme has used … of …".
fn budget_text(b: &api::NotificationBudget) -> String {
    let limit = match (b.max_tokens, b.max_cost_usd) {
        (Some(t), Some(c)) => format!("{t} tokens / ${c:.2}"),
        (Some(t), None) => format!("{t} tokens"),
        (None, Some(c)) => format!("${c:.2}"),
        (None, None) => "no limit".into(),
    };
    format!(
        "The {} budget of {} {} has used {} tokens / ${:.2} of {limit}",
        b.period, b.scope, b.target, b.spent_tokens, b.spent_cost_usd
    )
}

/// What an access request asks for, and why. Host, secret name and reason come from inside the
/// workspace: cut short.
fn access_request_text(detail: &serde_json::Value, ws_shown: &str) -> String {
    let host = notify::excerpt(&text_of(detail, "host").unwrap_or_default(), 253);
    let what = match (text_of(detail, "secret"), detail["port"].as_u64()) {
        (Some(name), _) => format!("secret {} for {host}", notify::excerpt(&name, 64)),
        (None, Some(port)) => format!("egress to {host}:{port}"),
        (None, None) => format!("egress to {host}"),
    };
    let how = if text_of(detail, "source").as_deref() == Some("explicit") {
        "asks for"
    } else {
        "was denied"
    };
    let mut text = format!("Workspace {ws_shown} {how} {what}");
    if let Some(reason) = text_of(detail, "reason").filter(|r| !r.is_empty()) {
        text.push_str(&format!(": {}", notify::excerpt(&reason, EXCERPT)));
    }
    text
}

/// Makes the attempts that are due.
async fn deliver_due(state: &AppState) -> ApiResult<()> {
    let due = state
        .store
        .due_notify_deliveries(&berth_domain::Timestamp::now(), DUE_BATCH)
        .await?;
    futures_util::stream::iter(due)
        .for_each_concurrent(PARALLEL, |d| async move {
            if let Err(e) = attempt_due(state, &d).await {
                tracing::warn!(delivery = d.id, error = %e.message, "notify: an attempt failed to run");
            }
        })
        .await;
    Ok(())
}

async fn attempt_due(state: &AppState, d: &berth_store::NotifyDelivery) -> ApiResult<()> {
    let sub = state.store.notify_subscription(&d.subscription_id).await?;
    let ev = state.store.notify_event(d.event_id).await?;
    let (Some(sub), Some(ev)) = (sub, ev) else {
        return Ok(state.store.drop_notify_delivery(d.id).await?);
    };
    if !super::owner_may_read(state, &sub.owner, &ev.tenant).await? {
        return Ok(state.store.drop_notify_delivery(d.id).await?);
    }
    let payload: api::NotificationEvent = match ev.payload.as_deref() {
        Some(p) => serde_json::from_str(p)
            .map_err(|e| ApiError::internal(format!("stored payload: {e}")))?,
        None => build(state, &ev).await?,
    };
    send(state, &sub, &payload, d.id, d.attempts + 1, true).await?;
    Ok(())
}

/// Makes attempt number `attempt` of a delivery and records it: delivered on 2xx; otherwise
/// retried (when `retry` and the answer is retryable and attempts remain) or failed.
pub async fn send(
    state: &AppState,
    sub: &NotifySubscription,
    payload: &api::NotificationEvent,
    delivery: i64,
    attempt: u32,
    retry: bool,
) -> ApiResult<deliver::Outcome> {
    let (url, secret) = super::open(state, sub).map_err(|e| ApiError::internal(e.to_string()))?;
    let channel = Channel::parse(&sub.channel).unwrap_or(Channel::Webhook);
    let settings = state.notify.settings;
    let out = deliver::attempt(
        &url,
        &secret,
        channel,
        payload,
        delivery,
        settings.allow_private,
        &state.notify.local,
        &state.notify.vapid,
    )
    .await;
    let next = if out.delivered() || !retry || !notify::retryable(out.status) {
        None
    } else {
        notify::backoff_ms(attempt, settings.max_attempts, settings.retry_base_ms)
    };
    let now = time::OffsetDateTime::now_utc();
    let next_at = next.map(|ms| {
        berth_domain::Timestamp::from(
            now + time::Duration::milliseconds(i64::try_from(ms).unwrap_or(i64::MAX)),
        )
    });
    let new_state = if out.delivered() {
        "delivered"
    } else if next_at.is_some() {
        "pending"
    } else {
        "failed"
    };
    tracing::info!(
        subscription = %sub.id,
        delivery,
        attempt,
        status = ?out.status,
        error = out.error.as_deref().unwrap_or(""),
        state = new_state,
        "notification attempt"
    );
    state
        .store
        .record_notify_attempt(
            &NotifyAttempt {
                delivery_id: delivery,
                at: berth_domain::Timestamp::from(now),
                status: out.status,
                error: out.error.clone(),
                duration_ms: out.duration_ms,
                next_at,
            },
            new_state,
        )
        .await?;
    Ok(out)
}

/// A budget period's key among the levels noted: `total`, or its start in whole seconds
/// (`2026-12-01T00:00:00Z`), as it was always written there, so a level noted before an upgrade
/// keeps counting.
fn period_key(start: Option<&berth_domain::Timestamp>) -> String {
    start.map_or_else(
        || "total".to_owned(),
        |t| format!("{}Z", t.get(..19).unwrap_or(t)),
    )
}

/// Raises `budget.near` / `budget.over` once per crossing per period.
pub async fn check_budgets(state: &AppState) -> ApiResult<()> {
    let near = state.notify.settings.near_percent;
    for b in state.store.budgets().await? {
        let since = crate::gateway::period_start(&b.period);
        let period = period_key(since.as_ref());
        let spent = state.store.spent(&b, since.as_ref()).await?;
        let level = notify::budget_level(
            spent.tokens,
            spent.cost_usd,
            b.max_tokens,
            b.max_cost_usd,
            near,
        );
        let notified = state
            .store
            .notified_budget_level(&b.scope, &b.target, &period)
            .await?;
        if let Some(kind) = notify::budget_crossing(notified, level) {
            let (tenant, ws_id, ws, target) = if b.scope == "workspace" {
                let w = match berth_domain::WorkspaceId::parse(&b.target) {
                    Some(id) => state.store.find_workspace_by_id(&id).await?,
                    None => None,
                };
                match w {
                    Some(w) => (
                        w.tenant.to_string(),
                        Some(w.id.clone()),
                        Some(w.qualified_name()),
                        w.qualified_name(),
                    ),
                    // The workspace is gone: nobody to tell.
                    None => continue,
                }
            } else {
                (b.target.clone(), None, None, b.target.clone())
            };
            let detail = api::NotificationBudget {
                scope: b.scope.clone(),
                target,
                period: b.period.clone(),
                max_tokens: b.max_tokens,
                max_cost_usd: b.max_cost_usd,
                spent_tokens: spent.tokens,
                spent_cost_usd: spent.cost_usd,
            };
            state
                .store
                .insert_notify_event(&NewNotifyEvent {
                    kind: kind.as_str(),
                    tenant: &tenant,
                    workspace_id: ws_id.as_ref(),
                    workspace: ws.as_deref(),
                    detail: Some(&serde_json::to_string(&detail).unwrap_or_default()),
                })
                .await?;
        }
        if level != notified {
            state
                .store
                .set_budget_level(&b.scope, &b.target, &period, level)
                .await?;
        }
    }
    Ok(())
}

async fn prune(state: &AppState) -> ApiResult<()> {
    let before = berth_domain::Timestamp::from(time::OffsetDateTime::now_utc() - KEEP_EVENTS);
    let fanned = cursor(state).await?;
    state
        .store
        .prune_notify(&before, fanned, MAX_EVENTS, super::KEEP_DELIVERIES)
        .await?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use berth_domain::Timestamp;

    #[test]
    fn budget_periods_keep_their_key() {
        let start = Timestamp::parse("2026-12-01T00:00:00Z").unwrap();
        assert_eq!(super::period_key(Some(&start)), "2026-12-01T00:00:00Z");
        assert_eq!(super::period_key(None), "total");
        let day = berth_gateway::period_start("day").unwrap();
        assert!(super::period_key(Some(&day)).ends_with("T00:00:00Z"));
    }
}
