//! Vault response bodies, deserialized straight into typed structs.
//!
//! Secrets (tokens, secret ids, passwords) land directly in
//! [`SecretString`], so they never exist as a plain `String` and never show
//! up in `Debug`. Fields Vault documents as always present are still
//! defaulted: a missing `warnings` or `renewable` must not fail a login.

use std::time::Duration;

use serde::{Deserialize, Deserializer};

use crate::secret::SecretString;

/// Text Vault puts in a warning when it capped a requested TTL.
pub const TTL_CAPPED_MARKER: &str = "exceeded the effective max_ttl";

/// The envelope around every logical response (§1.2 of the contract).
#[derive(Debug, Deserialize)]
pub(crate) struct Envelope<D> {
    #[serde(default)]
    pub lease_id: String,
    #[serde(default)]
    pub renewable: bool,
    #[serde(default)]
    pub lease_duration: u64,
    #[serde(default = "none")]
    pub data: Option<D>,
    #[serde(default, deserialize_with = "null_as_empty")]
    pub warnings: Vec<String>,
    #[serde(default)]
    pub auth: Option<AuthInfo>,
}

fn none<D>() -> Option<D> {
    None
}

/// The error body: `{"errors":[...]}`.
#[derive(Debug, Deserialize)]
pub(crate) struct ErrorBody {
    #[serde(default, deserialize_with = "null_as_empty")]
    pub errors: Vec<String>,
}

fn null_as_empty<'de, D: Deserializer<'de>>(d: D) -> Result<Vec<String>, D::Error> {
    Ok(Option::<Vec<String>>::deserialize(d)?.unwrap_or_default())
}

/// `auth` block of a login or token renewal.
#[derive(Debug, Deserialize)]
pub struct AuthInfo {
    /// The token.
    pub client_token: SecretString,
    /// Token accessor ("" for batch tokens); not a secret.
    #[serde(default)]
    pub accessor: String,
    #[serde(default)]
    pub policies: Vec<String>,
    /// TTL in seconds (0 = never expires).
    #[serde(default)]
    pub lease_duration: u64,
    #[serde(default)]
    pub renewable: bool,
    /// `service` or `batch`.
    #[serde(default)]
    pub token_type: String,
    #[serde(default)]
    pub orphan: bool,
}

/// A Vault token and what Vault said about it when it was issued or renewed.
#[derive(Debug)]
pub struct TokenGrant {
    pub token: SecretString,
    pub accessor: String,
    pub policies: Vec<String>,
    /// Time left from the moment of the answer (`None` = never expires).
    pub ttl: Option<Duration>,
    pub renewable: bool,
    /// `service` or `batch`.
    pub token_type: String,
    pub warnings: Vec<String>,
}

impl TokenGrant {
    pub(crate) fn from_auth(auth: AuthInfo, warnings: Vec<String>) -> TokenGrant {
        TokenGrant {
            token: auth.client_token,
            accessor: auth.accessor,
            policies: auth.policies,
            ttl: nonzero_secs(auth.lease_duration),
            renewable: auth.renewable,
            token_type: auth.token_type,
            warnings,
        }
    }

    /// Whether Vault capped the TTL (max TTL reached): renewing further is useless.
    pub fn capped(&self, requested: Option<Duration>) -> bool {
        is_capped(&self.warnings, requested, self.ttl)
    }
}

/// `data` of `auth/token/lookup-self`.
#[derive(Debug, Deserialize)]
pub struct TokenLookup {
    #[serde(default)]
    pub accessor: String,
    #[serde(default)]
    pub display_name: String,
    /// Remaining seconds (0 = never expires).
    #[serde(default)]
    pub ttl: u64,
    #[serde(default)]
    pub creation_ttl: u64,
    /// Unix seconds.
    #[serde(default)]
    pub creation_time: u64,
    #[serde(default)]
    pub explicit_max_ttl: u64,
    #[serde(default)]
    pub expire_time: Option<String>,
    #[serde(default)]
    pub renewable: bool,
    #[serde(default)]
    pub policies: Vec<String>,
    #[serde(default)]
    pub path: String,
    #[serde(default, rename = "type")]
    pub token_type: String,
    #[serde(default)]
    pub period: Option<u64>,
}

