//! Plinth's pure logic: validation rules, roles and permissions, lifecycle state machines.
//!
//! No I/O lives here: no tokio, no sqlx, no HTTP. Everything is a function of its inputs,
//! so it can be property-tested and reused by the server, the agent and the CLI.

pub mod authz;
pub mod cloud_init;
pub mod host_state;
pub mod instance_state;
pub mod metering;
pub mod netspec;
pub mod network;
pub mod placement;
pub mod quota;
pub mod rating;
pub mod validate;
