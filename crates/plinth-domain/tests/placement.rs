//! Placement: every constraint by name, NUMA fitting, weighing, and property tests over
//! random host sets and request sequences (no overcommit, no CPU or GPU given twice, `fit`
//! agrees with `place`, refusal counts add up, `count_fits` is exact, anti-affinity holds).

use plinth_api::{
    Claim, CpuInfo, CpuPolicy, Disk, FailureDomain, Gpu, GpuRequest, GroupPolicy, Host, HostId, HostInventory,
    HostScheduling, HostState, HugepageClaim, HugepagePool, Hugepages, Kvm, NumaNode, Ownership, RackId, RuntimeClass,
    TenantId, Virtualization,
};
use plinth_domain::placement::{
    CONSTRAINTS, GroupRule, HostView, Member, NoValidHost, Policy, Request, Weigh, count_fits, fit, fit_with, place,
};
use proptest::prelude::*;
use std::collections::{BTreeMap, BTreeSet};

// ---------------------------------------------------------------------------------------------
// Builders

/// A wire host: 1 socket, 16 threads, 64 GiB, one 500 GiB disk, KVM usable, no NUMA nodes.
/// Built through serde so fields the API gains later (with defaults) do not break the tests.
fn wire(id: &str) -> Host {
    let json = serde_json::json!({
        "id": id,
        "name": id,
        "state": "available",
        "health": "ok",
        "ownership": { "kind": "shared" },
        "labels": {},
        "traits": [],
        "inventory": {},
        "generation": 1,
        "created_at": "2025-01-01T00:00:00Z",
        "updated_at": "2025-01-01T00:00:00Z",
    });
    let mut h: Host = serde_json::from_value(json).expect("a valid host");
    h.inventory = HostInventory {
        cpu: CpuInfo { sockets: 1, cores: 8, threads: 16, ..CpuInfo::default() },
        memory_mib: 65536,
        disks: vec![Disk { name: "sda".into(), size_bytes: 500 << 30, ..Disk::default() }],
        virtualization: Virtualization { kvm: Kvm::Usable },
        ..HostInventory::default()
    };
    h.scheduling = HostScheduling::default();
    h
}

fn node(id: u32, cpus: Vec<u32>, siblings: Vec<Vec<u32>>, pools: &[(u64, u64)]) -> NumaNode {
    NumaNode {
        id,
        cpus,
        memory_mib: 32768,
        hugepages: pools.iter().map(|&(size_kib, total)| HugepagePool { size_kib, total, free: total }).collect(),
        siblings,
    }
}

fn gpu(address: &str, class: &str, numa_node: Option<u32>) -> Gpu {
    Gpu {
        pci_address: address.into(),
        class: class.into(),
        vendor_id: "10de".into(),
        device_id: "2330".into(),
        numa_node,
        ..Gpu::default()
    }
}

/// Two NUMA nodes, each with 8 dedicated CPUs (0–7, 8–15) whose sibling pairs are (c, c+4),
/// 8 shared CPUs (16–23, 24–31: 64 shared vCPUs in all), 1024 × 2 MiB and 4 × 1 GiB pages.
fn numa_wire(id: &str) -> Host {
    let mut h = wire(id);
    let sib = |base: u32| (0..4).map(|i| vec![base + i, base + i + 4]).collect();
    let pools = [(2048, 1024), (1048576, 4)];
    h.inventory.numa_nodes = vec![
        node(0, (0..8).chain(16..24).collect(), sib(0), &pools),
        node(1, (8..16).chain(24..32).collect(), sib(8), &pools),
    ];
    h.scheduling.dedicated_cpus = (0..16).collect();
    h
}

fn view(h: &Host) -> HostView {
    HostView::from_host(h)
}

fn req(vcpus: u32, memory_mib: u64, disk_gib: u64) -> Request {
    Request {
        vcpus,
        memory_mib,
        disk_gib,
        cpu_policy: CpuPolicy::Shared,
        hugepages: Hugepages::None,
        gpu: None,
        runtime: RuntimeClass::Vm,
        tenant_id: "tnt_a".into(),
        require_dedicated_host: false,
        required_traits: Vec::new(),
        forbidden_traits: Vec::new(),
        group: None,
        avoid_hosts: BTreeSet::new(),
        volume_host: None,
    }
}

fn dedicated(vcpus: u32, memory_mib: u64) -> Request {
    Request { cpu_policy: CpuPolicy::Dedicated, ..req(vcpus, memory_mib, 0) }
}

fn with_gpu(mut r: Request, class: &str, count: u32) -> Request {
    r.gpu = Some(GpuRequest { class: class.into(), count });
    r
}

fn group(policy: GroupPolicy, scope: FailureDomain, members: &[(&str, Option<&str>)]) -> Option<GroupRule> {
    Some(GroupRule {
        policy,
        scope,
        members: members
            .iter()
            .map(|(h, r)| Member { host_id: h.to_string(), rack_id: r.map(str::to_string) })
            .collect(),
    })
}

fn pack() -> Policy {
    Policy::default()
}

fn spread() -> Policy {
    Policy { weigh: Weigh::Spread, ..Policy::default() }
}

fn chosen_id(r: &Request, hosts: &[HostView], p: &Policy) -> String {
    match place(r, hosts, p) {
        Ok((i, _)) => hosts[i].id.clone(),
        Err(e) => panic!("expected a placement, got {e}"),
    }
}

// ---------------------------------------------------------------------------------------------
// HostView construction and accounting

