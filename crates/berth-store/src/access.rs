//! Access requests: what a workspace's egress rules denied, or what it asked for explicitly,
//! and the decisions on them (see `migrations/0023_access_requests.sql`).
//!
//! Everything but the decision comes from inside a workspace: fields are cut to fixed lengths
//! here, a workspace holds at most [`MAX_OPEN_PER_WORKSPACE`] open requests (past that, new
//! ones are not recorded; repeats of recorded ones only bump their counter), and a request
//! holds at most [`MAX_COMMENTS`] comments.

use berth_domain::{AccessRequestId, TaskId, Timestamp, WorkspaceId};
use sqlx::Row;

use crate::{now, Result, Store};

/// Most open requests per workspace.
pub const MAX_OPEN_PER_WORKSPACE: i64 = 100;
/// Most comments per request.
pub const MAX_COMMENTS: i64 = 50;
/// Longest host stored (a DNS name is at most 253).
pub const MAX_HOST: usize = 253;
/// Longest path, rule, reason, note or comment stored.
pub const MAX_TEXT: usize = 1024;
/// Longest method or secret name stored.
pub const MAX_SHORT: usize = 64;

fn cut(s: &str, max: usize) -> String {
    let mut s: String = s.chars().filter(|c| !c.is_control()).collect();
    berth_domain::approval::cut(&mut s, max);
    s
}

fn cut_opt(s: Option<&str>, max: usize) -> Option<String> {
    s.map(|s| cut(s, max))
}

/// What a workspace is asking for.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum AccessTarget {
    /// Egress to `host:port`.
    Egress { host: String, port: u16 },
    /// The secret `name` bound to `host`.
    Secret { name: String, host: String },
}

impl AccessTarget {
    fn kind(&self) -> &'static str {
        match self {
            Self::Egress { .. } => "egress",
            Self::Secret { .. } => "secret",
        }
    }

    fn dedup(&self) -> String {
        match self {
            Self::Egress { host, port } => format!("{}:{port}", cut(host, MAX_HOST)),
            Self::Secret { name, host } => {
                format!("{}@{}", cut(name, MAX_SHORT), cut(host, MAX_HOST))
            }
        }
    }
}

/// One sighting (or a batch of sightings of the same target) to record.
#[derive(Debug, Clone)]
pub struct AccessSighting {
    pub target: AccessTarget,
    /// `denied` (by the egress proxy) or `explicit` (`berth request`).
    pub source: &'static str,
    pub method: Option<String>,
    pub path: Option<String>,
    pub rule: Option<String>,
    pub task_id: Option<TaskId>,
    pub reason: Option<String>,
    /// How many attempts this stands for (at least 1).
    pub count: u64,
    pub first_seen: Timestamp,
    pub last_seen: Timestamp,
}

/// What recording a sighting did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Recorded {
    /// A new open request.
    Created(AccessRequestId),
    /// An open or denied request counted it.
    Repeated(AccessRequestId),
    /// The workspace has [`MAX_OPEN_PER_WORKSPACE`] open requests already.
    Capped,
}

/// One access request, with its workspace's name.
#[derive(Debug, Clone, PartialEq)]
pub struct AccessRequest {
    pub id: String,
    pub workspace_id: WorkspaceId,
    /// `tenant/name`.
    pub workspace: String,
    pub tenant: String,
    pub kind: String,
    pub source: String,
    pub host: String,
    pub port: Option<u16>,
    pub secret: Option<String>,
    pub method: Option<String>,
    pub path: Option<String>,
    pub rule: Option<String>,
    pub task_id: Option<TaskId>,
    pub reason: Option<String>,
    pub count: u64,
    pub first_seen: Timestamp,
    pub last_seen: Timestamp,
    pub state: String,
    pub scope: Option<String>,
    pub template: Option<String>,
    pub granted_rule: Option<String>,
    pub expires_at: Option<Timestamp>,
    pub decided_by: Option<String>,
    pub decided_at: Option<Timestamp>,
    pub note: Option<String>,
    pub comments: Vec<AccessComment>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AccessComment {
    pub at: Timestamp,
    pub author: String,
    pub text: String,
}

/// A decision to store.
#[derive(Debug, Clone)]
pub struct AccessDecision {
    /// `approved` or `denied`.
    pub state: &'static str,
    /// `once`, `always` or `template` (approvals).
    pub scope: Option<&'static str>,
    pub template: Option<String>,
    pub granted_rule: Option<String>,
    pub expires_at: Option<Timestamp>,
    pub decided_by: String,
    pub note: Option<String>,
}

/// A temporary grant in force: the rule an approval "once" added, until when.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AccessGrant {
    pub id: String,
    pub rule: String,
    pub expires_at: Timestamp,
}

