-- What a task's directory held before each of its turns: the commit it was on and a tree of the
-- whole working state (tracked changes and untracked files, .gitignore honoured), written with a
-- throw-away index. The task's diff is snapshot 1 -> now (commits included); a turn's diff is
-- snapshot n -> snapshot n+1. Tasks keep their history after their workspace is removed.
CREATE TABLE task_snapshots (
    task_id  TEXT NOT NULL,
    turn     INTEGER NOT NULL,
    -- NULL when the repository has no commit yet.
    head     TEXT,
    tree     TEXT NOT NULL,
    at       TEXT NOT NULL,
    PRIMARY KEY (task_id, turn)
);
