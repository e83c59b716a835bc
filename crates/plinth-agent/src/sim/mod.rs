//! Synthetic hosts for the `sim` runtime (scale tests only: no guest runs).
//!
//! Owns what a simulated host *is* (its inventory, by profile); how its guests behave is
//! [`crate::runtime::sim`]'s business.

pub mod inventory;
pub mod network;