/// Username and password from `<mount>/creds/<role>`.
#[derive(Deserialize)]
pub(crate) struct CredsData {
    pub username: String,
    pub password: SecretString,
}

/// A dynamic database credential (one lease).
#[derive(Debug)]
pub struct DynamicCreds {
    pub lease_id: String,
    /// Lease TTL granted at issue.
    pub lease_duration: Duration,
    pub renewable: bool,
    pub username: String,
    pub password: SecretString,
    pub warnings: Vec<String>,
}

impl DynamicCreds {
    /// Issued already at the role's max TTL (default_ttl > max_ttl).
    pub fn capped_at_issue(&self) -> bool {
        self.warnings.iter().any(|w| w.contains(TTL_CAPPED_MARKER))
    }
}

/// `data` of `<mount>/static-creds/<role>`.
#[derive(Deserialize)]
pub(crate) struct StaticData {
    pub username: String,
    pub password: SecretString,
    #[serde(default)]
    pub ttl: u64,
    #[serde(default)]
    pub last_vault_rotation: Option<String>,
    #[serde(default)]
    pub rotation_period: Option<u64>,
}

/// A static-role credential: one MySQL user whose password Vault rotates.
#[derive(Debug)]
pub struct StaticCreds {
    pub username: String,
    pub password: SecretString,
    /// Time until Vault rotates the password.
    pub ttl: Duration,
    /// RFC 3339 time of the last rotation, as Vault sent it.
    pub last_vault_rotation: Option<String>,
    pub rotation_period: Option<Duration>,
}

/// Result of `sys/leases/renew`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LeaseRenewal {
    pub lease_id: String,
    /// TTL now left, counted from the answer.
    pub lease_duration: Duration,
    pub renewable: bool,
    pub warnings: Vec<String>,
}

impl LeaseRenewal {
    /// Whether the lease reached its max TTL (a warning, or less than asked).
    pub fn capped(&self, requested: Duration) -> bool {
        is_capped(&self.warnings, Some(requested), Some(self.lease_duration))
    }
}

/// `data` of `sys/leases/lookup`.
#[derive(Debug, Clone, Deserialize)]
pub struct LeaseLookup {
    pub id: String,
    #[serde(default)]
    pub issue_time: Option<String>,
    #[serde(default)]
    pub expire_time: Option<String>,
    #[serde(default)]
    pub last_renewal: Option<String>,
    #[serde(default)]
    pub renewable: bool,
    /// Remaining seconds.
    #[serde(default)]
    pub ttl: u64,
}

/// `data` of a wrapped secret-id response, once unwrapped.
#[derive(Deserialize)]
pub(crate) struct SecretIdData {
    pub secret_id: SecretString,
}

pub(crate) fn nonzero_secs(s: u64) -> Option<Duration> {
    (s > 0).then(|| Duration::from_secs(s))
}

