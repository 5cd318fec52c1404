//! The error answer to a request: a stable [`ErrorCode`] and a message for the user.

use crate::proto::{ErrorBody, ErrorCode, Response};

/// An error answer to a request.
#[derive(Debug, Clone)]
pub(crate) struct ApiError {
    code: ErrorCode,
    pub(super) message: String,
}

impl ApiError {
    pub(super) fn new(code: ErrorCode, message: impl Into<String>) -> Self {
        ApiError {
            code,
            message: message.into(),
        }
    }
    pub(crate) fn internal(m: impl Into<String>) -> Self {
        Self::new(ErrorCode::Internal, m)
    }
    pub(crate) fn spawn_failed(m: impl Into<String>) -> Self {
        Self::new(ErrorCode::SpawnFailed, m)
    }
    pub(crate) fn invalid(m: impl Into<String>) -> Self {
        Self::new(ErrorCode::Invalid, m)
    }
    pub(crate) fn not_found(m: impl Into<String>) -> Self {
        Self::new(ErrorCode::NotFound, m)
    }
    pub(crate) fn conflict(m: impl Into<String>) -> Self {
        Self::new(ErrorCode::Conflict, m)
    }
    pub(super) fn protocol(m: impl Into<String>) -> Self {
        Self::new(ErrorCode::Protocol, m)
    }
    pub(super) fn into_response(self) -> Response {
        Response::Error(ErrorBody {
            code: self.code,
            message: self.message,
            daemon_protocol: None,
        })
    }
}
