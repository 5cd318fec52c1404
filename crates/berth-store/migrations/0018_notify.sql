-- Notifications (docs/notifications.md): an outbox of events, written by triggers in the same
-- statement as the state change they report (so no code path that changes a task or a
-- workspace needs to know about notifications, and none can forget one); subscriptions with
-- their sealed webhook URL and signing secret; one delivery per (subscription, event) with
-- its attempts; and the budget level already notified per budget and period.

CREATE TABLE notify_events (
    id            INTEGER PRIMARY KEY AUTOINCREMENT,
    at            TEXT NOT NULL,
    -- task.completed | task.failed | task.waiting | workspace.failed | workspace.oom |
    -- budget.near | budget.over | test
    kind          TEXT NOT NULL,
    tenant        TEXT NOT NULL,
    workspace_id  TEXT,
    workspace     TEXT,
    task_id       TEXT,
    -- Facts of the trigger (JSON): a task's state, a workspace's failure reason, a budget's use.
    detail        TEXT,
    -- berth's JSON payload, built by the notifier when it fans the event out (NULL until then).
    payload       TEXT
);
CREATE INDEX notify_events_tenant ON notify_events (tenant, id);

CREATE TRIGGER notify_task_state AFTER UPDATE OF state ON tasks
WHEN NEW.state <> OLD.state AND NEW.state IN ('completed', 'failed', 'waiting')
BEGIN
    INSERT INTO notify_events (at, kind, tenant, workspace_id, workspace, task_id, detail)
    VALUES (strftime('%Y-%m-%dT%H:%M:%fZ', 'now'), 'task.' || NEW.state,
            substr(NEW.workspace, 1, instr(NEW.workspace, '/') - 1),
            NEW.workspace_id, NEW.workspace, NEW.id,
            json_object('state', NEW.state, 'agent', NEW.agent, 'reason', NEW.reason));
END;

CREATE TRIGGER notify_task_insert AFTER INSERT ON tasks
WHEN NEW.state IN ('completed', 'failed', 'waiting')
BEGIN
    INSERT INTO notify_events (at, kind, tenant, workspace_id, workspace, task_id, detail)
    VALUES (strftime('%Y-%m-%dT%H:%M:%fZ', 'now'), 'task.' || NEW.state,
            substr(NEW.workspace, 1, instr(NEW.workspace, '/') - 1),
            NEW.workspace_id, NEW.workspace, NEW.id,
            json_object('state', NEW.state, 'agent', NEW.agent, 'reason', NEW.reason));
END;

CREATE TRIGGER notify_workspace_failed AFTER UPDATE OF state ON workspaces
WHEN NEW.state = 'failed' AND OLD.state <> 'failed'
BEGIN
    INSERT INTO notify_events (at, kind, tenant, workspace_id, workspace, detail)
    SELECT strftime('%Y-%m-%dT%H:%M:%fZ', 'now'), 'workspace.failed', t.name, NEW.id,
           t.name || '/' || NEW.name,
           json_object('reason', NEW.failure_reason, 'message', substr(NEW.failure_message, 1, 300))
    FROM tenants t WHERE t.id = NEW.tenant_id;
END;

CREATE TRIGGER notify_workspace_oom AFTER UPDATE OF oom_kills ON workspaces
WHEN NEW.oom_kills > OLD.oom_kills
BEGIN
    INSERT INTO notify_events (at, kind, tenant, workspace_id, workspace, detail)
    SELECT strftime('%Y-%m-%dT%H:%M:%fZ', 'now'), 'workspace.oom', t.name, NEW.id,
           t.name || '/' || NEW.name,
           json_object('oom_kills', NEW.oom_kills, 'new_kills', NEW.oom_kills - OLD.oom_kills)
    FROM tenants t WHERE t.id = NEW.tenant_id;
END;

CREATE TABLE notify_subscriptions (
    id             TEXT PRIMARY KEY,
    -- The creating caller: a token id (`tok_…`) or a single sign-on user id (`usr_…`).
    owner          TEXT NOT NULL,
    owner_name     TEXT NOT NULL,
    tenant         TEXT NOT NULL,
    -- Workspace id, NULL = every workspace of the tenant.
    workspace_id   TEXT,
    workspace      TEXT,
    -- JSON array of event kinds; empty = every kind.
    kinds          TEXT NOT NULL,
    -- webhook | slack | ntfy
    channel        TEXT NOT NULL,
    -- What list/show display of the URL: scheme://host/… (the URL itself may embed a secret).
    url_shown      TEXT NOT NULL,
    -- The URL and the signing secret, sealed by the vault (nonce, ciphertext).
    url_nonce      BLOB NOT NULL,
    url_sealed     BLOB NOT NULL,
    secret_nonce   BLOB NOT NULL,
    secret_sealed  BLOB NOT NULL,
    created_at     TEXT NOT NULL
);
CREATE INDEX notify_subscriptions_tenant ON notify_subscriptions (tenant);

CREATE TABLE notify_deliveries (
    id               INTEGER PRIMARY KEY AUTOINCREMENT,
    subscription_id  TEXT NOT NULL REFERENCES notify_subscriptions(id) ON DELETE CASCADE,
    event_id         INTEGER NOT NULL,
    kind             TEXT NOT NULL,
    -- pending | delivered | failed | dropped
    state            TEXT NOT NULL,
    attempts         INTEGER NOT NULL DEFAULT 0,
    next_at          TEXT,
    created_at       TEXT NOT NULL,
    updated_at       TEXT NOT NULL
);
CREATE INDEX notify_deliveries_due ON notify_deliveries (state, next_at);
CREATE INDEX notify_deliveries_sub ON notify_deliveries (subscription_id, id);

CREATE TABLE notify_attempts (
    id           INTEGER PRIMARY KEY AUTOINCREMENT,
    delivery_id  INTEGER NOT NULL REFERENCES notify_deliveries(id) ON DELETE CASCADE,
    at           TEXT NOT NULL,
    -- The receiver's HTTP status, or NULL when no answer came (then `error` says why).
    status       INTEGER,
    error        TEXT,
    duration_ms  INTEGER NOT NULL,
    -- When the next attempt is due; NULL when this was the last.
    next_at      TEXT
);
CREATE INDEX notify_attempts_delivery ON notify_attempts (delivery_id);

-- The highest level notified per budget and period: 0 none, 1 near, 2 over.
CREATE TABLE notify_budget_levels (
    scope   TEXT NOT NULL,
    target  TEXT NOT NULL,
    period  TEXT NOT NULL,
    level   INTEGER NOT NULL,
    PRIMARY KEY (scope, target, period)
);
