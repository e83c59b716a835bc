-- Compute: instances, placement groups, allocations (claims on hosts), instance events,
-- operations with their saga logs, and leases for singleton background work.
-- An allocation's instance is checked at commit, so a create can claim first and write
-- the placed instance once.
ALTER TABLE hosts ADD COLUMN desired_generation BIGINT NOT NULL DEFAULT 0;
ALTER TABLE hosts ADD COLUMN heartbeat_at BIGINT;
CREATE TABLE placement_groups (
    id TEXT PRIMARY KEY,
    tenant_id TEXT NOT NULL REFERENCES tenants(id),
    project_id TEXT NOT NULL REFERENCES projects(id),
    name TEXT NOT NULL,
    generation BIGINT NOT NULL,
    created_at BIGINT NOT NULL,
    updated_at BIGINT NOT NULL,
    doc TEXT NOT NULL,
    UNIQUE (project_id, name)
);
CREATE TABLE instances (
    id TEXT PRIMARY KEY,
    tenant_id TEXT NOT NULL REFERENCES tenants(id),
    project_id TEXT NOT NULL REFERENCES projects(id),
    name TEXT NOT NULL,
    name_key TEXT,
    state TEXT NOT NULL,
    lifecycle TEXT NOT NULL,
    host_id TEXT REFERENCES hosts(id),
    shape_id TEXT NOT NULL REFERENCES shapes(id),
    placement_group_id TEXT REFERENCES placement_groups(id),
    labels TEXT NOT NULL,
    user_data TEXT,
    generation BIGINT NOT NULL,
    created_at BIGINT NOT NULL,
    updated_at BIGINT NOT NULL,
    doc TEXT NOT NULL,
    UNIQUE (project_id, name_key)
);
CREATE INDEX instances_tenant ON instances (tenant_id, id);
CREATE INDEX instances_host ON instances (host_id);
CREATE INDEX instances_group ON instances (placement_group_id);
CREATE INDEX instances_lifecycle ON instances (lifecycle);
CREATE INDEX instances_updated ON instances (updated_at);
CREATE TABLE allocations (
    id TEXT PRIMARY KEY,
    host_id TEXT NOT NULL REFERENCES hosts(id),
    instance_id TEXT NOT NULL REFERENCES instances(id) DEFERRABLE INITIALLY DEFERRED,
    tenant_id TEXT NOT NULL REFERENCES tenants(id),
    project_id TEXT NOT NULL,
    generation BIGINT NOT NULL,
    created_at BIGINT NOT NULL,
    updated_at BIGINT NOT NULL,
    doc TEXT NOT NULL
);
CREATE INDEX allocations_host ON allocations (host_id);
CREATE INDEX allocations_instance ON allocations (instance_id);
CREATE TABLE instance_events (
    id TEXT PRIMARY KEY,
    instance_id TEXT NOT NULL,
    tenant_id TEXT NOT NULL,
    project_id TEXT NOT NULL,
    generation BIGINT NOT NULL,
    created_at BIGINT NOT NULL,
    updated_at BIGINT NOT NULL,
    doc TEXT NOT NULL
);
CREATE INDEX instance_events_instance ON instance_events (instance_id, id);
CREATE TABLE operations (
    id TEXT PRIMARY KEY,
    tenant_id TEXT,
    project_id TEXT,
    kind TEXT NOT NULL,
    target TEXT NOT NULL,
    status TEXT NOT NULL,
    saga TEXT,
    cancel_requested BIGINT NOT NULL DEFAULT 0,
    lease_owner TEXT,
    lease_expires BIGINT,
    generation BIGINT NOT NULL,
    created_at BIGINT NOT NULL,
    updated_at BIGINT NOT NULL,
    doc TEXT NOT NULL
);
CREATE INDEX operations_target ON operations (target, id);
CREATE INDEX operations_status ON operations (status);
CREATE INDEX operations_updated ON operations (updated_at);
CREATE TABLE saga_log (
    operation_id TEXT NOT NULL REFERENCES operations(id),
    seq BIGINT NOT NULL,
    step TEXT NOT NULL,
    direction TEXT NOT NULL,
    output TEXT,
    at BIGINT NOT NULL,
    PRIMARY KEY (operation_id, seq)
);
CREATE TABLE leases (
    name TEXT PRIMARY KEY,
    owner TEXT NOT NULL,
    expires_at BIGINT NOT NULL
);
