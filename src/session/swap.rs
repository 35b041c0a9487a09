//! Moving a session to an upstream connection of a newer generation:
//! pre-warm in the background (bounded), swap at a safe point, replay the
//! state, re-prepare statements, close the old connection.

use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Instant;

use tokio::sync::oneshot;
use tracing::{info, warn};

use super::{Next, Session};
use crate::backend::{self, BackendError};
use crate::net::PacketConn;
use crate::protocol::command::com;
use crate::protocol::packets::{codes, parse_err, MysqlError};
use crate::protocol::response::{Expect, PacketKind, ResponseMachine};

/// Largest response packet read during replay.
const MAX_REPLAY_PACKET: usize = 1 << 24;

impl Session {
    /// Starts pre-warming a connection with the latest generation if needed.
    pub(super) fn maybe_prewarm(&mut self) {
        if self.prewarm.is_some() {
            return;
        }
        if let Some(t) = self.prewarm_retry_at {
            if tokio::time::Instant::now() < t {
                return;
            }
        }
        if self.gen_rx.has_changed().unwrap_or(false) {
            self.latest = self.gen_rx.borrow_and_update().clone();
        }
        let (Some(latest), Some(up)) = (&self.latest, &self.up) else {
            return;
        };
        if up.generation().id == latest.id || latest.expired(Instant::now()) {
            return;
        }
        let latest = Arc::clone(latest);
        if let Some(n) = &self.next {
            if n.up.generation().id == latest.id {
                return;
            }
            self.next = None;
        }
        let (tx, rx) = oneshot::channel();
        let shared = Arc::clone(&self.shared);
        let ctx = Arc::clone(&self.ctx);
        let params = self.params(true);
        let version = self.state.version;
        let schema = self.state.schema.clone();
        let stmts = statements(self, None);
        let deprecate_eof = self.caps().deprecate_eof();
        tokio::spawn(async move {
            let _permit = shared.prewarm.acquire().await;
            let mut r = backend::connect(&ctx.target, &latest, &params).await;
            // Statements are prepared here too, so the swap itself usually
            // has nothing left to do but switch.
            let mut prepared = std::collections::HashMap::new();
            if let Ok(up) = r.as_mut() {
                match prepare_on(&mut up.conn, deprecate_eof, schema.as_deref(), &stmts).await {
                    Ok(done) => {
                        for (id, u, _) in done {
                            if let Some(u) = u {
                                prepared.insert(id, u);
                            }
                        }
                    }
                    Err(e) => r = Err(BackendError::Server(e)),
                }
            }
            if let Err(e) = &r {
                if e.is_auth_rejected() {
                    ctx.credentials
                        .report(crate::credentials::SourceEvent::AuthRejected {
                            generation: latest.id,
                        });
                }
            }
            let _ = tx.send(r.map(|up| Next {
                up,
                version,
                schema,
                prepared,
            }));
        });
        self.prewarm = Some(rx);
    }

    /// Swaps to the pre-warmed connection if the session is at a safe point.
    pub(super) async fn maybe_swap(&mut self) {
        if self.next.is_none() || self.up.is_none() {
            return;
        }
        let carry_user_vars = self.state.only_user_variables() && self.user_vars_replayable();
        if let (Err(reason), false) = (self.state.safe_to_swap(), carry_user_vars) {
            *self.info.pinned.lock().unwrap_or_else(|e| e.into_inner()) = Some(reason.as_str());
            if self.last_pin_logged != Some(reason) {
                info!(reason = reason.as_str(), "session pinned to its upstream connection; it moves to the new credentials when clear");
                self.last_pin_logged = Some(reason);
            }
            return;
        }
        *self.info.pinned.lock().unwrap_or_else(|e| e.into_inner()) = None;
        self.last_pin_logged = None;
        let Some(next) = self.next.take() else { return };
        let t0 = Instant::now();
        // User variables are read from the old connection first.
        let user_vars = if carry_user_vars {
            let deprecate_eof = self.caps().deprecate_eof();
            let Some(up) = self.up.as_mut() else { return };
            match super::uservars::snapshot(&mut up.conn, deprecate_eof).await {
                Ok(Some(v)) => v,
                Ok(None) => {
                    self.next = Some(next);
                    self.user_vars_unreplayable = true;
                    info!("user variables of a type that cannot be re-created exactly: the session stays pinned until they are cleared");
                    return;
                }
                Err(e) => {
                    warn!(error = %e, "reading the session's user variables failed");
                    self.upstream_lost("reading user variables failed");
                    self.next = Some(next);
                    return;
                }
            }
        } else {
            Vec::new()
        };
        let Some(old) = self.up.replace(next.up) else {
            return;
        };
        let result = match sync_state(self, next.version, next.schema).await {
            Ok(()) => match recreate_user_vars(self, &user_vars).await {
                Ok(()) => reprepare_missing(self, Some(&next.prepared)).await,
                Err(e) => Err(e),
            },
            Err(e) => Err(e),
        };
        if let Err(e) = result {
            warn!(error = %e, "replaying the session state on the new connection failed; staying on the old one");
            self.shared
                .metrics
                .swaps_failed_total
                .fetch_add(1, Ordering::Relaxed);
            self.up = Some(old);
            self.prewarm_retry_at =
                Some(tokio::time::Instant::now() + std::time::Duration::from_secs(1));
            return;
        }
        let pause = t0.elapsed();
        let mut old = old;
        let old_gen = old.generation().id;
        let old_thread = old.thread_id;
        // Close the old connection (COM_QUIT) without waiting for it.
        tokio::spawn(async move {
            let _ = old.conn.write_packet(0, &[com::QUIT]).await;
            old.conn.shutdown().await;
            drop(old);
        });
        self.shared
            .metrics
            .swaps_total
            .fetch_add(1, Ordering::Relaxed);
        self.shared.metrics.swap_pause.observe(pause);
        self.publish_upstream();
        if let Some(u) = &self.up {
            info!(
                from_generation = old_gen,
                to_generation = u.generation().id,
                old_thread,
                new_thread = u.thread_id,
                user = %u.generation().username,
                pause_us = pause.as_micros() as u64,
                "session moved to new credentials"
            );
        }
    }
}

