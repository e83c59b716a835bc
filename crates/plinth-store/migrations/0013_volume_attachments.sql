-- Volume attachments (issue 19): one row per attachment, kept after detach (Cinder's
-- model). At most one attachment per volume, and one per instance slot, is attached.
CREATE TABLE volume_attachments (
    id TEXT PRIMARY KEY,
    tenant_id TEXT NOT NULL REFERENCES tenants(id),
    project_id TEXT NOT NULL REFERENCES projects(id),
    volume_id TEXT NOT NULL REFERENCES volumes(id),
    instance_id TEXT NOT NULL REFERENCES instances(id),
    host_id TEXT,
    state TEXT NOT NULL,
    slot INTEGER NOT NULL,
    live INTEGER,
    generation BIGINT NOT NULL,
    created_at BIGINT NOT NULL,
    updated_at BIGINT NOT NULL,
    doc TEXT NOT NULL
);
CREATE UNIQUE INDEX volume_attachments_one_per_volume ON volume_attachments (volume_id, live);
CREATE UNIQUE INDEX volume_attachments_one_per_slot ON volume_attachments (instance_id, slot, live);
CREATE INDEX volume_attachments_host ON volume_attachments (host_id, state);
