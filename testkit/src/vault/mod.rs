//! A Vault-compatible stand-in server for tests, following the Vault contract
//! (docs/vault-contract.md): AppRole and Kubernetes login, service/batch tokens,
//! ACL policies (deny by default), the database secrets engine executing real
//! `CREATE USER`/`DROP USER` statements against MySQL/MariaDB, leases with
//! Vault's TTL capping, response wrapping, `sys/health` and fault knobs.
//!
//! It runs on its own thread and tokio runtime so it outlives the runtimes of
//! individual `#[tokio::test]`s; dropping the handle shuts it down.
//!
//! Secrets (tokens, SecretIDs, passwords) are never logged.

mod acl;
mod approle;
mod client;
mod database;
mod database_static;
mod http;
mod kubernetes;
mod leases;
mod provision;
mod reply;
mod router;
mod sql;
mod state;
mod sys;
mod token;
mod util;

use std::net::SocketAddr;
use std::sync::atomic::Ordering;
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, SystemTime};

use anyhow::{anyhow, Context, Result};
use tokio::sync::watch;

pub use client::{ApiResponse, VaultHttp};
pub use provision::{minimal_policy, provision, MysqlProvision, Provisioned};

use state::{Inner, Knobs, LockoutCfg, Store};

/// Options for [`VaultStandin::start`].
#[derive(Debug, Clone)]
pub struct StandinOptions {
    /// The root token (like `vault server -dev -dev-root-token-id`).
    pub root_token: String,
    /// Listen address; port 0 picks a free port.
    pub listen: SocketAddr,
    /// Failed AppRole logins before a RoleID is locked out (Vault: 5).
    pub lockout_threshold: u32,
    /// Lockout duration and failure-counter reset window (Vault: 15 minutes).
    pub lockout_duration: Duration,
    /// How often expired tokens/leases are reaped (default 100 ms).
    pub reaper_interval: Duration,
}

impl Default for StandinOptions {
    fn default() -> Self {
        Self {
            root_token: "root".into(),
            listen: SocketAddr::from(([127, 0, 0, 1], 0)),
            lockout_threshold: 5,
            lockout_duration: Duration::from_secs(15 * 60),
            reaper_interval: Duration::from_millis(100),
        }
    }
}

/// Counters for tests.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct StandinStats {
    pub requests: u64,
    pub logins: u64,
    pub failed_logins: u64,
    pub token_renewals: u64,
    pub lease_renewals: u64,
    pub creds_issued: u64,
    pub leases_revoked: u64,
}

/// What the stand-in knows about a live lease.
#[derive(Debug, Clone)]
pub struct LeaseInfo {
    pub lease_id: String,
    /// The MySQL user behind the lease.
    pub username: String,
    pub issue_time: SystemTime,
    pub expire_time: SystemTime,
    /// Accessor of the token that created the lease (empty for batch tokens).
    pub token_accessor: String,
}

/// A running stand-in. Dropping it stops the server.
pub struct VaultStandin {
    inner: Arc<Inner>,
    addr: SocketAddr,
    rt: tokio::runtime::Handle,
    up_tx: watch::Sender<bool>,
    ack_rx: Mutex<std::sync::mpsc::Receiver<bool>>,
    shutdown_tx: watch::Sender<bool>,
    thread: Option<JoinHandle<()>>,
}

impl std::fmt::Debug for VaultStandin {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("VaultStandin")
            .field("addr", &self.addr)
            .finish_non_exhaustive()
    }
}

