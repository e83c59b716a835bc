-- Block storage (issue 19). Volume types are the operators' offer; volumes are a
-- project's. A volume's encryption key is stored only wrapped (sealed with the server's
-- key-encryption key, bound to the volume's id) and set to NULL in the transaction that
-- deletes the volume: from then on its data is ciphertext nobody can open (crypto-erase).
-- A deleted volume's row stays, with its wipe evidence; names are unique among the rest.
CREATE TABLE volume_types (
    id TEXT PRIMARY KEY,
    name TEXT NOT NULL UNIQUE,
    generation BIGINT NOT NULL,
    created_at BIGINT NOT NULL,
    updated_at BIGINT NOT NULL,
    doc TEXT NOT NULL
);
CREATE TABLE volumes (
    id TEXT PRIMARY KEY,
    tenant_id TEXT NOT NULL REFERENCES tenants(id),
    project_id TEXT NOT NULL REFERENCES projects(id),
    name TEXT NOT NULL,
    volume_type_id TEXT NOT NULL REFERENCES volume_types(id),
    host_id TEXT REFERENCES hosts(id),
    state TEXT NOT NULL,
    live INTEGER,
    wrapped_key TEXT,
    spec_generation BIGINT NOT NULL DEFAULT 1,
    generation BIGINT NOT NULL,
    created_at BIGINT NOT NULL,
    updated_at BIGINT NOT NULL,
    doc TEXT NOT NULL
);
CREATE UNIQUE INDEX volumes_live_name ON volumes (project_id, name, live);
CREATE INDEX volumes_host ON volumes (host_id, state);