#[test]
fn from_host_applies_ratios_reservations_and_hugepages() {
    let mut h = numa_wire("h1");
    h.rack_id = Some(RackId("rck_1".into()));
    h.scheduling.dedicated_cpus = vec![4, 5, 6, 7, 12, 13, 99];
    h.scheduling.cpu_allocation_ratio = 2.5;
    h.scheduling.memory_allocation_ratio = 1.5;
    h.scheduling.reserved_memory_mib = 4096;
    h.scheduling.reserved_disk_gib = 20;
    h.inventory.disks.push(Disk { name: "sdb".into(), size_bytes: (100 << 30) + 12345, ..Disk::default() });
    h.inventory.gpus = vec![gpu("0000:3b:00.0", "ga", Some(1)), gpu("0000:1a:00.0", "ga", None)];
    h.ownership = Ownership::Dedicated { tenant_id: TenantId("tnt_x".into()) };
    h.traits = vec!["CUSTOM_A".into()];
    let v = view(&h);
    assert_eq!(v.id, "h1");
    assert_eq!(v.rack_id.as_deref(), Some("rck_1"));
    assert_eq!(v.dedicated_tenant.as_deref(), Some("tnt_x"));
    assert!(v.traits.contains("CUSTOM_A") && v.kvm_usable);
    // 32 CPUs, 6 of them dedicated (99 is not a host CPU): 26 × 2.5.
    assert_eq!(v.shared_vcpus, 65);
    // hugepages: 2 nodes × (1024 × 2 MiB + 4 × 1024 MiB) = 12288 MiB held.
    assert_eq!(v.memory_mib, ((65536u64 - 4096 - 12288) as f64 * 1.5) as u64);
    assert_eq!(v.disk_gib, 500 + 100 - 20);
    assert_eq!(v.numa.len(), 2);
    assert_eq!(v.numa[0].dedicated_cpus, vec![4, 5, 6, 7]);
    assert_eq!(v.numa[1].dedicated_cpus, vec![12, 13]);
    // Sibling groups restricted to dedicated CPUs: (0,4) -> [4], (1,5) -> [5], …; (8,12) -> [12].
    assert_eq!(v.numa[0].siblings, vec![vec![4], vec![5], vec![6], vec![7]]);
    assert_eq!(v.numa[1].siblings, vec![vec![12], vec![13]]);
    assert_eq!(v.numa[0].hugepages, BTreeMap::from([(2, 1024), (1024, 4)]));
    assert_eq!(v.numa[0].gpus.iter().map(|g| g.address.as_str()).collect::<Vec<_>>(), ["0000:1a:00.0"]);
    assert_eq!(v.numa[1].gpus.iter().map(|g| g.address.as_str()).collect::<Vec<_>>(), ["0000:3b:00.0"]);
    assert_eq!(v.used, Default::default());
}

#[test]
fn from_host_without_numa_is_one_node_with_everything() {
    let mut h = wire("h1");
    h.scheduling.dedicated_cpus = vec![14, 15];
    h.inventory.gpus = vec![gpu("0000:3b:00.0", "ga", Some(3))];
    h.inventory.virtualization.kvm = Kvm::Absent;
    let v = view(&h);
    assert_eq!(v.numa.len(), 1);
    assert_eq!(v.numa[0].id, 0);
    assert_eq!(v.numa[0].dedicated_cpus, vec![14, 15]);
    assert_eq!(v.numa[0].gpus.len(), 1);
    assert_eq!(v.shared_vcpus, 14 * 4);
    assert_eq!(v.memory_mib, 65536);
    assert!(!v.kvm_usable);

    // Threads-per-core style counts (fewer threads than cores) multiply out.
    let mut h = wire("h2");
    h.inventory.cpu = CpuInfo { sockets: 2, cores: 8, threads: 2, ..CpuInfo::default() };
    h.scheduling.cpu_allocation_ratio = 1.0;
    assert_eq!(view(&h).shared_vcpus, 32);
}

#[test]
fn add_then_remove_restores_usage() {
    let mut v = view(&numa_wire("h1"));
    let r = with_gpu(Request { hugepages: Hugepages::TwoMiB, ..dedicated(2, 1000) }, "ga", 0);
    let claim = fit(&r, &v).expect("fits");
    assert_eq!(claim.hugepages, vec![HugepageClaim { numa_node: 0, size_mib: 2, pages: 500 }]);
    let before = v.used.clone();
    v.add(&claim);
    assert_eq!(v.used.pinned_cpus.len(), 2);
    assert_eq!(v.used.hugepages.get(&(0, 2)), Some(&500));
    assert_eq!(v.used.instances, 1);
    assert_eq!(v.used.shared_vcpus, 0, "dedicated vCPUs are not shared vCPUs");
    v.remove(&claim);
    assert_eq!(v.used, before);
    v.remove(&claim);
    assert_eq!(v.used, before, "remove saturates");
}

// ---------------------------------------------------------------------------------------------
// Each constraint, by name

/// A host and a request that `fit` refuses for exactly `name`.
fn refused_by(name: &str) -> (HostView, Request) {
    let mut h = numa_wire("h1");
    h.inventory.gpus = vec![gpu("0000:3b:00.0", "ga", Some(1))];
    h.traits = vec!["FAST".into()];
    let mut r = req(2, 1024, 10);
    match name {
        "avoided" => {
            r.avoid_hosts.insert("h1".into());
        }
        "volume_host" => r.volume_host = Some("h2".into()),
        "host_state" => h.state = HostState::Cordoned,
        "runtime" => r.runtime = RuntimeClass::Baremetal,
        "dedicated_host" => h.ownership = Ownership::Dedicated { tenant_id: TenantId("tnt_other".into()) },
        "traits" => r.forbidden_traits.push("FAST".into()),
        "gpu_class" => r = with_gpu(r, "gb", 1),
        "affinity" => r.group = group(GroupPolicy::Affinity, FailureDomain::Host, &[("h2", None)]),
        "anti_affinity" => r.group = group(GroupPolicy::AntiAffinity, FailureDomain::Host, &[("h1", None)]),
        "vcpu" => r.vcpus = 1000,
        "dedicated_cpus" => r = dedicated(17, 1024),
        "memory" => r.memory_mib = 1 << 20,
        "hugepages" => {
            r.hugepages = Hugepages::OneGiB;
            r.memory_mib = 9 * 1024;
        }
        "disk" => r.disk_gib = 5000,
        "gpus" => r = with_gpu(r, "ga", 2),
        "numa" => {
            // The only GPU is on node 1, whose dedicated CPUs are all pinned.
            r = with_gpu(dedicated(2, 1024), "ga", 1);
            let mut v = view(&h);
            v.used.pinned_cpus = (8..16).collect();
            return (v, r);
        }
        other => panic!("unknown constraint {other}"),
    }
    (view(&h), r)
}

#[test]
fn every_constraint_refuses_by_its_name() {
    for name in CONSTRAINTS {
        let (h, r) = refused_by(name);
        assert_eq!(fit(&r, &h).err(), Some(name), "constraint {name}");
        let err = place(&r, std::slice::from_ref(&h), &pack()).expect_err(name);
        assert_eq!(err.removed, BTreeMap::from([(name, 1)]), "constraint {name}");
        assert_eq!(err.hosts, 1);
        let capacity = ["vcpu", "dedicated_cpus", "memory", "hugepages", "disk", "gpus", "numa"].contains(&name);
        assert_eq!(err.capacity_only(), capacity, "constraint {name}");
        // The same host takes a plain request (the constraint, not the host, refused).
        if !matches!(name, "avoided" | "volume_host" | "host_state" | "dedicated_host" | "traits") {
            let mut h2 = h.clone();
            h2.used = Default::default();
            assert!(fit(&req(1, 512, 1), &h2).is_ok(), "{name}: host is otherwise usable");
        }
    }
}

