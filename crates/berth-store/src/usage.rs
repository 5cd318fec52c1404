//! LLM gateway accounting: calls, usage summaries and budgets.

use sqlx::Row;

use crate::{now, Result, Store};

#[derive(Debug, Clone, Default)]
pub struct LlmCall {
    pub workspace_id: String,
    pub workspace: String,
    pub tenant: String,
    pub task_id: String,
    pub provider: String,
    pub model: Option<String>,
    pub path: String,
    pub status: u16,
    pub input_tokens: u64,
    pub output_tokens: u64,
    pub cache_read_tokens: u64,
    pub cache_write_tokens: u64,
    pub cost_usd: Option<f64>,
    pub latency_ms: u64,
    pub ttfb_ms: Option<u64>,
    pub error: Option<String>,
}

/// Filter for usage queries.
#[derive(Debug, Clone, Default)]
pub struct UsageFilter {
    pub tenant: Option<String>,
    pub workspace_id: Option<String>,
    /// RFC 3339; only calls at or after this time.
    pub since: Option<String>,
}

/// Totals of one group (workspace × provider × model).
#[derive(Debug, Clone, Default, PartialEq)]
pub struct UsageRow {
    pub tenant: String,
    pub workspace: String,
    pub provider: String,
    pub model: Option<String>,
    pub calls: u64,
    pub errors: u64,
    pub input_tokens: u64,
    pub output_tokens: u64,
    pub cache_read_tokens: u64,
    pub cache_write_tokens: u64,
    pub cost_usd: Option<f64>,
}

#[derive(Debug, Clone, PartialEq)]
pub struct Budget {
    /// `tenant` or `workspace`.
    pub scope: String,
    /// Tenant name or workspace id.
    pub target: String,
    /// `day`, `month` or `total`.
    pub period: String,
    pub max_tokens: Option<u64>,
    pub max_cost_usd: Option<f64>,
}

impl Budget {
    /// Whether this budget limits a workspace: its own budget, or its tenant's.
    pub fn applies_to(&self, tenant: &str, workspace_id: &str) -> bool {
        (self.scope == "tenant" && self.target == tenant)
            || (self.scope == "workspace" && self.target == workspace_id)
    }
}

/// Spent within a budget's period.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct Spent {
    pub tokens: u64,
    pub cost_usd: f64,
}

const INSERT_CALL_HEAD: &str =
    "INSERT INTO llm_calls (at, workspace_id, workspace, tenant, task_id, \
    provider, model, path, status, input_tokens, output_tokens, cache_read_tokens, \
    cache_write_tokens, cost_usd, latency_ms, ttfb_ms, error) ";

async fn insert_call<'e, E: sqlx::SqliteExecutor<'e>>(e: E, c: &LlmCall) -> Result<i64> {
    let res = sqlx::query(&format!(
        "{INSERT_CALL_HEAD}VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)"
    ))
    .bind(now())
    .bind(&c.workspace_id)
    .bind(&c.workspace)
    .bind(&c.tenant)
    .bind(&c.task_id)
    .bind(&c.provider)
    .bind(&c.model)
    .bind(&c.path)
    .bind(i64::from(c.status))
    .bind(c.input_tokens as i64)
    .bind(c.output_tokens as i64)
    .bind(c.cache_read_tokens as i64)
    .bind(c.cache_write_tokens as i64)
    .bind(c.cost_usd)
    .bind(c.latency_ms as i64)
    .bind(c.ttfb_ms.map(|t| t as i64))
    .bind(&c.error)
    .execute(e)
    .await?;
    Ok(res.last_insert_rowid())
}

