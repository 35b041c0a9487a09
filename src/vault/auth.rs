//! Logging in: AppRole, a given token, or Kubernetes.
//!
//! Login secrets are resolved at every login, not once at start, so a
//! rotated secret file (or a new token written by Vault Agent to its sink)
//! is picked up without a restart. A response-wrapped secret_id can be used
//! only once, so its unwrapped value is kept in memory and reused until the
//! wrapping token itself changes.

use std::path::PathBuf;
use std::sync::Mutex;
use std::time::Duration;

use super::client::VaultClient;
use super::error::VaultError;
use super::types::{nonzero_secs, TokenGrant};
use crate::config::VaultAuthConfig;
use crate::secret::{read_secret_file, ExposeSecret, SecretSource, SecretString};

/// A token obtained by logging in, and whether sqlease owns it.
#[derive(Debug)]
pub struct Login {
    pub grant: TokenGrant,
    /// The token's life is over at issue + this, whatever renewals say
    /// (explicit max TTL, or a non-renewable token's TTL), when known.
    pub hard_ttl: Option<Duration>,
    /// sqlease created the token (AppRole, Kubernetes) and may revoke it;
    /// a given token (VAULT_TOKEN, Agent sink) belongs to someone else.
    pub owned: bool,
}

/// Where a login secret came from, for error messages.
struct Resolved {
    value: SecretString,
    origin: String,
}

/// The configured login method.
pub struct Authenticator {
    method: Method,
    /// Cached unwrapped secret_id: (wrapping token, secret_id).
    unwrapped: Mutex<Option<(SecretString, SecretString)>>,
}

enum Method {
    AppRole {
        mount: String,
        role_id: Option<SecretSource>,
        secret_id: Option<SecretSource>,
        wrapped: bool,
    },
    Token {
        token: Option<SecretSource>,
    },
    Kubernetes {
        mount: String,
        role: String,
        jwt_file: PathBuf,
    },
}

impl std::fmt::Debug for Authenticator {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self.method {
            Method::AppRole { .. } => "Authenticator(approle)",
            Method::Token { .. } => "Authenticator(token)",
            Method::Kubernetes { .. } => "Authenticator(kubernetes)",
        })
    }
}

fn env_secret(name: &str) -> Option<Resolved> {
    std::env::var(name)
        .ok()
        .filter(|v| !v.is_empty())
        .map(|v| Resolved {
            value: SecretString::from(v),
            origin: format!("environment variable {name}"),
        })
}

fn resolve(
    configured: Option<&SecretSource>,
    key: &str,
    env_names: &[&str],
) -> Result<Resolved, VaultError> {
    if let Some(src) = configured {
        let origin = match src {
            SecretSource::Inline(_) => key.to_string(),
            SecretSource::Env { env } => format!("{key} (environment variable {env})"),
            SecretSource::File { file } => format!("{key} (file {})", file.display()),
        };
        return src
            .resolve()
            .map(|value| Resolved {
                value,
                origin: origin.clone(),
            })
            .map_err(|e| VaultError::Setting {
                setting: origin,
                detail: e.to_string(),
            });
    }
    env_names
        .iter()
        .find_map(|n| env_secret(n))
        .ok_or_else(|| VaultError::Setting {
            setting: format!("{key} / {}", env_names.join(" / ")),
            detail: "not set".into(),
        })
}

impl Authenticator {
    pub fn new(cfg: &VaultAuthConfig) -> Authenticator {
        let method = match cfg {
            VaultAuthConfig::Approle {
                mount,
                role_id,
                secret_id,
                secret_id_wrapped,
            } => Method::AppRole {
                mount: mount.clone(),
                role_id: role_id.clone(),
                secret_id: secret_id.clone(),
                wrapped: *secret_id_wrapped,
            },
            VaultAuthConfig::Token { token } => Method::Token {
                token: token.clone(),
            },
            VaultAuthConfig::Kubernetes {
                mount,
                role,
                jwt_file,
            } => Method::Kubernetes {
                mount: mount.clone(),
                role: role.clone(),
                jwt_file: jwt_file.clone(),
            },
        };
        Authenticator {
            method,
            unwrapped: Mutex::new(None),
        }
    }

