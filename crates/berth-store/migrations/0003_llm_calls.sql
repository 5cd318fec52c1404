-- LLM gateway accounting: one row per call through the gateway, and budgets.

CREATE TABLE llm_calls (
    id                  INTEGER PRIMARY KEY AUTOINCREMENT,
    at                  TEXT NOT NULL,
    workspace_id        TEXT NOT NULL,
    workspace           TEXT NOT NULL,      -- tenant/name
    tenant              TEXT NOT NULL,
    task_id             TEXT NOT NULL,
    provider            TEXT NOT NULL,
    model               TEXT,
    path                TEXT NOT NULL,
    status              INTEGER NOT NULL,
    input_tokens        INTEGER NOT NULL DEFAULT 0,
    output_tokens       INTEGER NOT NULL DEFAULT 0,
    cache_read_tokens   INTEGER NOT NULL DEFAULT 0,
    cache_write_tokens  INTEGER NOT NULL DEFAULT 0,
    cost_usd            REAL,
    latency_ms          INTEGER NOT NULL,
    ttfb_ms             INTEGER,
    error               TEXT
);
CREATE INDEX llm_calls_at ON llm_calls (at);
CREATE INDEX llm_calls_workspace ON llm_calls (workspace_id, at);
CREATE INDEX llm_calls_tenant ON llm_calls (tenant, at);

CREATE TABLE budgets (
    scope         TEXT NOT NULL,            -- 'tenant' or 'workspace'
    target        TEXT NOT NULL,            -- tenant name, or workspace id
    period        TEXT NOT NULL,            -- 'day', 'month' or 'total'
    max_tokens    INTEGER,
    max_cost_usd  REAL,
    created_at    TEXT NOT NULL,
    PRIMARY KEY (scope, target)
);