fn call_from_row(r: &sqlx::sqlite::SqliteRow) -> LlmCall {
    LlmCall {
        workspace_id: r.get("workspace_id"),
        workspace: r.get("workspace"),
        tenant: r.get("tenant"),
        task_id: r.get("task_id"),
        provider: r.get("provider"),
        model: r.get("model"),
        path: r.get("path"),
        status: r.get::<i64, _>("status").clamp(0, 999) as u16,
        input_tokens: u(r, "input_tokens"),
        output_tokens: u(r, "output_tokens"),
        cache_read_tokens: u(r, "cache_read_tokens"),
        cache_write_tokens: u(r, "cache_write_tokens"),
        cost_usd: r.get("cost_usd"),
        latency_ms: u(r, "latency_ms"),
        ttfb_ms: r.get::<Option<i64>, _>("ttfb_ms").map(|t| t.max(0) as u64),
        error: r.get("error"),
    }
}

fn u(r: &sqlx::sqlite::SqliteRow, c: &str) -> u64 {
    r.get::<Option<i64>, _>(c).unwrap_or(0).max(0) as u64
}

impl Store {
    /// Stores a call; returns its id.
    pub async fn record_llm_call(&self, c: &LlmCall) -> Result<i64> {
        insert_call(&self.pool, c).await
    }

    /// Stores many calls (and their recorded exchanges) in one transaction: the gateway's
    /// recorder batches what arrives while the previous batch is written.
    pub async fn record_llm_calls(
        &self,
        calls: &[(LlmCall, Option<(String, String)>)],
    ) -> Result<()> {
        let mut tx = self.pool.begin().await?;
        // Calls without a recording go in as multi-row INSERTs: one statement (one round trip
        // to SQLite's thread) per run of up to 64 calls instead of one per call. Order is kept.
        let at = now();
        let mut rest = calls;
        while !rest.is_empty() {
            let plain = rest
                .iter()
                .take(64)
                .take_while(|(_, x)| x.is_none())
                .count();
            if plain > 0 {
                let mut q = sqlx::QueryBuilder::<sqlx::Sqlite>::new(INSERT_CALL_HEAD);
                q.push_values(&rest[..plain], |mut row, (c, _)| {
                    row.push_bind(&at)
                        .push_bind(&c.workspace_id)
                        .push_bind(&c.workspace)
                        .push_bind(&c.tenant)
                        .push_bind(&c.task_id)
                        .push_bind(&c.provider)
                        .push_bind(&c.model)
                        .push_bind(&c.path)
                        .push_bind(i64::from(c.status))
                        .push_bind(c.input_tokens as i64)
                        .push_bind(c.output_tokens as i64)
                        .push_bind(c.cache_read_tokens as i64)
                        .push_bind(c.cache_write_tokens as i64)
                        .push_bind(c.cost_usd)
                        .push_bind(c.latency_ms as i64)
                        .push_bind(c.ttfb_ms.map(|t| t as i64))
                        .push_bind(&c.error);
                });
                // Not kept in the statement cache: one prepared statement per batch size adds up.
                q.build().persistent(false).execute(&mut *tx).await?;
                rest = &rest[plain..];
                continue;
            }
            let (c, exchange) = &rest[0];
            let id = insert_call(&mut *tx, c).await?;
            if let Some((req, resp)) = exchange {
                sqlx::query("INSERT INTO llm_recordings (call_id, at, request, response) VALUES (?, ?, ?, ?)")
                    .bind(id)
                    .bind(&at)
                    .bind(req)
                    .bind(resp)
                    .execute(&mut *tx)
                    .await?;
            }
            rest = &rest[1..];
        }
        tx.commit().await?;
        Ok(())
    }

    /// Keeps the request and response of a call (prompt recording is opt-in).
    pub async fn record_llm_exchange(
        &self,
        call_id: i64,
        request: &str,
        response: &str,
    ) -> Result<()> {
        sqlx::query(
            "INSERT INTO llm_recordings (call_id, at, request, response) VALUES (?, ?, ?, ?)",
        )
        .bind(call_id)
        .bind(now())
        .bind(request)
        .bind(response)
        .execute(&self.pool)
        .await?;
        Ok(())
    }

