//! The API's error type: every failure becomes `{"error":{"code","message"}}` with a stable code.

use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::Json;
use berth_api::{ErrorBody, ErrorDetail};
use berth_daemon::DaemonError;
use berth_domain::ErrorCode;
use berth_runtime::RuntimeError;
use berth_store::StoreError;

#[derive(Debug)]
pub struct ApiError {
    pub code: ErrorCode,
    pub message: String,
}

pub type ApiResult<T> = Result<T, ApiError>;

impl ApiError {
    pub fn new(code: ErrorCode, message: impl Into<String>) -> Self {
        Self {
            code,
            message: message.into(),
        }
    }

    pub fn invalid(message: impl Into<String>) -> Self {
        Self::new(ErrorCode::InvalidArgument, message)
    }

    pub fn not_found(message: impl Into<String>) -> Self {
        Self::new(ErrorCode::NotFound, message)
    }

    pub fn internal(err: impl std::fmt::Display) -> Self {
        // Details go to the log, not to the client.
        tracing::error!(error = %err, "internal error");
        Self::new(
            ErrorCode::Internal,
            "internal error; see the berth server log for details",
        )
    }

    pub fn body(&self) -> ErrorBody {
        ErrorBody {
            error: ErrorDetail {
                code: self.code.as_str().to_owned(),
                message: self.message.clone(),
            },
        }
    }
}

impl std::fmt::Display for ApiError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{} ({})", self.message, self.code)
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let status = StatusCode::from_u16(self.code.http_status())
            .unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
        (status, Json(self.body())).into_response()
    }
}

impl From<StoreError> for ApiError {
    fn from(e: StoreError) -> Self {
        match e {
            StoreError::Conflict(what) => {
                Self::new(ErrorCode::Conflict, format!("{what} already exists"))
            }
            StoreError::NotFound(what) => Self::not_found(format!("{what} not found")),
            other => Self::internal(other),
        }
    }
}

impl From<RuntimeError> for ApiError {
    fn from(e: RuntimeError) -> Self {
        match &e {
            RuntimeError::Unreachable { .. } => {
                Self::new(ErrorCode::EngineUnavailable, e.to_string())
            }
            RuntimeError::ImageMissing(image) => Self::new(
                ErrorCode::ImageMissing,
                format!("image {image} is missing: build it with `berth image build`"),
            ),
            RuntimeError::NotFound(_) => Self::not_found(e.to_string()),
            RuntimeError::Conflict(_) => Self::new(ErrorCode::Conflict, e.to_string()),
            _ => Self::new(ErrorCode::EngineError, e.to_string()),
        }
    }
}

impl From<DaemonError> for ApiError {
    fn from(e: DaemonError) -> Self {
        match &e {
            DaemonError::Unreachable(_) => Self::new(
                ErrorCode::DaemonUnavailable,
                format!("the workspace daemon does not answer: {e}"),
            ),
            DaemonError::Incompatible { daemon, client } => Self::new(
                ErrorCode::DaemonOutdated,
                format!(
                    "this workspace runs workspace-daemon protocol {daemon} and this server speaks {client}: \
                     restart the workspace (berth workspace stop, then start) to upgrade it"
                ),
            ),
            DaemonError::NotFound(what) => Self::not_found(what.clone()),
            DaemonError::Conflict(what) => Self::new(ErrorCode::Conflict, what.clone()),
            DaemonError::Invalid(what) => Self::invalid(what.clone()),
            DaemonError::SpawnFailed(what) => Self::invalid(what.clone()),
            _ => Self::new(ErrorCode::DaemonUnavailable, format!("workspace daemon: {e}")),
        }
    }
}

/// A tenant name from a request, or the 400 naming what is wrong with it.
pub fn tenant_name(t: &str) -> ApiResult<berth_domain::Name> {
    berth_domain::Name::parse(t).map_err(|e| ApiError::invalid(format!("tenant: {e}")))
}
