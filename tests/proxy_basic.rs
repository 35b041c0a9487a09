//! The core proxy against a real MariaDB through mysql_async.

mod common;

use common::*;
use mysql_async::prelude::*;
use mysql_async::{Row, Value};

#[tokio::test]
async fn text_and_binary_protocol_and_transactions() {
    let r = start_proxy().await;
    let mut c = connect(&r).await;
    let user: String = scalar(&mut c, "SELECT CURRENT_USER()").await;
    assert!(user.starts_with(UP_USER), "{user}");
    c.query_drop("CREATE TABLE IF NOT EXISTS sqltest.basic (id INT PRIMARY KEY, v VARCHAR(50), d DECIMAL(10,3))")
        .await
        .unwrap();
    c.query_drop("DELETE FROM sqltest.basic").await.unwrap();
    let stmt = c
        .prep("INSERT INTO sqltest.basic VALUES (?, ?, ?)")
        .await
        .unwrap();
    for i in 0..20 {
        c.exec_drop(&stmt, (i, format!("row {i} ✓"), "12.345"))
            .await
            .unwrap();
    }
    let rows: Vec<(i32, String, String)> = c
        .exec(
            "SELECT id, v, CAST(d AS CHAR) FROM sqltest.basic WHERE id >= ? ORDER BY id",
            (15,),
        )
        .await
        .unwrap();
    assert_eq!(rows.len(), 5);
    assert_eq!(rows[0], (15, "row 15 ✓".into(), "12.345".into()));
    // Transaction with rollback.
    let mut tx = c.start_transaction(Default::default()).await.unwrap();
    tx.query_drop("DELETE FROM sqltest.basic").await.unwrap();
    tx.rollback().await.unwrap();
    let n: i64 = scalar(&mut c, "SELECT COUNT(*) FROM sqltest.basic").await;
    assert_eq!(n, 20);
    // Errors keep the connection usable.
    let e = c
        .query_drop("SELECT * FROM no_such_table_xyz")
        .await
        .unwrap_err();
    assert!(
        e.to_string().contains("1046") || e.to_string().contains("1146"),
        "{e}"
    );
    let one: i64 = scalar(&mut c, "SELECT 1").await;
    assert_eq!(one, 1);
    // Multi-result sets.
    let mut res = c.query_iter("SELECT 1; SELECT 2, 3").await.unwrap();
    let a: Vec<Row> = res.collect().await.unwrap();
    let b: Vec<Row> = res.collect().await.unwrap();
    assert_eq!(a.len(), 1);
    assert_eq!(b[0].len(), 2);
    drop(res);
    // NULL and empty-string first column.
    let row: Row = c
        .query_first("SELECT '', NULL, 0x00FF")
        .await
        .unwrap()
        .unwrap();
    assert_eq!(row[0], Value::Bytes(vec![]));
    assert_eq!(row[1], Value::NULL);
    c.disconnect().await.unwrap();
}

#[tokio::test]
async fn change_user_and_reset() {
    let r = start_proxy().await;
    let mut c = connect(&r).await;
    c.query_drop("SET SESSION sql_mode = 'ANSI_QUOTES'")
        .await
        .unwrap();
    c.reset().await.unwrap();
    let mode: String = scalar(&mut c, "SELECT @@SESSION.sql_mode").await;
    assert_ne!(mode, "ANSI_QUOTES");
    c.change_user(mysql_async::ChangeUserOpts::default())
        .await
        .unwrap();
    let one: i64 = scalar(&mut c, "SELECT 1").await;
    assert_eq!(one, 1);
    // To a foreign user: MySQL's access-denied error.
    let e = c
        .change_user(
            mysql_async::ChangeUserOpts::default()
                .with_user(Some("root".into()))
                .with_pass(Some("x".into())),
        )
        .await
        .unwrap_err();
    assert!(e.to_string().contains("1045"), "{e}");
}

#[tokio::test]
async fn wrong_password_and_unknown_user_get_1045() {
    let r = start_proxy().await;
    let addr = r.addr("main").unwrap();
    for (user, pass) in [(LOCAL_USER, "wrong"), ("nobody", LOCAL_PASSWORD)] {
        let opts = mysql_async::OptsBuilder::default()
            .ip_or_hostname("127.0.0.1")
            .tcp_port(addr.port())
            .user(Some(user))
            .pass(Some(pass));
        let e = mysql_async::Conn::new(opts).await.unwrap_err();
        match e {
            mysql_async::Error::Server(se) => {
                assert_eq!(se.code, 1045);
                assert_eq!(se.state, "28000");
                assert!(
                    se.message
                        .starts_with(&format!("Access denied for user '{user}'@'127.0.0.1'")),
                    "{}",
                    se.message
                );
            }
            other => panic!("expected 1045, got {other:?}"),
        }
    }
}
