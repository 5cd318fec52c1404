-- Optional recording of what went through the LLM gateway (prompts, tool calls, answers),
-- kept for a retention period.
CREATE TABLE llm_recordings (
    call_id   INTEGER PRIMARY KEY REFERENCES llm_calls(id) ON DELETE CASCADE,
    at        TEXT NOT NULL,
    request   TEXT NOT NULL,
    response  TEXT NOT NULL
);
CREATE INDEX llm_recordings_at ON llm_recordings (at);
