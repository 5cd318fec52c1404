//! Stable error codes shared by the API, the CLI and the docs.

use serde::{Deserialize, Serialize};

/// A stable, machine-readable error code. The wire form (`as_str`) never changes once released;
/// scripts match on it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ErrorCode {
    /// A request field is malformed or out of range.
    InvalidArgument,
    /// A declared MCP server is malformed; the message names the server and the field.
    InvalidMcpServer,
    /// No bearer token, or an unknown/revoked one.
    Unauthorized,
    /// The token is valid but may not do this.
    Forbidden,
    /// A state-changing request made with a browser session cookie lacks the session's
    /// `X-CSRF-Token` (or sends a wrong one), or comes from another origin.
    CsrfFailed,
    /// Single sign-on refused the person: no mapping matches their claims, their account is
    /// disabled, or the provider's answer did not verify.
    LoginRefused,
    /// The token's `expires_at` has passed: ask for a new one.
    TokenExpired,
    /// The token was revoked (`berth token revoke`).
    TokenRevoked,
    /// The tenant's quota (set by an admin with `berth tenant quota`) does not leave room for
    /// this; the message names the limit, what is in use and what was asked for.
    QuotaExceeded,
    /// The named object does not exist.
    NotFound,
    /// A bare workspace name matches workspaces in several tenants.
    Ambiguous,
    /// The object already exists (e.g. a workspace name in the same tenant).
    Conflict,
    /// The object is used by others (e.g. an egress template attached to workspaces); the
    /// message names them. Remove the uses first, or force it where the route offers that.
    InUse,
    /// The object is in a state that does not allow the operation.
    InvalidState,
    /// A headless turn of the task is running: it cannot be taken over interactively until
    /// the turn is over (two writers on one transcript corrupt it).
    TaskTurnRunning,
    /// The task is taken over by an interactive session (`berth task attach`): messages and
    /// another take-over wait until that session ends.
    TaskInteractive,
    /// The task asks for an approval policy (`on-request`, `always`) that its agent's driver
    /// cannot honour yet; the message names the agents that can. Use `approval: never`.
    ApprovalUnsupported,
    /// The task's agent cannot be taken over interactively without breaking the task (the
    /// message says why); continue it with messages instead.
    TakeoverUnsupported,
    /// An access request for a special-purpose address (loopback, private, link-local, …)
    /// cannot be approved: the workspace would reach the host's or the LAN's services.
    AccessRefused,
    /// The container engine cannot be reached.
    EngineUnavailable,
    /// The workspace image is not present in the engine.
    ImageMissing,
    /// The agent's LLM provider has no upstream configured on the server (no API key), so its
    /// calls through the gateway would fail; the message names the provider and the variable
    /// to set.
    ProviderUnconfigured,
    /// The container engine refused or failed the operation.
    EngineError,
    /// The workspace daemon does not answer.
    DaemonUnavailable,
    /// The workspace runs a daemon speaking an older protocol.
    DaemonOutdated,
    /// Too much at once (e.g. a budget's remainder is reserved by calls in flight); retry later.
    RateLimited,
    /// The server's data directory is below its free-space threshold: new workspaces (and
    /// restores) are refused until space is freed.
    InsufficientStorage,
    /// A resource limit asks for more than the host has (e.g. `memory: 1024g` on a host with
    /// 23 GiB); the message names the host's capacity.
    ExceedsCapacity,
    /// The route exists but not with this HTTP method; the `Allow` header lists the methods.
    MethodNotAllowed,
    /// A notification URL is refused: its host is (or resolves to) a loopback, private,
    /// link-local or other special-purpose address, or one of the server's own, and the server
    /// does not allow those (`BERTH_NOTIFY_ALLOW_PRIVATE`).
    UrlRefused,
    /// A Web Push subscription's `keys` are not a browser's: `p256dh` is no P-256 public key
    /// or `auth` is not 16 bytes.
    InvalidPushKeys,
    /// The request needs a tenant and the caller's token has none (an admin's): name one.
    TenantRequired,
    /// The request body is larger than the route accepts.
    PayloadTooLarge,
    /// The request body is not `application/json` (or the media type the route documents).
    UnsupportedMediaType,
    /// A workspace template file is invalid; the message names the key path (e.g.
    /// `setup[2].timeout`) and what is wrong.
    TemplateInvalid,
    /// A workspace create from a template lacks a required parameter, or gives one the
    /// template does not declare.
    ParamMissing,
    /// The workspace is still being provisioned from its template (or its provisioning
    /// failed): agents and tasks start once setup has finished.
    Provisioning,
    /// The task's repository has no such remote (`berth task push|pr --remote`).
    GitRemoteMissing,
    /// There is no branch to push or to open a pull request from (or onto): the task's
    /// directory is on a detached HEAD, a branch name is not one git accepts, or the base
    /// branch cannot be told; the message says which and what to pass.
    GitBranchMissing,
    /// The push would change nothing: the task made no commits, or the remote branch already
    /// holds them.
    NothingToPush,
    /// The git server refused the push, or it could not be made; the message is git's one-line
    /// reason (e.g. `[rejected] (fetch first)`, an authentication failure).
    PushRejected,
    /// The remote's host is no pull-request provider berth knows (GitHub, GitLab, Azure
    /// DevOps, or a self-hosted one the operator configured).
    ForgeUnknown,
    /// No secret bound to the task's workspace may be used for the provider's API (none names
    /// the API host, or the one named does not); the message names the host.
    ForgeCredential,
    /// The pull-request provider refused the request or could not be reached; the message has
    /// its status and its own message.
    ForgeError,
    /// Something failed inside berth; details are in the server log.
    Internal,
}

