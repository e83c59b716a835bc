//! Flags of the create and update commands, and how each becomes its `plinth-api` request
//! body (references given by name are resolved to ids on the way).

use crate::cli::Body;
use anyhow::Result;
use clap::Args;
use plinth_api::*;
use plinth_client::resolve::{resolve, resolve_opt};
use plinth_client::{Client, Projects, Racks, Tenants, Users};
use serde::de::{DeserializeOwned, IntoDeserializer};
use std::collections::BTreeMap;

/// Parses a flag as a wire enum by its wire name (`running`, `anti-affinity`, `2M`).
pub fn wire<T: DeserializeOwned>(s: &str) -> Result<T, String> {
    T::deserialize(IntoDeserializer::<serde::de::value::Error>::into_deserializer(s)).map_err(|e| e.to_string())
}

/// `k=v` label flags.
pub fn labels(kv: &[String]) -> BTreeMap<String, String> {
    kv.iter()
        .map(|s| {
            let (k, v) = s.split_once('=').unwrap_or((s.as_str(), ""));
            (k.to_string(), v.to_string())
        })
        .collect()
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
impl Body<TenantCreate> for TenantCreateArgs {
    async fn body(&self, _: &Client) -> Result<TenantCreate> {
        Ok(TenantCreate {
            name: self.name.clone(),
            display_name: self.display_name.clone(),
            labels: labels(&self.labels),
        })
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
impl Body<TenantUpdate> for TenantUpdateArgs {
    async fn body(&self, _: &Client) -> Result<TenantUpdate> {
        Ok(TenantUpdate { display_name: self.display_name.clone(), labels: self.labels.as_deref().map(labels) })
    }
}

#[derive(Args, Debug)]
pub struct ProjectCreateArgs {
    /// DNS-label name, unique in the tenant.
    pub name: String,
    /// Tenant id or name (operators; tenant users default to their own).
    #[arg(long)]
    pub tenant: Option<String>,
    #[arg(long)]
    pub description: Option<String>,
    #[arg(long = "label")]
    pub labels: Vec<String>,
}
impl Body<ProjectCreate> for ProjectCreateArgs {
    async fn body(&self, c: &Client) -> Result<ProjectCreate> {
        Ok(ProjectCreate {
            tenant_id: resolve_opt::<Tenants>(c, self.tenant.as_deref()).await?.map(TenantId),
            name: self.name.clone(),
            description: self.description.clone(),
            labels: labels(&self.labels),
        })
    }
}

#[derive(Args, Debug)]
pub struct ProjectUpdateArgs {
    #[arg(long)]
    pub description: Option<String>,
    #[arg(long = "label")]
    pub labels: Option<Vec<String>>,
}
impl Body<ProjectUpdate> for ProjectUpdateArgs {
    async fn body(&self, _: &Client) -> Result<ProjectUpdate> {
        Ok(ProjectUpdate { description: self.description.clone(), labels: self.labels.as_deref().map(labels) })
    }
}

#[derive(Args, Debug)]
pub struct UserCreateArgs {
    /// DNS-label name, unique in the tenant.
    pub name: String,
    /// Tenant id or name (operators; omit for a platform user).
    #[arg(long)]
    pub tenant: Option<String>,
    #[arg(long)]
    pub email: Option<String>,
}
impl Body<UserCreate> for UserCreateArgs {
    async fn body(&self, c: &Client) -> Result<UserCreate> {
        Ok(UserCreate {
            tenant_id: resolve_opt::<Tenants>(c, self.tenant.as_deref()).await?.map(TenantId),
            name: self.name.clone(),
            email: self.email.clone(),
        })
    }
}

#[derive(Args, Debug)]
pub struct UserUpdateArgs {
    #[arg(long)]
    pub email: Option<String>,
}
impl Body<UserUpdate> for UserUpdateArgs {
    async fn body(&self, _: &Client) -> Result<UserUpdate> {
        Ok(UserUpdate { email: self.email.clone() })
    }
}

#[derive(Args, Debug)]
pub struct TokenCreateArgs {
    /// DNS-label name for the token.
    pub name: String,
    /// The user (id or name) the token acts as (default: you).
    #[arg(long)]
    pub user: Option<String>,
    /// Lifetime in seconds (default: no expiry).
    #[arg(long)]
    pub expires_in: Option<u64>,
}
impl Body<TokenCreate> for TokenCreateArgs {
    async fn body(&self, c: &Client) -> Result<TokenCreate> {
        Ok(TokenCreate {
            user_id: resolve_opt::<Users>(c, self.user.as_deref()).await?.map(UserId),
            name: self.name.clone(),
            expires_in_seconds: self.expires_in,
        })
    }
}

#[derive(Args, Debug)]
pub struct TokenUpdateArgs {
    #[arg(long)]
    pub name: Option<String>,
}
impl Body<TokenUpdate> for TokenUpdateArgs {
    async fn body(&self, _: &Client) -> Result<TokenUpdate> {
        Ok(TokenUpdate { name: self.name.clone() })
    }
}

#[derive(Args, Debug)]
pub struct RoleBindingCreateArgs {
    /// The user: id or name.
    #[arg(long)]
    pub user: String,
    /// operator, tenant-admin, member or viewer.
    #[arg(long, value_parser = wire::<Role>)]
    pub role: Role,
    /// Narrow a member/viewer binding to this project (id or name).
    #[arg(long)]
    pub project: Option<String>,
}
impl Body<RoleBindingCreate> for RoleBindingCreateArgs {
    async fn body(&self, c: &Client) -> Result<RoleBindingCreate> {
        Ok(RoleBindingCreate {
            user_id: UserId(resolve::<Users>(c, &self.user).await?),
            role: self.role,
            project_id: resolve_opt::<Projects>(c, self.project.as_deref()).await?.map(ProjectId),
        })
    }
}

#[derive(Args, Debug)]
pub struct RoleBindingUpdateArgs {
    #[arg(long, value_parser = wire::<Role>)]
    pub role: Option<Role>,
}
impl Body<RoleBindingUpdate> for RoleBindingUpdateArgs {
    async fn body(&self, _: &Client) -> Result<RoleBindingUpdate> {
        Ok(RoleBindingUpdate { role: self.role })
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
impl Body<SiteCreate> for SiteCreateArgs {
    async fn body(&self, _: &Client) -> Result<SiteCreate> {
        Ok(SiteCreate {
            name: self.name.clone(),
            description: self.description.clone(),
            location: self.location.clone(),
        })
    }
}

#[derive(Args, Debug)]
pub struct DescriptionArgs {
    #[arg(long)]
    pub description: Option<String>,
}
impl Body<SiteUpdate> for DescriptionArgs {
    async fn body(&self, _: &Client) -> Result<SiteUpdate> {
        Ok(SiteUpdate { description: self.description.clone(), location: None })
    }
}
impl Body<RackUpdate> for DescriptionArgs {
    async fn body(&self, _: &Client) -> Result<RackUpdate> {
        Ok(RackUpdate { description: self.description.clone() })
    }
}
impl Body<HostJoinTokenUpdate> for DescriptionArgs {
    async fn body(&self, _: &Client) -> Result<HostJoinTokenUpdate> {
        Ok(HostJoinTokenUpdate { description: self.description.clone() })
    }
}
impl Body<ShapeUpdate> for DescriptionArgs {
    async fn body(&self, _: &Client) -> Result<ShapeUpdate> {
        Ok(ShapeUpdate { description: self.description.clone() })
    }
}

#[derive(Args, Debug)]
pub struct RackCreateArgs {
    pub name: String,
    /// The site: id or name.
    #[arg(long)]
    pub site: String,
    #[arg(long)]
    pub description: Option<String>,
}
impl Body<RackCreate> for RackCreateArgs {
    async fn body(&self, c: &Client) -> Result<RackCreate> {
        Ok(RackCreate {
            site_id: SiteId(resolve::<plinth_client::Sites>(c, &self.site).await?),
            name: self.name.clone(),
            description: self.description.clone(),
        })
    }
}

#[derive(Args, Debug)]
pub struct BmcArgs {
    /// BMC address (host or URL).
    #[arg(long)]
    pub bmc_address: Option<String>,
    /// redfish or ipmi.
    #[arg(long, default_value = "redfish", value_parser = wire::<BmcProtocol>)]
    pub bmc_protocol: BmcProtocol,
    #[arg(long)]
    pub bmc_username: Option<String>,
    /// Write-only: never shown again.
    #[arg(long)]
    pub bmc_password: Option<String>,
}
impl BmcArgs {
    fn spec(&self) -> Option<BmcSpec> {
        self.bmc_address.as_ref().map(|a| BmcSpec {
            address: a.clone(),
            protocol: self.bmc_protocol,
            username: self.bmc_username.clone(),
            password: self.bmc_password.clone(),
        })
    }
}

async fn ownership(c: &Client, dedicated_to: &Option<String>, shared: bool) -> Result<Option<Ownership>> {
    Ok(match (dedicated_to, shared) {
        (Some(t), _) => Some(Ownership::Dedicated { tenant_id: TenantId(resolve::<Tenants>(c, t).await?) }),
        (None, true) => Some(Ownership::Shared),
        (None, false) => None,
    })
}

#[derive(Args, Debug)]
pub struct HostCreateArgs {
    pub name: String,
    /// The rack: id or name.
    #[arg(long)]
    pub rack: Option<String>,
    /// Dedicate the host to this tenant (id or name).
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
impl Body<HostCreate> for HostCreateArgs {
    async fn body(&self, c: &Client) -> Result<HostCreate> {
        Ok(HostCreate {
            name: self.name.clone(),
            rack_id: resolve_opt::<Racks>(c, self.rack.as_deref()).await?.map(RackId),
            ownership: ownership(c, &self.dedicated_to, false).await?,
            labels: labels(&self.labels),
            traits: self.traits.clone(),
            bmc: self.bmc.spec(),
            inventory: None,
            scheduling: None,
        })
    }
}

#[derive(Args, Debug)]
pub struct HostUpdateArgs {
    /// The rack: id or name.
    #[arg(long)]
    pub rack: Option<String>,
    /// Dedicate the host to this tenant (id or name).
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
    pub fn scheduling(&self, mut current: HostScheduling) -> Result<HostScheduling> {
        if let Some(r) = self.cpu_ratio {
            current.cpu_allocation_ratio = r;
        }
        if let Some(r) = self.memory_ratio {
            current.memory_allocation_ratio = r;
        }
        if let Some(c) = &self.dedicated_cpus {
            current.dedicated_cpus = cpu_list(c)?;
        }
        if let Some(b) = self.allow_dedicated_without_kvm {
            current.allow_dedicated_without_kvm = b;
        }
        Ok(current)
    }
}

/// Parses `0-3,8,10-11` into CPU numbers.
pub fn cpu_list(s: &str) -> Result<Vec<u32>> {
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
impl Body<HostUpdate> for HostUpdateArgs {
    async fn body(&self, c: &Client) -> Result<HostUpdate> {
        Ok(HostUpdate {
            rack_id: resolve_opt::<Racks>(c, self.rack.as_deref()).await?.map(RackId),
            ownership: ownership(c, &self.dedicated_to, self.shared).await?,
            labels: self.labels.as_deref().map(labels),
            traits: self.traits.clone(),
            bmc: self.bmc.spec(),
            scheduling: None,
        })
    }
}

#[derive(Args, Debug)]
pub struct JoinTokenCreateArgs {
    #[arg(long)]
    pub description: Option<String>,
    /// Put the enrolled host in this rack (id or name).
    #[arg(long)]
    pub rack: Option<String>,
    /// Lifetime in seconds (default 3600).
    #[arg(long)]
    pub expires_in: Option<u64>,
    /// How many hosts may enrol with it (default 1).
    #[arg(long)]
    pub max_uses: Option<u32>,
}
impl Body<HostJoinTokenCreate> for JoinTokenCreateArgs {
    async fn body(&self, c: &Client) -> Result<HostJoinTokenCreate> {
        Ok(HostJoinTokenCreate {
            description: self.description.clone(),
            rack_id: resolve_opt::<Racks>(c, self.rack.as_deref()).await?.map(RackId),
            expires_in_seconds: self.expires_in,
            max_uses: self.max_uses,
        })
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
    #[arg(long, default_value = "shared", value_parser = wire::<CpuPolicy>)]
    pub cpu_policy: CpuPolicy,
    /// none, 2M or 1G.
    #[arg(long, default_value = "none", value_parser = wire::<Hugepages>)]
    pub hugepages: Hugepages,
    /// vm, microvm or baremetal.
    #[arg(long, default_value = "vm", value_parser = wire::<RuntimeClass>)]
    pub runtime_class: RuntimeClass,
    #[arg(long)]
    pub description: Option<String>,
}
impl Body<ShapeCreate> for ShapeCreateArgs {
    async fn body(&self, _: &Client) -> Result<ShapeCreate> {
        let gpu = match (&self.gpu_class, self.gpu_count) {
            (Some(class), Some(count)) => Some(GpuRequest { class: class.clone(), count }),
            _ => None,
        };
        Ok(ShapeCreate {
            name: self.name.clone(),
            description: self.description.clone(),
            vcpus: self.vcpus,
            memory_mib: self.memory_mib,
            disk_gib: self.disk_gib,
            gpu,
            cpu_policy: self.cpu_policy,
            hugepages: self.hugepages,
            runtime_class: self.runtime_class,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn wire_enums_parse_by_their_wire_names() {
        assert_eq!(wire::<Role>("tenant-admin"), Ok(Role::TenantAdmin));
        assert_eq!(wire::<Hugepages>("2M"), Ok(Hugepages::TwoMiB));
        assert_eq!(wire::<InstanceState>("running"), Ok(InstanceState::Running));
        assert!(wire::<Role>("admin").unwrap_err().contains("tenant-admin"), "the error lists the choices");
    }
}
