//! Kubernetes auth method (contract §7.1).
//!
//! Simplification: the stand-in does NOT call the Kubernetes TokenReview API and
//! does not verify the JWT signature. It decodes the JWT payload and checks that
//! its service account (from `sub` = `system:serviceaccount:<ns>:<name>`, or the
//! `kubernetes.io` claims) matches the role's bound names and namespaces.

use std::collections::BTreeMap;
use std::sync::atomic::Ordering;
use std::sync::Arc;

use base64::Engine;
use serde_json::{json, Map, Value};

use super::http::{Op, Req};
use super::reply::{Env, HResult, Reply, VErr};
use super::state::{Inner, Store, TokenSource};
use super::token::{self, IssueSpec, TokenParams};
use super::util::{self, glob};

#[derive(Debug, Clone)]
pub(crate) struct K8sRole {
    pub names: Vec<String>,
    pub namespaces: Vec<String>,
    pub audience: String,
    pub token: TokenParams,
    pub entity_id: String,
}

#[derive(Debug, Default)]
pub(crate) struct K8sState {
    pub config: Map<String, Value>,
    pub roles: BTreeMap<String, K8sRole>,
}

pub(crate) fn role_token_params(st: &Store, mount: &str, role: &str) -> Option<TokenParams> {
    st.k8s
        .get(mount)
        .and_then(|k| k.roles.get(role))
        .map(|r| r.token.clone())
}

/// Service account identity claimed by a JWT.
struct Sa {
    namespace: String,
    name: String,
    uid: String,
    secret_name: String,
}

fn decode_jwt(jwt: &str) -> Option<Sa> {
    let payload = jwt.split('.').nth(1)?;
    let bytes = base64::engine::general_purpose::URL_SAFE_NO_PAD
        .decode(payload.trim_end_matches('='))
        .ok()?;
    let v: Value = serde_json::from_slice(&bytes).ok()?;
    let s = |p: &str| v.pointer(p).and_then(|x| x.as_str()).map(str::to_string);
    let (mut ns, mut name) = (None, None);
    if let Some(sub) = s("/sub") {
        if let Some(rest) = sub.strip_prefix("system:serviceaccount:") {
            if let Some((a, b)) = rest.split_once(':') {
                ns = Some(a.to_string());
                name = Some(b.to_string());
            }
        }
    }
    let ns = ns
        .or_else(|| s("/kubernetes.io~1serviceaccount~1namespace"))
        .or_else(|| s("/kubernetes.io/namespace"))?;
    let name = name
        .or_else(|| s("/kubernetes.io~1serviceaccount~1service-account.name"))
        .or_else(|| s("/kubernetes.io/serviceaccount/name"))?;
    Some(Sa {
        namespace: ns,
        name,
        uid: s("/kubernetes.io~1serviceaccount~1service-account.uid")
            .or_else(|| s("/kubernetes.io/serviceaccount/uid"))
            .unwrap_or_default(),
        secret_name: s("/kubernetes.io~1serviceaccount~1secret.name").unwrap_or_default(),
    })
}

