//! Opens and authenticates upstream MySQL connections with a generation's
//! credentials.
//!
//! Every connection of a session mirrors the client's capabilities and
//! collation (so raw bytes stay valid across swaps), always adds
//! CLIENT_SESSION_TRACK, and turns the server's session trackers on in the
//! same round trip that replays the session's state.

use std::sync::Arc;
use std::time::Duration;

use mysql_common::auth::plugins::{AuthProc, ChallengeResponsePlugin, Context, Response};
use mysql_common::packets::AuthPlugin;
use mysql_common::proto::MyDeserialize;

use crate::config::UpstreamTlsMode;
use crate::credentials::{ConnGuard, Generation};
use crate::frontend::ServerInfo;
use crate::net::{self, PacketConn, ReadError, Stream, UpstreamAddr};
use crate::protocol::caps::*;
use crate::protocol::packets::{parse_err, parse_ok, MysqlError};
use crate::protocol::put_lenenc_str;
use crate::secret::ExposeSecret;

/// Largest packet read during the upstream handshake.
const MAX_HANDSHAKE_PACKET: usize = 1 << 20;
/// max_packet_size announced upstream.
const MAX_PACKET: u32 = 1 << 30;

/// The trackers sqlease needs on every upstream connection (design D4).
pub const TRACKER_SETUP: &str =
    "session_track_schema=ON, session_track_state_change=ON, session_track_system_variables='*'";

/// Where and how to reach the upstream.
#[derive(Debug, Clone)]
pub struct UpstreamTarget {
    pub addr: UpstreamAddr,
    pub tls_mode: UpstreamTlsMode,
    pub tls: Option<Arc<rustls::ClientConfig>>,
    pub server_name: String,
    pub connect_timeout: Duration,
}

/// The session-specific part of a connection request.
#[derive(Debug, Clone, Default)]
pub struct ConnectParams {
    /// The client's capabilities (the mirrored subset is used).
    pub client_caps: u32,
    pub collation: u8,
    pub database: Option<Vec<u8>>,
    pub attributes: Option<Vec<u8>>,
    /// Extra `name=value` assignments run with the tracker setup (state replay).
    pub replay_assignments: Vec<String>,
}

/// An authenticated upstream connection.
#[derive(Debug)]
pub struct Upstream {
    pub conn: PacketConn,
    /// The server's thread id (what CONNECTION_ID() returns).
    pub thread_id: u32,
    /// Capabilities agreed with the server.
    pub caps: u32,
    /// Status flags after setup.
    pub status: u16,
    /// Keeps the generation marked in use while this connection lives.
    pub guard: ConnGuard,
}

impl Upstream {
    pub fn generation(&self) -> &Arc<Generation> {
        self.guard.generation()
    }
}

/// Why an upstream connection could not be opened.
#[derive(Debug, thiserror::Error)]
pub enum BackendError {
    #[error("cannot connect to MySQL at {addr}: {source}")]
    Connect {
        addr: String,
        source: std::io::Error,
    },
    #[error("timed out connecting to MySQL at {0}")]
    Timeout(String),
    #[error("MySQL refused the connection: {0}")]
    Server(MysqlError),
    #[error("TLS toward MySQL failed: {0}")]
    Tls(String),
    #[error("MySQL connection lost during the handshake: {0}")]
    Read(#[from] ReadError),
    #[error("MySQL connection lost during the handshake: {0}")]
    Io(#[from] std::io::Error),
    #[error("unexpected packet from MySQL during the handshake: {0}")]
    Protocol(String),
    #[error("authentication plugin problem: {0}")]
    Plugin(String),
}

impl BackendError {
    /// The server rejected the credentials (revoked or expired user?).
    pub fn is_auth_rejected(&self) -> bool {
        matches!(self, BackendError::Server(e) if e.code == 1045 || e.code == 1698)
    }

    /// Retrying with the same credentials might work.
    pub fn is_transient(&self) -> bool {
        match self {
            BackendError::Server(e) => matches!(e.code, 1040 | 1203 | 1129 | 1130),
            BackendError::Plugin(_) | BackendError::Tls(_) => false,
            _ => true,
        }
    }
}

struct AuthCtx<'a> {
    pass: &'a [u8],
    tls: bool,
    ipc: bool,
    scramble: &'a [u8],
}

impl Context for AuthCtx<'_> {
    fn pass(&self) -> &[u8] {
        self.pass
    }
    fn is_ipc_transport(&self) -> bool {
        self.ipc
    }
    fn is_tls_transport(&self) -> bool {
        self.tls
    }
    fn scramble(&self) -> &[u8] {
        self.scramble
    }
    fn server_key_pem(&self) -> Option<&[u8]> {
        None
    }
}

