-- Web console sessions: a browser's login, made from an API token (the session acts as
-- that token's user, with its roles, and dies with it). Only the SHA-256 of the cookie's
-- secret is kept. `expires_at` is the absolute end; `last_seen_at` (refreshed at most once
-- a minute) ends an idle session; logout sets `revoked_at`.
CREATE TABLE console_sessions (
    id TEXT PRIMARY KEY,
    secret_hash TEXT NOT NULL,
    token_id TEXT NOT NULL REFERENCES api_tokens(id) ON DELETE CASCADE,
    user_id TEXT NOT NULL,
    created_at BIGINT NOT NULL,
    last_seen_at BIGINT NOT NULL,
    expires_at BIGINT NOT NULL,
    revoked_at BIGINT
);
CREATE INDEX console_sessions_token ON console_sessions (token_id);
CREATE INDEX console_sessions_expiry ON console_sessions (expires_at);
