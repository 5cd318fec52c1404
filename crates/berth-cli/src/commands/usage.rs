//! `berth usage`: LLM calls through berth's gateway, summed per workspace × provider × model
//! (or per task, workspace, tenant, model or day with `--by`) over a period, with a total row;
//! `--csv` for invoicing (a header row, stable columns, amounts as exact decimal strings).

use berth_api::{UsageQuery, UsageReport, UsageRow};

use crate::client::{decode, Client, Result};
use crate::ctx::Ctx;
use crate::format::table;
use crate::ConnArgs;

/// The groupings `--by` takes (the API's `by`).
const BY: [&str; 6] = ["task", "workspace", "tenant", "model", "day", "session"];

#[derive(Debug, clap::Args)]
pub struct UsageArgs {
    /// Only this tenant
    #[arg(long)]
    pub tenant: Option<String>,
    /// Only this workspace
    #[arg(long)]
    pub workspace: Option<String>,
    /// Only this task
    #[arg(long)]
    pub task: Option<String>,
    /// Since an RFC 3339 time, a date (2026-11-01) or a duration back from now (24h, 7d)
    #[arg(long)]
    pub since: Option<String>,
    /// Before an RFC 3339 time, a date (2026-12-01: up to its midnight) or a duration back
    /// from now
    #[arg(long)]
    pub until: Option<String>,
    /// One row per task, workspace, tenant, model (provider and model), day (UTC) or agent
    /// session; default: per workspace, provider and model
    #[arg(long, value_parser = BY)]
    pub by: Option<String>,
    /// Only the calls of this interactive agent session (its as_… id)
    #[arg(long)]
    pub session: Option<String>,
    /// One row per agent session too (task turns have none); the same as --by session
    #[arg(long, conflicts_with = "by")]
    pub by_session: bool,
    /// Print CSV: a header row, then one row per group (no total row); costs in USD as exact
    /// decimals
    #[arg(long, conflicts_with = "json")]
    pub csv: bool,
    /// Print the API's JSON
    #[arg(long)]
    pub json: bool,
    #[command(flatten)]
    pub conn: ConnArgs,
}

pub(crate) async fn run(args: UsageArgs, client: &Client, ctx: &mut Ctx<'_>) -> Result<i32> {
    let by = args
        .by
        .clone()
        .or_else(|| args.by_session.then(|| "session".to_owned()));
    let q = UsageQuery {
        tenant: args.tenant,
        workspace: args.workspace,
        since: args.since,
        session: args.session,
        group_by: None,
        by: by.clone(),
        until: args.until,
        task: args.task,
    };
    let v = client.get_query_value("/usage", &q).await?;
    if args.json {
        ctx.print_json(&v)?;
        return Ok(0);
    }
    let report: UsageReport = decode(v)?;
    if args.csv {
        ctx.print(&usage_csv(&report, by.as_deref()))?;
    } else {
        ctx.print(&usage_table(&report, by.as_deref()))?;
    }
    Ok(0)
}

/// The columns naming a row's group under `by`, and how to read them from a row.
type KeyColumns = (&'static [&'static str], fn(&UsageRow) -> Vec<String>);

fn key_columns(by: Option<&str>) -> KeyColumns {
    fn opt(s: &Option<String>) -> String {
        s.clone().unwrap_or_default()
    }
    match by {
        Some("task") => (&["task", "tenant", "workspace", "provider"], |u| {
            vec![
                opt(&u.task),
                u.tenant.clone(),
                u.workspace.clone(),
                u.provider.clone(),
            ]
        }),
        Some("workspace") => (&["tenant", "workspace"], |u| {
            vec![u.tenant.clone(), u.workspace.clone()]
        }),
        Some("tenant") => (&["tenant"], |u| vec![u.tenant.clone()]),
        Some("model") => (&["provider", "model"], |u| {
            vec![u.provider.clone(), opt(&u.model)]
        }),
        Some("day") => (&["day"], |u| vec![opt(&u.day)]),
        Some("session") => (
            &["tenant", "workspace", "session", "provider", "model"],
            |u| {
                vec![
                    u.tenant.clone(),
                    u.workspace.clone(),
                    opt(&u.session),
                    u.provider.clone(),
                    opt(&u.model),
                ]
            },
        ),
        _ => (&["tenant", "workspace", "provider", "model"], |u| {
            vec![
                u.tenant.clone(),
                u.workspace.clone(),
                u.provider.clone(),
                opt(&u.model),
            ]
        }),
    }
}

/// The measures of every row, in CSV order.
const MEASURES: [&str; 9] = [
    "calls",
    "errors",
    "input_tokens",
    "output_tokens",
    "cache_read_tokens",
    "cache_write_tokens",
    "cost_usd",
    "fallback_calls",
    "currency",
];

