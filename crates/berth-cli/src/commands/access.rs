//! `berth access …`: access requests (what workspaces' egress rules denied, or what their
//! agents asked for with `berth request`) and the decisions on them.

use berth_api::{AccessComment, AccessRequest, DecideAccess};
use clap::Subcommand;

use crate::client::{decode, encode_segment, CliError, Client, Result};
use crate::ctx::Ctx;
use crate::format::{short_time, table, terminal_safe, truncate};

#[derive(Debug, Subcommand)]
pub enum AccessCmd {
    /// Access requests of your tenant, newest first (open ones unless --all or --state)
    #[command(alias = "ls")]
    List {
        /// Only this workspace's
        #[arg(long)]
        workspace: Option<String>,
        /// open, approved, denied or expired
        #[arg(long, value_parser = ["open", "approved", "denied", "expired"], conflicts_with = "all")]
        state: Option<String>,
        /// Every state
        #[arg(long)]
        all: bool,
        #[arg(long)]
        json: bool,
    },
    /// Approve an open request: once (an allow rule that expires, default 1h), --always (a rule
    /// of the workspace's own) or --template T (a rule in the tenant's egress template T)
    Approve {
        /// The request's id (ar_…)
        id: String,
        /// Keep the rule (the workspace's own first rule)
        #[arg(long, conflicts_with_all = ["template", "ttl"])]
        always: bool,
        /// Put the rule into this egress template of the tenant (attached to the workspace)
        #[arg(long, conflicts_with = "ttl")]
        template: Option<String>,
        /// How long a one-time approval lasts: 90s, 30m, 1h, 2d (default 1h)
        #[arg(long)]
        ttl: Option<String>,
        /// Recorded with the decision
        #[arg(long)]
        reason: Option<String>,
        #[arg(long)]
        json: bool,
    },
    /// Deny an open request (it stays denied; its repeats are counted on it)
    Deny {
        id: String,
        #[arg(long)]
        reason: Option<String>,
        #[arg(long)]
        json: bool,
    },
    /// Comment on a request (members may; deciding takes an owner)
    Comment {
        id: String,
        text: String,
        #[arg(long)]
        json: bool,
    },
}

/// `90s`, `30m`, `1h`, `2d`, or seconds.
fn parse_ttl(s: &str) -> Result<u64> {
    let t = s.trim();
    let (num, mult) = match t.char_indices().last() {
        Some((i, 's')) => (&t[..i], 1),
        Some((i, 'm')) => (&t[..i], 60),
        Some((i, 'h')) => (&t[..i], 3600),
        Some((i, 'd')) => (&t[..i], 86_400),
        _ => (t, 1),
    };
    num.parse::<u64>()
        .ok()
        .and_then(|n| n.checked_mul(mult))
        .filter(|n| *n > 0)
        .ok_or_else(|| CliError::other(format!("invalid --ttl {s:?}: use e.g. 90s, 30m, 1h or 2d")))
}

/// The request `id` (its workspace is needed for the decision's path).
async fn find(client: &Client, id: &str) -> Result<AccessRequest> {
    let list: Vec<AccessRequest> = decode(client.get_value("/access-requests").await?)?;
    list.into_iter()
        .find(|r| r.id == id)
        .ok_or_else(|| CliError::other(format!("no access request {id}")))
}

fn req_path(r: &AccessRequest) -> String {
    format!(
        "/workspaces/{}/access-requests/{}",
        encode_segment(&r.workspace),
        encode_segment(&r.id)
    )
}

fn what(r: &AccessRequest) -> String {
    match (&r.secret, r.port) {
        (Some(s), _) => format!("secret {s} for {}", r.host),
        (None, Some(p)) if r.host.contains(':') => format!("[{}]:{p}", r.host),
        (None, Some(p)) => format!("{}:{p}", r.host),
        (None, None) => r.host.clone(),
    }
}

pub(crate) async fn run(cmd: AccessCmd, client: &Client, ctx: &mut Ctx<'_>) -> Result<i32> {
    match cmd {
        AccessCmd::List {
            workspace,
            state,
            all,
            json,
        } => {
            let path = list_path(workspace.as_deref(), state.as_deref(), all);
            list(client, ctx, &path, json).await
        }
        AccessCmd::Approve {
            id,
            always,
            template,
            ttl,
            reason,
            json,
        } => {
            let ttl_seconds = ttl.as_deref().map(parse_ttl).transpose()?;
            let r = find(client, &id).await?;
            let d = DecideAccess {
                decision: "approve".into(),
                scope: Some(approval_scope(&r, always, template.is_some()).into()),
                ttl_seconds,
                template,
                reason,
            };
            decided(client, ctx, &r, &d, json).await
        }
        AccessCmd::Deny { id, reason, json } => {
            let r = find(client, &id).await?;
            let d = DecideAccess {
                decision: "deny".into(),
                reason,
                ..Default::default()
            };
            decided(client, ctx, &r, &d, json).await
        }
        AccessCmd::Comment { id, text, json } => comment(client, ctx, &id, text, json).await,
    }
}

