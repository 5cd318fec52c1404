//! Tasks and their append-only event log.
//!
//! Events arrive from the workspace daemon with their per-task sequence numbers. They are stored
//! in one transaction together with what they change on the task row (state, usage, last
//! message, session id), and only a contiguous continuation is accepted: a replayed event is
//! skipped, a gap is an error. So a reconnecting reader can never create duplicates or holes.

use berth_domain::{Agent, EventKind, TaskEvent, TaskState, WorkspaceId};
use sqlx::Row;

use crate::{now, Result, Store, StoreError};

#[derive(Debug, Clone)]
pub struct NewTask {
    pub id: String,
    pub workspace_id: WorkspaceId,
    pub workspace: String,
    pub agent: Agent,
    pub model: Option<String>,
    pub dir: String,
    pub worktree: Option<String>,
    pub prompt: String,
    pub virtual_key_hash: String,
}

#[derive(Debug, Clone)]
pub struct Task {
    pub id: String,
    pub workspace_id: WorkspaceId,
    pub workspace: String,
    pub agent: Agent,
    pub state: TaskState,
    pub reason: Option<String>,
    pub model: Option<String>,
    pub dir: String,
    pub worktree: Option<String>,
    pub prompt: String,
    pub last_seq: u64,
    pub input_tokens: u64,
    pub output_tokens: u64,
    pub cached_tokens: u64,
    pub cost_usd: Option<f64>,
    pub last_message: Option<String>,
    pub agent_session_id: Option<String>,
    pub created_at: String,
    pub updated_at: String,
}

const TASK_COLUMNS: &str =
    "id, workspace_id, workspace, agent, state, reason, model, dir, worktree, \
    prompt, last_seq, input_tokens, output_tokens, cached_tokens, cost_usd, last_message, \
    agent_session_id, created_at, updated_at";

fn task_from_row(r: &sqlx::sqlite::SqliteRow) -> Result<Task> {
    let agent: String = r.get("agent");
    let state: String = r.get("state");
    Ok(Task {
        id: r.get("id"),
        workspace_id: WorkspaceId::from_stored(r.get("workspace_id")),
        workspace: r.get("workspace"),
        agent: Agent::parse(&agent)
            .ok_or_else(|| StoreError::Corrupt(format!("unknown agent {agent:?}")))?,
        state: TaskState::parse(&state)
            .ok_or_else(|| StoreError::Corrupt(format!("unknown task state {state:?}")))?,
        reason: r.get("reason"),
        model: r.get("model"),
        dir: r.get("dir"),
        worktree: r.get("worktree"),
        prompt: r.get("prompt"),
        last_seq: r.get::<i64, _>("last_seq").max(0) as u64,
        input_tokens: r.get::<i64, _>("input_tokens").max(0) as u64,
        output_tokens: r.get::<i64, _>("output_tokens").max(0) as u64,
        cached_tokens: r.get::<i64, _>("cached_tokens").max(0) as u64,
        cost_usd: r.get("cost_usd"),
        last_message: r.get("last_message"),
        agent_session_id: r.get("agent_session_id"),
        created_at: r.get("created_at"),
        updated_at: r.get("updated_at"),
    })
}

impl Store {
    pub async fn insert_task(&self, t: &NewTask) -> Result<Task> {
        let at = now();
        sqlx::query(
            "INSERT INTO tasks (id, workspace_id, workspace, agent, state, model, dir, worktree, \
             prompt, virtual_key_hash, created_at, updated_at) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
        )
        .bind(&t.id)
        .bind(t.workspace_id.as_str())
        .bind(&t.workspace)
        .bind(t.agent.as_str())
        .bind(TaskState::Queued.as_str())
        .bind(&t.model)
        .bind(&t.dir)
        .bind(&t.worktree)
        .bind(&t.prompt)
        .bind(&t.virtual_key_hash)
        .bind(&at)
        .bind(&at)
        .execute(&self.pool)
        .await?;
        self.task(&t.id).await
    }

    pub async fn task(&self, id: &str) -> Result<Task> {
        self.find_task(id)
            .await?
            .ok_or_else(|| StoreError::NotFound(format!("task {id}")))
    }

    pub async fn find_task(&self, id: &str) -> Result<Option<Task>> {
        let sql = format!("SELECT {TASK_COLUMNS} FROM tasks WHERE id = ?");
        let row = sqlx::query(&sql)
            .bind(id)
            .fetch_optional(&self.pool)
            .await?;
        row.map(|r| task_from_row(&r)).transpose()
    }

    /// The task a virtual key belongs to.
    pub async fn find_task_by_key_hash(&self, hash: &str) -> Result<Option<Task>> {
        let sql = format!("SELECT {TASK_COLUMNS} FROM tasks WHERE virtual_key_hash = ?");
        let row = sqlx::query(&sql)
            .bind(hash)
            .fetch_optional(&self.pool)
            .await?;
        row.map(|r| task_from_row(&r)).transpose()
    }