struct Greeting {
    info: ServerInfo,
    thread_id: u32,
    nonce: Vec<u8>,
    plugin: Vec<u8>,
}

async fn read_greeting(conn: &mut PacketConn) -> Result<Greeting, BackendError> {
    let (_, p) = conn.read_exact_packet(MAX_HANDSHAKE_PACKET).await?;
    if p.first() == Some(&0xFF) {
        return Err(BackendError::Server(parse_err(&p).unwrap_or_else(|| {
            MysqlError::new(2013, "HY000", "malformed error")
        })));
    }
    let mut buf = mysql_common::io::ParseBuf(&p);
    let h = mysql_common::packets::HandshakePacket::deserialize((), &mut buf)
        .map_err(|e| BackendError::Protocol(format!("bad server greeting: {e}")))?;
    // Raw capability bits (CapabilityFlags drops unknown ones).
    let caps = h.capabilities().bits();
    Ok(Greeting {
        info: ServerInfo {
            version: h.server_version_ref().to_vec(),
            capabilities: caps,
            collation: h.default_collation(),
        },
        thread_id: h.connection_id(),
        nonce: h.nonce(),
        plugin: h
            .auth_plugin_name_ref()
            .map(|p| p.to_vec())
            .unwrap_or_else(|| b"mysql_native_password".to_vec()),
    })
}

async fn open_stream(target: &UpstreamTarget) -> Result<PacketConn, BackendError> {
    let s = net::connect(&target.addr)
        .await
        .map_err(|source| BackendError::Connect {
            addr: target.addr.to_string(),
            source,
        })?;
    Ok(PacketConn::new(s))
}

/// Reads the server greeting only (startup capability probe).
pub async fn probe(target: &UpstreamTarget) -> Result<ServerInfo, BackendError> {
    let fut = async {
        let mut conn = open_stream(target).await?;
        let g = read_greeting(&mut conn).await?;
        conn.shutdown().await;
        Ok(g.info)
    };
    tokio::time::timeout(target.connect_timeout, fut)
        .await
        .map_err(|_| BackendError::Timeout(target.addr.to_string()))?
}

/// Opens, authenticates and sets up one upstream connection.
pub async fn connect(
    target: &UpstreamTarget,
    generation: &Arc<Generation>,
    params: &ConnectParams,
) -> Result<Upstream, BackendError> {
    tokio::time::timeout(
        target.connect_timeout,
        connect_inner(target, generation, params),
    )
    .await
    .map_err(|_| BackendError::Timeout(target.addr.to_string()))?
}

fn handshake_response(
    caps: u32,
    collation: u8,
    user: &[u8],
    auth: &[u8],
    db: Option<&[u8]>,
    plugin: &[u8],
    attrs: Option<&[u8]>,
) -> Vec<u8> {
    let mut p = Vec::with_capacity(128);
    p.extend_from_slice(&caps.to_le_bytes());
    p.extend_from_slice(&MAX_PACKET.to_le_bytes());
    p.push(collation);
    p.extend_from_slice(&[0; 23]);
    p.extend_from_slice(user);
    p.push(0);
    put_lenenc_str(&mut p, auth);
    if let Some(d) = db {
        p.extend_from_slice(d);
        p.push(0);
    }
    p.extend_from_slice(plugin);
    p.push(0);
    if caps & CLIENT_CONNECT_ATTRS != 0 {
        put_lenenc_str(&mut p, attrs.unwrap_or(&[]));
    }
    p
}

