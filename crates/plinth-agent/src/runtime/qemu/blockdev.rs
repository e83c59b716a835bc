//! A volume disk's QEMU objects, block nodes and device, described once and used both on a
//! boot's command line (`-object`, `-blockdev`, `-device` in their JSON form) and in a
//! hot-plug (`object-add`, `blockdev-add`, `device_add` with the same dictionaries), so a
//! disk plugged live and the same disk given at the next boot are one graph:
//!
//! ```text
//! secret vsec<N> (the key: a pipe's fd at boot, the data over QMP live)
//! v<N>-file  file node: <pool>/<volume>.qcow2, cache.direct per the host, aio threads, discard unmap
//! v<N>       qcow2 node (LUKS inside, encrypt.key-secret vsec<N>)
//! vtg<N>     throttle group (the type's limits)     v<N>-io  throttle node over v<N>
//! vdisk<N>   virtio-blk-pci on root port hp<N> (q35) | virtio-blk-device (microvm), serial
//! ```
//!
//! Owns the names and shapes only; carrying them out is `cmdline.rs` and `hotplug.rs`.

use super::cmdline::Machine;
use plinth_api::VolumeQos;
use serde_json::{Value, json};

/// Where a disk's key comes from.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Key<'a> {
    /// Not encrypted.
    None,
    /// Read by QEMU from this fd at start (a pipe the agent filled).
    Fd(i32),
    /// Given over QMP (a hot-plug).
    Data(&'a str),
}

/// One volume disk as QEMU takes it.
#[derive(Clone, Debug, PartialEq)]
pub struct DiskGraph {
    /// Objects, in the order they are added (the secret, the throttle group).
    pub objects: Vec<Value>,
    /// Block nodes, bottom up.
    pub nodes: Vec<Value>,
    /// The guest's device.
    pub device: Value,
}

/// The volume disk in slot `slot`: its qcow2 file `file`, opened with `key`, limited by
/// `qos`, seen by the guest with `serial`.
pub fn volume_disk(
    slot: u8,
    file: &str,
    key: Key<'_>,
    direct: bool,
    qos: &VolumeQos,
    machine: Machine,
    serial: &str,
) -> DiskGraph {
    let n = slot;
    let mut objects = Vec::new();
    match key {
        Key::None => {}
        Key::Fd(fd) => {
            objects.push(json!({ "qom-type": "secret", "id": format!("vsec{n}"), "file": format!("/dev/fd/{fd}") }))
        }
        Key::Data(k) => {
            objects.push(json!({ "qom-type": "secret", "id": format!("vsec{n}"), "data": k, "format": "raw" }))
        }
    }
    objects.push(json!({ "qom-type": "throttle-group", "id": format!("vtg{n}"), "limits": qos.qemu_limits() }));
    let mut fmt =
        json!({ "driver": "qcow2", "node-name": format!("v{n}"), "file": format!("v{n}-file"), "discard": "unmap" });
    if key != Key::None {
        fmt["encrypt"] = json!({ "format": "luks", "key-secret": format!("vsec{n}") });
    }
    let nodes = vec![
        json!({ "driver": "file", "node-name": format!("v{n}-file"), "filename": file,
            "cache": { "direct": direct, "no-flush": false }, "aio": "threads", "discard": "unmap" }),
        fmt,
        json!({ "driver": "throttle", "node-name": format!("v{n}-io"), "file": format!("v{n}"),
            "throttle-group": format!("vtg{n}") }),
    ];
    let device = match machine {
        Machine::Q35 => json!({ "driver": "virtio-blk-pci", "id": format!("vdisk{n}"), "drive": format!("v{n}-io"),
            "bus": format!("hp{n}"), "serial": serial }),
        Machine::Microvm => {
            json!({ "driver": "virtio-blk-device", "id": format!("vdisk{n}"), "drive": format!("v{n}-io"), "serial": serial })
        }
    };
    DiskGraph { objects, nodes, device }
}

/// The slot a block node or object of a volume disk belongs to (`v3-file`, `v3`, `v3-io` → 3).
pub fn slot_of_node(name: &str) -> Option<u8> {
    let rest = name.strip_prefix('v')?;
    let digits: String = rest.chars().take_while(char::is_ascii_digit).collect();
    let tail = &rest[digits.len()..];
    if digits.is_empty() || !matches!(tail, "" | "-file" | "-io") {
        return None;
    }
    digits.parse().ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_hot_plugged_disk_and_a_booted_one_are_the_same_graph_but_for_the_keys_source() {
        let qos = VolumeQos { bps_total: Some(1 << 20), ..Default::default() };
        let boot = volume_disk(2, "/pool/vol_a.qcow2", Key::Fd(7), true, &qos, Machine::Q35, "SER");
        let live = volume_disk(2, "/pool/vol_a.qcow2", Key::Data("k"), true, &qos, Machine::Q35, "SER");
        assert_eq!(boot.nodes, live.nodes);
        assert_eq!(boot.device, live.device);
        assert_eq!(boot.objects[1], live.objects[1]);
        assert_eq!(boot.objects[0]["file"], "/dev/fd/7");
        assert_eq!(live.objects[0]["data"], "k");
        assert_eq!(boot.nodes[1]["encrypt"]["key-secret"], "vsec2");
        assert_eq!(boot.device["drive"], "v2-io");
        let plain = volume_disk(0, "/pool/vol_b.qcow2", Key::None, false, &VolumeQos::default(), Machine::Microvm, "S");
        assert_eq!(plain.objects.len(), 1, "no secret for a plain volume");
        assert!(plain.nodes[1].get("encrypt").is_none());
        assert_eq!(plain.device["driver"], "virtio-blk-device");
    }

    #[test]
    fn node_names_tell_their_slot() {
        assert_eq!(slot_of_node("v3-file"), Some(3));
        assert_eq!(slot_of_node("v3"), Some(3));
        assert_eq!(slot_of_node("v12-io"), Some(12));
        assert_eq!(slot_of_node("vsec3"), None);
        assert_eq!(slot_of_node("disk0"), None);
        assert_eq!(slot_of_node("v3-other"), None);
    }
}
