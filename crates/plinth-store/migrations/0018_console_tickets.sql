-- Serial console tickets: single-use, short-lived credentials a browser tab sends in the
-- first frame of a serial console WebSocket (never in a URL). Minted for one session and
-- one instance, read-only for viewers; `used_at` is set when redeemed, once. Only the
-- SHA-256 of the secret is kept.
CREATE TABLE console_tickets (
    id TEXT PRIMARY KEY,
    secret_hash TEXT NOT NULL,
    session_id TEXT NOT NULL REFERENCES console_sessions(id) ON DELETE CASCADE,
    instance_id TEXT NOT NULL,
    read_only BIGINT NOT NULL,
    created_at BIGINT NOT NULL,
    expires_at BIGINT NOT NULL,
    used_at BIGINT
);
CREATE INDEX console_tickets_expiry ON console_tickets (expires_at);
