//! Workspace templates (every `set` a new revision) and the provisioning record of each
//! workspace made from one: the template revision, parameters, the instantiated spec and the
//! step list with each step's state and log (see migration 0013).

use berth_domain::{Timestamp, WorkspaceId};
use sqlx::Row;

use crate::{now, Result, Store, StoreError};

/// One stored revision of a tenant's template.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TemplateRevision {
    pub tenant: String,
    pub name: String,
    pub revision: i64,
    pub source: String,
    pub created_at: Timestamp,
}

/// A workspace's provisioning record.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Provision {
    pub workspace_id: WorkspaceId,
    pub template: String,
    pub revision: i64,
    /// JSON object of the parameters given at create.
    pub params: String,
    /// JSON of the instantiated `berth_domain::Template`.
    pub spec: String,
    /// `pending`, `running`, `done` or `failed`.
    pub state: String,
    pub message: Option<String>,
    pub updated_at: Timestamp,
    pub steps: Vec<ProvisionStep>,
}

/// One provisioning step.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ProvisionStep {
    pub position: i64,
    /// `clone`, `git`, `setup` or `session`.
    pub kind: String,
    pub name: String,
    /// `pending`, `running`, `done`, `failed` or `skipped`.
    pub state: String,
    pub input_hash: String,
    pub log: String,
    pub exit_code: Option<i64>,
    pub message: Option<String>,
    pub started_at: Option<Timestamp>,
    pub finished_at: Option<Timestamp>,
}

/// A step to record (pending, or carried over as done by an upgrade).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NewStep {
    pub kind: String,
    pub name: String,
    pub input_hash: String,
    /// `pending`, or `done` for a step an upgrade need not re-run.
    pub state: String,
}

fn revision_from_row(r: &sqlx::sqlite::SqliteRow) -> TemplateRevision {
    TemplateRevision {
        tenant: r.get("tenant"),
        name: r.get("name"),
        revision: r.get("revision"),
        source: r.get("source"),
        created_at: crate::ts(r, "created_at"),
    }
}

impl Store {
    /// Stores `source` as the next revision of a tenant's template (1 for a new one).
    pub async fn put_template(
        &self,
        tenant: &str,
        name: &str,
        source: &str,
    ) -> Result<TemplateRevision> {
        let mut tx = self.pool.begin().await?;
        let next: i64 = sqlx::query_scalar(
            "SELECT COALESCE(MAX(revision), 0) + 1 FROM templates WHERE tenant = ? AND name = ?",
        )
        .bind(tenant)
        .bind(name)
        .fetch_one(&mut *tx)
        .await?;
        let at = Timestamp::now();
        sqlx::query(
            "INSERT INTO templates (tenant, name, revision, source, created_at) VALUES (?, ?, ?, ?, ?)",
        )
        .bind(tenant)
        .bind(name)
        .bind(next)
        .bind(source)
        .bind(at.as_str())
        .execute(&mut *tx)
        .await
        .map_err(|e| {
            if crate::is_unique_violation(&e) {
                StoreError::Conflict(format!("template {tenant}/{name} revision {next}"))
            } else {
                e.into()
            }
        })?;
        tx.commit().await?;
        Ok(TemplateRevision {
            tenant: tenant.to_owned(),
            name: name.to_owned(),
            revision: next,
            source: source.to_owned(),
            created_at: at,
        })
    }

    /// A revision of a template (`None`: the newest).
    pub async fn template(
        &self,
        tenant: &str,
        name: &str,
        revision: Option<i64>,
    ) -> Result<Option<TemplateRevision>> {
        let row = sqlx::query(
            "SELECT tenant, name, revision, source, created_at FROM templates \
             WHERE tenant = ?1 AND name = ?2 AND (?3 IS NULL OR revision = ?3) \
             ORDER BY revision DESC LIMIT 1",
        )
        .bind(tenant)
        .bind(name)
        .bind(revision)
        .fetch_optional(&self.pool)
        .await?;
        Ok(row.as_ref().map(revision_from_row))
    }

    /// The newest revision of each template (of one tenant, or all), by tenant and name.
    pub async fn list_templates(&self, tenant: Option<&str>) -> Result<Vec<TemplateRevision>> {
        let rows = sqlx::query(
            "SELECT t.tenant, t.name, t.revision, t.source, t.created_at FROM templates t \
             WHERE (?1 IS NULL OR t.tenant = ?1) AND t.revision = \
               (SELECT MAX(revision) FROM templates u WHERE u.tenant = t.tenant AND u.name = t.name) \
             ORDER BY t.tenant, t.name",
        )
        .bind(tenant)
        .fetch_all(&self.pool)
        .await?;
        Ok(rows.iter().map(revision_from_row).collect())
    }

