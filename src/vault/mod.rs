//! Vault HTTP client (design D10): logins, database credentials, leases
//! and the token, on reqwest + serde + secrecy.
//!
//! Written by hand rather than on `vaultrs`, which drops the lease id of
//! database credentials and has no `sys/leases` API. The client is
//! stateless about tokens (every call takes one), single-shot (the lease
//! manager owns retries and backoff), and never lets a secret reach
//! `Debug`, `Display`, an error or a log line.
//!
//! | file | job |
//! |---|---|
//! | `client.rs` | HTTP, TLS (ring provider), envelopes, one method per endpoint |
//! | `auth.rs` | AppRole / token / Kubernetes login, secret resolution |
//! | `types.rs` | response bodies (secrets deserialized into `SecretString`) |
//! | `error.rs` | [`VaultError`]: endpoint, status, Vault's text, retryability |

mod auth;
mod client;
mod error;
mod types;

pub use auth::{Authenticator, Login};
pub use client::{ClientSettings, EndpointStats, RequestStats, VaultClient, REQUEST_BUCKETS_SECS};
pub use error::VaultError;
pub use types::{
    AuthInfo, DynamicCreds, LeaseLookup, LeaseRenewal, StaticCreds, TokenGrant, TokenLookup,
    TTL_CAPPED_MARKER,
};
