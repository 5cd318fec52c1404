//! Notifications' rows: the event outbox the triggers of migration 0018 fill, subscriptions
//! (their URL and signing secret sealed by the server's vault before they get here), the
//! deliveries with their attempts, and the budget level already notified per period.

use berth_domain::{TaskId, Timestamp, WorkspaceId};
use sqlx::Row;

use crate::{now, Result, Store};

/// One event of the outbox.
#[derive(Debug, Clone, PartialEq)]
pub struct NotifyEvent {
    pub id: i64,
    pub at: Timestamp,
    pub kind: String,
    pub tenant: String,
    pub workspace_id: Option<WorkspaceId>,
    pub workspace: Option<String>,
    pub task_id: Option<TaskId>,
    /// The trigger's facts (JSON).
    pub detail: Option<String>,
    /// berth's JSON payload, once the notifier built it.
    pub payload: Option<String>,
}

/// A new event the server raises itself (budget crossings, tests).
#[derive(Debug, Clone, Default)]
pub struct NewNotifyEvent<'a> {
    pub kind: &'a str,
    pub tenant: &'a str,
    pub workspace_id: Option<&'a WorkspaceId>,
    pub workspace: Option<&'a str>,
    pub detail: Option<&'a str>,
}

/// A stored subscription (the URL and secret still sealed).
#[derive(Debug, Clone)]
pub struct NotifySubscription {
    pub id: String,
    pub owner: String,
    pub owner_name: String,
    pub tenant: String,
    pub workspace_id: Option<WorkspaceId>,
    pub workspace: Option<String>,
    /// Event kinds; empty = every kind.
    pub kinds: Vec<String>,
    pub channel: String,
    pub url_shown: String,
    pub url_sealed: (Vec<u8>, Vec<u8>),
    pub secret_sealed: (Vec<u8>, Vec<u8>),
    pub created_at: Timestamp,
}

/// One delivery of one event to one subscription.
#[derive(Debug, Clone)]
pub struct NotifyDelivery {
    pub id: i64,
    pub subscription_id: String,
    pub event_id: i64,
    pub kind: String,
    pub state: String,
    pub attempts: u32,
    pub next_at: Option<Timestamp>,
    pub created_at: Timestamp,
    pub updated_at: Timestamp,
}

/// One attempt of a delivery.
#[derive(Debug, Clone)]
pub struct NotifyAttempt {
    pub delivery_id: i64,
    pub at: Timestamp,
    pub status: Option<u16>,
    pub error: Option<String>,
    pub duration_ms: u64,
    pub next_at: Option<Timestamp>,
}

const EVENT_COLUMNS: &str =
    "id, at, kind, tenant, workspace_id, workspace, task_id, detail, payload";
const SUB_COLUMNS: &str = "id, owner, owner_name, tenant, workspace_id, workspace, kinds, \
     channel, url_shown, url_nonce, url_sealed, secret_nonce, secret_sealed, created_at";
const DELIVERY_COLUMNS: &str =
    "id, subscription_id, event_id, kind, state, attempts, next_at, created_at, updated_at";

fn event(r: &sqlx::sqlite::SqliteRow) -> NotifyEvent {
    NotifyEvent {
        id: r.get("id"),
        at: crate::ts(r, "at"),
        kind: r.get("kind"),
        tenant: r.get("tenant"),
        workspace_id: r
            .get::<Option<String>, _>("workspace_id")
            .map(WorkspaceId::from_stored),
        workspace: r.get("workspace"),
        task_id: r
            .get::<Option<String>, _>("task_id")
            .map(TaskId::from_stored),
        detail: r.get("detail"),
        payload: r.get("payload"),
    }
}

