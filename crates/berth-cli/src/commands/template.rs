//! `berth template …`: a tenant's workspace templates (every `set` stores a new revision), and
//! the provisioning progress that `berth workspace create --template` and `berth workspace
//! provision` print while a workspace is set up from one.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::time::Duration;

use berth_api::{ProvisionStatus, SetTemplate, TemplateQuery, WorkspaceTemplate};
use clap::Subcommand;

use crate::client::{decode, encode_segment, ws_path, CliError, Client, Result};
use crate::ctx::Ctx;
use crate::format::{key_values, short_time, table};
use crate::stream::SseParser;

#[derive(Debug, Subcommand)]
pub enum TemplateCmd {
    /// Store a template file (TOML; see docs/templates.md) as the next revision of a
    /// tenant's template; the file is checked first (the error names the key, e.g.
    /// `setup[2].timeout`)
    Set {
        #[arg(long)]
        tenant: String,
        name: String,
        /// The template file [default: stdin; `-` is stdin too]
        file: Option<PathBuf>,
        #[arg(long)]
        json: bool,
    },
    /// Make a template from a repository's `.devcontainer/devcontainer.json` and store it as the
    /// next revision: its create commands become setup steps, containerEnv/remoteEnv the
    /// environment; every key not honoured is printed as a warning (see docs/templates.md)
    Import {
        #[arg(long)]
        tenant: String,
        name: String,
        /// The devcontainer.json (comments and trailing commas allowed)
        #[arg(long, value_name = "PATH")]
        devcontainer: PathBuf,
        /// Print the template instead of storing it
        #[arg(long)]
        dry_run: bool,
        #[arg(long)]
        json: bool,
    },
    /// Show a template: parameters, revision, users, and its file
    Show {
        #[arg(long)]
        tenant: String,
        name: String,
        /// This revision [default: the newest]
        #[arg(long)]
        revision: Option<i64>,
        #[arg(long)]
        json: bool,
    },
    /// List templates (newest revision of each)
    #[command(visible_alias = "ls")]
    List {
        #[arg(long)]
        tenant: Option<String>,
        #[arg(long)]
        json: bool,
    },
    /// Remove a template with all its revisions (workspaces made from it keep their copy)
    #[command(visible_alias = "remove")]
    Rm {
        #[arg(long)]
        tenant: String,
        name: String,
    },
}

fn template_path(tenant: &str, name: &str) -> String {
    format!(
        "/templates/{}/{}",
        encode_segment(tenant),
        encode_segment(name)
    )
}

/// Reads a template file (or stdin) and checks it here first, so a mistake names the file.
fn read_source(file: Option<&PathBuf>) -> Result<(String, String)> {
    let (label, text) = match file {
        Some(p) if p.as_os_str() != "-" => {
            let text = std::fs::read_to_string(p)
                .map_err(|e| CliError::other(format!("cannot read {}: {e}", p.display())))?;
            (p.display().to_string(), text)
        }
        _ => {
            let mut text = String::new();
            std::io::Read::read_to_string(&mut std::io::stdin(), &mut text).map_err(|e| {
                CliError::other(format!("cannot read the template from stdin: {e}"))
            })?;
            ("(stdin)".to_owned(), text)
        }
    };
    berth_domain::template::parse(&text).map_err(|e| CliError::other(format!("{label}: {e}")))?;
    Ok((label, text))
}

/// Converts a devcontainer.json, printing each warning on stderr; the TOML text.
fn import_source(path: &std::path::Path, ctx: &mut Ctx<'_>) -> Result<String> {
    let label = path.display();
    let meta = std::fs::metadata(path)
        .map_err(|e| CliError::other(format!("cannot read {label}: {e}")))?;
    if meta.len() > berth_domain::devcontainer::MAX_SOURCE as u64 {
        return Err(CliError::other(format!(
            "{label}: larger than {} bytes: not a devcontainer.json",
            berth_domain::devcontainer::MAX_SOURCE
        )));
    }
    let text = std::fs::read_to_string(path)
        .map_err(|e| CliError::other(format!("cannot read {label}: {e}")))?;
    let imp = berth_domain::devcontainer::convert(&text)
        .map_err(|e| CliError::other(format!("{label}: {e}")))?;
    for w in &imp.warnings {
        ctx.note(&format!("warning: {w}"));
    }
    Ok(imp.toml)
}

