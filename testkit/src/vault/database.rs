//! Database secrets engine (contract §4): connections, dynamic roles, creds
//! (executed against the real MySQL/MariaDB), static roles with rotation.

use std::collections::BTreeMap;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::SystemTime;

use serde_json::{json, Value};

use super::database_static::{rotate_root, rotate_static, static_json, write_static, StaticRole};
use super::http::{Op, Req};
use super::reply::{Env, HResult, Reply, VErr};
use super::router::Caller;
use super::sql::{self, ConnCfg};
use super::state::{cap_warning, Inner, Lease, Store, TokenType};
use super::util::{self, glob};

#[derive(Debug, Clone)]
pub(crate) struct DbRole {
    pub db_name: String,
    pub creation: Vec<String>,
    pub revocation: Vec<String>,
    pub rollback: Vec<String>,
    pub renew: Vec<String>,
    pub default_ttl: i64,
    pub max_ttl: i64,
    pub credential_type: String,
}

#[derive(Debug, Default)]
pub(crate) struct DbState {
    pub configs: BTreeMap<String, ConnCfg>,
    pub roles: BTreeMap<String, DbRole>,
    pub statics: BTreeMap<String, StaticRole>,
}

pub(crate) fn db<'a>(st: &'a mut Store, mount: &str) -> &'a mut DbState {
    st.db.entry(mount.to_string()).or_default()
}

pub(crate) fn stmts(r: &Req, key: &str) -> Result<Option<Vec<String>>, VErr> {
    match r.body.get(key) {
        None => Ok(None),
        Some(v) => sql::parse_statements(v)
            .map(Some)
            .ok_or_else(|| VErr::bad(format!("error converting input for field \"{key}\""))),
    }
}

fn list_keys<I: Iterator<Item = String>>(keys: I) -> HResult {
    let keys: Vec<String> = keys.collect();
    if keys.is_empty() {
        return Err(VErr::not_found());
    }
    Ok(Reply::Env(Env::data(json!({ "keys": keys }))))
}

async fn write_config(inner: &Inner, r: &Req, mount: &str, name: &str) -> HResult {
    let b = &r.body;
    let existing = db(&mut inner.lock(), mount).configs.get(name).cloned();
    let mut c = existing.unwrap_or(ConnCfg {
        plugin: String::new(),
        connection_url: String::new(),
        username: String::new(),
        password: String::new(),
        allowed_roles: vec![],
        verify: true,
        max_open: 4,
        max_idle: 0,
        max_lifetime: "0s".into(),
        username_template: String::new(),
        password_policy: String::new(),
        root_rotation_statements: vec![],
    });
    if let Some(v) = b.str("plugin_name")? {
        c.plugin = v;
    }
    if let Some(v) = b.str("connection_url")? {
        c.connection_url = v;
    }
    if let Some(v) = b.str("username")? {
        c.username = v;
    }
    if let Some(v) = b.str("password")? {
        c.password = v;
    }
    if let Some(v) = b.list("allowed_roles")? {
        c.allowed_roles = v;
    }
    if let Some(v) = b.bool("verify_connection")? {
        c.verify = v;
    }
    if let Some(v) = b.int("max_open_connections")? {
        c.max_open = v;
    }
    if let Some(v) = b.int("max_idle_connections")? {
        c.max_idle = v;
    }
    if let Some(v) = b.str("max_connection_lifetime")? {
        c.max_lifetime = v;
    }
    if let Some(v) = b.str("username_template")? {
        c.username_template = v;
    }
    if let Some(v) = b.str("password_policy")? {
        c.password_policy = v;
    }
    if let Some(v) = stmts(r, "root_rotation_statements")? {
        c.root_rotation_statements = v;
    }
    for k in [
        "plugin_version",
        "disable_escaping",
        "tls_ca",
        "tls_certificate_key",
        "tls_server_name",
        "tls_skip_verify",
    ] {
        let _ = b.get(k);
    }
    if c.plugin.is_empty() {
        return Err(VErr::bad("empty plugin name"));
    }
    if !sql::PLUGINS.contains(&c.plugin.as_str()) {
        return Err(VErr::bad(format!(
            "error creating database object: plugin not found in the catalog: {}",
            c.plugin
        )));
    }
    if c.connection_url.is_empty() {
        return Err(VErr::bad(
            "error creating database object: connection_url cannot be empty",
        ));
    }
    if !c.username_template.is_empty() {
        sql::render_template(&c.username_template, "display", "role").map_err(|e| {
            VErr::bad(format!(
                "error creating database object: invalid username template: {e}"
            ))
        })?;
    }
    c.opts()
        .map_err(|e| VErr::bad(format!("error creating database object: {e}")))?;
    if c.verify {
        sql::verify(&c).await.map_err(|e| {
            VErr::bad(format!(
                "error creating database object: error verifying connection: {e}"
            ))
        })?;
    }
    let mut warnings = vec![];
    if c.literal_password_in_url() {
        warnings.push("Password found in connection_url, use a templated url to enable root rotation and prevent read access to password information.".to_string());
    }
    db(&mut inner.lock(), mount)
        .configs
        .insert(name.to_string(), c);
    Ok(Reply::NoContent(warnings))
}

