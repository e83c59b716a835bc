//! Placement: the scheduler core (DESIGN.md §6).
//!
//! Given one [`Request`] and a [`HostView`] of every candidate host, [`place`] runs the hard
//! constraints as filters, cheapest first, weighs the hosts that pass, and returns the chosen
//! host with the concrete [`Claim`]: which CPUs are pinned, which NUMA nodes, hugepages and
//! GPUs the guest gets. A refusal ([`NoValidHost`]) says how many hosts each constraint
//! removed, never just "no valid host".
//!
//! [`fit`] is the single-host check the server runs again inside the claiming transaction, and
//! [`count_fits`] answers "how many more of this shape fit here" for capacity summaries.
//!
//! This module owns the types and the filter loop; `capacity` owns host capacity and claim
//! accounting, `numa` owns NUMA, pinning, hugepage and GPU fitting, `weigh` owns scoring and
//! the tie-break. It must stay pure: no I/O, no clock, no global randomness (randomisation
//! comes from the [`Policy`] seed), and the filter loop allocates nothing per host.

mod capacity;
mod numa;
mod weigh;

use numa::{Needs, NodeFree, Share};
use plinth_api::{Claim, CpuPolicy, FailureDomain, GpuRequest, GroupPolicy, HostState, Hugepages, RuntimeClass, Shape};
use std::collections::{BTreeMap, BTreeSet};

/// What the scheduler knows of one host: capacity (after ratios and reservations) and what is used.
#[derive(Clone, Debug)]
pub struct HostView {
    pub id: String,
    pub rack_id: Option<String>,
    pub state: HostState,
    /// `Ownership::Dedicated { tenant_id }` -> `Some(tenant id)`.
    pub dedicated_tenant: Option<String>,
    pub traits: BTreeSet<String>,
    /// `inventory.virtualization.kvm == Kvm::Usable`.
    pub kvm_usable: bool,
    /// `scheduling.allow_dedicated_without_kvm`.
    pub allow_dedicated_without_kvm: bool,
    /// floor(host CPUs not in `scheduling.dedicated_cpus` × `cpu_allocation_ratio`).
    pub shared_vcpus: u64,
    /// floor((inventory memory − reserved − memory held as hugepages) × `memory_allocation_ratio`).
    pub memory_mib: u64,
    /// Sum of disk sizes in GiB, minus `reserved_disk_gib`.
    pub disk_gib: u64,
    pub numa: Vec<NumaView>,
    pub used: Usage,
}

/// One NUMA node of a host.
#[derive(Clone, Debug)]
pub struct NumaView {
    pub id: u32,
    /// This node's CPUs that are in `scheduling.dedicated_cpus` (the only CPUs that may be pinned),
    /// ascending and distinct.
    pub dedicated_cpus: Vec<u32>,
    /// Sibling groups (from inventory `NumaNode.siblings`) restricted to `dedicated_cpus`; a CPU in
    /// no group is its own core.
    pub siblings: Vec<Vec<u32>>,
    /// Hugepage pools: page size in MiB (2 or 1024) -> total pages.
    pub hugepages: BTreeMap<u64, u64>,
    pub gpus: Vec<GpuView>,
}

/// A GPU on a NUMA node.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct GpuView {
    /// PCI address, e.g. `0000:3b:00.0`.
    pub address: String,
    /// GPU class, e.g. `nvidia-h100-80gb`.
    pub class: String,
}

/// What the claims on a host hold.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Usage {
    pub shared_vcpus: u64,
    pub memory_mib: u64,
    pub disk_gib: u64,
    pub pinned_cpus: BTreeSet<u32>,
    /// (numa node, page size MiB) -> pages used.
    pub hugepages: BTreeMap<(u32, u64), u64>,
    pub gpus: BTreeSet<String>,
    pub instances: u32,
}

/// One placement request.
#[derive(Clone, Debug)]
pub struct Request {
    pub vcpus: u32,
    pub memory_mib: u64,
    pub disk_gib: u64,
    pub cpu_policy: CpuPolicy,
    pub hugepages: Hugepages,
    pub gpu: Option<GpuRequest>,
    pub runtime: RuntimeClass,
    pub tenant_id: String,
    /// The tenant insists on hosts dedicated to it.
    pub require_dedicated_host: bool,
    pub required_traits: Vec<String>,
    pub forbidden_traits: Vec<String>,
    pub group: Option<GroupRule>,
    /// Hosts never to use (a drain's source host, a failed host).
    pub avoid_hosts: BTreeSet<String>,
    /// The only host it may use (where its local volumes are); `None`: any.
    pub volume_host: Option<String>,
}

