-- Images: registered boot images (a JSON document plus indexed columns) and the blobs
-- (content-addressed files under the server's blob directory) their files are stored as.
-- `owner_key` is the project id, or 'public' for images every project may use, so one
-- UNIQUE rule covers both "unique per project" and "unique among public images".
-- `disk_sha256`/`kernel_sha256`/`initrd_sha256` name the blobs an image holds (none once
-- it failed); the same columns on instances name the blobs a live instance boots from.
-- Blob garbage collection deletes a blob neither references.
CREATE TABLE images (
    id TEXT PRIMARY KEY,
    tenant_id TEXT REFERENCES tenants(id),
    project_id TEXT REFERENCES projects(id),
    owner_key TEXT NOT NULL,
    name TEXT NOT NULL,
    status TEXT NOT NULL,
    disk_sha256 TEXT,
    kernel_sha256 TEXT,
    initrd_sha256 TEXT,
    sources TEXT NOT NULL,
    generation BIGINT NOT NULL,
    created_at BIGINT NOT NULL,
    updated_at BIGINT NOT NULL,
    doc TEXT NOT NULL,
    UNIQUE (owner_key, name)
);
CREATE INDEX images_tenant ON images (tenant_id, id);
CREATE INDEX images_project ON images (project_id, id);
CREATE INDEX images_disk ON images (disk_sha256);
CREATE INDEX images_kernel ON images (kernel_sha256);
CREATE INDEX images_initrd ON images (initrd_sha256);
CREATE TABLE image_blobs (
    sha256 TEXT PRIMARY KEY,
    size_bytes BIGINT NOT NULL,
    format TEXT NOT NULL,
    created_at BIGINT NOT NULL
);
ALTER TABLE instances ADD COLUMN boot_disk TEXT;
ALTER TABLE instances ADD COLUMN boot_kernel TEXT;
ALTER TABLE instances ADD COLUMN boot_initrd TEXT;
CREATE INDEX instances_boot_disk ON instances (boot_disk);
CREATE INDEX instances_boot_kernel ON instances (boot_kernel);
CREATE INDEX instances_boot_initrd ON instances (boot_initrd);
