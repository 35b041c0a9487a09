//! A hand-written MySQL client for tests that need to send exactly the
//! bytes they choose (bad input, TLS and auth corner cases).
#![allow(dead_code)]

use std::time::Duration;

use mysql_common::auth::plugins::caching_sha2_password::scramble_sha256;
use mysql_common::auth::plugins::mysql_native_password::scramble_native;
use sqlease::protocol::caps::*;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};

pub const NATIVE: &str = "mysql_native_password";
pub const SHA2: &str = "caching_sha2_password";

/// Capabilities the raw client asks for.
pub const RAW_CAPS: u32 = CLIENT_LONG_PASSWORD
    | CLIENT_PROTOCOL_41
    | CLIENT_SECURE_CONNECTION
    | CLIENT_TRANSACTIONS
    | CLIENT_MULTI_RESULTS
    | CLIENT_PLUGIN_AUTH
    | CLIENT_PLUGIN_AUTH_LENENC_CLIENT_DATA;

/// How a connection ended from the client's point of view.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum End {
    /// The server closed the socket (EOF or reset) without an error packet.
    Closed,
    /// The server sent an ERR packet: (code, message).
    Err(u16, String),
}

/// Reads one packet; `None` on EOF / reset. Panics after `bound`.
pub async fn read_packet<S: AsyncRead + Unpin>(
    s: &mut S,
    bound: Duration,
) -> Option<(u8, Vec<u8>)> {
    tokio::time::timeout(bound, async {
        let mut h = [0u8; 4];
        s.read_exact(&mut h).await.ok()?;
        let len = usize::from(h[0]) | usize::from(h[1]) << 8 | usize::from(h[2]) << 16;
        let mut p = vec![0u8; len];
        s.read_exact(&mut p).await.ok()?;
        Some((h[3], p))
    })
    .await
    .unwrap_or_else(|_| panic!("no packet and no close within {bound:?}"))
}

/// Frames `payload` with sequence id `seq`.
pub fn frame(seq: u8, payload: &[u8]) -> Vec<u8> {
    let len = payload.len() as u32;
    let mut v = Vec::with_capacity(payload.len() + 4);
    v.extend_from_slice(&len.to_le_bytes()[..3]);
    v.push(seq);
    v.extend_from_slice(payload);
    v
}

pub async fn write_packet<S: AsyncWrite + Unpin>(s: &mut S, seq: u8, payload: &[u8]) {
    s.write_all(&frame(seq, payload)).await.expect("write");
    s.flush().await.expect("flush");
}

/// Parses an ERR packet payload into (code, message).
pub fn parse_err(p: &[u8]) -> Option<(u16, String)> {
    if p.first() != Some(&0xFF) || p.len() < 3 {
        return None;
    }
    let code = u16::from_le_bytes([p[1], p[2]]);
    let msg = if p.get(3) == Some(&b'#') {
        p.get(9..).unwrap_or_default()
    } else {
        &p[3..]
    };
    Some((code, String::from_utf8_lossy(msg).into_owned()))
}

/// Reads until the server closes the socket or sends an ERR packet; other
/// packets are skipped. Panics if neither happens within `bound`.
pub async fn expect_end<S: AsyncRead + Unpin>(s: &mut S, bound: Duration) -> End {
    let deadline = tokio::time::Instant::now() + bound;
    loop {
        let left = deadline.saturating_duration_since(tokio::time::Instant::now());
        match read_packet(s, left).await {
            None => return End::Closed,
            Some((_, p)) => {
                if let Some((c, m)) = parse_err(&p) {
                    return End::Err(c, m);
                }
            }
        }
    }
}

/// Asserts the socket is closed (EOF) within `bound`, possibly after an ERR.
pub async fn expect_closed<S: AsyncRead + Unpin>(
    s: &mut S,
    bound: Duration,
) -> Option<(u16, String)> {
    let deadline = tokio::time::Instant::now() + bound;
    let mut err = None;
    loop {
        let left = deadline.saturating_duration_since(tokio::time::Instant::now());
        match read_packet(s, left).await {
            None => return err,
            Some((_, p)) => {
                if let Some(e) = parse_err(&p) {
                    err = Some(e);
                }
            }
        }
    }
}

/// The parts of the server greeting the tests need.
#[derive(Debug, Clone)]
pub struct Greeting {
    pub conn_id: u32,
    pub caps: u32,
    pub scramble: [u8; 20],
    pub plugin: String,
}

