//! API tokens (stored by hash only), tenants' listing and quotas.

use berth_domain::{Name, Quota, QuotaUse, TenantId, Timestamp, TokenId};
use sqlx::Row;

use crate::{is_unique_violation, now, parse_name, Result, Store, StoreError, Tenant};

/// A stored token as the API shows it (never the token itself).
#[derive(Debug, Clone)]
pub struct TokenRecord {
    pub id: TokenId,
    pub name: String,
    pub role: String,
    /// `None` for server-wide (admin) tokens.
    pub tenant: Option<Name>,
    pub created_at: Timestamp,
    pub expires_at: Option<Timestamp>,
    pub last_used_at: Option<Timestamp>,
    pub revoked_at: Option<Timestamp>,
    /// For a device token: the token it was derived from (revoking that one revokes it too).
    pub parent_id: Option<TokenId>,
}

const TOKEN_COLUMNS: &str = "k.id, k.name, k.role, t.name AS tenant, k.created_at, k.expires_at, \
     k.last_used_at, k.revoked_at, k.parent_id";

fn token_from_row(r: &sqlx::sqlite::SqliteRow) -> Result<TokenRecord> {
    Ok(TokenRecord {
        id: TokenId::from_stored(r.get("id")),
        name: r.get("name"),
        role: r.get("role"),
        tenant: r
            .get::<Option<String>, _>("tenant")
            .map(parse_name)
            .transpose()?,
        created_at: crate::ts(r, "created_at"),
        expires_at: crate::ts_opt(r, "expires_at"),
        last_used_at: crate::ts_opt(r, "last_used_at"),
        revoked_at: crate::ts_opt(r, "revoked_at"),
        parent_id: r
            .get::<Option<String>, _>("parent_id")
            .map(TokenId::from_stored),
    })
}

/// A token to store: its hash (the caller hashes), and for tenant tokens the tenant.
pub struct NewToken<'a> {
    pub name: &'a str,
    pub hash: &'a str,
    pub role: &'a str,
    pub tenant: Option<&'a Name>,
    pub expires_at: Option<&'a Timestamp>,
    /// A device token's origin (see [`TokenRecord::parent_id`]).
    pub parent: Option<&'a TokenId>,
}

/// An `ORDER`-stable query over tokens joined with their tenant's name.
fn token_query(filter: &str) -> String {
    format!(
        "SELECT {TOKEN_COLUMNS} FROM tokens k LEFT JOIN tenants t ON t.id = k.tenant_id {filter}"
    )
}

impl Store {
    /// Stores a token; the tenant is created on first use.
    pub async fn create_token(&self, t: &NewToken<'_>) -> Result<TokenRecord> {
        let tenant_id = match t.tenant {
            Some(n) => Some(self.ensure_tenant(n).await?.id),
            None => None,
        };
        let id = TokenId::generate();
        let res = sqlx::query(
            "INSERT INTO tokens (id, name, hash, role, tenant_id, created_at, expires_at, parent_id) \
             VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
        )
        .bind(id.as_str())
        .bind(t.name)
        .bind(t.hash)
        .bind(t.role)
        .bind(tenant_id.as_ref().map(TenantId::as_str))
        .bind(now())
        .bind(t.expires_at.map(Timestamp::as_str))
        .bind(t.parent.map(TokenId::as_str))
        .execute(&self.pool)
        .await;
        match res {
            Ok(_) => self
                .token(&id)
                .await?
                .ok_or_else(|| StoreError::NotFound(format!("token {id}"))),
            Err(e) if is_unique_violation(&e) => Err(StoreError::Conflict("token".into())),
            Err(e) => Err(e.into()),
        }
    }

    /// The token with this hash, revoked or expired ones included (the caller tells why not).
    pub async fn lookup_token(&self, hash: &str) -> Result<Option<TokenRecord>> {
        sqlx::query(&token_query("WHERE k.hash = ?"))
            .bind(hash)
            .fetch_optional(&self.pool)
            .await?
            .as_ref()
            .map(token_from_row)
            .transpose()
    }

