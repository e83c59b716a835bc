//! Counts of what this process's committed transactions wrote, for the server's
//! `/metrics`: usage records by meter. A transaction counts what it queues and adds it to
//! the store's tally only when it commits, so a rolled-back write is never counted.

use plinth_api::Meter;
use std::sync::atomic::{AtomicU64, Ordering};

/// Usage records written, per meter (in [`Meter::ALL`] order), since the store opened.
#[derive(Debug, Default)]
pub(crate) struct Tally {
    ledger: [AtomicU64; Meter::ALL.len()],
}

/// What one transaction wrote so far (added to the [`Tally`] at commit).
#[derive(Debug, Default)]
pub(crate) struct Pending {
    ledger: [u64; Meter::ALL.len()],
}

fn index(m: Meter) -> usize {
    Meter::ALL.iter().position(|x| *x == m).unwrap_or(0)
}

impl Pending {
    pub fn ledger(&mut self, m: Meter, n: u64) {
        self.ledger[index(m)] += n;
    }
}

impl Tally {
    /// Adds a committed transaction's counts.
    pub fn add(&self, p: &Pending) {
        for (total, n) in self.ledger.iter().zip(p.ledger) {
            if n > 0 {
                total.fetch_add(n, Ordering::Relaxed);
            }
        }
    }

    /// Usage records written, by meter.
    pub fn ledger(&self) -> Vec<(Meter, u64)> {
        Meter::ALL.iter().zip(&self.ledger).map(|(m, n)| (*m, n.load(Ordering::Relaxed))).collect()
    }
}
