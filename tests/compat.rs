//! Client compatibility (issue "Works with the drivers and tools people
//! actually use"): one small program per client in `tests/compat/`, each run
//! twice with the same scenario, once through sqlease (with credentials
//! rotated every second while its loop of prepared statements runs) and once
//! directly against MariaDB. Both runs must pass, and what they read back
//! must be the same. The programs print one JSON line; see docs/compat.md.
//!
//! The clients are installed by scripts/test.sh. A client that is missing
//! makes its test fail with the command that installs it.

mod common;

use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use common::rotator::Rotator;
use common::*;
use serde_json::Value;
use sqlease::app::Running;

use sqlease::server::Shared;
use tokio::io::{AsyncBufReadExt, BufReader};

/// How long each program's rotation loop runs, and how often sqlease's
/// credentials are rotated while it does.
const LOOP_SECS: u64 = 4;
const ROTATE_EVERY: Duration = Duration::from_millis(1000);
const RUN_TIMEOUT: Duration = Duration::from_secs(90);

async fn start_rotating(prefix: &str) -> (Running, Arc<Rotator>) {
    let db = db();
    init_logging();
    let (rot, handle) = Rotator::new(db, prefix);
    rot.rotate(None);
    let cfg = sqlease::config::Config::from_toml(&config_toml(db, "", "")).unwrap();
    let mut supplied = std::collections::BTreeMap::new();
    supplied.insert("static".to_string(), handle);
    let r = sqlease::app::start_with_sources(cfg, supplied)
        .await
        .expect("start sqlease");
    (r, rot)
}

fn repo() -> &'static Path {
    Path::new(env!("CARGO_MANIFEST_DIR"))
}

fn on_path(cmd: &str) -> Option<PathBuf> {
    std::env::var_os("PATH").and_then(|p| {
        std::env::split_paths(&p)
            .map(|d| d.join(cmd))
            .find(|f| f.is_file())
    })
}

/// The interpreter for a client's program, or a test failure that says how
/// to install it.
fn require(cmd: &str, install: &str) -> PathBuf {
    on_path(cmd).unwrap_or_else(|| {
        panic!("client not installed: `{cmd}` is not on PATH. Install it with scripts/test.sh ({install}).")
    })
}

fn python() -> PathBuf {
    let py = repo().join("target/compat-venv/bin/python");
    assert!(
        py.is_file(),
        "client not installed: {} is missing. scripts/test.sh creates it (python3 -m venv target/compat-venv; \
         pip install -r tests/compat/python/requirements.txt).",
        py.display()
    );
    py
}

fn node() -> PathBuf {
    let n = require("node", "Debian package nodejs");
    let m = repo().join("tests/compat/node/node_modules/mysql2/package.json");
    assert!(
        m.is_file(),
        "client not installed: {} is missing. scripts/test.sh installs it (npm ci in tests/compat/node).",
        m.display()
    );
    n
}

