//! Hostile clients against the real binary, run as a child process (so its
//! RSS can be read from /proc): what tests/bad_input.rs does not cover.
//!
//! - 1,000 connections that never finish the handshake: all closed by
//!   handshake_timeout (2 s) while a correct login is served;
//! - 10,000 wrong-password logins from one address (127.0.0.2), 200 at a
//!   time: every one is answered 1045, counted in
//!   `sqlease_client_auth_failures_total` (the exported
//!   `shared.metrics.auth_failures_total`), and throttled (median answer
//!   time at least the capped delay, 16 × `auth_failure_delay`); meanwhile
//!   100 correct logins from another address (127.0.0.1) stay fast:
//!   p99 under 500 ms.
//! - floods of COM_CHANGE_USER, valid (each gives the session a fresh
//!   upstream connection) and invalid (1045, throttled, counted; the session
//!   stays logged in as before and usable);
//! - COM_STMT_EXECUTE with too few, too many or no parameter bytes, and a
//!   non-0/1 new-params-bound flag: one answer each, the session stays usable;
//! - all of it twice: once every client connection is closed, the RSS
//!   after the second round is within max(4 MiB, 10 %) of the RSS after the
//!   first (the first brings glibc's arenas to their working size; a leak
//!   would grow it again).

mod common;
mod rawclient;

use std::net::{IpAddr, SocketAddr};
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

use common::*;
use rawclient::*;
use tokio::io::AsyncWriteExt;
use tokio::net::{TcpSocket, TcpStream};

/// Capped throttle delay is 16 × this (see frontend::FailureThrottle).
const FAILURE_DELAY: Duration = Duration::from_millis(5);
const STORM: usize = 10_000;
const STORM_CONCURRENCY: usize = 200;
/// Bound on a correct login's p99 latency during the storm.
const GOOD_LOGIN_P99: Duration = Duration::from_millis(500);
const QUICK: Duration = Duration::from_secs(10);
/// Connections that never finish the handshake.
const STALLED: usize = 1_000;

struct Proc {
    child: Child,
    log: std::path::PathBuf,
    _dir: tempfile::TempDir,
    port: u16,
    admin: SocketAddr,
}

