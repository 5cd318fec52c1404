//! LLM gateway accounting: calls, usage summaries and budgets.

use berth_domain::{Name, TaskId, Timestamp, WorkspaceId};
use sqlx::Row;

use crate::{now, parse_name, Result, Store};

/// One call through the gateway, as recorded.
#[derive(Debug, Clone)]
pub struct LlmCall {
    pub workspace_id: WorkspaceId,
    /// `tenant/name` of the workspace at the time of the call.
    pub workspace: String,
    /// The tenant's name at the time of the call.
    pub tenant: Name,
    /// The task whose key made the call; `None` for an agent session of its own.
    pub task_id: Option<TaskId>,
    /// The agent session (its berth id) whose key made the call; `None` for a task's turn.
    pub session_id: Option<String>,
    pub provider: String,
    pub model: Option<String>,
    pub path: String,
    pub status: u16,
    pub input_tokens: u64,
    pub output_tokens: u64,
    pub cache_read_tokens: u64,
    pub cache_write_tokens: u64,
    pub cost_usd: Option<f64>,
    /// The exact cost in nano-USD (10⁻⁹ USD); when None, `cost_usd` is stored as it.
    pub cost_nusd: Option<u64>,
    /// Which price applied: `operator`, `default` or `fallback` (None: no tokens to price).
    pub priced: Option<String>,
    pub latency_ms: u64,
    pub ttfb_ms: Option<u64>,
    pub error: Option<String>,
}

/// How usage rows are grouped.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub enum UsageBy {
    /// Workspace × provider × model.
    #[default]
    WorkspaceModel,
    /// Workspace × provider × model × agent session (task turns form the group without one).
    Session,
    /// Task (calls of an agent session of its own have the empty task).
    Task,
    Workspace,
    Tenant,
    /// Provider × model.
    Model,
    /// UTC day of the call.
    Day,
}

/// Filter for usage queries.
#[derive(Debug, Clone, Default)]
pub struct UsageFilter {
    /// Only the calls of this tenant (by name).
    pub tenant: Option<Name>,
    pub workspace_id: Option<WorkspaceId>,
    /// Only the calls of this task.
    pub task_id: Option<TaskId>,
    /// RFC 3339 (berth's form); only calls at or after this time.
    pub since: Option<Timestamp>,
    /// RFC 3339 (berth's form); only calls before this time.
    pub until: Option<Timestamp>,
    /// Only the calls of this agent session.
    pub session_id: Option<String>,
    pub by: UsageBy,
}

/// Totals of one group; the fields the grouping does not use are empty (`""` or None).
#[derive(Debug, Clone, Default, PartialEq)]
pub struct UsageRow {
    pub tenant: String,
    pub workspace: String,
    /// The agent session, when grouped by session (`None`: task turns).
    pub session_id: Option<String>,
    /// The task, when grouped by task (`None` also for the group of calls of agent sessions of
    /// their own, stored with an empty `task_id`).
    pub task_id: Option<TaskId>,
    /// The UTC day (`2026-12-04`), when grouped by day.
    pub day: Option<String>,
    pub provider: String,
    pub model: Option<String>,
    pub calls: u64,
    pub errors: u64,
    pub input_tokens: u64,
    pub output_tokens: u64,
    pub cache_read_tokens: u64,
    pub cache_write_tokens: u64,
    /// Sum of the calls' costs (None: no call of the group had a cost).
    pub cost_usd: Option<f64>,
    /// The same sum in nano-USD, exact.
    pub cost_nusd: u64,
    /// Calls priced at the fallback price (their model is in no price table).
    pub fallback_calls: u64,
}

/// What a task's calls through the gateway add up to.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct CallTotals {
    pub calls: u64,
    pub input_tokens: u64,
    pub output_tokens: u64,
    pub cache_read_tokens: u64,
    pub cache_write_tokens: u64,
    pub cost_nusd: u64,
    pub fallback_calls: u64,
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
    pub fn applies_to(&self, tenant: &Name, workspace_id: &WorkspaceId) -> bool {
        (self.scope == "tenant" && self.target == tenant.as_str())
            || (self.scope == "workspace" && self.target == workspace_id.as_str())
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
    cache_write_tokens, cost_usd, latency_ms, ttfb_ms, error, session_id, cost_nusd, priced) ";