fn subscription(r: &sqlx::sqlite::SqliteRow) -> NotifySubscription {
    let kinds: String = r.get("kinds");
    NotifySubscription {
        id: r.get("id"),
        owner: r.get("owner"),
        owner_name: r.get("owner_name"),
        tenant: r.get("tenant"),
        workspace_id: r
            .get::<Option<String>, _>("workspace_id")
            .map(WorkspaceId::from_stored),
        workspace: r.get("workspace"),
        kinds: serde_json::from_str(&kinds).unwrap_or_default(),
        channel: r.get("channel"),
        url_shown: r.get("url_shown"),
        url_sealed: (r.get("url_nonce"), r.get("url_sealed")),
        secret_sealed: (r.get("secret_nonce"), r.get("secret_sealed")),
        created_at: crate::ts(r, "created_at"),
    }
}

fn delivery(r: &sqlx::sqlite::SqliteRow) -> NotifyDelivery {
    NotifyDelivery {
        id: r.get("id"),
        subscription_id: r.get("subscription_id"),
        event_id: r.get("event_id"),
        kind: r.get("kind"),
        state: r.get("state"),
        attempts: r.get::<i64, _>("attempts").clamp(0, i64::from(u32::MAX)) as u32,
        next_at: crate::ts_opt(r, "next_at"),
        created_at: crate::ts(r, "created_at"),
        updated_at: crate::ts(r, "updated_at"),
    }
}

impl Store {
    /// Appends an event the server raises itself; returns its id.
    pub async fn insert_notify_event(&self, e: &NewNotifyEvent<'_>) -> Result<i64> {
        let res = sqlx::query(
            "INSERT INTO notify_events (at, kind, tenant, workspace_id, workspace, detail) \
             VALUES (?, ?, ?, ?, ?, ?)",
        )
        .bind(now())
        .bind(e.kind)
        .bind(e.tenant)
        .bind(e.workspace_id.map(WorkspaceId::as_str))
        .bind(e.workspace)
        .bind(e.detail)
        .execute(&self.pool)
        .await?;
        Ok(res.last_insert_rowid())
    }

    /// Events after `after` (ascending), at most `limit`.
    pub async fn notify_events_after(&self, after: i64, limit: u32) -> Result<Vec<NotifyEvent>> {
        let rows = sqlx::query(&format!(
            "SELECT {EVENT_COLUMNS} FROM notify_events WHERE id > ? ORDER BY id LIMIT ?"
        ))
        .bind(after)
        .bind(i64::from(limit))
        .fetch_all(&self.pool)
        .await?;
        Ok(rows.iter().map(event).collect())
    }

    /// Events with their payload built, after `after`, up to `upto`, of `tenant` (every tenant
    /// for `None`): what the browser stream sends.
    pub async fn notify_stream(
        &self,
        tenant: Option<&str>,
        after: i64,
        upto: i64,
        limit: u32,
    ) -> Result<Vec<NotifyEvent>> {
        let rows = sqlx::query(&format!(
            "SELECT {EVENT_COLUMNS} FROM notify_events WHERE id > ? AND id <= ? \
             AND payload IS NOT NULL AND kind <> 'test' AND (? IS NULL OR tenant = ?) \
             ORDER BY id LIMIT ?"
        ))
        .bind(after)
        .bind(upto)
        .bind(tenant)
        .bind(tenant)
        .bind(i64::from(limit))
        .fetch_all(&self.pool)
        .await?;
        Ok(rows.iter().map(event).collect())
    }

    /// The newest event's id (0: none).
    pub async fn last_notify_event(&self) -> Result<i64> {
        let row = sqlx::query("SELECT COALESCE(MAX(id), 0) FROM notify_events")
            .fetch_one(&self.pool)
            .await?;
        Ok(row.get(0))
    }

    pub async fn set_notify_payload(&self, id: i64, payload: &str) -> Result<()> {
        sqlx::query("UPDATE notify_events SET payload = ? WHERE id = ?")
            .bind(payload)
            .bind(id)
            .execute(&self.pool)
            .await?;
        Ok(())
    }

    pub async fn notify_event(&self, id: i64) -> Result<Option<NotifyEvent>> {
        let row = sqlx::query(&format!(
            "SELECT {EVENT_COLUMNS} FROM notify_events WHERE id = ?"
        ))
        .bind(id)
        .fetch_optional(&self.pool)
        .await?;
        Ok(row.as_ref().map(event))
    }