    /// The revision numbers and times of one template, oldest first.
    pub async fn template_revisions(&self, tenant: &str, name: &str) -> Result<Vec<(i64, String)>> {
        let rows = sqlx::query(
            "SELECT revision, created_at FROM templates WHERE tenant = ? AND name = ? ORDER BY revision",
        )
        .bind(tenant)
        .bind(name)
        .fetch_all(&self.pool)
        .await?;
        Ok(rows
            .iter()
            .map(|r| (r.get("revision"), r.get("created_at")))
            .collect())
    }

    /// Removes every revision of a template; false when there was none.
    pub async fn delete_template(&self, tenant: &str, name: &str) -> Result<bool> {
        let done = sqlx::query("DELETE FROM templates WHERE tenant = ? AND name = ?")
            .bind(tenant)
            .bind(name)
            .execute(&self.pool)
            .await?;
        Ok(done.rows_affected() > 0)
    }

    /// Workspaces (`tenant/name`) provisioned from a template.
    pub async fn template_users(&self, tenant: &str, name: &str) -> Result<Vec<String>> {
        let rows = sqlx::query(
            "SELECT t.name AS tenant, w.name FROM workspace_provisions p \
             JOIN workspaces w ON w.id = p.workspace_id JOIN tenants t ON t.id = w.tenant_id \
             WHERE t.name = ? AND p.template = ? ORDER BY w.name",
        )
        .bind(tenant)
        .bind(name)
        .fetch_all(&self.pool)
        .await?;
        Ok(rows
            .iter()
            .map(|r| {
                format!(
                    "{}/{}",
                    r.get::<String, _>("tenant"),
                    r.get::<String, _>("name")
                )
            })
            .collect())
    }

    /// Records (or replaces, for an upgrade) a workspace's provisioning: template revision,
    /// parameters, spec and steps; the state becomes `pending`.
    pub async fn put_provision(
        &self,
        ws: &WorkspaceId,
        template: &str,
        revision: i64,
        params: &str,
        spec: &str,
        steps: &[NewStep],
    ) -> Result<()> {
        let mut tx = self.pool.begin().await?;
        sqlx::query(
            "INSERT INTO workspace_provisions (workspace_id, template, revision, params, spec, state, updated_at) \
             VALUES (?1, ?2, ?3, ?4, ?5, 'pending', ?6) \
             ON CONFLICT (workspace_id) DO UPDATE SET template = ?2, revision = ?3, params = ?4, \
               spec = ?5, state = 'pending', message = NULL, updated_at = ?6",
        )
        .bind(ws.as_str())
        .bind(template)
        .bind(revision)
        .bind(params)
        .bind(spec)
        .bind(now())
        .execute(&mut *tx)
        .await?;
        // A step kept `done` (same kind, name and inputs as before: an upgrade that did not
        // change it) keeps its log, exit code, message and times.
        let before = sqlx::query(
            "SELECT kind, name, input_hash, log, exit_code, message, started_at, finished_at \
             FROM provision_steps WHERE workspace_id = ? AND state = 'done'",
        )
        .bind(ws.as_str())
        .fetch_all(&mut *tx)
        .await?;
        sqlx::query("DELETE FROM provision_steps WHERE workspace_id = ?")
            .bind(ws.as_str())
            .execute(&mut *tx)
            .await?;
        for (i, s) in steps.iter().enumerate() {
            let kept = before.iter().find(|r| {
                s.state == "done"
                    && r.get::<String, _>("kind") == s.kind
                    && r.get::<String, _>("name") == s.name
                    && r.get::<String, _>("input_hash") == s.input_hash
            });
            sqlx::query(
                "INSERT INTO provision_steps (workspace_id, position, kind, name, state, input_hash, \
                 log, exit_code, message, started_at, finished_at) \
                 VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
            )
            .bind(ws.as_str())
            .bind(i as i64)
            .bind(&s.kind)
            .bind(&s.name)
            .bind(&s.state)
            .bind(&s.input_hash)
            .bind(kept.map_or(String::new(), |r| r.get::<String, _>("log")))
            .bind(kept.and_then(|r| r.get::<Option<i64>, _>("exit_code")))
            .bind(kept.and_then(|r| r.get::<Option<String>, _>("message")))
            .bind(kept.and_then(|r| r.get::<Option<String>, _>("started_at")))
            .bind(kept.and_then(|r| r.get::<Option<String>, _>("finished_at")))
            .execute(&mut *tx)
            .await?;
        }
        tx.commit().await?;
        Ok(())
    }

