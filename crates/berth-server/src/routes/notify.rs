//! `/notifications`: the caller's subscriptions (create with the signing secret shown once,
//! list, show, remove), a test send, the delivery log, and the browser stream of the tenant's
//! events (Server-Sent Events).

use std::sync::Arc;

use axum::extract::{Path, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::IntoResponse;
use axum::Extension;
use berth_api as api;

use super::sse::{self, Read};
use super::{parse_body, Query};
use crate::auth::Actor;
use crate::error::ApiResult;
use crate::notify;
use crate::state::AppState;

/// The caller's notification subscriptions (every one for an admin).
#[utoipa::path(get, path = "/api/v1/notifications/subscriptions", operation_id = "list_subscriptions", tag = "notifications",
    responses((status = 200, body = [api::Subscription], description = "the caller's own subscriptions; every one for an admin")),
    security(("bearer" = [])))]
pub async fn list(
    State(state): State<Arc<AppState>>,
    Extension(actor): Extension<Actor>,
) -> ApiResult<axum::Json<Vec<api::Subscription>>> {
    let all = notify::list(&state, &actor).await?;
    Ok(axum::Json(all.into_iter().map(notify::to_api).collect()))
}

/// Subscribes a webhook, Slack webhook, ntfy topic or browser (Web Push) to notification events.
#[utoipa::path(post, path = "/api/v1/notifications/subscriptions", operation_id = "create_subscription", tag = "notifications",
    request_body = api::CreateSubscription,
    responses((status = 201, body = api::CreatedSubscription, description = "the subscription and its signing secret, shown this once"),
        (status = 400, description = "`invalid_argument`: unknown channel or kind; `keys` missing for `webpush` or given for another channel", body = api::ErrorBody),
        (status = 404, description = "`not_found`: the workspace or tenant does not exist or is another tenant's", body = api::ErrorBody),
        (status = 409, description = "`conflict`: the caller holds the most subscriptions one caller may (50), or `workspace` is not of `tenant`", body = api::ErrorBody),
        (status = 422, description = "`tenant_required`: an admin's subscription names no tenant or workspace; `url_refused`: the URL does not parse or its host does not resolve, or its host is or resolves to a loopback, private, link-local or other special-purpose address, or the server's own, and `BERTH_NOTIFY_ALLOW_PRIVATE` is not set; `invalid_push_keys`: `webpush` keys that fit the document but are no P-256 key and 16-byte secret", body = api::ErrorBody)),
    security(("bearer" = [])))]
pub async fn create(
    State(state): State<Arc<AppState>>,
    Extension(actor): Extension<Actor>,
    body: super::JsonBody,
) -> ApiResult<(StatusCode, axum::Json<api::CreatedSubscription>)> {
    let req = parse_body::<api::CreateSubscription>(&body);
    let (secret, sub) = notify::create(&state, &actor, req).await?;
    Ok((
        StatusCode::CREATED,
        axum::Json(api::CreatedSubscription {
            subscription: notify::to_api(sub),
            signing_secret: secret.map(|s| s.expose().to_owned()),
        }),
    ))
}

/// What a browser subscribes to Web Push with: berth's VAPID public key.
#[utoipa::path(get, path = "/api/v1/notifications/webpush", operation_id = "webpush_info", tag = "notifications",
    responses((status = 200, body = api::WebPushInfo, description = "the `applicationServerKey` for `PushManager.subscribe` and the contact push services see")),
    security(("bearer" = [])))]
pub async fn webpush(State(state): State<Arc<AppState>>) -> axum::Json<api::WebPushInfo> {
    axum::Json(api::WebPushInfo {
        public_key: state.notify.vapid.public_key(),
        subject: state.notify.vapid.subject().to_owned(),
    })
}

/// One notification subscription.
#[utoipa::path(get, path = "/api/v1/notifications/subscriptions/{sub}", operation_id = "show_subscription", tag = "notifications",
    params(("sub" = String, Path, description = "subscription id (`nsub_…`)")),
    responses((status = 200, body = api::Subscription),
        (status = 404, description = "`not_found`: no such subscription, or another caller's", body = api::ErrorBody)),
    security(("bearer" = [])))]
pub async fn show(
    State(state): State<Arc<AppState>>,
    Extension(actor): Extension<Actor>,
    Path(id): Path<String>,
) -> ApiResult<axum::Json<api::Subscription>> {
    Ok(axum::Json(notify::to_api(
        notify::get(&state, &actor, &id).await?,
    )))
}

/// Removes a notification subscription.
#[utoipa::path(delete, path = "/api/v1/notifications/subscriptions/{sub}", operation_id = "remove_subscription", tag = "notifications",
    params(("sub" = String, Path, description = "subscription id (`nsub_…`)")),
    responses((status = 204, description = "removed, with its delivery log"),
        (status = 404, description = "`not_found`: no such subscription, or another caller's", body = api::ErrorBody)),
    security(("bearer" = [])))]
