//! `berth user …`: people known from single sign-on. Admins see and change all of them, owners
//! those of their tenant; disabling a user ends their browser sessions at once.

use berth_api::User;
use clap::Subcommand;

use crate::client::{decode, encode_segment, Client, Result};
use crate::ctx::Ctx;
use crate::format::{short_time, table};

#[derive(Debug, Subcommand)]
pub enum UserCmd {
    /// List users (name, tenant, role, state, last login)
    List {
        #[arg(long)]
        json: bool,
    },
    /// Disable a user: their sessions end and they cannot sign in until enabled
    Disable {
        /// The user id (`usr_…`, from `berth user list`)
        id: String,
    },
    /// Enable a disabled user again
    Enable {
        /// The user id (`usr_…`)
        id: String,
    },
}

pub(crate) async fn run(cmd: UserCmd, client: &Client, ctx: &mut Ctx<'_>) -> Result<i32> {
    match cmd {
        UserCmd::List { json } => {
            let v = client.get_value("/users").await?;
            if json {
                ctx.print_json(&v)?;
            } else {
                let list: Vec<User> = decode(v)?;
                ctx.print(&user_table(&list))?;
            }
        }
        UserCmd::Disable { id } => {
            let u: User = decode(
                client
                    .post_empty_value(&action_path(&id, "disable"))
                    .await?,
            )?;
            ctx.print(&format!(
                "user {} ({}) disabled; their sessions ended\n",
                u.id, u.name
            ))?;
        }
        UserCmd::Enable { id } => {
            let u: User = decode(client.post_empty_value(&action_path(&id, "enable")).await?)?;
            ctx.print(&format!("user {} ({}) enabled\n", u.id, u.name))?;
        }
    }
    Ok(0)
}

fn action_path(id: &str, action: &str) -> String {
    format!("/users/{}/{action}", encode_segment(id))
}

fn user_table(list: &[User]) -> String {
    if list.is_empty() {
        return "no users (people appear here after their first single sign-on)\n".to_owned();
    }
    let rows: Vec<Vec<String>> = list
        .iter()
        .map(|u| {
            vec![
                u.id.clone(),
                u.name.clone(),
                u.email.clone().unwrap_or_else(|| "-".into()),
                u.tenant.clone().unwrap_or_else(|| "*".into()),
                u.role.clone(),
                if u.disabled { "disabled" } else { "active" }.to_owned(),
                u.last_login_at
                    .as_deref()
                    .map(short_time)
                    .unwrap_or_else(|| "-".into()),
            ]
        })
        .collect();
    table(
        &[
            "ID",
            "NAME",
            "EMAIL",
            "TENANT",
            "ROLE",
            "STATE",
            "LAST LOGIN",
        ],
        &rows,
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn table_shows_server_wide_users_as_star() {
        let u = User {
            id: "usr_1".into(),
            name: "Adam".into(),
            email: None,
            tenant: None,
            role: "admin".into(),
            disabled: true,
            issuer: "https://idp".into(),
            subject: "adam".into(),
            created_at: berth_domain::Timestamp::parse("2026-01-01T00:00:00Z").unwrap(),
            last_login_at: None,
        };
        let t = user_table(&[u]);
        assert!(t.contains("usr_1") && t.contains("*"), "{t}");
        assert!(t.contains("disabled"), "{t}");
        assert!(user_table(&[]).starts_with("no users"));
    }
}
