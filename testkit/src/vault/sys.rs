//! `sys/*` endpoints other than leases: health, seal status, mounts and auth
//! methods (+tune), ACL policies, response-wrapping lookup/unwrap.

use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::SystemTime;

use serde_json::{json, Map, Value};

use super::acl;
use super::http::{Op, Req};
use super::reply::{Env, HResult, Reply, VErr};
use super::router::Caller;
use super::state::{Inner, Mount};
use super::util;

pub(crate) const VERSION: &str = "1.17.0+standin";

fn code_param(r: &Req, key: &str, default: u16) -> Result<u16, VErr> {
    match r.body.str(key)? {
        None => Ok(default),
        Some(s) => s
            .parse::<u16>()
            .map_err(|_| VErr::bad(format!("unable to parse {key}: invalid syntax"))),
    }
}

/// `GET|HEAD sys/health` (contract §7.3).
pub(crate) fn health(r: &Req, sealed: bool) -> HResult {
    let active = code_param(r, "activecode", 200)?;
    let standby_ok = r.body.bool("standbyok")?.unwrap_or(false);
    let _ = r.body.bool("perfstandbyok")?;
    for k in [
        "standbycode",
        "drsecondarycode",
        "performancestandbycode",
        "uninitcode",
        "removedcode",
    ] {
        code_param(r, k, 0)?;
    }
    let sealed_code = code_param(r, "sealedcode", 503)?;
    let _ = standby_ok;
    let code = if sealed { sealed_code } else { active };
    if r.op == Op::Head {
        return Ok(Reply::Status(code));
    }
    let now = util::unix(SystemTime::now());
    Ok(Reply::Raw(
        code,
        json!({
            "initialized": true,
            "sealed": sealed,
            "standby": false,
            "performance_standby": false,
            "replication_performance_mode": "disabled",
            "replication_dr_mode": "disabled",
            "server_time_utc": now,
            "version": VERSION,
            "cluster_name": if sealed { Value::Null } else { json!("vault-cluster-standin") },
            "cluster_id": if sealed { Value::Null } else { json!("00000000-0000-0000-0000-000000000000") },
            "enterprise": false,
            "echo_duration_ms": 0,
            "clock_skew_ms": 0,
        }),
    ))
}

pub(crate) fn seal_status(inner: &Inner) -> HResult {
    let sealed = inner.knobs.sealed.load(Ordering::Relaxed);
    Ok(Reply::Raw(
        200,
        json!({
            "type": "shamir", "initialized": true, "sealed": sealed, "t": 1, "n": 1,
            "progress": 0, "nonce": "", "version": VERSION, "build_date": "",
            "migration": false, "recovery_seal": false, "storage_type": "inmem",
        }),
    ))
}

pub(crate) fn wrap_lookup(inner: &Inner, r: &Req) -> HResult {
    let t = r.body.str("token")?.or(r.token.clone()).unwrap_or_default();
    let st = inner.lock();
    let w = st
        .wraps
        .get(&t)
        .ok_or_else(|| VErr::bad("wrapping token is not valid or does not exist"))?;
    Ok(Reply::Env(Env::data(json!({
        "creation_path": w.creation_path,
        "creation_time": util::rfc3339(w.creation_time),
        "creation_ttl": w.ttl,
    }))))
}

/// `POST sys/wrapping/unwrap`: the wrapping token as `X-Vault-Token` (no body), or another
/// valid token plus `{"token": ...}`.
pub(crate) fn unwrap(inner: &Inner, r: &Req) -> HResult {
    if r.op != Op::Write {
        return Err(VErr::unsupported_op());
    }
    let body_token = r.body.str("token")?.unwrap_or_default();
    let now = SystemTime::now();
    let mut st = inner.lock();
    let wrap_token = if body_token.is_empty() {
        r.token.clone().unwrap_or_default()
    } else {
        let caller = r.token.as_deref().unwrap_or("");
        if st.live_token(caller, now).is_none() && !st.wraps.contains_key(caller) {
            return Err(VErr::invalid_token());
        }
        body_token
    };
    let w = st
        .wraps
        .remove(&wrap_token)
        .filter(|w| util::add_secs(w.creation_time, w.ttl) > now)
        .ok_or_else(|| VErr::bad("wrapping token is not valid or does not exist"))?;
    Ok(Reply::Raw(200, w.response))
}

