//! A volume disk's QEMU objects, block nodes and device, described once and used both on a
//! boot's command line (`-object` and `-blockdev` in their JSON form, `-device` as
//! key=value: [`keyval`]) and in a hot-plug (`object-add`, `blockdev-add`, `device_add` with the same dictionaries), so a
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
//! A volume with snapshots is a chain of files, bottom first: `<volume>.qcow2` as above,
//! then one layer per snapshot, `v<N>-s<tag>-file` → `v<N>-s<tag>` (named for the layer,
//! not its place; backing: the node below), and the throttle node sits over the top one.
//! A snapshot taken live adds the next layer ([`layer_nodes`] with no backing, then
//! `blockdev-snapshot` of the top).
//!
//! A boot volume (the root disk) is the same graph under the names `root-file`, `root`,
//! `root-io`, `rootsec`, `roottg` and device `rootdisk` on `pcie.0` (it is not hot-plugged).
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

/// Where a volume's data is, as its backend's driver described it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Backing<'a> {
    /// A chain of qcow2 files on this host, bottom first (LUKS inside each when encrypted).
    File(&'a [String]),
    /// A Ceph RBD image, raw (LUKS on top when encrypted), through QEMU's `rbd` driver.
    Rbd { pool: &'a str, image: &'a str, user: &'a str, monitors: &'a [String] },
}

impl<'a> Backing<'a> {
    /// The backing of `connection` (`None`: the volume's files `local` in the pool).
    pub fn of(connection: Option<&'a plinth_api::VolumeConnection>, local: &'a [String]) -> Backing<'a> {
        match connection {
            Some(plinth_api::VolumeConnection::Rbd { pool, image, user, monitors }) => {
                Backing::Rbd { pool, image, user, monitors }
            }
            Some(plinth_api::VolumeConnection::LocalQcow2 { .. }) | None => Backing::File(local),
        }
    }
}

/// Where a volume disk sits in the guest.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Place {
    /// A data disk in slot `N` (PCIe root port `hp<N>` on q35).
    Slot(u8),
    /// The root disk; `boot_index`: the firmware boots from it (a disk image).
    Root { boot_index: bool },
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

/// The volume disk at `place`: its data at `backing`, opened with `key`, limited by
/// `qos`, seen by the guest with `serial`.
pub fn volume_disk(
    place: Place,
    backing: Backing<'_>,
    key: Key<'_>,
    direct: bool,
    qos: &VolumeQos,
    machine: Machine,
    serial: &str,
) -> DiskGraph {
    let (node, secret, group, id) = match place {
        Place::Slot(n) => (format!("v{n}"), format!("vsec{n}"), format!("vtg{n}"), format!("vdisk{n}")),
        Place::Root { .. } => ("root".to_string(), "rootsec".to_string(), "roottg".to_string(), "rootdisk".to_string()),
    };
    let (file_node, io_node) = (format!("{node}-file"), format!("{node}-io"));
    let mut objects = Vec::new();
    match key {
        Key::None => {}
        Key::Fd(fd) => objects.push(json!({ "qom-type": "secret", "id": secret, "file": format!("/dev/fd/{fd}") })),
        Key::Data(k) => objects.push(json!({ "qom-type": "secret", "id": secret, "data": k, "format": "raw" })),
    }
    objects.push(json!({ "qom-type": "throttle-group", "id": group, "limits": qos.qemu_limits() }));
    let mut nodes = Vec::new();
    let top = match backing {
        Backing::File(files) => {
            for (k, file) in files.iter().enumerate() {
                let lower = (k > 0).then(|| layer_names(&node, &files[k - 1]).0);
                nodes.extend(layer_nodes(&node, file, lower.as_deref(), key != Key::None, direct));
            }
            files.last().map_or_else(|| node.clone(), |f| layer_names(&node, f).0)
        }
        Backing::Rbd { pool, image, user, monitors } => {
            let mut data = json!({ "driver": "rbd", "node-name": file_node, "pool": pool, "image": image,
                "user": user, "discard": "unmap" });
            let servers: Vec<_> = monitors
                .iter()
                .filter_map(|m| m.rsplit_once(':'))
                .map(|(host, port)| json!({ "host": host, "port": port }))
                .collect();
            if !servers.is_empty() {
                data["server"] = json!(servers);
            }
            let fmt = match key {
                Key::None => json!({ "driver": "raw", "node-name": node, "file": file_node, "discard": "unmap" }),
                _ => json!({ "driver": "luks", "node-name": node, "file": file_node, "key-secret": secret,
                    "discard": "unmap" }),
            };
            nodes.extend([data, fmt]);
            node.clone()
        }
    };
    nodes.push(json!({ "driver": "throttle", "node-name": io_node, "file": top, "throttle-group": group }));
    let driver = if machine == Machine::Q35 { "virtio-blk-pci" } else { "virtio-blk-device" };
    let mut device = json!({ "driver": driver, "id": id, "drive": io_node, "serial": serial });
    match place {
        Place::Slot(n) if machine == Machine::Q35 => device["bus"] = json!(format!("hp{n}")),
        Place::Root { boot_index: true } if machine == Machine::Q35 => device["bootindex"] = json!(0),
        _ => {}
    }
    DiskGraph { objects, nodes, device }
}

