//! One client session: the relay loop, the state it tracks, and moving to
//! new credentials at safe points (design D5).

pub mod classify;
mod commands;
pub mod pool;
pub mod relay;
pub mod state;
mod swap;
pub mod uservars;

use std::net::IpAddr;
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use tokio::sync::{oneshot, watch};
use tracing::{debug, info, warn};

use crate::backend::{self, BackendError, ConnectParams, Upstream};
use crate::credentials::{Generation, SourceEvent};
use crate::frontend::Authenticated;
use crate::net::PacketConn;
use crate::protocol::caps::{Caps, CLIENT_PROTOCOL_41};
use crate::protocol::frame;
use crate::protocol::packets::{codes, ok_simple, MysqlError};
use crate::server::{ListenerCtx, SessionInfo, Shared};

pub use state::{PinReason, SessionState};

/// Idle time after which a session gives its buffers back.
const IDLE_SHRINK: Duration = Duration::from_millis(500);

/// A pre-warmed upstream connection for the next generation.
struct Next {
    up: Upstream,
    /// State version replayed on it.
    version: u64,
    schema: Option<Vec<u8>>,
    /// Statements already prepared on it: client id → upstream id.
    prepared: std::collections::HashMap<u32, u32>,
}

/// Per-client session.
pub struct Session {
    id: u32,
    client: PacketConn,
    client_caps: u32,
    collation: u8,
    attributes: Option<Vec<u8>>,
    scramble: [u8; 20],
    tls: bool,
    peer: Option<IpAddr>,
    up: Option<Upstream>,
    state: SessionState,
    ctx: Arc<ListenerCtx>,
    shared: Arc<Shared>,
    info: Arc<SessionInfo>,
    gen_rx: watch::Receiver<Option<Arc<Generation>>>,
    /// The latest published generation (refreshed when `gen_rx` changes).
    latest: Option<Arc<Generation>>,
    prewarm: Option<oneshot::Receiver<Result<Next, BackendError>>>,
    next: Option<Next>,
    /// Earliest time to retry a failed pre-warm.
    prewarm_retry_at: Option<tokio::time::Instant>,
    kill_rx: watch::Receiver<bool>,
    last_pin_logged: Option<PinReason>,
    last_cursor_open: bool,
    /// Set when the session must end: the next command gets this error.
    doomed: Option<MysqlError>,
    /// Reused to build rewritten commands without allocating each time.
    scratch: bytes::BytesMut,
    /// A user variable could not be re-created exactly: keep pinning.
    user_vars_unreplayable: bool,
    /// The upstream died while a transaction was open: the next command
    /// gets error 2013 instead of running outside the transaction.
    lost_transaction: bool,
}

/// Why a session ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum End {
    ClientQuit,
    ClientGone,
    /// The client went away while a response was being relayed.
    ClientGoneMidCommand,
    Killed,
    Shutdown,
    DeadlineStrict,
    Protocol,
}

impl Session {
    fn caps(&self) -> Caps {
        Caps {
            client: self.client_caps,
            upstream: self
                .up
                .as_ref()
                .map(|u| u.caps)
                .unwrap_or(crate::protocol::caps::CLIENT_SESSION_TRACK),
        }
    }

    fn max_packet(&self) -> usize {
        self.ctx.frontend.load().max_allowed_packet
    }

    fn params(&self, replay: bool) -> ConnectParams {
        ConnectParams {
            client_caps: self.client_caps,
            collation: self.collation,
            database: self.state.schema.clone(),
            attributes: self.attributes.clone(),
            replay_assignments: if replay {
                self.state.replay_assignments()
            } else {
                Vec::new()
            },
        }
    }

    async fn send_err(&mut self, seq: u8, e: &MysqlError) {
        let _ = self
            .client
            .write_packet(seq, &e.encode(self.client_caps | CLIENT_PROTOCOL_41))
            .await;
    }

