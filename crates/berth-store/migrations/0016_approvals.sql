-- Approvals (issue 15 §1). A task's approval policy (`never`, `on-request`, `always`), the
-- per-workspace default for new tasks, and the agents' permission requests: one row per
-- `approval_request` event, stored with the event in one transaction and closed by its
-- `approval_resolved` event, by the server's own record of a decision (`decided_by` is the
-- deciding token's name), or as `expired` when the turn ends with the request still open.
-- Numbered 0016 to stay clear of migrations other branches add.
ALTER TABLE workspaces ADD COLUMN approval TEXT NOT NULL DEFAULT 'never';
ALTER TABLE tasks ADD COLUMN approval TEXT NOT NULL DEFAULT 'never';

CREATE TABLE task_approvals (
    task_id     TEXT NOT NULL,
    id          TEXT NOT NULL,            -- the agent's request id (capped)
    seq         INTEGER NOT NULL,         -- the approval_request event
    request     TEXT NOT NULL,            -- the normalized request, JSON (capped)
    state       TEXT NOT NULL DEFAULT 'pending',  -- pending | approved | denied | expired
    decided_by  TEXT,
    reason      TEXT,
    created_at  TEXT NOT NULL,
    decided_at  TEXT,
    PRIMARY KEY (task_id, id)
);
CREATE INDEX task_approvals_pending ON task_approvals (state, task_id);
