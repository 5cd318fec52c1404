//! `berth workspace …`: create (limits, egress rules and templates, secrets, MCP servers), list, show,
//! update, start, stop and remove workspaces; backup and restore are in `backup.rs`, update in
//! `update.rs`.

use std::path::PathBuf;

use berth_api::{CreateWorkspace, McpServer, McpServerType, UseSecret, Workspace};
use berth_domain::SecretDelivery;
use clap::{Args, Subcommand};
use serde_json::Value;

use super::egress::rule_arg;
use crate::client::{decode, ws_path, CliError, Client, Result};
use crate::ctx::Ctx;
use crate::format::{bytes_human, cpus, key_values, memory_short, short_time, table};

mod backup;
mod update;

#[derive(Debug, Subcommand)]
// Parsed once per run; the size of the largest variant does not matter.
#[allow(clippy::large_enum_variant)]
pub enum WorkspaceCmd {
    /// Create and start a workspace
    Create(WorkspaceCreateArgs),
    /// Change a workspace's limits, secret bindings, egress templates, approval policy or MCP
    /// servers; prints what changed and what applies only at the next start
    Update(update::WorkspaceUpdateArgs),
    /// List workspaces
    #[command(visible_alias = "ls")]
    List {
        /// Only this tenant's workspaces
        #[arg(long)]
        tenant: Option<String>,
        /// Print the API's JSON
        #[arg(long)]
        json: bool,
    },
    /// Show a workspace: limits, live usage, daemon status, last failure
    Show {
        /// Workspace: TENANT/NAME, NAME or id
        ws: String,
        /// Print the API's JSON
        #[arg(long)]
        json: bool,
    },
    /// Start a stopped workspace
    Start {
        /// Workspace: TENANT/NAME, NAME or id
        ws: String,
        /// Print the API's JSON
        #[arg(long)]
        json: bool,
    },
    /// Stop a workspace (its home volume and sessions' state on disk stay)
    Stop {
        /// Workspace: TENANT/NAME, NAME or id
        ws: String,
        /// Print the API's JSON
        #[arg(long)]
        json: bool,
    },
    /// Remove a workspace
    #[command(visible_alias = "remove")]
    Rm {
        /// Workspace: TENANT/NAME, NAME or id
        ws: String,
        /// Also remove its home volume (/home/agent)
        #[arg(long)]
        volume: bool,
    },
    /// Write a workspace's home volume and spec to a compressed archive (.tar.zst)
    Backup {
        /// Workspace: TENANT/NAME, NAME or id
        ws: String,
        /// Archive file [default: TENANT-NAME-TIMESTAMP.tar.zst]
        #[arg(short = 'o', long = "output", value_name = "FILE")]
        output: Option<PathBuf>,
        /// Freeze a running workspace for the copy (one point in time); default: copy live
        #[arg(long)]
        pause: bool,
    },
    /// Show a workspace's provisioning from its template (steps, states, the failed step's
    /// log), or resume it (--retry) or move to the template's newest revision (--upgrade);
    /// both follow the progress
    Provision {
        /// Workspace: TENANT/NAME, NAME or id
        ws: String,
        /// Resume a failed provisioning at the failed step
        #[arg(long, conflicts_with = "upgrade")]
        retry: bool,
        /// Re-provision to the template's newest revision: the home volume stays, only steps
        /// whose inputs changed run again; a new image, environment or resources remake the
        /// container
        #[arg(long)]
        upgrade: bool,
        /// Print the API's JSON
        #[arg(long)]
        json: bool,
    },
    /// Create a workspace from an archive written by `berth workspace backup`
    Restore {
        /// Archive file
        file: PathBuf,
        /// Workspace name, or TENANT/NAME [default: the name in the archive]
        #[arg(long)]
        name: Option<String>,
        /// Tenant [default: the tenant in the archive]
        #[arg(long)]
        tenant: Option<String>,
        /// Print the API's JSON
        #[arg(long)]
        json: bool,
    },
}

