-- What became of a task's work: its last push (remote name, branch, commit) and the pull or
-- merge request opened for it (provider, URL, number). One row per task, written by
-- `berth task push` / `berth task pr`; kept with the task's history.
CREATE TABLE task_deliveries (
    task_id        TEXT PRIMARY KEY NOT NULL,
    push_remote    TEXT,
    push_branch    TEXT,
    push_commit    TEXT,
    pushed_at      TEXT,
    pr_provider    TEXT,
    pr_url         TEXT,
    pr_number      INTEGER,
    pr_at          TEXT
);
