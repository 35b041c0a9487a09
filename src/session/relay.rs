//! Relaying one command's response from the upstream to the client.
//!
//! Packets are parsed in place in the upstream read buffer; runs of packets
//! that need no change are written to the client straight from that buffer
//! (no copy, one write per read). Only OK packets carrying session-tracker
//! data and prepare-OK packets whose statement id is remapped are rewritten.
//! Large rows are streamed: a row is judged on its first byte and its bytes
//! are forwarded as they arrive.

use bytes::{Buf, BytesMut};
use tokio::io::AsyncWriteExt;

use crate::net::PacketConn;
use crate::protocol::caps::{status, Caps};
use crate::protocol::frame::{self, parse_header, HEADER_LEN, MAX_PAYLOAD};
use crate::protocol::packets::{encode_ok, parse_ok};
use crate::protocol::response::{Expect, PacketKind, ResponseMachine};
use crate::protocol::tracker;

use super::state::{SessionState, Stmt};

/// Why a relay stopped early.
#[derive(Debug, thiserror::Error)]
pub enum RelayError {
    #[error("client connection lost: {0}")]
    Client(std::io::Error),
    #[error("client closed the connection")]
    ClientClosed,
    #[error("upstream connection lost: {0}")]
    Upstream(std::io::Error),
    #[error("upstream closed the connection")]
    UpstreamClosed,
    #[error("protocol error from upstream: {0}")]
    Protocol(String),
    #[error("protocol error from client: {0}")]
    ClientProtocol(String),
}

impl RelayError {
    /// No byte of the response reached the client yet and the upstream failed.
    pub fn is_upstream(&self) -> bool {
        matches!(
            self,
            RelayError::Upstream(_) | RelayError::UpstreamClosed | RelayError::Protocol(_)
        )
    }
}

/// What the relay learned about the response.
#[derive(Debug, Default, Clone, Copy)]
pub struct Outcome {
    /// Bytes written to the client.
    pub bytes: u64,
    /// Whether any byte was written to the client.
    pub started: bool,
    /// The application changed its own tracker settings (re-assert ours).
    pub tracker_view_changed: bool,
    /// A statement's cursor stayed open.
    pub cursor_open: bool,
    /// The response ended with an error.
    pub error: bool,
}

/// Per-command context the relay needs to rewrite packets.
pub struct Hooks<'a> {
    pub state: &'a mut SessionState,
    /// For COM_STMT_PREPARE: the SQL, to record the new statement.
    pub prepare_sql: Option<bytes::Bytes>,
    /// For COM_STMT_EXECUTE / FETCH: the client statement id.
    pub stmt: Option<u32>,
}

async fn write_client(
    client: &mut PacketConn,
    bytes: &[u8],
    out: &mut Outcome,
) -> Result<(), RelayError> {
    if bytes.is_empty() {
        return Ok(());
    }
    client
        .stream
        .write_all(bytes)
        .await
        .map_err(RelayError::Client)?;
    out.bytes += bytes.len() as u64;
    out.started = true;
    Ok(())
}

/// Relays one response. The command has already been sent upstream.
pub async fn relay_response(
    client: &mut PacketConn,
    up: &mut PacketConn,
    caps: Caps,
    expect: Expect,
    hooks: &mut Hooks<'_>,
    max_packet: usize,
    out: &mut Outcome,
) -> Result<(), RelayError> {
    let mut m = ResponseMachine::new(expect, caps.deprecate_eof());
    if m.is_done() {
        return Ok(());
    }
    let mut passthrough = 0usize;
    loop {
        let mut verbatim = 0usize;
        loop {
            let buf = &up.rbuf[verbatim..];
            if passthrough > 0 {
                let n = passthrough.min(buf.len());
                verbatim += n;
                passthrough -= n;
                if passthrough > 0 || buf.len() == n {
                    break;
                }
                continue;
            }
            if m.is_done() {
                break;
            }
            let Some(h) = parse_header(buf) else { break };
            let avail = buf.len() - HEADER_LEN;
            if h.len > 0 && avail == 0 {
                break;
            }
            let first = if h.len > 0 { buf[HEADER_LEN] } else { 0 };
            if m.needs_full(h.len, first) {
                if avail < h.len {
                    break;
                }
                let payload = &buf[HEADER_LEN..HEADER_LEN + h.len];
                let ev = m
                    .on_packet(h.len, payload)
                    .map_err(|e| RelayError::Protocol(e.to_string()))?;
                let rewrite = inspect(ev.kind, payload, caps, hooks, out);
                if let Some(new_payload) = rewrite {
                    // Flush what precedes, then the rewritten packet.
                    write_client(client, &up.rbuf[..verbatim], out).await?;
                    up.rbuf.advance(verbatim + HEADER_LEN + h.len);
                    let mut framed = BytesMut::with_capacity(new_payload.len() + HEADER_LEN);
                    let mut seq = h.seq;
                    frame::put_packet(&mut framed, &mut seq, &new_payload);
                    write_client(client, &framed, out).await?;
                    verbatim = 0;
                } else {
                    verbatim += HEADER_LEN + h.len;
                }
                if ev.client_turn {
                    write_client(client, &up.rbuf[..verbatim], out).await?;
                    up.rbuf.advance(verbatim);
                    client.stream.flush().await.map_err(RelayError::Client)?;
                    verbatim = 0;
                    stream_local_infile(client, up, max_packet).await?;
                    m.local_infile_sent();
                }
            } else {
                let n = avail.min(h.len);
                let ev = m
                    .on_packet(h.len, &buf[HEADER_LEN..HEADER_LEN + n])
                    .map_err(|e| RelayError::Protocol(e.to_string()))?;
                if ev.kind == PacketKind::Err {
                    out.error = true;
                }
                verbatim += HEADER_LEN + n;
                passthrough = h.len - n;
            }
        }
        if verbatim > 0 {
            // Straight from the read buffer: no copy, no allocation.
            write_client(client, &up.rbuf[..verbatim], out).await?;
            up.rbuf.advance(verbatim);
        }
        if m.is_done() && passthrough == 0 {
            client.stream.flush().await.map_err(RelayError::Client)?;
            if up.rbuf.is_empty() && up.rbuf.capacity() > 4 * 1024 * 1024 {
                up.rbuf = BytesMut::new();
            }
            return Ok(());
        }
        client.stream.flush().await.map_err(RelayError::Client)?;
        match up.fill().await {
            Ok(0) => return Err(RelayError::UpstreamClosed),
            Ok(_) => {}
            Err(e) => return Err(RelayError::Upstream(e)),
        }
    }
}

