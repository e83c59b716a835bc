//! Networking commands: `plinth vpc …`, `plinth subnet …`, `plinth nic …` (with
//! `attach`/`detach` to a stopped instance) and `plinth security-group …` (with `rule
//! add|remove`), and the `--nic` flag of `plinth instance create`. Names resolve to ids
//! within the project (and VPC) given.

use super::args::wire;
use super::{ListArgs, create, delete, get, none_match};
use crate::output::Out;
use anyhow::{Result, bail};
use clap::Subcommand;
use plinth_api::*;
use plinth_client::resolve::{resolve, resolve_in, resolve_opt};
use plinth_client::{Client, FloatingIps, Instances, IpPools, Nics, Projects, SecurityGroups, Subnets, Vpcs};

/// A VPC named by id, or by name (within `project` when given).
async fn vpc_id(c: &Client, given: &str, project: Option<&str>) -> Result<String> {
    let project_id = resolve_opt::<Projects>(c, project).await?;
    Ok(resolve_in::<Vpcs>(c, given, VpcFilter { project_id, name: None }).await?)
}

/// A subnet named by id, or by name (within the project and VPC when given).
async fn subnet_id(c: &Client, given: &str, project: Option<&str>, vpc: Option<&str>) -> Result<String> {
    let project_id = resolve_opt::<Projects>(c, project).await?;
    let vpc_id = match vpc {
        Some(v) => Some(vpc_id(c, v, project).await?),
        None => None,
    };
    Ok(resolve_in::<Subnets>(c, given, SubnetFilter { project_id, vpc_id, name: None }).await?)
}

/// Security groups by id or by name within a VPC.
async fn group_ids(c: &Client, given: &[String], vpc: Option<&str>) -> Result<Option<Vec<SecurityGroupId>>> {
    if given.is_empty() {
        return Ok(None);
    }
    let mut out = Vec::new();
    for g in given {
        let f = SecurityGroupFilter { project_id: None, vpc_id: vpc.map(str::to_string), name: None };
        out.push(SecurityGroupId(resolve_in::<SecurityGroups>(c, g, f).await?));
    }
    Ok(Some(out))
}

/// VPCs.
#[derive(Subcommand, Debug)]
pub enum VpcCmd {
    /// List them.
    List {
        #[command(flatten)]
        page: ListArgs,
        /// Only this project's (id or name).
        #[arg(long)]
        project: Option<String>,
    },
    /// Show one (id or name).
    Get { id: String },
    /// Create one (with its default security group).
    Create {
        name: String,
        /// Project id or name.
        #[arg(long)]
        project: String,
        /// IPv4 block, /16 to /28, in a private range.
        #[arg(long)]
        cidr: String,
        #[arg(long, default_value = "")]
        description: String,
    },
    /// Delete one (no subnets, no groups but the default).
    Delete { id: String },
}

impl VpcCmd {
    pub async fn run(&self, c: &Client, o: &Out) -> Result<()> {
        const COLUMNS: &[&str] = &["id", "project_id", "name", "ipv4_cidr", "vni", "is_default"];
        match self {
            VpcCmd::List { page, project } => {
                let project_id = resolve_opt::<Projects>(c, project.as_deref()).await?;
                let d = c.list::<Vpcs>(&page.page(), &VpcFilter { project_id: project_id.clone(), name: None }).await?;
                none_match("VPCs", &d, &[("project", project_id)]);
                o.list(&d, COLUMNS)
            }
            VpcCmd::Get { id } => get::<Vpcs>(c, o, id).await,
            VpcCmd::Create { name, project, cidr, description } => {
                let body = VpcCreate {
                    project_id: ProjectId(resolve::<Projects>(c, project).await?),
                    name: name.clone(),
                    description: description.clone(),
                    ipv4_cidr: cidr.clone(),
                };
                create::<Vpcs>(c, o, &body).await
            }
            VpcCmd::Delete { id } => delete::<Vpcs>(c, id, None).await,
        }
    }
}

/// Floating IPs: public addresses a project holds, from an IP pool.
#[derive(Subcommand, Debug)]
pub enum FloatingIpCmd {
    /// List them.
    List {
        #[command(flatten)]
        page: ListArgs,
        /// Only this project's (id or name).
        #[arg(long)]
        project: Option<String>,
    },
    /// Show one (id or name).
    Get { id: String },
    /// Allocate one: the lowest free address of the pool.
    Create {
        name: String,
        /// Project id or name.
        #[arg(long)]
        project: String,
        /// IP pool id or name (default: the only pool).
        #[arg(long)]
        pool: Option<String>,
        #[arg(long, default_value = "")]
        description: String,
    },
    /// Release one (its address goes back to the pool; not while attached).
    Delete { id: String },
    /// Attach it to a network interface of its project, or move it there.
    Attach {
        id: String,
        /// Network interface id or name.
        #[arg(long)]
        nic: String,
    },
    /// Detach it from its network interface.
    Detach { id: String },
}

