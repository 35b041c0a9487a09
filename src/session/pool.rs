//! A few authenticated, clean upstream connections kept ready per listener,
//! so a login does not wait for a MySQL connect (an application that
//! connects per request, as PHP does, pays only for sqlease's local
//! handshake). Connections come back after COM_RESET_CONNECTION when a
//! client disconnects cleanly, and are dropped when a newer credential
//! generation is published (so the old lease can be revoked).

use std::sync::Mutex;

use tracing::debug;

use crate::backend::{self, ConnectParams, Upstream, TRACKER_SETUP};
use crate::protocol::caps::MIRRORED;
use crate::protocol::command::com;
use crate::protocol::frame;

/// What must match for a pooled connection to serve a new client session.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PoolKey {
    caps: u32,
    collation: u8,
    database: Option<Vec<u8>>,
}

impl PoolKey {
    /// The schema the pooled connection was opened with.
    pub fn database(&self) -> Option<&[u8]> {
        self.database.as_deref()
    }

    pub fn of(p: &ConnectParams) -> PoolKey {
        PoolKey {
            caps: p.client_caps & MIRRORED,
            collation: p.collation,
            database: p.database.clone(),
        }
    }
}

/// Idle upstream connections of one listener.
#[derive(Debug, Default)]
pub struct IdlePool {
    conns: Mutex<Vec<(PoolKey, Upstream)>>,
    max: usize,
}

impl IdlePool {
    pub fn new(max: usize) -> IdlePool {
        IdlePool {
            conns: Mutex::new(Vec::new()),
            max,
        }
    }

    pub fn capacity(&self) -> usize {
        self.max
    }

    pub fn len(&self) -> usize {
        self.conns.lock().unwrap_or_else(|e| e.into_inner()).len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// A ready connection of generation `generation` for `key`, if any.
    pub fn take(&self, key: &PoolKey, generation: u64) -> Option<Upstream> {
        let mut v = self.conns.lock().unwrap_or_else(|e| e.into_inner());
        v.retain(|(_, u)| u.generation().id == generation);
        let i = v.iter().position(|(k, _)| k == key)?;
        Some(v.swap_remove(i).1)
    }

    /// Keeps a clean connection if there is room for it and it belongs to
    /// the current generation (a connection of a retired one would keep its
    /// lease from being revoked).
    pub fn put(&self, key: PoolKey, up: Upstream, current: Option<u64>) {
        if current != Some(up.generation().id) {
            return;
        }
        let mut v = self.conns.lock().unwrap_or_else(|e| e.into_inner());
        if v.len() < self.max {
            v.push((key, up));
        }
    }

    /// Whether a returned connection would be kept.
    pub fn has_room(&self) -> bool {
        self.conns.lock().unwrap_or_else(|e| e.into_inner()).len() < self.max
    }

    /// Whether no ready connection matches `key` (then one is opened ahead).
    pub fn lacks(&self, key: &PoolKey) -> bool {
        let v = self.conns.lock().unwrap_or_else(|e| e.into_inner());
        v.len() < self.max && !v.iter().any(|(k, _)| k == key)
    }

    /// Drops connections of other generations.
    pub fn retain_generation(&self, generation: u64) {
        let mut v = self.conns.lock().unwrap_or_else(|e| e.into_inner());
        let before = v.len();
        v.retain(|(_, u)| u.generation().id == generation);
        if v.len() != before {
            debug!(
                dropped = before - v.len(),
                "dropped idle upstream connections of a retired generation"
            );
        }
    }

    /// Drops everything (shutdown).
    pub fn clear(&self) {
        self.conns.lock().unwrap_or_else(|e| e.into_inner()).clear();
    }
}

/// Resets a connection a client is done with (COM_RESET_CONNECTION, then
/// the trackers and the original schema again; one pipelined round trip).
pub async fn reset_for_reuse(up: &mut Upstream, database: Option<&[u8]>) -> bool {
    let mut batch = bytes::BytesMut::new();
    let mut seq = 0;
    frame::put_packet(&mut batch, &mut seq, &[com::RESET_CONNECTION]);
    let mut q = vec![com::QUERY];
    q.extend_from_slice(format!("SET SESSION {TRACKER_SETUP}").as_bytes());
    seq = 0;
    frame::put_packet(&mut batch, &mut seq, &q);
    let mut replies = 2;
    if let Some(db) = database {
        let mut p = vec![com::INIT_DB];
        p.extend_from_slice(db);
        seq = 0;
        frame::put_packet(&mut batch, &mut seq, &p);
        replies += 1;
    }
    if up.conn.write_raw(&batch).await.is_err() {
        return false;
    }
    for _ in 0..replies {
        match up.conn.read_logical(None, 1 << 20).await {
            Ok(l) if l.payload.first() == Some(&0x00) => {}
            _ => return false,
        }
    }
    up.conn.rbuf.is_empty()
}

/// Opens one more connection for the pool in the background.
pub fn refill(ctx: std::sync::Arc<crate::server::ListenerCtx>, params: ConnectParams) {
    let key = PoolKey::of(&params);
    if ctx.pool.capacity() == 0 || !ctx.pool.lacks(&key) {
        return;
    }
    tokio::spawn(async move {
        let Some(gen) = ctx.credentials.current() else {
            return;
        };
        match backend::connect(&ctx.target, &gen, &params).await {
            Ok(mut up) => {
                up.conn.shrink_idle();
                let current = ctx.credentials.current().map(|g| g.id);
                ctx.pool.put(key, up, current);
            }
            Err(e) if e.is_auth_rejected() => {
                ctx.credentials
                    .report(crate::credentials::SourceEvent::AuthRejected { generation: gen.id });
            }
            Err(_) => {}
        }
    });
}
