//! Real client programs through sqlease: the `mariadb` command-line client
//! (its output compared with the same client talking to MariaDB directly)
//! and sysbench's `oltp_read_write` workload.

mod common;

use std::time::Duration;

use common::*;
use tokio::process::Command;

/// Replaces the timings `(0.001 sec)` the CLI prints in verbose mode.
fn strip_timings(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    let mut rest = s;
    while let Some(i) = rest.find(" sec)") {
        let head = &rest[..i];
        match head.rfind('(') {
            Some(j)
                if head[j + 1..]
                    .chars()
                    .all(|c| c.is_ascii_digit() || c == '.') =>
            {
                out.push_str(&head[..j]);
                out.push_str("(T sec)");
            }
            _ => {
                out.push_str(head);
                out.push_str(" sec)");
            }
        }
        rest = &rest[i + 5..];
    }
    out.push_str(rest);
    out
}

const SCRIPT: &str = r#"
DROP DATABASE IF EXISTS cli_diff;
CREATE DATABASE cli_diff CHARACTER SET utf8mb4;
USE cli_diff;
CREATE TABLE items (
  id INT PRIMARY KEY AUTO_INCREMENT,
  name VARCHAR(40) NOT NULL,
  price DECIMAL(10,2),
  created DATE,
  note TEXT NULL,
  data VARBINARY(16)
);
INSERT INTO items (name, price, created, note, data) VALUES
  ('apple', 1.25, '2024-01-02', NULL, 0x00FF),
  ('pear ✓ ünïcode', 2.50, '2024-02-03', '', NULL),
  ('fig', 10.00, '2024-03-04', 'tab\there', 0x616263);
SELECT LAST_INSERT_ID(), ROW_COUNT();
SELECT * FROM items ORDER BY id;
SELECT COUNT(*) AS n, SUM(price) AS total, AVG(price) AS mean FROM items;
UPDATE items SET price = price * 2 WHERE id > 1;
SELECT 1/0 AS div_zero;
SHOW WARNINGS;
SELECT * FROM items WHERE id = 2\G
DELIMITER //
CREATE PROCEDURE report(IN minp DECIMAL(10,2))
BEGIN
  SELECT id, name FROM items WHERE price >= minp ORDER BY id;
  SELECT COUNT(*) AS n FROM items;
  SELECT 'done' AS status, minp AS threshold;
