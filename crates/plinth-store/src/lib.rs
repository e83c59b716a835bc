//! Plinth persistence: one store API over two backends, SQLite (embedded default, WAL) and
//! PostgreSQL (the HA form, several server replicas).
//!
//! Every query is written once in portable SQL (TEXT and BIGINT columns, `$n` placeholders)
//! and runs through sqlx's `Any` driver, so one conformance suite proves both backends.
//! Tenancy is enforced here: every read or write of a tenant-scoped table takes a
//! [`Scope`](plinth_domain::authz::Scope) and filters by it. This crate owns transactions,
//! migrations and optimistic concurrency (the `generation` column); it does not decide who
//! may do what — that is the server's job with `plinth-domain`'s rules.

mod audit;
mod auth;
mod billing;
mod checkpoint;
mod compute;
mod console;
mod console_input;
mod console_session;
mod crud;
mod enroll;
mod error;
mod fleet;
mod idempotency;
mod images;
mod ledger;
mod migrate;
mod netspec;
mod network;
mod quota;
mod resource;
mod sql;
mod storage;
mod store;
mod tally;
mod tx;
mod writer;

pub use audit::AuditEntry;
pub use auth::TokenRow;
pub use compute::{InstanceChange, SagaLogEntry};
pub use console::{CONSOLE_KEEP, ConsoleWindow};
pub use console_input::ConsoleInputRow;
pub use console_session::{ConsoleSessionRow, ConsoleTicketRow};
pub use error::StoreError;
pub use fleet::{FleetCounts, PoolCounts};
pub use idempotency::IdempotencyState;
pub use images::IMAGE_FILTERS;
pub use ledger::{CounterReading, LedgerOwner, UsageFilter, record_of};
pub use network::{NamedRange, NicRef};
pub use resource::{Resource, Val, image_owner_key, image_status_str, invoice_status_str, lifecycle_str};
pub use storage::volume_state_str;
pub use store::{Backend, Store, now_micros};
pub use tx::Tx;
