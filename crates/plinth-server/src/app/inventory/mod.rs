//! Inventory (operators write it): sites, racks, shapes (everyone reads them) and the join
//! tokens hosts enrol with.

pub mod join_tokens;
pub mod racks;
pub mod shapes;
pub mod sites;