impl Request {
    /// A request for one instance of `shape` by `tenant_id`, with no traits, group or avoided hosts.
    pub fn for_shape(shape: &Shape, tenant_id: &str) -> Request {
        Request {
            vcpus: shape.vcpus,
            memory_mib: shape.memory_mib,
            disk_gib: shape.disk_gib,
            cpu_policy: shape.cpu_policy,
            hugepages: shape.hugepages,
            gpu: shape.gpu.clone(),
            runtime: shape.runtime_class,
            tenant_id: tenant_id.to_string(),
            require_dedicated_host: false,
            required_traits: Vec::new(),
            forbidden_traits: Vec::new(),
            group: None,
            avoid_hosts: BTreeSet::new(),
            volume_host: None,
        }
    }
}

/// A placement group's rule, with where its members already run.
#[derive(Clone, Debug)]
pub struct GroupRule {
    pub policy: GroupPolicy,
    pub scope: FailureDomain,
    pub members: Vec<Member>,
}

/// Where an existing member of the group runs.
#[derive(Clone, Debug)]
pub struct Member {
    pub host_id: String,
    pub rack_id: Option<String>,
}

/// How hosts that pass every filter are ranked.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Weigh {
    /// Fill hosts up: prefer the host with the least free capacity left after the claim.
    Pack,
    /// Balance load: prefer the host with the most free capacity left after the claim.
    Spread,
}

/// Scheduler policy.
#[derive(Clone, Copy, Debug)]
pub struct Policy {
    pub weigh: Weigh,
    /// Choose uniformly among the best N (1 = deterministic).
    pub randomize_top: u32,
    /// Seed of the xorshift generator used when `randomize_top > 1`.
    pub seed: u64,
}

impl Default for Policy {
    fn default() -> Self {
        Policy { weigh: Weigh::Pack, randomize_top: 1, seed: 0 }
    }
}

/// Refusal: how many hosts each constraint removed (each host counted once, at the first
/// constraint that removed it).
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("no valid host: {removed:?}")]
pub struct NoValidHost {
    /// Constraint name -> hosts it removed (only constraints that removed at least one host).
    pub removed: BTreeMap<&'static str, u32>,
    /// Hosts considered.
    pub hosts: u32,
}

impl NoValidHost {
    /// True when every host was removed by a capacity constraint (vcpu, dedicated_cpus, memory,
    /// hugepages, disk, gpus, numa), i.e. the request would fit on an empty eligible host.
    pub fn capacity_only(&self) -> bool {
        self.hosts > 0 && !self.removed.is_empty() && self.removed.keys().all(|k| CAPACITY_CONSTRAINTS.contains(k))
    }
}

/// Every constraint name, in the order they are checked.
pub const CONSTRAINTS: [&str; 16] = [
    "avoided",
    "volume_host",
    "host_state",
    "runtime",
    "dedicated_host",
    "traits",
    "gpu_class",
    "affinity",
    "anti_affinity",
    "vcpu",
    "dedicated_cpus",
    "memory",
    "hugepages",
    "disk",
    "gpus",
    "numa",
];

/// The constraints that are about capacity (a host removed by one of these would take the
/// request once enough of its instances went away).
pub const CAPACITY_CONSTRAINTS: [&str; 7] = ["vcpu", "dedicated_cpus", "memory", "hugepages", "disk", "gpus", "numa"];

/// A constraint, as an index into [`CONSTRAINTS`].
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Constraint {
    Avoided,
    VolumeHost,
    HostState,
    Runtime,
    DedicatedHost,
    Traits,
    GpuClass,
    Affinity,
    AntiAffinity,
    Vcpu,
    DedicatedCpus,
    Memory,
    Hugepages,
    Disk,
    Gpus,
    Numa,
}

impl Constraint {
    fn name(self) -> &'static str {
        CONSTRAINTS[self as usize]
    }
}