#[test]
fn refusal_counts_each_host_once_at_its_first_constraint() {
    let mut hosts = Vec::new();
    // Cordoned and too small: counted as host_state only.
    let mut h = wire("h1");
    h.state = HostState::Maintenance;
    h.inventory.memory_mib = 10;
    hosts.push(view(&h));
    // Wrong tenant and missing trait: dedicated_host.
    let mut h = wire("h2");
    h.ownership = Ownership::Dedicated { tenant_id: TenantId("tnt_b".into()) };
    hosts.push(view(&h));
    // Missing trait only.
    hosts.push(view(&wire("h3")));
    // Too little memory and disk: memory.
    let mut h = wire("h4");
    h.traits = vec!["FAST".into()];
    h.inventory.memory_mib = 1024;
    h.inventory.disks.clear();
    hosts.push(view(&h));
    let mut h = wire("h5");
    h.traits = vec!["FAST".into()];
    h.inventory.disks.clear();
    hosts.push(view(&h));
    let mut r = req(4, 8192, 50);
    r.required_traits.push("FAST".into());
    let err = place(&r, &hosts, &pack()).unwrap_err();
    assert_eq!(
        err.removed,
        BTreeMap::from([("host_state", 1), ("dedicated_host", 1), ("traits", 1), ("memory", 1), ("disk", 1)])
    );
    assert_eq!(err.hosts, 5);
    assert!(!err.capacity_only());
    assert_eq!(err.removed.values().sum::<u32>(), 5);
    let none = place(&r, &[], &pack()).unwrap_err();
    assert_eq!(none, NoValidHost { removed: BTreeMap::new(), hosts: 0 });
    assert!(!none.capacity_only());
}

#[test]
fn runtime_and_tenancy_rules() {
    let mut no_kvm = wire("h1");
    no_kvm.inventory.virtualization.kvm = Kvm::Unusable { reason: "probe failed".into() };
    no_kvm.scheduling.dedicated_cpus = vec![0, 1];
    let v = view(&no_kvm);
    assert_eq!(fit(&dedicated(2, 512), &v).err(), Some("runtime"));
    let shared = fit(&req(2, 512, 0), &v).expect("shared shapes run under TCG");
    assert!(shared.tcg);
    no_kvm.scheduling.allow_dedicated_without_kvm = true;
    let claim = fit(&dedicated(2, 512), &view(&no_kvm)).expect("allowed without KVM");
    assert!(claim.tcg);
    assert_eq!(claim.cpus, vec![0, 1]);
    assert!(!fit(&req(1, 1, 0), &view(&wire("h2"))).expect("kvm host").tcg);

    let mut mine = wire("h3");
    mine.ownership = Ownership::Dedicated { tenant_id: TenantId("tnt_a".into()) };
    let mut r = req(1, 512, 0);
    assert!(fit(&r, &view(&mine)).is_ok(), "a host dedicated to the tenant takes it");
    r.require_dedicated_host = true;
    assert!(fit(&r, &view(&mine)).is_ok());
    assert_eq!(fit(&r, &view(&wire("h4"))).err(), Some("dedicated_host"));
}

#[test]
fn affinity_and_anti_affinity_by_host_and_rack() {
    let mut hosts = Vec::new();
    for (id, rack) in [("h1", Some("r1")), ("h2", Some("r1")), ("h3", Some("r2")), ("h4", None)] {
        let mut h = wire(id);
        h.rack_id = rack.map(|r| RackId(r.into()));
        hosts.push(view(&h));
    }
    let mut r = req(1, 512, 0);
    // Affinity with no members passes everywhere.
    r.group = group(GroupPolicy::Affinity, FailureDomain::Rack, &[]);
    assert!(hosts.iter().all(|h| fit(&r, h).is_ok()));
    // Rack affinity: only the members' rack.
    r.group = group(GroupPolicy::Affinity, FailureDomain::Rack, &[("h1", Some("r1"))]);
    let ok: Vec<_> = hosts.iter().filter(|h| fit(&r, h).is_ok()).map(|h| h.id.as_str()).collect();
    assert_eq!(ok, ["h1", "h2"]);
    // Rack anti-affinity: not r1; a host without a rack is its own rack.
    r.group = group(GroupPolicy::AntiAffinity, FailureDomain::Rack, &[("h2", Some("r1"))]);
    let err: Vec<_> = hosts.iter().map(|h| fit(&r, h).err()).collect();
    assert_eq!(err, [Some("anti_affinity"), Some("anti_affinity"), None, None]);
    r.group = group(GroupPolicy::AntiAffinity, FailureDomain::Rack, &[("h4", None), ("h3", Some("r2"))]);
    let err: Vec<_> = hosts.iter().map(|h| fit(&r, h).err()).collect();
    assert_eq!(err, [None, None, Some("anti_affinity"), Some("anti_affinity")]);
    // Host anti-affinity ignores racks.
    r.group = group(GroupPolicy::AntiAffinity, FailureDomain::Host, &[("h1", Some("r1"))]);
    let err: Vec<_> = hosts.iter().map(|h| fit(&r, h).err()).collect();
    assert_eq!(err, [Some("anti_affinity"), None, None, None]);
    // Host affinity with a member on a host without rack.
    r.group = group(GroupPolicy::Affinity, FailureDomain::Rack, &[("h4", None)]);
    let ok: Vec<_> = hosts.iter().filter(|h| fit(&r, h).is_ok()).map(|h| h.id.as_str()).collect();
    assert_eq!(ok, ["h4"]);
    let e = place(&r, &hosts[..3], &pack()).unwrap_err();
    assert_eq!(e.removed, BTreeMap::from([("affinity", 3)]));
}

// ---------------------------------------------------------------------------------------------
// NUMA fitting

#[test]
fn dedicated_cpus_keep_sibling_pairs_together() {
    let mut v = view(&numa_wire("h1"));
    let c = fit(&dedicated(2, 512), &v).unwrap();
    assert_eq!(c.cpus, vec![0, 4], "one whole core");
    assert_eq!(c.numa_nodes, vec![0]);
    assert_eq!(c.vcpus, 2);
    assert_eq!(c.cpu_policy, CpuPolicy::Dedicated);
    assert_eq!(c.memory_mib, 512);
    assert!(c.hugepages.is_empty() && c.gpus.is_empty());
    v.add(&c);
    // Pin CPU 1 alone: its sibling 5 becomes an orphan.
    v.used.pinned_cpus.insert(1);
    let c = fit(&dedicated(4, 512), &v).unwrap();
    assert_eq!(c.cpus, vec![2, 6, 3, 7], "whole free cores first, lowest first");
    v.add(&c);
    let c = fit(&dedicated(1, 512), &v).unwrap();
    assert_eq!(c.cpus, vec![5], "a lone vCPU takes the orphaned thread, not a whole core");
    v.add(&c);
    assert_eq!(v.used.pinned_cpus, (0..8).collect(), "node 0 is now full");
    let c = fit(&dedicated(3, 512), &v).unwrap();
    assert_eq!(c.cpus, vec![8, 12, 9], "odd counts: whole cores, then the lowest free thread");
    assert_eq!(c.numa_nodes, vec![1]);
}

