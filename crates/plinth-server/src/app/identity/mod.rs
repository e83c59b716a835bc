//! Identity: tenants, their projects, users, API tokens and the role bindings that grant
//! users their roles, and who a credential (a token, a console session) names.

pub mod audit;
pub mod projects;
pub mod role_bindings;
pub mod sessions;
pub mod tenants;
pub mod tokens;
pub mod users;
