//! Network interfaces: create (address, port number and MAC allocated in the NIC's own
//! transaction, under its VPC's lock), list, get, change (name, groups, port security),
//! delete (not while plugged into an instance), and plug into / unplug from a stopped
//! instance. Instance create plugs its NICs through [`insert_nic`] and [`plug_existing`].

use super::{groups_of_vpc, network_changed, public, require_write};
use crate::app::{AppState, Caller, Error, Paging, Result};
use chrono::Utc;
use plinth_api::*;
use plinth_domain::network::cidr::{addr_text, lowest_free_number, parse_addr};
use plinth_domain::network::{Cidr, locally_administered_mac, parse_mac};
use plinth_domain::{quota, validate};
use plinth_store::{Tx, Val};
use serde_json::json;

/// Highest port number (packet mark) of a NIC within its VPC.
const MAX_PORT: i64 = 65_535;

/// A NIC to make: what the request says about it.
#[derive(Clone, Debug, Default)]
pub struct NewNic {
    pub name: String,
    pub description: String,
    pub ipv4: Option<String>,
    pub mac: Option<String>,
    pub security_group_ids: Option<Vec<SecurityGroupId>>,
    pub port_security: Option<bool>,
    /// An operator's binding to a host (checked by the caller).
    pub bound_host: Option<HostId>,
    /// How that host plugs it (with `bound_host` only; checked by the caller).
    pub plug: Option<NicPlug>,
    /// `snat` or `none`; `None`: `snat` when an address is free.
    pub external_access: Option<ExternalAccess>,
}

/// Where a new NIC is plugged: its instance, slot, and whether the instance owns it.
pub struct Plug<'a> {
    pub instance_id: &'a InstanceId,
    pub slot: u8,
}

fn field(prefix: &str, name: &str) -> String {
    if prefix.is_empty() { name.to_string() } else { format!("{prefix}.{name}") }
}

