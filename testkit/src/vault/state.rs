//! The stand-in's in-memory state: tokens, leases, mounts, policies and the
//! per-mount backend state, plus Vault's TTL rule (`framework.CalculateTTL`).

use std::collections::{BTreeMap, HashMap};
use std::sync::atomic::{AtomicBool, AtomicU16, AtomicU64, Ordering};
use std::sync::Mutex;
use std::time::{Duration, SystemTime};

use super::acl::Policy;
use super::util::{self, fmt_duration, secs_until};

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum TokenType {
    Service,
    Batch,
}

impl TokenType {
    pub(crate) fn as_str(self) -> &'static str {
        match self {
            TokenType::Service => "service",
            TokenType::Batch => "batch",
        }
    }
}

/// Where a token's renewal defaults come from (re-read at every renewal).
#[derive(Debug, Clone)]
pub(crate) enum TokenSource {
    Root,
    TokenStore,
    /// Auth mount key (e.g. `auth/approle/`) + role name.
    Role(String, String),
}

#[derive(Debug, Clone)]
pub(crate) struct Token {
    pub id: String,
    pub accessor: String,
    pub policies: Vec<String>,
    pub meta: BTreeMap<String, String>,
    pub display_name: String,
    pub path: String,
    pub orphan: bool,
    pub parent: Option<String>,
    pub ttype: TokenType,
    pub issue_time: SystemTime,
    pub creation_ttl: i64,
    /// `None` = never expires (root).
    pub expire: Option<SystemTime>,
    pub last_renewal: Option<SystemTime>,
    pub explicit_max_ttl: i64,
    pub period: i64,
    /// Remaining uses; 0 = unlimited.
    pub num_uses: i64,
    pub renewable: bool,
    pub entity_id: String,
    pub source: TokenSource,
    /// The auth mount key that issued it (`auth/token/`, `auth/approle/`, ...).
    pub mount: String,
    pub backend_ttl: i64,
    pub backend_max_ttl: i64,
}

impl Token {
    pub(crate) fn ttl(&self, now: SystemTime) -> i64 {
        self.expire.map(|e| secs_until(e, now)).unwrap_or(0)
    }
    pub(crate) fn is_root(&self) -> bool {
        self.policies.iter().any(|p| p == "root")
    }
}

#[derive(Debug, Clone)]
pub(crate) struct Lease {
    pub id: String,
    /// Mount key (e.g. `database/`) and role name, for renewal defaults and revocation.
    pub mount: String,
    pub role: String,
    pub issue_time: SystemTime,
    pub expire: SystemTime,
    pub last_renewal: Option<SystemTime>,
    /// Token id that created it (leases die with their token).
    pub token: String,
    /// For batch tokens: the token's expiry, which caps the lease.
    pub batch_cap: Option<SystemTime>,
    pub db_name: String,
    pub username: String,
    pub revocation_statements: Vec<String>,
    /// Revocation in flight (set by the reaper while SQL runs).
    pub revoking: bool,
    pub attempts: u32,
    pub next_attempt: SystemTime,
    pub irrevocable: bool,
}

#[derive(Debug, Clone)]
pub(crate) struct Mount {
    pub mtype: String,
    pub accessor: String,
    pub uuid: String,
    pub description: String,
    /// Tuned values; 0 = system default.
    pub default_ttl: i64,
    pub max_ttl: i64,
}

impl Mount {
    pub(crate) fn new(mtype: &str, prefix: &str) -> Self {
        Self {
            mtype: mtype.to_string(),
            accessor: format!("{}_{}", mtype, &util::uuid()[..8]),
            uuid: util::uuid(),
            description: String::new(),
            default_ttl: 0,
            max_ttl: 0,
        }
        .with_desc(prefix)
    }
    fn with_desc(mut self, prefix: &str) -> Self {
        if prefix == "auth/token/" {
            self.description = "token based credentials".into();
        }
        self
    }
    pub(crate) fn eff_default(&self) -> i64 {
        let max = self.eff_max();
        let d = if self.default_ttl > 0 {
            self.default_ttl
        } else {
            util::SYSTEM_TTL
        };
        d.min(max)
    }
    pub(crate) fn eff_max(&self) -> i64 {
        if self.max_ttl > 0 {
            self.max_ttl
        } else {
            util::SYSTEM_TTL
        }
    }
}

