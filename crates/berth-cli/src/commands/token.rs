//! `berth token …`: create (the token printed once), list and revoke API tokens.

use berth_api::{CreateToken, CreatedToken, TokenInfo};
use berth_domain::Timestamp;
use clap::Subcommand;

use crate::client::{decode, Client, Result};
use crate::ctx::Ctx;
use crate::format::{short_time, table};

#[derive(Debug, Subcommand)]
pub enum TokenCmd {
    /// Create a token and print it (once: berth keeps only its hash)
    Create {
        /// Who or what the token is for, e.g. alice
        #[arg(long)]
        name: String,
        /// The tenant it belongs to (every role but admin)
        #[arg(long)]
        tenant: Option<String>,
        /// admin, owner, member or viewer
        #[arg(long, value_parser = ["admin", "owner", "member", "viewer"])]
        role: String,
        /// Lifetime, e.g. 30d, 12h or 90m (default: does not expire)
        #[arg(long)]
        expires: Option<String>,
        #[arg(long)]
        json: bool,
    },
    /// List tokens (all for an admin, the tenant's for an owner)
    #[command(alias = "ls")]
    List {
        #[arg(long)]
        json: bool,
    },
    /// Revoke a token by id
    Revoke {
        /// The token's id (tok_…), from `berth token list`
        id: String,
    },
}

pub(crate) async fn run(cmd: TokenCmd, client: &Client, ctx: &mut Ctx<'_>) -> Result<i32> {
    match cmd {
        TokenCmd::Create {
            name,
            tenant,
            role,
            expires,
            json,
        } => {
            let body = CreateToken {
                name,
                role,
                tenant,
                expires_in: expires,
            };
            let v = client.post_value("/tokens", &body).await?;
            if json {
                ctx.print_json(&v)?;
            } else {
                let t: CreatedToken = decode(v)?;
                ctx.print(&format!("{}\n", t.token))?;
                ctx.note(&format!(
                    "token {} ({}) created: {}; it is shown only now",
                    t.info.name,
                    t.info.id,
                    describe(&t.info)
                ));
            }
        }
        TokenCmd::List { json } => {
            let v = client.get_value("/tokens").await?;
            if json {
                ctx.print_json(&v)?;
            } else {
                let list: Vec<TokenInfo> = decode(v)?;
                ctx.print(&token_table(&list))?;
            }
        }
        TokenCmd::Revoke { id } => {
            let v = client
                .delete_value(&format!("/tokens/{}", crate::client::encode_segment(&id)))
                .await?;
            let t: TokenInfo = decode(v)?;
            ctx.print(&format!("token {} ({}) revoked\n", t.name, t.id))?;
        }
    }
    Ok(0)
}

/// `role member in acme, expires …`
pub(crate) fn describe(t: &TokenInfo) -> String {
    let mut s = format!("role {}", t.role);
    if let Some(tenant) = &t.tenant {
        s.push_str(&format!(" in {tenant}"));
    }
    match &t.expires_at {
        Some(at) => s.push_str(&format!(", expires {at}")),
        None => s.push_str(", does not expire"),
    }
    s
}

fn token_table(list: &[TokenInfo]) -> String {
    if list.is_empty() {
        return "no tokens\n".into();
    }
    let dash = |o: &Option<Timestamp>| o.as_ref().map_or("-".to_owned(), short_time);
    let rows: Vec<Vec<String>> = list
        .iter()
        .map(|t| {
            let state = if t.revoked_at.is_some() {
                "revoked".to_owned()
            } else {
                "live".to_owned()
            };
            vec![
                t.id.clone(),
                t.name.clone(),
                t.role.clone(),
                t.tenant.clone().unwrap_or_else(|| "-".into()),
                dash(&t.expires_at),
                dash(&t.last_used_at),
                state,
            ]
        })
        .collect();
    table(
        &[
            "ID",
            "NAME",
            "ROLE",
            "TENANT",
            "EXPIRES",
            "LAST USED",
            "STATE",
        ],
        &rows,
    )
}
