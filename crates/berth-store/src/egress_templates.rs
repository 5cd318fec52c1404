//! Egress templates owned by tenants, and the templates each workspace attaches, in order.
//!
//! Built-in templates are not stored: an attachment holds a name, and the caller says whether
//! that name must be one of the tenant's stored templates. Writes that read before they
//! decide take SQLite's write lock first (see `append_task_events`), so attaching a template
//! and removing it cannot interleave.

use berth_domain::{Timestamp, WorkspaceId};
use sqlx::Row;

use crate::{is_unique_violation, now, Result, Store, StoreError};

#[derive(Debug, Clone, PartialEq)]
pub struct EgressTemplate {
    pub tenant: String,
    pub name: String,
    pub description: Option<String>,
    /// In order; the same syntax as a workspace's rules.
    pub rules: Vec<String>,
    pub created_at: Timestamp,
    pub updated_at: Timestamp,
}

/// A workspace that attaches a template.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TemplateUser {
    pub workspace_id: WorkspaceId,
    /// `tenant/name`.
    pub workspace: String,
}

/// The outcome of [`Store::delete_egress_template`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum TemplateRemoval {
    NotFound,
    /// Attached to these workspaces, and not forced: nothing changed.
    InUse(Vec<TemplateUser>),
    /// Removed, after detaching it from these workspaces (forced).
    Removed(Vec<TemplateUser>),
}

const USERS_SQL: &str = "SELECT w.id, t.name AS tenant, w.name FROM workspace_egress_templates a \
     JOIN workspaces w ON w.id = a.workspace_id JOIN tenants t ON t.id = w.tenant_id \
     WHERE a.template = ?1 AND (?2 IS NULL OR t.name = ?2) ORDER BY t.name, w.name";

fn users_from_rows(rows: &[sqlx::sqlite::SqliteRow]) -> Vec<TemplateUser> {
    rows.iter()
        .map(|r| TemplateUser {
            workspace_id: WorkspaceId::from_stored(r.get("id")),
            workspace: format!(
                "{}/{}",
                r.get::<String, _>("tenant"),
                r.get::<String, _>("name")
            ),
        })
        .collect()
}

impl Store {
    /// Creates a tenant's template; a template of that name in the tenant is a `Conflict`.
    pub async fn create_egress_template(
        &self,
        tenant: &str,
        name: &str,
        description: Option<&str>,
        rules: &[String],
    ) -> Result<EgressTemplate> {
        self.write_egress_template(tenant, name, description, rules, false)
            .await
            .map(|(t, _)| t)
    }

    /// Creates or replaces a tenant's template: the rules are replaced; the description is
    /// replaced when given (an empty one clears it) and kept otherwise. Returns the template
    /// and whether it was created.
    pub async fn put_egress_template(
        &self,
        tenant: &str,
        name: &str,
        description: Option<&str>,
        rules: &[String],
    ) -> Result<(EgressTemplate, bool)> {
        self.write_egress_template(tenant, name, description, rules, true)
            .await
    }

    async fn write_egress_template(
        &self,
        tenant: &str,
        name: &str,
        description: Option<&str>,
        rules: &[String],
        replace: bool,
    ) -> Result<(EgressTemplate, bool)> {
        let at = now();
        let mut tx = self.pool.begin().await?;
        // Both branches write first, so the transaction holds the write lock from the start.
        let existed = replace
            && sqlx::query(
                "UPDATE egress_templates SET description = CASE WHEN ?1 IS NULL THEN description \
                 ELSE NULLIF(?1, '') END, updated_at = ?2 WHERE tenant = ?3 AND name = ?4",
            )
            .bind(description)
            .bind(&at)
            .bind(tenant)
            .bind(name)
            .execute(&mut *tx)
            .await?
            .rows_affected()
                > 0;
        if !existed {
            let res = sqlx::query(
                "INSERT INTO egress_templates (tenant, name, description, created_at, updated_at) \
                 VALUES (?, ?, NULLIF(?, ''), ?, ?)",
            )
            .bind(tenant)
            .bind(name)
            .bind(description)
            .bind(&at)
            .bind(&at)
            .execute(&mut *tx)
            .await;
            match res {
                Ok(_) => {}
                Err(e) if is_unique_violation(&e) => {
                    return Err(StoreError::Conflict(format!(
                        "egress template {tenant}/{name}"
                    )))
                }
                Err(e) => return Err(e.into()),
            }
        }
        sqlx::query("DELETE FROM egress_template_rules WHERE tenant = ? AND template = ?")
            .bind(tenant)
            .bind(name)
            .execute(&mut *tx)
            .await?;
        for (i, r) in rules.iter().enumerate() {
            sqlx::query(
                "INSERT INTO egress_template_rules (tenant, template, position, rule) VALUES (?, ?, ?, ?)",
            )
            .bind(tenant)
            .bind(name)
            .bind(i as i64)
            .bind(r)
            .execute(&mut *tx)
            .await?;
        }
        tx.commit().await?;
        let t = self
            .egress_template(tenant, name)
            .await?
            .ok_or_else(|| StoreError::NotFound(format!("egress template {tenant}/{name}")))?;
        Ok((t, !existed))
    }

