-- The MCP servers a workspace's agents use: a JSON array of berth_domain::McpServer, written
-- into every agent CLI's own configuration for each task turn and interactive session.
-- Declared by the operator (API, template), never read from inside the workspace.
-- Numbered 0014 to stay clear of migrations other branches add.
ALTER TABLE workspaces ADD COLUMN mcp_servers TEXT NOT NULL DEFAULT '[]';
