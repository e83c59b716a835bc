-- Tenant networking: VPCs, subnets, security groups and their rules, network interfaces
-- (NICs) with their group memberships, and what each host's agent applied.
-- Addresses are kept as integers beside the JSON doc so that uniqueness (one address per
-- subnet, one MAC and one port number per VPC) is a constraint, not a check in code.
-- Every VNI in use, VPC's and subnets' alike: one platform-wide unique space.
CREATE TABLE vnis (
    vni BIGINT PRIMARY KEY,
    owner_id TEXT NOT NULL
);
CREATE TABLE vpcs (
    id TEXT PRIMARY KEY,
    tenant_id TEXT NOT NULL REFERENCES tenants(id),
    project_id TEXT NOT NULL REFERENCES projects(id),
    name TEXT NOT NULL,
    vni BIGINT NOT NULL UNIQUE,
    -- 1 for the project's default VPC, NULL otherwise (so the unique index allows one).
    is_default BIGINT,
    -- Bumped by any change to the VPC's groups, rules or memberships.
    firewall_generation BIGINT NOT NULL DEFAULT 1,
    generation BIGINT NOT NULL,
    created_at BIGINT NOT NULL,
    updated_at BIGINT NOT NULL,
    doc TEXT NOT NULL,
    UNIQUE (project_id, name),
    UNIQUE (project_id, is_default)
);
CREATE INDEX vpcs_tenant ON vpcs (tenant_id, id);
CREATE TABLE subnets (
    id TEXT PRIMARY KEY,
    tenant_id TEXT NOT NULL REFERENCES tenants(id),
    project_id TEXT NOT NULL REFERENCES projects(id),
    vpc_id TEXT NOT NULL REFERENCES vpcs(id),
    name TEXT NOT NULL,
    -- The block as integers: first address and last address (inclusive).
    first_addr BIGINT NOT NULL,
    last_addr BIGINT NOT NULL,
    -- Short number unique within the VPC: names the subnet's bridge on hosts.
    idx BIGINT NOT NULL,
    -- The subnet's VXLAN segment (each subnet bridge needs its own VXLAN device).
    vni BIGINT NOT NULL UNIQUE,
    generation BIGINT NOT NULL,
    created_at BIGINT NOT NULL,
    updated_at BIGINT NOT NULL,
    doc TEXT NOT NULL,
    UNIQUE (vpc_id, name),
    UNIQUE (vpc_id, idx)
);
CREATE INDEX subnets_tenant ON subnets (tenant_id, id);
CREATE INDEX subnets_vpc ON subnets (vpc_id);
CREATE TABLE security_groups (
    id TEXT PRIMARY KEY,
    tenant_id TEXT NOT NULL REFERENCES tenants(id),
    project_id TEXT NOT NULL REFERENCES projects(id),
    vpc_id TEXT NOT NULL REFERENCES vpcs(id),
    name TEXT NOT NULL,
    is_default BIGINT,
    generation BIGINT NOT NULL,
    created_at BIGINT NOT NULL,
    updated_at BIGINT NOT NULL,
    doc TEXT NOT NULL,
    UNIQUE (vpc_id, name),
    UNIQUE (vpc_id, is_default)
);
CREATE INDEX security_groups_tenant ON security_groups (tenant_id, id);
CREATE TABLE security_group_rules (
    id TEXT PRIMARY KEY,
    security_group_id TEXT NOT NULL REFERENCES security_groups(id),
    tenant_id TEXT NOT NULL REFERENCES tenants(id),
    vpc_id TEXT NOT NULL REFERENCES vpcs(id),
    remote_group_id TEXT REFERENCES security_groups(id),
    created_at BIGINT NOT NULL,
    doc TEXT NOT NULL
);
CREATE INDEX security_group_rules_group ON security_group_rules (security_group_id);
CREATE INDEX security_group_rules_remote ON security_group_rules (remote_group_id);
CREATE TABLE nics (
    id TEXT PRIMARY KEY,
    tenant_id TEXT NOT NULL REFERENCES tenants(id),
    project_id TEXT NOT NULL REFERENCES projects(id),
    vpc_id TEXT NOT NULL REFERENCES vpcs(id),
    subnet_id TEXT NOT NULL REFERENCES subnets(id),
    name TEXT NOT NULL,
    mac TEXT NOT NULL,
    ipv4 BIGINT NOT NULL,
    -- Unique within the VPC (> 0): the port's packet mark and device name on its host.
    port BIGINT NOT NULL,
    instance_id TEXT REFERENCES instances(id),
    slot BIGINT,
    -- Made by the instance's create (deleted with it) rather than attached to it.
    owned_by_instance BIGINT NOT NULL DEFAULT 0,
    -- An operator's binding to a host without an instance.
    bound_host_id TEXT REFERENCES hosts(id),
    -- The host carrying the NIC now (its instance's host, or the operator's binding),
    -- kept by the data-plane code whenever either changes.
    host_id TEXT REFERENCES hosts(id),
    -- JSON {host_id: generation}: the NIC is reachable from the VPC once each of these
    -- hosts has applied that network generation. NULL: not computed since the last bind.
    barrier TEXT,
    -- The agent's last report: JSON [ComponentStatus], the filter generation loaded, when.
    observed_components TEXT,
    observed_filter_generation BIGINT,
    observed_at BIGINT,
    generation BIGINT NOT NULL,
    created_at BIGINT NOT NULL,
    updated_at BIGINT NOT NULL,
    doc TEXT NOT NULL,
    UNIQUE (project_id, name),
    UNIQUE (subnet_id, ipv4),
    UNIQUE (vpc_id, mac),
    UNIQUE (vpc_id, port),
    UNIQUE (instance_id, slot)
);
CREATE INDEX nics_tenant ON nics (tenant_id, id);
CREATE INDEX nics_vpc ON nics (vpc_id);
CREATE INDEX nics_instance ON nics (instance_id);
CREATE INDEX nics_host ON nics (host_id);
CREATE TABLE nic_security_groups (
    nic_id TEXT NOT NULL REFERENCES nics(id),
    security_group_id TEXT NOT NULL REFERENCES security_groups(id),
    vpc_id TEXT NOT NULL REFERENCES vpcs(id),
    position BIGINT NOT NULL,
    PRIMARY KEY (nic_id, security_group_id)
);
CREATE INDEX nic_security_groups_group ON nic_security_groups (security_group_id);
-- Per host: the network generation the agent last applied and its underlay address.
-- The desired side is hosts.desired_generation (network changes bump it like instance
-- changes, so the agent's one long-poll carries both).
CREATE TABLE host_networks (
    host_id TEXT PRIMARY KEY REFERENCES hosts(id),
    applied_generation BIGINT NOT NULL DEFAULT 0,
    vtep TEXT,
    reported_at BIGINT
);
