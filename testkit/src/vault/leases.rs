//! `sys/leases/*` (contract §5) and the background reaper that expires tokens
//! and leases (dropping MySQL users), rotates static roles and tidies SecretIDs.

use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use serde_json::json;

use super::database;
use super::http::{Op, Req};
use super::reply::{Env, HResult, Reply, VErr};
use super::state::{calculate_ttl, Inner, Lease};
use super::util;

/// Lease id from the body, else from the path suffix after `base`.
fn lease_id(r: &Req, base: &str) -> Result<String, VErr> {
    let from_body = r.body.str("lease_id")?.unwrap_or_default();
    if !from_body.is_empty() {
        return Ok(from_body);
    }
    let suffix = r
        .path
        .strip_prefix(base)
        .map(|s| s.trim_start_matches('/'))
        .unwrap_or("");
    if suffix.is_empty() {
        return Err(VErr::bad("lease_id must be specified"));
    }
    Ok(suffix.to_string())
}

fn renew(inner: &Inner, r: &Req, base: &str) -> HResult {
    let id = lease_id(r, base)?;
    let increment = r.body.duration("increment")?.unwrap_or(0);
    if id.starts_with("auth/") {
        return Err(VErr::bad("tokens cannot be renewed through this endpoint"));
    }
    let now = SystemTime::now();
    let mut st = inner.lock();
    let lease = st
        .leases
        .get(&id)
        .cloned()
        .ok_or_else(|| VErr::bad("lease not found"))?;
    if lease.irrevocable {
        return Err(VErr::bad(
            "lease is expired and has failed previous revocation attempts",
        ));
    }
    if lease.expire <= now || lease.revoking {
        return Err(VErr::bad("lease expired"));
    }
    let mount = st.mounts.get(&lease.mount).cloned();
    let role = st
        .db
        .get(&lease.mount)
        .and_then(|d| d.roles.get(&lease.role))
        .cloned()
        .ok_or_else(|| {
            VErr::bad(format!(
                "failed to renew entry: resp: (*logical.Response)(nil) err: could not find role with name: \"{}\"",
                lease.role
            ))
        })?;
    let (mdef, mmax) = mount
        .map(|m| (m.eff_default(), m.eff_max()))
        .unwrap_or((util::SYSTEM_TTL, util::SYSTEM_TTL));
    let calc = calculate_ttl(
        now,
        mdef,
        mmax,
        increment,
        role.default_ttl,
        0,
        role.max_ttl,
        0,
        lease.issue_time,
    )
    .map_err(VErr::bad)?;
    let mut ttl = calc.ttl;
    if let Some(cap) = lease.batch_cap {
        ttl = ttl.min(util::secs_until(cap, now));
    }
    if let Some(l) = st.leases.get_mut(&id) {
        l.expire = util::add_secs(now, ttl);
        l.last_renewal = Some(now);
    }
    drop(st);
    inner
        .counters
        .lease_renewals
        .fetch_add(1, Ordering::Relaxed);
    Ok(Reply::Env(Env {
        lease_id: id,
        renewable: true,
        lease_duration: ttl,
        warnings: calc.warnings,
        mount_type: "system".into(),
        ..Env::default()
    }))
}

fn lookup(inner: &Inner, r: &Req) -> HResult {
    let id = r.body.str("lease_id")?.unwrap_or_default();
    if id.is_empty() {
        return Err(VErr::bad("lease_id must be specified"));
    }
    let now = SystemTime::now();
    let st = inner.lock();
    let l = st
        .leases
        .get(&id)
        .ok_or_else(|| VErr::bad("invalid lease"))?;
    Ok(Reply::Env(Env {
        data: Some(json!({
            "id": l.id,
            "issue_time": util::rfc3339(l.issue_time),
            "expire_time": util::rfc3339(l.expire),
            "last_renewal": l.last_renewal.map(util::rfc3339),
            "renewable": l.batch_cap.is_none() && l.expire > now,
            "ttl": util::secs_until(l.expire, now),
        })),
        mount_type: "system".into(),
        ..Env::default()
    }))
}

/// Revokes a lease now: runs the revocation SQL, then forgets the lease.
/// Unknown leases are a no-op. On SQL failure the lease is kept.
pub(crate) async fn revoke_now(inner: &Inner, id: &str) -> Result<bool, String> {
    let lease = {
        let mut st = inner.lock();
        match st.leases.get_mut(id) {
            Some(l) => {
                l.revoking = true;
                l.clone()
            }
            None => return Ok(false),
        }
    };
    let res = database::revoke_sql(inner, &lease).await;
    finish_revocation(inner, &lease, res.is_ok());
    res.map(|_| true)
}

fn finish_revocation(inner: &Inner, lease: &Lease, ok: bool) {
    let mut st = inner.lock();
    if ok {
        st.leases.remove(&lease.id);
        inner
            .counters
            .leases_revoked
            .fetch_add(1, Ordering::Relaxed);
    } else if let Some(l) = st.leases.get_mut(&lease.id) {
        // Vault retries with exponential backoff (base 10 s), 6 attempts, then irrevocable.
        l.revoking = false;
        l.attempts += 1;
        l.next_attempt = SystemTime::now() + Duration::from_secs(10 << l.attempts.min(6));
        if l.attempts >= 6 {
            l.irrevocable = true;
        }
    }
}

fn sync_flag(r: &Req) -> Result<bool, VErr> {
    Ok(r.body.bool("sync")?.unwrap_or(true))
}