impl VaultStandin {
    /// Starts the server on its own thread and runtime; returns once it accepts connections.
    pub fn start(opts: StandinOptions) -> Result<VaultStandin> {
        let inner = Arc::new(Inner {
            store: Mutex::new(Store::new(&opts.root_token)),
            knobs: Knobs::default(),
            counters: Default::default(),
            lockout: LockoutCfg {
                threshold: opts.lockout_threshold,
                duration: opts.lockout_duration,
            },
            root_token: opts.root_token.clone(),
        });
        let (ready_tx, ready_rx) = std::sync::mpsc::channel();
        let (ack_tx, ack_rx) = std::sync::mpsc::channel();
        let (up_tx, up_rx) = watch::channel(true);
        let (shutdown_tx, shutdown_rx) = watch::channel(false);
        let inner2 = inner.clone();
        let listen = opts.listen;
        let interval = opts.reaper_interval;
        let thread = std::thread::Builder::new()
            .name("vault-standin".into())
            .spawn(move || {
                let rt = match tokio::runtime::Builder::new_multi_thread()
                    .worker_threads(2)
                    .thread_name("vault-standin-rt")
                    .enable_all()
                    .build()
                {
                    Ok(rt) => rt,
                    Err(e) => {
                        let _ = ready_tx.send(Err(anyhow!("runtime: {e}")));
                        return;
                    }
                };
                rt.block_on(async move {
                    let listener = match http::bind(listen) {
                        Ok(l) => l,
                        Err(e) => {
                            let _ = ready_tx.send(Err(anyhow!("bind {listen}: {e}")));
                            return;
                        }
                    };
                    let addr = listener.local_addr().map_err(|e| anyhow!("{e}"));
                    let _ = ready_tx.send(addr.map(|a| (a, tokio::runtime::Handle::current())));
                    let reaper_inner = inner2.clone();
                    let mut reaper_stop = shutdown_rx.clone();
                    tokio::spawn(async move {
                        let mut tick = tokio::time::interval(interval);
                        loop {
                            tokio::select! {
                                _ = tick.tick() => leases::reap(&reaper_inner).await,
                                _ = reaper_stop.changed() => return,
                            }
                        }
                    });
                    http::serve(inner2, listener, up_rx, ack_tx, shutdown_rx).await;
                });
                rt.shutdown_timeout(Duration::from_secs(1));
            })
            .context("spawning the vault-standin thread")?;
        let (addr, rt) = ready_rx
            .recv()
            .map_err(|_| anyhow!("vault stand-in thread died during start"))??;
        Ok(VaultStandin {
            inner,
            addr,
            rt,
            up_tx,
            ack_rx: Mutex::new(ack_rx),
            shutdown_tx,
            thread: Some(thread),
        })
    }

    /// The listening address.
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// `http://127.0.0.1:<port>` (what `VAULT_ADDR` should be).
    pub fn url(&self) -> String {
        format!("http://{}", self.addr)
    }

    pub fn root_token(&self) -> &str {
        &self.inner.root_token
    }

    /// A raw HTTP client for this stand-in.
    pub fn http(&self) -> VaultHttp {
        VaultHttp::new(&self.url())
    }

    /// `true`: close the listener and every open connection (clients get "connection
    /// refused"); `false`: listen again on the same port. Returns once done.
    pub fn set_down(&self, down: bool) {
        let want_up = !down;
        if *self.up_tx.borrow() == want_up {
            return;
        }
        let rx = self.ack_rx.lock().unwrap_or_else(|e| e.into_inner());
        while rx.try_recv().is_ok() {}
        let _ = self.up_tx.send(want_up);
        let _ = rx.recv_timeout(Duration::from_secs(6));
    }

    /// Answer every request with this status and a Vault error envelope:
    /// 429 (`rate limit quota exceeded`), 500 (internal error), 503 (sealed behaviour).
    pub fn set_status_fault(&self, status: Option<u16>) {
        self.inner
            .knobs
            .status_fault
            .store(status.unwrap_or(0), Ordering::Relaxed);
    }

    /// Delay every response by `d` (zero disables).
    pub fn set_delay(&self, d: Duration) {
        self.inner
            .knobs
            .delay_ms
            .store(d.as_millis() as u64, Ordering::Relaxed);
    }

    /// Seal: every endpoint except `sys/health`/`sys/seal-status` answers 503 `Vault is sealed`.
    /// Tokens and leases are kept (and still expire).
    pub fn seal(&self) {
        self.inner.knobs.sealed.store(true, Ordering::Relaxed);
    }

