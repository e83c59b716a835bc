//! NUMA fitting: which node(s) of one host take a guest that needs pinned CPUs, hugepages or
//! GPUs, how the guest is split when it must span nodes, and which concrete CPUs, pages and
//! GPU addresses it gets.
//!
//! Node choice ([`select`]) works on free counts only ([`NodeFree`]), so it runs without
//! allocating in the filter loop and `count_fits` can replay it; [`materialize`] turns the
//! choice into concrete CPUs and addresses once, for the chosen host. It never looks at
//! anything outside one host.

use super::{HostView, NumaView, Weigh};
use plinth_api::{Claim, HugepageClaim};
use std::collections::BTreeSet;

/// Free and total NUMA resources of one node, for one request (pinned CPUs, pages of the
/// requested size, GPUs of the requested class).
#[derive(Clone, Copy, Debug, Default)]
pub(crate) struct NodeFree {
    /// Position of the node in `HostView::numa`.
    pub idx: usize,
    pub id: u32,
    pub free_c: u64,
    pub total_c: u64,
    pub free_p: u64,
    pub total_p: u64,
    pub free_g: u64,
    pub total_g: u64,
}

/// NUMA resources one guest needs.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub(crate) struct Needs {
    pub cpus: u64,
    pub pages: u64,
    pub gpus: u64,
}

/// What one chosen node gives the guest.
#[derive(Clone, Copy, Debug)]
pub(crate) struct Share {
    /// Position in the `NodeFree` slice handed to [`select`].
    pub pos: usize,
    pub cpus: u64,
    pub pages: u64,
    pub gpus: u64,
}

/// Up to this many nodes, spanning tries every subset; beyond it, a greedy prefix.
const EXHAUSTIVE_NODES: usize = 10;

/// Chooses the node(s) for `need` over `nodes` (sorted by id) and leaves one [`Share`] per
/// chosen node in `out`, by ascending node id. False when no layout works.
///
/// One node holding everything is preferred: the fullest that fits under [`Weigh::Pack`], the
/// emptiest under [`Weigh::Spread`], ties to the lowest id. Otherwise the guest spans the fewest
/// nodes such that pinned CPUs, pages and GPUs add up, where every spanned node hosts some of
/// the guest's CPUs or pages (so a GPU is never on a node the guest does not run on).
pub(crate) fn select(nodes: &[NodeFree], need: Needs, weigh: Weigh, out: &mut Vec<Share>) -> bool {
    out.clear();
    let mut best: Option<(usize, f64)> = None;
    for (pos, n) in nodes.iter().enumerate() {
        if n.free_c >= need.cpus && n.free_p >= need.pages && n.free_g >= need.gpus {
            let left = leftover(n, need);
            let better = match (best, weigh) {
                (None, _) => true,
                (Some((_, b)), Weigh::Pack) => left < b,
                (Some((_, b)), Weigh::Spread) => left > b,
            };
            if better {
                best = Some((pos, left));
            }
        }
    }
    if let Some((pos, _)) = best {
        out.push(Share { pos, cpus: need.cpus, pages: need.pages, gpus: need.gpus });
        return true;
    }
    if nodes.is_empty() {
        return need == Needs::default();
    }
    span(nodes, need, out)
}

/// Mean fraction of the node's capacity left free after `need`, over the resources needed.
fn leftover(n: &NodeFree, need: Needs) -> f64 {
    let mut sum = 0.0;
    let mut dims = 0u32;
    for (free, total, need) in
        [(n.free_c, n.total_c, need.cpus), (n.free_p, n.total_p, need.pages), (n.free_g, n.total_g, need.gpus)]
    {
        if need > 0 && total > 0 {
            sum += (free - need) as f64 / total as f64;
            dims += 1;
        }
    }
    if dims == 0 { 0.0 } else { sum / f64::from(dims) }
}