/// Stores `source` as the next revision; a `template_invalid` answer names `label`.
async fn store(
    client: &Client,
    ctx: &mut Ctx<'_>,
    (tenant, name): (&str, &str),
    (label, source): (&str, String),
    json: bool,
) -> Result<()> {
    let v = client
        .put_value(&template_path(tenant, name), &SetTemplate { source })
        .await
        .map_err(|e| match e {
            CliError::Api {
                status,
                code,
                message,
            } if code == "template_invalid" => CliError::Api {
                status,
                code,
                message: format!("{label}: {message}"),
            },
            other => other,
        })?;
    if json {
        ctx.print_json(&v)?;
    } else {
        let t: WorkspaceTemplate = decode(v)?;
        ctx.print(&format!(
            "template {}/{} revision {} stored\n",
            t.tenant, t.name, t.revision
        ))?;
    }
    Ok(())
}

pub(crate) async fn run(cmd: TemplateCmd, client: &Client, ctx: &mut Ctx<'_>) -> Result<i32> {
    match cmd {
        TemplateCmd::Set {
            tenant,
            name,
            file,
            json,
        } => {
            let (label, source) = read_source(file.as_ref())?;
            store(client, ctx, (&tenant, &name), (&label, source), json).await?;
        }
        TemplateCmd::Import {
            tenant,
            name,
            devcontainer,
            dry_run,
            json,
        } => {
            let source = import_source(&devcontainer, ctx)?;
            if dry_run {
                ctx.print(&source)?;
            } else {
                let label = devcontainer.display().to_string();
                store(client, ctx, (&tenant, &name), (&label, source), json).await?;
            }
        }
        TemplateCmd::Show {
            tenant,
            name,
            revision,
            json,
        } => show(client, ctx, &tenant, &name, revision, json).await?,
        TemplateCmd::List { tenant, json } => list(client, ctx, tenant, json).await?,
        TemplateCmd::Rm { tenant, name } => {
            client
                .delete(&template_path(&tenant, &name), &[("force", false)])
                .await?;
            ctx.print(&format!("template {tenant}/{name} removed\n"))?;
        }
    }
    Ok(0)
}

/// Prints a template (a revision of it, when given): its details, or the server's JSON.
async fn show(
    client: &Client,
    ctx: &mut Ctx<'_>,
    tenant: &str,
    name: &str,
    revision: Option<i64>,
    json: bool,
) -> Result<()> {
    let mut path = template_path(tenant, name);
    if let Some(r) = revision {
        path.push_str(&format!("?revision={r}"));
    }
    let v = client.get_value(&path).await?;
    if json {
        ctx.print_json(&v)?;
    } else {
        let t: WorkspaceTemplate = decode(v)?;
        ctx.print(&details(&t))?;
    }
    Ok(())
}

/// Prints the templates (of a tenant) as a table, or the server's JSON.
async fn list(
    client: &Client,
    ctx: &mut Ctx<'_>,
    tenant: Option<String>,
    json: bool,
) -> Result<()> {
    let v = client
        .get_query_value("/templates", &TemplateQuery { tenant })
        .await?;
    if json {
        ctx.print_json(&v)?;
        return Ok(());
    }
    let list: Vec<WorkspaceTemplate> = decode(v)?;
    if list.is_empty() {
        ctx.print("no templates (store one: berth template set --tenant T NAME FILE)\n")?;
    } else {
        ctx.print(&template_table(&list))?;
    }
    Ok(())
}

/// The templates as a table: name, revision, parameters and description.
fn template_table(list: &[WorkspaceTemplate]) -> String {
    let rows: Vec<Vec<String>> = list
        .iter()
        .map(|t| {
            vec![
                format!("{}/{}", t.tenant, t.name),
                t.revision.to_string(),
                params_line(&t.params),
                t.description.clone().unwrap_or_default(),
            ]
        })
        .collect();
    table(&["TEMPLATE", "REV", "PARAMS", "DESCRIPTION"], &rows)
}

fn params_line(params: &[berth_api::TemplateParam]) -> String {
    params
        .iter()
        .map(|p| {
            if p.required {
                p.name.clone()
            } else {
                format!("[{}]", p.name)
            }
        })
        .collect::<Vec<_>>()
        .join(" ")
}