    pub async fn insert_notify_subscription(&self, s: &NotifySubscription) -> Result<()> {
        sqlx::query(&format!(
            "INSERT INTO notify_subscriptions ({SUB_COLUMNS}) \
             VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)"
        ))
        .bind(&s.id)
        .bind(&s.owner)
        .bind(&s.owner_name)
        .bind(&s.tenant)
        .bind(s.workspace_id.as_ref().map(WorkspaceId::as_str))
        .bind(&s.workspace)
        .bind(serde_json::to_string(&s.kinds).unwrap_or_else(|_| "[]".into()))
        .bind(&s.channel)
        .bind(&s.url_shown)
        .bind(&s.url_sealed.0)
        .bind(&s.url_sealed.1)
        .bind(&s.secret_sealed.0)
        .bind(&s.secret_sealed.1)
        .bind(s.created_at.as_str())
        .execute(&self.pool)
        .await?;
        Ok(())
    }

    /// Subscriptions, oldest first: of one owner, of one tenant, or all.
    pub async fn notify_subscriptions(
        &self,
        owner: Option<&str>,
        tenant: Option<&str>,
    ) -> Result<Vec<NotifySubscription>> {
        let rows = sqlx::query(&format!(
            "SELECT {SUB_COLUMNS} FROM notify_subscriptions \
             WHERE (? IS NULL OR owner = ?) AND (? IS NULL OR tenant = ?) \
             ORDER BY created_at, id"
        ))
        .bind(owner)
        .bind(owner)
        .bind(tenant)
        .bind(tenant)
        .fetch_all(&self.pool)
        .await?;
        Ok(rows.iter().map(subscription).collect())
    }

    pub async fn notify_subscription(&self, id: &str) -> Result<Option<NotifySubscription>> {
        let row = sqlx::query(&format!(
            "SELECT {SUB_COLUMNS} FROM notify_subscriptions WHERE id = ?"
        ))
        .bind(id)
        .fetch_optional(&self.pool)
        .await?;
        Ok(row.as_ref().map(subscription))
    }

    /// Removes a subscription with its deliveries and their attempts.
    pub async fn remove_notify_subscription(&self, id: &str) -> Result<bool> {
        let mut tx = self.pool.begin().await?;
        sqlx::query(
            "DELETE FROM notify_attempts WHERE delivery_id IN \
             (SELECT id FROM notify_deliveries WHERE subscription_id = ?)",
        )
        .bind(id)
        .execute(&mut *tx)
        .await?;
        sqlx::query("DELETE FROM notify_deliveries WHERE subscription_id = ?")
            .bind(id)
            .execute(&mut *tx)
            .await?;
        let res = sqlx::query("DELETE FROM notify_subscriptions WHERE id = ?")
            .bind(id)
            .execute(&mut *tx)
            .await?;
        tx.commit().await?;
        Ok(res.rows_affected() > 0)
    }

    /// Queues a delivery, due now (or, when not `due`, waiting for its caller to make the one
    /// attempt itself: a test send). A subscription holds at most `max_pending` pending
    /// deliveries: the oldest beyond that are dropped, so a dead receiver cannot grow the
    /// database without limit.
    pub async fn queue_notify_delivery(
        &self,
        subscription: &str,
        event_id: i64,
        kind: &str,
        max_pending: u32,
        due: bool,
    ) -> Result<i64> {
        let at = now();
        let mut tx = self.pool.begin().await?;
        let res = sqlx::query(
            "INSERT INTO notify_deliveries (subscription_id, event_id, kind, state, attempts, \
             next_at, created_at, updated_at) VALUES (?, ?, ?, 'pending', 0, ?, ?, ?)",
        )
        .bind(subscription)
        .bind(event_id)
        .bind(kind)
        .bind(due.then_some(&at))
        .bind(&at)
        .bind(&at)
        .execute(&mut *tx)
        .await?;
        sqlx::query(
            "UPDATE notify_deliveries SET state = 'dropped', next_at = NULL, updated_at = ? \
             WHERE id IN (SELECT id FROM notify_deliveries WHERE subscription_id = ? \
             AND state = 'pending' ORDER BY id DESC LIMIT -1 OFFSET ?)",
        )
        .bind(&at)
        .bind(subscription)
        .bind(i64::from(max_pending))
        .execute(&mut *tx)
        .await?;
        tx.commit().await?;
        Ok(res.last_insert_rowid())
    }