    pub fn unseal(&self) {
        self.inner.knobs.sealed.store(false, Ordering::Relaxed);
    }

    pub fn is_sealed(&self) -> bool {
        self.inner.knobs.sealed.load(Ordering::Relaxed)
    }

    /// Ids of leases not yet revoked.
    pub fn live_leases(&self) -> Vec<String> {
        self.inner.lock().leases.keys().cloned().collect()
    }

    /// Every secret this stand-in has handed out so far: token ids (root
    /// included), SecretIDs, wrapping tokens and database passwords. For
    /// tests that check logs and errors for leaks.
    pub fn issued_secrets(&self) -> Vec<String> {
        self.inner.lock().issued.clone()
    }

    /// Details of a live lease.
    pub fn lease_info(&self, lease_id: &str) -> Option<LeaseInfo> {
        let st = self.inner.lock();
        let l = st.leases.get(lease_id)?;
        Some(LeaseInfo {
            lease_id: l.id.clone(),
            username: l.username.clone(),
            issue_time: l.issue_time,
            expire_time: l.expire,
            token_accessor: st
                .tokens
                .get(&l.token)
                .map(|t| t.accessor.clone())
                .unwrap_or_default(),
        })
    }

    /// Revokes a lease behind the client's back (an operator's `vault lease revoke`):
    /// the MySQL user is dropped before this returns. `Ok(false)` if the lease was unknown.
    pub async fn revoke_lease_out_of_band(&self, lease_id: &str) -> Result<bool> {
        let inner = self.inner.clone();
        let id = lease_id.to_string();
        self.rt
            .spawn(async move { leases::revoke_now(&inner, &id).await })
            .await
            .map_err(|e| anyhow!("revocation task failed: {e}"))?
            .map_err(|e| anyhow!("revocation failed: {e}"))
    }

    /// Makes a lease expire now (the reaper drops its MySQL user within ~100 ms).
    pub fn expire_lease_now(&self, lease_id: &str) -> bool {
        match self.inner.lock().leases.get_mut(lease_id) {
            Some(l) => {
                l.expire = SystemTime::now();
                true
            }
            None => false,
        }
    }

    /// Revokes a token (given by value or accessor) and, asynchronously, its leases.
    pub fn revoke_token_out_of_band(&self, token_or_accessor: &str) -> bool {
        let mut st = self.inner.lock();
        let id = if st.tokens.contains_key(token_or_accessor) {
            token_or_accessor.to_string()
        } else if let Some(id) = st.accessors.get(token_or_accessor) {
            id.clone()
        } else {
            return false;
        };
        st.revoke_token(&id, SystemTime::now());
        true
    }

    /// Number of live (unexpired, unrevoked) tokens, root included.
    pub fn live_tokens(&self) -> usize {
        let now = SystemTime::now();
        let st = self.inner.lock();
        st.tokens
            .values()
            .filter(|t| t.expire.map(|e| e > now).unwrap_or(true))
            .count()
    }

    pub fn stats(&self) -> StandinStats {
        let c = &self.inner.counters;
        let l = |a: &std::sync::atomic::AtomicU64| a.load(Ordering::Relaxed);
        StandinStats {
            requests: l(&c.requests),
            logins: l(&c.logins),
            failed_logins: l(&c.failed_logins),
            token_renewals: l(&c.token_renewals),
            lease_renewals: l(&c.lease_renewals),
            creds_issued: l(&c.creds_issued),
            leases_revoked: l(&c.leases_revoked),
        }
    }

    /// Successful logins (AppRole + Kubernetes).
    pub fn logins(&self) -> u64 {
        self.stats().logins
    }

    /// Token renewals plus lease renewals.
    pub fn renewals(&self) -> u64 {
        let s = self.stats();
        s.token_renewals + s.lease_renewals
    }

    pub fn creds_issued(&self) -> u64 {
        self.stats().creds_issued
    }
}

impl Drop for VaultStandin {
    fn drop(&mut self) {
        let _ = self.shutdown_tx.send(true);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}
