//! Typed, documented configuration.
//!
//! Loading is three steps, all before any port is bound:
//! 1. parse the TOML (syntax and type errors carry line numbers),
//! 2. collect every unknown key (all of them, with their key paths),
//! 3. validate every field and cross-reference (all problems at once).
//!
//! `sqlease check-config` prints the whole list; `sqlease run` refuses to
//! start while it is not empty. Every key is documented in
//! `config/sqlease.example.toml`.

mod validate;

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::Deserialize;

use crate::secret::SecretSource;

pub use validate::Problem;

/// Default port of a listener when `bind` names none.
pub const DEFAULT_PORT: u16 = 3307;
/// Default bind address of a listener.
pub const DEFAULT_BIND: &str = "127.0.0.1:3307";
/// Default time allowed for a client to finish the handshake.
pub const DEFAULT_HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);
/// Default per-listener limit of client connections.
pub const DEFAULT_MAX_CONNECTIONS: u32 = 10_000;
/// Default delay before a failed login is answered (grows with repeated failures).
pub const DEFAULT_AUTH_FAILURE_DELAY: Duration = Duration::from_millis(200);
/// Default upstream connect timeout.
pub const DEFAULT_CONNECT_TIMEOUT: Duration = Duration::from_secs(5);
/// Default number of ready upstream connections per listener.
pub const DEFAULT_IDLE_POOL: usize = 8;
/// Default largest packet accepted from a client.
pub const DEFAULT_MAX_ALLOWED_PACKET: u32 = 64 * 1024 * 1024;
/// Default time in-flight commands get to finish at shutdown.
pub const DEFAULT_DRAIN_TIMEOUT: Duration = Duration::from_secs(10);
/// Longest accepted `shutdown.drain_timeout`.
pub const MAX_DRAIN_TIMEOUT: Duration = Duration::from_secs(3600);
/// Default admin listener address.
pub const DEFAULT_ADMIN_BIND: &str = "127.0.0.1:9307";

/// The whole configuration file.
#[derive(Debug, Deserialize)]
pub struct Config {
    /// One or more listeners (`[[listener]]`).
    #[serde(default, rename = "listener")]
    pub listeners: Vec<ListenerConfig>,
    /// Named credential sources (`[credentials.<name>]`).
    #[serde(default)]
    pub credentials: BTreeMap<String, CredentialConfig>,
    /// How to reach Vault (only needed by `type = "vault"` credential sources).
    #[serde(default)]
    pub vault: Option<VaultConfig>,
    /// Logging.
    #[serde(default)]
    pub log: LogConfig,
    /// Rotation policy shared by all listeners.
    #[serde(default)]
    pub rotation: RotationConfig,
    /// Admin HTTP listener.
    #[serde(default)]
    pub admin: Option<AdminConfig>,
    /// What SIGTERM / SIGINT do.
    #[serde(default)]
    pub shutdown: ShutdownConfig,
}

/// `[shutdown]`: stopping the process.
#[derive(Debug, Deserialize)]
pub struct ShutdownConfig {
    /// Time in-flight commands get to finish after SIGTERM/SIGINT before the
    /// remaining sessions are closed, e.g. "10s" (idle sessions close at once).
    #[serde(default = "default_drain_timeout", with = "humantime_serde_compat")]
    pub drain_timeout: Duration,
}

impl Default for ShutdownConfig {
    fn default() -> Self {
        ShutdownConfig {
            drain_timeout: DEFAULT_DRAIN_TIMEOUT,
        }
    }
}

/// `[[listener]]`: one address the application connects to.
#[derive(Debug, Deserialize)]
pub struct ListenerConfig {
    /// Name used in logs and metrics.
    pub name: String,
    /// TCP address to bind; default `127.0.0.1:3307`.
    #[serde(default = "default_bind")]
    pub bind: String,
    /// Optional unix socket path to listen on as well.
    #[serde(default)]
    pub unix_socket: Option<PathBuf>,
    /// Local users the application may log in as.
    #[serde(default)]
    pub users: Vec<LocalUserConfig>,
    /// Client-side TLS.
    #[serde(default)]
    pub tls: ClientTlsConfig,
    /// Where and how to reach MySQL.
    pub upstream: UpstreamConfig,
    /// Most client connections at once; more are answered with error 1040.
    #[serde(default = "default_max_connections")]
    pub max_connections: u32,
    /// Time allowed to finish the handshake, e.g. "10s".
    #[serde(default = "default_handshake_timeout", with = "humantime_serde_compat")]
    pub handshake_timeout: Duration,
    /// Base delay before answering a failed login, e.g. "200ms".
    #[serde(
        default = "default_auth_failure_delay",
        with = "humantime_serde_compat"
    )]
    pub auth_failure_delay: Duration,
    /// Authentication plugin announced in the greeting.
    #[serde(default)]
    pub default_auth_plugin: AuthPluginName,
    /// Largest packet accepted from a client, in bytes.
    #[serde(default = "default_max_allowed_packet")]
    pub max_allowed_packet: u32,
}