    pub async fn egress_template(
        &self,
        tenant: &str,
        name: &str,
    ) -> Result<Option<EgressTemplate>> {
        Ok(self
            .load_egress_templates(Some(tenant), Some(name))
            .await?
            .pop())
    }

    /// Templates ordered by tenant then name; only one tenant's when `tenant` is set.
    pub async fn list_egress_templates(&self, tenant: Option<&str>) -> Result<Vec<EgressTemplate>> {
        self.load_egress_templates(tenant, None).await
    }

    async fn load_egress_templates(
        &self,
        tenant: Option<&str>,
        name: Option<&str>,
    ) -> Result<Vec<EgressTemplate>> {
        let filter = "(?1 IS NULL OR tenant = ?1) AND (?2 IS NULL OR name = ?2)";
        let rows = sqlx::query(&format!(
            "SELECT tenant, name, description, created_at, updated_at FROM egress_templates \
             WHERE {filter} ORDER BY tenant, name"
        ))
        .bind(tenant)
        .bind(name)
        .fetch_all(&self.pool)
        .await?;
        let mut out: Vec<EgressTemplate> = rows
            .iter()
            .map(|r| EgressTemplate {
                tenant: r.get("tenant"),
                name: r.get("name"),
                description: r.get("description"),
                rules: Vec::new(),
                created_at: crate::ts(r, "created_at"),
                updated_at: crate::ts(r, "updated_at"),
            })
            .collect();
        let rules = sqlx::query(&format!(
            "SELECT tenant, template AS name, rule FROM egress_template_rules \
             WHERE {filter} ORDER BY tenant, template, position"
        ))
        .bind(tenant)
        .bind(name)
        .fetch_all(&self.pool)
        .await?;
        // Both lists are in (tenant, name) order: walk them together.
        let mut i = 0;
        for r in &rules {
            let (t, n): (String, String) = (r.get("tenant"), r.get("name"));
            while out
                .get(i)
                .is_some_and(|x| (x.tenant.as_str(), x.name.as_str()) < (t.as_str(), n.as_str()))
            {
                i += 1;
            }
            if let Some(x) = out.get_mut(i).filter(|x| x.tenant == t && x.name == n) {
                x.rules.push(r.get("rule"));
            }
        }
        Ok(out)
    }

    /// Workspaces that attach the template `name`: of `tenant` (a stored template), or of
    /// every tenant (`None`, for a built-in). Ordered by tenant, then workspace name.
    pub async fn egress_template_users(
        &self,
        tenant: Option<&str>,
        name: &str,
    ) -> Result<Vec<TemplateUser>> {
        let rows = sqlx::query(USERS_SQL)
            .bind(name)
            .bind(tenant)
            .fetch_all(&self.pool)
            .await?;
        Ok(users_from_rows(&rows))
    }

    /// Removes a tenant's template. While workspaces attach it, nothing changes
    /// ([`TemplateRemoval::InUse`]) unless `force`, which detaches it from them in the same
    /// transaction.
    pub async fn delete_egress_template(
        &self,
        tenant: &str,
        name: &str,
        force: bool,
    ) -> Result<TemplateRemoval> {
        let mut tx = self.pool.begin().await?;
        // Write first: holds the write lock, so no attach slips in between (and tells whether
        // the template exists).
        let exists = sqlx::query(
            "UPDATE egress_templates SET updated_at = updated_at WHERE tenant = ? AND name = ?",
        )
        .bind(tenant)
        .bind(name)
        .execute(&mut *tx)
        .await?
        .rows_affected()
            > 0;
        if !exists {
            return Ok(TemplateRemoval::NotFound);
        }
        let rows = sqlx::query(USERS_SQL)
            .bind(name)
            .bind(tenant)
            .fetch_all(&mut *tx)
            .await?;
        let users = users_from_rows(&rows);
        if !users.is_empty() && !force {
            return Ok(TemplateRemoval::InUse(users));
        }
        for u in &users {
            sqlx::query(
                "DELETE FROM workspace_egress_templates WHERE workspace_id = ? AND template = ?",
            )
            .bind(u.workspace_id.as_str())
            .bind(name)
            .execute(&mut *tx)
            .await?;
        }
        sqlx::query("DELETE FROM egress_template_rules WHERE tenant = ? AND template = ?")
            .bind(tenant)
            .bind(name)
            .execute(&mut *tx)
            .await?;
        sqlx::query("DELETE FROM egress_templates WHERE tenant = ? AND name = ?")
            .bind(tenant)
            .bind(name)
            .execute(&mut *tx)
            .await?;
        tx.commit().await?;
        Ok(TemplateRemoval::Removed(users))
    }