fn measures(u: &UsageRow) -> Vec<String> {
    vec![
        u.calls.to_string(),
        u.errors.to_string(),
        u.input_tokens.to_string(),
        u.output_tokens.to_string(),
        u.cache_read_tokens.to_string(),
        u.cache_write_tokens.to_string(),
        u.cost.clone(),
        u.fallback_calls.to_string(),
        "USD".to_owned(),
    ]
}

/// One CSV field, quoted when it has to be (RFC 4180). A field that a spreadsheet would run
/// as a formula (`=`, `+`, `-`, `@` first) gets a leading `'`: names come from tenants.
fn csv_field(s: &str) -> String {
    let s = if s.starts_with(['=', '+', '-', '@']) {
        format!("'{s}")
    } else {
        s.to_owned()
    };
    if s.contains([',', '"', '\n', '\r']) {
        format!("\"{}\"", s.replace('"', "\"\""))
    } else {
        s
    }
}

pub(crate) fn usage_csv(r: &UsageReport, by: Option<&str>) -> String {
    let (keys, key_of) = key_columns(by);
    let mut out = String::new();
    let header: Vec<&str> = keys.iter().chain(MEASURES.iter()).copied().collect();
    out.push_str(&header.join(","));
    out.push('\n');
    for u in &r.rows {
        let fields: Vec<String> = key_of(u)
            .into_iter()
            .chain(measures(u))
            .map(|f| csv_field(&f))
            .collect();
        out.push_str(&fields.join(","));
        out.push('\n');
    }
    out
}

fn usage_table(r: &UsageReport, by: Option<&str>) -> String {
    if r.rows.is_empty() {
        return "no LLM calls recorded\n".into();
    }
    let (keys, key_of) = key_columns(by);
    let row = |u: &UsageRow, key: Vec<String>| {
        let cost = if u.fallback_calls > 0 {
            format!("${} ({} at fallback price)", u.cost, u.fallback_calls)
        } else {
            format!("${}", u.cost)
        };
        key.into_iter()
            .chain([
                u.calls.to_string(),
                u.errors.to_string(),
                u.input_tokens.to_string(),
                u.output_tokens.to_string(),
                u.cache_read_tokens.to_string(),
                cost,
            ])
            .collect::<Vec<_>>()
    };
    let mut rows: Vec<Vec<String>> = r.rows.iter().map(|u| row(u, key_of(u))).collect();
    let mut total_key = vec![String::new(); keys.len()];
    total_key[0] = "TOTAL".into();
    rows.push(row(&r.total, total_key));
    let header: Vec<String> = keys
        .iter()
        .map(|k| k.to_ascii_uppercase())
        .chain(
            ["CALLS", "ERRORS", "INPUT", "OUTPUT", "CACHED", "COST"]
                .into_iter()
                .map(String::from),
        )
        .collect();
    let header: Vec<&str> = header.iter().map(String::as_str).collect();
    table(&header, &rows)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn row(task: &str, cost: &str, fallback: u64) -> UsageRow {
        UsageRow {
            tenant: "acme".into(),
            workspace: "acme/web".into(),
            task: Some(task.into()),
            provider: "anthropic".into(),
            calls: 2,
            input_tokens: 40,
            output_tokens: 20,
            cost: cost.into(),
            fallback_calls: fallback,
            ..Default::default()
        }
    }

    #[test]
    fn csv_has_a_header_stable_columns_and_exact_amounts() {
        let r = UsageReport {
            rows: vec![row("tk_1", "0.00056", 0), row("=cmd|x", "12.50", 1)],
            ..Default::default()
        };
        let csv = usage_csv(&r, Some("task"));
        assert_eq!(
            csv,
            "task,tenant,workspace,provider,calls,errors,input_tokens,output_tokens,cache_read_tokens,cache_write_tokens,cost_usd,fallback_calls,currency\n\
             tk_1,acme,acme/web,anthropic,2,0,40,20,0,0,0.00056,0,USD\n\
             '=cmd|x,acme,acme/web,anthropic,2,0,40,20,0,0,12.50,1,USD\n"
        );
        assert_eq!(csv_field("a,\"b\""), "\"a,\"\"b\"\"\"");
        // Every grouping has its own key columns, then the same measures.
        for by in [
            None,
            Some("workspace"),
            Some("tenant"),
            Some("model"),
            Some("day"),
        ] {
            let first = usage_csv(&r, by).lines().next().unwrap().to_owned();
            assert!(
                first.ends_with(",cost_usd,fallback_calls,currency"),
                "{first}"
            );
        }
        assert!(usage_csv(&r, Some("day")).starts_with("day,calls,"));
    }

    #[test]
    fn the_table_flags_fallback_prices() {
        let r = UsageReport {
            rows: vec![row("tk_1", "0.00056", 1)],
            total: UsageRow {
                cost: "0.00056".into(),
                fallback_calls: 1,
                ..Default::default()
            },
            ..Default::default()
        };
        let t = usage_table(&r, Some("task"));
        assert!(t.contains("$0.00056 (1 at fallback price)"), "{t}");
        assert!(t.contains("TOTAL"), "{t}");
    }
}