/// Filters then weighs; returns the index into `hosts` of the chosen host and the concrete claim.
pub fn place(req: &Request, hosts: &[HostView], policy: &Policy) -> Result<(usize, Claim), NoValidHost> {
    let prepared = Prepared::new(req, true);
    let mut scratch = Scratch::default();
    let mut removed = [0u32; CONSTRAINTS.len()];
    let mut top = weigh::Top::new(policy.randomize_top, hosts.len());
    for (c, chunk) in hosts.chunks(WARM_BATCH).enumerate() {
        if prepared.numa {
            warm(chunk, prepared.dedicated, prepared.page_size);
        }
        for (j, host) in chunk.iter().enumerate() {
            let i = c * WARM_BATCH + j;
            match prepared.check(host, policy.weigh, &mut scratch) {
                Ok(eval) => top.offer(weigh::score(&prepared, host, &eval, policy.weigh), i, hosts),
                Err(c) => removed[c as usize] += 1,
            }
        }
    }
    if let Some(i) = top.choose(policy.seed) {
        // The chosen host passed `check` above and nothing changed since: this re-run succeeds.
        match prepared.check(&hosts[i], policy.weigh, &mut scratch) {
            Ok(_) => return Ok((i, prepared.claim(&hosts[i], &scratch))),
            Err(c) => removed[c as usize] += 1,
        }
    }
    let removed = CONSTRAINTS.iter().zip(removed).filter(|(_, n)| *n > 0).map(|(name, n)| (*name, n)).collect();
    Err(NoValidHost { removed, hosts: u32::try_from(hosts.len()).unwrap_or(u32::MAX) })
}

const WARM_BATCH: usize = 16;

/// Touches the per-node data of a batch of hosts up front, so the cache misses of independent
/// hosts overlap instead of being paid one after another inside `check`.
fn warm(hosts: &[HostView], dedicated: bool, page_size: u64) {
    let mut sum = 0u64;
    for h in hosts {
        // The id is compared on score ties.
        sum = sum.wrapping_add(u64::from(h.id.as_bytes().last().copied().unwrap_or(0)));
        let pinned = dedicated && !h.used.pinned_cpus.is_empty();
        if pinned {
            sum = sum.wrapping_add(u64::from(h.used.pinned_cpus.first().copied().unwrap_or(0)));
        }
        for n in &h.numa {
            sum = sum.wrapping_add(u64::from(n.id));
            if dedicated {
                sum = sum.wrapping_add(n.dedicated_cpus.len() as u64);
            }
            if pinned {
                sum = sum.wrapping_add(u64::from(n.dedicated_cpus.first().copied().unwrap_or(0)));
            }
            if page_size > 0 {
                sum = sum.wrapping_add(n.hugepages.get(&page_size).copied().unwrap_or(0));
            }
        }
    }
    std::hint::black_box(sum);
}

/// The single-host check (used again inside the claiming DB transaction): the claim, or the
/// name of the constraint that refuses. NUMA nodes are chosen as under [`Weigh::Pack`].
pub fn fit(req: &Request, host: &HostView) -> Result<Claim, &'static str> {
    fit_with(req, host, Weigh::Pack)
}

/// [`fit`] with the NUMA node choice of the given weigher: `place` with `Policy { weigh, .. }`
/// returns exactly `fit_with(req, &hosts[i], weigh)` for the host it chose.
pub fn fit_with(req: &Request, host: &HostView, weigh: Weigh) -> Result<Claim, &'static str> {
    let prepared = Prepared::new(req, true);
    let mut scratch = Scratch::default();
    match prepared.check(host, weigh, &mut scratch) {
        Ok(_) => Ok(prepared.claim(host, &scratch)),
        Err(c) => Err(c.name()),
    }
}

/// How many more copies of `req` fit on `host` (group rules ignored), for the capacity summary.
/// Exactly the number of successive `fit` + `HostView::add` that succeed; `u32::MAX` when the
/// request consumes nothing at all.
pub fn count_fits(req: &Request, host: &HostView) -> u32 {
    let p = Prepared::new(req, false);
    let mut scratch = Scratch::default();
    if p.check(host, Weigh::Pack, &mut scratch).is_err() {
        return 0;
    }
    // Scalar resources run out after a closed-form number of copies.
    let mut bound = u64::MAX;
    let u = &host.used;
    for (cap, used, need) in
        [(host.shared_vcpus, u.shared_vcpus, p.shared_need), (host.memory_mib, u.memory_mib, p.memory_need)]
            .into_iter()
            .chain([(host.disk_gib, u.disk_gib, p.disk)])
    {
        if let Some(copies) = cap.saturating_sub(used).checked_div(need) {
            bound = bound.min(copies);
        }
    }
    let bound = u32::try_from(bound).unwrap_or(u32::MAX);
    if !p.numa || p.needs == Needs::default() {
        return bound;
    }
    // NUMA resources: replay the node choice on free counts only (it depends on nothing else).
    let mut nodes = scratch.nodes.clone();
    let mut count = 0u32;
    while count < bound {
        if !numa::select(&nodes, p.needs, Weigh::Pack, &mut scratch.shares) {
            break;
        }
        for s in &scratch.shares {
            let n = &mut nodes[s.pos];
            n.free_c -= s.cpus;
            n.free_p -= s.pages;
            n.free_g -= s.gpus;
        }
        count += 1;
    }
    count
}

