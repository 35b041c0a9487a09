//! One-call setup over the HTTP API, the way an operator (or config/vault-init.sh)
//! configures Vault: database engine, MySQL connection, dynamic role, policy,
//! AppRole role; returns a RoleID and SecretID.

use anyhow::{bail, Result};
use serde_json::{json, Value};

use super::client::VaultHttp;

/// What to configure. `Default` gives a role `app` with TTL 1h / max 24h and an
/// AppRole role `sqlease` whose policy is the minimal one sqlease needs.
#[derive(Debug, Clone)]
pub struct MysqlProvision {
    pub mysql_host: String,
    pub mysql_port: u16,
    pub admin_user: String,
    pub admin_password: String,
    /// `database/config/<connection>`.
    pub connection: String,
    /// `database/roles/<role>`.
    pub role: String,
    pub default_ttl: String,
    pub max_ttl: String,
    pub creation_statements: Vec<String>,
    /// Empty = the plugin default (REVOKE ALL + DROP USER).
    pub revocation_statements: Vec<String>,
    pub policy: String,
    pub approle_role: String,
    pub token_ttl: String,
    pub token_max_ttl: String,
    /// `"service"` or `"batch"`.
    pub token_type: String,
}

impl Default for MysqlProvision {
    fn default() -> Self {
        Self {
            mysql_host: "127.0.0.1".into(),
            mysql_port: 3306,
            admin_user: "root".into(),
            admin_password: String::new(),
            connection: "mysql".into(),
            role: "app".into(),
            default_ttl: "1h".into(),
            max_ttl: "24h".into(),
            creation_statements: vec![
                "CREATE USER '{{name}}'@'%' IDENTIFIED BY '{{password}}'".into(),
                "GRANT ALL PRIVILEGES ON *.* TO '{{name}}'@'%'".into(),
            ],
            revocation_statements: vec![],
            policy: "sqlease".into(),
            approle_role: "sqlease".into(),
            token_ttl: "1h".into(),
            token_max_ttl: "24h".into(),
            token_type: "service".into(),
        }
    }
}

/// Credentials for the AppRole login.
#[derive(Clone)]
pub struct Provisioned {
    pub role_id: String,
    pub secret_id: String,
}

impl std::fmt::Debug for Provisioned {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Provisioned")
            .field("role_id", &self.role_id)
            .field("secret_id", &"[redacted]")
            .finish()
    }
}

/// The minimal policy for a proxy using dynamic role `role`.
pub fn minimal_policy(role: &str) -> String {
    format!(
        "path \"database/creds/{role}\" {{\n  capabilities = [\"read\"]\n}}\n\
         path \"sys/leases/renew\" {{\n  capabilities = [\"update\"]\n}}\n\
         path \"sys/leases/revoke\" {{\n  capabilities = [\"update\"]\n}}\n"
    )
}

async fn ok(
    http: &VaultHttp,
    token: &str,
    method: &str,
    path: &str,
    body: Value,
    tolerate: Option<&str>,
) -> Result<Value> {
    let body = (!body.is_null()).then_some(body);
    let r = http.call(method, path, Some(token), body.as_ref()).await?;
    if r.status >= 400 {
        let errs = r.errors().join("; ");
        if let Some(t) = tolerate {
            if errs.contains(t) {
                return Ok(Value::Null);
            }
        }
        bail!("{method} {path}: HTTP {}: {errs}", r.status);
    }
    Ok(r.json)
}

/// Configures Vault at `base` with `token` (root or an admin token).
pub async fn provision(base: &str, token: &str, p: &MysqlProvision) -> Result<Provisioned> {
    let http = VaultHttp::new(base);
    let t = token;
    ok(
        &http,
        t,
        "POST",
        "sys/mounts/database",
        json!({"type": "database"}),
        Some("path is already in use"),
    )
    .await?;
    ok(
        &http,
        t,
        "POST",
        "sys/auth/approle",
        json!({"type": "approle"}),
        Some("path is already in use"),
    )
    .await?;
    ok(
        &http,
        t,
        "POST",
        &format!("database/config/{}", p.connection),
        json!({
            "plugin_name": "mysql-database-plugin",
            "connection_url": format!("{{{{username}}}}:{{{{password}}}}@tcp({}:{})/", p.mysql_host, p.mysql_port),
            "username": p.admin_user,
            "password": p.admin_password,
            "allowed_roles": [p.role],
        }),
        None,
    )
    .await?;
    let mut role = json!({
        "db_name": p.connection,
        "creation_statements": p.creation_statements,
        "default_ttl": p.default_ttl,
        "max_ttl": p.max_ttl,
    });
    if !p.revocation_statements.is_empty() {
        role["revocation_statements"] = json!(p.revocation_statements);
    }
    ok(
        &http,
        t,
        "POST",
        &format!("database/roles/{}", p.role),
        role,
        None,
    )
    .await?;
    ok(
        &http,
        t,
        "PUT",
        &format!("sys/policies/acl/{}", p.policy),
        json!({ "policy": minimal_policy(&p.role) }),
        None,
    )
    .await?;
    ok(
        &http,
        t,
        "POST",
        &format!("auth/approle/role/{}", p.approle_role),
        json!({
            "token_policies": [p.policy],
            "token_ttl": p.token_ttl,
            "token_max_ttl": p.token_max_ttl,
            "token_type": p.token_type,
        }),
        None,
    )
    .await?;
    let rid = ok(
        &http,
        t,
        "GET",
        &format!("auth/approle/role/{}/role-id", p.approle_role),
        Value::Null,
        None,
    )
    .await?;
    let sid = ok(
        &http,
        t,
        "POST",
        &format!("auth/approle/role/{}/secret-id", p.approle_role),
        json!({}),
        None,
    )
    .await?;
    let role_id = rid
        .pointer("/data/role_id")
        .and_then(|v| v.as_str())
        .unwrap_or_default();
    let secret_id = sid
        .pointer("/data/secret_id")
        .and_then(|v| v.as_str())
        .unwrap_or_default();
    if role_id.is_empty() || secret_id.is_empty() {
        bail!("vault returned no role_id/secret_id");
    }
    Ok(Provisioned {
        role_id: role_id.to_string(),
        secret_id: secret_id.to_string(),
    })
}

impl super::VaultStandin {
    /// [`provision`] against this stand-in with its root token.
    pub async fn provision_mysql(&self, p: &MysqlProvision) -> Result<Provisioned> {
        provision(&self.url(), self.root_token(), p).await
    }
}
