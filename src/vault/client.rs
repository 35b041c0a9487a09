//! The HTTP side: one `reqwest` client, one request helper, one method per
//! endpoint. The client holds no token: every authenticated call takes the
//! token explicitly, so the lease manager alone decides which token is
//! current (a re-login must not race with a renewal of the old one).

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use reqwest::{Method, StatusCode};
use serde::de::DeserializeOwned;
use serde_json::{json, Value};

use super::error::VaultError;
use super::types::{
    nonzero_secs, CredsData, DynamicCreds, Envelope, ErrorBody, LeaseLookup, LeaseRenewal,
    SecretIdData, StaticCreds, StaticData, TokenGrant, TokenLookup,
};
use crate::config::VaultConfig;
use crate::secret::{ExposeSecret, SecretString};

/// Connect timeout when the request timeout is longer.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);

/// How to reach Vault, resolved from the configuration and the standard
/// `VAULT_*` environment variables.
#[derive(Debug, Clone)]
pub struct ClientSettings {
    /// Base address, e.g. `https://vault.example:8200` (no trailing `/`).
    pub address: String,
    /// PEM bundle of CAs to trust instead of the web PKI roots.
    pub ca_file: Option<PathBuf>,
    /// `X-Vault-Namespace` header value.
    pub namespace: Option<String>,
    /// Timeout of one request, connection included.
    pub request_timeout: Duration,
}

impl ClientSettings {
    /// Settings from `[vault]`, falling back to `VAULT_ADDR`, `VAULT_CACERT`
    /// and `VAULT_NAMESPACE`.
    pub fn from_config(cfg: &VaultConfig) -> Result<ClientSettings, VaultError> {
        let env = |k: &str| std::env::var(k).ok().filter(|v| !v.is_empty());
        let address = cfg
            .address
            .clone()
            .or_else(|| env("VAULT_ADDR"))
            .ok_or_else(|| VaultError::Setting {
                setting: "vault.address / VAULT_ADDR".into(),
                detail: "not set: say where Vault listens, e.g. https://vault.example:8200".into(),
            })?;
        Ok(ClientSettings {
            address,
            ca_file: cfg
                .ca_file
                .clone()
                .or_else(|| env("VAULT_CACERT").map(PathBuf::from)),
            namespace: cfg.namespace.clone().or_else(|| env("VAULT_NAMESPACE")),
            request_timeout: cfg.request_timeout,
        })
    }
}

/// Upper bounds (seconds) of the Vault request latency buckets.
pub const REQUEST_BUCKETS_SECS: [f64; 10] =
    [0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 10.0];

/// Latency and outcome of one endpoint's requests (for the metrics).
#[derive(Debug, Clone, Default, PartialEq)]
pub struct EndpointStats {
    pub requests: u64,
    /// Requests that ended in an error (transport, timeout, or HTTP >= 400).
    pub errors: u64,
    pub sum_secs: f64,
    /// Requests per bucket of [`REQUEST_BUCKETS_SECS`] (not cumulative;
    /// slower ones only count in `requests`).
    pub buckets: [u64; REQUEST_BUCKETS_SECS.len()],
}

/// Request counters by endpoint (shared by the clones of a client).
#[derive(Debug, Default)]
pub struct RequestStats {
    by_endpoint: Mutex<BTreeMap<String, EndpointStats>>,
}

impl RequestStats {
    fn record(&self, endpoint: &str, took: Duration, ok: bool) {
        let secs = took.as_secs_f64();
        let mut m = self.by_endpoint.lock().unwrap_or_else(|e| e.into_inner());
        let s = m.entry(endpoint.to_string()).or_default();
        s.requests += 1;
        s.errors += u64::from(!ok);
        s.sum_secs += secs;
        if let Some(i) = REQUEST_BUCKETS_SECS.iter().position(|b| secs <= *b) {
            s.buckets[i] += 1;
        }
    }

    /// A copy of the counters, by endpoint path (no ids or secrets in it).
    pub fn snapshot(&self) -> BTreeMap<String, EndpointStats> {
        self.by_endpoint
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
    }
}

