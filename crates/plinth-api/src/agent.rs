//! Agent protocol wire types (the separate `/agent/v1` surface).

use crate::ids::*;
use crate::inventory::HostInventory;
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

/// Body of `POST /agent/v1/enroll`.
#[derive(Clone, Debug, Deserialize, Serialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct EnrollRequest {
    /// The `pjt_…` secret from `POST /v1/host-join-tokens`.
    pub join_token: String,
    /// The host's name (DNS label).
    pub hostname: String,
    #[serde(default)]
    pub inventory: Option<HostInventory>,
}

/// Answer to a successful enrolment.
#[derive(Clone, Debug, Deserialize, Serialize, ToSchema)]
pub struct EnrollResponse {
    pub host_id: HostId,
    /// The per-host credential (`phc_…`), shown once; the agent keeps it 0600.
    pub credential: String,
}
