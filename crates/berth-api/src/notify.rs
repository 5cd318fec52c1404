//! Wire types of notifications: subscriptions (`/api/v1/notifications/subscriptions`), their
//! delivery log, the test result, and the event payload berth's `webhook` channel posts (also
//! the `data` of the browser stream `/api/v1/notifications/stream`).

use berth_domain::Timestamp;
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

/// The event kinds a subscription may ask for.
pub const NOTIFY_KINDS: [&str; 8] = [
    "task.completed",
    "task.failed",
    "task.waiting",
    "workspace.failed",
    "workspace.oom",
    "budget.near",
    "budget.over",
    "access.request",
];

/// The channels a subscription delivers through.
pub const NOTIFY_CHANNELS: [&str; 4] = ["webhook", "slack", "ntfy", "webpush"];

/// The longest webhook URL.
pub const MAX_NOTIFY_URL: usize = 2048;

/// `POST /api/v1/notifications/subscriptions`.
#[derive(Debug, Clone, Default, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct CreateSubscription {
    /// `webhook` (berth's signed JSON), `slack` (a Slack-compatible incoming webhook), `ntfy`
    /// (a topic URL) or `webpush` (a browser's push subscription: `url` is its endpoint, with
    /// `keys`).
    #[schema(pattern = "^(webhook|slack|ntfy|webpush)$")]
    pub channel: String,
    /// Where to POST: `http` or `https`. Treated as a secret: stored encrypted, shown as
    /// `scheme://host/…` only.
    pub url: String,
    /// The browser's keys of a `webpush` subscription (`PushSubscription.toJSON().keys`);
    /// required for `webpush`, refused for the other channels.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub keys: Option<PushKeys>,
    /// The tenant to listen to: the caller's own (default), any for admins. Implied by
    /// `workspace`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tenant: Option<String>,
    /// Only this workspace's events (a name, `tenant/name` or id).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub workspace: Option<String>,
    /// Event kinds (see `NOTIFY_KINDS`); empty or absent: every kind.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub kinds: Vec<String>,
}

/// A browser's push subscription keys, base64url as `PushSubscription.toJSON()` gives them.
#[derive(Debug, Clone, Default, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct PushKeys {
    /// The browser's P-256 public key (65 bytes uncompressed).
    #[schema(pattern = "^[A-Za-z0-9_-]{86,88}={0,2}$")]
    pub p256dh: String,
    /// The browser's authentication secret (16 bytes).
    #[schema(pattern = "^[A-Za-z0-9_-]{21,24}={0,2}$")]
    pub auth: String,
}

/// `GET /api/v1/notifications/webpush`: what a browser subscribes with.
#[derive(Debug, Clone, Default, Serialize, Deserialize, ToSchema)]
pub struct WebPushInfo {
    /// berth's VAPID public key (`applicationServerKey`), base64url.
    pub public_key: String,
    /// The contact push services see (`sub` of the VAPID token).
    pub subject: String,
}

/// A subscription as lists show it (never its URL's path or its signing secret).
#[derive(Debug, Clone, Default, Serialize, Deserialize, ToSchema)]
pub struct Subscription {
    /// `nsub_…`
    pub id: String,
    /// The name of the token or person that created it (its owner).
    pub owner: String,
    pub tenant: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub workspace: Option<String>,
    /// Empty: every kind.
    pub kinds: Vec<String>,
    pub channel: String,
    /// `scheme://host[:port]/…`
    pub url: String,
    #[schema(value_type = String, format = DateTime)]
    pub created_at: Timestamp,
}

/// The answer to a create: the subscription and its signing secret, shown this once.
#[derive(Debug, Clone, Default, Serialize, Deserialize, ToSchema)]
pub struct CreatedSubscription {
    pub subscription: Subscription,
    /// HMAC-SHA256 key of the `X-Berth-Signature` header (`whsec_…`). Not shown again. A
    /// `webpush` subscription has none (the message is encrypted for the browser instead).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub signing_secret: Option<String>,
}