pub async fn remove(
    State(state): State<Arc<AppState>>,
    Extension(actor): Extension<Actor>,
    Path(id): Path<String>,
) -> ApiResult<StatusCode> {
    notify::remove(&state, &actor, &id).await?;
    Ok(StatusCode::NO_CONTENT)
}

/// Sends a test event to a subscription now.
///
/// Sends a `test` event now, once (no retries), and answers with the receiver's status or the
/// error; the attempt is in the delivery log too.
#[utoipa::path(post, path = "/api/v1/notifications/subscriptions/{sub}/test", operation_id = "test_subscription", tag = "notifications",
    params(("sub" = String, Path, description = "subscription id (`nsub_…`)")),
    responses((status = 200, body = api::TestResult, description = "the attempt's result (`delivered` false when the receiver failed)"),
        (status = 404, description = "`not_found`: no such subscription, or another caller's", body = api::ErrorBody)),
    security(("bearer" = [])))]
pub async fn test(
    State(state): State<Arc<AppState>>,
    Extension(actor): Extension<Actor>,
    Path(id): Path<String>,
) -> ApiResult<axum::Json<api::TestResult>> {
    Ok(axum::Json(notify::test(&state, &actor, &id).await?))
}

/// A subscription's recent delivery attempts, newest first.
#[utoipa::path(get, path = "/api/v1/notifications/subscriptions/{sub}/deliveries", operation_id = "list_deliveries", tag = "notifications",
    params(("sub" = String, Path, description = "subscription id (`nsub_…`)"), api::DeliveriesQuery),
    responses((status = 200, body = [api::Delivery], description = "newest first, each with its attempts"),
        (status = 404, description = "`not_found`: no such subscription, or another caller's", body = api::ErrorBody)),
    security(("bearer" = [])))]
pub async fn deliveries(
    State(state): State<Arc<AppState>>,
    Extension(actor): Extension<Actor>,
    Path(id): Path<String>,
    Query(q): Query<api::DeliveriesQuery>,
) -> ApiResult<axum::Json<Vec<api::Delivery>>> {
    Ok(axum::Json(
        notify::deliveries(&state, &actor, &id, q.limit).await?,
    ))
}

/// Notification events as they happen (Server-Sent Events).
///
/// The caller's tenant's notification events as they happen (Server-Sent Events, `event:` the
/// kind, `data:` a NotificationEvent, `id:` its number). From now on, or after `?after=` /
/// `Last-Event-ID` (events are kept a day). Admins get every tenant's, or `?tenant=`'s.
#[utoipa::path(get, path = "/api/v1/notifications/stream", operation_id = "notification_stream", tag = "notifications",
    params(api::NotificationStreamQuery),
    responses((status = 200, content_type = "text/event-stream", description = "SSE of NotificationEvent")),
    security(("bearer" = [])))]
pub async fn stream(
    State(state): State<Arc<AppState>>,
    Extension(actor): Extension<Actor>,
    Query(q): Query<api::NotificationStreamQuery>,
    headers: HeaderMap,
) -> ApiResult<impl IntoResponse> {
    if let Some(t) = &q.tenant {
        crate::error::tenant_name(t)?;
    }
    let tenant = match actor.scope() {
        Some(own) => Some(own.to_owned()),
        None => q.tenant.clone(),
    };
    let rx = state.notify.subscribe();
    let resume = q.after.is_some() || headers.contains_key("last-event-id");
    let after = if resume {
        sse::resume_after(q.after.map(|a| u64::try_from(a).unwrap_or(0)), &headers)
    } else {
        u64::try_from(state.store.last_notify_event().await?).unwrap_or(0)
    };
    Ok(sse::follow(rx, after, move |after| {
        let (state, tenant) = (state.clone(), tenant.clone());
        async move {
            let after = i64::try_from(after).unwrap_or(i64::MAX);
            match state
                .store
                .notify_stream(tenant.as_deref(), after, i64::MAX, sse::BATCH)
                .await
            {
                Ok(batch) => Ok(Read::Records(
                    batch
                        .into_iter()
                        .filter_map(|e| {
                            serde_json::from_str::<api::NotificationEvent>(e.payload.as_deref()?)
                                .ok()
                        })
                        .collect(),
                )),
                Err(e) => {
                    tracing::error!(error = %e, "reading notification events");
                    Err(())
                }
            }
        }
    }))
}

impl sse::Numbered for api::NotificationEvent {
    fn number(&self) -> u64 {
        u64::try_from(self.id).unwrap_or(0)
    }
    fn kind(&self) -> String {
        self.kind.clone()
    }
    fn data(&self) -> String {
        serde_json::to_string(self).unwrap_or_default()
    }
}
