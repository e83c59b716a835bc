-- Pools of public IPv4 addresses (operators). A pool's range is [first_addr, last_addr]
-- as integers, so the overlap check on create is one range query; pools never overlap.
CREATE TABLE ip_pools (
    id TEXT PRIMARY KEY,
    site_id TEXT REFERENCES sites(id),
    name TEXT NOT NULL UNIQUE,
    first_addr BIGINT NOT NULL,
    last_addr BIGINT NOT NULL,
    generation BIGINT NOT NULL,
    created_at BIGINT NOT NULL,
    updated_at BIGINT NOT NULL,
    doc TEXT NOT NULL
);
CREATE INDEX ip_pools_range ON ip_pools (first_addr, last_addr);
