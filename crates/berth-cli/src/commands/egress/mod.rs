//! `berth egress …`: a workspace's egress firewall: the rules in force (its own, then its
//! templates'), adding and removing its own rules, attaching and detaching templates (all
//! applied live), and the log of every attempt. Templates themselves: `template.rs`.

use berth_api::{
    AddEgressRule, AttachEgressTemplate, EffectiveEgress, EgressLogEntry, EgressLogQuery,
};
use clap::Subcommand;

use crate::client::{decode, encode_segment, ws_path, Client, Result};
use crate::ctx::Ctx;
use crate::format::{short_time, table};

pub(crate) mod template;

use template::EgressTemplateCmd;

#[derive(Debug, Subcommand)]
pub enum EgressCmd {
    /// List the rules in force, in order: the workspace's own (numbered), then its templates'
    /// (first match wins; anything unmatched is denied)
    Rules {
        ws: String,
        #[arg(long)]
        json: bool,
    },
    /// Allow HOST[:PORT] [METHOD] [/PATH-PREFIX], e.g. `berth egress allow W registry.npmjs.org`
    Allow {
        ws: String,
        #[arg(required = true, num_args = 1..)]
        rule: Vec<String>,
    },
    /// Deny HOST[:PORT] [METHOD] [/PATH-PREFIX] (added on top, so it wins over older allows)
    Deny {
        ws: String,
        #[arg(required = true, num_args = 1..)]
        rule: Vec<String>,
    },
    /// Remove the rule at this position (as listed by `rules`, from 0)
    Rm { ws: String, index: usize },
    /// Show the egress log; -f follows it
    Log {
        ws: String,
        #[arg(short = 'f', long)]
        follow: bool,
        #[arg(long)]
        json: bool,
    },
    /// Attach an egress template to a workspace (after the ones it has; applies at once)
    Attach {
        ws: String,
        /// A template of the workspace's tenant, or a built-in
        template: String,
    },
    /// Detach an egress template from a workspace (applies at once)
    Detach { ws: String, template: String },
    /// Egress templates: named rule lists that workspaces share (the tenant's own, and the
    /// read-only built-ins npm, pypi, crates, github, debian)
    Template {
        #[command(subcommand)]
        cmd: EgressTemplateCmd,
    },
}

pub(crate) async fn run(cmd: EgressCmd, client: &Client, ctx: &mut Ctx<'_>) -> Result<i32> {
    let rules_path = |ws: &str| format!("{}/egress/rules", ws_path(ws));
    let templates_path = |ws: &str| format!("{}/egress/templates", ws_path(ws));
    // Every change prints the rules in force afterwards.
    let changed = match cmd {
        EgressCmd::Rules { ws, json } => {
            let (v, text) = effective(client, &ws).await?;
            if json {
                ctx.print_json(&v)?;
            } else {
                ctx.print(&text)?;
            }
            None
        }
        EgressCmd::Allow { ws, rule } => {
            add_rule(client, &rules_path(&ws), "allow", &rule).await?;
            Some(ws)
        }
        EgressCmd::Deny { ws, rule } => {
            add_rule(client, &rules_path(&ws), "deny", &rule).await?;
            Some(ws)
        }
        EgressCmd::Rm { ws, index } => {
            client
                .delete_value(&format!("{}/{index}", rules_path(&ws)))
                .await?;
            Some(ws)
        }
        EgressCmd::Attach { ws, template } => {
            let body = AttachEgressTemplate { template };
            client.post_value(&templates_path(&ws), &body).await?;
            Some(ws)
        }
        EgressCmd::Detach { ws, template } => {
            client
                .delete_value(&format!(
                    "{}/{}",
                    templates_path(&ws),
                    encode_segment(&template)
                ))
                .await?;
            Some(ws)
        }
        EgressCmd::Template { cmd } => return template::run(cmd, client, ctx).await,
        EgressCmd::Log { ws, follow, json } => {
            log(client, ctx, &ws, follow, json).await?;
            None
        }
    };
    if let Some(ws) = changed {
        ctx.print(&effective(client, &ws).await?.1)?;
    }
    Ok(0)
}

/// Adds `verb WORDS…` (an allow or a deny) on top of a workspace's rules.
async fn add_rule(client: &Client, path: &str, verb: &str, words: &[String]) -> Result<()> {
    let body = AddEgressRule {
        rule: format!("{verb} {}", words.join(" ")),
        position: None,
    };
    client.post_value(path, &body).await?;
    Ok(())
}

/// The rules in force: the API's JSON and the table of it.
async fn effective(client: &Client, ws: &str) -> Result<(serde_json::Value, String)> {
    let v = client
        .get_value(&format!("{}/egress/effective", ws_path(ws)))
        .await?;
    let e: EffectiveEgress = decode(v.clone())?;
    Ok((v, effective_table(&e)))
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
fn effective_table(e: &EffectiveEgress) -> String {
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

/// Prints a workspace's egress log; with `follow`, keeps polling for new entries.
async fn log(client: &Client, ctx: &mut Ctx<'_>, ws: &str, follow: bool, json: bool) -> Result<()> {
    let path = format!("{}/egress/log", ws_path(ws));
    let mut after = 0i64;
    loop {
        let q = EgressLogQuery {
            after: Some(after),
            limit: Some(1000),
        };
        let v = client.get_query_value(&path, &q).await?;
        let entries: Vec<EgressLogEntry> = decode(v)?;
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
                return Ok(());
            }
            tokio::time::sleep(std::time::Duration::from_millis(500)).await;
        }
    }
}

fn egress_line(e: &EgressLogEntry) -> String {
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
