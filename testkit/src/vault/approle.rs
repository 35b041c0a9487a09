//! AppRole auth method (contract §2): roles, RoleIDs, SecretIDs (num_uses, ttl),
//! login with user lockout.

use std::collections::{BTreeMap, HashMap};
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::SystemTime;

use serde_json::{json, Map, Value};

use super::http::{Op, Req};
use super::reply::{Env, HResult, Reply, VErr};
use super::state::{Inner, Store, TokenSource};
use super::token::{self, IssueSpec, TokenParams};
use super::util;

#[derive(Debug, Clone)]
pub(crate) struct Role {
    pub name: String,
    pub role_id: String,
    pub bind_secret_id: bool,
    pub secret_id_num_uses: i64,
    pub secret_id_ttl: i64,
    pub secret_id_bound_cidrs: Vec<String>,
    pub local_secret_ids: bool,
    pub token: TokenParams,
    pub entity_id: String,
}

#[derive(Debug, Clone)]
pub(crate) struct SecretId {
    pub accessor: String,
    pub role: String,
    pub num_uses: i64,
    pub ttl: i64,
    pub creation: SystemTime,
    pub expire: Option<SystemTime>,
    pub metadata: BTreeMap<String, String>,
    pub cidr_list: Vec<String>,
}

#[derive(Debug, Clone)]
struct Lock {
    failures: u32,
    last: SystemTime,
}

#[derive(Debug, Default)]
pub(crate) struct AppRoleState {
    pub roles: BTreeMap<String, Role>,
    /// SecretID value → entry.
    pub secret_ids: HashMap<String, SecretId>,
    lockout: HashMap<String, Lock>,
}

impl AppRoleState {
    /// Drops expired SecretIDs (Vault's periodic tidy).
    pub(crate) fn tidy(&mut self, now: SystemTime) {
        self.secret_ids
            .retain(|_, s| s.expire.map(|e| e > now).unwrap_or(true));
    }
}

pub(crate) fn role_token_params(st: &Store, mount: &str, role: &str) -> Option<TokenParams> {
    st.approle
        .get(mount)
        .and_then(|a| a.roles.get(role))
        .map(|r| r.token.clone())
}

fn state<'a>(st: &'a mut Store, mount: &str) -> &'a mut AppRoleState {
    st.approle.entry(mount.to_string()).or_default()
}

fn role_json(r: &Role) -> Value {
    let mut m = Map::new();
    m.insert("bind_secret_id".into(), json!(r.bind_secret_id));
    m.insert("local_secret_ids".into(), json!(r.local_secret_ids));
    m.insert(
        "secret_id_bound_cidrs".into(),
        json!(r.secret_id_bound_cidrs),
    );
    m.insert("secret_id_num_uses".into(), json!(r.secret_id_num_uses));
    m.insert("secret_id_ttl".into(), json!(r.secret_id_ttl));
    r.token.to_json(&mut m);
    Value::Object(m)
}

fn write_role(inner: &Inner, r: &Req, mount: &str, name: &str) -> HResult {
    let b = &r.body;
    let mut st = inner.lock();
    let mount_max = st
        .auth_mounts
        .get(mount)
        .map(|m| m.eff_max())
        .unwrap_or(util::SYSTEM_TTL);
    let existing = state(&mut st, mount).roles.get(name).cloned();
    let creating = existing.is_none();
    let mut role = existing.unwrap_or_else(|| Role {
        name: name.to_string(),
        role_id: util::uuid(),
        bind_secret_id: true,
        secret_id_num_uses: 0,
        secret_id_ttl: 0,
        secret_id_bound_cidrs: Vec::new(),
        local_secret_ids: false,
        token: TokenParams::default(),
        entity_id: util::uuid(),
    });
    if let Some(v) = b.bool("bind_secret_id")? {
        role.bind_secret_id = v;
    }
    if let Some(v) = b.int("secret_id_num_uses")? {
        if v < 0 {
            return Err(VErr::bad("secret_id_num_uses cannot be negative"));
        }
        role.secret_id_num_uses = v;
    }
    if let Some(v) = b.duration("secret_id_ttl")? {
        role.secret_id_ttl = v;
    }
    if let Some(v) = b
        .list("secret_id_bound_cidrs")?
        .or(b.list("bound_cidr_list")?)
    {
        role.secret_id_bound_cidrs = v;
    }
    if let Some(v) = b.bool("local_secret_ids")? {
        if creating {
            role.local_secret_ids = v;
        }
    }
    if let Some(v) = b.str("role_id")? {
        if !v.is_empty() {
            role.role_id = v;
        }
    }
    role.token.update_from(b)?;
    if !role.bind_secret_id && role.secret_id_bound_cidrs.is_empty() {
        return Err(VErr::internal(
            "at least one constraint should be enabled on the role",
        ));
    }
    let mut warnings = Vec::new();
    if role.token.max_ttl > mount_max {
        warnings.push("token_max_ttl is greater than the backend mount's maximum TTL value; issued tokens' max TTL value will be truncated".to_string());
    }
    state(&mut st, mount).roles.insert(name.to_string(), role);
    Ok(Reply::NoContent(warnings))
}

