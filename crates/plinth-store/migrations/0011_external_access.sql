-- External access (issue 18). A NIC's SNAT address (an integer, like floating IPs'; NULL
-- without one), allocated from an IP pool with the pool's row locked, as floating IPs
-- are: an address is in at most one of floating_ips.address and nics.snat_address.
ALTER TABLE nics ADD COLUMN snat_address BIGINT;
CREATE UNIQUE INDEX nics_snat_address ON nics (snat_address);
-- The provider router's address on a pool's link (NULL: none).
ALTER TABLE ip_pools ADD COLUMN gateway TEXT;
-- A floating IP's attach or detach is applied once this host has applied this network
-- generation (NULL: nothing to wait for).
ALTER TABLE floating_ips ADD COLUMN barrier_host TEXT;
ALTER TABLE floating_ips ADD COLUMN barrier_generation BIGINT;
CREATE INDEX floating_ips_nic ON floating_ips (nic_id);
