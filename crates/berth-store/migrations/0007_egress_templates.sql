-- Egress templates: named, ordered rule lists owned by a tenant (unique per tenant, like
-- secrets), and the templates each workspace uses, in order. The built-in templates (npm,
-- pypi, …) are defined in code (berth-egress) and never stored; an attachment names either a
-- built-in or a template of the workspace's own tenant.

CREATE TABLE egress_templates (
    tenant       TEXT NOT NULL,
    name         TEXT NOT NULL,
    description  TEXT,
    created_at   TEXT NOT NULL,
    updated_at   TEXT NOT NULL,
    PRIMARY KEY (tenant, name)
);

CREATE TABLE egress_template_rules (
    tenant    TEXT NOT NULL,
    template  TEXT NOT NULL,
    position  INTEGER NOT NULL,
    rule      TEXT NOT NULL,            -- e.g. "allow registry.npmjs.org:443"
    PRIMARY KEY (tenant, template, position),
    FOREIGN KEY (tenant, template) REFERENCES egress_templates (tenant, name) ON DELETE CASCADE
);

-- Removing a workspace removes its attachments. A template stays referenced by name only (a
-- built-in has no row): the store refuses to remove a tenant template that is attached unless
-- asked to detach it everywhere in the same transaction.
CREATE TABLE workspace_egress_templates (
    workspace_id  TEXT NOT NULL REFERENCES workspaces (id) ON DELETE CASCADE,
    template      TEXT NOT NULL,
    position      INTEGER NOT NULL,     -- attach order: lower positions are evaluated first
    PRIMARY KEY (workspace_id, template)
);
CREATE INDEX workspace_egress_templates_template ON workspace_egress_templates (template);