fn is_capped(warnings: &[String], requested: Option<Duration>, got: Option<Duration>) -> bool {
    if warnings.iter().any(|w| w.contains(TTL_CAPPED_MARKER)) {
        return true;
    }
    match (requested, got) {
        // Vault counts whole seconds; one second of slack for rounding.
        (Some(r), Some(g)) => g + Duration::from_secs(1) < r,
        _ => false,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::secret::ExposeSecret;

    const LOGIN: &str = r#"{
      "request_id": "1f8a", "lease_id": "", "renewable": false, "lease_duration": 0,
      "data": null, "wrap_info": null, "warnings": null,
      "auth": {
        "client_token": "hvs.CAESIJsecret", "accessor": "0e9ZCz9dB6HQHd2WvCl5XFeB",
        "policies": ["default", "mysql-proxy"], "token_policies": ["default", "mysql-proxy"],
        "metadata": {"role_name": "mysql-proxy"}, "lease_duration": 1200, "renewable": true,
        "entity_id": "b7f6", "token_type": "service", "orphan": true,
        "mfa_requirement": null, "num_uses": 0
      }
    }"#;

    #[test]
    fn login_envelope() {
        let env: Envelope<serde_json::Value> = serde_json::from_str(LOGIN).unwrap();
        let auth = env.auth.unwrap();
        let g = TokenGrant::from_auth(auth, env.warnings);
        assert_eq!(g.token.expose_secret(), "hvs.CAESIJsecret");
        assert_eq!(g.ttl, Some(Duration::from_secs(1200)));
        assert!(g.renewable);
        assert_eq!(g.token_type, "service");
        assert!(!g.capped(Some(Duration::from_secs(1200))));
        let dbg = format!("{g:?}");
        assert!(!dbg.contains("hvs.CAESIJsecret"), "{dbg}");
    }

    #[test]
    fn renew_self_capped() {
        let body = r#"{"request_id":"r","lease_id":"","renewable":false,"lease_duration":0,
          "data":null,"wrap_info":null,
          "warnings":["TTL of \"20m\" exceeded the effective max_ttl of \"9m58s\"; TTL value is capped accordingly"],
          "auth":{"client_token":"hvs.x","accessor":"a","policies":["default"],
          "lease_duration":598,"renewable":true,"entity_id":"","token_type":"service","orphan":true}}"#;
        let env: Envelope<serde_json::Value> = serde_json::from_str(body).unwrap();
        let g = TokenGrant::from_auth(env.auth.unwrap(), env.warnings);
        assert!(g.capped(Some(Duration::from_secs(1200))));
        assert!(g.capped(None));
    }

    #[test]
    fn dynamic_creds() {
        let body = r#"{
          "request_id": "2d4a", "lease_id": "database/creds/readonly/IQKUMCTg3M5QTRZ0abmLKjTX",
          "renewable": true, "lease_duration": 3600,
          "data": {"username": "v-approle-readonly-h4TgQx0pLmZ8a", "password": "A-9kfT2mZp0QwErTy3Lx"},
          "wrap_info": null, "warnings": null, "auth": null, "mount_type": "database"}"#;
        let env: Envelope<CredsData> = serde_json::from_str(body).unwrap();
        assert_eq!(
            env.lease_id,
            "database/creds/readonly/IQKUMCTg3M5QTRZ0abmLKjTX"
        );
        assert_eq!(env.lease_duration, 3600);
        let d = env.data.unwrap();
        assert_eq!(d.username, "v-approle-readonly-h4TgQx0pLmZ8a");
        assert_eq!(d.password.expose_secret(), "A-9kfT2mZp0QwErTy3Lx");
    }

    #[test]
    fn static_creds_and_lookup() {
        let body = r#"{"request_id":"x","lease_id":"","renewable":false,"lease_duration":0,
         "data":{"username":"app_static","password":"yY-57n3X5UQhxnmFRP3f",
          "last_vault_rotation":"2024-05-06T15:26:42.525302-05:00",
          "rotation_period":3600,"ttl":3541},
         "wrap_info":null,"warnings":null,"auth":null}"#;
        let env: Envelope<StaticData> = serde_json::from_str(body).unwrap();
        let d = env.data.unwrap();
        assert_eq!((d.ttl, d.rotation_period), (3541, Some(3600)));
        let body = r#"{"request_id":"x","lease_id":"","renewable":false,"lease_duration":0,
         "data":{"id":"database/creds/readonly/IQKU","issue_time":"2024-05-29T16:26:40.12345Z",
          "expire_time":"2024-05-29T17:26:40.12345Z","last_renewal":null,"renewable":true,"ttl":3541},
         "wrap_info":null,"warnings":null,"auth":null}"#;
        let env: Envelope<LeaseLookup> = serde_json::from_str(body).unwrap();
        let l = env.data.unwrap();
        assert_eq!(l.ttl, 3541);
        assert!(l.renewable && l.last_renewal.is_none());
    }

    #[test]
    fn lease_renewal_capping() {
        let r = LeaseRenewal {
            lease_id: "l".into(),
            lease_duration: Duration::from_secs(598),
            renewable: true,
            warnings: vec![],
        };
        assert!(r.capped(Duration::from_secs(3600)));
        assert!(!r.capped(Duration::from_secs(599)));
        let ok = LeaseRenewal {
            lease_duration: Duration::from_secs(3600),
            ..r
        };
        assert!(!ok.capped(Duration::from_secs(3600)));
    }

    #[test]
    fn error_body() {
        let e: ErrorBody = serde_json::from_str(r#"{"errors":[]}"#).unwrap();
        assert!(e.errors.is_empty());
        let e: ErrorBody = serde_json::from_str(r#"{"errors":["lease not found"]}"#).unwrap();
        assert_eq!(e.errors, vec!["lease not found".to_string()]);
    }
}
