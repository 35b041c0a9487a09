//! Losing the upstream connection (server restart, a DBA's KILL): outside a
//! transaction the next command reconnects, replays the state and runs;
//! inside one the client gets error 2013 and the session goes on. Nothing
//! is executed twice. Uses its own MariaDB so restarts do not disturb other
//! tests.

mod common;

use std::time::Duration;

use common::*;
use mysql_async::prelude::*;

fn own_db() -> &'static MariaDb {
    static DB: std::sync::OnceLock<MariaDb> = std::sync::OnceLock::new();
    DB.get_or_init(|| {
        let db = MariaDb::start().expect("start a private MariaDB");
        db.cli(&format!(
            "CREATE USER '{UP_USER}'@'%' IDENTIFIED BY '{UP_PASSWORD}'; GRANT ALL PRIVILEGES ON *.* TO '{UP_USER}'@'%'; CREATE DATABASE sqltest; CREATE DATABASE other_db;"
        ))
        .unwrap();
        db
    })
}

/// The tests share one server and restart or kill it: one at a time.
static SERIAL: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

async fn proxy() -> sqlease::app::Running {
    init_logging();
    start_with(&config_toml(own_db(), "", "")).await
}

fn upstream_threads(db: &MariaDb) -> Vec<u64> {
    db.cli(&format!(
        "SELECT ID FROM information_schema.PROCESSLIST WHERE USER = '{UP_USER}'"
    ))
    .unwrap()
    .lines()
    .filter_map(|l| l.trim().parse().ok())
    .collect()
}

#[tokio::test]
async fn loss_outside_and_inside_transactions() {
    let _serial = SERIAL.lock().await;
    let r = proxy().await;
    let db = own_db();
    db.cli("CREATE TABLE IF NOT EXISTS sqltest.loss (id INT PRIMARY KEY)")
        .unwrap();
    let mut idle = connect(&r).await;
    let mut busy = connect(&r).await;
    let idle_id = idle.id();
    idle.query_drop("USE other_db").await.unwrap();
    idle.query_drop("SET SESSION time_zone = '+03:00'")
        .await
        .unwrap();
    let ps = idle
        .prep("SELECT ? * 2, DATABASE(), @@SESSION.time_zone")
        .await
        .unwrap();
    busy.query_drop("BEGIN").await.unwrap();
    busy.query_drop("INSERT INTO sqltest.loss VALUES (1)")
        .await
        .unwrap();

    // A DBA kills every upstream connection of the proxy's user.
    for t in upstream_threads(db) {
        let _ = db.cli(&format!("KILL {t}"));
    }
    tokio::time::sleep(Duration::from_millis(300)).await;

    // The idle session reconnects transparently with its state.
    let (v, d, tz): (i64, String, String) = idle.exec_first(&ps, (21,)).await.unwrap().unwrap();
    assert_eq!((v, d.as_str(), tz.as_str()), (42, "other_db", "+03:00"));
    assert_eq!(idle.id(), idle_id);

    // The session inside a transaction gets 2013 once, then goes on.
    let e = busy
        .query_drop("INSERT INTO sqltest.loss VALUES (2)")
        .await
        .unwrap_err();
    match e {
        mysql_async::Error::Server(se) => assert_eq!(se.code, 2013, "{se:?}"),
        other => panic!("expected 2013, got {other:?}"),
    }
    let n: i64 = scalar(&mut busy, "SELECT COUNT(*) FROM sqltest.loss").await;
    assert_eq!(
        n, 0,
        "the killed transaction must be rolled back, not replayed"
    );
    busy.query_drop("INSERT INTO sqltest.loss VALUES (3)")
        .await
        .unwrap();
    let n: i64 = scalar(&mut busy, "SELECT COUNT(*) FROM sqltest.loss").await;
    assert_eq!(n, 1);
    assert!(
        r.shared
            .metrics
            .upstream_lost_total
            .load(std::sync::atomic::Ordering::Relaxed)
            >= 2
    );
}

#[tokio::test]
async fn server_restart_with_idle_clients() {
    let _serial = SERIAL.lock().await;
    let r = proxy().await;
    let db = own_db();
    let mut clients = Vec::new();
    for _ in 0..4 {
        let mut c = connect(&r).await;
        c.query_drop("SET SESSION sql_mode = 'ANSI_QUOTES'")
            .await
            .unwrap();
        clients.push(c);
    }
    db.restart().expect("restart MariaDB");
    tokio::time::sleep(Duration::from_millis(300)).await;
    for c in &mut clients {
        let id = c.id();
        let mode: String = scalar(c, "SELECT @@SESSION.sql_mode").await;
        assert_eq!(mode, "ANSI_QUOTES");
        assert_eq!(c.id(), id);
    }
}
