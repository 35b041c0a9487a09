//! Token store: issuing tokens for auth methods, `auth/token/*` endpoints
//! (lookup/renew/revoke self, create, lookup/revoke by token or accessor).

use std::collections::BTreeMap;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::SystemTime;

use serde_json::{json, Value};

use super::http::{Op, Req};
use super::reply::{Env, HResult, Reply, VErr};
use super::router::Caller;
use super::state::{calculate_ttl, Inner, Store, Token, TokenSource, TokenType};
use super::util::{self, Body};

/// The `token_*` fields shared by AppRole and Kubernetes roles (contract §2.1).
#[derive(Debug, Clone, Default)]
pub(crate) struct TokenParams {
    pub ttl: i64,
    pub max_ttl: i64,
    pub policies: Vec<String>,
    pub no_default_policy: bool,
    pub num_uses: i64,
    pub period: i64,
    pub explicit_max_ttl: i64,
    pub ttype: String,
    pub bound_cidrs: Vec<String>,
}

impl TokenParams {
    /// Applies `token_*` fields present in `b` on top of `self`.
    pub(crate) fn update_from(&mut self, b: &Body) -> Result<(), VErr> {
        if let Some(v) = b.duration("token_ttl")? {
            self.ttl = v;
        }
        if let Some(v) = b.duration("token_max_ttl")? {
            self.max_ttl = v;
        }
        if let Some(v) = b.list("policies")? {
            self.policies = v;
        }
        if let Some(v) = b.list("token_policies")? {
            self.policies = v;
        }
        if let Some(v) = b.bool("token_no_default_policy")? {
            self.no_default_policy = v;
        }
        if let Some(v) = b.int("token_num_uses")? {
            if v < 0 {
                return Err(VErr::bad("token_num_uses cannot be negative"));
            }
            self.num_uses = v;
        }
        if let Some(v) = b.duration("token_period")? {
            self.period = v;
        }
        if let Some(v) = b.duration("token_explicit_max_ttl")? {
            self.explicit_max_ttl = v;
        }
        if let Some(v) = b.str("token_type")? {
            match v.as_str() {
                "" | "default" | "service" | "batch" | "default-service" | "default-batch" => {
                    self.ttype = v
                }
                _ => return Err(VErr::bad(format!("invalid 'token_type' value {v:?}"))),
            }
        }
        if let Some(v) = b.list("token_bound_cidrs")? {
            self.bound_cidrs = v;
        }
        if self.ttl > 0 && self.max_ttl > 0 && self.ttl > self.max_ttl {
            return Err(VErr::bad(
                "\"token_ttl\" value must be less than \"token_max_ttl\" value",
            ));
        }
        Ok(())
    }

    pub(crate) fn to_json(&self, out: &mut serde_json::Map<String, Value>) {
        out.insert("token_ttl".into(), json!(self.ttl));
        out.insert("token_max_ttl".into(), json!(self.max_ttl));
        out.insert("token_policies".into(), json!(self.policies));
        out.insert("policies".into(), json!(self.policies));
        out.insert(
            "token_no_default_policy".into(),
            json!(self.no_default_policy),
        );
        out.insert("token_num_uses".into(), json!(self.num_uses));
        out.insert("token_period".into(), json!(self.period));
        out.insert("period".into(), json!(self.period));
        out.insert(
            "token_explicit_max_ttl".into(),
            json!(self.explicit_max_ttl),
        );
        let tt = if self.ttype.is_empty() {
            "default"
        } else {
            &self.ttype
        };
        out.insert("token_type".into(), json!(tt));
        out.insert("token_bound_cidrs".into(), json!(self.bound_cidrs));
    }

    pub(crate) fn token_type(&self) -> TokenType {
        if self.ttype == "batch" || self.ttype == "default-batch" {
            TokenType::Batch
        } else {
            TokenType::Service
        }
    }
}

/// Everything needed to mint a token.
pub(crate) struct IssueSpec {
    pub params: TokenParams,
    pub meta: BTreeMap<String, String>,
    pub display_name: String,
    pub path: String,
    pub parent: Option<String>,
    pub entity_id: String,
    pub source: TokenSource,
    pub mount: String,
    pub renewable: bool,
}