/// The guest must span nodes: the fewest that work, most free resources first.
fn span(nodes: &[NodeFree], need: Needs, out: &mut Vec<Share>) -> bool {
    let n = nodes.len();
    if n <= EXHAUSTIVE_NODES {
        let positions = |mask: u32| (0..n).filter(move |p| mask >> p & 1 == 1);
        let mut best: Option<(u32, f64, u32)> = None;
        for mask in 1u32..(1 << n) {
            let k = mask.count_ones();
            if k < 2 || best.is_some_and(|(bk, _, _)| k > bk) {
                continue;
            }
            if !feasible(positions(mask).map(|p| &nodes[p]), need) {
                continue;
            }
            let free = freeness(positions(mask).map(|p| &nodes[p]), need);
            let better = match best {
                None => true,
                Some((bk, bf, bm)) => k < bk || free > bf || (free == bf && lower_ids(mask, bm)),
            };
            if better {
                best = Some((k, free, mask));
            }
        }
        match best {
            Some((_, _, mask)) => {
                split(nodes, positions(mask), need, out);
                true
            }
            None => false,
        }
    } else {
        // Greedy: rank by how much of the request each node covers, take the shortest prefix.
        let mut ranked: Vec<usize> = (0..n).collect();
        let cover = |p: usize| freeness_capped(&nodes[p], need);
        ranked.sort_by(|&a, &b| cover(b).total_cmp(&cover(a)).then(nodes[a].id.cmp(&nodes[b].id)));
        for k in 2..=n {
            if feasible(ranked[..k].iter().map(|&p| &nodes[p]), need) {
                let mut chosen = ranked[..k].to_vec();
                chosen.sort_unstable();
                split(nodes, chosen.into_iter(), need, out);
                return true;
            }
        }
        false
    }
}

/// True when the lowest node that is in exactly one of the two sets is in `a`.
fn lower_ids(a: u32, b: u32) -> bool {
    let d = a ^ b;
    d != 0 && a & d & d.wrapping_neg() != 0
}

/// Whether the nodes can hold `need` together, every node hosting at least one pinned CPU or
/// page of the guest (or, for a GPU-only request, at least one GPU).
fn feasible<'a>(set: impl Iterator<Item = &'a NodeFree>, need: Needs) -> bool {
    let anchored = need.cpus > 0 || need.pages > 0;
    let (mut cpus, mut pages, mut gpus) = (0u64, 0u64, 0u64);
    let (mut cpu_only, mut page_only, mut k) = (0u64, 0u64, 0u64);
    for n in set {
        cpus = cpus.saturating_add(n.free_c);
        pages = pages.saturating_add(n.free_p);
        gpus = gpus.saturating_add(n.free_g);
        k += 1;
        if anchored {
            match (need.cpus > 0 && n.free_c > 0, need.pages > 0 && n.free_p > 0) {
                (false, false) => return false,
                (true, false) => cpu_only += 1,
                (false, true) => page_only += 1,
                (true, true) => {}
            }
        } else if n.free_g == 0 {
            return false;
        }
    }
    let enough = cpus >= need.cpus && pages >= need.pages && gpus >= need.gpus;
    // Each node needs one unit of something it has (Hall's condition for that assignment).
    let spreadable = if anchored {
        cpu_only <= need.cpus && page_only <= need.pages && k <= need.cpus.saturating_add(need.pages)
    } else {
        k <= need.gpus
    };
    enough && spreadable
}

/// How much the nodes hold in all, in units of the request, summed over the resources needed.
fn freeness<'a>(set: impl Iterator<Item = &'a NodeFree>, need: Needs) -> f64 {
    let (mut cpus, mut pages, mut gpus) = (0u64, 0u64, 0u64);
    for n in set {
        cpus = cpus.saturating_add(n.free_c);
        pages = pages.saturating_add(n.free_p);
        gpus = gpus.saturating_add(n.free_g);
    }
    ratio(cpus, need.cpus) + ratio(pages, need.pages) + ratio(gpus, need.gpus)
}

/// How much of the request one node covers (each resource counted up to the need).
fn freeness_capped(n: &NodeFree, need: Needs) -> f64 {
    ratio(n.free_c.min(need.cpus), need.cpus)
        + ratio(n.free_p.min(need.pages), need.pages)
        + ratio(n.free_g.min(need.gpus), need.gpus)
}

fn ratio(have: u64, need: u64) -> f64 {
    if need == 0 { 0.0 } else { have as f64 / need as f64 }
}