#[derive(Debug, Args)]
pub struct WorkspaceCreateArgs {
    /// Workspace name, or TENANT/NAME
    pub name: String,
    /// Tenant (client) the workspace belongs to [default: default]
    #[arg(long)]
    pub tenant: Option<String>,
    /// Memory cap, e.g. 512m or 2g
    #[arg(long)]
    pub memory: Option<String>,
    /// CPU cap, e.g. 1 or 0.5
    #[arg(long)]
    pub cpus: Option<String>,
    /// Maximum number of processes
    #[arg(long)]
    pub pids: Option<i64>,
    /// Image to run [default: berth's base image]
    #[arg(long)]
    pub image: Option<String>,
    /// Network mode: none (default; only berth's egress proxy) or bridge
    #[arg(long, value_parser = ["none", "bridge"])]
    pub network: Option<String>,
    /// Allow egress, e.g. --allow registry.npmjs.org --allow '*.github.com:443' (repeatable;
    /// full rule syntax: --allow 'deny example.com POST /x')
    #[arg(long = "allow", value_name = "RULE")]
    pub allow: Vec<String>,
    /// Attach an egress template: one of the tenant's (`berth egress template list`) or a
    /// built-in (npm, pypi, crates, github, debian); repeatable, evaluated in this order
    /// after the workspace's own rules
    #[arg(long = "egress-template", value_name = "NAME")]
    pub egress_template: Vec<String>,
    /// Use a tenant secret through a placeholder swapped in by the egress proxy only for
    /// these hosts, inside TLS, in the Authorization header or the headers named after a
    /// second colon: --secret GITHUB_TOKEN:github.com,api.github.com,
    /// --secret API_KEY:api.example.com:x-api-key (repeatable)
    #[arg(long = "secret", value_name = "NAME:HOSTS[:HEADERS]")]
    pub secret: Vec<String>,
    /// The approval policy of the workspace's tasks unless a task asks for another
    /// [default: never]
    #[arg(long, value_parser = ["never", "on-request", "always"])]
    pub approval: Option<String>,
    /// Put a tenant secret's real value into the workspace environment (exposed)
    #[arg(long = "secret-env", value_name = "NAME")]
    pub secret_env: Vec<String>,
    /// Put a tenant secret's real value into /run/berth/secrets/NAME (exposed); the
    /// workspace gets NAME_FILE
    #[arg(long = "secret-file", value_name = "NAME")]
    pub secret_file: Vec<String>,
    /// MCP servers for every agent of the workspace: a JSON file holding an array of
    /// servers, each {"name", "type": "stdio", "command", "args", "env"} or {"name", "type":
    /// "http", "url", "headers"} (docs/mcp.md)
    #[arg(long = "mcp-file", value_name = "FILE")]
    pub mcp_file: Option<PathBuf>,
    /// Provision from a workspace template of the tenant (`berth template list`): its
    /// repositories are cloned and its setup steps run; progress is printed until done
    #[arg(long, value_name = "NAME")]
    pub template: Option<String>,
    /// A template parameter (repeatable): --param repo=https://git.example.com/app.git
    #[arg(long = "param", value_name = "NAME=VALUE", requires = "template")]
    pub param: Vec<String>,
    /// With --template: return once the workspace runs, without following the provisioning
    #[arg(long, requires = "template")]
    pub no_follow: bool,
    /// Print the API's JSON
    #[arg(long)]
    pub json: bool,
}

pub(crate) async fn run(cmd: WorkspaceCmd, client: &Client, ctx: &mut Ctx<'_>) -> Result<i32> {
    match cmd {
        WorkspaceCmd::Create(args) => create(args, client, ctx).await,
        WorkspaceCmd::Update(args) => update::update(args, client, ctx).await,
        WorkspaceCmd::List { tenant, json } => list(client, ctx, tenant.as_deref(), json).await,
        WorkspaceCmd::Show { ws, json } => {
            let v = client.get_value(&ws_path(&ws)).await?;
            if json {
                ctx.print_json(&v)?;
            } else {
                let w: Workspace = decode(v)?;
                ctx.print(&workspace_details(&w))?;
            }
            Ok(0)
        }
        WorkspaceCmd::Start { ws, json } => start_stop(client, ctx, &ws, "start", json).await,
        WorkspaceCmd::Stop { ws, json } => start_stop(client, ctx, &ws, "stop", json).await,
        WorkspaceCmd::Rm { ws, volume } => {
            client.delete(&ws_path(&ws), &[("volume", volume)]).await?;
            let extra = if volume { " and its volume" } else { "" };
            ctx.print(&format!("removed {ws}{extra}\n"))?;
            Ok(0)
        }
        WorkspaceCmd::Backup { ws, output, pause } => {
            backup::backup(client, ctx, &ws, output, pause).await
        }
        WorkspaceCmd::Provision {
            ws,
            retry,
            upgrade,
            json,
        } => {
            let path = format!("{}/provision", ws_path(&ws));
            if !retry && !upgrade {
                let v = client.get_value(&path).await?;
                if json {
                    ctx.print_json(&v)?;
                } else {
                    let s: berth_api::ProvisionStatus = decode(v)?;
                    ctx.print(&super::template::status_text(&s))?;
                }
                return Ok(0);
            }
            let body = berth_api::Reprovision { retry, upgrade };
            let v = client.post_value(&path, &body).await?;
            if json {
                ctx.print_json(&v)?;
                return Ok(0);
            }
            let kept: berth_api::ProvisionStatus = decode(v)?;
            super::template::follow(client, ctx, &ws, Some(&kept)).await
        }
        WorkspaceCmd::Restore {
            file,
            name,
            tenant,
            json,
        } => backup::restore(client, ctx, &file, name, tenant, json).await,
    }
}