/// Looks at a fully buffered packet; returns a replacement payload if it
/// must be rewritten for the client.
fn inspect(
    kind: PacketKind,
    payload: &[u8],
    caps: Caps,
    hooks: &mut Hooks<'_>,
    out: &mut Outcome,
) -> Option<Vec<u8>> {
    match kind {
        PacketKind::Ok { status } | PacketKind::Terminator { status, ok: true } => {
            hooks.state.apply_status(status);
            if status & status::CURSOR_EXISTS != 0 {
                out.cursor_open = true;
            }
            let ok = parse_ok(payload, caps.upstream_session_track())?;
            if matches!(kind, PacketKind::Ok { .. }) {
                hooks.state.set_last_insert_id(ok.last_insert_id);
            }
            if status & status::SESSION_STATE_CHANGED == 0 {
                return None;
            }
            let entries = ok.session_state.map(tracker::parse).unwrap_or_default();
            if hooks.state.apply_trackers(&entries) {
                out.tracker_view_changed = true;
            }
            let view = &hooks.state.client_view;
            let kept: Vec<_> = entries.iter().copied().filter(|e| view.wants(e)).collect();
            if caps.client_session_track() && !kept.is_empty() && kept.len() == entries.len() {
                return None;
            }
            let block = tracker::encode(&kept);
            let mut new = ok.clone();
            // MariaDB sets SESSION_STATE_CHANGED only for clients that track
            // sessions, and only when something they track changed.
            if kept.is_empty() || !caps.client_session_track() {
                new.status &= !status::SESSION_STATE_CHANGED;
                new.session_state = None;
            } else {
                new.session_state = Some(&block);
            }
            Some(encode_ok(&new, caps.client_session_track()))
        }
        PacketKind::Terminator { status, ok: false } | PacketKind::MetaEof { status } => {
            hooks.state.apply_status(status);
            if status & status::CURSOR_EXISTS != 0 {
                out.cursor_open = true;
            }
            None
        }
        PacketKind::Err => {
            out.error = true;
            if hooks.prepare_sql.take().is_some() {
                // A failed prepare consumes an id on the server too.
                hooks.state.allocate_stmt_id();
            }
            None
        }
        PacketKind::PrepareOk {
            stmt_id,
            columns,
            params,
        } => {
            let sql = hooks.prepare_sql.take()?;
            // Client-visible ids are numbered by the proxy, per session, as a
            // server numbers them per connection: they never change when the
            // session moves to another upstream connection.
            let client_id = hooks.state.allocate_stmt_id();
            hooks.state.stmts.insert(
                client_id,
                Stmt {
                    upstream_id: stmt_id,
                    sql,
                    schema: hooks.state.schema.clone(),
                    params,
                    columns,
                    types: None,
                    needs_types: false,
                    long_data: false,
                    cursor_open: false,
                },
            );
            hooks.state.version += 1;
            if client_id != stmt_id {
                let mut p = payload.to_vec();
                crate::protocol::stmt::set_stmt_id(&mut p, client_id);
                Some(p)
            } else {
                None
            }
        }
        _ => None,
    }
}

/// Forwards the client's LOCAL INFILE data until its empty packet.
async fn stream_local_infile(
    client: &mut PacketConn,
    up: &mut PacketConn,
    max_packet: usize,
) -> Result<(), RelayError> {
    let mut prev_full = false;
    let mut passthrough = 0usize;
    let mut total = 0usize;
    loop {
        let mut verbatim = 0usize;
        let mut finished = false;
        loop {
            let buf = &client.rbuf[verbatim..];
            if passthrough > 0 {
                let n = passthrough.min(buf.len());
                verbatim += n;
                passthrough -= n;
                if passthrough > 0 || n == buf.len() {
                    break;
                }
                continue;
            }
            let Some(h) = parse_header(buf) else { break };
            total += h.len;
            if total > max_packet.saturating_mul(1024) {
                return Err(RelayError::ClientProtocol(
                    "LOCAL INFILE data too large".into(),
                ));
            }
            let avail = buf.len() - HEADER_LEN;
            let n = avail.min(h.len);
            verbatim += HEADER_LEN + n;
            passthrough = h.len - n;
            let end = h.len == 0 && !prev_full;
            prev_full = h.len == MAX_PAYLOAD;
            if end {
                finished = true;
                break;
            }
        }
        if verbatim > 0 {
            up.stream
                .write_all(&client.rbuf[..verbatim])
                .await
                .map_err(RelayError::Upstream)?;
            client.rbuf.advance(verbatim);
        }
        if finished {
            up.stream.flush().await.map_err(RelayError::Upstream)?;
            return Ok(());
        }
        match client.fill().await {
            Ok(0) => return Err(RelayError::ClientClosed),
            Ok(_) => {}
            Err(e) => return Err(RelayError::Client(e)),
        }
        let _ = client.rbuf.remaining();
    }
}
