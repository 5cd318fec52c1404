//! The request/response commands: login, workspace, session, audit, image, version, whoami
//! (`task` is in `task.rs`).

use berth_api::{
    AuditEntry, AuditQuery, BuildEvent, BuildImage, CreateSession, CreateWorkspace, ImageStatus,
    ServerInfo, Session, WhoAmI, Workspace,
};

use crate::client::{decode, session_path, ws_path, CliError, Client, LoginConfig, Result};
use crate::format::{bytes_human, cpus, key_values, memory_short, short_time, table};
use crate::{
    doctor, stream, Command, ConnArgs, Ctx, ImageCmd, LoginArgs, SessionCmd, WorkspaceCmd,
};

pub(crate) async fn execute(cmd: Command, ctx: &mut Ctx<'_>) -> Result<i32> {
    match cmd {
        Command::Login(args) => login(args, ctx).await,
        Command::Doctor(args) => doctor::doctor(args, ctx).await,
        Command::Workspace { cmd, conn } => {
            let client = client(&conn, ctx)?;
            workspace(*cmd, &client, ctx).await
        }
        Command::Exec(args) => {
            let client = client(&args.conn, ctx)?;
            stream::exec(args, &client, ctx).await
        }
        Command::Session { cmd, conn } => {
            let client = client(&conn, ctx)?;
            session(cmd, &client, ctx).await
        }
        Command::Attach(args) => {
            let client = client(&args.conn, ctx)?;
            stream::attach(args, &client, ctx).await
        }
        Command::Task { cmd, conn } => {
            let client = client(&conn, ctx)?;
            crate::task::task(cmd, &client, ctx).await
        }
        Command::Usage(args) => {
            let client = client(&args.conn, ctx)?;
            usage(args, &client, ctx).await
        }
        Command::Egress { cmd, conn } => {
            let client = client(&conn, ctx)?;
            egress(cmd, &client, ctx).await
        }
        Command::Secret { cmd, conn } => {
            let client = client(&conn, ctx)?;
            secret(cmd, &client, ctx).await
        }
        Command::Budget { cmd, conn } => {
            let client = client(&conn, ctx)?;
            budget(cmd, &client, ctx).await
        }
        Command::Audit(args) => {
            let client = client(&args.conn, ctx)?;
            let q = AuditQuery {
                limit: args.limit,
                target: args.target,
            };
            let v = client.get_query_value("/audit", &q).await?;
            if args.json {
                ctx.print_json(&v)?;
            } else {
                let entries: Vec<AuditEntry> = decode(v)?;
                ctx.print(&audit_table(&entries))?;
            }
            Ok(0)
        }
        Command::Image { cmd, conn } => {
            let client = client(&conn, ctx)?;
            image(cmd, &client, ctx).await
        }
        Command::Version { conn } => {
            ctx.print(&format!("client: berth {}\n", env!("CARGO_PKG_VERSION")))?;
            let client = client(&conn, ctx)?;
            let info: ServerInfo = client.get("/version").await?;
            ctx.print(&format!(
                "server: berth {} at {} (daemon protocol {}, engine {}, image {})\n",
                info.version,
                client.base(),
                info.daemon_protocol,
                info.engine_endpoint,
                info.image
            ))?;
            Ok(0)
        }
        Command::Whoami { conn } => {
            let client = client(&conn, ctx)?;
            let me: WhoAmI = client.get("/whoami").await?;
            ctx.print(&format!(
                "{} ({}), role {}, at {} (berth {})\n",
                me.token_name,
                me.token_id,
                me.role,
                client.base(),
                me.server_version
            ))?;
            Ok(0)
        }
    }
}

fn client(conn: &ConnArgs, ctx: &Ctx<'_>) -> Result<Client> {
    Client::new(&ctx.conn(conn)?)
}

