-- Bumped with every change a VPC's hosts must learn (`Tx::network_changed`): the server
-- keeps the VPC's rows decoded in memory while this stays the same, so the hosts of one
-- VPC polling after one change read its rows once, not once each.
ALTER TABLE vpcs ADD COLUMN data_version BIGINT NOT NULL DEFAULT 0;
