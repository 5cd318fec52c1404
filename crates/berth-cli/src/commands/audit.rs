//! `berth audit`: the audit log, newest first.

use berth_api::{AuditEntry, AuditQuery};
use clap::Args;

use crate::client::{decode, Client, Result};
use crate::ctx::Ctx;
use crate::format::{short_time, table};
use crate::ConnArgs;

#[derive(Debug, Args)]
pub struct AuditArgs {
    /// Maximum number of entries
    #[arg(long)]
    pub limit: Option<i64>,
    /// Only entries about this target, e.g. acme/web
    #[arg(long)]
    pub target: Option<String>,
    /// Print the API's JSON
    #[arg(long)]
    pub json: bool,
    #[command(flatten)]
    pub conn: ConnArgs,
}

pub(crate) async fn run(args: AuditArgs, client: &Client, ctx: &mut Ctx<'_>) -> Result<i32> {
    let q = AuditQuery {
        limit: args.limit,
        target: args.target,
    };
    let v = client.get_query_value("/audit", &q).await?;
    if args.json {
        ctx.print_json(&v)?;
    } else {
        let entries: Vec<AuditEntry> = decode(v)?;
        ctx.print(&audit_table(&entries))?;
    }
    Ok(0)
}

/// `alice (member@acme)`, `root (admin)`, or the bare actor of system rows and old rows.
fn actor(e: &AuditEntry) -> String {
    match (&e.actor_name, &e.actor_role) {
        (Some(name), Some(role)) => match &e.actor_tenant {
            Some(t) => format!("{name} ({role}@{t})"),
            None => format!("{name} ({role})"),
        },
        _ => e.actor.clone(),
    }
}

fn audit_table(entries: &[AuditEntry]) -> String {
    if entries.is_empty() {
        return "no audit entries\n".into();
    }
    let rows: Vec<Vec<String>> = entries
        .iter()
        .map(|e| {
            vec![
                short_time(&e.at),
                actor(e),
                e.action.clone(),
                e.target.clone(),
                e.result.clone(),
            ]
        })
        .collect();
    table(&["AT", "ACTOR", "ACTION", "TARGET", "RESULT"], &rows)
}
