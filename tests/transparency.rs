//! Differential transparency: the bytes an application receives through
//! sqlease equal the bytes it receives from MariaDB directly, apart from the
//! greeting and the authentication exchange.
//!
//! The same corpus runs twice through a capturing TCP tap: once straight to
//! MariaDB, once through sqlease. The captured server-to-client streams are
//! cut after the authentication OK and compared byte for byte.

mod common;

use std::net::SocketAddr;
use std::sync::{Arc, Mutex};

use common::*;
use mysql_async::prelude::*;
use mysql_async::{Conn, Opts, OptsBuilder, Value};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

/// A TCP relay that records what the server sends to the client.
///
/// With `mask_mariadb_ext`, it clears MariaDB's extended capabilities in the
/// server greeting (bulk operations, metadata cache, progress reports):
/// sqlease does not offer them (design D8), so the direct run must negotiate
/// the same capabilities for the bytes to be comparable. The greeting
/// itself is excluded from the comparison.
struct Tap {
    addr: SocketAddr,
    captured: Arc<Mutex<Vec<u8>>>,
}

async fn tap(target: SocketAddr, mask_mariadb_ext: bool) -> Tap {
    let l = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = l.local_addr().unwrap();
    let captured = Arc::new(Mutex::new(Vec::new()));
    let cap = Arc::clone(&captured);
    tokio::spawn(async move {
        let (client, _) = l.accept().await.unwrap();
        let server = TcpStream::connect(target).await.unwrap();
        let (mut cr, mut cw) = client.into_split();
        let (mut sr, mut sw) = server.into_split();
        let up = tokio::spawn(async move {
            let _ = tokio::io::copy(&mut cr, &mut sw).await;
            let _ = sw.shutdown().await;
        });
        let mut buf = vec![0u8; 1 << 16];
        let mut first = mask_mariadb_ext;
        loop {
            let n = match sr.read(&mut buf).await {
                Ok(0) | Err(_) => break,
                Ok(n) => n,
            };
            if first {
                first = false;
                mask_ext_caps(&mut buf[..n]);
            }
            cap.lock().unwrap().extend_from_slice(&buf[..n]);
            if cw.write_all(&buf[..n]).await.is_err() {
                break;
            }
        }
        let _ = up.await;
    });
    Tap { addr, captured }
}

/// Zeroes the MariaDB extended-capability bytes of a greeting in place.
fn mask_ext_caps(b: &mut [u8]) {
    let Some(nul) = b[5..].iter().position(|&c| c == 0) else {
        return;
    };
    // header(4) protocol(1) version NUL id(4) scramble(8) filler(1) caps(2)
    // charset(1) status(2) caps_hi(2) auth_len(1) reserved(6) ext_caps(4)
    let off = 4 + 1 + nul + 1 + 4 + 8 + 1 + 2 + 1 + 2 + 2 + 1 + 6;
    if let Some(ext) = b.get_mut(off..off + 4) {
        ext.fill(0);
    }
}

/// Splits a byte stream into (seq, payload) packets.
fn packets(mut b: &[u8]) -> Vec<(u8, Vec<u8>)> {
    let mut out = Vec::new();
    while b.len() >= 4 {
        let len = usize::from(b[0]) | usize::from(b[1]) << 8 | usize::from(b[2]) << 16;
        if b.len() < 4 + len {
            break;
        }
        out.push((b[3], b[4..4 + len].to_vec()));
        b = &b[4 + len..];
    }
    out
}

/// Drops the greeting and the authentication exchange (up to the first OK).
fn after_auth(stream: &[u8]) -> Vec<(u8, Vec<u8>)> {
    let p = packets(stream);
    let ok = p
        .iter()
        .skip(1)
        .position(|(_, pl)| pl.as_slice().starts_with(&[0x00]))
        .expect("authentication OK");
    p[ok + 2..].to_vec()
}

fn opts(addr: SocketAddr, user: &str, pass: &str, infile: &std::path::Path) -> Opts {
    OptsBuilder::default()
        .ip_or_hostname(addr.ip().to_string())
        .tcp_port(addr.port())
        .user(Some(user))
        .pass(Some(pass))
        .prefer_socket(false)
        .local_infile_handler(Some(mysql_async::WhiteListFsHandler::new(vec![
            infile.to_path_buf()
        ])))
        .into()
}