    fn current_generation(&self) -> Option<Arc<Generation>> {
        self.up.as_ref().map(|u| Arc::clone(u.generation()))
    }

    fn publish_upstream(&self) {
        if let Some(u) = &self.up {
            self.info
                .upstream_thread
                .store(u.thread_id, Ordering::Relaxed);
            *self
                .info
                .generation
                .lock()
                .unwrap_or_else(|e| e.into_inner()) = Some(Arc::clone(u.generation()));
        }
    }

    /// The session's main loop: commands, rotations, upstream loss, kills.
    async fn run_loop(&mut self) -> End {
        let mut shutdown = self.shared.shutdown.clone();
        loop {
            if shutdown.has_changed().unwrap_or(true) && *shutdown.borrow_and_update() {
                return End::Shutdown;
            }
            self.maybe_prewarm();
            self.maybe_swap().await;
            // Complete commands already buffered.
            let max = self.max_packet();
            match frame::take_logical(&mut self.client.rbuf, Some(0), max) {
                Ok(Some(cmd)) => {
                    *self
                        .info
                        .last_active
                        .lock()
                        .unwrap_or_else(|e| e.into_inner()) = Instant::now();
                    match self.handle_command(cmd).await {
                        Ok(true) => continue,
                        Ok(false) => return End::ClientQuit,
                        Err(end) => return end,
                    }
                }
                Ok(None) => {}
                Err(e) => {
                    let err = match e {
                        frame::FrameError::OutOfOrder { .. } => MysqlError::new(
                            codes::ER_NET_PACKETS_OUT_OF_ORDER,
                            "08S01",
                            "Got packets out of order",
                        ),
                        frame::FrameError::TooLarge { .. } => MysqlError::new(
                            codes::ER_NET_PACKET_TOO_LARGE,
                            "08S01",
                            "Got a packet bigger than 'max_allowed_packet' bytes",
                        ),
                    };
                    info!(error = %e, "closing: bad packet from client");
                    self.send_err(1, &err).await;
                    return End::Protocol;
                }
            }
            let strict_deadline = self.strict_deadline();
            // Buffers are given back after a moment of idleness (thousands
            // of idle sessions must cost little; busy ones keep theirs).
            let holding = self.client.holds_buffers()
                || self.up.as_ref().is_some_and(|u| u.conn.holds_buffers());
            let client = &mut self.client;
            let up = &mut self.up;
            let nudge = &self.info.nudge;
            let prewarm = &mut self.prewarm;
            let kill_rx = &mut self.kill_rx;
            let retry_at = self.prewarm_retry_at;
            enum Ev {
                Client(std::io::Result<usize>),
                Upstream(std::io::Result<usize>),
                Generation,
                Prewarmed(Box<Result<Next, BackendError>>),
                Kill,
                Deadline,
                Retry,
                IdleShrink,
            }
            let ev = tokio::select! {
                biased;
                _ = kill_rx.changed() => Ev::Kill,
                r = client.fill() => Ev::Client(r),
                r = async {
                    match up.as_mut() {
                        Some(u) => u.conn.fill().await,
                        None => std::future::pending().await,
                    }
                } => Ev::Upstream(r),
                r = async {
                    match prewarm.as_mut() {
                        Some(rx) => rx.await,
                        None => std::future::pending().await,
                    }
                } => Ev::Prewarmed(Box::new(r.unwrap_or_else(|_| Err(BackendError::Protocol("pre-warm task ended".into()))))),
                _ = nudge.notified() => Ev::Generation,
                _ = async {
                    match strict_deadline {
                        Some(d) => tokio::time::sleep_until(d).await,
                        None => std::future::pending().await,
                    }
                } => Ev::Deadline,
                _ = async {
                    match retry_at {
                        Some(d) => tokio::time::sleep_until(d).await,
                        None => std::future::pending().await,
                    }
                } => Ev::Retry,
                _ = tokio::time::sleep(IDLE_SHRINK), if holding => Ev::IdleShrink,
            };
            match ev {
                Ev::Kill => {
                    // Another session ran KILL CONNECTION with our id: close
                    // the socket, as the server does for a killed idle session.
                    return End::Killed;
                }
                Ev::Client(Ok(0)) => return End::ClientGone,
                Ev::Client(Ok(_)) => {}
                Ev::Client(Err(e)) => {
                    debug!(error = %e, "client read failed");
                    return End::ClientGone;
                }
                Ev::Upstream(r) => {
                    // Nothing is expected from the server between commands:
                    // EOF, an error (killed, timed out) or garbage all mean the
                    // connection is gone. Reconnect lazily on the next command.
                    let what = match r {
                        Ok(0) => "closed".to_string(),
                        Ok(n) => format!("sent {n} unexpected bytes"),
                        Err(e) => e.to_string(),
                    };
                    self.upstream_lost(&what);
                }
                Ev::Generation => {
                    // Handled by maybe_prewarm at the top of the loop.
                }
                Ev::Prewarmed(r) => {
                    self.prewarm = None;
                    match *r {
                        Ok(next) => {
                            let current = self.current_generation().map(|g| g.id);
                            let latest = self.latest.as_ref().map(|g| g.id);
                            if Some(next.up.generation().id) == latest && current != latest {
                                self.next = Some(next);
                            }
                        }
                        Err(e) => {
                            warn!(error = %e, "pre-warming an upstream connection with the new credentials failed; will retry");
                            self.shared
                                .metrics
                                .swaps_failed_total
                                .fetch_add(1, Ordering::Relaxed);
                            self.prewarm_retry_at =
                                Some(tokio::time::Instant::now() + Duration::from_secs(1));
                        }
                    }
                }
                Ev::Retry => {
                    self.prewarm_retry_at = None;
                }
                Ev::IdleShrink => {
                    self.client.shrink_idle();
                    if let Some(u) = self.up.as_mut() {
                        u.conn.shrink_idle();
                    }
                }
                Ev::Deadline => {
                    let reason = self
                        .state
                        .safe_to_swap()
                        .err()
                        .map(|r| r.as_str())
                        .unwrap_or("none");
                    warn!(reason, "credentials expired while the session was pinned; closing it (rotation.deadline_policy = \"strict\")");
                    self.shared
                        .metrics
                        .deadline_closes_total
                        .fetch_add(1, Ordering::Relaxed);
                    // The pinned state dies with the old upstream session now;
                    // the client learns it on its next command, then the
                    // connection closes.
                    self.doomed = Some(MysqlError::new(
                        1927,
                        "70100",
                        format!("sqlease: the database credentials of this session expired while it held state that cannot be moved ({reason}); the session was closed (rotation.deadline_policy = \"strict\")"),
                    ));
                    if let Some(mut u) = self.up.take() {
                        let _ = u
                            .conn
                            .write_packet(0, &[crate::protocol::command::com::QUIT])
                            .await;
                    }
                }
            }
        }
    }

