//! Request routing: unauthenticated paths, token check, ACL enforcement
//! (deny by default), token use counting, then the backend for the path.

use std::sync::Arc;
use std::time::SystemTime;

use super::http::{Op, Req};
use super::reply::{HResult, VErr};
use super::state::{Inner, Token};
use super::{acl, approle, database, kubernetes, leases, sys, token};

/// The authenticated caller of a request.
pub(crate) struct Caller {
    /// Snapshot of the token as it was when the request arrived.
    pub token: Token,
    /// This request consumed the token's last use (contract §3.4).
    pub last_use: bool,
}

/// Paths that need `sudo` on top of the operation's capability.
fn needs_sudo(r: &Req) -> bool {
    let p = r.path.as_str();
    p.starts_with("sys/leases/revoke-prefix")
        || p.starts_with("sys/leases/revoke-force")
        || (p.starts_with("sys/leases/lookup") && r.op == Op::List)
        || (p.starts_with("sys/auth/") && r.op != Op::Read)
        || p.starts_with("sys/seal")
}

pub(crate) fn required_cap(op: Op) -> &'static [&'static str] {
    match op {
        Op::Read | Op::Head => &["read"],
        Op::List => &["list"],
        Op::Write => &["update", "create"],
        Op::Delete => &["delete"],
    }
}

pub(crate) async fn dispatch(inner: &Arc<Inner>, r: &Req) -> HResult {
    let path = r.path.as_str();
    match path {
        "sys/seal-status" => return sys::seal_status(inner),
        "sys/wrapping/lookup" => return sys::wrap_lookup(inner, r),
        "sys/wrapping/unwrap" => return sys::unwrap(inner, r),
        _ => {}
    }
    // Login endpoints are unauthenticated; a bad token header is ignored there.
    let login_mount = {
        let st = inner.lock();
        st.auth_mount_for(path)
            .filter(|m| path == format!("{m}login"))
            .and_then(|m| st.auth_mounts.get(&m).map(|mt| (m, mt.mtype.clone())))
    };
    if let Some((mount, mtype)) = login_mount {
        if r.op != Op::Write {
            return Err(VErr::unsupported_op());
        }
        return match mtype.as_str() {
            "approle" => approle::login(inner, r, &mount),
            "kubernetes" => kubernetes::login(inner, r, &mount),
            _ => Err(VErr::unsupported_path()),
        };
    }
    let caller = authenticate(inner, r)?;
    route(inner, r, &caller).await
}

/// Resolves the token, checks the ACL and consumes a use.
fn authenticate(inner: &Inner, r: &Req) -> Result<Caller, VErr> {
    let now = SystemTime::now();
    let mut st = inner.lock();
    let id = r.token.as_deref().ok_or_else(VErr::invalid_token)?;
    let tok = st
        .live_token(id, now)
        .cloned()
        .ok_or_else(VErr::invalid_token)?;
    if !tok.is_root() {
        let caps = acl::capabilities(
            tok.policies.iter().filter_map(|p| st.policies.get(p)),
            &r.path,
        );
        let has = |c: &str| caps.iter().any(|x| x == c);
        let allowed = required_cap(r.op).iter().any(|c| has(c)) && !has("deny");
        if !allowed || (needs_sudo(r) && !has("sudo")) {
            return Err(VErr::denied());
        }
    }
    let mut last_use = false;
    if tok.num_uses > 0 {
        if let Some(t) = st.tokens.get_mut(id) {
            t.num_uses -= 1;
            if t.num_uses == 0 {
                last_use = true;
            }
        }
        if last_use {
            st.revoke_token(id, now);
        }
    }
    Ok(Caller {
        token: tok,
        last_use,
    })
}

async fn route(inner: &Arc<Inner>, r: &Req, c: &Caller) -> HResult {
    let path = r.path.as_str();
    if path.starts_with("sys/leases/") || path == "sys/renew" || path.starts_with("sys/renew/") {
        return leases::handle(inner, r).await;
    }
    if path.starts_with("sys/") {
        return sys::handle(inner, r, c).await;
    }
    if let Some(rest) = path.strip_prefix("auth/token/") {
        return token::handle(inner, r, c, rest);
    }
    let (amount, mount) = {
        let st = inner.lock();
        let am = st
            .auth_mount_for(path)
            .and_then(|m| st.auth_mounts.get(&m).map(|x| (m, x.mtype.clone())));
        let sm = st
            .mount_for(path)
            .and_then(|m| st.mounts.get(&m).map(|x| (m, x.mtype.clone())));
        (am, sm)
    };
    if path.starts_with("auth/") {
        let Some((m, mtype)) = amount else {
            return Err(VErr::no_route(path));
        };
        let rest = path.strip_prefix(m.as_str()).unwrap_or("");
        return match mtype.as_str() {
            "approle" => approle::handle(inner, r, &m, rest),
            "kubernetes" => kubernetes::handle(inner, r, &m, rest),
            _ => Err(VErr::unsupported_path()),
        };
    }
    match mount {
        Some((m, mtype)) if mtype == "database" => {
            let rest = path.strip_prefix(m.as_str()).unwrap_or("").to_string();
            database::handle(inner, r, c, &m, &rest).await
        }
        Some(_) => Err(VErr::unsupported_path()),
        None => Err(VErr::no_route(path)),
    }
}
