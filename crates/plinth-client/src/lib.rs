//! Plinth's HTTP clients, shared by the CLI, the agent and the tests: how a connection to a
//! Plinth server is made ([`connect`]) and, above it, the typed `/v1` client.
//!
//! Owns transport and wire-typed calls; it holds no CLI formatting and no agent logic.

pub mod connect;