fn gen_secret_id(inner: &Inner, r: &Req, mount: &str, name: &str, custom: bool) -> HResult {
    let b = &r.body;
    let now = SystemTime::now();
    let metadata: BTreeMap<String, String> = match b.str("metadata")? {
        Some(s) if !s.trim().is_empty() => {
            let v: Value = serde_json::from_str(&s)
                .map_err(|e| VErr::bad(format!("failed to parse metadata: {e}")))?;
            match v {
                Value::Object(m) => m
                    .into_iter()
                    .map(|(k, v)| (k, v.as_str().map(str::to_string).unwrap_or(v.to_string())))
                    .collect(),
                _ => return Err(VErr::bad("failed to parse metadata: not an object")),
            }
        }
        _ => BTreeMap::new(),
    };
    let cidr_list = b.list("cidr_list")?.unwrap_or_default();
    let _ = b.list("token_bound_cidrs")?;
    let num_uses = b.int("num_uses")?;
    let ttl = b.duration("ttl")?;
    let custom_value = if custom {
        Some(b.str("secret_id")?.unwrap_or_default())
    } else {
        None
    };
    let mut st = inner.lock();
    let ar = state(&mut st, mount);
    let role = ar
        .roles
        .get(name)
        .cloned()
        .ok_or_else(|| VErr::bad(format!("role \"{name}\" does not exist")))?;
    let num_uses = match num_uses {
        None => role.secret_id_num_uses,
        Some(n) if n < 0 => return Err(VErr::bad("num_uses cannot be negative")),
        Some(n) => {
            if role.secret_id_num_uses > 0 && (n == 0 || n > role.secret_id_num_uses) {
                return Err(VErr::bad(
                    "num_uses cannot be higher than the role's secret_id_num_uses",
                ));
            }
            n
        }
    };
    let ttl = match ttl {
        None => role.secret_id_ttl,
        Some(t) => {
            if role.secret_id_ttl > 0 && (t == 0 || t > role.secret_id_ttl) {
                return Err(VErr::bad(
                    "ttl cannot be longer than the role's secret_id_ttl",
                ));
            }
            t
        }
    };
    let secret_id = match custom_value {
        Some(v) if v.is_empty() => return Err(VErr::bad("secret_id is required")),
        Some(v) => v,
        None => util::uuid(),
    };
    if ar.secret_ids.contains_key(&secret_id) {
        return Err(VErr::bad("SecretID is already registered"));
    }
    let accessor = util::uuid();
    st.issued.push(secret_id.clone());
    let ar = state(&mut st, mount);
    ar.secret_ids.insert(
        secret_id.clone(),
        SecretId {
            accessor: accessor.clone(),
            role: name.to_string(),
            num_uses,
            ttl,
            creation: now,
            expire: (ttl > 0).then(|| util::add_secs(now, ttl)),
            metadata,
            cidr_list,
        },
    );
    Ok(Reply::Env(Env {
        data: Some(json!({
            "secret_id": secret_id,
            "secret_id_accessor": accessor,
            "secret_id_ttl": ttl,
            "secret_id_num_uses": num_uses,
        })),
        wrapped_accessor: accessor,
        mount_type: "approle".into(),
        ..Env::default()
    }))
}

