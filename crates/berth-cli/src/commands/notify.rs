//! `berth notify …`: the caller's notification subscriptions (add with the signing secret
//! printed once, list, remove), a test send, and a subscription's delivery log.

use berth_api::{CreateSubscription, CreatedSubscription, Delivery, Subscription, TestResult};
use clap::Subcommand;

use crate::client::{decode, encode_segment, Client, Result};
use crate::ctx::Ctx;
use crate::format::{short_time, table};

#[derive(Debug, Subcommand)]
pub enum NotifyCmd {
    /// Subscribe a webhook, a Slack incoming webhook or an ntfy topic to events
    Add {
        /// Where to POST (http or https)
        #[arg(value_name = "URL")]
        target: String,
        /// webhook (berth's signed JSON), slack or ntfy
        #[arg(long, default_value = "webhook", value_parser = ["webhook", "slack", "ntfy"])]
        channel: String,
        /// Only this workspace's events (name, tenant/name or id)
        #[arg(long)]
        workspace: Option<String>,
        /// The tenant to listen to (default: your token's; admins name one or a workspace)
        #[arg(long)]
        tenant: Option<String>,
        /// Event kinds, comma-separated (default: all): task.completed, task.failed,
        /// task.waiting, workspace.failed, workspace.oom, budget.near, budget.over,
        /// access.request
        #[arg(long, value_delimiter = ',')]
        kinds: Vec<String>,
        #[arg(long)]
        json: bool,
    },
    /// List your subscriptions (every one for an admin)
    #[command(alias = "ls")]
    List {
        #[arg(long)]
        json: bool,
    },
    /// Remove a subscription and its delivery log
    #[command(alias = "remove")]
    Rm {
        /// The subscription's id (nsub_…)
        id: String,
    },
    /// Send a test event now and print the receiver's answer
    Test {
        id: String,
        #[arg(long)]
        json: bool,
    },
    /// A subscription's delivery log: each delivery with its attempts
    Log {
        id: String,
        /// How many deliveries (newest first; 1 to 200, default 50)
        #[arg(long)]
        limit: Option<i64>,
        #[arg(long)]
        json: bool,
    },
}

pub(crate) async fn run(cmd: NotifyCmd, client: &Client, ctx: &mut Ctx<'_>) -> Result<i32> {
    let path = |id: &str| format!("/notifications/subscriptions/{}", encode_segment(id));
    match cmd {
        NotifyCmd::Add {
            target,
            channel,
            workspace,
            tenant,
            kinds,
            json,
        } => {
            let body = CreateSubscription {
                channel,
                url: target,
                tenant,
                workspace,
                kinds: kinds.into_iter().filter(|k| !k.is_empty()).collect(),
                keys: None,
            };
            add(client, ctx, &body, json).await?;
        }
        NotifyCmd::List { json } => {
            let v = client.get_value("/notifications/subscriptions").await?;
            if json {
                ctx.print_json(&v)?;
            } else {
                let list: Vec<Subscription> = decode(v)?;
                ctx.print(&subscription_table(&list))?;
            }
        }
        NotifyCmd::Rm { id } => {
            client.delete_value(&path(&id)).await?;
            ctx.print(&format!("subscription {id} removed\n"))?;
        }
        NotifyCmd::Test { id, json } => return test(client, ctx, &path(&id), json).await,
        NotifyCmd::Log { id, limit, json } => {
            let mut p = format!("{}/deliveries", path(&id));
            if let Some(l) = limit {
                p.push_str(&format!("?limit={l}"));
            }
            let v = client.get_value(&p).await?;
            if json {
                ctx.print_json(&v)?;
            } else {
                let list: Vec<Delivery> = decode(v)?;
                ctx.print(&delivery_table(&list))?;
            }
        }
    }
    Ok(0)
}

/// `notify add`: creates the subscription and prints its signing secret (shown only now).
async fn add(
    client: &Client,
    ctx: &mut Ctx<'_>,
    body: &CreateSubscription,
    json: bool,
) -> Result<()> {
    let v = client
        .post_value("/notifications/subscriptions", body)
        .await?;
    if json {
        return ctx.print_json(&v);
    }
    let c: CreatedSubscription = decode(v)?;
    // Only a browser's Web Push subscription (made by the web UI) has no secret.
    ctx.print(&format!("{}\n", c.signing_secret.unwrap_or_default()))?;
    ctx.note(&format!(
        "subscription {} created ({} to {}); above is its signing secret, shown only \
         now: verify X-Berth-Signature with it",
        c.subscription.id, c.subscription.channel, c.subscription.url
    ));
    Ok(())
}

/// `notify test`: sends a test event to the subscription at `path`; exit 1 when it was not
/// delivered.
async fn test(client: &Client, ctx: &mut Ctx<'_>, path: &str, json: bool) -> Result<i32> {
    let v = client.post_empty_value(&format!("{path}/test")).await?;
    if json {
        ctx.print_json(&v)?;
        return Ok(0);
    }
    let r: TestResult = decode(v)?;
    let answer = match (r.status, &r.error) {
        (Some(s), _) => format!("HTTP {s}"),
        (None, Some(e)) => e.clone(),
        (None, None) => "no answer".into(),
    };
    let delivered = if r.delivered {
        "delivered"
    } else {
        "not delivered"
    };
    ctx.print(&format!("{delivered}: {answer} in {} ms\n", r.duration_ms))?;
    Ok(if r.delivered { 0 } else { 1 })
}

fn subscription_table(list: &[Subscription]) -> String {
    if list.is_empty() {
        return "no subscriptions\n".into();
    }
    let rows: Vec<Vec<String>> = list
        .iter()
        .map(|s| {
            vec![
                s.id.clone(),
                s.channel.clone(),
                s.url.clone(),
                s.workspace.clone().unwrap_or_else(|| s.tenant.clone()),
                if s.kinds.is_empty() {
                    "all".into()
                } else {
                    s.kinds.join(",")
                },
                s.owner.clone(),
            ]
        })
        .collect();
    table(&["ID", "CHANNEL", "URL", "SCOPE", "KINDS", "OWNER"], &rows)
}

/// One row per attempt, under its delivery.
fn delivery_table(list: &[Delivery]) -> String {
    if list.is_empty() {
        return "no deliveries\n".into();
    }
    let mut rows = Vec::new();
    for d in list {
        if d.log.is_empty() {
            rows.push(vec![
                d.id.to_string(),
                d.kind.clone(),
                d.state.clone(),
                "-".into(),
                "-".into(),
                d.next_at.as_deref().map_or("-".into(), short_time),
            ]);
        }
        for (i, a) in d.log.iter().enumerate() {
            let answer = match (a.status, &a.error) {
                (Some(s), _) => s.to_string(),
                (None, Some(e)) => e.clone(),
                (None, None) => "-".into(),
            };
            rows.push(vec![
                if i == 0 {
                    d.id.to_string()
                } else {
                    String::new()
                },
                if i == 0 {
                    d.kind.clone()
                } else {
                    String::new()
                },
                if i == 0 {
                    d.state.clone()
                } else {
                    String::new()
                },
                short_time(&a.at),
                answer,
                a.next_at.as_deref().map_or("-".into(), short_time),
            ]);
        }
    }
    table(
        &["DELIVERY", "KIND", "STATE", "ATTEMPT AT", "ANSWER", "NEXT"],
        &rows,
    )
}