fn sanitize_policies(mut p: Vec<String>, add_default: bool) -> Vec<String> {
    if add_default && !p.iter().any(|x| x == "root") {
        p.push("default".into());
    }
    let mut p: Vec<String> = p
        .into_iter()
        .map(|s| s.trim().to_lowercase())
        .filter(|s| !s.is_empty())
        .collect();
    p.sort();
    p.dedup();
    p
}

/// Mints and stores a token; returns it with any TTL-capping warnings.
pub(crate) fn issue(st: &mut Store, spec: IssueSpec) -> Result<(Token, Vec<String>), VErr> {
    let now = SystemTime::now();
    let mount = st
        .auth_mounts
        .get(&spec.mount)
        .cloned()
        .unwrap_or_else(|| super::state::Mount::new("token", "auth/token/"));
    let p = &spec.params;
    let calc = calculate_ttl(
        now,
        mount.eff_default(),
        mount.eff_max(),
        0,
        p.ttl,
        p.period,
        p.max_ttl,
        p.explicit_max_ttl,
        now,
    )
    .map_err(VErr::bad)?;
    let ttype = p.token_type();
    let policies = sanitize_policies(p.policies.clone(), !p.no_default_policy);
    let (id, accessor) = match ttype {
        TokenType::Service => (format!("hvs.{}", util::base62(24)), util::base62(24)),
        TokenType::Batch => (format!("hvb.{}", util::base62(40)), String::new()),
    };
    let t = Token {
        id,
        accessor,
        policies,
        meta: spec.meta,
        display_name: spec.display_name,
        path: spec.path,
        orphan: spec.parent.is_none(),
        parent: spec.parent,
        ttype,
        issue_time: now,
        creation_ttl: calc.ttl,
        expire: (calc.ttl > 0).then(|| util::add_secs(now, calc.ttl)),
        last_renewal: None,
        explicit_max_ttl: p.explicit_max_ttl,
        period: p.period,
        num_uses: if ttype == TokenType::Batch {
            0
        } else {
            p.num_uses
        },
        renewable: spec.renewable && ttype == TokenType::Service,
        entity_id: spec.entity_id,
        source: spec.source,
        mount: spec.mount,
        backend_ttl: p.ttl,
        backend_max_ttl: p.max_ttl,
    };
    st.insert_token(t.clone());
    Ok((t, calc.warnings))
}

fn meta_json(m: &BTreeMap<String, String>) -> Value {
    if m.is_empty() {
        Value::Null
    } else {
        json!(m)
    }
}

/// The `auth` object of a login/renew response.
pub(crate) fn auth_json(t: &Token, lease_duration: i64) -> Value {
    json!({
        "client_token": t.id,
        "accessor": t.accessor,
        "policies": t.policies,
        "token_policies": t.policies,
        "metadata": meta_json(&t.meta),
        "lease_duration": lease_duration,
        "renewable": t.renewable,
        "entity_id": t.entity_id,
        "token_type": t.ttype.as_str(),
        "orphan": t.orphan,
        "mfa_requirement": null,
        "num_uses": t.num_uses,
    })
}

/// The `data` of a token lookup.
pub(crate) fn lookup_json(t: &Token, now: SystemTime, show_id: bool) -> Value {
    let mut d = json!({
        "accessor": t.accessor,
        "creation_time": util::unix(t.issue_time),
        "creation_ttl": t.creation_ttl,
        "display_name": t.display_name,
        "entity_id": t.entity_id,
        "expire_time": t.expire.map(util::rfc3339),
        "explicit_max_ttl": t.explicit_max_ttl,
        "id": if show_id { t.id.as_str() } else { "" },
        "issue_time": util::rfc3339(t.issue_time),
        "meta": meta_json(&t.meta),
        "num_uses": t.num_uses,
        "orphan": t.orphan,
        "path": t.path,
        "policies": t.policies,
        "renewable": t.renewable,
        "ttl": t.ttl(now),
        "type": t.ttype.as_str(),
    });
    if let Some(obj) = d.as_object_mut() {
        if t.period > 0 {
            obj.insert("period".into(), json!(t.period));
        }
        if let Some(lr) = t.last_renewal {
            obj.insert("last_renewal_time".into(), json!(util::unix(lr)));
            obj.insert("last_renewal".into(), json!(util::rfc3339(lr)));
        }
    }
    d
}

