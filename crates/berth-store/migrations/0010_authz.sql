-- Tokens and roles: per-tenant tokens expire and are revoked; the audit log names who acted
-- (name, role, tenant) and whose object it was (tenant); admins cap tenants with quotas.

ALTER TABLE tokens ADD COLUMN expires_at TEXT;

ALTER TABLE audit ADD COLUMN actor_name TEXT;
ALTER TABLE audit ADD COLUMN actor_role TEXT;
ALTER TABLE audit ADD COLUMN actor_tenant TEXT;
-- The tenant of the target, so a tenant's tokens read only their tenant's rows.
ALTER TABLE audit ADD COLUMN tenant TEXT;
UPDATE audit SET tenant = substr(target, 1, instr(target, '/') - 1)
    WHERE instr(target, '/') > 1 AND action NOT LIKE 'image.%' AND action NOT LIKE 'system.%';
CREATE INDEX audit_tenant ON audit (tenant, id);

-- NULL = no limit.
CREATE TABLE tenant_quotas (
    tenant_id       TEXT PRIMARY KEY REFERENCES tenants(id),
    max_workspaces  INTEGER,
    memory_bytes    INTEGER,
    nano_cpus       INTEGER,
    max_tasks       INTEGER,
    updated_at      TEXT NOT NULL
);