    /// The templates a workspace attaches, in evaluation (attach) order.
    pub async fn workspace_egress_templates(
        &self,
        workspace_id: &WorkspaceId,
    ) -> Result<Vec<String>> {
        let rows = sqlx::query(
            "SELECT template FROM workspace_egress_templates WHERE workspace_id = ? ORDER BY position",
        )
        .bind(workspace_id.as_str())
        .fetch_all(&self.pool)
        .await?;
        Ok(rows.iter().map(|r| r.get(0)).collect())
    }

    /// Attaches a template after the workspace's others. With `stored`, `name` must be one of
    /// `tenant`'s stored templates (`NotFound` otherwise); built-ins pass `false`. Returns
    /// false when the workspace attached it already (then nothing changes).
    pub async fn attach_egress_template(
        &self,
        workspace_id: &WorkspaceId,
        tenant: &str,
        name: &str,
        stored: bool,
    ) -> Result<bool> {
        let mut tx = self.pool.begin().await?;
        // Write first (see `delete_egress_template`); also tells whether the workspace exists.
        let ws = sqlx::query("UPDATE workspaces SET updated_at = updated_at WHERE id = ?")
            .bind(workspace_id.as_str())
            .execute(&mut *tx)
            .await?;
        if ws.rows_affected() == 0 {
            return Err(StoreError::NotFound(format!("workspace {workspace_id}")));
        }
        if stored {
            let found = sqlx::query("SELECT 1 FROM egress_templates WHERE tenant = ? AND name = ?")
                .bind(tenant)
                .bind(name)
                .fetch_optional(&mut *tx)
                .await?;
            if found.is_none() {
                return Err(StoreError::NotFound(format!(
                    "egress template {tenant}/{name}"
                )));
            }
        }
        let added = sqlx::query(
            "INSERT OR IGNORE INTO workspace_egress_templates (workspace_id, template, position) \
             SELECT ?1, ?2, COALESCE(MAX(position) + 1, 0) FROM workspace_egress_templates \
             WHERE workspace_id = ?1",
        )
        .bind(workspace_id.as_str())
        .bind(name)
        .execute(&mut *tx)
        .await?
        .rows_affected()
            > 0;
        tx.commit().await?;
        Ok(added)
    }

