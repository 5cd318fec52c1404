//! `berth image …`: the workspace base image's status, building it with its progress streamed
//! line by line, and pruning the derived images of templates' `[image]` extras.

use berth_api::{BuildEvent, BuildImage, ImagePrune, ImageStatus, PruneImages};
use clap::Subcommand;

use crate::client::{decode, CliError, Client, Result};
use crate::ctx::Ctx;
use crate::format::{bytes_human, key_values};
use crate::stream::LineSplitter;

#[derive(Debug, Subcommand)]
pub enum ImageCmd {
    /// Show the base image's tag and whether it is built
    Status {
        /// Print the API's JSON
        #[arg(long)]
        json: bool,
    },
    /// Build the base image, printing progress as it streams
    Build {
        /// Rebuild even when the image exists
        #[arg(long)]
        force: bool,
    },
    /// Remove the derived images (templates' [image] extras) no workspace is on
    Prune {
        /// Only list what would be removed
        #[arg(long)]
        dry_run: bool,
        /// Print the API's JSON
        #[arg(long)]
        json: bool,
    },
}

pub(crate) async fn run(cmd: ImageCmd, client: &Client, ctx: &mut Ctx<'_>) -> Result<i32> {
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
        ImageCmd::Build { force } => build(client, ctx, force).await,
        ImageCmd::Prune { dry_run, json } => {
            let v = client
                .post_value("/image/prune", &PruneImages { dry_run })
                .await?;
            if json {
                ctx.print_json(&v)?;
            } else {
                let p: ImagePrune = decode(v)?;
                ctx.print(&prune_report(&p))?;
            }
            Ok(0)
        }
    }
}

/// What a prune removed and kept, one line each, then the total.
fn prune_report(p: &ImagePrune) -> String {
    let verb = if p.dry_run { "would remove" } else { "removed" };
    let mut out = String::new();
    for r in &p.removed {
        out.push_str(&format!(
            "{verb} {} ({})\n",
            r.tag,
            bytes_human(r.size_bytes)
        ));
    }
    for k in &p.kept {
        let on = if k.workspaces.is_empty() {
            String::new()
        } else {
            format!(": {}", k.workspaces.join(", "))
        };
        out.push_str(&format!("kept {} ({}{on})\n", k.tag, k.reason));
    }
    out.push_str(&format!(
        "{verb} {} derived image(s), {}\n",
        p.removed.len(),
        bytes_human(p.freed_bytes)
    ));
    out
}

/// Starts a build and prints its events until the last one.
async fn build(client: &Client, ctx: &mut Ctx<'_>, force: bool) -> Result<i32> {
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
        BuildEvent::Error { code, message } => Err(CliError::in_stream(
            code,
            format!("image build failed: {message}"),
        )),
    }
}