fn lost(e: impl std::fmt::Display) -> MysqlError {
    MysqlError::new(
        codes::CR_SERVER_LOST,
        "HY000",
        format!("Lost connection to MySQL server during query (sqlease: {e})"),
    )
}

fn backend_err(e: BackendError) -> MysqlError {
    match e {
        BackendError::Server(e) => e,
        other => lost(other),
    }
}

impl Session {
    /// User variables can be carried over (MariaDB lists them with types).
    fn user_vars_replayable(&self) -> bool {
        !self.user_vars_unreplayable && self.ctx.server.version.windows(7).any(|w| w == b"MariaDB")
    }
}

/// Re-creates user variables on the current upstream connection.
async fn recreate_user_vars(s: &mut Session, assignments: &[String]) -> Result<(), MysqlError> {
    if assignments.is_empty() {
        return Ok(());
    }
    let Some(up) = s.up.as_mut() else {
        return Err(lost("no upstream connection"));
    };
    let sql = format!("SET {}", assignments.join(", "));
    backend::simple_query(&mut up.conn, up.caps, sql.as_bytes())
        .await
        .map_err(backend_err)?;
    Ok(())
}

/// Brings a connection opened with state version `version` up to date.
pub(super) async fn sync_state(
    s: &mut Session,
    version: u64,
    schema: Option<Vec<u8>>,
) -> Result<(), MysqlError> {
    if s.state.version == version {
        return Ok(());
    }
    let assignments = s.state.replay_assignments();
    let want_schema = s.state.schema.clone();
    let Some(up) = s.up.as_mut() else {
        return Err(lost("no upstream connection"));
    };
    if !assignments.is_empty() {
        let sql = format!("SET SESSION {}", assignments.join(", "));
        backend::simple_query(&mut up.conn, up.caps, sql.as_bytes())
            .await
            .map_err(backend_err)?;
    }
    if want_schema != schema {
        if let Some(db) = want_schema {
            let mut p = vec![com::INIT_DB];
            p.extend_from_slice(&db);
            backend::run_simple(&mut up.conn, up.caps, &p)
                .await
                .map_err(backend_err)?;
        }
    }
    Ok(())
}

/// Reads one whole response, returning the kind of its first packet.
async fn read_response(
    conn: &mut PacketConn,
    expect: Expect,
    deprecate_eof: bool,
) -> Result<(PacketKind, Option<MysqlError>), MysqlError> {
    let mut m = ResponseMachine::new(expect, deprecate_eof);
    let mut first = None;
    let mut err = None;
    while !m.is_done() {
        let l = conn
            .read_logical(None, MAX_REPLAY_PACKET)
            .await
            .map_err(lost)?;
        let ev = m.on_logical(&l.payload).map_err(lost)?;
        if l.payload.first() == Some(&0xFF) {
            err = parse_err(&l.payload);
        }
        first.get_or_insert(ev.kind);
    }
    Ok((first.unwrap_or(PacketKind::Other), err))
}

/// Re-prepares every statement of the session on the current upstream
/// connection (all requests written first, then all responses read: one
/// round trip) and remaps their ids.
/// A statement to prepare on a connection: (client id, SQL, its schema).
pub(super) type ToPrepare = (u32, bytes::Bytes, Option<Vec<u8>>);

