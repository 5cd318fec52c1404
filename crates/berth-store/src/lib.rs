//! berth's state store: SQLite through sqlx, in WAL mode, migrations embedded in the binary.
//!
//! The store knows rows, not engines: lifecycle rules live in `berth-domain`, and the server
//! decides. Every write is a single statement or a transaction, so a crash never leaves a half
//! row behind.

use std::path::Path;
use std::str::FromStr;

use berth_domain::{
    Failure, FailureKind, Limits, McpServer, Name, TenantId, Timestamp, TokenId, WorkspaceId,
    WorkspaceState,
};
use sqlx::sqlite::{
    SqliteConnectOptions, SqliteJournalMode, SqlitePoolOptions, SqliteRow, SqliteSynchronous,
};
use sqlx::{Row, SqlitePool};

#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("{0} already exists")]
    Conflict(String),
    #[error("{0} not found")]
    NotFound(String),
    #[error("database error: {0}")]
    Db(#[from] sqlx::Error),
    #[error("database migration failed: {0}")]
    Migrate(#[from] sqlx::migrate::MigrateError),
    #[error("corrupt row: {0}")]
    Corrupt(String),
}

pub type Result<T, E = StoreError> = std::result::Result<T, E>;

/// Now, as the text a timestamp column holds.
pub(crate) fn now() -> String {
    Timestamp::now().to_string()
}

// Timestamp columns are TEXT in berth's form; rows convert at this edge. A stored value that is
// not RFC 3339 (an older form) still loads, as it was stored (`Timestamp::from_stored`).

/// A timestamp column (panics like `Row::get` on a column that is not text).
pub(crate) fn ts<I: sqlx::ColumnIndex<SqliteRow>>(r: &SqliteRow, col: I) -> Timestamp {
    Timestamp::from_stored(r.get::<String, _>(col))
}

/// A nullable timestamp column (see [`ts`]).
pub(crate) fn ts_opt<I: sqlx::ColumnIndex<SqliteRow>>(r: &SqliteRow, col: I) -> Option<Timestamp> {
    r.get::<Option<String>, _>(col).map(Timestamp::from_stored)
}

/// A timestamp column, or the error `Row::try_get` gives.
pub(crate) fn try_ts<I: sqlx::ColumnIndex<SqliteRow>>(
    r: &SqliteRow,
    col: I,
) -> Result<Timestamp, sqlx::Error> {
    r.try_get::<String, _>(col).map(Timestamp::from_stored)
}

/// A nullable timestamp column, or the error `Row::try_get` gives.
pub(crate) fn try_ts_opt<I: sqlx::ColumnIndex<SqliteRow>>(
    r: &SqliteRow,
    col: I,
) -> Result<Option<Timestamp>, sqlx::Error> {
    r.try_get::<Option<String>, _>(col)
        .map(|s| s.map(Timestamp::from_stored))
}

/// A timestamp written out in a test.
#[cfg(test)]
pub(crate) fn test_ts(s: &str) -> Timestamp {
    Timestamp::parse(s).expect("an RFC 3339 time")
}

/// An optional timestamp as the text bound to a nullable column.
pub(crate) fn ts_text(t: Option<&Timestamp>) -> Option<&str> {
    t.map(Timestamp::as_str)
}

#[derive(Debug, Clone)]
pub struct Tenant {
    pub id: TenantId,
    pub name: Name,
    pub created_at: Timestamp,
}

#[derive(Debug, Clone)]
pub struct Token {
    pub id: TokenId,
    pub name: String,
    pub role: String,
    pub tenant_id: Option<TenantId>,
    pub created_at: Timestamp,
}

#[derive(Debug, Clone)]
pub struct NewWorkspace {
    pub id: WorkspaceId,
    pub tenant_id: TenantId,
    pub name: Name,
    pub image: String,
    pub limits: Limits,
    pub network: String,
    pub volume: String,
    /// MCP servers the workspace's agents use (validated by the caller).
    pub mcp_servers: Vec<McpServer>,
}

#[derive(Debug, Clone)]
pub struct Workspace {
    pub id: WorkspaceId,
    pub tenant_id: TenantId,
    pub tenant: Name,
    pub name: Name,
    pub state: WorkspaceState,
    pub image: String,
    pub limits: Limits,
    pub network: String,
    pub volume: String,
    pub container_id: Option<String>,
    pub failure: Option<(Failure, Timestamp)>,
    pub oom_kills: u64,
    pub memcg_oom_seen: u64,
    /// MCP servers the workspace's agents use.
    pub mcp_servers: Vec<McpServer>,
    pub created_at: Timestamp,
    pub updated_at: Timestamp,
}

impl Workspace {
    /// `tenant/name`, the reference users type.
    pub fn qualified_name(&self) -> String {
        format!("{}/{}", self.tenant, self.name)
    }
}

#[derive(Debug, Clone, Default)]
pub struct AuditRecord {
    /// The token id (or a system actor: `reconciler`, `egress`).
    pub actor: String,
    pub action: String,
    pub target: String,
    pub result: String,
    pub detail: Option<String>,
    /// The token's name and role at the time, and its tenant (none for admin tokens).
    pub actor_name: Option<String>,
    pub actor_role: Option<String>,
    pub actor_tenant: Option<String>,
    /// The tenant the target belongs to (none for server-wide targets).
    pub tenant: Option<String>,
}

#[derive(Debug, Clone)]
pub struct AuditEntry {
    pub id: i64,
    pub at: Timestamp,
    pub record: AuditRecord,
}

#[derive(Clone)]
pub struct Store {
    pool: SqlitePool,
}

const WORKSPACE_COLUMNS: &str = "w.id, w.tenant_id, t.name AS tenant, w.name, w.state, w.image, \
     w.memory_bytes, w.nano_cpus, w.pids_limit, w.network, w.volume, w.container_id, \
     w.failure_reason, w.failure_message, w.failure_at, w.oom_kills, w.memcg_oom_seen, \
     w.mcp_servers, w.created_at, w.updated_at";

/// Connections to the database file. Each costs about 0.8 MiB of the server's memory under
/// load (its own worker thread, page and statement caches): with 8, the server's `RssAnon`
/// under the gateway bench's load was 13.8–16.9 MiB, with 4 10.8 MiB, with 2 10.4–11.5 MiB,
/// request rates alike (docs/benchmarks.md). SQLite runs one writer at a time anyway; 4
/// readers keep lists and event followers from queueing behind it.
const POOL_CONNECTIONS: u32 = 4;

impl Store {
    /// Opens (creating if needed) the database file and applies migrations.
    pub async fn open(path: &Path) -> Result<Self> {
        let opts = SqliteConnectOptions::new()
            .filename(path)
            .create_if_missing(true)
            .journal_mode(SqliteJournalMode::Wal)
            .synchronous(SqliteSynchronous::Normal)
            .foreign_keys(true)
            .busy_timeout(std::time::Duration::from_secs(5));
        let pool = SqlitePoolOptions::new()
            .max_connections(POOL_CONNECTIONS)
            .connect_with(opts)
            .await?;
        Self::migrate(pool).await
    }

    /// A private in-memory database, for tests.
    pub async fn open_in_memory() -> Result<Self> {
        let opts = SqliteConnectOptions::from_str("sqlite::memory:")?.foreign_keys(true);
        // One connection: every connection to :memory: is its own database.
        let pool = SqlitePoolOptions::new()
            .max_connections(1)
            .connect_with(opts)
            .await?;
        Self::migrate(pool).await
    }

    async fn migrate(pool: SqlitePool) -> Result<Self> {
        sqlx::migrate!("./migrations").run(&pool).await?;
        Ok(Self { pool })
    }

    /// Checkpoints the WAL and closes all connections.
    pub async fn close(&self) {
        let _ = sqlx::query("PRAGMA wal_checkpoint(TRUNCATE)")
            .execute(&self.pool)
            .await;
        self.pool.close().await;
    }

    // ---- server meta ----

    pub async fn meta(&self, key: &str) -> Result<Option<String>> {
        let row = sqlx::query("SELECT value FROM server_meta WHERE key = ?")
            .bind(key)
            .fetch_optional(&self.pool)
            .await?;
        Ok(row.map(|r| r.get::<String, _>(0)))
    }

    pub async fn set_meta(&self, key: &str, value: &str) -> Result<()> {
        sqlx::query(
            "INSERT INTO server_meta (key, value) VALUES (?, ?) \
             ON CONFLICT(key) DO UPDATE SET value = excluded.value",
        )
        .bind(key)
        .bind(value)
        .execute(&self.pool)
        .await?;
        Ok(())
    }

    // ---- tenants ----

    /// Returns the tenant with this name, creating it on first use.
    pub async fn ensure_tenant(&self, name: &Name) -> Result<Tenant> {
        if let Some(t) = self.find_tenant(name).await? {
            return Ok(t);
        }
        let id = TenantId::generate();
        let at = now();
        sqlx::query("INSERT INTO tenants (id, name, created_at) VALUES (?, ?, ?) ON CONFLICT(name) DO NOTHING")
            .bind(id.as_str())
            .bind(name.as_str())
            .bind(&at)
            .execute(&self.pool)
            .await?;
        self.find_tenant(name)
            .await?
            .ok_or_else(|| StoreError::NotFound(format!("tenant {name}")))
    }

    pub async fn find_tenant(&self, name: &Name) -> Result<Option<Tenant>> {
        let row = sqlx::query("SELECT id, name, created_at FROM tenants WHERE name = ?")
            .bind(name.as_str())
            .fetch_optional(&self.pool)
            .await?;
        row.map(|r| {
            Ok(Tenant {
                id: TenantId::from_stored(r.get("id")),
                name: parse_name(r.get("name"))?,
                created_at: crate::ts(&r, "created_at"),
            })
        })
        .transpose()
    }

    // ---- tokens ----

    pub async fn count_tokens(&self) -> Result<i64> {
        Ok(sqlx::query("SELECT COUNT(*) FROM tokens")
            .fetch_one(&self.pool)
            .await?
            .get(0))
    }

    /// Stores a token by its hash. The caller hashes; the store never sees the token.
    pub async fn insert_token(&self, name: &str, hash: &str, role: &str) -> Result<Token> {
        let token = Token {
            id: TokenId::generate(),
            name: name.to_owned(),
            role: role.to_owned(),
            tenant_id: None,
            created_at: Timestamp::now(),
        };
        let res = sqlx::query(
            "INSERT INTO tokens (id, name, hash, role, created_at) VALUES (?, ?, ?, ?, ?)",
        )
        .bind(token.id.as_str())
        .bind(&token.name)
        .bind(hash)
        .bind(&token.role)
        .bind(token.created_at.as_str())
        .execute(&self.pool)
        .await;
        match res {
            Ok(_) => Ok(token),
            Err(e) if is_unique_violation(&e) => Err(StoreError::Conflict("token".into())),
            Err(e) => Err(e.into()),
        }
    }

    /// The live (not revoked) token with this hash.
    pub async fn find_token(&self, hash: &str) -> Result<Option<Token>> {
        let row = sqlx::query(
            "SELECT id, name, role, tenant_id, created_at FROM tokens \
             WHERE hash = ? AND revoked_at IS NULL",
        )
        .bind(hash)
        .fetch_optional(&self.pool)
        .await?;
        Ok(row.map(|r| Token {
            id: TokenId::from_stored(r.get("id")),
            name: r.get("name"),
            role: r.get("role"),
            tenant_id: r
                .get::<Option<String>, _>("tenant_id")
                .map(TenantId::from_stored),
            created_at: crate::ts(&r, "created_at"),
        }))
    }

    // ---- workspaces ----

    /// Inserts a workspace in state `creating`. A name taken in the tenant is a `Conflict`.
    pub async fn insert_workspace(&self, w: &NewWorkspace) -> Result<Workspace> {
        let at = now();
        let mcp = serde_json::to_string(&w.mcp_servers)
            .map_err(|e| StoreError::Corrupt(format!("mcp servers: {e}")))?;
        let res = sqlx::query(
            "INSERT INTO workspaces (id, tenant_id, name, state, image, memory_bytes, nano_cpus, \
             pids_limit, network, volume, mcp_servers, created_at, updated_at) \
             VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
        )
        .bind(w.id.as_str())
        .bind(w.tenant_id.as_str())
        .bind(w.name.as_str())
        .bind(WorkspaceState::Creating.as_str())
        .bind(&w.image)
        .bind(w.limits.memory_bytes)
        .bind(w.limits.nano_cpus)
        .bind(w.limits.pids)
        .bind(&w.network)
        .bind(&w.volume)
        .bind(&mcp)
        .bind(&at)
        .bind(&at)
        .execute(&self.pool)
        .await;
        match res {
            Ok(_) => self.workspace(&w.id).await,
            Err(e) if is_unique_violation(&e) => {
                Err(StoreError::Conflict(format!("workspace {}", w.name)))
            }
            Err(e) => Err(e.into()),
        }
    }

    pub async fn workspace(&self, id: &WorkspaceId) -> Result<Workspace> {
        self.find_workspace_by_id(id)
            .await?
            .ok_or_else(|| StoreError::NotFound(format!("workspace {id}")))
    }

    pub async fn find_workspace_by_id(&self, id: &WorkspaceId) -> Result<Option<Workspace>> {
        let sql = format!(
            "SELECT {WORKSPACE_COLUMNS} FROM workspaces w JOIN tenants t ON t.id = w.tenant_id \
             WHERE w.id = ?"
        );
        let row = sqlx::query(&sql)
            .bind(id.as_str())
            .fetch_optional(&self.pool)
            .await?;
        row.map(|r| workspace_from_row(&r)).transpose()
    }

    pub async fn find_workspace(&self, tenant: &Name, name: &Name) -> Result<Option<Workspace>> {
        let sql = format!(
            "SELECT {WORKSPACE_COLUMNS} FROM workspaces w JOIN tenants t ON t.id = w.tenant_id \
             WHERE t.name = ? AND w.name = ?"
        );
        let row = sqlx::query(&sql)
            .bind(tenant.as_str())
            .bind(name.as_str())
            .fetch_optional(&self.pool)
            .await?;
        row.map(|r| workspace_from_row(&r)).transpose()
    }

    /// All workspaces of this name, across tenants.
    pub async fn find_workspaces_named(&self, name: &Name) -> Result<Vec<Workspace>> {
        let sql = format!(
            "SELECT {WORKSPACE_COLUMNS} FROM workspaces w JOIN tenants t ON t.id = w.tenant_id \
             WHERE w.name = ? ORDER BY t.name"
        );
        let rows = sqlx::query(&sql)
            .bind(name.as_str())
            .fetch_all(&self.pool)
            .await?;
        rows.iter().map(workspace_from_row).collect()
    }

    /// Workspaces ordered by tenant then name; only one tenant's when `tenant` is set.
    pub async fn list_workspaces(&self, tenant: Option<&Name>) -> Result<Vec<Workspace>> {
        let sql = format!(
            "SELECT {WORKSPACE_COLUMNS} FROM workspaces w JOIN tenants t ON t.id = w.tenant_id \
             WHERE (?1 IS NULL OR t.name = ?1) ORDER BY t.name, w.name"
        );
        let rows = sqlx::query(&sql)
            .bind(tenant.map(|t| t.as_str().to_owned()))
            .fetch_all(&self.pool)
            .await?;
        rows.iter().map(workspace_from_row).collect()
    }

    /// Sets the state. `failure` replaces the recorded failure when given; moving to `running`
    /// through a start keeps the last failure visible (it is history, not current state).
    pub async fn set_state(
        &self,
        id: &WorkspaceId,
        state: WorkspaceState,
        failure: Option<&Failure>,
    ) -> Result<Workspace> {
        let at = now();
        let res =
            match failure {
                Some(f) => sqlx::query(
                    "UPDATE workspaces SET state = ?, failure_reason = ?, failure_message = ?, \
                     failure_at = ?, updated_at = ? WHERE id = ?",
                )
                .bind(state.as_str())
                .bind(f.reason.as_str())
                .bind(&f.message)
                .bind(&at)
                .bind(&at)
                .bind(id.as_str())
                .execute(&self.pool)
                .await?,
                None => {
                    sqlx::query("UPDATE workspaces SET state = ?, updated_at = ? WHERE id = ?")
                        .bind(state.as_str())
                        .bind(&at)
                        .bind(id.as_str())
                        .execute(&self.pool)
                        .await?
                }
            };
        if res.rows_affected() == 0 {
            return Err(StoreError::NotFound(format!("workspace {id}")));
        }
        self.workspace(id).await
    }

    /// Records the engine container backing the workspace (None when it was removed). A new
    /// container starts with a fresh memory cgroup, so the OOM counter baseline resets.
    pub async fn set_container(&self, id: &WorkspaceId, container_id: Option<&str>) -> Result<()> {
        sqlx::query(
            "UPDATE workspaces SET container_id = ?, memcg_oom_seen = 0, updated_at = ? WHERE id = ?",
        )
        .bind(container_id)
        .bind(now())
        .bind(id.as_str())
        .execute(&self.pool)
        .await?;
        Ok(())
    }

    /// Replaces the image the workspace's container is made from (a template's derived image,
    /// or the base of a new template revision); the next container made uses it.
    pub async fn set_workspace_image(&self, id: &WorkspaceId, image: &str) -> Result<()> {
        sqlx::query("UPDATE workspaces SET image = ?, updated_at = ? WHERE id = ?")
            .bind(image)
            .bind(now())
            .bind(id.as_str())
            .execute(&self.pool)
            .await?;
        Ok(())
    }

    /// Replaces the workspace's resource caps (validated by the caller).
    pub async fn set_workspace_limits(&self, id: &WorkspaceId, limits: &Limits) -> Result<()> {
        sqlx::query(
            "UPDATE workspaces SET memory_bytes = ?, nano_cpus = ?, pids_limit = ?, updated_at = ? \
             WHERE id = ?",
        )
        .bind(limits.memory_bytes)
        .bind(limits.nano_cpus)
        .bind(limits.pids)
        .bind(now())
        .bind(id.as_str())
        .execute(&self.pool)
        .await?;
        Ok(())
    }

    /// Replaces the MCP servers the workspace's agents use (validated by the caller).
    pub async fn set_workspace_mcp_servers(
        &self,
        id: &WorkspaceId,
        servers: &[McpServer],
    ) -> Result<()> {
        let mcp = serde_json::to_string(servers)
            .map_err(|e| StoreError::Corrupt(format!("mcp servers: {e}")))?;
        sqlx::query("UPDATE workspaces SET mcp_servers = ?, updated_at = ? WHERE id = ?")
            .bind(&mcp)
            .bind(now())
            .bind(id.as_str())
            .execute(&self.pool)
            .await?;
        Ok(())
    }

    /// Folds a reading of the container's memcg `oom_kill` counter into the workspace's total.
    /// Returns the number of new kills since the last reading (0 if none). A counter lower than
    /// the last reading means a new cgroup (the container restarted): its value counts in full.
    pub async fn observe_oom_counter(&self, id: &WorkspaceId, counter: u64) -> Result<u64> {
        let mut tx = self.pool.begin().await?;
        // Take the write lock before reading (see `append_task_events`).
        sqlx::query("UPDATE workspaces SET memcg_oom_seen = memcg_oom_seen WHERE id = ?")
            .bind(id.as_str())
            .execute(&mut *tx)
            .await?;
        let row = sqlx::query("SELECT memcg_oom_seen FROM workspaces WHERE id = ?")
            .bind(id.as_str())
            .fetch_optional(&mut *tx)
            .await?
            .ok_or_else(|| StoreError::NotFound(format!("workspace {id}")))?;
        let seen = row.get::<i64, _>(0).max(0) as u64;
        let new = if counter >= seen {
            counter - seen
        } else {
            counter
        };
        if new > 0 || counter != seen {
            let at = now();
            let mut q =
                String::from("UPDATE workspaces SET memcg_oom_seen = ?, oom_kills = oom_kills + ?");
            if new > 0 {
                q.push_str(
                    ", failure_reason = 'oom', failure_message = ?, failure_at = ?, updated_at = ?",
                );
            }
            q.push_str(" WHERE id = ?");
            let mut query = sqlx::query(&q).bind(counter as i64).bind(new as i64);
            if new > 0 {
                query = query
                    .bind(format!(
                        "the kernel killed {new} process(es) for exceeding the workspace's memory limit"
                    ))
                    .bind(at.clone())
                    .bind(at);
            }
            query.bind(id.as_str()).execute(&mut *tx).await?;
        }
        tx.commit().await?;
        Ok(new)
    }

    pub async fn delete_workspace(&self, id: &WorkspaceId) -> Result<()> {
        sqlx::query("DELETE FROM workspaces WHERE id = ?")
            .bind(id.as_str())
            .execute(&self.pool)
            .await?;
        self.delete_access_requests(id).await
    }

    // ---- audit ----

    pub async fn append_audit(&self, r: &AuditRecord) -> Result<i64> {
        let res = sqlx::query(
            "INSERT INTO audit (at, actor, action, target, result, detail, actor_name, actor_role, \
             actor_tenant, tenant) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
        )
        .bind(now())
        .bind(&r.actor)
        .bind(&r.action)
        .bind(&r.target)
        .bind(&r.result)
        .bind(&r.detail)
        .bind(&r.actor_name)
        .bind(&r.actor_role)
        .bind(&r.actor_tenant)
        .bind(&r.tenant)
        .execute(&self.pool)
        .await?;
        Ok(res.last_insert_rowid())
    }

    /// Newest first; only rows of `tenant`'s objects when it is set.
    pub async fn list_audit(
        &self,
        limit: i64,
        target: Option<&str>,
        tenant: Option<&str>,
    ) -> Result<Vec<AuditEntry>> {
        let rows = sqlx::query(
            "SELECT id, at, actor, action, target, result, detail, actor_name, actor_role, \
             actor_tenant, tenant FROM audit \
             WHERE (?1 IS NULL OR target = ?1) AND (?3 IS NULL OR tenant = ?3) \
             ORDER BY id DESC LIMIT ?2",
        )
        .bind(target)
        .bind(limit)
        .bind(tenant)
        .fetch_all(&self.pool)
        .await?;
        Ok(rows
            .iter()
            .map(|r| AuditEntry {
                id: r.get("id"),
                at: crate::ts(r, "at"),
                record: AuditRecord {
                    actor: r.get("actor"),
                    action: r.get("action"),
                    target: r.get("target"),
                    result: r.get("result"),
                    detail: r.get("detail"),
                    actor_name: r.get("actor_name"),
                    actor_role: r.get("actor_role"),
                    actor_tenant: r.get("actor_tenant"),
                    tenant: r.get("tenant"),
                },
            })
            .collect())
    }
}

fn is_unique_violation(e: &sqlx::Error) -> bool {
    matches!(e, sqlx::Error::Database(d) if d.is_unique_violation())
}

pub(crate) fn parse_name(s: String) -> Result<Name> {
    Name::parse(&s).map_err(|e| StoreError::Corrupt(e.to_string()))
}

fn workspace_from_row(r: &sqlx::sqlite::SqliteRow) -> Result<Workspace> {
    let state: String = r.get("state");
    let state = WorkspaceState::parse(&state)
        .ok_or_else(|| StoreError::Corrupt(format!("unknown workspace state {state:?}")))?;
    let failure = match (
        r.get::<Option<String>, _>("failure_reason"),
        r.get::<Option<String>, _>("failure_message"),
        r.get::<Option<String>, _>("failure_at"),
    ) {
        (Some(reason), Some(message), Some(at)) => {
            let reason = FailureKind::parse(&reason)
                .ok_or_else(|| StoreError::Corrupt(format!("unknown failure {reason:?}")))?;
            Some((Failure { reason, message }, Timestamp::from_stored(at)))
        }
        _ => None,
    };
    Ok(Workspace {
        id: WorkspaceId::from_stored(r.get("id")),
        tenant_id: TenantId::from_stored(r.get("tenant_id")),
        tenant: parse_name(r.get("tenant"))?,
        name: parse_name(r.get("name"))?,
        state,
        image: r.get("image"),
        limits: Limits {
            memory_bytes: r.get("memory_bytes"),
            nano_cpus: r.get("nano_cpus"),
            pids: r.get("pids_limit"),
        },
        network: r.get("network"),
        volume: r.get("volume"),
        container_id: r.get("container_id"),
        failure,
        oom_kills: r.get::<i64, _>("oom_kills").max(0) as u64,
        memcg_oom_seen: r.get::<i64, _>("memcg_oom_seen").max(0) as u64,
        mcp_servers: serde_json::from_str(&r.get::<String, _>("mcp_servers"))
            .map_err(|e| StoreError::Corrupt(format!("workspace mcp_servers: {e}")))?,
        created_at: crate::ts(r, "created_at"),
        updated_at: crate::ts(r, "updated_at"),
    })
}

pub mod access;
mod approvals;
mod egress;
mod egress_templates;
mod notify;
mod retention;
mod secrets;
mod session_keys;
mod task_deliveries;
mod task_snapshots;
mod tasks;
mod templates;
mod tokens;
pub use secrets::{SealedSecret, SecretUse};
pub use tokens::{NewToken, TokenRecord};
mod usage;
mod users;
pub use access::{
    AccessComment, AccessDecision, AccessGrant, AccessRequest, AccessSighting, AccessTarget,
    Recorded as AccessRecorded,
};
pub use approvals::{Approval, InboxItem, MAX_OPEN_PER_TASK};
pub use egress::{EgressEntry, EgressRecord};
pub use egress_templates::{EgressTemplate, TemplateRemoval, TemplateUser};
pub use notify::{NewNotifyEvent, NotifyAttempt, NotifyDelivery, NotifyEvent, NotifySubscription};
pub use session_keys::{NewSessionKey, SessionKey};
pub use task_deliveries::{TaskDelivery, TaskPullRequest, TaskPush};
pub use task_snapshots::{is_object_id, TaskSnapshot};
pub use tasks::{NewTask, Task, MAX_COST_USD, MAX_COUNT, MAX_LAST_MESSAGE};
pub use templates::{NewStep, Provision, ProvisionStep, TemplateRevision};
pub use usage::{Budget, CallTotals, LlmCall, Spent, UsageBy, UsageFilter, UsageRow};
pub use users::{User, UserLogin, UserSession};

#[cfg(any(test, feature = "test-support"))]
pub mod test_support;
#[cfg(test)]
#[path = "lib_tests.rs"]
mod tests;
