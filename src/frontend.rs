//! Plays the MySQL server toward the application: greeting, optional TLS,
//! local authentication (mysql_native_password and caching_sha2_password).
//!
//! The handshake ends once the client is authenticated, *before* the final
//! OK: the session first opens its upstream connection (a CONNECT_WITH_DB
//! schema may not exist), then answers OK or the upstream's error.

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use rand::Rng;

use crate::auth::PasswordVerifier;
use crate::config::{AuthPluginName, ClientTlsMode};
use crate::net::{PacketConn, ReadError, Stream};
use crate::protocol::caps::*;
use crate::protocol::packets::{auth_more_data, auth_switch_request, codes, MysqlError};
use crate::protocol::read_lenenc_str;

pub const NATIVE: &[u8] = b"mysql_native_password";
pub const SHA2: &[u8] = b"caching_sha2_password";
/// Largest handshake packet accepted before authentication.
const MAX_HANDSHAKE_PACKET: usize = 64 * 1024;

/// What the upstream server announced (probed once at startup).
#[derive(Debug, Clone)]
pub struct ServerInfo {
    pub version: Vec<u8>,
    pub capabilities: u32,
    pub collation: u8,
}

/// A local user and how to verify it.
#[derive(Debug, Clone)]
pub struct LocalUser {
    pub name: String,
    pub verifier: PasswordVerifier,
}

/// Per-listener settings for the client side.
#[derive(Debug)]
pub struct FrontendConfig {
    pub users: Vec<LocalUser>,
    pub tls: Option<Arc<rustls::ServerConfig>>,
    pub tls_mode: ClientTlsMode,
    pub default_plugin: AuthPluginName,
    pub auth_failure_delay: Duration,
    pub max_allowed_packet: usize,
}

/// Counts recent failed logins per client address to slow repeated guesses.
#[derive(Debug, Default)]
pub struct FailureThrottle {
    inner: Mutex<HashMap<IpAddr, (u32, Instant)>>,
}

/// Forget a client's failures after this long without one.
const FAILURE_MEMORY: Duration = Duration::from_secs(60);
/// Upper bound of the delay before a failed login is answered.
const MAX_FAILURE_DELAY: Duration = Duration::from_secs(3);

impl FailureThrottle {
    /// Records a failure and returns how long to wait before answering it.
    pub fn failed(&self, ip: IpAddr, base: Duration) -> Duration {
        let mut m = self.inner.lock().unwrap_or_else(|e| e.into_inner());
        let now = Instant::now();
        if m.len() > 10_000 {
            m.retain(|_, (_, t)| now.duration_since(*t) < FAILURE_MEMORY);
        }
        let e = m.entry(ip).or_insert((0, now));
        if now.duration_since(e.1) > FAILURE_MEMORY {
            e.0 = 0;
        }
        e.0 = e.0.saturating_add(1);
        e.1 = now;
        let factor = 1u32 << e.0.min(5).saturating_sub(1);
        (base * factor).min(MAX_FAILURE_DELAY)
    }

    pub fn succeeded(&self, ip: IpAddr) {
        self.inner
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .remove(&ip);
    }
}

/// The parsed HandshakeResponse41.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HandshakeResponse {
    pub capabilities: u32,
    pub max_packet: u32,
    pub collation: u8,
    pub user: Vec<u8>,
    pub auth_response: Vec<u8>,
    pub database: Option<Vec<u8>>,
    pub plugin: Option<Vec<u8>>,
    /// Connection attributes block (without its length prefix).
    pub attributes: Option<Vec<u8>>,
}

fn take_nul(b: &[u8]) -> (&[u8], &[u8]) {
    match b.iter().position(|&c| c == 0) {
        Some(i) => (&b[..i], &b[i + 1..]),
        None => (b, &[]),
    }
}

