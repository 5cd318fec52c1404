//! `berth secret …`: the tenant-scoped secrets vault. Values go in through stdin and never come
//! back out; listings show names and where each secret is used.

use berth_api::{SecretInfo, SecretQuery, SetSecret};
use clap::Subcommand;

use crate::client::{decode, encode_segment, CliError, Client, Result};
use crate::ctx::Ctx;
use crate::format::{short_time, table};

#[derive(Debug, Subcommand)]
pub enum SecretCmd {
    /// Set a secret; the value is read from stdin, never from the command line
    Set {
        #[arg(long)]
        tenant: String,
        name: String,
    },
    /// List secrets (names, where used, whether exposed); values are never shown
    List {
        #[arg(long)]
        tenant: Option<String>,
        #[arg(long)]
        json: bool,
    },
    /// Remove a secret
    Rm {
        #[arg(long)]
        tenant: String,
        name: String,
    },
}

pub(crate) async fn run(cmd: SecretCmd, client: &Client, ctx: &mut Ctx<'_>) -> Result<i32> {
    match cmd {
        SecretCmd::Set { tenant, name } => set(client, ctx, &tenant, &name).await?,
        SecretCmd::List { tenant, json } => list(client, ctx, tenant, json).await?,
        SecretCmd::Rm { tenant, name } => {
            client.delete(&secret_path(&tenant, &name), &()).await?;
            ctx.print(&format!("secret {tenant}/{name} removed\n"))?;
        }
    }
    Ok(0)
}

fn secret_path(tenant: &str, name: &str) -> String {
    format!(
        "/secrets/{}/{}",
        encode_segment(tenant),
        encode_segment(name)
    )
}

/// Sets a secret to what comes on stdin, less one trailing newline.
async fn set(client: &Client, ctx: &mut Ctx<'_>, tenant: &str, name: &str) -> Result<()> {
    let mut value = String::new();
    std::io::Read::read_to_string(&mut std::io::stdin(), &mut value)
        .map_err(|e| CliError::other(format!("cannot read the secret from stdin: {e}")))?;
    let value = value.strip_suffix('\n').unwrap_or(&value);
    let value = value.strip_suffix('\r').unwrap_or(value).to_owned();
    if value.is_empty() {
        return Err(CliError::other(
            "no value on stdin: pipe it in, e.g. `printf %s \"$TOKEN\" | berth secret set --tenant T NAME`",
        ));
    }
    client
        .put_value(&secret_path(tenant, name), &SetSecret { value })
        .await?;
    ctx.print(&format!("secret {tenant}/{name} set\n"))
}

async fn list(
    client: &Client,
    ctx: &mut Ctx<'_>,
    tenant: Option<String>,
    json: bool,
) -> Result<()> {
    let v = client
        .get_query_value("/secrets", &SecretQuery { tenant })
        .await?;
    if json {
        return ctx.print_json(&v);
    }
    let list: Vec<SecretInfo> = decode(v)?;
    if list.is_empty() {
        return ctx.print("no secrets\n");
    }
    ctx.print(&secret_table(&list))
}

fn secret_table(list: &[SecretInfo]) -> String {
    let rows: Vec<Vec<String>> = list
        .iter()
        .map(|s| {
            let used: Vec<String> = s
                .used_by
                .iter()
                .map(|u| {
                    if u.exposed {
                        format!("{} ({}, EXPOSED)", u.workspace, u.delivery)
                    } else {
                        format!(
                            "{} (placeholder → {} in {})",
                            u.workspace,
                            u.hosts.join(","),
                            u.headers.join(",")
                        )
                    }
                })
                .collect();
            vec![
                s.tenant.clone(),
                s.name.clone(),
                short_time(&s.updated_at),
                if used.is_empty() {
                    "-".into()
                } else {
                    used.join("; ")
                },
            ]
        })
        .collect();
    table(&["TENANT", "NAME", "UPDATED", "USED BY"], &rows)
}
