//! Volume disks of a running guest, changed live: the `Devices` step.
//!
//! Every volume disk uses the same names as at boot (`cmdline.rs`): the key as secret
//! `vsec<N>`, the file and qcow2 nodes `v<N>-file` → `v<N>`, the throttle node `v<N>-io`
//! in throttle group `vtg<N>` (the type's I/O limits), the device `vdisk<N>` on PCIe root
//! port `hp<N>` (q35). A hot-plug is `object-add` of the secret (the key goes over the
//! guest's private QMP socket, never to a disk) and of the group, the `blockdev-add` of its
//! nodes (one for the whole tree of a disk of one layer, `blockdev::nested`) and a `device_add`, undone in reverse on any failure. New limits are set on the group live
//! (`qom-set`). An unplug is `device_del`, then waiting
//! for the guest to let go (`DEVICE_DELETED`): a short while in the step, after that the
//! watcher notices it ([`Inner::released`]). Only once the device is gone are its nodes and
//! secret removed (`blockdev-del` of a node a device still uses fails, and a second
//! `device_del` is refused while one is pending). A disk smaller than its spec grows with
//! `block_resize` (virtio-blk tells the guest).
//!
//! A snapshot taken live adds a layer to a disk's chain (`blockdev-snapshot`); deleting
//! a snapshot merges its layer into the one below (`block-commit`, and `job-complete` for
//! the top layer). A layer's nodes are named for it (`v<N>-s<tag>`), not for its place,
//! so a merge below leaves the names above as they are.
//!
//! What the guest has (plugged, unplugging, failed) is kept per guest and read by the
//! runner after every step ([`crate::runtime::Runtime::plugs`]).

use super::blockdev::{self, Key};
use super::guest_agent::{self, GuestAgent};
use super::qmp::{Qmp, QmpError};
use super::{Guest, GuestState, Inner, Machine, QMP_TIMEOUT, guest, lock, machine_for};
use crate::runtime::{GuestEvent, Happened};
use plinth_api::{InstanceSpec, InstanceVolumeSpec, ObservedFreeze, ObservedPlug, PlugState, VolumeLayer};
use serde_json::{Value, json};
use std::collections::{BTreeMap, BTreeSet};
use std::time::Duration;

/// How long a step waits for the guest to release a disk before leaving it to the
/// watcher (the guest may take as long as it likes; the server keeps the deadline).
const UNPLUG_WAIT: Duration = Duration::from_secs(5);

/// QMP commands that attach or detach take longer than a query (Incus gives them 30 s).
const PLUG_TIMEOUT: Duration = Duration::from_secs(30);

/// How long a step waits for a live merge (it copies what the layer holds).
const MERGE_TIMEOUT: Duration = Duration::from_secs(600);

/// Tests only: with `PLINTH_AGENT_CRASH_AT=<point>` the agent aborts at that point (as a
/// `kill -9` would end it), to prove a restart resumes or unwinds what was half done.
fn crash_point(point: &str) {
    if std::env::var("PLINTH_AGENT_CRASH_AT").is_ok_and(|p| p == point) {
        tracing::error!("crashing at {point} (PLINTH_AGENT_CRASH_AT)");
        std::process::abort();
    }
}

/// Tests only: with `PLINTH_AGENT_FAIL_AT=<point>` the step fails at that point (as a QEMU
/// refusal would), to prove a failure leaves nothing behind.
fn fail_point(point: &str) -> Result<(), String> {
    match std::env::var("PLINTH_AGENT_FAIL_AT") {
        Ok(p) if p == point => Err(format!("failing at {point} (PLINTH_AGENT_FAIL_AT)")),
        _ => Ok(()),
    }
}

fn qmp_err(what: &str, e: QmpError) -> String {
    format!("{what}: {e}")
}

/// The volume disks the guest has now (device `vdisk<N>` → its serial); devices whose
/// unplug is pending are still listed.
async fn present(qmp: &Qmp) -> Result<BTreeMap<u8, String>, String> {
    let list = qmp
        .execute_within("qom-list", json!({ "path": "/machine/peripheral" }), QMP_TIMEOUT)
        .await
        .map_err(|e| qmp_err("listing the guest's devices", e))?;
    let mut out = BTreeMap::new();
    for item in list.as_array().into_iter().flatten() {
        let Some(slot) = item["name"].as_str().and_then(|n| n.strip_prefix("vdisk")).and_then(|n| n.parse().ok())
        else {
            continue;
        };
        let serial = qmp
            .execute_within(
                "qom-get",
                json!({ "path": format!("/machine/peripheral/vdisk{slot}"), "property": "serial" }),
                QMP_TIMEOUT,
            )
            .await
            .map(|v| v.as_str().unwrap_or_default().to_string())
            .unwrap_or_default();
        out.insert(slot, serial);
    }
    Ok(out)
}

