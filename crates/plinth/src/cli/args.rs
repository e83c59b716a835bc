//! Flags of the create and update commands, and how each becomes a JSON body.

use super::Body;
use clap::Args;
use serde_json::{Map, Value, json};

/// `k=v` label flags into a JSON object.
pub fn labels(kv: &[String]) -> Value {
    let mut m = Map::new();
    for s in kv {
        let (k, v) = s.split_once('=').unwrap_or((s.as_str(), ""));
        m.insert(k.to_string(), Value::String(v.to_string()));
    }
    Value::Object(m)
}

/// Drops null fields, so unset flags leave the server's defaults (and, on update, the
/// current values) alone.
pub fn compact(v: Value) -> Value {
    match v {
        Value::Object(m) => Value::Object(m.into_iter().filter(|(_, v)| !v.is_null()).collect()),
        other => other,
    }
}

#[derive(Args, Debug)]
pub struct TenantCreateArgs {
    /// DNS-label name, unique platform-wide.
    pub name: String,
    #[arg(long)]
    pub display_name: Option<String>,
    /// A label, k=v (repeatable).
    #[arg(long = "label")]
    pub labels: Vec<String>,
}
impl Body for TenantCreateArgs {
    fn body(&self) -> Value {
        compact(json!({ "name": self.name, "display_name": self.display_name, "labels": labels(&self.labels) }))
    }
}

#[derive(Args, Debug)]
pub struct TenantUpdateArgs {
    #[arg(long)]
    pub display_name: Option<String>,
    /// Replace the labels, k=v (repeatable).
    #[arg(long = "label")]
    pub labels: Option<Vec<String>>,
}
impl Body for TenantUpdateArgs {
    fn body(&self) -> Value {
        compact(json!({ "display_name": self.display_name, "labels": self.labels.as_deref().map(labels) }))
    }
}

#[derive(Args, Debug)]
pub struct ProjectCreateArgs {
    /// DNS-label name, unique in the tenant.
    pub name: String,
    /// Tenant id (operators; tenant users default to their own).
    #[arg(long)]
    pub tenant: Option<String>,
    #[arg(long)]
    pub description: Option<String>,
    #[arg(long = "label")]
    pub labels: Vec<String>,
}
impl Body for ProjectCreateArgs {
    fn body(&self) -> Value {
        compact(
            json!({ "name": self.name, "tenant_id": self.tenant, "description": self.description, "labels": labels(&self.labels) }),
        )
    }
}

#[derive(Args, Debug)]
pub struct ProjectUpdateArgs {
    #[arg(long)]
    pub description: Option<String>,
    #[arg(long = "label")]
    pub labels: Option<Vec<String>>,
}
impl Body for ProjectUpdateArgs {
    fn body(&self) -> Value {
        compact(json!({ "description": self.description, "labels": self.labels.as_deref().map(labels) }))
    }
}

#[derive(Args, Debug)]
pub struct UserCreateArgs {
    /// DNS-label name, unique in the tenant.
    pub name: String,
    /// Tenant id (operators; omit for a platform user).
    #[arg(long)]
    pub tenant: Option<String>,
    #[arg(long)]
    pub email: Option<String>,
}
impl Body for UserCreateArgs {
    fn body(&self) -> Value {
        compact(json!({ "name": self.name, "tenant_id": self.tenant, "email": self.email }))
    }
}

#[derive(Args, Debug)]
pub struct UserUpdateArgs {
    #[arg(long)]
    pub email: Option<String>,
}
impl Body for UserUpdateArgs {
    fn body(&self) -> Value {
        compact(json!({ "email": self.email }))
    }
}

#[derive(Args, Debug)]
pub struct TokenCreateArgs {
    /// DNS-label name for the token.
    pub name: String,
    /// The user the token acts as (default: you).
    #[arg(long)]
    pub user: Option<String>,
    /// Lifetime in seconds (default: no expiry).
    #[arg(long)]
    pub expires_in: Option<u64>,
}
impl Body for TokenCreateArgs {
    fn body(&self) -> Value {
        compact(json!({ "name": self.name, "user_id": self.user, "expires_in_seconds": self.expires_in }))
    }
}

#[derive(Args, Debug)]
pub struct TokenUpdateArgs {
    #[arg(long)]
    pub name: Option<String>,
}
impl Body for TokenUpdateArgs {
    fn body(&self) -> Value {
        compact(json!({ "name": self.name }))
    }
}