/// The failure domain a host or member is in: its rack, or itself (host scope, or no rack).
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
enum Domain<'a> {
    Host(&'a str),
    Rack(&'a str),
}

impl<'a> Domain<'a> {
    fn of(scope: FailureDomain, host_id: &'a str, rack_id: Option<&'a str>) -> Domain<'a> {
        match (scope, rack_id) {
            (FailureDomain::Rack, Some(rack)) => Domain::Rack(rack),
            _ => Domain::Host(host_id),
        }
    }
}

/// A group rule digested once per request: members counted per failure domain.
struct GroupCtx<'a> {
    policy: GroupPolicy,
    scope: FailureDomain,
    domains: BTreeMap<Domain<'a>, u32>,
}

/// The request digested once, so the per-host loop does only comparisons.
struct Prepared<'a> {
    req: &'a Request,
    dedicated: bool,
    /// vCPUs counted against the shared pool (0 for dedicated shapes).
    shared_need: u64,
    /// Ordinary memory (0 for hugepage-backed shapes).
    memory_need: u64,
    disk: u64,
    /// Hugepage size in MiB, 0 for none.
    page_size: u64,
    /// GPU class asked for ("" for none).
    gpu_class: &'a str,
    /// NUMA resources: pinned CPUs, pages, GPUs.
    needs: Needs,
    /// Whether NUMA fitting applies.
    numa: bool,
    group: Option<GroupCtx<'a>>,
}

/// What a host that passes every filter looks like, for weighing.
pub(crate) struct Eval {
    /// Free dedicated CPUs and their total over the host (dedicated shapes).
    pub free_c: u64,
    pub total_c: u64,
    /// Free pages of the size and their total over the host (hugepage shapes).
    pub free_p: u64,
    pub total_p: u64,
    /// The claim spans more than one NUMA node.
    pub spans: bool,
    /// Members of the request's group already in this host's failure domain.
    pub group_members: u32,
}

/// Buffers reused across hosts so the filter loop does not allocate.
#[derive(Default)]
struct Scratch {
    nodes: Vec<NodeFree>,
    shares: Vec<Share>,
}