/// The named block nodes, each with `value` of its entry (`flat`: without the chain below
/// each node, which QEMU then does not measure).
async fn named_nodes(qmp: &Qmp, flat: bool, value: fn(&Value) -> u64) -> Result<BTreeMap<String, u64>, String> {
    let list = qmp
        .execute_within("query-named-block-nodes", json!({ "flat": flat }), QMP_TIMEOUT)
        .await
        .map_err(|e| qmp_err("listing block nodes", e))?;
    Ok(list
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|n| Some((n["node-name"].as_str()?.to_string(), value(n))))
        .collect())
}

/// The named block nodes, with their virtual size.
async fn nodes(qmp: &Qmp) -> Result<BTreeMap<String, u64>, String> {
    named_nodes(qmp, true, |n| n["image"]["virtual-size"].as_u64().unwrap_or(0)).await
}

/// Where a node of a disk comes in its release: the throttle node, then the qcow2 nodes,
/// then the file nodes (a node goes only once nothing uses it; a chain's layers go top
/// down over the rounds of [`release`]).
fn release_order(name: &str) -> u8 {
    match name {
        n if n.ends_with("-io") => 0,
        n if n.ends_with("-file") => 2,
        _ => 1,
    }
}

/// The named block nodes, each with whether it has a backing node.
async fn nodes_backed(qmp: &Qmp) -> Result<BTreeMap<String, bool>, String> {
    Ok(nodes_depth(qmp).await?.into_iter().map(|(n, d)| (n, d > 0)).collect())
}

/// The named block nodes, each with the depth of the chain below it
/// (`backing_file_depth`, which QEMU 7.2 counts only when the query is not `flat`; a
/// throttle node counts the layers of the chain it is over).
async fn nodes_depth(qmp: &Qmp) -> Result<BTreeMap<String, u64>, String> {
    named_nodes(qmp, false, |n| n["backing_file_depth"].as_u64().unwrap_or(0)).await
}

/// Removes slot `n`'s nodes and secret (once its device is gone); what is not there is
/// skipped.
pub(super) async fn release(qmp: &Qmp, n: u8) -> Result<(), String> {
    let mut errors = Vec::new();
    let mut mine: Vec<String> =
        nodes(qmp).await?.into_keys().filter(|k| blockdev::slot_of_node(k) == Some(n)).collect();
    mine.sort_by_key(|name| release_order(name));
    // A layer still backing another is in use: it goes in a later round, once the one
    // over it has gone. A round that removes nothing ends it.
    while !mine.is_empty() {
        let before = mine.len();
        let mut failed = Vec::new();
        for node in std::mem::take(&mut mine) {
            match qmp.execute_within("blockdev-del", json!({ "node-name": node }), PLUG_TIMEOUT).await {
                Ok(_) => {}
                Err(QmpError::Command { desc, .. }) if desc.contains("Failed to find node") => {}
                Err(e) => failed.push((node, qmp_err("removing a node", e))),
            }
        }
        if failed.len() == before {
            errors.extend(failed.into_iter().map(|(node, e)| format!("{node}: {e}")));
            break;
        }
        mine = failed.into_iter().map(|(node, _)| node).collect();
    }
    for object in [format!("vtg{n}"), format!("vsec{n}")] {
        match qmp.execute_within("object-del", json!({ "id": object }), QMP_TIMEOUT).await {
            Ok(_) => {}
            Err(QmpError::Command { desc, .. }) if desc.contains("not found") => {}
            Err(e) => errors.push(qmp_err(&format!("removing object {object}"), e)),
        }
    }
    if errors.is_empty() { Ok(()) } else { Err(errors.join("; ")) }
}

/// Asks the guest to release slot `n`'s disk and waits a little for it: `Ok(true)` when
/// it did (`DEVICE_DELETED`), `Ok(false)` when it has not yet.
async fn unplug(qmp: &Qmp, n: u8, wait: Duration) -> Result<bool, String> {
    let id = format!("vdisk{n}");
    let mut events = qmp.subscribe();
    match qmp.execute_within("device_del", json!({ "id": id }), PLUG_TIMEOUT).await {
        Ok(_) => {}
        // Asked before (e.g. before an agent restart): the guest has not answered yet.
        Err(QmpError::Command { desc, .. }) if desc.contains("already in the process of unplug") => {}
        Err(e) => return Err(qmp_err(&format!("device_del {id}"), e)),
    }
    crash_point("unplug:after_device_del");
    let deadline = tokio::time::Instant::now() + wait;
    loop {
        tokio::select! {
            ev = events.recv() => match ev {
                Some(e) if e.name == "DEVICE_DELETED" && e.data["device"].as_str() == Some(id.as_str()) => return Ok(true),
                Some(e) if e.name == "DEVICE_UNPLUG_GUEST_ERROR" && e.data["device"].as_str() == Some(id.as_str()) => {
                    return Err(format!("the guest refused to release {id} (DEVICE_UNPLUG_GUEST_ERROR)"));
                }
                Some(_) => {}
                None => return Err("the guest's monitor closed while it released a disk".into()),
            },
            _ = tokio::time::sleep_until(deadline) => return Ok(false),
        }
    }
}