#[test]
fn numa_prefers_one_node_pack_fullest_spread_emptiest() {
    let mut v = view(&numa_wire("h1"));
    v.used.pinned_cpus = [8, 12].into();
    let r = dedicated(2, 512);
    assert_eq!(fit_with(&r, &v, Weigh::Pack).unwrap().numa_nodes, vec![1], "fullest node that fits");
    assert_eq!(fit_with(&r, &v, Weigh::Spread).unwrap().numa_nodes, vec![0], "emptiest node");
    assert_eq!(fit(&r, &v).unwrap(), fit_with(&r, &v, Weigh::Pack).unwrap());
    // Node 1 has 6 free, node 0 has 8: 7 vCPUs fit only on node 0, under either weigher.
    let r = dedicated(7, 512);
    assert_eq!(fit_with(&r, &v, Weigh::Pack).unwrap().numa_nodes, vec![0]);
    assert_eq!(fit_with(&r, &v, Weigh::Spread).unwrap().numa_nodes, vec![0]);
    // Equal nodes: the lowest id.
    let v = view(&numa_wire("h1"));
    assert_eq!(fit_with(&r, &v, Weigh::Spread).unwrap().numa_nodes, vec![0]);
}

#[test]
fn numa_spans_when_no_single_node_holds_the_guest() {
    let mut v = view(&numa_wire("h1"));
    v.used.pinned_cpus = [0, 4, 8, 12].into();
    let c = fit(&dedicated(10, 512), &v).unwrap();
    assert_eq!(c.numa_nodes, vec![0, 1]);
    assert_eq!(c.cpus.len(), 10);
    let distinct: BTreeSet<u32> = c.cpus.iter().copied().collect();
    assert_eq!(distinct.len(), 10);
    assert!(distinct.is_disjoint(&v.used.pinned_cpus));
    // 1 GiB pages: 4 per node, 6 needed.
    let r = Request { hugepages: Hugepages::OneGiB, ..req(2, 6 * 1024, 0) };
    let c = fit(&r, &v).unwrap();
    assert_eq!(c.memory_mib, 0, "hugepage-backed memory is not ordinary memory");
    assert_eq!(c.numa_nodes, vec![0, 1]);
    assert_eq!(c.hugepages.iter().map(|h| h.pages).sum::<u64>(), 6);
    assert!(c.hugepages.iter().all(|h| h.size_mib == 1024 && h.pages <= 4));
    // 9 pages exceed the host total.
    let r = Request { hugepages: Hugepages::OneGiB, ..req(2, 9 * 1024, 0) };
    assert_eq!(fit(&r, &v).err(), Some("hugepages"));
    // ceil: 1025 MiB in 2 MiB pages is 513 pages.
    let r = Request { hugepages: Hugepages::TwoMiB, ..req(2, 1025, 0) };
    assert_eq!(fit(&r, &v).unwrap().hugepages, vec![HugepageClaim { numa_node: 0, size_mib: 2, pages: 513 }]);
}

#[test]
fn gpus_come_from_the_guests_node() {
    let mut h = numa_wire("h1");
    h.inventory.gpus = vec![
        gpu("0000:81:00.0", "ga", Some(1)),
        gpu("0000:82:00.0", "ga", Some(1)),
        gpu("0000:01:00.0", "gb", Some(0)),
    ];
    let mut v = view(&h);
    let r = with_gpu(dedicated(4, 512), "ga", 1);
    let c = fit(&r, &v).unwrap();
    assert_eq!(c.numa_nodes, vec![1], "the node with the GPU, though node 0 is lower");
    assert_eq!(c.gpus, vec!["0000:81:00.0".to_string()]);
    assert!(c.cpus.iter().all(|cpu| (8..16).contains(cpu)));
    v.add(&c);
    let c = fit(&r, &v).unwrap();
    assert_eq!(c.gpus, vec!["0000:82:00.0".to_string()]);
    v.add(&c);
    assert_eq!(fit(&r, &v).err(), Some("gpus"));
    // A shared shape with a GPU is confined to the GPU's node too.
    let c = fit(&with_gpu(req(2, 512, 0), "gb", 1), &v).unwrap();
    assert_eq!((c.numa_nodes, c.cpus, c.gpus), (vec![0], vec![], vec!["0000:01:00.0".to_string()]));
    // GPUs on two nodes, with CPUs on both: spans.
    let mut h = numa_wire("h2");
    h.inventory.gpus = vec![gpu("0000:81:00.0", "ga", Some(1)), gpu("0000:01:00.0", "ga", Some(0))];
    let c = fit(&with_gpu(dedicated(2, 512), "ga", 2), &view(&h)).unwrap();
    assert_eq!(c.numa_nodes, vec![0, 1]);
    assert_eq!(c.gpus.len(), 2);
    assert_eq!(c.cpus.len(), 2);
    assert!(c.cpus.iter().any(|c| *c < 8) && c.cpus.iter().any(|c| *c >= 8), "a vCPU on each GPU's node");
}

#[test]
fn many_numa_nodes_span_greedily_and_count_exactly() {
    let mut h = wire("h1");
    h.inventory.numa_nodes = (0..12).map(|n| node(n, vec![2 * n, 2 * n + 1], vec![], &[(2048, 64)])).collect();
    h.scheduling.dedicated_cpus = (0..24).collect();
    let mut v = view(&h);
    let c = fit(&dedicated(5, 512), &v).unwrap();
    assert_eq!(c.numa_nodes, vec![0, 1, 2]);
    assert_eq!(c.cpus, vec![0, 1, 2, 3, 4]);
    let r = Request { hugepages: Hugepages::TwoMiB, ..dedicated(2, 300) };
    assert_eq!(count_fits(&r, &v), naive_count(&r, &v));
    v.add(&c);
    for r in [dedicated(5, 512), dedicated(1, 64), r] {
        assert_eq!(count_fits(&r, &v), naive_count(&r, &v));
    }
    assert_eq!(count_fits(&dedicated(5, 512), &v), 3);
}

