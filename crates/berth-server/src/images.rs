//! The workspace base image as a service: a build on behalf of an actor, its progress sent as
//! [`api::BuildEvent`]s, audited as `image.build` when it ends. The build runs in its own task:
//! a client that goes away does not cancel it halfway.
//!
//! And the derived images of templates' `[image]` extras ([`derived`], [`build_derived`]):
//! content-addressed, built once per tag (concurrent builds of one tag wait for each other),
//! bounded in time; provisioning's `image` step runs them (`crate::provision`); [`prune`]
//! removes those no workspace is on.

use std::sync::Arc;

use berth_api as api;
use berth_runtime::image::BuildProgress;
use tokio::sync::mpsc::UnboundedSender;

use crate::auth::{audit, Actor};
use crate::error::{ApiError, ApiResult};
use crate::state::AppState;

/// Starts a build; `events` gets progress…, then `done` or `error` last.
pub fn build(
    state: Arc<AppState>,
    actor: Actor,
    force: bool,
    events: UnboundedSender<api::BuildEvent>,
) {
    let (prog_tx, mut prog_rx) = tokio::sync::mpsc::unbounded_channel::<BuildProgress>();
    let forward = events.clone();
    let forwarder = tokio::spawn(async move {
        while let Some(p) = prog_rx.recv().await {
            let ev = api::BuildEvent::Progress {
                step: p.step.as_str().to_owned(),
                line: p.line,
            };
            // The client may have left; the build goes on so its result is not wasted.
            let _ = forward.send(ev);
        }
    });
    tokio::spawn(async move {
        let result = state.host.images.build(force, prog_tx).await;
        let (ev, res) = match result {
            Ok(o) => (
                api::BuildEvent::Done {
                    tag: o.tag,
                    skipped: o.skipped,
                    seconds: o.duration.as_secs_f64(),
                },
                Ok(()),
            ),
            Err(e) => {
                let err = ApiError::from(e);
                (
                    api::BuildEvent::Error {
                        code: err.code.as_str().to_owned(),
                        message: err.message.clone(),
                    },
                    Err(err),
                )
            }
        };
        // The build dropped its progress sender; once the forwarder drained, `done` is last.
        let _ = forwarder.await;
        let _ = events.send(ev);
        audit(
            &state.store,
            &actor,
            "image.build",
            &state.host.images.tag(),
            &res,
        )
        .await;
    });
}

/// Longest a derived image build may take before the server stops waiting for it.
pub const DERIVED_BUILD_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(30 * 60);

/// The derived image of a template's `[image]` extras on top of `base`: content-addressed by
/// the base image's id, so it is only known once the base exists (`image_missing` otherwise).
pub async fn derived(
    state: &AppState,
    base: &str,
    spec: &berth_domain::template::ImageSpec,
) -> Result<berth_runtime::image::DerivedImage, ApiError> {
    let docker = state.host.engine.docker()?;
    let id = berth_runtime::image::image_id(&docker, base)
        .await?
        .ok_or_else(|| berth_runtime::RuntimeError::ImageMissing(base.to_owned()))?;
    berth_runtime::image::DerivedImage::new(&id, &spec.apt, &spec.npm, &spec.pip)
        .map_err(|e| ApiError::invalid(e.to_string()))
}

/// One lock per derived tag: two workspaces of one template build its image once.
fn build_lock(tag: &str) -> Arc<tokio::sync::Mutex<()>> {
    static LOCKS: std::sync::Mutex<
        Option<std::collections::HashMap<String, Arc<tokio::sync::Mutex<()>>>>,
    > = std::sync::Mutex::new(None);
    let mut g = berth_domain::sync::lock(&LOCKS);
    g.get_or_insert_with(Default::default)
        .entry(tag.to_owned())
        .or_default()
        .clone()
}

/// Builds `image` unless the engine has it (`Ok(false)`: reused), sending the build's output
/// line by line to `lines`; bounded by [`DERIVED_BUILD_TIMEOUT`]. A build of the same image
/// already going is waited for, then reused.
pub async fn build_derived(
    state: &AppState,
    image: &berth_runtime::image::DerivedImage,
    lines: UnboundedSender<String>,
) -> Result<bool, ApiError> {
    let docker = state.host.engine.docker()?;
    let lock = build_lock(&image.tag());
    let _guard = lock.lock().await;
    let build = berth_runtime::image::build_derived(&docker, image, move |p| {
        let _ = lines.send(p.line);
    });
    match tokio::time::timeout(DERIVED_BUILD_TIMEOUT, build).await {
        Ok(Ok((_, built))) => Ok(built),
        Ok(Err(e)) => Err(ApiError::new(
            berth_domain::ErrorCode::EngineError,
            e.to_string(),
        )),
        Err(_) => Err(ApiError::new(
            berth_domain::ErrorCode::EngineError,
            format!(
                "the image build did not finish within {} minutes",
                DERIVED_BUILD_TIMEOUT.as_secs() / 60
            ),
        )),
    }
}

/// Removes the derived images no workspace is on (any state: a stopped workspace starts on its
/// image again), none that is being built or that a container still uses; with `dry_run`, only
/// says which. Audited as `image.prune`.
pub async fn prune(state: &AppState, actor: &Actor, dry_run: bool) -> ApiResult<api::ImagePrune> {
    let result = prune_unaudited(state, dry_run).await;
    if !dry_run {
        let target = match &result {
            Ok(p) => format!("{} removed", p.removed.len()),
            Err(_) => "derived images".to_owned(),
        };
        audit(&state.store, actor, "image.prune", &target, &result).await;
    }
    result
}

async fn prune_unaudited(state: &AppState, dry_run: bool) -> ApiResult<api::ImagePrune> {
    let docker = state.host.engine.docker()?;
    let mut users: std::collections::HashMap<String, Vec<String>> = Default::default();
    for w in state.store.list_workspaces(None).await? {
        users
            .entry(w.image.clone())
            .or_default()
            .push(w.qualified_name());
    }
    let mut out = api::ImagePrune {
        dry_run,
        ..Default::default()
    };
    for img in berth_runtime::image::derived_images(&docker).await? {
        let kept = |reason: &str, workspaces: Vec<String>| api::KeptImage {
            tag: img.tag.clone(),
            size_bytes: img.size,
            workspaces,
            reason: reason.to_owned(),
        };
        if let Some(ws) = users.get(&img.tag) {
            out.kept.push(kept("used by workspaces", ws.clone()));
            continue;
        }
        // A build of this tag holds its lock; so does the removal, so no build starts meanwhile.
        let lock = build_lock(&img.tag);
        let Ok(_guard) = lock.try_lock() else {
            out.kept.push(kept("being built", Vec::new()));
            continue;
        };
        if !dry_run && !berth_runtime::image::remove_unused_image(&docker, &img.tag).await? {
            out.kept.push(kept("used by a container", Vec::new()));
            continue;
        }
        out.freed_bytes += img.size;
        out.removed.push(api::PrunedImage {
            tag: img.tag.clone(),
            size_bytes: img.size,
        });
    }
    if !dry_run && !out.removed.is_empty() {
        tracing::info!(
            removed = out.removed.len(),
            bytes = out.freed_bytes,
            "pruned derived images"
        );
    }
    Ok(out)
}