    /// Short name of the method, for logs.
    pub fn method_name(&self) -> &'static str {
        match self.method {
            Method::AppRole { .. } => "approle",
            Method::Token { .. } => "token",
            Method::Kubernetes { .. } => "kubernetes",
        }
    }

    /// Checks that every login setting can be resolved (no network).
    pub fn check_settings(&self) -> Result<(), VaultError> {
        match &self.method {
            Method::AppRole {
                role_id, secret_id, ..
            } => {
                self.role_id(role_id.as_ref())?;
                self.secret_id_source(secret_id.as_ref())?;
            }
            Method::Token { token } => {
                self.given_token(token.as_ref())?;
            }
            Method::Kubernetes { jwt_file, .. } => {
                read_jwt(jwt_file)?;
            }
        }
        Ok(())
    }

    /// For a token read from a file: how often to look for a new one.
    pub fn watch_interval(&self) -> Option<Duration> {
        match &self.method {
            Method::Token {
                token: Some(SecretSource::File { .. }),
            } => Some(Duration::from_secs(5)),
            _ => None,
        }
    }

    /// For a given token: whether its source now holds a different token.
    pub fn token_changed(&self, current: &SecretString) -> bool {
        match &self.method {
            Method::Token { token } => self
                .given_token(token.as_ref())
                .is_ok_and(|t| t.value.expose_secret() != current.expose_secret()),
            _ => false,
        }
    }

    fn role_id(&self, src: Option<&SecretSource>) -> Result<Resolved, VaultError> {
        resolve(src, "vault.auth.role_id", &["VLT_ROLE_ID", "VAULT_ROLE_ID"])
    }

    fn secret_id_source(&self, src: Option<&SecretSource>) -> Result<Resolved, VaultError> {
        resolve(
            src,
            "vault.auth.secret_id",
            &["VLT_SECRET_ID", "VAULT_SECRET_ID"],
        )
    }

    fn given_token(&self, src: Option<&SecretSource>) -> Result<Resolved, VaultError> {
        resolve(src, "vault.auth.token", &["VAULT_TOKEN"])
    }

    /// Logs in once. `LoginRejected` means the configured credentials are
    /// wrong (retrying cannot help); other errors follow [`VaultError::retryable`].
    pub async fn login(&self, client: &VaultClient) -> Result<Login, VaultError> {
        match &self.method {
            Method::AppRole {
                mount,
                role_id,
                secret_id,
                wrapped,
            } => {
                let rid = self.role_id(role_id.as_ref())?;
                let sid = self.secret_id_source(secret_id.as_ref())?;
                let sid_value = if *wrapped {
                    self.unwrap_cached(client, &sid).await?
                } else {
                    sid.value.clone()
                };
                let grant = client
                    .approle_login(mount, &rid.value, &sid_value)
                    .await
                    .map_err(|e| rejected(e, &format!("{} / {}", rid.origin, sid.origin)))?;
                Ok(owned_login(grant))
            }
            Method::Kubernetes {
                mount,
                role,
                jwt_file,
            } => {
                let jwt = read_jwt(jwt_file)?;
                let grant = client
                    .kubernetes_login(mount, role, &jwt)
                    .await
                    .map_err(|e| {
                        let what = format!(
                            "vault.auth.role ({role:?}) / the service-account JWT in {}",
                            jwt_file.display()
                        );
                        rejected(e, &what)
                    })?;
                Ok(owned_login(grant))
            }
            Method::Token { token } => {
                let t = self.given_token(token.as_ref())?;
                let info = client
                    .token_lookup_self(&t.value)
                    .await
                    .map_err(|e| rejected(e, &t.origin))?;
                let ttl = nonzero_secs(info.ttl);
                let explicit = nonzero_secs(info.explicit_max_ttl).map(|max| {
                    let created = std::time::UNIX_EPOCH + Duration::from_secs(info.creation_time);
                    let age = std::time::SystemTime::now()
                        .duration_since(created)
                        .unwrap_or_default();
                    max.saturating_sub(age)
                });
                let hard_ttl = match (info.renewable, ttl, explicit) {
                    (false, Some(t), _) => Some(t),
                    (_, _, e) => e,
                };
                Ok(Login {
                    grant: TokenGrant {
                        token: t.value,
                        accessor: info.accessor,
                        policies: info.policies,
                        ttl,
                        renewable: info.renewable,
                        token_type: info.token_type,
                        warnings: Vec::new(),
                    },
                    hard_ttl,
                    owned: false,
                })
            }
        }
    }

    async fn unwrap_cached(
        &self,
        client: &VaultClient,
        wrapping: &Resolved,
    ) -> Result<SecretString, VaultError> {
        if let Ok(guard) = self.unwrapped.lock() {
            if let Some((w, s)) = guard.as_ref() {
                if w.expose_secret() == wrapping.value.expose_secret() {
                    return Ok(s.clone());
                }
            }
        }
        let secret_id = client
            .unwrap_secret_id(&wrapping.value)
            .await
            .map_err(|e| match e {
                VaultError::Api {
                    status: 400,
                    endpoint,
                    errors,
                } => VaultError::LoginRejected {
                    setting: format!(
                        "{} (a response-wrapped secret_id: it is single-use and expires; write a fresh wrapping token)",
                        wrapping.origin
                    ),
                    endpoint,
                    errors,
                },
                other => other,
            })?;
        if let Ok(mut guard) = self.unwrapped.lock() {
            *guard = Some((wrapping.value.clone(), secret_id.clone()));
        }
        Ok(secret_id)
    }
}

