//! Encrypted secrets and their use by workspaces. The store only ever sees ciphertext.

use berth_domain::{SecretDelivery, Timestamp, WorkspaceId};
use sqlx::Row;

use crate::{now, Result, Store, StoreError};

#[derive(Debug, Clone, PartialEq)]
pub struct SealedSecret {
    pub tenant: String,
    pub name: String,
    pub nonce: Vec<u8>,
    pub ciphertext: Vec<u8>,
    pub created_at: Timestamp,
    pub updated_at: Timestamp,
}

#[derive(Debug, Clone, PartialEq)]
pub struct SecretUse {
    pub workspace_id: WorkspaceId,
    pub name: String,
    pub hosts: Vec<String>,
    pub delivery: SecretDelivery,
    pub placeholder: String,
    /// Lower-case request headers the placeholder may be swapped into; empty means
    /// `Authorization` only.
    pub headers: Vec<String>,
}

fn split_list(s: &str) -> Vec<String> {
    s.split(',')
        .filter(|h| !h.is_empty())
        .map(str::to_owned)
        .collect()
}

fn sealed(r: &sqlx::sqlite::SqliteRow) -> SealedSecret {
    SealedSecret {
        tenant: r.get("tenant"),
        name: r.get("name"),
        nonce: r.get("nonce"),
        ciphertext: r.get("ciphertext"),
        created_at: crate::ts(r, "created_at"),
        updated_at: crate::ts(r, "updated_at"),
    }
}

impl Store {
    pub async fn put_secret(
        &self,
        tenant: &str,
        name: &str,
        nonce: &[u8],
        ciphertext: &[u8],
    ) -> Result<SealedSecret> {
        let at = now();
        sqlx::query(
            "INSERT INTO secrets (tenant, name, nonce, ciphertext, created_at, updated_at) VALUES (?, ?, ?, ?, ?, ?) \
             ON CONFLICT(tenant, name) DO UPDATE SET nonce = excluded.nonce, ciphertext = excluded.ciphertext, \
             updated_at = excluded.updated_at",
        )
        .bind(tenant)
        .bind(name)
        .bind(nonce)
        .bind(ciphertext)
        .bind(&at)
        .bind(&at)
        .execute(&self.pool)
        .await?;
        self.secret(tenant, name)
            .await?
            .ok_or_else(|| StoreError::NotFound(format!("secret {tenant}/{name}")))
    }

    pub async fn secret(&self, tenant: &str, name: &str) -> Result<Option<SealedSecret>> {
        let row = sqlx::query("SELECT * FROM secrets WHERE tenant = ? AND name = ?")
            .bind(tenant)
            .bind(name)
            .fetch_optional(&self.pool)
            .await?;
        Ok(row.as_ref().map(sealed))
    }

    pub async fn list_secrets(&self, tenant: Option<&str>) -> Result<Vec<SealedSecret>> {
        let rows = sqlx::query(
            "SELECT * FROM secrets WHERE (?1 IS NULL OR tenant = ?1) ORDER BY tenant, name",
        )
        .bind(tenant)
        .fetch_all(&self.pool)
        .await?;
        Ok(rows.iter().map(sealed).collect())
    }

    pub async fn delete_secret(&self, tenant: &str, name: &str) -> Result<bool> {
        let r = sqlx::query("DELETE FROM secrets WHERE tenant = ? AND name = ?")
            .bind(tenant)
            .bind(name)
            .execute(&self.pool)
            .await?;
        Ok(r.rows_affected() > 0)
    }

    pub async fn set_secret_uses(
        &self,
        workspace_id: &WorkspaceId,
        uses: &[SecretUse],
    ) -> Result<()> {
        let mut tx = self.pool.begin().await?;
        sqlx::query("DELETE FROM workspace_secrets WHERE workspace_id = ?")
            .bind(workspace_id.as_str())
            .execute(&mut *tx)
            .await?;
        for u in uses {
            sqlx::query(
                "INSERT INTO workspace_secrets (workspace_id, name, hosts, delivery, placeholder, headers) VALUES (?, ?, ?, ?, ?, ?)",
            )
            .bind(workspace_id.as_str())
            .bind(&u.name)
            .bind(u.hosts.join(","))
            .bind(u.delivery.as_str())
            .bind(&u.placeholder)
            .bind(u.headers.join(","))
            .execute(&mut *tx)
            .await?;
        }
        tx.commit().await?;
        Ok(())
    }

    /// Uses of secrets, by workspace (`Some`) or all.
    pub async fn secret_uses(&self, workspace_id: Option<&WorkspaceId>) -> Result<Vec<SecretUse>> {
        let rows = sqlx::query(
            "SELECT * FROM workspace_secrets WHERE (?1 IS NULL OR workspace_id = ?1) ORDER BY workspace_id, name",
        )
        .bind(workspace_id.map(WorkspaceId::as_str))
        .fetch_all(&self.pool)
        .await?;
        Ok(rows
            .iter()
            .map(|r| SecretUse {
                workspace_id: WorkspaceId::from_stored(r.get("workspace_id")),
                name: r.get("name"),
                hosts: split_list(&r.get::<String, _>("hosts")),
                // Written only by berth; anything else is read as the delivery that exposes
                // nothing.
                delivery: SecretDelivery::parse(r.get::<&str, _>("delivery")).unwrap_or_default(),
                placeholder: r.get("placeholder"),
                headers: split_list(&r.get::<String, _>("headers")),
            })
            .collect())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn secrets_and_uses() {
        let s = Store::open_in_memory().await.unwrap();
        let a = s.put_secret("acme", "TOKEN", b"n1", b"c1").await.unwrap();
        let b = s.put_secret("acme", "TOKEN", b"n2", b"c2").await.unwrap();
        assert_eq!(a.created_at, b.created_at);
        assert_eq!(b.ciphertext, b"c2");
        s.put_secret("globex", "TOKEN", b"n", b"c").await.unwrap();
        assert_eq!(s.list_secrets(Some("acme")).await.unwrap().len(), 1);
        assert_eq!(s.list_secrets(None).await.unwrap().len(), 2);
        let w1 = WorkspaceId::from_stored("w1".into());
        let u = SecretUse {
            workspace_id: w1.clone(),
            name: "TOKEN".into(),
            hosts: vec!["github.com".into(), "api.github.com".into()],
            delivery: SecretDelivery::Placeholder,
            placeholder: "berth-ph-1".into(),
            headers: vec!["authorization".into(), "x-api-key".into()],
        };
        s.set_secret_uses(&w1, std::slice::from_ref(&u))
            .await
            .unwrap();
        assert_eq!(s.secret_uses(Some(&w1)).await.unwrap(), vec![u]);
        s.set_secret_uses(&w1, &[]).await.unwrap();
        assert!(s.secret_uses(None).await.unwrap().is_empty());
        assert!(s.delete_secret("acme", "TOKEN").await.unwrap());
        assert!(s.secret("acme", "TOKEN").await.unwrap().is_none());
    }
}