impl ErrorCode {
    /// The wire form, e.g. `invalid_argument`.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::InvalidArgument => "invalid_argument",
            Self::InvalidMcpServer => "invalid_mcp_server",
            Self::Unauthorized => "unauthorized",
            Self::Forbidden => "forbidden",
            Self::CsrfFailed => "csrf_failed",
            Self::LoginRefused => "login_refused",
            Self::TokenExpired => "token_expired",
            Self::TokenRevoked => "token_revoked",
            Self::QuotaExceeded => "quota_exceeded",
            Self::NotFound => "not_found",
            Self::Ambiguous => "ambiguous",
            Self::Conflict => "conflict",
            Self::InUse => "in_use",
            Self::InvalidState => "invalid_state",
            Self::TaskTurnRunning => "task_turn_running",
            Self::TaskInteractive => "task_interactive",
            Self::TakeoverUnsupported => "takeover_unsupported",
            Self::ApprovalUnsupported => "approval_unsupported",
            Self::AccessRefused => "access_refused",
            Self::EngineUnavailable => "engine_unavailable",
            Self::ImageMissing => "image_missing",
            Self::ProviderUnconfigured => "provider_unconfigured",
            Self::EngineError => "engine_error",
            Self::DaemonUnavailable => "daemon_unavailable",
            Self::DaemonOutdated => "daemon_outdated",
            Self::RateLimited => "rate_limited",
            Self::InsufficientStorage => "insufficient_storage",
            Self::ExceedsCapacity => "exceeds_capacity",
            Self::MethodNotAllowed => "method_not_allowed",
            Self::UrlRefused => "url_refused",
            Self::TenantRequired => "tenant_required",
            Self::InvalidPushKeys => "invalid_push_keys",
            Self::PayloadTooLarge => "payload_too_large",
            Self::UnsupportedMediaType => "unsupported_media_type",
            Self::TemplateInvalid => "template_invalid",
            Self::ParamMissing => "param_missing",
            Self::Provisioning => "provisioning",
            Self::GitRemoteMissing => "git_remote_missing",
            Self::GitBranchMissing => "git_branch_missing",
            Self::NothingToPush => "nothing_to_push",
            Self::PushRejected => "push_rejected",
            Self::ForgeUnknown => "forge_unknown",
            Self::ForgeCredential => "forge_credential",
            Self::ForgeError => "forge_error",
            Self::Internal => "internal",
        }
    }

    /// The HTTP status this code is served with.
    pub fn http_status(self) -> u16 {
        match self {
            Self::InvalidArgument => 400,
            Self::Unauthorized | Self::TokenExpired | Self::TokenRevoked => 401,
            Self::Forbidden | Self::CsrfFailed | Self::LoginRefused => 403,
            Self::NotFound => 404,
            Self::MethodNotAllowed => 405,
            Self::PayloadTooLarge => 413,
            Self::UnsupportedMediaType => 415,
            // Well-formed (the OpenAPI document takes them) but unusable: what the server
            // checks beyond what a schema can say.
            Self::ExceedsCapacity
            | Self::TakeoverUnsupported
            | Self::ApprovalUnsupported
            | Self::AccessRefused
            | Self::UrlRefused
            | Self::InvalidMcpServer
            | Self::TemplateInvalid
            | Self::ParamMissing
            | Self::TenantRequired
            | Self::InvalidPushKeys
            | Self::GitRemoteMissing
            | Self::GitBranchMissing
            | Self::ForgeUnknown
            | Self::ForgeCredential => 422,
            Self::Ambiguous
            | Self::Conflict
            | Self::InUse
            | Self::InvalidState
            | Self::TaskTurnRunning
            | Self::TaskInteractive
            | Self::DaemonOutdated
            | Self::Provisioning
            | Self::NothingToPush
            | Self::PushRejected
            | Self::QuotaExceeded => 409,
            Self::ImageMissing | Self::ProviderUnconfigured => 424,
            Self::RateLimited => 429,
            Self::EngineUnavailable | Self::DaemonUnavailable => 503,
            Self::EngineError | Self::ForgeError => 502,
            Self::InsufficientStorage => 507,
            Self::Internal => 500,
        }
    }
}