/// A graph's nodes (each naming the ones below it by `file` or `backing`, defined before
/// it) as one nested definition rooted at the last: one `blockdev-add` makes them all, each
/// keeping its name, so a hot-plug costs one monitor command instead of one per node.
/// `None` when the nodes are not one tree (a node nothing above names).
pub fn nested(nodes: &[Value]) -> Option<Value> {
    let mut defined: Vec<(String, Value)> = Vec::new();
    for n in nodes {
        let mut n = n.clone();
        for key in ["file", "backing"] {
            let Some(name) = n.get(key).and_then(Value::as_str).map(str::to_string) else { continue };
            if let Some(i) = defined.iter().position(|(d, _)| *d == name) {
                n[key] = defined.remove(i).1;
            }
        }
        defined.push((n["node-name"].as_str()?.to_string(), n));
    }
    match defined.len() {
        1 => defined.pop().map(|(_, root)| root),
        _ => None,
    }
}

/// A device dictionary in `-device`'s key=value form (`driver,key=value,…`). The command
/// line gives devices in this form, not JSON: QEMU 7.2 creates every key=value `-device`
/// before any JSON one, so a JSON root disk would come after the seed disk and not be
/// the guest's `/dev/vda`.
pub fn keyval(device: &Value) -> String {
    let mut out = device["driver"].as_str().unwrap_or_default().to_string();
    for (k, v) in device.as_object().into_iter().flatten().filter(|(k, _)| *k != "driver") {
        let v = match v {
            Value::String(s) => s.clone(),
            other => other.to_string(),
        };
        out.push_str(&format!(",{k}={v}"));
    }
    out
}

/// The slot a block node or object of a volume disk belongs to (`v3-file`, `v3`, `v3-io` → 3).
pub fn slot_of_node(name: &str) -> Option<u8> {
    let rest = name.strip_prefix('v')?;
    let digits: String = rest.chars().take_while(char::is_ascii_digit).collect();
    let tail = &rest[digits.len()..];
    let layer = tail.strip_prefix("-s").map(|t| t.strip_suffix("-file").unwrap_or(t));
    let is_layer = layer.is_some_and(|k| !k.is_empty() && k.chars().all(|c| c.is_ascii_alphanumeric()));
    if digits.is_empty() || !(matches!(tail, "" | "-file" | "-io") || is_layer) {
        return None;
    }
    digits.parse().ok()
}

/// A snapshot layer's tag from its file (`<volume>+<snapshot>.<revision>.qcow2`, a path
/// or a `.part` too): the snapshot id's last 8 characters and the revision, so a layer's
/// nodes keep their names whatever is merged below or above it. `None`: the bottom file.
fn layer_tag(file: &str) -> Option<String> {
    let name = file.rsplit('/').next()?.trim_end_matches(".part").trim_end_matches(".qcow2");
    let (_, layer) = name.split_once('+')?;
    let (snap, rev) = layer.rsplit_once('.')?;
    Some(format!("{}r{rev}", &snap[snap.len().saturating_sub(8)..]))
}

/// The format and file node names of the layer in `file` (the bottom file: `node` and
/// `node-file`; a snapshot's layer: `node-s<tag>`) of the disk whose format node is `node`
/// (`v<N>` or `root`).
pub fn layer_names(node: &str, file: &str) -> (String, String) {
    match layer_tag(file) {
        None => (node.to_string(), format!("{node}-file")),
        Some(t) => (format!("{node}-s{t}"), format!("{node}-s{t}-file")),
    }
}