    /// Pending deliveries due at `now`, oldest first.
    pub async fn due_notify_deliveries(
        &self,
        now: &Timestamp,
        limit: u32,
    ) -> Result<Vec<NotifyDelivery>> {
        let rows = sqlx::query(&format!(
            "SELECT {DELIVERY_COLUMNS} FROM notify_deliveries \
             WHERE state = 'pending' AND next_at <= ? ORDER BY next_at, id LIMIT ?"
        ))
        .bind(now.as_str())
        .bind(i64::from(limit))
        .fetch_all(&self.pool)
        .await?;
        Ok(rows.iter().map(delivery).collect())
    }

    /// Records one attempt and the delivery's new state (`pending` with `next_at`, or final).
    pub async fn record_notify_attempt(&self, a: &NotifyAttempt, state: &str) -> Result<()> {
        let mut tx = self.pool.begin().await?;
        sqlx::query(
            "INSERT INTO notify_attempts (delivery_id, at, status, error, duration_ms, next_at) \
             VALUES (?, ?, ?, ?, ?, ?)",
        )
        .bind(a.delivery_id)
        .bind(a.at.as_str())
        .bind(a.status.map(i64::from))
        .bind(&a.error)
        .bind(i64::try_from(a.duration_ms).unwrap_or(i64::MAX))
        .bind(crate::ts_text(a.next_at.as_ref()))
        .execute(&mut *tx)
        .await?;
        sqlx::query(
            "UPDATE notify_deliveries SET attempts = attempts + 1, state = ?, next_at = ?, \
             updated_at = ? WHERE id = ?",
        )
        .bind(state)
        .bind(crate::ts_text(a.next_at.as_ref()))
        .bind(a.at.as_str())
        .bind(a.delivery_id)
        .execute(&mut *tx)
        .await?;
        tx.commit().await?;
        Ok(())
    }

    /// Ends a delivery without an attempt (its subscription's owner lost access): `dropped`.
    pub async fn drop_notify_delivery(&self, id: i64) -> Result<()> {
        sqlx::query(
            "UPDATE notify_deliveries SET state = 'dropped', next_at = NULL, updated_at = ? \
             WHERE id = ?",
        )
        .bind(now())
        .bind(id)
        .execute(&self.pool)
        .await?;
        Ok(())
    }

    /// A subscription's newest deliveries (newest first) with their attempts (oldest first).
    pub async fn notify_deliveries(
        &self,
        subscription: &str,
        limit: u32,
    ) -> Result<Vec<(NotifyDelivery, Vec<NotifyAttempt>)>> {
        let rows = sqlx::query(&format!(
            "SELECT {DELIVERY_COLUMNS} FROM notify_deliveries WHERE subscription_id = ? \
             ORDER BY id DESC LIMIT ?"
        ))
        .bind(subscription)
        .bind(i64::from(limit))
        .fetch_all(&self.pool)
        .await?;
        let mut out = Vec::with_capacity(rows.len());
        for d in rows.iter().map(delivery) {
            let attempts = sqlx::query(
                "SELECT delivery_id, at, status, error, duration_ms, next_at \
                 FROM notify_attempts WHERE delivery_id = ? ORDER BY id",
            )
            .bind(d.id)
            .fetch_all(&self.pool)
            .await?
            .iter()
            .map(|r| NotifyAttempt {
                delivery_id: r.get("delivery_id"),
                at: crate::ts(r, "at"),
                status: r
                    .get::<Option<i64>, _>("status")
                    .map(|s| s.clamp(0, 999) as u16),
                error: r.get("error"),
                duration_ms: r.get::<i64, _>("duration_ms").max(0) as u64,
                next_at: crate::ts_opt(r, "next_at"),
            })
            .collect();
            out.push((d, attempts));
        }
        Ok(out)
    }