/// One attempt of a delivery.
#[derive(Debug, Clone, Default, Serialize, Deserialize, ToSchema)]
pub struct DeliveryAttempt {
    #[schema(value_type = String, format = DateTime)]
    pub at: Timestamp,
    /// The receiver's HTTP status; absent when no answer came.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub status: Option<u16>,
    /// Why no (good) answer came: a connection error, a timeout, a refused address.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
    pub duration_ms: u64,
    /// When the next attempt is due; absent after the last.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schema(value_type = Option<String>, format = DateTime)]
    pub next_at: Option<Timestamp>,
}

/// One event's delivery to one subscription.
#[derive(Debug, Clone, Default, Serialize, Deserialize, ToSchema)]
pub struct Delivery {
    pub id: i64,
    pub event_id: i64,
    pub kind: String,
    /// `pending` (retrying), `delivered`, `failed` (gave up) or `dropped` (the queue was full,
    /// or the owner lost access to the tenant).
    pub state: String,
    pub attempts: u32,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schema(value_type = Option<String>, format = DateTime)]
    pub next_at: Option<Timestamp>,
    #[schema(value_type = String, format = DateTime)]
    pub created_at: Timestamp,
    /// Every attempt, oldest first.
    pub log: Vec<DeliveryAttempt>,
}

/// `GET …/deliveries?limit=N` (newest first).
#[derive(Debug, Clone, Default, Serialize, Deserialize, ToSchema, utoipa::IntoParams)]
pub struct DeliveriesQuery {
    /// How many deliveries (1–200).
    #[param(minimum = 1, maximum = 200)]
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub limit: Option<i64>,
}

/// The result of `POST …/{sub}/test`: one attempt, made while the request waited.
#[derive(Debug, Clone, Default, Serialize, Deserialize, ToSchema)]
pub struct TestResult {
    /// True when the receiver answered 2xx.
    pub delivered: bool,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub status: Option<u16>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
    pub duration_ms: u64,
}

/// The task an event is about.
#[derive(Debug, Clone, Default, Serialize, Deserialize, ToSchema)]
pub struct NotificationTask {
    pub id: String,
    pub state: String,
    pub agent: String,
    /// The first 200 characters of the agent's last message (never the prompt).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_message: Option<String>,
}

/// The budget an event is about.
#[derive(Debug, Clone, Default, Serialize, Deserialize, ToSchema)]
pub struct NotificationBudget {
    /// `tenant` or `workspace`.
    pub scope: String,
    pub target: String,
    pub period: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_tokens: Option<u64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_cost_usd: Option<f64>,
    pub spent_tokens: u64,
    pub spent_cost_usd: f64,
}

/// What happened: the body of a `webhook` delivery and the `data` of a browser-stream event.
#[derive(Debug, Clone, Default, Serialize, Deserialize, ToSchema)]
pub struct NotificationEvent {
    /// The event's number (the stream's SSE id).
    pub id: i64,
    /// One of `NOTIFY_KINDS`, or `test`.
    pub kind: String,
    #[schema(value_type = String, format = DateTime)]
    pub at: Timestamp,
    /// A short title, e.g. "Task completed".
    pub title: String,
    /// One line for people.
    pub text: String,
    pub tenant: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub workspace: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub task: Option<NotificationTask>,
    /// A workspace's failure reason (`oom`, `exited`, …).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub failure: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub budget: Option<NotificationBudget>,
    /// The task or workspace in the web UI, when the server knows its public URL.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub link: Option<String>,
}

/// `GET /api/v1/notifications/stream?after=ID&tenant=T`.
#[derive(Debug, Clone, Default, Serialize, Deserialize, ToSchema, utoipa::IntoParams)]
pub struct NotificationStreamQuery {
    /// Resume after this event (else `Last-Event-ID`, else from now on).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub after: Option<i64>,
    /// Admins: only this tenant's events (others always get their own tenant's).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tenant: Option<String>,
}
