//! Handling one client command: remapping, proxy-side commands (KILL,
//! COM_CHANGE_USER), forwarding and relaying the response.

use std::sync::atomic::Ordering;

use bytes::{Bytes, BytesMut};
use tracing::{debug, info, warn};

use super::classify::{self, Effect};
use super::relay::{self, Hooks, RelayError};
use super::{End, Session};
use crate::backend::{self, TRACKER_SETUP};
use crate::frontend::{self, HandshakeResponse};
use crate::protocol::caps::*;
use crate::protocol::command::{self, com, Command};
use crate::protocol::frame::{self, Logical};
use crate::protocol::packets::{codes, ok_simple, MysqlError};
use crate::protocol::read_lenenc_str;
use crate::protocol::response::Expect;
use crate::protocol::stmt;

/// COM_STMT_EXECUTE flag: open a read-only cursor.
const CURSOR_TYPE_READ_ONLY: u8 = 0x01;

fn unknown_stmt(id: u32, func: &str) -> MysqlError {
    MysqlError::new(
        codes::ER_UNKNOWN_STMT_HANDLER,
        "HY000",
        format!("Unknown prepared statement handler ({id}) given to {func}"),
    )
}

fn malformed() -> MysqlError {
    MysqlError::new(1835, "08S01", "Malformed communication packet")
}

impl Session {
    /// Handles one command. `Ok(false)` ends the session normally.
    pub(super) async fn handle_command(&mut self, cmd: Logical) -> Result<bool, End> {
        self.state.before_command();
        let reply_seq = cmd.next_seq;
        if let Some(e) = self.doomed.take() {
            self.send_err(reply_seq, &e).await;
            return Err(End::DeadlineStrict);
        }
        if self.lost_transaction && !matches!(command::decode(&cmd.payload), Command::Quit) {
            self.lost_transaction = false;
            let e = MysqlError::new(
                codes::CR_SERVER_LOST,
                "HY000",
                "Lost connection to MySQL server during query (sqlease: the upstream connection died inside a transaction; the transaction was rolled back, the session continues)",
            );
            self.send_err(reply_seq, &e).await;
            return Ok(true);
        }
        let payload = cmd.payload.clone();
        match command::decode(&payload) {
            Command::Quit => Ok(false),
            Command::ChangeUser => self.change_user(&payload).await,
            Command::ProcessKill(id) => self.kill(false, u64::from(id), reply_seq, cmd).await,
            Command::Query(sql) => {
                let effects = classify::classify(sql);
                if let Some(Effect::Kill { query, id }) = effects
                    .iter()
                    .find(|e| matches!(e, Effect::Kill { .. }))
                    .cloned()
                {
                    if effects.len() == 1 {
                        return self.kill(query, id, reply_seq, cmd).await;
                    }
                }
                self.state.apply_effects(&effects);
                self.forward(cmd.raw, reply_seq, Expect::Generic, None, None)
                    .await
            }
            Command::StmtPrepare(sql) => {
                let sql = Bytes::copy_from_slice(sql);
                self.forward(cmd.raw, reply_seq, Expect::Prepare, Some(sql), None)
                    .await
            }
            Command::StmtExecute { stmt_id, flags } => {
                self.execute(stmt_id, flags, &payload, cmd.raw, reply_seq)
                    .await
            }
            Command::StmtFetch { stmt_id } => {
                let Some(raw) = self.remapped(&payload, stmt_id) else {
                    return self
                        .reply_err(reply_seq, unknown_stmt(stmt_id, "mysqld_stmt_fetch"))
                        .await;
                };
                self.forward(raw, reply_seq, Expect::Fetch, None, Some(stmt_id))
                    .await
            }
            Command::StmtReset { stmt_id } => {
                let Some(raw) = self.remapped(&payload, stmt_id) else {
                    return self
                        .reply_err(reply_seq, unknown_stmt(stmt_id, "mysqld_stmt_reset"))
                        .await;
                };
                if let Some(s) = self.state.stmts.get_mut(&stmt_id) {
                    s.long_data = false;
                    s.cursor_open = false;
                }
                self.forward(raw, reply_seq, Expect::Single, None, None)
                    .await
            }
            Command::StmtSendLongData { stmt_id } => {
                // No response, even for an unknown statement.
                let Some(raw) = self.remapped(&payload, stmt_id) else {
                    return Ok(true);
                };
                if let Some(s) = self.state.stmts.get_mut(&stmt_id) {
                    s.long_data = true;
                }
                self.forward(raw, reply_seq, Expect::Nothing, None, None)
                    .await
            }
            Command::StmtClose { stmt_id } => {
                let Some(raw) = self.remapped(&payload, stmt_id) else {
                    return Ok(true);
                };
                self.state.stmts.remove(&stmt_id);
                self.state.version += 1;
                if self.up.is_none() {
                    return Ok(true);
                }
                self.forward(raw, reply_seq, Expect::Nothing, None, None)
                    .await
            }
            Command::ResetConnection => {
                let r = self
                    .forward(cmd.raw, reply_seq, Expect::Single, None, None)
                    .await;
                let schema = self.state.schema.clone();
                let status = self.state.status;
                self.state.reset(schema, status);
                self.reassert_trackers().await;
                r
            }
            Command::FieldList => {
                self.forward(cmd.raw, reply_seq, Expect::FieldList, None, None)
                    .await
            }
            Command::ProcessInfo => {
                self.forward(cmd.raw, reply_seq, Expect::Generic, None, None)
                    .await
            }
            Command::InitDb(_)
            | Command::Ping
            | Command::Statistics
            | Command::Debug
            | Command::SetOption(_)
            | Command::Other(_) => {
                self.forward(cmd.raw, reply_seq, Expect::Single, None, None)
                    .await
            }
            Command::Replication(c) => {
                self.reply_err(
                    reply_seq,
                    MysqlError::new(
                        codes::ER_UNKNOWN_COM_ERROR,
                        "08S01",
                        format!("sqlease does not relay replication streams (command {c:#04x})"),
                    ),
                )
                .await
            }
            Command::Malformed(_) => self.reply_err(reply_seq, malformed()).await,
        }
    }

