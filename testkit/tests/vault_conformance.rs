//! Conformance tests for the Vault stand-in: one test per numbered statement of
//! the conformance checklist in the Vault contract (docs/vault-contract.md §10),
//! against a real private MariaDB.

mod common;

#[path = "vault_conformance/envelope.rs"]
mod envelope;

#[path = "vault_conformance/approle.rs"]
mod approle;

#[path = "vault_conformance/token.rs"]
mod token;

#[path = "vault_conformance/database.rs"]
mod database;

#[path = "vault_conformance/leases.rs"]
mod leases;

#[path = "vault_conformance/misc.rs"]
mod misc;
