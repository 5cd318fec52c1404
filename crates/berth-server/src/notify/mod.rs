//! Notifications as a service (docs/notifications.md): subscriptions owned by the caller that
//! made them, scoped to one tenant (optionally one workspace and some event kinds), delivered
//! through a signed webhook, a Slack-compatible incoming webhook or an ntfy topic; a test
//! send; the delivery log; and the browser stream's source.
//!
//! Events come from the outbox `notify_events`, which SQLite triggers fill in the same
//! statement as the state change (task completed/failed/waiting, workspace failed, new OOM
//! kills) and the worker ([`worker`]) fills for budget crossings. The worker fans each event
//! out to the matching subscriptions whose owner may still read the tenant, and delivers with
//! retries. A subscription's URL and signing secret are sealed by the vault; lists show the URL
//! as `scheme://host/…` only and the secret is shown once, at creation.

pub mod deliver;
pub mod webpush;
pub mod worker;

use berth_api as api;
use berth_domain::notify::{Channel, Filter, NotifyKind};
use berth_domain::{Secret, TokenId};
use berth_store::{NewNotifyEvent, NotifySubscription};
use rand::RngCore;
use tokio::sync::watch;

use crate::auth::{audit, Actor};
use crate::error::{ApiError, ApiResult};
use crate::state::AppState;

/// The notifier's settings, from the environment (docs/configuration.md).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Settings {
    /// `BERTH_NOTIFY_ALLOW_PRIVATE=1`: loopback, private and link-local targets are allowed.
    pub allow_private: bool,
    /// `BERTH_NOTIFY_RETRY_BASE_MS`: the first retry's delay; each next one doubles.
    pub retry_base_ms: u64,
    /// `BERTH_NOTIFY_MAX_ATTEMPTS`: attempts per delivery, the first included.
    pub max_attempts: u32,
    /// `BERTH_NOTIFY_BUDGET_NEAR_PERCENT`: the share of a budget that is "near".
    pub near_percent: u8,
}

impl Default for Settings {
    fn default() -> Self {
        Self {
            allow_private: false,
            retry_base_ms: 20_000,
            max_attempts: 6,
            near_percent: 80,
        }
    }
}

impl Settings {
    /// Parses the raw environment values; a malformed one is an error at start-up.
    pub fn parse(env: &crate::config::EnvSettings) -> anyhow::Result<Self> {
        let d = Self::default();
        let allow_private = match env.notify_allow_private.as_deref() {
            None | Some("0" | "false" | "no") => false,
            Some("1" | "true" | "yes") => true,
            Some(other) => anyhow::bail!("BERTH_NOTIFY_ALLOW_PRIVATE: {other:?} is not 1 or 0"),
        };
        let num = |v: Option<&str>, name: &str, min: u64, max: u64, default: u64| match v {
            None => Ok(default),
            Some(s) => s
                .parse::<u64>()
                .ok()
                .filter(|n| (min..=max).contains(n))
                .ok_or_else(|| {
                    anyhow::anyhow!("{name}: {s:?} is not a number from {min} to {max}")
                }),
        };
        Ok(Self {
            allow_private,
            retry_base_ms: num(
                env.notify_retry_base_ms.as_deref(),
                "BERTH_NOTIFY_RETRY_BASE_MS",
                10,
                3_600_000,
                d.retry_base_ms,
            )?,
            max_attempts: num(
                env.notify_max_attempts.as_deref(),
                "BERTH_NOTIFY_MAX_ATTEMPTS",
                1,
                20,
                u64::from(d.max_attempts),
            )? as u32,
            near_percent: num(
                env.notify_budget_near_percent.as_deref(),
                "BERTH_NOTIFY_BUDGET_NEAR_PERCENT",
                1,
                99,
                u64::from(d.near_percent),
            )? as u8,
        })
    }
}

/// The notifier's handle in [`AppState`]: its settings, the host's own addresses (refused as
/// targets), berth's Web Push identity and the signal of the browser stream (the newest event
/// fanned out).
pub struct Notifier {
    pub settings: Settings,
    pub local: berth_egress::LocalAddrs,
    pub vapid: webpush::Vapid,
    fanned_out: watch::Sender<i64>,
}

impl Notifier {
    pub fn new(settings: Settings, vapid: webpush::Vapid) -> Self {
        Self {
            settings,
            local: berth_egress::LocalAddrs::new(),
            vapid,
            fanned_out: watch::channel(0).0,
        }
    }

    /// Changes whenever events were fanned out; holds the newest one's id.
    pub fn subscribe(&self) -> watch::Receiver<i64> {
        self.fanned_out.subscribe()
    }

    pub(crate) fn fanned_out(&self, id: i64) {
        self.fanned_out.send_replace(id);
    }
}

