//! Semantic validation: every problem at once, each with its key path.

use std::collections::BTreeSet;
use std::net::SocketAddr;

use super::{ClientTlsMode, Config, CredentialConfig, UpstreamTlsMode, VaultAuthConfig};
use crate::auth::PasswordVerifier;
use crate::secret::{ExposeSecret, SecretSource};

/// One problem in a configuration, located by key path (and line when known).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Problem {
    /// Dotted key path, e.g. `listener[0].upstream.address`.
    pub key: String,
    /// Line number (1-based) when known.
    pub line: Option<usize>,
    /// What is wrong and what to do.
    pub message: String,
}

impl Problem {
    pub fn new(key: &str, message: impl Into<String>) -> Problem {
        Problem {
            key: key.to_string(),
            line: None,
            message: message.into(),
        }
    }

    pub(super) fn from_toml(e: &toml::de::Error, text: &str) -> Problem {
        let line = e
            .span()
            .map(|s| text[..s.start.min(text.len())].matches('\n').count() + 1);
        Problem {
            key: String::new(),
            line,
            message: e.message().to_string(),
        }
    }
}

impl std::fmt::Display for Problem {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match (&self.line, self.key.is_empty()) {
            (Some(l), true) => write!(f, "line {l}: {}", self.message),
            (Some(l), false) => write!(f, "{} (line {l}): {}", self.key, self.message),
            (None, true) => write!(f, "{}", self.message),
            (None, false) => write!(f, "{}: {}", self.key, self.message),
        }
    }
}

fn check_secret(key: &str, s: &SecretSource, resolve: bool, problems: &mut Vec<Problem>) {
    if !resolve && !matches!(s, SecretSource::Inline(_)) {
        return;
    }
    if let Err(e) = s.resolve() {
        problems.push(Problem::new(key, e.to_string()));
    }
}

/// A local user's password: as [`check_secret`], and never empty (the
/// frontend refuses empty passwords, so such a user could never log in).
fn check_local_password(key: &str, s: &SecretSource, resolve: bool, problems: &mut Vec<Problem>) {
    if !resolve && !matches!(s, SecretSource::Inline(_)) {
        return;
    }
    match s.resolve() {
        Err(e) => problems.push(Problem::new(key, e.to_string())),
        Ok(pw) if pw.expose_secret().is_empty() => problems.push(Problem::new(
            key,
            "must not be empty: clients can never log in with an empty password",
        )),
        Ok(_) => {}
    }
}