/// Creates and starts a workspace; exit code 1 when it failed to start.
async fn create(args: WorkspaceCreateArgs, client: &Client, ctx: &mut Ctx<'_>) -> Result<i32> {
    let mut secrets = Vec::new();
    for s in &args.secret {
        secrets.push(secret_arg(s)?);
    }
    for (names, delivery) in [
        (&args.secret_env, SecretDelivery::Env),
        (&args.secret_file, SecretDelivery::File),
    ] {
        for name in names {
            secrets.push(UseSecret {
                name: name.clone(),
                delivery: Some(delivery.as_str().into()),
                hosts: Vec::new(),
                headers: Vec::new(),
            });
        }
    }
    let (tenant, name) = split_tenant(&args.name, args.tenant)?;
    let egress = args.allow.iter().map(|r| rule_arg(r)).collect::<Vec<_>>();
    let egress_template = args.egress_template;
    let mcp_servers = match &args.mcp_file {
        Some(path) => Some(mcp_file(path)?),
        None => None,
    };
    let req = CreateWorkspace {
        name,
        tenant,
        memory: args.memory,
        cpus: args.cpus,
        pids: args.pids,
        image: args.image,
        network: args.network,
        egress: (!egress.is_empty()).then_some(egress),
        egress_templates: (!egress_template.is_empty()).then_some(egress_template),
        secrets: (!secrets.is_empty()).then_some(secrets),
        approval: args.approval,
        mcp_servers,
        params: args
            .template
            .is_some()
            .then(|| super::template::param_args(&args.param))
            .transpose()?,
        template: args.template.clone(),
    };
    let v = client.post_value("/workspaces", &req).await?;
    let w: Workspace = decode(v.clone())?;
    if args.json {
        ctx.print_json(&v)?;
    } else {
        ctx.print(&format!("created {}\n", workspace_line(&w)))?;
    }
    if w.state == "failed" {
        return Ok(1);
    }
    if args.template.is_some() && !args.no_follow && !args.json {
        let ws = format!("{}/{}", w.tenant, w.name);
        return super::template::follow(client, ctx, &ws, None).await;
    }
    Ok(0)
}

async fn list(client: &Client, ctx: &mut Ctx<'_>, tenant: Option<&str>, json: bool) -> Result<i32> {
    let v = client.get_value("/workspaces").await?;
    let v = match (tenant, v) {
        (Some(t), Value::Array(items)) => Value::Array(
            items
                .into_iter()
                .filter(|i| i.get("tenant").and_then(|x| x.as_str()) == Some(t))
                .collect(),
        ),
        (_, v) => v,
    };
    if json {
        ctx.print_json(&v)?;
    } else {
        let list: Vec<Workspace> = decode(v)?;
        if list.is_empty() {
            ctx.print("no workspaces (create one: berth workspace create NAME)\n")?;
        } else {
            ctx.print(&workspace_table(&list))?;
        }
    }
    Ok(0)
}

async fn start_stop(
    client: &Client,
    ctx: &mut Ctx<'_>,
    ws: &str,
    verb: &str,
    json: bool,
) -> Result<i32> {
    let v = client
        .post_empty_value(&format!("{}/{verb}", ws_path(ws)))
        .await?;
    let w: Workspace = decode(v.clone())?;
    if json {
        ctx.print_json(&v)?;
    } else {
        ctx.print(&format!("{}\n", workspace_line(&w)))?;
    }
    Ok(if w.state == "failed" { 1 } else { 0 })
}