impl FloatingIpCmd {
    pub async fn run(&self, c: &Client, o: &Out) -> Result<()> {
        const COLUMNS: &[&str] = &["id", "project_id", "name", "address", "state", "nic_id"];
        match self {
            FloatingIpCmd::List { page, project } => {
                let project_id = resolve_opt::<Projects>(c, project.as_deref()).await?;
                let f = FloatingIpFilter { project_id: project_id.clone(), ..FloatingIpFilter::default() };
                let d = c.list::<FloatingIps>(&page.page(), &f).await?;
                none_match("floating IPs", &d, &[("project", project_id)]);
                o.list(&d, COLUMNS)
            }
            FloatingIpCmd::Get { id } => get::<FloatingIps>(c, o, id).await,
            FloatingIpCmd::Create { name, project, pool, description } => {
                let body = FloatingIpCreate {
                    project_id: ProjectId(resolve::<Projects>(c, project).await?),
                    name: name.clone(),
                    description: description.clone(),
                    ip_pool_id: resolve_opt::<IpPools>(c, pool.as_deref()).await?.map(IpPoolId),
                };
                create::<FloatingIps>(c, o, &body).await
            }
            FloatingIpCmd::Delete { id } => delete::<FloatingIps>(c, id, None).await,
            FloatingIpCmd::Attach { id, nic } => {
                let fip = resolve::<FloatingIps>(c, id).await?;
                let nic_id = NicId(resolve::<Nics>(c, nic).await?);
                o.object(&c.attach_floating_ip(&fip, &FloatingIpAttach { nic_id }).await?)
            }
            FloatingIpCmd::Detach { id } => {
                let fip = resolve::<FloatingIps>(c, id).await?;
                o.object(&c.detach_floating_ip(&fip).await?)
            }
        }
    }
}

/// IP pools: public IPv4 ranges for floating and SNAT addresses (operators create them).
#[derive(Subcommand, Debug)]
pub enum IpPoolCmd {
    /// List them.
    List {
        #[command(flatten)]
        page: ListArgs,
    },
    /// Show one (id or name).
    Get { id: String },
    /// Create one; it may overlap no other pool.
    Create {
        name: String,
        /// IPv4 block, /8 to /32 (like 198.51.100.0/24).
        #[arg(long)]
        cidr: String,
        /// The range's first address (default: the block's first host address).
        #[arg(long)]
        first: Option<String>,
        /// The range's last address (default: the block's last host address).
        #[arg(long)]
        last: Option<String>,
        /// The site whose provider network carries it (id or name; default: every site).
        #[arg(long)]
        site: Option<String>,
        /// The provider router's address on the pool's link (inside the block, outside
        /// the range): VPC routers send internet traffic there.
        #[arg(long)]
        gateway: Option<String>,
        #[arg(long, default_value = "")]
        description: String,
    },
    /// Delete one.
    Delete { id: String },
}

impl IpPoolCmd {
    pub async fn run(&self, c: &Client, o: &Out) -> Result<()> {
        const COLUMNS: &[&str] = &["id", "name", "ipv4_cidr", "first", "last", "size", "gateway", "site_id"];
        match self {
            IpPoolCmd::List { page } => {
                o.list(&c.list::<IpPools>(&page.page(), &IpPoolFilter::default()).await?, COLUMNS)
            }
            IpPoolCmd::Get { id } => get::<IpPools>(c, o, id).await,
            IpPoolCmd::Create { name, cidr, first, last, site, gateway, description } => {
                let body = IpPoolCreate {
                    name: name.clone(),
                    description: description.clone(),
                    site_id: resolve_opt::<plinth_client::Sites>(c, site.as_deref()).await?.map(SiteId),
                    ipv4_cidr: cidr.clone(),
                    first: first.clone(),
                    last: last.clone(),
                    gateway: gateway.clone(),
                };
                create::<IpPools>(c, o, &body).await
            }
            IpPoolCmd::Delete { id } => delete::<IpPools>(c, id, None).await,
        }
    }
}