/// A Vault HTTP client (cheap to clone).
#[derive(Clone)]
pub struct VaultClient {
    http: reqwest::Client,
    base: Arc<str>,
    namespace: Option<Arc<str>>,
    timeout: Duration,
    stats: Arc<RequestStats>,
}

impl std::fmt::Debug for VaultClient {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("VaultClient")
            .field("address", &self.base)
            .field("namespace", &self.namespace)
            .finish()
    }
}

fn tls_config(ca_file: Option<&Path>) -> Result<rustls::ClientConfig, VaultError> {
    let setting = |detail: String| VaultError::Setting {
        setting: "vault.ca_file / VAULT_CACERT".into(),
        detail,
    };
    let mut roots = rustls::RootCertStore::empty();
    match ca_file {
        Some(f) => {
            use rustls_pki_types::pem::PemObject;
            use rustls_pki_types::CertificateDer;
            let iter = CertificateDer::pem_file_iter(f)
                .map_err(|e| setting(format!("cannot read {}: {e}", f.display())))?;
            for c in iter {
                let c =
                    c.map_err(|e| setting(format!("bad certificate in {}: {e}", f.display())))?;
                roots
                    .add(c)
                    .map_err(|e| setting(format!("unusable CA in {}: {e}", f.display())))?;
            }
            if roots.is_empty() {
                return Err(setting(format!("no certificate in {}", f.display())));
            }
        }
        None => roots.extend(webpki_roots::TLS_SERVER_ROOTS.iter().cloned()),
    }
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let mut cfg = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|e| setting(format!("TLS setup failed: {e}")))?
        .with_root_certificates(roots)
        .with_no_client_auth();
    cfg.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
    Ok(cfg)
}

impl VaultClient {
    /// Builds the client (reads the CA file now).
    pub fn new(settings: &ClientSettings) -> Result<VaultClient, VaultError> {
        let base = settings.address.trim_end_matches('/');
        if !(base.starts_with("http://") || base.starts_with("https://")) {
            return Err(VaultError::Setting {
                setting: "vault.address / VAULT_ADDR".into(),
                detail: format!("{base:?} must start with http:// or https://"),
            });
        }
        let http = reqwest::Client::builder()
            .tls_backend_preconfigured(tls_config(settings.ca_file.as_deref())?)
            .timeout(settings.request_timeout)
            .connect_timeout(CONNECT_TIMEOUT.min(settings.request_timeout))
            .user_agent(concat!("sqlease/", env!("CARGO_PKG_VERSION")))
            .build()
            .map_err(|e| VaultError::Setting {
                setting: "vault".into(),
                detail: format!("cannot build the HTTP client: {e}"),
            })?;
        Ok(VaultClient {
            http,
            base: base.into(),
            namespace: settings.namespace.as_deref().map(Into::into),
            timeout: settings.request_timeout,
            stats: Arc::default(),
        })
    }

    /// Vault's base address.
    pub fn address(&self) -> &str {
        &self.base
    }

    /// Latency and error counters by endpoint, shared by every clone.
    pub fn request_stats(&self) -> Arc<RequestStats> {
        Arc::clone(&self.stats)
    }

    /// Sends one request; returns the parsed JSON body (`None` for 204).
    async fn call(
        &self,
        method: Method,
        endpoint: &str,
        token: Option<&SecretString>,
        body: Option<Value>,
    ) -> Result<Option<Value>, VaultError> {
        let start = Instant::now();
        let r = self.send(method, endpoint, token, body).await;
        self.stats.record(endpoint, start.elapsed(), r.is_ok());
        r
    }

