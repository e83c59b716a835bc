-- Metering and billing: the usage ledger (intervals written in the same transaction as the
-- lifecycle transition that opens or closes them, counter samples deduplicated per source
-- and sequence), quotas and their running usage, price books, invoices, credit grants,
-- commitments, budgets and tenants' billing settings.
--
-- The ledger has typed columns rather than a JSON document: it is the largest table and
-- invoices aggregate it. Times are microseconds since the epoch; `quantity` is millionths
-- of the meter's unit (null while an interval is open).
CREATE TABLE usage_records (
    id TEXT PRIMARY KEY,
    tenant_id TEXT NOT NULL,
    project_id TEXT NOT NULL,
    resource_id TEXT NOT NULL,
    resource_kind TEXT NOT NULL,
    meter TEXT NOT NULL,
    dimension TEXT NOT NULL,
    start_at BIGINT NOT NULL,
    end_at BIGINT,
    multiplier BIGINT NOT NULL,
    quantity BIGINT,
    first_start BIGINT NOT NULL,
    period_start BIGINT NOT NULL,
    attributes TEXT NOT NULL,
    cause TEXT NOT NULL,
    dedup_key TEXT,
    created_at BIGINT NOT NULL
);
-- At most one open interval per resource and meter: nothing is ever metered twice.
CREATE UNIQUE INDEX usage_one_open ON usage_records (resource_id, meter) WHERE end_at IS NULL;
CREATE UNIQUE INDEX usage_dedup ON usage_records (dedup_key);
CREATE INDEX usage_tenant_period ON usage_records (tenant_id, period_start);
CREATE INDEX usage_resource ON usage_records (resource_id, start_at);
CREATE INDEX usage_open_start ON usage_records (period_start) WHERE end_at IS NULL;
-- The last sample of each counter source (for deltas and reset detection).
CREATE TABLE counter_sources (
    source TEXT PRIMARY KEY,
    last_seq BIGINT NOT NULL,
    last_value BIGINT NOT NULL,
    updated_at BIGINT NOT NULL
);
-- Quota limits and usage per scope (a tenant or a project id) and resource
-- (`instances`, `vcpus`, `memory_mib`, `disk_gib`, `gpus:<class>`). Usage moves in the
-- same transaction as the claim or release that changes it.
CREATE TABLE quota_limits (
    scope_id TEXT NOT NULL,
    resource TEXT NOT NULL,
    max_value BIGINT NOT NULL,
    updated_at BIGINT NOT NULL,
    PRIMARY KEY (scope_id, resource)
);
CREATE TABLE quota_usage (
    scope_id TEXT NOT NULL,
    resource TEXT NOT NULL,
    used BIGINT NOT NULL,
    PRIMARY KEY (scope_id, resource)
);
CREATE TABLE price_books (
    id TEXT PRIMARY KEY,
    name TEXT NOT NULL,
    version BIGINT NOT NULL,
    effective_from BIGINT NOT NULL,
    generation BIGINT NOT NULL,
    created_at BIGINT NOT NULL,
    updated_at BIGINT NOT NULL,
    doc TEXT NOT NULL,
    UNIQUE (name, version)
);
CREATE TABLE invoices (
    id TEXT PRIMARY KEY,
    tenant_id TEXT NOT NULL REFERENCES tenants(id),
    period_start BIGINT NOT NULL,
    period TEXT NOT NULL,
    status TEXT NOT NULL,
    kind TEXT NOT NULL,
    number TEXT UNIQUE,
    total BIGINT NOT NULL,
    generation BIGINT NOT NULL,
    created_at BIGINT NOT NULL,
    updated_at BIGINT NOT NULL,
    doc TEXT NOT NULL
);
CREATE INDEX invoices_tenant ON invoices (tenant_id, period_start);
-- One live (draft or finalized) invoice per tenant and period.
CREATE UNIQUE INDEX invoices_live ON invoices (tenant_id, period_start) WHERE status <> 'void' AND kind = 'invoice';
CREATE TABLE invoice_numbers (
    id BIGINT PRIMARY KEY,
    next BIGINT NOT NULL
);
INSERT INTO invoice_numbers (id, next) VALUES (1, 1);
CREATE TABLE credit_grants (
    id TEXT PRIMARY KEY,
    tenant_id TEXT NOT NULL REFERENCES tenants(id),
    generation BIGINT NOT NULL,
    created_at BIGINT NOT NULL,
    updated_at BIGINT NOT NULL,
    doc TEXT NOT NULL
);
CREATE INDEX credit_grants_tenant ON credit_grants (tenant_id);
CREATE TABLE commitments (
    id TEXT PRIMARY KEY,
    tenant_id TEXT NOT NULL REFERENCES tenants(id),
    generation BIGINT NOT NULL,
    created_at BIGINT NOT NULL,
    updated_at BIGINT NOT NULL,
    doc TEXT NOT NULL
);
CREATE INDEX commitments_tenant ON commitments (tenant_id);
CREATE TABLE budgets (
    id TEXT PRIMARY KEY,
    tenant_id TEXT NOT NULL REFERENCES tenants(id),
    action TEXT NOT NULL,
    exceeded_period BIGINT,
    generation BIGINT NOT NULL,
    created_at BIGINT NOT NULL,
    updated_at BIGINT NOT NULL,
    doc TEXT NOT NULL
);
CREATE INDEX budgets_tenant ON budgets (tenant_id);
CREATE TABLE billing_accounts (
    tenant_id TEXT PRIMARY KEY REFERENCES tenants(id),
    doc TEXT NOT NULL,
    updated_at BIGINT NOT NULL
);
