-- The request headers a placeholder secret may be swapped into (comma-separated, lower-case);
-- empty means Authorization only.
ALTER TABLE workspace_secrets ADD COLUMN headers TEXT NOT NULL DEFAULT '';