pub(super) fn validate(cfg: &Config, resolve: bool, problems: &mut Vec<Problem>) {
    if cfg.listeners.is_empty() {
        problems.push(Problem::new(
            "listener",
            "no [[listener]] defined: add at least one",
        ));
    }
    let mut names = BTreeSet::new();
    let mut binds = BTreeSet::new();
    for (i, l) in cfg.listeners.iter().enumerate() {
        let p = format!("listener[{i}]");
        if l.name.trim().is_empty() {
            problems.push(Problem::new(&format!("{p}.name"), "must not be empty"));
        } else if !names.insert(l.name.clone()) {
            problems.push(Problem::new(
                &format!("{p}.name"),
                format!("duplicate listener name {:?}", l.name),
            ));
        }
        match l.bind.parse::<SocketAddr>() {
            Ok(a) => {
                if !binds.insert(a) {
                    problems.push(Problem::new(
                        &format!("{p}.bind"),
                        format!("{a} is already used by another listener"),
                    ));
                }
            }
            Err(_) => problems.push(Problem::new(
                &format!("{p}.bind"),
                format!(
                    "{:?} is not an address: write ip:port, e.g. \"127.0.0.1:3307\"",
                    l.bind
                ),
            )),
        }
        if l.users.is_empty() {
            problems.push(Problem::new(
                &format!("{p}.users"),
                "no local user: add [[listener.users]] with name and password",
            ));
        }
        let mut unames = BTreeSet::new();
        for (j, u) in l.users.iter().enumerate() {
            let up = format!("{p}.users[{j}]");
            if u.name.is_empty() {
                problems.push(Problem::new(&format!("{up}.name"), "must not be empty"));
            } else if !unames.insert(u.name.clone()) {
                problems.push(Problem::new(
                    &format!("{up}.name"),
                    format!("duplicate user {:?}", u.name),
                ));
            }
            match (&u.password, &u.password_hash) {
                (Some(_), Some(_)) => problems.push(Problem::new(
                    &up,
                    "set either password or password_hash, not both",
                )),
                (None, None) => problems.push(Problem::new(
                    &up,
                    "set password (inline, { env = .. } or { file = .. }) or password_hash (from `sqlease hash-password`)",
                )),
                (Some(s), None) => {
                    check_local_password(&format!("{up}.password"), s, resolve, problems)
                }
                (None, Some(h)) => {
                    if PasswordVerifier::parse(h).is_none() {
                        problems.push(Problem::new(
                            &format!("{up}.password_hash"),
                            "not a verifier printed by `sqlease hash-password`",
                        ));
                    }
                }
            }
        }
        if l.tls.mode != ClientTlsMode::Disabled {
            for (k, v) in [
                ("cert_file", &l.tls.cert_file),
                ("key_file", &l.tls.key_file),
            ] {
                match v {
                    None => problems.push(Problem::new(
                        &format!("{p}.tls.{k}"),
                        format!(
                            "required when tls.mode is \"{}\"",
                            format!("{:?}", l.tls.mode).to_lowercase()
                        ),
                    )),
                    Some(f) if !f.is_file() => problems.push(Problem::new(
                        &format!("{p}.tls.{k}"),
                        format!("{} does not exist", f.display()),
                    )),
                    _ => {}
                }
            }
        }
        if l.max_connections == 0 {
            problems.push(Problem::new(
                &format!("{p}.max_connections"),
                "must be at least 1",
            ));
        }
        if l.max_allowed_packet < 1024 {
            problems.push(Problem::new(
                &format!("{p}.max_allowed_packet"),
                "must be at least 1024 bytes",
            ));
        }
        let u = &l.upstream;
        if crate::net::UpstreamAddr::parse(&u.address).is_none() {
            problems.push(Problem::new(
                &format!("{p}.upstream.address"),
                format!("{:?} is not host:port or unix:/path", u.address),
            ));
        }
        if !cfg.credentials.contains_key(&u.credentials) {
            problems.push(Problem::new(
                &format!("{p}.upstream.credentials"),
                format!(
                    "no [credentials.{}] section; defined: {:?}",
                    u.credentials,
                    cfg.credentials.keys().collect::<Vec<_>>()
                ),
            ));
        }
        if matches!(
            u.tls,
            UpstreamTlsMode::VerifyCa | UpstreamTlsMode::VerifyIdentity
        ) {
            if let Some(f) = &u.ca_file {
                if !f.is_file() {
                    problems.push(Problem::new(
                        &format!("{p}.upstream.ca_file"),
                        format!("{} does not exist", f.display()),
                    ));
                }
            }
        }
    }
    let mut needs_vault = false;
    for (name, c) in &cfg.credentials {
        let p = format!("credentials.{name}");
        match c {
            CredentialConfig::Static { username, password } => {
                if username.is_empty() {
                    problems.push(Problem::new(&format!("{p}.username"), "must not be empty"));
                }
                check_secret(&format!("{p}.password"), password, resolve, problems);
            }
            CredentialConfig::Vault { role, mount, .. } => {
                needs_vault = true;
                if role.is_empty() {
                    problems.push(Problem::new(&format!("{p}.role"), "must not be empty"));
                }
                if mount.is_empty() || mount.starts_with('/') {
                    problems.push(Problem::new(
                        &format!("{p}.mount"),
                        "a mount path such as \"database\" (no leading slash)",
                    ));
                }
            }
        }
    }
    match (&cfg.vault, needs_vault) {
        (None, true) => problems.push(Problem::new(
            "vault",
            "a credential source has type = \"vault\" but there is no [vault] section",
        )),
        (Some(v), _) => validate_vault(v, resolve, problems),
        _ => {}
    }
    if cfg.rotation.prewarm_concurrency == 0 {
        problems.push(Problem::new(
            "rotation.prewarm_concurrency",
            "must be at least 1",
        ));
    }
    if let Some(a) = &cfg.admin {
        match a.bind.parse::<SocketAddr>() {
            Ok(addr) => {
                if !addr.ip().is_loopback() && a.token.is_none() {
                    problems.push(Problem::new(
                        "admin.bind",
                        "a non-loopback admin address needs admin.token",
                    ));
                }
            }
            Err(_) => problems.push(Problem::new(
                "admin.bind",
                format!("{:?} is not ip:port", a.bind),
            )),
        }
        if let Some(t) = &a.token {
            check_secret("admin.token", t, resolve, problems);
        }
    }
    if cfg.shutdown.drain_timeout > super::MAX_DRAIN_TIMEOUT {
        problems.push(Problem::new(
            "shutdown.drain_timeout",
            "at most \"1h\": orchestrators kill a process that takes longer to stop",
        ));
    }
    if tracing_subscriber::EnvFilter::try_new(&cfg.log.level).is_err() {
        problems.push(Problem::new(
            "log.level",
            format!("{:?} is not a log filter such as \"info\"", cfg.log.level),
        ));
    }
}

fn validate_vault(v: &super::VaultConfig, resolve: bool, problems: &mut Vec<Problem>) {
    let addr = v
        .address
        .clone()
        .or_else(|| std::env::var("VAULT_ADDR").ok());
    match addr {
        None if !resolve => {}
        None => problems.push(Problem::new(
            "vault.address",
            "not set: set vault.address or VAULT_ADDR",
        )),
        Some(a) if !(a.starts_with("http://") || a.starts_with("https://")) => {
            problems.push(Problem::new(
                "vault.address",
                format!("{a:?} must start with http:// or https://"),
            ))
        }
        _ => {}
    }
    if !resolve {
        return;
    }
    match &v.auth {
        VaultAuthConfig::Approle {
            role_id, secret_id, ..
        } => {
            let have = |s: &Option<SecretSource>, envs: [&str; 2]| {
                s.is_some() || envs.iter().any(|e| std::env::var(e).is_ok())
            };
            if !have(role_id, ["VLT_ROLE_ID", "VAULT_ROLE_ID"]) {
                problems.push(Problem::new(
                    "vault.auth.role_id",
                    "not set: set it here or export VLT_ROLE_ID / VAULT_ROLE_ID",
                ));
            }
            if !have(secret_id, ["VLT_SECRET_ID", "VAULT_SECRET_ID"]) {
                problems.push(Problem::new(
                    "vault.auth.secret_id",
                    "not set: set it here or export VLT_SECRET_ID / VAULT_SECRET_ID",
                ));
            }
        }
        VaultAuthConfig::Token { token } => {
            if token.is_none() && std::env::var("VAULT_TOKEN").is_err() {
                problems.push(Problem::new(
                    "vault.auth.token",
                    "not set: set it here (e.g. { file = \"/vault/agent/token\" }) or export VAULT_TOKEN",
                ));
            }
        }
        VaultAuthConfig::Kubernetes { role, .. } => {
            if role.is_empty() {
                problems.push(Problem::new("vault.auth.role", "must not be empty"));
            }
        }
    }
}