// ---------------------------------------------------------------------------------------------
// Weighing

#[test]
fn pack_and_spread_choose_different_hosts() {
    let mut hosts: Vec<HostView> = ["h1", "h2", "h3"].iter().map(|id| view(&wire(id))).collect();
    hosts[0].used.shared_vcpus = 20;
    hosts[0].used.memory_mib = 32768;
    hosts[2].used.shared_vcpus = 50;
    hosts[2].used.memory_mib = 60000;
    let r = req(4, 4096, 10);
    assert_eq!(chosen_id(&r, &hosts, &pack()), "h3", "fullest");
    assert_eq!(chosen_id(&r, &hosts, &spread()), "h2", "emptiest");
    // When the fullest cannot take it, pack falls back to the next fullest.
    let big = req(16, 8192, 10);
    assert_eq!(chosen_id(&big, &hosts, &pack()), "h1");
    let (i, claim) = place(&big, &hosts, &pack()).unwrap();
    assert_eq!(Ok(claim), fit(&big, &hosts[i]));
}

#[test]
fn hugepage_and_dedicated_shapes_weigh_their_own_resources() {
    let mut hosts: Vec<HostView> = ["h1", "h2"].iter().map(|id| view(&numa_wire(id))).collect();
    // h1 has fewer free pinned CPUs: dedicated shapes pack onto it, shared ones do not care.
    hosts[0].used.pinned_cpus = (0..6).collect();
    assert_eq!(chosen_id(&dedicated(2, 1024), &hosts, &pack()), "h1");
    assert_eq!(chosen_id(&dedicated(2, 1024), &hosts, &spread()), "h2");
    assert_eq!(chosen_id(&req(2, 1024, 0), &hosts, &spread()), "h1", "a tie, broken by id");
    // h2 has less ordinary memory free: shared shapes pack onto it.
    hosts[1].used.memory_mib = 40000;
    assert_eq!(chosen_id(&req(2, 1024, 0), &hosts, &pack()), "h2");
    assert_eq!(chosen_id(&req(2, 1024, 0), &hosts, &spread()), "h1");
    let mut hosts: Vec<HostView> = ["h1", "h2"].iter().map(|id| view(&numa_wire(id))).collect();
    hosts[1].used.hugepages.insert((0, 2), 1000);
    let r = Request { hugepages: Hugepages::TwoMiB, ..req(1, 512, 0) };
    assert_eq!(chosen_id(&r, &hosts, &pack()), "h2");
    assert_eq!(chosen_id(&r, &hosts, &spread()), "h1");
}

#[test]
fn numa_locality_beats_capacity_fit() {
    let mut hosts: Vec<HostView> = ["h1", "h2"].iter().map(|id| view(&numa_wire(id))).collect();
    // h1 is fuller but must split 6 vCPUs over two nodes; h2 holds them on one node.
    hosts[0].used.pinned_cpus = [0, 1, 2, 8, 9, 10].into();
    hosts[1].used.pinned_cpus = [0, 1].into();
    let r = dedicated(6, 512);
    assert_eq!(fit(&r, &hosts[0]).unwrap().numa_nodes, vec![0, 1]);
    assert_eq!(chosen_id(&r, &hosts, &pack()), "h2");
}

#[test]
fn ties_break_by_host_id_and_placement_is_deterministic() {
    let hosts: Vec<HostView> = ["h3", "h1", "h2"].iter().map(|id| view(&wire(id))).collect();
    let r = req(2, 1024, 0);
    assert_eq!(place(&r, &hosts, &pack()).unwrap().0, 1);
    assert_eq!(place(&r, &hosts, &spread()).unwrap().0, 1);
    for _ in 0..3 {
        assert_eq!(place(&r, &hosts, &pack()), place(&r, &hosts, &pack()));
    }
}

#[test]
fn randomize_top_draws_only_among_the_best_n_and_repeats_per_seed() {
    let mut hosts: Vec<HostView> = (0..10).map(|i| view(&wire(&format!("h{i}")))).collect();
    for (i, h) in hosts.iter_mut().enumerate() {
        h.used.shared_vcpus = i as u64; // pack prefers h9, h8, h7, …
    }
    let r = req(1, 512, 0);
    let mut seen = BTreeSet::new();
    for seed in 0..200 {
        let p = Policy { weigh: Weigh::Pack, randomize_top: 3, seed };
        let (i, _) = place(&r, &hosts, &p).unwrap();
        assert_eq!(place(&r, &hosts, &p).unwrap().0, i, "same seed, same host");
        seen.insert(hosts[i].id.clone());
    }
    let want: BTreeSet<String> = ["h7", "h8", "h9"].iter().map(|s| s.to_string()).collect();
    assert_eq!(seen, want);
    let p = Policy { weigh: Weigh::Pack, randomize_top: 1, seed: 42 };
    assert_eq!(chosen_id(&r, &hosts, &p), "h9");
}

#[test]
fn soft_spread_prefers_the_domain_with_fewest_members() {
    let mut hosts = Vec::new();
    for (id, rack) in [("h1", "r1"), ("h2", "r1"), ("h3", "r2"), ("h4", "r3")] {
        let mut h = wire(id);
        h.rack_id = Some(RackId(rack.into()));
        hosts.push(view(&h));
    }
    hosts[0].used.shared_vcpus = 40; // pack alone would pick h1
    hosts[2].used.shared_vcpus = 30;
    let mut r = req(2, 1024, 0);
    assert_eq!(chosen_id(&r, &hosts, &pack()), "h1");
    r.group = group(GroupPolicy::Spread, FailureDomain::Host, &[("h1", Some("r1"))]);
    assert_eq!(chosen_id(&r, &hosts, &pack()), "h3");
    r.group = group(GroupPolicy::Spread, FailureDomain::Rack, &[("h2", Some("r1")), ("h3", Some("r2"))]);
    assert_eq!(chosen_id(&r, &hosts, &pack()), "h4");
    // Soft: when every domain has members, it still places (on the fewest).
    r.group = group(
        GroupPolicy::Spread,
        FailureDomain::Rack,
        &[("h2", Some("r1")), ("h3", Some("r2")), ("h4", Some("r3")), ("h4", Some("r3"))],
    );
    assert_eq!(chosen_id(&r, &hosts, &pack()), "h1");
    // And does not remove hosts.
    hosts.truncate(1);
    assert_eq!(chosen_id(&r, &hosts, &pack()), "h1");
}