#[derive(Args, Debug)]
pub struct RoleBindingCreateArgs {
    /// The user id.
    #[arg(long)]
    pub user: String,
    /// operator, tenant-admin, member or viewer.
    #[arg(long)]
    pub role: String,
    /// Narrow a member/viewer binding to this project id.
    #[arg(long)]
    pub project: Option<String>,
}
impl Body for RoleBindingCreateArgs {
    fn body(&self) -> Value {
        compact(json!({ "user_id": self.user, "role": self.role, "project_id": self.project }))
    }
}

#[derive(Args, Debug)]
pub struct RoleBindingUpdateArgs {
    #[arg(long)]
    pub role: Option<String>,
}
impl Body for RoleBindingUpdateArgs {
    fn body(&self) -> Value {
        compact(json!({ "role": self.role }))
    }
}

#[derive(Args, Debug)]
pub struct SiteCreateArgs {
    pub name: String,
    #[arg(long)]
    pub description: Option<String>,
    #[arg(long)]
    pub location: Option<String>,
}
impl Body for SiteCreateArgs {
    fn body(&self) -> Value {
        compact(json!({ "name": self.name, "description": self.description, "location": self.location }))
    }
}

#[derive(Args, Debug)]
pub struct DescriptionArgs {
    #[arg(long)]
    pub description: Option<String>,
}
impl Body for DescriptionArgs {
    fn body(&self) -> Value {
        compact(json!({ "description": self.description }))
    }
}

#[derive(Args, Debug)]
pub struct RackCreateArgs {
    pub name: String,
    /// The site id.
    #[arg(long)]
    pub site: String,
    #[arg(long)]
    pub description: Option<String>,
}
impl Body for RackCreateArgs {
    fn body(&self) -> Value {
        compact(json!({ "name": self.name, "site_id": self.site, "description": self.description }))
    }
}

#[derive(Args, Debug)]
pub struct BmcArgs {
    /// BMC address (host or URL).
    #[arg(long)]
    pub bmc_address: Option<String>,
    /// redfish or ipmi.
    #[arg(long, default_value = "redfish")]
    pub bmc_protocol: String,
    #[arg(long)]
    pub bmc_username: Option<String>,
    /// Write-only: never shown again.
    #[arg(long)]
    pub bmc_password: Option<String>,
}
impl BmcArgs {
    fn value(&self) -> Value {
        match &self.bmc_address {
            None => Value::Null,
            Some(a) => compact(json!({
                "address": a, "protocol": self.bmc_protocol, "username": self.bmc_username, "password": self.bmc_password
            })),
        }
    }
}

fn ownership(dedicated_to: &Option<String>, shared: bool) -> Value {
    match (dedicated_to, shared) {
        (Some(t), _) => json!({ "kind": "dedicated", "tenant_id": t }),
        (None, true) => json!({ "kind": "shared" }),
        (None, false) => Value::Null,
    }
}

#[derive(Args, Debug)]
pub struct HostCreateArgs {
    pub name: String,
    /// The rack id.
    #[arg(long)]
    pub rack: Option<String>,
    /// Dedicate the host to this tenant id.
    #[arg(long)]
    pub dedicated_to: Option<String>,
    #[arg(long = "label")]
    pub labels: Vec<String>,
    /// A trait, e.g. CUSTOM_FAST_NVME (repeatable).
    #[arg(long = "trait")]
    pub traits: Vec<String>,
    #[command(flatten)]
    pub bmc: BmcArgs,
}
impl Body for HostCreateArgs {
    fn body(&self) -> Value {
        compact(json!({
            "name": self.name, "rack_id": self.rack, "ownership": ownership(&self.dedicated_to, false),
            "labels": labels(&self.labels), "traits": self.traits, "bmc": self.bmc.value()
        }))
    }
}

#[derive(Args, Debug)]
pub struct HostUpdateArgs {
    #[arg(long)]
    pub rack: Option<String>,
    /// Dedicate the host to this tenant id.
    #[arg(long, conflicts_with = "shared")]
    pub dedicated_to: Option<String>,
    /// Return the host to the shared pool.
    #[arg(long)]
    pub shared: bool,
    #[arg(long = "label")]
    pub labels: Option<Vec<String>>,
    #[arg(long = "trait")]
    pub traits: Option<Vec<String>>,
    #[command(flatten)]
    pub bmc: BmcArgs,
    /// Shared vCPU overcommit (scheduling; default 4.0).
    #[arg(long)]
    pub cpu_ratio: Option<f64>,
    /// Memory overcommit (scheduling; default 1.0).
    #[arg(long)]
    pub memory_ratio: Option<f64>,
    /// Host CPUs set aside for pinned shapes, e.g. 16-31,48-63 (scheduling).
    #[arg(long)]
    pub dedicated_cpus: Option<String>,
    /// Let dedicated shapes run without usable KVM (scheduling).
    #[arg(long)]
    pub allow_dedicated_without_kvm: Option<bool>,
}
impl HostUpdateArgs {
    /// Whether any scheduling flag was given (the CLI then merges them into the host's
    /// current scheduling settings).
    pub fn scheduling_given(&self) -> bool {
        self.cpu_ratio.is_some()
            || self.memory_ratio.is_some()
            || self.dedicated_cpus.is_some()
            || self.allow_dedicated_without_kvm.is_some()
    }