/// `[[listener.users]]`: a fixed local credential.
#[derive(Debug, Deserialize)]
pub struct LocalUserConfig {
    /// User name the application sends.
    pub name: String,
    /// The password (inline, `{ env = ... }` or `{ file = ... }`).
    #[serde(default)]
    pub password: Option<SecretSource>,
    /// Or: a verifier printed by `sqlease hash-password`.
    #[serde(default)]
    pub password_hash: Option<String>,
}

/// Authentication plugins sqlease can verify.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Default)]
#[serde(rename_all = "snake_case")]
pub enum AuthPluginName {
    /// SHA1 challenge-response (MariaDB and MySQL 5.x clients' default).
    #[default]
    MysqlNativePassword,
    /// SHA256 challenge-response (MySQL 8 clients' default).
    CachingSha2Password,
}

/// `[listener.tls]`: TLS toward the application.
#[derive(Debug, Deserialize, Default)]
pub struct ClientTlsConfig {
    /// `disabled` (default), `optional` or `required`.
    #[serde(default)]
    pub mode: ClientTlsMode,
    /// PEM certificate chain.
    #[serde(default)]
    pub cert_file: Option<PathBuf>,
    /// PEM private key.
    #[serde(default)]
    pub key_file: Option<PathBuf>,
}

/// Client TLS modes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Default)]
#[serde(rename_all = "snake_case")]
pub enum ClientTlsMode {
    /// TLS is not offered.
    #[default]
    Disabled,
    /// TLS is offered; plain connections are accepted too.
    Optional,
    /// Plain connections are refused (error 3159).
    Required,
}

/// `[listener.upstream]`: the MySQL server.
#[derive(Debug, Deserialize)]
pub struct UpstreamConfig {
    /// `host:port`, or `unix:/path/to/mysqld.sock`.
    pub address: String,
    /// Name of a `[credentials.<name>]` source.
    pub credentials: String,
    /// TLS toward MySQL.
    #[serde(default)]
    pub tls: UpstreamTlsMode,
    /// CA bundle for verify_ca / verify_identity (default: web PKI roots).
    #[serde(default)]
    pub ca_file: Option<PathBuf>,
    /// Host name to verify (default: the host part of `address`).
    #[serde(default)]
    pub server_name: Option<String>,
    /// Time allowed to connect and authenticate.
    #[serde(default = "default_connect_timeout", with = "humantime_serde_compat")]
    pub connect_timeout: Duration,
    /// Authenticated upstream connections kept ready for new client
    /// sessions (0 disables).
    #[serde(default = "default_idle_pool")]
    pub idle_pool: usize,
}

/// Upstream TLS modes, named as MySQL's `--ssl-mode`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Default)]
#[serde(rename_all = "snake_case")]
pub enum UpstreamTlsMode {
    /// Never use TLS.
    Disabled,
    /// Use TLS when the server offers it, without verifying it.
    #[default]
    Preferred,
    /// Require TLS, without verifying the certificate.
    Required,
    /// Require TLS and a certificate signed by a trusted CA.
    VerifyCa,
    /// As verify_ca, and the certificate must name the server.
    VerifyIdentity,
}

/// `[credentials.<name>]`: where upstream credentials come from.
#[derive(Debug, Deserialize)]
// Internally tagged enums go through serde's buffered content, which
// serde_ignored cannot see into: unknown keys must be refused here instead.
#[serde(tag = "type", rename_all = "snake_case", deny_unknown_fields)]
pub enum CredentialConfig {
    /// A fixed MySQL user (for tests and migration).
    Static {
        /// MySQL user.
        username: String,
        /// Its password.
        password: SecretSource,
    },
    /// Vault's database secrets engine.
    Vault {
        /// Role name.
        role: String,
        /// `dynamic` (database/creds) or `static` (database/static-creds).
        #[serde(default)]
        kind: VaultRoleKind,
        /// Mount path of the database secrets engine.
        #[serde(default = "default_db_mount")]
        mount: String,
    },
}

/// Dynamic or static Vault database role.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Default)]
#[serde(rename_all = "snake_case")]
pub enum VaultRoleKind {
    /// `database/creds/<role>`: a new MySQL user per lease.
    #[default]
    Dynamic,
    /// `database/static-creds/<role>`: one MySQL user whose password Vault rotates.
    Static,
}

