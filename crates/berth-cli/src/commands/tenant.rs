//! `berth tenant …`: tenants with their quotas and what they hold; admins set quotas.

use berth_api::{TenantInfo, TenantQuota, TenantQuotaReport};
use clap::Subcommand;

use crate::client::{decode, Client, Result};
use crate::ctx::Ctx;
use crate::format::table;

#[derive(Debug, Subcommand)]
pub enum TenantCmd {
    /// List tenants with quotas and use (all for an admin, your own otherwise)
    #[command(alias = "ls")]
    List {
        #[arg(long)]
        json: bool,
    },
    /// Show a tenant's quota, or set it (admins; the flags given replace the whole quota,
    /// a flag left out is no limit)
    Quota {
        /// The tenant, e.g. acme
        tenant: String,
        /// Workspaces that may exist at once
        #[arg(long)]
        max_workspaces: Option<u32>,
        /// Memory of the running workspaces together, e.g. 8g
        #[arg(long)]
        memory: Option<String>,
        /// CPUs of the running workspaces together, e.g. 4
        #[arg(long)]
        cpus: Option<String>,
        /// Tasks at work at once
        #[arg(long)]
        max_tasks: Option<u32>,
        /// Remove every limit
        #[arg(long, conflicts_with_all = ["max_workspaces", "memory", "cpus", "max_tasks"])]
        clear: bool,
        #[arg(long)]
        json: bool,
    },
}

pub(crate) async fn run(cmd: TenantCmd, client: &Client, ctx: &mut Ctx<'_>) -> Result<i32> {
    match cmd {
        TenantCmd::List { json } => {
            let v = client.get_value("/tenants").await?;
            if json {
                ctx.print_json(&v)?;
            } else {
                let list: Vec<TenantInfo> = decode(v)?;
                ctx.print(&tenant_table(&list))?;
            }
        }
        TenantCmd::Quota {
            tenant,
            max_workspaces,
            memory,
            cpus,
            max_tasks,
            clear,
            json,
        } => {
            let path = format!("/tenants/{}/quota", crate::client::encode_segment(&tenant));
            let set = TenantQuota {
                max_workspaces,
                memory,
                cpus,
                max_tasks,
            };
            let changes = clear
                || set.max_workspaces.is_some()
                || set.memory.is_some()
                || set.cpus.is_some()
                || set.max_tasks.is_some();
            let v = if changes {
                client.put_value(&path, &set).await?
            } else {
                client.get_value(&path).await?
            };
            if json {
                ctx.print_json(&v)?;
            } else {
                let r: TenantQuotaReport = decode(v)?;
                ctx.print(&quota_lines(&r))?;
            }
        }
    }
    Ok(0)
}

fn limit<T: ToString>(v: &Option<T>) -> String {
    v.as_ref()
        .map_or_else(|| "unlimited".to_owned(), ToString::to_string)
}

fn quota_lines(r: &TenantQuotaReport) -> String {
    let q = &r.quota;
    let u = &r.used;
    format!(
        "tenant {}\n  workspaces  {} of {}\n  memory      {} of {}\n  cpus        {} of {}\n  tasks       {} of {}\n",
        r.tenant,
        u.workspaces,
        limit(&q.max_workspaces),
        u.memory,
        limit(&q.memory),
        u.cpus,
        limit(&q.cpus),
        u.tasks,
        limit(&q.max_tasks),
    )
}

fn tenant_table(list: &[TenantInfo]) -> String {
    if list.is_empty() {
        return "no tenants\n".into();
    }
    let of = |used: String, max: String| format!("{used}/{max}");
    let rows: Vec<Vec<String>> = list
        .iter()
        .map(|t| {
            vec![
                t.name.clone(),
                of(
                    t.used.workspaces.to_string(),
                    limit(&t.quota.max_workspaces),
                ),
                of(t.used.memory.clone(), limit(&t.quota.memory)),
                of(t.used.cpus.clone(), limit(&t.quota.cpus)),
                of(t.used.tasks.to_string(), limit(&t.quota.max_tasks)),
            ]
        })
        .collect();
    table(&["TENANT", "WORKSPACES", "MEMORY", "CPUS", "TASKS"], &rows)
}