    async fn reply_err(&mut self, seq: u8, e: MysqlError) -> Result<bool, End> {
        self.send_err(seq, &e).await;
        Ok(true)
    }

    /// The command with its statement id remapped to the upstream's, framed.
    fn remapped(&self, payload: &[u8], client_id: u32) -> Option<Bytes> {
        let st = self.state.stmts.get(&client_id)?;
        let mut p = payload.to_vec();
        stmt::set_stmt_id(&mut p, st.upstream_id);
        let mut out = BytesMut::new();
        let mut seq = 0;
        frame::put_packet(&mut out, &mut seq, &p);
        Some(out.freeze())
    }

    async fn execute(
        &mut self,
        client_id: u32,
        flags: u8,
        payload: &[u8],
        raw: Bytes,
        reply_seq: u8,
    ) -> Result<bool, End> {
        let Some(st) = self.state.stmts.get_mut(&client_id) else {
            return self
                .reply_err(reply_seq, unknown_stmt(client_id, "mysqld_stmt_execute"))
                .await;
        };
        // Remember the parameter types the client sent (re-sent after a
        // re-prepare); only copy them when they changed.
        if st.params > 0 {
            if let Some(types) = stmt::param_types(payload, st.params) {
                if st.types.as_deref() != Some(types) {
                    st.types = Some(types.to_vec());
                }
            }
        }
        let inject = st.needs_types
            && st.params > 0
            && stmt::param_types(payload, st.params).is_none()
            && st.types.is_some();
        st.needs_types = false;
        st.long_data = false;
        let raw = if st.upstream_id == client_id && !inject {
            // Fast path: the packet goes upstream as received.
            raw
        } else if !inject && payload.len() < frame::MAX_PAYLOAD {
            // Only the id changes: re-frame into the session's scratch buffer
            // (its allocation is reclaimed once the previous command is gone).
            let upstream_id = st.upstream_id;
            let s = &mut self.scratch;
            s.clear();
            s.reserve(frame::HEADER_LEN + payload.len());
            s.extend_from_slice(&(payload.len() as u32).to_le_bytes()[..3]);
            s.extend_from_slice(&[0]);
            s.extend_from_slice(payload);
            stmt::set_stmt_id(&mut s[frame::HEADER_LEN..], upstream_id);
            s.split().freeze()
        } else {
            let mut p = payload.to_vec();
            stmt::set_stmt_id(&mut p, st.upstream_id);
            if inject {
                if let Some(q) = st
                    .types
                    .as_deref()
                    .and_then(|t| stmt::with_types(&p, st.params, t))
                {
                    p = q;
                }
            }
            let mut out = BytesMut::new();
            let mut seq = 0;
            frame::put_packet(&mut out, &mut seq, &p);
            out.freeze()
        };
        let cursor = flags & CURSOR_TYPE_READ_ONLY != 0;
        let r = self
            .forward(raw, reply_seq, Expect::Generic, None, Some(client_id))
            .await;
        if let Some(st) = self.state.stmts.get_mut(&client_id) {
            st.cursor_open = cursor && self.last_cursor_open;
        }
        r
    }