async fn revoke(inner: &Inner, r: &Req) -> HResult {
    let id = lease_id(r, "sys/leases/revoke")?;
    if !sync_flag(r)? {
        if let Some(l) = inner.lock().leases.get_mut(&id) {
            l.expire = SystemTime::now();
        }
        return Ok(Reply::Accepted);
    }
    revoke_now(inner, &id).await.map_err(|e| {
        VErr::bad(format!(
            "failed to revoke entry: resp: (*logical.Response)(nil) err: {e}"
        ))
    })?;
    Ok(Reply::none())
}

async fn revoke_prefix(inner: &Inner, r: &Req, base: &str, force: bool) -> HResult {
    let prefix = r.path.strip_prefix(base).unwrap_or("").trim_matches('/');
    if prefix.is_empty() {
        return Err(VErr::bad("prefix is required"));
    }
    let ids: Vec<String> = inner
        .lock()
        .leases
        .keys()
        .filter(|k| k.starts_with(&format!("{prefix}/")) || k.as_str() == prefix)
        .cloned()
        .collect();
    if !sync_flag(r)? {
        let now = SystemTime::now();
        let mut st = inner.lock();
        for id in &ids {
            if let Some(l) = st.leases.get_mut(id) {
                l.expire = now;
            }
        }
        return Ok(Reply::Accepted);
    }
    for id in ids {
        if let Err(e) = revoke_now(inner, &id).await {
            if force {
                inner.lock().leases.remove(&id);
            } else {
                return Err(VErr::bad(format!("failed to revoke prefix: {e}")));
            }
        }
    }
    Ok(Reply::none())
}

pub(crate) async fn handle(inner: &Arc<Inner>, r: &Req) -> HResult {
    let p = r.path.as_str();
    if r.op == Op::List && p.starts_with("sys/leases/lookup") {
        let prefix = p.trim_start_matches("sys/leases/lookup").trim_matches('/');
        let st = inner.lock();
        let keys: Vec<String> = st
            .leases
            .keys()
            .filter_map(|k| k.strip_prefix(&format!("{prefix}/")))
            .map(|s| match s.split_once('/') {
                Some((dir, _)) => format!("{dir}/"),
                None => s.to_string(),
            })
            .collect::<std::collections::BTreeSet<_>>()
            .into_iter()
            .collect();
        if keys.is_empty() {
            return Err(VErr::not_found());
        }
        return Ok(Reply::Env(Env::data(json!({ "keys": keys }))));
    }
    if r.op != Op::Write {
        return Err(VErr::unsupported_op());
    }
    if p == "sys/renew" || p.starts_with("sys/renew/") {
        return renew(inner, r, "sys/renew");
    }
    if p == "sys/leases/renew" || p.starts_with("sys/leases/renew/") {
        return renew(inner, r, "sys/leases/renew");
    }
    if p == "sys/leases/lookup" {
        return lookup(inner, r);
    }
    if p.starts_with("sys/leases/revoke-prefix/") {
        return revoke_prefix(inner, r, "sys/leases/revoke-prefix", false).await;
    }
    if p.starts_with("sys/leases/revoke-force/") {
        return revoke_prefix(inner, r, "sys/leases/revoke-force", true).await;
    }
    if p == "sys/leases/revoke" || p.starts_with("sys/leases/revoke/") {
        return revoke(inner, r).await;
    }
    if p == "sys/leases/tidy" {
        return Ok(Reply::Accepted);
    }
    Err(VErr::unsupported_path())
}

/// One reaper pass: expire tokens, revoke expired leases, rotate static roles, tidy.
pub(crate) async fn reap(inner: &Arc<Inner>) {
    let now = SystemTime::now();
    let (due, rotations) = {
        let mut st = inner.lock();
        let dead: Vec<String> = st
            .tokens
            .values()
            .filter(|t| t.expire.map(|e| e <= now).unwrap_or(false))
            .map(|t| t.id.clone())
            .collect();
        for id in dead {
            st.revoke_token(&id, now);
        }
        st.wraps
            .retain(|_, w| util::add_secs(w.creation_time, w.ttl) > now);
        for a in st.approle.values_mut() {
            a.tidy(now);
        }
        let mut due = Vec::new();
        for l in st.leases.values_mut() {
            if l.expire <= now && !l.revoking && !l.irrevocable && l.next_attempt <= now {
                l.revoking = true;
                due.push(l.clone());
            }
        }
        let mut rotations = Vec::new();
        for (m, d) in st.db.iter_mut() {
            for (name, s) in d.statics.iter_mut() {
                if !s.rotating && util::add_secs(s.last_rotation, s.rotation_period) <= now {
                    s.rotating = true;
                    rotations.push((m.clone(), name.clone()));
                }
            }
        }
        (due, rotations)
    };
    for lease in due {
        let inner = inner.clone();
        tokio::spawn(async move {
            let res = database::revoke_sql(&inner, &lease).await;
            if let Err(e) = &res {
                tracing::warn!(target: "vault_standin", lease = %lease.id, error = %e, "lease revocation failed");
            }
            finish_revocation(&inner, &lease, res.is_ok());
        });
    }
    for (m, name) in rotations {
        let inner = inner.clone();
        tokio::spawn(async move {
            if let Err(e) = super::database_static::rotate_static(&inner, &m, &name).await {
                tracing::warn!(target: "vault_standin", role = %name, error = ?e.errors, "static rotation failed");
            }
        });
    }
}