    /// Detaches a template; false when the workspace did not attach it.
    pub async fn detach_egress_template(
        &self,
        workspace_id: &WorkspaceId,
        name: &str,
    ) -> Result<bool> {
        let r = sqlx::query(
            "DELETE FROM workspace_egress_templates WHERE workspace_id = ? AND template = ?",
        )
        .bind(workspace_id.as_str())
        .bind(name)
        .execute(&self.pool)
        .await?;
        Ok(r.rows_affected() > 0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::test_support::workspace_row;

    fn rules(r: &[&str]) -> Vec<String> {
        r.iter().map(|s| s.to_string()).collect()
    }

    #[tokio::test]
    async fn templates_are_unique_per_tenant_and_replaced_whole() {
        let s = Store::open_in_memory().await.unwrap();
        let a = s
            .create_egress_template(
                "acme",
                "ci",
                Some("CI hosts"),
                &rules(&["allow a.test", "deny *"]),
            )
            .await
            .unwrap();
        assert_eq!(a.rules, rules(&["allow a.test", "deny *"]));
        assert_eq!(a.description.as_deref(), Some("CI hosts"));
        // Same name, same tenant: a conflict; another tenant may use the name.
        let e = s
            .create_egress_template("acme", "ci", None, &[])
            .await
            .unwrap_err();
        assert!(matches!(e, StoreError::Conflict(_)), "{e}");
        s.create_egress_template("globex", "ci", None, &rules(&["allow g.test"]))
            .await
            .unwrap();
        s.create_egress_template("acme", "alpha", None, &[])
            .await
            .unwrap();

        // Replace: rules whole, description kept unless given; "" clears it.
        let (b, created) = s
            .put_egress_template("acme", "ci", None, &rules(&["allow b.test"]))
            .await
            .unwrap();
        assert!(!created);
        assert_eq!(b.rules, rules(&["allow b.test"]));
        assert_eq!(b.description.as_deref(), Some("CI hosts"));
        assert_eq!(b.created_at, a.created_at);
        let (b, _) = s
            .put_egress_template("acme", "ci", Some(""), &rules(&["allow b.test"]))
            .await
            .unwrap();
        assert_eq!(b.description, None);
        let (c, created) = s
            .put_egress_template("acme", "new", Some("n"), &[])
            .await
            .unwrap();
        assert!(created);
        assert!(c.rules.is_empty());

        let acme = s.list_egress_templates(Some("acme")).await.unwrap();
        assert_eq!(
            acme.iter().map(|t| t.name.as_str()).collect::<Vec<_>>(),
            ["alpha", "ci", "new"]
        );
        assert_eq!(acme[1].rules, rules(&["allow b.test"]));
        let all = s.list_egress_templates(None).await.unwrap();
        assert_eq!(all.len(), 4);
        assert_eq!(all[3].tenant, "globex");
        assert_eq!(all[3].rules, rules(&["allow g.test"]));
        assert!(s.egress_template("acme", "nope").await.unwrap().is_none());
        assert!(s
            .egress_template("globex", "alpha")
            .await
            .unwrap()
            .is_none());
    }

    #[tokio::test]
    async fn attachments_keep_order_and_check_the_tenant() {
        let s = Store::open_in_memory().await.unwrap();
        let w = workspace_row(&s, "acme", "web").await;
        let other = workspace_row(&s, "globex", "web").await;
        s.create_egress_template("acme", "ci", None, &[])
            .await
            .unwrap();
        s.create_egress_template("globex", "theirs", None, &[])
            .await
            .unwrap();
        let w = &w;
        assert!(s
            .attach_egress_template(w, "acme", "npm", false)
            .await
            .unwrap());
        assert!(s
            .attach_egress_template(w, "acme", "ci", true)
            .await
            .unwrap());
        // Attaching again changes nothing, and keeps the order.
        assert!(!s
            .attach_egress_template(w, "acme", "npm", false)
            .await
            .unwrap());
        assert_eq!(
            s.workspace_egress_templates(w).await.unwrap(),
            ["npm", "ci"]
        );
        // Another tenant's template or an unknown one is not there for this workspace.
        for name in ["theirs", "nope"] {
            let e = s
                .attach_egress_template(w, "acme", name, true)
                .await
                .unwrap_err();
            assert!(matches!(e, StoreError::NotFound(_)), "{e}");
        }
        let e = s
            .attach_egress_template(
                &berth_domain::WorkspaceId::from_stored("ws_missing".into()),
                "acme",
                "npm",
                false,
            )
            .await
            .unwrap_err();
        assert!(matches!(e, StoreError::NotFound(_)), "{e}");

        // Detach, then attach again: it goes last.
        assert!(s.detach_egress_template(w, "npm").await.unwrap());
        assert!(!s.detach_egress_template(w, "npm").await.unwrap());
        assert!(s
            .attach_egress_template(w, "acme", "npm", false)
            .await
            .unwrap());
        assert_eq!(
            s.workspace_egress_templates(w).await.unwrap(),
            ["ci", "npm"]
        );

        // Users: per tenant for stored templates, across tenants for built-ins.
        s.attach_egress_template(&other, "globex", "npm", false)
            .await
            .unwrap();
        let users = s.egress_template_users(None, "npm").await.unwrap();
        assert_eq!(
            users
                .iter()
                .map(|u| u.workspace.as_str())
                .collect::<Vec<_>>(),
            ["acme/web", "globex/web"]
        );
        assert_eq!(&users[0].workspace_id, w);
        assert_eq!(
            s.egress_template_users(Some("globex"), "npm")
                .await
                .unwrap()
                .len(),
            1
        );
    }

    #[tokio::test]
    async fn removing_an_attached_template_needs_force_and_detaches_it() {
        let s = Store::open_in_memory().await.unwrap();
        let a = workspace_row(&s, "acme", "a").await;
        let b = workspace_row(&s, "acme", "b").await;
        // A workspace of another tenant attaching a built-in of the same name is no user.
        let g = workspace_row(&s, "globex", "g").await;
        s.create_egress_template("acme", "ci", None, &rules(&["allow a.test"]))
            .await
            .unwrap();
        for w in [&a, &b] {
            s.attach_egress_template(w, "acme", "ci", true)
                .await
                .unwrap();
            s.attach_egress_template(w, "acme", "npm", false)
                .await
                .unwrap();
        }
        s.attach_egress_template(&g, "globex", "ci", false)
            .await
            .unwrap();

        let TemplateRemoval::InUse(users) =
            s.delete_egress_template("acme", "ci", false).await.unwrap()
        else {
            panic!("removed while attached");
        };
        assert_eq!(
            users
                .iter()
                .map(|u| u.workspace.as_str())
                .collect::<Vec<_>>(),
            ["acme/a", "acme/b"]
        );
        assert!(s.egress_template("acme", "ci").await.unwrap().is_some());
        assert_eq!(
            s.workspace_egress_templates(&a).await.unwrap(),
            ["ci", "npm"]
        );

        let TemplateRemoval::Removed(detached) =
            s.delete_egress_template("acme", "ci", true).await.unwrap()
        else {
            panic!("not removed with force");
        };
        assert_eq!(detached, users);
        assert!(s.egress_template("acme", "ci").await.unwrap().is_none());
        for w in [&a, &b] {
            assert_eq!(s.workspace_egress_templates(w).await.unwrap(), ["npm"]);
        }
        assert_eq!(s.workspace_egress_templates(&g).await.unwrap(), ["ci"]);
        // Its rules went with it: a new template of that name starts empty.
        let (t, created) = s
            .put_egress_template("acme", "ci", None, &[])
            .await
            .unwrap();
        assert!(created && t.rules.is_empty());
        assert_eq!(
            s.delete_egress_template("acme", "nope", true)
                .await
                .unwrap(),
            TemplateRemoval::NotFound
        );
        // An unattached template goes without force.
        assert_eq!(
            s.delete_egress_template("acme", "ci", false).await.unwrap(),
            TemplateRemoval::Removed(Vec::new())
        );
    }

    /// Attaches racing a removal on a real (multi-connection) database: every call succeeds or
    /// fails cleanly, and no attachment outlives its template.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn attach_and_remove_do_not_interleave() {
        let dir = tempfile::tempdir().unwrap();
        let s = Store::open(&dir.path().join("berth.db")).await.unwrap();
        let mut ids = Vec::new();
        for i in 0..8 {
            ids.push(workspace_row(&s, "acme", &format!("w{i}")).await);
        }
        for round in 0..5 {
            s.create_egress_template("acme", "ci", None, &[])
                .await
                .unwrap();
            let mut tasks = Vec::new();
            for id in &ids {
                let (s, id) = (s.clone(), id.clone());
                tasks.push(tokio::spawn(async move {
                    s.attach_egress_template(&id, "acme", "ci", true)
                        .await
                        .map(|_| ())
                }));
            }
            let removal = s.delete_egress_template("acme", "ci", round % 2 == 1).await;
            for t in tasks {
                match t.await.unwrap() {
                    Ok(()) | Err(StoreError::NotFound(_)) => {}
                    Err(e) => panic!("attach failed: {e}"),
                }
            }
            let users = s.egress_template_users(Some("acme"), "ci").await.unwrap();
            match removal.unwrap() {
                TemplateRemoval::Removed(_) => {
                    assert!(users.is_empty(), "dangling attachments: {users:?}");
                    assert!(s.egress_template("acme", "ci").await.unwrap().is_none());
                }
                TemplateRemoval::InUse(_) => {
                    s.delete_egress_template("acme", "ci", true).await.unwrap();
                }
                TemplateRemoval::NotFound => panic!("template vanished"),
            }
            assert!(s
                .egress_template_users(Some("acme"), "ci")
                .await
                .unwrap()
                .is_empty());
        }
        s.close().await;
    }

    #[tokio::test]
    async fn removing_a_workspace_removes_its_attachments() {
        let s = Store::open_in_memory().await.unwrap();
        let w = workspace_row(&s, "acme", "web").await;
        s.create_egress_template("acme", "ci", None, &[])
            .await
            .unwrap();
        s.attach_egress_template(&w, "acme", "ci", true)
            .await
            .unwrap();
        s.delete_workspace(&w).await.unwrap();
        assert!(s.workspace_egress_templates(&w).await.unwrap().is_empty());
        assert!(s
            .egress_template_users(Some("acme"), "ci")
            .await
            .unwrap()
            .is_empty());
        // Nothing holds the template any more.
        assert_eq!(
            s.delete_egress_template("acme", "ci", false).await.unwrap(),
            TemplateRemoval::Removed(Vec::new())
        );
    }
}