    /// Forwards a command upstream and relays its response.
    pub(super) async fn forward(
        &mut self,
        raw: Bytes,
        reply_seq: u8,
        expect: Expect,
        prepare_sql: Option<Bytes>,
        stmt: Option<u32>,
    ) -> Result<bool, End> {
        if let Err(e) = self.ensure_upstream().await {
            if expect != Expect::Nothing {
                self.send_err(reply_seq, &e).await;
            }
            return Ok(true);
        }
        let caps = self.caps();
        let max = self.max_packet();
        let Some(up) = self.up.as_mut() else {
            return Ok(true);
        };
        self.shared
            .metrics
            .bytes_to_upstream_total
            .fetch_add(raw.len() as u64, Ordering::Relaxed);
        if let Err(e) = up.conn.write_raw(&raw).await {
            return self
                .relay_failed(RelayError::Upstream(e), false, reply_seq)
                .await;
        }
        let mut hooks = Hooks {
            state: &mut self.state,
            prepare_sql,
            stmt,
        };
        let mut out = relay::Outcome::default();
        let result = relay::relay_response(
            &mut self.client,
            &mut up.conn,
            caps,
            expect,
            &mut hooks,
            max,
            &mut out,
        )
        .await;
        match result {
            Ok(()) => {
                self.shared
                    .metrics
                    .bytes_to_client_total
                    .fetch_add(out.bytes, Ordering::Relaxed);
                self.last_cursor_open = out.cursor_open;
                if out.tracker_view_changed {
                    self.reassert_trackers().await;
                }
                Ok(true)
            }
            Err(e) => {
                let started = out.started;
                self.relay_failed(e, started, reply_seq).await
            }
        }
    }

    async fn relay_failed(
        &mut self,
        e: RelayError,
        started: bool,
        reply_seq: u8,
    ) -> Result<bool, End> {
        match e {
            RelayError::Client(_) | RelayError::ClientClosed => Err(End::ClientGoneMidCommand),
            RelayError::ClientProtocol(m) => {
                info!(error = %m, "closing: client protocol error");
                Err(End::Protocol)
            }
            RelayError::Upstream(_) | RelayError::UpstreamClosed | RelayError::Protocol(_) => {
                let in_trans = self.state.in_transaction();
                self.upstream_lost(&e.to_string());
                // This command's error tells the client already.
                self.lost_transaction = false;
                if started {
                    return Err(End::Protocol);
                }
                // Never retried: the server may have executed it.
                let msg = if in_trans {
                    "Lost connection to MySQL server during query (sqlease: the upstream connection died inside a transaction; the transaction was rolled back, the session continues)"
                } else {
                    "Lost connection to MySQL server during query (sqlease: the upstream connection died; the session continues on a new one)"
                };
                self.send_err(
                    reply_seq,
                    &MysqlError::new(codes::CR_SERVER_LOST, "HY000", msg),
                )
                .await;
                Ok(true)
            }
        }
    }

    /// Puts the proxy's trackers back after the application changed them
    /// (or after COM_RESET_CONNECTION reset them).
    async fn reassert_trackers(&mut self) {
        if let Some(up) = self.up.as_mut() {
            let sql = format!("SET SESSION {TRACKER_SETUP}");
            if let Err(e) = backend::simple_query(&mut up.conn, up.caps, sql.as_bytes()).await {
                warn!(error = %e, "re-enabling session trackers failed");
                self.upstream_lost("tracker setup failed");
            }
        }
    }

