//! The workspace base image as a service: a build on behalf of an actor, its progress sent as
//! [`api::BuildEvent`]s, audited as `image.build` when it ends. The build runs in its own task:
//! a client that goes away does not cancel it halfway.

use std::sync::Arc;

use berth_api as api;
use berth_runtime::image::BuildProgress;
use tokio::sync::mpsc::UnboundedSender;

use crate::auth::{audit, Actor};
use crate::error::ApiError;
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
