//! Approval policies (per workspace, per task) and the agents' permission requests.
//!
//! A request row is written in the same transaction as its `approval_request` event
//! ([`record_event`], called while events are appended) and closed by its `approval_resolved`
//! event, by the server's record of a decision ([`Store::record_decision`], which names who
//! decided), or as `expired` when the task's turn ends with it still open. Everything in a row
//! came from a workspace daemon: fields are capped before they are stored, and a task holds at
//! most [`MAX_OPEN_PER_TASK`] open requests.

use berth_domain::{
    ApprovalDecision, ApprovalPolicy, ApprovalRequest, EventKind, TaskEvent, TaskId, Timestamp,
    WorkspaceId,
};
use sqlx::Row;

use crate::{now, Result, Store, StoreError};

/// Most open requests stored per task; a daemon announcing more is not listened to.
pub const MAX_OPEN_PER_TASK: i64 = 64;
/// Longest `decided_by` or `reason` stored.
const MAX_TEXT: usize = 4096;

/// One permission request of a task's agent.
#[derive(Debug, Clone)]
pub struct Approval {
    pub task_id: TaskId,
    /// The event that carried the request.
    pub seq: u64,
    pub request: ApprovalRequest,
    /// `pending`, `approved`, `denied` or `expired`.
    pub state: String,
    pub decided_by: Option<String>,
    pub reason: Option<String>,
    pub created_at: Timestamp,
    pub decided_at: Option<Timestamp>,
}

/// A pending request with what the inbox shows of its task.
#[derive(Debug, Clone)]
pub struct InboxItem {
    pub approval: Approval,
    pub workspace: String,
    pub agent: String,
    pub prompt: String,
}

fn approval_from_row(r: &sqlx::sqlite::SqliteRow) -> Result<Approval> {
    let request: String = r.try_get("request")?;
    Ok(Approval {
        task_id: TaskId::from_stored(r.try_get("task_id")?),
        seq: r.try_get::<i64, _>("seq")?.max(0) as u64,
        request: serde_json::from_str(&request)
            .map_err(|e| StoreError::Corrupt(format!("approval request: {e}")))?,
        state: r.try_get("state")?,
        decided_by: r.try_get("decided_by")?,
        reason: r.try_get("reason")?,
        created_at: crate::try_ts(r, "created_at")?,
        decided_at: crate::try_ts_opt(r, "decided_at")?,
    })
}

fn capped(s: Option<&str>) -> Option<String> {
    s.map(|s| {
        let mut s = s.to_owned();
        berth_domain::approval::cut(&mut s, MAX_TEXT);
        s
    })
}

/// What an appended event means for the task's requests (inside the append's transaction).
pub(crate) async fn record_event(
    tx: &mut sqlx::Transaction<'_, sqlx::Sqlite>,
    task: &TaskId,
    e: &TaskEvent,
) -> Result<()> {
    let task = task.as_str();
    match &e.kind {
        EventKind::ApprovalRequest { request } => {
            let open: i64 = sqlx::query_scalar(
                "SELECT COUNT(*) FROM task_approvals WHERE task_id = ? AND state = 'pending'",
            )
            .bind(task)
            .fetch_one(&mut **tx)
            .await?;
            if open >= MAX_OPEN_PER_TASK {
                tracing::warn!(
                    task,
                    "too many open approval requests; not recording another"
                );
                return Ok(());
            }
            let request = request.clone().capped();
            let body =
                serde_json::to_string(&request).map_err(|e| StoreError::Corrupt(e.to_string()))?;
            sqlx::query(
                "INSERT OR IGNORE INTO task_approvals (task_id, id, seq, request, created_at) \
                 VALUES (?, ?, ?, ?, ?)",
            )
            .bind(task)
            .bind(&request.id)
            .bind(i64::try_from(e.seq).unwrap_or(i64::MAX))
            .bind(body)
            .bind(now())
            .execute(&mut **tx)
            .await?;
        }
        EventKind::ApprovalResolved {
            id,
            decision,
            reason,
            by,
        } => {
            sqlx::query(
                "UPDATE task_approvals SET state = ?, decided_by = ?, reason = ?, decided_at = ? \
                 WHERE task_id = ? AND id = ? AND state = 'pending'",
            )
            .bind(decision.as_str())
            .bind(capped(by.as_deref()))
            .bind(capped(reason.as_deref()))
            .bind(now())
            .bind(task)
            .bind(id)
            .execute(&mut **tx)
            .await?;
        }
        EventKind::Status { state, .. } if state.is_turn_over() => {
            expire_pending(tx, task).await?;
        }
        // An interrupted turn took its open requests with its agent; the task goes on.
        EventKind::TurnInterrupted { .. } => expire_pending(tx, task).await?,
        _ => {}
    }
    Ok(())
}