    /// Keeps the outbox and the log bounded: events older than `before` that no pending
    /// delivery needs and that are at or before `fanned_out`, the events beyond the newest
    /// `max_events`, and per subscription the finished deliveries beyond the newest
    /// `keep_deliveries`.
    pub async fn prune_notify(
        &self,
        before: &Timestamp,
        fanned_out: i64,
        max_events: u32,
        keep_deliveries: u32,
    ) -> Result<u64> {
        let mut n = sqlx::query(
            "DELETE FROM notify_events WHERE id <= ? AND at < ? AND id NOT IN \
             (SELECT event_id FROM notify_deliveries WHERE state = 'pending')",
        )
        .bind(fanned_out)
        .bind(before.as_str())
        .execute(&self.pool)
        .await?
        .rows_affected();
        n += sqlx::query(
            "DELETE FROM notify_events WHERE id <= ? AND id NOT IN \
             (SELECT id FROM notify_events ORDER BY id DESC LIMIT ?)",
        )
        .bind(fanned_out)
        .bind(i64::from(max_events))
        .execute(&self.pool)
        .await?
        .rows_affected();
        let old =
            "SELECT d.id FROM notify_deliveries d WHERE d.state <> 'pending' AND d.id NOT IN \
             (SELECT e.id FROM notify_deliveries e WHERE e.subscription_id = d.subscription_id \
             ORDER BY e.id DESC LIMIT ?)";
        sqlx::query(&format!(
            "DELETE FROM notify_attempts WHERE delivery_id IN ({old})"
        ))
        .bind(i64::from(keep_deliveries))
        .execute(&self.pool)
        .await?;
        n += sqlx::query(&format!(
            "DELETE FROM notify_deliveries WHERE id IN ({old})"
        ))
        .bind(i64::from(keep_deliveries))
        .execute(&self.pool)
        .await?
        .rows_affected();
        Ok(n)
    }

    /// The level already notified for a budget in a period (0 when none).
    pub async fn notified_budget_level(
        &self,
        scope: &str,
        target: &str,
        period: &str,
    ) -> Result<u8> {
        let row = sqlx::query(
            "SELECT level FROM notify_budget_levels WHERE scope = ? AND target = ? AND period = ?",
        )
        .bind(scope)
        .bind(target)
        .bind(period)
        .fetch_optional(&self.pool)
        .await?;
        Ok(row.map_or(0, |r| r.get::<i64, _>(0).clamp(0, 2) as u8))
    }