impl<'a> Prepared<'a> {
    fn new(req: &'a Request, with_group: bool) -> Prepared<'a> {
        let dedicated = req.cpu_policy == CpuPolicy::Dedicated;
        let page_size = req.hugepages.size_mib().unwrap_or(0);
        let (gpu_class, gpus) = match &req.gpu {
            Some(g) if g.count > 0 => (g.class.as_str(), u64::from(g.count)),
            _ => ("", 0),
        };
        let needs = Needs {
            cpus: if dedicated { u64::from(req.vcpus) } else { 0 },
            pages: if page_size > 0 { req.memory_mib.div_ceil(page_size) } else { 0 },
            gpus,
        };
        let group = req.group.as_ref().filter(|_| with_group).map(|g| {
            let mut domains = BTreeMap::new();
            for m in &g.members {
                *domains.entry(Domain::of(g.scope, &m.host_id, m.rack_id.as_deref())).or_insert(0) += 1;
            }
            GroupCtx { policy: g.policy, scope: g.scope, domains }
        });
        Prepared {
            req,
            dedicated,
            shared_need: if dedicated { 0 } else { u64::from(req.vcpus) },
            memory_need: if page_size > 0 { 0 } else { req.memory_mib },
            disk: req.disk_gib,
            page_size,
            gpu_class,
            needs,
            numa: dedicated || page_size > 0 || gpus > 0,
            group,
        }
    }

    /// Runs every constraint in order. On success the NUMA choice is left in `scratch.shares`
    /// (over the nodes in `scratch.nodes`).
    fn check(&self, h: &HostView, weigh: Weigh, scratch: &mut Scratch) -> Result<Eval, Constraint> {
        let req = self.req;
        if !req.avoid_hosts.is_empty() && req.avoid_hosts.contains(h.id.as_str()) {
            return Err(Constraint::Avoided);
        }
        if req.volume_host.as_ref().is_some_and(|v| v != h.id.as_str()) {
            return Err(Constraint::VolumeHost);
        }
        if h.state != HostState::Available {
            return Err(Constraint::HostState);
        }
        if req.runtime == RuntimeClass::Baremetal || (self.dedicated && !h.kvm_usable && !h.allow_dedicated_without_kvm)
        {
            return Err(Constraint::Runtime);
        }
        match &h.dedicated_tenant {
            Some(t) if *t != req.tenant_id => return Err(Constraint::DedicatedHost),
            None if req.require_dedicated_host => return Err(Constraint::DedicatedHost),
            _ => {}
        }
        if !req.required_traits.iter().all(|t| h.traits.contains(t.as_str()))
            || req.forbidden_traits.iter().any(|t| h.traits.contains(t.as_str()))
        {
            return Err(Constraint::Traits);
        }
        if self.needs.gpus > 0 && !h.numa.iter().any(|n| n.gpus.iter().any(|g| g.class == self.gpu_class)) {
            return Err(Constraint::GpuClass);
        }
        let mut group_members = 0;
        if let Some(g) = &self.group {
            let members = g.domains.get(&Domain::of(g.scope, &h.id, h.rack_id.as_deref())).copied().unwrap_or(0);
            match g.policy {
                GroupPolicy::Affinity if !g.domains.is_empty() && members == 0 => return Err(Constraint::Affinity),
                GroupPolicy::AntiAffinity if members > 0 => return Err(Constraint::AntiAffinity),
                _ => group_members = members,
            }
        }

        // Capacity: scalar totals first, NUMA layout last.
        let u = &h.used;
        if self.shared_need > 0 && u.shared_vcpus.saturating_add(self.shared_need) > h.shared_vcpus {
            return Err(Constraint::Vcpu);
        }
        let (mut free_c, mut total_c, mut free_p, mut total_p, mut free_g) = (0, 0, 0, 0, 0);
        if self.numa {
            capacity::node_frees(h, self.dedicated, self.page_size, self.gpu_class, &mut scratch.nodes);
            for n in &scratch.nodes {
                free_c = n.free_c.saturating_add(free_c);
                total_c = n.total_c.saturating_add(total_c);
                free_p = n.free_p.saturating_add(free_p);
                total_p = n.total_p.saturating_add(total_p);
                free_g = n.free_g.saturating_add(free_g);
            }
        }
        if free_c < self.needs.cpus {
            return Err(Constraint::DedicatedCpus);
        }
        if self.memory_need > 0 && u.memory_mib.saturating_add(self.memory_need) > h.memory_mib {
            return Err(Constraint::Memory);
        }
        if free_p < self.needs.pages {
            return Err(Constraint::Hugepages);
        }
        if self.disk > 0 && u.disk_gib.saturating_add(self.disk) > h.disk_gib {
            return Err(Constraint::Disk);
        }
        if free_g < self.needs.gpus {
            return Err(Constraint::Gpus);
        }
        scratch.shares.clear();
        if self.numa && !numa::select(&scratch.nodes, self.needs, weigh, &mut scratch.shares) {
            return Err(Constraint::Numa);
        }
        Ok(Eval { free_c, total_c, free_p, total_p, spans: scratch.shares.len() > 1, group_members })
    }

    /// The claim on `h` for the NUMA choice `check` just left in `scratch`.
    fn claim(&self, h: &HostView, scratch: &Scratch) -> Claim {
        let mut claim = Claim {
            vcpus: self.req.vcpus,
            cpu_policy: self.req.cpu_policy,
            memory_mib: self.memory_need,
            disk_gib: self.req.disk_gib,
            numa_nodes: Vec::new(),
            cpus: Vec::new(),
            hugepages: Vec::new(),
            gpus: Vec::new(),
            tcg: !h.kvm_usable,
            rack_id: h.rack_id.clone(),
        };
        if self.numa {
            numa::materialize(h, &scratch.nodes, &scratch.shares, self.page_size, self.gpu_class, &mut claim);
        }
        claim
    }
}
