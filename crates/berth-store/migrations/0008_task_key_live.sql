-- A task's virtual key works only while the server itself has a turn of that task in flight:
-- set when the server starts a turn (task create, follow-up message), cleared when the turn
-- ends, is cancelled or fails. A workspace daemon can never set it (a forged "running" status
-- does not revive a key). Numbered 0012 to stay clear of migrations other branches add.
ALTER TABLE tasks ADD COLUMN key_live INTEGER NOT NULL DEFAULT 0;
UPDATE tasks SET key_live = 1 WHERE state IN ('queued', 'starting', 'running', 'waiting');