fn config_json(c: &ConnCfg) -> Value {
    json!({
        "allowed_roles": c.allowed_roles,
        "connection_details": {
            "connection_url": c.connection_url,
            "username": c.username,
            "max_open_connections": c.max_open,
            "max_idle_connections": c.max_idle,
            "max_connection_lifetime": c.max_lifetime,
        },
        "password_policy": c.password_policy,
        "plugin_name": c.plugin,
        "plugin_version": "",
        "root_credentials_rotate_statements": c.root_rotation_statements,
        "verify_connection": c.verify,
        "username_template": c.username_template,
    })
}

fn write_role(inner: &Inner, r: &Req, mount: &str, name: &str) -> HResult {
    let b = &r.body;
    let mut st = inner.lock();
    let d = db(&mut st, mount);
    if d.statics.contains_key(name) {
        return Err(VErr::bad("Role and Static Role names must be unique"));
    }
    let mut role = d.roles.get(name).cloned().unwrap_or(DbRole {
        db_name: String::new(),
        creation: vec![],
        revocation: vec![],
        rollback: vec![],
        renew: vec![],
        default_ttl: 0,
        max_ttl: 0,
        credential_type: "password".into(),
    });
    if let Some(v) = b.str("db_name")? {
        role.db_name = v;
    }
    if role.db_name.is_empty() {
        return Err(VErr::bad("database name is required"));
    }
    if let Some(v) = stmts(r, "creation_statements")? {
        role.creation = v;
    }
    if let Some(v) = stmts(r, "revocation_statements")? {
        role.revocation = v;
    }
    if let Some(v) = stmts(r, "rollback_statements")? {
        role.rollback = v;
    }
    if let Some(v) = stmts(r, "renew_statements")? {
        role.renew = v;
    }
    if let Some(v) = b.duration("default_ttl")? {
        role.default_ttl = v;
    }
    if let Some(v) = b.duration("max_ttl")? {
        role.max_ttl = v;
    }
    if let Some(v) = b.str("credential_type")? {
        role.credential_type = v;
    }
    let _ = b.get("credential_config");
    d.roles.insert(name.to_string(), role);
    Ok(Reply::none())
}

fn role_json(r: &DbRole) -> Value {
    json!({
        "db_name": r.db_name,
        "creation_statements": r.creation,
        "revocation_statements": r.revocation,
        "rollback_statements": r.rollback,
        "renew_statements": r.renew,
        "default_ttl": r.default_ttl,
        "max_ttl": r.max_ttl,
        "credential_type": r.credential_type,
        "credential_config": {},
    })
}

fn allowed(c: &ConnCfg, role: &str) -> bool {
    c.allowed_roles.iter().any(|p| glob(p, role))
}