#[test]
fn count_fits_examples() {
    let v = view(&wire("h1")); // 64 shared vCPUs, 65536 MiB, 500 GiB
    assert_eq!(count_fits(&req(4, 4096, 10), &v), 16);
    assert_eq!(count_fits(&req(3, 1024, 0), &v), 21);
    assert_eq!(count_fits(&req(1, 1024, 100), &v), 5);
    assert_eq!(count_fits(&req(1, 1024, 501), &v), 0);
    let mut cordoned = v.clone();
    cordoned.state = HostState::Cordoned;
    assert_eq!(count_fits(&req(1, 1024, 0), &cordoned), 0);
    let n = view(&numa_wire("h2"));
    assert_eq!(count_fits(&dedicated(3, 1024), &n), 5, "two per node, then one spanning");
    assert_eq!(count_fits(&dedicated(5, 1024), &n), 3, "one per node, then one spanning");
    let r = Request { hugepages: Hugepages::OneGiB, ..req(1, 3 * 1024, 0) };
    assert_eq!(count_fits(&r, &n), 2);
    // Group rules are ignored.
    let mut r = req(4, 4096, 10);
    r.group = group(GroupPolicy::AntiAffinity, FailureDomain::Host, &[("h1", None)]);
    assert_eq!(count_fits(&r, &v), 16);
    assert_eq!(fit(&r, &v).err(), Some("anti_affinity"));
}

// ---------------------------------------------------------------------------------------------
// Properties

#[derive(Clone, Debug)]
struct NodeSpec {
    cpus: u32,
    dedicated_mask: u8,
    pages_2m: u64,
    pages_1g: u64,
    gpus: Vec<u8>,
}

#[derive(Clone, Debug)]
struct HostSpec {
    nodes: Vec<NodeSpec>,
    state: u8,
    traits: (bool, bool),
    owner: u8,
    rack: u8,
    kvm: bool,
    allow_no_kvm: bool,
    memory_gib: u64,
    disk_gib: u64,
    cpu_ratio: u8,
}

fn arb_node() -> impl Strategy<Value = NodeSpec> {
    (2u32..=8, any::<u8>(), prop_oneof![Just(0u64), 0u64..=2048], 0u64..=4, prop::collection::vec(0u8..2, 0..3))
        .prop_map(|(cpus, dedicated_mask, pages_2m, pages_1g, gpus)| NodeSpec {
            cpus,
            dedicated_mask,
            pages_2m,
            pages_1g,
            gpus,
        })
}

fn arb_host() -> impl Strategy<Value = HostSpec> {
    (
        prop::collection::vec(arb_node(), 1..=3),
        0u8..8,
        (any::<bool>(), any::<bool>()),
        0u8..6,
        0u8..3,
        prop::bool::weighted(0.8),
        any::<bool>(),
        8u64..=48,
        0u64..=200,
        1u8..=4,
    )
        .prop_map(|(nodes, state, traits, owner, rack, kvm, allow_no_kvm, memory_gib, disk_gib, cpu_ratio)| {
            HostSpec { nodes, state, traits, owner, rack, kvm, allow_no_kvm, memory_gib, disk_gib, cpu_ratio }
        })
}

const CLASSES: [&str; 2] = ["ga", "gb"];

fn build(i: usize, s: &HostSpec) -> Host {
    let mut h = wire(&format!("h{i:02}"));
    h.state = if s.state < 6 {
        HostState::Available
    } else {
        [HostState::Cordoned, HostState::Draining][s.state as usize - 6]
    };
    if s.traits.0 {
        h.traits.push("A".into());
    }
    if s.traits.1 {
        h.traits.push("B".into());
    }
    h.ownership = match s.owner {
        4 => Ownership::Dedicated { tenant_id: TenantId("tnt_a".into()) },
        5 => Ownership::Dedicated { tenant_id: TenantId("tnt_b".into()) },
        _ => Ownership::Shared,
    };
    h.rack_id = [None, Some("r1"), Some("r2")][s.rack as usize].map(|r| RackId(r.into()));
    if !s.kvm {
        h.inventory.virtualization.kvm = Kvm::Absent;
    }
    h.scheduling.allow_dedicated_without_kvm = s.allow_no_kvm;
    h.scheduling.cpu_allocation_ratio = f64::from(s.cpu_ratio);
    h.inventory.memory_mib = s.memory_gib * 1024;
    h.inventory.disks[0].size_bytes = s.disk_gib << 30;
    let mut next = 0;
    for (n, ns) in s.nodes.iter().enumerate() {
        let cpus: Vec<u32> = (next..next + ns.cpus).collect();
        let half = ns.cpus / 2;
        let siblings =
            if ns.cpus % 2 == 0 { (0..half).map(|k| vec![next + k, next + k + half]).collect() } else { Vec::new() };
        for (k, cpu) in cpus.iter().enumerate() {
            if ns.dedicated_mask >> k & 1 == 1 {
                h.scheduling.dedicated_cpus.push(*cpu);
            }
        }
        let pools = [(2048, ns.pages_2m), (1048576, ns.pages_1g)];
        h.inventory.numa_nodes.push(node(n as u32, cpus.clone(), siblings, &pools));
        for (g, class) in ns.gpus.iter().enumerate() {
            h.inventory.gpus.push(gpu(&format!("0000:{n:02x}:{g:02x}.0"), CLASSES[*class as usize], Some(n as u32)));
        }
        next += ns.cpus;
    }
    h
}

fn arb_hosts() -> impl Strategy<Value = Vec<HostView>> {
    prop::collection::vec(arb_host(), 1..=10)
        .prop_map(|specs| specs.iter().enumerate().map(|(i, s)| view(&build(i, s))).collect())
}

fn arb_request() -> impl Strategy<Value = Request> {
    (
        (1u32..=6, prop::sample::select(vec![256u64, 512, 1024, 2048, 3000, 4096]), 0u64..=40),
        (prop::bool::weighted(0.35), 0u8..10, 0u8..12, prop::bool::weighted(0.03)),
        (any::<bool>(), prop::bool::weighted(0.05), 0u8..8, 0u8..8, prop::option::weighted(0.1, 0usize..10)),
    )
        .prop_map(|((vcpus, memory_mib, disk_gib), (ded, huge, gpu, bm), (tenant, reqded, rt, ft, avoid))| {
            let mut r = req(vcpus, memory_mib, disk_gib);
            if ded {
                r.cpu_policy = CpuPolicy::Dedicated;
            }
            r.hugepages = match huge {
                7 | 8 => Hugepages::TwoMiB,
                9 => Hugepages::OneGiB,
                _ => Hugepages::None,
            };
            r.gpu = match gpu {
                9 => Some(GpuRequest { class: "ga".into(), count: 1 }),
                10 => Some(GpuRequest { class: "gb".into(), count: 1 }),
                11 => Some(GpuRequest { class: "ga".into(), count: 2 }),
                _ => None,
            };
            if bm {
                r.runtime = RuntimeClass::Baremetal;
            }
            r.tenant_id = if tenant { "tnt_a".into() } else { "tnt_b".into() };
            r.require_dedicated_host = reqded;
            match rt {
                0 => r.required_traits.push("A".into()),
                1 => r.required_traits.push("B".into()),
                _ => {}
            }
            if ft == 0 {
                r.forbidden_traits.push("B".into());
            }
            if let Some(a) = avoid {
                r.avoid_hosts.insert(format!("h{a:02}"));
            }
            r
        })
}