/// Writes a new NIC in `subnet_id` within `tx`: its VPC is locked first, then the address
/// (chosen or lowest free), the port number and the MAC are picked against what the VPC
/// holds now. `prefix` names the request field in refusals (`nics[1]`).
pub(crate) async fn insert_nic(
    tx: &mut Tx,
    caller: &Caller,
    subnet_id: &str,
    n: NewNic,
    plug: Option<Plug<'_>>,
    prefix: &str,
) -> Result<NetworkInterface> {
    let peek: Subnet = tx.peek(&caller.scope(), subnet_id).await?;
    let vpc: Vpc = tx.get(&caller.scope(), peek.vpc_id.as_str()).await?;
    // Read again under the VPC's lock: a concurrent delete of the subnet went first or waits.
    let subnet: Subnet = tx.get(&caller.scope(), subnet_id).await?;
    let groups = n.security_group_ids.clone().unwrap_or_else(|| vec![vpc.default_security_group_id.clone()]);
    groups_of_vpc(tx, caller, &vpc.id, &groups, &field(prefix, "security_group_ids")).await?;
    let cidr = Cidr::parse("ipv4_cidr", &subnet.ipv4_cidr)?;
    let ip_field = field(prefix, "ipv4");
    let addr = match &n.ipv4 {
        Some(text) => {
            let a = parse_addr(&ip_field, text)?;
            cidr.check_host(&ip_field, a)?;
            if let Some(holder) = tx.address_holder(subnet.id.as_str(), a).await? {
                return Err(Error::conflict(
                    "address_in_use",
                    format!(
                        "{ip_field}: {} is held by network interface {} ({})",
                        addr_text(a),
                        holder.name,
                        holder.id
                    ),
                )
                .with_constraint(
                    json!({ "field": ip_field, "rule": "free-address", "network_interface_id": holder.id }),
                ));
            }
            a
        }
        None => {
            let taken = tx.subnet_addresses(subnet.id.as_str()).await?;
            cidr.lowest_free(&taken).ok_or_else(|| {
                Error::conflict(
                    "subnet_exhausted",
                    format!(
                        "subnet {} ({}, {cidr}) is full: all {} addresses NICs can hold in it are taken",
                        subnet.name,
                        subnet.id,
                        cidr.capacity()
                    ),
                )
                .with_constraint(json!({ "rule": "subnet-capacity", "subnet_id": subnet.id, "subnet": subnet.name,
                    "ipv4_cidr": cidr.to_string(), "capacity": cidr.capacity() }))
            })?
        }
    };
    let port = lowest_free_number(&tx.vpc_ports(vpc.id.as_str()).await?, 1, MAX_PORT).ok_or_else(|| {
        Error::conflict("vpc_ports_exhausted", format!("VPC {} holds {MAX_PORT} network interfaces already", vpc.id))
    })?;
    let mut mac = None;
    if let Some(m) = &n.mac {
        let mac_field = field(prefix, "mac");
        let m = parse_mac(&mac_field, m)?;
        if tx.vpc_mac_taken(vpc.id.as_str(), &m).await? {
            return Err(Error::conflict("mac_in_use", format!("{mac_field}: {m} is used by another NIC of the VPC"))
                .with_constraint(json!({ "field": mac_field, "rule": "unique-in-vpc" })));
        }
        mac = Some(m);
    }
    for _ in 0..16 {
        if mac.is_some() {
            break;
        }
        let m = locally_administered_mac(super::mac_bytes());
        if !tx.vpc_mac_taken(vpc.id.as_str(), &m).await? {
            mac = Some(m);
            break;
        }
    }
    let mac = mac.ok_or_else(|| Error::conflict("mac_exhausted", "no free MAC address was found; try again"))?;
    super::charge(tx, &subnet.tenant_id, &subnet.project_id, quota::NETWORK_INTERFACES, 1).await?;
    let filter_generation = tx.bump_firewall(vpc.id.as_str()).await?;
    let now = Utc::now();
    let mut nic = NetworkInterface {
        id: NicId::generate(),
        tenant_id: subnet.tenant_id.clone(),
        project_id: subnet.project_id.clone(),
        vpc_id: vpc.id.clone(),
        subnet_id: subnet.id.clone(),
        name: n.name,
        description: n.description,
        mac,
        ipv4: addr_text(addr),
        instance_id: plug.as_ref().map(|p| p.instance_id.clone()),
        slot: plug.as_ref().map(|p| p.slot),
        primary: plug.as_ref().is_some_and(|p| p.slot == 0),
        security_group_ids: groups,
        port_security: n.port_security.unwrap_or(true),
        external_access: ExternalAccess::None,
        snat_address: None,
        floating_ips: Vec::new(),
        state: NicState::Pending,
        host_id: n.bound_host.clone(),
        device: None,
        plug: n.bound_host.as_ref().map(|_| n.plug.unwrap_or(NicPlug::Veth)),
        readiness: Vec::new(),
        filter_generation,
        filter_generation_applied: None,
        generation: 1,
        created_at: now,
        updated_at: now,
    };
    let extra = [
        ("port", Val::Int(Some(port))),
        ("owned_by_instance", Val::Int(Some(plug.is_some() as i64))),
        ("bound_host_id", Val::opt_text(n.bound_host.as_ref())),
        // An operator's binding places it at once; an instance's NICs follow the instance.
        ("host_id", Val::opt_text(n.bound_host.as_ref())),
    ];
    let want = n.external_access.unwrap_or(ExternalAccess::Snat);
    public::set_external_access(tx, &mut nic, want, n.external_access.is_some(), &field(prefix, "external_access"))
        .await?;
    tx.insert(&nic, &extra).await?;
    public::meter_snat(tx, &nic, nic.snat_address.as_deref(), "network_interface.create").await?;
    tx.set_nic_groups(nic.id.as_str(), vpc.id.as_str(), &nic.security_group_ids).await?;
    if plug.is_none() {
        network_changed(tx, &vpc.id, &[]).await?;
    }
    // A NIC made by an instance's create is on no host yet: the hosts learn of it when the
    // instance is placed on one (`sync_instance_nics`), and the create's transaction,
    // which holds its host's row, takes no other host's (two creates on two hosts of one
    // VPC would wait on each other).
    Ok(nic)
}

/// List network interfaces.
pub async fn list(
    st: &AppState,
    caller: &Caller,
    p: &PageParams,
    f: NetworkInterfaceFilter,
) -> Result<Page<NetworkInterface>> {
    let pg = Paging::from(p)?;
    let mut filters: Vec<(&str, String)> = f.project_id.into_iter().map(|p| ("project_id", p)).collect();
    filters.extend(f.vpc_id.map(|n| ("vpc_id", n)));
    filters.extend(f.subnet_id.map(|n| ("subnet_id", n)));
    filters.extend(f.instance_id.map(|n| ("instance_id", n)));
    filters.extend(f.name.map(|n| ("name", n)));
    let mut page = st.store.list::<NetworkInterface>(&caller.scope(), &filters, pg.limit, pg.cursor.as_deref()).await?;
    crate::app::dataplane::fill(st, &mut page.items).await?;
    Ok(page)
}

/// Get a network interface.
pub async fn get(st: &AppState, caller: &Caller, id: &str) -> Result<NetworkInterface> {
    view(st, st.store.get(&caller.scope(), id).await?).await
}

