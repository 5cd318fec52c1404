//! Egress policy rules per workspace and the egress log.

use sqlx::Row;

use crate::{Result, Store};

pub use berth_domain::{EgressRecord, WorkspaceId};

#[derive(Debug, Clone, PartialEq)]
pub struct EgressEntry {
    pub id: i64,
    pub workspace_id: WorkspaceId,
    pub record: EgressRecord,
}

impl Store {
    /// The workspace's rules in order.
    pub async fn egress_rules(&self, workspace_id: &WorkspaceId) -> Result<Vec<String>> {
        let rows =
            sqlx::query("SELECT rule FROM egress_rules WHERE workspace_id = ? ORDER BY position")
                .bind(workspace_id.as_str())
                .fetch_all(&self.pool)
                .await?;
        Ok(rows.iter().map(|r| r.get(0)).collect())
    }

    /// Replaces the workspace's rules (in one transaction).
    pub async fn set_egress_rules(
        &self,
        workspace_id: &WorkspaceId,
        rules: &[String],
    ) -> Result<()> {
        let mut tx = self.pool.begin().await?;
        sqlx::query("DELETE FROM egress_rules WHERE workspace_id = ?")
            .bind(workspace_id.as_str())
            .execute(&mut *tx)
            .await?;
        for (i, r) in rules.iter().enumerate() {
            sqlx::query("INSERT INTO egress_rules (workspace_id, position, rule) VALUES (?, ?, ?)")
                .bind(workspace_id.as_str())
                .bind(i as i64)
                .bind(r)
                .execute(&mut *tx)
                .await?;
        }
        tx.commit().await?;
        Ok(())
    }

    pub async fn append_egress_log(
        &self,
        workspace_id: &WorkspaceId,
        r: &EgressRecord,
    ) -> Result<i64> {
        let res = sqlx::query(
            "INSERT INTO egress_log (at, workspace_id, task_id, method, host, port, path, decision, \
             rule, reason, bytes_up, bytes_down, intercepted) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
        )
        .bind(r.at.as_str())
        .bind(workspace_id.as_str())
        .bind(&r.task_id)
        .bind(&r.method)
        .bind(&r.host)
        .bind(i64::from(r.port))
        .bind(&r.path)
        .bind(&r.decision)
        .bind(&r.rule)
        .bind(&r.reason)
        .bind(r.bytes_up as i64)
        .bind(r.bytes_down as i64)
        .bind(r.intercepted)
        .execute(&self.pool)
        .await?;
        Ok(res.last_insert_rowid())
    }

    /// Entries with `id > after`, oldest first.
    pub async fn egress_log(
        &self,
        workspace_id: &WorkspaceId,
        after: i64,
        limit: i64,
    ) -> Result<Vec<EgressEntry>> {
        let rows = sqlx::query(
            "SELECT id, at, workspace_id, task_id, method, host, port, path, decision, rule, reason, \
             bytes_up, bytes_down, intercepted FROM egress_log WHERE workspace_id = ? AND id > ? \
             ORDER BY id LIMIT ?",
        )
        .bind(workspace_id.as_str())
        .bind(after)
        .bind(limit)
        .fetch_all(&self.pool)
        .await?;
        Ok(rows
            .iter()
            .map(|r| EgressEntry {
                id: r.get("id"),
                workspace_id: WorkspaceId::from_stored(r.get("workspace_id")),
                record: EgressRecord {
                    at: crate::ts(r, "at"),
                    task_id: r.get("task_id"),
                    method: r.get("method"),
                    host: r.get("host"),
                    port: r.get::<i64, _>("port").clamp(0, 65535) as u16,
                    path: r.get("path"),
                    decision: r.get("decision"),
                    rule: r.get("rule"),
                    reason: r.get("reason"),
                    bytes_up: r.get::<i64, _>("bytes_up").max(0) as u64,
                    bytes_down: r.get::<i64, _>("bytes_down").max(0) as u64,
                    intercepted: r.get("intercepted"),
                },
            })
            .collect())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn rules_and_log() {
        let s = Store::open_in_memory().await.unwrap();
        assert!(s
            .egress_rules(&berth_domain::WorkspaceId::from_stored("w1".into()))
            .await
            .unwrap()
            .is_empty());
        let rules = vec!["allow github.com".to_owned(), "deny *".to_owned()];
        s.set_egress_rules(&berth_domain::WorkspaceId::from_stored("w1".into()), &rules)
            .await
            .unwrap();
        assert_eq!(
            s.egress_rules(&berth_domain::WorkspaceId::from_stored("w1".into()))
                .await
                .unwrap(),
            rules
        );
        s.set_egress_rules(
            &berth_domain::WorkspaceId::from_stored("w1".into()),
            &rules[..1],
        )
        .await
        .unwrap();
        assert_eq!(
            s.egress_rules(&berth_domain::WorkspaceId::from_stored("w1".into()))
                .await
                .unwrap(),
            rules[..1].to_vec()
        );
        let rec = EgressRecord {
            at: berth_domain::Timestamp::from_stored("t"),
            host: "github.com".into(),
            port: 443,
            decision: "allow".into(),
            reason: "rule 1".into(),
            bytes_down: 10,
            ..Default::default()
        };
        let a = s
            .append_egress_log(&berth_domain::WorkspaceId::from_stored("w1".into()), &rec)
            .await
            .unwrap();
        s.append_egress_log(&berth_domain::WorkspaceId::from_stored("w2".into()), &rec)
            .await
            .unwrap();
        let b = s
            .append_egress_log(&berth_domain::WorkspaceId::from_stored("w1".into()), &rec)
            .await
            .unwrap();
        let all = s
            .egress_log(&berth_domain::WorkspaceId::from_stored("w1".into()), 0, 10)
            .await
            .unwrap();
        assert_eq!(all.iter().map(|e| e.id).collect::<Vec<_>>(), [a, b]);
        assert_eq!(all[0].record, rec);
        assert_eq!(
            s.egress_log(&berth_domain::WorkspaceId::from_stored("w1".into()), a, 10)
                .await
                .unwrap()
                .len(),
            1
        );
    }
}