    /// KILL [QUERY|CONNECTION] <proxy id>, translated to the target session's
    /// current upstream thread and run as the same MySQL user.
    async fn kill(
        &mut self,
        query: bool,
        id: u64,
        reply_seq: u8,
        cmd: Logical,
    ) -> Result<bool, End> {
        let target = u32::try_from(id)
            .ok()
            .and_then(|i| self.shared.registry.get(i));
        let Some(target) = target else {
            // Not one of our ids: let the server decide (an upstream thread id).
            return self
                .forward(cmd.raw, reply_seq, Expect::Generic, None, None)
                .await;
        };
        if target.id == self.id && !query {
            self.send_err(
                reply_seq,
                &MysqlError::new(1927, "70100", "Connection was killed"),
            )
            .await;
            return Err(End::Killed);
        }
        let thread = target.upstream_thread.load(Ordering::Relaxed);
        let gen = target
            .generation
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clone();
        let Some(gen) = gen else {
            return self
                .reply_err(
                    reply_seq,
                    MysqlError::new(
                        codes::ER_NO_SUCH_THREAD,
                        "HY000",
                        format!("Unknown thread id: {id}"),
                    ),
                )
                .await;
        };
        self.shared
            .metrics
            .kills_translated_total
            .fetch_add(1, Ordering::Relaxed);
        let params = backend::ConnectParams {
            client_caps: 0,
            collation: self.collation,
            ..Default::default()
        };
        let result = async {
            let mut side = backend::connect(&target.listener.target, &gen, &params).await?;
            let sql = format!(
                "KILL {} {thread}",
                if query { "QUERY" } else { "CONNECTION" }
            );
            let st = backend::simple_query(&mut side.conn, side.caps, sql.as_bytes()).await;
            let _ = side.conn.write_packet(0, &[com::QUIT]).await;
            st
        }
        .await;
        match result {
            Ok(_) => {
                info!(
                    target = id,
                    thread, query, "KILL translated to the upstream thread"
                );
                if !query {
                    let _ = target.kill.send(true);
                }
                let st = self.state.status;
                let _ = self.client.write_packet(reply_seq, &ok_simple(st)).await;
                Ok(true)
            }
            Err(backend::BackendError::Server(e)) => self.reply_err(reply_seq, e).await,
            Err(e) => {
                warn!(error = %e, "KILL translation failed");
                self.reply_err(
                    reply_seq,
                    MysqlError::new(
                        codes::ER_NO_SUCH_THREAD,
                        "HY000",
                        format!("Unknown thread id: {id} (sqlease: {e})"),
                    ),
                )
                .await
            }
        }
    }

    /// COM_CHANGE_USER: only to a local user; re-authenticates locally and
    /// gives the session a fresh upstream state.
    async fn change_user(&mut self, payload: &[u8]) -> Result<bool, End> {
        let Some(req) = parse_change_user(payload, self.client_caps) else {
            self.send_err(1, &malformed()).await;
            return Err(End::Protocol);
        };
        let user = self
            .ctx
            .frontend
            .load()
            .users
            .iter()
            .find(|u| u.name.as_bytes() == req.user.as_slice())
            .cloned();
        let (ok, seq) = match frontend::authenticate(
            &mut self.client,
            1,
            &self.scramble,
            &req,
            user.as_ref(),
            self.tls,
        )
        .await
        {
            Ok(r) => r,
            Err(_) => return Err(End::ClientGone),
        };
        if !ok {
            let host = frontend::host_of(self.peer);
            let e = MysqlError::new(
                codes::ER_ACCESS_DENIED_ERROR,
                "28000",
                format!(
                    "Access denied for user '{}'@'{}' (using password: YES)",
                    String::from_utf8_lossy(&req.user),
                    host
                ),
            );
            self.shared
                .metrics
                .auth_failures_total
                .fetch_add(1, Ordering::Relaxed);
            let delay = match self.peer {
                Some(ip) => self
                    .ctx
                    .throttle
                    .failed(ip, self.ctx.frontend.load().auth_failure_delay),
                None => self.ctx.frontend.load().auth_failure_delay,
            };
            tokio::time::sleep(delay).await;
            info!(error = %e, "COM_CHANGE_USER refused");
            self.send_err(seq, &e).await;
            return Ok(true);
        }
        // A fresh upstream session with the requested schema and collation.
        if req.collation != 0 {
            self.collation = req.collation;
        }
        if let Some(mut old) = self.up.take() {
            tokio::spawn(async move {
                let _ = old.conn.write_packet(0, &[com::QUIT]).await;
            });
        }
        self.next = None;
        self.prewarm = None;
        self.state.reset(req.database.clone(), status::AUTOCOMMIT);
        if let Some(a) = req.attributes {
            self.attributes = Some(a);
        }
        match super::open_upstream(&self.ctx, self.params(false)).await {
            Ok(up) => {
                let st = up.status;
                self.up = Some(up);
                self.state.apply_status(st);
                self.publish_upstream();
                debug!("COM_CHANGE_USER: new upstream session");
                let _ = self.client.write_packet(seq, &ok_simple(st)).await;
                Ok(true)
            }
            Err(e) => {
                self.state.reset(None, status::AUTOCOMMIT);
                self.send_err(seq, &e).await;
                Ok(true)
            }
        }
    }
}

