//! Instance create: the request's checks, the reads it needs (concurrently), then the
//! saga's first steps — quota and claim — in the transaction that writes the instance,
//! its allocation, its first spec and the operation. So a full cloud refuses at once
//! (`no_capacity`) and a refusal writes nothing; the `instance.create` saga continues with
//! `prepare` and `start` in the background.

use super::{accepted, boot_source, check_image, injected, shape_named, user_data_column};
use crate::app::lifecycle;
use crate::app::network::{
    self,
    nics::{self, NewNic},
};
use crate::app::saga::{self, host::request_for, instance::InstanceParams};
use crate::app::scheduler::Consumer;
use crate::app::{AppState, Caller, Error, Result, billing, reference, signals};
use chrono::Utc;
use plinth_api::*;
use plinth_domain::quota;
use plinth_domain::validate;
use serde_json::json;

fn check_create(b: &InstanceCreate) -> Result<()> {
    validate::dns_label("name", &b.name)?;
    check_image(&b.image)?;
    validate::labels("labels", &b.labels)?;
    validate::traits("required_traits", &b.required_traits)?;
    validate::traits("forbidden_traits", &b.forbidden_traits)?;
    if let Some(u) = &b.user_data
        && u.len() > 64 * 1024
    {
        return Err(Error::invalid("too_large", "user_data is limited to 64 KiB")
            .with_constraint(json!({ "field": "user_data", "max_bytes": 65536 })));
    }
    if b.ssh_keys.len() > 32 {
        return Err(Error::invalid("too_many", "at most 32 ssh_keys")
            .with_constraint(json!({ "field": "ssh_keys", "max": 32 })));
    }
    for k in &b.ssh_keys {
        let ok = k.len() <= 16 * 1024
            && ["ssh-", "ecdsa-", "sk-"].iter().any(|p| k.starts_with(p))
            && k.split_whitespace().count() >= 2;
        if !ok {
            return Err(Error::invalid(
                "invalid_value",
                "ssh_keys must be OpenSSH public keys (`ssh-ed25519 AAAA… comment`)",
            )
            .with_constraint(json!({ "field": "ssh_keys", "rule": "openssh-public-key" })));
        }
    }
    if b.nics.len() > MAX_NICS_PER_INSTANCE {
        return Err(Error::invalid("too_many", format!("at most {MAX_NICS_PER_INSTANCE} nics"))
            .with_constraint(json!({ "field": "nics", "rule": "max", "max": MAX_NICS_PER_INSTANCE })));
    }
    for (i, n) in b.nics.iter().enumerate() {
        let field = format!("nics[{i}]");
        match (&n.nic_id, &n.subnet) {
            (Some(_), None) => {
                if n.ipv4.is_some()
                    || n.security_group_ids.is_some()
                    || n.port_security.is_some()
                    || n.external_access.is_some()
                {
                    return Err(Error::invalid(
                        "invalid_value",
                        format!(
                            "{field}: ipv4, security_group_ids, port_security and external_access are for new NICs (subnet), not nic_id"
                        ),
                    )
                    .with_constraint(json!({ "field": field, "rule": "nic-id-alone" })));
                }
            }
            (None, Some(_)) => {}
            _ => {
                return Err(Error::invalid("invalid_value", format!("{field}: give exactly one of nic_id and subnet"))
                    .with_constraint(json!({ "field": field, "rule": "one-of", "fields": ["nic_id", "subnet"] })));
            }
        }
    }
    Ok(())
}

/// One NIC of a create, resolved before its transaction.
enum PlannedNic {
    Existing(NicId),
    New { subnet_id: String, nic: NewNic },
}

/// Resolves the create's NICs (subnets by id or name within the project); none given is
/// one new NIC in the project's default subnet, made on first need.
async fn plan_nics(st: &AppState, caller: &Caller, project: &Project, b: &InstanceCreate) -> Result<Vec<PlannedNic>> {
    let name = |slot: usize| format!("{}-nic{slot}", b.name);
    if b.nics.is_empty() {
        let s = network::ensure_default_subnet(st, caller, project).await?;
        return Ok(vec![PlannedNic::New {
            subnet_id: s.id.to_string(),
            nic: NewNic { name: name(0), ..NewNic::default() },
        }]);
    }
    let mut out = Vec::with_capacity(b.nics.len());
    for (i, n) in b.nics.iter().enumerate() {
        if let Some(id) = &n.nic_id {
            out.push(PlannedNic::Existing(id.clone()));
            continue;
        }
        let r = n.subnet.as_deref().unwrap_or_default();
        let s = st.store.subnet_by_ref(&caller.scope(), project.id.as_str(), r).await?;
        if s.project_id != project.id {
            return Err(Error::invalid(
                "invalid_reference",
                format!("nics[{i}].subnet: subnet {r} is in another project"),
            )
            .with_constraint(json!({ "field": format!("nics[{i}].subnet"), "rule": "same-project" })));
        }
        out.push(PlannedNic::New {
            subnet_id: s.id.to_string(),
            nic: NewNic {
                name: name(i),
                ipv4: n.ipv4.clone(),
                security_group_ids: n.security_group_ids.clone(),
                port_security: n.port_security,
                external_access: n.external_access,
                ..NewNic::default()
            },
        });
    }
    Ok(out)
}

