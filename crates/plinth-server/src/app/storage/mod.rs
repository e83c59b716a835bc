//! Block storage use cases: [`volume_types`] (operators' offer) and [`volumes`] (a
//! project's volumes: placement on a host's pool, the sealed per-volume key, delete as
//! crypto-erase then wipe, and the agent's reports that move a volume through its states
//! with its `disk_gib_seconds` interval). The host side is `plinth_agent::storage`.

pub mod volume_types;
pub mod volumes;