fn mount_json(m: &Mount) -> Value {
    json!({
        "type": m.mtype,
        "description": m.description,
        "accessor": m.accessor,
        "uuid": m.uuid,
        "config": {
            "default_lease_ttl": m.default_ttl,
            "max_lease_ttl": m.max_ttl,
            "force_no_cache": false,
        },
        "local": false,
        "seal_wrap": false,
        "external_entropy_access": false,
        "options": null,
        "plugin_version": "",
        "running_plugin_version": "",
    })
}

fn tune_json(m: &Mount) -> Value {
    json!({
        "default_lease_ttl": m.eff_default(),
        "max_lease_ttl": m.eff_max(),
        "force_no_cache": false,
        "description": m.description,
    })
}

fn top(data: Value) -> HResult {
    Ok(Reply::Env(Env {
        data: Some(data),
        top_level: true,
        mount_type: "system".into(),
        ..Env::default()
    }))
}

/// Mount/unmount/tune for secret engines (`auth == false`) and auth methods.
fn mounts(inner: &Inner, r: &Req, rest: &str, auth: bool) -> HResult {
    let prefix = if auth { "auth/" } else { "" };
    let (path, tune) = match rest.strip_suffix("/tune") {
        Some(p) => (p, true),
        None => (rest, false),
    };
    let key = format!("{prefix}{}/", path.trim_matches('/'));
    let mut st = inner.lock();
    let table = if auth {
        &mut st.auth_mounts
    } else {
        &mut st.mounts
    };
    if path.is_empty() {
        if r.op != Op::Read {
            return Err(VErr::unsupported_op());
        }
        let mut m = Map::new();
        for (k, v) in table.iter() {
            m.insert(k.trim_start_matches(prefix).to_string(), mount_json(v));
        }
        return top(Value::Object(m));
    }
    let b = &r.body;
    match (tune, r.op) {
        (true, Op::Read) => match table.get(&key) {
            Some(m) => top(tune_json(m)),
            None => Err(VErr::bad(format!(
                "cannot fetch sysview for path \"{key}\""
            ))),
        },
        (true, Op::Write) => {
            let d = b.duration("default_lease_ttl")?;
            let x = b.duration("max_lease_ttl")?;
            let desc = b.str("description")?;
            let m = table
                .get_mut(&key)
                .ok_or_else(|| VErr::bad(format!("cannot tune '{key}': no mount at that path")))?;
            if let Some(x) = x {
                m.max_ttl = x;
            }
            if let Some(d) = d {
                if d > m.eff_max() {
                    return Err(VErr::bad(
                        "tune of default lease TTL failed: default lease TTL cannot be greater than max lease TTL",
                    ));
                }
                m.default_ttl = d;
            }
            if let Some(desc) = desc {
                m.description = desc;
            }
            Ok(Reply::none())
        }
        (false, Op::Write) => {
            let mtype = b.str("type")?.unwrap_or_default();
            let desc = b.str("description")?.unwrap_or_default();
            let cfg = b.get("config").cloned();
            let _ = (b.get("options"), b.get("local"), b.get("seal_wrap"));
            let supported: &[&str] = if auth {
                &["approle", "kubernetes"]
            } else {
                &["database", "kv", "cubbyhole"]
            };
            if mtype.is_empty() {
                return Err(VErr::bad("plugin not found in the catalog: "));
            }
            if !supported.contains(&mtype.as_str()) {
                return Err(VErr::bad(format!(
                    "plugin not found in the catalog: {mtype}"
                )));
            }
            let taken = table
                .keys()
                .any(|k| k.starts_with(&key) || key.starts_with(k.as_str()));
            if taken || key == "sys/" || key.starts_with("auth/token/") {
                return Err(VErr::bad(format!("path is already in use at {key}")));
            }
            let mut m = Mount::new(&mtype, &key);
            m.description = desc;
            if let Some(c) = cfg {
                if let Some(v) = c.get("default_lease_ttl") {
                    m.default_ttl = util::parse_duration(v).unwrap_or(0);
                }
                if let Some(v) = c.get("max_lease_ttl") {
                    m.max_ttl = util::parse_duration(v).unwrap_or(0);
                }
            }
            table.insert(key, m);
            Ok(Reply::none())
        }
        (false, Op::Delete) => {
            if key == "sys/" || key == "auth/token/" || key == "cubbyhole/" {
                return Err(VErr::bad(format!("cannot unmount \"{key}\"")));
            }
            table.remove(&key);
            if auth {
                st.approle.remove(&key);
                st.k8s.remove(&key);
            } else {
                st.db.remove(&key);
                let now = SystemTime::now();
                for l in st.leases.values_mut() {
                    if l.mount == key {
                        l.expire = now;
                    }
                }
            }
            Ok(Reply::none())
        }
        (false, Op::Read) => match table.get(&key) {
            Some(m) => top(mount_json(m)),
            None => Err(VErr::not_found()),
        },
        _ => Err(VErr::unsupported_op()),
    }
}

