//! Hostile and broken clients: hand-built packets over raw sockets. Each
//! one must end only its own connection (closed, or an ERR packet), within
//! a bound, without a panic, while well-behaved clients carry on.

mod common;
mod rawclient;

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use common::*;
use mysql_async::prelude::*;
use rand::{RngCore, SeedableRng};
use rawclient::*;
use sqlease::app::Running;
use tokio::io::AsyncWriteExt;
use tokio::net::TcpStream;

/// Bound for anything that should happen "at once".
const QUICK: Duration = Duration::from_secs(5);
/// The listeners' handshake_timeout in these tests.
const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(1);

/// Panics seen anywhere in this test binary (sqlease tasks included).
static PANICS: AtomicUsize = AtomicUsize::new(0);

fn count_panics() {
    static HOOK: std::sync::Once = std::sync::Once::new();
    HOOK.call_once(|| {
        let default = std::panic::take_hook();
        std::panic::set_hook(Box::new(move |info| {
            PANICS.fetch_add(1, Ordering::SeqCst);
            default(info);
        }));
    });
}

struct Certs {
    _dir: tempfile::TempDir,
    cert: std::path::PathBuf,
    key: std::path::PathBuf,
}

fn certs() -> Certs {
    let ck = rcgen::generate_simple_self_signed(vec!["127.0.0.1".to_string()]).unwrap();
    let dir = tempfile::tempdir().unwrap();
    let cert = dir.path().join("c.pem");
    let key = dir.path().join("k.pem");
    std::fs::write(&cert, ck.cert.pem()).unwrap();
    std::fs::write(&key, ck.signing_key.serialize_pem()).unwrap();
    Certs {
        _dir: dir,
        cert,
        key,
    }
}

/// A proxy with max_allowed_packet = 1 MiB, handshake_timeout = 1s and
/// TLS optional (so that SSLRequests are accepted).
async fn start_strict(c: &Certs) -> Running {
    let extra = format!(
        "max_allowed_packet = 1048576\n[listener.tls]\nmode = \"optional\"\ncert_file = \"{}\"\nkey_file = \"{}\"\n",
        c.cert.display(),
        c.key.display()
    );
    let toml = config_toml(db(), &extra, "").replace(
        "handshake_timeout = \"2s\"",
        &format!("handshake_timeout = \"{}s\"", HANDSHAKE_TIMEOUT.as_secs()),
    );
    assert!(toml.contains("handshake_timeout = \"1s\""));
    count_panics();
    start_with(&toml).await
}

type Addr = std::net::SocketAddr;

// ---------------------------------------------------------------- scenarios

/// A handshake packet whose header promises more than arrives, then EOF.
async fn truncated_handshake_packet(addr: Addr) {
    let (mut s, _) = raw_connect(addr).await;
    let mut bytes = frame(1, &[0x41; 100]);
    bytes.truncate(4 + 10);
    s.write_all(&bytes).await.unwrap();
    s.shutdown().await.unwrap();
    assert_eq!(expect_end(&mut s, QUICK).await, End::Closed);
}

/// A complete but far too short HandshakeResponse: 1043 Bad handshake.
async fn short_handshake_response(addr: Addr) {
    let (mut s, _) = raw_connect(addr).await;
    write_packet(&mut s, 1, &[0x0D, 0xA2, 0x0A]).await;
    let e = expect_closed(&mut s, QUICK).await;
    assert_eq!(e.map(|e| e.0), Some(1043));
}

/// A HandshakeResponse with the wrong sequence id: 1156, closed.
async fn handshake_wrong_sequence(addr: Addr) {
    let (mut s, g) = raw_connect(addr).await;
    let auth = native_auth(&g.scramble, LOCAL_PASSWORD);
    write_packet(
        &mut s,
        7,
        &handshake_response(RAW_CAPS, LOCAL_USER, &auth, NATIVE),
    )
    .await;
    let e = expect_closed(&mut s, QUICK).await;
    assert_eq!(e.map(|e| e.0), Some(1156));
}

/// A handshake packet header announcing 16 MiB: closed without reading it.
async fn oversized_handshake_packet(addr: Addr) {
    let (mut s, _) = raw_connect(addr).await;
    s.write_all(&[0xFF, 0xFF, 0xFF, 1, 0, 0, 0, 0])
        .await
        .unwrap();
    let e = expect_closed(&mut s, QUICK).await;
    assert!(
        e.is_none() || e.as_ref().map(|e| e.0) == Some(1153),
        "{e:?}"
    );
}

/// Greeting read, then silence: closed by handshake_timeout.
async fn silent_after_greeting(addr: Addr) {
    let (mut s, _) = raw_connect(addr).await;
    let t = Instant::now();
    assert_eq!(expect_end(&mut s, QUICK).await, End::Closed);
    let took = t.elapsed();
    assert!(
        took >= HANDSHAKE_TIMEOUT - Duration::from_millis(200) && took < HANDSHAKE_TIMEOUT * 4,
        "closed after {took:?}"
    );
}

