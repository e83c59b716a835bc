-- Per security group (issue 18): the VPC's firewall generation at the last change to what
-- the group's members' filters are made of (its rules; any membership change in the VPC,
-- which moves every group of it). A NIC's filter generation is the highest of its groups',
-- so a rule change moves only its group's members and is sent only to their hosts.
ALTER TABLE security_groups ADD COLUMN filter_generation BIGINT NOT NULL DEFAULT 0;
UPDATE security_groups SET filter_generation = (SELECT v.firewall_generation FROM vpcs v WHERE v.id = security_groups.vpc_id);
