-- Floating IPs: public addresses a project holds, each from an IP pool. The address is an
-- integer, unique platform-wide; the lowest free one of the pool is allocated in the
-- create's transaction, with the pool's row locked.
CREATE TABLE floating_ips (
    id TEXT PRIMARY KEY,
    tenant_id TEXT NOT NULL REFERENCES tenants(id),
    project_id TEXT NOT NULL REFERENCES projects(id),
    ip_pool_id TEXT NOT NULL REFERENCES ip_pools(id),
    name TEXT NOT NULL,
    address BIGINT NOT NULL UNIQUE,
    nic_id TEXT,
    generation BIGINT NOT NULL,
    created_at BIGINT NOT NULL,
    updated_at BIGINT NOT NULL,
    doc TEXT NOT NULL,
    UNIQUE (project_id, name)
);
CREATE INDEX floating_ips_pool ON floating_ips (ip_pool_id, address);