    /// Newest first, optionally filtered.
    pub async fn list_tasks(
        &self,
        workspace_id: Option<&WorkspaceId>,
        state: Option<TaskState>,
    ) -> Result<Vec<Task>> {
        let sql = format!(
            "SELECT {TASK_COLUMNS} FROM tasks WHERE (?1 IS NULL OR workspace_id = ?1) \
             AND (?2 IS NULL OR state = ?2) ORDER BY id DESC"
        );
        let rows = sqlx::query(&sql)
            .bind(workspace_id.map(|w| w.as_str().to_owned()))
            .bind(state.map(|s| s.as_str()))
            .fetch_all(&self.pool)
            .await?;
        rows.iter().map(task_from_row).collect()
    }

    /// Tasks whose current turn is not over (the server follows their events).
    pub async fn active_tasks(&self) -> Result<Vec<Task>> {
        let sql = format!(
            "SELECT {TASK_COLUMNS} FROM tasks WHERE state IN ('queued', 'starting', 'running', 'waiting') \
             ORDER BY id"
        );
        let rows = sqlx::query(&sql).fetch_all(&self.pool).await?;
        rows.iter().map(task_from_row).collect()
    }

    /// Appends events that continue the task's log. Events with `seq <= last_seq` were stored
    /// before and are skipped; a gap is refused. Returns the stored (new) events.
    pub async fn append_task_events(
        &self,
        id: &str,
        events: &[TaskEvent],
    ) -> Result<Vec<TaskEvent>> {
        let mut tx = self.pool.begin().await?;
        // Write first, so the transaction holds SQLite's write lock before it reads (like
        // BEGIN IMMEDIATE): a read-then-write transaction can fail with "database is locked" when
        // another writer commits in between, which busy_timeout cannot wait out.
        sqlx::query("UPDATE tasks SET updated_at = updated_at WHERE id = ?")
            .bind(id)
            .execute(&mut *tx)
            .await?;
        let row = sqlx::query("SELECT last_seq FROM tasks WHERE id = ?")
            .bind(id)
            .fetch_optional(&mut *tx)
            .await?
            .ok_or_else(|| StoreError::NotFound(format!("task {id}")))?;
        let mut last = row.get::<i64, _>(0).max(0) as u64;
        let mut stored = Vec::new();
        for e in events {
            if e.seq <= last {
                continue;
            }
            if e.seq != last + 1 {
                return Err(StoreError::Conflict(format!(
                    "event {} of task {id} (expected {})",
                    e.seq,
                    last + 1
                )));
            }
            let body = serde_json::to_string(e).map_err(|e| StoreError::Corrupt(e.to_string()))?;
            sqlx::query("INSERT INTO task_events (task_id, seq, body) VALUES (?, ?, ?)")
                .bind(id)
                .bind(e.seq as i64)
                .bind(body)
                .execute(&mut *tx)
                .await?;
            apply_to_task(&mut tx, id, e).await?;
            last = e.seq;
            stored.push(e.clone());
        }
        if !stored.is_empty() {
            sqlx::query("UPDATE tasks SET last_seq = ?, updated_at = ? WHERE id = ?")
                .bind(last as i64)
                .bind(now())
                .bind(id)
                .execute(&mut *tx)
                .await?;
        }
        tx.commit().await?;
        Ok(stored)
    }

    /// Stored events with `seq > after`, ascending, at most `limit`.
    pub async fn task_events(&self, id: &str, after: u64, limit: u64) -> Result<Vec<TaskEvent>> {
        let rows = sqlx::query(
            "SELECT body FROM task_events WHERE task_id = ? AND seq > ? ORDER BY seq LIMIT ?",
        )
        .bind(id)
        .bind(after as i64)
        .bind(limit.min(i64::MAX as u64) as i64)
        .fetch_all(&self.pool)
        .await?;
        rows.iter()
            .map(|r| {
                serde_json::from_str(r.get::<&str, _>(0))
                    .map_err(|e| StoreError::Corrupt(e.to_string()))
            })
            .collect()
    }

    /// Replaces the task's virtual key (a task continued in a restarted workspace gets a new one:
    /// the old key lived only in the old daemon's memory).
    pub async fn set_task_key_hash(&self, id: &str, hash: &str) -> Result<()> {
        sqlx::query("UPDATE tasks SET virtual_key_hash = ?, updated_at = ? WHERE id = ?")
            .bind(hash)
            .bind(now())
            .bind(id)
            .execute(&self.pool)
            .await?;
        Ok(())
    }

    /// Sets the state directly (for what happens outside the daemon's log, e.g. a failure to
    /// start). Prefer appending a `status` event when the log continues.
    pub async fn set_task_state(
        &self,
        id: &str,
        state: TaskState,
        reason: Option<&str>,
    ) -> Result<Task> {
        sqlx::query(
            "UPDATE tasks SET state = ?, reason = COALESCE(?, reason), updated_at = ? WHERE id = ?",
        )
        .bind(state.as_str())
        .bind(reason)
        .bind(now())
        .bind(id)
        .execute(&self.pool)
        .await?;
        self.task(id).await
    }
}