/// Drains every result set of a text query (errors are part of the corpus).
async fn run_text(c: &mut Conn, sql: &str) -> String {
    match c.query_iter(sql).await {
        Ok(mut r) => {
            let mut out = String::new();
            loop {
                match r.collect::<mysql_async::Row>().await {
                    Ok(rows) => out.push_str(&format!("{} rows;", rows.len())),
                    Err(e) => {
                        out.push_str(&format!("err {e};"));
                        break;
                    }
                }
                if r.is_empty() {
                    break;
                }
            }
            out
        }
        Err(e) => format!("err {e}"),
    }
}

const SETUP: &[&str] = &["DROP DATABASE IF EXISTS difft", "CREATE DATABASE difft"];

/// The corpus: statements and sequences (text protocol).
fn text_corpus() -> Vec<String> {
    let mut v: Vec<String> = [
        "USE difft",
        "CREATE TABLE types (id INT AUTO_INCREMENT PRIMARY KEY, ti TINYINT, si SMALLINT UNSIGNED, mi MEDIUMINT, bi BIGINT, \
         f FLOAT, d DOUBLE, dec1 DECIMAL(20,6), b BIT(10), dt DATETIME(6), da DATE, tm TIME(3), ts TIMESTAMP(2) NULL, y YEAR, \
         c CHAR(5), vc VARCHAR(100), tx TEXT, bl BLOB, js JSON, en ENUM('a','b'), st SET('x','y'), g POINT NULL) CHARSET utf8mb4",
        "INSERT INTO types (ti, si, mi, bi, f, d, dec1, b, dt, da, tm, ts, y, c, vc, tx, bl, js, en, st) VALUES \
         (-1, 65535, -8388608, 9223372036854775807, 1.5, -2.25e100, 12345678901234.123456, b'1010101010', '2024-02-29 12:34:56.123456', '2024-02-29', '-838:59:58.999', '2024-01-01 00:00:00.5', 2024, 'ab', 'héllo wörld 🦀', REPEAT('t', 1000), 0x00FF00FE, '{\"a\": [1, 2, {\"b\": null}]}', 'b', 'x,y')",
        "INSERT INTO types (ti) VALUES (NULL)",
        "INSERT INTO types (vc, tx) VALUES ('', '')",
        "SELECT * FROM types ORDER BY id",
        "SELECT vc, id FROM types WHERE vc = '' ",
        "SELECT * FROM types WHERE id < 0",
        "SELECT NULL, NULL, 1",
        "SELECT '', 'x'",
        "SELECT 0x00, 0xFB, 0xFE, 0xFF",
        "SELECT CAST(1 AS DECIMAL(65,30)), 1e308, -0.0",
        "SELECT JSON_OBJECT('k', 'v', 'n', NULL), JSON_ARRAY(1, 'two', 3.0)",
        "SELECT b'1', b'11111111', CAST(b'101' AS UNSIGNED)",
        "SELECT DATE '2000-01-01', TIME '12:00:00.5', TIMESTAMP '1999-12-31 23:59:59.999999'",
        "SELECT '🦀🚀 utf8mb4 ✓ é ß 中文'",
        "SELECT REPEAT('x', 300), REPEAT('y', 70000)",
        "SELECT seq FROM (SELECT 1 AS seq UNION SELECT 2 UNION SELECT 3) t",
        "SELECT 1; SELECT 2, 'two'; SELECT 3 FROM DUAL WHERE 0",
        "INSERT INTO types (ti) VALUES (1); INSERT INTO types (ti) VALUES (2); SELECT LAST_INSERT_ID()",
        "SELECT 1; SELECT * FROM no_such_table; SELECT 3",
        "SELECT * FROM no_such_table_at_all",
        "SELEC syntax error here",
        "INSERT INTO types (ti) VALUES (1000)",
        "SHOW WARNINGS",
        "SELECT 1/0",
        "SHOW WARNINGS",
        "UPDATE types SET ti = 5 WHERE ti = 1",
        "UPDATE types SET ti = 5 WHERE ti = 5",
        "DELETE FROM types WHERE ti = 2",
        "CREATE PROCEDURE multi() BEGIN SELECT 1 AS a; SELECT 'two' AS b, 2 AS c; SELECT * FROM types WHERE id = 1; END",
        "CALL multi()",
        "CREATE PROCEDURE noresult() BEGIN DECLARE x INT; SET x = 1; END",
        "CALL noresult()",
        "CREATE PROCEDURE outp(OUT x INT) BEGIN SET x = 42; END",
        "CREATE FUNCTION twice(x INT) RETURNS INT DETERMINISTIC RETURN x * 2",
        "SELECT twice(21)",
        "START TRANSACTION",
        "INSERT INTO types (ti) VALUES (7)",
        "SELECT COUNT(*) FROM types",
        "ROLLBACK",
        "BEGIN; INSERT INTO types (ti) VALUES (8); COMMIT",
        "SET autocommit = 0",
        "INSERT INTO types (ti) VALUES (9)",
        "COMMIT",
        "SET autocommit = 1",
        "SET SESSION sql_mode = 'ANSI_QUOTES,NO_ENGINE_SUBSTITUTION'",
        "SELECT @@SESSION.sql_mode",
        "SET NAMES latin1",
        "SELECT 'é'",
        "SET NAMES utf8mb4",
        "SET time_zone = '+05:30'",
        "SELECT @@time_zone",
        "USE mysql",
        "SELECT DATABASE()",
        "USE difft",
        "SHOW TABLES",
        "SHOW CREATE TABLE types",
        "DESCRIBE types",
        "EXPLAIN SELECT * FROM types WHERE id = 1",
        "SELECT * FROM information_schema.COLLATIONS WHERE ID IN (8, 33, 45, 63) ORDER BY ID",
        "CREATE TEMPORARY TABLE tmp1 (a INT)",
        "INSERT INTO tmp1 VALUES (1), (2)",
        "SELECT SUM(a) FROM tmp1",
        "DROP TEMPORARY TABLE tmp1",
        "SELECT SQL_CALC_FOUND_ROWS id FROM types LIMIT 1",
        "SELECT FOUND_ROWS()",
        "DO SLEEP(0)",
        "SELECT GET_LOCK('difft', 1), RELEASE_LOCK('difft')",
        "CREATE TABLE big (id INT PRIMARY KEY, payload LONGBLOB)",
        "CREATE TABLE loaded (a INT, b VARCHAR(20)) CHARSET utf8mb4",
        "SELECT 'end of text corpus'",
    ]
    .iter()
    .map(|s| s.to_string())
    .collect();
    // A result with many rows crossing many reads.
    v.push("SELECT a.id * 1000 + b.id, REPEAT('r', 50) FROM types a, types b, types c".into());
    v
}