/// `sys/policy[/name]` (old API, field `rules`) and `sys/policies/acl[/name]` (field `policy`).
fn policies(inner: &Inner, r: &Req, name: &str, new_api: bool) -> HResult {
    let mut st = inner.lock();
    let field = if new_api { "policy" } else { "rules" };
    if name.is_empty() {
        if !matches!(r.op, Op::Read | Op::List) {
            return Err(VErr::unsupported_op());
        }
        let mut keys: Vec<String> = st.policies.keys().cloned().collect();
        keys.push("root".into());
        keys.sort();
        return top(json!({ "keys": keys, "policies": keys }));
    }
    let name = name.to_lowercase();
    match r.op {
        Op::Read => {
            if name == "root" {
                return top(json!({ "name": "root", field: "" }));
            }
            match st.policies.get(&name) {
                Some(p) => top(json!({ "name": p.name, field: p.text })),
                None => Err(VErr::not_found()),
            }
        }
        Op::Write => {
            let text = r
                .body
                .str("policy")?
                .or(r.body.str("rules")?)
                .unwrap_or_default();
            if name == "root" {
                return Err(VErr::bad("cannot update \"root\" policy"));
            }
            let text = match base64_policy(&text) {
                Some(t) => t,
                None => text,
            };
            let p = acl::parse(&name, &text)
                .map_err(|e| VErr::bad(format!("failed to parse policy: {e}")))?;
            st.policies.insert(name, p);
            Ok(Reply::none())
        }
        Op::Delete => {
            if name == "root" || name == "default" {
                return Err(VErr::bad(format!("cannot delete \"{name}\" policy")));
            }
            st.policies.remove(&name);
            Ok(Reply::none())
        }
        _ => Err(VErr::unsupported_op()),
    }
}

/// Vault accepts base64-encoded policy text.
fn base64_policy(s: &str) -> Option<String> {
    use base64::Engine;
    if s.contains('"') || s.contains('{') {
        return None;
    }
    base64::engine::general_purpose::STANDARD
        .decode(s.trim())
        .ok()
        .and_then(|b| String::from_utf8(b).ok())
}

pub(crate) async fn handle(inner: &Arc<Inner>, r: &Req, c: &Caller) -> HResult {
    let p = r.path.as_str();
    if p == "sys/mounts" || p.starts_with("sys/mounts/") {
        let rest = p.trim_start_matches("sys/mounts").trim_start_matches('/');
        return mounts(inner, r, rest, false);
    }
    if p == "sys/auth" || p.starts_with("sys/auth/") {
        let rest = p.trim_start_matches("sys/auth").trim_start_matches('/');
        return mounts(inner, r, rest, true);
    }
    if p == "sys/policy" || p.starts_with("sys/policy/") {
        let rest = p.trim_start_matches("sys/policy").trim_start_matches('/');
        return policies(inner, r, rest, false);
    }
    if p == "sys/policies/acl" || p.starts_with("sys/policies/acl/") {
        let rest = p
            .trim_start_matches("sys/policies/acl")
            .trim_start_matches('/');
        return policies(inner, r, rest, true);
    }
    match (p, r.op) {
        ("sys/seal", Op::Write) => {
            inner.knobs.sealed.store(true, Ordering::Relaxed);
            Ok(Reply::none())
        }
        ("sys/capabilities-self", Op::Write) => {
            let paths = r
                .body
                .list("paths")?
                .or(r.body.list("path")?)
                .unwrap_or_default();
            let st = inner.lock();
            let mut m = Map::new();
            for path in &paths {
                let caps = if c.token.is_root() {
                    vec!["root".to_string()]
                } else {
                    let caps = acl::capabilities(
                        c.token.policies.iter().filter_map(|x| st.policies.get(x)),
                        path,
                    );
                    if caps.is_empty() {
                        vec!["deny".to_string()]
                    } else {
                        caps
                    }
                };
                m.insert(path.clone(), json!(caps));
            }
            if paths.len() == 1 {
                let caps = m.values().next().cloned().unwrap_or(Value::Null);
                m.insert("capabilities".into(), caps);
            }
            top(Value::Object(m))
        }
        _ => Err(VErr::unsupported_path()),
    }
}
