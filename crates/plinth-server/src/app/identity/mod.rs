//! Identity: tenants, their projects, users, API tokens and the role bindings that grant
//! users their roles.

pub mod audit;
pub mod projects;
pub mod role_bindings;
pub mod tenants;
pub mod tokens;
pub mod users;