/// A NIC with its data-plane fields (host, state, readiness) as the store knows them now.
async fn view(st: &AppState, nic: NetworkInterface) -> Result<NetworkInterface> {
    let mut one = [nic];
    crate::app::dataplane::fill(st, &mut one).await?;
    let [nic] = one;
    Ok(nic)
}

/// Create a network interface on its own (to plug into a stopped instance later, or,
/// for operators, bound to a host).
pub async fn create(st: &AppState, caller: &Caller, b: NetworkInterfaceCreate) -> Result<NetworkInterface> {
    validate::dns_label("name", &b.name)?;
    validate::text("description", &b.description, 255)?;
    let subnet: Subnet = st.store.get(&caller.scope(), b.subnet_id.as_str()).await?;
    require_write(caller, &subnet.tenant_id, &subnet.project_id, "creating network interfaces in this project")?;
    if let Some(h) = &b.host_id {
        caller.require_operator("binding network interfaces to hosts")?;
        st.store.get::<Host>(&caller.scope(), h.as_str()).await.map_err(|e| crate::app::reference(e, "host_id"))?;
    } else if b.plug.is_some() {
        return Err(Error::invalid(
            "plug_requires_host",
            "plug: only a NIC bound to a host (host_id) is plugged by choice",
        )
        .with_constraint(json!({ "field": "plug", "rule": "requires host_id" })));
    }
    let mut tx = st.store.begin().await?;
    let n = NewNic {
        name: b.name,
        description: b.description,
        ipv4: b.ipv4,
        mac: b.mac,
        security_group_ids: b.security_group_ids,
        port_security: b.port_security,
        bound_host: b.host_id,
        plug: b.plug,
        external_access: b.external_access,
    };
    let nic = insert_nic(&mut tx, caller, b.subnet_id.as_str(), n, None, "").await?;
    // Standalone NICs are not the instance's to delete.
    tx.set_nic_owned(nic.id.as_str(), false).await?;
    tx.audit(&caller.audit(), nic.id.as_str(), Some(nic.tenant_id.as_str()), 201).await?;
    tx.commit().await?;
    view(st, nic).await
}

/// Reads a NIC for a change, its VPC locked first (the order every NIC change takes).
async fn nic_for_change(tx: &mut Tx, caller: &Caller, id: &str, if_match: Option<i64>) -> Result<NetworkInterface> {
    let peek: NetworkInterface = tx.peek(&caller.scope(), id).await?;
    require_write(caller, &peek.tenant_id, &peek.project_id, "changing network interfaces in this project")?;
    let _vpc: Vpc = tx.get(&caller.scope(), peek.vpc_id.as_str()).await?;
    let nic: NetworkInterface = tx.get(&caller.scope(), id).await?;
    super::check_generation(&nic, if_match)?;
    Ok(nic)
}

/// Change a NIC's name, description, groups or port security.
pub async fn update(
    st: &AppState,
    caller: &Caller,
    id: &str,
    b: NetworkInterfaceUpdate,
    if_match: Option<i64>,
) -> Result<NetworkInterface> {
    if let Some(n) = &b.name {
        validate::dns_label("name", n)?;
    }
    crate::app::opt_text("description", &b.description, 255)?;
    let mut tx = st.store.begin().await?;
    let mut nic = nic_for_change(&mut tx, caller, id, if_match).await?;
    let mut filters_changed = false;
    if let Some(groups) = b.security_group_ids {
        groups_of_vpc(&mut tx, caller, &nic.vpc_id, &groups, "security_group_ids").await?;
        if groups != nic.security_group_ids {
            tx.set_nic_groups(id, nic.vpc_id.as_str(), &groups).await?;
            nic.security_group_ids = groups;
            filters_changed = true;
        }
    }
    if let Some(ps) = b.port_security
        && ps != nic.port_security
    {
        nic.port_security = ps;
        filters_changed = true;
    }
    // A NIC without an instance answers to its name in the VPC's DNS.
    let renamed = b.name.as_ref().is_some_and(|n| *n != nic.name);
    if let Some(n) = b.name {
        nic.name = n;
    }
    if let Some(d) = b.description {
        nic.description = d;
    }
    let mut public_changed = false;
    if let Some(want) = b.external_access {
        public_changed = public::set_external_access(&mut tx, &mut nic, want, true, "external_access").await?;
    }
    if filters_changed {
        nic.filter_generation = tx.bump_firewall(nic.vpc_id.as_str()).await?;
    }
    tx.save(&mut nic).await?;
    if public_changed {
        public::meter_snat(&mut tx, &nic, nic.snat_address.as_deref(), "network_interface.update").await?;
    }
    if filters_changed || public_changed || renamed {
        network_changed(&mut tx, &nic.vpc_id, &[]).await?;
    }
    tx.audit(&caller.audit(), id, Some(nic.tenant_id.as_str()), 200).await?;
    tx.commit().await?;
    view(st, nic).await
}