    /// Hands a clean upstream connection back to the listener's pool after
    /// a normal end of session. Only when the reset is known to restore
    /// exactly the pooled state: same schema, and the client's collation is
    /// the server's default (which COM_RESET_CONNECTION restores).
    fn recycle_upstream(&mut self, end: End, key: &pool::PoolKey) {
        if !matches!(end, End::ClientQuit | End::ClientGone)
            || self.doomed.is_some()
            || self.lost_transaction
            || self.collation != self.ctx.server.collation
            || self.state.schema.as_deref() != key.database()
            || !self.ctx.pool.has_room()
        {
            return;
        }
        let current = self.ctx.credentials.current().map(|g| g.id);
        let Some(up) = self.up.take() else { return };
        if Some(up.generation().id) != current {
            self.up = Some(up);
            return;
        }
        let ctx = Arc::clone(&self.ctx);
        let key = key.clone();
        tokio::spawn(async move {
            let mut up = up;
            if pool::reset_for_reuse(&mut up, None).await {
                up.conn.shrink_idle();
                let current = ctx.credentials.current().map(|g| g.id);
                ctx.pool.put(key, up, current);
            } else {
                let _ = up
                    .conn
                    .write_packet(0, &[crate::protocol::command::com::QUIT])
                    .await;
            }
        });
    }