/// Renews token `id` (contract §3.2).
pub(crate) fn renew(inner: &Inner, id: &str, increment: i64) -> HResult {
    let now = SystemTime::now();
    let mut st = inner.lock();
    let tok = st
        .live_token(id, now)
        .cloned()
        .ok_or_else(VErr::invalid_token)?;
    if tok.ttype == TokenType::Batch {
        return Err(VErr::bad("batch tokens cannot be renewed"));
    }
    if !tok.renewable || tok.expire.is_none() {
        return Err(VErr::bad("lease is not renewable"));
    }
    let (backend_ttl, backend_max) = match &tok.source {
        TokenSource::Role(m, role) => super::approle::role_token_params(&st, m, role)
            .or_else(|| super::kubernetes::role_token_params(&st, m, role))
            .map(|p| (p.ttl, p.max_ttl))
            .ok_or_else(|| VErr::bad(format!("role {role:?} does not exist during renewal")))?,
        _ => (tok.backend_ttl, tok.backend_max_ttl),
    };
    let mount = st
        .auth_mounts
        .get(&tok.mount)
        .cloned()
        .unwrap_or_else(|| super::state::Mount::new("token", "auth/token/"));
    let calc = calculate_ttl(
        now,
        mount.eff_default(),
        mount.eff_max(),
        increment,
        backend_ttl,
        tok.period,
        backend_max,
        tok.explicit_max_ttl,
        tok.issue_time,
    )
    .map_err(VErr::bad)?;
    let t = st.tokens.get_mut(id).ok_or_else(VErr::invalid_token)?;
    t.expire = Some(util::add_secs(now, calc.ttl));
    t.last_renewal = Some(now);
    let t = t.clone();
    drop(st);
    inner
        .counters
        .token_renewals
        .fetch_add(1, Ordering::Relaxed);
    Ok(Reply::Env(Env {
        auth: Some(auth_json(&t, calc.ttl)),
        warnings: calc.warnings,
        mount_type: "token".into(),
        ..Env::default()
    }))
}

fn revoke(inner: &Inner, t: &Token) -> HResult {
    if t.ttype == TokenType::Batch {
        return Err(VErr::bad("batch tokens cannot be revoked"));
    }
    inner.lock().revoke_token(&t.id, SystemTime::now());
    Ok(Reply::none())
}

fn find_by_accessor(inner: &Inner, acc: &str) -> Option<Token> {
    let st = inner.lock();
    let id = st.accessors.get(acc)?;
    st.live_token(id, SystemTime::now()).cloned()
}

fn find(inner: &Inner, id: &str) -> Option<Token> {
    inner.lock().live_token(id, SystemTime::now()).cloned()
}