    /// Merges the scheduling flags into `current`.
    pub fn scheduling(&self, mut current: Value) -> anyhow::Result<Value> {
        if let Some(r) = self.cpu_ratio {
            current["cpu_allocation_ratio"] = json!(r);
        }
        if let Some(r) = self.memory_ratio {
            current["memory_allocation_ratio"] = json!(r);
        }
        if let Some(c) = &self.dedicated_cpus {
            current["dedicated_cpus"] = json!(cpu_list(c)?);
        }
        if let Some(b) = self.allow_dedicated_without_kvm {
            current["allow_dedicated_without_kvm"] = json!(b);
        }
        Ok(current)
    }
}

/// Parses `0-3,8,10-11` into CPU numbers.
pub fn cpu_list(s: &str) -> anyhow::Result<Vec<u32>> {
    let mut out = Vec::new();
    for part in s.split(',').map(str::trim).filter(|p| !p.is_empty()) {
        match part.split_once('-') {
            Some((a, b)) => {
                let (a, b): (u32, u32) = (a.trim().parse()?, b.trim().parse()?);
                anyhow::ensure!(a <= b && b - a < 4096, "bad CPU range {part}");
                out.extend(a..=b);
            }
            None => out.push(part.parse()?),
        }
    }
    Ok(out)
}
impl Body for HostUpdateArgs {
    fn body(&self) -> Value {
        compact(json!({
            "rack_id": self.rack, "ownership": ownership(&self.dedicated_to, self.shared),
            "labels": self.labels.as_deref().map(labels), "traits": self.traits, "bmc": self.bmc.value()
        }))
    }
}

#[derive(Args, Debug)]
pub struct JoinTokenCreateArgs {
    #[arg(long)]
    pub description: Option<String>,
    /// Put the enrolled host in this rack id.
    #[arg(long)]
    pub rack: Option<String>,
    /// Lifetime in seconds (default 3600).
    #[arg(long)]
    pub expires_in: Option<u64>,
    /// How many hosts may enrol with it (default 1).
    #[arg(long)]
    pub max_uses: Option<u32>,
}
impl Body for JoinTokenCreateArgs {
    fn body(&self) -> Value {
        compact(json!({ "description": self.description, "rack_id": self.rack, "expires_in_seconds": self.expires_in,
            "max_uses": self.max_uses }))
    }
}

#[derive(Args, Debug)]
pub struct ShapeCreateArgs {
    /// e.g. c1.small, g1.h100x8.
    pub name: String,
    #[arg(long)]
    pub vcpus: u32,
    #[arg(long)]
    pub memory_mib: u64,
    #[arg(long, default_value_t = 0)]
    pub disk_gib: u64,
    /// GPU class, e.g. nvidia-h100-80gb.
    #[arg(long, requires = "gpu_count")]
    pub gpu_class: Option<String>,
    #[arg(long, requires = "gpu_class")]
    pub gpu_count: Option<u32>,
    /// shared or dedicated.
    #[arg(long, default_value = "shared")]
    pub cpu_policy: String,
    /// none, 2M or 1G.
    #[arg(long, default_value = "none")]
    pub hugepages: String,
    /// vm, microvm or baremetal.
    #[arg(long, default_value = "vm")]
    pub runtime_class: String,
    #[arg(long)]
    pub description: Option<String>,
}
impl Body for ShapeCreateArgs {
    fn body(&self) -> Value {
        let gpu = match (&self.gpu_class, self.gpu_count) {
            (Some(c), Some(n)) => json!({ "class": c, "count": n }),
            _ => Value::Null,
        };
        compact(json!({
            "name": self.name, "vcpus": self.vcpus, "memory_mib": self.memory_mib, "disk_gib": self.disk_gib,
            "gpu": gpu, "cpu_policy": self.cpu_policy, "hugepages": self.hugepages,
            "runtime_class": self.runtime_class, "description": self.description
        }))
    }
}
