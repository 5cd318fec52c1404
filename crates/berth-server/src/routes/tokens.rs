//! `/tokens`: create (the token shown once), list, revoke.

use std::sync::Arc;

use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::Extension;
use berth_api as api;

use super::parse_body;
use crate::auth::Actor;
use crate::error::ApiResult;
use crate::state::AppState;
use crate::tokens;

/// API tokens of the tenant (every tenant's for an admin), without their values.
#[utoipa::path(get, path = "/api/v1/tokens", operation_id = "list_tokens", tag = "tokens",
    responses((status = 200, body = [api::TokenInfo], description = "all tokens for an admin, the tenant's for an owner"),
        (status = 403, description = "`forbidden`: needs the owner role", body = api::ErrorBody)),
    security(("bearer" = [])))]
pub async fn list(
    State(state): State<Arc<AppState>>,
    Extension(actor): Extension<Actor>,
) -> ApiResult<axum::Json<Vec<api::TokenInfo>>> {
    let all = tokens::list(&state, &actor).await?;
    Ok(axum::Json(all.into_iter().map(tokens::to_api).collect()))
}

/// Creates an API token; its value is in this answer only.
#[utoipa::path(post, path = "/api/v1/tokens", operation_id = "create_token", tag = "tokens", request_body = api::CreateToken,
    responses((status = 201, body = api::CreatedToken, description = "the token, shown this once"),
        (status = 400, body = api::ErrorBody),
        (status = 403, description = "`forbidden`: needs the owner role, or admin for an admin token", body = api::ErrorBody),
        (status = 404, description = "`not_found`: another tenant than the caller's", body = api::ErrorBody)),
    security(("bearer" = [])))]
pub async fn create(
    State(state): State<Arc<AppState>>,
    Extension(actor): Extension<Actor>,
    body: super::JsonBody,
) -> ApiResult<(StatusCode, axum::Json<api::CreatedToken>)> {
    let req = parse_body::<api::CreateToken>(&body);
    let (token, rec) = tokens::create(&state, &actor, req).await?;
    Ok((
        StatusCode::CREATED,
        axum::Json(api::CreatedToken {
            token: token.expose().to_owned(),
            info: tokens::to_api(rec),
        }),
    ))
}

/// Revokes an API token.
#[utoipa::path(delete, path = "/api/v1/tokens/{id}", operation_id = "revoke_token", tag = "tokens",
    params(("id" = String, Path, description = "token id (`tok_…`)")),
    responses((status = 200, body = api::TokenInfo, description = "the revoked token"),
        (status = 403, body = api::ErrorBody), (status = 404, body = api::ErrorBody),
        (status = 409, description = "`conflict`: the last admin token", body = api::ErrorBody)),
    security(("bearer" = [])))]
pub async fn revoke(
    State(state): State<Arc<AppState>>,
    Extension(actor): Extension<Actor>,
    Path(id): Path<String>,
) -> ApiResult<axum::Json<api::TokenInfo>> {
    let rec = tokens::revoke(&state, &actor, &id).await?;
    Ok(axum::Json(tokens::to_api(rec)))
}
