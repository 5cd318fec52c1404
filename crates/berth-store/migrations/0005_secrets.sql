-- The secrets vault: values encrypted with a key that is never stored here, owned by tenants;
-- and which workspace uses which secret, how, bound to which hosts.

CREATE TABLE secrets (
    tenant      TEXT NOT NULL,
    name        TEXT NOT NULL,
    nonce       BLOB NOT NULL,
    ciphertext  BLOB NOT NULL,
    created_at  TEXT NOT NULL,
    updated_at  TEXT NOT NULL,
    PRIMARY KEY (tenant, name)
);

CREATE TABLE workspace_secrets (
    workspace_id  TEXT NOT NULL,
    name          TEXT NOT NULL,
    hosts         TEXT NOT NULL,      -- comma-separated hosts the placeholder is swapped for
    delivery      TEXT NOT NULL,      -- placeholder | env | file
    placeholder   TEXT NOT NULL,
    PRIMARY KEY (workspace_id, name)
);