    /// Deletes recordings older than `before` (RFC 3339); returns how many.
    pub async fn purge_llm_recordings(&self, before: &str) -> Result<u64> {
        let r = sqlx::query("DELETE FROM llm_recordings WHERE at < ?")
            .bind(before)
            .execute(&self.pool)
            .await?;
        Ok(r.rows_affected())
    }

    /// Recent calls, newest first, with whether an exchange was recorded.
    pub async fn llm_calls(
        &self,
        workspace_id: Option<&str>,
        task_id: Option<&str>,
        limit: i64,
    ) -> Result<Vec<(i64, String, LlmCall, bool)>> {
        let rows = sqlx::query(
            "SELECT c.*, (r.call_id IS NOT NULL) AS recorded FROM llm_calls c LEFT JOIN llm_recordings r ON r.call_id = c.id \
             WHERE (?1 IS NULL OR c.workspace_id = ?1) AND (?2 IS NULL OR c.task_id = ?2) ORDER BY c.id DESC LIMIT ?3",
        )
        .bind(workspace_id)
        .bind(task_id)
        .bind(limit)
        .fetch_all(&self.pool)
        .await?;
        Ok(rows
            .iter()
            .map(|r| {
                (
                    r.get("id"),
                    r.get("at"),
                    call_from_row(r),
                    r.get("recorded"),
                )
            })
            .collect())
    }

    /// One call and, when recorded, its request and response.
    pub async fn llm_call(
        &self,
        id: i64,
    ) -> Result<Option<(String, LlmCall, Option<(String, String)>)>> {
        let row = sqlx::query(
            "SELECT c.*, r.request, r.response FROM llm_calls c LEFT JOIN llm_recordings r ON r.call_id = c.id WHERE c.id = ?",
        )
        .bind(id)
        .fetch_optional(&self.pool)
        .await?;
        Ok(row.map(|r| {
            let ex = match (
                r.get::<Option<String>, _>("request"),
                r.get::<Option<String>, _>("response"),
            ) {
                (Some(a), Some(b)) => Some((a, b)),
                _ => None,
            };
            (r.get("at"), call_from_row(&r), ex)
        }))
    }

    pub async fn usage(&self, f: &UsageFilter) -> Result<Vec<UsageRow>> {
        let rows = sqlx::query(
            "SELECT tenant, workspace, provider, model, COUNT(*) AS calls, \
             SUM(CASE WHEN status >= 400 THEN 1 ELSE 0 END) AS errors, \
             SUM(input_tokens) AS input_tokens, SUM(output_tokens) AS output_tokens, \
             SUM(cache_read_tokens) AS cache_read_tokens, SUM(cache_write_tokens) AS cache_write_tokens, \
             SUM(cost_usd) AS cost_usd FROM llm_calls \
             WHERE (?1 IS NULL OR tenant = ?1) AND (?2 IS NULL OR workspace_id = ?2) AND (?3 IS NULL OR at >= ?3) \
             GROUP BY tenant, workspace, provider, model ORDER BY tenant, workspace, provider, model",
        )
        .bind(&f.tenant)
        .bind(&f.workspace_id)
        .bind(&f.since)
        .fetch_all(&self.pool)
        .await?;
        Ok(rows
            .iter()
            .map(|r| UsageRow {
                tenant: r.get("tenant"),
                workspace: r.get("workspace"),
                provider: r.get("provider"),
                model: r.get("model"),
                calls: u(r, "calls"),
                errors: u(r, "errors"),
                input_tokens: u(r, "input_tokens"),
                output_tokens: u(r, "output_tokens"),
                cache_read_tokens: u(r, "cache_read_tokens"),
                cache_write_tokens: u(r, "cache_write_tokens"),
                cost_usd: r.get("cost_usd"),
            })
            .collect())
    }