/// Result of the TTL rule.
pub(crate) struct TtlCalc {
    pub ttl: i64,
    pub warnings: Vec<String>,
}

/// Vault's `CalculateTTL` (contract §3.2): TTL counted from now, capped at
/// `start + min(mount max, backend max, explicit max)` with a warning.
#[allow(clippy::too_many_arguments)]
pub(crate) fn calculate_ttl(
    now: SystemTime,
    mount_default: i64,
    mount_max: i64,
    increment: i64,
    backend_ttl: i64,
    period: i64,
    backend_max: i64,
    explicit_max: i64,
    start: SystemTime,
) -> Result<TtlCalc, String> {
    let mut max = mount_max;
    if backend_max > 0 && backend_max < max {
        max = backend_max;
    }
    if explicit_max > 0 && explicit_max < max {
        max = explicit_max;
    }
    let mut warnings = Vec::new();
    let elapsed = now.duration_since(start).unwrap_or_default();
    let ttl;
    if period > 0 {
        let mut t = period;
        if explicit_max > 0 {
            let valid = explicit_max as f64 - elapsed.as_secs_f64();
            let valid = valid.round() as i64;
            if valid < t {
                warnings.push(cap_warning(period, valid));
                t = valid;
            }
        }
        ttl = t;
    } else {
        let want = if increment > 0 {
            increment
        } else if backend_ttl > 0 {
            backend_ttl
        } else {
            mount_default
        };
        let valid = (max as f64 - elapsed.as_secs_f64()).round() as i64;
        if valid < 0 || (max as f64) < elapsed.as_secs_f64() {
            return Err("past the max TTL, cannot renew".into());
        }
        if valid < want {
            warnings.push(cap_warning(want, valid));
            ttl = valid;
        } else {
            ttl = want;
        }
    }
    Ok(TtlCalc { ttl, warnings })
}

pub(crate) fn cap_warning(requested: i64, capped: i64) -> String {
    format!(
        "TTL of \"{}\" exceeded the effective max_ttl of \"{}\"; TTL value is capped accordingly",
        fmt_duration(requested),
        fmt_duration(capped)
    )
}

/// Counters exposed to tests.
#[derive(Debug, Default)]
pub(crate) struct Counters {
    pub logins: AtomicU64,
    pub failed_logins: AtomicU64,
    pub token_renewals: AtomicU64,
    pub lease_renewals: AtomicU64,
    pub creds_issued: AtomicU64,
    pub leases_revoked: AtomicU64,
    pub requests: AtomicU64,
}

/// Fault knobs.
#[derive(Debug, Default)]
pub(crate) struct Knobs {
    pub sealed: AtomicBool,
    pub status_fault: AtomicU16,
    pub delay_ms: AtomicU64,
}

impl Knobs {
    pub(crate) fn delay(&self) -> Duration {
        Duration::from_millis(self.delay_ms.load(Ordering::Relaxed))
    }
}

/// Lockout settings (Vault defaults: 5 failures, 15 minutes).
#[derive(Debug, Clone)]
pub(crate) struct LockoutCfg {
    pub threshold: u32,
    pub duration: Duration,
}

#[derive(Debug, Clone)]
pub(crate) struct Wrap {
    pub ttl: i64,
    pub creation_time: SystemTime,
    pub creation_path: String,
    pub response: serde_json::Value,
}

/// Everything behind the state lock.
pub(crate) struct Store {
    pub tokens: HashMap<String, Token>,
    pub accessors: HashMap<String, String>,
    pub leases: BTreeMap<String, Lease>,
    pub policies: BTreeMap<String, Policy>,
    /// Secret-engine mounts (`database/`, `sys/`, `cubbyhole/`) keyed by path with trailing `/`.
    pub mounts: BTreeMap<String, Mount>,
    /// Auth mounts keyed by full prefix (`auth/token/`, `auth/approle/`).
    pub auth_mounts: BTreeMap<String, Mount>,
    pub approle: HashMap<String, super::approle::AppRoleState>,
    pub k8s: HashMap<String, super::kubernetes::K8sState>,
    pub db: HashMap<String, super::database::DbState>,
    pub wraps: HashMap<String, Wrap>,
    /// Every secret handed out (tokens, SecretIDs, database passwords), for
    /// tests that scan logs and errors for leaks. Never logged.
    pub issued: Vec<String>,
}

