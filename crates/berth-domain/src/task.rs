//! Agent tasks: which agents exist, the task state machine, and the normalized event model every
//! agent driver translates its CLI's structured output into.

use serde::{Deserialize, Serialize};

/// The coding-agent CLIs berth drives, each through its structured headless protocol.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Agent {
    Claude,
    Codex,
    Gemini,
    Opencode,
}

impl Agent {
    pub const ALL: [Agent; 4] = [Agent::Claude, Agent::Codex, Agent::Gemini, Agent::Opencode];

    pub fn as_str(self) -> &'static str {
        match self {
            Self::Claude => "claude",
            Self::Codex => "codex",
            Self::Gemini => "gemini",
            Self::Opencode => "opencode",
        }
    }

    pub fn parse(s: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|a| a.as_str() == s)
    }

    /// The executable the agent's CLI installs.
    pub fn program(self) -> &'static str {
        self.as_str()
    }

    /// The LLM wire format the agent speaks, i.e. which gateway upstream it needs.
    pub fn provider(self) -> Provider {
        match self {
            Self::Claude => Provider::Anthropic,
            Self::Codex | Self::Opencode => Provider::Openai,
            Self::Gemini => Provider::Gemini,
        }
    }
}

impl std::fmt::Display for Agent {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// LLM providers behind the gateway.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Provider {
    Anthropic,
    Openai,
    Gemini,
}

impl Provider {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Anthropic => "anthropic",
            Self::Openai => "openai",
            Self::Gemini => "gemini",
        }
    }

    pub fn parse(s: &str) -> Option<Self> {
        [Self::Anthropic, Self::Openai, Self::Gemini]
            .into_iter()
            .find(|p| p.as_str() == s)
    }
}

/// Task lifecycle.
///
/// ```text
/// queued → starting → running → completed ──send──► running …
///                        │  ▲
///                        ▼  │ (agent asks for input mid-turn)
///                      waiting
/// any non-final ──► failed{reason} | cancelled
/// queued | starting | running | waiting ──► interrupted{reason} ──send──► starting …
/// ```
/// `completed` means the last turn ended normally; `send` continues the same conversation.
/// `interrupted` means the agent process went away with its workspace (a host or engine
/// restart, a stopped workspace) in the middle of a turn; `send` continues the same
/// conversation (the agent resumes its own session) once the workspace runs again.
/// `failed` and `cancelled` are final: nothing more can be sent.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum TaskState {
    Queued,
    Starting,
    Running,
    Waiting,
    Completed,
    Interrupted,
    Failed,
    Cancelled,
}

impl TaskState {
    pub const ALL: [TaskState; 8] = [
        Self::Queued,
        Self::Starting,
        Self::Running,
        Self::Waiting,
        Self::Completed,
        Self::Interrupted,
        Self::Failed,
        Self::Cancelled,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            Self::Queued => "queued",
            Self::Starting => "starting",
            Self::Running => "running",
            Self::Waiting => "waiting",
            Self::Completed => "completed",
            Self::Interrupted => "interrupted",
            Self::Failed => "failed",
            Self::Cancelled => "cancelled",
        }
    }

    pub fn parse(s: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|t| t.as_str() == s)
    }

    /// No further turn can happen.
    pub fn is_final(self) -> bool {
        matches!(self, Self::Failed | Self::Cancelled)
    }

    /// The current turn is over (the task is idle until a follow-up, or finished).
    pub fn is_turn_over(self) -> bool {
        matches!(
            self,
            Self::Completed | Self::Interrupted | Self::Failed | Self::Cancelled
        )
    }

    /// Whether a follow-up message may be sent now.
    pub fn accepts_message(self) -> bool {
        matches!(self, Self::Completed | Self::Waiting | Self::Interrupted)
    }

    /// Whether moving to `next` is allowed.
    pub fn can_become(self, next: TaskState) -> bool {
        use TaskState::*;
        match (self, next) {
            (a, b) if a == b => false,
            (Failed | Cancelled, _) => false,
            (_, Failed | Cancelled) => true,
            (Queued, Starting) => true,
            (Starting, Running) => true,
            (Running, Waiting | Completed) => true,
            (Waiting, Running | Completed) => true,
            (Completed, Running | Starting) => true,
            (Starting, Completed) => true,
            (Queued | Starting | Running | Waiting, Interrupted) => true,
            (Interrupted, Starting | Running) => true,
            _ => false,
        }
    }
}

impl std::fmt::Display for TaskState {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// One normalized event of a task. `seq` is per task, contiguous from 1.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct TaskEvent {
    pub seq: u64,
    /// When it happened. Events are stored as JSON: one read back loads whatever its `at`
    /// holds (see [`crate::timestamp::deserialize_stored`]).
    #[serde(deserialize_with = "crate::timestamp::deserialize_stored")]
    pub at: crate::Timestamp,
    #[serde(flatten)]
    pub kind: EventKind,
}

