//! Notifications, the pure part: the kinds of events berth notifies about, the channels a
//! subscription delivers through, which subscription an event matches, the retry schedule of a
//! delivery, the budget level crossed, and how a webhook URL is shown (scheme and host only:
//! Slack's incoming-webhook URLs carry their secret in the path).

use crate::WorkspaceId;

/// What happened.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum NotifyKind {
    TaskCompleted,
    TaskFailed,
    /// A task waits for a person (an approval request).
    TaskWaiting,
    WorkspaceFailed,
    WorkspaceOom,
    /// A budget's spend reached the "near" share of its limit (80% unless configured).
    BudgetNear,
    /// A budget's spend reached its limit.
    BudgetOver,
    /// A workspace was denied egress, or asked for access (an access request to decide).
    AccessRequest,
    /// Sent by `POST /notifications/subscriptions/{sub}/test` only.
    Test,
}

impl NotifyKind {
    /// Every kind a subscription may ask for (`test` is always delivered to its one target).
    pub const SUBSCRIBABLE: [NotifyKind; 8] = [
        Self::TaskCompleted,
        Self::TaskFailed,
        Self::TaskWaiting,
        Self::WorkspaceFailed,
        Self::WorkspaceOom,
        Self::BudgetNear,
        Self::BudgetOver,
        Self::AccessRequest,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            Self::TaskCompleted => "task.completed",
            Self::TaskFailed => "task.failed",
            Self::TaskWaiting => "task.waiting",
            Self::WorkspaceFailed => "workspace.failed",
            Self::WorkspaceOom => "workspace.oom",
            Self::BudgetNear => "budget.near",
            Self::BudgetOver => "budget.over",
            Self::AccessRequest => "access.request",
            Self::Test => "test",
        }
    }

    pub fn parse(s: &str) -> Option<Self> {
        Self::SUBSCRIBABLE
            .into_iter()
            .chain([Self::Test])
            .find(|k| k.as_str() == s)
    }

    /// A short human title (Slack text, ntfy `Title`, browser notification).
    pub fn title(self) -> &'static str {
        match self {
            Self::TaskCompleted => "Task completed",
            Self::TaskFailed => "Task failed",
            Self::TaskWaiting => "Task waiting for approval",
            Self::WorkspaceFailed => "Workspace failed",
            Self::WorkspaceOom => "Workspace out of memory",
            Self::BudgetNear => "Budget nearly used",
            Self::BudgetOver => "Budget used up",
            Self::AccessRequest => "Access requested",
            Self::Test => "berth test notification",
        }
    }

    /// ntfy priority (1–5): failures and waits are high, the rest default.
    pub fn priority(self) -> u8 {
        match self {
            Self::TaskFailed | Self::WorkspaceFailed | Self::WorkspaceOom | Self::BudgetOver => 4,
            Self::TaskWaiting | Self::BudgetNear | Self::AccessRequest => 4,
            Self::TaskCompleted | Self::Test => 3,
        }
    }

    /// ntfy tags (emoji short codes).
    pub fn tags(self) -> &'static str {
        match self {
            Self::TaskCompleted => "white_check_mark",
            Self::TaskFailed | Self::WorkspaceFailed | Self::WorkspaceOom => "x",
            Self::TaskWaiting => "hourglass",
            Self::BudgetNear | Self::BudgetOver => "moneybag",
            Self::AccessRequest => "key",
            Self::Test => "bell",
        }
    }
}

/// How a subscription delivers.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Channel {
    /// berth's JSON payload, signed.
    Webhook,
    /// A Slack-compatible incoming webhook: `{"text": …}`.
    Slack,
    /// An ntfy topic URL: a plain-text body with `Title`, `Priority` and `Tags` headers.
    Ntfy,
    /// A browser's push subscription (Web Push, VAPID): the endpoint of its vendor's push
    /// service and the browser's keys; the message is encrypted for the browser.
    WebPush,
}

impl Channel {
    pub const ALL: [Channel; 4] = [Self::Webhook, Self::Slack, Self::Ntfy, Self::WebPush];

    pub fn as_str(self) -> &'static str {
        match self {
            Self::Webhook => "webhook",
            Self::Slack => "slack",
            Self::Ntfy => "ntfy",
            Self::WebPush => "webpush",
        }
    }

    pub fn parse(s: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|c| c.as_str() == s)
    }
}

