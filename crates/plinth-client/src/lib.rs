//! Plinth's HTTP clients, shared by the CLI, the agent and the tests: how a connection to a
//! Plinth server is made ([`connect`]) and, above it, the typed `/v1` client ([`Client`]).
//!
//! Every `/v1` call takes and answers `plinth-api` wire types, so an API change that breaks
//! a caller fails to compile. Answers come as [`Doc`]s: the typed value and the document as
//! the server sent it (for `-o json`, which prints it unchanged).
//!
//! Owns transport and wire-typed calls; it holds no CLI formatting and no agent logic.

pub mod client;
pub mod connect;
pub mod error;
pub mod resolve;
pub mod resources;
pub mod v1;

pub use client::{Client, Doc};
pub use error::{Error, Refused, Result};
pub use resources::*;