/// Parses a HandshakeResponse41 (checked; `None` when malformed).
pub fn parse_handshake_response(p: &[u8]) -> Option<HandshakeResponse> {
    let caps = u32::from_le_bytes(p.get(0..4)?.try_into().ok()?);
    if caps & CLIENT_PROTOCOL_41 == 0 {
        return None;
    }
    let max_packet = u32::from_le_bytes(p.get(4..8)?.try_into().ok()?);
    let collation = *p.get(8)?;
    let rest = p.get(32..)?;
    let (user, rest) = take_nul(rest);
    let (auth, rest) = if caps & CLIENT_PLUGIN_AUTH_LENENC_CLIENT_DATA != 0 {
        let (a, n) = read_lenenc_str(rest)?;
        (a, &rest[n..])
    } else if caps & CLIENT_SECURE_CONNECTION != 0 {
        let n = usize::from(*rest.first()?);
        (rest.get(1..1 + n)?, &rest[1 + n..])
    } else {
        take_nul(rest)
    };
    let (database, rest) = if caps & CLIENT_CONNECT_WITH_DB != 0 && !rest.is_empty() {
        let (d, r) = take_nul(rest);
        (Some(d.to_vec()), r)
    } else {
        (None, rest)
    };
    let (plugin, rest) = if caps & CLIENT_PLUGIN_AUTH != 0 && !rest.is_empty() {
        let (d, r) = take_nul(rest);
        (Some(d.to_vec()), r)
    } else {
        (None, rest)
    };
    let attributes = if caps & CLIENT_CONNECT_ATTRS != 0 && !rest.is_empty() {
        let (a, _) = read_lenenc_str(rest)?;
        Some(a.to_vec())
    } else {
        None
    };
    Some(HandshakeResponse {
        capabilities: caps,
        max_packet,
        collation,
        user: user.to_vec(),
        auth_response: auth.to_vec(),
        database: database.filter(|d| !d.is_empty()),
        plugin,
        attributes,
    })
}

/// A fresh 20-byte scramble: printable ASCII without NUL or '$', as MySQL does.
pub fn new_scramble() -> [u8; 20] {
    let mut r = rand::rng();
    let mut s = [0u8; 20];
    for b in &mut s {
        loop {
            let c: u8 = r.random_range(0x21..0x7F);
            if c != b'$' {
                *b = c;
                break;
            }
        }
    }
    s
}

/// Builds the server greeting (HandshakeV10).
pub fn greeting(
    server: &ServerInfo,
    conn_id: u32,
    scramble: &[u8; 20],
    caps: u32,
    plugin: &[u8],
) -> Vec<u8> {
    let mut p = Vec::with_capacity(96);
    p.push(10);
    p.extend_from_slice(&server.version);
    p.push(0);
    p.extend_from_slice(&conn_id.to_le_bytes());
    p.extend_from_slice(&scramble[..8]);
    p.push(0);
    p.extend_from_slice(&(caps as u16).to_le_bytes());
    p.push(server.collation);
    p.extend_from_slice(&status::AUTOCOMMIT.to_le_bytes());
    p.extend_from_slice(&((caps >> 16) as u16).to_le_bytes());
    p.push(21);
    p.extend_from_slice(&[0; 10]);
    p.extend_from_slice(&scramble[8..]);
    p.push(0);
    p.extend_from_slice(plugin);
    p.push(0);
    p
}

/// An authenticated client, waiting for its final OK.
#[derive(Debug)]
pub struct Authenticated {
    pub conn: PacketConn,
    /// Capabilities agreed with the client.
    pub caps: u32,
    pub collation: u8,
    pub user: String,
    pub database: Option<Vec<u8>>,
    pub attributes: Option<Vec<u8>>,
    /// Sequence id of the final OK / ERR.
    pub next_seq: u8,
    /// The greeting's scramble (clients reuse it for COM_CHANGE_USER).
    pub scramble: [u8; 20],
    pub tls: bool,
}

