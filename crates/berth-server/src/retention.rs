//! Retention: a periodic purge of egress log rows and of finished tasks' events past their
//! configured age (`egress_log_retention_days`, `task_events_retention_days`; 0 keeps them).
//! Events of tasks that are still active are never purged. Ended browser sessions (single
//! sign-on) are removed on the same schedule.

use std::sync::Arc;
use std::time::Duration;

use berth_store::Store;
use time::OffsetDateTime;

use crate::config::Retention;
use crate::state::AppState;

/// Time between purges (the first runs at start).
const INTERVAL: Duration = Duration::from_secs(600);

pub fn spawn(state: Arc<AppState>) -> tokio::task::JoinHandle<()> {
    let retention = state.config.retention;
    tokio::spawn(async move {
        let mut tick = tokio::time::interval(INTERVAL);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tick.tick().await;
            match purge(&state.store, retention, OffsetDateTime::now_utc()).await {
                Ok((0, 0)) => {}
                Ok((egress, events)) => {
                    tracing::info!(egress, events, "purged history past retention")
                }
                Err(e) => tracing::warn!(error = %e, "retention purge failed"),
            }
            if let Err(e) = crate::sso::session::prune(&state).await {
                tracing::warn!(error = %e, "removing ended browser sessions failed");
            }
        }
    })
}

/// Purges what is older than the retention as of `now`; returns (egress rows, task events).
pub async fn purge(store: &Store, r: Retention, now: OffsetDateTime) -> anyhow::Result<(u64, u64)> {
    let egress = match cutoff(now, r.egress_log_days)? {
        Some(before) => store.purge_egress_log(&before).await?,
        None => 0,
    };
    let events = match cutoff(now, r.task_events_days)? {
        Some(before) => store.purge_task_events(&before).await?,
        None => 0,
    };
    Ok((egress, events))
}

/// `now - days` in the store's timestamp form; `None` for 0 (keep forever).
fn cutoff(now: OffsetDateTime, days: u32) -> anyhow::Result<Option<berth_domain::Timestamp>> {
    if days == 0 {
        return Ok(None);
    }
    Ok(Some(berth_domain::Timestamp::from(
        now - time::Duration::days(i64::from(days)),
    )))
}

#[cfg(test)]
mod tests {
    use super::*;
    use berth_store::EgressRecord;

    #[tokio::test]
    async fn old_egress_rows_go_recent_ones_stay_and_zero_keeps_all() {
        let store = Store::open_in_memory().await.unwrap();
        let now = berth_domain::Timestamp::parse("2026-12-01T00:00:00Z")
            .and_then(|t| t.instant())
            .unwrap();
        let rec = |at: &str| EgressRecord {
            at: berth_domain::Timestamp::parse(at).unwrap(),
            host: "registry.npmjs.org".into(),
            port: 443,
            decision: "deny".into(),
            reason: "no rule".into(),
            ..Default::default()
        };
        let w1 = berth_domain::WorkspaceId::from_stored("w1".into());
        store
            .append_egress_log(&w1, &rec("2026-10-01T00:00:00Z"))
            .await
            .unwrap();
        let recent = store
            .append_egress_log(&w1, &rec("2026-11-25T00:00:00.123Z"))
            .await
            .unwrap();
        let keep_all = Retention {
            egress_log_days: 0,
            task_events_days: 0,
        };
        assert_eq!(purge(&store, keep_all, now).await.unwrap(), (0, 0));
        assert_eq!(store.egress_log(&w1, 0, 10).await.unwrap().len(), 2);
        let thirty = Retention {
            egress_log_days: 30,
            task_events_days: 90,
        };
        assert_eq!(purge(&store, thirty, now).await.unwrap(), (1, 0));
        let left = store.egress_log(&w1, 0, 10).await.unwrap();
        assert_eq!(left.iter().map(|e| e.id).collect::<Vec<_>>(), [recent]);
    }
}
