//! Counters of one Vault credential source, for metrics and the admin API.

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};

/// Live counters (cheap to read from any thread).
#[derive(Debug, Default)]
pub struct LeaseStats {
    /// Successful Vault logins.
    pub logins: AtomicU64,
    /// Successful token and lease renewals.
    pub renewals: AtomicU64,
    /// Failed Vault calls (of any kind).
    pub failures: AtomicU64,
    /// Generations published.
    pub generations: AtomicU64,
    /// Leases revoked.
    pub revocations: AtomicU64,
    /// Id of the current generation (0 = none yet).
    pub current_generation: AtomicU64,
    /// Whether a usable generation is published.
    pub ready: AtomicBool,
}

/// A copy of the counters at one moment.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct LeaseStatsSnapshot {
    pub logins: u64,
    pub renewals: u64,
    pub failures: u64,
    pub generations: u64,
    pub revocations: u64,
    pub current_generation: u64,
    pub ready: bool,
}

impl LeaseStats {
    pub fn snapshot(&self) -> LeaseStatsSnapshot {
        let l = |a: &AtomicU64| a.load(Ordering::Relaxed);
        LeaseStatsSnapshot {
            logins: l(&self.logins),
            renewals: l(&self.renewals),
            failures: l(&self.failures),
            generations: l(&self.generations),
            revocations: l(&self.revocations),
            current_generation: l(&self.current_generation),
            ready: self.ready.load(Ordering::Relaxed),
        }
    }

    pub(crate) fn bump(counter: &AtomicU64) {
        counter.fetch_add(1, Ordering::Relaxed);
    }
}