/// Pending deliveries a subscription may hold; older ones are dropped beyond it.
pub const MAX_PENDING: u32 = 500;
/// Deliveries (with their attempts) kept per subscription in the log.
pub const KEEP_DELIVERIES: u32 = 200;
/// Subscriptions one owner may hold.
pub const MAX_SUBSCRIPTIONS_PER_OWNER: usize = 50;
/// The delivery log's `limit`.
pub const DELIVERIES_LIMIT: api::PageLimit = api::PageLimit {
    default: 50,
    max: 200,
};

/// The vault binding of a subscription's sealed values: another subscription's ciphertext does
/// not open under this one's id.
fn seal_scope(id: &str) -> (String, String) {
    ("notify".to_owned(), id.to_owned())
}

fn random_hex(n: usize) -> String {
    let mut b = vec![0u8; n];
    rand::thread_rng().fill_bytes(&mut b);
    hex::encode(b)
}

/// The sealed URL and signing secret of a subscription, opened.
pub(crate) fn open(state: &AppState, s: &NotifySubscription) -> anyhow::Result<(Secret, Secret)> {
    let (t, n) = seal_scope(&s.id);
    let url = state
        .vault
        .open(&t, &format!("{n}.url"), &s.url_sealed.0, &s.url_sealed.1)?;
    let secret = state.vault.open(
        &t,
        &format!("{n}.secret"),
        &s.secret_sealed.0,
        &s.secret_sealed.1,
    )?;
    Ok((url, secret))
}

/// The API view of a subscription.
pub fn to_api(s: NotifySubscription) -> api::Subscription {
    api::Subscription {
        id: s.id,
        owner: s.owner_name,
        tenant: s.tenant,
        workspace: s.workspace,
        kinds: s.kinds,
        channel: s.channel,
        url: s.url_shown,
        created_at: s.created_at,
    }
}

fn parse_kinds(kinds: &[String]) -> ApiResult<Vec<NotifyKind>> {
    let mut out = Vec::new();
    for k in kinds {
        let kind = NotifyKind::parse(k)
            .filter(|k| *k != NotifyKind::Test)
            .ok_or_else(|| {
                ApiError::invalid(format!(
                    "unknown event kind {k:?}: use {}",
                    api::NOTIFY_KINDS.join(", ")
                ))
            })?;
        if !out.contains(&kind) {
            out.push(kind);
        }
    }
    Ok(out)
}

/// Creates a subscription owned by the caller; `req` is `Err` when the request was malformed
/// (recorded too). Returns the signing secret, shown this once (a Web Push subscription has
/// none: its sealed value is the browser's keys).
pub async fn create(
    state: &AppState,
    actor: &Actor,
    req: ApiResult<api::CreateSubscription>,
) -> ApiResult<(Option<Secret>, NotifySubscription)> {
    let mut shown = "(invalid request)".to_owned();
    let result = async {
        let req = req?;
        let channel = Channel::parse(&req.channel).ok_or_else(|| {
            ApiError::invalid(format!(
                "unknown channel {:?}: use {}",
                req.channel,
                api::NOTIFY_CHANNELS.join(", ")
            ))
        })?;
        let kinds = parse_kinds(&req.kinds)?;
        let push_keys = push_keys(channel, req.keys.as_ref())?;
        // Not http(s) at all does not fit the document (400); an http(s) URL that still does
        // not parse, or points somewhere refused, is 422.
        if !(req.url.starts_with("http://") || req.url.starts_with("https://")) {
            return Err(ApiError::invalid("the URL must be http or https"));
        }
        let u = deliver::parse_url(&req.url)
            .map_err(|m| ApiError::new(berth_domain::ErrorCode::UrlRefused, m))?;
        let url_shown = berth_domain::notify::shown_url(u.as_str());
        shown = url_shown.clone();
        let (tenant, workspace) = subscription_scope(state, actor, &req).await?;
        // The target is checked now too (and again at every attempt: DNS may change).
        // A refused address and a name that does not resolve are both 422: the URL fits the
        // document, the server cannot use it.
        if let Err((_, why)) =
            deliver::resolve(&u, state.notify.settings.allow_private, &state.notify.local).await
        {
            return Err(ApiError::new(berth_domain::ErrorCode::UrlRefused, why));
        }
        check_room(state, actor).await?;
        let id = format!("nsub_{}", random_hex(12));
        let signing = push_keys
            .is_none()
            .then(|| Secret::new(format!("whsec_{}", random_hex(24))));
        let sealed = match (&push_keys, &signing) {
            (Some(k), _) => Secret::new(k.to_stored()),
            (None, Some(s)) => s.clone(),
            (None, None) => return Err(ApiError::internal("no value to seal")),
        };
        let (t, n) = seal_scope(&id);
        let url_sealed = state
            .vault
            .seal(&t, &format!("{n}.url"), &Secret::new(u.as_str()))
            .map_err(|e| ApiError::internal(e.to_string()))?;
        let secret_sealed = state
            .vault
            .seal(&t, &format!("{n}.secret"), &sealed)
            .map_err(|e| ApiError::internal(e.to_string()))?;
        let sub = NotifySubscription {
            id,
            owner: actor.id.clone(),
            owner_name: actor.name.clone(),
            tenant,
            workspace_id: workspace.as_ref().map(|w| w.id.clone()),
            workspace: workspace.as_ref().map(|w| w.qualified_name()),
            kinds: kinds.iter().map(|k| k.as_str().to_owned()).collect(),
            channel: channel.as_str().to_owned(),
            url_shown,
            url_sealed,
            secret_sealed,
            created_at: berth_domain::Timestamp::now(),
        };
        state.store.insert_notify_subscription(&sub).await?;
        shown = format!("{} {}", sub.id, sub.url_shown);
        Ok((signing, sub))
    }
    .await;
    audit(&state.store, actor, "notify.subscribe", &shown, &result).await;
    result
}

