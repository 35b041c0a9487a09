//! Test kit for sqlease: a private MariaDB launcher, the Vault stand-in and
//! shared helpers used by the integration tests, the demo and the benchmarks.
//!
//! Nothing here is part of the product binary.

pub mod mariadb;
pub mod vault;