END //
DELIMITER ;
CALL report(3);
CALL report(100);
SELECT * FROM no_such_table_cli;
SET @x = 41;
SELECT @x + 1 AS answer, DATABASE() AS db, @@session.autocommit AS ac;
START TRANSACTION;
DELETE FROM items;
ROLLBACK;
SELECT COUNT(*) FROM items;
SHOW CREATE TABLE items\G
DROP DATABASE cli_diff;
"#;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn mariadb_cli_output_matches_direct() {
    let r = start_proxy().await;
    let proxy_port = r.addr("main").unwrap().port();
    let dir = tempfile::tempdir().unwrap();
    let script = dir.path().join("script.sql");
    std::fs::write(&script, SCRIPT).unwrap();
    let source = format!("source {}", script.display());
    // -t tables, -vvv echoes statements and "Query OK, n rows affected",
    // --force goes on after the error.
    let args = ["-t", "-vvv", "--force", "-e", source.as_str()];
    let direct = mariadb_cli(db().port(), UP_USER, UP_PASSWORD, &args).await;
    let proxied = mariadb_cli(proxy_port, LOCAL_USER, LOCAL_PASSWORD, &args).await;
    // The script has one failing statement: both runs report it (and
    // go on, --force).
    assert_eq!(direct.code, Some(0), "direct run: {direct:?}");
    assert!(
        direct
            .stderr
            .starts_with("ERROR 1146 (42S02) at line 34 in file: ")
            && direct
                .stderr
                .contains("Table 'cli_diff.no_such_table_cli' doesn't exist"),
        "{}",
        direct.stderr
    );
    assert_eq!(proxied.code, direct.code, "proxied run: {proxied:?}");
    assert_eq!(proxied.stderr, direct.stderr);
    let (d, p) = (
        strip_timings(&direct.stdout),
        strip_timings(&proxied.stdout),
    );
    // Sanity: the output really contains what the script produced.
    for needle in [
        "pear ✓ ünïcode",
        "*************************** 1. row ***************************",
        "| done   |      3.00 |",
        "Query OK, 2 rows affected",
        "Rows matched: 2  Changed: 2  Warnings: 0",
        "Division by 0",
        "CREATE TABLE `items`",
    ] {
        assert!(d.contains(needle), "direct output lacks {needle:?}:\n{d}");
    }
    if d != p {
        let first = d
            .lines()
            .zip(p.lines())
            .enumerate()
            .find(|(_, (a, b))| a != b);
        panic!(
            "outputs differ; first different line: {first:?}\n--- direct\n{d}\n--- proxied\n{p}"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn mariadb_cli_e_and_vertical_output() {
    let r = start_proxy().await;
    let port = r.addr("main").unwrap().port();
    let run = mariadb_cli(
        port,
        LOCAL_USER,
        LOCAL_PASSWORD,
        &[
            "-N",
            "-B",
            "-e",
            "SELECT 1+1; SELECT CONCAT('a', 'b'), NULL; SELECT CURRENT_USER()",
        ],
    )
    .await;
    assert_eq!(run.code, Some(0), "{run:?}");
    let lines: Vec<&str> = run.stdout.lines().collect();
    assert_eq!(lines[0], "2");
    assert_eq!(lines[1], "ab\tNULL");
    assert!(lines[2].starts_with(&format!("{UP_USER}@")), "{lines:?}");
    // \G vertical output.
    let run = mariadb_cli(
        port,
        LOCAL_USER,
        LOCAL_PASSWORD,
        &["-e", "SELECT 7 AS seven, 'x' AS ex\\G"],
    )
    .await;
    assert_eq!(run.code, Some(0), "{run:?}");
    assert_eq!(
        run.stdout,
        "*************************** 1. row ***************************\nseven: 7\n   ex: x\n"
    );
    // The CLI's own `status` command works through the proxy.
    let run = mariadb_cli(port, LOCAL_USER, LOCAL_PASSWORD, &["-e", "status"]).await;
    assert_eq!(run.code, Some(0), "{run:?}");
    assert!(
        run.stdout.contains("Current user:") && run.stdout.contains("MariaDB"),
        "{}",
        run.stdout
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn mariadb_cli_access_denied_wording() {
    let r = start_proxy().await;
    let port = r.addr("main").unwrap().port();
    for (user, pass) in [(LOCAL_USER, "wrong-pw"), ("nobody", LOCAL_PASSWORD)] {
        let run = mariadb_cli(port, user, pass, &["-e", "SELECT 1"]).await;
        assert_eq!(run.code, Some(1), "{run:?}");
        assert_eq!(
            run.stderr.trim_end(),
            format!(
                "ERROR 1045 (28000): Access denied for user '{user}'@'127.0.0.1' (using password: YES)"
            ),
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn mariadb_cli_with_either_auth_plugin() {
    // The listener announces mysql_native_password; with --default-auth
    // libmariadb sends an empty response for its own plugin and expects an
    // AuthSwitchRequest (this used to be refused with 1045).
    let r = start_proxy().await;
    let port = r.addr("main").unwrap().port();
    for auth in [
        "--default-auth=caching_sha2_password",
        "--default-auth=mysql_native_password",
    ] {
        let run = mariadb_cli(
            port,
            LOCAL_USER,
            LOCAL_PASSWORD,
            &[auth, "-N", "-B", "-e", "SELECT 'auth-ok'"],
        )
        .await;
        assert_eq!(run.code, Some(0), "{auth}: {run:?}");
        assert_eq!(run.stdout, "auth-ok\n");
        let run = mariadb_cli(port, LOCAL_USER, "bad", &[auth, "-e", "SELECT 1"]).await;
        assert_eq!(run.code, Some(1), "{auth}: {run:?}");
        assert!(
            run.stderr.starts_with("ERROR 1045 (28000)"),
            "{auth}: {}",
            run.stderr
        );
    }
}

/// Reads `name: <number>` from sysbench's report.
fn sysbench_number(out: &str, name: &str) -> Option<f64> {
    out.lines()
        .map(str::trim)
        .find_map(|l| l.strip_prefix(name))
        .and_then(|rest| rest.split_whitespace().next())
        .and_then(|n| n.parse().ok())
}

async fn sysbench(port: u16, phase: &str, extra: &[&str]) -> String {
    let out = tokio::time::timeout(
        Duration::from_secs(60),
        Command::new("sysbench")
            .arg("oltp_read_write")
            .args([
                "--db-driver=mysql",
                "--mysql-host=127.0.0.1",
                &format!("--mysql-port={port}"),
                &format!("--mysql-user={LOCAL_USER}"),
                &format!("--mysql-password={LOCAL_PASSWORD}"),
                "--mysql-db=sbtest_proxy",
                "--mysql-ssl=off",
                "--db-ps-mode=auto",
                // Uniform ids over enough rows: InnoDB deadlocks (which
                // sysbench counts as "ignored errors") stay out of the way.
                "--tables=4",
                "--table-size=5000",
                "--rand-type=uniform",
            ])
            .args(extra)
            .arg(phase)
            .kill_on_drop(true)
            .output(),
    )
    .await
    .unwrap_or_else(|_| panic!("sysbench {phase} timed out"))
    .expect("run sysbench (Debian package sysbench)");
    let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
    assert!(
        out.status.success(),
        "sysbench {phase} failed: {stdout}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    stdout
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sysbench_oltp_read_write_without_errors() {
    db().cli("DROP DATABASE IF EXISTS sbtest_proxy; CREATE DATABASE sbtest_proxy")
        .unwrap();
    let r = start_proxy().await;
    let port = r.addr("main").unwrap().port();
    sysbench(port, "prepare", &[]).await;
    let out = sysbench(
        port,
        "run",
        &["--threads=4", "--time=10", "--report-interval=0"],
    )
    .await;
    let tx = sysbench_number(&out, "transactions:").expect("transactions line");
    let queries = sysbench_number(&out, "queries:").expect("queries line");
    let errors = sysbench_number(&out, "ignored errors:").expect("ignored errors line");
    let reconnects = sysbench_number(&out, "reconnects:").expect("reconnects line");
    assert!(tx >= 100.0, "too few transactions: {out}");
    assert!(queries >= tx * 18.0, "{out}");
    assert_eq!(errors, 0.0, "{out}");
    assert_eq!(reconnects, 0.0, "{out}");
    sysbench(port, "cleanup", &[]).await;
    // Every session ended with its client.
    let deadline = tokio::time::Instant::now() + Duration::from_secs(5);
    while !r.shared.registry.all().is_empty() {
        assert!(
            tokio::time::Instant::now() < deadline,
            "sessions left after sysbench: {}",
            r.shared.registry.all().len()
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    db().cli("DROP DATABASE IF EXISTS sbtest_proxy").unwrap();
}