/// What a subscription listens to: its tenant, optionally one workspace, and the kinds (none:
/// every kind).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Filter {
    pub tenant: String,
    /// A workspace id; `None`: every workspace of the tenant.
    pub workspace_id: Option<WorkspaceId>,
    pub kinds: Vec<NotifyKind>,
}

impl Filter {
    /// Whether an event of `kind` in `tenant` (and `workspace_id`, if it concerns one) matches.
    /// A workspace filter matches only events of that workspace (a tenant's budget event has
    /// no workspace and does not match it).
    pub fn matches(
        &self,
        kind: NotifyKind,
        tenant: &str,
        workspace_id: Option<&WorkspaceId>,
    ) -> bool {
        self.tenant == tenant
            && kind != NotifyKind::Test
            && self
                .workspace_id
                .as_ref()
                .is_none_or(|w| workspace_id == Some(w))
            && (self.kinds.is_empty() || self.kinds.contains(&kind))
    }
}

/// The retry schedule: after failed attempt `n` (1-based) of `max_attempts`, wait
/// `base · 2^(n-1)`, capped at one hour; `None` after the last attempt.
pub fn backoff_ms(attempt: u32, max_attempts: u32, base_ms: u64) -> Option<u64> {
    if attempt == 0 || attempt >= max_attempts {
        return None;
    }
    let factor = 1u64.checked_shl(attempt - 1).unwrap_or(u64::MAX);
    Some(base_ms.saturating_mul(factor).min(3_600_000))
}

/// Whether an answer is worth retrying: no answer at all, a 5xx, or 429 (too many requests).
pub fn retryable(status: Option<u16>) -> bool {
    match status {
        None => true,
        Some(s) => s == 429 || (500..=599).contains(&s),
    }
}

/// How much of a budget is used: 0 below the near threshold, 1 near, 2 at or over the limit.
/// Either limit (tokens, cost) counts; the higher level wins.
pub fn budget_level(
    spent_tokens: u64,
    spent_cost: f64,
    max_tokens: Option<u64>,
    max_cost: Option<f64>,
    near_percent: u8,
) -> u8 {
    let level = |spent: f64, max: f64| -> u8 {
        if max <= 0.0 || spent >= max {
            2
        } else if spent * 100.0 >= max * f64::from(near_percent) {
            1
        } else {
            0
        }
    };
    let t = max_tokens.map_or(0, |m| level(spent_tokens as f64, m as f64));
    let c = max_cost.map_or(0, |m| level(spent_cost, m));
    t.max(c)
}

/// The event a budget check raises: the level now against the level already notified for this
/// period. Only a rise notifies (near, then over: each once); a fall (a raised limit, a new
/// period) is remembered so the next crossing notifies again.
pub fn budget_crossing(notified: u8, now: u8) -> Option<NotifyKind> {
    if now <= notified {
        return None;
    }
    Some(if now >= 2 {
        NotifyKind::BudgetOver
    } else {
        NotifyKind::BudgetNear
    })
}

/// What lists show of a webhook URL: `scheme://host[:port]/…`, never its path or query (where
/// Slack and others put the secret), nor user info.
pub fn shown_url(url: &str) -> String {
    let (scheme, rest) = url.split_once("://").unwrap_or(("", url));
    let authority = rest.split(['/', '?', '#']).next().unwrap_or_default();
    let host = authority.rsplit('@').next().unwrap_or_default();
    format!("{scheme}://{host}/…")
}

