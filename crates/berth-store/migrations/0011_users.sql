-- People who sign in through the OpenID Provider (single sign-on), and their browser sessions.
-- Roles are the strings 'admin' | 'owner' | 'member' | 'viewer'; they and the tenant are derived
-- from the provider's claims again at every login.

CREATE TABLE users (
    id             TEXT PRIMARY KEY,
    issuer         TEXT NOT NULL,
    subject        TEXT NOT NULL,
    name           TEXT NOT NULL,
    email          TEXT,
    -- Tenant name; NULL for server-wide users (admins mapped with `*`).
    tenant         TEXT,
    role           TEXT NOT NULL,
    -- Set while the user is disabled: no sessions, no new login.
    disabled_at    TEXT,
    created_at     TEXT NOT NULL,
    last_login_at  TEXT,
    UNIQUE (issuer, subject)
);

CREATE TABLE user_sessions (
    -- Public id (audit, listing); the cookie value is never stored, only its sha256.
    id             TEXT PRIMARY KEY,
    hash           TEXT NOT NULL UNIQUE,
    user_id        TEXT NOT NULL REFERENCES users(id) ON DELETE CASCADE,
    -- Sent back by the UI in X-CSRF-Token on every state-changing request.
    csrf           TEXT NOT NULL,
    created_at     TEXT NOT NULL,
    -- Unix seconds: the session ends at whichever comes first.
    last_seen      INTEGER NOT NULL,
    expires        INTEGER NOT NULL
);
CREATE INDEX user_sessions_user ON user_sessions (user_id);
