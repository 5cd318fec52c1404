//! What became of a task's work: its last push and the pull request opened for it (one row per
//! task, see migration 0022).

use std::collections::HashMap;

use berth_domain::{TaskId, Timestamp};
use sqlx::Row;

use crate::{now, Result, Store};

/// A task's last push.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TaskPush {
    pub remote: String,
    pub branch: String,
    pub commit: String,
    pub at: Timestamp,
}

/// The pull (merge) request opened for a task.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TaskPullRequest {
    /// `github`, `gitlab` or `azure`.
    pub provider: String,
    pub url: String,
    pub number: u64,
    pub at: Timestamp,
}

/// A task's deliveries (each absent until it happened).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct TaskDelivery {
    pub push: Option<TaskPush>,
    pub pull_request: Option<TaskPullRequest>,
}

fn delivery(r: &sqlx::sqlite::SqliteRow) -> TaskDelivery {
    let s = |c: &str| r.try_get::<Option<String>, _>(c).ok().flatten();
    let push = match (s("push_remote"), s("push_branch"), s("push_commit")) {
        (Some(remote), Some(branch), Some(commit)) => Some(TaskPush {
            remote,
            branch,
            commit,
            at: Timestamp::from_stored(s("pushed_at").unwrap_or_default()),
        }),
        _ => None,
    };
    let number = r
        .try_get::<Option<i64>, _>("pr_number")
        .ok()
        .flatten()
        .and_then(|n| u64::try_from(n).ok());
    let pull_request = match (s("pr_provider"), s("pr_url"), number) {
        (Some(provider), Some(url), Some(number)) => Some(TaskPullRequest {
            provider,
            url,
            number,
            at: Timestamp::from_stored(s("pr_at").unwrap_or_default()),
        }),
        _ => None,
    };
    TaskDelivery { push, pull_request }
}

impl Store {
    /// Records a push of the task's work (replacing the previous one).
    pub async fn set_task_push(
        &self,
        task: &TaskId,
        remote: &str,
        branch: &str,
        commit: &str,
    ) -> Result<()> {
        sqlx::query(
            "INSERT INTO task_deliveries (task_id, push_remote, push_branch, push_commit, pushed_at) \
             VALUES (?1, ?2, ?3, ?4, ?5) ON CONFLICT(task_id) DO UPDATE SET push_remote = ?2, \
             push_branch = ?3, push_commit = ?4, pushed_at = ?5",
        )
        .bind(task.as_str())
        .bind(remote)
        .bind(branch)
        .bind(commit)
        .bind(now())
        .execute(&self.pool)
        .await?;
        Ok(())
    }

    /// Records the pull request opened for the task.
    pub async fn set_task_pull_request(
        &self,
        task: &TaskId,
        provider: &str,
        url: &str,
        number: u64,
    ) -> Result<()> {
        sqlx::query(
            "INSERT INTO task_deliveries (task_id, pr_provider, pr_url, pr_number, pr_at) \
             VALUES (?1, ?2, ?3, ?4, ?5) ON CONFLICT(task_id) DO UPDATE SET pr_provider = ?2, \
             pr_url = ?3, pr_number = ?4, pr_at = ?5",
        )
        .bind(task.as_str())
        .bind(provider)
        .bind(url)
        .bind(i64::try_from(number).unwrap_or(i64::MAX))
        .bind(now())
        .execute(&self.pool)
        .await?;
        Ok(())
    }

    /// The deliveries of the given tasks (tasks without any are absent).
    pub async fn task_deliveries(
        &self,
        tasks: &[&TaskId],
    ) -> Result<HashMap<TaskId, TaskDelivery>> {
        let mut out = HashMap::new();
        // SQLite's default limit on bound parameters is far above a page of tasks, but chunk
        // anyway so a long list never fails.
        for chunk in tasks.chunks(500) {
            let marks = vec!["?"; chunk.len()].join(",");
            let sql = format!("SELECT * FROM task_deliveries WHERE task_id IN ({marks})");
            let mut q = sqlx::query(&sql);
            for id in chunk {
                q = q.bind(id.as_str());
            }
            for r in q.fetch_all(&self.pool).await? {
                out.insert(TaskId::from_stored(r.get("task_id")), delivery(&r));
            }
        }
        Ok(out)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn pushes_and_pull_requests_are_kept_per_task() {
        let s = Store::open_in_memory().await.unwrap();
        let t = TaskId::from_stored("tsk_1".into());
        assert!(s.task_deliveries(&[&t]).await.unwrap().is_empty());
        s.set_task_push(&t, "origin", "feature", "abc")
            .await
            .unwrap();
        s.set_task_pull_request(&t, "github", "https://x/pull/7", 7)
            .await
            .unwrap();
        s.set_task_push(&t, "origin", "feature", "def")
            .await
            .unwrap();
        let other = TaskId::from_stored("tsk_2".into());
        let d = s.task_deliveries(&[&t, &other]).await.unwrap();
        assert_eq!(d.len(), 1);
        let d = &d[&t];
        assert_eq!(d.push.as_ref().unwrap().commit, "def");
        let pr = d.pull_request.as_ref().unwrap();
        assert_eq!((pr.number, pr.url.as_str()), (7, "https://x/pull/7"));
    }
}
