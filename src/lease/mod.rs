//! Vault leases: the schedule and the task that follows it (design D3, D6).
//!
//! One task per Vault credential source logs in, obtains credential
//! generations (one lease = one MySQL user), publishes them to the sessions,
//! renews the token and the leases, starts the next generation before the
//! current one's hard deadline, and revokes a retired generation's lease as
//! soon as no upstream connection uses it.
//!
//! | file | job |
//! |---|---|
//! | `schedule.rs` | pure `next_action(state, now, policy)`: renew, rotate, re-login, revoke |
//! | `manager.rs` | the task: runs actions against Vault and publishes generations |
//! | `recovery.rs` | session events, failures and backoff, readiness, shutdown revocations |
//! | `source.rs` | [`start_vault_source`] and the [`VaultSource`] handle (shutdown) |
//! | `stats.rs` | [`LeaseStats`] counters |

mod manager;
mod recovery;
pub mod schedule;
mod source;
mod stats;

pub use schedule::{
    next_action, Action, GenSource, GenState, LeaseState, Policy, Term, TokenState,
};
pub use source::{start_vault_source, start_with_client, VaultSource};
pub use stats::{LeaseStats, LeaseStatsSnapshot};