/// The `task_id` column: the task's id, or empty for a call of an agent session of its own.
fn task_column(c: &LlmCall) -> &str {
    c.task_id.as_ref().map_or("", TaskId::as_str)
}

/// The exact cost of a call to store, and the USD figure beside it.
fn costs(c: &LlmCall) -> (Option<f64>, Option<i64>) {
    match c.cost_nusd {
        Some(n) => (
            Some(n as f64 / 1e9),
            Some(i64::try_from(n).unwrap_or(i64::MAX)),
        ),
        None => (
            c.cost_usd,
            c.cost_usd
                .filter(|u| u.is_finite() && *u >= 0.0)
                .map(|u| (u * 1e9).round().min(i64::MAX as f64) as i64),
        ),
    }
}

async fn insert_call<'e, E: sqlx::SqliteExecutor<'e>>(e: E, c: &LlmCall) -> Result<i64> {
    let res = sqlx::query(&format!(
        "{INSERT_CALL_HEAD}VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)"
    ))
    .bind(now())
    .bind(c.workspace_id.as_str())
    .bind(&c.workspace)
    .bind(c.tenant.as_str())
    .bind(task_column(c))
    .bind(&c.provider)
    .bind(&c.model)
    .bind(&c.path)
    .bind(i64::from(c.status))
    .bind(c.input_tokens as i64)
    .bind(c.output_tokens as i64)
    .bind(c.cache_read_tokens as i64)
    .bind(c.cache_write_tokens as i64)
    .bind(costs(c).0)
    .bind(c.latency_ms as i64)
    .bind(c.ttfb_ms.map(|t| t as i64))
    .bind(&c.error)
    .bind(&c.session_id)
    .bind(costs(c).1)
    .bind(&c.priced)
    .execute(e)
    .await?;
    Ok(res.last_insert_rowid())
}

