//! People signed in through single sign-on (OpenID Connect) and their browser sessions.
//!
//! The store keeps rows only: the server derives role and tenant from the provider's claims,
//! hashes the session cookie before it gets here and decides what expiry means.

use berth_domain::Timestamp;
use sqlx::Row;

use crate::{now, Result, Store, StoreError};

/// A person known from single sign-on.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct User {
    pub id: String,
    pub issuer: String,
    pub subject: String,
    pub name: String,
    pub email: Option<String>,
    /// Tenant name; `None` for server-wide users.
    pub tenant: Option<String>,
    /// `admin`, `owner`, `member` or `viewer`.
    pub role: String,
    pub disabled_at: Option<Timestamp>,
    pub created_at: Timestamp,
    pub last_login_at: Option<Timestamp>,
}

/// What a login learned about the person from the provider.
#[derive(Debug, Clone)]
pub struct UserLogin<'a> {
    pub issuer: &'a str,
    pub subject: &'a str,
    pub name: &'a str,
    pub email: Option<&'a str>,
    pub tenant: Option<&'a str>,
    pub role: &'a str,
}

/// A live browser session with its user.
#[derive(Debug, Clone)]
pub struct UserSession {
    pub id: String,
    pub csrf: String,
    pub last_seen: i64,
    pub expires: i64,
    pub user: User,
}

const USER_COLUMNS: &str = "u.id, u.issuer, u.subject, u.name, u.email, u.tenant, u.role, \
     u.disabled_at, u.created_at, u.last_login_at";

fn user(r: &sqlx::sqlite::SqliteRow) -> User {
    User {
        id: r.get("id"),
        issuer: r.get("issuer"),
        subject: r.get("subject"),
        name: r.get("name"),
        email: r.get("email"),
        tenant: r.get("tenant"),
        role: r.get("role"),
        disabled_at: crate::ts_opt(r, "disabled_at"),
        created_at: crate::ts(r, "created_at"),
        last_login_at: crate::ts_opt(r, "last_login_at"),
    }
}

impl Store {
    /// Records a login: creates the user on first sight (with `new_id`), else refreshes name,
    /// email, tenant and role. Returns the user as stored, disabled or not (the caller refuses
    /// disabled users).
    pub async fn record_login(&self, new_id: &str, l: &UserLogin<'_>) -> Result<User> {
        let at = now();
        sqlx::query(
            "INSERT INTO users (id, issuer, subject, name, email, tenant, role, created_at, last_login_at) \
             VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?) \
             ON CONFLICT(issuer, subject) DO UPDATE SET name = excluded.name, email = excluded.email, \
             tenant = excluded.tenant, role = excluded.role, \
             last_login_at = CASE WHEN users.disabled_at IS NULL THEN excluded.last_login_at \
             ELSE users.last_login_at END",
        )
        .bind(new_id)
        .bind(l.issuer)
        .bind(l.subject)
        .bind(l.name)
        .bind(l.email)
        .bind(l.tenant)
        .bind(l.role)
        .bind(&at)
        .bind(&at)
        .execute(&self.pool)
        .await?;
        let row = sqlx::query(&format!(
            "SELECT {USER_COLUMNS} FROM users u WHERE u.issuer = ? AND u.subject = ?"
        ))
        .bind(l.issuer)
        .bind(l.subject)
        .fetch_one(&self.pool)
        .await?;
        Ok(user(&row))
    }

    /// Users, oldest first; only those of `tenant` when given.
    pub async fn list_users(&self, tenant: Option<&str>) -> Result<Vec<User>> {
        let rows = sqlx::query(&format!(
            "SELECT {USER_COLUMNS} FROM users u WHERE (?1 IS NULL OR u.tenant = ?1) \
             ORDER BY u.created_at, u.id"
        ))
        .bind(tenant)
        .fetch_all(&self.pool)
        .await?;
        Ok(rows.iter().map(user).collect())
    }

