//! Process wiring: listeners, the startup probe, the session registry and
//! the counters the admin endpoints export.

use std::collections::HashMap;
use std::net::{IpAddr, SocketAddr};
use std::sync::atomic::{AtomicU32, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use tokio::net::{TcpListener, UnixListener};
use tokio::sync::{watch, Semaphore};
use tracing::{debug, info, warn, Instrument};

use crate::backend::{self, UpstreamTarget};
use crate::config::{Config, CredentialConfig, DeadlinePolicy, ListenerConfig};
use crate::credentials::{CredentialHandle, Generation};
use crate::frontend::{self, FailureThrottle, FrontendConfig, LocalUser, ServerInfo};
use crate::net::{self, PacketConn, Stream, UpstreamAddr};
use crate::protocol::caps::CLIENT_PROTOCOL_41;
use crate::protocol::packets::{codes, MysqlError};
use crate::secret::SecretString;
use crate::session;

/// Process-wide counters (exported by the admin endpoints).
#[derive(Debug, Default)]
pub struct Metrics {
    pub client_connections_total: AtomicU64,
    pub client_connections_current: AtomicU64,
    pub auth_failures_total: AtomicU64,
    pub handshake_failures_total: AtomicU64,
    pub connections_refused_total: AtomicU64,
    pub swaps_total: AtomicU64,
    pub swaps_failed_total: AtomicU64,
    pub upstream_reconnects_total: AtomicU64,
    pub upstream_lost_total: AtomicU64,
    pub bytes_to_client_total: AtomicU64,
    pub bytes_to_upstream_total: AtomicU64,
    pub kills_translated_total: AtomicU64,
    pub deadline_closes_total: AtomicU64,
    /// Successful configuration reloads (SIGHUP).
    pub reloads_total: AtomicU64,
    /// Reloads refused (the file had problems; the old settings stay).
    pub reload_failures_total: AtomicU64,
    /// Swap pause histogram: counts per bucket upper bound (µs).
    pub swap_pause: Histogram,
}

/// Bucket bounds of the swap pause histogram, in microseconds.
pub const SWAP_BUCKETS_US: [u64; 14] = [
    25, 50, 100, 250, 500, 1_000, 2_500, 5_000, 10_000, 25_000, 50_000, 100_000, 500_000, 1_000_000,
];

/// A fixed-bucket histogram with atomics.
#[derive(Debug, Default)]
pub struct Histogram {
    pub buckets: [AtomicU64; 14],
    pub count: AtomicU64,
    pub sum_us: AtomicU64,
}

impl Histogram {
    pub fn observe(&self, d: Duration) {
        let us = d.as_micros() as u64;
        for (i, b) in SWAP_BUCKETS_US.iter().enumerate() {
            if us <= *b {
                self.buckets[i].fetch_add(1, Ordering::Relaxed);
            }
        }
        self.count.fetch_add(1, Ordering::Relaxed);
        self.sum_us.fetch_add(us, Ordering::Relaxed);
    }

    /// An estimate of quantile `q` from the buckets (upper bound, µs).
    pub fn quantile_us(&self, q: f64) -> Option<u64> {
        let n = self.count.load(Ordering::Relaxed);
        if n == 0 {
            return None;
        }
        let want = (q * n as f64).ceil() as u64;
        SWAP_BUCKETS_US
            .iter()
            .enumerate()
            .find(|(i, _)| self.buckets[*i].load(Ordering::Relaxed) >= want)
            .map(|(_, b)| *b)
    }
}

/// What the registry knows about a live session (for KILL and /v1/sessions).
#[derive(Debug)]
pub struct SessionInfo {
    pub id: u32,
    pub client: String,
    pub listener: Arc<ListenerCtx>,
    pub upstream_thread: AtomicU32,
    pub generation: Mutex<Option<Arc<Generation>>>,
    pub pinned: Mutex<Option<&'static str>>,
    pub last_active: Mutex<Instant>,
    /// Set to true to make the session close (KILL CONNECTION).
    pub kill: watch::Sender<bool>,
    /// Wakes the session when something shared changed (a new generation,
    /// shutdown). Per session, so idle sessions do not all contend on the
    /// shared channels' waiter lists.
    pub nudge: tokio::sync::Notify,
}

/// All live sessions by proxy connection id.
#[derive(Debug, Default)]
pub struct Registry {
    inner: Mutex<HashMap<u32, Arc<SessionInfo>>>,
}

impl Registry {
    pub fn insert(&self, s: Arc<SessionInfo>) {
        self.inner
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .insert(s.id, s);
    }
    pub fn remove(&self, id: u32) {
        self.inner
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .remove(&id);
    }
    pub fn get(&self, id: u32) -> Option<Arc<SessionInfo>> {
        self.inner
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .get(&id)
            .cloned()
    }
    pub fn all(&self) -> Vec<Arc<SessionInfo>> {
        self.inner
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .values()
            .cloned()
            .collect()
    }
}

/// Process-wide shared state.
#[derive(Debug)]
pub struct Shared {
    pub registry: Registry,
    pub metrics: Metrics,
    next_id: AtomicU32,
    pub prewarm: Semaphore,
    pub deadline_policy: DeadlinePolicy,
    /// Becomes true when the process is shutting down.
    pub shutdown: watch::Receiver<bool>,
    /// Single-threaded runtimes that run client sessions (set by the binary).
    pub shards: std::sync::OnceLock<Shards>,
}

/// Client sessions are spread over single-threaded runtimes, one per core:
/// a session's socket events, its relay and its upstream socket stay on one
/// thread (no work stealing or cross-thread wake-ups on the hot path), as in
/// event-loop-per-core proxies. Without shards sessions run on the runtime
/// that accepted them.
#[derive(Debug)]
pub struct Shards {
    handles: Vec<tokio::runtime::Handle>,
    next: std::sync::atomic::AtomicUsize,
}

impl Shards {
    pub fn new(handles: Vec<tokio::runtime::Handle>) -> Shards {
        Shards {
            handles,
            next: std::sync::atomic::AtomicUsize::new(0),
        }
    }

    fn pick(&self) -> Option<&tokio::runtime::Handle> {
        if self.handles.is_empty() {
            return None;
        }
        let i = self.next.fetch_add(1, Ordering::Relaxed) % self.handles.len();
        self.handles.get(i)
    }
}

impl Shared {
    /// A fresh proxy connection id (never 0).
    pub fn next_id(&self) -> u32 {
        loop {
            let id = self.next_id.fetch_add(1, Ordering::Relaxed);
            if id != 0 {
                return id;
            }
        }
    }
}

/// The client-side settings of a listener, replaced as a whole on reload
/// (SIGHUP). A handshake reads them once ([`FrontendSlot::load`]) and
/// keeps that copy, so a reload never changes the rules mid-login, and
/// live sessions are not touched.
#[derive(Debug)]
pub struct FrontendSlot(std::sync::RwLock<Arc<FrontendConfig>>);

impl FrontendSlot {
    pub fn new(cfg: FrontendConfig) -> FrontendSlot {
        FrontendSlot(std::sync::RwLock::new(Arc::new(cfg)))
    }

    /// The settings in force now.
    pub fn load(&self) -> Arc<FrontendConfig> {
        Arc::clone(&self.0.read().unwrap_or_else(|e| e.into_inner()))
    }

    /// Puts new settings in force for the next handshakes.
    pub fn store(&self, cfg: FrontendConfig) {
        *self.0.write().unwrap_or_else(|e| e.into_inner()) = Arc::new(cfg);
    }
}

/// Everything a listener's sessions share.
#[derive(Debug)]
pub struct ListenerCtx {
    pub name: String,
    /// The configured TCP address (as written; reload compares it).
    pub bind: String,
    /// Local users, client TLS, auth plugin: reloadable.
    pub frontend: FrontendSlot,
    pub target: UpstreamTarget,
    pub credentials: CredentialHandle,
    pub server: ServerInfo,
    pub throttle: FailureThrottle,
    pub max_connections: u32,
    pub handshake_timeout: Duration,
    pub active: AtomicU32,
    /// Ready upstream connections (see `session::pool`).
    pub pool: crate::session::pool::IdlePool,
}

/// Builds the upstream target of a listener.
pub fn upstream_target(l: &ListenerConfig) -> Result<UpstreamTarget, String> {
    let addr = UpstreamAddr::parse(&l.upstream.address)
        .ok_or_else(|| format!("bad upstream address {:?}", l.upstream.address))?;
    let tls = net::upstream_tls::client_config(l.upstream.tls, l.upstream.ca_file.as_deref())?;
    Ok(UpstreamTarget {
        server_name: l
            .upstream
            .server_name
            .clone()
            .unwrap_or_else(|| addr.host().to_string()),
        addr,
        tls_mode: l.upstream.tls,
        tls,
        connect_timeout: l.upstream.connect_timeout,
    })
}

/// Builds the client-side settings of a listener.
pub fn frontend_config(l: &ListenerConfig) -> Result<FrontendConfig, String> {
    let mut users = Vec::new();
    for u in &l.users {
        let verifier = match (&u.password, &u.password_hash) {
            (Some(p), _) => crate::auth::PasswordVerifier::from_password(
                &p.resolve().map_err(|e| format!("user {}: {e}", u.name))?,
            ),
            (None, Some(h)) => crate::auth::PasswordVerifier::parse(h)
                .ok_or_else(|| format!("user {}: bad password_hash", u.name))?,
            (None, None) => return Err(format!("user {} has no password", u.name)),
        };
        users.push(LocalUser {
            name: u.name.clone(),
            verifier,
        });
    }
    let tls = match (&l.tls.cert_file, &l.tls.key_file) {
        (Some(c), Some(k)) if l.tls.mode != crate::config::ClientTlsMode::Disabled => {
            Some(net::server_tls_config(c, k)?)
        }
        _ => None,
    };
    Ok(FrontendConfig {
        users,
        tls,
        tls_mode: l.tls.mode,
        default_plugin: l.default_auth_plugin,
        auth_failure_delay: l.auth_failure_delay,
        max_allowed_packet: l.max_allowed_packet as usize,
    })
}

/// A bound listener, ready to serve.
pub struct BoundListener {
    pub ctx: Arc<ListenerCtx>,
    pub tcp: TcpListener,
    pub unix: Option<UnixListener>,
}

impl BoundListener {
    pub fn local_addr(&self) -> SocketAddr {
        self.tcp
            .local_addr()
            .unwrap_or_else(|_| SocketAddr::from(([127, 0, 0, 1], 0)))
    }
}

/// Probes the upstream's greeting, retrying until it answers (MySQL may
/// start after sqlease, e.g. in docker compose).
pub async fn probe_upstream(target: &UpstreamTarget, listener: &str) -> ServerInfo {
    let mut delay = Duration::from_millis(200);
    loop {
        match backend::probe(target).await {
            Ok(info) => {
                info!(listener, upstream = %target.addr, version = %String::from_utf8_lossy(&info.version), "upstream probed");
                return info;
            }
            Err(e) => {
                warn!(listener, upstream = %target.addr, error = %e, retry_in = ?delay, "cannot reach the upstream yet; retrying");
                tokio::time::sleep(delay).await;
                delay = (delay * 2).min(Duration::from_secs(5));
            }
        }
    }
}

/// Resolves the static credential sources (Vault sources are started by the caller).
pub fn static_source(name: &str, c: &CredentialConfig) -> Result<Option<CredentialHandle>, String> {
    match c {
        CredentialConfig::Static { username, password } => {
            let pw: SecretString = password
                .resolve()
                .map_err(|e| format!("credentials.{name}.password: {e}"))?;
            Ok(Some(CredentialHandle::fixed(name, username, pw)))
        }
        CredentialConfig::Vault { .. } => Ok(None),
    }
}

/// Shared state for a new process.
pub fn new_shared(cfg: &Config, shutdown: watch::Receiver<bool>) -> Arc<Shared> {
    Arc::new(Shared {
        registry: Registry::default(),
        metrics: Metrics::default(),
        next_id: AtomicU32::new(1),
        prewarm: Semaphore::new(cfg.rotation.prewarm_concurrency),
        deadline_policy: cfg.rotation.deadline_policy,
        shutdown,
        shards: std::sync::OnceLock::new(),
    })
}

/// Binds one listener (TCP and optional unix socket).
pub async fn bind(
    l: &ListenerConfig,
    credentials: CredentialHandle,
    server: ServerInfo,
) -> Result<BoundListener, String> {
    let target = upstream_target(l)?;
    let frontend = frontend_config(l)?;
    let tcp = TcpListener::bind(&l.bind)
        .await
        .map_err(|e| format!("listener {}: cannot bind {}: {e}", l.name, l.bind))?;
    let unix =
        match &l.unix_socket {
            Some(p) => {
                let _ = std::fs::remove_file(p);
                Some(UnixListener::bind(p).map_err(|e| {
                    format!("listener {}: cannot bind {}: {e}", l.name, p.display())
                })?)
            }
            None => None,
        };
    Ok(BoundListener {
        ctx: Arc::new(ListenerCtx {
            name: l.name.clone(),
            bind: l.bind.clone(),
            frontend: FrontendSlot::new(frontend),
            target,
            credentials,
            server,
            throttle: FailureThrottle::default(),
            max_connections: l.max_connections,
            handshake_timeout: l.handshake_timeout,
            active: AtomicU32::new(0),
            pool: crate::session::pool::IdlePool::new(l.upstream.idle_pool),
        }),
        tcp,
        unix,
    })
}

/// Accepts connections until shutdown.
pub async fn serve(listener: BoundListener, shared: Arc<Shared>) {
    let BoundListener { ctx, tcp, unix } = listener;
    let mut shutdown = shared.shutdown.clone();
    let nudger = tokio::spawn(nudge_sessions(Arc::clone(&ctx), Arc::clone(&shared)));
    let _nudger = AbortOnDrop(nudger);
    loop {
        let accepted = tokio::select! {
            r = tcp.accept() => r.map(|(s, a)| {
                let _ = s.set_nodelay(true);
                (Stream::Tcp(s), Some(a))
            }),
            r = async {
                match &unix {
                    Some(u) => u.accept().await.map(|(s, _)| (Stream::Unix(s), None)),
                    None => std::future::pending().await,
                }
            } => r,
            _ = shutdown.changed() => break,
        };
        match accepted {
            Ok((stream, addr)) => {
                let ctx = Arc::clone(&ctx);
                let shared2 = Arc::clone(&shared);
                match (stream, shared.shards.get().and_then(|s| s.pick())) {
                    (Stream::Tcp(s), Some(shard)) => {
                        match s.into_std() {
                            // Re-registered with the shard's own reactor.
                            Ok(std_stream) => {
                                shard.spawn(async move {
                                match tokio::net::TcpStream::from_std(std_stream) {
                                    Ok(s) => handle_connection(Stream::Tcp(s), addr, ctx, shared2).await,
                                    Err(e) => warn!(error = %e, "cannot hand a connection to a worker"),
                                }
                            });
                            }
                            Err(e) => warn!(error = %e, "cannot hand a connection to a worker"),
                        }
                    }
                    (stream, _) => {
                        tokio::spawn(handle_connection(stream, addr, ctx, shared2));
                    }
                }
            }
            Err(e) => {
                warn!(listener = %ctx.name, error = %e, "accept failed");
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
        }
    }
    info!(listener = %ctx.name, "listener stopped accepting");
}

/// Aborts a task when dropped.
struct AbortOnDrop(tokio::task::JoinHandle<()>);

impl Drop for AbortOnDrop {
    fn drop(&mut self) {
        self.0.abort();
    }
}

/// Wakes this listener's sessions when a new generation is published or the
/// process shuts down.
async fn nudge_sessions(ctx: Arc<ListenerCtx>, shared: Arc<Shared>) {
    let mut gens = ctx.credentials.subscribe();
    let mut shutdown = shared.shutdown.clone();
    loop {
        tokio::select! {
            r = gens.changed() => if r.is_err() { return },
            r = shutdown.changed() => {
                if r.is_err() {
                    return;
                }
            }
        }
        match (*shutdown.borrow(), ctx.credentials.current()) {
            (true, _) => ctx.pool.clear(),
            (false, Some(g)) => ctx.pool.retain_generation(g.id),
            (false, None) => ctx.pool.clear(),
        }
        for s in shared.registry.all() {
            if Arc::ptr_eq(&s.listener, &ctx) || *shutdown.borrow() {
                s.nudge.notify_one();
            }
        }
    }
}

/// Decrements the listener's connection count when dropped.
struct ActiveGuard(Arc<ListenerCtx>, Arc<Shared>);

impl Drop for ActiveGuard {
    fn drop(&mut self) {
        self.0.active.fetch_sub(1, Ordering::SeqCst);
        self.1
            .metrics
            .client_connections_current
            .fetch_sub(1, Ordering::Relaxed);
    }
}

async fn handle_connection(
    stream: Stream,
    addr: Option<SocketAddr>,
    ctx: Arc<ListenerCtx>,
    shared: Arc<Shared>,
) {
    let id = shared.next_id();
    let peer: Option<IpAddr> = addr.map(|a| a.ip());
    let client = addr.map(|a| a.to_string()).unwrap_or_else(|| "unix".into());
    let span = tracing::info_span!("conn", id, listener = %ctx.name, client = %client);
    async move {
        shared
            .metrics
            .client_connections_total
            .fetch_add(1, Ordering::Relaxed);
        let n = ctx.active.fetch_add(1, Ordering::SeqCst) + 1;
        shared
            .metrics
            .client_connections_current
            .fetch_add(1, Ordering::Relaxed);
        let _guard = ActiveGuard(Arc::clone(&ctx), Arc::clone(&shared));
        if n > ctx.max_connections {
            shared
                .metrics
                .connections_refused_total
                .fetch_add(1, Ordering::Relaxed);
            let mut conn = PacketConn::new(stream);
            // Sent before capabilities are negotiated: no SQLSTATE marker.
            let e = MysqlError::new(codes::ER_CON_COUNT_ERROR, "08004", "Too many connections");
            let _ = conn.write_packet(0, &e.encode(0)).await;
            conn.shutdown().await;
            debug!("refused: listener at max_connections");
            return;
        }
        let front = ctx.frontend.load();
        let hs = tokio::time::timeout(
            ctx.handshake_timeout,
            frontend::handshake(stream, peer, id, &ctx.server, &front, &ctx.throttle),
        )
        .await;
        let auth = match hs {
            Err(_) => {
                shared
                    .metrics
                    .handshake_failures_total
                    .fetch_add(1, Ordering::Relaxed);
                debug!("handshake timed out");
                return;
            }
            Ok(Err(frontend::FrontendError::Refused(e))) => {
                if e.code == codes::ER_ACCESS_DENIED_ERROR {
                    shared
                        .metrics
                        .auth_failures_total
                        .fetch_add(1, Ordering::Relaxed);
                    info!(error = %e, "login refused");
                } else {
                    shared
                        .metrics
                        .handshake_failures_total
                        .fetch_add(1, Ordering::Relaxed);
                    debug!(error = %e, "handshake refused");
                }
                return;
            }
            Ok(Err(e)) => {
                shared
                    .metrics
                    .handshake_failures_total
                    .fetch_add(1, Ordering::Relaxed);
                debug!(error = %e, "handshake failed");
                return;
            }
            Ok(Ok(a)) => a,
        };
        session::run(auth, id, client, peer, ctx, shared).await;
    }
    .instrument(span)
    .await
}

/// Sends an error to a client that is between commands (or right after auth).
pub async fn send_error(conn: &mut PacketConn, seq: u8, caps: u32, e: &MysqlError) {
    let _ = conn
        .write_packet(seq, &e.encode(caps | CLIENT_PROTOCOL_41))
        .await;
}
