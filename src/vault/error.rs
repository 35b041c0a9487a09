//! One error type for every Vault call.
//!
//! Each error names the endpoint (the path after `/v1/`, never a secret),
//! carries the HTTP status and Vault's own `errors` text when there is one,
//! and says whether retrying later can help: 5xx, 429, connection failures,
//! timeouts and a sealed Vault are retryable; 400 and 403 are not (the same
//! request would be refused again). Nothing here ever holds a token,
//! secret_id or password.

use std::time::Duration;

/// A failed Vault operation.
#[derive(Debug, thiserror::Error)]
pub enum VaultError {
    /// Vault answered with an error status.
    #[error("Vault {endpoint}: HTTP {status}: {}", errors_text(.errors))]
    Api {
        /// Path after `/v1/`, e.g. `auth/approle/login`.
        endpoint: String,
        /// HTTP status code.
        status: u16,
        /// Vault's `errors` list, as sent.
        errors: Vec<String>,
    },
    /// The TCP/TLS connection could not be made.
    #[error("Vault {endpoint}: cannot connect to {address}: {detail}")]
    Connect {
        endpoint: String,
        address: String,
        detail: String,
    },
    /// No complete answer within the request timeout.
    #[error("Vault {endpoint}: no answer within {}", humantime::format_duration(*.timeout))]
    Timeout { endpoint: String, timeout: Duration },
    /// Transport failure after connecting (connection reset, bad HTTP).
    #[error("Vault {endpoint}: request failed: {detail}")]
    Transport { endpoint: String, detail: String },
    /// A 2xx answer that does not have the expected shape.
    #[error("Vault {endpoint}: unexpected response: {detail}")]
    Decode { endpoint: String, detail: String },
    /// The client or a login setting is unusable (fix the configuration).
    #[error("{setting}: {detail}")]
    Setting {
        /// Configuration key or environment variable to fix.
        setting: String,
        detail: String,
    },
    /// Vault refused the login credentials themselves (fatal until fixed).
    #[error("{setting} was rejected by Vault ({endpoint}: {}); fix it and restart", errors_text(.errors))]
    LoginRejected {
        /// Which setting(s) to fix, e.g. `vault.auth.secret_id / VLT_SECRET_ID`.
        setting: String,
        endpoint: String,
        errors: Vec<String>,
    },
}

fn errors_text(errors: &[String]) -> String {
    let joined: Vec<String> = errors
        .iter()
        .map(|e| {
            // Vault's multierror text: "1 error occurred:\n\t* permission denied\n\n".
            let parts: Vec<&str> = e
                .lines()
                .map(|l| l.trim().trim_start_matches("* ").trim())
                .filter(|l| !l.is_empty() && !l.ends_with("occurred:"))
                .collect();
            if parts.is_empty() {
                e.trim().to_string()
            } else {
                parts.join("; ")
            }
        })
        .collect();
    if joined.is_empty() {
        "no error text".to_string()
    } else {
        joined.join("; ")
    }
}

impl VaultError {
    /// Whether the same request may succeed later.
    pub fn retryable(&self) -> bool {
        match self {
            VaultError::Api { status, .. } => *status == 429 || *status == 412 || *status >= 500,
            VaultError::Connect { .. }
            | VaultError::Timeout { .. }
            | VaultError::Transport { .. } => true,
            VaultError::Decode { .. } | VaultError::Setting { .. } => false,
            VaultError::LoginRejected { .. } => false,
        }
    }

    /// HTTP status, when Vault answered with one.
    pub fn status(&self) -> Option<u16> {
        match self {
            VaultError::Api { status, .. } => Some(*status),
            _ => None,
        }
    }

    /// The endpoint that failed (empty for setting errors).
    pub fn endpoint(&self) -> &str {
        match self {
            VaultError::Api { endpoint, .. }
            | VaultError::Connect { endpoint, .. }
            | VaultError::Timeout { endpoint, .. }
            | VaultError::Transport { endpoint, .. }
            | VaultError::Decode { endpoint, .. }
            | VaultError::LoginRejected { endpoint, .. } => endpoint,
            VaultError::Setting { .. } => "",
        }
    }