/// Looks up the connection for `db_name`, enforcing `allowed_roles`.
pub(crate) fn conn_for(d: &DbState, db_name: &str, role: &str) -> Result<ConnCfg, VErr> {
    let c = d.configs.get(db_name).ok_or_else(|| {
        VErr::internal(&format!(
            "failed to find entry for connection with name: \"{db_name}\""
        ))
    })?;
    if !allowed(c, role) {
        return Err(VErr::internal(&format!(
            "\"{role}\" is not an allowed role"
        )));
    }
    Ok(c.clone())
}

/// `GET database/creds/:role` (contract §4.4).
async fn creds(inner: &Inner, r: &Req, c: &Caller, mount: &str, role_name: &str) -> HResult {
    let now = SystemTime::now();
    let (role, conn, ttl, warnings, mount_max) = {
        let mut st = inner.lock();
        let mnt = st.mounts.get(mount).cloned();
        let d = db(&mut st, mount);
        let role = d
            .roles
            .get(role_name)
            .cloned()
            .ok_or_else(|| VErr::bad(format!("unknown role: {role_name}")))?;
        let conn = conn_for(d, &role.db_name, role_name)?;
        let (mdef, mmax) = mnt
            .map(|m| (m.eff_default(), m.eff_max()))
            .unwrap_or((util::SYSTEM_TTL, util::SYSTEM_TTL));
        let want = if role.default_ttl > 0 {
            role.default_ttl
        } else {
            mdef
        };
        let max = if role.max_ttl > 0 && role.max_ttl < mmax {
            role.max_ttl
        } else {
            mmax
        };
        let mut warnings = vec![];
        let mut ttl = want;
        if want > max {
            warnings.push(cap_warning(want, max));
            ttl = max;
        }
        if c.token.ttype == TokenType::Batch {
            ttl = ttl.min(c.token.ttl(now));
        }
        (role, conn, ttl, warnings, max)
    };
    let _ = (r, mount_max);
    if role.creation.is_empty() {
        return Err(VErr::internal("empty creation statements"));
    }
    let username = sql::username(&conn, &c.token.display_name, role_name)
        .map_err(|e| VErr::internal(&format!("unable to generate username: {e}")))?;
    let password = sql::password();
    let expire = util::add_secs(now, ttl);
    let expiration = util::sql_time(expire);
    let subs = [
        ("name", username.as_str()),
        ("username", username.as_str()),
        ("password", password.as_str()),
        ("expiration", expiration.as_str()),
    ];
    sql::exec(&conn, &role.creation, &subs)
        .await
        .map_err(|e| VErr::internal(&e))?;
    inner.counters.creds_issued.fetch_add(1, Ordering::Relaxed);
    inner.lock().issued.push(password.clone());
    let lease_id = format!("{}/{}", r.path, util::base62(24));
    let lease = Lease {
        id: lease_id.clone(),
        mount: mount.to_string(),
        role: role_name.to_string(),
        issue_time: now,
        expire,
        last_renewal: None,
        token: c.token.id.clone(),
        batch_cap: (c.token.ttype == TokenType::Batch)
            .then_some(c.token.expire)
            .flatten(),
        db_name: role.db_name.clone(),
        username: username.clone(),
        revocation_statements: role.revocation.clone(),
        revoking: false,
        attempts: 0,
        next_attempt: now,
        irrevocable: false,
    };
    // A token whose last use this was, or which died meanwhile, takes the lease down at once.
    let token_alive = inner.lock().live_token(&c.token.id, now).is_some();
    if c.last_use || !token_alive {
        let _ = revoke_sql(inner, &lease).await;
        inner
            .counters
            .leases_revoked
            .fetch_add(1, Ordering::Relaxed);
        if c.last_use {
            return Err(VErr::bad("Secret cannot be returned; token had one use left, so leased credentials were immediately revoked."));
        }
        return Err(VErr::invalid_token());
    }
    inner.lock().leases.insert(lease_id.clone(), lease);
    Ok(Reply::Env(Env {
        data: Some(json!({ "username": username, "password": password })),
        lease_id,
        renewable: true,
        lease_duration: ttl,
        warnings,
        mount_type: "database".into(),
        ..Env::default()
    }))
}

