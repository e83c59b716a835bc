//! Weighing: how hosts that pass every filter are ranked, the tie-break, and the seeded
//! choice among the best N.
//!
//! Ranking, most important first: soft group spread (fewest members in the host's failure
//! domain), NUMA locality (a claim on one node beats a spanning one), then capacity fit (Pack:
//! least free capacity left after the claim; Spread: most), then host id ascending. It filters
//! nothing and never allocates per host.

use super::{Eval, HostView, Prepared, Weigh};
use plinth_api::GroupPolicy;
use std::cmp::Ordering;

/// A host's rank; greater is better.
#[derive(Clone, Copy, Debug)]
pub(crate) struct Score {
    /// Minus the members of a soft-spread group in the host's failure domain (0 otherwise).
    group: i64,
    /// The claim stays on one NUMA node (or needs none).
    local: bool,
    /// Pack: 1 − free fraction after the claim; Spread: the free fraction.
    fit: f64,
}

impl Score {
    fn cmp(&self, other: &Score) -> Ordering {
        self.group.cmp(&other.group).then(self.local.cmp(&other.local)).then(self.fit.total_cmp(&other.fit))
    }
}

/// Scores a host that passed every filter, for the claim `eval` describes.
pub(super) fn score(p: &Prepared<'_>, h: &HostView, eval: &Eval, weigh: Weigh) -> Score {
    let u = &h.used;
    let cpu = if p.dedicated {
        free_after(eval.free_c, p.needs.cpus, eval.total_c)
    } else {
        free_after(h.shared_vcpus.saturating_sub(u.shared_vcpus), p.shared_need, h.shared_vcpus)
    };
    let memory = if p.page_size > 0 {
        free_after(eval.free_p, p.needs.pages, eval.total_p)
    } else {
        free_after(h.memory_mib.saturating_sub(u.memory_mib), p.memory_need, h.memory_mib)
    };
    let free = (cpu + memory) / 2.0;
    let group = match &p.group {
        Some(g) if g.policy == GroupPolicy::Spread => -i64::from(eval.group_members),
        _ => 0,
    };
    Score { group, local: !eval.spans, fit: if weigh == Weigh::Pack { 1.0 - free } else { free } }
}

/// Fraction of `total` still free once `need` more of `free` is taken (0 when there is none).
fn free_after(free: u64, need: u64, total: u64) -> f64 {
    if total == 0 { 0.0 } else { free.saturating_sub(need) as f64 / total as f64 }
}

/// The best `n` hosts seen so far, best first.
pub(crate) struct Top {
    n: usize,
    best: Vec<(Score, usize)>,
}

impl Top {
    /// Keeps the best `randomize_top` (at least 1, at most `hosts`).
    pub(crate) fn new(randomize_top: u32, hosts: usize) -> Top {
        let n = (randomize_top.max(1) as usize).min(hosts.max(1));
        Top { n, best: Vec::with_capacity(n.min(1024)) }
    }

    /// Offers host `idx` with `score`.
    pub(crate) fn offer(&mut self, score: Score, idx: usize, hosts: &[HostView]) {
        let beats = |a: &(Score, usize), b: &(Score, usize)| -> bool {
            match a.0.cmp(&b.0) {
                Ordering::Greater => true,
                Ordering::Less => false,
                Ordering::Equal => (hosts[a.1].id.as_str(), a.1) < (hosts[b.1].id.as_str(), b.1),
            }
        };
        let cand = (score, idx);
        if self.best.len() == self.n {
            match self.best.last() {
                Some(worst) if beats(&cand, worst) => {
                    self.best.pop();
                }
                _ => return,
            }
        }
        let at = self.best.iter().position(|b| beats(&cand, b)).unwrap_or(self.best.len());
        self.best.insert(at, cand);
    }

    /// The chosen host: the best, or one of the best N drawn with xorshift(`seed`).
    pub(crate) fn choose(&self, seed: u64) -> Option<usize> {
        if self.best.len() <= 1 {
            return self.best.first().map(|b| b.1);
        }
        let pick = (xorshift(seed) % self.best.len() as u64) as usize;
        self.best.get(pick).map(|b| b.1)
    }
}

/// One step of xorshift64 from `seed` (mixed by splitmix64 first, so seeds 0, 1, 2 … differ
/// well and the state is never zero).
fn xorshift(seed: u64) -> u64 {
    let mut z = seed.wrapping_add(0x9E37_79B9_7F4A_7C15);
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    let mut x = (z ^ (z >> 31)) | 1;
    x ^= x << 13;
    x ^= x >> 7;
    x ^= x << 17;
    x
}