/// `acme/web` → (Some("acme"), "web"); a `--tenant` that disagrees is an error.
pub(crate) fn split_tenant(name: &str, tenant: Option<String>) -> Result<(Option<String>, String)> {
    match name.split_once('/') {
        Some((t, n)) => {
            if let Some(flag) = &tenant {
                if flag != t {
                    return Err(CliError::other(format!(
                        "{name:?} names tenant {t:?} but --tenant says {flag:?}"
                    )));
                }
            }
            Ok((Some(t.to_owned()), n.to_owned()))
        }
        None => Ok((tenant, name.to_owned())),
    }
}

/// Longest `--mcp-file` read (the server caps what it accepts anyway).
const MCP_FILE_MAX: u64 = 1024 * 1024;

/// `--mcp-file FILE`: a JSON array of MCP servers (checked by the server).
pub(super) fn mcp_file(path: &std::path::Path) -> Result<Vec<McpServer>> {
    use std::io::Read;
    let shown = path.display();
    let file = std::fs::File::open(path)
        .map_err(|e| CliError::other(format!("--mcp-file {shown}: {e}")))?;
    let mut text = String::new();
    file.take(MCP_FILE_MAX + 1)
        .read_to_string(&mut text)
        .map_err(|e| CliError::other(format!("--mcp-file {shown}: {e}")))?;
    if text.len() as u64 > MCP_FILE_MAX {
        return Err(CliError::other(format!(
            "--mcp-file {shown}: larger than {MCP_FILE_MAX} bytes"
        )));
    }
    serde_json::from_str(&text).map_err(|e| {
        CliError::other(format!(
            "--mcp-file {shown}: not a JSON array of MCP servers: {e}"
        ))
    })
}

/// One line per MCP server for `workspace show`.
fn mcp_line(s: &McpServer) -> String {
    match s.kind {
        McpServerType::Stdio => {
            let mut cmd = vec![s.command.clone().unwrap_or_default()];
            cmd.extend(s.args.iter().cloned());
            let env: Vec<&str> = s.env.keys().map(String::as_str).collect();
            let env = if env.is_empty() {
                String::new()
            } else {
                format!(" (env {})", env.join(", "))
            };
            format!("{}: stdio {}{env}", s.name, cmd.join(" "))
        }
        McpServerType::Http => format!("{}: http {}", s.name, s.url.as_deref().unwrap_or_default()),
    }
}

/// `--secret NAME:HOSTS[:HEADERS]`: hosts and headers comma-separated; a colon inside
/// brackets (an IPv6 host) does not separate.
pub(super) fn secret_arg(s: &str) -> Result<UseSecret> {
    let (name, rest) = s.split_once(':').ok_or_else(|| {
        CliError::other(format!(
            "--secret {s}: give the hosts its value may go to, e.g. {s}:github.com"
        ))
    })?;
    let mut depth = 0i32;
    let mut split = None;
    for (i, c) in rest.char_indices() {
        match c {
            '[' => depth += 1,
            ']' => depth -= 1,
            ':' if depth == 0 => split = Some(i),
            _ => {}
        }
    }
    let (hosts, headers) = match split {
        Some(i) => (&rest[..i], &rest[i + 1..]),
        None => (rest, ""),
    };
    let list = |s: &str| -> Vec<String> {
        s.split(',')
            .map(str::trim)
            .filter(|x| !x.is_empty())
            .map(str::to_owned)
            .collect()
    };
    Ok(UseSecret {
        name: name.to_owned(),
        delivery: Some(SecretDelivery::Placeholder.as_str().into()),
        hosts: list(hosts),
        headers: list(headers),
    })
}

fn qualified(w: &Workspace) -> String {
    format!("{}/{}", w.tenant, w.name)
}

fn workspace_line(w: &Workspace) -> String {
    let mut s = format!("{} ({}) {}", qualified(w), w.id, w.state);
    if let Some(f) = &w.last_failure {
        if w.state == "failed" {
            s.push_str(&format!(": {}: {}", f.reason, f.message));
        }
    }
    s
}