/// Runs the whole corpus on one connection; returns a client-side transcript.
async fn corpus(c: &mut Conn, infile: &std::path::Path) -> Vec<String> {
    let mut t = Vec::new();
    for s in text_corpus() {
        t.push(run_text(c, &s).await);
    }
    // LOAD DATA LOCAL INFILE.
    let sql = format!(
        "LOAD DATA LOCAL INFILE '{}' INTO TABLE loaded FIELDS TERMINATED BY ','",
        infile.display()
    );
    t.push(run_text(c, &sql).await);
    t.push(run_text(c, "SELECT * FROM loaded ORDER BY a").await);
    // Prepared statements with every parameter type.
    let stmt = c.prep("SELECT ?, ?, ?, ?, ?, ?, ?, ?, ?, ?").await.unwrap();
    let params: Vec<Value> = vec![
        Value::Int(-42),
        Value::UInt(u64::MAX),
        Value::Float(1.5),
        Value::Double(-2.25),
        Value::Bytes("héllo 🦀".as_bytes().to_vec()),
        Value::Bytes(vec![0, 1, 2, 255]),
        Value::NULL,
        Value::Date(2024, 2, 29, 12, 34, 56, 123456),
        Value::Time(true, 1, 2, 3, 4, 5),
        Value::Bytes(b"12345.678900".to_vec()),
    ];
    let row: Option<mysql_async::Row> = c.exec_first(&stmt, params.clone()).await.unwrap();
    t.push(format!("{:?}", row.map(|r| r.unwrap())));
    let ins = c
        .prep("INSERT INTO types (ti, bi, dec1, dt, vc, bl, js) VALUES (?, ?, ?, ?, ?, ?, ?)")
        .await
        .unwrap();
    for i in 0..5 {
        c.exec_drop(
            &ins,
            (
                i,
                i64::MIN + i as i64,
                "3.141592",
                Value::Date(2020, 1, 1, 0, 0, 0, 1),
                "ps ✓",
                vec![i as u8; 100],
                "{\"k\": 1}",
            ),
        )
        .await
        .unwrap();
    }
    let rows: Vec<mysql_async::Row> = c
        .exec("SELECT * FROM types WHERE id > ? ORDER BY id", (0,))
        .await
        .unwrap();
    t.push(format!("{} binary rows", rows.len()));
    let e = c.exec_drop("SELECT * FROM nope WHERE a = ?", (1,)).await;
    t.push(format!("{e:?}"));
    let out = c.prep("CALL outp(?)").await;
    t.push(format!("{:?}", out.is_ok()));
    // A 20 MiB blob both ways.
    let blob: Vec<u8> = (0..20 * 1024 * 1024).map(|i| (i % 251) as u8).collect();
    c.exec_drop("INSERT INTO big VALUES (1, ?)", (blob.clone(),))
        .await
        .unwrap();
    let back: Option<Vec<u8>> = c
        .query_first("SELECT payload FROM big WHERE id = 1")
        .await
        .unwrap();
    t.push(format!(
        "blob equal: {}",
        back.as_deref() == Some(&blob[..])
    ));
    let back: Option<Vec<u8>> = c
        .exec_first("SELECT payload FROM big WHERE id = ?", (1,))
        .await
        .unwrap();
    t.push(format!(
        "blob equal (binary): {}",
        back.as_deref() == Some(&blob[..])
    ));
    t
}