/// Writes or plugs the planned NICs, in slot order, in the instance's create transaction.
async fn plug_nics(tx: &mut plinth_store::Tx, caller: &Caller, inst: &Instance, plan: Vec<PlannedNic>) -> Result<()> {
    for (slot, p) in plan.into_iter().enumerate() {
        let field = format!("nics[{slot}]");
        match p {
            PlannedNic::Existing(id) => {
                nics::plug_existing(tx, caller, inst, id.as_str(), slot as u8, &format!("{field}.nic_id")).await?;
            }
            PlannedNic::New { subnet_id, nic } => {
                let plug = nics::Plug { instance_id: &inst.id, slot: slot as u8 };
                nics::insert_nic(tx, caller, &subnet_id, nic, Some(plug), &field).await?;
            }
        }
    }
    Ok(())
}

/// Creates an instance: checked, placed and claimed now (quota and claim in one
/// transaction with the instance, its first spec and its operation), prepared and started
/// by the `instance.create` saga in the background.
pub async fn create(st: &AppState, caller: &Caller, b: InstanceCreate) -> Result<InstanceAccepted> {
    check_create(&b)?;
    // The reads that need only the request run together; their answers are checked in
    // order, the project's first.
    let scope = caller.scope();
    let (project, shape, image) = tokio::join!(
        st.store.get::<Project>(&scope, b.project_id.as_str()),
        shape_named(st, &b.shape),
        st.store.image_for_project(&b.project_id, &b.image)
    );
    let project = project?;
    if !caller.principal.can_write_in(&project.tenant_id, Some(&project.id)) {
        return Err(Error::forbidden("creating instances in this project"));
    }
    let shape = shape?;
    if let Some(rc) = b.runtime_class
        && rc != shape.runtime_class
    {
        return Err(Error::invalid(
            "invalid_value",
            format!("shape {} is for runtime class {:?}, not {rc:?}", shape.name, shape.runtime_class),
        )
        .with_constraint(json!({ "field": "runtime_class", "rule": "matches-shape" })));
    }
    // The group and the budgets of the project's tenant are read together, too.
    let group = async {
        match &b.placement_group_id {
            Some(g) => st.store.get::<PlacementGroup>(&scope, g.as_str()).await.map(Some),
            None => Ok(None),
        }
    };
    let (group, budget) = tokio::join!(group, billing::check_budget(st, &project.tenant_id));
    let group = match group.map_err(|e| reference(e, "placement_group_id"))? {
        Some(g) => {
            if g.project_id != project.id {
                return Err(Error::invalid("invalid_reference", "placement_group_id: the group is in another project")
                    .with_constraint(json!({ "field": "placement_group_id", "rule": "same-project" })));
            }
            Some(g)
        }
        None => None,
    };
    let boot = boot_source(image?, &b.image, shape.disk_gib)?;
    budget?;
    let nic_plan = plan_nics(st, caller, &project, &b).await?;
    if b.volumes.len() > usize::from(crate::app::storage::attachments::SLOTS) {
        return Err(Error::invalid("too_many", "at most 8 volumes")
            .with_constraint(json!({ "field": "volumes", "rule": "max", "max": 8 })));
    }
    // The boot volume first, then the data volumes: all in one pool.
    let refs: Vec<String> = b.boot_volume.iter().chain(&b.volumes).cloned().collect();
    let (volumes, volume_host) = crate::app::storage::attachments::plan_for_create(st, caller, &project, &refs).await?;
    let boot_volume = match b.boot_volume {
        Some(_) => crate::app::storage::attachments::BootVolume::First { keep: b.keep_boot_volume },
        None => crate::app::storage::attachments::BootVolume::None,
    };
    let now = Utc::now();
    let mut inst = Instance {
        id: InstanceId::generate(),
        tenant_id: project.tenant_id.clone(),
        project_id: project.id.clone(),
        name: b.name.clone(),
        shape_id: shape.id.clone(),
        shape_name: shape.name.clone(),
        vcpus: shape.vcpus,
        memory_mib: shape.memory_mib,
        disk_gib: shape.disk_gib,
        gpu: shape.gpu.clone(),
        cpu_policy: shape.cpu_policy,
        hugepages: shape.hugepages,
        runtime_class: shape.runtime_class,
        image: b.image.clone(),
        boot: Some(boot),
        runtime: None,
        placement_group_id: group.as_ref().map(|g| g.id.clone()),
        required_traits: b.required_traits.clone(),
        forbidden_traits: b.forbidden_traits.clone(),
        dedicated_host: b.dedicated_host,
        restart_policy: b.restart_policy.unwrap_or(RestartPolicy::OnFailure),
        ssh_keys: b.ssh_keys.clone(),
        has_user_data: b.user_data.is_some(),
        labels: b.labels.clone(),
        state: InstanceState::Creating,
        lifecycle: Lifecycle::Creating,
        action: None,
        power: PowerState::Stopped,
        spec_generation: 0,
        boot_generation: 0,
        host_id: None,
        claim: None,
        observed: None,
        warning: None,
        generation: 1,
        created_at: now,
        updated_at: now,
    };
    // Saga steps `quota` and `claim`, inline: the quota is charged in the claim's
    // transaction, so concurrent creates cannot pass it.
    injected(st, "instance.create:quota")?;
    injected(st, "instance.create:claim")?;
    let claim_started = Utc::now();
    let mut req = request_for(&inst);
    if let Some(h) = volume_host {
        // Local volumes: only their host will do (shared ones go anywhere).
        req.volume_host = Some(h.0);
    }
    let consumer = Consumer {
        instance_id: inst.id.clone(),
        tenant_id: inst.tenant_id.clone(),
        project_id: inst.project_id.clone(),
    };
    let (mut tx, alloc) = st.sched.claim(&st.store, &mut req, group.as_ref(), &consumer, None).await?;
    inst.host_id = Some(alloc.host_id.clone());
    inst.claim = Some(alloc.claim.clone());
    let scopes = [inst.tenant_id.as_str(), inst.project_id.as_str()];
    if let Err(e) = tx.quota_charge(&scopes, &quota::consumption(&inst)).await {
        drop(tx);
        // The scheduler's cache counted the claim just rolled back.
        let _ = st.sched.refresh_host(&st.store, alloc.host_id.as_str()).await;
        return Err(e.into());
    }
    // The spec goes to the host in this same transaction: the saga's `prepare` step then
    // only waits for the host to report it prepared.
    lifecycle::publish(&mut inst, PowerState::Stopped, false);
    tx.bump_desired(alloc.host_id.as_str()).await?;
    let mut op = saga::new_operation(
        "instance.create",
        inst.id.as_str(),
        Some(&inst.tenant_id),
        Some(&inst.project_id),
        Some(&caller.principal.user_id),
        4,
    );
    op.started_at = Some(claim_started); // the inline steps' timing starts with the claim
    let params = serde_json::to_value(InstanceParams { instance_id: inst.id.clone(), start: b.start.unwrap_or(true) })
        .unwrap_or_default();
    saga::begin(st, &mut tx, &mut op, "instance.create", params, &["quota", "claim"]).await?;
    let placed = format!(
        "shape {}, image {}, placed on host {}{}",
        inst.shape_name,
        inst.image,
        alloc.host_id,
        if alloc.claim.tcg { " (TCG: the host has no usable KVM)" } else { "" }
    );
    let created = lifecycle::event(&inst, "created", placed, Some(&op.id));
    lifecycle::insert_new(&mut tx, &inst, &user_data_column(b.user_data.clone()), vec![created]).await?;
    let plugged = match plug_nics(&mut tx, caller, &inst, nic_plan).await {
        Ok(()) => crate::app::storage::attachments::attach_at_create(&mut tx, &inst, &volumes, boot_volume).await,
        Err(e) => Err(e),
    };
    if let Err(e) = plugged {
        drop(tx);
        let _ = st.sched.refresh_host(&st.store, alloc.host_id.as_str()).await;
        return Err(e);
    }
    tx.audit(&caller.audit(), inst.id.as_str(), Some(inst.tenant_id.as_str()), 202).await?;
    tx.commit().await?;
    st.signals.poke(&signals::host_key(alloc.host_id.as_str()));
    // An insert's `updated_at` column is the object's creation time.
    st.signals.announce(&signals::instance_key(inst.id.as_str()), inst.created_at.timestamp_micros());
    saga::spawn(st, op.id.clone());
    Ok(accepted(caller, inst, op))
}
