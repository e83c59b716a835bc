//! Block storage use cases: [`volume_types`] (operators' offer) and [`volumes`] (a
//! project's volumes: placement on a host's pool, the sealed per-volume key, delete as
//! crypto-erase then wipe, and the agent's reports that move a volume through its states
//! with its `disk_gib_seconds` interval), [`attachments`] (volumes given to instances) and
//! [`driver`] (the boundary a backend fits: local qcow2 now, Ceph RBD behind a client).
//! The host side is `plinth_agent::storage` (the pool) and the QEMU runtime (the disks).

pub mod attachments;
pub mod driver;
pub mod snapshots;
pub mod volume_types;
pub mod volumes;