/// The browser's keys of a Web Push subscription (which needs them; no other channel takes
/// any).
fn push_keys(
    channel: Channel,
    keys: Option<&api::PushKeys>,
) -> ApiResult<Option<webpush::PushKeys>> {
    Ok(match (channel, keys) {
        (Channel::WebPush, Some(k)) => Some(
            webpush::PushKeys::parse(&k.p256dh, &k.auth)
                .map_err(|m| ApiError::new(berth_domain::ErrorCode::InvalidPushKeys, m))?,
        ),
        (Channel::WebPush, None) => {
            return Err(ApiError::invalid(
                "a webpush subscription needs the browser's keys (p256dh, auth)",
            ))
        }
        (_, Some(_)) => return Err(ApiError::invalid("keys are for webpush subscriptions only")),
        (_, None) => None,
    })
}

/// What a new subscription covers: the tenant (by name) and, when one is named, the
/// workspace. A workspace of another tenant than the one named is 409; an admin names one or
/// the other (422 `tenant_required`); a tenant's caller gets its own tenant by default.
async fn subscription_scope(
    state: &AppState,
    actor: &Actor,
    req: &api::CreateSubscription,
) -> ApiResult<(String, Option<berth_store::Workspace>)> {
    Ok(match (&req.workspace, &req.tenant) {
        (Some(w), t) => {
            let w = crate::lifecycle::resolve(state, w).await?;
            if t.as_deref().is_some_and(|t| t != w.tenant.as_str()) {
                return Err(ApiError::new(
                    berth_domain::ErrorCode::Conflict,
                    format!(
                        "workspace {} is not of tenant {}",
                        w.qualified_name(),
                        t.as_deref().unwrap_or_default()
                    ),
                ));
            }
            (w.tenant.to_string(), Some(w))
        }
        (None, Some(t)) => {
            let n = crate::error::tenant_name(t)?;
            actor.check_tenant(n.as_str(), || format!("tenant {n}"))?;
            (n.to_string(), None)
        }
        (None, None) => match &actor.tenant {
            Some(t) => (t.to_string(), None),
            None => {
                return Err(ApiError::new(
                    berth_domain::ErrorCode::TenantRequired,
                    "an admin's subscription names its tenant or workspace",
                ))
            }
        },
    })
}

/// 409 `conflict` when the caller already holds the most subscriptions one caller may.
async fn check_room(state: &AppState, actor: &Actor) -> ApiResult<()> {
    let owned = state
        .store
        .notify_subscriptions(Some(&actor.id), None)
        .await?;
    if owned.len() >= MAX_SUBSCRIPTIONS_PER_OWNER {
        return Err(ApiError::new(
            berth_domain::ErrorCode::Conflict,
            format!(
                "you hold {MAX_SUBSCRIPTIONS_PER_OWNER} subscriptions, the most one caller may: \
                 remove one first"
            ),
        ));
    }
    Ok(())
}

/// The subscriptions the caller sees: its own; every one for an admin.
pub async fn list(state: &AppState, actor: &Actor) -> ApiResult<Vec<NotifySubscription>> {
    let owner = (!actor.is_admin()).then_some(actor.id.as_str());
    Ok(state.store.notify_subscriptions(owner, None).await?)
}

/// One subscription, if it is the caller's (or the caller is an admin); another's is a 404.
pub async fn get(state: &AppState, actor: &Actor, id: &str) -> ApiResult<NotifySubscription> {
    let nf = || ApiError::not_found(format!("subscription {id} not found"));
    let s = state.store.notify_subscription(id).await?.ok_or_else(nf)?;
    if !actor.is_admin() && s.owner != actor.id {
        return Err(nf());
    }
    Ok(s)
}

