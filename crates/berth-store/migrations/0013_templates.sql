-- Workspace templates (issue 14): every `set` stores a new revision of a tenant's template (the
-- TOML source as given); removing a template removes all its revisions.
CREATE TABLE templates (
    tenant      TEXT NOT NULL,
    name        TEXT NOT NULL,
    revision    INTEGER NOT NULL,        -- 1, 2, … per (tenant, name)
    source      TEXT NOT NULL,           -- the TOML file, checked when stored
    created_at  TEXT NOT NULL,
    PRIMARY KEY (tenant, name, revision)
);

-- What a workspace was provisioned from, and how far provisioning got. `spec` is the template
-- with the parameters put in (JSON of berth_domain::Template): provisioning and retries run
-- from it, never from the template's newer revisions (only `--upgrade` moves on).
CREATE TABLE workspace_provisions (
    workspace_id  TEXT PRIMARY KEY REFERENCES workspaces (id) ON DELETE CASCADE,
    template      TEXT NOT NULL,
    revision      INTEGER NOT NULL,
    params        TEXT NOT NULL,         -- JSON object: the parameters the create gave
    spec          TEXT NOT NULL,
    state         TEXT NOT NULL,         -- pending | running | done | failed
    message       TEXT,                  -- why it failed
    updated_at    TEXT NOT NULL
);

-- The steps of a workspace's provisioning, in order: clones, git identity, setup steps, the
-- auto-started session. `input_hash` covers everything a step depends on, so an upgrade re-runs
-- only the steps whose inputs changed. `log` is the tail of the step's output (capped).
CREATE TABLE provision_steps (
    workspace_id  TEXT NOT NULL REFERENCES workspaces (id) ON DELETE CASCADE,
    position      INTEGER NOT NULL,
    kind          TEXT NOT NULL,         -- clone | git | setup | session
    name          TEXT NOT NULL,
    state         TEXT NOT NULL,         -- pending | running | done | failed | skipped
    input_hash    TEXT NOT NULL,
    log           TEXT NOT NULL DEFAULT '',
    exit_code     INTEGER,
    message       TEXT,
    started_at    TEXT,
    finished_at   TEXT,
    PRIMARY KEY (workspace_id, position)
);