fn call_from_row(r: &sqlx::sqlite::SqliteRow) -> Result<LlmCall> {
    Ok(LlmCall {
        workspace_id: WorkspaceId::from_stored(r.get("workspace_id")),
        workspace: r.get("workspace"),
        tenant: parse_name(r.get("tenant"))?,
        task_id: Some(r.get::<String, _>("task_id"))
            .filter(|t| !t.is_empty())
            .map(TaskId::from_stored),
        session_id: r.get("session_id"),
        provider: r.get("provider"),
        model: r.get("model"),
        path: r.get("path"),
        status: r.get::<i64, _>("status").clamp(0, 999) as u16,
        input_tokens: u(r, "input_tokens"),
        output_tokens: u(r, "output_tokens"),
        cache_read_tokens: u(r, "cache_read_tokens"),
        cache_write_tokens: u(r, "cache_write_tokens"),
        cost_usd: r.get("cost_usd"),
        cost_nusd: r
            .get::<Option<i64>, _>("cost_nusd")
            .map(|n| n.max(0) as u64),
        priced: r.get("priced"),
        latency_ms: u(r, "latency_ms"),
        ttfb_ms: r.get::<Option<i64>, _>("ttfb_ms").map(|t| t.max(0) as u64),
        error: r.get("error"),
    })
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
                        .push_bind(c.workspace_id.as_str())
                        .push_bind(&c.workspace)
                        .push_bind(c.tenant.as_str())
                        .push_bind(task_column(c))
                        .push_bind(&c.provider)
                        .push_bind(&c.model)
                        .push_bind(&c.path)
                        .push_bind(i64::from(c.status))
                        .push_bind(c.input_tokens as i64)
                        .push_bind(c.output_tokens as i64)
                        .push_bind(c.cache_read_tokens as i64)
                        .push_bind(c.cache_write_tokens as i64)
                        .push_bind(costs(c).0)
                        .push_bind(c.latency_ms as i64)
                        .push_bind(c.ttfb_ms.map(|t| t as i64))
                        .push_bind(&c.error)
                        .push_bind(&c.session_id)
                        .push_bind(costs(c).1)
                        .push_bind(&c.priced);
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
    pub async fn purge_llm_recordings(&self, before: &Timestamp) -> Result<u64> {
        let r = sqlx::query("DELETE FROM llm_recordings WHERE at < ?")
            .bind(before.as_str())
            .execute(&self.pool)
            .await?;
        Ok(r.rows_affected())
    }

    /// Recent calls, newest first, with whether an exchange was recorded; only `tenant`'s when
    /// it is set.
    pub async fn llm_calls(
        &self,
        workspace_id: Option<&WorkspaceId>,
        task_id: Option<&TaskId>,
        tenant: Option<&Name>,
        limit: i64,
    ) -> Result<Vec<(i64, Timestamp, LlmCall, bool)>> {
        let rows = sqlx::query(
            "SELECT c.*, (r.call_id IS NOT NULL) AS recorded FROM llm_calls c LEFT JOIN llm_recordings r ON r.call_id = c.id \
             WHERE (?1 IS NULL OR c.workspace_id = ?1) AND (?2 IS NULL OR c.task_id = ?2) \
             AND (?4 IS NULL OR c.tenant = ?4) ORDER BY c.id DESC LIMIT ?3",
        )
        .bind(workspace_id.map(WorkspaceId::as_str))
        .bind(task_id.map(TaskId::as_str))
        .bind(limit)
        .bind(tenant.map(Name::as_str))
        .fetch_all(&self.pool)
        .await?;
        rows.iter()
            .map(|r| {
                Ok((
                    r.get("id"),
                    crate::ts(r, "at"),
                    call_from_row(r)?,
                    r.get("recorded"),
                ))
            })
            .collect()
    }

    /// One call and, when recorded, its request and response.
    pub async fn llm_call(
        &self,
        id: i64,
    ) -> Result<Option<(Timestamp, LlmCall, Option<(String, String)>)>> {
        let row = sqlx::query(
            "SELECT c.*, r.request, r.response FROM llm_calls c LEFT JOIN llm_recordings r ON r.call_id = c.id WHERE c.id = ?",
        )
        .bind(id)
        .fetch_optional(&self.pool)
        .await?;
        row.map(|r| {
            let ex = match (
                r.get::<Option<String>, _>("request"),
                r.get::<Option<String>, _>("response"),
            ) {
                (Some(a), Some(b)) => Some((a, b)),
                _ => None,
            };
            Ok((crate::ts(&r, "at"), call_from_row(&r)?, ex))
        })
        .transpose()
    }

    pub async fn usage(&self, f: &UsageFilter) -> Result<Vec<UsageRow>> {
        // The grouping columns are chosen here, never taken from the caller:
        // (tenant, workspace, session, task, day, provider, model) and the GROUP BY list.
        let (cols, group) = match f.by {
            UsageBy::WorkspaceModel => (
                "tenant, workspace, NULL, NULL, NULL, provider, model",
                "tenant, workspace, provider, model",
            ),
            UsageBy::Session => (
                "tenant, workspace, session_id, NULL, NULL, provider, model",
                "tenant, workspace, session_id, provider, model",
            ),
            UsageBy::Task => (
                "tenant, workspace, NULL, task_id, NULL, MIN(provider), NULL",
                "tenant, workspace, task_id",
            ),
            UsageBy::Workspace => (
                "tenant, workspace, NULL, NULL, NULL, '', NULL",
                "tenant, workspace",
            ),
            UsageBy::Tenant => ("tenant, '', NULL, NULL, NULL, '', NULL", "tenant"),
            UsageBy::Model => (
                "'', '', NULL, NULL, NULL, provider, model",
                "provider, model",
            ),
            UsageBy::Day => (
                "'', '', NULL, NULL, substr(at, 1, 10), '', NULL",
                "substr(at, 1, 10)",
            ),
        };
        let sql = format!(
            "SELECT {cols}, COUNT(*) AS calls, \
             SUM(CASE WHEN status >= 400 THEN 1 ELSE 0 END) AS errors, \
             SUM(input_tokens) AS input_tokens, SUM(output_tokens) AS output_tokens, \
             SUM(cache_read_tokens) AS cache_read_tokens, SUM(cache_write_tokens) AS cache_write_tokens, \
             COUNT(cost_nusd) AS costed, SUM(cost_nusd) AS cost_nusd, \
             SUM(CASE WHEN priced = 'fallback' THEN 1 ELSE 0 END) AS fallback_calls FROM llm_calls \
             WHERE (?1 IS NULL OR tenant = ?1) AND (?2 IS NULL OR workspace_id = ?2) AND (?3 IS NULL OR at >= ?3) \
             AND (?4 IS NULL OR session_id = ?4) AND (?5 IS NULL OR at < ?5) AND (?6 IS NULL OR task_id = ?6) \
             GROUP BY {group} ORDER BY {group}"
        );
        let rows = sqlx::query(&sql)
            .bind(f.tenant.as_ref().map(Name::as_str))
            .bind(f.workspace_id.as_ref().map(WorkspaceId::as_str))
            .bind(crate::ts_text(f.since.as_ref()))
            .bind(&f.session_id)
            .bind(crate::ts_text(f.until.as_ref()))
            .bind(f.task_id.as_ref().map(TaskId::as_str))
            .fetch_all(&self.pool)
            .await?;
        Ok(rows
            .iter()
            .map(|r| {
                let cost_nusd = u(r, "cost_nusd");
                UsageRow {
                    tenant: r.get(0),
                    workspace: r.get(1),
                    session_id: r.get(2),
                    task_id: r
                        .get::<Option<String>, _>(3)
                        .filter(|t| !t.is_empty())
                        .map(TaskId::from_stored),
                    day: r.get(4),
                    provider: r.get(5),
                    model: r.get(6),
                    calls: u(r, "calls"),
                    errors: u(r, "errors"),
                    input_tokens: u(r, "input_tokens"),
                    output_tokens: u(r, "output_tokens"),
                    cache_read_tokens: u(r, "cache_read_tokens"),
                    cache_write_tokens: u(r, "cache_write_tokens"),
                    cost_usd: (u(r, "costed") > 0).then(|| cost_nusd as f64 / 1e9),
                    cost_nusd,
                    fallback_calls: u(r, "fallback_calls"),
                }
            })
            .collect())
    }

    /// What the gateway recorded for each of these tasks (a task without calls is absent).
    pub async fn task_call_totals(
        &self,
        task_ids: &[&TaskId],
    ) -> Result<std::collections::HashMap<TaskId, CallTotals>> {
        let mut out = std::collections::HashMap::new();
        // SQLite binds at most 32766 parameters; lists are cut well below that.
        for chunk in task_ids.chunks(500) {
            let mut q = sqlx::QueryBuilder::<sqlx::Sqlite>::new(
                "SELECT task_id, COUNT(*) AS calls, SUM(input_tokens) AS input_tokens, \
                 SUM(output_tokens) AS output_tokens, SUM(cache_read_tokens) AS cache_read_tokens, \
                 SUM(cache_write_tokens) AS cache_write_tokens, SUM(cost_nusd) AS cost_nusd, \
                 SUM(CASE WHEN priced = 'fallback' THEN 1 ELSE 0 END) AS fallback_calls \
                 FROM llm_calls WHERE task_id IN (",
            );
            let mut list = q.separated(", ");
            for id in chunk {
                list.push_bind(id.as_str());
            }
            q.push(") GROUP BY task_id");
            let rows = q.build().persistent(false).fetch_all(&self.pool).await?;
            for r in &rows {
                out.insert(
                    TaskId::from_stored(r.get("task_id")),
                    CallTotals {
                        calls: u(r, "calls"),
                        input_tokens: u(r, "input_tokens"),
                        output_tokens: u(r, "output_tokens"),
                        cache_read_tokens: u(r, "cache_read_tokens"),
                        cache_write_tokens: u(r, "cache_write_tokens"),
                        cost_nusd: u(r, "cost_nusd"),
                        fallback_calls: u(r, "fallback_calls"),
                    },
                );
            }
        }
        Ok(out)
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
    pub async fn spent(&self, b: &Budget, since: Option<&Timestamp>) -> Result<Spent> {
        let col = if b.scope == "tenant" {
            "tenant"
        } else {
            "workspace_id"
        };
        let sql = format!(
            "SELECT SUM(input_tokens + output_tokens) AS tokens, SUM(cost_nusd) AS cost FROM llm_calls \
             WHERE {col} = ? AND (?2 IS NULL OR at >= ?2)"
        );
        let r = sqlx::query(&sql)
            .bind(&b.target)
            .bind(since.map(Timestamp::as_str))
            .fetch_one(&self.pool)
            .await?;
        Ok(Spent {
            tokens: u(&r, "tokens"),
            cost_usd: u(&r, "cost") as f64 / 1e9,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A successful call of workspace `ws` of `tenant` by task `task`, nothing measured yet.
    fn base_call(ws: &str, tenant: &str, task: &str) -> LlmCall {
        LlmCall {
            workspace_id: WorkspaceId::from_stored(format!("id-{ws}")),
            workspace: format!("{tenant}/{ws}"),
            tenant: Name::parse(tenant).unwrap(),
            task_id: Some(TaskId::from_stored(task.into())),
            session_id: None,
            provider: "openai".into(),
            model: None,
            path: "v1/responses".into(),
            status: 200,
            input_tokens: 0,
            output_tokens: 0,
            cache_read_tokens: 0,
            cache_write_tokens: 0,
            cost_usd: None,
            cost_nusd: None,
            priced: None,
            latency_ms: 0,
            ttfb_ms: None,
            error: None,
        }
    }

    /// Calls of an agent session of its own (no task) group by task as a row without a task.
    #[tokio::test]
    async fn session_calls_group_by_task_without_one() {
        let s = Store::open_in_memory().await.unwrap();
        let session = LlmCall {
            task_id: None,
            session_id: Some("as_1".into()),
            ..base_call("web", "acme", "")
        };
        let rows = [
            (session.clone(), None),
            (session, None),
            (base_call("web", "acme", "tk_1"), None),
        ];
        s.record_llm_calls(&rows).await.unwrap();
        let mut by_task = s
            .usage(&UsageFilter {
                by: UsageBy::Task,
                ..Default::default()
            })
            .await
            .unwrap();
        by_task.sort_by_key(|r| r.calls);
        let tasks: Vec<_> = by_task
            .iter()
            .map(|r| (r.task_id.as_ref().map(TaskId::as_str), r.calls))
            .collect();
        assert_eq!(tasks, [(Some("tk_1"), 1), (None, 2)]);
    }

    /// Costs are exact: the same calls add up to the same nano-dollars per task, workspace,
    /// tenant, model and day, and the fallback-priced ones are counted.
    #[tokio::test]
    async fn groupings_agree_to_the_last_nano_dollar() {
        let s = Store::open_in_memory().await.unwrap();
        let call =
            |ws: &str, tenant: &str, task: &str, model: &str, nusd: u64, priced: &str| LlmCall {
                model: Some(model.into()),
                input_tokens: 20,
                output_tokens: 10,
                cost_nusd: Some(nusd),
                priced: Some(priced.into()),
                latency_ms: 1,
                ..base_call(ws, tenant, task)
            };
        // Amounts whose float sums depend on the order they are added in.
        let calls = [
            call("web", "acme", "t1", "gpt-5.5", 100_000_001, "default"),
            call("web", "acme", "t1", "gpt-5.5", 200_000_002, "default"),
            call("web", "acme", "t2", "odd", 300_000_003, "fallback"),
            call("api", "acme", "t3", "gpt-5.5", 700_000_007, "operator"),
            call("x", "globex", "t4", "odd", 1, "fallback"),
        ];
        let rows: Vec<_> = calls.iter().map(|c| (c.clone(), None)).collect();
        s.record_llm_calls(&rows).await.unwrap();
        let by = |by: UsageBy| {
            let s = s.clone();
            async move {
                s.usage(&UsageFilter {
                    by,
                    ..Default::default()
                })
                .await
                .unwrap()
            }
        };
        let total: u64 = calls.iter().map(|c| c.cost_nusd.unwrap()).sum();
        for g in [
            UsageBy::WorkspaceModel,
            UsageBy::Session,
            UsageBy::Task,
            UsageBy::Workspace,
            UsageBy::Tenant,
            UsageBy::Model,
            UsageBy::Day,
        ] {
            let rows = by(g).await;
            let sum: u64 = rows.iter().map(|r| r.cost_nusd).sum();
            let fallback: u64 = rows.iter().map(|r| r.fallback_calls).sum();
            let n: u64 = rows.iter().map(|r| r.calls).sum();
            assert_eq!((sum, fallback, n), (total, 2, 5), "{g:?}: {rows:#?}");
        }
        let tasks = by(UsageBy::Task).await;
        let t1 = tasks
            .iter()
            .find(|r| r.task_id.as_ref().map(TaskId::as_str) == Some("t1"))
            .unwrap();
        assert_eq!(
            (t1.calls, t1.cost_nusd, t1.input_tokens),
            (2, 300_000_003, 40)
        );
        assert_eq!(
            (t1.tenant.as_str(), t1.workspace.as_str()),
            ("acme", "acme/web")
        );
        let tenants = by(UsageBy::Tenant).await;
        assert_eq!(tenants.len(), 2);
        assert_eq!(tenants[0].cost_nusd, 1_300_000_013);
        assert_eq!(tenants[0].cost_usd, Some(1.300000013));
        let days = by(UsageBy::Day).await;
        assert_eq!(days.len(), 1);
        assert_eq!(days[0].day.as_deref(), Some(&now()[..10]));
        let models = by(UsageBy::Model).await;
        let odd = models
            .iter()
            .find(|r| r.model.as_deref() == Some("odd"))
            .unwrap();
        assert_eq!((odd.calls, odd.fallback_calls), (2, 2));
        // The task totals are the same sums.
        let task = |t: &str| TaskId::from_stored(t.into());
        let totals = s
            .task_call_totals(&[&task("t1"), &task("t2"), &task("none")])
            .await
            .unwrap();
        assert_eq!(totals.len(), 2);
        assert_eq!(totals[&task("t1")].cost_nusd, t1.cost_nusd);
        assert_eq!(totals[&task("t2")].fallback_calls, 1);
        // A window that ends before the calls holds none of them; one task's filter only it.
        let until = s
            .usage(&UsageFilter {
                until: Some(crate::test_ts("2000-01-01T00:00:00.000Z")),
                ..Default::default()
            })
            .await
            .unwrap();
        assert!(until.is_empty());
        let one = s
            .usage(&UsageFilter {
                task_id: Some(task("t3")),
                by: UsageBy::Task,
                ..Default::default()
            })
            .await
            .unwrap();
        assert_eq!((one.len(), one[0].cost_nusd), (1, 700_000_007));
        // Budgets count the exact sum too.
        let spent = s
            .spent(
                &Budget {
                    scope: "tenant".into(),
                    target: "acme".into(),
                    period: "total".into(),
                    max_tokens: None,
                    max_cost_usd: None,
                },
                None,
            )
            .await
            .unwrap();
        assert_eq!(spent.cost_usd, 1.300000013);
    }

    #[tokio::test]
    async fn usage_groups_and_budgets_sum() {
        let s = Store::open_in_memory().await.unwrap();
        let call =
            |ws: &str, tenant: &str, inp: u64, out: u64, cost: Option<f64>, status: u16| LlmCall {
                provider: "anthropic".into(),
                model: Some("m".into()),
                path: "v1/messages".into(),
                status,
                input_tokens: inp,
                output_tokens: out,
                cost_usd: cost,
                latency_ms: 5,
                ..base_call(ws, tenant, "tk")
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
        let web_id = WorkspaceId::from_stored("id-web".into());
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
                tenant: Some(Name::parse("acme").unwrap()),
                ..Default::default()
            })
            .await
            .unwrap();
        assert_eq!(acme.len(), 2);
        // Calls of an agent session: filtered and grouped by it, apart from task turns.
        s.record_llm_call(&LlmCall {
            session_id: Some("as_1".into()),
            ..call("web", "acme", 3, 4, None, 200)
        })
        .await
        .unwrap();
        let only = s
            .usage(&UsageFilter {
                session_id: Some("as_1".into()),
                ..Default::default()
            })
            .await
            .unwrap();
        assert_eq!(only.len(), 1);
        assert_eq!((only[0].calls, only[0].input_tokens), (1, 3));
        let grouped = s
            .usage(&UsageFilter {
                workspace_id: Some(web_id.clone()),
                by: UsageBy::Session,
                ..Default::default()
            })
            .await
            .unwrap();
        let sessions: Vec<(Option<&str>, u64)> = grouped
            .iter()
            .map(|r| (r.session_id.as_deref(), r.calls))
            .collect();
        assert_eq!(sessions, [(None, 2), (Some("as_1"), 1)]);
        let future = s
            .usage(&UsageFilter {
                since: Some(crate::test_ts("2999-01-01T00:00:00Z")),
                ..Default::default()
            })
            .await
            .unwrap();
        assert!(future.is_empty());

        // Recordings: listed with their calls, purged by age.
        let calls = s.llm_calls(Some(&web_id), None, None, 10).await.unwrap();
        assert_eq!(calls.len(), 3);
        assert_eq!(calls[0].2.session_id.as_deref(), Some("as_1"));
        let (id, _, first, recorded) = calls[1].clone();
        assert!(!recorded);
        assert_eq!(first.input_tokens, 50);
        s.record_llm_exchange(id, "{\"prompt\":1}", "data: x")
            .await
            .unwrap();
        let (_, _, ex) = s.llm_call(id).await.unwrap().unwrap();
        assert_eq!(ex, Some(("{\"prompt\":1}".into(), "data: x".into())));
        assert!(s.llm_calls(Some(&web_id), None, None, 10).await.unwrap()[1].3);
        assert_eq!(
            s.purge_llm_recordings(&crate::test_ts("2000-01-01T00:00:00Z"))
                .await
                .unwrap(),
            0
        );
        assert_eq!(
            s.purge_llm_recordings(&crate::test_ts("2999-01-01T00:00:00Z"))
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
        let recent = s.llm_calls(Some(&web_id), None, None, 2).await.unwrap();
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
        let recent = s
            .llm_calls(
                Some(&WorkspaceId::from_stored("id-busy".into())),
                None,
                None,
                200,
            )
            .await
            .unwrap();
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
                .filter(|b| {
                    b.applies_to(
                        &Name::parse(t).unwrap(),
                        &WorkspaceId::from_stored(w.into()),
                    )
                })
                .cloned()
                .collect::<Vec<_>>()
        };
        assert_eq!(applying("acme", "id-web")[0].max_tokens, Some(200));
        assert!(applying("globex", "id-x").is_empty());
        let spent = s.spent(&b, None).await.unwrap();
        assert_eq!(spent.tokens, 175 + 7 + 2 + 4);
        assert!((spent.cost_usd - 0.75).abs() < 1e-9);
        assert!(s.remove_budget("tenant", "acme").await.unwrap());
        assert!(!s.remove_budget("tenant", "acme").await.unwrap());
    }
}
