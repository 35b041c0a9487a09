//! Lease schedule and manager (design D6).
//!
//! | file | job |
//! |---|---|
//! | `schedule.rs` | pure `next_action(state, now, policy)`: renew, rotate, re-login, revoke |

pub mod schedule;

pub use schedule::{
    next_action, Action, GenSource, GenState, LeaseState, Policy, Term, TokenState,
};