async fn run_through(
    target: SocketAddr,
    mask: bool,
    user: &str,
    pass: &str,
    infile: &std::path::Path,
) -> (Vec<String>, Vec<u8>) {
    let db = db();
    for s in SETUP {
        db.cli(s).unwrap();
    }
    let t = tap(target, mask).await;
    let mut c = Conn::new(opts(t.addr, user, pass, infile)).await.unwrap();
    let transcript = corpus(&mut c, infile).await;
    c.disconnect().await.unwrap();
    tokio::time::sleep(std::time::Duration::from_millis(200)).await;
    let bytes = t.captured.lock().unwrap().clone();
    (transcript, bytes)
}

#[tokio::test]
async fn bytes_through_sqlease_equal_bytes_from_mariadb() {
    let dir = tempfile::tempdir().unwrap();
    let infile = dir.path().join("data.csv");
    let mut csv = String::new();
    for i in 0..500 {
        csv.push_str(&format!("{i},row-{i}-✓\n"));
    }
    std::fs::write(&infile, csv).unwrap();
    let r = start_proxy().await;
    let direct_addr = db().addr();
    let (t_direct, b_direct) = run_through(direct_addr, true, UP_USER, UP_PASSWORD, &infile).await;
    let (t_proxy, b_proxy) = run_through(
        r.addr("main").unwrap(),
        false,
        LOCAL_USER,
        LOCAL_PASSWORD,
        &infile,
    )
    .await;
    assert!(
        text_corpus().len() >= 60,
        "corpus has {} statements",
        text_corpus().len()
    );
    assert_eq!(t_direct, t_proxy, "client-side transcripts differ");
    assert!(
        t_direct.iter().any(|s| s == "blob equal: true"),
        "{t_direct:?}"
    );
    let a = after_auth(&b_direct);
    let b = after_auth(&b_proxy);
    assert!(a.len() > 200, "only {} packets captured", a.len());
    if std::env::var("SQLEASE_DEBUG_DIFF").is_ok() {
        for (i, (x, y)) in a.iter().zip(b.iter()).enumerate().take(8) {
            eprintln!("{i}: {x:?}\n   {y:?}");
        }
    }
    for (i, (x, y)) in a.iter().zip(b.iter()).enumerate() {
        assert_eq!(
            x,
            y,
            "packet {i} differs:\n direct: {:?}\n proxied: {:?}",
            String::from_utf8_lossy(&x.1[..x.1.len().min(200)]),
            String::from_utf8_lossy(&y.1[..y.1.len().min(200)])
        );
    }
    assert_eq!(a.len(), b.len(), "packet counts differ");
}
