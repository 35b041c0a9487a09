//! Helpers shared by the integration tests: a private MariaDB (one per
//! test binary) and an in-process sqlease in front of it.
#![allow(dead_code)]

use std::time::Duration;

use mysql_async::prelude::*;
use sqlease::app::Running;
use sqlease::config::Config;
pub use sqlease_testkit::mariadb::MariaDb;

pub mod rotator;

pub const LOCAL_USER: &str = "app";
pub const LOCAL_PASSWORD: &str = "app-local-pw";
pub const UP_USER: &str = "sqlease_up";
pub const UP_PASSWORD: &str = "up-static-pw-1";

/// The shared MariaDB with the static upstream user and a test schema.
pub fn db() -> &'static MariaDb {
    static INIT: std::sync::Once = std::sync::Once::new();
    let db = MariaDb::shared();
    INIT.call_once(|| {
        db.cli(&format!(
            "CREATE USER IF NOT EXISTS '{UP_USER}'@'%' IDENTIFIED BY '{UP_PASSWORD}';\
             GRANT ALL PRIVILEGES ON *.* TO '{UP_USER}'@'%';\
             CREATE DATABASE IF NOT EXISTS sqltest; CREATE DATABASE IF NOT EXISTS other_db;"
        ))
        .expect("set up the upstream user");
    });
    db
}

/// A config for one listener on an ephemeral port in front of `db`.
pub fn config_toml(db: &MariaDb, extra_listener: &str, extra_top: &str) -> String {
    format!(
        r#"
{extra_top}
[[listener]]
name = "main"
bind = "127.0.0.1:0"
handshake_timeout = "2s"
auth_failure_delay = "20ms"
{extra_listener}
[[listener.users]]
name = "{LOCAL_USER}"
password = "{LOCAL_PASSWORD}"
[listener.upstream]
address = "127.0.0.1:{port}"
credentials = "static"
tls = "disabled"

[credentials.static]
type = "static"
username = "{UP_USER}"
password = "{UP_PASSWORD}"
"#,
        port = db.port()
    )
}

pub async fn start_with(toml: &str) -> Running {
    init_logging();
    let cfg = Config::from_toml(toml).unwrap_or_else(|p| panic!("bad test config: {p:?}"));
    sqlease::app::start(cfg).await.expect("start sqlease")
}

/// Starts sqlease in front of the shared MariaDB with static credentials.
pub async fn start_proxy() -> Running {
    start_with(&config_toml(db(), "", "")).await
}

pub fn proxy_opts(r: &Running, db_name: Option<&str>) -> mysql_async::Opts {
    let addr = r.addr("main").expect("listener");
    mysql_async::OptsBuilder::default()
        .ip_or_hostname("127.0.0.1")
        .tcp_port(addr.port())
        .user(Some(LOCAL_USER))
        .pass(Some(LOCAL_PASSWORD))
        .db_name(db_name)
        .prefer_socket(false)
        .into()
}

pub fn direct_opts(db_name: Option<&str>) -> mysql_async::Opts {
    mysql_async::OptsBuilder::default()
        .ip_or_hostname("127.0.0.1")
        .tcp_port(db().port())
        .user(Some(UP_USER))
        .pass(Some(UP_PASSWORD))
        .db_name(db_name)
        .prefer_socket(false)
        .into()
}

pub async fn connect(r: &Running) -> mysql_async::Conn {
    tokio::time::timeout(
        Duration::from_secs(10),
        mysql_async::Conn::new(proxy_opts(r, None)),
    )
    .await
    .expect("connect timed out")
    .expect("connect through sqlease")
}

pub async fn scalar<T: FromValue + Send + 'static>(c: &mut mysql_async::Conn, sql: &str) -> T {
    c.query_first::<T, _>(sql)
        .await
        .unwrap_or_else(|e| panic!("{sql}: {e}"))
        .unwrap_or_else(|| panic!("{sql}: no row"))
}

/// Path of the built sqlease binary.
pub fn sqlease_bin() -> std::path::PathBuf {
    std::path::PathBuf::from(env!("CARGO_BIN_EXE_sqlease"))
}

/// Logs of the proxy in test output when SQLEASE_TEST_LOG is set (e.g. "debug").
pub fn init_logging() {
    static ONCE: std::sync::Once = std::sync::Once::new();
    ONCE.call_once(|| {
        if let Ok(level) = std::env::var("SQLEASE_TEST_LOG") {
            let _ = tracing_subscriber::fmt()
                .with_env_filter(tracing_subscriber::EnvFilter::new(level))
                .with_test_writer()
                .try_init();
        }
    });
}

/// Output of one `mariadb` CLI run.
#[derive(Debug)]
pub struct CliRun {
    pub code: Option<i32>,
    pub stdout: String,
    pub stderr: String,
}

/// Runs the `mariadb` CLI against `port` as `user`/`password` with `args`.
pub async fn mariadb_cli(port: u16, user: &str, password: &str, args: &[&str]) -> CliRun {
    let out = tokio::time::timeout(
        Duration::from_secs(30),
        tokio::process::Command::new("mariadb")
            .arg("--no-defaults")
            .args(["-h127.0.0.1", "--protocol=tcp"])
            .arg(format!("-P{port}"))
            .arg(format!("-u{user}"))
            .arg(format!("-p{password}"))
            .args(args)
            .kill_on_drop(true)
            .output(),
    )
    .await
    .expect("mariadb CLI timed out")
    .expect("run the mariadb CLI (Debian package mariadb-client)");
    CliRun {
        code: out.status.code(),
        stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
        stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
    }
}

/// The MySQL user a session is logged in as upstream (CURRENT_USER() without the host).
pub async fn user_of(c: &mut mysql_async::Conn) -> String {
    let u: String = scalar(c, "SELECT CURRENT_USER()").await;
    u.split('@').next().unwrap().to_string()
}

/// Runs a trivial command until the session reports `want` as its user.
pub async fn wait_user(c: &mut mysql_async::Conn, want: &str) {
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    while user_of(c).await != want {
        assert!(
            std::time::Instant::now() < deadline,
            "session never moved to {want}"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}