fn create(inner: &Inner, r: &Req, c: &Caller, orphan: bool) -> HResult {
    let b = &r.body;
    let mut p = TokenParams {
        policies: b.list("policies")?.unwrap_or_else(|| {
            c.token
                .policies
                .iter()
                .filter(|p| *p != "default")
                .cloned()
                .collect()
        }),
        no_default_policy: b.bool("no_default_policy")?.unwrap_or(false),
        ttl: b.duration("ttl")?.unwrap_or(0),
        explicit_max_ttl: b.duration("explicit_max_ttl")?.unwrap_or(0),
        period: b.duration("period")?.unwrap_or(0),
        num_uses: b.int("num_uses")?.unwrap_or(0),
        ttype: b.str_or("type", "service")?,
        ..TokenParams::default()
    };
    if p.num_uses < 0 {
        return Err(VErr::bad("number of uses cannot be negative"));
    }
    if !matches!(p.ttype.as_str(), "service" | "batch") {
        return Err(VErr::bad(format!("unsupported token type {:?}", p.ttype)));
    }
    if !c.token.is_root() {
        // Non-root callers may only hand out a subset of their own policies.
        let own = &c.token.policies;
        if let Some(bad) = p
            .policies
            .iter()
            .find(|x| *x != "default" && !own.contains(x))
        {
            return Err(VErr::bad(format!(
                "child policies must be subset of parent: {bad:?}"
            )));
        }
    }
    if p.policies.iter().any(|x| x == "root") {
        p.no_default_policy = true;
    }
    let display = b.str("display_name")?.unwrap_or_default();
    let display_name = if display.is_empty() {
        "token".to_string()
    } else {
        format!("token-{}", display.to_lowercase().replace(' ', "-"))
    };
    let meta: BTreeMap<String, String> = match b.get("meta") {
        Some(Value::Object(m)) => m
            .iter()
            .map(|(k, v)| (k.clone(), v.as_str().unwrap_or_default().to_string()))
            .collect(),
        _ => BTreeMap::new(),
    };
    let orphan = orphan || b.bool("no_parent")?.unwrap_or(false);
    let renewable = b.bool("renewable")?.unwrap_or(true);
    let _ = b.get("id");
    let mut st = inner.lock();
    let (t, warnings) = issue(
        &mut st,
        IssueSpec {
            params: p,
            meta,
            display_name,
            path: if orphan {
                "auth/token/create-orphan".into()
            } else {
                "auth/token/create".into()
            },
            parent: (!orphan).then(|| c.token.id.clone()),
            entity_id: String::new(),
            source: TokenSource::TokenStore,
            mount: "auth/token/".into(),
            renewable,
        },
    )?;
    let ttl = t.ttl(SystemTime::now());
    Ok(Reply::Env(Env {
        auth: Some(auth_json(&t, ttl)),
        warnings,
        mount_type: "token".into(),
        ..Env::default()
    }))
}

fn body_increment(b: &Body) -> Result<i64, VErr> {
    Ok(b.duration("increment")?.unwrap_or(0))
}

pub(crate) fn handle(inner: &Arc<Inner>, r: &Req, c: &Caller, rest: &str) -> HResult {
    let now = SystemTime::now();
    let b = &r.body;
    let lookup_env = |t: &Token, show: bool| {
        Ok(Reply::Env(Env {
            data: Some(lookup_json(t, now, show)),
            mount_type: "token".into(),
            ..Env::default()
        }))
    };
    let write = r.op == Op::Write;
    match rest {
        "lookup-self" if matches!(r.op, Op::Read | Op::Write) => {
            let cur = find(inner, &c.token.id).unwrap_or_else(|| c.token.clone());
            lookup_env(&cur, true)
        }
        "renew-self" if write => renew(inner, &c.token.id, body_increment(b)?),
        "revoke-self" if write => revoke(inner, &c.token),
        "create" if write => create(inner, r, c, false),
        "create-orphan" if write => create(inner, r, c, true),
        "lookup" if matches!(r.op, Op::Read | Op::Write) => {
            let id = b.str("token")?.unwrap_or_default();
            if id.is_empty() {
                return Err(VErr::bad("missing token to look up"));
            }
            let t = find(inner, &id).ok_or_else(|| VErr::bad("bad token"))?;
            lookup_env(&t, true)
        }
        "lookup-accessor" if write => {
            let acc = b.str("accessor")?.unwrap_or_default();
            let t = find_by_accessor(inner, &acc).ok_or_else(|| VErr::bad("invalid accessor"))?;
            lookup_env(&t, false)
        }
        "renew" if write => {
            let id = b.str("token")?.unwrap_or_default();
            let inc = body_increment(b)?;
            if find(inner, &id).is_none() {
                return Err(VErr::bad("invalid token"));
            }
            renew(inner, &id, inc)
        }
        "revoke" if write => {
            let id = b.str("token")?.unwrap_or_default();
            match find(inner, &id) {
                Some(t) => revoke(inner, &t),
                None => Ok(Reply::none()),
            }
        }
        "revoke-accessor" if write => {
            let acc = b.str("accessor")?.unwrap_or_default();
            match find_by_accessor(inner, &acc) {
                Some(t) => revoke(inner, &t),
                None => Err(VErr::bad("invalid accessor")),
            }
        }
        "lookup-self" | "renew-self" | "revoke-self" | "create" | "create-orphan" | "lookup"
        | "lookup-accessor" | "renew" | "revoke" | "revoke-accessor" => Err(VErr::unsupported_op()),
        _ => Err(VErr::unsupported_path()),
    }
}