/// The list's path: one workspace's or all, open ones unless `state` or `all` say otherwise.
fn list_path(workspace: Option<&str>, state: Option<&str>, all: bool) -> String {
    let mut q = Vec::new();
    if let Some(w) = workspace {
        q.push(format!("workspace={}", encode_segment(w)));
    }
    match (state, all) {
        (Some(s), _) => q.push(format!("state={s}")),
        (None, false) => q.push("state=open".into()),
        (None, true) => {}
    }
    let mut path = "/access-requests".to_string();
    if !q.is_empty() {
        path = format!("{path}?{}", q.join("&"));
    }
    path
}

/// Prints the requests at `path`, as a table or as the server's JSON.
async fn list(client: &Client, ctx: &mut Ctx<'_>, path: &str, json: bool) -> Result<i32> {
    let v = client.get_value(path).await?;
    if json {
        ctx.print_json(&v)?;
    } else {
        let list: Vec<AccessRequest> = decode(v)?;
        ctx.print(&terminal_safe(&access_table(&list)))?;
    }
    Ok(0)
}

/// The scope an approval asks for: the flag's, else `always` for a secret (the server takes
/// nothing else for one) and `once` for egress.
fn approval_scope(r: &AccessRequest, always: bool, template: bool) -> &'static str {
    if always {
        "always"
    } else if template {
        "template"
    } else if r.kind == "secret" {
        "always"
    } else {
        "once"
    }
}

/// Adds comment `text` to request `id` and says so (or prints the request as JSON).
async fn comment(
    client: &Client,
    ctx: &mut Ctx<'_>,
    id: &str,
    text: String,
    json: bool,
) -> Result<i32> {
    let r = find(client, id).await?;
    let v = client
        .post_value(
            &format!("{}/comments", req_path(&r)),
            &AccessComment { text },
        )
        .await?;
    if json {
        ctx.print_json(&v)?;
    } else {
        ctx.print(&format!("commented on {}\n", r.id))?;
    }
    Ok(0)
}

/// Sends decision `d` on request `r` and prints the decided request (one line, or JSON).
async fn decided(
    client: &Client,
    ctx: &mut Ctx<'_>,
    r: &AccessRequest,
    d: &DecideAccess,
    json: bool,
) -> Result<i32> {
    let v = client.post_value(&req_path(r), d).await?;
    if json {
        ctx.print_json(&v)?;
        return Ok(0);
    }
    let a: AccessRequest = decode(v)?;
    let mut line = format!("{} {} of {}: {}", a.id, a.state, a.workspace, what(&a));
    if let Some(rule) = &a.granted_rule {
        line.push_str(&format!(" ({rule}"));
        match (&a.expires_at, &a.template) {
            (Some(t), _) => line.push_str(&format!(" until {}", short_time(t))),
            (None, Some(t)) => line.push_str(&format!(" in template {t}")),
            _ => {}
        }
        line.push(')');
    }
    ctx.print(&terminal_safe(&format!("{line}\n")))?;
    Ok(0)
}

pub(crate) fn access_table(list: &[AccessRequest]) -> String {
    if list.is_empty() {
        return "no access requests\n".into();
    }
    let rows: Vec<Vec<String>> = list
        .iter()
        .map(|r| {
            vec![
                r.id.clone(),
                r.workspace.clone(),
                what(r),
                r.source.clone(),
                r.count.to_string(),
                short_time(&r.last_seen),
                r.state.clone(),
                truncate(r.agent_reason.as_deref().unwrap_or("-"), 40),
            ]
        })
        .collect();
    table(
        &[
            "ID",
            "WORKSPACE",
            "WHAT",
            "SOURCE",
            "COUNT",
            "LAST SEEN",
            "STATE",
            "REASON",
        ],
        &rows,
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ttls_parse() {
        assert_eq!(parse_ttl("90s").unwrap(), 90);
        assert_eq!(parse_ttl("30m").unwrap(), 1800);
        assert_eq!(parse_ttl("1h").unwrap(), 3600);
        assert_eq!(parse_ttl("2d").unwrap(), 172_800);
        assert_eq!(parse_ttl("5").unwrap(), 5);
        for bad in ["", "0", "h", "1w", "-1h"] {
            assert!(parse_ttl(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn the_list_asks_for_open_requests_unless_told_otherwise() {
        assert_eq!(list_path(None, None, false), "/access-requests?state=open");
        assert_eq!(list_path(None, None, true), "/access-requests");
        assert_eq!(
            list_path(Some("acme/web"), Some("denied"), false),
            "/access-requests?workspace=acme%2Fweb&state=denied"
        );
    }
}