fn details(t: &WorkspaceTemplate) -> String {
    let mut pairs = vec![
        ("template", format!("{}/{}", t.tenant, t.name)),
        (
            "revision",
            format!("{} of {}", t.revision, t.latest_revision),
        ),
        ("created", short_time(&t.created_at)),
    ];
    if let Some(d) = &t.description {
        pairs.push(("description", d.clone()));
    }
    for p in &t.params {
        let mut s = if p.required {
            "required".to_owned()
        } else {
            match &p.default {
                Some(d) => format!("default {d:?}"),
                None => "optional".to_owned(),
            }
        };
        if let Some(d) = &p.description {
            s.push_str(&format!(" — {d}"));
        }
        pairs.push(("param", format!("{}: {s}", p.name)));
    }
    if let Some(a) = &t.agent {
        let auto = if t.auto_session {
            " (auto-started)"
        } else {
            ""
        };
        pairs.push(("agent", format!("{a}{auto}")));
    }
    pairs.push((
        "used by",
        if t.used_by.is_empty() {
            "-".into()
        } else {
            t.used_by.join(", ")
        },
    ));
    let mut out = key_values(&pairs);
    out.push('\n');
    out.push_str(&t.source);
    if !t.source.ends_with('\n') {
        out.push('\n');
    }
    out
}

/// `k=v` of `--param`.
pub(crate) fn param_args(args: &[String]) -> Result<BTreeMap<String, String>> {
    let mut out = BTreeMap::new();
    for a in args {
        let (k, v) = a
            .split_once('=')
            .ok_or_else(|| CliError::other(format!("--param {a:?}: use NAME=VALUE")))?;
        if out.insert(k.to_owned(), v.to_owned()).is_some() {
            return Err(CliError::other(format!("--param {k} is given twice")));
        }
    }
    Ok(out)
}

/// What has been printed of each step, so only news are printed.
#[derive(Default)]
struct Printed {
    state: BTreeMap<i64, String>,
    log: BTreeMap<i64, String>,
}

/// The server sends a keepalive every ~15 s; silence this long means the connection is dead.
const IDLE_TIMEOUT: Duration = Duration::from_secs(60);
/// Waits before the reconnects after a dropped stream; then it is an error.
const BACKOFF_MS: [u64; 5] = [250, 500, 1000, 2000, 4000];

/// Prints a provisioning's progress until it is done or failed: each step as it starts and
/// ends, and its output as it comes, from the server's event stream
/// (`…/provision/stream`; a dropped connection resumes after the last status shown).
/// Exit code 0 when done, 1 when failed.
/// `kept`: the status a retry or upgrade answered with; its finished steps are not run again
/// and are not printed.
pub(crate) async fn follow(
    client: &Client,
    ctx: &mut Ctx<'_>,
    ws: &str,
    kept: Option<&ProvisionStatus>,
) -> Result<i32> {
    let mut printed = Printed::default();
    for st in kept.map(|k| k.steps.as_slice()).unwrap_or_default() {
        // Done: kept. Failed: shown again only once it runs again.
        if matches!(st.state.as_str(), "done" | "failed") {
            printed.state.insert(st.index, st.state.clone());
            printed.log.insert(st.index, st.log.clone());
        }
    }
    let mut last = 0u64;
    let mut failures = 0usize;
    loop {
        let path = format!("{}/provision/stream?after={last}", ws_path(ws));
        let cause = match client.get_event_stream(&path).await {
            Err(e @ CliError::Api { status, .. }) if status != 0 && status < 500 => return Err(e),
            Err(e) => e.to_string(),
            Ok(mut resp) => {
                let mut sse = SseParser::default();
                loop {
                    match tokio::time::timeout(IDLE_TIMEOUT, resp.chunk()).await {
                        Ok(Ok(Some(bytes))) => {
                            failures = 0;
                            for ev in sse.push(&bytes) {
                                if ev.event.as_deref() != Some("status") {
                                    continue;
                                }
                                let Ok(s) = serde_json::from_str::<ProvisionStatus>(&ev.data)
                                else {
                                    continue;
                                };
                                if let Some(id) =
                                    ev.id.as_deref().and_then(|i| i.trim().parse().ok())
                                {
                                    last = id;
                                }
                                print_news(ctx, &s, &mut printed)?;
                                if let Some(code) = finished(ctx, ws, s)? {
                                    return Ok(code);
                                }
                            }
                        }
                        Ok(Ok(None)) => break "the server closed the stream".to_owned(),
                        Ok(Err(e)) => break client.stream_error(&e).to_string(),
                        Err(_) => break format!("no data for {}s", IDLE_TIMEOUT.as_secs()),
                    }
                }
            }
        };
        let Some(ms) = BACKOFF_MS.get(failures) else {
            return Err(CliError::other(format!(
                "lost the provisioning progress of {ws}: {cause} (it goes on; see `berth workspace provision {ws}`)"
            )));
        };
        failures += 1;
        tokio::time::sleep(Duration::from_millis(*ms)).await;
    }
}