/// Closes every open request of the task as `expired`: its turn is over.
async fn expire_pending(tx: &mut sqlx::Transaction<'_, sqlx::Sqlite>, task: &str) -> Result<()> {
    sqlx::query(
        "UPDATE task_approvals SET state = 'expired', decided_at = ? \
         WHERE task_id = ? AND state = 'pending'",
    )
    .bind(now())
    .bind(task)
    .execute(&mut **tx)
    .await?;
    Ok(())
}

impl Store {
    /// The approval policy new tasks of a workspace get by default.
    pub async fn workspace_approval(&self, id: &WorkspaceId) -> Result<ApprovalPolicy> {
        let v: Option<String> = sqlx::query_scalar("SELECT approval FROM workspaces WHERE id = ?")
            .bind(id.as_str())
            .fetch_optional(&self.pool)
            .await?;
        let v = v.ok_or_else(|| StoreError::NotFound(format!("workspace {id}")))?;
        ApprovalPolicy::parse(&v)
            .ok_or_else(|| StoreError::Corrupt(format!("unknown approval policy {v:?}")))
    }

    pub async fn set_workspace_approval(
        &self,
        id: &WorkspaceId,
        policy: ApprovalPolicy,
    ) -> Result<()> {
        sqlx::query("UPDATE workspaces SET approval = ? WHERE id = ?")
            .bind(policy.as_str())
            .bind(id.as_str())
            .execute(&self.pool)
            .await?;
        Ok(())
    }

    /// A task's requests, oldest first (only the pending ones with `pending_only`).
    pub async fn task_approvals(&self, task: &TaskId, pending_only: bool) -> Result<Vec<Approval>> {
        let rows = sqlx::query(
            "SELECT * FROM task_approvals WHERE task_id = ? AND (? = 0 OR state = 'pending') \
             ORDER BY seq",
        )
        .bind(task.as_str())
        .bind(pending_only)
        .fetch_all(&self.pool)
        .await?;
        rows.iter().map(approval_from_row).collect()
    }

    pub async fn task_approval(&self, task: &TaskId, id: &str) -> Result<Option<Approval>> {
        let row = sqlx::query("SELECT * FROM task_approvals WHERE task_id = ? AND id = ?")
            .bind(task.as_str())
            .bind(id)
            .fetch_optional(&self.pool)
            .await?;
        row.map(|r| approval_from_row(&r)).transpose()
    }

    /// Every pending request of waiting tasks, of one tenant's workspaces (`None`: all), oldest
    /// first, at most `limit`.
    pub async fn inbox(&self, tenant: Option<&str>, limit: u32) -> Result<Vec<InboxItem>> {
        let rows = sqlx::query(
            "SELECT a.*, k.workspace AS ws, k.agent AS agent, k.prompt AS prompt \
             FROM task_approvals a JOIN tasks k ON k.id = a.task_id \
             LEFT JOIN workspaces w ON w.id = k.workspace_id \
             LEFT JOIN tenants t ON t.id = w.tenant_id \
             WHERE a.state = 'pending' AND k.state = 'waiting' AND (?1 IS NULL OR t.name = ?1) \
             ORDER BY a.created_at, a.task_id, a.seq LIMIT ?2",
        )
        .bind(tenant)
        .bind(i64::from(limit))
        .fetch_all(&self.pool)
        .await?;
        rows.iter()
            .map(|r| {
                Ok(InboxItem {
                    approval: approval_from_row(r)?,
                    workspace: r.try_get("ws")?,
                    agent: r.try_get("agent")?,
                    prompt: r.try_get("prompt")?,
                })
            })
            .collect()
    }

    /// The server's record of a decision (who decided, and why), over what the daemon said.
    pub async fn record_decision(
        &self,
        task: &TaskId,
        id: &str,
        decision: ApprovalDecision,
        by: &str,
        reason: Option<&str>,
    ) -> Result<()> {
        sqlx::query(
            "UPDATE task_approvals SET state = ?, decided_by = ?, reason = ?, \
             decided_at = COALESCE(decided_at, ?) WHERE task_id = ? AND id = ?",
        )
        .bind(decision.as_str())
        .bind(capped(Some(by)))
        .bind(capped(reason))
        .bind(now())
        .bind(task.as_str())
        .bind(id)
        .execute(&self.pool)
        .await?;
        Ok(())
    }
}