impl Proc {
    async fn spawn() -> Proc {
        let dir = tempfile::tempdir().unwrap();
        let port = sqlease_testkit::mariadb::free_port().unwrap();
        let admin_port = sqlease_testkit::mariadb::free_port().unwrap();
        let toml = config_toml(
            db(),
            "max_connections = 2000",
            &format!("[admin]\nbind = \"127.0.0.1:{admin_port}\"\n"),
        )
        .replace(
            "bind = \"127.0.0.1:0\"",
            &format!("bind = \"127.0.0.1:{port}\""),
        )
        .replace(
            "auth_failure_delay = \"20ms\"",
            &format!("auth_failure_delay = \"{}ms\"", FAILURE_DELAY.as_millis()),
        );
        assert!(toml.contains(&format!("127.0.0.1:{port}")) && toml.contains("\"5ms\""));
        let config = dir.path().join("sqlease.toml");
        std::fs::write(&config, toml).unwrap();
        let log = dir.path().join("sqlease.log");
        let child = Command::new(sqlease_bin())
            .args(["run", "--config", config.to_str().unwrap()])
            .env("RUST_LOG", "warn")
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(&log).unwrap())
            .spawn()
            .unwrap();
        let p = Proc {
            child,
            log,
            _dir: dir,
            port,
            admin: SocketAddr::from(([127, 0, 0, 1], admin_port)),
        };
        let deadline = Instant::now() + Duration::from_secs(20);
        while TcpStream::connect(p.addr()).await.is_err() {
            assert!(
                Instant::now() < deadline,
                "sqlease did not listen:\n{}",
                p.log()
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        p
    }

    fn addr(&self) -> SocketAddr {
        SocketAddr::from(([127, 0, 0, 1], self.port))
    }

    fn log(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// VmRSS in KiB.
    fn rss_kib(&self) -> u64 {
        status_kib(self.child.id(), "VmRSS:")
    }

    /// VmHWM (peak RSS) in KiB.
    fn peak_kib(&self) -> u64 {
        status_kib(self.child.id(), "VmHWM:")
    }

    async fn metric(&self, name: &str) -> u64 {
        let text = http_get(self.admin, "/metrics").await;
        text.lines()
            .filter(|l| !l.starts_with('#'))
            .find_map(|l| {
                l.strip_prefix(name)?
                    .strip_prefix(' ')?
                    .trim()
                    .parse::<f64>()
                    .ok()
            })
            .unwrap_or_else(|| panic!("{name} not in /metrics:\n{text}")) as u64
    }

    /// Waits until no client connection is open.
    async fn wait_idle(&self) {
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            let n = self.metric("sqlease_client_connections_open").await;
            if n == 0 {
                return;
            }
            assert!(Instant::now() < deadline, "{n} client connections left");
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }
}

impl Drop for Proc {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn status_kib(pid: u32, key: &str) -> u64 {
    let s = std::fs::read_to_string(format!("/proc/{pid}/status")).expect("/proc status");
    s.lines()
        .find_map(|l| l.strip_prefix(key))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .unwrap_or_else(|| panic!("{key} not in /proc/{pid}/status"))
}

async fn http_get(addr: SocketAddr, path: &str) -> String {
    use tokio::io::AsyncReadExt;
    let mut s = TcpStream::connect(addr).await.expect("admin connect");
    s.write_all(format!("GET {path} HTTP/1.0\r\nHost: admin\r\n\r\n").as_bytes())
        .await
        .unwrap();
    let mut buf = Vec::new();
    tokio::time::timeout(QUICK, s.read_to_end(&mut buf))
        .await
        .expect("admin answer timed out")
        .unwrap();
    let text = String::from_utf8(buf).unwrap();
    text.split_once("\r\n\r\n").expect("HTTP").1.to_string()
}

/// Connects from a chosen loopback address and reads the greeting.
async fn connect_from(from: IpAddr, to: SocketAddr) -> (TcpStream, Greeting) {
    let sock = TcpSocket::new_v4().unwrap();
    sock.bind(SocketAddr::new(from, 0)).unwrap();
    let mut s = tokio::time::timeout(QUICK, sock.connect(to))
        .await
        .expect("connect timed out")
        .expect("connect");
    let (seq, p) = read_packet(&mut s, QUICK).await.expect("greeting");
    assert_eq!(seq, 0, "{p:?}");
    (s, parse_greeting(&p))
}

/// Logs in with mysql_native_password; the final answer packet.
async fn login_from(
    from: IpAddr,
    to: SocketAddr,
    password: &str,
) -> (TcpStream, Greeting, Vec<u8>) {
    let (mut s, g) = connect_from(from, to).await;
    let auth = native_auth(&g.scramble, password);
    write_packet(
        &mut s,
        1,
        &handshake_response(RAW_CAPS, LOCAL_USER, &auth, NATIVE),
    )
    .await;
    let (_, p) = read_packet(&mut s, QUICK).await.expect("login answer");
    (s, g, p)
}

fn percentile(sorted: &[Duration], p: f64) -> Duration {
    let i = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    sorted[i]
}

const ATTACKER: IpAddr = IpAddr::V4(std::net::Ipv4Addr::new(127, 0, 0, 2));
const FLOODER: IpAddr = IpAddr::V4(std::net::Ipv4Addr::new(127, 0, 0, 3));
const GOOD: IpAddr = IpAddr::V4(std::net::Ipv4Addr::LOCALHOST);

/// 10,000 wrong passwords; a correct login's latency measured meanwhile.
async fn wrong_password_storm(p: &Proc) -> (Vec<Duration>, Vec<Duration>) {
    let to = p.addr();
    let sem = Arc::new(tokio::sync::Semaphore::new(STORM_CONCURRENCY));
    let done = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let done2 = Arc::clone(&done);
    // The correct client runs on its own thread and runtime, so that the
    // 200 attacking tasks of this process do not delay it.
    let good = std::thread::spawn(move || {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        rt.block_on(async move {
            let mut lat = Vec::new();
            // Let the storm build up first.
            tokio::time::sleep(Duration::from_millis(500)).await;
            while lat.len() < 100 && !done2.load(std::sync::atomic::Ordering::SeqCst) {
                let t = Instant::now();
                let (mut s, _, answer) = login_from(GOOD, to, LOCAL_PASSWORD).await;
                lat.push(t.elapsed());
                assert_eq!(answer.first(), Some(&0x00), "good login failed: {answer:?}");
                let rows = raw_query(&mut s, "SELECT 1").await.unwrap();
                assert_eq!(rows, vec![vec![Some("1".to_string())]]);
                drop(s);
                tokio::time::sleep(Duration::from_millis(30)).await;
            }
            lat
        })
    });
    let mut set = tokio::task::JoinSet::new();
    for i in 0..STORM {
        let permit = Arc::clone(&sem).acquire_owned().await.unwrap();
        set.spawn(async move {
            let t = Instant::now();
            let (_s, _, answer) = login_from(ATTACKER, to, &format!("wrong-{i}")).await;
            let took = t.elapsed();
            drop(permit);
            let (code, msg) =
                parse_err(&answer).unwrap_or_else(|| panic!("attempt {i}: {answer:?}"));
            assert_eq!(code, 1045, "{msg}");
            assert_eq!(
                msg,
                format!("Access denied for user '{LOCAL_USER}'@'127.0.0.2' (using password: YES)")
            );
            took
        });
        while let Some(r) = set.try_join_next() {
            r.expect("attempt failed");
        }
    }
    let mut storm = Vec::new();
    while let Some(r) = set.join_next().await {
        storm.push(r.expect("attempt failed"));
    }
    done.store(true, std::sync::atomic::Ordering::SeqCst);
    let good = tokio::task::block_in_place(|| good.join()).expect("good client");
    (storm, good)
}

/// Builds COM_CHANGE_USER for RAW_CAPS (native auth over `scramble`).
fn change_user(scramble: &[u8; 20], user: &str, password: &str) -> Vec<u8> {
    let auth = native_auth(scramble, password);
    let mut p = vec![0x11];
    p.extend_from_slice(user.as_bytes());
    p.push(0);
    p.push(auth.len() as u8);
    p.extend_from_slice(&auth);
    p.extend_from_slice(b"sqltest\0");
    p.extend_from_slice(&[45, 0]);
    p.extend_from_slice(NATIVE.as_bytes());
    p.push(0);
    p
}

/// One client: `n` COM_CHANGE_USER, every `bad_every`-th one invalid.
/// Returns (valid, invalid) counts.
async fn change_user_flood(to: SocketAddr, n: usize, bad_every: usize) -> (usize, usize) {
    let (mut s, g, answer) = login_from(FLOODER, to, LOCAL_PASSWORD).await;
    assert_eq!(answer.first(), Some(&0x00), "{answer:?}");
    let (mut good, mut bad) = (0, 0);
    for i in 0..n {
        let invalid = i % bad_every == bad_every - 1;
        let pkt = if invalid {
            if (i / bad_every) % 2 == 0 {
                change_user(&g.scramble, LOCAL_USER, "not-the-password")
            } else {
                change_user(&g.scramble, "root", LOCAL_PASSWORD)
            }
        } else {
            change_user(&g.scramble, LOCAL_USER, LOCAL_PASSWORD)
        };
        write_packet(&mut s, 0, &pkt).await;
        let (_, a) = read_packet(&mut s, QUICK)
            .await
            .unwrap_or_else(|| panic!("connection closed after COM_CHANGE_USER #{i}"));
        if invalid {
            let (code, _) = parse_err(&a).unwrap_or_else(|| panic!("#{i}: {a:?}"));
            assert_eq!(code, 1045);
            bad += 1;
        } else {
            assert_eq!(a.first(), Some(&0x00), "#{i}: {a:?}");
            good += 1;
        }
        if i % 25 == 0 || invalid {
            // The session is usable, in the schema of its last valid change.
            let rows = raw_query(&mut s, "SELECT DATABASE()").await.unwrap();
            assert_eq!(rows, vec![vec![Some("sqltest".to_string())]], "#{i}");
        }
    }
    write_packet(&mut s, 0, &[0x01]).await;
    (good, bad)
}

/// Reads a COM_STMT_PREPARE answer (classic EOF framing); the statement id.
async fn prepare(s: &mut TcpStream, sql: &str) -> u32 {
    let mut p = vec![0x16];
    p.extend_from_slice(sql.as_bytes());
    write_packet(s, 0, &p).await;
    let (_, ok) = read_packet(s, QUICK).await.expect("prepare answer");
    assert_eq!(ok[0], 0, "prepare failed: {ok:?}");
    let id = u32::from_le_bytes(ok[1..5].try_into().unwrap());
    let cols = u16::from_le_bytes([ok[5], ok[6]]);
    let params = u16::from_le_bytes([ok[7], ok[8]]);
    for (n, _) in [(params, 0), (cols, 1)] {
        if n > 0 {
            for _ in 0..n {
                read_packet(s, QUICK).await.expect("definition");
            }
            let (_, eof) = read_packet(s, QUICK).await.expect("EOF");
            assert_eq!(eof[0], 0xFE);
        }
    }
    id
}

fn execute(id: u32, tail: &[u8]) -> Vec<u8> {
    let mut p = vec![0x17];
    p.extend_from_slice(&id.to_le_bytes());
    p.push(0);
    p.extend_from_slice(&1u32.to_le_bytes());
    p.extend_from_slice(tail);
    p
}

/// Executes with wrong parameter blocks; each gets exactly one answer
/// (OK or ERR) and the session goes on. Returns the answers' codes (0 = OK).
async fn wrong_parameter_counts(to: SocketAddr) -> Vec<u16> {
    let (mut s, _, answer) = login_from(GOOD, to, LOCAL_PASSWORD).await;
    assert_eq!(answer.first(), Some(&0x00));
    let id = prepare(&mut s, "DO ?, ?").await;
    let int = |v: u64| v.to_le_bytes().to_vec();
    let cases: Vec<Vec<u8>> = vec![
        // Nothing after the fixed part (no bitmap, no flag, no values).
        vec![],
        // Bitmap and flag only: types and values missing.
        vec![0, 1],
        // Types for one parameter only, one value.
        [vec![0, 1, 8, 0], int(7)].concat(),
        // Types for two, one value.
        [vec![0, 1, 8, 0, 8, 0], int(7)].concat(),
        // Three parameters' worth of types and values.
        [vec![0, 1, 8, 0, 8, 0, 8, 0], int(1), int(2), int(3)].concat(),
        // new-params-bound = 2: MariaDB answers 1835 (malformed packet);
        // sqlease must forward it untouched, not add a type block.
        [vec![0, 2, 8, 0, 8, 0], int(1), int(2)].concat(),
        // Types announced as absent on a first execute.
        [vec![0, 0], int(1), int(2)].concat(),
    ];
    let mut codes = Vec::new();
    for (i, tail) in cases.iter().enumerate() {
        write_packet(&mut s, 0, &execute(id, tail)).await;
        let (_, a) = read_packet(&mut s, QUICK)
            .await
            .unwrap_or_else(|| panic!("case {i}: connection closed"));
        let code = match parse_err(&a) {
            Some((c, _)) => c,
            None => {
                assert_eq!(a.first(), Some(&0x00), "case {i}: {a:?}");
                0
            }
        };
        codes.push(code);
        let rows = raw_query(&mut s, "SELECT 'ok'").await.unwrap();
        assert_eq!(rows, vec![vec![Some("ok".to_string())]], "after case {i}");
    }
    // A well-formed execute still works.
    let good = [vec![0, 1, 8, 0, 8, 0], int(1), int(2)].concat();
    write_packet(&mut s, 0, &execute(id, &good)).await;
    let (_, a) = read_packet(&mut s, QUICK).await.expect("answer");
    assert_eq!(a.first(), Some(&0x00), "{a:?}");
    codes
}

/// One round of every hostile client; a summary line.
async fn round(p: &Proc) -> String {
    let to = p.addr();
    let failures0 = p.metric("sqlease_client_auth_failures_total").await;

    // 0. 1,000 connections that read the greeting and never answer: all
    // closed by handshake_timeout (2 s) while a correct login is served.
    let t = Instant::now();
    let mut idle = Vec::new();
    for _ in 0..STALLED {
        idle.push(connect_from(FLOODER, to).await.0);
    }
    let (mut s, _, a) = login_from(GOOD, to, LOCAL_PASSWORD).await;
    assert_eq!(a.first(), Some(&0x00), "{a:?}");
    assert_eq!(
        raw_query(&mut s, "SELECT 'among the stalled'")
            .await
            .unwrap(),
        vec![vec![Some("among the stalled".to_string())]]
    );
    drop(s);
    let mut closed = tokio::task::JoinSet::new();
    for mut c in idle {
        closed.spawn(async move {
            // EOF (or an error packet, then EOF) within the timeout and a margin.
            expect_closed(&mut c, Duration::from_secs(10)).await;
        });
    }
    while let Some(r) = closed.join_next().await {
        r.expect("a stalled handshake was not closed");
    }
    let stalled_closed = t.elapsed();
    p.wait_idle().await;

    // 1. The wrong-password storm.
    let t = Instant::now();
    let (mut storm, mut good) = wrong_password_storm(p).await;
    let storm_time = t.elapsed();
    storm.sort();
    good.sort();
    let failures1 = p.metric("sqlease_client_auth_failures_total").await;
    assert_eq!(
        failures1 - failures0,
        STORM as u64,
        "every failure counted once"
    );
    let (s50, s99) = (percentile(&storm, 0.5), percentile(&storm, 0.99));
    assert!(
        s50 >= FAILURE_DELAY * 16,
        "failed logins not throttled: median answer {s50:?}"
    );
    assert!(
        good.len() >= 20,
        "only {} good logins during the storm",
        good.len()
    );
    let (g50, g99) = (percentile(&good, 0.5), percentile(&good, 0.99));
    assert!(
        g99 < GOOD_LOGIN_P99,
        "correct logins slowed by the storm: p50 {g50:?}, p99 {g99:?}"
    );

    // 2. COM_CHANGE_USER floods: 10 clients × 100, every 4th invalid.
    let t = Instant::now();
    let mut set = tokio::task::JoinSet::new();
    for _ in 0..10 {
        set.spawn(change_user_flood(to, 100, 4));
    }
    let (mut valid, mut invalid) = (0, 0);
    while let Some(r) = set.join_next().await {
        let (g, b) = r.expect("change-user flood");
        valid += g;
        invalid += b;
    }
    let flood_time = t.elapsed();
    assert_eq!((valid, invalid), (750, 250));
    let failures2 = p.metric("sqlease_client_auth_failures_total").await;
    assert_eq!(failures2 - failures1, 250);

    // 3. Wrong parameter counts: MariaDB's own answers (1210 incorrect
    // arguments, 1835 malformed packet, or OK when it ignores extra bytes).
    let codes = wrong_parameter_counts(to).await;
    assert!(
        codes.iter().all(|c| [0, 1210, 1835].contains(c)),
        "{codes:?}"
    );
    p.wait_idle().await;
    format!(
        "{STALLED} stalled handshakes all closed after {stalled_closed:?}; \
         storm of {STORM} in {storm_time:?}: failed-login answer p50 {s50:?} p99 {s99:?}; \
         {} correct logins meanwhile: p50 {g50:?} p99 {g99:?}; \
         change-user flood ({valid} valid, {invalid} invalid) in {flood_time:?}; \
         wrong-parameter-count answers {codes:?}",
        good.len()
    )
}

/// RSS once the process is idle again.
async fn settled_rss(p: &Proc) -> u64 {
    p.wait_idle().await;
    tokio::time::sleep(Duration::from_secs(2)).await;
    p.rss_kib()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hostile_clients_against_the_binary() {
    let p = Proc::spawn().await;
    let to = p.addr();
    let (s, _, a) = login_from(GOOD, to, LOCAL_PASSWORD).await;
    assert_eq!(a.first(), Some(&0x00));
    drop(s);
    let cold = settled_rss(&p).await;
    // Round 1 brings the allocator to its working size (glibc keeps freed
    // arenas); round 2 must not grow it: memory returns to that baseline.
    let first = round(&p).await;
    let baseline = settled_rss(&p).await;
    let second = round(&p).await;
    let after = settled_rss(&p).await;
    let peak = p.peak_kib();
    let tolerance = (baseline / 10).max(4 * 1024);
    eprintln!("hostile: round 1: {first}");
    eprintln!("hostile: round 2: {second}");
    eprintln!(
        "hostile: RSS at start {cold} KiB, after round 1 {baseline} KiB, after round 2 {after} KiB \
         (tolerance {tolerance} KiB), peak {peak} KiB"
    );
    assert!(
        after <= baseline + tolerance,
        "RSS grew from {baseline} KiB to {after} KiB over a second round of hostile clients"
    );
    let log = p.log();
    assert!(!log.contains("panicked"), "{log}");
    // Still serving.
    let (mut s, _, a) = login_from(GOOD, to, LOCAL_PASSWORD).await;
    assert_eq!(a.first(), Some(&0x00));
    assert_eq!(
        raw_query(&mut s, "SELECT 'alive'").await.unwrap(),
        vec![vec![Some("alive".to_string())]]
    );
}

/// A one-row result whose row is exactly 16 MiB − 1 bytes, read by the
/// proxy's own query helper (`session::uservars::query_rows`, used to carry
/// user variables to a new connection): it must come back, not hang.
/// `query_rows` reads *logical* packets; a logical packet of exactly
/// 16 MiB − 1 bytes must not make the response machine wait for a
/// continuation that `read_logical` already consumed.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn proxy_query_helper_reads_a_row_of_16_mib_minus_1() {
    use sqlease::backend::{self, ConnectParams, UpstreamTarget};
    use sqlease::protocol::caps::CLIENT_DEPRECATE_EOF;
    let db = db();
    db.cli("SET GLOBAL max_allowed_packet = 64 * 1024 * 1024")
        .unwrap();
    let target = UpstreamTarget {
        addr: sqlease::net::UpstreamAddr::Tcp {
            host: "127.0.0.1".into(),
            port: db.port(),
        },
        tls_mode: sqlease::config::UpstreamTlsMode::Disabled,
        tls: None,
        server_name: "127.0.0.1".into(),
        connect_timeout: QUICK,
    };
    let generation = sqlease::credentials::Generation::new(
        1,
        UP_USER.into(),
        sqlease::secret::SecretString::from(UP_PASSWORD),
        None,
    );
    for deprecate_eof in [false, true] {
        let params = ConnectParams {
            client_caps: RAW_CAPS
                | if deprecate_eof {
                    CLIENT_DEPRECATE_EOF
                } else {
                    0
                },
            collation: 45,
            ..ConnectParams::default()
        };
        let mut up = backend::connect(&target, &generation, &params)
            .await
            .expect("upstream connection");
        // Row payload: 0xFD + 3-byte length + 16,777,211 bytes = 0xFFFFFF.
        let rows = tokio::time::timeout(
            Duration::from_secs(30),
            sqlease::session::uservars::query_rows(
                &mut up.conn,
                deprecate_eof,
                "SELECT REPEAT('x', 16777211)",
            ),
        )
        .await
        .unwrap_or_else(|_| panic!("query_rows hung (DEPRECATE_EOF {deprecate_eof})"))
        .expect("query_rows");
        assert_eq!(rows.len(), 1);
        assert_eq!(rows[0][0].as_ref().map(|v| v.len()), Some(16_777_211));
    }
}