/// The file and qcow2 nodes of the layer in `file` of the disk whose format node is
/// `node`, over the node `lower` (`None` for the bottom; for a layer added live, no
/// backing until `blockdev-snapshot` gives it one), opened with the disk's secret when
/// `encrypted`.
pub fn layer_nodes(node: &str, file: &str, lower: Option<&str>, encrypted: bool, direct: bool) -> [Value; 2] {
    let (fmt_name, file_name) = layer_names(node, file);
    let secret = if node == "root" { "rootsec".to_string() } else { format!("vsec{}", &node[1..]) };
    let data = json!({ "driver": "file", "node-name": file_name, "filename": file,
        "cache": { "direct": direct, "no-flush": false }, "aio": "threads", "discard": "unmap" });
    let mut fmt = json!({ "driver": "qcow2", "node-name": fmt_name, "file": file_name, "discard": "unmap" });
    if encrypted {
        fmt["encrypt"] = json!({ "format": "luks", "key-secret": secret });
    }
    match lower {
        Some(l) => fmt["backing"] = json!(l),
        None if layer_tag(file).is_some() => fmt["backing"] = Value::Null,
        None => {}
    }
    [data, fmt]
}

#[cfg(test)]
mod tests {
    use super::*;

    /// An encrypted q35 volume disk in `slot` over the chain `files`, with no limits.
    fn chain(slot: u8, files: &[String]) -> DiskGraph {
        volume_disk(
            Place::Slot(slot),
            Backing::File(files),
            Key::Data("k"),
            true,
            &VolumeQos::default(),
            Machine::Q35,
            "S",
        )
    }

    #[test]
    fn a_graphs_nodes_nest_into_one_definition_that_keeps_every_name() {
        let files = ["/p/vol_a.qcow2".to_string(), "/p/vol_a.snap-1.qcow2".to_string()];
        let g = chain(1, &files);
        let root = nested(&g.nodes).expect("one tree");
        assert_eq!(root["node-name"], "v1-io");
        let top = &root["file"];
        assert_eq!((top["driver"].as_str(), top["file"]["driver"].as_str()), (Some("qcow2"), Some("file")));
        assert_eq!(top["backing"]["driver"], "qcow2", "the lower layer under the top one: {root}");
        let mut names = Vec::new();
        fn walk(v: &Value, out: &mut Vec<String>) {
            if let Some(n) = v.get("node-name").and_then(Value::as_str) {
                out.push(n.to_string());
            }
            for k in ["file", "backing"] {
                if let Some(c) = v.get(k).filter(|c| c.is_object()) {
                    walk(c, out);
                }
            }
        }
        walk(&root, &mut names);
        let mut want: Vec<String> = g.nodes.iter().map(|n| n["node-name"].as_str().unwrap().to_string()).collect();
        names.sort();
        want.sort();
        assert_eq!(names, want, "every node, once");
        // Two roots are not one tree.
        assert!(nested(&g.nodes[..1].iter().chain(&g.nodes[..1]).cloned().collect::<Vec<_>>()).is_none());
    }

    #[test]
    fn a_hot_plugged_disk_and_a_booted_one_are_the_same_graph_but_for_the_keys_source() {
        let qos = VolumeQos { bps_total: Some(1 << 20), ..Default::default() };
        let (a, b) = (["/pool/vol_a.qcow2".to_string()], ["/p/b.qcow2".to_string()]);
        let slot = Place::Slot(2);
        let boot = volume_disk(slot, Backing::File(&a), Key::Fd(7), true, &qos, Machine::Q35, "SER");
        let live = volume_disk(slot, Backing::File(&a), Key::Data("k"), true, &qos, Machine::Q35, "SER");
        assert_eq!(boot.nodes, live.nodes);
        assert_eq!(boot.device, live.device);
        assert_eq!(boot.objects[1], live.objects[1]);
        assert_eq!(boot.objects[0]["file"], "/dev/fd/7");
        assert_eq!(live.objects[0]["data"], "k");
        assert_eq!(boot.nodes[1]["encrypt"]["key-secret"], "vsec2");
        assert_eq!((boot.device["drive"].as_str(), boot.device["bus"].as_str()), (Some("v2-io"), Some("hp2")));
        let plain = volume_disk(
            Place::Slot(0),
            Backing::File(&b),
            Key::None,
            false,
            &VolumeQos::default(),
            Machine::Microvm,
            "S",
        );
        assert_eq!(plain.objects.len(), 1, "no secret for a plain volume");
        assert!(plain.nodes[1].get("encrypt").is_none());
        assert_eq!(plain.device["driver"], "virtio-blk-device");
        assert!(plain.device.get("bus").is_none(), "microvm has no root ports");
    }

