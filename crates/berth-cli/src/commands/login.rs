//! `berth login URL --token T [--fingerprint SHA256 | --ca FILE]`: verify the token with the
//! server (over HTTPS: its certificate checked against the public roots, the given CA, or the
//! pinned fingerprint), then save the URL, token and that trust in the login file for later
//! commands.

use std::path::PathBuf;

use berth_api::WhoAmI;
use clap::Args;

use crate::client::{normalize_url, save_config, CliError, Client, LoginConfig, Result};
use crate::ctx::Ctx;
use crate::tls::{normalize_fingerprint, Trust};

#[derive(Debug, Args)]
pub struct LoginArgs {
    /// Server URL, e.g. http://127.0.0.1:8787 or https://berth.example.com
    pub url: String,
    /// API token
    #[arg(
        long,
        env = "BERTH_TOKEN",
        hide_env_values = true,
        value_name = "TOKEN"
    )]
    pub token: Option<String>,
    /// Trust exactly the server certificate with this SHA-256 fingerprint (hex, colons allowed):
    /// for a self-signed server (`berth server --tls self-signed` logs it; `berth doctor` shows it)
    #[arg(long, value_name = "SHA256HEX", conflicts_with = "ca")]
    pub fingerprint: Option<String>,
    /// Also trust the root certificates in this PEM file (a private CA)
    #[arg(long, value_name = "FILE")]
    pub ca: Option<PathBuf>,
}

pub(crate) async fn run(args: LoginArgs, ctx: &mut Ctx<'_>) -> Result<i32> {
    let token = args
        .token
        .as_deref()
        .map(str::trim)
        .filter(|t| !t.is_empty())
        .ok_or_else(|| CliError::other("missing token: berth login URL --token T"))?;
    let url = normalize_url(&args.url)?;
    let https = url.to_ascii_lowercase().starts_with("https://");
    if !https && (args.fingerprint.is_some() || args.ca.is_some()) {
        return Err(CliError::other(
            "--fingerprint and --ca apply to https:// URLs only",
        ));
    }
    let fingerprint = args
        .fingerprint
        .as_deref()
        .map(normalize_fingerprint)
        .transpose()?;
    let ca = args.ca.map(|p| std::path::absolute(&p).unwrap_or(p));
    let trust = Trust {
        fingerprint: fingerprint.clone(),
        ca: ca.clone(),
    };
    let client = Client::with_token(&url, token, &trust)?;
    let me: WhoAmI = client.get("/whoami").await?;
    let path = ctx.config_path.clone().ok_or_else(|| {
        CliError::other("cannot find a config directory: set HOME or XDG_CONFIG_HOME")
    })?;
    save_config(
        &path,
        &LoginConfig {
            url: client.base().to_owned(),
            token: token.to_owned(),
            fingerprint,
            ca,
        },
    )?;
    let pinned = if trust.fingerprint.is_some() {
        " (certificate pinned)"
    } else {
        ""
    };
    ctx.print(&format!(
        "logged in to {} as {} (role {}){pinned}; saved to {}\n",
        client.base(),
        me.token_name,
        me.role,
        path.display()
    ))?;
    Ok(0)
}
