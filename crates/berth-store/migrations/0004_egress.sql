-- Egress policy per workspace (ordered rules, first match wins, default deny) and the log of
-- every attempt.

CREATE TABLE egress_rules (
    workspace_id  TEXT NOT NULL,
    position      INTEGER NOT NULL,
    rule          TEXT NOT NULL,            -- e.g. "allow *.npmjs.org:443"
    PRIMARY KEY (workspace_id, position)
);

CREATE TABLE egress_log (
    id            INTEGER PRIMARY KEY AUTOINCREMENT,
    at            TEXT NOT NULL,
    workspace_id  TEXT NOT NULL,
    task_id       TEXT,
    method        TEXT,
    host          TEXT NOT NULL,
    port          INTEGER NOT NULL,
    path          TEXT,
    decision      TEXT NOT NULL,            -- allow | deny
    rule          TEXT,
    reason        TEXT NOT NULL,
    bytes_up      INTEGER NOT NULL DEFAULT 0,
    bytes_down    INTEGER NOT NULL DEFAULT 0,
    intercepted   INTEGER NOT NULL DEFAULT 0
);
CREATE INDEX egress_log_workspace ON egress_log (workspace_id, id);