    pub async fn find_user(&self, id: &str) -> Result<Option<User>> {
        let row = sqlx::query(&format!(
            "SELECT {USER_COLUMNS} FROM users u WHERE u.id = ?"
        ))
        .bind(id)
        .fetch_optional(&self.pool)
        .await?;
        Ok(row.as_ref().map(user))
    }

    /// Disables (`true`) or enables a user. Disabling also ends every session of theirs, in the
    /// same transaction.
    pub async fn set_user_disabled(&self, id: &str, disabled: bool) -> Result<User> {
        let mut tx = self.pool.begin().await?;
        let at = disabled.then(now);
        let done = sqlx::query(
            "UPDATE users SET disabled_at = CASE WHEN ?1 IS NULL THEN NULL \
             ELSE COALESCE(disabled_at, ?1) END WHERE id = ?2",
        )
        .bind(&at)
        .bind(id)
        .execute(&mut *tx)
        .await?;
        if done.rows_affected() == 0 {
            return Err(StoreError::NotFound(format!("user {id}")));
        }
        if disabled {
            sqlx::query("DELETE FROM user_sessions WHERE user_id = ?")
                .bind(id)
                .execute(&mut *tx)
                .await?;
        }
        tx.commit().await?;
        self.find_user(id)
            .await?
            .ok_or_else(|| StoreError::NotFound(format!("user {id}")))
    }

    /// Stores a new session by the hash of its cookie value.
    pub async fn insert_session(
        &self,
        id: &str,
        hash: &str,
        user_id: &str,
        csrf: &str,
        now_unix: i64,
        expires: i64,
    ) -> Result<()> {
        sqlx::query(
            "INSERT INTO user_sessions (id, hash, user_id, csrf, created_at, last_seen, expires) \
             VALUES (?, ?, ?, ?, ?, ?, ?)",
        )
        .bind(id)
        .bind(hash)
        .bind(user_id)
        .bind(csrf)
        .bind(now())
        .bind(now_unix)
        .bind(expires)
        .execute(&self.pool)
        .await?;
        Ok(())
    }

    /// The session with this cookie hash and its user, whatever its age (the caller checks
    /// expiry and the user's state).
    pub async fn find_session(&self, hash: &str) -> Result<Option<UserSession>> {
        let row = sqlx::query(&format!(
            "SELECT s.id AS session_id, s.csrf, s.last_seen, s.expires, {USER_COLUMNS} \
             FROM user_sessions s JOIN users u ON u.id = s.user_id WHERE s.hash = ?"
        ))
        .bind(hash)
        .fetch_optional(&self.pool)
        .await?;
        Ok(row.map(|r| UserSession {
            id: r.get("session_id"),
            csrf: r.get("csrf"),
            last_seen: r.get("last_seen"),
            expires: r.get("expires"),
            user: user(&r),
        }))
    }

    /// Marks a session used at `now_unix` (its idle timeout starts again).
    pub async fn touch_session(&self, id: &str, now_unix: i64) -> Result<()> {
        sqlx::query("UPDATE user_sessions SET last_seen = ? WHERE id = ?")
            .bind(now_unix)
            .bind(id)
            .execute(&self.pool)
            .await?;
        Ok(())
    }

    /// Ends one session. True when it existed.
    pub async fn delete_session(&self, id: &str) -> Result<bool> {
        let done = sqlx::query("DELETE FROM user_sessions WHERE id = ?")
            .bind(id)
            .execute(&self.pool)
            .await?;
        Ok(done.rows_affected() > 0)
    }

    /// Ends every session of the user with this issuer and subject (if known); returns how many.
    pub async fn end_sessions_of(&self, issuer: &str, subject: &str) -> Result<u64> {
        let done = sqlx::query(
            "DELETE FROM user_sessions WHERE user_id IN \
             (SELECT id FROM users WHERE issuer = ? AND subject = ?)",
        )
        .bind(issuer)
        .bind(subject)
        .execute(&self.pool)
        .await?;
        Ok(done.rows_affected())
    }

