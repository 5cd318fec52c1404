//! Tasks and their append-only event log.
//!
//! Events arrive from the workspace daemon with their per-task sequence numbers. They are stored
//! in one transaction together with what they change on the task row (state, usage, last
//! message, session id), and only a contiguous continuation is accepted: a replayed event is
//! skipped, a gap is an error. So a reconnecting reader can never create duplicates or holes.

use berth_domain::{
    Agent, ApprovalPolicy, EventKind, TaskEvent, TaskId, TaskState, Timestamp, WorkspaceId,
};
use sqlx::Row;

use crate::{now, Result, Store, StoreError};

#[derive(Debug, Clone)]
pub struct NewTask {
    pub id: TaskId,
    pub workspace_id: WorkspaceId,
    pub workspace: String,
    pub agent: Agent,
    pub model: Option<String>,
    pub dir: String,
    pub worktree: Option<String>,
    pub prompt: String,
    pub virtual_key_hash: String,
    pub approval: ApprovalPolicy,
}

#[derive(Debug, Clone)]
pub struct Task {
    pub id: TaskId,
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
    pub created_at: Timestamp,
    pub updated_at: Timestamp,
    pub approval: ApprovalPolicy,
}

const TASK_COLUMNS: &str =
    "id, workspace_id, workspace, agent, state, reason, model, dir, worktree, \
    prompt, last_seq, input_tokens, output_tokens, cached_tokens, cost_usd, last_message, \
    agent_session_id, created_at, updated_at, approval";

/// Largest count stored in an INTEGER column (SQLite integers are signed 64-bit): token counts
/// from a daemon are clamped to it, and sums saturate there instead of overflowing into REAL.
pub const MAX_COUNT: u64 = i64::MAX as u64;

/// Largest cost, in USD, one usage report may add and a task may accumulate. Far beyond any real
/// bill; keeps sums finite.
pub const MAX_COST_USD: f64 = 1e12;

/// Longest `last_message` kept on the task row (the full text stays in the event log).
pub const MAX_LAST_MESSAGE: usize = 64 * 1024;

/// A column, or a clear error naming it (never a panic on a type mismatch).
fn col<'r, T>(r: &'r sqlx::sqlite::SqliteRow, name: &str) -> Result<T>
where
    T: sqlx::Decode<'r, sqlx::Sqlite> + sqlx::Type<sqlx::Sqlite>,
{
    r.try_get(name)
        .map_err(|e| StoreError::Corrupt(format!("task column {name}: {e}")))
}

/// A non-negative count. A REAL (what an overflowing sum became before sums saturated) or a
/// negative value is clamped into `0..=MAX_COUNT` rather than refused, so such a row still loads.
fn count(r: &sqlx::sqlite::SqliteRow, name: &str) -> Result<u64> {
    if let Ok(v) = r.try_get::<i64, _>(name) {
        return Ok(v.max(0) as u64);
    }
    let v: f64 = col(r, name)?;
    Ok(if v.is_nan() || v <= 0.0 {
        0
    } else if v >= MAX_COUNT as f64 {
        MAX_COUNT
    } else {
        v as u64
    })
}

/// A cost as reported: finite and within `0..=MAX_COST_USD`, else nothing.
fn sane_cost(c: Option<f64>) -> Option<f64> {
    c.filter(|c| c.is_finite())
        .map(|c| c.clamp(0.0, MAX_COST_USD))
}

fn task_from_row(r: &sqlx::sqlite::SqliteRow) -> Result<Task> {
    let agent: String = col(r, "agent")?;
    let state: String = col(r, "state")?;
    Ok(Task {
        id: TaskId::from_stored(col(r, "id")?),
        workspace_id: WorkspaceId::from_stored(col(r, "workspace_id")?),
        workspace: col(r, "workspace")?,
        agent: Agent::parse(&agent)
            .ok_or_else(|| StoreError::Corrupt(format!("unknown agent {agent:?}")))?,
        state: TaskState::parse(&state)
            .ok_or_else(|| StoreError::Corrupt(format!("unknown task state {state:?}")))?,
        reason: col(r, "reason")?,
        model: col(r, "model")?,
        dir: col(r, "dir")?,
        worktree: col(r, "worktree")?,
        prompt: col(r, "prompt")?,
        last_seq: count(r, "last_seq")?,
        input_tokens: count(r, "input_tokens")?,
        output_tokens: count(r, "output_tokens")?,
        cached_tokens: count(r, "cached_tokens")?,
        cost_usd: sane_cost(col(r, "cost_usd")?),
        last_message: col(r, "last_message")?,
        agent_session_id: col(r, "agent_session_id")?,
        created_at: Timestamp::from_stored(col::<String>(r, "created_at")?),
        updated_at: Timestamp::from_stored(col::<String>(r, "updated_at")?),
        approval: {
            let a: String = col(r, "approval")?;
            ApprovalPolicy::parse(&a)
                .ok_or_else(|| StoreError::Corrupt(format!("unknown approval policy {a:?}")))?
        },
    })
}