/// Runs a lease's revocation statements (role's current ones, else the lease's, else the default).
pub(crate) async fn revoke_sql(inner: &Inner, lease: &Lease) -> Result<(), String> {
    let (conn, statements) = {
        let mut st = inner.lock();
        let d = db(&mut st, &lease.mount);
        let conn = d.configs.get(&lease.db_name).cloned().ok_or_else(|| {
            format!(
                "failed to find entry for connection with name: \"{}\"",
                lease.db_name
            )
        })?;
        let mut s = d
            .roles
            .get(&lease.role)
            .map(|r| r.revocation.clone())
            .unwrap_or_else(|| lease.revocation_statements.clone());
        if s.is_empty() {
            s = vec![sql::DEFAULT_REVOCATION.to_string()];
        }
        (conn, s)
    };
    let u = lease.username.as_str();
    sql::exec(&conn, &statements, &[("name", u), ("username", u)]).await
}

pub(crate) async fn handle(
    inner: &Arc<Inner>,
    r: &Req,
    c: &Caller,
    mount: &str,
    rest: &str,
) -> HResult {
    let (kind, name) = match rest.split_once('/') {
        Some((k, n)) => (k, n),
        None => (rest, ""),
    };
    let env = |v: Value| {
        Ok(Reply::Env(Env {
            data: Some(v),
            mount_type: "database".into(),
            ..Env::default()
        }))
    };
    let now = SystemTime::now();
    match (kind, name.is_empty(), r.op) {
        ("config", true, Op::List) => {
            list_keys(db(&mut inner.lock(), mount).configs.keys().cloned())
        }
        ("roles", true, Op::List) => list_keys(db(&mut inner.lock(), mount).roles.keys().cloned()),
        ("static-roles", true, Op::List) => {
            list_keys(db(&mut inner.lock(), mount).statics.keys().cloned())
        }
        ("config", false, Op::Write) => write_config(inner, r, mount, name).await,
        ("config", false, Op::Read) => match db(&mut inner.lock(), mount).configs.get(name) {
            Some(cfg) => env(config_json(cfg)),
            None => Err(VErr::not_found()),
        },
        ("config", false, Op::Delete) => {
            db(&mut inner.lock(), mount).configs.remove(name);
            Ok(Reply::none())
        }
        ("reset", false, Op::Write) => Ok(Reply::none()),
        ("roles", false, Op::Write) => write_role(inner, r, mount, name),
        ("roles", false, Op::Read) => match db(&mut inner.lock(), mount).roles.get(name) {
            Some(role) => env(role_json(role)),
            None => Err(VErr::not_found()),
        },
        ("roles", false, Op::Delete) => {
            db(&mut inner.lock(), mount).roles.remove(name);
            Ok(Reply::none())
        }
        ("creds", false, Op::Read) => creds(inner, r, c, mount, name).await,
        ("static-roles", false, Op::Write) => write_static(inner, r, mount, name).await,
        ("static-roles", false, Op::Read) => match db(&mut inner.lock(), mount).statics.get(name) {
            Some(s) => env(static_json(s, now, false)),
            None => Err(VErr::not_found()),
        },
        ("static-roles", false, Op::Delete) => {
            db(&mut inner.lock(), mount).statics.remove(name);
            Ok(Reply::none())
        }
        ("static-creds", false, Op::Read) => {
            let mut st = inner.lock();
            let d = db(&mut st, mount);
            let s = d
                .statics
                .get(name)
                .cloned()
                .ok_or_else(|| VErr::bad(format!("unknown role: {name}")))?;
            conn_for(d, &s.db_name, name)?;
            env(static_json(&s, now, true))
        }
        ("rotate-role", false, Op::Write) => {
            rotate_static(inner, mount, name).await?;
            Ok(Reply::none())
        }
        ("rotate-root", false, Op::Write) => rotate_root(inner, mount, name).await,
        (
            "config" | "roles" | "static-roles" | "creds" | "static-creds" | "rotate-role"
            | "rotate-root" | "reset",
            _,
            _,
        ) => Err(VErr::unsupported_op()),
        _ => Err(VErr::unsupported_path()),
    }
}
