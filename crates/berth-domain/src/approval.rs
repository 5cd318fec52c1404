//! Approvals: a task's policy for when its agent must ask before acting, the normalized shape of
//! an agent's permission request, and the decision on it.
//!
//! Drivers translate each CLI's own permission protocol into an [`ApprovalRequest`] (carried by
//! the `approval_request` event); the daemon holds the request until a decision (or its timeout)
//! and answers the agent in its protocol. The server caps every field it takes from a workspace
//! ([`ApprovalRequest::capped`]) since the daemon is not trusted.

use serde::{Deserialize, Serialize};

/// When a task's agent must ask before it acts.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum ApprovalPolicy {
    /// Never ask: the agent runs unattended (the container is the sandbox). The default.
    #[default]
    Never,
    /// Surface the agent's own permission requests (what its CLI would ask a user).
    OnRequest,
    /// Every command, edit and tool call asks.
    Always,
}

impl ApprovalPolicy {
    pub const ALL: [ApprovalPolicy; 3] = [Self::Never, Self::OnRequest, Self::Always];

    pub fn as_str(self) -> &'static str {
        match self {
            Self::Never => "never",
            Self::OnRequest => "on-request",
            Self::Always => "always",
        }
    }

    pub fn parse(s: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|p| p.as_str() == s)
    }

    /// Whether the agent's permission protocol is in play at all.
    pub fn asks(self) -> bool {
        self != Self::Never
    }
}

impl std::fmt::Display for ApprovalPolicy {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// What an agent asks permission for.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ApprovalKind {
    /// A shell command (`command` is set).
    Command,
    /// A file write or edit (`path`, and `diff` when the agent gave the change).
    FileEdit,
    /// Any other tool of the agent (`input` holds the arguments).
    ToolCall,
    /// A tool of an MCP server (`tool` is `mcp__server__tool` or the agent's equivalent).
    McpCall,
}

impl ApprovalKind {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Command => "command",
            Self::FileEdit => "file_edit",
            Self::ToolCall => "tool_call",
            Self::McpCall => "mcp_call",
        }
    }
}

/// Longest id of a request (the agent's own, e.g. a UUID).
pub const MAX_REQUEST_ID: usize = 128;
/// Longest short text field (tool name, summary, path, reason, a risk hint).
pub const MAX_APPROVAL_TEXT: usize = 4096;
/// Longest command or diff kept in a request.
pub const MAX_APPROVAL_BODY: usize = 64 * 1024;
/// Most risk hints kept.
pub const MAX_RISKS: usize = 8;

/// An agent's permission request, normalized. The `id` is unique within its task.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ApprovalRequest {
    pub id: String,
    pub kind: ApprovalKind,
    /// The agent's name for the tool (`Bash`, `Write`, `mcp__github__create_issue`, …).
    pub tool: String,
    /// One line saying what would happen.
    pub summary: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub command: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub path: Option<String>,
    /// The change of a file edit, in unified-diff style (`-`/`+` lines).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub diff: Option<String>,
    /// The tool's arguments as the agent gave them.
    #[serde(default)]
    pub input: serde_json::Value,
    /// Why, when the agent said.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
    /// Hints for the reviewer, e.g. `network`, `writes outside the working directory`.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub risks: Vec<String>,
}