/// Parses COM_CHANGE_USER into the same shape as a handshake response.
fn parse_change_user(p: &[u8], caps: u32) -> Option<HandshakeResponse> {
    let body = p.get(1..)?;
    let nul = body.iter().position(|&c| c == 0)?;
    let user = body[..nul].to_vec();
    let mut rest = &body[nul + 1..];
    let auth = if caps & CLIENT_SECURE_CONNECTION != 0 {
        let n = usize::from(*rest.first()?);
        let a = rest.get(1..1 + n)?.to_vec();
        rest = &rest[1 + n..];
        a
    } else {
        let i = rest.iter().position(|&c| c == 0)?;
        let a = rest[..i].to_vec();
        rest = &rest[i + 1..];
        a
    };
    let db = match rest.iter().position(|&c| c == 0) {
        Some(i) => {
            let d = rest[..i].to_vec();
            rest = &rest[i + 1..];
            d
        }
        None => {
            let d = rest.to_vec();
            rest = &[];
            d
        }
    };
    let mut collation = 0u8;
    if rest.len() >= 2 {
        collation = rest[0];
        rest = &rest[2..];
    }
    let mut plugin = None;
    if caps & CLIENT_PLUGIN_AUTH != 0 && !rest.is_empty() {
        let i = rest.iter().position(|&c| c == 0).unwrap_or(rest.len());
        plugin = Some(rest[..i].to_vec());
        rest = rest.get(i + 1..).unwrap_or(&[]);
    }
    let attributes = if caps & CLIENT_CONNECT_ATTRS != 0 && !rest.is_empty() {
        read_lenenc_str(rest).map(|(a, _)| a.to_vec())
    } else {
        None
    };
    Some(HandshakeResponse {
        capabilities: caps,
        max_packet: 0,
        collation,
        user,
        auth_response: auth,
        database: (!db.is_empty()).then_some(db),
        plugin,
        attributes,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_change_user() {
        let mut p = vec![com::CHANGE_USER];
        p.extend_from_slice(b"app\0");
        p.push(20);
        p.extend_from_slice(&[9; 20]);
        p.extend_from_slice(b"shop\0");
        p.extend_from_slice(&[45, 0]);
        p.extend_from_slice(b"mysql_native_password\0");
        let caps = CLIENT_PROTOCOL_41 | CLIENT_SECURE_CONNECTION | CLIENT_PLUGIN_AUTH;
        let r = parse_change_user(&p, caps).unwrap();
        assert_eq!(r.user, b"app");
        assert_eq!(r.auth_response, vec![9; 20]);
        assert_eq!(r.database.as_deref(), Some(&b"shop"[..]));
        assert_eq!(r.collation, 45);
        assert_eq!(r.plugin.as_deref(), Some(&b"mysql_native_password"[..]));
        for n in 0..p.len() {
            let _ = parse_change_user(&p[..n], caps);
        }
    }

    #[test]
    fn unknown_stmt_wording() {
        assert_eq!(
            unknown_stmt(7, "mysqld_stmt_execute").message,
            "Unknown prepared statement handler (7) given to mysqld_stmt_execute"
        );
    }
}