impl ErrorCode {
    /// The code for an HTTP error status that no berth handler chose (a rejection of the HTTP
    /// layer: unknown route, wrong method, body too large, bad path encoding). Other 4xx become
    /// `invalid_argument`, other 5xx `internal`.
    pub fn for_status(status: u16) -> Self {
        match status {
            401 => Self::Unauthorized,
            403 => Self::Forbidden,
            404 => Self::NotFound,
            405 => Self::MethodNotAllowed,
            413 => Self::PayloadTooLarge,
            415 => Self::UnsupportedMediaType,
            400..=499 => Self::InvalidArgument,
            _ => Self::Internal,
        }
    }
}

impl std::fmt::Display for ErrorCode {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const ALL: [ErrorCode; 45] = [
        ErrorCode::InvalidPushKeys,
        ErrorCode::InvalidArgument,
        ErrorCode::InvalidMcpServer,
        ErrorCode::ApprovalUnsupported,
        ErrorCode::Unauthorized,
        ErrorCode::Forbidden,
        ErrorCode::CsrfFailed,
        ErrorCode::LoginRefused,
        ErrorCode::TokenExpired,
        ErrorCode::TokenRevoked,
        ErrorCode::QuotaExceeded,
        ErrorCode::NotFound,
        ErrorCode::Ambiguous,
        ErrorCode::Conflict,
        ErrorCode::InUse,
        ErrorCode::InvalidState,
        ErrorCode::TaskTurnRunning,
        ErrorCode::TaskInteractive,
        ErrorCode::TakeoverUnsupported,
        ErrorCode::AccessRefused,
        ErrorCode::EngineUnavailable,
        ErrorCode::ImageMissing,
        ErrorCode::ProviderUnconfigured,
        ErrorCode::EngineError,
        ErrorCode::DaemonUnavailable,
        ErrorCode::DaemonOutdated,
        ErrorCode::RateLimited,
        ErrorCode::InsufficientStorage,
        ErrorCode::ExceedsCapacity,
        ErrorCode::MethodNotAllowed,
        ErrorCode::PayloadTooLarge,
        ErrorCode::UnsupportedMediaType,
        ErrorCode::UrlRefused,
        ErrorCode::TenantRequired,
        ErrorCode::TemplateInvalid,
        ErrorCode::ParamMissing,
        ErrorCode::Provisioning,
        ErrorCode::GitRemoteMissing,
        ErrorCode::GitBranchMissing,
        ErrorCode::NothingToPush,
        ErrorCode::PushRejected,
        ErrorCode::ForgeUnknown,
        ErrorCode::ForgeCredential,
        ErrorCode::ForgeError,
        ErrorCode::Internal,
    ];

    #[test]
    fn wire_form_matches_serde() {
        for code in ALL {
            let json = serde_json::to_string(&code).unwrap();
            assert_eq!(json, format!("\"{}\"", code.as_str()));
        }
    }

    #[test]
    fn statuses() {
        for code in ALL {
            let s = code.http_status();
            assert!((400..600).contains(&s), "{code}: {s}");
        }
        assert_eq!(ErrorCode::InvalidArgument.http_status(), 400);
        assert_eq!(ErrorCode::NotFound.http_status(), 404);
        assert_eq!(ErrorCode::InUse.http_status(), 409);
        assert_eq!(ErrorCode::TaskTurnRunning.http_status(), 409);
        assert_eq!(ErrorCode::TaskInteractive.http_status(), 409);
        assert_eq!(ErrorCode::TakeoverUnsupported.http_status(), 422);
        assert_eq!(ErrorCode::EngineUnavailable.http_status(), 503);
        assert_eq!(ErrorCode::InsufficientStorage.http_status(), 507);
        assert_eq!(ErrorCode::MethodNotAllowed.http_status(), 405);
        assert_eq!(ErrorCode::PayloadTooLarge.http_status(), 413);
        assert_eq!(ErrorCode::UnsupportedMediaType.http_status(), 415);
        assert_eq!(ErrorCode::ExceedsCapacity.http_status(), 422);
        assert_eq!(ErrorCode::TokenExpired.http_status(), 401);
        assert_eq!(ErrorCode::TokenRevoked.http_status(), 401);
        assert_eq!(ErrorCode::QuotaExceeded.http_status(), 409);
    }

    #[test]
    fn from_status_is_the_inverse_for_the_generic_codes() {
        for code in [
            ErrorCode::InvalidArgument,
            ErrorCode::Unauthorized,
            ErrorCode::Forbidden,
            ErrorCode::NotFound,
            ErrorCode::MethodNotAllowed,
            ErrorCode::PayloadTooLarge,
            ErrorCode::UnsupportedMediaType,
            ErrorCode::Internal,
        ] {
            assert_eq!(ErrorCode::for_status(code.http_status()), code);
        }
        // Statuses without a code of their own: 4xx are the client's, 5xx berth's.
        assert_eq!(ErrorCode::for_status(426), ErrorCode::InvalidArgument);
        assert_eq!(ErrorCode::for_status(501), ErrorCode::Internal);
    }
}