/// Runs one step of the client-side authentication plugin.
fn auth_step(
    proc: &mut AuthProc,
    pass: &[u8],
    tls: bool,
    ipc: bool,
    scramble: &[u8],
    challenge: &[u8],
) -> Result<Response, BackendError> {
    proc.run(
        AuthCtx {
            pass,
            tls,
            ipc,
            scramble,
        },
        challenge,
    )
    .map_err(|e| BackendError::Plugin(e.to_string()))
}

fn check_plugin(plugin: &[u8], tls: bool, ipc: bool) -> Result<AuthProc, BackendError> {
    if plugin == b"mysql_clear_password" && !tls && !ipc {
        return Err(BackendError::Plugin(
            "the server asked for mysql_clear_password over an unencrypted connection; set upstream.tls = \"required\"".into(),
        ));
    }
    AuthProc::init(&AuthPlugin::from_bytes(plugin)).map_err(|e| BackendError::Plugin(e.to_string()))
}

async fn connect_inner(
    target: &UpstreamTarget,
    generation: &Arc<Generation>,
    params: &ConnectParams,
) -> Result<Upstream, BackendError> {
    let guard = generation.attach();
    let mut conn = open_stream(target).await?;
    let ipc = conn.stream.is_unix();
    let g = read_greeting(&mut conn).await?;
    let server = g.info.capabilities;
    let mut caps = (params.client_caps & MIRRORED & server) | (UPSTREAM_REQUIRED & server);
    if params.database.is_some() {
        caps |= CLIENT_CONNECT_WITH_DB;
    }
    caps |= server & CLIENT_CONNECT_ATTRS;
    let mut seq = 1u8;
    let mut tls = false;
    let use_tls = match target.tls_mode {
        UpstreamTlsMode::Disabled => false,
        UpstreamTlsMode::Preferred => server & CLIENT_SSL != 0 && !ipc,
        _ if ipc => false,
        _ => {
            if server & CLIENT_SSL == 0 {
                return Err(BackendError::Tls(format!(
                    "upstream.tls = {:?} but the server does not offer TLS",
                    target.tls_mode
                )));
            }
            true
        }
    };
    if use_tls {
        let Some(cfg) = target.tls.clone() else {
            return Err(BackendError::Tls("no TLS configuration".into()));
        };
        caps |= CLIENT_SSL;
        let mut req = Vec::with_capacity(32);
        req.extend_from_slice(&caps.to_le_bytes());
        req.extend_from_slice(&MAX_PACKET.to_le_bytes());
        req.push(params.collation);
        req.extend_from_slice(&[0; 23]);
        seq = conn.write_packet(seq, &req).await?;
        let Stream::Tcp(tcp) = conn.stream else {
            return Err(BackendError::Tls("TLS needs a TCP upstream".into()));
        };
        let name = rustls::pki_types::ServerName::try_from(target.server_name.clone())
            .map_err(|e| BackendError::Tls(format!("bad server name: {e}")))?;
        let t = tokio_rustls::TlsConnector::from(cfg)
            .connect(name, tcp)
            .await
            .map_err(|e| BackendError::Tls(e.to_string()))?;
        conn = PacketConn::new(Stream::ClientTls(Box::new(t)));
        tls = true;
    }
    let password = generation.password().expose_secret().as_bytes();
    let mut nonce = g.nonce.clone();
    let mut plugin = g.plugin.clone();
    let mut proc = check_plugin(&plugin, tls, ipc)?;
    let first = auth_step(&mut proc, password, tls, ipc, &nonce, &nonce)?;
    let mut auth = first.data().map(|d| d.to_vec()).unwrap_or_default();
    let hr = handshake_response(
        caps,
        params.collation,
        generation.username.as_bytes(),
        &auth,
        params.database.as_deref(),
        &plugin,
        params.attributes.as_deref(),
    );
    zeroize::Zeroize::zeroize(&mut auth);
    seq = conn.write_packet(seq, &hr).await?;
    loop {
        let l = conn.read_logical(Some(seq), MAX_HANDSHAKE_PACKET).await?;
        seq = l.next_seq;
        let p = &l.payload[..];
        let reply: Option<Response> = match p.first() {
            Some(0x00) => break,
            Some(0xFF) => {
                return Err(BackendError::Server(parse_err(p).unwrap_or_else(|| {
                    MysqlError::new(1045, "28000", "access denied (malformed error)")
                })))
            }
            Some(0xFE) => {
                // AuthSwitchRequest: plugin name NUL, then the new scramble.
                let body = &p[1..];
                let (name, rest) = match body.iter().position(|&c| c == 0) {
                    Some(i) => (&body[..i], &body[i + 1..]),
                    None => (body, &[][..]),
                };
                plugin = name.to_vec();
                nonce = rest.strip_suffix(&[0]).unwrap_or(rest).to_vec();
                proc = check_plugin(&plugin, tls, ipc)?;
                Some(auth_step(&mut proc, password, tls, ipc, &nonce, &nonce)?)
            }
            Some(0x01) => Some(auth_step(&mut proc, password, tls, ipc, &nonce, &p[1..])?),
            _ => {
                return Err(BackendError::Protocol(format!(
                    "auth packet starting with {:?}",
                    p.first()
                )))
            }
        };
        if let Some(mut data) = reply.and_then(|r| r.data().map(|d| d.to_vec())) {
            seq = conn.write_packet(seq, &data).await?;
            zeroize::Zeroize::zeroize(&mut data);
        }
    }
    // Trackers on, plus the session state to replay, in one round trip.
    let mut sql = format!("SET SESSION {TRACKER_SETUP}");
    for a in &params.replay_assignments {
        sql.push_str(", ");
        sql.push_str(a);
    }
    let status = simple_query(&mut conn, caps, sql.as_bytes()).await?;
    Ok(Upstream {
        conn,
        thread_id: g.thread_id,
        caps,
        status,
        guard,
    })
}