/// `[vault]`: the Vault server and how sqlease logs in.
#[derive(Debug, Deserialize)]
pub struct VaultConfig {
    /// Vault address; default from VAULT_ADDR.
    #[serde(default)]
    pub address: Option<String>,
    /// CA bundle; default from VAULT_CACERT.
    #[serde(default)]
    pub ca_file: Option<PathBuf>,
    /// Enterprise namespace; default from VAULT_NAMESPACE.
    #[serde(default)]
    pub namespace: Option<String>,
    /// Timeout of one Vault request.
    #[serde(default = "default_vault_timeout", with = "humantime_serde_compat")]
    pub request_timeout: Duration,
    /// Login method.
    pub auth: VaultAuthConfig,
    /// Revoke the token on shutdown.
    #[serde(default = "default_true")]
    pub revoke_token_on_shutdown: bool,
}

/// `[vault.auth]`: login method.
#[derive(Debug, Deserialize)]
// Internally tagged: unknown keys refused here (see CredentialConfig).
#[serde(tag = "method", rename_all = "snake_case", deny_unknown_fields)]
pub enum VaultAuthConfig {
    /// AppRole.
    Approle {
        /// Mount path of the AppRole method.
        #[serde(default = "default_approle_mount")]
        mount: String,
        /// role_id; default from VLT_ROLE_ID or VAULT_ROLE_ID.
        #[serde(default)]
        role_id: Option<SecretSource>,
        /// secret_id; default from VLT_SECRET_ID or VAULT_SECRET_ID.
        #[serde(default)]
        secret_id: Option<SecretSource>,
        /// The secret_id is a response-wrapping token to unwrap first.
        #[serde(default)]
        secret_id_wrapped: bool,
    },
    /// A token (VAULT_TOKEN, or a file such as a Vault Agent sink, re-read when it changes).
    Token {
        /// The token; default from VAULT_TOKEN.
        #[serde(default)]
        token: Option<SecretSource>,
    },
    /// Kubernetes service-account login.
    Kubernetes {
        /// Mount path of the Kubernetes method.
        #[serde(default = "default_kubernetes_mount")]
        mount: String,
        /// Vault role.
        role: String,
        /// Service-account JWT file.
        #[serde(default = "default_jwt_path")]
        jwt_file: PathBuf,
    },
}

/// `[rotation]`: how sessions move to new credentials.
#[derive(Debug, Deserialize)]
pub struct RotationConfig {
    /// Start the next generation this long before the current one's deadline.
    #[serde(default = "default_lead_time", with = "humantime_serde_compat")]
    pub lead_time: Duration,
    /// What happens to a session still pinned at its generation's hard deadline.
    #[serde(default)]
    pub deadline_policy: DeadlinePolicy,
    /// Most upstream connections opened at once while pre-warming a rotation.
    #[serde(default = "default_prewarm_concurrency")]
    pub prewarm_concurrency: usize,
}

impl Default for RotationConfig {
    fn default() -> Self {
        RotationConfig {
            lead_time: default_lead_time(),
            deadline_policy: DeadlinePolicy::default(),
            prewarm_concurrency: default_prewarm_concurrency(),
        }
    }
}

/// Policy for a session pinned past its generation's hard deadline.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Default)]
#[serde(rename_all = "snake_case")]
pub enum DeadlinePolicy {
    /// Keep the old upstream session and swap as soon as it is clear.
    #[default]
    Keep,
    /// Close the session with a clear error.
    Strict,
}

/// `[log]`.
#[derive(Debug, Deserialize)]
pub struct LogConfig {
    /// `human` or `json`.
    #[serde(default)]
    pub format: LogFormat,
    /// tracing filter, e.g. "info" or "sqlease=debug" (RUST_LOG overrides).
    #[serde(default = "default_log_level")]
    pub level: String,
}

impl Default for LogConfig {
    fn default() -> Self {
        LogConfig {
            format: LogFormat::Human,
            level: default_log_level(),
        }
    }
}

/// Log formats.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Default)]
#[serde(rename_all = "snake_case")]
pub enum LogFormat {
    /// One readable line per event.
    #[default]
    Human,
    /// One JSON object per line.
    Json,
}

/// `[admin]`: health, readiness, metrics.
#[derive(Debug, Deserialize)]
pub struct AdminConfig {
    /// Address; default 127.0.0.1:9307.
    #[serde(default = "default_admin_bind")]
    pub bind: String,
    /// Bearer token required for admin actions (and for a non-loopback bind).
    #[serde(default)]
    pub token: Option<SecretSource>,
}