impl Store {
    pub async fn insert_task(&self, t: &NewTask) -> Result<Task> {
        let at = now();
        sqlx::query(
            "INSERT INTO tasks (id, workspace_id, workspace, agent, state, model, dir, worktree, \
             prompt, virtual_key_hash, created_at, updated_at, key_live, approval) \
             VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, 1, ?)",
        )
        .bind(t.id.as_str())
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
        .bind(t.approval.as_str())
        .execute(&self.pool)
        .await?;
        self.task(&t.id).await
    }

    pub async fn task(&self, id: &TaskId) -> Result<Task> {
        self.find_task(id)
            .await?
            .ok_or_else(|| StoreError::NotFound(format!("task {id}")))
    }

    pub async fn find_task(&self, id: &TaskId) -> Result<Option<Task>> {
        let sql = format!("SELECT {TASK_COLUMNS} FROM tasks WHERE id = ?");
        let row = sqlx::query(&sql)
            .bind(id.as_str())
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

    /// The task a virtual key belongs to, only while the server has a turn of it in flight
    /// (see [`Store::set_task_key_live`]).
    pub async fn find_live_task_by_key_hash(&self, hash: &str) -> Result<Option<Task>> {
        let sql =
            format!("SELECT {TASK_COLUMNS} FROM tasks WHERE virtual_key_hash = ? AND key_live = 1");
        let row = sqlx::query(&sql)
            .bind(hash)
            .fetch_optional(&self.pool)
            .await?;
        row.map(|r| task_from_row(&r)).transpose()
    }

    /// Turns a task's virtual key on (the server starts a turn) or off (the turn is over, or
    /// the server stops it). Never turns on the key of a final task.
    pub async fn set_task_key_live(&self, id: &TaskId, live: bool) -> Result<()> {
        sqlx::query(
            "UPDATE tasks SET key_live = ? WHERE id = ? AND (? = 0 OR state NOT IN ('failed', 'cancelled'))",
        )
        .bind(live)
        .bind(id.as_str())
        .bind(live)
        .execute(&self.pool)
        .await?;
        Ok(())
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
        id: &TaskId,
        events: &[TaskEvent],
    ) -> Result<Vec<TaskEvent>> {
        let mut tx = self.pool.begin().await?;
        // Write first, so the transaction holds SQLite's write lock before it reads (like
        // BEGIN IMMEDIATE): a read-then-write transaction can fail with "database is locked" when
        // another writer commits in between, which busy_timeout cannot wait out.
        sqlx::query("UPDATE tasks SET updated_at = updated_at WHERE id = ?")
            .bind(id.as_str())
            .execute(&mut *tx)
            .await?;
        let row = sqlx::query("SELECT last_seq FROM tasks WHERE id = ?")
            .bind(id.as_str())
            .fetch_optional(&mut *tx)
            .await?
            .ok_or_else(|| StoreError::NotFound(format!("task {id}")))?;
        let mut last = count(&row, "last_seq")?;
        let mut stored = Vec::new();
        for e in events {
            if e.seq <= last {
                continue;
            }
            if e.seq > MAX_COUNT || Some(e.seq) != last.checked_add(1) {
                return Err(StoreError::Conflict(format!(
                    "event {} of task {id} (expected {})",
                    e.seq,
                    last + 1
                )));
            }
            let body = serde_json::to_string(e).map_err(|e| StoreError::Corrupt(e.to_string()))?;
            sqlx::query("INSERT INTO task_events (task_id, seq, body) VALUES (?, ?, ?)")
                .bind(id.as_str())
                .bind(e.seq as i64)
                .bind(body)
                .execute(&mut *tx)
                .await?;
            apply_to_task(&mut tx, id, e).await?;
            crate::approvals::record_event(&mut tx, id, e).await?;
            last = e.seq;
            stored.push(e.clone());
        }
        if !stored.is_empty() {
            sqlx::query("UPDATE tasks SET last_seq = ?, updated_at = ? WHERE id = ?")
                .bind(last as i64)
                .bind(now())
                .bind(id.as_str())
                .execute(&mut *tx)
                .await?;
        }
        tx.commit().await?;
        Ok(stored)
    }

    /// Stored events with `seq > after`, ascending, at most `limit`.
    pub async fn task_events(&self, id: &TaskId, after: u64, limit: u64) -> Result<Vec<TaskEvent>> {
        let rows = sqlx::query(
            "SELECT body FROM task_events WHERE task_id = ? AND seq > ? ORDER BY seq LIMIT ?",
        )
        .bind(id.as_str())
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
    pub async fn set_task_key_hash(&self, id: &TaskId, hash: &str) -> Result<()> {
        sqlx::query("UPDATE tasks SET virtual_key_hash = ?, updated_at = ? WHERE id = ?")
            .bind(hash)
            .bind(now())
            .bind(id.as_str())
            .execute(&self.pool)
            .await?;
        Ok(())
    }

    /// Sets the state directly (for what happens outside the daemon's log, e.g. a failure to
    /// start). Prefer appending a `status` event when the log continues.
    pub async fn set_task_state(
        &self,
        id: &TaskId,
        state: TaskState,
        reason: Option<&str>,
    ) -> Result<Task> {
        sqlx::query(
            "UPDATE tasks SET state = ?, reason = COALESCE(?, reason), updated_at = ?, \
             key_live = CASE WHEN ? THEN 0 ELSE key_live END WHERE id = ?",
        )
        .bind(state.as_str())
        .bind(reason)
        .bind(now())
        .bind(state.is_turn_over())
        .bind(id.as_str())
        .execute(&self.pool)
        .await?;
        self.task(id).await
    }
}

async fn apply_to_task(
    tx: &mut sqlx::Transaction<'_, sqlx::Sqlite>,
    id: &TaskId,
    e: &TaskEvent,
) -> Result<()> {
    match &e.kind {
        EventKind::Status { state, reason } => {
            // The daemon's word goes through the state machine: a final task stays final, and a
            // status never turns a key on (only the server does, when it starts a turn).
            let current: String = sqlx::query_scalar("SELECT state FROM tasks WHERE id = ?")
                .bind(id.as_str())
                .fetch_one(&mut **tx)
                .await?;
            if !TaskState::parse(&current).is_some_and(|c| c.can_become(*state)) {
                tracing::warn!(task = %id, from = %current, to = %state, "ignored a status change the state machine forbids");
                return Ok(());
            }
            sqlx::query(
                "UPDATE tasks SET state = ?, reason = ?, \
                 key_live = CASE WHEN ? THEN 0 ELSE key_live END WHERE id = ?",
            )
            .bind(state.as_str())
            .bind(reason)
            .bind(state.is_turn_over())
            .bind(id.as_str())
            .execute(&mut **tx)
            .await?;
        }
        EventKind::Usage {
            input_tokens,
            output_tokens,
            cached_input_tokens,
            cost_usd,
        } => {
            add_usage(
                tx,
                id,
                [*input_tokens, *output_tokens, *cached_input_tokens],
                *cost_usd,
            )
            .await?
        }
        EventKind::Message { text } => {
            sqlx::query("UPDATE tasks SET last_message = ? WHERE id = ?")
                .bind(truncate(text, MAX_LAST_MESSAGE))
                .bind(id.as_str())
                .execute(&mut **tx)
                .await?;
        }
        EventKind::Session {
            agent_session_id, ..
        } => {
            sqlx::query("UPDATE tasks SET agent_session_id = ? WHERE id = ?")
                .bind(agent_session_id)
                .bind(id.as_str())
                .execute(&mut **tx)
                .await?;
        }
        _ => {}
    }
    Ok(())
}

/// Adds a usage report to the task's totals with saturating arithmetic in Rust (an SQL `+` that
/// overflows turns the column into REAL): counts stop at [`MAX_COUNT`], cost at [`MAX_COST_USD`],
/// and a cost that is not a finite number is ignored.
async fn add_usage(
    tx: &mut sqlx::Transaction<'_, sqlx::Sqlite>,
    id: &TaskId,
    tokens: [u64; 3],
    cost_usd: Option<f64>,
) -> Result<()> {
    let row = sqlx::query(
        "SELECT input_tokens, output_tokens, cached_tokens, cost_usd FROM tasks WHERE id = ?",
    )
    .bind(id.as_str())
    .fetch_one(&mut **tx)
    .await?;
    let mut totals = [0i64; 3];
    for (i, name) in ["input_tokens", "output_tokens", "cached_tokens"]
        .into_iter()
        .enumerate()
    {
        let sum = count(&row, name)?.saturating_add(tokens[i]).min(MAX_COUNT);
        totals[i] = i64::try_from(sum).unwrap_or(i64::MAX);
    }
    let stored = sane_cost(col(&row, "cost_usd")?);
    let cost = match sane_cost(cost_usd) {
        Some(c) => Some((stored.unwrap_or(0.0) + c).min(MAX_COST_USD)),
        None => stored,
    };
    sqlx::query(
        "UPDATE tasks SET input_tokens = ?, output_tokens = ?, cached_tokens = ?, cost_usd = ? \
         WHERE id = ?",
    )
    .bind(totals[0])
    .bind(totals[1])
    .bind(totals[2])
    .bind(cost)
    .bind(id.as_str())
    .execute(&mut **tx)
    .await?;
    Ok(())
}

/// At most `max` bytes of `s`, cut at a character boundary.
fn truncate(s: &str, max: usize) -> &str {
    if s.len() <= max {
        return s;
    }
    let mut end = max;
    while !s.is_char_boundary(end) {
        end -= 1;
    }
    &s[..end]
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tk(s: &str) -> TaskId {
        TaskId::from_stored(s.into())
    }

    fn ev(seq: u64, kind: EventKind) -> TaskEvent {
        TaskEvent {
            seq,
            at: crate::test_ts("2026-11-23T00:00:00Z"),
            kind,
        }
    }

    async fn setup() -> (Store, Task) {
        let s = Store::open_in_memory().await.unwrap();
        let t = s
            .insert_task(&NewTask {
                id: tk("tk_1"),
                workspace_id: WorkspaceId::generate(),
                workspace: "acme/web".into(),
                agent: Agent::Claude,
                model: None,
                dir: "/home/agent".into(),
                worktree: None,
                prompt: "hi".into(),
                virtual_key_hash: "h1".into(),
                approval: Default::default(),
            })
            .await
            .unwrap();
        (s, t)
    }

    #[tokio::test]
    async fn an_interrupted_turn_expires_its_open_requests_and_the_task_goes_on() {
        let (s, t) = setup().await;
        let request = berth_domain::ApprovalRequest {
            id: "r1".into(),
            kind: berth_domain::ApprovalKind::Command,
            tool: "Bash".into(),
            summary: "run sleep".into(),
            command: Some("sleep 60".into()),
            path: None,
            diff: None,
            input: serde_json::Value::Null,
            reason: None,
            risks: Vec::new(),
        };
        let running = |seq| {
            ev(
                seq,
                EventKind::Status {
                    state: TaskState::Running,
                    reason: None,
                },
            )
        };
        s.append_task_events(
            &t.id,
            &[
                ev(
                    1,
                    EventKind::Status {
                        state: TaskState::Starting,
                        reason: None,
                    },
                ),
                running(2),
                ev(3, EventKind::ApprovalRequest { request }),
                ev(
                    4,
                    EventKind::Status {
                        state: TaskState::Waiting,
                        reason: None,
                    },
                ),
            ],
        )
        .await
        .unwrap();
        assert_eq!(s.task_approvals(&t.id, true).await.unwrap().len(), 1);
        s.append_task_events(
            &t.id,
            &[
                ev(
                    5,
                    EventKind::TurnInterrupted {
                        by: Some("alice (member)".into()),
                        new_conversation: false,
                    },
                ),
                running(6),
                ev(
                    7,
                    EventKind::UserMessage {
                        text: "do X".into(),
                    },
                ),
            ],
        )
        .await
        .unwrap();
        assert!(s.task_approvals(&t.id, true).await.unwrap().is_empty());
        let all = s.task_approvals(&t.id, false).await.unwrap();
        assert_eq!(all[0].state, "expired");
        assert_eq!(s.task(&t.id).await.unwrap().state, TaskState::Running);
    }

    #[tokio::test]
    async fn events_are_contiguous_and_idempotent() {
        let (s, t) = setup().await;
        assert_eq!(t.state, TaskState::Queued);
        let batch = vec![
            ev(
                1,
                EventKind::Status {
                    state: TaskState::Starting,
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
            s.append_task_events(&tk("tk_1"), &batch[..2])
                .await
                .unwrap()
                .len(),
            2
        );
        // A replay overlapping what is stored adds only the new part.
        let stored = s.append_task_events(&tk("tk_1"), &batch).await.unwrap();
        assert_eq!(stored.iter().map(|e| e.seq).collect::<Vec<_>>(), [3, 4]);
        // A gap is refused and changes nothing.
        let gap = [ev(6, EventKind::Message { text: "x".into() })];
        assert!(matches!(
            s.append_task_events(&tk("tk_1"), &gap).await,
            Err(StoreError::Conflict(_))
        ));
        let t = s.task(&tk("tk_1")).await.unwrap();
        assert_eq!(t.last_seq, 4);
        assert_eq!(t.state, TaskState::Starting);
        assert_eq!(t.agent_session_id.as_deref(), Some("sess"));
        assert_eq!(t.last_message.as_deref(), Some("DONE"));
        assert_eq!(
            (t.input_tokens, t.output_tokens, t.cached_tokens),
            (20, 10, 1)
        );
        assert_eq!(t.cost_usd, Some(0.5));
        let all = s.task_events(&tk("tk_1"), 0, 100).await.unwrap();
        assert_eq!(all, batch);
        assert_eq!(
            s.task_events(&tk("tk_1"), 2, 1).await.unwrap(),
            batch[2..3].to_vec()
        );
        assert_eq!(
            s.find_task_by_key_hash("h1").await.unwrap().unwrap().id,
            tk("tk_1")
        );
        assert_eq!(s.active_tasks().await.unwrap().len(), 1);
        s.append_task_events(
            &tk("tk_1"),
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

    fn status(seq: u64, state: TaskState) -> TaskEvent {
        ev(
            seq,
            EventKind::Status {
                state,
                reason: None,
            },
        )
    }

    async fn live(s: &Store) -> bool {
        s.find_live_task_by_key_hash("h1").await.unwrap().is_some()
    }

    #[tokio::test]
    async fn keys_live_only_while_the_server_runs_a_turn() {
        let (s, _) = setup().await;
        assert!(live(&s).await, "the first turn starts with the task");
        s.append_task_events(&tk("tk_1"), &[status(1, TaskState::Starting)])
            .await
            .unwrap();
        s.append_task_events(&tk("tk_1"), &[status(2, TaskState::Running)])
            .await
            .unwrap();
        assert!(live(&s).await);
        s.append_task_events(&tk("tk_1"), &[status(3, TaskState::Completed)])
            .await
            .unwrap();
        assert!(!live(&s).await, "a completed turn ends the key");
        // The daemon claiming the task runs again does not revive the key.
        s.append_task_events(&tk("tk_1"), &[status(4, TaskState::Running)])
            .await
            .unwrap();
        assert_eq!(s.task(&tk("tk_1")).await.unwrap().state, TaskState::Running);
        assert!(!live(&s).await, "only the server turns a key on");
        // The server starts a follow-up turn: the key works again, until the turn is over.
        s.set_task_key_live(&tk("tk_1"), true).await.unwrap();
        assert!(live(&s).await);
        s.append_task_events(&tk("tk_1"), &[status(5, TaskState::Cancelled)])
            .await
            .unwrap();
        assert!(!live(&s).await);
        // Final is final: neither a status from the daemon nor the server revives the task.
        for (seq, st) in [(6, TaskState::Running), (7, TaskState::Completed)] {
            s.append_task_events(&tk("tk_1"), &[status(seq, st)])
                .await
                .unwrap();
            assert_eq!(
                s.task(&tk("tk_1")).await.unwrap().state,
                TaskState::Cancelled
            );
        }
        s.set_task_key_live(&tk("tk_1"), true).await.unwrap();
        assert!(!live(&s).await);
        // A server-set final state also ends the key.
        let (s, _) = setup().await;
        s.set_task_state(&tk("tk_1"), TaskState::Failed, Some("x"))
            .await
            .unwrap();
        assert!(!live(&s).await);
    }
}

#[cfg(test)]
mod hostile_tests {
    //! Values a fake workspace daemon may send. Without saturation, two usage reports of
    //! `i64::MAX` tokens overflow SQLite's `+` into REAL and reading the task panicked in
    //! `get::<i64>` (in `GET /tasks` and in `resume_all` at every start).
    use super::*;

    fn tk(s: &str) -> TaskId {
        TaskId::from_stored(s.into())
    }

    async fn setup() -> Store {
        let s = Store::open_in_memory().await.unwrap();
        s.insert_task(&NewTask {
            id: tk("tk_x"),
            workspace_id: WorkspaceId::generate(),
            workspace: "acme/web".into(),
            agent: Agent::Codex,
            model: None,
            dir: "/home/agent".into(),
            worktree: None,
            prompt: "hi".into(),
            virtual_key_hash: "hx".into(),
            approval: Default::default(),
        })
        .await
        .unwrap();
        s
    }

    fn usage(seq: u64, tokens: u64, cost: Option<f64>) -> TaskEvent {
        TaskEvent {
            seq,
            at: crate::test_ts("2026-11-23T00:00:00Z"),
            kind: EventKind::Usage {
                input_tokens: tokens,
                output_tokens: tokens,
                cached_input_tokens: tokens,
                cost_usd: cost,
            },
        }
    }

    #[tokio::test]
    async fn absurd_usage_saturates_and_rows_still_load() {
        let s = setup().await;
        let events = [
            usage(1, i64::MAX as u64, Some(f64::MAX)),
            usage(2, i64::MAX as u64, Some(f64::INFINITY)),
            usage(3, u64::MAX, Some(f64::NAN)),
            usage(4, u64::MAX, Some(-5.0)),
            usage(5, 1, Some(MAX_COST_USD)),
        ];
        assert_eq!(
            s.append_task_events(&tk("tk_x"), &events)
                .await
                .unwrap()
                .len(),
            5
        );
        let t = s.task(&tk("tk_x")).await.unwrap();
        assert_eq!(
            (t.input_tokens, t.output_tokens, t.cached_tokens),
            (MAX_COUNT, MAX_COUNT, MAX_COUNT)
        );
        assert_eq!(t.cost_usd, Some(MAX_COST_USD));
        assert_eq!(s.list_tasks(None, None).await.unwrap().len(), 1);
        assert_eq!(s.active_tasks().await.unwrap().len(), 1);
    }

    #[tokio::test]
    async fn a_row_already_holding_reals_loads_clamped() {
        let s = setup().await;
        // What an overflowing sum left behind before sums saturated.
        sqlx::query(
            "UPDATE tasks SET input_tokens = 1e30, output_tokens = -1e30, cached_tokens = 0.5, \
             cost_usd = 1e300 * 1e300 WHERE id = 'tk_x'",
        )
        .execute(&s.pool)
        .await
        .unwrap();
        let t = s.task(&tk("tk_x")).await.unwrap();
        assert_eq!(
            (t.input_tokens, t.output_tokens, t.cached_tokens),
            (MAX_COUNT, 0, 0)
        );
        assert_eq!(t.cost_usd, None);
        s.append_task_events(&tk("tk_x"), &[usage(1, 5, Some(1.0))])
            .await
            .unwrap();
        let t = s.task(&tk("tk_x")).await.unwrap();
        assert_eq!((t.input_tokens, t.output_tokens), (MAX_COUNT, 5));
        assert_eq!(t.cost_usd, Some(1.0));
    }

    #[tokio::test]
    async fn a_wrong_type_is_an_error_not_a_panic() {
        let s = setup().await;
        sqlx::query("UPDATE tasks SET prompt = x'00ff' , input_tokens = 'lots' WHERE id = 'tk_x'")
            .execute(&s.pool)
            .await
            .unwrap();
        let e = s.task(&tk("tk_x")).await.unwrap_err();
        assert!(matches!(e, StoreError::Corrupt(_)), "{e}");
    }

    #[tokio::test]
    async fn out_of_range_seq_and_huge_messages() {
        let s = setup().await;
        let far = TaskEvent {
            seq: u64::MAX,
            ..usage(0, 1, None)
        };
        assert!(matches!(
            s.append_task_events(&tk("tk_x"), &[far]).await,
            Err(StoreError::Conflict(_))
        ));
        let long = "é".repeat(MAX_LAST_MESSAGE);
        let msg = TaskEvent {
            seq: 1,
            at: crate::test_ts("2026-11-23T00:00:00Z"),
            kind: EventKind::Message { text: long },
        };
        s.append_task_events(&tk("tk_x"), &[msg]).await.unwrap();
        let t = s.task(&tk("tk_x")).await.unwrap();
        let kept = t.last_message.unwrap();
        assert!(kept.len() <= MAX_LAST_MESSAGE && kept.len() >= MAX_LAST_MESSAGE - 1);
        assert_eq!(t.last_seq, 1);
    }
}
