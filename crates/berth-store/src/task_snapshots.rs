//! Task snapshots: the commit and working-state tree of a task's directory before each turn, so
//! the task's diff includes its commits and each turn's diff can be told apart.
//!
//! Object ids come from inside a workspace: only lowercase hex of a git object id's length (40
//! for SHA-1, 64 for SHA-256) is stored, so nothing else can ever reach a git command line.

use berth_domain::{TaskId, Timestamp};
use sqlx::Row;

use crate::{now, Result, Store, StoreError};

/// One snapshot (turn numbers start at 1).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TaskSnapshot {
    pub turn: u32,
    pub head: Option<String>,
    pub tree: String,
    pub at: Timestamp,
}

/// Whether `s` is a git object id (SHA-1 or SHA-256, lowercase hex).
pub fn is_object_id(s: &str) -> bool {
    (s.len() == 40 || s.len() == 64)
        && s.bytes()
            .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b))
}

impl Store {
    /// Records the snapshot taken before turn `turn`; a second one for the same turn is ignored
    /// (the first is what the turn started from).
    pub async fn add_task_snapshot(
        &self,
        task: &TaskId,
        turn: u32,
        head: Option<&str>,
        tree: &str,
    ) -> Result<()> {
        if !is_object_id(tree) || head.is_some_and(|h| !is_object_id(h)) {
            return Err(StoreError::Corrupt(format!(
                "task {task}: a snapshot needs git object ids"
            )));
        }
        sqlx::query(
            "INSERT OR IGNORE INTO task_snapshots (task_id, turn, head, tree, at) VALUES (?, ?, ?, ?, ?)",
        )
        .bind(task.as_str())
        .bind(i64::from(turn))
        .bind(head)
        .bind(tree)
        .bind(now())
        .execute(&self.pool)
        .await?;
        Ok(())
    }

    /// A task's snapshots, oldest first.
    pub async fn task_snapshots(&self, task: &TaskId) -> Result<Vec<TaskSnapshot>> {
        let rows = sqlx::query(
            "SELECT turn, head, tree, at FROM task_snapshots WHERE task_id = ? ORDER BY turn",
        )
        .bind(task.as_str())
        .fetch_all(&self.pool)
        .await?;
        Ok(rows
            .iter()
            .map(|r| TaskSnapshot {
                turn: u32::try_from(r.get::<i64, _>("turn")).unwrap_or(0),
                head: r.get("head"),
                tree: r.get("tree"),
                at: crate::ts(r, "at"),
            })
            .collect())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const A: &str = "0123456789abcdef0123456789abcdef01234567";
    const B: &str = "89abcdef0123456789abcdef0123456789abcdef";

    #[tokio::test]
    async fn snapshots_keep_the_first_per_turn_and_refuse_non_ids() {
        let s = Store::open_in_memory().await.unwrap();
        let t = TaskId::generate();
        s.add_task_snapshot(&t, 1, None, A).await.unwrap();
        s.add_task_snapshot(&t, 1, Some(B), B).await.unwrap();
        s.add_task_snapshot(&t, 2, Some(A), B).await.unwrap();
        let got = s.task_snapshots(&t).await.unwrap();
        assert_eq!(got.len(), 2);
        assert_eq!(
            (got[0].turn, got[0].head.as_deref(), got[0].tree.as_str()),
            (1, None, A)
        );
        assert_eq!((got[1].turn, got[1].head.as_deref()), (2, Some(A)));
        for bad in [
            "HEAD",
            "--output=/etc/passwd",
            &A.to_uppercase(),
            &A[..39],
            "0123456789abcdef0123456789abcdef0123456g",
        ] {
            assert!(
                s.add_task_snapshot(&t, 3, None, bad).await.is_err(),
                "{bad}"
            );
            assert!(
                s.add_task_snapshot(&t, 3, Some(bad), A).await.is_err(),
                "{bad}"
            );
        }
        assert_eq!(s.task_snapshots(&t).await.unwrap().len(), 2);
    }
}
