//! One egress attempt as berth records it: what the workspace tried to reach, what the policy
//! decided and why, and how many bytes moved. The egress proxy produces it and the store keeps it
//! (the API shows it with its log id). Never carries header values or secrets.

/// One egress attempt: a CONNECT (no method, no path) or one HTTP request.
#[derive(Clone, Debug, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct EgressRecord {
    /// When the attempt started.
    pub at: crate::Timestamp,
    /// The task whose traffic it was, when known.
    pub task_id: Option<String>,
    /// `None` for a CONNECT that was tunnelled or refused as a whole.
    pub method: Option<String>,
    pub host: String,
    pub port: u16,
    /// Request path with query (`None` for a CONNECT).
    pub path: Option<String>,
    /// `"allow"` or `"deny"`.
    pub decision: String,
    /// Text of the rule that decided, if one did.
    pub rule: Option<String>,
    pub reason: String,
    /// Bytes from the workspace to the origin (request body, or tunnel bytes).
    pub bytes_up: u64,
    /// Bytes from the origin to the workspace (response body, or tunnel bytes).
    pub bytes_down: u64,
    /// Whether the request was seen inside an intercepted TLS connection.
    pub intercepted: bool,
}