/// Half a HandshakeResponse, then silence: closed by handshake_timeout.
async fn stalls_mid_handshake(addr: Addr) {
    let (mut s, g) = raw_connect(addr).await;
    let auth = native_auth(&g.scramble, LOCAL_PASSWORD);
    let mut bytes = frame(1, &handshake_response(RAW_CAPS, LOCAL_USER, &auth, NATIVE));
    bytes.truncate(20);
    s.write_all(&bytes).await.unwrap();
    let t = Instant::now();
    assert_eq!(expect_end(&mut s, QUICK).await, End::Closed);
    assert!(t.elapsed() < HANDSHAKE_TIMEOUT * 4, "{:?}", t.elapsed());
}

/// An SSLRequest followed by bytes that are not a TLS ClientHello.
async fn garbage_after_ssl_request(addr: Addr) {
    let (mut s, g) = raw_connect(addr).await;
    assert_ne!(g.caps & sqlease::protocol::caps::CLIENT_SSL, 0);
    write_packet(&mut s, 1, &ssl_request(RAW_CAPS)).await;
    s.write_all(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n\x00\x01\x02 this is not TLS at all")
        .await
        .unwrap();
    // The TLS layer may answer with an alert; then the socket must close.
    let t = Instant::now();
    let _ = expect_closed(&mut s, QUICK).await;
    assert!(t.elapsed() < QUICK);
}

/// An SSLRequest, then silence: the handshake timeout still applies.
async fn silent_after_ssl_request(addr: Addr) {
    let (mut s, _) = raw_connect(addr).await;
    write_packet(&mut s, 1, &ssl_request(RAW_CAPS)).await;
    let _ = expect_closed(&mut s, QUICK).await;
}

/// After login: a command whose length is above max_allowed_packet (1 MiB).
async fn oversized_command(addr: Addr) {
    let mut s = raw_login(addr, LOCAL_USER, LOCAL_PASSWORD).await;
    let len: u32 = 2 << 20;
    let mut bytes = len.to_le_bytes()[..3].to_vec();
    bytes.push(0);
    bytes.push(0x03);
    bytes.extend_from_slice(b"SELECT '");
    bytes.extend_from_slice(&vec![b'x'; 64 * 1024]);
    // The server may close before reading everything.
    let _ = s.write_all(&bytes).await;
    let e = expect_end(&mut s, QUICK).await;
    assert_eq!(
        e,
        End::Err(
            1153,
            "Got a packet bigger than 'max_allowed_packet' bytes".into()
        )
    );
    let _ = expect_closed(&mut s, QUICK).await;
}

/// After login: a command with sequence id 5 instead of 0.
async fn command_wrong_sequence(addr: Addr) {
    let mut s = raw_login(addr, LOCAL_USER, LOCAL_PASSWORD).await;
    write_packet(&mut s, 5, b"\x03SELECT 1").await;
    let e = expect_end(&mut s, QUICK).await;
    assert_eq!(e, End::Err(1156, "Got packets out of order".into()));
    // As MySQL does, the connection is then closed.
    assert_eq!(expect_closed(&mut s, QUICK).await, None);
}

/// After login: a truncated command packet, then EOF.
async fn truncated_command(addr: Addr) {
    let mut s = raw_login(addr, LOCAL_USER, LOCAL_PASSWORD).await;
    let mut bytes = frame(0, b"\x03SELECT 'truncated packet here'");
    bytes.truncate(12);
    s.write_all(&bytes).await.unwrap();
    s.shutdown().await.unwrap();
    assert_eq!(expect_end(&mut s, QUICK).await, End::Closed);
}

/// After login: random bytes (seeded), then EOF.
async fn random_bytes_after_login(addr: Addr, seed: u64) {
    let mut s = raw_login(addr, LOCAL_USER, LOCAL_PASSWORD).await;
    let mut rng = rand::rngs::StdRng::seed_from_u64(seed);
    let mut junk = vec![0u8; 4096];
    rng.fill_bytes(&mut junk);
    let _ = s.write_all(&junk).await;
    let _ = s.shutdown().await;
    // Whatever the junk decodes to, the connection ends.
    let _ = expect_closed(&mut s, QUICK * 2).await;
}

/// After login: random *well-framed* packets (seeded): every one gets an
/// answer or the connection ends; it never hangs.
async fn random_packets_after_login(addr: Addr, seed: u64) {
    let mut s = raw_login(addr, LOCAL_USER, LOCAL_PASSWORD).await;
    let mut rng = rand::rngs::StdRng::seed_from_u64(seed);
    let mut p = vec![0u8; 1 + (rng.next_u32() % 64) as usize];
    rng.fill_bytes(&mut p);
    // Keep away from COM_QUIT (closes, fine) being the only thing tested.
    write_packet(&mut s, 0, &p).await;
    let _ = s.shutdown().await;
    let _ = expect_closed(&mut s, QUICK * 2).await;
}

/// COM_STMT_EXECUTE naming a statement never prepared: 1243, and the
/// connection stays usable.
async fn execute_unknown_statement(addr: Addr) {
    let mut s = raw_login(addr, LOCAL_USER, LOCAL_PASSWORD).await;
    let mut p = vec![0x17];
    p.extend_from_slice(&0xDEADu32.to_le_bytes());
    p.push(0);
    p.extend_from_slice(&1u32.to_le_bytes());
    write_packet(&mut s, 0, &p).await;
    let (_, answer) = read_packet(&mut s, QUICK).await.expect("an answer");
    let (code, msg) = parse_err(&answer).unwrap_or_else(|| panic!("not an ERR: {answer:?}"));
    assert_eq!(code, 1243, "{msg}");
    // COM_STMT_CLOSE / RESET on unknown ids do not break the session either.
    let mut close = vec![0x19];
    close.extend_from_slice(&0xBEEFu32.to_le_bytes());
    write_packet(&mut s, 0, &close).await;
    let mut reset = vec![0x1A];
    reset.extend_from_slice(&0xBEEFu32.to_le_bytes());
    write_packet(&mut s, 0, &reset).await;
    let (_, answer) = read_packet(&mut s, QUICK).await.expect("reset answer");
    assert_eq!(parse_err(&answer).map(|e| e.0), Some(1243), "{answer:?}");
    let rows = raw_query(&mut s, "SELECT 'still here'").await.unwrap();
    assert_eq!(rows, vec![vec![Some("still here".to_string())]]);
}

/// 200 connections that never finish the handshake, all closed in time.
async fn burst_of_idle_connections(addr: Addr) {
    let mut socks = Vec::new();
    for _ in 0..200 {
        socks.push(TcpStream::connect(addr).await.expect("connect"));
    }
    let t = Instant::now();
    let ends = futures_join(socks).await;
    assert!(ends.iter().all(|e| *e == End::Closed), "{ends:?}");
    assert!(
        t.elapsed() < HANDSHAKE_TIMEOUT * 5,
        "took {:?}",
        t.elapsed()
    );
}

async fn futures_join(socks: Vec<TcpStream>) -> Vec<End> {
    let mut set = tokio::task::JoinSet::new();
    for mut s in socks {
        set.spawn(async move { expect_end(&mut s, QUICK * 2).await });
    }
    let mut out = Vec::new();
    while let Some(r) = set.join_next().await {
        out.push(r.expect("no panic"));
    }
    out
}

// -------------------------------------------------------------------- tests

/// Waits until the proxy holds `n` client connections.
async fn wait_connections(r: &Running, n: u64) {
    let deadline = Instant::now() + QUICK;
    loop {
        let cur = r
            .shared
            .metrics
            .client_connections_current
            .load(Ordering::SeqCst);
        if cur == n {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "{cur} client connections left, expected {n}"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

async fn check_healthy(r: &Running) {
    let mut c = connect(r).await;
    let v: i64 = scalar(&mut c, "SELECT 6 * 7").await;
    assert_eq!(v, 42);
    c.disconnect().await.unwrap();
    wait_connections(r, 0).await;
    assert_eq!(PANICS.load(Ordering::SeqCst), 0, "a panic happened");
}

macro_rules! one {
    ($name:ident, $body:expr) => {
        #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
        async fn $name() {
            let c = certs();
            let r = start_strict(&c).await;
            let addr = r.addr("main").unwrap();
            tokio::time::timeout(Duration::from_secs(30), $body(addr))
                .await
                .expect("scenario hung");
            check_healthy(&r).await;
        }
    };
}

one!(
    truncated_handshake_packet_closes,
    truncated_handshake_packet
);
one!(short_handshake_response_gets_1043, short_handshake_response);
one!(handshake_wrong_sequence_gets_1156, handshake_wrong_sequence);
one!(
    oversized_handshake_packet_closes,
    oversized_handshake_packet
);
one!(
    silent_client_closed_by_handshake_timeout,
    silent_after_greeting
);
one!(stalled_handshake_closed, stalls_mid_handshake);
one!(garbage_after_ssl_request_closes, garbage_after_ssl_request);
one!(silent_after_ssl_request_closes, silent_after_ssl_request);
one!(command_above_max_allowed_packet, oversized_command);
one!(command_with_wrong_sequence, command_wrong_sequence);
one!(truncated_command_closes, truncated_command);
one!(unknown_statement_id_gets_1243, execute_unknown_statement);
one!(
    burst_of_200_unfinished_handshakes,
    burst_of_idle_connections
);

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn random_input_after_login() {
    let c = certs();
    let r = start_strict(&c).await;
    let addr = r.addr("main").unwrap();
    for seed in 0..16 {
        tokio::time::timeout(
            Duration::from_secs(30),
            random_bytes_after_login(addr, seed),
        )
        .await
        .unwrap_or_else(|_| panic!("random bytes, seed {seed}: hung"));
        tokio::time::timeout(
            Duration::from_secs(30),
            random_packets_after_login(addr, seed),
        )
        .await
        .unwrap_or_else(|_| panic!("random packet, seed {seed}: hung"));
    }
    check_healthy(&r).await;
}

/// Every scenario at once while a well-behaved client runs queries before,
/// during and after: it never sees an error.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn others_keep_working_meanwhile() {
    let c = certs();
    let r = start_strict(&c).await;
    let addr = r.addr("main").unwrap();
    let mut good = connect(&r).await;
    let before: i64 = scalar(&mut good, "SELECT 1").await;
    assert_eq!(before, 1);
    let stop = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let stop2 = Arc::clone(&stop);
    let worker = tokio::spawn(async move {
        let mut n = 0u64;
        while !stop2.load(Ordering::SeqCst) {
            let v: Option<i64> = good
                .query_first(format!("SELECT {n} + 1"))
                .await
                .unwrap_or_else(|e| panic!("good client failed after {n} queries: {e}"));
            assert_eq!(v, Some(n as i64 + 1));
            n += 1;
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
        (good, n)
    });
    let mut set = tokio::task::JoinSet::new();
    set.spawn(truncated_handshake_packet(addr));
    set.spawn(short_handshake_response(addr));
    set.spawn(handshake_wrong_sequence(addr));
    set.spawn(oversized_handshake_packet(addr));
    set.spawn(silent_after_greeting(addr));
    set.spawn(stalls_mid_handshake(addr));
    set.spawn(garbage_after_ssl_request(addr));
    set.spawn(silent_after_ssl_request(addr));
    set.spawn(oversized_command(addr));
    set.spawn(command_wrong_sequence(addr));
    set.spawn(truncated_command(addr));
    set.spawn(execute_unknown_statement(addr));
    set.spawn(burst_of_idle_connections(addr));
    for seed in 100..104 {
        set.spawn(random_bytes_after_login(addr, seed));
        set.spawn(random_packets_after_login(addr, seed));
    }
    let all = tokio::time::timeout(Duration::from_secs(40), async {
        while let Some(r) = set.join_next().await {
            r.expect("scenario failed");
        }
    });
    all.await.expect("scenarios hung");
    stop.store(true, Ordering::SeqCst);
    let (mut good, n) = worker.await.expect("good client");
    assert!(n >= 20, "good client ran only {n} queries during the storm");
    let after: String = scalar(&mut good, "SELECT 'after'").await;
    assert_eq!(after, "after");
    good.disconnect().await.unwrap();
    check_healthy(&r).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn max_connections_answers_1040() {
    count_panics();
    let r = start_with(&config_toml(db(), "max_connections = 2", "")).await;
    let mut a = connect(&r).await;
    let b = connect(&r).await;
    let e = mysql_async::Conn::new(proxy_opts(&r, None))
        .await
        .unwrap_err();
    match e {
        mysql_async::Error::Server(se) => {
            assert_eq!(se.code, 1040, "{se:?}");
            assert_eq!(se.message, "Too many connections");
        }
        other => panic!("expected 1040, got {other:?}"),
    }
    // The raw bytes: an ERR instead of the greeting, then close.
    let mut s = TcpStream::connect(r.addr("main").unwrap()).await.unwrap();
    let (seq, p) = read_packet(&mut s, QUICK).await.expect("an ERR packet");
    assert_eq!(seq, 0);
    assert_eq!(
        parse_err(&p),
        Some((1040, "Too many connections".to_string()))
    );
    assert_eq!(expect_end(&mut s, QUICK).await, End::Closed);
    // The two admitted clients are unaffected; once one leaves, a new one
    // gets in.
    let x: i64 = scalar(&mut a, "SELECT 1").await;
    assert_eq!(x, 1);
    b.disconnect().await.unwrap();
    wait_connections(&r, 1).await;
    let mut c = connect(&r).await;
    let y: i64 = scalar(&mut c, "SELECT 2").await;
    assert_eq!(y, 2);
    let z: i64 = scalar(&mut a, "SELECT 3").await;
    assert_eq!(z, 3);
    assert_eq!(PANICS.load(Ordering::SeqCst), 0);
}