const SELECT: &str = "SELECT a.*, t.name AS tenant_name, t.name || '/' || w.name AS ws_name \
     FROM access_requests a JOIN workspaces w ON w.id = a.workspace_id \
     JOIN tenants t ON t.id = w.tenant_id";

fn from_row(r: &sqlx::sqlite::SqliteRow) -> Result<AccessRequest> {
    let port: Option<i64> = r.try_get("port")?;
    Ok(AccessRequest {
        id: r.try_get("id")?,
        workspace_id: WorkspaceId::from_stored(r.try_get("workspace_id")?),
        workspace: r.try_get("ws_name")?,
        tenant: r.try_get("tenant_name")?,
        kind: r.try_get("kind")?,
        source: r.try_get("source")?,
        host: r.try_get("host")?,
        port: port.and_then(|p| u16::try_from(p).ok()),
        secret: r.try_get("secret")?,
        method: r.try_get("method")?,
        path: r.try_get("path")?,
        rule: r.try_get("rule")?,
        task_id: r
            .try_get::<Option<String>, _>("task_id")?
            .map(TaskId::from_stored),
        reason: r.try_get("reason")?,
        count: r.try_get::<i64, _>("count")?.max(0) as u64,
        first_seen: crate::try_ts(r, "first_seen")?,
        last_seen: crate::try_ts(r, "last_seen")?,
        state: r.try_get("state")?,
        scope: r.try_get("scope")?,
        template: r.try_get("template")?,
        granted_rule: r.try_get("granted_rule")?,
        expires_at: crate::try_ts_opt(r, "expires_at")?,
        decided_by: r.try_get("decided_by")?,
        decided_at: crate::try_ts_opt(r, "decided_at")?,
        note: r.try_get("note")?,
        comments: Vec::new(),
    })
}

impl Store {
    /// Records a sighting: bumps the workspace's open or denied request for the same target,
    /// or opens a new one unless the workspace has [`MAX_OPEN_PER_WORKSPACE`] open already.
    /// An explicit request's reason replaces the one stored.
    pub async fn record_access(&self, ws: &WorkspaceId, s: &AccessSighting) -> Result<Recorded> {
        let kind = s.target.kind();
        let dedup = s.target.dedup();
        let count = i64::try_from(s.count.max(1)).unwrap_or(i64::MAX);
        let method = cut_opt(s.method.as_deref(), MAX_SHORT);
        let path = cut_opt(s.path.as_deref(), MAX_TEXT);
        let rule = cut_opt(s.rule.as_deref(), MAX_TEXT);
        let task = s.task_id.as_ref().map(TaskId::as_str);
        let reason = cut_opt(s.reason.as_deref(), MAX_TEXT);
        let mut tx = self.pool.begin().await?;
        let existing: Option<String> = sqlx::query_scalar(
            "UPDATE access_requests SET count = min(count + min(?1, 1000000000), 1000000000000000), \
             last_seen = max(last_seen, ?2), \
             method = ?3, path = ?4, rule = COALESCE(?5, rule), task_id = COALESCE(?6, task_id), \
             reason = COALESCE(?7, reason) \
             WHERE workspace_id = ?8 AND kind = ?9 AND dedup = ?10 AND state IN ('open', 'denied') \
             RETURNING id",
        )
        .bind(count)
        .bind(s.last_seen.as_str())
        .bind(&method)
        .bind(&path)
        .bind(&rule)
        .bind(task)
        .bind(&reason)
        .bind(ws.as_str())
        .bind(kind)
        .bind(&dedup)
        .fetch_optional(&mut *tx)
        .await?;
        if let Some(id) = existing {
            tx.commit().await?;
            return Ok(Recorded::Repeated(AccessRequestId::from_stored(id)));
        }
        let open: i64 = sqlx::query_scalar(
            "SELECT COUNT(*) FROM access_requests WHERE workspace_id = ? AND state = 'open'",
        )
        .bind(ws.as_str())
        .fetch_one(&mut *tx)
        .await?;
        if open >= MAX_OPEN_PER_WORKSPACE {
            return Ok(Recorded::Capped);
        }
        let id = AccessRequestId::generate();
        let (host, port, secret) = match &s.target {
            AccessTarget::Egress { host, port } => (cut(host, MAX_HOST), Some(*port), None),
            AccessTarget::Secret { name, host } => {
                (cut(host, MAX_HOST), None, Some(cut(name, MAX_SHORT)))
            }
        };
        sqlx::query(
            "INSERT INTO access_requests (id, workspace_id, kind, source, dedup, host, port, secret, \
             method, path, rule, task_id, reason, count, first_seen, last_seen) \
             VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
        )
        .bind(id.as_str())
        .bind(ws.as_str())
        .bind(kind)
        .bind(s.source)
        .bind(&dedup)
        .bind(&host)
        .bind(port.map(i64::from))
        .bind(&secret)
        .bind(&method)
        .bind(&path)
        .bind(&rule)
        .bind(task)
        .bind(&reason)
        .bind(count)
        .bind(s.first_seen.as_str())
        .bind(s.last_seen.as_str())
        .execute(&mut *tx)
        .await?;
        tx.commit().await?;
        Ok(Recorded::Created(id))
    }