/// Hot-plugs volume `v` (its file `file`, opened with `key`) on its slot, the same graph a
/// boot gives it (`blockdev.rs`); on failure nothing of it is left.
async fn plug(
    qmp: &Qmp,
    v: &InstanceVolumeSpec,
    files: &[String],
    key: Option<&str>,
    direct: bool,
) -> Result<(), String> {
    let n = v.slot;
    let key = key.map_or(Key::None, Key::Data);
    let graph = blockdev::volume_disk(
        blockdev::Place::Slot(n),
        blockdev::Backing::of(v.connection.as_ref(), files),
        key,
        direct,
        &v.qos,
        Machine::Q35,
        &v.serial,
    );
    let steps = async {
        let t = std::time::Instant::now();
        for o in graph.objects {
            let id = o["id"].as_str().unwrap_or_default().to_string();
            qmp.execute_within("object-add", o, QMP_TIMEOUT).await.map_err(|e| qmp_err(&format!("adding {id}"), e))?;
        }
        // A disk of one layer: one command for its whole tree. Nodes made inside another's
        // definition are not the monitor's own (`blockdev-del` refuses them; they go with
        // the node over them), so a chain of layers, whose layers a live merge removes one
        // by one, is added node by node.
        let one_layer = !graph.nodes.iter().any(|n| n.get("backing").is_some());
        let adds = match blockdev::nested(&graph.nodes) {
            Some(root) if one_layer => vec![root],
            _ => graph.nodes,
        };
        for node in adds {
            let name = node["node-name"].as_str().unwrap_or_default().to_string();
            qmp.execute_within("blockdev-add", node, PLUG_TIMEOUT)
                .await
                .map_err(|e| qmp_err(&format!("adding node {name}"), e))?;
        }
        let nodes_ms = t.elapsed().as_millis() as u64;
        crash_point("hotplug:after_nodes");
        qmp.execute_within("device_add", graph.device, PLUG_TIMEOUT)
            .await
            .map_err(|e| qmp_err("adding the disk to the guest", e))?;
        tracing::debug!(
            slot = n,
            nodes_ms,
            device_ms = t.elapsed().as_millis() as u64 - nodes_ms,
            "qemu: disk plugged"
        );
        Ok::<(), String>(())
    };
    if let Err(e) = steps.await {
        if let Err(r) = release(qmp, n).await {
            tracing::warn!(slot = n, "qemu: undoing a failed hot-plug: {r}");
        }
        return Err(e);
    }
    Ok(())
}

fn plug_state(v: &InstanceVolumeSpec, state: PlugState, detail: Option<String>) -> ObservedPlug {
    ObservedPlug { attachment_id: v.attachment_id.clone(), state, detail }
}

/// After a live snapshot failed: its layer's nodes and `.part` file go, unless the disk
/// was switched to the layer (the guest writes there; it stays for the disk's release).
/// The server drops a failed snapshot, so nothing would take them again.
async fn drop_unswitched(qmp: &Qmp, node: &str, name: &str, part: &std::path::Path) {
    let Ok(named) = nodes_backed(qmp).await else { return };
    let (fmt, file_node) = blockdev::layer_names(node, name);
    if named.get(&fmt) == Some(&true) {
        return;
    }
    for n in [&fmt, &file_node].into_iter().filter(|n| named.contains_key(*n)) {
        if let Err(e) = qmp.execute_within("blockdev-del", json!({ "node-name": n }), PLUG_TIMEOUT).await {
            tracing::warn!(node = %n, "qemu: removing a failed snapshot's node: {e}");
            return;
        }
    }
    let _ = std::fs::remove_file(part);
}