pub(crate) fn handle(inner: &Arc<Inner>, r: &Req, mount: &str, rest: &str) -> HResult {
    let b = &r.body;
    let mut st = inner.lock();
    let ks = st.k8s.entry(mount.to_string()).or_default();
    match (rest, r.op) {
        ("config", Op::Write) => {
            for k in [
                "kubernetes_host",
                "kubernetes_ca_cert",
                "token_reviewer_jwt",
                "pem_keys",
                "issuer",
                "disable_iss_validation",
                "disable_local_ca_jwt",
            ] {
                if let Some(v) = b.get(k) {
                    if k != "token_reviewer_jwt" {
                        ks.config.insert(k.to_string(), v.clone());
                    }
                }
            }
            Ok(Reply::none())
        }
        ("config", Op::Read) => Ok(Reply::Env(Env::data(Value::Object(ks.config.clone())))),
        ("role", Op::List) => {
            let keys: Vec<&String> = ks.roles.keys().collect();
            if keys.is_empty() {
                return Err(VErr::not_found());
            }
            Ok(Reply::Env(Env::data(json!({ "keys": keys }))))
        }
        _ => {
            let Some(name) = rest.strip_prefix("role/") else {
                return Err(VErr::unsupported_path());
            };
            let name = name.to_lowercase();
            match r.op {
                Op::Write => {
                    let mut role = ks.roles.get(&name).cloned().unwrap_or(K8sRole {
                        names: vec![],
                        namespaces: vec![],
                        audience: String::new(),
                        token: TokenParams::default(),
                        entity_id: util::uuid(),
                    });
                    if let Some(v) = b.list("bound_service_account_names")? {
                        role.names = v;
                    }
                    if let Some(v) = b.list("bound_service_account_namespaces")? {
                        role.namespaces = v;
                    }
                    if let Some(v) = b.str("audience")? {
                        role.audience = v;
                    }
                    role.token.update_from(b)?;
                    if role.names.is_empty() {
                        return Err(VErr::bad(
                            "\"bound_service_account_names\" can not be empty",
                        ));
                    }
                    if role.namespaces.is_empty() {
                        return Err(VErr::bad(
                            "\"bound_service_account_namespaces\" can not be empty",
                        ));
                    }
                    ks.roles.insert(name, role);
                    Ok(Reply::none())
                }
                Op::Read => match ks.roles.get(&name) {
                    Some(role) => {
                        let mut m = Map::new();
                        m.insert("bound_service_account_names".into(), json!(role.names));
                        m.insert(
                            "bound_service_account_namespaces".into(),
                            json!(role.namespaces),
                        );
                        m.insert("audience".into(), json!(role.audience));
                        role.token.to_json(&mut m);
                        Ok(Reply::Env(Env::data(Value::Object(m))))
                    }
                    None => Err(VErr::not_found()),
                },
                Op::Delete => {
                    ks.roles.remove(&name);
                    Ok(Reply::none())
                }
                _ => Err(VErr::unsupported_op()),
            }
        }
    }
}

/// `POST auth/<mount>/login {"role","jwt"}`.
pub(crate) fn login(inner: &Arc<Inner>, r: &Req, mount: &str) -> HResult {
    let b = &r.body;
    let role_name = b.str("role")?.unwrap_or_default().to_lowercase();
    let jwt = b.str("jwt")?.unwrap_or_default();
    if role_name.is_empty() {
        return Err(VErr::bad("missing role"));
    }
    if jwt.is_empty() {
        return Err(VErr::bad("missing jwt"));
    }
    let mut st = inner.lock();
    let ks = st.k8s.entry(mount.to_string()).or_default();
    let Some(role) = ks.roles.get(&role_name).cloned() else {
        return Err(VErr::bad(format!("invalid role name \"{role_name}\"")));
    };
    let Some(sa) = decode_jwt(&jwt) else {
        return Err(VErr::plain_denied());
    };
    let name_ok = role.names.iter().any(|p| glob(p, &sa.name));
    let ns_ok = role.namespaces.iter().any(|p| glob(p, &sa.namespace));
    if !name_ok || !ns_ok {
        return Err(VErr::plain_denied());
    }
    let meta: BTreeMap<String, String> = [
        ("role", role_name.clone()),
        ("service_account_name", sa.name.clone()),
        ("service_account_namespace", sa.namespace.clone()),
        ("service_account_secret_name", sa.secret_name.clone()),
        ("service_account_uid", sa.uid.clone()),
    ]
    .into_iter()
    .map(|(k, v)| (k.to_string(), v))
    .collect();
    let prefix = mount
        .trim_start_matches("auth/")
        .trim_end_matches('/')
        .replace('/', "-");
    let (tok, warnings) = token::issue(
        &mut st,
        IssueSpec {
            params: role.token.clone(),
            meta,
            display_name: format!("{prefix}-{}-{}", sa.namespace, sa.name),
            path: format!("{mount}login"),
            parent: None,
            entity_id: role.entity_id.clone(),
            source: TokenSource::Role(mount.to_string(), role_name),
            mount: mount.to_string(),
            renewable: true,
        },
    )?;
    drop(st);
    inner.counters.logins.fetch_add(1, Ordering::Relaxed);
    Ok(Reply::Env(Env {
        auth: Some(token::auth_json(&tok, tok.creation_ttl)),
        warnings,
        mount_type: "kubernetes".into(),
        ..Env::default()
    }))
}