/// `Some(exit code)` once the provisioning is over (done: a line saying so; failed: the error).
fn finished(ctx: &mut Ctx<'_>, ws: &str, s: ProvisionStatus) -> Result<Option<i32>> {
    match s.state.as_str() {
        "done" => {
            let session = s
                .session
                .map(|n| format!("; agent session {n} is running (berth attach {ws} {n})"))
                .unwrap_or_default();
            ctx.print(&format!(
                "provisioned {} from template {} revision {}{session}\n",
                s.workspace, s.template, s.revision
            ))?;
            Ok(Some(0))
        }
        "failed" => Err(CliError::other(
            s.message
                .unwrap_or_else(|| format!("provisioning of {ws} failed")),
        )),
        _ => Ok(None),
    }
}

fn print_news(ctx: &mut Ctx<'_>, s: &ProvisionStatus, p: &mut Printed) -> Result<()> {
    let n = s.steps.len();
    for step in &s.steps {
        let i = step.index;
        let tag = format!("[{}/{n}] {}", i + 1, step.name);
        // A failed step being retried starts over.
        if step.state == "running" && p.state.get(&i).is_some_and(|s| s == "failed") {
            p.state.remove(&i);
            p.log.remove(&i);
        }
        if step.state != "pending" && !p.state.contains_key(&i) {
            ctx.print(&format!("{tag}: running\n"))?;
            p.state.insert(i, "running".into());
        }
        // Output since last time (the log is a tail: when it moved on, print what is new).
        let before = p.log.get(&i).cloned().unwrap_or_default();
        if step.log.len() > before.len() && step.log.starts_with(&before) {
            ctx.print(&indent(&step.log[before.len()..]))?;
        } else if step.log != before && !step.log.is_empty() {
            ctx.print(&indent(&step.log))?;
        }
        p.log.insert(i, step.log.clone());
        if matches!(step.state.as_str(), "done" | "failed" | "skipped")
            && p.state.get(&i) != Some(&step.state)
        {
            let why = step
                .message
                .as_ref()
                .map(|m| format!(" ({m})"))
                .unwrap_or_default();
            ctx.print(&format!("{tag}: {}{why}\n", step.state))?;
            p.state.insert(i, step.state.clone());
        }
    }
    Ok(())
}

fn indent(text: &str) -> String {
    let mut out = String::new();
    // Carriage returns (git's progress) become line breaks.
    for line in text.split(['\n', '\r']).filter(|l| !l.trim().is_empty()) {
        out.push_str("    ");
        out.push_str(line);
        out.push('\n');
    }
    out
}

/// `berth workspace provision W`: shows the step list (and the failed step's log).
pub(crate) fn status_text(s: &ProvisionStatus) -> String {
    let mut out = key_values(&[
        ("workspace", s.workspace.clone()),
        (
            "template",
            format!(
                "{} revision {}{}",
                s.template,
                s.revision,
                match s.latest_revision {
                    Some(l) if l > s.revision => format!(" (newest: {l}; --upgrade moves to it)"),
                    _ => String::new(),
                }
            ),
        ),
        ("state", s.state.clone()),
    ]);
    if let Some(m) = &s.message {
        out.push_str(&format!("{m}\n"));
    }
    let rows: Vec<Vec<String>> = s
        .steps
        .iter()
        .map(|st| {
            vec![
                (st.index + 1).to_string(),
                st.kind.clone(),
                st.name.clone(),
                st.state.clone(),
                st.message.clone().unwrap_or_default(),
            ]
        })
        .collect();
    out.push('\n');
    out.push_str(&table(&["#", "KIND", "STEP", "STATE", "NOTE"], &rows));
    for st in s.steps.iter().filter(|st| st.state == "failed") {
        out.push_str(&format!("\nlog of step {} ({}):\n", st.index + 1, st.name));
        out.push_str(&indent(&st.log));
    }
    out
}