/// What happened, independent of which agent produced it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum EventKind {
    /// The task changed state; `reason` explains failures.
    Status {
        state: TaskState,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        reason: Option<String>,
    },
    /// The agent's own conversation id (used to resume) and model.
    Session {
        agent_session_id: String,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        model: Option<String>,
    },
    /// A user turn sent to the agent (the prompt or a follow-up).
    UserMessage {
        text: String,
    },
    /// A streaming fragment of the assistant's reply.
    MessageDelta {
        text: String,
    },
    /// A complete assistant message.
    Message {
        text: String,
    },
    Reasoning {
        text: String,
    },
    ToolCall {
        call_id: String,
        name: String,
        input: serde_json::Value,
    },
    ToolResult {
        call_id: String,
        output: String,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        exit_code: Option<i32>,
        is_error: bool,
    },
    /// A fragment of a running tool's output, in order, before its `tool_result` (which still
    /// carries the whole output). Only for agents whose protocol streams it: codex app-server's
    /// `item/commandExecution/outputDelta` (docs/tasks.md, "What each agent streams").
    ToolOutput {
        call_id: String,
        text: String,
    },
    FileChange {
        path: String,
        /// `add`, `update` or `delete`.
        change: String,
    },
    Usage {
        input_tokens: u64,
        output_tokens: u64,
        cached_input_tokens: u64,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        cost_usd: Option<f64>,
    },
    /// The agent reported an error (LLM error, tool failure of the agent itself, …).
    Error {
        message: String,
    },
    /// The turn ended; `result` is the agent's final answer when it reports one.
    TurnCompleted {
        #[serde(default, skip_serializing_if = "Option::is_none")]
        result: Option<String>,
    },
    /// The running turn was stopped to redirect the task (`berth task send --interrupt`): its
    /// agent was stopped, its open permission requests expired, and the next turn follows at
    /// once (a `user_message`) in the same conversation; the task stays `running`. `by` is who
    /// interrupted.
    TurnInterrupted {
        #[serde(default, skip_serializing_if = "Option::is_none")]
        by: Option<String>,
        /// The agent had reported no session id to resume yet, so the next turn starts a new
        /// conversation whose first message is the original prompt followed by the new one.
        #[serde(default, skip_serializing_if = "std::ops::Not::not")]
        new_conversation: bool,
    },
    /// A line of the agent's stderr (diagnostics).
    Log {
        line: String,
    },
    /// The agent asks permission (the task is `waiting` until every request is decided).
    ApprovalRequest {
        #[serde(flatten)]
        request: crate::ApprovalRequest,
    },
    /// A request was decided: by a person (`by` is who), by a standing rule of the task
    /// (`by` = `always-for-this-task`), or by its timeout (`by` = `timeout`). `reason` is what the
    /// agent was told.
    ApprovalResolved {
        id: String,
        decision: crate::ApprovalDecision,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        reason: Option<String>,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        by: Option<String>,
    },
    /// An agent event berth does not map; preserved verbatim, never dropped.
    Raw {
        data: serde_json::Value,
    },
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn event_wire_form_is_flat_with_seq() {
        let e = TaskEvent {
            seq: 3,
            at: crate::Timestamp::parse("2026-11-23T00:00:00Z").unwrap(),
            kind: EventKind::ToolCall {
                call_id: "c1".into(),
                name: "Bash".into(),
                input: serde_json::json!({"command": "ls"}),
            },
        };
        let v = serde_json::to_value(&e).unwrap();
        assert_eq!(v["seq"], 3);
        assert_eq!(v["type"], "tool_call");
        assert_eq!(v["name"], "Bash");
        let back: TaskEvent = serde_json::from_value(v).unwrap();
        assert_eq!(back, e);
    }

    #[test]
    fn approval_events_are_flat() {
        let e = TaskEvent {
            seq: 4,
            at: crate::Timestamp::parse("2026-11-23T00:00:00Z").unwrap(),
            kind: EventKind::ApprovalRequest {
                request: crate::ApprovalRequest {
                    id: "r1".into(),
                    kind: crate::ApprovalKind::Command,
                    tool: "Bash".into(),
                    summary: "run ls".into(),
                    command: Some("ls".into()),
                    path: None,
                    diff: None,
                    input: serde_json::json!({"command": "ls"}),
                    reason: None,
                    risks: vec![],
                },
            },
        };
        let v = serde_json::to_value(&e).unwrap();
        assert_eq!(v["type"], "approval_request");
        assert_eq!(v["id"], "r1");
        assert_eq!(v["kind"], "command");
        assert_eq!(v["command"], "ls");
        let back: TaskEvent = serde_json::from_value(v).unwrap();
        assert_eq!(back, e);
    }

    #[test]
    fn state_rules() {
        use TaskState::*;
        assert!(Queued.can_become(Starting));
        assert!(Running.can_become(Completed));
        assert!(Completed.can_become(Running));
        assert!(!Cancelled.can_become(Running));
        assert!(!Failed.can_become(Completed));
        assert!(Running.can_become(Cancelled));
        assert!(!Queued.can_become(Completed));
        assert!(Completed.accepts_message());
        assert!(!Failed.accepts_message());
        assert!(!Running.accepts_message());
        assert!(Running.can_become(Interrupted));
        assert!(Waiting.can_become(Interrupted));
        assert!(!Completed.can_become(Interrupted));
        assert!(Interrupted.can_become(Starting));
        assert!(Interrupted.can_become(Cancelled));
        assert!(Interrupted.accepts_message());
        assert!(Interrupted.is_turn_over() && !Interrupted.is_final());
        for s in TaskState::ALL {
            assert_eq!(TaskState::parse(s.as_str()), Some(s));
        }
    }

    #[test]
    fn agents() {
        for a in Agent::ALL {
            assert_eq!(Agent::parse(a.as_str()), Some(a));
        }
        assert_eq!(Agent::parse("cursor"), None);
        assert_eq!(Agent::Codex.provider(), Provider::Openai);
    }
}