    async fn send(
        &self,
        method: Method,
        endpoint: &str,
        token: Option<&SecretString>,
        body: Option<Value>,
    ) -> Result<Option<Value>, VaultError> {
        let url = format!("{}/v1/{}", self.base, endpoint);
        let mut req = self
            .http
            .request(method, &url)
            .header("X-Vault-Request", "true");
        if let Some(ns) = &self.namespace {
            req = req.header("X-Vault-Namespace", ns.as_ref());
        }
        if let Some(t) = token {
            req = req.header("X-Vault-Token", t.expose_secret());
        }
        if let Some(b) = body {
            req = req.json(&b);
        }
        let transport = |e: reqwest::Error| {
            let e = e.without_url();
            if e.is_timeout() {
                VaultError::Timeout {
                    endpoint: endpoint.to_string(),
                    timeout: self.timeout,
                }
            } else if e.is_connect() {
                VaultError::Connect {
                    endpoint: endpoint.to_string(),
                    address: self.base.to_string(),
                    detail: error_chain(&e),
                }
            } else {
                VaultError::Transport {
                    endpoint: endpoint.to_string(),
                    detail: error_chain(&e),
                }
            }
        };
        let resp = req.send().await.map_err(transport)?;
        let status = resp.status();
        let bytes = resp.bytes().await.map_err(transport)?;
        if status.is_success() {
            if status == StatusCode::NO_CONTENT || bytes.is_empty() {
                return Ok(None);
            }
            return serde_json::from_slice(&bytes)
                .map(Some)
                .map_err(|e| VaultError::Decode {
                    endpoint: endpoint.to_string(),
                    detail: format!("HTTP {}: body is not JSON: {e}", status.as_u16()),
                });
        }
        let errors = serde_json::from_slice::<ErrorBody>(&bytes)
            .map(|b| b.errors)
            .unwrap_or_else(|_| {
                // Not Vault's JSON (a proxy or load balancer answered): keep a short excerpt.
                let text = String::from_utf8_lossy(&bytes);
                let excerpt: String = text.chars().take(200).collect();
                if excerpt.trim().is_empty() {
                    Vec::new()
                } else {
                    vec![excerpt.trim().to_string()]
                }
            });
        Err(VaultError::Api {
            endpoint: endpoint.to_string(),
            status: status.as_u16(),
            errors,
        })
    }

    /// Sends a request whose answer must be a JSON envelope.
    async fn envelope<D: DeserializeOwned>(
        &self,
        method: Method,
        endpoint: &str,
        token: Option<&SecretString>,
        body: Option<Value>,
    ) -> Result<Envelope<D>, VaultError> {
        let value = self
            .call(method, endpoint, token, body)
            .await?
            .ok_or_else(|| VaultError::Decode {
                endpoint: endpoint.to_string(),
                detail: "empty answer where a JSON body was expected".into(),
            })?;
        serde_json::from_value(value).map_err(|e| VaultError::Decode {
            endpoint: endpoint.to_string(),
            detail: e.to_string(),
        })
    }

    fn login_grant(endpoint: &str, env: Envelope<Value>) -> Result<TokenGrant, VaultError> {
        let auth = env.auth.ok_or_else(|| VaultError::Decode {
            endpoint: endpoint.to_string(),
            detail: "no auth block in the answer".into(),
        })?;
        Ok(TokenGrant::from_auth(auth, env.warnings))
    }

    /// `POST auth/<mount>/login` with role_id and secret_id.
    pub async fn approle_login(
        &self,
        mount: &str,
        role_id: &SecretString,
        secret_id: &SecretString,
    ) -> Result<TokenGrant, VaultError> {
        let ep = format!("auth/{}/login", trim(mount));
        let body =
            json!({"role_id": role_id.expose_secret(), "secret_id": secret_id.expose_secret()});
        let env = self.envelope(Method::POST, &ep, None, Some(body)).await?;
        Self::login_grant(&ep, env)
    }

    /// `POST auth/<mount>/login` with a service-account JWT.
    pub async fn kubernetes_login(
        &self,
        mount: &str,
        role: &str,
        jwt: &SecretString,
    ) -> Result<TokenGrant, VaultError> {
        let ep = format!("auth/{}/login", trim(mount));
        let body = json!({"role": role, "jwt": jwt.expose_secret()});
        let env = self.envelope(Method::POST, &ep, None, Some(body)).await?;
        Self::login_grant(&ep, env)
    }