    #[test]
    fn a_boot_volume_is_the_root_disk_under_names_no_slot_scan_touches() {
        let root = Place::Root { boot_index: true };
        let r = ["/pool/vol_r.qcow2".to_string()];
        let g = volume_disk(root, Backing::File(&r), Key::Fd(4), true, &VolumeQos::default(), Machine::Q35, "R");
        assert_eq!(g.device["drive"], "root-io");
        assert_eq!(g.device["bootindex"], 0);
        assert!(g.device.get("bus").is_none(), "on pcie.0, not a hot-plug port");
        assert!(g.nodes.iter().all(|n| slot_of_node(n["node-name"].as_str().unwrap_or_default()).is_none()));
    }

    #[test]
    fn a_device_reads_as_key_values_with_its_driver_first() {
        let (b, r) = (["/p/a.qcow2".to_string()], ["/p/r.qcow2".to_string()]);
        let g =
            volume_disk(Place::Slot(3), Backing::File(&b), Key::None, true, &VolumeQos::default(), Machine::Q35, "SER");
        assert_eq!(keyval(&g.device), "virtio-blk-pci,bus=hp3,drive=v3-io,id=vdisk3,serial=SER");
        let root = volume_disk(
            Place::Root { boot_index: true },
            Backing::File(&r),
            Key::None,
            true,
            &VolumeQos::default(),
            Machine::Q35,
            "R",
        );
        assert_eq!(keyval(&root.device), "virtio-blk-pci,bootindex=0,drive=root-io,id=rootdisk,serial=R");
    }

    #[test]
    fn a_volume_with_snapshots_is_a_chain_under_one_throttle_node() {
        let files = ["/p/v.qcow2", "/p/v+snap_0123456789abcdefgh.0.qcow2", "/p/v+snap_zyxwvutsrqponm98.2.qcow2"]
            .map(String::from);
        let g = chain(4, &files);
        let names: Vec<&str> = g.nodes.iter().map(|n| n["node-name"].as_str().unwrap()).collect();
        let (a, b) = ("v4-sabcdefghr0", "v4-srqponm98r2");
        assert_eq!(names, ["v4-file", "v4", &format!("{a}-file"), a, &format!("{b}-file"), b, "v4-io"]);
        assert_eq!(g.nodes[3]["backing"], "v4");
        assert_eq!(g.nodes[5]["backing"], a, "named for its layer, not its place: a merge below keeps it");
        assert_eq!(g.nodes[5]["encrypt"]["key-secret"], "vsec4");
        assert!(g.nodes[1].get("backing").is_none(), "the bottom file has none");
        assert_eq!(g.nodes[6]["file"], b, "the throttle node is over the top layer");
        assert!(names.iter().all(|n| slot_of_node(n) == Some(4) && n.len() <= 31), "{names:?}");
        let [_, live] = layer_nodes("v4", "/p/v+snap_zyxwvutsrqponm98.3.qcow2.part", None, true, true);
        assert_eq!(live["node-name"], "v4-srqponm98r3");
        assert_eq!(live["backing"], Value::Null, "added live without a backing, for blockdev-snapshot");
        assert_eq!(slot_of_node("v4-s"), None);
    }

    #[test]
    fn an_rbd_volume_is_qemus_rbd_driver_under_luks_in_the_same_names() {
        let monitors = vec!["10.0.0.1:6789".to_string(), "10.0.0.2:6789".to_string()];
        let rbd = Backing::Rbd { pool: "volumes", image: "vol_a", user: "plinth", monitors: &monitors };
        let g = volume_disk(Place::Slot(1), rbd, Key::Data("k"), true, &VolumeQos::default(), Machine::Q35, "S");
        assert_eq!(g.nodes[0]["driver"], "rbd");
        assert_eq!(g.nodes[0]["node-name"], "v1-file");
        assert_eq!((g.nodes[0]["pool"].as_str(), g.nodes[0]["image"].as_str()), (Some("volumes"), Some("vol_a")));
        assert_eq!(g.nodes[0]["server"][1], json!({ "host": "10.0.0.2", "port": "6789" }));
        assert_eq!(
            g.nodes[1],
            json!({ "driver": "luks", "node-name": "v1", "file": "v1-file", "key-secret": "vsec1",
            "discard": "unmap" })
        );
        assert_eq!(g.nodes[2]["file"], "v1", "the throttle node and device are the same as a local disk's");
        let plain = volume_disk(Place::Slot(1), rbd, Key::None, true, &VolumeQos::default(), Machine::Q35, "S");
        assert_eq!(plain.nodes[1]["driver"], "raw");
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
