-- berth schema v1. Tenancy is in the model from the start: every workspace and (later) every
-- scoped token belongs to a tenant.

CREATE TABLE tenants (
    id          TEXT PRIMARY KEY,
    name        TEXT NOT NULL UNIQUE,
    created_at  TEXT NOT NULL
);

CREATE TABLE tokens (
    id            TEXT PRIMARY KEY,
    name          TEXT NOT NULL,
    -- sha256 of the token; the token itself is never stored.
    hash          TEXT NOT NULL UNIQUE,
    -- 'admin' for now; per-tenant roles come later.
    role          TEXT NOT NULL,
    -- NULL = server-wide; set for tokens scoped to one tenant.
    tenant_id     TEXT REFERENCES tenants(id),
    created_at    TEXT NOT NULL,
    last_used_at  TEXT,
    revoked_at    TEXT
);

CREATE TABLE workspaces (
    id               TEXT PRIMARY KEY,
    tenant_id        TEXT NOT NULL REFERENCES tenants(id),
    name             TEXT NOT NULL,
    state            TEXT NOT NULL,
    image            TEXT NOT NULL,
    memory_bytes     INTEGER NOT NULL,
    nano_cpus        INTEGER NOT NULL,
    pids_limit       INTEGER NOT NULL,
    network          TEXT NOT NULL,
    volume           TEXT NOT NULL,
    container_id     TEXT,
    failure_reason   TEXT,
    failure_message  TEXT,
    failure_at       TEXT,
    oom_kills        INTEGER NOT NULL DEFAULT 0,
    -- Last memcg oom_kill counter read for the current container run.
    memcg_oom_seen   INTEGER NOT NULL DEFAULT 0,
    created_at       TEXT NOT NULL,
    updated_at       TEXT NOT NULL,
    UNIQUE (tenant_id, name)
);

CREATE TABLE audit (
    id      INTEGER PRIMARY KEY AUTOINCREMENT,
    at      TEXT NOT NULL,
    actor   TEXT NOT NULL,
    action  TEXT NOT NULL,
    target  TEXT NOT NULL,
    result  TEXT NOT NULL,
    detail  TEXT
);
CREATE INDEX audit_target ON audit (target);

CREATE TABLE server_meta (
    key    TEXT PRIMARY KEY,
    value  TEXT NOT NULL
);
