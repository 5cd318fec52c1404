//! Retention: deleting history past its age (egress log rows, events of finished tasks).
//!
//! Deletes run in batches so that a large purge never holds SQLite's write lock for long: the
//! egress proxy and the task streams keep writing while old rows go.

use berth_domain::Timestamp;

use crate::{Result, Store};

/// Rows deleted per statement.
const BATCH: i64 = 2000;

impl Store {
    /// Deletes egress log rows recorded before `before` . Returns the count.
    pub async fn purge_egress_log(&self, before: &Timestamp) -> Result<u64> {
        self.purge_batches(
            "DELETE FROM egress_log WHERE id IN \
             (SELECT id FROM egress_log WHERE at < ?1 ORDER BY id LIMIT ?2)",
            before.as_str(),
        )
        .await
    }

    /// Deletes the events of tasks that are no longer active (not queued, starting, running or
    /// waiting) and whose last change is before `before`. The task rows (state, usage, last
    /// message) stay; events of active tasks are never touched. Returns the count.
    pub async fn purge_task_events(&self, before: &Timestamp) -> Result<u64> {
        self.purge_batches(
            "DELETE FROM task_events WHERE (task_id, seq) IN \
             (SELECT e.task_id, e.seq FROM task_events e JOIN tasks t ON t.id = e.task_id \
              WHERE t.state NOT IN ('queued', 'starting', 'running', 'waiting') \
              AND t.updated_at < ?1 LIMIT ?2)",
            before.as_str(),
        )
        .await
    }

    async fn purge_batches(&self, sql: &str, before: &str) -> Result<u64> {
        let mut total = 0;
        loop {
            let n = sqlx::query(sql)
                .bind(before)
                .bind(BATCH)
                .execute(&self.pool)
                .await?
                .rows_affected();
            total += n;
            if n < BATCH as u64 {
                return Ok(total);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use berth_domain::task::{Agent, EventKind, TaskEvent, TaskState};
    use berth_domain::{TaskId, WorkspaceId};

    use crate::{EgressRecord, NewTask, Store};

    fn tk(id: &str) -> TaskId {
        TaskId::from_stored(id.to_owned())
    }

    async fn task_with_events(s: &Store, id: &str, n: u64) {
        s.insert_task(&NewTask {
            id: tk(id),
            workspace_id: WorkspaceId::generate(),
            workspace: "acme/web".into(),
            agent: Agent::Claude,
            model: None,
            dir: "/home/agent".into(),
            worktree: None,
            prompt: "hi".into(),
            virtual_key_hash: format!("h-{id}"),
            approval: Default::default(),
        })
        .await
        .unwrap();
        let events: Vec<TaskEvent> = (1..=n)
            .map(|seq| TaskEvent {
                seq,
                at: crate::test_ts("2026-11-23T00:00:00Z"),
                kind: EventKind::Message {
                    text: format!("m{seq}"),
                },
            })
            .collect();
        s.append_task_events(&tk(id), &events).await.unwrap();
    }

    #[tokio::test]
    async fn egress_rows_older_than_the_cutoff_go_in_batches() {
        let s = Store::open_in_memory().await.unwrap();
        let rec = |at: &str| EgressRecord {
            at: crate::test_ts(at),
            host: "github.com".into(),
            port: 443,
            decision: "allow".into(),
            reason: "rule 1".into(),
            ..Default::default()
        };
        // More than one batch of old rows, and a few new ones.
        for _ in 0..(super::BATCH + 5) {
            s.append_egress_log(
                &berth_domain::WorkspaceId::from_stored("w1".into()),
                &rec("2026-01-01T00:00:00Z"),
            )
            .await
            .unwrap();
        }
        let keep = s
            .append_egress_log(
                &berth_domain::WorkspaceId::from_stored("w1".into()),
                &rec("2026-06-01T00:00:00Z"),
            )
            .await
            .unwrap();
        let purged = s
            .purge_egress_log(&crate::test_ts("2026-03-01T00:00:00Z"))
            .await
            .unwrap();
        assert_eq!(purged, super::BATCH as u64 + 5);
        let left = s
            .egress_log(
                &berth_domain::WorkspaceId::from_stored("w1".into()),
                0,
                10_000,
            )
            .await
            .unwrap();
        assert_eq!(left.iter().map(|e| e.id).collect::<Vec<_>>(), [keep]);
        assert_eq!(
            s.purge_egress_log(&crate::test_ts("2026-03-01T00:00:00Z"))
                .await
                .unwrap(),
            0
        );
    }

    #[tokio::test]
    async fn events_of_finished_tasks_go_and_of_active_tasks_stay() {
        let s = Store::open_in_memory().await.unwrap();
        task_with_events(&s, "tk_done", 3).await;
        task_with_events(&s, "tk_running", 2).await;
        task_with_events(&s, "tk_recent", 2).await;
        s.set_task_state(&tk("tk_done"), TaskState::Completed, None)
            .await
            .unwrap();
        s.set_task_state(&tk("tk_running"), TaskState::Running, None)
            .await
            .unwrap();
        s.set_task_state(&tk("tk_recent"), TaskState::Failed, Some("exited"))
            .await
            .unwrap();
        // A cutoff before every change purges nothing.
        assert_eq!(
            s.purge_task_events(&crate::test_ts("2000-01-01T00:00:00Z"))
                .await
                .unwrap(),
            0
        );
        // Backdate the finished task, so only it is past the cutoff.
        sqlx::query("UPDATE tasks SET updated_at = '2026-01-01T00:00:00Z' WHERE id IN ('tk_done', 'tk_running')")
            .execute(&s.pool)
            .await
            .unwrap();
        assert_eq!(
            s.purge_task_events(&crate::test_ts("2026-03-01T00:00:00Z"))
                .await
                .unwrap(),
            3
        );
        assert!(s
            .task_events(&tk("tk_done"), 0, 100)
            .await
            .unwrap()
            .is_empty());
        // The task row itself stays; the running task (however old) and the recent one keep
        // their events.
        assert_eq!(
            s.task(&tk("tk_done")).await.unwrap().state,
            TaskState::Completed
        );
        assert_eq!(
            s.task_events(&tk("tk_running"), 0, 100)
                .await
                .unwrap()
                .len(),
            2
        );
        assert_eq!(
            s.task_events(&tk("tk_recent"), 0, 100).await.unwrap().len(),
            2
        );
    }
}