    /// Creates or replaces the budget of a scope/target.
    pub async fn set_budget(&self, b: &Budget) -> Result<()> {
        sqlx::query(
            "INSERT INTO budgets (scope, target, period, max_tokens, max_cost_usd, created_at) \
             VALUES (?, ?, ?, ?, ?, ?) ON CONFLICT(scope, target) DO UPDATE SET period = excluded.period, \
             max_tokens = excluded.max_tokens, max_cost_usd = excluded.max_cost_usd",
        )
        .bind(&b.scope)
        .bind(&b.target)
        .bind(&b.period)
        .bind(b.max_tokens.map(|t| t as i64))
        .bind(b.max_cost_usd)
        .bind(now())
        .execute(&self.pool)
        .await?;
        Ok(())
    }

    pub async fn remove_budget(&self, scope: &str, target: &str) -> Result<bool> {
        let r = sqlx::query("DELETE FROM budgets WHERE scope = ? AND target = ?")
            .bind(scope)
            .bind(target)
            .execute(&self.pool)
            .await?;
        Ok(r.rows_affected() > 0)
    }

    pub async fn budgets(&self) -> Result<Vec<Budget>> {
        let rows = sqlx::query(
            "SELECT scope, target, period, max_tokens, max_cost_usd FROM budgets ORDER BY scope, target",
        )
        .fetch_all(&self.pool)
        .await?;
        Ok(rows
            .iter()
            .map(|r| Budget {
                scope: r.get("scope"),
                target: r.get("target"),
                period: r.get("period"),
                max_tokens: r
                    .get::<Option<i64>, _>("max_tokens")
                    .map(|t| t.max(0) as u64),
                max_cost_usd: r.get("max_cost_usd"),
            })
            .collect())
    }

