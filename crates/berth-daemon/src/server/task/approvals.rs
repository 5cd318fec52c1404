//! A task's pending permission requests: the daemon holds each request its agent made (the
//! task is `waiting` while any is open) until a decision arrives (`task_decide`), a standing
//! "always for this task" rule answers it, or its timeout denies it. Every outcome is an
//! `approval_resolved` event, and the answer goes to the running turn, which writes it to the
//! agent in its own protocol ([`berth_agents::Driver::answer`]).

use std::collections::{HashMap, HashSet};
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use berth_domain::{ApprovalDecision, ApprovalRequest, EventKind, TaskState};
use tokio::sync::mpsc;

use super::{Inner, Task};
use crate::proto::{TaskDecide, TaskInfo};
use crate::server::ApiError;
use crate::sys::lock;

/// How long a request waits when the server did not say.
pub(super) const DEFAULT_TIMEOUT: Duration = Duration::from_secs(30 * 60);
/// Most requests open at once; more are denied at once (an agent cannot grow the daemon).
const MAX_OPEN: usize = 64;
/// Longest reason kept.
const MAX_REASON: usize = 4096;

/// `by` of decisions made by a standing rule.
pub(super) const BY_RULE: &str = "always-for-this-task";
/// `by` of decisions made by the timeout.
pub(super) const BY_TIMEOUT: &str = "timeout";

/// The answer to one request, for the running turn to write to its agent.
#[derive(Debug)]
pub(super) struct Answer {
    pub(super) id: String,
    pub(super) approve: bool,
    pub(super) message: String,
}

/// A task's approval state.
pub(super) struct Approvals {
    pub(super) timeout: Duration,
    /// Open request id → its tool.
    open: HashMap<String, String>,
    /// Tools approved for the rest of the task.
    always: HashSet<String>,
    /// The running turn's answer channel (`None` between turns).
    pub(super) answers: Option<mpsc::UnboundedSender<Answer>>,
}

impl Approvals {
    pub(super) fn new(timeout: Duration) -> Self {
        Approvals {
            timeout,
            open: HashMap::new(),
            always: HashSet::new(),
            answers: None,
        }
    }

    /// The turn is over: its open requests die with its agent.
    pub(super) fn end_turn(&mut self) {
        self.open.clear();
        self.answers = None;
    }
}

impl Task {
    /// Takes an agent's request: held open (the task goes `waiting`, with a timeout), or answered
    /// at once by a standing rule of the task or because too many are open.
    pub(super) fn request_approval(
        self: &Arc<Self>,
        inner: &mut Inner,
        mut request: ApprovalRequest,
    ) {
        if inner.approvals.answers.is_none() {
            // No permission protocol runs in this turn, so nothing could answer it.
            self.push(
                inner,
                EventKind::Log {
                    line:
                        "berth: ignored a permission request: the task's approval policy is never"
                            .into(),
                },
            );
            return;
        }
        if let Some(p) = request.path.as_deref().map(Path::new) {
            if p.is_absolute() && !p.starts_with(&inner.spec.cwd) {
                request
                    .risks
                    .push("writes outside the working directory".to_owned());
            }
        }
        let id = request.id.clone();
        let tool = request.tool.clone();
        if inner.approvals.open.contains_key(&id) {
            return;
        }
        self.push(inner, EventKind::ApprovalRequest { request });
        let auto = if inner.approvals.always.contains(&tool) {
            Some((true, None, BY_RULE))
        } else if inner.approvals.open.len() >= MAX_OPEN {
            Some((
                false,
                Some(format!("more than {MAX_OPEN} permission requests are open")),
                "berth",
            ))
        } else {
            None
        };
        if let Some((approve, reason, by)) = auto {
            inner.approvals.open.insert(id.clone(), tool);
            self.resolve(inner, &id, approve, reason, by);
            return;
        }
        inner.approvals.open.insert(id.clone(), tool);
        self.transition(inner, TaskState::Waiting, None);
        let timeout = inner.approvals.timeout;
        let task = Arc::clone(self);
        tokio::spawn(async move {
            tokio::time::sleep(timeout).await;
            let reason = format!(
                "no decision within {}; denied by berth's approval timeout",
                human(timeout)
            );
            let mut inner = lock(&task.inner);
            if inner.approvals.open.contains_key(&id) {
                tracing::info!(task = %task.id, request = %id, "approval timed out");
                task.resolve(&mut inner, &id, false, Some(reason), BY_TIMEOUT);
            }
        });
    }

    /// A decision from the server.
    pub(crate) fn decide(&self, req: TaskDecide) -> Result<TaskInfo, ApiError> {
        let mut inner = lock(&self.inner);
        let Some(tool) = inner.approvals.open.get(&req.request).cloned() else {
            return Err(ApiError::not_found(format!(
                "task {:?} has no pending request {:?}",
                self.id, req.request
            )));
        };
        if req.always && req.approve {
            inner.approvals.always.insert(tool);
        }
        let mut by = req.by;
        berth_domain::approval::cut(&mut by, MAX_REASON);
        let reason = req.reason.map(|mut r| {
            berth_domain::approval::cut(&mut r, MAX_REASON);
            r
        });
        self.resolve(&mut inner, &req.request, req.approve, reason, &by);
        Ok(self.info_locked(&inner))
    }

    /// Closes request `id`: the event, the answer to the turn, and back to `running` once no
    /// request is open.
    fn resolve(
        &self,
        inner: &mut Inner,
        id: &str,
        approve: bool,
        reason: Option<String>,
        by: &str,
    ) {
        if inner.approvals.open.remove(id).is_none() {
            return;
        }
        let decision = if approve {
            ApprovalDecision::Approved
        } else {
            ApprovalDecision::Denied
        };
        let message = reason.clone().unwrap_or_else(|| format!("denied by {by}"));
        self.push(
            inner,
            EventKind::ApprovalResolved {
                id: id.to_owned(),
                decision,
                reason,
                by: Some(by.to_owned()),
            },
        );
        if let Some(tx) = &inner.approvals.answers {
            let _ = tx.send(Answer {
                id: id.to_owned(),
                approve,
                message,
            });
        }
        if inner.approvals.open.is_empty() && inner.state == TaskState::Waiting {
            self.transition(inner, TaskState::Running, None);
        }
    }
}

/// `30 minutes`, `90 seconds`.
fn human(d: Duration) -> String {
    let s = d.as_secs();
    if s >= 60 && s.is_multiple_of(60) {
        format!("{} minute{}", s / 60, if s == 60 { "" } else { "s" })
    } else {
        format!("{s} second{}", if s == 1 { "" } else { "s" })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations_read_well() {
        assert_eq!(human(Duration::from_secs(1800)), "30 minutes");
        assert_eq!(human(Duration::from_secs(60)), "1 minute");
        assert_eq!(human(Duration::from_secs(3)), "3 seconds");
    }
}