/// Prepares statements on a connection in one pipelined round trip, each in
/// the schema it was first prepared in, and returns the new upstream ids
/// (`None` where the server refused). The connection ends in `session_schema`.
pub(super) async fn prepare_on(
    conn: &mut PacketConn,
    deprecate_eof: bool,
    session_schema: Option<&[u8]>,
    list: &[ToPrepare],
) -> Result<Vec<(u32, Option<u32>, Option<MysqlError>)>, MysqlError> {
    let mut order: Vec<&ToPrepare> = list.iter().collect();
    order.sort_unstable_by(|a, b| (&a.2, a.0).cmp(&(&b.2, b.0)));
    let mut current: Option<&[u8]> = session_schema;
    let mut batch = bytes::BytesMut::new();
    let mut expects = Vec::new();
    let put = |batch: &mut bytes::BytesMut, p: &[u8]| {
        let mut seq = 0;
        crate::protocol::frame::put_packet(batch, &mut seq, p);
    };
    let init_db = |db: &[u8]| {
        let mut p = vec![com::INIT_DB];
        p.extend_from_slice(db);
        p
    };
    for (id, sql, schema) in order {
        if schema.as_deref() != current {
            if let Some(db) = schema {
                put(&mut batch, &init_db(db));
                expects.push(None);
                current = Some(db);
            }
        }
        let mut p = Vec::with_capacity(1 + sql.len());
        p.push(com::STMT_PREPARE);
        p.extend_from_slice(sql);
        put(&mut batch, &p);
        expects.push(Some(*id));
    }
    if current != session_schema {
        if let Some(db) = session_schema {
            put(&mut batch, &init_db(db));
            expects.push(None);
        }
    }
    if batch.is_empty() {
        return Ok(Vec::new());
    }
    conn.write_raw(&batch).await.map_err(lost)?;
    let mut out = Vec::with_capacity(list.len());
    for e in &expects {
        let Some(id) = e else {
            let (kind, err) = read_response(conn, Expect::Single, deprecate_eof).await?;
            if kind == PacketKind::Other {
                if let Some(err) = err {
                    return Err(err);
                }
            }
            continue;
        };
        let (kind, err) = read_response(conn, Expect::Prepare, deprecate_eof).await?;
        match kind {
            PacketKind::PrepareOk { stmt_id, .. } => out.push((*id, Some(stmt_id), None)),
            _ => out.push((*id, None, err)),
        }
    }
    Ok(out)
}

/// The session's statements (or those not yet prepared on the new connection).
pub(super) fn statements(
    s: &Session,
    skip: Option<&std::collections::HashMap<u32, u32>>,
) -> Vec<ToPrepare> {
    s.state
        .stmts
        .iter()
        .filter(|(id, _)| skip.is_none_or(|m| !m.contains_key(id)))
        .map(|(id, st)| (*id, st.sql.clone(), st.schema.clone()))
        .collect()
}

/// Applies new upstream ids to the session's statements.
fn apply_prepared(s: &mut Session, done: &[(u32, Option<u32>, Option<MysqlError>)]) {
    for (id, upstream, err) in done {
        let Some(st) = s.state.stmts.get_mut(id) else {
            continue;
        };
        match upstream {
            Some(u) => {
                st.upstream_id = *u;
                st.needs_types = st.params > 0;
            }
            None => {
                warn!(client_stmt = id, error = ?err, "re-preparing a statement failed; its next execute will report the error");
                st.upstream_id = u32::MAX;
            }
        }
    }
}

/// Re-prepares the session's statements on the current upstream connection
/// (those in `already` were prepared there by the pre-warm task).
pub(super) async fn reprepare_all(s: &mut Session) -> Result<(), MysqlError> {
    reprepare_missing(s, None).await
}

pub(super) async fn reprepare_missing(
    s: &mut Session,
    already: Option<&std::collections::HashMap<u32, u32>>,
) -> Result<(), MysqlError> {
    if let Some(m) = already {
        let pre: Vec<_> = m
            .iter()
            .filter(|(id, _)| s.state.stmts.contains_key(id))
            .map(|(id, u)| (*id, Some(*u), None))
            .collect();
        apply_prepared(s, &pre);
        // Statements closed since the pre-warm: close them there too.
        let stale: Vec<u32> = m
            .iter()
            .filter(|(id, _)| !s.state.stmts.contains_key(id))
            .map(|(_, u)| *u)
            .collect();
        if let (false, Some(up)) = (stale.is_empty(), s.up.as_mut()) {
            let mut batch = bytes::BytesMut::new();
            for u in stale {
                let mut p = vec![com::STMT_CLOSE];
                p.extend_from_slice(&u.to_le_bytes());
                let mut seq = 0;
                crate::protocol::frame::put_packet(&mut batch, &mut seq, &p);
            }
            up.conn.write_raw(&batch).await.map_err(lost)?;
        }
    }
    let list = statements(s, already);
    if list.is_empty() {
        return Ok(());
    }
    let deprecate_eof = s.caps().deprecate_eof();
    let schema = s.state.schema.clone();
    let Some(up) = s.up.as_mut() else {
        return Err(lost("no upstream connection"));
    };
    let done = prepare_on(&mut up.conn, deprecate_eof, schema.as_deref(), &list).await?;
    apply_prepared(s, &done);
    Ok(())
}