/// Removes a subscription with its delivery log.
pub async fn remove(state: &AppState, actor: &Actor, id: &str) -> ApiResult<()> {
    let result = async {
        let s = get(state, actor, id).await?;
        state.store.remove_notify_subscription(&s.id).await?;
        Ok(format!("{} {}", s.id, s.url_shown))
    }
    .await;
    let shown = result.as_ref().cloned().unwrap_or_else(|_| id.to_owned());
    audit(&state.store, actor, "notify.unsubscribe", &shown, &result).await;
    result.map(|_| ())
}

/// Sends a `test` event to the subscription now, once (no retries), and returns the result; it
/// is in the delivery log too.
pub async fn test(state: &AppState, actor: &Actor, id: &str) -> ApiResult<api::TestResult> {
    let result = async {
        let s = get(state, actor, id).await?;
        let event_id = state
            .store
            .insert_notify_event(&NewNotifyEvent {
                kind: NotifyKind::Test.as_str(),
                tenant: &s.tenant,
                workspace_id: s.workspace_id.as_ref(),
                workspace: s.workspace.as_deref(),
                detail: None,
            })
            .await?;
        let ev = state
            .store
            .notify_event(event_id)
            .await?
            .ok_or_else(|| ApiError::internal("the test event vanished"))?;
        let payload = worker::build(state, &ev).await?;
        state
            .store
            .set_notify_payload(
                event_id,
                &serde_json::to_string(&payload).unwrap_or_default(),
            )
            .await?;
        // Queued not due: the worker leaves it alone; this request makes the one attempt.
        let delivery = state
            .store
            .queue_notify_delivery(
                &s.id,
                event_id,
                NotifyKind::Test.as_str(),
                MAX_PENDING,
                false,
            )
            .await?;
        let out = worker::send(state, &s, &payload, delivery, 1, false).await?;
        Ok(api::TestResult {
            delivered: out.delivered(),
            status: out.status,
            error: out.error,
            duration_ms: out.duration_ms,
        })
    }
    .await;
    audit(&state.store, actor, "notify.test", id, &result).await;
    result
}

/// A subscription's delivery log, newest first.
pub async fn deliveries(
    state: &AppState,
    actor: &Actor,
    id: &str,
    limit: Option<i64>,
) -> ApiResult<Vec<api::Delivery>> {
    let limit = DELIVERIES_LIMIT.check(limit).map_err(ApiError::invalid)?;
    let s = get(state, actor, id).await?;
    let rows = state
        .store
        .notify_deliveries(&s.id, u32::try_from(limit).unwrap_or(50))
        .await?;
    Ok(rows
        .into_iter()
        .map(|(d, attempts)| api::Delivery {
            id: d.id,
            event_id: d.event_id,
            kind: d.kind,
            state: d.state,
            attempts: d.attempts,
            next_at: d.next_at,
            created_at: d.created_at,
            log: attempts
                .into_iter()
                .map(|a| api::DeliveryAttempt {
                    at: a.at,
                    status: a.status,
                    error: a.error,
                    duration_ms: a.duration_ms,
                    next_at: a.next_at,
                })
                .collect(),
        })
        .collect())
}

/// Whether the subscription's owner may still read `tenant`: a live token (not revoked, not
/// expired) or an enabled person, of that tenant or an admin. A subscription whose owner lost
/// access delivers nothing more.
pub async fn owner_may_read(state: &AppState, owner: &str, tenant: &str) -> ApiResult<bool> {
    if let Some(id) = TokenId::parse(owner) {
        let Some(t) = state.store.token(&id).await? else {
            return Ok(false);
        };
        if crate::auth::check_token(&t, &berth_domain::Timestamp::now()).is_err() {
            return Ok(false);
        }
        return Ok(Actor::from_token(&t).is_ok_and(|a| a.sees(tenant)));
    }
    let Some(u) = state.store.find_user(owner).await? else {
        return Ok(false);
    };
    if u.disabled_at.is_some() {
        return Ok(false);
    }
    Ok(match u.role.as_str() {
        "admin" => u.tenant.is_none(),
        _ => u.tenant.as_deref() == Some(tenant),
    })
}

/// The filter of a stored subscription.
pub fn filter(s: &NotifySubscription) -> Filter {
    Filter {
        tenant: s.tenant.clone(),
        workspace_id: s.workspace_id.clone(),
        kinds: s
            .kinds
            .iter()
            .filter_map(|k| NotifyKind::parse(k))
            .collect(),
    }
}