    /// Vault's error strings (empty when Vault did not answer).
    pub fn vault_errors(&self) -> &[String] {
        match self {
            VaultError::Api { errors, .. } | VaultError::LoginRejected { errors, .. } => errors,
            _ => &[],
        }
    }

    fn any_error_contains(&self, needle: &str) -> bool {
        self.vault_errors().iter().any(|e| e.contains(needle))
    }

    /// 403 for a token that is unknown, expired or revoked (or any 403 on
    /// an endpoint every token may call, such as lookup-self).
    pub fn is_invalid_token(&self) -> bool {
        self.status() == Some(403) && self.any_error_contains("invalid token")
    }

    /// 403 of any kind (policy denial or bad token).
    pub fn is_permission_denied(&self) -> bool {
        self.status() == Some(403)
    }

    /// 503 `Vault is sealed`.
    pub fn is_sealed(&self) -> bool {
        self.status() == Some(503) && self.any_error_contains("sealed")
    }

    /// The lease no longer exists (revoked, expired, or never existed).
    pub fn is_lease_gone(&self) -> bool {
        self.status() == Some(400)
            && (self.any_error_contains("lease not found")
                || self.any_error_contains("lease expired")
                || self.any_error_contains("invalid lease")
                || self.any_error_contains("past the max TTL"))
    }

    /// AppRole's `invalid role or secret ID`.
    pub fn is_invalid_login(&self) -> bool {
        self.status() == Some(400) && self.any_error_contains("invalid role or secret ID")
    }

    /// A short, stable label for metrics and logs.
    pub fn kind(&self) -> &'static str {
        match self {
            VaultError::Api { status, .. } if *status == 503 => "unavailable",
            VaultError::Api { status, .. } if *status == 429 => "rate_limited",
            VaultError::Api { status, .. } if *status >= 500 => "server_error",
            VaultError::Api { status, .. } if *status == 403 => "permission_denied",
            VaultError::Api { .. } => "rejected",
            VaultError::Connect { .. } => "unreachable",
            VaultError::Timeout { .. } => "timeout",
            VaultError::Transport { .. } => "transport",
            VaultError::Decode { .. } => "bad_response",
            VaultError::Setting { .. } => "setting",
            VaultError::LoginRejected { .. } => "login_rejected",
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn api(status: u16, e: &str) -> VaultError {
        VaultError::Api {
            endpoint: "x".into(),
            status,
            errors: vec![e.into()],
        }
    }

    #[test]
    fn classification() {
        let invalid = api(
            403,
            "2 errors occurred:\n\t* permission denied\n\t* invalid token\n\n",
        );
        assert!(invalid.is_invalid_token());
        assert!(!invalid.retryable());
        assert_eq!(
            invalid.to_string(),
            "Vault x: HTTP 403: permission denied; invalid token"
        );
        let denied = api(403, "1 error occurred:\n\t* permission denied\n\n");
        assert!(denied.is_permission_denied() && !denied.is_invalid_token());
        assert!(api(503, "Vault is sealed").is_sealed());
        assert!(api(503, "Vault is sealed").retryable());
        assert!(api(429, "rate limit quota exceeded").retryable());
        assert!(api(500, "1 error occurred:\n\t* boom\n\n").retryable());
        assert!(!api(400, "lease not found").retryable());
        assert!(api(400, "lease not found").is_lease_gone());
        assert!(api(400, "invalid role or secret ID").is_invalid_login());
        let empty = VaultError::Api {
            endpoint: "e".into(),
            status: 404,
            errors: vec![],
        };
        assert_eq!(empty.to_string(), "Vault e: HTTP 404: no error text");
        let t = VaultError::Timeout {
            endpoint: "e".into(),
            timeout: Duration::from_secs(10),
        };
        assert!(t.retryable());
        assert_eq!(t.to_string(), "Vault e: no answer within 10s");
    }
}