fn arb_policy() -> impl Strategy<Value = Policy> {
    (any::<bool>(), prop_oneof![3 => Just(1u32), 1 => 2u32..=4], any::<u64>()).prop_map(|(s, randomize_top, seed)| {
        Policy { weigh: if s { Weigh::Spread } else { Weigh::Pack }, randomize_top, seed }
    })
}

/// Checks a claim against the host it was made on, before it is added.
fn check_claim(r: &Request, h: &HostView, c: &Claim) -> Result<(), TestCaseError> {
    prop_assert_eq!(c.vcpus, r.vcpus);
    prop_assert_eq!(c.cpu_policy, r.cpu_policy);
    prop_assert_eq!(c.disk_gib, r.disk_gib);
    prop_assert_eq!(c.tcg, !h.kvm_usable);
    let size = r.hugepages.size_mib();
    prop_assert_eq!(c.memory_mib, if size.is_some() { 0 } else { r.memory_mib });
    let nodes: BTreeSet<u32> = c.numa_nodes.iter().copied().collect();
    prop_assert!(c.numa_nodes.windows(2).all(|w| w[0] < w[1]), "numa_nodes sorted and distinct");
    let needs_numa = r.cpu_policy == CpuPolicy::Dedicated || size.is_some() || r.gpu.is_some();
    prop_assert_eq!(needs_numa, !nodes.is_empty());
    // Pinned CPUs: one per vCPU, distinct, free, dedicated, on the claimed nodes.
    let want_cpus = if r.cpu_policy == CpuPolicy::Dedicated { r.vcpus as usize } else { 0 };
    prop_assert_eq!(c.cpus.len(), want_cpus);
    let cpus: BTreeSet<u32> = c.cpus.iter().copied().collect();
    prop_assert_eq!(cpus.len(), c.cpus.len(), "a CPU pinned twice in one claim");
    for cpu in &c.cpus {
        prop_assert!(!h.used.pinned_cpus.contains(cpu), "CPU {} already pinned", cpu);
        prop_assert!(
            h.numa.iter().any(|n| nodes.contains(&n.id) && n.dedicated_cpus.contains(cpu)),
            "CPU {} not dedicated on a claimed node",
            cpu
        );
    }
    // Hugepages: ceil(memory / size) in all, on claimed nodes.
    match size {
        Some(s) => {
            prop_assert_eq!(c.hugepages.iter().map(|p| p.pages).sum::<u64>(), r.memory_mib.div_ceil(s));
            prop_assert!(c.hugepages.iter().all(|p| p.size_mib == s && nodes.contains(&p.numa_node) && p.pages > 0));
        }
        None => prop_assert!(c.hugepages.is_empty()),
    }
    // GPUs: the count asked, distinct, free, of the class, on claimed nodes.
    let want_gpus = r.gpu.as_ref().map_or(0, |g| g.count as usize);
    prop_assert_eq!(c.gpus.len(), want_gpus);
    let gpus: BTreeSet<&String> = c.gpus.iter().collect();
    prop_assert_eq!(gpus.len(), c.gpus.len(), "a GPU given twice in one claim");
    for g in &c.gpus {
        prop_assert!(!h.used.gpus.contains(g), "GPU {} already given", g);
        let class = r.gpu.as_ref().map(|g| g.class.as_str());
        prop_assert!(
            h.numa
                .iter()
                .any(|n| nodes.contains(&n.id)
                    && n.gpus.iter().any(|v| &v.address == g && Some(v.class.as_str()) == class)),
            "GPU {} not of the class on a claimed node",
            g
        );
    }
    Ok(())
}

/// Checks that nothing on the host is used beyond its capacity.
fn check_within(h: &HostView) -> Result<(), TestCaseError> {
    let u = &h.used;
    prop_assert!(u.shared_vcpus <= h.shared_vcpus, "shared vCPUs {} > {}", u.shared_vcpus, h.shared_vcpus);
    prop_assert!(u.memory_mib <= h.memory_mib, "memory {} > {}", u.memory_mib, h.memory_mib);
    prop_assert!(u.disk_gib <= h.disk_gib, "disk {} > {}", u.disk_gib, h.disk_gib);
    for (&(node, size), &used) in &u.hugepages {
        let total = h.numa.iter().find(|n| n.id == node).and_then(|n| n.hugepages.get(&size)).copied().unwrap_or(0);
        prop_assert!(used <= total, "node {} pages of {} MiB: {} > {}", node, size, used, total);
    }
    let dedicated: BTreeSet<u32> = h.numa.iter().flat_map(|n| n.dedicated_cpus.iter().copied()).collect();
    prop_assert!(u.pinned_cpus.is_subset(&dedicated), "pinned outside dedicated_cpus");
    Ok(())
}

