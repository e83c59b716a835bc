//! Shapes: the repeatable sizes tenants consume (vCPU, memory, disk, GPUs, CPU policy,
//! hugepages, runtime class).

use crate::ids::*;
use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

/// How guest vCPUs map to host CPUs.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Deserialize, Serialize, ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum CpuPolicy {
    /// Floating vCPUs, overcommittable.
    Shared,
    /// Each vCPU pinned to its own host CPU.
    Dedicated,
}

/// Backing page size for guest memory.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Deserialize, Serialize, ToSchema)]
pub enum Hugepages {
    #[serde(rename = "none")]
    None,
    #[serde(rename = "2M")]
    TwoMiB,
    #[serde(rename = "1G")]
    OneGiB,
}

impl Hugepages {
    /// Page size in MiB, or None for ordinary pages.
    pub fn size_mib(self) -> Option<u64> {
        match self {
            Hugepages::None => None,
            Hugepages::TwoMiB => Some(2),
            Hugepages::OneGiB => Some(1024),
        }
    }
}

/// What kind of machine the shape runs as.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Deserialize, Serialize, ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum RuntimeClass {
    Vm,
    Microvm,
    Baremetal,
}

/// GPUs a shape asks for.
#[derive(Clone, Debug, PartialEq, Eq, Deserialize, Serialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct GpuRequest {
    /// GPU class, e.g. `nvidia-h100-80gb`.
    pub class: String,
    pub count: u32,
}

/// A shape: operator-defined, tenant-readable.
#[derive(Clone, Debug, Deserialize, Serialize, ToSchema)]
pub struct Shape {
    pub id: ShapeId,
    /// Name, e.g. `c2.large` or `g1.h100x8`: lowercase letters, digits, `-` and `.`.
    pub name: String,
    pub description: String,
    pub vcpus: u32,
    pub memory_mib: u64,
    pub disk_gib: u64,
    pub gpu: Option<GpuRequest>,
    pub cpu_policy: CpuPolicy,
    pub hugepages: Hugepages,
    pub runtime_class: RuntimeClass,
    pub generation: i64,
    pub created_at: DateTime<Utc>,
    pub updated_at: DateTime<Utc>,
}

/// Body of `POST /v1/shapes`.
#[derive(Clone, Debug, Deserialize, Serialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct ShapeCreate {
    pub name: String,
    #[serde(default)]
    pub description: Option<String>,
    pub vcpus: u32,
    pub memory_mib: u64,
    #[serde(default)]
    pub disk_gib: u64,
    #[serde(default)]
    pub gpu: Option<GpuRequest>,
    #[serde(default = "default_cpu_policy")]
    pub cpu_policy: CpuPolicy,
    #[serde(default = "default_hugepages")]
    pub hugepages: Hugepages,
    #[serde(default = "default_runtime_class")]
    pub runtime_class: RuntimeClass,
}

fn default_cpu_policy() -> CpuPolicy {
    CpuPolicy::Shared
}
fn default_hugepages() -> Hugepages {
    Hugepages::None
}
fn default_runtime_class() -> RuntimeClass {
    RuntimeClass::Vm
}

/// Body of `PATCH /v1/shapes/{id}`. Sizes are immutable once instances may use them;
/// make a new shape instead.
#[derive(Clone, Debug, Default, Deserialize, Serialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct ShapeUpdate {
    pub description: Option<String>,
}

/// Filters of `GET /v1/shapes`.
#[derive(Clone, Debug, Default, Deserialize, Serialize, utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
pub struct ShapeFilter {
    /// Only the shape with this name.
    pub name: Option<String>,
}
