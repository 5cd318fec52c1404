//! `berth egress template …`: egress templates, named rule lists that workspaces share: the
//! tenants' own (set and removed here; a change reaches every workspace that uses one at
//! once) and the read-only built-ins.

use berth_api::{EgressTemplate, EgressTemplateQuery, SetEgressTemplate};
use clap::Subcommand;
use serde_json::Value;

use super::rule_arg;
use crate::client::{decode, encode_segment, CliError, Client, Result};
use crate::ctx::Ctx;
use crate::format::{key_values, short_time, table};

#[derive(Debug, Subcommand)]
pub enum EgressTemplateCmd {
    /// List the built-in templates and the tenants' own
    #[command(visible_alias = "ls")]
    List {
        /// Only this tenant's templates (and the built-ins)
        #[arg(long)]
        tenant: Option<String>,
        #[arg(long)]
        json: bool,
    },
    /// Show a template's rules and the workspaces that use it
    Show {
        name: String,
        /// The tenant whose template this is [default: the built-in, else the only tenant
        /// that has one of this name]
        #[arg(long)]
        tenant: Option<String>,
        #[arg(long)]
        json: bool,
    },
    /// Create or replace a tenant's template; every running workspace that uses it gets the
    /// new rules at once
    Set {
        #[arg(long)]
        tenant: String,
        name: String,
        /// Rules in order, each one argument: 'allow registry.npmjs.org:443' (a bare HOST
        /// means `allow HOST`)
        #[arg(required = true, num_args = 1.., value_name = "RULE")]
        rules: Vec<String>,
        /// What the template is for [default: keep the current one]
        #[arg(long)]
        description: Option<String>,
        #[arg(long)]
        json: bool,
    },
    /// Remove a tenant's template
    #[command(visible_alias = "remove")]
    Rm {
        #[arg(long)]
        tenant: String,
        name: String,
        /// Detach it from every workspace that uses it (otherwise refused while attached)
        #[arg(long)]
        force: bool,
    },
}

pub(crate) async fn run(cmd: EgressTemplateCmd, client: &Client, ctx: &mut Ctx<'_>) -> Result<i32> {
    match cmd {
        EgressTemplateCmd::List { tenant, json } => {
            let v = client
                .get_query_value("/egress/templates", &EgressTemplateQuery { tenant })
                .await?;
            if json {
                ctx.print_json(&v)?;
            } else {
                let list: Vec<EgressTemplate> = decode(v)?;
                ctx.print(&template_table(&list))?;
            }
        }
        EgressTemplateCmd::Show { name, tenant, json } => {
            let v = match tenant {
                Some(t) => client.get_value(&template_path(&t, &name)).await?,
                None => find(client, &name).await?,
            };
            if json {
                ctx.print_json(&v)?;
            } else {
                let t: EgressTemplate = decode(v)?;
                ctx.print(&template_details(&t))?;
            }
        }
        EgressTemplateCmd::Set {
            tenant,
            name,
            rules,
            description,
            json,
        } => {
            let body = SetEgressTemplate {
                description,
                rules: rules.iter().map(|r| rule_arg(r)).collect(),
            };
            let v = client
                .put_value(&template_path(&tenant, &name), &body)
                .await?;
            if json {
                ctx.print_json(&v)?;
            } else {
                let t: EgressTemplate = decode(v)?;
                ctx.print(&set_line(&tenant, &name, &t))?;
            }
        }
        EgressTemplateCmd::Rm {
            tenant,
            name,
            force,
        } => {
            client
                .delete(&template_path(&tenant, &name), &[("force", force)])
                .await?;
            ctx.print(&format!("egress template {tenant}/{name} removed\n"))?;
        }
    }
    Ok(0)
}

fn template_path(tenant: &str, name: &str) -> String {
    format!(
        "/egress/templates/{}/{}",
        encode_segment(tenant),
        encode_segment(name)
    )
}

/// The template a bare name means: the built-in, else the one tenant that has it.
async fn find(client: &Client, name: &str) -> Result<Value> {
    let all = client.get_value("/egress/templates").await?;
    let list: Vec<EgressTemplate> = decode(all.clone())?;
    let found: Vec<usize> = (0..list.len()).filter(|i| list[*i].name == name).collect();
    let pick = found
        .iter()
        .find(|i| list[**i].builtin)
        .or(if found.len() == 1 {
            found.first()
        } else {
            None
        });
    match pick {
        Some(i) => Ok(all[*i].clone()),
        None if found.is_empty() => Err(CliError::other(format!(
            "no egress template {name} (see `berth egress template list`)"
        ))),
        None => {
            let tenants: Vec<String> = found.iter().map(|i| template_owner(&list[*i])).collect();
            Err(CliError::other(format!(
                "egress template {name} exists in several tenants ({}): use --tenant",
                tenants.join(", ")
            )))
        }
    }
}

/// What `set` reports: how many rules, and which workspaces got them.
fn set_line(tenant: &str, name: &str, t: &EgressTemplate) -> String {
    let n = t.rules.len();
    let users = if t.used_by.is_empty() {
        "not attached".to_owned()
    } else {
        format!("applied to {}", t.used_by.join(", "))
    };
    format!(
        "egress template {tenant}/{name} set: {n} rule{}, {users}\n",
        if n == 1 { "" } else { "s" }
    )
}

fn template_owner(t: &EgressTemplate) -> String {
    match &t.tenant {
        Some(tenant) if !t.builtin => tenant.clone(),
        _ => "(built-in)".into(),
    }
}

fn used_by(t: &EgressTemplate) -> String {
    if t.used_by.is_empty() {
        "-".into()
    } else {
        t.used_by.join(", ")
    }
}

fn template_table(list: &[EgressTemplate]) -> String {
    let rows: Vec<Vec<String>> = list
        .iter()
        .map(|t| {
            vec![
                t.name.clone(),
                template_owner(t),
                t.rules.len().to_string(),
                used_by(t),
                t.description.clone().unwrap_or_default(),
            ]
        })
        .collect();
    table(
        &["NAME", "TENANT", "RULES", "USED BY", "DESCRIPTION"],
        &rows,
    )
}

fn template_details(t: &EgressTemplate) -> String {
    let mut pairs = vec![
        ("name", t.name.clone()),
        ("tenant", template_owner(t)),
        (
            "description",
            t.description.clone().unwrap_or_else(|| "-".into()),
        ),
        ("used by", used_by(t)),
    ];
    if let Some(at) = &t.updated_at {
        pairs.push(("updated", short_time(at)));
    }
    let mut out = key_values(&pairs);
    if t.rules.is_empty() {
        out.push_str("rules:       none\n");
    } else {
        out.push_str("rules:\n");
        for (i, r) in t.rules.iter().enumerate() {
            out.push_str(&format!("{i:>3}  {r}\n"));
        }
    }
    out
}