    /// The hard deadline to act on under the strict policy.
    fn strict_deadline(&self) -> Option<tokio::time::Instant> {
        if self.shared.deadline_policy != crate::config::DeadlinePolicy::Strict {
            return None;
        }
        let g = self.current_generation()?;
        let latest = self.latest.as_ref().map(|g| g.id);
        if Some(g.id) == latest {
            return None;
        }
        g.deadline().map(tokio::time::Instant::from_std)
    }

    fn upstream_lost(&mut self, what: &str) {
        if let Some(u) = self.up.take() {
            let in_trans = self.state.in_transaction();
            self.lost_transaction |= in_trans;
            warn!(
                thread = u.thread_id,
                what,
                in_transaction = in_trans,
                "upstream connection lost; the next command reconnects"
            );
            self.shared
                .metrics
                .upstream_lost_total
                .fetch_add(1, Ordering::Relaxed);
        }
        self.state.server_state_lost();
    }

    /// Makes sure there is an upstream connection (reconnecting after a loss).
    async fn ensure_upstream(&mut self) -> Result<(), MysqlError> {
        if self.up.is_some() {
            return Ok(());
        }
        // A pre-warmed connection of the latest generation is as good as new.
        if let Some(next) = self.next.take() {
            self.up = Some(next.up);
            let synced = match swap::sync_state(self, next.version, next.schema).await {
                Ok(()) => swap::reprepare_missing(self, Some(&next.prepared)).await,
                Err(e) => Err(e),
            };
            if let Err(e) = synced {
                self.up = None;
                return Err(e);
            }
            self.publish_upstream();
            return Ok(());
        }
        let up = open_upstream(&self.ctx, self.params(true)).await?;
        self.up = Some(up);
        self.shared
            .metrics
            .upstream_reconnects_total
            .fetch_add(1, Ordering::Relaxed);
        if let Err(e) = swap::reprepare_all(self).await {
            self.up = None;
            return Err(e);
        }
        self.publish_upstream();
        info!(
            thread = self.up.as_ref().map(|u| u.thread_id),
            "reconnected upstream and replayed the session state"
        );
        Ok(())
    }
}

/// Opens an upstream connection with the current generation, reporting a
/// rejected generation to its source and retrying once with a newer one.
pub(crate) async fn open_upstream(
    ctx: &ListenerCtx,
    params: ConnectParams,
) -> Result<Upstream, MysqlError> {
    let mut last_rejected = None;
    for attempt in 0..3 {
        let Some(gen) = ctx
            .credentials
            .wait_current(ctx.target.connect_timeout)
            .await
        else {
            return Err(MysqlError::new(
                codes::CR_CONN_HOST_ERROR,
                "HY000",
                format!(
                    "sqlease: no database credentials are available yet ({}); retry shortly",
                    ctx.credentials.status()
                ),
            ));
        };
        if last_rejected == Some(gen.id) {
            // Wait for the source to replace the rejected generation. (Not
            // `changed()`: a cloned receiver has not seen earlier versions,
            // so it would return at once and burn the remaining attempts.)
            let mut rx = ctx.credentials.subscribe();
            let rejected = gen.id;
            let _ = tokio::time::timeout(
                ctx.target.connect_timeout,
                rx.wait_for(|g| g.as_ref().is_none_or(|g| g.id != rejected)),
            )
            .await;
            continue;
        }
        match backend::connect(&ctx.target, &gen, &params).await {
            Ok(u) => return Ok(u),
            Err(e) if e.is_auth_rejected() => {
                warn!(generation = gen.id, user = %gen.username, attempt, "MySQL rejected the current credentials (revoked?); asking for new ones");
                ctx.credentials
                    .report(SourceEvent::AuthRejected { generation: gen.id });
                last_rejected = Some(gen.id);
            }
            Err(BackendError::Server(e)) => return Err(e),
            Err(e) => {
                warn!(error = %e, "cannot open an upstream connection");
                return Err(MysqlError::new(
                    codes::CR_CONN_HOST_ERROR,
                    "HY000",
                    format!("sqlease: cannot reach MySQL: {e}"),
                ));
            }
        }
    }
    Err(MysqlError::new(
        codes::ER_ACCESS_DENIED_ERROR,
        "28000",
        "sqlease: MySQL rejected the credentials obtained for this listener; check the credential source",
    ))
}