/// Freezes the guest's filesystems through its agent before `layer` is taken: the outcome
/// (frozen, or why not), and the connection to thaw them on when they were.
async fn freeze_guest(socket: &std::path::Path, layer: &VolumeLayer) -> (ObservedFreeze, Option<GuestAgent>) {
    let outcome = |frozen, filesystems, detail| ObservedFreeze {
        snapshot_id: layer.snapshot_id.clone(),
        frozen,
        filesystems,
        detail,
    };
    let mut agent = match GuestAgent::connect(socket, guest_agent::SYNC_TIMEOUT).await {
        Ok(a) => a,
        Err(e) => return (outcome(false, None, Some(e)), None),
    };
    match agent.freeze(socket).await {
        Ok(n) => (outcome(true, Some(n), None), Some(agent)),
        Err(e) => {
            // It may yet freeze them: a thaw is owed all the same.
            let _ = agent.thaw(socket).await;
            (outcome(false, None, Some(e)), None)
        }
    }
}

impl Inner {
    /// The `Devices` step: brings the running guest's volume disks to `spec`.
    pub(super) async fn devices(
        &self,
        g: &Guest,
        st: &mut GuestState,
        generation: i64,
        spec: InstanceSpec,
    ) -> Result<(), String> {
        let qmp = st.live.as_ref().ok_or("the guest is not running")?.qmp.clone();
        if let Err(e) = guest_agent::thaw_left(&g.paths.agent_socket).await {
            tracing::warn!(instance = %g.id, "guest agent: a thaw owed since a restart: {e}");
        }
        let record = st.record.as_mut().ok_or("no record")?;
        let machine = machine_for(spec.runtime_class)?;
        let want: BTreeMap<u8, &InstanceVolumeSpec> = spec.volumes.iter().map(|v| (v.slot, v)).collect();
        // What the guest was given, by slot (to name the attachment of a disk it has).
        let before: BTreeMap<u8, InstanceVolumeSpec> =
            record.spec.volumes.iter().map(|v| (v.slot, v.clone())).collect();
        let mut given: BTreeMap<u8, InstanceVolumeSpec> =
            record.spec.volumes.iter().map(|v| (v.slot, v.clone())).collect();
        let started = std::time::Instant::now();
        let mut has = present(&qmp).await?;
        let read_ms = started.elapsed().as_millis() as u64;
        let mut plug_ms = 0;
        let mut disks: BTreeMap<u8, ObservedPlug> = BTreeMap::new();
        let mut errors = Vec::new();

        // Disks the spec no longer wants (or wants another volume in the slot): released.
        for (slot, serial) in has.clone() {
            if want.get(&slot).is_some_and(|v| v.serial == serial) {
                continue;
            }
            let Some(was) = given.get(&slot).cloned() else {
                tracing::warn!(instance = %g.id, slot, %serial, "qemu: a disk no spec names; asking the guest to release it");
                let _ = unplug(&qmp, slot, Duration::ZERO).await;
                continue;
            };
            if machine == Machine::Microvm {
                let why = "a microVM cannot unplug a disk: it goes when the guest is stopped".to_string();
                disks.insert(slot, plug_state(&was, PlugState::Unplugging, Some(why)));
                continue;
            }
            let pending = lock(&g.unplugging).contains(&slot);
            let wait = if pending { Duration::ZERO } else { UNPLUG_WAIT };
            lock(&g.unplugging).insert(slot);
            match unplug(&qmp, slot, wait).await {
                Ok(true) => {
                    lock(&g.unplugging).remove(&slot);
                    release(&qmp, slot).await.unwrap_or_else(|e| errors.push(e));
                    has.remove(&slot);
                    given.remove(&slot);
                    tracing::info!(instance = %g.id, slot, volume = %was.volume_id, "qemu: the guest released the disk");
                }
                Ok(false) => {
                    tracing::info!(instance = %g.id, slot, volume = %was.volume_id, "qemu: waiting for the guest to release the disk");
                    disks.insert(slot, plug_state(&was, PlugState::Unplugging, None));
                }
                Err(e) => {
                    disks.insert(slot, plug_state(&was, PlugState::Unplugging, Some(e.clone())));
                    errors.push(e);
                }
            }
        }

        // Nodes left without their device (a crash mid-plug, a release that failed): looked
        // for at this agent's first step on the guest and after any step that failed.
        if !g.scanned.swap(true, std::sync::atomic::Ordering::SeqCst) {
            let named = nodes(&qmp).await?;
            let orphans: BTreeSet<u8> =
                named.keys().filter_map(|n| blockdev::slot_of_node(n)).filter(|slot| !has.contains_key(slot)).collect();
            for slot in orphans {
                tracing::info!(instance = %g.id, slot, "qemu: removing nodes left without their disk");
                release(&qmp, slot).await.unwrap_or_else(|e| errors.push(e));
                given.remove(&slot);
            }
        }

        // Disks the spec wants and the guest lacks: hot-plugged.
        let direct = self.disk_cache == "none";
        for v in &spec.volumes {
            if has.get(&v.slot).is_some_and(|s| *s == v.serial) {
                // Snapshots taken since: their layers added live.
                let mut now = v.clone();
                now.layers = given.get(&v.slot).map(|g| g.layers.clone()).unwrap_or_default();
                // A snapshot deleted: its layer merged live.
                if let Err(e) = self.merge_live(&qmp, g, v, &mut now.layers).await {
                    tracing::warn!(instance = %g.id, slot = v.slot, volume = %v.volume_id, "qemu: live merge failed: {e}");
                    errors.push(e);
                }
                if let Err(e) = self.snapshot_live(&qmp, g, v, &mut now.layers, direct).await {
                    tracing::warn!(instance = %g.id, slot = v.slot, volume = %v.volume_id, "qemu: live snapshot failed: {e}");
                    errors.push(e);
                }
                given.insert(v.slot, now);
                disks.insert(v.slot, plug_state(v, PlugState::Plugged, None));
                continue;
            }
            let refused = if machine == Machine::Microvm {
                Some("a microVM cannot hot-plug: the disk is given at its next start".to_string())
            } else if has.contains_key(&v.slot) {
                Some(format!("slot {} still holds a disk the guest has not released", v.slot))
            } else {
                None
            };
            if let Some(why) = refused {
                disks.insert(v.slot, plug_state(v, PlugState::Failed, Some(why)));
                continue;
            }
            let result = match self.volume_files(v) {
                Ok(files) => {
                    let key = match v.encrypted {
                        true => match self.blobs() {
                            Some(b) => b.volume_key(&v.volume_id).await.map(Some),
                            None => Err("no key source (the host is not connected)".into()),
                        },
                        false => Ok(None),
                    };
                    match key {
                        Ok(k) => {
                            let t = std::time::Instant::now();
                            let r = plug(&qmp, v, &files, k.as_deref(), direct).await;
                            plug_ms += t.elapsed().as_millis() as u64;
                            r
                        }
                        Err(e) => Err(format!("fetching its key: {e}")),
                    }
                }
                Err(e) => Err(e),
            };
            match result {
                Ok(()) => {
                    tracing::info!(instance = %g.id, slot = v.slot, volume = %v.volume_id, "qemu: disk hot-plugged");
                    given.insert(v.slot, v.clone());
                    has.insert(v.slot, v.serial.clone());
                    disks.insert(v.slot, plug_state(v, PlugState::Plugged, None));
                }
                Err(e) => {
                    tracing::warn!(instance = %g.id, slot = v.slot, volume = %v.volume_id, "qemu: hot-plug failed: {e}");
                    disks.insert(v.slot, plug_state(v, PlugState::Failed, Some(e.clone())));
                    errors.push(e);
                }
            }
        }

        // Disks smaller than their spec: grown live (the guest is told). Limits changed:
        // set on the disk's group live.
        // (A disk just plugged is already its volume's size: its host made or grew the file.)
        let grows = spec.volumes.iter().any(|v| before.get(&v.slot).is_some_and(|b| b.size_bytes < v.size_bytes));
        let named = if grows { nodes(&qmp).await? } else { Default::default() };
        for v in spec.volumes.iter().filter(|v| disks.get(&v.slot).is_some_and(|d| d.state == PlugState::Plugged)) {
            // The top of its chain (the layers the guest has) holds the size the guest sees.
            let top = given.get(&v.slot).and_then(|g| g.layers.last()).map(|l| l.file(&v.volume_id));
            let top = blockdev::layer_names(&format!("v{}", v.slot), top.as_deref().unwrap_or_default()).0;
            let now = named.get(&top).copied().unwrap_or(0);
            if grows && v.size_bytes > now {
                match qmp
                    .execute_within(
                        "block_resize",
                        json!({ "node-name": format!("v{}-io", v.slot), "size": v.size_bytes }),
                        PLUG_TIMEOUT,
                    )
                    .await
                {
                    Ok(_) => {
                        tracing::info!(instance = %g.id, slot = v.slot, from = now, to = v.size_bytes, "qemu: disk grown live")
                    }
                    Err(e) => errors.push(qmp_err(&format!("growing volume {}", v.volume_id), e)),
                }
            }
            if before.get(&v.slot).is_some_and(|was| was.volume_id == v.volume_id && was.qos != v.qos) {
                let set = json!({ "path": format!("/objects/vtg{}", v.slot), "property": "limits", "value": v.qos.qemu_limits() });
                match qmp.execute_within("qom-set", set, QMP_TIMEOUT).await {
                    Ok(_) => {
                        tracing::info!(instance = %g.id, slot = v.slot, qos = ?v.qos, "qemu: disk limits changed live")
                    }
                    Err(e) => errors.push(qmp_err(&format!("setting volume {}'s limits", v.volume_id), e)),
                }
            }
        }

        // The record says what the running process has, for the next step and a restart.
        record.spec.volumes = given.into_values().filter(|v| has.contains_key(&v.slot)).collect();
        record.generation = record.generation.max(generation);
        let t = std::time::Instant::now();
        guest::save(&g.paths.record, record).await.map_err(|e| e.to_string())?;
        tracing::debug!(instance = %g.id, read_ms, plug_ms, save_ms = t.elapsed().as_millis() as u64,
            total_ms = started.elapsed().as_millis() as u64, "qemu: devices step");
        *lock(&g.disks) = disks;
        if errors.is_empty() {
            Ok(())
        } else {
            g.scanned.store(false, std::sync::atomic::Ordering::SeqCst);
            Err(errors.join("; "))
        }
    }