    pub async fn token(&self, id: &TokenId) -> Result<Option<TokenRecord>> {
        sqlx::query(&token_query("WHERE k.id = ?"))
            .bind(id.as_str())
            .fetch_optional(&self.pool)
            .await?
            .as_ref()
            .map(token_from_row)
            .transpose()
    }

    /// Tokens, oldest first; only `tenant`'s when it is set.
    pub async fn list_tokens(&self, tenant: Option<&Name>) -> Result<Vec<TokenRecord>> {
        sqlx::query(&token_query(
            "WHERE (?1 IS NULL OR t.name = ?1) ORDER BY k.created_at, k.id",
        ))
        .bind(tenant.map(Name::as_str))
        .fetch_all(&self.pool)
        .await?
        .iter()
        .map(token_from_row)
        .collect()
    }

    /// Marks a token revoked; false when it already was (or does not exist).
    pub async fn revoke_token(&self, id: &TokenId) -> Result<bool> {
        let at = now();
        let mut tx = self.pool.begin().await?;
        let res =
            sqlx::query("UPDATE tokens SET revoked_at = ? WHERE id = ? AND revoked_at IS NULL")
                .bind(&at)
                .bind(id.as_str())
                .execute(&mut *tx)
                .await?;
        // The device tokens derived from it go with it (one level: a device token derives none).
        sqlx::query("UPDATE tokens SET revoked_at = ? WHERE parent_id = ? AND revoked_at IS NULL")
            .bind(&at)
            .bind(id.as_str())
            .execute(&mut *tx)
            .await?;
        tx.commit().await?;
        Ok(res.rows_affected() == 1)
    }

    /// Sets `last_used_at = at` unless it is already at or after `stale_before`: one write per
    /// token per interval, however many requests. True when it wrote.
    pub async fn touch_token(
        &self,
        id: &TokenId,
        at: &Timestamp,
        stale_before: &Timestamp,
    ) -> Result<bool> {
        let res = sqlx::query(
            "UPDATE tokens SET last_used_at = ?1 WHERE id = ?2 \
             AND (last_used_at IS NULL OR last_used_at < ?3)",
        )
        .bind(at.as_str())
        .bind(id.as_str())
        .bind(stale_before.as_str())
        .execute(&self.pool)
        .await?;
        Ok(res.rows_affected() == 1)
    }

    // ---- tenants and quotas ----

    /// Every tenant, by name.
    pub async fn list_tenants(&self) -> Result<Vec<Tenant>> {
        sqlx::query("SELECT id, name, created_at FROM tenants ORDER BY name")
            .fetch_all(&self.pool)
            .await?
            .iter()
            .map(|r| {
                Ok(Tenant {
                    id: TenantId::from_stored(r.get("id")),
                    name: parse_name(r.get("name"))?,
                    created_at: crate::ts(r, "created_at"),
                })
            })
            .collect()
    }

    /// The tenant's quota (all `None` when none was set).
    pub async fn tenant_quota(&self, tenant: &TenantId) -> Result<Quota> {
        let row = sqlx::query(
            "SELECT max_workspaces, memory_bytes, nano_cpus, max_tasks FROM tenant_quotas \
             WHERE tenant_id = ?",
        )
        .bind(tenant.as_str())
        .fetch_optional(&self.pool)
        .await?;
        let count = |r: &sqlx::sqlite::SqliteRow, c: &str| {
            r.get::<Option<i64>, _>(c)
                .map(|v| u32::try_from(v.max(0)).unwrap_or(u32::MAX))
        };
        Ok(row.map_or(Quota::default(), |r| Quota {
            max_workspaces: count(&r, "max_workspaces"),
            memory_bytes: r.get("memory_bytes"),
            nano_cpus: r.get("nano_cpus"),
            max_tasks: count(&r, "max_tasks"),
        }))
    }

