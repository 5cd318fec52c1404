//! `berth login URL --token T`: verify the token with the server, then save the URL and token
//! in the login file for later commands.

use berth_api::WhoAmI;
use clap::Args;

use crate::client::{save_config, CliError, Client, LoginConfig, Result};
use crate::ctx::Ctx;

#[derive(Debug, Args)]
pub struct LoginArgs {
    /// Server URL, e.g. http://127.0.0.1:8787
    pub url: String,
    /// API token
    #[arg(
        long,
        env = "BERTH_TOKEN",
        hide_env_values = true,
        value_name = "TOKEN"
    )]
    pub token: Option<String>,
}

pub(crate) async fn run(args: LoginArgs, ctx: &mut Ctx<'_>) -> Result<i32> {
    let token = args
        .token
        .as_deref()
        .map(str::trim)
        .filter(|t| !t.is_empty())
        .ok_or_else(|| CliError::other("missing token: berth login URL --token T"))?;
    let client = Client::with_token(&args.url, token)?;
    let me: WhoAmI = client.get("/whoami").await?;
    let path = ctx.config_path.clone().ok_or_else(|| {
        CliError::other("cannot find a config directory: set HOME or XDG_CONFIG_HOME")
    })?;
    save_config(
        &path,
        &LoginConfig {
            url: client.base().to_owned(),
            token: token.to_owned(),
        },
    )?;
    ctx.print(&format!(
        "logged in to {} as {} (role {}); saved to {}\n",
        client.base(),
        me.token_name,
        me.role,
        path.display()
    ))?;
    Ok(0)
}