    /// Requests of one tenant (`None`: all), optionally of one workspace and in one state,
    /// newest sighting first, at most `limit`.
    pub async fn access_requests(
        &self,
        tenant: Option<&str>,
        workspace: Option<&WorkspaceId>,
        state: Option<&str>,
        limit: u32,
    ) -> Result<Vec<AccessRequest>> {
        let sql = format!(
            "{SELECT} WHERE (?1 IS NULL OR t.name = ?1) AND (?2 IS NULL OR a.workspace_id = ?2) \
             AND (?3 IS NULL OR a.state = ?3) ORDER BY a.last_seen DESC, a.id LIMIT ?4"
        );
        let rows = sqlx::query(&sql)
            .bind(tenant)
            .bind(workspace.map(|w| w.as_str()))
            .bind(state)
            .bind(i64::from(limit))
            .fetch_all(&self.pool)
            .await?;
        let mut out = rows.iter().map(from_row).collect::<Result<Vec<_>>>()?;
        for r in &mut out {
            r.comments = self.access_comments(&r.id).await?;
        }
        Ok(out)
    }

    /// One request of a workspace.
    pub async fn access_request(
        &self,
        ws: &WorkspaceId,
        id: &str,
    ) -> Result<Option<AccessRequest>> {
        let sql = format!("{SELECT} WHERE a.workspace_id = ? AND a.id = ?");
        let row = sqlx::query(&sql)
            .bind(ws.as_str())
            .bind(id)
            .fetch_optional(&self.pool)
            .await?;
        let Some(row) = row else {
            return Ok(None);
        };
        let mut r = from_row(&row)?;
        r.comments = self.access_comments(&r.id).await?;
        Ok(Some(r))
    }

    async fn access_comments(&self, id: &str) -> Result<Vec<AccessComment>> {
        let rows = sqlx::query(
            "SELECT at, author, text FROM access_request_comments WHERE request_id = ? ORDER BY id",
        )
        .bind(id)
        .fetch_all(&self.pool)
        .await?;
        rows.iter()
            .map(|r| {
                Ok(AccessComment {
                    at: crate::try_ts(r, "at")?,
                    author: r.try_get("author")?,
                    text: r.try_get("text")?,
                })
            })
            .collect()
    }

