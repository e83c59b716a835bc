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

/// One timed phase of a host's work, as its agent reports it (`prepare`, `qemu_launch`,
/// `qmp_handshake`, …): when it began on the host's clock and how long it took.
#[derive(Clone, Debug, PartialEq, Deserialize, Serialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct PhaseTiming {
    pub phase: String,
    pub started_at: DateTime<Utc>,
    /// Milliseconds, to the microsecond.
    pub took_ms: f64,
}

/// How long one step of an operation took. A step that waited for a host carries the
/// phases the host's agent reported for it (`host`), so the time the step spent can be
/// split into the agent's work and the time in between (the wake-ups, the reports).
#[derive(Clone, Debug, PartialEq, Deserialize, Serialize, ToSchema)]
pub struct StepTiming {
    pub step: String,
    pub started_at: DateTime<Utc>,
    /// Milliseconds, to the microsecond.
    pub took_ms: f64,
    /// `done`, `failed` or `undone`.
    pub outcome: String,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub host: Vec<PhaseTiming>,
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
    /// Each step's start and duration, in the order they ran (sagas only; the steps a
    /// request runs inline share its start).
    #[serde(default)]
    pub timings: Vec<StepTiming>,
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
