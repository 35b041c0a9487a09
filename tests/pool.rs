//! Ready upstream connections: logins reuse clean, reset connections, and a
//! reused connection carries nothing over from the previous client.

mod common;

use common::*;
use mysql_async::prelude::*;

fn upstream_connects() -> u64 {
    db().cli("SHOW GLOBAL STATUS LIKE 'Connections'")
        .unwrap()
        .split_whitespace()
        .nth(1)
        .and_then(|n| n.parse().ok())
        .unwrap()
}

#[tokio::test]
async fn logins_reuse_reset_connections() {
    let r = start_proxy().await;
    // Warm up: the first login connects, and the pool fills in the background.
    let c = connect(&r).await;
    c.disconnect().await.unwrap();
    tokio::time::sleep(std::time::Duration::from_millis(300)).await;
    let before = upstream_connects();
    for i in 0..40 {
        let mut c = connect(&r).await;
        // Nothing from the previous client is visible.
        let (v, mode): (Option<i64>, String) = c
            .query_first("SELECT @leftover, @@SESSION.sql_mode")
            .await
            .unwrap()
            .unwrap();
        assert_eq!(v, None, "user variable leaked into login {i}");
        assert!(
            !mode.contains("ANSI_QUOTES"),
            "session variable leaked: {mode}"
        );
        c.query_drop("SET @leftover = 42, SESSION sql_mode = 'ANSI_QUOTES'")
            .await
            .unwrap();
        // Fails with "already exists" if the previous client's table leaked.
        c.query_drop("CREATE TEMPORARY TABLE sqltest.pool_tmp (a INT)")
            .await
            .unwrap();
        c.disconnect().await.unwrap();
    }
    let opened = upstream_connects() - before;
    assert!(
        opened < 20,
        "40 logins opened {opened} upstream connections: the pool is not reused"
    );
}