/// Runs a session from an authenticated client to its end.
pub async fn run(
    auth: Authenticated,
    id: u32,
    client_addr: String,
    peer: Option<IpAddr>,
    ctx: Arc<ListenerCtx>,
    shared: Arc<Shared>,
) {
    let Authenticated {
        mut conn,
        caps,
        collation,
        database,
        attributes,
        next_seq,
        scramble,
        tls,
        ..
    } = auth;
    let params = ConnectParams {
        client_caps: caps,
        collation,
        database: database.clone(),
        attributes: attributes.clone(),
        replay_assignments: Vec::new(),
    };
    let key = pool::PoolKey::of(&params);
    let pooled = ctx
        .credentials
        .current()
        .and_then(|g| ctx.pool.take(&key, g.id));
    let opened = match pooled {
        Some(u) => Ok(u),
        None => open_upstream(&ctx, params.clone()).await,
    };
    // Keep a connection ready for the next login.
    pool::refill(Arc::clone(&ctx), params);
    let up = match opened {
        Ok(u) => u,
        Err(e) => {
            info!(error = %e, "could not open the upstream connection for a new client");
            let _ = conn
                .write_packet(next_seq, &e.encode(caps | CLIENT_PROTOCOL_41))
                .await;
            return;
        }
    };
    if conn
        .write_packet(next_seq, &ok_simple(up.status))
        .await
        .is_err()
    {
        return;
    }
    let (kill_tx, kill_rx) = watch::channel(false);
    let info = Arc::new(SessionInfo {
        id,
        client: client_addr,
        listener: Arc::clone(&ctx),
        upstream_thread: AtomicU32::new(up.thread_id),
        generation: Mutex::new(Some(Arc::clone(up.generation()))),
        pinned: Mutex::new(None),
        last_active: Mutex::new(Instant::now()),
        kill: kill_tx,
        nudge: tokio::sync::Notify::new(),
    });
    shared.registry.insert(Arc::clone(&info));
    debug!(thread = up.thread_id, user = %up.generation().username, "session started");
    let status = up.status;
    let mut s = Session {
        id,
        client: conn,
        client_caps: caps,
        collation,
        attributes,
        scramble,
        tls,
        peer,
        up: Some(up),
        state: SessionState::new(database, status),
        gen_rx: ctx.credentials.subscribe(),
        latest: None,
        ctx,
        shared: Arc::clone(&shared),
        info,
        prewarm: None,
        next: None,
        prewarm_retry_at: None,
        kill_rx,
        last_pin_logged: None,
        last_cursor_open: false,
        doomed: None,
        lost_transaction: false,
        user_vars_unreplayable: false,
        scratch: bytes::BytesMut::new(),
    };
    s.latest = s.gen_rx.borrow_and_update().clone();
    let end = s.run_loop().await;
    debug!(?end, "session ended");
    s.recycle_upstream(end, &key);
    if let Some(mut u) = s.up.take() {
        let _ = u
            .conn
            .write_packet(0, &[crate::protocol::command::com::QUIT])
            .await;
        u.conn.shutdown().await;
    }
    s.client.shutdown().await;
    shared.registry.remove(s.id);
}