    /// A workspace's provisioning record with its steps; `None` for a workspace not made from
    /// a template.
    pub async fn provision(&self, ws: &WorkspaceId) -> Result<Option<Provision>> {
        let Some(r) = sqlx::query(
            "SELECT template, revision, params, spec, state, message, updated_at \
             FROM workspace_provisions WHERE workspace_id = ?",
        )
        .bind(ws.as_str())
        .fetch_optional(&self.pool)
        .await?
        else {
            return Ok(None);
        };
        let steps = sqlx::query(
            "SELECT position, kind, name, state, input_hash, log, exit_code, message, started_at, finished_at \
             FROM provision_steps WHERE workspace_id = ? ORDER BY position",
        )
        .bind(ws.as_str())
        .fetch_all(&self.pool)
        .await?
        .iter()
        .map(|s| ProvisionStep {
            position: s.get("position"),
            kind: s.get("kind"),
            name: s.get("name"),
            state: s.get("state"),
            input_hash: s.get("input_hash"),
            log: s.get("log"),
            exit_code: s.get("exit_code"),
            message: s.get("message"),
            started_at: crate::ts_opt(s, "started_at"),
            finished_at: crate::ts_opt(s, "finished_at"),
        })
        .collect();
        Ok(Some(Provision {
            workspace_id: ws.clone(),
            template: r.get("template"),
            revision: r.get("revision"),
            params: r.get("params"),
            spec: r.get("spec"),
            state: r.get("state"),
            message: r.get("message"),
            updated_at: crate::ts(&r, "updated_at"),
            steps,
        }))
    }

    /// Sets a provisioning's overall state (and why, for `failed`).
    pub async fn set_provision_state(
        &self,
        ws: &WorkspaceId,
        state: &str,
        message: Option<&str>,
    ) -> Result<()> {
        sqlx::query(
            "UPDATE workspace_provisions SET state = ?, message = ?, updated_at = ? WHERE workspace_id = ?",
        )
        .bind(state)
        .bind(message)
        .bind(now())
        .bind(ws.as_str())
        .execute(&self.pool)
        .await?;
        Ok(())
    }

    /// Workspaces whose provisioning is in `state`.
    pub async fn provisions_in_state(&self, state: &str) -> Result<Vec<WorkspaceId>> {
        let rows = sqlx::query("SELECT workspace_id FROM workspace_provisions WHERE state = ?")
            .bind(state)
            .fetch_all(&self.pool)
            .await?;
        Ok(rows
            .iter()
            .map(|r| WorkspaceId::from_stored(r.get("workspace_id")))
            .collect())
    }

    /// Marks a step running (its log cleared).
    pub async fn start_step(&self, ws: &WorkspaceId, position: i64) -> Result<()> {
        sqlx::query(
            "UPDATE provision_steps SET state = 'running', log = '', exit_code = NULL, message = NULL, \
             started_at = ?, finished_at = NULL WHERE workspace_id = ? AND position = ?",
        )
        .bind(now())
        .bind(ws.as_str())
        .bind(position)
        .execute(&self.pool)
        .await?;
        Ok(())
    }

    /// Replaces a running step's log (the capped tail so far).
    pub async fn set_step_log(&self, ws: &WorkspaceId, position: i64, log: &str) -> Result<()> {
        sqlx::query("UPDATE provision_steps SET log = ? WHERE workspace_id = ? AND position = ?")
            .bind(log)
            .bind(ws.as_str())
            .bind(position)
            .execute(&self.pool)
            .await?;
        Ok(())
    }

    /// Ends a step: `done`, `failed` or `skipped`, with its log, exit code and message.
    pub async fn finish_step(
        &self,
        ws: &WorkspaceId,
        position: i64,
        state: &str,
        log: &str,
        exit_code: Option<i64>,
        message: Option<&str>,
    ) -> Result<()> {
        sqlx::query(
            "UPDATE provision_steps SET state = ?, log = ?, exit_code = ?, message = ?, finished_at = ? \
             WHERE workspace_id = ? AND position = ?",
        )
        .bind(state)
        .bind(log)
        .bind(exit_code)
        .bind(message)
        .bind(now())
        .bind(ws.as_str())
        .bind(position)
        .execute(&self.pool)
        .await?;
        Ok(())
    }
}