fn default_bind() -> String {
    DEFAULT_BIND.to_string()
}
fn default_max_connections() -> u32 {
    DEFAULT_MAX_CONNECTIONS
}
fn default_handshake_timeout() -> Duration {
    DEFAULT_HANDSHAKE_TIMEOUT
}
fn default_auth_failure_delay() -> Duration {
    DEFAULT_AUTH_FAILURE_DELAY
}
fn default_connect_timeout() -> Duration {
    DEFAULT_CONNECT_TIMEOUT
}
fn default_max_allowed_packet() -> u32 {
    DEFAULT_MAX_ALLOWED_PACKET
}
fn default_idle_pool() -> usize {
    DEFAULT_IDLE_POOL
}
fn default_db_mount() -> String {
    "database".into()
}
fn default_approle_mount() -> String {
    "approle".into()
}
fn default_kubernetes_mount() -> String {
    "kubernetes".into()
}
fn default_jwt_path() -> PathBuf {
    PathBuf::from("/var/run/secrets/kubernetes.io/serviceaccount/token")
}
fn default_vault_timeout() -> Duration {
    Duration::from_secs(10)
}
fn default_true() -> bool {
    true
}
fn default_lead_time() -> Duration {
    Duration::from_secs(60)
}
fn default_prewarm_concurrency() -> usize {
    16
}
fn default_log_level() -> String {
    "info".into()
}
fn default_admin_bind() -> String {
    DEFAULT_ADMIN_BIND.into()
}
fn default_drain_timeout() -> Duration {
    DEFAULT_DRAIN_TIMEOUT
}

/// Durations written as "10s", "1h30m", "250ms".
mod humantime_serde_compat {
    use std::time::Duration;

    use serde::{Deserialize, Deserializer};

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Duration, D::Error> {
        let s = String::deserialize(d)?;
        humantime::parse_duration(&s).map_err(|e| {
            serde::de::Error::custom(format!(
                "invalid duration {s:?} ({e}); write e.g. \"10s\", \"500ms\" or \"1h\""
            ))
        })
    }
}

/// Everything wrong with a configuration file.
#[derive(Debug)]
pub struct ConfigErrors {
    /// The file that was read.
    pub path: PathBuf,
    /// Every problem found, in file order where known.
    pub problems: Vec<Problem>,
}

impl std::fmt::Display for ConfigErrors {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        writeln!(
            f,
            "{}: {} problem(s) in the configuration:",
            self.path.display(),
            self.problems.len()
        )?;
        for p in &self.problems {
            writeln!(f, "  - {p}")?;
        }
        Ok(())
    }
}

impl std::error::Error for ConfigErrors {}

/// Names an unknown key the way validation names keys (`listener[0].tls.x`,
/// `vault.auth.x`): serde_ignored's own rendering says `listener.0` and puts
/// a `?` for every optional section.
fn key_path(p: &serde_ignored::Path<'_>) -> String {
    use serde_ignored::Path;
    match p {
        Path::Root => String::new(),
        Path::Seq { parent, index } => format!("{}[{index}]", key_path(parent)),
        Path::Map { parent, key } => {
            let head = key_path(parent);
            if head.is_empty() {
                key.clone()
            } else {
                format!("{head}.{key}")
            }
        }
        Path::Some { parent }
        | Path::NewtypeStruct { parent }
        | Path::NewtypeVariant { parent } => key_path(parent),
    }
}

impl Config {
    /// Reads, parses and validates a configuration file, resolving every
    /// secret (env vars and files must be present).
    pub fn load(path: &Path) -> Result<Config, ConfigErrors> {
        Config::load_with(path, true)
    }

    /// As [`load`](Self::load); with `resolve_secrets = false` secrets that
    /// come from env vars or files are not read (for `check-config` in CI).
    pub fn load_with(path: &Path, resolve_secrets: bool) -> Result<Config, ConfigErrors> {
        let text = std::fs::read_to_string(path).map_err(|e| ConfigErrors {
            path: path.to_path_buf(),
            problems: vec![Problem::new("", format!("cannot read the file: {e}"))],
        })?;
        Config::from_toml_with(&text, resolve_secrets).map_err(|problems| ConfigErrors {
            path: path.to_path_buf(),
            problems,
        })
    }

    /// Parses and validates configuration text (resolving secrets).
    pub fn from_toml(text: &str) -> Result<Config, Vec<Problem>> {
        Config::from_toml_with(text, true)
    }

    /// Parses and validates configuration text.
    pub fn from_toml_with(text: &str, resolve_secrets: bool) -> Result<Config, Vec<Problem>> {
        let mut unknown = Vec::new();
        let de = toml::Deserializer::parse(text).map_err(|e| vec![Problem::from_toml(&e, text)])?;
        let cfg: Config = serde_ignored::deserialize(de, |path| {
            unknown.push(Problem::new(
                &key_path(&path),
                "unknown key (check its spelling against config/sqlease.example.toml)",
            ))
        })
        .map_err(|e| vec![Problem::from_toml(&e, text)])?;
        let mut problems = unknown;
        validate::validate(&cfg, resolve_secrets, &mut problems);
        if problems.is_empty() {
            Ok(cfg)
        } else {
            Err(problems)
        }
    }
}