fn attached(nic: &NetworkInterface, inst: &InstanceId) -> Error {
    Error::conflict(
        "nic_attached",
        format!("network interface {} is plugged into instance {inst}; detach it first", nic.name),
    )
    .with_constraint(json!({ "rule": "unattached", "instance_id": inst }))
}

/// Delete a NIC not plugged into an instance.
pub async fn delete(st: &AppState, caller: &Caller, id: &str, if_match: Option<i64>) -> Result<()> {
    let mut tx = st.store.begin().await?;
    let nic = nic_for_change(&mut tx, caller, id, if_match).await?;
    if let Some(i) = &nic.instance_id {
        return Err(attached(&nic, i));
    }
    public::release_nic(&mut tx, &nic).await?;
    tx.remove_nic(id).await?;
    super::charge(&mut tx, &nic.tenant_id, &nic.project_id, quota::NETWORK_INTERFACES, -1).await?;
    tx.bump_firewall(nic.vpc_id.as_str()).await?;
    let extra: Vec<HostId> = nic.host_id.iter().cloned().collect();
    network_changed(&mut tx, &nic.vpc_id, &extra).await?;
    tx.audit(&caller.audit(), id, Some(nic.tenant_id.as_str()), 204).await?;
    tx.commit().await?;
    Ok(())
}

/// Refuses unless the instance is stopped (NICs change only then).
fn require_stopped(inst: &Instance, what: &str) -> Result<()> {
    if inst.state == InstanceState::Stopped && inst.lifecycle == Lifecycle::Active {
        return Ok(());
    }
    Err(Error::conflict(
        "instance_not_stopped",
        format!("instance {} is {}; {what} only while it is stopped", inst.name, inst.state.as_str()),
    )
    .with_constraint(json!({ "rule": "state", "state": inst.state.as_str(), "required": "stopped" })))
}

/// Plugs an existing, unattached NIC of the instance's project into `slot`, in `tx`
/// (the NIC's VPC is locked first). `field` names the request field in refusals.
pub(crate) async fn plug_existing(
    tx: &mut Tx,
    caller: &Caller,
    inst: &Instance,
    nic_id: &str,
    slot: u8,
    field: &str,
) -> Result<NetworkInterface> {
    let peek: NetworkInterface = tx.peek(&caller.scope(), nic_id).await?;
    let _vpc: Vpc = tx.get(&caller.scope(), peek.vpc_id.as_str()).await?;
    let mut nic: NetworkInterface = tx.get(&caller.scope(), nic_id).await?;
    if nic.project_id != inst.project_id {
        return Err(Error::invalid(
            "invalid_reference",
            format!("{field}: network interface {nic_id} is in another project than the instance"),
        )
        .with_constraint(json!({ "field": field, "rule": "same-project" })));
    }
    if let Some(i) = &nic.instance_id {
        return Err(attached(&nic, i));
    }
    if nic.host_id.is_some() {
        return Err(Error::conflict(
            "nic_bound_to_host",
            format!("{field}: network interface {} is bound to a host by an operator", nic.name),
        )
        .with_constraint(json!({ "field": field, "rule": "unbound" })));
    }
    nic.instance_id = Some(inst.id.clone());
    nic.slot = Some(slot);
    nic.primary = slot == 0;
    tx.save(&mut nic).await?;
    tx.set_nic_owned(nic_id, false).await?;
    Ok(nic)
}

/// Plug an existing NIC into a stopped instance, in its lowest free slot.
pub async fn attach(
    st: &AppState,
    caller: &Caller,
    instance_id: &str,
    b: NetworkInterfaceAttach,
) -> Result<NetworkInterface> {
    let mut tx = st.store.begin().await?;
    let inst: Instance = tx.get(&caller.scope(), instance_id).await?;
    require_write(caller, &inst.tenant_id, &inst.project_id, "changing instances in this project")?;
    require_stopped(&inst, "network interfaces are attached")?;
    let slots: Vec<i64> =
        tx.instance_nics(instance_id).await?.iter().filter_map(|(n, _)| n.slot.map(i64::from)).collect();
    let slot = lowest_free_number(&slots, 0, MAX_NICS_PER_INSTANCE as i64 - 1).ok_or_else(|| {
        Error::conflict("too_many_nics", format!("an instance has at most {MAX_NICS_PER_INSTANCE} network interfaces"))
            .with_constraint(json!({ "rule": "max", "max": MAX_NICS_PER_INSTANCE }))
    })?;
    let nic = plug_existing(&mut tx, caller, &inst, b.nic_id.as_str(), slot as u8, "nic_id").await?;
    // It goes where the (stopped, placed) instance is: its host and VPC peers are told.
    let host = inst.host_id.as_ref().filter(|_| inst.power != PowerState::Absent).map(|h| h.as_str());
    tx.sync_instance_nics(instance_id, host).await?;
    tx.audit(&caller.audit(), nic.id.as_str(), Some(nic.tenant_id.as_str()), 200).await?;
    tx.commit().await?;
    view(st, nic).await
}

