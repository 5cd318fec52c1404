-- "Remember this device": a browser keeps a token of its own, derived from the token it signed in
-- with (same role and tenant, a bounded lifetime), never the pasted one. Revoking a token revokes
-- the device tokens derived from it.
ALTER TABLE tokens ADD COLUMN parent_id TEXT;
CREATE INDEX tokens_parent ON tokens (parent_id) WHERE parent_id IS NOT NULL;
