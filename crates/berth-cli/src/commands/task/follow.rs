//! Following a task's events as Server-Sent Events (`…/events/stream?after=N`) until its turn
//! is over, it fails, or Ctrl-C; a dropped connection is resumed after the last sequence
//! number shown, so no event is missed or shown twice.

use std::time::Duration;

use berth_api::ErrorBody;
use berth_domain::{EventKind, TaskState};
use serde_json::Value;

use super::printer::Printer;
use crate::client::{task_path, CliError, Client, Result};
use crate::ctx::{Ctx, InterruptListener};
use crate::stream::{SseEvent, SseParser};

/// The server sends a keepalive every ~15 s; silence this long means the connection is dead.
const IDLE_TIMEOUT: Duration = Duration::from_secs(60);
/// Waits before the reconnects after a dropped event stream; then it is an error.
const BACKOFF_MS: [u64; 5] = [250, 500, 1000, 2000, 4000];

/// When following stops (besides Ctrl-C).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Until {
    /// The turn that the stream shows beginning is over: completed, interrupted, failed or
    /// cancelled.
    TurnOver,
    /// The task failed or was cancelled (a completed task may get follow-ups).
    Final,
}

#[derive(Debug, PartialEq)]
pub(crate) enum End {
    State(TaskState, Option<String>),
    /// Ctrl-C: the CLI stopped following; the task goes on.
    Detached,
}

struct FollowState {
    until: Until,
    /// Sequence number of the newest event shown.
    last: u64,
    /// The stream has shown a turn begin (a user message or a non-final state), so a
    /// `completed` ends this turn rather than being an earlier one's.
    begun: bool,
}

impl FollowState {
    fn stop(&mut self, kind: &EventKind) -> Option<End> {
        match kind {
            EventKind::Status { state, reason } if state.is_final() => {
                Some(End::State(*state, reason.clone()))
            }
            EventKind::Status {
                state: state @ (TaskState::Completed | TaskState::Interrupted),
                reason,
            } => (self.until == Until::TurnOver && self.begun)
                .then(|| End::State(*state, reason.clone())),
            EventKind::Status { .. } | EventKind::UserMessage { .. } => {
                self.begun = true;
                None
            }
            _ => None,
        }
    }
}

/// Streams a task's events after `after` until `until` (or Ctrl-C), reconnecting with
/// `after=<last seq>` when the connection drops.
pub(crate) async fn follow(
    client: &Client,
    ctx: &mut Ctx<'_>,
    task: &str,
    after: u64,
    until: Until,
    printer: &mut Printer,
) -> Result<End> {
    let mut interrupt = ctx.interrupt.listen()?;
    let mut st = FollowState {
        until,
        last: after,
        begun: false,
    };
    let res = follow_loop(client, ctx, task, &mut st, printer, &mut interrupt).await;
    let finished = printer.finish(ctx);
    let end = res?;
    finished?;
    Ok(end)
}

async fn follow_loop(
    client: &Client,
    ctx: &mut Ctx<'_>,
    task: &str,
    st: &mut FollowState,
    printer: &mut Printer,
    interrupt: &mut InterruptListener,
) -> Result<End> {
    let mut failures = 0usize;
    loop {
        let path = format!("{}/events/stream?after={}", task_path(task), st.last);
        let resp = tokio::select! {
            r = client.get_event_stream(&path) => r,
            () = interrupt.recv() => return Ok(End::Detached),
        };
        let cause = match resp {
            Err(e) if !retryable(&e) => return Err(e),
            Err(e) => e.to_string(),
            Ok(mut resp) => {
                let mut sse = SseParser::default();
                loop {
                    let chunk = tokio::select! {
                        c = tokio::time::timeout(IDLE_TIMEOUT, resp.chunk()) => c,
                        () = interrupt.recv() => return Ok(End::Detached),
                    };
                    match chunk {
                        Ok(Ok(Some(bytes))) => {
                            failures = 0;
                            for ev in sse.push(&bytes) {
                                if let Some(end) = on_sse(ev, st, printer, ctx)? {
                                    return Ok(end);
                                }
                            }
                        }
                        Ok(Ok(None)) => break "the server closed the event stream".to_owned(),
                        Ok(Err(e)) => break client.stream_error(&e).to_string(),
                        Err(_) => {
                            break format!("no data for {}s", IDLE_TIMEOUT.as_secs());
                        }
                    }
                }
            }
        };
        let Some(ms) = BACKOFF_MS.get(failures) else {
            return Err(CliError::other(format!(
                "lost the event stream of task {task}: {cause} (the task keeps running; \
                 resume with: berth task logs {task} -f --after {})",
                st.last
            )));
        };
        failures += 1;
        tokio::select! {
            () = tokio::time::sleep(Duration::from_millis(*ms)) => {}
            () = interrupt.recv() => return Ok(End::Detached),
        }
    }
}

/// Whether connecting again may help: the server is unreachable, timed out or failed (5xx);
/// not when it refused the request (4xx).
fn retryable(e: &CliError) -> bool {
    match e {
        CliError::Api { status, .. } => *status == 0 || *status >= 500,
        CliError::Unreachable { .. } | CliError::Other(_) => true,
    }
}

/// Shows one SSE event unless it was shown already; `Some` when following should stop.
fn on_sse(
    ev: SseEvent,
    st: &mut FollowState,
    printer: &mut Printer,
    ctx: &mut Ctx<'_>,
) -> Result<Option<End>> {
    let Ok(v) = serde_json::from_str::<Value>(&ev.data) else {
        return Ok(None);
    };
    if v.get("error").is_some() {
        if let Ok(eb) = serde_json::from_value::<ErrorBody>(v.clone()) {
            return Err(CliError::in_stream(eb.error.code, eb.error.message));
        }
    }
    let seq = v
        .get("seq")
        .and_then(Value::as_u64)
        .or_else(|| ev.id.as_deref().and_then(|id| id.trim().parse().ok()));
    let Some(seq) = seq else {
        return Ok(None);
    };
    if seq <= st.last {
        return Ok(None);
    }
    st.last = seq;
    let raw = if ev.data.contains('\n') {
        v.to_string()
    } else {
        ev.data.trim().to_owned()
    };
    let decoded = printer.event(ctx, &raw, &v)?;
    Ok(decoded.and_then(|e| st.stop(&e.kind)))
}