    /// Removes sessions idle since before `idle_before` or past their absolute expiry.
    pub async fn prune_sessions(&self, now_unix: i64, idle_before: i64) -> Result<u64> {
        let done = sqlx::query("DELETE FROM user_sessions WHERE expires <= ? OR last_seen < ?")
            .bind(now_unix)
            .bind(idle_before)
            .execute(&self.pool)
            .await?;
        Ok(done.rows_affected())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn login<'a>(subject: &'a str, tenant: Option<&'a str>, role: &'a str) -> UserLogin<'a> {
        UserLogin {
            issuer: "https://idp.test",
            subject,
            name: "Alice",
            email: Some("alice@example.com"),
            tenant,
            role,
        }
    }

    #[tokio::test]
    async fn login_creates_then_refreshes_the_user() {
        let s = Store::open_in_memory().await.unwrap();
        let u = s
            .record_login("usr_1", &login("alice", Some("acme"), "member"))
            .await
            .unwrap();
        assert_eq!((u.id.as_str(), u.role.as_str()), ("usr_1", "member"));
        // Same issuer and subject: the same row, role and tenant from this login.
        let u = s
            .record_login("usr_2", &login("alice", Some("beta"), "owner"))
            .await
            .unwrap();
        assert_eq!(u.id, "usr_1");
        assert_eq!(
            (u.tenant.as_deref(), u.role.as_str()),
            (Some("beta"), "owner")
        );
        s.record_login("usr_3", &login("bob", None, "admin"))
            .await
            .unwrap();
        assert_eq!(s.list_users(None).await.unwrap().len(), 2);
        let beta = s.list_users(Some("beta")).await.unwrap();
        assert_eq!(beta.len(), 1);
        assert_eq!(beta[0].subject, "alice");
    }

    #[tokio::test]
    async fn disabling_ends_sessions_and_enabling_keeps_them_gone() {
        let s = Store::open_in_memory().await.unwrap();
        let u = s
            .record_login("usr_1", &login("alice", Some("acme"), "member"))
            .await
            .unwrap();
        s.insert_session("ses_1", "h1", &u.id, "c1", 100, 1000)
            .await
            .unwrap();
        let found = s.find_session("h1").await.unwrap().unwrap();
        assert_eq!(
            (found.id.as_str(), found.user.id.as_str()),
            ("ses_1", "usr_1")
        );
        let u = s.set_user_disabled("usr_1", true).await.unwrap();
        assert!(u.disabled_at.is_some());
        assert!(s.find_session("h1").await.unwrap().is_none());
        let u = s.set_user_disabled("usr_1", false).await.unwrap();
        assert!(u.disabled_at.is_none());
        assert!(matches!(
            s.set_user_disabled("usr_x", true).await,
            Err(StoreError::NotFound(_))
        ));
    }

    #[tokio::test]
    async fn sessions_touch_delete_and_prune() {
        let s = Store::open_in_memory().await.unwrap();
        let u = s
            .record_login("usr_1", &login("alice", None, "admin"))
            .await
            .unwrap();
        s.insert_session("ses_1", "h1", &u.id, "c", 100, 1000)
            .await
            .unwrap();
        s.insert_session("ses_2", "h2", &u.id, "c", 100, 1000)
            .await
            .unwrap();
        s.touch_session("ses_2", 500).await.unwrap();
        assert_eq!(s.find_session("h2").await.unwrap().unwrap().last_seen, 500);
        // Idle since before 200: only ses_1.
        assert_eq!(s.prune_sessions(400, 200).await.unwrap(), 1);
        assert!(s.delete_session("ses_2").await.unwrap());
        assert!(!s.delete_session("ses_2").await.unwrap());
        s.insert_session("ses_3", "h3", &u.id, "c", 100, 1000)
            .await
            .unwrap();
        assert_eq!(
            s.end_sessions_of("https://idp.test", "alice")
                .await
                .unwrap(),
            1
        );
        assert_eq!(
            s.end_sessions_of("https://idp.test", "nobody")
                .await
                .unwrap(),
            0
        );
        assert!(s.find_session("h3").await.unwrap().is_none());
    }
}
