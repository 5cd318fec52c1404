//! HTTP routes under `/api/v1`. Handlers only parse and validate, then call the lifecycle or
//! the daemon; one file per resource.

pub mod backups;
pub mod egress;
pub mod egress_templates;
pub mod secrets;
pub mod sse;
pub mod system;
pub mod tasks;
pub mod terminal;
pub mod usage;
pub mod workspaces;

use std::sync::Arc;

use axum::routing::{get, post};
use axum::Router;

use crate::state::AppState;

pub fn router(state: Arc<AppState>) -> Router {
    let api = Router::new()
        .route("/version", get(system::version))
        .route("/whoami", get(system::whoami))
        .route("/doctor", get(system::doctor))
        .route("/audit", get(system::audit))
        .route("/image", get(system::image_status))
        .route("/image/build", post(system::image_build))
        .route("/openapi.json", get(crate::openapi::serve))
        .route(
            "/workspaces",
            get(workspaces::list).post(workspaces::create),
        )
        .route(
            "/workspaces/{ws}",
            get(workspaces::show).delete(workspaces::remove),
        )
        .route("/workspaces/{ws}/start", post(workspaces::start))
        .route("/workspaces/{ws}/stop", post(workspaces::stop))
        .route("/workspaces/{ws}/backup", get(backups::backup))
        .route("/backups/restore", post(backups::restore))
        .route("/workspaces/{ws}/exec", post(terminal::exec))
        .route("/workspaces/{ws}/exec/ws", get(terminal::exec_ws))
        .route(
            "/workspaces/{ws}/sessions",
            get(terminal::list_sessions).post(terminal::create_session),
        )
        .route(
            "/workspaces/{ws}/sessions/{session}",
            get(terminal::get_session).delete(terminal::remove_session),
        )
        .route(
            "/workspaces/{ws}/sessions/{session}/scrollback",
            get(terminal::scrollback),
        )
        .route(
            "/workspaces/{ws}/sessions/{session}/attach",
            get(terminal::attach),
        )
        .route("/tasks", get(tasks::list).post(tasks::create))
        .route("/tasks/{task}", get(tasks::show))
        .route("/tasks/{task}/messages", post(tasks::send))
        .route("/tasks/{task}/cancel", post(tasks::cancel))
        .route("/tasks/{task}/events", get(tasks::events))
        .route("/tasks/{task}/diff", get(tasks::diff))
        .route("/tasks/{task}/events/stream", get(tasks::stream))
        .route(
            "/workspaces/{ws}/egress/rules",
            get(egress::rules)
                .put(egress::set_rules)
                .post(egress::add_rule),
        )
        .route(
            "/workspaces/{ws}/egress/rules/{index}",
            axum::routing::delete(egress::remove_rule),
        )
        .route("/workspaces/{ws}/egress/effective", get(egress::effective))
        .route(
            "/workspaces/{ws}/egress/templates",
            get(egress_templates::attached).post(egress_templates::attach),
        )
        .route(
            "/workspaces/{ws}/egress/templates/{name}",
            axum::routing::delete(egress_templates::detach),
        )
        .route(
            "/egress/templates",
            get(egress_templates::list).post(egress_templates::create),
        )
        .route(
            "/egress/templates/{tenant}/{name}",
            get(egress_templates::show)
                .put(egress_templates::set)
                .delete(egress_templates::remove),
        )
        .route("/workspaces/{ws}/egress/log", get(egress::log))
        .route(
            "/workspaces/{ws}/egress/log/stream",
            get(egress::log_stream),
        )
        .route("/secrets", get(secrets::list))
        .route(
            "/secrets/{tenant}/{name}",
            axum::routing::put(secrets::set).delete(secrets::remove),
        )
        .route("/usage", get(usage::usage))
        .route("/usage/calls", get(usage::calls))
        .route("/usage/calls/{id}", get(usage::call))
        .route(
            "/budgets",
            get(usage::list_budgets)
                .put(usage::set_budget)
                .delete(usage::remove_budget),
        )
        .fallback(not_found)
        .layer(axum::middleware::from_fn_with_state(
            state.clone(),
            crate::auth::require_token,
        ));
    Router::new()
        .nest(berth_api::API_PREFIX, api)
        .route("/healthz", get(|| async { "ok" }))
        .fallback(crate::ui::serve)
        .with_state(state)
}

async fn not_found() -> crate::error::ApiError {
    crate::error::ApiError::not_found("no such API route")
}

/// Parses a JSON request body inside the handler (not in an extractor), so that malformed
/// requests are answered in berth's error shape *and* recorded in the audit log.
pub fn parse_body<T: serde::de::DeserializeOwned>(body: &[u8]) -> crate::error::ApiResult<T> {
    serde_json::from_slice(body)
        .map_err(|e| crate::error::ApiError::invalid(format!("invalid request body: {e}")))
}

/// Query-string rejections in berth's error shape.
pub struct Query<T>(pub T);

impl<S, T> axum::extract::FromRequestParts<S> for Query<T>
where
    T: serde::de::DeserializeOwned,
    S: Send + Sync,
{
    type Rejection = crate::error::ApiError;

    async fn from_request_parts(
        parts: &mut axum::http::request::Parts,
        state: &S,
    ) -> Result<Self, Self::Rejection> {
        match axum::extract::Query::<T>::from_request_parts(parts, state).await {
            Ok(axum::extract::Query(v)) => Ok(Query(v)),
            Err(rej) => Err(crate::error::ApiError::invalid(format!(
                "invalid query: {}",
                rej.body_text()
            ))),
        }
    }
}
