//! sqlease: a MySQL wire-protocol proxy that gives applications one fixed
//! local credential and, behind it, logs in to MySQL with short-lived users
//! from HashiCorp Vault, rotating them behind live client connections.
//!
//! Module map (dependencies point one way: protocol ← net ← frontend/backend
//! ← session ← server; vault ← lease ← server):
//!
//! | module | job |
//! |---|---|
//! | [`config`] | typed, validated configuration (all problems at once) |
//! | [`secret`] | secrets as a type; inline / env / file sources |
//! | [`auth`] | local password verifiers (native and caching_sha2) |
//! | [`protocol`] | sans-IO codec: framing, packets, commands, response state machine, trackers |
//! | [`net`] | TCP / unix / TLS streams and packet I/O |
//! | [`frontend`] | plays the server toward the application: greeting, TLS, local auth |
//! | [`backend`] | opens and authenticates upstream connections |
//! | [`session`] | per-client relay, session-state tracker, rotation swaps |
//! | [`credentials`] | credential generations published to sessions |
//! | [`vault`] | Vault HTTP client |
//! | [`lease`] | lease/token schedule (pure) and the manager publishing generations |
//! | [`server`] | listeners, the upstream probe, process wiring |
//! | [`admin`] | health, readiness, Prometheus metrics, sessions, rotate-now |
//! | [`app`] | starting, reloading (SIGHUP) and stopping a whole process |

#![forbid(unsafe_code)]

pub mod admin;
pub mod app;
pub mod auth;
pub mod backend;
pub mod config;
pub mod credentials;
pub mod frontend;
pub mod lease;
pub mod net;
pub mod protocol;
pub mod secret;
pub mod server;
pub mod session;
pub mod vault;