/// The first `max` characters of `s` on one line, with `…` when cut.
pub fn excerpt(s: &str, max: usize) -> String {
    let one_line: String = s
        .chars()
        .map(|c| if c.is_control() { ' ' } else { c })
        .collect();
    let trimmed = one_line.trim();
    if trimmed.chars().count() <= max {
        return trimmed.to_owned();
    }
    let mut out: String = trimmed.chars().take(max).collect();
    out.push('…');
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn kinds_round_trip() {
        for k in NotifyKind::SUBSCRIBABLE {
            assert_eq!(NotifyKind::parse(k.as_str()), Some(k));
        }
        assert_eq!(NotifyKind::parse("test"), Some(NotifyKind::Test));
        assert_eq!(NotifyKind::parse("task.cancelled"), None);
        assert_eq!(Channel::parse("slack"), Some(Channel::Slack));
        assert_eq!(Channel::parse("email"), None);
    }

    #[test]
    fn filters_match_tenant_workspace_and_kinds() {
        let (ws1, ws2) = (
            WorkspaceId::from_stored("ws_1".into()),
            WorkspaceId::from_stored("ws_2".into()),
        );
        let all = Filter {
            tenant: "acme".into(),
            workspace_id: None,
            kinds: vec![],
        };
        assert!(all.matches(NotifyKind::TaskFailed, "acme", Some(&ws1)));
        assert!(all.matches(NotifyKind::BudgetOver, "acme", None));
        assert!(!all.matches(NotifyKind::TaskFailed, "globex", Some(&ws1)));
        assert!(!all.matches(NotifyKind::Test, "acme", None));
        let one = Filter {
            tenant: "acme".into(),
            workspace_id: Some(ws1.clone()),
            kinds: vec![NotifyKind::TaskCompleted, NotifyKind::TaskFailed],
        };
        assert!(one.matches(NotifyKind::TaskCompleted, "acme", Some(&ws1)));
        assert!(!one.matches(NotifyKind::TaskCompleted, "acme", Some(&ws2)));
        assert!(!one.matches(NotifyKind::TaskWaiting, "acme", Some(&ws1)));
        // A tenant-wide event does not match a workspace filter.
        assert!(!one.matches(NotifyKind::TaskFailed, "acme", None));
    }

    #[test]
    fn backoff_doubles_and_stops_after_the_last_attempt() {
        let s: Vec<Option<u64>> = (1..=6).map(|n| backoff_ms(n, 6, 20_000)).collect();
        assert_eq!(
            s,
            [
                Some(20_000),
                Some(40_000),
                Some(80_000),
                Some(160_000),
                Some(320_000),
                None
            ]
        );
        // About ten minutes from the first attempt to the last.
        let total: u64 = s.iter().flatten().sum();
        assert_eq!(total, 620_000);
        assert_eq!(backoff_ms(40, 100, 1000), Some(3_600_000));
        assert_eq!(backoff_ms(0, 6, 1000), None);
        assert!(retryable(None) && retryable(Some(500)) && retryable(Some(429)));
        assert!(!retryable(Some(404)) && !retryable(Some(200)) && !retryable(Some(410)));
    }

    #[test]
    fn budget_levels_cross_once_each() {
        assert_eq!(budget_level(79, 0.0, Some(100), None, 80), 0);
        assert_eq!(budget_level(80, 0.0, Some(100), None, 80), 1);
        assert_eq!(budget_level(100, 0.0, Some(100), None, 80), 2);
        // Cost counts too; the higher level wins.
        assert_eq!(budget_level(10, 0.95, Some(100), Some(1.0), 80), 1);
        assert_eq!(budget_level(10, 1.5, Some(100), Some(1.0), 80), 2);
        assert_eq!(budget_level(0, 0.0, Some(0), None, 80), 2);
        assert_eq!(budget_crossing(0, 0), None);
        assert_eq!(budget_crossing(0, 1), Some(NotifyKind::BudgetNear));
        assert_eq!(budget_crossing(1, 1), None);
        assert_eq!(budget_crossing(1, 2), Some(NotifyKind::BudgetOver));
        assert_eq!(budget_crossing(0, 2), Some(NotifyKind::BudgetOver));
        assert_eq!(budget_crossing(2, 2), None);
        assert_eq!(budget_crossing(2, 1), None);
    }

    #[test]
    fn urls_show_scheme_and_host_only() {
        assert_eq!(
            shown_url("https://hooks.slack.com/services/T000/B000/XXXXSECRET"),
            "https://hooks.slack.com/…"
        );
        assert_eq!(
            shown_url("http://user:pw@127.0.0.1:8080/x?token=1"),
            "http://127.0.0.1:8080/…"
        );
        assert_eq!(excerpt("a\nb", 10), "a b");
        assert_eq!(excerpt("abcdef", 3), "abc…");
    }
}
