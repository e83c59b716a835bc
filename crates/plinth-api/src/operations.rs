//! Operations: long-running actions (`op_…`) with status, progress, a typed error and,
//! for actions over many objects (a drain), per-item progress.

use crate::ids::*;
use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use utoipa::{IntoParams, ToSchema};

/// Where an operation is.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Deserialize, Serialize, ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum OperationStatus {
    Pending,
    Running,
    Succeeded,
    Failed,
    Cancelled,
}

impl OperationStatus {
    /// The status's wire name.
    pub fn as_str(self) -> &'static str {
        match self {
            OperationStatus::Pending => "pending",
            OperationStatus::Running => "running",
            OperationStatus::Succeeded => "succeeded",
            OperationStatus::Failed => "failed",
            OperationStatus::Cancelled => "cancelled",
        }
    }

    /// Succeeded, failed or cancelled: nothing more will happen.
    pub fn is_final(self) -> bool {
        matches!(self, OperationStatus::Succeeded | OperationStatus::Failed | OperationStatus::Cancelled)
    }
}

/// Why an operation failed: a stable code and a sentence.
#[derive(Clone, Debug, PartialEq, Eq, Deserialize, Serialize, ToSchema)]
pub struct OperationError {
    pub code: String,
    pub detail: String,
}

/// Progress of one object inside an operation (an instance moved by a drain).
#[derive(Clone, Debug, PartialEq, Eq, Deserialize, Serialize, ToSchema)]
pub struct OperationItem {
    pub target: String,
    /// `pending`, `moving`, `done`, `skipped`, `failed`.
    pub status: String,
    pub detail: Option<String>,
}

/// A long-running action.
#[derive(Clone, Debug, Deserialize, Serialize, ToSchema)]
pub struct Operation {
    pub id: OperationId,
    /// `instance.create`, `instance.delete`, `host.drain`, …
    pub kind: String,
    /// The id of the object acted on.
    pub target: String,
    pub tenant_id: Option<TenantId>,
    pub project_id: Option<ProjectId>,
    pub status: OperationStatus,
    /// Steps (or items) done out of `total`.
    pub done: u32,
    pub total: u32,
    /// What it is doing now.
    pub message: String,
    pub items: Vec<OperationItem>,
    pub error: Option<OperationError>,
    /// The user who asked for it (None: a reconciler).
    pub requested_by: Option<UserId>,
    pub started_at: Option<DateTime<Utc>>,
    pub finished_at: Option<DateTime<Utc>>,
    pub generation: i64,
    pub created_at: DateTime<Utc>,
    pub updated_at: DateTime<Utc>,
}

/// Filters of `GET /v1/operations`.
#[derive(Clone, Debug, Default, Deserialize, Serialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub struct OperationFilter {
    pub target: Option<String>,
    pub status: Option<OperationStatus>,
    pub kind: Option<String>,
}

/// Query of `GET /v1/operations/{id}`.
#[derive(Clone, Debug, Default, Deserialize, Serialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub struct OperationWait {
    /// Long-poll: answer as soon as the operation is final, or after this long (`30s`,
    /// `500ms`, at most `60s`).
    pub wait: Option<String>,
}

/// A background task (reconciler) and how its runs went, in the answering server.
#[derive(Clone, Debug, Deserialize, Serialize, ToSchema)]
pub struct BackgroundTask {
    pub name: String,
    pub description: String,
    pub period_seconds: f64,
    pub runs: u64,
    pub last_started_at: Option<DateTime<Utc>>,
    pub last_finished_at: Option<DateTime<Utc>>,
    /// What the last run did (counts by kind).
    pub last_result: serde_json::Value,
    pub last_error: Option<String>,
}

/// Answer of a host action: the host as it is now, and the operation that continues in
/// the background, if any (drain, recovery).
#[derive(Clone, Debug, Deserialize, Serialize, ToSchema)]
pub struct HostAction {
    pub host: crate::inventory::Host,
    pub operation: Option<Operation>,
}