/// Subnets.
#[derive(Subcommand, Debug)]
pub enum SubnetCmd {
    /// List them.
    List {
        #[command(flatten)]
        page: ListArgs,
        /// Only this VPC's (id or name).
        #[arg(long)]
        vpc: Option<String>,
    },
    /// Show one (id or name).
    Get { id: String },
    /// Create one inside its VPC's block.
    Create {
        name: String,
        /// VPC id or name.
        #[arg(long)]
        vpc: String,
        /// Project of the VPC, when naming it by name is ambiguous.
        #[arg(long)]
        project: Option<String>,
        #[arg(long)]
        cidr: String,
        #[arg(long, default_value = "")]
        description: String,
    },
    /// Delete one no NIC is in.
    Delete { id: String },
}

impl SubnetCmd {
    pub async fn run(&self, c: &Client, o: &Out) -> Result<()> {
        const COLUMNS: &[&str] = &["id", "vpc_id", "name", "ipv4_cidr", "gateway", "capacity", "used", "mtu"];
        match self {
            SubnetCmd::List { page, vpc } => {
                let vpc_id = match vpc {
                    Some(v) => Some(vpc_id(c, v, None).await?),
                    None => None,
                };
                let f = SubnetFilter { project_id: None, vpc_id: vpc_id.clone(), name: None };
                let d = c.list::<Subnets>(&page.page(), &f).await?;
                none_match("subnets", &d, &[("vpc", vpc_id)]);
                o.list(&d, COLUMNS)
            }
            SubnetCmd::Get { id } => get::<Subnets>(c, o, id).await,
            SubnetCmd::Create { name, vpc, project, cidr, description } => {
                let body = SubnetCreate {
                    vpc_id: VpcId(vpc_id(c, vpc, project.as_deref()).await?),
                    name: name.clone(),
                    description: description.clone(),
                    ipv4_cidr: cidr.clone(),
                };
                create::<Subnets>(c, o, &body).await
            }
            SubnetCmd::Delete { id } => delete::<Subnets>(c, id, None).await,
        }
    }
}

/// Network interfaces.
#[derive(Subcommand, Debug)]
pub enum NicCmd {
    /// List them.
    List {
        #[command(flatten)]
        page: ListArgs,
        /// Only this subnet's (id or name).
        #[arg(long)]
        subnet: Option<String>,
        /// Only those plugged into this instance (id or name).
        #[arg(long)]
        instance: Option<String>,
    },
    /// Show one (id or name).
    Get { id: String },
    /// Create one (its address allocated unless --ip is given).
    Create {
        name: String,
        /// Subnet id or name.
        #[arg(long)]
        subnet: String,
        /// Project, to find the subnet by name.
        #[arg(long)]
        project: Option<String>,
        /// A free address of the subnet.
        #[arg(long)]
        ip: Option<String>,
        /// Security group (id or name in the subnet's VPC); repeatable. Default: the VPC's default group.
        #[arg(long = "sg")]
        security_groups: Vec<String>,
        /// Turn anti-spoofing off.
        #[arg(long)]
        no_port_security: bool,
        /// Operators: bind it to this host (id or name) without an instance.
        #[arg(long)]
        host: Option<String>,
        /// With --host: how the host plugs it, `veth` (default; the far end `<device>g` is
        /// left for whoever takes it) or `tap` (a persistent tap a VMM opens).
        #[arg(long, requires = "host", value_parser = wire::<NicPlug>)]
        plug: Option<NicPlug>,
        /// `snat` (default when an IP pool has a free address) or `none` (private).
        #[arg(long, value_parser = wire::<ExternalAccess>)]
        external_access: Option<ExternalAccess>,
    },
    /// Delete one not plugged into an instance.
    Delete { id: String },
    /// Plug it into a stopped instance.
    Attach {
        id: String,
        /// Instance id or name.
        #[arg(long)]
        instance: String,
    },
    /// Unplug it from its stopped instance.
    Detach { id: String },
}

