//! Wire types shared by the Plinth server, agent and CLI.
//!
//! Owns the shape of everything that crosses a process boundary: typed ids, resources,
//! request bodies, the problem+json error model and list pages. It holds no behaviour
//! beyond construction and parsing; validation lives in `plinth-domain`.

pub mod agent;
pub mod billing;
pub mod compute;
pub mod identity;
pub mod ids;
pub mod images;
pub mod inventory;
pub mod network;
pub mod operations;
pub mod page;
pub mod problem;
pub mod shapes;
pub mod storage;
pub mod system;

pub use agent::*;
pub use billing::*;
pub use compute::*;
pub use identity::*;
pub use ids::*;
pub use images::*;
pub use inventory::*;
pub use network::*;
pub use operations::*;
pub use page::*;
pub use problem::*;
pub use shapes::*;
pub use storage::*;
pub use system::*;
