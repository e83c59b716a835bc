//! The Plinth host agent (`plinth agent`).
//!
//! An agent dials the server (it opens no listening port), enrols once with a join token
//! and keeps the host credential it is given, pushes the host's inventory and heartbeats,
//! long-polls the host's desired state, converges the guests to it through a [`Runtime`]
//! and reports what it observes. One process can run many hosts: the `sim` runtime runs N
//! simulated hosts, one task each, over one shared HTTP client, for scale tests.
//!
//! Modules:
//! - [`client`]: the `/agent/v1` protocol calls and their errors;
//! - [`state`]: the state directory and the credentials kept in it;
//! - [`converge`]: the pure guest logic (spec → operations and reports), no I/O;
//! - [`runner`]: one host's loop (enrol, inventory, heartbeat, long-poll, converge, report);
//! - [`network`]: the tenant data path (VPC namespaces, bridges, VXLAN, nftables, DHCP);
//! - [`runtime`]: the [`Runtime`] trait and its implementations (`sim`);
//! - [`sim`]: synthetic hosts for the `sim` runtime (inventories);
//! - [`storage`]: the host's volume pool (qcow2 files, LUKS inside, wiped when deleted);
//! - [`discovery`]: the host's hardware inventory from `/proc` and `/sys`;
//! - [`kvm_probe`]: whether `/dev/kvm` works, by booting a tiny probe guest under it;
//! - [`console_ship`]: sending guests' serial console logs to the server;
//! - [`console_input`]: writing what users type to guests' serial consoles;
//! - [`backoff`]: capped exponential backoff with jitter.

#![warn(missing_docs)]

pub mod backoff;
pub mod client;
pub mod console_input;
pub mod console_ship;
pub mod console_watch;
pub mod converge;
pub mod discovery;
pub mod fdpass;
pub mod kvm_probe;
pub mod meter_ship;
pub mod network;
pub mod runner;
pub mod runtime;
pub mod sim;
pub mod state;
pub mod storage;

pub use client::{AgentClient, ClientError, HostClient};
pub use converge::{GuestTable, Step};
pub use runner::{HostError, HostSetup, Progress, RunnerConfig, run_host};
pub use runtime::{Actual, BlobSource, Discovered, GuestEvent, Happened, Op, OpKind, Runtime, RuntimeError};
pub use state::{StateDir, StateError, StoredCredential};

/// The agent's version, sent in heartbeats.
pub const AGENT_VERSION: &str = env!("CARGO_PKG_VERSION");
