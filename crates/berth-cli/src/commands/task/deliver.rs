//! `berth task push` and `berth task pr`: push a task's branch with the workspace's scoped
//! credential, and open a pull (merge) request for it on GitHub, GitLab or Azure DevOps.

use clap::Args;

use crate::client::{decode, task_path, CliError, Client, Result};
use crate::ctx::Ctx;

#[derive(Debug, Args)]
pub struct TaskPushArgs {
    /// Task id
    pub task: String,
    /// The remote to push to [default: origin]
    #[arg(long)]
    pub remote: Option<String>,
    /// The branch to push to on the remote [default: the task's branch]
    #[arg(long)]
    pub branch: Option<String>,
    /// Print the API's JSON
    #[arg(long)]
    pub json: bool,
}

#[derive(Debug, Args)]
pub struct TaskPrArgs {
    /// Task id
    pub task: String,
    /// Title [default: the first line of the task's prompt]
    #[arg(long)]
    pub title: Option<String>,
    /// Open it as a draft
    #[arg(long)]
    pub draft: bool,
    /// The remote whose repository gets it [default: origin]
    #[arg(long)]
    pub remote: Option<String>,
    /// The branch with the task's work [default: the task's last push, else its branch]
    #[arg(long)]
    pub branch: Option<String>,
    /// The branch to merge into [default: the remote's default branch]
    #[arg(long)]
    pub base: Option<String>,
    /// The secret bound to the workspace to call the provider's API with [default: the one
    /// whose hosts name the API host]
    #[arg(long)]
    pub secret: Option<String>,
    /// Push first (to --remote, and --branch, else the branch of the task's last push there,
    /// else its own); a remote that already has the commits is no reason to stop, any other
    /// refusal is
    #[arg(long)]
    pub push: bool,
    /// Print the API's JSON
    #[arg(long)]
    pub json: bool,
}

/// `task push`.
pub async fn push(args: TaskPushArgs, client: &Client, ctx: &mut Ctx<'_>) -> Result<i32> {
    let body = berth_api::PushTask {
        remote: args.remote,
        branch: args.branch,
    };
    let v = client
        .post_value(&format!("{}/push", task_path(&args.task)), &body)
        .await?;
    if args.json {
        ctx.print_json(&v)?;
        return Ok(0);
    }
    let p: berth_api::TaskPush = decode(v)?;
    let short: String = p.commit.chars().take(12).collect();
    ctx.print(&format!("pushed {short} to {}/{}\n", p.remote, p.branch))?;
    Ok(0)
}

/// `task pr`.
pub async fn pr(args: TaskPrArgs, client: &Client, ctx: &mut Ctx<'_>) -> Result<i32> {
    if args.push {
        push_first(&args, client, ctx).await?;
    }
    let body = berth_api::CreatePullRequest {
        title: args.title,
        draft: args.draft,
        remote: args.remote,
        branch: args.branch,
        base: args.base,
        secret: args.secret,
    };
    let v = client
        .post_value(&format!("{}/pr", task_path(&args.task)), &body)
        .await?;
    if args.json {
        ctx.print_json(&v)?;
        return Ok(0);
    }
    let p: berth_api::TaskPullRequest = decode(v)?;
    let what = if p.provider == "gitlab" {
        "merge request"
    } else {
        "pull request"
    };
    ctx.print(&format!("opened {what} #{}: {}\n", p.number, p.url))?;
    Ok(0)
}

/// `task pr --push`: the push before the pull request, to `--branch`, else to the branch of the
/// task's last push to that remote (where the pull request would be), else the task's own.
/// Said on stderr, so `--json` keeps one document on stdout.
async fn push_first(args: &TaskPrArgs, client: &Client, ctx: &mut Ctx<'_>) -> Result<()> {
    let remote = args.remote.as_deref().unwrap_or("origin");
    let branch = match &args.branch {
        Some(b) => Some(b.clone()),
        None => {
            let t: berth_api::Task = client.get(&task_path(&args.task)).await?;
            t.push.filter(|p| p.remote == remote).map(|p| p.branch)
        }
    };
    let body = berth_api::PushTask {
        remote: args.remote.clone(),
        branch,
    };
    match client
        .post_value(&format!("{}/push", task_path(&args.task)), &body)
        .await
    {
        Ok(v) => {
            let p: berth_api::TaskPush = decode(v)?;
            let short: String = p.commit.chars().take(12).collect();
            ctx.note(&format!("pushed {short} to {}/{}", p.remote, p.branch));
            Ok(())
        }
        Err(CliError::Api { code, message, .. }) if code == "nothing_to_push" => {
            ctx.note(&format!("not pushed: {message}"));
            Ok(())
        }
        Err(e) => Err(e),
    }
}
