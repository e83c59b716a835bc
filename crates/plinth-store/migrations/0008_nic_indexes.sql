-- Covering indexes for the data plane's reads at thousands of NICs per VPC (bench/net,
-- 1,000 NICs per host): a VPC's hosts (`DISTINCT vpc_id, host_id`), a host's VPCs, a VPC's
-- instances with a NIC, and a VPC's port numbers (a new NIC takes the first free one) are
-- read from the index alone instead of from every NIC row of the VPC (3-6 ms each on
-- SQLite at 2,000 NICs, several times per NIC change; 0.3-2 ms now). They replace the
-- single-column indexes they begin with.
DROP INDEX nics_vpc;
DROP INDEX nics_host;
CREATE INDEX nics_vpc_host ON nics (vpc_id, host_id, instance_id);
CREATE INDEX nics_host_vpc ON nics (host_id, vpc_id);
CREATE INDEX nics_vpc_port ON nics (vpc_id, port);