pub fn parse_greeting(p: &[u8]) -> Greeting {
    assert_eq!(p[0], 10, "protocol version: {p:?}");
    let nul = p[1..].iter().position(|&b| b == 0).unwrap() + 1;
    let mut i = nul + 1;
    let conn_id = u32::from_le_bytes(p[i..i + 4].try_into().unwrap());
    i += 4;
    let mut scramble = [0u8; 20];
    scramble[..8].copy_from_slice(&p[i..i + 8]);
    i += 9;
    let lo = u16::from_le_bytes([p[i], p[i + 1]]);
    i += 2 + 1 + 2;
    let hi = u16::from_le_bytes([p[i], p[i + 1]]);
    i += 2 + 1 + 10;
    scramble[8..].copy_from_slice(&p[i..i + 12]);
    i += 13;
    let end = p[i..]
        .iter()
        .position(|&b| b == 0)
        .map_or(p.len(), |e| i + e);
    Greeting {
        conn_id,
        caps: u32::from(lo) | u32::from(hi) << 16,
        scramble,
        plugin: String::from_utf8_lossy(&p[i..end]).into_owned(),
    }
}

/// A HandshakeResponse41.
pub fn handshake_response(caps: u32, user: &str, auth: &[u8], plugin: &str) -> Vec<u8> {
    let mut p = Vec::new();
    p.extend_from_slice(&caps.to_le_bytes());
    p.extend_from_slice(&(16u32 << 20).to_le_bytes());
    p.push(45);
    p.extend_from_slice(&[0; 23]);
    p.extend_from_slice(user.as_bytes());
    p.push(0);
    p.push(auth.len() as u8);
    p.extend_from_slice(auth);
    p.extend_from_slice(plugin.as_bytes());
    p.push(0);
    p
}

/// The 32-byte SSLRequest.
pub fn ssl_request(caps: u32) -> Vec<u8> {
    let mut p = Vec::new();
    p.extend_from_slice(&(caps | CLIENT_SSL).to_le_bytes());
    p.extend_from_slice(&(16u32 << 20).to_le_bytes());
    p.push(45);
    p.extend_from_slice(&[0; 23]);
    p
}

pub fn native_auth(scramble: &[u8; 20], password: &str) -> Vec<u8> {
    scramble_native(scramble, password.as_bytes())
        .unwrap()
        .to_vec()
}

pub fn sha2_auth(scramble: &[u8; 20], password: &str) -> Vec<u8> {
    scramble_sha256(scramble, password.as_bytes())
        .unwrap()
        .to_vec()
}

/// Connects and reads the greeting.
pub async fn raw_connect(addr: std::net::SocketAddr) -> (tokio::net::TcpStream, Greeting) {
    let mut s = tokio::time::timeout(Duration::from_secs(5), tokio::net::TcpStream::connect(addr))
        .await
        .expect("connect timed out")
        .expect("connect");
    let (seq, p) = read_packet(&mut s, Duration::from_secs(5))
        .await
        .expect("greeting");
    assert_eq!(seq, 0);
    (s, parse_greeting(&p))
}

/// Connects and logs in with mysql_native_password; returns a stream in
/// the command phase.
pub async fn raw_login(
    addr: std::net::SocketAddr,
    user: &str,
    password: &str,
) -> tokio::net::TcpStream {
    let (mut s, g) = raw_connect(addr).await;
    let auth = native_auth(&g.scramble, password);
    write_packet(
        &mut s,
        1,
        &handshake_response(RAW_CAPS, user, &auth, NATIVE),
    )
    .await;
    let (seq, p) = read_packet(&mut s, Duration::from_secs(10))
        .await
        .expect("login answer");
    assert_eq!(p.first(), Some(&0x00), "expected OK after login, got {p:?}");
    assert_eq!(seq, 2);
    s
}

/// Sends COM_QUERY and reads the complete text result (classic EOF
/// framing, single result set); returns the rows as strings (NULL → None).
pub async fn raw_query<S: AsyncRead + AsyncWrite + Unpin>(
    s: &mut S,
    sql: &str,
) -> Result<Vec<Vec<Option<String>>>, (u16, String)> {
    let mut cmd = vec![0x03];
    cmd.extend_from_slice(sql.as_bytes());
    write_packet(s, 0, &cmd).await;
    let bound = Duration::from_secs(10);
    let (_, first) = read_packet(s, bound).await.expect("query answer");
    if let Some(e) = parse_err(&first) {
        return Err(e);
    }
    if first[0] == 0x00 {
        return Ok(Vec::new());
    }
    let ncols = usize::from(first[0]);
    for _ in 0..ncols {
        read_packet(s, bound).await.expect("column definition");
    }
    let (_, eof) = read_packet(s, bound).await.expect("EOF after columns");
    assert_eq!(eof[0], 0xFE, "{eof:?}");
    let mut rows = Vec::new();
    loop {
        let (_, p) = read_packet(s, bound).await.expect("row");
        if p[0] == 0xFE && p.len() < 9 {
            return Ok(rows);
        }
        if let Some(e) = parse_err(&p) {
            return Err(e);
        }
        let mut row = Vec::new();
        let mut i = 0;
        for _ in 0..ncols {
            if p[i] == 0xFB {
                row.push(None);
                i += 1;
            } else {
                let (v, n) = sqlease::protocol::read_lenenc_str(&p[i..]).expect("lenenc");
                row.push(Some(String::from_utf8_lossy(v).into_owned()));
                i += n;
            }
        }
        rows.push(row);
    }
}