fn secret_id_json(s: &SecretId) -> Value {
    json!({
        "secret_id_accessor": s.accessor,
        "secret_id_num_uses": s.num_uses,
        "secret_id_ttl": s.ttl,
        "creation_time": util::rfc3339(s.creation),
        "expiration_time": s.expire.map(util::rfc3339).unwrap_or_else(|| "0001-01-01T00:00:00Z".into()),
        "last_updated_time": util::rfc3339(s.creation),
        "metadata": s.metadata,
        "cidr_list": s.cidr_list,
        "token_bound_cidrs": [],
    })
}

/// SecretID sub-endpoints: lookup/destroy by value or accessor, LIST accessors.
fn secret_id_ops(inner: &Inner, r: &Req, mount: &str, name: &str, sub: &str) -> HResult {
    let b = &r.body;
    let mut st = inner.lock();
    let ar = state(&mut st, mount);
    if !ar.roles.contains_key(name) {
        return Err(VErr::bad(format!("role \"{name}\" does not exist")));
    }
    let by_accessor = sub.starts_with("secret-id-accessor/");
    let key = if by_accessor {
        let acc = b.str("secret_id_accessor")?.unwrap_or_default();
        ar.secret_ids
            .iter()
            .find(|(_, s)| s.accessor == acc && s.role == name)
            .map(|(k, _)| k.clone())
    } else {
        let v = b.str("secret_id")?.unwrap_or_default();
        ar.secret_ids
            .get(&v)
            .filter(|s| s.role == name)
            .map(|_| v.clone())
    };
    if sub.ends_with("/lookup") {
        return match key.and_then(|k| ar.secret_ids.get(&k)) {
            Some(s) => Ok(Reply::Env(Env::data(secret_id_json(s)))),
            None if by_accessor => Err(VErr::internal(
                "failed to find accessor entry for secret_id_accessor",
            )),
            None => Ok(Reply::none()),
        };
    }
    if let Some(k) = key {
        ar.secret_ids.remove(&k);
    }
    Ok(Reply::none())
}

pub(crate) fn handle(inner: &Arc<Inner>, r: &Req, mount: &str, rest: &str) -> HResult {
    if rest == "role" {
        if r.op != Op::List {
            return Err(VErr::unsupported_op());
        }
        let mut st = inner.lock();
        let keys: Vec<String> = state(&mut st, mount).roles.keys().cloned().collect();
        if keys.is_empty() {
            return Err(VErr::not_found());
        }
        return Ok(Reply::Env(Env::data(json!({ "keys": keys }))));
    }
    if rest.starts_with("tidy/") {
        inner
            .lock()
            .approle
            .values_mut()
            .for_each(|a| a.tidy(SystemTime::now()));
        return Ok(Reply::none());
    }
    let Some(tail) = rest.strip_prefix("role/") else {
        return Err(VErr::unsupported_path());
    };
    let (name, sub) = match tail.split_once('/') {
        Some((n, s)) => (n.to_lowercase(), s),
        None => (tail.to_lowercase(), ""),
    };
    match (sub, r.op) {
        ("", Op::Write) => write_role(inner, r, mount, &name),
        ("", Op::Read) => {
            let mut st = inner.lock();
            match state(&mut st, mount).roles.get(&name) {
                Some(role) => Ok(Reply::Env(Env::data(role_json(role)))),
                None => Err(VErr::not_found()),
            }
        }
        ("", Op::Delete) => {
            let mut st = inner.lock();
            let ar = state(&mut st, mount);
            ar.roles.remove(&name);
            ar.secret_ids.retain(|_, s| s.role != name);
            Ok(Reply::none())
        }
        ("role-id", Op::Read) => {
            let mut st = inner.lock();
            match state(&mut st, mount).roles.get(&name) {
                Some(role) => Ok(Reply::Env(Env::data(json!({ "role_id": role.role_id })))),
                None => Err(VErr::not_found()),
            }
        }
        ("role-id", Op::Write) => {
            let v = r.body.str("role_id")?.unwrap_or_default();
            if v.is_empty() {
                return Err(VErr::bad("missing role_id"));
            }
            let mut st = inner.lock();
            let ar = state(&mut st, mount);
            if ar.roles.values().any(|x| x.role_id == v && x.name != name) {
                return Err(VErr::bad("role_id already in use"));
            }
            match ar.roles.get_mut(&name) {
                Some(role) => {
                    role.role_id = v;
                    Ok(Reply::none())
                }
                None => Err(VErr::bad(format!("role \"{name}\" does not exist"))),
            }
        }
        ("secret-id", Op::Write) => gen_secret_id(inner, r, mount, &name, false),
        ("custom-secret-id", Op::Write) => gen_secret_id(inner, r, mount, &name, true),
        ("secret-id", Op::List) => {
            let mut st = inner.lock();
            let keys: Vec<String> = state(&mut st, mount)
                .secret_ids
                .values()
                .filter(|s| s.role == name)
                .map(|s| s.accessor.clone())
                .collect();
            if keys.is_empty() {
                return Err(VErr::not_found());
            }
            Ok(Reply::Env(Env::data(json!({ "keys": keys }))))
        }
        (
            "secret-id/lookup"
            | "secret-id/destroy"
            | "secret-id-accessor/lookup"
            | "secret-id-accessor/destroy",
            Op::Write | Op::Delete,
        ) => secret_id_ops(inner, r, mount, &name, sub),
        ("" | "role-id" | "secret-id" | "custom-secret-id", _) => Err(VErr::unsupported_op()),
        _ => Err(VErr::unsupported_path()),
    }
}