    /// Adds to the running guest's disk of `v` the layers of `v.layers` it lacks (`has`,
    /// bottom first, grows as each is added): each made as `<layer>.qcow2.part` over the
    /// current top, added as a node without backing and put under the throttle node by
    /// `blockdev-snapshot` (the old top becomes its backing: what the snapshot holds), then
    /// renamed to its name, which tells the pool pass (and so the server) it is taken. A
    /// restart after the snapshot but before the rename finds the node in the guest and
    /// only renames. A failure is written beside the layer (`.failed`) for the pool pass
    /// to report.
    async fn snapshot_live(
        &self,
        qmp: &Qmp,
        g: &Guest,
        v: &InstanceVolumeSpec,
        has: &mut Vec<VolumeLayer>,
        direct: bool,
    ) -> Result<(), String> {
        if v.layers.len() <= has.len() {
            return Ok(());
        }
        if !v.layers.starts_with(has) {
            return Err(format!(
                "volume {}'s snapshots changed under the running guest other than by a new one; its disk is \
                 opened as they are at the guest's next start",
                v.volume_id
            ));
        }
        let pool = self.cfg.volume_pool.clone().ok_or("this host has no volume pool")?;
        let node = format!("v{}", v.slot);
        let blobs = self.blobs();
        for k in has.len() + 1..=v.layers.len() {
            let layer = &v.layers[k - 1];
            let name = layer.file(&v.volume_id);
            let (path, part) = (pool.join(&name), pool.join(format!("{name}.part")));
            let lower = if k == 1 { format!("{}.qcow2", v.volume_id) } else { v.layers[k - 2].file(&v.volume_id) };
            let step = async {
                let named = nodes_backed(qmp).await?;
                let (fmt, file_node) = blockdev::layer_names(&node, &name);
                match named.get(&fmt) {
                    Some(true) => {} // taken before a restart: only the rename is left
                    _ => {
                        // Added but not snapshotted before a restart: removed (it has no
                        // parent), or the file it has open is not touched.
                        for n in [&fmt, &file_node].into_iter().filter(|n| named.contains_key(*n)) {
                            qmp.execute_within("blockdev-del", json!({ "node-name": n }), PLUG_TIMEOUT)
                                .await
                                .map_err(|e| qmp_err(&format!("removing the half-added node {n}"), e))?;
                        }
                        // The layer the pool made ahead, or a new one now.
                        let (p, l, size) = (part.clone(), lower.clone(), v.size_bytes);
                        let (dir, id) = (pool.clone(), v.volume_id.clone());
                        let taken = tokio::task::spawn_blocking(move || {
                            let _ = std::fs::remove_file(&p);
                            crate::storage::pool::take_spare(&dir, &id, &l, size, &p)
                        })
                        .await
                        .map_err(|e| e.to_string())?;
                        if !taken {
                            let key = match v.encrypted {
                                true => Some(
                                    blobs
                                        .as_ref()
                                        .ok_or("no key source (the host is not connected)")?
                                        .volume_key(&v.volume_id)
                                        .await?,
                                ),
                                false => None,
                            };
                            let (p, l) = (part.clone(), lower.clone());
                            tokio::task::spawn_blocking(move || {
                                crate::storage::qcow2::create_layer(&p, &l, size, key.as_deref())
                            })
                            .await
                            .map_err(|e| e.to_string())??;
                        }
                        let file = part.display().to_string();
                        for n in blockdev::layer_nodes(&node, &file, None, v.encrypted, direct) {
                            let name = n["node-name"].as_str().unwrap_or_default().to_string();
                            qmp.execute_within("blockdev-add", n, PLUG_TIMEOUT)
                                .await
                                .map_err(|e| qmp_err(&format!("adding node {name}"), e))?;
                        }
                        let top = blockdev::layer_names(&node, &lower).0;
                        fail_point("snapshot:before_switch")?;
                        // Asked for: the guest's filesystems frozen around it, if its agent
                        // answers in time; what happened is written beside the layer.
                        let (mut agent, mut freeze) = (None, None);
                        if layer.fs_freeze {
                            let (outcome, a) = freeze_guest(&g.paths.agent_socket, layer).await;
                            (agent, freeze) = (a, Some(outcome));
                            if agent.is_some() {
                                crash_point("snapshot:frozen");
                            }
                        }
                        let taken = qmp
                            .execute_within("blockdev-snapshot", json!({ "node": top, "overlay": fmt }), PLUG_TIMEOUT)
                            .await
                            .map_err(|e| qmp_err("blockdev-snapshot", e));
                        if let Some(mut a) = agent
                            && let Err(e) = a.thaw(&g.paths.agent_socket).await
                        {
                            // Tried again at the guest's next step (`thaw_left`).
                            tracing::warn!(instance = %g.id, "guest agent: thawing after a snapshot: {e}");
                        }
                        taken?;
                        // (Taken: a record that cannot be written leaves the snapshot
                        // crash-consistent, "no freeze reported", rather than failed.)
                        if let Some(f) = freeze
                            && let Err(e) = serde_json::to_vec(&f).map_err(|e| e.to_string()).and_then(|b| {
                                std::fs::write(pool.join(format!("{name}.freeze")), b).map_err(|e| e.to_string())
                            })
                        {
                            tracing::warn!(instance = %g.id, "recording a snapshot's freeze: {e}");
                        }
                        crash_point("snapshot:before_rename");
                    }
                }
                if part.exists() {
                    std::fs::rename(&part, &path)
                        .and_then(|()| std::fs::File::open(&pool)?.sync_all())
                        .map_err(|e| format!("{}: {e}", path.display()))?;
                }
                Ok::<(), String>(())
            };
            if let Err(e) = step.await {
                drop_unswitched(qmp, &node, &name, &part).await;
                let _ = std::fs::write(pool.join(format!("{name}.failed")), &e);
                return Err(format!("snapshot {} of volume {}: {e}", layer.snapshot_id, v.volume_id));
            }
            tracing::info!(instance = %g.id, slot = v.slot, volume = %v.volume_id, snapshot = %layer.snapshot_id,
                "qemu: snapshot taken live");
            has.push(layer.clone());
        }
        Ok(())
    }

