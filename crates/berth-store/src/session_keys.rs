//! Virtual keys of interactive agent sessions: one row per session, the key hashed, live only
//! while the server says so (see migration 0012).

use berth_domain::{Agent, TaskId, Timestamp, WorkspaceId};
use sqlx::Row;

use crate::{now, Result, Store, StoreError};

/// A new agent session's key, before its terminal session runs.
#[derive(Debug, Clone)]
pub struct NewSessionKey {
    pub id: String,
    pub key_hash: String,
    pub workspace_id: WorkspaceId,
    pub workspace: String,
    pub agent: Agent,
    pub task_id: Option<TaskId>,
}

/// An agent session's key as stored.
#[derive(Debug, Clone, PartialEq)]
pub struct SessionKey {
    pub id: String,
    pub workspace_id: WorkspaceId,
    pub workspace: String,
    pub agent: Agent,
    pub task_id: Option<TaskId>,
    /// The daemon's session id, name and start time; `None` while the session starts.
    pub session_id: Option<String>,
    pub session_name: Option<String>,
    pub session_created_at: Option<Timestamp>,
    pub live: bool,
    pub created_at: Timestamp,
}

const COLUMNS: &str = "id, workspace_id, workspace, agent, task_id, session_id, session_name, \
    session_created_at, live, created_at";

fn from_row(r: &sqlx::sqlite::SqliteRow) -> Result<SessionKey> {
    let ws: String = r.get("workspace_id");
    let agent: String = r.get("agent");
    Ok(SessionKey {
        id: r.get("id"),
        workspace_id: WorkspaceId::parse(&ws)
            .ok_or_else(|| StoreError::Corrupt(format!("session key workspace id {ws:?}")))?,
        workspace: r.get("workspace"),
        agent: Agent::parse(&agent)
            .ok_or_else(|| StoreError::Corrupt(format!("session key agent {agent:?}")))?,
        task_id: r
            .get::<Option<String>, _>("task_id")
            .map(TaskId::from_stored),
        session_id: r.get("session_id"),
        session_name: r.get("session_name"),
        session_created_at: crate::ts_opt(r, "session_created_at"),
        live: r.get::<i64, _>("live") != 0,
        created_at: crate::ts(r, "created_at"),
    })
}

impl Store {
    /// Stores a new, live session key (its session not started yet).
    pub async fn insert_session_key(&self, k: &NewSessionKey) -> Result<()> {
        sqlx::query(
            "INSERT INTO session_keys (id, key_hash, workspace_id, workspace, agent, task_id, live, created_at) \
             VALUES (?, ?, ?, ?, ?, ?, 1, ?)",
        )
        .bind(&k.id)
        .bind(&k.key_hash)
        .bind(k.workspace_id.as_str())
        .bind(&k.workspace)
        .bind(k.agent.as_str())
        .bind(k.task_id.as_ref().map(TaskId::as_str))
        .bind(now())
        .execute(&self.pool)
        .await?;
        Ok(())
    }

    /// Binds a live key to the terminal session the daemon started for it.
    pub async fn bind_session_key(
        &self,
        id: &str,
        session_id: &str,
        session_name: &str,
        session_created_at: &Timestamp,
    ) -> Result<()> {
        sqlx::query(
            "UPDATE session_keys SET session_id = ?, session_name = ?, session_created_at = ? \
             WHERE id = ? AND live = 1",
        )
        .bind(session_id)
        .bind(session_name)
        .bind(session_created_at.as_str())
        .bind(id)
        .execute(&self.pool)
        .await?;
        Ok(())
    }

    /// The live key with this hash, if any.
    pub async fn find_live_session_key_by_hash(&self, hash: &str) -> Result<Option<SessionKey>> {
        let sql = format!("SELECT {COLUMNS} FROM session_keys WHERE key_hash = ? AND live = 1");
        let row = sqlx::query(&sql)
            .bind(hash)
            .fetch_optional(&self.pool)
            .await?;
        row.as_ref().map(from_row).transpose()
    }

    /// A session key by id, live or not.
    pub async fn find_session_key(&self, id: &str) -> Result<Option<SessionKey>> {
        let sql = format!("SELECT {COLUMNS} FROM session_keys WHERE id = ?");
        let row = sqlx::query(&sql)
            .bind(id)
            .fetch_optional(&self.pool)
            .await?;
        row.as_ref().map(from_row).transpose()
    }

    /// Every live session key, oldest first.
    pub async fn live_session_keys(&self) -> Result<Vec<SessionKey>> {
        let sql = format!("SELECT {COLUMNS} FROM session_keys WHERE live = 1 ORDER BY created_at");
        let rows = sqlx::query(&sql).fetch_all(&self.pool).await?;
        rows.iter().map(from_row).collect()
    }

