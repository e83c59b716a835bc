//! System wire types: the test clock (`/v1/system/clock`).

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

/// Body of `POST /v1/system/clock`.
#[derive(Clone, Debug, Deserialize, Serialize, ToSchema)]
pub struct ClockAdvance {
    /// Seconds to move the clock on by (1 to 366 days' worth).
    pub advance_seconds: u64,
}

/// The server's clock as lifecycle and metering see it.
#[derive(Clone, Debug, Deserialize, Serialize, ToSchema)]
pub struct ClockNow {
    pub now: DateTime<Utc>,
}
