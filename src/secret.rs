//! Secrets as a type.
//!
//! Every password, token and secret id sqlease handles lives in a
//! [`SecretString`]: redacted `Debug`, zeroized on drop, and only readable
//! through an explicit `expose_secret()`. In the configuration a secret can be
//! written inline, or taken from an environment variable or a file, so that
//! the TOML itself need not hold it:
//!
//! ```toml
//! password = "inline (discouraged)"
//! password = { env = "APP_DB_PASSWORD" }
//! password = { file = "/run/secrets/app-db-password" }
//! ```

use std::path::{Path, PathBuf};

pub use secrecy::{ExposeSecret, SecretString};
use serde::Deserialize;

/// Where a secret comes from, as written in the configuration.
#[derive(Clone, Deserialize)]
#[serde(untagged)]
pub enum SecretSource {
    /// The secret itself, inline in the TOML.
    Inline(SecretString),
    /// `{ env = "NAME" }`: read from an environment variable.
    Env {
        /// Name of the environment variable.
        env: String,
    },
    /// `{ file = "/path" }`: read from a file (trailing newline removed).
    File {
        /// Path of the file.
        file: PathBuf,
    },
}

impl std::fmt::Debug for SecretSource {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            SecretSource::Inline(_) => f.write_str("SecretSource::Inline([REDACTED])"),
            SecretSource::Env { env } => write!(f, "SecretSource::Env({env})"),
            SecretSource::File { file } => write!(f, "SecretSource::File({})", file.display()),
        }
    }
}

/// Why a secret could not be resolved. Never contains the secret.
#[derive(Debug, thiserror::Error)]
pub enum SecretError {
    #[error("environment variable {0} is not set")]
    EnvMissing(String),
    #[error("environment variable {0} is empty")]
    EnvEmpty(String),
    #[error("cannot read secret file {path}: {source}")]
    File {
        path: String,
        source: std::io::Error,
    },
    #[error("secret file {0} is empty")]
    FileEmpty(String),
}

impl SecretSource {
    /// Resolves the secret now (env var or file read at call time).
    pub fn resolve(&self) -> Result<SecretString, SecretError> {
        match self {
            SecretSource::Inline(s) => Ok(s.clone()),
            SecretSource::Env { env } => match std::env::var(env) {
                Ok(v) if v.is_empty() => Err(SecretError::EnvEmpty(env.clone())),
                Ok(v) => Ok(SecretString::from(v)),
                Err(_) => Err(SecretError::EnvMissing(env.clone())),
            },
            SecretSource::File { file } => read_secret_file(file),
        }
    }

    /// The file this secret is read from, if any.
    pub fn file(&self) -> Option<&Path> {
        match self {
            SecretSource::File { file } => Some(file),
            _ => None,
        }
    }
}

/// Reads a secret file, trimming one trailing newline (as written by `echo`).
pub fn read_secret_file(path: &Path) -> Result<SecretString, SecretError> {
    let mut s = std::fs::read_to_string(path).map_err(|source| SecretError::File {
        path: path.display().to_string(),
        source,
    })?;
    while s.ends_with('\n') || s.ends_with('\r') {
        s.pop();
    }
    if s.is_empty() {
        return Err(SecretError::FileEmpty(path.display().to_string()));
    }
    Ok(SecretString::from(s))
}

/// True when a file holding secrets can be read by group or others.
pub fn readable_by_others(path: &Path) -> bool {
    use std::os::unix::fs::PermissionsExt;
    std::fs::metadata(path)
        .map(|m| m.permissions().mode() & 0o044 != 0)
        .unwrap_or(false)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn debug_is_redacted() {
        let s: SecretSource =
            toml::from_str::<std::collections::BTreeMap<String, SecretSource>>("p = \"hunter2\"")
                .unwrap()
                .remove("p")
                .unwrap();
        let dbg = format!("{s:?}");
        assert!(!dbg.contains("hunter2"), "{dbg}");
        assert_eq!(s.resolve().unwrap().expose_secret(), "hunter2");
    }

    #[test]
    fn env_and_file_sources() {
        let m: std::collections::BTreeMap<String, SecretSource> = toml::from_str(
            "a = { env = \"SQLEASE_TEST_SECRET_ENV\" }\nb = { file = \"/nonexistent/x\" }",
        )
        .unwrap();
        assert!(matches!(
            m["a"].resolve(),
            Err(SecretError::EnvMissing(ref n)) if n == "SQLEASE_TEST_SECRET_ENV"
        ));
        assert!(matches!(m["b"].resolve(), Err(SecretError::File { .. })));
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("pw");
        std::fs::write(&p, "s3cret\n").unwrap();
        assert_eq!(read_secret_file(&p).unwrap().expose_secret(), "s3cret");
    }
}
