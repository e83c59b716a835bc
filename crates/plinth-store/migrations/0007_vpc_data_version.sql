-- Bumped with every change a VPC's hosts must learn (`Tx::network_changed`): the server
-- keeps the VPC's rows decoded in memory while this stays the same, so the hosts of one
-- VPC polling after one change read its rows once, not once each.
ALTER TABLE vpcs ADD COLUMN data_version BIGINT NOT NULL DEFAULT 0;
-- Bumped whenever a rule of the VPC's groups is written or deleted (`Tx::insert_rule`,
-- `Tx::delete_rules`, the only writers): while it stays the same, a re-read of the VPC
-- keeps the rules it decoded (a VPC may hold 10,000s of them).
ALTER TABLE vpcs ADD COLUMN rules_version BIGINT NOT NULL DEFAULT 0;