/// Unplug a NIC from a stopped instance. The primary (slot 0) goes last: slots never
/// renumber, so the guest's device order stays stable.
pub async fn detach(st: &AppState, caller: &Caller, instance_id: &str, nic_id: &str) -> Result<()> {
    let mut tx = st.store.begin().await?;
    let inst: Instance = tx.get(&caller.scope(), instance_id).await?;
    require_write(caller, &inst.tenant_id, &inst.project_id, "changing instances in this project")?;
    let mut nic = nic_for_change(&mut tx, caller, nic_id, None).await?;
    if nic.instance_id.as_ref() != Some(&inst.id) {
        return Err(Error::not_found("network interface", nic_id));
    }
    require_stopped(&inst, "network interfaces are detached")?;
    let others = tx.instance_nics(instance_id).await?.len() > 1;
    if nic.slot == Some(0) && others {
        return Err(Error::conflict(
            "primary_nic",
            format!("network interface {} is the instance's primary (slot 0); detach the others first", nic.name),
        )
        .with_constraint(json!({ "rule": "primary-last" })));
    }
    nic.instance_id = None;
    nic.slot = None;
    nic.primary = false;
    nic.host_id = None;
    tx.save(&mut nic).await?;
    tx.set_nic_owned(nic_id, false).await?;
    tx.unplace_nic(nic_id).await?;
    let extra: Vec<HostId> = inst.host_id.iter().cloned().collect();
    network_changed(&mut tx, &nic.vpc_id, &extra).await?;
    tx.audit(&caller.audit(), nic_id, Some(nic.tenant_id.as_str()), 204).await?;
    tx.commit().await?;
    Ok(())
}

/// Places an instance's NICs on its host (its create wrote them unplaced: the create's
/// transaction holds its host's row and must not take other hosts'; a create that does
/// not start leaves them so until the first start). Its own transaction, which takes host
/// rows in one (sorted) order; run before a boot waits for them.
pub async fn place_instance_nics(st: &AppState, id: &InstanceId) -> Result<()> {
    let mut tx = st.store.begin().await?;
    let inst: Instance = tx.peek(&plinth_domain::authz::Scope::Platform, id.as_str()).await?;
    let host = inst.host_id.as_ref().filter(|_| inst.power != PowerState::Absent).map(|h| h.as_str());
    tx.sync_instance_nics(id.as_str(), host).await?;
    tx.commit().await?;
    Ok(())
}

/// In an instance's delete transaction: removes the NICs its create made and unplugs the
/// ones attached to it.
pub(crate) async fn release_instance_nics(tx: &mut Tx, inst: &Instance) -> Result<()> {
    // The VPCs first, then their NICs: the order every NIC change takes.
    for v in tx.instance_vpcs(inst.id.as_str()).await? {
        let _vpc: Vpc = tx.get(&plinth_domain::authz::Scope::Platform, &v).await?;
    }
    let nics = tx.instance_nics(inst.id.as_str()).await?;
    let extra: Vec<HostId> = inst.host_id.iter().cloned().collect();
    let mut vpcs = std::collections::BTreeSet::new();
    for (mut nic, owned) in nics {
        if owned {
            public::release_nic(tx, &nic).await?;
            tx.remove_nic(nic.id.as_str()).await?;
            super::charge(tx, &nic.tenant_id, &nic.project_id, quota::NETWORK_INTERFACES, -1).await?;
        } else {
            nic.instance_id = None;
            nic.slot = None;
            nic.primary = false;
            nic.host_id = None;
            tx.save(&mut nic).await?;
            tx.unplace_nic(nic.id.as_str()).await?;
        }
        vpcs.insert(nic.vpc_id.clone());
    }
    for v in vpcs {
        tx.bump_firewall(v.as_str()).await?;
        network_changed(tx, &v, &extra).await?;
    }
    Ok(())
}