    /// `POST sys/wrapping/unwrap` of a wrapped `secret-id` response.
    pub async fn unwrap_secret_id(
        &self,
        wrapping_token: &SecretString,
    ) -> Result<SecretString, VaultError> {
        let ep = "sys/wrapping/unwrap";
        let env: Envelope<SecretIdData> = self
            .envelope(Method::POST, ep, Some(wrapping_token), None)
            .await?;
        env.data
            .map(|d| d.secret_id)
            .ok_or_else(|| VaultError::Decode {
                endpoint: ep.into(),
                detail: "the unwrapped response holds no data.secret_id".into(),
            })
    }

    /// `GET auth/token/lookup-self`.
    pub async fn token_lookup_self(&self, token: &SecretString) -> Result<TokenLookup, VaultError> {
        let ep = "auth/token/lookup-self";
        let env: Envelope<TokenLookup> = self.envelope(Method::GET, ep, Some(token), None).await?;
        env.data.ok_or_else(|| VaultError::Decode {
            endpoint: ep.into(),
            detail: "no data in the answer".into(),
        })
    }

    /// `POST auth/token/renew-self`; `increment` `None` lets Vault pick the role's TTL.
    pub async fn token_renew_self(
        &self,
        token: &SecretString,
        increment: Option<Duration>,
    ) -> Result<TokenGrant, VaultError> {
        let ep = "auth/token/renew-self";
        let body = match increment {
            Some(i) => json!({"increment": i.as_secs()}),
            None => json!({}),
        };
        let env = self
            .envelope(Method::POST, ep, Some(token), Some(body))
            .await?;
        Self::login_grant(ep, env)
    }

    /// `POST auth/token/revoke-self` (revokes every lease the token created).
    pub async fn token_revoke_self(&self, token: &SecretString) -> Result<(), VaultError> {
        self.call(Method::POST, "auth/token/revoke-self", Some(token), None)
            .await
            .map(drop)
    }

    /// `GET <mount>/creds/<role>`: a new dynamic MySQL user.
    pub async fn database_creds(
        &self,
        token: &SecretString,
        mount: &str,
        role: &str,
    ) -> Result<DynamicCreds, VaultError> {
        let ep = format!("{}/creds/{}", trim(mount), role);
        let env: Envelope<CredsData> = self.envelope(Method::GET, &ep, Some(token), None).await?;
        let data = env.data.ok_or_else(|| VaultError::Decode {
            endpoint: ep.clone(),
            detail: "no data.username/data.password in the answer".into(),
        })?;
        if env.lease_id.is_empty() {
            return Err(VaultError::Decode {
                endpoint: ep,
                detail: "no lease_id: is this a static role? set kind = \"static\"".into(),
            });
        }
        Ok(DynamicCreds {
            lease_id: env.lease_id,
            lease_duration: Duration::from_secs(env.lease_duration),
            renewable: env.renewable,
            username: data.username,
            password: data.password,
            warnings: env.warnings,
        })
    }

    /// `GET <mount>/static-creds/<role>`.
    pub async fn static_creds(
        &self,
        token: &SecretString,
        mount: &str,
        role: &str,
    ) -> Result<StaticCreds, VaultError> {
        let ep = format!("{}/static-creds/{}", trim(mount), role);
        let env: Envelope<StaticData> = self.envelope(Method::GET, &ep, Some(token), None).await?;
        let d = env.data.ok_or_else(|| VaultError::Decode {
            endpoint: ep,
            detail: "no data in the answer".into(),
        })?;
        Ok(StaticCreds {
            username: d.username,
            password: d.password,
            ttl: Duration::from_secs(d.ttl),
            last_vault_rotation: d.last_vault_rotation,
            rotation_period: d.rotation_period.and_then(nonzero_secs),
        })
    }

