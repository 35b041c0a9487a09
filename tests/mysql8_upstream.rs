//! MySQL 8 behaviour MariaDB cannot show, against a scripted upstream built
//! from the protocol: caching_sha2_password with a cache hit (fast path) and
//! a cache miss over a plain connection (full authentication with the
//! server's RSA public key, decrypted here with the openssl CLI to check the
//! password), and MySQL-only session trackers in OK packets.

mod common;

use std::process::Command;
use std::sync::{Arc, Mutex};

use common::*;
use mysql_async::prelude::*;
use mysql_common::auth::plugins::caching_sha2_password::scramble_sha256;
use sqlease::protocol::{put_lenenc, put_lenenc_str};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

const NONCE: [u8; 20] = *b"0123456789abcdefghij";

/// What the scripted server observed.
#[derive(Default, Debug)]
struct Seen {
    fast_ok: bool,
    full_auth_password: Option<Vec<u8>>,
    queries: Vec<String>,
}

async fn read_packet(s: &mut TcpStream) -> Option<(u8, Vec<u8>)> {
    let mut h = [0u8; 4];
    s.read_exact(&mut h).await.ok()?;
    let len = usize::from(h[0]) | usize::from(h[1]) << 8 | usize::from(h[2]) << 16;
    let mut p = vec![0; len];
    s.read_exact(&mut p).await.ok()?;
    Some((h[3], p))
}

async fn write_packet(s: &mut TcpStream, seq: u8, p: &[u8]) {
    let mut b = (p.len() as u32).to_le_bytes()[..3].to_vec();
    b.push(seq);
    b.extend_from_slice(p);
    s.write_all(&b).await.unwrap();
}

fn greeting() -> Vec<u8> {
    // PROTOCOL_41, SECURE_CONNECTION, PLUGIN_AUTH, PLUGIN_AUTH_LENENC,
    // SESSION_TRACK, DEPRECATE_EOF, TRANSACTIONS, LONG_PASSWORD,
    // CONNECT_WITH_DB, MULTI_STATEMENTS/RESULTS, PS_MULTI_RESULTS, CONNECT_ATTRS.
    let caps: u32 = 0x0200
        | 0x8000
        | 0x0008_0000
        | 0x0020_0000
        | 0x0080_0000
        | 0x0100_0000
        | 0x2000
        | 0x1
        | 0x8
        | 0x0001_0000
        | 0x0002_0000
        | 0x0004_0000
        | 0x0010_0000;
    let mut p = vec![10];
    p.extend_from_slice(b"8.4.3\0");
    p.extend_from_slice(&77u32.to_le_bytes());
    p.extend_from_slice(&NONCE[..8]);
    p.push(0);
    p.extend_from_slice(&(caps as u16).to_le_bytes());
    p.push(255);
    p.extend_from_slice(&2u16.to_le_bytes());
    p.extend_from_slice(&((caps >> 16) as u16).to_le_bytes());
    p.push(21);
    p.extend_from_slice(&[0; 10]);
    p.extend_from_slice(&NONCE[8..]);
    p.push(0);
    p.extend_from_slice(b"caching_sha2_password\0");
    p
}

/// OK packet with MySQL-only trackers (GTIDs, transaction characteristics)
/// next to a schema change.
fn ok_with_trackers() -> Vec<u8> {
    let mut entries = Vec::new();
    // SESSION_TRACK_SCHEMA
    entries.push(1u8);
    let mut d = Vec::new();
    put_lenenc_str(&mut d, b"shop");
    put_lenenc_str(&mut entries, &d);
    // SESSION_TRACK_GTIDS (encoding spec 0 + gtid set)
    entries.push(3u8);
    let mut d = vec![0u8];
    put_lenenc_str(&mut d, b"3E11FA47-71CA-11E1-9E33-C80AA9429562:1-5");
    put_lenenc_str(&mut entries, &d);
    // SESSION_TRACK_TRANSACTION_CHARACTERISTICS
    entries.push(4u8);
    let mut d = Vec::new();
    put_lenenc_str(&mut d, b"");
    put_lenenc_str(&mut entries, &d);
    let mut p = vec![0, 0, 0];
    p.extend_from_slice(&(0x0002u16 | 0x4000).to_le_bytes());
    p.extend_from_slice(&0u16.to_le_bytes());
    put_lenenc_str(&mut p, b"");
    put_lenenc(&mut p, entries.len() as u64);
    p.extend_from_slice(&entries);
    p
}

fn ok() -> Vec<u8> {
    vec![0, 0, 0, 2, 0, 0, 0]
}

/// RSA key pair from the openssl CLI: (private key path, public key PEM).
fn rsa_keys(dir: &std::path::Path) -> (std::path::PathBuf, Vec<u8>) {
    let key = dir.join("rsa.pem");
    let run = |args: &[&str]| {
        let o = Command::new("openssl")
            .args(args)
            .output()
            .expect("openssl CLI (scripts/test.sh installs it)");
        assert!(
            o.status.success(),
            "openssl {args:?}: {}",
            String::from_utf8_lossy(&o.stderr)
        );
        o.stdout
    };
    run(&["genrsa", "-out", key.to_str().unwrap(), "2048"]);
    let public = run(&["rsa", "-in", key.to_str().unwrap(), "-pubout"]);
    (key, public)
}