impl Store {
    pub(crate) fn new(root_token: &str) -> Self {
        let mut s = Store {
            tokens: HashMap::new(),
            accessors: HashMap::new(),
            leases: BTreeMap::new(),
            policies: BTreeMap::new(),
            mounts: BTreeMap::new(),
            auth_mounts: BTreeMap::new(),
            approle: HashMap::new(),
            k8s: HashMap::new(),
            db: HashMap::new(),
            wraps: HashMap::new(),
            issued: Vec::new(),
        };
        for (p, t) in [
            ("sys/", "system"),
            ("cubbyhole/", "cubbyhole"),
            ("identity/", "identity"),
        ] {
            s.mounts.insert(p.into(), Mount::new(t, p));
        }
        s.auth_mounts
            .insert("auth/token/".into(), Mount::new("token", "auth/token/"));
        s.policies
            .insert("default".into(), super::acl::default_policy());
        let now = SystemTime::now();
        let root = Token {
            id: root_token.to_string(),
            accessor: util::base62(24),
            policies: vec!["root".into()],
            meta: BTreeMap::new(),
            display_name: "root".into(),
            path: "auth/token/root".into(),
            orphan: true,
            parent: None,
            ttype: TokenType::Service,
            issue_time: now,
            creation_ttl: 0,
            expire: None,
            last_renewal: None,
            explicit_max_ttl: 0,
            period: 0,
            num_uses: 0,
            renewable: false,
            entity_id: String::new(),
            source: TokenSource::Root,
            mount: "auth/token/".into(),
            backend_ttl: 0,
            backend_max_ttl: 0,
        };
        s.accessors.insert(root.accessor.clone(), root.id.clone());
        s.issued.push(root.id.clone());
        s.tokens.insert(root.id.clone(), root);
        s
    }

    /// A live token by id (expired tokens count as absent even before the reaper runs).
    pub(crate) fn live_token(&self, id: &str, now: SystemTime) -> Option<&Token> {
        self.tokens
            .get(id)
            .filter(|t| t.expire.map(|e| e > now).unwrap_or(true))
    }

    pub(crate) fn insert_token(&mut self, t: Token) {
        if !t.accessor.is_empty() {
            self.accessors.insert(t.accessor.clone(), t.id.clone());
        }
        self.issued.push(t.id.clone());
        self.tokens.insert(t.id.clone(), t);
    }

    /// Revokes a token and its children; their leases are marked to expire now
    /// (the reaper revokes them), as Vault's `RevokeByToken` does.
    pub(crate) fn revoke_token(&mut self, id: &str, now: SystemTime) {
        let mut stack = vec![id.to_string()];
        while let Some(tid) = stack.pop() {
            if let Some(t) = self.tokens.remove(&tid) {
                self.accessors.remove(&t.accessor);
            }
            for l in self.leases.values_mut() {
                if l.token == tid && l.batch_cap.is_none() && l.expire > now {
                    l.expire = now;
                }
            }
            let children: Vec<String> = self
                .tokens
                .values()
                .filter(|t| t.parent.as_deref() == Some(tid.as_str()))
                .map(|t| t.id.clone())
                .collect();
            stack.extend(children);
        }
    }

    /// Finds the auth mount whose prefix starts `path` (longest wins).
    pub(crate) fn auth_mount_for(&self, path: &str) -> Option<String> {
        self.auth_mounts
            .keys()
            .filter(|k| path.starts_with(k.as_str()) || format!("{path}/") == **k)
            .max_by_key(|k| k.len())
            .cloned()
    }

    pub(crate) fn mount_for(&self, path: &str) -> Option<String> {
        self.mounts
            .keys()
            .filter(|k| path.starts_with(k.as_str()) || format!("{path}/") == **k)
            .max_by_key(|k| k.len())
            .cloned()
    }
}

/// State shared by the server tasks and the test handle.
pub(crate) struct Inner {
    pub store: Mutex<Store>,
    pub knobs: Knobs,
    pub counters: Counters,
    pub lockout: LockoutCfg,
    pub root_token: String,
}

impl Inner {
    /// Locks the store, recovering from a poisoned lock (a panicking test must not wedge the server).
    pub(crate) fn lock(&self) -> std::sync::MutexGuard<'_, Store> {
        self.store.lock().unwrap_or_else(|e| e.into_inner())
    }
}