/// `POST auth/<mount>/login` (contract §2.4).
pub(crate) fn login(inner: &Arc<Inner>, r: &Req, mount: &str) -> HResult {
    let b = &r.body;
    let role_id = b.str("role_id")?.unwrap_or_default();
    let secret_id = b.str("secret_id")?.unwrap_or_default();
    if role_id.trim().is_empty() {
        return Err(VErr::bad("missing role_id"));
    }
    let now = SystemTime::now();
    let mut st = inner.lock();
    let lock_cfg = inner.lockout.clone();
    let ar = state(&mut st, mount);
    let Some(role) = ar.roles.values().find(|x| x.role_id == role_id).cloned() else {
        return Err(VErr::bad("invalid role or secret ID"));
    };
    if let Some(l) = ar.lockout.get(&role_id) {
        let fresh = now
            .duration_since(l.last)
            .map(|d| d < lock_cfg.duration)
            .unwrap_or(true);
        if !fresh {
            ar.lockout.remove(&role_id);
        } else if l.failures >= lock_cfg.threshold {
            return Err(VErr::plain_denied());
        }
    }
    let mut metadata = BTreeMap::new();
    if role.bind_secret_id {
        if secret_id.is_empty() {
            return Err(VErr::bad("missing secret_id"));
        }
        let valid = ar
            .secret_ids
            .get(&secret_id)
            .filter(|s| s.role == role.name && s.expire.map(|e| e > now).unwrap_or(true))
            .cloned();
        let Some(sid) = valid else {
            let l = ar.lockout.entry(role_id.clone()).or_insert(Lock {
                failures: 0,
                last: now,
            });
            l.failures += 1;
            l.last = now;
            inner.counters.failed_logins.fetch_add(1, Ordering::Relaxed);
            return Err(VErr::bad("invalid role or secret ID"));
        };
        if sid.num_uses > 0 {
            if sid.num_uses == 1 {
                ar.secret_ids.remove(&secret_id);
            } else if let Some(s) = ar.secret_ids.get_mut(&secret_id) {
                s.num_uses -= 1;
            }
        }
        metadata = sid.metadata.clone();
    }
    ar.lockout.remove(&role_id);
    metadata.insert("role_name".into(), role.name.clone());
    let display = mount
        .trim_start_matches("auth/")
        .trim_end_matches('/')
        .replace('/', "-");
    let (tok, warnings) = token::issue(
        &mut st,
        IssueSpec {
            params: role.token.clone(),
            meta: metadata,
            display_name: display,
            path: format!("{mount}login"),
            parent: None,
            entity_id: role.entity_id.clone(),
            source: TokenSource::Role(mount.to_string(), role.name.clone()),
            mount: mount.to_string(),
            renewable: true,
        },
    )?;
    drop(st);
    inner.counters.logins.fetch_add(1, Ordering::Relaxed);
    Ok(Reply::Env(Env {
        auth: Some(token::auth_json(&tok, tok.creation_ttl)),
        warnings,
        wrapped_accessor: tok.accessor.clone(),
        mount_type: "approle".into(),
        ..Env::default()
    }))
}