    /// Remembers the level of a budget in a period (older periods of that budget are forgotten).
    pub async fn set_budget_level(
        &self,
        scope: &str,
        target: &str,
        period: &str,
        level: u8,
    ) -> Result<()> {
        let mut tx = self.pool.begin().await?;
        sqlx::query(
            "DELETE FROM notify_budget_levels WHERE scope = ? AND target = ? AND period <> ?",
        )
        .bind(scope)
        .bind(target)
        .bind(period)
        .execute(&mut *tx)
        .await?;
        sqlx::query(
            "INSERT INTO notify_budget_levels (scope, target, period, level) VALUES (?, ?, ?, ?) \
             ON CONFLICT(scope, target, period) DO UPDATE SET level = excluded.level",
        )
        .bind(scope)
        .bind(target)
        .bind(period)
        .bind(i64::from(level))
        .execute(&mut *tx)
        .await?;
        tx.commit().await?;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use berth_domain::WorkspaceState;
    use berth_domain::{Agent, Failure, FailureKind, Limits, Name, TaskId, TaskState, WorkspaceId};

    use crate::{NewTask, NewWorkspace, Store};

    /// The triggers write the outbox in the statement that changes the state: a task reaching
    /// completed/failed/waiting (not running or cancelled), a workspace failing, new OOM kills.
    #[tokio::test]
    async fn triggers_fill_the_outbox() {
        let s = Store::open_in_memory().await.unwrap();
        let t = s
            .ensure_tenant(&Name::parse("acme").unwrap())
            .await
            .unwrap();
        let w = s
            .insert_workspace(&NewWorkspace {
                id: WorkspaceId::generate(),
                tenant_id: t.id,
                name: Name::parse("web").unwrap(),
                image: "img".into(),
                limits: Limits::default(),
                network: "none".into(),
                volume: "v".into(),
                mcp_servers: Vec::new(),
            })
            .await
            .unwrap();
        let task = TaskId::generate();
        s.insert_task(&NewTask {
            id: task.clone(),
            workspace_id: w.id.clone(),
            workspace: "acme/web".into(),
            agent: Agent::Claude,
            model: None,
            dir: "~".into(),
            worktree: None,
            prompt: "secret prompt".into(),
            virtual_key_hash: "h".into(),
            approval: Default::default(),
        })
        .await
        .unwrap();
        for st in [TaskState::Running, TaskState::Waiting, TaskState::Running] {
            s.set_task_state(&task, st, None).await.unwrap();
        }
        s.set_task_state(&task, TaskState::Completed, None)
            .await
            .unwrap();
        s.set_task_state(&task, TaskState::Completed, None)
            .await
            .unwrap();
        s.set_state(
            &w.id,
            WorkspaceState::Failed,
            Some(&Failure::new(FailureKind::Exited, "exit 1")),
        )
        .await
        .unwrap();
        let evs = s.notify_events_after(0, 100).await.unwrap();
        let kinds: Vec<&str> = evs.iter().map(|e| e.kind.as_str()).collect();
        assert_eq!(
            kinds,
            ["task.waiting", "task.completed", "workspace.failed"]
        );
        assert!(evs.iter().all(|e| e.tenant == "acme"));
        assert_eq!(evs[1].task_id.as_ref(), Some(&task));
        assert_eq!(evs[1].workspace.as_deref(), Some("acme/web"));
        assert!(evs[2].detail.as_deref().unwrap().contains("exited"));
        assert!(evs
            .iter()
            .all(|e| !format!("{e:?}").contains("secret prompt")));
        assert_eq!(s.last_notify_event().await.unwrap(), evs[2].id);
    }

    #[tokio::test]
    async fn pending_deliveries_are_bounded_and_levels_remembered() {
        let s = Store::open_in_memory().await.unwrap();
        let sub = super::NotifySubscription {
            id: "nsub_1".into(),
            owner: "tok_1".into(),
            owner_name: "me".into(),
            tenant: "acme".into(),
            workspace_id: None,
            workspace: None,
            kinds: vec![],
            channel: "webhook".into(),
            url_shown: "http://x/…".into(),
            url_sealed: (vec![1], vec![2]),
            secret_sealed: (vec![3], vec![4]),
            created_at: berth_domain::Timestamp::now(),
        };
        s.insert_notify_subscription(&sub).await.unwrap();
        for e in 1..=5 {
            s.queue_notify_delivery("nsub_1", e, "test", 3, true)
                .await
                .unwrap();
        }
        let all = s.notify_deliveries("nsub_1", 10).await.unwrap();
        let states: Vec<&str> = all.iter().map(|(d, _)| d.state.as_str()).collect();
        assert_eq!(
            states,
            ["pending", "pending", "pending", "dropped", "dropped"]
        );
        assert_eq!(
            s.notified_budget_level("tenant", "acme", "p1")
                .await
                .unwrap(),
            0
        );
        s.set_budget_level("tenant", "acme", "p1", 1).await.unwrap();
        assert_eq!(
            s.notified_budget_level("tenant", "acme", "p1")
                .await
                .unwrap(),
            1
        );
        s.set_budget_level("tenant", "acme", "p2", 0).await.unwrap();
        assert_eq!(
            s.notified_budget_level("tenant", "acme", "p1")
                .await
                .unwrap(),
            0
        );
        assert!(s.remove_notify_subscription("nsub_1").await.unwrap());
        assert!(s.notify_deliveries("nsub_1", 10).await.unwrap().is_empty());
    }
}
