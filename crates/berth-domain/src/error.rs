//! Stable error codes shared by the API, the CLI and the docs.

use serde::{Deserialize, Serialize};

/// A stable, machine-readable error code. The wire form (`as_str`) never changes once released;
/// scripts match on it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ErrorCode {
    /// A request field is malformed or out of range.
    InvalidArgument,
    /// No bearer token, or an unknown/revoked one.
    Unauthorized,
    /// The token is valid but may not do this.
    Forbidden,
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
    /// The container engine cannot be reached.
    EngineUnavailable,
    /// The workspace image is not present in the engine.
    ImageMissing,
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
    /// Something failed inside berth; details are in the server log.
    Internal,
}

impl ErrorCode {
    /// The wire form, e.g. `invalid_argument`.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::InvalidArgument => "invalid_argument",
            Self::Unauthorized => "unauthorized",
            Self::Forbidden => "forbidden",
            Self::NotFound => "not_found",
            Self::Ambiguous => "ambiguous",
            Self::Conflict => "conflict",
            Self::InUse => "in_use",
            Self::InvalidState => "invalid_state",
            Self::EngineUnavailable => "engine_unavailable",
            Self::ImageMissing => "image_missing",
            Self::EngineError => "engine_error",
            Self::DaemonUnavailable => "daemon_unavailable",
            Self::DaemonOutdated => "daemon_outdated",
            Self::RateLimited => "rate_limited",
            Self::InsufficientStorage => "insufficient_storage",
            Self::Internal => "internal",
        }
    }

    /// The HTTP status this code is served with.
    pub fn http_status(self) -> u16 {
        match self {
            Self::InvalidArgument => 400,
            Self::Unauthorized => 401,
            Self::Forbidden => 403,
            Self::NotFound => 404,
            Self::Ambiguous
            | Self::Conflict
            | Self::InUse
            | Self::InvalidState
            | Self::DaemonOutdated => 409,
            Self::ImageMissing => 424,
            Self::RateLimited => 429,
            Self::EngineUnavailable | Self::DaemonUnavailable => 503,
            Self::EngineError => 502,
            Self::InsufficientStorage => 507,
            Self::Internal => 500,
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

    const ALL: [ErrorCode; 16] = [
        ErrorCode::InvalidArgument,
        ErrorCode::Unauthorized,
        ErrorCode::Forbidden,
        ErrorCode::NotFound,
        ErrorCode::Ambiguous,
        ErrorCode::Conflict,
        ErrorCode::InUse,
        ErrorCode::InvalidState,
        ErrorCode::EngineUnavailable,
        ErrorCode::ImageMissing,
        ErrorCode::EngineError,
        ErrorCode::DaemonUnavailable,
        ErrorCode::DaemonOutdated,
        ErrorCode::RateLimited,
        ErrorCode::InsufficientStorage,
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
        assert_eq!(ErrorCode::EngineUnavailable.http_status(), 503);
        assert_eq!(ErrorCode::InsufficientStorage.http_status(), 507);
    }
}
