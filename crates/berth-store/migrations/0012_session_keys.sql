-- Interactive agent sessions (an agent's TUI in a terminal session) reach the LLM gateway with
-- a virtual key of their own, kept here hashed. A key works only while `live` (the server
-- clears it when the session ends, is removed, or its workspace stops; a workspace daemon can
-- never set it) and the daemon still lists its session running. `session_id` and
-- `session_created_at` are the daemon's, filled in once the session runs (NULL while it starts).
-- Numbered 0012 to stay clear of migrations other branches add.
CREATE TABLE session_keys (
    id                  TEXT PRIMARY KEY,     -- berth's id of the agent session, as_…
    key_hash            TEXT NOT NULL UNIQUE,
    workspace_id        TEXT NOT NULL,
    workspace           TEXT NOT NULL,        -- tenant/name
    agent               TEXT NOT NULL,
    task_id             TEXT,                 -- the task taken over, if any
    session_id          TEXT,
    session_name        TEXT,
    session_created_at  TEXT,
    live                INTEGER NOT NULL DEFAULT 1,
    created_at          TEXT NOT NULL,
    ended_at            TEXT
);
CREATE INDEX session_keys_live ON session_keys (live, workspace_id);
CREATE INDEX session_keys_task ON session_keys (task_id, live);

-- The agent session a gateway call was made with (NULL: a task's turn).
ALTER TABLE llm_calls ADD COLUMN session_id TEXT;
CREATE INDEX llm_calls_session ON llm_calls (session_id);