impl NicCmd {
    pub async fn run(&self, c: &Client, o: &Out) -> Result<()> {
        const COLUMNS: &[&str] =
            &["id", "name", "subnet_id", "ipv4", "snat_address", "mac", "instance_id", "slot", "state"];
        match self {
            NicCmd::List { page, subnet, instance } => {
                let subnet_id = match subnet {
                    Some(s) => Some(subnet_id(c, s, None, None).await?),
                    None => None,
                };
                let instance_id = resolve_opt::<Instances>(c, instance.as_deref()).await?;
                let f = NetworkInterfaceFilter {
                    subnet_id: subnet_id.clone(),
                    instance_id: instance_id.clone(),
                    ..NetworkInterfaceFilter::default()
                };
                let d = c.list::<Nics>(&page.page(), &f).await?;
                none_match("network interfaces", &d, &[("subnet", subnet_id), ("instance", instance_id)]);
                o.list(&d, COLUMNS)
            }
            NicCmd::Get { id } => get::<Nics>(c, o, id).await,
            NicCmd::Create {
                name,
                subnet,
                project,
                ip,
                security_groups,
                no_port_security,
                host,
                plug,
                external_access,
            } => {
                let sid = subnet_id(c, subnet, project.as_deref(), None).await?;
                let vpc = c.view::<Subnets>(&sid).await?.into_inner().vpc_id;
                let host_id = resolve_opt::<plinth_client::Hosts>(c, host.as_deref()).await?;
                let body = NetworkInterfaceCreate {
                    subnet_id: SubnetId(sid),
                    name: name.clone(),
                    description: String::new(),
                    ipv4: ip.clone(),
                    mac: None,
                    security_group_ids: group_ids(c, security_groups, Some(vpc.as_str())).await?,
                    port_security: no_port_security.then_some(false),
                    host_id: host_id.map(HostId),
                    plug: *plug,
                    external_access: *external_access,
                };
                create::<Nics>(c, o, &body).await
            }
            NicCmd::Delete { id } => delete::<Nics>(c, id, None).await,
            NicCmd::Attach { id, instance } => {
                let nic_id = NicId(resolve::<Nics>(c, id).await?);
                let inst = resolve::<Instances>(c, instance).await?;
                o.object(&c.attach_nic(&inst, &NetworkInterfaceAttach { nic_id }).await?)
            }
            NicCmd::Detach { id } => {
                let nic_id = resolve::<Nics>(c, id).await?;
                let nic = c.view::<Nics>(&nic_id).await?.into_inner();
                let Some(inst) = nic.instance_id else {
                    bail!("network interface {id} is not plugged into an instance")
                };
                c.detach_nic(inst.as_str(), &nic_id).await?;
                eprintln!("detached {nic_id} from {inst}");
                Ok(())
            }
        }
    }
}

/// Security groups.
#[derive(Subcommand, Debug)]
pub enum SecurityGroupCmd {
    /// List them.
    List {
        #[command(flatten)]
        page: ListArgs,
        /// Only this VPC's (id or name).
        #[arg(long)]
        vpc: Option<String>,
    },
    /// Show one with its rules (id or name).
    Get { id: String },
    /// Create one (no rules: it allows nothing).
    Create {
        name: String,
        /// VPC id or name.
        #[arg(long)]
        vpc: String,
        #[arg(long, default_value = "")]
        description: String,
    },
    /// Delete one no NIC uses.
    Delete { id: String },
    /// A group's rules.
    #[command(subcommand)]
    Rule(RuleCmd),
}

/// Rules of a security group.
#[derive(Subcommand, Debug)]
pub enum RuleCmd {
    /// Add an allow rule.
    Add {
        /// Group id or name.
        group: String,
        /// ingress or egress.
        #[arg(long, value_parser = wire::<Direction>)]
        direction: Direction,
        /// tcp, udp, icmp or any.
        #[arg(long, value_parser = wire::<RuleProtocol>)]
        protocol: RuleProtocol,
        /// A port (`22`) or a range (`8000-8080`), tcp and udp only.
        #[arg(long)]
        ports: Option<String>,
        #[arg(long)]
        icmp_type: Option<u8>,
        #[arg(long)]
        icmp_code: Option<u8>,
        /// Peers in this block.
        #[arg(long)]
        remote_cidr: Option<String>,
        /// Peers in this group (id or name, same VPC).
        #[arg(long)]
        remote_group: Option<String>,
        #[arg(long, default_value = "")]
        description: String,
    },
    /// Remove a rule.
    Remove {
        /// Group id or name.
        group: String,
        rule_id: String,
    },
}

/// `22` or `8000-8080` as (min, max).
fn port_range(s: &str) -> Result<(u16, u16)> {
    let (a, b) = s.split_once('-').unwrap_or((s, s));
    match (a.trim().parse(), b.trim().parse()) {
        (Ok(a), Ok(b)) => Ok((a, b)),
        _ => bail!("--ports {s:?}: give a port (22) or a range (8000-8080)"),
    }
}