fn rsa_decrypt(key: &std::path::Path, data: &[u8], dir: &std::path::Path) -> Vec<u8> {
    let input = dir.join("enc.bin");
    std::fs::write(&input, data).unwrap();
    let o = Command::new("openssl")
        .args([
            "pkeyutl",
            "-decrypt",
            "-inkey",
            key.to_str().unwrap(),
            "-pkeyopt",
            "rsa_padding_mode:oaep",
            "-in",
            input.to_str().unwrap(),
        ])
        .output()
        .unwrap();
    assert!(
        o.status.success(),
        "decrypt: {}",
        String::from_utf8_lossy(&o.stderr)
    );
    o.stdout
}

/// One scripted MySQL 8 server; `full` selects a cache miss.
async fn serve_one(
    mut s: TcpStream,
    full: bool,
    password: &str,
    seen: Arc<Mutex<Seen>>,
    dir: std::path::PathBuf,
) {
    write_packet(&mut s, 0, &greeting()).await;
    let (seq, resp) = read_packet(&mut s).await.unwrap();
    // The auth data is the caching_sha2 scramble of the password.
    let user_end = 32 + resp[32..].iter().position(|&c| c == 0).unwrap();
    let auth_len = usize::from(resp[user_end + 1]);
    let auth = &resp[user_end + 2..user_end + 2 + auth_len];
    let want = scramble_sha256(&NONCE, password.as_bytes()).unwrap();
    assert_eq!(auth, want, "wrong caching_sha2 scramble from sqlease");
    let mut seq = seq + 1;
    if !full {
        write_packet(&mut s, seq, &[0x01, 0x03]).await;
        write_packet(&mut s, seq + 1, &ok()).await;
        seen.lock().unwrap().fast_ok = true;
    } else {
        write_packet(&mut s, seq, &[0x01, 0x04]).await;
        let (sq, req) = read_packet(&mut s).await.unwrap();
        assert_eq!(
            req,
            vec![0x02],
            "expected a public key request on a plain connection"
        );
        let (key, public) = rsa_keys(&dir);
        let mut p = vec![0x01];
        p.extend_from_slice(&public);
        write_packet(&mut s, sq + 1, &p).await;
        let (sq, enc) = read_packet(&mut s).await.unwrap();
        let mut plain = rsa_decrypt(&key, &enc, &dir);
        for (i, b) in plain.iter_mut().enumerate() {
            *b ^= NONCE[i % NONCE.len()];
        }
        seen.lock().unwrap().full_auth_password = Some(plain);
        seq = sq + 1;
        write_packet(&mut s, seq, &ok()).await;
    }
    // Commands: the tracker setup, then whatever the client sends.
    while let Some((_, cmd)) = read_packet(&mut s).await {
        match cmd.as_slice().first() {
            Some(0x03) => {
                let q = String::from_utf8_lossy(&cmd[1..]).into_owned();
                let reply = if q.starts_with("USE ") {
                    ok_with_trackers()
                } else {
                    ok()
                };
                seen.lock().unwrap().queries.push(q);
                write_packet(&mut s, 1, &reply).await;
            }
            Some(0x01) | None => break,
            _ => write_packet(&mut s, 1, &ok()).await,
        }
    }
}

async fn scripted(
    full: bool,
    password: &'static str,
) -> (std::net::SocketAddr, Arc<Mutex<Seen>>, tempfile::TempDir) {
    let l = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = l.local_addr().unwrap();
    let seen = Arc::new(Mutex::new(Seen::default()));
    let dir = tempfile::tempdir().unwrap();
    let (seen2, d2) = (Arc::clone(&seen), dir.path().to_path_buf());
    tokio::spawn(async move {
        // The startup probe reads a greeting and hangs up; then real sessions.
        loop {
            let Ok((s, _)) = l.accept().await else { return };
            tokio::spawn(serve_one(s, full, password, Arc::clone(&seen2), d2.clone()));
        }
    });
    (addr, seen, dir)
}

fn toml_for(addr: std::net::SocketAddr, password: &str) -> String {
    config_toml(db(), "", "")
        .replace(
            &format!("address = \"127.0.0.1:{}\"", db().port()),
            &format!("address = \"{addr}\"\nidle_pool = 0"),
        )
        .replace(
            &format!("password = \"{UP_PASSWORD}\""),
            &format!("password = \"{password}\""),
        )
}

#[tokio::test]
async fn caching_sha2_fast_path_and_mysql_only_trackers() {
    let (addr, seen, _dir) = scripted(false, "fast-pw").await;
    let r = start_with(&toml_for(addr, "fast-pw")).await;
    let mut c = connect(&r).await;
    c.query_drop("USE shop").await.unwrap();
    c.query_drop("DO 1").await.unwrap();
    drop(c);
    let seen = seen.lock().unwrap();
    assert!(seen.fast_ok);
    assert!(
        seen.queries
            .iter()
            .any(|q| q.starts_with("SET SESSION session_track_schema=ON")),
        "{:?}",
        seen.queries
    );
    assert!(seen.queries.iter().any(|q| q == "USE shop"));
}

#[tokio::test]
async fn caching_sha2_full_authentication_with_the_servers_rsa_key() {
    let (addr, seen, _dir) = scripted(true, "full-pw-Z9").await;
    let r = start_with(&toml_for(addr, "full-pw-Z9")).await;
    let mut c = connect(&r).await;
    c.query_drop("DO 1").await.unwrap();
    drop(c);
    let pw = seen
        .lock()
        .unwrap()
        .full_auth_password
        .clone()
        .expect("full authentication ran");
    assert_eq!(
        pw, b"full-pw-Z9\0",
        "the RSA-encrypted password decrypts to the generation's password"
    );
}
