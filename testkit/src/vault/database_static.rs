//! Database engine, static roles (contract §4.7) and root rotation (§4.8).

use std::time::SystemTime;

use serde_json::{json, Value};

use super::database::{conn_for, db, stmts};
use super::http::Req;
use super::reply::{HResult, Reply, VErr};
use super::sql;
use super::state::Inner;
use super::util;

#[derive(Debug, Clone)]
pub(crate) struct StaticRole {
    pub db_name: String,
    pub username: String,
    pub rotation_period: i64,
    pub rotation_statements: Vec<String>,
    pub password: String,
    pub last_rotation: SystemTime,
    pub rotating: bool,
}

/// Sets a new password for a static role's user (contract §4.7).
pub(crate) async fn rotate_static(inner: &Inner, mount: &str, name: &str) -> Result<(), VErr> {
    let (role, conn) = {
        let mut st = inner.lock();
        let d = db(&mut st, mount);
        let role = d
            .statics
            .get(name)
            .cloned()
            .ok_or_else(|| VErr::bad(format!("unknown role: {name}")))?;
        let conn = conn_for(d, &role.db_name, name)?;
        (role, conn)
    };
    let password = sql::password();
    let statements = if role.rotation_statements.is_empty() {
        vec![sql::DEFAULT_ROTATION.to_string()]
    } else {
        role.rotation_statements.clone()
    };
    let u = role.username.as_str();
    let res = sql::exec(
        &conn,
        &statements,
        &[("name", u), ("username", u), ("password", &password)],
    )
    .await;
    let mut st = inner.lock();
    if let Some(s) = db(&mut st, mount).statics.get_mut(name) {
        s.rotating = false;
        if res.is_ok() {
            s.password = password;
            s.last_rotation = SystemTime::now();
        }
    }
    res.map_err(|e| VErr::internal(&e))
}

pub(crate) async fn write_static(inner: &Inner, r: &Req, mount: &str, name: &str) -> HResult {
    let b = &r.body;
    let creating;
    {
        let mut st = inner.lock();
        let d = db(&mut st, mount);
        if d.roles.contains_key(name) {
            return Err(VErr::bad("Role and Static Role names must be unique"));
        }
        creating = !d.statics.contains_key(name);
        let mut s = d.statics.get(name).cloned().unwrap_or(StaticRole {
            db_name: String::new(),
            username: String::new(),
            rotation_period: 0,
            rotation_statements: vec![],
            password: String::new(),
            last_rotation: SystemTime::now(),
            rotating: false,
        });
        if let Some(v) = b.str("db_name")? {
            s.db_name = v;
        }
        if s.db_name.is_empty() {
            return Err(VErr::bad("database name is a required field"));
        }
        if let Some(v) = b.str("username")? {
            if !creating && v != s.username {
                return Err(VErr::bad("cannot update static account username"));
            }
            s.username = v;
        }
        if s.username.is_empty() {
            return Err(VErr::bad(
                "username is a required field to create a static account",
            ));
        }
        if let Some(v) = b.duration("rotation_period")? {
            s.rotation_period = v;
        }
        if s.rotation_period < 5 {
            return Err(VErr::bad("rotation_period must be 5 seconds or more"));
        }
        if let Some(v) = stmts(r, "rotation_statements")? {
            s.rotation_statements = v;
        }
        d.statics.insert(name.to_string(), s);
    }
    if creating {
        if let Err(e) = rotate_static(inner, mount, name).await {
            db(&mut inner.lock(), mount).statics.remove(name);
            return Err(e);
        }
    }
    Ok(Reply::none())
}

pub(crate) fn static_json(s: &StaticRole, now: SystemTime, with_password: bool) -> Value {
    let next = util::add_secs(s.last_rotation, s.rotation_period);
    let mut v = json!({
        "db_name": s.db_name,
        "username": s.username,
        "last_vault_rotation": util::rfc3339(s.last_rotation),
        "rotation_period": s.rotation_period,
        "ttl": util::secs_until(next, now).min(s.rotation_period),
    });
    if let Some(o) = v.as_object_mut() {
        if with_password {
            o.insert("password".into(), json!(s.password));
            o.remove("db_name");
        } else {
            o.insert("rotation_statements".into(), json!(s.rotation_statements));
            o.insert("credential_type".into(), json!("password"));
        }
    }
    v
}

pub(crate) async fn rotate_root(inner: &Inner, mount: &str, name: &str) -> HResult {
    let conn = db(&mut inner.lock(), mount)
        .configs
        .get(name)
        .cloned()
        .ok_or_else(|| {
            VErr::bad(format!(
                "failed to find entry for connection with name: \"{name}\""
            ))
        })?;
    if conn.username.is_empty() || !conn.connection_url.contains("{{password}}") {
        return Err(VErr::bad(
            "unable to rotate root credentials: no username or templated password in configuration",
        ));
    }
    let password = sql::password();
    let statements = if conn.root_rotation_statements.is_empty() {
        vec![sql::DEFAULT_ROTATION.to_string()]
    } else {
        conn.root_rotation_statements.clone()
    };
    let u = conn.username.clone();
    sql::exec(
        &conn,
        &statements,
        &[("name", &u), ("username", &u), ("password", &password)],
    )
    .await
    .map_err(|e| VErr::internal(&format!("failed to update user: {e}")))?;
    if let Some(c) = db(&mut inner.lock(), mount).configs.get_mut(name) {
        c.password = password;
    }
    Ok(Reply::none())
}