impl SecurityGroupCmd {
    pub async fn run(&self, c: &Client, o: &Out) -> Result<()> {
        const COLUMNS: &[&str] = &["id", "vpc_id", "name", "is_default"];
        match self {
            SecurityGroupCmd::List { page, vpc } => {
                let vpc_id = match vpc {
                    Some(v) => Some(vpc_id(c, v, None).await?),
                    None => None,
                };
                let f = SecurityGroupFilter { project_id: None, vpc_id: vpc_id.clone(), name: None };
                let d = c.list::<SecurityGroups>(&page.page(), &f).await?;
                none_match("security groups", &d, &[("vpc", vpc_id)]);
                o.list(&d, COLUMNS)
            }
            SecurityGroupCmd::Get { id } => get::<SecurityGroups>(c, o, id).await,
            SecurityGroupCmd::Create { name, vpc, description } => {
                let body = SecurityGroupCreate {
                    vpc_id: VpcId(vpc_id(c, vpc, None).await?),
                    name: name.clone(),
                    description: description.clone(),
                    rules: Vec::new(),
                };
                create::<SecurityGroups>(c, o, &body).await
            }
            SecurityGroupCmd::Delete { id } => delete::<SecurityGroups>(c, id, None).await,
            SecurityGroupCmd::Rule(RuleCmd::Add {
                group,
                direction,
                protocol,
                ports,
                icmp_type,
                icmp_code,
                remote_cidr,
                remote_group,
                description,
            }) => {
                let gid = resolve::<SecurityGroups>(c, group).await?;
                let vpc = c.view::<SecurityGroups>(&gid).await?.into_inner().vpc_id;
                let (port_min, port_max) = match ports {
                    Some(p) => {
                        let (a, b) = port_range(p)?;
                        (Some(a), Some(b))
                    }
                    None => (None, None),
                };
                let remote_group_id = match remote_group {
                    Some(r) => {
                        let f = SecurityGroupFilter { project_id: None, vpc_id: Some(vpc.to_string()), name: None };
                        Some(SecurityGroupId(resolve_in::<SecurityGroups>(c, r, f).await?))
                    }
                    None => None,
                };
                let body = SecurityGroupRuleCreate {
                    direction: *direction,
                    protocol: *protocol,
                    port_min,
                    port_max,
                    icmp_type: *icmp_type,
                    icmp_code: *icmp_code,
                    remote_cidr: remote_cidr.clone(),
                    remote_group_id,
                    description: description.clone(),
                };
                o.object(&c.add_rule(&gid, &body).await?)
            }
            SecurityGroupCmd::Rule(RuleCmd::Remove { group, rule_id }) => {
                let gid = resolve::<SecurityGroups>(c, group).await?;
                c.remove_rule(&gid, rule_id).await?;
                eprintln!("removed rule {rule_id} from {gid}");
                Ok(())
            }
        }
    }
}

/// `--nic subnet=NAME[,ip=A][,sg=G]…` or `--nic nic=NAME` of `plinth instance create`,
/// resolved within the instance's project.
pub async fn instance_nics(c: &Client, project: &ProjectId, given: &[String]) -> Result<Vec<InstanceNetworkInterface>> {
    let mut out = Vec::new();
    for spec in given {
        let mut n = InstanceNetworkInterface::default();
        let mut groups = Vec::new();
        for part in spec.split(',').filter(|p| !p.is_empty()) {
            let Some((k, v)) = part.split_once('=') else {
                bail!("--nic {spec:?}: give key=value pairs (subnet=, ip=, sg=, nic=, port-security=)");
            };
            match k {
                "subnet" => n.subnet = Some(v.to_string()),
                "ip" => n.ipv4 = Some(v.to_string()),
                "sg" => groups.push(v.to_string()),
                "nic" => {
                    let f = NetworkInterfaceFilter { project_id: Some(project.to_string()), ..Default::default() };
                    n.nic_id = Some(NicId(resolve_in::<Nics>(c, v, f).await?));
                }
                "port-security" => n.port_security = Some(v != "off" && v != "false"),
                other => bail!("--nic {spec:?}: unknown key {other} (subnet, ip, sg, nic, port-security)"),
            }
        }
        if !groups.is_empty() {
            // Groups by name are looked up in the subnet's VPC.
            let vpc = match &n.subnet {
                Some(s) => {
                    let f = SubnetFilter { project_id: Some(project.to_string()), vpc_id: None, name: None };
                    let sid = resolve_in::<Subnets>(c, s, f).await?;
                    Some(c.view::<Subnets>(&sid).await?.into_inner().vpc_id.to_string())
                }
                None => None,
            };
            n.security_group_ids = group_ids(c, &groups, vpc.as_deref()).await?;
        }
        out.push(n);
    }
    Ok(out)
}