/// Rotates every ROTATE_EVERY (the first after half of it) until `stop`.
fn rotate_until(rot: Arc<Rotator>, stop: Arc<AtomicBool>) -> std::thread::JoinHandle<()> {
    std::thread::spawn(move || {
        let mut next = Instant::now() + ROTATE_EVERY / 2;
        while !stop.load(Ordering::SeqCst) {
            if Instant::now() >= next {
                rot.rotate(None);
                rot.drop_unused();
                next += ROTATE_EVERY;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    })
}

/// Where a program connects.
struct Target {
    port: u16,
    user: &'static str,
    password: &'static str,
    rotation: bool,
}

/// Runs one program to completion against `target`. When `rot` is given,
/// credentials are rotated every ROTATE_EVERY from the moment the program
/// prints LOOP_START until it exits. Returns the program's JSON line.
async fn run_program(
    name: &str,
    argv: &[PathBuf],
    target: Target,
    database: &str,
    rot: Option<(Arc<Rotator>, Arc<Shared>)>,
) -> Value {
    let mut cmd = tokio::process::Command::new(&argv[0]);
    cmd.args(&argv[1..])
        .current_dir(repo())
        .env("COMPAT_HOST", "127.0.0.1")
        .env("COMPAT_PORT", target.port.to_string())
        .env("COMPAT_USER", target.user)
        .env("COMPAT_PASSWORD", target.password)
        .env("COMPAT_DB", database)
        .env("COMPAT_ROTATION", if target.rotation { "1" } else { "0" })
        .env("COMPAT_LOOP_SECS", LOOP_SECS.to_string())
        .env("COMPAT_TRACE", "1")
        .env("MYSQL_TEST_LOGIN_FILE", "/nonexistent")
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .kill_on_drop(true);
    let mut child = cmd
        .spawn()
        .unwrap_or_else(|e| panic!("{name}: cannot start {:?}: {e}", argv[0]));
    let stdout = child.stdout.take().unwrap();
    let stderr = child.stderr.take().unwrap();
    let err_task = tokio::spawn(async move {
        let mut s = String::new();
        let mut r = BufReader::new(stderr);
        let mut line = String::new();
        while r.read_line(&mut line).await.unwrap_or(0) > 0 {
            s.push_str(&line);
            line.clear();
        }
        s
    });
    let stop = Arc::new(AtomicBool::new(false));
    let mut rotator_thread = None;
    let mut accepted_at_loop = None;
    let mut lines = Vec::new();
    let mut reader = BufReader::new(stdout).lines();
    let where_ = if target.rotation {
        "sqlease"
    } else {
        "MariaDB"
    };
    let read_all = async {
        while let Some(line) = reader.next_line().await.unwrap() {
            if line.trim() == "LOOP_START" {
                if let Some((rot, shared)) = rot.clone() {
                    accepted_at_loop = Some(
                        shared
                            .metrics
                            .client_connections_total
                            .load(Ordering::SeqCst),
                    );
                    let stop = Arc::clone(&stop);
                    rotator_thread = Some(rotate_until(rot, Arc::clone(&stop)));
                }
            }
            lines.push(line);
        }
        child.wait().await.unwrap()
    };
    let status = tokio::time::timeout(RUN_TIMEOUT, read_all).await;
    stop.store(true, Ordering::SeqCst);
    if let Some(t) = rotator_thread {
        t.join().expect("rotator thread");
    }
    if status.is_err() {
        let _ = child.start_kill();
    }
    let stderr = tokio::time::timeout(Duration::from_secs(5), err_task)
        .await
        .map(|r| r.unwrap_or_default())
        .unwrap_or_default();
    let status = status.unwrap_or_else(|_| {
        panic!(
            "{name} against {where_}: no result within {RUN_TIMEOUT:?}\nstdout:\n{}\nstderr:\n{stderr}",
            lines.join("\n")
        )
    });
    let json = lines.iter().rev().find_map(|l| {
        serde_json::from_str::<Value>(l)
            .ok()
            .filter(Value::is_object)
    });
    match (status.success(), json) {
        (true, Some(mut v)) => {
            // Clients sqlease accepted while the loop ran: a reconnect shows.
            if let (Some(n0), Some((_, shared))) = (accepted_at_loop, &rot) {
                let n1 = shared
                    .metrics
                    .client_connections_total
                    .load(Ordering::SeqCst);
                v["accepted_during_loop"] = (n1 - n0).into();
            }
            println!("{name} against {where_}: {v}");
            if !stderr.trim().is_empty() {
                println!("{name} against {where_}, stderr:\n{stderr}");
            }
            v
        }
        (_, j) => panic!(
            "{name} against {where_}: exit {status}, result {j:?}\nstdout:\n{}\nstderr:\n{stderr}",
            lines.join("\n")
        ),
    }
}

/// Runs a client's program through sqlease and directly against MariaDB
/// (in parallel) and checks both results.
async fn check_client(name: &str, argv: Vec<PathBuf>) {
    let db = db();
    let via = format!("compat_{}_p", name.replace('-', "_"));
    let direct = format!("compat_{}_d", name.replace('-', "_"));
    db.cli(&format!(
        "DROP DATABASE IF EXISTS {via}; CREATE DATABASE {via}; DROP DATABASE IF EXISTS {direct}; CREATE DATABASE {direct};"
    ))
    .unwrap();
    let prefix = format!("cx_{}_", name.replace('-', "_"));
    let (r, rot) = start_rotating(&prefix).await;
    let port = r.addr("main").unwrap().port();
    let (p, d) = tokio::join!(
        run_program(
            name,
            &argv,
            Target {
                port,
                user: LOCAL_USER,
                password: LOCAL_PASSWORD,
                rotation: true,
            },
            &via,
            Some((Arc::clone(&rot), Arc::clone(&r.shared))),
        ),
        run_program(
            name,
            &argv,
            Target {
                port: db.port(),
                user: UP_USER,
                password: UP_PASSWORD,
                rotation: false,
            },
            &direct,
            None,
        )
    );
    check_results(name, &p, &d, &rot);
    r.shutdown(Duration::from_secs(2)).await;
    rot.drop_unused();
}

/// Checks the results of one client through sqlease (`p`) and directly (`d`).
fn check_results(name: &str, p: &Value, d: &Value, rot: &Rotator) {
    let no_failures = |v: &Value, where_: &str| {
        let f = v["failures"].as_array().cloned().unwrap_or_default();
        assert!(
            f.is_empty(),
            "{name} failed against {where_}: {}",
            serde_json::to_string_pretty(&f).unwrap()
        );
    };
    // Directly first: if the program fails there, the program is wrong.
    no_failures(d, "MariaDB directly");
    no_failures(p, "sqlease");
    assert!(
        d["rotation"].is_null(),
        "{name}: the direct run must skip rotation"
    );
    // Everything the program read back is the same through sqlease.
    assert_eq!(
        p["facts"], d["facts"],
        "{name}: results through sqlease differ from MariaDB's"
    );
    check_expected_facts(name, &d["facts"]);
    // The rotation loop: no error, the user changed, the connection id did not.
    let rt = &p["rotation"];
    let errors = rt["errors"].as_u64().unwrap_or(u64::MAX);
    assert_eq!(
        errors, 0,
        "{name}: errors in the rotation loop through sqlease: {}",
        rt["first_error"]
    );
    let iterations = rt["iterations"].as_u64().unwrap_or(0);
    assert!(
        iterations >= 10,
        "{name}: only {iterations} iterations in the loop: {rt}"
    );
    let users = rt["users"].as_array().map(Vec::len).unwrap_or(0);
    assert!(
        users >= 2,
        "{name}: CURRENT_USER() never changed over {} rotations: {rt}",
        rot.rotations()
    );
    // The client library's connection id (from the handshake), where it has
    // an API for it; and in any case no new client connection to sqlease.
    if !rt["conn_ids"].is_null() {
        let ids = rt["conn_ids"].as_array().cloned().unwrap_or_default();
        assert_eq!(ids.len(), 1, "{name}: the connection id changed: {rt}");
    }
    assert_eq!(
        p["accepted_during_loop"],
        Value::from(0),
        "{name}: the client reconnected during the rotation loop"
    );
}

/// Facts every program reports, with the values MariaDB gives.
fn check_expected_facts(name: &str, f: &Value) {
    let want = |key: &str, v: Value| {
        if !f[key].is_null() || v.is_null() {
            assert_eq!(f[key], v, "{name}: fact {key}");
        } else {
            panic!("{name}: fact {key} not reported: {f}");
        }
    };
    want(
        "readback",
        serde_json::json!([
            "42",
            "12345.6789",
            "h\u{e9}llo \u{1F600} w\u{f6}rld \u{2713}",
            "15",
            "2024-02-29 13:14:15.123456",
            "1",
            "000102FFFE275C00"
        ]),
    );
    want("big_rows", 50_000.into());
    want("big_sum", 1_250_025_000u64.into());
    want("after_rollback", 0.into());
    want("after_commit", 1.into());
    want("syntax_error_code", 1064.into());
    want("after_error", 2.into());
    want("same_conn_after_error", true.into());
}

fn py(prog: &str) -> Vec<PathBuf> {
    vec![python(), repo().join("tests/compat/python").join(prog)]
}

fn php(mode: &str) -> Vec<PathBuf> {
    vec![
        require("php", "Debian packages php-cli php-mysql"),
        repo().join("tests/compat/php/compat.php"),
        mode.into(),
    ]
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn compat_python_pymysql() {
    check_client("pymysql", py("pymysql_compat.py")).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn compat_python_mysql_connector() {
    check_client("mysql-connector", py("connector_compat.py")).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn compat_python_sqlalchemy_pymysql() {
    check_client("sqlalchemy", py("sqlalchemy_compat.py")).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn compat_php_pdo_emulated_prepares() {
    check_client("pdo-emulated", php("pdo-emulated")).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn compat_php_pdo_native_prepares() {
    check_client("pdo-native", php("pdo-native")).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn compat_php_mysqli() {
    check_client("mysqli", php("mysqli")).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn compat_node_mysql2() {
    check_client(
        "node-mysql2",
        vec![node(), repo().join("tests/compat/node/compat.js")],
    )
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn compat_ruby_mysql2() {
    check_client(
        "ruby-mysql2",
        vec![
            require("ruby", "Debian package ruby-mysql2"),
            repo().join("tests/compat/ruby/compat.rb"),
        ],
    )
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn compat_perl_dbd_mariadb() {
    check_client(
        "perl-dbd-mariadb",
        vec![
            require("perl", "Debian package libdbd-mariadb-perl"),
            repo().join("tests/compat/perl/compat.pl"),
        ],
    )
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn compat_tools_mariadb_cli_dump_import() {
    require("mariadb-dump", "Debian package mariadb-client");
    require("mariadb-import", "Debian package mariadb-client");
    check_client(
        "mariadb-tools",
        vec![
            require("bash", "Debian package bash"),
            repo().join("tests/compat/tools/compat.sh"),
        ],
    )
    .await;
}

/// The same scenario with mysql_async (the Rust client sqlease's own tests
/// use), in process: binary-protocol statements, a pool (which resets
/// connections with COM_RESET_CONNECTION when they come back) and the
/// rotation loop on one pooled connection.
async fn mysql_async_scenario(
    opts: mysql_async::Opts,
    rot: Option<(Arc<Rotator>, Arc<Shared>)>,
) -> Value {
    use mysql_async::prelude::*;
    use mysql_async::Value as V;
    let mut failures: Vec<String> = Vec::new();
    let mut f = serde_json::Map::new();
    let pool = mysql_async::Pool::new(
        mysql_async::OptsBuilder::from_opts(opts).pool_opts(
            mysql_async::PoolOpts::default()
                .with_constraints(mysql_async::PoolConstraints::new(1, 1).unwrap()),
        ),
    );
    let res: Result<(), mysql_async::Error> = async {
        let mut c = pool.get_conn().await?;
        let tid0 = c.id();
        let (a, b): (i64, String) = c.query_first("SELECT 1 + 1, 'x'").await?.unwrap();
        f.insert("text_query".into(), serde_json::json!([a.to_string(), b]));
        c.query_drop("DROP TABLE IF EXISTS t").await?;
        c.query_drop("CREATE TABLE t (id INT PRIMARY KEY, d DECIMAL(12,4), s VARCHAR(100), dt DATETIME(6), n INT NULL, b BLOB) CHARSET utf8mb4").await?;
        let text = "h\u{e9}llo \u{1F600} w\u{f6}rld \u{2713}";
        let blob: Vec<u8> = vec![0, 1, 2, 255, 254, 0x27, 0x5c, 0];
        c.exec_drop(
            "INSERT INTO t VALUES (?, ?, ?, ?, ?, ?)",
            (
                42,
                V::Bytes(b"12345.6789".to_vec()),
                text,
                V::Date(2024, 2, 29, 13, 14, 15, 123_456),
                V::NULL,
                blob.clone(),
            ),
        )
        .await?;
        let row: mysql_async::Row = c
            .exec_first("SELECT id, CAST(d AS CHAR), s, CHAR_LENGTH(s), DATE_FORMAT(dt, '%Y-%m-%d %H:%i:%s.%f'), n IS NULL, HEX(b) FROM t WHERE id = ?", (42,))
            .await?
            .unwrap();
        let strs: Vec<String> = row
            .unwrap()
            .into_iter()
            .map(|v| match v {
                V::Bytes(b) => String::from_utf8_lossy(&b).into_owned(),
                V::Int(i) => i.to_string(),
                V::UInt(i) => i.to_string(),
                other => format!("{other:?}"),
            })
            .collect();
        f.insert("readback".into(), serde_json::json!(strs));
        let (dt, b, n): (V, Vec<u8>, Option<i32>) =
            c.exec_first("SELECT dt, b, n FROM t WHERE id = ?", (42,)).await?.unwrap();
        if dt != V::Date(2024, 2, 29, 13, 14, 15, 123_456) || b != blob || n.is_some() {
            failures.push(format!("binary readback: {dt:?} {b:?} {n:?}"));
        }
        let big: Vec<(u64, String)> = c.query("SELECT seq, CONCAT('row-', seq) FROM seq_1_to_50000").await?;
        f.insert("big_rows".into(), big.len().into());
        f.insert("big_sum".into(), big.iter().map(|r| r.0).sum::<u64>().into());
        let big: Vec<(u64, String)> = c.exec("SELECT seq, CONCAT('row-', seq) FROM seq_1_to_50000 WHERE seq > ?", (0,)).await?;
        f.insert("big_rows_prepared".into(), big.len().into());
        c.query_drop("DROP TABLE IF EXISTS tx").await?;
        c.query_drop("CREATE TABLE tx (id INT PRIMARY KEY) ENGINE=InnoDB").await?;
        {
            let mut tx = c.start_transaction(Default::default()).await?;
            tx.exec_drop("INSERT INTO tx VALUES (?)", (1,)).await?;
            tx.rollback().await?;
        }
        let n: i64 = c.query_first("SELECT COUNT(*) FROM tx").await?.unwrap();
        f.insert("after_rollback".into(), n.into());
        {
            let mut tx = c.start_transaction(Default::default()).await?;
            tx.exec_drop("INSERT INTO tx VALUES (?)", (2,)).await?;
            tx.commit().await?;
        }
        let n: i64 = c.query_first("SELECT COUNT(*) FROM tx").await?.unwrap();
        f.insert("after_commit".into(), n.into());
        match c.query_drop("SELEC 1").await {
            Err(mysql_async::Error::Server(e)) => {
                f.insert("syntax_error_code".into(), e.code.into());
            }
            other => failures.push(format!("syntax error: {other:?}")),
        }
        let two: i64 = c.query_first("SELECT 2").await?.unwrap();
        f.insert("after_error".into(), two.into());
        f.insert("same_conn_after_error".into(), (c.id() == tid0).into());
        // Back to the pool with a variable and an open transaction: the pool
        // resets the connection before handing it out again.
        c.query_drop("SET @x = 42").await?;
        c.query_drop("BEGIN").await?;
        c.query_drop("INSERT INTO tx VALUES (10)").await?;
        drop(c);
        let mut c = pool.get_conn().await?;
        let (x, n, three): (i64, i64, i64) = c
            .exec_first("SELECT @x IS NULL, (SELECT COUNT(*) FROM tx WHERE id = ?), 3", (10,))
            .await?
            .unwrap();
        f.insert("pool_after_reset".into(), serde_json::json!([x.to_string(), n.to_string(), three.to_string()]));
        f.insert("pool_same_conn".into(), (c.id() == tid0).into());
        drop(c);
        Ok(())
    }
    .await;
    if let Err(e) = res {
        failures.push(format!("scenario: {e}"));
    }
    let mut out = serde_json::json!({"client": "mysql_async", "version": "0.37", "failures": failures, "facts": f, "rotation": null});
    if let Some((rot, shared)) = rot {
        let mut c = pool.get_conn().await.expect("pooled connection");
        let stmt = c
            .prep("SELECT CURRENT_USER(), CONNECTION_ID(), ? + 1")
            .await
            .unwrap();
        let n0 = shared
            .metrics
            .client_connections_total
            .load(Ordering::SeqCst);
        let stop = Arc::new(AtomicBool::new(false));
        let t = rotate_until(rot, Arc::clone(&stop));
        let (mut users, mut cids, mut sids) =
            (Vec::<String>::new(), Vec::<u32>::new(), Vec::<u64>::new());
        let (mut errors, mut first_error, mut i) = (0u64, None::<String>, 0i64);
        let end = Instant::now() + Duration::from_secs(LOOP_SECS);
        while Instant::now() < end {
            i += 1;
            match c.exec_first::<(String, u64, i64), _, _>(&stmt, (i,)).await {
                Ok(Some((u, sid, v))) if v == i + 1 => {
                    if !users.contains(&u) {
                        users.push(u);
                    }
                    if !sids.contains(&sid) {
                        sids.push(sid);
                    }
                }
                other => {
                    errors += 1;
                    first_error.get_or_insert(format!("iteration {i}: {other:?}"));
                }
            }
            if !cids.contains(&c.id()) {
                cids.push(c.id());
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        stop.store(true, Ordering::SeqCst);
        t.join().unwrap();
        out["rotation"] = serde_json::json!({"iterations": i, "errors": errors, "first_error": first_error,
            "users": users, "conn_ids": cids, "server_ids": sids});
        out["accepted_during_loop"] = (shared
            .metrics
            .client_connections_total
            .load(Ordering::SeqCst)
            - n0)
            .into();
        drop(c);
    }
    pool.disconnect().await.unwrap();
    out
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn compat_rust_mysql_async() {
    let db = db();
    db.cli("DROP DATABASE IF EXISTS compat_mysql_async_p; CREATE DATABASE compat_mysql_async_p; DROP DATABASE IF EXISTS compat_mysql_async_d; CREATE DATABASE compat_mysql_async_d;")
        .unwrap();
    let (r, rot) = start_rotating("cx_mysql_async_").await;
    let (p, d) = tokio::join!(
        mysql_async_scenario(
            proxy_opts(&r, Some("compat_mysql_async_p")),
            Some((Arc::clone(&rot), Arc::clone(&r.shared)))
        ),
        mysql_async_scenario(direct_opts(Some("compat_mysql_async_d")), None)
    );
    println!("mysql_async against sqlease: {p}\nmysql_async against MariaDB: {d}");
    check_results("mysql_async", &p, &d, &rot);
    r.shutdown(Duration::from_secs(2)).await;
    rot.drop_unused();
}
