//! Why the gateway did not pass a call on, and the one mapping of that to the HTTP response:
//! an error in the provider's own shape, so the agent CLI shows a sensible message, with berth's
//! stable `code` beside it.

use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use berth_domain::{Agent, ErrorCode, Provider};

use crate::policy;

/// A refusal (4xx, the code's own status) or a failure on berth's or the upstream's side (5xx,
/// code `internal`).
#[derive(Debug)]
pub(crate) enum GatewayError {
    /// Anything outside `/{provider}/{rest}`.
    NoRoute,
    UnknownProvider(String),
    NoKey,
    /// Unknown, revoked or of another workspace.
    UnknownKey,
    /// A task's key used on another provider than its agent's.
    WrongProvider {
        agent: Agent,
        own: Provider,
    },
    /// An endpoint, query or body `policy` does not allow.
    Policy(policy::Refusal),
    /// The request body could not be read (too large, broken).
    Body(String),
    /// What is left of a budget is reserved by calls in flight.
    BudgetBusy(String),
    BudgetExceeded(String),
    BudgetsUnavailable,
    KeyLookup,
    VaultKey,
    NoUpstreamKey,
    UpstreamUrl,
    Unreachable,
    BadUpstreamResponse,
}

impl GatewayError {
    /// The status and the stable code.
    fn status(&self) -> (StatusCode, ErrorCode) {
        let refused = |code: ErrorCode| {
            let status = StatusCode::from_u16(code.http_status()).unwrap_or(StatusCode::FORBIDDEN);
            (status, code)
        };
        let failed = |status: StatusCode| (status, ErrorCode::Internal);
        match self {
            Self::NoRoute | Self::UnknownProvider(_) => refused(ErrorCode::NotFound),
            Self::NoKey | Self::UnknownKey => refused(ErrorCode::Unauthorized),
            Self::WrongProvider { .. } | Self::BudgetExceeded(_) => refused(ErrorCode::Forbidden),
            Self::Policy(r) => refused(r.code),
            Self::Body(_) => refused(ErrorCode::InvalidArgument),
            Self::BudgetBusy(_) => refused(ErrorCode::RateLimited),
            Self::KeyLookup => failed(StatusCode::INTERNAL_SERVER_ERROR),
            Self::BudgetsUnavailable | Self::VaultKey | Self::NoUpstreamKey => {
                failed(StatusCode::SERVICE_UNAVAILABLE)
            }
            Self::UpstreamUrl | Self::Unreachable | Self::BadUpstreamResponse => {
                failed(StatusCode::BAD_GATEWAY)
            }
        }
    }

    /// The message, naming the provider `p` where it matters.
    fn message(&self, p: Option<Provider>) -> String {
        let name = p.map(Provider::as_str).unwrap_or_default();
        match self {
            Self::NoRoute => "berth gateway: use /{anthropic|openai|gemini}/…".into(),
            Self::UnknownProvider(provider) => {
                format!("berth gateway: unknown provider {provider:?}")
            }
            Self::NoKey => "berth gateway: no API key in the request".into(),
            Self::UnknownKey => "berth gateway: unknown, revoked or foreign virtual key (a task's key works only while its turn runs)".into(),
            Self::WrongProvider { agent, own } => format!(
                "berth gateway: this key belongs to a {agent} task and works on /{} only",
                own.as_str()
            ),
            Self::Policy(r) => r.message.clone(),
            Self::Body(e) => format!("berth gateway: request body: {e}"),
            Self::BudgetBusy(why) | Self::BudgetExceeded(why) => format!("berth gateway: {why}"),
            Self::BudgetsUnavailable => "berth gateway: budgets cannot be checked right now".into(),
            Self::KeyLookup => "berth gateway: internal error".into(),
            Self::VaultKey => format!("berth gateway: the {name} key in the vault is unavailable"),
            Self::NoUpstreamKey => format!(
                "berth gateway: no upstream key for {name} (set BERTH_{}_API_KEY on the server)",
                name.to_ascii_uppercase()
            ),
            Self::UpstreamUrl => format!("berth gateway: the {name} upstream URL is invalid"),
            Self::Unreachable => format!("berth gateway: the {name} upstream is unreachable"),
            Self::BadUpstreamResponse => "berth gateway: bad upstream response".into(),
        }
    }

    /// The response for a call to provider `p` (None: no provider known, berth's own shape).
    pub(crate) fn response(&self, p: Option<Provider>) -> Response {
        let (status, code) = self.status();
        provider_error(p, status, code, &self.message(p))
    }
}

/// An error body in the provider's shape, with `code` beside it.
fn provider_error(
    p: Option<Provider>,
    status: StatusCode,
    code: ErrorCode,
    message: &str,
) -> Response {
    let mut body = match p {
        Some(Provider::Anthropic) => serde_json::json!({
            "type": "error",
            "error": {"type": anthropic_type(status), "message": message}
        }),
        Some(Provider::Gemini) => serde_json::json!({
            "error": {"code": status.as_u16(), "message": message, "status": gemini_status(status)}
        }),
        _ => serde_json::json!({
            "error": {"message": message, "type": "berth_gateway_error", "code": code.as_str()}
        }),
    };
    body["code"] = serde_json::Value::from(code.as_str());
    (status, axum::Json(body)).into_response()
}

fn anthropic_type(status: StatusCode) -> &'static str {
    match status.as_u16() {
        400 => "invalid_request_error",
        401 => "authentication_error",
        403 => "permission_error",
        404 => "not_found_error",
        429 => "rate_limit_error",
        _ => "api_error",
    }
}

fn gemini_status(status: StatusCode) -> &'static str {
    match status.as_u16() {
        400 => "INVALID_ARGUMENT",
        401 => "UNAUTHENTICATED",
        403 => "PERMISSION_DENIED",
        404 => "NOT_FOUND",
        429 => "RESOURCE_EXHAUSTED",
        _ => "UNAVAILABLE",
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    async fn body(r: Response) -> (u16, serde_json::Value) {
        let status = r.status().as_u16();
        let bytes = axum::body::to_bytes(r.into_body(), 1 << 20).await.unwrap();
        (status, serde_json::from_slice(&bytes).unwrap())
    }

    #[tokio::test]
    async fn errors_take_the_providers_shape_with_berths_code() {
        let (s, b) = body(GatewayError::NoKey.response(Some(Provider::Anthropic))).await;
        assert_eq!(s, 401);
        assert_eq!(b["type"], "error");
        assert_eq!(b["error"]["type"], "authentication_error");
        assert_eq!(b["code"], "unauthorized");
        let (s, b) =
            body(GatewayError::BudgetBusy("busy".into()).response(Some(Provider::Gemini))).await;
        assert_eq!(s, 429);
        assert_eq!(b["error"]["status"], "RESOURCE_EXHAUSTED");
        assert_eq!(b["error"]["message"], "berth gateway: busy");
        let (s, b) = body(GatewayError::NoUpstreamKey.response(Some(Provider::Openai))).await;
        assert_eq!(s, 503);
        assert_eq!(b["error"]["type"], "berth_gateway_error");
        assert_eq!(b["code"], "internal");
        assert_eq!(
            b["error"]["message"],
            "berth gateway: no upstream key for openai (set BERTH_OPENAI_API_KEY on the server)"
        );
        let (s, b) = body(GatewayError::UnknownProvider("x".into()).response(None)).await;
        assert_eq!(s, 404);
        assert_eq!(b["code"], "not_found");
        assert_eq!(
            b["error"]["message"],
            "berth gateway: unknown provider \"x\""
        );
    }
}