    /// `PUT sys/leases/renew`; the increment is counted from now.
    pub async fn lease_renew(
        &self,
        token: &SecretString,
        lease_id: &str,
        increment: Duration,
    ) -> Result<LeaseRenewal, VaultError> {
        let ep = "sys/leases/renew";
        let body = json!({"lease_id": lease_id, "increment": increment.as_secs()});
        let env: Envelope<Value> = self
            .envelope(Method::PUT, ep, Some(token), Some(body))
            .await?;
        Ok(LeaseRenewal {
            lease_id: env.lease_id,
            lease_duration: Duration::from_secs(env.lease_duration),
            renewable: env.renewable,
            warnings: env.warnings,
        })
    }

    /// `PUT sys/leases/revoke` (synchronous: the MySQL user is dropped when it returns).
    pub async fn lease_revoke(
        &self,
        token: &SecretString,
        lease_id: &str,
    ) -> Result<(), VaultError> {
        let body = json!({"lease_id": lease_id, "sync": true});
        self.call(Method::PUT, "sys/leases/revoke", Some(token), Some(body))
            .await
            .map(drop)
    }

    /// `PUT sys/leases/lookup`.
    pub async fn lease_lookup(
        &self,
        token: &SecretString,
        lease_id: &str,
    ) -> Result<LeaseLookup, VaultError> {
        let ep = "sys/leases/lookup";
        let body = json!({ "lease_id": lease_id });
        let env: Envelope<LeaseLookup> = self
            .envelope(Method::PUT, ep, Some(token), Some(body))
            .await?;
        env.data.ok_or_else(|| VaultError::Decode {
            endpoint: ep.into(),
            detail: "no data in the answer".into(),
        })
    }

    /// `GET sys/health` (unauthenticated); returns the HTTP status.
    pub async fn health(&self) -> Result<u16, VaultError> {
        match self.call(Method::GET, "sys/health", None, None).await {
            Ok(_) => Ok(200),
            Err(VaultError::Api { status, .. }) => Ok(status),
            Err(e) => Err(e),
        }
    }
}

fn trim(mount: &str) -> &str {
    mount.trim_matches('/')
}

fn error_chain(e: &dyn std::error::Error) -> String {
    let mut s = e.to_string();
    let mut cur = e.source();
    while let Some(c) = cur {
        let t = c.to_string();
        if !s.contains(&t) {
            s.push_str(": ");
            s.push_str(&t);
        }
        cur = c.source();
    }
    s
}

#[cfg(test)]
mod tests {
    use super::*;

    fn settings(addr: &str) -> ClientSettings {
        ClientSettings {
            address: addr.into(),
            ca_file: None,
            namespace: Some("team-a".into()),
            request_timeout: Duration::from_secs(2),
        }
    }

    #[test]
    fn builds_and_trims() {
        let c = VaultClient::new(&settings("http://127.0.0.1:8200/")).unwrap();
        assert_eq!(c.address(), "http://127.0.0.1:8200");
        assert!(format!("{c:?}").contains("team-a"));
        assert!(matches!(
            VaultClient::new(&settings("127.0.0.1:8200")),
            Err(VaultError::Setting { .. })
        ));
        let mut s = settings("https://v:8200");
        s.ca_file = Some("/nonexistent/ca.pem".into());
        let e = VaultClient::new(&s).unwrap_err();
        assert!(e.to_string().contains("VAULT_CACERT"), "{e}");
    }

    #[tokio::test]
    async fn unreachable_is_retryable() {
        // A port nobody listens on (bound then released).
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let port = l.local_addr().unwrap().port();
        drop(l);
        let c = VaultClient::new(&settings(&format!("http://127.0.0.1:{port}"))).unwrap();
        let tok = SecretString::from("hvs.secret-token".to_string());
        let e = c.token_lookup_self(&tok).await.unwrap_err();
        assert!(e.retryable(), "{e:?}");
        assert_eq!(e.endpoint(), "auth/token/lookup-self");
        assert!(!format!("{e} {e:?}").contains("hvs.secret-token"));
    }
}
