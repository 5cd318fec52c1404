//! `berth usage`: LLM calls through berth's gateway, per workspace, provider and model, with a
//! total row.

use berth_api::{UsageQuery, UsageReport, UsageRow};

use crate::client::{decode, Client, Result};
use crate::ctx::Ctx;
use crate::format::{table, usd};
use crate::ConnArgs;

#[derive(Debug, clap::Args)]
pub struct UsageArgs {
    /// Only this tenant
    #[arg(long)]
    pub tenant: Option<String>,
    /// Only this workspace
    #[arg(long)]
    pub workspace: Option<String>,
    /// Since an RFC 3339 time, a date (2026-11-01) or a duration back from now (24h, 7d)
    #[arg(long)]
    pub since: Option<String>,
    /// Print the API's JSON
    #[arg(long)]
    pub json: bool,
    #[command(flatten)]
    pub conn: ConnArgs,
}

pub(crate) async fn run(args: UsageArgs, client: &Client, ctx: &mut Ctx<'_>) -> Result<i32> {
    let q = UsageQuery {
        tenant: args.tenant,
        workspace: args.workspace,
        since: args.since,
    };
    let v = client.get_query_value("/usage", &q).await?;
    if args.json {
        ctx.print_json(&v)?;
        return Ok(0);
    }
    let report: UsageReport = decode(v)?;
    ctx.print(&usage_table(&report))?;
    Ok(0)
}

fn usage_table(r: &UsageReport) -> String {
    if r.rows.is_empty() {
        return "no LLM calls recorded\n".into();
    }
    let row = |u: &UsageRow, ws: &str, p: &str, m: &str| {
        vec![
            ws.to_owned(),
            p.to_owned(),
            m.to_owned(),
            u.calls.to_string(),
            u.errors.to_string(),
            u.input_tokens.to_string(),
            u.output_tokens.to_string(),
            u.cache_read_tokens.to_string(),
            usd(u.cost_usd),
        ]
    };
    let mut rows: Vec<Vec<String>> = r
        .rows
        .iter()
        .map(|u| {
            row(
                u,
                &u.workspace,
                &u.provider,
                u.model.as_deref().unwrap_or("-"),
            )
        })
        .collect();
    rows.push(row(&r.total, "TOTAL", "", ""));
    table(
        &[
            "WORKSPACE",
            "PROVIDER",
            "MODEL",
            "CALLS",
            "ERRORS",
            "INPUT",
            "OUTPUT",
            "CACHED",
            "COST",
        ],
        &rows,
    )
}
