//! `berth workspace update W`: change a workspace after creation (`PATCH /workspaces/{ws}`),
//! with `workspace create`'s flags; prints what changed and what applies at the next start.

use std::path::PathBuf;

use berth_api::{UpdateWorkspace, UseSecret, WorkspaceUpdate};
use berth_domain::SecretDelivery;
use clap::Args;

use crate::client::{decode, ws_path, CliError, Client, Result};
use crate::ctx::Ctx;

#[derive(Debug, Args)]
pub struct WorkspaceUpdateArgs {
    /// Workspace: TENANT/NAME, NAME or id
    pub ws: String,
    /// Memory cap, e.g. 512m or 2g
    #[arg(long)]
    pub memory: Option<String>,
    /// CPU cap, e.g. 1 or 0.5
    #[arg(long)]
    pub cpus: Option<String>,
    /// Maximum number of processes
    #[arg(long)]
    pub pids: Option<i64>,
    /// Bind (or re-bind) a tenant secret through a placeholder swapped in by the egress proxy
    /// for these hosts: --secret GITHUB_TOKEN:github.com,api.github.com[:HEADERS] (repeatable)
    #[arg(long = "secret", value_name = "NAME:HOSTS[:HEADERS]")]
    pub secret: Vec<String>,
    /// Put a tenant secret's real value into the environment (exposed; at the next start)
    #[arg(long = "secret-env", value_name = "NAME")]
    pub secret_env: Vec<String>,
    /// Put a tenant secret's real value into /run/berth/secrets/NAME (exposed; at the next
    /// start)
    #[arg(long = "secret-file", value_name = "NAME")]
    pub secret_file: Vec<String>,
    /// Remove a secret binding (repeatable)
    #[arg(long = "remove-secret", value_name = "NAME")]
    pub remove_secret: Vec<String>,
    /// Attach an egress template after those attached (repeatable)
    #[arg(long = "egress-template", value_name = "NAME")]
    pub egress_template: Vec<String>,
    /// Detach an egress template (repeatable)
    #[arg(long = "remove-egress-template", value_name = "NAME")]
    pub remove_egress_template: Vec<String>,
    /// The approval policy of new tasks unless a task asks for another
    #[arg(long, value_parser = ["never", "on-request", "always"])]
    pub approval: Option<String>,
    /// Replace the MCP servers: a JSON file holding an array of servers (as for create)
    #[arg(long = "mcp-file", value_name = "FILE")]
    pub mcp_file: Option<PathBuf>,
    /// Print the API's JSON
    #[arg(long)]
    pub json: bool,
}

/// Sends the change and reports it.
pub(super) async fn update(
    args: WorkspaceUpdateArgs,
    client: &Client,
    ctx: &mut Ctx<'_>,
) -> Result<i32> {
    let mut secrets = Vec::new();
    for s in &args.secret {
        secrets.push(super::secret_arg(s)?);
    }
    for (names, delivery) in [
        (&args.secret_env, SecretDelivery::Env),
        (&args.secret_file, SecretDelivery::File),
    ] {
        secrets.extend(names.iter().map(|name| UseSecret {
            name: name.clone(),
            delivery: Some(delivery.as_str().into()),
            hosts: Vec::new(),
            headers: Vec::new(),
        }));
    }
    let egress_templates = templates(client, &args).await?;
    let req = UpdateWorkspace {
        memory: args.memory,
        cpus: args.cpus,
        pids: args.pids,
        secrets: (!secrets.is_empty()).then_some(secrets),
        remove_secrets: (!args.remove_secret.is_empty()).then_some(args.remove_secret),
        egress_templates,
        approval: args.approval,
        mcp_servers: match &args.mcp_file {
            Some(path) => Some(super::mcp_file(path)?),
            None => None,
        },
    };
    let v = client.patch_value(&ws_path(&args.ws), &req).await?;
    if args.json {
        ctx.print_json(&v)?;
    } else {
        let u: WorkspaceUpdate = decode(v)?;
        ctx.print(&report(&u))?;
    }
    Ok(0)
}

/// The full template list after `--egress-template` and `--remove-egress-template` (the API
/// takes the whole list), or `None` when neither is given.
async fn templates(client: &Client, args: &WorkspaceUpdateArgs) -> Result<Option<Vec<String>>> {
    if args.egress_template.is_empty() && args.remove_egress_template.is_empty() {
        return Ok(None);
    }
    let path = format!("{}/egress/templates", ws_path(&args.ws));
    let attached: Vec<berth_api::EgressTemplate> = decode(client.get_value(&path).await?)?;
    let mut list: Vec<String> = attached.into_iter().map(|t| t.name).collect();
    for r in &args.remove_egress_template {
        if !list.contains(r) {
            return Err(CliError::other(format!(
                "--remove-egress-template {r}: the workspace does not attach it"
            )));
        }
    }
    list.retain(|t| !args.remove_egress_template.contains(t));
    for t in &args.egress_template {
        if !list.contains(t) {
            list.push(t.clone());
        }
    }
    Ok(Some(list))
}

/// What changed, what waits for the next start, and new placeholders.
pub(crate) fn report(u: &WorkspaceUpdate) -> String {
    let name = format!("{}/{}", u.workspace.tenant, u.workspace.name);
    if u.changed.is_empty() {
        return format!("{name}: nothing changed\n");
    }
    let mut s = format!("updated {name}: {}\n", u.changed.join(", "));
    let live: Vec<&str> = u
        .changed
        .iter()
        .filter(|c| !u.pending_restart.contains(c))
        .map(String::as_str)
        .collect();
    if !live.is_empty() {
        s.push_str(&format!("in effect now: {}\n", live.join(", ")));
    }
    if !u.pending_restart.is_empty() {
        s.push_str(&format!(
            "applies at the next start (berth workspace stop {name} && berth workspace start {name}): {}\n",
            u.pending_restart.join(", ")
        ));
    }
    if let Some(e) = &u.live_error {
        s.push_str(&format!(
            "(the engine could not change the limits live: {e})\n"
        ));
    }
    for (secret, placeholder) in &u.placeholders {
        s.push_str(&format!(
            "{secret}: placeholder {placeholder} (swapped from now on; in the environment from the next start)\n"
        ));
    }
    s
}