fn owned_login(grant: TokenGrant) -> Login {
    let hard_ttl = if grant.renewable { None } else { grant.ttl };
    Login {
        grant,
        hard_ttl,
        owned: true,
    }
}

fn read_jwt(path: &std::path::Path) -> Result<SecretString, VaultError> {
    read_secret_file(path).map_err(|e| VaultError::Setting {
        setting: "vault.auth.jwt_file".into(),
        detail: e.to_string(),
    })
}

/// Turns a login refusal (400 or 403) into `LoginRejected` naming the setting.
fn rejected(e: VaultError, setting: &str) -> VaultError {
    match e {
        VaultError::Api {
            status: status @ (400 | 403),
            endpoint,
            errors,
        } => {
            let setting = if status == 403 && endpoint.contains("approle") {
                // AppRole answers a locked-out role_id (5 bad secret_ids) with 403.
                format!("{setting} (locked out after repeated failures?)")
            } else {
                setting.to_string()
            };
            VaultError::LoginRejected {
                setting,
                endpoint,
                errors,
            }
        }
        other => other,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn missing_settings_name_the_keys() {
        let a = Authenticator::new(&VaultAuthConfig::Approle {
            mount: "approle".into(),
            role_id: Some(SecretSource::Inline(SecretString::from("r".to_string()))),
            secret_id: Some(SecretSource::Env {
                env: "SQLEASE_TEST_NO_SUCH_VAR".into(),
            }),
            secret_id_wrapped: false,
        });
        let e = a.check_settings().unwrap_err().to_string();
        assert!(e.contains("vault.auth.secret_id"), "{e}");
        assert!(e.contains("SQLEASE_TEST_NO_SUCH_VAR"), "{e}");
    }

    #[test]
    fn rejected_names_setting() {
        let e = rejected(
            VaultError::Api {
                endpoint: "auth/approle/login".into(),
                status: 400,
                errors: vec!["invalid role or secret ID".into()],
            },
            "vault.auth.role_id / environment variable VLT_SECRET_ID",
        );
        let s = e.to_string();
        assert!(s.contains("VLT_SECRET_ID was rejected by Vault"), "{s}");
        assert!(!e.retryable());
        let e = rejected(
            VaultError::Api {
                endpoint: "auth/approle/login".into(),
                status: 503,
                errors: vec!["Vault is sealed".into()],
            },
            "x",
        );
        assert!(e.retryable());
    }

    #[test]
    fn token_file_changes_are_seen() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("sink");
        std::fs::write(&p, "hvs.one\n").unwrap();
        let a = Authenticator::new(&VaultAuthConfig::Token {
            token: Some(SecretSource::File { file: p.clone() }),
        });
        assert!(a.watch_interval().is_some());
        let one = SecretString::from("hvs.one".to_string());
        assert!(!a.token_changed(&one));
        std::fs::write(&p, "hvs.two\n").unwrap();
        assert!(a.token_changed(&one));
    }
}
