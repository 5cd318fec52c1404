-- Access requests (issue 15 §2): what a workspace was denied by its egress rules, or asked for
-- explicitly with `berth request` (egress to a host, or a secret bound to a host), waiting for
-- an owner's decision. One row per (workspace, what) while it is open or denied: repeats bump
-- `count` and `last_seen` (a denied request absorbs its repeats, so a denial stays quiet);
-- a workspace holds a bounded number of open rows (the server caps, see
-- berth_store::access::MAX_OPEN_PER_WORKSPACE). Everything in a row came from inside a
-- workspace except the decision: fields are cut before they are stored.
-- An approval "once" is an allow rule with `expires_at`: it is part of the workspace's effective
-- egress policy until then (state `approved`), then the sweep marks the row `expired`.
CREATE TABLE access_requests (
    id            TEXT PRIMARY KEY,            -- ar_…
    workspace_id  TEXT NOT NULL,
    kind          TEXT NOT NULL,               -- egress | secret
    source        TEXT NOT NULL,               -- denied (by the egress proxy) | explicit (berth request)
    dedup         TEXT NOT NULL,               -- egress: host:port; secret: NAME@host
    host          TEXT NOT NULL,
    port          INTEGER,                     -- egress only
    secret        TEXT,                        -- secret only: the secret's name
    method        TEXT,                        -- the last denied attempt (NULL for a CONNECT)
    path          TEXT,
    rule          TEXT,                        -- the rule that denied it (NULL: default deny)
    task_id       TEXT,
    reason        TEXT,                        -- the agent's justification (explicit requests)
    count         INTEGER NOT NULL DEFAULT 1,
    first_seen    TEXT NOT NULL,
    last_seen     TEXT NOT NULL,
    state         TEXT NOT NULL DEFAULT 'open', -- open | approved | denied | expired
    scope         TEXT,                        -- approved: once | always | template
    template      TEXT,                        -- approved into this egress template
    granted_rule  TEXT,                        -- the allow rule the approval added
    expires_at    TEXT,                        -- approved once: when the rule goes
    decided_by    TEXT,
    decided_at    TEXT,
    note          TEXT                         -- the decider's reason
);
CREATE UNIQUE INDEX access_requests_live ON access_requests (workspace_id, kind, dedup)
    WHERE state IN ('open', 'denied');
CREATE INDEX access_requests_state ON access_requests (state, workspace_id);
CREATE INDEX access_requests_expiry ON access_requests (expires_at)
    WHERE state = 'approved' AND expires_at IS NOT NULL;

-- Members' (and everyone's) comments on a request; capped per request by the server.
CREATE TABLE access_request_comments (
    id          INTEGER PRIMARY KEY AUTOINCREMENT,
    request_id  TEXT NOT NULL,
    at          TEXT NOT NULL,
    author      TEXT NOT NULL,
    text        TEXT NOT NULL
);
CREATE INDEX access_request_comments_request ON access_request_comments (request_id, id);

-- Notify subscribers of each new request (see 0018_notify.sql).
CREATE TRIGGER notify_access_request AFTER INSERT ON access_requests
BEGIN
    INSERT INTO notify_events (at, kind, tenant, workspace_id, workspace, task_id, detail)
    SELECT strftime('%Y-%m-%dT%H:%M:%fZ', 'now'), 'access.request', t.name, NEW.workspace_id,
           t.name || '/' || w.name, NEW.task_id,
           json_object('id', NEW.id, 'kind', NEW.kind, 'source', NEW.source, 'host', NEW.host,
                       'port', NEW.port, 'secret', NEW.secret,
                       'reason', substr(NEW.reason, 1, 300))
    FROM workspaces w JOIN tenants t ON t.id = w.tenant_id WHERE w.id = NEW.workspace_id;
END;