    /// Merges a layer of the running guest's disk of `v` into the one below when the spec
    /// no longer lists it (its snapshot was deleted): `block-commit` (job `vc<N>`) of that
    /// layer into the one below; for the top layer (the latest snapshot), `job-complete`
    /// once QEMU says it is ready (the disk pivots to the layer below); for one below, the
    /// job ends by itself and the layer above is given the one below as backing (its
    /// header names that file). Then the layer's nodes are removed and its file renamed
    /// `.merged` for the pool pass to wipe. The job's state is read from QEMU, not from
    /// events, so an agent restarted mid-merge carries on where it is: a job running or
    /// ready is followed, a chain already one layer shorter only has the cleanup left.
    async fn merge_live(
        &self,
        qmp: &Qmp,
        g: &Guest,
        v: &InstanceVolumeSpec,
        has: &mut Vec<VolumeLayer>,
    ) -> Result<(), String> {
        if has.len() != v.layers.len() + 1 {
            return Ok(()); // nothing to merge (or snapshots to add: `snapshot_live`)
        }
        // The one layer the spec no longer lists.
        let Some(j) = (0..has.len()).find(|&j| {
            let mut rest = has.clone();
            rest.remove(j);
            rest == v.layers
        }) else {
            return Ok(());
        };
        let pool = self.cfg.volume_pool.clone().ok_or("this host has no volume pool")?;
        let (n, node, io) = (has.len(), format!("v{}", v.slot), format!("v{}-io", v.slot));
        let file_of = |k: usize| match k {
            0 => format!("{}.qcow2", v.volume_id),
            k => has[k - 1].file(&v.volume_id),
        };
        let (merged, below) = (file_of(j + 1), file_of(j));
        let ((top, top_file), lower) = (blockdev::layer_names(&node, &merged), blockdev::layer_names(&node, &below).0);
        let active = j + 1 == n;
        let job = format!("vc{}", v.slot);
        let deadline = tokio::time::Instant::now() + MERGE_TIMEOUT;
        // The throttle node's chain is one layer shorter once the merge is done.
        while nodes_depth(qmp).await?.get(&io).copied().unwrap_or(0) > n as u64 {
            if tokio::time::Instant::now() > deadline {
                return Err(format!("merging layer {top} did not finish in {} s", MERGE_TIMEOUT.as_secs()));
            }
            let jobs = qmp
                .execute_within("query-block-jobs", json!({}), QMP_TIMEOUT)
                .await
                .map_err(|e| qmp_err("listing block jobs", e))?;
            let ours = jobs.as_array().into_iter().flatten().find(|j| j["device"].as_str() == Some(job.as_str()));
            match ours {
                None => {
                    let mut args = json!({ "job-id": job, "device": io, "top-node": top, "base-node": lower,
                        "auto-dismiss": true });
                    if !active {
                        // The layer above names the one below in its header, as the pool does.
                        args["backing-file"] = json!(below);
                    }
                    qmp.execute_within("block-commit", args, PLUG_TIMEOUT)
                        .await
                        .map_err(|e| qmp_err(&format!("block-commit of {top}"), e))?;
                    crash_point("merge:after_commit");
                }
                Some(j) if j["ready"].as_bool() == Some(true) => {
                    qmp.execute_within("job-complete", json!({ "id": job }), QMP_TIMEOUT)
                        .await
                        .map_err(|e| qmp_err(&format!("completing the merge of {top}"), e))?;
                }
                Some(_) => tokio::time::sleep(Duration::from_millis(20)).await,
            }
        }
        for n in [&top, &top_file] {
            match qmp.execute_within("blockdev-del", json!({ "node-name": n }), PLUG_TIMEOUT).await {
                Ok(_) => {}
                Err(QmpError::Command { desc, .. }) if desc.contains("Failed to find node") => {}
                Err(e) => return Err(qmp_err(&format!("removing the merged node {n}"), e)),
            }
        }
        let layer = has.remove(j);
        let file = pool.join(&merged);
        if file.exists() {
            std::fs::rename(&file, file.with_extension("qcow2.merged"))
                .map_err(|e| format!("{}: {e}", file.display()))?;
        }
        tracing::info!(instance = %g.id, slot = v.slot, volume = %v.volume_id, snapshot = %layer.snapshot_id, active,
            "qemu: a deleted snapshot's layer merged live");
        Ok(())
    }