impl ApprovalRequest {
    /// The request with every field cut to its limit (ids to [`MAX_REQUEST_ID`], short texts to
    /// [`MAX_APPROVAL_TEXT`], command and diff to [`MAX_APPROVAL_BODY`], at most [`MAX_RISKS`]
    /// hints, and an `input` whose JSON is larger than [`MAX_APPROVAL_BODY`] replaced by a note).
    pub fn capped(mut self) -> Self {
        cut(&mut self.id, MAX_REQUEST_ID);
        cut(&mut self.tool, MAX_APPROVAL_TEXT);
        cut(&mut self.summary, MAX_APPROVAL_TEXT);
        for s in [&mut self.path, &mut self.reason].into_iter().flatten() {
            cut(s, MAX_APPROVAL_TEXT);
        }
        for s in [&mut self.command, &mut self.diff].into_iter().flatten() {
            cut(s, MAX_APPROVAL_BODY);
        }
        self.risks.truncate(MAX_RISKS);
        for r in &mut self.risks {
            cut(r, MAX_APPROVAL_TEXT);
        }
        let size = serde_json::to_vec(&self.input).map_or(usize::MAX, |v| v.len());
        if size > MAX_APPROVAL_BODY {
            self.input = serde_json::json!({ "berth": format!("input of {size} bytes not kept") });
        }
        self
    }
}

/// Cuts `s` to at most `max` bytes, at a character boundary.
pub fn cut(s: &mut String, max: usize) {
    if s.len() <= max {
        return;
    }
    let mut end = max;
    while end > 0 && !s.is_char_boundary(end) {
        end -= 1;
    }
    s.truncate(end);
}

/// The outcome of a request.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ApprovalDecision {
    Approved,
    Denied,
}

impl ApprovalDecision {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Approved => "approved",
            Self::Denied => "denied",
        }
    }

    pub fn parse(s: &str) -> Option<Self> {
        [Self::Approved, Self::Denied]
            .into_iter()
            .find(|d| d.as_str() == s)
    }
}

/// A request id as the API accepts it: 1 to [`MAX_REQUEST_ID`] printable ASCII characters
/// without `/`.
pub fn valid_request_id(id: &str) -> bool {
    !id.is_empty()
        && id.len() <= MAX_REQUEST_ID
        && id.bytes().all(|b| b.is_ascii_graphic() && b != b'/')
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn policies_parse_and_default_to_never() {
        for p in ApprovalPolicy::ALL {
            assert_eq!(ApprovalPolicy::parse(p.as_str()), Some(p));
        }
        assert_eq!(ApprovalPolicy::default(), ApprovalPolicy::Never);
        assert_eq!(
            serde_json::to_value(ApprovalPolicy::OnRequest).unwrap(),
            "on-request"
        );
        assert!(ApprovalPolicy::parse("sometimes").is_none());
        assert!(!ApprovalPolicy::Never.asks() && ApprovalPolicy::Always.asks());
    }

    #[test]
    fn capped_cuts_every_field() {
        let big = "é".repeat(100_000);
        let r = ApprovalRequest {
            id: big.clone(),
            kind: ApprovalKind::Command,
            tool: big.clone(),
            summary: big.clone(),
            command: Some(big.clone()),
            path: Some(big.clone()),
            diff: Some(big.clone()),
            input: serde_json::json!({ "x": big }),
            reason: Some("why".into()),
            risks: vec!["r".into(); 100],
        }
        .capped();
        assert!(r.id.len() <= MAX_REQUEST_ID);
        assert!(r.tool.len() <= MAX_APPROVAL_TEXT && r.summary.len() <= MAX_APPROVAL_TEXT);
        assert!(r.command.unwrap().len() <= MAX_APPROVAL_BODY);
        assert!(r.diff.unwrap().len() <= MAX_APPROVAL_BODY);
        assert!(r.path.unwrap().len() <= MAX_APPROVAL_TEXT);
        assert_eq!(r.risks.len(), MAX_RISKS);
        assert!(r.input["berth"].as_str().unwrap().contains("not kept"));
        assert_eq!(r.reason.as_deref(), Some("why"));
    }

    #[test]
    fn request_ids() {
        assert!(valid_request_id("c27b5961-ca11-434e-bb2e-ded08a52785c"));
        assert!(!valid_request_id(""));
        assert!(!valid_request_id("a/b"));
        assert!(!valid_request_id("a b"));
        assert!(!valid_request_id(&"x".repeat(129)));
    }
}