/// Splits `need` over the chosen node positions (ascending). Assumes `feasible`.
fn split(nodes: &[NodeFree], chosen: impl Iterator<Item = usize>, need: Needs, out: &mut Vec<Share>) {
    out.clear();
    out.extend(chosen.map(|pos| Share { pos, cpus: 0, pages: 0, gpus: 0 }));
    if need.cpus > 0 || need.pages > 0 {
        // First one unit per node, so every node hosts part of the guest.
        let cpu_only = out.iter().filter(|s| need.cpus > 0 && nodes[s.pos].free_c > 0 && nodes[s.pos].free_p == 0);
        let mut flexible_cpus = need.cpus.saturating_sub(cpu_only.count() as u64);
        for s in out.iter_mut() {
            let n = &nodes[s.pos];
            let has_c = need.cpus > 0 && n.free_c > 0;
            let has_p = need.pages > 0 && n.free_p > 0;
            match (has_c, has_p) {
                (true, false) => s.cpus = 1,
                (false, true) => s.pages = 1,
                (true, true) if flexible_cpus > 0 => {
                    s.cpus = 1;
                    flexible_cpus -= 1;
                }
                (true, true) => s.pages = 1,
                (false, false) => {}
            }
        }
        // Then fill up, lowest node first.
        let mut left_c = need.cpus.saturating_sub(out.iter().map(|s| s.cpus).sum());
        let mut left_p = need.pages.saturating_sub(out.iter().map(|s| s.pages).sum());
        for s in out.iter_mut() {
            let n = &nodes[s.pos];
            let c = (n.free_c - s.cpus).min(left_c);
            s.cpus += c;
            left_c -= c;
            let p = (n.free_p - s.pages).min(left_p);
            s.pages += p;
            left_p -= p;
        }
    }
    let mut left_g = need.gpus;
    for s in out.iter_mut() {
        let g = nodes[s.pos].free_g.min(left_g);
        s.gpus = g;
        left_g -= g;
    }
}

/// Writes the concrete NUMA part of `claim` for the shares [`select`] chose on `h`:
/// `numa_nodes` ascending, pinned CPUs in vCPU order, hugepages per node, GPU addresses.
pub(crate) fn materialize(
    h: &HostView,
    nodes: &[NodeFree],
    shares: &[Share],
    page_size: u64,
    gpu_class: &str,
    claim: &mut Claim,
) {
    for s in shares {
        let Some(view) = nodes.get(s.pos).and_then(|n| h.numa.get(n.idx)) else { continue };
        claim.numa_nodes.push(view.id);
        if s.cpus > 0 {
            pick_cpus(view, &h.used.pinned_cpus, s.cpus, &mut claim.cpus);
        }
        if s.pages > 0 {
            claim.hugepages.push(HugepageClaim { numa_node: view.id, size_mib: page_size, pages: s.pages });
        }
        if s.gpus > 0 {
            let mut free: Vec<&str> = view
                .gpus
                .iter()
                .filter(|g| g.class == gpu_class && !h.used.gpus.contains(g.address.as_str()))
                .map(|g| g.address.as_str())
                .collect();
            free.sort_unstable();
            claim.gpus.extend(free.into_iter().take(s.gpus as usize).map(str::to_string));
        }
    }
    claim.numa_nodes.sort_unstable();
}

/// Picks `n` free dedicated CPUs of `view`: whole free cores (sibling groups whose threads
/// are all free) that fit, lowest first, so a vCPU pair shares a core; then free threads of
/// cores already partly used (keeping whole cores whole); then any free CPU, lowest first.
fn pick_cpus(view: &NumaView, pinned: &BTreeSet<u32>, n: u64, out: &mut Vec<u32>) {
    let is_dedicated = |c: &u32| view.dedicated_cpus.contains(c);
    let free = |c: &u32| !pinned.contains(c);
    let mut grouped = BTreeSet::new();
    let mut cores: Vec<Vec<u32>> = Vec::new();
    for group in &view.siblings {
        let mut g: Vec<u32> = group.iter().copied().filter(|c| is_dedicated(c) && !grouped.contains(c)).collect();
        g.sort_unstable();
        g.dedup();
        grouped.extend(g.iter().copied());
        if !g.is_empty() {
            cores.push(g);
        }
    }
    cores.extend(view.dedicated_cpus.iter().filter(|c| !grouped.contains(*c)).map(|&c| vec![c]));
    cores.sort_by_key(|g| g[0]);
    cores.dedup();

    let mut rem = n;
    let mut taken = BTreeSet::new();
    for g in cores.iter().filter(|g| g.iter().all(free)) {
        if rem == 0 {
            return;
        }
        if g.len() as u64 <= rem {
            out.extend(g.iter().copied());
            taken.extend(g.iter().copied());
            rem -= g.len() as u64;
        }
    }
    let mut orphans: Vec<u32> =
        cores.iter().filter(|g| !g.iter().all(free)).flat_map(|g| g.iter().copied().filter(free)).collect();
    orphans.sort_unstable();
    for c in orphans {
        if rem == 0 {
            return;
        }
        out.push(c);
        taken.insert(c);
        rem -= 1;
    }
    let mut rest: Vec<u32> = view.dedicated_cpus.iter().copied().filter(|c| free(c) && !taken.contains(c)).collect();
    rest.sort_unstable();
    rest.dedup();
    for c in rest.into_iter().take(rem as usize) {
        out.push(c);
    }
}