async fn login(args: LoginArgs, ctx: &mut Ctx<'_>) -> Result<i32> {
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
    crate::client::save_config(
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

fn qualified(w: &Workspace) -> String {
    format!("{}/{}", w.tenant, w.name)
}

/// `localhost/berth-workspace:3f2a…(64 hex)` → `localhost/berth-workspace:3f2a9c1b0d4e`.
pub(crate) fn short_image(image: &str) -> String {
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
    key_values(&kv)
}

/// `--secret NAME:HOSTS[:HEADERS]`: hosts and headers comma-separated; a colon inside
/// brackets (an IPv6 host) does not separate.
fn secret_arg(s: &str) -> Result<berth_api::UseSecret> {
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
    Ok(berth_api::UseSecret {
        name: name.to_owned(),
        delivery: Some("placeholder".into()),
        hosts: list(hosts),
        headers: list(headers),
    })
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

async fn workspace(cmd: WorkspaceCmd, client: &Client, ctx: &mut Ctx<'_>) -> Result<i32> {
    match cmd {
        WorkspaceCmd::Create {
            name,
            tenant,
            memory,
            cpus,
            pids,
            image,
            network,
            allow,
            egress_template,
            secret,
            secret_env,
            secret_file,
            json,
        } => {
            let mut secrets = Vec::new();
            for s in &secret {
                secrets.push(secret_arg(s)?);
            }
            for (names, delivery) in [(&secret_env, "env"), (&secret_file, "file")] {
                for name in names {
                    secrets.push(berth_api::UseSecret {
                        name: name.clone(),
                        delivery: Some(delivery.into()),
                        hosts: Vec::new(),
                        headers: Vec::new(),
                    });
                }
            }
            let (tenant, name) = split_tenant(&name, tenant)?;
            let egress = allow.iter().map(|r| rule_arg(r)).collect::<Vec<_>>();
            let req = CreateWorkspace {
                name,
                tenant,
                memory,
                cpus,
                pids,
                image,
                network,
                egress: (!egress.is_empty()).then_some(egress),
                egress_templates: (!egress_template.is_empty()).then_some(egress_template),
                secrets: (!secrets.is_empty()).then_some(secrets),
            };
            let v = client.post_value("/workspaces", &req).await?;
            let w: Workspace = decode(v.clone())?;
            if json {
                ctx.print_json(&v)?;
            } else {
                ctx.print(&format!("created {}\n", workspace_line(&w)))?;
            }
            Ok(if w.state == "failed" { 1 } else { 0 })
        }
        WorkspaceCmd::List { tenant, json } => {
            let v = client.get_value("/workspaces").await?;
            let v = match (tenant.as_deref(), v) {
                (Some(t), serde_json::Value::Array(items)) => serde_json::Value::Array(
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
            crate::backup::backup(client, ctx, &ws, output, pause).await
        }
        WorkspaceCmd::Restore {
            file,
            name,
            tenant,
            json,
        } => crate::backup::restore(client, ctx, &file, name, tenant, json).await,
    }
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

/// Size of the local terminal, else 80x24.
pub(crate) fn terminal_size() -> (u16, u16) {
    use std::io::IsTerminal;
    if std::io::stdout().is_terminal() || std::io::stdin().is_terminal() {
        if let Ok((c, r)) = crossterm::terminal::size() {
            if c > 0 && r > 0 {
                return (c, r);
            }
        }
    }
    (80, 24)
}

fn session_state(s: &Session) -> String {
    match s.exit_code {
        Some(code) if s.state != "running" => format!("{} ({code})", s.state),
        _ => s.state.clone(),
    }
}

pub(crate) fn session_table(list: &[Session]) -> String {
    let rows: Vec<Vec<String>> = list
        .iter()
        .map(|s| {
            vec![
                s.name.clone(),
                s.id.clone(),
                session_state(s),
                s.attached.to_string(),
                s.command.join(" "),
                short_time(&s.created_at),
            ]
        })
        .collect();
    table(
        &["NAME", "ID", "STATE", "ATTACHED", "COMMAND", "CREATED"],
        &rows,
    )
}

async fn session(cmd: SessionCmd, client: &Client, ctx: &mut Ctx<'_>) -> Result<i32> {
    match cmd {
        SessionCmd::New {
            ws,
            name,
            json,
            cmd,
        } => {
            let (cols, rows) = terminal_size();
            let req = CreateSession {
                name,
                cmd: if cmd.is_empty() { None } else { Some(cmd) },
                cols: Some(cols),
                rows: Some(rows),
                ..CreateSession::default()
            };
            let v = client
                .post_value(&format!("{}/sessions", ws_path(&ws)), &req)
                .await?;
            if json {
                ctx.print_json(&v)?;
            } else {
                let s: Session = decode(v)?;
                ctx.print(&format!(
                    "created session {} ({}) in {ws}; attach: berth attach {ws} {}\n",
                    s.name, s.id, s.name
                ))?;
            }
            Ok(0)
        }
        SessionCmd::List { ws, json } => {
            let v = client
                .get_value(&format!("{}/sessions", ws_path(&ws)))
                .await?;
            if json {
                ctx.print_json(&v)?;
            } else {
                let list: Vec<Session> = decode(v)?;
                if list.is_empty() {
                    ctx.print(&format!(
                        "no sessions in {ws} (start one: berth session new {ws})\n"
                    ))?;
                } else {
                    ctx.print(&session_table(&list))?;
                }
            }
            Ok(0)
        }
        SessionCmd::Show { ws, session, json } => {
            let v = client.get_value(&session_path(&ws, &session)).await?;
            if json {
                ctx.print_json(&v)?;
            } else {
                let s: Session = decode(v)?;
                ctx.print(&key_values(&[
                    ("name", s.name.clone()),
                    ("id", s.id.clone()),
                    ("state", session_state(&s)),
                    ("command", s.command.join(" ")),
                    ("attached", s.attached.to_string()),
                    ("size", format!("{}x{}", s.cols, s.rows)),
                    ("scrollback", bytes_human(s.scrollback_bytes)),
                    ("created", short_time(&s.created_at)),
                ]))?;
            }
            Ok(0)
        }
        SessionCmd::Capture { ws, session } => {
            let bytes = client
                .get_bytes(&format!("{}/scrollback", session_path(&ws, &session)))
                .await?;
            crate::write_all(ctx.out, &bytes)?;
            Ok(0)
        }
        SessionCmd::Rm { ws, session } => {
            client
                .delete(&session_path(&ws, &session), &[] as &[(&str, &str)])
                .await?;
            ctx.print(&format!("removed session {session} from {ws}\n"))?;
            Ok(0)
        }
    }
}

async fn usage(args: crate::UsageArgs, client: &Client, ctx: &mut Ctx<'_>) -> Result<i32> {
    let q = berth_api::UsageQuery {
        tenant: args.tenant,
        workspace: args.workspace,
        since: args.since,
    };
    let v = client.get_query_value("/usage", &q).await?;
    if args.json {
        ctx.print_json(&v)?;
        return Ok(0);
    }
    let report: berth_api::UsageReport = decode(v)?;
    ctx.print(&usage_table(&report))?;
    Ok(0)
}

fn cost(c: Option<f64>) -> String {
    c.map(|c| format!("${c:.4}")).unwrap_or_else(|| "-".into())
}

pub(crate) fn usage_table(r: &berth_api::UsageReport) -> String {
    if r.rows.is_empty() {
        return "no LLM calls recorded\n".into();
    }
    let row = |u: &berth_api::UsageRow, ws: &str, p: &str, m: &str| {
        vec![
            ws.to_owned(),
            p.to_owned(),
            m.to_owned(),
            u.calls.to_string(),
            u.errors.to_string(),
            u.input_tokens.to_string(),
            u.output_tokens.to_string(),
            u.cache_read_tokens.to_string(),
            cost(u.cost_usd),
        ]
    };
    let mut rows: Vec<Vec<String>> = r
        .rows
        .iter()
        .map(|u| {
            row(
                u,
                &u.workspace,
                &u.provider,
                u.model.as_deref().unwrap_or("-"),
            )
        })
        .collect();
    rows.push(row(&r.total, "TOTAL", "", ""));
    table(
        &[
            "WORKSPACE",
            "PROVIDER",
            "MODEL",
            "CALLS",
            "ERRORS",
            "INPUT",
            "OUTPUT",
            "CACHED",
            "COST",
        ],
        &rows,
    )
}

/// A rule argument: full syntax (`allow …`/`deny …`), or a bare HOST meaning `allow HOST`.
pub(crate) fn rule_arg(r: &str) -> String {
    if r.starts_with("allow ") || r.starts_with("deny ") {
        r.to_owned()
    } else {
        format!("allow {r}")
    }
}

/// The rules in force: the workspace's own (numbered, for `egress rm`), then its templates'.
pub(crate) fn effective_table(e: &berth_api::EffectiveEgress) -> String {
    if e.rules.is_empty() {
        return "no rules: all egress is denied\n".to_owned();
    }
    let rows: Vec<Vec<String>> = e
        .rules
        .iter()
        .map(|r| match &r.template {
            Some(t) => vec!["-".into(), r.rule.clone(), format!("template {t}")],
            None => vec![r.index.to_string(), r.rule.clone(), "workspace".into()],
        })
        .collect();
    let mut out = table(&["#", "RULE", "SOURCE"], &rows);
    out.push_str("(first match wins; anything else is denied)\n");
    out
}

async fn egress(cmd: crate::EgressCmd, client: &Client, ctx: &mut Ctx<'_>) -> Result<i32> {
    use crate::EgressCmd as E;
    let rules_path = |ws: &str| format!("{}/egress/rules", ws_path(ws));
    let templates_path = |ws: &str| format!("{}/egress/templates", ws_path(ws));
    let print_effective = |ws: String| async move {
        let v = client
            .get_value(&format!("{}/egress/effective", ws_path(&ws)))
            .await?;
        let e: berth_api::EffectiveEgress = decode(v.clone())?;
        Ok::<_, CliError>((v, effective_table(&e)))
    };
    match cmd {
        E::Rules { ws, json } => {
            let (v, text) = print_effective(ws).await?;
            if json {
                ctx.print_json(&v)?;
            } else {
                ctx.print(&text)?;
            }
        }
        E::Allow { ws, rule } => {
            let body = berth_api::AddEgressRule {
                rule: format!("allow {}", rule.join(" ")),
                position: None,
            };
            client.post_value(&rules_path(&ws), &body).await?;
            ctx.print(&print_effective(ws).await?.1)?;
        }
        E::Deny { ws, rule } => {
            let body = berth_api::AddEgressRule {
                rule: format!("deny {}", rule.join(" ")),
                position: None,
            };
            client.post_value(&rules_path(&ws), &body).await?;
            ctx.print(&print_effective(ws).await?.1)?;
        }
        E::Rm { ws, index } => {
            client
                .delete_value(&format!("{}/{index}", rules_path(&ws)))
                .await?;
            ctx.print(&print_effective(ws).await?.1)?;
        }
        E::Attach { ws, template } => {
            let body = berth_api::AttachEgressTemplate { template };
            client.post_value(&templates_path(&ws), &body).await?;
            ctx.print(&print_effective(ws).await?.1)?;
        }
        E::Detach { ws, template } => {
            client
                .delete_value(&format!(
                    "{}/{}",
                    templates_path(&ws),
                    crate::client::encode_segment(&template)
                ))
                .await?;
            ctx.print(&print_effective(ws).await?.1)?;
        }
        E::Template { cmd } => return egress_template(cmd, client, ctx).await,
        E::Log { ws, follow, json } => {
            let path = format!("{}/egress/log", ws_path(&ws));
            let mut after = 0i64;
            loop {
                let q = berth_api::EgressLogQuery {
                    after: Some(after),
                    limit: Some(1000),
                };
                let v = client.get_query_value(&path, &q).await?;
                let entries: Vec<berth_api::EgressLogEntry> = decode(v)?;
                for e in &entries {
                    after = after.max(e.id);
                    if json {
                        ctx.print(&format!(
                            "{}\n",
                            serde_json::to_string(e).unwrap_or_default()
                        ))?;
                    } else {
                        ctx.print(&egress_line(e))?;
                    }
                }
                if entries.is_empty() {
                    if !follow {
                        break;
                    }
                    tokio::time::sleep(std::time::Duration::from_millis(500)).await;
                }
            }
        }
    }
    Ok(0)
}

fn template_path(tenant: &str, name: &str) -> String {
    format!(
        "/egress/templates/{}/{}",
        crate::client::encode_segment(tenant),
        crate::client::encode_segment(name)
    )
}

fn template_owner(t: &berth_api::EgressTemplate) -> String {
    match &t.tenant {
        Some(tenant) if !t.builtin => tenant.clone(),
        _ => "(built-in)".into(),
    }
}

fn used_by(t: &berth_api::EgressTemplate) -> String {
    if t.used_by.is_empty() {
        "-".into()
    } else {
        t.used_by.join(", ")
    }
}

pub(crate) fn template_table(list: &[berth_api::EgressTemplate]) -> String {
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

pub(crate) fn template_details(t: &berth_api::EgressTemplate) -> String {
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

async fn egress_template(
    cmd: crate::EgressTemplateCmd,
    client: &Client,
    ctx: &mut Ctx<'_>,
) -> Result<i32> {
    use crate::EgressTemplateCmd as T;
    match cmd {
        T::List { tenant, json } => {
            let v = client
                .get_query_value(
                    "/egress/templates",
                    &berth_api::EgressTemplateQuery { tenant },
                )
                .await?;
            if json {
                ctx.print_json(&v)?;
            } else {
                let list: Vec<berth_api::EgressTemplate> = decode(v)?;
                ctx.print(&template_table(&list))?;
            }
        }
        T::Show { name, tenant, json } => {
            let v = match tenant {
                Some(t) => client.get_value(&template_path(&t, &name)).await?,
                None => {
                    // A bare name: the built-in, else the one tenant that has it.
                    let all = client.get_value("/egress/templates").await?;
                    let list: Vec<berth_api::EgressTemplate> = decode(all.clone())?;
                    let found: Vec<usize> =
                        (0..list.len()).filter(|i| list[*i].name == name).collect();
                    let pick = found
                        .iter()
                        .find(|i| list[**i].builtin)
                        .or(if found.len() == 1 {
                            found.first()
                        } else {
                            None
                        });
                    match pick {
                        Some(i) => all[*i].clone(),
                        None if found.is_empty() => {
                            return Err(CliError::other(format!(
                                "no egress template {name} (see `berth egress template list`)"
                            )))
                        }
                        None => {
                            let tenants: Vec<String> =
                                found.iter().map(|i| template_owner(&list[*i])).collect();
                            return Err(CliError::other(format!(
                                "egress template {name} exists in several tenants ({}): use --tenant",
                                tenants.join(", ")
                            )));
                        }
                    }
                }
            };
            if json {
                ctx.print_json(&v)?;
            } else {
                let t: berth_api::EgressTemplate = decode(v)?;
                ctx.print(&template_details(&t))?;
            }
        }
        T::Set {
            tenant,
            name,
            rules,
            description,
            json,
        } => {
            let body = berth_api::SetEgressTemplate {
                description,
                rules: rules.iter().map(|r| rule_arg(r)).collect(),
            };
            let v = client
                .put_value(&template_path(&tenant, &name), &body)
                .await?;
            if json {
                ctx.print_json(&v)?;
            } else {
                let t: berth_api::EgressTemplate = decode(v)?;
                let n = t.rules.len();
                let users = if t.used_by.is_empty() {
                    "not attached".to_owned()
                } else {
                    format!("applied to {}", t.used_by.join(", "))
                };
                ctx.print(&format!(
                    "egress template {tenant}/{name} set: {n} rule{}, {users}\n",
                    if n == 1 { "" } else { "s" }
                ))?;
            }
        }
        T::Rm {
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

fn egress_line(e: &berth_api::EgressLogEntry) -> String {
    let what = match (&e.method, &e.path) {
        (Some(m), Some(p)) => format!("{m} {}:{}{p}", e.host, e.port),
        _ => format!("CONNECT {}:{}", e.host, e.port),
    };
    format!(
        "{}  {:<5}  {what}  {}  ↑{} ↓{}{}\n",
        short_time(&e.at),
        e.decision.to_uppercase(),
        e.rule.as_deref().unwrap_or(&e.reason),
        e.bytes_up,
        e.bytes_down,
        if e.intercepted { "  (inspected)" } else { "" }
    )
}

async fn secret(cmd: crate::SecretCmd, client: &Client, ctx: &mut Ctx<'_>) -> Result<i32> {
    use crate::SecretCmd as S;
    let path = |t: &str, n: &str| {
        format!(
            "/secrets/{}/{}",
            crate::client::encode_segment(t),
            crate::client::encode_segment(n)
        )
    };
    match cmd {
        S::Set { tenant, name } => {
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
                .put_value(&path(&tenant, &name), &berth_api::SetSecret { value })
                .await?;
            ctx.print(&format!("secret {tenant}/{name} set\n"))?;
        }
        S::List { tenant, json } => {
            let v = client
                .get_query_value("/secrets", &berth_api::SecretQuery { tenant })
                .await?;
            if json {
                ctx.print_json(&v)?;
                return Ok(0);
            }
            let list: Vec<berth_api::SecretInfo> = decode(v)?;
            if list.is_empty() {
                ctx.print("no secrets\n")?;
                return Ok(0);
            }
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
            ctx.print(&table(&["TENANT", "NAME", "UPDATED", "USED BY"], &rows))?;
        }
        S::Rm { tenant, name } => {
            client.delete(&path(&tenant, &name), &()).await?;
            ctx.print(&format!("secret {tenant}/{name} removed\n"))?;
        }
    }
    Ok(0)
}

async fn budget(cmd: crate::BudgetCmd, client: &Client, ctx: &mut Ctx<'_>) -> Result<i32> {
    match cmd {
        crate::BudgetCmd::Set {
            target,
            tokens,
            cost: max_cost,
            period,
            json,
        } => {
            let body = berth_api::SetBudget {
                tenant: target.tenant,
                workspace: target.workspace,
                period: Some(period),
                max_tokens: tokens,
                max_cost_usd: max_cost,
            };
            let v = client.put_value("/budgets", &body).await?;
            if json {
                ctx.print_json(&v)?;
            } else {
                let b: berth_api::Budget = decode(v)?;
                ctx.print(&format!("budget set for {} {}\n", b.scope, b.target))?;
            }
            Ok(0)
        }
        crate::BudgetCmd::List { json } => {
            let v = client.get_value("/budgets").await?;
            if json {
                ctx.print_json(&v)?;
                return Ok(0);
            }
            let list: Vec<berth_api::Budget> = decode(v)?;
            if list.is_empty() {
                ctx.print("no budgets\n")?;
                return Ok(0);
            }
            let rows: Vec<Vec<String>> = list
                .iter()
                .map(|b| {
                    vec![
                        b.scope.clone(),
                        b.target.clone(),
                        b.period.clone(),
                        b.max_tokens
                            .map(|t| t.to_string())
                            .unwrap_or_else(|| "-".into()),
                        b.spent_tokens.to_string(),
                        cost(b.max_cost_usd),
                        format!("${:.4}", b.spent_cost_usd),
                    ]
                })
                .collect();
            ctx.print(&table(
                &[
                    "SCOPE",
                    "TARGET",
                    "PERIOD",
                    "MAX TOKENS",
                    "SPENT TOKENS",
                    "MAX COST",
                    "SPENT COST",
                ],
                &rows,
            ))?;
            Ok(0)
        }
        crate::BudgetCmd::Rm { target } => {
            let q = berth_api::BudgetTarget {
                tenant: target.tenant.clone(),
                workspace: target.workspace.clone(),
            };
            client.delete("/budgets", &q).await?;
            let who = target.tenant.or(target.workspace).unwrap_or_default();
            ctx.print(&format!("budget removed for {who}\n"))?;
            Ok(0)
        }
    }
}

pub(crate) fn audit_table(entries: &[AuditEntry]) -> String {
    if entries.is_empty() {
        return "no audit entries\n".into();
    }
    let rows: Vec<Vec<String>> = entries
        .iter()
        .map(|e| {
            vec![
                short_time(&e.at),
                e.actor.clone(),
                e.action.clone(),
                e.target.clone(),
                e.result.clone(),
            ]
        })
        .collect();
    table(&["AT", "ACTOR", "ACTION", "TARGET", "RESULT"], &rows)
}

async fn image(cmd: ImageCmd, client: &Client, ctx: &mut Ctx<'_>) -> Result<i32> {
    match cmd {
        ImageCmd::Status { json } => {
            let v = client.get_value("/image").await?;
            if json {
                ctx.print_json(&v)?;
            } else {
                let st: ImageStatus = decode(v)?;
                let present = if st.present {
                    "yes".to_owned()
                } else {
                    "no (build it: berth image build)".to_owned()
                };
                ctx.print(&key_values(&[("tag", st.tag), ("present", present)]))?;
            }
            Ok(0)
        }
        ImageCmd::Build { force } => {
            let mut resp = client
                .post_stream("/image/build", &BuildImage { force })
                .await?;
            let mut lines = LineSplitter::default();
            loop {
                let chunk = resp.chunk().await.map_err(|e| client.stream_error(&e))?;
                let done = chunk.is_none();
                let new_lines = match chunk {
                    Some(c) => lines.push(&c),
                    None => lines.finish(),
                };
                for line in new_lines {
                    if let Some(code) = build_event(&line, ctx)? {
                        return Ok(code);
                    }
                }
                if done {
                    return Err(CliError::other(
                        "the image build stream ended without a result (see the server's log)",
                    ));
                }
            }
        }
    }
}

/// Prints one build event line; `Some(exit code)` when it is the last.
fn build_event(line: &str, ctx: &mut Ctx<'_>) -> Result<Option<i32>> {
    let line = line.trim();
    if line.is_empty() {
        return Ok(None);
    }
    let ev: BuildEvent = match serde_json::from_str(line) {
        Ok(ev) => ev,
        Err(_) => {
            // Unknown lines are shown, not fatal.
            ctx.print(&format!("{line}\n"))?;
            return Ok(None);
        }
    };
    match ev {
        BuildEvent::Progress { step, line } => {
            ctx.print(&format!("[{step}] {line}\n"))?;
            Ok(None)
        }
        BuildEvent::Done {
            tag,
            skipped,
            seconds,
        } => {
            if skipped {
                ctx.print(&format!(
                    "image {tag} is already built (use --force to rebuild)\n"
                ))?;
            } else {
                ctx.print(&format!("built image {tag} in {seconds:.1}s\n"))?;
            }
            Ok(Some(0))
        }
        BuildEvent::Error { code, message } => Err(CliError::Api {
            status: 0,
            code,
            message: format!("image build failed: {message}"),
        }),
    }
}

/// Splits a byte stream into lines (UTF-8, lossily).
#[derive(Default)]
pub(crate) struct LineSplitter {
    buf: Vec<u8>,
}

impl LineSplitter {
    pub fn push(&mut self, bytes: &[u8]) -> Vec<String> {
        self.buf.extend_from_slice(bytes);
        let mut out = Vec::new();
        while let Some(i) = self.buf.iter().position(|&b| b == b'\n') {
            let line: Vec<u8> = self.buf.drain(..=i).collect();
            out.push(String::from_utf8_lossy(&line[..i]).into_owned());
        }
        out
    }

    pub fn finish(&mut self) -> Vec<String> {
        if self.buf.is_empty() {
            return Vec::new();
        }
        let rest = std::mem::take(&mut self.buf);
        vec![String::from_utf8_lossy(&rest).into_owned()]
    }
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