    /// Adds a comment; `false` when the request has [`MAX_COMMENTS`] already.
    pub async fn add_access_comment(&self, id: &str, author: &str, text: &str) -> Result<bool> {
        let mut tx = self.pool.begin().await?;
        let n: i64 =
            sqlx::query_scalar("SELECT COUNT(*) FROM access_request_comments WHERE request_id = ?")
                .bind(id)
                .fetch_one(&mut *tx)
                .await?;
        if n >= MAX_COMMENTS {
            return Ok(false);
        }
        sqlx::query(
            "INSERT INTO access_request_comments (request_id, at, author, text) VALUES (?, ?, ?, ?)",
        )
        .bind(id)
        .bind(now())
        .bind(cut(author, MAX_TEXT))
        .bind(cut(text, MAX_TEXT))
        .execute(&mut *tx)
        .await?;
        tx.commit().await?;
        Ok(true)
    }

    /// Stores the decision on an open request; `false` when it is no longer open.
    pub async fn decide_access(&self, id: &str, d: &AccessDecision) -> Result<bool> {
        let res = sqlx::query(
            "UPDATE access_requests SET state = ?, scope = ?, template = ?, granted_rule = ?, \
             expires_at = ?, decided_by = ?, decided_at = ?, note = ? \
             WHERE id = ? AND state = 'open'",
        )
        .bind(d.state)
        .bind(d.scope)
        .bind(&d.template)
        .bind(&d.granted_rule)
        .bind(crate::ts_text(d.expires_at.as_ref()))
        .bind(cut(&d.decided_by, MAX_TEXT))
        .bind(now())
        .bind(cut_opt(d.note.as_deref(), MAX_TEXT))
        .bind(id)
        .execute(&self.pool)
        .await?;
        Ok(res.rows_affected() == 1)
    }

    /// The temporary grants of a workspace in force at `at`, oldest first.
    pub async fn access_grants(
        &self,
        ws: &WorkspaceId,
        at: &Timestamp,
    ) -> Result<Vec<AccessGrant>> {
        let rows = sqlx::query(
            "SELECT id, granted_rule, expires_at FROM access_requests \
             WHERE workspace_id = ? AND state = 'approved' AND expires_at IS NOT NULL \
             AND granted_rule IS NOT NULL AND expires_at > ? ORDER BY decided_at, id",
        )
        .bind(ws.as_str())
        .bind(at.as_str())
        .fetch_all(&self.pool)
        .await?;
        rows.iter()
            .map(|r| {
                Ok(AccessGrant {
                    id: r.try_get(0)?,
                    rule: r.try_get(1)?,
                    expires_at: crate::try_ts(r, 2)?,
                })
            })
            .collect()
    }

    /// Marks the temporary grants expired at `at` as `expired`; returns their workspaces.
    pub async fn expire_access_grants(&self, at: &Timestamp) -> Result<Vec<WorkspaceId>> {
        let rows: Vec<String> = sqlx::query_scalar(
            "UPDATE access_requests SET state = 'expired' \
             WHERE state = 'approved' AND expires_at IS NOT NULL AND expires_at <= ? \
             RETURNING workspace_id",
        )
        .bind(at.as_str())
        .fetch_all(&self.pool)
        .await?;
        let mut out: Vec<WorkspaceId> = rows.into_iter().map(WorkspaceId::from_stored).collect();
        out.sort();
        out.dedup();
        Ok(out)
    }

    /// The earliest expiry of a grant in force, if any.
    pub async fn next_access_expiry(&self) -> Result<Option<String>> {
        Ok(sqlx::query_scalar(
            "SELECT min(expires_at) FROM access_requests \
             WHERE state = 'approved' AND expires_at IS NOT NULL",
        )
        .fetch_one(&self.pool)
        .await?)
    }

    /// Removes a workspace's requests and their comments (when the workspace is removed).
    pub async fn delete_access_requests(&self, ws: &WorkspaceId) -> Result<()> {
        let mut tx = self.pool.begin().await?;
        sqlx::query(
            "DELETE FROM access_request_comments WHERE request_id IN \
             (SELECT id FROM access_requests WHERE workspace_id = ?)",
        )
        .bind(ws.as_str())
        .execute(&mut *tx)
        .await?;
        sqlx::query("DELETE FROM access_requests WHERE workspace_id = ?")
            .bind(ws.as_str())
            .execute(&mut *tx)
            .await?;
        tx.commit().await?;
        Ok(())
    }
}
