-- Volume snapshots (issue 19): each is a layer of its volume's chain of files on the
-- volume's host, so it lives and dies with the volume. A deleted snapshot's row stays;
-- names are unique among a volume's others.
CREATE TABLE volume_snapshots (
    id TEXT PRIMARY KEY,
    tenant_id TEXT NOT NULL REFERENCES tenants(id),
    project_id TEXT NOT NULL REFERENCES projects(id),
    volume_id TEXT NOT NULL REFERENCES volumes(id),
    name TEXT NOT NULL,
    host_id TEXT,
    state TEXT NOT NULL,
    live INTEGER,
    generation BIGINT NOT NULL,
    created_at BIGINT NOT NULL,
    updated_at BIGINT NOT NULL,
    doc TEXT NOT NULL
);
CREATE UNIQUE INDEX volume_snapshots_live_name ON volume_snapshots (volume_id, name, live);
CREATE INDEX volume_snapshots_volume ON volume_snapshots (volume_id, state);
CREATE INDEX volume_snapshots_host ON volume_snapshots (host_id, state);