/// Runs a statement that returns OK or ERR (no result set) and returns the
/// status flags of its OK.
pub async fn simple_query(
    conn: &mut PacketConn,
    caps: u32,
    sql: &[u8],
) -> Result<u16, BackendError> {
    let mut payload = Vec::with_capacity(1 + sql.len());
    payload.push(crate::protocol::command::com::QUERY);
    payload.extend_from_slice(sql);
    run_simple(conn, caps, &payload).await
}

/// Sends a command that is answered by one OK or ERR.
pub async fn run_simple(
    conn: &mut PacketConn,
    caps: u32,
    payload: &[u8],
) -> Result<u16, BackendError> {
    let seq = conn.write_packet(0, payload).await?;
    let l = conn.read_logical(Some(seq), MAX_HANDSHAKE_PACKET).await?;
    match l.payload.first() {
        Some(0x00) => parse_ok(&l.payload, caps & CLIENT_SESSION_TRACK != 0)
            .map(|ok| ok.status)
            .ok_or_else(|| BackendError::Protocol("malformed OK".into())),
        Some(0xFF) => Err(BackendError::Server(
            parse_err(&l.payload).unwrap_or_else(|| MysqlError::new(2013, "HY000", "malformed")),
        )),
        _ => Err(BackendError::Protocol(
            "expected OK or ERR, got a result set".into(),
        )),
    }
}