/// Why a handshake ended without an authenticated client.
#[derive(Debug, thiserror::Error)]
pub enum FrontendError {
    /// The client gave up or sent garbage; nothing more to send.
    #[error("client handshake failed: {0}")]
    Read(#[from] ReadError),
    #[error("client handshake failed: {0}")]
    Io(#[from] std::io::Error),
    #[error("TLS handshake with the client failed: {0}")]
    Tls(std::io::Error),
    /// An error was sent to the client.
    #[error("{0}")]
    Refused(MysqlError),
}

fn access_denied(user: &[u8], host: &str, with_password: bool) -> MysqlError {
    MysqlError::new(
        codes::ER_ACCESS_DENIED_ERROR,
        "28000",
        format!(
            "Access denied for user '{}'@'{}' (using password: {})",
            String::from_utf8_lossy(user),
            host,
            if with_password { "YES" } else { "NO" }
        ),
    )
}

/// Host part shown in access-denied messages.
pub fn host_of(peer: Option<IpAddr>) -> String {
    match peer {
        Some(ip) => ip.to_string(),
        None => "localhost".to_string(),
    }
}

/// Runs the server side of the handshake up to (not including) the final OK.
pub async fn handshake(
    stream: Stream,
    peer: Option<IpAddr>,
    conn_id: u32,
    server: &ServerInfo,
    cfg: &FrontendConfig,
    throttle: &FailureThrottle,
) -> Result<Authenticated, FrontendError> {
    let mut conn = PacketConn::new(stream);
    let scramble = new_scramble();
    let mut offered = server.capabilities & PROXY_SUPPORTED;
    if cfg.tls.is_some() && cfg.tls_mode != ClientTlsMode::Disabled {
        offered |= CLIENT_SSL;
    }
    let plugin = match cfg.default_plugin {
        AuthPluginName::MysqlNativePassword => NATIVE,
        AuthPluginName::CachingSha2Password => SHA2,
    };
    let mut seq = conn
        .write_packet(0, &greeting(server, conn_id, &scramble, offered, plugin))
        .await?;
    let (s, mut payload) = conn.read_exact_packet(MAX_HANDSHAKE_PACKET).await?;
    if s != seq {
        return Err(refuse(
            &mut conn,
            s.wrapping_add(1),
            MysqlError::new(
                codes::ER_NET_PACKETS_OUT_OF_ORDER,
                "08S01",
                "Got packets out of order",
            ),
        )
        .await);
    }
    seq = s.wrapping_add(1);
    let mut tls = false;
    if payload.len() == 32
        && u32::from_le_bytes([payload[0], payload[1], payload[2], payload[3]]) & CLIENT_SSL != 0
    {
        let Some(tls_cfg) = cfg.tls.clone().filter(|_| offered & CLIENT_SSL != 0) else {
            return Err(refuse(
                &mut conn,
                seq,
                MysqlError::new(
                    codes::ER_HANDSHAKE_ERROR,
                    "08S01",
                    "Bad handshake: TLS was not offered",
                ),
            )
            .await);
        };
        let Stream::Tcp(tcp) = conn.stream else {
            return Err(FrontendError::Tls(std::io::Error::other(
                "TLS over a unix socket is not supported",
            )));
        };
        let acceptor = tokio_rustls::TlsAcceptor::from(tls_cfg);
        let t = acceptor.accept(tcp).await.map_err(FrontendError::Tls)?;
        conn = PacketConn::new(Stream::ServerTls(Box::new(t)));
        tls = true;
        let (s2, p2) = conn.read_exact_packet(MAX_HANDSHAKE_PACKET).await?;
        if s2 != seq {
            return Err(FrontendError::Read(ReadError::Frame(
                crate::protocol::frame::FrameError::OutOfOrder {
                    expected: seq,
                    got: s2,
                },
            )));
        }
        payload = p2;
        seq = s2.wrapping_add(1);
    }
    let Some(resp) = parse_handshake_response(&payload) else {
        return Err(refuse(
            &mut conn,
            seq,
            MysqlError::new(codes::ER_HANDSHAKE_ERROR, "08S01", "Bad handshake"),
        )
        .await);
    };
    if cfg.tls_mode == ClientTlsMode::Required && !tls && !conn.stream.is_unix() {
        return Err(refuse(&mut conn, seq, MysqlError::new(
                codes::ER_SECURE_TRANSPORT_REQUIRED,
                "HY000",
                "Connections using insecure transport are prohibited while --require_secure_transport=ON.",
            )).await);
    }
    let caps = resp.capabilities & (offered | CLIENT_SSL);
    let user = cfg
        .users
        .iter()
        .find(|u| u.name.as_bytes() == resp.user.as_slice());
    let (ok, next) =
        authenticate_with(&mut conn, seq, &scramble, &resp, user, tls, Some(plugin)).await?;
    seq = next;
    if !ok {
        let host = host_of(peer);
        let e = access_denied(&resp.user, &host, true);
        if let Some(ip) = peer {
            tokio::time::sleep(throttle.failed(ip, cfg.auth_failure_delay)).await;
        } else {
            tokio::time::sleep(cfg.auth_failure_delay).await;
        }
        let _ = conn.write_packet(seq, &e.encode(caps)).await;
        return Err(FrontendError::Refused(e));
    }
    if let Some(ip) = peer {
        throttle.succeeded(ip);
    }
    Ok(Authenticated {
        conn,
        caps,
        collation: resp.collation,
        user: String::from_utf8_lossy(&resp.user).into_owned(),
        database: resp.database,
        attributes: resp.attributes,
        next_seq: seq,
        scramble,
        tls,
    })
}

async fn refuse(conn: &mut PacketConn, seq: u8, e: MysqlError) -> FrontendError {
    let _ = conn.write_packet(seq, &e.encode(CLIENT_PROTOCOL_41)).await;
    FrontendError::Refused(e)
}

/// Verifies the client's credentials, switching plugin when needed.
/// Returns whether they are valid and the next sequence id.
pub async fn authenticate(
    conn: &mut PacketConn,
    seq: u8,
    scramble: &[u8; 20],
    resp: &HandshakeResponse,
    user: Option<&LocalUser>,
    tls: bool,
) -> Result<(bool, u8), FrontendError> {
    authenticate_with(conn, seq, scramble, resp, user, tls, None).await
}

/// As [`authenticate`], knowing which plugin the greeting announced.
///
/// A client whose own plugin differs from the announced one may send an
/// *empty* response: libmariadb (the `mariadb` CLI with `--default-auth`)
/// drops data computed for another plugin and waits for an
/// AuthSwitchRequest carrying a scramble for its own plugin, as MySQL and
/// MariaDB send. An empty response for the announced plugin itself is an
/// empty password, never valid for a local user.
pub async fn authenticate_with(
    conn: &mut PacketConn,
    mut seq: u8,
    scramble: &[u8; 20],
    resp: &HandshakeResponse,
    user: Option<&LocalUser>,
    tls: bool,
    announced: Option<&[u8]>,
) -> Result<(bool, u8), FrontendError> {
    let plugin = resp.plugin.as_deref().unwrap_or(NATIVE);
    let data = &resp.auth_response;
    // Unknown users go through the same exchange (no user enumeration by timing).
    let dummy;
    let verifier = match user {
        Some(u) => &u.verifier,
        None => {
            dummy = PasswordVerifier::from_password(&crate::secret::SecretString::from(
                "sqlease-no-such-user",
            ));
            &dummy
        }
    };
    let known = user.is_some();
    if plugin == NATIVE && data.len() == 20 {
        return Ok((known && verifier.verify_native(scramble, data), seq));
    }
    if plugin == SHA2 && data.len() == 32 {
        if known && verifier.verify_sha2_fast(scramble, data) {
            seq = conn.write_packet(seq, &auth_more_data(&[0x03])).await?;
            return Ok((true, seq));
        }
        if tls {
            return full_auth(conn, seq, verifier, known).await;
        }
        return Ok((false, seq));
    }
    if data.is_empty()
        && (plugin == NATIVE || plugin == SHA2)
        && announced.is_none_or(|a| a == plugin)
    {
        // An empty password: never valid for a local user.
        return Ok((false, seq));
    }
    // Another plugin (or a response computed for another one): switch to
    // caching_sha2_password over TLS, else mysql_native_password.
    let fresh = new_scramble();
    let target = if plugin == SHA2 { SHA2 } else { NATIVE };
    seq = conn
        .write_packet(seq, &auth_switch_request(target, &fresh))
        .await?;
    let l = conn.read_logical(Some(seq), MAX_HANDSHAKE_PACKET).await?;
    seq = l.next_seq;
    let data = &l.payload[..];
    if target == NATIVE {
        Ok((known && verifier.verify_native(&fresh, data), seq))
    } else if known && verifier.verify_sha2_fast(&fresh, data) {
        seq = conn.write_packet(seq, &auth_more_data(&[0x03])).await?;
        Ok((true, seq))
    } else if tls {
        full_auth(conn, seq, verifier, known).await
    } else {
        Ok((false, seq))
    }
}

/// caching_sha2_password full authentication: the client sends the password
/// itself (only ever asked for over TLS).
async fn full_auth(
    conn: &mut PacketConn,
    seq: u8,
    verifier: &PasswordVerifier,
    known: bool,
) -> Result<(bool, u8), FrontendError> {
    let seq = conn.write_packet(seq, &auth_more_data(&[0x04])).await?;
    let l = conn.read_logical(Some(seq), MAX_HANDSHAKE_PACKET).await?;
    let mut pw = l.payload.to_vec();
    let ok = known && verifier.verify_clear(&pw);
    zeroize::Zeroize::zeroize(&mut pw);
    Ok((ok, l.next_seq))
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn response(caps: u32, user: &[u8], auth: &[u8], db: Option<&[u8]>, plugin: &[u8]) -> Vec<u8> {
        let mut p = Vec::new();
        p.extend_from_slice(&caps.to_le_bytes());
        p.extend_from_slice(&(1u32 << 24).to_le_bytes());
        p.push(45);
        p.extend_from_slice(&[0; 23]);
        p.extend_from_slice(user);
        p.push(0);
        p.push(auth.len() as u8);
        p.extend_from_slice(auth);
        if let Some(d) = db {
            p.extend_from_slice(d);
            p.push(0);
        }
        p.extend_from_slice(plugin);
        p.push(0);
        p
    }

    #[test]
    fn parses_handshake_response() {
        let caps = CLIENT_PROTOCOL_41
            | CLIENT_SECURE_CONNECTION
            | CLIENT_PLUGIN_AUTH
            | CLIENT_PLUGIN_AUTH_LENENC_CLIENT_DATA
            | CLIENT_CONNECT_WITH_DB;
        let p = response(caps, b"app", &[7; 20], Some(b"shop"), NATIVE);
        let r = parse_handshake_response(&p).unwrap();
        assert_eq!(r.user, b"app");
        assert_eq!(r.auth_response, vec![7; 20]);
        assert_eq!(r.database.as_deref(), Some(&b"shop"[..]));
        assert_eq!(r.plugin.as_deref(), Some(NATIVE));
        assert_eq!(r.collation, 45);
        assert!(parse_handshake_response(&p[..20]).is_none());
        assert!(parse_handshake_response(&response(0, b"a", b"", None, b"")).is_none());
    }

    #[test]
    fn greeting_parses_with_mysql_common() {
        use mysql_common::proto::MyDeserialize;
        let info = ServerInfo {
            version: b"5.5.5-10.11.14-MariaDB".to_vec(),
            capabilities: PROXY_SUPPORTED | CLIENT_SSL,
            collation: 45,
        };
        let s = new_scramble();
        let g = greeting(&info, 77, &s, info.capabilities, SHA2);
        let mut buf = mysql_common::io::ParseBuf(&g);
        let h = mysql_common::packets::HandshakePacket::deserialize((), &mut buf).unwrap();
        assert_eq!(h.connection_id(), 77);
        assert_eq!(h.nonce(), s.to_vec());
        assert_eq!(h.auth_plugin_name_ref(), Some(SHA2));
        assert_eq!(h.capabilities().bits() & CLIENT_SSL, CLIENT_SSL);
        assert!(!s.contains(&0) && !s.contains(&b'$'));
    }

    #[test]
    fn throttle_grows_and_resets() {
        let t = FailureThrottle::default();
        let ip: IpAddr = "127.0.0.1".parse().unwrap();
        let base = Duration::from_millis(10);
        let d1 = t.failed(ip, base);
        let d2 = t.failed(ip, base);
        let d3 = t.failed(ip, base);
        assert!(d1 < d2 && d2 < d3, "{d1:?} {d2:?} {d3:?}");
        for _ in 0..100 {
            assert!(t.failed(ip, base) <= MAX_FAILURE_DELAY);
        }
        t.succeeded(ip);
        assert_eq!(t.failed(ip, base), base);
    }

    /// Canonical encoding of a parsed response for its capabilities.
    fn encode(r: &HandshakeResponse) -> Vec<u8> {
        let c = r.capabilities;
        let mut p = Vec::new();
        p.extend_from_slice(&c.to_le_bytes());
        p.extend_from_slice(&r.max_packet.to_le_bytes());
        p.push(r.collation);
        p.extend_from_slice(&[0; 23]);
        p.extend_from_slice(&r.user);
        p.push(0);
        if c & CLIENT_PLUGIN_AUTH_LENENC_CLIENT_DATA != 0 {
            crate::protocol::put_lenenc_str(&mut p, &r.auth_response);
        } else if c & CLIENT_SECURE_CONNECTION != 0 {
            p.push(r.auth_response.len() as u8);
            p.extend_from_slice(&r.auth_response);
        } else {
            p.extend_from_slice(&r.auth_response);
            p.push(0);
        }
        let tail = r.plugin.is_some() || r.attributes.is_some();
        if c & CLIENT_CONNECT_WITH_DB != 0 && (r.database.is_some() || tail) {
            p.extend_from_slice(r.database.as_deref().unwrap_or_default());
            p.push(0);
        }
        if let Some(pl) = &r.plugin {
            p.extend_from_slice(pl);
            p.push(0);
        }
        if let Some(a) = &r.attributes {
            crate::protocol::put_lenenc_str(&mut p, a);
        }
        p
    }

    fn no_nul(max: usize) -> impl Strategy<Value = Vec<u8>> {
        proptest::collection::vec(1u8..=255, 0..max)
    }

    proptest! {
        #[test]
        fn handshake_parser_never_panics(bytes in proptest::collection::vec(any::<u8>(), 0..120)) {
            let _ = parse_handshake_response(&bytes);
        }

        /// Generated responses, for every combination of the capability bits
        /// that change the layout, parse to what was encoded.
        #[test]
        fn handshake_response_round_trip(
            bits in 0u32..32,
            max_packet in any::<u32>(),
            collation in any::<u8>(),
            user in no_nul(40),
            auth in no_nul(60),
            database in proptest::option::of(proptest::collection::vec(1u8..=255, 1..30)),
            plugin in proptest::option::of(no_nul(30)),
            attributes in proptest::option::of(proptest::collection::vec(any::<u8>(), 0..300)),
        ) {
            let mut caps = CLIENT_PROTOCOL_41;
            for (i, f) in [
                CLIENT_PLUGIN_AUTH_LENENC_CLIENT_DATA,
                CLIENT_SECURE_CONNECTION,
                CLIENT_CONNECT_WITH_DB,
                CLIENT_PLUGIN_AUTH,
                CLIENT_CONNECT_ATTRS,
            ]
            .into_iter()
            .enumerate()
            {
                if bits & (1 << i) != 0 {
                    caps |= f;
                }
            }
            let has = |f: u32| caps & f != 0;
            let r = HandshakeResponse {
                capabilities: caps,
                max_packet,
                collation,
                user,
                auth_response: auth,
                database: database.filter(|_| has(CLIENT_CONNECT_WITH_DB)),
                // A client announcing CLIENT_PLUGIN_AUTH names its plugin.
                plugin: has(CLIENT_PLUGIN_AUTH).then(|| plugin.unwrap_or_default()),
                attributes: attributes.filter(|_| has(CLIENT_CONNECT_ATTRS)),
            };
            let p = encode(&r);
            let back = parse_handshake_response(&p);
            prop_assert_eq!(back.as_ref(), Some(&r));
            // Any prefix is refused or parses without panicking.
            for n in 0..p.len() {
                let _ = parse_handshake_response(&p[..n]);
            }
        }

        /// The SSLRequest (32 bytes with CLIENT_SSL) never yields a user.
        #[test]
        fn ssl_request_carries_no_user(caps in any::<u32>(), rest in proptest::collection::vec(any::<u8>(), 28)) {
            let mut p = (caps | CLIENT_SSL).to_le_bytes().to_vec();
            p.extend_from_slice(&rest);
            if let Some(r) = parse_handshake_response(&p) {
                prop_assert!(r.user.is_empty() && r.auth_response.is_empty());
            }
        }
    }
}