    /// Replaces the tenant's quota.
    pub async fn set_tenant_quota(&self, tenant: &TenantId, q: &Quota) -> Result<()> {
        sqlx::query(
            "INSERT INTO tenant_quotas (tenant_id, max_workspaces, memory_bytes, nano_cpus, \
             max_tasks, updated_at) VALUES (?1, ?2, ?3, ?4, ?5, ?6) \
             ON CONFLICT(tenant_id) DO UPDATE SET max_workspaces = ?2, memory_bytes = ?3, \
             nano_cpus = ?4, max_tasks = ?5, updated_at = ?6",
        )
        .bind(tenant.as_str())
        .bind(q.max_workspaces.map(i64::from))
        .bind(q.memory_bytes)
        .bind(q.nano_cpus)
        .bind(q.max_tasks.map(i64::from))
        .bind(now())
        .execute(&self.pool)
        .await?;
        Ok(())
    }

    /// What the tenant holds, as its quota counts it: every workspace; the memory and CPUs of
    /// those running or on their way there (`except` left out, e.g. the one being started);
    /// its tasks at work (queued, starting, running or waiting for input).
    pub async fn tenant_usage(
        &self,
        tenant: &TenantId,
        except: Option<&berth_domain::WorkspaceId>,
    ) -> Result<QuotaUse> {
        let w = sqlx::query(
            "SELECT COUNT(*) AS n, \
             COALESCE(SUM(CASE WHEN state IN ('creating', 'starting', 'running') AND id IS NOT ?2 \
               THEN memory_bytes END), 0) AS mem, \
             COALESCE(SUM(CASE WHEN state IN ('creating', 'starting', 'running') AND id IS NOT ?2 \
               THEN nano_cpus END), 0) AS cpus \
             FROM workspaces WHERE tenant_id = ?1",
        )
        .bind(tenant.as_str())
        .bind(except.map(|e| e.as_str().to_owned()))
        .fetch_one(&self.pool)
        .await?;
        let tasks: i64 = sqlx::query(
            "SELECT COUNT(*) FROM tasks k JOIN workspaces w ON w.id = k.workspace_id \
             WHERE w.tenant_id = ? AND k.state IN ('queued', 'starting', 'running', 'waiting')",
        )
        .bind(tenant.as_str())
        .fetch_one(&self.pool)
        .await?
        .get(0);
        let count = |n: i64| u32::try_from(n.max(0)).unwrap_or(u32::MAX);
        Ok(QuotaUse {
            workspaces: count(w.get("n")),
            memory_bytes: w.get("mem"),
            nano_cpus: w.get("cpus"),
            tasks: count(tasks),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    async fn store_with(tenant: &str) -> (Store, Name) {
        let s = Store::open_in_memory().await.unwrap();
        (s, Name::parse(tenant).unwrap())
    }

    #[tokio::test]
    async fn tenant_tokens_are_listed_per_tenant_and_revoked_once() {
        let (s, acme) = store_with("acme").await;
        let globex = Name::parse("globex").unwrap();
        let expires = crate::test_ts("2030-01-01T00:00:00.000Z");
        let new = |name, hash, tenant| NewToken {
            name,
            hash,
            role: "member",
            tenant,
            expires_at: Some(&expires),
            parent: None,
        };
        let a = s
            .create_token(&new("alice", "h1", Some(&acme)))
            .await
            .unwrap();
        s.create_token(&new("bob", "h2", Some(&globex)))
            .await
            .unwrap();
        assert_eq!(a.tenant.as_ref(), Some(&acme));
        assert_eq!(a.expires_at.as_deref(), Some("2030-01-01T00:00:00.000Z"));
        assert_eq!(s.list_tokens(Some(&acme)).await.unwrap().len(), 1);
        assert_eq!(s.list_tokens(None).await.unwrap().len(), 2);
        assert!(matches!(
            s.create_token(&new("again", "h1", None)).await,
            Err(StoreError::Conflict(_))
        ));
        assert!(s.revoke_token(&a.id).await.unwrap());
        assert!(!s.revoke_token(&a.id).await.unwrap());
        let found = s.lookup_token("h1").await.unwrap().unwrap();
        assert!(
            found.revoked_at.is_some(),
            "revoked tokens are still found, to say why"
        );
    }

    #[tokio::test]
    async fn revoking_a_token_revokes_its_device_tokens_only() {
        let (s, acme) = store_with("acme").await;
        let mk = |name, hash, parent| NewToken {
            name,
            hash,
            role: "member",
            tenant: Some(&acme),
            expires_at: None,
            parent,
        };
        let alice = s.create_token(&mk("alice", "h1", None)).await.unwrap();
        let bob = s.create_token(&mk("bob", "h2", None)).await.unwrap();
        let phone = s
            .create_token(&mk("alice.device", "h3", Some(&alice.id)))
            .await
            .unwrap();
        let bobs = s
            .create_token(&mk("bob.device", "h4", Some(&bob.id)))
            .await
            .unwrap();
        assert_eq!(phone.parent_id.as_ref(), Some(&alice.id));
        assert!(s.revoke_token(&alice.id).await.unwrap());
        let revoked = |id| {
            let s = &s;
            async move { s.token(id).await.unwrap().unwrap().revoked_at.is_some() }
        };
        assert!(
            revoked(&phone.id).await,
            "the device token goes with its origin"
        );
        assert!(!revoked(&bob.id).await);
        assert!(!revoked(&bobs.id).await, "another token's device stays");
        // Revoking a device token alone leaves its origin alone.
        assert!(s.revoke_token(&bobs.id).await.unwrap());
        assert!(!revoked(&bob.id).await);
    }

    #[tokio::test]
    async fn last_used_is_written_once_per_interval() {
        let (s, acme) = store_with("acme").await;
        let t = s
            .create_token(&NewToken {
                name: "a",
                hash: "h",
                role: "viewer",
                tenant: Some(&acme),
                expires_at: None,
                parent: None,
            })
            .await
            .unwrap();
        let t0 = "2026-12-04T10:00:00.000Z";
        assert!(s
            .touch_token(
                &t.id,
                &crate::test_ts(t0),
                &crate::test_ts("2026-12-04T09:59:00.000Z")
            )
            .await
            .unwrap());
        // 30 s later: the last write is newer than a minute ago, so nothing is written.
        let t1 = "2026-12-04T10:00:30.000Z";
        assert!(!s
            .touch_token(
                &t.id,
                &crate::test_ts(t1),
                &crate::test_ts("2026-12-04T09:59:30.000Z")
            )
            .await
            .unwrap());
        let t2 = "2026-12-04T10:01:00.001Z";
        assert!(s
            .touch_token(
                &t.id,
                &crate::test_ts(t2),
                &crate::test_ts("2026-12-04T10:00:00.001Z")
            )
            .await
            .unwrap());
        let found = s.token(&t.id).await.unwrap().unwrap();
        assert_eq!(found.last_used_at.as_deref(), Some(t2));
    }

    #[tokio::test]
    async fn quotas_round_trip_and_default_to_unlimited() {
        let (s, acme) = store_with("acme").await;
        let t = s.ensure_tenant(&acme).await.unwrap();
        assert!(s.tenant_quota(&t.id).await.unwrap().is_unlimited());
        let q = Quota {
            max_workspaces: Some(5),
            memory_bytes: Some(8 << 30),
            nano_cpus: None,
            max_tasks: Some(3),
        };
        s.set_tenant_quota(&t.id, &q).await.unwrap();
        assert_eq!(s.tenant_quota(&t.id).await.unwrap(), q);
        let used = s.tenant_usage(&t.id, None).await.unwrap();
        assert_eq!(used, QuotaUse::default());
        assert_eq!(s.list_tenants().await.unwrap()[0].name, acme);
    }
}
