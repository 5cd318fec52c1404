//! `berth budget …`: token and cost budgets of tenants and workspaces, and what is spent of
//! them in the current period.

use berth_api::{Budget, BudgetTarget, SetBudget};
use clap::Subcommand;

use crate::client::{decode, Client, Result};
use crate::ctx::Ctx;
use crate::format::{table, usd};

/// Whose budget: exactly one of --tenant or --workspace.
#[derive(Debug, clap::Args)]
#[group(required = true, multiple = false)]
pub struct BudgetTargetArgs {
    /// A tenant's budget (all its workspaces together)
    #[arg(long)]
    pub tenant: Option<String>,
    /// One workspace's budget
    #[arg(long)]
    pub workspace: Option<String>,
}

#[derive(Debug, Subcommand)]
pub enum BudgetCmd {
    /// Set (replace) a budget
    Set {
        #[command(flatten)]
        target: BudgetTargetArgs,
        /// Maximum input + output tokens per period
        #[arg(long)]
        tokens: Option<u64>,
        /// Maximum cost in USD per period (from the server's price table)
        #[arg(long)]
        cost: Option<f64>,
        /// day, month or total
        #[arg(long, default_value = "day", value_parser = ["day", "month", "total"])]
        period: String,
        #[arg(long)]
        json: bool,
    },
    /// List budgets with what is spent in the current period
    List {
        #[arg(long)]
        json: bool,
    },
    /// Remove a budget
    Rm {
        #[command(flatten)]
        target: BudgetTargetArgs,
    },
}

pub(crate) async fn run(cmd: BudgetCmd, client: &Client, ctx: &mut Ctx<'_>) -> Result<i32> {
    match cmd {
        BudgetCmd::Set {
            target,
            tokens,
            cost,
            period,
            json,
        } => {
            let body = SetBudget {
                tenant: target.tenant,
                workspace: target.workspace,
                period: Some(period),
                max_tokens: tokens,
                max_cost_usd: cost,
            };
            let v = client.put_value("/budgets", &body).await?;
            if json {
                ctx.print_json(&v)?;
            } else {
                let b: Budget = decode(v)?;
                ctx.print(&format!("budget set for {} {}\n", b.scope, b.target))?;
            }
        }
        BudgetCmd::List { json } => {
            let v = client.get_value("/budgets").await?;
            if json {
                ctx.print_json(&v)?;
            } else {
                let list: Vec<Budget> = decode(v)?;
                ctx.print(&budget_table(&list))?;
            }
        }
        BudgetCmd::Rm { target } => {
            let q = BudgetTarget {
                tenant: target.tenant.clone(),
                workspace: target.workspace.clone(),
            };
            client.delete("/budgets", &q).await?;
            let who = target.tenant.or(target.workspace).unwrap_or_default();
            ctx.print(&format!("budget removed for {who}\n"))?;
        }
    }
    Ok(0)
}

fn budget_table(list: &[Budget]) -> String {
    if list.is_empty() {
        return "no budgets\n".into();
    }
    let rows: Vec<Vec<String>> = list
        .iter()
        .map(|b| {
            vec![
                b.scope.clone(),
                b.target.clone(),
                b.period.clone(),
                b.max_tokens
                    .map(|t| t.to_string())
                    .unwrap_or_else(|| "-".into()),
                b.spent_tokens.to_string(),
                usd(b.max_cost_usd),
                format!("${:.4}", b.spent_cost_usd),
            ]
        })
        .collect();
    table(
        &[
            "SCOPE",
            "TARGET",
            "PERIOD",
            "MAX TOKENS",
            "SPENT TOKENS",
            "MAX COST",
            "SPENT COST",
        ],
        &rows,
    )
}