    /// The files of volume `v`'s chain in the pool, bottom first.
    fn volume_files(&self, v: &InstanceVolumeSpec) -> Result<Vec<String>, String> {
        let pool = self.cfg.volume_pool.as_ref().ok_or("this host has no volume pool")?;
        let mut out = vec![pool.join(format!("{}.qcow2", v.volume_id)).display().to_string()];
        out.extend(v.layers.iter().map(|l| pool.join(l.file(&v.volume_id)).display().to_string()));
        Ok(out)
    }

    /// The guest released slot `n`'s disk after its step stopped waiting
    /// (`DEVICE_DELETED` seen by the watcher): its nodes and secret go, and the runner
    /// hears what the guest has now.
    pub(super) async fn released(&self, g: &Guest, n: u8) {
        let mut st = g.state.lock().await;
        if !lock(&g.unplugging).remove(&n) {
            return; // the step that asked saw it itself
        }
        let Some(live) = st.live.as_ref() else { return };
        let qmp = live.qmp.clone();
        if let Err(e) = release(&qmp, n).await {
            tracing::warn!(instance = %g.id, slot = n, "qemu: {e}");
        }
        if let Some(r) = st.record.as_mut() {
            r.spec.volumes.retain(|v| v.slot != n);
            if let Err(e) = guest::save(&g.paths.record, r).await {
                tracing::warn!(instance = %g.id, "qemu: {e}");
            }
        }
        let plugs: Vec<ObservedPlug> = {
            let mut d = lock(&g.disks);
            d.remove(&n);
            d.values().cloned().collect()
        };
        tracing::info!(instance = %g.id, slot = n, "qemu: the guest released the disk");
        let _ = self.events.send(GuestEvent { instance_id: g.id.clone(), happened: Happened::Plugs(plugs) });
    }
}

/// The slot of a `DEVICE_DELETED` event's device, when it is a volume disk.
pub(super) fn deleted_slot(data: &Value) -> Option<u8> {
    data["device"].as_str()?.strip_prefix("vdisk")?.parse().ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_volume_disks_have_a_slot() {
        assert_eq!(deleted_slot(&json!({ "device": "vdisk3", "path": "/machine/peripheral/vdisk3" })), Some(3));
        assert_eq!(deleted_slot(&json!({ "path": "/machine/peripheral/vdisk3/virtio-backend" })), None);
        assert_eq!(deleted_slot(&json!({ "device": "net0" })), None);
    }
}