    /// Tokens (input + output) and cost spent under a budget since `since` (RFC 3339; None =
    /// all time).
    pub async fn spent(&self, b: &Budget, since: Option<&str>) -> Result<Spent> {
        let col = if b.scope == "tenant" {
            "tenant"
        } else {
            "workspace_id"
        };
        let sql = format!(
            "SELECT SUM(input_tokens + output_tokens) AS tokens, SUM(cost_usd) AS cost FROM llm_calls \
             WHERE {col} = ? AND (?2 IS NULL OR at >= ?2)"
        );
        let r = sqlx::query(&sql)
            .bind(&b.target)
            .bind(since)
            .fetch_one(&self.pool)
            .await?;
        Ok(Spent {
            tokens: u(&r, "tokens"),
            cost_usd: r.get::<Option<f64>, _>("cost").unwrap_or(0.0),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn usage_groups_and_budgets_sum() {
        let s = Store::open_in_memory().await.unwrap();
        let call =
            |ws: &str, tenant: &str, inp: u64, out: u64, cost: Option<f64>, status: u16| LlmCall {
                workspace_id: format!("id-{ws}"),
                workspace: format!("{tenant}/{ws}"),
                tenant: tenant.into(),
                task_id: "tk".into(),
                provider: "anthropic".into(),
                model: Some("m".into()),
                path: "v1/messages".into(),
                status,
                input_tokens: inp,
                output_tokens: out,
                cost_usd: cost,
                latency_ms: 5,
                ..Default::default()
            };
        s.record_llm_call(&call("web", "acme", 100, 10, Some(0.5), 200))
            .await
            .unwrap();
        s.record_llm_call(&call("web", "acme", 50, 5, None, 500))
            .await
            .unwrap();
        s.record_llm_call(&call("api", "acme", 7, 3, Some(0.25), 200))
            .await
            .unwrap();
        s.record_llm_call(&call("x", "globex", 1, 1, None, 200))
            .await
            .unwrap();
        let all = s.usage(&UsageFilter::default()).await.unwrap();
        assert_eq!(all.len(), 3);
        let web = all.iter().find(|r| r.workspace == "acme/web").unwrap();
        assert_eq!(
            (web.calls, web.errors, web.input_tokens, web.output_tokens),
            (2, 1, 150, 15)
        );
        assert_eq!(web.cost_usd, Some(0.5));
        let acme = s
            .usage(&UsageFilter {
                tenant: Some("acme".into()),
                ..Default::default()
            })
            .await
            .unwrap();
        assert_eq!(acme.len(), 2);
        let future = s
            .usage(&UsageFilter {
                since: Some("2999-01-01T00:00:00Z".into()),
                ..Default::default()
            })
            .await
            .unwrap();
        assert!(future.is_empty());

        // Recordings: listed with their calls, purged by age.
        let calls = s.llm_calls(Some("id-web"), None, 10).await.unwrap();
        assert_eq!(calls.len(), 2);
        let (id, _, first, recorded) = calls[0].clone();
        assert!(!recorded);
        assert_eq!(first.input_tokens, 50);
        s.record_llm_exchange(id, "{\"prompt\":1}", "data: x")
            .await
            .unwrap();
        let (_, _, ex) = s.llm_call(id).await.unwrap().unwrap();
        assert_eq!(ex, Some(("{\"prompt\":1}".into(), "data: x".into())));
        assert!(s.llm_calls(Some("id-web"), None, 10).await.unwrap()[0].3);
        assert_eq!(
            s.purge_llm_recordings("2000-01-01T00:00:00Z")
                .await
                .unwrap(),
            0
        );
        assert_eq!(
            s.purge_llm_recordings("2999-01-01T00:00:00Z")
                .await
                .unwrap(),
            1
        );
        assert!(s.llm_call(id).await.unwrap().unwrap().2.is_none());
        // A batch, as the gateway's recorder writes them.
        let batch = vec![
            (
                call("web", "acme", 1, 1, None, 200),
                Some(("q".to_owned(), "a".to_owned())),
            ),
            (call("web", "acme", 2, 2, None, 200), None),
        ];
        s.record_llm_calls(&batch).await.unwrap();
        let recent = s.llm_calls(Some("id-web"), None, 2).await.unwrap();
        assert_eq!((recent[0].2.input_tokens, recent[0].3), (2, false));
        assert_eq!((recent[1].2.input_tokens, recent[1].3), (1, true));
        // A busy batch: runs of plain calls longer than one statement, a recorded one between.
        let big: Vec<_> = (0..150u64)
            .map(|i| {
                let exchange = (i == 70).then(|| ("q70".to_owned(), "a70".to_owned()));
                (call("busy", "busyco", 1000 + i, 0, None, 200), exchange)
            })
            .collect();
        s.record_llm_calls(&big).await.unwrap();
        let recent = s.llm_calls(Some("id-busy"), None, 200).await.unwrap();
        let tokens: Vec<u64> = recent.iter().rev().map(|r| r.2.input_tokens).collect();
        assert_eq!(tokens, (1000..1150).collect::<Vec<_>>());
        let recorded: Vec<u64> = recent
            .iter()
            .filter(|r| r.3)
            .map(|r| r.2.input_tokens)
            .collect();
        assert_eq!(recorded, [1070]);

        let b = Budget {
            scope: "tenant".into(),
            target: "acme".into(),
            period: "day".into(),
            max_tokens: Some(100),
            max_cost_usd: None,
        };
        s.set_budget(&b).await.unwrap();
        s.set_budget(&Budget {
            max_tokens: Some(200),
            ..b.clone()
        })
        .await
        .unwrap();
        let all_budgets = s.budgets().await.unwrap();
        assert_eq!(all_budgets.len(), 1);
        let applying = |t: &str, w: &str| {
            all_budgets
                .iter()
                .filter(|b| b.applies_to(t, w))
                .cloned()
                .collect::<Vec<_>>()
        };
        assert_eq!(applying("acme", "id-web")[0].max_tokens, Some(200));
        assert!(applying("globex", "id-x").is_empty());
        let spent = s.spent(&b, None).await.unwrap();
        assert_eq!(spent.tokens, 175 + 2 + 4);
        assert!((spent.cost_usd - 0.75).abs() < 1e-9);
        assert!(s.remove_budget("tenant", "acme").await.unwrap());
        assert!(!s.remove_budget("tenant", "acme").await.unwrap());
    }
}
