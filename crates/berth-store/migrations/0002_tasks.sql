-- Agent tasks and their append-only event log. Tasks keep their history after their workspace
-- is removed, so there is no foreign key to workspaces.

CREATE TABLE tasks (
    id                TEXT PRIMARY KEY,
    workspace_id      TEXT NOT NULL,
    workspace         TEXT NOT NULL,       -- tenant/name at creation
    agent             TEXT NOT NULL,
    state             TEXT NOT NULL,
    reason            TEXT,
    model             TEXT,
    dir               TEXT NOT NULL,
    worktree          TEXT,
    prompt            TEXT NOT NULL,
    -- sha256 of the task's virtual LLM key; the key itself is never stored.
    virtual_key_hash  TEXT NOT NULL UNIQUE,
    last_seq          INTEGER NOT NULL DEFAULT 0,
    input_tokens      INTEGER NOT NULL DEFAULT 0,
    output_tokens     INTEGER NOT NULL DEFAULT 0,
    cached_tokens     INTEGER NOT NULL DEFAULT 0,
    cost_usd          REAL,
    last_message      TEXT,
    agent_session_id  TEXT,
    created_at        TEXT NOT NULL,
    updated_at        TEXT NOT NULL
);
CREATE INDEX tasks_workspace ON tasks (workspace_id);

CREATE TABLE task_events (
    task_id  TEXT NOT NULL,
    seq      INTEGER NOT NULL,
    body     TEXT NOT NULL,                -- the TaskEvent as JSON
    PRIMARY KEY (task_id, seq)
) WITHOUT ROWID;