    /// The live session key of a taken-over task, if any.
    pub async fn live_session_key_of_task(&self, task_id: &TaskId) -> Result<Option<SessionKey>> {
        let sql = format!(
            "SELECT {COLUMNS} FROM session_keys WHERE task_id = ? AND live = 1 ORDER BY created_at DESC LIMIT 1"
        );
        let row = sqlx::query(&sql)
            .bind(task_id.as_str())
            .fetch_optional(&self.pool)
            .await?;
        row.as_ref().map(from_row).transpose()
    }

    /// Ends a session key for good (never live again); true when it was live.
    pub async fn end_session_key(&self, id: &str) -> Result<bool> {
        let r =
            sqlx::query("UPDATE session_keys SET live = 0, ended_at = ? WHERE id = ? AND live = 1")
                .bind(now())
                .bind(id)
                .execute(&self.pool)
                .await?;
        Ok(r.rows_affected() > 0)
    }

    /// Ends the keys of a workspace's terminal session (by the daemon's id or name); returns
    /// the ids of the keys ended.
    pub async fn end_session_keys_of_session(
        &self,
        workspace_id: &WorkspaceId,
        session: &str,
    ) -> Result<Vec<String>> {
        let rows = sqlx::query(
            "UPDATE session_keys SET live = 0, ended_at = ? WHERE live = 1 AND workspace_id = ? \
             AND (session_id = ? OR session_name = ?) RETURNING id",
        )
        .bind(now())
        .bind(workspace_id.as_str())
        .bind(session)
        .bind(session)
        .fetch_all(&self.pool)
        .await?;
        Ok(rows.iter().map(|r| r.get("id")).collect())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn key(id: &str, ws: &WorkspaceId, task: Option<&str>) -> NewSessionKey {
        NewSessionKey {
            id: id.into(),
            key_hash: format!("hash-{id}"),
            workspace_id: ws.clone(),
            workspace: "acme/web".into(),
            agent: Agent::Codex,
            task_id: task.map(|t| TaskId::from_stored(t.into())),
        }
    }

    #[tokio::test]
    async fn a_key_lives_until_ended_and_never_again() {
        let s = Store::open_in_memory().await.unwrap();
        let ws = WorkspaceId::generate();
        s.insert_session_key(&key("as_1", &ws, Some("tk_1")))
            .await
            .unwrap();
        s.insert_session_key(&key("as_2", &ws, None)).await.unwrap();
        let k = s
            .find_live_session_key_by_hash("hash-as_1")
            .await
            .unwrap()
            .unwrap();
        assert_eq!((k.agent, k.session_id.as_deref()), (Agent::Codex, None));
        s.bind_session_key(
            "as_1",
            "ab12cd34",
            "codex",
            &crate::test_ts("2026-12-04T10:00:00Z"),
        )
        .await
        .unwrap();
        let k = s.find_session_key("as_1").await.unwrap().unwrap();
        assert_eq!(k.session_name.as_deref(), Some("codex"));
        assert_eq!(s.live_session_keys().await.unwrap().len(), 2);
        assert_eq!(
            s.live_session_key_of_task(&TaskId::from_stored("tk_1".into()))
                .await
                .unwrap()
                .map(|k| k.id),
            Some("as_1".into())
        );

        // Ended by the session's name: only that workspace's key of that session.
        let other = WorkspaceId::generate();
        assert!(s
            .end_session_keys_of_session(&other, "codex")
            .await
            .unwrap()
            .is_empty());
        assert_eq!(
            s.end_session_keys_of_session(&ws, "codex").await.unwrap(),
            ["as_1"]
        );
        assert!(s
            .find_live_session_key_by_hash("hash-as_1")
            .await
            .unwrap()
            .is_none());
        assert!(s
            .live_session_key_of_task(&TaskId::from_stored("tk_1".into()))
            .await
            .unwrap()
            .is_none());
        // A dead key is never bound again, nor ended twice.
        s.bind_session_key("as_1", "x", "y", &Timestamp::from_stored("z"))
            .await
            .unwrap();
        assert_eq!(
            s.find_session_key("as_1")
                .await
                .unwrap()
                .unwrap()
                .session_id
                .as_deref(),
            Some("ab12cd34")
        );
        assert!(!s.end_session_key("as_1").await.unwrap());
        assert!(s.end_session_key("as_2").await.unwrap());
        assert!(s.live_session_keys().await.unwrap().is_empty());
    }
}