/// `localhost/berth-workspace:3f2a…(64 hex)` → `localhost/berth-workspace:3f2a9c1b0d4e`.
fn short_image(image: &str) -> String {
    match image.rsplit_once(':') {
        Some((repo, tag))
            if tag.len() > 12 && tag.chars().all(|c| c.is_ascii_hexdigit()) && !repo.is_empty() =>
        {
            format!("{repo}:{}", &tag[..12])
        }
        _ => image.to_owned(),
    }
}

pub(crate) fn workspace_table(list: &[Workspace]) -> String {
    let rows: Vec<Vec<String>> = list
        .iter()
        .map(|w| {
            vec![
                qualified(w),
                w.state.clone(),
                short_image(&w.image),
                memory_short(w.limits.memory_bytes),
                cpus(w.limits.cpus),
                w.limits.pids.to_string(),
                short_time(&w.created_at),
            ]
        })
        .collect();
    table(
        &[
            "NAME", "STATE", "IMAGE", "MEMORY", "CPUS", "PIDS", "CREATED",
        ],
        &rows,
    )
}

pub(crate) fn workspace_details(w: &Workspace) -> String {
    let mut kv: Vec<(&str, String)> = vec![
        ("name", qualified(w)),
        ("id", w.id.clone()),
        ("state", w.state.clone()),
        ("image", w.image.clone()),
        ("memory", memory_short(w.limits.memory_bytes)),
        ("cpus", cpus(w.limits.cpus)),
        ("pids", w.limits.pids.to_string()),
        ("network", w.network.clone()),
        ("volume", w.volume.clone()),
    ];
    if let Some(c) = &w.container_id {
        kv.push(("container", c.chars().take(12).collect()));
    }
    kv.push(("created", short_time(&w.created_at)));
    kv.push(("updated", short_time(&w.updated_at)));
    if let Some(u) = &w.usage {
        kv.push((
            "memory used",
            format!(
                "{} / {}",
                bytes_human(u.memory_bytes),
                bytes_human(u.memory_limit_bytes)
            ),
        ));
        kv.push(("cpu", format!("{:.1}%", u.cpu_percent)));
        kv.push(("processes", u.pids.to_string()));
    }
    if let Some(d) = &w.daemon {
        let mut s = if d.reachable {
            "reachable".to_owned()
        } else {
            "unreachable".to_owned()
        };
        let mut extra = Vec::new();
        if let Some(v) = &d.version {
            extra.push(format!("version {v}"));
        }
        if let Some(p) = d.protocol {
            extra.push(format!("protocol {p}"));
        }
        if !extra.is_empty() {
            s.push_str(&format!(" ({})", extra.join(", ")));
        }
        if d.outdated {
            s.push_str("; outdated: restart the workspace to upgrade it");
        }
        if let Some(m) = &d.message {
            s.push_str(&format!("; {m}"));
        }
        kv.push(("daemon", s));
    }
    match &w.last_failure {
        Some(f) => kv.push((
            "last failure",
            format!("{}: {} (at {})", f.reason, f.message, short_time(&f.at)),
        )),
        None => kv.push(("last failure", "none".into())),
    }
    kv.push(("oom kills", w.oom_kills.to_string()));
    if !w.mcp_servers.is_empty() {
        let lines: Vec<String> = w.mcp_servers.iter().map(mcp_line).collect();
        kv.push(("mcp servers", lines.join("; ")));
    }
    key_values(&kv)
}

#[cfg(test)]
mod secret_arg_tests {
    use super::secret_arg;

    #[test]
    fn hosts_and_optional_headers() {
        let u = secret_arg("GITHUB_TOKEN:github.com,api.github.com").unwrap();
        assert_eq!(u.name, "GITHUB_TOKEN");
        assert_eq!(u.hosts, ["github.com", "api.github.com"]);
        assert!(u.headers.is_empty());
        let u = secret_arg("KEY:api.example.com:x-api-key,Authorization").unwrap();
        assert_eq!(u.hosts, ["api.example.com"]);
        assert_eq!(u.headers, ["x-api-key", "Authorization"]);
        let u = secret_arg("KEY:[::1],[fd00::2]:x-k").unwrap();
        assert_eq!(u.hosts, ["[::1]", "[fd00::2]"]);
        assert_eq!(u.headers, ["x-k"]);
        let u = secret_arg("KEY:[::1]").unwrap();
        assert_eq!(u.hosts, ["[::1]"]);
        assert!(u.headers.is_empty());
        assert!(secret_arg("KEY").is_err());
    }
}