async fn apply_to_task(
    tx: &mut sqlx::Transaction<'_, sqlx::Sqlite>,
    id: &str,
    e: &TaskEvent,
) -> Result<()> {
    match &e.kind {
        EventKind::Status { state, reason } => {
            sqlx::query("UPDATE tasks SET state = ?, reason = ? WHERE id = ?")
                .bind(state.as_str())
                .bind(reason)
                .bind(id)
                .execute(&mut **tx)
                .await?;
        }
        EventKind::Usage {
            input_tokens,
            output_tokens,
            cached_input_tokens,
            cost_usd,
        } => {
            sqlx::query(
                "UPDATE tasks SET input_tokens = input_tokens + ?, output_tokens = output_tokens + ?, \
                 cached_tokens = cached_tokens + ?, \
                 cost_usd = CASE WHEN ? IS NULL THEN cost_usd ELSE COALESCE(cost_usd, 0) + ? END \
                 WHERE id = ?",
            )
            .bind(*input_tokens as i64)
            .bind(*output_tokens as i64)
            .bind(*cached_input_tokens as i64)
            .bind(cost_usd)
            .bind(cost_usd)
            .bind(id)
            .execute(&mut **tx)
            .await?;
        }
        EventKind::Message { text } => {
            sqlx::query("UPDATE tasks SET last_message = ? WHERE id = ?")
                .bind(text)
                .bind(id)
                .execute(&mut **tx)
                .await?;
        }
        EventKind::Session {
            agent_session_id, ..
        } => {
            sqlx::query("UPDATE tasks SET agent_session_id = ? WHERE id = ?")
                .bind(agent_session_id)
                .bind(id)
                .execute(&mut **tx)
                .await?;
        }
        _ => {}
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ev(seq: u64, kind: EventKind) -> TaskEvent {
        TaskEvent {
            seq,
            at: "2026-11-23T00:00:00Z".into(),
            kind,
        }
    }

    async fn setup() -> (Store, Task) {
        let s = Store::open_in_memory().await.unwrap();
        let t = s
            .insert_task(&NewTask {
                id: "tk_1".into(),
                workspace_id: WorkspaceId::generate(),
                workspace: "acme/web".into(),
                agent: Agent::Claude,
                model: None,
                dir: "/home/agent".into(),
                worktree: None,
                prompt: "hi".into(),
                virtual_key_hash: "h1".into(),
            })
            .await
            .unwrap();
        (s, t)
    }

    #[tokio::test]
    async fn events_are_contiguous_and_idempotent() {
        let (s, t) = setup().await;
        assert_eq!(t.state, TaskState::Queued);
        let batch = vec![
            ev(
                1,
                EventKind::Status {
                    state: TaskState::Running,
                    reason: None,
                },
            ),
            ev(
                2,
                EventKind::Session {
                    agent_session_id: "sess".into(),
                    model: None,
                },
            ),
            ev(
                3,
                EventKind::Message {
                    text: "DONE".into(),
                },
            ),
            ev(
                4,
                EventKind::Usage {
                    input_tokens: 20,
                    output_tokens: 10,
                    cached_input_tokens: 1,
                    cost_usd: Some(0.5),
                },
            ),
        ];
        assert_eq!(
            s.append_task_events("tk_1", &batch[..2])
                .await
                .unwrap()
                .len(),
            2
        );
        // A replay overlapping what is stored adds only the new part.
        let stored = s.append_task_events("tk_1", &batch).await.unwrap();
        assert_eq!(stored.iter().map(|e| e.seq).collect::<Vec<_>>(), [3, 4]);
        // A gap is refused and changes nothing.
        let gap = [ev(6, EventKind::Message { text: "x".into() })];
        assert!(matches!(
            s.append_task_events("tk_1", &gap).await,
            Err(StoreError::Conflict(_))
        ));
        let t = s.task("tk_1").await.unwrap();
        assert_eq!(t.last_seq, 4);
        assert_eq!(t.state, TaskState::Running);
        assert_eq!(t.agent_session_id.as_deref(), Some("sess"));
        assert_eq!(t.last_message.as_deref(), Some("DONE"));
        assert_eq!(
            (t.input_tokens, t.output_tokens, t.cached_tokens),
            (20, 10, 1)
        );
        assert_eq!(t.cost_usd, Some(0.5));
        let all = s.task_events("tk_1", 0, 100).await.unwrap();
        assert_eq!(all, batch);
        assert_eq!(
            s.task_events("tk_1", 2, 1).await.unwrap(),
            batch[2..3].to_vec()
        );
        assert_eq!(
            s.find_task_by_key_hash("h1").await.unwrap().unwrap().id,
            "tk_1"
        );
        assert_eq!(s.active_tasks().await.unwrap().len(), 1);
        s.append_task_events(
            "tk_1",
            &[ev(
                5,
                EventKind::Status {
                    state: TaskState::Completed,
                    reason: None,
                },
            )],
        )
        .await
        .unwrap();
        assert!(s.active_tasks().await.unwrap().is_empty());
        assert_eq!(
            s.list_tasks(None, Some(TaskState::Completed))
                .await
                .unwrap()
                .len(),
            1
        );
    }
}