/// Counts successive `fit` + `add` on a clone.
fn naive_count(r: &Request, h: &HostView) -> u32 {
    let mut h = h.clone();
    let mut n = 0;
    while let Ok(c) = fit(r, &h) {
        h.add(&c);
        n += 1;
        assert!(n < 100_000, "runaway");
    }
    n
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 256, ..ProptestConfig::default() })]

    #[test]
    fn repeated_placement_never_overcommits(
        mut hosts in arb_hosts(),
        reqs in prop::collection::vec(arb_request(), 1..40),
        policy in arb_policy(),
    ) {
        let mut placed = 0;
        for r in &reqs {
            match place(r, &hosts, &policy) {
                Ok((i, claim)) => {
                    prop_assert_eq!(fit_with(r, &hosts[i], policy.weigh), Ok(claim.clone()), "fit agrees with place");
                    if policy.weigh == Weigh::Pack {
                        prop_assert_eq!(fit(r, &hosts[i]), Ok(claim.clone()));
                    }
                    prop_assert!(fit(r, &hosts[i]).is_ok());
                    check_claim(r, &hosts[i], &claim)?;
                    let gpus_before = hosts[i].used.gpus.len();
                    let pinned_before = hosts[i].used.pinned_cpus.len();
                    hosts[i].add(&claim);
                    prop_assert_eq!(hosts[i].used.gpus.len(), gpus_before + claim.gpus.len(), "a GPU given twice");
                    prop_assert_eq!(hosts[i].used.pinned_cpus.len(), pinned_before + claim.cpus.len(), "a CPU pinned twice");
                    check_within(&hosts[i])?;
                    placed += 1;
                }
                Err(e) => {
                    prop_assert_eq!(e.hosts as usize, hosts.len());
                    prop_assert_eq!(e.removed.values().sum::<u32>() as usize, hosts.len(), "counts sum to hosts");
                    prop_assert!(e.removed.values().all(|n| *n > 0));
                    // The counts are exactly what `fit` says of each host.
                    let mut tally: BTreeMap<&'static str, u32> = BTreeMap::new();
                    for h in &hosts {
                        match fit(r, h) {
                            Err(name) => *tally.entry(name).or_default() += 1,
                            Ok(_) => prop_assert!(false, "place refused but {} fits", h.id),
                        }
                    }
                    prop_assert_eq!(&e.removed, &tally);
                }
            }
        }
        prop_assert!(placed <= reqs.len());
    }

    #[test]
    fn place_chooses_a_host_that_fits_and_refuses_only_when_none_does(
        hosts in arb_hosts(),
        r in arb_request(),
        policy in arb_policy(),
    ) {
        let fitting: Vec<usize> = (0..hosts.len()).filter(|&i| fit(&r, &hosts[i]).is_ok()).collect();
        match place(&r, &hosts, &policy) {
            Ok((i, _)) => prop_assert!(fitting.contains(&i)),
            Err(_) => prop_assert!(fitting.is_empty()),
        }
        prop_assert_eq!(place(&r, &hosts, &policy), place(&r, &hosts, &policy), "deterministic");
    }

    #[test]
    fn count_fits_is_exact(
        mut hosts in arb_hosts(),
        warmup in prop::collection::vec(arb_request(), 0..12),
        r in arb_request(),
    ) {
        for w in &warmup {
            if let Ok((i, c)) = place(w, &hosts, &Policy::default()) {
                hosts[i].add(&c);
            }
        }
        for h in &hosts {
            prop_assert_eq!(count_fits(&r, h), naive_count(&r, h), "host {}", h.id);
        }
    }

    #[test]
    fn hard_group_rules_hold(
        mut hosts in arb_hosts(),
        reqs in prop::collection::vec(arb_request(), 1..16),
        rack_scope in any::<bool>(),
        anti in any::<bool>(),
        policy in arb_policy(),
    ) {
        let scope = if rack_scope { FailureDomain::Rack } else { FailureDomain::Host };
        let policy_kind = if anti { GroupPolicy::AntiAffinity } else { GroupPolicy::Affinity };
        let mut members: Vec<Member> = Vec::new();
        let domain = |m: &Member| match (scope, &m.rack_id) {
            (FailureDomain::Rack, Some(r)) => format!("rack:{r}"),
            _ => format!("host:{}", m.host_id),
        };
        for r in &reqs {
            let mut r = r.clone();
            r.group = Some(GroupRule { policy: policy_kind, scope, members: members.clone() });
            if let Ok((i, c)) = place(&r, &hosts, &policy) {
                hosts[i].add(&c);
                members.push(Member { host_id: hosts[i].id.clone(), rack_id: hosts[i].rack_id.clone() });
            }
        }
        let domains: Vec<String> = members.iter().map(domain).collect();
        let distinct: BTreeSet<&String> = domains.iter().collect();
        if anti {
            prop_assert_eq!(distinct.len(), domains.len(), "two members share a failure domain: {:?}", domains);
        } else {
            prop_assert!(distinct.len() <= 1, "members in several failure domains: {:?}", domains);
        }
    }
}

// ---------------------------------------------------------------------------------------------
// Timing (not a test: `cargo test -p plinth-domain --release --test placement -- --ignored --nocapture`)

#[test]
#[ignore]
fn time_place_over_10000_hosts() {
    let mut template = numa_wire("h");
    template.inventory.numa_nodes = vec![
        node(0, (0..32).collect(), (0..16).map(|i| vec![i, i + 16]).collect(), &[(2048, 4096), (1048576, 16)]),
        node(1, (32..64).collect(), (32..48).map(|i| vec![i, i + 16]).collect(), &[(2048, 4096), (1048576, 16)]),
    ];
    template.inventory.memory_mib = 512 * 1024;
    template.scheduling.dedicated_cpus = (16..32).chain(48..64).collect();
    template.inventory.gpus = vec![gpu("0000:81:00.0", "ga", Some(1))];
    template.traits = vec!["A".into()];
    let mut hosts = Vec::with_capacity(10_000);
    for i in 0..10_000u32 {
        let mut h = template.clone();
        h.id = HostId(format!("hst_{i:05}"));
        h.rack_id = Some(RackId(format!("rck_{:03}", i / 40)));
        let mut v = view(&h);
        // Varied usage so weighing has work to do.
        v.used.shared_vcpus = u64::from(i * 7 % 150);
        v.used.memory_mib = u64::from(i * 131 % 400_000);
        v.used.disk_gib = u64::from(i % 300);
        if i % 3 == 0 {
            v.used.pinned_cpus = (16..16 + i % 12).collect();
        }
        hosts.push(v);
    }
    let shared = req(4, 8192, 40);
    let mut ded = dedicated(8, 16384);
    ded.hugepages = Hugepages::OneGiB;
    let mut grouped = req(2, 4096, 10);
    grouped.required_traits.push("A".into());
    grouped.group = group(GroupPolicy::AntiAffinity, FailureDomain::Rack, &[("hst_00001", Some("rck_000"))]);
    for (name, r) in [("shared 4 vCPU", &shared), ("dedicated 8 vCPU + 1G pages", &ded), ("anti-affinity", &grouped)] {
        for policy in [pack(), spread()] {
            let runs = 200;
            let mut times = Vec::with_capacity(runs);
            for _ in 0..runs {
                let t = std::time::Instant::now();
                let out = place(r, &hosts, &policy);
                times.push(t.elapsed());
                assert!(out.is_ok());
            }
            times.sort();
            println!(
                "{name:<28} {:?}: median {:?}, p90 {:?}, min {:?}",
                policy.weigh,
                times[runs / 2],
                times[runs * 9 / 10],
                times[0]
            );
        }
    }
    let t = std::time::Instant::now();
    let total: u64 = hosts.iter().map(|h| u64::from(count_fits(&shared, h))).sum();
    println!("count_fits over 10000 hosts: {:?} ({total} copies)", t.elapsed());
}
